//! The store's schema and its migrations: `CREATE TABLE IF NOT EXISTS` for every table
//! (a store of an older version gains the tables it lacks), columns added where missing,
//! and the version kept in `PRAGMA user_version` (a store of a newer Vigil is refused).

use sqlx::SqlitePool;

use crate::store::StoreError;

/// Version of the schema below, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 6;

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
-- Version 6: a release's page reads its app's alerts since its start.
CREATE INDEX IF NOT EXISTS alerts_by_app ON alerts (app, at);
-- A round reads the fingerprints of its window by id and the known members of their class
-- chains by class, never all of an app's fingerprints (an index only: a store with it
-- still opens in a Vigil of the same schema version without it).
CREATE INDEX IF NOT EXISTS fingerprints_by_class ON fingerprints (app, substr(class, 1, 200));
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
const COLUMNS_5: [(&str, &str, &str); 5] = [
    ("app_minutes", "process_cpu_pct", "REAL"),
    ("app_minutes", "process_rss_bytes", "INTEGER"),
    ("app_hours", "process_cpu_pct", "REAL"),
    ("app_hours", "process_rss_bytes", "INTEGER"),
    // Minutes of the hour that had a CPU figure: the weight of its mean when a later pass
    // adds more minutes of the same hour.
    (
        "app_hours",
        "process_cpu_minutes",
        "INTEGER NOT NULL DEFAULT 0",
    ),
];

/// Version 6: the app's HTTP requests per host and minute (and hour), from its access logs
/// or metrics endpoint, in the compact form of `requests`, and the values scraped from
/// that endpoint (`scraped`); `NULL` where the host has none. Added where missing.
const COLUMNS_6: [(&str, &str, &str); 4] = [
    ("app_minutes", "requests", "TEXT"),
    ("app_hours", "requests", "TEXT"),
    ("app_minutes", "scraped", "TEXT"),
    ("app_hours", "scraped", "TEXT"),
];

/// Brings the store on `writer` to [`SCHEMA_VERSION`].
///
/// # Errors
/// [`StoreError::SchemaTooNew`] for a store of a newer Vigil, or the database's error.
pub(super) async fn migrate(writer: &SqlitePool) -> Result<(), StoreError> {
    let found: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(writer)
        .await?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    sqlx::raw_sql(SCHEMA).execute(writer).await?;
    for (table, column, kind) in COLUMNS_5.into_iter().chain(COLUMNS_6) {
        let present: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2")
                .bind(table)
                .bind(column)
                .fetch_one(writer)
                .await?;
        if present == 0 {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {table} ADD COLUMN {column} {kind}"
            )))
            .execute(writer)
            .await?;
        }
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA user_version = {SCHEMA_VERSION}"
    )))
    .execute(writer)
    .await?;
    Ok(())
}
