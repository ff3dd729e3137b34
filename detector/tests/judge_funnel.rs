//! The judgement funnel, signal by signal, on small hand-built fleets.

use std::collections::{BTreeMap, HashMap, HashSet};

use vigil_detector::judge::{
    AppMemory, Batch, Decision, Definition, Feedback, HostMetrics, HostMinute, LEARNED_HALF_LIFE,
    NullSample, Reason, Release, ReleaseJudge, Verdict, fingerprint_hex,
};

/// Minute of the first batch.
const T0: i64 = 1_763_880_000;
const KNOWN: u64 = 0x0b5e_3c1d_2a4f_6e88;
const DANGER: u64 = 0x9f3a_5c0e_11d2_b7a4;
const FRESH: u64 = 0x1234_5678_9abc_def0;

/// A deterministic fleet: `hosts` hosts from 30 minutes before `T0` to 60 minutes after,
/// 1,000 lines a minute, error lines and the known exception with a little wobble, CPU 20%
/// and memory 50% with a little wobble. `tweak` changes a host-minute (minute index
/// relative to `T0`, negative before).
fn fleet(hosts: &[&str], tweak: impl Fn(&str, i64, &mut HostMinute)) -> Vec<HostMinute> {
    let mut rows = Vec::new();
    for m in -30..60 {
        for (i, h) in hosts.iter().enumerate() {
            let wobble = ((m + 3 * i as i64).rem_euclid(5)) as u64; // 0..4
            let mut row = HostMinute {
                host: (*h).to_string(),
                minute: T0 + m * 60,
                lines: 1000 + 10 * wobble,
                events: 0,
                error_lines: 3 + wobble % 3,
                warn_lines: 5,
                exceptions: BTreeMap::from([(KNOWN, 1 + wobble % 2)]),
                host_metrics: HostMetrics {
                    cpu_pct: Some(20.0 + wobble as f64),
                    mem_used_pct: Some(50.0 + 0.1 * wobble as f64),
                    load1: Some(1.0 + 0.05 * wobble as f64),
                    disk_busy_pct: Some(3.0 + wobble as f64 * 0.5),
                    ..HostMetrics::default()
                },
                requests: None,
            };
            tweak(h, m, &mut row);
            rows.push(row);
        }
    }
    rows.sort_by_key(|r| r.minute);
    rows
}

#[track_caller]
/// A canary release of h1 and h2 (h3–h6 the reference) over `rows`, by an app with no
/// memory, is never blocked (the first verdict that is not a pass shows otherwise).
fn assert_not_blocked(rows: &[HostMinute]) {
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, rows, &AppMemory::default());
    assert!(
        first_block(&verdicts).is_none(),
        "{:?}",
        verdicts.iter().find(|v| v.decision != Decision::Pass)
    );
}

/// A canary release of h1 and h2 (h3–h6 the reference) over `rows`, by an app with no
/// memory, is blocked, first for its CPU.
#[track_caller]
fn assert_blocked_for_cpu(rows: &[HostMinute]) {
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, rows, &AppMemory::default());
    let (_, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(
        (v.reasons[0].rule.as_str(), v.reasons[0].metric.as_deref()),
        ("host_metric", Some("cpu_pct")),
        "{v:?}"
    );
}

/// The fleet of [`fleet`] with h1 and h2's CPU `points` higher in the minutes `during`.
fn released_cpu_up(points: f64, during: std::ops::Range<i64>) -> Vec<HostMinute> {
    fleet(&HOSTS, move |h, m, r| {
        if (h == "h1" || h == "h2") && during.contains(&m) {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + points);
        }
    })
}

fn release(released: &[&str], reference: &[&str]) -> Release {
    Release {
        app: "shop".into(),
        batches: vec![Batch {
            at: T0 + 17,
            hosts: released.iter().map(|h| h.to_string()).collect(),
        }],
        reference_hosts: reference.iter().map(|h| h.to_string()).collect(),
        until: Some(T0 + 3600),
    }
}

fn definitions() -> HashMap<u64, Definition> {
    HashMap::from([
        (
            DANGER,
            Definition {
                class: "java.lang.NoSuchMethodError".into(),
                dangerous: true,
                ..Definition::default()
            },
        ),
        (
            KNOWN,
            Definition {
                class: "java.net.SocketTimeoutException".into(),
                ..Definition::default()
            },
        ),
        (
            FRESH,
            Definition {
                class: "java.lang.IllegalStateException".into(),
                ..Definition::default()
            },
        ),
    ])
}

/// Runs rounds minute by minute over the rows known so far; returns every verdict.
fn run(judge: &mut ReleaseJudge, rows: &[HostMinute], memory: &AppMemory) -> Vec<Verdict> {
    run_from(T0, judge, rows, memory)
}

/// [`run`] for a release whose first batch is in the minute `start`.
fn run_from(
    start: i64,
    judge: &mut ReleaseJudge,
    rows: &[HostMinute],
    memory: &AppMemory,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    for m in 0..60 {
        let minute = start + m * 60;
        let known: Vec<HostMinute> = rows
            .iter()
            .filter(|r| r.minute <= minute)
            .cloned()
            .collect();
        out.push(judge.round(minute, &known, memory));
    }
    out
}

fn judge(release: Release) -> ReleaseJudge {
    ReleaseJudge::new(release, HashSet::from([KNOWN]), definitions())
}

fn first_block(verdicts: &[Verdict]) -> Option<(usize, &Verdict)> {
    verdicts
        .iter()
        .enumerate()
        .find(|(_, v)| v.decision == Decision::Block)
}

/// The verdict's reason of `rule`; panics naming the rule where it has none.
#[track_caller]
fn reason<'a>(v: &'a Verdict, rule: &str) -> &'a Reason {
    v.reasons
        .iter()
        .find(|r| r.rule.as_str() == rule)
        .unwrap_or_else(|| panic!("no {rule} reason: {v:?}"))
}

const HOSTS: [&str; 6] = ["h1", "h2", "h3", "h4", "h5", "h6"];

#[test]
fn healthy_release_passes_every_round() {
    let rows = fleet(&HOSTS, |_, _, _| {});
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    assert!(
        verdicts.iter().all(|v| v.decision == Decision::Pass),
        "{:?}",
        verdicts.last()
    );
}

