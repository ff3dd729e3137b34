//! The agent's main loop: read what the log files gained, count it per minute, cut minute
//! reports on the flush interval and hand them to the shipper.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::{Report, report::Body};

use crate::admin::{self, Admin, DetectorView, Metrics, SpoolView, Status};
use crate::config::{AgentConfig, LogsConfig, StartAt};
use crate::host::{
    HostError, HostSampler, MinuteHostMetrics, MinuteProcessMetrics, ProcessSampler,
};
use crate::identity::{Identity, IdentityError};
use crate::minute::{Counts, MinuteCounters};
use crate::ship::{ShipError, Shipper};
use crate::spool::{Spool, SpoolError, SpoolRecord};

/// Version of the exception fingerprint algorithm carried in every report.
pub const FINGERPRINT_VERSION: u32 = 1;
/// How often files are checked for new data.
const READ_INTERVAL: Duration = Duration::from_millis(250);
/// How long a stopping agent waits for its last reports to be acknowledged.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Ship(#[from] ShipError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("admin_listen {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` resolves.
///
/// # Errors
/// [`AgentError`] when the data directory or the detector endpoint cannot be used.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let mut identity = Identity::load_or_create(&config.data_dir)?;
    let spool = Spool::open(&config.data_dir, config.spool.max_bytes, 0)?;
    identity.advance_past(spool.last_seq())?;
    let acked = spool.acked();
    let spool = Arc::new(Mutex::new(spool));
    let apps: Vec<String> = config.logs.iter().map(|l| l.app.clone()).collect();
    let metrics = Arc::new(Metrics::new(&apps));
    let shipper = Shipper::start(
        &config.detector,
        Arc::clone(&spool),
        acked,
        Arc::clone(&metrics),
    )?;
    let status = Arc::new(Mutex::new(Status {
        host: config.host.clone(),
        instance: identity.instance().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Status::default()
    }));
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = config.admin_listen {
        let listener = admin::bind(addr)
            .await
            .map_err(|source| AgentError::Admin { addr, source })?;
        let admin = Admin {
            metrics: Arc::clone(&metrics),
            status: Arc::clone(&status),
        };
        tokio::spawn(async move {
            let stopped = async {
                let _ = admin_stopped.await;
            };
            if let Err(e) = admin::serve(listener, admin, stopped).await {
                tracing::warn!(error = %e, "admin endpoint stopped");
            }
        });
    }
    let mut outbox = Outbox {
        spool,
        unspooled: Vec::new(),
        metrics: Arc::clone(&metrics),
    };
    let mut counters = MinuteCounters::new(apps.clone(), unix_now());
    let mut host = HostWatch::new(&config, apps, Arc::clone(&metrics))?;
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let sample_every = config.host_metrics.interval;
    let mut sample_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + until_multiple_of(sample_every),
        sample_every,
    );
    let mut files = LineCounter::new(&config.logs);
    let flush_every = config.detector.flush_interval;
    // At a 60 s interval each minute goes out once, shortly after it closes.
    let include_open = flush_every < Duration::from_secs(60);
    let first_flush = if include_open {
        flush_every
    } else {
        // Once the minute has closed and its last host sample is in.
        let lag = (sample_every.as_secs() / 2 + 3).max(2);
        let into_minute = u64::try_from(unix_now().rem_euclid(60)).unwrap_or(0);
        Duration::from_secs((60 + lag - into_minute) % 60).max(Duration::from_secs(1))
    };
    let mut flush_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + first_flush, flush_every);
    let mut read_tick = tokio::time::interval(READ_INTERVAL);
    tracing::info!(host = %config.host, instance = identity.instance(), endpoint = %config.detector.endpoint, sources = config.logs.len(), "vigil-agent running");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = read_tick.tick() => {
                // A full spool (or one that failed) pauses reading: the files keep the data.
                if outbox.accepts_more() {
                    files.poll(&mut counters, unix_now());
                }
            }
            _ = sample_tick.tick() => host.sample(unix_now()),
            _ = status_tick.tick() => publish_status(&status, &outbox, &config, *shipper.acked().borrow(), &metrics),
            _ = flush_tick.tick() => {
                host.drain(&mut counters, unix_now(), false);
                flush(&config, &mut counters, include_open, &mut identity, &mut outbox)?;
                shipper.wake();
            }
            () = &mut shutdown => break,
        }
    }
    if outbox.accepts_more() {
        files.poll(&mut counters, unix_now());
    }
    host.drain(&mut counters, unix_now(), true);
    flush(&config, &mut counters, true, &mut identity, &mut outbox)?;
    shipper.wake();
    shipper.close(SHUTDOWN_GRACE).await;
    let _ = admin_stop.send(());
    tracing::info!("vigil-agent stopped");
    Ok(())
}

