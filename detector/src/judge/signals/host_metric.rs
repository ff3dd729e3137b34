//! `host_metric`: CPU, load and disk busy by a calibrated sequential test, host-minute by
//! host-minute; memory by its slope.
//!
//! **CPU, load, disk busy.** Every host-minute of the window gets a *residual*: its value
//! minus what its own level before its release (the median of its baseline minutes)
//! predicts for the work it did in that minute, minus the reference hosts' median residual
//! in the same minute (difference in differences; a reference host is compared with the
//! others). For CPU and load the prediction may grow with the work: a host answering 60 %
//! more requests (or logging 60 % more events, or lines, where it has no access log) than
//! its baseline median may use up to 60 % more, and one with 30 % less work 30 % less
//! (the work scale is taken between ×¼ and ×4). A reference host that lost work to the
//! released ones uses less for it: taken as a change of the whole fleet, its drop would
//! make the released hosts' unchanged cost per unit of work look higher. How much of a host's level grows with its work (its requests' cost, against
//! what it spends whatever the traffic) is not known, and a baseline hour, whose work
//! hardly varies, does not tell it; so the residual is taken under both ends, "all of the
//! level grows with the work" and "none of it does", each with the reference hosts'
//! residual of that model taken off, and the smaller counts. A traffic shift between the
//! groups is no fault under the first; a fleet-wide rise that adds as much CPU to every
//! host, a near-idle host too, is none under the second; more CPU per unit of work is one
//! under both.
//!
//! A host-minute *hits* when its residual reaches the metric's minimum effect (12 points
//! of CPU or disk busy; load: 0.8 and 60 % of the host's level) and three times the host's
//! own robust noise before its release. With no release effect, released host-minutes hit
//! as often as host-minutes did where nothing changed: every host's minutes before its own
//! release (a reference host's, before the first batch), in this release and, faded, in
//! the app's earlier ones (`AppMemory::null_hits`: one baseline hour bounds a rare hit
//! only to a few in a hundred, which costs every regression minutes). That rate `p₀` is
//! bounded above (one-sided Clopper–Pearson at level `δ`; never below the rate this
//! release's own baselines show), and the released host-minutes after their warm-up are
//! tested against it by a likelihood ratio mixed over hit rates of 25 % to 95 % (a partial
//! fault hits some hosts only). With independent host-minutes that ratio is a martingale
//! under no effect, and by Ville's inequality the chance that it *ever* reaches `1/α` is at
//! most `α`, however many rounds look; `α + δ` bounds the metric's false blocks. Half of
//! the evidence is that ratio over the released hosts' minutes together, half the mean of
//! the same ratio over each released host's own minutes (against `p₀`, or the host's own
//! hit rate before its release where that is higher, a point estimate, so that half is
//! approximate where a host's baseline is short): a regression on one released host of
//! four is not diluted by the other three's minutes (a host still in its warm-up is no
//! evidence yet), and a mean of martingales built on the same minutes is one, as is an
//! equal mixture of it with the pooled one.
//!
//! A hit of CPU or disk busy has two grades: past the bar above, and past twice it (twice
//! its minimum effect and six times its noise). Each grade is its own test, with its own
//! rate and runs where nothing changed (the app's history keeps both, the second as
//! `host_metric:<metric>:strong`), at half the metric's `α` and `δ`; the stronger evidence
//! of the two counts. (Load has no ceiling, and a near-idle host's bursts reach twice its
//! bar as often as the bar: it keeps one grade.) An app whose bursts reach the bar in long
//! runs makes each first-grade hit weak evidence; a regression of twice the bar, which
//! those bursts rarely reach, is then judged on the second grade, whose hits are rare
//! where nothing changed, and blocks in minutes rather than tens of minutes.
//!
//! Where that is approximate: a workload's bursts last several minutes, so hits come in
//! runs. Counts are divided by `2L − 1`, the variance inflation of a two-state Markov
//! chain whose runs of hits last `L` minutes on average where nothing changed (a run of
//! hits is evidence about once, as a burst of one failure's traces is for the rate test). The level is estimated from the baseline and rounds recompute the test from the
//! stored minutes, as the rate test does.
//!
//! The three metrics share [`HOST_METRIC_SHARE`] of the release's false-block budget
//! equally, each grade's part of it half for `α` and half for `δ`. With reference hosts a
//! pass of the bar blocks at once; without them nothing controls for a change of the
//! whole fleet, and a pass must last [`JudgeParams::metric_rounds_needed`] rounds, then
//! the window's.
//!
//! What the app learned from feedback holds a pass of the bar back when the top released
//! host's recent effect is below the app's learned threshold, but only while the evidence
//! is modest: with reference hosts, at [`LEARNED_YIELDS_AT`] times the bar (with no
//! effect, a chance of a hundredth of `α` of ever getting there) it blocks whatever was
//! learned, so no feedback switches a metric off where the fleet has a control. (Without
//! one, a change of the whole fleet, as an idle app going busy, is no regression, and the
//! learned threshold stands.) A false alarm on a metric teaches its hit rate too: the
//! released host-minutes of that release join the app's history of minutes where nothing
//! was wrong, and their runs its run length, so the same behaviour needs that much more
//! evidence again (and every later regression of that metric somewhat more, until
//! normal releases dilute it).
//!
//! **Memory** is judged by its slope after the release above the reference hosts' median
//! slope (at least [`JudgeParams::mem_min_slope`] a minute and
//! [`JudgeParams::mem_min_rise`] in all), over
//! [`JudgeParams::metric_rounds_needed`] consecutive rounds: not a calibrated test.

