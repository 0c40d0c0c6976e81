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

/// Rows a page of `ListDisclosures` holds when the caller asks for none, and at most.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
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
    use super::*;

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
