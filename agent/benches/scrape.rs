//! Cost of one scrape's reading on one core: a Spring Boot `/actuator/prometheus` page read
//! into requests and family values, as the agent does after each `GET`.
//!
//! `cargo bench -p vigil-agent --bench scrape`
//!
//! Two realistic pages, as Micrometer writes them (simpleclient shape: `# HELP`/`# TYPE`,
//! trailing commas, `1.0` counts): JVM, process, Tomcat, HikariCP, Spring Data, executor
//! and logback families and `http_server_requests_seconds` for 31 routes × statuses —
//!
//! 1. **summary** (Spring Boot's default): about 300 series;
//! 2. **histogram** (`percentiles-histogram` on): the same, the request timer with its 69
//!    buckets per series (about 4,000 series).
//!
//! Each page comes in two versions whose counters differ (more requests, GC pauses), read
//! alternately through `scrape::Target::observe` (UTF-8 check, parse, request deltas by
//! class and latency bucket, four configured families), so every reading computes deltas
//! (half of them growth, half a drop read as a restart). Prints µs per scrape and MB/s (page bytes over wall time on this thread); the
//! HTTP exchange is not in it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use vigil_agent::config::AgentConfig;
use vigil_agent::scrape::Target;

/// Micrometer's default `percentiles-histogram` bounds for a timer, 1 ms to 30 s (seconds).
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

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/cart"),
    ("POST", "/api/cart/items"),
    ("GET", "/api/products"),
    ("GET", "/api/products/{id}"),
    ("GET", "/api/products/{id}/reviews"),
    ("POST", "/api/orders"),
    ("GET", "/api/orders/{orderId}"),
    ("GET", "/api/users/me"),
    ("PUT", "/api/users/me/address"),
    ("POST", "/api/checkout"),
    ("GET", "/api/search"),
    ("GET", "/api/search/suggest"),
    ("GET", "/api/categories"),
    ("GET", "/api/categories/{slug}/products"),
    ("DELETE", "/api/cart/items/{itemId}"),
    ("POST", "/api/payments"),
    ("GET", "/api/payments/{paymentId}"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/refresh"),
    ("GET", "/api/recommendations"),
    ("GET", "/api/stores/{storeId}/stock"),
    ("GET", "/api/wishlist"),
    ("POST", "/api/wishlist/items"),
    ("GET", "/api/coupons/{code}"),
    ("GET", "/api/shipping/quotes"),
    ("GET", "/api/invoices/{invoiceId}"),
    ("POST", "/api/returns"),
    ("GET", "/api/newsletter/status"),
    ("GET", "/actuator/health"),
    ("GET", "/actuator/prometheus"),
    ("GET", "/**"),
];

