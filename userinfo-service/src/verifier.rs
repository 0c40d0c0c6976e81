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

/// Keys, revocation rules and the time the revocation stream last said "you have everything"
/// (a heartbeat, see [`TokenVerifier::mark_caught_up`]).
#[derive(Debug)]
pub struct TokenVerifier {
    keys: RwLock<KeyRing>,
    revocations: RwLock<RevocationList>,
    /// Nanoseconds since the epoch of the last heartbeat (the stream had caught up); 0 before
    /// the first and after [`TokenVerifier::mark_stale`].
    last_caught_up: AtomicI64,
    stale_after: Duration,
}

impl TokenVerifier {
    /// A verifier with no keys and no rules, stale until its first heartbeat; it fails
    /// closed once `stale_after` passes without one.
    pub fn new(stale_after: Duration) -> Self {
        TokenVerifier {
            keys: RwLock::new(KeyRing::default()),
            revocations: RwLock::new(RevocationList::new()),
            last_caught_up: AtomicI64::new(0),
            stale_after,
        }
    }

    /// Replaces the key ring with what auth-service lists (every key a live token may use).
    /// An empty list is ignored (`false`): auth-service always has a signing key, so an empty
    /// answer is a fault, and taking it would refuse every token.
    pub fn replace_keys(&self, keys: Vec<TokenKey>) -> bool {
        if keys.is_empty() {
            return false;
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = KeyRing::new(keys);
        true
    }

    /// Whether any key is loaded (a verifier without keys can open no token).
    pub fn has_keys(&self) -> bool {
        !self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Adds a rule from the stream (replays by sequence are ignored).
    pub fn apply(&self, rule: RevocationRule) {
        self.revocations
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(rule);
    }

    /// auth-service could not resume the stream where asked (its log no longer holds our
    /// last rule there: restored from a backup, or swept) and resumes after `sequence`:
    /// sequences after it must be accepted again.
    pub fn rewind_to(&self, sequence: u64) {
        let mut revocations = self.revocations.write().unwrap_or_else(|e| e.into_inner());
        if sequence < revocations.last_sequence() {
            tracing::warn!(
                resumed_after = sequence,
                applied = revocations.last_sequence(),
                "auth-service's revocation log does not hold our last rule (restored from a backup, or swept); following it from where it resumes"
            );
            revocations.rewind_to(sequence);
        }
    }

    /// Where to resume the revocation stream: after this sequence, whose rule was issued
    /// before this time.
    pub fn resume_point(&self) -> (u64, Option<Timestamp>) {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .resume_point()
    }

    /// The sequence to resume the revocation stream after.
    pub fn last_sequence(&self) -> u64 {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last_sequence()
    }

    /// Rules held, for the metrics gauge.
    pub fn rule_count(&self) -> usize {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Records a heartbeat: at `now` this verifier held every rule in auth-service's log.
    /// Only heartbeats count; an open stream or a rule alone says nothing about a backlog.
    pub fn mark_caught_up(&self, now: Timestamp) {
        self.last_caught_up
            .fetch_max(now.unix_nanos(), Ordering::Release);
    }

    /// Forgets the last heartbeat, so every check fails closed until the next one (after
    /// the stream delivered something this verifier cannot apply).
    pub fn mark_stale(&self) {
        self.last_caught_up.store(0, Ordering::Release);
    }

    /// How long without a heartbeat before checks fail closed.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// Time since the last heartbeat (`None` before the first).
    pub fn silence(&self, now: Timestamp) -> Option<Duration> {
        // Acquire pairs with the Release in `mark_caught_up`: a check that sees the heartbeat
        // also sees every rule applied before it.
        match self.last_caught_up.load(Ordering::Acquire) {
            0 => None,
            last => Some(now.since(Timestamp::from_unix_nanos(last))),
        }
    }

    /// Whether checks fail closed at `now`: no heartbeat yet, or none within `stale_after`.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        self.silence(now).is_none_or(|s| s > self.stale_after)
    }

    /// Drops rules whose every possible match has expired, so the list stays bounded.
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
