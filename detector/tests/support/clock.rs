//! A clock the test sets, shared by the detector's tests (`support`) and the workspace's
//! end-to-end tests (`tests/common`).

use std::sync::Arc;

use tokio::sync::watch;
use vigil_detector::clock::{Clock, Sleep};

/// A clock the test sets: rounds and expiry happen when the test moves it past a minute
/// boundary, not when the wall clock does.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<i64>,
}

impl ManualClock {
    /// A clock standing at `now` (UTC Unix seconds).
    pub fn at(now: i64) -> Arc<Self> {
        Arc::new(Self {
            now: watch::Sender::new(now),
        })
    }

    /// Moves the clock to `now` (never backwards), waking what waits for it.
    pub fn set(&self, now: i64) {
        self.now.send_modify(|t| *t = (*t).max(now));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: i64) -> Sleep<'_> {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives this borrow.
            let _ = now.wait_for(|t| *t >= at).await;
        })
    }
}
