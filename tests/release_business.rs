//! End to end, the business signals: four apps whose hosts write nginx access logs
//! (`combined` + `$request_time`, as nginx writes them: the agent's reading of that format
//! is checked against a real nginx in `agent/tests/access_logs.rs`), read by real agents
//! (the `vigil-agent` binary, over gRPC on 127.0.0.1), judged in minute rounds by a detector
//! whose clock the test moves, like `tests/release_rounds.rs`. Nothing unusual is logged by
//! any of them; only their users would notice:
//!
//! - `slow`: the new version answers three times slower → `block` for `latency`;
//! - `failing`: one request in twenty gets a 503 → `block` for `server_errors`;
//! - `drained`: requests stop reaching the released hosts → `block` for `traffic`;
//! - `shifted`: the released hosts get 60 % more requests, just as fast and as healthy →
//!   `pass`.
//!
//! The blocked `slow` release's page is then opened in headless Chromium: its reason is
//! under "Business" and its Requests charts are drawn.

mod browser;
mod common;

use std::time::Duration;

use common::clocked::{ClockedDetector, ROUND_DELAY_SECS};
use common::{AgentSetup, TimedLogs, eventually, now_ms, spawn};
use serde_json::json;

const HOSTS: [&str; 4] = ["biz-rel-1", "biz-rel-2", "biz-ref-1", "biz-ref-2"];
const APPS: [&str; 4] = ["slow", "failing", "drained", "shifted"];
/// Request slots per host per app per minute.
const PER_MINUTE: i64 = 300;

