//! The agent's main loop: tail the log files, turn their lines into events and counts per
//! minute, sample host metrics, cut minute reports on the flush interval into the spool, and
//! persist the files' checkpoints once the detector has acknowledged the reports that
//! counted their lines.
//!
//! Exactly once, end to end: a report in the spool carries the file positions reached once
//! its lines were counted (only completed events count; a pending multi-line event stays
//! behind its file's position). The checkpoint file advances when the detector acknowledges
//! such a report. After a crash the agent resumes from the newest positions in the spool
//! (those reports will still be delivered) or, when the spool holds none, from the
//! checkpoint file; the detector drops re-sent reports by `(instance, seq)`.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::{Report, report::Body};

use crate::admin::{self, Admin, DetectorView, FileStatus, Metrics, SpoolView, Status};
use crate::analysis::LogAnalysis;
use crate::config::AgentConfig;
use crate::host::{
    HostError, HostSampler, MinuteHostMetrics, MinuteProcessMetrics, ProcessSampler,
};
use crate::identity::{Identity, IdentityError};
use crate::java::{AnalyzerError, FINGERPRINT_VERSION};
use crate::minute::MinuteCounters;
use crate::ship::{ShipError, Shipper};
use crate::spool::{SharedSpool, Spool, SpoolError, SpoolRecord};
use crate::tail::{Checkpoints, FileKey, LineSink, SourceConfig, TailError, Tailer, Watcher};

/// How often files are read even without a wake-up from the watcher.
const READ_INTERVAL: Duration = Duration::from_millis(250);
/// How often the globs are rescanned (new files, rotation) without a wake-up.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// A pending event with no new line for this long is complete (the flush timeout).
const EVENT_IDLE: Duration = Duration::from_millis(500);
/// Bytes read per turn of the main loop before other work gets its turn.
const READ_BUDGET: usize = 8 * 1024 * 1024;
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
    #[error(transparent)]
    Tail(#[from] TailError),
    #[error(transparent)]
    Analyzer(#[from] AnalyzerError),
    #[error("admin_listen {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Why [`run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The agent is stopping: wait a little for the last reports to be acknowledged.
    Shutdown,
    /// A new configuration takes over at once; the spool and checkpoints carry everything
    /// not yet acknowledged over to it.
    Reload,
}

/// Runs the agent until `shutdown` resolves.
///
/// # Errors
/// [`AgentError`] when the data directory, the log sources or the detector endpoint cannot
/// be used.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    run_until(config, async {
        shutdown.await;
        Stop::Shutdown
    })
    .await
    .map(drop)
}

/// Runs the agent until `stop` resolves, and says why it stopped.
///
/// # Errors
/// [`AgentError`] when the data directory, the log sources or the detector endpoint cannot
/// be used.
pub async fn run_until(
    config: AgentConfig,
    stop: impl Future<Output = Stop> + Send,
) -> Result<Stop, AgentError> {
    let shutdown = stop;
    let mut identity = Identity::load_or_create(&config.data_dir)?;
    let spool = Spool::open(&config.data_dir, config.spool.max_bytes, 0)?;
    identity.advance_past(spool.last_seq())?;
    let (mut checkpoints, resumed) = Checkpointing::resume(&config.data_dir, &spool)?;
    let acked = spool.acked();
    let spool = SharedSpool::new(spool);
    let apps: Vec<String> = config.logs.iter().map(|l| l.app.clone()).collect();
    let metrics = Arc::new(Metrics::new(&apps));
    let shipper = Shipper::start(&config.detector, spool.clone(), acked, Arc::clone(&metrics))?;
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

    let sources: Vec<SourceConfig> = config
        .logs
        .iter()
        .map(|l| SourceConfig {
            paths: l.paths.clone(),
            exclude: l.exclude.clone(),
            start_at: l.start_at,
            max_line_bytes: l.max_line_bytes,
        })
        .collect();
    let mut logs = Logs {
        tailer: Tailer::new(sources.clone(), resumed.clone())?,
        analysis: LogAnalysis::new(&config, Arc::clone(&metrics))?,
        resumed,
        last_scan: None,
    };
    let wake = Arc::new(Notify::new());
    let _watcher = {
        let wake = Arc::clone(&wake);
        match Watcher::new(&sources, move || wake.notify_one()) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; new data is noticed by polling");
                None
            }
        }
    };

    let mut counters = MinuteCounters::new(apps.clone(), unix_now());
    let mut host = HostWatch::new(&config, apps, Arc::clone(&metrics))?;
    let sample_every = config.host_metrics.interval;
    let mut sample_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + until_multiple_of(sample_every),
        sample_every,
    );
    let flush_every = config.detector.flush_interval;
    let first_flush = if flush_every < Duration::from_secs(60) {
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
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut acked_rx = shipper.acked();
    tracing::info!(host = %config.host, instance = identity.instance(), endpoint = %config.detector.endpoint, sources = config.logs.len(), "vigil-agent running");
    tokio::pin!(shutdown);
    let why = loop {
        tokio::select! {
            _ = read_tick.tick() => {
                logs.read(&mut counters, &mut identity, &mut outbox, &config, &shipper)?;
            }
            () = wake.notified() => {
                logs.read(&mut counters, &mut identity, &mut outbox, &config, &shipper)?;
            }
            _ = sample_tick.tick() => host.sample(unix_now()),
            _ = flush_tick.tick() => {
                let started = Instant::now();
                host.drain(&mut counters, unix_now(), false);
                flush(&config, &mut counters, &mut identity, &mut outbox, &logs, &mut checkpoints)?;
                shipper.wake();
                admin::add(&metrics.flush_nanos, elapsed_nanos(started));
            }
            _ = status_tick.tick() => {
                publish_status(&status, &outbox, &config, *acked_rx.borrow(), &metrics, &logs, &config.logs);
            }
            changed = acked_rx.changed() => {
                if changed.is_ok() {
                    let acked = *acked_rx.borrow_and_update();
                    checkpoints.acknowledged(acked, &outbox);
                }
            }
            why = &mut shutdown => break why,
        }
    };
    host.drain(&mut counters, unix_now(), true);
    flush(
        &config,
        &mut counters,
        &mut identity,
        &mut outbox,
        &logs,
        &mut checkpoints,
    )?;
    shipper.wake();
    let acked = shipper.acked();
    shipper
        .close(match why {
            Stop::Shutdown => SHUTDOWN_GRACE,
            Stop::Reload => Duration::ZERO,
        })
        .await;
    checkpoints.acknowledged(*acked.borrow(), &outbox);
    let _ = admin_stop.send(());
    tracing::info!(?why, "vigil-agent stopped");
    Ok(why)
}

