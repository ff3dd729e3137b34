//! Memory of one judgement round over an old, wide release: a store with `HOSTS` hosts
//! reporting every minute for 24 hours (5 fingerprints and host metrics each), a release
//! started 23 hours ago over half of them (the other half its reference group), judged
//! once. Prints the round's time and the process's peak resident memory during it (the
//! peak is reset after filling the store, through `/proc/self/clear_refs`).
//!
//! `cargo bench -p vigil-detector --bench round_memory` (`VIGIL_BENCH_HOSTS`,
//! `VIGIL_BENCH_HOURS` change the size; defaults 1,000 and 24).

use std::sync::Arc;
use std::time::Instant;

use vigil_detector::release::{CreateRelease, Releases};
use vigil_detector::store::{SqliteStore, Store};
#[path = "support/minute_report.rs"]
mod minute_report;

use vigil_proto::v1::Report;

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(host: i64, seq: u64, minute: i64) -> Report {
    minute_report::minute_report(
        &format!("host-{host:04}"),
        &format!("instance-{host:04}"),
        "shop",
        seq,
        minute,
    )
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let hosts = env_or("VIGIL_BENCH_HOSTS", 1_000);
        let hours = env_or("VIGIL_BENCH_HOURS", 24);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
        let now = jiff::Timestamp::now().as_second();
        let end = now - now.rem_euclid(60) - 60;
        let minutes = hours * 60;
        let start = end - (minutes - 1) * 60;
        let filling = Instant::now();
        let mut batch = Vec::with_capacity(1024);
        for m in 0..minutes {
            for h in 0..hosts {
                batch.push(report(h, m as u64 + 1, start + m * 60));
                if batch.len() == 1024 {
                    store.ingest(&batch, now).await.expect("ingest");
                    batch.clear();
                }
            }
        }
        store.ingest(&batch, now).await.expect("ingest");
        println!(
            "store: {hosts} hosts x {minutes} minutes filled in {:.0} s",
            filling.elapsed().as_secs_f64()
        );
        let releases = Releases::new(Arc::clone(&store), None);
        let released: Vec<String> = (0..hosts / 2).map(|h| format!("host-{h:04}")).collect();
        let reference: Vec<String> = (hosts / 2..hosts).map(|h| format!("host-{h:04}")).collect();
        let release = releases
            .create(
                CreateRelease {
                    app: "shop".into(),
                    version: "2.0.0".into(),
                    hosts: released,
                    reference_hosts: Some(reference),
                    started_at: Some(now - 23 * 3600),
                },
                now,
            )
            .await
            .expect("create");
        let before = status_kib("VmRSS:");
        // Reset the peak to what is resident now.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let judging = Instant::now();
        let view = releases.round(release.id, end).await.expect("round");
        let took = judging.elapsed();
        let peak = status_kib("VmHWM:");
        println!(
            "round over a release started 23 h ago, {hosts} hosts: {:.1} s, decision {:?}; \
             resident before {} MiB, peak during the round {} MiB",
            took.as_secs_f64(),
            view.decision,
            before / 1024,
            peak / 1024
        );
    });
}
