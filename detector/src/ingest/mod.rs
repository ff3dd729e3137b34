//! Ingest: the `vigil.v1.Collector` gRPC service. Reports from all agent streams go to one
//! writer task that commits them in batches (group commit) and only then lets each stream
//! acknowledge its reports, in order.

use crate::clock::unix_now;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::v1::collector_server::Collector;
use vigil_proto::v1::{Ack, AckStatus, Report, report::Body};

mod validate;

pub use validate::{
    MAX_APPS, MAX_COUNT, MAX_DEFINITION_BYTES, MAX_DEFINITION_ITEMS, MAX_FINGERPRINTS,
    MAX_FUTURE_SECS, MAX_NAME_BYTES, MAX_PAST_SECS, MAX_REPORT_ITEMS, validate,
};

use crate::judge::Definition;
use crate::release::StoredAlert;
use crate::store::{IngestOutcome, Store};

/// Largest number of reports committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Reports of one stream that may wait for their commit before the stream stops reading.
const IN_FLIGHT_PER_STREAM: usize = 256;
/// Rows (see [`validate::cost`]) of one stream that may wait for their commit: an agent
/// sending heavy reports waits for its own commits, so that other agents' reports are
/// never queued behind more than this much of its work.
const STREAM_WORK_BUDGET: usize = 2 * validate::MAX_REPORT_ITEMS;
/// Rows committed in one transaction at most (past one report that alone is larger).
const BATCH_WORK: usize = 4 * validate::MAX_REPORT_ITEMS;

type Reply = oneshot::Sender<Result<IngestOutcome, String>>;

/// A valid report waiting for the writer, with its cost in rows (reckoned once, when the
/// stream takes it).
#[derive(Debug)]
struct Queued {
    report: Report,
    cost: usize,
    reply: Reply,
}

/// Hands reports to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Queued>,
}

impl Ingest {
    /// Starts the writer task over `store`.
    pub fn start<S: Store>(store: Arc<S>) -> Self {
        Self::start_notifying(store, None)
    }

    /// Like [`Ingest::start`]; every dangerous-exception alert is also handed to `alerts`
    /// once committed (with `try_send`: a full channel drops it, ingest never waits).
    pub fn start_notifying<S: Store>(
        store: Arc<S>,
        alerts: Option<mpsc::Sender<StoredAlert>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(store, rx, alerts));
        Self { tx }
    }

    /// Queues a valid report; the receiver resolves once it is committed (or the store
    /// failed, with the reason).
    async fn submit(
        &self,
        report: Report,
        cost: usize,
    ) -> oneshot::Receiver<Result<IngestOutcome, String>> {
        let (reply, wait) = oneshot::channel();
        let queued = Queued {
            report,
            cost,
            reply,
        };
        if let Err(mpsc::error::SendError(queued)) = self.tx.send(queued).await {
            let _ = queued.reply.send(Err("the store is shutting down".into()));
        }
        wait
    }
}

