//! Releases end (`[limits] max_release_age`): a release nobody finished is finished by the
//! detector with outcome `expired`, over a real SQLite file, seen through the API, the
//! release page and the webhooks' queue; a block it ended with stays a block.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;
use vigil_detector::api::{ApiState, router};
use vigil_detector::config::DetectorConfig;
use vigil_detector::judge::Decision;
use vigil_detector::release::Releases;
use vigil_detector::store::{Outcome, SqliteStore};

async fn call(router: &Router, method: Method, uri: &str, body: Option<Value>) -> (u16, String) {
    let request = Request::builder().method(method).uri(uri);
    let request = match body {
        Some(b) => request
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn json_of(router: &Router, uri: &str) -> Value {
    let (status, body) = call(router, Method::GET, uri, None).await;
    assert_eq!(status, 200, "{uri}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn a_release_nobody_finished_expires_keeping_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let config = DetectorConfig::parse(
        Path::new("detector.toml"),
        &format!(
            "data_dir = {:?}\n[limits]\nmax_release_age = \"2m\"\n",
            dir.path()
        ),
    )
    .unwrap();
    let limits = config.limits().unwrap();
    assert_eq!(limits.max_release_age_secs, 120);
    let store = Arc::new(SqliteStore::open(&config.data_dir).await.unwrap());
    let (tx, mut changes) = mpsc::channel(16);
    let releases = Arc::new(Releases::new(Arc::clone(&store), Some(tx)).with_limits(limits));
    let api = router(Arc::new(ApiState::new(
        Arc::clone(&store),
        Arc::clone(&releases),
        None,
    )));

    let start = 1_700_000_000 - 1_700_000_000 % 60;
    let mut ids = Vec::new();
    for (version, started_at) in [("2.0", start), ("2.1", start + 60)] {
        ids.push(support::create_shop_release(&releases, version, started_at).await);
    }
    // The first is blocked by a dangerous alert.
    releases
        .alert(&support::dangerous_alert(start + 30))
        .await
        .unwrap();
    assert_eq!(changes.try_recv().unwrap().decision, Decision::Block);

    // One second short of two minutes: nothing ends.
    assert_eq!(
        releases.expire(start + 119).await.unwrap(),
        Vec::<i64>::new()
    );
    // Two minutes after its start the first ends; the second, a minute younger, not yet.
    assert_eq!(releases.expire(start + 120).await.unwrap(), vec![ids[0]]);
    let first = json_of(&api, &format!("/api/v1/releases/{}", ids[0])).await;
    assert_eq!(first["state"], "finished");
    assert_eq!(first["outcome"], "expired");
    assert_eq!(first["finished_at"], start + 120);
    assert_eq!(first["decision"], "block", "the block it ended with stays");
    let second = json_of(&api, &format!("/api/v1/releases/{}", ids[1])).await;
    assert_eq!(second["state"], "watching");
    let finished = json_of(&api, "/api/v1/releases?state=finished").await;
    assert_eq!(finished["releases"][0]["outcome"], "expired");

    // The webhooks hear of it like of any finish, with the decision it ended with.
    let change = changes.try_recv().unwrap();
    assert_eq!(change.release_id, ids[0]);
    assert_eq!(change.outcome, Some(Outcome::Expired));
    assert_eq!(
        (change.decision, change.previous_decision),
        (Decision::Block, Decision::Block)
    );
    assert!(changes.try_recv().is_err(), "one post per expiry");

    // The page says how it ended, in its state and on its timeline.
    let (status, page) = call(&api, Method::GET, &format!("/releases/{}", ids[0]), None).await;
    assert_eq!(status, 200);
    assert!(page.contains("finished (expired)"), "{page}");
    assert!(page.contains("finished: expired"), "{page}");
    assert!(page.contains("max_release_age"), "{page}");

    // Expired is final: no finish over it, and no second expiry.
    let (status, body) = call(
        &api,
        Method::POST,
        &format!("/api/v1/releases/{}/finish", ids[0]),
        Some(json!({"outcome": "success"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already finished (expired)"), "{body}");
    assert_eq!(
        releases.expire(start + 150).await.unwrap(),
        Vec::<i64>::new()
    );
    // Users cannot claim the detector's outcome.
    let (status, body) = call(
        &api,
        Method::POST,
        &format!("/api/v1/releases/{}/finish", ids[1]),
        Some(json!({"outcome": "expired"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("given by the detector"), "{body}");
    assert_eq!(releases.expire(start + 180).await.unwrap(), vec![ids[1]]);

    // And the store read back from the file says the same.
    drop((api, releases));
    store.close().await;
    let reopened = SqliteStore::open(dir.path()).await.unwrap();
    let releases = Releases::new(Arc::new(reopened), None);
    let again = releases.get(ids[0]).await.unwrap();
    assert_eq!(again.outcome, Some(Outcome::Expired));
    assert_eq!(again.decision, Decision::Block);
}
