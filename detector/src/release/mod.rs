//! Releases: the live side of the judgement (DESIGN §5). A [`Releases`] service keeps
//! the releases users announce through the API, runs [`ReleaseJudge::round`] for every
//! watched release a few seconds after each minute boundary, [`ReleaseJudge::alert`] as
//! soon as a dangerous-exception alert is stored, persists the judge's state and verdict,
//! and hands every decision change to the webhooks.
//!
//! The judge is the very code `vigil-detector replay` runs; this module only feeds it
//! stored counters and keeps its state:
//! - rows of the release's hosts from [`JudgeParams::baseline_minutes`] before the first
//!   batch up to the judged minute, from [`Store::series`];
//! - fingerprints known at the start: the app's fingerprints first seen before the minute
//!   of the first batch;
//! - the app's [`AppMemory`], taught by `POST /api/v1/releases/{id}/feedback`.
//!
//! Every change of a release (API call, round, alert, expiry) holds that release's lock
//! around its read-modify-write ([`locks`]), so nothing is half-applied or lost between
//! them, and changes of different releases never wait for each other: an alert is judged
//! while other releases catch up. Feedback also holds the lock of the apps' memory, which
//! it rewrites. The ingest path never waits for any of them (alerts arrive over a bounded
//! channel that drops when full).
//!
//! # Argo Rollouts
//! `GET /api/v1/releases/{id}/verdict` answers `{"id":7,"decision":"block","ok":false,...}`.
//! A web metric provider aborts the rollout on a block with:
//! ```yaml
//! metrics:
//!   - name: vigil
//!     interval: 30s
//!     failureLimit: 0
//!     successCondition: result.ok == true
//!     provider:
//!       web:
//!         url: http://vigil-detector:7401/api/v1/releases/{{args.vigil-release}}/verdict
//!         headers: [{key: Authorization, value: "Bearer {{args.vigil-token}}"}]
//!         jsonPath: "{$}"
//! ```
//! (`jsonPath: "{$.ok}"` with `successCondition: result == true` works as well.)

mod case;
mod catalog;
pub mod judge_state;
mod locks;
mod rounds;
mod validate;
mod views;
pub mod webhook;
pub mod window;

use validate::{check_host_count, check_hosts, check_name, check_time};
pub use views::{
    AddBatch, CreateRelease, DecisionChange, FinishRelease, GiveFeedback, ReleaseView, VerdictView,
    parse_release_id,
};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{OwnedMutexGuard, mpsc, watch};

use crate::clock::{Clock, SystemClock};
use crate::config::Limits;
use crate::judge::{
    AppMemory, Batch, Decision, Definition, Feedback, Fingerprint, HostMinute, JudgeParams, Reason,
    Release, ReleaseJudge, Verdict, fingerprint_hex, minute_of,
};
use crate::leader::Leadership;
use crate::replay::parse_fingerprint;
use crate::store::{
    FeedbackEntry, FingerprintRow, LockKey, MinuteRow, NewRelease, Outcome, ReleaseFilter,
    ReleaseState, ReleaseUpdate, SeriesQuery, Store, StoreError, StoreLock, StoredRelease,
};
use judge_state::Recovery;

/// Seconds after a minute boundary before the minute that ended at it is judged. An agent
/// sends a closed minute once its last host sample is in, half its sampling interval plus
/// 3 s after the boundary (8 s at the default 10 s; up to 13 s for one sampling every
/// 20 s), so the round waits for that and the report's trip. (At 5 s, with agents at their
/// defaults, every round judged a minute whose reports had not arrived, and the next round
/// judged it a minute late.) An agent that samples more slowly sends later: the next round
/// takes its minute into account.
pub const ROUND_DELAY_SECS: u64 = 15;
/// Hosts of the app that reported within this many seconds form the default reference
/// group of a new release.
pub const REFERENCE_RECENT_SECS: i64 = 15 * 60;
/// Stored alerts waiting for the judgement before new ones are dropped (the next round
/// still sees their minute counters).
pub const ALERT_QUEUE: usize = 1024;
/// How often a leading detector reads the alerts stored by the detectors sharing its
/// store: a dangerous exception another detector received is judged within about this.
pub const SHARED_ALERT_POLL: std::time::Duration = std::time::Duration::from_millis(500);
/// Alerts received this long before a detector takes the lead are judged again by it.
pub const SHARED_ALERT_LOOKBACK_SECS: i64 = 600;
/// Most alerts read from the shared store at once.
const SHARED_ALERT_BATCH: usize = 256;
/// Most rounds caught up at once after the detector was down.
const MAX_CATCH_UP_ROUNDS: i64 = 180;
/// Longest note accepted with feedback.
const MAX_NOTE: usize = 4096;

