//! Rules 4 and 5 of the funnel (see the module docs of `judge`): host metrics (CPU, load,
//! disk busy, memory slope) and log volume, per released host against its own baseline
//! and the reference hosts' change, CPU and load per unit of work.

use super::signal::{Candidate, HostView, Role, candidate};
use super::stats::{mad_sd, median, ols_slope, quantile};
use super::{AppMemory, Evidence, HostMinute, Reason, Rule, Severity, Tally};

/// Largest growth of a host's work credited to its CPU or load.
const MAX_WORK_SCALE: f64 = 4.0;

/// How much more work a host did in `after` than in `before` (inclusive minute ranges),
/// when `metric` grows with work (`cpu_pct`, `load1`): at least 1, at most
/// [`MAX_WORK_SCALE`]; 1 for other metrics or without work counts. The work is the
/// median a minute of the requests it answered, where its access log says (what a
/// release cannot change by logging more or less), else of its log events, else lines.
fn work_scale(metric: &str, rows: &[&HostMinute], before: (i64, i64), after: (i64, i64)) -> f64 {
    if !matches!(metric, "cpu_pct" | "load1") {
        return 1.0;
    }
    let in_range = |(from, to): (i64, i64), r: &&&HostMinute| r.minute >= from && r.minute <= to;
    let has_requests = |range: (i64, i64)| {
        rows.iter()
            .any(|r| in_range(range, &r) && r.requests.as_ref().is_some_and(|q| q.count > 0))
    };
    let requests = has_requests(before) && has_requests(after);
    let events = rows.iter().any(|r| r.events > 0);
    let work = |range: (i64, i64)| -> Option<f64> {
        let mut w: Vec<f64> = rows
            .iter()
            .filter(|r| in_range(range, r))
            .filter_map(|r| {
                if requests {
                    r.requests.as_ref().map(|q| q.count as f64)
                } else {
                    Some(if events { r.events } else { r.lines } as f64)
                }
            })
            .collect();
        median(&mut w)
    };
    match (work(before), work(after)) {
        (Some(b), Some(a)) if b > 0.0 => (a / b).clamp(1.0, MAX_WORK_SCALE),
        _ => 1.0,
    }
}

fn values_in(rows: &[&HostMinute], metric: &str, from: i64, to: i64) -> Vec<f64> {
    rows.iter()
        .filter(|r| r.minute >= from && r.minute <= to)
        .filter_map(|r| r.host_metrics.get(metric))
        .collect()
}

/// Quantile of the recent minutes taken as a host's recent level.
const RECENT_QUANTILE: f64 = 0.75;

/// Quantile of normal minute-to-level deviations a metric change must exceed.
const EXCURSION_QUANTILE: f64 = 0.995;

/// Minimum robust noise per metric, so a flat baseline does not make every wiggle huge.
fn noise_floor(metric: &str, baseline_median: f64) -> f64 {
    match metric {
        "cpu_pct" | "disk_busy_pct" => 2.0,
        "load1" => (0.1 * baseline_median).max(0.1),
        _ => 1.0,
    }
}

