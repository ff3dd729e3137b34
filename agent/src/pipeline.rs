//! The agent's main loop: tail the log files, turn their lines into events and counts per
//! minute, sample host metrics, cut minute reports on the flush interval into the spool, and
//! persist the files' checkpoints once the detector has acknowledged the reports that
//! counted their lines.
//!
//! The tailed sources are the `[[logs]]` entries (Java logs, through [`LogAnalysis`]) and
//! after them the `[[access_logs]]` entries (HTTP access logs, through [`AccessLogs`]); the
//! minute counters add the sources of one app up into one report entry per app. The
//! `[[scrape]]` targets run as tasks of their own ([`Scrapes`]); each good scrape's
//! observation is added to the minute counters here, between reads.
//!
//! Exactly once, end to end: a report in the spool carries the file positions reached once
//! its lines were counted (only completed events count; a pending multi-line event stays
//! behind its file's position; an access-log line is complete by itself). The checkpoint
//! file advances when the detector acknowledges such a report. After a crash the agent
//! resumes from the newest positions in the spool (those reports will still be delivered)
//! or, when the spool holds none, from the checkpoint file; the detector drops re-sent
//! reports by `(instance, seq)`.
//!
//! A `data_dir` that cannot be written (full, read-only, gone) never stops the agent: the
//! reports wait in memory for their seq and their place in the spool, reading pauses (the
//! files keep the lines), the write is retried every second, and `status` and `/metrics`
//! say so. Counting resumes where it stopped once the disk takes writes again.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::{Report, report::Body};

use crate::access::AccessLogs;
use crate::admin::{
    self, Admin, DataDirView, DetectorView, FileStatus, Metrics, SpoolView, Status, TailView,
};
use crate::analysis::LogAnalysis;
use crate::config::AgentConfig;
use crate::host::{
    HostError, HostSampler, MinuteHostMetrics, MinuteProcessMetrics, ProcessSampler,
};
use crate::identity::{Identity, IdentityError};
use crate::java::{AnalyzerError, FINGERPRINT_VERSION};
use crate::minute::{AppSlots, MinuteCounters};
use crate::scrape::Scrapes;
use crate::ship::{ShipError, Shipper};
use crate::spool::{SharedSpool, Spool, SpoolError, SpoolRecord};
use crate::tail::{
    Change, Checkpoints, FileKey, LineSink, PathWatcher, SourceConfig, TailError, Tailer,
};

/// How often files are read when no file watcher could be set up (polling).
const READ_INTERVAL: Duration = Duration::from_millis(250);
/// How often files are read without a wake-up while the file watcher runs: a safety net for
/// changes it does not report (network file systems, a lost event). An idle agent wakes
/// for little else.
const WATCHED_READ_INTERVAL: Duration = Duration::from_secs(2);
/// After the idle time of an event, how much later the read that completes it comes.
const FLUSH_MARGIN: Duration = Duration::from_millis(20);
/// Least time between two reads woken by the file watcher: a writer appending every few
/// milliseconds wakes the agent for each write; gathering them costs at most this much
/// latency and saves the fixed work of a read (hints, scan check, idle flush) per write.
const MIN_WAKE_GAP: Duration = Duration::from_millis(250);
/// How often the globs are rescanned (new files, rotation) at most without a wake-up; with
/// very many files the tailer spaces its scans out further (see `Tailer::scan_due`).
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How often a `data_dir` that could not be written is tried again.
const DATA_DIR_RETRY: Duration = Duration::from_secs(1);
/// How often a `data_dir` that could not be opened at start is tried again.
const DATA_DIR_OPEN_RETRY: Duration = Duration::from_secs(5);
/// Most changed paths remembered between two reads; beyond, a full scan replaces them.
const HINTS_MAX: usize = 65_536;
/// A pending event with no new line for this long is complete (the flush timeout).
const EVENT_IDLE: Duration = Duration::from_millis(500);
/// How long after the last line read idle events are looked for: the read scheduled
/// `EVENT_IDLE` after the last line completes every pending event well within it.
const IDLE_FLUSH_WINDOW: Duration = Duration::from_secs(3);
/// Bytes read per turn of the main loop before other work gets its turn.
const READ_BUDGET: usize = 8 * 1024 * 1024;
/// How long a stopping agent waits for the admin endpoint's open requests.
const ADMIN_STOP_GRACE: Duration = Duration::from_secs(2);
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

