//! Properties of the judge as a state machine, on random fleets: a block is sticky and
//! keeps its time, the decision only depends on data up to the judged minute, and the
//! statistics behave as probabilities.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;
use vigil_detector::judge::stats::{binomial_upper_tail, poisson_upper_tail};
use vigil_detector::judge::{
    AppMemory, Batch, Decision, Definition, HostMetrics, HostMinute, Release, ReleaseJudge,
};

const T0: i64 = 1_763_880_000;

fn rows_strategy() -> impl Strategy<Value = Vec<HostMinute>> {
    // 4 hosts × 40 minutes (-20..20), random counts with a random fingerprint or two.
    proptest::collection::vec((0u64..2000, 0u64..40, 0u64..6, 0u64..3, 0.0f64..100.0), 160)
        .prop_map(|cells| {
            cells
                .into_iter()
                .enumerate()
                .filter(|(i, c)| !(i + c.0 as usize).is_multiple_of(17)) // some minutes missing
                .map(|(i, (lines, errors, known, fresh, cpu))| {
                    let mut exceptions = BTreeMap::new();
                    if known > 0 {
                        exceptions.insert(1u64, known);
                    }
                    if fresh > 0 && i.is_multiple_of(7) {
                        exceptions.insert(2u64, fresh);
                    }
                    HostMinute {
                        host: format!("h{}", i % 4),
                        minute: T0 + ((i / 4) as i64 - 20) * 60,
                        lines,
                        events: 0,
                        error_lines: errors.min(lines),
                        warn_lines: 0,
                        exceptions,
                        host_metrics: HostMetrics {
                            cpu_pct: Some(cpu),
                            ..HostMetrics::default()
                        },
                        requests: None,
                    }
                })
                .collect()
        })
}

fn new_judge() -> ReleaseJudge {
    judge_with(HashMap::new())
}

/// The judge of [`new_judge`] with more definitions (fingerprint 2 stays the dangerous
/// `LinkageError`; fingerprint 1 is known).
fn judge_with(more: HashMap<u64, Definition>) -> ReleaseJudge {
    let release = Release {
        app: "shop".into(),
        batches: vec![Batch {
            at: T0,
            hosts: vec!["h0".into(), "h1".into()],
        }],
        reference_hosts: vec!["h2".into(), "h3".into()],
        until: Some(T0 + 20 * 60),
    };
    let mut definitions = HashMap::from([(
        2u64,
        Definition {
            class: "java.lang.LinkageError".into(),
            dangerous: true,
            ..Definition::default()
        },
    )]);
    definitions.extend(more);
    ReleaseJudge::new(release, HashSet::from([1u64]), definitions)
}

fn definition(class: &str, frames: &[&str]) -> Definition {
    Definition {
        class: class.into(),
        frames: frames.iter().map(|f| f.to_string()).collect(),
        ..Definition::default()
    }
}

/// A round's decision, time and reasons as (rule, hosts).
type RoundOutcome = (Decision, i64, Vec<(String, Vec<String>)>);

