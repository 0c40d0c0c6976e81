use pasetors::keys::SymmetricKey;
use pasetors::version4::{LocalToken, V4};
use serde::{Deserialize, Serialize};

use crate::{KEY_LEN, ScopeSet, Timestamp, TokenError};

/// Which flow a token came from; bound into the token (and its sealed subject) as the PASETO
/// implicit assertion, so a consent token never opens as an access token or the other way
/// round.
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

/// Longest sealed subject we try to open (a 128-byte user id seals to about 270 characters).
const MAX_SEALED_SUBJECT_LEN: usize = 512;

/// What a token says, once opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The mini program the token was issued to.
    pub app_id: String,
    /// The wallet's own user id; in the token only sealed under the key's subject key, so
    /// the holder never reads it.
    pub user_id: String,
    pub scopes: ScopeSet,
    /// Issue time, nanoseconds since the epoch.
    pub issued_at: i64,
    pub expires_at: i64,
    /// Unique id of this token, for revoking it alone.
    pub token_id: String,
    /// The grant (auth code or consent) this token descends from, for revoking a whole family.
    pub grant_id: String,
}

/// The signed payload: the claims with the user id sealed (PASETO v4.local under the
/// subject key). Short serialized names keep tokens small.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireClaims {
    #[serde(rename = "a")]
    app_id: String,
    #[serde(rename = "u")]
    sealed_user_id: String,
    #[serde(rename = "s")]
    scopes: ScopeSet,
    #[serde(rename = "i")]
    issued_at: i64,
    #[serde(rename = "e")]
    expires_at: i64,
    #[serde(rename = "t")]
    token_id: String,
    #[serde(rename = "g")]
    grant_id: String,
}

impl WireClaims {
    pub(crate) fn seal(
        claims: &TokenClaims,
        kind: TokenKind,
        subject_key: &[u8; KEY_LEN],
    ) -> Result<Self, TokenError> {
        let key = SymmetricKey::<V4>::from(subject_key).map_err(|_| TokenError::Signing)?;
        let sealed_user_id = LocalToken::encrypt(
            &key,
            claims.user_id.as_bytes(),
            None,
            Some(kind.implicit_assertion()),
        )
        .map_err(|_| TokenError::Signing)?;
        Ok(WireClaims {
            app_id: claims.app_id.clone(),
            sealed_user_id,
            scopes: claims.scopes,
            issued_at: claims.issued_at,
            expires_at: claims.expires_at,
            token_id: claims.token_id.clone(),
            grant_id: claims.grant_id.clone(),
        })
    }

    pub(crate) fn open(
        self,
        kind: TokenKind,
        subject_key: &[u8; KEY_LEN],
    ) -> Result<TokenClaims, TokenError> {
        let key = SymmetricKey::<V4>::from(subject_key).map_err(|_| TokenError::Invalid)?;
        let sealed = crate::keyring::parse_local(&self.sealed_user_id, MAX_SEALED_SUBJECT_LEN)
            .ok_or(TokenError::Invalid)?;
        let opened = LocalToken::decrypt(&key, &sealed, None, Some(kind.implicit_assertion()))
            .map_err(|_| TokenError::Invalid)?;
        Ok(TokenClaims {
            app_id: self.app_id,
            user_id: opened.payload().to_owned(),
            scopes: self.scopes,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            token_id: self.token_id,
            grant_id: self.grant_id,
        })
    }
}

impl TokenClaims {
    pub fn issued_at(&self) -> Timestamp {
        Timestamp::from_unix_nanos(self.issued_at)
    }

    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_nanos(self.expires_at)
    }
}
