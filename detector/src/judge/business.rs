//! Business signals (DESIGN §5): what the app's users get, from its HTTP access logs —
//! the most direct evidence that a release hurts them.
//!
//! - `server_errors` — more responses with a 5xx per request on the released hosts than
//!   on the reference hosts in the same minutes, calibrated by the groups' ratio before the
//!   release: the anytime-valid sequential test of `sequential` with requests as the unit
//!   of work (a release with no 5xx before on any host expects the groups alike). Without
//!   reference hosts, the released hosts after their release against an upper bound of
//!   their own rate before it, with the same mixture of rate ratios. Blocks at once past
//!   its bar when the share at least doubled (learned per app) and rose by at least half a
//!   point of the requests.
//! - `latency` — slower responses, judged host-minute by host-minute: the requests of one
//!   minute share its GC pauses and its load, so thousands of them are not thousands of
//!   independent draws, while minutes of a host are nearly so. A released host-minute
//!   *hits* when its median (or 90th percentile) is at least ×1.25 (learned per app) the
//!   reference hosts' in the same minute (without reference hosts: the released hosts'
//!   own before the release). How often released host-minutes hit before the release
//!   (jitter, GC pauses, a host slower by nature) is bounded above; the hits after it are
//!   tested against that rate by a sequential mixture of higher hit rates. So one slow
//!   minute never blocks, and a regression blocks after a few host-minutes. It blocks at
//!   once past its bar when the slowest released host's median compared minute is also
//!   that much slower than usual (a fault on one released host of three is not diluted
//!   by the other two; without reference hosts: past the bar in the window's rounds). A host
//!   with fewer than five compared minutes before its release is not judged.
//! - `traffic` — a released host still reporting whose requests all but stopped: its
//!   minutes below a fifth of its usual requests after the reference hosts' own change
//!   (requests leaving the released hosts while the others keep theirs), by the
//!   calibrated collapse test of `signals::collapse`, host-minute by host-minute against
//!   how often minutes fell so where nothing was released. Past its bar it blocks at once
//!   with two reference hosts or more (unless the app's learned threshold of the drop,
//!   at least [`JudgeParams::traffic_min_drop`], holds it back); with fewer (a load
//!   balancer draining the whole group looks the same) the window's rounds decide.
//!
//! `server_errors` and `latency` spend [`BUSINESS_SHARE`] of the release's false-block
//! budget, half each (`server_errors` splits its half between its two tests, the one
//! against its own baseline half for the test and half for its bound on that baseline;
//! latency between its two quantiles, each between its test and its bound); `traffic`
//! half of the collapse tests' [`COLLAPSE_SHARE`], between its test and its bound.
//! Counts only come from minutes a host reported requests in: a host without an access
//! log, or whose agent is down, is *missing*, never zero.

use std::collections::BTreeMap;

use vigil_proto::latency;

use super::grid::Windows;
use super::sequential::{self, RATIOS, hit_mixture, hit_rate_bound, mix};
use super::signal::{Candidate, HostView, candidate};
use super::signals::collapse::{self, COLLAPSE_SHARE};
use super::stats::binomial_upper_bound;
use super::{Evidence, JudgeParams, Latency, Learned, Reason, Rule, Severity, Tally};

/// Share of the release's false-block budget spent by `server_errors` and `latency`
/// (`traffic` spends half of the collapse tests' share).
pub(crate) const BUSINESS_SHARE: f64 = 0.2;

/// Quantiles compared by the latency test.
const LATENCY_QUANTILES: [f64; 2] = [0.5, 0.9];

/// The round's grid of requests: per host and minute (`host * t_len + t`).
pub(super) struct Traffic<'a> {
    /// Requests, `-1` where the host reported none (no access log, or no row).
    pub requests: Vec<f64>,
    /// 5xx responses.
    pub server_errors: Vec<f64>,
    /// Response times, where the host reported some.
    pub latency: Vec<Option<&'a Latency>>,
}

