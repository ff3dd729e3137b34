//! A release recorded as a replay case (`GET /api/v1/releases/{id}/case`, DESIGN §5
//! "Replay case"): what `vigil-detector replay` judges again as the live detector did.

use std::collections::BTreeMap;

use super::{ReleaseError, Releases, first_minute};
use crate::judge::{Definition, Feedback, fingerprint_hex, minute_of};
use crate::replay::parse_fingerprint;
use crate::replay::{Case, CaseMinute, CaseRelease, Expected};
use crate::store::{MinuteRow, Store};

impl<S: Store> Releases<S> {
    /// The release recorded as a replay case (`GET /api/v1/releases/{id}/case`): counters
    /// of its hosts from the baseline to its end (finish, or the last judged minute),
    /// definitions of the fingerprints they show, which of those were known at its start,
    /// the known members of the class chains of the others that the judge relates them to
    /// (see `catalog`), and the label its feedback implies.
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
        // The judge relates fingerprints of one class chain by their definitions (a
        // fast-throw family, another fingerprint version): the case carries what a round
        // over its minutes reads of the app's fingerprints, so it replays as the live
        // judge judged.
        let catalog = self
            .catalog(
                &release.app,
                first,
                rows.iter()
                    .flat_map(|r| r.exceptions.keys())
                    .filter_map(|f| parse_fingerprint(f).ok()),
            )
            .await?;
        let known_fingerprints = catalog
            .known
            .iter()
            .map(|&fp| fingerprint_hex(fp))
            .collect();
        let exceptions: BTreeMap<String, Definition> = catalog
            .definitions
            .into_iter()
            .map(|(fp, d)| (fingerprint_hex(fp), d))
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
