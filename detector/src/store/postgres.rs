//! The shared store: one PostgreSQL database that several detectors ingest into, read from
//! and judge with, each through a pool of its own.
//!
//! It keeps the same rows as the embedded store and answers every query the same way;
//! what differs is that other detectors write at the same time:
//! - a batch's reports are de-duplicated by inserting their keys in its transaction
//!   (`ON CONFLICT DO NOTHING`): a key another detector is committing waits for it, so a
//!   report resent to another detector is stored once;
//! - counters are added by the database (`ON CONFLICT DO UPDATE SET n = n + excluded.n`);
//!   values merged in Rust (requests, scraped values, host metrics) are read from rows the
//!   transaction has locked, merged and written back;
//! - every transaction locks rows table by table in one order, and each table's rows in
//!   the order of their sorted keys, so two batches do not wait on each other in a cycle;
//!   a transaction the server still aborts (a deadlock, a serialization failure) is run
//!   again from the start, a few times ([`MAX_ATTEMPTS`]);
//! - retention steps run in `REPEATABLE READ`: a step that rolls up minutes another
//!   detector is changing (or rolling up) fails and is run again, so no minute is added to
//!   its hour twice or lost.
//!
//! The schema is created and upgraded by the migrations in `migrations/postgres`, applied
//! when a detector connects; a database migrated by a newer Vigil is refused.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row};
use vigil_proto::v1::Report;

use super::shared::fingerprints;
use super::shared::rows::{
    DecisionRow, RELEASE_COLUMNS, ReleaseRow, StoredAlertRow, created_release, group_apps,
};
use super::{
    AlertRow, AppRow, DecisionEntry, ExceptionQuery, FingerprintRow, HostRow, HourRow,
    IngestOutcome, LockKey, MinuteRow, NewRelease, QueuedAlert, QueuedWebhook, ReleaseFilter,
    ReleaseState, ReleaseUpdate, SeriesQuery, Shape, Store, StoreError, StoreLock, StoredRelease,
};
use crate::judge::Definition;

mod batch;
mod retention;
mod schema;
mod series;
mod writes;

/// Connections one detector opens at most for its queries: ingest's group commits, the
/// API's reads, the judgement's and retention's.
pub const MAX_CONNECTIONS: u32 = 16;
/// Connections one detector opens at most to hold locks ([`Store::lock`]), apart from the
/// queries' so that lock holders waiting for a query's connection never take them all.
pub const MAX_LOCK_CONNECTIONS: u32 = 8;
/// How long a lock waits for one of those connections (other holders finishing, or the
/// server coming back) before the change that wants it fails.
pub const LOCK_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a query waits for a free connection before it fails.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Times a transaction is run when the server aborts it for a deadlock or a serialization
/// failure (another detector wrote the same rows in another order or at the same time).
pub const MAX_ATTEMPTS: u32 = 5;

/// The first key of every advisory lock Vigil takes (`"VIGL"`); the second says which.
const LOCK_SPACE: i32 = 0x5649_474c;
/// Second key of the lock held while a batch inserts its alerts and commits.
const ALERTS_LOCK: i32 = -2;
/// Second key of the apps' learned memory's lock.
const APP_MEMORY_LOCK: i32 = -1;

/// The shared PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Sessions that hold (or wait for) advisory locks.
    locks: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host/db?sslmode=verify-full`)
    /// and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError`] when the URL is not valid, the database cannot be reached or
    /// migrated, or its schema is newer than this detector understands
    /// ([`StoreError::SchemaTooNew`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PgConnectOptions::from_str(url)?).await
    }

    /// Connects with `options` and brings the schema up to date (see
    /// [`PostgresStore::connect`]).
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let options = session_options(options);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let locks = PgPoolOptions::new()
            .max_connections(MAX_LOCK_CONNECTIONS)
            .acquire_timeout(LOCK_ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        if let Err(e) = schema::migrate(&pool).await {
            // Closing ends the sessions, and with them any lock the migration still held.
            pool.close().await;
            return Err(e);
        }
        Ok(Self { pool, locks })
    }

    /// Closes every connection, waiting for them to finish.
    pub async fn close(&self) {
        self.locks.close().await;
        self.pool.close().await;
    }
}

/// `options` with the session settings every connection of a detector uses:
/// - the server probes an idle connection after 10 s and drops it after three unanswered
///   probes 5 s apart, so the locks of a detector whose host died (not only its process)
///   go within about 25 s, not the hours of the system's default;
/// - a lock is waited for at most [`LOCK_WAIT`]; past it the change fails (and is retried
///   by the next round, or answered with an error), rather than queueing behind a stuck
///   session.
pub fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([
        ("tcp_keepalives_idle", "10"),
        ("tcp_keepalives_interval", "5"),
        ("tcp_keepalives_count", "3"),
        ("lock_timeout", LOCK_WAIT),
    ])
}

/// The longest a statement waits for a lock (`lock_timeout`).
pub const LOCK_WAIT: &str = "60s";

