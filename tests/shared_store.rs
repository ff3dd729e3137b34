//! Two real detectors on one real PostgreSQL database, the agents reaching them through a
//! TCP load balancer: every line counted exactly once, a dangerous exception received by
//! either detector blocks its release once with one webhook, the leading detector
//! SIGKILLed during a bad release and the other one blocking it, and both detectors
//! answering the same.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::postgres::{TcpBalancer, TestDatabase};
use common::{AgentSetup, DetectorProcess, eventually, post_json, spawn, webhook_receiver_switch};
use serde_json::{Value, json};

const HOSTS: [&str; 4] = ["rel-1", "rel-2", "ref-1", "ref-2"];

/// Whether the detector says it leads (`vigil_detector_leader 1` on `/metrics`).
fn leads(detector: &DetectorProcess) -> bool {
    ureq::get(&format!("{}/metrics", detector.http))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .is_some_and(|text| text.lines().any(|l| l == "vigil_detector_leader 1"))
}

fn grpc_addr(detector: &DetectorProcess) -> SocketAddr {
    detector
        .grpc
        .trim_start_matches("http://")
        .parse()
        .expect("grpc address")
}

/// Appends numbered logback lines to `path` every 50 ms until `stop`, counting them.
fn writer(path: PathBuf, stop: Arc<AtomicBool>, written: Arc<AtomicU64>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S%.3f");
        let mut text = String::new();
        for _ in 0..20 {
            n += 1;
            text.push_str(&format!(
                "{now} INFO  [exec-1] shop.OrderService - order {n} placed\n"
            ));
        }
        append(&path, &text);
        written.fetch_add(20, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    file.write_all(text.as_bytes()).expect("append");
}

/// A dangerous exception (`java.lang.{class}`) logged now on `path` (4 lines).
fn break_host(path: &Path, class: &str) {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S%.3f");
    append(
        path,
        &format!(
            "{now} ERROR [exec-3] shop.Checkout - checkout failed\n\
             java.lang.{class}: shop.promo.PromoEngine\n\
             \tat shop.Checkout.applyPromotions(Checkout.java:88)\n\
             \tat shop.Checkout.run(Checkout.java:41)\n"
        ),
    );
}

/// The webhook posts received within `wait` (every one, not only the first).
fn posts_within(hooks: &mpsc::Receiver<Value>, wait: Duration) -> Vec<Value> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match hooks.recv_timeout(left) {
            Ok(post) => got.push(post),
            Err(_) => break,
        }
    }
    got
}

fn blocked_within(detector: &DetectorProcess, id: i64, wait: Duration) -> Value {
    let mut got = Value::Null;
    let blocked = eventually(wait, || {
        got = detector.get(&format!("/api/v1/releases/{id}"));
        got["decision"] == "block"
    });
    assert!(blocked, "release {id} not blocked within {wait:?}: {got}");
    got
}