use crate::judge::sequential::{HIT_RATES, hit_mixture, hits_pooled_and_each};
use crate::judge::signal::{Candidate, HostView, Role, candidate};
use crate::judge::stats::{
    binomial_upper_bound, mad_sd, median, median_without, ols_slope, quantile,
};
use crate::judge::{
    Evidence, HostMinute, JudgeParams, Learned, NullSample, Reason, Rule, Severity, Tally,
};

/// Share of the release's false-block budget spent by CPU, load and disk busy together.
pub(crate) const HOST_METRIC_SHARE: f64 = 0.2;

/// The learnable kind of memory's slope.
const MEMORY_KIND: &str = "host_metric:mem_slope";

/// The metrics of the calibrated test.
pub(crate) const METRICS: [&str; 3] = ["cpu_pct", "load1", "disk_busy_pct"];

/// Largest growth of a host's work credited to its CPU or load (and its inverse, the
/// largest loss).
const MAX_WORK_SCALE: f64 = 4.0;

/// A hit is at least this many times the host's robust noise before its release.
const HIT_NOISE: f64 = 3.0;

/// Grades of a hit: a host-minute hits at a grade when its residual reaches the grade
/// times the hit's bar (the metric's minimum effect and [`HIT_NOISE`] times the host's
/// noise). Each grade is a sequential test of its own, with its own rate and runs where
/// nothing changed, sharing the metric's `α` and `δ`: a regression of twice the bar hits
/// the second grade, which an app's bursts reach far more rarely than the first, and
/// its evidence grows that much faster.
const GRADES: [f64; 2] = [1.0, 2.0];

/// The grades a metric is judged on. CPU and disk busy are shares of time, bounded, and
/// twice their bar (24 points) is a rise few bursts reach. Load has no ceiling: a
/// near-idle host's load of 0 is one of 2 with two threads runnable, twice its bar
/// (1.6) is no rarer in its bursts than the bar is, and a second grade for it blocked
/// benign releases (all the second grade's new false blocks on the replay benchmark's
/// tuning seeds and first report seed were load's); it keeps the first grade alone.
fn grades(metric: &str) -> &'static [f64] {
    if metric.ends_with("_pct") {
        &GRADES
    } else {
        &GRADES[..1]
    }
}

/// The suffix of a grade's learnable kind: the first grade's is the metric's own.
const GRADE_SUFFIX: [&str; 2] = ["", ":strong"];

/// The metric's kind a grade's kind belongs to (`host_metric:cpu_pct:strong` is
/// `host_metric:cpu_pct`'s).
pub(crate) fn metric_kind_of(kind: &str) -> &str {
    kind.strip_suffix(GRADE_SUFFIX[1]).unwrap_or(kind)
}

/// Fewest host-minutes where nothing changed that tell how often they hit; below, `p₀`
/// is taken as one in five.
const MIN_NULL_MINUTES: usize = 30;

