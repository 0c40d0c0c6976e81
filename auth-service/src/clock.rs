//! The time source handed to the domain. Readings are strictly increasing within a process,
//! so a grant issued right after a revocation is always stamped later than the revocation.

use std::sync::atomic::{AtomicI64, Ordering};

use miniprogram_token::Timestamp;

/// Wall clock with strictly increasing readings.
#[derive(Debug, Default)]
pub struct Clock {
    last: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        let wall = Timestamp::now().unix_nanos();
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Timestamp::from_unix_nanos(next),
                Err(actual) => prev = actual,
            }
        }
    }
}
