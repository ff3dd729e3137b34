//! `vigil-demo`: Vigil's main job on embedded defaults, on this host, in one command.
//!
//! Starts a detector and one agent per demo host on 127.0.0.1 (real gRPC and HTTP ports, a
//! real SQLite store in a temporary directory) and a demo Java service on every host that
//! writes its log and its Tomcat access log. Then it releases new versions of the service
//! to half of the hosts through the HTTP API: version 2.0.1 starts throwing
//! `NoSuchMethodError` on the released hosts and is blocked; after its rollback, version
//! 2.0.2 is healthy and passes; version 2.0.3 logs nothing unusual but answers three times
//! slower and fails some requests with a 503, and is blocked for what its users get.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::watch;
use vigil_agent::config::AgentConfig;
use vigil_detector::Detector;
use vigil_detector::config::DetectorConfig;

/// Run a detector, agents and a demo service through a bad and a good release.
#[derive(Debug, Parser)]
#[command(name = "vigil-demo", version)]
struct Args {
    /// Demo hosts (half of them get each release).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=16))]
    hosts: u32,
    /// Log lines each host's service writes per second (and half as many requests).
    #[arg(long, default_value_t = 60)]
    rate: u64,
    /// Skip release 2.0.3 (slow and failing requests, blocked after its hosts' restart
    /// warm-up: it makes the demo about three minutes longer).
    #[arg(long)]
    no_business: bool,
    /// Seconds of normal running before the first release.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Keep the temporary directory (configs, logs, the detector's SQLite file).
    #[arg(long)]
    keep: bool,
    /// Address of the detector's HTTP port (API and pages).
    #[arg(long, default_value = "127.0.0.1:0")]
    http: std::net::SocketAddr,
    /// After the releases, keep the detector serving its pages until Ctrl-C.
    #[arg(long)]
    serve: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let dir = std::env::temp_dir().join(format!("vigil-demo-{}", std::process::id()));
    let result = std::fs::create_dir_all(&dir)
        .context("cannot create the demo directory")
        .and_then(|()| demo(&args, &dir));
    if args.keep {
        println!("\nkept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One demo host: its logs and whether its service runs a broken version.
struct DemoHost {
    name: String,
    log: PathBuf,
    access_log: PathBuf,
    broken: AtomicBool,
    /// Runs the version whose requests are slow and sometimes fail.
    slow: AtomicBool,
    /// Requests written to the access log.
    requests: AtomicU64,
    /// When the broken version first wrote its failure (Unix ms), 0 before.
    first_failure_ms: AtomicU64,
    written: AtomicU64,
}

fn demo(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let (stop_detector, detector_stopped) = watch::channel(false);
    let (stop_agents, agents_stopped) = watch::channel(false);

    let detector_config = DetectorConfig::parse(
        Path::new("<demo detector>"),
        &format!(
            "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"{}\"\ndata_dir = {:?}\n",
            args.http,
            dir.join("detector")
        ),
    )?;
    let detector = runtime.block_on(Detector::bind(detector_config))?;
    let (grpc, http) = (detector.grpc_addr(), detector.http_addr());
    let api = format!("http://{http}/api/v1");
    let detector_task = runtime.spawn(detector.serve(stopped(detector_stopped)));

    let hosts: Vec<Arc<DemoHost>> = (1..=args.hosts)
        .map(|i| {
            let name = format!("demo-host-{i}");
            let logs = dir.join(&name);
            std::fs::create_dir_all(&logs)?;
            Ok(Arc::new(DemoHost {
                log: logs.join("shop.log"),
                access_log: logs.join("localhost_access_log.txt"),
                name,
                broken: AtomicBool::new(false),
                slow: AtomicBool::new(false),
                requests: AtomicU64::new(0),
                first_failure_ms: AtomicU64::new(0),
                written: AtomicU64::new(0),
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut agent_tasks = Vec::new();
    for host in &hosts {
        let config = AgentConfig::parse(
            Path::new("<demo agent>"),
            &format!(
                r#"data_dir = {data:?}
admin_listen = ""

[host]
name = "{name}"
interval = "5s"

[detector]
endpoint = "http://{grpc}"
flush_interval = "1s"

[[logs]]
app = "shop"
paths = [{log:?}]
start_at = "beginning"
app_packages = ["shop"]
timezone = "UTC"

[[access_logs]]
app = "shop"
paths = [{access:?}]
start_at = "beginning"
format = '%h %l %u %t "%r" %s %b %D'
"#,
                data = dir.join(format!("{}-agent", host.name)),
                name = host.name,
                log = host.log,
                access = host.access_log,
            ),
        )?;
        agent_tasks.push(runtime.spawn(vigil_agent::run(config, stopped(agents_stopped.clone()))));
    }

    let service_running = Arc::new(AtomicBool::new(true));
    let services: Vec<_> = hosts
        .iter()
        .map(|host| {
            let (host, running, rate) = (Arc::clone(host), Arc::clone(&service_running), args.rate);
            std::thread::spawn(move || run_service(&host, &running, rate))
        })
        .collect();

    println!("Vigil demo");
    println!(
        "  detector  gRPC {grpc}, HTTP http://{http} (SQLite in {})",
        dir.display()
    );
    println!("  pages     http://{http}/ (the health board)");
    println!(
        "  agents    {} hosts, each tailing its own shop.log and Tomcat access log; service \"shop\" writes {} lines/s and answers {} requests/s per host",
        hosts.len(),
        args.rate,
        args.rate / 2
    );
    println!(
        "\nThe service runs normally for {} s (the baseline)...",
        args.warmup
    );
    std::thread::sleep(Duration::from_secs(args.warmup));

    let half = hosts.len() / 2;
    let released: Vec<&str> = hosts[..half].iter().map(|h| h.name.as_str()).collect();

    // Release 1: a version that calls a method its dependency no longer has.
    let bad = post(
        &format!("{api}/releases"),
        &json!({"app": "shop", "version": "2.0.1", "hosts": released}),
    )?;
    let bad_id = bad["id"].as_i64().context("release without id")?;
    println!(
        "\nRelease 2.0.1 (id {bad_id}) goes to {} (reference: {})",
        released.join(", "),
        list(&bad["reference_hosts"])
    );
    std::thread::sleep(Duration::from_secs(2));
    for host in &hosts[..half] {
        host.broken.store(true, Ordering::SeqCst);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let blocked = loop {
        let release = get(&format!("{api}/releases/{bad_id}"))?;
        if release["decision"] == "block" {
            break release;
        }
        if Instant::now() > deadline {
            bail!("release 2.0.1 was not blocked within 120 s: {release}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let first_failure = hosts[..half]
        .iter()
        .map(|h| h.first_failure_ms.load(Ordering::SeqCst))
        .filter(|ms| *ms > 0)
        .min()
        .unwrap_or(0);
    let blocked_after = unix_ms().saturating_sub(first_failure);
    println!(
        "  decision: BLOCK, {:.2} s after the first failure was logged",
        blocked_after as f64 / 1000.0
    );
    print_reasons(&blocked);
    println!("  its page: http://{http}/releases/{bad_id}");
    post(
        &format!("{api}/releases/{bad_id}/finish"),
        &json!({"outcome": "rolled_back"}),
    )?;
    post(
        &format!("{api}/releases/{bad_id}/feedback"),
        &json!({"label": "valid_block"}),
    )?;
    for host in &hosts[..half] {
        host.broken.store(false, Ordering::SeqCst);
    }
    println!("  rolled back; feedback: valid_block");
    // Rounds judge whole minutes: the next release starts in a minute of its own.
    let into_minute = unix_ms() / 1000 % 60;
    println!("  (waiting {} s for the next minute)", 62 - into_minute);
    std::thread::sleep(Duration::from_secs(62 - into_minute));

    // Release 2: the fixed version, healthy.
    let good = post(
        &format!("{api}/releases"),
        &json!({"app": "shop", "version": "2.0.2", "hosts": released}),
    )?;
    let good_id = good["id"].as_i64().context("release without id")?;
    let created = good["created_at"].as_i64().unwrap_or(0);
    println!(
        "\nRelease 2.0.2 (id {good_id}) goes to {}; judged every completed minute, waiting for its first round...",
        released.join(", ")
    );
    let deadline = Instant::now() + Duration::from_secs(150);
    let judged = loop {
        let release = get(&format!("{api}/releases/{good_id}"))?;
        let round = release["last_round"].as_i64().unwrap_or(0);
        if round >= created.div_euclid(60) * 60 && !release["last_round"].is_null() {
            break release;
        }
        if Instant::now() > deadline {
            bail!("release 2.0.2 was not judged within 150 s: {release}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let decision = judged["decision"].as_str().unwrap_or("?").to_owned();
    println!(
        "  decision after the minute of {}: {}",
        format_utc(judged["last_round"].as_i64().unwrap_or(0)),
        decision.to_uppercase()
    );
    print_reasons(&judged);
    post(
        &format!("{api}/releases/{good_id}/finish"),
        &json!({"outcome": "success"}),
    )?;

    // Release 3: nothing unusual in the log, but users wait and some get a 503.
    let slow = if args.no_business {
        None
    } else {
        Some(slow_release(
            &api,
            &http.to_string(),
            &hosts[..half],
            &released,
        )?)
    };

    // Every line the services wrote must be counted once.
    service_running.store(false, Ordering::SeqCst);
    for service in services {
        let _ = service.join();
    }
    let written: u64 = hosts.iter().map(|h| h.written.load(Ordering::SeqCst)).sum();
    let requests: u64 = hosts
        .iter()
        .map(|h| h.requests.load(Ordering::SeqCst))
        .sum();
    let deadline = Instant::now() + Duration::from_secs(20);
    while counted(&api)? < (written, requests) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = stop_agents.send(true);
    runtime.block_on(async {
        for task in agent_tasks {
            if let Ok(Err(e)) = task.await {
                eprintln!("agent: {e}");
            }
        }
    });
    let (counted, counted_requests) = counted(&api)?;

    println!("\nSummary");
    println!(
        "  2.0.1  block  {:.2} s after the first NoSuchMethodError, with {} of {} hosts released",
        blocked_after as f64 / 1000.0,
        half,
        hosts.len()
    );
    println!("  2.0.2  {decision}");
    if let Some((seconds, rules)) = &slow {
        println!(
            "  2.0.3  block  {seconds:.0} s after its release, for {rules} (no exception logged)"
        );
    }
    println!("  log lines written by the services: {written}, counted by the detector: {counted}");
    println!(
        "  requests in the access logs: {requests}, counted by the detector: {counted_requests}"
    );
    let outcome = if decision != "pass" {
        Err(anyhow::anyhow!(
            "the healthy release 2.0.2 was not passed: {judged}"
        ))
    } else if counted != written {
        Err(anyhow::anyhow!(
            "the detector counted {counted} lines but the services wrote {written}"
        ))
    } else if counted_requests != requests {
        Err(anyhow::anyhow!(
            "the detector counted {counted_requests} requests but the access logs hold {requests}"
        ))
    } else {
        println!("  every line and every request counted exactly once");
        Ok(())
    };
    if args.serve {
        println!(
            "\nThe detector goes on serving http://{http}/ and http://{http}/releases/{bad_id} (Ctrl-C stops it)"
        );
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    let _ = stop_detector.send(true);
    runtime.block_on(async {
        if let Ok(Err(e)) = detector_task.await {
            eprintln!("detector: {e}");
        }
    });
    outcome
}

/// Releases 2.0.3 to `released`: its requests are three times slower and one in twenty
/// fails with a 503, and nothing unusual is logged. Waits for the block; returns the
/// seconds from the release to it and the rules that blocked.
fn slow_release(
    api: &str,
    http: &str,
    hosts: &[Arc<DemoHost>],
    released: &[&str],
) -> anyhow::Result<(f64, String)> {
    let into_minute = unix_ms() / 1000 % 60;
    std::thread::sleep(Duration::from_secs((62 - into_minute) % 60));
    let slow = post(
        &format!("{api}/releases"),
        &json!({"app": "shop", "version": "2.0.3", "hosts": released}),
    )?;
    let id = slow["id"].as_i64().context("release without id")?;
    let at = unix_ms();
    for host in hosts {
        host.slow.store(true, Ordering::SeqCst);
    }
    println!(
        "\nRelease 2.0.3 (id {id}) goes to {}: its requests take three times as long and one in twenty gets a 503; its log shows nothing unusual",
        released.join(", ")
    );
    let params = vigil_detector::judge::JudgeParams::default();
    println!(
        "  the released hosts' first {} minutes ({} for response times) are their restart warm-up; the judge compares the minutes after it...",
        params.warmup_minutes,
        params.metric_warmup()
    );
    let deadline = Instant::now() + Duration::from_secs(480);
    let blocked = loop {
        let release = get(&format!("{api}/releases/{id}"))?;
        if release["decision"] == "block" {
            break release;
        }
        if Instant::now() > deadline {
            bail!("release 2.0.3 was not blocked within 8 minutes: {release}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let seconds = unix_ms().saturating_sub(at) as f64 / 1000.0;
    println!("  decision: BLOCK, {seconds:.0} s after the release");
    print_reasons(&blocked);
    println!("  its page: http://{http}/releases/{id}");
    post(
        &format!("{api}/releases/{id}/finish"),
        &json!({"outcome": "rolled_back"}),
    )?;
    post(
        &format!("{api}/releases/{id}/feedback"),
        &json!({"label": "valid_block"}),
    )?;
    for host in hosts {
        host.slow.store(false, Ordering::SeqCst);
    }
    println!("  rolled back; feedback: valid_block");
    let mut rules: Vec<&str> = blocked["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["severity"] == "critical")
        .filter_map(|r| r["rule"].as_str())
        .collect();
    rules.dedup();
    Ok((seconds, rules.join(", ")))
}

/// Writes one host's log and access log in real time until `running` turns false.
fn run_service(host: &DemoHost, running: &AtomicBool, rate: u64) {
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    let (Ok(mut file), Ok(mut access)) = (open(&host.log), open(&host.access_log)) else {
        eprintln!("cannot write {}", host.log.display());
        return;
    };
    let start = Instant::now();
    let (mut records, mut order) = (0u64, 0u64);
    let mut served = 0u64;
    // A small xorshift: response times and failures drawn the same way every run.
    let mut seed = host.name.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |a, b| {
        a.rotate_left(7) ^ u64::from(b)
    });
    while running.load(Ordering::SeqCst) {
        let requests_due = (start.elapsed().as_secs_f64() * (rate / 2) as f64) as u64;
        let mut lines = String::new();
        let slow = host.slow.load(Ordering::SeqCst);
        while served < requests_due {
            served += 1;
            lines.push_str(&access_line(&mut seed, served, slow));
        }
        let n = served - host.requests.load(Ordering::SeqCst);
        if access.write_all(lines.as_bytes()).is_ok() {
            host.requests.fetch_add(n, Ordering::SeqCst);
        }
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        let mut text = String::new();
        let mut lines = 0;
        while records < due {
            records += 1;
            order += 1;
            let (record, n) = record(order, host.broken.load(Ordering::SeqCst));
            if n > 1 && host.broken.load(Ordering::SeqCst) {
                let _ = host.first_failure_ms.compare_exchange(
                    0,
                    unix_ms(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
            text.push_str(&record);
            lines += n;
        }
        if file.write_all(text.as_bytes()).is_ok() {
            host.written.fetch_add(lines, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One log record of the demo service and its number of lines.
fn record(order: u64, broken: bool) -> (String, u64) {
    let t = log_time();
    let thread = order % 8 + 1;
    if broken && order.is_multiple_of(15) {
        return (
            format!(
                "{t} ERROR [http-nio-8080-exec-{thread}] shop.CheckoutController - checkout failed\n\
                 java.lang.NoSuchMethodError: 'void shop.promo.PromoEngine.apply(shop.Cart, boolean)'\n\
                 \tat shop.checkout.CheckoutService.applyPromotions(CheckoutService.java:{})\n\
                 \tat shop.checkout.CheckoutService.checkout(CheckoutService.java:57)\n\
                 \tat shop.CheckoutController.post(CheckoutController.java:31)\n",
                80 + order % 5
            ),
            5,
        );
    }
    if order.is_multiple_of(97) {
        // Now and then a payment call times out, before and after every release.
        return (
            format!(
                "{t} ERROR [http-nio-8080-exec-{thread}] shop.OrderService - Order {order} failed\n\
                 shop.payment.PaymentException: payment service did not answer\n\
                 \tat shop.payment.PaymentClient.charge(PaymentClient.java:{})\n\
                 \tat shop.OrderService.place(OrderService.java:88)\n\
                 Caused by: java.net.SocketTimeoutException: Read timed out\n\
                 \tat java.base/java.net.SocketInputStream.read(SocketInputStream.java:168)\n\
                 \t... 2 more\n",
                40 + order % 7
            ),
            7,
        );
    }
    if order.is_multiple_of(41) {
        return (
            format!(
                "{t} WARN  [http-nio-8080-exec-{thread}] shop.OrderService - Order {order} slow: {} ms\n",
                900 + order % 300
            ),
            1,
        );
    }
    (
        format!(
            "{t} INFO  [http-nio-8080-exec-{thread}] shop.OrderService - Order {order} placed in {} ms\n",
            order % 300
        ),
        1,
    )
}

/// One request in Tomcat's `%h %l %u %t "%r" %s %b %D` (`%D` in microseconds, as Tomcat 10
/// writes it): log-normal response times around 40 ms (×3 on the slow version), one 500 in
/// 500 requests (and one 503 in 20 on the slow version).
fn access_line(seed: &mut u64, n: u64, slow: bool) -> String {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    };
    // A sum of uniforms, nearly normal.
    let z = (0..4).map(|_| next()).sum::<f64>() - 2.0;
    let ms = 40.0 * (0.9 * z).exp() * if slow { 3.0 } else { 1.0 };
    let failed = next();
    let (status, path) = if slow && failed < 0.05 {
        (503, "/api/checkout")
    } else if failed < 0.002 {
        (500, "/api/orders")
    } else if n.is_multiple_of(3) {
        (200, "/api/checkout")
    } else {
        (200, "/api/products")
    };
    let t = jiff::Timestamp::from_second(i64::try_from(unix_ms() / 1000).unwrap_or(0))
        .map(|t| t.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string())
        .unwrap_or_default();
    format!(
        "10.0.{}.{} - - [{t}] \"GET {path} HTTP/1.1\" {status} {} {}\n",
        n % 7,
        n % 251,
        200 + n % 900,
        (ms * 1000.0) as u64
    )
}

/// Log lines and requests the detector has counted for the demo service, from one read of
/// its series.
fn counted(api: &str) -> anyhow::Result<(u64, u64)> {
    let series = get(&format!("{api}/series?app=shop"))?;
    let minutes = series["minutes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let sum = |field: &dyn Fn(&Value) -> Option<u64>| minutes.iter().filter_map(field).sum();
    Ok((
        sum(&|m| m["lines"].as_u64()),
        sum(&|m| m["requests"]["count"].as_u64()),
    ))
}

fn print_reasons(release: &Value) {
    for reason in release["reasons"].as_array().into_iter().flatten() {
        println!(
            "    [{}] {}: {}",
            reason["severity"].as_str().unwrap_or("?"),
            reason["rule"].as_str().unwrap_or("?"),
            reason["summary"].as_str().unwrap_or("")
        );
    }
}

fn list(value: &Value) -> String {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn get(url: &str) -> anyhow::Result<Value> {
    ureq::get(url)
        .call()
        .with_context(|| format!("GET {url}"))?
        .body_mut()
        .read_json()
        .with_context(|| format!("GET {url}: not JSON"))
}

fn post(url: &str, body: &Value) -> anyhow::Result<Value> {
    ureq::post(url)
        .send_json(body)
        .with_context(|| format!("POST {url}"))?
        .body_mut()
        .read_json()
        .with_context(|| format!("POST {url}: not JSON"))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}

/// `yyyy-MM-dd HH:mm:ss.SSS` in UTC, as logback writes it.
fn log_time() -> String {
    let ms = unix_ms();
    let secs = i64::try_from(ms / 1000).unwrap_or(0);
    format!("{}.{:03}", format_utc(secs), ms % 1000)
}

/// `yyyy-MM-dd HH:mm:ss` (UTC) of a Unix time.
fn format_utc(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| t.to_string())
}