/// Evidence this many times the bar blocks whatever the app's learned threshold: with no
/// effect, its chance of ever being reached is a hundredth of the metric's `α`.
pub(crate) const LEARNED_YIELDS_AT: f64 = 100.0;

/// Quantile of a host's recent residuals shown as its effect (a fault that comes and goes
/// still shows).
const RECENT_QUANTILE: f64 = 0.75;

/// Minimum robust noise per metric, so a flat baseline does not make every wiggle huge.
fn noise_floor(metric: &str, level: f64) -> f64 {
    match metric {
        "cpu_pct" | "disk_busy_pct" => 2.0,
        "load1" => (0.1 * level).max(0.1),
        _ => 1.0,
    }
}

/// The metric's minimum effect for a host whose level before its release is `level`.
fn min_effect(metric: &str, level: f64, params: &JudgeParams) -> f64 {
    match metric {
        "cpu_pct" => params.cpu_min_points,
        "disk_busy_pct" => params.disk_min_points,
        _ => params.load_min_abs.max(params.load_min_rel * level),
    }
}

/// The most a metric can read: 100 for a share of time (CPU, disk busy), none for load.
fn ceiling(metric: &str) -> f64 {
    if metric.ends_with("_pct") {
        100.0
    } else {
        f64::INFINITY
    }
}

/// One host's minutes of one metric: `(minute, value less what its level predicts)`.
struct Track<'a> {
    name: &'a str,
    released: bool,
    /// First minute of its after window, and past its warm-up.
    start: i64,
    settled: i64,
    level: f64,
    /// Per minute, in minute order: its residual with the level grown by the work, its
    /// residual against the level as it was (no part of the level grows with the work),
    /// and the work scale.
    minutes: Vec<Minute>,
}

/// One host-minute of a [`Track`].
#[derive(Debug, Clone, Copy)]
struct Minute {
    at: i64,
    /// Value less the level times the work scale (every part of the level grows with the
    /// work), and value less the level (no part does).
    scaled: f64,
    flat: f64,
    scale: f64,
}

/// The unit of work of a host's rows for CPU and load: requests where its access log
/// covers both windows, else log events where its agent counts them, else lines.
fn work_of<'r>(rows: &[&'r HostMinute], start: i64) -> impl Fn(&HostMinute) -> Option<f64> + 'r {
    let has_requests = |before: bool| {
        rows.iter().any(|r| {
            (r.minute < start) == before && r.requests.as_ref().is_some_and(|q| q.count > 0)
        })
    };
    let requests = has_requests(true) && has_requests(false);
    let events = rows.iter().any(|r| r.events > 0);
    move |r: &HostMinute| {
        if requests {
            r.requests.as_ref().map(|q| q.count as f64)
        } else {
            Some(if events { r.events } else { r.lines } as f64)
        }
    }
}

fn track<'a>(
    h: &HostView<'a>,
    metric: &str,
    first: i64,
    m: i64,
    params: &JudgeParams,
) -> Option<Track<'a>> {
    let base_from = first - params.baseline_minutes * 60;
    let start = match h.role {
        Role::Released(r) => r,
        Role::Reference => first,
    };
    let rows: Vec<&HostMinute> = h
        .rows
        .iter()
        .copied()
        .filter(|r| r.minute >= base_from && r.minute <= m)
        .collect();
    let mut before: Vec<f64> = rows
        .iter()
        .filter(|r| r.minute < start)
        .filter_map(|r| r.host_metrics.get(metric))
        .collect();
    if before.len() < params.metric_min_minutes {
        return None;
    }
    let level = median(&mut before)?;
    let scales = matches!(metric, "cpu_pct" | "load1");
    let ceiling = ceiling(metric);
    let work = work_of(&rows, start);
    let mut base_work: Vec<f64> = rows
        .iter()
        .filter(|r| r.minute < start)
        .filter_map(|r| work(r))
        .collect();
    let base_work = median(&mut base_work).filter(|w| *w > 0.0);
    let mut minutes: Vec<Minute> = rows
        .iter()
        .filter_map(|r| {
            let v = r.host_metrics.get(metric)?;
            let scale = match (scales, base_work, work(r)) {
                (true, Some(b), Some(w)) => (w / b).clamp(1.0 / MAX_WORK_SCALE, MAX_WORK_SCALE),
                _ => 1.0,
            };
            // A share of time cannot pass 100 %: more work than that is not expected of
            // it (else a saturated host's residual sinks, and so does the reference
            // hosts' median, whose differences are then noise).
            Some(Minute {
                at: r.minute,
                scaled: v - (level * scale).min(ceiling),
                flat: v - level,
                scale,
            })
        })
        .collect();
    minutes.sort_by_key(|x| x.at);
    minutes.dedup_by_key(|x| x.at);
    Some(Track {
        name: h.name,
        released: matches!(h.role, Role::Released(_)),
        start,
        settled: h
            .startup_until
            .unwrap_or(i64::MIN)
            .max(start + params.metric_warmup() * 60),
        level,
        minutes,
    })
}

