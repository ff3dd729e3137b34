//! The shared PostgreSQL store against a real server, compared with the embedded SQLite
//! store: the same reports give the same rows (counters, exceptions, host metrics,
//! requests, scraped values, process figures), duplicates by `(instance, seq)` are stored
//! once within a batch, across batches and across two detectors ingesting at the same
//! time, releases round-trip identically, retention rolls up to the same hours, and a
//! database migrated by a newer Vigil is refused.
//!
//! The server is the one `VIGIL_TEST_POSTGRES` names (`.ci/postgres start` starts one);
//! each test creates a database of its own and drops it. Without the variable the tests
//! are skipped, but not under CI.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use vigil_detector::config::Retention;
use vigil_detector::judge::{Batch, Decision, Feedback};
use vigil_detector::replay::parse_fingerprint;
use vigil_detector::store::{
    ExceptionQuery, FeedbackEntry, FingerprintRow, IngestOutcome, NewRelease, Outcome,
    PostgresStore, ReleaseFilter, ReleaseState, ReleaseUpdate, RetentionPass, SeriesQuery, Shape,
    SqliteStore, Store, StoreError,
};
use vigil_proto::latency::bucket_of;
use vigil_proto::v1::report::Body;
use vigil_proto::v1::{
    Alert, AppCounters, ExceptionCount, ExceptionDefinition, HostMetrics, LatencyBucket,
    MinuteReport, Report, RequestCounters, ScrapedKind, ScrapedValue,
};

/// A whole hour, so that retention's cutoffs are easy to read.
const NOW: i64 = 1_763_877_600;
const DAY: i64 = 86_400;
const FP: u64 = 0x9f3a_5c0e_11d2_b7a4;

/// The server's URL, or `None` (after saying so) when the tests are to be skipped.
fn server() -> Option<String> {
    match std::env::var("VIGIL_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI must provide PostgreSQL: .ci/run starts it (VIGIL_TEST_POSTGRES)")
        }
        _ => {
            eprintln!("SKIPPED: VIGIL_TEST_POSTGRES is not set (eval \"$(.ci/postgres start)\")");
            None
        }
    }
}

/// A database of one test's own, dropped by [`TestDb::drop`].
struct TestDb {
    server: String,
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> Option<Self> {
        let server = server()?;
        let name = format!("vigil_t_{:016x}", fastrand::u64(..));
        let mut admin = PgConnection::connect(&server).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("VIGIL_TEST_POSTGRES is not a postgres://.../db URL: {server}"),
        };
        Some(Self { server, name, url })
    }

    async fn connect(&self) -> PostgresStore {
        PostgresStore::connect(&self.url).await.unwrap()
    }

    async fn drop(self) {
        let mut admin = PgConnection::connect(&self.server).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
    }
}

/// A failing test does not reach its `drop(self).await`: its database is dropped here
/// (with `psql`, since no runtime may be left), so the cluster does not fill up.
impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::process::Command::new("psql")
                .args(["-X", "-q", &self.server, "-c"])
                .arg(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .output();
        }
    }
}