impl<'a> Traffic<'a> {
    /// The grid of `hosts` over `t_len` minutes from `base_from`; `None` when no host
    /// reported requests.
    pub(super) fn new(hosts: &[HostView<'a>], base_from: i64, t_len: usize) -> Option<Self> {
        let cells = hosts.len() * t_len;
        let mut grid = Traffic {
            requests: vec![-1.0; cells],
            server_errors: vec![0.0; cells],
            latency: vec![None; cells],
        };
        let mut any = false;
        for (i, h) in hosts.iter().enumerate() {
            for row in &h.rows {
                let Some(r) = &row.requests else { continue };
                let t = usize::try_from((row.minute - base_from) / 60).unwrap_or(usize::MAX);
                if t >= t_len {
                    continue;
                }
                any = true;
                let cell = i * t_len + t;
                grid.requests[cell] = r.count as f64;
                grid.server_errors[cell] = r.status.server_error as f64;
                if !r.latency_ms.is_empty() {
                    grid.latency[cell] = Some(&r.latency_ms);
                }
            }
        }
        any.then_some(grid)
    }
}

/// The business signals of a round; `slow_settled` is where each host's minutes past the
/// host metrics' warm-up start (for latency).
pub(super) fn signals(
    hosts: &[HostView<'_>],
    traffic: &Traffic<'_>,
    w: &Windows<'_>,
    slow_settled: &[usize],
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Vec<Candidate> {
    let alpha = params.false_block_budget * BUSINESS_SHARE / 2.0;
    let mut out = Vec::new();
    out.extend(server_errors(hosts, traffic, w, alpha, params, memory));
    // A restarted JVM answers slower while it compiles and fills its caches: latency
    // skips the host metrics' warm-up.
    let slow = Windows {
        settled: slow_settled,
        ..*w
    };
    out.extend(latency_signal(hosts, traffic, &slow, alpha, params, memory));
    let collapse_alpha = params.false_block_budget * COLLAPSE_SHARE / 2.0;
    out.extend(traffic_drop(
        hosts,
        traffic,
        w,
        collapse_alpha,
        params,
        memory,
    ));
    out
}

/// Dispersion of `values` per unit of `work` over the hosts' baseline minutes: Pearson
/// χ² per degree of freedom against each host's own rate, at least 1; `default` when the
/// baseline is too thin to tell.
fn dispersion(values: &[f64], work: &[f64], w: &Windows<'_>, default: f64, max: f64) -> f64 {
    let (mut chi2, mut df) = (0.0, 0.0);
    for &h in w.released.iter().chain(w.reference) {
        let end = w.start[h].min(w.first).min(w.t_len);
        let cells = (0..end).map(|t| h * w.t_len + t).filter(|&c| work[c] > 0.0);
        let (k, n, m) = cells.clone().fold((0.0, 0.0, 0.0), |(k, n, m), c| {
            (k + values[c], n + work[c], m + 1.0)
        });
        if k < 1.0 || m < 2.0 {
            continue;
        }
        let rate = k / n;
        for c in cells {
            let expected = rate * work[c];
            if expected > 0.0 {
                chi2 += (values[c] - expected).powi(2) / expected;
            }
        }
        df += m - 1.0;
    }
    if df < 10.0 {
        default
    } else {
        (chi2 / df).clamp(1.0, max)
    }
}

fn tally(value: f64, work: f64, minutes: u32) -> Tally {
    Tally {
        value,
        lines: work as u64,
        minutes,
    }
}

/// Released hosts with requests in their settled after window.
fn released_with_requests(
    hosts: &[HostView<'_>],
    traffic: &Traffic<'_>,
    w: &Windows<'_>,
) -> Vec<String> {
    w.released
        .iter()
        .filter(|&&h| (w.settled[h]..w.t_len).any(|t| traffic.requests[h * w.t_len + t] > 0.0))
        .map(|&h| hosts[h].name.to_string())
        .collect()
}

fn server_errors(
    hosts: &[HostView<'_>],
    traffic: &Traffic<'_>,
    w: &Windows<'_>,
    alpha: f64,
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Option<Candidate> {
    let phi = dispersion(
        &traffic.server_errors,
        &traffic.requests,
        w,
        params.default_dispersion,
        params.max_dispersion,
    );
    let inputs = sequential::Inputs {
        values: &traffic.server_errors,
        work: &traffic.requests,
        until: w.t_len,
        w: *w,
    };
    // Two tests, each with half the rule's share: against the reference hosts in the same
    // minutes (which allows for the groups' unknown ratio itself), and against the
    // released hosts' own rate before the release (half of its half for the test, half
    // for its bound on that rate) — which decides when the baseline has too few 5xx for
    // the first to tell the groups' ratio, and which, with reference hosts, also needs the released
    // share to be the threshold's times theirs in the same minutes (a fleet-wide outage is
    // not the release's).
    let (alpha_reference, alpha) = if w.reference.is_empty() {
        (alpha, alpha / 2.0)
    } else {
        (alpha / 2.0, alpha / 4.0)
    };
    let alpha_of = |f: &ErrorFinding| if f.own { alpha } else { alpha_reference };
    let passes = |f: &ErrorFinding| {
        let excess = f.observed - f.expected;
        f.log_e >= (1.0 / alpha_of(f)).ln()
            && excess >= params.rate_min_excess
            && excess >= params.server_error_min_share * f.requests
    };
    let against_reference = (!w.reference.is_empty())
        .then(|| {
            sequential::test(
                &inputs,
                sequential::Overdispersion::constant(phi),
                Some(1.0),
            )
        })
        .flatten()
        .map(|s| ErrorFinding {
            log_e: s.log_e,
            observed: s.observed,
            expected: s.expected,
            requests: s.released_work,
            minutes: s.minutes,
            before: s.before,
            reference_after: Some((s.reference_events, s.reference_work)),
            own: false,
            interval: s.ratio_interval(phi),
        });
    let against_own = against_own_baseline(&inputs, phi, alpha).filter(|f| {
        let Some((k, n)) = f.reference_after else {
            return true;
        };
        // The released share must stand out from the reference hosts' in those minutes.
        n <= 0.0 || f.observed / f.requests >= params.server_error_min_ratio * (k + 0.5) / n
    });
    let finding = match (against_reference, against_own) {
        (Some(a), _) if passes(&a) => a,
        (_, Some(b)) if passes(&b) => b,
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => return None,
    };
    let ErrorFinding {
        log_e,
        observed,
        expected,
        requests,
        minutes,
        before,
        reference_after,
        own,
        interval,
    } = finding;
    if requests <= 0.0 {
        return None;
    }
    let passed = passes(&finding);
    let finding_alpha = alpha_of(&finding);
    let ratio = if expected > 0.0 {
        observed / expected
    } else {
        f64::INFINITY
    };
    let excess = observed - expected;
    let share = |k: f64, n: f64| if n > 0.0 { 100.0 * k / n } else { 0.0 };
    let reference = reference_after.map_or(String::new(), |(k, n)| {
        format!(
            " vs {:.2}% on reference hosts in the same minutes",
            share(k, n)
        )
    });
    let expected_from = if own {
        "their own rate before the release"
    } else {
        "the reference hosts' rate and the groups' ratio before the release"
    };
    let summary = format!(
        "server errors (5xx) on released hosts: {:.2}% of {:.0} requests in {minutes} minutes{reference} (before the release: released {:.2}%, reference {:.2}%); {observed:.0} seen vs {expected:.1} expected from {expected_from}, ×{ratio:.1}; sequential test e={:.3e} against 1/α={:.3e}",
        share(observed, requests),
        requests,
        share(before[0], before[1]),
        share(before[2], before[3]),
        log_e.min(700.0).exp(),
        1.0 / finding_alpha,
    );
    let reason = Reason {
        rule: Rule::ServerErrors,
        summary,
        severity: Severity::Critical,
        hosts: released_with_requests(hosts, traffic, w),
        fingerprint: None,
        metric: Some("5xx".into()),
        evidence: Evidence {
            released_before: Some(tally(before[0], before[1], 0)),
            released_after: Some(tally(observed, requests, minutes)),
            reference_before: (!w.reference.is_empty()).then(|| tally(before[2], before[3], 0)),
            reference_after: reference_after.map(|(k, n)| tally(k, n, minutes)),
            expected: Some(expected),
            observed,
            effect: ratio,
            dispersion: Some(phi),
            ..Evidence::default()
        }
        .sequential(log_e, finding_alpha)
        .with_interval(interval),
    };
    let mut c = candidate(
        Rule::ServerErrors.as_str(),
        reason,
        ratio,
        params.server_error_min_ratio,
        memory,
        None,
    );
    if !passed {
        // Shown as a warning only when something is there to see.
        if excess < params.rate_min_excess {
            return None;
        }
        c.significant = false;
        c.suspicious = false;
        c.reason.severity = Severity::Warning;
    }
    c.immediate = c.suspicious;
    Some(c)
}

/// What a 5xx test found.
#[derive(Debug, Clone, Copy)]
struct ErrorFinding {
    /// ln of the e-value.
    log_e: f64,
    observed: f64,
    expected: f64,
    /// Released requests in the compared minutes.
    requests: f64,
    minutes: u32,
    /// Before the release: released 5xx and requests, reference 5xx and requests.
    before: [f64; 4],
    /// Reference 5xx and requests in the compared minutes.
    reference_after: Option<(f64, f64)>,
    /// Against the released hosts' own past.
    own: bool,
    /// The 95 % interval of the ratio observed / expected.
    interval: [f64; 2],
}

/// The released hosts' settled minutes after their release against an upper bound (level
/// `alpha`) of their own rate before it — times the reference hosts' own change over those
/// minutes when that is a rise — by the mixture of [`RATIOS`] (Poisson likelihoods on
/// counts divided by `phi`); with the reference hosts' counts in those minutes.
fn against_own_baseline(
    inputs: &sequential::Inputs<'_>,
    phi: f64,
    alpha: f64,
) -> Option<ErrorFinding> {
    let t_len = inputs.w.t_len;
    let cell = |h: usize, t: usize| h * t_len + t;
    let (mut kb, mut nb) = (0.0, 0.0);
    for &h in inputs.w.released {
        for t in 0..inputs.w.start[h].min(t_len) {
            let n = inputs.work[cell(h, t)];
            if n > 0.0 {
                kb += inputs.values[cell(h, t)];
                nb += n;
            }
        }
    }
    let (mut yb, mut fb) = (0.0, 0.0);
    for &h in inputs.w.reference {
        for t in 0..inputs.w.first.min(t_len) {
            let n = inputs.work[cell(h, t)];
            if n > 0.0 {
                yb += inputs.values[cell(h, t)];
                fb += n;
            }
        }
    }
    if nb <= 0.0 {
        return None;
    }
    let rate = binomial_upper_bound(kb / phi, nb / phi, alpha);
    let mut per_minute: Vec<(f64, f64)> = Vec::new();
    let (mut observed, mut work, mut minutes) = (0.0, 0.0, 0u32);
    let (mut y, mut f) = (0.0, 0.0);
    for t in inputs.w.first..inputs.until.min(t_len) {
        let (mut k, mut n) = (0.0, 0.0);
        for &h in inputs.w.released {
            if t >= inputs.w.settled[h] && inputs.work[cell(h, t)] >= 0.0 {
                k += inputs.values[cell(h, t)];
                n += inputs.work[cell(h, t)];
            }
        }
        if n <= 0.0 {
            continue;
        }
        for &h in inputs.w.reference {
            if inputs.work[cell(h, t)] >= 0.0 {
                y += inputs.values[cell(h, t)];
                f += inputs.work[cell(h, t)];
            }
        }
        minutes += 1;
        observed += k;
        work += n;
        per_minute.push((k, n));
    }
    if minutes == 0 {
        return None;
    }
    // Difference in differences: what the reference hosts' own rate did meanwhile (a
    // fleet-wide outage raises both) scales the expectation up, never down.
    let fleet = if fb > 0.0 && f > 0.0 {
        (((y + 0.5) / f) / ((yb + 0.5) / fb)).clamp(1.0, 50.0)
    } else {
        1.0
    };
    let mut log_lr = [0.0; RATIOS.len()];
    for (k, n) in per_minute {
        let (k, mean) = (k / phi, rate * fleet * n / phi);
        for (l, ratio) in log_lr.iter_mut().zip(RATIOS) {
            *l += k * ratio.ln() - (ratio - 1.0) * mean;
        }
    }
    Some(ErrorFinding {
        log_e: mix(&log_lr),
        observed,
        expected: rate * fleet * work,
        requests: work,
        minutes,
        before: [kb, nb, yb, fb],
        reference_after: (!inputs.w.reference.is_empty()).then_some((y, f)),
        own: true,
        // Around the shown ratio, which expects the baseline rate's upper bound.
        interval: sequential::ratio_interval(observed, kb, kb / (rate * fleet * work), phi),
    })
}

/// The `q` quantile of `h` in ms, interpolated within its bucket (log-linearly by rank), so
/// that ratios of quantiles move smoothly rather than by the layout's ×1.19 steps.
fn quantile_ms(h: &Latency, q: f64) -> Option<f64> {
    interpolated(h.buckets.iter().map(|(&i, &c)| (i, c)), q)
}

/// The `q` quantile of a histogram given as `(index, count)` in ascending index order,
/// interpolated log-linearly by rank within its bucket; `None` when it is empty.
fn interpolated(buckets: impl Iterator<Item = (i32, u64)> + Clone, q: f64) -> Option<f64> {
    let total: u64 = buckets.clone().map(|(_, c)| c).sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(0.5);
    let mut seen = 0.0;
    for (i, c) in buckets {
        let c = c as f64;
        if c > 0.0 && seen + c >= rank {
            let (lo, hi) = (latency::upper_ms(i - 1).ln(), latency::upper_ms(i).ln());
            let within = ((rank - seen) / c).clamp(0.0, 1.0);
            return Some((lo + within * (hi - lo)).exp());
        }
        seen += c;
    }
    None
}

/// Fewest compared minutes before its release that tell a host's usual latency ratio.
const MIN_USUAL_MINUTES: usize = 5;

/// Fewest compared minutes after its release for a host to be the slowest one.
const MIN_HOST_MINUTES: usize = 5;

/// Fewest requests a host-minute needs for its quantile to be compared.
const MIN_MINUTE_REQUESTS: u64 = 20;

/// Hit rates of the latency test's mixture: the share of released host-minutes slower
/// than the comparison by the threshold, under a regression.
const LATENCY_HIT_RATES: [f64; 3] = [0.5, 0.8, 0.95];

/// The latency test's view of one quantile, host-minute by host-minute. Each host-minute's
/// quantile is divided by the comparison's in that minute (the reference hosts' requests
/// together — without the host itself when it is one of them —; without reference hosts,
/// the released hosts' own before the release) and by the host's usual such ratio before
/// the release (its median: a host slower by nature stays so).
struct LatencyMinutes {
    /// Normalised ratios before the release, of released and reference hosts: how far a
    /// host-minute wanders from its usual level when nothing changed.
    before: Vec<f64>,
    /// Released hosts' settled host-minutes after their release: (host, normalised ratio).
    after: Vec<(usize, f64)>,
    released: Latency,
    comparison: Latency,
    minutes: u32,
}

/// The `q` quantile of `a` without `b`'s times (`b` is part of `a`), as [`quantile_ms`]
/// reads it, without building the difference.
fn quantile_without(a: &Latency, b: Option<&Latency>, q: f64) -> Option<f64> {
    let Some(b) = b else {
        return quantile_ms(a, q);
    };
    let remaining = a
        .buckets
        .iter()
        .map(|(&i, &c)| (i, c.saturating_sub(b.buckets.get(&i).copied().unwrap_or(0))));
    if remaining.clone().map(|(_, c)| c).sum::<u64>() < MIN_MINUTE_REQUESTS {
        return None;
    }
    interpolated(remaining, q)
}

fn latency_minutes(traffic: &Traffic<'_>, w: &Windows<'_>, q: f64) -> LatencyMinutes {
    let t_len = w.t_len;
    let cell = |i: usize, t: usize| traffic.latency[i * t_len + t];
    let own_before = w.reference.is_empty().then(|| {
        let mut h = Latency::default();
        for &i in w.released {
            for t in 0..w.start[i].min(t_len) {
                if let Some(l) = cell(i, t) {
                    h.merge(l);
                }
            }
        }
        h
    });
    // Per minute: the reference hosts' requests together (without reference hosts, every
    // minute compares with the released hosts' past).
    let reference: Vec<Latency> = if own_before.is_some() {
        Vec::new()
    } else {
        (0..t_len)
            .map(|t| {
                let mut h = Latency::default();
                for &i in w.reference {
                    if let Some(l) = cell(i, t) {
                        h.merge(l);
                    }
                }
                h
            })
            .collect()
    };
    let comparison = |t: usize| -> &Latency {
        match &own_before {
            Some(h) => h,
            None => &reference[t],
        }
    };
    // The comparison's quantile per minute, read once.
    let bars: Vec<Option<f64>> = (0..t_len)
        .map(|t| {
            quantile_without(comparison(t), None, q)
                .filter(|_| comparison(t).count() >= MIN_MINUTE_REQUESTS)
        })
        .collect();
    // A host-minute's quantile over the comparison's (without the host's own requests
    // when it is a reference host).
    let raw = |i: usize, t: usize, own: bool| -> Option<f64> {
        let h = cell(i, t)?;
        if h.count() < MIN_MINUTE_REQUESTS {
            return None;
        }
        let bar = if own {
            quantile_without(comparison(t), Some(h), q)?
        } else {
            bars[t]?
        };
        Some(quantile_ms(h, q)? / bar.max(1e-9))
    };
    let mut out = LatencyMinutes {
        before: Vec::new(),
        after: Vec::new(),
        released: Latency::default(),
        comparison: Latency::default(),
        minutes: 0,
    };
    // The usual level of a host's ratio, and its ratios before the release normalised;
    // `None` with too few minutes to know it (a host new or quiet before the release is
    // not compared: slower by nature would look slower by the release).
    let usual = |i: usize, own: bool, out: &mut LatencyMinutes| -> Option<f64> {
        let end = w.start[i].min(t_len);
        let mut ratios: Vec<f64> = (0..end).filter_map(|t| raw(i, t, own)).collect();
        if ratios.len() < MIN_USUAL_MINUTES {
            return None;
        }
        let level = super::stats::median(&mut ratios)?.max(1e-9);
        out.before.extend(ratios.iter().map(|r| r / level));
        Some(level)
    };
    if w.reference.len() >= 2 {
        for &i in w.reference {
            usual(i, true, &mut out);
        }
    }
    let mut compared = vec![false; t_len];
    for &i in w.released {
        let Some(level) = usual(i, false, &mut out) else {
            continue;
        };
        let from = w.settled[i].max(w.first).min(t_len);
        for (t, seen) in compared.iter_mut().enumerate().skip(from) {
            let Some(r) = raw(i, t, false) else { continue };
            out.after.push((i, r / level));
            if let Some(h) = cell(i, t) {
                out.released.merge(h);
            }
            *seen = true;
        }
    }
    for (t, _) in compared.iter().enumerate().filter(|c| *c.1) {
        out.minutes += 1;
        out.comparison.merge(comparison(t));
    }
    out
}

/// The largest median ratio of a host's compared minutes, among hosts compared in at least
/// [`MIN_HOST_MINUTES`] minutes (all host-minutes together when none is). The median of
/// five minutes or more: the slowest of many hosts is not one host's passing noise.
fn slowest_host(after: &[(usize, f64)]) -> Option<f64> {
    let mut by_host: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for &(host, ratio) in after {
        by_host.entry(host).or_default().push(ratio);
    }
    by_host
        .into_values()
        .filter(|r| r.len() >= MIN_HOST_MINUTES)
        .filter_map(|mut r| super::stats::median(&mut r))
        .reduce(f64::max)
        .or_else(|| super::stats::median(&mut after.iter().map(|a| a.1).collect::<Vec<_>>()))
}

fn latency_signal(
    hosts: &[HostView<'_>],
    traffic: &Traffic<'_>,
    w: &Windows<'_>,
    alpha: f64,
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Option<Candidate> {
    // Per quantile, half for the test and half for the bound on the baseline's hit rate.
    let alpha = alpha / (2.0 * LATENCY_QUANTILES.len() as f64);
    let bar = (1.0 / alpha).ln();
    let ratio = memory
        .threshold(Rule::Latency.as_str())
        .map_or(params.latency_min_ratio, |l| {
            l.max(params.latency_min_ratio)
        });
    let mut best: Option<Candidate> = None;
    for q in LATENCY_QUANTILES {
        let lm = latency_minutes(traffic, w, q);
        if lm.after.is_empty() {
            continue;
        }
        // A hit: a host-minute slower than its usual level by more than 19 in 20
        // host-minutes were before the release (at least ×1.1, at most the threshold).
        let mut before = lm.before.clone();
        let hit_at = super::stats::quantile(&mut before, 0.95)
            .unwrap_or(ratio)
            .clamp(1.1, ratio.max(1.1));
        let kb = lm.before.iter().filter(|&&r| r >= hit_at).count() as u32;
        let nb = lm.before.len() as u32;
        let x = lm.after.iter().filter(|a| a.1 >= hit_at).count() as u32;
        let n = lm.after.len() as u32;
        // How often host-minutes hit before the release, bounded above; without a
        // baseline, one in five.
        let p0 = hit_rate_bound(f64::from(kb), f64::from(nb), 1.0, alpha);
        let Some(log_e) = hit_mixture(f64::from(x), f64::from(n), p0, &LATENCY_HIT_RATES) else {
            continue;
        };
        let (Some(released_q), Some(comparison_q)) =
            (quantile_ms(&lm.released, q), quantile_ms(&lm.comparison, q))
        else {
            continue;
        };
        // The slow-down of the slowest released host's typical compared minute, each host
        // against its own usual ratio to the comparison: a fault on some released hosts
        // is not diluted by the others.
        let effect = slowest_host(&lm.after).unwrap_or(1.0);
        let mut hit_hosts: Vec<usize> = lm
            .after
            .iter()
            .filter(|a| a.1 >= hit_at)
            .map(|a| a.0)
            .collect();
        hit_hosts.sort_unstable();
        hit_hosts.dedup();
        if x == 0 || (log_e < bar && effect < params.latency_min_ratio) {
            continue;
        }
        let against = if w.reference.is_empty() {
            "their own before the release"
        } else {
            "reference hosts in the same minutes"
        };
        let pct = (q * 100.0).round();
        let summary = format!(
            "latency p{pct} on released hosts {released_q:.1} ms vs {comparison_q:.1} ms on {against} over {} minutes, ×{effect:.2} their usual ratio (the slowest host's median minute); {x} of {n} released host-minutes at least ×{hit_at:.2} slower than usual, where {kb} of {nb} host-minutes were before the release; sequential test e={:.3e} against 1/α={:.3e}",
            lm.minutes,
            log_e.min(700.0).exp(),
            1.0 / alpha,
        );
        let reason = Reason {
            rule: Rule::Latency,
            summary,
            severity: Severity::Critical,
            hosts: hit_hosts
                .iter()
                .map(|&h| hosts[h].name.to_string())
                .collect(),
            fingerprint: None,
            metric: Some(format!("p{pct}")),
            evidence: Evidence {
                // The quantile, over the requests and host-minutes compared.
                released_after: Some(tally(released_q, lm.released.count() as f64, n)),
                reference_after: Some(tally(
                    comparison_q,
                    lm.comparison.count() as f64,
                    lm.minutes,
                )),
                expected: Some(comparison_q),
                observed: released_q,
                effect,
                ..Evidence::default()
            }
            .sequential(log_e, alpha),
        };
        let mut c = candidate(
            Rule::Latency.as_str(),
            reason,
            effect,
            params.latency_min_ratio,
            memory,
            None,
        );
        if log_e < bar {
            c.significant = false;
            c.suspicious = false;
            c.reason.severity = Severity::Warning;
        }
        // Without reference hosts nothing controls for a fleet-wide slow-down: the
        // window's rounds decide, not one round.
        c.immediate = c.suspicious && !w.reference.is_empty();
        let better = match &best {
            None => true,
            Some(b) => (c.suspicious, c.effect) > (b.suspicious, b.effect),
        };
        if better {
            best = Some(c);
        }
    }
    best
}

fn traffic_drop(
    hosts: &[HostView<'_>],
    traffic: &Traffic<'_>,
    w: &Windows<'_>,
    alpha: f64,
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Option<Candidate> {
    let min_drop = params.traffic_min_drop;
    let c = collapse::test(&traffic.requests, w, 1.0 - min_drop, alpha)?;
    let volume = collapse::Volume {
        rule: Rule::Traffic,
        what: "requests",
        metric: "requests",
        min_drop,
    };
    Some(collapse::candidate_of(&c, &volume, hosts, alpha, memory))
}
