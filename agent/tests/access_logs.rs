//! Access logs written by real servers while the test runs, read by the agent's access-log
//! code configured as a user would configure it (`[[access_logs]]` in an agent.toml):
//!
//! - **nginx** (`/usr/sbin/nginx`, Debian package `nginx`), started with its own prefix and
//!   configuration in a temporary directory, answers 200, 302, 404 and 500 itself, proxies
//!   `/slow` to a local server that answers after 150 ms (through an upstream pair whose
//!   first server refuses connections, so that `$upstream_response_time` holds lists) and
//!   `/down` to a closed port (502). Two access logs: `combined` + `$request_time`, and
//!   `$msec $time_iso8601 … $upstream_response_time`. nginx runs with `TZ=Asia/Kolkata`
//!   (+05:30), so the offsets of its timestamps are tested too.
//! - **Tomcat 10** (Debian package `libtomcat10-java`: `/usr/share/java/tomcat10-*.jar`), an
//!   embedded-Tomcat program compiled with `javac` and run with `java` in the test, three
//!   `AccessLogValve`s (`%h %l %u %t "%r" %s %b %D`; the combined pattern with `%{ms}T %T`;
//!   `%T` alone), servlets answering 200, 302, 500 and one sleeping 120 ms, in the JVM time
//!   zone America/New_York. Tomcat 10 writes `%D` in microseconds and `%T` in whole
//!   seconds: the test checks both against `%{ms}T`, line by line.
//!
//! Every count per status class is exact, and the response times land in the right
//! buckets. Without nginx, or without a JDK or the Tomcat jars, the test in question says
//! so and passes, unless `CI` is set: then it fails. The servers are killed when the test
//! ends, also when it fails.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/wait.rs"]
mod wait;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_agent::access::{AccessFormat, AccessLogs, LatencyUnit};
use vigil_agent::admin::Metrics;
use vigil_agent::config::AgentConfig;
use vigil_agent::minute::{AppSlots, MinuteCounters};
use vigil_proto::latency::bucket_of;
use vigil_proto::v1::RequestCounters;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

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

/// A tool the test needs is missing: a message and `false`, or a failure under CI.
fn missing(test: &str, what: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{test}: {what}; CI must install it");
    eprintln!("SKIPPED {test}: {what}");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `GET path` (with `headers`, each ending in CRLF) and returns the status.
fn get(port: u16, path: &str, headers: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"))
}

fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn line_count(path: &Path) -> usize {
    fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// What the agent counts from a file with an `[[access_logs]]` entry of `format` (and
/// `latency_unit`): the minutes' request counters added up (buckets by index), and the
/// minutes that held requests.
fn count(path: &Path, format: &str, latency_unit: Option<&str>) -> (RequestCounters, Vec<i64>) {
    let unit = latency_unit
        .map(|u| format!("latency_unit = \"{u}\"\n"))
        .unwrap_or_default();
    let config = AgentConfig::parse(
        Path::new("agent.toml"),
        &format!(
            "[[access_logs]]\napp = \"web\"\npaths = [\"{}\"]\nformat = '''{format}'''\n{unit}",
            path.display()
        ),
    )
    .unwrap_or_else(|e| panic!("the configuration is refused: {e}"));
    let apps = config.source_apps();
    let metrics = Arc::new(Metrics::new(AppSlots::new(&apps).names()));
    let mut access = AccessLogs::new(&config, metrics);
    let started = unix_now();
    let mut counters = MinuteCounters::new(&apps, started).with_requests(config.access_sources());
    let text = fs::read(path).unwrap();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        access.line(&mut counters, 0, line, false, started);
    }
    let mut total = RequestCounters::default();
    let mut minutes = Vec::new();
    let mut buckets = std::collections::BTreeMap::<i32, u64>::new();
    for report in counters.take(started + 120, true) {
        assert_eq!(report.apps.len(), 1);
        let r = report.apps[0].requests.clone().expect("request counters");
        if r.count + r.malformed > 0 {
            minutes.push(report.minute);
        }
        total.count += r.count;
        total.status_1xx += r.status_1xx;
        total.status_2xx += r.status_2xx;
        total.status_3xx += r.status_3xx;
        total.status_4xx += r.status_4xx;
        total.status_5xx += r.status_5xx;
        total.malformed += r.malformed;
        total.latency_sum_ms += r.latency_sum_ms;
        for b in r.latency {
            *buckets.entry(b.index).or_default() += b.count;
        }
    }
    total.latency = buckets
        .into_iter()
        .map(|(index, count)| vigil_proto::v1::LatencyBucket { index, count })
        .collect();
    (total, minutes)
}

/// Requests in buckets at or above `from`, and in all.
fn in_buckets_from(r: &RequestCounters, from: i32) -> (u64, u64) {
    let above = r
        .latency
        .iter()
        .filter(|b| b.index >= from)
        .map(|b| b.count)
        .sum();
    (above, r.latency.iter().map(|b| b.count).sum())
}

fn classes(r: &RequestCounters) -> [u64; 5] {
    [
        r.status_1xx,
        r.status_2xx,
        r.status_3xx,
        r.status_4xx,
        r.status_5xx,
    ]
}

/// A local HTTP server that answers every request after `delay` (nginx's slow upstream).
struct SlowServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SlowServer {
    fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                            let mut head = Vec::new();
                            let mut buf = [0u8; 1024];
                            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                                match stream.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => head.extend_from_slice(&buf[..n]),
                                }
                            }
                            std::thread::sleep(delay);
                            let _ = stream.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nslow\n",
                            );
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The nginx binary: `VIGIL_NGINX`, else `/usr/sbin/nginx`, else `nginx` on `PATH`.
fn find_nginx() -> Option<PathBuf> {
    let candidates = std::env::var_os("VIGIL_NGINX")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx"), PathBuf::from("nginx")]);
    for candidate in candidates {
        let ok = Command::new(&candidate)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(candidate);
        }
    }
    None
}

