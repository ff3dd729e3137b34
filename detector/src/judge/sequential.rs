//! Rule 3, sequential: more of a known exception on the released hosts than on the
//! reference hosts in the same minutes, by a test that may be looked at every minute.
//!
//! Each minute after a released host's warm-up where both groups did work, the exception's
//! count on the released hosts `x` and on the reference hosts `y` are compared given their
//! sum: with no release effect, each of the `x + y` events is on a released host with
//! probability `p₀ = θE / (θE + F)`, where `E` and `F` are the groups' work in that minute
//! (log events, or lines where an agent does not count events) and `θ` the released hosts'
//! rate per unit of work relative to the reference hosts before the release. So a burst of
//! traces does not dilute its own rate, traffic moving between the groups moves `p₀` with
//! it, and a surge on every host at once leaves `p₀` where it was.
//!
//! The evidence is the likelihood ratio of "the released hosts' rate is `φ` times higher"
//! against "no effect", mixed over `φ ∈` [`RATIOS`]: a product over minutes that, with no
//! effect, is a non-negative martingale of mean 1. By Ville's inequality the chance that it
//! *ever* reaches `1/α` is at most `α`, however many rounds look at it (Lindon et al.,
//! "Rapid Regression Detection in Software Deployments through Sequential Testing", KDD
//! 2022, test count data this way). A strong effect crosses the bar within a minute or two
//! of data; there is no "2 of 3 rounds" to wait for.
//!
//! `θ` is not known: it is estimated from the before window, and the test uses the upper
//! end of its one-sided Clopper–Pearson interval at level `δ` (a higher `θ` expects more on
//! the released hosts, so the test only gets more careful). Each released host's work is
//! weighed by its own ratio before the release where that is higher (a host noisier
//! before stays expected so), never below the group's bound. For one set of released
//! hosts and Poisson counts, the false-alarm chance of one exception is then at most
//! `α + δ`. What makes that approximate, and how: counts are divided by the exception's
//! dispersion (its variance over its mean in the baseline minutes, at least 1; bursts of
//! one failure logged several times are evidence once, not several times), which makes the
//! ratio a quasi-likelihood; and each round recomputes the product from the stored minutes
//! (a later batch moves hosts from the reference group to the released one, late rows
//! change past minutes, the number of exceptions tested changes), so with several batches
//! the guarantee holds per batch rather than for the whole release.
//!
//! The test assumes counts that, given their rates, are independent from minute to minute;
//! a host whose exception comes in bursts lasting many minutes breaks that. So the rule
//! also asks that the released hosts never kept the rate seen for as long in their
//! baseline ([`baseline_peak`]) — a guard against their own excursions, not a
//! calibrated test.
//!
//! The release's false-block budget is split: this rule spends [`RATE_SHARE`] of it,
//! divided equally between `α` and `δ` and between the exceptions tested in the round (a
//! Bonferroni split, valid whatever their dependence).

use super::stats::{binomial_upper_bound, clopper_pearson};

/// Rate ratios mixed (equal weights): from a modest rise to a flood.
pub(crate) const RATIOS: [f64; 8] = [1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 40.0];

/// Share of the release's false-block budget spent by this rule.
pub(crate) const RATE_SHARE: f64 = 0.5;

/// The counts of one exception (or error lines) per host and minute, with the work behind
/// them, as the round's grid holds them (`host * t_len + t`; work `< 0` where a host did
/// not report).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'a> {
    pub values: &'a [f64],
    pub work: &'a [f64],
    /// Minutes per host in the grid (its stride).
    pub t_len: usize,
    /// Minutes judged: indices below this (at most `t_len`).
    pub until: usize,
    /// Per host: the first minute index of its after window (its release, or the first
    /// batch for a reference host).
    pub start: &'a [usize],
    /// Per host: the first minute index past its warm-up.
    pub settled: &'a [usize],
    /// Minute index of the first batch.
    pub first: usize,
    pub released: &'a [usize],
    pub reference: &'a [usize],
}

