//! Time as a parameter: the judgement's minute rounds and release expiry read the time and
//! wait through a [`Clock`], so the outermost shell decides which clock runs them. The
//! service runs on [`SystemClock`]; a test passes its own clock (one it sets and advances)
//! to [`crate::release::Releases::with_clock`] or [`crate::Detector::with_clock`] and
//! drives rounds in seconds instead of waiting for minute boundaries.
//!
//! ```
//! use vigil_detector::clock::{Clock, SystemClock};
//!
//! let now = SystemClock.now();
//! assert!(now > 1_700_000_000);
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A future a [`Clock`] hands out to wait on.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where the judgement reads the time and waits for it.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Now, as UTC Unix seconds.
    fn now(&self) -> i64;

    /// Resolves once [`Clock::now`] has reached `at` (UTC Unix seconds); at once if it
    /// has already.
    fn sleep_until(&self, at: i64) -> Sleep<'_>;
}

/// The machine's clock, with tokio's timer for waits.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        unix_now()
    }

    fn sleep_until(&self, at: i64) -> Sleep<'_> {
        Box::pin(async move {
            // To the second boundary itself, not a whole second after `now` rounded down.
            let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0));
            if let Ok(wait) = at.duration_since(SystemTime::now()) {
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// The machine's time now as UTC Unix seconds (0 before 1970, which no host reports).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_system_clock_waits_until_the_second_asked_for() {
        let clock = SystemClock;
        let target = clock.now() + 1;
        tokio::time::timeout(Duration::from_secs(3), clock.sleep_until(target))
            .await
            .expect("woke within the deadline");
        assert!(clock.now() >= target);
        // The past resolves at once.
        tokio::time::timeout(Duration::from_millis(50), clock.sleep_until(0))
            .await
            .expect("no wait for the past");
    }
}