/// What a round found of one metric.
#[derive(Debug, Default)]
pub(crate) struct MetricRound {
    pub candidate: Option<Candidate>,
    /// The metric's kind, the largest recent effect of a released host and of a reference
    /// host, for learning.
    pub level: Option<(String, f64, f64)>,
    /// Per grade, its kind and its host-minutes where nothing was released, for learning.
    pub null: Vec<(String, NullSample)>,
    /// Per grade, its kind and its released host-minutes past their warm-up, with their
    /// hits and runs: minutes where nothing was wrong once users call the release normal.
    pub released: Vec<(String, NullSample)>,
}

/// One host's residuals beyond the reference hosts, and the bar of its hits.
struct Adjusted<'a> {
    name: &'a str,
    released: bool,
    start: i64,
    settled: i64,
    hit_at: f64,
    minutes: Vec<(i64, f64)>,
}

/// What one grade's hits count: where nothing changed (this release's baselines, and
/// their minutes the app's history has not counted yet) and on the released hosts past
/// their warm-up.
#[derive(Default)]
struct GradeCounts<'a> {
    own: NullSample,
    fresh: NullSample,
    released: NullSample,
    /// Per released host: its own hits and minutes past its warm-up, and its hit rate
    /// before its release; and its name.
    each: Vec<(f64, f64, f64)>,
    each_hosts: Vec<&'a str>,
    hit_hosts: Vec<&'a str>,
}

fn count_grade<'a>(hosts: &[Adjusted<'a>], grade: f64, fresh_from: i64) -> GradeCounts<'a> {
    let mut c = GradeCounts::default();
    let one = |hit: bool, run: bool| NullSample {
        minutes: 1.0,
        hits: f64::from(u8::from(hit)),
        runs: f64::from(u8::from(run)),
    };
    for t in hosts {
        let hit_at = grade * t.hit_at;
        let mut previous_hit: Option<i64> = None;
        let mut host_hit = false;
        let (mut before, mut after) = (NullSample::default(), NullSample::default());
        for &(minute, r) in &t.minutes {
            let hit = r >= hit_at;
            let starts_run = hit && previous_hit != Some(minute - 60);
            if minute < t.start {
                before = before.plus(one(hit, starts_run));
                c.own = c.own.plus(one(hit, starts_run));
                if minute >= fresh_from {
                    c.fresh = c
                        .fresh
                        .plus(one(hit, starts_run || (hit && minute - 60 < fresh_from)));
                }
            } else if t.released && minute >= t.settled {
                // A run that began in the warm-up starts one here.
                let counted = one(hit, hit && (starts_run || minute - 60 < t.settled));
                c.released = c.released.plus(counted);
                after = after.plus(counted);
                host_hit |= hit;
            }
            previous_hit = if hit { Some(minute) } else { previous_hit };
        }
        // Every released host, one not past its warm-up yet too: no evidence so far.
        if t.released {
            c.each.push((after.hits, after.minutes, before.rate()));
            c.each_hosts.push(t.name);
        }
        if host_hit {
            c.hit_hosts.push(t.name);
        }
    }
    c
}

/// One grade's sequential test: its counts, the app's history it pooled with them, the
/// runs' inflation the counts were divided by, the rate bound and the evidence (ln e).
struct GradeTest<'a> {
    grade: f64,
    counts: GradeCounts<'a>,
    history: NullSample,
    run: f64,
    p0: f64,
    log_e: f64,
}

