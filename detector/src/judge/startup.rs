//! The app's start-up profile: how many minutes after a restart its hosts stay noisy.
//!
//! A restarted JVM logs more errors and exceptions and burns more CPU for a while (class
//! loading, JIT compilation, cold caches, connection pools filling). The rate and metric
//! tests leave those minutes out of a released host's *settled* window. How long that is
//! depends on the app: a small service settles within a minute, a large one may take five.
//! So the warm-up is learned: every round measures, on each released host, the minutes
//! from its release to the end of its first stretch of minutes *elevated* against its
//! own baseline, beyond the reference hosts' own change in the same minute (error lines or
//! exceptions per unit of work — log events where the host's agent counts them, else
//! lines, as the rate tests — at least ×2 and 5 more, or CPU above its level by 6 points
//! and 3× its noise). The stretch may start up to [`MAX_RESTART_LAG`] calm minutes after
//! the release (a host of a batch restarting a little after the batch's time); a host calm
//! for longer has a start-up of 0. A release users call normal (or a false alarm) teaches
//! the app its longest such start-up. One counts once a measured minute ended it: one
//! still going, cut by a missing minute or lasting all of [`MAX_STARTUP_MINUTES`] is not a
//! start-up. The app's warm-up is then the longest start-up of its last [`PROFILES_KEPT`]
//! such releases plus a minute, once it has [`PROFILES_NEEDED`] of them (so a start-up
//! storm seen recently stays covered, and an old one is forgotten);
//! before that, the defaults [`JudgeParams::warmup_minutes`] and
//! [`JudgeParams::metric_warmup_minutes`].
//!
//! Before that, too, a released host waits for its own start-up in this release
//! ([`stretches`], [`settles_at`]): while a stretch of elevated minutes from its release
//! goes on (less than [`MAX_STARTUP_MINUTES`]) none of its minutes is settled, and once the
//! stretch ended they are settled from a minute past its end. Its host metrics wait for
//! minutes elevated by any signal; what its logs count waits only for minutes of elevated
//! CPU (a restart's storm of errors comes while the JVM compiles and fills its caches, and
//! a spike of a known exception on hosts whose CPU is calm must block within minutes). An
//! app's first releases are judged so without a start-up storm counted as a regression;
//! the price is that a regression from the restart on that raises the CPU is judged only
//! once it has lasted [`MAX_STARTUP_MINUTES`] (then from the default warm-up on).
//!
//! After that, a host's own start-up still shortens the learned warm-up of what its logs
//! count ([`lag`], [`learned_lag`]): each normal release also teaches how many minutes
//! past the end of their CPU's start-up its hosts' logs stayed noisy (all of their
//! start-up where the CPU showed none). A released host whose CPU's start-up in this
//! release ended has its logs settled that many minutes past a minute after its end,
//! never before the configured warm-up nor after the learned one. The learned warm-up is
//! the worst of twenty releases; this release's restart is often shorter, and a known
//! exception's spike from the restart on is judged once it is over. A CPU calm from the
//! release says nothing (a busy or jumpy host's CPU may not show a restart): the learned
//! warm-up holds. Host metrics, latency and memory keep the learned warm-up.

use super::signal::{HostView, Role};
use super::stats::{mad_sd, median};
use super::{HostMinute, JudgeParams};

/// Longest run measured, in minutes (and longest warm-up learned).
pub const MAX_STARTUP_MINUTES: u32 = 10;

/// Releases whose start-up runs an app keeps.
pub const PROFILES_KEPT: usize = 20;

/// Calm minutes after a host's release that may come before its start-up (a restart a
/// little after the batch's time).
pub const MAX_RESTART_LAG: u32 = 2;

/// Releases an app needs before its own profile replaces the default warm-up.
pub const PROFILES_NEEDED: usize = 5;

/// A minute's error lines or exceptions are elevated at this many times what its
/// baseline rate predicts for its work (after the reference hosts' change) and this many
/// more: a clear rise, not a burst of overdispersed counts.
const COUNT_RATIO: f64 = 2.0;
const COUNT_EXCESS: f64 = 5.0;

/// Fewest baseline minutes a host needs for its run to be measured.
const MIN_BASELINE: usize = 10;

/// The warm-up learned from `profiles` (the longest start-up runs of recent normal
/// releases), when there are enough of them.
pub fn learned_warmup(profiles: &[u32]) -> Option<i64> {
    if profiles.len() < PROFILES_NEEDED {
        return None;
    }
    let longest = profiles.iter().copied().max()?;
    Some(i64::from(longest.min(MAX_STARTUP_MINUTES)) + 1)
}

