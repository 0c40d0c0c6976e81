use serde::{Deserialize, Serialize};

use crate::{ScopeSet, Timestamp};

/// Which flow a token came from; bound into the token as the PASETO implicit assertion, so a
/// consent token never opens as an access token or the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Returned to mini program code by `my.getOpenUserInfo`; good for GetOpenUserInfo only.
    Consent,
    /// Returned to a mini program backend for an auth code; good for GetPhoneNumber.
    Access,
}

impl TokenKind {
    pub(crate) const fn implicit_assertion(self) -> &'static [u8] {
        match self {
            TokenKind::Consent => b"miniprogram.consent.v1",
            TokenKind::Access => b"miniprogram.access.v1",
        }
    }
}

/// What a token says, once opened. Short serialized names keep tokens small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The mini program the token was issued to.
    #[serde(rename = "a")]
    pub app_id: String,
    /// The wallet's own user id; never leaves the platform unencrypted.
    #[serde(rename = "u")]
    pub user_id: String,
    #[serde(rename = "s")]
    pub scopes: ScopeSet,
    /// Issue time, nanoseconds since the epoch.
    #[serde(rename = "i")]
    pub issued_at: i64,
    #[serde(rename = "e")]
    pub expires_at: i64,
    /// Unique id of this token, for revoking it alone.
    #[serde(rename = "t")]
    pub token_id: String,
    /// The grant (auth code or consent) this token descends from, for revoking a whole family.
    #[serde(rename = "g")]
    pub grant_id: String,
}

impl TokenClaims {
    pub fn issued_at(&self) -> Timestamp {
        Timestamp::from_unix_nanos(self.issued_at)
    }

    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_nanos(self.expires_at)
    }
}