/// The log files: the tailer and the per-file event analysis behind it.
struct Logs {
    tailer: Tailer,
    analysis: LogAnalysis<FileKey>,
    /// The positions this run started from.
    resumed: Checkpoints,
    last_scan: Option<Instant>,
}

/// Hands the tailer's lines to the analysis, counting into the minute counters.
struct Counting<'a> {
    analysis: &'a mut LogAnalysis<FileKey>,
    counters: &'a mut MinuteCounters,
    read_at: i64,
}

impl LineSink for Counting<'_> {
    fn line(
        &mut self,
        source: usize,
        file: FileKey,
        line: &[u8],
        end_offset: u64,
        truncated: bool,
    ) {
        self.analysis.line(
            self.counters,
            source,
            &file,
            line,
            end_offset,
            truncated,
            self.read_at,
        );
    }

    fn file_done(&mut self, _source: usize, file: FileKey) {
        self.analysis.file_done(self.counters, &file);
    }
}

impl Logs {
    /// Reads what the files gained (unless the spool is full), completes idle events and
    /// spools dangerous-exception alerts at once.
    fn read(
        &mut self,
        counters: &mut MinuteCounters,
        identity: &mut Identity,
        outbox: &mut Outbox,
        config: &AgentConfig,
        shipper: &Shipper,
    ) -> Result<(), AgentError> {
        let started = Instant::now();
        if self
            .last_scan
            .is_none_or(|at| at.elapsed() >= SCAN_INTERVAL / 10)
        {
            self.tailer.scan()?;
            self.last_scan = Some(Instant::now());
        }
        // A full spool (or one that failed) pauses reading: the files keep the data.
        if outbox.accepts_more() {
            let mut sink = Counting {
                analysis: &mut self.analysis,
                counters,
                read_at: unix_now(),
            };
            let mut budget = READ_BUDGET;
            while budget > 0 {
                let progress = self.tailer.read(budget.min(1024 * 1024), &mut sink);
                budget = budget.saturating_sub(usize::try_from(progress.bytes).unwrap_or(budget));
                if !progress.more || progress.bytes == 0 {
                    break;
                }
            }
        }
        self.analysis
            .flush_idle(counters, Instant::now(), EVENT_IDLE);
        let alerts = self.analysis.take_alerts();
        if !alerts.is_empty() {
            let now = unix_now();
            let mut records = Vec::with_capacity(alerts.len());
            for alert in alerts {
                records.push(SpoolRecord {
                    report: Some(report(config, identity, now, Body::Alert(alert))?),
                    positions: Vec::new(),
                });
            }
            outbox.push(records);
            shipper.wake();
        }
        admin::add(&outbox.metrics.read_nanos, elapsed_nanos(started));
        let stats = self.tailer.stats();
        outbox.metrics.rotations.store(
            stats.rotations + stats.truncations,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// The files' positions up to which every line is counted: the tailer's positions,
    /// lowered to the start of each file's pending event.
    fn counted_positions(&self) -> Checkpoints {
        let mut positions = self.tailer.checkpoints();
        let pending: Vec<(FileKey, u64)> = positions
            .files
            .iter()
            .filter(|entry| self.analysis.has_pending(&entry.key))
            .map(|entry| {
                let start = self
                    .analysis
                    .committed_offset(&entry.key)
                    .or_else(|| self.resumed.offset(entry.key))
                    .unwrap_or(0);
                (entry.key, start.min(entry.offset))
            })
            .collect();
        for (key, offset) in pending {
            positions.set_offset(key, offset);
        }
        positions
    }
}

/// The checkpoint file and the positions waiting for their reports' acknowledgement.
struct Checkpointing {
    data_dir: PathBuf,
    /// Positions stored with a report, by that report's seq, oldest first.
    waiting: VecDeque<(u64, Checkpoints)>,
}

impl Checkpointing {
    /// The positions to resume from: the newest ones in the spool (their reports will be
    /// delivered), else the checkpoint file.
    fn resume(data_dir: &Path, spool: &Spool) -> Result<(Self, Checkpoints), AgentError> {
        let stored = Checkpoints::load(data_dir)?;
        let mut waiting = VecDeque::new();
        let resumed = match spool.latest_positions() {
            Some((seq, bytes)) => match serde_json::from_slice::<Checkpoints>(bytes) {
                Ok(positions) => {
                    waiting.push_back((*seq, positions.clone()));
                    positions
                }
                Err(e) => {
                    tracing::warn!(error = %e, "file positions in the spool are unreadable; resuming from the checkpoint file");
                    stored
                }
            },
            None => stored,
        };
        let checkpointing = Self {
            data_dir: data_dir.to_owned(),
            waiting,
        };
        Ok((checkpointing, resumed))
    }

    /// The detector acknowledged every report up to `acked`: persist the newest positions
    /// they cover, and only then let the spool delete those reports (a crash in between
    /// finds the positions in one place or the other, never in neither).
    fn acknowledged(&mut self, acked: u64, outbox: &Outbox) {
        let mut newest = None;
        while self.waiting.front().is_some_and(|(seq, _)| *seq <= acked) {
            newest = self.waiting.pop_front();
        }
        if let Some((seq, positions)) = newest
            && let Err(e) = positions.store(&self.data_dir)
        {
            tracing::warn!(error = %e, seq, "cannot store the file checkpoints; they will be stored with the next acknowledgement");
            self.waiting.push_front((seq, positions));
            return;
        }
        if let Err(e) = outbox.spool.lock().release(acked) {
            tracing::warn!(error = %e, "cannot delete acknowledged reports from the spool");
        }
    }
}

fn report(
    config: &AgentConfig,
    identity: &mut Identity,
    now: i64,
    body: Body,
) -> Result<Report, AgentError> {
    Ok(Report {
        protocol_version: PROTOCOL_VERSION,
        host: config.host.clone(),
        instance: identity.instance().to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        fingerprint_version: FINGERPRINT_VERSION,
        seq: identity.next_seq()?,
        sent_at: now,
        body: Some(body),
    })
}

/// Cuts the counters into minute reports (the open minute's counts so far included, so
/// the positions stored with them cover exactly what they counted) and spools them.
fn flush(
    config: &AgentConfig,
    counters: &mut MinuteCounters,
    identity: &mut Identity,
    outbox: &mut Outbox,
    logs: &Logs,
    checkpoints: &mut Checkpointing,
) -> Result<(), AgentError> {
    let now = unix_now();
    let mut records = Vec::new();
    for minute in counters.take(now, true) {
        records.push(SpoolRecord {
            report: Some(report(config, identity, now, Body::Minute(minute))?),
            positions: Vec::new(),
        });
    }
    let positions = logs.counted_positions();
    if let Some(last) = records.last_mut()
        && let Some(seq) = last.report.as_ref().map(|r| r.seq)
    {
        last.positions = serde_json::to_vec(&positions).unwrap_or_default();
        checkpoints.waiting.push_back((seq, positions));
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

/// Refreshes what `GET /status` shows.
fn publish_status(
    status: &Mutex<Status>,
    outbox: &Outbox,
    config: &AgentConfig,
    acked: u64,
    metrics: &Metrics,
    logs: &Logs,
    sources: &[crate::config::LogsConfig],
) {
    let files = logs
        .tailer
        .files()
        .into_iter()
        .map(|f| FileStatus {
            app: sources
                .get(f.source)
                .map(|s| s.app.clone())
                .unwrap_or_default(),
            path: f.path.display().to_string(),
            offset: f.offset,
            size: f.size,
            lag: f.lag,
        })
        .collect();
    let spool = {
        let mut spool = outbox.spool.lock();
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
    status.files = files;
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
    spool: SharedSpool,
    /// Reports whose append failed (disk full, I/O error), retried on the next flush.
    unspooled: Vec<SpoolRecord>,
}

impl Outbox {
    fn accepts_more(&self) -> bool {
        self.unspooled.is_empty() && !self.spool.lock().status().full
    }

    fn push(&mut self, records: Vec<SpoolRecord>) {
        self.unspooled.extend(records);
        let result = {
            let mut spool = self.spool.lock();
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