#[test]
fn dangerous_exception_blocks_in_the_first_round_it_shows() {
    let rows = fleet(&HOSTS, |h, m, r| {
        if h == "h1" && m == 4 {
            r.exceptions.insert(DANGER, 1);
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(at, 4, "blocked at the end of the minute it showed");
    assert_eq!(v.decided_at, T0 + 5 * 60);
    let reason = &v.reasons[0];
    assert_eq!(reason.rule.as_str(), "dangerous_exception");
    assert_eq!(reason.hosts, vec!["h1".to_string()]);
    assert_eq!(reason.fingerprint.as_deref(), Some("9f3a5c0e11d2b7a4"));
    assert_eq!(reason.evidence.observed, 1.0);
    // Sticky: later rounds keep the block and its time.
    assert!(
        verdicts[5..]
            .iter()
            .all(|x| x.decision == Decision::Block && x.decided_at == v.decided_at)
    );
}

#[test]
fn dangerous_exception_seen_on_reference_hosts_does_not_block_at_once() {
    let rows = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" && m == 4) || (h == "h5" && m == -10) {
            r.exceptions.insert(DANGER, 1);
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    assert!(first_block(&verdicts).is_none(), "{:?}", verdicts.last());
}

#[test]
fn alert_blocks_between_rounds_and_only_for_released_hosts() {
    let rows = fleet(&HOSTS, |_, _, _| {});
    let memory = AppMemory::default();
    let mut j = judge(release(&["h1"], &["h2", "h3"]));
    j.round(T0, &rows, &memory);
    let defs = definitions();
    let danger = &defs[&DANGER];
    let v = j.alert(T0 + 75, "h3", DANGER, danger, &memory);
    assert_eq!(v.decision, Decision::Pass, "reference host: no block");
    let v = j.alert(T0 + 80, "h1", KNOWN, &defs[&KNOWN], &memory);
    assert_eq!(v.decision, Decision::Pass, "not dangerous: no block");
    let v = j.alert(T0 + 81, "h1", DANGER, danger, &memory);
    assert_eq!(v.decision, Decision::Block);
    assert_eq!(
        v.decided_at,
        T0 + 81,
        "blocked at the alert, not at the minute's end"
    );
    assert_eq!(v.reasons[0].rule.as_str(), "dangerous_exception");
}

#[test]
fn new_exception_blocks_after_the_window_and_a_rare_one_passes() {
    let rows = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && m >= 5 {
            r.exceptions.insert(FRESH, 3);
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(
        verdicts[5].decision,
        Decision::Watch,
        "first suspicious round only watches"
    );
    assert_eq!(at, 6, "second suspicious round of the window blocks");
    assert_eq!(v.reasons[0].rule.as_str(), "new_exception");
    assert_eq!(v.reasons[0].evidence.rounds_suspicious, Some(2));

    let rare = fleet(&HOSTS, |h, m, r| {
        if h == "h1" && (m == 10 || m == 40) {
            r.exceptions.insert(FRESH, 1);
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rare, &AppMemory::default());
    assert!(first_block(&verdicts).is_none());
}

#[test]
fn more_of_a_known_exception_blocks_with_checkable_evidence() {
    let rows = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && m >= 0 {
            *r.exceptions.entry(KNOWN).or_default() *= 6;
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    let (_, v) = first_block(&verdicts).expect("blocked");
    let r = reason(v, "exception_rate");
    assert_eq!(r.fingerprint.as_deref(), Some("0b5e3c1d2a4f6e88"));
    let e = &r.evidence;
    assert!(e.observed > e.expected.unwrap_or(f64::MAX) * 3.0, "{e:?}");
    // Past the sequential test's bar: 1/α for a 1 % budget split between the rule's
    // exceptions (an anytime-valid p-value, 1/e).
    assert!(e.p_value.unwrap_or(1.0) < 1e-3, "{e:?}");
    assert!(e.released_before.is_some() && e.reference_after.is_some());
    assert!(e.effect >= e.threshold);
}

#[test]
fn a_surge_on_the_whole_fleet_passes() {
    let rows = fleet(&HOSTS, |_, m, r| {
        if (10..25).contains(&m) {
            r.error_lines *= 8;
            *r.exceptions.entry(KNOWN).or_default() *= 10;
            r.lines *= 2;
        }
    });
    assert_not_blocked(&rows);
}

#[test]
fn a_host_noisy_before_the_release_passes() {
    let rows = fleet(&HOSTS, |h, _, r| {
        if h == "h1" {
            r.error_lines *= 5;
            *r.exceptions.entry(KNOWN).or_default() *= 6;
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    assert!(first_block(&verdicts).is_none(), "{:?}", verdicts.last());
}

#[test]
fn without_reference_hosts_error_growth_blocks_on_before_after() {
    let rows = fleet(&HOSTS[..4], |_, m, r| {
        if m >= 3 {
            r.error_lines *= 5;
        }
    });
    let mut j = judge(release(&HOSTS[..4], &[]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    let (_, v) = first_block(&verdicts).expect("blocked");
    let r = reason(v, "error_rate");
    assert!(
        r.evidence.reference_after.is_none(),
        "no reference group: before/after only"
    );
    assert_eq!(r.metric.as_deref(), Some("error_lines"));
}

#[test]
fn an_eightfold_rise_of_error_lines_blocks_once_its_evidence_has_risen_for_three_minutes() {
    // Error lines ×8 on the two released hosts from their release on. Minutes 0–1 are
    // their warm-up; the sequential test passes its bar on the first settled minute, and
    // blocks once each of three minutes in a row has added to its evidence: minute 5's.
    let rows = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && m >= 0 {
            r.error_lines *= 8;
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    let (at, v) = first_block(&verdicts).expect("blocked");
    let r = reason(v, "error_rate");
    assert!(r.summary.contains("sequential test"), "{}", r.summary);
    assert!(
        r.summary.contains("risen with each of its last 3 minutes"),
        "{}",
        r.summary
    );
    assert_eq!(r.metric.as_deref(), Some("error_lines"));
    assert_eq!(r.hosts, ["h1", "h2"]);
    // The classic test alone, with its per-minute guard and its window, blocks this at
    // minute 6.
    assert!(at <= 5, "blocked at minute {at}: {v:?}");

    // As a live round sees it when agents send a minute after the round that judges it
    // (agents sampling less often than every 20 s): each round has every minute but its
    // own. The empty minute adds nothing to the evidence and is stepped over: the block
    // is a round later.
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts: Vec<Verdict> = (0..60)
        .map(|m| {
            let arrived: Vec<HostMinute> = rows
                .iter()
                .filter(|r| r.minute < T0 + m * 60)
                .cloned()
                .collect();
            j.round(T0 + m * 60, &arrived, &AppMemory::default())
        })
        .collect();
    let (late, v) = first_block(&verdicts).expect("blocked");
    assert!(
        v.reasons
            .iter()
            .any(|r| r.summary.contains("sequential test")),
        "{v:?}"
    );
    assert_eq!(late, at + 1, "{v:?}");
}

#[test]
fn a_swell_of_error_lines_for_two_minutes_past_the_warm_up_does_not_block() {
    // A restart's complaints past the warm-up: error lines ×8 on the released hosts for
    // two minutes from their first settled minute, or from the one after, then as before.
    // The sequential test's evidence passes the bar and then falls.
    for from in [2, 3] {
        let rows = fleet(&HOSTS, |h, m, r| {
            if (h == "h1" || h == "h2") && (from..from + 2).contains(&m) {
                r.error_lines *= 8;
            }
        });
        assert_not_blocked(&rows);
    }
}

#[test]
fn log_volume_collapse_blocks_but_a_missing_agent_does_not() {
    let collapse = fleet(&HOSTS, |h, m, r| {
        if h == "h1" && m >= 3 {
            r.lines = 20;
            r.error_lines = 0;
            r.exceptions.clear();
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &collapse, &AppMemory::default());
    let (_, v) = first_block(&verdicts).expect("blocked");
    assert!(
        v.reasons
            .iter()
            .any(|r| r.rule.as_str() == "log_volume" && r.hosts == ["h1"]),
        "{v:?}"
    );

    // The same host silent (no rows at all) is missing data, not zero lines.
    let mut gap = fleet(&HOSTS, |_, _, _| {});
    gap.retain(|r| !(r.host == "h1" && r.minute >= T0 + 3 * 60 && r.minute < T0 + 40 * 60));
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &gap, &AppMemory::default());
    assert!(first_block(&verdicts).is_none(), "{:?}", verdicts.last());
}

#[test]
fn a_cpu_rise_blocks_after_a_few_settled_minutes_and_a_short_burst_does_not() {
    let rows = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && m >= 3 {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 40.0);
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    let (at, v) = first_block(&verdicts).expect("blocked");
    // Minutes 0–2 are the warm-up; with no hit before the release on any host, two
    // released hosts over the bar for two minutes are evidence enough.
    assert!(
        (3..=5).contains(&at),
        "the calibrated test blocks within a few settled minutes (blocked at +{at})"
    );
    assert!(v.reasons[0].summary.contains("sequential test"), "{v:?}");

    // One released host 40 points up for two minutes (a cron job, a GC storm): not enough.
    let rows = fleet(&HOSTS, |h, m, r| {
        if h == "h1" && (5..7).contains(&m) {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 40.0);
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    assert!(first_block(&verdicts).is_none(), "{:?}", verdicts.last());
    let r = &v.reasons[0];
    assert_eq!(
        (r.rule.as_str(), r.metric.as_deref()),
        ("host_metric", Some("cpu_pct"))
    );
    assert!(r.hosts.contains(&"h1".to_string()) && r.hosts.contains(&"h2".to_string()));
}

#[test]
fn a_false_alarm_teaches_the_app_its_normal_and_a_miss_undoes_it() {
    // A release with a 3× rise of a known exception: blocked with no memory (learning is
    // capped at ×4 for rates, so a bigger rise could never be taught away).
    let rows = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && m >= 3 {
            *r.exceptions.entry(KNOWN).or_default() *= 3;
        }
    });
    let mut memory = AppMemory::default();
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &memory);
    assert!(first_block(&verdicts).is_some());
    memory.learn(&j, Feedback::FalseAlarm);
    let kind = format!("exception_rate:{}", fingerprint_hex(KNOWN));
    let learned = memory.threshold(&kind).expect("learned");
    assert!(learned > 1.5, "{learned}");
    assert!(memory.knows(KNOWN, T0));

    // The same release again: the signal no longer exceeds what users call normal.
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &memory);
    assert!(first_block(&verdicts).is_none());
    let last = verdicts.last().expect("rounds");
    assert_eq!(last.decision, Decision::Watch, "still shown as a warning");
    assert!(
        last.reasons
            .iter()
            .any(|r| r.evidence.learned_threshold == Some(learned))
    );

    // Users say it was a real problem after all: the threshold comes back down.
    memory.learn(&j, Feedback::MissedProblem);
    assert!(memory.threshold(&kind).unwrap_or(f64::MAX) < learned);

    let json = serde_json::to_string(&memory).expect("serialize");
    let back: AppMemory = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, memory);
}

#[test]
fn a_learned_threshold_belongs_to_one_exception_and_fades_over_normal_releases() {
    const OTHER: u64 = 0x5eed_0f0f_1234_abcd;
    // Both exceptions at a steady rate on every host; `times` multiplies one of them on the
    // released hosts from minute 3.
    let rise = |fp: u64, times: u64| {
        fleet(&HOSTS, move |h, m, r| {
            r.exceptions.insert(OTHER, 4 + (m.rem_euclid(3)) as u64);
            if (h == "h1" || h == "h2") && m >= 3 {
                *r.exceptions.entry(fp).or_default() *= times;
            }
        })
    };
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let mut memory = AppMemory::default();
    let mut j = release_of();
    assert!(first_block(&run(&mut j, &rise(KNOWN, 3), &memory)).is_some());
    memory.learn(&j, Feedback::FalseAlarm);
    let known = format!("exception_rate:{}", fingerprint_hex(KNOWN));
    let other = format!("exception_rate:{}", fingerprint_hex(OTHER));
    let learned = memory.threshold(&known).expect("learned");
    assert!(learned > 3.0, "{learned}");
    assert_eq!(memory.threshold(&other), None);

    // The same ×3 of the other exception is not hidden by what the first one taught.
    let mut j = release_of();
    let verdicts = run(&mut j, &rise(OTHER, 3), &memory);
    let (_, v) = first_block(&verdicts).expect("the other exception still blocks");
    assert_eq!(
        v.reasons[0].fingerprint.as_deref(),
        Some(fingerprint_hex(OTHER).as_str()),
        "{v:?}"
    );

    // The learned excess over the default (×1.5) halves over 50 normal releases that do
    // not reach it...
    let normal = |memory: &mut AppMemory| {
        let mut j = release_of();
        j.round(T0 + 600, &[], memory);
        memory.learn(&j, Feedback::ConfirmedNormal);
    };
    for _ in 0..LEARNED_HALF_LIFE as usize {
        normal(&mut memory);
    }
    let half = memory.threshold(&known).expect("still learned");
    assert!(
        (half - (1.5 + (learned - 1.5) / 2.0)).abs() < 1e-9,
        "{half} vs {learned}"
    );
    // ...and is forgotten once back at the default.
    for _ in 0..400 {
        normal(&mut memory);
    }
    assert!(memory.thresholds.is_empty(), "{:?}", memory.thresholds);
}

#[test]
fn what_one_fingerprint_of_a_failure_taught_holds_for_its_other_fingerprints() {
    // One failure under two fingerprints (one definition: an agent's fingerprint upgrade
    // renamed it). The first release shows both, the second only the larger one.
    const RENAMED: u64 = KNOWN + 1;
    let with_renamed = || {
        let mut d = definitions();
        d.insert(RENAMED, d[&KNOWN].clone());
        ReleaseJudge::new(
            release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]),
            HashSet::from([KNOWN, RENAMED]),
            d,
        )
    };
    let both = fleet(&HOSTS, |h, m, r| {
        let k = r.exceptions.remove(&KNOWN).unwrap_or(0);
        let k = if (h == "h1" || h == "h2") && m >= 3 {
            k * 3
        } else {
            k
        };
        r.exceptions.insert(KNOWN, k / 2);
        r.exceptions.insert(RENAMED, k - k / 2);
    });
    let mut memory = AppMemory::default();
    let mut j = with_renamed();
    let verdicts = run(&mut j, &both, &memory);
    let (_, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(
        v.reasons[0].fingerprint.as_deref(),
        Some(fingerprint_hex(KNOWN).as_str()),
        "counted under the smaller fingerprint: {v:?}"
    );
    memory.learn(&j, Feedback::FalseAlarm);
    assert!(
        memory
            .threshold(&format!("exception_rate:{}", fingerprint_hex(RENAMED)))
            .is_some(),
        "{:?}",
        memory.thresholds
    );

    // Only the renamed fingerprint now, three times as often on released hosts: what
    // users taught still holds.
    let renamed_only = fleet(&HOSTS, |h, m, r| {
        let k = r.exceptions.remove(&KNOWN).unwrap_or(0);
        let k = if (h == "h1" || h == "h2") && m >= 3 {
            k * 3
        } else {
            k
        };
        r.exceptions.insert(RENAMED, k);
    });
    let mut j = with_renamed();
    let verdicts = run(&mut j, &renamed_only, &memory);
    assert!(first_block(&verdicts).is_none(), "{:?}", verdicts.last());
}

#[test]
fn late_data_for_earlier_minutes_is_taken_into_account() {
    let rows = fleet(&HOSTS, |h, m, r| {
        if h == "h1" && m == 2 {
            r.exceptions.insert(DANGER, 1);
        }
    });
    let memory = AppMemory::default();
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    // Rounds at +2 and +3 without h1's minute +2 (late), then it arrives.
    let without: Vec<HostMinute> = rows
        .iter()
        .filter(|r| !(r.host == "h1" && r.minute == T0 + 120))
        .cloned()
        .collect();
    for m in 0..4 {
        let known: Vec<HostMinute> = without
            .iter()
            .filter(|r| r.minute <= T0 + m * 60)
            .cloned()
            .collect();
        assert_eq!(
            j.round(T0 + m * 60, &known, &memory).decision,
            Decision::Pass
        );
    }
    let known: Vec<HostMinute> = rows
        .iter()
        .filter(|r| r.minute <= T0 + 4 * 60)
        .cloned()
        .collect();
    assert_eq!(
        j.round(T0 + 4 * 60, &known, &memory).decision,
        Decision::Block
    );
}

#[test]
fn a_later_batch_is_judged_from_its_own_release_and_state_survives_serde() {
    // h3 gets the new version at +20 and only then starts failing.
    let rows = fleet(&HOSTS, |h, m, r| {
        if h == "h3" && m >= 20 {
            r.exceptions.insert(FRESH, 4);
        }
    });
    let memory = AppMemory::default();
    let mut j = judge(release(&["h1", "h2"], &["h4", "h5", "h6"]));
    let mut blocked = None;
    for m in 0..60 {
        if m == 20 {
            j.add_batch(Batch {
                at: T0 + 20 * 60,
                hosts: vec!["h3".into()],
            });
            // A restart of the detector between rounds: the judge comes back as it was,
            // given the app's fingerprints again as the detector gives them every round
            // (the stored state does not carry them).
            let text = serde_json::to_string(&j).expect("serialize");
            let mut back: ReleaseJudge = serde_json::from_str(&text).expect("deserialize");
            assert!(!text.contains("IllegalStateException"), "{text}");
            back.set_fingerprints(HashSet::from([KNOWN]), definitions());
            assert_eq!(back, j);
            j = back;
        }
        let minute = T0 + m * 60;
        let known: Vec<HostMinute> = rows
            .iter()
            .filter(|r| r.minute <= minute)
            .cloned()
            .collect();
        let v = j.round(minute, &known, &memory);
        if v.decision == Decision::Block {
            blocked = Some((m, v));
            break;
        }
    }
    let (m, v) = blocked.expect("blocked");
    assert!((21..=23).contains(&m), "blocked at +{m}");
    assert_eq!(v.reasons[0].rule.as_str(), "new_exception");
    assert_eq!(v.reasons[0].hosts, vec!["h3".to_string()]);
}

#[test]
fn a_fifteen_fold_spike_of_a_known_exception_on_two_of_four_hosts_blocks_in_the_first_settled_round()
 {
    // The known exception at 2 a minute per host, ×15 on the two released hosts from the
    // release's minute on; 20 fingerprints tested in the round (the budget is split).
    let hosts = ["h1", "h2", "h3", "h4"];
    let rows = fleet(&hosts, |h, m, r| {
        let spiked = (h == "h1" || h == "h2") && m >= 0;
        r.exceptions.insert(KNOWN, if spiked { 30 } else { 2 });
        for i in 0..19u64 {
            r.exceptions
                .insert(0x5000 + i, 1 + (m.rem_euclid(3) as u64));
        }
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    let (at, v) = first_block(&verdicts).expect("blocked");
    // Minutes 0–1 are the released hosts' warm-up; minute 2's round (at 3 min 15 s after
    // the switch) has the first settled minute, and that is enough: no second round.
    assert_eq!(at, 2, "{v:?}");
    let r = &v.reasons[0];
    assert_eq!(r.rule.as_str(), "exception_rate", "{v:?}");
    assert!(r.summary.contains("sequential test"), "{}", r.summary);
    assert!(r.evidence.effect > 8.0, "{:?}", r.evidence);
    assert_eq!(r.hosts, ["h1", "h2"]);

    // The same fleet with traffic moved: the released hosts get 60 % more work and log
    // the exception in proportion. Not a fault.
    let rows = fleet(&hosts, |h, m, r| {
        let more = (h == "h1" || h == "h2") && m >= 0;
        r.events = if more { 1600 } else { 1000 };
        r.lines = r.events * 3;
        r.exceptions.insert(KNOWN, if more { 5 } else { 3 });
    });
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    assert!(
        first_block(&verdicts).is_none(),
        "{:?}",
        verdicts.iter().find(|v| v.decision != Decision::Pass)
    );
}

#[test]
fn a_surge_that_saturates_every_host_passes() {
    // 60 % more work on every host at once; CPU follows it up to 100 %: the released hosts
    // (usually at 60 %) and the reference hosts (usually at 85 %) all saturate. What the
    // work predicts stops at 100 %: above it, every host would look far below its due, the
    // busier reference hosts most, and the released ones above them.
    let rows = fleet(&HOSTS, |h, m, r| {
        let wobble = r.host_metrics.cpu_pct.unwrap_or(20.0) - 20.0;
        let level = if h == "h1" || h == "h2" { 60.0 } else { 85.0 };
        r.events = 1000;
        if m >= 0 {
            r.events = 1600;
            r.lines = 1600;
        }
        let work = r.events as f64 / 1000.0;
        r.host_metrics.cpu_pct = Some((level * (0.3 + 0.7 * work) + wobble).min(100.0));
    });
    assert_not_blocked(&rows);
}

#[test]
fn a_fleet_wide_rise_that_adds_as_much_to_a_near_idle_released_host_passes() {
    // After the release every host does 60 % more work, and something fleet-wide (a
    // sidecar, a batch job, a noisy neighbour) adds 40 points of CPU to every host. The
    // released hosts were near idle (2 %), the reference hosts at 50 %: grown with the
    // work, the released hosts' level predicts 3 %, they read 43 %, and the reference
    // hosts (capped at 100 %) rose 20 points above their own prediction: +20 more on the
    // released hosts than the reference hosts' change, a hit if all of a level grew with
    // the work. Compared level to level, the reference hosts rose 50 points and the
    // released ones 41: not a fault of the release.
    let fleet_wide = |on_reference: bool| {
        move |h: &str, m: i64, r: &mut HostMinute| {
            let wobble = r.host_metrics.cpu_pct.unwrap_or(20.0) - 20.0;
            let released = h == "h1" || h == "h2";
            let level = if released { 2.0 } else { 50.0 };
            r.events = 1000;
            let (work, add) = if m >= 0 {
                r.events = 1600;
                r.lines = 1600;
                (1.6, if released || on_reference { 40.0 } else { 0.0 })
            } else {
                (1.0, 0.0)
            };
            r.host_metrics.cpu_pct =
                Some((level * (0.3 + 0.7 * work) + add + 0.25 * wobble).min(100.0));
        }
    };
    assert_not_blocked(&fleet(&HOSTS, fleet_wide(true)));
    // The same 40 points on the released hosts alone is a regression.
    let rows = fleet(&HOSTS, fleet_wide(false));
    assert_blocked_for_cpu(&rows);
}

#[test]
fn more_cpu_for_more_work_passes_and_more_cpu_per_unit_of_work_blocks() {
    // After the release the released hosts get 60 % more requests (a load balancer's
    // weights): their events and CPU rise in proportion, 40 % → 64 %.
    let busier = |extra_cpu: f64| {
        move |h: &str, m: i64, r: &mut HostMinute| {
            r.events = 1000;
            let cpu = r.host_metrics.cpu_pct.unwrap_or(0.0) + 20.0;
            if (h == "h1" || h == "h2") && m >= 0 {
                r.events = 1600;
                r.lines = 3200;
                r.host_metrics.cpu_pct = Some(cpu * 1.6 + extra_cpu);
            } else {
                r.host_metrics.cpu_pct = Some(cpu);
            }
        }
    };
    let rows = fleet(&HOSTS, busier(0.0));
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    assert!(
        verdicts.iter().all(|v| v.decision == Decision::Pass),
        "{:?}",
        verdicts.iter().find(|v| v.decision != Decision::Pass)
    );
    // The same, with 30 points more CPU than the work explains: a regression.
    let rows = fleet(&HOSTS, busier(30.0));
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &rows, &AppMemory::default());
    let (_, v) = first_block(&verdicts).expect("blocked");
    let r = &v.reasons[0];
    assert_eq!(
        (r.rule.as_str(), r.metric.as_deref()),
        ("host_metric", Some("cpu_pct")),
        "{v:?}"
    );
    assert!(
        r.summary.contains("expected for 1.60× the work"),
        "{}",
        r.summary
    );
}

#[test]
fn traffic_moved_from_the_reference_hosts_to_the_released_ones_is_no_cpu_regression() {
    // After the release the load balancer sends the released hosts 60 % more requests and
    // the reference hosts 30 % fewer: every host's CPU follows its work, 40 % → 64 % and
    // 40 % → 28 %. The reference hosts' drop is what their lighter work predicts, not a
    // change of the fleet that makes the released hosts' CPU look high beside it.
    let moved = |extra_cpu: f64| {
        move |h: &str, m: i64, r: &mut HostMinute| {
            let cpu = r.host_metrics.cpu_pct.unwrap_or(0.0) + 20.0;
            let work = match (h == "h1" || h == "h2", m >= 0) {
                (_, false) => 1.0,
                (true, true) => 1.6,
                (false, true) => 0.7,
            };
            let extra = if work > 1.0 { extra_cpu } else { 0.0 };
            r.events = (1000.0 * work) as u64;
            r.lines = 2 * r.events;
            r.host_metrics.cpu_pct = Some(cpu * work + extra);
        }
    };
    assert_not_blocked(&fleet(&HOSTS, moved(0.0)));
    // The same shift with 30 points more CPU on the released hosts than their work
    // explains: a regression.
    let rows = fleet(&HOSTS, moved(30.0));
    assert_blocked_for_cpu(&rows);
}

#[test]
fn reference_hosts_whose_cpu_does_not_follow_their_lost_work_hide_no_regression() {
    // After the release the reference hosts answer half their requests, but their CPU
    // is a fixed cost and stays at 40 %: no rise of the fleet. The released hosts' work is
    // unchanged and their CPU 30 points up: a regression.
    let rows = fleet(&HOSTS, |h, m, r| {
        let cpu = r.host_metrics.cpu_pct.unwrap_or(0.0) + 20.0;
        let released = h == "h1" || h == "h2";
        r.events = if !released && m >= 0 { 500 } else { 1000 };
        r.lines = 2 * r.events;
        r.host_metrics.cpu_pct = Some(if released && m >= 3 { cpu + 30.0 } else { cpu });
    });
    assert_blocked_for_cpu(&rows);
}

#[test]
fn a_false_alarm_teaches_only_the_signals_that_blocked_and_a_rate_is_never_taught_off() {
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    // A CPU block users call a false alarm: CPU learns, nothing else does.
    let more_cpu = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && m >= 3 {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 45.0);
        }
    });
    let mut memory = AppMemory::default();
    let mut j = release_of();
    let verdicts = run(&mut j, &more_cpu, &memory);
    assert!(first_block(&verdicts).is_some());
    memory.learn(&j, Feedback::FalseAlarm);
    let cpu = memory
        .threshold("host_metric:cpu_pct")
        .expect("CPU learned");
    assert!(cpu > 45.0, "{cpu}");
    assert_eq!(memory.thresholds.len(), 1, "{:?}", memory.thresholds);
    // Taught away for now: the same release no longer blocks...
    let mut j = release_of();
    let verdicts = run(&mut j, &more_cpu, &memory);
    assert!(first_block(&verdicts).is_none(), "{:?}", verdicts.last());
    // ...but not for good: after 100 normal releases that stayed quiet it is back under
    // 45 points.
    for _ in 0..100 {
        let mut quiet = release_of();
        quiet.round(T0 + 600, &[], &memory);
        memory.learn(&quiet, Feedback::ConfirmedNormal);
    }
    let later = memory
        .threshold("host_metric:cpu_pct")
        .expect("still learned");
    assert!(later < 45.0, "{later}");

    // Three blocks for more of a known exception called false alarms: the rate's
    // threshold stops at ×4, so a ×8 rise still blocks.
    let more_of = |times: u64| {
        fleet(&HOSTS, move |h, m, r| {
            if (h == "h1" || h == "h2") && m >= 3 {
                *r.exceptions.entry(KNOWN).or_default() *= times;
            }
        })
    };
    for _ in 0..3 {
        let mut j = release_of();
        let verdicts = run(&mut j, &more_of(3), &memory);
        if first_block(&verdicts).is_some() {
            memory.learn(&j, Feedback::FalseAlarm);
        }
    }
    let kind = format!("exception_rate:{}", fingerprint_hex(KNOWN));
    assert!(memory.threshold(&kind).is_some_and(|t| t <= 4.0));
    let mut j = release_of();
    let verdicts = run(&mut j, &more_of(8), &memory);
    let (_, v) = first_block(&verdicts).expect("a ×8 rise still blocks");
    assert_eq!(v.reasons[0].rule.as_str(), "exception_rate", "{v:?}");
}

#[test]
fn an_app_learns_its_start_up_from_normal_releases() {
    // This app's restarted hosts log ×10 the known exception and ×8 the error lines for
    // five minutes, then settle: normal for it, longer than the default warm-up (2 minutes for the logs, 3 for host metrics).
    let slow_start = |h: &str, m: i64, r: &mut HostMinute| {
        if (h == "h1" || h == "h2") && (0..5).contains(&m) {
            r.exceptions
                .insert(KNOWN, 10 * (1 + m.rem_euclid(2) as u64));
            r.error_lines *= 8;
        }
    };
    let rows = fleet(&HOSTS, slow_start);
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    // Untaught, the start-up is taken for a regression.
    let mut memory = AppMemory::default();
    let mut j = release_of();
    assert!(first_block(&run(&mut j, &rows, &memory)).is_some());
    memory.learn(&j, Feedback::FalseAlarm);
    // Four more normal releases: the app now has a profile of 5 minutes, its warm-up 6.
    for _ in 0..4 {
        let mut j = release_of();
        run(&mut j, &rows, &memory);
        memory.learn(&j, Feedback::ConfirmedNormal);
    }
    assert_eq!(memory.startup_profiles, [5, 5, 5, 5, 5]);
    let mut j = release_of();
    let verdicts = run(&mut j, &rows, &memory);
    assert!(
        first_block(&verdicts).is_none(),
        "{:?}",
        verdicts.iter().find(|v| v.decision == Decision::Block)
    );
    // A real regression after the start-up is still blocked.
    let regression = fleet(&HOSTS, |h, m, r| {
        slow_start(h, m, r);
        if (h == "h1" || h == "h2") && m >= 5 {
            r.exceptions.insert(KNOWN, 30);
        }
    });
    let mut j = release_of();
    let (at, _) = first_block(&run(&mut j, &regression, &memory)).expect("blocked");
    assert!((6..=8).contains(&at), "blocked at +{at}");
}

#[test]
fn until_an_app_has_learned_its_start_up_each_hosts_own_holds_its_host_metrics() {
    // A restart burns 30 more points of CPU for six minutes (compilation, cold caches),
    // past the default three-minute warm-up of host metrics; the app has no start-up
    // profile yet. Each released host's own start-up, measured as it goes, keeps its CPU
    // out of the test until it ends.
    let storm = |h: &str, m: i64, r: &mut HostMinute| {
        if (h == "h1" || h == "h2") && (0..6).contains(&m) {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 30.0);
        }
    };
    let rows = fleet(&HOSTS, storm);
    assert_not_blocked(&rows);
    // Held for good, not only while a start-up may still end: an eight-minute storm stays
    // out of the test in every round of the hour, and so does one whose report of a
    // minute never came.
    assert_not_blocked(&fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && (0..8).contains(&m) {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 30.0);
        }
    }));
    let gap: Vec<HostMinute> = rows
        .iter()
        .filter(|r| !(r.host == "h1" && r.minute == T0 + 2 * 60))
        .cloned()
        .collect();
    assert_not_blocked(&gap);
    // An app that learned calm start-ups (a one-minute warm-up) is judged by what it
    // learned: the same storm is more CPU than its restarts use.
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let memory = taught_normal(&fleet(&HOSTS, |_, _, _| {}), 5);
    assert_eq!(memory.startup_profiles, [0; 5]);
    let verdicts = run(&mut release_of(), &rows, &memory);
    let (at, v) = first_block(&verdicts).expect("a storm past the learned warm-up blocks");
    assert_eq!(v.reasons[0].metric.as_deref(), Some("cpu_pct"), "{v:?}");
    assert!(at < 6, "blocked during the storm, at +{at}");
    // A CPU regression from the restart on is no start-up once it has lasted the longest
    // a start-up is taken to (ten minutes): then it is judged from the default warm-up
    // on, and blocks at once.
    let regression = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && m >= 0 {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 40.0);
        }
    });
    let verdicts = run(&mut release_of(), &regression, &AppMemory::default());
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(v.reasons[0].metric.as_deref(), Some("cpu_pct"), "{v:?}");
    assert_eq!(
        at, 9,
        "blocked by the round of the start-up span's last minute"
    );
}

#[test]
fn until_an_app_has_learned_its_start_up_a_storm_of_errors_while_the_cpu_is_up_is_start_up() {
    // For five minutes after the restart the released hosts log ×10 the known exception
    // and ×8 the error lines while burning 30 more points of CPU: a JVM starting (its
    // pools filling, its code compiling), longer than the default two-minute warm-up of
    // what the logs count. The app has no start-up profile yet.
    let storm = |cpu: f64| {
        fleet(&HOSTS, move |h, m, r| {
            if (h == "h1" || h == "h2") && (0..5).contains(&m) {
                r.exceptions
                    .insert(KNOWN, 10 * (1 + m.rem_euclid(2) as u64));
                r.error_lines *= 8;
                r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + cpu);
            }
        })
    };
    assert_not_blocked(&storm(30.0));
    // The same counts on hosts whose CPU stayed calm are not a restart's: judged past the
    // default warm-up, as a spike of a known exception from the restart on must be.
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut release_of(), &storm(0.0), &AppMemory::default());
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(v.reasons[0].rule.as_str(), "exception_rate", "{v:?}");
    assert!(at <= 3, "blocked at +{at}");
}

