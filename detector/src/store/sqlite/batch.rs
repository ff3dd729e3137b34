//! One group commit's reports added up in memory ([`BatchAccumulator`]), so that each
//! table gets a few multi-row statements instead of one statement per counter, and the
//! reports' de-duplication keys recorded first ([`insert_report_keys`]).

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use vigil_proto::v1::{ExceptionDefinition, Report, report::Body};

use super::host_metrics::{StoredHostMetrics, decode_metrics};
use super::merged::{self, Merged};
use super::scraped::Scraped;
use super::{count, fp};
use crate::judge::Requests;
use crate::store::StoreError;

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
                .push_bind(match &report.body {
                    Some(Body::Minute(_)) => "minute",
                    Some(Body::Alert(_)) => "alert",
                    None => "empty",
                })
                .push_bind(received_at);
        });
        query.push(" ON CONFLICT (instance, seq) DO NOTHING RETURNING instance, seq");
        for row in query.build().fetch_all(&mut **tx).await? {
            inserted.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }
    // The first report of a key in the batch takes the insert; repeats are duplicates.
    Ok(batch
        .iter()
        .map(|r| inserted.remove(&(r.instance.clone(), count(r.seq))))
        .collect())
}

#[derive(Debug, Default, Clone)]
struct AppMinuteSums {
    lines: u64,
    error_lines: u64,
    warn_lines: u64,
    events: u64,
    truncated_lines: u64,
    reports: u64,
    /// The last value a report of the minute carried (the agent sends them once, when the
    /// minute is over).
    process_cpu_pct: Option<f64>,
    process_rss_bytes: Option<u64>,
    /// The reports' requests added up (and, before writing, what the row already holds).
    requests: Option<Requests>,
    /// The reports' scraped values, likewise.
    scraped: Option<Scraped>,
}

#[derive(Debug, Clone, Copy)]
struct FingerprintSums {
    first_seen: i64,
    last_seen: i64,
    count: u64,
}

