//! The shared store's release transactions, and reading a release with its batches and
//! feedback. A release's changes lock its row first (`FOR UPDATE`), so two detectors
//! changing one release take turns: each logs the decision change from the one before,
//! and numbers its batch after the last.

use sqlx::{PgPool, Postgres, Transaction};

use crate::judge::{Batch, Reason};
use crate::store::shared::rows::{BatchRow, FeedbackRow, ReleaseRow};
use crate::store::shared::{enum_text, to_json};
use crate::store::{NewRelease, Outcome, ReleaseUpdate, StoreError, StoredRelease};

/// `row` with its batches and feedback.
pub(super) async fn release_from_row(
    pool: &PgPool,
    row: ReleaseRow,
) -> Result<StoredRelease, StoreError> {
    let batches: Vec<BatchRow> =
        sqlx::query_as("SELECT at, hosts FROM release_batches WHERE release_id = $1 ORDER BY seq")
            .bind(row.id)
            .fetch_all(pool)
            .await?;
    let feedback: Vec<FeedbackRow> =
        sqlx::query_as("SELECT label, note, at FROM feedback WHERE release_id = $1 ORDER BY id")
            .bind(row.id)
            .fetch_all(pool)
            .await?;
    row.into_release(batches, feedback)
}

/// Appends `batch` to release `release_id`, whose row `tx` has locked.
async fn insert_batch(
    tx: &mut Transaction<'_, Postgres>,
    release_id: i64,
    batch: &Batch,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO release_batches (release_id, seq, at, hosts) VALUES ($1, \
         (SELECT coalesce(max(seq), 0) + 1 FROM release_batches WHERE release_id = $1), $2, $3)",
    )
    .bind(release_id)
    .bind(batch.at)
    .bind(to_json(&batch.hosts)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts a release (and its first batch); returns its id.
pub(super) async fn create_release(pool: &PgPool, new: &NewRelease) -> Result<i64, StoreError> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO releases (app, version, state, created_at, started_at, \
         reference_hosts, decision, reasons) \
         VALUES ($1, $2, 'watching', $3, $4, $5, 'pass', '[]') RETURNING id",
    )
    .bind(&new.app)
    .bind(&new.version)
    .bind(new.created_at)
    .bind(new.started_at)
    .bind(to_json(&new.reference_hosts)?)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(batch) = &new.first_batch {
        insert_batch(&mut tx, id, batch).await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// Writes a release's new state, its decision change (logged, and queued for the webhooks
/// when given), batch, app memory and feedback.
pub(super) async fn update_release(
    pool: &PgPool,
    update: &ReleaseUpdate<'_>,
) -> Result<(), StoreError> {
    let r = update.release;
    let mut tx = pool.begin().await?;
    let previous: Option<String> =
        sqlx::query_scalar("SELECT decision FROM releases WHERE id = $1 FOR UPDATE")
            .bind(r.id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(previous) = previous.filter(|p| p != r.decision.as_str()) {
        sqlx::query(
            "INSERT INTO release_decisions (release_id, at, decision, previous, reason) \
             VALUES ($1, $2, $3, $4, $5)",
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
        "UPDATE releases SET state = $1, outcome = $2, finished_at = $3, reference_hosts = $4, \
         judge = $5, last_round = $6, decision = $7, decided_at = $8, reasons = $9 \
         WHERE id = $10",
    )
    .bind(r.state.as_str())
    .bind(r.outcome.map(Outcome::as_str))
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
            "INSERT INTO app_memory (app, memory, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (app) DO UPDATE SET memory = excluded.memory, \
             updated_at = excluded.updated_at",
        )
        .bind(&r.app)
        .bind(memory)
        .bind(crate::clock::unix_now())
        .execute(&mut *tx)
        .await?;
    }
    if let Some(body) = update.webhook {
        sqlx::query("INSERT INTO webhook_queue (release_id, body, queued_at) VALUES ($1, $2, $3)")
            .bind(r.id)
            .bind(body)
            .bind(crate::clock::unix_now())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(feedback) = update.feedback {
        sqlx::query("INSERT INTO feedback (release_id, label, note, at) VALUES ($1, $2, $3, $4)")
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
