//! Per-minute aggregation of host samples.

use std::collections::BTreeMap;
use std::time::Duration;

use vigil_proto::v1::HostMetrics;

use super::sampler::Sample;

/// The minute a sample belongs to: the minute of the middle of its interval, so a sample
/// taken at `:00` over the ten seconds before belongs to the minute that just ended. The
/// agent should sample on multiples of the interval (`:00`, `:10`, …) so that no sample
/// straddles two minutes; otherwise a sample's figures land wholly in one of them. An
/// interval longer than a minute counts as its last minute (`unix_secs - 30`).
pub fn minute_of(unix_secs: i64, interval: Duration) -> i64 {
    let half_ms = (interval.as_millis().min(60_000) / 2) as i64;
    let mid_ms = unix_secs.saturating_mul(1000).saturating_sub(half_ms);
    mid_ms.div_euclid(60_000) * 60
}

/// Which minutes are complete and which samples arrive too late; shared by the host and the
/// process aggregators.
#[derive(Debug, Default)]
pub(crate) struct MinuteClock {
    /// The last minute handed out; samples for it or before are late.
    pub(crate) last_taken: Option<i64>,
    /// The longest interval seen, to know how long after a minute's end its last sample
    /// can still come.
    pub(crate) max_interval: Duration,
    /// No sample was added yet: the first minute is partial.
    pub(crate) started: bool,
    /// Samples that came after their minute was handed out.
    pub(crate) late_samples: u64,
}

impl MinuteClock {
    /// The minute a sample of `minute` goes to: its own, or, when that minute was already
    /// handed out (the sample came late), the earliest one not handed out yet — so its
    /// bytes are counted once, a little late, rather than lost or sent twice.
    pub(crate) fn place(&mut self, minute: i64, interval: Duration) -> i64 {
        self.max_interval = self.max_interval.max(interval);
        match self.last_taken {
            Some(taken) if minute <= taken => {
                self.late_samples += 1;
                taken + 60
            }
            _ => minute,
        }
    }

    /// Whether `minute` is complete at `now_unix`: no sample can belong to it any more.
    /// A sample belongs to a minute when the middle of its interval is in it, so its end is
    /// before `minute + 60 + interval / 2`; one more second covers rounding.
    pub(crate) fn is_complete(&self, minute: i64, now_unix: i64, newest_minute: i64) -> bool {
        let grace = (self.max_interval.as_secs() / 2 + 2) as i64;
        newest_minute > minute || now_unix >= minute + 60 + grace
    }

    pub(crate) fn taken(&mut self, minute: i64) {
        self.last_taken = Some(self.last_taken.map_or(minute, |t| t.max(minute)));
    }
}

#[derive(Debug, Default)]
struct Acc {
    samples: u32,
    covered: Duration,
    max_interval: Duration,
    partial: bool,
    cpu_weighted: f64,
    cpu_secs: f64,
    cpu_max: Option<f64>,
    mem: Mean,
    swap: Mean,
    load1: Mean,
    load5: Mean,
    load15: Mean,
    disk_measured: bool,
    disk_read_bytes: u64,
    disk_write_bytes: u64,
    disk_reads: u64,
    disk_writes: u64,
    busy_weighted: f64,
    busy_secs: f64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    n: u32,
}

impl Mean {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            self.sum += v;
            self.n += 1;
        }
    }
    fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / f64::from(self.n))
    }
}

/// Aggregates [`Sample`]s by minute (`floor(t/60)*60`, see [`minute_of`]) into
/// [`HostMetrics`].
///
/// Per minute: `cpu_pct` is the mean of the samples weighted by their intervals (time
/// weighted), `cpu_pct_max` the highest sample; memory, swap and load are means of the
/// samples; disk bytes and operations are sums (a sample longer than a minute brings only
/// a minute's share of them); `disk_busy_pct` is the time-weighted mean of the samples'
/// busiest-disk busy %. A field is absent when no sample measured it.
///
/// A minute is `partial` when it is the first one after start, when [`take_all`] hands it
/// out before it ended (the agent stops), or when its samples cover less than a minute by
/// more than one interval (sampling was interrupted).
///
/// [`take_all`]: Self::take_all
#[derive(Debug, Default)]
pub struct MinuteHostMetrics {
    minutes: BTreeMap<i64, Acc>,
    clock: MinuteClock,
}

