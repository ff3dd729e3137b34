//! The fixed latency-histogram layout shared by agents and detectors (DESIGN §4).
//!
//! Bucket `index` holds response times in `(2^((index-1)/4), 2^(index/4)]` milliseconds:
//! four buckets per doubling, so any time is known within ±9.1 % (the logarithmic mapping
//! of DDSketch with γ = 2^(1/4)), and histograms of any hosts and minutes add up bucket by
//! bucket. Times at or below 2^(MIN_INDEX/4) ms (about 1 µs), zero included, fall in
//! [`MIN_INDEX`]; times above 2^(MAX_INDEX/4) ms (about 4.7 h) in [`MAX_INDEX`].

/// Buckets per doubling of the time.
pub const BUCKETS_PER_DOUBLING: i32 = 4;
/// Lowest bucket: 2^-10 ms and below.
pub const MIN_INDEX: i32 = -40;
/// Highest bucket: above 2^23.75 ms.
pub const MAX_INDEX: i32 = 96;

/// The bucket holding a response time of `ms` milliseconds (NaN and negative times go to
/// the lowest bucket).
pub fn bucket_of(ms: f64) -> i32 {
    if ms.is_nan() || ms <= 0.0 {
        return MIN_INDEX;
    }
    let raw = (ms.log2() * f64::from(BUCKETS_PER_DOUBLING)).ceil();
    // In range of i32 after the clamp; `as` saturates for infinities.
    (raw.clamp(f64::from(MIN_INDEX), f64::from(MAX_INDEX))) as i32
}

/// Upper bound of bucket `index`, in milliseconds.
pub fn upper_ms(index: i32) -> f64 {
    (f64::from(index) / f64::from(BUCKETS_PER_DOUBLING)).exp2()
}

/// The time that stands for bucket `index` when reading quantiles: within ±9.1 % of every
/// time in it (`2·u/(1+γ)` for upper bound `u`).
pub fn representative_ms(index: i32) -> f64 {
    let gamma = (1.0 / f64::from(BUCKETS_PER_DOUBLING)).exp2();
    2.0 * upper_ms(index) / (1.0 + gamma)
}

/// The `q` quantile (0 ≤ q ≤ 1) of a histogram given as `(index, count)` pairs in
/// ascending index order, `None` when it is empty.
pub fn quantile(buckets: &[(i32, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|(_, c)| c).sum();
    if total == 0 {
        return None;
    }
    // The smallest bucket holding at least ceil(q·total) of the times (rank 1 at q = 0).
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for &(index, count) in buckets {
        seen += count;
        if seen >= rank {
            return Some(representative_ms(index));
        }
    }
    buckets.last().map(|&(index, _)| representative_ms(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_is_within_its_bucket_and_known_within_ten_percent() {
        for &ms in &[
            0.002, 0.5, 1.0, 1.5, 3.0, 17.0, 100.0, 250.0, 999.0, 12_345.6,
        ] {
            let i = bucket_of(ms);
            assert!(ms <= upper_ms(i) * (1.0 + 1e-12), "{ms} above bucket {i}");
            assert!(
                ms > upper_ms(i - 1) * (1.0 - 1e-12),
                "{ms} below bucket {i}"
            );
            let r = representative_ms(i);
            assert!((r - ms).abs() / ms <= 0.0911, "{ms} read as {r}");
        }
    }

    #[test]
    fn bounds_and_odd_inputs() {
        assert_eq!(bucket_of(1.0), 0);
        assert_eq!(bucket_of(2.0), 4);
        assert_eq!(bucket_of(0.0), MIN_INDEX);
        assert_eq!(bucket_of(-3.0), MIN_INDEX);
        assert_eq!(bucket_of(f64::NAN), MIN_INDEX);
        assert_eq!(bucket_of(f64::INFINITY), MAX_INDEX);
        assert_eq!(bucket_of(1e300), MAX_INDEX);
    }

    #[test]
    fn quantiles_of_a_histogram() {
        let h: Vec<(i32, u64)> = vec![(bucket_of(10.0), 90), (bucket_of(200.0), 10)];
        let p50 = quantile(&h, 0.5).unwrap_or_default();
        let p99 = quantile(&h, 0.99).unwrap_or_default();
        assert!((p50 - 10.0).abs() / 10.0 < 0.1, "{p50}");
        assert!((p99 - 200.0).abs() / 200.0 < 0.1, "{p99}");
        assert_eq!(quantile(&[], 0.5), None);
    }
}