/// A uniform number in [0, 1) from `key` (the same every time).
fn uniform(key: u64) -> f64 {
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn host_index(host: &str) -> u64 {
    HOSTS.iter().position(|h| *h == host).unwrap_or(0) as u64
}

/// The access-log lines of request slot `i` of `app` on `host` at `t` (Unix ms), `released`
/// when the host runs the new version then: none, one or two requests. What is drawn
/// depends on the time since `start` (a whole minute), not on the clock: every run sees
/// the same requests, so the block times it asserts are those of one known history.
fn requests(app: &str, host: &str, start: i64, t: i64, i: i64, released: bool) -> String {
    let i = i - start / (60_000 / PER_MINUTE);
    let key = (host_index(host) << 56) ^ ((i as u64) << 4) ^ app.len() as u64;
    let copies = match app {
        "drained" if released => u64::from(i % 33 == 0),
        "shifted" if released => 1 + u64::from(i % 5 < 3),
        _ => 1,
    };
    let stamp = jiff::Timestamp::from_millisecond(t)
        .map(|ts| ts.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string())
        .unwrap_or_default();
    // Every minute of a host has its own pace (GC, load), shared by its requests.
    let minute_key = (host_index(host) << 40) ^ ((t - start) / 60_000) as u64;
    let pace = (0.15 * (uniform(minute_key) - 0.5)).exp();
    let mut out = String::new();
    for copy in 0..copies {
        let key = key ^ (copy << 60);
        let z = (0..4).map(|k| uniform(key ^ (k << 52))).sum::<f64>() - 2.0;
        let slow = if app == "slow" && released { 3.0 } else { 1.0 };
        let seconds = 0.040 * (0.9 * z).exp() * pace * slow;
        let roll = uniform(key ^ 0xfeed);
        let (status, path) = if app == "failing" && released && roll < 0.05 {
            (503, "/api/checkout")
        } else if roll > 0.998 {
            (500, "/api/orders")
        } else if i % 7 == 0 {
            (404, "/favicon.ico")
        } else {
            (200, "/api/products")
        };
        out.push_str(&format!(
            "10.1.{}.{} - - [{stamp}] \"GET {path}?page={} HTTP/1.1\" {status} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\" {seconds:.3}\n",
            i % 7,
            i % 250,
            i % 40,
            300 + i % 700,
        ));
    }
    out
}

/// The judge's minute of a host's release, and whether a host runs the new version at `t`.
fn released(host: &str, t: i64, release_ms: i64) -> bool {
    host.starts_with("biz-rel") && t >= release_ms
}

#[test]
fn slow_failing_and_drained_releases_are_blocked_and_a_traffic_shift_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    let this_minute = now - now.rem_euclid(60_000);
    // The detector's clock a minute behind: its next round, when the test moves the clock
    // to this minute's round, judges the minutes before this one, all of them complete.
    let detector = ClockedDetector::start(dir.path(), now / 1000 - 60);
    let start = this_minute - 20 * 60_000;
    // Released 9 minutes ago: 2 minutes of restart warm-up, then 7 judged minutes.
    let release_ms = this_minute - 9 * 60_000 + 10_000;
    let mut logs = Vec::new();
    let mut agents = Vec::new();
    for host in HOSTS {
        let mut tables = String::new();
        for app in APPS {
            let logs_dir = dir.path().join(host).join(app);
            std::fs::create_dir_all(&logs_dir).expect("log dir");
            let path = logs_dir.join("access.log");
            tables.push_str(&format!(
                "[[access_logs]]\napp = \"{app}\"\npaths = [{:?}]\nstart_at = \"beginning\"\n\
                 format = '$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time'\n\n",
                path.display().to_string()
            ));
            logs.push((app.to_owned(), host.to_owned(), path));
        }
        // Every agent also tails an (empty) Java log, as a real one would.
        let java = dir.path().join(host).join("java");
        std::fs::create_dir_all(&java).expect("java log dir");
        let glob = format!("{}/*.log", java.display());
        let config = AgentSetup {
            logs_extra: "timezone = \"UTC\"\n",
            tables: &tables,
            ..AgentSetup::new(&detector.grpc, host, APPS[0], &glob)
        }
        .write(dir.path());
        agents.push(spawn(
            "vigil-agent",
            &config,
            &dir.path().join(format!("{host}.log")),
        ));
    }
    let paths = logs.iter().map(|(_, _, path)| path.clone()).collect();
    let written: Vec<(String, String)> = logs
        .iter()
        .map(|(app, host, _)| (app.clone(), host.clone()))
        .collect();
    let live = TimedLogs::start(paths, start, PER_MINUTE, move |log, t, i| {
        let (app, host, _): &(String, String, _) = &logs[log];
        requests(app, host, start, t, i, released(host, t, release_ms))
    });
    // Every request of the judged minutes stored, for every app and host.
    let expected = |app: &str, host: &str| -> u64 {
        let step = 60_000 / PER_MINUTE;
        (start / step..this_minute / step)
            .map(|i| {
                let t = i * step;
                requests(app, host, start, t, i, released(host, t, release_ms))
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
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["requests"]["count"].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    let delivered = eventually(Duration::from_secs(60), || {
        written
            .iter()
            .all(|(app, host)| stored(app, host) == expected(app, host))
    });
    assert!(
        delivered,
        "the requests were not stored: {:?}",
        written
            .iter()
            .map(|(app, host)| (app, host, stored(app, host), expected(app, host)))
            .collect::<Vec<_>>()
    );

    let mut ids = Vec::new();
    for app in APPS {
        let release = detector.post(
            "/api/v1/releases",
            &json!({
                "app": app,
                "version": "3.1.0",
                "hosts": [HOSTS[0], HOSTS[1]],
                "reference_hosts": [HOSTS[2], HOSTS[3]],
                "started_at": release_ms / 1000,
            }),
        );
        ids.push(release["id"].as_i64().expect("release id"));
    }
    detector.set_clock(this_minute / 1000 + ROUND_DELAY_SECS);
    let judged_through = this_minute - 60_000;
    let mut releases = Vec::new();
    let judged = eventually(Duration::from_secs(60), || {
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
            "{app}: {} at {} after rounds through {}: {}",
            release["decision"], release["decided_at"], release["last_round"], release["reasons"]
        );
    }
    assert!(
        judged,
        "the releases were not judged through the minute of {} within 60 s: {releases:?}",
        judged_through / 1000
    );
    let blocked_for = |release: &serde_json::Value, rule: &str| {
        assert_eq!(release["decision"], "block", "{release}");
        assert!(
            release["reasons"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["rule"] == rule)),
            "not blocked for {rule}: {release}"
        );
        let decided = release["decided_at"].as_i64().unwrap_or(0) * 1000;
        (decided - release_ms) / 1000
    };
    let slow = blocked_for(&releases[0], "latency");
    let failing = blocked_for(&releases[1], "server_errors");
    let drained = blocked_for(&releases[2], "traffic");
    eprintln!("blocked after {slow} s (latency), {failing} s (5xx), {drained} s (traffic)");
    // The warm-up (three minutes for latency, two for 5xx and traffic), then the first
    // settled minutes decide.
    assert!(slow <= 7 * 60, "latency blocked after {slow} s");
    assert!(failing <= 5 * 60, "5xx blocked after {failing} s");
    assert!(drained <= 8 * 60, "traffic blocked after {drained} s");
    assert_eq!(
        releases[3]["decision"], "pass",
        "a traffic shift: {}",
        releases[3]
    );

    // The blocked page, as a person opens it.
    let page = format!("{}/releases/{}", detector.http, ids[0]);
    let dom = browser::dump_dom(&page);
    for needle in [
        "id=\"business\"",
        "Business",
        "latency p",
        "id=\"metric-requests\"",
        "id=\"metric-p90\"",
        "id=\"metric-5xx\"",
    ] {
        assert!(dom.contains(needle), "the page lacks {needle:?}");
    }
    let shot = browser::screenshot(&page, "release-latency.png", 1366, 2400);
    eprintln!("screenshot: {}", shot.display());
    drop(agents);
}
