//! The pages over HTTP with a real SQLite store: sign-in when a token is set, pages that
//! say what is wrong, security headers, and a release page built from stored counters
//! (missing minutes drawn as gaps, log text escaped). `tests/pages.rs` at the workspace
//! root opens the same pages in Chromium.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, header};
use tower::ServiceExt;
use vigil_detector::api::{ApiState, router};
use vigil_detector::judge::Definition;
use vigil_detector::release::{CreateRelease, Releases, StoredAlert};
use vigil_detector::store::{SqliteStore, Store};
use vigil_proto::v1::report::Body as ReportBody;
use vigil_proto::v1::{AppCounters, ExceptionCount, ExceptionDefinition, MinuteReport, Report};

const FINGERPRINT: u64 = 0x51c0_ffee_0bad_f00d;
const HOSTILE: &str = "<script>alert('pwned')</script>";
const LONG_CLASS: &str = "com.example.checkout.payment.gateway.internal.adapters.legacy.AbstractSingletonProxyFactoryBeanConfigurationNoSuchMethodError";

struct Pages {
    router: Router,
    store: Arc<SqliteStore>,
    releases: Arc<Releases<SqliteStore>>,
    _dir: tempfile::TempDir,
}

async fn pages(token: Option<&str>) -> Pages {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
    let releases = Arc::new(Releases::new(Arc::clone(&store), None));
    let router = router(Arc::new(ApiState::new(
        Arc::clone(&store),
        Arc::clone(&releases),
        token.map(str::to_owned),
    )));
    Pages {
        router,
        store,
        releases,
        _dir: dir,
    }
}

impl Pages {
    async fn send(&self, request: Request<Body>) -> (Response<Body>, String) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("response");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20).await.expect("body");
        (
            Response::from_parts(parts, Body::empty()),
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    async fn get(&self, uri: &str, cookie: Option<&str>) -> (Response<Body>, String) {
        let mut request = Request::builder().method(Method::GET).uri(uri);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::empty()).expect("request"))
            .await
    }

    async fn sign_in(&self, form: &str) -> (Response<Body>, String) {
        self.send(
            Request::builder()
                .method(Method::POST)
                .uri("/signin")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form.to_owned()))
                .expect("request"),
        )
        .await
    }
}

fn header_of(response: &Response<Body>, name: header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// `host`'s counters for `minute`: 100 lines, and `count` of the exception when not 0.
fn report(host: &str, seq: u64, minute: i64, count: u64) -> Report {
    let exceptions = if count > 0 {
        vec![ExceptionCount {
            fingerprint: FINGERPRINT,
            count,
        }]
    } else {
        Vec::new()
    };
    let definitions = if count > 0 {
        vec![ExceptionDefinition {
            fingerprint: FINGERPRINT,
            class: LONG_CLASS.into(),
            causes: vec!["java.lang.IllegalStateException".into()],
            message: format!("cart {HOSTILE}"),
            frames: vec!["com.example.checkout.Cart.pay".into()],
            dangerous: true,
            sample: format!(
                "{LONG_CLASS}: cart {HOSTILE}\n\tat com.example.checkout.Cart.pay(Cart.java:12)"
            ),
        }]
    } else {
        Vec::new()
    };
    Report {
        protocol_version: vigil_proto::PROTOCOL_VERSION,
        host: host.into(),
        instance: format!("instance-{host}"),
        agent_version: "0.1.0".into(),
        fingerprint_version: 1,
        seq,
        sent_at: minute + 61,
        body: Some(ReportBody::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: "shop".into(),
                lines: 100,
                exceptions,
                definitions,
                ..Default::default()
            }],
            host_metrics: None,
        })),
    }
}