/// What an app learns from `releases` releases of h1 and h2 that all show `rows`, each
/// called normal by its users (a false alarm when it was blocked).
fn taught_normal(rows: &[HostMinute], releases: usize) -> AppMemory {
    let mut memory = AppMemory::default();
    teach_normal(&mut memory, rows, releases);
    memory
}

/// [`taught_normal`], teaching `memory` further.
fn teach_normal(memory: &mut AppMemory, rows: &[HostMinute], releases: usize) {
    for _ in 0..releases {
        let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
        let verdicts = run(&mut j, rows, memory);
        let feedback = if first_block(&verdicts).is_some() {
            Feedback::FalseAlarm
        } else {
            Feedback::ConfirmedNormal
        };
        memory.learn(&j, feedback);
    }
}

#[test]
fn a_start_up_storm_of_stack_traces_is_measured_per_event_not_diluted_by_its_frames() {
    // The agent counts events: 200 records a minute, the frame lines of the known
    // exception's traces making up the rest of the 1,000 lines. For five minutes after a
    // restart the released hosts throw it 10 times a minute with 100-frame traces: ×7 its
    // rate per event (elevated), but per physical line (2,000 lines) under ×2 of its
    // baseline, which would take the storm for calm.
    let storm = fleet(&HOSTS, |h, m, r| {
        r.events = 200;
        if (h == "h1" || h == "h2") && (0..5).contains(&m) {
            r.exceptions.insert(KNOWN, 10);
            r.lines += 1000;
        }
    });
    let memory = taught_normal(&storm, 5);
    assert_eq!(memory.startup_profiles, [5; 5]);
}

