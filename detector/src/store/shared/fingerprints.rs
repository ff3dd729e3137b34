//! Reading an app's fingerprints back, for either database, in bounded pieces: the most
//! recently seen (at most a limit of them, the app's rows walked by the primary key), some
//! by id (the primary key), and the known members of some class chains and stack shapes
//! (an index on `(app, substr(class, 1, 200))`). None of them holds all of an app's
//! fingerprints in memory, however many it has.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Type};

use super::fp;
use super::rows::{FINGERPRINT_COLUMNS, FingerprintDbRow};
use crate::store::{ExceptionQuery, FingerprintRow, Shape, StoreError};

/// Ids asked for in one statement (well under either database's bound on parameters).
pub(in crate::store) const IDS_PER_QUERY: usize = 500;

/// Class chains and stack shapes asked about in one statement (up to six parameters
/// each, within SQLite's bound of 32,766).
pub(in crate::store) const SHAPES_PER_QUERY: usize = 200;

/// The columns [`FingerprintDbRow`] reads, without the sample trace.
const LEAN_SELECT: &str = "SELECT fingerprint, class, causes, message, frames, dangerous, \
     '' AS sample, first_seen, last_seen, count FROM fingerprints WHERE app = ";

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
        .push_bind(limit_of(query.limit))
        .push(" OFFSET ")
        .push_bind(limit_of(query.offset));
    q
}

/// The fingerprints of `app` among `ids` (at most [`IDS_PER_QUERY`] of them), without
/// their samples unless `samples`.
pub(in crate::store) fn by_id<DB: Database>(
    app: &str,
    ids: &[u64],
    samples: bool,
) -> QueryBuilder<DB>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(if samples {
        format!("SELECT {FINGERPRINT_COLUMNS} FROM fingerprints WHERE app = ")
    } else {
        LEAN_SELECT.to_string()
    });
    q.push_bind(app.to_string()).push(" AND fingerprint IN (");
    let mut list = q.separated(", ");
    for &id in ids {
        list.push_bind(fp(id));
    }
    q.push(")");
    q
}

/// Characters of a class an index entry holds: the class chain index is on
/// `(app, substr(class, 1, CLASS_PREFIX))`, which keeps every entry within PostgreSQL's
/// bound on an index row (about 2.7 KB) however long a class an agent sends.
const CLASS_PREFIX: usize = 200;

/// The known members asked about by [`known_members`]: for a class chain, its smallest
/// fingerprint (as stored: a signed integer) and its smallest frameless one; for a stack
/// shape, its smallest one.
fn push_groups<DB: Database>(
    q: &mut QueryBuilder<DB>,
    app: &str,
    before: i64,
    asked: &[Shape<'_>],
    hint: &str,
) where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let json = |items: &[String]| serde_json::to_string(items).unwrap_or_default();
    let mut first = true;
    for frameless in [false, true] {
        let (chains, shapes): (Vec<&Shape<'_>>, Vec<&Shape<'_>>) =
            asked.iter().partition(|s| s.2.is_none());
        for (list, by_frames) in [(chains, false), (shapes, true)] {
            if list.is_empty() || (frameless && by_frames) {
                continue;
            }
            if !first {
                q.push(" UNION ");
            }
            first = false;
            q.push(format!(
                "SELECT min(fingerprint) FROM fingerprints{hint} WHERE app = "
            ))
            .push_bind(app.to_string())
            .push(" AND first_seen < ")
            .push_bind(before);
            if frameless {
                q.push(" AND frames = '[]'");
            }
            // The prefix is taken by the database, as the index takes it.
            q.push(format!(" AND substr(class, 1, {CLASS_PREFIX}) IN ("));
            let mut prefixes = q.separated(", ");
            for (class, _, _) in &list {
                prefixes
                    .push("substr(")
                    .push_bind_unseparated(class.to_string())
                    .push_unseparated(format!(", 1, {CLASS_PREFIX})"));
            }
            q.push(")");
            if by_frames {
                q.push(" AND (class, causes, frames) IN (VALUES ");
            } else {
                q.push(" AND (class, causes) IN (VALUES ");
            }
            let mut values = q.separated(", ");
            for (class, causes, frames) in &list {
                values
                    .push("(")
                    .push_bind_unseparated(class.to_string())
                    .push_unseparated(", ")
                    .push_bind_unseparated(json(causes));
                if let Some(frames) = frames {
                    values
                        .push_unseparated(", ")
                        .push_bind_unseparated(json(frames));
                }
                values.push_unseparated(")");
            }
            q.push(if by_frames {
                ") GROUP BY class, causes, frames"
            } else {
                ") GROUP BY class, causes"
            });
        }
    }
}

