//! The `vigil-agent` command line, run as a user would.

#[path = "../../tests/common/wait.rs"]
mod wait;

use std::process::Command;
use std::time::Duration;

fn agent(args: &[&str]) -> (bool, String) {
    let output = wait::output_within(
        Command::new(env!("CARGO_BIN_EXE_vigil-agent")).args(args),
        None,
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn check_refuses_a_bad_config_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[[logs]]\napp = \"shop\"\npaths = [\"/var/log/shop/*.log\"]\nevent_start = \"([\"\n",
    )
    .expect("write config");
    let (ok, text) = agent(&["check", "--config", config.to_str().expect("utf-8 path")]);
    assert!(!ok, "check must fail: {text}");
    assert!(
        text.contains("agent.toml: logs[0].event_start: not a regex"),
        "{text}"
    );
}

#[test]
fn check_lists_matched_files_and_reports_an_unreachable_detector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    std::fs::write(logs.join("app.log"), "a line\n").expect("write log");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[detector]\nendpoint = \"http://127.0.0.1:1\"\n\
             [[logs]]\napp = \"shop\"\npaths = [\"{}/*.log\", \"/nonexistent-vigil/*.log\"]\n",
            dir.path().join("data"),
            logs.display()
        ),
    )
    .expect("write config");
    let (ok, text) = agent(&["check", "--config", config.to_str().expect("utf-8 path")]);
    assert!(!ok, "an unreachable detector is a problem: {text}");
    assert!(text.contains("configuration is valid"), "{text}");
    assert!(text.contains("app.log (7 bytes)"), "{text}");
    assert!(
        text.contains("directory /nonexistent-vigil does not exist"),
        "{text}"
    );
    assert!(
        text.contains("detector http://127.0.0.1:1: PROBLEM"),
        "{text}"
    );
}

#[test]
fn check_lists_access_log_files_and_refuses_a_bad_format_saying_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    std::fs::write(logs.join("localhost_access_log.2026-11-23.txt"), "x\n").expect("write log");
    let config = dir.path().join("agent.toml");
    let write = |format: &str| {
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[detector]\nendpoint = \"http://127.0.0.1:1\"\n\
                 [[access_logs]]\napp = \"shop\"\npaths = [\"{}/localhost_access_log.*.txt\"]\n\
                 format = '{format}'\n",
                dir.path().join("data"),
                logs.display()
            ),
        )
        .expect("write config");
    };
    write("%h %l %u %t \"%r\" %s %b %D");
    let (_, text) = agent(&["check", "--config", config.to_str().expect("utf-8 path")]);
    assert!(text.contains("configuration is valid"), "{text}");
    assert!(text.contains("access_logs[0] app \"shop\""), "{text}");
    assert!(
        text.contains("localhost_access_log.2026-11-23.txt (2 bytes)"),
        "{text}"
    );
    write("%h %t \"%r\" %s %{remote}x");
    let (ok, text) = agent(&["check", "--config", config.to_str().expect("utf-8 path")]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "agent.toml: access_logs[0].format: at character 15 (%{remote}x): unknown directive"
        ),
        "{text}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let (ok, text) = agent(&["check", "--config", "/nonexistent/agent.toml"]);
    assert!(!ok);
    assert!(
        text.contains("/nonexistent/agent.toml: cannot read"),
        "{text}"
    );
}

#[test]
fn parse_prints_every_exception_event_and_a_summary() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/jvm-samples/logback.log");
    assert!(
        corpus.exists(),
        "the corpus is missing at {} (it lives beside the repository in shared/)",
        corpus.display()
    );
    let (ok, text) = agent(&["parse", "--json", corpus.to_str().expect("utf-8 path")]);
    assert!(ok, "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let (summary, events) = lines.split_last().expect("a summary");
    assert_eq!(
        summary["summary"],
        serde_json::json!({"events": 395, "exceptions": 3, "fingerprints": 2, "dangerous": 2})
    );
    assert_eq!(events.len(), 3);
    for event in events {
        for key in [
            "file",
            "line",
            "time",
            "class",
            "causes",
            "fingerprint",
            "dangerous",
            "frames",
        ] {
            assert!(event.get(key).is_some(), "{key} missing in {event}");
        }
        assert_eq!(event["fingerprint"].as_str().map(str::len), Some(16));
    }
}