#[test]
fn a_restart_a_little_after_the_batch_time_is_learned_as_part_of_the_start_up() {
    // A rolling restart: the released hosts restart two minutes after the batch's time,
    // then log ×10 the known exception and ×8 the error lines for four minutes. Their
    // start-up is six minutes from the batch's time, not the zero its two calm first
    // minutes would say (which would leave the app a one-minute warm-up and block it for
    // every start-up, whatever users said).
    let lagged = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && (2..6).contains(&m) {
            r.exceptions.insert(KNOWN, 10);
            r.error_lines *= 8;
        }
    });
    let memory = taught_normal(&lagged, 5);
    assert_eq!(memory.startup_profiles, [6; 5]);
    let mut j = judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut j, &lagged, &memory);
    assert!(
        first_block(&verdicts).is_none(),
        "{:?}",
        verdicts.iter().find(|v| v.decision == Decision::Block)
    );
}

/// h1 and h2 restarted: their CPU 30 points up for `cpu` minutes, their error lines ×8 for
/// `logs` minutes.
fn restart(cpu: i64, logs: i64, tweak: impl Fn(&str, i64, &mut HostMinute)) -> Vec<HostMinute> {
    fleet(&HOSTS, move |h, m, r| {
        if h == "h1" || h == "h2" {
            if (0..cpu).contains(&m) {
                r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 30.0);
            }
            if (0..logs).contains(&m) {
                r.error_lines *= 8;
            }
        }
        tweak(h, m, r);
    })
}

