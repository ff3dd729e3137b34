//! The embedded store: one SQLite file in `data_dir`, written by one connection in WAL mode
//! with `synchronous = FULL`, so a committed batch survives a crash or power loss.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use vigil_proto::v1::Report;

use super::{
    AlertRow, AppRow, DecisionEntry, FeedbackEntry, FingerprintRow, HostRow, HourRow,
    IngestOutcome, MinuteRow, NewRelease, ReleaseFilter, ReleaseState, ReleaseUpdate, SeriesQuery,
    Store, StoreError, StoredRelease, fingerprint_hex,
};
use crate::judge::{Batch, Decision};

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
mod host_metrics;
mod merged;
mod requests;
mod retention;
mod schema;
mod scraped;
mod series;
mod writes;

pub use retention::{
    FIRST_PASS_SECS, MAX_EXCEPTION_ROWS_PER_TRANSACTION, MAX_ROWS_PER_TRANSACTION,
    PASS_INTERVAL_SECS, REPORT_KEYS_SECS, RetentionPass, run as run_retention,
};

use batch::{BatchAccumulator, insert_report_keys};
use host_metrics::{StoredHostMetrics, decode_metrics};

pub use schema::DB_FILE;
use writes::{create_release_on, discard_on_error, ingest_on, update_release_on};

macro_rules! release_columns {
    () => {
        "SELECT id, app, version, state, outcome, created_at, started_at, finished_at, \
         reference_hosts, judge, last_round, decision, decided_at, reasons FROM releases"
    };
}
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

    async fn exceptions(&self, app: &str) -> Result<Vec<FingerprintRow>, StoreError> {
        self.exceptions_impl(app).await
    }

    async fn alerts(
        &self,
        app: &str,
        from: i64,
        limit: usize,
    ) -> Result<Vec<AlertRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT host, at, fingerprint, count FROM alerts WHERE app = ? AND at >= ? \
             ORDER BY at, id LIMIT ?",
        )
        .bind(app)
        .bind(from)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                let fingerprint: i64 = row.try_get(2)?;
                Ok(AlertRow {
                    host: row.try_get(0)?,
                    at: row.try_get(1)?,
                    fingerprint: fingerprint_hex(fingerprint as u64),
                    count: get_u64(row, 3)?,
                })
            })
            .collect()
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
        Ok(StoredRelease {
            id,
            app: new.app.clone(),
            version: new.version.clone(),
            state: ReleaseState::Watching,
            outcome: None,
            created_at: new.created_at,
            started_at: new.started_at,
            finished_at: None,
            reference_hosts: new.reference_hosts.clone(),
            batches: new.first_batch.iter().cloned().collect(),
            judge: None,
            last_round: None,
            decision: Decision::Pass,
            decided_at: None,
            reasons: Vec::new(),
            feedback: Vec::new(),
        })
    }

    async fn release(&self, id: i64) -> Result<Option<StoredRelease>, StoreError> {
        let row = sqlx::query(concat!(release_columns!(), " WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.readers)
            .await?;
        match row {
            Some(row) => Ok(Some(self.release_from_row(&row).await?)),
            None => Ok(None),
        }
    }

    async fn releases(&self, filter: &ReleaseFilter) -> Result<Vec<StoredRelease>, StoreError> {
        let rows = sqlx::query(concat!(
            release_columns!(),
            " WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY id DESC"
        ))
        .bind(&filter.app)
        .bind(filter.state.map(ReleaseState::as_str))
        .fetch_all(&self.readers)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
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
        let rows = sqlx::query(
            "SELECT d.release_id, r.app, r.version, d.at, d.decision, d.previous, d.reason \
             FROM release_decisions d JOIN releases r ON r.id = d.release_id \
             WHERE (?1 IS NULL OR d.release_id = ?1) ORDER BY d.id DESC LIMIT ?2",
        )
        .bind(release_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                let decision: String = row.try_get(4)?;
                let previous: String = row.try_get(5)?;
                Ok(DecisionEntry {
                    release_id: row.try_get(0)?,
                    app: row.try_get(1)?,
                    version: row.try_get(2)?,
                    at: row.try_get(3)?,
                    decision: parse_enum("decision", &decision)?,
                    previous: parse_enum("decision", &previous)?,
                    reason: row.try_get(6)?,
                })
            })
            .collect()
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

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        what: "value to store",
        reason: e.to_string(),
    })
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

/// The text of a unit enum as serde writes it (`rolled_back`, `false_alarm`, ...).
fn enum_text(value: &impl serde::Serialize) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt {
            what: "enum",
            reason: "not a string".into(),
        }),
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| {
        StoreError::Corrupt {
            what,
            reason: e.to_string(),
        }
    })
}

