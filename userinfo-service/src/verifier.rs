//! Local token checking: the token keys and revocation rules this replica holds, and how
//! fresh its view of auth-service's revocation log is. No round trip per request.

use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use miniprogram_token::{
    KeyRing, RevocationList, RevocationRule, Timestamp, TokenClaims, TokenError, TokenKey,
    TokenKind,
};

/// Why a token was refused locally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenCheckError {
    #[error("not a token of this platform")]
    Malformed,
    #[error("the token names a key this verifier does not know")]
    UnknownKey,
    #[error("the token failed authentication")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token was revoked")]
    Revoked,
    #[error("the revocation stream has been down too long")]
    Stale,
}

impl From<TokenError> for TokenCheckError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Malformed => TokenCheckError::Malformed,
            TokenError::UnknownKey { .. } => TokenCheckError::UnknownKey,
            TokenError::Expired => TokenCheckError::Expired,
            TokenError::Invalid | TokenError::NoSigningKey | TokenError::Encryption => {
                TokenCheckError::Invalid
            }
        }
    }
}

/// Keys, revocation rules and the time of the last word from the revocation stream.
#[derive(Debug)]
pub struct TokenVerifier {
    keys: RwLock<KeyRing>,
    revocations: RwLock<RevocationList>,
    /// Nanoseconds since the epoch of the last stream message; 0 before the first.
    last_contact: AtomicI64,
    stale_after: Duration,
}

impl TokenVerifier {
    pub fn new(stale_after: Duration) -> Self {
        TokenVerifier {
            keys: RwLock::new(KeyRing::default()),
            revocations: RwLock::new(RevocationList::new()),
            last_contact: AtomicI64::new(0),
            stale_after,
        }
    }

    /// Replaces the key ring with what auth-service lists (every key a live token may use).
    pub fn replace_keys(&self, keys: Vec<TokenKey>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = KeyRing::new(keys);
    }

    pub fn has_keys(&self) -> bool {
        !self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    pub fn apply(&self, rule: RevocationRule) {
        self.revocations
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(rule);
    }

    /// The sequence to resume the revocation stream after.
    pub fn last_sequence(&self) -> u64 {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last_sequence()
    }

    pub fn rule_count(&self) -> usize {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn mark_contact(&self, now: Timestamp) {
        self.last_contact
            .fetch_max(now.unix_nanos(), Ordering::Relaxed);
    }

    /// Time since the stream last spoke (`None` before it ever did).
    pub fn silence(&self, now: Timestamp) -> Option<Duration> {
        match self.last_contact.load(Ordering::Relaxed) {
            0 => None,
            last => Some(now.since(Timestamp::from_unix_nanos(last))),
        }
    }

    pub fn is_stale(&self, now: Timestamp) -> bool {
        self.silence(now).is_none_or(|s| s > self.stale_after)
    }

    pub fn prune(&self, now: Timestamp) {
        self.revocations
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .prune(now);
    }

    /// Opens a token of `kind`, then fails closed if the revocation view is stale, then
    /// checks the revocation rules.
    pub fn check(
        &self,
        kind: TokenKind,
        token: &str,
        now: Timestamp,
    ) -> Result<TokenClaims, TokenCheckError> {
        let claims = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .open(kind, token, now)?;
        if self.is_stale(now) {
            return Err(TokenCheckError::Stale);
        }
        if self
            .revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_revoked(&claims)
        {
            return Err(TokenCheckError::Revoked);
        }
        Ok(claims)
    }
}
