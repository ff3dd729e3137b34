//! Shipping: one bidirectional `vigil.v1.Collector` stream to the detector. Reports are read
//! from the on-disk spool and sent in `seq` order, at most a window of them unacknowledged;
//! an acknowledged report leaves the spool. After a reconnect everything unacknowledged is
//! sent again (the detector stores each `(instance, seq)` once). Reconnection backs off
//! exponentially with jitter; refusals that retrying cannot fix are logged as errors.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use vigil_proto::v1::collector_client::CollectorClient;
use vigil_proto::v1::{Ack, AckStatus, Report};

use crate::admin::{Metrics, add};
use crate::config::DetectorConfig;
use crate::spool::SharedSpool;

/// Reports sent but not yet acknowledged, at most.
const WINDOW: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why shipping cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("detector endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// Handle to the shipping task, which sends what the spool holds.
#[derive(Debug)]
pub struct Shipper {
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    acked: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Shipper {
    /// Starts shipping the reports of `spool` to the detector of `config`, beginning after
    /// `acked` (the highest seq known to be acknowledged).
    ///
    /// # Errors
    /// [`ShipError::Endpoint`] when the endpoint cannot be used at all.
    pub fn start(
        config: &DetectorConfig,
        spool: SharedSpool,
        acked: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ShipError> {
        let endpoint = endpoint(config)?;
        let wake = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let (acked_tx, acked) = watch::channel(acked);
        let task = tokio::spawn(deliver(
            Link {
                endpoint,
                token: config.token.clone(),
                spool,
                wake: Arc::clone(&wake),
                acked: acked_tx,
                metrics,
            },
            stop_rx,
        ));
        Ok(Self {
            wake,
            stop,
            acked,
            task,
        })
    }

    /// Tells the task that new reports were appended to the spool.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The highest seq such that it and every report before it were acknowledged.
    pub fn acked(&self) -> watch::Receiver<u64> {
        self.acked.clone()
    }

    /// Waits up to `grace` for the spooled reports to be acknowledged, then stops. What is
    /// still unacknowledged stays in the spool for the next start.
    pub async fn close(self, grace: Duration) {
        let _ = self.stop.send(true);
        // Dropped now, not at some later turn of the runtime: a reload opens the spool
        // again right after.
        crate::task::stop_within(self.task, grace).await;
    }
}

fn endpoint(config: &DetectorConfig) -> Result<Endpoint, ShipError> {
    let fail = |reason: String| ShipError::Endpoint {
        endpoint: config.endpoint.clone(),
        reason,
    };
    let mut endpoint =
        Endpoint::from_shared(config.endpoint.clone()).map_err(|e| fail(e.to_string()))?;
    if config.endpoint.starts_with("https://") {
        endpoint = endpoint
            .tls_config(client_tls(config).map_err(fail)?)
            .map_err(|e| fail(e.to_string()))?;
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// TLS towards the detector: its CA (`tls_ca`, else the system's roots) and, for mutual
/// TLS, this agent's certificate and key.
fn client_tls(config: &DetectorConfig) -> Result<ClientTlsConfig, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &config.tls_ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

/// Tries the detector once: connects and opens the stream. For `vigil-agent check`.
///
/// # Errors
/// What went wrong, in words.
pub async fn probe(config: &DetectorConfig) -> Result<(), String> {
    let endpoint = endpoint(config).map_err(|e| e.to_string())?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("{e}: {e:?}"))?;
    let (_tx, rx) = mpsc::channel::<Report>(1);
    let mut client = CollectorClient::new(channel);
    let request =
        authorized(ReceiverStream::new(rx), config.token.as_deref()).map_err(|e| e.to_string())?;
    tokio::time::timeout(CONNECT_TIMEOUT, client.stream(request))
        .await
        .map_err(|_| "the detector did not answer".to_owned())?
        .map_err(|status| format!("{}: {}", status.code(), status.message()))?;
    Ok(())
}

fn authorized<T>(message: T, token: Option<&str>) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            Status::invalid_argument("the token holds characters not allowed in a header")
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// What a session needs to reach the detector and the spool.
struct Link {
    endpoint: Endpoint,
    token: Option<String>,
    spool: SharedSpool,
    wake: Arc<Notify>,
    acked: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl Link {
    fn all_acknowledged(&self) -> bool {
        self.spool.lock().status().reports == 0
    }
}

async fn deliver(link: Link, mut stop: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if *stop.borrow() && link.all_acknowledged() {
            return;
        }
        let result = session(&link, &mut stop).await;
        link.metrics
            .connected
            .store(0, std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(()) => return,
            Err((status, progressed)) => {
                if progressed {
                    backoff = BACKOFF_MIN;
                }
                let permanent = matches!(
                    status.code(),
                    Code::Unauthenticated
                        | Code::PermissionDenied
                        | Code::Unimplemented
                        | Code::InvalidArgument
                );
                let pending = link.spool.lock().status().reports;
                if permanent {
                    tracing::error!(code = ?status.code(), message = status.message(), pending, "the detector refuses this agent; retrying slowly");
                    backoff = BACKOFF_MAX;
                } else {
                    tracing::warn!(code = ?status.code(), message = status.message(), pending, "detector unreachable; reports stay in the spool");
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        // Full jitter between half and all of the backoff, so agents do not reconnect in step.
        let pause = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: sends the spool's unacknowledged reports in order, then new ones as they
/// are appended, and records acknowledgements. `Ok` when stopping with nothing left to send;
/// `Err` with whether anything was acknowledged when the stream failed.
async fn session(link: &Link, stop: &mut watch::Receiver<bool>) -> Result<(), (Status, bool)> {
    let fail = |status: Status| (status, false);
    let channel: Channel = link
        .endpoint
        .connect()
        .await
        .map_err(|e| fail(Status::unavailable(format!("cannot connect: {e}"))))?;
    let mut client = CollectorClient::new(channel);
    let (out_tx, out_rx) = mpsc::channel::<Report>(WINDOW);
    let request = authorized(ReceiverStream::new(out_rx), link.token.as_deref()).map_err(fail)?;
    let mut inbound = tokio::time::timeout(CONNECT_TIMEOUT, client.stream(request))
        .await
        .map_err(|_| fail(Status::deadline_exceeded("the detector did not answer")))?
        .map_err(fail)?
        .into_inner();
    add(&link.metrics.reconnects, 1);
    link.metrics
        .connected
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let mut next_seq = *link.acked.borrow() + 1;
    tracing::info!(
        from_seq = next_seq,
        pending = link.spool.lock().status().reports,
        "connected to the detector"
    );
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let mut ready: VecDeque<Report> = VecDeque::new();
    let mut progressed = false;
    loop {
        if ready.is_empty() && in_flight.len() < WINDOW {
            let read = link
                .spool
                .lock()
                .read_from(next_seq, WINDOW - in_flight.len());
            match read {
                Ok(reports) => ready.extend(reports),
                Err(e) => return Err((Status::internal(e.to_string()), progressed)),
            }
        }
        if *stop.borrow() && ready.is_empty() && in_flight.is_empty() {
            return Ok(());
        }
        tokio::select! {
            permit = out_tx.reserve(), if !ready.is_empty() => {
                let permit = permit.map_err(|_| (Status::unavailable("stream closed"), progressed))?;
                if let Some(report) = ready.pop_front() {
                    next_seq = report.seq + 1;
                    in_flight.push_back(report.seq);
                    permit.send(report);
                }
            }
            () = link.wake.notified(), if ready.is_empty() => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            ack = inbound.message() => match ack {
                Ok(Some(ack)) => {
                    if take_ack(&mut in_flight, &ack) {
                        progressed = true;
                        add(&link.metrics.reports_acked, 1);
                        if ack.status() == AckStatus::Rejected {
                            add(&link.metrics.reports_rejected, 1);
                        }
                        link.spool.lock().ack(ack.seq);
                        link.acked.send_replace(ack.seq);
                    }
                }
                Ok(None) => return Err((Status::unavailable("the detector closed the stream"), progressed)),
                Err(status) => return Err((status, progressed)),
            },
        }
    }
}

/// Takes the report `ack` acknowledges off the in-flight list (always the oldest: the
/// detector answers in order).
fn take_ack(in_flight: &mut VecDeque<u64>, ack: &Ack) -> bool {
    if in_flight.front() != Some(&ack.seq) {
        tracing::warn!(
            seq = ack.seq,
            "acknowledgement for a report not in flight; ignored"
        );
        return false;
    }
    if ack.status() == AckStatus::Rejected {
        tracing::warn!(seq = ack.seq, reason = %ack.error, "the detector rejected a report for good; it is dropped");
    }
    in_flight.pop_front();
    true
}
