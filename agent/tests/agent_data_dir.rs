//! The agent's `data_dir` on a file system that is full or read-only: the real
//! `vigil-agent` keeps running, pauses reading, says so in `status` and `/metrics`, and once
//! the disk takes writes again counts every line written meanwhile, none twice (checked in
//! the reports it spooled). `vigil-agent check` tells a data_dir it cannot write and a log
//! file it cannot read; configuration errors name the key and what is accepted.
//!
//! The file-system tests mount a small tmpfs, so they need root: without it they are
//! skipped with a message, unless `CI` is set (then they fail). Every wait has a deadline
//! and says what it waited for.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;
#[path = "../../tests/common/wait.rs"]
mod wait;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use vigil_agent::spool::Spool;
use vigil_proto::v1::report::Body;

const AGENT: &str = env!("CARGO_BIN_EXE_vigil-agent");

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether the test can mount file systems; says why not (and fails on CI) otherwise.
fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root (it mounts a tmpfs) and CI is set"
    );
    eprintln!("SKIPPED {test}: needs root to mount a tmpfs");
    false
}

fn run(command: &mut Command) -> Output {
    wait::output_within(command, None, Duration::from_secs(60))
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// A `vigil-agent run` (killed when dropped) with its admin endpoint, tailing
/// `dir/logs/shop.log`, reports flushed every 200 ms into a spool nobody empties (no
/// detector listens).
struct Agent {
    process: wait::Group,
    admin: String,
    config: PathBuf,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, data_dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        fs::create_dir_all(dir.join("logs")).unwrap();
        let config = dir.join("agent.toml");
        fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
admin_listen = "127.0.0.1:{port}"

[host]
name = "full-disk"

[detector]
endpoint = "http://127.0.0.1:1"
flush_interval = "200ms"

[[logs]]
app = "shop"
paths = ["{logs}/*.log"]
start_at = "beginning"
"#,
                data = data_dir.display(),
                logs = dir.join("logs").display(),
            ),
        )
        .unwrap();
        let log = dir.join("agent.log");
        let out = fs::File::create(&log).unwrap();
        let process = wait::spawn_group(
            Command::new(AGENT)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .env("VIGIL_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        );
        let mut agent = Agent {
            process,
            admin: format!("http://127.0.0.1:{port}"),
            config,
            log,
        };
        wait::wait_until(
            Duration::from_secs(60),
            "the agent's admin endpoint",
            || {
                agent.assert_running();
                agent.get("/healthz").is_some()
            },
        );
        agent
    }

    fn get(&self, path: &str) -> Option<String> {
        ureq::get(&format!("{}{path}", self.admin))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status").expect("GET /status")).expect("status JSON")
    }

    fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn lines_read(&self) -> u64 {
        self.metric("vigil_agent_lines_read_total{app=\"shop\"}")
            .unwrap_or(0.0) as u64
    }

    fn events(&self) -> u64 {
        self.metric("vigil_agent_events_total{app=\"shop\"}")
            .unwrap_or(0.0) as u64
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.process.try_wait() {
            panic!(
                "vigil-agent exited ({status}); its log:\n{}",
                self.log_text()
            );
        }
    }

    /// `vigil-agent status` as a user types it.
    fn status_text(&self) -> String {
        let out = run(Command::new(AGENT)
            .args(["status", "--config"])
            .arg(&self.config));
        assert!(out.status.success(), "vigil-agent status: {}", text(&out));
        text(&out)
    }

    /// SIGTERM, and the exit (a clean one) within 20 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status();
        let status = self.process.wait_timeout(Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "the agent did not stop cleanly ({status:?}); its log:\n{}",
            self.log_text()
        );
    }
}

/// Appends `count` numbered log records to `path`.
fn write_lines(path: &Path, first: u64, count: u64) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    for n in first..first + count {
        text.push_str(&format!(
            "2026-11-23 18:44:43.651 INFO  [http-nio-8080-exec-1] shop.OrderService - Order {n} placed\n"
        ));
    }
    file.write_all(text.as_bytes()).unwrap();
}

/// The lines the spooled minute reports of app `shop` add up to, after checking that no
/// seq was used twice.
fn spooled_lines(data_dir: &Path) -> u64 {
    let mut spool = Spool::open(data_dir, 1 << 30, 0).unwrap();
    let reports = spool.read_from(1, 1_000_000).unwrap();
    let seqs: HashSet<u64> = reports.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), reports.len(), "a seq used twice");
    reports
        .iter()
        .filter_map(|r| match &r.body {
            Some(Body::Minute(m)) => Some(m),
            _ => None,
        })
        .flat_map(|m| &m.apps)
        .filter(|a| a.app == "shop")
        .map(|a| a.lines)
        .sum()
}

