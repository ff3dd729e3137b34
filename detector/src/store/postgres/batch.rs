//! One group commit on the shared store, in one transaction: the reports' keys first
//! ([`insert_report_keys`]: a key another detector is committing waits for its commit, so
//! a report is stored once whichever detector it reached), then the new reports' sums,
//! added up in memory by the shared `BatchAccumulator`, written table by table in the
//! order of their sorted keys ([`write`]).

use std::collections::{HashMap, HashSet};

use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};
use vigil_proto::v1::Report;

use super::{ALERTS_LOCK, LOCK_SPACE, saturating_sum};
use crate::store::shared::accumulator::{BatchAccumulator, accumulate, fresh_reports, report_kind};
use crate::store::shared::host_metrics::{StoredHostMetrics, decode_metrics};
use crate::store::shared::merged::{Merged, absorb_stored};
use crate::store::shared::{count, fp};
use crate::store::{IngestOutcome, StoreError};

/// Parameters bound per statement stay under the server's limit of 65535.
pub(super) const MAX_PARAMS: usize = 65_000;

/// Stores the reports of `batch` not stored before, in one transaction.
pub(super) async fn ingest(
    pool: &PgPool,
    batch: &[Report],
    received_at: i64,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut tx = pool.begin().await?;
    let fresh = insert_report_keys(&mut tx, batch, received_at).await?;
    let (acc, outcomes) = accumulate(batch, fresh, received_at);
    write(acc, &mut tx).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// Records each report's `(instance, seq)`, keys in sorted order; returns, per report,
/// whether it is new (the first of its key in the batch and not stored before).
async fn insert_report_keys(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[Report],
    received_at: i64,
) -> Result<Vec<bool>, StoreError> {
    // The first report of a key gives its row, as in the embedded store.
    let mut first: Vec<(&str, i64, &Report)> = Vec::with_capacity(batch.len());
    let mut seen: HashSet<(&str, i64)> = HashSet::with_capacity(batch.len());
    for report in batch {
        let key = (report.instance.as_str(), count(report.seq));
        if seen.insert(key) {
            first.push((key.0, key.1, report));
        }
    }
    first.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut inserted: HashSet<(String, i64)> = HashSet::with_capacity(first.len());
    for chunk in first.chunks(MAX_PARAMS / 5) {
        let mut query = QueryBuilder::<Postgres>::new(
            "INSERT INTO reports (instance, seq, host, kind, received_at) ",
        );
        query.push_values(chunk, |mut row, (instance, seq, report)| {
            row.push_bind(*instance)
                .push_bind(*seq)
                .push_bind(report.host.as_str())
                .push_bind(report_kind(report))
                .push_bind(received_at);
        });
        query.push(" ON CONFLICT (instance, seq) DO NOTHING RETURNING instance, seq");
        for row in query.build().fetch_all(&mut **tx).await? {
            inserted.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(fresh_reports(batch, inserted))
}

/// `rows` sorted by key: the order in which every detector locks them.
fn sorted<K: Ord + Copy, V>(rows: HashMap<K, V>) -> Vec<(K, V)> {
    let mut rows: Vec<(K, V)> = rows.into_iter().collect();
    rows.sort_unstable_by_key(|(k, _)| *k);
    rows
}

/// The stored values of one row's merged columns, as an upsert returned them.
type StoredMerged = HashMap<(String, String, i64), (Option<String>, Option<String>)>;

/// Writes the sums of `acc` (a batch's new reports) in `tx`, added to what is stored.
///
/// Tables are written in one order (app minutes, hosts, exception minutes, fingerprints,
/// host minutes, alerts) and each table's rows in the order of their sorted keys, one
/// statement per table locking them (`ON CONFLICT DO UPDATE` locks a row it adds to).
pub(super) async fn write(
    mut acc: BatchAccumulator<'_>,
    tx: &mut Transaction<'_, Postgres>,
) -> Result<(), StoreError> {
    // Counters added by the server; the rows' stored requests and scraped values read
    // back from the rows the same statement locked.
    let (mut with_requests, mut with_scraped) = acc.take_merged();
    let app_minutes = sorted(std::mem::take(&mut acc.app_minutes));
    let mut stored: StoredMerged = HashMap::new();
    for chunk in app_minutes.chunks(MAX_PARAMS / 11) {
        let mut q = QueryBuilder::<Postgres>::new(
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
        q.push(format!(
            " ON CONFLICT (app, host, minute) DO UPDATE SET \
             process_cpu_pct = coalesce(excluded.process_cpu_pct, app_minutes.process_cpu_pct), \
             process_rss_bytes = coalesce(excluded.process_rss_bytes, \
               app_minutes.process_rss_bytes), \
             {}, {}, {}, {}, {}, {} RETURNING app, host, minute, requests, scraped",
            saturating_sum("app_minutes", "lines"),
            saturating_sum("app_minutes", "error_lines"),
            saturating_sum("app_minutes", "warn_lines"),
            saturating_sum("app_minutes", "events"),
            saturating_sum("app_minutes", "truncated_lines"),
            saturating_sum("app_minutes", "reports"),
        ));
        for row in q.build().fetch_all(&mut **tx).await? {
            let requests: Option<String> = row.try_get(3)?;
            let scraped: Option<String> = row.try_get(4)?;
            if requests.is_some() || scraped.is_some() {
                stored.insert(
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                    (requests, scraped),
                );
            }
        }
    }
    write_merged(tx, &mut with_requests, &mut with_scraped, stored).await?;

    let hosts = sorted(std::mem::take(&mut acc.hosts));
    for chunk in hosts.chunks(MAX_PARAMS / 4) {
        let mut q = QueryBuilder::<Postgres>::new(
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
             last_minute = GREATEST(hosts.last_minute, excluded.last_minute), \
             agent_version = excluded.agent_version",
        );
        q.build().execute(&mut **tx).await?;
    }

    let exceptions = sorted(std::mem::take(&mut acc.exceptions));
    for chunk in exceptions.chunks(MAX_PARAMS / 5) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO exception_minutes (app, host, minute, fingerprint, count) ",
        );
        q.push_values(chunk, |mut row, ((app, host, minute, f), n)| {
            row.push_bind(*app)
                .push_bind(*host)
                .push_bind(*minute)
                .push_bind(fp(*f))
                .push_bind(count(*n));
        });
        q.push(format!(
            " ON CONFLICT (app, host, minute, fingerprint) DO UPDATE SET {}",
            saturating_sum("exception_minutes", "count")
        ));
        q.build().execute(&mut **tx).await?;
    }

    write_fingerprints(tx, &acc).await?;
    write_host_metrics(tx, std::mem::take(&mut acc.host_metrics)).await?;

    if !acc.alerts.is_empty() {
        // Alerts take their ids, and commit, one batch after the other: a reader that has
        // seen an alert's id has seen every smaller one.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_SPACE)
            .bind(ALERTS_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    for chunk in acc.alerts.chunks(MAX_PARAMS / 6) {
        let mut q = QueryBuilder::<Postgres>::new(
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
    Ok(())
}

/// Adds the stored requests and scraped values (`stored`, of rows this transaction has
/// locked) to the batch's, and writes them back.
async fn write_merged(
    tx: &mut Transaction<'_, Postgres>,
    with_requests: &mut HashMap<(&str, &str, i64), crate::judge::Requests>,
    with_scraped: &mut HashMap<(&str, &str, i64), crate::store::shared::scraped::Scraped>,
    stored: StoredMerged,
) -> Result<(), StoreError> {
    if with_requests.is_empty() && with_scraped.is_empty() {
        return Ok(());
    }
    let mut stored_requests = HashMap::new();
    let mut stored_scraped = HashMap::new();
    for (key, (requests, scraped)) in stored {
        if let Some(r) = Merged::decode(requests.as_deref()) {
            stored_requests.insert(key.clone(), r);
        }
        if let Some(s) = Merged::decode(scraped.as_deref()) {
            stored_scraped.insert(key, s);
        }
    }
    absorb_stored(with_requests, stored_requests, false);
    absorb_stored(with_scraped, stored_scraped, false);
    let mut keys: Vec<(&str, &str, i64)> = with_requests
        .keys()
        .chain(with_scraped.keys())
        .copied()
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let rows: Vec<_> = keys
        .into_iter()
        .map(|k| {
            (
                k,
                with_requests.get(&k).map(Merged::encode),
                with_scraped.get(&k).map(Merged::encode),
            )
        })
        .collect();
    for chunk in rows.chunks(MAX_PARAMS / 5) {
        let mut q = QueryBuilder::<Postgres>::new(
            "UPDATE app_minutes AS m SET requests = coalesce(v.requests, m.requests), \
             scraped = coalesce(v.scraped, m.scraped) FROM (",
        );
        q.push_values(
            chunk,
            |mut row, ((app, host, minute), requests, scraped)| {
                row.push_bind(*app)
                    .push_bind(*host)
                    .push_bind(*minute)
                    .push_bind(requests.as_deref())
                    .push_bind(scraped.as_deref());
            },
        );
        q.push(
            ") AS v (app, host, minute, requests, scraped) \
             WHERE m.app = v.app AND m.host = v.host AND m.minute = v.minute",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// The fingerprints the batch defined or counted: every row locked first, in key order,
/// by one statement (adding the rows missing, with the defaults the embedded store's first
/// insert leaves), then the definitions and the counts written to them.
async fn write_fingerprints(
    tx: &mut Transaction<'_, Postgres>,
    acc: &BatchAccumulator<'_>,
) -> Result<(), StoreError> {
    let mut keys: Vec<(&str, u64)> = acc
        .definitions
        .keys()
        .chain(acc.fingerprints.keys())
        .copied()
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    for chunk in keys.chunks(MAX_PARAMS / 2) {
        let mut q = QueryBuilder::<Postgres>::new("INSERT INTO fingerprints (app, fingerprint) ");
        q.push_values(chunk, |mut row, (app, f)| {
            row.push_bind(*app).push_bind(fp(*f));
        });
        q.push(" ON CONFLICT (app, fingerprint) DO UPDATE SET count = fingerprints.count");
        q.build().execute(&mut **tx).await?;
    }
    let mut definitions: Vec<_> = acc.definitions.iter().collect();
    definitions.sort_unstable_by_key(|(k, _)| **k);
    for chunk in definitions.chunks(MAX_PARAMS / 8) {
        let mut q = QueryBuilder::<Postgres>::new(
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
    let mut fingerprints: Vec<_> = acc.fingerprints.iter().collect();
    fingerprints.sort_unstable_by_key(|(k, _)| **k);
    for chunk in fingerprints.chunks(MAX_PARAMS / 5) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO fingerprints (app, fingerprint, first_seen, last_seen, count) ",
        );
        q.push_values(chunk, |mut row, ((app, f), s)| {
            row.push_bind(*app)
                .push_bind(fp(*f))
                .push_bind(s.first_seen)
                .push_bind(s.last_seen)
                .push_bind(count(s.count));
        });
        q.push(format!(
            " ON CONFLICT (app, fingerprint) DO UPDATE SET \
             first_seen = LEAST(coalesce(fingerprints.first_seen, excluded.first_seen), \
               excluded.first_seen), \
             last_seen = GREATEST(coalesce(fingerprints.last_seen, excluded.last_seen), \
               excluded.last_seen), {}",
            saturating_sum("fingerprints", "count")
        ));
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Adds the batch's host metrics to what is stored for the same host and minute: the rows
/// locked in key order by one statement (a row missing is added with no metrics), the
/// stored metrics it returns merged with the batch's, the rows written back.
async fn write_host_metrics(
    tx: &mut Transaction<'_, Postgres>,
    metrics: HashMap<(&str, i64), StoredHostMetrics>,
) -> Result<(), StoreError> {
    let mut rows = sorted(metrics);
    if rows.is_empty() {
        return Ok(());
    }
    let mut stored: HashMap<(String, i64), StoredHostMetrics> = HashMap::new();
    for chunk in rows.chunks(MAX_PARAMS / 2) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO host_minutes (host, minute, metrics, samples, partial) ",
        );
        q.push_values(chunk, |mut row, ((host, minute), _)| {
            row.push_bind(*host)
                .push_bind(*minute)
                .push("NULL, 0, FALSE");
        });
        q.push(
            " ON CONFLICT (host, minute) DO UPDATE SET samples = host_minutes.samples \
             RETURNING host, minute, metrics",
        );
        for row in q.build().fetch_all(&mut **tx).await? {
            if let Some(text) = row.try_get::<Option<String>, _>(2)? {
                stored.insert((row.try_get(0)?, row.try_get(1)?), decode_metrics(text));
            }
        }
    }
    if !stored.is_empty() {
        for ((host, minute), new) in &mut rows {
            if let Some(old) = stored.get(&((*host).to_owned(), *minute)) {
                *new = old.merge(new);
            }
        }
    }
    for chunk in rows.chunks(MAX_PARAMS / 5) {
        let mut q = QueryBuilder::<Postgres>::new(
            "UPDATE host_minutes AS h SET metrics = v.metrics, samples = v.samples, \
             partial = v.partial FROM (",
        );
        q.push_values(chunk, |mut row, ((host, minute), m)| {
            row.push_bind(*host)
                .push_bind(*minute)
                .push_bind(serde_json::to_string(m).unwrap_or_default())
                .push_bind(i64::from(m.samples))
                .push_bind(m.partial);
        });
        q.push(
            ") AS v (host, minute, metrics, samples, partial) \
             WHERE h.host = v.host AND h.minute = v.minute",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}
