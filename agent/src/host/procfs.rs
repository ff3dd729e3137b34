//! Pure parsers of the procfs files host metrics come from.
//!
//! Each parser takes the text of one file as the kernel writes it and returns plain numbers;
//! none of them touches the file system, so all of them are tested on fixture text. Units
//! are the kernel's: CPU times in `USER_HZ` ticks, memory in kB, disk sectors of 512 bytes.

/// Why a procfs text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl ParseError {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// Cumulative CPU times of all CPUs together (the `cpu` line of `/proc/stat`), in ticks.
///
/// `guest` and `guest_nice` are already included in `user` and `nice` by the kernel, so they
/// are kept for information only and never added to the busy time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time in user mode (includes `guest`).
    pub user: u64,
    /// Time in user mode with low priority (includes `guest_nice`).
    pub nice: u64,
    /// Time in kernel mode.
    pub system: u64,
    /// Idle time.
    pub idle: u64,
    /// Idle time while some I/O was outstanding.
    pub iowait: u64,
    /// Time servicing hardware interrupts.
    pub irq: u64,
    /// Time servicing software interrupts.
    pub softirq: u64,
    /// Time stolen by the hypervisor for other guests.
    pub steal: u64,
    /// Time running a guest (part of `user`).
    pub guest: u64,
    /// Time running a low-priority guest (part of `nice`).
    pub guest_nice: u64,
}

impl CpuTimes {
    /// Busy time: every mode but `idle` and `iowait` (`user + nice + system + irq + softirq
    /// + steal`), which is what node_exporter users compute as
    /// `sum(rate(node_cpu_seconds_total{mode!~"idle|iowait"}))`.
    pub fn busy(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system)
            .saturating_add(self.irq)
            .saturating_add(self.softirq)
            .saturating_add(self.steal)
    }

    /// Idle time in the broad sense: `idle + iowait`.
    pub fn idle_all(&self) -> u64 {
        self.idle.saturating_add(self.iowait)
    }
}

/// Parse the aggregate `cpu ` line of `/proc/stat`.
///
/// Kernels older than 2.6.33 print fewer columns; missing columns read as zero.
///
/// # Errors
/// When there is no `cpu ` line or it holds fewer than four numbers or a non-number.
pub fn parse_stat(text: &str) -> Result<CpuTimes, ParseError> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| ParseError::new("no aggregate `cpu` line"))?;
    let mut values = [0u64; 10];
    let mut count = 0;
    for (slot, field) in values.iter_mut().zip(line.split_ascii_whitespace().skip(1)) {
        *slot = field
            .parse()
            .map_err(|_| ParseError::new(format!("`cpu` line: {field:?} is not a number")))?;
        count += 1;
    }
    if count < 4 {
        return Err(ParseError::new(format!(
            "`cpu` line has {count} columns, at least 4 expected"
        )));
    }
    let [
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    ] = values;
    Ok(CpuTimes {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    })
}

/// The lines of `/proc/meminfo` host metrics need, in kB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub mem_total_kb: u64,
    /// `MemAvailable` (absent before Linux 3.14).
    pub mem_available_kb: Option<u64>,
    /// `MemFree`.
    pub mem_free_kb: u64,
    /// `Buffers`.
    pub buffers_kb: u64,
    /// `Cached`.
    pub cached_kb: u64,
    /// `SwapTotal`.
    pub swap_total_kb: u64,
    /// `SwapFree`.
    pub swap_free_kb: u64,
}

impl MemInfo {
    /// Memory used in percent: `100 × (1 − MemAvailable / MemTotal)`, as node_exporter users
    /// compute it. On kernels without `MemAvailable`, `MemFree + Buffers + Cached` stands in
    /// for it. `None` when `MemTotal` is zero. Always within `0..=100`.
    pub fn mem_used_pct(&self) -> Option<f64> {
        if self.mem_total_kb == 0 {
            return None;
        }
        let available = self.mem_available_kb.unwrap_or_else(|| {
            self.mem_free_kb
                .saturating_add(self.buffers_kb)
                .saturating_add(self.cached_kb)
        });
        Some(used_pct(self.mem_total_kb, available))
    }

    /// Swap used in percent: `100 × (1 − SwapFree / SwapTotal)`; `None` when the host has no
    /// swap (a host without swap is not "0 % used", it is not measured). Within `0..=100`.
    pub fn swap_used_pct(&self) -> Option<f64> {
        if self.swap_total_kb == 0 {
            return None;
        }
        Some(used_pct(self.swap_total_kb, self.swap_free_kb))
    }
}

fn used_pct(total: u64, free: u64) -> f64 {
    let free = free.min(total) as f64;
    (100.0 * (1.0 - free / total as f64)).clamp(0.0, 100.0)
}