#[tokio::test]
async fn with_a_token_the_pages_need_a_sign_in_that_the_api_accepts_too() {
    let pages = pages(Some("s3 cret;")).await;
    let (refused, body) = pages.get("/releases?app=shop", None).await;
    assert_eq!(refused.status().as_u16(), 401);
    assert!(
        body.contains(r#"<form class="signin" method="post" action="/signin">"#),
        "{body}"
    );
    assert!(body.contains(r#"value="/releases?app=shop""#), "{body}");
    assert!(header_of(&refused, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));

    let (wrong, body) = pages.sign_in("token=guess&next=%2F").await;
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(body.contains("That token is not the detector"), "{body}");
    assert!(header_of(&wrong, header::SET_COOKIE).is_empty());

    let (signed, _) = pages
        .sign_in("token=s3+cret%3B&next=%2Freleases%3Fapp%3Dshop")
        .await;
    assert_eq!(signed.status().as_u16(), 303);
    assert_eq!(header_of(&signed, header::LOCATION), "/releases?app=shop");
    let cookie = header_of(&signed, header::SET_COOKIE);
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or_default().to_owned();
    // A random session id, never the token (a cookie is not scoped by port).
    let id = pair.strip_prefix("vigil_session=").unwrap_or_default();
    assert!(
        id.len() >= 32 && !cookie.contains("cret"),
        "session cookie {cookie:?}"
    );

    let (board, body) = pages.get("/", Some(&pair)).await;
    assert_eq!(board.status().as_u16(), 200, "{body}");
    assert!(body.contains("Health board"), "{body}");
    // The buttons' API calls carry the same cookie.
    let (created, body) = pages
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/api/v1/releases")
                .header(header::COOKIE, &pair)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"app":"shop","version":"2","hosts":[]}"#))
                .expect("request"),
        )
        .await;
    assert_eq!(created.status().as_u16(), 201, "{body}");
    let (other, _) = pages.get("/", Some("vigil_session=guess")).await;
    assert_eq!(other.status().as_u16(), 401);
    let (raw_token, _) = pages.get("/", Some("vigil_session=s3 cret;")).await;
    assert_eq!(raw_token.status().as_u16(), 401);

    // Only local paths are followed after signing in: browsers strip a tab or newline
    // and read a backslash as a slash, so those go to the board too.
    for next in [
        "%2F%2Fevil.example%2F",
        "%2F%09%2Fevil.example%2F",
        "%2F%0A%2Fevil.example%2F",
        "%2F%5Cevil.example%2F",
        "%2F+%2Fevil.example",
    ] {
        let (away, _) = pages
            .sign_in(&format!("token=s3+cret%3B&next={next}"))
            .await;
        assert_eq!(away.status().as_u16(), 303, "next={next}");
        assert_eq!(header_of(&away, header::LOCATION), "/", "next={next}");
    }
    // The script and style need no token: they hold no data.
    let (js, body) = pages.get("/assets/vigil.js", None).await;
    assert_eq!(js.status().as_u16(), 200);
    assert!(header_of(&js, header::CONTENT_TYPE).starts_with("text/javascript"));
    assert!(
        body.contains("data-action") || body.contains("button[data-action]"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_page_requests_get_a_page_that_says_what_is_wrong() {
    let pages = pages(None).await;
    for (uri, status, says) in [
        ("/releases/abc", 404, "&quot;abc&quot; is not a release id"),
        ("/releases/0", 404, "&quot;0&quot; is not a release id"),
        ("/releases/42", 404, "The detector has no release 42."),
        (
            "/releases?state=done",
            400,
            "state &quot;done&quot; is not watching or finished",
        ),
        (
            "/releases?decision=stop",
            400,
            "decision &quot;stop&quot; is not pass, watch or block",
        ),
        (
            "/nowhere/%3Cb%3E",
            404,
            "The detector has no page at /nowhere/%3Cb%3E.",
        ),
    ] {
        let (response, body) = pages.get(uri, None).await;
        assert_eq!(response.status().as_u16(), status, "{uri}: {body}");
        assert!(body.contains(says), "{uri}: {body}");
        assert!(
            header_of(&response, header::CONTENT_TYPE).starts_with("text/html"),
            "{uri}"
        );
        assert_eq!(
            header_of(&response, header::CACHE_CONTROL),
            "no-store",
            "{uri}"
        );
    }
    let (empty, body) = pages.get("/", None).await;
    assert_eq!(empty.status().as_u16(), 200);
    assert!(body.contains("No agent has reported yet."), "{body}");
    assert!(body.contains("No release is being watched."), "{body}");
    assert_eq!(header_of(&empty, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
}

#[tokio::test]
async fn a_release_page_draws_missing_minutes_as_gaps_and_shows_log_text_as_text() {
    let pages = pages(None).await;
    let end = now() / 60 * 60;
    let release_at = end - 5 * 60;
    // h1 (released) and h2 (reference) for 15 minutes; h2 is silent for 3 of them.
    let mut reports = Vec::new();
    for i in 0..15u64 {
        let minute = end - (15 - i as i64) * 60;
        let broken = minute >= release_at;
        reports.push(report("h1", i + 1, minute, if broken { 3 } else { 0 }));
        if !(6..9).contains(&i) {
            reports.push(report("h2", i + 1, minute, 0));
        }
    }
    pages.store.ingest(&reports, now()).await.expect("ingest");
    let release = pages
        .releases
        .create(
            CreateRelease {
                app: "shop".into(),
                version: "2.0.1".into(),
                hosts: vec!["h1".into()],
                reference_hosts: Some(vec!["h2".into()]),
                started_at: Some(release_at),
            },
            now(),
        )
        .await
        .expect("release");
    pages
        .releases
        .alert(&StoredAlert {
            app: "shop".into(),
            host: "h1".into(),
            at: release_at + 30,
            fingerprint: FINGERPRINT,
            definition: Definition {
                class: LONG_CLASS.into(),
                causes: vec!["java.lang.IllegalStateException".into()],
                message: format!("cart {HOSTILE}"),
                frames: vec!["com.example.checkout.Cart.pay".into()],
                dangerous: true,
            },
        })
        .await
        .expect("alert");
    // The agent's alerts, as stored by ingest: four occurrences on h1, sent before the
    // minutes' counters.
    let alert = |seq: u64, at: i64, count: u64| Report {
        protocol_version: vigil_proto::PROTOCOL_VERSION,
        host: "h1".into(),
        instance: "instance-h1".into(),
        agent_version: "0.1.0".into(),
        fingerprint_version: 1,
        seq,
        sent_at: at,
        body: Some(ReportBody::Alert(vigil_proto::v1::Alert {
            app: "shop".into(),
            at,
            definition: Some(ExceptionDefinition {
                fingerprint: FINGERPRINT,
                class: LONG_CLASS.into(),
                dangerous: true,
                ..Default::default()
            }),
            count,
        })),
    };
    pages
        .store
        .ingest(
            &[
                alert(100, release_at + 30, 1),
                alert(101, release_at + 95, 3),
            ],
            now(),
        )
        .await
        .expect("ingest alerts");

    let (response, body) = pages.get(&format!("/releases/{}", release.id), None).await;
    assert_eq!(response.status().as_u16(), 200, "{body}");
    assert!(
        body.contains(r#"<p class="decision" id="decision">BLOCK</p>"#),
        "{body}"
    );
    assert!(!body.contains(HOSTILE), "log text written as HTML: {body}");
    // What the alerts know, ahead of the minutes' counters.
    assert!(body.contains("alerts: 4 occurrences on h1"), "{body}");
    assert!(
        body.contains("ahead of the minutes&#39; counters")
            || body.contains("ahead of the minutes' counters"),
        "{body}"
    );
    assert!(
        body.contains("cart &lt;script&gt;alert('pwned')&lt;/script&gt;"),
        "{body}"
    );
    assert!(
        body.contains(&format!(r#"<code class="class">{LONG_CLASS}</code>"#)),
        "{body}"
    );
    assert!(
        body.contains(r#"caused by <code class="class">java.lang.IllegalStateException</code>"#),
        "{body}"
    );
    assert!(
        body.contains("at com.example.checkout.Cart.pay(Cart.java:12)"),
        "{body}"
    );

    // The exception's chart: 15 minutes of h1 and 12 of h2 (the page ends at the last
    // completed minute), h2's silence a gap in its line, not zeros.
    let id = format!(r#"id="chart-fp-{FINGERPRINT:016x}""#);
    let at = body
        .find(&id)
        .unwrap_or_else(|| panic!("no exception chart: {body}"));
    let figure = &body[at..at + body[at..].find("</figure>").expect("figure end")];
    assert!(figure.contains(r#"data-points="27""#), "{figure}");
    assert!(figure.contains(r#"data-max="3""#), "{figure}");
    let reference = &figure[figure
        .find(r#"<g class="line-reference">"#)
        .expect("reference line")..];
    let reference = &reference[..reference.find("</g>").expect("group end")];
    assert_eq!(
        reference.matches("<polyline").count(),
        2,
        "the gap splits the line: {reference}"
    );
    assert!(
        figure.contains("<td>–</td>"),
        "missing minutes in the table: {figure}"
    );
    assert!(
        figure.contains(r#"<g class="marker"><title>batch 1 at "#),
        "{figure}"
    );

    // The board and the list show it too.
    let (_, board) = pages.get("/", None).await;
    assert!(
        board.contains(&format!(r#"href="/releases/{}""#, release.id)),
        "{board}"
    );
    assert!(
        board.contains("1 of 2 hosts reporting") || board.contains("2 of 2 hosts reporting"),
        "{board}"
    );
    assert!(!board.contains(HOSTILE), "{board}");
    let (_, list) = pages
        .get("/releases?app=shop&state=watching&decision=block", None)
        .await;
    assert!(list.contains("1 of 1 releases"), "{list}");
}

#[tokio::test]
async fn a_release_page_charts_the_apps_process_cpu_and_memory_when_agents_send_them() {
    let pages = pages(None).await;
    let end = now() / 60 * 60;
    let release_at = end - 4 * 60;
    let mut reports = Vec::new();
    for i in 0..8u64 {
        let minute = end - (8 - i as i64) * 60;
        for (host, busy) in [("h1", minute >= release_at), ("h2", false)] {
            let mut r = report(host, i + 1, minute, 0);
            if let Some(ReportBody::Minute(m)) = r.body.as_mut() {
                m.apps[0].process_cpu_pct = Some(if busy { 180.0 } else { 40.0 });
                m.apps[0].process_rss_bytes = Some(if busy { 1536 } else { 512 } << 20);
            }
            reports.push(r);
        }
    }
    pages.store.ingest(&reports, now()).await.expect("ingest");
    let release = pages
        .releases
        .create(
            CreateRelease {
                app: "shop".into(),
                version: "2.0.2".into(),
                hosts: vec!["h1".into()],
                reference_hosts: Some(vec!["h2".into()]),
                started_at: Some(release_at),
            },
            now(),
        )
        .await
        .expect("release");
    let (response, body) = pages.get(&format!("/releases/{}", release.id), None).await;
    assert_eq!(response.status().as_u16(), 200, "{body}");
    let figure = |id: &str| {
        let at = body
            .find(&format!(r#"id="{id}""#))
            .unwrap_or_else(|| panic!("no chart {id}: {body}"));
        body[at..at + body[at..].find("</figure>").expect("figure end")].to_string()
    };
    let cpu = figure("metric-process_cpu_pct");
    assert!(cpu.contains("shop process CPU"), "{cpu}");
    assert!(cpu.contains(r#"data-max="180""#), "{cpu}");
    assert!(cpu.contains(r#"data-points="16""#), "{cpu}");
    let memory = figure("metric-process_rss_bytes");
    assert!(memory.contains("shop process memory"), "{memory}");
    assert!(memory.contains(r#"data-max="1536""#), "{memory}");

    // A release of an app whose agents send no process figures has no such charts.
    pages
        .store
        .ingest(
            &[report("h3", 1, end - 60, 0)].map(|mut r| {
                if let Some(ReportBody::Minute(m)) = r.body.as_mut() {
                    m.apps[0].app = "cart".into();
                }
                r
            }),
            now(),
        )
        .await
        .expect("ingest");
    let other = pages
        .releases
        .create(
            CreateRelease {
                app: "cart".into(),
                version: "1.1".into(),
                hosts: vec!["h3".into()],
                reference_hosts: Some(vec![]),
                started_at: Some(end - 120),
            },
            now(),
        )
        .await
        .expect("release");
    let (_, body) = pages.get(&format!("/releases/{}", other.id), None).await;
    assert!(body.contains(r#"id="metric-cpu_pct""#), "{body}");
    assert!(!body.contains("metric-process_cpu_pct"), "{body}");
}

#[tokio::test]
async fn a_page_opened_right_after_an_alert_block_shows_what_the_alerts_know() {
    let pages = pages(None).await;
    // The page must be read in the minute the release started: not at a minute's end.
    if now().rem_euclid(60) > 50 {
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    }
    let t = now();
    // A baseline, then the release in the minute now in progress.
    let end = t / 60 * 60;
    let reports: Vec<Report> = (0..5u64)
        .flat_map(|i| {
            let minute = end - (5 - i as i64) * 60;
            [
                report("h1", i + 1, minute, 0),
                report("h2", i + 1, minute, 0),
            ]
        })
        .collect();
    pages.store.ingest(&reports, t).await.expect("ingest");
    let release = pages
        .releases
        .create(
            CreateRelease {
                app: "shop".into(),
                version: "2.0.1".into(),
                hosts: vec!["h1".into()],
                reference_hosts: Some(vec!["h2".into()]),
                started_at: Some(t),
            },
            t,
        )
        .await
        .expect("release");
    let definition = ExceptionDefinition {
        fingerprint: FINGERPRINT,
        class: LONG_CLASS.into(),
        dangerous: true,
        ..Default::default()
    };
    pages
        .store
        .ingest(
            &[Report {
                protocol_version: vigil_proto::PROTOCOL_VERSION,
                host: "h1".into(),
                instance: "instance-h1".into(),
                agent_version: "0.1.0".into(),
                fingerprint_version: 1,
                seq: 100,
                sent_at: t,
                body: Some(ReportBody::Alert(vigil_proto::v1::Alert {
                    app: "shop".into(),
                    at: t,
                    definition: Some(definition),
                    count: 2,
                })),
            }],
            t,
        )
        .await
        .expect("ingest the alert");
    pages
        .releases
        .alert(&StoredAlert {
            app: "shop".into(),
            host: "h1".into(),
            at: t,
            fingerprint: FINGERPRINT,
            definition: Definition {
                class: LONG_CLASS.into(),
                dangerous: true,
                ..Definition::default()
            },
        })
        .await
        .expect("alert");
    let (response, body) = pages.get(&format!("/releases/{}", release.id), None).await;
    assert_eq!(response.status().as_u16(), 200, "{body}");
    assert!(
        body.contains(r#"<p class="decision" id="decision">BLOCK</p>"#),
        "{body}"
    );
    // Before the minute's counters: the alerts' count and host, and the open minute
    // marked as partial.
    assert!(body.contains("alerts: 2 occurrences on h1"), "{body}");
    assert!(
        body.contains("is still open: its counts so far are partial"),
        "{body}"
    );
}
