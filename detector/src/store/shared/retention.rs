//! Retention (`[retention]`) whatever the store: the bounds of a pass (each store's
//! `retain`, described with the embedded store's), how often passes run, what a pass
//! reports, and the merge of minutes' host metrics into their hours.

use std::collections::BTreeMap;

use super::host_metrics::StoredHostMetrics;
use super::hour_of;

/// Most minute rows rolled up, or rows deleted, in one transaction.
pub const MAX_ROWS_PER_TRANSACTION: i64 = 2_000;
/// Most exception counts rolled up in one transaction (unless one minute holds more).
pub const MAX_EXCEPTION_ROWS_PER_TRANSACTION: i64 = 20_000;
/// Report de-duplication keys are kept this long after the report was received, whatever
/// `[retention] minutes`: ingest accepts minutes up to 30 days old.
pub const REPORT_KEYS_SECS: i64 = 31 * 86_400;

/// Seconds between retention passes.
pub const PASS_INTERVAL_SECS: i64 = 3600;
/// Seconds from the start to the first pass: soon, so that a detector restarted more often
/// than [`PASS_INTERVAL_SECS`] still keeps its store bounded, but not while agents resend
/// what they spooled during the restart.
pub const FIRST_PASS_SECS: i64 = 600;

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPass {
    /// `app_minutes` rows rolled up into `app_hours`.
    pub minutes_rolled_up: u64,
    /// `exception_minutes` rows rolled up into `exception_hours`.
    pub exception_minutes_rolled_up: u64,
    /// `host_minutes` rows rolled up into `host_hours`.
    pub host_minutes_rolled_up: u64,
    /// Hourly rows deleted past `hourly`.
    pub hourly_rows_deleted: u64,
    /// Report keys and alerts deleted.
    pub report_rows_deleted: u64,
    /// Transactions committed.
    pub transactions: u64,
}

/// Host metrics of minutes (oldest first, as stored) merged per hour, with the number of
/// minutes in each: the same merge as two reports of one minute.
pub(in crate::store) fn fold_host_hours(
    minutes: impl IntoIterator<Item = (i64, StoredHostMetrics)>,
) -> BTreeMap<i64, (StoredHostMetrics, i64)> {
    let mut hours: BTreeMap<i64, (StoredHostMetrics, i64)> = BTreeMap::new();
    for (minute, metrics) in minutes {
        match hours.entry(hour_of(minute)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((metrics, 1));
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let (sum, n) = o.get_mut();
                *sum = sum.merge(&metrics);
                *n += 1;
            }
        }
    }
    hours
}
