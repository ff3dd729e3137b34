//! Rule 3: more of a known exception, or of error lines, on the released hosts than the
//! reference hosts' rate and their own before the release predict. The sequential test
//! ([`crate::judge::sequential`]) blocks as soon as its evidence is past the bar; the
//! classic test ([`rate_test`]) judges what it has not.

use crate::judge::grid::{Groups, SigHost};
use crate::judge::memory::exception_kind;
use crate::judge::sequential::{self, RATE_SHARE};
use crate::judge::signal::{Candidate, HostView, learned_candidate};
use crate::judge::stats::{binomial_upper_tail, student_t_upper_tail};
use crate::judge::{
    Evidence, Fingerprint, JudgeParams, Learned, Reason, Rule, Severity, Tally, fingerprint_hex,
};

/// Counts of one signal for the rate test of rule 3.
#[derive(Debug, Clone, Default)]
struct RateInput {
    /// Released hosts before their release: events, lines.
    kr_b: f64,
    nr_b: f64,
    /// Reference hosts before the first batch.
    kf_b: f64,
    nf_b: f64,
    /// Released hosts over their settled after-window (all minutes).
    kr_a: f64,
    nr_a: f64,
    /// Per minute where both groups have data: (released events, released lines each
    /// weighted by its host's before-release ratio to the reference group, reference
    /// events, reference lines).
    matched: Vec<(f64, f64, f64, f64)>,
    /// Released per-minute (events, lines) before and after (settled), for the
    /// per-minute test when there is no reference group.
    before_minutes: Vec<(f64, f64)>,
    after_minutes: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Copy)]
struct RateResult {
    /// Events observed on the released hosts (over matched minutes when there is a
    /// reference group).
    observed: f64,
    expected: f64,
    ratio: f64,
    /// p-value of the main test (released vs reference when there is a reference group,
    /// after vs before otherwise).
    p: f64,
    /// p-value of the guard test (after vs before on the released hosts, when there is
    /// both a reference group and a baseline; 0 otherwise).
    p_guard: f64,
    /// p-value of the per-minute test (variance from the minutes themselves).
    p_minutes: f64,
    /// Reference events and lines over the matched minutes.
    kf_a: f64,
    nf_a: f64,
}

/// Pseudo-events shrinking the released/reference baseline ratio towards 1.
const SHRINK_EVENTS: f64 = 8.0;

