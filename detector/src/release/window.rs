//! Which minutes a round reads: each batch's baseline (the minutes before its hosts got
//! the new version) and the most recent [`JUDGED_MINUTES`] up to the judged minute. So a
//! round holds at most (batches' baselines + [`JUDGED_MINUTES`]) minutes of counters per
//! host, however old the release: a release watched for a day is judged on its last two
//! hours against the hour before each batch, in the memory and time of a young one.

/// Minutes after the release (up to the judged one) that a round reads at most.
pub const JUDGED_MINUTES: i64 = 120;

/// The minute ranges (inclusive, in Unix seconds) a round of `minute` reads, merged and
/// in order: for each batch minute `b`, `[b - baseline_minutes, b - 1 minute]`, and
/// `[minute - (JUDGED_MINUTES - 1) minutes, minute]`, never before the first baseline.
pub fn judged_ranges(batch_minutes: &[i64], baseline_minutes: i64, minute: i64) -> Vec<(i64, i64)> {
    let mut ranges: Vec<(i64, i64)> = batch_minutes
        .iter()
        .map(|&b| (b - baseline_minutes * 60, b - 60))
        .filter(|(from, to)| from <= to)
        .collect();
    // Never before the first baseline: a young release reads what it always read.
    let earliest = batch_minutes
        .iter()
        .min()
        .map_or(i64::MIN, |b| b - baseline_minutes * 60);
    ranges.push(((minute - (JUDGED_MINUTES - 1) * 60).max(earliest), minute));
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        match merged.last_mut() {
            Some(last) if from <= last.1 + 60 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_release_reads_one_range_from_its_baseline() {
        let b = 100 * 3600;
        assert_eq!(
            judged_ranges(&[b], 60, b + 10 * 60),
            vec![(b - 3600, b + 600)]
        );
    }

    #[test]
    fn an_old_release_reads_its_batches_baselines_and_the_last_two_hours() {
        let b1 = 100 * 3600;
        let b2 = b1 + 10 * 3600;
        let minute = b1 + 23 * 3600;
        assert_eq!(
            judged_ranges(&[b1, b2, b2], 60, minute),
            vec![
                (b1 - 3600, b1 - 60),
                (b2 - 3600, b2 - 60),
                (minute - 119 * 60, minute)
            ]
        );
        let minutes: i64 = judged_ranges(&[b1, b2], 60, minute)
            .iter()
            .map(|(f, t)| (t - f) / 60 + 1)
            .sum();
        assert_eq!(minutes, 60 + 60 + JUDGED_MINUTES);
    }
}