/// The minutes past the end of its CPU's start-up that a host's logs may stay noisy,
/// learned from `lags` (the longest such lags of recent normal releases, see [`lag`]),
/// when there are enough of them.
pub fn learned_lag(lags: &[u32]) -> Option<i64> {
    if lags.len() < PROFILES_NEEDED {
        return None;
    }
    let longest = lags.iter().copied().max()?;
    Some(i64::from(longest.min(MAX_STARTUP_MINUTES)))
}

/// How long past the end of its CPU's start-up a released host's start-up by any signal
/// lasted, the longest among `stretches` (`None` when no start-up ended): what the app
/// learns of how far its logs' restart noise outlasts its CPU's. A host whose CPU did not
/// tell a start-up (unmeasured, or calm from its release while its logs were not) lends
/// its whole start-up.
pub(super) fn lag(stretches: &[HostStartup]) -> Option<u32> {
    stretches
        .iter()
        .filter_map(|s| match (s.any, s.cpu) {
            (Stretch::Ended(any), Stretch::Ended(cpu)) => Some(any.saturating_sub(cpu)),
            (Stretch::Ended(any), Stretch::Unknown) => Some(any),
            // A start-up still going, or one whose CPU's goes on (not told yet).
            _ => None,
        })
        .max()
}

/// The longest start-up (by any signal) that ended among `stretches` (`None` when none
/// did).
pub(super) fn longest(stretches: &[HostStartup]) -> Option<u32> {
    stretches
        .iter()
        .filter_map(|s| match s.any {
            Stretch::Ended(run) => Some(run),
            _ => None,
        })
        .max()
}

/// The minute before which a host released at `released` has its own start-up (by one
/// measure) keep its minutes out of its settled window: a minute past the end of one that
/// ended (past its first calm minute, as the learned warm-up adds one), the longest a
/// start-up is taken to last while one is going; `None` when it was not measured.
pub(super) fn settles_at(released: i64, stretch: Stretch) -> Option<i64> {
    let minutes = match stretch {
        Stretch::Ended(run) => run + 1,
        Stretch::Going => MAX_STARTUP_MINUTES,
        Stretch::Unknown => return None,
    };
    Some(released + i64::from(minutes) * 60)
}

/// Where a released host's start-up stands at a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stretch {
    /// Not measured: a reference host, a thin baseline, a missing minute, calm so far
    /// within [`MAX_RESTART_LAG`], or elevated for all of [`MAX_STARTUP_MINUTES`] (not a
    /// start-up).
    Unknown,
    /// Its first elevated stretch ended this many minutes after its release (0: calm from
    /// its release).
    Ended(u32),
    /// Elevated at the last minute known, less than [`MAX_STARTUP_MINUTES`] after its
    /// release.
    Going,
}

/// Where a released host's start-up stands at a round, by two measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HostStartup {
    /// Its minutes elevated by any signal: error lines, exceptions or CPU (what the app
    /// learns, and what holds its host metrics).
    pub any: Stretch,
    /// Its minutes elevated by CPU alone: a restart's compilation and cold caches, which
    /// hold what its logs count while they last.
    pub cpu: Stretch,
}

