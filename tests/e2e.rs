//! End to end: the real detector and agent binaries on 127.0.0.1.

mod common;

use std::time::Duration;

use std::io::Write;
use std::time::Instant;

use common::{
    AgentSetup, DetectorProcess, TestPki, Watched, agent_config, agent_config_with, agent_status,
    append_lines, eventually, free_ports, shop_logs, spawn, try_agent_status, wait_until,
};

/// Whether the file at `path` (a process's log) contains `text`.
fn log_contains(path: &std::path::Path, text: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|log| log.contains(text))
}

/// Lines written to a log file arrive in the detector, each counted exactly once.
#[test]
fn every_line_written_is_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (logs, log) = shop_logs(dir.path());
    // Lines written before the agent starts are read too (start_at = "beginning").
    append_lines(&log, 0, 500);

    let detector = DetectorProcess::start(dir.path());
    let config = agent_config(
        dir.path(),
        &detector.grpc,
        "e2e-1",
        "shop",
        &format!("{}/*.log", logs.display()),
    );
    let mut agent = spawn("vigil-agent", &config, &dir.path().join("agent.log"));

    let mut written = 500;
    for _ in 0..10 {
        append_lines(&log, written, 300);
        written += 300;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(written, 3500);
    let arrived = eventually(Duration::from_secs(30), || {
        detector.lines("shop", "e2e-1") >= written
    });
    let counted = detector.lines("shop", "e2e-1");
    assert!(
        arrived,
        "only {counted} of {written} lines arrived within 30 s"
    );
    // Nothing arrives twice, also once the agent has flushed again and stopped: a window
    // of a few flushes (every 200 ms) for a double count to show, then a clean stop.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        agent.terminate(),
        "the agent did not stop cleanly on SIGTERM"
    );
    assert_eq!(detector.lines("shop", "e2e-1"), written);

    let series = detector.get("/api/v1/series?app=shop&host=e2e-1");
    let minute = &series["minutes"][0];
    assert_eq!(minute["host"], "e2e-1");
    assert_eq!(minute["app"], "shop");
    assert_eq!(minute["minute"].as_i64().map(|m| m % 60), Some(0));
}

/// The app's process, found by the `process` pattern on its command line, is measured by
/// the agent and stored by the detector: its CPU and resident memory per minute, in the
/// series API (and on the release page).
#[test]
fn the_apps_process_cpu_and_memory_reach_the_detector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (logs, log) = shop_logs(dir.path());
    append_lines(&log, 0, 10);
    let marker = format!("vigil-e2e-app-{}", std::process::id());
    // The "app": a shell whose command line carries the marker (`; true` keeps a shell
    // that would exec a lone command from replacing itself with `sleep`); its process group
    // is killed when the test ends, passing or not.
    let app = common::wait::spawn_group(std::process::Command::new("sh").args([
        "-c",
        "sleep 600; true",
        &marker,
    ]));
    let detector = DetectorProcess::start(dir.path());
    let config = AgentSetup {
        logs_extra: &format!("process = \"{marker}\""),
        host_extra: "interval = \"1s\"",
        ..AgentSetup::new(
            &detector.grpc,
            "e2e-proc",
            "shop",
            &format!("{}/*.log", logs.display()),
        )
    }
    .write(dir.path());
    let mut agent = spawn("vigil-agent", &config, &dir.path().join("agent.log"));
    assert!(
        eventually(Duration::from_secs(20), || detector
            .try_lines("shop", "e2e-proc")
            .is_some_and(|n| n >= 10)),
        "the lines did not arrive"
    );
    // A few samples, then a clean stop sends the open minute's figures.
    std::thread::sleep(Duration::from_millis(3_500));
    assert!(agent.terminate(), "the agent did not stop cleanly");
    drop(app);
    let series = detector.get("/api/v1/series?app=shop&host=e2e-proc");
    let minutes = series["minutes"].as_array().expect("minutes");
    let measured: Vec<_> = minutes
        .iter()
        .filter_map(|m| {
            Some((
                m["process_cpu_pct"].as_f64()?,
                m["process_rss_bytes"].as_u64()?,
            ))
        })
        .collect();
    assert!(!measured.is_empty(), "no process figures stored: {series}");
    for (cpu, rss) in measured {
        assert!(
            (0.0..50.0).contains(&cpu),
            "a sleeping shell at {cpu} % CPU"
        );
        assert!(
            (64 * 1024..256 << 20).contains(&rss),
            "a shell's resident memory {rss} bytes"
        );
    }
}

