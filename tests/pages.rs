//! The pages in a real browser: a release judged by the detector from the counters of real
//! agents (the `vigil-agent` binary, over gRPC on 127.0.0.1), opened in headless Chromium
//! as a person would. The detector's minute rounds run on a clock the test moves, so the
//! test never waits for a minute boundary.
//!
//! Three hosts of "shop" log twelve minutes of history (the agents count each event in the
//! minute of its own timestamp). Release 2.0.1 reached `shop-rel-1` seven minutes ago;
//! since then that host throws a `NoSuchMethodError` whose message carries a `<script>`
//! and an `<img onerror>`, as an attacker who controls a logged value could write. The
//! detector blocks on the agent's alert, its minute rounds go on, and then:
//! - the release page shows BLOCK, the reason under "Exceptions", the exception's class,
//!   message (as text, never run), sample trace, and charts with data; screenshots are
//!   saved under `target/tmp/page-screenshots/`;
//! - the health board shows the app, its hosts reporting, the blocked release and the
//!   dangerous exception; the release list filters by decision;
//! - with the keyboard only (Tab, Enter), a person gives feedback and finishes the release,
//!   and the API shows both.

mod browser;
mod common;

use std::time::Duration;

use common::clocked::{ClockedDetector, ROUND_DELAY_SECS};
use common::{AgentSetup, TimedLogs, eventually, now_ms, spawn};
use serde_json::{Value, json};

const HOSTS: [&str; 3] = ["shop-rel-1", "shop-ref-1", "shop-ref-2"];
/// Records per host per minute.
const PER_MINUTE: i64 = 120;
/// What an attacker put into a value the service logs in its exception message.
const HOSTILE: &str = r#"<script>document.body.dataset.pwned='script'</script><img src=x onerror="document.body.dataset.pwned='img'">"#;

/// A class name with no place to break a line.
const LONG_CLASS: &str = "com.example.checkout.payment.gateway.internal.adapters.legacy.AbstractSingletonProxyFactoryBeanConfigurationIncompatibleClassChangeError";

/// The record `i` at `t` (Unix ms) on `host`; `broken` once the host runs 2.0.1.
fn record(host: &str, t: i64, i: i64, broken: bool) -> String {
    let stamp = jiff::Timestamp::from_millisecond(t)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    if broken && i % 30 == 7 {
        return format!(
            "{stamp} ERROR [exec-{}] shop.pay.CheckoutController - checkout {i} failed\n\
             java.lang.NoSuchMethodError: 'void shop.pay.Gateway.charge(java.lang.String)' for customer {HOSTILE}\n\
             \tat shop.pay.CheckoutController.pay(CheckoutController.java:88)\n\
             \tat shop.pay.CheckoutController.handle(CheckoutController.java:41)\n\
             \tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:897)\n\
             Caused by: {LONG_CLASS}: gateway 3.1 has no charge(String)\n\
             \tat shop.pay.Gateway.bind(Gateway.java:12)\n",
            i % 8
        );
    }
    if i % 60 == 11 {
        return format!(
            "{stamp} WARN  [exec-{}] shop.stock.StockClient - stock lookup {i} retried\n\
             java.net.SocketTimeoutException: Read timed out\n\
             \tat shop.stock.StockClient.lookup(StockClient.java:120)\n\
             \tat shop.Service.handle(Service.java:20)\n",
            i % 8
        );
    }
    format!(
        "{stamp} INFO  [exec-{}] shop.Service - request {i} served on {host}\n",
        i % 8
    )
}

/// The attribute values of `attr` on the elements of `dom` whose tag opens with `open`.
fn attributes<'a>(dom: &'a str, open: &str, attr: &str) -> Vec<&'a str> {
    dom.match_indices(open)
        .filter_map(|(at, _)| {
            let tag = &dom[at..at + dom[at..].find('>').unwrap_or(0)];
            let start = tag.find(&format!(" {attr}=\""))? + attr.len() + 3;
            tag[start..].split('"').next()
        })
        .collect()
}

