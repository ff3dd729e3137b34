//! HTTP access logs through the real `vigil-agent run`: an app with both a Java log and an
//! nginx access log, and an app with only a `combined` access log. The agent is killed with
//! SIGKILL and restarted while lines are waiting, the access log is rotated (renamed and
//! created) while it is stopped and again while it runs, and at the end every request is
//! counted exactly once, by status class, in the minute of its own timestamp (a backlog ten
//! minutes old included), malformed lines as such; and every spooled minute report carries
//! one entry per app, the app's Java counts and request counters merged.
//!
//! No detector listens: the reports stay in the spool, where the test reads them. Every wait
//! has a deadline and says what it waited for.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/wait.rs"]
mod wait;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_agent::spool::Spool;
use vigil_proto::v1::report::Body;

const AGENT: &str = env!("CARGO_BIN_EXE_vigil-agent");

const NGINX_TIMED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
                           $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time";

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `(year, month, day, hour, minute, second)` in UTC.
fn utc(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `dd/MMM/yyyy:HH:mm:ss +0200` of `t`, written two hours east of UTC.
fn clf(t: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, h, mi, s) = utc(t + 7200);
    format!(
        "{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0200",
        MONTHS[(m - 1) as usize]
    )
}

fn minute_of(t: i64) -> i64 {
    t.div_euclid(60) * 60
}

/// Requests written, by minute and status class (index 0 = 1xx), and malformed lines.
#[derive(Debug, Default)]
struct Written {
    classes: BTreeMap<i64, [u64; 5]>,
    malformed: u64,
}

impl Written {
    fn total(&self) -> u64 {
        self.classes.values().flatten().sum()
    }
}

const STATUSES: [u16; 8] = [200, 200, 200, 201, 301, 404, 500, 503];

