//! Alerts never wait for other releases: over a real SQLite file, 50 releases catch up
//! 180 minutes of rounds each (a detector back after three hours down), one of them large
//! (150 hosts: its catch-up alone takes seconds), while a dangerous alert arrives for
//! another release, not being judged; the alert's block is stored within a second, while
//! the large release's catch-up goes on.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vigil_detector::judge::{Decision, Definition};
use vigil_detector::release::{Releases, StoredAlert};
use vigil_detector::store::{SqliteStore, Store};
use vigil_proto::v1::report::Body;
use vigil_proto::v1::{AppCounters, MinuteReport, Report};

const RELEASES: usize = 50;
const HOSTS: usize = 6;
/// Hosts of the large release (the second judged).
const BIG_HOSTS: usize = 150;
/// "Now": the catch-up judges up to this minute.
const END: i64 = 1_763_880_000; // a whole minute

fn report(app: &str, host: &str, seq: u64, minute: i64) -> Report {
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
                app: app.into(),
                lines: 1000 + (minute / 60 % 13) as u64,
                error_lines: 3 + (minute / 60 % 3) as u64,
                warn_lines: 5,
                events: 900,
                ..Default::default()
            }],
            host_metrics: None,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_judged_within_a_second_while_fifty_releases_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    // Each release: its own app, five released hosts and one reference host, an hour of
    // baseline and three hours since its batch, never judged (the detector was down).
    let batch_at = END - 180 * 60;
    let mut reports = Vec::new();
    let hosts_of = |r: usize| if r == RELEASES - 2 { BIG_HOSTS } else { HOSTS };
    for r in 0..RELEASES {
        for h in 0..hosts_of(r) {
            let (app, host) = (format!("app-{r}"), format!("r{r}-h{h}"));
            for (i, m) in (batch_at - 60 * 60..=END).step_by(60).enumerate() {
                reports.push(report(&app, &host, i as u64 + 1, m));
            }
        }
    }
    for chunk in reports.chunks(2000) {
        store.ingest(chunk, END).await.unwrap();
    }
    let releases = Arc::new(Releases::new(Arc::clone(&store), None));
    let mut ids = Vec::new();
    for r in 0..RELEASES {
        let n = hosts_of(r);
        let hosts: Vec<String> = (0..n - 1).map(|h| format!("r{r}-h{h}")).collect();
        let created = releases
            .create(
                serde_json::from_value(json!({
                    "app": format!("app-{r}"), "version": "2.0", "hosts": hosts,
                    "reference_hosts": [format!("r{r}-h{}", n - 1)], "started_at": batch_at,
                }))
                .unwrap(),
                batch_at,
            )
            .await
            .unwrap();
        ids.push(created.id);
    }

    // The catch-up: every release's 180 rounds, two releases at a time, newest first.
    let catch_up = {
        let releases = Arc::clone(&releases);
        tokio::spawn(async move {
            let t = Instant::now();
            releases.round_all(END).await.unwrap();
            t.elapsed()
        })
    };
    // Once the newest release (judged first, beside the large one) has its rounds stored,
    // the large one is still being judged: then an alert for the oldest release, whose
    // turn comes last.
    let first_judged = *ids.last().unwrap();
    let big = ids[RELEASES - 2];
    tokio::time::timeout(Duration::from_secs(60), async {
        while releases
            .get(first_judged)
            .await
            .unwrap()
            .last_round
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the catch-up started");
    let target = ids[0];
    let alerted = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        releases.alert(&StoredAlert {
            app: "app-0".into(),
            host: "r0-h0".into(),
            at: END + 10,
            fingerprint: 0x9f3a_5c0e_11d2_b7a4,
            definition: Definition {
                class: "java.lang.NoSuchMethodError".into(),
                causes: vec![],
                message: "shop.Promo.apply()V".into(),
                frames: vec!["shop.Checkout.run".into()],
                dangerous: true,
            },
        }),
    )
    .await
    .expect("the alert ends")
    .unwrap();
    let took = alerted.elapsed();
    let blocked = releases.get(target).await.unwrap();
    assert_eq!(blocked.decision, Decision::Block);
    assert_eq!(blocked.decided_at, Some(END + 10));
    assert_eq!(blocked.last_round, None, "judged before its catch-up began");
    assert!(!catch_up.is_finished(), "the catch-up was still going on");
    assert_eq!(
        releases.get(big).await.unwrap().last_round,
        None,
        "the large release's catch-up was still going on"
    );
    let catch_up_took = tokio::time::timeout(Duration::from_secs(300), catch_up)
        .await
        .expect("the catch-up ends")
        .unwrap();
    eprintln!("alert judged in {took:?}; the catch-up took {catch_up_took:?}");
    assert!(took < Duration::from_secs(1), "alert took {took:?}");
    // The block is sticky through its own catch-up.
    let after = releases.get(target).await.unwrap();
    assert_eq!(after.decision, Decision::Block);
    assert_eq!(after.last_round, Some(END));
}
