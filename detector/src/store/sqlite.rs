//! The embedded store: one SQLite file in `data_dir`, written by one connection in WAL mode
//! with `synchronous = FULL`, so a committed batch survives a crash or power loss.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use vigil_proto::v1::Report;

use super::shared::fingerprints;
use super::shared::rows::{
    BatchRow, DecisionRow, FeedbackRow, RELEASE_COLUMNS, ReleaseRow, StoredAlertRow,
    created_release, group_apps,
};
use super::shared::to_json;
use super::{
    AlertRow, AppRow, DecisionEntry, ExceptionQuery, FingerprintRow, HostRow, HourRow,
    IngestOutcome, MinuteRow, NewRelease, ReleaseFilter, ReleaseState, ReleaseUpdate, SeriesQuery,
    Shape, Store, StoreError, StoredRelease,
};
use crate::judge::Batch;

/// `column = column + excluded.column`, held at `i64::MAX` (SQLite would turn an integer
/// sum that overflows into a REAL, which no reader of the column expects). Defined before
/// the submodules: the roll-ups use it too.
macro_rules! saturating_sum {
    ($column:literal) => {
        concat!(
            $column,
            " = CASE WHEN ",
            $column,
            " > 9223372036854775807 - excluded.",
            $column,
            " THEN 9223372036854775807 ELSE ",
            $column,
            " + excluded.",
            $column,
            " END"
        )
    };
}

mod batch;
mod merged;
mod retention;
mod schema;
mod series;
mod writes;

pub use retention::{
    FIRST_PASS_SECS, MAX_EXCEPTION_ROWS_PER_TRANSACTION, MAX_ROWS_PER_TRANSACTION,
    PASS_INTERVAL_SECS, REPORT_KEYS_SECS, RetentionPass,
};

use batch::insert_report_keys;

pub use schema::DB_FILE;
use writes::{create_release_on, discard_on_error, ingest_on, update_release_on};
/// The embedded SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The only connection that writes: SQLite has one writer at a time anyway, and one
    /// connection makes each `ingest` batch one transaction without lock contention.
    writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    ///
    /// # Errors
    /// [`StoreError`] when the directory or database cannot be opened, or the schema is
    /// newer than this detector understands.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            // A write-ahead log of at most about 1 MiB between checkpoints, truncated back
            // to that after each: the store's disk never holds a log as large as SQLite's
            // default (4 MiB and more), and a disk that filled up has room for the
            // checkpoint that frees it.
            .pragma("wal_autocheckpoint", "256")
            .pragma("journal_size_limit", "1048576");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        schema::migrate(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, readers })
    }

    /// Closes every connection, waiting for them to finish.
    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }
}

impl Store for SqliteStore {
    async fn ingest(
        &self,
        batch: &[Report],
        received_at: i64,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let result = ingest_on(&mut conn, batch, received_at).await;
        discard_on_error(&self.writer, conn, result).await
    }

    async fn apps(&self) -> Result<Vec<AppRow>, StoreError> {
        self.apps_impl().await
    }

    async fn exceptions(
        &self,
        app: &str,
        query: &ExceptionQuery,
    ) -> Result<Vec<FingerprintRow>, StoreError> {
        fingerprints::read_recent(&self.readers, app, query).await
    }

    async fn fingerprints(
        &self,
        app: &str,
        ids: &[u64],
        samples: bool,
    ) -> Result<Vec<FingerprintRow>, StoreError> {
        fingerprints::read_by_id(&self.readers, app, ids, samples).await
    }

    async fn known_members(
        &self,
        app: &str,
        before: i64,
        asked: &[Shape<'_>],
    ) -> Result<Vec<FingerprintRow>, StoreError> {
        fingerprints::read_known_members(
            &self.readers,
            app,
            before,
            asked,
            " INDEXED BY fingerprints_by_class",
        )
        .await
    }

    async fn alerts(
        &self,
        app: &str,
        from: i64,
        limit: usize,
    ) -> Result<Vec<AlertRow>, StoreError> {
        let rows: Vec<StoredAlertRow> = sqlx::query_as(
            "SELECT host, at, fingerprint, count FROM alerts WHERE app = ? AND at >= ? \
             ORDER BY at, id LIMIT ?",
        )
        .bind(app)
        .bind(from)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(AlertRow::from).collect())
    }

    async fn series(&self, query: &SeriesQuery) -> Result<Vec<MinuteRow>, StoreError> {
        self.minutes_impl(query).await
    }

