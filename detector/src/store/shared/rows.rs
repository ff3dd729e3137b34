//! Stored rows decoded into the store's types, by column name, the same way whichever
//! database they come from: each store's queries name their columns as the structs here
//! do (`AS t`, `AS counts`, ...) and read them with `query_as`.

use std::collections::{BTreeMap, HashMap};

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::host_metrics::decode_metrics;
use super::merged::Merged;
use super::scraped::Scraped;
use super::{from_json, parse_counts, parse_enum, stored_count};
use crate::judge::{Batch, Decision, Requests};
use crate::store::{
    AlertRow, AppRow, DecisionEntry, FeedbackEntry, FingerprintRow, HostMetricsRow, HostRow,
    HourRow, MinuteRow, NewRelease, ReleaseState, ScrapedRow, SeriesQuery, StoreError,
    StoredRelease, fingerprint_hex,
};

/// The columns of `releases` that [`ReleaseRow`] reads, in a `SELECT` of the table.
pub(in crate::store) const RELEASE_COLUMNS: &str = "SELECT id, app, version, state, outcome, \
     created_at, started_at, finished_at, reference_hosts, judge, last_round, decision, \
     decided_at, reasons FROM releases";

/// A row of `releases`.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct ReleaseRow {
    pub(in crate::store) id: i64,
    app: String,
    version: String,
    state: String,
    outcome: Option<String>,
    created_at: i64,
    started_at: i64,
    finished_at: Option<i64>,
    reference_hosts: String,
    judge: Option<String>,
    last_round: Option<i64>,
    decision: String,
    decided_at: Option<i64>,
    reasons: String,
}

