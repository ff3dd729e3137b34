//! Retention (`[retention]`) on the shared store: the embedded store's pass (see its
//! `retain`), step for step and with the same bounds per transaction, in PostgreSQL's SQL.
//!
//! A roll-up step runs in `REPEATABLE READ`: it sums, merges and deletes exactly the minutes
//! of its snapshot. A minute another detector's ingest changes meanwhile, or that another
//! pass rolls up at the same time, makes the step fail with a serialization failure instead
//! of being added to its hour twice or lost; the step is then run again on a fresh
//! snapshot. A report arriving for a minute the step deletes waits for it and then starts
//! a new minute row, which the next pass rolls up into the same hour.

use sqlx::{PgPool, Postgres, Row, Transaction};

use super::{PostgresStore, retrying, saturating_sum};
use crate::config::Retention;
use crate::store::StoreError;
use crate::store::shared::host_metrics::decode_metrics;
use crate::store::shared::merged::{Merged, absorb_stored, fold_into_hours};
use crate::store::shared::retention::{
    MAX_EXCEPTION_ROWS_PER_TRANSACTION, MAX_ROWS_PER_TRANSACTION, REPORT_KEYS_SECS, RetentionPass,
    fold_host_hours,
};
use crate::store::shared::scraped::Scraped;
use crate::store::shared::{hour_of, to_json};

/// `sum()` of an integer column held at `i64::MAX` (the sum of BIGINTs is exact NUMERIC).
fn capped_sum(column: &str) -> String {
    format!("LEAST(sum({column}), 9223372036854775807)::bigint")
}

/// Rolls the minutes of one app on one host before `$3` into their hours.
fn roll_up_app_sql() -> String {
    let sums = [
        "lines",
        "error_lines",
        "warn_lines",
        "events",
        "truncated_lines",
        "reports",
    ];
    format!(
        "INSERT INTO app_hours (app, host, hour, lines, error_lines, warn_lines, events, \
         truncated_lines, reports, minutes, process_cpu_pct, process_cpu_minutes, \
         process_rss_bytes) \
         SELECT app, host, minute - minute % 3600, {}, count(*), avg(process_cpu_pct), \
         count(process_cpu_pct), max(process_rss_bytes) \
         FROM app_minutes WHERE app = $1 AND host = $2 AND minute < $3 \
         GROUP BY app, host, minute - minute % 3600 \
         ON CONFLICT (app, host, hour) DO UPDATE SET \
         process_cpu_pct = CASE WHEN excluded.process_cpu_pct IS NULL THEN app_hours.process_cpu_pct \
           WHEN app_hours.process_cpu_pct IS NULL THEN excluded.process_cpu_pct \
           ELSE (app_hours.process_cpu_pct * app_hours.process_cpu_minutes \
             + excluded.process_cpu_pct * excluded.process_cpu_minutes) \
             / GREATEST(app_hours.process_cpu_minutes + excluded.process_cpu_minutes, 1) END, \
         process_cpu_minutes = app_hours.process_cpu_minutes + excluded.process_cpu_minutes, \
         process_rss_bytes = GREATEST(app_hours.process_rss_bytes, excluded.process_rss_bytes), \
         {}, {}",
        sums.map(capped_sum).join(", "),
        sums.map(|c| saturating_sum("app_hours", c)).join(", "),
        saturating_sum("app_hours", "minutes"),
    )
}

/// Rolls the exception counts of one app on one host before `$3` into their hours.
fn roll_up_exceptions_sql() -> String {
    format!(
        "INSERT INTO exception_hours (app, host, hour, fingerprint, count) \
         SELECT app, host, minute - minute % 3600, fingerprint, {} \
         FROM exception_minutes WHERE app = $1 AND host = $2 AND minute < $3 \
         GROUP BY app, host, minute - minute % 3600, fingerprint \
         ON CONFLICT (app, host, hour, fingerprint) DO UPDATE SET {}",
        capped_sum("count"),
        saturating_sum("exception_hours", "count"),
    )
}

/// Starts a transaction in `REPEATABLE READ`.
async fn begin_snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

