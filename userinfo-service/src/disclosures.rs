//! The disclosure ledger: every answered GetOpenUserInfo and GetPhoneNumber, counted per
//! (user, app, kind, UTC day). A read only adds one to a counter in memory, in one of many
//! shards (a lock held for a hash-map update); a background task writes the counters in one
//! transaction every flush interval, so a million reads a day of one user by one app are one
//! row, written about once a second.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use miniprogram_token::{Clock, Timestamp};
use tokio::sync::Notify;

use crate::error::UserInfoError;
use crate::model::{DisclosedFields, Disclosure, DisclosurePosition, UtcDay};
use crate::store::{DisclosureStore, StoreResult};

/// Shards of the in-memory counters: concurrent reads rarely meet on one lock.
const SHARDS: usize = 32;

/// Rows a page of `ListDisclosures` holds when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Most rows a page holds, whatever the caller asks: a page costs bounded time and memory.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Longest app id a filter may name, as auth-service bounds them.
const MAX_APP_ID_LEN: usize = 128;

/// How often rows past the retention are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// How the ledger is written and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisclosureSettings {
    /// Counters are written this often: what a crash can lose.
    pub flush_interval: Duration,
    /// Distinct rows held in memory, at most, waiting to be written (and as many again
    /// already taken for a write the store has not accepted yet).
    pub max_pending: usize,
    /// Rows of days older than this are swept.
    pub retention: Duration,
}

/// A row's key while it is counted in memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    user_id: String,
    app_id: String,
    fields: DisclosedFields,
    day: UtcDay,
}

type Counters = HashMap<Key, u64>;

/// Counts reads in memory and writes them to the store in batches.
pub struct DisclosureLedger {
    shards: Box<[Mutex<Counters>]>,
    hasher: RandomState,
    shard_capacity: usize,
    capacity: usize,
    /// Counters taken from the shards and not yet written: what a failed write keeps for the
    /// next one. Only a flush or an erasure holds this lock, never a read.
    unwritten: tokio::sync::Mutex<Counters>,
    /// Woken when a shard is full, to flush before the interval ends.
    full: Notify,
    /// Reads not counted because the counters were full, since start.
    dropped: AtomicU64,
    store: Arc<dyn DisclosureStore>,
}

fn lock(shard: &Mutex<Counters>) -> MutexGuard<'_, Counters> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

impl DisclosureLedger {
    /// A ledger holding at most `max_pending` distinct rows in its shards.
    pub fn new(store: Arc<dyn DisclosureStore>, max_pending: usize) -> Self {
        let capacity = max_pending.max(1);
        DisclosureLedger {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            shard_capacity: capacity.div_ceil(SHARDS),
            capacity,
            unwritten: tokio::sync::Mutex::default(),
            full: Notify::new(),
            dropped: AtomicU64::new(0),
            store,
        }
    }

    /// Counts one answered read. When the key is new and its shard is full, the read is not
    /// counted (`disclosure_reads_dropped_total`) and the writer is woken to empty the shards.
    pub fn record(&self, user_id: &str, app_id: &str, fields: DisclosedFields, now: Timestamp) {
        let key = Key {
            user_id: user_id.to_owned(),
            app_id: app_id.to_owned(),
            fields,
            day: UtcDay::of(now),
        };
        let shard = &self.shards[self.hasher.hash_one(&key) as usize % SHARDS];
        {
            let mut counters = lock(shard);
            if let Some(count) = counters.get_mut(&key) {
                *count = count.saturating_add(1);
                return;
            }
            if counters.len() < self.shard_capacity {
                counters.insert(key, 1);
                return;
            }
        }
        self.drop_reads(1);
        self.full.notify_one();
    }

    fn drop_reads(&self, reads: u64) {
        self.dropped.fetch_add(reads, Ordering::Relaxed);
        metrics::counter!("disclosure_reads_dropped_total").increment(reads);
    }

