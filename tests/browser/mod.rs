//! Headless Chromium for the page tests: the DOM after scripts ran (`--dump-dom`),
//! screenshots (`--screenshot`), and a live session driven over the DevTools protocol for
//! keyboard use (Tab, Enter) and script evaluation.
//!
//! Chromium is Debian's `chromium` (`/usr/bin/chromium`, installed by `.ci/run`), or the
//! binary named by `VIGIL_CHROMIUM`. Without it the tests fail and say how to install it.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::wait::{Group, output_within, spawn_group, wait_for};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The flags every run gets: headless, no sandbox (tests run as root in CI), nothing
/// fetched from the network.
const FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
];
/// The longest a one-shot Chromium run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest a DevTools command may take to be answered.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium binary.
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("VIGIL_CHROMIUM") {
        return PathBuf::from(path);
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "no Chromium: install Debian's chromium (`apt-get install chromium`, as .ci/run does) \
         or set VIGIL_CHROMIUM to a Chromium binary"
    );
}

/// Where tests leave screenshots for people to look at.
pub fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Chromium with the common flags and `profile` as its profile, with `args`.
fn command(profile: &Path, args: &[String]) -> Command {
    let mut command = Command::new(chromium());
    command
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args);
    command
}

/// Runs Chromium once with `args` and a fresh profile; returns its standard output. Its
/// output is read while it runs (a DOM larger than a pipe's buffer does not block it); after
/// [`RUN_TIMEOUT`] it is killed, with every process it started.
fn run(args: &[String]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let output = output_within(&mut command(profile.path(), args), None, RUN_TIMEOUT);
    assert!(
        output.status.success(),
        "chromium {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The DOM of `url` once loaded and its scripts ran, as HTML.
pub fn dump_dom(url: &str) -> String {
    run(&[
        "--virtual-time-budget=3000".into(),
        "--dump-dom".into(),
        url.into(),
    ])
}

/// Saves a PNG of `url` in a `width` × `height` window; returns its path.
pub fn screenshot(url: &str, name: &str, width: u32, height: u32) -> PathBuf {
    let path = artefacts().join(name);
    let _ = std::fs::remove_file(&path);
    run(&[
        format!("--window-size={width},{height}"),
        "--virtual-time-budget=3000".into(),
        format!("--screenshot={}", path.display()),
        url.into(),
    ]);
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        path.display(),
        png.len()
    );
    path
}

/// A Chromium showing one page, driven over the DevTools protocol; Chromium and every
/// process it started are killed when this is dropped.
pub struct Session {
    // Killed once `drop` has closed the socket, before the profile is removed.
    chromium: Group,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Session {
    /// Starts Chromium on `url` with a `width` × `height` window.
    pub fn open(url: &str, width: u32, height: u32) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        // Killed by the guard from here on, also when a wait below fails.
        let mut chromium = spawn_group(
            command(
                profile.path(),
                &[
                    "--remote-debugging-port=0".into(),
                    "--remote-allow-origins=*".into(),
                    format!("--window-size={width},{height}"),
                    url.into(),
                ],
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
        );
        // Chromium writes the port it chose to DevToolsActivePort in the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port = wait_for(
            Duration::from_secs(30),
            "chromium to open its DevTools port (DevToolsActivePort)",
            || {
                if let Some(status) = chromium.try_wait() {
                    panic!("chromium exited before opening its DevTools port: {status}");
                }
                std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            },
        );
        let socket_url = wait_for(
            Duration::from_secs(30),
            "chromium to show a page target on its DevTools port",
            || {
                let targets: Option<Value> =
                    ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
                        .call()
                        .ok()
                        .and_then(|mut r| r.body_mut().read_json().ok());
                targets.as_ref().and_then(|t| {
                    t.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                        .as_str()
                        .map(str::to_owned)
                })
            },
        );
        let (socket, _) = tungstenite::connect(&socket_url)
            .unwrap_or_else(|e| panic!("DevTools socket {socket_url}: {e}"));
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("socket timeout");
        }
        let mut session = Self {
            chromium,
            socket,
            next_id: 0,
            _profile: profile,
        };
        session.call("Page.bringToFront", json!({}));
        // Not the `about:blank` the target may still show before it navigates to `url`.
        let loaded = format!(
            "document.readyState === 'complete' && location.href === {}",
            json!(url)
        );
        assert!(
            session.wait_for(&loaded, Duration::from_secs(30)),
            "chromium did not load {url}"
        );
        session
    }

    /// Sends a DevTools command and returns its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|error| panic!("DevTools {method} failed: {error}"))
    }

    /// Sends a DevTools command; its result, or the error Chromium answered (an evaluation
    /// cut short by a page load answers "Execution context was destroyed").
    pub fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::text(command))
            .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
        // Each read waits at most the socket's timeout; events in between do not make the
        // wait for the answer endless.
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "DevTools {method}: no answer within {CALL_TIMEOUT:?}"
            );
            let message = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if answer["id"] == id {
                return match answer.get("error") {
                    Some(error) if !error.is_null() => Err(error.clone()),
                    _ => Ok(answer["result"].clone()),
                };
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression} threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true` (through page loads).
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .try_call(
                    "Runtime.evaluate",
                    json!({"expression": expression, "returnByValue": true}),
                )
                .unwrap_or_default()
                .get("result")
                .and_then(|r| r.get("value"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if done {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Presses and releases a key as a keyboard would (`Tab`, `Enter`, ...).
    pub fn press(&mut self, key: &str) {
        let (code, text) = match key {
            "Tab" => (9, ""),
            "Enter" => (13, "\r"),
            " " => (32, " "),
            other => panic!("no key code for {other:?}"),
        };
        let down = if text.is_empty() {
            "rawKeyDown"
        } else {
            "keyDown"
        };
        let event = |kind: &str| {
            json!({
                "type": kind, "key": key, "code": if key == " " { "Space" } else { key },
                "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code, "text": text,
                "unmodifiedText": text,
            })
        };
        self.call("Input.dispatchKeyEvent", event(down));
        self.call("Input.dispatchKeyEvent", event("keyUp"));
    }

    /// Presses Tab until `predicate` (a JavaScript expression over `document.activeElement`
    /// named `el`) holds; returns how many presses it took.
    pub fn tab_to(&mut self, predicate: &str, most: usize) -> usize {
        let check = format!(
            "(() => {{ const el = document.activeElement; return Boolean(el && ({predicate})); }})()"
        );
        for presses in 1..=most {
            self.press("Tab");
            if self.eval(&check) == Value::Bool(true) {
                return presses;
            }
        }
        panic!("{most} presses of Tab never reached an element where {predicate}");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        // `chromium` (a process group guard) kills Chromium and its processes.
    }
}
