//! One round of the funnel: from the rows known so far to candidate reasons.
//!
//! Windows (all minutes inclusive, never past the judged minute `m`):
//! - a released host `h` (released at minute `r`): *before* is `[first - baseline, r)`,
//!   *after* is `[r, m]`, *settled after* skips the first `warmup` minutes, and, until
//!   the app has learned its start-up, the host's own start-up in this release while its
//!   CPU is up (host metrics have their own warm-up, and wait for its start-up by any
//!   signal: see `startup`); once it has, fewer when the host's CPU's start-up in this
//!   release ended early (`OwnStartup`);
//! - a reference host: *before* is `[first - baseline, first)`, *after* is `[first, m]`,
//!   *settled after* skips the same warm-up.
//!
//! Rows of hosts that are in neither group are ignored; missing rows are simply absent
//! from every sum (volumes are per reported minute, never zero-filled).
use std::collections::{BTreeMap, HashMap, HashSet};

use super::business;
use super::family::{self, Grouping};
use super::grid::{Grid, Groups, SigHost};
use super::signal::{Candidate, HostView, Role};
use super::signals::exceptions::new_or_dangerous;
use super::signals::host_metric::{self, memory_slope_signal, metric_signal};
use super::signals::rate::{RateSignal, rate_rule};
use super::signals::volume::volume_signal;
use super::startup;
use super::{
    AppMemory, Definition, Fingerprint, HostMinute, Learned, NullSample, ReleaseJudge, Rule,
    minute_of,
};

/// Result of a round.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub candidates: Vec<Candidate>,
    /// Every fingerprint seen in the judged windows, with the last minute.
    pub seen: HashMap<Fingerprint, i64>,
    /// Fingerprints seen in a baseline or on a reference host.
    pub outside: HashSet<Fingerprint>,
    /// Per learnable metric kind: the largest change of a released host beyond the fleet,
    /// and the largest of a reference host (normal by definition), significant or not.
    pub levels: Vec<(String, f64, f64)>,
    /// Per host metric and grade of hit: its host-minutes where nothing was released, and
    /// their hits.
    pub nulls: Vec<(String, NullSample)>,
    /// Per host metric and grade of hit: its released host-minutes past their warm-up,
    /// and their hits.
    pub released_hits: Vec<(String, NullSample)>,
    /// The longest start-up that ended among the released hosts (`startup`).
    pub startup: Option<u32>,
    /// How long past its CPU's a released host's start-up lasted, the longest
    /// (`startup::lag`).
    pub startup_lag: Option<u32>,
}