#[test]
fn two_detectors_share_a_store_and_the_survivor_of_a_sigkill_blocks_the_release() {
    let Some(db) = TestDatabase::create("shared") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook_url, hooks, receiver_down) = webhook_receiver_switch();
    let extra = format!(
        "store = \"{}\"\n[[webhooks]]\nurl = \"{hook_url}\"\nevents = [\"block\"]\n",
        db.url
    );
    let (dir1, dir2) = (dir.path().join("d1"), dir.path().join("d2"));
    std::fs::create_dir(&dir1).expect("d1");
    std::fs::create_dir(&dir2).expect("d2");
    let mut first = DetectorProcess::start_with(&dir1, &extra);
    assert!(
        eventually(Duration::from_secs(10), || leads(&first)),
        "the first detector did not take the lead"
    );
    let mut second = DetectorProcess::start_with(&dir2, &extra);
    std::thread::sleep(Duration::from_secs(3));
    assert!(leads(&first) && !leads(&second), "exactly one leads");
    let balancer = TcpBalancer::start(vec![grpc_addr(&first), grpc_addr(&second)]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut logs = Vec::new();
    let mut writers = Vec::new();
    let mut agents = Vec::new();
    for host in HOSTS {
        let logs_dir = dir.path().join(format!("logs-{host}"));
        std::fs::create_dir(&logs_dir).expect("logs dir");
        let log = logs_dir.join("shop.log");
        let written = Arc::new(AtomicU64::new(0));
        let thread = {
            let (log, stop, written) = (log.clone(), Arc::clone(&stop), Arc::clone(&written));
            std::thread::spawn(move || writer(log, stop, written))
        };
        writers.push((thread, written));
        let glob = format!("{}/*.log", logs_dir.display());
        // rel-1 reports to the detector that does not lead, so that its alert reaches
        // the leader only through the store; the others through the balancer.
        let endpoint = if host == "rel-1" {
            second.grpc.clone()
        } else {
            balancer.endpoint()
        };
        let config = AgentSetup {
            logs_extra: "timezone = \"UTC\"",
            ..AgentSetup::new(&endpoint, host, "shop", &glob)
        }
        .write(dir.path());
        agents.push(spawn(
            "vigil-agent",
            &config,
            &dir.path().join(format!("agent-{host}.log")),
        ));
        logs.push(log);
    }
    assert!(
        eventually(Duration::from_secs(30), || HOSTS
            .iter()
            .all(|h| first.lines("shop", h) > 0)),
        "the agents' first lines did not arrive"
    );

    // A release created on the detector that does not lead, broken on its released host,
    // whose agent reports to that detector: the leader reads the alert from the store and
    // judges it; one block, one webhook.
    let release = |detector: &DetectorProcess, version: &str, host: &str| -> i64 {
        let created = post_json(
            &detector.http,
            "/api/v1/releases",
            &json!({"app": "shop", "version": version, "hosts": [host],
                    "reference_hosts": ["ref-1", "ref-2"]}),
        );
        created["id"].as_i64().expect("release id")
    };
    let one = release(&second, "2.0.1", "rel-1");
    let written = Instant::now();
    break_host(&logs[0], "NoSuchMethodError");
    let got = blocked_within(&first, one, Duration::from_secs(15));
    eprintln!(
        "release {one} blocked {:?} after the error was written",
        written.elapsed()
    );
    assert_eq!(got["reasons"][0]["rule"], "dangerous_exception", "{got}");
    assert_eq!(
        second.get(&format!("/api/v1/releases/{one}")),
        got,
        "both answer the same"
    );
    let posts = posts_within(&hooks, Duration::from_secs(5));
    assert_eq!(posts.len(), 1, "one webhook for one block: {posts:?}");
    assert_eq!(posts[0]["release_id"], one);

    // The leader blocks the next release while the webhook's receiver is down, and dies
    // retrying; the survivor takes over and posts the block it did not make, once.
    receiver_down.store(true, Ordering::Relaxed);
    let two = release(&first, "2.0.2", "rel-2");
    break_host(&logs[1], "NoSuchMethodError");
    blocked_within(&second, two, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    first.process.kill();
    let killed = Instant::now();
    receiver_down.store(false, Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(15), || leads(&second)),
        "the surviving detector did not take the lead"
    );
    eprintln!("the survivor led {:?} after the SIGKILL", killed.elapsed());
    let posts = posts_within(&hooks, Duration::from_secs(10));
    assert_eq!(
        posts.len(),
        1,
        "the dead leader's block posted once, by the survivor: {posts:?}"
    );
    assert_eq!(posts[0]["release_id"], two);
    assert_eq!(posts[0]["decision"], "block");

    // The first detector comes back, following; the leader dies during the next bad
    // release, before its error is logged, and the other blocks it.
    first.restart(&dir1);
    let three = release(&second, "2.0.3", "rel-2");
    std::thread::sleep(Duration::from_secs(1));
    second.process.kill();
    let written = Instant::now();
    break_host(&logs[1], "ClassNotFoundException");
    let got = blocked_within(&first, three, Duration::from_secs(20));
    eprintln!(
        "release {three} blocked {:?} after its error, its leader SIGKILLed just before",
        written.elapsed()
    );
    assert_eq!(got["reasons"][0]["rule"], "dangerous_exception", "{got}");
    let posts = posts_within(&hooks, Duration::from_secs(5));
    assert_eq!(posts.len(), 1, "one webhook for the third block: {posts:?}");
    assert_eq!(posts[0]["release_id"], three);

    // Every line counted exactly once, whichever detector stored it, also after the first
    // comes back.
    stop.store(true, Ordering::Relaxed);
    let mut expected = Vec::new();
    for (i, (thread, written)) in writers.into_iter().enumerate() {
        thread.join().expect("writer");
        // The dangerous exceptions' records: one on rel-1, two on rel-2.
        let broken = [4, 8, 0, 0][i];
        expected.push(written.load(Ordering::Relaxed) + broken);
    }
    second.restart(&dir2);
    let counted =
        |d: &DetectorProcess| -> Vec<u64> { HOSTS.iter().map(|h| d.lines("shop", h)).collect() };
    let arrived = eventually(Duration::from_secs(60), || counted(&second) == expected);
    assert!(
        arrived,
        "counted {:?}, written {expected:?}",
        counted(&second)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(counted(&second), expected, "counted exactly once");
    assert_eq!(counted(&first), expected, "both detectors answer the same");
    assert_eq!(
        first.get("/api/v1/releases"),
        second.get("/api/v1/releases"),
        "both list the same releases"
    );
    let stored: u64 = db
        .query("SELECT count(*) FROM release_decisions WHERE decision = 'block'")
        .parse()
        .unwrap_or(0);
    assert_eq!(stored, 3, "three blocks recorded, once each");
    let posted: u64 = db
        .query("SELECT count(*) FROM webhook_queue WHERE posted_at IS NOT NULL")
        .parse()
        .unwrap_or(0);
    assert_eq!(posted, 3, "three decision changes queued and posted");
    drop(agents);
    drop(second);
    drop(first);
}

/// A PostgreSQL cluster of the test's own (so that restarting it disturbs no other test),
/// stopped and removed when dropped.
struct OwnCluster {
    dir: PathBuf,
    port: u16,
    /// More environment for `.ci/postgres` (its TLS files).
    env: Vec<(&'static str, PathBuf)>,
}

impl OwnCluster {
    /// A cluster to start on a free port, in a directory of its own.
    fn new(env: Vec<(&'static str, PathBuf)>) -> Self {
        let [port] = common::free_ports();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Not under a private temporary directory: the server may run as another user.
        Self {
            dir: PathBuf::from(format!("/tmp/vigil-pg-{}-{nanos}", std::process::id())),
            port,
            env,
        }
    }

    fn script(&self, verb: &str) -> std::process::Output {
        let mut command =
            std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres"));
        command
            .arg(verb)
            .env("VIGIL_PG_DIR", &self.dir)
            .env("VIGIL_PG_PORT", self.port.to_string());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        common::output_within(&mut command, None, Duration::from_secs(90))
    }

    fn start(&self) {
        let started = self.script("start");
        assert!(
            started.status.success(),
            "cannot start a PostgreSQL cluster: {}",
            String::from_utf8_lossy(&started.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self.script("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_database_crash_during_ingest_loses_no_line_and_counts_none_twice() {
    // The shared test server's presence says PostgreSQL is installed (or skips outside CI).
    let Some(_probe) = TestDatabase::create("probe") else {
        return;
    };
    let cluster = OwnCluster::new(Vec::new());
    cluster.start();
    let dir = tempfile::tempdir().expect("tempdir");
    let detector =
        DetectorProcess::start_with(dir.path(), &format!("store = \"{}\"\n", cluster.url()));
    let logs_dir = dir.path().join("logs");
    std::fs::create_dir(&logs_dir).expect("logs dir");
    let log = logs_dir.join("shop.log");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let thread = {
        let (log, stop, written) = (log.clone(), Arc::clone(&stop), Arc::clone(&written));
        std::thread::spawn(move || writer(log, stop, written))
    };
    let config = AgentSetup::new(
        &detector.grpc,
        "crash-1",
        "shop",
        &format!("{}/*.log", logs_dir.display()),
    )
    .write(dir.path());
    let _agent = spawn("vigil-agent", &config, &dir.path().join("agent.log"));
    assert!(
        eventually(Duration::from_secs(30), || detector
            .lines("shop", "crash-1")
            > 0),
        "the first lines did not arrive"
    );
    // The database crashes under ingest (an immediate stop: no checkpoint, recovery from
    // its log) and comes back; the agent keeps writing meanwhile.
    let restarted = cluster.script("crash-restart");
    assert!(
        restarted.status.success(),
        "cannot restart the cluster: {}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    thread.join().expect("writer");
    let expected = written.load(Ordering::Relaxed);
    let mut counted = 0;
    let arrived = eventually(Duration::from_secs(60), || {
        counted = detector.try_lines("shop", "crash-1").unwrap_or(0);
        counted == expected
    });
    assert!(arrived, "counted {counted} of {expected} lines");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        detector.lines("shop", "crash-1"),
        expected,
        "counted exactly once"
    );
}

#[test]
fn a_detector_reaches_a_tls_only_database_and_checks_its_certificate() {
    let Some(_probe) = TestDatabase::create("probe") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = common::TestPki::create(dir.path());
    let other_dir = dir.path().join("other-ca");
    std::fs::create_dir(&other_dir).expect("dir");
    let other = common::TestPki::create(&other_dir);
    let cluster = OwnCluster::new(vec![
        ("VIGIL_PG_TLS_CERT", pki.server_cert.clone()),
        ("VIGIL_PG_TLS_KEY", pki.server_key.clone()),
    ]);
    cluster.start();
    let base = cluster.url();
    // Verified against the right CA: it starts, stores and counts.
    let good = dir.path().join("good");
    std::fs::create_dir(&good).expect("dir");
    let detector = DetectorProcess::start_with(
        &good,
        &format!(
            "store = \"{base}?sslmode=verify-full&sslrootcert={}\"\n",
            pki.ca.display()
        ),
    );
    let logs_dir = dir.path().join("logs");
    std::fs::create_dir(&logs_dir).expect("logs dir");
    common::append_lines(&logs_dir.join("shop.log"), 1, 25);
    let config = AgentSetup::new(
        &detector.grpc,
        "tls-1",
        "shop",
        &format!("{}/*.log", logs_dir.display()),
    )
    .write(dir.path());
    let _agent = spawn("vigil-agent", &config, &dir.path().join("agent.log"));
    assert!(
        eventually(Duration::from_secs(30), || detector.lines("shop", "tls-1")
            == 25),
        "the lines were not stored over TLS"
    );
    // The server says the leader's session is encrypted.
    let tls_url = format!("{base}?sslmode=require");
    let encrypted = common::output_within(
        std::process::Command::new("psql").args([
            "-X",
            "-A",
            "-t",
            &tls_url,
            "-c",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'vigil-detector leader' AND s.ssl",
        ]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(
        String::from_utf8_lossy(&encrypted.stdout).trim(),
        "1",
        "the leader's session is not over TLS: {}",
        String::from_utf8_lossy(&encrypted.stderr)
    );
    // Without TLS, or against another CA, the detector refuses to start, saying why.
    for (name, query, says) in [
        ("plain", "sslmode=disable".to_owned(), "no encryption"),
        (
            "wrong-ca",
            format!("sslmode=verify-full&sslrootcert={}", other.ca.display()),
            "invalid peer certificate",
        ),
    ] {
        let config = dir.path().join(format!("{name}.toml"));
        common::write(
            &config,
            &format!(
                "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nstore = \"{base}?{query}\"\n",
                dir.path().join(name).display()
            ),
        );
        let out = common::output_within(
            std::process::Command::new(common::binary("vigil-detector"))
                .args(["run", "--config"])
                .arg(&config),
            None,
            Duration::from_secs(60),
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{name}: the detector started: {text}"
        );
        assert!(
            text.contains(says),
            "{name}: the error does not say {says:?}: {text}"
        );
    }
}
