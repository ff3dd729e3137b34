//! `/metrics` of a real agent (admin port) and a real detector (HTTP port), after the agent
//! shipped some lines, pass `promtool check metrics` (Debian package `prometheus`) and carry
//! the figures of what happened.

mod common;
mod ops_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{AgentSetup, DetectorProcess, append_lines, eventually, output_within, spawn};
use ops_common::require_tool;

fn scrape(url: &str) -> String {
    let mut response = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{url}: content type {content_type:?}"
    );
    response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Runs `promtool check metrics` on `text`; panics with its complaints.
fn promtool_check(promtool: &Path, what: &str, text: &str) {
    let output = output_within(
        Command::new(promtool).args(["check", "metrics"]),
        Some(text.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "promtool check metrics on the {what}'s /metrics: {}\n{}{}\n--- scraped:\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The value of the sample line `name` (with its labels, exactly) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn agent_and_detector_metrics_pass_promtool() {
    let Some(promtool) = require_tool(
        "agent_and_detector_metrics_pass_promtool",
        "promtool",
        "prometheus",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let detector = DetectorProcess::start(dir.path());
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    append_lines(&logs.join("shop.log"), 1, 50);
    let glob = format!("{}/*.log", logs.display());
    let config = AgentSetup {
        admin: true,
        ..AgentSetup::new(&detector.grpc, "web-1", "shop", &glob)
    }
    .write(dir.path());
    let config_text = std::fs::read_to_string(&config).expect("agent config");
    let admin = config_text
        .lines()
        .find_map(|l| l.strip_prefix("admin_listen = \"")?.strip_suffix('"'))
        .expect("admin_listen in the test config")
        .to_owned();
    let _agent = spawn("vigil-agent", &config, &dir.path().join("agent.log"));

    assert!(
        eventually(Duration::from_secs(30), || detector.lines("shop", "web-1")
            == 50),
        "the detector did not get the 50 lines; agent log:\n{}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );

    let agent_text = scrape(&format!("http://{admin}/metrics"));
    promtool_check(&promtool, "agent", &agent_text);
    assert_eq!(
        sample(&agent_text, "vigil_agent_lines_read_total{app=\"shop\"}"),
        Some(50.0),
        "{agent_text}"
    );

    let detector_text = scrape(&format!("{}/metrics", detector.http));
    promtool_check(&promtool, "detector", &detector_text);
    let ingested = sample(&detector_text, "vigil_detector_reports_ingested_total");
    assert!(ingested.is_some_and(|n| n >= 1.0), "{detector_text}");
    assert_eq!(
        sample(&detector_text, "vigil_detector_agent_streams"),
        Some(1.0),
        "{detector_text}"
    );
    let store = sample(&detector_text, "vigil_detector_store_bytes");
    assert!(store.is_some_and(|b| b > 0.0), "{detector_text}");
    assert!(
        sample(&detector_text, "vigil_detector_ingest_commit_seconds_count")
            .is_some_and(|n| n >= 1.0),
        "{detector_text}"
    );
    assert_eq!(
        sample(
            &detector_text,
            "vigil_detector_decisions_total{decision=\"block\"}"
        ),
        Some(0.0)
    );
}
