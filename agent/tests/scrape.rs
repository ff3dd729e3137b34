//! `[[scrape]]` against real HTTP servers running in the test (threads answering with
//! hand-written HTTP/1.1), serving Spring Boot Actuator pages in Micrometer's own shapes:
//!
//! - the simpleclient shape of Spring Boot 2 (`percentiles-histogram` on: 69 cumulative
//!   `_bucket{le=...}` per series, `,}` trailing commas, counts as `1.0`), its bounds and
//!   label sets as a real `/actuator/prometheus` writes them;
//! - the Prometheus-metrics shape of Spring Boot 3.3+ (summaries, counts as `1`, `# TYPE
//!   x_total counter`).
//!
//! No JVM here: Debian has no Prometheus Java client (`libsimpleclient-java` does not exist)
//! and Micrometer is not packaged, so the pages follow the documented format and real
//! published output. Through the library: exact requests per status class, the latency
//! histogram from the buckets, a restart's reset, `/actuator` left out; failures (a target
//! that hangs, garbage, an endless body, a 500, a refused connection) within their bounds,
//! the next good scrape counting against the last good one. Through the real `vigil-agent
//! run`: a target whose counters advance gives exact `requests` and `scraped` values in the
//! spooled reports, while a hanging target costs timeouts and the log is read meanwhile.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/wait.rs"]
mod wait;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_agent::config::AgentConfig;
use vigil_agent::scrape::client::{self, Endpoint, Failure};
use vigil_agent::scrape::{RequestDelta, Target};
use vigil_agent::spool::Spool;
use vigil_proto::latency;
use vigil_proto::v1::ScrapedKind;
use vigil_proto::v1::report::Body;

const AGENT: &str = env!("CARGO_BIN_EXE_vigil-agent");

/// Micrometer's default `percentiles-histogram` bounds for a timer (1 ms to 30 s), as a
/// Spring Boot 2 `/actuator/prometheus` page lists them.
const BOUNDS: &[&str] = &[
    "0.001",
    "0.001048576",
    "0.001398101",
    "0.001747626",
    "0.002097151",
    "0.002446676",
    "0.002796201",
    "0.003145726",
    "0.003495251",
    "0.003844776",
    "0.004194304",
    "0.005592405",
    "0.006990506",
    "0.008388607",
    "0.009786708",
    "0.011184809",
    "0.01258291",
    "0.013981011",
    "0.015379112",
    "0.016777216",
    "0.022369621",
    "0.027962026",
    "0.033554431",
    "0.039146836",
    "0.044739241",
    "0.050331646",
    "0.055924051",
    "0.061516456",
    "0.067108864",
    "0.089478485",
    "0.111848106",
    "0.134217727",
    "0.156587348",
    "0.178956969",
    "0.20132659",
    "0.223696211",
    "0.246065832",
    "0.268435456",
    "0.357913941",
    "0.447392426",
    "0.536870911",
    "0.626349396",
    "0.715827881",
    "0.805306366",
    "0.894784851",
    "0.984263336",
    "1.073741824",
    "1.431655765",
    "1.789569706",
    "2.147483647",
    "2.505397588",
    "2.863311529",
    "3.22122547",
    "3.579139411",
    "3.937053352",
    "4.294967296",
    "5.726623061",
    "7.158278826",
    "8.589934591",
    "10.021590356",
    "11.453246121",
    "12.884901886",
    "14.316557651",
    "15.748213416",
    "17.179869184",
    "22.906492245",
    "28.633115306",
    "30.0",
    "+Inf",
];

/// One request series: its labels and the response times (seconds) it has served so far.
struct Series {
    method: &'static str,
    status: &'static str,
    outcome: &'static str,
    uri: &'static str,
    times: Vec<f64>,
}

fn series(
    method: &'static str,
    status: &'static str,
    outcome: &'static str,
    uri: &'static str,
    times: &[f64],
) -> Series {
    Series {
        method,
        status,
        outcome,
        uri,
        times: times.to_vec(),
    }
}

