//! Webhooks: every decision change is POSTed as JSON to each configured webhook whose
//! `events` include the new decision (all when empty), from a background task, retried with
//! jittered exponential backoff; judgement never waits for a receiver.
//!
//! The body is a [`DecisionChange`]:
//! `{"release_id":7,"app":"shop","version":"2.0.1","decision":"block",
//!   "previous_decision":"pass","decided_at":1763880125,"reasons":[...]}`.
//!
//! A release's finish is posted the same way, with the decision it ended with (equal to
//! `previous_decision`) and an `outcome`: `success`, `rolled_back`, or `expired` when
//! nobody finished it within `[limits] max_release_age` and the detector did. It goes to
//! the webhooks without `events` and to those that name `"finished"`: a hook that asked
//! for `block` hears of each block once, not again when the blocked release ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::DecisionChange;
use crate::config::Webhook;
use crate::leader::Leadership;
use crate::store::{QueuedWebhook, Store};

/// Decision changes waiting for delivery before new ones are dropped.
pub const QUEUE: usize = 1024;
/// Attempts per delivery.
pub const MAX_ATTEMPTS: u32 = 8;
/// First retry delay; doubled after each failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Timeout of one POST.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the sender; returns the queue that [`super::Releases`] feeds. The task ends
/// when every sender is dropped.
pub fn start(webhooks: Vec<Webhook>) -> mpsc::Sender<DecisionChange> {
    let (tx, mut rx) = mpsc::channel::<DecisionChange>(QUEUE);
    tokio::spawn(async move {
        let needs_tls = webhooks.iter().any(|h| h.url.starts_with("https://"));
        let agent = client(needs_tls);
        while let Some(change) = rx.recv().await {
            let body = match serde_json::to_vec(&change) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(error = %e, "decision change cannot be encoded");
                    continue;
                }
            };
            for hook in &webhooks {
                if wants(hook, event(&change)) {
                    tokio::spawn(deliver(
                        agent.clone(),
                        hook.url.clone(),
                        body.clone(),
                        change.release_id,
                    ));
                }
            }
        }
    });
    tx
}

/// How often the leading detector looks for decision changes queued in a shared store.
pub const QUEUE_POLL: Duration = Duration::from_millis(500);
/// Most queued changes taken at once.
const QUEUE_BATCH: usize = 64;
/// Most queued changes being posted at once (a webhook that is down keeps its changes
/// retrying for a day; the next ones are still taken, up to this many).
const QUEUE_IN_FLIGHT: usize = 1024;

/// Queued changes older than this that a webhook still has not taken are given up (and
/// counted in `vigil_detector_webhook_failures`).
pub const QUEUE_GIVE_UP_SECS: i64 = 24 * 3600;

/// With a store that keeps the webhooks' queue ([`Store::queues_webhooks`]): while this
/// detector leads, posts every queued decision change to each webhook that wants it and
/// does not have it yet (with the retries of [`start`]'s), records each delivery, and
/// marks the change posted once every webhook has it (or refused it). A change queued by
/// a detector that died before posting it is posted by the next leader. When this
/// detector stops leading, its posts in progress are abandoned; the next leader posts
/// them again to the webhooks that had not taken them (a receiver sees a change twice
/// only if a leader lost the lead during that very POST). A change some webhook keeps
/// failing is tried again until [`QUEUE_GIVE_UP_SECS`].
pub async fn run_queue<S: Store>(
    store: Arc<S>,
    webhooks: Vec<Webhook>,
    mut lead: Leadership,
    mut stop: watch::Receiver<bool>,
) {
    if !store.queues_webhooks() {
        return;
    }
    let agent = client(webhooks.iter().any(|h| h.url.starts_with("https://")));
    let webhooks = Arc::new(webhooks);
    loop {
        tokio::select! {
            () = lead.until_leading() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut posting: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
        let posting_ids: Arc<Mutex<HashSet<i64>>> = Arc::default();
        while lead.leads() {
            while posting.try_join_next().is_some() {}
            // Changes being posted are not read again, so a webhook that keeps failing
            // does not hold back the changes queued after them.
            let in_flight: Vec<i64> = posting_ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .copied()
                .collect();
            let room = QUEUE_BATCH.min(QUEUE_IN_FLIGHT.saturating_sub(in_flight.len()));
            let queued = if room == 0 {
                Ok(Vec::new())
            } else {
                store.queued_webhooks(room, &in_flight).await
            };
            match queued {
                Ok(queued) => {
                    for change in queued {
                        if !posting_ids
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(change.id)
                        {
                            continue; // being posted
                        }
                        posting.spawn(post_queued(
                            Arc::clone(&store),
                            agent.clone(),
                            Arc::clone(&webhooks),
                            Arc::clone(&posting_ids),
                            change,
                        ));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the webhooks' queue"),
            }
            tokio::select! {
                () = tokio::time::sleep(QUEUE_POLL) => {}
                _ = stop.wait_for(|s| *s) => {
                    posting.abort_all();
                    return;
                }
            }
        }
        // No longer leading: the next leader posts what is left.
        posting.abort_all();
    }
}

/// Posts a queued change to every webhook that wants it and lacks it; marks it posted
/// once none lacks it.
async fn post_queued<S: Store>(
    store: Arc<S>,
    agent: ureq::Agent,
    webhooks: Arc<Vec<Webhook>>,
    posting: Arc<Mutex<HashSet<i64>>>,
    change: QueuedWebhook,
) {
    // A body that cannot be read back goes only to the webhooks that take every event.
    let read = serde_json::from_str::<DecisionChange>(&change.body).ok();
    let event = read.as_ref().map_or("", event);
    let release_id = read.as_ref().map_or(0, |c| c.release_id);
    // Every webhook at once: one that is down and retrying does not hold back the others.
    let mut deliveries = tokio::task::JoinSet::new();
    for hook in webhooks.iter() {
        if !wants(hook, event) || change.delivered_to.contains(&hook.url) {
            continue;
        }
        let (agent, url, body) = (agent.clone(), hook.url.clone(), change.body.clone());
        deliveries.spawn(async move {
            let posted = deliver(agent, url.clone(), body.into_bytes(), release_id).await;
            (url, posted)
        });
    }
    let mut lacking = 0;
    while let Some(joined) = deliveries.join_next().await {
        let Ok((url, posted)) = joined else {
            lacking += 1;
            continue;
        };
        if posted == Posted::Failed {
            lacking += 1;
            continue;
        }
        if let Err(e) = store.webhook_delivered(change.id, &url).await {
            tracing::warn!(error = %e, id = change.id, "cannot record a webhook delivery; it may be posted again");
            lacking += 1;
        }
    }
    let now = crate::clock::unix_now();
    let give_up = now - change.queued_at > QUEUE_GIVE_UP_SECS;
    if lacking > 0 && give_up {
        tracing::error!(
            id = change.id,
            release_id,
            "decision change not taken by every webhook within a day; given up"
        );
    }
    // Left queued when this fails: looked at again by the next pass, which skips the
    // webhooks that have it.
    if (lacking == 0 || give_up)
        && let Err(e) = store.webhook_posted(change.id, now).await
    {
        tracing::warn!(error = %e, id = change.id, "cannot mark a queued decision change as posted");
    }
    posting
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&change.id);
}

/// The event a change is, as `events` names it: its new decision, or `finished`.
pub fn event(change: &DecisionChange) -> &str {
    if change.outcome.is_some() {
        "finished"
    } else {
        change.decision.as_str()
    }
}

/// Whether `hook` subscribes to `event`.
pub fn wants(hook: &Webhook, event: &str) -> bool {
    hook.events.is_empty() || hook.events.iter().any(|e| e == event)
}

/// What one POST came to.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// Worth retrying (connection failure, timeout, 5xx, 408, 429).
    Retry(String),
    /// The receiver refused the request itself (other 4xx): retrying cannot help.
    Refused(String),
}

/// The HTTP client of the webhooks: a timeout per POST, statuses as values, and for
/// `https://` the system's root certificates with rustls (ring).
fn client(tls: bool) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(POST_TIMEOUT))
        .http_status_as_error(false);
    if tls {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "some system root certificates could not be read");
        }
        let roots: Vec<ureq::tls::Certificate<'static>> = native
            .certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .unversioned_rustls_crypto_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build(),
        );
    }
    config.build().into()
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Posted {
    Delivered,
    /// The receiver refused it (a 4xx other than 408 and 429): never retried.
    Refused,
    /// Every attempt failed.
    Failed,
}