fn requests(ok: u64, failed: u64, ms: f64) -> RequestCounters {
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

/// A minute report of `app` on `host` with everything a report can carry, its figures
/// depending on `seq` and `minute` (so that a lost or doubled report changes the sums).
/// Values are whole numbers, so sums and means are exact in either database.
fn full_report(app: &str, host: &str, instance: &str, seq: u64, minute: i64) -> Report {
    let k = seq % 7 + (minute / 60) as u64 % 5;
    Report {
        protocol_version: vigil_proto::PROTOCOL_VERSION,
        host: host.into(),
        instance: instance.into(),
        agent_version: format!("0.{}.0", seq % 3),
        fingerprint_version: 1,
        seq,
        sent_at: minute + 60,
        body: Some(Body::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: app.into(),
                lines: 100 + k,
                events: 90 + k,
                error_lines: k,
                warn_lines: 1,
                truncated_lines: seq % 2,
                exceptions: vec![
                    ExceptionCount {
                        fingerprint: FP,
                        count: 1 + k,
                    },
                    ExceptionCount {
                        fingerprint: 0x10 + k % 3,
                        count: 2,
                    },
                ],
                definitions: if seq % 4 == 1 {
                    vec![ExceptionDefinition {
                        fingerprint: FP,
                        class: "java.lang.IllegalStateException".into(),
                        causes: vec!["java.io.IOException".into()],
                        message: format!("m{seq}"),
                        frames: vec!["shop.Checkout.run".into()],
                        dangerous: false,
                        sample: "at shop.Checkout.run".into(),
                    }]
                } else {
                    vec![]
                },
                process_cpu_pct: (!seq.is_multiple_of(3)).then_some((10 + k) as f64),
                process_rss_bytes: (seq % 3 != 1).then_some(1000 * k),
                requests: (!seq.is_multiple_of(5))
                    .then(|| requests(10 * k, k % 2, 50.0 + k as f64)),
                scraped: if seq.is_multiple_of(2) {
                    scraped(k as f64, (k % 4) as f64)
                } else {
                    vec![]
                },
            }],
            host_metrics: (seq % 6 != 5).then(|| HostMetrics {
                cpu_pct: Some((20 + k) as f64),
                cpu_pct_max: Some((40 + k) as f64),
                disk_write_bytes: Some(1000 * k),
                load1: seq.is_multiple_of(2).then_some(k as f64),
                samples: 6,
                partial: seq.is_multiple_of(4),
                ..Default::default()
            }),
        })),
    }
}

fn alert(app: &str, host: &str, instance: &str, seq: u64, at: i64) -> Report {
    Report {
        protocol_version: vigil_proto::PROTOCOL_VERSION,
        host: host.into(),
        instance: instance.into(),
        agent_version: "0.1.0".into(),
        fingerprint_version: 1,
        seq,
        sent_at: at,
        body: Some(Body::Alert(Alert {
            app: app.into(),
            at,
            definition: Some(ExceptionDefinition {
                fingerprint: 0xdead_0000 + seq,
                class: "java.lang.NoSuchMethodError".into(),
                message: "shop.Promo.apply()V".into(),
                frames: vec!["shop.Checkout.run".into()],
                dangerous: true,
                ..Default::default()
            }),
            count: seq,
        })),
    }
}

/// Batches of reports for two apps on three hosts from several agents over `minutes`,
/// with repeats: a report twice in its batch, and a batch's reports resent in the next.
fn batches(minutes: &[i64]) -> Vec<Vec<Report>> {
    let mut out = Vec::new();
    let mut seq: BTreeMap<String, u64> = BTreeMap::new();
    let mut previous: Vec<Report> = Vec::new();
    for &m in minutes {
        let mut batch = Vec::new();
        for (app, host) in [
            ("shop", "h1"),
            ("shop", "h2"),
            ("Zeta", "h1"),
            ("shop", "a3"),
        ] {
            // Two agents per host: both report the same app, host and minute.
            for agent in ["x", "y"] {
                let instance = format!("{host}-{agent}");
                let s = seq.entry(instance.clone()).or_insert(0);
                *s += 1;
                batch.push(full_report(app, host, &instance, *s, m));
            }
        }
        batch.push(batch[0].clone());
        batch.push(alert("shop", "h1", "h1-alerts", (m / 60) as u64, m + 7));
        batch.extend(previous.iter().take(3).cloned());
        previous = batch.clone();
        out.push(batch);
    }
    out
}

async fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    (dir, store)
}