impl AgentError {
    /// Whether the error is the file system refusing (full, read-only, permissions, no
    /// descriptor left) rather than bad data: worth waiting for.
    fn is_io(&self) -> bool {
        matches!(
            self,
            AgentError::Identity(IdentityError::Io { .. })
                | AgentError::Spool(SpoolError::Io { .. })
                | AgentError::Tail(TailError::CheckpointRead { .. })
        )
    }
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

/// What the agent keeps in its `data_dir`, opened.
struct DataDir {
    identity: Identity,
    spool: Spool,
    checkpoints: Checkpointing,
    resumed: Checkpoints,
}

impl DataDir {
    fn open(config: &AgentConfig) -> Result<Self, AgentError> {
        let mut identity = Identity::load_or_create(&config.data_dir)?;
        let spool = Spool::open(&config.data_dir, config.spool.max_bytes, 0)?;
        identity.advance_past(spool.last_seq())?;
        let (checkpoints, resumed) = Checkpointing::resume(&config.data_dir, &spool)?;
        Ok(Self {
            identity,
            spool,
            checkpoints,
            resumed,
        })
    }
}

/// Paths the file watcher reported since the last read.
#[derive(Debug, Default)]
struct Hints {
    paths: HashSet<PathBuf>,
    rescan: bool,
}

impl Hints {
    fn add(&mut self, change: Change) {
        match change {
            Change::Rescan => self.rescan = true,
            Change::Paths(paths) => {
                if self.paths.len() + paths.len() > HINTS_MAX {
                    self.paths.clear();
                    self.rescan = true;
                } else if !self.rescan {
                    self.paths.extend(paths);
                }
            }
        }
    }
}

/// Runs the agent until `stop` resolves, and says why it stopped.
///
/// # Errors
/// [`AgentError`] when the log sources or the detector endpoint cannot be used, or the
/// data directory holds state that cannot be read (a corrupt identity). A data directory
/// that cannot be written or read now is waited for, never an error.
pub async fn run_until(
    config: AgentConfig,
    stop: impl Future<Output = Stop> + Send,
) -> Result<Stop, AgentError> {
    let shutdown = stop;
    tokio::pin!(shutdown);
    // The app of each counted source (tailed sources, then scrape targets), and each app once.
    let apps = config.counted_apps();
    let metrics = Arc::new(
        Metrics::new(AppSlots::new(&apps).names()).with_scrapes(
            config
                .scrape
                .iter()
                .map(|s| (s.app.clone(), s.endpoint.url.clone())),
        ),
    );
    let status = Arc::new(Mutex::new(Status {
        host: config.host.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        data_dir: DataDirView {
            path: config.data_dir.display().to_string(),
            writable: true,
            error: None,
        },
        ..Status::default()
    }));
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut admin = AdminTask {
        stop: Some(admin_stop),
        task: None,
    };
    if let Some(addr) = config.admin_listen {
        let listener = admin::bind(addr)
            .await
            .map_err(|source| AgentError::Admin { addr, source })?;
        let state = Admin {
            metrics: Arc::clone(&metrics),
            status: Arc::clone(&status),
        };
        admin.task = Some(tokio::spawn(async move {
            let stopped = async {
                let _ = admin_stopped.await;
            };
            if let Err(e) = admin::serve(listener, state, stopped).await {
                tracing::warn!(error = %e, "admin endpoint stopped");
            }
        }));
    }
    // A data_dir that cannot be used now (read-only, full, missing permissions) is waited
    // for: exiting would only have the service manager restart the agent in a loop.
    let mut logged = false;
    let data = loop {
        match DataDir::open(&config) {
            Ok(data) => break data,
            Err(e) if e.is_io() => {
                if !logged {
                    tracing::error!(data_dir = %config.data_dir.display(), error = %e, "cannot use data_dir; nothing is read until it can be used (retrying every 5 s)");
                    logged = true;
                }
                admin::add(&metrics.data_dir_errors, 1);
                metrics
                    .data_dir_writable
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                metrics
                    .reading_paused
                    .store(1, std::sync::atomic::Ordering::Relaxed);
                {
                    let mut status = status
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    status.data_dir.writable = false;
                    status.data_dir.error = Some(e.to_string());
                    status.paused = Some(format!("data_dir cannot be used: {e}"));
                }
                tokio::select! {
                    () = tokio::time::sleep(DATA_DIR_OPEN_RETRY) => {}
                    why = &mut shutdown => {
                        admin.stop().await;
                        return Ok(why);
                    }
                }
            }
            Err(e) => {
                admin.stop().await;
                return Err(e);
            }
        }
    };
    if logged {
        tracing::info!(data_dir = %config.data_dir.display(), "data_dir can be used again");
    }
    metrics
        .data_dir_writable
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let DataDir {
        mut identity,
        spool,
        mut checkpoints,
        resumed,
    } = data;
    let acked = spool.acked();
    let spool = SharedSpool::new(spool);
    let shipper = Shipper::start(&config.detector, spool.clone(), acked, Arc::clone(&metrics))?;
    {
        let mut status = status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.instance = identity.instance().to_owned();
        status.data_dir.writable = true;
        status.data_dir.error = None;
        status.paused = None;
    }
    let mut outbox = Outbox {
        spool,
        unspooled: Vec::new(),
        unsequenced: VecDeque::new(),
        metrics: Arc::clone(&metrics),
        write_error: None,
        checkpoint_error: None,
    };

    let sources: Vec<SourceConfig> = config.tail_sources();
    let fresh = resumed.scanned_at.is_none();
    let mut tailer = Tailer::new(sources.clone(), resumed.clone())?;
    tailer.set_scan_interval(SCAN_INTERVAL);
    if fresh {
        store_first_positions(&mut tailer, &config.data_dir);
    }
    let hints = Arc::new(Mutex::new(Hints::default()));
    let mut logs = Logs {
        tailer,
        analysis: LogAnalysis::new(&config, Arc::clone(&metrics))?,
        access: AccessLogs::new(&config, Arc::clone(&metrics)),
        resumed,
        hints: Arc::clone(&hints),
        last_line: None,
        last_read: Instant::now(),
        flush_due: None,
    };
    let wake = Arc::new(Notify::new());
    let watcher = {
        let wake = Arc::clone(&wake);
        let on_change = move |change: Change| {
            hints
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .add(change);
            wake.notify_one();
        };
        match PathWatcher::new(&sources, on_change) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; new data is noticed by polling");
                None
            }
        }
    };

    let mut counters =
        MinuteCounters::new(&apps, unix_now()).with_requests(config.access_sources());
    let mut host = HostWatch::new(&config, apps.clone(), Arc::clone(&metrics))?;
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
    let mut read_tick = tokio::time::interval(if watcher.is_some() {
        WATCHED_READ_INTERVAL
    } else {
        READ_INTERVAL
    });
    let mut status_tick = tokio::time::interval(DATA_DIR_RETRY);
    let mut acked_rx = shipper.acked();
    let mut scrapes = Scrapes::start(&config, &metrics);
    tracing::info!(host = %config.host, instance = identity.instance(), endpoint = %config.detector.endpoint, logs = config.logs.len(), access_logs = config.access_logs.len(), scrape = config.scrape.len(), "vigil-agent running");
    let why = loop {
        let flush_at = logs.flush_due.map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = read_tick.tick() => {
                let alerts = logs.read(&mut counters, &outbox)?;
                outbox.alerts(alerts, &config, &mut identity, &mut checkpoints, &shipper);
            }
            () = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)), if flush_at.is_some() => {
                let alerts = logs.read(&mut counters, &outbox)?;
                outbox.alerts(alerts, &config, &mut identity, &mut checkpoints, &shipper);
            }
            () = wake.notified() => {
                // Let the writes that follow this one gather before reading.
                let gap = MIN_WAKE_GAP.saturating_sub(logs.last_read.elapsed());
                if !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                let alerts = logs.read(&mut counters, &outbox)?;
                outbox.alerts(alerts, &config, &mut identity, &mut checkpoints, &shipper);
            }
            _ = sample_tick.tick() => host.sample(unix_now()),
            Some(observation) = scrapes.next() => observation.record(&mut counters),
            _ = flush_tick.tick() => {
                let started = Instant::now();
                host.drain(&mut counters, unix_now(), false);
                flush(&config, &mut counters, &mut identity, &mut outbox, &logs, &mut checkpoints);
                shipper.wake();
                admin::add(&metrics.flush_nanos, elapsed_nanos(started));
            }
            _ = status_tick.tick() => {
                // Retry what a data_dir that refused writes left behind.
                if outbox.pending() {
                    outbox.seal(&config, &mut identity, &mut checkpoints);
                    shipper.wake();
                }
                if checkpoints.unstored() {
                    checkpoints.acknowledged(*acked_rx.borrow(), &mut outbox);
                }
                publish_status(&status, &outbox, &config, *acked_rx.borrow(), &metrics, &logs, &apps);
            }
            changed = acked_rx.changed() => {
                if changed.is_ok() {
                    let acked = *acked_rx.borrow_and_update();
                    checkpoints.acknowledged(acked, &mut outbox);
                }
            }
            why = &mut shutdown => break why,
        }
    };
    scrapes.stop().await;
    host.drain(&mut counters, unix_now(), true);
    flush(
        &config,
        &mut counters,
        &mut identity,
        &mut outbox,
        &logs,
        &mut checkpoints,
    );
    if outbox.pending() {
        tracing::warn!(
            reports = outbox.unsequenced.len() + outbox.unspooled.len(),
            "stopping with reports that data_dir did not take; their lines are read again at the next start"
        );
    }
    shipper.wake();
    let acked = shipper.acked();
    shipper
        .close(match why {
            Stop::Shutdown => SHUTDOWN_GRACE,
            Stop::Reload => Duration::ZERO,
        })
        .await;
    checkpoints.acknowledged(*acked.borrow(), &mut outbox);
    admin.stop().await;
    tracing::info!(?why, "vigil-agent stopped");
    Ok(why)
}