/// An agent killed after reading a file but before its first report, whose file is then
/// rotated away and compressed by real `gzip` before the agent is back: the restarted agent
/// finds the compressed generation from the positions stored at its first start, and
/// counts every line once. (Without them it would start afresh from what the glob matches
/// then, and the first generation's lines would never be counted.)
#[test]
fn an_agent_killed_before_its_first_report_finds_the_file_rotated_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, log) = shop_logs(dir.path());
    append_lines(&log, 0, 1000);
    let detector = DetectorProcess::start(dir.path());
    // No report before the kill: the first flush comes 59 s after the start.
    let config = AgentSetup {
        flush_interval: "59s",
        admin: true,
        ..AgentSetup::new(&detector.grpc, "first", "shop", &log.display().to_string())
    }
    .write(dir.path());
    let agent_log = dir.path().join("agent.log");
    let read_all = |config: &std::path::Path, path: &std::path::Path, size: u64| {
        eventually(Duration::from_secs(30), || {
            try_agent_status(config).is_ok_and(|status| {
                status["files"].as_array().is_some_and(|files| {
                    files.iter().any(|f| {
                        f["path"].as_str() == path.to_str() && f["offset"].as_u64() == Some(size)
                    })
                })
            })
        })
    };
    let size = std::fs::metadata(&log).expect("log").len();
    let mut agent = spawn("vigil-agent", &config, &agent_log);
    assert!(
        read_all(&config, &log, size),
        "the agent did not read the log within 30 s"
    );
    agent.kill();
    assert_eq!(
        detector.lines("shop", "first"),
        0,
        "a report before the kill"
    );

    // logrotate's `create` + `compress`, by hand: rename, new file, gzip the old one.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    append_lines(&log, 1000, 500);
    let gzip = std::process::Command::new("gzip")
        .arg(&rotated)
        .status()
        .expect("gzip");
    assert!(gzip.success(), "gzip failed");

    // Back with reports every 200 ms.
    let text = std::fs::read_to_string(&config).expect("config");
    common::write(&config, &text.replace("\"59s\"", "\"200ms\""));
    let _agent = spawn("vigil-agent", &config, &agent_log);
    let arrived = eventually(Duration::from_secs(30), || {
        detector.lines("shop", "first") >= 1500
    });
    let counted = detector.lines("shop", "first");
    assert!(arrived, "{counted} of 1,500 lines counted within 30 s");
    // A window of a few flushes for a double count to show.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        detector.lines("shop", "first"),
        1500,
        "every line of both generations counted once"
    );
}

/// The detector killed with SIGKILL and down for a while: the agent keeps its reports in
/// the spool and delivers them when the detector is back, each counted once.
#[test]
fn a_detector_outage_loses_nothing_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Watched {
        mut detector,
        log,
        agent: _agent,
        ..
    } = Watched::start(dir.path(), "e2e-2");
    append_lines(&log, 0, 1000);
    wait_until(
        Duration::from_secs(30),
        "the first 1000 lines to arrive before the outage",
        || detector.lines("shop", "e2e-2") == 1000,
    );

    detector.process.kill();
    let mut written = 1000;
    for _ in 0..10 {
        append_lines(&log, written, 200);
        written += 200;
        std::thread::sleep(Duration::from_millis(200));
    }
    detector.restart(dir.path());
    append_lines(&log, written, 500);
    written += 500;
    let arrived = eventually(Duration::from_secs(40), || {
        detector.lines("shop", "e2e-2") >= written
    });
    assert!(
        arrived,
        "{} of {written} lines arrived after the outage",
        detector.lines("shop", "e2e-2")
    );
    // A window of a few flushes for a double count to show.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(detector.lines("shop", "e2e-2"), written);
}

