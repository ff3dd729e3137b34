//! Host metrics: CPU, memory, swap, load and disk IO of the machine, sampled every
//! `host.interval` and aggregated per minute, plus optional per-app process metrics.
//!
//! # Shape
//! - [`procfs`]: small pure parsers of `/proc/stat`, `/proc/meminfo`, `/proc/loadavg` and
//!   `/proc/diskstats` text, tested on fixture text.
//! - [`disk`]: which block devices count as physical disks, and the per-device deltas
//!   (the one place where counters that go backwards are handled).
//! - [`HostSampler`]: reads the files under a configurable procfs root (`host.procfs`, like
//!   node_exporter's `--path.procfs`) and turns two readings into a [`Sample`] of rates.
//! - [`MinuteHostMetrics`]: aggregates samples per minute into
//!   [`vigil_proto::v1::HostMetrics`].
//! - [`ProcessSampler`] and [`MinuteProcessMetrics`]: CPU and RSS of the processes whose
//!   command line matches an app's `process` regex.
//! - [`sample_command`]: `vigil-agent sample [--json]`.
//!
//! # What is measured (DESIGN §3 "Host metrics")
//! - **CPU busy %**: all CPUs together, every mode but `idle` and `iowait` counted as busy
//!   (`user + nice + system + irq + softirq + steal`; `guest` is already inside `user`), from
//!   the `cpu` line of `/proc/stat` — what node_exporter users compute as
//!   `1 - sum(rate(node_cpu_seconds_total{mode=~"idle|iowait"})) / sum(rate(node_cpu_seconds_total))`.
//!   100 means every CPU busy.
//! - **Memory used %**: `100 × (1 − MemAvailable / MemTotal)` (`MemFree + Buffers + Cached`
//!   before Linux 3.14); **swap used %** likewise, absent on a host without swap.
//! - **Load** 1/5/15 from `/proc/loadavg`.
//! - **Disk**: read/write bytes (sectors × 512), completed reads/writes, summed over
//!   physical disks, and busy % (`io_ticks` over elapsed time) of the busiest one. Which
//!   devices count, and how counters that go backwards are handled, is in [`disk`].
//!
//! # procfs and sysfs
//! Everything is read under one procfs root (`host.procfs`, default `/proc`), like
//! node_exporter's `--path.procfs`. Physical disks are told by name (always) and, where a
//! sysfs is known, by `<sysfs>/block/<dev>/device` existing. [`HostSampler::new`] derives
//! the sysfs with [`sysfs_for`]: `/sys` for `/proc`, `<parent>/sys` for `<parent>/proc`
//! (e.g. `/host/proc` → `/host/sys`, how containers usually mount the host's), or none when
//! that directory has no `block/`; then names alone decide. [`HostSampler::with_sysfs`]
//! sets it explicitly.
//!
//! # Minutes
//! A sample belongs to the minute of the middle of its interval ([`minute_of`]); the agent
//! should sample on wall-clock multiples of `host.interval` so no sample straddles a minute.
//! The first minute after start, a minute handed out at shutdown
//! ([`MinuteHostMetrics::take_all`]) and a minute whose samples cover less than a minute
//! by more than one interval are marked `partial`. See [`MinuteHostMetrics`] for how
//! figures combine.
//!
//! # Cost
//! A host sample opens and reads four small files into one reused buffer and allocates
//! nothing in steady state (a new device name costs one allocation the first time it is
//! seen). `cargo bench -p vigil-agent --bench host_sample` prints the cost per sample and the
//! share of one core at the default 10 s interval.
//!
//! # Wiring it into the agent
//! Every `host.interval`, on wall-clock multiples of it: [`HostSampler::sample`] with the
//! monotonic `Instant`, [`MinuteHostMetrics::add`] with the UTC seconds of the same moment,
//! then [`MinuteHostMetrics::take_completed`] and put each minute in the `MinuteReport` of
//! that minute; on shutdown, [`MinuteHostMetrics::take_all`]. A sampling error is logged and
//! the next tick primes again (no rates are made across a failed reading). For apps with a
//! `process` pattern, one [`ProcessSampler`] for all of them, with
//! [`MinuteProcessMetrics`] giving `AppCounters.process_cpu_pct` / `process_rss_bytes`.
//!
//! # Why not `sysinfo`
//! `sysinfo` always reads the real `/proc` of the agent's own mount namespace, so it cannot
//! honour `host.procfs` (an agent in a container reading the host's `/proc` mounted at
//! `/host/proc`: it opens `/proc/stat` and `/proc/meminfo` by absolute path); its CPU usage
//! leaves `steal` and `guest` time out of busy (a VM whose hypervisor steals reads lower
//! than node_exporter's figure); and the per-device disk counters needed here come from
//! `/proc/diskstats` anyway. The four files needed are simple line formats: parsing
//! them here costs a few hundred lines of code tested on fixture text, computes exactly
//! what node_exporter users compute from the same counters (checked by the agreement test
//! `tests/host_node_exporter.rs`), and allocates nothing per sample.
//!
//! # Example
//! ```no_run
//! use std::time::{Duration, Instant};
//! use vigil_agent::host::{HostSampler, MinuteHostMetrics};
//!
//! let mut sampler = HostSampler::new("/proc");
//! let mut minutes = MinuteHostMetrics::new();
//! sampler.sample(Instant::now())?; // primes: no rates yet
//! std::thread::sleep(Duration::from_secs(10));
//! if let Some(sample) = sampler.sample(Instant::now())? {
//!     minutes.add(1_763_880_010, &sample);
//! }
//! for (minute, metrics) in minutes.take_completed(1_763_880_130) {
//!     println!("{minute}: cpu {:?}%", metrics.cpu_pct);
//! }
//! # Ok::<(), vigil_agent::host::HostError>(())
//! ```

mod command;
pub mod disk;
mod minute;
mod process;
pub mod procfs;
mod sampler;

use std::path::PathBuf;

pub use command::sample_command;
pub use minute::{MinuteHostMetrics, minute_of};
pub use process::{
    AppProcessMetrics, AppProcessSample, MinuteProcessMetrics, ProcStat, ProcessSampler, USER_HZ,
    parse_pid_stat, vm_rss_kb,
};
pub use sampler::{HostSampler, Sample, cpu_busy_pct, sysfs_for};

/// Why host metrics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file under procfs or sysfs could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content is not what the kernel writes there.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An app's `process` pattern is not a valid regex.
    #[error("invalid process pattern for app {app:?}: {source}")]
    Pattern {
        /// The app the pattern belongs to.
        app: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// Two readings could not be taken apart in time (the monotonic clock did not advance).
    #[error("no sample: {0}")]
    NoSample(&'static str),
    /// Writing the output of `vigil-agent sample` failed.
    #[error("cannot write the sample: {0}")]
    Output(#[source] std::io::Error),
}
