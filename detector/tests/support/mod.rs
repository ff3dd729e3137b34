//! A real detector on 127.0.0.1 for the tests of its gRPC and HTTP ports, with a step
//! deadline so that a detector that never answers fails a test instead of hanging it.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::transport::Channel;
use vigil_detector::Detector;
use vigil_detector::config::DetectorConfig;
use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::{AppCounters, MinuteReport, Report, report::Body};

/// The longest one step (a connection, an answer) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Starts a detector with its data in `dir/data`, free ports, `extra` configuration lines,
/// and `token` required when given.
pub async fn start(dir: &Path, extra: &str, token: Option<&str>) -> Running {
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
    let detector = Detector::bind(config).await.expect("bind");
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