/// The test's state after the minutes judged so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sequential {
    /// ln of the mixture e-value.
    pub log_e: f64,
    /// Events on the released hosts in the compared minutes, and as many as the reference
    /// hosts' rate in those minutes predicts for their work (at `θ`'s upper bound).
    pub observed: f64,
    pub expected: f64,
    /// Compared minutes.
    pub minutes: u32,
    /// Upper bound of the released hosts' relative rate before the release.
    pub theta: f64,
    /// Work (events or lines) of the released hosts in the compared minutes, and the
    /// reference hosts' events and work there.
    pub released_work: f64,
    /// That work weighted by each released host's ratio before the release (at `θ`'s
    /// upper bound as a whole): what it should log at the reference hosts' rate.
    pub expected_work: f64,
    pub reference_events: f64,
    pub reference_work: f64,
    /// Before the release: released events and work, reference events and work.
    pub before: [f64; 4],
}

impl Sequential {
    /// `observed / expected`.
    pub fn ratio(&self) -> f64 {
        if self.expected > 0.0 {
            self.observed / self.expected
        } else {
            f64::INFINITY
        }
    }

    /// The 95 % interval of [`Sequential::ratio`], counts divided by `dispersion` (see
    /// [`ratio_interval`]).
    pub fn ratio_interval(&self, dispersion: f64) -> [f64; 2] {
        ratio_interval(
            self.observed,
            self.reference_events,
            self.reference_work / self.expected_work.max(f64::MIN_POSITIVE),
            dispersion,
        )
    }
}

/// The 95 % interval of a rate ratio `(x / y) · scale` — `x` events for one group's work
/// against `y` for another's, `scale` the second's work over the first's — from the
/// Clopper–Pearson interval of the first group's share of the `x + y` events (given their
/// sum, that share is binomial), counts divided by `dispersion` (≥ 1). It describes the
/// minutes compared as one sample: it is not, like the sequential test, valid however
/// often it is looked at. The upper end is infinite when `y` is 0, the lower 0 when `x` is.
pub(crate) fn ratio_interval(x: f64, y: f64, scale: f64, dispersion: f64) -> [f64; 2] {
    let d = dispersion.max(1.0);
    let (k, n) = (x / d, (x + y) / d);
    if n <= 0.0 {
        return [0.0, f64::INFINITY];
    }
    let (lo, hi) = clopper_pearson(k, n, 0.025);
    let as_ratio = |p: f64| {
        if p >= 1.0 {
            f64::INFINITY
        } else {
            (p / (1.0 - p)) * scale
        }
    };
    [as_ratio(lo.max(0.0)), as_ratio(hi)]
}

/// ln of the equal-weight mixture of the likelihood ratios whose logs are `log_lr`.
pub(crate) fn mix(log_lr: &[f64]) -> f64 {
    let top = log_lr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return top;
    }
    let sum: f64 = log_lr.iter().map(|l| (l - top).exp()).sum();
    top + (sum / log_lr.len() as f64).ln()
}

/// ln of the e-value of `x` hits in `n` trials against a hit rate of at most `p0`, the
/// binomial likelihood ratio mixed with equal weights over `rates` (a rate not above `p0`
/// counts as 0, which only lowers the mixture). `None` when no rate is above `p0`.
pub(crate) fn hit_mixture(x: f64, n: f64, p0: f64, rates: &[f64]) -> Option<f64> {
    let log_lr: Vec<f64> = rates
        .iter()
        .filter(|&&p1| p1 > p0)
        .map(|&p1| x * (p1 / p0).ln() + (n - x) * ((1.0 - p1) / (1.0 - p0)).ln())
        .collect();
    if log_lr.is_empty() {
        return None;
    }
    Some(mix(&log_lr) + (log_lr.len() as f64 / rates.len() as f64).ln())
}

