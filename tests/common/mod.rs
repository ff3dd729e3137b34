//! Shared parts of the end-to-end tests: the real `vigil-agent` and `vigil-detector`
//! binaries started as child processes on 127.0.0.1, with temporary configs.

#![allow(dead_code)]

pub mod clocked;
pub mod postgres;
pub mod wait;

// Each test crate uses some of these.
#[allow(unused_imports)]
pub use wait::{eventually, output_within, wait_for, wait_until};

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Path of a workspace binary, built once per test run with the same profile as the tests.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(build_binaries)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"));
    dir.join(name)
}

fn build_binaries() -> Result<PathBuf, String> {
    // tests run from target/<profile>/deps/; the binaries live in target/<profile>/.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory")?
        .to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "vigil-agent",
        "-p",
        "vigil-detector",
        "--bins",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of the binaries failed: {status}"));
    }
    Ok(profile_dir)
}

/// `N` distinct TCP ports on 127.0.0.1 that were free when asked (all held open until all
/// are chosen, so they differ).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local address").port())
}

/// A child process killed when dropped.
pub struct Running {
    pub child: Child,
    pub name: &'static str,
}

impl Running {
    /// Sends SIGTERM and waits for the exit; returns whether it exited with success.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }

    /// Kills with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A detector on free loopback ports with its data in `dir`.
pub struct DetectorProcess {
    pub process: Running,
    pub grpc: String,
    pub http: String,
    pub config: PathBuf,
}

impl DetectorProcess {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// Starts a detector whose config has `extra` lines added (TLS, token, ...).
    pub fn start_with(dir: &Path, extra: &str) -> Self {
        let [grpc_port, http_port] = free_ports();
        Self::start_on(dir, grpc_port, http_port, extra)
    }

    /// Starts a detector on the given ports.
    pub fn start_on(dir: &Path, grpc_port: u16, http_port: u16, extra: &str) -> Self {
        let config = dir.join("detector.toml");
        write(
            &config,
            &format!(
                "grpc_listen = \"127.0.0.1:{grpc_port}\"\nhttp_listen = \"127.0.0.1:{http_port}\"\ndata_dir = \"{}\"\n{extra}",
                dir.join("detector-data").display()
            ),
        );
        let log = dir.join("detector.log");
        let mut detector = Self {
            process: spawn("vigil-detector", &config, &log),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            http: format!("http://127.0.0.1:{http_port}"),
            config,
        };
        detector.wait_healthy(&log);
        detector
    }

    /// Starts the detector again on the same ports and data after it was stopped or killed.
    pub fn restart(&mut self, dir: &Path) {
        self.process.kill();
        let log = dir.join("detector-restarted.log");
        self.process = spawn("vigil-detector", &self.config, &log);
        self.wait_healthy(&log);
    }

    fn wait_healthy(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ureq::get(&format!("{}/healthz", self.http)).call().is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                let output = std::fs::read_to_string(log).unwrap_or_default();
                panic!("vigil-detector exited early ({status}):\n{output}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vigil-detector did not become healthy within 20 s");
    }

    /// `GET` an API path, returning the JSON body.
    pub fn get(&self, path: &str) -> serde_json::Value {
        get_json(&self.http, path)
    }

    /// Total lines stored for `app` on `host`, or `None` while the HTTP port does not
    /// answer (a reload re-binds it).
    pub fn try_lines(&self, app: &str, host: &str) -> Option<u64> {
        stored_lines(&self.http, app, host)
    }

