//! Deletes expired prompts, codes, refresh tokens, revocation rules, token keys, consent records
//! and authorization changes in bounded batches, so no table grows without bound and no sweep
//! holds the writer for long.

use std::sync::Arc;
use std::time::Duration;

use miniprogram_token::{Clock, Timestamp};

use crate::store::{AuthStore, StoreResult, SweepCounts};

/// Sweeps until every table is clean or `max_rounds` batches ran; returns what was removed.
pub async fn sweep_once(
    store: &dyn AuthStore,
    now: Timestamp,
    batch: u32,
    max_rounds: u32,
) -> StoreResult<SweepCounts> {
    let mut total = SweepCounts::new();
    for _ in 0..max_rounds {
        let round = store.sweep_expired(now, batch).await?;
        for (table, count) in &round {
            *total.entry(table).or_default() += count;
        }
        // Below the batch size, every table is clean.
        if round.values().all(|&count| count < u64::from(batch)) {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(total)
}

/// Runs [`sweep_once`] every `interval`, forever; spawn it and abort it on shutdown.
pub async fn run(store: Arc<dyn AuthStore>, clock: Arc<dyn Clock>, interval: Duration, batch: u32) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match sweep_once(store.as_ref(), clock.now(), batch, 100).await {
            Ok(counts) if counts.values().any(|&n| n > 0) => {
                tracing::debug!(?counts, "swept expired rows")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed; will retry"),
        }
    }
}
