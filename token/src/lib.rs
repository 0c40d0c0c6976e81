//! The token format shared by both services.
//!
//! auth-service mints consent and access tokens with the current [`SigningKey`] of its
//! [`KeyRing`]; userinfo-service opens them with a ring of [`VerifyingKey`]s (fetched over
//! gRPC) and checks them against a [`RevocationList`] fed by auth-service's revocation stream.
//! Tokens are PASETO v4.public (Ed25519): only the holder of the secret key, which never
//! leaves auth-service, can make one. The user id inside is sealed (v4.local) under the key's
//! subject key, which verifiers hold, so a token's holder learns nothing from it.
#![forbid(unsafe_code)]

mod claims;
mod keyring;
mod master_key;
mod revocation;
mod scope;
mod time;
mod verifier;

pub use claims::{TokenClaims, TokenKind};
pub use keyring::{KEY_LEN, KeyRing, MAX_TOKEN_LEN, SigningKey, TokenError, VerifyingKey};
pub use master_key::{MasterKey, MasterKeyError};
pub use revocation::{RevocationList, RevocationRule};
pub use scope::{Scope, ScopeSet};
pub use time::{Clock, SystemClock, Timestamp};
pub use verifier::{TokenCheckError, TokenVerifier};

/// Fills a fresh 32-byte array from the operating system's CSPRNG.
///
/// Every secret here (keys, codes, refresh tokens, prompt ids, app secrets) is 256-bit random.
pub fn random_bytes() -> Result<[u8; 32], getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}