/// A Spring Boot page; `round` advances the counters.
fn page(histogram: bool, round: u64) -> String {
    let mut p = String::with_capacity(1 << 20);
    let gauge = |p: &mut String, name: &str, help: &str, series: &[(&str, f64)]| {
        let _ = writeln!(p, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in series {
            if labels.is_empty() {
                let _ = writeln!(p, "{name} {v:?}");
            } else {
                let _ = writeln!(p, "{name}{{{labels},}} {v:?}");
            }
        }
    };
    let r = round as f64;
    let pools = [
        "area=\"heap\",id=\"G1 Eden Space\"",
        "area=\"heap\",id=\"G1 Old Gen\"",
        "area=\"heap\",id=\"G1 Survivor Space\"",
        "area=\"nonheap\",id=\"CodeHeap 'non-nmethods'\"",
        "area=\"nonheap\",id=\"CodeHeap 'non-profiled nmethods'\"",
        "area=\"nonheap\",id=\"CodeHeap 'profiled nmethods'\"",
        "area=\"nonheap\",id=\"Compressed Class Space\"",
        "area=\"nonheap\",id=\"Metaspace\"",
    ];
    for (name, help) in [
        ("jvm_memory_used_bytes", "The amount of used memory"),
        (
            "jvm_memory_committed_bytes",
            "The amount of memory in bytes that is committed for the Java virtual machine to use",
        ),
        (
            "jvm_memory_max_bytes",
            "The maximum amount of memory in bytes that can be used for memory management",
        ),
    ] {
        let series: Vec<(&str, f64)> = pools
            .iter()
            .enumerate()
            .map(|(i, l)| (*l, 1.048576e7 * (i as f64 + 1.0) + r * 4096.0))
            .collect();
        gauge(&mut p, name, help, &series);
    }
    let _ = writeln!(
        p,
        "# HELP jvm_gc_pause_seconds Time spent in GC pause\n# TYPE jvm_gc_pause_seconds summary"
    );
    for (action, cause, gc, n) in [
        (
            "end of minor GC",
            "G1 Evacuation Pause",
            "G1 Young Generation",
            120.0,
        ),
        (
            "end of minor GC",
            "Metadata GC Threshold",
            "G1 Young Generation",
            2.0,
        ),
        (
            "end of major GC",
            "G1 Compaction Pause",
            "G1 Old Generation",
            1.0,
        ),
    ] {
        let labels = format!("action=\"{action}\",cause=\"{cause}\",gc=\"{gc}\"");
        let _ = writeln!(p, "jvm_gc_pause_seconds_count{{{labels},}} {:?}", n + r);
        let _ = writeln!(
            p,
            "jvm_gc_pause_seconds_sum{{{labels},}} {:?}",
            (n + r) * 0.004
        );
    }
    let _ = writeln!(
        p,
        "# HELP jvm_gc_pause_seconds_max Time spent in GC pause\n# TYPE jvm_gc_pause_seconds_max gauge"
    );
    let _ = writeln!(
        p,
        "jvm_gc_pause_seconds_max{{action=\"end of minor GC\",cause=\"G1 Evacuation Pause\",gc=\"G1 Young Generation\",}} 0.004"
    );
    for (name, value) in [
        ("jvm_threads_live_threads", 42.0),
        ("jvm_threads_daemon_threads", 38.0),
        ("jvm_threads_peak_threads", 45.0),
        ("jvm_classes_loaded_classes", 17_345.0),
        ("process_cpu_usage", 0.0423),
        ("system_cpu_usage", 0.0781),
        ("system_cpu_count", 4.0),
        ("system_load_average_1m", 1.42),
        ("process_uptime_seconds", 3600.0 + r * 10.0),
        ("process_start_time_seconds", 1.718561761441E9),
        ("process_files_open_files", 131.0),
        ("process_files_max_files", 1_048_576.0),
        ("jvm_gc_live_data_size_bytes", 5.4e7),
        ("jvm_gc_max_data_size_bytes", 4.294967296E9),
        ("tomcat_sessions_active_current_sessions", 0.0),
        ("tomcat_sessions_active_max_sessions", 0.0),
        ("tomcat_sessions_alive_max_seconds", 0.0),
    ] {
        gauge(&mut p, name, "", &[("", value)]);
    }
    for state in [
        "blocked",
        "new",
        "runnable",
        "terminated",
        "timed-waiting",
        "waiting",
    ] {
        let labels = format!("state=\"{state}\"");
        gauge(
            &mut p,
            "jvm_threads_states_threads",
            "The current number of threads",
            &[(&labels, 7.0)],
        );
    }
    for id in ["direct", "mapped", "mapped - 'non-volatile memory'"] {
        let labels = format!("id=\"{id}\"");
        gauge(
            &mut p,
            "jvm_buffer_memory_used_bytes",
            "An estimate of the memory",
            &[(&labels, 32768.0)],
        );
        gauge(
            &mut p,
            "jvm_buffer_count_buffers",
            "An estimate of the number of buffers",
            &[(&labels, 4.0)],
        );
    }
    for name in [
        "hikaricp_connections",
        "hikaricp_connections_active",
        "hikaricp_connections_idle",
        "hikaricp_connections_pending",
        "hikaricp_connections_max",
        "hikaricp_connections_min",
    ] {
        let pools = [("pool=\"HikariPool-1\"", 10.0), ("pool=\"reporting\"", 4.0)];
        gauge(&mut p, name, "", &pools);
    }
    for name in [
        "hikaricp_connections_acquire_seconds",
        "hikaricp_connections_usage_seconds",
        "hikaricp_connections_creation_seconds",
    ] {
        let _ = writeln!(p, "# HELP {name} \n# TYPE {name} summary");
        for pool in ["HikariPool-1", "reporting"] {
            let _ = writeln!(
                p,
                "{name}_count{{pool=\"{pool}\",}} {:?}",
                1000.0 + r * 37.0
            );
            let _ = writeln!(p, "{name}_sum{{pool=\"{pool}\",}} {:?}", 2.5 + r * 0.1);
        }
    }
    let _ = writeln!(
        p,
        "# HELP spring_data_repository_invocations_seconds Duration of repository invocations\n# TYPE spring_data_repository_invocations_seconds summary"
    );
    for repository in [
        "CartRepository",
        "OrderRepository",
        "ProductRepository",
        "UserRepository",
    ] {
        for method in ["findById", "save", "findAll"] {
            let labels = format!(
                "exception=\"None\",method=\"{method}\",repository=\"{repository}\",state=\"SUCCESS\""
            );
            let _ = writeln!(
                p,
                "spring_data_repository_invocations_seconds_count{{{labels},}} {:?}",
                500.0 + r * 11.0
            );
            let _ = writeln!(
                p,
                "spring_data_repository_invocations_seconds_sum{{{labels},}} {:?}",
                1.5 + r * 0.03
            );
        }
    }
    for (name, value) in [
        ("tomcat_threads_busy_threads", 3.0),
        ("tomcat_threads_current_threads", 10.0),
        ("tomcat_threads_config_max_threads", 200.0),
        ("tomcat_connections_current_connections", 12.0),
        ("tomcat_connections_keepalive_current_connections", 9.0),
        ("tomcat_connections_config_max_connections", 8192.0),
    ] {
        gauge(&mut p, name, "", &[("name=\"http-nio-8080\"", value)]);
    }
    for level in ["debug", "error", "info", "trace", "warn"] {
        let _ = writeln!(
            p,
            "# TYPE logback_events_total counter\nlogback_events_total{{level=\"{level}\",}} {:?}",
            10.0 + r
        );
    }
    for (name, value) in [
        ("executor_active_threads", 0.0),
        ("executor_pool_core_threads", 8.0),
        ("executor_pool_max_threads", 2.147483647E9),
        ("executor_pool_size_threads", 0.0),
        ("executor_queue_remaining_tasks", 2.147483647E9),
        ("executor_queued_tasks", 0.0),
    ] {
        gauge(
            &mut p,
            name,
            "",
            &[("name=\"applicationTaskExecutor\"", value)],
        );
    }
    // The request timer.
    let kind = if histogram { "histogram" } else { "summary" };
    let _ = writeln!(
        p,
        "# HELP http_server_requests_seconds  \n# TYPE http_server_requests_seconds {kind}"
    );
    let mut max = Vec::new();
    for (i, (method, uri)) in ROUTES.iter().enumerate() {
        let statuses: &[(&str, &str)] = match i % 4 {
            0 => &[("200", "SUCCESS"), ("500", "SERVER_ERROR")],
            1 => &[("201", "SUCCESS"), ("400", "CLIENT_ERROR")],
            2 => &[("200", "SUCCESS"), ("404", "CLIENT_ERROR")],
            _ => &[("200", "SUCCESS")],
        };
        for (j, (status, outcome)) in statuses.iter().enumerate() {
            let labels = format!(
                "error=\"none\",exception=\"none\",method=\"{method}\",outcome=\"{outcome}\",status=\"{status}\",uri=\"{uri}\""
            );
            let count = (1000.0 * (i as f64 + 1.0) / (j as f64 * 20.0 + 1.0)).round()
                + r * (i as f64 + 3.0);
            if histogram {
                for (k, le) in BOUNDS.iter().enumerate() {
                    let share = ((k as f64 + 1.0) / 40.0).min(1.0);
                    let _ = writeln!(
                        p,
                        "http_server_requests_seconds_bucket{{{labels},le=\"{le}\",}} {:?}",
                        (count * share).floor()
                    );
                }
            }
            let _ = writeln!(
                p,
                "http_server_requests_seconds_count{{{labels},}} {count:?}"
            );
            let _ = writeln!(
                p,
                "http_server_requests_seconds_sum{{{labels},}} {:?}",
                count * 0.0371
            );
            max.push(labels);
        }
    }
    let _ = writeln!(
        p,
        "# HELP http_server_requests_seconds_max  \n# TYPE http_server_requests_seconds_max gauge"
    );
    for labels in max {
        let _ = writeln!(p, "http_server_requests_seconds_max{{{labels},}} 0.2");
    }
    p
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = AgentConfig::parse(
        Path::new("bench.toml"),
        "[[scrape]]\napp = \"shop\"\nurl = \"http://127.0.0.1:8080/actuator/prometheus\"\n\
         families = [\"jvm_gc_pause_seconds\", 'jvm_memory_used_bytes{area=\"heap\"}', \
         \"hikaricp_connections_pending\", \"logback_events\"]\n",
    )?;
    let scrape = config
        .scrape
        .first()
        .ok_or("the bench configuration has a [[scrape]] entry")?;
    for (name, histogram) in [
        ("summary (Spring Boot's default)", false),
        ("histogram (percentiles-histogram on)", true),
    ] {
        let pages = [page(histogram, 1), page(histogram, 2)];
        let series = pages[0].lines().filter(|l| !l.starts_with('#')).count();
        let bytes = pages[0].len();
        let mut target = Target::new(scrape, 0, true);
        // Baseline, then a warm-up.
        for i in 0..50 {
            target.observe(pages[i % 2].as_bytes(), 0)?;
        }
        let rounds = if histogram { 2_000 } else { 10_000 };
        let started = Instant::now();
        let mut requests = 0u64;
        for i in 0..rounds {
            let seen = target.observe(pages[i % 2].as_bytes(), 0)?;
            requests += seen.requests.map_or(0, |r| r.count());
            std::hint::black_box(&seen.values);
        }
        let seconds = started.elapsed().as_secs_f64();
        std::hint::black_box(requests);
        println!(
            "{name}: {series} series, {:.1} KB a page: {:.1} µs per scrape (parse + deltas), {:.0} MB/s",
            bytes as f64 / 1e3,
            seconds * 1e6 / rounds as f64,
            (bytes * rounds) as f64 / seconds / 1e6
        );
    }
    Ok(())
}
