//! The agent's admin endpoint on `admin_listen`: `GET /status` (JSON, what
//! `vigil-agent status` prints), `GET /metrics` (Prometheus text) and `GET /healthz`.
//!
//! Each `[[scrape]]` target has `vigil_agent_scrapes_total{app,url}`,
//! `vigil_agent_scrape_failures_total{app,url,reason}` (reason: `connect`, `timeout`,
//! `status`, `too_big`, `read`, `parse`), `vigil_agent_scrape_bytes_total{app,url}` and
//! `vigil_agent_scrape_duration_seconds{app,url}` (the last scrape's).
//!
//! The hot path only increments atomics in [`Metrics`]; the main loop publishes a
//! [`Status`] snapshot about once a second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeMetric, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::scrape::{Failure, ScrapeMetrics};

/// Counters of one app (all its `[[logs]]` and `[[access_logs]]` files).
#[derive(Debug, Default)]
pub struct AppMetrics {
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
    pub events: AtomicU64,
    pub exceptions: AtomicU64,
    pub dangerous_exceptions: AtomicU64,
    pub truncated_lines: AtomicU64,
    /// Access-log lines read as requests.
    pub requests: AtomicU64,
    /// Access-log lines that could not be read as requests.
    pub access_malformed_lines: AtomicU64,
}

/// The agent's counters, shared by every part of it.
#[derive(Debug, Default)]
pub struct Metrics {
    pub apps: Vec<(String, AppMetrics)>,
    pub rotations: AtomicU64,
    pub reports_spooled: AtomicU64,
    pub reports_acked: AtomicU64,
    pub reports_rejected: AtomicU64,
    pub alerts: AtomicU64,
    pub reconnects: AtomicU64,
    pub connected: AtomicU64,
    pub host_samples: AtomicU64,
    pub host_sample_errors: AtomicU64,
    /// Nanoseconds spent reading and analysing log files.
    pub read_nanos: AtomicU64,
    /// Nanoseconds spent cutting reports and writing the spool.
    pub flush_nanos: AtomicU64,
    /// Nanoseconds spent sampling host and process metrics.
    pub sample_nanos: AtomicU64,
    /// Opens of log files that had to wait for a file descriptor.
    pub fd_limit_hits: AtomicU64,
    /// Writes to data_dir (identity, spool, checkpoints) that failed.
    pub data_dir_errors: AtomicU64,
    /// 1 while data_dir takes writes.
    pub data_dir_writable: AtomicU64,
    /// 1 while reading is paused (spool full, or data_dir refusing writes).
    pub reading_paused: AtomicU64,
    /// One per `[[scrape]]` entry, in the configuration's order.
    pub scrapes: Vec<ScrapeMetrics>,
}

impl Metrics {
    /// Counters for these apps (indexed as given; each app once, see
    /// [`AppSlots`](crate::minute::AppSlots)).
    pub fn new(apps: &[String]) -> Self {
        Self {
            apps: apps
                .iter()
                .map(|a| (a.clone(), AppMetrics::default()))
                .collect(),
            ..Default::default()
        }
    }

    /// The counters of app `index`, if it exists.
    pub fn app(&self, index: usize) -> Option<&AppMetrics> {
        self.apps.get(index).map(|(_, m)| m)
    }

    /// Adds the counters of scrape targets, `(app, url)` each, in the configuration's order.
    #[must_use]
    pub fn with_scrapes(mut self, targets: impl IntoIterator<Item = (String, String)>) -> Self {
        self.scrapes = targets
            .into_iter()
            .map(|(app, url)| ScrapeMetrics {
                app,
                url,
                ..Default::default()
            })
            .collect();
        self
    }

    /// The counters of scrape target `index`, if it exists.
    pub fn scrape(&self, index: usize) -> Option<&ScrapeMetrics> {
        self.scrapes.get(index)
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// One tailed file, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileStatus {
    pub app: String,
    pub path: String,
    pub offset: u64,
    pub size: u64,
    /// Bytes not read yet.
    pub lag: u64,
}

/// The spool, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpoolView {
    pub reports: u64,
    pub bytes: u64,
    /// When the oldest unacknowledged report was made (Unix seconds).
    pub oldest: Option<i64>,
    pub full: bool,
    pub corrupt_records: u64,
}

