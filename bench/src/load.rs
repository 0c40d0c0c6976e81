//! The load generator: C callers, each making one call after another until a deadline, with
//! every answer checked. A call that fails, or answers with the wrong status or the wrong
//! shape, is an error: counted, its first few descriptions kept for the report.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one call checked wrong, in words (a gRPC code and reason, or an unexpected answer).
pub type CallError = String;

/// One call of a scenario by caller `i` (the caller picks its connection and its inputs).
pub type Call =
    Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = Result<(), CallError>> + Send>> + Send + Sync>;

/// What one run of a scenario measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub calls: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sorted latencies of the calls that succeeded.
    pub latencies: Vec<Duration>,
    /// Each kind of error seen, with how often.
    pub error_kinds: BTreeMap<CallError, u64>,
    /// CPU time the servers under test spent in the measured window (user + system).
    pub server_cpu: Duration,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// Server CPU per successful call, in microseconds: what a call costs whatever the load.
    pub fn cpu_us_per_call(&self) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        self.server_cpu.as_secs_f64() * 1e6 / self.calls as f64
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

/// How a scenario is driven.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// Runs `call` from `shape.concurrency` callers: `shape.warmup` unmeasured (errors in it
/// still count), then `shape.duration` measured; `server_cpu` reads the CPU time the servers
/// under test have used so far.
pub async fn run(shape: LoadShape, call: Call, server_cpu: &dyn Fn() -> Duration) -> Measured {
    let errors = Arc::new(Mutex::new(BTreeMap::<CallError, u64>::new()));
    let note = |errors: &Arc<Mutex<BTreeMap<CallError, u64>>>, e: CallError| {
        let mut kinds = errors.lock().unwrap_or_else(|p| p.into_inner());
        *kinds.entry(e).or_insert(0) += 1;
    };
    let warm_until = Instant::now() + shape.warmup;
    let mut warming = tokio::task::JoinSet::new();
    for i in 0..shape.concurrency {
        let (call, errors) = (call.clone(), errors.clone());
        warming.spawn(async move {
            let mut failed = 0u64;
            while Instant::now() < warm_until {
                if let Err(e) = call(i).await {
                    failed += 1;
                    note(&errors, e);
                }
            }
            failed
        });
    }
    let mut warmup_errors = 0;
    while let Some(joined) = warming.join_next().await {
        warmup_errors += joined.unwrap_or(1);
    }
    let cpu_before = server_cpu();
    let deadline = Instant::now() + shape.duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..shape.concurrency {
        let (call, errors) = (call.clone(), errors.clone());
        tasks.spawn(async move {
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::with_capacity(16_384));
            while Instant::now() < deadline {
                let t = Instant::now();
                match call(i).await {
                    Ok(()) => {
                        ok += 1;
                        latencies.push(t.elapsed());
                    }
                    Err(e) => {
                        failed += 1;
                        note(&errors, e);
                    }
                }
            }
            (ok, failed, latencies)
        });
    }
    let mut measured = Measured {
        errors: warmup_errors,
        ..Measured::default()
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((ok, failed, latencies)) => {
                measured.calls += ok;
                measured.errors += failed;
                measured.latencies.extend(latencies);
            }
            Err(e) => {
                measured.errors += 1;
                note(&errors, format!("caller task failed: {e}"));
            }
        }
    }
    measured.elapsed = started.elapsed();
    measured.server_cpu = server_cpu().saturating_sub(cpu_before);
    measured.latencies.sort_unstable();
    measured.error_kinds = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
    measured
}
