//! A real detector on 127.0.0.1 for the tests of its gRPC and HTTP ports, with a step
//! deadline so that a detector that never answers fails a test instead of hanging it.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::transport::Channel;
use vigil_detector::Detector;
use vigil_detector::clock::Clock;
use vigil_detector::config::DetectorConfig;
use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::{AppCounters, MinuteReport, Report, report::Body};

/// The longest one step (a connection, an answer) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

mod clock;
#[allow(unused_imports)]
pub use clock::ManualClock;

/// The output of `future`; fails saying what it waited for if it takes longer than
/// [`STEP_TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP_TIMEOUT:?} waiting for {what}"))
}

/// A detector serving in this process; stopped when dropped.
pub struct Running {
    /// A gRPC channel to it.
    pub channel: Channel,
    /// Its HTTP base URL (`http://127.0.0.1:PORT`).
    pub http: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The answer of a blocking HTTP call made on its own thread: status and body.
pub async fn http(method: &'static str, url: String, body: Option<String>) -> (u16, String) {
    let call = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(STEP_TIMEOUT))
            .build()
            .new_agent();
        let response = match body {
            Some(body) => agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.as_bytes()),
            None => agent.get(&url).call(),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    });
    within("an HTTP answer", call).await.expect("HTTP thread")
}

/// Polls `GET url` (JSON) until `done` holds for the answer, which is returned; fails
/// saying what it waited for after [`STEP_TIMEOUT`].
pub async fn wait_for_json(
    what: &str,
    url: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    within(what, async {
        loop {
            let (status, text) = http("GET", url.to_owned(), None).await;
            if status == 200
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
                && done(&value)
            {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A webhook receiver on 127.0.0.1: its URL, and the JSON bodies POSTed to it (each
/// answered `200`).
pub async fn webhook_receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("webhook listener");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as many bytes as Content-Length says.
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data);
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + length {
                        let body = &data[end + 4..end + 4 + length];
                        if let Ok(value) = serde_json::from_slice(body) {
                            let _ = tx.send(value);
                        }
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

/// Starts a detector with its data in `dir/data`, free ports, `extra` configuration lines,
/// and `token` required when given.
pub async fn start(dir: &Path, extra: &str, token: Option<&str>) -> Running {
    start_with_clock(dir, extra, token, None).await
}

/// Like [`start`], with the judgement on `clock` when given.
pub async fn start_with_clock(
    dir: &Path,
    extra: &str,
    token: Option<&str>,
    clock: Option<Arc<dyn Clock>>,
) -> Running {
    let mut text = format!(
        "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
        dir.join("data")
    );
    if let Some(token) = token {
        let file = dir.join("token");
        std::fs::write(&file, format!("{token}\n")).expect("token file");
        text.push_str(&format!("token_file = {file:?}\n"));
    }
    text.push_str(extra);
    let config = DetectorConfig::parse(Path::new("detector.toml"), &text).expect("config");
    let mut detector = Detector::bind(config).await.expect("bind");
    if let Some(clock) = clock {
        detector = detector.with_clock(clock);
    }
    let (grpc, http) = (detector.grpc_addr(), detector.http_addr());
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(detector.serve(async {
        let _ = stopped.await;
    }));
    let endpoint = Channel::from_shared(format!("http://{grpc}")).expect("endpoint");
    let channel = within("a connection to the detector", endpoint.connect())
        .await
        .expect("connect");
    Running {
        channel,
        http: format!("http://{http}"),
        stop: Some(stop),
    }
}

/// A minute report of host `web-1`, app `shop`, from agent `instance`.
pub fn minute_report(instance: &str, seq: u64, minute: i64, lines: u64) -> Report {
    Report {
        protocol_version: PROTOCOL_VERSION,
        host: "web-1".into(),
        instance: instance.into(),
        agent_version: "test".into(),
        fingerprint_version: 1,
        seq,
        sent_at: minute,
        body: Some(Body::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: "shop".into(),
                lines,
                ..Default::default()
            }],
            host_metrics: None,
        })),
    }
}

/// Creates a release of `shop` at `version` on `h1` (reference `h2`), started and announced
/// at `started_at`; returns its id.
pub async fn create_shop_release<S: vigil_detector::store::Store>(
    releases: &vigil_detector::release::Releases<S>,
    version: &str,
    started_at: i64,
) -> i64 {
    let request = serde_json::from_value(serde_json::json!({
        "app": "shop", "version": version, "hosts": ["h1"],
        "reference_hosts": ["h2"], "started_at": started_at,
    }))
    .expect("a valid release request");
    releases
        .create(request, started_at)
        .await
        .expect("the release is created")
        .id
}

/// A dangerous `NoSuchMethodError` raised on `h1` of `shop` at `at`.
pub fn dangerous_alert(at: i64) -> vigil_detector::release::StoredAlert {
    vigil_detector::release::StoredAlert {
        app: "shop".into(),
        host: "h1".into(),
        at,
        fingerprint: 0x9f3a_5c0e_11d2_b7a4,
        definition: vigil_detector::judge::Definition {
            class: "java.lang.NoSuchMethodError".into(),
            causes: vec![],
            message: "shop.Promo.apply()V".into(),
            frames: vec!["shop.Checkout.run".into()],
            dangerous: true,
        },
    }
}
