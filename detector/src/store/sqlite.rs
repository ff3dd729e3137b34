//! The embedded store: one SQLite file in `data_dir`, written by one connection in WAL mode
//! with `synchronous = FULL`, so a committed batch survives a crash or power loss.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use vigil_proto::v1::{ExceptionDefinition, HostMetrics, Report, report::Body};

use super::{
    AppRow, DecisionEntry, FeedbackEntry, FingerprintRow, HostMetricsRow, HostRow, HourRow,
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

mod retention;
mod series;
mod writes;

pub use retention::{
    FIRST_PASS_SECS, MAX_EXCEPTION_ROWS_PER_TRANSACTION, MAX_ROWS_PER_TRANSACTION,
    PASS_INTERVAL_SECS, REPORT_KEYS_SECS, RetentionPass, run as run_retention,
};

use writes::{create_release_on, discard_on_error, ingest_on, update_release_on};

/// Version of the schema below, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 5;

/// Name of the database file inside `data_dir`.
pub const DB_FILE: &str = "vigil.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reports (
    instance TEXT NOT NULL,
    seq INTEGER NOT NULL,
    host TEXT NOT NULL,
    kind TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (instance, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS app_minutes (
    app TEXT NOT NULL,
    host TEXT NOT NULL,
    minute INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    error_lines INTEGER NOT NULL,
    warn_lines INTEGER NOT NULL,
    events INTEGER NOT NULL,
    truncated_lines INTEGER NOT NULL,
    reports INTEGER NOT NULL,
    PRIMARY KEY (app, host, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exception_minutes (
    app TEXT NOT NULL,
    host TEXT NOT NULL,
    minute INTEGER NOT NULL,
    fingerprint INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (app, host, minute, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS host_minutes (
    host TEXT NOT NULL,
    minute INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    samples INTEGER NOT NULL,
    partial INTEGER NOT NULL,
    PRIMARY KEY (host, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fingerprints (
    app TEXT NOT NULL,
    fingerprint INTEGER NOT NULL,
    class TEXT NOT NULL DEFAULT '',
    causes TEXT NOT NULL DEFAULT '[]',
    message TEXT NOT NULL DEFAULT '',
    frames TEXT NOT NULL DEFAULT '[]',
    dangerous INTEGER NOT NULL DEFAULT 0,
    sample TEXT NOT NULL DEFAULT '',
    first_seen INTEGER,
    last_seen INTEGER,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    app TEXT NOT NULL,
    host TEXT NOT NULL,
    at INTEGER NOT NULL,
    fingerprint INTEGER NOT NULL,
    count INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
    app TEXT NOT NULL,
    host TEXT NOT NULL,
    last_minute INTEGER NOT NULL,
    agent_version TEXT NOT NULL,
    PRIMARY KEY (app, host)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    reference_hosts TEXT NOT NULL,
    judge TEXT,
    last_round INTEGER,
    decision TEXT NOT NULL,
    decided_at INTEGER,
    reasons TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS releases_by_app ON releases (app, state);
CREATE TABLE IF NOT EXISTS release_batches (
    release_id INTEGER NOT NULL REFERENCES releases (id),
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    hosts TEXT NOT NULL,
    PRIMARY KEY (release_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS app_memory (
    app TEXT PRIMARY KEY,
    memory TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    release_id INTEGER NOT NULL REFERENCES releases (id),
    label TEXT NOT NULL,
    note TEXT,
    at INTEGER NOT NULL
);
-- Version 3: every change of a release's decision, written with the change.
CREATE TABLE IF NOT EXISTS release_decisions (
    id INTEGER PRIMARY KEY,
    release_id INTEGER NOT NULL REFERENCES releases (id),
    at INTEGER NOT NULL,
    decision TEXT NOT NULL,
    previous TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS release_decisions_by_release ON release_decisions (release_id, id);
-- Version 4: hourly roll-ups of the minutes older than [retention] minutes (see retention),
-- and report keys found by age, so that old ones are deleted without a scan of them all.
CREATE INDEX IF NOT EXISTS reports_by_received_at ON reports (received_at);
CREATE TABLE IF NOT EXISTS app_hours (
    app TEXT NOT NULL,
    host TEXT NOT NULL,
    hour INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    error_lines INTEGER NOT NULL,
    warn_lines INTEGER NOT NULL,
    events INTEGER NOT NULL,
    truncated_lines INTEGER NOT NULL,
    reports INTEGER NOT NULL,
    minutes INTEGER NOT NULL,
    PRIMARY KEY (app, host, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exception_hours (
    app TEXT NOT NULL,
    host TEXT NOT NULL,
    hour INTEGER NOT NULL,
    fingerprint INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (app, host, hour, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS host_hours (
    host TEXT NOT NULL,
    hour INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    samples INTEGER NOT NULL,
    partial INTEGER NOT NULL,
    minutes INTEGER NOT NULL,
    PRIMARY KEY (host, hour)
) WITHOUT ROWID;
";

/// Version 5: the app's process CPU (% of one core, mean over the minute) and resident
/// memory, per host and minute, when the agent's `process` pattern matched; hourly, the
/// mean CPU and the peak memory. Columns added to the tables above when missing (a store
/// of version 4 keeps its rows, with no process figures).
const COLUMNS_5: [(&str, &str, &str); 4] = [
    ("app_minutes", "process_cpu_pct", "REAL"),
    ("app_minutes", "process_rss_bytes", "INTEGER"),
    ("app_hours", "process_cpu_pct", "REAL"),
    ("app_hours", "process_rss_bytes", "INTEGER"),
];

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
        let found: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&writer)
            .await?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        sqlx::raw_sql(SCHEMA).execute(&writer).await?;
        for (table, column, kind) in COLUMNS_5 {
            let present: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2")
                    .bind(table)
                    .bind(column)
                    .fetch_one(&writer)
                    .await?;
            if present == 0 {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {kind}"
                )))
                .execute(&writer)
                .await?;
            }
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {SCHEMA_VERSION}"
        )))
        .execute(&writer)
        .await?;
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

/// Rows bound per statement stay under SQLite's limit of 32766 parameters.
const MAX_PARAMS: usize = 32_000;

/// Records each report's `(instance, seq)`; returns, per report, whether it is new (the
/// first of its key in the batch and not stored before).
async fn insert_report_keys(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &[Report],
    received_at: i64,
) -> Result<Vec<bool>, StoreError> {
    let mut inserted: HashSet<(String, i64)> = HashSet::with_capacity(batch.len());
    for chunk in batch.chunks(MAX_PARAMS / 5) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO reports (instance, seq, host, kind, received_at) ",
        );
        query.push_values(chunk, |mut row, report| {
            row.push_bind(report.instance.as_str())
                .push_bind(count(report.seq))
                .push_bind(report.host.as_str())
                .push_bind(match &report.body {
                    Some(Body::Minute(_)) => "minute",
                    Some(Body::Alert(_)) => "alert",
                    None => "empty",
                })
                .push_bind(received_at);
        });
        query.push(" ON CONFLICT (instance, seq) DO NOTHING RETURNING instance, seq");
        for row in query.build().fetch_all(&mut **tx).await? {
            inserted.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }
    // The first report of a key in the batch takes the insert; repeats are duplicates.
    Ok(batch
        .iter()
        .map(|r| inserted.remove(&(r.instance.clone(), count(r.seq))))
        .collect())
}

#[derive(Debug, Default, Clone, Copy)]
struct AppMinuteSums {
    lines: u64,
    error_lines: u64,
    warn_lines: u64,
    events: u64,
    truncated_lines: u64,
    reports: u64,
    /// The last value a report of the minute carried (the agent sends them once, when the
    /// minute is over).
    process_cpu_pct: Option<f64>,
    process_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct FingerprintSums {
    first_seen: i64,
    last_seen: i64,
    count: u64,
}

/// The new reports of one batch, added up in memory so that each table gets a few
/// multi-row statements instead of one statement per counter.
#[derive(Debug, Default)]
struct BatchAccumulator<'a> {
    app_minutes: HashMap<(&'a str, &'a str, i64), AppMinuteSums>,
    exceptions: HashMap<(&'a str, &'a str, i64, u64), u64>,
    fingerprints: HashMap<(&'a str, u64), FingerprintSums>,
    definitions: HashMap<(&'a str, u64), &'a ExceptionDefinition>,
    hosts: HashMap<(&'a str, &'a str), (i64, &'a str)>,
    host_metrics: HashMap<(&'a str, i64), StoredHostMetrics>,
    alerts: Vec<(&'a str, &'a str, i64, u64, u64, i64)>,
}

impl<'a> BatchAccumulator<'a> {
    fn add(&mut self, report: &'a Report, received_at: i64) {
        let host = report.host.as_str();
        match &report.body {
            Some(Body::Minute(minute)) => {
                let m = minute.minute;
                for app in &minute.apps {
                    let name = app.app.as_str();
                    let sums = self.app_minutes.entry((name, host, m)).or_default();
                    sums.lines = sums.lines.saturating_add(app.lines);
                    sums.error_lines = sums.error_lines.saturating_add(app.error_lines);
                    sums.warn_lines = sums.warn_lines.saturating_add(app.warn_lines);
                    sums.events = sums.events.saturating_add(app.events);
                    sums.truncated_lines = sums.truncated_lines.saturating_add(app.truncated_lines);
                    sums.reports = sums.reports.saturating_add(1);
                    if let Some(cpu) = app.process_cpu_pct.filter(|v| v.is_finite() && *v >= 0.0) {
                        sums.process_cpu_pct = Some(cpu);
                    }
                    if let Some(rss) = app.process_rss_bytes {
                        sums.process_rss_bytes = Some(rss);
                    }
                    let seen = self
                        .hosts
                        .entry((name, host))
                        .or_insert((m, report.agent_version.as_str()));
                    if m >= seen.0 {
                        *seen = (m, report.agent_version.as_str());
                    }
                    for definition in &app.definitions {
                        self.definitions
                            .entry((name, definition.fingerprint))
                            .or_insert(definition);
                    }
                    for exception in &app.exceptions {
                        let sum = self
                            .exceptions
                            .entry((name, host, m, exception.fingerprint))
                            .or_default();
                        *sum = sum.saturating_add(exception.count);
                        let fp = self
                            .fingerprints
                            .entry((name, exception.fingerprint))
                            .or_insert(FingerprintSums {
                                first_seen: m,
                                last_seen: m,
                                count: 0,
                            });
                        fp.first_seen = fp.first_seen.min(m);
                        fp.last_seen = fp.last_seen.max(m);
                        fp.count = fp.count.saturating_add(exception.count);
                    }
                }
                if let Some(metrics) = &minute.host_metrics {
                    let new = StoredHostMetrics::from_proto(metrics);
                    self.host_metrics
                        .entry((host, m))
                        .and_modify(|old| *old = old.merge(&new))
                        .or_insert(new);
                }
            }
            Some(Body::Alert(alert)) => {
                if let Some(definition) = &alert.definition {
                    self.definitions
                        .entry((alert.app.as_str(), definition.fingerprint))
                        .or_insert(definition);
                    let minute = alert.at.div_euclid(60) * 60;
                    let seen = self
                        .fingerprints
                        .entry((alert.app.as_str(), definition.fingerprint))
                        .or_insert(FingerprintSums {
                            first_seen: minute,
                            last_seen: minute,
                            count: 0,
                        });
                    seen.first_seen = seen.first_seen.min(minute);
                    seen.last_seen = seen.last_seen.max(minute);
                    self.alerts.push((
                        alert.app.as_str(),
                        host,
                        alert.at,
                        definition.fingerprint,
                        alert.count,
                        received_at,
                    ));
                }
            }
            None => {}
        }
    }

    async fn write(self, tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
        let app_minutes: Vec<_> = self.app_minutes.into_iter().collect();
        for chunk in app_minutes.chunks(MAX_PARAMS / 11) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO app_minutes (app, host, minute, lines, error_lines, warn_lines, \
                 events, truncated_lines, reports, process_cpu_pct, process_rss_bytes) ",
            );
            q.push_values(chunk, |mut row, ((app, host, minute), s)| {
                row.push_bind(*app)
                    .push_bind(*host)
                    .push_bind(*minute)
                    .push_bind(count(s.lines))
                    .push_bind(count(s.error_lines))
                    .push_bind(count(s.warn_lines))
                    .push_bind(count(s.events))
                    .push_bind(count(s.truncated_lines))
                    .push_bind(count(s.reports))
                    .push_bind(s.process_cpu_pct)
                    .push_bind(s.process_rss_bytes.map(count));
            });
            q.push(concat!(
                " ON CONFLICT (app, host, minute) DO UPDATE SET \
                 process_cpu_pct = coalesce(excluded.process_cpu_pct, process_cpu_pct), \
                 process_rss_bytes = coalesce(excluded.process_rss_bytes, process_rss_bytes), ",
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
                saturating_sum!("reports")
            ));
            q.build().execute(&mut **tx).await?;
        }
        let hosts: Vec<_> = self.hosts.into_iter().collect();
        for chunk in hosts.chunks(MAX_PARAMS / 4) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO hosts (app, host, last_minute, agent_version) ",
            );
            q.push_values(chunk, |mut row, ((app, host), (minute, version))| {
                row.push_bind(*app)
                    .push_bind(*host)
                    .push_bind(*minute)
                    .push_bind(*version);
            });
            q.push(
                " ON CONFLICT (app, host) DO UPDATE SET \
                 last_minute = max(last_minute, excluded.last_minute), \
                 agent_version = excluded.agent_version",
            );
            q.build().execute(&mut **tx).await?;
        }
        let exceptions: Vec<_> = self.exceptions.into_iter().collect();
        for chunk in exceptions.chunks(MAX_PARAMS / 5) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO exception_minutes (app, host, minute, fingerprint, count) ",
            );
            q.push_values(chunk, |mut row, ((app, host, minute, f), n)| {
                row.push_bind(*app)
                    .push_bind(*host)
                    .push_bind(*minute)
                    .push_bind(fp(*f))
                    .push_bind(count(*n));
            });
            q.push(concat!(
                " ON CONFLICT (app, host, minute, fingerprint) DO UPDATE SET ",
                saturating_sum!("count")
            ));
            q.build().execute(&mut **tx).await?;
        }
        let definitions: Vec<_> = self.definitions.into_iter().collect();
        for chunk in definitions.chunks(MAX_PARAMS / 8) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO fingerprints (app, fingerprint, class, causes, message, frames, \
                 dangerous, sample) ",
            );
            q.push_values(chunk, |mut row, ((app, f), d)| {
                row.push_bind(*app)
                    .push_bind(fp(*f))
                    .push_bind(d.class.as_str())
                    .push_bind(serde_json::to_string(&d.causes).unwrap_or_default())
                    .push_bind(d.message.as_str())
                    .push_bind(serde_json::to_string(&d.frames).unwrap_or_default())
                    .push_bind(d.dangerous)
                    .push_bind(d.sample.as_str());
            });
            // The first definition a fingerprint arrived with is kept.
            q.push(
                " ON CONFLICT (app, fingerprint) DO UPDATE SET class = excluded.class, \
                 causes = excluded.causes, message = excluded.message, frames = excluded.frames, \
                 dangerous = excluded.dangerous, sample = excluded.sample \
                 WHERE fingerprints.class = ''",
            );
            q.build().execute(&mut **tx).await?;
        }
        let fingerprints: Vec<_> = self.fingerprints.into_iter().collect();
        for chunk in fingerprints.chunks(MAX_PARAMS / 5) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO fingerprints (app, fingerprint, first_seen, last_seen, count) ",
            );
            q.push_values(chunk, |mut row, ((app, f), s)| {
                row.push_bind(*app)
                    .push_bind(fp(*f))
                    .push_bind(s.first_seen)
                    .push_bind(s.last_seen)
                    .push_bind(count(s.count));
            });
            q.push(concat!(
                " ON CONFLICT (app, fingerprint) DO UPDATE SET \
                 first_seen = min(coalesce(first_seen, excluded.first_seen), excluded.first_seen), \
                 last_seen = max(coalesce(last_seen, excluded.last_seen), excluded.last_seen), ",
                saturating_sum!("count")
            ));
            q.build().execute(&mut **tx).await?;
        }
        for chunk in self.alerts.chunks(MAX_PARAMS / 6) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO alerts (app, host, at, fingerprint, count, received_at) ",
            );
            q.push_values(chunk, |mut row, (app, host, at, f, n, received)| {
                row.push_bind(*app)
                    .push_bind(*host)
                    .push_bind(*at)
                    .push_bind(fp(*f))
                    .push_bind(count(*n))
                    .push_bind(*received);
            });
            q.build().execute(&mut **tx).await?;
        }
        write_host_metrics(tx, self.host_metrics).await
    }
}

/// Adds the batch's host metrics to what is stored for the same host and minute.
async fn write_host_metrics(
    tx: &mut Transaction<'_, Sqlite>,
    mut metrics: HashMap<(&str, i64), StoredHostMetrics>,
) -> Result<(), StoreError> {
    let keys: Vec<(&str, i64)> = metrics.keys().copied().collect();
    let mut stored: HashMap<(String, i64), StoredHostMetrics> = HashMap::new();
    for chunk in keys.chunks(MAX_PARAMS / 2) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT host, minute, metrics FROM host_minutes WHERE (host, minute) IN (",
        );
        let mut keys = q.separated(", ");
        for (host, minute) in chunk {
            keys.push("(")
                .push_bind_unseparated(*host)
                .push_unseparated(", ")
                .push_bind_unseparated(*minute)
                .push_unseparated(")");
        }
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            stored.insert(
                (row.try_get(0)?, row.try_get(1)?),
                decode_metrics(row.try_get(2)?),
            );
        }
    }
    if !stored.is_empty() {
        for ((host, minute), new) in &mut metrics {
            if let Some(old) = stored.get(&((*host).to_owned(), *minute)) {
                *new = old.merge(new);
            }
        }
    }
    let rows: Vec<_> = metrics.into_iter().collect();
    for chunk in rows.chunks(MAX_PARAMS / 5) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO host_minutes (host, minute, metrics, samples, partial) ",
        );
        q.push_values(chunk, |mut row, ((host, minute), m)| {
            row.push_bind(*host)
                .push_bind(*minute)
                .push_bind(serde_json::to_string(m).unwrap_or_default())
                .push_bind(i64::from(m.samples))
                .push_bind(m.partial);
        });
        q.push(
            " ON CONFLICT (host, minute) DO UPDATE SET metrics = excluded.metrics, \
             samples = excluded.samples, partial = excluded.partial",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Host metrics as stored, with what is needed to add up several reports of one minute.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct StoredHostMetrics {
    #[serde(flatten)]
    values: BTreeMap<String, f64>,
    samples: u32,
    partial: bool,
}

/// Fields averaged (weighted by samples) when two reports carry the same minute.
const MEAN_FIELDS: [&str; 7] = [
    "cpu_pct",
    "mem_used_pct",
    "swap_used_pct",
    "load1",
    "load5",
    "load15",
    "disk_busy_pct",
];
/// Fields that take the larger value.
const MAX_FIELDS: [&str; 1] = ["cpu_pct_max"];
/// Fields added up.
const SUM_FIELDS: [&str; 4] = [
    "disk_read_bytes",
    "disk_write_bytes",
    "disk_reads",
    "disk_writes",
];

fn decode_metrics(text: String) -> StoredHostMetrics {
    serde_json::from_str(&text).unwrap_or_default()
}

impl StoredHostMetrics {
    fn from_proto(m: &HostMetrics) -> Self {
        let mut values = BTreeMap::new();
        let floats = [
            ("cpu_pct", m.cpu_pct),
            ("cpu_pct_max", m.cpu_pct_max),
            ("mem_used_pct", m.mem_used_pct),
            ("swap_used_pct", m.swap_used_pct),
            ("load1", m.load1),
            ("load5", m.load5),
            ("load15", m.load15),
            ("disk_busy_pct", m.disk_busy_pct),
        ];
        let counters = [
            ("disk_read_bytes", m.disk_read_bytes),
            ("disk_write_bytes", m.disk_write_bytes),
            ("disk_reads", m.disk_reads),
            ("disk_writes", m.disk_writes),
        ];
        for (name, value) in floats {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                values.insert(name.to_owned(), v);
            }
        }
        for (name, value) in counters {
            if let Some(v) = value {
                values.insert(name.to_owned(), v as f64);
            }
        }
        Self {
            values,
            samples: m.samples.max(1),
            partial: m.partial,
        }
    }

    /// Adds up two reports of the same host and minute.
    fn merge(&self, other: &Self) -> Self {
        let mut values = BTreeMap::new();
        let (wa, wb) = (f64::from(self.samples), f64::from(other.samples));
        for name in MEAN_FIELDS.iter().chain(&MAX_FIELDS).chain(&SUM_FIELDS) {
            let merged = match (self.values.get(*name), other.values.get(*name)) {
                (Some(a), Some(b)) if MEAN_FIELDS.contains(name) => (a * wa + b * wb) / (wa + wb),
                (Some(a), Some(b)) if MAX_FIELDS.contains(name) => a.max(*b),
                (Some(a), Some(b)) => a + b,
                (Some(a), None) | (None, Some(a)) => *a,
                (None, None) => continue,
            };
            values.insert((*name).to_owned(), merged);
        }
        Self {
            values,
            samples: self.samples.saturating_add(other.samples),
            partial: self.partial && other.partial,
        }
    }

    fn into_row(self) -> HostMetricsRow {
        let f = |name: &str| self.values.get(name).copied();
        let u = |name: &str| self.values.get(name).map(|v| *v as u64);
        HostMetricsRow {
            cpu_pct: f("cpu_pct"),
            cpu_pct_max: f("cpu_pct_max"),
            mem_used_pct: f("mem_used_pct"),
            swap_used_pct: f("swap_used_pct"),
            load1: f("load1"),
            load5: f("load5"),
            load15: f("load15"),
            disk_read_bytes: u("disk_read_bytes"),
            disk_write_bytes: u("disk_write_bytes"),
            disk_reads: u("disk_reads"),
            disk_writes: u("disk_writes"),
            disk_busy_pct: f("disk_busy_pct"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::{AppCounters, ExceptionCount, MinuteReport};

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
        // (20 + 50) / 2 over the first pass's 4 minutes, then the 5th minute's 80 weighted
        // 1 of 5: what the hour's minutes give, up to the minutes that had no figure.
        assert!((cpu - (35.0 * 4.0 + 80.0) / 5.0).abs() < 1e-9, "{cpu}");
        assert_eq!(hour.2, Some(900));
    }

    #[test]
    fn host_metrics_merge_weights_means_and_adds_counters() {
        let a = StoredHostMetrics::from_proto(&HostMetrics {
            cpu_pct: Some(10.0),
            cpu_pct_max: Some(50.0),
            disk_reads: Some(4),
            samples: 3,
            ..Default::default()
        });
        let b = StoredHostMetrics::from_proto(&HostMetrics {
            cpu_pct: Some(40.0),
            cpu_pct_max: Some(45.0),
            disk_reads: Some(6),
            load1: Some(1.5),
            samples: 1,
            partial: true,
            ..Default::default()
        });
        let row = a.merge(&b).into_row();
        assert_eq!(row.cpu_pct, Some(17.5));
        assert_eq!(row.cpu_pct_max, Some(50.0));
        assert_eq!(row.disk_reads, Some(10));
        assert_eq!(row.load1, Some(1.5));
    }
}