/// The rate test of rule 3 (see the module docs of `judge`).
///
/// With a reference group: the released/reference ratio of rates before the release, `c`
/// (shrunk towards 1), gives for each minute after the release the share of the minute's
/// events the released hosts should hold, `c·N_r / (c·N_r + N_f)`; the released events
/// are tested against the sum of those binomials (as one binomial with the mean share,
/// which is conservative) on counts divided by the dispersion `phi`. With a baseline,
/// released-after is also tested against released-before (both tests must reject), so a
/// reference group that happens to quieten down cannot make a release look bad alone.
fn rate_test(x: &RateInput, phi: f64) -> Option<RateResult> {
    let has_ref = !x.matched.is_empty();
    let has_base = x.nr_b > 0.0;
    if x.nr_a <= 0.0 || x.kr_a <= 0.0 || (!has_ref && !has_base) {
        return None;
    }
    let mut p: f64 = 0.0;
    let p_minutes;
    let (observed, expected, kf_a, nf_a);
    if has_ref {
        // The released lines of `matched` are already weighted by each host's
        // released/reference ratio before the release.
        let c = 1.0;
        let (mut k, mut n, mut mean, mut exp, mut kf, mut nf) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for &(kr_t, nr_t, kf_t, nf_t) in &x.matched {
            let share = c * nr_t / (c * nr_t + nf_t);
            k += kr_t;
            n += kr_t + kf_t;
            mean += (kr_t + kf_t) * share;
            exp += c * nr_t * kf_t / nf_t;
            kf += kf_t;
            nf += nf_t;
        }
        if k <= 0.0 || n <= 0.0 {
            return None;
        }
        let did = binomial_upper_tail(k / phi, n / phi, mean / n);
        // Rare exceptions: a handful of reference events say little on their own, so the
        // released events are also tested against every other cell pooled (before on both
        // groups, reference after). The guards below keep fleet-wide surges and noisy
        // hosts out (they need growth on the released hosts themselves, minute by minute).
        let others = x.kr_b + x.kf_b + kf;
        let other_lines = x.nr_b + x.nf_b + nf;
        let cn: f64 = x.matched.iter().map(|m| m.1).sum();
        let pooled = if other_lines > 0.0 && cn > 0.0 {
            binomial_upper_tail(k / phi, (k + others) / phi, cn / (cn + other_lines))
        } else {
            1.0
        };
        p = p.max(did.min(pooled));
        // Per-minute excesses must also be consistently positive: a t-test that takes the
        // variance from the minutes themselves, whatever the overdispersion (a surge
        // multiplies the variance of negative-binomial counts far beyond what the
        // baseline's dispersion says).
        let excess: Vec<f64> = x
            .matched
            .iter()
            .map(|&(kr_t, nr_t, kf_t, nf_t)| kr_t - (kr_t + kf_t) * c * nr_t / (c * nr_t + nf_t))
            .collect();
        p_minutes = t_test_positive(&excess);
        (observed, expected, kf_a, nf_a) = (k, exp, kf, nf);
    } else {
        (observed, expected, kf_a, nf_a) = (x.kr_a, x.nr_a * x.kr_b / x.nr_b, 0.0, 0.0);
        // Welch's t-test on per-minute rates after against before.
        p_minutes = welch_greater(&x.after_minutes, &x.before_minutes);
    }
    let mut p_guard = 0.0;
    if has_base {
        let p0 = x.nr_a / (x.nr_a + x.nr_b);
        let before_after = binomial_upper_tail(x.kr_a / phi, (x.kr_a + x.kr_b) / phi, p0);
        if has_ref {
            p_guard = before_after;
        } else {
            p = p.max(before_after);
        }
    }
    Some(RateResult {
        observed,
        expected,
        ratio: (observed + 1.0) / (expected + 1.0),
        p,
        p_guard,
        p_minutes,
        kf_a,
        nf_a,
    })
}

/// Minutes needed before a per-minute test can reject.
const MIN_TEST_MINUTES: usize = 3;

/// One-sided one-sample t-test that the mean of `values` is above 0; 1.0 when there are
/// too few values. A constant positive series (no spread) rejects.
fn t_test_positive(values: &[f64]) -> f64 {
    let n = values.len();
    if n < MIN_TEST_MINUTES {
        return 1.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    if var <= 1e-12 {
        return if mean > 0.0 { 0.0 } else { 1.0 };
    }
    student_t_upper_tail(mean / (var / n as f64).sqrt(), (n - 1) as f64)
}

/// One-sided Welch t-test that per-minute rates (events / lines) of `after` exceed those
/// of `before`.
fn welch_greater(after: &[(f64, f64)], before: &[(f64, f64)]) -> f64 {
    let rates = |v: &[(f64, f64)]| -> Vec<f64> {
        v.iter().filter(|m| m.1 > 0.0).map(|m| m.0 / m.1).collect()
    };
    let (a, b) = (rates(after), rates(before));
    if a.len() < MIN_TEST_MINUTES || b.len() < MIN_TEST_MINUTES {
        return 1.0;
    }
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var / n)
    };
    let ((ma, va), (mb, vb)) = (stats(&a), stats(&b));
    let se2 = va + vb;
    if se2 <= 1e-18 {
        return if ma > mb { 0.0 } else { 1.0 };
    }
    let df = se2 * se2
        / (va * va / (a.len() as f64 - 1.0) + vb * vb / (b.len() as f64 - 1.0)).max(1e-300);
    student_t_upper_tail((ma - mb) / se2.sqrt(), df.max(1.0))
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RateSignal<'a> {
    pub(crate) rule: Rule,
    pub(crate) label: &'a str,
    pub(crate) fingerprint: Option<Fingerprint>,
    /// The fingerprints counted under `fingerprint` (its counting key) this round.
    pub(crate) members: &'a [Fingerprint],
    /// What its rates are per: events, lines, or both (hosts whose agents differ).
    pub(crate) unit: &'a str,
}

