//! An agent upgrade that changes the fingerprint algorithm, in the middle of a release, over
//! the real gRPC port and a real SQLite file: reference hosts run agent 0.1.0
//! (`fingerprint_version` 1), the released hosts got agent 0.2.0 (`fingerprint_version` 2)
//! with the release, so every failure they report carries a new id with the same
//! definition (DESIGN §4, "Fingerprint versions").
//!
//! - `shop`: the same failures at the same rates under new ids, and a dangerous-class alert
//!   for a failure the reference hosts have always had → `pass`, no reason;
//! - `cart`: a known failure ×8 on the released hosts, under its new id → `block` for the
//!   rate, named by the version-1 fingerprint, never "new exception";
//! - `pay`: a failure whose version-2 definition differs (another site) → `block`, new.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::{ManualClock, http, start_with_clock, wait_for_json, within};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::collector_client::CollectorClient;
use vigil_proto::v1::report::Body;
use vigil_proto::v1::{
    AckStatus, Alert, AppCounters, ExceptionCount, ExceptionDefinition, MinuteReport, Report,
};

const APPS: [&str; 3] = ["shop", "cart", "pay"];
const HOSTS: [&str; 4] = ["web-1", "web-2", "web-3", "web-4"];
/// Hosts that got the release (and agent 0.2.0 with it).
const RELEASED: [&str; 2] = ["web-1", "web-2"];

/// One failure: its definition and its id under each algorithm version.
struct Failure {
    class: &'static str,
    frames: &'static [&'static str],
    dangerous: bool,
    v1: u64,
    v2: u64,
}

const CAST: Failure = Failure {
    class: "java.lang.ClassCastException",
    frames: &["shop.cart.Line.price", "shop.cart.Cart.total"],
    dangerous: true,
    v1: 0x1111_0000_0000_0001,
    v2: 0x2222_0000_0000_0001,
};
const TIMEOUT: Failure = Failure {
    class: "java.net.SocketTimeoutException",
    frames: &["shop.stock.Client.reserve", "shop.Checkout.run"],
    dangerous: false,
    v1: 0x1111_0000_0000_0002,
    v2: 0x2222_0000_0000_0002,
};
/// Version 2 picks another site for this failure: its frames differ between versions.
const MOVED_V2_FRAMES: &[&str] = &["shop.pay.Gateway.charge", "shop.pay.Retry.run"];

fn definition(f: &Failure, fingerprint: u64, frames: &[&str]) -> ExceptionDefinition {
    ExceptionDefinition {
        fingerprint,
        class: f.class.into(),
        message: "request 17".into(),
        frames: frames.iter().map(|s| (*s).to_string()).collect(),
        dangerous: f.dangerous,
        ..Default::default()
    }
}

/// The machine's current minute (reports must be of past minutes by it).
fn system_minute() -> i64 {
    vigil_detector::judge::minute_of(vigil_detector::clock::unix_now())
}

/// The counters of `app` on `host` in `minute`; `v2` when the host runs agent 0.2.0 then.
fn counters(app: &str, host: &str, minute: i64, v2: bool, first_of_version: bool) -> AppCounters {
    let noise = u64::try_from((minute / 60 + host.len() as i64).rem_euclid(3)).unwrap();
    let mut counts = vec![(&CAST, 1), (&TIMEOUT, 2 + noise)];
    if v2 && app == "cart" {
        counts[1].1 = 16 + noise;
    }
    let mut exceptions = Vec::new();
    let mut definitions = Vec::new();
    for (f, count) in counts {
        let (id, frames) = match (v2, app) {
            (false, _) => (f.v1, f.frames),
            (true, "pay") if f.v1 == TIMEOUT.v1 => (f.v2 ^ 0xff, MOVED_V2_FRAMES),
            (true, _) => (f.v2, f.frames),
        };
        exceptions.push(ExceptionCount {
            fingerprint: id,
            count,
        });
        if first_of_version {
            definitions.push(definition(f, id, frames));
        }
    }
    AppCounters {
        app: app.into(),
        lines: 2_000,
        events: 1_000,
        error_lines: 3,
        exceptions,
        definitions,
        ..Default::default()
    }
}