/// Every read of the store, for comparing two stores.
async fn everything<S: Store>(store: &S) -> String {
    let mut out = String::new();
    let minutes = store.series(&SeriesQuery::default()).await.unwrap();
    out += &serde_json::to_string_pretty(&minutes).unwrap();
    for query in [
        SeriesQuery {
            app: Some("shop".into()),
            host: Some("h1".into()),
            from: Some(NOW - 3 * 3600),
            to: Some(NOW),
            limit: Some(10_000),
        },
        SeriesQuery {
            host: Some("a3".into()),
            ..Default::default()
        },
    ] {
        out += &serde_json::to_string(&store.series(&query).await.unwrap()).unwrap();
    }
    out += &serde_json::to_string_pretty(&store.hours(&SeriesQuery::default()).await.unwrap())
        .unwrap();
    out += &serde_json::to_string_pretty(&store.apps().await.unwrap()).unwrap();
    for app in ["shop", "Zeta", "none"] {
        out += &serde_json::to_string_pretty(
            &store
                .exceptions(app, &ExceptionQuery::latest(10_000))
                .await
                .unwrap(),
        )
        .unwrap();
        out += &serde_json::to_string(&store.alerts(app, 0, 1000).await.unwrap()).unwrap();
        // The bounded reads of a round, a page and the board.
        let board = ExceptionQuery {
            since: Some(NOW - 2 * 3600),
            new_or_dangerous: true,
            limit: 5,
            offset: 0,
        };
        out += &serde_json::to_string(&store.exceptions(app, &board).await.unwrap()).unwrap();
        let all = store
            .exceptions(app, &ExceptionQuery::latest(10_000))
            .await
            .unwrap();
        let mut ids: Vec<u64> = all
            .iter()
            .filter_map(|f| parse_fingerprint(&f.fingerprint).ok())
            .collect();
        ids.push(0x0bad_0000_0000_0001);
        let mut by_id = store.fingerprints(app, &ids, true).await.unwrap();
        by_id.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        assert_eq!(
            by_id.len(),
            all.len(),
            "{app}: an id it never showed is left out"
        );
        out += &serde_json::to_string(&by_id).unwrap();
        let mut asked: Vec<Shape<'_>> = Vec::new();
        for f in &all {
            asked.push((&f.class, &f.causes, None));
            asked.push((&f.class, &f.causes, Some(&f.frames)));
        }
        for before in [NOW - 3600, NOW + 60] {
            let mut members = store.known_members(app, before, &asked).await.unwrap();
            members.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
            // What they answer, worked out from every fingerprint: the smallest known one
            // of each chain, of each chain's frameless ones, and of each shape.
            let known: Vec<&FingerprintRow> = all
                .iter()
                .filter(|f| f.first_seen.is_some_and(|s| s < before))
                .collect();
            // Smallest as stored: ids are signed 64-bit integers in both databases.
            let smallest = |group: &dyn Fn(&FingerprintRow) -> bool| {
                known
                    .iter()
                    .filter(|f| group(f))
                    .min_by_key(|f| parse_fingerprint(&f.fingerprint).unwrap_or(0) as i64)
                    .map(|f| f.fingerprint.clone())
            };
            let mut expected: Vec<String> = Vec::new();
            for f in &known {
                let chain = |g: &FingerprintRow| g.class == f.class && g.causes == f.causes;
                expected.extend(smallest(&chain));
                expected.extend(smallest(&|g| chain(g) && g.frames.is_empty()));
                expected.extend(smallest(&|g| chain(g) && g.frames == f.frames));
            }
            expected.sort();
            expected.dedup();
            let found: Vec<String> = members.iter().map(|f| f.fingerprint.clone()).collect();
            assert_eq!(found, expected, "{app} before {before}");
            assert!(
                app != "shop" || before < NOW || found.len() > 1,
                "{members:?}"
            );
            out += &serde_json::to_string(&members).unwrap();
        }
    }
    out
}