/// Where each host's start-up stands at minute `m` (in the order of `hosts`; `Unknown` for
/// a host that could not be measured). `holding`: the round holds minutes by it, so it is
/// measured however long ago the hosts were released (else only while a start-up may
/// still end, which is all learning needs).
pub(super) fn stretches(
    hosts: &[HostView<'_>],
    first: i64,
    m: i64,
    params: &JudgeParams,
    holding: bool,
) -> Vec<HostStartup> {
    let unknown = HostStartup {
        any: Stretch::Unknown,
        cpu: Stretch::Unknown,
    };
    let mut out = vec![unknown; hosts.len()];
    // Runs end within MAX_STARTUP_MINUTES of a host's release: past that (and a margin for
    // late reports) a round has nothing to add to what the record keeps; one that holds
    // minutes by them measures them still (its work stays bounded by the span).
    let latest = hosts
        .iter()
        .filter_map(|h| match h.role {
            Role::Released(r) => Some(r),
            Role::Reference => None,
        })
        .max();
    let Some(latest) = latest else {
        return out;
    };
    if !holding && m > latest + 2 * i64::from(MAX_STARTUP_MINUTES) * 60 {
        return out;
    }
    let base_from = first - params.baseline_minutes * 60;
    let profiles: Vec<(usize, &HostView<'_>, Baseline)> = hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let until = match h.role {
                Role::Released(r) => r,
                Role::Reference => first,
            };
            Some((i, h, Baseline::of(h, base_from, until, m)?))
        })
        .collect();
    // The reference hosts' own change per minute of the measured span (a surge on every
    // host is not start-up): their counts against what their baselines predict, and their
    // median CPU change. Read once per round, in one pass over their rows.
    let Some(span_end) = profiles
        .iter()
        .filter_map(|(_, h, _)| match h.role {
            Role::Released(r) => Some(r + i64::from(MAX_STARTUP_MINUTES) * 60),
            Role::Reference => None,
        })
        .max()
    else {
        return out;
    };
    let span_end = m.min(span_end);
    let span = |minute: i64| -> Option<usize> {
        (minute >= first && minute <= span_end).then(|| ((minute - first) / 60) as usize)
    };
    let slots = span(span_end).map_or(0, |s| s + 1);
    // Per minute: errors, expected errors, exceptions, expected exceptions, CPU changes.
    let mut sums = vec![(0.0, 0.0, 0.0, 0.0, Vec::new()); slots];
    for (_, h, b) in profiles.iter().filter(|p| p.1.role == Role::Reference) {
        for x in &h.rows {
            let Some(slot) = span(x.minute).and_then(|i| sums.get_mut(i)) else {
                continue;
            };
            let n = b.work(x);
            slot.0 += x.error_lines as f64;
            slot.1 += b.error_rate * n;
            slot.2 += exception_count(x);
            slot.3 += b.exception_rate * n;
            if let (Some(c), Some(level)) = (x.host_metrics.get("cpu_pct"), b.cpu_level) {
                slot.4.push(c - level);
            }
        }
    }
    let ratio = |k: f64, e: f64| if e > 3.0 { (k / e).max(1.0) } else { 1.0 };
    let reference: Vec<(f64, f64, f64)> = sums
        .into_iter()
        .map(|(k, e, x, ex, mut cpu)| {
            (
                ratio(k, e),
                ratio(x, ex),
                median(&mut cpu).unwrap_or(0.0).max(0.0),
            )
        })
        .collect();
    for &(i, h, ref b) in &profiles {
        let Role::Released(r) = h.role else { continue };
        let end = r + i64::from(MAX_STARTUP_MINUTES) * 60;
        let mut rows: Vec<&HostMinute> = h
            .rows
            .iter()
            .copied()
            .filter(|x| x.minute >= r && x.minute < end && x.minute <= m)
            .collect();
        rows.sort_by_key(|x| x.minute);
        rows.dedup_by_key(|x| x.minute);
        // Per minute from the release while they follow on: elevated by any of the
        // signals, and by CPU alone (a minute without a CPU sample, which may come late,
        // cuts the CPU's measure: it is no calm minute).
        let (mut any, mut cpu_up) = (Vec::new(), Vec::new());
        let (mut cut, mut cpu_cut) = (false, false);
        for (run, x) in (0u32..).zip(rows) {
            if x.minute != r + i64::from(run) * 60 {
                cut = true;
                break;
            }
            cpu_cut |= b.cpu_level.is_some() && x.host_metrics.get("cpu_pct").is_none();
            let (error_change, exception_change, cpu_change) = span(x.minute)
                .and_then(|i| reference.get(i).copied())
                .unwrap_or((1.0, 1.0, 0.0));
            let n = b.work(x);
            let cpu = b
                .cpu_level
                .zip(x.host_metrics.get("cpu_pct"))
                .is_some_and(|(level, c)| c - level - cpu_change > b.cpu_margin);
            let counts = x.error_lines as f64
                >= COUNT_RATIO * error_change * b.error_rate * n + COUNT_EXCESS
                || exception_count(x)
                    >= COUNT_RATIO * exception_change * b.exception_rate * n + COUNT_EXCESS;
            any.push(cpu || counts);
            if !cpu_cut {
                cpu_up.push(cpu);
            }
        }
        out[i] = HostStartup {
            any: classify(&any, cut),
            cpu: classify(&cpu_up, cut || cpu_cut),
        };
    }
    out
}