    /// Total lines stored for `app` on `host`.
    pub fn lines(&self, app: &str, host: &str) -> u64 {
        let series = self.get(&format!("/api/v1/series?app={app}&host={host}"));
        series["minutes"]
            .as_array()
            .map(|minutes| minutes.iter().filter_map(|m| m["lines"].as_u64()).sum())
            .unwrap_or(0)
    }
}

/// `GET` an API path of the detector at `http`, returning the JSON body.
pub fn get_json(http: &str, path: &str) -> serde_json::Value {
    let mut response = ureq::get(&format!("{http}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    response
        .body_mut()
        .read_json()
        .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
}

/// `POST` `body` to an API path of the detector at `http`, returning the JSON answer.
pub fn post_json(http: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
    ureq::post(&format!("{http}{path}"))
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
        .body_mut()
        .read_json()
        .unwrap_or_else(|e| panic!("POST {path}: not JSON: {e}"))
}

/// Total lines the detector at `http` stored for `app` on `host`, or `None` while its HTTP
/// port does not answer.
pub fn stored_lines(http: &str, app: &str, host: &str) -> Option<u64> {
    let mut response = ureq::get(&format!("{http}/api/v1/series?app={app}&host={host}"))
        .call()
        .ok()?;
    let series: serde_json::Value = response.body_mut().read_json().ok()?;
    series["minutes"]
        .as_array()
        .map(|minutes| minutes.iter().filter_map(|m| m["lines"].as_u64()).sum())
}

/// Starts `vigil-<name> run --config PATH` with its output appended to `log` (a restarted
/// process adds to what the one before it wrote), at the level `VIGIL_TEST_LOG` gives
/// (`info` by default).
pub fn spawn(name: &'static str, config: &Path, log: &Path) -> Running {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(binary(name))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env(
            "VIGIL_LOG",
            std::env::var("VIGIL_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Running { child, name }
}

/// `vigil-agent status --json` of the agent with this config.
pub fn agent_status(config: &Path) -> serde_json::Value {
    try_agent_status(config).unwrap_or_else(|e| panic!("vigil-agent status failed: {e}"))
}

/// `vigil-agent status --json` of the agent with this config, or why there is none (the
/// agent's admin port is not up yet, ...).
pub fn try_agent_status(config: &Path) -> Result<serde_json::Value, String> {
    let output = output_within(
        Command::new(binary("vigil-agent"))
            .args(["status", "--json", "--config"])
            .arg(config),
        None,
        Duration::from_secs(30),
    );
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("status JSON: {e}"))
}

/// Counts the newline-terminated lines of the files in `dir` whose names start with
/// `prefix` (a log and its rotated generations).
pub fn lines_on_disk(dir: &Path, prefix: &str) -> u64 {
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            lines += bytes.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    lines
}

/// Makes `dir/logs` and returns it with the path of `dir/logs/shop.log` in it.
pub fn shop_logs(dir: &Path) -> (PathBuf, PathBuf) {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let log = logs.join("shop.log");
    (logs, log)
}

/// A detector and one agent (host `host`, app `shop`) tailing `dir/logs/*.log`.
pub struct Watched {
    pub detector: DetectorProcess,
    pub agent: Running,
    /// `dir/logs/shop.log`.
    pub log: PathBuf,
    pub agent_config: PathBuf,
    pub agent_log: PathBuf,
}

impl Watched {
    pub fn start(dir: &Path, host: &str) -> Self {
        let (logs, log) = shop_logs(dir);
        let detector = DetectorProcess::start(dir);
        let agent_config = agent_config(
            dir,
            &detector.grpc,
            host,
            "shop",
            &format!("{}/*.log", logs.display()),
        );
        let agent_log = dir.join("agent.log");
        let agent = spawn("vigil-agent", &agent_config, &agent_log);
        Self {
            detector,
            agent,
            log,
            agent_config,
            agent_log,
        }
    }
}

/// Writes an agent config for one app tailing `logs_glob`, flushing every 200 ms.
pub fn agent_config(dir: &Path, endpoint: &str, host: &str, app: &str, logs_glob: &str) -> PathBuf {
    AgentSetup::new(endpoint, host, app, logs_glob).write(dir)
}

/// As [`agent_config`], with `detector_extra` lines added to the `[detector]` table.
pub fn agent_config_with(
    dir: &Path,
    endpoint: &str,
    detector_extra: &str,
    host: &str,
    app: &str,
    logs_glob: &str,
) -> PathBuf {
    AgentSetup {
        detector_extra,
        ..AgentSetup::new(endpoint, host, app, logs_glob)
    }
    .write(dir)
}

/// The parts of a test agent's configuration.
pub struct AgentSetup<'a> {
    pub endpoint: &'a str,
    pub host: &'a str,
    pub app: &'a str,
    pub logs_glob: &'a str,
    /// `[detector] flush_interval`.
    pub flush_interval: &'a str,
    /// Lines added to `[detector]`.
    pub detector_extra: &'a str,
    /// Serve the admin endpoint on a free port.
    pub admin: bool,
    /// Tables added at the end (`[spool]`, ...).
    pub tables: &'a str,
    /// Lines added to the `[[logs]]` table (`timezone = "UTC"`, ...).
    pub logs_extra: &'a str,
    /// Lines added to the `[host]` table (`interval = "1s"`, ...).
    pub host_extra: &'a str,
}

impl<'a> AgentSetup<'a> {
    pub fn new(endpoint: &'a str, host: &'a str, app: &'a str, logs_glob: &'a str) -> Self {
        Self {
            endpoint,
            host,
            app,
            logs_glob,
            flush_interval: "200ms",
            detector_extra: "",
            admin: false,
            tables: "",
            logs_extra: "",
            host_extra: "",
        }
    }

    /// Writes `agent-<host>.toml` in `dir` (data in `agent-<host>-data`) and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let config = dir.join(format!("agent-{}.toml", self.host));
        let admin = if self.admin {
            let [port] = free_ports();
            format!("127.0.0.1:{port}")
        } else {
            String::new()
        };
        write(
            &config,
            &format!(
                r#"data_dir = "{data}"
admin_listen = "{admin}"

[host]
name = "{host}"
{host_extra}

[detector]
endpoint = "{endpoint}"
flush_interval = "{flush_interval}"
{detector_extra}

[[logs]]
app = "{app}"
paths = ["{logs_glob}"]
start_at = "beginning"
{logs_extra}

{tables}
"#,
                data = dir.join(format!("agent-{}-data", self.host)).display(),
                host = self.host,
                endpoint = self.endpoint,
                flush_interval = self.flush_interval,
                detector_extra = self.detector_extra,
                app = self.app,
                logs_glob = self.logs_glob,
                tables = self.tables,
                logs_extra = self.logs_extra,
                host_extra = self.host_extra,
            ),
        );
        config
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Appends `lines` numbered log lines (logback layout) to `path`, starting at `first`.
pub fn append_lines(path: &Path, first: u64, lines: u64) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    let mut text = String::new();
    for n in first..first + lines {
        text.push_str(&format!(
            "2026-11-23 18:44:43.651 INFO  [http-nio-8080-exec-1] shop.OrderService - Order {n} placed\n"
        ));
    }
    file.write_all(text.as_bytes()).expect("append");
}

/// A test certificate authority with a server certificate for 127.0.0.1 and a client
/// certificate, written as PEM files.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    pub fn create(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Vigil test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let leaf = |names: Vec<String>, cn: &str| {
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &ca).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "vigil-detector",
        );
        let (client_cert, client_key) = leaf(vec!["agent.test".into()], "vigil-agent");
        let pki = Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        write(&pki.ca, &ca.pem());
        write(&pki.server_cert, &server_cert);
        write(&pki.server_key, &server_key);
        write(&pki.client_cert, &client_cert);
        write(&pki.client_key, &client_key);
        pki
    }
}

