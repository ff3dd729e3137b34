//! Reading an app's fingerprints back, for either database, in bounded pieces: the most
//! recently seen (an index on `(app, last_seen)`), some by id (the primary key), and the
//! stack shapes of some class chains known before a time (an index on `(app, class,
//! causes)`). None of them reads all of an app's fingerprints, however many it has.

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::fp;
use super::rows::FINGERPRINT_COLUMNS;
use crate::store::ExceptionQuery;

/// Ids asked for in one statement (well under either database's bound on parameters).
pub(in crate::store) const IDS_PER_QUERY: usize = 500;

/// Class chains asked for in one statement (two parameters each).
pub(in crate::store) const CHAINS_PER_QUERY: usize = 250;

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The fingerprints of `app` most recently seen first, as `query` bounds them.
pub(in crate::store) fn recent<DB: Database>(app: &str, query: &ExceptionQuery) -> QueryBuilder<DB>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(format!(
        "SELECT {FINGERPRINT_COLUMNS} FROM fingerprints WHERE app = "
    ));
    q.push_bind(app.to_string());
    if let Some(since) = query.since {
        q.push(" AND last_seen >= ").push_bind(since);
        if query.new_or_dangerous {
            q.push(" AND (dangerous OR first_seen >= ")
                .push_bind(since)
                .push(")");
        }
    }
    q.push(" ORDER BY ");
    if query.new_or_dangerous {
        q.push("dangerous DESC, ");
    }
    q.push("coalesce(last_seen, 0) DESC, fingerprint LIMIT ")
        .push_bind(limit_of(query.limit));
    q
}

/// The fingerprints of `app` among `ids` (at most [`IDS_PER_QUERY`] of them).
pub(in crate::store) fn by_id<DB: Database>(app: &str, ids: &[u64]) -> QueryBuilder<DB>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(format!(
        "SELECT {FINGERPRINT_COLUMNS} FROM fingerprints WHERE app = "
    ));
    q.push_bind(app.to_string()).push(" AND fingerprint IN (");
    let mut list = q.separated(", ");
    for &id in ids {
        list.push_bind(fp(id));
    }
    q.push(")");
    q
}

/// One fingerprint of `app` per stack shape of `chains` (at most [`CHAINS_PER_QUERY`])
/// first seen before `before`, the most recently seen shapes first, at most `limit`.
/// Causes and frames are compared as stored: the JSON text every writer makes of them.
pub(in crate::store) fn shapes_before<DB: Database>(
    app: &str,
    chains: &[(String, Vec<String>)],
    before: i64,
    limit: usize,
) -> QueryBuilder<DB>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(
        "SELECT min(fingerprint) AS fingerprint, class, causes, '' AS message, frames, \
         FALSE AS dangerous, '' AS sample, min(first_seen) AS first_seen, \
         max(last_seen) AS last_seen, CAST(0 AS BIGINT) AS count FROM fingerprints WHERE app = ",
    );
    q.push_bind(app.to_string())
        .push(" AND first_seen < ")
        .push_bind(before)
        .push(" AND (class, causes) IN (VALUES ");
    let mut list = q.separated(", ");
    for (class, causes) in chains {
        list.push("(")
            .push_bind_unseparated(class.clone())
            .push_unseparated(", ")
            .push_bind_unseparated(serde_json::to_string(causes).unwrap_or_default())
            .push_unseparated(")");
    }
    q.push(
        ") GROUP BY class, causes, frames \
         ORDER BY max(coalesce(last_seen, 0)) DESC, min(fingerprint) LIMIT ",
    )
    .push_bind(limit_of(limit));
    q
}
