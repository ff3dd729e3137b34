//! The detector's Prometheus metrics, served as text on `GET /metrics` of the HTTP port.
//!
//! One process-wide set of metrics ([`global`]) in a `prometheus-client` registry, like the
//! default registry of Prometheus client libraries: every family exists from the start (at
//! 0), handles are fields of a static, and the hot path only increments atomics. The
//! crate writes the text exposition (format 0.0.4) at scrape time, when the one figure
//! that needs the file system (the store's size) is read.
//!
//! | family | type | what |
//! | --- | --- | --- |
//! | `vigil_detector_reports_ingested_total` | counter | reports stored for the first time |
//! | `vigil_detector_reports_duplicate_total` | counter | reports stored before (retries) |
//! | `vigil_detector_reports_rejected_total{reason}` | counter | reports rejected for good |
//! | `vigil_detector_ingest_commit_seconds` | histogram | time of one group commit |
//! | `vigil_detector_ingest_commit_failures_total` | counter | failed group commits |
//! | `vigil_detector_store_bytes` | gauge | size of the store's files |
//! | `vigil_detector_agent_streams` | gauge | agent streams open |
//! | `vigil_detector_agent_stream_errors_total` | counter | agent streams ended by an error |
//! | `vigil_detector_decisions_total{decision}` | counter | judgement decisions (`pass`, `watch`, `block`) |
//! | `vigil_detector_judgement_seconds` | histogram | time of one judgement round |
//! | `vigil_detector_webhook_failures_total` | counter | webhook deliveries failed for good |
//! | `vigil_detector_judge_state_unreadable_total` | counter | stored judge states that could not be read (the release kept its decision) |
//! | `vigil_detector_releases_expired_total` | counter | releases finished as `expired` (`[limits] max_release_age`) |
//! | `vigil_detector_build_info{version}` | gauge | always 1 |
//!
//! The judgement families stay at 0 until the judgement loop calls [`Metrics::decided`],
//! [`Metrics::judged`] and [`Metrics::webhook_failed`].
//!
//! ```
//! use std::time::Duration;
//! use vigil_detector::judge::Decision;
//! use vigil_detector::metrics;
//!
//! let m = metrics::global();
//! m.decided(Decision::Block);
//! m.judged(Duration::from_millis(3));
//! assert!(m.render().contains("vigil_detector_decisions_total{decision=\"block\"}"));
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, RwLock};
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::judge::Decision;
use crate::store::IngestOutcome;

/// The detector's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);
    &METRICS
}

/// `GET /metrics`: the Prometheus text exposition of [`global`].
pub async fn serve() -> Response {
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        global().render(),
    )
        .into_response()
}

/// Runs a group commit of the store, counting its outcomes and timing it.
///
/// # Errors
/// The commit's own error, unchanged.
pub async fn timed_commit<E>(
    commit: impl Future<Output = Result<Vec<IngestOutcome>, E>>,
) -> Result<Vec<IngestOutcome>, E> {
    let started = Instant::now();
    let result = commit.await;
    match &result {
        Ok(outcomes) => global().committed(started.elapsed(), outcomes),
        Err(_) => global().commit_failed(started.elapsed()),
    }
    result
}

/// Why a report was rejected for good (the `reason` label). A fixed set, so that a label
/// never carries a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    ProtocolVersion,
    Host,
    Instance,
    Seq,
    NoBody,
    Minute,
    App,
    Alert,
    Other,
}

