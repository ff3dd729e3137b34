//! The detector's configuration file (DESIGN §5, a contract): TOML, unknown keys refused.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/vigil/detector.toml";

/// A validated detector configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Where agents connect (gRPC).
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// Where the HTTP API and pages are served.
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Directory of the embedded store.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A shared PostgreSQL store (`postgres://user@host/db?sslmode=verify-full`) instead of
    /// the embedded SQLite in `data_dir`: several detectors, one store, one leader.
    #[serde(default)]
    pub store: Option<String>,
    /// File holding the bearer token that agents and API callers must send.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Where decision changes are posted.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// PEM certificate chain of the gRPC port; with `tls_key`, agents must use `https://`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: when set, agents must present a client certificate it signed
    /// (mutual TLS).
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// Bounds on what API callers may ask for.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How long per-minute rows and their hourly roll-ups are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The judgement's error budget.
    #[serde(default)]
    pub judge: JudgeConfig,
}

/// `[judge]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// The chance a user accepts that a release with no effect on an exception's rate is
    /// blocked for it (default 0.01).
    #[serde(default)]
    pub false_block_budget: Option<f64>,
}

/// Accepted `[judge] false_block_budget`: from one in a million to one in five.
const FALSE_BLOCK_BUDGET_RANGE: std::ops::RangeInclusive<f64> = 1e-6..=0.2;

/// `[retention]` as written in the file (durations as text, e.g. `"14d"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Age past which per-minute rows are rolled up to hourly rows (default 14d).
    #[serde(default)]
    pub minutes: Option<String>,
    /// Age past which hourly rows are deleted (default 400d).
    #[serde(default)]
    pub hourly: Option<String>,
}

/// How long the store keeps counters, from `[retention]` with defaults: per-minute rows
/// (and per-minute host metrics) older than `minutes_secs` are rolled up to hourly rows
/// per app and host (per host for host metrics); hourly rows older than `hourly_secs` are
/// deleted. Fingerprint definitions, the apps' learned memory and releases are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Age of the oldest per-minute row kept, in seconds.
    pub minutes_secs: i64,
    /// Age of the oldest hourly row kept, in seconds.
    pub hourly_secs: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            minutes_secs: 14 * 86_400,
            hourly_secs: 400 * 86_400,
        }
    }
}

/// `[limits]` as written in the file (durations as text, e.g. `"24h"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Oldest `started_at` / batch `at` accepted, before now (default 24h).
    #[serde(default)]
    pub max_backdate: Option<String>,
    /// Most hosts a release may name in its batches and reference group together
    /// (default 10,000).
    #[serde(default)]
    pub max_hosts_per_release: Option<usize>,
    /// Age (from its start) at which a release nobody finished is finished with outcome
    /// `expired` (default 24h).
    #[serde(default)]
    pub max_release_age: Option<String>,
}

/// The limits in force, from `[limits]` with defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Oldest `started_at` / batch `at` accepted, in seconds before now.
    pub max_backdate_secs: i64,
    /// Most hosts in a release's batches and reference group together.
    pub max_hosts_per_release: usize,
    /// Age in seconds, from its start, at which a watched release expires.
    pub max_release_age_secs: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_backdate_secs: 24 * 3600,
            max_hosts_per_release: 10_000,
            max_release_age_secs: 24 * 3600,
        }
    }
}

/// Largest `max_hosts_per_release` accepted: past it, one API call would hold a round's
/// memory and the release lock for long.
const MAX_HOSTS_PER_RELEASE_CAP: usize = 100_000;
/// Largest `max_backdate` accepted: 30 days, what the store keeps of reports' minutes.
const MAX_BACKDATE_CAP_SECS: i64 = 30 * 24 * 3600;
/// Largest `max_release_age` accepted: a release is judged on a bounded window whatever
/// its age, but one watched for more than 30 days is one somebody forgot.
const MAX_RELEASE_AGE_CAP_SECS: i64 = 30 * 24 * 3600;
/// Longest `[retention]` accepted (ten years).
const MAX_RETENTION_SECS: i64 = 3650 * 86_400;
/// Minutes a round reads before the oldest release's start (its baseline), plus margin.
const RETENTION_MARGIN_SECS: i64 = 2 * 3600;

/// A receiver of decision changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL that receives a JSON POST.
    pub url: String,
    /// Decisions that are posted (`pass`, `watch`, `block`); empty means all.
    #[serde(default)]
    pub events: Vec<String>,
}

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7400))
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7401))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/vigil-detector")
}

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