/// The admin endpoint's task and the signal that stops it.
struct AdminTask {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AdminTask {
    /// Stops the endpoint and waits until its listener is closed (at most
    /// [`ADMIN_STOP_GRACE`], then the task is aborted and waited for): a reload binds the
    /// same address again at once, and on the agent's one runtime thread nothing else would
    /// drop the old listener before that.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            crate::task::stop_within(task, ADMIN_STOP_GRACE).await;
        }
    }
}

/// A first start (no positions in the spool nor in the checkpoint file): scans the globs and
/// stores where each file starts being read, and when, before a line is read. An agent
/// killed before its first report then resumes from these, and finds the files that
/// rotated away meanwhile (renamed, compressed, or created and rotated after this scan)
/// instead of starting afresh from what the globs match then, which would skip them. A
/// failure is logged and the agent goes on: its first acknowledged report stores them.
fn store_first_positions(tailer: &mut Tailer, data_dir: &Path) {
    let stored = tailer
        .scan()
        .and_then(|()| tailer.checkpoints().store(data_dir));
    if let Err(e) = stored {
        tracing::warn!(error = %e, "cannot store the first file positions; an agent killed before its first report may miss files rotated meanwhile");
    }
}

/// The log files: the tailer and what reads its lines (the per-file event analysis of the
/// Java logs, the access logs' parsers).
struct Logs {
    tailer: Tailer,
    analysis: LogAnalysis<FileKey>,
    access: AccessLogs,
    /// The positions this run started from.
    resumed: Checkpoints,
    /// What the file watcher reported since the last read.
    hints: Arc<Mutex<Hints>>,
    /// When a line was last handed to the analysis: idle events need completing only for a
    /// while after that (the analysis's `flush_idle` visits every file).
    last_line: Option<Instant>,
    /// When the files were last read.
    last_read: Instant,
    /// When a read must come to complete the events pending after the last line read
    /// (`EVENT_IDLE` later), whatever the watcher says.
    flush_due: Option<Instant>,
}

