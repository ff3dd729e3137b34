//! Per-app process metrics: CPU and resident memory of the processes whose command line
//! matches an app's `process` regex.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use regex::bytes::Regex;

use super::HostError;
use super::minute::{MinuteClock, minute_of, short_coverage};

/// Clock ticks per second of `/proc/PID/stat` times. The kernel exports `USER_HZ`, which is
/// 100 on every architecture Linux runs on (node_exporter's procfs library assumes the same).
pub const USER_HZ: u64 = 100;

/// How many samples a process whose command line did not match is trusted not to have
/// changed (`exec`, or its pid reused) before its command line is read again.
const RESCAN_EVERY: u32 = 6;

/// One app's processes over one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct AppProcessSample {
    /// The app (`[[logs]] app`).
    pub app: String,
    /// Interval the CPU figure covers (zero on the first sample).
    pub interval: Duration,
    /// CPU % of one core used by the matching processes over the interval (may exceed 100
    /// for a process using several cores). `None` on the first sample and when no matching
    /// process lived through the whole interval.
    pub cpu_pct: Option<f64>,
    /// Resident memory of the matching processes now, in bytes (sum).
    pub rss_bytes: u64,
    /// How many processes matched.
    pub processes: u32,
}

#[derive(Debug)]
struct PidEntry {
    /// Index of the app whose pattern matched the command line, if any.
    app: Option<usize>,
    /// Process start time (ticks after boot), to notice a reused pid.
    start: u64,
    /// `utime + stime` at the previous sample.
    ticks: Option<u64>,
    seen: bool,
}

/// Samples the CPU and RSS of the processes of each app, found by a regex on their command
/// line (`/proc/PID/cmdline` with NULs read as spaces). A process belongs to the first app
/// whose pattern matches.
///
/// Command lines are read when a pid is first seen, and those that did not match again
/// every few samples; matching processes cost two small reads per sample
/// (`/proc/PID/stat` and `/proc/PID/status`).
#[derive(Debug)]
pub struct ProcessSampler {
    procfs: PathBuf,
    patterns: Vec<Regex>,
    pids: HashMap<u32, PidEntry>,
    out: Vec<AppProcessSample>,
    busy_ticks: Vec<Option<u64>>,
    bytes: Vec<u8>,
    text: String,
    path: PathBuf,
    prev: Option<Instant>,
    round: u32,
}

impl ProcessSampler {
    /// A sampler for `(app, pattern)` pairs under a procfs root.
    ///
    /// # Errors
    /// [`HostError::Pattern`] naming the app when a pattern is not a valid regex.
    pub fn new(procfs: impl Into<PathBuf>, apps: &[(String, String)]) -> Result<Self, HostError> {
        let mut patterns = Vec::with_capacity(apps.len());
        let mut out = Vec::with_capacity(apps.len());
        for (app, pattern) in apps {
            patterns.push(Regex::new(pattern).map_err(|source| HostError::Pattern {
                app: app.clone(),
                source,
            })?);
            out.push(AppProcessSample {
                app: app.clone(),
                interval: Duration::ZERO,
                cpu_pct: None,
                rss_bytes: 0,
                processes: 0,
            });
        }
        Ok(Self {
            procfs: procfs.into(),
            patterns,
            pids: HashMap::new(),
            out,
            busy_ticks: Vec::new(),
            bytes: Vec::with_capacity(4096),
            text: String::with_capacity(4096),
            path: PathBuf::new(),
            prev: None,
            round: 0,
        })
    }

