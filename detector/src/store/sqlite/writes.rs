//! The store's write transactions. Each runs on the one writer connection; a transaction
//! that fails anywhere (a full disk, an I/O error, a constraint) takes the connection with
//! it, so the next write starts on a fresh connection with no transaction of the failed
//! one left open. (SQLite may roll a transaction back by itself on `SQLITE_FULL`; a
//! connection that still believed it was inside one would turn the next `BEGIN` into a
//! savepoint and its `COMMIT` into a release that commits nothing, acknowledging reports
//! that were never stored.)

use sqlx::pool::PoolConnection;
use sqlx::{Connection, Sqlite, SqliteConnection, SqlitePool};
use vigil_proto::v1::Report;

use super::{batch, insert_batch, insert_report_keys};
use crate::judge::Reason;
use crate::store::shared::accumulator::accumulate;
use crate::store::shared::{enum_text, to_json};
use crate::store::{IngestOutcome, NewRelease, ReleaseUpdate, StoreError};

/// Hands back `result`; on an error the writer connection is closed rather than returned
/// to the pool, whatever state the failure left it in, and a fresh one moves the
/// write-ahead log into the database and truncates it, so that a disk that filled up
/// gets back what the log held once space returns.
pub(super) async fn discard_on_error<T>(
    writer: &SqlitePool,
    conn: PoolConnection<Sqlite>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let Err(e) = &result {
        tracing::warn!(error = %e, "store write failed; the writer connection is reopened");
        if let Err(close) = conn.close().await {
            tracing::warn!(error = %close, "closing the failed writer connection");
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(writer)
            .await
        {
            tracing::debug!(error = %e, "checkpoint after a failed write");
        }
    }
    result
}

/// Stores the reports not stored before, in one transaction.
pub(super) async fn ingest_on(
    conn: &mut SqliteConnection,
    batch: &[Report],
    received_at: i64,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut tx = conn.begin().await?;
    let fresh = insert_report_keys(&mut tx, batch, received_at).await?;
    let (acc, outcomes) = accumulate(batch, fresh, received_at);
    batch::write(acc, &mut tx).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// Inserts a release (and its first batch); returns its id.
pub(super) async fn create_release_on(
    conn: &mut SqliteConnection,
    new: &NewRelease,
) -> Result<i64, StoreError> {
    let mut tx = conn.begin().await?;
    let reference = to_json(&new.reference_hosts)?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO releases (app, version, state, created_at, started_at, \
             reference_hosts, decision, reasons) VALUES (?, ?, 'watching', ?, ?, ?, 'pass', '[]') \
             RETURNING id",
    )
    .bind(&new.app)
    .bind(&new.version)
    .bind(new.created_at)
    .bind(new.started_at)
    .bind(reference)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(batch) = &new.first_batch {
        insert_batch(&mut tx, id, batch).await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// Writes a release's new state, its decision change, batch, app memory and feedback.
pub(super) async fn update_release_on(
    conn: &mut SqliteConnection,
    update: &ReleaseUpdate<'_>,
) -> Result<(), StoreError> {
    let r = update.release;
    let mut tx = conn.begin().await?;
    let previous: Option<String> = sqlx::query_scalar("SELECT decision FROM releases WHERE id = ?")
        .bind(r.id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(previous) = previous.filter(|p| p != r.decision.as_str()) {
        sqlx::query(
            "INSERT INTO release_decisions (release_id, at, decision, previous, reason) \
                 VALUES (?, ?, ?, ?, ?)",
        )
        .bind(r.id)
        .bind(r.decided_at.unwrap_or_else(crate::clock::unix_now))
        .bind(r.decision.as_str())
        .bind(previous)
        .bind(r.reasons.first().map(Reason::line))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE releases SET state = ?, outcome = ?, finished_at = ?, reference_hosts = ?, \
             judge = ?, last_round = ?, decision = ?, decided_at = ?, reasons = ? WHERE id = ?",
    )
    .bind(r.state.as_str())
    .bind(r.outcome.map(crate::store::Outcome::as_str))
    .bind(r.finished_at)
    .bind(to_json(&r.reference_hosts)?)
    .bind(r.judge.as_deref())
    .bind(r.last_round)
    .bind(r.decision.as_str())
    .bind(r.decided_at)
    .bind(to_json(&r.reasons)?)
    .bind(r.id)
    .execute(&mut *tx)
    .await?;
    if let Some(batch) = update.new_batch {
        insert_batch(&mut tx, r.id, batch).await?;
    }
    if let Some(memory) = update.app_memory {
        sqlx::query(
            "INSERT INTO app_memory (app, memory, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (app) DO UPDATE SET memory = excluded.memory, \
                 updated_at = excluded.updated_at",
        )
        .bind(&r.app)
        .bind(memory)
        .bind(crate::clock::unix_now())
        .execute(&mut *tx)
        .await?;
    }
    if let Some(feedback) = update.feedback {
        sqlx::query("INSERT INTO feedback (release_id, label, note, at) VALUES (?, ?, ?, ?)")
            .bind(r.id)
            .bind(enum_text(&feedback.label)?)
            .bind(feedback.note.as_deref())
            .bind(feedback.at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
