//! The pages as plain functions from gathered data to HTML. Every value is written through
//! maud's escaping: class names, messages and stack traces come from logs, and a log line
//! is attacker-controlled text.

use maud::{DOCTYPE, Markup, html};

use super::chart::Chart;
use super::format::{ago, iso, number, p_value, sci, time};
use crate::judge::{Decision, Evidence, Feedback, Reason, Rule, Severity, Tally};
use crate::store::{
    AppRow, DecisionEntry, FingerprintRow, HostRow, Outcome, ReleaseState, StoredRelease,
};

/// A host counts as reporting when its newest minute is at most this old.
pub const REPORTING_SECS: i64 = 3 * 60;

/// The shell of every page: skip link, navigation, main, footer.
pub fn layout(title: &str, now: i64, nav: Nav, main_attrs: MainAttrs, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light";
                title { (title) " · Vigil" }
                link rel="stylesheet" href="/assets/vigil.css";
                script src="/assets/vigil.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "Vigil" }
                    nav aria-label="Pages" {
                        a href="/" aria-current=[(nav == Nav::Board).then_some("page")] { "Health board" }
                        a href="/releases" aria-current=[(nav == Nav::Releases).then_some("page")] { "Releases" }
                    }
                    span.now { "Shown at " time datetime=(iso(now)) { (time(now)) } }
                }
                main #main tabindex="-1" data-release=[main_attrs.release] data-refresh=[main_attrs.refresh_secs] {
                    (content)
                }
                footer {
                    "vigil-detector " (env!("CARGO_PKG_VERSION")) " · times in UTC · "
                    a href="/api/v1/releases" { "JSON API" }
                }
            }
        }
    }
}

/// Which navigation entry is the current page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Board,
    Releases,
    Other,
}

/// Data attributes the bundled script reads from `<main>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MainAttrs {
    /// The release the page's buttons act on.
    pub release: Option<i64>,
    /// Reload the page this often while nobody is typing.
    pub refresh_secs: Option<u32>,
}

/// A page that says what went wrong (404, 400, 503).
pub fn problem(title: &str, message: &str, now: i64) -> Markup {
    layout(
        title,
        now,
        Nav::Other,
        MainAttrs::default(),
        html! {
            h1 { (title) }
            p.problem { (message) }
            p { a href="/" { "Back to the health board" } }
        },
    )
}

