//! The agent's admin endpoint on `admin_listen`: `GET /status` (JSON, what
//! `vigil-agent status` prints), `GET /metrics` (Prometheus text) and `GET /healthz`.
//!
//! The hot path only increments atomics in [`Metrics`]; the main loop publishes a
//! [`Status`] snapshot about once a second.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};

/// Counters of one app.
#[derive(Debug, Default)]
pub struct AppMetrics {
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
    pub events: AtomicU64,
    pub exceptions: AtomicU64,
    pub dangerous_exceptions: AtomicU64,
    pub truncated_lines: AtomicU64,
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
}

impl Metrics {
    /// Counters for these apps (indexed as given).
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

    /// Prometheus text exposition of the counters and the status gauges.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let status = self.status();
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per_app = |f: &dyn Fn(&AppMetrics) -> &AtomicU64| -> Vec<(String, f64)> {
            m.apps
                .iter()
                .map(|(app, a)| (format!("{{app=\"{}\"}}", escape(app)), load(f(a)) as f64))
                .collect()
        };
        family(
            "vigil_agent_lines_read_total",
            "counter",
            "Log lines read.",
            &per_app(&|a| &a.lines),
        );
        family(
            "vigil_agent_bytes_read_total",
            "counter",
            "Log bytes read.",
            &per_app(&|a| &a.bytes),
        );
        family(
            "vigil_agent_events_total",
            "counter",
            "Log events assembled (a record with its continuation lines).",
            &per_app(&|a| &a.events),
        );
        let mut exceptions = Vec::new();
        for (app, a) in &m.apps {
            let dangerous = load(&a.dangerous_exceptions);
            let all = load(&a.exceptions);
            exceptions.push((
                format!("{{app=\"{}\",dangerous=\"false\"}}", escape(app)),
                all.saturating_sub(dangerous) as f64,
            ));
            exceptions.push((
                format!("{{app=\"{}\",dangerous=\"true\"}}", escape(app)),
                dangerous as f64,
            ));
        }
        family(
            "vigil_agent_exceptions_total",
            "counter",
            "Exception events, by whether a dangerous class is in the chain.",
            &exceptions,
        );
        family(
            "vigil_agent_truncated_lines_total",
            "counter",
            "Lines longer than max_line_bytes (their excess skipped).",
            &per_app(&|a| &a.truncated_lines),
        );
        let one = |v: u64| vec![(String::new(), v as f64)];
        family(
            "vigil_agent_files_tailed",
            "gauge",
            "Files being tailed.",
            &one(status.files.len() as u64),
        );
        family(
            "vigil_agent_open_files",
            "gauge",
            "Log files held open (idle files are closed).",
            &one(status.tail.open_files),
        );
        family(
            "vigil_agent_max_open_files",
            "gauge",
            "Most log files held open at once (below the process's descriptor limit).",
            &one(status.tail.max_open_files),
        );
        family(
            "vigil_agent_files_waiting",
            "gauge",
            "Log files with data to read waiting for a file descriptor.",
            &one(status.tail.files_waiting),
        );
        family(
            "vigil_agent_fd_limited",
            "gauge",
            "1 while more log files are followed than may be held open at once (or descriptors ran short): files take turns.",
            &one(u64::from(status.tail.fd_limited)),
        );
        family(
            "vigil_agent_fd_limit_hits_total",
            "counter",
            "Opens of log files that had to wait for a file descriptor.",
            &one(load(&m.fd_limit_hits)),
        );
        family(
            "vigil_agent_data_dir_writable",
            "gauge",
            "1 while data_dir takes writes (identity, spool, checkpoints).",
            &one(load(&m.data_dir_writable)),
        );
        family(
            "vigil_agent_data_dir_errors_total",
            "counter",
            "Writes to data_dir that failed (disk full, read-only, permissions).",
            &one(load(&m.data_dir_errors)),
        );
        family(
            "vigil_agent_reading_paused",
            "gauge",
            "1 while reading log files is paused (spool full, or data_dir refusing writes).",
            &one(load(&m.reading_paused)),
        );
        family(
            "vigil_agent_rotations_total",
            "counter",
            "Rotations, truncations and replaced files noticed.",
            &one(load(&m.rotations)),
        );
        family(
            "vigil_agent_spool_reports",
            "gauge",
            "Reports in the spool not yet acknowledged.",
            &one(status.spool.reports),
        );
        family(
            "vigil_agent_spool_bytes",
            "gauge",
            "Bytes of the spool on disk.",
            &one(status.spool.bytes),
        );
        family(
            "vigil_agent_spool_full",
            "gauge",
            "1 while the spool is full and reading is paused.",
            &one(u64::from(status.spool.full)),
        );
        family(
            "vigil_agent_spool_corrupt_records_total",
            "counter",
            "Spool records skipped because they failed their checksum.",
            &one(status.spool.corrupt_records),
        );
        family(
            "vigil_agent_reports_spooled_total",
            "counter",
            "Reports written to the spool.",
            &one(load(&m.reports_spooled)),
        );
        family(
            "vigil_agent_reports_acked_total",
            "counter",
            "Reports acknowledged by the detector.",
            &one(load(&m.reports_acked)),
        );
        family(
            "vigil_agent_reports_rejected_total",
            "counter",
            "Reports the detector rejected for good.",
            &one(load(&m.reports_rejected)),
        );
        family(
            "vigil_agent_alerts_total",
            "counter",
            "Dangerous-exception alerts sent.",
            &one(load(&m.alerts)),
        );
        family(
            "vigil_agent_reconnects_total",
            "counter",
            "Connections opened to the detector.",
            &one(load(&m.reconnects)),
        );
        family(
            "vigil_agent_detector_connected",
            "gauge",
            "1 while a stream to the detector is open.",
            &one(load(&m.connected)),
        );
        family(
            "vigil_agent_host_samples_total",
            "counter",
            "Host-metric samples taken.",
            &one(load(&m.host_samples)),
        );
        family(
            "vigil_agent_host_sample_errors_total",
            "counter",
            "Host-metric samples that failed.",
            &one(load(&m.host_sample_errors)),
        );
        let stages = [
            ("read", &m.read_nanos),
            ("flush", &m.flush_nanos),
            ("sample", &m.sample_nanos),
        ]
        .iter()
        .map(|(stage, nanos)| (format!("{{stage=\"{stage}\"}}"), load(nanos) as f64 / 1e9))
        .collect::<Vec<_>>();
        family(
            "vigil_agent_stage_seconds_total",
            "counter",
            "Time spent per stage of the agent.",
            &stages,
        );
        out
    }
}

/// Escapes a Prometheus label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
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
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
