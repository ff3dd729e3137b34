//! The agent's configuration file (DESIGN §3, a contract): TOML, unknown keys refused, every
//! value checked before the agent starts, errors naming the file, the key and the reason.
//!
//! Extensions to the contract, all optional: `[detector] flush_interval`, `[spool] max_bytes`,
//! in `[[logs]]` `max_line_bytes`, `timezone` and `process`, and in `[[access_logs]]`
//! `start_at` and `max_line_bytes` (as in `[[logs]]`). `host` may be a string (the host name,
//! as in DESIGN) or the `[host]` table, which then takes the name as `name`: TOML cannot hold
//! both a `host = "..."` key and a `[host]` table in one file.
//!
//! `[[access_logs]]` (DESIGN §3, business signals): `app`, `paths`, `exclude`, `format` —
//! `"common"`, `"combined"`, `"jetty"`, a Tomcat/Jetty/Apache `%`-pattern or an nginx
//! `log_format` string (see [`AccessFormat::compile`]) — and `latency_unit` (`"us"`, `"ms"` or
//! `"s"`), which replaces the unit of the response time read; without it `%D` is read as
//! microseconds (Tomcat 10+, Jetty, Apache httpd; Tomcat 9 and older write milliseconds).
//! The tailed sources are the `[[logs]]` entries, then the `[[access_logs]]` entries
//! ([`AgentConfig::tail_sources`]); a file that the globs of both match is read as the
//! first entry's. An app may have both: its counts add up into one report per minute.
//!
//! `[[scrape]]` (DESIGN §3, business signals): `app`, `url` (`http://` only: https is
//! refused), `interval` (default 10s, 1s to 5min), `families` (metric family names, each
//! optionally with a label selector like `jvm_memory_used_bytes{area="heap"}`, at most 32),
//! and two extensions: `timeout` (default 5s, or half the interval when that is shorter;
//! less than the interval) and `max_bytes` (default 4MiB, 1KiB to 64MiB: a longer page is
//! a failed scrape). The request family `http_server_requests_seconds` is always read (see
//! [`crate::scrape`]); naming it in `families` changes nothing. The scrape targets count as
//! sources after the tailed ones ([`AgentConfig::counted_apps`]).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::access::{AccessFormat, LatencyUnit};
use crate::scrape::{Endpoint, FamilySpec, MAX_FAMILIES, REQUEST_FAMILY};
use crate::tail::SourceConfig;

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/vigil/agent.toml";

/// The configuration as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// A string (the name) or the `[host]` table: checked by the validator, so that a
    /// mistake inside the table is named as such.
    #[serde(default)]
    host: Option<toml::Value>,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default = "default_admin_listen")]
    admin_listen: String,
    #[serde(default)]
    detector: RawDetector,
    #[serde(default)]
    logs: Vec<RawLogs>,
    #[serde(default)]
    access_logs: Vec<RawAccessLogs>,
    #[serde(default)]
    scrape: Vec<RawScrape>,
    #[serde(default)]
    java: JavaConfig,
    #[serde(default)]
    spool: RawSpool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Option<String>,
    interval: Option<String>,
    procfs: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetector {
    #[serde(default = "default_endpoint")]
    endpoint: String,
    token_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    flush_interval: Option<String>,
}

impl Default for RawDetector {
    fn default() -> Self {
        Self {
            endpoint: default_endpoint(),
            token_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            flush_interval: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    app: String,
    paths: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    start_at: StartAt,
    event_start: Option<String>,
    #[serde(default)]
    app_packages: Vec<String>,
    max_line_bytes: Option<toml::Value>,
    timezone: Option<String>,
    process: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLogs {
    app: String,
    paths: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    start_at: StartAt,
    format: String,
    latency_unit: Option<String>,
    max_line_bytes: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScrape {
    app: String,
    url: String,
    interval: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    families: Vec<String>,
    max_bytes: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    max_bytes: Option<toml::Value>,
}

/// Where to start reading a file first seen without a checkpoint.
pub use crate::tail::StartAt;

/// The `[java]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JavaConfig {
    /// Replaces the built-in list of dangerous classes when set.
    pub dangerous: Option<Vec<String>>,
    /// Added to the built-in (or replaced) list.
    #[serde(default)]
    pub extra_dangerous: Vec<String>,
}

/// How timestamps without a zone are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Timezone {
    /// The host's local time.
    #[default]
    Local,
    /// A fixed offset east of UTC, in seconds (`"UTC"` is 0).
    Fixed(i32),
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Host name reported to the detector.
    pub host: String,
    /// Checkpoints, spool and identity live here.
    pub data_dir: PathBuf,
    /// Status and metrics endpoint; `None` when turned off.
    pub admin_listen: Option<SocketAddr>,
    pub detector: DetectorConfig,
    pub logs: Vec<LogsConfig>,
    /// HTTP access logs, tailed after the `[[logs]]` entries.
    pub access_logs: Vec<AccessLogsConfig>,
    /// Prometheus/OpenMetrics endpoints scraped (`[[scrape]]`).
    pub scrape: Vec<ScrapeConfig>,
    pub java: JavaConfig,
    pub host_metrics: HostConfig,
    pub spool: SpoolConfig,
}

/// The `[detector]` table.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    /// `http://` or `https://` address of the detector's gRPC port.
    pub endpoint: String,
    /// Bearer token sent with every call.
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How often counters are sent. At 60 s (the default) each minute is sent once, when
    /// it has closed; shorter intervals also send the open minute's counters so far.
    pub flush_interval: Duration,
}

/// One `[[logs]]` entry.
#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub app: String,
    /// Absolute glob patterns (`**` allowed).
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub start_at: StartAt,
    /// A line matching it starts a log event.
    pub event_start: Option<regex::bytes::Regex>,
    /// Packages whose frames are the app's own.
    pub app_packages: Vec<String>,
    /// Longest line kept; the excess is skipped and counted.
    pub max_line_bytes: usize,
    pub timezone: Timezone,
    /// Pattern on the command line of the app's process, for its CPU and memory.
    pub process: Option<regex::Regex>,
}

