//! A released host whose work all but stopped while its agent still reports: its log
//! volume (`log_volume`) or its requests (`traffic`), judged host-minute by host-minute
//! as latency and the host metrics are.
//!
//! A host's *usual* volume is its mean per reported minute before its release (the first
//! batch for a reference host): at least [`MIN_BASELINE`] minutes and [`MIN_LEVEL`] a
//! minute, else the host is not judged (a quiet host's minute of nothing is no news). A
//! host-minute is compared with its usual volume times the reference hosts' own change in
//! that minute (their volume over their usual, ×0.2 to ×5; a reference host leaves its
//! own minute out; without reference hosts, 1), and *hits* when it is below `max_ratio`
//! of it. How often host-minutes hit where nothing was released (every host's baseline)
//! is bounded above at half the signal's share of the false-block budget (half of
//! [`COLLAPSE_SHARE`] each); the released
//! hosts' minutes past their warm-up are tested against that rate by the sequential
//! binomial mixture of the host metrics (`hit_mixture`), counts divided by `2L − 1` where
//! the baselines' hits came in runs of `L` minutes (a host drained for a while hits in a
//! run, which is one event, not many): half of the evidence from the released hosts'
//! minutes together, half from the mean of each one's own test, so that one host of many
//! that stopped is not diluted by the others. With no release effect, its chance of ever passing
//! its bar is within the other half, however often it is looked at.
//!
//! The effect is how far the released host that collapsed most often fell in its minutes
//! that hit (its volume there over what was expected, at least [`MIN_HITS`] of them):
//! always past the rule's drop, so only the app's learned threshold can hold a block
//! back. How often is the test's to say: a dip of a minute never passes its bar, however
//! rare; a host that collapses every other few minutes does. A minute whose reference
//! hosts changed beyond ×0.2 or ×5 (the median of their changes) is not compared: with
//! the whole fleet all but stopped, what a released host should have done is not known.

use super::super::grid::Windows;
use super::super::sequential::{hit_rate_bound, hits_pooled_and_each};
use super::super::signal::{Candidate, HostView, candidate};
use super::super::stats::median_without;
use super::super::{Evidence, Learned, Reason, Rule, Severity, Tally};

/// Share of the release's false-block budget spent by the collapse tests, half by
/// `log_volume` and half by `traffic`.
pub(crate) const COLLAPSE_SHARE: f64 = 0.1;

/// Fewest baseline minutes, and fewest units a minute on average, a host needs to be
/// judged.
pub(crate) const MIN_BASELINE: usize = 5;
pub(crate) const MIN_LEVEL: f64 = 10.0;

/// Fewest minutes that hit a released host's drop is read over.
pub(crate) const MIN_HITS: usize = 2;

/// A minute whose reference hosts changed by more than this (either way) is not
/// compared: what a released host should have done then is not known.
const CHANGE_BOUNDS: (f64, f64) = (0.2, 5.0);

/// What the test found in a round.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Collapse {
    /// The released host with the most minutes that hit (the largest drop among equals),
    /// and its drop there (1 − volume over expected).
    pub host: usize,
    pub drop: f64,
    /// That host's mean volume over its minutes that hit, what its usual volume and the
    /// reference hosts' change predicted for them, its usual volume, and how many
    /// minutes each is over.
    pub collapsed: f64,
    pub expected: f64,
    pub usual: f64,
    pub collapsed_minutes: usize,
    pub usual_minutes: usize,
    /// Released hosts with at least [`MIN_HITS`] minutes that hit.
    pub hosts: Vec<usize>,
    /// Reference hosts with a usual volume: what each minute's change was read from
    /// (without any, the released hosts are compared with their own past alone).
    pub references: usize,
    /// Released host-minutes past their warm-up, and how many hit.
    pub minutes: f64,
    pub hits: f64,
    /// Baseline host-minutes, how many hit, in how many runs.
    pub null_minutes: f64,
    pub null_hits: f64,
    pub null_runs: f64,
    /// The bound on the baseline's hit rate, the runs' inflation the counts were divided
    /// by, and the evidence (ln e of the pooled and the per-host tests mixed; `None`
    /// without a hit rate above the bound to mix).
    pub p0: f64,
    pub run: f64,
    pub log_e: Option<f64>,
}