pub(crate) fn evaluate(
    judge: &ReleaseJudge,
    m: i64,
    data: &[HostMinute],
    memory: &AppMemory,
) -> Outcome {
    let params = &judge.params;
    let release = &judge.release;
    // Thresholds and history as they stood at the release's start.
    let memory = &Learned {
        memory,
        at: release.first_minute().unwrap_or(0),
    };
    let mut out = Outcome::default();

    // Roles.
    let mut hosts: Vec<HostView<'_>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut release_minute: HashMap<&str, i64> = HashMap::new();
    for b in &release.batches {
        let at = minute_of(b.at);
        for h in &b.hosts {
            if at <= m {
                let slot = release_minute.entry(h.as_str()).or_insert(at);
                *slot = (*slot).min(at);
            }
        }
    }
    let Some(first) = release_minute.values().copied().min() else {
        return out;
    };
    let mut names: Vec<(&str, Role)> = release_minute
        .iter()
        .map(|(h, &r)| (*h, Role::Released(r)))
        .collect();
    let future = release.batches.iter().flat_map(|b| b.hosts.iter());
    for h in release.reference_hosts.iter().chain(future) {
        if !release_minute.contains_key(h.as_str()) {
            names.push((h.as_str(), Role::Reference));
        }
    }
    // Stable: a released entry (pushed first) wins over a reference one.
    names.sort_by_key(|n| n.0);
    names.dedup_by(|a, b| a.0 == b.0);
    for (name, role) in names {
        index.insert(name, hosts.len());
        hosts.push(HostView {
            name,
            role,
            rows: Vec::new(),
            nb: 0.0,
            tb: 0,
            na: 0.0,
            ta: 0,
            na_all: 0.0,
            startup_until: None,
        });
    }
    let base_from = first - params.baseline_minutes * 60;
    let warm = params.warmup_minutes.max(0) * 60;
    // Per host: the first minute of its after window.
    let starts: Vec<i64> = hosts
        .iter()
        .map(|h| match h.role {
            Role::Released(r) => r,
            Role::Reference => first,
        })
        .collect();

    // The unit of work per host: log events (records) when its agent counts them (any row
    // of it in the windows has some), else lines; one unit for all of a host's minutes,
    // so a minute of continuation lines only is 0 events, not its lines.
    let counts_events: HashSet<&str> = data
        .iter()
        .filter(|r| r.events > 0 && r.minute <= m && r.minute >= base_from)
        .map(|r| r.host.as_str())
        .collect();

    // The rows to their hosts, then (once the settled windows are known) the counts.
    let n_hosts = hosts.len();
    let mut signals: HashMap<Fingerprint, Vec<SigHost>> = HashMap::new();
    let mut errors = vec![SigHost::default(); n_hosts];
    let t_len = ((m - base_from) / 60 + 1).max(1) as usize;
    let idx = |minute: i64| ((minute - base_from) / 60) as usize;
    let mut grid = Grid {
        t_len,
        lines: vec![-1.0; n_hosts * t_len],
        start: starts.iter().map(|&s| idx(s)).collect(),
        settled: Vec::new(),
        first: idx(first),
    };
    for row in data {
        if row.minute <= m
            && row.minute >= base_from
            && let Some(&i) = index.get(row.host.as_str())
        {
            hosts[i].rows.push(row);
        }
    }
    // Where each released host's start-up stands. The longest one that ended is what the
    // release teaches the app. Until the app has learned its start-up, a host's own keeps
    // its minutes out of their settled window until it ends, or until it has lasted
    // longer than any start-up is taken to (a regression from the restart on is one,
    // judged from the default warm-up on): its host metrics wait for its minutes elevated
    // by any signal (a restart's CPU storm past the default warm-up is no regression),
    // what its logs count for its minutes of elevated CPU (a restart's storm of errors
    // comes while the JVM compiles and fills its caches; a spike of a known exception on a
    // host whose CPU is calm is judged past the default warm-up, within minutes).
    //
    // Once the app has learned its start-up (and how far its logs' restart noise outlasts
    // its CPU's), a host whose CPU's start-up in this release ended has what its logs
    // count settled that lag past its end, within the configured and the learned warm-up
    // (`OwnStartup`): one stormy start-up in the app's last twenty does not keep a known
    // exception's spike from being judged for the learned warm-up on every release. A CPU
    // calm from the release tells nothing (a busy or jumpy host's CPU may not show a
    // restart at all): the learned warm-up holds.
    let holding = !judge.warmup_learned;
    let own = judge.own_startup.filter(|_| !holding);
    let stretches = startup::stretches(&hosts, first, m, params, holding || own.is_some());
    out.startup = startup::longest(&stretches);
    out.startup_lag = startup::lag(&stretches);
    let mut settled_from: Vec<i64> = Vec::with_capacity(n_hosts);
    for ((h, stretch), &start) in hosts.iter_mut().zip(stretches).zip(&starts) {
        let mut from = start + warm;
        if let Role::Released(r) = h.role {
            if holding {
                h.startup_until = startup::settles_at(r, stretch.any);
                from = from.max(startup::settles_at(r, stretch.cpu).unwrap_or(from));
            } else if let Some(own) = own
                && let startup::Stretch::Ended(1..) = stretch.cpu
                && let Some(cpu_settled) = startup::settles_at(r, stretch.cpu)
            {
                let own_from = cpu_settled + own.lag_minutes * 60;
                from = from.min(own_from.max(start + own.floor_minutes * 60));
            }
        }
        settled_from.push(from);
    }
    grid.settled = settled_from.iter().map(|&s| idx(s)).collect();
    let mut error_grid = vec![0.0; n_hosts * t_len];
    let mut signal_grids: HashMap<Fingerprint, Vec<f64>> = HashMap::new();
    for (i, host) in hosts.iter_mut().enumerate() {
        let rows = std::mem::take(&mut host.rows);
        let start = starts[i];
        for &row in &rows {
            let before = row.minute < start;
            let settled = row.minute >= settled_from[i];
            // A trace's frame lines are not work.
            let n = if counts_events.contains(host.name) {
                row.events
            } else {
                row.lines
            } as f64;
            let cell = i * t_len + idx(row.minute);
            grid.lines[cell] = grid.lines[cell].max(0.0) + n;
            error_grid[cell] += row.error_lines as f64;
            let tally = |s: &mut SigHost, k: f64| s.add(k, n, (before, settled));
            tally(&mut errors[i], row.error_lines as f64);
            for (&fp, &k) in &row.exceptions {
                if k == 0 {
                    continue;
                }
                let seen = out.seen.entry(fp).or_insert(row.minute);
                *seen = (*seen).max(row.minute);
                if before || host.role == Role::Reference {
                    out.outside.insert(fp);
                }
                let per_host = signals
                    .entry(fp)
                    .or_insert_with(|| vec![SigHost::default(); n_hosts]);
                tally(&mut per_host[i], k as f64);
                signal_grids
                    .entry(fp)
                    .or_insert_with(|| vec![0.0; n_hosts * t_len])[cell] += k as f64;
            }
            if before {
                host.nb += n;
                host.tb += 1;
            } else {
                host.na_all += n;
                if settled {
                    host.na += n;
                    host.ta += 1;
                }
            }
        }
        host.rows = rows;
    }

    let released: Vec<usize> = (0..n_hosts)
        .filter(|&i| matches!(hosts[i].role, Role::Released(_)))
        .collect();
    let reference: Vec<usize> = (0..n_hosts)
        .filter(|&i| hosts[i].role == Role::Reference)
        .collect();
    let sum = |set: &[usize], f: &dyn Fn(usize) -> f64| set.iter().map(|&i| f(i)).sum::<f64>();
    let group_lines = [
        sum(&released, &|i| hosts[i].nb),
        sum(&released, &|i| hosts[i].na),
        sum(&reference, &|i| hosts[i].nb),
        sum(&reference, &|i| hosts[i].na),
    ];
    let group_minutes = |set: &[usize], after: bool| -> u32 {
        set.iter()
            .map(|&i| if after { hosts[i].ta } else { hosts[i].tb })
            .sum()
    };
    let minutes = [
        group_minutes(&released, false),
        group_minutes(&released, true),
        group_minutes(&reference, false),
        group_minutes(&reference, true),
    ];

    // Rules 1–3 over exceptions, then error lines. Fingerprints of one failure (the same
    // definition, or one family whose frameless shape is in the windows: `family`) are
    // judged together: rules 1 and 2 per shape, rule 3 per counting key.
    let grouping = Grouping::new(&judge.definitions, signals.keys().copied());
    let mut shape_members: BTreeMap<Fingerprint, Vec<Fingerprint>> = BTreeMap::new();
    let mut key_members: BTreeMap<Fingerprint, Vec<Fingerprint>> = BTreeMap::new();
    for &fp in signals.keys() {
        shape_members
            .entry(grouping.shape_of(fp))
            .or_default()
            .push(fp);
        key_members.entry(grouping.key_of(fp)).or_default().push(fp);
    }
    // Counters of shapes and keys of more than one fingerprint, summed cell by cell.
    let merge = |members: &[Fingerprint]| -> (Vec<SigHost>, Vec<f64>) {
        let mut values = vec![0.0; n_hosts * t_len];
        for fp in members {
            if let Some(g) = signal_grids.get(fp) {
                values.iter_mut().zip(g).for_each(|(v, k)| *v += k);
            }
        }
        (grid.tally(&values), values)
    };
    let merged_shapes: HashMap<Fingerprint, Vec<SigHost>> = shape_members
        .iter()
        .filter(|(_, m)| m.len() > 1)
        .map(|(&shape, m)| (shape, merge(m).0))
        .collect();
    let merged_keys: HashMap<Fingerprint, (Vec<SigHost>, Vec<f64>)> = key_members
        .iter()
        .filter(|(_, m)| m.len() > 1)
        .map(|(&key, m)| (key, merge(m)))
        .collect();
    let after_of =
        |per_host: &[SigHost]| -> f64 { released.iter().map(|&i| per_host[i].ka_all).sum() };
    let known_by_id = |fp: Fingerprint| judge.known.contains(&fp) || memory.knows(fp);
    // A shape is known when one of its fingerprints is in a baseline, on a reference host
    // or in the app's history; one seen on released hosts that is not may still be known
    // by definition or family.
    let mut shape_known: HashMap<Fingerprint, bool> = HashMap::new();
    let mut unresolved: Vec<(Fingerprint, &Definition)> = Vec::new();
    for (&shape, members) in &shape_members {
        let Some(per_host) = merged_shapes.get(&shape).or_else(|| signals.get(&shape)) else {
            continue;
        };
        let known = per_host.iter().any(|s| s.kb > 0.0)
            || reference.iter().any(|&i| per_host[i].ka_all > 0.0)
            || members.iter().any(|&fp| known_by_id(fp));
        if !known
            && after_of(per_host) > 0.0
            && let Some(d) = judge.definitions.get(&shape)
        {
            unresolved.push((shape, d));
        }
        shape_known.insert(shape, known);
    }
    if !unresolved.is_empty() {
        let outside = &out.outside;
        let covered = family::covered(&judge.definitions, unresolved.iter().map(|u| u.1), |fp| {
            outside.contains(&fp) || known_by_id(fp)
        });
        for ((shape, _), c) in unresolved.iter().zip(covered) {
            shape_known.insert(*shape, c);
        }
    }
    let is_known = |shape: &Fingerprint| shape_known.get(shape).copied().unwrap_or(false);
    let groups = Groups {
        hosts: &hosts,
        grid: &grid,
        released: &released,
        reference: &reference,
    };
    // The exceptions the sequential rate test looks at this round, and error lines, share
    // its budget.
    let tests = key_members.len() + 1;
    // What the rates are per, in the summaries: over the hosts with rows this round.
    let (with_events, with_rows) = hosts
        .iter()
        .filter(|h| !h.rows.is_empty())
        .fold((0, 0), |(e, r), h| {
            (e + usize::from(counts_events.contains(h.name)), r + 1)
        });
    let unit = if with_events == 0 {
        "lines"
    } else if with_events == with_rows {
        "events"
    } else {
        "events (lines where not counted)"
    };
    for (&key, members) in &key_members {
        let mut shapes: Vec<Fingerprint> = members.iter().map(|&f| grouping.shape_of(f)).collect();
        shapes.sort_unstable();
        shapes.dedup();
        for shape in shapes.iter().filter(|s| !is_known(s)) {
            let Some(per_host) = merged_shapes.get(shape).or_else(|| signals.get(shape)) else {
                continue;
            };
            if after_of(per_host) > 0.0 {
                out.candidates.extend(new_or_dangerous(
                    judge,
                    *shape,
                    per_host,
                    &hosts,
                    &released,
                    group_lines,
                    minutes,
                    memory,
                ));
            }
        }
        // More of a known exception: only for keys with a known shape.
        if !shapes.iter().any(is_known) {
            continue;
        }
        let (per_host, values) = match merged_keys.get(&key) {
            Some((p, v)) => (p, v),
            None => match (signals.get(&key), signal_grids.get(&key)) {
                (Some(p), Some(v)) => (p, v),
                _ => continue,
            },
        };
        if after_of(per_host) <= 0.0 {
            continue;
        }
        let class = judge
            .definitions
            .get(&key)
            .map_or("unknown exception", |d| d.class.as_str());
        let label = if grouping.is_family(key) {
            format!(
                "{class} (frameless and full traces summed, {} fingerprints)",
                members.len()
            )
        } else if members.len() > 1 {
            format!(
                "{class} ({} fingerprints with one definition)",
                members.len()
            )
        } else {
            class.to_string()
        };
        out.candidates.extend(rate_rule(
            RateSignal {
                rule: Rule::ExceptionRate,
                label: &label,
                fingerprint: Some(key),
                members,
                unit,
            },
            (values, per_host),
            groups,
            tests,
            params,
            memory,
        ));
    }
    // Error lines: the same two tests, the sequential one's evidence past the bar and
    // risen with each of its last three minutes before it blocks (see
    // `ERROR_PERSIST_MINUTES`: a restart's complaints swell error lines for a minute or
    // two past an app's usual start-up now and then).
    out.candidates.extend(rate_rule(
        RateSignal {
            rule: Rule::ErrorRate,
            label: "error lines",
            fingerprint: None,
            members: &[],
            unit,
        },
        (&error_grid, &errors),
        groups,
        tests,
        params,
        memory,
    ));

    // Rule 4: host metrics.
    for metric in host_metric::METRICS {
        let seen = metric_signal(metric, &hosts, first, m, params, memory);
        out.levels.extend(seen.level);
        out.nulls.extend(seen.null);
        out.released_hits.extend(seen.released);
        out.candidates.extend(seen.candidate);
    }
    if let Some(c) = memory_slope_signal(&hosts, first, m, params, memory) {
        out.candidates.push(c);
    }
    let windows = grid.windows(&released, &reference);
    // Rule 5: log volume.
    if let Some(c) = volume_signal(&hosts, &grid.lines, &windows, params, memory) {
        out.candidates.push(c);
    }
    // Business signals, where hosts report requests.
    if let Some(traffic) = business::Traffic::new(&hosts, base_from, t_len) {
        let slow_settled: Vec<usize> = grid
            .start
            .iter()
            .map(|&s| s + params.metric_warmup().max(0) as usize)
            .collect();
        out.candidates.extend(business::signals(
            &hosts,
            &traffic,
            &windows,
            &slow_settled,
            params,
            memory,
        ));
    }
    out
}