    /// Reads not counted since start because the counters were full.
    pub fn dropped_reads(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Distinct rows held in memory: in the shards, and (unless a flush holds them right now)
    /// taken but unwritten. At most twice `max_pending`.
    pub fn pending_rows(&self) -> usize {
        let counted: usize = self.shards.iter().map(|s| lock(s).len()).sum();
        counted + self.unwritten.try_lock().map_or(0, |u| u.len())
    }

    /// Writes every counter in one transaction; how many rows. Counters stay in memory until
    /// the write commits, so a failed (or cancelled) flush loses nothing: the next one writes
    /// them with whatever came in since, up to `max_pending` rows (reads beyond are dropped
    /// and counted).
    pub async fn flush(&self) -> StoreResult<usize> {
        let mut unwritten = self.unwritten.lock().await;
        for shard in &self.shards {
            let taken = std::mem::take(&mut *lock(shard));
            for (key, count) in taken {
                if let Some(total) = unwritten.get_mut(&key) {
                    *total = total.saturating_add(count);
                } else if unwritten.len() < self.capacity {
                    unwritten.insert(key, count);
                } else {
                    self.drop_reads(count);
                }
            }
        }
        if unwritten.is_empty() {
            return Ok(0);
        }
        let mut rows: Vec<Disclosure> = unwritten
            .iter()
            .map(|(key, &count)| Disclosure {
                user_id: key.user_id.clone(),
                app_id: key.app_id.clone(),
                fields: key.fields,
                day: key.day,
                count,
            })
            .collect();
        // One order for every writer, so replicas flushing the same rows never deadlock.
        rows.sort_by(|a, b| {
            (&a.user_id, a.day, &a.app_id, a.fields).cmp(&(&b.user_id, b.day, &b.app_id, b.fields))
        });
        self.store.add_disclosures(&rows).await?;
        unwritten.clear();
        unwritten.shrink_to(self.capacity.min(1024));
        Ok(rows.len())
    }

    /// Forgets every counter of the user: part of erasing them.
    pub async fn forget_user(&self, user_id: &str) {
        for shard in &self.shards {
            lock(shard).retain(|key, _| key.user_id != user_id);
        }
        self.unwritten
            .lock()
            .await
            .retain(|key, _| key.user_id != user_id);
    }

    /// Flushes every `interval`, or sooner when a shard is full, forever. A failed write is
    /// logged with its row count (never a user id) and retried on the next round.
    pub async fn run_flushing(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.full.notified() => {}
            }
            if let Err(e) = self.flush().await {
                metrics::counter!("disclosure_flush_failures_total").increment(1);
                tracing::warn!(error = %e, "writing the disclosure ledger failed; kept for the next try");
            }
            let dropped = self.dropped_reads();
            if dropped > reported {
                tracing::warn!(
                    reads = dropped - reported,
                    "disclosure reads went unrecorded: the ledger's counters were full"
                );
                reported = dropped;
            }
        }
    }

    /// Deletes rows of days older than `retention` before `now`'s day; how many.
    pub async fn sweep(&self, retention: Duration, now: Timestamp) -> StoreResult<u64> {
        let days = i64::try_from(retention.as_secs() / 86_400).unwrap_or(i64::MAX);
        let before = UtcDay(UtcDay::of(now).0.saturating_sub(days));
        self.store.sweep_disclosures(before).await
    }

    /// Sweeps every hour, forever.
    pub async fn run_sweeping(self: Arc<Self>, retention: Duration, clock: Arc<dyn Clock>) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            match self.sweep(retention, clock.now()).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "swept disclosure rows past their retention"),
                Err(e) => tracing::warn!(error = %e, "sweeping the disclosure ledger failed"),
            }
        }
    }

    /// A page of the user's ledger (a user id already checked), newest day first, optionally
    /// of one app; the next page's token is empty after the last page.
    pub async fn list(
        &self,
        user_id: &str,
        app_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Disclosure>, String), UserInfoError> {
        if app_id.len() > MAX_APP_ID_LEN || app_id.chars().any(char::is_control) {
            return Err(UserInfoError::InvalidArgument {
                field: "app_id",
                problem: "is not an app id",
            });
        }
        let after = match page_token {
            "" => None,
            token => Some(
                decode_page_token(token).ok_or(UserInfoError::InvalidArgument {
                    field: "page_token",
                    problem: "is not a token this service gave",
                })?,
            ),
        };
        let limit = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let app_id = (!app_id.is_empty()).then_some(app_id);
        let mut rows = self
            .store
            .list_disclosures(user_id, app_id, after.as_ref(), limit + 1)
            .await?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|last| {
                encode_page_token(&DisclosurePosition {
                    day: last.day,
                    app_id: last.app_id.clone(),
                    fields: last.fields,
                })
            })
        } else {
            None
        };
        Ok((rows, next.unwrap_or_default()))
    }
}