#[test]
fn a_blocked_release_reads_at_a_glance_and_is_handled_with_the_keyboard() {
    let _ = browser::chromium();
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    let this_minute = now - now.rem_euclid(60_000);
    // The detector's clock a minute behind: its next round, when the test moves the clock
    // to this minute's round, judges the minutes before this one.
    let detector = ClockedDetector::start(dir.path(), now / 1000 - 60);
    let start = this_minute - 12 * 60_000;
    let release_ms = start + 5 * 60_000 + 20_000;

    let release = detector.post(
        "/api/v1/releases",
        &json!({
            "app": "shop",
            "version": "2.0.1",
            "hosts": [HOSTS[0]],
            "reference_hosts": [HOSTS[1], HOSTS[2]],
            "started_at": release_ms / 1000,
        }),
    );
    let id = release["id"].as_i64().expect("release id");

    let mut paths = Vec::new();
    let mut agents = Vec::new();
    for host in HOSTS {
        let logs_dir = dir.path().join(host);
        std::fs::create_dir_all(&logs_dir).expect("log dir");
        paths.push(logs_dir.join("shop.log"));
        let glob = format!("{}/*.log", logs_dir.display());
        let config = AgentSetup {
            logs_extra: "timezone = \"UTC\"\napp_packages = [\"shop\"]\n",
            host_extra: "interval = \"1s\"",
            ..AgentSetup::new(&detector.grpc, host, "shop", &glob)
        }
        .write(dir.path());
        agents.push(spawn(
            "vigil-agent",
            &config,
            &dir.path().join(format!("{host}.log")),
        ));
    }
    let logs = TimedLogs::start(paths, start, PER_MINUTE, move |log, t, i| {
        record(HOSTS[log], t, i, log == 0 && t >= release_ms)
    });

    // Blocked on the alert; then, once the history's completed minutes are stored, this
    // minute's round judges them.
    let judged_through = this_minute / 1000 - 60;
    let stored_through = |minute: i64| {
        HOSTS.iter().all(|host| {
            detector.get(&format!(
                "/api/v1/series?app=shop&host={host}&from={minute}&to={minute}"
            ))["minutes"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
        })
    };
    assert!(
        eventually(Duration::from_secs(60), || stored_through(judged_through)
            && detector.get(&format!("/api/v1/releases/{id}"))["decision"]
                == "block"),
        "the history was not stored, or the alert did not block: {}",
        detector.get(&format!("/api/v1/releases/{id}"))
    );
    // The agents sample host metrics of live minutes and send a minute's figures when it
    // is over, or when they stop: a few samples, then a clean stop sends them all.
    std::thread::sleep(Duration::from_millis(2_500));
    drop(logs);
    for agent in &mut agents {
        assert!(agent.terminate(), "an agent did not stop cleanly");
    }
    let last = now_ms() / 1000 / 60 * 60;
    // The round of the minute after the agents stopped judges the history and their last
    // minute.
    detector.set_clock(last + 60 + ROUND_DELAY_SECS);
    let mut current = Value::Null;
    let judged = eventually(Duration::from_secs(30), || {
        current = detector.get(&format!("/api/v1/releases/{id}"));
        current["decision"] == "block"
            && current["last_round"]
                .as_i64()
                .is_some_and(|m| m >= last.max(judged_through))
    });
    assert!(judged, "release not blocked and judged: {current}");
    let measured = |host: &str| {
        detector.get(&format!("/api/v1/series?app=shop&host={host}"))["minutes"]
            .as_array()
            .is_some_and(|m| {
                m.iter()
                    .any(|m| m["host_metrics"]["mem_used_pct"].is_number())
            })
    };
    assert!(
        measured(HOSTS[0]) && measured(HOSTS[1]),
        "no host metrics stored"
    );
    let fingerprint = current["reasons"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["rule"] == "dangerous_exception"))
        .and_then(|r| r["fingerprint"].as_str())
        .unwrap_or_else(|| panic!("no dangerous_exception reason: {current}"))
        .to_owned();

    // The release page, as the browser has it after its script ran.
    let page = format!("{}/releases/{id}", detector.http);
    let dom = browser::dump_dom(&page);
    assert!(
        dom.contains(r#"<p class="decision" id="decision">BLOCK</p>"#),
        "{dom}"
    );
    assert!(dom.contains("Decided <time"), "no decision time: {dom}");
    assert!(
        dom.contains(r#"id="exceptions""#),
        "no Exceptions category: {dom}"
    );
    assert!(
        dom.contains(r#"<span class="rule">dangerous exception</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(r#"id="fp-{fingerprint}""#)),
        "no exception panel: {dom}"
    );
    assert!(
        dom.contains(r#"<code class="class">java.lang.NoSuchMethodError</code>"#),
        "{dom}"
    );
    assert!(
        dom.contains("shop.pay.CheckoutController.pay(CheckoutController.java:88)"),
        "no sample trace: {dom}"
    );
    assert!(dom.contains("first seen <time"), "{dom}");
    // The hostile message is text on the page; it never ran.
    assert!(
        dom.contains("&lt;script&gt;document.body.dataset.pwned='script'&lt;/script&gt;"),
        "message not shown as text: {dom}"
    );
    assert!(dom.contains("&lt;img src=x onerror="), "{dom}");
    assert!(!dom.contains("data-pwned"), "log text ran as script: {dom}");
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "a script element besides vigil.js: {dom}"
    );
    assert_eq!(
        dom.matches("<img").count(),
        0,
        "an img element from log text: {dom}"
    );
    // Charts with data: the exception on released vs reference hosts with the batch
    // marked, log lines, and host metrics.
    let chart = format!(r#"id="chart-fp-{fingerprint}""#);
    let at = dom
        .find(&chart)
        .unwrap_or_else(|| panic!("no exception chart: {dom}"));
    let figure = &dom[at..at + dom[at..].find("</figure>").expect("figure end")];
    assert!(
        figure.contains("<polyline"),
        "exception chart without a line: {figure}"
    );
    assert!(
        figure.contains(r#"class="marker""#),
        "no batch marker: {figure}"
    );
    assert!(
        figure.contains("released hosts (1)") && figure.contains("reference hosts (2)"),
        "{figure}"
    );
    let points = attributes(&dom, "<figure", "data-points");
    let maxima = attributes(&dom, "<figure", "data-max");
    assert_eq!(
        points.len(),
        7,
        "1 exception + 2 log + 4 metric charts: {points:?}"
    );
    assert!(
        points.iter().all(|p| p.parse::<u32>().is_ok_and(|p| p > 0)),
        "a chart without data: {points:?}"
    );
    assert!(
        maxima[0].parse::<f64>().is_ok_and(|m| m >= 1.0),
        "exception chart max {maxima:?}"
    );
    assert!(
        dom.contains(r#"id="metric-cpu_pct""#) && dom.contains(r#"id="metric-load1""#),
        "{dom}"
    );
    // The timeline holds the change to block.
    let block = r#"<span class="badge decision-pass">pass</span> → <span class="badge decision-block">block</span>"#;
    assert!(
        dom.contains(r#"id="timeline-h">Timeline</h2>"#),
        "no timeline: {dom}"
    );
    assert!(
        dom.contains(block),
        "the block is not on the timeline: {dom}"
    );
    for host in HOSTS {
        assert!(
            dom.contains(&format!(r#"<td class="hostname">{host}</td>"#)),
            "host {host} missing: {dom}"
        );
    }
    let top = browser::screenshot(&page, "release-blocked.png", 1366, 900);
    let full = browser::screenshot(&page, "release-blocked-full.png", 1366, 3000);
    println!("screenshots: {} {}", top.display(), full.display());

    // The health board and the release list.
    let board_url = format!("{}/", detector.http);
    let board = browser::dump_dom(&board_url);
    assert!(
        board.contains(r#"<h3 id="app-shop">"#),
        "no shop card: {board}"
    );
    assert!(board.contains("3 of 3 hosts reporting"), "{board}");
    assert!(
        board.contains(r#"<span class="badge decision-block">block</span>"#),
        "{board}"
    );
    assert!(
        board.contains(&format!(r#"href="/releases/{id}""#)),
        "{board}"
    );
    assert!(
        board.contains(r#"<span class="badge dangerous">dangerous</span>"#),
        "{board}"
    );
    assert!(
        board.contains(block),
        "the block is not among the decision changes: {board}"
    );
    assert!(
        board.contains("&lt;script&gt;") && !board.contains("data-pwned"),
        "{board}"
    );
    assert_eq!(board.matches("<script").count(), 1, "{board}");
    let shot = browser::screenshot(&board_url, "health-board.png", 1366, 900);
    println!("screenshot: {}", shot.display());
    let blocked = browser::dump_dom(&format!("{}/releases?decision=block", detector.http));
    assert!(
        blocked.contains(&format!(r#"href="/releases/{id}""#)),
        "{blocked}"
    );
    let passed = browser::dump_dom(&format!(
        "{}/releases?app=shop&decision=pass",
        detector.http
    ));
    assert!(passed.contains("No release matches."), "{passed}");

    // Nothing is wider than the window, on a laptop or a narrow one, long class name and
    // all.
    let mut session = browser::Session::open(&page, 1366, 900);
    assert!(
        dom.contains(&format!(
            r#"caused by <code class="class">{LONG_CLASS}</code>"#
        )),
        "{dom}"
    );
    for width in [1366, 760] {
        session.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        // The new size is laid out by the next frames.
        session.eval(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
        );
        let overflow = session
            .eval("document.documentElement.scrollWidth - document.documentElement.clientWidth");
        assert_eq!(
            overflow,
            json!(0),
            "the page is wider than a {width} px window; elements past its edge: {}",
            session.eval(
                "[...document.querySelectorAll('body *')]\
                 .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)\
                 .slice(0, 8).map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)} in ${e.parentElement.tagName}.${e.parentElement.className} (overflow-x ${getComputedStyle(e.parentElement).overflowX}, right ${Math.round(e.parentElement.getBoundingClientRect().right)}): ${e.parentElement.outerHTML.slice(0, 300)}`)"
            )
        );
    }
    session.call("Emulation.clearDeviceMetricsOverride", json!({}));

    // Keyboard only: Tab to "valid block", Enter; then to "rolled back", Enter.
    session.tab_to("el.dataset.label === 'valid_block'", 60);
    session.press("Enter");
    let given = eventually(Duration::from_secs(20), || {
        detector.get(&format!("/api/v1/releases/{id}"))["feedback"][0]["label"] == "valid_block"
    });
    assert!(given, "Enter on the valid-block button gave no feedback");
    assert!(
        session.wait_for(
            "document.readyState === 'complete' && (document.getElementById('action-status') || {}).textContent === 'Feedback recorded: valid block.'",
            Duration::from_secs(20),
        ),
        "the reloaded page does not confirm the feedback: {}",
        session.eval("document.getElementById('main').innerText")
    );
    // A second window, opened before the finish, goes stale.
    let mut stale = browser::Session::open(&page, 1366, 900);
    session.tab_to("el.dataset.outcome === 'rolled_back'", 60);
    session.press("Enter");
    let finished = eventually(Duration::from_secs(20), || {
        let r = detector.get(&format!("/api/v1/releases/{id}"));
        r["state"] == "finished" && r["outcome"] == "rolled_back"
    });
    assert!(
        finished,
        "Enter on the rolled-back button did not finish the release"
    );
    assert!(
        session.wait_for(
            "document.readyState === 'complete' && document.body.innerText.includes('finished (rolled back)')",
            Duration::from_secs(20),
        ),
        "the reloaded page does not show the release finished"
    );
    drop(session);
    // Its finish button is refused by the API, and the page says why, in place, with the
    // buttons usable again and focus kept.
    stale.tab_to("el.dataset.outcome === 'success'", 60);
    stale.press("Enter");
    let said = "(document.getElementById('action-status') || {}).textContent";
    assert!(
        stale.wait_for(
            &format!("{said} === 'Not done: release {id} is already finished (rolled_back)'"),
            Duration::from_secs(20),
        ),
        "the stale page does not say why: {}",
        stale.eval(said)
    );
    assert_eq!(
        stale.eval("document.activeElement.dataset.outcome === 'success' && !document.activeElement.disabled"),
        json!(true)
    );
    assert_eq!(
        detector.get(&format!("/api/v1/releases/{id}"))["outcome"],
        "rolled_back"
    );
    drop(stale);
}
