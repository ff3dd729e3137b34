//! End to end, the scrape path: a real `vigil-agent` scrapes a Spring Boot Actuator page
//! (Micrometer's text format, served over HTTP on 127.0.0.1 by the test) whose counters
//! the test advances, and the detector stores what the service answered, exactly: its
//! requests by status class (the growth of `http_server_requests_seconds_count` after the
//! first scrape, `/actuator` left out) and the scraped GC pauses and pending connections.
//! The judgement reads these requests as it reads an access log's (`tests/release_business.rs`).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{AgentSetup, DetectorProcess, eventually, spawn};

/// What the service has answered so far: 2xx, 5xx, GC pauses.
#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    gc: AtomicU64,
    scrapes: AtomicU64,
}

fn page(c: &Counters) -> String {
    let (ok, failed, gc) = (
        c.ok.load(Ordering::SeqCst),
        c.failed.load(Ordering::SeqCst),
        c.gc.load(Ordering::SeqCst),
    );
    let mut p = String::from(
        "# HELP hikaricp_connections_pending Pending threads\n\
         # TYPE hikaricp_connections_pending gauge\n\
         hikaricp_connections_pending{pool=\"HikariPool-1\"} 2.0\n\
         # HELP http_server_requests_seconds  \n\
         # TYPE http_server_requests_seconds summary\n",
    );
    for (status, outcome, uri, n) in [
        ("200", "SUCCESS", "/api/cart", ok),
        ("503", "SERVER_ERROR", "/api/orders/{orderId}", failed),
        ("200", "SUCCESS", "/actuator/prometheus", ok + 7),
    ] {
        let labels = format!(
            "error=\"none\",exception=\"none\",method=\"GET\",outcome=\"{outcome}\",status=\"{status}\",uri=\"{uri}\""
        );
        p.push_str(&format!(
            "http_server_requests_seconds_count{{{labels}}} {n}.0\n\
             http_server_requests_seconds_sum{{{labels}}} {:?}\n",
            n as f64 * 0.02
        ));
    }
    p.push_str(&format!(
        "# HELP jvm_gc_pause_seconds Time spent in GC pause\n\
         # TYPE jvm_gc_pause_seconds summary\n\
         jvm_gc_pause_seconds_count{{action=\"end of minor GC\",cause=\"G1 Evacuation Pause\",gc=\"G1 Young Generation\"}} {gc}.0\n\
         jvm_gc_pause_seconds_sum{{action=\"end of minor GC\",cause=\"G1 Evacuation Pause\",gc=\"G1 Young Generation\"}} {:?}\n",
        gc as f64 * 0.004
    ));
    p
}

/// Serves the page until dropped.
struct Actuator {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Actuator {
    fn start(counters: Arc<Counters>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16_384 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = page(&counters);
                counters.scrapes.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain;version=0.0.4;charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self { port, stop }
    }
}

impl Drop for Actuator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn scraped_requests_and_values_reach_the_detector_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let detector = DetectorProcess::start(dir.path());
    let counters = Arc::new(Counters::default());
    // What the service answered before the agent's first scrape: its baseline, not counted.
    counters.ok.store(5_000, Ordering::SeqCst);
    counters.failed.store(40, Ordering::SeqCst);
    counters.gc.store(300, Ordering::SeqCst);
    let actuator = Actuator::start(Arc::clone(&counters));
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let glob = format!("{}/*.log", logs.display());
    let tables = format!(
        "[[scrape]]\napp = \"cart\"\nurl = \"http://127.0.0.1:{}/actuator/prometheus\"\n\
         interval = \"1s\"\nfamilies = [\"jvm_gc_pause_seconds\", \"hikaricp_connections_pending\"]\n",
        actuator.port
    );
    let config = AgentSetup {
        tables: &tables,
        ..AgentSetup::new(&detector.grpc, "scrape-host", "cart", &glob)
    }
    .write(dir.path());
    let agent = spawn("vigil-agent", &config, &dir.path().join("agent.log"));
    assert!(
        eventually(Duration::from_secs(30), || counters
            .scrapes
            .load(Ordering::SeqCst)
            >= 2),
        "the agent did not scrape the page"
    );
    // The service answers 1,200 requests (60 of them 503s) and pauses 9 times for GC,
    // over several scrapes.
    for _ in 0..6 {
        counters.ok.fetch_add(190, Ordering::SeqCst);
        counters.failed.fetch_add(10, Ordering::SeqCst);
        counters.gc.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(700));
    }
    counters.gc.fetch_add(3, Ordering::SeqCst);
    let totals = || {
        let series = detector.get("/api/v1/series?app=cart");
        let minutes = series["minutes"].as_array().cloned().unwrap_or_default();
        let sum = |f: &dyn Fn(&serde_json::Value) -> Option<f64>| -> f64 {
            minutes.iter().filter_map(f).sum()
        };
        (
            sum(&|m| m["requests"]["count"].as_f64()),
            sum(&|m| m["requests"]["status"]["5xx"].as_f64()),
            sum(&|m| m["scraped"]["jvm_gc_pause_seconds_count"].as_f64()),
            minutes
                .iter()
                .filter_map(|m| m["scraped"]["hikaricp_connections_pending"].as_f64())
                .next_back(),
        )
    };
    let mut seen = (0.0, 0.0, 0.0, None);
    let stored = eventually(Duration::from_secs(90), || {
        seen = totals();
        seen.0 == 1_200.0 && seen.1 == 60.0 && seen.2 == 9.0 && seen.3 == Some(2.0)
    });
    assert!(
        stored,
        "stored (requests, 5xx, GC pauses, pending) {seen:?}, expected (1200, 60, 9, Some(2))"
    );
    drop(agent);
    drop(actuator);
}