/// Why a release request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// No release has this id.
    #[error("no release {0}")]
    NotFound(i64),
    /// The request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The request is well-formed but outside the configured limits (`[limits]`).
    #[error("{0}")]
    OutOfLimits(String),
    /// The request does not fit the release's state (finished, feedback given, ...).
    #[error("{0}")]
    Conflict(String),
    /// The judgement task panicked or was cancelled.
    #[error("judgement failed: {0}")]
    Judgement(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A dangerous-exception alert as stored by ingest, for [`ReleaseJudge::alert`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    /// Application.
    pub app: String,
    /// Host that logged it.
    pub host: String,
    /// When it was logged (UTC Unix seconds).
    pub at: i64,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// Its definition.
    pub definition: Definition,
}

/// Most minutes of counters a release's page shows (the latest ones).
pub const MAX_HISTORY_MINUTES: i64 = 12 * 60;
/// A release finished early is shown until this many minutes after its first batch.
const AFTER_FINISH_MINUTES: i64 = 10;

/// A release with the counters of its hosts over a window, from [`Releases::history`].
#[derive(Debug, Clone)]
pub struct ReleaseHistory {
    /// The release.
    pub release: StoredRelease,
    /// First minute of the window (Unix seconds).
    pub from: i64,
    /// Last minute of the window, included.
    pub to: i64,
    /// Counters of its hosts (batches and reference) in the window, by host and minute.
    pub rows: Vec<MinuteRow>,
}

/// The releases of the detector: API operations, rounds and alerts over one [`Store`].
#[derive(Debug)]
pub struct Releases<S> {
    store: Arc<S>,
    /// One per release, held around every read-modify-write of it.
    locks: locks::ReleaseLocks,
    /// Held by feedback around the read-modify-write of an app's memory (feedback on two
    /// releases of one app must not lose either lesson).
    memory_lock: tokio::sync::Mutex<()>,
    decisions: Option<mpsc::Sender<DecisionChange>>,
    params: JudgeParams,
    limits: Limits,
    /// What the scheduler reads the time from and waits on.
    clock: Arc<dyn Clock>,
    /// Whether this detector runs the rounds and judges the alerts now.
    lead: Leadership,
}

impl<S: Store> Releases<S> {
    /// Releases over `store`; decision changes go to `decisions` when given (never
    /// waited for: a full channel drops the change with a warning).
    pub fn new(store: Arc<S>, decisions: Option<mpsc::Sender<DecisionChange>>) -> Self {
        Self {
            store,
            locks: locks::ReleaseLocks::default(),
            memory_lock: tokio::sync::Mutex::new(()),
            decisions,
            params: JudgeParams::default(),
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            lead: Leadership::alone(),
        }
    }

    /// The same releases judged only while `lead` says this detector leads (detectors
    /// sharing a store); alone with its store, a detector always leads.
    #[must_use]
    pub fn with_leadership(mut self, lead: Leadership) -> Self {
        self.lead = lead;
        self
    }

    /// The same releases with rounds and expiry run by `clock` (and the API's and pages'
    /// "now" read from it) instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock the releases are judged by.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// The same releases judged with `params` (`[judge]` of the configuration): each
    /// release's judge takes them when it is first built, and keeps them.
    #[must_use]
    pub fn with_params(mut self, params: JudgeParams) -> Self {
        self.params = params;
        self
    }

    /// The same releases under `limits` (`[limits]` of the configuration).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Holds release `id` against every other change of it, in this detector and in the
    /// others sharing the store, until the guard is dropped.
    async fn hold(&self, id: i64) -> Result<(OwnedMutexGuard<()>, StoreLock), ReleaseError> {
        let local = self.locks.lock(id).await;
        let shared = self.store.lock(LockKey::Release(id)).await?;
        Ok((local, shared))
    }

    /// Creates a release (`POST /api/v1/releases`).
    ///
    /// # Errors
    /// [`ReleaseError::Invalid`] for a bad request, [`ReleaseError::OutOfLimits`] past
    /// `[limits]`, [`ReleaseError::Store`].
    pub async fn create(&self, req: CreateRelease, now: i64) -> Result<ReleaseView, ReleaseError> {
        let app = check_name("app", &req.app)?;
        let version = check_name("version", &req.version)?;
        check_host_count(req.hosts.len(), &self.limits)?;
        check_hosts("hosts", &req.hosts)?;
        let started_at = req.started_at.unwrap_or(now);
        check_time("started_at", started_at, now, &self.limits)?;
        let released: HashSet<&str> = req.hosts.iter().map(String::as_str).collect();
        let reference_hosts = match req.reference_hosts {
            Some(reference) => {
                check_host_count(req.hosts.len() + reference.len(), &self.limits)?;
                check_hosts("reference_hosts", &reference)?;
                if let Some(h) = reference.iter().find(|h| released.contains(h.as_str())) {
                    return Err(ReleaseError::Invalid(format!(
                        "host {h:?} is in both hosts and reference_hosts"
                    )));
                }
                reference
            }
            None => {
                // The app's other recent hosts, as many as the limit leaves room for.
                let room = self.limits.max_hosts_per_release - req.hosts.len();
                let recent = minute_of(now) - REFERENCE_RECENT_SECS;
                self.store
                    .apps()
                    .await?
                    .into_iter()
                    .filter(|a| a.app == app)
                    .flat_map(|a| a.hosts)
                    .filter(|h| h.last_minute >= recent && !released.contains(h.host.as_str()))
                    .map(|h| h.host)
                    .take(room)
                    .collect()
            }
        };
        drop(released);
        let new = NewRelease {
            app,
            version,
            started_at,
            created_at: now,
            reference_hosts,
            first_batch: (!req.hosts.is_empty()).then_some(Batch {
                at: started_at,
                hosts: req.hosts,
            }),
        };
        // A new release: no one else can change it before it exists.
        let release = self.store.create_release(&new).await?;
        tracing::info!(id = release.id, app = %release.app, version = %release.version, "release created");
        Ok(release.into())
    }

    /// One release (`GET /api/v1/releases/{id}`).
    ///
    /// # Errors
    /// [`ReleaseError::NotFound`], [`ReleaseError::Store`].
    pub async fn get(&self, id: i64) -> Result<ReleaseView, ReleaseError> {
        Ok(self.load(id).await?.into())
    }

    /// The verdict in the shape Argo Rollouts' web provider reads.
    ///
    /// # Errors
    /// [`ReleaseError::NotFound`], [`ReleaseError::Store`].
    pub async fn verdict(&self, id: i64) -> Result<VerdictView, ReleaseError> {
        let r = self.load(id).await?;
        Ok(VerdictView {
            id: r.id,
            decision: r.decision,
            ok: r.decision != Decision::Block,
            state: r.state,
            decided_at: r.decided_at,
            reasons: r.reasons.iter().map(Reason::line).collect(),
        })
    }

    /// Releases, newest first (`GET /api/v1/releases?app=&state=`).
    ///
    /// # Errors
    /// [`ReleaseError::Store`].
    pub async fn list(&self, filter: &ReleaseFilter) -> Result<Vec<ReleaseView>, ReleaseError> {
        Ok(self
            .store
            .releases(filter)
            .await?
            .into_iter()
            .map(ReleaseView::from)
            .collect())
    }

    /// Adds a batch (`POST /api/v1/releases/{id}/batches`).
    ///
    /// # Errors
    /// [`ReleaseError::Invalid`] for a bad request, [`ReleaseError::Conflict`] when the
    /// release is finished, [`ReleaseError::NotFound`], [`ReleaseError::Store`].
    pub async fn add_batch(
        &self,
        id: i64,
        req: AddBatch,
        now: i64,
    ) -> Result<ReleaseView, ReleaseError> {
        if req.hosts.is_empty() {
            return Err(ReleaseError::Invalid(
                "hosts is empty: a batch names at least one host".into(),
            ));
        }
        check_hosts("hosts", &req.hosts)?;
        let at = req.at.unwrap_or(now);
        check_time("at", at, now, &self.limits)?;
        let _guard = self.hold(id).await?;
        let mut release = self.load(id).await?;
        if release.state == ReleaseState::Finished {
            return Err(ReleaseError::Conflict(format!(
                "release {id} is finished; it takes no more batches"
            )));
        }
        let released: HashSet<&str> = release
            .batches
            .iter()
            .flat_map(|b| b.hosts.iter().map(String::as_str))
            .collect();
        check_host_count(
            released.len() + release.reference_hosts.len() + req.hosts.len(),
            &self.limits,
        )?;
        if let Some(h) = req.hosts.iter().find(|h| released.contains(h.as_str())) {
            return Err(ReleaseError::Invalid(format!(
                "host {h:?} is already in an earlier batch of release {id}"
            )));
        }
        if at < release.started_at {
            return Err(ReleaseError::Invalid(format!(
                "at ({at}) is before the release started ({})",
                release.started_at
            )));
        }
        let batch = Batch {
            at,
            hosts: req.hosts,
        };
        // An unreadable state is left for the next round, which rebuilds the judge from
        // every batch (this one too) and says so.
        if let Some(Ok(mut state)) = release.judge.as_deref().map(judge_state::decode) {
            state.judge.add_batch(batch.clone());
            release.judge = Some(encode_judge(&state.judge, state.recovered.as_ref())?);
        }
        self.store
            .update_release(&ReleaseUpdate {
                release: &release,
                new_batch: Some(&batch),
                app_memory: None,
                feedback: None,
                webhook: None,
            })
            .await?;
        release.batches.push(batch);
        Ok(release.into())
    }

    /// Finishes a release (`POST /api/v1/releases/{id}/finish`); it is judged no more.
    ///
    /// # Errors
    /// [`ReleaseError::Conflict`] when already finished, [`ReleaseError::NotFound`],
    /// [`ReleaseError::Store`].
    pub async fn finish(
        &self,
        id: i64,
        req: FinishRelease,
        now: i64,
    ) -> Result<ReleaseView, ReleaseError> {
        if req.outcome == Outcome::Expired {
            return Err(ReleaseError::Invalid(
                "outcome \"expired\" is given by the detector to releases nobody finished; \
                 finish with \"success\" or \"rolled_back\""
                    .into(),
            ));
        }
        let _guard = self.hold(id).await?;
        let mut release = self.load(id).await?;
        if release.state == ReleaseState::Finished {
            return Err(ReleaseError::Conflict(format!(
                "release {id} is already finished ({})",
                release.outcome.map_or("no outcome", Outcome::as_str)
            )));
        }
        self.finish_locked(&mut release, req.outcome, now).await?;
        Ok(release.into())
    }

    /// Finishes `release` (its lock held) with `outcome` and tells the webhooks.
    async fn finish_locked(
        &self,
        release: &mut StoredRelease,
        outcome: Outcome,
        now: i64,
    ) -> Result<(), ReleaseError> {
        release.state = ReleaseState::Finished;
        release.outcome = Some(outcome);
        release.finished_at = Some(now);
        let change = DecisionChange {
            outcome: Some(outcome),
            ..decision_change(release, release.decision, now)
        };
        let queued = self.queued(Some(&change))?;
        self.store
            .update_release(&ReleaseUpdate {
                release,
                new_batch: None,
                app_memory: None,
                feedback: None,
                webhook: queued.as_deref(),
            })
            .await?;
        tracing::info!(id = release.id, app = %release.app, outcome = outcome.as_str(), decision = release.decision.as_str(), "release finished");
        self.post(change);
        Ok(())
    }

    /// Finishes with outcome `expired` every watched release that started
    /// `[limits] max_release_age` or longer before `now`; returns their ids. A release
    /// that fails is logged and left for the next call.
    ///
    /// # Errors
    /// [`ReleaseError::Store`] when the releases cannot be listed.
    pub async fn expire(&self, now: i64) -> Result<Vec<i64>, ReleaseError> {
        let watching = self
            .store
            .releases(&ReleaseFilter {
                app: None,
                state: Some(ReleaseState::Watching),
            })
            .await?;
        let mut expired = Vec::new();
        for candidate in watching {
            if now - candidate.started_at < self.limits.max_release_age_secs {
                continue;
            }
            let _guard = self.hold(candidate.id).await?;
            let mut release = match self.load(candidate.id).await {
                Ok(release) => release,
                Err(e) => {
                    tracing::warn!(id = candidate.id, error = %e, "expiring a release failed");
                    continue;
                }
            };
            if release.state != ReleaseState::Watching {
                continue;
            }
            match self
                .finish_locked(&mut release, Outcome::Expired, now)
                .await
            {
                Ok(()) => {
                    crate::metrics::global().release_expired();
                    expired.push(release.id);
                }
                Err(e) => tracing::warn!(id = release.id, error = %e, "expiring a release failed"),
            }
        }
        Ok(expired)
    }

    /// A user's feedback (`POST /api/v1/releases/{id}/feedback`): the app's memory learns
    /// from the release's judge and is stored with the feedback in one transaction. On
    /// `false_alarm` or `confirmed_normal` a block of a release still watched is lifted
    /// (the judge starts afresh with what was learned); otherwise a block stays.
    ///
    /// # Errors
    /// [`ReleaseError::Invalid`] for a bad note, [`ReleaseError::Conflict`] when feedback
    /// was given before, [`ReleaseError::NotFound`], [`ReleaseError::Store`].
    pub async fn feedback(
        &self,
        id: i64,
        req: GiveFeedback,
        now: i64,
    ) -> Result<ReleaseView, ReleaseError> {
        if let Some(note) = &req.note
            && note.len() > MAX_NOTE
        {
            return Err(ReleaseError::Invalid(format!(
                "note is {} bytes; at most {MAX_NOTE}",
                note.len()
            )));
        }
        // The apps' memory first: one feedback at a time holds a store connection for a
        // release's lock, so feedback on many releases cannot take them all.
        let _memory = (
            self.memory_lock.lock().await,
            self.store.lock(LockKey::AppMemory).await?,
        );
        let _guard = self.hold(id).await?;
        let mut release = self.load(id).await?;
        if let Some(given) = release.feedback.first() {
            return Err(ReleaseError::Conflict(format!(
                "release {id} already has feedback ({}); the app learned from it once",
                given.label.as_str()
            )));
        }
        let mut memory = self.memory(&release.app).await?;
        let (judge, recovered) = match self.judge_of(&release, now).await? {
            Some(loaded) => {
                if loaded.found_unreadable {
                    release.judge = Some(encode_judge(&loaded.judge, loaded.recovered.as_ref())?);
                }
                (loaded.judge, loaded.recovered)
            }
            // Never judged (no batch yet): nothing to learn but the count.
            None => (
                ReleaseJudge::new(
                    Release {
                        app: release.app.clone(),
                        batches: Vec::new(),
                        reference_hosts: release.reference_hosts.clone(),
                        until: None,
                    },
                    HashSet::new(),
                    HashMap::new(),
                ),
                None,
            ),
        };
        memory.learn(&judge, req.label);
        let previous = release.decision;
        if release.state == ReleaseState::Watching
            && previous == Decision::Block
            && matches!(req.label, Feedback::FalseAlarm | Feedback::ConfirmedNormal)
        {
            release.judge = match self.build_judge(&release).await? {
                Some(fresh) => Some(encode_judge(&fresh, recovered.as_ref())?),
                None => None,
            };
            release.decision = Decision::Pass;
            release.decided_at = Some(now);
            release.reasons = Vec::new();
        }
        let entry = FeedbackEntry {
            label: req.label,
            // PostgreSQL text holds no NUL.
            note: req.note.map(|n| n.replace('\0', "\u{fffd}")),
            at: now,
        };
        let memory_json = serde_json::to_string(&memory).map_err(|e| StoreError::Corrupt {
            what: "app memory",
            reason: e.to_string(),
        })?;
        let change = self.change_of(&release, previous);
        let queued = self.queued(change.as_ref())?;
        self.store
            .update_release(&ReleaseUpdate {
                release: &release,
                new_batch: None,
                app_memory: Some(&memory_json),
                feedback: Some(&entry),
                webhook: queued.as_deref(),
            })
            .await?;
        release.feedback.push(entry);
        self.notify(change);
        Ok(release.into())
    }

    /// The release with the stored counters of its hosts, for its page: from
    /// [`JudgeParams::baseline_minutes`] before its first batch (or its start, without a
    /// batch) to the minute it finished (and, when that came early, on up to 10 minutes
    /// after its first batch, to show what the finish brought), or while watched the last
    /// completed minute (a minute in progress would look like a drop), or the first batch's
    /// minute when that is still in progress; at most the last [`MAX_HISTORY_MINUTES`].
    ///
    /// # Errors
    /// [`ReleaseError::NotFound`], [`ReleaseError::Store`].
    pub async fn history(&self, id: i64, now: i64) -> Result<ReleaseHistory, ReleaseError> {
        let release = self.load(id).await?;
        let first = first_minute(&release).unwrap_or_else(|| minute_of(release.started_at));
        let last_completed = minute_of(now) - 60;
        let to = match release.finished_at {
            // What followed the finish (a rollback's recovery) for a few minutes too.
            Some(finished) => {
                minute_of(finished).max(last_completed.min(first + (AFTER_FINISH_MINUTES - 1) * 60))
            }
            None => last_completed,
        }
        .max(first);
        let from =
            (first - self.params.baseline_minutes * 60).max(to - (MAX_HISTORY_MINUTES - 1) * 60);
        let rows = self.rows(&release, from, to).await?;
        Ok(ReleaseHistory {
            release,
            from,
            to,
            rows,
        })
    }

    async fn load(&self, id: i64) -> Result<StoredRelease, ReleaseError> {
        self.store
            .release(id)
            .await?
            .ok_or(ReleaseError::NotFound(id))
    }

    async fn memory(&self, app: &str) -> Result<AppMemory, ReleaseError> {
        Ok(match self.store.app_memory(app).await? {
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(%app, error = %e, "stored app memory unreadable; starting afresh");
                AppMemory::default()
            }),
            None => AppMemory::default(),
        })
    }

    /// The decision change `release` holds since `previous`, if any, for the webhooks.
    fn change_of(&self, release: &StoredRelease, previous: Decision) -> Option<DecisionChange> {
        (release.decision != previous).then(|| decision_change(release, previous, self.clock.now()))
    }

    /// `change` as the store queues it with the update that makes it, when it keeps the
    /// webhooks' queue.
    fn queued(&self, change: Option<&DecisionChange>) -> Result<Option<String>, ReleaseError> {
        match change {
            Some(change) if self.store.queues_webhooks() => serde_json::to_string(change)
                .map(Some)
                .map_err(|e| ReleaseError::Judgement(format!("decision change: {e}"))),
            _ => Ok(None),
        }
    }

    /// Logs and counts a decision change once stored, and hands it to the webhooks (unless
    /// the store queued it).
    fn notify(&self, change: Option<DecisionChange>) {
        let Some(change) = change else {
            return;
        };
        crate::metrics::global().decided(change.decision);
        tracing::info!(id = change.release_id, app = %change.app, from = change.previous_decision.as_str(), to = change.decision.as_str(), "release decision changed");
        self.post(change);
    }

    /// Hands `change` to the webhooks without waiting (a full queue drops it, warned).
    /// Without a channel (a store that queues changes with them, or no webhooks wired),
    /// there is nothing to do here.
    fn post(&self, change: DecisionChange) {
        let Some(tx) = &self.decisions else {
            return;
        };
        let id = change.release_id;
        if let Err(e) = tx.try_send(change) {
            tracing::warn!(id, error = %e, "webhook queue full; decision change not posted");
        }
    }
}