#[allow(clippy::too_many_arguments)] // the round's views, passed as they are
pub(super) fn metric_signal(
    levels: &mut Vec<(String, f64, f64)>,
    metric: &str,
    hosts: &[HostView<'_>],
    first: i64,
    recent_from: i64,
    m: i64,
    params: &super::JudgeParams,
    memory: &AppMemory,
) -> Option<Candidate> {
    let warm = params.warmup_minutes * 60;
    let base_from = first - params.baseline_minutes * 60;
    // (host, before median, after median, delta, noise, before n, after n)
    let mut released = Vec::new();
    let mut reference_deltas = Vec::new();
    let mut excursions = Vec::new();
    for h in hosts {
        let start = match h.role {
            Role::Released(r) => r,
            Role::Reference => first,
        };
        let mut before = values_in(&h.rows, metric, base_from, start - 1);
        let mut after = values_in(&h.rows, metric, recent_from.max(start + warm), m);
        if before.len() < params.metric_min_minutes || after.len() < params.metric_min_minutes {
            continue;
        }
        let noise = mad_sd(&before).unwrap_or(0.0);
        // The recent level is an upper quartile, so a fault that comes and goes (half of
        // the minutes) still shows; the baseline level is the median.
        let (Some(b), Some(a)) = (median(&mut before), quantile(&mut after, RECENT_QUANTILE))
        else {
            continue;
        };
        excursions.extend(before.iter().map(|v| v - b));
        // More CPU or load for more work is not a regression: when the host does more work
        // (log events) than before, its level is expected to grow in proportion (as if all
        // of it were work; never expected to shrink with less work, as idle load does not).
        let scale = work_scale(
            metric,
            &h.rows,
            (base_from, start - 1),
            (recent_from.max(start + warm), m),
        );
        let expected = b * scale;
        match h.role {
            Role::Released(_) => released.push((
                h.name,
                b,
                a,
                a - expected,
                noise * scale,
                before.len(),
                after.len(),
                scale,
            )),
            Role::Reference => {
                reference_deltas.push(a - expected);
                excursions.extend(after.iter().map(|v| v - expected));
            }
        }
    }
    // How far this fleet's hosts wander from their own level in normal minutes (bursty
    // workloads wander far): a change must go beyond it.
    let excursion = if excursions.len() >= 20 {
        quantile(&mut excursions, EXCURSION_QUANTILE).unwrap_or(0.0)
    } else {
        0.0
    };
    if released.is_empty() {
        return None;
    }
    let shift = median(&mut reference_deltas.clone()).unwrap_or(0.0);
    let spread = if reference_deltas.len() >= 3 {
        mad_sd(&reference_deltas).unwrap_or(0.0)
    } else {
        0.0
    };
    let kind = format!("host_metric:{metric}");
    let released_level = released
        .iter()
        .map(|r| r.3 - shift)
        .fold(f64::NEG_INFINITY, f64::max);
    let reference_level = reference_deltas
        .iter()
        .map(|d| d - shift)
        .fold(f64::NEG_INFINITY, f64::max);
    levels.push((kind.clone(), released_level, reference_level));
    let mut hit = Vec::new();
    let mut best: Option<(f64, f64, usize)> = None; // (score, min_abs, index)
    for (idx, &(name, b, _a, delta, noise, _, _, _)) in released.iter().enumerate() {
        let score = delta - shift;
        let min_abs = match metric {
            "cpu_pct" => params.cpu_min_points,
            "disk_busy_pct" => params.disk_min_points,
            _ => params.load_min_abs.max(params.load_min_rel * b),
        };
        let z = score / noise.max(spread).max(noise_floor(metric, b));
        if score >= min_abs && z >= params.metric_min_z && score > excursion {
            hit.push(name.to_string());
            if best.is_none_or(|(s, _, _)| score > s) {
                best = Some((score, min_abs, idx));
            }
        }
    }
    let (score, min_abs, idx) = best?;
    let (name, b, a, _, noise, nb, na, scale) = released[idx];
    let evidence = Evidence {
        reference_after: Some(Tally {
            value: excursion,
            lines: 0,
            minutes: reference_deltas.len() as u32,
        }),
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
        expected: Some(b * scale + shift),
        observed: a,
        effect: score,
        dispersion: Some(noise),
        ..Evidence::default()
    };
    let reference_note = if reference_deltas.is_empty() {
        "no reference hosts".to_string()
    } else {
        format!(
            "reference hosts moved {shift:+.2} (median of {})",
            reference_deltas.len()
        )
    };
    let work_note = if scale > 1.0 {
        format!(", {:.2} expected for {scale:.2}× the work", b * scale)
    } else {
        String::new()
    };
    let reason = Reason {
        rule: Rule::HostMetric,
        summary: format!(
            "{metric} on {name} rose from median {b:.2} before to {a:.2} over the last minutes{work_note} ({score:+.2} beyond the fleet; {reference_note}; baseline noise {noise:.2}; normal excursions up to {excursion:.2})"
        ),
        severity: Severity::Critical,
        hosts: hit,
        fingerprint: None,
        metric: Some(metric.to_string()),
        evidence,
    };
    // The default threshold here is the host's own minimum change, which may be above the
    // kind's nominal default (load grows with the baseline).
    Some(candidate(&kind, reason, score, min_abs, memory, None))
}

pub(super) fn memory_slope_signal(
    hosts: &[HostView<'_>],
    first: i64,
    m: i64,
    params: &super::JudgeParams,
    memory: &AppMemory,
) -> Option<Candidate> {
    const MIN_POINTS: usize = 8;
    let warm = params.warmup_minutes * 60;
    let base_from = first - params.baseline_minutes * 60;
    let points = |h: &HostView<'_>, from: i64, to: i64| -> Vec<(f64, f64)> {
        h.rows
            .iter()
            .filter(|r| r.minute >= from && r.minute <= to)
            .filter_map(|r| {
                r.host_metrics
                    .get("mem_used_pct")
                    .map(|v| ((r.minute - from) as f64 / 60.0, v))
            })
            .collect()
    };
    let mut reference_slopes = Vec::new();
    let mut released = Vec::new();
    for h in hosts {
        match h.role {
            Role::Reference => {
                let p = points(h, first + warm, m);
                if p.len() >= MIN_POINTS
                    && let Some(s) = ols_slope(&p)
                {
                    reference_slopes.push(s);
                }
            }
            Role::Released(r) => {
                let p = points(h, r + warm, m);
                if p.len() < MIN_POINTS {
                    continue;
                }
                let Some(s) = ols_slope(&p) else { continue };
                let base = points(h, base_from, r - 60);
                let base_slope = if base.len() >= MIN_POINTS {
                    ols_slope(&base)
                } else {
                    None
                };
                let span = p.last().map_or(0.0, |l| l.0) - p.first().map_or(0.0, |f| f.0);
                let first_v = p.first().map_or(0.0, |f| f.1);
                let last_v = p.last().map_or(0.0, |l| l.1);
                released.push((h.name, s, base_slope, span, first_v, last_v, p.len()));
            }
        }
    }
    let reference = median(&mut reference_slopes.clone());
    let mut hit = Vec::new();
    let mut best: Option<(f64, usize, f64)> = None;
    for (idx, &(name, s, base_slope, span, ..)) in released.iter().enumerate() {
        let against = reference.or(base_slope).unwrap_or(0.0).max(0.0);
        let score = s - against;
        if score >= params.mem_min_slope && score * span >= params.mem_min_rise {
            hit.push(name.to_string());
            if best.is_none_or(|(b, _, _)| score > b) {
                best = Some((score, idx, against));
            }
        }
    }
    let (score, idx, against) = best?;
    let (name, s, _, span, first_v, last_v, n) = released[idx];
    let reason = Reason {
        rule: Rule::HostMetric,
        summary: format!(
            "memory on {name} climbs {s:.2} points/minute since the release ({first_v:.1}% → {last_v:.1}% over {span:.0} minutes) against {against:.2} on {}",
            if reference.is_some() {
                "reference hosts"
            } else {
                "its own baseline"
            }
        ),
        severity: Severity::Critical,
        hosts: hit,
        fingerprint: None,
        metric: Some("mem_used_pct".into()),
        evidence: Evidence {
            released_after: Some(Tally {
                value: last_v,
                lines: 0,
                minutes: n as u32,
            }),
            expected: Some(against),
            observed: s,
            effect: score,
            ..Evidence::default()
        },
    };
    Some(candidate(
        "host_metric:mem_slope",
        reason,
        score,
        params.mem_min_slope,
        memory,
        None,
    ))
}

pub(super) fn volume_signal(
    hosts: &[HostView<'_>],
    first: i64,
    m: i64,
    params: &super::JudgeParams,
    memory: &AppMemory,
) -> Option<Candidate> {
    const MIN_RECENT: usize = 3;
    const MIN_BASELINE: usize = 5;
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
    let (mut ref_after, mut ref_before) = (0.0, 0.0);
    for h in hosts.iter().filter(|h| h.role == Role::Reference) {
        if let (Some((a, na)), Some((b, nb))) = (
            mean_lines(h, recent_from.max(first + warm), m),
            mean_lines(h, base_from, first - 60),
        ) && na >= MIN_RECENT
            && nb >= MIN_BASELINE
        {
            ref_after += a;
            ref_before += b;
        }
    }
    let fleet = if ref_before > 0.0 {
        (ref_after / ref_before).clamp(0.2, 5.0)
    } else {
        1.0
    };
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
