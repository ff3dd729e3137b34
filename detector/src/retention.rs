//! Retention passes (`[retention]`): per-minute rows older than `minutes` rolled up into
//! hourly rows, hourly rows older than `hourly` deleted, old report keys and alerts
//! deleted. Whichever the store, passes run on the leading detector only: two detectors
//! rolling up the same minutes at once would add them to their hour twice.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Retention;
use crate::leader::Leadership;
use crate::store::{
    FIRST_PASS_SECS, PASS_INTERVAL_SECS, PostgresStore, RetentionPass, SqliteStore, StoreError,
};

/// A store that keeps itself bounded by retention passes.
pub trait Retain: Send + Sync + 'static {
    /// One pass at `now` (Unix seconds), in bounded transactions.
    ///
    /// # Errors
    /// [`StoreError`]; what was committed before stays, and the next pass goes on from
    /// there.
    fn retain(
        &self,
        policy: &Retention,
        now: i64,
    ) -> impl Future<Output = Result<RetentionPass, StoreError>> + Send;
}

impl Retain for SqliteStore {
    fn retain(
        &self,
        policy: &Retention,
        now: i64,
    ) -> impl Future<Output = Result<RetentionPass, StoreError>> + Send {
        SqliteStore::retain(self, policy, now)
    }
}

impl Retain for PostgresStore {
    fn retain(
        &self,
        policy: &Retention,
        now: i64,
    ) -> impl Future<Output = Result<RetentionPass, StoreError>> + Send {
        PostgresStore::retain(self, policy, now)
    }
}

/// Runs a retention pass [`FIRST_PASS_SECS`] after the start, then every
/// [`PASS_INTERVAL_SECS`] of `clock`, while `lead` says this detector leads, until `stop`
/// turns true. A failed pass is logged; the next one goes on from where it stopped.
pub async fn run<S: Retain>(
    store: Arc<S>,
    policy: Retention,
    clock: Arc<dyn Clock>,
    lead: Leadership,
    mut stop: watch::Receiver<bool>,
) {
    let mut due = clock.now() + FIRST_PASS_SECS;
    loop {
        tokio::select! {
            () = clock.sleep_until(due) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = clock.now();
        due = now + PASS_INTERVAL_SECS;
        if !lead.leads() {
            continue;
        }
        let started = std::time::Instant::now();
        match store.retain(&policy, now).await {
            Ok(pass) => tracing::info!(
                minutes = pass.minutes_rolled_up,
                exception_minutes = pass.exception_minutes_rolled_up,
                host_minutes = pass.host_minutes_rolled_up,
                hourly_deleted = pass.hourly_rows_deleted,
                report_rows_deleted = pass.report_rows_deleted,
                transactions = pass.transactions,
                seconds = started.elapsed().as_secs_f64(),
                "retention pass done"
            ),
            Err(e) => {
                tracing::error!(error = %e, "retention pass failed; the next goes on from there")
            }
        }
    }
}