/// The page asking for the detector's token.
pub fn sign_in(next: &str, failed: bool, now: i64) -> Markup {
    layout(
        "Sign in",
        now,
        Nav::Other,
        MainAttrs::default(),
        html! {
            h1 { "Sign in" }
            p { "This detector requires its API token (" code { "token_file" } " in its configuration) to show its pages." }
            @if failed { p.problem role="alert" { "That token is not the detector's." } }
            form.signin method="post" action="/signin" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn decision_badge(decision: Decision) -> Markup {
    html! { span class=(format!("badge decision-{}", decision.as_str())) { (decision.as_str()) } }
}

fn state_text(r: &StoredRelease) -> String {
    match (r.state, r.outcome) {
        (ReleaseState::Finished, Some(o)) => format!("finished ({})", o.as_str().replace('_', " ")),
        (state, _) => state.as_str().into(),
    }
}

fn release_link(r: &StoredRelease) -> Markup {
    html! { a href=(format!("/releases/{}", r.id)) { (r.app) " " (r.version) " " span.id { "#" (r.id) } } }
}

fn released_hosts(r: &StoredRelease) -> usize {
    r.batches.iter().map(|b| b.hosts.len()).sum()
}

/// The first reason's summary, for one-line lists.
fn headline(r: &StoredRelease) -> Markup {
    html! {
        @match r.reasons.first() {
            Some(reason) => {
                span.summary { (reason.summary) }
                @if r.reasons.len() > 1 { " " span.more { "(+" (r.reasons.len() - 1) " more)" } }
            }
            None => span.quiet { "nothing suspicious" },
        }
    }
}

/// A table of releases, newest first.
fn release_table(releases: &[StoredRelease], now: i64, caption: &str) -> Markup {
    html! {
        table.releases {
            caption { (caption) }
            thead { tr {
                th scope="col" { "release" } th scope="col" { "decision" } th scope="col" { "why" }
                th scope="col" { "state" } th scope="col" { "hosts" } th scope="col" { "started" }
            } }
            tbody {
                @for r in releases {
                    tr {
                        td.name { (release_link(r)) }
                        td { (decision_badge(r.decision)) }
                        td.why { (headline(r)) }
                        td { (state_text(r)) }
                        td { (released_hosts(r)) " released, " (r.reference_hosts.len()) " reference" }
                        td { time datetime=(iso(r.started_at)) title=(time(r.started_at)) { (ago(r.started_at, now)) } }
                    }
                }
            }
        }
    }
}

/// One app on the health board.
#[derive(Debug, Clone)]
pub struct AppBoard {
    /// The app and its hosts.
    pub app: AppRow,
    /// Its releases being watched, newest first.
    pub watching: Vec<StoredRelease>,
    /// Its exceptions first seen lately, or dangerous and seen lately, newest first.
    pub exceptions: Vec<FingerprintRow>,
    /// Its requests in the newest complete minute its hosts reported some: the minute, the
    /// requests of all hosts, and the share answered with a 5xx.
    pub requests: Option<(i64, u64, f64)>,
}

/// Everything on the health board.
#[derive(Debug, Clone)]
pub struct Board {
    pub now: i64,
    /// The apps shown (at most a few hundred: those with releases watched, then the most
    /// recently reporting), by name.
    pub apps: Vec<AppBoard>,
    /// Apps not shown for the limit.
    pub apps_not_shown: usize,
    /// Every release being watched, blocked first.
    pub watching: Vec<StoredRelease>,
    /// The latest decision changes of all releases, newest first.
    pub recent: Vec<DecisionEntry>,
    /// How far back an exception counts as new (seconds).
    pub new_within: i64,
}

/// `GET /`: the health board.
pub fn board(b: &Board) -> Markup {
    let blocked = b
        .watching
        .iter()
        .filter(|r| r.decision == Decision::Block)
        .count();
    let watch = b
        .watching
        .iter()
        .filter(|r| r.decision == Decision::Watch)
        .count();
    let content = html! {
        h1 { "Health board" }
        p.lead {
            (b.apps.len() + b.apps_not_shown) " apps · " (b.watching.len()) " releases watched"
            @if blocked > 0 { " · " strong.decision-block-text { (blocked) " blocked" } }
            @if watch > 0 { " · " strong.decision-watch-text { (watch) " on watch" } }
        }
        section aria-labelledby="watched-h" {
            h2 #watched-h { "Releases being watched" }
            @if b.watching.is_empty() {
                p.quiet { "No release is being watched. Announce one with " code { "POST /api/v1/releases" } "." }
            } @else {
                (release_table(&b.watching, b.now, "Blocked first, then on watch, then passing"))
            }
        }
        section aria-labelledby="apps-h" {
            h2 #apps-h { "Apps" }
            @if b.apps.is_empty() { p.quiet { "No agent has reported yet." } }
            div.apps {
                @for a in &b.apps { (app_card(a, b.now, b.new_within)) }
            }
            @if b.apps_not_shown > 0 {
                p.quiet {
                    (b.apps_not_shown) " more apps are not shown here (the board shows those with releases watched, then the most recently reporting); "
                    code { "GET /api/v1/apps" } " lists them all."
                }
            }
        }
        section aria-labelledby="timeline-h" {
            h2 #timeline-h { "Decision changes" }
            @if b.recent.is_empty() {
                p.quiet { "No release has changed its decision yet." }
            } @else {
                ol.timeline {
                    @for d in &b.recent {
                        li {
                            time datetime=(iso(d.at)) title=(time(d.at)) { (ago(d.at, b.now)) }
                            " " a href=(format!("/releases/{}", d.release_id)) { (d.app) " " (d.version) " " span.id { "#" (d.release_id) } }
                            " " (change(d))
                        }
                    }
                }
            }
        }
    };
    layout(
        "Health board",
        b.now,
        Nav::Board,
        MainAttrs {
            release: None,
            refresh_secs: Some(30),
        },
        content,
    )
}

/// `pass → block: reason`.
fn change(d: &DecisionEntry) -> Markup {
    html! {
        (decision_badge(d.previous)) " → " (decision_badge(d.decision))
        @if let Some(reason) = &d.reason { " " span.summary { (reason) } }
    }
}

fn host_status(h: &HostRow, now: i64) -> Markup {
    let reporting = now - h.last_minute <= REPORTING_SECS + 60;
    html! {
        li class=(if reporting { "host up" } else { "host down" }) {
            span.hostname { (h.host) }
            " "
            @if reporting {
                span.sr { "reporting" }
            } @else {
                span.silent { "silent since " time datetime=(iso(h.last_minute)) title=(time(h.last_minute)) { (ago(h.last_minute, now)) } }
            }
        }
    }
}

fn app_card(a: &AppBoard, now: i64, new_within: i64) -> Markup {
    let up = a
        .app
        .hosts
        .iter()
        .filter(|h| now - h.last_minute <= REPORTING_SECS + 60)
        .count();
    html! {
        article.app aria-labelledby=(format!("app-{}", slug(&a.app.app))) {
            h3 id=(format!("app-{}", slug(&a.app.app))) {
                a href=(format!("/releases?app={}", url_component(&a.app.app))) { (a.app.app) }
            }
            p { (up) " of " (a.app.hosts.len()) " hosts reporting" }
            @if let Some((minute, count, errors)) = a.requests {
                p.requests {
                    (count) " requests in the minute of " time datetime=(iso(minute)) { (time(minute)) }
                    " · " span class=(if errors >= 0.01 { "errors high" } else { "errors" }) {
                        (format!("{:.2}", 100.0 * errors)) "% 5xx"
                    }
                }
            }
            details.hosts open[a.app.hosts.len() <= 8 || up < a.app.hosts.len()] {
                summary { "Hosts" }
                ul.hosts { @for h in &a.app.hosts { (host_status(h, now)) } }
            }
            @if a.watching.is_empty() {
                p.quiet { "No release being watched." }
            } @else {
                ul.app-releases {
                    @for r in &a.watching {
                        li { (decision_badge(r.decision)) " " (release_link(r)) }
                    }
                }
            }
            @if a.exceptions.is_empty() {
                p.quiet { "No new or dangerous exception in the last " (new_within / 3600) " h." }
            } @else {
                h4 { "New or dangerous exceptions" }
                ul.exceptions {
                    @for f in &a.exceptions {
                        li {
                            @if f.dangerous { span.badge.dangerous { "dangerous" } " " }
                            @if f.first_seen.is_some_and(|s| s >= now - new_within) { span.badge.new { "new" } " " }
                            code.class { (f.class) }
                            " — " (f.count) " seen"
                            @if let Some(last) = f.last_seen {
                                ", last " time datetime=(iso(last)) title=(time(last)) { (ago(last, now)) }
                            }
                            @if !f.message.is_empty() { p.message { (f.message) } }
                        }
                    }
                }
            }
        }
    }
}

/// Filters of the release list, as given in the query.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub app: Option<String>,
    pub state: Option<ReleaseState>,
    pub decision: Option<Decision>,
}

/// `GET /releases`: every release matching the filters.
pub fn release_list(
    releases: &[StoredRelease],
    apps: &[String],
    filter: &ListFilter,
    total: usize,
    now: i64,
) -> Markup {
    let content = html! {
        h1 { "Releases" }
        form.filters method="get" action="/releases" {
            label { "App "
                select name="app" {
                    option value="" { "any" }
                    @for a in apps { option value=(a) selected[filter.app.as_deref() == Some(a.as_str())] { (a) } }
                }
            }
            label { "State "
                select name="state" {
                    option value="" { "any" }
                    @for s in [ReleaseState::Watching, ReleaseState::Finished] {
                        option value=(s.as_str()) selected[filter.state == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "Decision "
                select name="decision" {
                    option value="" { "any" }
                    @for d in [Decision::Block, Decision::Watch, Decision::Pass] {
                        option value=(d.as_str()) selected[filter.decision == Some(d)] { (d.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if releases.is_empty() {
            p.quiet { "No release matches." }
        } @else {
            (release_table(releases, now, &format!("{} of {} releases, newest first", releases.len(), total)))
        }
    };
    layout(
        "Releases",
        now,
        Nav::Releases,
        MainAttrs::default(),
        content,
    )
}

/// An exception behind one of the release's reasons.
#[derive(Debug, Clone)]
pub struct ExceptionPanel {
    /// 16 hex digits.
    pub fingerprint: String,
    /// Its definition, when the store has it.
    pub definition: Option<FingerprintRow>,
    /// Its per-minute count on released vs reference hosts.
    pub chart: Chart,
    /// What its dangerous-exception alerts since the release say, sent at once and so
    /// ahead of the minutes' counters.
    pub alerts: Option<AlertSummary>,
    /// The open minute of the window, whose counts are partial.
    pub partial_minute: Option<i64>,
}

/// A fingerprint's alerts since a release.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSummary {
    /// Occurrences the alerts reported.
    pub count: u64,
    /// Hosts that sent them.
    pub hosts: Vec<String>,
    pub first: i64,
    pub last: i64,
}

/// A host of the release.
#[derive(Debug, Clone)]
pub struct HostLine {
    pub host: String,
    /// `batch 2` or `reference`.
    pub role: String,
    /// When it got the new version.
    pub released_at: Option<i64>,
    /// Its newest minute reported for the app.
    pub last_minute: Option<i64>,
}

/// Everything on a release's page.
#[derive(Debug, Clone)]
pub struct ReleasePage {
    pub now: i64,
    pub release: StoredRelease,
    /// Exceptions behind the reasons, in the order of the reasons.
    pub exceptions: Vec<ExceptionPanel>,
    /// Requests, 5xx share and latency quantiles, where hosts report requests.
    pub business_charts: Vec<Chart>,
    /// Log lines and error lines per host per minute.
    pub log_charts: Vec<Chart>,
    /// Host metrics per group.
    pub metric_charts: Vec<Chart>,
    /// Released hosts by batch, then the reference hosts.
    pub hosts: Vec<HostLine>,
    /// Its decision changes, newest first.
    pub decisions: Vec<DecisionEntry>,
}

/// What happened to a release, oldest first: created, batches, decision changes, feedback,
/// finish.
fn timeline(p: &ReleasePage) -> Vec<(i64, Markup)> {
    let r = &p.release;
    let mut events = vec![(
        r.created_at,
        html! { "announced to Vigil, which watches it from then on" },
    )];
    for (i, b) in r.batches.iter().enumerate() {
        events.push((
            b.at,
            html! {
                "batch " (i + 1) ": " (b.hosts.len()) " host" @if b.hosts.len() != 1 { "s" }
                " got " (r.version) " — " span.hostname { (b.hosts.join(", ")) }
            },
        ));
    }
    for d in &p.decisions {
        events.push((d.at, change(d)));
    }
    for f in &r.feedback {
        events.push((f.at, html! { "feedback: " strong { (label_text(f.label)) } @if let Some(n) = &f.note { " — " span.note { (n) } } }));
    }
    if let (Some(at), Some(outcome)) = (r.finished_at, r.outcome) {
        events.push((
            at,
            html! {
                "finished: " (outcome.as_str().replace('_', " "))
                @if outcome == Outcome::Expired { " — nobody finished it within [limits] max_release_age" }
            },
        ));
    }
    // Stable: events at the same second keep the order above.
    events.sort_by_key(|(at, _)| *at);
    events
}

/// The category a rule belongs to, as a heading and an anchor.
pub fn category(rule: Rule) -> (&'static str, &'static str) {
    match rule {
        Rule::DangerousException | Rule::NewException | Rule::ExceptionRate => {
            ("exceptions", "Exceptions")
        }
        Rule::ErrorRate | Rule::LogVolume => ("logs", "Logs"),
        Rule::HostMetric => ("host-metrics", "Host metrics"),
        Rule::ServerErrors | Rule::Latency | Rule::Traffic => ("business", "Business"),
    }
}

/// The anchor of a fingerprint's panel.
pub fn fingerprint_anchor(fingerprint: &str) -> String {
    format!("fp-{}", slug(fingerprint))
}

/// The anchor of a metric's chart.
pub fn metric_anchor(metric: &str) -> String {
    format!("metric-{}", slug(metric))
}

/// `GET /releases/{id}`.
pub fn release_page(p: &ReleasePage) -> Markup {
    let r = &p.release;
    let title = format!("{} {} · release {}", r.app, r.version, r.id);
    let mut categories: Vec<(&str, &str, Vec<&Reason>)> = Vec::new();
    for reason in &r.reasons {
        let (key, heading) = category(reason.rule);
        match categories.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, list)) => list.push(reason),
            None => categories.push((key, heading, vec![reason])),
        }
    }
    let order = ["business", "exceptions", "logs", "host-metrics"];
    categories.sort_by_key(|(k, _, _)| order.iter().position(|o| o == k));
    let content = html! {
        header.release-head {
            p.crumbs { a href="/" { "Health board" } " › " a href=(format!("/releases?app={}", url_component(&r.app))) { (r.app) } " › release " (r.id) }
            h1 { span.app { (r.app) } " " span.version { (r.version) } }
        }
        section class=(format!("verdict decision-{}", r.decision.as_str())) aria-labelledby="decision" {
            p.decision #decision { (r.decision.as_str().to_uppercase()) }
            div.verdict-detail {
                p {
                    @match r.decided_at {
                        Some(at) => { "Decided " time datetime=(iso(at)) { (time(at)) } " (" (ago(at, p.now)) ")" }
                        None => "Not judged yet: the first round follows the first completed minute after a batch.",
                    }
                }
                p {
                    (state_text(r))
                    @if let Some(m) = r.last_round { " · last minute judged " time datetime=(iso(m)) { (time(m)) } }
                    " · started " time datetime=(iso(r.started_at)) { (time(r.started_at)) }
                    @if let Some(f) = r.finished_at { " · finished " time datetime=(iso(f)) { (time(f)) } }
                }
                @if let Some(lost) = r.judge.as_deref().and_then(crate::release::judge_state::recovery) {
                    p.warning role="alert" {
                        "The judge state stored for this release was unreadable (found "
                        time datetime=(iso(lost.at)) { (time(lost.at)) } ": " (lost.reason)
                        "). The release kept its decision and is judged on from it with a fresh window."
                    }
                }
                p.count {
                    @match r.reasons.len() {
                        0 => "No reason to worry.",
                        1 => "1 reason:",
                        n => { (n) " reasons:" }
                    }
                    @for (key, heading, list) in &categories {
                        " " a href=(format!("#{key}")) { (heading) " (" (list.len()) ")" }
                    }
                }
            }
        }
        (actions(r))
        @for (key, heading, list) in &categories {
            section.category id=(key) aria-labelledby=(format!("{key}-h")) {
                h2 id=(format!("{key}-h")) { (heading) }
                ol.reasons {
                    @for reason in list { li { (reason_card(reason)) } }
                }
            }
        }
        @if !p.exceptions.is_empty() {
            section aria-labelledby="exc-h" {
                h2 #exc-h { "The exceptions behind the reasons" }
                @for e in &p.exceptions { (exception_panel(e, p.now)) }
            }
        }
        @if !p.business_charts.is_empty() {
            section aria-labelledby="business-h" {
                h2 #business-h { "Requests" }
                div.charts { @for c in &p.business_charts { (c.render()) } }
            }
        }
        section aria-labelledby="logs-h" {
            h2 #logs-h { "Log lines" }
            div.charts { @for c in &p.log_charts { (c.render()) } }
        }
        section aria-labelledby="metrics-h" {
            h2 #metrics-h { "Host metrics" }
            div.charts { @for c in &p.metric_charts { (c.render()) } }
        }
        section aria-labelledby="timeline-h" {
            h2 #timeline-h { "Timeline" }
            ol.timeline {
                @for (at, what) in timeline(p) {
                    li { time datetime=(iso(at)) { (time(at)) } " " (what) }
                }
            }
        }
        section aria-labelledby="hosts-h" {
            h2 #hosts-h { "Batches and hosts" }
            table.hosts {
                thead { tr { th scope="col" { "host" } th scope="col" { "group" } th scope="col" { "new version since" } th scope="col" { "last reported minute" } } }
                tbody {
                    @for h in &p.hosts {
                        tr {
                            td.hostname { (h.host) }
                            td { (h.role) }
                            td { @match h.released_at { Some(t) => time datetime=(iso(t)) { (time(t)) }, None => "–" } }
                            td { @match h.last_minute { Some(t) => { time datetime=(iso(t)) { (time(t)) } " (" (ago(t, p.now)) ")" }, None => "never" } }
                        }
                    }
                }
            }
        }
        @if !r.feedback.is_empty() {
            section aria-labelledby="fb-h" {
                h2 #fb-h { "Feedback" }
                ul { @for f in &r.feedback {
                    li { (label_text(f.label)) " — " time datetime=(iso(f.at)) { (time(f.at)) }
                        @if let Some(note) = &f.note { p.note { (note) } } }
                } }
            }
        }
        p.raw { "As JSON: " a href=(format!("/api/v1/releases/{}", r.id)) { "the release" } " · " a href=(format!("/api/v1/releases/{}/decisions", r.id)) { "its decision changes" } " · " a href=(format!("/api/v1/releases/{}/case", r.id)) { "its replay case" } }
    };
    layout(
        &title,
        p.now,
        Nav::Other,
        MainAttrs {
            release: Some(r.id),
            refresh_secs: (r.state == ReleaseState::Watching).then_some(60),
        },
        content,
    )
}

/// `valid block`, `false alarm`, ...: the label as words.
fn label_text(label: Feedback) -> String {
    label.as_str().replace('_', " ")
}

/// Feedback and finish buttons, wired to the API by the bundled script.
fn actions(r: &StoredRelease) -> Markup {
    let labels: &[Feedback] = if r.decision == Decision::Block {
        &[Feedback::ValidBlock, Feedback::FalseAlarm]
    } else {
        &[Feedback::ConfirmedNormal, Feedback::MissedProblem]
    };
    html! {
        section.actions aria-labelledby="actions-h" {
            h2 #actions-h { "Your call" }
            @if let Some(f) = r.feedback.first() {
                p { "Feedback given: " strong { (label_text(f.label)) } "." }
            } @else {
                div.group role="group" aria-labelledby="fb-label" {
                    span #fb-label { "Feedback: " }
                    @for l in labels {
                        button type="button" data-action="feedback" data-label=(l.as_str()) { (label_text(*l)) }
                    }
                    label.note { "note " input #feedback-note type="text" maxlength="4096" placeholder="optional"; }
                }
            }
            @if r.state == ReleaseState::Watching {
                div.group role="group" aria-labelledby="finish-label" {
                    span #finish-label { "Finish the release: " }
                    button type="button" data-action="finish" data-outcome="success" { "rolled out" }
                    button type="button" data-action="finish" data-outcome="rolled_back" { "rolled back" }
                }
            }
            p #action-status role="status" aria-live="polite" {}
        }
    }
}

fn tally_cells(t: Option<&Tally>) -> Markup {
    html! {
        @match t {
            Some(t) => { td { (number(t.value)) } td { (t.lines) } td { (t.minutes) } },
            None => { td { "–" } td { "–" } td { "–" } },
        }
    }
}

/// What a tally's value is for a rule (DESIGN's evidence: events counted, or a median).
fn tally_heading(rule: Rule) -> &'static str {
    match rule {
        Rule::HostMetric => "median",
        Rule::LogVolume => "events (or lines) per minute",
        Rule::ServerErrors => "5xx",
        Rule::Latency => "ms",
        Rule::Traffic => "requests per minute",
        _ => "count",
    }
}

/// What a tally's volume is for a rule: the work its count is normalised by.
fn volume_heading(rule: Rule) -> &'static str {
    match rule {
        Rule::ServerErrors | Rule::Latency | Rule::Traffic => "requests",
        _ => "log lines",
    }
}

fn evidence_table(rule: Rule, e: &Evidence) -> Markup {
    let groups = [
        ("released hosts, before", e.released_before.as_ref()),
        ("released hosts, after", e.released_after.as_ref()),
        ("reference hosts, before", e.reference_before.as_ref()),
        ("reference hosts, same minutes", e.reference_after.as_ref()),
    ];
    html! {
        @if groups.iter().any(|(_, t)| t.is_some()) {
            table.evidence {
                thead { tr { th scope="col" { "group" } th scope="col" { (tally_heading(rule)) } th scope="col" { (volume_heading(rule)) } th scope="col" { "host-minutes" } } }
                tbody { @for (name, t) in groups { @if t.is_some() { tr { th scope="row" { (name) } (tally_cells(t)) } } } }
            }
        }
        dl.figures {
            @if let Some(x) = e.expected { dt { "expected" } dd { (number(x)) } }
            dt { "observed" } dd { (number(e.observed)) }
            dt { "effect" } dd {
                (number(e.effect))
                @if let Some([low, high]) = e.effect_interval {
                    " (95 % interval " (low.map_or("0".to_string(), number)) "–" (high.map_or("∞".to_string(), number)) ")"
                }
                " (threshold " (number(e.threshold)) ")"
            }
            @if let Some(x) = e.learned_threshold { dt { "learned normal" } dd { (number(x)) } }
            @if let (Some(x), Some(bar)) = (e.e_value, e.e_bar) {
                dt { "evidence so far" } dd { (sci(x)) " of the " (sci(bar)) " that blocks (sequential test)" }
            } @else if let Some(x) = e.p_value { dt { "p-value" } dd { (p_value(x)) } }
            @if let Some(x) = e.dispersion { dt { "dispersion" } dd { (number(x)) } }
            @if let (Some(s), Some(w)) = (e.rounds_suspicious, e.window_rounds) { dt { "suspicious rounds" } dd { (s) " of " (w) } }
        }
    }
}

fn reason_card(reason: &Reason) -> Markup {
    let severity = match reason.severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    };
    html! {
        article class=(format!("reason severity-{severity}")) {
            p.reason-head {
                span class=(format!("badge severity-{severity}")) { (severity) } " "
                span.rule { (reason.rule.as_str().replace('_', " ")) } " "
                span.summary { (reason.summary) }
            }
            p.where {
                @if !reason.hosts.is_empty() { "hosts: " span.hostname { (reason.hosts.join(", ")) } }
                @if let Some(fp) = &reason.fingerprint { " · " a href=(format!("#{}", fingerprint_anchor(fp))) { "exception " code { (fp) } } }
                @if let Some(m) = &reason.metric { " · " a href=(format!("#{}", metric_anchor(m))) { "chart of " (m) } }
            }
            details.evidence open {
                summary { "Evidence" }
                (evidence_table(reason.rule, &reason.evidence))
            }
        }
    }
}

fn exception_panel(e: &ExceptionPanel, now: i64) -> Markup {
    html! {
        article.exception id=(fingerprint_anchor(&e.fingerprint)) {
            @match &e.definition {
                Some(d) => {
                    h3 {
                        @if d.dangerous { span.badge.dangerous { "dangerous" } " " }
                        code.class { (d.class) }
                    }
                    @if !d.causes.is_empty() {
                        ol.causes aria-label="cause chain" {
                            @for c in &d.causes { li { "caused by " code.class { (c) } } }
                        }
                    }
                    @if !d.message.is_empty() { p.message { (d.message) } }
                    p.seen {
                        "fingerprint " code { (e.fingerprint) } " · " (d.count) " counted"
                        @if let Some(s) = d.first_seen { " · first seen " time datetime=(iso(s)) { (time(s)) } " (" (ago(s, now)) ")" }
                        @if let Some(s) = d.last_seen { " · last seen " time datetime=(iso(s)) { (time(s)) } }
                    }
                    @if let Some(a) = &e.alerts {
                        p.alerts {
                            "alerts: " (a.count) (if a.count == 1 { " occurrence" } else { " occurrences" })
                            " on " (a.hosts.join(", "))
                            " · first " time datetime=(iso(a.first)) { (time(a.first)) }
                            " · last " time datetime=(iso(a.last)) { (time(a.last)) }
                            " — sent by the agents at once, ahead of the minutes' counters"
                        }
                    }
                    (e.chart.render())
                    @if let Some(m) = e.partial_minute {
                        p.quiet.partial {
                            "The minute of " time datetime=(iso(m)) { (time(m)) }
                            " is still open: its counts so far are partial."
                        }
                    }
                    @if !d.sample.is_empty() {
                        details.trace open {
                            summary { "Sample stack trace" }
                            pre tabindex="0" { code { (d.sample) } }
                        }
                    }
                }
                None => {
                    h3 { "Exception " code { (e.fingerprint) } }
                    p.quiet { "Its definition has not reached the detector." }
                    (e.chart.render())
                }
            }
        }
    }
}

/// Characters safe in an HTML id: ASCII alphanumerics, `-` and `_`; everything else
/// becomes `-`.
fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A query value, form-encoded.
pub fn url_component(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{Batch, Evidence, Tally};

    fn release() -> StoredRelease {
        StoredRelease {
            id: 7,
            app: "shop".into(),
            version: "2.0.1".into(),
            state: ReleaseState::Watching,
            outcome: None,
            created_at: 1_763_880_000,
            started_at: 1_763_880_000,
            finished_at: None,
            reference_hosts: vec!["ref-1".into()],
            batches: vec![Batch {
                at: 1_763_880_000,
                hosts: vec!["rel-1".into()],
            }],
            judge: None,
            last_round: Some(1_763_880_060),
            decision: Decision::Block,
            decided_at: Some(1_763_880_100),
            reasons: vec![Reason {
                rule: Rule::DangerousException,
                summary: "java.lang.NoSuchMethodError: <script>alert(1)</script>".into(),
                severity: Severity::Critical,
                hosts: vec!["rel-1".into()],
                fingerprint: Some("00112233aabbccdd".into()),
                metric: None,
                evidence: Evidence::default(),
            }],
            feedback: Vec::new(),
        }
    }

    fn page() -> ReleasePage {
        ReleasePage {
            now: 1_763_880_200,
            release: release(),
            exceptions: Vec::new(),
            business_charts: Vec::new(),
            log_charts: Vec::new(),
            metric_charts: Vec::new(),
            hosts: Vec::new(),
            decisions: vec![DecisionEntry {
                release_id: 7,
                app: "shop".into(),
                version: "2.0.1".into(),
                at: 1_763_880_100,
                decision: Decision::Block,
                previous: Decision::Pass,
                reason: Some("dangerous_exception: <b>bold</b>".into()),
            }],
        }
    }

    #[test]
    fn the_decision_and_reasons_are_shown_and_log_text_is_escaped() {
        let html = release_page(&page()).into_string();
        assert!(
            html.contains(r#"<p class="decision" id="decision">BLOCK</p>"#),
            "{html}"
        );
        assert!(html.contains(r#"id="exceptions""#), "{html}");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains(r#"data-label="valid_block""#), "{html}");
        assert!(html.contains(r#"data-label="false_alarm""#), "{html}");
        assert!(html.contains(r#"data-outcome="rolled_back""#), "{html}");
        assert!(html.contains(r##"href="#fp-00112233aabbccdd""##), "{html}");
        // The timeline: announced, batch, then the block with its reason, escaped.
        let at = |s: &str| {
            html.find(s)
                .unwrap_or_else(|| panic!("{s} missing in {html}"))
        };
        assert!(at("announced to Vigil") < at("batch 1: 1 host got 2.0.1"));
        assert!(
            at("batch 1: 1 host got 2.0.1") < at("dangerous_exception: &lt;b&gt;bold&lt;/b&gt;")
        );
    }

    #[test]
    fn a_passing_release_offers_the_other_feedback_and_a_finished_one_no_finish() {
        let mut p = page();
        p.release.decision = Decision::Pass;
        p.release.reasons.clear();
        p.release.state = ReleaseState::Finished;
        p.release.outcome = Some(crate::store::Outcome::Success);
        let html = release_page(&p).into_string();
        assert!(html.contains(r#"data-label="confirmed_normal""#), "{html}");
        assert!(!html.contains(r#"data-label="valid_block""#), "{html}");
        assert!(!html.contains(r#"data-action="finish""#), "{html}");
        assert!(html.contains("finished (success)"), "{html}");
        assert!(html.contains("No reason to worry."), "{html}");
    }

    #[test]
    fn reasons_are_grouped_by_category_in_a_fixed_order() {
        let mut p = page();
        let mut metric = p.release.reasons[0].clone();
        metric.rule = Rule::HostMetric;
        metric.fingerprint = None;
        metric.metric = Some("cpu_pct".into());
        let mut errors = metric.clone();
        errors.rule = Rule::ErrorRate;
        errors.metric = None;
        p.release.reasons = vec![metric, errors, p.release.reasons[0].clone()];
        let html = release_page(&p).into_string();
        let at = |s: &str| {
            html.find(s)
                .unwrap_or_else(|| panic!("{s} missing in {html}"))
        };
        assert!(at(r#"id="exceptions""#) < at(r#"id="logs""#));
        assert!(at(r#"id="logs""#) < at(r#"id="host-metrics""#));
        assert!(
            html.contains(r##"href="#metric-cpu_pct""##)
                || html.contains(r##"href="#metric-cpu-pct""##),
            "{html}"
        );
    }

    #[test]
    fn evidence_shows_each_group_and_the_test_behind_the_reason() {
        let tally = |value, lines, minutes| {
            Some(Tally {
                value,
                lines,
                minutes,
            })
        };
        let evidence = Evidence {
            released_before: tally(2.0, 12_000, 20),
            released_after: tally(9.0, 6_000, 10),
            reference_before: None,
            reference_after: tally(1.0, 6_100, 10),
            expected: Some(1.0),
            observed: 9.0,
            effect: 9.0,
            threshold: 3.0,
            learned_threshold: Some(2.5),
            p_value: Some(0.000_02),
            dispersion: None,
            effect_interval: None,
            e_value: None,
            e_bar: None,
            rounds_suspicious: Some(3),
            window_rounds: Some(5),
        };
        let html = evidence_table(Rule::ExceptionRate, &evidence).into_string();
        assert!(html.contains(r#"<th scope="col">count</th>"#), "{html}");
        assert!(
            html.contains(
                r#"<th scope="row">released hosts, after</th><td>9</td><td>6000</td><td>10</td>"#
            ),
            "{html}"
        );
        assert!(!html.contains("reference hosts, before"), "{html}");
        assert!(html.contains("<dd>9 (threshold 3)</dd>"), "{html}");
        assert!(html.contains("<dd>&lt; 0.0001</dd>"), "{html}");
        assert!(html.contains("<dd>3 of 5</dd>"), "{html}");
        let html = evidence_table(Rule::HostMetric, &evidence).into_string();
        assert!(html.contains(r#"<th scope="col">median</th>"#), "{html}");
        // A sequential test's reason shows its evidence against the bar, not a p-value.
        let sequential = Evidence {
            e_value: Some(48_210.0),
            e_bar: Some(3_000.0),
            effect_interval: Some([Some(4.5), None]),
            ..evidence
        };
        let html = evidence_table(Rule::HostMetric, &sequential).into_string();
        assert!(
            html.contains("<dd>4.82e4 of the 3.00e3 that blocks (sequential test)</dd>"),
            "{html}"
        );
        assert!(
            html.contains("<dd>9 (95 % interval 4.5–∞) (threshold 3)</dd>"),
            "{html}"
        );
        assert!(!html.contains("p-value"), "{html}");
    }

    #[test]
    fn query_values_and_ids_are_made_safe() {
        assert_eq!(url_component("shop & co/1"), "shop+%26+co%2F1");
        assert_eq!(slug("a\"b<c"), "a-b-c");
    }
}
