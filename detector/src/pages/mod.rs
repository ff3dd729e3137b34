//! The pages people read (DESIGN §5): the health board on `GET /`, the release list on
//! `GET /releases` (filters `app`, `state`, `decision`), and a release's page on
//! `GET /releases/{id}`: the decision, its reasons by category with their evidence, the
//! exceptions behind them with per-minute charts of released vs reference hosts and the
//! batches marked, host-metric charts, the hosts, and buttons for feedback and finish.
//!
//! Everything is rendered on the server (maud, inline SVG); one small script
//! (`/assets/vigil.js`, bundled in the binary) wires the buttons to the JSON API and
//! refreshes pages while nobody is typing. No CDN, nothing fetched from the internet. Every
//! page is sent with a Content-Security-Policy that allows only the detector's own script
//! and style, a second wall behind the escaping of log text.
//!
//! When the detector has a token, the pages need it too: a browser signs in once on
//! `/signin` with the token and gets a random session id in an `HttpOnly`,
//! `SameSite=Strict` cookie (never the token), which the API also accepts, so the buttons
//! work without the page ever seeing the token.

pub mod chart;
pub mod format;
pub mod view;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::Markup;
use serde::Deserialize;

use crate::clock::unix_now;
use crate::http_state::ApiState;
use crate::judge::Decision;
use crate::release::{ReleaseError, ReleaseHistory};
use crate::store::{
    AlertRow, AppRow, DecisionEntry, ExceptionQuery, FingerprintRow, MinuteRow, ReleaseFilter,
    ReleaseState, Store,
};
use chart::{Chart, Group, Line, Marker};
use view::{AppBoard, Board, ExceptionPanel, HostLine, ListFilter, ReleasePage};

/// How far back the board counts an exception as new (seconds).
const NEW_WITHIN_SECS: i64 = 24 * 3600;
/// Exceptions listed per app on the board.
const BOARD_EXCEPTIONS: usize = 6;
/// Apps shown on the board at most (each costs a query of its exceptions).
const BOARD_APPS: usize = 300;
/// Decision changes on the board's timeline.
const BOARD_TIMELINE: usize = 15;
/// Decision changes shown at most on a release's page.
const RELEASE_DECISIONS: usize = 200;
/// Releases listed at most on `/releases`.
const LIST_LIMIT: usize = 500;

const CSS: &str = include_str!("assets/vigil.css");
const JS: &str = include_str!("assets/vigil.js");
/// Only the detector's own script and style; no frames, no plugins, no foreign forms.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The routes of the pages, to merge into the HTTP router.
pub fn router<S: Store>(state: Arc<ApiState<S>>) -> Router<Arc<ApiState<S>>> {
    let pages = Router::new()
        .route("/", get(board::<S>))
        .route("/releases", get(release_list::<S>))
        .route("/releases/{id}", get(release_page::<S>))
        .layer(middleware::from_fn_with_state(state, require_sign_in::<S>));
    Router::new()
        .merge(pages)
        .route("/signin", get(sign_in_form).post(sign_in::<S>))
        .route(
            "/assets/vigil.css",
            get(|| asset(CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/vigil.js",
            get(|| asset(JS, "text/javascript; charset=utf-8")),
        )
}

/// An HTML answer with the headers every page carries.
fn page(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The answer to a path that is neither a page nor the API.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "No such page",
        &format!(
            "The detector has no page at {}. The health board is at /.",
            uri.path()
        ),
    )
}

/// A page saying what went wrong.
fn problem(status: StatusCode, title: &str, message: &str) -> Response {
    page(status, view::problem(title, message, unix_now()))
}

fn store_problem(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "page failed in the store");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "The store cannot be read",
        &format!("{e}. Try again in a moment; the detector's log has the details."),
    )
}

async fn require_sign_in<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = state.presented(&request);
    if presented == Some(crate::auth::Presented::Limited) {
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many failed sign-ins from this address. Wait a few seconds and try again.",
        );
    }
    if presented == Some(crate::auth::Presented::Invalid) {
        let next_path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        return page(
            StatusCode::UNAUTHORIZED,
            view::sign_in(&next_path, false, unix_now()),
        );
    }
    next.run(request).await
}

