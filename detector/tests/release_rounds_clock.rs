//! Minute rounds and release expiry of a real detector (gRPC and HTTP on 127.0.0.1, a real
//! SQLite file) driven by a clock the test moves: three rounds and an expiry in seconds,
//! where the wall clock would take three minutes.

#![allow(clippy::unwrap_used)]

mod support;

use support::{
    ManualClock, STEP_TIMEOUT, http, start_with_clock, wait_for_json, webhook_receiver, within,
};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vigil_detector::release::ROUND_DELAY_SECS;
use vigil_proto::v1::collector_client::CollectorClient;
use vigil_proto::v1::report::Body;
use vigil_proto::v1::{AckStatus, ExceptionCount, ExceptionDefinition, Report};

const DANGEROUS: u64 = 0x9f3a_5c0e_11d2_b7a4;

/// The machine's current minute (reports must be of past minutes by it).
fn system_minute() -> i64 {
    vigil_detector::judge::minute_of(vigil_detector::clock::unix_now())
}

/// A minute of `web-1` (app `shop`), with a dangerous exception when `dangerous`.
fn report(seq: u64, minute: i64, dangerous: bool) -> Report {
    let mut r = support::minute_report("rounds", seq, minute, 100);
    if dangerous && let Some(Body::Minute(m)) = r.body.as_mut() {
        let app = &mut m.apps[0];
        app.error_lines = 1;
        app.exceptions = vec![ExceptionCount {
            fingerprint: DANGEROUS,
            count: 3,
        }];
        app.definitions = vec![ExceptionDefinition {
            fingerprint: DANGEROUS,
            class: "java.lang.NoSuchMethodError".into(),
            message: "shop.Promo.apply()V".into(),
            frames: vec!["shop.Checkout.run".into()],
            dangerous: true,
            ..Default::default()
        }];
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_and_expiry_follow_the_detectors_clock() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // Reports must be of past minutes by the machine's clock; the judgement's clock starts
    // at the machine's current minute and moves only when the test moves it.
    let t = system_minute();
    let clock = ManualClock::at(t + 1);
    let (hook_url, mut hooks) = webhook_receiver().await;
    let running = start_with_clock(
        dir.path(),
        &format!("[[webhooks]]\nurl = {hook_url:?}\n[limits]\nmax_release_age = \"5m\"\n"),
        None,
        Some(clock.clone()),
    )
    .await;

    // Ten quiet minutes, then the dangerous exception in the minute after the batch.
    let mut client = CollectorClient::new(running.channel.clone());
    let (tx, rx) = mpsc::channel(32);
    let mut acks = within(
        "the report stream",
        client.stream(tonic::Request::new(ReceiverStream::new(rx))),
    )
    .await
    .unwrap()
    .into_inner();
    let mut seq = 0;
    for m in (1..=12).rev().map(|i| t - i * 60) {
        seq += 1;
        tx.send(report(seq, m, m == t - 60)).await.unwrap();
    }
    for _ in 0..seq {
        let ack = within("an ack", acks.message()).await.unwrap().unwrap();
        assert_eq!(ack.status(), AckStatus::Stored, "{}", ack.error);
    }

    let base = running.http.clone();
    let (status, created) = http(
        "POST",
        format!("{base}/api/v1/releases"),
        Some(
            json!({"app": "shop", "version": "2.0", "hosts": ["web-1"], "started_at": t - 120})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(
        created["created_at"],
        t + 1,
        "the API reads the detector's clock"
    );
    let url = format!("{base}/api/v1/releases/{}", created["id"]);

    // Nothing is judged until the clock passes the next minute boundary (and its delay).
    let delay = ROUND_DELAY_SECS as i64;
    clock.set(t + 60 + delay - 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_, text) = http("GET", url.clone(), None).await;
    let before: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(before["last_round"], Value::Null, "{before}");

    // The round after the boundary catches up from the batch's minute to minute t and
    // blocks on the dangerous exception of minute t - 60.
    clock.set(t + 60 + delay);
    let judged = wait_for_json("the first round", &url, |r| r["last_round"] == t).await;
    assert_eq!(judged["decision"], "block", "{judged}");
    assert_eq!(judged["reasons"][0]["rule"], "dangerous_exception");
    assert_eq!(judged["decided_at"], t);
    assert_eq!(judged["state"], "watching");

    clock.set(t + 120 + delay);
    let judged = wait_for_json("the second round", &url, |r| r["last_round"] == t + 60).await;
    assert_eq!(
        judged["state"], "watching",
        "4 minutes and the delay old, younger than 5m"
    );

    // Five minutes after its start, the round of that boundary judges it, then it ends.
    clock.set(t + 180 + delay);
    let ended = wait_for_json("the expiry", &url, |r| r["state"] == "finished").await;
    assert_eq!(ended["outcome"], "expired");
    assert_eq!(ended["finished_at"], t + 180 + delay);
    assert_eq!(ended["last_round"], t + 120);
    assert_eq!(ended["decision"], "block", "it ended blocked");
    // The webhook heard the block, then the finish: outcome expired, still a block.
    let block = within("the block's webhook", hooks.recv()).await.unwrap();
    assert_eq!(
        (
            &block["decision"],
            &block["previous_decision"],
            block.get("outcome")
        ),
        (&json!("block"), &json!("pass"), None)
    );
    let expired = within("the expiry's webhook", hooks.recv()).await.unwrap();
    assert_eq!(expired["release_id"], created["id"]);
    assert_eq!(expired["outcome"], "expired");
    assert_eq!(
        (&expired["decision"], &expired["previous_decision"]),
        (&json!("block"), &json!("block"))
    );
    // Counted just after the finish is stored.
    within("the expiry counted in /metrics", async {
        while !http("GET", format!("{base}/metrics"), None)
            .await
            .1
            .contains("vigil_detector_releases_expired_total 1\n")
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    // Three minutes of rounds took seconds (the deadline of each wait is STEP_TIMEOUT).
    assert!(started.elapsed() < STEP_TIMEOUT, "{:?}", started.elapsed());
}
