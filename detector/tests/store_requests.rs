//! HTTP requests in a real SQLite file: two reports of one minute add up (counts and the
//! latency histogram bucket by bucket), a host without an access log reads as *missing*
//! (not zero), retention rolls minutes into hours with the same merge, and a store of the
//! previous schema version gains the column when opened.

#![allow(clippy::unwrap_used)]

use vigil_detector::config::Retention;
use vigil_detector::store::{SeriesQuery, SqliteStore, Store};
use vigil_proto::latency::bucket_of;
use vigil_proto::v1::report::Body;
use vigil_proto::v1::{
    AppCounters, LatencyBucket, MinuteReport, Report, RequestCounters, ScrapedKind, ScrapedValue,
};

/// A whole hour, so that retention's cutoffs are easy to read.
const NOW: i64 = 1_763_877_600;
const DAY: i64 = 86_400;

fn counters(ok: u64, failed: u64, ms: f64) -> RequestCounters {
    RequestCounters {
        count: ok + failed,
        status_2xx: ok,
        status_5xx: failed,
        malformed: 1,
        latency: vec![LatencyBucket {
            index: bucket_of(ms),
            count: ok + failed,
        }],
        latency_sum_ms: ms * (ok + failed) as f64,
        ..Default::default()
    }
}

/// A scraped GC count (a counter) and pending connections (a gauge).
fn scraped(gc: f64, pending: f64) -> Vec<ScrapedValue> {
    vec![
        ScrapedValue {
            name: "jvm_gc_pause_seconds_count".into(),
            value: gc,
            kind: ScrapedKind::Counter as i32,
        },
        ScrapedValue {
            name: "hikaricp_connections_pending".into(),
            value: pending,
            kind: ScrapedKind::Gauge as i32,
        },
    ]
}

fn report(host: &str, seq: u64, minute: i64, requests: Option<RequestCounters>) -> Report {
    Report {
        protocol_version: vigil_proto::PROTOCOL_VERSION,
        host: host.into(),
        instance: format!("inst-{host}"),
        agent_version: "0.2.0".into(),
        fingerprint_version: 1,
        seq,
        sent_at: minute + 60,
        body: Some(Body::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: "shop".into(),
                lines: 10,
                events: 10,
                // As many GCs as a tenth of the 2xx, the pool's queue at a tenth of the 5xx.
                scraped: requests
                    .as_ref()
                    .map(|r| scraped(r.status_2xx as f64 / 10.0, r.status_5xx as f64 / 10.0))
                    .unwrap_or_default(),
                requests,
                ..Default::default()
            }],
            host_metrics: None,
        })),
    }
}

