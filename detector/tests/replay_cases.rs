//! Replay: case validation, the command line, and the committed fixed set of labelled
//! releases (`testdata/replay_fixed.jsonl.gz`, 60 generated cases, seed 7, 30% bad).

#[path = "../../tests/common/wait.rs"]
mod wait;

use std::io::Read;
use std::process::{Command, Output};
use std::time::Duration;

use vigil_detector::replay::{ReplayError, Replayer, Summary, parse_cases};

/// Runs `vigil-detector ARGS` (for at most a minute).
fn replay(args: &[&str]) -> Output {
    wait::output_within(
        Command::new(env!("CARGO_BIN_EXE_vigil-detector")).args(args),
        None,
        Duration::from_secs(60),
    )
}

fn fixed_set() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/replay_fixed.jsonl.gz"
    );
    let file = std::fs::File::open(path).expect("testdata/replay_fixed.jsonl.gz");
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut text)
        .expect("gunzip");
    text
}

const GOOD: &str = r#"{"id": "case-17", "app": "shop", "expect": "block", "fault_at": 1763880120,
 "release": {"version": "2.0.1", "batches": [{"at": 1763880000, "hosts": ["h1", "h2"]}],
             "reference_hosts": ["h3", "h4"], "until": 1763880600},
 "known_fingerprints": ["0b5e3c1d2a4f6e88"],
 "exceptions": {"9f3a5c0e11d2b7a4": {"class": "java.lang.ClassNotFoundException",
                "causes": [], "message": "shop.svc.PromoEngineV2",
                "frames": ["java.net.URLClassLoader.findClass"], "dangerous": true}},
 "minutes": [{"host": "h1", "minute": 1763880120, "lines": 1200, "error_lines": 3,
              "warn_lines": 5, "exceptions": {"9f3a5c0e11d2b7a4": 2},
              "host_metrics": {"cpu_pct": 31.5, "cpu_pct_max": 55.0, "mem_used_pct": 62.0,
                               "load1": 1.1, "disk_read_bytes": 0,
                               "disk_write_bytes": 123456, "disk_busy_pct": 2.5}}]}"#;

fn one_line(json: &str) -> String {
    json.replace('\n', " ")
}

#[test]
fn the_design_example_blocks_on_the_dangerous_exception() {
    let cases = parse_cases(one_line(GOOD).as_bytes()).expect("valid");
    let mut replayer = Replayer::default();
    let r = replayer.judge_case(&cases[0]);
    assert_eq!(r.decision.as_str(), "block");
    assert_eq!(r.reasons[0].rule.as_str(), "dangerous_exception");
    // The exception is counted in minute 1763880120, judged when it completes.
    assert_eq!(r.decided_at, 1_763_880_180);
    assert_eq!(r.seconds_to_block, Some(60));
    assert_eq!(r.hosts_released_at_block, Some(2));
    let memory = &replayer.memories["shop"];
    assert_eq!(memory.releases_learned, 1, "the label was fed back");
}

#[test]
fn a_minute_may_carry_requests_in_the_design_shape() {
    let with = one_line(GOOD).replace(
        "\"warn_lines\": 5,",
        r#""warn_lines": 5, "requests": {"count": 100, "status": {"2xx": 97, "3xx": 0, "4xx": 1, "5xx": 2}, "latency_ms": {"p50": 24.7, "p90": 52.1, "p99": 101.3, "buckets": {"18": 60, "22": 38, "27": 2}}},"#,
    );
    let cases = parse_cases(with.as_bytes()).expect("a valid case");
    let requests = cases[0].rows[0].requests.as_ref().expect("requests");
    assert_eq!(requests.status.server_error, 2);
    assert_eq!(requests.latency_ms.buckets[&22], 38);
}