impl PostgresStore {
    /// Runs one retention pass at `now` under `policy`, as the embedded store's `retain`
    /// does, in transactions of at most [`MAX_ROWS_PER_TRANSACTION`] rows.
    ///
    /// # Errors
    /// [`StoreError`] when a step fails (after [`super::MAX_ATTEMPTS`] tries when the
    /// server aborted it); the steps committed before it stay, and the next pass goes on
    /// from there.
    pub async fn retain(&self, policy: &Retention, now: i64) -> Result<RetentionPass, StoreError> {
        let minute_cutoff = hour_of(now - policy.minutes_secs);
        let hour_cutoff = hour_of(now - policy.hourly_secs);
        let mut pass = RetentionPass::default();
        let pairs: Vec<(String, String)> =
            sqlx::query_as("SELECT app, host FROM hosts ORDER BY app, host")
                .fetch_all(&self.pool)
                .await?;
        for (app, host) in &pairs {
            loop {
                let (minutes, exceptions, more) =
                    retrying!(roll_up_app(&self.pool, app, host, minute_cutoff).await)?;
                pass.transactions += 1;
                pass.minutes_rolled_up += minutes;
                pass.exception_minutes_rolled_up += exceptions;
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
            for sql in [
                "DELETE FROM app_hours WHERE app = $1 AND host = $2 AND hour IN \
                 (SELECT hour FROM app_hours WHERE app = $1 AND host = $2 AND hour < $3 \
                 ORDER BY hour LIMIT $4)",
                "DELETE FROM exception_hours WHERE app = $1 AND host = $2 \
                 AND (hour, fingerprint) IN \
                 (SELECT hour, fingerprint FROM exception_hours WHERE app = $1 AND host = $2 \
                 AND hour < $3 ORDER BY hour LIMIT $4)",
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
                let rolled =
                    retrying!(roll_up_host_metrics(&self.pool, host, minute_cutoff).await)?;
                pass.transactions += 1;
                pass.host_minutes_rolled_up += rolled;
                if rolled < MAX_ROWS_PER_TRANSACTION.unsigned_abs() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            pass.hourly_rows_deleted += self
                .delete_bounded(
                    "DELETE FROM host_hours WHERE host = $1 AND hour IN \
                     (SELECT hour FROM host_hours WHERE host = $1 AND hour < $2 \
                     ORDER BY hour LIMIT $3)",
                    &[host],
                    hour_cutoff,
                    &mut pass.transactions,
                )
                .await?;
        }
        // Report keys; alerts as long as minutes; decision changes posted to the webhooks as
        // long as report keys.
        for (sql, cutoff) in [
            (
                "DELETE FROM reports WHERE (instance, seq) IN \
                 (SELECT instance, seq FROM reports WHERE received_at < $1 \
                 ORDER BY received_at LIMIT $2)",
                now - REPORT_KEYS_SECS.max(policy.minutes_secs),
            ),
            (
                "DELETE FROM alerts WHERE id IN \
                 (SELECT id FROM alerts WHERE at < $1 ORDER BY id LIMIT $2)",
                minute_cutoff,
            ),
            (
                "DELETE FROM webhook_queue WHERE id IN \
                 (SELECT id FROM webhook_queue WHERE posted_at < $1 ORDER BY id LIMIT $2)",
                now - REPORT_KEYS_SECS,
            ),
        ] {
            pass.report_rows_deleted += self
                .delete_bounded(sql, &[], cutoff, &mut pass.transactions)
                .await?;
        }
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
            let done = retrying!({
                let mut query = sqlx::query(sql);
                for key in keys {
                    query = query.bind(*key);
                }
                query
                    .bind(cutoff)
                    .bind(MAX_ROWS_PER_TRANSACTION)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from)
            })?;
            *transactions += 1;
            deleted += done.rows_affected();
            if done.rows_affected() < MAX_ROWS_PER_TRANSACTION.unsigned_abs() {
                return Ok(deleted);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// The minute of the `n`-th oldest row of `table` before the cutoff of one app on one
/// host; `None` when there are fewer.
async fn nth_oldest_minute(
    tx: &mut Transaction<'_, Postgres>,
    table: &'static str,
    (app, host, cutoff): (&str, &str, i64),
    n: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT minute FROM {table} WHERE app = $1 AND host = $2 AND minute < $3 \
         ORDER BY minute LIMIT 1 OFFSET $4"
    )))
    .bind(app)
    .bind(host)
    .bind(cutoff)
    .bind(n - 1)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Rolls the values of column `T::COLUMN` of `app` on `host` in the minutes before `end`
/// into their hours' rows of `app_hours` (which the step's roll-up has created and locked).
async fn roll_up_merged<T: Merged>(
    tx: &mut Transaction<'_, Postgres>,
    app: &str,
    host: &str,
    end: i64,
) -> Result<(), StoreError> {
    let column = T::COLUMN;
    let minutes: Vec<(i64, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT minute, {column} FROM app_minutes WHERE app = $1 AND host = $2 \
         AND minute < $3 AND {column} IS NOT NULL ORDER BY minute"
    )))
    .bind(app)
    .bind(host)
    .bind(end)
    .fetch_all(&mut **tx)
    .await?;
    let mut hours = fold_into_hours::<T>(app, host, minutes);
    if hours.is_empty() {
        return Ok(());
    }
    let mut hour_keys: Vec<i64> = hours.keys().map(|(_, _, h)| *h).collect();
    hour_keys.sort_unstable();
    let stored: Vec<(i64, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT hour, {column} FROM app_hours WHERE app = $1 AND host = $2 \
         AND hour = ANY($3) AND {column} IS NOT NULL"
    )))
    .bind(app)
    .bind(host)
    .bind(&hour_keys)
    .fetch_all(&mut **tx)
    .await?;
    let stored = stored
        .into_iter()
        .filter_map(|(hour, text)| {
            Some((
                (app.to_owned(), host.to_owned(), hour),
                T::decode(text.as_deref())?,
            ))
        })
        .collect();
    absorb_stored(&mut hours, stored, true);
    for ((app, host, hour), value) in hours {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE app_hours SET {column} = $1 WHERE app = $2 AND host = $3 AND hour = $4"
        )))
        .bind(value.encode())
        .bind(app)
        .bind(host)
        .bind(hour)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Rolls up the oldest minutes of `app` on `host` before `cutoff` with their exception
