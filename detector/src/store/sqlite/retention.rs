//! Retention (`[retention]`): what keeps the store's file bounded while the detector runs
//! for years.
//!
//! One pass ([`SqliteStore::retain`]):
//! - per app and host, per-minute counters (`app_minutes`, `exception_minutes`) older than
//!   `minutes` are added into hourly rows (`app_hours`, `exception_hours`) and deleted;
//!   per host, per-minute host metrics (`host_minutes`) likewise into `host_hours` (means
//!   weighted by samples, counters added, maxima kept — the same merge as two reports of
//!   one minute); an app's process figures become the hour's mean CPU and peak resident
//!   memory, its requests the hour's counts and latency histogram, its scraped counters
//!   the hour's sums and its gauges their mean;
//! - hourly rows older than `hourly` are deleted;
//! - de-duplication keys of reports received more than [`REPORT_KEYS_SECS`] ago, and stored
//!   alerts older than `minutes`, are deleted (ingest refuses minutes more than 30 days
//!   old, so no retry can need an older key);
//! - fingerprint definitions, hosts, the apps' learned memory and releases are kept.
//!
//! Every step is its own transaction of at most [`MAX_ROWS_PER_TRANSACTION`] minute rows
//! and [`MAX_EXCEPTION_ROWS_PER_TRANSACTION`] exception counts (or deleted rows) on the one
//! writer connection, so ingest's group commits wait for at most one small step, never for
//! a whole pass. A roll-up adds into the hourly row and deletes the minutes it added in the
//! same transaction, so a crash between steps loses or doubles nothing, and a late report
//! for an old minute (ingest accepts 30 days) is rolled up by the next pass into the same
//! hour.
//!
//! Cutoffs are whole hours: only minutes of hours that ended `minutes` ago are rolled up.

use sqlx::{Connection, Row, SqliteConnection};

use super::SqliteStore;
use super::writes::discard_on_error;
use crate::config::Retention;
use crate::store::StoreError;
use crate::store::shared::host_metrics::decode_metrics;
use crate::store::shared::hour_of;
use crate::store::shared::retention::fold_host_hours;
pub use crate::store::shared::retention::{
    FIRST_PASS_SECS, MAX_EXCEPTION_ROWS_PER_TRANSACTION, MAX_ROWS_PER_TRANSACTION,
    PASS_INTERVAL_SECS, REPORT_KEYS_SECS, RetentionPass,
};

/// `total()` of an integer column held at `i64::MAX` (SQLite's `sum()` fails on overflow;
/// `total()` is a float, exact below 2^53 per app, host and hour).
macro_rules! capped_total {
    ($column:literal) => {
        concat!(
            "CAST(min(total(",
            $column,
            "), 9223372036854775807.0) AS INTEGER)"
        )
    };
}

const ROLL_UP_APP: &str = concat!(
    "INSERT INTO app_hours (app, host, hour, lines, error_lines, warn_lines, events, \
     truncated_lines, reports, minutes, process_cpu_pct, process_cpu_minutes, \
     process_rss_bytes) \
     SELECT app, host, minute - minute % 3600, ",
    capped_total!("lines"),
    ", ",
    capped_total!("error_lines"),
    ", ",
    capped_total!("warn_lines"),
    ", ",
    capped_total!("events"),
    ", ",
    capped_total!("truncated_lines"),
    ", ",
    capped_total!("reports"),
    ", count(*), avg(process_cpu_pct), count(process_cpu_pct), max(process_rss_bytes) \
     FROM app_minutes WHERE app = ? AND host = ? AND minute < ? \
     GROUP BY minute - minute % 3600 \
     ON CONFLICT (app, host, hour) DO UPDATE SET \
     process_cpu_pct = CASE WHEN excluded.process_cpu_pct IS NULL THEN process_cpu_pct \
       WHEN process_cpu_pct IS NULL THEN excluded.process_cpu_pct \
       ELSE (process_cpu_pct * process_cpu_minutes \
         + excluded.process_cpu_pct * excluded.process_cpu_minutes) \
         / max(process_cpu_minutes + excluded.process_cpu_minutes, 1) END, \
     process_cpu_minutes = process_cpu_minutes + excluded.process_cpu_minutes, \
     process_rss_bytes = max(coalesce(process_rss_bytes, excluded.process_rss_bytes), \
       coalesce(excluded.process_rss_bytes, process_rss_bytes)), ",
    saturating_sum!("lines"),
    ", ",
    saturating_sum!("error_lines"),
    ", ",
    saturating_sum!("warn_lines"),
    ", ",
    saturating_sum!("events"),
    ", ",
    saturating_sum!("truncated_lines"),
    ", ",
    saturating_sum!("reports"),
    ", ",
    saturating_sum!("minutes")
);

const ROLL_UP_EXCEPTIONS: &str = concat!(
    "INSERT INTO exception_hours (app, host, hour, fingerprint, count) \
     SELECT app, host, minute - minute % 3600, fingerprint, ",
    capped_total!("count"),
    " FROM exception_minutes WHERE app = ? AND host = ? AND minute < ? \
     GROUP BY minute - minute % 3600, fingerprint \
     ON CONFLICT (app, host, hour, fingerprint) DO UPDATE SET ",
    saturating_sum!("count")
);