/// Where a start-up stands given whether each minute from the release, in order, was
/// elevated; `cut`: a missing minute followed them. The run counts once it has ended on a
/// measured minute: a run cut by a missing minute, still going or lasting the whole span
/// is not a start-up (one cut while going is still going: it holds minutes, as long as
/// any start-up may last, and teaches nothing). A host of a batch may restart a little
/// after the batch's time (a rolling restart): calm minutes before its first elevated
/// one, up to [`MAX_RESTART_LAG`] of them, count in its start-up, which ends with its
/// first elevated stretch.
fn classify(elevated: &[bool], cut: bool) -> Stretch {
    let mut stretch_from: Option<u32> = None;
    let mut stretch = Stretch::Unknown;
    for (run, &e) in (0u32..).zip(elevated) {
        if e {
            stretch_from.get_or_insert(run);
            // Still going, unless this is the span's last minute (then it lasted all of
            // it: no start-up).
            stretch = if run + 1 < MAX_STARTUP_MINUTES {
                Stretch::Going
            } else {
                Stretch::Unknown
            };
        } else if stretch_from.is_some() || run >= MAX_RESTART_LAG {
            // The stretch ended here, or the host stayed calm past the lag: no start-up
            // beyond these minutes (0 when it was calm from its release).
            return Stretch::Ended(if stretch_from.is_some() { run } else { 0 });
        }
    }
    if cut && stretch != Stretch::Going {
        Stretch::Unknown
    } else {
        stretch
    }
}

fn exception_count(x: &HostMinute) -> f64 {
    x.exceptions.values().sum::<u64>() as f64
}

/// A host's rates and CPU level before its release.
struct Baseline {
    /// The host's agent counts log events (records): rates are per event, so a burst of
    /// stack traces does not dilute its own rate with its frame lines.
    counts_events: bool,
    error_rate: f64,
    exception_rate: f64,
    cpu_level: Option<f64>,
    /// How far above its level a minute's CPU must be to count as elevated.
    cpu_margin: f64,
}

impl Baseline {
    /// `h`'s baseline over `[from, until)`, its unit of work read from its rows up to `m`.
    fn of(h: &HostView<'_>, from: i64, until: i64, m: i64) -> Option<Self> {
        let counts_events = h
            .rows
            .iter()
            .any(|x| x.events > 0 && x.minute >= from && x.minute <= m);
        let before: Vec<&HostMinute> = h
            .rows
            .iter()
            .copied()
            .filter(|x| x.minute >= from && x.minute < until)
            .collect();
        if before.len() < MIN_BASELINE {
            return None;
        }
        let work: f64 = before
            .iter()
            .map(|x| work_of(counts_events, x))
            .sum::<f64>()
            .max(1.0);
        let mut cpu: Vec<f64> = before
            .iter()
            .filter_map(|x| x.host_metrics.get("cpu_pct"))
            .collect();
        Some(Self {
            counts_events,
            error_rate: before.iter().map(|x| x.error_lines as f64).sum::<f64>() / work,
            exception_rate: before.iter().map(|x| exception_count(x)).sum::<f64>() / work,
            cpu_margin: (3.0 * mad_sd(&cpu).unwrap_or(0.0)).max(6.0),
            cpu_level: median(&mut cpu),
        })
    }

    /// A minute's work: its events or its lines.
    fn work(&self, x: &HostMinute) -> f64 {
        work_of(self.counts_events, x)
    }
}

fn work_of(counts_events: bool, x: &HostMinute) -> f64 {
    (if counts_events { x.events } else { x.lines }) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_up_covers_the_longest_recent_run_once_enough_releases_taught_it() {
        assert_eq!(learned_warmup(&[0, 1, 0]), None);
        assert_eq!(learned_warmup(&[0, 0, 0, 0, 0]), Some(1));
        assert_eq!(learned_warmup(&[0, 1, 0, 0, 0]), Some(2));
        assert_eq!(learned_warmup(&[4, 1, 0, 0, 0, 2]), Some(5));
        assert_eq!(learned_warmup(&[30; 6]), Some(11));
    }

    #[test]
    fn the_logs_lag_is_what_a_start_up_lasted_past_its_cpus() {
        let host = |any, cpu| HostStartup { any, cpu };
        use Stretch::{Ended, Going, Unknown};
        assert_eq!(lag(&[]), None);
        assert_eq!(lag(&[host(Going, Going), host(Unknown, Unknown)]), None);
        // Logs calm with the CPU, then one host's errors two minutes longer.
        assert_eq!(lag(&[host(Ended(4), Ended(4))]), Some(0));
        assert_eq!(
            lag(&[host(Ended(4), Ended(4)), host(Ended(6), Ended(4))]),
            Some(2)
        );
        // A CPU that told no start-up lends the logs' whole one.
        assert_eq!(lag(&[host(Ended(5), Unknown)]), Some(5));
        // One whose CPU's start-up goes on has not told it yet.
        assert_eq!(lag(&[host(Ended(1), Going)]), None);
        assert_eq!(learned_lag(&[0, 2, 0, 0]), None);
        assert_eq!(learned_lag(&[0, 2, 0, 0, 1]), Some(2));
        assert_eq!(learned_lag(&[30; 5]), Some(10));
    }
}
