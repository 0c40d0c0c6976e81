//! Scraping limits on the two reads: answered GetOpenUserInfo and GetPhoneNumber calls per app
//! and per token, in memory on each replica. governor's keyed limiters (GCRA over a sharded
//! map, one atomic per key) keep the check free of any global lock.

use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use crate::error::UserInfoError;

/// Most keys each limiter table tracks (about 100 bytes each). Past it, keys not yet tracked
/// share one budget until pruning makes room, so a flood of new tokens costs bounded memory.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// How often idle keys (whose budget has refilled completely) are dropped from the tables.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// A sustained rate with a burst on top.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Calls per second, after the burst is spent; may be below 1.
    pub per_second: f64,
    /// Calls allowed at once from a full budget.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `per_second` with `burst`; `None` unless the rate is finite, positive and at most a
    /// billion a second (a budget refilled in less than a nanosecond can't be represented).
    pub fn new(per_second: f64, burst: NonZeroU32) -> Option<Self> {
        (per_second.is_finite() && per_second > 0.0 && per_second <= 1e9)
            .then_some(RateLimit { per_second, burst })
    }

    fn quota(self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.per_second).max(Duration::from_nanos(1));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(self.burst))
            .allow_burst(self.burst)
    }
}

/// The configured limits; `None` turns one off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadLimits {
    /// Answered reads per app, each method counted apart.
    pub per_app: Option<RateLimit>,
    /// Answered reads per token (its token id).
    pub per_token: Option<RateLimit>,
}

/// The two limited reads; each has budgets of its own, so an app's flood of GetOpenUserInfo
/// (whose consent tokens live in the mini program's client) can't starve its backend's
/// GetPhoneNumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMethod {
    OpenUserInfo,
    PhoneNumber,
}

impl ReadMethod {
    /// The method name, as the metrics label it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReadMethod::OpenUserInfo => "GetOpenUserInfo",
            ReadMethod::PhoneNumber => "GetPhoneNumber",
        }
    }
}

/// Budgets shared past a table's cap: a table's keys fall into these buckets, by their app.
const OVERFLOW_BUCKETS: usize = 256;

/// What picks a key's overflow budget once its table is full.
trait OverflowBucket {
    fn bucket(&self) -> usize;
}

/// App ids: the per-app tables hold every app that reads, so past their cap (100,000 apps
/// reading within one prune interval) the apps not yet tracked share one budget.
impl OverflowBucket for String {
    fn bucket(&self) -> usize {
        0
    }
}

/// A token's key in the per-token tables: its app's overflow bucket in the high byte and a
/// keyed hash of its token id below (token ids are random and server-made, so two tokens
/// sharing a budget by a collision, about 1 in 10^12 for a full table, is harmless). Past the
/// cap, new tokens share their app's bucket's budget, so one app's flood of fresh tokens
/// refuses only the apps in its bucket (1 in 256), not every app's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenKey(u64);

impl OverflowBucket for TokenKey {
    fn bucket(&self) -> usize {
        (self.0 >> 56) as usize
    }
}

/// governor's sharded map store with a cap on the keys it tracks: past the cap, every key not
/// yet tracked is measured against its bucket's shared state, until
/// [`ShrinkableKeyedStateStore::retain_recent`] drops idle keys and recounts.
struct CappedKeys<K: Hash + Eq + Clone> {
    states: DashMapStateStore<K>,
    /// Keys in `states`; may run over by a key two callers add at once, recounted on pruning.
    tracked: AtomicUsize,
    capacity: usize,
    overflow: Box<[InMemoryState]>,
}

impl<K: Hash + Eq + Clone> CappedKeys<K> {
    fn new(capacity: usize) -> Self {
        CappedKeys {
            states: DashMapStateStore::default(),
            tracked: AtomicUsize::new(0),
            capacity,
            overflow: (0..OVERFLOW_BUCKETS)
                .map(|_| InMemoryState::default())
                .collect(),
        }
    }
}

