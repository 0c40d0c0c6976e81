//! Opaque secrets: app secrets, auth codes, refresh tokens and prompt ids. Each is 256 bits
//! from the OS CSPRNG, handed out once as base64url and stored only as its SHA-256 hash.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AuthError;
use crate::model::SecretHash;

/// Length of an encoded secret: 32 bytes in unpadded base64url.
pub const ENCODED_LEN: usize = 43;

/// A secret as handed to its holder. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueSecret(String);

impl fmt::Debug for OpaqueSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueSecret(<redacted>)")
    }
}

impl OpaqueSecret {
    pub fn generate() -> Result<Self, AuthError> {
        let bytes = miniprogram_token::random_bytes().map_err(|_| AuthError::RandomUnavailable)?;
        Ok(OpaqueSecret(URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn hash(&self) -> SecretHash {
        hash(&self.0)
    }

    /// The secret text, to be returned to its holder exactly once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// SHA-256 of a presented secret, for lookup by hash.
pub fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether a presented secret could be one of ours at all (cheap check before any lookup).
pub fn looks_like_secret(presented: &str) -> bool {
    presented.len() == ENCODED_LEN
        && presented
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Compares a presented secret with a stored hash in constant time.
pub fn matches_hash(presented: &str, stored: &SecretHash) -> bool {
    hash(presented).ct_eq(stored).into()
}

/// A fresh id for an app, a grant or a token: 128 random bits in hex.
pub fn new_id() -> Result<String, AuthError> {
    let bytes = miniprogram_token::random_bytes().map_err(|_| AuthError::RandomUnavailable)?;
    Ok(hex::encode(&bytes[..16]))
}

/// A fresh app id: a recognisable prefix and 64 random bits.
pub fn new_app_id() -> Result<String, AuthError> {
    let bytes = miniprogram_token::random_bytes().map_err(|_| AuthError::RandomUnavailable)?;
    Ok(format!("mp{}", hex::encode(&bytes[..8])))
}

/// Derives the user id a mini program sees: a keyed hash of app and wallet user, so two apps
/// can't join their users and the wallet's own id never leaves the platform.
#[derive(Clone)]
pub struct AppUserIdKey([u8; 32]);

impl fmt::Debug for AppUserIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppUserIdKey(<redacted>)")
    }
}

impl AppUserIdKey {
    /// The pairwise-id secret, generated once and stored sealed (see `keys::pairwise_secret`).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        AppUserIdKey(secret)
    }

    /// The secret's bytes, to be sealed at rest.
    pub fn secret(&self) -> [u8; 32] {
        self.0
    }

    /// How the secret was made before the key hierarchy: derived from the master key. Kept
    /// only so a database from then keeps its app user ids.
    pub fn derive_legacy(master: &[u8; 32]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"miniprogram.app-user-id.v1");
        AppUserIdKey(mac.finalize().into_bytes().into())
    }

    pub fn app_user_id(&self, app_id: &str, wallet_user_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(app_id.as_bytes());
        mac.update(&[0]);
        mac.update(wallet_user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("u{}", hex::encode(&digest[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_unique_well_formed_and_match_only_their_hash() {
        let a = OpaqueSecret::generate().unwrap();
        let b = OpaqueSecret::generate().unwrap();
        assert_ne!(a, b);
        assert!(looks_like_secret(a.expose()));
        assert!(matches_hash(a.expose(), &a.hash()));
        assert!(!matches_hash(b.expose(), &a.hash()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn app_user_ids_differ_between_apps_and_are_stable() {
        let key = AppUserIdKey::from_secret([1; 32]);
        let one = key.app_user_id("mp1", "user-1");
        assert_eq!(one, key.app_user_id("mp1", "user-1"));
        assert_ne!(one, key.app_user_id("mp2", "user-1"));
        assert!(!one.contains("user-1"));
    }
}
