//! Hostile input at the detector's boundaries, over real sockets on 127.0.0.1: reports
//! that would overflow sums, collide sequence numbers, forge log lines or bloat a commit;
//! API calls that would make a round's memory explode (a release started in 1970), hold
//! the runtime with tens of thousands of hosts, smuggle an open redirect past sign-in or
//! name release 1 as `+1`; and token guessing. Each is refused with a reason that says
//! what, and the detector keeps serving.

mod support;

use std::time::{Duration, Instant};
use support::{Running, STEP_TIMEOUT, within};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};
use vigil_proto::v1::collector_client::CollectorClient;
use vigil_proto::v1::{
    Ack, AckStatus, Alert, AppCounters, ExceptionCount, ExceptionDefinition, Report, report::Body,
};

fn now() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    i64::try_from(secs).expect("time")
}

/// A blocking HTTP call on its own thread: status and body.
/// A detector in a fresh directory.
async fn start(extra: &str, token: Option<&str>) -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = support::start(dir.path(), extra, token).await;
    (dir, running)
}

async fn http(
    method: &'static str,
    url: String,
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
) -> (u16, String) {
    let call = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(STEP_TIMEOUT))
            .build()
            .new_agent();
        let response = match (method, body) {
            ("POST", Some(body)) => {
                let mut r = agent.post(&url);
                for (k, v) in &headers {
                    r = r.header(*k, v);
                }
                r.send(body.as_bytes())
            }
            _ => {
                let mut r = agent.get(&url);
                for (k, v) in &headers {
                    r = r.header(*k, v);
                }
                r.call()
            }
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, location.map_or(text, |l| format!("location: {l}")))
    });
    within("an HTTP answer", call).await.expect("HTTP thread")
}