impl<K: Hash + Eq + Clone + OverflowBucket> StateStore for CappedKeys<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.states.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if self.tracked.load(Ordering::Relaxed) >= self.capacity {
            let bucket = &self.overflow[key.bucket() % OVERFLOW_BUCKETS];
            return bucket.measure_and_replace(&NotKeyed::NonKey, f);
        }
        self.tracked.fetch_add(1, Ordering::Relaxed);
        let state = self.states.entry(key.clone()).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl<K: Hash + Eq + Clone + OverflowBucket> ShrinkableKeyedStateStore<K> for CappedKeys<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.states.retain_recent(drop_below);
        self.tracked.store(self.states.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.states.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.states.len()
    }

    fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

type KeyedLimiter<K> = RateLimiter<K, CappedKeys<K>, DefaultClock>;

fn keyed<K: Hash + Eq + Clone + OverflowBucket>(
    limit: Option<RateLimit>,
    capacity: usize,
) -> Option<KeyedLimiter<K>> {
    limit.map(|l| {
        RateLimiter::new(
            l.quota(),
            CappedKeys::new(capacity),
            DefaultClock::default(),
        )
    })
}

/// One method's tables.
struct MethodLimiters {
    per_app: Option<KeyedLimiter<String>>,
    per_token: Option<KeyedLimiter<TokenKey>>,
}

/// Checks answered reads against [`ReadLimits`]; refusals are counted in
/// `read_limit_refusals_total{method, reason}` (reason `per_app` or `per_token`: no app or
/// token label, whose values are unbounded).
pub struct ReadLimiter {
    open_user_info: MethodLimiters,
    phone_number: MethodLimiters,
    /// Keys the hashes of [`TokenKey`], per process, so no caller can aim at a bucket.
    hasher: RandomState,
}

impl ReadLimiter {
    /// Tables of at most [`MAX_TRACKED_KEYS`] keys each.
    pub fn new(limits: ReadLimits) -> Self {
        Self::with_capacity(limits, MAX_TRACKED_KEYS)
    }

    /// As [`new`](Self::new), with tables of at most `capacity` keys each.
    pub fn with_capacity(limits: ReadLimits, capacity: usize) -> Self {
        let tables = || MethodLimiters {
            per_app: keyed(limits.per_app, capacity),
            per_token: keyed(limits.per_token, capacity),
        };
        ReadLimiter {
            open_user_info: tables(),
            phone_number: tables(),
            hasher: RandomState::new(),
        }
    }

    /// The overflow bucket of `app_id`'s tokens.
    fn bucket_of(&self, app_id: &str) -> u64 {
        self.hasher.hash_one(app_id) % OVERFLOW_BUCKETS as u64
    }

    fn token_key(&self, app_id: &str, token_id: &str) -> TokenKey {
        let token = self.hasher.hash_one(token_id) & ((1 << 56) - 1);
        TokenKey(self.bucket_of(app_id) << 56 | token)
    }

    fn tables(&self, method: ReadMethod) -> &MethodLimiters {
        match method {
            ReadMethod::OpenUserInfo => &self.open_user_info,
            ReadMethod::PhoneNumber => &self.phone_number,
        }
    }

    /// Takes one read from the app's budget, then one from the token's. A read the app's
    /// budget refuses takes nothing from the token's, so a refused flood adds no token keys.
    pub fn check(
        &self,
        method: ReadMethod,
        app_id: &String,
        token_id: &str,
    ) -> Result<(), UserInfoError> {
        let tables = self.tables(method);
        let app_allows = tables
            .per_app
            .as_ref()
            .is_none_or(|l| l.check_key(app_id).is_ok());
        if !app_allows {
            return Err(refused(method, "per_app"));
        }
        let token_allows = tables
            .per_token
            .as_ref()
            .is_none_or(|l| l.check_key(&self.token_key(app_id, token_id)).is_ok());
        if !token_allows {
            return Err(refused(method, "per_token"));
        }
        Ok(())
    }

