//! An app that has minted many fingerprints (a generated class or message inside its
//! stacks), over a real SQLite store: a round reads only what its window needs of them, so
//! its memory and the judge state it stores stay small, and it still knows the app's old
//! failures — by id however long ago they were seen, and by family (a full trace of a
//! fast-throw failure whose frameless shape the app has shown) — while a new one is new.
//! The exceptions API answers the most recent of them and says it left some out.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use tower::ServiceExt;
use vigil_detector::api::{ApiState, DEFAULT_EXCEPTIONS, MAX_EXCEPTIONS, router};
use vigil_detector::judge::Definition;
use vigil_detector::judge::minute_of;
use vigil_detector::release::{CreateRelease, ReleaseView, Releases, StoredAlert};
use vigil_detector::store::{SqliteStore, Store};
use vigil_proto::v1::report::Body as ReportBody;
use vigil_proto::v1::{
    Alert, AppCounters, ExceptionCount, ExceptionDefinition, MinuteReport, Report,
};

/// Fingerprints the app minted long before the release, each with a 1 KiB message.
const MINTED: u64 = 12_000;
/// Minted ids: `MINT + i`. The first one minted is the one seen longest ago.
const MINT: u64 = 0x7000_0000_0000_0000;
/// `NullPointerException` without frames (fast throw), shown long before the release.
const NPE_BARE: u64 = 0x4e50_4500_0000_0001;
/// The same failure printed in full, never seen before the release.
const NPE_FULL: u64 = 0x4e50_4500_0000_0002;
/// An exception of a class the app never showed.
const NEW: u64 = 0x0e00_0000_0000_0003;
/// The minted class without frames, shown once before all the minted ones: the oldest of
/// its 12,001 shapes, and not the smallest id of its class.
const GEN_BARE: u64 = 0x7fff_0000_0000_0004;
/// The minted class from a site never seen: the same failure as `GEN_BARE` in full.
const GEN_FULL: u64 = 0x6000_0000_0000_0005;
/// `ClassCastException` (dangerous) without frames, which `cart`'s reference host shows
/// only after the release started, and in full from a released host's alert.
const CCE_BARE: u64 = 0xcce0_0000_0000_0006;
const CCE_FULL: u64 = 0xcce0_0000_0000_0007;
/// `NoSuchMethodError` (dangerous), never seen.
const NSME: u64 = 0x05e0_0000_0000_0008;

const NPE: &str = "java.lang.NullPointerException";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn definition(fingerprint: u64) -> ExceptionDefinition {
    let (class, frames, message) = match fingerprint {
        NPE_BARE => (NPE, vec![], String::new()),
        GEN_BARE => ("shop.GeneratedException", vec![], String::new()),
        GEN_FULL => (
            "shop.GeneratedException",
            vec!["shop.Cart.total".to_string()],
            String::new(),
        ),
        CCE_BARE => ("java.lang.ClassCastException", vec![], String::new()),
        CCE_FULL => (
            "java.lang.ClassCastException",
            vec!["shop.Cart.total".to_string()],
            String::new(),
        ),
        NSME => (
            "java.lang.NoSuchMethodError",
            vec!["shop.Cart.total".to_string()],
            String::new(),
        ),
        NPE_FULL => (NPE, vec!["shop.Cart.total".to_string()], String::new()),
        NEW => (
            "java.lang.IllegalArgumentException",
            vec!["shop.Checkout.run".to_string()],
            "bad".to_string(),
        ),
        _ => (
            "shop.GeneratedException",
            vec![format!("shop.gen.Proxy{fingerprint:x}.call")],
            format!("{fingerprint:x} ").repeat(60),
        ),
    };
    ExceptionDefinition {
        fingerprint,
        class: class.into(),
        message,
        frames,
        dangerous: matches!(fingerprint, CCE_BARE | CCE_FULL | NSME),
        ..Default::default()
    }
}

fn report(host: &str, seq: u64, minute: i64, exceptions: &[(u64, u64)]) -> Report {
    app_report("shop", host, seq, minute, exceptions)
}