/// A Spring Boot 2 page (simpleclient shape) with `http_server_requests_seconds` as a
/// histogram of these series, and a few JVM families.
fn spring_boot_2_page(all: &[Series]) -> String {
    let mut p = String::from(
        "# HELP jvm_threads_live_threads The current number of live threads including both daemon and non-daemon threads\n\
         # TYPE jvm_threads_live_threads gauge\n\
         jvm_threads_live_threads 22.0\n\
         # HELP http_server_requests_seconds  \n\
         # TYPE http_server_requests_seconds histogram\n",
    );
    for s in all {
        let labels = format!(
            "exception=\"none\",method=\"{}\",outcome=\"{}\",status=\"{}\",uri=\"{}\",",
            s.method, s.outcome, s.status, s.uri
        );
        for le in BOUNDS {
            let bound: f64 = if *le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let n = s.times.iter().filter(|t| **t <= bound).count();
            p.push_str(&format!(
                "http_server_requests_seconds_bucket{{{labels}le=\"{le}\",}} {n}.0\n"
            ));
        }
        let sum: f64 = s.times.iter().sum();
        p.push_str(&format!(
            "http_server_requests_seconds_count{{{labels}}} {}.0\n\
             http_server_requests_seconds_sum{{{labels}}} {sum:?}\n",
            s.times.len()
        ));
    }
    p.push_str(
        "# HELP http_server_requests_seconds_max  \n# TYPE http_server_requests_seconds_max gauge\n",
    );
    for s in all {
        p.push_str(&format!(
            "http_server_requests_seconds_max{{exception=\"none\",method=\"{}\",outcome=\"{}\",status=\"{}\",uri=\"{}\",}} 0.0\n",
            s.method, s.outcome, s.status, s.uri
        ));
    }
    p
}

/// What the test servers answer.
#[derive(Debug, Clone)]
enum Answer {
    Page(String),
    /// Accept, read the request, never answer.
    Hang,
    /// 200 with a body that is not a metrics page.
    Garbage,
    /// 200 with a body that never ends.
    Endless,
    /// 500 with Spring's error JSON.
    Error,
}