#[test]
fn once_an_app_learned_its_start_up_a_host_whose_cpu_settled_early_has_its_logs_judged_then() {
    // Four releases whose restart lasts two minutes, then one that stormed for eight: the
    // app's learned warm-up is nine minutes, and its logs never outlasted its CPU.
    let mut memory = taught_normal(&restart(2, 2, |_, _, _| {}), 4);
    teach_normal(&mut memory, &restart(8, 8, |_, _, _| {}), 1);
    assert_eq!(memory.startup_profiles, [2, 2, 2, 2, 8]);
    assert_eq!(memory.startup_lags, [0; 5]);
    // A ×30 known exception from the restart on, which this time lasts two minutes: judged
    // from the third minute, not after the stormy release's nine.
    let spike = restart(2, 2, |h, m, r| {
        if (h == "h1" || h == "h2") && m >= 0 {
            r.exceptions.insert(KNOWN, 30);
        }
    });
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut release_of(), &spike, &memory);
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(v.reasons[0].rule.as_str(), "exception_rate", "{v:?}");
    assert!(at <= 5, "blocked at +{at}");
    // Without the logs' lag learned (a memory from before it was), the learned warm-up
    // holds.
    let mut before = memory.clone();
    before.startup_lags.clear();
    let (at, _) = first_block(&run(&mut release_of(), &spike, &before)).expect("blocked");
    assert!(at >= 9, "blocked at +{at}");
}

