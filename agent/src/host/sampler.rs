//! Reading the counters and turning two readings into rates.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::HostError;
use super::disk::{DiskFilter, DiskIo, DiskTracker};
use super::procfs::{self, CpuTimes, ParseError};

/// Host metrics over one interval between two readings.
///
/// Invariants: every percentage is within `0..=100`; `interval` is positive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Time between the two readings (monotonic clock).
    pub interval: Duration,
    /// CPU busy %: every mode but idle and iowait, all CPUs together (100 = all CPUs busy).
    /// `None` when the kernel counted no CPU time in the interval.
    pub cpu_busy_pct: Option<f64>,
    /// Memory used %, `100 × (1 − MemAvailable / MemTotal)`, at the end of the interval.
    pub mem_used_pct: Option<f64>,
    /// Swap used % at the end of the interval; `None` on a host without swap.
    pub swap_used_pct: Option<f64>,
    /// Load average over 1 minute at the end of the interval.
    pub load1: f64,
    /// Load average over 5 minutes.
    pub load5: f64,
    /// Load average over 15 minutes.
    pub load15: f64,
    /// Disk I/O over the interval, summed over physical disks; `None` when no physical disk
    /// was measured (no `/proc/diskstats`, no physical disk, or counters reset).
    pub disk: Option<DiskIo>,
}

/// Samples CPU, memory, swap, load and disk I/O from a procfs root.
///
/// The first [`sample`](Self::sample) only primes the counters. Buffers are reused, so
/// a steady-state sample allocates nothing but the file handles the OS gives.
#[derive(Debug)]
pub struct HostSampler {
    stat_path: PathBuf,
    meminfo_path: PathBuf,
    loadavg_path: PathBuf,
    diskstats_path: PathBuf,
    buf: String,
    prev: Option<(Instant, CpuTimes)>,
    disks: DiskTracker,
}

/// The sysfs that goes with a procfs root, as [`HostSampler::new`] derives it: `/sys` for
/// `/proc`; `<parent>/sys` for `<parent>/proc` (the host's `/proc` and `/sys` mounted side by
/// side, e.g. `/host/proc` and `/host/sys`) when that directory has a `block` directory;
/// otherwise none, and physical disks are told by their names alone.
pub fn sysfs_for(procfs: &Path) -> Option<PathBuf> {
    let sysfs = if procfs == Path::new("/proc") {
        PathBuf::from("/sys")
    } else {
        procfs.parent()?.join("sys")
    };
    sysfs.join("block").is_dir().then_some(sysfs)
}

impl HostSampler {
    /// A sampler reading `<procfs>/stat`, `meminfo`, `loadavg` and `diskstats`, with the
    /// sysfs derived by [`sysfs_for`]. Nothing is read until the first sample.
    pub fn new(procfs: impl Into<PathBuf>) -> Self {
        let procfs = procfs.into();
        let sysfs = sysfs_for(&procfs);
        Self::with_sysfs(procfs, sysfs)
    }

    /// A sampler with an explicit sysfs (`None`: tell physical disks by name alone).
    pub fn with_sysfs(procfs: impl Into<PathBuf>, sysfs: Option<PathBuf>) -> Self {
        let procfs = procfs.into();
        Self {
            stat_path: procfs.join("stat"),
            meminfo_path: procfs.join("meminfo"),
            loadavg_path: procfs.join("loadavg"),
            diskstats_path: procfs.join("diskstats"),
            buf: String::with_capacity(16 * 1024),
            prev: None,
            disks: DiskTracker::new(DiskFilter::new(sysfs.as_deref())),
        }
    }

    /// The sysfs `block` directory used to tell physical disks, if any.
    pub fn sysfs_block(&self) -> Option<&Path> {
        self.disks.filter().sysfs_block()
    }

    /// Read the counters now. The first call (and the first after a failed one) only primes
    /// and returns `Ok(None)`; so does a call at the same instant as the previous one.
    ///
    /// A missing `/proc/diskstats` is not an error: the sample has no disk figures.
    ///
    /// # Errors
    /// When `stat`, `meminfo` or `loadavg` cannot be read, or any file cannot be parsed; the
    /// error names the file. The previous readings are then forgotten.
    pub fn sample(&mut self, now: Instant) -> Result<Option<Sample>, HostError> {
        match self.try_sample(now) {
            Ok(sample) => Ok(sample),
            Err(e) => {
                self.prev = None;
                self.disks.reset();
                Err(e)
            }
        }
    }

    fn try_sample(&mut self, now: Instant) -> Result<Option<Sample>, HostError> {
        let elapsed = match self.prev {
            Some((at, _)) => match now.checked_duration_since(at) {
                Some(d) if !d.is_zero() => Some(d),
                _ => return Ok(None),
            },
            None => None,
        };

        read_into(&self.stat_path, &mut self.buf)?;
        let cpu = procfs::parse_stat(&self.buf).map_err(|e| parse_error(&self.stat_path, e))?;
        read_into(&self.meminfo_path, &mut self.buf)?;
        let mem =
            procfs::parse_meminfo(&self.buf).map_err(|e| parse_error(&self.meminfo_path, e))?;
        read_into(&self.loadavg_path, &mut self.buf)?;
        let load =
            procfs::parse_loadavg(&self.buf).map_err(|e| parse_error(&self.loadavg_path, e))?;
        let disk = match read_into(&self.diskstats_path, &mut self.buf) {
            Ok(()) => Some(
                self.disks
                    .update(&self.buf, elapsed)
                    .map_err(|e| parse_error(&self.diskstats_path, e))?,
            ),
            Err(HostError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };

        let prev = self.prev.replace((now, cpu));
        let (Some(interval), Some((_, prev_cpu))) = (elapsed, prev) else {
            return Ok(None);
        };
        Ok(Some(Sample {
            interval,
            cpu_busy_pct: cpu_busy_pct(&prev_cpu, &cpu),
            mem_used_pct: mem.mem_used_pct(),
            swap_used_pct: mem.swap_used_pct(),
            load1: load.load1,
            load5: load.load5,
            load15: load.load15,
            disk: disk.filter(|d| d.disks > 0),
        }))
    }
}

/// CPU busy % between two readings of `/proc/stat`: busy ticks over all ticks. Each mode's
/// delta saturates at zero, because some kernels let `iowait` (and, rarely, `idle`) go
/// back a little. `None` when no tick elapsed.
pub fn cpu_busy_pct(prev: &CpuTimes, cur: &CpuTimes) -> Option<f64> {
    let busy = cur.busy().saturating_sub(prev.busy());
    let idle = cur.idle_all().saturating_sub(prev.idle_all());
    let total = busy + idle;
    (total > 0).then(|| (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

/// Read a whole file into `buf`, reusing its allocation.
pub(crate) fn read_into(path: &Path, buf: &mut String) -> Result<(), HostError> {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .map(drop)
        .map_err(|source| HostError::Read {
            path: path.to_owned(),
            source,
        })
}

fn parse_error(path: &Path, e: ParseError) -> HostError {
    HostError::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}