/// Mutual TLS on the gRPC port: an agent with a certificate from the configured CA
/// delivers every line; one without a client certificate is refused and delivers nothing.
#[test]
fn mutual_tls_admits_only_agents_with_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::create(dir.path());
    let detector = DetectorProcess::start_with(
        dir.path(),
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n",
            pki.server_cert, pki.server_key, pki.ca
        ),
    );
    let endpoint = detector.grpc.replace("http://", "https://");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    append_lines(&logs.join("shop.log"), 0, 700);
    let glob = format!("{}/*.log", logs.display());

    let trusted = agent_config_with(
        dir.path(),
        &endpoint,
        &format!(
            "tls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}",
            pki.ca, pki.client_cert, pki.client_key
        ),
        "tls-ok",
        "shop",
        &glob,
    );
    let stranger = agent_config_with(
        dir.path(),
        &endpoint,
        &format!("tls_ca = {:?}", pki.ca),
        "tls-no-cert",
        "shop",
        &glob,
    );
    let _trusted = spawn("vigil-agent", &trusted, &dir.path().join("agent-ok.log"));
    let _stranger = spawn(
        "vigil-agent",
        &stranger,
        &dir.path().join("agent-no-cert.log"),
    );
    assert!(
        eventually(Duration::from_secs(30), || detector.lines("shop", "tls-ok")
            == 700),
        "the agent with a client certificate delivered {} of 700 lines",
        detector.lines("shop", "tls-ok")
    );
    // The stranger has tried and been refused (not merely not tried yet).
    let stranger_log = dir.path().join("agent-no-cert.log");
    assert!(
        eventually(Duration::from_secs(30), || log_contains(
            &stranger_log,
            "detector unreachable"
        )),
        "the agent without a client certificate never said it was refused: {}",
        std::fs::read_to_string(&stranger_log).unwrap_or_default()
    );
    assert_eq!(detector.lines("shop", "tls-no-cert"), 0);
}

/// A dangerous exception reaches the detector as an alert within a second, without waiting
/// for the minute report (the agent here flushes minutes only every 60 s).
#[test]
fn a_dangerous_exception_arrives_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (logs, log) = shop_logs(dir.path());
    append_lines(&log, 0, 10);
    let detector = DetectorProcess::start(dir.path());
    let glob = format!("{}/*.log", logs.display());
    let config = AgentSetup {
        flush_interval: "60s",
        admin: true,
        ..AgentSetup::new(&detector.grpc, "alert-1", "shop", &glob)
    }
    .write(dir.path());
    let _agent = spawn("vigil-agent", &config, &dir.path().join("agent.log"));
    // The latency is measured from an agent that is up: connected, the existing lines read.
    wait_until(
        Duration::from_secs(30),
        "the agent to connect to the detector and read the existing lines",
        || {
            try_agent_status(&config).is_ok_and(|status| {
                status["detector"]["connected"] == true && status["files"][0]["lag"] == 0
            })
        },
    );

    let written = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    file.write_all(
        b"2026-11-23 18:45:02.461 ERROR [main] shop.Checkout - checkout failed\n\
java.lang.NoClassDefFoundError: shop/promo/PromoEngineV2\n\
\tat shop.Checkout.applyPromotions(Checkout.java:88)\n\
\tat shop.Checkout.run(Checkout.java:41)\n\
2026-11-23 18:45:02.562 INFO  [main] shop.Checkout - next request\n",
    )
    .expect("append");
    drop(file);
    let mut seen = None;
    let arrived = eventually(Duration::from_secs(10), || {
        let body = ureq::get(&format!("{}/api/v1/apps/shop/exceptions", detector.http))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok());
        seen = body.and_then(|b| {
            b["exceptions"]
                .as_array()
                .and_then(|list| list.iter().find(|e| e["dangerous"] == true).cloned())
        });
        seen.is_some()
    });
    let latency = written.elapsed();
    assert!(arrived, "no dangerous exception arrived within 10 s");
    let exception = seen.unwrap_or_default();
    assert_eq!(exception["class"], "java.lang.NoClassDefFoundError");
    assert_eq!(exception["fingerprint"].as_str().map(str::len), Some(16));
    assert!(
        latency < Duration::from_millis(1500),
        "the alert took {latency:?} (target: within a second)"
    );
    eprintln!("dangerous exception visible in the detector {latency:?} after it was written");
}