/// The test over `inputs`, counts divided by `dispersion` (≥ 1), `θ` bounded at level
/// `delta`. With no event before the release on any host, `θ` is `unseen` when given (the
/// groups were alike: neither had any); without it, `None` (then the exception is new, or
/// known only from history: rule 2 and the classic rule 3 judge it). `None` too when no
/// minute had both groups working.
pub(crate) fn test(
    inputs: &Inputs<'_>,
    dispersion: f64,
    delta: f64,
    unseen: Option<f64>,
) -> Option<Sequential> {
    let Inputs {
        values,
        work,
        t_len,
        until,
        start,
        settled,
        first,
        released,
        reference,
    } = *inputs;
    let until = until.min(t_len);
    let cell = |h: usize, t: usize| h * t_len + t;
    let d = dispersion.max(1.0);
    let (mut xb, mut eb, mut yb, mut fb) = (0.0, 0.0, 0.0, 0.0);
    // Per released host: its baseline events and work.
    let mut own = vec![(0.0, 0.0); released.len()];
    for (i, &h) in released.iter().enumerate() {
        for t in 0..start[h].min(t_len) {
            if work[cell(h, t)] >= 0.0 {
                own[i].0 += values[cell(h, t)];
                own[i].1 += work[cell(h, t)];
            }
        }
        xb += own[i].0;
        eb += own[i].1;
    }
    for &h in reference {
        for t in 0..first.min(t_len) {
            if work[cell(h, t)] >= 0.0 {
                yb += values[cell(h, t)];
                fb += work[cell(h, t)];
            }
        }
    }
    if eb <= 0.0 || fb <= 0.0 {
        return None;
    }
    let theta = if xb + yb >= 1.0 {
        // The released share of the baseline's events, bounded above, as a rate ratio.
        let q = binomial_upper_bound(xb / d, (xb + yb) / d, delta).min(1.0 - 1e-9);
        (q / (1.0 - q)) * (fb / eb)
    } else {
        unseen?
    };
    // Each released host weighs its work by its own ratio before the release (shrunk
    // towards the group's by two pseudo-events), so that a host that was noisier before
    // is expected to stay so whichever hosts have been released by a minute; the weights
    // are scaled so that the baseline's work weighs `θ` as a whole.
    let mut weight = vec![theta; start.len()];
    if xb + yb >= 1.0 {
        let reference_rate = yb / fb;
        let group = xb / (reference_rate * eb).max(1e-12);
        let mut weighted = 0.0;
        for (i, &h) in released.iter().enumerate() {
            let (k, n) = own[i];
            let w = (k + 2.0 * group.max(1e-9)) / (reference_rate * n + 2.0).max(1e-12);
            weight[h] = w;
            weighted += w * n;
        }
        // `weighted` > 0: every weight is, and the released hosts did work before (`eb`).
        let scale = theta * eb / weighted;
        for &h in released {
            // Never below the group's bound: a host that only looked quiet by chance must
            // not make ordinary counts look like a rise once it is released alone.
            weight[h] = (weight[h] * scale).max(theta);
        }
    }

    let mut log_lr = [0.0; RATIOS.len()];
    let mut seq = Sequential {
        log_e: 0.0,
        observed: 0.0,
        expected: 0.0,
        minutes: 0,
        theta,
        released_work: 0.0,
        expected_work: 0.0,
        reference_events: 0.0,
        reference_work: 0.0,
        before: [xb, eb, yb, fb],
    };
    for t in first..until {
        // `e` is the released work as it is, `we` weighted by each host's own ratio.
        let (mut x, mut e, mut we, mut y, mut f) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &h in released {
            if t >= settled[h] && work[cell(h, t)] >= 0.0 {
                x += values[cell(h, t)];
                e += work[cell(h, t)];
                we += weight[h] * work[cell(h, t)];
            }
        }
        for &h in reference {
            if work[cell(h, t)] >= 0.0 {
                y += values[cell(h, t)];
                f += work[cell(h, t)];
            }
        }
        if e <= 0.0 || f <= 0.0 {
            continue;
        }
        seq.minutes += 1;
        seq.observed += x;
        seq.released_work += e;
        seq.expected_work += we;
        seq.reference_events += y;
        seq.reference_work += f;
        let (x, n) = (x / d, (x + y) / d);
        for (l, phi) in log_lr.iter_mut().zip(RATIOS) {
            *l += x * phi.ln() - n * ((phi * we + f) / (we + f)).ln();
        }
    }
    if seq.minutes == 0 {
        return None;
    }
    // What the reference hosts' rate in the same minutes predicts for the released hosts'
    // work (half an event added, so that a quiet reference group does not predict 0).
    seq.expected = seq.expected_work * (seq.reference_events + 0.5) / seq.reference_work;
    let top = log_lr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = log_lr.iter().map(|l| (l - top).exp()).sum();
    seq.log_e = top + (sum / RATIOS.len() as f64).ln();
    Some(seq)
}