/// The calibrated test of one metric (CPU, load or disk busy).
pub(crate) fn metric_signal(
    metric: &str,
    hosts: &[HostView<'_>],
    first: i64,
    m: i64,
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> MetricRound {
    let mut round = MetricRound::default();
    let tracks: Vec<Track<'_>> = hosts
        .iter()
        .filter_map(|h| track(h, metric, first, m, params))
        .collect();
    if !tracks.iter().any(|t| t.released) {
        return round;
    }
    let with_reference = tracks.iter().any(|t| !t.released);
    // The reference hosts' residuals per minute, sorted, under each of the two models.
    let base_from = first - params.baseline_minutes * 60;
    let t_len = ((m - base_from) / 60 + 1).max(1) as usize;
    let mut scaled: Vec<Vec<f64>> = vec![Vec::new(); t_len];
    let mut flat: Vec<Vec<f64>> = vec![Vec::new(); t_len];
    for t in tracks.iter().filter(|t| !t.released) {
        for x in &t.minutes {
            let at = ((x.at - base_from) / 60) as usize;
            if let (Some(s), Some(f)) = (scaled.get_mut(at), flat.get_mut(at)) {
                s.push(x.scaled);
                f.push(x.flat);
            }
        }
    }
    for cell in scaled.iter_mut().chain(&mut flat) {
        cell.sort_by(f64::total_cmp);
    }
    let shift = |grid: &[Vec<f64>], minute: i64, own: Option<f64>| -> f64 {
        grid.get(((minute - base_from) / 60) as usize)
            .and_then(|cell| median_without(cell, own))
            .unwrap_or(0.0)
    };
    // A host-minute's residual beyond the reference hosts' in the same minute, under the
    // model that calls it smaller: how much of a host's level grows with its work (its
    // requests' cost, against what it spends whatever the traffic) is not known, and a
    // baseline hour, whose work hardly varies, does not tell it. So more CPU or load is
    // a hit only if it is more than both "all of the level grows with the work" and
    // "none of it does" expect, each with the reference hosts' change of that model
    // taken off. A fleet-wide surge that adds as much to every host (a near-idle host
    // too) is none under the second; a traffic shift towards the released hosts is none
    // under the first. Reference hosts that lost work may use less under the first; but
    // one whose CPU did not follow its lost work is no rise of the fleet (its change
    // under the first is never taken above the second's, nor above 0), or a regression
    // on the released hosts would hide behind it.
    let beyond_reference = |x: &Minute, released: bool| -> f64 {
        let own = |v: f64| (!released).then_some(v);
        let fleet_flat = shift(&flat, x.at, own(x.flat));
        let a = x.scaled - shift(&scaled, x.at, own(x.scaled)).min(fleet_flat.max(0.0));
        let b = x.flat - fleet_flat;
        a.min(b)
    };
    // Each grade's test spends an equal part of the metric's share, half of it for `α`,
    // half for `δ`.
    let grades = grades(metric);
    let alpha = params.false_block_budget * HOST_METRIC_SHARE
        / (2.0 * METRICS.len() as f64 * grades.len() as f64);
    let bar = (1.0 / alpha).ln();
    let mut released_effect = f64::NEG_INFINITY;
    let mut reference_effect = f64::NEG_INFINITY;
    let mut top: Option<(f64, usize)> = None; // (effect, track)
    let recent_from = m - (params.metric_recent_minutes - 1) * 60;
    let mut min_abs_top = min_effect(metric, 0.0, params);
    let mut adjusted: Vec<Adjusted<'_>> = Vec::with_capacity(tracks.len());
    for (i, t) in tracks.iter().enumerate() {
        let minutes: Vec<(i64, f64)> = t
            .minutes
            .iter()
            .map(|x| (x.at, beyond_reference(x, t.released)))
            .collect();
        let before: Vec<f64> = minutes
            .iter()
            .filter(|a| a.0 < t.start)
            .map(|a| a.1)
            .collect();
        let min_abs = min_effect(metric, t.level, params);
        let noise = mad_sd(&before)
            .unwrap_or(0.0)
            .max(noise_floor(metric, t.level));
        let mut recent: Vec<f64> = minutes
            .iter()
            .filter(|a| a.0 >= recent_from.max(t.settled))
            .map(|a| a.1)
            .collect();
        adjusted.push(Adjusted {
            name: t.name,
            released: t.released,
            start: t.start,
            settled: t.settled,
            hit_at: min_abs.max(HIT_NOISE * noise),
            minutes,
        });
        let Some(effect) = quantile(&mut recent, RECENT_QUANTILE) else {
            continue;
        };
        if t.released {
            released_effect = released_effect.max(effect);
            if top.is_none_or(|(e, _)| effect > e) {
                top = Some((effect, i));
                min_abs_top = min_abs;
            }
        } else {
            reference_effect = reference_effect.max(effect);
        }
    }
    let kind = format!("host_metric:{metric}");
    round.level = Some((kind.clone(), released_effect, reference_effect));
    // Hits come in runs: counts are divided by the variance inflation of a two-state
    // Markov chain whose runs of hits last `L` minutes on average where nothing changed,
    // `(1 + ρ) / (1 − ρ)` with `ρ = 1 − 1/L`, that is `2L − 1`.
    let inflation = |s: NullSample| {
        if s.runs > 0.0 {
            2.0 * (s.hits / s.runs).max(1.0) - 1.0
        } else {
            1.0
        }
    };
    let fresh_from = memory.memory.null_from;
    let mut best: Option<GradeTest<'_>> = None;
    for (g, &grade) in grades.iter().enumerate() {
        let counts = count_grade(&adjusted, grade, fresh_from);
        let grade_kind = format!("{kind}{}", GRADE_SUFFIX[g]);
        round.null.push((grade_kind.clone(), counts.own));
        round.released.push((grade_kind.clone(), counts.released));
        // How often a host-minute hits where nothing changed: bounded above from this
        // release's baselines and the app's earlier ones together (each release's hour
        // alone bounds a rare hit only to a few in a hundred), never below the rate this
        // release's own baselines show. An app that learned before the second grade
        // existed has its first grade's history only: its hits and runs bound the
        // second's (a hit of twice the bar is a hit of the bar).
        let history = memory
            .memory
            .null_hits
            .get(&grade_kind)
            .or_else(|| memory.memory.null_hits.get(&kind))
            .copied()
            .unwrap_or_default();
        let pooled = counts.fresh.plus(history);
        // Runs as long as either sample shows them: a baseline hour that caught no hit
        // says nothing of how long the app's hits last when they come. (Where a grade
        // never hit, its hits count as single minutes: taking the first grade's runs
        // instead, the same bursts at a lower bar, cost the second grade all of its
        // speed on the replay benchmark, whose calibration runs showed no false blocks
        // from it: 9 of 5,000 against 10 and 14 against 14.)
        let run = inflation(counts.own).max(inflation(pooled));
        if counts.released.hits <= 0.0 {
            continue;
        }
        let own = counts.own;
        let p0 = if pooled.minutes / run >= MIN_NULL_MINUTES as f64 {
            binomial_upper_bound(pooled.hits / run, pooled.minutes / run, alpha).max(own.rate())
        } else {
            0.2
        }
        .clamp(0.002, 0.99);
        let x = counts.released.hits;
        let n = counts.released.minutes;
        let Some(pooled) = hit_mixture(x / run, n / run, p0, &HIT_RATES) else {
            continue;
        };
        // Half of the evidence from the released hosts' minutes together, half from the
        // mean of each one's own test (see `hits_pooled_and_each`): a regression on one
        // released host of several is not diluted by the others' minutes.
        let log_e = if counts.each.len() >= 2 {
            hits_pooled_and_each((x, n), &counts.each, p0, run)
        } else {
            pooled
        };
        if best.as_ref().is_none_or(|b| log_e > b.log_e) {
            best = Some(GradeTest {
                grade,
                counts,
                history,
                run,
                p0,
                log_e,
            });
        }
    }
    let Some(GradeTest {
        grade,
        counts,
        history,
        run,
        p0,
        log_e,
    }) = best.filter(|b| b.log_e >= 0.5 * bar)
    else {
        return round;
    };
    let Some((effect, i)) = top else {
        return round;
    };
    let (x, n) = (counts.released.hits, counts.released.minutes);
    let (kb, nb, runs) = (counts.own.hits, counts.own.minutes, counts.own.runs);
    let hit_hosts = counts.hit_hosts;
    let each_note = if counts.each.len() >= 2 {
        counts
            .each
            .iter()
            .zip(&counts.each_hosts)
            .max_by(|a, b| a.0.0.total_cmp(&b.0.0))
            .map_or(String::new(), |(&(xh, nh, own), name)| {
                format!(
                    "; half of the evidence from each released host's own minutes (most: {name}, {xh:.0} of {nh:.0}, held to a hit rate of {:.4})",
                    p0.max(own).min(0.99)
                )
            })
    } else {
        String::new()
    };
    let t = &tracks[i];
    let mut scales: Vec<f64> = t
        .minutes
        .iter()
        .filter(|x| x.at >= recent_from.max(t.settled))
        .map(|x| x.scale)
        .collect();
    let scale = median(&mut scales).unwrap_or(1.0);
    let work_note = if scale > 1.0 {
        format!(
            ", {:.2} expected for {scale:.2}× the work",
            (t.level * scale).min(ceiling(metric))
        )
    } else {
        String::new()
    };
    let history_note = if history.minutes >= 1.0 {
        format!(
            " and {:.0} of {:.0} in {:.0} runs in the app's earlier releases",
            history.hits, history.minutes, history.runs
        )
    } else {
        String::new()
    };
    let reference_note = if with_reference {
        "the reference hosts' change in the same minutes"
    } else {
        "no reference hosts"
    };
    let grade_note = if grade > 1.0 { " twice" } else { "" };
    let hit_noise = grade * HIT_NOISE;
    let at_least = grade * min_abs_top;
    let summary = format!(
        "{metric} on released hosts: {x:.0} of {n:.0} host-minutes past their warm-up{grade_note} above what their level before the release, their work and {reference_note} predict (at least {at_least:.2} and {hit_noise:.0}× their noise), where {kb:.0} of {nb:.0} host-minutes were with nothing released (in {runs:.0} runs){history_note}: a hit rate of at most {p0:.4}, counts divided by {run:.1} as hits come in runs; {} recently {effect:+.2} beyond its level {:.2}{work_note}{each_note}; sequential test e={:.3e} against 1/α={:.3e}",
        t.name,
        t.level,
        log_e.min(700.0).exp(),
        1.0 / alpha,
    );
    let reason = Reason {
        rule: Rule::HostMetric,
        summary,
        severity: Severity::Critical,
        hosts: hit_hosts.iter().map(|h| h.to_string()).collect(),
        fingerprint: None,
        metric: Some(metric.to_string()),
        evidence: Evidence {
            released_before: Some(Tally {
                value: t.level,
                lines: 0,
                minutes: nb as u32,
            }),
            released_after: Some(Tally {
                value: t.level + effect,
                lines: 0,
                minutes: n as u32,
            }),
            expected: Some(t.level),
            observed: t.level + effect,
            effect,
            dispersion: Some(run),
            ..Evidence::default()
        }
        .sequential(log_e, alpha),
    };
    let mut c = candidate(&kind, reason, effect, min_abs_top, memory, None);
    if log_e < bar {
        c.suspicious = false;
        c.reason.severity = Severity::Warning;
    } else if !c.suspicious
        && with_reference
        && log_e >= bar + LEARNED_YIELDS_AT.ln()
        && effect >= min_abs_top
    {
        // Evidence a hundred times the bar, beyond what the reference hosts did: no
        // learned threshold holds it back. (Without reference hosts nothing tells a
        // change of the whole fleet, as an idle app going busy, from a regression, and
        // the learned threshold stands.)
        c.suspicious = true;
        c.reason.severity = Severity::Critical;
        c.reason.summary.push_str(&format!(
            "; {LEARNED_YIELDS_AT:.0}× the bar: the app's learned threshold does not hold it back"
        ));
    }
    c.immediate = c.suspicious && with_reference;
    round.candidate = Some(c);
    round
}

/// Memory: the slope after the release above the reference hosts' (or its own baseline's).
pub(crate) fn memory_slope_signal(
    hosts: &[HostView<'_>],
    first: i64,
    m: i64,
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Option<Candidate> {
    const MIN_POINTS: usize = 8;
    // A restarted JVM's heap fills for minutes whatever its logs and CPU say: memory's
    // slope skips at least the default warm-up, even when the app learned a shorter one.
    let warm = params
        .metric_warmup()
        .max(JudgeParams::default().metric_warmup())
        * 60;
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
        MEMORY_KIND,
        reason,
        score,
        params.mem_min_slope,
        memory,
        None,
    ))
}
