//! A clock for race tests: each reading first starts a probe (say, a grant's read in order)
//! and waits a moment for it, so a test learns whether that probe could run at the instant the
//! domain read its clock, deterministically.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use miniprogram_token::{Clock, Timestamp};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

type Probe = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Reads the system time after giving a probe `patience` to finish; remembers, per reading,
/// whether it did.
pub struct ProbeClock {
    probe: Probe,
    patience: Duration,
    finished: Mutex<Vec<bool>>,
}

impl ProbeClock {
    /// A clock whose every reading starts `probe()`; what each probe returns is sent to the
    /// receiver.
    pub fn new<T, F>(
        patience: Duration,
        probe: impl Fn() -> F + Send + Sync + 'static,
    ) -> (Self, UnboundedReceiver<T>)
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (seen, results) = unbounded_channel();
        let probe: Probe = Box::new(move || {
            let (seen, probe) = (seen.clone(), probe());
            Box::pin(async move {
                let _ = seen.send(probe.await);
            })
        });
        let clock = ProbeClock {
            probe,
            patience,
            finished: Mutex::new(Vec::new()),
        };
        (clock, results)
    }

    /// For each reading so far, whether the probe finished before it was taken.
    pub fn finished(&self) -> Vec<bool> {
        self.finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Clock for ProbeClock {
    /// Blocks its thread for up to `patience`: run it on a multi-threaded runtime.
    fn now(&self) -> Timestamp {
        let (done, finished) = mpsc::channel();
        let probe = (self.probe)();
        tokio::spawn(async move {
            probe.await;
            let _ = done.send(());
        });
        let in_time = finished.recv_timeout(self.patience).is_ok();
        let mut readings = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        readings.push(in_time);
        Timestamp::now()
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}
