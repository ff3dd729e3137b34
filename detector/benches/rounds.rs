//! Round time of many watched releases: `VIGIL_BENCH_RELEASES` apps (default 1,000), each
//! with 4 hosts reporting every minute for the last 40 minutes (5 fingerprints and host
//! metrics), and one release each (2 hosts released 10 minutes ago, 2 reference hosts).
//! Prints the time of the first round of them all (each release catches up its 10 minutes)
//! and of the next one (one new minute each), as the leading detector runs them.
//!
//! `cargo bench -p vigil-detector --bench rounds` on the embedded SQLite;
//! `VIGIL_BENCH_STORE=postgres://...` (an empty database) on a shared PostgreSQL store.

use std::sync::Arc;
use std::time::Instant;

use vigil_detector::release::{CreateRelease, Releases};
use vigil_detector::store::{PostgresStore, SqliteStore, Store};
#[path = "support/minute_report.rs"]
mod minute_report;

use vigil_proto::v1::Report;

/// Minutes of history each host has.
const MINUTES: i64 = 40;
/// Minutes since the releases started.
const RELEASED_MINUTES: i64 = 10;

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(app: i64, host: i64, seq: u64, minute: i64) -> Report {
    minute_report::minute_report(
        &format!("app{app:04}-host-{host}"),
        &format!("instance-{app:04}-{host}"),
        &format!("app{app:04}"),
        seq,
        minute,
    )
}

async fn bench<S: Store>(store: Arc<S>, apps: i64, kind: &str) {
    let now = jiff::Timestamp::now().as_second();
    let end = now - now.rem_euclid(60) - 60;
    let start = end - (MINUTES - 1) * 60;
    let filling = Instant::now();
    let mut batch = Vec::with_capacity(1024);
    for m in 0..MINUTES {
        for app in 0..apps {
            for host in 0..4 {
                batch.push(report(app, host, m as u64 + 1, start + m * 60));
                if batch.len() == 1024 {
                    store.ingest(&batch, now).await.expect("ingest");
                    batch.clear();
                }
            }
        }
    }
    store.ingest(&batch, now).await.expect("ingest");
    println!(
        "{kind}: {apps} apps x 4 hosts x {MINUTES} minutes stored in {:.0} s",
        filling.elapsed().as_secs_f64()
    );
    let releases = Releases::new(Arc::clone(&store), None);
    let started_at = end - (RELEASED_MINUTES - 1) * 60;
    for app in 0..apps {
        releases
            .create(
                CreateRelease {
                    app: format!("app{app:04}"),
                    version: "2.0.0".into(),
                    hosts: vec![format!("app{app:04}-host-0"), format!("app{app:04}-host-1")],
                    reference_hosts: Some(vec![
                        format!("app{app:04}-host-2"),
                        format!("app{app:04}-host-3"),
                    ]),
                    started_at: Some(started_at),
                },
                now,
            )
            .await
            .expect("create");
    }
    let first = Instant::now();
    releases.round_all(end - 60).await.expect("round");
    let first = first.elapsed();
    let next = Instant::now();
    releases.round_all(end).await.expect("round");
    let next = next.elapsed();
    println!(
        "{kind}: round of {apps} watched releases: first {:.1} s (each catches up {} minutes), \
         next {:.1} s (one minute each)",
        first.as_secs_f64(),
        RELEASED_MINUTES - 1,
        next.as_secs_f64()
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let apps = env_or("VIGIL_BENCH_RELEASES", 1_000);
        match std::env::var("VIGIL_BENCH_STORE") {
            Ok(url) => {
                let store = Arc::new(PostgresStore::connect(&url).await.expect("store"));
                bench(store, apps, "PostgreSQL").await;
            }
            Err(_) => {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
                bench(store, apps, "SQLite").await;
            }
        }
    });
}
