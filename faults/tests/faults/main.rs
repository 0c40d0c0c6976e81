//! Fault tests: auth-service and userinfo-service as the operating system runs them (their own
//! binaries, child processes on 127.0.0.1:0), killed, stopped, cut off, starved of disk, run as
//! replicas on one PostgreSQL and started on databases an older version wrote. Each test names
//! the mechanism it holds the services to; each was seen failing with that mechanism removed.
//!
//! The PostgreSQL cases (names contain `postgres`) and the one that mounts a filesystem
//! (`disk_full`) are `#[ignore]`d, so a plain `cargo test` lists them as not run; CI runs them
//! with `-- --ignored postgres disk_full`.

mod clients;
mod private_postgres;
mod process;

mod crash;
mod ledger;
mod outages;
mod replicas;
mod upgrades;

use std::future::Future;
use std::time::Duration;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Tests that time what they check (a withdrawal seen within a second, rows swept just before
/// they expire, a call failing within its timeout) run [`alone`]; every other test, which loads
/// the machine and the shared PostgreSQL, holds this [`alongside_others`].
static QUIET: RwLock<()> = RwLock::const_new(());

/// Waits until no other test of this binary runs, and keeps it so while held.
pub async fn alone() -> RwLockWriteGuard<'static, ()> {
    QUIET.write().await
}

/// Keeps tests that run [`alone`] from starting while held.
pub async fn alongside_others() -> RwLockReadGuard<'static, ()> {
    QUIET.read().await
}

/// Runs a whole test body within `bound`: a hang fails with `what` instead of holding CI.
pub async fn within<T>(bound: Duration, what: &str, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, body)
        .await
        .unwrap_or_else(|_| panic!("{what}: not finished within {bound:?}"))
}

/// The users of auth-service's database whose withdrawal lacks its rule. A withdrawal stamps
/// the authorization and appends a rule with the same time in one transaction, so none may be
/// found however a write was interrupted.
pub const HALF_WRITTEN_WITHDRAWALS: &str = "SELECT a.user_id FROM authorizations a
    WHERE a.granted = 0 AND a.denied = 0
      AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.app_id = a.app_id
                      AND r.user_id = a.user_id AND r.issued_before = a.updated_at)";

/// A small random-number generator (SplitMix64) for kill timings and interleavings, seeded
/// from the clock and printed, so a failing run can be replayed with `FAULTS_SEED`.
pub struct Dice(u64);

impl Dice {
    pub fn seeded(test: &str) -> Dice {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: FAULTS_SEED={seed}");
        Dice(seed)
    }

    fn roll(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..high` (milliseconds, say).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.roll() % (high - low).max(1)
    }
}