    async fn hours(&self, query: &SeriesQuery) -> Result<Vec<HourRow>, StoreError> {
        self.hours_impl(query).await
    }

    async fn create_release(&self, new: &NewRelease) -> Result<StoredRelease, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let result = create_release_on(&mut conn, new).await;
        let id = discard_on_error(&self.writer, conn, result).await?;
        Ok(created_release(id, new))
    }

    async fn release(&self, id: i64) -> Result<Option<StoredRelease>, StoreError> {
        let row: Option<ReleaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{RELEASE_COLUMNS} WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.readers)
        .await?;
        match row {
            Some(row) => Ok(Some(self.release_from_row(row).await?)),
            None => Ok(None),
        }
    }

    async fn releases(&self, filter: &ReleaseFilter) -> Result<Vec<StoredRelease>, StoreError> {
        let rows: Vec<ReleaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{RELEASE_COLUMNS} WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR state = ?2) \
             ORDER BY id DESC"
        )))
        .bind(&filter.app)
        .bind(filter.state.map(ReleaseState::as_str))
        .fetch_all(&self.readers)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.release_from_row(row).await?);
        }
        Ok(out)
    }

    async fn update_release(&self, update: &ReleaseUpdate<'_>) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let result = update_release_on(&mut conn, update).await;
        discard_on_error(&self.writer, conn, result).await
    }

    async fn decisions(
        &self,
        release_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DecisionEntry>, StoreError> {
        let rows: Vec<DecisionRow> = sqlx::query_as(
            "SELECT d.release_id AS release_id, r.app AS app, r.version AS version, d.at AS at, \
             d.decision AS decision, d.previous AS previous, d.reason AS reason \
             FROM release_decisions d JOIN releases r ON r.id = d.release_id \
             WHERE (?1 IS NULL OR d.release_id = ?1) ORDER BY d.id DESC LIMIT ?2",
        )
        .bind(release_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(DecisionEntry::try_from).collect()
    }

    async fn app_memory(&self, app: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT memory FROM app_memory WHERE app = ?")
                .bind(app)
                .fetch_optional(&self.readers)
                .await?,
        )
    }
}

