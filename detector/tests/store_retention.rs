//! Retention over a real SQLite file: minutes older than `[retention] minutes` rolled up to
//! hourly rows (sums preserved, in transactions of bounded size), hourly rows older than
//! `hourly` deleted, recent minutes untouched, old report keys dropped while recent ones
//! still de-duplicate, fingerprints and releases kept; a version 3 store gains the hourly
//! tables when opened.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use sqlx::Row;
use vigil_detector::config::Retention;
use vigil_detector::store::{
    ExceptionQuery, FIRST_PASS_SECS, IngestOutcome, MAX_EXCEPTION_ROWS_PER_TRANSACTION,
    MAX_ROWS_PER_TRANSACTION, NewRelease, SqliteStore, Store,
};
use vigil_proto::v1::report::Body;
use vigil_proto::v1::{
    AppCounters, ExceptionCount, ExceptionDefinition, HostMetrics, MinuteReport, Report,
};

/// "Now" of the retention pass (a whole hour, to make the cutoffs easy to read).
const NOW: i64 = 1_763_877_600;
const DAY: i64 = 86_400;
const FP: u64 = 0x0b5e_3c1d_2a4f_6e88;

fn report(host: &str, seq: u64, minute: i64) -> Report {
    // Counts that differ per minute, so a lost or doubled minute changes the sums.
    let lines = 100 + (minute / 60) as u64 % 37;
    let with_exception = (minute / 60) % 5 == 0;
    Report {
        protocol_version: vigil_proto::PROTOCOL_VERSION,
        host: host.into(),
        instance: format!("inst-{host}"),
        agent_version: "0.1.0".into(),
        fingerprint_version: 1,
        seq,
        sent_at: minute + 60,
        body: Some(Body::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: "shop".into(),
                lines,
                error_lines: lines / 10,
                warn_lines: 1,
                exceptions: if with_exception {
                    vec![ExceptionCount {
                        fingerprint: FP,
                        count: 2,
                    }]
                } else {
                    vec![]
                },
                definitions: if seq == 1 {
                    vec![ExceptionDefinition {
                        fingerprint: FP,
                        class: "java.lang.IllegalStateException".into(),
                        message: "m".into(),
                        frames: vec!["shop.Checkout.run".into()],
                        ..Default::default()
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            }],
            host_metrics: Some(HostMetrics {
                cpu_pct: Some(((minute / 60) % 50) as f64),
                disk_read_bytes: Some(1000),
                samples: 6,
                ..Default::default()
            }),
        })),
    }
}

/// Ingests one report per host and minute in `minutes`, received at `received_at`;
/// returns the next seq per host.
async fn ingest(
    store: &SqliteStore,
    minutes: &[i64],
    seq: &mut BTreeMap<&'static str, u64>,
    received_at: i64,
) {
    let mut batch = Vec::new();
    for &m in minutes {
        for host in ["h1", "h2"] {
            let s = seq.entry(host).or_insert(0);
            *s += 1;
            batch.push(report(host, *s, m));
        }
    }
    for chunk in batch.chunks(1000) {
        store.ingest(chunk, received_at).await.unwrap();
    }
}

async fn scalar(store: &Path, sql: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", store.join("vigil.db").display()))
        .await
        .unwrap();
    let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    v
}