/// The connection to the detector, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorView {
    pub endpoint: String,
    pub connected: bool,
    pub last_acked_seq: u64,
}

/// How the log files are held, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TailView {
    /// Files followed (open, or held closed while they have nothing to read).
    pub files: u64,
    /// Log files held open now.
    pub open_files: u64,
    /// Most log files held open at once (below the process's descriptor limit).
    pub max_open_files: u64,
    /// Files with data to read that wait for a file descriptor.
    pub files_waiting: u64,
    /// More files are followed than may be held open at once, or descriptors ran short in
    /// the last seconds: files take turns.
    pub fd_limited: bool,
}

/// The data directory, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataDirView {
    pub path: String,
    /// Reports and checkpoints can be written.
    pub writable: bool,
    /// Why not, while not.
    pub error: Option<String>,
}

/// Everything `vigil-agent status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub host: String,
    pub instance: String,
    pub version: String,
    pub files: Vec<FileStatus>,
    pub spool: SpoolView,
    pub detector: DetectorView,
    #[serde(default)]
    pub tail: TailView,
    #[serde(default)]
    pub data_dir: DataDirView,
    /// Why reading is paused (spool full, data_dir refusing writes), if it is.
    #[serde(default)]
    pub paused: Option<String>,
}

/// What the admin endpoint serves.
#[derive(Debug, Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub status: Arc<Mutex<Status>>,
}

impl Admin {
    fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Prometheus text exposition (format 0.0.4) of the counters and the status gauges,
    /// written by `prometheus-client` from a registry whose one collector reads them now.
    pub fn render_metrics(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::with_capacity(4096);
        if let Err(e) = prometheus_text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "the metrics could not be written");
        }
        out
    }
}

/// A label set: `(name, value)` pairs, none for an unlabelled sample.
type Labels<'a> = Vec<(&'static str, &'a str)>;

/// The agent's metrics, read from its counters and status when scraped.
#[derive(Debug)]
struct Scrape(Admin);