#[test]
fn malformed_cases_are_rejected_with_line_and_reason() {
    let good = one_line(GOOD);
    let cases = [
        (good.replace("\"block\"", "\"maybe\""), "expect"),
        (
            good.replace("9f3a5c0e11d2b7a4\": 2", "xyz\": 2"),
            "fingerprint",
        ),
        (
            good.replace("\"minute\": 1763880120", "\"minute\": 1763880121"),
            "multiple of 60",
        ),
        (
            good.replace(r#"[{"at": 1763880000, "hosts": ["h1", "h2"]}]"#, "[]"),
            "batches",
        ),
        (
            good.replace("\"until\": 1763880600", "\"until\": 1"),
            "until",
        ),
        ("{not json".to_string(), "invalid case"),
        (
            good.replace(
                "\"warn_lines\": 5,",
                r#""warn_lines": 5, "requests": {"count": 10, "status": {"2xx": 9}},"#,
            ),
            "status classes add up to 9, not count 10",
        ),
        (
            good.replace(
                "\"warn_lines\": 5,",
                r#""warn_lines": 5, "requests": {"count": 1, "status": {"2xx": 1}, "latency_ms": {"buckets": {"-2147483648": 1}}},"#,
            ),
            "latency bucket -2147483648 outside",
        ),
    ];
    for (bad, word) in cases {
        let text = format!("{good}\n\n{bad}\n");
        match parse_cases(text.as_bytes()) {
            Err(ReplayError::Malformed { line, reason }) => {
                assert_eq!(line, 3, "{reason}");
                assert!(reason.contains(word), "{word}: {reason}");
            }
            other => panic!("{word}: expected a malformed case, got {other:?}"),
        }
    }
}

#[test]
fn fixed_set_meets_precision_and_recall_floors() {
    let cases = parse_cases(fixed_set().as_slice()).expect("fixed set parses");
    assert_eq!(cases.len(), 60);
    let mut replayer = Replayer::default();
    let results: Vec<_> = cases.iter().map(|c| replayer.judge_case(c)).collect();
    let s = Summary::of(&results);
    assert!(
        s.counts.tp + s.counts.fn_ >= 10,
        "enough bad releases to measure recall: {s:?}"
    );
    assert!(s.precision.unwrap_or(0.0) >= 0.9, "{s:?}");
    assert!(s.recall.unwrap_or(0.0) >= 0.85, "{s:?}");
    // Every block carries reasons with evidence.
    for r in results.iter().filter(|r| r.decision.as_str() == "block") {
        assert!(!r.reasons.is_empty(), "{}", r.id);
    }
}

#[test]
fn replay_command_prints_one_line_per_case_and_the_json_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cases.jsonl");
    std::fs::write(&path, fixed_set()).expect("write");
    let output = replay(&["replay", "--json", path.to_str().expect("utf-8")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 61);
    let case: serde_json::Value = serde_json::from_str(lines[0]).expect("case line");
    for key in ["id", "expected", "decision", "seconds_to_block", "reasons"] {
        assert!(case.get(key).is_some(), "{key} in {case}");
    }
    let summary: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(lines[60]).expect("summary");
    let keys: Vec<&str> = summary.keys().map(String::as_str).collect();
    let mut expected = vec![
        "cases",
        "tp",
        "fp",
        "tn",
        "fn",
        "precision",
        "recall",
        "median_seconds_to_block",
        "rules",
        "kinds",
    ];
    expected.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, expected);
    assert_eq!(summary["cases"], 60);
    assert!(
        lines[60].starts_with("{\"cases\":60,\"tp\":"),
        "{}",
        lines[60]
    );
    // Every block's rules, right and wrong by label, add up to at least the blocks.
    let rules = summary["rules"].as_object().expect("rules");
    let right: u64 = rules
        .values()
        .map(|r| r["right"].as_u64().unwrap_or(0))
        .sum();
    let wrong: u64 = rules
        .values()
        .map(|r| r["wrong"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        right >= summary["tp"].as_u64().unwrap_or(0) && right > 0,
        "{rules:?}"
    );
    assert!(wrong >= summary["fp"].as_u64().unwrap_or(0), "{rules:?}");

    // Text mode (on the design's example) and a bad file.
    let small = dir.path().join("one.jsonl");
    let kinded = one_line(GOOD).replace(
        "\"expect\": \"block\",",
        "\"expect\": \"block\", \"kind\": \"bad-Dangerous class\",",
    );
    std::fs::write(&small, kinded).expect("write");
    let output = replay(&["replay", small.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("case-17\texpected=block\tdecision=block\tseconds_to_block=60\treasons=dangerous_exception: "),
        "{text}"
    );
    assert!(
        lines[1].starts_with("summary: cases=1 tp=1 fp=0 tn=0 fn=0 precision=1.000"),
        "{text}"
    );
    assert!(
        lines[1]
            .ends_with(" rules=dangerous_exception:1/0/0 kinds=bad-Dangerous%20class:1/0/0/0/0/60"),
        "{text}"
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": 1}\n").expect("write");
    let output = replay(&["replay", bad.to_str().expect("utf-8")]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("bad.jsonl") && err.contains("line 1"), "{err}");
}

#[test]
fn precision_is_null_when_nothing_blocked() {
    let text = one_line(GOOD)
        .replace("\"expect\": \"block\"", "\"expect\": \"pass\"")
        .replace("\"9f3a5c0e11d2b7a4\": 2", "\"0b5e3c1d2a4f6e88\": 1");
    let cases = parse_cases(text.as_bytes()).expect("valid");
    let mut out = Vec::new();
    let s = vigil_detector::replay::run(&cases, Default::default(), true, &mut out).expect("run");
    assert_eq!(s.counts.tn, 1);
    let last = String::from_utf8(out).expect("utf-8");
    let last = last.lines().last().expect("summary");
    assert_eq!(
        last,
        r#"{"cases":1,"tp":0,"fp":0,"tn":1,"fn":0,"precision":null,"recall":null,"median_seconds_to_block":null,"rules":{},"kinds":{}}"#
    );
}

#[test]
fn a_case_kind_must_be_a_short_name() {
    for kind in ["", "   ", &"k".repeat(101), "a\\nb"] {
        let text = one_line(GOOD).replace(
            "\"expect\": \"block\",",
            &format!("\"expect\": \"block\", \"kind\": \"{kind}\","),
        );
        let err = parse_cases(text.as_bytes()).expect_err("refused");
        assert!(
            err.to_string().contains("line 1: `kind`"),
            "{kind:?}: {err}"
        );
    }
}