async fn post_json(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http(
        "POST",
        format!("{base}{path}"),
        Some(body.to_string()),
        vec![("content-type", "application/json".into())],
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn minute_report(seq: u64, minute: i64) -> Report {
    support::minute_report("hostile", seq, minute, 10)
}

fn app_of(r: &mut Report) -> &mut AppCounters {
    match &mut r.body {
        Some(Body::Minute(m)) => &mut m.apps[0],
        _ => panic!("a minute report"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_reports_are_rejected_with_a_reason_and_the_stream_goes_on() {
    let (_dir, running) = start("", None).await;
    let minute = now() / 60 * 60;
    let mut cases: Vec<(Report, &str)> = Vec::new();

    let mut r = minute_report(1, minute);
    r.seq = u64::MAX;
    cases.push((r, "seq 18446744073709551615"));
    let mut r = minute_report(2, minute);
    app_of(&mut r).exceptions = vec![ExceptionCount {
        fingerprint: 7,
        count: i64::MAX as u64,
    }];
    cases.push((r, "exception count"));
    let mut r = minute_report(3, minute);
    app_of(&mut r).lines = u64::MAX;
    cases.push((r, "lines"));
    let mut r = minute_report(4, minute);
    app_of(&mut r).exceptions = (0..20_000)
        .map(|fingerprint| ExceptionCount {
            fingerprint,
            count: 1,
        })
        .collect();
    cases.push((r, "fingerprint counts"));
    let mut r = minute_report(5, minute);
    app_of(&mut r).app = "shop\n2026-11-29T00:00:00Z ERROR forged line".into();
    cases.push((r, "control characters"));
    let mut r = minute_report(6, minute);
    r.host = "web\r\n1".into();
    cases.push((r, "control characters"));
    cases.push((
        minute_report(7, -9_200_000_000_000_000_000 / 60 * 60),
        "in the past",
    ));
    cases.push((
        minute_report(8, minute + 10 * 365 * 86_400),
        "in the future",
    ));
    let alert = |seq, at| Report {
        body: Some(Body::Alert(Alert {
            app: "shop".into(),
            at,
            definition: Some(ExceptionDefinition {
                fingerprint: 9,
                class: "java.lang.NoSuchMethodError".into(),
                dangerous: true,
                ..Default::default()
            }),
            count: 1,
        })),
        ..minute_report(seq, minute)
    };
    cases.push((alert(9, i64::MIN), "alert at"));
    cases.push((alert(10, now() + 10 * 365 * 86_400), "alert at"));
    let mut r = minute_report(11, minute);
    app_of(&mut r).definitions = vec![ExceptionDefinition {
        fingerprint: 1,
        class: "x".into(),
        sample: "y".repeat(100_000),
        ..Default::default()
    }];
    cases.push((r, "bytes, more than"));

    let mut client = CollectorClient::new(running.channel.clone());
    let (tx, rx) = mpsc::channel(64);
    let mut acks = within(
        "the detector to answer the stream",
        client.stream(Request::new(ReceiverStream::new(rx))),
    )
    .await
    .expect("stream")
    .into_inner();
    let expected: Vec<(u64, String)> = cases
        .iter()
        .map(|(r, why)| (r.seq, (*why).to_owned()))
        .collect();
    for (r, _) in cases {
        tx.send(r).await.expect("send");
    }
    // A good report after all of them is stored.
    tx.send(minute_report(12, minute)).await.expect("send");
    for (seq, why) in expected {
        let ack: Ack = within("an ack", acks.message())
            .await
            .expect("ack")
            .expect("open stream");
        assert_eq!(ack.seq, seq);
        assert_eq!(ack.status(), AckStatus::Rejected, "seq {seq}: {ack:?}");
        assert!(
            ack.error.contains(&why),
            "seq {seq}: {:?} lacks {why:?}",
            ack.error
        );
    }
    let ack = within("the last ack", acks.message())
        .await
        .expect("ack")
        .expect("open stream");
    assert_eq!((ack.seq, ack.status()), (12, AckStatus::Stored));

    // The board and the series read fine.
    let (status, body) = http(
        "GET",
        format!("{}/api/v1/series", running.http),
        None,
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let series: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(series["minutes"][0]["lines"], 10);
    let (status, _) = http("GET", format!("{}/", running.http), None, vec![]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_api_calls_are_refused_and_large_ones_stay_fast() {
    let (_dir, running) = start("[limits]\nmax_hosts_per_release = 100000\n", None).await;
    let base = running.http.clone();
    let t = now();

    // A release started in 1970 (a round over 29 million minutes) is refused; 23 h is fine.
    let (status, body) = post_json(
        &base,
        "/api/v1/releases",
        &json!({"app": "shop", "version": "2", "hosts": ["a"], "started_at": 1}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("limits.max_backdate"),
        "{body}"
    );
    let (status, body) = post_json(
        &base,
        "/api/v1/releases",
        &json!({"app": "shop", "version": "2", "hosts": ["a"], "started_at": t - 23 * 3600}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().expect("id");
    let (status, body) = post_json(
        &base,
        &format!("/api/v1/releases/{id}/batches"),
        &json!({"hosts": ["b"], "at": 5}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Names that would forge log lines.
    let (status, body) = post_json(
        &base,
        "/api/v1/releases",
        &json!({"app": "shop\nERROR forged", "version": "2", "hosts": []}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_json(
        &base,
        "/api/v1/releases",
        &json!({"app": "shop", "version": "2", "hosts": ["h\u{1b}[2J"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Release ids are written one way only.
    for path in ["+1", "01", "-1", "1e0", " 1"] {
        let (status, body) = http(
            "GET",
            format!("{base}/api/v1/releases/{}", path.replace(' ', "%20")),
            None,
            vec![],
        )
        .await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, _) = http("GET", format!("{base}/api/v1/releases/{id}"), None, vec![]).await;
    assert_eq!(status, 200);

    // 40,000 + 40,000 hosts: accepted quickly, while liveness answers at once.
    let hosts: Vec<String> = (0..40_000).map(|i| format!("rel-{i}")).collect();
    let reference: Vec<String> = (0..40_000).map(|i| format!("ref-{i}")).collect();
    let big = json!({"app": "big", "version": "2", "hosts": hosts, "reference_hosts": reference});
    let started = Instant::now();
    let create = tokio::spawn({
        let base = base.clone();
        async move { post_json(&base, "/api/v1/releases", &big).await }
    });
    let mut worst_health = Duration::ZERO;
    while !create.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the 80,000-host release was not created within 120 s"
        );
        let asked = Instant::now();
        let (status, _) = http("GET", format!("{base}/healthz"), None, vec![]).await;
        assert_eq!(status, 200);
        worst_health = worst_health.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = create.await.expect("create");
    let took = started.elapsed();
    assert_eq!(status, 201, "{}", body["error"]);
    let big_id = body["id"].as_i64().expect("id");
    let more: Vec<String> = (0..19_999).map(|i| format!("more-{i}")).collect();
    let (status, body) = post_json(
        &base,
        &format!("/api/v1/releases/{big_id}/batches"),
        &json!({"hosts": more}),
    )
    .await;
    assert_eq!(status, 200, "{}", body["error"]);
    let (status, body) = post_json(
        &base,
        &format!("/api/v1/releases/{big_id}/batches"),
        &json!({"hosts": ["one-too-many", "and-another"]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("max_hosts_per_release"),
        "{body}"
    );
    eprintln!(
        "80,000-host release created in {took:?}; slowest /healthz meanwhile {worst_health:?}"
    );
    assert!(
        worst_health < Duration::from_secs(1),
        "/healthz took {worst_health:?} while a large release was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_follows_local_paths_only_and_token_guessing_is_limited() {
    let (_dir, running) = start("", Some("s3cret-token")).await;
    let base = running.http.clone();
    let form = |token: &str, next: &str| format!("token={token}&next={next}");
    let headers = || {
        vec![(
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        )]
    };
    for next in [
        "%2F%09%2Fevil.example%2F",
        "%2F%5Cevil.example",
        "%2F%0D%0ASet-Cookie:x=1",
    ] {
        let (status, location) = http(
            "POST",
            format!("{base}/signin"),
            Some(form("s3cret-token", next)),
            headers(),
        )
        .await;
        assert_eq!(
            (status, location.as_str()),
            (303, "location: /"),
            "next={next}"
        );
    }
    // Guessing: after a few failures the address is refused without a check, on both
    // ports, and then for the right token too until the window ends.
    let mut limited = 0;
    for i in 0..40 {
        let (status, _) = http(
            "GET",
            format!("{base}/api/v1/apps"),
            None,
            vec![("authorization", format!("Bearer guess-{i}"))],
        )
        .await;
        assert!(status == 401 || status == 429, "guess {i}: {status}");
        if status == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 15, "only {limited} of 40 guesses were limited");
    let mut client = CollectorClient::new(running.channel.clone());
    let (_tx, rx) = mpsc::channel::<Report>(1);
    let mut request = Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", "Bearer guess".parse().expect("header"));
    let status = within("the detector to answer", client.stream(request))
        .await
        .expect_err("limited");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// A stream of reports of `host` on its own connection; returns the sender and the acks.
async fn open_stream(running: &Running) -> (mpsc::Sender<Report>, tonic::codec::Streaming<Ack>) {
    let mut client = CollectorClient::new(running.channel.clone());
    let (tx, rx) = mpsc::channel(512);
    let acks = within(
        "the detector to answer the stream",
        client.stream(Request::new(ReceiverStream::new(rx))),
    )
    .await
    .expect("stream")
    .into_inner();
    (tx, acks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sending_heavy_reports_does_not_hold_up_the_others() {
    let (_dir, running) = start("", None).await;
    let minute = now() / 60 * 60;
    // 40 reports of 20,000 fingerprint counts each (the most a report may hold).
    let heavy = move |seq: u64| {
        let mut r = minute_report(seq, minute);
        r.instance = "heavy".into();
        r.host = "heavy-1".into();
        if let Some(Body::Minute(m)) = &mut r.body {
            m.apps = (0..2)
                .map(|a| AppCounters {
                    app: format!("app-{a}"),
                    lines: 1,
                    exceptions: (0..10_000)
                        .map(|i| ExceptionCount {
                            fingerprint: seq * 1_000_000 + a * 100_000 + i,
                            count: 1,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect();
        }
        r
    };
    let (heavy_tx, mut heavy_acks) = open_stream(&running).await;
    let (light_tx, mut light_acks) = open_stream(&running).await;
    let heavy_reports = 40u64;
    let sender = tokio::spawn(async move {
        for seq in 1..=heavy_reports {
            if heavy_tx.send(heavy(seq)).await.is_err() {
                break;
            }
        }
        heavy_tx
    });
    // Let the heavy agent fill its share of the queue, then time a light report.
    let first = within("the first heavy ack", heavy_acks.message()).await;
    assert_eq!(
        first.expect("ack").expect("open").status(),
        AckStatus::Stored
    );
    let asked = Instant::now();
    light_tx.send(minute_report(1, minute)).await.expect("send");
    let ack = within("the light report's ack", light_acks.message())
        .await
        .expect("ack")
        .expect("open");
    let light_wait = asked.elapsed();
    assert_eq!(ack.status(), AckStatus::Stored);
    let heavy_started = Instant::now();
    for _ in 1..heavy_reports {
        let ack = within("a heavy ack", heavy_acks.message())
            .await
            .expect("ack")
            .expect("open");
        assert_eq!(ack.status(), AckStatus::Stored);
    }
    let heavy_rest = heavy_started.elapsed();
    drop(sender.await);
    eprintln!(
        "light report acknowledged after {light_wait:?}; the heavy agent's remaining {} reports took {heavy_rest:?}",
        heavy_reports - 1
    );
    assert!(
        light_wait * 4 < heavy_rest,
        "the light report waited {light_wait:?}, a large part of the heavy agent's {heavy_rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_app_names_keep_the_board_small() {
    let (_dir, running) = start("", None).await;
    let minute = now() / 60 * 60;
    let (tx, mut acks) = open_stream(&running).await;
    // 8 reports of 250 apps each: 2,000 app names from one agent.
    for seq in 1..=8u64 {
        let mut r = minute_report(seq, minute);
        if let Some(Body::Minute(m)) = &mut r.body {
            m.apps = (0..250)
                .map(|i| AppCounters {
                    app: format!("app-{seq}-{i:03}"),
                    lines: 1,
                    ..Default::default()
                })
                .collect();
        }
        tx.send(r).await.expect("send");
    }
    for _ in 0..8 {
        let ack = within("an ack", acks.message())
            .await
            .expect("ack")
            .expect("open");
        assert_eq!(ack.status(), AckStatus::Stored);
    }
    let started = Instant::now();
    let (status, body) = http("GET", format!("{}/", running.http), None, vec![]).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        body.contains("2000 apps"),
        "the board does not count every app"
    );
    assert!(
        body.contains("1700 more apps are not shown"),
        "the board does not say what it left out"
    );
    assert!(body.len() < 2_000_000, "the board is {} bytes", body.len());
    eprintln!("board with 2,000 apps: {} bytes in {took:?}", body.len());
}