/// Whether `e` is the server aborting a transaction that may succeed when run again: a
/// serialization failure (`40001`) or a deadlock (`40P01`).
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

/// Evaluates `$attempt` (an `.await`ed transaction) until it succeeds, fails for good or
/// was tried [`MAX_ATTEMPTS`] times; waits a little longer, at random, before each retry,
/// so that two detectors that collided do not collide again.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut attempt = 1u32;
        loop {
            match $attempt {
                Err(e) if attempt < $crate::store::postgres::MAX_ATTEMPTS
                    && $crate::store::postgres::retryable(&e) =>
                {
                    tracing::debug!(error = %e, attempt, "transaction aborted by the server; run again");
                    tokio::time::sleep(std::time::Duration::from_millis(
                        fastrand::u64(5..=25) * u64::from(attempt),
                    ))
                    .await;
                    attempt += 1;
                }
                result => break result,
            }
        }
    }};
}
use retrying;

/// A held advisory lock (see [`Store::lock`]): the session holding it, released when the
/// guard is dropped.
struct AdvisoryLock {
    conn: std::sync::Mutex<Option<PoolConnection<Postgres>>>,
    key: i32,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let conn = match self.conn.get_mut() {
            Ok(conn) => conn.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(mut conn) = conn else {
            return;
        };
        let key = self.key;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                        .bind(LOCK_SPACE)
                        .bind(key)
                        .execute(&mut *conn)
                        .await;
                    if let Err(e) = unlocked {
                        // Ending the session releases the lock whatever the connection's
                        // state.
                        tracing::warn!(error = %e, "releasing a store lock; its connection is closed");
                        conn.close_on_drop();
                    }
                });
            }
            // No runtime to unlock on: the session ends, and the lock with it.
            Err(_) => conn.close_on_drop(),
        }
    }
}