/// counts, at most [`MAX_ROWS_PER_TRANSACTION`] minutes and (but for a single minute that
/// holds more) [`MAX_EXCEPTION_ROWS_PER_TRANSACTION`] exception counts, in one
/// transaction; returns the minute and exception rows rolled up, and whether older
/// minutes may be left (the step stopped before the cutoff).
async fn roll_up_app(
    pool: &PgPool,
    app: &str,
    host: &str,
    cutoff: i64,
) -> Result<(u64, u64, bool), StoreError> {
    let mut tx = begin_snapshot(pool).await?;
    // The chunk ends after the N-th oldest minute, or at the cutoff; and after the minute
    // of the N-th oldest exception count, when that comes first.
    let nth = nth_oldest_minute(
        &mut tx,
        "app_minutes",
        (app, host, cutoff),
        MAX_ROWS_PER_TRANSACTION,
    )
    .await?;
    let nth_exception = nth_oldest_minute(
        &mut tx,
        "exception_minutes",
        (app, host, cutoff),
        MAX_EXCEPTION_ROWS_PER_TRANSACTION,
    )
    .await?;
    let end = [nth, nth_exception]
        .into_iter()
        .flatten()
        .map(|m| m + 1)
        .fold(cutoff, i64::min);
    sqlx::query(sqlx::AssertSqlSafe(roll_up_app_sql()))
        .bind(app)
        .bind(host)
        .bind(end)
        .execute(&mut *tx)
        .await?;
    roll_up_merged::<crate::judge::Requests>(&mut tx, app, host, end).await?;
    roll_up_merged::<Scraped>(&mut tx, app, host, end).await?;
    let minutes =
        sqlx::query("DELETE FROM app_minutes WHERE app = $1 AND host = $2 AND minute < $3")
            .bind(app)
            .bind(host)
            .bind(end)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    sqlx::query(sqlx::AssertSqlSafe(roll_up_exceptions_sql()))
        .bind(app)
        .bind(host)
        .bind(end)
        .execute(&mut *tx)
        .await?;
    let exceptions =
        sqlx::query("DELETE FROM exception_minutes WHERE app = $1 AND host = $2 AND minute < $3")
            .bind(app)
            .bind(host)
            .bind(end)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    tx.commit().await?;
    Ok((minutes, exceptions, end < cutoff))
}

/// Rolls up the oldest [`MAX_ROWS_PER_TRANSACTION`] minutes (at most) of host metrics of
/// `host` before `cutoff` into `host_hours`, in one transaction; returns the rows rolled up.
async fn roll_up_host_metrics(pool: &PgPool, host: &str, cutoff: i64) -> Result<u64, StoreError> {
    let mut tx = begin_snapshot(pool).await?;
    let rows = sqlx::query(
        "SELECT minute, metrics FROM host_minutes WHERE host = $1 AND minute < $2 \
         ORDER BY minute LIMIT $3",
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
            .map(|row| {
                let text: Option<String> = row.try_get(1)?;
                Ok((row.try_get(0)?, decode_metrics(text.unwrap_or_default())))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?,
    );
    for (hour, (mut metrics, mut minutes)) in hours {
        if let Some(stored) =
            sqlx::query("SELECT metrics, minutes FROM host_hours WHERE host = $1 AND hour = $2")
                .bind(host)
                .bind(hour)
                .fetch_optional(&mut *tx)
                .await?
        {
            metrics = decode_metrics(stored.try_get(0)?).merge(&metrics);
            minutes = minutes.saturating_add(stored.try_get::<i64, _>(1)?);
        }
        sqlx::query(
            "INSERT INTO host_hours (host, hour, metrics, samples, partial, minutes) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (host, hour) DO UPDATE SET \
             metrics = excluded.metrics, samples = excluded.samples, \
             partial = excluded.partial, minutes = excluded.minutes",
        )
        .bind(host)
        .bind(hour)
        .bind(to_json(&metrics)?)
        .bind(i64::from(metrics.samples))
        .bind(metrics.partial)
        .bind(minutes)
        .execute(&mut *tx)
        .await?;
    }
    let rolled = sqlx::query("DELETE FROM host_minutes WHERE host = $1 AND minute < $2")
        .bind(host)
        .bind(end)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(rolled)
}
