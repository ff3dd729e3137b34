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
//! # Why not `sysinfo`
//! `sysinfo` always reads the real `/proc` of the agent's own mount namespace, so it cannot
//! honour `host.procfs` (an agent in a container reading the host's `/proc` mounted at
//! `/host/proc`), and its CPU usage is computed with its own idle definition (iowait counted
//! as busy) on its own refresh schedule. The four files needed are simple line formats;
//! parsing them here costs a few hundred lines of code that is tested on fixture text,
//! computes exactly what node_exporter users compute from the same counters, and allocates
//! nothing per sample once the buffers are warm.
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