#[derive(Debug, Deserialize)]
struct SignInQuery {
    next: Option<String>,
}

async fn sign_in_form(query: Result<Query<SignInQuery>, QueryRejection>) -> Response {
    let next = query.ok().and_then(|Query(q)| q.next);
    page(
        StatusCode::OK,
        view::sign_in(&safe_next(next.as_deref()), false, unix_now()),
    )
}

#[derive(Debug, Deserialize)]
struct SignIn {
    token: String,
    next: Option<String>,
}

/// Only a path on this detector: no scheme, no other host (`//evil`), and nothing a
/// browser strips or rewrites into one (control characters such as a tab, backslashes).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n.into()
        }
        _ => "/".into(),
    }
}

async fn sign_in<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    let client = connect.map_or(crate::auth::UNKNOWN_CLIENT, |c| c.0.0.ip());
    let Ok(Form(form)) = form else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad sign-in",
            "The sign-in form needs a token.",
        );
    };
    let next = safe_next(form.next.as_deref());
    let Some(expected) = &state.token else {
        return Redirect::to(&next).into_response();
    };
    if !crate::auth::failures().allow(client) {
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many failed sign-ins from this address. Wait a few seconds and try again.",
        );
    }
    if !crate::auth::token_matches(&form.token, expected) {
        crate::auth::failures().failed(client);
        return page(
            StatusCode::UNAUTHORIZED,
            view::sign_in(&next, true, unix_now()),
        );
    }
    let cookie = crate::auth::Sessions::cookie(&state.sessions.open());
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Blocked first, then on watch, then passing; newest first within each.
fn by_urgency(releases: &mut [crate::store::StoredRelease]) {
    releases.sort_by(|a, b| b.decision.cmp(&a.decision).then(b.id.cmp(&a.id)));
}

async fn board<S: Store>(State(state): State<Arc<ApiState<S>>>) -> Response {
    let now = state.releases.clock().now();
    match gather_board(state.store.as_ref(), now).await {
        Ok(board) => page(StatusCode::OK, view::board(&board)),
        Err(e) => store_problem(&e),
    }
}

async fn gather_board<S: Store>(store: &S, now: i64) -> Result<Board, crate::store::StoreError> {
    let mut apps = store.apps().await?;
    let mut watching = store
        .releases(&ReleaseFilter {
            app: None,
            state: Some(ReleaseState::Watching),
        })
        .await?;
    by_urgency(&mut watching);
    let recent = store.decisions(None, BOARD_TIMELINE).await?;
    // At most BOARD_APPS: those with releases watched, then the most recently reporting.
    let apps_not_shown = apps.len().saturating_sub(BOARD_APPS);
    if apps_not_shown > 0 {
        let watched: HashSet<&str> = watching.iter().map(|r| r.app.as_str()).collect();
        let latest = |a: &AppRow| a.hosts.iter().map(|h| h.last_minute).max();
        apps.sort_by_key(|a| {
            (
                std::cmp::Reverse(watched.contains(a.app.as_str())),
                std::cmp::Reverse(latest(a)),
            )
        });
        apps.truncate(BOARD_APPS);
        apps.sort_by(|a, b| a.app.cmp(&b.app));
    }
    let mut cards = Vec::with_capacity(apps.len());
    for app in apps {
        // Dangerous first, then the most recently seen.
        let exceptions: Vec<FingerprintRow> = store
            .exceptions(
                &app.app,
                &ExceptionQuery {
                    since: Some(now - NEW_WITHIN_SECS),
                    new_or_dangerous: true,
                    offset: 0,
                    limit: BOARD_EXCEPTIONS,
                },
            )
            .await?;
        let app_watching = watching
            .iter()
            .filter(|r| r.app == app.app)
            .cloned()
            .collect();
        let requests = latest_requests(store, &app.app, now).await;
        cards.push(AppBoard {
            app,
            watching: app_watching,
            exceptions,
            requests,
        });
    }
    Ok(Board {
        now,
        apps: cards,
        apps_not_shown,
        watching,
        recent,
        new_within: NEW_WITHIN_SECS,
    })
}