/// Hands the tailer's lines to the analysis (Java logs) or the access logs, by source,
/// counting into the minute counters.
struct Counting<'a> {
    analysis: &'a mut LogAnalysis<FileKey>,
    access: &'a mut AccessLogs,
    counters: &'a mut MinuteCounters,
    read_at: i64,
    /// Java-log lines (and finished files) handed on: what may leave events pending.
    lines: u64,
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
        if self.access.is_access(source) {
            // Complete by itself: nothing stays pending.
            self.access
                .line(self.counters, source, line, truncated, self.read_at);
            return;
        }
        self.lines += 1;
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

    fn file_done(&mut self, source: usize, file: FileKey) {
        if self.access.is_access(source) {
            return;
        }
        self.lines += 1;
        self.analysis.file_done(self.counters, &file);
    }
}

impl Logs {
    /// Reads what the files gained (unless the spool is full or data_dir refuses writes),
    /// completes idle events, and returns the dangerous-exception alerts raised.
    fn read(
        &mut self,
        counters: &mut MinuteCounters,
        outbox: &Outbox,
    ) -> Result<Vec<vigil_proto::v1::Alert>, AgentError> {
        let started = Instant::now();
        self.last_read = started;
        let hints = std::mem::take(
            &mut *self
                .hints
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if hints.rescan {
            self.tailer.request_scan();
        }
        if !hints.paths.is_empty() {
            self.tailer.changed(hints.paths);
        }
        if self.tailer.scan_due() {
            self.tailer.scan()?;
        }
        // A full spool, or a data_dir that refuses writes, pauses reading: the files keep
        // the data.
        if outbox.accepts_more() {
            let mut sink = Counting {
                analysis: &mut self.analysis,
                access: &mut self.access,
                counters,
                read_at: unix_now(),
                lines: 0,
            };
            let mut budget = READ_BUDGET;
            loop {
                let progress = self.tailer.read(budget.min(1024 * 1024), &mut sink);
                budget = budget.saturating_sub(usize::try_from(progress.bytes).unwrap_or(budget));
                // `read` also releases finished files: one call even with no budget left.
                if budget == 0 || !progress.more || progress.bytes == 0 {
                    break;
                }
            }
            if sink.lines > 0 {
                let now = Instant::now();
                self.last_line = Some(now);
                self.flush_due = Some(now + EVENT_IDLE + FLUSH_MARGIN);
            }
        }
        if self.flush_due.is_some_and(|due| started >= due) {
            self.flush_due = None;
        }
        // An event is complete once it saw no line for EVENT_IDLE: two calls that far apart
        // after its last line complete it, later calls find nothing to do.
        let now = Instant::now();
        if self
            .last_line
            .is_some_and(|at| now.saturating_duration_since(at) < IDLE_FLUSH_WINDOW)
        {
            self.analysis.flush_idle(counters, now, EVENT_IDLE);
        }
        self.analysis.publish_metrics();
        self.access.publish_metrics();
        let alerts = self.analysis.take_alerts();
        admin::add(&outbox.metrics.read_nanos, elapsed_nanos(started));
        let stats = self.tailer.stats();
        outbox.metrics.rotations.store(
            stats.rotations + stats.truncations,
            std::sync::atomic::Ordering::Relaxed,
        );
        outbox
            .metrics
            .fd_limit_hits
            .store(stats.fd_limit_hits, std::sync::atomic::Ordering::Relaxed);
        Ok(alerts)
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
    /// The last store failed: retried every second, not only with the next acknowledgement.
    unstored: bool,
    /// The last release of acknowledged reports from the spool failed (logged once).
    release_failed: bool,
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
            unstored: false,
            release_failed: false,
        };
        Ok((checkpointing, resumed))
    }