/// `release`'s decision as a change from `previous` (decided at `now` when the release has
/// no decision time), without an outcome.
fn decision_change(release: &StoredRelease, previous: Decision, now: i64) -> DecisionChange {
    DecisionChange {
        release_id: release.id,
        app: release.app.clone(),
        version: release.version.clone(),
        decision: release.decision,
        previous_decision: previous,
        decided_at: release.decided_at.unwrap_or(now),
        reasons: release.reasons.clone(),
        outcome: None,
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn first_minute(release: &StoredRelease) -> Option<i64> {
    release.batches.iter().map(|b| minute_of(b.at)).min()
}

/// A release's judge as [`Releases::judge_of`] found it.
struct LoadedJudge {
    judge: ReleaseJudge,
    /// When and why the judge replaced an unreadable state (now or before).
    recovered: Option<Recovery>,
    /// The stored state was found unreadable just now (write the rebuilt judge back).
    found_unreadable: bool,
}

fn encode_judge(judge: &ReleaseJudge, recovered: Option<&Recovery>) -> Result<String, StoreError> {
    judge_state::encode(judge, recovered).map_err(|reason| StoreError::Corrupt {
        what: "judge state",
        reason,
    })
}

fn definition_of(f: &FingerprintRow) -> Definition {
    Definition {
        class: f.class.clone(),
        causes: f.causes.clone(),
        message: f.message.clone(),
        frames: f.frames.clone(),
        dangerous: f.dangerous,
    }
}

fn host_minute(row: MinuteRow) -> HostMinute {
    let mut exceptions = BTreeMap::new();
    for (f, n) in row.exceptions {
        if let Ok(fp) = parse_fingerprint(&f) {
            *exceptions.entry(fp).or_insert(0) += n;
        }
    }
    HostMinute {
        host: row.host,
        minute: row.minute,
        lines: row.lines,
        events: row.events,
        error_lines: row.error_lines,
        warn_lines: row.warn_lines,
        exceptions,
        host_metrics: row.host_metrics.unwrap_or_default(),
        requests: row.requests,
    }
}
