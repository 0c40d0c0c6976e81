//! Who is calling: the bearer roles (console, wallet gateway, verifier, privacy) and mini
//! program backends with their app credential, with failed app-credential attempts rate
//! limited.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use miniprogram_proto::caller_credentials::TokenDigest;
use miniprogram_token::Timestamp;
use sha2::{Digest, Sha256};

use crate::error::AuthError;
use crate::ids::check_id;
use crate::model::AppRecord;
use crate::secrets;
use crate::store::AuthStore;

/// The platform roles that call with a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerRole {
    /// The platform console: AppService.
    Admin,
    /// The wallet app's gateway, on behalf of a signed-in user: AuthorizationService.
    Wallet,
    /// A token verifier (userinfo-service): KeyService.
    Verifier,
    /// userinfo-service, for a user's export and erasure: those two methods of
    /// AuthorizationService and nothing else, so its credential cannot run consent.
    Privacy,
}

/// The bearer tokens of the roles, as configured (dev mode prints them, tests present them);
/// requests are checked against [`CallerRoles`], their digests.
#[derive(Clone)]
pub struct CallerTokens {
    pub admin: String,
    pub wallet: String,
    pub verifier: String,
    /// Optional: without it only the wallet exports and erases a user's authorizations.
    pub privacy: Option<String>,
}

impl std::fmt::Debug for CallerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerTokens(<redacted>)")
    }
}

/// The role tokens as SHA-256 digests: a presented token is hashed once and compared with
/// each in constant time, so neither a prefix nor a token's length leaks through timing.
#[derive(Debug, Clone)]
pub struct CallerRoles {
    admin: TokenDigest,
    wallet: TokenDigest,
    verifier: TokenDigest,
    privacy: Option<TokenDigest>,
}

impl CallerRoles {
    pub fn new(tokens: &CallerTokens) -> Self {
        CallerRoles {
            admin: TokenDigest::of(&tokens.admin),
            wallet: TokenDigest::of(&tokens.wallet),
            verifier: TokenDigest::of(&tokens.verifier),
            privacy: tokens.privacy.as_deref().map(TokenDigest::of),
        }
    }

    /// Checks an `authorization` header for `required`: a missing or unknown credential is
    /// unauthenticated; another role's valid credential is not permitted.
    pub fn authorize(&self, header: Option<&str>, required: CallerRole) -> Result<(), AuthError> {
        self.authorize_any(header, &[required])
    }

    /// [`CallerRoles::authorize`], for a method that any of `allowed` may call.
    pub fn authorize_any(
        &self,
        header: Option<&str>,
        allowed: &[CallerRole],
    ) -> Result<(), AuthError> {
        let presented = TokenDigest::of(
            miniprogram_proto::caller_credentials::bearer_token(header)
                .ok_or(AuthError::UnauthenticatedCaller)?,
        );
        let matched = [
            (CallerRole::Admin, self.admin.matches(&presented)),
            (CallerRole::Wallet, self.wallet.matches(&presented)),
            (CallerRole::Verifier, self.verifier.matches(&presented)),
            (
                CallerRole::Privacy,
                (self.privacy.as_ref()).is_some_and(|p| p.matches(&presented)),
            ),
        ];
        match matched.iter().find(|(_, ok)| *ok) {
            Some((role, _)) if allowed.contains(role) => Ok(()),
            Some(_) => Err(AuthError::CallerNotPermitted),
            None => Err(AuthError::UnauthenticatedCaller),
        }
    }
}

/// `Basic base64(app_id:app_secret)` split into its parts.
pub fn parse_basic(header: Option<&str>) -> Result<(String, String), AuthError> {
    miniprogram_proto::caller_credentials::basic_credential(header)
        .ok_or(AuthError::InvalidAuthClient)
}

/// Most keys each failure table holds (about 60 bytes each): past it, the key whose window
/// started first is dropped early, so a flood of distinct callers costs bounded memory and
/// no failure ever scans the table.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// What a failure table counts by: 128 bits of SHA-256 over the caller and app, so an entry
/// has a fixed size whatever the app id, and no two keys collide in practice.
type FailureKey = [u8; 16];

