//! End to end, through minute rounds: three releases judged from the counters of real
//! agents (the `vigil-agent` binary, over gRPC on 127.0.0.1) by a detector whose clock the
//! test moves. Each host's log is written with the last 12 minutes of history (the agents
//! count every event in the minute of its own timestamp), the releases start 7 minutes ago;
//! once the detector has stored every line of the history's completed minutes, the test
//! moves the clock past the next round, which judges all of them. No wait for a minute
//! boundary: the test takes seconds.
//!
//! - a new exception at a moderate rate on the released host → `block`;
//! - a release that only moves line numbers of a known exception → `pass`;
//! - an error surge on every host at once, released or not → `pass`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::clocked::{ClockedDetector, ROUND_DELAY_SECS};
use common::{AgentSetup, TimedLogs, eventually, now_ms, spawn};
use serde_json::json;

const HOSTS: [&str; 3] = ["rounds-rel", "rounds-ref-1", "rounds-ref-2"];
const APPS: [&str; 3] = ["newexc", "linemove", "surge"];
/// Records per host per app per minute.
const PER_MINUTE: i64 = 240;

/// The record `i` of `app` on `host` at `t` (Unix ms), `released` when the host runs the
/// new version then. Returns the text (with its newline).
fn record(app: &str, host: &str, t: i64, i: i64, released: bool, after_release: bool) -> String {
    let stamp = jiff::Timestamp::from_millisecond(t)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    let error = |class: &str, line: i64| {
        format!(
            "{stamp} ERROR [exec-{}] shop.Service - request {i} failed\n\
             {class}: request {i}\n\
             \tat shop.stock.StockService.reserve(StockService.java:{line})\n\
             \tat shop.Service.handle(Service.java:{})\n",
            i % 8,
            20 + i % 3
        )
    };
    let info = format!(
        "{stamp} INFO  [exec-{}] shop.Service - request {i} served on {host}\n",
        i % 8
    );
    match app {
        // The new version throws an exception nobody has seen, about 4 times a minute.
        "newexc" if released && i % 60 == 7 => error("shop.stock.StockMismatchException", 51),
        // A known exception, about 3 times a minute everywhere; the new version moved the
        // code, so its line numbers differ.
        "linemove" if i % 80 == 3 => error(
            "java.lang.IllegalStateException",
            if released { 140 + i % 5 } else { 88 + i % 5 },
        ),
        // After the release every host, released or not, logs five times the errors (a
        // dependency outage), with a known exception.
        "surge" if i % 80 == 5 || (after_release && i % 16 == 5) => {
            error("java.net.ConnectException", 33)
        }
        _ => info,
    }
}

