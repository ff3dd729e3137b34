//! Rule 3, sequential: more of a known exception (or of error lines) on the released hosts
//! than on the reference hosts in the same minutes, by a test that may be looked at every
//! minute.
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
//! `θ` is not known. The test does not bound it (spending budget on the bound); it
//! allows for it by universal inference ([`universal`]): the likelihood of the baseline
//! and the compared minutes under the alternative over the null's *largest* likelihood,
//! whatever `θ`. A baseline of a dozen events leaves `θ` loose, and the test asks for more
//! minutes; one of many pins it down, at a cost of about `½·ln n` nats of evidence for `n`
//! events (the prior's regret: 4 for a thousand, against a bar of 8 for twenty exceptions). Each
//! released host's work is weighed by its own ratio before the release where that is
//! higher (a host noisier before stays expected so). For one set of released hosts and
//! Poisson counts, the false-alarm chance of one exception is then at most `α`. What makes
//! that approximate, and how: counts are divided by the exception's dispersion (its
//! variance over its mean in the baseline minutes, at least 1, each group's own weighted
//! by the other's share; bursts of one failure logged several times are evidence once,
//! not several times), and by more in a minute of
//! many events where the exception's rate wanders from minute to minute ([`Overdispersion`]:
//! a fleet-wide surge is no evidence), which makes the ratio a quasi-likelihood; and each
//! round recomputes the test from the stored minutes (a later batch moves hosts from the
//! reference group to the released one, late rows change past minutes, the number of
//! exceptions tested changes), so with several batches the guarantee holds per batch
//! rather than for the whole release.
//!
//! A rise on one released host of several (a partial fault, one batch's) is diluted by
//! the others' minutes in that test; so the rule takes half of its evidence from it and
//! half from the mean of the same test on each released host alone against the reference
//! hosts, at that host's own dispersion ([`with_each`]). Their bounding martingales are
//! built on the same minutes, so their mean is one, and so is an equal mixture of it with
//! the pooled one: the bound holds as it did.
//!
//! The test assumes counts that, given their rates, are independent from minute to minute;
//! a host whose exception comes in bursts lasting many minutes breaks that. So the rule
//! also asks that the released hosts never kept the rate seen for as long in their
//! baseline ([`baseline_peak`]), or that the one with the strongest own test never did
//! alone — a guard against their own excursions, not a calibrated test.
//!
//! The release's false-block budget is split: this rule spends [`RATE_SHARE`] of it,
//! divided equally between the exceptions tested in the round and error lines (a
//! Bonferroni split, valid whatever their dependence).

use super::grid::Windows;
use super::stats::{binomial_upper_bound, bisect, clopper_pearson, ln_beta};

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
    /// Minutes judged: indices below this (at most the windows' `t_len`, the grid's
    /// stride).
    pub until: usize,
    /// Where each host's after window and settled minutes start, and which hosts are
    /// released and which the reference.
    pub w: Windows<'a>,
}

impl<'a> Inputs<'a> {
    /// The same counts with `released` the released hosts (one of them, for its own test).
    pub(crate) fn with_released<'b>(&self, released: &'b [usize]) -> Inputs<'b>
    where
        'a: 'b,
    {
        Inputs {
            w: Windows { released, ..self.w },
            ..*self
        }
    }
}

/// The test's state after the minutes judged so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sequential {
    /// ln of the mixture e-value.
    pub log_e: f64,
    /// Events on the released hosts in the compared minutes, and as many as the reference
    /// hosts' rate in those minutes predicts for their work (at the baseline's `θ`).
    pub observed: f64,
    pub expected: f64,
    /// Compared minutes.
    pub minutes: u32,
    /// The last compared minute (grid index) with an event on any host: the test over the
    /// minutes before it is the one the evidence had before its last change.
    pub last_events: Option<usize>,
    /// The released hosts' rate relative to the reference hosts' before the release, as
    /// the baseline estimates it (a Jeffreys prior on their share of its events); `unseen`
    /// where it had none.
    pub theta: f64,
    /// Work (events or lines) of the released hosts in the compared minutes, and the
    /// reference hosts' events and work there.
    pub released_work: f64,
    /// That work weighted by each released host's ratio before the release (at `θ` as a
    /// whole): what it should log at the reference hosts' rate.
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

/// Hit rates mixed by the tests of host-minutes that hit (host metrics, collapses): from
/// a regression on some released hosts, or on and off, to one on all of them.
pub(crate) const HIT_RATES: [f64; 4] = [0.25, 0.5, 0.8, 0.95];