/// Parse `/proc/meminfo`.
///
/// # Errors
/// When `MemTotal` is missing or a needed line holds no number.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    let mut info = MemInfo::default();
    let mut have_total = false;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => {
                have_total = true;
                &mut info.mem_total_kb
            }
            "MemFree" => &mut info.mem_free_kb,
            "Buffers" => &mut info.buffers_kb,
            "Cached" => &mut info.cached_kb,
            "SwapTotal" => &mut info.swap_total_kb,
            "SwapFree" => &mut info.swap_free_kb,
            "MemAvailable" => info.mem_available_kb.insert(0),
            _ => continue,
        };
        let number = rest.split_ascii_whitespace().next().unwrap_or("");
        *slot = number
            .parse()
            .map_err(|_| ParseError::new(format!("{key}: {number:?} is not a number")))?;
    }
    if !have_total {
        return Err(ParseError::new("no MemTotal line"));
    }
    Ok(info)
}

/// Load averages from `/proc/loadavg`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadAvg {
    /// Over 1 minute.
    pub load1: f64,
    /// Over 5 minutes.
    pub load5: f64,
    /// Over 15 minutes.
    pub load15: f64,
}

/// Parse `/proc/loadavg` (`0.32 0.45 0.22 1/84 11356`).
///
/// # Errors
/// When the first three fields are not three non-negative finite numbers.
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = |name: &str| -> Result<f64, ParseError> {
        let field = fields
            .next()
            .ok_or_else(|| ParseError::new(format!("{name} is missing")))?;
        match field.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(ParseError::new(format!("{name}: {field:?} is not a load"))),
        }
    };
    Ok(LoadAvg {
        load1: next("load1")?,
        load5: next("load5")?,
        load15: next("load15")?,
    })
}

/// The counters of one line of `/proc/diskstats` host metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLine<'a> {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Kernel device name (`sda`, `nvme0n1`, `dm-0`, `cciss/c0d0`).
    pub name: &'a str,
    /// Reads completed.
    pub reads: u64,
    /// Sectors read (always 512 bytes, whatever the device's sector size).
    pub sectors_read: u64,
    /// Writes completed.
    pub writes: u64,
    /// Sectors written (512 bytes).
    pub sectors_written: u64,
    /// Milliseconds spent doing I/O (`io_ticks`; the kernel prints it as a 32-bit value,
    /// so it wraps after about 49.7 days of busy time).
    pub io_ms: u64,
}

/// Bytes per diskstats sector: the kernel always counts 512-byte sectors there.
pub const SECTOR_BYTES: u64 = 512;

/// Parse one line of `/proc/diskstats`.
///
/// Kernels print 14 fields (up to 4.17), 18 (4.18, discards) or 20 (5.5, flushes); only
/// the first 13 are needed.
///
/// # Errors
/// When the line has fewer than 13 fields or one of the needed ones is not a number.
pub fn parse_diskstats_line(line: &str) -> Result<DiskLine<'_>, ParseError> {
    let mut fields = line.split_ascii_whitespace();
    let mut number = |what: &str| -> Result<u64, ParseError> {
        let field = fields
            .next()
            .ok_or_else(|| ParseError::new(format!("line {line:?}: {what} is missing")))?;
        field.parse().map_err(|_| {
            ParseError::new(format!("line {line:?}: {what} {field:?} is not a number"))
        })
    };
    let major = number("major")?;
    let minor = number("minor")?;
    let name = fields
        .next()
        .ok_or_else(|| ParseError::new(format!("line {line:?}: device name is missing")))?;
    let mut number = |what: &str| -> Result<u64, ParseError> {
        let field = fields
            .next()
            .ok_or_else(|| ParseError::new(format!("line {line:?}: {what} is missing")))?;
        field.parse().map_err(|_| {
            ParseError::new(format!("line {line:?}: {what} {field:?} is not a number"))
        })
    };
    let reads = number("reads")?;
    let _reads_merged = number("reads merged")?;
    let sectors_read = number("sectors read")?;
    let _ms_reading = number("ms reading")?;
    let writes = number("writes")?;
    let _writes_merged = number("writes merged")?;
    let sectors_written = number("sectors written")?;
    let _ms_writing = number("ms writing")?;
    let _in_flight = number("I/Os in progress")?;
    let io_ms = number("ms doing I/O")?;
    Ok(DiskLine {
        major: u32::try_from(major).map_err(|_| ParseError::new("major out of range"))?,
        minor: u32::try_from(minor).map_err(|_| ParseError::new("minor out of range"))?,
        name,
        reads,
        sectors_read,
        writes,
        sectors_written,
        io_ms,
    })
}

/// Iterate over the non-empty lines of `/proc/diskstats`, parsed.
pub fn parse_diskstats(text: &str) -> impl Iterator<Item = Result<DiskLine<'_>, ParseError>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_diskstats_line)
}