const NGINX_TIMED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
                           $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time";
const NGINX_UPSTREAM: &str = "$msec $time_iso8601 $status \"$request\" \
                              urt=\"$upstream_response_time\" ua=\"$http_user_agent\"";

#[test]
fn nginx_access_logs_are_counted_exactly() {
    const TEST: &str = "nginx_access_logs_are_counted_exactly";
    let Some(nginx) = find_nginx() else {
        missing(
            TEST,
            "nginx is not installed (Debian package `nginx`, or set VIGIL_NGINX)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("tmp")).unwrap();
    let slow = SlowServer::start(Duration::from_millis(150));
    let closed = free_port();
    let port = free_port();
    let user = if is_root() { "user root;\n" } else { "" };
    let conf = format!(
        r#"{user}worker_processes 1;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    log_format timed '{NGINX_TIMED}';
    log_format upstream '{NGINX_UPSTREAM}';
    upstream pair {{
        server 127.0.0.1:{closed} max_fails=0;
        server 127.0.0.1:{slow} max_fails=0;
    }}
    server {{
        listen 127.0.0.1:{port};
        access_log {d}/access.log timed;
        access_log {d}/upstream.log upstream;
        location = /ok {{ return 200 "ok\n"; }}
        location = /fail {{ return 500; }}
        location = /moved {{ return 302 /ok; }}
        location = /slow {{ proxy_pass http://pair; proxy_read_timeout 20s; }}
        location = /down {{ proxy_pass http://127.0.0.1:{closed}; }}
        location / {{ return 404; }}
    }}
}}
"#,
        d = d.display(),
        slow = slow.port,
    );
    fs::write(d.join("nginx.conf"), conf).unwrap();
    let stderr = fs::File::create(d.join("stderr.log")).unwrap();
    let mut server = wait::spawn_group(
        Command::new(&nginx)
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-g")
            .arg(format!("daemon off; pid {}/nginx.pid;", d.display()))
            .env("TZ", "Asia/Kolkata")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr),
    );
    let log_of = |d: &Path| {
        fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
            + &fs::read_to_string(d.join("error.log")).unwrap_or_default()
    };
    wait::wait_until(
        Duration::from_secs(30),
        "nginx to accept connections",
        || {
            if let Some(status) = server.try_wait() {
                panic!("nginx exited ({status}):\n{}", log_of(d));
            }
            accepts(port)
        },
    );

    let started = unix_now();
    let plan: &[(&str, u16, usize)] = &[
        ("/ok", 200, 6),
        ("/moved", 302, 2),
        ("/missing", 404, 4),
        ("/fail", 500, 3),
        ("/slow", 200, 4),
        ("/down", 502, 1),
    ];
    for &(path, status, times) in plan {
        for _ in 0..times {
            assert_eq!(get(port, path, ""), status, "GET {path}");
        }
    }
    // A user agent with quotes and spaces (nginx writes `"` as \x22), and a referer.
    assert_eq!(
        get(
            port,
            "/ok?q=a%20b",
            "User-Agent: Mozilla/5.0 (X11; \"quoted\" agent) Gecko\r\nReferer: http://x/?a=\"b\"\r\n",
        ),
        200
    );
    let ended = unix_now();
    let total = plan.iter().map(|p| p.2).sum::<usize>() + 1;
    for file in ["access.log", "upstream.log"] {
        wait::wait_until(
            Duration::from_secs(30),
            format!("{total} lines in nginx's {file}"),
            || line_count(&d.join(file)) == total,
        );
    }
    server.kill();

    let access = d.join("access.log");
    let text = fs::read_to_string(&access).unwrap();
    eprintln!("nginx's access.log:\n{text}");
    if Path::new("/usr/share/zoneinfo/Asia/Kolkata").exists() {
        assert!(text.contains(" +0530]"), "nginx wrote local times:\n{text}");
    }
    // Every line read with its own time, its +05:30 offset applied.
    let format = AccessFormat::compile(NGINX_TIMED, None).unwrap();
    for line in text.lines() {
        let request = format
            .parse(line.as_bytes())
            .unwrap_or_else(|e| panic!("{e:?}: {line}"));
        let t = request.time.expect("a time");
        assert!(
            (started - 1..=ended + 1).contains(&t),
            "{line}: read as {t}, sent between {started} and {ended}"
        );
    }

    let (timed, minutes) = count(&access, NGINX_TIMED, None);
    assert_eq!(timed.malformed, 0, "{text}");
    assert_eq!(timed.count, total as u64);
    assert_eq!(classes(&timed), [0, 11, 2, 4, 4], "{text}");
    assert!(
        minutes
            .iter()
            .all(|m| (started / 60 * 60..=ended).contains(m)),
        "{minutes:?}"
    );
    // $request_time: the 4 slow requests took 150 ms or more, the others far less.
    let (slow_ones, timed_ones) = in_buckets_from(&timed, bucket_of(149.0));
    assert_eq!(timed_ones, total as u64, "every line has $request_time");
    assert_eq!(slow_ones, 4, "{:?}\n{text}", timed.latency);
    assert_eq!(
        in_buckets_from(&timed, bucket_of(100.0)).0,
        4,
        "the others took under 100 ms"
    );
    assert!(
        (600.0..8600.0).contains(&timed.latency_sum_ms),
        "{}",
        timed.latency_sum_ms
    );

    // $upstream_response_time: only proxied requests have one; where the first server of the
    // pair refused, nginx wrote a list ("0.000, 0.151"), summed.
    let upstream_log = d.join("upstream.log");
    let upstream_text = fs::read_to_string(&upstream_log).unwrap();
    eprintln!("nginx's upstream.log:\n{upstream_text}");
    let (upstream, _) = count(&upstream_log, NGINX_UPSTREAM, None);
    assert_eq!(upstream.malformed, 0, "{upstream_text}");
    assert_eq!(classes(&upstream), [0, 11, 2, 4, 4], "{upstream_text}");
    let (slow_ones, with_time) = in_buckets_from(&upstream, bucket_of(149.0));
    assert_eq!(slow_ones, 4, "{upstream_text}");
    assert!(
        (4..=5).contains(&with_time),
        "the slow ones and perhaps /down: {upstream_text}"
    );
    assert!(
        upstream_text.contains("urt=\"0.000, 0.1") || upstream_text.contains("urt=\"0.001, 0.1"),
        "no upstream list written:\n{upstream_text}"
    );
}

/// The Tomcat jars: `VIGIL_TOMCAT_LIB`, else Debian's `/usr/share/java/tomcat10-*.jar`.
fn tomcat_classpath() -> Option<String> {
    let dir = std::env::var_os("VIGIL_TOMCAT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java"));
    let mut jars: Vec<String> = fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let versioned = name.contains("-10.") || name.contains("-11.");
            (name.starts_with("tomcat10-") || name.starts_with("tomcat-"))
                && name.ends_with(".jar")
                && !name.contains("i18n")
                && !versioned
        })
        .map(|p| p.display().to_string())
        .collect();
    jars.sort();
    let has = |part: &str| jars.iter().any(|j| j.contains(part));
    (has("catalina") && has("coyote") && has("servlet-api")).then(|| jars.join(":"))
}