/// The upper bound at level `alpha` of how often host-minutes hit where nothing was
/// released, from `hits` of `minutes` that came in runs whose variance inflation is `run`
/// (counts divided by it); one in five when fewer than ten minutes remain to tell.
pub(crate) fn hit_rate_bound(hits: f64, minutes: f64, run: f64, alpha: f64) -> f64 {
    let run = run.max(1.0);
    if minutes / run >= 10.0 {
        binomial_upper_bound(hits / run, minutes / run, alpha)
    } else {
        0.2
    }
    .clamp(0.01, 0.99)
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

/// ln of the e-value of host-minutes that hit, half of it from all the hosts' `x` hits of
/// `n` minutes together against a hit rate of at most `p0`, half from the mean of each
/// host's own `(x, n, rate before)` against `p0` or its own rate before where that is
/// higher (a host that hit more often stays expected to; its rate is a point estimate,
/// so that half is approximate where a host's baseline is short); counts divided by
/// `run`, the runs' inflation. A host whose minutes are still to come, `(0, 0, _)`, is no
/// evidence yet. The martingales averaged are built on the same minutes, so their mean is
/// one, as is an equal mixture of it with the pooled one.
pub(crate) fn hits_pooled_and_each(
    (x, n): (f64, f64),
    each: &[(f64, f64, f64)],
    p0: f64,
    run: f64,
) -> f64 {
    let e = |x: f64, n: f64, p: f64| {
        hit_mixture(x / run, n / run, p, &HIT_RATES).unwrap_or(f64::NEG_INFINITY)
    };
    let own: Vec<f64> = each
        .iter()
        .map(|&(x, n, rate)| e(x, n, p0.max(rate).min(0.99)))
        .collect();
    mix(&[e(x, n, p0), mix(&own)])
}

/// How much more variable than Poisson counts are (see [`test`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Overdispersion {
    /// Variance over mean of a host's count in the baseline minutes (≥ 1).
    pub factor: f64,
    /// Negative-binomial shape of one host-minute's count, `mean² / (variance − mean)`
    /// in the baseline; `None` where counts were no more variable than Poisson.
    pub shape: Option<f64>,
    /// The released hosts' and the reference hosts' own factors (each the pooled
    /// `factor` where its group's baseline does not tell it); `None`: `factor` for both.
    pub groups: Option<(f64, f64)>,
}

impl Overdispersion {
    /// The factor of a binomial count whose released share is `p`: by the delta method,
    /// for two independent overdispersed counts, the share's variance over the binomial
    /// one is `(1 − p)·φ_R + p·φ_F`, so a canary's share is as variable as the canary's
    /// own counts, not as the big reference hosts' are.
    fn of_share(&self, p: f64) -> f64 {
        let p = if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            0.5
        };
        self.groups
            .map_or(self.factor, |(r, f)| (1.0 - p) * r + p * f)
            .max(1.0)
    }

    /// Counts divided by `factor`, nothing more.
    pub fn constant(factor: f64) -> Self {
        Self {
            factor,
            shape: None,
            groups: None,
        }
    }
}

