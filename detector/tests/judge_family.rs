//! One failure under several fingerprints: HotSpot's fast throw (a frameless shape and full
//! traces of one family) and an agent's fingerprint algorithm upgrade (one definition, two
//! fingerprints). The judge must neither see them as new failures nor hide real ones.

use std::collections::{BTreeMap, HashMap};

use vigil_detector::judge::{
    AppMemory, Batch, Decision, Definition, HostMetrics, HostMinute, JudgeParams, Release,
    ReleaseJudge, Verdict, fingerprint_hex,
};

/// Minute of the first batch.
const T0: i64 = 1_763_880_000;
/// A known, unrelated exception every host shows.
const KNOWN: u64 = 0x0b5e_3c1d_2a4f_6e88;
/// `NullPointerException` without frames (fast throw): the family's frameless shape.
const NPE_BARE: u64 = 0x4e50_4500_0000_0001;
/// The same failure printed in full (a host that restarted and has not warmed up).
const NPE_FULL: u64 = 0x4e50_4500_0000_0002;
/// A new exception of another class.
const IAE_FULL: u64 = 0x1a3e_0000_0000_0003;
/// `ArithmeticException` without frames, never seen.
const AE_BARE: u64 = 0xae00_0000_0000_0004;
/// `ClassCastException` (dangerous) without frames, and in full from two sites.
const CCE_BARE: u64 = 0xcce0_0000_0000_0005;
const CCE_FULL: u64 = 0xcce0_0000_0000_0006;
const CCE_OTHER: u64 = 0xcce0_0000_0000_0007;
/// `NoSuchMethodError` (dangerous), never seen.
const NSME: u64 = 0x0005_e000_0000_0008;
/// One failure under fingerprint versions 1 and 2 (the same definition), and a version-2
/// fingerprint of the same class from another site.
const IO_V1: u64 = 0x1001_0000_0000_0009;
const IO_V2: u64 = 0x1002_0000_0000_000a;
const IO_V2_OTHER: u64 = 0x1002_0000_0000_000b;

fn def(class: &str, causes: &[&str], frames: &[&str], dangerous: bool) -> Definition {
    Definition {
        class: class.into(),
        causes: causes.iter().map(|s| s.to_string()).collect(),
        message: String::new(),
        frames: frames.iter().map(|s| s.to_string()).collect(),
        dangerous,
    }
}

fn definitions() -> HashMap<u64, Definition> {
    let npe = "java.lang.NullPointerException";
    let cce = "java.lang.ClassCastException";
    let io = "java.io.IOException";
    let pay = ["shop.pay.Gateway.charge", "shop.web.PayController.pay"];
    HashMap::from([
        (
            KNOWN,
            def("java.net.SocketTimeoutException", &[], &["a.B.c"], false),
        ),
        (NPE_BARE, def(npe, &[], &[], false)),
        (
            NPE_FULL,
            def(
                npe,
                &[],
                &[
                    "shop.cart.CartService.total",
                    "shop.web.CartController.show",
                ],
                false,
            ),
        ),
        (
            IAE_FULL,
            def(
                "java.lang.IllegalArgumentException",
                &[],
                &[
                    "shop.cart.CartService.total",
                    "shop.web.CartController.show",
                ],
                false,
            ),
        ),
        (
            AE_BARE,
            def("java.lang.ArithmeticException", &[], &[], false),
        ),
        (CCE_BARE, def(cce, &[], &[], true)),
        (
            CCE_FULL,
            def(
                cce,
                &[],
                &["shop.promo.Rules.apply", "shop.web.Cart.show"],
                true,
            ),
        ),
        (
            CCE_OTHER,
            def(
                cce,
                &[],
                &["shop.search.Index.load", "shop.web.Search.find"],
                true,
            ),
        ),
        (
            NSME,
            def(
                "java.lang.NoSuchMethodError",
                &[],
                &["shop.pay.Gateway.charge"],
                true,
            ),
        ),
        (IO_V1, def(io, &["java.net.SocketException"], &pay, false)),
        (IO_V2, def(io, &["java.net.SocketException"], &pay, false)),
        (
            IO_V2_OTHER,
            def(
                io,
                &["java.net.SocketException"],
                &["shop.mail.Smtp.send", "shop.web.Order.confirm"],
                false,
            ),
        ),
    ])
}

