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