#[tokio::test]
async fn old_minutes_roll_up_to_hours_and_old_hours_go() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let policy = Retention::default(); // 14 days of minutes, 400 days of hours
    let cutoff = NOW - 14 * DAY;
    let mut seq = BTreeMap::new();

    // Three days of minutes from mid-hour to half an hour past the (whole-hour) cutoff,
    // received 40 days ago; more than one transaction's worth per host.
    let old: Vec<i64> = (0..3 * 1440)
        .map(|i| cutoff - 3 * DAY + 30 * 60 + i * 60)
        .collect();
    let (rolled, kept): (Vec<i64>, Vec<i64>) = old.iter().partition(|&&m| m < cutoff);
    assert!(rolled.len() as i64 > MAX_ROWS_PER_TRANSACTION);
    ingest(&store, &old, &mut seq, NOW - 40 * DAY).await;
    // An hour of minutes older than 400 days.
    let ancient: Vec<i64> = (0..60).map(|i| NOW - 401 * DAY + i * 60).collect();
    ingest(&store, &ancient, &mut seq, NOW - 40 * DAY).await;
    // The last hour, received now.
    let recent: Vec<i64> = (0..60).map(|i| NOW - 3600 + i * 60).collect();
    ingest(&store, &recent, &mut seq, NOW).await;
    // A busier app on another host: 30 fingerprints every old minute, so its steps are
    // bounded by exception counts before minutes.
    let busy: Vec<Report> = rolled
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let mut r = report("h3", i as u64 + 1, m);
            if let Some(Body::Minute(minute)) = r.body.as_mut() {
                minute.apps[0].app = "busy".into();
                minute.apps[0].exceptions = (0..30)
                    .map(|f| ExceptionCount {
                        fingerprint: 0x1000 + f,
                        count: 1,
                    })
                    .collect();
            }
            r
        })
        .collect();
    assert!(busy.len() as i64 * 30 > 2 * MAX_EXCEPTION_ROWS_PER_TRANSACTION);
    for chunk in busy.chunks(1000) {
        store.ingest(chunk, NOW - 40 * DAY).await.unwrap();
    }
    let busy_exceptions = busy.len() as i64 * 30;
    let release = store
        .create_release(&NewRelease {
            app: "shop".into(),
            version: "2.0".into(),
            started_at: cutoff - DAY,
            created_at: cutoff - DAY,
            reference_hosts: vec!["h2".into()],
            first_batch: None,
        })
        .await
        .unwrap();

    let total_lines =
        |minutes: &[i64]| -> i64 { minutes.iter().map(|&m| 100 + (m / 60) % 37).sum::<i64>() * 2 };
    let all: Vec<i64> = old.iter().chain(&ancient).chain(&recent).copied().collect();
    let lines_before = scalar(
        dir.path(),
        "SELECT sum(lines) FROM app_minutes WHERE app = 'shop'",
    )
    .await;
    assert_eq!(lines_before, total_lines(&all));
    let exceptions_before = scalar(dir.path(), "SELECT sum(count) FROM exception_minutes").await;

    let pass = store.retain(&policy, NOW).await.unwrap();
    let per_host = (rolled.len() + ancient.len()) as u64;
    assert_eq!(pass.minutes_rolled_up, 2 * per_host + rolled.len() as u64);
    assert_eq!(
        pass.host_minutes_rolled_up,
        2 * per_host + rolled.len() as u64
    );
    assert!(pass.transactions >= 4, "bounded transactions: {pass:?}");

    // No minute older than the cutoff is left; every newer one is untouched.
    let left = format!("SELECT count(*) FROM app_minutes WHERE minute < {cutoff}");
    assert_eq!(scalar(dir.path(), &left).await, 0);
    assert_eq!(
        scalar(dir.path(), "SELECT count(*) FROM app_minutes").await,
        2 * (kept.len() + recent.len()) as i64
    );
    assert_eq!(
        scalar(
            dir.path(),
            "SELECT sum(count) FROM exception_hours WHERE app = 'busy'"
        )
        .await,
        busy_exceptions,
        "every count of the busy app, over steps bounded by exception counts"
    );
    assert_eq!(
        scalar(dir.path(), "SELECT count(*) FROM host_minutes").await,
        2 * (kept.len() + recent.len()) as i64
    );
    let left = format!("SELECT count(*) FROM exception_minutes WHERE minute < {cutoff}");
    assert_eq!(scalar(dir.path(), &left).await, 0);

    // Sums are preserved: minutes kept + hours rolled up = what was stored, less the
    // ancient hour, deleted with the hourly rows older than 400 days.
    let lines_after = scalar(
        dir.path(),
        "SELECT sum(lines) FROM app_minutes WHERE app = 'shop'",
    )
    .await
        + scalar(
            dir.path(),
            "SELECT sum(lines) FROM app_hours WHERE app = 'shop'",
        )
        .await;
    assert_eq!(lines_after, lines_before - total_lines(&ancient));
    let ancient_exceptions: i64 = ancient.iter().filter(|&&m| (m / 60) % 5 == 0).count() as i64 * 4;
    let exceptions_after = scalar(dir.path(), "SELECT sum(count) FROM exception_minutes").await
        + scalar(dir.path(), "SELECT sum(count) FROM exception_hours").await;
    assert_eq!(exceptions_after, exceptions_before - ancient_exceptions);
    assert!(pass.transactions > 10, "{pass:?}");
    let hourly_cutoff = NOW - 400 * DAY;
    for table in ["app_hours", "exception_hours", "host_hours"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE hour < {hourly_cutoff}");
        assert_eq!(scalar(dir.path(), &sql).await, 0, "{table}");
    }
    // One row per app, host and hour: the first hour held 30 of the old minutes, the
    // 71 after it 60 each.
    assert_eq!(rolled.len(), 30 + 71 * 60);
    assert_eq!(
        scalar(
            dir.path(),
            "SELECT count(*) FROM app_hours WHERE app = 'shop'"
        )
        .await,
        2 * 72
    );
    assert_eq!(
        scalar(
            dir.path(),
            "SELECT sum(minutes = 30) FROM app_hours WHERE app = 'shop'"
        )
        .await,
        2
    );
    assert_eq!(
        scalar(
            dir.path(),
            "SELECT sum(minutes = 60) FROM app_hours WHERE app = 'shop'"
        )
        .await,
        2 * 71
    );
    // An hour's host metrics: the mean of its minutes' CPU, the sum of their reads.
    let first_hour = rolled[30];
    assert_eq!(first_hour % 3600, 0);
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("vigil.db").display()
    ))
    .await
    .unwrap();
    let row = sqlx::query("SELECT metrics, minutes FROM host_hours WHERE host = 'h1' AND hour = ?")
        .bind(first_hour)
        .fetch_one(&pool)
        .await
        .unwrap();
    let metrics: Value = serde_json::from_str(row.get::<&str, _>(0)).unwrap();
    let cpu: Vec<f64> = (0..60)
        .map(|i| (((first_hour + i * 60) / 60) % 50) as f64)
        .collect();
    let mean = cpu.iter().sum::<f64>() / 60.0;
    assert!(
        (metrics["cpu_pct"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{metrics}"
    );
    assert_eq!(metrics["disk_read_bytes"], 60_000.0);
    assert_eq!(metrics["samples"], 360);
    assert_eq!(row.get::<i64, _>(1), 60);
    pool.close().await;

    // Report keys older than 31 days are gone, recent ones still de-duplicate.
    assert_eq!(
        scalar(dir.path(), "SELECT count(*) FROM reports").await,
        2 * recent.len() as i64
    );
    let again = store
        .ingest(&[report("h1", seq["h1"], recent[59])], NOW)
        .await
        .unwrap();
    assert_eq!(again, vec![IngestOutcome::Duplicate]);

    // Kept: the fingerprint's definition, the release.
    let known = store
        .exceptions("shop", &ExceptionQuery::latest(10_000))
        .await
        .unwrap();
    assert_eq!(known.len(), 1);
    assert_eq!(known[0].class, "java.lang.IllegalStateException");
    assert!(store.release(release.id).await.unwrap().is_some());

    // A second pass finds nothing to do and changes no sum.
    let second = store.retain(&policy, NOW).await.unwrap();
    assert_eq!(
        second.minutes_rolled_up + second.hourly_rows_deleted,
        0,
        "{second:?}"
    );
    let lines_again = scalar(
        dir.path(),
        "SELECT sum(lines) FROM app_minutes WHERE app = 'shop'",
    )
    .await
        + scalar(
            dir.path(),
            "SELECT sum(lines) FROM app_hours WHERE app = 'shop'",
        )
        .await;
    assert_eq!(lines_again, lines_after);
    store.close().await;

    // A version 3 store (no hourly tables) gains them when opened.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("vigil.db").display()
    ))
    .await
    .unwrap();
    sqlx::raw_sql(
        "DROP TABLE app_hours; DROP TABLE exception_hours; DROP TABLE host_hours; \
         PRAGMA user_version = 3",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store.retain(&policy, NOW + 3600).await.unwrap();
    store.close().await;
    assert_eq!(scalar(dir.path(), "PRAGMA user_version").await, 6);
    assert!(scalar(dir.path(), "SELECT count(*) FROM app_hours").await > 0);
    eprintln!("retention test took {:?}", started.elapsed());
}

