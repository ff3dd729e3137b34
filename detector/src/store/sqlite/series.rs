//! Reading the stored counters back: per-minute rows (`app_minutes`, `exception_minutes`,
//! `host_minutes`) and the hourly roll-ups retention made of them (`app_hours`,
//! `exception_hours`, `host_hours`), in one shape.
//!
//! A query reads only the conditions given, so that SQLite walks the primary keys
//! (`(app, host, t)`, `(host, t)`) instead of scanning tables; host metrics are read only
//! for the hosts and times of the app rows found; and a query with a `limit` stops at that
//! many rows and says so instead of loading them all.

use std::collections::{BTreeMap, HashMap};

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{SqliteStore, StoredHostMetrics, decode_metrics, get_u64, parse_counts};
use crate::store::{HostMetricsRow, HourRow, MinuteRow, SeriesQuery, StoreError};

/// The tables and time column of one resolution.
struct Tables {
    apps: &'static str,
    exceptions: &'static str,
    hosts: &'static str,
    time: &'static str,
}

const MINUTES: Tables = Tables {
    apps: "app_minutes",
    exceptions: "exception_minutes",
    hosts: "host_minutes",
    time: "minute",
};

const HOURS: Tables = Tables {
    apps: "app_hours",
    exceptions: "exception_hours",
    hosts: "host_hours",
    time: "hour",
};

/// One app row of either resolution, with its host's metrics.
struct Counters {
    app: String,
    host: String,
    t: i64,
    lines: u64,
    events: u64,
    error_lines: u64,
    warn_lines: u64,
    exceptions: BTreeMap<String, u64>,
    process_cpu_pct: Option<f64>,
    process_rss_bytes: Option<u64>,
    /// Minutes rolled into an hourly row (1 for a minute).
    minutes: u64,
    requests: Option<crate::judge::Requests>,
    scraped: Option<crate::store::ScrapedRow>,
    host_metrics: Option<HostMetricsRow>,
}

/// `WHERE` conditions of `query` on table alias `a` (whose time column is `time`).
fn conditions(q: &mut QueryBuilder<Sqlite>, query: &SeriesQuery, alias: &str, time: &str) {
    if let Some(host) = &query.host {
        q.push(format!(" AND {alias}.host = "))
            .push_bind(host.clone());
    }
    if let Some(from) = query.from {
        q.push(format!(" AND {alias}.{time} >= ")).push_bind(from);
    }
    if let Some(to) = query.to {
        q.push(format!(" AND {alias}.{time} <= ")).push_bind(to);
    }
}

/// The `LIMIT` of a bounded query: one row more than allowed, to notice an excess.
fn limit(q: &mut QueryBuilder<Sqlite>, query: &SeriesQuery) {
    if let Some(limit) = query.limit {
        q.push(" LIMIT ")
            .push_bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX));
    }
}

fn check_limit(rows: &[SqliteRow], query: &SeriesQuery) -> Result<(), StoreError> {
    match query.limit {
        Some(limit) if rows.len() > limit => Err(StoreError::TooManyRows { limit }),
        _ => Ok(()),
    }
}