/// A tiny HTTP receiver on 127.0.0.1 that answers `200` to every request and hands each
/// request body (as JSON) to the returned channel: a webhook endpoint for tests.
pub fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<serde_json::Value>) {
    let (url, rx, _) = webhook_receiver_switch();
    (url, rx)
}

/// A [`webhook_receiver`] that answers `503` (and hands nothing on) while the returned flag
/// is set: a receiver that is down.
pub fn webhook_receiver_switch() -> (
    String,
    std::sync::mpsc::Receiver<serde_json::Value>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{BufRead, BufReader, Read};
    use std::sync::atomic::{AtomicBool, Ordering};
    let failing = std::sync::Arc::new(AtomicBool::new(false));
    let fail = std::sync::Arc::clone(&failing);
    let listener = TcpListener::bind("127.0.0.1:0").expect("webhook listener");
    let url = format!(
        "http://127.0.0.1:{}/hooks/vigil",
        listener.local_addr().expect("address").port()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let mut stream = reader.into_inner();
            if fail.load(Ordering::Relaxed) {
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if let Ok(value) = serde_json::from_slice(&body)
                && tx.send(value).is_err()
            {
                return;
            }
        }
    });
    (url, rx, failing)
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Logs written as services would write them, one record every `60_000 / per_minute` ms of
/// log time: the history from `from` (Unix ms) to now at once when started, then live every
/// 250 ms until dropped. Each record is written once.
pub struct TimedLogs {
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TimedLogs {
    /// Starts writing `paths`; `record(log, t, i)` is the text (with its newline) of record
    /// `i` at `t` (Unix ms) in `paths[log]`.
    pub fn start<F>(paths: Vec<PathBuf>, from: i64, per_minute: i64, record: F) -> Self
    where
        F: Fn(usize, i64, i64) -> String + Send + 'static,
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        let step = 60_000 / per_minute;
        let write = move |from: i64, to: i64| {
            for (log, path) in paths.iter().enumerate() {
                let mut text = String::new();
                // The first record at or after `from`: consecutive calls never repeat one.
                let mut t = from + (step - from.rem_euclid(step)) % step;
                while t < to {
                    text.push_str(&record(log, t, t / step));
                    t += step;
                }
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                file.write_all(text.as_bytes())
                    .unwrap_or_else(|e| panic!("append {}: {e}", path.display()));
            }
        };
        let mut written = now_ms();
        write(from, written);
        let running = std::sync::Arc::new(AtomicBool::new(true));
        let thread = {
            let running = std::sync::Arc::clone(&running);
            std::thread::spawn(move || {
                while running.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let to = now_ms();
                    write(written, to);
                    written = to;
                }
            })
        };
        Self {
            running,
            thread: Some(thread),
        }
    }
}

impl Drop for TimedLogs {
    fn drop(&mut self) {
        self.running
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