    /// Drops keys whose budget has refilled completely (they behave as new keys would).
    pub fn prune(&self) {
        for tables in [&self.open_user_info, &self.phone_number] {
            if let Some(limiter) = &tables.per_app {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
            if let Some(limiter) = &tables.per_token {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }

    /// Keys tracked across every table, to show memory stays bounded.
    pub fn tracked_keys(&self) -> usize {
        [&self.open_user_info, &self.phone_number]
            .into_iter()
            .map(|t| {
                t.per_app.as_ref().map_or(0, RateLimiter::len)
                    + t.per_token.as_ref().map_or(0, RateLimiter::len)
            })
            .sum()
    }

    /// Prunes every [`PRUNE_INTERVAL`], forever.
    pub async fn run_pruning(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            tick.tick().await;
            self.prune();
        }
    }
}

/// Counts a refusal in `read_limit_refusals_total{method, reason}`.
fn refused(method: ReadMethod, reason: &'static str) -> UserInfoError {
    metrics::counter!(
        "read_limit_refusals_total",
        "method" => method.as_str(),
        "reason" => reason
    )
    .increment(1);
    UserInfoError::ReadLimitExceeded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_app: Option<(f64, u32)>, per_token: Option<(f64, u32)>) -> ReadLimits {
        let limit = |(rate, burst): (f64, u32)| {
            RateLimit::new(rate, NonZeroU32::new(burst).unwrap()).unwrap()
        };
        ReadLimits {
            per_app: per_app.map(limit),
            per_token: per_token.map(limit),
        }
    }

    /// One call per thousand seconds: nothing refills while a test runs.
    const SLOW: f64 = 0.001;

    /// Guards `CappedKeys::measure_and_replace`'s cap: a flood of distinct tokens tracks at
    /// most `capacity` keys, the rest sharing their app's bucket's budget (which then refuses).
    #[test]
    fn a_flood_of_new_tokens_tracks_at_most_the_cap() {
        let limiter = ReadLimiter::with_capacity(limits(None, Some((SLOW, 1))), 50);
        let app = "app".to_owned();
        let refused = (0..1000)
            .filter(|i| {
                limiter
                    .check(ReadMethod::OpenUserInfo, &app, &format!("token-{i}"))
                    .is_err()
            })
            .count();
        assert_eq!(limiter.tracked_keys(), 50);
        assert_eq!(
            refused,
            1000 - 50 - 1,
            "past the cap, one shared budget of 1"
        );
    }

    /// Guards the overflow buckets of `CappedKeys` (by app, through `TokenKey`): once one app's
    /// flood of fresh tokens has filled the per-token table and spent its bucket's shared
    /// budget, a fresh token of an app in another bucket is still answered, and one of an app
    /// in the flooder's bucket is not.
    #[test]
    fn one_apps_flood_of_new_tokens_leaves_other_apps_their_overflow() {
        let limiter = ReadLimiter::with_capacity(limits(None, Some((SLOW, 1))), 50);
        let flooder = "flooder".to_owned();
        for i in 0..1000 {
            let _ = limiter.check(ReadMethod::OpenUserInfo, &flooder, &format!("token-{i}"));
        }
        let flooded = limiter.bucket_of(&flooder);
        let (alongside, elsewhere): (Vec<String>, Vec<String>) = (0..10_000)
            .map(|i| format!("app-{i}"))
            .partition(|app| limiter.bucket_of(app) == flooded);
        let fresh = |app: &String, token: &str| limiter.check(ReadMethod::OpenUserInfo, app, token);
        assert!(
            fresh(&elsewhere[0], "fresh-1").is_ok(),
            "another bucket's budget"
        );
        let neighbour = alongside.first().expect("10,000 apps land in every bucket");
        assert!(
            fresh(neighbour, "fresh-2").is_err(),
            "the flooder's bucket is spent"
        );
    }

    /// Guards `ReadLimiter::prune`: keys whose budget has refilled are dropped, and the cap
    /// makes room again.
    #[test]
    fn pruning_drops_idle_keys() {
        let limiter = ReadLimiter::with_capacity(limits(Some((1e9, 1)), Some((1e9, 1))), 10);
        let app = "app".to_owned();
        for i in 0..10 {
            let _ = limiter.check(ReadMethod::PhoneNumber, &app, &format!("t{i}"));
        }
        assert_eq!(limiter.tracked_keys(), 11);
        std::thread::sleep(Duration::from_millis(5));
        limiter.prune();
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn rates_must_be_positive_finite_and_representable() {
        let one = NonZeroU32::MIN;
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e9] {
            assert_eq!(RateLimit::new(bad, one), None, "{bad}");
        }
        assert!(RateLimit::new(0.001, one).is_some());
    }
}