impl SqliteStore {
    async fn release_from_row(&self, row: &SqliteRow) -> Result<StoredRelease, StoreError> {
        let id: i64 = row.try_get(0)?;
        let state: String = row.try_get(3)?;
        let outcome: Option<String> = row.try_get(4)?;
        let reference: String = row.try_get(8)?;
        let decision: String = row.try_get(11)?;
        let reasons: String = row.try_get(13)?;
        let batches =
            sqlx::query("SELECT at, hosts FROM release_batches WHERE release_id = ? ORDER BY seq")
                .bind(id)
                .fetch_all(&self.readers)
                .await?
                .iter()
                .map(|b| {
                    let hosts: String = b.try_get(1)?;
                    Ok(Batch {
                        at: b.try_get(0)?,
                        hosts: from_json("batch hosts", &hosts)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
        let feedback =
            sqlx::query("SELECT label, note, at FROM feedback WHERE release_id = ? ORDER BY id")
                .bind(id)
                .fetch_all(&self.readers)
                .await?
                .iter()
                .map(|f| {
                    let label: String = f.try_get(0)?;
                    Ok(FeedbackEntry {
                        label: parse_enum("feedback label", &label)?,
                        note: f.try_get(1)?,
                        at: f.try_get(2)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(StoredRelease {
            id,
            app: row.try_get(1)?,
            version: row.try_get(2)?,
            state: ReleaseState::parse(&state).ok_or(StoreError::Corrupt {
                what: "release state",
                reason: state.clone(),
            })?,
            outcome: outcome
                .map(|o| parse_enum("release outcome", &o))
                .transpose()?,
            created_at: row.try_get(5)?,
            started_at: row.try_get(6)?,
            finished_at: row.try_get(7)?,
            reference_hosts: from_json("reference hosts", &reference)?,
            batches,
            judge: row.try_get(9)?,
            last_round: row.try_get(10)?,
            decision: parse_enum::<Decision>("decision", &decision)?,
            decided_at: row.try_get(12)?,
            reasons: from_json("reasons", &reasons)?,
            feedback,
        })
    }

    async fn apps_impl(&self) -> Result<Vec<AppRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT app, host, last_minute, agent_version FROM hosts ORDER BY app, host",
        )
        .fetch_all(&self.readers)
        .await?;
        let mut apps: Vec<AppRow> = Vec::new();
        for row in rows {
            let app: String = row.try_get(0)?;
            let host = HostRow {
                host: row.try_get(1)?,
                last_minute: row.try_get(2)?,
                agent_version: row.try_get(3)?,
            };
            match apps.last_mut() {
                Some(last) if last.app == app => last.hosts.push(host),
                _ => apps.push(AppRow {
                    app,
                    hosts: vec![host],
                }),
            }
        }
        Ok(apps)
    }

    async fn exceptions_impl(&self, app: &str) -> Result<Vec<FingerprintRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT fingerprint, class, causes, message, frames, dangerous, sample, first_seen, \
             last_seen, count FROM fingerprints WHERE app = ? \
             ORDER BY coalesce(last_seen, 0) DESC, fingerprint",
        )
        .bind(app)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                let fingerprint: i64 = row.try_get(0)?;
                let causes: String = row.try_get(2)?;
                let frames: String = row.try_get(4)?;
                Ok(FingerprintRow {
                    fingerprint: fingerprint_hex(fingerprint as u64),
                    class: row.try_get(1)?,
                    causes: serde_json::from_str(&causes).unwrap_or_default(),
                    message: row.try_get(3)?,
                    frames: serde_json::from_str(&frames).unwrap_or_default(),
                    dangerous: row.try_get(5)?,
                    sample: row.try_get(6)?,
                    first_seen: row.try_get(7)?,
                    last_seen: row.try_get(8)?,
                    count: get_u64(row, 9)?,
                })
            })
            .collect()
    }
}

/// Exception counts as gathered by `series`: `fingerprint:count` pairs (the fingerprint as
/// stored, a signed 64-bit integer) separated by commas.
fn parse_counts(text: &str) -> Result<BTreeMap<String, u64>, StoreError> {
    let corrupt = |pair: &str| StoreError::Corrupt {
        what: "exception counts",
        reason: format!("{pair:?} is not fingerprint:count"),
    };
    text.split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (fingerprint, count) = pair.split_once(':').ok_or_else(|| corrupt(pair))?;
            let fingerprint: i64 = fingerprint.parse().map_err(|_| corrupt(pair))?;
            let count: u64 = count.parse().map_err(|_| corrupt(pair))?;
            Ok((fingerprint_hex(fingerprint as u64), count))
        })
        .collect()
}

fn get_u64(row: &SqliteRow, index: usize) -> Result<u64, sqlx::Error> {
    let value: i64 = row.try_get(index)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

/// Counts are kept as SQLite integers (i64); a count never comes near 2^63.
fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Fingerprints are 64-bit patterns stored in SQLite's signed integers bit for bit.
fn fp(fingerprint: u64) -> i64 {
    fingerprint as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::{AppCounters, ExceptionCount, HostMetrics, MinuteReport, report::Body};

    #[test]
    fn gathered_exception_counts_parse_back_and_garbage_is_named() {
        let counts = parse_counts("-1:3,255:12").expect("valid counts");
        assert_eq!(counts.get("ffffffffffffffff"), Some(&3));
        assert_eq!(counts.get("00000000000000ff"), Some(&12));
        assert!(parse_counts("").expect("no counts").is_empty());
        let e = parse_counts("12:3,oops").expect_err("garbage");
        assert!(
            e.to_string().contains("\"oops\" is not fingerprint:count"),
            "{e}"
        );
    }

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
        let known = store.exceptions("shop").await.expect("exceptions");
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
