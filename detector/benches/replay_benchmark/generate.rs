//! A seeded, reproducible generator of labelled replay cases, for the replay benchmark
//! only (it is not part of the shipped library).
//!
//! Each case is one release of one of a dozen simulated applications. An application has
//! a fixed catalogue of known exceptions (rates per 1,000 log lines, negative-binomial
//! overdispersion, sometimes a dangerous class that shows up rarely and harmlessly), an
//! error-line rate and hosts of unequal size. Every minute the whole fleet follows a
//! traffic rhythm; a host's usual CPU follows the real EC2 CPU series of the Numenta
//! Anomaly Benchmark (`../shared/corpus/nab`, 5-minute steps interpolated to minutes), 70 %
//! of it growing and shrinking with the host's traffic (the rhythm, surges, traffic moved
//! between hosts), with memory, load and disk derived around it. In three cases of ten one
//! host runs an hourly cron job (2 to 8 minutes, +15 to +40 points of CPU). A restarted
//! host is noisy (more errors, +12 points of CPU) for its app's start-up, 1 to 5 minutes
//! depending on the app.
//!
//! Seven apps in ten have an access log: requests follow the log lines (traffic), response
//! times are log-normal around a median every request of a minute shares (and a GC pause
//! now and then slows a host's minute), a small overdispersed share fails with a 5xx;
//! surges and outages slow and fail requests on every host, a restart's first minute is
//! slow.
//!
//! About 15% of releases are bad: a fault starts on released hosts after their release
//! (dangerous classes — also at very low rates and only at start-up —, new fingerprints,
//! a known fingerprint ×1.3 to ×20, error-line growth, CPU, load, a memory-leak slope,
//! disk IO, log-volume collapse, and on apps with an access log only: responses ×1.3 to
//! ×3 slower, 1 % to 20 % more 5xx, requests collapsing), on all or only some released
//! hosts, at once or delayed,
//! steady or intermittent. A fault is made *observable*: a small multiplier is only
//! applied to an exception frequent enough that the harm would be noticed (at least ~25
//! extra events over the watch), as a user labelling releases would only call such a
//! release bad. Benign releases: A/A re-deploys, start-up storms (×5 to ×15 errors and a
//! known exception, +30 points of CPU, up to two minutes longer than usual), fleet-wide surges
//! and dependency outages hitting both groups, line-number-only code moves, a host noisy
//! before the release, traffic imbalance, rare benign new exceptions and data gaps; in
//! any topology: canary with a reference group, staggered batches, tiny fleets (1
//! released vs 3 reference) and everything released at once.
//!
//! The same `(seed, index)` always gives the same case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vigil_detector::judge::stats::normal_upper_tail;
use vigil_detector::judge::{Batch, Definition, Latency, Requests, StatusClasses, fingerprint_hex};
use vigil_detector::replay::{Case, CaseHostMetrics, CaseMinute, CaseRelease, Expected};
use vigil_proto::latency::{bucket_of, representative_ms, upper_ms};

/// Why the generator could not start.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The NAB corpus is not where it should be.
    #[error(
        "the NAB corpus is missing: {path} does not exist or holds no ec2_cpu_utilization_*.csv (it is expected at ../shared/corpus/nab next to the project, see shared/corpus/README.md)"
    )]
    CorpusMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A corpus file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A corpus file is not `timestamp,value` CSV.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Real CPU series, one value per minute.
#[derive(Debug, Clone)]
pub struct CpuCorpus {
    series: Vec<Vec<f64>>,
}

/// Where the NAB corpus lives relative to the detector crate.
pub fn default_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/nab")
}

impl CpuCorpus {
    /// Loads every `realAWSCloudwatch/ec2_cpu_utilization_*.csv` of the NAB directory and
    /// interpolates the 5-minute steps to minutes.
    ///
    /// # Errors
    /// [`GenerateError`] when the directory or files are missing or malformed.
    pub fn load(dir: &Path) -> Result<Self, GenerateError> {
        let sub = dir.join("realAWSCloudwatch");
        let missing = || GenerateError::CorpusMissing { path: sub.clone() };
        let entries = std::fs::read_dir(&sub).map_err(|_| missing())?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ec2_cpu_utilization_") && n.ends_with(".csv"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(missing());
        }
        let mut series = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| GenerateError::Io {
                path: path.clone(),
                source,
            })?;
            let mut steps = Vec::new();
            for (i, line) in text.lines().enumerate().skip(1) {
                if line.trim().is_empty() {
                    continue;
                }
                let value = line
                    .rsplit(',')
                    .next()
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| GenerateError::Parse {
                        path: path.clone(),
                        line: i + 1,
                        reason: "expected `timestamp,value` with a number".into(),
                    })?;
                steps.push(value);
            }
            let mut minutes = Vec::with_capacity(steps.len() * 5);
            for w in steps.windows(2) {
                for j in 0..5 {
                    minutes.push(w[0] + (w[1] - w[0]) * j as f64 / 5.0);
                }
            }
            if minutes.len() > 200 {
                series.push(minutes);
            }
        }
        if series.is_empty() {
            return Err(missing());
        }
        Ok(Self { series })
    }
}

