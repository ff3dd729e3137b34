//! Reading the stored counters back: per-minute rows (`app_minutes`, `exception_minutes`,
//! `host_minutes`) and the hourly roll-ups retention made of them (`app_hours`,
//! `exception_hours`, `host_hours`), in one shape.
//!
//! A query reads only the conditions given, so that SQLite walks the primary keys
//! (`(app, host, t)`, `(host, t)`) instead of scanning tables; host metrics are read only
//! for the hosts and times of the app rows found; and a query with a `limit` stops at that
//! many rows and says so instead of loading them all.

use sqlx::{QueryBuilder, Sqlite};

use super::SqliteStore;
use crate::store::shared::rows::{
    Counters, CountersRow, HOURS, MINUTES, Tables, attach_host_metrics, check_limit,
    host_metrics_query, push_conditions, push_limit,
};
use crate::store::{HourRow, MinuteRow, SeriesQuery, StoreError};

impl SqliteStore {
    async fn counters(
        &self,
        query: &SeriesQuery,
        tables: &Tables,
    ) -> Result<Vec<Counters>, StoreError> {
        let Tables {
            apps,
            exceptions,
            hosts: _,
            time,
        } = tables;
        let minutes = if *time == "hour" { "a.minutes" } else { "1" };
        // One row per app, host and time, its exception counts gathered by the primary key
        // of the exceptions table as `fingerprint:count,...`: a seventh of the rows to
        // decode for a typical app, which is where the time goes.
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT a.app AS app, a.host AS host, a.{time} AS t, a.lines AS lines, \
             a.error_lines AS error_lines, a.warn_lines AS warn_lines, \
             (SELECT group_concat(e.fingerprint || ':' || e.count) FROM {exceptions} e \
              WHERE e.app = a.app AND e.host = a.host AND e.{time} = a.{time}) AS counts, \
             a.process_cpu_pct AS process_cpu_pct, a.process_rss_bytes AS process_rss_bytes, \
             {minutes} AS minutes, a.events AS events, a.requests AS requests, \
             a.scraped AS scraped FROM {apps} a WHERE 1 = 1"
        ));
        if let Some(app) = &query.app {
            q.push(" AND a.app = ").push_bind(app.clone());
        }
        push_conditions(&mut q, query, "a", time);
        q.push(format!(" ORDER BY a.app, a.host, a.{time}"));
        push_limit(&mut q, query);
        let rows: Vec<CountersRow> = q.build_query_as().fetch_all(&self.readers).await?;
        check_limit(rows.len(), query)?;
        let mut out = rows
            .into_iter()
            .map(Counters::try_from)
            .collect::<Result<Vec<_>, _>>()?;

        let mut q = host_metrics_query::<Sqlite>(query, tables);
        let host_rows: Vec<(String, i64, String)> =
            q.build_query_as().fetch_all(&self.readers).await?;
        check_limit(host_rows.len(), query)?;
        attach_host_metrics(&mut out, host_rows);
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
            .map(MinuteRow::from)
            .collect())
    }

    /// Hourly rows (see [`crate::store::Store::hours`]).
    pub(super) async fn hours_impl(&self, query: &SeriesQuery) -> Result<Vec<HourRow>, StoreError> {
        Ok(self
            .counters(query, &HOURS)
            .await?
            .into_iter()
            .map(HourRow::from)
            .collect())
    }
}
