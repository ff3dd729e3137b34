//! Shipping: one bidirectional `vigil.v1.Collector` stream to the detector. Reports are sent
//! in `seq` order and kept until the detector acknowledges them; after a reconnect every
//! unacknowledged report is sent again (the detector stores each `(instance, seq)` once).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use vigil_proto::v1::collector_client::CollectorClient;
use vigil_proto::v1::{Ack, AckStatus, Report};

use crate::config::DetectorConfig;

/// Reports held in memory waiting for their acknowledgement; producers wait beyond it.
const MAX_QUEUE: usize = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why shipping cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("detector endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("the shipping task has stopped")]
    Stopped,
}

/// Handle to the shipping task.
#[derive(Debug)]
pub struct Shipper {
    tx: mpsc::Sender<Report>,
    acked: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Shipper {
    /// Starts shipping to the detector of `config`.
    ///
    /// # Errors
    /// [`ShipError::Endpoint`] when the endpoint cannot be used at all.
    pub fn start(config: &DetectorConfig) -> Result<Self, ShipError> {
        let endpoint = endpoint(config)?;
        let (tx, rx) = mpsc::channel(1024);
        let (acked_tx, acked) = watch::channel(0);
        let task = tokio::spawn(deliver(endpoint, config.token.clone(), rx, acked_tx));
        Ok(Self { tx, acked, task })
    }

    /// Queues a report; waits while too many are unacknowledged.
    ///
    /// # Errors
    /// [`ShipError::Stopped`] when the shipping task is gone.
    pub async fn send(&self, report: Report) -> Result<(), ShipError> {
        self.tx.send(report).await.map_err(|_| ShipError::Stopped)
    }

    /// The highest seq such that it and every report before it were acknowledged.
    pub fn acked(&self) -> watch::Receiver<u64> {
        self.acked.clone()
    }

    /// Stops taking reports and waits up to `grace` for the queued ones to be acknowledged;
    /// what is still unacknowledged then is dropped (and will be counted again from the
    /// files' checkpoints).
    pub async fn close(self, grace: Duration) {
        drop(self.tx);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

fn endpoint(config: &DetectorConfig) -> Result<Endpoint, ShipError> {
    let fail = |reason: String| ShipError::Endpoint {
        endpoint: config.endpoint.clone(),
        reason,
    };
    if config.endpoint.starts_with("https://") || config.tls_ca.is_some() {
        return Err(fail(
            "TLS is not available in this build of vigil-agent".into(),
        ));
    }
    Ok(Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| fail(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10)))
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

/// Unacknowledged reports: `queue[..sent]` went out on the current stream, the rest did not.
struct Outbox {
    queue: VecDeque<Report>,
    sent: usize,
}

async fn deliver(
    endpoint: Endpoint,
    token: Option<String>,
    mut rx: mpsc::Receiver<Report>,
    acked: watch::Sender<u64>,
) {
    let mut outbox = Outbox {
        queue: VecDeque::new(),
        sent: 0,
    };
    let mut closed = false;
    let mut backoff = BACKOFF_MIN;
    loop {
        if closed && outbox.queue.is_empty() {
            return;
        }
        outbox.sent = 0;
        let progressed = match session(
            &endpoint,
            token.as_deref(),
            &mut rx,
            &mut closed,
            &mut outbox,
            &acked,
        )
        .await
        {
            Ok(progressed) => progressed,
            Err(status) => {
                let permanent = matches!(
                    status.code(),
                    Code::Unauthenticated
                        | Code::PermissionDenied
                        | Code::Unimplemented
                        | Code::InvalidArgument
                );
                if permanent {
                    tracing::error!(code = ?status.code(), message = status.message(), "the detector refuses this agent; retrying slowly");
                    backoff = BACKOFF_MAX;
                } else {
                    tracing::warn!(code = ?status.code(), message = status.message(), pending = outbox.queue.len(), "detector unreachable; reports kept");
                }
                false
            }
        };
        if progressed {
            backoff = BACKOFF_MIN;
        }
        if closed && outbox.queue.is_empty() {
            return;
        }
        // Full jitter between half and all of the backoff, so agents do not reconnect in step.
        let pause = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
        let sleep = tokio::time::sleep(pause);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                report = rx.recv(), if !closed && outbox.queue.len() < MAX_QUEUE => match report {
                    Some(report) => outbox.queue.push_back(report),
                    None => closed = true,
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: sends what is queued, takes new reports, removes acknowledged ones.
/// Returns whether any report was acknowledged; `Err` when the stream failed.
async fn session(
    endpoint: &Endpoint,
    token: Option<&str>,
    rx: &mut mpsc::Receiver<Report>,
    closed: &mut bool,
    outbox: &mut Outbox,
    acked: &watch::Sender<u64>,
) -> Result<bool, Status> {
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect: {e}")))?;
    let mut client = CollectorClient::new(channel);
    let (out_tx, out_rx) = mpsc::channel::<Report>(256);
    let request = authorized(ReceiverStream::new(out_rx), token)?;
    let mut inbound = tokio::time::timeout(CONNECT_TIMEOUT, client.stream(request))
        .await
        .map_err(|_| Status::deadline_exceeded("the detector did not answer"))??
        .into_inner();
    tracing::info!(pending = outbox.queue.len(), "connected to the detector");
    let mut progressed = false;
    loop {
        if *closed && outbox.queue.is_empty() {
            return Ok(progressed);
        }
        tokio::select! {
            permit = out_tx.reserve(), if outbox.sent < outbox.queue.len() => {
                let permit = permit.map_err(|_| Status::unavailable("stream closed"))?;
                if let Some(report) = outbox.queue.get(outbox.sent) {
                    permit.send(report.clone());
                    outbox.sent += 1;
                }
            }
            report = rx.recv(), if !*closed && outbox.queue.len() < MAX_QUEUE => match report {
                Some(report) => outbox.queue.push_back(report),
                None => *closed = true,
            },
            ack = inbound.message() => match ack? {
                Some(ack) => {
                    if take_ack(outbox, &ack) {
                        progressed = true;
                        acked.send_replace(ack.seq);
                    }
                }
                None => return Err(Status::unavailable("the detector closed the stream")),
            },
        }
    }
}

/// Removes the report `ack` acknowledges (always the oldest: the detector answers in order).
fn take_ack(outbox: &mut Outbox, ack: &Ack) -> bool {
    match outbox.queue.front() {
        Some(front) if front.seq == ack.seq && outbox.sent > 0 => {
            if ack.status() == AckStatus::Rejected {
                tracing::warn!(seq = ack.seq, reason = %ack.error, "the detector rejected a report; it is dropped");
            }
            outbox.queue.pop_front();
            outbox.sent -= 1;
            true
        }
        _ => {
            tracing::warn!(
                seq = ack.seq,
                "acknowledgement for a report not in flight; ignored"
            );
            false
        }
    }
}