fn have_java(test: &str) -> bool {
    for tool in ["javac", "java"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return missing(
                test,
                &format!("`{tool}` is not on PATH (Debian: openjdk-17-jdk-headless)"),
            );
        }
    }
    true
}

fn java_command(tool: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.current_dir(dir)
        .env_remove("JAVA_TOOL_OPTIONS")
        .env_remove("_JAVA_OPTIONS")
        .env_remove("JDK_JAVA_OPTIONS")
        .stdin(Stdio::null());
    cmd
}

const TOMCAT_D: &str = "%h %l %u %t \"%r\" %s %b %D";
const TOMCAT_MS: &str = "%h %l %u %t \"%r\" %s %b \"%{Referer}i\" \"%{User-Agent}i\" %{ms}T %T";
const TOMCAT_T: &str = "%h %l %u %t \"%r\" %s %b %T";

const SERVER: &str = r#"import java.io.File;
import java.io.IOException;
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import org.apache.catalina.Context;
import org.apache.catalina.startup.Tomcat;
import org.apache.catalina.valves.AccessLogValve;

public class AccessServer {
    static class Answer extends HttpServlet {
        private final int status;
        private final long sleepMs;

        Answer(int status, long sleepMs) {
            this.status = status;
            this.sleepMs = sleepMs;
        }

