//! The detector's store: reports de-duplicated by `(instance, seq)`, per-minute counters
//! added up per app, host and minute, and the exceptions each app has shown.
//!
//! The [`Store`] trait keeps the rest of the detector independent of the database; the
//! embedded [`SqliteStore`] is the default; [`PostgresStore`] is shared by several
//! detectors (`store = "postgres://..."`), which lock what they change in it
//! ([`Store::lock`]) and hear of each other's alerts through it ([`Store::alerts_after`]).

mod postgres;
mod shared;
mod sqlite;

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use vigil_proto::v1::Report;

use crate::judge::{Batch, Decision, Feedback, Reason};

pub use postgres::{PostgresStore, session_options};
pub use sqlite::{
    FIRST_PASS_SECS, MAX_EXCEPTION_ROWS_PER_TRANSACTION, MAX_ROWS_PER_TRANSACTION,
    PASS_INTERVAL_SECS, REPORT_KEYS_SECS, RetentionPass, SqliteStore,
};

/// What became of a report handed to [`Store::ingest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed now.
    Stored,
    /// The same `(instance, seq)` was stored before; nothing changed.
    Duplicate,
}

/// A failure of the store itself (not of a report).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    /// The store's files could not be prepared.
    #[error("store: {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The database was written by a newer Vigil.
    #[error("store: schema version {found} is newer than this detector's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
    /// A stored value could not be decoded (written by a broken or newer detector).
    #[error("store: corrupt {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// A bounded read matched more rows than its limit.
    #[error("the query matches more than {limit} rows: narrow it with app, host, from and to")]
    TooManyRows { limit: usize },
}

/// Which per-minute counters to read.
#[derive(Debug, Clone, Default)]
pub struct SeriesQuery {
    /// Only this app.
    pub app: Option<String>,
    /// Only this host.
    pub host: Option<String>,
    /// First minute included (Unix seconds).
    pub from: Option<i64>,
    /// Last minute included (Unix seconds).
    pub to: Option<i64>,
    /// Most rows the answer may hold: more is [`StoreError::TooManyRows`] (the HTTP API's
    /// bound); `None` for the judgement's own bounded windows.
    pub limit: Option<usize>,
}

/// A class chain or stack shape asked about by [`Store::known_members`]: the class, the
/// causes (outermost first) and, for a stack shape, the top frames.
pub type Shape<'a> = (&'a str, &'a [String], Option<&'a [String]>);

/// Which of an app's fingerprints [`Store::exceptions`] reads.
#[derive(Debug, Clone, Copy)]
pub struct ExceptionQuery {
    /// Only those last seen at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only those new since `since` (first seen at or after it) or dangerous, the
    /// dangerous first: what the board lists.
    pub new_or_dangerous: bool,
    /// Most rows the answer holds (the most recently seen).
    pub limit: usize,
    /// Rows of that order left out before the answer's first: the next page of a listing.
    pub offset: usize,
}

impl ExceptionQuery {
    /// The `limit` most recently seen.
    pub fn latest(limit: usize) -> Self {
        Self {
            since: None,
            new_or_dangerous: false,
            limit,
            offset: 0,
        }
    }
}

/// Counters of one app on one host in one minute, summed over reports: the `minutes` shape
/// of the replay case (DESIGN §5), with the app added.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteRow {
    pub app: String,
    pub host: String,
    pub minute: i64,
    pub lines: u64,
    /// Log events (a record with its continuation lines counts once).
    pub events: u64,
    pub error_lines: u64,
    pub warn_lines: u64,
    /// Count per fingerprint (16 lowercase hex digits).
    pub exceptions: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_metrics: Option<HostMetricsRow>,
    /// CPU of the app's process, % of one core (mean over the minute), when the agent's
    /// `process` pattern matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_cpu_pct: Option<f64>,
    /// Resident memory of the app's process, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_rss_bytes: Option<u64>,
    /// HTTP requests from the app's access logs, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::judge::Requests>,
    /// Values scraped from the app's metrics endpoint (`[[scrape]] families`): a counter's
    /// growth in the minute, a gauge's last value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scraped: Option<ScrapedRow>,
}

