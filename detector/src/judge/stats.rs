//! Small, plain statistics used by the judgement funnel (and by the benchmark baselines).
//!
//! Everything here is deterministic, allocation-light and tested against known values.
//! Counts may be real-valued: quasi-Poisson scaling divides counts by a dispersion factor
//! before a binomial test, which then needs the continuous form of the binomial tail
//! (the regularized incomplete beta function).

/// Natural logarithm of the gamma function for `x > 0` (Lanczos, g = 7, n = 9; relative
/// error below 1e-13 over the range used here).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps precision for small arguments.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 <= x <= 1`
/// (continued fraction, Lentz's method).
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if !(a > 0.0 && b > 0.0) || x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-14;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
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
    incomplete_beta(k, n - k + 1.0, p).clamp(0.0, 1.0)
}

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
    let ln_front = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        // Series.
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        sum * ln_front.exp()
    } else {
        // Continued fraction for the upper part.
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        1.0 - ln_front.exp() * h
    }
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

/// Complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
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
}