/// The new reports of one batch, added up in memory so that each table gets a few
/// multi-row statements instead of one statement per counter.
#[derive(Debug, Default)]
pub(super) struct BatchAccumulator<'a> {
    app_minutes: HashMap<(&'a str, &'a str, i64), AppMinuteSums>,
    exceptions: HashMap<(&'a str, &'a str, i64, u64), u64>,
    fingerprints: HashMap<(&'a str, u64), FingerprintSums>,
    definitions: HashMap<(&'a str, u64), &'a ExceptionDefinition>,
    hosts: HashMap<(&'a str, &'a str), (i64, &'a str)>,
    host_metrics: HashMap<(&'a str, i64), StoredHostMetrics>,
    alerts: Vec<(&'a str, &'a str, i64, u64, u64, i64)>,
}

impl<'a> BatchAccumulator<'a> {
    pub(super) fn add(&mut self, report: &'a Report, received_at: i64) {
        let host = report.host.as_str();
        match &report.body {
            Some(Body::Minute(minute)) => {
                let m = minute.minute;
                for app in &minute.apps {
                    let name = app.app.as_str();
                    let sums = self.app_minutes.entry((name, host, m)).or_default();
                    sums.lines = sums.lines.saturating_add(app.lines);
                    sums.error_lines = sums.error_lines.saturating_add(app.error_lines);
                    sums.warn_lines = sums.warn_lines.saturating_add(app.warn_lines);
                    sums.events = sums.events.saturating_add(app.events);
                    sums.truncated_lines = sums.truncated_lines.saturating_add(app.truncated_lines);
                    sums.reports = sums.reports.saturating_add(1);
                    if let Some(cpu) = app.process_cpu_pct.filter(|v| v.is_finite() && *v >= 0.0) {
                        sums.process_cpu_pct = Some(cpu);
                    }
                    if let Some(rss) = app.process_rss_bytes {
                        sums.process_rss_bytes = Some(rss);
                    }
                    if !app.scraped.is_empty() {
                        // Reports of a batch arrive in order: each is newer.
                        let mut newer = Scraped::default();
                        newer.add_report(&app.scraped);
                        if let Some(older) = &sums.scraped {
                            newer.merge_older(older, false);
                        }
                        sums.scraped = Some(newer);
                    }
                    if let Some(r) = &app.requests {
                        sums.requests
                            .get_or_insert_with(Requests::default)
                            .merge(&Requests::from_proto(r));
                    }
                    let seen = self
                        .hosts
                        .entry((name, host))
                        .or_insert((m, report.agent_version.as_str()));
                    if m >= seen.0 {
                        *seen = (m, report.agent_version.as_str());
                    }
                    for definition in &app.definitions {
                        self.definitions
                            .entry((name, definition.fingerprint))
                            .or_insert(definition);
                    }
                    for exception in &app.exceptions {
                        let sum = self
                            .exceptions
                            .entry((name, host, m, exception.fingerprint))
                            .or_default();
                        *sum = sum.saturating_add(exception.count);
                        let fp = self
                            .fingerprints
                            .entry((name, exception.fingerprint))
                            .or_insert(FingerprintSums {
                                first_seen: m,
                                last_seen: m,
                                count: 0,
                            });
                        fp.first_seen = fp.first_seen.min(m);
                        fp.last_seen = fp.last_seen.max(m);
                        fp.count = fp.count.saturating_add(exception.count);
                    }
                }
                if let Some(metrics) = &minute.host_metrics {
                    let new = StoredHostMetrics::from_proto(metrics);
                    self.host_metrics
                        .entry((host, m))
                        .and_modify(|old| *old = old.merge(&new))
                        .or_insert(new);
                }
            }
            Some(Body::Alert(alert)) => {
                if let Some(definition) = &alert.definition {
                    self.definitions
                        .entry((alert.app.as_str(), definition.fingerprint))
                        .or_insert(definition);
                    let minute = alert.at.div_euclid(60) * 60;
                    let seen = self
                        .fingerprints
                        .entry((alert.app.as_str(), definition.fingerprint))
                        .or_insert(FingerprintSums {
                            first_seen: minute,
                            last_seen: minute,
                            count: 0,
                        });
                    seen.first_seen = seen.first_seen.min(minute);
                    seen.last_seen = seen.last_seen.max(minute);
                    self.alerts.push((
                        alert.app.as_str(),
                        host,
                        alert.at,
                        definition.fingerprint,
                        alert.count,
                        received_at,
                    ));
                }
            }
            None => {}
        }
    }

    pub(super) async fn write(
        mut self,
        tx: &mut Transaction<'_, Sqlite>,
    ) -> Result<(), StoreError> {
        // A second report of a minute adds its requests to the stored ones.
        let mut with_requests: HashMap<(&str, &str, i64), Requests> = self
            .app_minutes
            .iter_mut()
            .filter_map(|(k, s)| Some((*k, s.requests.take()?)))
            .collect();
        if !with_requests.is_empty() {
            merged::merge_stored(tx, "app_minutes", "minute", &mut with_requests, false).await?;
        }
        let mut with_scraped: HashMap<(&str, &str, i64), Scraped> = self
            .app_minutes
            .iter_mut()
            .filter_map(|(k, s)| Some((*k, s.scraped.take()?)))
            .collect();
        if !with_scraped.is_empty() {
            merged::merge_stored(tx, "app_minutes", "minute", &mut with_scraped, false).await?;
        }
        let app_minutes: Vec<_> = self
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
        let hosts: Vec<_> = self.hosts.into_iter().collect();
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
        let exceptions: Vec<_> = self.exceptions.into_iter().collect();
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
        let definitions: Vec<_> = self.definitions.into_iter().collect();
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
        let fingerprints: Vec<_> = self.fingerprints.into_iter().collect();
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
        for chunk in self.alerts.chunks(MAX_PARAMS / 6) {
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
        write_host_metrics(tx, self.host_metrics).await
    }
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