const HOSTS: [&str; 6] = ["h1", "h2", "h3", "h4", "h5", "h6"];
const RELEASED: [&str; 2] = ["h1", "h2"];
const REFERENCE: [&str; 4] = ["h3", "h4", "h5", "h6"];

/// Six hosts from an hour before `T0` to an hour after, 1,000 lines a minute and the known
/// exception with a little wobble; `tweak` adds the scenario (minute index relative to
/// `T0`, the wobble 0..4).
fn fleet(tweak: impl Fn(&str, i64, u64, &mut HostMinute)) -> Vec<HostMinute> {
    let mut rows = Vec::new();
    for m in -60..60 {
        for (i, h) in HOSTS.iter().enumerate() {
            let wobble = ((m + 3 * i as i64).rem_euclid(5)) as u64;
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
                    mem_used_pct: Some(50.0),
                    ..HostMetrics::default()
                },
                requests: None,
            };
            tweak(h, m, wobble, &mut row);
            row.exceptions.retain(|_, k| *k > 0);
            rows.push(row);
        }
    }
    rows.sort_by_key(|r| r.minute);
    rows
}

fn released(h: &str) -> bool {
    RELEASED.contains(&h)
}

fn judge_with(known: &[u64], definitions: HashMap<u64, Definition>) -> ReleaseJudge {
    let release = Release {
        app: "shop".into(),
        batches: vec![Batch {
            at: T0 + 17,
            hosts: RELEASED.iter().map(|h| h.to_string()).collect(),
        }],
        reference_hosts: REFERENCE.iter().map(|h| h.to_string()).collect(),
        until: Some(T0 + 3600),
    };
    ReleaseJudge::new(release, known.iter().copied().collect(), definitions)
}

fn judge() -> ReleaseJudge {
    judge_with(&[KNOWN], definitions())
}

/// Rounds minute by minute over the rows known so far; every verdict.
fn run(judge: &mut ReleaseJudge, rows: &[HostMinute]) -> Vec<Verdict> {
    let memory = AppMemory::default();
    (0..60)
        .map(|m| {
            let minute = T0 + m * 60;
            let known: Vec<HostMinute> = rows
                .iter()
                .filter(|r| r.minute <= minute)
                .cloned()
                .collect();
            judge.round(minute, &known, &memory)
        })
        .collect()
}

fn first_block(verdicts: &[Verdict]) -> Option<(usize, &Verdict)> {
    verdicts
        .iter()
        .enumerate()
        .find(|(_, v)| v.decision == Decision::Block)
}