async fn deliver(agent: ureq::Agent, url: String, body: Vec<u8>, release_id: i64) -> Posted {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=MAX_ATTEMPTS {
        let (a, u, b) = (agent.clone(), url.clone(), body.clone());
        let result = tokio::task::spawn_blocking(move || post(&a, &u, &b))
            .await
            .unwrap_or_else(|e| Attempt::Retry(format!("delivery task failed: {e}")));
        match result {
            Attempt::Delivered => {
                tracing::info!(%url, release_id, attempt, "webhook delivered");
                return Posted::Delivered;
            }
            Attempt::Refused(why) => {
                tracing::warn!(%url, release_id, %why, "webhook refused the decision change; not retried");
                crate::metrics::global().webhook_failed();
                return Posted::Refused;
            }
            Attempt::Retry(why) if attempt < MAX_ATTEMPTS => {
                tracing::warn!(%url, release_id, attempt, %why, "webhook failed; retrying");
                let jitter = fastrand::u64(0..=backoff.as_millis() as u64 / 4);
                tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Attempt::Retry(why) => {
                tracing::error!(%url, release_id, attempts = MAX_ATTEMPTS, %why, "webhook failed at every attempt");
                crate::metrics::global().webhook_failed();
            }
        }
    }
    Posted::Failed
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Attempt {
    match agent
        .post(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("vigil-detector/", env!("CARGO_PKG_VERSION")),
        )
        .send(body)
    {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Attempt::Delivered,
                408 | 429 | 500..=599 => Attempt::Retry(format!("HTTP {status}")),
                _ => Attempt::Refused(format!("HTTP {status}")),
            }
        }
        Err(e) => Attempt::Retry(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_filter_decisions() {
        let all = Webhook {
            url: "http://x".into(),
            events: vec![],
        };
        let blocks = Webhook {
            url: "http://x".into(),
            events: vec!["block".into()],
        };
        assert!(wants(&all, "watch"));
        assert!(wants(&all, "finished"));
        assert!(wants(&blocks, "block"));
        assert!(!wants(&blocks, "pass"));
        assert!(
            !wants(&blocks, "finished"),
            "a block hook is not told of finishes"
        );
    }

    #[test]
    fn an_https_client_can_be_built_from_the_system_roots() {
        // Nothing listens on port 1: the attempt fails before TLS, retryably.
        assert!(matches!(
            post(&client(true), "https://127.0.0.1:1/hook", b"{}"),
            Attempt::Retry(_)
        ));
    }

    #[test]
    fn an_unreachable_receiver_is_retried() {
        // Port 1 on loopback refuses connections.
        assert!(matches!(
            post(&client(false), "http://127.0.0.1:1/hook", b"{}"),
            Attempt::Retry(_)
        ));
    }
}
