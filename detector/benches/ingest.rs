//! Ingest benchmark: many simulated agents stream minute reports (20 exception counters
//! each) to a real detector over loopback gRPC, with the embedded SQLite store on disk.
//! Prints reports per second acknowledged (each one durably committed before its ack) and
//! the bytes per host-minute on the wire.
//!
//! `cargo bench -p vigil-detector --bench ingest` (`VIGIL_BENCH_AGENTS`, `VIGIL_BENCH_REPORTS`
//! change the load: simulated agents, and reports sent by each).
//!
//! With `VIGIL_BENCH_STORE=postgres://...` (an empty database: the bench fills it) the
//! detectors share that PostgreSQL store instead, and `VIGIL_BENCH_DETECTORS=2` runs two of
//! them in this process, the agents spread over both.

use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::transport::Channel;
use vigil_detector::Detector;
use vigil_detector::config::DetectorConfig;
use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::collector_client::CollectorClient;
use vigil_proto::v1::{
    AckStatus, AppCounters, ExceptionCount, HostMetrics, LatencyBucket, MinuteReport, Report,
    RequestCounters, report::Body,
};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The minute report of one simulated host: 20 exception counters, host metrics.
fn report(agent: usize, seq: u64, minute: i64) -> Report {
    Report {
        protocol_version: PROTOCOL_VERSION,
        host: format!("bench-host-{agent:04}"),
        instance: format!("{agent:032x}"),
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
                definitions: Vec::new(),
                process_cpu_pct: Some(35.5),
                process_rss_bytes: Some(1_800_000_000),
                // An access log's minute: 1,800 requests, a latency histogram of 24
                // buckets, a few 5xx.
                requests: Some(RequestCounters {
                    count: 1_800,
                    status_2xx: 1_740,
                    status_3xx: 40,
                    status_4xx: 16,
                    status_5xx: 4,
                    malformed: 0,
                    latency: (0..24)
                        .map(|i| LatencyBucket {
                            index: 12 + i,
                            count: 75,
                        })
                        .collect(),
                    latency_sum_ms: 1_800.0 * 42.0,
                    ..Default::default()
                }),
                scraped: Vec::new(),
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

async fn agent(channel: Channel, agent: usize, reports: u64, first_minute: i64) -> u64 {
    let mut client = CollectorClient::new(channel);
    let (tx, rx) = mpsc::channel(256);
    let mut acks = match client.stream(Request::new(ReceiverStream::new(rx))).await {
        Ok(response) => response.into_inner(),
        Err(e) => {
            eprintln!("agent {agent}: {e}");
            return 0;
        }
    };
    tokio::spawn(async move {
        for seq in 1..=reports {
            let minute = first_minute + 60 * i64::try_from(seq).unwrap_or(0);
            if tx.send(report(agent, seq, minute)).await.is_err() {
                return;
            }
        }
    });
    let mut stored = 0;
    while let Ok(Some(ack)) = acks.message().await {
        if ack.status() == AckStatus::Stored {
            stored += 1;
        }
        if ack.seq == reports {
            break;
        }
    }
    stored
}

fn main() -> anyhow::Result<()> {
    let agents = env_or("VIGIL_BENCH_AGENTS", 200);
    let per_agent = env_or("VIGIL_BENCH_REPORTS", 300) as u64;
    let shared = std::env::var("VIGIL_BENCH_STORE").ok();
    let detectors = if shared.is_some() {
        env_or("VIGIL_BENCH_DETECTORS", 1).max(1)
    } else {
        1
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    runtime.block_on(async {
        let mut channels = Vec::new();
        for d in 0..detectors {
            let data_dir = dir.path().join(format!("detector-{d}"));
            let store = shared
                .as_ref()
                .map(|url| format!("store = {url:?}\n"))
                .unwrap_or_default();
            let config = DetectorConfig::parse(
                Path::new("bench"),
                &format!(
                    "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = {data_dir:?}\n{store}",
                ),
            )?;
            let detector = Detector::bind(config).await?;
            let addr = detector.grpc_addr();
            tokio::spawn(detector.serve(std::future::pending()));
            channels.push(
                Channel::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await?,
            );
        }
        // Recent minutes (the last `per_agent` ones): the detector refuses minutes more
        // than 30 days old or a day ahead.
        let now = vigil_detector::clock::unix_now();
        let first_minute = (now - 60 * i64::try_from(per_agent)? - 60) / 60 * 60;
        let start = Instant::now();
        let tasks: Vec<_> = (0..agents)
            .map(|a| {
                let channel = channels[a % channels.len()].clone();
                tokio::spawn(agent(channel, a, per_agent, first_minute))
            })
            .collect();
        let mut stored = 0;
        for task in tasks {
            stored += task.await.unwrap_or(0);
        }
        let elapsed = start.elapsed();
        let sample = report(0, 1, first_minute);
        // gRPC frames a message with 5 bytes; HTTP/2 adds a 9-byte DATA frame header.
        let wire = sample.encoded_len() + 5 + 9;
        let db = match &shared {
            Some(url) => postgres_size(url).await?,
            None => std::fs::metadata(dir.path().join("detector-0").join("vigil.db"))
                .map(|m| m.len())
                .unwrap_or(0),
        };
        println!(
            "machine: {} cores, {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model()
        );
        println!(
            "ingest: {agents} agents x {per_agent} minute reports (20 exception counters each) over loopback gRPC"
        );
        println!(
            "ingest: {stored} reports stored in {:.2} s = {:.0} reports/s (each committed before its ack)",
            elapsed.as_secs_f64(),
            stored as f64 / elapsed.as_secs_f64().max(Duration::from_millis(1).as_secs_f64())
        );
        println!("wire: {wire} bytes per host-minute (protobuf {} + framing)", sample.encoded_len());
        match &shared {
            Some(_) => println!(
                "store: PostgreSQL shared by {detectors} detector(s): {:.1} MB for {stored} reports",
                db as f64 / 1e6
            ),
            None => println!("store: {:.1} MB of SQLite for {stored} reports", db as f64 / 1e6),
        }
        let sent = agents as u64 * per_agent;
        anyhow::ensure!(
            stored == sent,
            "only {stored} of {sent} reports were stored: the figure above is not a measurement"
        );
        anyhow::Ok(())
    })
}

/// The size of the PostgreSQL database at `url`.
async fn postgres_size(url: &str) -> anyhow::Result<u64> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await?;
    Ok(u64::try_from(size).unwrap_or(0))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