/// The running detector runs retention on its own clock: soon after the start, minutes
/// older than 14 days leave `GET /api/v1/series` (into hourly rows), recent ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detector_runs_retention_in_the_background_on_its_clock() {
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use vigil_proto::v1::AckStatus;
    use vigil_proto::v1::collector_client::CollectorClient;

    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let clock = support::ManualClock::at(now);
    let running = support::start_with_clock(dir.path(), "", None, Some(clock.clone())).await;
    // Two hours of minutes 20 days old (ingest takes up to 30) and the last ten minutes.
    let old_start = (now - 20 * DAY) / 3600 * 3600;
    let minutes: Vec<i64> = (0..120)
        .map(|i| old_start + i * 60)
        .chain((1..=10).map(|i| now / 60 * 60 - i * 60))
        .collect();
    let mut client = CollectorClient::new(running.channel.clone());
    let (tx, rx) = mpsc::channel(minutes.len());
    let mut acks = support::within(
        "the report stream",
        client.stream(tonic::Request::new(ReceiverStream::new(rx))),
    )
    .await
    .unwrap()
    .into_inner();
    for (i, &m) in minutes.iter().enumerate() {
        tx.send(support::minute_report("retention", i as u64 + 1, m, 100))
            .await
            .unwrap();
    }
    for _ in &minutes {
        let ack = support::within("an ack", acks.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack.status(), AckStatus::Stored, "{}", ack.error);
    }
    let series = |from: i64, to: i64| {
        format!(
            "{}/api/v1/series?app=shop&host=web-1&from={from}&to={to}",
            running.http
        )
    };
    let count = |v: &Value| v["minutes"].as_array().map_or(0, Vec::len);
    let (_, text) = support::http("GET", series(old_start, old_start + 7200), None).await;
    assert_eq!(count(&serde_json::from_str(&text).unwrap()), 120);

    // No pass before the first is due; then one.
    clock.set(now + FIRST_PASS_SECS - 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_, text) = support::http("GET", series(old_start, old_start + 7200), None).await;
    assert_eq!(count(&serde_json::from_str(&text).unwrap()), 120);
    clock.set(now + FIRST_PASS_SECS);
    support::wait_for_json(
        "the old minutes rolled up",
        &series(old_start, old_start + 7200),
        |v| count(v) == 0,
    )
    .await;
    let (_, text) = support::http("GET", series(now - 3600, now), None).await;
    assert_eq!(
        count(&serde_json::from_str(&text).unwrap()),
        10,
        "recent minutes stay"
    );
    drop(running);
    let lines = scalar(
        dir.path().join("data").as_path(),
        "SELECT sum(lines) FROM app_hours",
    )
    .await;
    assert_eq!(lines, 120 * 100, "the two hours are in their hourly rows");
}