/// `day.fields.app_id`, base64url: opaque to callers, and holding nothing they didn't send or
/// receive.
fn encode_page_token(p: &DisclosurePosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}.{}", p.day.0, p.fields.code(), p.app_id))
}

fn decode_page_token(token: &str) -> Option<DisclosurePosition> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '.');
    let day = parts.next()?.parse().ok()?;
    let fields = DisclosedFields::from_code(parts.next()?.parse().ok()?)?;
    let app_id = parts.next()?.to_owned();
    Some(DisclosurePosition {
        day: UtcDay(day),
        app_id,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sqlx::Connection;

    use super::*;
    use crate::model::{Profile, PublicProfile};
    use crate::store::UserInfoStore;

    /// A real SQLite store (in `dir`) holding profiles `u0` .. `u{users-1}`.
    async fn store_with_users(dir: &tempfile::TempDir, users: usize) -> Arc<dyn UserInfoStore> {
        let url = format!("sqlite://{}", dir.path().join("userinfo.db").display());
        let store = crate::store::open(&url).await.expect("store");
        for i in 0..users {
            let profile = Profile {
                user_id: format!("u{i}"),
                real_name: String::new(),
                phone_number: String::new(),
                public: PublicProfile::default(),
                updated_at: Timestamp::EPOCH,
            };
            store.upsert(&profile).await.expect("profile");
        }
        store
    }

    async fn stored_reads(store: &Arc<dyn UserInfoStore>, users: usize) -> u64 {
        let mut total = 0;
        for i in 0..users {
            let rows = store
                .list_disclosures(&format!("u{i}"), None, None, 10_000)
                .await
                .expect("list");
            total += rows.iter().map(|r| r.count).sum::<u64>();
        }
        total
    }

    const NOW: Timestamp = Timestamp::from_unix_nanos(1_700_000_000_000_000_000);

    /// Guards the wake-up in `record` (`self.full.notify_one()`): with an hour-long interval,
    /// a full shard still gets its counters written within seconds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_shard_wakes_the_writer_before_the_interval() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_with_users(&dir, 1).await;
        let ledger = Arc::new(DisclosureLedger::new(store.clone(), SHARDS));
        let writer = tokio::spawn(ledger.clone().run_flushing(Duration::from_secs(3600)));
        // Let the interval's immediate first tick pass, so only a wake-up can write.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for app in 0..200 {
            ledger.record(
                "u0",
                &format!("app-{app}"),
                DisclosedFields::PublicProfile,
                NOW,
            );
        }
        let started = Instant::now();
        while stored_reads(&store, 1).await == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nothing written 10 s after the shards filled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.abort();
    }

    /// Guards the caps in `record` (`counters.len() < self.shard_capacity`) and `flush`
    /// (`unwritten.len() < self.capacity`): while the database is locked by another
    /// connection, memory stays within twice `max_pending` rows, every read beyond is counted
    /// as dropped, and once the lock goes every read is either written or counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_the_store_is_down_memory_is_capped_and_every_read_accounted_for() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_with_users(&dir, 1).await;
        let cap = 2 * SHARDS;
        let ledger = DisclosureLedger::new(store.clone(), cap);

        let url = format!("sqlite://{}", dir.path().join("userinfo.db").display());
        let mut blocker = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::raw_sql("BEGIN EXCLUSIVE")
            .execute(&mut blocker)
            .await
            .expect("lock the database");
        let mut recorded = 0;
        for round in 0..2 {
            for app in 0..300 {
                let app = format!("app-{round}-{app}");
                ledger.record("u0", &app, DisclosedFields::PhoneNumber, NOW);
                recorded += 1;
            }
            assert!(
                ledger.pending_rows() <= 2 * cap,
                "{}",
                ledger.pending_rows()
            );
            assert!(ledger.flush().await.is_err(), "the database is locked");
            assert!(
                ledger.pending_rows() <= 2 * cap,
                "{}",
                ledger.pending_rows()
            );
        }
        assert!(ledger.dropped_reads() > 0);
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut blocker)
            .await
            .expect("unlock");
        let written = ledger.flush().await.expect("flush");
        assert!(written <= cap, "{written} rows written");
        assert_eq!(
            stored_reads(&store, 1).await + ledger.dropped_reads(),
            recorded
        );
    }

    /// Counts of one key add up in memory and across flushes: one row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_of_one_key_are_one_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_with_users(&dir, 1).await;
        let ledger = DisclosureLedger::new(store.clone(), 10);
        for round in 0..3 {
            for _ in 0..1000 {
                ledger.record("u0", "app", DisclosedFields::PublicProfile, NOW);
            }
            assert_eq!(ledger.flush().await.expect("flush"), 1, "round {round}");
        }
        let rows = store.list_disclosures("u0", None, None, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 3000);
        assert_eq!(ledger.flush().await.expect("nothing left"), 0);
    }

    /// Guards the cut-off `sweep` computes: with a retention of 400 days, the row of 401 days
    /// ago goes, the row of 400 days ago stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sweep_keeps_exactly_the_retention() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_with_users(&dir, 1).await;
        let today = UtcDay::of(NOW).0;
        let rows: Vec<_> = [today - 401, today - 400, today]
            .into_iter()
            .map(|day| Disclosure {
                user_id: "u0".into(),
                app_id: "app".into(),
                fields: DisclosedFields::PublicProfile,
                day: UtcDay(day),
                count: 1,
            })
            .collect();
        store.add_disclosures(&rows).await.expect("rows");
        let ledger = DisclosureLedger::new(store.clone(), 10);
        let retention = Duration::from_secs(400 * 86_400);
        assert_eq!(ledger.sweep(retention, NOW).await.expect("sweep"), 1);
        let left = store.list_disclosures("u0", None, None, 10).await.unwrap();
        let days: Vec<_> = left.iter().map(|d| d.day.0).collect();
        assert_eq!(days, [today, today - 400]);
    }

    /// Guards `forget_user`: an erased user's unwritten counters are not written later (to a
    /// profile of the same id created again), and others' are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_erased_users_unwritten_reads_are_forgotten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_with_users(&dir, 2).await;
        let ledger = DisclosureLedger::new(store.clone(), 100);
        ledger.record("u0", "app", DisclosedFields::PublicProfile, NOW);
        ledger.record("u1", "app", DisclosedFields::PublicProfile, NOW);
        ledger.forget_user("u0").await;
        ledger.flush().await.expect("flush");
        assert_eq!(stored_reads(&store, 2).await, 1);
        assert!(
            store
                .list_disclosures("u0", None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let p = DisclosurePosition {
            day: UtcDay(20_000),
            app_id: "mp.with.dots".into(),
            fields: DisclosedFields::PhoneNumber,
        };
        assert_eq!(decode_page_token(&encode_page_token(&p)), Some(p));
        for bad in ["", "!!", "MTIz", &URL_SAFE_NO_PAD.encode("1.9.app")] {
            assert_eq!(decode_page_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_are_utc_calendar_days() {
        let t = Timestamp::from_unix_nanos(86_400 * 1_000_000_000 * 20_000 - 1);
        assert_eq!(UtcDay::of(t), UtcDay(19_999));
        assert_eq!(UtcDay(19_999).date(), "2024-10-03");
        assert_eq!(UtcDay(-5).date(), "1970-01-01");
        assert_eq!(UtcDay(i64::MAX).date(), "9999-12-31");
    }
}
