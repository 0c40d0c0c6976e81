//! The wallet's user records: the rules every stored field obeys, and the registry that reads
//! and writes them for the console.

use std::sync::Arc;

use miniprogram_token::Timestamp;

use crate::disclosures::DisclosureLedger;
use crate::error::UserInfoError;
use crate::model::{Disclosure, FieldViolation, Profile};
use crate::profile_cache::PublicProfileCache;
use crate::store::ProfileStore;

/// Longest nickname, province, city or real name, in bytes.
pub const MAX_TEXT_LEN: usize = 128;
/// Longest avatar URL, in bytes.
pub const MAX_AVATAR_LEN: usize = 2048;
/// Longest wallet user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;
/// Longest phone number, in bytes.
pub const MAX_PHONE_LEN: usize = 32;

/// Every ISO 3166-1 alpha-2 code officially assigned.
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM \
BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG \
EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL \
IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF \
MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL \
PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG \
TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Whether `code` is an assigned ISO 3166-1 alpha-2 code (upper case).
pub fn is_country_code(code: &str) -> bool {
    code.len() == 2 && ISO_3166_ALPHA2.split(' ').any(|c| c == code)
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn text(field: &'static str, value: &str, max: usize, out: &mut Vec<FieldViolation>) {
    if value.len() > max {
        out.push(FieldViolation {
            field,
            description: "is longer than allowed",
        });
    } else if has_control(value) {
        out.push(FieldViolation {
            field,
            description: "contains control characters",
        });
    }
}

/// Checks a wallet user id (also used for lookups).
pub fn check_user_id(user_id: &str) -> Option<FieldViolation> {
    let field = "profile.user_id";
    if user_id.is_empty() {
        Some(FieldViolation {
            field,
            description: "is required",
        })
    } else if user_id.len() > MAX_USER_ID_LEN {
        Some(FieldViolation {
            field,
            description: "is longer than 128 bytes",
        })
    } else if has_control(user_id) {
        Some(FieldViolation {
            field,
            description: "contains control characters",
        })
    } else {
        None
    }
}

fn check_avatar(avatar: &str, out: &mut Vec<FieldViolation>) {
    let field = "profile.avatar";
    if avatar.is_empty() {
        return;
    }
    if avatar.len() > MAX_AVATAR_LEN {
        out.push(FieldViolation {
            field,
            description: "is longer than 2048 bytes",
        });
        return;
    }
    let ok = url::Url::parse(avatar)
        .map(|u| u.scheme() == "https" && u.host_str().is_some_and(|h| !h.is_empty()))
        .unwrap_or(false);
    if !ok || avatar.chars().any(|c| c.is_whitespace() || c.is_control()) {
        out.push(FieldViolation {
            field,
            description: "must be an https URL",
        });
    }
}

fn check_phone(phone: &str, out: &mut Vec<FieldViolation>) {
    if phone.is_empty() {
        return;
    }
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    let allowed = phone
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_digit() || c == ' ' || c == '-' || (i == 0 && c == '+'));
    if phone.len() > MAX_PHONE_LEN || !allowed || digits < 3 {
        out.push(FieldViolation {
            field: "profile.phone_number",
            description: "must be digits, optionally with a leading + and spaces or dashes",
        });
    }
}

impl Profile {
    /// Every violation at once, so a caller can fix them all in one go.
    pub fn violations(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        out.extend(check_user_id(&self.user_id));
        text("profile.real_name", &self.real_name, MAX_TEXT_LEN, &mut out);
        check_phone(&self.phone_number, &mut out);
        let p = &self.public;
        check_avatar(&p.avatar, &mut out);
        text("profile.nick_name", &p.nick_name, MAX_TEXT_LEN, &mut out);
        if !matches!(p.gender.as_str(), "" | "m" | "f") {
            out.push(FieldViolation {
                field: "profile.gender",
                description: "must be \"m\", \"f\" or \"\"",
            });
        }
        if !p.country_code.is_empty() && !is_country_code(&p.country_code) {
            out.push(FieldViolation {
                field: "profile.country_code",
                description: "must be an ISO 3166-1 alpha-2 code (upper case) or \"\"",
            });
        }
        text("profile.province", &p.province, MAX_TEXT_LEN, &mut out);
        text("profile.city", &p.city, MAX_TEXT_LEN, &mut out);
        out
    }
}

/// Reads and writes profiles; every change is forgotten at once by this replica's read cache,
/// so it never serves a replaced or deleted profile.
#[derive(Clone)]
pub struct ProfileRegistry {
    store: Arc<dyn ProfileStore>,
    cache: Arc<PublicProfileCache>,
    ledger: Arc<DisclosureLedger>,
}

impl ProfileRegistry {
    pub fn new(
        store: Arc<dyn ProfileStore>,
        cache: Arc<PublicProfileCache>,
        ledger: Arc<DisclosureLedger>,
    ) -> Self {
        ProfileRegistry {
            store,
            cache,
            ledger,
        }
    }

