//! The release API (DESIGN §5) over a real SQLite store: validation, the life of a release,
//! list filters, the replay case, alerts and decision changes.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;
use vigil_detector::api::{ApiState, router};
use vigil_detector::judge::{Decision, Definition};
use vigil_detector::release::{DecisionChange, Releases, StoredAlert};
use vigil_detector::replay::{Replayer, parse_cases};
use vigil_detector::store::{SqliteStore, Store};
use vigil_proto::v1::report::Body as ReportBody;
use vigil_proto::v1::{AppCounters, ExceptionCount, ExceptionDefinition, MinuteReport, Report};

struct Api {
    router: Router,
    store: Arc<SqliteStore>,
    releases: Arc<Releases<SqliteStore>>,
    changes: mpsc::Receiver<DecisionChange>,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
    let (tx, changes) = mpsc::channel(16);
    let releases = Arc::new(Releases::new(Arc::clone(&store), Some(tx)));
    let router = router(Arc::new(ApiState::new(
        Arc::clone(&store),
        Arc::clone(&releases),
        None,
    )));
    Api {
        router,
        store,
        releases,
        changes,
        _dir: dir,
    }
}

impl Api {
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (u16, Value) {
        let request = Request::builder().method(method).uri(uri);
        let request = match body {
            Some(b) => request
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn post(&self, uri: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, uri, Some(body)).await
    }

    async fn get(&self, uri: &str) -> (u16, Value) {
        self.call(Method::GET, uri, None).await
    }
}

const DANGEROUS: u64 = 0x9f3a_5c0e_11d2_b7a4;
const KNOWN: u64 = 0x0b5e_3c1d_2a4f_6e88;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn minute(host: &str, seq: u64, minute: i64, lines: u64, exceptions: &[(u64, u64)]) -> Report {
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
                app: "shop".into(),
                lines,
                error_lines: 1,
                exceptions: exceptions
                    .iter()
                    .map(|&(fingerprint, count)| ExceptionCount { fingerprint, count })
                    .collect(),
                definitions: exceptions
                    .iter()
                    .map(|&(fingerprint, _)| ExceptionDefinition {
                        fingerprint,
                        class: if fingerprint == DANGEROUS {
                            "java.lang.NoSuchMethodError".into()
                        } else {
                            "java.lang.IllegalStateException".into()
                        },
                        message: "m".into(),
                        frames: vec!["shop.Checkout.run".into()],
                        dangerous: fingerprint == DANGEROUS,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            host_metrics: None,
        })),
    }
}