/// Failed attempts per key in fixed windows, in a table of at most `capacity` keys. Windows
/// are kept in the order they started, so expiry and eviction take the oldest first in O(1).
#[derive(Debug)]
struct FailureWindows {
    budget: u32,
    window: Duration,
    capacity: usize,
    /// When each key's window started and how many failures it has seen.
    counts: HashMap<FailureKey, (Timestamp, u32)>,
    /// Each key of `counts` once, with its window start, oldest first.
    starts: VecDeque<(FailureKey, Timestamp)>,
}

impl FailureWindows {
    fn new(budget: u32, window: Duration, capacity: usize) -> Self {
        FailureWindows {
            budget,
            window,
            capacity: capacity.max(1),
            counts: HashMap::new(),
            starts: VecDeque::new(),
        }
    }

    fn is_blocked(&self, key: &FailureKey, now: Timestamp) -> bool {
        self.counts
            .get(key)
            .is_some_and(|(start, n)| now.since(*start) < self.window && *n >= self.budget)
    }

    /// Counts a failure; the failures of the key's window so far.
    fn record(&mut self, key: FailureKey, now: Timestamp) -> u32 {
        self.expire(now);
        if let Some((_, n)) = self.counts.get_mut(&key) {
            *n = n.saturating_add(1);
            return *n;
        }
        if self.counts.len() >= self.capacity
            && let Some((oldest, _)) = self.starts.pop_front()
        {
            self.counts.remove(&oldest);
        }
        self.counts.insert(key, (now, 1));
        self.starts.push_back((key, now));
        1
    }

    /// Drops the windows that have ended, oldest first, stopping at the first still open.
    fn expire(&mut self, now: Timestamp) {
        while let Some(&(key, start)) = self.starts.front() {
            if now.since(start) < self.window {
                break;
            }
            self.starts.pop_front();
            self.counts.remove(&key);
        }
    }

    fn len(&self) -> usize {
        self.counts.len()
    }
}

/// Counts failed app-credential attempts per (caller, app) and per app, in fixed windows.
///
/// A caller is an IPv4 address or an IPv6 /64 (one host commonly holds a whole /64). Attempts
/// with no usable app id (malformed credential, unknown app) count for the caller under "no
/// app", so they never touch a real app's budget. Only apps that exist get a per-app count, so
/// made-up app ids can't crowd real apps out of their table.
#[derive(Debug)]
pub struct FailedAttemptLimiter {
    per_caller: Mutex<FailureWindows>,
    per_app: Mutex<FailureWindows>,
}

impl FailedAttemptLimiter {
    /// `budget` failures per key in each `window`, in tables of [`MAX_TRACKED_KEYS`].
    pub fn new(budget: u32, window: Duration) -> Self {
        Self::with_capacity(budget, window, MAX_TRACKED_KEYS)
    }

    /// As [`new`](Self::new), with tables of at most `capacity` keys each.
    pub fn with_capacity(budget: u32, window: Duration, capacity: usize) -> Self {
        FailedAttemptLimiter {
            per_caller: Mutex::new(FailureWindows::new(budget, window, capacity)),
            per_app: Mutex::new(FailureWindows::new(budget, window, capacity)),
        }
    }

    fn table(table: &Mutex<FailureWindows>) -> std::sync::MutexGuard<'_, FailureWindows> {
        table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `caller` has used up its failures for `app_id` (`None`: no usable app).
    pub fn caller_blocked(&self, caller: IpAddr, app_id: Option<&str>, now: Timestamp) -> bool {
        let key = caller_key(caller, app_id);
        Self::table(&self.per_caller).is_blocked(&key, now)
    }

    pub fn record_caller_failure(&self, caller: IpAddr, app_id: Option<&str>, now: Timestamp) {
        let key = caller_key(caller, app_id);
        Self::table(&self.per_caller).record(key, now);
    }

