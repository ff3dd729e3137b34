//! Retention benchmark: simulated hosts report every minute (20 exception counters, host
//! metrics — the ingest benchmark's report) into a real SQLite store, day after simulated
//! day, with a retention pass at the end of each day (`[retention] minutes` shortened to
//! a few days so a scaled run reaches its steady state). Prints the store's size per day,
//! the bytes per host-day of minute rows and of hourly rows, and the latency of ingest's
//! commits alone and while a retention pass runs beside them.
//!
//! `cargo bench -p vigil-detector --bench retention` (`VIGIL_BENCH_HOSTS` (20),
//! `VIGIL_BENCH_DAYS` (10), `VIGIL_BENCH_KEEP_DAYS` (3) change the run).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_detector::config::Retention;
use vigil_detector::store::{SqliteStore, Store};
use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::{
    AppCounters, ExceptionCount, HostMetrics, MinuteReport, Report, report::Body,
};

const DAY: i64 = 86_400;
/// Minutes of all hosts committed per ingest batch (a group commit of the live detector
/// holds a few hundred reports).
const MINUTES_PER_BATCH: i64 = 10;

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(host: i64, seq: u64, minute: i64) -> Report {
    Report {
        protocol_version: PROTOCOL_VERSION,
        host: format!("bench-host-{host:04}"),
        instance: format!("{host:032x}"),
        agent_version: "0.1.0".into(),
        fingerprint_version: 1,
        seq,
        sent_at: minute + 62,
        body: Some(Body::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: "shop".into(),
                lines: 12_000 + seq,
                error_lines: 40,
                warn_lines: 120,
                events: 11_500,
                truncated_lines: 0,
                exceptions: (0..20u64)
                    .map(|i| ExceptionCount {
                        fingerprint: 0x9f3a_5c0e_11d2_0000 + i * 7919,
                        count: 1 + (seq + i) % 17,
                    })
                    .collect(),
                ..Default::default()
            }],
            host_metrics: Some(HostMetrics {
                cpu_pct: Some(31.5),
                cpu_pct_max: Some(55.0),
                mem_used_pct: Some(62.0),
                swap_used_pct: Some(0.0),
                load1: Some(1.1),
                load5: Some(0.9),
                load15: Some(0.8),
                disk_read_bytes: Some(0),
                disk_write_bytes: Some(123_456),
                disk_reads: Some(0),
                disk_writes: Some(31),
                disk_busy_pct: Some(2.5),
                samples: 6,
                partial: false,
            }),
        })),
    }
}

fn store_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut latencies: Vec<Duration>) {
    latencies.sort_unstable();
    println!(
        "ingest commit latency {name}: {} batches, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

fn main() -> anyhow::Result<()> {
    let hosts = env_or("VIGIL_BENCH_HOSTS", 20);
    let days = env_or("VIGIL_BENCH_DAYS", 10);
    let keep_days = env_or("VIGIL_BENCH_KEEP_DAYS", 3);
    let policy = Retention {
        minutes_secs: keep_days * DAY,
        hourly_secs: 400 * DAY,
    };
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "{hosts} hosts, {days} days, minutes kept {keep_days} days; {} cores",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    runtime.block_on(async {
        let store = Arc::new(SqliteStore::open(dir.path()).await?);
        let start = 1_763_856_000 - 1_763_856_000 % DAY;
        let mut seq = vec![0u64; usize::try_from(hosts)?];
        let (mut alone, mut beside) = (Vec::new(), Vec::new());
        let mut sizes = Vec::new();
        let mut pass_task: Option<tokio::task::JoinHandle<_>> = None;
        let running = Arc::new(AtomicBool::new(false));
        for day in 0..days {
            let day_start = start + day * DAY;
            let mut minute = day_start;
            while minute < day_start + DAY {
                let mut batch = Vec::new();
                for m in (minute..minute + MINUTES_PER_BATCH * 60).step_by(60) {
                    for (h, s) in seq.iter_mut().enumerate() {
                        *s += 1;
                        batch.push(report(i64::try_from(h)?, *s, m));
                    }
                }
                let during = running.load(Ordering::Relaxed);
                let t = Instant::now();
                store.ingest(&batch, minute + 60 * MINUTES_PER_BATCH).await?;
                let took = t.elapsed();
                if during && running.load(Ordering::Relaxed) {
                    beside.push(took);
                } else if !during {
                    alone.push(took);
                }
                minute += MINUTES_PER_BATCH * 60;
            }
            // The previous day's pass must be over before the next starts.
            if let Some(task) = pass_task.take() {
                let (pass, took): (vigil_detector::store::RetentionPass, Duration) = task.await??;
                println!(
                    "  retention pass: {} minute rows, {} exception rows, {} host rows rolled up in {} transactions, {:.1} s",
                    pass.minutes_rolled_up,
                    pass.exception_minutes_rolled_up,
                    pass.host_minutes_rolled_up,
                    pass.transactions,
                    took.as_secs_f64()
                );
            }
            let bytes = store_bytes(dir.path());
            sizes.push(bytes);
            println!(
                "day {:>3}: store {:>8.1} MiB",
                day + 1,
                bytes as f64 / (1024.0 * 1024.0)
            );
            // The pass of the day just ended runs beside the next day's ingest.
            let (s, r) = (Arc::clone(&store), Arc::clone(&running));
            let now = day_start + DAY;
            r.store(true, Ordering::Relaxed);
            pass_task = Some(tokio::spawn(async move {
                let t = Instant::now();
                let pass = s.retain(&policy, now).await;
                r.store(false, Ordering::Relaxed);
                pass.map(|p| (p, t.elapsed()))
            }));
        }
        if let Some(task) = pass_task.take() {
            task.await??;
        }
        let keep = usize::try_from(keep_days)?;
        // Before any roll-up: minute rows only.
        let minute_bytes = sizes[keep - 1] as f64 / (hosts * keep_days) as f64;
        println!(
            "minute rows: {:.0} bytes per host-day (store after {keep_days} days / hosts / days)",
            minute_bytes
        );
        if sizes.len() > keep + 2 {
            let (a, b) = (sizes[keep + 1], sizes[sizes.len() - 1]);
            let span = (sizes.len() - 1 - (keep + 1)) as f64;
            println!(
                "steady state: {:.1} MiB for {hosts} hosts; growth {:.0} bytes per host-day (hourly rows, and pages not yet reused)",
                b as f64 / (1024.0 * 1024.0),
                (b.saturating_sub(a)) as f64 / (hosts as f64 * span)
            );
        }
        summary("alone", alone);
        summary("beside a retention pass", beside);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