/// One `[[access_logs]]` entry.
#[derive(Debug, Clone)]
pub struct AccessLogsConfig {
    pub app: String,
    /// Absolute glob patterns (`**` allowed).
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub start_at: StartAt,
    /// Longest line kept; a longer line is counted as malformed.
    pub max_line_bytes: usize,
    /// The compiled `format` (with `latency_unit` applied).
    pub format: AccessFormat,
}

/// One `[[scrape]]` entry.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    pub app: String,
    /// The `http://` URL, read.
    pub endpoint: Endpoint,
    /// How often the page is read.
    pub interval: Duration,
    /// How long one scrape may take, connection to last byte (less than `interval`).
    pub timeout: Duration,
    /// Longest page read; a longer one is a failed scrape.
    pub max_bytes: usize,
    /// Families sent besides the requests (`families`, the request family left out).
    pub families: Vec<FamilySpec>,
}

/// The `[host]` table.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// How often CPU, memory, load and disk are sampled.
    pub interval: Duration,
    /// Where the host's /proc is mounted.
    pub procfs: PathBuf,
}

/// The `[spool]` table.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Largest size of the on-disk spool of unacknowledged reports.
    pub max_bytes: u64,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/vigil-agent")
}

fn default_admin_listen() -> String {
    "127.0.0.1:7402".into()
}

fn default_endpoint() -> String {
    "http://127.0.0.1:7400".into()
}

/// Default cap on the length of a line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;
/// Default bound of the spool.
pub const DEFAULT_SPOOL_BYTES: u64 = 256 * 1024 * 1024;
/// Default `[[scrape]] interval`.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(10);
/// Default `[[scrape]] timeout` (at most half the interval).
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `[[scrape]] max_bytes`.
pub const DEFAULT_SCRAPE_BYTES: usize = 4 * 1024 * 1024;

