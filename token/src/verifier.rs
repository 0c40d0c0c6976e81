//! Local token checking: the token keys and revocation rules a process holds, and how fresh
//! its view of auth-service's revocation log is. No round trip per request. userinfo-service
//! follows the log over gRPC; auth-service follows its own log in-process, so IntrospectToken
//! reads no statement per call either.

use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::{
    KeyRing, RevocationList, RevocationRule, Timestamp, TokenClaims, TokenError, TokenKind,
    VerifyingKey,
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
            TokenError::Invalid
            | TokenError::NoSigningKey
            | TokenError::Signing
            | TokenError::KeyMaterial => TokenCheckError::Invalid,
        }
    }
}

/// Tokens whose signature was checked, kept so a token presented again costs a hash lookup
/// instead of an Ed25519 verification. Expiry, staleness and revocation are still checked on
/// every call; entries are tagged with the ring's generation, so a key change (a retirement)
/// makes every older entry a miss. An entry is keyed by the token's SHA-256, not the token
/// (hundreds of bytes), which keeps both caches full at about 4 MiB instead of 8; a hash
/// nobody can collide, since a forged token matching a key would skip the signature check.
const VERIFIED_TOKENS: usize = 8_192;

/// Keys, revocation rules and the time the revocation stream last said "you have everything"
/// (a heartbeat, see [`TokenVerifier::mark_caught_up`]).
#[derive(Debug)]
pub struct TokenVerifier {
    keys: RwLock<Keys>,
    revocations: RwLock<RevocationList>,
    /// When the last heartbeat arrived (the stream had caught up), on the monotonic clock: in
    /// nanoseconds after `epoch`, plus one; 0 before the first and after
    /// [`TokenVerifier::mark_stale`]. A wall-clock step can neither extend nor cut the bound.
    last_caught_up: AtomicU64,
    epoch: Instant,
    stale_after: Duration,
    /// Consent tokens and access tokens checked, apart, so a token never hits an entry
    /// verified as the other kind.
    verified: [VerifiedTokens; 2],
}

type VerifiedTokens = quick_cache::sync::Cache<[u8; 32], (u64, Arc<TokenClaims>)>;

/// The ring, its generation (bumped on every change) and the keys auth-service retired.
#[derive(Debug, Default)]
struct Keys {
    ring: KeyRing,
    generation: u64,
    /// Keys a heartbeat left out: never taken back from a listing (a replica that has not yet
    /// seen a retirement may still list the key for a moment).
    dropped: HashSet<String>,
}

impl TokenVerifier {
    /// A verifier with no keys and no rules, stale until its first heartbeat; it fails
    /// closed once `stale_after` passes without one.
    pub fn new(stale_after: Duration) -> Self {
        TokenVerifier {
            keys: RwLock::new(Keys::default()),
            revocations: RwLock::new(RevocationList::new()),
            last_caught_up: AtomicU64::new(0),
            epoch: Instant::now(),
            stale_after,
            verified: [
                VerifiedTokens::new(VERIFIED_TOKENS),
                VerifiedTokens::new(VERIFIED_TOKENS),
            ],
        }
    }

    /// Replaces the key ring with what auth-service lists (every key a live token may use).
    /// An empty list is ignored (`false`): auth-service always has a signing key, so an empty
    /// answer is a fault, and taking it would refuse every token.
    pub fn replace_keys(&self, keys: Vec<VerifyingKey>) -> bool {
        let mut held = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<_> = keys
            .into_iter()
            .filter(|k| !held.dropped.contains(&k.key_id))
            .collect();
        if keys.is_empty() {
            return false;
        }
        held.ring = KeyRing::verifying(keys);
        held.generation += 1;
        true
    }

    /// Keeps only the keys auth-service says are alive (a heartbeat's list): a key it retired
    /// verifies nothing here from now on. Listed keys this verifier lacks are fetched when a
    /// token names them.
    pub fn retain_keys(&self, live: &[String]) {
        let mut held = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let (kept, gone): (Vec<VerifyingKey>, Vec<VerifyingKey>) = held
            .ring
            .keys()
            .cloned()
            .partition(|k| live.contains(&k.key_id));
        if gone.is_empty() {
            return;
        }
        for key in &gone {
            tracing::warn!(key_id = %key.key_id, "auth-service no longer lists this token key; its tokens are refused");
        }
        held.ring = KeyRing::verifying(kept);
        held.generation += 1;
        held.dropped.extend(gone.into_iter().map(|k| k.key_id));
    }