    /// Whether acknowledged positions still wait to be stored.
    fn unstored(&self) -> bool {
        self.unstored
    }

    /// The detector acknowledged every report up to `acked`: persist the newest positions
    /// they cover, and only then let the spool delete those reports (a crash in between
    /// finds the positions in one place or the other, never in neither).
    fn acknowledged(&mut self, acked: u64, outbox: &mut Outbox) {
        let mut newest = None;
        while self.waiting.front().is_some_and(|(seq, _)| *seq <= acked) {
            newest = self.waiting.pop_front();
        }
        if let Some((seq, positions)) = newest {
            match positions.store(&self.data_dir) {
                Ok(()) => {
                    self.unstored = false;
                    if outbox.checkpoint_error.take().is_some() {
                        tracing::info!("file checkpoints stored again");
                    }
                }
                Err(e) => {
                    if outbox.checkpoint_error.is_none() {
                        tracing::warn!(error = %e, seq, "cannot store the file checkpoints; the spool keeps the positions, retrying every second");
                    }
                    admin::add(&outbox.metrics.data_dir_errors, 1);
                    outbox.checkpoint_error = Some(e.to_string());
                    self.unstored = true;
                    self.waiting.push_front((seq, positions));
                    return;
                }
            }
        }
        match outbox.spool.lock().release(acked) {
            Ok(()) => self.release_failed = false,
            Err(e) => {
                if !self.release_failed {
                    tracing::warn!(error = %e, "cannot delete acknowledged reports from the spool; retrying with the next acknowledgement");
                }
                self.release_failed = true;
            }
        }
    }
}

