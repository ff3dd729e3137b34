//! One group commit's reports written: their de-duplication keys recorded first
//! ([`insert_report_keys`]), then their sums, added up in memory by the shared
//! `BatchAccumulator`, in a few multi-row statements per table ([`write`]).

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use vigil_proto::v1::Report;

use super::merged;
use crate::store::StoreError;
use crate::store::shared::accumulator::{BatchAccumulator, fresh_reports, report_kind};
use crate::store::shared::host_metrics::{StoredHostMetrics, decode_metrics};
use crate::store::shared::merged::Merged;
use crate::store::shared::{count, fp};

/// Rows bound per statement stay under SQLite's limit of 32766 parameters.
pub(super) const MAX_PARAMS: usize = 32_000;

/// Records each report's `(instance, seq)`; returns, per report, whether it is new (the
/// first of its key in the batch and not stored before).
pub(super) async fn insert_report_keys(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &[Report],
    received_at: i64,
) -> Result<Vec<bool>, StoreError> {
    let mut inserted: HashSet<(String, i64)> = HashSet::with_capacity(batch.len());
    for chunk in batch.chunks(MAX_PARAMS / 5) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO reports (instance, seq, host, kind, received_at) ",
        );
        query.push_values(chunk, |mut row, report| {
            row.push_bind(report.instance.as_str())
                .push_bind(count(report.seq))
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

/// Writes the sums of `acc` (a batch's new reports) in `tx`, added to what is stored.
pub(super) async fn write(
    mut acc: BatchAccumulator<'_>,
    tx: &mut Transaction<'_, Sqlite>,
) -> Result<(), StoreError> {
    // A second report of a minute adds its requests (and scraped values) to the
    // stored ones.
    let (mut with_requests, mut with_scraped) = acc.take_merged();
    if !with_requests.is_empty() {
        merged::merge_stored(tx, "app_minutes", "minute", &mut with_requests, false).await?;
    }
    if !with_scraped.is_empty() {
        merged::merge_stored(tx, "app_minutes", "minute", &mut with_scraped, false).await?;
    }
    let app_minutes: Vec<_> = acc
        .app_minutes
        .into_iter()
        .map(|(k, s)| {
            let requests = with_requests.remove(&k).map(|r| r.encode());
            let scraped = with_scraped.remove(&k).map(|v| v.encode());
            (k, s, requests, scraped)
        })
        .collect();
    for chunk in app_minutes.chunks(MAX_PARAMS / 13) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO app_minutes (app, host, minute, lines, error_lines, warn_lines, \
                 events, truncated_lines, reports, process_cpu_pct, process_rss_bytes, \
                 requests, scraped) ",
        );
        q.push_values(
            chunk,
            |mut row, ((app, host, minute), s, requests, scraped)| {
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
                    .push_bind(s.process_rss_bytes.map(count))
                    .push_bind(requests.as_deref())
                    .push_bind(scraped.as_deref());
            },
        );
        q.push(concat!(
            " ON CONFLICT (app, host, minute) DO UPDATE SET \
                 requests = coalesce(excluded.requests, requests), \
                 scraped = coalesce(excluded.scraped, scraped), \
                 process_cpu_pct = coalesce(excluded.process_cpu_pct, process_cpu_pct), \
                 process_rss_bytes = coalesce(excluded.process_rss_bytes, process_rss_bytes), ",
            saturating_sum!("lines"),
            ", ",
            saturating_sum!("error_lines"),
            ", ",
            saturating_sum!("warn_lines"),
            ", ",
            saturating_sum!("events"),
            ", ",
            saturating_sum!("truncated_lines"),
            ", ",
            saturating_sum!("reports")
        ));
        q.build().execute(&mut **tx).await?;
    }
    let hosts: Vec<_> = acc.hosts.into_iter().collect();
    for chunk in hosts.chunks(MAX_PARAMS / 4) {
        let mut q = QueryBuilder::<Sqlite>::new(
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
                 last_minute = max(last_minute, excluded.last_minute), \
                 agent_version = excluded.agent_version",
        );
        q.build().execute(&mut **tx).await?;
    }
    let exceptions: Vec<_> = acc.exceptions.into_iter().collect();
    for chunk in exceptions.chunks(MAX_PARAMS / 5) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO exception_minutes (app, host, minute, fingerprint, count) ",
        );
        q.push_values(chunk, |mut row, ((app, host, minute, f), n)| {
            row.push_bind(*app)
                .push_bind(*host)
                .push_bind(*minute)
                .push_bind(fp(*f))
                .push_bind(count(*n));
        });
        q.push(concat!(
            " ON CONFLICT (app, host, minute, fingerprint) DO UPDATE SET ",
            saturating_sum!("count")
        ));
        q.build().execute(&mut **tx).await?;
    }
    let definitions: Vec<_> = acc.definitions.into_iter().collect();
    for chunk in definitions.chunks(MAX_PARAMS / 8) {
        let mut q = QueryBuilder::<Sqlite>::new(
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
    let fingerprints: Vec<_> = acc.fingerprints.into_iter().collect();
    for chunk in fingerprints.chunks(MAX_PARAMS / 5) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO fingerprints (app, fingerprint, first_seen, last_seen, count) ",
        );
        q.push_values(chunk, |mut row, ((app, f), s)| {
            row.push_bind(*app)
                .push_bind(fp(*f))
                .push_bind(s.first_seen)
                .push_bind(s.last_seen)
                .push_bind(count(s.count));
        });
        q.push(concat!(
            " ON CONFLICT (app, fingerprint) DO UPDATE SET \
                 first_seen = min(coalesce(first_seen, excluded.first_seen), excluded.first_seen), \
                 last_seen = max(coalesce(last_seen, excluded.last_seen), excluded.last_seen), ",
            saturating_sum!("count")
        ));
        q.build().execute(&mut **tx).await?;
    }
    for chunk in acc.alerts.chunks(MAX_PARAMS / 6) {
        let mut q = QueryBuilder::<Sqlite>::new(
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
    write_host_metrics(tx, acc.host_metrics).await
}

/// Adds the batch's host metrics to what is stored for the same host and minute.
async fn write_host_metrics(
    tx: &mut Transaction<'_, Sqlite>,
    mut metrics: HashMap<(&str, i64), StoredHostMetrics>,
) -> Result<(), StoreError> {
    let keys: Vec<(&str, i64)> = metrics.keys().copied().collect();
    let mut stored: HashMap<(String, i64), StoredHostMetrics> = HashMap::new();
    for chunk in keys.chunks(MAX_PARAMS / 2) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT host, minute, metrics FROM host_minutes WHERE (host, minute) IN (",
        );
        let mut keys = q.separated(", ");
        for (host, minute) in chunk {
            keys.push("(")
                .push_bind_unseparated(*host)
                .push_unseparated(", ")
                .push_bind_unseparated(*minute)
                .push_unseparated(")");
        }
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            stored.insert(
                (row.try_get(0)?, row.try_get(1)?),
                decode_metrics(row.try_get(2)?),
            );
        }
    }
    if !stored.is_empty() {
        for ((host, minute), new) in &mut metrics {
            if let Some(old) = stored.get(&((*host).to_owned(), *minute)) {
                *new = old.merge(new);
            }
        }
    }
    let rows: Vec<_> = metrics.into_iter().collect();
    for chunk in rows.chunks(MAX_PARAMS / 5) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO host_minutes (host, minute, metrics, samples, partial) ",
        );
        q.push_values(chunk, |mut row, ((host, minute), m)| {
            row.push_bind(*host)
                .push_bind(*minute)
                .push_bind(serde_json::to_string(m).unwrap_or_default())
                .push_bind(i64::from(m.samples))
                .push_bind(m.partial);
        });
        q.push(
            " ON CONFLICT (host, minute) DO UPDATE SET metrics = excluded.metrics, \
             samples = excluded.samples, partial = excluded.partial",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}