    /// Whether the app has had its budget of failures, from any callers, in this window.
    pub fn app_blocked(&self, app_id: &str, now: Timestamp) -> bool {
        let key = app_key(app_id);
        Self::table(&self.per_app).is_blocked(&key, now)
    }

    /// Counts a failure against an existing app; `true` when this one used up its budget.
    pub fn record_app_failure(&self, app_id: &str, now: Timestamp) -> bool {
        let key = app_key(app_id);
        let mut table = Self::table(&self.per_app);
        table.record(key, now) == table.budget
    }

    /// How many keys the two tables hold, to show their memory stays bounded.
    pub fn tracked_keys(&self) -> usize {
        Self::table(&self.per_caller).len() + Self::table(&self.per_app).len()
    }
}

/// An IPv4 caller as itself (IPv4-mapped), an IPv6 caller as its /64.
fn caller_network(caller: IpAddr) -> [u8; 16] {
    match caller.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            octets
        }
    }
}

fn truncated_digest(hasher: Sha256) -> FailureKey {
    let digest = hasher.finalize();
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn caller_key(caller: IpAddr, app_id: Option<&str>) -> FailureKey {
    let mut hasher = Sha256::new();
    hasher.update(b"caller\0");
    hasher.update(caller_network(caller));
    match app_id {
        Some(app_id) => {
            hasher.update([1]);
            hasher.update(app_id.as_bytes());
        }
        None => hasher.update([0]),
    }
    truncated_digest(hasher)
}

fn app_key(app_id: &str) -> FailureKey {
    let mut hasher = Sha256::new();
    hasher.update(b"app\0");
    hasher.update(app_id.as_bytes());
    truncated_digest(hasher)
}

/// How long a verified app credential is reused without reading the app again. A secret
/// rotated, or a feature switched, through this replica ends every reuse at once; through
/// another replica, within this bound.
pub const VERIFIED_CREDENTIAL_TTL: Duration = Duration::from_secs(1);

/// Most verified credentials kept (about 300 bytes each).
const VERIFIED_CREDENTIALS: usize = 10_000;

/// App credentials verified lately, so a backend's every call does not re-read its app.
/// Keyed by SHA-256 over the app id and the presented secret: the secret itself is never
/// kept, and only a credential that matched the stored hash is ever entered. An entry counts
/// only within [`VERIFIED_CREDENTIAL_TTL`] and while no app change on this replica
/// ([`VerifiedCredentials::forget_all`]) came after the read it was made from.
pub struct VerifiedCredentials {
    ttl: Duration,
    /// Bumped by every app change; an entry made from a read before the bump is ignored.
    generation: AtomicU64,
    entries: quick_cache::sync::Cache<[u8; 32], (u64, Timestamp, AppRecord)>,
}

impl VerifiedCredentials {
    pub fn new(ttl: Duration) -> Self {
        VerifiedCredentials {
            ttl,
            generation: AtomicU64::new(0),
            entries: quick_cache::sync::Cache::new(VERIFIED_CREDENTIALS),
        }
    }

    fn key(app_id: &str, secret: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update((app_id.len() as u64).to_be_bytes());
        hasher.update(app_id.as_bytes());
        hasher.update(secret.as_bytes());
        hasher.finalize().into()
    }

    fn get(&self, key: &[u8; 32], now: Timestamp) -> Option<AppRecord> {
        let (generation, verified_at, app) = self.entries.get(key)?;
        let current = generation == self.generation.load(Ordering::Acquire);
        (current && now.since(verified_at) < self.ttl).then_some(app)
    }

    /// Ends every reuse: called once an app change (secret, features, declaration) is written.
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
    }
}

/// Authenticates mini program backends by app id and secret.
pub struct AppAuthenticator {
    store: Arc<dyn AuthStore>,
    limiter: FailedAttemptLimiter,
    verified: Arc<VerifiedCredentials>,
}

