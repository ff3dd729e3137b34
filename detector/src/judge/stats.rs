//! Small, plain statistics used by the judgement funnel (and by the benchmark baselines).
//!
//! The special functions (gamma, incomplete beta and gamma, erfc) come from `statrs`; the
//! tails built on them take real-valued counts. Everything here is deterministic,
//! allocation-light and tested against known values.
//! Counts may be real-valued: quasi-Poisson scaling divides counts by a dispersion factor
//! before a binomial test, which then needs the continuous form of the binomial tail
//! (the regularized incomplete beta function).

/// Natural logarithm of the gamma function for `x > 0` (`statrs`).
pub fn ln_gamma(x: f64) -> f64 {
    statrs::function::gamma::ln_gamma(x)
}

/// Natural logarithm of the beta function for `a, b > 0` (`statrs`); NaN outside.
pub fn ln_beta(a: f64, b: f64) -> f64 {
    statrs::function::beta::checked_ln_beta(a, b).unwrap_or(f64::NAN)
}

/// Regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 <= x <= 1`
/// (`statrs`); NaN outside that domain.
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    statrs::function::beta::checked_beta_reg(a, b, x.clamp(0.0, 1.0)).unwrap_or(f64::NAN)
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`, continuous in `k` and `n` (`0 <= k <= n`):
/// `I_p(k, n - k + 1)`. Returns 1 for `k <= 0` and 0 for `k > n`.
pub fn binomial_upper_tail(k: f64, n: f64, p: f64) -> f64 {
    if k <= 0.0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    // statrs's continued fraction stops after 140 terms, short of converging when both
    // parameters are in the hundreds of thousands; there the binomial is normal to far
    // better than the tests need (skewness below 0.003).
    if k.min(n - k + 1.0) > LARGE_BINOMIAL {
        let sd = (n * p * (1.0 - p)).sqrt();
        return normal_upper_tail((k - 0.5 - n * p) / sd);
    }
    incomplete_beta(k, n - k + 1.0, p).clamp(0.0, 1.0)
}

/// Upper end of the one-sided Clopper–Pearson interval of a binomial proportion with `k`
/// successes in `n` trials (both real-valued, as counts divided by a dispersion are), at
/// level `delta`: the `q` at which seeing `k` or fewer has chance `delta`. 1 when `k = n`.
pub fn binomial_upper_bound(k: f64, n: f64, delta: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    // P(X ≤ k; q) = 1 − I_q(k + 1, n − k) = I_{1−q}(n − k, k + 1) falls as q grows: the q
    // where it is delta. Written as the second form where k + 1 passes n (a fractional
    // count within one of n), which the upper tail's `k ≤ n` domain leaves out.
    let at_most_k = |q: f64| {
        if k + 1.0 <= n {
            1.0 - binomial_upper_tail(k + 1.0, n, q)
        } else {
            incomplete_beta(n - k, k + 1.0, 1.0 - q)
        }
    };
    bisect(k / n, 1.0, |q| at_most_k(q) > delta).1
}

/// Bisects `[lo, hi]` 60 times for where `below` turns false (it holds from `lo` up to a
/// point, and not past it); returns the last bracket.
pub(crate) fn bisect(mut lo: f64, mut hi: f64, below: impl Fn(f64) -> bool) -> (f64, f64) {
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if below(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo, hi)
}

/// The two-sided Clopper–Pearson interval of a binomial proportion at level `1 - 2·delta`
/// (`delta` on each side), for `k` successes in `n` trials, both real-valued
/// (`0 <= k <= n`): the beta quantiles `B(delta; k, n-k+1)` and `B(1-delta; k+1, n-k)`,
/// found by bisection; 0 and 1 at the ends. Past [`LARGE_BINOMIAL`] counts, the normal
/// approximation.
pub fn clopper_pearson(k: f64, n: f64, delta: f64) -> (f64, f64) {
    if n <= 0.0 || k.is_nan() || n.is_nan() {
        return (0.0, 1.0);
    }
    let k = k.clamp(0.0, n);
    if k.min(n - k) > LARGE_BINOMIAL {
        let p = k / n;
        // The standard normal's upper `delta` quantile.
        let z = std::f64::consts::SQRT_2 * statrs::function::erf::erfc_inv(2.0 * delta);
        let half = z * (p * (1.0 - p) / n).sqrt();
        return ((p - half).max(0.0), (p + half).min(1.0));
    }
    // The q where I_q(a, b) = target (I_q rises with q).
    let quantile = |a: f64, b: f64, target: f64| {
        let (lo, hi) = bisect(0.0, 1.0, |q| incomplete_beta(a, b, q) < target);
        0.5 * (lo + hi)
    };
    let low = if k > 0.0 {
        quantile(k, n - k + 1.0, delta)
    } else {
        0.0
    };
    let high = if n - k > 0.0 {
        quantile(k + 1.0, n - k, 1.0 - delta)
    } else {
        1.0
    };
    (low, high)
}

/// Counts past which [`binomial_upper_tail`] uses the normal approximation.
const LARGE_BINOMIAL: f64 = 2e5;

/// `P(X >= k)` for `X ~ Poisson(mean)`, continuous in `k` (regularized lower incomplete
/// gamma, `P(k, mean)`). Returns 1 for `k <= 0`.
pub fn poisson_upper_tail(k: f64, mean: f64) -> f64 {
    if k <= 0.0 {
        return 1.0;
    }
    if mean <= 0.0 {
        return 0.0;
    }
    lower_gamma_regularized(k, mean).clamp(0.0, 1.0)
}

fn lower_gamma_regularized(a: f64, x: f64) -> f64 {
    statrs::function::gamma::checked_gamma_lr(a, x).unwrap_or(f64::NAN)
}

/// Student's t upper tail `P(T >= t)` with `df` degrees of freedom (`df > 0`).
pub fn student_t_upper_tail(t: f64, df: f64) -> f64 {
    if df.is_nan() || df <= 0.0 || t.is_nan() {
        return f64::NAN;
    }
    let x = df / (df + t * t);
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, x);
    if t >= 0.0 { tail } else { 1.0 - tail }
}

/// The `q` quantile (0..=1) of the values, by linear interpolation. `None` when empty.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

/// Standard normal upper tail `P(Z >= z)`.
pub fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (`statrs`).
pub fn erfc(x: f64) -> f64 {
    statrs::function::erf::erfc(x)
}

/// Median of the values (NaN-free input assumed; NaNs sort last). `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    })
}