/// Decisions, times and (rule, hosts) of every round over `rows`.
fn decisions(mut judge: ReleaseJudge, rows: &[HostMinute]) -> Vec<RoundOutcome> {
    let memory = AppMemory::default();
    (0..20)
        .map(|m| {
            let minute = T0 + m * 60;
            let known: Vec<HostMinute> = rows
                .iter()
                .filter(|r| r.minute <= minute)
                .cloned()
                .collect();
            let v = judge.round(minute, &known, &memory);
            let reasons = v
                .reasons
                .iter()
                .map(|r| (r.rule.to_string(), r.hosts.clone()))
                .collect();
            (v.decision, v.decided_at, reasons)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn block_is_sticky_and_rows_after_the_minute_are_ignored(rows in rows_strategy()) {
        let memory = AppMemory::default();
        let mut judge = new_judge();
        let mut twin = new_judge();
        let mut blocked_at = None;
        for m in 0..20 {
            let minute = T0 + m * 60;
            let known: Vec<HostMinute> = rows.iter().filter(|r| r.minute <= minute).cloned().collect();
            let v = judge.round(minute, &known, &memory);
            // The same round given every row (future ones too) decides the same.
            let w = twin.round(minute, &rows, &memory);
            prop_assert_eq!(&v, &w);
            if let Some(at) = blocked_at {
                prop_assert_eq!(v.decision, Decision::Block);
                prop_assert_eq!(v.decided_at, at);
            } else if v.decision == Decision::Block {
                prop_assert!(!v.reasons.is_empty());
                prop_assert_eq!(v.decided_at, minute + 60);
                blocked_at = Some(v.decided_at);
            } else {
                prop_assert_eq!(v.decision == Decision::Pass, v.reasons.is_empty());
            }
        }
    }

    /// An agent upgrade renames fingerprint 1 to 3 (same definition) on the released hosts
    /// from their release on: the judge decides as if nothing had been renamed.
    #[test]
    fn a_fingerprint_renamed_by_an_agent_upgrade_changes_no_decision(rows in rows_strategy()) {
        let io = definition("java.io.IOException", &["shop.pay.Gateway.charge"]);
        let defs = HashMap::from([(1u64, io.clone()), (3u64, io)]);
        let renamed: Vec<HostMinute> = rows
            .iter()
            .cloned()
            .map(|mut r| {
                if (r.host == "h0" || r.host == "h1") && r.minute >= T0
                    && let Some(k) = r.exceptions.remove(&1)
                {
                    r.exceptions.insert(3, k);
                }
                r
            })
            .collect();
        prop_assert_eq!(
            decisions(judge_with(defs.clone()), &rows),
            decisions(judge_with(defs), &renamed)
        );
    }

    /// Fingerprint 1 is a frameless exception (fast throw). Released hosts restart with
    /// the release and print part of it in full (fingerprint 4, same family) for a while;
    /// a surge of it on h0 may come with the release: the judge decides as if all of it had
    /// stayed frameless.
    #[test]
    fn splitting_a_family_between_its_shapes_changes_no_decision(
        rows in rows_strategy(),
        salt in 0i64..3,
        surge in prop_oneof![Just(0u64), 1u64..30],
    ) {
        let npe = "java.lang.NullPointerException";
        let defs = HashMap::from([
            (1u64, definition(npe, &[])),
            (4u64, definition(npe, &["shop.cart.Cart.total", "shop.web.Cart.show"])),
        ]);
        let rows: Vec<HostMinute> = rows
            .into_iter()
            .map(|mut r| {
                if r.host == "h0" && r.minute >= T0 + 300 && surge > 0 {
                    *r.exceptions.entry(1).or_default() += surge;
                }
                r
            })
            .collect();
        let split: Vec<HostMinute> = rows
            .iter()
            .cloned()
            .map(|mut r| {
                let host: i64 = r.host[1..].parse().unwrap_or(0);
                let way = (r.minute / 60 + host + salt).rem_euclid(3);
                if host < 2 && r.minute >= T0
                    && let Some(k) = r.exceptions.remove(&1)
                {
                    let full = match way { 0 => k, 1 => 0, _ => k / 2 };
                    r.exceptions.insert(4, full);
                    r.exceptions.insert(1, k - full);
                    r.exceptions.retain(|_, n| *n > 0);
                }
                r
            })
            .collect();
        prop_assert_eq!(
            decisions(judge_with(defs.clone()), &rows),
            decisions(judge_with(defs), &split)
        );
    }

    #[test]
    fn tails_are_probabilities_and_monotone(k in 0.0f64..50.0, extra in 0.0f64..50.0, p in 0.001f64..0.999) {
        let n = k + extra;
        let a = binomial_upper_tail(k, n, p);
        let b = binomial_upper_tail(k + 1.0, n, p);
        prop_assert!((0.0..=1.0).contains(&a));
        prop_assert!(b <= a + 1e-12);
        let mean = p * 20.0;
        let c = poisson_upper_tail(k, mean);
        prop_assert!((0.0..=1.0).contains(&c));
        prop_assert!(poisson_upper_tail(k + 1.0, mean) <= c + 1e-12);
    }
}
