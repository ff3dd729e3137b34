//! `vigil-demo`: Vigil's main job on embedded defaults, on this host, in one command.
//!
//! Starts a detector and an agent on 127.0.0.1 (real gRPC and HTTP ports, a real SQLite
//! store in a temporary directory), runs a demo Java service that writes its log, and
//! prints what the detector received, minute by minute, next to what was written.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::sync::watch;
use vigil_agent::config::AgentConfig;
use vigil_detector::Detector;
use vigil_detector::config::DetectorConfig;

/// Run a detector and an agent watching a demo service, and show what the detector saw.
#[derive(Debug, Parser)]
#[command(name = "vigil-demo", version)]
struct Args {
    /// How long the demo service writes its log.
    #[arg(long, default_value = "12s", value_parser = humantime_duration)]
    duration: Duration,
    /// Log lines the demo service writes per second.
    #[arg(long, default_value_t = 400)]
    rate: u64,
    /// Keep the temporary directory (configs, logs, the detector's SQLite file).
    #[arg(long)]
    keep: bool,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds like \"12s\""))?;
    if !(1.0..=3600.0).contains(&secs) {
        return Err("between 1s and 3600s".into());
    }
    Ok(Duration::from_secs_f64(secs))
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
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("shop")).context("cannot create the demo directory")?;
    let result = demo(args, &dir);
    if args.keep {
        println!("\nkept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn demo(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stop_agent_tx, stop_agent_rx) = watch::channel(false);

    let detector_config = DetectorConfig::parse(
        Path::new("<demo detector>"),
        &format!(
            "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            dir.join("detector")
        ),
    )?;
    let detector = runtime.block_on(Detector::bind(detector_config))?;
    let (grpc, http) = (detector.grpc_addr(), detector.http_addr());
    let detector_task = runtime.spawn(detector.serve(stopped(stop_rx.clone())));

    let log = dir.join("shop").join("shop.log");
    let agent_config = AgentConfig::parse(
        Path::new("<demo agent>"),
        &format!(
            r#"data_dir = {data:?}
admin_listen = ""

[host]
name = "demo-host-1"
interval = "1s"

[detector]
endpoint = "http://{grpc}"
flush_interval = "1s"

[[logs]]
app = "shop"
paths = [{glob:?}]
start_at = "beginning"
"#,
            data = dir.join("agent"),
            glob = dir.join("shop").join("*.log"),
        ),
    )?;
    let agent_task = runtime.spawn(vigil_agent::run(agent_config, stopped(stop_agent_rx)));

    println!("Vigil demo");
    println!(
        "  detector  gRPC {grpc}, HTTP http://{http} (store: SQLite in {})",
        dir.display()
    );
    println!("  agent     host demo-host-1, tailing {}", log.display());
    println!(
        "  service   \"shop\" writes {} log lines/s for {} s\n",
        args.rate,
        args.duration.as_secs()
    );

    let written = run_demo_service(&log, args, &http.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut minutes = series(&http.to_string())?;
    while total_lines(&minutes) < written && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        minutes = series(&http.to_string())?;
    }
    // The agent stops: it sends its last counters and the host metrics of the minutes so
    // far (marked partial). Anything counted twice would show after that.
    let _ = stop_agent_tx.send(true);
    runtime.block_on(async {
        if let Ok(Err(e)) = agent_task.await {
            eprintln!("agent: {e}");
        }
    });
    minutes = series(&http.to_string())?;

    println!("\nWhat the detector received (GET /api/v1/series?app=shop):");
    println!(
        "  {:<20} {:<12} {:>7} {:>7} {:>6}  {:<10}",
        "minute (UTC)", "host", "lines", "errors", "warns", "cpu %"
    );
    for m in &minutes {
        let cpu = m["host_metrics"]["cpu_pct"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
        println!(
            "  {:<20} {:<12} {:>7} {:>7} {:>6}  {:<10}",
            format_utc(m["minute"].as_i64().unwrap_or(0)),
            m["host"].as_str().unwrap_or("?"),
            m["lines"].as_u64().unwrap_or(0),
            m["error_lines"].as_u64().unwrap_or(0),
            m["warn_lines"].as_u64().unwrap_or(0),
            cpu
        );
    }
    println!("\nExceptions the detector knows for shop (GET /api/v1/apps/shop/exceptions):");
    for e in exceptions(&http.to_string())? {
        let causes: Vec<&str> = e["causes"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c.as_str()).collect())
            .unwrap_or_default();
        println!(
            "  {}  {:>4}x  {}{}{}",
            e["fingerprint"].as_str().unwrap_or("?"),
            e["count"].as_u64().unwrap_or(0),
            e["class"].as_str().unwrap_or("?"),
            if causes.is_empty() {
                String::new()
            } else {
                format!(" <- {}", causes.join(" <- "))
            },
            if e["dangerous"] == true {
                "  DANGEROUS"
            } else {
                ""
            }
        );
    }
    let counted = total_lines(&minutes);
    println!("\n  written by the service: {written} lines");
    println!("  counted by the detector: {counted} lines");

    let _ = stop_tx.send(true);
    runtime.block_on(async {
        if let Ok(Err(e)) = detector_task.await {
            eprintln!("detector: {e}");
        }
    });
    if counted != written {
        bail!("the detector counted {counted} lines but the service wrote {written}");
    }
    println!("  every line counted exactly once");
    Ok(())
}

/// Writes the demo service's log in real time and returns the number of lines written.
fn run_demo_service(log: &Path, args: &Args, http: &str) -> anyhow::Result<u64> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot write {}", log.display()))?;
    let start = Instant::now();
    let mut written = 0u64;
    let mut next_report = Duration::from_secs(2);
    let mut order = 610_510u64;
    while start.elapsed() < args.duration {
        let due = (start.elapsed().as_secs_f64() * args.rate as f64) as u64;
        let mut text = String::new();
        while written < due {
            order += 1;
            let thread = order % 8 + 1;
            if order.is_multiple_of(97) {
                // Now and then a payment call times out, with its stack trace.
                text.push_str(&format!(
                    "{} ERROR [http-nio-8080-exec-{thread}] shop.OrderService - Order {order} failed\n\
                     shop.payment.PaymentException: payment service did not answer\n\
                     \tat shop.payment.PaymentClient.charge(PaymentClient.java:{})\n\
                     \tat shop.OrderService.place(OrderService.java:88)\n\
                     Caused by: java.net.SocketTimeoutException: Read timed out\n\
                     \tat java.base/java.net.SocketInputStream.read(SocketInputStream.java:168)\n\
                     \t... 2 more\n",
                    log_time(),
                    40 + order % 7
                ));
                written += 7;
            } else if order.is_multiple_of(41) {
                text.push_str(&format!(
                    "{} WARN  [http-nio-8080-exec-{thread}] shop.OrderService - Order {order} slow: {} ms\n",
                    log_time(),
                    900 + order % 300
                ));
                written += 1;
            } else {
                text.push_str(&format!(
                    "{} INFO  [http-nio-8080-exec-{thread}] shop.OrderService - Order {order} placed in {} ms\n",
                    log_time(),
                    order % 300
                ));
                written += 1;
            }
        }
        file.write_all(text.as_bytes())
            .context("cannot write the demo log")?;
        if start.elapsed() >= next_report {
            let counted = total_lines(&series(http)?);
            println!(
                "  t={:>2}s  service wrote {written:>6} lines, detector has counted {counted:>6}",
                next_report.as_secs()
            );
            next_report += Duration::from_secs(2);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(written)
}

fn series(http: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let body: serde_json::Value = ureq::get(&format!("http://{http}/api/v1/series?app=shop"))
        .call()
        .context("GET /api/v1/series")?
        .body_mut()
        .read_json()
        .context("GET /api/v1/series: not JSON")?;
    Ok(body["minutes"].as_array().cloned().unwrap_or_default())
}

fn exceptions(http: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let body: serde_json::Value = ureq::get(&format!("http://{http}/api/v1/apps/shop/exceptions"))
        .call()
        .context("GET /api/v1/apps/shop/exceptions")?
        .body_mut()
        .read_json()
        .context("GET /api/v1/apps/shop/exceptions: not JSON")?;
    Ok(body["exceptions"].as_array().cloned().unwrap_or_default())
}

fn total_lines(minutes: &[serde_json::Value]) -> u64 {
    minutes.iter().filter_map(|m| m["lines"].as_u64()).sum()
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// `yyyy-MM-dd HH:mm:ss.SSS` in UTC, as logback writes it.
fn log_time() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(0);
    format!("{}.{:03}", format_utc(secs), now.subsec_millis())
}

/// `yyyy-MM-dd HH:mm:ss` (UTC) of a Unix time.
fn format_utc(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| t.to_string())
}