/// The test over `inputs`. With no event before the release on any host, `θ` is `unseen`
/// when given (the groups were alike: neither had any); without it, `None` (then the
/// exception is new, or known only from history: rule 2 and the classic rule 3 judge it).
/// `None` too when no minute had both groups working.
///
/// Counts are divided by the dispersion. That of a share of events is each group's own
/// factor weighted by the other group's share (where the groups' are known; else the
/// pooled `factor`): a canary's share of the events varies as the canary's counts do, not
/// as the big reference hosts' do. A compared minute's (at the baseline's ratio) is at
/// least that, and more where its events are many: with a
/// negative-binomial count of shape `k` on each of its `h` hosts, the released hosts'
/// share of the minute's `n` events is, given `n`, beta-binomial: `(hk + n) / (hk + 1)`
/// times as variable as a binomial one. So a fleet-wide surge, whose counts in a minute
/// are many times the baseline's, weighs each of its events less, as it should: the more
/// an exception's rate wanders, the less one busy minute says. A rise on the released
/// hosts alone is weighed so too, which costs a strong rise of a wandering exception a
/// minute or so.
pub(crate) fn test(
    inputs: &Inputs<'_>,
    dispersion: Overdispersion,
    unseen: Option<f64>,
) -> Option<Sequential> {
    let Inputs {
        values,
        work,
        until,
        w:
            Windows {
                t_len,
                start,
                settled,
                first,
                released,
                reference,
            },
    } = *inputs;
    let until = until.min(t_len);
    let cell = |h: usize, t: usize| h * t_len + t;
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
    // With events before the release, `θ` is a nuisance the test allows for (universal
    // inference, below); without any, it is `unseen` (fixed) or there is no test.
    let fixed = if xb + yb >= 1.0 {
        None
    } else {
        Some(unseen?.max(f64::MIN_POSITIVE))
    };
    // Each released host weighs its work by its own ratio before the release relative to
    // the group's (shrunk towards 1 by two pseudo-events), so that a host that was noisier
    // before is expected to stay so whichever hosts have been released by a minute; never
    // below 1 (a host that only looked quiet by chance must not make ordinary counts look
    // like a rise once it is released alone). The weights are scaled so that the
    // baseline's work weighs as it is.
    let mut weight = vec![1.0; start.len()];
    if fixed.is_none() {
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
        let scale = eb / weighted;
        for &h in released {
            weight[h] = (weight[h] * scale).max(1.0);
        }
    }

    // The baseline's ratio, half an event added to each side (for the dispersion's
    // weights only), or the one assumed.
    let theta_b = fixed.unwrap_or((xb + 0.5) / (yb + 0.5) * fb / eb);
    // The compared minutes: events on the released hosts and in all (counts divided by
    // the dispersion), the released hosts' weighted work, the reference hosts' work.
    let mut compared: Vec<Binomial> = Vec::new();
    let mut seq = Sequential {
        log_e: 0.0,
        observed: 0.0,
        expected: 0.0,
        minutes: 0,
        last_events: None,
        theta: 1.0,
        released_work: 0.0,
        expected_work: 0.0,
        reference_events: 0.0,
        reference_work: 0.0,
        before: [xb, eb, yb, fb],
    };
    let shape = dispersion.shape.filter(|k| k.is_finite() && *k > 0.0);
    for t in first..until {
        // `e` is the released work as it is, `we` weighted by each host's own ratio.
        let (mut x, mut e, mut we, mut y, mut f) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut counted = 0.0;
        for &h in released {
            if t >= settled[h] && work[cell(h, t)] >= 0.0 {
                x += values[cell(h, t)];
                e += work[cell(h, t)];
                we += weight[h] * work[cell(h, t)];
                counted += 1.0;
            }
        }
        for &h in reference {
            if work[cell(h, t)] >= 0.0 {
                y += values[cell(h, t)];
                f += work[cell(h, t)];
                counted += 1.0;
            }
        }
        if e <= 0.0 || f <= 0.0 {
            continue;
        }
        seq.minutes += 1;
        if x + y > 0.0 {
            seq.last_events = Some(t);
        }
        seq.observed += x;
        seq.released_work += e;
        seq.expected_work += we;
        seq.reference_events += y;
        seq.reference_work += f;
        // The released share with no release effect, at the baseline's ratio.
        let share = theta_b * we / (theta_b * we + f);
        let d = dispersion.of_share(share);
        let d = shape.map_or(d, |k| {
            let shape = k * counted;
            d.max((shape + x + y) / (shape + 1.0))
        });
        compared.push(Binomial {
            k: x / d,
            n: (x + y) / d,
            a: we,
            b: f,
        });
    }
    if seq.minutes == 0 {
        return None;
    }
    let (theta, log_e) = match fixed {
        Some(theta) => {
            // `θ` known: the likelihood ratio of `θφ` against `θ`, mixed over `φ`.
            let s0 = theta.ln();
            let null = log_lik(&compared, s0);
            let log_lr: Vec<f64> = RATIOS
                .iter()
                .map(|phi| log_lik(&compared, s0 + phi.ln()) - null)
                .collect();
            (theta, mix(&log_lr))
        }
        None => {
            let d = dispersion.of_share(xb / (xb + yb));
            let before = Binomial {
                k: xb / d,
                n: (xb + yb) / d,
                a: eb,
                b: fb,
            };
            universal(&before, &compared)
        }
    };
    seq.theta = theta;
    seq.expected_work *= theta;
    // What the reference hosts' rate in the same minutes predicts for the released hosts'
    // work (half an event added, so that a quiet reference group does not predict 0).
    seq.expected = seq.expected_work * (seq.reference_events + 0.5) / seq.reference_work;
    seq.log_e = log_e;
    Some(seq)
}