/// Of the class chains and stack shapes `asked` (at most [`SHAPES_PER_QUERY`]): the known
/// members of `app` (first seen before `before`) the judge relates an unknown fingerprint
/// to — for each chain its smallest fingerprint and its smallest frameless one, for each
/// shape its smallest one — without message or sample. Exact, and as many rows as asked
/// at most, however many fingerprints the chains have.
///
/// `hint` follows the table's name in the subqueries: SQLite's `INDEXED BY`, since without
/// statistics (Vigil never runs `ANALYZE`) SQLite prefers walking the app's rows by the
/// primary key to the class index.
pub(in crate::store) fn known_members<DB: Database>(
    app: &str,
    before: i64,
    asked: &[Shape<'_>],
    hint: &str,
) -> QueryBuilder<DB>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(LEAN_SELECT);
    q.push_bind(app.to_string()).push(" AND fingerprint IN (");
    push_groups(&mut q, app, before, asked, hint);
    q.push(")");
    q
}

/// The rows of `queries`, run one after the other on `pool`.
async fn fetch<DB: Database>(
    pool: &Pool<DB>,
    queries: impl IntoIterator<Item = QueryBuilder<DB>>,
) -> Result<Vec<FingerprintRow>, StoreError>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'r> FingerprintDbRow: FromRow<'r, DB::Row>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> DB::Arguments: IntoArguments<DB>,
{
    let mut out = Vec::new();
    for mut q in queries {
        let rows: Vec<FingerprintDbRow> = q.build_query_as().fetch_all(pool).await?;
        out.extend(rows.into_iter().map(FingerprintRow::from));
    }
    Ok(out)
}

/// [`recent`] from `pool`.
pub(in crate::store) async fn read_recent<DB: Database>(
    pool: &Pool<DB>,
    app: &str,
    query: &ExceptionQuery,
) -> Result<Vec<FingerprintRow>, StoreError>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'r> FingerprintDbRow: FromRow<'r, DB::Row>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> DB::Arguments: IntoArguments<DB>,
{
    fetch(pool, [recent::<DB>(app, query)]).await
}

/// The fingerprints of `app` among `ids`, read from `pool` in pieces of [`IDS_PER_QUERY`].
pub(in crate::store) async fn read_by_id<DB: Database>(
    pool: &Pool<DB>,
    app: &str,
    ids: &[u64],
    samples: bool,
) -> Result<Vec<FingerprintRow>, StoreError>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'r> FingerprintDbRow: FromRow<'r, DB::Row>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> DB::Arguments: IntoArguments<DB>,
{
    // Built before the first await: a lazy iterator over borrowed chunks would make the
    // future's lifetimes too particular for the store's `Send` futures.
    let queries: Vec<QueryBuilder<DB>> = ids
        .chunks(IDS_PER_QUERY)
        .map(|chunk| by_id::<DB>(app, chunk, samples))
        .collect();
    fetch(pool, queries).await
}

/// [`known_members`] of every chain and shape of `asked`, read from `pool` in pieces of
/// [`SHAPES_PER_QUERY`].
pub(in crate::store) async fn read_known_members<DB: Database>(
    pool: &Pool<DB>,
    app: &str,
    before: i64,
    asked: &[Shape<'_>],
    hint: &str,
) -> Result<Vec<FingerprintRow>, StoreError>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'r> FingerprintDbRow: FromRow<'r, DB::Row>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> DB::Arguments: IntoArguments<DB>,
{
    let queries: Vec<QueryBuilder<DB>> = asked
        .chunks(SHAPES_PER_QUERY)
        .map(|chunk| known_members::<DB>(app, before, chunk, hint))
        .collect();
    let mut out = fetch(pool, queries).await?;
    // A member of chains asked in two pieces is found twice.
    out.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    out.dedup_by(|a, b| a.fingerprint == b.fingerprint);
    Ok(out)
}