/// Why a configuration was refused: the file, the key (when known) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A key holds a value that is not acceptable.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl AgentConfig {
    /// Reads and validates the configuration at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and the reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The tailed sources: the `[[logs]]` entries, then the `[[access_logs]]` entries (the
    /// order of the indices [`source_apps`](Self::source_apps) and the tailer use).
    pub fn tail_sources(&self) -> Vec<SourceConfig> {
        let logs = self.logs.iter().map(|l| SourceConfig {
            paths: l.paths.clone(),
            exclude: l.exclude.clone(),
            start_at: l.start_at,
            max_line_bytes: l.max_line_bytes,
        });
        let access = self.access_logs.iter().map(|a| SourceConfig {
            paths: a.paths.clone(),
            exclude: a.exclude.clone(),
            start_at: a.start_at,
            max_line_bytes: a.max_line_bytes,
        });
        logs.chain(access).collect()
    }

    /// The app of each tailed source, in the order of [`tail_sources`](Self::tail_sources).
    pub fn source_apps(&self) -> Vec<String> {
        let logs = self.logs.iter().map(|l| l.app.clone());
        logs.chain(self.access_logs.iter().map(|a| a.app.clone()))
            .collect()
    }

    /// The source indices of the `[[access_logs]]` entries.
    pub fn access_sources(&self) -> std::ops::Range<usize> {
        self.logs.len()..self.logs.len() + self.access_logs.len()
    }

    /// The app of every counted source: the tailed ones ([`source_apps`](Self::source_apps)),
    /// then one per `[[scrape]]` entry (the indices of [`scrape_sources`](Self::scrape_sources)).
    /// The minute counters and `/metrics` know the apps in this order.
    pub fn counted_apps(&self) -> Vec<String> {
        let mut apps = self.source_apps();
        apps.extend(self.scrape.iter().map(|s| s.app.clone()));
        apps
    }

    /// The source indices of the `[[scrape]]` entries, after the tailed sources.
    pub fn scrape_sources(&self) -> std::ops::Range<usize> {
        let first = self.logs.len() + self.access_logs.len();
        first..first + self.scrape.len()
    }

    /// Parses and validates configuration text; `path` is only used in errors.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and the reason.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Validator { path }.config(raw)
    }
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<AgentConfig, ConfigError> {
        let (name, host_table) = match raw.host {
            None => (None, RawHost::default()),
            Some(toml::Value::String(name)) => (Some(name), RawHost::default()),
            Some(table @ toml::Value::Table(_)) => {
                let table: RawHost = table.try_into().map_err(|e: toml::de::Error| {
                    self.err("host", e.message().trim_end().to_owned())
                })?;
                (table.name.clone(), table)
            }
            Some(other) => {
                return Err(self.err(
                    "host",
                    format!(
                        "must be the host's name (a string) or the [host] table, not {}",
                        describe(&other)
                    ),
                ));
            }
        };
        let host = match name {
            Some(name) => name,
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        if host.trim().is_empty() || host.len() > 255 {
            return Err(self.err("host", "must be 1 to 255 characters"));
        }
        if raw.data_dir.as_os_str().is_empty() {
            return Err(self.err("data_dir", "must not be empty"));
        }
        let admin_listen = if raw.admin_listen.is_empty() {
            None
        } else {
            Some(raw.admin_listen.parse::<SocketAddr>().map_err(|e| {
                self.err(
                    "admin_listen",
                    format!(
                        "{:?} is not an address like 127.0.0.1:7402: {e}",
                        raw.admin_listen
                    ),
                )
            })?)
        };
        let detector = self.detector(raw.detector)?;
        let logs = raw
            .logs
            .into_iter()
            .enumerate()
            .map(|(i, logs)| self.logs(i, logs))
            .collect::<Result<Vec<_>, _>>()?;
        let access_logs = raw
            .access_logs
            .into_iter()
            .enumerate()
            .map(|(i, access)| self.access_logs(i, access))
            .collect::<Result<Vec<_>, _>>()?;
        let scrape = raw
            .scrape
            .into_iter()
            .enumerate()
            .map(|(i, scrape)| self.scrape(i, scrape))
            .collect::<Result<Vec<_>, _>>()?;
        for (key, names) in [
            (
                "java.dangerous",
                raw.java.dangerous.as_deref().unwrap_or_default(),
            ),
            ("java.extra_dangerous", &raw.java.extra_dangerous[..]),
        ] {
            if let Some(bad) = names.iter().find(|n| !is_class_name(n)) {
                return Err(self.err(key, format!("{bad:?} is not a Java class name")));
            }
        }
        let interval = match &host_table.interval {
            Some(text) => self.duration("host.interval", text)?,
            None => Duration::from_secs(10),
        };
        if interval < Duration::from_secs(1) || interval > Duration::from_secs(60) {
            return Err(self.err("host.interval", "must be between 1s and 60s"));
        }
        let spool_bytes = match raw.spool.max_bytes {
            Some(size) => self.bytes("spool.max_bytes", size)?,
            None => DEFAULT_SPOOL_BYTES,
        };
        if spool_bytes < 4096 {
            return Err(self.err("spool.max_bytes", "must be at least 4KiB"));
        }
        Ok(AgentConfig {
            host,
            data_dir: raw.data_dir,
            admin_listen,
            detector,
            logs,
            access_logs,
            scrape,
            java: raw.java,
            host_metrics: HostConfig {
                interval,
                procfs: host_table.procfs.unwrap_or_else(|| PathBuf::from("/proc")),
            },
            spool: SpoolConfig {
                max_bytes: spool_bytes,
            },
        })
    }

    fn detector(&self, raw: RawDetector) -> Result<DetectorConfig, ConfigError> {
        let uri: tonic::codegen::http::Uri = raw.endpoint.parse().map_err(|e| {
            self.err(
                "detector.endpoint",
                format!("{:?} is not a URL: {e}", raw.endpoint),
            )
        })?;
        let scheme = uri.scheme_str().unwrap_or_default();
        if !matches!(scheme, "http" | "https") || uri.authority().is_none() {
            return Err(self.err(
                "detector.endpoint",
                format!(
                    "{:?} must look like http://host:7400 or https://host:7400",
                    raw.endpoint
                ),
            ));
        }
        let token = match &raw.token_file {
            Some(file) => {
                Some(read_token(file).map_err(|reason| self.err("detector.token_file", reason))?)
            }
            None => None,
        };
        if raw.tls_cert.is_some() != raw.tls_key.is_some() {
            return Err(self.err(
                "detector.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        for (key, file) in [
            ("detector.tls_ca", &raw.tls_ca),
            ("detector.tls_cert", &raw.tls_cert),
            ("detector.tls_key", &raw.tls_key),
        ] {
            if let Some(file) = file {
                fs::metadata(file)
                    .map_err(|e| self.err(key, format!("cannot read {}: {e}", file.display())))?;
                if scheme != "https" {
                    return Err(self.err(key, "TLS files need an https:// endpoint"));
                }
            }
        }
        let flush_interval = match &raw.flush_interval {
            Some(text) => self.duration("detector.flush_interval", text)?,
            None => Duration::from_secs(60),
        };
        if flush_interval < Duration::from_millis(100) || flush_interval > Duration::from_secs(60) {
            return Err(self.err("detector.flush_interval", "must be between 100ms and 60s"));
        }
        Ok(DetectorConfig {
            endpoint: raw.endpoint,
            token,
            tls_ca: raw.tls_ca,
            tls_cert: raw.tls_cert,
            tls_key: raw.tls_key,
            flush_interval,
        })
    }

    /// Checks what `[[logs]]` and `[[access_logs]]` entries share: `app`, `paths`, `exclude`
    /// and `max_line_bytes` (returned).
    fn source(
        &self,
        key: &dyn Fn(&str) -> String,
        app: &str,
        paths: &[String],
        exclude: &[String],
        max_line_bytes: Option<toml::Value>,
    ) -> Result<usize, ConfigError> {
        if app.trim().is_empty() || app.len() > 255 {
            return Err(self.err(key("app"), "must be 1 to 255 characters"));
        }
        if paths.is_empty() {
            return Err(self.err(key("paths"), "needs at least one glob"));
        }
        for path in paths {
            if !path.starts_with('/') {
                return Err(self.err(key("paths"), format!("{path:?} is not an absolute path")));
            }
            glob::Pattern::new(path)
                .map_err(|e| self.err(key("paths"), format!("{path:?} is not a glob: {e}")))?;
        }
        for pattern in exclude {
            glob::Pattern::new(pattern)
                .map_err(|e| self.err(key("exclude"), format!("{pattern:?} is not a glob: {e}")))?;
        }
        let max_line_bytes = match max_line_bytes {
            Some(size) => self.bytes(&key("max_line_bytes"), size)?,
            None => DEFAULT_MAX_LINE_BYTES as u64,
        };
        if !(1024..=64 * 1024 * 1024).contains(&max_line_bytes) {
            return Err(self.err(key("max_line_bytes"), "must be between 1KiB and 64MiB"));
        }
        Ok(usize::try_from(max_line_bytes).unwrap_or(DEFAULT_MAX_LINE_BYTES))
    }

    fn access_logs(&self, i: usize, raw: RawAccessLogs) -> Result<AccessLogsConfig, ConfigError> {
        let key = |name: &str| format!("access_logs[{i}].{name}");
        let max_line_bytes =
            self.source(&key, &raw.app, &raw.paths, &raw.exclude, raw.max_line_bytes)?;
        let latency_unit = raw
            .latency_unit
            .as_deref()
            .map(|text| {
                LatencyUnit::parse(text).ok_or_else(|| {
                    self.err(
                        key("latency_unit"),
                        format!(
                            "{text:?} is not \"us\", \"ms\" or \"s\" (the unit of the response \
                             time read; without it %D is read as microseconds, as Tomcat 10+, \
                             Jetty and Apache httpd write it: Tomcat 9 and older need \"ms\")"
                        ),
                    )
                })
            })
            .transpose()?;
        let format = AccessFormat::compile(&raw.format, latency_unit).map_err(|e| {
            let key = if e.reason.starts_with("latency_unit") {
                key("latency_unit")
            } else {
                key("format")
            };
            self.err(key, e.to_string())
        })?;
        Ok(AccessLogsConfig {
            app: raw.app,
            paths: raw.paths,
            exclude: raw.exclude,
            start_at: raw.start_at,
            max_line_bytes,
            format,
        })
    }

    fn scrape(&self, i: usize, raw: RawScrape) -> Result<ScrapeConfig, ConfigError> {
        let key = |name: &str| format!("scrape[{i}].{name}");
        if raw.app.trim().is_empty() || raw.app.len() > 255 {
            return Err(self.err(key("app"), "must be 1 to 255 characters"));
        }
        let endpoint = Endpoint::parse(&raw.url).map_err(|reason| self.err(key("url"), reason))?;
        let interval = match &raw.interval {
            Some(text) => self.duration(&key("interval"), text)?,
            None => DEFAULT_SCRAPE_INTERVAL,
        };
        if interval < Duration::from_secs(1) || interval > Duration::from_secs(300) {
            return Err(self.err(key("interval"), "must be between 1s and 5min"));
        }
        let timeout = match &raw.timeout {
            Some(text) => self.duration(&key("timeout"), text)?,
            None => DEFAULT_SCRAPE_TIMEOUT.min(interval / 2),
        };
        if timeout < Duration::from_millis(100) || timeout >= interval {
            return Err(self.err(
                key("timeout"),
                format!(
                    "must be at least 100ms and less than the interval ({})",
                    humantime::format_duration(interval)
                ),
            ));
        }
        let max_bytes = match raw.max_bytes {
            Some(size) => self.bytes(&key("max_bytes"), size)?,
            None => DEFAULT_SCRAPE_BYTES as u64,
        };
        if !(1024..=64 * 1024 * 1024).contains(&max_bytes) {
            return Err(self.err(key("max_bytes"), "must be between 1KiB and 64MiB"));
        }
        if raw.families.len() > MAX_FAMILIES {
            return Err(self.err(key("families"), format!("at most {MAX_FAMILIES} families")));
        }
        let mut families: Vec<FamilySpec> = Vec::new();
        for text in &raw.families {
            let spec =
                FamilySpec::parse(text).map_err(|reason| self.err(key("families"), reason))?;
            if families.iter().any(|f| f.text == spec.text) {
                return Err(self.err(key("families"), format!("{text:?} is named twice")));
            }
            // The request family is always read (as requests), never sent as values.
            if spec.family == REQUEST_FAMILY && spec.selector.is_empty() {
                continue;
            }
            families.push(spec);
        }
        Ok(ScrapeConfig {
            app: raw.app,
            endpoint,
            interval,
            timeout,
            max_bytes: usize::try_from(max_bytes).unwrap_or(DEFAULT_SCRAPE_BYTES),
            families,
        })
    }

    fn logs(&self, i: usize, raw: RawLogs) -> Result<LogsConfig, ConfigError> {
        let key = |name: &str| format!("logs[{i}].{name}");
        let max_line_bytes =
            self.source(&key, &raw.app, &raw.paths, &raw.exclude, raw.max_line_bytes)?;
        let event_start = raw
            .event_start
            .as_deref()
            .map(|re| {
                regex::bytes::Regex::new(re)
                    .map_err(|e| self.err(key("event_start"), format!("not a regex: {e}")))
            })
            .transpose()?;
        if let Some(bad) = raw.app_packages.iter().find(|p| !is_class_name(p)) {
            return Err(self.err(
                key("app_packages"),
                format!("{bad:?} is not a Java package"),
            ));
        }
        let timezone = match raw.timezone.as_deref() {
            None => Timezone::Local,
            Some(text) => parse_timezone(text).ok_or_else(|| {
                self.err(
                    key("timezone"),
                    format!("{text:?} is not \"local\", \"UTC\" or an offset like \"+02:00\""),
                )
            })?,
        };
        let process = raw
            .process
            .as_deref()
            .map(|re| {
                regex::Regex::new(re)
                    .map_err(|e| self.err(key("process"), format!("not a regex: {e}")))
            })
            .transpose()?;
        Ok(LogsConfig {
            app: raw.app,
            paths: raw.paths,
            exclude: raw.exclude,
            start_at: raw.start_at,
            event_start,
            app_packages: raw.app_packages,
            max_line_bytes,
            timezone,
            process,
        })
    }

    fn duration(&self, key: &str, text: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(text)
            .map_err(|e| self.err(key, format!("{text:?} is not a duration like \"10s\": {e}")))
    }

    fn bytes(&self, key: &str, size: toml::Value) -> Result<u64, ConfigError> {
        const ACCEPTED: &str = "a size is a whole number of bytes (0 or more) or a string like \"256MiB\", \"64 MB\", \"512k\"";
        match size {
            toml::Value::Integer(n) => u64::try_from(n)
                .map_err(|_| self.err(key, format!("{n} is not a size: {ACCEPTED}"))),
            toml::Value::String(text) => parse_bytes(&text)
                .ok_or_else(|| self.err(key, format!("{text:?} is not a size: {ACCEPTED}"))),
            other => Err(self.err(
                key,
                format!("{} is not a size: {ACCEPTED}", describe(&other)),
            )),
        }
    }
}

/// A TOML value as a user would recognise it in an error.
fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(_) => "a table".into(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Float(f) => format!("{f}"),
        toml::Value::Integer(n) => format!("{n}"),
        toml::Value::String(s) => format!("{s:?}"),
    }
}

/// Parses `"256MiB"`, `"64 MB"`, `"512k"`, `"1048576"`; units are powers of 1024.
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// `"local"`, `"UTC"`/`"Z"`, or `"+HH:MM"`/`"-HH:MM"`.
fn parse_timezone(text: &str) -> Option<Timezone> {
    match text {
        "local" => return Some(Timezone::Local),
        "UTC" | "utc" | "Z" => return Some(Timezone::Fixed(0)),
        _ => {}
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = text.get(1..)?.split_once(':')?;
    let (hours, minutes): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
    if hours > 18 || minutes > 59 || hours < 0 || minutes < 0 {
        return None;
    }
    Some(Timezone::Fixed(sign * (hours * 3600 + minutes * 60)))
}

/// A dotted Java name: letters, digits, `_`, `$` and dots, not empty.
fn is_class_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '$'))
}