fn app_report(app: &str, host: &str, seq: u64, minute: i64, exceptions: &[(u64, u64)]) -> Report {
    Report {
        protocol_version: vigil_proto::PROTOCOL_VERSION,
        host: host.into(),
        instance: format!("inst-{host}"),
        agent_version: "0.1.0".into(),
        fingerprint_version: 1,
        seq,
        sent_at: minute + 61,
        body: Some(ReportBody::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: app.into(),
                lines: 1_000,
                events: 1_000,
                exceptions: exceptions
                    .iter()
                    .map(|&(fingerprint, count)| ExceptionCount { fingerprint, count })
                    .collect(),
                definitions: exceptions.iter().map(|&(f, _)| definition(f)).collect(),
                ..Default::default()
            }],
            host_metrics: None,
        })),
    }
}

/// Stores `reports` one at a time, releases `app` on h1 ten minutes before `end` (h2 and h3
/// the reference hosts) and judges it up to the minute before `end`.
async fn store_and_release(
    store: &SqliteStore,
    releases: &Releases<SqliteStore>,
    app: &str,
    reports: &[Report],
    end: i64,
) -> (ReleaseView, ReleaseView) {
    for r in reports {
        store
            .ingest(std::slice::from_ref(r), now())
            .await
            .expect("ingest");
    }
    let created = releases
        .create(
            CreateRelease {
                app: app.into(),
                version: "2.0".into(),
                hosts: vec!["h1".into()],
                reference_hosts: Some(vec!["h2".into(), "h3".into()]),
                started_at: Some(end - 10 * 60),
            },
            now(),
        )
        .await
        .expect("create");
    let judged = releases.round(created.id, end - 60).await.expect("round");
    (created, judged)
}