    /// Creates or replaces a profile whose every field is valid; otherwise names each bad one.
    pub async fn upsert(&self, profile: Profile) -> Result<Profile, UserInfoError> {
        let violations = profile.violations();
        if !violations.is_empty() {
            return Err(UserInfoError::InvalidProfileField(violations));
        }
        self.store.upsert(&profile).await?;
        self.cache.forget(&profile.user_id);
        Ok(profile)
    }

    pub async fn get(&self, user_id: &str) -> Result<Profile, UserInfoError> {
        checked_user_id(user_id)?;
        let profile = self.store.get(user_id).await?;
        profile.ok_or(UserInfoError::ProfileNotFound)
    }

    /// Erases a user here: the profile and their disclosure rows leave the database and its
    /// files (see [`ProfileStore::delete`]), this replica's cache and the ledger's unwritten
    /// counters. The one place userinfo-service erases; a repeat call finds no profile
    /// (PROFILE_NOT_FOUND) but still scrubs, so retrying after a failure completes the job.
    pub async fn delete(&self, user_id: &str) -> Result<(), UserInfoError> {
        self.delete_written_by(user_id, None).await
    }

    /// [`delete`](Self::delete), of a profile last written at or before `written_by` only
    /// (an erasure resumed after a restart leaves a profile written since it was requested).
    pub async fn delete_written_by(
        &self,
        user_id: &str,
        written_by: Option<Timestamp>,
    ) -> Result<(), UserInfoError> {
        checked_user_id(user_id)?;
        let existed = self.store.delete(user_id, written_by).await?;
        self.cache.forget(user_id);
        self.ledger.forget_user(user_id).await;
        if !existed {
            return Err(UserInfoError::ProfileNotFound);
        }
        Ok(())
    }
}

impl ProfileRegistry {
    /// A page of the user's disclosure ledger (see [`DisclosureLedger::list`]).
    pub async fn disclosures(
        &self,
        user_id: &str,
        app_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Disclosure>, String), UserInfoError> {
        checked_user_id(user_id)?;
        self.ledger
            .list(user_id, app_id, page_size, page_token)
            .await
    }
}

/// A user id given for a lookup: its violation, if any, as a request argument error.
pub(crate) fn checked_user_id(user_id: &str) -> Result<(), UserInfoError> {
    match check_user_id(user_id) {
        None => Ok(()),
        Some(v) => Err(UserInfoError::InvalidArgument {
            field: "user_id",
            problem: v.description,
        }),
    }
}

#[cfg(test)]
mod tests {
    use miniprogram_token::Timestamp;

    use super::*;
    use crate::model::PublicProfile;

    fn valid() -> Profile {
        Profile {
            user_id: "2088000000000001".into(),
            real_name: "Zhang San".into(),
            phone_number: "+86 138-0000-0000".into(),
            public: PublicProfile {
                avatar: "https://cdn.example.com/a.png".into(),
                nick_name: "小张".into(),
                gender: "m".into(),
                country_code: "CN".into(),
                province: "Zhejiang".into(),
                city: "Hangzhou".into(),
            },
            updated_at: Timestamp::EPOCH,
        }
    }

    #[test]
    fn the_code_list_is_complete() {
        assert_eq!(ISO_3166_ALPHA2.split(' ').count(), 249);
        assert!(
            is_country_code("CN")
                && is_country_code("US")
                && !is_country_code("cn")
                && !is_country_code("XX")
        );
    }

    #[test]
    fn a_valid_profile_and_an_empty_public_part_pass() {
        assert!(valid().violations().is_empty());
        let mut bare = valid();
        bare.public = PublicProfile::default();
        bare.phone_number.clear();
        assert!(bare.violations().is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut p = valid();
        p.public.avatar = "http://insecure.example.com/a.png".into();
        p.public.gender = "x".into();
        p.public.country_code = "ZZ".into();
        p.public.nick_name = "n".repeat(129);
        p.public.city = "c".repeat(129);
        p.public.province = "bad\u{0}".into();
        p.phone_number = "call me".into();
        let fields: Vec<_> = p.violations().iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "profile.phone_number",
                "profile.avatar",
                "profile.nick_name",
                "profile.gender",
                "profile.country_code",
                "profile.province",
                "profile.city"
            ]
        );
    }

    #[test]
    fn avatar_limits() {
        let mut p = valid();
        p.public.avatar = format!("https://e.com/{}", "a".repeat(2048 - 14));
        assert_eq!(p.public.avatar.len(), 2048);
        assert!(p.violations().is_empty());
        p.public.avatar.push('a');
        assert_eq!(p.violations()[0].field, "profile.avatar");
        p.public.avatar = "https://".into();
        assert_eq!(p.violations()[0].field, "profile.avatar");
    }
}