#[tokio::test]
async fn the_same_reports_read_back_as_from_the_embedded_store() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let pg = db.connect().await;
    let (_dir, lite) = sqlite().await;
    let minutes: Vec<i64> = (0..30).map(|i| NOW - 2 * 3600 + i * 60).collect();
    for batch in batches(&minutes) {
        let a = lite.ingest(&batch, NOW).await.unwrap();
        let b = pg.ingest(&batch, NOW).await.unwrap();
        assert_eq!(a, b, "the same outcomes");
        assert!(a.contains(&IngestOutcome::Duplicate));
        // A redelivery of the whole batch changes nothing.
        let again = pg.ingest(&batch, NOW + 1).await.unwrap();
        assert!(again.iter().all(|o| *o == IngestOutcome::Duplicate));
        lite.ingest(&batch, NOW + 1).await.unwrap();
    }
    let expected = everything(&lite).await;
    assert!(expected.contains("requests") && expected.contains("jvm_gc_pause_seconds_count"));
    assert!(expected.contains("host_metrics") && expected.contains("process_cpu_pct"));
    assert_eq!(everything(&pg).await, expected);
    // The bound of a query holds the same way.
    let bounded = SeriesQuery {
        limit: Some(5),
        ..Default::default()
    };
    assert!(matches!(
        pg.series(&bounded).await,
        Err(StoreError::TooManyRows { limit: 5 })
    ));
    assert!(matches!(
        lite.series(&bounded).await,
        Err(StoreError::TooManyRows { limit: 5 })
    ));
    pg.close().await;
    lite.close().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_detectors_ingesting_the_same_minutes_at_once_count_each_report_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let detectors = [Arc::new(db.connect().await), Arc::new(db.connect().await)];
    let minutes: Vec<i64> = (0..6).map(|i| NOW - 3600 + i * 60).collect();
    let all = batches(&minutes);
    // Each detector gets every batch, split differently and in another order (agents
    // reconnecting back and forth), from several tasks at once.
    let mut tasks = Vec::new();
    for (d, store) in detectors.iter().enumerate() {
        for (i, batch) in all.iter().enumerate() {
            let store = Arc::clone(store);
            let mut batch = batch.clone();
            if d == 1 {
                batch.reverse();
            }
            let split = if (i + d) % 2 == 0 { batch.len() / 2 } else { 3 };
            let (first, second) = batch.split_at(split);
            for part in [first.to_vec(), second.to_vec()] {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move {
                    store.ingest(&part, NOW).await.unwrap()
                }));
            }
        }
    }
    let mut stored = 0;
    for task in tasks {
        stored += task
            .await
            .unwrap()
            .iter()
            .filter(|o| **o == IngestOutcome::Stored)
            .count();
    }
    let (_dir, lite) = sqlite().await;
    let mut expected_stored = 0;
    for batch in &all {
        expected_stored += lite
            .ingest(batch, NOW)
            .await
            .unwrap()
            .iter()
            .filter(|o| **o == IngestOutcome::Stored)
            .count();
    }
    assert_eq!(stored, expected_stored, "each report stored once");
    // Sums and merges are the same whatever the order the reports of a minute came in,
    // but a gauge keeps the last report's value and a process figure the last one sent:
    // compare what does not depend on the order.
    let pg_rows = detectors[0].series(&SeriesQuery::default()).await.unwrap();
    let lite_rows = lite.series(&SeriesQuery::default()).await.unwrap();
    assert_eq!(pg_rows.len(), lite_rows.len());
    for (p, l) in pg_rows.iter().zip(&lite_rows) {
        assert_eq!(
            (
                &p.app,
                &p.host,
                p.minute,
                p.lines,
                p.events,
                p.error_lines,
                p.warn_lines
            ),
            (
                &l.app,
                &l.host,
                l.minute,
                l.lines,
                l.events,
                l.error_lines,
                l.warn_lines
            )
        );
        assert_eq!(p.exceptions, l.exceptions);
        assert_eq!(
            p.requests, l.requests,
            "requests of {} {}",
            p.host, p.minute
        );
        let counter = |r: &vigil_detector::store::MinuteRow| {
            r.scraped
                .as_ref()
                .and_then(|s| s.get("jvm_gc_pause_seconds_count").copied())
        };
        assert_eq!(counter(p), counter(l));
        let metrics = |r: &vigil_detector::store::MinuteRow| {
            r.host_metrics.as_ref().map(|m| {
                (
                    m.cpu_pct_max,
                    m.disk_write_bytes,
                    m.cpu_pct.map(|c| c.round()),
                )
            })
        };
        assert_eq!(
            metrics(p),
            metrics(l),
            "host metrics of {} {}",
            p.host,
            p.minute
        );
    }
    // Counts and when they were seen; the definition kept is the first to arrive, which
    // depends on the order.
    let seen = |rows: Vec<vigil_detector::store::FingerprintRow>| {
        rows.into_iter()
            .map(|f| (f.fingerprint, f.class, f.count, f.first_seen, f.last_seen))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seen(
            detectors[1]
                .exceptions("shop", &ExceptionQuery::latest(10_000))
                .await
                .unwrap()
        ),
        seen(
            lite.exceptions("shop", &ExceptionQuery::latest(10_000))
                .await
                .unwrap()
        )
    );
    // The alerts, in the order they were committed, each once.
    let queued = detectors[1].alerts_after(0, 0, 1000).await.unwrap();
    assert_eq!(queued.len(), minutes.len());
    assert!(queued.windows(2).all(|w| w[0].id < w[1].id));
    assert!(queued.iter().all(|q| q.definition.dangerous));
    let later = detectors[0]
        .alerts_after(queued[2].id, 0, 1000)
        .await
        .unwrap();
    assert_eq!(later.len(), minutes.len() - 3);
    for store in detectors {
        store.close().await;
    }
    lite.close().await;
    db.drop().await;
}

