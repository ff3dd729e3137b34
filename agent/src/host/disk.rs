//! Which block devices count as physical disks, and per-device deltas of their counters.
//!
//! # Which devices count
//! Host metrics sum the I/O of *physical* disks only, so that a byte written through a
//! partition, an LVM / dm-crypt volume or a software RAID is counted once, where it reaches
//! hardware (or the hypervisor's virtual disk):
//! - never: `loop*`, `ram*`, `zram*` (memory, not disk), `fd*`, `sr*` (floppy, optical),
//!   `dm-*` (device-mapper: LVM, dm-crypt, multipath) and `md*` (software RAID) — their I/O
//!   is already counted on the disks underneath, so adding them would count it twice;
//! - never: partitions (`sda1`, `vdb2`, `xvda1`, `hda3`, `nvme0n1p1`, `mmcblk0p1`) and
//!   `mmcblk*boot*` / `mmcblk*rpmb` hardware partitions;
//! - and, when a sysfs is known, only devices listed in `<sysfs>/block/` that have a
//!   `device` link there (backed by hardware or a virtual machine's disk). This catches
//!   partitions and virtual devices that names alone cannot tell.
//!
//! node_exporter's default exclusion (`^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$`)
//! keeps `dm-*` and `md*`; the agreement test sums node_exporter's per-device counters over
//! the devices this module counts.
//!
//! # Counters that go backwards
//! All deltas are computed in [`DiskTracker::update`]. A counter below its previous value is
//! a 32-bit wrap only when the previous value was in the top quarter of the 32-bit range
//! and the new one in the bottom quarter (the kernel prints `io_ticks` as 32 bits, and
//! 32-bit kernels all counters); anything else is a reset (reboot, hot-plug, a different
//! device under the same name) and the device contributes nothing for that interval and is
//! measured again from its new values. A device whose major:minor changed is treated as new.
//! Deltas beyond what any disk can do in the interval (over 32 GiB/s, 16 M operations/s)
//! are dropped as resets too, and busy time is capped at the elapsed time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::procfs::{self, DiskLine, ParseError, SECTOR_BYTES};

/// Whether the kernel device name alone rules a device out (see the module docs).
pub fn excluded_by_name(name: &str) -> bool {
    fn digits(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    }
    for prefix in ["loop", "ram", "zram", "fd", "sr", "md", "dm-"] {
        if let Some(rest) = name.strip_prefix(prefix)
            && digits(rest)
        {
            return true;
        }
    }
    if name.starts_with("md_d") {
        return true;
    }
    // (h|s|v|xv)d[a-z]+\d+ : partitions of IDE, SCSI/SATA, virtio and Xen disks.
    for prefix in ["hd", "sd", "vd", "xvd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let after_letters = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
            if after_letters.len() < rest.len() && digits(after_letters) {
                return true;
            }
        }
    }
    // nvme\d+n\d+p\d+ and mmcblk\d+p\d+ (partitions), mmcblk\d+(boot\d+|rpmb).
    if let Some(rest) = name.strip_prefix("nvme")
        && let Some((disk, part)) = rest.rsplit_once('p')
        && digits(part)
        && let Some((ctrl, ns)) = disk.split_once('n')
        && digits(ctrl)
        && digits(ns)
    {
        return true;
    }
    if let Some(rest) = name.strip_prefix("mmcblk") {
        let after = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        if after.len() < rest.len() {
            if let Some(part) = after.strip_prefix('p')
                && digits(part)
            {
                return true;
            }
            if after == "rpmb" || after.strip_prefix("boot").is_some_and(digits) {
                return true;
            }
        }
    }
    false
}

/// Decides, once per device name, whether a device is a physical disk.
#[derive(Debug)]
pub struct DiskFilter {
    sysfs_block: Option<PathBuf>,
    known: HashMap<String, bool>,
}

impl DiskFilter {
    /// A filter that uses names alone (`sysfs: None`) or names and `<sysfs>/block`.
    pub fn new(sysfs: Option<&Path>) -> Self {
        Self {
            sysfs_block: sysfs.map(|s| s.join("block")),
            known: HashMap::new(),
        }
    }

    /// The sysfs `block` directory consulted, if any.
    pub fn sysfs_block(&self) -> Option<&Path> {
        self.sysfs_block.as_deref()
    }

    /// Whether `name` is a physical disk. The answer is cached per name, so sysfs is only
    /// looked at when a device name is seen for the first time.
    pub fn is_physical(&mut self, name: &str) -> bool {
        if let Some(physical) = self.known.get(name) {
            return *physical;
        }
        let physical = !excluded_by_name(name)
            && match &self.sysfs_block {
                // sysfs spells `/` in names (`cciss/c0d0`) as `!`.
                Some(block) => block.join(name.replace('/', "!")).join("device").exists(),
                None => true,
            };
        self.known.insert(name.to_owned(), physical);
        physical
    }
}