#[test]
fn an_app_whose_logs_outlast_its_cpu_at_start_up_has_them_wait_as_long() {
    // The app's restarts: two minutes of CPU, eight of error lines (pools reconnecting
    // after the JIT is done), as the app learned it (a lag of five minutes: judged from
    // +8, before its learned warm-up of nine); so they pass. Taught that its logs calm
    // with its CPU instead, the same restart's errors after the second minute block.
    let storm = restart(2, 8, |_, _, _| {});
    let taught = |lag: u32| {
        let mut memory = taught_normal(&fleet(&HOSTS, |_, _, _| {}), 5);
        memory.startup_profiles = vec![8; 5];
        memory.startup_lags = vec![lag; 5];
        memory
    };
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let verdicts = run(&mut release_of(), &storm, &taught(5));
    assert!(
        first_block(&verdicts).is_none(),
        "{:?}",
        verdicts.iter().find(|v| v.decision == Decision::Block)
    );
    let verdicts = run(&mut release_of(), &storm, &taught(0));
    let (_, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(v.reasons[0].rule.as_str(), "error_rate", "{v:?}");
}

#[test]
fn an_app_that_settles_at_once_gets_a_shorter_warm_up_and_an_earlier_block() {
    let spike = fleet(&HOSTS, |h, m, r| {
        if (h == "h1" || h == "h2") && m >= 0 {
            r.exceptions.insert(KNOWN, 30);
        }
    });
    let calm = fleet(&HOSTS, |_, _, _| {});
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let untaught = first_block(&run(&mut release_of(), &spike, &AppMemory::default()))
        .expect("blocked")
        .0;
    let memory = taught_normal(&calm, 5);
    assert_eq!(memory.startup_profiles, [0; 5]);
    let taught = first_block(&run(&mut release_of(), &spike, &memory))
        .expect("blocked")
        .0;
    assert!(
        taught < untaught,
        "a warm-up of 1 minute instead of 2: blocked at +{taught}, untaught at +{untaught}"
    );
}

#[test]
fn a_calm_history_of_the_app_lets_a_host_metric_regression_block_sooner() {
    // One released host's CPU 40 points up from minute 3. One release's baseline hour
    // bounds how rare such a hit is only to a few in a hundred; five calm releases of the
    // same app bound it far lower, and each hit then weighs more.
    let rise = fleet(&HOSTS, |h, m, r| {
        if h == "h1" && m >= 3 {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 40.0);
        }
    });
    let calm = fleet(&HOSTS, |_, _, _| {});
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let untaught = first_block(&run(&mut release_of(), &rise, &AppMemory::default()))
        .expect("blocked")
        .0;
    let memory = taught_apart(&calm, 5);
    let learned = memory.null_hits["host_metric:cpu_pct"];
    let mut once = AppMemory::default();
    let mut j = release_of();
    run(&mut j, &calm, &once);
    once.learn(&j, Feedback::ConfirmedNormal);
    let one = once.null_hits["host_metric:cpu_pct"];
    assert!(one.minutes >= 30.0 && one.hits == 0.0, "{one:?}");
    // The same release learned again adds no minute twice: its baseline only fades.
    let mut j = release_of();
    run(&mut j, &calm, &once);
    once.learn(&j, Feedback::ConfirmedNormal);
    let again = once.null_hits["host_metric:cpu_pct"];
    assert!(again.minutes < one.minutes, "{again:?} after {one:?}");
    // Five releases' baselines, the older ones faded.
    assert!(
        learned.minutes > 4.0 * one.minutes && learned.minutes < 5.0 * one.minutes,
        "{learned:?} from {one:?}"
    );
    let (taught, v) = {
        let verdicts = run(&mut release_of(), &rise, &memory);
        let (at, v) = first_block(&verdicts).expect("blocked");
        (at, v.clone())
    };
    assert!(
        taught < untaught,
        "blocked at +{taught} with the app's history, +{untaught} without"
    );
    assert!(
        v.reasons[0]
            .summary
            .contains("in the app's earlier releases"),
        "{v:?}"
    );

    // A history where such minutes were common is no licence: an app whose hosts hit
    // every few minutes (each at its own time) before every release learns that, and the
    // same rise on one host
    // no longer blocks sooner than the untaught judge would.
    let restless = |h: &str, m: i64, r: &mut HostMinute| {
        let i = i64::from(h.as_bytes()[1] - b'0');
        if m < 0 && (m + i).rem_euclid(6) == 0 && h != "h1" {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 40.0);
        }
    };
    let noisy_memory = taught_apart(&fleet(&HOSTS, restless), 5);
    let noisy = noisy_memory.null_hits["host_metric:cpu_pct"];
    assert!(noisy.hits > 0.0, "{noisy:?}");
    let verdicts = run(&mut release_of(), &rise, &noisy_memory);
    let at = first_block(&verdicts).map_or(usize::MAX, |(at, _)| at);
    assert!(
        at >= untaught,
        "blocked at +{at} after a restless history, +{untaught} untaught"
    );
}

