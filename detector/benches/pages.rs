//! Page benchmark: how long the detector takes to answer a release's page and the health
//! board from a real SQLite store holding 12 hours of counters of 40 hosts (5 fingerprints
//! each per minute), with a blocked release over 20 of them. Prints the median and worst
//! time per page and its size.
//!
//! `cargo bench -p vigil-detector --bench pages` (`VIGIL_BENCH_HOSTS`, `VIGIL_BENCH_MINUTES`
//! change the load).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use tower::ServiceExt;
use vigil_detector::api::{ApiState, router};
use vigil_detector::judge::Definition;
use vigil_detector::release::{AddBatch, CreateRelease, Releases, StoredAlert};
use vigil_detector::store::{SqliteStore, Store};
use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::{
    AppCounters, ExceptionCount, ExceptionDefinition, HostMetrics, MinuteReport, Report,
    report::Body as ReportBody,
};

const DANGEROUS: u64 = 0xdead_beef_0000_0001;
const RUNS: usize = 20;

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(host: i64, seq: u64, minute: i64, dangerous: bool) -> Report {
    let mut fingerprints: Vec<u64> = (0..5).map(|f| 0x1000 + f).collect();
    if dangerous {
        fingerprints.push(DANGEROUS);
    }
    Report {
        protocol_version: PROTOCOL_VERSION,
        host: format!("host-{host:02}"),
        instance: format!("{host:032x}"),
        agent_version: "0.1.0".into(),
        fingerprint_version: 1,
        seq,
        sent_at: minute + 61,
        body: Some(ReportBody::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: "shop".into(),
                lines: 6_000,
                error_lines: 12,
                warn_lines: 30,
                exceptions: fingerprints
                    .iter()
                    .map(|&fingerprint| ExceptionCount {
                        fingerprint,
                        count: 2,
                    })
                    .collect(),
                definitions: fingerprints
                    .iter()
                    .map(|&fingerprint| ExceptionDefinition {
                        fingerprint,
                        class: format!("shop.error.Failure{fingerprint:x}Exception"),
                        message: "order 1234 failed".into(),
                        frames: vec!["shop.Service.handle".into()],
                        dangerous: fingerprint == DANGEROUS,
                        sample: "shop.error.FailureException: order 1234 failed\n\tat shop.Service.handle(Service.java:20)".into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            host_metrics: Some(HostMetrics {
                cpu_pct: Some(20.0 + (minute / 60 % 7) as f64),
                mem_used_pct: Some(55.0),
                load1: Some(1.5),
                disk_busy_pct: Some(3.0),
                ..Default::default()
            }),
        })),
    }
}

async fn time_page(router: &axum::Router, uri: &str) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(RUNS);
    let mut size = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let response = router
            .clone()
            .oneshot(
                Request::builder()
                    .method(Method::GET)
                    .uri(uri)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert!(
            response.status().is_success(),
            "{uri}: {}",
            response.status()
        );
        size = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body")
            .len();
        times.push(started.elapsed());
    }
    times.sort();
    (times[RUNS / 2], times[RUNS - 1], size)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let hosts = env_or("VIGIL_BENCH_HOSTS", 40);
        let minutes = env_or("VIGIL_BENCH_MINUTES", 720);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
        let now = jiff::Timestamp::now().as_second();
        let end = now - now.rem_euclid(60);
        let start = end - minutes * 60;
        let first_batch = start + minutes * 60 * 2 / 3;
        let second_batch = first_batch + 30 * 60;
        let filling = Instant::now();
        for m in 0..minutes {
            let minute = start + m * 60;
            let seq = m as u64 + 1;
            let batch: Vec<Report> = (0..hosts)
                .map(|h| report(h, seq, minute, h < 5 && minute >= second_batch))
                .collect();
            store.ingest(&batch, now).await.expect("ingest");
        }
        println!(
            "store: {hosts} hosts x {minutes} minutes filled in {:.1} s",
            filling.elapsed().as_secs_f64()
        );
        let releases = Arc::new(Releases::new(Arc::clone(&store), None));
        let name = |h: i64| format!("host-{h:02}");
        let release = releases
            .create(
                CreateRelease {
                    app: "shop".into(),
                    version: "2.0.1".into(),
                    hosts: (0..10).map(name).collect(),
                    reference_hosts: Some((20..hosts).map(name).collect()),
                    started_at: Some(first_batch),
                },
                now,
            )
            .await
            .expect("release");
        releases
            .add_batch(
                release.id,
                AddBatch {
                    hosts: (10..20).map(name).collect(),
                    at: Some(second_batch),
                },
                now,
            )
            .await
            .expect("batch");
        releases
            .alert(&StoredAlert {
                app: "shop".into(),
                host: name(0),
                at: second_batch + 90,
                fingerprint: DANGEROUS,
                definition: Definition {
                    class: format!("shop.error.Failure{DANGEROUS:x}Exception"),
                    causes: Vec::new(),
                    message: "order 1234 failed".into(),
                    frames: vec!["shop.Service.handle".into()],
                    dangerous: true,
                },
            })
            .await
            .expect("alert");
        // Where a release page's time goes: the store's counters, its fingerprints, and
        // building and rendering the page.
        let started = Instant::now();
        let history = releases.history(release.id, now).await.expect("history");
        let read_counters = started.elapsed();
        let rows = history.rows.len();
        let started = Instant::now();
        let named = vigil_detector::pages::named_fingerprints(&history.release.reasons);
        let fingerprints = store
            .fingerprints("shop", &named, true)
            .await
            .expect("fingerprints");
        let read_fingerprints = started.elapsed();
        let started = Instant::now();
        let page = vigil_detector::pages::view::release_page(&vigil_detector::pages::assemble(
            history,
            &fingerprints,
            None,
            Vec::new(),
            &[],
            now,
        ))
        .into_string();
        let rendered = started.elapsed();
        println!(
            "release page parts: {rows} host-minutes read in {:.1} ms, {} fingerprints in {:.1} ms, built and rendered ({} bytes) in {:.1} ms",
            read_counters.as_secs_f64() * 1e3,
            fingerprints.len(),
            read_fingerprints.as_secs_f64() * 1e3,
            page.len(),
            rendered.as_secs_f64() * 1e3
        );
        let router = router(Arc::new(ApiState::new(Arc::clone(&store), releases, None)));
        for (what, uri) in [
            ("release page", format!("/releases/{}", release.id)),
            ("health board", "/".to_owned()),
            ("release list", "/releases".to_owned()),
        ] {
            let (median, worst, size) = time_page(&router, &uri).await;
            println!(
                "{what:<13} {uri:<12} median {:>6.1} ms, worst {:>6.1} ms, {:>7} bytes of HTML ({RUNS} requests)",
                median.as_secs_f64() * 1e3,
                worst.as_secs_f64() * 1e3,
                size
            );
        }
    });
}
