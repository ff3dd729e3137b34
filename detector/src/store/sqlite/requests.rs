//! The requests of an app on a host in a minute or an hour (`app_minutes.requests`,
//! `app_hours.requests`): one compact JSON array per row,
//! `[count, 1xx, 2xx, 3xx, 4xx, 5xx, malformed, latency_sum_ms, [[bucket, n], ...]]`,
//! merged in Rust when a second report of the same minute arrives and when minutes are
//! rolled up into their hour (counts added, histograms added bucket by bucket). `NULL`
//! where the host has no access log for the app: *missing*, not zero.

use std::collections::{BTreeMap, HashMap};

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::batch::MAX_PARAMS;
use crate::judge::{Latency, Requests, StatusClasses};
use crate::store::StoreError;

type Stored = (u64, u64, u64, u64, u64, u64, u64, f64, Vec<(i32, u64)>);

/// The stored form of `r`.
pub(super) fn encode(r: &Requests) -> String {
    let s = &r.status;
    let stored: Stored = (
        r.count,
        s.informational,
        s.success,
        s.redirection,
        s.client_error,
        s.server_error,
        r.malformed,
        r.latency_ms.sum,
        r.latency_ms.buckets.iter().map(|(&i, &c)| (i, c)).collect(),
    );
    serde_json::to_string(&stored).unwrap_or_default()
}

/// Reads a stored value; `None` for `NULL` or a value this version cannot read.
pub(super) fn decode(text: Option<&str>) -> Option<Requests> {
    let (count, s1, s2, s3, s4, s5, malformed, sum, buckets): Stored =
        serde_json::from_str(text?).ok()?;
    Some(Requests {
        count,
        status: StatusClasses {
            informational: s1,
            success: s2,
            redirection: s3,
            client_error: s4,
            server_error: s5,
        },
        malformed,
        latency_ms: Latency {
            sum,
            buckets: buckets.into_iter().collect::<BTreeMap<_, _>>(),
        },
    })
}

/// Adds to `rows` (keyed by app, host and time) what `table` already holds for them, in
/// `tx`, so that writing them back keeps both.
pub(super) async fn merge_stored(
    tx: &mut Transaction<'_, Sqlite>,
    table: &str,
    time: &str,
    rows: &mut HashMap<(&str, &str, i64), Requests>,
) -> Result<(), StoreError> {
    let keys: Vec<(&str, &str, i64)> = rows.keys().copied().collect();
    let mut stored: HashMap<(String, String, i64), Requests> = HashMap::new();
    for chunk in keys.chunks(MAX_PARAMS / 3) {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT app, host, {time}, requests FROM {table} WHERE requests IS NOT NULL \
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
            if let Some(old) = decode(row.try_get(3)?) {
                stored.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?), old);
            }
        }
    }
    if !stored.is_empty() {
        for ((app, host, t), new) in rows.iter_mut() {
            if let Some(old) = stored.remove(&((*app).to_owned(), (*host).to_owned(), *t)) {
                new.merge(&old);
            }
        }
    }
    Ok(())
}

/// Rolls the requests of `app` on `host` in the minutes before `end` into their hours'
/// rows of `app_hours` (which the caller's roll-up has created), in `tx`.
pub(super) async fn roll_up(
    tx: &mut Transaction<'_, Sqlite>,
    app: &str,
    host: &str,
    end: i64,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT minute, requests FROM app_minutes WHERE app = ? AND host = ? AND minute < ? \
         AND requests IS NOT NULL",
    )
    .bind(app)
    .bind(host)
    .bind(end)
    .fetch_all(&mut **tx)
    .await?;
    let mut hours: HashMap<(&str, &str, i64), Requests> = HashMap::new();
    for row in rows {
        let minute: i64 = row.try_get(0)?;
        if let Some(r) = decode(row.try_get(1)?) {
            hours
                .entry((app, host, minute.div_euclid(3600) * 3600))
                .or_default()
                .merge(&r);
        }
    }
    if hours.is_empty() {
        return Ok(());
    }
    merge_stored(tx, "app_hours", "hour", &mut hours).await?;
    for ((app, host, hour), r) in hours {
        sqlx::query("UPDATE app_hours SET requests = ? WHERE app = ? AND host = ? AND hour = ?")
            .bind(encode(&r))
            .bind(app)
            .bind(host)
            .bind(hour)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_reads_back() {
        let mut r = Requests {
            count: 12,
            malformed: 1,
            ..Requests::default()
        };
        r.status.success = 10;
        r.status.server_error = 2;
        r.latency_ms.sum = 123.5;
        r.latency_ms.buckets.insert(-3, 4);
        r.latency_ms.buckets.insert(27, 8);
        assert_eq!(decode(Some(&encode(&r))), Some(r));
        assert_eq!(decode(Some("{not json")), None);
        assert_eq!(decode(None), None);
    }
}
