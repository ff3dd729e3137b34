//! State that survives upgrades: a release's stored judge state, in a real SQLite file,
//! rewritten as an older detector wrote it (migrated), as a newer one would (refused), and
//! corrupted (unreadable) — a block stays a block, and the log, `/metrics`, the API and the
//! release page say the state was unreadable, once.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;
use vigil_detector::api::{ApiState, router};
use vigil_detector::judge::Decision;
use vigil_detector::release::Releases;
use vigil_detector::store::SqliteStore;

const START: i64 = 1_763_880_000;

fn unreadable_total() -> u64 {
    let text = vigil_detector::metrics::global().render();
    text.lines()
        .find_map(|l| l.strip_prefix("vigil_detector_judge_state_unreadable_total "))
        .and_then(|v| v.parse().ok())
        .expect("the counter is rendered")
}

/// Rewrites the stored judge state of release `id` with `sql` (an expression over the
/// column `judge`), as another detector version or a broken disk would have left it.
async fn rewrite_state(dir: &Path, id: i64, sql: &str) {
    let url = format!("sqlite://{}", dir.join("vigil.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let query = format!("UPDATE releases SET judge = {sql} WHERE id = ?");
    let done = sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
    pool.close().await;
}

async fn get(router: &axum::Router, uri: &str) -> String {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{uri}");
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn an_unreadable_judge_state_keeps_the_block_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    // A detector blocks release 1 on a dangerous alert and judges release 2 (a pass).
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let releases = Releases::new(Arc::clone(&store), None);
    let mut ids = Vec::new();
    for version in ["2.0", "2.1"] {
        ids.push(support::create_shop_release(&releases, version, START).await);
    }
    releases
        .alert(&support::dangerous_alert(START + 30))
        .await
        .unwrap();
    // The alert blocks both (both released h1); a false alarm lifts release 2, a pass.
    let blocked = releases.round(ids[0], START).await.unwrap();
    assert_eq!(blocked.decision, Decision::Block);
    let reasons = blocked.reasons.clone();
    let decided_at = blocked.decided_at;
    releases
        .feedback(
            ids[1],
            serde_json::from_value(json!({"label": "false_alarm"})).unwrap(),
            START + 40,
        )
        .await
        .unwrap();
    assert_eq!(
        releases.round(ids[1], START).await.unwrap().decision,
        Decision::Pass
    );
    drop(releases);
    store.close().await;

    // An upgrade finds release 1's state corrupt and release 2's as the detectors before
    // versioned states wrote it (the judge itself).
    rewrite_state(dir.path(), ids[0], "'{\"window\": [tru'").await;
    rewrite_state(dir.path(), ids[1], "json_extract(judge, '$.judge')").await;

    let before = unreadable_total();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let releases = Arc::new(Releases::new(Arc::clone(&store), None));
    let api = router(Arc::new(ApiState::new(
        Arc::clone(&store),
        Arc::clone(&releases),
        None,
    )));
    let judged = releases.round(ids[0], START + 60).await.unwrap();
    assert_eq!(judged.decision, Decision::Block, "a block stays a block");
    assert_eq!(judged.reasons, reasons, "with its reasons");
    assert_eq!(judged.decided_at, decided_at, "and its time");
    assert_eq!(unreadable_total(), before + 1);
    let lost = judged
        .judge_state_unreadable
        .clone()
        .expect("the API says so");
    assert_eq!(lost.at, START + 120);
    assert!(lost.reason.starts_with("not JSON"), "{}", lost.reason);
    // The migrated version 1 state is read as it was: no finding, the same pass.
    let migrated = releases.round(ids[1], START + 60).await.unwrap();
    assert_eq!(migrated.decision, Decision::Pass);
    assert_eq!(migrated.judge_state_unreadable, None);
    assert_eq!(unreadable_total(), before + 1);

    // Found once: the rebuilt judge is stored (with the note), later rounds read it.
    releases.round(ids[0], START + 120).await.unwrap();
    assert_eq!(unreadable_total(), before + 1);
    let view: Value =
        serde_json::from_str(&get(&api, &format!("/api/v1/releases/{}", ids[0])).await).unwrap();
    assert_eq!(view["decision"], "block");
    assert_eq!(view["judge_state_unreadable"]["at"], START + 120);
    let page = get(&api, &format!("/releases/{}", ids[0])).await;
    assert!(
        page.contains("judge state stored for this release was unreadable"),
        "{page}"
    );
    assert!(page.contains("kept its decision"), "{page}");
    let metrics = vigil_detector::metrics::global().render();
    assert!(metrics.contains("# TYPE vigil_detector_judge_state_unreadable_total counter"));

    // A state written by a newer detector is refused the same way: the block stays.
    rewrite_state(
        dir.path(),
        ids[0],
        "json_set(judge, '$.version', 3, '$.judge.window', 'a field from the future')",
    )
    .await;
    let judged = releases.round(ids[0], START + 180).await.unwrap();
    assert_eq!(judged.decision, Decision::Block);
    assert_eq!(unreadable_total(), before + 2);
    let lost = judged.judge_state_unreadable.expect("newer state noted");
    assert!(
        lost.reason
            .contains("version 3 is newer than this detector's 2"),
        "{}",
        lost.reason
    );
}