    /// Scan the processes now and return one entry per app, in the order given to
    /// [`new`](Self::new). The first call primes the CPU counters (`cpu_pct` is `None`).
    ///
    /// # Errors
    /// When the procfs directory cannot be listed. Processes that exit while being read are
    /// skipped, not errors.
    pub fn sample(&mut self, now: Instant) -> Result<&[AppProcessSample], HostError> {
        let dir = std::fs::read_dir(&self.procfs).map_err(|source| HostError::Read {
            path: self.procfs.clone(),
            source,
        })?;
        let elapsed = self
            .prev
            .and_then(|p| now.checked_duration_since(p))
            .filter(|d| !d.is_zero());
        self.prev = Some(now);
        let rescan = self.round.is_multiple_of(RESCAN_EVERY);
        self.round = self.round.wrapping_add(1);
        for app in &mut self.out {
            app.interval = elapsed.unwrap_or_default();
            app.cpu_pct = None;
            app.rss_bytes = 0;
            app.processes = 0;
        }
        self.busy_ticks.clear();
        self.busy_ticks.resize(self.out.len(), None);
        for entry in self.pids.values_mut() {
            entry.seen = false;
        }
        for dirent in dir.flatten() {
            let name = dirent.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(entry) = self.pids.get_mut(&pid)
                && entry.app.is_none()
                && !rescan
            {
                entry.seen = true;
                continue;
            }
            let Some(stat) = self.read_stat(&name) else {
                continue;
            };
            let entry = self.pids.entry(pid).or_insert(PidEntry {
                app: None,
                start: stat.start,
                ticks: None,
                seen: true,
            });
            entry.seen = true;
            // New pids, reused pids and (on a rescan) non-matching ones: read the command line.
            if entry.start != stat.start || entry.app.is_none() {
                entry.start = stat.start;
                entry.ticks = None;
                entry.app = None;
                // Read the command line (may fail for a process that just exited).
                self.path.clear();
                self.path.push(&self.procfs);
                self.path.push(&name);
                self.path.push("cmdline");
                if read_bytes(&self.path, &mut self.bytes).is_ok() {
                    for b in &mut self.bytes {
                        if *b == 0 {
                            *b = b' ';
                        }
                    }
                    let cmdline = self.bytes.trim_ascii_end();
                    entry.app = self.patterns.iter().position(|p| p.is_match(cmdline));
                }
            }
            let Some(app) = entry.app else {
                continue;
            };
            let prev_ticks = entry.ticks.replace(stat.ticks);
            let out = &mut self.out[app];
            out.processes += 1;
            if let Some(prev) = prev_ticks
                && elapsed.is_some()
            {
                let slot = &mut self.busy_ticks[app];
                *slot = Some(slot.unwrap_or(0) + stat.ticks.saturating_sub(prev));
            }
            self.path.clear();
            self.path.push(&self.procfs);
            self.path.push(&name);
            self.path.push("status");
            if read_string(&self.path, &mut self.text).is_ok() {
                self.out[app].rss_bytes += vm_rss_kb(&self.text).unwrap_or(0) * 1024;
            }
        }
        self.pids.retain(|_, e| e.seen);
        if let Some(elapsed) = elapsed {
            for (app, ticks) in self.out.iter_mut().zip(&self.busy_ticks) {
                app.cpu_pct =
                    ticks.map(|t| t as f64 * 100.0 / USER_HZ as f64 / elapsed.as_secs_f64());
            }
        }
        Ok(&self.out)
    }

    fn read_stat(&mut self, pid: &std::ffi::OsStr) -> Option<ProcStat> {
        self.path.clear();
        self.path.push(&self.procfs);
        self.path.push(pid);
        self.path.push("stat");
        read_string(&self.path, &mut self.text).ok()?;
        parse_pid_stat(&self.text)
    }
}

/// CPU ticks and start time of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `utime + stime`, in [`USER_HZ`] ticks.
    pub ticks: u64,
    /// Start time after boot, in ticks.
    pub start: u64,
}

/// Parse `/proc/PID/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_pid_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    // After `)`: state is field 3; utime 14, stime 15, starttime 22.
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let start: u64 = fields.nth(6)?.parse().ok()?;
    Some(ProcStat {
        ticks: utime.saturating_add(stime),
        start,
    })
}

/// `VmRSS` of `/proc/PID/status`, in kB (absent for kernel threads).
pub fn vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn read_bytes(path: &std::path::Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf).map(drop)
}

fn read_string(path: &std::path::Path, buf: &mut String) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_string(buf).map(drop)
}

/// Process metrics of one app over one minute.
#[derive(Debug, Clone, PartialEq)]
pub struct AppProcessMetrics {
    /// The app.
    pub app: String,
    /// CPU % of one core, mean over the minute weighted by the samples' intervals.
    pub cpu_pct: Option<f64>,
    /// Mean resident memory of the samples in which a process matched, in bytes.
    pub rss_bytes: Option<u64>,
    /// Most processes matched in one sample.
    pub processes_max: u32,
    /// The minute is not fully covered (see [`MinuteHostMetrics`](super::MinuteHostMetrics)).
    pub partial: bool,
}