async fn get(router: &axum::Router, uri: &str) -> (u16, Value) {
    let request = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 256 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_many_fingerprints_is_judged_from_what_its_window_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
    let releases = Arc::new(Releases::new(Arc::clone(&store), None));
    let end = minute_of(now());
    let release_at = end - 10 * 60;
    // Six hours before the release, far outside its baseline: the minted fingerprints (the
    // first minted an hour before the others) and the frameless NPE.
    let long_ago = release_at - 6 * 3600;
    let mut reports = Vec::new();
    let mut seq = 0;
    let ids: Vec<(u64, u64)> = (0..MINTED).map(|i| (MINT + i, 1)).collect();
    for (i, chunk) in ids.chunks(5_000).enumerate() {
        seq += 1;
        let minute = if i == 0 { long_ago - 3600 } else { long_ago };
        reports.push(report("h3", seq, minute, chunk));
    }
    seq += 1;
    reports.push(report("h3", seq, long_ago, &[(NPE_BARE, 4)]));
    seq += 1;
    reports.push(report("h3", seq, long_ago - 7200, &[(GEN_BARE, 1)]));
    // Seventy minutes of every host before the release, then ten after it, when the
    // released host h1 shows the oldest minted fingerprint, the NPE in full and a new
    // exception.
    for m in (0..80).map(|i| release_at - 70 * 60 + i * 60) {
        seq += 1;
        for host in ["h1", "h2", "h3"] {
            let shown: &[(u64, u64)] = if host == "h1" && m >= release_at {
                &[(MINT, 6), (NPE_FULL, 6), (GEN_FULL, 6), (NEW, 6)]
            } else {
                &[]
            };
            reports.push(report(host, seq, m, shown));
        }
    }
    let (created, judged) = store_and_release(&store, &releases, "shop", &reports, end).await;

    // The new exception is new; the old failures are not, by id or by family (the
    // minted class's frameless shape is the oldest of its 12,001).
    let new_ones: Vec<String> = judged
        .reasons
        .iter()
        .filter(|r| r.rule.as_str() == "new_exception")
        .filter_map(|r| r.fingerprint.clone())
        .collect();
    assert_eq!(
        new_ones,
        vec![format!("{NEW:016x}")],
        "{:#?}",
        judged.reasons
    );
    assert_eq!(judged.decision.as_str(), "block");

    // The stored judge state holds no definitions of the app's fingerprints: a few KiB,
    // where the app's definitions are 12 MiB.
    let stored = store
        .release(created.id)
        .await
        .expect("release")
        .expect("stored");
    let state = stored.judge.expect("a judge state");
    assert!(
        state.len() < 64 * 1024,
        "judge state of {} bytes",
        state.len()
    );

    // The API answers the most recently seen fingerprints and says it left some out.
    let router = router(Arc::new(ApiState::new(
        Arc::clone(&store),
        Arc::clone(&releases),
        None,
    )));
    let (status, page) = get(&router, "/api/v1/apps/shop/exceptions?limit=3").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["truncated"], true);
    let shown: Vec<&str> = page["exceptions"]
        .as_array()
        .expect("exceptions")
        .iter()
        .filter_map(|e| e["fingerprint"].as_str())
        .collect();
    // Four were last seen in the newest minute; the first three by id (MINT is left out).
    assert_eq!(
        shown,
        vec![
            format!("{NEW:016x}"),
            format!("{NPE_FULL:016x}"),
            format!("{GEN_FULL:016x}")
        ]
    );
    // The next page starts where that one ended.
    assert_eq!(page["next_offset"], 3);
    let (status, next) = get(&router, "/api/v1/apps/shop/exceptions?limit=3&offset=3").await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["exceptions"][0]["fingerprint"], format!("{MINT:016x}"));
    for (query, expected) in [("", DEFAULT_EXCEPTIONS), ("?limit=1000", MAX_EXCEPTIONS)] {
        let (status, page) = get(&router, &format!("/api/v1/apps/shop/exceptions{query}")).await;
        assert_eq!(status, 200);
        assert_eq!(page["exceptions"].as_array().map(Vec::len), Some(expected));
        assert_eq!(page["truncated"], true);
    }
    for bad in ["limit=0", "limit=1001", "limit=many", "since=5"] {
        let (status, body) = get(&router, &format!("/api/v1/apps/shop/exceptions?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

/// An alert between rounds counts as known what its judge saw outside the release at the
/// last round, its family too: a full trace of a dangerous class whose frameless shape a
/// reference host showed only after the release started does not block; a dangerous class
/// never seen does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_judged_with_the_fingerprints_its_last_round_saw_outside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
    let releases = Arc::new(Releases::new(Arc::clone(&store), None));
    let end = minute_of(now());
    let release_at = end - 10 * 60;
    let mut reports = Vec::new();
    for (seq, m) in (0..80).map(|i| release_at - 70 * 60 + i * 60).enumerate() {
        for host in ["h1", "h2", "h3"] {
            let shown: &[(u64, u64)] = if host == "h2" && m > release_at {
                &[(CCE_BARE, 3)]
            } else {
                &[]
            };
            reports.push(app_report("cart", host, seq as u64 + 1, m, shown));
        }
    }
    let (created, judged) = store_and_release(&store, &releases, "cart", &reports, end).await;
    assert_eq!(judged.decision.as_str(), "pass", "{:#?}", judged.reasons);

    let alert = |fingerprint: u64, seq: u64| {
        let definition = definition(fingerprint);
        let stored = StoredAlert {
            app: "cart".into(),
            host: "h1".into(),
            at: end - 30,
            fingerprint,
            definition: Definition {
                class: definition.class.clone(),
                causes: definition.causes.clone(),
                message: definition.message.clone(),
                frames: definition.frames.clone(),
                dangerous: definition.dangerous,
            },
        };
        let report = Report {
            protocol_version: vigil_proto::PROTOCOL_VERSION,
            host: "h1".into(),
            instance: "inst-h1".into(),
            agent_version: "0.1.0".into(),
            fingerprint_version: 1,
            seq,
            sent_at: end - 29,
            body: Some(ReportBody::Alert(Alert {
                app: "cart".into(),
                at: end - 30,
                definition: Some(definition),
                count: 1,
            })),
        };
        (report, stored)
    };
    for (fingerprint, blocks) in [(CCE_FULL, false), (NSME, true)] {
        let (report, stored) = alert(fingerprint, 1_000 + fingerprint % 1_000);
        store.ingest(&[report], now()).await.expect("ingest alert");
        releases.alert(&stored).await.expect("alert");
        let now_view = releases.get(created.id).await.expect("release");
        assert_eq!(
            now_view.decision.as_str(),
            if blocks { "block" } else { "pass" },
            "alert of {fingerprint:016x}: {:#?}",
            now_view.reasons
        );
    }
}