/// An app's requests in the newest complete minute of the last five in which its hosts
/// reported some (all hosts summed) and the share of 5xx; `None` without access logs, or
/// when the minutes cannot be read within the page's bound.
async fn latest_requests<S: Store>(store: &S, app: &str, now: i64) -> Option<(i64, u64, f64)> {
    let open = crate::judge::minute_of(now);
    let rows = store
        .series(&crate::store::SeriesQuery {
            app: Some(app.to_owned()),
            host: None,
            from: Some(open - 5 * 60),
            to: Some(open - 60),
            limit: Some(BOARD_REQUEST_ROWS),
        })
        .await
        .ok()?;
    let mut minutes: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for row in &rows {
        if let Some(r) = &row.requests {
            let m = minutes.entry(row.minute).or_default();
            m.0 += r.count;
            m.1 += r.status.server_error;
        }
    }
    let (&minute, &(count, errors)) = minutes.iter().next_back()?;
    Some((
        minute,
        count,
        if count > 0 {
            errors as f64 / count as f64
        } else {
            0.0
        },
    ))
}

/// Most rows read for one app's latest requests on the board.
const BOARD_REQUEST_ROWS: usize = 20_000;

#[derive(Debug, Deserialize)]
struct ListParams {
    app: Option<String>,
    state: Option<String>,
    decision: Option<String>,
}

fn parse_filter(params: ListParams) -> Result<ListFilter, String> {
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let state = match given(params.state).as_deref() {
        None => None,
        Some("watching") => Some(ReleaseState::Watching),
        Some("finished") => Some(ReleaseState::Finished),
        Some(other) => return Err(format!("state {other:?} is not watching or finished")),
    };
    let decision = match given(params.decision).as_deref() {
        None => None,
        Some("pass") => Some(Decision::Pass),
        Some("watch") => Some(Decision::Watch),
        Some("block") => Some(Decision::Block),
        Some(other) => return Err(format!("decision {other:?} is not pass, watch or block")),
    };
    Ok(ListFilter {
        app: given(params.app),
        state,
        decision,
    })
}

async fn release_list<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let filter = match params
        .map_err(|e| e.body_text())
        .and_then(|Query(p)| parse_filter(p))
    {
        Ok(f) => f,
        Err(message) => return problem(StatusCode::BAD_REQUEST, "Bad filter", &message),
    };
    let now = state.releases.clock().now();
    let wanted = ReleaseFilter {
        app: filter.app.clone(),
        state: filter.state,
    };
    let (releases, apps) = match tokio::try_join!(state.store.releases(&wanted), state.store.apps())
    {
        Ok(found) => found,
        Err(e) => return store_problem(&e),
    };
    let matching: Vec<_> = releases
        .into_iter()
        .filter(|r| filter.decision.is_none_or(|d| r.decision == d))
        .collect();
    let total = matching.len();
    let shown = &matching[..total.min(LIST_LIMIT)];
    let names: Vec<String> = apps.into_iter().map(|a| a.app).collect();
    page(
        StatusCode::OK,
        view::release_list(shown, &names, &filter, total, now),
    )
}

