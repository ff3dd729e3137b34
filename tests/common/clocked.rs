//! A detector served from the test process with its judgement on a clock the test sets
//! ([`ManualClock`]): minute rounds happen when the test moves the clock past a minute
//! boundary, so a round test takes seconds instead of waiting for the wall clock. Agents
//! are the real `vigil-agent` binary and reach it over gRPC on 127.0.0.1 like any
//! detector; ingest keeps the machine's clock.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use vigil_detector::Detector;
use vigil_detector::config::DetectorConfig;

#[path = "../../detector/tests/support/clock.rs"]
mod clock;
#[allow(unused_imports)]
pub use clock::ManualClock;

/// Seconds after a minute boundary at which the detector runs that minute's round.
pub const ROUND_DELAY_SECS: i64 = vigil_detector::release::ROUND_DELAY_SECS as i64;

/// The detector, stopped when dropped.
pub struct ClockedDetector {
    pub grpc: String,
    pub http: String,
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ClockedDetector {
    /// Starts a detector with its data in `dir`, its clock standing at `now` (UTC Unix
    /// seconds); its first round is at the first minute boundary after `now`, plus
    /// [`ROUND_DELAY_SECS`].
    pub fn start(dir: &Path, now: i64) -> Self {
        let text = format!(
            "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            dir.join("detector-data")
        );
        let config = DetectorConfig::parse(Path::new("detector.toml"), &text).expect("config");
        let clock = ManualClock::at(now);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let detector = runtime
            .block_on(Detector::bind(config))
            .expect("the detector binds");
        let detector = detector.with_clock(Arc::clone(&clock) as Arc<_>);
        let (grpc, http) = (detector.grpc_addr(), detector.http_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let served = runtime.block_on(detector.serve(async {
                let _ = stopped.await;
            }));
            if let Err(e) = served {
                eprintln!("the detector stopped: {e}");
            }
        });
        Self {
            grpc: format!("http://{grpc}"),
            http: format!("http://{http}"),
            clock,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Moves the detector's clock to `now` (never backwards).
    pub fn set_clock(&self, now: i64) {
        self.clock.set(now);
    }

    /// `GET` an API path, returning the JSON body.
    pub fn get(&self, path: &str) -> serde_json::Value {
        super::get_json(&self.http, path)
    }

    /// `POST` `body` to an API path, returning the JSON answer.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        super::post_json(&self.http, path, body)
    }

    /// Total lines stored for `app` on `host`, `None` while the API does not answer.
    pub fn try_lines(&self, app: &str, host: &str) -> Option<u64> {
        super::stored_lines(&self.http, app, host)
    }
}

impl Drop for ClockedDetector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