impl ReleaseRow {
    /// The release, with its batches and feedback (read from their tables).
    pub(in crate::store) fn into_release(
        self,
        batches: Vec<BatchRow>,
        feedback: Vec<FeedbackRow>,
    ) -> Result<StoredRelease, StoreError> {
        Ok(StoredRelease {
            id: self.id,
            app: self.app,
            version: self.version,
            state: ReleaseState::parse(&self.state).ok_or(StoreError::Corrupt {
                what: "release state",
                reason: self.state.clone(),
            })?,
            outcome: self
                .outcome
                .map(|o| parse_enum("release outcome", &o))
                .transpose()?,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            reference_hosts: from_json("reference hosts", &self.reference_hosts)?,
            batches: batches
                .into_iter()
                .map(|b| {
                    Ok(Batch {
                        at: b.at,
                        hosts: from_json("batch hosts", &b.hosts)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            judge: self.judge,
            last_round: self.last_round,
            decision: parse_enum::<Decision>("decision", &self.decision)?,
            decided_at: self.decided_at,
            reasons: from_json("reasons", &self.reasons)?,
            feedback: feedback
                .into_iter()
                .map(|f| {
                    Ok(FeedbackEntry {
                        label: parse_enum("feedback label", &f.label)?,
                        note: f.note,
                        at: f.at,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        })
    }
}

/// The release `new` as created with id `id`: watching, passed, not judged yet.
pub(in crate::store) fn created_release(id: i64, new: &NewRelease) -> StoredRelease {
    StoredRelease {
        id,
        app: new.app.clone(),
        version: new.version.clone(),
        state: ReleaseState::Watching,
        outcome: None,
        created_at: new.created_at,
        started_at: new.started_at,
        finished_at: None,
        reference_hosts: new.reference_hosts.clone(),
        batches: new.first_batch.iter().cloned().collect(),
        judge: None,
        last_round: None,
        decision: Decision::Pass,
        decided_at: None,
        reasons: Vec::new(),
        feedback: Vec::new(),
    }
}

/// A row of `release_batches`: `SELECT at, hosts`.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct BatchRow {
    at: i64,
    hosts: String,
}

/// A row of `feedback`: `SELECT label, note, at`.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct FeedbackRow {
    label: String,
    note: Option<String>,
    at: i64,
}

/// A logged decision with its release's app and version: `SELECT release_id, app,
/// version, at, decision, previous, reason`.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct DecisionRow {
    release_id: i64,
    app: String,
    version: String,
    at: i64,
    decision: String,
    previous: String,
    reason: Option<String>,
}

impl TryFrom<DecisionRow> for DecisionEntry {
    type Error = StoreError;

    fn try_from(row: DecisionRow) -> Result<Self, StoreError> {
        Ok(DecisionEntry {
            release_id: row.release_id,
            app: row.app,
            version: row.version,
            at: row.at,
            decision: parse_enum("decision", &row.decision)?,
            previous: parse_enum("decision", &row.previous)?,
            reason: row.reason,
        })
    }
}

/// A row of `alerts`: `SELECT host, at, fingerprint, count`.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct StoredAlertRow {
    host: String,
    at: i64,
    fingerprint: i64,
    count: i64,
}

impl From<StoredAlertRow> for AlertRow {
    fn from(row: StoredAlertRow) -> Self {
        AlertRow {
            host: row.host,
            at: row.at,
            fingerprint: fingerprint_hex(row.fingerprint as u64),
            count: stored_count(row.count),
        }
    }
}

/// The columns of `fingerprints` that [`FingerprintDbRow`] reads, for `SELECT ... FROM
/// fingerprints`.
pub(in crate::store) const FINGERPRINT_COLUMNS: &str = "fingerprint, class, causes, message, \
     frames, dangerous, sample, first_seen, last_seen, count";

/// A row of `fingerprints`.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct FingerprintDbRow {
    fingerprint: i64,
    class: String,
    causes: String,
    message: String,
    frames: String,
    dangerous: bool,
    sample: String,
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    count: i64,
}

impl From<FingerprintDbRow> for FingerprintRow {
    fn from(row: FingerprintDbRow) -> Self {
        FingerprintRow {
            fingerprint: fingerprint_hex(row.fingerprint as u64),
            class: row.class,
            causes: serde_json::from_str(&row.causes).unwrap_or_default(),
            message: row.message,
            frames: serde_json::from_str(&row.frames).unwrap_or_default(),
            dangerous: row.dangerous,
            sample: row.sample,
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            count: stored_count(row.count),
        }
    }
}

/// The tables and time column of one resolution of the counters.
pub(in crate::store) struct Tables {
    pub(in crate::store) apps: &'static str,
    pub(in crate::store) exceptions: &'static str,
    pub(in crate::store) hosts: &'static str,
    pub(in crate::store) time: &'static str,
}

/// Per-minute counters.
pub(in crate::store) const MINUTES: Tables = Tables {
    apps: "app_minutes",
    exceptions: "exception_minutes",
    hosts: "host_minutes",
    time: "minute",
};

/// Hourly roll-ups.
pub(in crate::store) const HOURS: Tables = Tables {
    apps: "app_hours",
    exceptions: "exception_hours",
    hosts: "host_hours",
    time: "hour",
};

/// One app row of either resolution, as a series query selects it: the time as `t`, the
/// exception counts gathered as `counts` (see [`parse_counts`]), `minutes` 1 for a minute.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct CountersRow {
    app: String,
    host: String,
    t: i64,
    lines: i64,
    error_lines: i64,
    warn_lines: i64,
    counts: Option<String>,
    process_cpu_pct: Option<f64>,
    process_rss_bytes: Option<i64>,
    minutes: i64,
    events: i64,
    requests: Option<String>,
    scraped: Option<String>,
}

/// One app row of either resolution, decoded, with its host's metrics.
pub(in crate::store) struct Counters {
    app: String,
    host: String,
    t: i64,
    lines: u64,
    events: u64,
    error_lines: u64,
    warn_lines: u64,
    exceptions: BTreeMap<String, u64>,
    process_cpu_pct: Option<f64>,
    process_rss_bytes: Option<u64>,
    /// Minutes rolled into an hourly row (1 for a minute).
    minutes: u64,
    requests: Option<Requests>,
    scraped: Option<ScrapedRow>,
    host_metrics: Option<HostMetricsRow>,
}

impl TryFrom<CountersRow> for Counters {
    type Error = StoreError;

    fn try_from(row: CountersRow) -> Result<Self, StoreError> {
        Ok(Counters {
            app: row.app,
            host: row.host,
            t: row.t,
            lines: stored_count(row.lines),
            error_lines: stored_count(row.error_lines),
            warn_lines: stored_count(row.warn_lines),
            exceptions: parse_counts(row.counts.as_deref().unwrap_or_default())?,
            process_cpu_pct: row.process_cpu_pct,
            process_rss_bytes: row.process_rss_bytes.map(stored_count),
            minutes: stored_count(row.minutes),
            events: stored_count(row.events),
            requests: super::requests::decode(row.requests.as_deref()),
            scraped: Scraped::decode(row.scraped.as_deref()).map(|s| s.row()),
            host_metrics: None,
        })
    }
}

/// `Err(TooManyRows)` when a bounded query found more than its limit (it asks for one
/// row more than allowed, to notice an excess).
pub(in crate::store) fn check_limit(found: usize, query: &SeriesQuery) -> Result<(), StoreError> {
    match query.limit {
        Some(limit) if found > limit => Err(StoreError::TooManyRows { limit }),
        _ => Ok(()),
    }
}

/// `WHERE` conditions of `query` on table alias `alias` (whose time column is `time`), for
/// either database: only the conditions given, so that the database walks the primary
/// keys (`(app, host, t)`, `(host, t)`) instead of scanning tables.
pub(in crate::store) fn push_conditions<DB: Database>(
    q: &mut QueryBuilder<DB>,
    query: &SeriesQuery,
    alias: &str,
    time: &str,
) where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    if let Some(host) = &query.host {
        q.push(format!(" AND {alias}.host = "))
            .push_bind(host.clone());
    }
    if let Some(from) = query.from {
        q.push(format!(" AND {alias}.{time} >= ")).push_bind(from);
    }
    if let Some(to) = query.to {
        q.push(format!(" AND {alias}.{time} <= ")).push_bind(to);
    }
}

/// The query of the host metrics that go with the counters `query` asks for, for either
/// database: of the app's hosts and times when an app is asked for (driven from the
/// app's own rows, each joined to its host's row by key: a test of every host's rows in
/// the window against the app would read the whole fleet's), never of the whole fleet.
pub(in crate::store) fn host_metrics_query<DB: Database>(
    query: &SeriesQuery,
    tables: &Tables,
) -> QueryBuilder<DB>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let Tables {
        apps, hosts, time, ..
    } = tables;
    let (mut q, alias) = match &query.app {
        Some(app) => {
            let mut q = QueryBuilder::<DB>::new(format!(
                "SELECT h.host, h.{time}, h.metrics FROM {apps} a \
                 JOIN {hosts} h ON h.host = a.host AND h.{time} = a.{time} \
                 WHERE h.metrics IS NOT NULL AND a.app = "
            ));
            q.push_bind(app.clone());
            (q, "a")
        }
        None => (
            QueryBuilder::<DB>::new(format!(
                "SELECT h.host, h.{time}, h.metrics FROM {hosts} h WHERE h.metrics IS NOT NULL"
            )),
            "h",
        ),
    };
    push_conditions(&mut q, query, alias, time);
    q.push(format!(" ORDER BY h.host, h.{time}"));
    push_limit(&mut q, query);
    q
}