/// Creates, updates, decides, batches and gives feedback on releases the same way in
/// `store`; returns everything it reads back.
async fn release_story<S: Store>(store: &S) -> String {
    let mut out = String::new();
    for (app, version) in [("shop", "2.0"), ("Zeta", "7"), ("shop", "2.1")] {
        let created = store
            .create_release(&NewRelease {
                app: app.into(),
                version: version.into(),
                started_at: NOW - 600,
                created_at: NOW - 590,
                reference_hosts: vec!["h2".into()],
                first_batch: (version != "7").then(|| Batch {
                    at: NOW - 600,
                    hosts: vec!["h1".into()],
                }),
            })
            .await
            .unwrap();
        out += &format!("{created:?}\n");
    }
    let mut release = store.release(1).await.unwrap().unwrap();
    release.decision = Decision::Watch;
    release.decided_at = Some(NOW - 300);
    release.judge = Some("{\"judge\":1}".into());
    release.last_round = Some(NOW - 360);
    store
        .update_release(&ReleaseUpdate {
            release: &release,
            new_batch: Some(&Batch {
                at: NOW - 300,
                hosts: vec!["a3".into()],
            }),
            app_memory: None,
            feedback: None,
            webhook: None,
        })
        .await
        .unwrap();
    release.decision = Decision::Block;
    release.decided_at = Some(NOW - 200);
    release.state = ReleaseState::Finished;
    release.outcome = Some(Outcome::RolledBack);
    release.finished_at = Some(NOW - 100);
    let feedback = FeedbackEntry {
        label: Feedback::ValidBlock,
        note: Some("thanks".into()),
        at: NOW - 50,
    };
    store
        .update_release(&ReleaseUpdate {
            release: &release,
            new_batch: None,
            app_memory: Some("{\"memory\":true}"),
            feedback: Some(&feedback),
            webhook: None,
        })
        .await
        .unwrap();
    // The same decision again logs nothing.
    store
        .update_release(&ReleaseUpdate {
            release: &release,
            new_batch: None,
            app_memory: Some("{\"memory\":2}"),
            feedback: None,
            webhook: None,
        })
        .await
        .unwrap();
    out += &format!("{:?}\n", store.release(1).await.unwrap());
    out += &format!("{:?}\n", store.release(99).await.unwrap());
    for filter in [
        ReleaseFilter::default(),
        ReleaseFilter {
            app: Some("shop".into()),
            state: None,
        },
        ReleaseFilter {
            app: None,
            state: Some(ReleaseState::Watching),
        },
    ] {
        out += &format!("{:?}\n", store.releases(&filter).await.unwrap());
    }
    out += &format!("{:?}\n", store.decisions(None, 10).await.unwrap());
    out += &format!("{:?}\n", store.decisions(Some(1), 1).await.unwrap());
    out += &format!("{:?}\n", store.app_memory("shop").await.unwrap());
    out += &format!("{:?}\n", store.app_memory("Zeta").await.unwrap());
    out
}