/// The counters of one app on one host in one hour, rolled up by retention from the
/// minutes older than `[retention] minutes`: sums, the host metrics merged (means weighted
/// by samples, counters added, maxima kept), the app's process mean CPU and peak memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HourRow {
    pub app: String,
    pub host: String,
    /// Start of the hour (UTC Unix seconds).
    pub hour: i64,
    /// Minutes rolled into it.
    pub minutes: u64,
    pub lines: u64,
    pub events: u64,
    pub error_lines: u64,
    pub warn_lines: u64,
    /// Count per fingerprint (16 lowercase hex digits).
    pub exceptions: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_metrics: Option<HostMetricsRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_cpu_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_rss_bytes: Option<u64>,
    /// The hour's requests: counts added, latency histograms merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::judge::Requests>,
    /// The hour's scraped values: counters added, gauges their minutes' mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scraped: Option<ScrapedRow>,
}

/// Values scraped from an app's metrics endpoint, by name.
pub type ScrapedRow = BTreeMap<String, f64>;

/// A dangerous-exception alert as stored: sent at once by an agent, before the minute's
/// counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    pub host: String,
    /// When the exception was logged (UTC Unix seconds).
    pub at: i64,
    /// 16 lowercase hex digits.
    pub fingerprint: String,
    /// Occurrences since the host's previous alert for it.
    pub count: u64,
}

/// Host metrics of one host in one minute, as the judge reads them.
pub type HostMetricsRow = crate::judge::HostMetrics;

/// An app and the hosts that reported for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppRow {
    pub app: String,
    pub hosts: Vec<HostRow>,
}

/// A host of an app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRow {
    pub host: String,
    /// The newest minute it reported counters for.
    pub last_minute: i64,
    pub agent_version: String,
}

/// A fingerprint an app has shown, with its definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FingerprintRow {
    /// 16 lowercase hex digits.
    pub fingerprint: String,
    pub class: String,
    pub causes: Vec<String>,
    pub message: String,
    pub frames: Vec<String>,
    pub dangerous: bool,
    pub sample: String,
    /// First and last minute it was counted or alerted in.
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    /// Occurrences counted in minute reports.
    pub count: u64,
}

/// Whether a release is still judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseState {
    /// Judged every completed minute and on alerts.
    Watching,
    /// Finished with an outcome; no longer judged.
    Finished,
}

impl ReleaseState {
    /// `watching` or `finished`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Watching => "watching",
            ReleaseState::Finished => "finished",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "watching" => Some(ReleaseState::Watching),
            "finished" => Some(ReleaseState::Finished),
            _ => None,
        }
    }
}

/// How a finished release ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Rolled out completely.
    Success,
    /// Rolled back.
    RolledBack,
    /// Nobody finished it within `[limits] max_release_age`: the detector did.
    Expired,
}

impl Outcome {
    /// `success`, `rolled_back` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::RolledBack => "rolled_back",
            Outcome::Expired => "expired",
        }
    }
}

/// A release to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRelease {
    /// Application released.
    pub app: String,
    /// Version released.
    pub version: String,
    /// When the release started (UTC Unix seconds).
    pub started_at: i64,
    /// When the release was created (UTC Unix seconds).
    pub created_at: i64,
    /// Hosts that keep the old version.
    pub reference_hosts: Vec<String>,
    /// The first batch, when it names hosts.
    pub first_batch: Option<Batch>,
}

/// A user's feedback on a release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedbackEntry {
    /// The label.
    pub label: Feedback,
    /// A free note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When it was given.
    pub at: i64,
}

/// A release as stored: what the API shows and what the judgement loop needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRelease {
    /// Id given by the store (1, 2, ...).
    pub id: i64,
    /// Application released.
    pub app: String,
    /// Version released.
    pub version: String,
    /// `watching` or `finished`.
    pub state: ReleaseState,
    /// Set when finished.
    pub outcome: Option<Outcome>,
    /// When the release was created.
    pub created_at: i64,
    /// When the release started.
    pub started_at: i64,
    /// When it was finished.
    pub finished_at: Option<i64>,
    /// Hosts that keep the old version.
    pub reference_hosts: Vec<String>,
    /// Batches in the order they were posted.
    pub batches: Vec<Batch>,
    /// The serialized `ReleaseJudge`, once the release was judged.
    pub judge: Option<String>,
    /// The last minute a round was run for.
    pub last_round: Option<i64>,
    /// The current decision.
    pub decision: Decision,
    /// When it was taken.
    pub decided_at: Option<i64>,
    /// Why.
    pub reasons: Vec<Reason>,
    /// Users' feedback, oldest first.
    pub feedback: Vec<FeedbackEntry>,
}