async fn write_batches<S: Store>(
    store: Arc<S>,
    mut rx: mpsc::Receiver<Queued>,
    alerts: Option<mpsc::Sender<StoredAlert>>,
) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        // A group commit of what is waiting, bounded in reports and in rows.
        let mut work = first.cost;
        pending.push(first);
        while pending.len() < MAX_BATCH && work < BATCH_WORK {
            match rx.try_recv() {
                Ok(next) => {
                    work += next.cost;
                    pending.push(next);
                }
                Err(_) => break,
            }
        }
        let (reports, replies): (Vec<Report>, Vec<Reply>) =
            pending.drain(..).map(|q| (q.report, q.reply)).unzip();
        match crate::metrics::timed_commit(store.ingest(&reports, unix_now())).await {
            Ok(outcomes) => {
                if let Some(alerts) = &alerts {
                    notify_alerts(alerts, &reports, &outcomes);
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, reports = reports.len(), "commit failed; agents will resend");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Hands the newly stored alerts of a committed batch to the judgement, never waiting.
fn notify_alerts(
    alerts: &mpsc::Sender<StoredAlert>,
    reports: &[Report],
    outcomes: &[IngestOutcome],
) {
    for (report, outcome) in reports.iter().zip(outcomes) {
        if *outcome != IngestOutcome::Stored {
            continue;
        }
        let Some(Body::Alert(alert)) = &report.body else {
            continue;
        };
        let Some(d) = &alert.definition else {
            continue;
        };
        let stored = StoredAlert {
            app: alert.app.clone(),
            host: report.host.clone(),
            at: alert.at,
            fingerprint: d.fingerprint,
            definition: Definition {
                class: d.class.clone(),
                causes: d.causes.clone(),
                message: d.message.clone(),
                frames: d.frames.clone(),
                dangerous: d.dangerous,
            },
        };
        if let Err(e) = alerts.try_send(stored) {
            tracing::warn!(host = %report.host, error = %e, "judgement busy; alert left to the next round");
        }
    }
}

/// The `vigil.v1.Collector` service.
#[derive(Debug, Clone)]
pub struct CollectorService {
    ingest: Ingest,
    /// Turns true when the detector stops: open agent streams end then (agents reconnect
    /// and re-send what was not acknowledged), so that stopping never waits on them.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl CollectorService {
    /// A service whose open streams end when `stop` turns true.
    pub fn with_stop(ingest: Ingest, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            ingest,
            stop: Some(stop),
        }
    }

    /// A service that hands reports to `ingest`.
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest, stop: None }
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

#[tonic::async_trait]
impl Collector for CollectorService {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        request: Request<Streaming<Report>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let (ack_tx, ack_rx) = mpsc::channel::<Result<Ack, Status>>(IN_FLIGHT_PER_STREAM);
        // Acks leave in the order reports arrived: each report's commit is awaited in turn.
        let (wait_tx, mut wait_rx) = mpsc::channel::<(u64, PendingAck)>(IN_FLIGHT_PER_STREAM);
        let ingest = self.ingest.clone();
        let mut stop = self.stop.clone();
        let budget = Arc::new(tokio::sync::Semaphore::new(STREAM_WORK_BUDGET));
        tokio::spawn(async move {
            let _open = crate::metrics::global().stream_opened();
            loop {
                let message = match stop.as_mut() {
                    Some(stop) => tokio::select! {
                        message = inbound.message() => message,
                        () = stopping(stop) => {
                            let _ = wait_tx
                                .send((0, PendingAck::Failed(Status::unavailable("the detector is stopping"))))
                                .await;
                            break;
                        }
                    },
                    None => inbound.message().await,
                };
                match message {
                    Ok(Some(mut report)) => {
                        validate::without_nul(&mut report);
                        let seq = report.seq;
                        let pending = match validate(&report, unix_now()) {
                            Ok(()) => {
                                let cost = validate::cost(&report);
                                let permits = cost.min(STREAM_WORK_BUDGET);
                                let Ok(permit) = Arc::clone(&budget)
                                    .acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX))
                                    .await
                                else {
                                    break;
                                };
                                PendingAck::Commit(ingest.submit(report, cost).await, permit)
                            }
                            Err(reason) => {
                                crate::metrics::global().rejected(&reason);
                                tracing::warn!(%peer, host = %report.host, seq, %reason, "report rejected");
                                PendingAck::Rejected(reason)
                            }
                        };
                        if wait_tx.send((seq, pending)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        // Tell the agent why (after the acks it is owed), e.g. an oversized
                        // message, then end the stream.
                        tracing::warn!(%peer, %status, "agent stream failed");
                        crate::metrics::global().stream_failed();
                        let _ = wait_tx.send((0, PendingAck::Failed(status))).await;
                        break;
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some((seq, pending)) = wait_rx.recv().await {
                let ack = match pending {
                    PendingAck::Failed(status) => Err(status),
                    PendingAck::Rejected(error) => Ok(Ack {
                        seq,
                        status: AckStatus::Rejected.into(),
                        error,
                    }),
                    // The stream's work budget comes back with the commit (`_permit`).
                    PendingAck::Commit(wait, _permit) => match wait.await {
                        Ok(Ok(outcome)) => Ok(Ack {
                            seq,
                            status: match outcome {
                                IngestOutcome::Stored => AckStatus::Stored,
                                IngestOutcome::Duplicate => AckStatus::Duplicate,
                            }
                            .into(),
                            error: String::new(),
                        }),
                        // The store failed: end the stream so the agent resends later.
                        Ok(Err(reason)) => Err(Status::unavailable(reason)),
                        Err(_) => Err(Status::unavailable("detector shutting down")),
                    },
                };
                let failed = ack.is_err();
                if ack_tx.send(ack).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(ack_rx))))
    }
}

/// Resolves once `stop` is true (never if its sender is gone).
async fn stopping(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

enum PendingAck {
    Commit(
        oneshot::Receiver<Result<IngestOutcome, String>>,
        tokio::sync::OwnedSemaphorePermit,
    ),
    Rejected(String),
    /// The stream itself failed; the agent gets this status.
    Failed(Status),
}