#[tokio::test]
async fn releases_decisions_feedback_and_memory_round_trip_as_in_the_embedded_store() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let pg = db.connect().await;
    let (_dir, lite) = sqlite().await;
    let expected = release_story(&lite).await;
    assert!(expected.contains("ValidBlock") && expected.contains("RolledBack"));
    assert_eq!(release_story(&pg).await, expected);
    // A release's lock is held until dropped, then free for another detector.
    let other = db.connect().await;
    let held = pg
        .lock(vigil_detector::store::LockKey::Release(1))
        .await
        .unwrap();
    let waiting = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        other.lock(vigil_detector::store::LockKey::Release(1)),
    )
    .await;
    assert!(waiting.is_err(), "the second detector waits");
    drop(held);
    let taken = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        other.lock(vigil_detector::store::LockKey::Release(1)),
    )
    .await;
    assert!(matches!(taken, Ok(Ok(_))), "then takes it");
    drop(taken);
    other.close().await;
    pg.close().await;
    lite.close().await;
    db.drop().await;
}

#[tokio::test]
async fn retention_rolls_up_to_the_same_hours() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let pg = db.connect().await;
    let (_dir, lite) = sqlite().await;
    let policy = Retention {
        minutes_secs: 3 * 3600,
        hourly_secs: 10 * DAY,
    };
    // Five hours of minutes ending now, and an hour older than the hourly retention, all
    // received 40 days ago (so their keys go too); a late report for a rolled-up hour
    // between two passes.
    let minutes: Vec<i64> = (0..300)
        .step_by(3)
        .map(|i| NOW - 5 * 3600 + i * 60)
        .chain((0..60).step_by(7).map(|i| NOW - 11 * DAY + i * 60))
        .collect();
    for batch in batches(&minutes) {
        assert_eq!(
            lite.ingest(&batch, NOW - 40 * DAY).await.unwrap(),
            pg.ingest(&batch, NOW - 40 * DAY).await.unwrap()
        );
    }
    let first = (
        lite.retain(&policy, NOW).await.unwrap(),
        pg.retain(&policy, NOW).await.unwrap(),
    );
    // The shared store has one more step (its webhook queue), so one more transaction.
    let same = |pass: RetentionPass| RetentionPass {
        transactions: 0,
        ..pass
    };
    assert_eq!(same(first.0), same(first.1));
    assert!(first.0.minutes_rolled_up > 0 && first.0.hourly_rows_deleted > 0);
    let late = full_report("shop", "h1", "late", 1, NOW - 5 * 3600 + 120);
    lite.ingest(std::slice::from_ref(&late), NOW).await.unwrap();
    pg.ingest(std::slice::from_ref(&late), NOW).await.unwrap();
    let second = (
        lite.retain(&policy, NOW).await.unwrap(),
        pg.retain(&policy, NOW).await.unwrap(),
    );
    assert_eq!(same(second.0), same(second.1));
    assert_eq!(second.0.minutes_rolled_up, 1);
    assert_eq!(everything(&pg).await, everything(&lite).await);
    let hours = pg.hours(&SeriesQuery::default()).await.unwrap();
    assert!(
        hours
            .iter()
            .any(|h| h.requests.is_some() && h.scraped.is_some())
    );
    pg.close().await;
    lite.close().await;
    db.drop().await;
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_vigil_is_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // Two detectors starting together migrate once.
    let (a, b) = tokio::join!(db.connect(), db.connect());
    a.close().await;
    b.close().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00', 1)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let refused = PostgresStore::connect(&db.url).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::SchemaTooNew { found: 9999, .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("schema version 9999 is newer"),
        "{refused}"
    );
    db.drop().await;
}
