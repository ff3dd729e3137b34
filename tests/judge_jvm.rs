//! The judgement on what a real JVM logs: a small Java service, compiled with `javac` and
//! run with `java` on four hosts, writes twelve minutes of a logback-style log in which its
//! request handler really throws `NullPointerException`s (dereferencing a null, caught and
//! logged with `printStackTrace`, as HotSpot prints it, with its helpful message). Real
//! agents read the logs and ship the
//! counters over gRPC to a detector whose rounds run on a clock the test moves.
//!
//! - `shop`: the two released hosts throw the known exception fifteen times as often after
//!   the release (2 → 30 a minute): blocked for its rate by the first round that has a
//!   minute past the released hosts' two-minute warm-up, on the minutes up to the switch +
//!   3 min (the round runs 15 s later; before the sequential rate test it was not blocked
//!   within 6 minutes, with a three-minute warm-up at + 4 min), never as a new exception;
//! - `cart`: the same service and release without the spike: passes;
//! - `search`: the released hosts run the service recompiled with its code three lines
//!   lower, so every frame of the same failure has another line number: passes;
//! - `pay`: the spike on every host at once, released or not (a fleet-wide surge): passes;
//! - `auth`: the released hosts also look for a class their classpath lacks, a
//!   `ClassNotFoundException` (dangerous): blocked at once, by the minute it shows;
//! - `mail`: the released hosts also fail to parse the id they were given, a
//!   `NumberFormatException` the app never threw: blocked as a new exception, as of the
//!   third minute after the switch.
//!
//! The service stamps its records with the minute it simulates (the history is written in
//! a second, not twelve minutes); everything else — the exceptions, their traces, the
//! agents, the gRPC stream, the store — is real. Needs `javac` and `java` (Debian
//! `default-jdk-headless`, which `.ci/run` installs); without them the test is skipped
//! with a message, except under CI.

mod common;
mod ops_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::clocked::{ClockedDetector, ROUND_DELAY_SECS};
use common::{AgentSetup, eventually, now_ms, output_within, spawn};
use serde_json::json;

const SERVICE: &str = r#"import java.io.FileOutputStream;
import java.io.PrintStream;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;

public class Service {
    static final DateTimeFormatter STAMP =
        DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSS").withZone(ZoneOffset.UTC);

    static String customer(int request) {
        // Every few requests a customer record has no name.
        return request % 3 == 0 ? null : "customer-" + request;
    }

    static int greet(String name) {
        return name.length();
    }

    // Args: log file, first minute (epoch seconds), minutes, release minute index
    // (-1: never), requests per minute, failing requests per minute before and after, and
    // optionally "new": after the release, failing requests also parse their id, or
    // "missing": they also load a class that is not there.
    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(new FileOutputStream(args[0], true), true, "UTF-8");
        long first = Long.parseLong(args[1]);
        int minutes = Integer.parseInt(args[2]);
        int release = Integer.parseInt(args[3]);
        int perMinute = Integer.parseInt(args[4]);
        int failingBefore = Integer.parseInt(args[5]);
        int failingAfter = Integer.parseInt(args[6]);
        boolean parses = args.length > 7 && args[7].equals("new");
        boolean loads = args.length > 7 && args[7].equals("missing");
        for (int t = 0; t < minutes; t++) {
            int failing = release >= 0 && t >= release ? failingAfter : failingBefore;
            for (int i = 0; i < perMinute; i++) {
                long ms = (first + 60L * t) * 1000 + (60_000L * i) / perMinute;
                String stamp = STAMP.format(Instant.ofEpochMilli(ms));
                int request = t * perMinute + i;
                boolean fails = (long) i * failing / perMinute != (long) (i + 1) * failing / perMinute;
                // A failing request asks for a customer that has no name: the JVM throws.
                String name = fails ? customer(3 * request) : "customer-" + request;
                try {
                    greet(name);
                    out.println(stamp + " INFO  [exec-" + (i % 8) + "] shop.Service - request " + request + " served");
                } catch (NullPointerException e) {
                    out.println(stamp + " ERROR [exec-" + (i % 8) + "] shop.Service - request " + request + " failed");
                    e.printStackTrace(out);
                }
                if (fails && loads && release >= 0 && t >= release) {
                    try {
                        Class.forName("shop.PromoEngineV2");
                    } catch (ClassNotFoundException e) {
                        out.println(stamp + " ERROR [exec-" + (i % 8) + "] shop.Service - request " + request + " has no promotions");
                        e.printStackTrace(out);
                    }
                }
                if (fails && parses && release >= 0 && t >= release) {
                    try {
                        Integer.parseInt(name);
                    } catch (NumberFormatException e) {
                        out.println(stamp + " ERROR [exec-" + (i % 8) + "] shop.Service - request " + request + " has a bad id");
                        e.printStackTrace(out);
                    }
                }
            }
        }
        out.close();
    }
}
"#;