async fn release_page<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = crate::release::parse_release_id(&id) else {
        return problem(
            StatusCode::NOT_FOUND,
            "No such release",
            &format!("{id:?} is not a release id (a positive integer)."),
        );
    };
    let now = state.releases.clock().now();
    let history = match state.releases.history(id, now).await {
        Ok(h) => h,
        Err(ReleaseError::NotFound(_)) => {
            return problem(
                StatusCode::NOT_FOUND,
                "No such release",
                &format!("The detector has no release {id}."),
            );
        }
        Err(e) => return store_problem(&e),
    };
    let named = named_fingerprints(&history.release.reasons);
    let found = tokio::try_join!(
        state.store.fingerprints(&history.release.app, &named, true),
        state.store.apps(),
        state.store.decisions(Some(id), RELEASE_DECISIONS),
        state.store.alerts(
            &history.release.app,
            history.release.started_at,
            RELEASE_ALERTS
        )
    );
    match found {
        Ok((fingerprints, apps, decisions, alerts)) => {
            let app = apps.into_iter().find(|a| a.app == history.release.app);
            let release = assemble(
                history,
                &fingerprints,
                app.as_ref(),
                decisions,
                &alerts,
                now,
            );
            page(StatusCode::OK, view::release_page(&release))
        }
        Err(e) => store_problem(&e),
    }
}

/// The two groups of a release, and the counters of each minute summed per group.
struct Groups {
    released: HashSet<String>,
    reference: HashSet<String>,
    start: i64,
    minutes: usize,
}

impl Groups {
    /// The groups of `h`'s release, over its window less the leading minutes no host
    /// reported in (a host new to Vigil has no baseline to show).
    fn of(h: &ReleaseHistory) -> Self {
        let start = h
            .rows
            .iter()
            .map(|r| r.minute)
            .min()
            .map_or(h.from, |first| first.clamp(h.from, h.to));
        Self {
            released: h
                .release
                .batches
                .iter()
                .flat_map(|b| b.hosts.iter().cloned())
                .collect(),
            reference: h.release.reference_hosts.iter().cloned().collect(),
            start,
            minutes: usize::try_from((h.to - start) / 60 + 1).unwrap_or(0),
        }
    }

    /// Per minute, the mean over the group's hosts that have `value` for that minute;
    /// `None` where none has.
    fn mean(
        &self,
        rows: &[MinuteRow],
        group: Group,
        value: impl Fn(&MinuteRow) -> Option<f64>,
    ) -> Vec<Option<f64>> {
        let hosts = match group {
            Group::Released => &self.released,
            Group::Reference => &self.reference,
        };
        let mut sums = vec![(0.0, 0u32); self.minutes];
        for row in rows.iter().filter(|r| hosts.contains(&r.host)) {
            let Some(i) = usize::try_from((row.minute - self.start) / 60)
                .ok()
                .filter(|i| *i < self.minutes)
            else {
                continue;
            };
            if let Some(v) = value(row).filter(|v| v.is_finite()) {
                sums[i].0 += v;
                sums[i].1 += 1;
            }
        }
        sums.into_iter()
            .map(|(sum, n)| (n > 0).then(|| sum / f64::from(n)))
            .collect()
    }

    /// A chart of `value` for both groups (the reference line only when there is one).
    fn chart(
        &self,
        h: &ReleaseHistory,
        id: String,
        title: String,
        unit: &str,
        value: impl Fn(&MinuteRow) -> Option<f64>,
    ) -> Chart {
        let mut lines = vec![Line {
            label: format!("released hosts ({})", self.released.len()),
            group: Group::Released,
            values: self.mean(&h.rows, Group::Released, &value),
        }];
        if !self.reference.is_empty() {
            lines.push(Line {
                label: format!("reference hosts ({})", self.reference.len()),
                group: Group::Reference,
                values: self.mean(&h.rows, Group::Reference, &value),
            });
        }
        Chart {
            id,
            title,
            unit: unit.into(),
            start: self.start,
            lines,
            markers: h
                .release
                .batches
                .iter()
                .enumerate()
                .map(|(i, b)| Marker {
                    at: b.at,
                    short: format!("B{}", i + 1),
                    label: format!(
                        "batch {} at {}: {}",
                        i + 1,
                        format::time(b.at),
                        b.hosts.join(", ")
                    ),
                })
                .collect(),
        }
    }
}

/// Most alerts read for a release's page.
const RELEASE_ALERTS: usize = 10_000;

/// Most charts of scraped values on a release's page.
const MAX_SCRAPED_CHARTS: usize = 16;