/// What an app learns from `releases` normal releases of h1 and h2 that all show `rows`,
/// each two hours after the one before (their baseline hours apart).
fn taught_apart(rows: &[HostMinute], releases: i64) -> AppMemory {
    let mut memory = AppMemory::default();
    for k in 0..releases {
        let j = judged_at(rows, (k - releases) * 7200, &memory);
        memory.learn(&j, Feedback::ConfirmedNormal);
    }
    memory
}

/// A release of h1 and h2 over `rows`, all of it `shift` seconds later, judged through its
/// first hour by an app with `memory`.
fn judged_at(rows: &[HostMinute], shift: i64, memory: &AppMemory) -> ReleaseJudge {
    let shifted: Vec<HostMinute> = rows
        .iter()
        .map(|r| HostMinute {
            minute: r.minute + shift,
            ..r.clone()
        })
        .collect();
    let mut plan = release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]);
    for b in &mut plan.batches {
        b.at += shift;
    }
    plan.until = plan.until.map(|u| u + shift);
    let mut j = judge(plan);
    run_from(T0 + shift, &mut j, &shifted, memory);
    j
}

#[test]
fn releases_whose_baseline_hours_overlap_teach_each_minute_once_whatever_the_feedback_order() {
    // Release B starts 30 minutes after A: half of its baseline hour is A's. Both are
    // judged to the end, then users answer, in either order.
    let calm = fleet(&HOSTS, |_, _, _| {});
    let a = judged_at(&calm, 0, &AppMemory::default());
    let b = judged_at(&calm, 1800, &AppMemory::default());
    let minutes = |m: &AppMemory| m.null_hits["host_metric:cpu_pct"].minutes;
    let alone = |j: &ReleaseJudge| {
        let mut m = AppMemory::default();
        m.learn(j, Feedback::ConfirmedNormal);
        minutes(&m)
    };
    let (ma, mb) = (alone(&a), alone(&b));
    let kept = 0.5f64.powf(1.0 / LEARNED_HALF_LIFE);
    let mut ab = AppMemory::default();
    ab.learn(&a, Feedback::ConfirmedNormal);
    ab.learn(&b, Feedback::ConfirmedNormal);
    // B's baseline hour and the minute of its batch: 61 minutes, 31 of them A's.
    let share = (minutes(&ab) - ma * kept) / mb;
    assert!(
        (0.45..0.55).contains(&share),
        "B added {share} of its minutes"
    );
    let mut ba = AppMemory::default();
    ba.learn(&b, Feedback::ConfirmedNormal);
    ba.learn(&a, Feedback::ConfirmedNormal);
    assert!(
        (minutes(&ba) - mb * kept).abs() < 1e-9,
        "A, all of it before B's baseline ended, adds nothing after B"
    );
}

