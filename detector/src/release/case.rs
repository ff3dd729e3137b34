//! A release recorded as a replay case (`GET /api/v1/releases/{id}/case`, DESIGN §5
//! "Replay case"): what `vigil-detector replay` judges again as the live detector did.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{ReleaseError, Releases, definition_of, first_minute};
use crate::judge::{Definition, Feedback, minute_of};
use crate::replay::{Case, CaseMinute, CaseRelease, Expected};
use crate::store::{MinuteRow, Store};

impl<S: Store> Releases<S> {
    /// The release recorded as a replay case (`GET /api/v1/releases/{id}/case`): counters
    /// of its hosts from the baseline to its end (finish, or the last judged minute),
    /// definitions of the fingerprints they show (and of the app's other fingerprints of
    /// the same class chains, which the judge relates), fingerprints known at its start, and
    /// the label its feedback implies.
    ///
    /// # Errors
    /// [`ReleaseError::Conflict`] without a batch, [`ReleaseError::NotFound`],
    /// [`ReleaseError::Store`].
    pub async fn case(&self, id: i64, now: i64) -> Result<Case, ReleaseError> {
        let release = self.load(id).await?;
        let Some(first) = first_minute(&release) else {
            return Err(ReleaseError::Conflict(format!(
                "release {id} has no batch yet; a replay case needs at least one"
            )));
        };
        let end = release
            .finished_at
            .unwrap_or_else(|| release.last_round.map_or(now, |m| m + 60));
        let until = minute_of(end).max(first + 60);
        let rows = self
            .rows(
                &release,
                first - self.params.baseline_minutes * 60,
                until - 60,
            )
            .await?;
        let fingerprints = self.store.exceptions(&release.app).await?;
        let shown: BTreeSet<&str> = rows
            .iter()
            .flat_map(|r| r.exceptions.keys().map(String::as_str))
            .collect();
        let known_fingerprints = fingerprints
            .iter()
            .filter(|f| f.first_seen.is_some_and(|s| s < first))
            .map(|f| f.fingerprint.clone())
            .collect();
        // The judge relates fingerprints of one class chain by their definitions (a
        // fast-throw family, another fingerprint version): the case carries the
        // definitions of those the app has too, so it replays as the live judge judged.
        let chains: HashSet<(&str, &[String])> = fingerprints
            .iter()
            .filter(|f| shown.contains(f.fingerprint.as_str()))
            .map(|f| (f.class.as_str(), f.causes.as_slice()))
            .collect();
        let exceptions: BTreeMap<String, Definition> = fingerprints
            .iter()
            .filter(|f| !f.class.is_empty())
            .filter(|f| {
                shown.contains(f.fingerprint.as_str())
                    || chains.contains(&(f.class.as_str(), f.causes.as_slice()))
            })
            .map(|f| (f.fingerprint.clone(), definition_of(f)))
            .collect();
        let expect = release.feedback.first().map(|f| match f.label {
            Feedback::ValidBlock | Feedback::MissedProblem => Expected::Block,
            Feedback::FalseAlarm | Feedback::ConfirmedNormal => Expected::Pass,
        });
        Ok(Case {
            id: format!("release-{}", release.id),
            app: release.app.clone(),
            expect,
            fault_at: None,
            kind: None,
            release: CaseRelease {
                version: Some(release.version.clone()),
                batches: release.batches.clone(),
                reference_hosts: release.reference_hosts.clone(),
                until: Some(until),
            },
            known_fingerprints,
            exceptions,
            minutes: rows.into_iter().map(case_minute).collect(),
        })
    }
}

fn case_minute(row: MinuteRow) -> CaseMinute {
    CaseMinute {
        host: row.host,
        minute: row.minute,
        lines: row.lines,
        events: row.events,
        error_lines: row.error_lines,
        warn_lines: row.warn_lines,
        exceptions: row.exceptions,
        host_metrics: row.host_metrics,
        requests: row.requests,
    }
}