impl RateSignal<'_> {
    /// What the app learns this signal's normal under: one threshold per exception, one
    /// for error lines.
    fn kind(&self) -> String {
        self.fingerprint
            .map_or_else(|| self.rule.as_str().to_string(), exception_kind)
    }

    /// Minutes with events in a row, up to the one judged, that must each have added to the
    /// sequential evidence before it blocks: none for an exception,
    /// [`ERROR_PERSIST_MINUTES`] for error lines.
    fn persistence(&self) -> usize {
        match self.rule {
            Rule::ErrorRate => ERROR_PERSIST_MINUTES,
            _ => 0,
        }
    }

    /// The exception's other fingerprints' kinds: which of a failure's shapes a round sees
    /// (and so its counting key) depends on the JIT's warm-up, not on the release, so what
    /// one release taught under one of them holds for all.
    fn aliases(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|&&m| Some(m) != self.fingerprint)
            .map(|&m| exception_kind(m))
            .collect()
    }
}

/// Error lines' sequential evidence past the bar blocks only if it rose with each of its
/// last this many minutes that had events (the first of them on top of an earlier
/// compared minute). A restart's complaints (connection refused, timeouts while caches
/// fill) swell error lines for a minute or two past an app's usual start-up now and then:
/// strong evidence at once, which the test keeps, but the minutes after the swell take
/// from it. A rise that lasts keeps adding, and blocks as soon as the evidence is past
/// the bar once four compared minutes show it. Asking more of the evidence than the bar
/// only ever blocks less, so the test's false-alarm bound holds as it is.
pub(crate) const ERROR_PERSIST_MINUTES: usize = 3;

/// Dispersion of a signal over the baseline: per host, Pearson χ²/df against the host's
/// own rate; for the group, the mean of the hosts' factors weighted by their events (the
/// variance of negative-binomial counts grows with the mean, so busy hosts dominate the
/// variance of a sum). Returns (group, per host); thin baselines get the default.
fn dispersion(
    per_host: &[SigHost],
    pearsons: &[Option<f64>],
    params: &JudgeParams,
) -> (f64, Vec<f64>) {
    let mut host_phi = vec![f64::NAN; per_host.len()];
    let (mut weighted, mut events, mut total) = (0.0, 0.0, 0.0);
    for (i, (s, phi)) in per_host.iter().zip(pearsons).enumerate() {
        total += s.kb;
        if let Some(phi) = phi.map(|p| p.max(1.0)) {
            weighted += phi * s.kb;
            events += s.kb;
            if s.kb >= MIN_EVENTS {
                host_phi[i] = phi;
            }
        }
    }
    let group = if total < 5.0 || events <= 0.0 {
        params.default_dispersion
    } else {
        (weighted / events).clamp(1.0, params.max_dispersion)
    };
    let per_host = host_phi
        .into_iter()
        .map(|p| if p.is_nan() { group } else { p.max(group) })
        .collect();
    (group, per_host)
}