async fn insert_batch(
    tx: &mut Transaction<'_, Sqlite>,
    release_id: i64,
    batch: &Batch,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO release_batches (release_id, seq, at, hosts) VALUES (?1, \
         (SELECT coalesce(max(seq), 0) + 1 FROM release_batches WHERE release_id = ?1), ?2, ?3)",
    )
    .bind(release_id)
    .bind(batch.at)
    .bind(to_json(&batch.hosts)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl SqliteStore {
    async fn release_from_row(&self, row: ReleaseRow) -> Result<StoredRelease, StoreError> {
        let batches: Vec<BatchRow> = sqlx::query_as(
            "SELECT at, hosts FROM release_batches WHERE release_id = ? ORDER BY seq",
        )
        .bind(row.id)
        .fetch_all(&self.readers)
        .await?;
        let feedback: Vec<FeedbackRow> =
            sqlx::query_as("SELECT label, note, at FROM feedback WHERE release_id = ? ORDER BY id")
                .bind(row.id)
                .fetch_all(&self.readers)
                .await?;
        row.into_release(batches, feedback)
    }

    async fn apps_impl(&self) -> Result<Vec<AppRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT app, host, last_minute, agent_version FROM hosts ORDER BY app, host",
        )
        .fetch_all(&self.readers)
        .await?;
        let rows = rows
            .iter()
            .map(|row| {
                let host = HostRow {
                    host: row.try_get(1)?,
                    last_minute: row.try_get(2)?,
                    agent_version: row.try_get(3)?,
                };
                Ok((row.try_get(0)?, host))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(group_apps(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Decision;
    use crate::store::ExceptionQuery;
    use vigil_proto::v1::{AppCounters, ExceptionCount, HostMetrics, MinuteReport, report::Body};

    fn minute_report(instance: &str, seq: u64, minute: i64, lines: u64) -> Report {
        Report {
            protocol_version: 1,
            host: "web-1".into(),
            instance: instance.into(),
            agent_version: "0.1.0".into(),
            fingerprint_version: 1,
            seq,
            sent_at: minute + 61,
            body: Some(Body::Minute(MinuteReport {
                minute,
                apps: vec![AppCounters {
                    app: "shop".into(),
                    lines,
                    error_lines: 2,
                    exceptions: vec![ExceptionCount {
                        fingerprint: 0xfeed_beef_0000_0001,
                        count: 3,
                    }],
                    ..Default::default()
                }],
                host_metrics: Some(HostMetrics {
                    cpu_pct: Some(20.0),
                    cpu_pct_max: Some(40.0),
                    disk_write_bytes: Some(1000),
                    samples: 6,
                    ..Default::default()
                }),
            })),
        }
    }

    #[tokio::test]
    async fn reports_are_stored_once_and_minutes_add_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).await.expect("open");
        let first = store
            .ingest(
                &[
                    minute_report("i1", 1, 600, 10),
                    minute_report("i1", 1, 600, 10),
                    minute_report("i1", 2, 600, 5),
                ],
                700,
            )
            .await
            .expect("ingest");
        assert_eq!(
            first,
            [
                IngestOutcome::Stored,
                IngestOutcome::Duplicate,
                IngestOutcome::Stored
            ]
        );
        // A redelivery after a reconnect changes nothing.
        let again = store
            .ingest(&[minute_report("i1", 2, 600, 5)], 701)
            .await
            .expect("ingest");
        assert_eq!(again, [IngestOutcome::Duplicate]);

        let rows = store.series(&SeriesQuery::default()).await.expect("series");
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!((row.lines, row.error_lines), (15, 4));
        assert_eq!(row.exceptions.get("feedbeef00000001"), Some(&6));
        let metrics = row.host_metrics.as_ref().expect("host metrics");
        assert_eq!(metrics.cpu_pct, Some(20.0));
        assert_eq!(metrics.disk_write_bytes, Some(2000));
    }

    #[tokio::test]
    async fn sums_past_i64_max_hold_at_the_maximum_and_stay_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).await.expect("open");
        let huge = |seq| {
            let mut r = minute_report("i1", seq, 600, u64::MAX / 2);
            if let Some(Body::Minute(m)) = &mut r.body {
                m.apps[0].exceptions[0].count = u64::MAX / 2;
            }
            r
        };
        // In one batch (summed in memory) and across batches (summed by SQLite).
        store
            .ingest(&[huge(1), huge(2)], 700)
            .await
            .expect("ingest");
        store.ingest(&[huge(3)], 701).await.expect("ingest");
        let rows = store.series(&SeriesQuery::default()).await.expect("series");
        assert_eq!(rows[0].lines, i64::MAX as u64);
        assert_eq!(
            rows[0].exceptions.get("feedbeef00000001"),
            Some(&(i64::MAX as u64))
        );
        let known = store
            .exceptions("shop", &ExceptionQuery::latest(10_000))
            .await
            .expect("exceptions");
        assert_eq!(known[0].count, i64::MAX as u64);
    }

    #[tokio::test]
    async fn store_survives_reopen_and_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open(dir.path()).await.expect("open");
            store
                .ingest(
                    &[
                        minute_report("i1", 1, 600, 10),
                        minute_report("i1", 2, 660, 7),
                    ],
                    700,
                )
                .await
                .expect("ingest");
        }
        let store = SqliteStore::open(dir.path()).await.expect("reopen");
        let rows = store
            .series(&SeriesQuery {
                app: Some("shop".into()),
                host: Some("web-1".into()),
                from: Some(660),
                to: None,
                limit: None,
            })
            .await
            .expect("series");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].minute, rows[0].lines), (660, 7));
        let none = store
            .series(&SeriesQuery {
                app: Some("other".into()),
                ..Default::default()
            })
            .await
            .expect("series");
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn a_version_2_store_gains_the_decision_log_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new = NewRelease {
            app: "shop".into(),
            version: "2".into(),
            started_at: 600,
            created_at: 600,
            reference_hosts: Vec::new(),
            first_batch: None,
        };
        {
            // What a version 2 detector left: no release_decisions table.
            let store = SqliteStore::open(dir.path()).await.expect("open");
            store.create_release(&new).await.expect("release");
            sqlx::raw_sql("DROP TABLE release_decisions; PRAGMA user_version = 2")
                .execute(&store.writer)
                .await
                .expect("downgrade");
        }
        let store = SqliteStore::open(dir.path()).await.expect("upgrade");
        let mut release = store.release(1).await.expect("read").expect("release 1");
        release.decision = Decision::Block;
        release.decided_at = Some(660);
        store
            .update_release(&ReleaseUpdate {
                release: &release,
                new_batch: None,
                app_memory: None,
                feedback: None,
                webhook: None,
            })
            .await
            .expect("update");
        let log = store.decisions(Some(1), 10).await.expect("decisions");
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].previous, log[0].decision, log[0].at),
            (Decision::Pass, Decision::Block, 660)
        );
        sqlx::raw_sql("PRAGMA user_version = 99")
            .execute(&store.writer)
            .await
            .expect("from the future");
        drop(store);
        let refused = SqliteStore::open(dir.path())
            .await
            .expect_err("newer schema");
        assert!(
            refused.to_string().contains("schema version 99 is newer"),
            "{refused}"
        );
    }

    fn with_process(mut report: Report, cpu: Option<f64>, rss: Option<u64>) -> Report {
        if let Some(Body::Minute(m)) = report.body.as_mut() {
            m.apps[0].process_cpu_pct = cpu;
            m.apps[0].process_rss_bytes = rss;
        }
        report
    }

    #[tokio::test]
    async fn process_figures_are_kept_from_a_version_4_store_on_and_rolled_up_by_hour() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // What a version 4 detector left: no process columns, a minute stored.
            let store = SqliteStore::open(dir.path()).await.expect("open");
            store
                .ingest(&[minute_report("i1", 1, 3600, 10)], 3700)
                .await
                .expect("ingest");
            sqlx::raw_sql(
                "ALTER TABLE app_minutes DROP COLUMN process_cpu_pct; \
                 ALTER TABLE app_minutes DROP COLUMN process_rss_bytes; \
                 ALTER TABLE app_hours DROP COLUMN process_cpu_pct; \
                 ALTER TABLE app_hours DROP COLUMN process_rss_bytes; \
                 ALTER TABLE app_hours DROP COLUMN process_cpu_minutes; \
                 PRAGMA user_version = 4",
            )
            .execute(&store.writer)
            .await
            .expect("downgrade");
        }
        let store = SqliteStore::open(dir.path()).await.expect("upgrade");
        let reports = [
            with_process(minute_report("i1", 2, 3660, 10), Some(20.0), Some(100)),
            // A later report of the same minute without figures keeps them; one with
            // figures replaces them; a value that is no number is dropped.
            with_process(minute_report("i1", 3, 3660, 1), None, None),
            with_process(minute_report("i1", 4, 3720, 10), Some(10.0), Some(500)),
            with_process(minute_report("i1", 5, 3720, 1), Some(50.0), Some(300)),
            with_process(minute_report("i1", 6, 3780, 1), Some(f64::NAN), None),
        ];
        store.ingest(&reports, 3800).await.expect("ingest");
        let rows = store.series(&SeriesQuery::default()).await.expect("series");
        let figures: Vec<_> = rows
            .iter()
            .map(|r| (r.minute, r.lines, r.process_cpu_pct, r.process_rss_bytes))
            .collect();
        assert_eq!(
            figures,
            [
                (3600, 10, None, None),
                (3660, 11, Some(20.0), Some(100)),
                (3720, 11, Some(50.0), Some(300)),
                (3780, 1, None, None),
            ]
        );
        // Rolled up in two steps into one hour: the mean CPU over the minutes that had
        // it, the peak memory.
        let policy = crate::config::Retention {
            minutes_secs: 3600,
            hourly_secs: 400 * 86_400,
        };
        store.retain(&policy, 3 * 3600).await.expect("first pass");
        store
            .ingest(
                &[with_process(
                    minute_report("i1", 7, 3840, 1),
                    Some(80.0),
                    Some(900),
                )],
                3900,
            )
            .await
            .expect("a late report of the same hour");
        store.retain(&policy, 3 * 3600).await.expect("second pass");
        let hour: (i64, Option<f64>, Option<i64>) = sqlx::query_as(
            "SELECT minutes, process_cpu_pct, process_rss_bytes FROM app_hours WHERE hour = 3600",
        )
        .fetch_one(&store.readers)
        .await
        .expect("the hour");
        assert_eq!(hour.0, 5);
        let cpu = hour.1.expect("a mean");
        // The mean over the minutes that had a figure: 20 and 50 in the first pass, 80 in
        // the second; the minutes without one (3600, and 3780 whose NaN was dropped) do not
        // weigh.
        assert!((cpu - (20.0 + 50.0 + 80.0) / 3.0).abs() < 1e-9, "{cpu}");
        assert_eq!(hour.2, Some(900));
    }
}