impl RejectReason {
    const ALL: [RejectReason; 9] = [
        RejectReason::ProtocolVersion,
        RejectReason::Host,
        RejectReason::Instance,
        RejectReason::Seq,
        RejectReason::NoBody,
        RejectReason::Minute,
        RejectReason::App,
        RejectReason::Alert,
        RejectReason::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::ProtocolVersion => "protocol_version",
            RejectReason::Host => "host",
            RejectReason::Instance => "instance",
            RejectReason::Seq => "seq",
            RejectReason::NoBody => "no_body",
            RejectReason::Minute => "minute",
            RejectReason::App => "app",
            RejectReason::Alert => "alert",
            RejectReason::Other => "other",
        }
    }

    /// The reason of a message of [`crate::ingest::validate`] (tested against it below).
    pub fn of(message: &str) -> Self {
        let starts = |prefix: &str| message.starts_with(prefix);
        if starts("protocol version") {
            RejectReason::ProtocolVersion
        } else if starts("host ") {
            RejectReason::Host
        } else if starts("instance ") {
            RejectReason::Instance
        } else if starts("seq ") {
            RejectReason::Seq
        } else if starts("report has no body") {
            RejectReason::NoBody
        } else if starts("minute ") {
            RejectReason::Minute
        } else if starts("app") {
            RejectReason::App
        } else if starts("alert ") {
            RejectReason::Alert
        } else {
            RejectReason::Other
        }
    }
}

/// Upper bounds (seconds) of the histogram buckets: commits and judgement rounds take from
/// a fraction of a millisecond to seconds on a slow disk.
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// One label and its value.
type Label = [(&'static str, &'static str); 1];

/// Every metric of the detector, in a `prometheus-client` registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reports_ingested: Counter,
    reports_duplicate: Counter,
    rejected: Family<Label, Counter>,
    commit_seconds: Histogram,
    commit_failures: Counter,
    store_bytes: Gauge,
    streams_open: Gauge,
    leader: Gauge,
    stream_errors: Counter,
    decisions: Family<Label, Counter>,
    judgement_seconds: Histogram,
    webhook_failures: Counter,
    judge_state_unreadable: Counter,
    releases_expired: Counter,
    /// The store's directory, for its size.
    store_dir: RwLock<Option<PathBuf>>,
}

impl Default for Metrics {
    /// Every family registered, at 0 (each label value of the labelled ones too).
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let reports_ingested = counter(
            "vigil_detector_reports_ingested",
            "Reports durably stored for the first time",
        );
        let reports_duplicate = counter(
            "vigil_detector_reports_duplicate",
            "Reports already stored (an agent's retry), acknowledged again",
        );
        let commit_failures = counter(
            "vigil_detector_ingest_commit_failures",
            "Group commits that failed (agents resend their reports)",
        );
        let stream_errors = counter(
            "vigil_detector_agent_stream_errors",
            "Agent streams that ended with an error (e.g. an oversized report)",
        );
        let webhook_failures = counter(
            "vigil_detector_webhook_failures",
            "Webhook deliveries that failed for good",
        );
        let judge_state_unreadable = counter(
            "vigil_detector_judge_state_unreadable",
            "Stored judge states that could not be read; each release kept its decision",
        );
        let releases_expired = counter(
            "vigil_detector_releases_expired",
            "Releases nobody finished, finished as expired ([limits] max_release_age)",
        );
        let rejected = Family::<Label, Counter>::default();
        for reason in RejectReason::ALL {
            drop(rejected.get_or_create(&[("reason", reason.as_str())]));
        }
        registry.register(
            "vigil_detector_reports_rejected",
            "Reports rejected for good, by reason",
            rejected.clone(),
        );
        let decisions = Family::<Label, Counter>::default();
        for decision in [Decision::Pass, Decision::Watch, Decision::Block] {
            drop(decisions.get_or_create(&[("decision", decision.as_str())]));
        }
        registry.register(
            "vigil_detector_decisions",
            "Release decisions made by judgement rounds, by decision",
            decisions.clone(),
        );
        let commit_seconds = Histogram::new(BUCKETS);
        registry.register(
            "vigil_detector_ingest_commit_seconds",
            "Time of one group commit of reports to the store",
            commit_seconds.clone(),
        );
        let judgement_seconds = Histogram::new(BUCKETS);
        registry.register(
            "vigil_detector_judgement_seconds",
            "Time of one judgement round of a release",
            judgement_seconds.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "vigil_detector_store_bytes",
            "Size of the store's SQLite files (database, WAL, shared memory)",
            store_bytes.clone(),
        );
        let streams_open = Gauge::default();
        registry.register(
            "vigil_detector_agent_streams",
            "Agent report streams open now",
            streams_open.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "vigil_detector_leader",
            "1 while this detector leads (runs the rounds, alerts and retention): always with \
             the embedded store, one of the detectors sharing a PostgreSQL store",
            leader.clone(),
        );
        let build_info = Family::<Label, Gauge>::default();
        build_info
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "vigil_detector_build_info",
            "Always 1; the version of vigil-detector as a label",
            build_info,
        );
        Self {
            registry,
            reports_ingested,
            reports_duplicate,
            rejected,
            commit_seconds,
            commit_failures,
            store_bytes,
            streams_open,
            leader,
            stream_errors,
            decisions,
            judgement_seconds,
            webhook_failures,
            judge_state_unreadable,
            releases_expired,
            store_dir: RwLock::new(None),
        }
    }
}