/// A change of a release's decision, logged by [`Store::update_release`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionEntry {
    /// The release.
    pub release_id: i64,
    /// Its app.
    pub app: String,
    /// Its version.
    pub version: String,
    /// When the new decision was taken.
    pub at: i64,
    /// The new decision.
    pub decision: Decision,
    /// The decision before.
    pub previous: Decision,
    /// The first reason (`rule: summary`), when there was one.
    pub reason: Option<String>,
}

/// Which releases to list.
#[derive(Debug, Clone, Default)]
pub struct ReleaseFilter {
    /// Only this app.
    pub app: Option<String>,
    /// Only releases in this state.
    pub state: Option<ReleaseState>,
}

/// Changes to one release written in one transaction: the release's mutable columns
/// (state, outcome, judge state, decision), and optionally a new batch, the app's memory
/// and a feedback entry.
#[derive(Debug, Clone)]
pub struct ReleaseUpdate<'a> {
    /// The release with its new values; `batches` and `feedback` are not rewritten.
    pub release: &'a StoredRelease,
    /// A batch to append.
    pub new_batch: Option<&'a Batch>,
    /// The app's memory (serialized `AppMemory`) to store.
    pub app_memory: Option<&'a str>,
    /// A feedback entry to append.
    pub feedback: Option<&'a FeedbackEntry>,
    /// A decision change (the webhooks' JSON body) to queue for the webhooks with the
    /// change, when the store keeps the webhooks' queue ([`Store::queues_webhooks`]).
    pub webhook: Option<&'a str>,
}

/// What a change of shared state locks while it reads, changes and writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKey {
    /// One release (its row, batches, judge state, feedback).
    Release(i64),
    /// The apps' learned memory (feedback rewrites an app's).
    AppMemory,
}

/// A decision change queued for the webhooks ([`Store::queues_webhooks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedWebhook {
    pub id: i64,
    /// The JSON body posted.
    pub body: String,
    /// When it was queued (Unix seconds).
    pub queued_at: i64,
    /// The webhook URLs that have it already.
    pub delivered_to: Vec<String>,
}

/// Held until dropped: see [`Store::lock`].
pub type StoreLock = Box<dyn std::any::Any + Send + Sync>;

/// A stored dangerous-exception alert with its place in the store's order, for a leading
/// detector that judges the alerts every detector sharing the store received.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedAlert {
    /// Its id in the store: alerts are read in this order.
    pub id: i64,
    pub app: String,
    pub host: String,
    /// When the exception was logged (UTC Unix seconds).
    pub at: i64,
    pub fingerprint: crate::judge::Fingerprint,
    /// The fingerprint's stored definition.
    pub definition: crate::judge::Definition,
}

/// Formats a fingerprint as the 16 lowercase hex digits used in the API and replay cases.
pub use crate::judge::fingerprint_hex;