impl DetectorConfig {
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

    /// Parses and validates configuration text; `path` is only used in errors.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and the reason.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: DetectorConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir".into(), "must not be empty".into()));
        }
        self.shared_store()
            .map_err(|reason| invalid("store".into(), reason))?;
        if let Some(token_file) = &self.token_file {
            read_token(token_file).map_err(|reason| invalid("token_file".into(), reason))?;
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "tls_cert".into(),
                "tls_cert and tls_key must be set together".into(),
            ));
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(invalid(
                "tls_client_ca".into(),
                "client certificates need TLS: set tls_cert and tls_key too".into(),
            ));
        }
        for (key, file) in [
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_client_ca", &self.tls_client_ca),
        ] {
            if let Some(file) = file {
                fs::read(file).map_err(|e| {
                    invalid(key.into(), format!("cannot read {}: {e}", file.display()))
                })?;
            }
        }
        self.limits()
            .map_err(|(key, reason)| invalid(key, reason))?;
        self.retention()
            .map_err(|(key, reason)| invalid(key, reason))?;
        self.judge_params()
            .map_err(|(key, reason)| invalid(key, reason))?;
        for (i, hook) in self.webhooks.iter().enumerate() {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(invalid(
                    format!("webhooks[{i}].url"),
                    format!("{:?} is not an http:// or https:// URL", hook.url),
                ));
            }
            for event in &hook.events {
                if !matches!(event.as_str(), "pass" | "watch" | "block" | "finished") {
                    return Err(invalid(
                        format!("webhooks[{i}].events"),
                        format!(
                            "{event:?} is not one of \"pass\", \"watch\", \"block\", \"finished\""
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The shared PostgreSQL store's connection options, when `store` names one.
    ///
    /// # Errors
    /// Why `store` is refused: not a `postgres://` or `postgresql://` URL, or one that
    /// does not parse (the password, if any, is not repeated).
    pub fn shared_store(&self) -> Result<Option<sqlx::postgres::PgConnectOptions>, String> {
        let Some(url) = &self.store else {
            return Ok(None);
        };
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("postgres" | "postgresql")) {
            return Err(format!(
                "{:?} is not a postgres:// URL (leave store out for the embedded SQLite in data_dir)",
                url.split_once('@').map_or(url.as_str(), |(_, host)| host)
            ));
        }
        url.parse::<sqlx::postgres::PgConnectOptions>()
            .map(Some)
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))
    }

    /// The judgement's parameters: the defaults, with `[judge]` applied. A release's
    /// judge takes them when it is first built (its first round, or a rebuild after a
    /// false alarm on a block or an unreadable state) and keeps them in its stored state.
    ///
    /// # Errors
    /// The key and why its value is refused.
    pub fn judge_params(&self) -> Result<crate::judge::JudgeParams, (String, String)> {
        let mut params = crate::judge::JudgeParams::default();
        if let Some(budget) = self.judge.false_block_budget {
            if !FALSE_BLOCK_BUDGET_RANGE.contains(&budget) {
                return Err((
                    "judge.false_block_budget".to_owned(),
                    format!(
                        "{budget} is not between {} and {}",
                        FALSE_BLOCK_BUDGET_RANGE.start(),
                        FALSE_BLOCK_BUDGET_RANGE.end()
                    ),
                ));
            }
            params.false_block_budget = budget;
        }
        Ok(params)
    }

    /// The limits in force (`[limits]` with defaults).
    ///
    /// # Errors
    /// The key and why its value is refused.
    pub fn limits(&self) -> Result<Limits, (String, String)> {
        let mut limits = Limits::default();
        if let Some(text) = &self.limits.max_backdate {
            limits.max_backdate_secs =
                duration_secs("limits.max_backdate", text, 60, MAX_BACKDATE_CAP_SECS)?;
        }
        if let Some(text) = &self.limits.max_release_age {
            limits.max_release_age_secs =
                duration_secs("limits.max_release_age", text, 60, MAX_RELEASE_AGE_CAP_SECS)?;
        }
        if let Some(n) = self.limits.max_hosts_per_release {
            if !(1..=MAX_HOSTS_PER_RELEASE_CAP).contains(&n) {
                return Err((
                    "limits.max_hosts_per_release".to_owned(),
                    format!("{n} is not between 1 and {MAX_HOSTS_PER_RELEASE_CAP}"),
                ));
            }
            limits.max_hosts_per_release = n;
        }
        Ok(limits)
    }

    /// The retention in force (`[retention]` with defaults).
    ///
    /// `minutes` must cover what a round of the oldest release can read: its start may lie
    /// `max_backdate` back, it is judged for up to `max_release_age`, and a round reads the
    /// baseline hour before it — so at least their sum plus two hours. `hourly` is at
    /// least `minutes`. Unset, `minutes` is 14 days or that sum when longer.
    ///
    /// # Errors
    /// The key and why its value is refused.
    pub fn retention(&self) -> Result<Retention, (String, String)> {
        let limits = self.limits()?;
        let mut retention = Retention::default();
        let needed = limits.max_backdate_secs + limits.max_release_age_secs + RETENTION_MARGIN_SECS;
        match &self.retention.minutes {
            Some(text) => {
                retention.minutes_secs =
                    duration_secs("retention.minutes", text, 3600, MAX_RETENTION_SECS)?;
            }
            // Unset, the default yields to long limits (a config valid before
            // `[retention]` existed stays valid).
            None => retention.minutes_secs = retention.minutes_secs.max(needed),
        }
        if retention.minutes_secs < needed {
            return Err((
                "retention.minutes".to_owned(),
                format!(
                    "{} is shorter than limits.max_backdate + limits.max_release_age + 2h ({}): \
                     rounds of the oldest release read minutes that far back",
                    humantime::format_duration(std::time::Duration::from_secs(
                        retention.minutes_secs.unsigned_abs()
                    )),
                    humantime::format_duration(std::time::Duration::from_secs(
                        needed.unsigned_abs()
                    ))
                ),
            ));
        }
        if let Some(text) = &self.retention.hourly {
            retention.hourly_secs =
                duration_secs("retention.hourly", text, 3600, MAX_RETENTION_SECS)?;
        }
        if retention.hourly_secs < retention.minutes_secs {
            return Err((
                "retention.hourly".to_owned(),
                "must be at least retention.minutes (hourly rows hold what minutes no longer do)"
                    .to_owned(),
            ));
        }
        Ok(retention)
    }

    /// The TLS settings of the gRPC port, when `tls_cert` is set.
    ///
    /// # Errors
    /// The file that cannot be read, and why.
    pub fn grpc_tls(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |path: &Path| {
            fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
        );
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        Ok(Some(tls))
    }

    /// The bearer token callers must present, when `token_file` is set.
    ///
    /// # Errors
    /// The reason the token file cannot be used.
    pub fn token(&self) -> Result<Option<String>, String> {
        self.token_file.as_deref().map(read_token).transpose()
    }
}

/// A duration key's value in whole seconds, between `min` and `max` seconds.
fn duration_secs(key: &str, text: &str, min: i64, max: i64) -> Result<i64, (String, String)> {
    let d = humantime::parse_duration(text).map_err(|e| {
        (
            key.to_owned(),
            format!("{text:?} is not a duration like \"24h\" or \"90m\": {e}"),
        )
    })?;
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if !(min..=max).contains(&secs) {
        return Err((
            key.to_owned(),
            format!(
                "{text:?} is not between {} and {}",
                humantime::format_duration(std::time::Duration::from_secs(min.unsigned_abs())),
                humantime::format_duration(std::time::Duration::from_secs(max.unsigned_abs()))
            ),
        ));
    }
    Ok(secs)
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

    fn parse(text: &str) -> Result<DetectorConfig, ConfigError> {
        DetectorConfig::parse(Path::new("detector.toml"), text)
    }

    #[test]
    fn defaults_fill_an_empty_file() {
        let config = parse("").expect("empty config is valid");
        assert_eq!(config.grpc_listen.port(), 7400);
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:7401");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/vigil-detector"));
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = parse("grpc_listn = \"0.0.0.0:1\"").expect_err("unknown key");
        let text = err.to_string();
        assert!(text.starts_with("detector.toml: "), "{text}");
        assert!(text.contains("grpc_listn"), "{text}");
    }

    #[test]
    fn bad_address_is_refused() {
        let err = parse("http_listen = \"localhost\"").expect_err("bad address");
        assert!(err.to_string().contains("http_listen"), "{err}");
    }

    #[test]
    fn webhook_events_are_checked() {
        let err = parse("[[webhooks]]\nurl = \"http://x/hook\"\nevents = [\"explode\"]")
            .expect_err("bad event");
        assert_eq!(
            err.to_string(),
            "detector.toml: webhooks[0].events: \"explode\" is not one of \"pass\", \"watch\", \"block\", \"finished\""
        );
        let err = parse("[[webhooks]]\nurl = \"ftp://x\"").expect_err("bad url");
        assert!(err.to_string().contains("webhooks[0].url"), "{err}");
    }

    #[test]
    fn limits_have_defaults_and_are_checked() {
        let config = parse("").expect("defaults");
        assert_eq!(config.limits(), Ok(Limits::default()));
        let config =
            parse("[limits]\nmax_backdate = \"90m\"\nmax_hosts_per_release = 50").expect("limits");
        assert_eq!(
            config.limits(),
            Ok(Limits {
                max_backdate_secs: 5400,
                max_hosts_per_release: 50,
                max_release_age_secs: 24 * 3600,
            })
        );
        let err = parse("[limits]\nmax_backdate = \"forever\"").expect_err("bad duration");
        assert!(
            err.to_string()
                .starts_with("detector.toml: limits.max_backdate: \"forever\" is not a duration"),
            "{err}"
        );
        let err = parse("[limits]\nmax_backdate = \"400d\"").expect_err("too long");
        assert!(err.to_string().contains("between 1m and 30days"), "{err}");
        let config = parse("[limits]\nmax_release_age = \"2m\"").expect("release age");
        assert_eq!(config.limits().map(|l| l.max_release_age_secs), Ok(120));
        let err = parse("[limits]\nmax_release_age = \"soon\"").expect_err("bad age");
        assert!(
            err.to_string()
                .starts_with("detector.toml: limits.max_release_age: \"soon\" is not a duration"),
            "{err}"
        );
        let config = parse("[judge]\nfalse_block_budget = 0.001").expect("a budget");
        assert_eq!(
            config.judge_params().map(|p| p.false_block_budget),
            Ok(0.001)
        );
        let err = parse("[judge]\nfalse_block_budget = 0.5").expect_err("too large");
        assert!(
            err.to_string().contains("judge.false_block_budget")
                && err.to_string().contains("0.5 is not between"),
            "{err}"
        );
        let err = parse("[limits]\nmax_release_age = \"30s\"").expect_err("too short");
        assert_eq!(
            err.to_string(),
            "detector.toml: limits.max_release_age: \"30s\" is not between 1m and 30days"
        );
        let err = parse("[limits]\nmax_hosts_per_release = 0").expect_err("zero");
        assert!(
            err.to_string().contains("limits.max_hosts_per_release"),
            "{err}"
        );
    }

    #[test]
    fn retention_has_defaults_and_is_checked() {
        let config = parse("").expect("defaults");
        assert_eq!(config.retention(), Ok(Retention::default()));
        let config = parse("[retention]\nminutes = \"3d\"\nhourly = \"90d\"").expect("set");
        assert_eq!(
            config.retention(),
            Ok(Retention {
                minutes_secs: 3 * 86_400,
                hourly_secs: 90 * 86_400
            })
        );
        let err = parse("[retention]\nminutes = \"a fortnight\"").expect_err("bad");
        assert!(
            err.to_string()
                .starts_with("detector.toml: retention.minutes: \"a fortnight\" is not a duration"),
            "{err}"
        );
        // Shorter than the oldest release's rounds can read (24h + 24h + 2h by default).
        let err = parse("[retention]\nminutes = \"1d\"").expect_err("too short");
        assert!(
            err.to_string()
                .contains("retention.minutes: 1day is shorter"),
            "{err}"
        );
        let config = parse(
            "[limits]\nmax_backdate = \"1h\"\nmax_release_age = \"2h\"\n[retention]\nminutes = \"5h\"",
        )
        .expect("short limits allow short retention");
        assert_eq!(config.retention().map(|r| r.minutes_secs), Ok(5 * 3600));
        let config = parse("[limits]\nmax_backdate = \"30d\"").expect("long backdate");
        assert_eq!(
            config.retention().map(|r| r.minutes_secs),
            Ok(31 * 86_400 + 2 * 3600),
            "the default minutes yield to long limits"
        );
        let err = parse("[retention]\nhourly = \"7d\"").expect_err("hourly < minutes");
        assert!(
            err.to_string()
                .contains("retention.hourly: must be at least"),
            "{err}"
        );
        let err = parse("[retention]\nweekly = \"7d\"").expect_err("unknown key");
        assert!(err.to_string().contains("weekly"), "{err}");
    }

    #[test]
    fn missing_token_file_is_refused() {
        let err = parse("token_file = \"/nonexistent/vigil-token\"").expect_err("missing token");
        assert!(err.to_string().contains("token_file: cannot read"), "{err}");
    }
}