/// Every reason of every verdict as (rule, fingerprint).
fn reasons(verdicts: &[Verdict]) -> Vec<(String, Option<String>)> {
    let mut out: Vec<_> = verdicts
        .iter()
        .flat_map(|v| &v.reasons)
        .map(|r| (r.rule.to_string(), r.fingerprint.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Reference hosts print the NPE frameless for the whole time (they are warm); the
/// released hosts printed it frameless before their release too, then restart with the new
/// version and print it in full, at the same rate, until their JIT warms up again and
/// part of it goes frameless.
fn fast_throw(h: &str, m: i64, wobble: u64, row: &mut HostMinute) {
    let count = 2 + wobble % 2;
    if !released(h) || m < 0 {
        row.exceptions.insert(NPE_BARE, count);
    } else if m < 25 {
        row.exceptions.insert(NPE_FULL, count);
    } else {
        row.exceptions.insert(NPE_FULL, count / 2);
        row.exceptions.insert(NPE_BARE, count - count / 2);
    }
}

#[test]
fn a_restarted_host_printing_full_traces_of_a_fast_throw_exception_passes() {
    let rows = fleet(fast_throw);
    let mut j = judge();
    let verdicts = run(&mut j, &rows);
    assert!(
        verdicts.iter().all(|v| v.decision == Decision::Pass),
        "{:?}",
        verdicts.iter().find(|v| v.decision != Decision::Pass)
    );

    // The same rows when the judge cannot relate the shapes (no definition of the
    // frameless one): the full trace looks new. This is what the family rule prevents.
    let mut defs = definitions();
    defs.remove(&NPE_BARE);
    let mut j = judge_with(&[KNOWN], defs);
    let verdicts = run(&mut j, &rows);
    let (_, v) = first_block(&verdicts).expect("without the family the full NPE is new");
    assert!(
        v.reasons.iter().any(|r| r.rule.as_str() == "new_exception"
            && r.fingerprint.as_deref() == Some(fingerprint_hex(NPE_FULL).as_str())),
        "{v:?}"
    );
}

#[test]
fn the_frameless_shape_known_only_in_the_apps_history_covers_a_rare_full_trace() {
    // Nobody prints the NPE in the windows; the app showed it frameless last week. A
    // released host prints a handful of full traces: not new.
    let rows = fleet(|h, m, _, r| {
        if h == "h1" && (m == 5 || m == 6) {
            r.exceptions.insert(NPE_FULL, if m == 5 { 3 } else { 2 });
        }
    });
    let mut j = judge_with(&[KNOWN, NPE_BARE], definitions());
    let verdicts = run(&mut j, &rows);
    assert!(
        reasons(&verdicts).iter().all(|r| r.0 != "new_exception"),
        "{:?}",
        reasons(&verdicts)
    );
    // Without that history it is a new exception.
    let mut j = judge();
    let verdicts = run(&mut j, &rows);
    assert!(
        reasons(&verdicts)
            .contains(&("new_exception".to_string(), Some(fingerprint_hex(NPE_FULL)))),
        "{:?}",
        reasons(&verdicts)
    );
}

#[test]
fn a_genuinely_new_exception_beside_a_fast_throw_family_is_still_new() {
    let rows = fleet(|h, m, w, r| {
        fast_throw(h, m, w, r);
        if released(h) && m >= 5 {
            r.exceptions.insert(IAE_FULL, 3);
        }
    });
    let mut j = judge();
    let verdicts = run(&mut j, &rows);
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert!(at <= 7, "blocked at +{at}");
    assert!(
        v.reasons.iter().any(|r| r.rule.as_str() == "new_exception"
            && r.fingerprint.as_deref() == Some(fingerprint_hex(IAE_FULL).as_str())),
        "{v:?}"
    );
    let npe = [fingerprint_hex(NPE_BARE), fingerprint_hex(NPE_FULL)];
    assert!(
        reasons(&verdicts)
            .iter()
            .all(|(_, fp)| fp.as_ref().is_none_or(|f| !npe.contains(f))),
        "the NPE family stays quiet: {:?}",
        reasons(&verdicts)
    );

    // A frameless exception of a family nobody showed is new as well.
    let rows = fleet(|h, m, w, r| {
        fast_throw(h, m, w, r);
        if released(h) && m >= 5 {
            r.exceptions.insert(AE_BARE, 3);
        }
    });
    let mut j = judge();
    let verdicts = run(&mut j, &rows);
    let (_, v) = first_block(&verdicts).expect("blocked");
    assert!(
        v.reasons.iter().any(|r| r.rule.as_str() == "new_exception"
            && r.fingerprint.as_deref() == Some(fingerprint_hex(AE_BARE).as_str())),
        "{v:?}"
    );
}

#[test]
fn a_full_class_cast_trace_of_a_known_frameless_one_is_not_dangerous_but_a_new_linkage_error_is() {
    // A reference host showed the frameless ClassCastException now and then; a released
    // host prints it in full after its restart.
    let cce = |h: &str, m: i64, r: &mut HostMinute| {
        if h == "h4" && [-40, -10, 7].contains(&m) {
            r.exceptions.insert(CCE_BARE, 1);
        }
        if h == "h1" && (m == 4 || m == 30) {
            r.exceptions.insert(CCE_FULL, 1);
        }
    };
    let rows = fleet(|h, m, _, r| cce(h, m, r));
    let mut j = judge();
    let verdicts = run(&mut j, &rows);
    assert!(
        verdicts.iter().all(|v| v.decision == Decision::Pass),
        "{:?}",
        verdicts.iter().find(|v| v.decision != Decision::Pass)
    );
    // Nor from an alert between rounds.
    let memory = AppMemory::default();
    let mut j = judge();
    let known: Vec<HostMinute> = rows
        .iter()
        .filter(|r| r.minute <= T0 + 3 * 60)
        .cloned()
        .collect();
    j.round(T0 + 3 * 60, &known, &memory);
    let defs = definitions();
    let v = j.alert(T0 + 4 * 60 + 5, "h1", CCE_FULL, &defs[&CCE_FULL], &memory);
    assert_eq!(v.decision, Decision::Pass, "{v:?}");
    // A NoSuchMethodError never seen still blocks at once, in the round and on an alert.
    let v = j.alert(T0 + 4 * 60 + 9, "h2", NSME, &defs[&NSME], &memory);
    assert_eq!(v.decision, Decision::Block);
    assert_eq!(v.decided_at, T0 + 4 * 60 + 9);
    let rows = fleet(|h, m, _, r| {
        cce(h, m, r);
        if h == "h2" && m == 6 {
            r.exceptions.insert(NSME, 1);
        }
    });
    let mut j = judge();
    let verdicts = run(&mut j, &rows);
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(at, 6, "blocked at the end of the minute it showed");
    assert_eq!(v.reasons.len(), 1, "{v:?}");
    assert_eq!(v.reasons[0].rule.as_str(), "dangerous_exception");
    assert_eq!(
        v.reasons[0].fingerprint.as_deref(),
        Some(fingerprint_hex(NSME).as_str())
    );
}

#[test]
fn a_full_trace_does_not_stand_for_its_family_only_the_frameless_shape_does() {
    // A full ClassCastException from one site is known; the released host throws it from
    // another site: a new dangerous failure, blocked at once.
    let rows = fleet(|h, m, _, r| {
        if h == "h4" && [-40, -10].contains(&m) {
            r.exceptions.insert(CCE_OTHER, 1);
        }
        if h == "h1" && m == 4 {
            r.exceptions.insert(CCE_FULL, 1);
        }
    });
    let mut j = judge();
    let verdicts = run(&mut j, &rows);
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert_eq!(at, 4);
    assert_eq!(v.reasons[0].rule.as_str(), "dangerous_exception");
    assert_eq!(
        v.reasons[0].fingerprint.as_deref(),
        Some(fingerprint_hex(CCE_FULL).as_str())
    );
    // The other way round: a frameless ClassCastException on the released host after a
    // full one was seen elsewhere is the same family's fast throw.
    let rows = fleet(|h, m, _, r| {
        if h == "h4" && [-40, -10].contains(&m) {
            r.exceptions.insert(CCE_OTHER, 1);
        }
        if h == "h1" && m == 4 {
            r.exceptions.insert(CCE_BARE, 1);
        }
    });
    let mut j = judge();
    let verdicts = run(&mut j, &rows);
    assert!(first_block(&verdicts).is_none(), "{:?}", verdicts.last());
}

#[test]
fn a_spike_of_a_family_split_across_both_shapes_is_more_of_a_known_exception() {
    // Everyone prints the NPE mostly frameless, now and then in full. After the release
    // the released hosts print ×15 of it, most of it in full (restarted JIT).
    let spike = |h: &str, m: i64, w: u64, r: &mut HostMinute| {
        if released(h) && m >= 3 {
            r.exceptions.insert(NPE_FULL, 18 + w);
            r.exceptions.insert(NPE_BARE, 12);
        } else {
            r.exceptions.insert(NPE_BARE, 2);
            if (m + w as i64).rem_euclid(7) == 0 {
                r.exceptions.insert(NPE_FULL, 1);
            }
        }
    };
    let rows = fleet(spike);
    let mut j = judge();
    let verdicts = run(&mut j, &rows);
    let (at, v) = first_block(&verdicts).expect("blocked");
    assert!(at <= 8, "blocked at +{at}");
    let rules = reasons(&verdicts);
    assert!(
        rules
            .iter()
            .all(|r| r.0 != "new_exception" && r.0 != "dangerous_exception"),
        "{rules:?}"
    );
    let r = v
        .reasons
        .iter()
        .find(|r| r.rule.as_str() == "exception_rate")
        .expect("rate reason");
    assert_eq!(
        r.fingerprint.as_deref(),
        Some(fingerprint_hex(NPE_BARE).as_str()),
        "the family is named by its frameless fingerprint"
    );
    assert!(r.summary.contains("frameless and full traces"), "{r:?}");
    // Observed: both shapes on the released hosts over the settled minutes judged (past
    // the logs' warm-up).
    let at_minute = T0 + at as i64 * 60;
    let settled = T0 + JudgeParams::default().warmup_minutes * 60;
    let both: u64 = rows
        .iter()
        .filter(|x| released(&x.host) && x.minute >= settled && x.minute <= at_minute)
        .map(|x| {
            x.exceptions.get(&NPE_FULL).unwrap_or(&0) + x.exceptions.get(&NPE_BARE).unwrap_or(&0)
        })
        .sum();
    assert_eq!(r.evidence.observed, both as f64, "{r:?}");
    assert!(r.evidence.effect >= 5.0, "{r:?}");
}

#[test]
fn a_version_2_fingerprint_of_a_known_version_1_definition_is_known() {
    // The released hosts got a new agent with the release (fingerprint version 2): the
    // same failure arrives under another fingerprint, same definition, same rate.
    let upgraded = |h: &str, m: i64, w: u64, r: &mut HostMinute| {
        let fp = if released(h) && m >= 0 { IO_V2 } else { IO_V1 };
        r.exceptions.insert(fp, 1 + w % 3);
    };
    let rows = fleet(upgraded);
    let mut j = judge_with(&[KNOWN, IO_V1], definitions());
    let verdicts = run(&mut j, &rows);
    assert!(
        verdicts.iter().all(|v| v.decision == Decision::Pass),
        "{:?}",
        verdicts.iter().find(|v| v.decision != Decision::Pass)
    );

    // Known only in the app's history: a few events under version 2 are not new.
    let rare = fleet(|h, m, _, r| {
        if h == "h1" && (m == 5 || m == 6) {
            r.exceptions.insert(IO_V2, if m == 5 { 3 } else { 2 });
        }
    });
    let mut j = judge_with(&[KNOWN, IO_V1], definitions());
    let verdicts = run(&mut j, &rare);
    assert!(reasons(&verdicts).is_empty(), "{:?}", reasons(&verdicts));
    let mut j = judge();
    let verdicts = run(&mut j, &rare);
    assert!(
        reasons(&verdicts).contains(&("new_exception".to_string(), Some(fingerprint_hex(IO_V2)))),
        "unknown definition: new ({:?})",
        reasons(&verdicts)
    );

    // Same classes, another site: a new failure, whatever the version.
    let rows = fleet(|h, m, w, r| {
        upgraded(h, m, w, r);
        if released(h) && m >= 5 {
            r.exceptions.insert(IO_V2_OTHER, 3);
        }
    });
    let mut j = judge_with(&[KNOWN, IO_V1], definitions());
    let verdicts = run(&mut j, &rows);
    let (_, v) = first_block(&verdicts).expect("blocked");
    assert!(
        v.reasons.iter().any(|r| r.rule.as_str() == "new_exception"
            && r.fingerprint.as_deref() == Some(fingerprint_hex(IO_V2_OTHER).as_str())),
        "{v:?}"
    );
    assert!(
        v.reasons
            .iter()
            .all(|r| r.fingerprint.as_deref() != Some(fingerprint_hex(IO_V1).as_str())),
        "{v:?}"
    );
}

#[test]
fn more_of_a_failure_across_a_fingerprint_version_change_is_still_seen() {
    // The version-2 fingerprint's counts are compared with the version-1 history: ×8 on
    // the released hosts is more of a known exception, not new and not hidden.
    let rows = fleet(|h, m, w, r| {
        if released(h) && m >= 0 {
            r.exceptions.insert(IO_V2, if m >= 3 { 16 } else { 2 });
        } else {
            r.exceptions.insert(IO_V1, 1 + w % 3);
        }
    });
    let mut j = judge_with(&[KNOWN, IO_V1], definitions());
    let verdicts = run(&mut j, &rows);
    let (_, v) = first_block(&verdicts).expect("blocked");
    let r = v
        .reasons
        .iter()
        .find(|r| r.rule.as_str() == "exception_rate")
        .expect("rate reason");
    assert_eq!(
        r.fingerprint.as_deref(),
        Some(fingerprint_hex(IO_V1).as_str())
    );
    assert!(
        r.summary.contains("2 fingerprints with one definition"),
        "{r:?}"
    );
    assert!(
        reasons(&verdicts).iter().all(|r| r.0 != "new_exception"),
        "{:?}",
        reasons(&verdicts)
    );
}