#[test]
fn minute_rounds_block_a_new_exception_and_pass_line_moves_and_fleet_surges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    let this_minute = now - now.rem_euclid(60_000);
    // The detector's clock a minute behind: its next round, when the test moves the clock
    // to this minute's round, judges the minutes before this one, all of them complete.
    let detector = ClockedDetector::start(dir.path(), now / 1000 - 60);
    let start = this_minute - 12 * 60_000;
    let release_ms = start + 5 * 60_000 + 20_000;
    let mut logs = Vec::new();
    let mut agents = Vec::new();
    for host in HOSTS {
        let mut extra = String::new();
        for app in APPS {
            let dir = dir.path().join(host).join(app);
            std::fs::create_dir_all(&dir).expect("log dir");
            logs.push((app.to_owned(), host.to_owned(), dir.join("app.log")));
            if app != APPS[0] {
                extra.push_str(&format!(
                    "[[logs]]\napp = \"{app}\"\npaths = [\"{}/*.log\"]\nstart_at = \"beginning\"\ntimezone = \"UTC\"\n\n",
                    dir.display()
                ));
            }
        }
        let first = dir.path().join(host).join(APPS[0]);
        let glob = format!("{}/*.log", first.display());
        let config = AgentSetup {
            logs_extra: &format!("timezone = \"UTC\"\n\n{extra}"),
            ..AgentSetup::new(&detector.grpc, host, APPS[0], &glob)
        }
        .write(dir.path());
        agents.push(spawn(
            "vigil-agent",
            &config,
            &dir.path().join(format!("{host}.log")),
        ));
    }
    // The history at once, then the live log (its minutes are not judged here).
    let paths = logs.iter().map(|(_, _, path)| path.clone()).collect();
    let written: Vec<(String, String)> = logs
        .iter()
        .map(|(app, host, _)| (app.clone(), host.clone()))
        .collect();
    let live = TimedLogs::start(paths, start, PER_MINUTE, move |log, t, i| {
        let (app, host, _): &(String, String, _) = &logs[log];
        let after = t >= release_ms;
        record(app, host, t, i, after && host == HOSTS[0], after)
    });
    // Every line of the judged minutes stored, for every app and host.
    let expected = |app: &str, host: &str| -> u64 {
        let step = 60_000 / PER_MINUTE;
        (start / step..this_minute / step)
            .map(|i| {
                let t = i * step;
                let after = t >= release_ms;
                record(app, host, t, i, after && host == HOSTS[0], after)
                    .matches('\n')
                    .count() as u64
            })
            .sum()
    };
    let stored = |app: &str, host: &str| -> u64 {
        detector.get(&format!(
            "/api/v1/series?app={app}&host={host}&to={}",
            this_minute / 1000 - 60
        ))["minutes"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["lines"].as_u64()).sum())
            .unwrap_or(0)
    };
    let delivered = eventually(Duration::from_secs(60), || {
        written
            .iter()
            .all(|(app, host)| stored(app, host) == expected(app, host))
    });
    assert!(
        delivered,
        "the history was not stored: {:?}",
        written
            .iter()
            .map(|(app, host)| (app, host, stored(app, host), expected(app, host)))
            .collect::<Vec<_>>()
    );

    // Releases, started in the past like the history.
    let mut ids = Vec::new();
    for app in APPS {
        let release = detector.post(
            "/api/v1/releases",
            &json!({
                "app": app,
                "version": "2.0.0",
                "hosts": [HOSTS[0]],
                "reference_hosts": [HOSTS[1], HOSTS[2]],
                "started_at": release_ms / 1000,
            }),
        );
        ids.push(release["id"].as_i64().expect("release id"));
    }

    // This minute's round judges the whole history.
    detector.set_clock(this_minute / 1000 + ROUND_DELAY_SECS);
    let judged_through = this_minute - 60_000;
    let mut releases = Vec::new();
    let judged = eventually(Duration::from_secs(30), || {
        releases = ids
            .iter()
            .map(|id| detector.get(&format!("/api/v1/releases/{id}")))
            .collect::<Vec<_>>();
        releases.iter().all(|r| {
            r["last_round"]
                .as_i64()
                .is_some_and(|m| m * 1000 >= judged_through)
        })
    });
    drop(live);
    for (app, release) in APPS.iter().zip(&releases) {
        eprintln!(
            "{app}: {} after rounds through {}: {}",
            release["decision"], release["last_round"], release["reasons"]
        );
    }
    assert!(
        judged,
        "the releases were not judged through the minute of {} within 30 s: {releases:?}",
        judged_through / 1000
    );
    let newexc = &releases[0];
    assert_eq!(newexc["decision"], "block", "{newexc}");
    assert!(
        newexc["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["rule"] == "new_exception")),
        "{newexc}"
    );
    let decided = newexc["decided_at"].as_i64().unwrap_or(0) * 1000;
    assert!(
        decided - release_ms <= 5 * 60_000,
        "blocked {} s after the release",
        (decided - release_ms) / 1000
    );
    assert_eq!(
        releases[1]["decision"], "pass",
        "line-number moves: {}",
        releases[1]
    );
    assert_eq!(
        releases[2]["decision"], "pass",
        "fleet-wide surge: {}",
        releases[2]
    );
    drop(agents);
    let _: &Path = dir.path();
}