/// The dispersion of `group`'s hosts over their baseline minutes, event-weighted as the
/// pooled one of [`dispersion`], `pooled`; `pooled` itself with fewer than
/// [`MIN_EVENTS`] events in it. A few hosts' hour reads it loosely (and low more often than high: a wandering
/// count's quiet hour looks steady), so it is taken at its one-sided 95 % upper bound,
/// `φ̂·(1 + 1.645·√(2/df + 1/events))`, where that stays under the pooled value: a group
/// is called steadier than the fleet only as far as its own minutes show it.
fn group_dispersion(
    (per_host, pearsons): (&[SigHost], &[Option<f64>]),
    hosts: &[HostView<'_>],
    group: &[usize],
    pooled: f64,
    params: &JudgeParams,
) -> f64 {
    let (mut weighted, mut events, mut df) = (0.0, 0.0, 0.0);
    for &h in group {
        if let Some(phi) = pearsons[h] {
            weighted += phi.max(1.0) * per_host[h].kb;
            events += per_host[h].kb;
            df += f64::from(hosts[h].tb - 1);
        }
    }
    if events < MIN_EVENTS {
        return pooled;
    }
    let estimate = (weighted / events).clamp(1.0, params.max_dispersion);
    let upper = estimate * (1.0 + 1.645 * (2.0 / df + 1.0 / events).sqrt());
    estimate.max(upper.min(pooled))
}

/// Fewest baseline events on a host for its own dispersion to be read.
const MIN_EVENTS: f64 = 10.0;

/// A host's Pearson χ²/df over its baseline minutes against its own rate (at most the
/// largest dispersion used; about 1, above or below, for Poisson counts); `None` without
/// events or two minutes.
fn pearson(s: &SigHost, h: &HostView<'_>, params: &JudgeParams) -> Option<f64> {
    (s.kb > 0.0 && h.nb > 0.0 && h.tb >= 2).then(|| {
        let rate = s.kb / h.nb;
        ((s.kb_sq / rate - s.kb).max(0.0) / f64::from(h.tb - 1)).min(params.max_dispersion)
    })
}

/// Every host's [`pearson`], read once for the dispersions of one signal.
fn pearsons(
    per_host: &[SigHost],
    hosts: &[HostView<'_>],
    params: &JudgeParams,
) -> Vec<Option<f64>> {
    per_host
        .iter()
        .zip(hosts)
        .map(|(s, h)| pearson(s, h, params))
        .collect()
}

/// The negative-binomial shape of a signal's count in one host-minute, from the baseline:
/// a host whose counts are `φ` times as variable as Poisson ones at a mean of `μ` a minute
/// has `k = μ / (φ − 1)`; the hosts' estimates are pooled weighted by their events (their
/// `μ` over their `φ − 1`, each weighted so). `None` with fewer than [`MIN_EVENTS`] in
/// the baseline, or counts not clearly more variable than Poisson: the weighted `φ − 1`
/// must pass twice its standard error for Poisson counts, `√(2 / df)`.
fn nb_shape(per_host: &[SigHost], hosts: &[HostView<'_>], pearsons: &[Option<f64>]) -> Option<f64> {
    let (mut mean, mut excess, mut events, mut df) = (0.0, 0.0, 0.0, 0.0);
    for ((s, h), phi) in per_host.iter().zip(hosts).zip(pearsons) {
        if let Some(phi) = *phi {
            mean += s.kb * s.kb / f64::from(h.tb);
            excess += s.kb * (phi - 1.0);
            events += s.kb;
            df += f64::from(h.tb - 1);
        }
    }
    let clear = events >= MIN_EVENTS && excess / events > 2.0 * (2.0 / df).sqrt();
    clear.then(|| mean / excess)
}

/// Rule 3 for one exception, or error lines. The sequential test blocks at once when its
/// evidence is past the bar and the rise above the (learned) threshold (error lines: its
/// evidence risen with each of its last minutes, [`ERROR_PERSIST_MINUTES`]); otherwise the
/// classic test judges, and a sequential finding is shown when it has none.
pub(crate) fn rate_rule(
    signal: RateSignal<'_>,
    (values, per_host): (&[f64], &[SigHost]),
    groups: Groups<'_, '_>,
    tests: usize,
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Option<Candidate> {
    let (hosts, grid) = (groups.hosts, groups.grid);
    let inputs = sequential::Inputs {
        values,
        work: &grid.lines,
        until: grid.t_len,
        w: grid.windows(groups.released, groups.reference),
    };
    // One reading of the baseline's dispersions for both tests.
    let pearsons = pearsons(per_host, hosts, params);
    let dispersion = dispersion(per_host, &pearsons, params);
    let group =
        |g: &[usize]| group_dispersion((per_host, &pearsons), hosts, g, dispersion.0, params);
    let reference_factor = group(groups.reference);
    let overdispersion = sequential::Overdispersion {
        factor: dispersion.0,
        shape: nb_shape(per_host, hosts, &pearsons),
        groups: Some((group(groups.released), reference_factor)),
    };
    // Each released host's own test (`sequential::with_each`), at its own dispersion
    // before the release (never below the pooled one): those with the most events past
    // their warm-up first, none with too few to show an excess on their own.
    let mut tested: Vec<usize> = groups
        .released
        .iter()
        .copied()
        .filter(|&h| per_host[h].ka >= params.rate_min_excess * 0.75)
        .collect();
    tested.sort_by(|&a, &b| per_host[b].ka.total_cmp(&per_host[a].ka));
    tested.truncate(sequential::MAX_EACH);
    let mut own = vec![None; hosts.len()];
    for h in tested {
        own[h] = Some(sequential::Overdispersion {
            groups: Some((dispersion.1[h], reference_factor)),
            ..overdispersion
        });
    }
    let sequential = sequential_signal(
        &inputs,
        signal,
        per_host,
        (overdispersion, &own),
        hosts,
        tests,
        params,
        memory,
    );
    if sequential.as_ref().is_some_and(|c| c.suspicious) {
        return sequential;
    }
    rate_signal(
        signal,
        (values, per_host),
        groups,
        &dispersion,
        params,
        memory,
    )
    .or(sequential)
}

/// Rule 3's classic test (see [`rate_test`]) of one exception or of error lines.
fn rate_signal(
    signal: RateSignal<'_>,
    (values, per_host): (&[f64], &[SigHost]),
    groups: Groups<'_, '_>,
    (phi, host_phi): &(f64, Vec<f64>),
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Option<Candidate> {
    let Groups {
        hosts,
        grid,
        released,
        reference,
    } = groups;
    let (phi, host_phi) = (*phi, host_phi.as_slice());
    let t_len = grid.t_len;
    // Reference per minute and before the release.
    let mut ref_k = vec![0.0; t_len];
    let mut ref_n = vec![0.0; t_len];
    let mut ref_seen = vec![false; t_len];
    let (mut kf_b, mut nf_b) = (0.0, 0.0);
    for &h in reference {
        for t in 0..t_len {
            let n = grid.lines[h * t_len + t];
            if n < 0.0 {
                continue;
            }
            let k = values[h * t_len + t];
            if t < grid.first {
                kf_b += k;
                nf_b += n;
            } else if t >= grid.first {
                ref_k[t] += k;
                ref_n[t] += n;
                ref_seen[t] = true;
            }
        }
    }
    // A released host's rate relative to the reference group before the release, shrunk
    // towards 1 by a couple of pseudo-events. Only a host that was *noisier* before lowers
    // the alarm; a quieter one is compared with the reference group as it is (an
    // uncertain small baseline must not make ordinary counts look like growth).
    let host_ratio = |h: usize| -> f64 {
        let (mut k, mut n) = (0.0, 0.0);
        for t in 0..grid.start[h].min(t_len) {
            let lines = grid.lines[h * t_len + t];
            if lines >= 0.0 {
                k += values[h * t_len + t];
                n += lines;
            }
        }
        if n <= 0.0 || nf_b <= 0.0 {
            return 1.0;
        }
        let total = n + nf_b;
        let kr = k + SHRINK_EVENTS * n / total;
        let kf = kf_b + SHRINK_EVENTS * nf_b / total;
        ((kr / n) / (kf / nf_b)).max(1.0)
    };
    let input_for = |group: &[usize]| -> RateInput {
        let mut x = RateInput {
            kf_b,
            nf_b,
            ..RateInput::default()
        };
        let mut rel_k = vec![0.0; t_len];
        let mut rel_n = vec![0.0; t_len];
        let mut rel_cn = vec![0.0; t_len];
        let mut rel_seen = vec![false; t_len];
        let mut before_k = vec![0.0; t_len];
        let mut before_n = vec![0.0; t_len];
        for &h in group {
            let c = host_ratio(h);
            for t in 0..t_len {
                let n = grid.lines[h * t_len + t];
                if n < 0.0 {
                    continue;
                }
                let k = values[h * t_len + t];
                if t < grid.start[h] {
                    x.kr_b += k;
                    x.nr_b += n;
                    before_k[t] += k;
                    before_n[t] += n;
                } else if t >= grid.settled[h] {
                    x.kr_a += k;
                    x.nr_a += n;
                    rel_k[t] += k;
                    rel_n[t] += n;
                    rel_cn[t] += c * n;
                    rel_seen[t] = true;
                }
            }
        }
        for t in 0..t_len {
            if rel_seen[t] && ref_seen[t] && ref_n[t] > 0.0 && rel_n[t] > 0.0 {
                x.matched.push((rel_k[t], rel_cn[t], ref_k[t], ref_n[t]));
            }
            if rel_seen[t] {
                x.after_minutes.push((rel_k[t], rel_n[t]));
            }
            if before_n[t] > 0.0 {
                x.before_minutes.push((before_k[t], before_n[t]));
            }
        }
        x
    };
    let passes = |r: &RateResult, alpha: f64, min_excess: f64| {
        r.p < alpha
            && r.p_guard < params.rate_guard_alpha
            && r.p_minutes < params.rate_minutes_alpha
            && r.ratio >= params.rate_min_ratio
            && r.observed - r.expected >= min_excess
    };
    let mut best: Option<(RateInput, RateResult, Vec<String>, f64)> = None;
    // Cheap pre-check: without enough events after the release nothing can pass.
    let settled_events: f64 = released.iter().map(|&h| per_host[h].ka).sum();
    if settled_events < params.rate_min_excess * 0.75 {
        return None;
    }
    let total = input_for(released);
    if let Some(r) = rate_test(&total, phi)
        && passes(&r, params.rate_alpha, params.rate_min_excess)
    {
        // Name the released hosts whose own rate is above the expected one.
        let hit: Vec<String> = released
            .iter()
            .filter(|&&h| {
                let x = input_for(&[h]);
                rate_test(&x, host_phi[h])
                    .is_some_and(|rh| rh.observed > rh.expected.max(1.0) * params.rate_min_ratio)
            })
            .map(|&h| hosts[h].name.to_string())
            .collect();
        best = Some((total, r, hit, phi));
    }
    if best.is_none() && released.len() > 1 {
        let alpha = params.rate_alpha / released.len() as f64;
        for &h in released {
            if per_host[h].ka < params.rate_min_excess * 0.75 {
                continue;
            }
            let x = input_for(&[h]);
            if let Some(r) = rate_test(&x, host_phi[h])
                && passes(&r, alpha, params.rate_min_excess * 0.75)
                && best.as_ref().is_none_or(|b| r.ratio > b.1.ratio)
            {
                best = Some((x, r, vec![hosts[h].name.to_string()], host_phi[h]));
            }
        }
    }
    let (x, r, hit, phi) = best?;
    let tally = |value: f64, lines: f64| Tally {
        value,
        lines: lines as u64,
        minutes: 0,
    };
    let has_ref = !x.matched.is_empty();
    let evidence = Evidence {
        released_before: Some(tally(x.kr_b, x.nr_b)),
        released_after: Some(Tally {
            minutes: if has_ref { x.matched.len() as u32 } else { 0 },
            ..tally(r.observed, x.nr_a)
        }),
        reference_before: has_ref.then(|| tally(x.kf_b, x.nf_b)),
        reference_after: has_ref.then(|| Tally {
            minutes: x.matched.len() as u32,
            ..tally(r.kf_a, r.nf_a)
        }),
        expected: Some(r.expected),
        observed: r.observed,
        effect: r.ratio,
        p_value: Some(r.p),
        dispersion: Some(phi),
        ..Evidence::default()
    };
    let per_10k = |k: f64, n: f64| if n > 0.0 { k * 1e4 / n } else { 0.0 };
    let comparison = if has_ref {
        format!(
            "{:.2} on reference hosts in the same minutes (before the release: released {:.2}, reference {:.2})",
            per_10k(r.kf_a, r.nf_a),
            per_10k(x.kr_b, x.nr_b),
            per_10k(x.kf_b, x.nf_b)
        )
    } else {
        format!("{:.2} before the release", per_10k(x.kr_b, x.nr_b))
    };
    let summary = format!(
        "{} ×{:.1} on released host(s) {}: {:.0} seen vs {:.1} expected; {:.2} per 10k {} vs {comparison} (p={:.1e}, dispersion {:.1})",
        signal.label,
        r.ratio,
        hit.join(", "),
        r.observed,
        r.expected,
        per_10k(x.kr_a, x.nr_a),
        signal.unit,
        r.p,
        phi
    );
    let reason = Reason {
        rule: signal.rule,
        summary,
        severity: Severity::Critical,
        hosts: hit,
        fingerprint: signal.fingerprint.map(fingerprint_hex),
        metric: signal
            .fingerprint
            .is_none()
            .then(|| "error_lines".to_string()),
        evidence,
    };
    Some(learned_candidate(
        &signal.kind(),
        signal.aliases(),
        reason,
        r.ratio,
        params.rate_min_ratio,
        memory,
        signal.fingerprint,
    ))
}

/// Rule 3, sequential (see [`sequential`]): blocks at once when the evidence that an
/// exception's rate (or error lines') per unit of work rose on the released hosts, against
/// the reference hosts in the same minutes, passes the bar its share of the release's
/// false-block budget sets, and the rise is at least the (learned) minimum ratio (error
/// lines: and the evidence rose with each of its last minutes).
#[allow(clippy::too_many_arguments)] // the round's views, passed as they are
fn sequential_signal(
    inputs: &sequential::Inputs<'_>,
    signal: RateSignal<'_>,
    per_host: &[SigHost],
    (overdispersion, own): (
        sequential::Overdispersion,
        &[Option<sequential::Overdispersion>],
    ),
    hosts: &[HostView<'_>],
    tests: usize,
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Option<Candidate> {
    let phi = overdispersion.factor;
    if inputs.w.reference.is_empty() {
        return None;
    }
    // The rule's share, split between the exceptions tested and error lines.
    let alpha = params.false_block_budget * RATE_SHARE / tests as f64;
    // The events compared are some of the settled ones: without enough of those there can
    // be no excess, so the test is not worth running.
    let settled: f64 = inputs.w.released.iter().map(|&h| per_host[h].ka).sum();
    if settled < params.rate_min_excess {
        return None;
    }
    let pooled = sequential::test(inputs, overdispersion, None)?;
    // A real excess first (the pooled counts tell it), then the evidence.
    if pooled.observed - pooled.expected < params.rate_min_excess {
        return None;
    }
    let own_of = |h: usize| own.get(h).copied().flatten();
    let (s, top) = sequential::with_each(inputs, pooled, own_of);
    let bar = (1.0 / alpha).ln();
    // The strongest released host speaks for itself where its own share of the evidence
    // (its e-value over twice the released hosts) passes the bar on its own: then its
    // effect and its own rate before the release are the rule's.
    let alone = top.filter(|(_, own)| {
        own.log_e - (2.0 * inputs.w.released.len() as f64).ln() >= bar
            && own.observed - own.expected >= params.rate_min_excess
    });
    // Evidence past the bar, and a rate the released hosts never kept for as long before
    // the release, or the host that passes alone never did (a host that had such bursts
    // before is judged by the classic test, whose per-minute guard knows them).
    let unlike_before = |inputs: &sequential::Inputs<'_>, s: &sequential::Sequential| {
        s.observed > sequential::baseline_peak(inputs, s.minutes as usize) * s.released_work
    };
    if s.log_e < bar
        || !(unlike_before(inputs, &s)
            || alone
                .as_ref()
                .is_some_and(|(h, own)| unlike_before(&inputs.with_released(&[*h]), own)))
    {
        return None;
    }
    // The same test without its last minutes that had events, one at a time (as the
    // rounds before saw it, from the minutes stored now), each below the next. Minutes
    // without any (as a minute whose reports have not arrived yet) change nothing and
    // are stepped over. (A host whose own test begins in the minutes added, once settled,
    // adds its evidence as a rise would.)
    let mut later = s;
    for _ in 0..signal.persistence() {
        let earlier = sequential::Inputs {
            until: later.last_events?,
            ..*inputs
        };
        match sequential::test(&earlier, overdispersion, None)
            .map(|p| sequential::with_each(&earlier, p, own_of).0)
        {
            Some(e) if e.log_e < later.log_e => later = e,
            _ => return None,
        }
    }
    // The rise: the released hosts' together, or that of the host that passes alone where
    // it is the larger (then the effect and its interval, at that host's dispersion, are
    // its own; the counts shown stay the released hosts').
    let own_shown = alone.filter(|(_, own)| own.ratio() > s.ratio());
    let (shown, shown_phi) = match own_shown {
        Some((h, own_test)) => (
            own_test,
            own_of(h).and_then(|d| d.groups).map_or(phi, |g| g.0),
        ),
        None => (s, phi),
    };
    let ratio = shown.ratio();
    // The released hosts whose own rate in those minutes is above the predicted one.
    let t_len = inputs.w.t_len;
    let reference_rate = (s.reference_events + 0.5) / s.reference_work;
    let hit: Vec<String> = inputs
        .w
        .released
        .iter()
        .filter(|&&h| {
            let (mut k, mut n) = (0.0, 0.0);
            for t in inputs.w.settled[h].max(inputs.w.first)..inputs.until.min(t_len) {
                let w = inputs.work[h * t_len + t];
                if w >= 0.0 {
                    k += inputs.values[h * t_len + t];
                    n += w;
                }
            }
            n > 0.0 && k > s.theta * reference_rate * n * params.rate_min_ratio
        })
        .map(|&h| hosts[h].name.to_string())
        .collect();
    // None above on its own (the rise is spread thin): every released host that has it.
    let hit = if hit.is_empty() {
        inputs
            .w
            .released
            .iter()
            .filter(|&&h| per_host[h].ka > 0.0)
            .map(|&h| hosts[h].name.to_string())
            .collect()
    } else {
        hit
    };
    let mut hit = hit;
    if let Some((h, _)) = alone
        && !hit.iter().any(|name| name == hosts[h].name)
    {
        hit.push(hosts[h].name.to_string());
    }
    let per_10k = |k: f64, n: f64| if n > 0.0 { k * 1e4 / n } else { 0.0 };
    let [xb, eb, yb, fb] = s.before;
    let tally = |value: f64, work: f64, minutes: u32| Tally {
        value,
        lines: work as u64,
        minutes,
    };
    let label = signal.label;
    let persisted = match signal.persistence() {
        0 => String::new(),
        n => format!(", risen with each of its last {n} minutes with events"),
    };
    let own_note = top.map_or(String::new(), |(h, own)| {
        format!(
            "; half of it from the released hosts together, half from each one's own test (strongest {}: e={:.3e}{})",
            hosts[h].name,
            own.log_e.min(700.0).exp(),
            if own_shown.is_some() {
                ", past the bar alone: the rise is its own"
            } else {
                ""
            }
        )
    });
    let summary = format!(
        "{label} ×{ratio:.1} on released host(s) {}: {:.0} seen vs {:.1} expected in {} minutes; {:.2} per 10k {} vs {:.2} on reference hosts in the same minutes (before the release: released {:.2}, reference {:.2}); sequential test e={:.3e} past 1/α={:.3e}{own_note}{persisted} (valid however often it is looked at, dispersion {phi:.1})",
        hit.join(", "),
        s.observed,
        s.expected,
        s.minutes,
        per_10k(s.observed, s.released_work),
        signal.unit,
        per_10k(s.reference_events, s.reference_work),
        per_10k(xb, eb),
        per_10k(yb, fb),
        s.log_e.min(700.0).exp(),
        1.0 / alpha,
    );
    let evidence = Evidence {
        released_before: Some(tally(xb, eb, 0)),
        released_after: Some(tally(s.observed, s.released_work, s.minutes)),
        reference_before: Some(tally(yb, fb, 0)),
        reference_after: Some(tally(s.reference_events, s.reference_work, s.minutes)),
        expected: Some(s.expected),
        observed: s.observed,
        effect: ratio,
        dispersion: Some(phi),
        ..Evidence::default()
    }
    .sequential(s.log_e, alpha)
    .with_interval(shown.ratio_interval(shown_phi));
    let reason = Reason {
        rule: signal.rule,
        summary,
        severity: Severity::Critical,
        hosts: hit,
        fingerprint: signal.fingerprint.map(fingerprint_hex),
        metric: signal
            .fingerprint
            .is_none()
            .then(|| "error_lines".to_string()),
        evidence,
    };
    let mut c = learned_candidate(
        &signal.kind(),
        signal.aliases(),
        reason,
        ratio,
        params.rate_min_ratio,
        memory,
        signal.fingerprint,
    );
    c.immediate = c.suspicious;
    Some(c)
}