#[test]
fn a_learned_host_metric_threshold_holds_back_modest_evidence_but_never_switches_the_metric_off() {
    // An app whose hosts each go busy now and then (5 % of their minutes, in spells of
    // six) and whose CPU jumped from idle to busy in its normal releases: it learned a
    // CPU threshold at the cap, 100 points, more than any rise can reach. It learned
    // before hits had two grades: its history of the first bounds the second's.
    let mut noisy = AppMemory::default();
    noisy.null_hits.insert(
        "host_metric:cpu_pct".into(),
        NullSample {
            minutes: 3000.0,
            hits: 150.0,
            runs: 25.0,
        },
    );
    let mut taught = noisy.clone();
    taught
        .thresholds
        .insert("host_metric:cpu_pct".into(), 100.0);
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let block_at = |rows: &[HostMinute], memory: &AppMemory| {
        let verdicts = run(&mut release_of(), rows, memory);
        first_block(&verdicts).map(|(at, v)| (at, v.clone()))
    };
    // A busy spell of 30 minutes on both released hosts: evidence enough to block an app
    // that learned no threshold, held back by the one this app learned.
    let spell = released_cpu_up(40.0, 3..33);
    assert!(block_at(&spell, &noisy).is_some());
    assert_eq!(block_at(&spell, &taught).map(|b| b.0), None);
    // CPU 40 points up for good: held back until the evidence is a hundred times the
    // test's bar, then blocked, the learned threshold notwithstanding.
    let for_good = released_cpu_up(40.0, 3..60);
    let (untaught, _) = block_at(&for_good, &noisy).expect("blocked untaught");
    let (at, v) = block_at(&for_good, &taught).expect("blocked after learning");
    assert!(at > untaught, "+{at} taught, +{untaught} untaught");
    let r = &v.reasons[0];
    assert_eq!(r.metric.as_deref(), Some("cpu_pct"), "{v:?}");
    assert_eq!(r.evidence.learned_threshold, Some(100.0), "{v:?}");
    assert!(r.evidence.effect < 100.0, "{v:?}");
    let e = r.evidence.e_value.expect("a sequential test");
    let bar = r.evidence.e_bar.expect("its bar");
    assert!(e >= 100.0 * bar, "e={e} against {bar}");

    // Its next normal release starts the second grade's history from the first's.
    let calm = fleet(&HOSTS, |_, _, _| {});
    let mut j = release_of();
    run(&mut j, &calm, &noisy);
    noisy.learn(&j, Feedback::ConfirmedNormal);
    let strong = noisy.null_hits["host_metric:cpu_pct:strong"];
    assert!(
        strong.hits > 140.0 && strong.runs > 20.0,
        "{strong:?} from {:?}",
        noisy.null_hits["host_metric:cpu_pct"]
    );
}

#[test]
fn a_false_alarm_teaches_how_its_host_metric_behaves_after_a_release_once() {
    // A CPU block users call a false alarm: the released hosts' minutes past their warm-up
    // were minutes where nothing was wrong, and the app's hit rate learns them.
    let more_cpu = released_cpu_up(45.0, 3..60);
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let hits = |m: &AppMemory| m.null_hits["host_metric:cpu_pct"];
    let mut j = release_of();
    assert!(first_block(&run(&mut j, &more_cpu, &AppMemory::default())).is_some());
    let mut valid = AppMemory::default();
    valid.learn(&j, Feedback::ValidBlock);
    let mut false_alarm = AppMemory::default();
    false_alarm.learn(&j, Feedback::FalseAlarm);
    // A valid block teaches its baseline hour only, quiet; a false alarm its window too.
    assert_eq!(hits(&valid).hits, 0.0, "{:?}", hits(&valid));
    let taught = hits(&false_alarm);
    assert!(
        taught.hits >= 90.0 && taught.minutes > hits(&valid).minutes + 90.0,
        "{taught:?}"
    );
    // Each released host's rise is one run, begun in its warm-up or not (the window's
    // minute of its batch was taught with the baseline).
    assert!((1.9..=2.0).contains(&taught.runs), "{taught:?}");
    // 45 points is past twice the bar of a hit: the second grade's history learns them
    // too.
    let strong = false_alarm.null_hits["host_metric:cpu_pct:strong"];
    assert!(strong.hits >= 90.0, "{strong:?}");
    // The same release learned again adds none of its minutes twice: they only fade.
    false_alarm.learn(&j, Feedback::FalseAlarm);
    let again = hits(&false_alarm);
    assert!(again.hits < taught.hits, "{again:?} after {taught:?}");
}

#[test]
fn a_rise_twice_the_bar_blocks_soon_on_an_app_whose_bursts_reach_the_bar_only() {
    // An app whose hosts hit the CPU's bar in long bursts (10 % of their minutes, in runs
    // of ten) but never twice it: a hit of the first grade is weak evidence there.
    let mut bursty = AppMemory::default();
    let sample = |hits: f64, runs: f64| NullSample {
        minutes: 3000.0,
        hits,
        runs,
    };
    bursty
        .null_hits
        .insert("host_metric:cpu_pct".into(), sample(300.0, 30.0));
    bursty
        .null_hits
        .insert("host_metric:cpu_pct:strong".into(), sample(0.0, 0.0));
    let release_of = || judge(release(&["h1", "h2"], &["h3", "h4", "h5", "h6"]));
    let up = |points: f64| released_cpu_up(points, 3..60);
    // 40 points up on both released hosts: twice the bar (24 points), which the app's
    // hosts never reached, so each such minute weighs as a rare one.
    let verdicts = run(&mut release_of(), &up(40.0), &bursty);
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert!(at <= 8, "blocked at +{at}: {v:?}");
    let r = &v.reasons[0];
    assert_eq!(r.metric.as_deref(), Some("cpu_pct"), "{v:?}");
    assert!(r.summary.contains("twice above"), "{}", r.summary);
    // 16 points up: past the bar only, as the app's bursts are. Their runs make each hit
    // weigh a nineteenth as much, and the block, if any, comes much later.
    let verdicts = run(&mut release_of(), &up(16.0), &bursty);
    let later = first_block(&verdicts).map_or(usize::MAX, |(at, _)| at);
    assert!(later > at + 10, "+16 blocked at +{later}, +40 at +{at}");
}

const EIGHT: [&str; 8] = ["h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"];

/// The first block of a release of h1–h4 (h5–h8 the reference) over `rows`, by an app
/// with no memory: its round and its first reason's rule and hosts.
fn first_block_of_four(rows: &[HostMinute]) -> Option<(usize, String, Vec<String>)> {
    let mut j = judge(release(
        &["h1", "h2", "h3", "h4"],
        &["h5", "h6", "h7", "h8"],
    ));
    let verdicts = run(&mut j, rows, &AppMemory::default());
    let (at, v) = first_block(&verdicts)?;
    let r = &v.reasons[0];
    Some((at, r.rule.as_str().to_string(), r.hosts.clone()))
}

#[test]
fn a_regression_on_one_released_host_of_four_is_not_diluted_by_the_other_three() {
    // h1 alone, of four released hosts, 40 points of CPU up from +3 (its warm-up over):
    // pooled, a quarter of the released minutes hit; its own test sees all of its own.
    let cpu = fleet(&EIGHT, |h, m, r| {
        if h == "h1" && m >= 3 {
            r.host_metrics.cpu_pct = r.host_metrics.cpu_pct.map(|c| c + 40.0);
        }
    });
    // Blocked at +6; with the released hosts' minutes pooled alone, at +11.
    let (at, rule, hosts) = first_block_of_four(&cpu).expect("blocked");
    assert_eq!(
        (rule.as_str(), hosts),
        ("host_metric", vec!["h1".to_string()])
    );
    assert!(at <= 7, "blocked at +{at}");
    // The known exception ×6 on h1 alone: blocked at +6; pooled alone, at +9.
    let exception = fleet(&EIGHT, |h, m, r| {
        if h == "h1" && m >= 3 {
            *r.exceptions.entry(KNOWN).or_default() *= 6;
        }
    });
    let (at, rule, hosts) = first_block_of_four(&exception).expect("blocked");
    assert_eq!(rule, "exception_rate");
    assert!(hosts.contains(&"h1".to_string()), "{hosts:?}");
    assert!(at <= 7, "blocked at +{at}");
}