/// `k` of `n` events on the released hosts, whose share is `θa / (θa + b)`: their work `a`
/// (weighted) against the reference hosts' `b`.
#[derive(Debug, Clone, Copy)]
struct Binomial {
    k: f64,
    n: f64,
    a: f64,
    b: f64,
}

impl Binomial {
    /// The log-likelihood at `θ = e^s`, binomial coefficient left out.
    fn log_lik(&self, s: f64) -> f64 {
        let odds = s + self.a.ln() - self.b.ln();
        // ln p = −ln(1 + e^−odds), ln(1 − p) = −ln(1 + e^odds).
        -self.k * softplus(-odds) - (self.n - self.k) * softplus(odds)
    }

    /// Its derivative in `s`: `k − n·p`.
    fn score(&self, s: f64) -> f64 {
        let odds = s + self.a.ln() - self.b.ln();
        self.k - self.n / (1.0 + (-odds).exp())
    }
}

/// The log-likelihood of all of `minutes` at `θ = e^s`.
fn log_lik(minutes: &[Binomial], s: f64) -> f64 {
    minutes.iter().map(|c| c.log_lik(s)).sum()
}

/// `ln(1 + e^x)`, without overflow.
fn softplus(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

/// `θ` unknown: the released hosts' rate relative to the reference hosts' before the
/// release, `before`, and, with no release effect, in every compared minute. The e-value
/// is universal inference's (Wasserman, Ramdas and Balakrishnan, "Universal inference",
/// PNAS 2020): a likelihood of all the data under the alternative — the baseline's under
/// a Jeffreys prior on the released share, each compared minute's at `θ̃φ` mixed over `φ`,
/// `θ̃` the baseline's estimate — over the null's *largest* likelihood, whatever `θ`. For
/// each `θ` the first over the null's likelihood at that `θ` is a martingale of mean 1, and
/// the e-value is below it; so by Ville's inequality the chance that it *ever* reaches
/// `1/α` is at most `α` (counts divided by a dispersion make each factor's mean at most 1:
/// a supermartingale), with no bound on `θ` to spend budget on. A baseline of few events
/// leaves `θ` loose, and the null fits the compared minutes by raising it: the test asks
/// for more evidence exactly when the baseline says little. Returns `(θ̃, ln e)`.
fn universal(before: &Binomial, compared: &[Binomial]) -> (f64, f64) {
    // The baseline under a Beta(½, ½) prior on the released share: B(k + ½, n − k + ½) / π.
    let (k, n) = (before.k, before.n);
    let log_marginal = ln_beta(k + 0.5, n - k + 0.5) - ln_beta(0.5, 0.5);
    let theta = ((k + 0.5) / (n - k + 0.5)) * (before.b / before.a);
    let s0 = theta.ln();
    let log_lr: Vec<f64> = RATIOS
        .iter()
        .map(|phi| log_lik(compared, s0 + phi.ln()))
        .collect();
    let alternative = log_marginal + mix(&log_lr);
    // The null's largest likelihood: its log is concave in s = ln θ, so the score (which
    // falls as s grows) is bisected for its root within ±50 of the estimate.
    let all = || std::iter::once(before).chain(compared);
    let (lo, hi) = bisect(s0 - 50.0, s0 + 50.0, |s| {
        all().map(|c| c.score(s)).sum::<f64>() > 0.0
    });
    let s = 0.5 * (lo + hi);
    let null = all().map(|c| c.log_lik(s)).sum::<f64>();
    (theta, alternative - null)
}

/// Released hosts whose own test joins the pooled one in [`with_each`], at most: past it,
/// the ones with the most events past their warm-up (a round's cost grows with the hosts
/// tested; the others count as no evidence, which only lowers the mean).
pub(crate) const MAX_EACH: usize = 16;

/// The pooled test `pooled` of `inputs` ([`test`], no `unseen` rate) with half of its
/// evidence taken instead from the mean of each released host's own test against the
/// reference hosts, at the dispersion `own` gives for that host (`None`: not tested, no
/// evidence): a rise on one released host of several (a partial fault, one batch's) is
/// not diluted by the others' minutes. Each test's bounding martingale is built on the
/// same minutes, so their mean is one and so is an equal mixture of it with the pooled
/// one: the bar keeps its meaning (a host left out, or a term left at 0, only lowers the
/// evidence), and a rise on every released host pays at most `ln 2` of its evidence for
/// it. With one released host, the pooled test alone. Returns the pooled test, its
/// `log_e` the mixed evidence, and the released host whose own test was strongest, with
/// that test.
pub(crate) fn with_each(
    inputs: &Inputs<'_>,
    mut pooled: Sequential,
    own: impl Fn(usize) -> Option<Overdispersion>,
) -> (Sequential, Option<(usize, Sequential)>) {
    let released = inputs.w.released;
    if released.len() < 2 {
        return (pooled, None);
    }
    let mut each = Vec::with_capacity(released.len());
    let mut top: Option<(usize, Sequential)> = None;
    for &h in released {
        let one = own(h).and_then(|d| test(&inputs.with_released(&[h]), d, None));
        if let Some(s) = one
            && top.as_ref().is_none_or(|(_, best)| s.log_e > best.log_e)
        {
            top = Some((h, s));
        }
        each.push(one.map_or(f64::NEG_INFINITY, |s| s.log_e));
    }
    pooled.log_e = mix(&[pooled.log_e, mix(&each)]);
    (pooled, top)
}

/// The released hosts' highest rate (events per unit of work, all released hosts summed)
/// over any run of `len` consecutive baseline minutes in which they did work (their own
/// excursions before the release; 0 when the baseline is shorter).
pub(crate) fn baseline_peak(inputs: &Inputs<'_>, len: usize) -> f64 {
    let t_len = inputs.w.t_len;
    let end = inputs
        .w
        .released
        .iter()
        .map(|&h| inputs.w.start[h])
        .min()
        .unwrap_or(0)
        .min(t_len);
    let mut per_minute = Vec::with_capacity(end);
    for t in 0..end {
        let (mut k, mut n) = (0.0, 0.0);
        for &h in inputs.w.released {
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
                until: self.t_len,
                w: Windows {
                    t_len: self.t_len,
                    start: &self.start,
                    settled: &self.settled,
                    first: self.first,
                    released: &self.released,
                    reference: &self.reference,
                },
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
        let one = test(&spike(61).inputs(), Overdispersion::constant(1.0), None).expect("a test");
        // 20 exceptions tested, half of a 1 % budget: the bar is ln(20 · 2 / 0.01).
        let bar = (20.0_f64 * 2.0 / 0.01).ln();
        assert!(one.log_e > bar, "{one:?} bar {bar}");
        assert!(one.ratio() > 8.0, "{one:?}");
        assert_eq!(one.minutes, 1);
        let two = test(&spike(62).inputs(), Overdispersion::constant(1.0), None).expect("a test");
        assert!(two.log_e > one.log_e);
        // Each failure logged in bursts of 5: a fifth of the evidence a minute, and a
        // baseline worth a fifth as much (a looser θ): past the bar after five.
        let bursty =
            test(&spike(61).inputs(), Overdispersion::constant(5.0), None).expect("a test");
        assert!(bursty.log_e < bar, "{bursty:?}");
        let bursty =
            test(&spike(65).inputs(), Overdispersion::constant(5.0), None).expect("a test");
        assert!(bursty.log_e > bar, "{bursty:?}");
    }

    #[test]
    fn a_rise_of_a_rare_exception_is_judged_by_what_its_few_baseline_events_allow() {
        // One event every ten minutes on each host for an hour (twelve on the released
        // hosts), then 1 or 2 a minute on the two released ones (×15), one exception
        // tested: θ is loose (the null may set it higher, at a cost the baseline's
        // likelihood says), so the first minute is not enough, and twelve are.
        let crossed_at = |extra: usize| {
            let t_len = 60 + extra;
            let mut fleet = Fleet::new(4, 2, t_len, 60, 0);
            for h in 0..4 {
                for t in 0..t_len {
                    fleet.values[h * t_len + t] = match (h < 2, t >= 60) {
                        (true, true) => 1.0 + (t % 2) as f64,
                        _ => f64::from(u8::from(t % 10 == h)),
                    };
                }
            }
            test(&fleet.inputs(), Overdispersion::constant(1.0), None).expect("a test")
        };
        let bar = (2.0_f64 / 0.01).ln();
        let one = crossed_at(1);
        assert!(one.log_e < bar, "{one:?}");
        let twelve = crossed_at(12);
        assert!(twelve.log_e > bar, "{twelve:?}");
        assert!(twelve.theta > 0.5 && twelve.theta < 2.0, "{twelve:?}");
    }

    /// A negative-binomial count of shape 1 (geometric) with the given mean.
    fn geometric(rng: &mut fastrand::Rng, mean: f64) -> f64 {
        let u = 1.0 - rng.f64(); // (0, 1]
        (u.ln() / (mean / (1.0 + mean)).ln()).floor()
    }

    #[test]
    fn a_fleet_wide_surge_of_a_wandering_rate_is_not_evidence_once_its_shape_is_known() {
        // 300 releases of 4 hosts whose exception wanders (negative binomial, shape 1,
        // mean 1 a minute: twice as variable as Poisson at that mean), then a surge ×8 on
        // every host for 30 minutes. At the baseline's variance the surge's minutes are
        // more variable than the test assumes; with the shape, the share ever crossing
        // 1/α stays below α, and below the share without it.
        let alpha: f64 = 0.05;
        let mut rng = fastrand::Rng::with_seed(20_261_201);
        let (runs, t_len, first) = (300, 90, 60);
        let (mut with_shape, mut constant) = (0, 0);
        for _ in 0..runs {
            let mut fleet = Fleet::new(4, 2, t_len, first, 0);
            for h in 0..4 {
                for t in 0..t_len {
                    let mean = if t >= first { 8.0 } else { 1.0 };
                    fleet.values[h * t_len + t] = geometric(&mut rng, mean);
                }
            }
            let ever = |dispersion: Overdispersion| {
                (first + 1..=t_len).any(|until| {
                    let inputs = Inputs {
                        until,
                        ..fleet.inputs()
                    };
                    test(&inputs, dispersion, None).is_some_and(|s| s.log_e >= (1.0 / alpha).ln())
                })
            };
            with_shape += usize::from(ever(Overdispersion {
                factor: 2.0,
                shape: Some(1.0),
                groups: None,
            }));
            constant += usize::from(ever(Overdispersion::constant(2.0)));
        }
        let share = |k: usize| k as f64 / f64::from(runs);
        assert!(share(with_shape) <= alpha, "{with_shape} of {runs} crossed");
        // Measured: 0 with the shape, 15 (α itself) at the baseline's variance.
        assert!(
            constant > with_shape,
            "{constant} of {runs} crossed without the shape"
        );
    }

    /// A canary logging an exception steadily (Poisson, 0.5 a minute) beside four big
    /// reference hosts whose counts wander (geometric, 3 a minute: 4 times as variable as
    /// Poisson), for an hour, then the canary's rate times `rise` for `after` minutes.
    fn canary(rng: &mut fastrand::Rng, rise: f64, after: usize) -> Fleet {
        let (first, t_len) = (60, 60 + after);
        let mut fleet = Fleet::new(5, 1, t_len, first, 0);
        for h in 0..5 {
            for t in 0..t_len {
                fleet.values[h * t_len + t] = match (h, t >= first) {
                    (0, true) => poisson(rng, 0.5 * rise),
                    (0, false) => poisson(rng, 0.5),
                    _ => geometric(rng, 3.0),
                };
            }
        }
        fleet
    }

    /// Each group's own dispersion: the steady canary's and the wandering reference's.
    const GROUPS: Overdispersion = Overdispersion {
        factor: 3.9,
        shape: None,
        groups: Some((1.0, 4.0)),
    };

    #[test]
    fn a_canarys_share_is_as_variable_as_its_own_counts_not_as_the_big_hosts_are() {
        // With no effect, looked at every minute for an hour: the share of 300 releases
        // ever crossing 1/α stays below α with each group's dispersion.
        let alpha: f64 = 0.05;
        let mut rng = fastrand::Rng::with_seed(20_261_201);
        let runs = 300;
        let mut crossed = 0;
        for _ in 0..runs {
            let fleet = canary(&mut rng, 1.0, 60);
            crossed += usize::from((61..=120).any(|until| {
                let inputs = Inputs {
                    until,
                    ..fleet.inputs()
                };
                test(&inputs, GROUPS, None).is_some_and(|s| s.log_e >= (1.0 / alpha).ln())
            }));
        }
        assert!(
            crossed as f64 / f64::from(runs) <= alpha,
            "{crossed} of {runs} A/A releases crossed"
        );
        // The canary's rate ×4 for 30 minutes: its own steady counts say so, where the
        // pooled dispersion (the big hosts' 3.9) hides it.
        let bar = (20.0_f64 / 0.01).ln();
        let (mut seen, mut pooled) = (0, 0);
        for _ in 0..100 {
            let fleet = canary(&mut rng, 4.0, 30);
            seen += usize::from(test(&fleet.inputs(), GROUPS, None).is_some_and(|s| s.log_e > bar));
            pooled += usize::from(
                test(&fleet.inputs(), Overdispersion::constant(3.9), None)
                    .is_some_and(|s| s.log_e > bar),
            );
        }
        // Measured: 0 of 300 A/A releases crossed; 81 of 100 rises with the groups'
        // dispersions, 0 at the pooled one.
        assert!(
            seen >= 70,
            "{seen} of 100 crossed with each group's dispersion"
        );
        assert!(
            pooled < seen / 2,
            "{pooled} of 100 crossed at the pooled one"
        );
    }

    #[test]
    fn a_spike_of_a_wandering_exception_needs_more_minutes_than_one_of_a_steady_one() {
        let shaped = Overdispersion {
            factor: 1.0,
            shape: Some(2.0),
            groups: None,
        };
        let bar = (20.0_f64 * 2.0 / 0.01).ln();
        // Twice as variable as Poisson at 2 a minute (shape 2): one minute of ×15 is what
        // such an exception may do now and then, four are not.
        let one = test(&spike(61).inputs(), shaped, None).expect("a test");
        assert!(one.log_e < bar, "{one:?}");
        let four = test(&spike(64).inputs(), shaped, None).expect("a test");
        assert!(four.log_e > bar, "{four:?}");
        // Poisson counts (no shape): the first minute is enough.
        let poisson = test(&spike(61).inputs(), Overdispersion::constant(1.0), None);
        assert!(poisson.is_some_and(|s| s.log_e > bar));
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
        let s = test(&fleet.inputs(), Overdispersion::constant(1.0), None).expect("a test");
        assert!(s.log_e < 2.0, "{s:?}");
        assert!(s.ratio() < 1.2, "{s:?}");
    }

    #[test]
    fn with_no_effect_the_bar_is_crossed_less_often_than_alpha_however_often_one_looks() {
        // 600 A/A releases of 4 hosts, Poisson counts at 0.02 to 5 a minute (a baseline of
        // a single event up to hundreds), looked at every minute for 60 minutes: the
        // share ever crossing 1/α stays below α.
        let alpha: f64 = 0.05;
        let mut rng = fastrand::Rng::with_seed(20_261_130);
        let (mut crossed, mut crossed_each) = (0, 0);
        let runs = 600;
        for _ in 0..runs {
            let rate = 0.02 * 250f64.powf(rng.f64());
            let (t_len, first) = (120, 60);
            let mut fleet = Fleet::new(4, 2, t_len, first, 0);
            for h in 0..4 {
                for t in 0..t_len {
                    fleet.values[h * t_len + t] = poisson(&mut rng, rate);
                }
            }
            let (mut ever, mut ever_each) = (false, false);
            for until in first + 1..=t_len {
                let inputs = Inputs {
                    until,
                    ..fleet.inputs()
                };
                let bar = (1.0 / alpha).ln();
                ever |= test(&inputs, Overdispersion::constant(1.0), None)
                    .is_some_and(|s| s.log_e >= bar);
                let d = Overdispersion::constant(1.0);
                ever_each |= test(&inputs, d, None)
                    .is_some_and(|p| with_each(&inputs, p, |_| Some(d)).0.log_e >= bar);
            }
            crossed += usize::from(ever);
            crossed_each += usize::from(ever_each);
        }
        let share = crossed as f64 / f64::from(runs);
        assert!(share <= alpha, "{crossed} of {runs} A/A releases crossed");
        let share = crossed_each as f64 / f64::from(runs);
        assert!(
            share <= alpha,
            "{crossed_each} of {runs} A/A releases crossed with each host's own test"
        );
    }

    #[test]
    fn with_no_effect_a_bursty_released_host_crosses_its_own_bar_less_often_than_alpha() {
        // 300 A/A releases of 6 hosts, 4 released: one released host's count is geometric,
        // at 3 a minute (four times as variable as Poisson), the others Poisson at 1 a
        // minute; each host's own test at its own baseline dispersion, looked at every
        // third minute for an hour: the share ever crossing 1/α stays below α (measured:
        // none of 300; 1 with every host at the pooled dispersion, which the bound's
        // conservatism at this α does not tell apart).
        let alpha: f64 = 0.05;
        let bar = (1.0 / alpha).ln();
        let mut rng = fastrand::Rng::with_seed(20_261_203);
        let (runs, t_len, first) = (300, 120, 60);
        let mut crossed = 0;
        for _ in 0..runs {
            let mut fleet = Fleet::new(6, 4, t_len, first, 0);
            for h in 0..6 {
                for t in 0..t_len {
                    fleet.values[h * t_len + t] = if h == 0 {
                        geometric(&mut rng, 3.0)
                    } else {
                        poisson(&mut rng, 1.0)
                    };
                }
            }
            // Each host's variance over its mean in the baseline, at least 1.
            let own: Vec<f64> = (0..6)
                .map(|h| {
                    let v = &fleet.values[h * t_len..h * t_len + first];
                    let mean = v.iter().sum::<f64>() / first as f64;
                    let var =
                        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (first - 1) as f64;
                    (var / mean.max(1e-9)).max(1.0)
                })
                .collect();
            let pooled_factor = own.iter().sum::<f64>() / 6.0;
            let d = Overdispersion {
                factor: pooled_factor,
                shape: None,
                groups: None,
            };
            let ever = (first + 1..=t_len).step_by(3).any(|until| {
                let inputs = Inputs {
                    until,
                    ..fleet.inputs()
                };
                test(&inputs, d, None).is_some_and(|p| {
                    let own_d = |h: usize| {
                        Some(Overdispersion {
                            groups: Some((own[h].max(pooled_factor), pooled_factor)),
                            ..d
                        })
                    };
                    with_each(&inputs, p, own_d).0.log_e >= bar
                })
            });
            crossed += usize::from(ever);
        }
        let share = crossed as f64 / f64::from(runs);
        assert!(share <= alpha, "{crossed} of {runs} A/A releases crossed");
    }

    /// 2 a minute on each of 8 hosts for an hour; then, on the first `rising` of the 4
    /// released ones, 8 a minute for `minutes` minutes.
    fn rise_on(rising: usize, minutes: usize) -> Fleet {
        let t_len = 60 + minutes;
        let mut fleet = Fleet::new(8, 4, t_len, 60, 0);
        for h in 0..8 {
            for t in 0..t_len {
                fleet.values[h * t_len + t] = if h < rising && t >= 60 { 8.0 } else { 2.0 };
            }
        }
        fleet
    }

    /// The first minute whose evidence crosses `bar`, by the test `f`.
    fn crossing(rising: usize, bar: f64, f: impl Fn(&Inputs<'_>) -> f64) -> Option<usize> {
        (1..=60).find(|&m| f(&rise_on(rising, m).inputs()) >= bar)
    }

    #[test]
    fn a_rise_on_one_released_host_of_four_is_not_diluted_by_the_other_three() {
        // ×4 on one released host of four: pooled, its events are a quarter of the
        // released hosts' and the rise looks like ×1.75; its own test sees ×4.
        let bar = (20.0_f64 * 2.0 / 0.01).ln();
        let d = Overdispersion::constant(1.0);
        let pooled = |i: &Inputs<'_>| test(i, d, None).map_or(f64::NEG_INFINITY, |s| s.log_e);
        let each = |i: &Inputs<'_>| {
            test(i, d, None).map_or(f64::NEG_INFINITY, |p| with_each(i, p, |_| Some(d)).0.log_e)
        };
        let (alone, mixed) = (crossing(1, bar, pooled), crossing(1, bar, each));
        assert!(
            mixed.is_some_and(|m| alone.is_none_or(|a| m < a)),
            "pooled {alone:?}, with each host's own {mixed:?}"
        );
        let inputs = rise_on(1, 10);
        let alone = test(&inputs.inputs(), d, None).expect("a test");
        let (_, top) = with_each(&inputs.inputs(), alone, |_| Some(d));
        assert_eq!(top.map(|t| t.0), Some(0));
        // A host left out of its own test is no evidence: with none tested, half the
        // pooled test's.
        let (only, _) = with_each(&inputs.inputs(), alone, |h| (h == 0).then_some(d));
        let (none, _) = with_each(&inputs.inputs(), alone, |_| None);
        assert!(none.log_e < only.log_e, "{none:?} {only:?}");
        assert!((none.log_e - (alone.log_e - 2f64.ln())).abs() < 1e-9);
        // On all four, the mixture pays at most ln 2 of the pooled evidence.
        let all = rise_on(4, 3);
        let (a, b) = (pooled(&all.inputs()), each(&all.inputs()));
        assert!(b >= a - 2f64.ln() - 1e-9 && b < a, "pooled {a}, mixed {b}");
        // One released host: the pooled test alone.
        let mut canary = rise_on(1, 3);
        canary.released = vec![0];
        assert_eq!(pooled(&canary.inputs()), each(&canary.inputs()));
    }
}
