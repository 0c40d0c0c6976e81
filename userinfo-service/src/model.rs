//! userinfo-service's entities, at the bottom: the store keeps them, the services decide with
//! them. The public part a mini program may read is a type of its own, so the private fields
//! can't leak into that path. Imports nothing of the services, gRPC or SQL.

use miniprogram_token::Timestamp;

/// A wallet user, with the fields that never reach a mini program's `getOpenUserInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    pub user_id: String,
    pub real_name: String,
    pub phone_number: String,
    pub public: PublicProfile,
    pub updated_at: Timestamp,
}

/// Exactly what `my.getOpenUserInfo` returns: the public fields, `""` when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublicProfile {
    pub avatar: String,
    pub nick_name: String,
    pub gender: String,
    pub country_code: String,
    pub province: String,
    pub city: String,
}

/// One field that failed validation, by its proto field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: &'static str,
}

/// What one answered read gave a mini program, as the disclosure ledger counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DisclosedFields {
    /// The six public fields (`GetOpenUserInfo`).
    PublicProfile,
    /// The phone number (`GetPhoneNumber`).
    PhoneNumber,
}

impl DisclosedFields {
    /// The stored code: a bit each, so a set of kinds could share one column if ever needed.
    pub const fn code(self) -> i64 {
        match self {
            DisclosedFields::PublicProfile => 1,
            DisclosedFields::PhoneNumber => 2,
        }
    }

    /// The kind a stored code names; `None` for a code this version does not know.
    pub const fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(DisclosedFields::PublicProfile),
            2 => Some(DisclosedFields::PhoneNumber),
            _ => None,
        }
    }
}

/// A UTC calendar day, as days since the Unix epoch: the ledger's unit of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UtcDay(pub i64);

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

impl UtcDay {
    /// The day `t` falls on.
    pub fn of(t: Timestamp) -> Self {
        UtcDay(t.unix_nanos().div_euclid(NANOS_PER_DAY))
    }

    /// `YYYY-MM-DD`; days outside 1970-01-01 ..= 9999-12-31 are shown as those bounds.
    pub fn date(self) -> String {
        const LAST_DAY: i64 = 2_932_896;
        let secs = self.0.clamp(0, LAST_DAY).unsigned_abs() * 86_400;
        let midnight = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        humantime::format_rfc3339(midnight).to_string()[..10].to_owned()
    }
}

/// Reads of one kind of a user's data by one mini program on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclosure {
    pub user_id: String,
    pub app_id: String,
    pub fields: DisclosedFields,
    pub day: UtcDay,
    pub count: u64,
}

/// Where a page of a user's disclosures ends: the last row's key, in the ledger's order
/// (newest day first, then app and kind, descending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosurePosition {
    pub day: UtcDay,
    pub app_id: String,
    pub fields: DisclosedFields,
}