impl AppAuthenticator {
    pub fn new(store: Arc<dyn AuthStore>, limiter: FailedAttemptLimiter) -> Self {
        let verified = Arc::new(VerifiedCredentials::new(VERIFIED_CREDENTIAL_TTL));
        Self::with_verified(store, limiter, verified)
    }

    /// Reuses credentials verified within `verified`'s time; the app registry shares it to
    /// end reuse on a change.
    pub fn with_verified(
        store: Arc<dyn AuthStore>,
        limiter: FailedAttemptLimiter,
        verified: Arc<VerifiedCredentials>,
    ) -> Self {
        AppAuthenticator {
            store,
            limiter,
            verified,
        }
    }

    /// Checks `authorization: Basic ...` from `caller`; the secret is compared in constant
    /// time against its stored hash.
    ///
    /// A caller over its failure budget *for this app* is refused outright, right secret or
    /// not: that is what stops one source guessing one app's secret. Its failures with other
    /// app ids never count here, so a stranger behind the same NAT or proxy can't lock an
    /// app's backend out by failing with other apps. An app over its budget (failures from
    /// any callers) refuses further *wrong* secrets with REQUEST_TRAFFIC_EXCEED_LIMIT, but the
    /// right secret is checked first and still accepted: app ids are public, so a budget that
    /// refused the right secret would hand anyone a switch to turn a mini program's sign-in
    /// off.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        caller: IpAddr,
        now: Timestamp,
    ) -> Result<AppRecord, AuthError> {
        // An id no app can have (empty, too long, control characters, which PostgreSQL's text
        // refuses as an error, not as "no such app") is refused unread, for the caller alone.
        let (app_id, secret) = match parse_basic(header) {
            Ok((app_id, secret)) if check_id("app_id", &app_id).is_ok() => (app_id, secret),
            _ => return Err(self.refuse_without_app(caller, now)),
        };
        if self.limiter.caller_blocked(caller, Some(&app_id), now) {
            return Err(AuthError::RequestTrafficExceedLimit);
        }
        let key = VerifiedCredentials::key(&app_id, &secret);
        if let Some(app) = self.verified.get(&key, now) {
            return Ok(app);
        }
        let generation = self.verified.generation.load(Ordering::Acquire);
        let Some(app) = self.store.repositories().apps().get(&app_id).await? else {
            return Err(self.refuse_without_app(caller, now));
        };
        if secrets::matches_hash(&secret, &app.secret_hash) {
            self.verified
                .entries
                .insert(key, (generation, now, app.clone()));
            return Ok(app);
        }
        self.limiter
            .record_caller_failure(caller, Some(&app_id), now);
        if self.limiter.app_blocked(&app_id, now) {
            return Err(AuthError::RequestTrafficExceedLimit);
        }
        if self.limiter.record_app_failure(&app_id, now) {
            tracing::warn!(
                app_id = %app_id,
                "failed app-credential attempts used up the app's budget; wrong secrets are \
                 refused until the window ends (the right one still works)"
            );
        }
        Err(AuthError::InvalidAuthClient)
    }

    /// A credential naming no app we have: counted for the caller alone.
    fn refuse_without_app(&self, caller: IpAddr, now: Timestamp) -> AuthError {
        if self.limiter.caller_blocked(caller, None, now) {
            return AuthError::RequestTrafficExceedLimit;
        }
        self.limiter.record_caller_failure(caller, None, now);
        AuthError::InvalidAuthClient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> CallerRoles {
        CallerRoles::new(&CallerTokens {
            admin: "a-token".into(),
            wallet: "w-token".into(),
            verifier: "v-token".into(),
            privacy: Some("p-token".into()),
        })
    }

    #[test]
    fn roles_are_told_apart() {
        let t = roles();
        assert!(
            t.authorize(Some("Bearer a-token"), CallerRole::Admin)
                .is_ok()
        );
        assert!(matches!(
            t.authorize(Some("Bearer w-token"), CallerRole::Admin),
            Err(AuthError::CallerNotPermitted)
        ));
        for unknown in ["Bearer nope", "Bearer a-toke", "Bearer a-token2", "a-token"] {
            assert!(
                matches!(
                    t.authorize(Some(unknown), CallerRole::Admin),
                    Err(AuthError::UnauthenticatedCaller)
                ),
                "{unknown}"
            );
        }
        assert!(matches!(
            t.authorize(None, CallerRole::Wallet),
            Err(AuthError::UnauthenticatedCaller)
        ));
        let erasure = [CallerRole::Wallet, CallerRole::Privacy];
        for token in ["Bearer w-token", "Bearer p-token"] {
            assert!(t.authorize_any(Some(token), &erasure).is_ok(), "{token}");
        }
        assert!(matches!(
            t.authorize(Some("Bearer p-token"), CallerRole::Wallet),
            Err(AuthError::CallerNotPermitted)
        ));
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn limiter_blocks_after_budget_until_window_ends() {
        let l = FailedAttemptLimiter::new(2, Duration::from_secs(60));
        let t0 = Timestamp::from_unix_nanos(1);
        let caller = ip("192.0.2.1");
        l.record_caller_failure(caller, Some("app-1"), t0);
        assert!(!l.caller_blocked(caller, Some("app-1"), t0));
        l.record_caller_failure(caller, Some("app-1"), t0);
        assert!(l.caller_blocked(caller, Some("app-1"), t0));
        assert!(!l.caller_blocked(ip("192.0.2.2"), Some("app-1"), t0));
        assert!(!l.caller_blocked(
            caller,
            Some("app-1"),
            t0.saturating_add(Duration::from_secs(61))
        ));
        assert!(!l.record_app_failure("app-1", t0));
        assert!(l.record_app_failure("app-1", t0), "the second uses it up");
        assert!(l.app_blocked("app-1", t0));
    }

    /// Guards `caller_key` taking the app: a caller's failures with other app ids (or with no
    /// usable app id) leave its budget for an app untouched.
    #[test]
    fn a_callers_failures_with_other_apps_never_block_it_for_this_one() {
        let l = FailedAttemptLimiter::new(2, Duration::from_secs(60));
        let t0 = Timestamp::from_unix_nanos(1);
        let caller = ip("192.0.2.1");
        for other in ["app-2", "app-3"] {
            for _ in 0..5 {
                l.record_caller_failure(caller, Some(other), t0);
            }
        }
        for _ in 0..5 {
            l.record_caller_failure(caller, None, t0);
        }
        assert!(l.caller_blocked(caller, Some("app-2"), t0));
        assert!(l.caller_blocked(caller, None, t0));
        assert!(!l.caller_blocked(caller, Some("app-1"), t0));
    }

    /// Guards `caller_network`: one IPv6 host holds a /64, so its addresses count as one
    /// caller; IPv4 addresses, and other /64s, count apart.
    #[test]
    fn an_ipv6_caller_is_its_slash_64() {
        let l = FailedAttemptLimiter::new(2, Duration::from_secs(60));
        let t0 = Timestamp::from_unix_nanos(1);
        l.record_caller_failure(ip("2001:db8:0:1::1"), Some("app-1"), t0);
        l.record_caller_failure(ip("2001:db8:0:1:ffff::2"), Some("app-1"), t0);
        assert!(l.caller_blocked(ip("2001:db8:0:1::3"), Some("app-1"), t0));
        assert!(!l.caller_blocked(ip("2001:db8:0:2::1"), Some("app-1"), t0));
        l.record_caller_failure(ip("192.0.2.1"), Some("app-1"), t0);
        l.record_caller_failure(ip("::ffff:192.0.2.1"), Some("app-1"), t0);
        assert!(l.caller_blocked(ip("192.0.2.1"), Some("app-1"), t0));
        assert!(!l.caller_blocked(ip("192.0.2.2"), Some("app-1"), t0));
    }

    /// Guards the capacity bound in `FailureWindows::record` and its O(1) oldest-first
    /// eviction: a million distinct callers failing within one window leave at most
    /// `MAX_TRACKED_KEYS` entries, the newest callers still counted. The time bound catches
    /// a return to scanning the whole table on each failure (quadratic: hours for 10^6).
    #[test]
    fn a_million_distinct_callers_keep_the_limiter_bounded() {
        let (done, outcome) = std::sync::mpsc::channel();
        // A thread of its own, so a hang fails at the time bound instead of holding the test.
        std::thread::spawn(move || {
            let l = FailedAttemptLimiter::new(1, Duration::from_secs(60));
            let t0 = Timestamp::from_unix_nanos(1_000_000_000);
            let caller = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            for i in 0..1_000_000u32 {
                let now = t0.saturating_add(Duration::from_micros(u64::from(i)));
                l.record_caller_failure(caller(i), Some("app-1"), now);
            }
            let now = t0.saturating_add(Duration::from_secs(2));
            let _ = done.send((
                l.tracked_keys(),
                l.caller_blocked(caller(999_999), Some("app-1"), now),
                l.caller_blocked(caller(0), Some("app-1"), now),
            ));
        });
        let (tracked, newest_blocked, oldest_blocked) = outcome
            .recv_timeout(Duration::from_secs(120))
            .expect("a million failures took over two minutes: is the table scanned per failure?");
        assert!(tracked <= MAX_TRACKED_KEYS, "{tracked} keys tracked");
        assert!(newest_blocked, "the newest caller's failure was dropped");
        assert!(!oldest_blocked, "the oldest window is the one evicted");
    }

    fn app() -> AppRecord {
        crate::testing::app_record("mp1", crate::model::FeatureSet::EMPTY)
    }

    /// Guards the time bound in `VerifiedCredentials::get`: a credential verified longer ago
    /// than the TTL (another replica may have rotated the secret meanwhile) is read again.
    #[test]
    fn a_verified_credential_is_reused_only_within_its_time() {
        let verified = VerifiedCredentials::new(Duration::from_secs(1));
        let t0 = Timestamp::from_unix_nanos(1_000_000_000);
        let key = VerifiedCredentials::key("mp1", "secret");
        verified.entries.insert(key, (0, t0, app()));
        let soon = t0.saturating_add(Duration::from_millis(999));
        assert!(verified.get(&key, soon).is_some());
        let late = t0.saturating_add(Duration::from_secs(1));
        assert!(verified.get(&key, late).is_none(), "reused past its time");
        let other = VerifiedCredentials::key("mp1", "secret2");
        assert!(verified.get(&other, soon).is_none());
    }

    /// Guards the generation check in `VerifiedCredentials::get`: an entry made from an app
    /// read before `forget_all` (a rotation racing a verification) is never reused.
    #[test]
    fn an_entry_read_before_an_app_change_is_not_reused() {
        let verified = VerifiedCredentials::new(Duration::from_secs(60));
        let t0 = Timestamp::from_unix_nanos(1_000_000_000);
        let key = VerifiedCredentials::key("mp1", "secret");
        let read_at = verified.generation.load(Ordering::Acquire);
        verified.forget_all();
        verified.entries.insert(key, (read_at, t0, app()));
        assert!(verified.get(&key, t0).is_none(), "a stale read was reused");
        let fresh = verified.generation.load(Ordering::Acquire);
        verified.entries.insert(key, (fresh, t0, app()));
        assert!(verified.get(&key, t0).is_some());
    }

    /// Guards `FailureWindows::expire`: windows that have ended leave the table as soon as
    /// the next failure is counted.
    #[test]
    fn ended_windows_leave_the_table() {
        let l = FailedAttemptLimiter::new(3, Duration::from_secs(60));
        let t0 = Timestamp::from_unix_nanos(1);
        for i in 0..1000u32 {
            l.record_caller_failure(IpAddr::from(std::net::Ipv4Addr::from(i)), None, t0);
        }
        assert_eq!(l.tracked_keys(), 1000);
        let later = t0.saturating_add(Duration::from_secs(60));
        l.record_caller_failure(ip("192.0.2.1"), None, later);
        assert_eq!(l.tracked_keys(), 1);
    }
}