impl MinuteHostMetrics {
    /// An empty aggregator; the first minute it sees will be marked partial.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a sample that ended at `unix_secs` (UTC). Samples come in time order. A sample
    /// whose minute was already handed out by [`take_completed`](Self::take_completed) (it
    /// was delayed past the grace, or the wall clock stepped back) goes to the earliest
    /// minute not handed out yet and is counted in [`late_samples`](Self::late_samples).
    pub fn add(&mut self, unix_secs: i64, sample: &Sample) {
        let minute = self
            .clock
            .place(minute_of(unix_secs, sample.interval), sample.interval);
        let first = !self.clock.started;
        self.clock.started = true;
        let acc = self.minutes.entry(minute).or_default();
        acc.partial |= first;
        acc.samples += 1;
        acc.covered += sample.interval;
        acc.max_interval = acc.max_interval.max(sample.interval);
        let secs = sample.interval.as_secs_f64();
        if let Some(cpu) = sample.cpu_busy_pct {
            acc.cpu_weighted += cpu * secs;
            acc.cpu_secs += secs;
            acc.cpu_max = Some(acc.cpu_max.map_or(cpu, |m| m.max(cpu)));
        }
        acc.mem.add(sample.mem_used_pct);
        acc.swap.add(sample.swap_used_pct);
        acc.load1.add(Some(sample.load1));
        acc.load5.add(Some(sample.load5));
        acc.load15.add(Some(sample.load15));
        if let Some(disk) = &sample.disk {
            // A sample longer than a minute (the agent was stopped or starved) brings only a
            // minute's share of its I/O, so a stall never lands hours of bytes in one minute.
            let share = |v: u64| {
                if secs > 60.0 {
                    (v as f64 * 60.0 / secs) as u64
                } else {
                    v
                }
            };
            acc.disk_measured = true;
            acc.disk_read_bytes = acc.disk_read_bytes.saturating_add(share(disk.read_bytes));
            acc.disk_write_bytes = acc.disk_write_bytes.saturating_add(share(disk.write_bytes));
            acc.disk_reads = acc.disk_reads.saturating_add(share(disk.reads));
            acc.disk_writes = acc.disk_writes.saturating_add(share(disk.writes));
            acc.busy_weighted += disk.busy_pct * secs;
            acc.busy_secs += secs;
        }
    }

    /// Samples that came after their minute was handed out (see [`add`](Self::add)).
    pub fn late_samples(&self) -> u64 {
        self.clock.late_samples
    }

    /// Hand out the minutes that are complete at `now_unix`, oldest first: minutes before
    /// the minute of the newest sample, and minutes that ended long enough ago (half the
    /// longest interval plus two seconds) that no sample can still belong to them. Each
    /// minute is handed out once.
    pub fn take_completed(&mut self, now_unix: i64) -> Vec<(i64, HostMetrics)> {
        let newest = self.minutes.keys().next_back().copied().unwrap_or(i64::MIN);
        let mut out = Vec::new();
        while let Some(entry) = self.minutes.first_entry() {
            let minute = *entry.key();
            if !self.clock.is_complete(minute, now_unix, newest) {
                break;
            }
            let acc = entry.remove();
            self.clock.taken(minute);
            out.push((minute, acc.finish(false)));
        }
        out
    }

    /// Hand out every minute still open, marked partial: for when the agent stops.
    pub fn take_all(&mut self) -> Vec<(i64, HostMetrics)> {
        let minutes = std::mem::take(&mut self.minutes);
        let mut out = Vec::with_capacity(minutes.len());
        for (minute, acc) in minutes {
            self.clock.taken(minute);
            out.push((minute, acc.finish(true)));
        }
        out
    }
}

/// Whether samples covering `covered` (the longest `max_interval`) leave a minute short.
pub(crate) fn short_coverage(covered: Duration, max_interval: Duration) -> bool {
    covered + max_interval + Duration::from_millis(500) < Duration::from_secs(60)
}

impl Acc {
    fn finish(self, cut: bool) -> HostMetrics {
        let cpu = (self.cpu_secs > 0.0).then(|| self.cpu_weighted / self.cpu_secs);
        let busy = (self.busy_secs > 0.0).then(|| self.busy_weighted / self.busy_secs);
        HostMetrics {
            cpu_pct: cpu,
            cpu_pct_max: self.cpu_max,
            mem_used_pct: self.mem.get(),
            swap_used_pct: self.swap.get(),
            load1: self.load1.get(),
            load5: self.load5.get(),
            load15: self.load15.get(),
            disk_read_bytes: self.disk_measured.then_some(self.disk_read_bytes),
            disk_write_bytes: self.disk_measured.then_some(self.disk_write_bytes),
            disk_reads: self.disk_measured.then_some(self.disk_reads),
            disk_writes: self.disk_measured.then_some(self.disk_writes),
            disk_busy_pct: busy,
            samples: self.samples,
            partial: self.partial || cut || short_coverage(self.covered, self.max_interval),
        }
    }
}