    /// Whether any key is loaded (a verifier without keys can open no token).
    pub fn has_keys(&self) -> bool {
        !self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ring
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

    /// Records a heartbeat: at `at` this verifier held every rule in auth-service's log.
    /// Only heartbeats count; an open stream or a rule alone says nothing about a backlog.
    pub fn mark_caught_up(&self, at: Instant) {
        let since_epoch = at.saturating_duration_since(self.epoch).as_nanos();
        let mark = u64::try_from(since_epoch).unwrap_or(u64::MAX - 1) + 1;
        self.last_caught_up.fetch_max(mark, Ordering::Release);
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

    /// Time since the last heartbeat at the monotonic instant `at` (`None` before the first).
    pub fn silence(&self, at: Instant) -> Option<Duration> {
        // Acquire pairs with the Release in `mark_caught_up`: a check that sees the heartbeat
        // also sees every rule applied before it.
        match self.last_caught_up.load(Ordering::Acquire) {
            0 => None,
            mark => {
                let last = self.epoch + Duration::from_nanos(mark - 1);
                Some(at.saturating_duration_since(last))
            }
        }
    }

    /// Whether checks fail closed at the monotonic instant `at`: no heartbeat yet, or none
    /// within `stale_after`.
    pub fn is_stale(&self, at: Instant) -> bool {
        self.silence(at).is_none_or(|s| s > self.stale_after)
    }

    /// A heartbeat of the log: caught up at the monotonic instant `at`, and the rules expired
    /// by the wall clock `now` dropped.
    pub fn heartbeat(&self, at: Instant, now: Timestamp) {
        self.mark_caught_up(at);
        self.prune(now);
    }

    /// Drops rules whose every possible match has expired, so the list stays bounded.
    pub fn prune(&self, now: Timestamp) {
        self.revocations
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .prune(now);
    }

    /// Opens a token of `kind` (expiry against the wall clock `now`), then fails closed if
    /// the revocation view is stale at the monotonic instant `at`, then checks the
    /// revocation rules.
    pub fn check(
        &self,
        kind: TokenKind,
        token: &str,
        now: Timestamp,
        at: Instant,
    ) -> Result<Arc<TokenClaims>, TokenCheckError> {
        let claims = self.open(kind, token, now)?;
        match self.revoked(&claims, at) {
            None => Err(TokenCheckError::Stale),
            Some(true) => Err(TokenCheckError::Revoked),
            Some(false) => Ok(claims),
        }
    }

    /// Whether a rule held here voids `claims`; `None` when the revocation view is stale at
    /// the monotonic instant `at`, so the caller must not trust the rules held.
    pub fn revoked(&self, claims: &TokenClaims, at: Instant) -> Option<bool> {
        if self.is_stale(at) {
            return None;
        }
        let revocations = self.revocations.read().unwrap_or_else(|e| e.into_inner());
        Some(revocations.is_revoked(claims))
    }

    /// The token's claims: from the verified-token cache when this ring already checked its
    /// signature, else verified now (and remembered). Revocation is not checked.
    pub fn open(
        &self,
        kind: TokenKind,
        token: &str,
        now: Timestamp,
    ) -> Result<Arc<TokenClaims>, TokenCheckError> {
        let verified = &self.verified[match kind {
            TokenKind::Consent => 0,
            TokenKind::Access => 1,
        }];
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let (generation, claims) = {
            let held = self.keys.read().unwrap_or_else(|e| e.into_inner());
            if let Some((generation, claims)) = verified.get(&digest)
                && generation == held.generation
            {
                if claims.expires_at() <= now {
                    return Err(TokenCheckError::Expired);
                }
                return Ok(claims);
            }
            (held.generation, Arc::new(held.ring.open(kind, token, now)?))
        };
        verified.insert(digest, (generation, claims.clone()));
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scope, ScopeSet, SigningKey};

    const HOUR: Duration = Duration::from_secs(3600);

    fn verifier_and_token(stale_after: Duration, wall: Timestamp) -> (TokenVerifier, String) {
        let key = SigningKey::generate(
            "k1".into(),
            wall,
            wall.saturating_add(HOUR),
            wall.saturating_add(HOUR * 2),
        )
        .expect("key");
        let claims = TokenClaims {
            app_id: "app".into(),
            user_id: "u1".into(),
            scopes: ScopeSet::of(&[Scope::UserInfo]),
            issued_at: wall.unix_nanos(),
            expires_at: wall.saturating_add(HOUR).unix_nanos(),
            token_id: "t1".into(),
            grant_id: "g1".into(),
        };
        let token = KeyRing::signing([key.clone()])
            .mint(TokenKind::Consent, &claims, wall)
            .expect("mint");
        let verifier = TokenVerifier::new(stale_after);
        assert!(verifier.replace_keys(vec![key.verifying]));
        (verifier, token)
    }

    /// Guards the monotonic heartbeat time (`mark_caught_up` / `silence` on `Instant`s): the
    /// wall clock stepping back 20 minutes does not keep a silent stream fresh, and stepping
    /// forward 20 minutes does not make a live one stale. Only the monotonic time since the
    /// last heartbeat counts.
    #[test]
    fn staleness_follows_the_monotonic_clock_whatever_the_wall_clock_does() {
        let wall = Timestamp::now();
        let (verifier, token) = verifier_and_token(Duration::from_secs(30), wall);
        let t0 = Instant::now();
        verifier.mark_caught_up(t0);
        let stepped_back = Timestamp::from_unix_nanos(wall.unix_nanos() - 1_200_000_000_000);
        let stepped_forward = wall.saturating_add(Duration::from_secs(1200));

        assert!(
            verifier
                .check(
                    TokenKind::Consent,
                    &token,
                    stepped_forward,
                    t0 + Duration::from_secs(1)
                )
                .is_ok(),
            "one monotonic second after a heartbeat is fresh, whatever the wall clock says"
        );
        assert_eq!(
            verifier
                .check(
                    TokenKind::Consent,
                    &token,
                    stepped_back,
                    t0 + Duration::from_secs(31)
                )
                .err(),
            Some(TokenCheckError::Stale),
            "31 monotonic seconds of silence are stale, even with the wall clock set back"
        );
        assert_eq!(
            verifier.silence(t0 + Duration::from_secs(31)),
            Some(Duration::from_secs(31))
        );
        verifier.mark_caught_up(t0 + Duration::from_secs(40));
        verifier.mark_caught_up(t0 + Duration::from_secs(35));
        assert_eq!(
            verifier.silence(t0 + Duration::from_secs(41)),
            Some(Duration::from_secs(1)),
            "a late-arriving older heartbeat does not move the mark back"
        );
        verifier.mark_stale();
        assert!(verifier.is_stale(t0 + Duration::from_secs(41)));
    }

    /// Guards the ring generation on cache hits in `TokenVerifier::open`: a token verified
    /// (and cached) under a key is refused once a heartbeat drops that key, and a later
    /// listing that still names it does not bring it back.
    #[test]
    fn a_dropped_key_is_refused_even_for_cached_tokens_and_not_relisted() {
        let wall = Timestamp::now();
        let (verifier, token) = verifier_and_token(HOUR, wall);
        let at = Instant::now();
        verifier.mark_caught_up(at);
        assert!(verifier.check(TokenKind::Consent, &token, wall, at).is_ok());
        assert!(verifier.check(TokenKind::Consent, &token, wall, at).is_ok());
        let listed: Vec<_> = verifier
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ring
            .keys()
            .cloned()
            .collect();

        verifier.retain_keys(&["k2".to_owned()]);
        assert_eq!(
            verifier.check(TokenKind::Consent, &token, wall, at).err(),
            Some(TokenCheckError::UnknownKey)
        );
        assert!(
            !verifier.replace_keys(listed),
            "a dropped key is not taken back"
        );
        assert_eq!(
            verifier.check(TokenKind::Consent, &token, wall, at).err(),
            Some(TokenCheckError::UnknownKey)
        );
    }

    /// A cached consent token never passes as an access token.
    #[test]
    fn a_cached_token_of_one_kind_is_not_the_other_kind() {
        let wall = Timestamp::now();
        let (verifier, token) = verifier_and_token(HOUR, wall);
        let at = Instant::now();
        verifier.mark_caught_up(at);
        assert!(verifier.check(TokenKind::Consent, &token, wall, at).is_ok());
        assert_eq!(
            verifier.check(TokenKind::Access, &token, wall, at).err(),
            Some(TokenCheckError::Invalid)
        );
    }
}
