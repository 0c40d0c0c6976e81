use std::collections::HashMap;
use std::fmt;

use pasetors::Local;
use pasetors::keys::SymmetricKey;
use pasetors::token::UntrustedToken;
use pasetors::version4::{LocalToken, V4};
use serde::{Deserialize, Serialize};

use crate::{Timestamp, TokenClaims, TokenKind};

/// Length of a v4.local key in bytes.
pub const KEY_LEN: usize = 32;

/// Longest token string we try to open; anything longer is not one of ours, and refusing it
/// early keeps a 1 MiB "token" from costing a base64 decode.
pub const MAX_TOKEN_LEN: usize = 1024;

/// One symmetric token key with its life cycle: it mints until `retire_at` and verifies until
/// `expire_at` (its last token's expiry), so rotation never breaks a live token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    pub key_id: String,
    pub material: [u8; KEY_LEN],
    pub created_at: Timestamp,
    pub retire_at: Timestamp,
    pub expire_at: Timestamp,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("key_id", &self.key_id)
            .field("material", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .field("expire_at", &self.expire_at)
            .finish()
    }
}

/// Why a token could not be minted or opened. Variants carry no token text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a well-formed token of this platform")]
    Malformed,
    #[error("the token names a key this verifier does not know")]
    UnknownKey { key_id: String },
    #[error("the token failed authentication (tampered, or of another kind)")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("no token key is current; rotate keys")]
    NoSigningKey,
    #[error("token encryption failed")]
    Encryption,
}

#[derive(Serialize, Deserialize)]
struct Footer<'a> {
    kid: &'a str,
}

/// The token keys a service knows, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, TokenKey>,
}

