//! What the API takes and gives for releases: the requests, the views, the verdict Argo
//! Rollouts reads, and the decision changes posted to webhooks.

use serde::{Deserialize, Serialize};

use super::judge_state;
use super::judge_state::Recovery;
use crate::judge::{Batch, Decision, Feedback, Reason};
use crate::store::{FeedbackEntry, Outcome, ReleaseState, StoredRelease};

/// A release id as written in a path: digits only, no sign, no leading zero, at least 1
/// (so `+1` and `01` do not name release 1).
pub fn parse_release_id(text: &str) -> Option<i64> {
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A decision change, as posted to the webhooks (and read back from a shared store's
/// queue of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionChange {
    /// Release id.
    pub release_id: i64,
    /// Application.
    pub app: String,
    /// Version released.
    pub version: String,
    /// The new decision.
    pub decision: Decision,
    /// The decision before.
    pub previous_decision: Decision,
    /// When it was taken (UTC Unix seconds).
    pub decided_at: i64,
    /// Why.
    pub reasons: Vec<Reason>,
    /// Set when the release was finished (`success`, `rolled_back`, or `expired` when the
    /// detector finished it); the decision is then the one it ended with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// `POST /api/v1/releases`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRelease {
    /// Application.
    pub app: String,
    /// Version released.
    pub version: String,
    /// The first batch (may be empty).
    pub hosts: Vec<String>,
    /// Hosts that keep the old version; default: the app's other hosts that reported in
    /// the last 15 minutes.
    #[serde(default)]
    pub reference_hosts: Option<Vec<String>>,
    /// When the release (and its first batch) started; default: now.
    #[serde(default)]
    pub started_at: Option<i64>,
}

/// `POST /api/v1/releases/{id}/batches`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBatch {
    /// Hosts that got the new version.
    pub hosts: Vec<String>,
    /// When; default: now.
    #[serde(default)]
    pub at: Option<i64>,
}

/// `POST /api/v1/releases/{id}/finish`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRelease {
    /// `success` or `rolled_back` (`expired` is the detector's to give).
    pub outcome: Outcome,
}

/// `POST /api/v1/releases/{id}/feedback`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiveFeedback {
    /// `valid_block`, `false_alarm`, `missed_problem` or `confirmed_normal`.
    pub label: Feedback,
    /// A free note.
    #[serde(default)]
    pub note: Option<String>,
}

/// A release as the API shows it (DESIGN §5 fields first, extensions after).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseView {
    /// Release id.
    pub id: i64,
    /// Application.
    pub app: String,
    /// Version released.
    pub version: String,
    /// `watching` or `finished`.
    pub state: ReleaseState,
    /// `success` or `rolled_back` once finished.
    pub outcome: Option<Outcome>,
    /// `pass`, `watch` or `block`.
    pub decision: Decision,
    /// When the decision was taken.
    pub decided_at: Option<i64>,
    /// Why.
    pub reasons: Vec<Reason>,
    /// Batches in the order they were posted.
    pub batches: Vec<Batch>,
    /// Hosts that keep the old version.
    pub reference_hosts: Vec<String>,
    /// When the release was created.
    pub created_at: i64,
    /// When the release started.
    pub started_at: i64,
    /// When it was finished.
    pub finished_at: Option<i64>,
    /// The last minute judged.
    pub last_round: Option<i64>,
    /// Users' feedback.
    pub feedback: Vec<FeedbackEntry>,
    /// Set when the release's stored judge state could not be read (an upgrade, a corrupt
    /// row) and its judge was rebuilt from its decision: when, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_state_unreadable: Option<Recovery>,
}

impl From<StoredRelease> for ReleaseView {
    fn from(r: StoredRelease) -> Self {
        Self {
            id: r.id,
            app: r.app,
            version: r.version,
            state: r.state,
            outcome: r.outcome,
            decision: r.decision,
            decided_at: r.decided_at,
            reasons: r.reasons,
            batches: r.batches,
            reference_hosts: r.reference_hosts,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            last_round: r.last_round,
            feedback: r.feedback,
            judge_state_unreadable: r.judge.as_deref().and_then(judge_state::recovery),
        }
    }
}

/// The answer of `GET /api/v1/releases/{id}/verdict`, shaped for Argo Rollouts' web
/// metric provider: `ok` is false exactly when the decision is `block`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictView {
    /// Release id.
    pub id: i64,
    /// `pass`, `watch` or `block`.
    pub decision: Decision,
    /// `false` on `block`.
    pub ok: bool,
    /// `watching` or `finished`.
    pub state: ReleaseState,
    /// When the decision was taken.
    pub decided_at: Option<i64>,
    /// One line per reason (`rule: summary`).
    pub reasons: Vec<String>,
}