/// Twenty minutes of counters for h1..h3 ending at `end` (exclusive); `KNOWN` shows up on
/// h3 in the baseline.
async fn history(store: &SqliteStore, end: i64) {
    let mut reports = Vec::new();
    let mut seq = 0;
    for i in 0..20 {
        let m = end - (20 - i) * 60;
        seq += 1;
        for host in ["h1", "h2", "h3"] {
            let exceptions: &[(u64, u64)] = if host == "h3" && i == 2 {
                &[(KNOWN, 1)]
            } else {
                &[]
            };
            reports.push(minute(host, seq, m, 100, exceptions));
        }
    }
    store.ingest(&reports, now()).await.expect("ingest");
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_and_change_nothing() {
    let api = api().await;
    let cases = [
        (json!({"app": "shop", "version": "1"}), 422, "hosts"),
        (json!({"app": " ", "version": "1", "hosts": []}), 400, "app"),
        (
            json!({"app": "shop", "version": "1", "hosts": ["a", "a"]}),
            400,
            "twice",
        ),
        (
            json!({"app": "shop", "version": "1", "hosts": ["a"], "reference_hosts": ["a"]}),
            400,
            "both",
        ),
        (
            json!({"app": "shop", "version": "1", "hosts": [], "colour": "red"}),
            422,
            "colour",
        ),
        (
            json!({"app": "shop", "version": "1", "hosts": [], "started_at": -5}),
            400,
            "started_at",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, error) = api.post("/api/v1/releases", body.clone()).await;
        assert_eq!(got, status, "{body}: {error}");
        let message = error["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (status, list) = api.get("/api/v1/releases").await;
    assert_eq!(status, 200);
    assert_eq!(list["releases"], json!([]), "nothing was half-created");

    assert_eq!(api.get("/api/v1/releases/abc").await.0, 400);
    let (status, error) = api.get("/api/v1/releases/42").await;
    assert_eq!(
        (status, error["error"].as_str()),
        (404, Some("no release 42"))
    );
    assert_eq!(api.get("/api/v1/releases?state=sleeping").await.0, 400);

    let (status, created) = api
        .post(
            "/api/v1/releases",
            json!({"app": "shop", "version": "2", "hosts": ["h1"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().expect("id");
    let (status, error) = api
        .post(
            &format!("/api/v1/releases/{id}/finish"),
            json!({"outcome": "meh"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("rolled_back"),
        "{error}"
    );
    let (status, error) = api
        .post(
            &format!("/api/v1/releases/{id}/batches"),
            json!({"hosts": []}),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = api
        .post(
            &format!("/api/v1/releases/{id}/feedback"),
            json!({"label": "great"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("false_alarm"),
        "{error}"
    );
    let (status, error) = api
        .post(
            &format!("/api/v1/releases/{id}/batches"),
            json!({"hosts": ["h1"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already"),
        "{error}"
    );
    let (_, release) = api.get(&format!("/api/v1/releases/{id}")).await;
    assert_eq!(release["batches"].as_array().map(Vec::len), Some(1));
    assert_eq!(release["feedback"], json!([]));
}

#[tokio::test]
async fn a_release_is_created_batched_judged_finished_and_taught() {
    let api = api().await;
    let end = (now() / 60) * 60;
    history(&api.store, end).await;
    let (status, created) = api
        .post(
            "/api/v1/releases",
            json!({"app": "shop", "version": "2.0.1", "hosts": ["h1"], "started_at": end - 300}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    // The default reference group: the app's other hosts that reported recently.
    assert_eq!(created["reference_hosts"], json!(["h2", "h3"]));
    assert_eq!(created["state"], "watching");
    assert_eq!(created["decision"], "pass");
    assert_eq!(created["outcome"], Value::Null);
    let id = created["id"].as_i64().expect("id");

    let (status, batched) = api
        .post(
            &format!("/api/v1/releases/{id}/batches"),
            json!({"hosts": ["h2"], "at": end - 120}),
        )
        .await;
    assert_eq!(status, 200, "{batched}");
    assert_eq!(
        batched["batches"],
        json!([{"at": end - 300, "hosts": ["h1"]}, {"at": end - 120, "hosts": ["h2"]}])
    );

    let judged = api.releases.round(id, end - 60).await.expect("round");
    assert_eq!(judged.decision, Decision::Pass);
    assert_eq!(judged.last_round, Some(end - 60));
    let (_, got) = api.get(&format!("/api/v1/releases/{id}")).await;
    for key in [
        "id",
        "app",
        "version",
        "state",
        "outcome",
        "decision",
        "decided_at",
        "reasons",
        "batches",
        "reference_hosts",
    ] {
        assert!(got.get(key).is_some(), "{key} missing: {got}");
    }
    assert_eq!(got["decided_at"], json!(end));
    let (status, verdict) = api.get(&format!("/api/v1/releases/{id}/verdict")).await;
    assert_eq!(status, 200);
    assert_eq!(verdict["ok"], true);
    assert_eq!(verdict["decision"], "pass");

    let finish = format!("/api/v1/releases/{id}/finish");
    let (status, finished) = api.post(&finish, json!({"outcome": "success"})).await;
    assert_eq!(status, 200, "{finished}");
    assert_eq!(
        (finished["state"].as_str(), finished["outcome"].as_str()),
        (Some("finished"), Some("success"))
    );
    assert_eq!(
        api.post(&finish, json!({"outcome": "rolled_back"})).await.0,
        409
    );
    let (status, _) = api
        .post(
            &format!("/api/v1/releases/{id}/batches"),
            json!({"hosts": ["h3"]}),
        )
        .await;
    assert_eq!(status, 409);

    let feedback = format!("/api/v1/releases/{id}/feedback");
    let (status, taught) = api
        .post(
            &feedback,
            json!({"label": "confirmed_normal", "note": "fine"}),
        )
        .await;
    assert_eq!(status, 200, "{taught}");
    assert_eq!(taught["feedback"][0]["label"], "confirmed_normal");
    assert_eq!(
        api.post(&feedback, json!({"label": "false_alarm"})).await.0,
        409
    );
    let memory: Value = serde_json::from_str(
        &api.store
            .app_memory("shop")
            .await
            .expect("memory")
            .expect("stored memory"),
    )
    .expect("memory JSON");
    assert_eq!(memory["releases_learned"], 1);
}

#[tokio::test]
async fn releases_are_listed_by_app_and_state() {
    let api = api().await;
    let mut ids = Vec::new();
    for app in ["shop", "shop", "cart"] {
        let (status, r) = api
            .post(
                "/api/v1/releases",
                json!({"app": app, "version": "1", "hosts": [], "reference_hosts": []}),
            )
            .await;
        assert_eq!(status, 201);
        ids.push(r["id"].as_i64().expect("id"));
    }
    api.post(
        &format!("/api/v1/releases/{}/finish", ids[0]),
        json!({"outcome": "rolled_back"}),
    )
    .await;
    let count = |v: &Value| v["releases"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&api.get("/api/v1/releases").await.1), 3);
    assert_eq!(count(&api.get("/api/v1/releases?app=shop").await.1), 2);
    assert_eq!(
        count(&api.get("/api/v1/releases?state=watching").await.1),
        2
    );
    let (_, finished) = api.get("/api/v1/releases?app=shop&state=finished").await;
    assert_eq!(count(&finished), 1);
    assert_eq!(finished["releases"][0]["id"], ids[0]);
    assert_eq!(finished["releases"][0]["outcome"], "rolled_back");
    // Newest first.
    assert_eq!(
        api.get("/api/v1/releases").await.1["releases"][0]["id"],
        ids[2]
    );
}

#[tokio::test]
async fn the_case_of_a_release_replays_to_the_same_decision() {
    let mut api = api().await;
    let end = (now() / 60) * 60;
    history(&api.store, end - 300).await;
    // After the release h1 throws a dangerous exception every minute.
    let mut reports = Vec::new();
    for (i, m) in (0..5).map(|i| (i, end - 300 + i * 60)) {
        reports.push(minute(
            "h1",
            100 + i as u64,
            m,
            100,
            &[(DANGEROUS, 4), (KNOWN, 1)],
        ));
        reports.push(minute("h2", 100 + i as u64, m, 100, &[]));
    }
    api.store.ingest(&reports, now()).await.expect("ingest");
    let (_, created) = api
        .post(
            "/api/v1/releases",
            json!({"app": "shop", "version": "2", "hosts": ["h1"], "reference_hosts": ["h2", "h3"], "started_at": end - 300}),
        )
        .await;
    let id = created["id"].as_i64().expect("id");
    assert_eq!(
        api.get(&format!("/api/v1/releases/{id}/case")).await.0,
        200,
        "a case exists from the first batch"
    );
    let judged = api.releases.round(id, end - 60).await.expect("round");
    assert_eq!(judged.decision, Decision::Block);
    assert_eq!(judged.reasons[0].rule.as_str(), "dangerous_exception");
    let change = api.changes.try_recv().expect("a decision change");
    assert_eq!(
        (change.release_id, change.decision, change.previous_decision),
        (id, Decision::Block, Decision::Pass)
    );

    let (status, case) = api.get(&format!("/api/v1/releases/{id}/case")).await;
    assert_eq!(status, 200, "{case}");
    let cases = parse_cases(case.to_string().as_bytes()).expect("the case parses");
    assert_eq!(cases.len(), 1);
    let parsed = &cases[0];
    assert_eq!(parsed.id, format!("release-{id}"));
    assert!(parsed.known.contains(&KNOWN));
    assert!(!parsed.known.contains(&DANGEROUS));
    assert!(
        parsed
            .definitions
            .get(&DANGEROUS)
            .is_some_and(|d| d.dangerous)
    );
    assert_eq!(parsed.release.until, Some(end));
    assert!(
        parsed.rows.iter().any(|r| r.host == "h3"),
        "reference rows included"
    );
    let replayed = Replayer::default().judge_case(parsed);
    assert_eq!(replayed.decision, Decision::Block);
    assert_eq!(replayed.reasons[0].rule.as_str(), "dangerous_exception");

    let (status, error) = api
        .post(
            "/api/v1/releases",
            json!({"app": "shop", "version": "3", "hosts": []}),
        )
        .await;
    assert_eq!(status, 201, "{error}");
    let empty = error["id"].as_i64().expect("id");
    assert_eq!(
        api.get(&format!("/api/v1/releases/{empty}/case")).await.0,
        409
    );
}

#[tokio::test]
async fn an_alert_blocks_at_once_and_feedback_lifts_a_false_alarm() {
    let mut api = api().await;
    let end = (now() / 60) * 60;
    history(&api.store, end).await;
    let (_, created) = api
        .post(
            "/api/v1/releases",
            json!({"app": "shop", "version": "2", "hosts": ["h1"], "started_at": end - 120}),
        )
        .await;
    let id = created["id"].as_i64().expect("id");
    let definition = Definition {
        class: "java.lang.NoSuchMethodError".into(),
        causes: vec![],
        message: "shop.Promo.apply()V".into(),
        frames: vec!["shop.Checkout.run".into()],
        dangerous: true,
    };
    // An alert from a host the release did not reach changes nothing.
    let alert = |host: &str| StoredAlert {
        app: "shop".into(),
        host: host.into(),
        at: end - 30,
        fingerprint: DANGEROUS,
        definition: definition.clone(),
    };
    api.releases.alert(&alert("h2")).await.expect("alert");
    assert_eq!(
        api.get(&format!("/api/v1/releases/{id}")).await.1["decision"],
        "pass"
    );
    api.releases.alert(&alert("h1")).await.expect("alert");
    let (_, blocked) = api.get(&format!("/api/v1/releases/{id}")).await;
    assert_eq!(blocked["decision"], "block");
    assert_eq!(blocked["decided_at"], end - 30);
    assert_eq!(blocked["reasons"][0]["rule"], "dangerous_exception");
    assert_eq!(blocked["reasons"][0]["hosts"], json!(["h1"]));
    assert_eq!(
        blocked["reasons"][0]["fingerprint"],
        format!("{DANGEROUS:016x}")
    );
    let (_, verdict) = api.get(&format!("/api/v1/releases/{id}/verdict")).await;
    assert_eq!(
        (verdict["ok"].as_bool(), verdict["decision"].as_str()),
        (Some(false), Some("block"))
    );
    let change = api.changes.try_recv().expect("block posted");
    assert_eq!(change.decision, Decision::Block);

    // Sticky: a round does not lift it.
    let judged = api.releases.round(id, end - 60).await.expect("round");
    assert_eq!(judged.decision, Decision::Block);
    // Feedback does.
    let (status, lifted) = api
        .post(
            &format!("/api/v1/releases/{id}/feedback"),
            json!({"label": "false_alarm"}),
        )
        .await;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["decision"], "pass");
    let change = api.changes.try_recv().expect("lift posted");
    assert_eq!(
        (change.decision, change.previous_decision),
        (Decision::Pass, Decision::Block)
    );
    // The fingerprint is benign for this app now: the same alert blocks no more.
    api.releases.alert(&alert("h1")).await.expect("alert");
    assert_eq!(
        api.get(&format!("/api/v1/releases/{id}")).await.1["decision"],
        "pass"
    );
    // Both changes are logged, newest first, the block with its reason and time; the
    // sticky round changed nothing and logged nothing.
    let log = api.store.decisions(Some(id), 10).await.expect("decisions");
    let steps: Vec<_> = log.iter().map(|d| (d.previous, d.decision)).collect();
    assert_eq!(
        steps,
        [
            (Decision::Block, Decision::Pass),
            (Decision::Pass, Decision::Block)
        ]
    );
    assert_eq!(log[1].at, end - 30);
    assert!(
        log[1]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("dangerous_exception: java.lang.NoSuchMethodError")),
        "{log:?}"
    );
    assert_eq!(
        api.store.decisions(None, 1).await.expect("decisions").len(),
        1
    );
    assert!(
        api.store
            .decisions(Some(id + 1), 10)
            .await
            .expect("decisions")
            .is_empty()
    );
}

#[tokio::test]
async fn release_routes_need_the_bearer_token_when_configured() {
    let api = api().await;
    let router = router(Arc::new(ApiState::new(
        Arc::clone(&api.store),
        Arc::clone(&api.releases),
        Some("s3cret".into()),
    )));
    let create = |token: Option<&str>| {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/releases")
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request
            .body(Body::from(
                json!({"app": "shop", "version": "1", "hosts": []}).to_string(),
            ))
            .expect("request")
    };
    let refused = router
        .clone()
        .oneshot(create(None))
        .await
        .expect("response");
    assert_eq!(refused.status().as_u16(), 401);
    let wrong = router
        .clone()
        .oneshot(create(Some("guess")))
        .await
        .expect("response");
    assert_eq!(wrong.status().as_u16(), 401);
    let created = router
        .oneshot(create(Some("s3cret")))
        .await
        .expect("response");
    assert_eq!(created.status().as_u16(), 201);
}

#[tokio::test]
async fn rounds_judge_watching_releases_only_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let end = (now() / 60) * 60;
    let (watching, finished) = {
        let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
        history(&store, end).await;
        let releases = Releases::new(Arc::clone(&store), None);
        let mut ids = Vec::new();
        for _ in 0..2 {
            let r = releases
                .create(
                    serde_json::from_value(json!({"app": "shop", "version": "2", "hosts": ["h1"], "started_at": end - 600}))
                        .expect("request"),
                    end,
                )
                .await
                .expect("create");
            ids.push(r.id);
        }
        releases
            .finish(
                ids[1],
                serde_json::from_value(json!({"outcome": "success"})).expect("request"),
                end,
            )
            .await
            .expect("finish");
        releases.round_all(end - 60).await.expect("rounds");
        (ids[0], ids[1])
    };
    // The judge's state is in the store: a new detector carries on from it.
    let store = Arc::new(SqliteStore::open(dir.path()).await.expect("reopen"));
    let releases = Releases::new(Arc::clone(&store), None);
    let judged = releases.get(watching).await.expect("get");
    assert_eq!(judged.last_round, Some(end - 60));
    assert_eq!(judged.decision, Decision::Pass);
    assert!(
        store
            .release(watching)
            .await
            .expect("release")
            .and_then(|r| r.judge)
            .is_some()
    );
    assert_eq!(releases.get(finished).await.expect("get").last_round, None);
    // Nothing to catch up: the same minute again changes nothing.
    let again = releases.round(watching, end - 60).await.expect("round");
    assert_eq!(again.last_round, Some(end - 60));
}

#[tokio::test]
async fn the_series_api_is_bounded_and_reads_hourly_roll_ups() {
    let api = api().await;
    // 197 minutes of 256 apps on one host: 50,432 minute rows, more than one answer holds.
    let start = (now() - 4 * 3600) / 3600 * 3600;
    let reports: Vec<Report> = (0..197u64)
        .map(|i| Report {
            protocol_version: vigil_proto::PROTOCOL_VERSION,
            host: "web-1".into(),
            instance: "bounded".into(),
            agent_version: "0.1.0".into(),
            fingerprint_version: 2,
            seq: i + 1,
            sent_at: now(),
            body: Some(ReportBody::Minute(MinuteReport {
                minute: start + i as i64 * 60,
                apps: (0..256)
                    .map(|a| AppCounters {
                        app: format!("app-{a}"),
                        lines: 10,
                        ..Default::default()
                    })
                    .collect(),
                host_metrics: None,
            })),
        })
        .collect();
    api.store.ingest(&reports, now()).await.expect("ingest");

    let (status, body) = api.get("/api/v1/series").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("more than 50000 rows") && e.contains("narrow it")),
        "{body}"
    );
    let (status, body) = api.get("/api/v1/series?app=app-7&host=web-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["minutes"].as_array().map(Vec::len), Some(197));

    // Older minutes rolled up by retention are read by the hour.
    let policy = vigil_detector::config::Retention {
        minutes_secs: 3600,
        hourly_secs: 400 * 86_400,
    };
    api.store
        .retain(&policy, start + 197 * 60 + 3600)
        .await
        .expect("retention");
    let (status, body) = api.get("/api/v1/series?app=app-7&resolution=hour").await;
    assert_eq!(status, 200, "{body}");
    let hours = body["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 3, "{body}");
    assert_eq!(
        (&hours[0]["hour"], &hours[0]["minutes"], &hours[0]["lines"]),
        (&json!(start), &json!(60), &json!(600))
    );
    let rolled: u64 = hours.iter().filter_map(|h| h["minutes"].as_u64()).sum();
    let (_, left) = api.get("/api/v1/series?app=app-7").await;
    assert_eq!(
        rolled + left["minutes"].as_array().map_or(0, |m| m.len() as u64),
        197,
        "every minute is in an hour or still a minute: {left}"
    );
    let (status, body) = api.get("/api/v1/series?resolution=day").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("resolution \"day\"")),
        "{body}"
    );
}

#[tokio::test]
async fn a_configured_false_block_budget_reaches_the_judges_of_releases_judged_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
    let config = vigil_detector::config::DetectorConfig::parse(
        std::path::Path::new("detector.toml"),
        "[judge]\nfalse_block_budget = 0.001\n",
    )
    .expect("config");
    let params = config.judge_params().expect("params");
    let minute = (now() - 600) / 60 * 60;
    let judged_with = |releases: Arc<Releases<SqliteStore>>, version: &'static str| {
        let store = Arc::clone(&store);
        async move {
            let release = releases
                .create(
                    serde_json::from_value(json!({
                        "app": "shop", "version": version, "hosts": ["h1"],
                        "reference_hosts": ["h2"], "started_at": minute,
                    }))
                    .expect("request"),
                    now(),
                )
                .await
                .expect("created");
            releases
                .round(release.id, minute + 120)
                .await
                .expect("round");
            let stored = store
                .release(release.id)
                .await
                .expect("read")
                .expect("there");
            stored.judge.unwrap_or_default()
        }
    };
    let configured = Arc::new(Releases::new(Arc::clone(&store), None).with_params(params));
    let state = judged_with(Arc::clone(&configured), "2.0").await;
    assert!(state.contains("\"false_block_budget\":0.001"), "{state}");
    // Another detector on the defaults judges a new release with the default budget, and
    // the first release keeps the one it was judged with.
    let defaults = Arc::new(Releases::new(Arc::clone(&store), None));
    let state = judged_with(Arc::clone(&defaults), "2.1").await;
    assert!(state.contains("\"false_block_budget\":0.01"), "{state}");
    defaults.round(1, minute + 240).await.expect("round");
    let first = store.release(1).await.expect("read").expect("there");
    assert!(
        first
            .judge
            .unwrap_or_default()
            .contains("\"false_block_budget\":0.001")
    );
}