/// Writes a counter family (`prometheus-client` adds the `_total` to `name`).
fn counter<N: EncodeCounterValue + Copy + std::fmt::Debug, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(L, N)],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Writes an unlabelled gauge.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// An unlabelled family: name, help, value.
type Single<'a> = (&'a str, &'a str, u64);
/// A per-app counter: name, help, the counter of an app.
type PerApp<'a> = (&'a str, &'a str, &'a dyn Fn(&AppMetrics) -> &AtomicU64);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0.metrics;
        let status = self.0.status();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let e = &mut encoder;
        let per_app = |f: &dyn Fn(&AppMetrics) -> &AtomicU64| -> Vec<(Labels<'_>, u64)> {
            m.apps
                .iter()
                .map(|(app, a)| (vec![("app", app.as_str())], load(f(a))))
                .collect()
        };
        let app_counters: &[PerApp<'_>] = &[
            (
                "vigil_agent_lines_read",
                "Log lines read (Java and access logs).",
                &|a| &a.lines,
            ),
            (
                "vigil_agent_bytes_read",
                "Log bytes read (Java and access logs).",
                &|a| &a.bytes,
            ),
            (
                "vigil_agent_events",
                "Log events assembled (a record with its continuation lines).",
                &|a| &a.events,
            ),
            (
                "vigil_agent_requests",
                "Access-log lines read as requests.",
                &|a| &a.requests,
            ),
            (
                "vigil_agent_access_malformed_lines",
                "Access-log lines not read as requests (not in the format, no readable time, status outside 100-599, or longer than max_line_bytes).",
                &|a| &a.access_malformed_lines,
            ),
        ];
        for &(name, help, field) in app_counters {
            counter(e, name, help, &per_app(field))?;
        }
        let mut exceptions = Vec::new();
        for (app, a) in &m.apps {
            let dangerous = load(&a.dangerous_exceptions);
            let all = load(&a.exceptions);
            exceptions.push((
                vec![("app", app.as_str()), ("dangerous", "false")],
                all.saturating_sub(dangerous),
            ));
            exceptions.push((
                vec![("app", app.as_str()), ("dangerous", "true")],
                dangerous,
            ));
        }
        counter(
            e,
            "vigil_agent_exceptions",
            "Exception events, by whether a dangerous class is in the chain.",
            &exceptions,
        )?;
        counter(
            e,
            "vigil_agent_truncated_lines",
            "Lines longer than max_line_bytes (their excess skipped).",
            &per_app(&|a| &a.truncated_lines),
        )?;
        let gauges: &[Single<'_>] = &[
            (
                "vigil_agent_files_tailed",
                "Files being tailed.",
                status.files.len() as u64,
            ),
            (
                "vigil_agent_open_files",
                "Log files held open (idle files are closed).",
                status.tail.open_files,
            ),
            (
                "vigil_agent_max_open_files",
                "Most log files held open at once (below the process's descriptor limit).",
                status.tail.max_open_files,
            ),
            (
                "vigil_agent_files_waiting",
                "Log files with data to read waiting for a file descriptor.",
                status.tail.files_waiting,
            ),
            (
                "vigil_agent_fd_limited",
                "1 while more log files are followed than may be held open at once (or descriptors ran short): files take turns.",
                u64::from(status.tail.fd_limited),
            ),
            (
                "vigil_agent_data_dir_writable",
                "1 while data_dir takes writes (identity, spool, checkpoints).",
                load(&m.data_dir_writable),
            ),
            (
                "vigil_agent_reading_paused",
                "1 while reading log files is paused (spool full, or data_dir refusing writes).",
                load(&m.reading_paused),
            ),
            (
                "vigil_agent_spool_reports",
                "Reports in the spool not yet acknowledged.",
                status.spool.reports,
            ),
            (
                "vigil_agent_spool_bytes",
                "Bytes of the spool on disk.",
                status.spool.bytes,
            ),
            (
                "vigil_agent_spool_full",
                "1 while the spool is full and reading is paused.",
                u64::from(status.spool.full),
            ),
            (
                "vigil_agent_detector_connected",
                "1 while a stream to the detector is open.",
                load(&m.connected),
            ),
        ];
        for &(name, help, value) in gauges {
            gauge(e, name, help, value)?;
        }
        let counters: &[Single<'_>] = &[
            (
                "vigil_agent_fd_limit_hits",
                "Opens of log files that had to wait for a file descriptor.",
                load(&m.fd_limit_hits),
            ),
            (
                "vigil_agent_data_dir_errors",
                "Writes to data_dir that failed (disk full, read-only, permissions).",
                load(&m.data_dir_errors),
            ),
            (
                "vigil_agent_rotations",
                "Rotations, truncations and replaced files noticed.",
                load(&m.rotations),
            ),
            (
                "vigil_agent_spool_corrupt_records",
                "Spool records skipped because they failed their checksum.",
                status.spool.corrupt_records,
            ),
            (
                "vigil_agent_reports_spooled",
                "Reports written to the spool.",
                load(&m.reports_spooled),
            ),
            (
                "vigil_agent_reports_acked",
                "Reports acknowledged by the detector.",
                load(&m.reports_acked),
            ),
            (
                "vigil_agent_reports_rejected",
                "Reports the detector rejected for good.",
                load(&m.reports_rejected),
            ),
            (
                "vigil_agent_alerts",
                "Dangerous-exception alerts sent.",
                load(&m.alerts),
            ),
            (
                "vigil_agent_reconnects",
                "Connections opened to the detector.",
                load(&m.reconnects),
            ),
            (
                "vigil_agent_host_samples",
                "Host-metric samples taken.",
                load(&m.host_samples),
            ),
            (
                "vigil_agent_host_sample_errors",
                "Host-metric samples that failed.",
                load(&m.host_sample_errors),
            ),
        ];
        for &(name, help, value) in counters {
            counter(e, name, help, &[(Labels::new(), value)])?;
        }
        let stages: Vec<(Labels<'_>, f64)> = [
            ("read", &m.read_nanos),
            ("flush", &m.flush_nanos),
            ("sample", &m.sample_nanos),
        ]
        .into_iter()
        .map(|(stage, nanos)| (vec![("stage", stage)], load(nanos) as f64 / 1e9))
        .collect();
        counter(
            e,
            "vigil_agent_stage_seconds",
            "Time spent per stage of the agent.",
            &stages,
        )?;
        encode_scrapes(e, &m.scrapes)
    }
}