/// Robust spread: 1.4826 × the median absolute deviation (equals the standard deviation
/// for normal data). `None` when empty.
pub fn mad_sd(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    let m = median(&mut v)?;
    let mut dev: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    median(&mut dev).map(|d| 1.4826 * d)
}

/// Least-squares slope of `y` against `x`. `None` with fewer than 2 distinct `x`.
pub fn ols_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

/// One-sided Mann-Whitney U test that `a` tends to be larger than `b` (normal
/// approximation with tie correction and continuity correction). Returns the p-value;
/// 1.0 when either sample is empty.
pub fn mann_whitney_greater(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for item in &all[i..=j] {
            if item.1 {
                rank_sum_a += avg_rank;
            }
        }
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum_a - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)).max(1.0));
    if var <= 0.0 {
        return 1.0;
    }
    normal_upper_tail((u - mean - 0.5) / var.sqrt())
}

/// The median of `sorted` without one occurrence of `own` (when given and present).
pub(crate) fn median_without(sorted: &[f64], own: Option<f64>) -> Option<f64> {
    let skip = own.and_then(|v| sorted.iter().position(|&x| x == v));
    let n = sorted.len() - usize::from(skip.is_some());
    if n == 0 {
        return None;
    }
    let at = |i: usize| match skip {
        Some(p) if i >= p => sorted[i + 1],
        _ => sorted[i],
    };
    Some(if n % 2 == 1 {
        at(n / 2)
    } else {
        0.5 * (at(n / 2 - 1) + at(n / 2))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_bound_covers_the_proportion() {
        let q = binomial_upper_bound(5.0, 10.0, 0.01);
        assert!(q > 0.5 && q < 0.95, "{q}");
        assert_eq!(binomial_upper_bound(10.0, 10.0, 0.01), 1.0);
        // 0 of 100: the bound is about ln(1/δ)/n.
        let q = binomial_upper_bound(0.0, 100.0, 0.01);
        assert!((q - 0.045).abs() < 0.005, "{q}");
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn the_upper_bound_stays_below_1_for_fractional_counts_within_one_of_n() {
        // Counts divided by a dispersion: 2.6 of 3.5 lies within one of n, where the bound
        // once jumped to 1. It grows with k, without a jump at k = n − 1, and stays below
        // 1 until k = n.
        let n = 3.5;
        let at = |k: f64| binomial_upper_bound(k, n, 0.01);
        let ks = [2.0, 2.4, 2.5 - 1e-9, 2.5 + 1e-9, 2.6, 3.0, 3.4, 3.499];
        for pair in ks.windows(2) {
            assert!(at(pair[0]) <= at(pair[1]) + 1e-9, "{pair:?}");
        }
        assert!((at(2.5 - 1e-9) - at(2.5 + 1e-9)).abs() < 1e-6);
        assert!(at(2.6) < 0.999, "{}", at(2.6));
        // The bound of k = 2.6 is where seeing at most 2.6 has chance δ:
        // I_{1−q}(n − k, k + 1) = 0.01.
        let q = at(2.6);
        assert!(
            (incomplete_beta(0.9, 3.6, 1.0 - q) - 0.01).abs() < 1e-6,
            "{q}"
        );
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        assert!(close(ln_gamma(1.0), 0.0_f64.max(1e-300), 1.0) || ln_gamma(1.0).abs() < 1e-12);
        assert!(close(ln_gamma(5.0), 24.0_f64.ln(), 1e-12));
        assert!(close(ln_gamma(10.5), 1_133_278.388_7_f64.ln(), 1e-9));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-12
        ));
    }

    #[test]
    fn binomial_tail_holds_for_large_counts() {
        // Far past the continued fraction's easy range (10⁵ to 10⁸ trials), two and four
        // standard deviations above the mean and at it, against the tail summed term by
        // term in log space.
        let summed = |k: f64, n: f64, p: f64| -> f64 {
            let ln_pmf = |j: f64| {
                ln_gamma(n + 1.0) - ln_gamma(j + 1.0) - ln_gamma(n - j + 1.0)
                    + j * p.ln()
                    + (n - j) * (1.0 - p).ln()
            };
            let (mut total, mut j) = (0.0, k);
            loop {
                let term = ln_pmf(j).exp();
                total += term;
                if term < total * 1e-16 || j >= n {
                    return total;
                }
                j += 1.0;
            }
        };
        for (n, p) in [
            (1e6_f64, 0.01_f64),
            (2e5, 0.3),
            (1e6, 0.15),
            (5e7, 1e-4),
            (2e6, 0.3),
            (1e8, 0.2),
        ] {
            let sd = (n * p * (1.0 - p)).sqrt();
            for z in [0.0, 2.0, 4.0] {
                let k = (n * p + z * sd).round();
                let got = binomial_upper_tail(k, n, p);
                let want = summed(k, n, p);
                let tol = if k.min(n - k + 1.0) > LARGE_BINOMIAL {
                    0.01
                } else {
                    1e-4
                };
                assert!(close(got, want, tol), "n={n} p={p} z={z}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn binomial_tail_matches_exact_sums() {
        // P(X >= 3), X ~ Bin(10, 0.1) = 1 - (0.9^10 + 10*0.1*0.9^9 + 45*0.01*0.9^8)
        let exact =
            1.0 - (0.9f64.powi(10) + 10.0 * 0.1 * 0.9f64.powi(9) + 45.0 * 0.01 * 0.9f64.powi(8));
        assert!(close(binomial_upper_tail(3.0, 10.0, 0.1), exact, 1e-9));
        assert_eq!(binomial_upper_tail(0.0, 10.0, 0.1), 1.0);
        assert_eq!(binomial_upper_tail(11.0, 10.0, 0.1), 0.0);
        assert!(close(
            binomial_upper_tail(10.0, 10.0, 0.5),
            0.5f64.powi(10),
            1e-9
        ));
        // Continuous in k: monotone decreasing.
        assert!(binomial_upper_tail(3.5, 10.0, 0.1) < binomial_upper_tail(3.0, 10.0, 0.1));
    }

    #[test]
    fn poisson_tail_matches_exact_sums() {
        // P(X >= 2), X ~ Poisson(1) = 1 - e^-1 (1 + 1)
        let exact = 1.0 - 2.0 * (-1.0f64).exp();
        assert!(close(poisson_upper_tail(2.0, 1.0), exact, 1e-9));
        // Large mean, upper branch: P(X >= 30) for mean 20.
        let mut cdf = 0.0;
        let mut term = (-20.0f64).exp();
        for i in 0..30 {
            if i > 0 {
                term *= 20.0 / i as f64;
            }
            cdf += term;
        }
        assert!(close(poisson_upper_tail(30.0, 20.0), 1.0 - cdf, 1e-7));
    }

    #[test]
    fn normal_tail_and_median_and_slope() {
        assert!(close(normal_upper_tail(1.959_964), 0.025, 1e-4));
        assert!(close(normal_upper_tail(-1.0), 0.841_344_7, 1e-5));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        assert!(close(
            mad_sd(&[1.0, 2.0, 3.0, 4.0, 100.0]).unwrap_or(0.0),
            1.4826,
            1e-9
        ));
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        assert!(close(ols_slope(&pts).unwrap_or(0.0), 2.0, 1e-12));
        assert_eq!(ols_slope(&[(1.0, 1.0)]), None);
    }

    #[test]
    fn student_t_tail_matches_tables() {
        // t = 2.228 is the two-sided 5% point with 10 df.
        assert!(close(student_t_upper_tail(2.228, 10.0), 0.025, 1e-3));
        assert!(close(student_t_upper_tail(0.0, 5.0), 0.5, 1e-12));
        assert!(close(student_t_upper_tail(-1.812, 10.0), 0.95, 1e-3));
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0, 4.0, 5.0], 0.5), Some(3.0));
        assert_eq!(quantile(&mut [1.0, 2.0], 1.0), Some(2.0));
    }

    #[test]
    fn mann_whitney_separates_shifted_samples() {
        let a: Vec<f64> = (0..20).map(|i| 10.0 + i as f64).collect();
        let b: Vec<f64> = (0..20).map(|i| i as f64).collect();
        assert!(mann_whitney_greater(&a, &b) < 0.01);
        assert!(mann_whitney_greater(&b, &a) > 0.99);
        let same = mann_whitney_greater(&b, &b);
        assert!(same > 0.4 && same < 0.6, "{same}");
        assert_eq!(mann_whitney_greater(&[], &b), 1.0);
    }

    #[test]
    fn clopper_pearson_matches_known_intervals_and_takes_fractional_counts() {
        // 5 of 20 at 95 %: 0.0866–0.4910 (the standard table).
        let (lo, hi) = clopper_pearson(5.0, 20.0, 0.025);
        assert!(
            (lo - 0.0866).abs() < 1e-3 && (hi - 0.4910).abs() < 1e-3,
            "{lo} {hi}"
        );
        // 0 of 10: upper end 0.3085; 10 of 10: lower end 0.6915.
        assert_eq!(clopper_pearson(0.0, 10.0, 0.025).0, 0.0);
        assert!((clopper_pearson(0.0, 10.0, 0.025).1 - 0.3085).abs() < 1e-3);
        assert!((clopper_pearson(10.0, 10.0, 0.025).0 - 0.6915).abs() < 1e-3);
        // Less than one failure (counts divided by a dispersion): still bounded below 1.
        let (_, hi) = clopper_pearson(12.0, 12.5, 0.025);
        assert!(hi < 1.0 && hi > 12.0 / 12.5, "{hi}");
        // Large counts: the normal approximation, centred.
        let (lo, hi) = clopper_pearson(5e5, 1e6, 0.025);
        assert!(
            (0.5 - lo - (hi - 0.5)).abs() < 1e-9 && hi - lo < 0.0021,
            "{lo} {hi}"
        );
    }
}