impl KeyRing {
    pub fn new(keys: impl IntoIterator<Item = TokenKey>) -> Self {
        KeyRing {
            keys: keys.into_iter().map(|k| (k.key_id.clone(), k)).collect(),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &TokenKey> {
        self.keys.values()
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The newest key that may mint at `now`.
    pub fn signing_key(&self, now: Timestamp) -> Option<&TokenKey> {
        self.keys
            .values()
            .filter(|k| k.created_at <= now && now < k.retire_at)
            .max_by_key(|k| (k.created_at, k.key_id.as_str()))
    }

    /// Encrypts `claims` under the current key, with its key id in the footer.
    pub fn mint(
        &self,
        kind: TokenKind,
        claims: &TokenClaims,
        now: Timestamp,
    ) -> Result<String, TokenError> {
        let key = self.signing_key(now).ok_or(TokenError::NoSigningKey)?;
        let sk = SymmetricKey::<V4>::from(&key.material).map_err(|_| TokenError::Encryption)?;
        let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Encryption)?;
        let footer =
            serde_json::to_vec(&Footer { kid: &key.key_id }).map_err(|_| TokenError::Encryption)?;
        LocalToken::encrypt(
            &sk,
            &payload,
            Some(&footer),
            Some(kind.implicit_assertion()),
        )
        .map_err(|_| TokenError::Encryption)
    }

    /// The key id a token names, read from its (authenticated, unencrypted) footer.
    pub fn key_id_of(token: &str) -> Result<String, TokenError> {
        let untrusted = parse(token)?;
        let footer: Footer<'_> = serde_json::from_slice(untrusted.untrusted_footer())
            .map_err(|_| TokenError::Malformed)?;
        Ok(footer.kid.to_owned())
    }

    /// Decrypts and authenticates a token of `kind` and checks its expiry against `now`.
    pub fn open(
        &self,
        kind: TokenKind,
        token: &str,
        now: Timestamp,
    ) -> Result<TokenClaims, TokenError> {
        let untrusted = parse(token)?;
        let footer: Footer<'_> = serde_json::from_slice(untrusted.untrusted_footer())
            .map_err(|_| TokenError::Malformed)?;
        let key = self
            .keys
            .get(footer.kid)
            .ok_or_else(|| TokenError::UnknownKey {
                key_id: footer.kid.chars().take(64).collect(),
            })?;
        let sk = SymmetricKey::<V4>::from(&key.material).map_err(|_| TokenError::Invalid)?;
        let trusted = LocalToken::decrypt(&sk, &untrusted, None, Some(kind.implicit_assertion()))
            .map_err(|_| TokenError::Invalid)?;
        let claims: TokenClaims =
            serde_json::from_str(trusted.payload()).map_err(|_| TokenError::Invalid)?;
        if claims.expires_at() <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn parse(token: &str) -> Result<UntrustedToken<Local, V4>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    UntrustedToken::<Local, V4>::try_from(token).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Scope, ScopeSet};

    fn key(id: &str, byte: u8, created: i64, retire: i64, expire: i64) -> TokenKey {
        TokenKey {
            key_id: id.into(),
            material: [byte; KEY_LEN],
            created_at: Timestamp::from_unix_nanos(created),
            retire_at: Timestamp::from_unix_nanos(retire),
            expire_at: Timestamp::from_unix_nanos(expire),
        }
    }

    fn claims(expires_at: i64) -> TokenClaims {
        TokenClaims {
            app_id: "app-1".into(),
            user_id: "wallet-user-42".into(),
            scopes: ScopeSet::of(&[Scope::UserInfo]),
            issued_at: 10,
            expires_at,
            token_id: "tid".into(),
            grant_id: "gid".into(),
        }
    }

    #[test]
    fn minted_token_opens_with_same_ring_and_hides_user_id() {
        let ring = KeyRing::new([key("k1", 7, 0, 100, 200)]);
        let now = Timestamp::from_unix_nanos(50);
        let token = ring.mint(TokenKind::Consent, &claims(150), now).unwrap();
        assert!(!token.contains("wallet-user-42"));
        assert_eq!(KeyRing::key_id_of(&token).unwrap(), "k1");
        assert_eq!(
            ring.open(TokenKind::Consent, &token, now).unwrap(),
            claims(150)
        );
    }

    #[test]
    fn consent_token_does_not_open_as_access_token() {
        let ring = KeyRing::new([key("k1", 7, 0, 100, 200)]);
        let now = Timestamp::from_unix_nanos(50);
        let token = ring.mint(TokenKind::Consent, &claims(150), now).unwrap();
        assert_eq!(
            ring.open(TokenKind::Access, &token, now),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn expired_token_is_refused() {
        let ring = KeyRing::new([key("k1", 7, 0, 100, 200)]);
        let token = ring
            .mint(
                TokenKind::Access,
                &claims(60),
                Timestamp::from_unix_nanos(50),
            )
            .unwrap();
        let later = Timestamp::from_unix_nanos(60);
        assert_eq!(
            ring.open(TokenKind::Access, &token, later),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn rotation_mints_with_newest_key_and_old_key_still_verifies() {
        let old = key("old", 1, 0, 100, 300);
        let new = key("new", 2, 100, 200, 400);
        let ring = KeyRing::new([old.clone(), new]);
        let t_old = ring
            .mint(
                TokenKind::Access,
                &claims(250),
                Timestamp::from_unix_nanos(50),
            )
            .unwrap();
        let t_new = ring
            .mint(
                TokenKind::Access,
                &claims(250),
                Timestamp::from_unix_nanos(150),
            )
            .unwrap();
        assert_eq!(KeyRing::key_id_of(&t_old).unwrap(), "old");
        assert_eq!(KeyRing::key_id_of(&t_new).unwrap(), "new");
        let at = Timestamp::from_unix_nanos(160);
        assert!(ring.open(TokenKind::Access, &t_old, at).is_ok());
        assert!(ring.open(TokenKind::Access, &t_new, at).is_ok());
        let other_ring = KeyRing::new([new_key_only()]);
        assert!(matches!(
            other_ring.open(TokenKind::Access, &t_old, at),
            Err(TokenError::UnknownKey { .. })
        ));
    }

    fn new_key_only() -> TokenKey {
        key("new", 2, 100, 200, 400)
    }

    #[test]
    fn tampered_or_garbage_tokens_are_refused() {
        let ring = KeyRing::new([key("k1", 7, 0, 100, 200)]);
        let now = Timestamp::from_unix_nanos(50);
        let token = ring.mint(TokenKind::Consent, &claims(150), now).unwrap();
        let mut bytes = token.into_bytes();
        bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            ring.open(TokenKind::Consent, &tampered, now),
            Err(TokenError::Invalid)
        );
        for garbage in [
            "",
            "v4.local.",
            "hello",
            "v4.public.abc.def",
            &"x".repeat(1 << 20),
        ] {
            assert_eq!(
                ring.open(TokenKind::Consent, garbage, now),
                Err(TokenError::Malformed)
            );
        }
    }

    #[test]
    fn no_signing_key_after_retirement() {
        let ring = KeyRing::new([key("k1", 7, 0, 100, 200)]);
        let after = Timestamp::from_unix_nanos(0).saturating_add(Duration::from_nanos(100));
        assert_eq!(
            ring.mint(TokenKind::Consent, &claims(150), after),
            Err(TokenError::NoSigningKey)
        );
    }
}