/// With the detector unreachable the spool fills up; reading then pauses (the file keeps
/// the data) and `status` says so. When the detector comes, everything drains, each line
/// counted once.
#[test]
fn a_full_spool_pauses_reading_and_drains_when_the_detector_comes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (logs, log) = shop_logs(dir.path());
    let [grpc_port, http_port] = free_ports();
    let endpoint = format!("http://127.0.0.1:{grpc_port}");
    let glob = format!("{}/*.log", logs.display());
    let config = AgentSetup {
        admin: true,
        tables: "[spool]\nmax_bytes = \"4KiB\"",
        ..AgentSetup::new(&endpoint, "spool-1", "shop", &glob)
    }
    .write(dir.path());
    let _agent = spawn("vigil-agent", &config, &dir.path().join("agent.log"));
    let mut written = 0;
    // 100 lines every 100 ms or more until the spool is full: a bounded writer (30 s at
    // most, a few MB).
    let full = eventually(Duration::from_secs(30), || {
        append_lines(&log, written, 100);
        written += 100;
        std::thread::sleep(Duration::from_millis(100));
        // Until the agent's admin port is up there is no status.
        try_agent_status(&config).is_ok_and(|status| status["spool"]["full"] == true)
    });
    assert!(full, "the spool never filled ({written} lines written)");
    // Reading is paused now: what is written next stays in the file. The status is
    // refreshed every second: wait for one that has seen these lines.
    append_lines(&log, written, 2000);
    written += 2000;
    let mut status = serde_json::Value::Null;
    let paused = eventually(Duration::from_secs(15), || {
        status = agent_status(&config);
        status["files"][0]["lag"].as_u64().unwrap_or(0) > 100_000
    });
    assert!(
        paused,
        "reading must pause while the spool is full (lag {} bytes): {status}",
        status["files"][0]["lag"]
    );
    assert_eq!(status["spool"]["full"], true);
    assert_eq!(status["detector"]["connected"], false);

    let detector = DetectorProcess::start_on(dir.path(), grpc_port, http_port, "");
    let arrived = eventually(Duration::from_secs(40), || {
        detector.lines("shop", "spool-1") >= written
    });
    assert!(
        arrived,
        "{} of {written} lines arrived after the spool drained",
        detector.lines("shop", "spool-1")
    );
    // A window of a few flushes for a double count to show.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(detector.lines("shop", "spool-1"), written);
    // The status is refreshed every second.
    let mut status = serde_json::Value::Null;
    let drained = eventually(Duration::from_secs(15), || {
        status = agent_status(&config);
        status["spool"]["full"] == false && status["files"][0]["lag"] == 0
    });
    assert!(drained, "the spool and the file did not drain: {status}");
}

/// SIGHUP re-reads the configuration: new globs take effect with nothing lost or counted
/// twice; a bad configuration is refused, the old one kept, the reason logged.
#[test]
fn sighup_reloads_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).expect("dir a");
    std::fs::create_dir(&b).expect("dir b");
    let detector = DetectorProcess::start(dir.path());
    let glob_a = format!("{}/*.log", a.display());
    // The admin endpoint on, as by default: a reload binds its address again at once.
    let config = AgentSetup {
        admin: true,
        ..AgentSetup::new(&detector.grpc, "reload-1", "shop", &glob_a)
    }
    .write(dir.path());
    let agent_log = dir.path().join("agent.log");
    let mut agent = spawn("vigil-agent", &config, &agent_log);
    append_lines(&a.join("app.log"), 0, 300);
    wait_until(
        Duration::from_secs(20),
        "the 300 lines of a/app.log to arrive",
        || detector.lines("shop", "reload-1") == 300,
    );

    let text = std::fs::read_to_string(&config).expect("config");
    let glob_b = format!("{}/*.log", b.display());
    std::fs::write(
        &config,
        text.replace(
            &format!("[\"{glob_a}\"]"),
            &format!("[\"{glob_a}\", \"{glob_b}\"]"),
        ),
    )
    .expect("new config");
    let hup = |agent: &common::Running| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &agent.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    };
    hup(&agent);
    wait_until(
        Duration::from_secs(20),
        "the agent to log \"configuration reloaded\" after SIGHUP",
        || log_contains(&agent_log, "configuration reloaded"),
    );
    wait_until(
        Duration::from_secs(20),
        "the reloaded agent's admin endpoint to answer",
        || {
            assert!(
                agent.child.try_wait().expect("wait").is_none(),
                "the agent exited on reload: {}",
                std::fs::read_to_string(&agent_log).unwrap_or_default()
            );
            try_agent_status(&config).is_ok()
        },
    );
    append_lines(&b.join("other.log"), 0, 200);
    append_lines(&a.join("app.log"), 300, 100);
    assert!(
        eventually(Duration::from_secs(20), || detector
            .lines("shop", "reload-1")
            == 600),
        "after the reload {} of 600 lines",
        detector.lines("shop", "reload-1")
    );

    std::fs::write(&config, "this is = not [valid").expect("bad config");
    hup(&agent);
    wait_until(
        Duration::from_secs(20),
        "the agent to log \"new configuration refused\" after SIGHUP with a bad config",
        || log_contains(&agent_log, "new configuration refused"),
    );
    assert!(
        agent.child.try_wait().expect("wait").is_none(),
        "a bad configuration must not stop the agent"
    );
    append_lines(&b.join("other.log"), 200, 100);
    assert!(
        eventually(Duration::from_secs(20), || detector
            .lines("shop", "reload-1")
            == 700),
        "with the old configuration kept {} of 700 lines",
        detector.lines("shop", "reload-1")
    );
    // A window of a few flushes for a double count to show.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(detector.lines("shop", "reload-1"), 700);
    assert!(agent.terminate(), "the agent did not stop cleanly");
    let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("new configuration refused"), "{log}");
}