const HOSTS: [&str; 4] = ["jvm-rel-1", "jvm-rel-2", "jvm-ref-1", "jvm-ref-2"];
const APPS: [&str; 6] = ["shop", "cart", "search", "pay", "mail", "auth"];
/// Requests a minute per host, and failing ones before and (shop, released hosts) after.
const PER_MINUTE: u32 = 240;
const FAILING: u32 = 2;
const SPIKE: u32 = 30;

fn java(tool: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.current_dir(dir)
        .env_remove("JAVA_TOOL_OPTIONS")
        .env_remove("_JAVA_OPTIONS")
        .env_remove("JDK_JAVA_OPTIONS")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn releases_of_a_real_jvm_service_are_judged_for_what_they_changed() {
    const TEST: &str = "releases_of_a_real_jvm_service_are_judged_for_what_they_changed";
    let (Some(javac), Some(java_bin)) = (
        ops_common::require_tool(TEST, "javac", "default-jdk-headless"),
        ops_common::require_tool(TEST, "java", "default-jdk-headless"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The service, and the same service with its code three lines lower (`moved/`).
    let moved = SERVICE.replace(
        "    static int greet(String name) {",
        "\n\n\n    static int greet(String name) {",
    );
    for (sub, source) in [(".", SERVICE), ("moved", moved.as_str())] {
        let src = dir.path().join(sub);
        std::fs::create_dir_all(&src).expect("source dir");
        std::fs::write(src.join("Service.java"), source).expect("write Service.java");
        let out = output_within(
            java(&javac, &src).args(["-d", ".", "Service.java"]),
            None,
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "javac: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let now = now_ms() / 1000;
    let this_minute = now - now.rem_euclid(60);
    let first = this_minute - 12 * 60;
    // The release reached the released hosts six minutes ago.
    let release = 6;
    let release_at = first + release * 60;
    let detector = ClockedDetector::start(dir.path(), now - 60);

    // Twelve minutes of each app on each host, as the JVM writes them.
    let mut expected_lines = Vec::new();
    for host in HOSTS {
        for app in APPS {
            let logs = dir.path().join(host).join(app);
            std::fs::create_dir_all(&logs).expect("log dir");
            let log = logs.join("app.log");
            let released = host.starts_with("jvm-rel");
            let spiked = (app == "shop" && released) || app == "pay";
            let after = if spiked { SPIKE } else { FAILING };
            let classes = if app == "search" && released {
                "moved"
            } else {
                "."
            };
            let mode = match app {
                "mail" if released => "new",
                "auth" if released => "missing",
                _ => "same",
            };
            let out = output_within(
                java(&java_bin, dir.path()).args([
                    "-XX:+OmitStackTraceInFastThrow", // HotSpot's default, said out loud
                    "-XX:-UsePerfData",
                    "-cp",
                    classes,
                    "Service",
                    &log.display().to_string(),
                    &first.to_string(),
                    "12",
                    &release.to_string(),
                    &PER_MINUTE.to_string(),
                    &FAILING.to_string(),
                    &after.to_string(),
                    mode,
                ]),
                None,
                Duration::from_secs(120),
            );
            assert!(
                out.status.success(),
                "java on {host}/{app}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = std::fs::read_to_string(&log).expect("the log");
            assert!(
                text.contains("java.lang.NullPointerException"),
                "no exception in {host}/{app}"
            );
            expected_lines.push((app, host, text.lines().count() as u64));
        }
    }
    let mut agents = Vec::new();
    for host in HOSTS {
        let glob = |app: &str| format!("{}/*.log", dir.path().join(host).join(app).display());
        let tables: String = APPS[1..]
            .iter()
            .map(|app| {
                format!(
                    "[[logs]]\napp = \"{app}\"\npaths = [\"{}\"]\nstart_at = \"beginning\"\ntimezone = \"UTC\"\napp_packages = [\"shop\"]\n",
                    glob(app)
                )
            })
            .collect();
        let config = AgentSetup {
            logs_extra: "timezone = \"UTC\"\napp_packages = [\"shop\"]\n",
            tables: &tables,
            ..AgentSetup::new(&detector.grpc, host, "shop", &glob("shop"))
        }
        .write(dir.path());
        agents.push(spawn(
            "vigil-agent",
            &config,
            &dir.path().join(format!("{host}.log")),
        ));
    }
    let delivered = eventually(Duration::from_secs(60), || {
        expected_lines
            .iter()
            .all(|(app, host, lines)| detector.try_lines(app, host) == Some(*lines))
    });
    assert!(
        delivered,
        "the logs were not stored: {:?}",
        expected_lines
            .iter()
            .map(|(app, host, lines)| (app, host, detector.try_lines(app, host), lines))
            .collect::<Vec<_>>()
    );

    let mut ids = Vec::new();
    for app in APPS {
        let created = detector.post(
            "/api/v1/releases",
            &json!({
                "app": app,
                "version": "2.0.1",
                "hosts": [HOSTS[0], HOSTS[1]],
                "reference_hosts": [HOSTS[2], HOSTS[3]],
                "started_at": release_at,
            }),
        );
        ids.push(created["id"].as_i64().expect("release id"));
    }
    // This minute's round judges the twelve minutes.
    detector.set_clock(this_minute + ROUND_DELAY_SECS);
    let mut releases = Vec::new();
    let judged = eventually(Duration::from_secs(30), || {
        releases = ids
            .iter()
            .map(|id| detector.get(&format!("/api/v1/releases/{id}")))
            .collect();
        releases
            .iter()
            .all(|r| r["last_round"].as_i64() == Some(this_minute - 60))
    });
    assert!(judged, "not judged: {releases:?}");
    for (app, r) in APPS.iter().zip(&releases) {
        eprintln!(
            "{app}: {} at {}: {}",
            r["decision"], r["decided_at"], r["reasons"]
        );
    }
    // Blocked by the round that ends the first minute past the two-minute warm-up
    // (minutes 0–1 after the switch are left out): decided on the minutes up to the
    // switch + 3 min, the round running 15 s later. One minute of data is enough; no
    // second round is waited for.
    let shop = &releases[0];
    assert_blocked(
        shop,
        "exception_rate",
        "java.lang.NullPointerException",
        release_at + 3 * 60,
    );
    assert!(
        shop["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["rule"] != "new_exception")),
        "{shop}"
    );
    // The agents count log events, and the rate is per event, as the summary says.
    assert!(
        shop["reasons"][0]["summary"]
            .as_str()
            .is_some_and(|s| s.contains(" per 10k events vs ")),
        "{shop}"
    );
    // No change, a line-number-only change, a fleet-wide surge: not the release's doing.
    for (app, r) in APPS.iter().zip(&releases).skip(1).take(3) {
        assert_eq!(r["decision"], "pass", "{app}: {r}");
    }
    // A new exception must show in two rounds of three; the detector's first rounds
    // judge every minute since the release in turn, so it is blocked by the round after
    // the second minute that has it: the switch + 3 min at the latest.
    assert_blocked(
        &releases[4],
        "new_exception",
        "java.lang.NumberFormatException",
        release_at + 3 * 60,
    );
    assert_blocked(
        &releases[5],
        "dangerous_exception",
        "java.lang.ClassNotFoundException",
        release_at + 60,
    );
    drop(agents);
}

/// `release` is blocked by `rule` for `class` (its first reason), decided by `by`.
fn assert_blocked(release: &serde_json::Value, rule: &str, class: &str, by: i64) {
    assert_eq!(release["decision"], "block", "{release}");
    let reason = &release["reasons"][0];
    assert_eq!(reason["rule"], rule, "{release}");
    assert!(
        reason["summary"]
            .as_str()
            .is_some_and(|s| s.contains(class)),
        "{release}"
    );
    let decided = release["decided_at"].as_i64().unwrap_or(i64::MAX);
    assert!(decided <= by, "blocked {} s late: {release}", decided - by);
}