#[tokio::test]
async fn reports_of_one_minute_add_up_and_hours_keep_the_sums() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let recent = NOW - 600;
    // Two flushes of one minute, in two batches (the second merges with the stored row),
    // and a host with no access log.
    store
        .ingest(&[report("h1", 1, recent, Some(counters(90, 2, 12.0)))], NOW)
        .await
        .unwrap();
    store
        .ingest(
            &[
                report("h1", 2, recent, Some(counters(8, 0, 300.0))),
                report("h2", 1, recent, None),
            ],
            NOW,
        )
        .await
        .unwrap();
    let rows = store
        .series(&SeriesQuery {
            app: Some("shop".into()),
            ..SeriesQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let r = rows[0].requests.as_ref().expect("h1 has requests");
    assert_eq!(r.count, 100);
    assert_eq!(r.status.success, 98);
    assert_eq!(r.status.server_error, 2);
    assert_eq!(r.malformed, 2);
    assert_eq!(r.latency_ms.buckets[&bucket_of(12.0)], 92);
    assert_eq!(r.latency_ms.buckets[&bucket_of(300.0)], 8);
    assert!((r.latency_ms.sum - (92.0 * 12.0 + 8.0 * 300.0)).abs() < 1e-6);
    assert_eq!(rows[1].requests, None, "no access log is missing, not zero");
    // Scraped: the counter's growth adds up, the gauge keeps the later report's value.
    let values = rows[0].scraped.as_ref().expect("h1 has scraped values");
    assert_eq!(values["jvm_gc_pause_seconds_count"], 9.8);
    assert_eq!(values["hikaricp_connections_pending"], 0.0);
    assert_eq!(rows[1].scraped, None);
    // The series API's JSON shows the quantiles.
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert!(json["requests"]["latency_ms"]["p99"].as_f64().unwrap() > 250.0);

    // Old minutes of one hour, in 30 reports, roll up into one hourly row.
    let old_hour = NOW - 20 * DAY;
    let batch: Vec<Report> = (0..30)
        .map(|i| {
            report(
                "h1",
                10 + i,
                old_hour + 60 * i as i64,
                Some(counters(9, 1, 40.0)),
            )
        })
        .collect();
    store.ingest(&batch, NOW - 20 * DAY + 3600).await.unwrap();
    store.retain(&Retention::default(), NOW).await.unwrap();
    let hours = store
        .hours(&SeriesQuery {
            app: Some("shop".into()),
            ..SeriesQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(hours.len(), 1);
    let h = hours[0].requests.as_ref().expect("the hour has requests");
    assert_eq!(h.count, 300);
    assert_eq!(h.status.server_error, 30);
    assert_eq!(h.latency_ms.buckets[&bucket_of(40.0)], 300);
    assert_eq!(h.malformed, 30);
    // Counters summed over the hour, gauges their minutes' mean.
    let values = hours[0]
        .scraped
        .as_ref()
        .expect("the hour has scraped values");
    assert!((values["jvm_gc_pause_seconds_count"] - 27.0).abs() < 1e-9);
    assert!((values["hikaricp_connections_pending"] - 0.1).abs() < 1e-9);
    // A late report of that hour merges into it on the next pass.
    store
        .ingest(
            &[report(
                "h1",
                100,
                old_hour + 45 * 60,
                Some(counters(10, 0, 40.0)),
            )],
            NOW,
        )
        .await
        .unwrap();
    store.retain(&Retention::default(), NOW).await.unwrap();
    let hours = store.hours(&SeriesQuery::default()).await.unwrap();
    let h = hours[0].requests.as_ref().unwrap();
    assert_eq!(
        (h.count, h.latency_ms.buckets[&bucket_of(40.0)]),
        (310, 310)
    );
}

#[tokio::test]
async fn a_store_of_schema_5_gains_the_requests_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.db");
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        // The version 5 shape of app_minutes, with a row.
        sqlx::raw_sql(
            "CREATE TABLE app_minutes (app TEXT NOT NULL, host TEXT NOT NULL, \
             minute INTEGER NOT NULL, lines INTEGER NOT NULL, error_lines INTEGER NOT NULL, \
             warn_lines INTEGER NOT NULL, events INTEGER NOT NULL, \
             truncated_lines INTEGER NOT NULL, reports INTEGER NOT NULL, \
             process_cpu_pct REAL, process_rss_bytes INTEGER, \
             PRIMARY KEY (app, host, minute)) WITHOUT ROWID; \
             INSERT INTO app_minutes VALUES ('shop', 'h1', 1763877000, 5, 0, 0, 5, 0, 1, NULL, NULL); \
             PRAGMA user_version = 5;",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let rows = store.series(&SeriesQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].lines, 5);
    assert_eq!(rows[0].requests, None);
    store
        .ingest(
            &[report("h1", 1, 1_763_877_000, Some(counters(5, 0, 3.0)))],
            1_763_877_100,
        )
        .await
        .unwrap();
    let rows = store.series(&SeriesQuery::default()).await.unwrap();
    assert_eq!(rows[0].lines, 15);
    assert_eq!(rows[0].requests.as_ref().map(|r| r.count), Some(5));
}