/// The scrape targets' families.
fn encode_scrapes(e: &mut DescriptorEncoder, scrapes: &[ScrapeMetrics]) -> std::fmt::Result {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let target = |s: &ScrapeMetrics| vec![("app", s.app.clone()), ("url", s.url.clone())];
    let per_target =
        |f: &dyn Fn(&ScrapeMetrics) -> &AtomicU64| -> Vec<(Vec<(&'static str, String)>, u64)> {
            scrapes.iter().map(|s| (target(s), load(f(s)))).collect()
        };
    counter(
        e,
        "vigil_agent_scrapes",
        "Scrapes of the [[scrape]] targets tried.",
        &per_target(&|s| &s.scrapes),
    )?;
    let mut failures = Vec::new();
    for s in scrapes {
        for (reason, n) in Failure::REASONS.iter().zip(&s.failures) {
            let mut labels = target(s);
            labels.push(("reason", (*reason).to_owned()));
            failures.push((labels, load(n)));
        }
    }
    counter(
        e,
        "vigil_agent_scrape_failures",
        "Failed scrapes by reason (connect, timeout, status: not 200, too_big: longer than max_bytes, read: broken HTTP, parse: not the exposition format); their interval's counts wait for the next good scrape.",
        &failures,
    )?;
    counter(
        e,
        "vigil_agent_scrape_bytes",
        "Bytes of the pages scraped.",
        &per_target(&|s| &s.bytes),
    )?;
    let mut metric = e.encode_descriptor(
        "vigil_agent_scrape_duration_seconds",
        "How long the last scrape took.",
        None,
        MetricType::Gauge,
    )?;
    for s in scrapes {
        let seconds = load(&s.last_duration_nanos) as f64 / 1e9;
        ConstGauge::new(seconds).encode(metric.encode_family(&target(s))?)?;
    }
    Ok(())
}

/// Serves the admin endpoint on `listener` until `shutdown` resolves.
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Admin,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let status = admin.clone();
    let metrics = admin;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/status",
            get(move || {
                let admin = status.clone();
                async move { axum::Json(admin.status()) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let admin = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
                        admin.render_metrics(),
                    )
                        .into_response()
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the admin port.
///
/// # Errors
/// Why the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_has_help_type_and_labels() {
        let metrics = Arc::new(Metrics::new(&["shop".into()]));
        if let Some(app) = metrics.app(0) {
            add(&app.lines, 42);
            add(&app.exceptions, 5);
            add(&app.dangerous_exceptions, 2);
            add(&app.requests, 7);
            add(&app.access_malformed_lines, 1);
        }
        let admin = Admin {
            metrics,
            status: Arc::new(Mutex::new(Status::default())),
        };
        let text = admin.render_metrics();
        assert!(text.contains("# TYPE vigil_agent_lines_read_total counter\n"));
        assert!(text.contains("vigil_agent_lines_read_total{app=\"shop\"} 42\n"));
        assert!(
            text.contains("vigil_agent_exceptions_total{app=\"shop\",dangerous=\"false\"} 3\n")
        );
        assert!(text.contains("vigil_agent_exceptions_total{app=\"shop\",dangerous=\"true\"} 2\n"));
        assert!(text.contains("vigil_agent_spool_full 0\n"));
        assert!(text.contains("vigil_agent_requests_total{app=\"shop\"} 7\n"));
        assert!(text.contains("vigil_agent_access_malformed_lines_total{app=\"shop\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let admin = Admin {
            metrics: Arc::new(Metrics::new(&["a\"b\\c\nd".into()])),
            status: Arc::new(Mutex::new(Status::default())),
        };
        let text = admin.render_metrics();
        assert!(
            text.contains("vigil_agent_lines_read_total{app=\"a\\\"b\\\\c\\nd\"} 0\n"),
            "{text}"
        );
    }
}