/// A connection waiting for an advisory lock: closed when dropped before it got it.
struct Waiting(Option<PoolConnection<Postgres>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// The second key of `key`'s advisory lock: a release's id folded into `1..=i32::MAX`
/// (two releases 2^31 - 1 apart share a lock, which only makes one wait), the app memory
/// below zero. The leader's lock is 0.
fn lock_key(key: LockKey) -> i32 {
    match key {
        LockKey::Release(id) => {
            let folded = (id - 1).rem_euclid(i64::from(i32::MAX)) + 1;
            i32::try_from(folded).unwrap_or(i32::MAX)
        }
        LockKey::AppMemory => APP_MEMORY_LOCK,
    }
}

impl Store for PostgresStore {
    async fn ingest(
        &self,
        batch: &[Report],
        received_at: i64,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        retrying!(batch::ingest(&self.pool, batch, received_at).await)
    }

    async fn series(&self, query: &SeriesQuery) -> Result<Vec<MinuteRow>, StoreError> {
        self.minutes_impl(query).await
    }

    async fn hours(&self, query: &SeriesQuery) -> Result<Vec<HourRow>, StoreError> {
        self.hours_impl(query).await
    }

    async fn apps(&self) -> Result<Vec<AppRow>, StoreError> {
        let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT app, host, last_minute, agent_version FROM hosts ORDER BY app, host",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(group_apps(rows.into_iter().map(
            |(app, host, last_minute, agent_version)| {
                (
                    app,
                    HostRow {
                        host,
                        last_minute,
                        agent_version,
                    },
                )
            },
        )))
    }

    async fn exceptions(
        &self,
        app: &str,
        query: &ExceptionQuery,
    ) -> Result<Vec<FingerprintRow>, StoreError> {
        fingerprints::read_recent(&self.pool, app, query).await
    }

    async fn fingerprints(
        &self,
        app: &str,
        ids: &[u64],
        samples: bool,
    ) -> Result<Vec<FingerprintRow>, StoreError> {
        fingerprints::read_by_id(&self.pool, app, ids, samples).await
    }

    async fn known_members(
        &self,
        app: &str,
        before: i64,
        asked: &[Shape<'_>],
    ) -> Result<Vec<FingerprintRow>, StoreError> {
        fingerprints::read_known_members(&self.pool, app, before, asked, "").await
    }

    async fn alerts(
        &self,
        app: &str,
        from: i64,
        limit: usize,
    ) -> Result<Vec<AlertRow>, StoreError> {
        let rows: Vec<StoredAlertRow> = sqlx::query_as(
            "SELECT host, at, fingerprint, count FROM alerts WHERE app = $1 AND at >= $2 \
             ORDER BY at, id LIMIT $3",
        )
        .bind(app)
        .bind(from)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AlertRow::from).collect())
    }

    async fn create_release(&self, new: &NewRelease) -> Result<StoredRelease, StoreError> {
        let id = retrying!(writes::create_release(&self.pool, new).await)?;
        Ok(created_release(id, new))
    }

    async fn release(&self, id: i64) -> Result<Option<StoredRelease>, StoreError> {
        let row: Option<ReleaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{RELEASE_COLUMNS} WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(writes::release_from_row(&self.pool, row).await?)),
            None => Ok(None),
        }
    }

    async fn releases(&self, filter: &ReleaseFilter) -> Result<Vec<StoredRelease>, StoreError> {
        let rows: Vec<ReleaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{RELEASE_COLUMNS} WHERE ($1::text IS NULL OR app = $1) \
             AND ($2::text IS NULL OR state = $2) ORDER BY id DESC"
        )))
        .bind(&filter.app)
        .bind(filter.state.map(ReleaseState::as_str))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(writes::release_from_row(&self.pool, row).await?);
        }
        Ok(out)
    }

    async fn update_release(&self, update: &ReleaseUpdate<'_>) -> Result<(), StoreError> {
        retrying!(writes::update_release(&self.pool, update).await)
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
             WHERE ($1::bigint IS NULL OR d.release_id = $1) ORDER BY d.id DESC LIMIT $2",
        )
        .bind(release_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(DecisionEntry::try_from).collect()
    }

    async fn app_memory(&self, app: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT memory FROM app_memory WHERE app = $1")
                .bind(app)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Takes the session advisory lock of `key` on a connection of the pool, kept out of
    /// the pool until the guard is dropped. A caller that gives up waiting (drops the
    /// future) closes the connection instead of returning it to the pool with the wait
    /// still running, so that the session cannot take the lock for nobody.
    async fn lock(&self, key: LockKey) -> Result<StoreLock, StoreError> {
        let mut waiting = Waiting(Some(self.locks.acquire().await?));
        let key = lock_key(key);
        if let Some(conn) = waiting.0.as_mut() {
            sqlx::query("SELECT pg_advisory_lock($1, $2)")
                .bind(LOCK_SPACE)
                .bind(key)
                .execute(&mut **conn)
                .await?;
        }
        Ok(Box::new(AdvisoryLock {
            conn: std::sync::Mutex::new(waiting.0.take()),
            key,
        }))
    }

    fn queues_webhooks(&self) -> bool {
        true
    }

    async fn queued_webhooks(
        &self,
        limit: usize,
        skip: &[i64],
    ) -> Result<Vec<QueuedWebhook>, StoreError> {
        let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT id, body, queued_at, delivered_to FROM webhook_queue \
             WHERE posted_at IS NULL AND NOT (id = ANY($2)) ORDER BY id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(skip)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, body, queued_at, delivered_to)| QueuedWebhook {
                id,
                body,
                queued_at,
                delivered_to: serde_json::from_str(&delivered_to).unwrap_or_default(),
            })
            .collect())
    }

    async fn webhook_delivered(&self, id: i64, url: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_queue SET delivered_to = \
             (delivered_to::jsonb || to_jsonb($2::text))::text WHERE id = $1",
        )
        .bind(id)
        .bind(url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn webhook_posted(&self, id: i64, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhook_queue SET posted_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Alerts in id order, which is the order they were committed in (see the `alerts`
    /// table), with their fingerprints' definitions.
    async fn alerts_after(
        &self,
        after: i64,
        since: i64,
        limit: usize,
    ) -> Result<Vec<QueuedAlert>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.id, a.app, a.host, a.at, a.fingerprint, f.class, f.causes, f.message, \
             f.frames, f.dangerous FROM alerts a \
             LEFT JOIN fingerprints f ON f.app = a.app AND f.fingerprint = a.fingerprint \
             WHERE a.id > $1 AND a.received_at >= $2 ORDER BY a.id LIMIT $3",
        )
        .bind(after)
        .bind(since)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let fingerprint: i64 = row.try_get(4)?;
                let causes: Option<String> = row.try_get(6)?;
                let frames: Option<String> = row.try_get(8)?;
                Ok(QueuedAlert {
                    id: row.try_get(0)?,
                    app: row.try_get(1)?,
                    host: row.try_get(2)?,
                    at: row.try_get(3)?,
                    fingerprint: fingerprint as u64,
                    definition: Definition {
                        class: row.try_get::<Option<String>, _>(5)?.unwrap_or_default(),
                        causes: causes
                            .and_then(|c| serde_json::from_str(&c).ok())
                            .unwrap_or_default(),
                        message: row.try_get::<Option<String>, _>(7)?.unwrap_or_default(),
                        frames: frames
                            .and_then(|f| serde_json::from_str(&f).ok())
                            .unwrap_or_default(),
                        dangerous: row.try_get::<Option<bool>, _>(9)?.unwrap_or(false),
                    },
                })
            })
            .collect()
    }
}

/// `column = table.column + excluded.column` in an upsert of `table`, held at `i64::MAX`
/// (the server refuses a BIGINT sum that overflows; the embedded store holds it there).
fn saturating_sum(table: &str, column: &str) -> String {
    format!(
        "{column} = CASE WHEN {table}.{column} > 9223372036854775807 - excluded.{column} \
         THEN 9223372036854775807 ELSE {table}.{column} + excluded.{column} END"
    )
}