impl SqliteStore {
    async fn counters(
        &self,
        query: &SeriesQuery,
        tables: &Tables,
    ) -> Result<Vec<Counters>, StoreError> {
        let Tables {
            apps,
            exceptions,
            hosts,
            time,
        } = tables;
        let minutes = if *time == "hour" { "a.minutes" } else { "1" };
        // One row per app, host and time, its exception counts gathered by the primary key
        // of the exceptions table as `fingerprint:count,...`: a seventh of the rows to
        // decode for a typical app, which is where the time goes.
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT a.app, a.host, a.{time}, a.lines, a.error_lines, a.warn_lines, \
             (SELECT group_concat(e.fingerprint || ':' || e.count) FROM {exceptions} e \
              WHERE e.app = a.app AND e.host = a.host AND e.{time} = a.{time}), \
             a.process_cpu_pct, a.process_rss_bytes, {minutes}, a.events, a.requests, a.scraped \
             FROM {apps} a WHERE 1 = 1"
        ));
        if let Some(app) = &query.app {
            q.push(" AND a.app = ").push_bind(app.clone());
        }
        conditions(&mut q, query, "a", time);
        q.push(format!(" ORDER BY a.app, a.host, a.{time}"));
        limit(&mut q, query);
        let rows = q.build().fetch_all(&self.readers).await?;
        check_limit(&rows, query)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let counts: Option<&str> = row.try_get(6)?;
            out.push(Counters {
                app: row.try_get(0)?,
                host: row.try_get(1)?,
                t: row.try_get(2)?,
                lines: get_u64(&row, 3)?,
                error_lines: get_u64(&row, 4)?,
                warn_lines: get_u64(&row, 5)?,
                exceptions: parse_counts(counts.unwrap_or_default())?,
                process_cpu_pct: row.try_get(7)?,
                process_rss_bytes: row
                    .try_get::<Option<i64>, _>(8)?
                    .map(|v| u64::try_from(v).unwrap_or(0)),
                minutes: get_u64(&row, 9)?,
                events: get_u64(&row, 10)?,
                requests: super::requests::decode(row.try_get(11)?),
                scraped: <super::scraped::Scraped as super::merged::Merged>::decode(
                    row.try_get(12)?,
                )
                .map(|s| s.row()),
                host_metrics: None,
            });
        }

        // The host metrics of those hosts and times only (of the app's hosts when an app
        // is asked for, never of the whole fleet).
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT h.host, h.{time}, h.metrics FROM {hosts} h WHERE 1 = 1"
        ));
        if let Some(app) = &query.app {
            q.push(format!(
                " AND EXISTS (SELECT 1 FROM {apps} a WHERE a.app = "
            ))
            .push_bind(app.clone())
            .push(format!(" AND a.host = h.host AND a.{time} = h.{time})"));
        }
        conditions(&mut q, query, "h", time);
        q.push(format!(" ORDER BY h.host, h.{time}"));
        limit(&mut q, query);
        let host_rows = q.build().fetch_all(&self.readers).await?;
        check_limit(&host_rows, query)?;
        // By host, then time: looked up with the row's borrowed host name; a host's
        // metrics go to each of its apps' rows.
        let mut host_metrics: HashMap<String, HashMap<i64, HostMetricsRow>> = HashMap::new();
        for row in host_rows {
            let stored: StoredHostMetrics = decode_metrics(row.try_get(2)?);
            host_metrics
                .entry(row.try_get(0)?)
                .or_default()
                .insert(row.try_get(1)?, stored.into_row());
        }
        for row in &mut out {
            row.host_metrics = host_metrics
                .get(row.host.as_str())
                .and_then(|times| times.get(&row.t))
                .cloned();
        }
        Ok(out)
    }

    /// Per-minute rows (see [`crate::store::Store::series`]).
    pub(super) async fn minutes_impl(
        &self,
        query: &SeriesQuery,
    ) -> Result<Vec<MinuteRow>, StoreError> {
        Ok(self
            .counters(query, &MINUTES)
            .await?
            .into_iter()
            .map(|c| MinuteRow {
                app: c.app,
                host: c.host,
                minute: c.t,
                lines: c.lines,
                events: c.events,
                error_lines: c.error_lines,
                warn_lines: c.warn_lines,
                exceptions: c.exceptions,
                host_metrics: c.host_metrics,
                process_cpu_pct: c.process_cpu_pct,
                process_rss_bytes: c.process_rss_bytes,
                requests: c.requests,
                scraped: c.scraped,
            })
            .collect())
    }

    /// Hourly rows (see [`crate::store::Store::hours`]).
    pub(super) async fn hours_impl(&self, query: &SeriesQuery) -> Result<Vec<HourRow>, StoreError> {
        Ok(self
            .counters(query, &HOURS)
            .await?
            .into_iter()
            .map(|c| HourRow {
                app: c.app,
                host: c.host,
                hour: c.t,
                minutes: c.minutes,
                lines: c.lines,
                events: c.events,
                error_lines: c.error_lines,
                warn_lines: c.warn_lines,
                exceptions: c.exceptions,
                host_metrics: c.host_metrics,
                process_cpu_pct: c.process_cpu_pct,
                process_rss_bytes: c.process_rss_bytes,
                requests: c.requests,
                scraped: c.scraped,
            })
            .collect())
    }
}