        @Override
        protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
            if (sleepMs > 0) {
                try {
                    Thread.sleep(sleepMs);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            if (status == 302) {
                resp.sendRedirect("/ok");
                return;
            }
            resp.setStatus(status);
            resp.setContentType("text/plain");
            resp.getWriter().write("status " + status + "\n");
        }
    }

    static void serve(Context ctx, String name, HttpServlet servlet, String path) {
        Tomcat.addServlet(ctx, name, servlet);
        ctx.addServletMappingDecoded(path, name);
    }

    static void log(Tomcat tomcat, String dir, String prefix, String pattern) {
        AccessLogValve valve = new AccessLogValve();
        valve.setDirectory(dir);
        valve.setPrefix(prefix);
        valve.setSuffix(".log");
        valve.setRotatable(false);
        valve.setBuffered(false);
        valve.setPattern(pattern);
        tomcat.getHost().getPipeline().addValve(valve);
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        String logs = args[1];
        String base = args[2];
        Tomcat tomcat = new Tomcat();
        tomcat.getServer().setPort(-1); // no shutdown port: the test kills the process
        tomcat.setBaseDir(base);
        tomcat.setPort(port);
        tomcat.getConnector();
        Context ctx = tomcat.addContext("", new File(base).getAbsolutePath());
        serve(ctx, "ok", new Answer(200, 0), "/ok");
        serve(ctx, "moved", new Answer(302, 0), "/moved");
        serve(ctx, "fail", new Answer(500, 0), "/fail");
        serve(ctx, "slow", new Answer(200, 120), "/slow");
        log(tomcat, logs, "access_d", args[3]);
        log(tomcat, logs, "access_ms", args[4]);
        log(tomcat, logs, "access_t", args[5]);
        tomcat.start();
        tomcat.getServer().await();
    }
}
"#;

#[test]
fn tomcat_access_logs_are_counted_exactly() {
    const TEST: &str = "tomcat_access_logs_are_counted_exactly";
    if !have_java(TEST) {
        return;
    }
    let Some(classpath) = tomcat_classpath() else {
        missing(
            TEST,
            "the Tomcat 10 jars are not in /usr/share/java (Debian package `libtomcat10-java`, \
             or set VIGIL_TOMCAT_LIB)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (logs, base) = (d.join("logs"), d.join("base"));
    fs::create_dir_all(&logs).unwrap();
    fs::create_dir_all(&base).unwrap();
    fs::write(d.join("AccessServer.java"), SERVER).unwrap();
    let javac = wait::output_within(
        java_command("javac", d).args(["-cp", &classpath, "-d", ".", "AccessServer.java"]),
        None,
        Duration::from_secs(180),
    );
    assert!(
        javac.status.success(),
        "javac failed:\n{}",
        String::from_utf8_lossy(&javac.stderr)
    );

    let port = free_port();
    let out = fs::File::create(d.join("tomcat.out")).unwrap();
    let mut tomcat = wait::spawn_group(
        java_command("java", d)
            .args([
                "-Xshare:auto",
                "-XX:TieredStopAtLevel=1",
                "-Duser.timezone=America/New_York",
                "-Duser.language=en",
                "-Duser.country=US",
                "-cp",
                &format!(".:{classpath}"),
                "AccessServer",
                &port.to_string(),
            ])
            .arg(&logs)
            .arg(&base)
            .args([TOMCAT_D, TOMCAT_MS, TOMCAT_T])
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    );
    wait::wait_until(
        Duration::from_secs(120),
        "Tomcat to accept connections",
        || {
            if let Some(status) = tomcat.try_wait() {
                panic!(
                    "Tomcat exited ({status}):\n{}",
                    fs::read_to_string(d.join("tomcat.out")).unwrap_or_default()
                );
            }
            accepts(port)
        },
    );

    let started = unix_now();
    let plan: &[(&str, u16, usize)] = &[
        ("/ok", 200, 5),
        ("/moved", 302, 2),
        ("/missing", 404, 3),
        ("/fail", 500, 3),
        ("/slow", 200, 4),
    ];
    for &(path, status, times) in plan {
        for _ in 0..times {
            assert_eq!(get(port, path, ""), status, "GET {path}");
        }
    }
    // Quotes and a backslash in a header: Tomcat writes them escaped (\" and \\).
    assert_eq!(
        get(
            port,
            "/ok",
            "User-Agent: Agent \"quoted\" \\ with spaces\r\nReferer: http://x/?q=\"a b\"\r\n",
        ),
        200
    );
    let ended = unix_now();
    let total = plan.iter().map(|p| p.2).sum::<usize>() + 1;
    let files = ["access_d.log", "access_ms.log", "access_t.log"].map(|f| logs.join(f));
    for file in &files {
        wait::wait_until(
            Duration::from_secs(30),
            format!("{total} lines in {}", file.display()),
            || line_count(file) == total,
        );
    }
    tomcat.kill();

    let d_text = fs::read_to_string(&files[0]).unwrap();
    let ms_text = fs::read_to_string(&files[1]).unwrap();
    eprintln!("Tomcat's access_d.log:\n{d_text}\nTomcat's access_ms.log:\n{ms_text}");
    if Path::new("/usr/share/zoneinfo/America/New_York").exists() {
        assert!(
            d_text.contains(" -0500]") || d_text.contains(" -0400]"),
            "Tomcat wrote New York times:\n{d_text}"
        );
    }
    assert!(
        ms_text.contains(r#""Agent \"quoted\" \\ with spaces""#),
        "Tomcat escaped the header:\n{ms_text}"
    );

    // %D (microseconds in Tomcat 10) against %{ms}T, line by line: the same request.
    let by_d = AccessFormat::compile(TOMCAT_D, None).unwrap();
    let by_ms = AccessFormat::compile(TOMCAT_MS, None).unwrap();
    for (line_d, line_ms) in d_text.lines().zip(ms_text.lines()) {
        let a = by_d.parse(line_d.as_bytes()).unwrap();
        let b = by_ms.parse(line_ms.as_bytes()).unwrap();
        assert_eq!(a.status, b.status);
        assert_eq!(a.time, b.time);
        let t = a.time.expect("a time");
        assert!((started - 1..=ended + 1).contains(&t), "{line_d}");
        let (da, db) = (a.latency_ms.unwrap(), b.latency_ms.unwrap());
        assert!(
            (da - db).abs() <= 1.0,
            "%D read as {da} ms, %{{ms}}T says {db} ms:\n{line_d}\n{line_ms}"
        );
        if line_d.contains("GET /slow ") {
            assert!((120.0..5000.0).contains(&da), "{line_d}: {da} ms");
        }
    }

    let expected = [0, 6 + 4, 2, 3, 3];
    for (file, format) in files.iter().zip([TOMCAT_D, TOMCAT_MS, TOMCAT_T]) {
        let (r, minutes) = count(file, format, None);
        assert_eq!(r.malformed, 0, "{}", file.display());
        assert_eq!(r.count, total as u64);
        assert_eq!(classes(&r), expected, "{}", file.display());
        assert!(
            minutes
                .iter()
                .all(|m| (started / 60 * 60..=ended).contains(m)),
            "{minutes:?}"
        );
        let (slow_ones, timed) = in_buckets_from(&r, bucket_of(119.0));
        assert_eq!(timed, total as u64, "every line has a response time");
        if format == TOMCAT_T {
            // Whole seconds: "0" for all but a request that took a second or more.
            assert_eq!(r.latency_sum_ms % 1000.0, 0.0, "{}", r.latency_sum_ms);
            assert!(
                r.latency
                    .iter()
                    .all(|b| b.index == bucket_of(0.0) || b.index >= bucket_of(1000.0)),
                "{:?}",
                r.latency
            );
        } else {
            assert!(slow_ones >= 4, "{}: {:?}", file.display(), r.latency);
            assert!(r.latency_sum_ms >= 480.0, "{}", r.latency_sum_ms);
        }
    }
    // Read as Tomcat 9's milliseconds, the 120 ms requests would take two minutes.
    let (wrong, _) = count(&files[0], TOMCAT_D, Some("ms"));
    assert!(in_buckets_from(&wrong, bucket_of(119_000.0)).0 >= 4);
    assert_eq!(
        LatencyUnit::parse("ms"),
        Some(LatencyUnit::Millis),
        "the unit a Tomcat 9 user sets"
    );
}
