//! One batch's new reports added up in memory ([`BatchAccumulator`]), so that each table
//! gets a few multi-row statements instead of one statement per counter; each store writes
//! the sums in its own transaction.

use std::collections::{HashMap, HashSet};

use vigil_proto::v1::{ExceptionDefinition, Report, report::Body};

use super::host_metrics::StoredHostMetrics;
use super::scraped::Scraped;
use crate::judge::Requests;
use crate::store::IngestOutcome;

/// Per report of `batch`, whether it is new: the first of its key in the batch whose
/// `(instance, seq)` the store's insert of the keys reported as `inserted` (the keys not
/// stored before). Repeats of a key in the batch are duplicates.
pub(in crate::store) fn fresh_reports(
    batch: &[Report],
    mut inserted: HashSet<(String, i64)>,
) -> Vec<bool> {
    batch
        .iter()
        .map(|r| inserted.remove(&(r.instance.clone(), super::count(r.seq))))
        .collect()
}

/// The new reports of `batch` (`fresh`, per report, from [`fresh_reports`]) added up,
/// with each report's outcome in the batch's order.
pub(in crate::store) fn accumulate(
    batch: &[Report],
    fresh: Vec<bool>,
    received_at: i64,
) -> (BatchAccumulator<'_>, Vec<IngestOutcome>) {
    let mut acc = BatchAccumulator::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (report, fresh) in batch.iter().zip(fresh) {
        if fresh {
            acc.add(report, received_at);
            outcomes.push(IngestOutcome::Stored);
        } else {
            outcomes.push(IngestOutcome::Duplicate);
        }
    }
    (acc, outcomes)
}

/// What the `kind` column of `reports` says of `report`.
pub(in crate::store) fn report_kind(report: &Report) -> &'static str {
    match &report.body {
        Some(Body::Minute(_)) => "minute",
        Some(Body::Alert(_)) => "alert",
        None => "empty",
    }
}

/// The sums of one app on one host in one minute.
#[derive(Debug, Default, Clone)]
pub(in crate::store) struct AppMinuteSums {
    pub(in crate::store) lines: u64,
    pub(in crate::store) error_lines: u64,
    pub(in crate::store) warn_lines: u64,
    pub(in crate::store) events: u64,
    pub(in crate::store) truncated_lines: u64,
    pub(in crate::store) reports: u64,
    /// The last value a report of the minute carried (the agent sends them once, when the
    /// minute is over).
    pub(in crate::store) process_cpu_pct: Option<f64>,
    pub(in crate::store) process_rss_bytes: Option<u64>,
    /// The reports' requests added up (and, before writing, what the row already holds).
    pub(in crate::store) requests: Option<Requests>,
    /// The reports' scraped values, likewise.
    pub(in crate::store) scraped: Option<Scraped>,
}

/// When a fingerprint was seen in the batch, and how often it was counted.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) struct FingerprintSums {
    pub(in crate::store) first_seen: i64,
    pub(in crate::store) last_seen: i64,
    pub(in crate::store) count: u64,
}

/// The new reports of one batch, added up in memory so that each table gets a few
/// multi-row statements instead of one statement per counter.
#[derive(Debug, Default)]
pub(in crate::store) struct BatchAccumulator<'a> {
    pub(in crate::store) app_minutes: HashMap<(&'a str, &'a str, i64), AppMinuteSums>,
    pub(in crate::store) exceptions: HashMap<(&'a str, &'a str, i64, u64), u64>,
    pub(in crate::store) fingerprints: HashMap<(&'a str, u64), FingerprintSums>,
    pub(in crate::store) definitions: HashMap<(&'a str, u64), &'a ExceptionDefinition>,
    pub(in crate::store) hosts: HashMap<(&'a str, &'a str), (i64, &'a str)>,
    pub(in crate::store) host_metrics: HashMap<(&'a str, i64), StoredHostMetrics>,
    /// `(app, host, at, fingerprint, count, received_at)`, in the batch's order.
    pub(in crate::store) alerts: Vec<(&'a str, &'a str, i64, u64, u64, i64)>,
}

impl<'a> BatchAccumulator<'a> {
    /// Adds a new report (one the store had not seen) received at `received_at`.
    pub(in crate::store) fn add(&mut self, report: &'a Report, received_at: i64) {
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

    /// Takes out the rows' requests and scraped values, which each store merges with what
    /// it holds for the same rows before writing them back.
    #[allow(clippy::type_complexity)]
    pub(in crate::store) fn take_merged(
        &mut self,
    ) -> (
        HashMap<(&'a str, &'a str, i64), Requests>,
        HashMap<(&'a str, &'a str, i64), Scraped>,
    ) {
        let requests = self
            .app_minutes
            .iter_mut()
            .filter_map(|(k, s)| Some((*k, s.requests.take()?)))
            .collect();
        let scraped = self
            .app_minutes
            .iter_mut()
            .filter_map(|(k, s)| Some((*k, s.scraped.take()?)))
            .collect();
        (requests, scraped)
    }
}