fn report(config: &AgentConfig, identity: &Identity, seq: u64, now: i64, body: Body) -> Report {
    Report {
        protocol_version: PROTOCOL_VERSION,
        host: config.host.clone(),
        instance: identity.instance().to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        fingerprint_version: FINGERPRINT_VERSION,
        seq,
        sent_at: now,
        body: Some(body),
    }
}

/// Cuts the counters into minute reports (the open minute's counts so far included, so
/// the positions stored with them cover exactly what they counted) and spools them. While
/// earlier reports still wait for data_dir, the counters are left to grow instead (reading
/// is paused meanwhile, so they hold little more than host metrics).
fn flush(
    config: &AgentConfig,
    counters: &mut MinuteCounters,
    identity: &mut Identity,
    outbox: &mut Outbox,
    logs: &Logs,
    checkpoints: &mut Checkpointing,
) {
    if outbox.pending() {
        outbox.seal(config, identity, checkpoints);
        if outbox.pending() {
            return;
        }
    }
    let bodies: Vec<Body> = counters
        .take(unix_now(), true)
        .into_iter()
        .map(Body::Minute)
        .collect();
    if bodies.is_empty() {
        return;
    }
    let positions = logs.counted_positions();
    let last = bodies.len() - 1;
    for (i, body) in bodies.into_iter().enumerate() {
        let positions = (i == last).then(|| positions.clone());
        outbox.unsequenced.push_back((body, positions));
    }
    outbox.seal(config, identity, checkpoints);
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
    source_apps: &[String],
) {
    let files = logs
        .tailer
        .files()
        .into_iter()
        .map(|f| FileStatus {
            app: source_apps.get(f.source).cloned().unwrap_or_default(),
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
    let fds = logs.tailer.descriptors();
    let tail = TailView {
        files: fds.files as u64,
        open_files: fds.open as u64,
        max_open_files: fds.max_open as u64,
        files_waiting: fds.waiting as u64,
        fd_limited: fds.limited,
    };
    let error = outbox.data_dir_error();
    let paused = outbox.paused(spool.full);
    let store = |gauge: &std::sync::atomic::AtomicU64, value: u64| {
        gauge.store(value, std::sync::atomic::Ordering::Relaxed);
    };
    store(&metrics.data_dir_writable, u64::from(error.is_none()));
    store(&metrics.reading_paused, u64::from(paused.is_some()));
    let mut status = status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    status.files = files;
    status.spool = spool;
    status.tail = tail;
    status.data_dir.writable = error.is_none();
    status.data_dir.error = error;
    status.paused = paused;
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
    /// Reports with their seq whose append failed (disk full, read-only, I/O error), retried
    /// every second.
    unspooled: Vec<SpoolRecord>,
    /// Report bodies waiting for their seq (the identity file could not be written), oldest
    /// first, each with the file positions to store with it.
    unsequenced: VecDeque<(Body, Option<Checkpoints>)>,
    /// Why the last write of a report to data_dir failed, while reports wait.
    write_error: Option<String>,
    /// Why the last store of the checkpoint file failed, until one succeeds.
    checkpoint_error: Option<String>,
}

impl Outbox {
    /// Whether reports wait for data_dir.
    fn pending(&self) -> bool {
        !self.unsequenced.is_empty() || !self.unspooled.is_empty()
    }

    fn accepts_more(&self) -> bool {
        !self.pending() && !self.spool.lock().status().full
    }

    /// Why data_dir does not take writes now, if it does not.
    fn data_dir_error(&self) -> Option<String> {
        self.write_error
            .clone()
            .or_else(|| self.checkpoint_error.clone())
    }

    /// Why reading is paused, if it is.
    fn paused(&self, spool_full: bool) -> Option<String> {
        if self.pending() {
            Some(format!(
                "data_dir cannot be written: {}",
                self.write_error.as_deref().unwrap_or("retrying")
            ))
        } else if spool_full {
            Some("the spool is full (the detector has not acknowledged its reports)".into())
        } else {
            None
        }
    }

    /// Spools alerts at once (as far as data_dir allows).
    fn alerts(
        &mut self,
        alerts: Vec<vigil_proto::v1::Alert>,
        config: &AgentConfig,
        identity: &mut Identity,
        checkpoints: &mut Checkpointing,
        shipper: &Shipper,
    ) {
        if alerts.is_empty() {
            return;
        }
        self.unsequenced
            .extend(alerts.into_iter().map(|alert| (Body::Alert(alert), None)));
        self.seal(config, identity, checkpoints);
        shipper.wake();
    }

    /// Gives the waiting bodies their seqs (in order) and appends the reports to the spool.
    /// Whatever data_dir refuses waits for the next call.
    fn seal(
        &mut self,
        config: &AgentConfig,
        identity: &mut Identity,
        checkpoints: &mut Checkpointing,
    ) {
        let seqs = match self.unsequenced.len() as u64 {
            0 => 0..0,
            n => identity.next_seqs(n).unwrap_or_else(|e| {
                self.write_failed(e.to_string());
                0..0
            }),
        };
        // One seq per report waiting for one (none when the identity could not be written).
        let reserved = usize::try_from(seqs.end - seqs.start)
            .unwrap_or(0)
            .min(self.unsequenced.len());
        let bodies: Vec<_> = self.unsequenced.drain(..reserved).collect();
        for (seq, (body, positions)) in seqs.zip(bodies) {
            let mut record = SpoolRecord {
                report: Some(report(config, identity, seq, unix_now(), body)),
                positions: Vec::new(),
            };
            if let Some(positions) = positions {
                record.positions = serde_json::to_vec(&positions).unwrap_or_default();
                checkpoints.waiting.push_back((seq, positions));
            }
            self.unspooled.push(record);
        }
        if !self.unspooled.is_empty() {
            let result = self.spool.lock().append(&self.unspooled);
            match result {
                Ok(()) => {
                    admin::add(&self.metrics.reports_spooled, self.unspooled.len() as u64);
                    self.unspooled.clear();
                }
                Err(e) => {
                    self.write_failed(e.to_string());
                    return;
                }
            }
        }
        if self.unsequenced.is_empty() && self.write_error.take().is_some() {
            tracing::info!("data_dir takes writes again; reading resumes");
        }
    }

    fn write_failed(&mut self, error: String) {
        admin::add(&self.metrics.data_dir_errors, 1);
        if self.write_error.is_none() {
            tracing::error!(error = %error, held = self.unsequenced.len() + self.unspooled.len(), "cannot write to data_dir; reading paused, retrying every second");
        }
        self.write_error = Some(error);
    }
}
