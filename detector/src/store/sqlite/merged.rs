//! The SQLite side of the values merged in Rust (see `shared::merged`): reading what a
//! table holds for a batch's rows, and rolling minutes' values into their hours.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::batch::MAX_PARAMS;
use crate::store::StoreError;
use crate::store::shared::merged::{Merged, absorb_stored, fold_into_hours};

/// Adds to `rows` (keyed by app, host and time; the newer values) what `table` already
/// holds for them, in `tx`, so that writing them back keeps both.
pub(super) async fn merge_stored<T: Merged>(
    tx: &mut Transaction<'_, Sqlite>,
    table: &str,
    time: &str,
    rows: &mut HashMap<(&str, &str, i64), T>,
    across_minutes: bool,
) -> Result<(), StoreError> {
    let column = T::COLUMN;
    let keys: Vec<(&str, &str, i64)> = rows.keys().copied().collect();
    let mut stored: HashMap<(String, String, i64), T> = HashMap::new();
    for chunk in keys.chunks(MAX_PARAMS / 3) {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT app, host, {time}, {column} FROM {table} WHERE {column} IS NOT NULL \
             AND (app, host, {time}) IN ("
        ));
        let mut list = q.separated(", ");
        for (app, host, t) in chunk {
            list.push("(")
                .push_bind_unseparated(*app)
                .push_unseparated(", ")
                .push_bind_unseparated(*host)
                .push_unseparated(", ")
                .push_bind_unseparated(*t)
                .push_unseparated(")");
        }
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            if let Some(old) = T::decode(row.try_get(3)?) {
                stored.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?), old);
            }
        }
    }
    absorb_stored(rows, stored, across_minutes);
    Ok(())
}

/// Rolls the values of `app` on `host` in the minutes before `end` into their hours' rows
/// of `app_hours` (which the caller's roll-up has created), in `tx`.
pub(super) async fn roll_up<T: Merged>(
    tx: &mut Transaction<'_, Sqlite>,
    app: &str,
    host: &str,
    end: i64,
) -> Result<(), StoreError> {
    let column = T::COLUMN;
    let minutes: Vec<(i64, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT minute, {column} FROM app_minutes WHERE app = ? AND host = ? AND minute < ? \
         AND {column} IS NOT NULL ORDER BY minute"
    )))
    .bind(app)
    .bind(host)
    .bind(end)
    .fetch_all(&mut **tx)
    .await?;
    let mut hours: HashMap<(&str, &str, i64), T> = fold_into_hours(app, host, minutes);
    if hours.is_empty() {
        return Ok(());
    }
    merge_stored(tx, "app_hours", "hour", &mut hours, true).await?;
    for ((app, host, hour), value) in hours {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE app_hours SET {column} = ? WHERE app = ? AND host = ? AND hour = ?"
        )))
        .bind(value.encode())
        .bind(app)
        .bind(host)
        .bind(hour)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