fn report(host: &str, seq: u64, minute: i64, v2: bool, first_of_version: bool) -> Report {
    Report {
        protocol_version: PROTOCOL_VERSION,
        host: host.into(),
        instance: format!("instance-{host}"),
        agent_version: if v2 { "0.2.0" } else { "0.1.0" }.into(),
        fingerprint_version: if v2 { 2 } else { 1 },
        seq,
        sent_at: minute + 61,
        body: Some(Body::Minute(MinuteReport {
            minute,
            apps: APPS
                .iter()
                .map(|app| counters(app, host, minute, v2, first_of_version))
                .collect(),
            host_metrics: None,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_upgrade_during_a_release_keeps_known_failures_known() {
    let dir = tempfile::tempdir().unwrap();
    let t = system_minute();
    let clock = ManualClock::at(t + 1);
    let running = start_with_clock(dir.path(), "", None, Some(clock.clone())).await;
    let release_minute = t - 6 * 60;

    // Twelve minutes of every host; the released hosts switch to agent 0.2.0 at the
    // release (same instance, same data directory, new algorithm).
    let mut client = CollectorClient::new(running.channel.clone());
    let (tx, rx) = mpsc::channel(256);
    let mut acks = within(
        "the report stream",
        client.stream(tonic::Request::new(ReceiverStream::new(rx))),
    )
    .await
    .unwrap()
    .into_inner();
    let mut sent = 0;
    for host in HOSTS {
        let mut seq = 0;
        for minute in (1..=12).rev().map(|i| t - i * 60) {
            seq += 1;
            let v2 = RELEASED.contains(&host) && minute >= release_minute;
            let first = minute == t - 12 * 60 || (v2 && minute == release_minute);
            tx.send(report(host, seq, minute, v2, first)).await.unwrap();
            sent += 1;
        }
    }
    for _ in 0..sent {
        let ack = within("an ack", acks.message()).await.unwrap().unwrap();
        assert_eq!(ack.status(), AckStatus::Stored, "{}", ack.error);
    }

    let base = running.http.clone();
    let mut urls = Vec::new();
    for app in APPS {
        let (status, created) = http(
            "POST",
            format!("{base}/api/v1/releases"),
            Some(
                json!({"app": app, "version": "2.0", "hosts": RELEASED,
                       "reference_hosts": ["web-3", "web-4"], "started_at": release_minute})
                .to_string(),
            ),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let created: Value = serde_json::from_str(&created).unwrap();
        urls.push(format!("{base}/api/v1/releases/{}", created["id"]));
    }

    // A dangerous-class alert from a released host on agent 0.2.0, for the cast failure
    // every host has had all along under its version-1 id.
    tx.send(Report {
        protocol_version: PROTOCOL_VERSION,
        host: "web-1".into(),
        instance: "instance-web-1".into(),
        agent_version: "0.2.0".into(),
        fingerprint_version: 2,
        seq: 13,
        sent_at: t,
        body: Some(Body::Alert(Alert {
            app: "shop".into(),
            at: t - 30,
            definition: Some(definition(&CAST, CAST.v2, CAST.frames)),
            count: 1,
        })),
    })
    .await
    .unwrap();
    let ack = within("the alert's ack", acks.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.status(), AckStatus::Stored, "{}", ack.error);

    // The round after the boundary judges the release's minutes.
    clock.set(t + 60 + vigil_detector::release::ROUND_DELAY_SECS as i64);
    let mut judged = Vec::new();
    for url in &urls {
        judged.push(wait_for_json("the round", url, |r| r["last_round"] == t).await);
    }
    let reasons = |r: &Value| -> Vec<(String, String)> {
        r["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rule"].as_str().unwrap_or("").to_string(),
                    r["fingerprint"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };

    let shop = &judged[0];
    assert_eq!(shop["decision"], "pass", "{shop}");
    assert!(reasons(shop).is_empty(), "{shop}");

    let cart = &judged[1];
    assert_eq!(cart["decision"], "block", "{cart}");
    let rate = reasons(cart)
        .into_iter()
        .find(|(rule, _)| rule == "exception_rate")
        .unwrap_or_else(|| panic!("no rate reason: {cart}"));
    assert_eq!(rate.1, format!("{:016x}", TIMEOUT.v1), "{cart}");
    assert!(
        reasons(cart)
            .iter()
            .all(|(rule, _)| rule != "new_exception" && rule != "dangerous_exception"),
        "{cart}"
    );

    let pay = &judged[2];
    assert_eq!(pay["decision"], "block", "{pay}");
    assert!(
        reasons(pay)
            .iter()
            .any(|(rule, fp)| rule == "new_exception"
                && *fp == format!("{:016x}", TIMEOUT.v2 ^ 0xff)),
        "{pay}"
    );
    // The cast failure, renamed but not moved, is in no reason of any release.
    for r in &judged {
        assert!(
            reasons(r)
                .iter()
                .all(|(_, fp)| *fp != format!("{:016x}", CAST.v2)
                    && *fp != format!("{:016x}", CAST.v1)),
            "{r}"
        );
    }
}