/// Appends `count` nginx lines at time `t` to `path` (and `malformed` bad ones).
fn write_access(
    path: &Path,
    written: &mut Written,
    t: i64,
    first: u64,
    count: u64,
    malformed: u64,
) {
    let mut text = String::new();
    for n in first..first + count {
        let status = STATUSES[(n % 8) as usize];
        text.push_str(&format!(
            "10.0.{}.{} - - [{}] \"GET /p/{n}?q=a HTTP/1.1\" {status} 12 \"-\" \"curl/8.5.0\" {}.{:03}\n",
            n / 250,
            n % 250,
            clf(t),
            n % 3,
            n % 1000
        ));
        written.classes.entry(minute_of(t)).or_default()[usize::from(status / 100 - 1)] += 1;
    }
    for n in 0..malformed {
        text.push_str(&format!("not a request line {n} \"\n"));
    }
    written.malformed += malformed;
    append(path, &text);
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// Appends `records` Java log records: every fifth an ERROR with a 2-line exception.
/// Returns the lines written.
fn write_java(path: &Path, t: i64, records: u64) -> u64 {
    let (y, m, d, h, mi, s) = utc(t);
    let mut text = String::new();
    let mut lines = 0;
    for n in 0..records {
        if n % 5 == 4 {
            text.push_str(&format!(
                "{y}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.100 ERROR [exec-1] shop.Checkout - failed {n}\n\
                 java.lang.IllegalStateException: cart {n} is empty\n\
                 \tat shop.Cart.total(Cart.java:14)\n"
            ));
            lines += 3;
        } else {
            text.push_str(&format!(
                "{y}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.100 INFO  [exec-1] shop.Checkout - order {n}\n"
            ));
            lines += 1;
        }
    }
    append(path, &text);
    lines
}

struct Agent {
    process: wait::Group,
    admin: String,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, port: u16, run: u32) -> Self {
        let log = dir.join(format!("agent-{run}.log"));
        let out = fs::File::create(&log).unwrap();
        let process = wait::spawn_group(
            Command::new(AGENT)
                .arg("run")
                .arg("--config")
                .arg(dir.join("agent.toml"))
                .env("VIGIL_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        );
        let mut agent = Agent {
            process,
            admin: format!("http://127.0.0.1:{port}"),
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

    fn metric(&self, series: &str) -> u64 {
        self.get("/metrics")
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            })
            .map_or(0, |v: f64| v as u64)
    }

    fn requests(&self, app: &str) -> u64 {
        self.metric(&format!("vigil_agent_requests_total{{app=\"{app}\"}}"))
    }

    /// Every tailed file read to its end, `files` of them.
    fn caught_up(&self, files: usize) -> bool {
        let Some(status) = self.get("/status") else {
            return false;
        };
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let list = status["files"].as_array().cloned().unwrap_or_default();
        list.len() == files && list.iter().all(|f| f["lag"].as_u64() == Some(0))
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

    /// SIGTERM, and a clean exit within 20 s.
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

/// What the spooled minute reports say, per app.
#[derive(Debug, Default)]
struct Spooled {
    /// By minute: status classes.
    classes: BTreeMap<i64, [u64; 5]>,
    count: u64,
    malformed: u64,
    lines: u64,
    exceptions: u64,
    latency_count: u64,
}

fn spooled(data_dir: &Path) -> BTreeMap<String, Spooled> {
    let mut spool = Spool::open(data_dir, 1 << 30, 0).unwrap();
    let reports = spool.read_from(1, 1_000_000).unwrap();
    let seqs: HashSet<u64> = reports.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), reports.len(), "a seq used twice");
    let mut apps: BTreeMap<String, Spooled> = BTreeMap::new();
    for report in &reports {
        let Some(Body::Minute(minute)) = &report.body else {
            continue;
        };
        let names: Vec<&str> = minute.apps.iter().map(|a| a.app.as_str()).collect();
        let unique: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "one AppCounters per app: {names:?}"
        );
        for app in &minute.apps {
            let s = apps.entry(app.app.clone()).or_default();
            s.lines += app.lines;
            s.exceptions += app.exceptions.iter().map(|e| e.count).sum::<u64>();
            let r = app.requests.as_ref().unwrap_or_else(|| {
                panic!("{} has an access log: requests in every entry", app.app)
            });
            s.count += r.count;
            s.malformed += r.malformed;
            s.latency_count += r.latency.iter().map(|b| b.count).sum::<u64>();
            let c = s.classes.entry(minute.minute).or_default();
            for (i, n) in [
                r.status_1xx,
                r.status_2xx,
                r.status_3xx,
                r.status_4xx,
                r.status_5xx,
            ]
            .into_iter()
            .enumerate()
            {
                c[i] += n;
            }
        }
    }
    for s in apps.values_mut() {
        s.classes.retain(|_, c| c.iter().any(|&n| n > 0));
    }
    apps
}

#[test]
fn access_logs_are_counted_once_through_kills_and_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let logs = d.join("logs");
    fs::create_dir_all(&logs).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fs::write(
        d.join("agent.toml"),
        format!(
            r#"data_dir = "{d}/data"
admin_listen = "127.0.0.1:{port}"

[host]
name = "access-e2e"

[detector]
endpoint = "http://127.0.0.1:1"
flush_interval = "200ms"

[[logs]]
app = "shop"
paths = ["{d}/logs/shop.log"]
start_at = "beginning"
timezone = "UTC"

[[access_logs]]
app = "shop"
paths = ["{d}/logs/access.log*"]
exclude = ["*.gz"]
format = '''{NGINX_TIMED}'''
start_at = "beginning"

[[access_logs]]
app = "edge"
paths = ["{d}/logs/edge.log"]
format = "combined"
start_at = "beginning"
"#,
            d = d.display()
        ),
    )
    .unwrap();
    let (java, access, edge) = (
        logs.join("shop.log"),
        logs.join("access.log"),
        logs.join("edge.log"),
    );
    let now = unix_now();
    let mut shop = Written::default();
    let mut java_lines = write_java(&java, now, 25);
    // A backlog from ten minutes ago, then the present.
    write_access(&access, &mut shop, now - 600, 0, 16, 0);
    write_access(&access, &mut shop, now, 16, 24, 2);
    let mut edge_lines = String::new();
    for n in 0..10 {
        edge_lines.push_str(&format!(
            "192.0.2.{n} - - [{}] \"GET /edge HTTP/1.1\" {} 5 \"-\" \"Mozilla/5.0 (X11)\"\n",
            clf(now),
            if n < 7 { 200 } else { 404 }
        ));
    }
    append(&edge, &edge_lines);

    let agent = Agent::start(d, port, 1);
    wait::wait_until(Duration::from_secs(60), "the first lines read", || {
        agent.requests("shop") == 40 && agent.requests("edge") == 10 && agent.caught_up(3)
    });
    // Some flushes (every 200 ms) with the positions, then a crash.
    std::thread::sleep(Duration::from_millis(700));
    let metrics = agent.get("/metrics").unwrap();
    assert_eq!(
        metrics
            .matches("vigil_agent_requests_total{app=\"shop\"}")
            .count(),
        1,
        "one series per app:\n{metrics}"
    );
    assert!(metrics.contains("vigil_agent_access_malformed_lines_total{app=\"shop\"} 2\n"));
    let mut agent = agent;
    agent.process.kill();

    // While it is down: more lines, and a rename-and-create rotation with lines on both sides.
    write_access(&access, &mut shop, now, 40, 20, 1);
    fs::rename(&access, logs.join("access.log.1")).unwrap();
    write_access(&access, &mut shop, now + 1, 60, 15, 0);
    java_lines += write_java(&java, now + 1, 5);

    let agent = Agent::start(d, port, 2);
    wait::wait_until(
        Duration::from_secs(60),
        "the lines written while the agent was down",
        || agent.caught_up(4) && agent.requests("shop") >= 35,
    );
    // A rotation while it runs.
    let before = agent.requests("shop");
    fs::rename(&access, logs.join("access.log.2")).unwrap();
    write_access(&access, &mut shop, now + 2, 75, 5, 0);
    assert!(
        wait::eventually(Duration::from_secs(60), || {
            agent.requests("shop") >= before + 5 && agent.caught_up(5)
        }),
        "the lines after a rotation while running: {} requests (had {before}), status {}",
        agent.requests("shop"),
        agent.get("/status").unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(700));
    agent.stop();

    let apps = spooled(&d.join("data"));
    let shop_counted = apps.get("shop").expect("shop in the reports");
    assert_eq!(shop_counted.count, shop.total(), "every request once");
    assert_eq!(shop_counted.count, 80);
    assert_eq!(shop_counted.malformed, shop.malformed);
    assert_eq!(
        shop_counted.latency_count, 80,
        "every line has $request_time"
    );
    assert_eq!(
        shop_counted.classes, shop.classes,
        "requests by minute (their own timestamps) and status class"
    );
    assert!(
        shop_counted.classes.contains_key(&minute_of(now - 600)),
        "the backlog in its own minute"
    );
    assert_eq!(shop_counted.lines, java_lines, "the Java lines, once each");
    assert_eq!(shop_counted.exceptions, 6);
    let edge_counted = apps.get("edge").expect("edge in the reports");
    assert_eq!(edge_counted.count, 10);
    assert_eq!(
        edge_counted.classes.values().copied().collect::<Vec<_>>(),
        [[0, 7, 0, 3, 0]]
    );
    assert_eq!(edge_counted.lines, 0);
    assert_eq!(
        edge_counted.latency_count, 0,
        "combined has no response time"
    );
}
