use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the domain reads the current time: handed in from the top (the gRPC layer and the
/// background tasks it starts), never read from the system below it, so a test can set it.
pub trait Clock: Send + Sync {
    /// The wall clock: stamps and expiry.
    fn now(&self) -> Timestamp;
    /// The monotonic clock: durations a step of the wall clock must not bend (staleness).
    fn monotonic(&self) -> Instant;
}

/// The system's wall clock with strictly increasing readings, so within a process a grant
/// issued right after a revocation is always stamped later than the revocation.
#[derive(Debug, Default)]
pub struct SystemClock {
    last: AtomicI64,
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let wall = Timestamp::now().unix_nanos();
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Timestamp(next),
                Err(actual) => prev = actual,
            }
        }
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// A wall-clock instant in nanoseconds since the Unix epoch.
///
/// Nanoseconds, so that a revocation stamped at T never catches a token issued right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest representable instant; used as "never" for optional bounds.
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// The current system time (saturating at the epoch for clocks set before 1970).
    pub fn now() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(nanos)
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(nanos))
    }

    /// Time elapsed from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Whole seconds and the nanosecond remainder, as `google.protobuf.Timestamp` wants them.
    pub fn seconds_and_nanos(self) -> (i64, i32) {
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000) as i32;
        (secs, nanos)
    }

    /// The inverse of [`Timestamp::seconds_and_nanos`]; `None` when out of range.
    pub fn from_seconds_and_nanos(seconds: i64, nanos: i32) -> Option<Self> {
        if !(0..1_000_000_000).contains(&nanos) {
            return None;
        }
        seconds
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(i64::from(nanos)))
            .map(Timestamp)
    }
}