#[derive(Debug, Default, Clone)]
struct AppAcc {
    cpu_weighted: f64,
    cpu_secs: f64,
    rss_sum: u128,
    rss_n: u64,
    processes_max: u32,
}

#[derive(Debug, Default)]
struct MinuteAcc {
    apps: Vec<AppAcc>,
    covered: Duration,
    max_interval: Duration,
    partial: bool,
}

/// Aggregates [`AppProcessSample`]s per minute, with the same minute, completion and
/// partial rules as [`MinuteHostMetrics`](super::MinuteHostMetrics). Apps with no matching
/// process in a minute are left out of it.
#[derive(Debug, Default)]
pub struct MinuteProcessMetrics {
    apps: Vec<String>,
    minutes: BTreeMap<i64, MinuteAcc>,
    clock: MinuteClock,
}

impl MinuteProcessMetrics {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one sample (as returned by [`ProcessSampler::sample`]) that ended at `unix_secs`.
    /// The first sample (zero interval) only tells the apps and is not counted.
    pub fn add(&mut self, unix_secs: i64, samples: &[AppProcessSample]) {
        let Some(interval) = samples.first().map(|s| s.interval) else {
            return;
        };
        if self.apps.len() != samples.len() {
            self.apps = samples.iter().map(|s| s.app.clone()).collect();
        }
        if interval.is_zero() {
            return;
        }
        let minute = self.clock.place(minute_of(unix_secs, interval), interval);
        let first = !self.clock.started;
        self.clock.started = true;
        let acc = self.minutes.entry(minute).or_default();
        acc.partial |= first;
        acc.covered += interval;
        acc.max_interval = acc.max_interval.max(interval);
        acc.apps.resize(samples.len(), AppAcc::default());
        let secs = interval.as_secs_f64();
        for (a, s) in acc.apps.iter_mut().zip(samples) {
            if let Some(cpu) = s.cpu_pct {
                a.cpu_weighted += cpu * secs;
                a.cpu_secs += secs;
            }
            if s.processes > 0 {
                a.rss_sum += u128::from(s.rss_bytes);
                a.rss_n += 1;
            }
            a.processes_max = a.processes_max.max(s.processes);
        }
    }

    /// Hand out the minutes complete at `now_unix`, oldest first (see
    /// [`MinuteHostMetrics::take_completed`](super::MinuteHostMetrics::take_completed)).
    pub fn take_completed(&mut self, now_unix: i64) -> Vec<(i64, Vec<AppProcessMetrics>)> {
        let newest = self.minutes.keys().next_back().copied().unwrap_or(i64::MIN);
        let mut out = Vec::new();
        while let Some(entry) = self.minutes.first_entry() {
            let minute = *entry.key();
            if !self.clock.is_complete(minute, now_unix, newest) {
                break;
            }
            let acc = entry.remove();
            self.clock.taken(minute);
            out.push((minute, self.finish(acc, false)));
        }
        out
    }

    /// Hand out every minute still open, marked partial (the agent stops).
    pub fn take_all(&mut self) -> Vec<(i64, Vec<AppProcessMetrics>)> {
        let minutes = std::mem::take(&mut self.minutes);
        let mut out = Vec::new();
        for (minute, acc) in minutes {
            self.clock.taken(minute);
            out.push((minute, self.finish(acc, true)));
        }
        out
    }

    fn finish(&self, acc: MinuteAcc, cut: bool) -> Vec<AppProcessMetrics> {
        let partial = acc.partial || cut || short_coverage(acc.covered, acc.max_interval);
        acc.apps
            .iter()
            .zip(&self.apps)
            .filter(|(a, _)| a.processes_max > 0)
            .map(|(a, app)| AppProcessMetrics {
                app: app.clone(),
                cpu_pct: (a.cpu_secs > 0.0).then(|| a.cpu_weighted / a.cpu_secs),
                rss_bytes: (a.rss_n > 0).then(|| (a.rss_sum / u128::from(a.rss_n)) as u64),
                processes_max: a.processes_max,
                partial,
            })
            .collect()
    }
}
