//! `log_volume`: a released host still reporting whose mean lines over the last minutes fell
//! below [`JudgeParams::volume_max_ratio`] of its baseline, after the reference group's own
//! change (not a calibrated test; the window's rounds decide).

use crate::judge::signal::{Candidate, HostView, Role, candidate};
use crate::judge::{Evidence, JudgeParams, Learned, Reason, Rule, Severity, Tally};

/// Fewest recent and baseline minutes a host's mean volume needs to be compared.
pub(crate) const MIN_RECENT: usize = 3;
pub(crate) const MIN_BASELINE: usize = 5;

/// The reference group's own change of volume (log lines, or requests): the sum of its
/// hosts' recent means over the sum of their baseline means, from `(recent, baseline)`
/// `(mean, minutes)` pairs, counting the hosts with enough minutes in both; ×0.2 to ×5,
/// 1 without any.
pub(crate) fn fleet_change(
    means: impl IntoIterator<Item = (Option<(f64, usize)>, Option<(f64, usize)>)>,
) -> f64 {
    let (mut after, mut before) = (0.0, 0.0);
    for pair in means {
        if let (Some((a, na)), Some((b, nb))) = pair
            && na >= MIN_RECENT
            && nb >= MIN_BASELINE
        {
            after += a;
            before += b;
        }
    }
    if before > 0.0 {
        (after / before).clamp(0.2, 5.0)
    } else {
        1.0
    }
}

pub(crate) fn volume_signal(
    hosts: &[HostView<'_>],
    first: i64,
    m: i64,
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Option<Candidate> {
    let warm = params.warmup_minutes * 60;
    let recent_from = m - (params.volume_recent_minutes - 1) * 60;
    let base_from = first - params.baseline_minutes * 60;
    let mean_lines = |h: &HostView<'_>, from: i64, to: i64| -> Option<(f64, usize)> {
        let v: Vec<f64> = h
            .rows
            .iter()
            .filter(|r| r.minute >= from && r.minute <= to)
            .map(|r| r.lines as f64)
            .collect();
        (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64, v.len()))
    };
    let fleet = fleet_change(hosts.iter().filter(|h| h.role == Role::Reference).map(|h| {
        (
            mean_lines(h, recent_from.max(first + warm), m),
            mean_lines(h, base_from, first - 60),
        )
    }));
    let mut hit = Vec::new();
    let mut best: Option<(f64, &str, f64, f64, usize, usize)> = None;
    for h in hosts {
        let Role::Released(r) = h.role else { continue };
        let (Some((a, na)), Some((b, nb))) = (
            mean_lines(h, recent_from.max(r + warm), m),
            mean_lines(h, base_from, r - 60),
        ) else {
            continue;
        };
        if na < MIN_RECENT || nb < MIN_BASELINE || b < 10.0 {
            continue;
        }
        let relative = a / b / fleet;
        if relative < params.volume_max_ratio {
            hit.push(h.name.to_string());
            let drop = 1.0 - relative;
            if best.is_none_or(|x| drop > x.0) {
                best = Some((drop, h.name, a, b, na, nb));
            }
        }
    }
    let (drop, name, a, b, na, nb) = best?;
    let reason = Reason {
        rule: Rule::LogVolume,
        summary: format!(
            "log volume on {name} fell to {a:.0} lines/minute from {b:.0} before the release ({:.0}% of normal after the fleet's change ×{fleet:.2}) while its agent still reports",
            (1.0 - drop) * 100.0
        ),
        severity: Severity::Critical,
        hosts: hit,
        fingerprint: None,
        metric: Some("lines".into()),
        evidence: Evidence {
            released_before: Some(Tally {
                value: b,
                lines: 0,
                minutes: nb as u32,
            }),
            released_after: Some(Tally {
                value: a,
                lines: 0,
                minutes: na as u32,
            }),
            expected: Some(b * fleet),
            observed: a,
            effect: drop,
            ..Evidence::default()
        },
    };
    Some(candidate(
        "log_volume",
        reason,
        drop,
        1.0 - params.volume_max_ratio,
        memory,
        None,
    ))
}