/// Disk I/O over one interval, summed over physical disks (busy % maxed over them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskIo {
    /// Bytes read (sectors × 512).
    pub read_bytes: u64,
    /// Bytes written (sectors × 512).
    pub write_bytes: u64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Busy % of the busiest disk: milliseconds doing I/O over elapsed milliseconds, in
    /// `0..=100`.
    pub busy_pct: f64,
    /// Physical disks measured over the whole interval.
    pub disks: u32,
}

#[derive(Debug, Clone, Copy)]
struct Counters {
    reads: u64,
    sectors_read: u64,
    writes: u64,
    sectors_written: u64,
    io_ms: u64,
}

impl From<&DiskLine<'_>> for Counters {
    fn from(l: &DiskLine<'_>) -> Self {
        Self {
            reads: l.reads,
            sectors_read: l.sectors_read,
            writes: l.writes,
            sectors_written: l.sectors_written,
            io_ms: l.io_ms,
        }
    }
}

#[derive(Debug)]
struct DiskState {
    name: String,
    dev: (u32, u32),
    counters: Counters,
    seen: bool,
}

/// Keeps the previous counters of each physical disk and turns new `/proc/diskstats` text
/// into deltas.
#[derive(Debug)]
pub struct DiskTracker {
    filter: DiskFilter,
    disks: Vec<DiskState>,
}

const WRAP: u64 = 1 << 32;
const QUARTER: u64 = 1 << 30;

/// The increase of a counter from `prev` to `cur`, or `None` when it went back (a reset).
pub fn counter_delta(prev: u64, cur: u64) -> Option<u64> {
    if cur >= prev {
        Some(cur - prev)
    } else if (WRAP - QUARTER..WRAP).contains(&prev) && cur < QUARTER {
        Some(cur + WRAP - prev)
    } else {
        None
    }
}

impl DiskTracker {
    /// A tracker with no previous counters.
    pub fn new(filter: DiskFilter) -> Self {
        Self {
            filter,
            disks: Vec::new(),
        }
    }

    /// The filter in use.
    pub fn filter(&self) -> &DiskFilter {
        &self.filter
    }

    /// Forget all previous counters: the next update only primes.
    pub fn reset(&mut self) {
        self.disks.clear();
    }

    /// Take new diskstats text read `elapsed` after the previous one (`None` for the first
    /// reading) and return the I/O in between, summed over physical disks that were present
    /// in both readings. Devices seen for the first time only prime; devices gone are
    /// forgotten.
    ///
    /// # Errors
    /// When a line cannot be parsed; the previous counters are then forgotten, so the next
    /// successful update only primes.
    pub fn update(&mut self, text: &str, elapsed: Option<Duration>) -> Result<DiskIo, ParseError> {
        for disk in &mut self.disks {
            disk.seen = false;
        }
        let elapsed_ms = elapsed.map(|e| e.as_millis() as u64);
        let mut io = DiskIo::default();
        for line in procfs::parse_diskstats(text) {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            };
            if !self.filter.is_physical(line.name) {
                continue;
            }
            let cur = Counters::from(&line);
            let dev = (line.major, line.minor);
            let Some(state) = self.disks.iter_mut().find(|d| d.name == line.name) else {
                self.disks.push(DiskState {
                    name: line.name.to_owned(),
                    dev,
                    counters: cur,
                    seen: true,
                });
                continue;
            };
            let prev = std::mem::replace(&mut state.counters, cur);
            state.seen = true;
            if state.dev != dev {
                state.dev = dev;
                continue;
            }
            let Some(elapsed_ms) = elapsed_ms else {
                continue;
            };
            if let Some(delta) = Self::delta(&prev, &cur, elapsed_ms) {
                io.read_bytes += delta.sectors_read * SECTOR_BYTES;
                io.write_bytes += delta.sectors_written * SECTOR_BYTES;
                io.reads += delta.reads;
                io.writes += delta.writes;
                if elapsed_ms > 0 {
                    let busy = (delta.io_ms as f64 * 100.0 / elapsed_ms as f64).min(100.0);
                    io.busy_pct = io.busy_pct.max(busy);
                }
                io.disks += 1;
            }
        }
        self.disks.retain(|d| d.seen);
        Ok(io)
    }

    fn delta(prev: &Counters, cur: &Counters, elapsed_ms: u64) -> Option<Counters> {
        let secs = elapsed_ms / 1000 + 1;
        let d = Counters {
            reads: counter_delta(prev.reads, cur.reads)?,
            sectors_read: counter_delta(prev.sectors_read, cur.sectors_read)?,
            writes: counter_delta(prev.writes, cur.writes)?,
            sectors_written: counter_delta(prev.sectors_written, cur.sectors_written)?,
            io_ms: counter_delta(prev.io_ms, cur.io_ms)?.min(elapsed_ms),
        };
        // 2^26 sectors of 512 bytes = 32 GiB per second; 2^24 = 16 M operations per second.
        let plausible = d.sectors_read.saturating_add(d.sectors_written) <= secs << 26
            && d.reads.saturating_add(d.writes) <= secs << 24;
        plausible.then_some(d)
    }
}