/// The detector's storage. Implementations must make [`Store::ingest`] atomic per call:
/// when it returns `Ok`, every report of the batch is durably committed.
pub trait Store: Send + Sync + 'static {
    /// Stores a batch of validated reports in one transaction, once per `(instance, seq)`;
    /// the outcomes are in the order of the batch.
    ///
    /// # Errors
    /// [`StoreError`] when nothing of the batch could be committed.
    fn ingest(
        &self,
        batch: &[Report],
        received_at: i64,
    ) -> impl Future<Output = Result<Vec<IngestOutcome>, StoreError>> + Send;

    /// Per-minute counters, ordered by app, host and minute.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn series(
        &self,
        query: &SeriesQuery,
    ) -> impl Future<Output = Result<Vec<MinuteRow>, StoreError>> + Send;

    /// Hourly roll-ups matching `query` (its `from` and `to` on the hour's start),
    /// ordered by app, host and hour.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read, [`StoreError::TooManyRows`] past the
    /// query's limit.
    fn hours(
        &self,
        query: &SeriesQuery,
    ) -> impl Future<Output = Result<Vec<HourRow>, StoreError>> + Send;

    /// Every app with its hosts, ordered by app and host.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn apps(&self) -> impl Future<Output = Result<Vec<AppRow>, StoreError>> + Send;

    /// The fingerprints `app` has shown, most recently seen first, as `query` bounds them.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn exceptions(
        &self,
        app: &str,
        query: &ExceptionQuery,
    ) -> impl Future<Output = Result<Vec<FingerprintRow>, StoreError>> + Send;

    /// The fingerprints of `app` among `ids`, in no order; an id the app never showed is
    /// left out. Read by primary key, whatever the number of the app's fingerprints;
    /// without their sample traces unless `samples`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn fingerprints(
        &self,
        app: &str,
        ids: &[u64],
        samples: bool,
    ) -> impl Future<Output = Result<Vec<FingerprintRow>, StoreError>> + Send;

    /// Of the class chains and stack shapes `asked`: the members of `app` first seen
    /// before `before` that tell whether an unknown fingerprint is a known failure under
    /// another name (`judge::family`) — for each class chain its smallest fingerprint and
    /// its smallest frameless one, for each stack shape its smallest one — without
    /// message or sample. Exact, and never more rows than three per item asked.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn known_members(
        &self,
        app: &str,
        before: i64,
        asked: &[Shape<'_>],
    ) -> impl Future<Output = Result<Vec<FingerprintRow>, StoreError>> + Send;

    /// The dangerous-exception alerts of `app` at or after `from`, oldest first, at most
    /// `limit` of them.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn alerts(
        &self,
        app: &str,
        from: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AlertRow>, StoreError>> + Send;

    /// Creates a release (and its first batch) in one transaction; returns it with its id.
    ///
    /// # Errors
    /// [`StoreError`] when nothing could be committed.
    fn create_release(
        &self,
        release: &NewRelease,
    ) -> impl Future<Output = Result<StoredRelease, StoreError>> + Send;

    /// One release, `None` when there is no such id.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn release(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<StoredRelease>, StoreError>> + Send;

    /// Releases matching `filter`, newest first.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn releases(
        &self,
        filter: &ReleaseFilter,
    ) -> impl Future<Output = Result<Vec<StoredRelease>, StoreError>> + Send;

    /// Writes `update` in one transaction: all of it or nothing. A change of the
    /// release's decision is logged with it (see [`Store::decisions`]).
    ///
    /// # Errors
    /// [`StoreError`] when nothing could be committed.
    fn update_release(
        &self,
        update: &ReleaseUpdate<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The logged decision changes of one release (or of all), newest first, at most
    /// `limit`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn decisions(
        &self,
        release_id: Option<i64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DecisionEntry>, StoreError>> + Send;

    /// Waits until no other detector sharing the store holds `key`, and holds it until the
    /// returned value is dropped. The embedded store serves one detector, whose own locks
    /// suffice: by default nothing is held.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be reached.
    fn lock(&self, key: LockKey) -> impl Future<Output = Result<StoreLock, StoreError>> + Send {
        let _ = key;
        async { Ok(Box::new(()) as StoreLock) }
    }

    /// The alerts stored after the one with id `after` and received at or after `since`
    /// (Unix seconds), oldest first, at most `limit`: how a leading detector hears of the
    /// alerts other detectors received. The embedded store has one detector, which hears
    /// of its alerts as it stores them: by default, none.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn alerts_after(
        &self,
        after: i64,
        since: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<QueuedAlert>, StoreError>> + Send {
        let _ = (after, since, limit);
        async { Ok(Vec::new()) }
    }

    /// Whether the store keeps the webhooks' queue: a decision change is queued in the
    /// transaction that makes it ([`ReleaseUpdate::webhook`]) and posted by the leading
    /// detector, whichever detector made it, also after that one died. The embedded store
    /// does not: its one detector posts from memory.
    fn queues_webhooks(&self) -> bool {
        false
    }

    /// The queued decision changes not yet posted to every webhook, oldest first, at most
    /// `limit`, leaving out the ids in `skip` (those being posted).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn queued_webhooks(
        &self,
        limit: usize,
        skip: &[i64],
    ) -> impl Future<Output = Result<Vec<QueuedWebhook>, StoreError>> + Send {
        let _ = (limit, skip);
        async { Ok(Vec::new()) }
    }

    /// Records that webhook `url` has queued change `id` (or refused it for good).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    fn webhook_delivered(
        &self,
        id: i64,
        url: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (id, url);
        async { Ok(()) }
    }

    /// Marks queued change `id` as posted to every webhook (or given up) at `at`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    fn webhook_posted(
        &self,
        id: i64,
        at: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (id, at);
        async { Ok(()) }
    }

    /// The serialized `AppMemory` of `app`, when it learned anything.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    fn app_memory(
        &self,
        app: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
}