/// An HTTP/1.1 server on a thread, one thread per connection.
struct Server {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(answer: Answer) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let server = Server {
            port,
            answer: Arc::new(Mutex::new(answer)),
            served: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (answer, served, stop) = (
            Arc::clone(&server.answer),
            Arc::clone(&server.served),
            Arc::clone(&server.stop),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let answer = answer.lock().unwrap().clone();
                        let (served, stop) = (Arc::clone(&served), Arc::clone(&stop));
                        std::thread::spawn(move || serve(stream, &answer, &served, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        server
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/actuator/prometheus", self.port)
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, answer: &Answer, served: &AtomicU64, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    assert!(request.starts_with(b"GET /actuator/prometheus HTTP/1.1\r\n"));
    served.fetch_add(1, Ordering::Relaxed);
    let head = |status: &str, length: Option<usize>| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain;version=0.0.4;charset=utf-8\r\n{}Connection: close\r\n\r\n",
            length.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"))
        )
    };
    let _ = match answer {
        Answer::Page(page) => {
            stream.write_all(format!("{}{page}", head("200 OK", Some(page.len()))).as_bytes())
        }
        Answer::Hang => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                // Gone once the client gave up.
                if stream.write_all(b"").is_err() {
                    break;
                }
            }
            Ok(())
        }
        Answer::Garbage => {
            let body = "<html><body><h1>Whitelabel Error Page</h1>{\"status\":200}</body></html>\n";
            stream.write_all(format!("{}{body}", head("200 OK", Some(body.len()))).as_bytes())
        }
        Answer::Endless => {
            let mut result = stream.write_all(head("200 OK", None).as_bytes());
            let chunk = "jvm_threads_live_threads 22.0\n".repeat(2048);
            while result.is_ok() && !stop.load(Ordering::Relaxed) {
                result = stream.write_all(chunk.as_bytes());
            }
            result
        }
        Answer::Error => {
            let body = "{\"timestamp\":\"2026-11-30T10:00:00.000+00:00\",\"status\":500,\"error\":\"Internal Server Error\",\"path\":\"/actuator/prometheus\"}";
            stream.write_all(
                format!(
                    "{}{body}",
                    head("500 Internal Server Error", Some(body.len()))
                )
                .as_bytes(),
            )
        }
    };
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn scrape_config(url: &str, families: &str) -> AgentConfig {
    AgentConfig::parse(
        Path::new("agent.toml"),
        &format!(
            "[[scrape]]\napp = \"shop\"\nurl = \"{url}\"\ninterval = \"2s\"\ntimeout = \"500ms\"\n\
             max_bytes = \"256KiB\"\nfamilies = [{families}]\n"
        ),
    )
    .unwrap()
}

/// One scrape through the client and the target's reading.
fn scrape(
    rt: &tokio::runtime::Runtime,
    config: &AgentConfig,
    target: &mut Target,
) -> Result<Option<RequestDelta>, Failure> {
    let s = &config.scrape[0];
    let body = rt.block_on(client::fetch(&s.endpoint, s.timeout, s.max_bytes))?;
    Ok(target.observe(&body, 0)?.requests)
}

/// `(latency bucket, count)` of a delta's histogram.
fn buckets(delta: &RequestDelta) -> Vec<(i32, u64)> {
    delta
        .latency
        .iter()
        .zip(latency::MIN_INDEX..)
        .filter(|(n, _)| **n > 0)
        .map(|(&n, i)| (i, n))
        .collect()
}

#[test]
fn a_spring_boot_page_over_http_gives_exact_requests_by_class_and_bucket() {
    let mut state = vec![
        series("GET", "200", "SUCCESS", "/api/cart", &[0.004, 0.012, 0.05]),
        series("GET", "404", "CLIENT_ERROR", "/**", &[0.003]),
        series(
            "GET",
            "200",
            "SUCCESS",
            "/actuator/prometheus",
            &[0.02, 0.02],
        ),
        series("GET", "200", "SUCCESS", "/actuator/health", &[0.001]),
    ];
    let server = Server::start(Answer::Page(spring_boot_2_page(&state)));
    let config = scrape_config(&server.url(), "");
    let mut target = Target::new(&config.scrape[0], 0, true);
    let rt = runtime();
    assert_eq!(scrape(&rt, &config, &mut target), Ok(None), "the baseline");

    // Between two scrapes: 4 fast and 1 slow cart requests, 2 new 500s on a templated
    // route, one more 404, and the scrapes and health checks of /actuator.
    state[0].times.extend([0.0009, 0.002, 0.002, 0.09, 1.2]);
    state[1].times.push(0.0035);
    state[2].times.push(0.03);
    state[3].times.extend([0.001, 0.001]);
    state.push(series(
        "POST",
        "500",
        "SERVER_ERROR",
        "/api/orders/{orderId}",
        &[0.25, 45.0],
    ));
    server.set(Answer::Page(spring_boot_2_page(&state)));
    let delta = scrape(&rt, &config, &mut target).unwrap().expect("a delta");
    assert_eq!(
        delta.classes,
        [0, 5, 0, 1, 2],
        "by status class, /actuator left out"
    );
    assert_eq!(delta.unclassified, 0);
    let sum_ms = (0.0009 + 0.002 + 0.002 + 0.09 + 1.2 + 0.0035 + 0.25 + 45.0) * 1000.0;
    assert!(
        (delta.latency_sum_ms - sum_ms).abs() < 1e-6,
        "{} ms",
        delta.latency_sum_ms
    );
    // Each time in the Vigil bucket of its Micrometer bucket's upper bound; 45 s (beyond
    // the last bound, 30 s) in the bucket of 30 s.
    let mut expected: BTreeMap<i32, u64> = BTreeMap::new();
    for (t, le_ms) in [
        (0.0009, 1.0),
        (0.002, 2.097151),
        (0.002, 2.097151),
        (0.09, 111.848106),
        (1.2, 1431.655765),
        (0.0035, 3.844776),
        (0.25, 268.435456),
        (45.0, 30_000.0),
    ] {
        assert!(
            t * 1000.0 <= le_ms || le_ms == 30_000.0,
            "{t} s in the bucket of {le_ms} ms"
        );
        *expected.entry(latency::bucket_of(le_ms)).or_default() += 1;
    }
    assert_eq!(buckets(&delta), expected.into_iter().collect::<Vec<_>>());

    // The service restarts: every counter starts again, /actuator too.
    let restarted = vec![
        series("GET", "200", "SUCCESS", "/api/cart", &[0.006, 0.006]),
        series("GET", "503", "SERVER_ERROR", "/api/cart", &[0.01]),
        series("GET", "200", "SUCCESS", "/actuator/prometheus", &[0.02]),
    ];
    server.set(Answer::Page(spring_boot_2_page(&restarted)));
    let delta = scrape(&rt, &config, &mut target).unwrap().expect("a delta");
    assert_eq!(
        delta.classes,
        [0, 2, 0, 0, 1],
        "after a reset, the new values"
    );
    assert_eq!(
        buckets(&delta),
        [
            (latency::bucket_of(6.990506), 2),
            (latency::bucket_of(11.184809), 1)
        ]
    );
    assert_eq!(server.served(), 3);
}

#[test]
fn failures_are_bounded_and_the_next_good_scrape_counts_against_the_last_good_one() {
    let mut state = vec![series("GET", "200", "SUCCESS", "/api/cart", &[0.01; 10])];
    let server = Server::start(Answer::Page(spring_boot_2_page(&state)));
    let config = scrape_config(&server.url(), "");
    let mut target = Target::new(&config.scrape[0], 0, true);
    let rt = runtime();
    assert_eq!(scrape(&rt, &config, &mut target), Ok(None));

    server.set(Answer::Hang);
    let started = Instant::now();
    assert_eq!(
        scrape(&rt, &config, &mut target),
        Err(Failure::Timeout(Duration::from_millis(500)))
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );

    server.set(Answer::Garbage);
    match scrape(&rt, &config, &mut target) {
        Err(Failure::Parse(why)) => assert!(why.starts_with("line 1:"), "{why}"),
        other => panic!("garbage read as {other:?}"),
    }

    server.set(Answer::Endless);
    let started = Instant::now();
    assert_eq!(
        scrape(&rt, &config, &mut target),
        Err(Failure::TooBig(256 * 1024)),
        "an endless body stops at max_bytes"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    server.set(Answer::Error);
    assert_eq!(scrape(&rt, &config, &mut target), Err(Failure::Status(500)));

    // A page longer than max_bytes, announced as such.
    let big = format!(
        "{}{}",
        spring_boot_2_page(&state),
        "# padding\n".repeat(30_000)
    );
    server.set(Answer::Page(big));
    assert_eq!(
        scrape(&rt, &config, &mut target),
        Err(Failure::TooBig(256 * 1024))
    );

    // Meanwhile 7 requests: the next good scrape counts them against the last good one.
    state[0].times.extend([0.01; 7]);
    server.set(Answer::Page(spring_boot_2_page(&state)));
    let delta = scrape(&rt, &config, &mut target).unwrap().expect("a delta");
    assert_eq!(delta.classes, [0, 7, 0, 0, 0]);

    // Nobody listening.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{closed}/metrics")).unwrap();
    match rt.block_on(client::fetch(&endpoint, Duration::from_secs(1), 1024)) {
        Err(Failure::Connect(_)) => {}
        other => panic!("a closed port read as {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The real agent.

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A Spring Boot 3.3+ page (Prometheus-metrics shape): requests as summaries, a GC pause
/// summary, a heap gauge per pool, the Hikari pending gauge.
fn spring_boot_3_page(ok: u64, client_errors: u64, server_errors: u64, gc: u64) -> String {
    let mut p = String::from(
        "# HELP application_ready_time_seconds Time taken for the application to be ready to service requests\n\
         # TYPE application_ready_time_seconds gauge\n\
         application_ready_time_seconds{main_application_class=\"shop.Application\"} 1.038\n\
         # HELP executor_completed_tasks_total The approximate total number of tasks that have completed execution\n\
         # TYPE executor_completed_tasks_total counter\n\
         executor_completed_tasks_total{name=\"applicationTaskExecutor\"} 0.0\n\
         # HELP hikaricp_connections_pending Pending threads\n\
         # TYPE hikaricp_connections_pending gauge\n\
         hikaricp_connections_pending{pool=\"HikariPool-1\"} 3.0\n\
         # HELP http_server_requests_seconds  \n\
         # TYPE http_server_requests_seconds summary\n",
    );
    for (status, outcome, uri, n) in [
        ("200", "SUCCESS", "/api/cart", ok),
        ("404", "CLIENT_ERROR", "/**", client_errors),
        (
            "500",
            "SERVER_ERROR",
            "/api/orders/{orderId}",
            server_errors,
        ),
        ("200", "SUCCESS", "/actuator/prometheus", ok + 1000),
    ] {
        let labels = format!(
            "error=\"none\",exception=\"none\",method=\"GET\",outcome=\"{outcome}\",status=\"{status}\",uri=\"{uri}\""
        );
        p.push_str(&format!(
            "http_server_requests_seconds_count{{{labels}}} {n}\n\
             http_server_requests_seconds_sum{{{labels}}} {:?}\n",
            n as f64 * 0.02
        ));
    }
    p.push_str(&format!(
        "# HELP jvm_gc_pause_seconds Time spent in GC pause\n\
         # TYPE jvm_gc_pause_seconds summary\n\
         jvm_gc_pause_seconds_count{{action=\"end of minor GC\",cause=\"G1 Evacuation Pause\",gc=\"G1 Young Generation\"}} {gc}\n\
         jvm_gc_pause_seconds_sum{{action=\"end of minor GC\",cause=\"G1 Evacuation Pause\",gc=\"G1 Young Generation\"}} {:?}\n\
         # HELP jvm_memory_used_bytes The amount of used memory\n\
         # TYPE jvm_memory_used_bytes gauge\n\
         jvm_memory_used_bytes{{area=\"heap\",id=\"G1 Eden Space\"}} 6291456.0\n\
         jvm_memory_used_bytes{{area=\"heap\",id=\"G1 Old Gen\"}} 1.5906816E7\n\
         jvm_memory_used_bytes{{area=\"nonheap\",id=\"Metaspace\"}} 3.4763144E7\n",
        gc as f64 * 0.003
    ));
    p
}

fn metric(admin: &str, series: &str) -> Option<f64> {
    let text = ureq::get(&format!("{admin}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_agent_sends_scraped_requests_and_values_while_a_hanging_target_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("logs")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (base_ok, base_4xx, base_5xx, base_gc) = (1000, 40, 0, 300);
    let shop = Server::start(Answer::Page(spring_boot_3_page(
        base_ok, base_4xx, base_5xx, base_gc,
    )));
    let stuck = Server::start(Answer::Hang);
    fs::write(
        d.join("agent.toml"),
        format!(
            r#"data_dir = "{d}/data"
admin_listen = "127.0.0.1:{port}"

[host]
name = "scrape-e2e"

[detector]
endpoint = "http://127.0.0.1:1"
flush_interval = "500ms"

[[logs]]
app = "shop"
paths = ["{d}/logs/shop.log"]
start_at = "beginning"

[[scrape]]
app = "shop"
url = "{shop}"
interval = "1s"
timeout = "400ms"
families = ["jvm_gc_pause_seconds", 'jvm_memory_used_bytes{{area="heap"}}', "hikaricp_connections_pending", "executor_completed_tasks"]

[[scrape]]
app = "stuck"
url = "{stuck}"
interval = "1s"
timeout = "300ms"
"#,
            d = d.display(),
            shop = shop.url(),
            stuck = stuck.url(),
        ),
    )
    .unwrap();

    let check = Command::new(AGENT)
        .args(["check", "--offline", "--config"])
        .arg(d.join("agent.toml"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&check.stdout);
    assert!(
        listed.contains(&format!(
            "scrape[0] app \"shop\": {} every 1s (timeout 400ms",
            shop.url()
        )),
        "{listed}"
    );
    assert!(listed.contains("scrape[1] app \"stuck\""), "{listed}");
    let check = Command::new(AGENT)
        .args(["check", "--config"])
        .arg(d.join("agent.toml"))
        .output()
        .unwrap();
    let tried = String::from_utf8_lossy(&check.stdout);
    assert!(
        tried.contains("series of http_server_requests_seconds"),
        "{tried}"
    );
    assert!(
        tried.contains("PROBLEM: no answer within 300ms (timeout)"),
        "{tried}"
    );

    let log = fs::File::create(d.join("agent.log")).unwrap();
    let mut agent = wait::spawn_group(
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(d.join("agent.toml"))
            .env("VIGIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let admin = format!("http://127.0.0.1:{port}");
    let shop_scrapes = format!(
        "vigil_agent_scrapes_total{{app=\"shop\",url=\"{}\"}}",
        shop.url()
    );
    let scrapes = || metric(&admin, &shop_scrapes).unwrap_or(0.0) as u64;
    wait::wait_until(Duration::from_secs(60), "the baseline scrape", || {
        assert!(agent.try_wait().is_none(), "the agent exited");
        scrapes() >= 2
    });
    let started = unix_now();
    // The counters advance for a while, across a minute boundary (gauges go out with the
    // closed minute); a log line is written every step, read while `stuck` hangs.
    let (mut ok, mut e4, mut e5, mut gc) = (base_ok, base_4xx, base_5xx, base_gc);
    let mut lines = 0u64;
    let mut step = 0u64;
    while unix_now() < (started / 60 + 1) * 60 + 3 || step < 3 {
        step += 1;
        ok += 17;
        e4 += step % 2;
        e5 += u64::from(step.is_multiple_of(3));
        gc += 2;
        shop.set(Answer::Page(spring_boot_3_page(ok, e4, e5, gc)));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("logs/shop.log"))
            .unwrap();
        writeln!(
            file,
            "2026-11-30 10:00:00.000 INFO  [main] shop.Cart - step {step}"
        )
        .unwrap();
        lines += 1;
        let seen = scrapes();
        wait::wait_until(
            Duration::from_secs(30),
            "a scrape of the new page, and the log line read while a target hangs",
            || {
                let read = metric(&admin, "vigil_agent_lines_read_total{app=\"shop\"}");
                scrapes() >= seen + 2 && read.is_some_and(|n| n as u64 == lines)
            },
        );
    }
    let timeouts = metric(
        &admin,
        &format!(
            "vigil_agent_scrape_failures_total{{app=\"stuck\",url=\"{}\",reason=\"timeout\"}}",
            stuck.url()
        ),
    )
    .unwrap_or(0.0);
    assert!(timeouts >= 3.0, "{timeouts} timeouts");
    assert_eq!(
        metric(
            &admin,
            &format!(
                "vigil_agent_scrape_failures_total{{app=\"shop\",url=\"{}\",reason=\"timeout\"}}",
                shop.url()
            )
        ),
        Some(0.0)
    );
    std::thread::sleep(Duration::from_millis(1200));
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let status = agent.wait_timeout(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent did not stop cleanly: {}",
        fs::read_to_string(d.join("agent.log")).unwrap_or_default()
    );

    // What the reports say.
    let mut spool = Spool::open(&d.join("data"), 1 << 30, 0).unwrap();
    let reports = spool.read_from(1, 1_000_000).unwrap();
    let mut classes = [0u64; 5];
    let mut latency_sum_ms = 0.0;
    let mut counters: BTreeMap<String, f64> = BTreeMap::new();
    let mut gauges: Vec<(String, f64)> = Vec::new();
    let mut stuck_requests = 0;
    for report in &reports {
        let Some(Body::Minute(minute)) = &report.body else {
            continue;
        };
        for app in &minute.apps {
            if app.app == "stuck" {
                stuck_requests += u64::from(app.requests.is_some()) + app.scraped.len() as u64;
                continue;
            }
            if let Some(r) = &app.requests {
                for (c, n) in classes.iter_mut().zip([
                    r.status_1xx,
                    r.status_2xx,
                    r.status_3xx,
                    r.status_4xx,
                    r.status_5xx,
                ]) {
                    *c += n;
                }
                assert_eq!(r.count, r.status_2xx + r.status_4xx + r.status_5xx);
                assert!(r.latency.is_empty(), "a summary has no buckets");
                latency_sum_ms += r.latency_sum_ms;
            }
            for v in &app.scraped {
                if v.kind == ScrapedKind::Gauge as i32 {
                    gauges.push((v.name.clone(), v.value));
                } else {
                    *counters.entry(v.name.clone()).or_default() += v.value;
                }
            }
        }
    }
    assert_eq!(
        classes,
        [0, ok - base_ok, 0, e4 - base_4xx, e5 - base_5xx],
        "every request once, by class, /actuator left out"
    );
    let requests = (ok - base_ok + e4 - base_4xx + e5 - base_5xx) as f64;
    assert!(
        (latency_sum_ms - requests * 20.0).abs() < 1e-3,
        "{latency_sum_ms}"
    );
    assert_eq!(
        counters.get("jvm_gc_pause_seconds_count").copied(),
        Some((gc - base_gc) as f64)
    );
    let gc_sum = counters
        .get("jvm_gc_pause_seconds_sum")
        .copied()
        .unwrap_or(0.0);
    assert!(
        (gc_sum - (gc - base_gc) as f64 * 0.003).abs() < 1e-9,
        "{gc_sum}"
    );
    assert_eq!(counters.get("executor_completed_tasks").copied(), Some(0.0));
    assert!(!gauges.is_empty(), "a closed minute carries the gauges");
    for (name, value) in &gauges {
        match name.as_str() {
            "jvm_memory_used_bytes{area=\"heap\"}" => assert_eq!(*value, 6291456.0 + 1.5906816E7),
            "hikaricp_connections_pending" => assert_eq!(*value, 3.0),
            other => panic!("unexpected gauge {other}"),
        }
    }
    assert_eq!(
        stuck_requests, 0,
        "a target that never answered sends nothing"
    );
}