// ---------------------------------------------------------------------------------------
// Random numbers on top of fastrand (seeded, reproducible).

struct Rand(fastrand::Rng);

impl Rand {
    fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.0.f64()
    }
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (self.uniform(lo.ln(), hi.ln())).exp()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.0.f64() < p
    }
    fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        self.0.usize(lo..=hi_inclusive)
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.0.f64().max(1e-12);
        let u2 = self.0.f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.0.f64().max(1e-12);
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.0.f64().max(1e-12);
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
    fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 40.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let l = (-lambda).exp();
        let (mut k, mut p) = (0u64, 1.0);
        loop {
            p *= self.0.f64();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    /// Negative binomial with the given mean and shape (gamma-Poisson mixture).
    fn negbin(&mut self, mean: f64, shape: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        let g = self.gamma(shape) / shape;
        self.poisson(mean * g)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.0.usize(..items.len())]
    }
}

fn mix(a: u64, b: u64) -> u64 {
    // SplitMix64 of the pair: independent streams per (seed, index).
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const BENIGN_CLASSES: &[&str] = &[
    "java.net.SocketTimeoutException",
    "java.lang.IllegalStateException",
    "java.lang.NullPointerException",
    "java.io.IOException",
    "org.springframework.dao.DataAccessResourceFailureException",
    "java.util.concurrent.TimeoutException",
    "com.fasterxml.jackson.core.JsonParseException",
    "java.lang.IllegalArgumentException",
    "java.net.ConnectException",
    "javax.ws.rs.NotFoundException",
];

const DANGEROUS_CLASSES: &[&str] = &[
    "java.lang.ClassNotFoundException",
    "java.lang.NoClassDefFoundError",
    "java.lang.NoSuchMethodError",
    "java.lang.NoSuchFieldError",
    "java.lang.AbstractMethodError",
    "java.lang.IncompatibleClassChangeError",
    "java.lang.ExceptionInInitializerError",
    "java.lang.ClassCastException",
    "java.lang.OutOfMemoryError",
    "java.lang.StackOverflowError",
    "java.lang.UnsatisfiedLinkError",
];

#[derive(Debug, Clone)]
struct KnownException {
    fp: u64,
    definition: Definition,
    /// Mean events per 1,000 log lines.
    rate: f64,
    /// Negative-binomial shape (smaller = burstier).
    shape: f64,
}

#[derive(Debug, Clone)]
struct App {
    name: String,
    hosts: Vec<String>,
    /// Lines per minute per host at rhythm 1.
    host_lines: Vec<f64>,
    host_cores: Vec<f64>,
    host_mem: Vec<f64>,
    exceptions: Vec<KnownException>,
    error_rate: f64,
    warn_rate: f64,
    /// Its HTTP traffic, for the apps whose hosts have an access log.
    web: Option<Web>,
    /// Minutes a restarted host of it stays noisy (class loading, JIT, cold caches).
    startup: i64,
}

/// An app's HTTP traffic: requests follow its log lines (traffic is what makes it log),
/// response times are log-normal around a median that every minute shares (GC, load), a
/// small share of requests fails with a 5xx, overdispersed.
#[derive(Debug, Clone, Copy)]
struct Web {
    requests_per_line: f64,
    median_ms: f64,
    sigma: f64,
    error_share: f64,
    error_shape: f64,
}

fn definition(rng: &mut Rand, app: &str, class: &str, dangerous: bool) -> Definition {
    let method = *rng.pick(&["handle", "load", "apply", "call", "render", "fetch"]);
    Definition {
        class: class.to_string(),
        causes: if rng.chance(0.3) {
            vec![rng.pick(BENIGN_CLASSES).to_string()]
        } else {
            Vec::new()
        },
        message: format!(
            "{} failed in {app}",
            class.rsplit('.').next().unwrap_or(class)
        ),
        frames: vec![
            format!("com.example.{app}.Service{}.{method}", rng.range(1, 40)),
            format!("com.example.{app}.Controller{}.serve", rng.range(1, 20)),
        ],
        dangerous,
    }
}

fn app(seed: u64, index: usize) -> App {
    let mut rng = Rand::new(mix(seed ^ 0xA99, index as u64));
    let name = format!("svc{index:02}");
    let n_hosts = *rng.pick(&[5, 6, 8, 8, 8, 8, 10, 12]);
    let hosts = (0..n_hosts).map(|h| format!("{name}-h{h:02}")).collect();
    let base = rng.log_uniform(300.0, 3000.0);
    let host_lines = (0..n_hosts).map(|_| base * rng.uniform(0.5, 1.7)).collect();
    let host_cores = (0..n_hosts)
        .map(|_| *rng.pick(&[2.0, 4.0, 8.0, 16.0]))
        .collect();
    let host_mem = (0..n_hosts).map(|_| rng.uniform(30.0, 70.0)).collect();
    let n_exceptions = rng.range(3, 9);
    let mut exceptions = Vec::new();
    for i in 0..n_exceptions {
        // Now and then an app carries a dangerous class that shows up rarely and harmlessly.
        let dangerous = i == 0 && rng.chance(0.35);
        let class = if dangerous {
            *rng.pick(DANGEROUS_CLASSES)
        } else {
            *rng.pick(BENIGN_CLASSES)
        };
        exceptions.push(KnownException {
            fp: rng.0.u64(..),
            definition: definition(&mut rng, &name, class, dangerous),
            rate: if dangerous {
                rng.log_uniform(0.002, 0.02)
            } else {
                rng.log_uniform(0.005, 1.5)
            },
            shape: rng.uniform(0.4, 3.0),
        });
    }
    App {
        name,
        hosts,
        host_lines,
        host_cores,
        host_mem,
        exceptions,
        error_rate: rng.log_uniform(0.001, 0.02),
        warn_rate: rng.log_uniform(0.005, 0.05),
        web: rng.chance(0.7).then(|| Web {
            requests_per_line: rng.uniform(0.2, 0.6),
            median_ms: rng.log_uniform(15.0, 250.0),
            sigma: rng.uniform(0.4, 0.9),
            error_share: rng.log_uniform(0.0003, 0.004),
            error_shape: rng.uniform(0.5, 2.0),
        }),
        // Its own stream, so that the app's other draws do not depend on it.
        startup: *Rand::new(mix(seed ^ 0x57a7, index as u64)).pick(&[1, 1, 1, 2, 2, 3, 4, 5]),
    }
}

/// Number of simulated applications.
pub const APPS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Dangerous,
    DangerousRare,
    DangerousStartup,
    NewException,
    KnownMore,
    ErrorLines,
    Cpu,
    Load,
    MemoryLeak,
    DiskIo,
    VolumeCollapse,
    /// Slower responses only (nothing logged): ×1.3 to ×3.
    Latency,
    /// Requests failing with a 5xx, nothing logged: 1 % to 20 % more of them.
    ServerErrors,
    /// Requests stop reaching the released hosts (they still log a little).
    TrafficCollapse,
}