/// The host metrics charted, with their titles and units.
const METRICS: [(&str, &str, &str); 4] = [
    ("cpu_pct", "CPU", "% busy, mean of hosts"),
    ("mem_used_pct", "Memory", "% used, mean of hosts"),
    ("load1", "Load", "1-minute load average, mean of hosts"),
    ("disk_busy_pct", "Disk", "% busy, mean of hosts"),
];

/// The fingerprints `reasons` name, whose definitions the release page shows.
pub fn named_fingerprints(reasons: &[crate::judge::Reason]) -> Vec<crate::judge::Fingerprint> {
    reasons
        .iter()
        .filter_map(|r| r.fingerprint.as_deref())
        .filter_map(|f| crate::replay::parse_fingerprint(f).ok())
        .collect()
}

/// The release page's data from the release's history, the app's fingerprints and hosts,
/// and the release's decision changes.
pub fn assemble(
    history: ReleaseHistory,
    fingerprints: &[FingerprintRow],
    app: Option<&AppRow>,
    decisions: Vec<DecisionEntry>,
    alerts: &[AlertRow],
    now: i64,
) -> ReleasePage {
    let groups = Groups::of(&history);
    // The open minute, when the window reaches it.
    let open = crate::judge::minute_of(now);
    let partial_minute = (history.to >= open && history.from <= open).then_some(open);
    let summary = |fp: &str| -> Option<view::AlertSummary> {
        let mine: Vec<&AlertRow> = alerts.iter().filter(|a| a.fingerprint == fp).collect();
        let mut hosts: Vec<String> = mine.iter().map(|a| a.host.clone()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        Some(view::AlertSummary {
            count: mine.iter().map(|a| a.count).sum(),
            hosts,
            first: mine.iter().map(|a| a.at).min()?,
            last: mine.iter().map(|a| a.at).max()?,
        })
    };
    let definitions: BTreeMap<&str, &FingerprintRow> = fingerprints
        .iter()
        .map(|f| (f.fingerprint.as_str(), f))
        .collect();
    let mut seen = HashSet::new();
    let exceptions = history
        .release
        .reasons
        .iter()
        .filter_map(|r| r.fingerprint.as_deref())
        .filter(|fp| seen.insert(*fp))
        .map(|fp| {
            let definition = definitions.get(fp).map(|d| (*d).clone());
            let title = definition
                .as_ref()
                .map_or_else(|| format!("exception {fp}"), |d| d.class.clone());
            ExceptionPanel {
                fingerprint: fp.to_string(),
                chart: groups.chart(
                    &history,
                    format!("chart-{}", view::fingerprint_anchor(fp)),
                    title,
                    "count per host per minute",
                    |row| row_count(row, fp),
                ),
                definition,
                alerts: summary(fp),
                partial_minute,
            }
        })
        .collect();
    // What the app's users get, where its hosts report requests from access logs.
    let business_charts = if history.rows.iter().any(|r| r.requests.is_some()) {
        vec![
            groups.chart(
                &history,
                view::metric_anchor("requests"),
                "Requests".into(),
                "per host per minute",
                |r| r.requests.as_ref().map(|q| q.count as f64),
            ),
            groups.chart(
                &history,
                view::metric_anchor("5xx"),
                "Server errors".into(),
                "% of requests answered 5xx, mean of hosts",
                |r| {
                    r.requests
                        .as_ref()
                        .and_then(|q| q.server_error_share())
                        .map(|s| 100.0 * s)
                },
            ),
            groups.chart(
                &history,
                view::metric_anchor("p50"),
                "Latency p50".into(),
                "ms, mean of hosts' medians",
                |r| r.requests.as_ref().and_then(|q| q.latency_ms.quantile(0.5)),
            ),
            groups.chart(
                &history,
                view::metric_anchor("p90"),
                "Latency p90".into(),
                "ms, mean of hosts' 90th percentiles",
                |r| r.requests.as_ref().and_then(|q| q.latency_ms.quantile(0.9)),
            ),
        ]
    } else {
        Vec::new()
    };
    let log_charts = vec![
        groups.chart(
            &history,
            "metric-error_lines".into(),
            "Error lines".into(),
            "per host per minute",
            |r| Some(r.error_lines as f64),
        ),
        groups.chart(
            &history,
            view::metric_anchor("lines"),
            "Log lines".into(),
            "per host per minute",
            |r| Some(r.lines as f64),
        ),
    ];
    let mut metric_charts: Vec<Chart> = METRICS
        .iter()
        .map(|(name, title, unit)| {
            groups.chart(
                &history,
                view::metric_anchor(name),
                (*title).into(),
                unit,
                |r| r.host_metrics.as_ref().and_then(|m| m.get(name)),
            )
        })
        .collect();
    // The app's own process, where the agents' `process` pattern matched it.
    if history.rows.iter().any(|r| r.process_cpu_pct.is_some()) {
        metric_charts.push(groups.chart(
            &history,
            view::metric_anchor("process_cpu_pct"),
            format!("{} process CPU", history.release.app),
            "% of one core, mean of hosts",
            |r| r.process_cpu_pct,
        ));
    }
    if history.rows.iter().any(|r| r.process_rss_bytes.is_some()) {
        metric_charts.push(groups.chart(
            &history,
            view::metric_anchor("process_rss_bytes"),
            format!("{} process memory", history.release.app),
            "MiB resident, mean of hosts",
            |r| r.process_rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0)),
        ));
    }
    // What the app's metrics endpoint gave (`[[scrape]] families`), a chart per name.
    let names: std::collections::BTreeSet<&str> = history
        .rows
        .iter()
        .filter_map(|r| r.scraped.as_ref())
        .flat_map(|v| v.keys().map(String::as_str))
        .collect();
    for name in names.into_iter().take(MAX_SCRAPED_CHARTS) {
        metric_charts.push(groups.chart(
            &history,
            view::metric_anchor(name),
            name.to_owned(),
            "scraped: a counter's growth per minute, a gauge's value; mean of hosts",
            |r| r.scraped.as_ref().and_then(|v| v.get(name).copied()),
        ));
    }
    let last_minute = |host: &str| {
        app.and_then(|a| a.hosts.iter().find(|h| h.host == host))
            .map(|h| h.last_minute)
    };
    let mut hosts = Vec::new();
    for (i, b) in history.release.batches.iter().enumerate() {
        for host in &b.hosts {
            hosts.push(HostLine {
                host: host.clone(),
                role: format!("batch {}", i + 1),
                released_at: Some(b.at),
                last_minute: last_minute(host),
            });
        }
    }
    for host in &history.release.reference_hosts {
        hosts.push(HostLine {
            host: host.clone(),
            role: "reference".into(),
            released_at: None,
            last_minute: last_minute(host),
        });
    }
    ReleasePage {
        now,
        release: history.release,
        exceptions,
        business_charts,
        log_charts,
        metric_charts,
        hosts,
        decisions,
    }
}

/// The count of `fingerprint` in a row (0 when the host reported without it).
fn row_count(row: &MinuteRow, fingerprint: &str) -> Option<f64> {
    Some(row.exceptions.get(fingerprint).copied().unwrap_or(0) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/releases/3")), "/releases/3");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn filters_are_checked() {
        let params = |state: &str, decision: &str| ListParams {
            app: Some(String::new()),
            state: Some(state.into()),
            decision: Some(decision.into()),
        };
        let f = parse_filter(params("watching", "block")).expect("valid filter");
        assert_eq!(f.app, None);
        assert_eq!(f.state, Some(ReleaseState::Watching));
        assert_eq!(f.decision, Some(Decision::Block));
        let e = parse_filter(params("done", "")).expect_err("bad state");
        assert!(e.contains("\"done\""), "{e}");
        let e = parse_filter(params("", "stop")).expect_err("bad decision");
        assert!(e.contains("\"stop\""), "{e}");
    }
}