/// Refreshes what `GET /status` shows.
fn publish_status(
    status: &Mutex<Status>,
    outbox: &Outbox,
    config: &AgentConfig,
    acked: u64,
    metrics: &Metrics,
) {
    let spool = {
        let mut spool = outbox.spool();
        let s = spool.status();
        let oldest = if s.reports > 0 {
            let first = spool.acked() + 1;
            spool
                .read_from(first, 1)
                .ok()
                .and_then(|r| r.first().map(|r| r.sent_at))
        } else {
            None
        };
        SpoolView {
            reports: s.reports,
            bytes: s.bytes,
            oldest,
            full: s.full,
            corrupt_records: s.corrupt_records,
        }
    };
    let mut status = status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    status.spool = spool;
    status.detector = DetectorView {
        endpoint: config.detector.endpoint.clone(),
        connected: metrics.connected.load(std::sync::atomic::Ordering::Relaxed) == 1,
        last_acked_seq: acked,
    };
}

/// Time until the next wall-clock multiple of `every` (so samples of all hosts line up).
fn until_multiple_of(every: Duration) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let every_ms = every.as_millis().max(1);
    let into = now.as_millis() % every_ms;
    Duration::from_millis(u64::try_from(every_ms - into).unwrap_or(1000))
}

/// Host and process metrics, sampled on their interval and aggregated per minute.
struct HostWatch {
    sampler: HostSampler,
    minutes: MinuteHostMetrics,
    processes: Option<ProcessSampler>,
    process_minutes: MinuteProcessMetrics,
    apps: Vec<String>,
    failing: bool,
    metrics: Arc<Metrics>,
}

