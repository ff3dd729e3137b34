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
                        error_lines: errors.min(lines),
                        warn_lines: 0,
                        exceptions,
                        host_metrics: HostMetrics {
                            cpu_pct: Some(cpu),
                            ..HostMetrics::default()
                        },
                    }
                })
                .collect()
        })
}

fn new_judge() -> ReleaseJudge {
    let release = Release {
        app: "shop".into(),
        batches: vec![Batch {
            at: T0,
            hosts: vec!["h0".into(), "h1".into()],
        }],
        reference_hosts: vec!["h2".into(), "h3".into()],
        until: Some(T0 + 20 * 60),
    };
    let definitions = HashMap::from([(
        2u64,
        Definition {
            class: "java.lang.LinkageError".into(),
            dangerous: true,
            ..Definition::default()
        },
    )]);
    ReleaseJudge::new(release, HashSet::from([1u64]), definitions)
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