/// Apps with their hosts, from `(app, host)` rows ordered by app.
pub(in crate::store) fn group_apps(
    rows: impl IntoIterator<Item = (String, HostRow)>,
) -> Vec<AppRow> {
    let mut apps: Vec<AppRow> = Vec::new();
    for (app, host) in rows {
        match apps.last_mut() {
            Some(last) if last.app == app => last.hosts.push(host),
            _ => apps.push(AppRow {
                app,
                hosts: vec![host],
            }),
        }
    }
    apps
}

/// The `LIMIT` of a bounded query: one row more than allowed, to notice an excess.
pub(in crate::store) fn push_limit<DB: Database>(q: &mut QueryBuilder<DB>, query: &SeriesQuery)
where
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    if let Some(limit) = query.limit {
        q.push(" LIMIT ")
            .push_bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX));
    }
}

/// Gives each row its host's metrics in its time, from `metrics` (`host`, time, stored
/// text): a host's metrics go to each of its apps' rows.
pub(in crate::store) fn attach_host_metrics(
    rows: &mut [Counters],
    metrics: Vec<(String, i64, String)>,
) {
    // By host, then time: looked up with the row's borrowed host name.
    let mut by_host: HashMap<String, HashMap<i64, HostMetricsRow>> = HashMap::new();
    for (host, t, text) in metrics {
        by_host
            .entry(host)
            .or_default()
            .insert(t, decode_metrics(text).into_row());
    }
    for row in rows {
        row.host_metrics = by_host
            .get(row.host.as_str())
            .and_then(|times| times.get(&row.t))
            .cloned();
    }
}

impl From<Counters> for MinuteRow {
    fn from(c: Counters) -> Self {
        MinuteRow {
            app: c.app,
            host: c.host,
            minute: c.t,
            lines: c.lines,
            events: c.events,
            error_lines: c.error_lines,
            warn_lines: c.warn_lines,
            exceptions: c.exceptions,
            host_metrics: c.host_metrics,
            process_cpu_pct: c.process_cpu_pct,
            process_rss_bytes: c.process_rss_bytes,
            requests: c.requests,
            scraped: c.scraped,
        }
    }
}

impl From<Counters> for HourRow {
    fn from(c: Counters) -> Self {
        HourRow {
            app: c.app,
            host: c.host,
            hour: c.t,
            minutes: c.minutes,
            lines: c.lines,
            events: c.events,
            error_lines: c.error_lines,
            warn_lines: c.warn_lines,
            exceptions: c.exceptions,
            host_metrics: c.host_metrics,
            process_cpu_pct: c.process_cpu_pct,
            process_rss_bytes: c.process_rss_bytes,
            requests: c.requests,
            scraped: c.scraped,
        }
    }
}