/// Keeps an agent stream counted in `vigil_detector_agent_streams` while alive.
#[derive(Debug)]
pub struct OpenStream(&'static Metrics);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams_open.dec();
    }
}

impl Metrics {
    /// Whether this detector leads now.
    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// Says where the SQLite files are (`data_dir`), for `vigil_detector_store_bytes`.
    pub fn set_store_dir(&self, dir: &Path) {
        let mut slot = self
            .store_dir
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(dir.to_owned());
    }

    /// A batch of reports was committed in `took`, with these outcomes.
    pub fn committed(&self, took: Duration, outcomes: &[IngestOutcome]) {
        self.commit_seconds.observe(took.as_secs_f64());
        let stored = outcomes
            .iter()
            .filter(|o| **o == IngestOutcome::Stored)
            .count() as u64;
        let duplicate = outcomes.len() as u64 - stored;
        self.reports_ingested.inc_by(stored);
        self.reports_duplicate.inc_by(duplicate);
    }

    /// A group commit failed after `took`.
    pub fn commit_failed(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_failures.inc();
    }

    /// A report was rejected with this message of [`crate::ingest::validate`].
    pub fn rejected(&self, message: &str) {
        self.rejected
            .get_or_create(&[("reason", RejectReason::of(message).as_str())])
            .inc();
    }

    /// An agent stream opened; it counts as open until the guard is dropped.
    pub fn stream_opened(&'static self) -> OpenStream {
        self.streams_open.inc();
        OpenStream(self)
    }

    /// An agent stream ended with an error.
    pub fn stream_failed(&self) {
        self.stream_errors.inc();
    }

    /// A judgement round decided `decision` for a release.
    pub fn decided(&self, decision: Decision) {
        self.decisions
            .get_or_create(&[("decision", decision.as_str())])
            .inc();
    }

    /// A judgement round took `took`.
    pub fn judged(&self, took: Duration) {
        self.judgement_seconds.observe(took.as_secs_f64());
    }

    /// A webhook delivery failed for good.
    pub fn webhook_failed(&self) {
        self.webhook_failures.inc();
    }

    /// A release's stored judge state could not be read; the release kept its decision.
    pub fn judge_state_unreadable(&self) {
        self.judge_state_unreadable.inc();
    }

    /// A release nobody finished was finished as `expired`.
    pub fn release_expired(&self) {
        self.releases_expired.inc();
    }

    /// Bytes of the files in the store's directory (`data_dir` holds only the SQLite
    /// database, its WAL and its shared memory).
    fn store_bytes(&self) -> u64 {
        let dir = self
            .store_dir
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(dir) = dir else { return 0 };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
            .sum()
    }