/// The test over `values` (per host and minute, `< 0` where the host did not report) in
/// the windows `w` up to the last minute of the grid: hits below `max_ratio` of the
/// expected volume, `alpha` the signal's share of the budget. `None` when no released
/// host has [`MIN_HITS`] minutes that hit.
pub(crate) fn test(
    values: &[f64],
    w: &Windows<'_>,
    max_ratio: f64,
    alpha: f64,
) -> Option<Collapse> {
    let t_len = w.t_len;
    let value = |h: usize, t: usize| values.get(h * t_len + t).copied().filter(|v| *v >= 0.0);
    let n_hosts = w.start.len();
    // Each host's usual volume, over its minutes before its after window.
    let mut usual: Vec<Option<(f64, usize)>> = vec![None; n_hosts];
    for &h in w.released.iter().chain(w.reference) {
        let end = w.start.get(h).copied().unwrap_or(0).min(t_len);
        let v: Vec<f64> = (0..end).filter_map(|t| value(h, t)).collect();
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        if v.len() >= MIN_BASELINE && mean >= MIN_LEVEL && mean.is_finite() {
            usual[h] = Some((mean, v.len()));
        }
    }
    // Per minute, the reference hosts' volume over their usual, sorted: the minute's
    // change is their median (a storm on one of them moves it little), a reference host's
    // own minute left out of its own.
    let references: Vec<usize> = w
        .reference
        .iter()
        .copied()
        .filter(|&h| usual.get(h).is_some_and(Option::is_some))
        .collect();
    let ratio = |h: usize, t: usize| Some(value(h, t)? / usual[h]?.0);
    let sorted: Vec<Vec<f64>> = (0..t_len)
        .map(|t| {
            let mut r: Vec<f64> = references.iter().filter_map(|&h| ratio(h, t)).collect();
            r.sort_by(f64::total_cmp);
            r
        })
        .collect();
    let is_reference: Vec<bool> = (0..n_hosts).map(|h| references.contains(&h)).collect();
    // A host-minute's volume and what was expected of it.
    let compared = |h: usize, t: usize| -> Option<(f64, f64)> {
        let (level, _) = usual[h]?;
        let v = value(h, t)?;
        let change = if references.is_empty() {
            1.0
        } else {
            let own = if is_reference[h] { ratio(h, t) } else { None };
            median_without(&sorted[t], own)?
        };
        (CHANGE_BOUNDS.0..=CHANGE_BOUNDS.1)
            .contains(&change)
            .then_some((v, level * change))
    };
    let hit = |(v, expected): (f64, f64)| v < max_ratio * expected;

    // Where nothing was released: every host's baseline (a minute not compared neither
    // ends a run nor counts; each released host's own hits and minutes are kept too).
    let (mut null_minutes, mut null_hits, mut null_runs) = (0.0, 0.0, 0.0_f64);
    let mut own_null = vec![(0.0, 0.0); n_hosts];
    for &h in w.released.iter().chain(w.reference) {
        let mut in_run = false;
        for t in 0..w.start[h].min(t_len) {
            let Some(c) = compared(h, t) else {
                continue;
            };
            null_minutes += 1.0;
            own_null[h].1 += 1.0;
            if hit(c) {
                null_hits += 1.0;
                own_null[h].0 += 1.0;
                if !in_run {
                    null_runs += 1.0;
                }
                in_run = true;
            } else {
                in_run = false;
            }
        }
    }
    // The released hosts' minutes past their warm-up, and each one's drop in its minutes
    // that hit.
    let (mut minutes, mut hits) = (0.0, 0.0);
    let mut per_host: Vec<(usize, f64, f64)> = Vec::with_capacity(w.released.len());
    let mut drops: Vec<(usize, f64, f64, f64, usize)> = Vec::new();
    for &h in w.released {
        let from = w.settled[h].max(w.start[h]).min(t_len);
        let seen: Vec<(f64, f64)> = (from..t_len).filter_map(|t| compared(h, t)).collect();
        let fell: Vec<&(f64, f64)> = seen.iter().filter(|&&c| hit(c)).collect();
        minutes += seen.len() as f64;
        hits += fell.len() as f64;
        if usual[h].is_some() {
            per_host.push((h, fell.len() as f64, seen.len() as f64));
        }
        if fell.len() >= MIN_HITS {
            let (v, e) = fell.iter().fold((0.0, 0.0), |(a, b), c| (a + c.0, b + c.1));
            let n = fell.len() as f64;
            drops.push((
                h,
                1.0 - v / e.max(f64::MIN_POSITIVE),
                v / n,
                e / n,
                fell.len(),
            ));
        }
    }
    let &(host, drop, collapsed, expected, collapsed_minutes) = drops
        .iter()
        .max_by(|a, b| a.4.cmp(&b.4).then(a.1.total_cmp(&b.1)))?;
    let (usual_level, usual_minutes) = usual[host]?;
    // Hits come in runs (a host drained for a while): counts are divided by `2L − 1`,
    // `L` the runs' mean length where nothing was released, in the bound as in the test.
    let run = if null_runs > 0.0 {
        2.0 * (null_hits / null_runs).max(1.0) - 1.0
    } else {
        1.0
    };
    let p0 = hit_rate_bound(null_hits, null_minutes, run, alpha / 2.0);
    // The evidence: half the released hosts' minutes together (a collapse on all of them),
    // half the mean of each released host's own test (one host of many that stopped is
    // not diluted by the others), against the bound or the host's own rate before its
    // release where that is higher (a host that dipped more often than the others stays
    // expected to).
    let each: Vec<(f64, f64, f64)> = per_host
        .iter()
        .map(|&(h, x, n)| {
            let (k, m) = own_null[h];
            (x, n, if m > 0.0 { k / m } else { 0.0 })
        })
        .collect();
    let log_e =
        Some(hits_pooled_and_each((hits, minutes), &each, p0, run)).filter(|l| l.is_finite());
    Some(Collapse {
        host,
        drop,
        collapsed,
        expected,
        usual: usual_level,
        collapsed_minutes,
        usual_minutes,
        hosts: drops.iter().map(|d| d.0).collect(),
        references: references.len(),
        minutes,
        hits,
        null_minutes,
        null_hits,
        null_runs,
        p0,
        run,
        log_e,
    })
}