impl SqliteStore {
    /// Runs one retention pass at `now` under `policy` (see the module's overview), in
    /// transactions of at most [`MAX_ROWS_PER_TRANSACTION`] rows.
    ///
    /// # Errors
    /// [`StoreError`] when a step fails; the steps committed before it stay, and the next
    /// pass goes on from there.
    pub async fn retain(&self, policy: &Retention, now: i64) -> Result<RetentionPass, StoreError> {
        let minute_cutoff = hour_of(now - policy.minutes_secs);
        let hour_cutoff = hour_of(now - policy.hourly_secs);
        let mut pass = RetentionPass::default();
        let pairs: Vec<(String, String)> =
            sqlx::query_as("SELECT app, host FROM hosts ORDER BY app, host")
                .fetch_all(&self.readers)
                .await?;
        for (app, host) in &pairs {
            loop {
                let mut conn = self.writer.acquire().await?;
                let result = roll_up_app(&mut conn, app, host, minute_cutoff).await;
                let (minutes, exceptions, more) =
                    discard_on_error(&self.writer, conn, result).await?;
                pass.transactions += 1;
                pass.minutes_rolled_up += minutes;
                pass.exception_minutes_rolled_up += exceptions;
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
            for sql in [
                "DELETE FROM app_hours WHERE app = ?1 AND host = ?2 AND hour IN \
                 (SELECT hour FROM app_hours WHERE app = ?1 AND host = ?2 AND hour < ?3 \
                 ORDER BY hour LIMIT ?4)",
                "DELETE FROM exception_hours WHERE app = ?1 AND host = ?2 AND (hour, fingerprint) IN \
                 (SELECT hour, fingerprint FROM exception_hours WHERE app = ?1 AND host = ?2 \
                 AND hour < ?3 ORDER BY hour LIMIT ?4)",
            ] {
                pass.hourly_rows_deleted += self
                    .delete_bounded(sql, &[app, host], hour_cutoff, &mut pass.transactions)
                    .await?;
            }
        }
        let mut hosts: Vec<&str> = pairs.iter().map(|(_, h)| h.as_str()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        for host in hosts {
            loop {
                let mut conn = self.writer.acquire().await?;
                let result = roll_up_host_metrics(&mut conn, host, minute_cutoff).await;
                let rolled = discard_on_error(&self.writer, conn, result).await?;
                pass.transactions += 1;
                pass.host_minutes_rolled_up += rolled;
                if rolled < MAX_ROWS_PER_TRANSACTION.unsigned_abs() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            pass.hourly_rows_deleted += self
                .delete_bounded(
                    "DELETE FROM host_hours WHERE host = ?1 AND hour IN \
                     (SELECT hour FROM host_hours WHERE host = ?1 AND hour < ?2 \
                     ORDER BY hour LIMIT ?3)",
                    &[host],
                    hour_cutoff,
                    &mut pass.transactions,
                )
                .await?;
        }
        pass.report_rows_deleted += self
            .delete_bounded(
                "DELETE FROM reports WHERE (instance, seq) IN \
                 (SELECT instance, seq FROM reports WHERE received_at < ?1 \
                 ORDER BY received_at LIMIT ?2)",
                &[],
                now - REPORT_KEYS_SECS.max(policy.minutes_secs),
                &mut pass.transactions,
            )
            .await?;
        pass.report_rows_deleted += self
            .delete_bounded(
                "DELETE FROM alerts WHERE id IN \
                 (SELECT id FROM alerts WHERE at < ?1 ORDER BY id LIMIT ?2)",
                &[],
                minute_cutoff,
                &mut pass.transactions,
            )
            .await?;
        Ok(pass)
    }

    /// Runs a bounded `DELETE` (its parameters: `keys`, then `cutoff`, then the row limit)
    /// until it deletes fewer rows than the limit; returns the rows deleted.
    async fn delete_bounded(
        &self,
        sql: &'static str,
        keys: &[&str],
        cutoff: i64,
        transactions: &mut u64,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let mut conn = self.writer.acquire().await?;
            let mut query = sqlx::query(sql);
            for key in keys {
                query = query.bind(*key);
            }
            let result = query
                .bind(cutoff)
                .bind(MAX_ROWS_PER_TRANSACTION)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::from);
            let done = discard_on_error(&self.writer, conn, result).await?;
            *transactions += 1;
            deleted += done.rows_affected();
            if done.rows_affected() < MAX_ROWS_PER_TRANSACTION.unsigned_abs() {
                return Ok(deleted);
            }
            tokio::task::yield_now().await;
        }
    }
}

const NTH_APP_MINUTE: &str = "SELECT minute FROM app_minutes WHERE app = ? AND host = ? \
     AND minute < ? ORDER BY minute LIMIT 1 OFFSET ?";
const NTH_EXCEPTION_MINUTE: &str = "SELECT minute FROM exception_minutes WHERE app = ? AND \
     host = ? AND minute < ? ORDER BY minute LIMIT 1 OFFSET ?";

/// The minute of the `n`-th oldest row before the cutoff of one app on one host, by `query`
/// ([`NTH_APP_MINUTE`] or [`NTH_EXCEPTION_MINUTE`]); `None` when there are fewer.
async fn nth_oldest_minute(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    query: &'static str,
    (app, host, cutoff): (&str, &str, i64),
    n: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(query)
        .bind(app)
        .bind(host)
        .bind(cutoff)
        .bind(n - 1)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Rolls up the oldest minutes of `app` on `host` before `cutoff` with their exception
/// counts, at most [`MAX_ROWS_PER_TRANSACTION`] minutes and (but for a single minute that
/// holds more) [`MAX_EXCEPTION_ROWS_PER_TRANSACTION`] exception counts, in one
/// transaction; returns the minute and exception rows rolled up, and whether older
/// minutes may be left (the step stopped before the cutoff).
async fn roll_up_app(
    conn: &mut SqliteConnection,
    app: &str,
    host: &str,
    cutoff: i64,
) -> Result<(u64, u64, bool), StoreError> {
    {
        let mut tx = conn.begin().await?;
        // The chunk ends after the N-th oldest minute, or at the cutoff.
        let nth = nth_oldest_minute(
            &mut tx,
            NTH_APP_MINUTE,
            (app, host, cutoff),
            MAX_ROWS_PER_TRANSACTION,
        )
        .await?;
        // And after the minute of the N-th oldest exception count, when that comes first
        // (a minute may hold thousands of fingerprints; at least one minute per step).
        let nth_exception = nth_oldest_minute(
            &mut tx,
            NTH_EXCEPTION_MINUTE,
            (app, host, cutoff),
            MAX_EXCEPTION_ROWS_PER_TRANSACTION,
        )
        .await?;
        let end = [nth, nth_exception]
            .into_iter()
            .flatten()
            .map(|m| m + 1)
            .fold(cutoff, i64::min);
        let mut rolled = [0u64; 2];
        for (i, (roll_up, delete)) in [
            (
                ROLL_UP_APP,
                "DELETE FROM app_minutes WHERE app = ? AND host = ? AND minute < ?",
            ),
            (
                ROLL_UP_EXCEPTIONS,
                "DELETE FROM exception_minutes WHERE app = ? AND host = ? AND minute < ?",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            sqlx::query(roll_up)
                .bind(app)
                .bind(host)
                .bind(end)
                .execute(&mut *tx)
                .await?;
            if i == 0 {
                super::merged::roll_up::<crate::judge::Requests>(&mut tx, app, host, end).await?;
                super::merged::roll_up::<crate::store::shared::scraped::Scraped>(
                    &mut tx, app, host, end,
                )
                .await?;
            }
            rolled[i] = sqlx::query(delete)
                .bind(app)
                .bind(host)
                .bind(end)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok((rolled[0], rolled[1], end < cutoff))
    }
}

/// Rolls up the oldest [`MAX_ROWS_PER_TRANSACTION`] minutes (at most) of host metrics of
/// `host` before `cutoff` into `host_hours`, in one transaction; returns the rows rolled up.
async fn roll_up_host_metrics(
    conn: &mut SqliteConnection,
    host: &str,
    cutoff: i64,
) -> Result<u64, StoreError> {
    {
        let mut tx = conn.begin().await?;
        let rows = sqlx::query(
            "SELECT minute, metrics FROM host_minutes WHERE host = ? AND minute < ? \
             ORDER BY minute LIMIT ?",
        )
        .bind(host)
        .bind(cutoff)
        .bind(MAX_ROWS_PER_TRANSACTION)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else {
            tx.commit().await?;
            return Ok(0);
        };
        let end: i64 = last.try_get::<i64, _>(0)? + 1;
        let hours = fold_host_hours(
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, decode_metrics(row.try_get(1)?))))
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
        );
        for (hour, (mut metrics, mut minutes)) in hours {
            if let Some(stored) =
                sqlx::query("SELECT metrics, minutes FROM host_hours WHERE host = ? AND hour = ?")
                    .bind(host)
                    .bind(hour)
                    .fetch_optional(&mut *tx)
                    .await?
            {
                metrics = decode_metrics(stored.try_get(0)?).merge(&metrics);
                minutes = minutes.saturating_add(stored.try_get::<i64, _>(1)?);
            }
            let text = serde_json::to_string(&metrics).map_err(|e| StoreError::Corrupt {
                what: "host metrics",
                reason: e.to_string(),
            })?;
            sqlx::query(
                "INSERT INTO host_hours (host, hour, metrics, samples, partial, minutes) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host, hour) DO UPDATE SET \
                 metrics = excluded.metrics, samples = excluded.samples, \
                 partial = excluded.partial, minutes = excluded.minutes",
            )
            .bind(host)
            .bind(hour)
            .bind(text)
            .bind(i64::from(metrics.samples))
            .bind(metrics.partial)
            .bind(minutes)
            .execute(&mut *tx)
            .await?;
        }
        let rolled = sqlx::query("DELETE FROM host_minutes WHERE host = ? AND minute < ?")
            .bind(host)
            .bind(end)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(rolled)
    }
}