    /// The Prometheus text exposition (format 0.0.4), with the store's size read now.
    pub fn render(&self) -> String {
        self.store_bytes
            .set(i64::try_from(self.store_bytes()).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(4096);
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "the metrics could not be written");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::validate;
    use vigil_proto::PROTOCOL_VERSION;
    use vigil_proto::v1::report::Body;
    use vigil_proto::v1::{Alert, AppCounters, MinuteReport, Report};

    const NOW: i64 = 1_763_880_000;

    fn minute_report() -> Report {
        Report {
            protocol_version: PROTOCOL_VERSION,
            host: "h".into(),
            instance: "i".into(),
            seq: 1,
            body: Some(Body::Minute(MinuteReport {
                minute: NOW,
                apps: vec![AppCounters {
                    app: "shop".into(),
                    ..Default::default()
                }],
                host_metrics: None,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn every_validation_error_has_its_reason() {
        let mut cases: Vec<(Report, RejectReason)> = Vec::new();
        let mut r = minute_report();
        r.protocol_version += 1;
        cases.push((r, RejectReason::ProtocolVersion));
        let mut r = minute_report();
        r.host.clear();
        cases.push((r, RejectReason::Host));
        let mut r = minute_report();
        r.instance = "x".repeat(65);
        cases.push((r, RejectReason::Instance));
        let mut r = minute_report();
        r.seq = 0;
        cases.push((r, RejectReason::Seq));
        let mut r = minute_report();
        r.body = None;
        cases.push((r, RejectReason::NoBody));
        let mut r = minute_report();
        if let Some(Body::Minute(m)) = &mut r.body {
            m.minute += 1;
        }
        cases.push((r, RejectReason::Minute));
        let mut r = minute_report();
        if let Some(Body::Minute(m)) = &mut r.body {
            m.minute = NOW + 2 * 86_400;
        }
        cases.push((r, RejectReason::Minute));
        let mut r = minute_report();
        if let Some(Body::Minute(m)) = &mut r.body {
            m.apps[0].app.clear();
        }
        cases.push((r, RejectReason::App));
        let mut r = minute_report();
        r.body = Some(Body::Alert(Alert::default()));
        cases.push((r, RejectReason::Alert));
        let mut r = minute_report();
        r.body = Some(Body::Alert(Alert {
            app: "shop".into(),
            ..Default::default()
        }));
        cases.push((r, RejectReason::Alert));
        for (report, reason) in cases {
            let message = validate(&report, NOW).expect_err("invalid report");
            assert_eq!(RejectReason::of(&message), reason, "{message}");
        }
        assert_eq!(RejectReason::of("something new"), RejectReason::Other);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.judged(Duration::from_micros(100));
        m.judged(Duration::from_millis(3));
        m.judged(Duration::from_secs(60));
        let out = m.render();
        let name = "vigil_detector_judgement_seconds";
        assert!(
            out.contains(&format!("{name}_bucket{{le=\"0.0005\"}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{name}_bucket{{le=\"0.005\"}} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{name}_bucket{{le=\"5\"}} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 3\n")),
            "{out}"
        );
        assert!(out.contains(&format!("{name}_count 3\n")), "{out}");
        assert!(out.contains(&format!("{name}_sum 60.0031")), "{out}");
    }

    #[test]
    fn every_family_is_there_from_the_start() {
        let m = Metrics::default();
        m.committed(
            Duration::from_millis(2),
            &[
                IngestOutcome::Stored,
                IngestOutcome::Stored,
                IngestOutcome::Duplicate,
            ],
        );
        m.rejected("seq must start at 1");
        let text = m.render();
        for line in [
            "vigil_detector_reports_ingested_total 2\n",
            "vigil_detector_reports_duplicate_total 1\n",
            "vigil_detector_reports_rejected_total{reason=\"seq\"} 1\n",
            "vigil_detector_reports_rejected_total{reason=\"host\"} 0\n",
            "vigil_detector_ingest_commit_seconds_count 1\n",
            "vigil_detector_store_bytes 0\n",
            "vigil_detector_agent_streams 0\n",
            "vigil_detector_decisions_total{decision=\"block\"} 0\n",
            "vigil_detector_judgement_seconds_count 0\n",
            "vigil_detector_webhook_failures_total 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn store_bytes_adds_up_the_files_of_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("vigil.db"), [0u8; 100]).expect("write");
        std::fs::write(dir.path().join("vigil.db-wal"), [0u8; 20]).expect("write");
        std::fs::create_dir(dir.path().join("subdir")).expect("mkdir");
        let m = Metrics::default();
        m.set_store_dir(dir.path());
        assert_eq!(m.store_bytes(), 120);
    }
}