/// Reads a token file: its content without surrounding white space, never empty.
fn read_token(path: &Path) -> Result<String, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(Path::new("agent.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("config must be refused").to_string()
    }

    #[test]
    fn the_design_example_is_valid() {
        let config = parse(
            r#"
host = "web-17"
data_dir = "/var/lib/vigil-agent"
admin_listen = "127.0.0.1:7402"

[detector]
endpoint = "http://vigil.internal:7400"

[[logs]]
app = "shop"
paths = ["/var/log/shop/*.log"]
exclude = ["*.gz"]
start_at = "end"
event_start = '^\d{4}-\d{2}-\d{2}'
app_packages = ["com.example"]

[java]
extra_dangerous = ["com.example.FatalConfigError"]
"#,
        )
        .expect("valid");
        assert_eq!(config.host, "web-17");
        assert_eq!(config.logs[0].app, "shop");
        assert_eq!(config.logs[0].start_at, StartAt::End);
        assert_eq!(config.logs[0].max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        assert_eq!(config.detector.flush_interval, Duration::from_secs(60));
        assert_eq!(config.host_metrics.interval, Duration::from_secs(10));
        assert_eq!(config.spool.max_bytes, DEFAULT_SPOOL_BYTES);
    }

    #[test]
    fn host_table_carries_name_and_sampling() {
        let config = parse("[host]\nname = \"db-2\"\ninterval = \"5s\"\nprocfs = \"/host/proc\"\n")
            .expect("valid");
        assert_eq!(config.host, "db-2");
        assert_eq!(config.host_metrics.interval, Duration::from_secs(5));
        assert_eq!(config.host_metrics.procfs, PathBuf::from("/host/proc"));
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        assert!(error("colour = 1").contains("colour"));
        assert_eq!(
            error("[[logs]]\napp = \"shop\"\npaths = [\"var/log/*.log\"]"),
            "agent.toml: logs[0].paths: \"var/log/*.log\" is not an absolute path"
        );
        assert!(
            error("[[logs]]\napp = \"shop\"\npaths = [\"/x/[*.log\"]")
                .starts_with("agent.toml: logs[0].paths: \"/x/[*.log\" is not a glob")
        );
        assert!(
            error("[[logs]]\napp = \"a\"\npaths = [\"/x\"]\nevent_start = \"(\"")
                .starts_with("agent.toml: logs[0].event_start: not a regex")
        );
        assert!(
            error("[[logs]]\napp = \"a\"\npaths = [\"/x\"]\nstart_at = \"middle\"")
                .contains("middle")
        );
        assert!(error("[detector]\nendpoint = \"vigil:7400\"").contains("detector.endpoint"));
        assert!(error("[host]\ninterval = \"ten\"").contains("host.interval"));
        assert!(error("[spool]\nmax_bytes = \"lots\"").contains("spool.max_bytes"));
        assert_eq!(
            error("[spool]\nmax_bytes = -1"),
            "agent.toml: spool.max_bytes: -1 is not a size: a size is a whole number of bytes \
             (0 or more) or a string like \"256MiB\", \"64 MB\", \"512k\""
        );
        assert!(
            error("[[logs]]\napp = \"a\"\npaths = [\"/x\"]\nmax_line_bytes = 1.5")
                .starts_with("agent.toml: logs[0].max_line_bytes: 1.5 is not a size")
        );
        assert_eq!(
            error("[host]\nintervall = \"5s\""),
            "agent.toml: host: unknown field `intervall`, expected one of `name`, `interval`, `procfs`"
        );
        assert!(error("host = 5").starts_with("agent.toml: host: must be the host's name"));
        assert!(error("admin_listen = \"localhost\"").contains("admin_listen"));
        assert!(
            error("[java]\nextra_dangerous = [\"Not A Class\"]").contains("java.extra_dangerous")
        );
        assert!(
            error("[detector]\ntoken_file = \"/nonexistent/token\"")
                .contains("detector.token_file: cannot read /nonexistent/token")
        );
    }

    #[test]
    fn sizes_and_zones_parse() {
        assert_eq!(parse_bytes("256MiB"), Some(256 << 20));
        assert_eq!(parse_bytes("64 MB"), Some(64 << 20));
        assert_eq!(parse_bytes("512k"), Some(512 << 10));
        assert_eq!(parse_bytes("10"), Some(10));
        assert_eq!(parse_bytes("1TB"), None);
        assert_eq!(parse_timezone("+02:00"), Some(Timezone::Fixed(7200)));
        assert_eq!(parse_timezone("-05:30"), Some(Timezone::Fixed(-19800)));
        assert_eq!(parse_timezone("UTC"), Some(Timezone::Fixed(0)));
        assert_eq!(parse_timezone("Mars/Olympus"), None);
    }

    const ACCESS: &str =
        "[[logs]]\napp = \"shop\"\npaths = [\"/var/log/shop/*.log\"]\n\n[[access_logs]]\n";

    #[test]
    fn access_logs_as_in_the_design() {
        let config = parse(&format!(
            "{ACCESS}app = \"shop\"\npaths = [\"/var/log/shop/localhost_access_log.*.txt\"]\n\
             exclude = [\"*.gz\"]\nformat = '%h %l %u %t \"%r\" %s %b %D'\n\
             latency_unit = \"ms\"\nstart_at = \"beginning\"\nmax_line_bytes = \"64KiB\"\n\n\
             [[access_logs]]\napp = \"edge\"\npaths = [\"/var/log/nginx/access.log\"]\n\
             format = 'combined'\n"
        ))
        .expect("valid");
        let access = &config.access_logs[0];
        assert_eq!(access.app, "shop");
        assert_eq!(access.start_at, StartAt::Beginning);
        assert_eq!(access.max_line_bytes, 64 * 1024);
        assert!(access.format.has_latency());
        assert_eq!(config.access_logs[1].start_at, StartAt::End);
        assert_eq!(config.source_apps(), ["shop", "shop", "edge"]);
        assert_eq!(config.access_sources(), 1..3);
        let sources = config.tail_sources();
        assert_eq!(sources.len(), 3);
        assert_eq!(sources[2].paths, ["/var/log/nginx/access.log"]);
        assert_eq!(sources[1].max_line_bytes, 64 * 1024);
    }

    #[test]
    fn access_log_errors_name_the_entry_key_and_reason() {
        let entry = |rest: &str| {
            error(&format!(
                "{ACCESS}app = \"shop\"\npaths = [\"/x/*.txt\"]\n{rest}\n"
            ))
        };
        assert_eq!(
            entry("format = '%h %t \"%r\" %s %Q'"),
            "agent.toml: access_logs[0].format: at character 15 (%Q): unknown directive (see \
             the access_logs formats in the README)"
        );
        assert!(
            entry("format = '$remote_addr [$time_local] \"$request\" $body_bytes_sent'")
                .starts_with("agent.toml: access_logs[0].format: the format has no status field")
        );
        assert!(
            entry("format = 'combined'\nlatency_unit = \"ms\"").starts_with(
                "agent.toml: access_logs[0].latency_unit: latency_unit is set but the format has no response time"
            )
        );
        let unit = entry("format = '%t %s %D'\nlatency_unit = \"minutes\"");
        assert!(
            unit.starts_with("agent.toml: access_logs[0].latency_unit: \"minutes\" is not \"us\", \"ms\" or \"s\""),
            "{unit}"
        );
        assert!(unit.contains("%D is read as microseconds"), "{unit}");
        assert!(entry("format = 'combined'\ncolour = 1").contains("unknown field `colour`"));
        assert!(entry("").contains("missing field `format`"));
        assert!(
            entry("format = 'combined'\nmax_line_bytes = 10")
                .starts_with("agent.toml: access_logs[0].max_line_bytes: must be between")
        );
        assert_eq!(
            error("[[access_logs]]\napp = \"a\"\npaths = [\"x/*.txt\"]\nformat = \"common\""),
            "agent.toml: access_logs[0].paths: \"x/*.txt\" is not an absolute path"
        );
        assert!(
            error("[[access_logs]]\napp = \"\"\npaths = [\"/x\"]\nformat = \"common\"")
                .starts_with("agent.toml: access_logs[0].app:")
        );
    }

    #[test]
    fn scrape_as_in_the_design_with_defaults() {
        let config = parse(
            "[[access_logs]]\napp = \"shop\"\npaths = [\"/x/*.txt\"]\nformat = \"common\"\n\n\
             [[scrape]]\napp = \"shop\"\nurl = \"http://127.0.0.1:8080/actuator/prometheus\"\n\
             interval = \"10s\"\n\
             families = [\"http_server_requests_seconds\", \"jvm_gc_pause_seconds\", \
             \"hikaricp_connections_pending\", 'jvm_memory_used_bytes{area=\"heap\"}']\n\n\
             [[scrape]]\napp = \"cart\"\nurl = \"http://localhost:9090/metrics\"\n\
             interval = \"2s\"\ntimeout = \"1500ms\"\nmax_bytes = \"64KiB\"\n",
        )
        .expect("valid");
        let shop = &config.scrape[0];
        assert_eq!(shop.endpoint.port, 8080);
        assert_eq!(shop.endpoint.path, "/actuator/prometheus");
        assert_eq!(shop.interval, Duration::from_secs(10));
        assert_eq!(shop.timeout, Duration::from_secs(5));
        assert_eq!(shop.max_bytes, DEFAULT_SCRAPE_BYTES);
        let names: Vec<&str> = shop.families.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(
            names,
            [
                "jvm_gc_pause_seconds",
                "hikaricp_connections_pending",
                "jvm_memory_used_bytes{area=\"heap\"}"
            ],
            "the request family is read as requests, not sent as values"
        );
        let cart = &config.scrape[1];
        assert_eq!(
            (cart.interval, cart.timeout, cart.max_bytes),
            (
                Duration::from_secs(2),
                Duration::from_millis(1500),
                64 * 1024
            )
        );
        assert_eq!(config.counted_apps(), ["shop", "shop", "cart"]);
        assert_eq!(config.scrape_sources(), 1..3);
        assert_eq!(config.source_apps(), ["shop"], "scrapes are not tailed");
        let short = parse("[[scrape]]\napp = \"a\"\nurl = \"http://h/m\"\ninterval = \"4s\"\n")
            .expect("valid");
        assert_eq!(
            short.scrape[0].timeout,
            Duration::from_secs(2),
            "half a short interval"
        );
    }

    #[test]
    fn scrape_errors_name_the_entry_key_and_reason() {
        let entry = |rest: &str| error(&format!("[[scrape]]\napp = \"shop\"\n{rest}\n"));
        assert!(
            entry("url = \"https://127.0.0.1:8443/actuator/prometheus\"")
                .starts_with("agent.toml: scrape[0].url: \"https://127.0.0.1:8443/actuator/prometheus\": https is not supported")
        );
        assert!(entry("url = \"127.0.0.1:8080\"").starts_with("agent.toml: scrape[0].url:"));
        assert!(entry("url = \"http://h/m\"\ncolour = 1").contains("unknown field `colour`"));
        assert!(entry("").contains("missing field `url`"));
        assert_eq!(
            entry("url = \"http://h/m\"\ninterval = \"500ms\""),
            "agent.toml: scrape[0].interval: must be between 1s and 5min"
        );
        assert_eq!(
            entry("url = \"http://h/m\"\ninterval = \"10m\""),
            "agent.toml: scrape[0].interval: must be between 1s and 5min"
        );
        assert!(
            entry("url = \"http://h/m\"\ninterval = \"soon\"")
                .starts_with("agent.toml: scrape[0].interval: \"soon\" is not a duration")
        );
        assert_eq!(
            entry("url = \"http://h/m\"\ninterval = \"5s\"\ntimeout = \"5s\""),
            "agent.toml: scrape[0].timeout: must be at least 100ms and less than the interval (5s)"
        );
        assert!(
            entry("url = \"http://h/m\"\nmax_bytes = \"1GiB\"")
                .starts_with("agent.toml: scrape[0].max_bytes: must be between")
        );
        assert!(
            entry("url = \"http://h/m\"\nfamilies = [\"jvm.gc.pause\"]").starts_with(
                "agent.toml: scrape[0].families: \"jvm.gc.pause\" is not a metric family name"
            )
        );
        assert!(
            entry("url = \"http://h/m\"\nfamilies = [\"a\", \"a\"]")
                .ends_with("\"a\" is named twice")
        );
        let many: Vec<String> = (0..33).map(|i| format!("\"f{i}\"")).collect();
        assert!(
            entry(&format!(
                "url = \"http://h/m\"\nfamilies = [{}]",
                many.join(",")
            ))
            .ends_with("at most 32 families")
        );
        assert!(
            error("[[scrape]]\napp = \"\"\nurl = \"http://h/m\"")
                .starts_with("agent.toml: scrape[0].app:")
        );
    }
}
