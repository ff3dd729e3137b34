//! The shared store's schema: the versioned migrations in `migrations/postgres`, embedded
//! in the binary and applied when a detector connects (under the migrator's advisory lock,
//! so detectors starting together migrate once). The versions applied are kept in
//! `_sqlx_migrations`; one this detector does not know was applied by a newer Vigil, and
//! the database is refused rather than misread.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

use crate::store::StoreError;

/// The migrations, in version order.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The newest schema version this detector knows.
pub(super) fn supported_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Applies the migrations `pool`'s database lacks.
///
/// # Errors
/// [`StoreError::SchemaTooNew`] for a database migrated by a newer Vigil, or the
/// database's error (a migration that failed or was changed after it was applied among
/// them).
pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    match MIGRATOR.run(pool).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(missing)) => {
            let newest: Option<i64> =
                sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
                    .fetch_one(pool)
                    .await
                    .unwrap_or(None);
            Err(StoreError::SchemaTooNew {
                found: newest.unwrap_or(missing).max(missing),
                supported: supported_version(),
            })
        }
        Err(e) => Err(StoreError::Database(sqlx::Error::Migrate(Box::new(e)))),
    }
}