/// The released hosts' highest rate (events per unit of work, all released hosts summed)
/// over any run of `len` consecutive baseline minutes in which they did work (their own
/// excursions before the release; 0 when the baseline is shorter).
pub(crate) fn baseline_peak(inputs: &Inputs<'_>, len: usize) -> f64 {
    let t_len = inputs.t_len;
    let end = inputs
        .released
        .iter()
        .map(|&h| inputs.start[h])
        .min()
        .unwrap_or(0)
        .min(t_len);
    let mut per_minute = Vec::with_capacity(end);
    for t in 0..end {
        let (mut k, mut n) = (0.0, 0.0);
        for &h in inputs.released {
            let w = inputs.work[h * t_len + t];
            if w >= 0.0 {
                k += inputs.values[h * t_len + t];
                n += w;
            }
        }
        if n > 0.0 {
            per_minute.push((k, n));
        }
    }
    if len == 0 || per_minute.len() < len {
        return 0.0;
    }
    let (mut k, mut n) = (0.0, 0.0);
    let mut peak: f64 = 0.0;
    for (i, &(ki, ni)) in per_minute.iter().enumerate() {
        k += ki;
        n += ni;
        if i >= len {
            k -= per_minute[i - len].0;
            n -= per_minute[i - len].1;
        }
        if i + 1 >= len && n > 0.0 {
            peak = peak.max(k / n);
        }
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grid of `hosts` hosts over `t_len` minutes; hosts `0..released` are released at
    /// minute `first` (warm-up `warm`), the others are the reference.
    struct Fleet {
        values: Vec<f64>,
        work: Vec<f64>,
        t_len: usize,
        start: Vec<usize>,
        settled: Vec<usize>,
        first: usize,
        released: Vec<usize>,
        reference: Vec<usize>,
    }

    impl Fleet {
        fn new(hosts: usize, released: usize, t_len: usize, first: usize, warm: usize) -> Self {
            Self {
                values: vec![0.0; hosts * t_len],
                work: vec![1000.0; hosts * t_len],
                t_len,
                start: (0..hosts).map(|_| first).collect(),
                settled: (0..hosts)
                    .map(|h| if h < released { first + warm } else { first })
                    .collect(),
                first,
                released: (0..released).collect(),
                reference: (released..hosts).collect(),
            }
        }

        fn inputs(&self) -> Inputs<'_> {
            Inputs {
                values: &self.values,
                work: &self.work,
                t_len: self.t_len,
                until: self.t_len,
                start: &self.start,
                settled: &self.settled,
                first: self.first,
                released: &self.released,
                reference: &self.reference,
            }
        }
    }

    /// A Poisson draw of mean `mean` (Knuth's method; means here are small).
    fn poisson(rng: &mut fastrand::Rng, mean: f64) -> f64 {
        let limit = (-mean).exp();
        let (mut k, mut p) = (0.0, 1.0);
        loop {
            p *= rng.f64();
            if p <= limit {
                return k;
            }
            k += 1.0;
        }
    }

    #[test]
    fn the_upper_bound_covers_the_proportion() {
        let q = binomial_upper_bound(5.0, 10.0, 0.01);
        assert!(q > 0.5 && q < 0.95, "{q}");
        assert_eq!(binomial_upper_bound(10.0, 10.0, 0.01), 1.0);
        // 0 of 100: the bound is about ln(1/δ)/n.
        let q = binomial_upper_bound(0.0, 100.0, 0.01);
        assert!((q - 0.045).abs() < 0.005, "{q}");
    }

    /// 2 a minute per host for an hour, then ×15 on the released hosts for the minutes
    /// after `first` up to `t_len`.
    fn spike(t_len: usize) -> Fleet {
        let mut fleet = Fleet::new(4, 2, t_len, 60, 0);
        for h in 0..4 {
            for t in 0..t_len {
                fleet.values[h * t_len + t] = if h < 2 && t >= 60 { 30.0 } else { 2.0 };
            }
        }
        fleet
    }

    #[test]
    fn a_fifteen_fold_spike_on_two_of_four_hosts_crosses_the_bar_in_its_first_minute() {
        let one = test(&spike(61).inputs(), 1.0, 1e-4, None).expect("a test");
        // 20 exceptions tested, a 1 % budget: the bar is ln(20 · 4 / 0.01).
        let bar = (20.0 * 4.0 / 0.01_f64).ln();
        assert!(one.log_e > bar, "{one:?} bar {bar}");
        assert!(one.ratio() > 8.0, "{one:?}");
        assert_eq!(one.minutes, 1);
        let two = test(&spike(62).inputs(), 1.0, 1e-4, None).expect("a test");
        assert!(two.log_e > one.log_e);
        // Each failure logged in bursts of 5: a fifth of the evidence a minute, and a
        // baseline worth a fifth as much (a higher bound on θ): past the bar after five.
        let bursty = test(&spike(61).inputs(), 5.0, 1e-4, None).expect("a test");
        assert!(bursty.log_e < bar, "{bursty:?}");
        let bursty = test(&spike(65).inputs(), 5.0, 1e-4, None).expect("a test");
        assert!(bursty.log_e > bar, "{bursty:?}");
    }

    #[test]
    fn a_shift_of_traffic_to_the_released_hosts_is_not_evidence() {
        // The released hosts get 60 % more work after the release and log the exception
        // in proportion: the same rate per event.
        let mut fleet = Fleet::new(4, 2, 90, 60, 0);
        let mut rng = fastrand::Rng::with_seed(7);
        for h in 0..4 {
            for t in 0..90 {
                let work = if h < 2 && t >= 60 { 1600.0 } else { 1000.0 };
                fleet.work[h * 90 + t] = work;
                fleet.values[h * 90 + t] = poisson(&mut rng, 3.0 * work / 1000.0);
            }
        }
        let s = test(&fleet.inputs(), 1.0, 1e-4, None).expect("a test");
        assert!(s.log_e < 2.0, "{s:?}");
        assert!(s.ratio() < 1.2, "{s:?}");
    }

    #[test]
    fn with_no_effect_the_bar_is_crossed_less_often_than_alpha_however_often_one_looks() {
        // 600 A/A releases of 4 hosts, Poisson counts at 0.5 to 5 a minute, looked at
        // every minute for 60 minutes: the share ever crossing 1/α stays below α.
        let alpha = 0.05;
        let mut rng = fastrand::Rng::with_seed(20_261_130);
        let mut crossed = 0;
        let runs = 600;
        for _ in 0..runs {
            let rate = 0.5 + 4.5 * rng.f64();
            let (t_len, first) = (120, 60);
            let mut fleet = Fleet::new(4, 2, t_len, first, 0);
            for h in 0..4 {
                for t in 0..t_len {
                    fleet.values[h * t_len + t] = poisson(&mut rng, rate);
                }
            }
            let mut ever = false;
            for until in first + 1..=t_len {
                let inputs = Inputs {
                    until,
                    ..fleet.inputs()
                };
                if let Some(s) = test(&inputs, 1.0, alpha / 2.0, None)
                    && s.log_e >= (2.0 / alpha).ln()
                {
                    ever = true;
                    break;
                }
            }
            crossed += usize::from(ever);
        }
        let share = crossed as f64 / f64::from(runs);
        assert!(share <= alpha, "{crossed} of {runs} A/A releases crossed");
    }
}