impl Fault {
    /// Whether it can only be seen in an access log.
    fn needs_web(self) -> bool {
        matches!(
            self,
            Fault::Latency | Fault::ServerErrors | Fault::TrafficCollapse
        )
    }
}

const FAULTS: &[Fault] = &[
    Fault::Dangerous,
    Fault::DangerousRare,
    Fault::DangerousStartup,
    Fault::NewException,
    Fault::NewException,
    Fault::KnownMore,
    Fault::KnownMore,
    Fault::ErrorLines,
    Fault::Cpu,
    Fault::Load,
    Fault::MemoryLeak,
    Fault::DiskIo,
    Fault::VolumeCollapse,
    Fault::Latency,
    Fault::ServerErrors,
    Fault::TrafficCollapse,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Benign {
    AA,
    Warmup,
    Surge,
    Outage,
    LineMove,
    NoisyBefore,
    Imbalance,
    RareNew,
    Gaps,
}

const BENIGN: &[Benign] = &[
    Benign::AA,
    Benign::Warmup,
    Benign::Surge,
    Benign::Outage,
    Benign::LineMove,
    Benign::NoisyBefore,
    Benign::Imbalance,
    Benign::RareNew,
    Benign::Gaps,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Canary,
    Staggered,
    Tiny,
    AllAtOnce,
}

/// An hourly job on one host: `minutes` long from `phase` past each hour of the case, `cpu`
/// points of CPU (and half as many of disk busy) on top of the service.
#[derive(Clone, Copy)]
struct Cron {
    host: usize,
    phase: i64,
    minutes: i64,
    cpu: f64,
}

/// Per host and minute, the levers a scenario pulls.
#[derive(Debug, Clone)]
struct Levers {
    present: bool,
    lines: f64,
    errors: f64,
    /// Multiplier per catalogue exception.
    known: Vec<f64>,
    /// Extra fingerprints: (index into `extras`, mean events this minute).
    extra: Vec<(usize, f64)>,
    /// The host's work relative to its usual (the daily rhythm, surges, traffic moved
    /// between hosts): CPU follows it.
    traffic: f64,
    cpu_add: f64,
    load_mult: f64,
    load_add: f64,
    mem_add: f64,
    disk_add: f64,
    /// Multipliers of the requests (on top of the lines'), latency and 5xx share, and
    /// 5xx added as a share of the requests.
    requests: f64,
    latency: f64,
    server_errors: f64,
    server_errors_add: f64,
}

/// Extra events a "more of a known exception" fault adds at least over the watch.
const OBSERVABLE_EXTRA: f64 = 50.0;

fn host_slot_of(app: &App, host: &str) -> usize {
    app.hosts.iter().position(|x| x == host).unwrap_or(0)
}
const BASELINE_MINUTES: i64 = 60;
const WATCH_MINUTES: i64 = 60;

/// Generates case `index` of the set `seed` with the given share of bad releases.
pub fn generate_case_with(seed: u64, index: usize, bad_fraction: f64, corpus: &CpuCorpus) -> Case {
    generate_case(seed, index, bad_fraction, None, corpus)
}

/// Names of the benign kinds, in the order [`generate_benign_case`] takes them.
pub fn benign_kinds() -> Vec<String> {
    BENIGN.iter().map(|b| format!("{b:?}")).collect()
}

/// Generates case `index` of the set `seed` as a benign release of kind `kind` (an index
/// into [`benign_kinds`]), for the calibration run.
pub fn generate_benign_case(seed: u64, index: usize, kind: usize, corpus: &CpuCorpus) -> Case {
    let forced = BENIGN[kind.min(BENIGN.len() - 1)];
    generate_case(seed, index, 0.0, Some(forced), corpus)
}

fn generate_case(
    seed: u64,
    index: usize,
    bad_fraction: f64,
    forced: Option<Benign>,
    corpus: &CpuCorpus,
) -> Case {
    let mut rng = Rand::new(mix(seed, index as u64 + 1));
    let app_index = rng.range(0, APPS - 1);
    let app = app(seed, app_index);
    let bad = rng.chance(bad_fraction) && forced.is_none();
    let fault = bad.then(|| {
        let f = *rng.pick(FAULTS);
        // A fault only an access log shows needs an app that has one.
        if f.needs_web() && app.web.is_none() {
            *rng.pick(&FAULTS[..FAULTS.len() - 3])
        } else {
            f
        }
    });
    let mut benign = match (bad, forced) {
        (true, _) => Benign::AA,
        (false, Some(kind)) => kind,
        (false, None) => *rng.pick(BENIGN),
    };
    let mut topology = {
        let r = rng.0.f64();
        if r < 0.12 {
            Topology::Tiny
        } else if r < 0.24 {
            Topology::AllAtOnce
        } else if r < 0.55 {
            Topology::Staggered
        } else {
            Topology::Canary
        }
    };
    // A fleet-wide event without a reference group looks like a fault: not generated (a
    // forced kind gets a reference group instead).
    if topology == Topology::AllAtOnce
        && matches!(benign, Benign::Surge | Benign::Outage | Benign::Imbalance)
    {
        if forced.is_some() {
            topology = Topology::Canary;
        } else {
            benign = Benign::AA;
        }
    }

    // Hosts and batches.
    let mut hosts = app.hosts.clone();
    if topology == Topology::Tiny {
        hosts.truncate(4);
    }
    let n = hosts.len();
    let t_first_minute = 1_763_000_000 / 60 * 60 + (index as i64) * 3 * 3600;
    let first_at = t_first_minute + rng.range(0, 59) as i64;
    let order: Vec<usize> = {
        let mut o: Vec<usize> = (0..n).collect();
        rng.0.shuffle(&mut o);
        o
    };
    let mut batches = Vec::new();
    let mut reference = Vec::new();
    let mut release_minute = vec![i64::MAX; n];
    match topology {
        Topology::AllAtOnce => {
            batches.push(Batch {
                at: first_at,
                hosts: order.iter().map(|&h| hosts[h].clone()).collect(),
            });
            for &h in &order {
                release_minute[h] = t_first_minute;
            }
        }
        Topology::Tiny => {
            batches.push(Batch {
                at: first_at,
                hosts: vec![hosts[order[0]].clone()],
            });
            release_minute[order[0]] = t_first_minute;
            reference = order[1..].iter().map(|&h| hosts[h].clone()).collect();
        }
        Topology::Canary | Topology::Staggered => {
            let first = rng.range(1, (n / 3).max(1));
            let second = if topology == Topology::Staggered {
                rng.range(1, (n / 3).max(1))
            } else {
                0
            };
            let second = second.min(n.saturating_sub(first + 2));
            batches.push(Batch {
                at: first_at,
                hosts: order[..first].iter().map(|&h| hosts[h].clone()).collect(),
            });
            for &h in &order[..first] {
                release_minute[h] = t_first_minute;
            }
            if second > 0 {
                let at = first_at + 60 * rng.range(15, 30) as i64;
                batches.push(Batch {
                    at,
                    hosts: order[first..first + second]
                        .iter()
                        .map(|&h| hosts[h].clone())
                        .collect(),
                });
                for &h in &order[first..first + second] {
                    release_minute[h] = at / 60 * 60;
                }
            }
            reference = order[first + second..]
                .iter()
                .map(|&h| hosts[h].clone())
                .collect();
        }
    }
    let released: Vec<usize> = (0..n).filter(|&h| release_minute[h] != i64::MAX).collect();

    // Fault parameters.
    let partial = bad && released.len() > 1 && rng.chance(0.3);
    let affected: Vec<usize> = if partial {
        let k = rng.range(1, released.len() - 1);
        let mut r = released.clone();
        rng.0.shuffle(&mut r);
        r.truncate(k);
        r
    } else {
        released.clone()
    };
    let delayed = bad && fault != Some(Fault::DangerousStartup) && rng.chance(0.2);
    let delay_minutes = if delayed { rng.range(5, 25) as i64 } else { 0 };
    let intermittent = bad
        && !matches!(fault, Some(Fault::DangerousStartup | Fault::MemoryLeak))
        && rng.chance(0.15);
    let period = rng.range(2, 5) as i64;
    let fault_minute = t_first_minute + delay_minutes * 60;
    let fault_at = if delayed { fault_minute } else { first_at };

    let mut extras: Vec<(u64, Definition, f64)> = Vec::new(); // (fp, definition, shape)
    let mut intensity = 1.0;
    let mut known_target = 0usize;
    let mut name: String;
    if let Some(f) = fault {
        name = format!("{f:?}");
        match f {
            Fault::Dangerous | Fault::DangerousRare | Fault::DangerousStartup => {
                let class = *rng.pick(DANGEROUS_CLASSES);
                extras.push((
                    rng.0.u64(..),
                    definition(&mut rng, &app.name, class, true),
                    1.0,
                ));
                intensity = match f {
                    Fault::Dangerous => rng.log_uniform(0.5, 10.0),
                    Fault::DangerousRare => rng.log_uniform(0.03, 0.3),
                    _ => rng.log_uniform(0.5, 5.0),
                };
            }
            Fault::NewException => {
                let class = *rng.pick(BENIGN_CLASSES);
                extras.push((
                    rng.0.u64(..),
                    definition(&mut rng, &app.name, class, false),
                    rng.uniform(0.5, 2.0),
                ));
                intensity = rng.log_uniform(0.3, 10.0);
            }
            Fault::KnownMore => {
                intensity = rng.log_uniform(1.3, 20.0);
                // Observable: at least ~50 extra events over the watch on the affected hosts.
                let end = t_first_minute + WATCH_MINUTES * 60;
                let line_minutes: f64 = affected
                    .iter()
                    .map(|&h| {
                        let from = release_minute[h].max(t_first_minute + delay_minutes * 60);
                        app.host_lines[host_slot_of(&app, &hosts[h])] * ((end - from) / 60) as f64
                    })
                    .sum::<f64>()
                    * if intermittent { 0.5 } else { 1.0 };
                let extra = |rate: f64, m: f64| (m - 1.0) * rate / 1000.0 * line_minutes;
                let candidates: Vec<usize> = (0..app.exceptions.len())
                    .filter(|&i| {
                        !app.exceptions[i].definition.dangerous
                            && extra(app.exceptions[i].rate, intensity) >= OBSERVABLE_EXTRA
                    })
                    .collect();
                if candidates.is_empty() {
                    known_target = (0..app.exceptions.len())
                        .max_by(|&a, &b| app.exceptions[a].rate.total_cmp(&app.exceptions[b].rate))
                        .unwrap_or(0);
                    let rate = app.exceptions[known_target].rate;
                    intensity = intensity
                        .max(1.0 + OBSERVABLE_EXTRA / (rate / 1000.0 * line_minutes).max(1e-9));
                } else {
                    known_target = *rng.pick(&candidates);
                }
                name = format!("KnownMore x{intensity:.1}");
            }
            Fault::ErrorLines => intensity = rng.uniform(2.0, 8.0),
            Fault::Cpu => intensity = rng.uniform(20.0, 50.0),
            Fault::Load => intensity = rng.uniform(2.5, 5.0),
            Fault::MemoryLeak => intensity = rng.uniform(0.25, 1.0),
            Fault::DiskIo => intensity = rng.uniform(25.0, 60.0),
            Fault::VolumeCollapse => intensity = rng.uniform(0.0, 0.1),
            Fault::Latency => {
                intensity = rng.uniform(1.3, 3.0);
                name = format!("Latency x{intensity:.1}");
            }
            Fault::ServerErrors => {
                intensity = rng.log_uniform(0.01, 0.2);
                name = format!("ServerErrors +{:.1}%", 100.0 * intensity);
            }
            Fault::TrafficCollapse => intensity = rng.uniform(0.0, 0.1),
        }
    } else {
        name = format!("{benign:?}");
    }

    // Benign parameters.
    let start_minute = t_first_minute - BASELINE_MINUTES * 60;
    let end_minute = t_first_minute + WATCH_MINUTES * 60; // exclusive
    let surge_from = t_first_minute + 60 * rng.range(0, 45) as i64 - 600;
    let surge_len = 60 * rng.range(5, 20) as i64;
    let surge_lines = rng.uniform(1.2, 2.0);
    let surge_errors = rng.uniform(3.0, 8.0);
    let surge_known = rng.range(0, app.exceptions.len() - 1);
    let surge_known_mult = rng.uniform(5.0, 15.0);
    if benign == Benign::Outage {
        let class = *rng.pick(BENIGN_CLASSES);
        extras.push((
            rng.0.u64(..),
            definition(&mut rng, &app.name, class, false),
            1.0,
        ));
        intensity = rng.log_uniform(2.0, 20.0);
    }
    if benign == Benign::RareNew {
        let class = *rng.pick(BENIGN_CLASSES);
        extras.push((
            rng.0.u64(..),
            definition(&mut rng, &app.name, class, false),
            1.0,
        ));
    }
    // A restart is noisy for the app's usual start-up; a start-up storm is stronger and
    // may last up to two minutes longer.
    let storm_extra = rng.range(1, 3) as i64 - 1;
    let warmup_len = if benign == Benign::Warmup {
        app.startup + storm_extra
    } else {
        app.startup
    };
    let warmup_mult = if benign == Benign::Warmup {
        rng.uniform(5.0, 15.0)
    } else {
        2.0
    };
    let warmup_known = rng.range(0, app.exceptions.len() - 1);
    let noisy_host = released.first().copied().unwrap_or(0);
    let imbalance = if rng.chance(0.5) {
        rng.uniform(0.55, 0.75)
    } else {
        rng.uniform(1.3, 1.8)
    };
    let rare_host = *rng.pick(&released);
    let rare_minutes: Vec<i64> = (0..rng.range(1, 3))
        .map(|_| t_first_minute + 60 * rng.range(0, (WATCH_MINUTES - 1) as usize) as i64)
        .collect();
    // Data gaps: (host, from, to) with rows missing.
    let mut gaps: Vec<(usize, i64, i64)> = Vec::new();
    let gap_count = if benign == Benign::Gaps {
        rng.range(1, 3)
    } else if rng.chance(0.05) {
        1
    } else {
        0
    };
    for _ in 0..gap_count {
        let h = rng.range(0, n - 1);
        let from = start_minute + 60 * rng.range(0, 80) as i64;
        gaps.push((h, from, from + 60 * rng.range(3, 15) as i64));
    }
    let rhythm_phase = rng.uniform(0.0, std::f64::consts::TAU);
    // The hosts of one app run one workload: one NAB series per app, a different stretch
    // of it and a different scale per host.
    let app_series = mix(seed, app_index as u64) as usize % corpus.series.len();
    let cpu_series: Vec<(usize, usize, f64)> = (0..n)
        .map(|_| {
            let len = corpus.series[app_series].len();
            (
                app_series,
                rng.range(0, len.saturating_sub(200)),
                rng.uniform(0.7, 1.3),
            )
        })
        .collect();

    let host_slot: Vec<usize> = (0..n)
        .map(|h| app.hosts.iter().position(|x| *x == hosts[h]).unwrap_or(0))
        .collect();
    let mut mem_walk: Vec<f64> = host_slot.iter().map(|&s| app.host_mem[s]).collect();

    // A cron job on one host in three cases of ten (its own stream, so that the other
    // draws of a case do not depend on it).
    let mut cron_rng = Rand::new(mix(seed ^ 0xc407, index as u64 + 1));
    let cron = cron_rng.chance(0.3).then(|| Cron {
        host: cron_rng.range(0, n - 1),
        phase: cron_rng.range(0, 59) as i64,
        minutes: cron_rng.range(2, 8) as i64,
        cpu: cron_rng.uniform(15.0, 40.0),
    });
    let mut minutes = Vec::new();
    // The requests' own stream, so that the log and metric draws of a case do not depend
    // on whether its app has an access log.
    let mut web_rng = Rand::new(mix(seed ^ 0x3eb, index as u64 + 1));
    let mut fleet_noise = 0.0;
    let mut t = start_minute;
    while t < end_minute {
        fleet_noise = 0.8 * fleet_noise + 0.02 * rng.normal();
        let rhythm = 1.0
            + 0.25 * (std::f64::consts::TAU * (t as f64) / 86_400.0 + rhythm_phase).sin()
            + fleet_noise;
        for h in 0..n {
            let slot = host_slot[h];
            let mut lv = Levers {
                present: true,
                lines: app.host_lines[slot] * rhythm,
                errors: 1.0,
                known: vec![1.0; app.exceptions.len()],
                extra: Vec::new(),
                traffic: rhythm,
                cpu_add: 0.0,
                load_mult: 1.0,
                load_add: 0.0,
                mem_add: 0.0,
                disk_add: 0.0,
                requests: 1.0,
                latency: 1.0,
                server_errors: 1.0,
                server_errors_add: 0.0,
            };
            let rel = release_minute[h];
            let since_release = (t - rel) / 60; // minutes, negative before
            let is_released = rel != i64::MAX && t >= rel;
            // Restart warm-up of every released host.
            if is_released && since_release < warmup_len {
                lv.errors *= warmup_mult;
                lv.cpu_add += if benign == Benign::Warmup { 30.0 } else { 12.0 };
                if since_release == 0 {
                    lv.lines *= 0.7;
                    // A cold JIT and empty caches: slow first requests.
                    lv.latency *= warmup_mult.min(3.0);
                }
                if benign == Benign::Warmup {
                    lv.known[warmup_known] *= warmup_mult;
                }
            }
            match benign {
                Benign::Surge if t >= surge_from && t < surge_from + surge_len => {
                    lv.lines *= surge_lines;
                    lv.traffic *= surge_lines;
                    lv.errors *= surge_errors;
                    lv.known[surge_known] *= surge_known_mult;
                    lv.cpu_add += 10.0;
                    lv.latency *= 1.3;
                    lv.server_errors *= 3.0;
                }
                Benign::Outage if t >= surge_from && t < surge_from + surge_len => {
                    lv.errors *= 3.0;
                    lv.server_errors *= 5.0;
                    lv.extra
                        .push((0, intensity * app.host_lines[slot] / 1000.0));
                }
                Benign::NoisyBefore if h == noisy_host => {
                    lv.errors *= 4.0;
                    lv.known[surge_known] *= 6.0;
                }
                Benign::Imbalance if t >= t_first_minute => {
                    if is_released {
                        lv.lines *= imbalance;
                        lv.traffic *= imbalance;
                    } else {
                        let shift = (1.0 - imbalance) * released.len() as f64
                            / (n - released.len()).max(1) as f64;
                        lv.lines *= (1.0 + shift).clamp(0.8, 1.25);
                        lv.traffic *= (1.0 + shift).clamp(0.8, 1.25);
                    }
                }
                Benign::RareNew if h == rare_host && rare_minutes.contains(&t) => {
                    lv.extra.push((0, 0.0));
                }
                _ => {}
            }
            // The fault.
            if let Some(f) = fault
                && is_released
                && affected.contains(&h)
                && t >= fault_minute
            {
                let since_fault = (t - fault_minute.max(rel)) / 60;
                let on = !intermittent || (since_fault / period) % 2 == 0;
                match f {
                    Fault::DangerousStartup if since_release < 2 => lv.extra.push((0, intensity)),
                    Fault::Dangerous | Fault::DangerousRare | Fault::NewException if on => {
                        lv.extra.push((0, intensity));
                    }
                    Fault::KnownMore if on => lv.known[known_target] *= intensity,
                    Fault::ErrorLines if on => lv.errors *= intensity,
                    Fault::Cpu if on => {
                        lv.cpu_add += intensity;
                        lv.load_mult *= 1.0 + intensity / 40.0;
                    }
                    // Threads queueing on a lock or on IO: load rises by a multiple of the cores.
                    Fault::Load if on => lv.load_add += 0.5 * intensity * app.host_cores[slot],
                    Fault::MemoryLeak => lv.mem_add += intensity * (since_fault + 1) as f64,
                    Fault::DiskIo if on => lv.disk_add += intensity,
                    Fault::VolumeCollapse if on => lv.lines *= intensity,
                    Fault::Latency if on => lv.latency *= intensity,
                    Fault::ServerErrors if on => lv.server_errors_add += intensity,
                    Fault::TrafficCollapse if on => {
                        lv.requests *= intensity;
                        lv.traffic *= intensity;
                        lv.lines *= 0.5;
                    }
                    _ => {}
                }
            }
            if gaps
                .iter()
                .any(|&(gh, from, to)| gh == h && t >= from && t < to)
            {
                lv.present = false;
            }
            // Sample the minute.
            mem_walk[h] = (mem_walk[h] + 0.08 * rng.normal()).clamp(5.0, 95.0);
            if !lv.present {
                continue;
            }
            let lines_mean = lv.lines.max(0.0);
            let lines = (lines_mean + 1.5 * lines_mean.sqrt() * rng.normal())
                .round()
                .max(0.0) as u64;
            let l = lines as f64;
            let error_lines = rng.negbin(l * app.error_rate * lv.errors, 2.0);
            let warn_lines = rng.negbin(l * app.warn_rate, 3.0);
            let mut exceptions = BTreeMap::new();
            for (i, e) in app.exceptions.iter().enumerate() {
                let k = rng.negbin(l / 1000.0 * e.rate * lv.known[i], e.shape);
                if k > 0 {
                    exceptions.insert(fingerprint_hex(e.fp), k);
                }
            }
            for &(i, mean) in &lv.extra {
                let (fp, _, shape) = &extras[i];
                let k = if benign == Benign::RareNew && fault.is_none() {
                    1
                } else if fault == Some(Fault::DangerousStartup)
                    || fault == Some(Fault::DangerousRare)
                {
                    rng.poisson(mean)
                } else {
                    rng.negbin(
                        mean * if fault.is_some() {
                            1.0
                        } else {
                            l / lines_mean.max(1.0)
                        },
                        *shape,
                    )
                };
                if k > 0 {
                    *exceptions.entry(fingerprint_hex(*fp)).or_insert(0) += k;
                }
            }
            let (s, off, scale) = cpu_series[h];
            let series = &corpus.series[s];
            let base_cpu =
                scale * series[(off + ((t - start_minute) / 60) as usize) % series.len()];
            // A cron job on one host, hourly, whatever the release.
            if let Some(c) = cron
                && c.host == h
                && (((t - start_minute) / 60 - c.phase).rem_euclid(60)) < c.minutes
            {
                lv.cpu_add += c.cpu;
                lv.disk_add += 0.5 * c.cpu;
            }
            // CPU follows the work: the series is the host's usual busy level, of which
            // 70 % grows and shrinks with its traffic.
            let cpu =
                (base_cpu * (0.3 + 0.7 * lv.traffic.max(0.0)) + lv.cpu_add + 0.8 * rng.normal())
                    .clamp(0.0, 100.0);
            let cores = app.host_cores[slot];
            let load1 = ((cpu / 100.0 * cores * lv.load_mult + lv.load_add)
                * (1.0 + 0.1 * rng.normal()))
            .max(0.0);
            let disk_busy = (3.0 + 2.0 * rng.gamma(1.5) + lv.disk_add).clamp(0.0, 100.0);
            let mem = (mem_walk[h] + lv.mem_add).clamp(0.0, 99.5);
            // A GC pause now and then slows a host's minute: benign, on any host.
            if web_rng.chance(0.02) {
                lv.latency *= 1.6;
            }
            let requests = app
                .web
                .map(|web| requests_of(&mut web_rng, &web, lines_mean, &lv));
            minutes.push(CaseMinute {
                host: hosts[h].clone(),
                minute: t,
                lines,
                // Generated lines are records: no separate event count.
                events: 0,
                error_lines,
                warn_lines,
                exceptions,
                host_metrics: Some(CaseHostMetrics {
                    cpu_pct: Some(round2(cpu)),
                    cpu_pct_max: Some(round2((cpu * 1.3).min(100.0))),
                    mem_used_pct: Some(round2(mem)),
                    load1: Some(round2(load1)),
                    disk_read_bytes: Some((disk_busy * 40_000.0) as u64),
                    disk_write_bytes: Some((disk_busy * 120_000.0) as u64),
                    disk_busy_pct: Some(round2(disk_busy)),
                    ..CaseHostMetrics::default()
                }),
                requests,
            });
        }
        t += 60;
    }
    // A very rare dangerous fault still shows at least once.
    if matches!(fault, Some(Fault::DangerousRare | Fault::DangerousStartup))
        && let Some((fp, _, _)) = extras.first()
    {
        let hex = fingerprint_hex(*fp);
        if !minutes.iter().any(|m| m.exceptions.contains_key(&hex)) {
            let h = affected[0];
            let at = release_minute[h].max(fault_minute);
            if let Some(m) = minutes
                .iter_mut()
                .find(|m| m.host == hosts[h] && m.minute >= at)
            {
                m.exceptions.insert(hex, 1);
            }
        }
    }

    let mut exceptions: BTreeMap<String, Definition> = app
        .exceptions
        .iter()
        .map(|e| (fingerprint_hex(e.fp), e.definition.clone()))
        .collect();
    if benign == Benign::LineMove {
        // The new version moved code: messages and line numbers differ, fingerprints not.
        for d in exceptions.values_mut() {
            d.message.push_str(" (line 214 → 231)");
        }
    }
    for (fp, d, _) in &extras {
        exceptions.insert(fingerprint_hex(*fp), d.clone());
    }
    let mut id = format!(
        "g{seed}-{index:05}-{}-{}",
        if bad { "bad" } else { "ok" },
        name.replace(' ', "")
    );
    for (flag, word) in [
        (partial, "partial"),
        (delayed, "delayed"),
        (intermittent, "intermittent"),
    ] {
        if flag {
            id.push('-');
            id.push_str(word);
        }
    }
    id.push_str(&format!("-{topology:?}").to_lowercase());
    Case {
        id,
        app: app.name.clone(),
        expect: Some(if bad { Expected::Block } else { Expected::Pass }),
        fault_at: bad.then_some(fault_at),
        kind: Some(format!(
            "{}-{}",
            if bad { "bad" } else { "ok" },
            name.split(' ').next().unwrap_or_default()
        )),
        release: CaseRelease {
            version: Some(format!("1.{}.{}", index % 97, index % 13)),
            batches,
            reference_hosts: reference,
            until: Some(end_minute),
        },
        known_fingerprints: app
            .exceptions
            .iter()
            .map(|e| fingerprint_hex(e.fp))
            .collect(),
        exceptions,
        minutes,
    }
}

/// One host-minute of requests: as many as the lines' traffic makes (times the levers), a
/// log-normal histogram of response times around the minute's median, 5xx drawn
/// overdispersed.
fn requests_of(rng: &mut Rand, web: &Web, lines_mean: f64, lv: &Levers) -> Requests {
    let mean = lines_mean * web.requests_per_line * lv.requests;
    let median = web.median_ms * lv.latency * (0.1 * rng.normal()).exp();
    let mut latency = Latency::default();
    let mut count = 0;
    if mean > 0.0 {
        let cdf = |ms: f64| 1.0 - normal_upper_tail((ms / median).ln() / web.sigma);
        let lo = bucket_of(median * (-4.5 * web.sigma).exp());
        let hi = bucket_of(median * (4.5 * web.sigma).exp());
        for b in lo..=hi {
            let p = cdf(upper_ms(b)) - cdf(upper_ms(b - 1));
            let n = rng.poisson(mean * p);
            if n > 0 {
                latency.buckets.insert(b, n);
                latency.sum += n as f64 * representative_ms(b);
                count += n;
            }
        }
    }
    let share = (web.error_share * lv.server_errors + lv.server_errors_add).min(1.0);
    let failed = rng.negbin(count as f64 * share, web.error_shape).min(count);
    Requests {
        count,
        status: StatusClasses {
            success: count - failed,
            server_error: failed,
            ..StatusClasses::default()
        },
        malformed: 0,
        latency_ms: latency,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Generates `count` cases of the set `seed` with the given share of bad releases.
pub fn generate_with(seed: u64, count: usize, bad_fraction: f64, corpus: &CpuCorpus) -> Vec<Case> {
    (0..count)
        .map(|i| generate_case_with(seed, i, bad_fraction, corpus))
        .collect()
}

/// Writes cases as JSON Lines.
///
/// # Errors
/// I/O errors of `out`.
pub fn write_cases(cases: &[Case], out: &mut impl std::io::Write) -> std::io::Result<()> {
    for c in cases {
        serde_json::to_writer(&mut *out, c)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