impl Collapse {
    /// Whether the evidence passed the bar of `alpha` (half of it spent on the bound).
    pub(crate) fn passed(&self, alpha: f64) -> bool {
        self.log_e.is_some_and(|e| e >= (2.0 / alpha).ln())
    }
}

/// How a rule names what collapsed.
pub(crate) struct Volume {
    pub rule: Rule,
    /// What fell, for the summary (`log volume`, `requests`).
    pub what: &'static str,
    /// The reason's metric (the page's chart of it).
    pub metric: &'static str,
    /// The drop the rule takes for a collapse (`1 − max_ratio`): every minute that hits
    /// fell by more, so only a learned threshold above it holds a block back.
    pub min_drop: f64,
}

/// The rule's candidate from what the test found, `alpha` its share of the budget: a
/// warning below its bar; past it, suspicious unless the app's learned threshold holds
/// it back, and at once with two reference hosts or more to tell a collapse from the
/// whole fleet's change (with fewer, the window's rounds decide).
pub(crate) fn candidate_of(
    c: &Collapse,
    v: &Volume,
    hosts: &[HostView<'_>],
    alpha: f64,
    memory: &Learned<'_>,
) -> Candidate {
    let summary = format!(
        "{} on {} fell to {:.0}/minute in {} minutes past its warm-up, from {:.0} before the release ({:.0}% of the {:.0} its usual and {} predict there) while its agent still reports; {:.0} of {:.0} released host-minutes past their warm-up below {:.0}% of that, where {:.0} of {:.0} host-minutes were with nothing released (in {:.0} runs): a hit rate of at most {:.4}, counts divided by {:.1} as hits come in runs; sequential test e={:.3e} against 1/α={:.3e}",
        v.what,
        hosts[c.host].name,
        c.collapsed,
        c.collapsed_minutes,
        c.usual,
        (1.0 - c.drop) * 100.0,
        c.expected,
        if c.references == 0 {
            "nothing else"
        } else {
            "the reference hosts' change"
        },
        c.hits,
        c.minutes,
        (1.0 - v.min_drop) * 100.0,
        c.null_hits,
        c.null_minutes,
        c.null_runs,
        c.p0,
        c.run,
        c.log_e.unwrap_or(0.0).min(700.0).exp(),
        2.0 / alpha,
    );
    let tally = |value: f64, minutes: usize| Tally {
        value,
        lines: (value * minutes as f64) as u64,
        minutes: minutes as u32,
    };
    let reason = Reason {
        rule: v.rule,
        summary,
        severity: Severity::Critical,
        hosts: c.hosts.iter().map(|&h| hosts[h].name.to_string()).collect(),
        fingerprint: None,
        metric: Some(v.metric.into()),
        evidence: Evidence {
            released_before: Some(tally(c.usual, c.usual_minutes)),
            released_after: Some(tally(c.collapsed, c.collapsed_minutes)),
            expected: Some(c.expected),
            observed: c.collapsed,
            effect: c.drop,
            ..Evidence::default()
        }
        .sequential(c.log_e.unwrap_or(0.0), alpha / 2.0),
    };
    let mut out = candidate(v.rule.as_str(), reason, c.drop, v.min_drop, memory, None);
    if !c.passed(alpha) {
        out.significant = false;
        out.suspicious = false;
        out.reason.severity = Severity::Warning;
    }
    out.immediate = out.suspicious && c.references >= 2;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hosts` hosts over `t_len` minutes at `level` a minute, the first `released`
    /// released at `first` (settled `warm` minutes later), the others the reference.
    struct Fleet {
        values: Vec<f64>,
        t_len: usize,
        start: Vec<usize>,
        settled: Vec<usize>,
        first: usize,
        released: Vec<usize>,
        reference: Vec<usize>,
    }

    impl Fleet {
        fn new(hosts: usize, released: usize, t_len: usize, first: usize, level: f64) -> Self {
            // A little deterministic jitter, as real minutes have.
            let values = (0..hosts * t_len)
                .map(|i| level * (1.0 + 0.1 * ((i * 7919 % 13) as f64 / 13.0 - 0.5)))
                .collect();
            Self {
                values,
                t_len,
                start: vec![first; hosts],
                settled: vec![first + 2; hosts],
                first,
                released: (0..released).collect(),
                reference: (released..hosts).collect(),
            }
        }

        fn set(&mut self, h: usize, t: usize, v: f64) {
            self.values[h * self.t_len + t] = v;
        }

        fn run(&self, until: usize) -> Option<Collapse> {
            let w = Windows {
                t_len: until,
                start: &self.start,
                settled: &self.settled,
                first: self.first,
                released: &self.released,
                reference: &self.reference,
            };
            // The grid up to `until`, as a round at that minute sees it.
            let values: Vec<f64> = (0..self.start.len())
                .flat_map(|h| self.values[h * self.t_len..h * self.t_len + until].to_vec())
                .collect();
            test(&values, &w, 0.3, 1e-3)
        }
    }

    #[test]
    fn a_released_host_that_stops_passes_the_bar_within_minutes_of_its_warm_up() {
        let mut f = Fleet::new(6, 2, 90, 60, 200.0);
        for t in 60..90 {
            f.set(0, t, 5.0);
        }
        // Settled at 62: one minute that hit is no drop to read, two are not evidence
        // enough, four are.
        assert!(f.run(63).is_none());
        let early = f.run(64).expect("a drop to read");
        assert!(!early.passed(1e-3), "{early:?}");
        let c = f.run(66).expect("a drop to read");
        assert!(c.passed(1e-3), "{c:?}");
        assert_eq!((c.host, c.hosts.clone()), (0, vec![0]));
        assert!(c.drop > 0.95, "{c:?}");
        assert_eq!((c.hits, c.minutes), (4.0, 8.0));
    }

    #[test]
    fn the_whole_fleet_losing_its_work_together_is_no_collapse() {
        let mut f = Fleet::new(6, 2, 90, 60, 200.0);
        for h in 0..6 {
            for t in 60..90 {
                f.set(h, t, 60.0);
            }
        }
        assert_eq!(f.run(90), None);
        // A released host that loses its work on top of it does collapse.
        for t in 60..90 {
            f.set(1, t, 6.0);
        }
        let c = f.run(90).expect("a drop to read");
        assert!(c.passed(1e-3) && c.host == 1, "{c:?}");
        assert!((c.drop - 0.9).abs() < 0.05, "{c:?}");
    }

    #[test]
    fn a_fleet_all_but_stopped_together_is_not_compared_and_a_storm_on_one_reference_host_moves_nothing()
     {
        let mut f = Fleet::new(6, 2, 90, 60, 200.0);
        // An upstream outage: every host at 5 %, below what a minute's change is read at.
        for h in 0..6 {
            for t in 60..90 {
                f.set(h, t, 10.0);
            }
        }
        assert_eq!(f.run(90), None);
        // One reference host logging ten times its usual: the median of the reference
        // hosts' changes barely moves, so the released hosts do not look collapsed.
        let mut g = Fleet::new(6, 2, 90, 60, 200.0);
        for t in 60..90 {
            g.set(5, t, 2000.0);
        }
        assert_eq!(g.run(90), None);
    }

    #[test]
    fn reference_hosts_without_a_usual_volume_leave_the_released_hosts_to_their_own_past() {
        let mut f = Fleet::new(4, 2, 90, 60, 200.0);
        // The reference hosts have no access log (or log next to nothing).
        for h in 2..4 {
            for t in 0..90 {
                f.set(h, t, if t % 2 == 0 { -1.0 } else { 3.0 });
            }
        }
        for t in 60..90 {
            f.set(0, t, 4.0);
        }
        let c = f.run(90).expect("a drop to read");
        assert_eq!(c.references, 0, "{c:?}");
        assert!(c.passed(1e-3) && c.host == 0, "{c:?}");
    }

    #[test]
    fn one_released_host_of_many_that_stops_is_not_diluted_by_the_others() {
        let mut f = Fleet::new(16, 12, 90, 60, 200.0);
        for t in 70..90 {
            f.set(3, t, 4.0);
        }
        // Settled at 62, stopped from 70: five minutes of one host in twelve.
        let c = f.run(75).expect("a drop to read");
        assert!(c.passed(1e-3) && c.host == 3, "{c:?}");
        assert_eq!((c.hits, c.minutes), (5.0, 12.0 * 13.0));
    }

    #[test]
    fn a_host_that_collapses_every_other_few_minutes_passes_the_bar() {
        let mut f = Fleet::new(6, 2, 120, 60, 200.0);
        // Three minutes gone, three back, from the release on.
        for t in (60..120).filter(|t| (t - 60) / 3 % 2 == 0) {
            f.set(0, t, 0.0);
        }
        let c = f.run(120).expect("a drop to read");
        assert!(c.passed(1e-3), "{c:?}");
        assert_eq!((c.host, c.drop), (0, 1.0));
    }

    #[test]
    fn a_host_that_dipped_as_often_before_its_release_is_no_evidence() {
        let mut f = Fleet::new(4, 1, 90, 60, 200.0);
        // Before the release, every host drops out for a minute in four.
        for h in 0..4 {
            for t in (h..60).step_by(4) {
                f.set(h, t, 2.0);
            }
        }
        for t in (62..90).step_by(4) {
            f.set(0, t, 2.0);
        }
        let c = f.run(90).expect("a drop to read");
        assert!(
            c.hits > 0.0 && c.null_runs > 0.0 && !c.passed(1e-3),
            "{c:?}"
        );
    }

    #[test]
    fn a_host_that_dipped_more_often_than_the_others_before_is_held_to_its_own_rate() {
        let mut f = Fleet::new(12, 2, 120, 60, 200.0);
        // Host 0 drops out one minute in three before its release as after it; the
        // others never do, so the pooled bound is far below its own rate.
        for t in (0..120).step_by(3) {
            f.set(0, t, 2.0);
        }
        let c = f.run(120).expect("a drop to read");
        assert!(c.p0 < 0.1 && !c.passed(1e-3), "{c:?}");
    }

    #[test]
    fn a_missing_minute_is_not_a_collapse_and_a_quiet_host_is_not_judged() {
        let mut f = Fleet::new(4, 2, 90, 60, 200.0);
        for t in 60..90 {
            f.set(0, t, -1.0);
        }
        let mut quiet = Fleet::new(4, 2, 90, 60, 5.0);
        for t in 60..90 {
            quiet.set(0, t, 0.0);
        }
        assert_eq!(f.run(90), None);
        assert_eq!(quiet.run(90), None);
    }
}
