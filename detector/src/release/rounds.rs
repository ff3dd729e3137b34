//! The judgement of the releases: minute rounds (one per completed minute, caught up after
//! a pause, two releases at a time), dangerous-exception alerts between rounds, the loop
//! that runs both until the detector stops, and loading a release's judge (its stored
//! state, migrated or recovered, or a new one) with the counters it reads.

use super::*;

impl<S: Store> Releases<S> {
    /// Judges every watched release up to the completed minute `minute` (one round per
    /// minute not judged yet), two releases at a time, newest first. A
    /// release that fails is logged and left for the next round.
    ///
    /// # Errors
    /// [`ReleaseError::Store`] when the releases cannot be listed.
    pub async fn round_all(&self, minute: i64) -> Result<(), ReleaseError> {
        let watching = self
            .store
            .releases(&ReleaseFilter {
                app: None,
                state: Some(ReleaseState::Watching),
            })
            .await?;
        let queue: std::sync::Mutex<VecDeque<i64>> =
            std::sync::Mutex::new(watching.iter().map(|r| r.id).collect());
        drop(watching);
        let worker = || async {
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .pop_front();
                let Some(id) = next else { return };
                if let Err(e) = self.round(id, minute).await {
                    tracing::warn!(id, error = %e, "release round failed");
                }
            }
        };
        // Each release's funnel runs on a blocking thread; two at once keep two cores busy
        // without letting rounds crowd out ingest and alerts on a small machine.
        tokio::join!(worker(), worker());
        Ok(())
    }

    /// Runs the rounds of one release up to `minute`; returns the release afterwards.
    ///
    /// # Errors
    /// [`ReleaseError::NotFound`], [`ReleaseError::Store`].
    pub async fn round(&self, id: i64, minute: i64) -> Result<ReleaseView, ReleaseError> {
        let minute = minute_of(minute);
        let _guard = self.hold(id).await?;
        let mut release = self.load(id).await?;
        let Some(first) = first_minute(&release) else {
            return Ok(release.into());
        };
        if release.state != ReleaseState::Watching || minute < first {
            return Ok(release.into());
        }
        let start = release
            .last_round
            .map_or(first, |m| m + 60)
            .max(minute - (MAX_CATCH_UP_ROUNDS.min(window::JUDGED_MINUTES) - 1) * 60);
        if start > minute {
            return Ok(release.into());
        }
        let Some(loaded) = self.judge_of(&release, minute + 60).await? else {
            return Ok(release.into());
        };
        let (mut judge, recovered) = (loaded.judge, loaded.recovered);
        // A bounded window whatever the release's age (see `window`).
        let batch_minutes: Vec<i64> = release.batches.iter().map(|b| minute_of(b.at)).collect();
        let mut rows: Vec<HostMinute> = Vec::new();
        for (from, to) in
            window::judged_ranges(&batch_minutes, self.params.baseline_minutes, minute)
        {
            rows.extend(
                self.rows(&release, from, to)
                    .await?
                    .into_iter()
                    .map(host_minute),
            );
        }
        let memory = self.memory(&release.app).await?;
        let catalog = self
            .catalog(
                &release.app,
                first,
                rows.iter()
                    .flat_map(|r| r.exceptions.keys().copied())
                    .chain(learned_since(&memory, first)),
            )
            .await?;
        judge.set_fingerprints(catalog.known, catalog.definitions);
        let previous = release.decision;
        // The funnel is plain CPU work: off the async workers, so ingest and the API keep
        // their threads whatever the number of releases and minutes.
        let judging = std::time::Instant::now();
        let (judge, verdict) = tokio::task::spawn_blocking(move || {
            let mut verdict = judge.verdict().clone();
            let mut m = start;
            while m <= minute {
                verdict = judge.round(m, &rows, &memory);
                m += 60;
            }
            (judge, verdict)
        })
        .await
        .map_err(|e| ReleaseError::Judgement(e.to_string()))?;
        crate::metrics::global().judged(judging.elapsed());
        release.last_round = Some(minute);
        self.record_verdict(&mut release, &judge, recovered.as_ref(), verdict, previous)
            .await?;
        Ok(release.into())
    }

    /// Stores a verdict with the judge state behind it, and tells the webhooks when the
    /// decision changed.
    async fn record_verdict(
        &self,
        release: &mut StoredRelease,
        judge: &ReleaseJudge,
        recovered: Option<&Recovery>,
        verdict: Verdict,
        previous: Decision,
    ) -> Result<(), ReleaseError> {
        release.judge = Some(encode_judge(judge, recovered)?);
        release.decision = verdict.decision;
        release.decided_at = Some(verdict.decided_at);
        release.reasons = verdict.reasons;
        let change = self.change_of(release, previous);
        let queued = self.queued(change.as_ref())?;
        self.store
            .update_release(&ReleaseUpdate {
                release,
                new_batch: None,
                app_memory: None,
                feedback: None,
                webhook: queued.as_deref(),
            })
            .await?;
        self.notify(change);
        Ok(())
    }

    /// Judges a stored dangerous-exception alert against every watched release of its
    /// app that has released its host.
    ///
    /// # Errors
    /// [`ReleaseError::Store`].
    pub async fn alert(&self, alert: &StoredAlert) -> Result<(), ReleaseError> {
        let watching = self
            .store
            .releases(&ReleaseFilter {
                app: Some(alert.app.clone()),
                state: Some(ReleaseState::Watching),
            })
            .await?;
        for candidate in watching {
            if candidate.decision == Decision::Block
                || !candidate
                    .batches
                    .iter()
                    .any(|b| b.hosts.contains(&alert.host))
            {
                continue;
            }
            let _guard = self.hold(candidate.id).await?;
            let mut release = self.load(candidate.id).await?;
            if release.state != ReleaseState::Watching {
                continue;
            }
            let Some(loaded) = self.judge_of(&release, alert.at).await? else {
                continue;
            };
            let (mut judge, recovered) = (loaded.judge, loaded.recovered);
            let memory = self.memory(&release.app).await?;
            if let Some(first) = first_minute(&release) {
                // The alert's fingerprint, and those its judge counts as known for having
                // seen them outside the release at the last round (their families too).
                let ids: Vec<Fingerprint> = std::iter::once(alert.fingerprint)
                    .chain(judge.outside_last_round())
                    .chain(learned_since(&memory, first))
                    .collect();
                let catalog = self.catalog(&release.app, first, ids).await?;
                judge.set_fingerprints(catalog.known, catalog.definitions);
            }
            let previous = release.decision;
            let verdict = judge.alert(
                alert.at,
                &alert.host,
                alert.fingerprint,
                &alert.definition,
                &memory,
            );
            if verdict.decision == previous {
                if loaded.found_unreadable {
                    // Keep the rebuilt judge, so the unreadable state is reported once.
                    let verdict = judge.verdict().clone();
                    self.record_verdict(
                        &mut release,
                        &judge,
                        recovered.as_ref(),
                        verdict,
                        previous,
                    )
                    .await?;
                }
                continue;
            }
            tracing::info!(id = release.id, app = %release.app, host = %alert.host, fingerprint = %fingerprint_hex(alert.fingerprint), decision = verdict.decision.as_str(), "alert changed a release's decision");
            self.record_verdict(&mut release, &judge, recovered.as_ref(), verdict, previous)
                .await?;
        }
        Ok(())
    }

    /// Runs the judgement until `stop` turns true: a round of every watched release
    /// [`ROUND_DELAY_SECS`] after each minute boundary of the releases' [`Clock`] (then
    /// the expiry of those past `[limits] max_release_age`), and each alert as it arrives.
    pub async fn run(
        self: Arc<Self>,
        mut alerts: mpsc::Receiver<StoredAlert>,
        mut stop: watch::Receiver<bool>,
    ) {
        let rounds = {
            let this = Arc::clone(&self);
            let mut stop = stop.clone();
            async move {
                let clock = Arc::clone(&this.clock);
                let delay = ROUND_DELAY_SECS as i64;
                let mut due = minute_of(clock.now()) + 60 + delay;
                loop {
                    tokio::select! {
                        () = clock.sleep_until(due) => {}
                        () = stopped(&mut stop) => return,
                    }
                    let now = clock.now();
                    // The boundary just passed and the minute that ended at it. The next
                    // round is due after the next boundary, however long this one took
                    // (a round that spans boundaries is caught up by the next).
                    let boundary = minute_of(now - delay);
                    let judged = boundary - 60;
                    due = boundary + 60 + delay;
                    if !this.lead.leads() {
                        // Another detector judges; its next round, or ours when we take
                        // over, catches up every minute from the stored state.
                        continue;
                    }
                    if let Err(e) = this.round_all(judged).await {
                        tracing::warn!(error = %e, "judgement round failed");
                    }
                    // Judged up to the minute that just ended, then ended when too old.
                    if let Err(e) = this.expire(now).await {
                        tracing::warn!(error = %e, "expiring releases failed");
                    }
                }
            }
        };
        let shared_alerts = Arc::clone(&self).judge_shared_alerts(stop.clone());
        let alerts = async move {
            loop {
                tokio::select! {
                    alert = alerts.recv() => match alert {
                        // A detector that does not lead leaves its alerts to the leader,
                        // which reads them from the shared store.
                        Some(_) if !self.lead.leads() => {}
                        Some(alert) => {
                            if let Err(e) = self.alert(&alert).await {
                                tracing::warn!(error = %e, app = %alert.app, host = %alert.host, "alert judgement failed");
                            }
                        }
                        None => return,
                    },
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        tokio::join!(rounds, alerts, shared_alerts);
    }

    /// With a shared store, while this detector leads: judges every alert stored by any
    /// detector, read in store order every [`SHARED_ALERT_POLL`]. On taking the lead it
    /// starts with the alerts received in the last [`SHARED_ALERT_LOOKBACK_SECS`]: those
    /// the previous leader may not have judged. Judging an alert again changes nothing (a
    /// blocked release is not judged on alerts; any other sees the same evidence).
    async fn judge_shared_alerts(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.lead.shared() {
            return;
        }
        let mut lead = self.lead.clone();
        loop {
            tokio::select! {
                () = lead.until_leading() => {}
                () = stopped(&mut stop) => return,
            }
            let mut after = 0;
            let since = jiff::Timestamp::now().as_second() - SHARED_ALERT_LOOKBACK_SECS;
            while lead.leads() {
                match self
                    .store
                    .alerts_after(after, since, SHARED_ALERT_BATCH)
                    .await
                {
                    Ok(queued) => {
                        for q in queued {
                            after = after.max(q.id);
                            let alert = StoredAlert {
                                app: q.app,
                                host: q.host,
                                at: q.at,
                                fingerprint: q.fingerprint,
                                definition: q.definition,
                            };
                            if let Err(e) = self.alert(&alert).await {
                                tracing::warn!(error = %e, app = %alert.app, host = %alert.host, "alert judgement failed");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the shared store's alerts"),
                }
                tokio::select! {
                    () = tokio::time::sleep(SHARED_ALERT_POLL) => {}
                    () = stopped(&mut stop) => return,
                }
            }
        }
    }

    /// The release's judge: as stored (older versions migrated), or new when never
    /// judged. `None` without batches.
    ///
    /// A stored state that cannot be read never lifts a decision: a judge is rebuilt from
    /// the stored counters, starting from the release's decision (a block stays a block),
    /// and the finding is logged as an error, counted in `/metrics` and noted (with `at`)
    /// in the state written back, which the release page and the API show.
    pub(super) async fn judge_of(
        &self,
        release: &StoredRelease,
        at: i64,
    ) -> Result<Option<LoadedJudge>, ReleaseError> {
        let Some(text) = release.judge.as_deref() else {
            return Ok(self.build_judge(release).await?.map(|judge| LoadedJudge {
                judge,
                recovered: None,
                found_unreadable: false,
            }));
        };
        let unreadable = match judge_state::decode(text) {
            Ok(state) => {
                return Ok(Some(LoadedJudge {
                    judge: state.judge,
                    recovered: state.recovered,
                    found_unreadable: false,
                }));
            }
            Err(e) => e,
        };
        tracing::error!(id = release.id, app = %release.app, decision = release.decision.as_str(), error = %unreadable, "stored judge state unreadable; judging on from the release's decision");
        crate::metrics::global().judge_state_unreadable();
        let Some(mut judge) = self.build_judge(release).await? else {
            return Ok(None);
        };
        judge.resume(Verdict {
            decision: release.decision,
            decided_at: release.decided_at.unwrap_or(at),
            reasons: release.reasons.clone(),
        });
        Ok(Some(LoadedJudge {
            judge,
            recovered: Some(Recovery {
                at,
                reason: unreadable.0,
            }),
            found_unreadable: true,
        }))
    }

    pub(super) async fn build_judge(
        &self,
        release: &StoredRelease,
    ) -> Result<Option<ReleaseJudge>, ReleaseError> {
        if first_minute(release).is_none() {
            return Ok(None);
        }
        // The fingerprints each round needs are given to it (`catalog`).
        let (known, definitions) = (HashSet::new(), HashMap::new());
        Ok(Some(ReleaseJudge::with_params(
            Release {
                app: release.app.clone(),
                batches: release.batches.clone(),
                reference_hosts: release.reference_hosts.clone(),
                until: None,
            },
            known,
            definitions,
            self.params.clone(),
        )))
    }

    /// Stored counters of the release's hosts from `from` to `to` (inclusive).
    pub(super) async fn rows(
        &self,
        release: &StoredRelease,
        from: i64,
        to: i64,
    ) -> Result<Vec<MinuteRow>, ReleaseError> {
        let hosts: HashSet<&str> = release
            .batches
            .iter()
            .flat_map(|b| b.hosts.iter())
            .chain(&release.reference_hosts)
            .map(String::as_str)
            .collect();
        let rows = self
            .store
            .series(&SeriesQuery {
                app: Some(release.app.clone()),
                host: None,
                from: Some(from),
                to: Some(to),
                limit: None,
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter(|r| hosts.contains(r.host.as_str()))
            .collect())
    }
}

/// Fingerprints the app's memory learned as known (from feedback on another release) that
/// were seen at or after `first`: first seen after this release started, so the store's
/// record does not count them as known before it, and the catalog reads them by id to
/// let them stand for their families as the memory has them stand for themselves.
fn learned_since(memory: &AppMemory, first: i64) -> impl Iterator<Item = Fingerprint> + '_ {
    memory
        .known_fingerprints
        .iter()
        .filter(move |&(_, &seen)| seen >= first)
        .map(|(&fp, _)| fp)
}