impl HostWatch {
    fn new(
        config: &AgentConfig,
        apps: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, HostError> {
        let patterns: Vec<(String, String)> = config
            .logs
            .iter()
            .filter_map(|l| {
                l.process
                    .as_ref()
                    .map(|re| (l.app.clone(), re.as_str().to_owned()))
            })
            .collect();
        let procfs = &config.host_metrics.procfs;
        let processes = if patterns.is_empty() {
            None
        } else {
            Some(ProcessSampler::new(procfs.clone(), &patterns)?)
        };
        Ok(Self {
            sampler: HostSampler::new(procfs.clone()),
            minutes: MinuteHostMetrics::new(),
            processes,
            process_minutes: MinuteProcessMetrics::new(),
            apps,
            failing: false,
            metrics,
        })
    }

    fn sample(&mut self, now: i64) {
        let at = std::time::Instant::now();
        let mut result = self.sampler.sample(at).map(|sample| {
            if let Some(sample) = sample {
                self.minutes.add(now, &sample);
            }
        });
        if let Some(processes) = self.processes.as_mut() {
            match processes.sample(at) {
                Ok(samples) => self.process_minutes.add(now, samples),
                Err(e) => result = Err(e),
            }
        }
        admin::add(&self.metrics.host_samples, 1);
        if result.is_err() {
            admin::add(&self.metrics.host_sample_errors, 1);
        }
        admin::add(&self.metrics.sample_nanos, elapsed_nanos(at));
        // One line when sampling starts failing and one when it recovers, not one per tick.
        match result {
            Err(e) if !self.failing => {
                tracing::warn!(error = %e, "host metrics sampling failed");
                self.failing = true;
            }
            Ok(()) if self.failing => {
                tracing::info!("host metrics sampling works again");
                self.failing = false;
            }
            _ => {}
        }
    }

    /// Moves completed minutes (all minutes when `all`) into the counters.
    fn drain(&mut self, counters: &mut MinuteCounters, now: i64, all: bool) {
        let (host, processes) = if all {
            (self.minutes.take_all(), self.process_minutes.take_all())
        } else {
            (
                self.minutes.take_completed(now),
                self.process_minutes.take_completed(now),
            )
        };
        for (minute, metrics) in host {
            counters.set_host_metrics(minute, metrics);
        }
        for (minute, apps) in processes {
            for metrics in apps {
                if let Some(index) = self.apps.iter().position(|a| *a == metrics.app) {
                    counters.set_process_metrics(index, minute, metrics.cpu_pct, metrics.rss_bytes);
                }
            }
        }
    }
}

fn elapsed_nanos(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Reports on their way into the spool.
struct Outbox {
    metrics: Arc<Metrics>,
    spool: Arc<Mutex<Spool>>,
    /// Reports whose append failed (disk full, I/O error), retried on the next flush.
    unspooled: Vec<SpoolRecord>,
}

impl Outbox {
    fn spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn accepts_more(&self) -> bool {
        self.unspooled.is_empty() && !self.spool().status().full
    }

    fn push(&mut self, records: Vec<SpoolRecord>) {
        self.unspooled.extend(records);
        let result = {
            let mut spool = self.spool();
            spool.append(&self.unspooled)
        };
        match result {
            Ok(()) => {
                admin::add(&self.metrics.reports_spooled, self.unspooled.len() as u64);
                self.unspooled.clear();
            }
            Err(e) => {
                tracing::error!(error = %e, held = self.unspooled.len(), "cannot write the spool; reading paused, retrying")
            }
        }
    }
}

fn flush(
    config: &AgentConfig,
    counters: &mut MinuteCounters,
    include_open: bool,
    identity: &mut Identity,
    outbox: &mut Outbox,
) -> Result<(), AgentError> {
    let now = unix_now();
    let mut records = Vec::new();
    for minute in counters.take(now, include_open) {
        let report = Report {
            protocol_version: PROTOCOL_VERSION,
            host: config.host.clone(),
            instance: identity.instance().to_owned(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            fingerprint_version: FINGERPRINT_VERSION,
            seq: identity.next_seq()?,
            sent_at: now,
            body: Some(Body::Minute(minute)),
        };
        records.push(SpoolRecord {
            report: Some(report),
            positions: Vec::new(),
        });
    }
    if !records.is_empty() || !outbox.unspooled.is_empty() {
        outbox.push(records);
    }
    Ok(())
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Counts the lines files gain, following each configured glob.
struct LineCounter {
    sources: Vec<Source>,
    first_poll: bool,
}

struct Source {
    paths: Vec<String>,
    exclude: Vec<glob::Pattern>,
    start_at: StartAt,
    files: HashMap<PathBuf, Followed>,
}

struct Followed {
    inode: u64,
    offset: u64,
}

impl LineCounter {
    fn new(logs: &[LogsConfig]) -> Self {
        let sources = logs
            .iter()
            .map(|l| Source {
                paths: l.paths.clone(),
                exclude: l
                    .exclude
                    .iter()
                    .filter_map(|p| glob::Pattern::new(p).ok())
                    .collect(),
                start_at: l.start_at,
                files: HashMap::new(),
            })
            .collect();
        Self {
            sources,
            first_poll: true,
        }
    }

    fn poll(&mut self, counters: &mut MinuteCounters, now: i64) {
        let first = std::mem::take(&mut self.first_poll);
        for (app, source) in self.sources.iter_mut().enumerate() {
            for pattern in &source.paths {
                let Ok(paths) = glob::glob(pattern) else {
                    continue;
                };
                for path in paths.flatten() {
                    let excluded = source.exclude.iter().any(|p| {
                        p.matches_path(&path)
                            || path
                                .file_name()
                                .is_some_and(|n| p.matches(&n.to_string_lossy()))
                    });
                    if excluded {
                        continue;
                    }
                    let lines = read_new_lines(
                        &mut source.files,
                        &path,
                        first && source.start_at == StartAt::End,
                    );
                    if lines > 0 {
                        counters.record(
                            app,
                            now,
                            Counts {
                                lines,
                                ..Default::default()
                            },
                        );
                    }
                }
            }
        }
    }
}

/// Reads what `path` gained since the last call and returns the number of complete lines.
fn read_new_lines(
    files: &mut HashMap<PathBuf, Followed>,
    path: &PathBuf,
    skip_existing: bool,
) -> u64 {
    let Ok(mut file) = File::open(path) else {
        return 0;
    };
    let Ok(meta) = file.metadata() else {
        return 0;
    };
    if !meta.is_file() {
        return 0;
    }
    let followed = files.entry(path.clone()).or_insert(Followed {
        inode: meta.ino(),
        offset: if skip_existing { meta.len() } else { 0 },
    });
    if followed.inode != meta.ino() || meta.len() < followed.offset {
        *followed = Followed {
            inode: meta.ino(),
            offset: 0,
        };
    }
    if meta.len() == followed.offset || file.seek(SeekFrom::Start(followed.offset)).is_err() {
        return 0;
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut lines = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                // Only complete lines count; a partial last line waits for its newline.
                match memchr::memrchr(b'\n', chunk) {
                    Some(last) => {
                        lines += memchr::memchr_iter(b'\n', &chunk[..=last]).count() as u64;
                        followed.offset += last as u64 + 1;
                        if last + 1 < n {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
    }
    lines
}