/// The detector re-reads its configuration on SIGHUP: agents reconnect and nothing is lost
/// or counted twice; a bad configuration is refused and the running one kept.
#[test]
fn the_detector_reloads_on_sighup_and_refuses_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Watched {
        mut detector,
        log,
        agent: _agent,
        ..
    } = Watched::start(dir.path(), "hup-1");
    append_lines(&log, 0, 500);
    wait_until(
        Duration::from_secs(20),
        "the first 500 lines to arrive",
        || detector.lines("shop", "hup-1") == 500,
    );

    let hup = |detector: &DetectorProcess| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &detector.process.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    };
    hup(&detector);
    let detector_log = dir.path().join("detector.log");
    // The new file is read on the signal: wait for that before it is overwritten below.
    wait_until(
        Duration::from_secs(20),
        "the detector to log \"configuration reloaded\" after SIGHUP",
        || log_contains(&detector_log, "configuration reloaded"),
    );
    append_lines(&log, 500, 500);
    assert!(
        eventually(Duration::from_secs(30), || {
            detector.try_lines("shop", "hup-1") == Some(1000)
        }),
        "after the reload {:?} of 1000 lines",
        detector.try_lines("shop", "hup-1")
    );
    let good = std::fs::read_to_string(&detector.config).expect("config");
    std::fs::write(&detector.config, "grpc_listen = 42\n").expect("bad config");
    hup(&detector);
    wait_until(
        Duration::from_secs(20),
        "the detector to log \"new configuration refused\" after SIGHUP with a bad config",
        || log_contains(&detector_log, "new configuration refused"),
    );
    assert!(
        detector.process.child.try_wait().expect("wait").is_none(),
        "a bad configuration must not stop the detector"
    );
    append_lines(&log, 1000, 300);
    assert!(
        eventually(Duration::from_secs(30), || detector
            .try_lines("shop", "hup-1")
            == Some(1300)),
        "with the old configuration kept {:?} of 1300 lines",
        detector.try_lines("shop", "hup-1")
    );
    // A window of a few flushes for a double count to show.
    std::thread::sleep(Duration::from_millis(500));
    // A connection pooled before the reload may be reset once: ask again.
    let settled = (0..5).find_map(|_| detector.try_lines("shop", "hup-1"));
    assert_eq!(settled, Some(1300));
    std::fs::write(&detector.config, good).expect("restore config");
    assert!(
        detector.process.terminate(),
        "the detector did not stop cleanly"
    );
    let log = std::fs::read_to_string(&detector_log).unwrap_or_default();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("new configuration refused"), "{log}");
}

/// The API refuses bad requests with a 4xx and a JSON error that says what is wrong.
#[test]
fn bad_series_requests_get_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let detector = DetectorProcess::start(dir.path());
    for (query, expected) in [
        ("from=10&to=5", "from (10) is after to (5)"),
        ("from=yesterday", "from"),
        ("colour=red", "colour"),
    ] {
        let response = ureq::get(&format!("{}/api/v1/series?{query}", detector.http))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .expect("request");
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: serde_json::Value = response.into_body().read_json().expect("JSON error body");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{query}: {error}");
    }
    assert_eq!(
        detector.get("/api/v1/series?app=none"),
        serde_json::json!({"minutes": []})
    );
}