/// Runs the scenario: 100 lines counted; `break_it` makes data_dir refuse writes; 50 more
/// lines make the agent try to write and pause; 50 more wait in the file; `mend_it` makes
/// data_dir take writes again; all 200 are counted, once each.
fn refused_writes_pause_reading(
    dir: &Path,
    data_dir: &Path,
    break_it: impl FnOnce(),
    mend_it: impl FnOnce(),
) {
    let mut agent = Agent::start(dir, data_dir);
    let log = dir.join("logs/shop.log");
    write_lines(&log, 0, 100);
    wait::wait_until(
        Duration::from_secs(60),
        "100 lines read and spooled",
        || {
            agent.lines_read() == 100
                && agent.status()["spool"]["reports"].as_u64().unwrap_or(0) > 0
                && agent.status()["data_dir"]["writable"] == true
        },
    );

    break_it();
    write_lines(&log, 100, 50);
    wait::wait_until(
        Duration::from_secs(60),
        "the agent to notice that data_dir refuses writes",
        || {
            agent.assert_running();
            let status = agent.status();
            status["data_dir"]["writable"] == false && status["paused"].is_string()
        },
    );
    assert_eq!(agent.metric("vigil_agent_data_dir_writable"), Some(0.0));
    assert_eq!(agent.metric("vigil_agent_reading_paused"), Some(1.0));
    assert!(
        agent
            .metric("vigil_agent_data_dir_errors_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    let shown = agent.status_text();
    assert!(
        shown.contains("NOT WRITABLE") && shown.contains("READING PAUSED"),
        "{shown}"
    );
    let read_when_paused = agent.lines_read();
    write_lines(&log, 150, 50);
    std::thread::sleep(Duration::from_secs(3));
    agent.assert_running();
    assert_eq!(
        agent.lines_read(),
        read_when_paused,
        "reading is paused while data_dir refuses writes"
    );
    assert!(read_when_paused < 200);

    mend_it();
    wait::wait_until(
        Duration::from_secs(60),
        "all 200 lines counted once data_dir takes writes again",
        || {
            agent.assert_running();
            agent.lines_read() == 200
                && agent.events() == 200
                && agent.status()["data_dir"]["writable"] == true
                && agent.status()["paused"].is_null()
        },
    );
    assert_eq!(agent.metric("vigil_agent_data_dir_writable"), Some(1.0));
    assert!(agent.status_text().contains(": writable"));
    // A few more flushes, then a clean stop (which flushes the rest).
    std::thread::sleep(Duration::from_secs(1));
    let log_text = agent.log_text();
    agent.stop();
    assert!(
        log_text.contains("cannot write to data_dir") && log_text.contains("reading resumes"),
        "{log_text}"
    );
    assert_eq!(
        spooled_lines(data_dir),
        200,
        "every line in exactly one spooled report"
    );
}

#[test]
fn a_full_data_dir_pauses_reading_until_space_returns() {
    if !root_or_skip("a_full_data_dir_pauses_reading_until_space_returns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "2m").expect("mount a tmpfs");
    let data_dir = disk.path().join("data");
    let filler = std::cell::RefCell::new(None);
    refused_writes_pause_reading(
        dir.path(),
        &data_dir,
        || *filler.borrow_mut() = Some(disk.fill()),
        || fs::remove_file(filler.borrow().as_ref().unwrap()).unwrap(),
    );
}

#[test]
fn a_read_only_data_dir_pauses_reading_until_it_is_writable() {
    if !root_or_skip("a_read_only_data_dir_pauses_reading_until_it_is_writable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "8m").expect("mount a tmpfs");
    let data_dir = disk.path().join("data");
    // A file system with a file open for writing (the spool) cannot be remounted
    // read-only; a read-only file system mounted over data_dir refuses every write by path
    // (identity, new spool segments, checkpoints) with EROFS, as a remounted one would.
    let cover = std::cell::RefCell::new(None);
    refused_writes_pause_reading(
        dir.path(),
        &data_dir,
        || {
            let ro = Tmpfs::mount(&data_dir, "1m").expect("mount a tmpfs");
            ro.remount("ro");
            *cover.borrow_mut() = Some(ro);
        },
        || drop(cover.borrow_mut().take()),
    );
}

#[test]
fn an_agent_started_on_a_read_only_data_dir_waits_for_it() {
    if !root_or_skip("an_agent_started_on_a_read_only_data_dir_waits_for_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "8m").expect("mount a tmpfs");
    let data_dir = disk.path().join("data");
    fs::create_dir_all(&data_dir).unwrap();
    disk.remount("ro");
    fs::create_dir_all(dir.path().join("logs")).unwrap();
    write_lines(&dir.path().join("logs/shop.log"), 0, 30);
    let mut agent = Agent::start(dir.path(), &data_dir);
    wait::wait_until(
        Duration::from_secs(60),
        "status to say that data_dir cannot be used",
        || {
            agent.assert_running();
            agent.status()["data_dir"]["writable"] == false
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    agent.assert_running();
    assert_eq!(agent.lines_read(), 0, "nothing is read without a data_dir");
    assert!(agent.status_text().contains("NOT WRITABLE"));

    disk.remount("rw");
    wait::wait_until(
        Duration::from_secs(60),
        "the 30 lines counted once data_dir can be used",
        || {
            agent.assert_running();
            agent.lines_read() == 30 && agent.events() == 30
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    agent.stop();
    assert_eq!(spooled_lines(&data_dir), 30);
}

#[test]
fn check_tells_a_data_dir_it_cannot_write_and_a_log_it_cannot_read() {
    if !root_or_skip("check_tells_a_data_dir_it_cannot_write_and_a_log_it_cannot_read") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    fs::write(logs.join("app.log"), "a line\n").unwrap();
    let config = |data_dir: &Path| {
        let path = dir.path().join("check.toml");
        fs::write(
            &path,
            format!(
                "data_dir = {:?}\n[[logs]]\napp = \"shop\"\npaths = [\"{}/*.log\"]\n",
                data_dir,
                logs.display()
            ),
        )
        .unwrap();
        path
    };
    let check = |config: &Path| {
        let out = run(Command::new(AGENT)
            .args(["check", "--offline", "--config"])
            .arg(config));
        (out.status.success(), text(&out))
    };

    // Writable.
    let (ok, out) = check(&config(&dir.path().join("data")));
    assert!(ok, "{out}");
    assert!(out.contains("data") && out.contains(": writable"), "{out}");

    // Not a directory.
    let file = dir.path().join("a-file");
    fs::write(&file, "").unwrap();
    let (ok, out) = check(&config(&file));
    assert!(!ok && out.contains("PROBLEM: not a directory"), "{out}");

    // Read-only.
    let disk = Tmpfs::mount(&dir.path().join("disk"), "1m").expect("mount a tmpfs");
    let (ok, out) = check(&config(disk.path()));
    assert!(ok, "{out}");
    disk.remount("ro");
    let (ok, out) = check(&config(disk.path()));
    assert!(!ok, "a read-only data_dir is a problem: {out}");
    assert!(
        out.contains("PROBLEM: not writable") && out.contains("Read-only file system"),
        "{out}"
    );
    // The OS error is named once.
    assert_eq!(out.matches("os error 30").count(), 1, "{out}");

    // Full: a warning for the service's pre-start check (the agent waits for room).
    disk.remount("rw");
    let filler = disk.fill();
    let (ok, out) = check(&config(disk.path()));
    assert!(ok && out.contains("WARNING: full"), "{out}");
    fs::remove_file(filler).unwrap();

    // A log file the agent's user cannot read is a problem, not a listed file.
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !setpriv {
        assert!(
            std::env::var_os("CI").is_none(),
            "setpriv (util-linux) is needed on CI"
        );
        eprintln!("SKIPPED the unreadable log file: setpriv is not installed");
        return;
    }
    let open = |path: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    };
    open(dir.path(), 0o755);
    open(&logs, 0o755);
    open(&logs.join("app.log"), 0o000);
    let data = dir.path().join("nobody-data");
    fs::create_dir_all(&data).unwrap();
    open(&data, 0o777);
    let config = config(&data);
    open(&config, 0o644);
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", AGENT])
        .args(["check", "--offline", "--config"])
        .arg(&config));
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("app.log: PROBLEM: cannot read") && shown.contains("Permission denied"),
        "{shown}"
    );
}

#[test]
fn config_errors_name_the_key_and_os_errors_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    fs::write(&config, "[spool]\nmax_bytes = -1\n").unwrap();
    let out = run(Command::new(AGENT)
        .args(["check", "--offline", "--config"])
        .arg(&config));
    let shown = text(&out);
    assert!(!out.status.success());
    assert!(
        shown.contains("agent.toml: spool.max_bytes: -1 is not a size")
            && shown.contains("\"256MiB\"")
            && !shown.contains("untagged"),
        "{shown}"
    );

    let out = run(Command::new(AGENT).args(["check", "--config", "/nonexistent/agent.toml"]));
    let shown = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        shown.matches("No such file or directory").count(),
        1,
        "the OS error once: {shown}"
    );
}
