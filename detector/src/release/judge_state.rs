//! The stored form of a release's [`ReleaseJudge`], versioned so that a detector upgrade
//! reads what an older one wrote, and a state it cannot read is said to be unreadable
//! rather than silently replaced.
//!
//! Version 2 (written now) is an envelope:
//! `{"version": 2, "judge": {...}, "recovered": {"at": 1763880125, "reason": "..."}}`,
//! where `recovered` is present when the judge was rebuilt because the state before it could
//! not be read (so the release page can say so after any number of restarts).
//! Version 1 is what detectors before the envelope wrote: the judge itself, with no
//! `version` key; [`decode`] migrates it. A version newer than [`VERSION`] is refused as
//! unreadable: a downgraded detector must not guess at a newer judge.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::judge::ReleaseJudge;

/// The version of the stored judge state this detector writes.
pub const VERSION: u64 = 2;

/// When and why a release's judge was rebuilt from an unreadable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// When the unreadable state was found (UTC Unix seconds).
    pub at: i64,
    /// Why it could not be read.
    pub reason: String,
}

/// A stored judge state, read.
#[derive(Debug, Clone)]
pub struct JudgeState {
    /// The judge.
    pub judge: ReleaseJudge,
    /// Set when this judge replaced an unreadable state.
    pub recovered: Option<Recovery>,
}

/// Why a stored judge state cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    version: u64,
    judge: &'a ReleaseJudge,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<&'a Recovery>,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    judge: ReleaseJudge,
    #[serde(default)]
    recovered: Option<Recovery>,
}

/// Only the recovery note of a stored state, read without decoding the judge.
#[derive(Deserialize)]
struct RecoveryOnly {
    #[serde(default)]
    recovered: Option<Recovery>,
}

/// Encodes `judge` (and the note that it replaced an unreadable state) at [`VERSION`].
///
/// # Errors
/// The serializer's message (a judge holds only plain data, so this is not expected).
pub fn encode(judge: &ReleaseJudge, recovered: Option<&Recovery>) -> Result<String, String> {
    serde_json::to_string(&EnvelopeOut {
        version: VERSION,
        judge,
        recovered,
    })
    .map_err(|e| e.to_string())
}

/// Decodes a stored state of any version up to [`VERSION`], migrating older ones.
///
/// # Errors
/// [`Unreadable`] saying why: not JSON, a version newer than [`VERSION`], or a judge that
/// does not decode (a corrupt row, a field this detector does not know).
pub fn decode(text: &str) -> Result<JudgeState, Unreadable> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Unreadable(format!("not JSON: {e}")))?;
    let version = match value.get("version") {
        None => 1,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| Unreadable(format!("version {v} is not a whole number")))?,
    };
    match version {
        1 => from_v1(value),
        2 => serde_json::from_value::<EnvelopeIn>(value)
            .map(|e| JudgeState {
                judge: e.judge,
                recovered: e.recovered,
            })
            .map_err(|e| Unreadable(format!("version 2 judge state: {e}"))),
        newer => Err(Unreadable(format!(
            "version {newer} is newer than this detector's {VERSION} (written by a newer Vigil)"
        ))),
    }
}

/// Version 1: the judge itself.
fn from_v1(value: Value) -> Result<JudgeState, Unreadable> {
    serde_json::from_value(value)
        .map(|judge| JudgeState {
            judge,
            recovered: None,
        })
        .map_err(|e| Unreadable(format!("version 1 judge state: {e}")))
}

/// The recovery note of a stored state, without decoding its judge (for pages and the
/// API); `None` for an older or unreadable state.
pub fn recovery(text: &str) -> Option<Recovery> {
    serde_json::from_str::<RecoveryOnly>(text)
        .ok()
        .and_then(|r| r.recovered)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::judge::{Batch, JudgeParams, Release};

    fn judge() -> ReleaseJudge {
        ReleaseJudge::new(
            Release {
                app: "shop".into(),
                batches: vec![Batch {
                    at: 1_763_880_000,
                    hosts: vec!["h1".into()],
                }],
                reference_hosts: vec!["h2".into()],
                until: None,
            },
            HashSet::new(),
            HashMap::new(),
        )
    }

    #[test]
    fn the_current_version_round_trips_with_its_recovery_note() {
        let note = Recovery {
            at: 7,
            reason: "not JSON".into(),
        };
        let text = encode(&judge(), Some(&note)).expect("encode");
        assert!(text.starts_with("{\"version\":2,"), "{text}");
        let state = decode(&text).expect("decode");
        assert_eq!(state.judge, judge());
        assert_eq!(state.recovered.as_ref(), Some(&note));
        assert_eq!(recovery(&text), Some(note));
        let plain = encode(&judge(), None).expect("encode");
        assert_eq!(recovery(&plain), None);
    }

    #[test]
    fn a_version_1_state_is_migrated() {
        // What detectors before the envelope stored: the judge itself.
        let v1 = serde_json::to_string(&judge()).expect("v1");
        let state = decode(&v1).expect("v1 decodes");
        assert_eq!(state.judge, judge());
        assert_eq!(state.recovered, None);
    }

    #[test]
    fn a_state_stored_before_the_false_block_budget_existed_reads_with_the_default() {
        // What the detector stored before `JudgeParams::false_block_budget`.
        let text = encode(&judge(), None).expect("encode");
        let older = text.replace(",\"false_block_budget\":0.01", "");
        assert_ne!(older, text, "the field is in today's state: {text}");
        let state = decode(&older).expect("an older state decodes");
        assert_eq!(state.judge, judge());
    }

    #[test]
    fn a_state_stored_before_learned_warm_ups_keeps_its_warm_up() {
        // A release judged by a detector before start-up profiles: its warm-up was chosen
        // then (the default), and a profile the app learns now must not change it midway.
        let text = encode(&judge(), None).expect("encode");
        assert!(text.contains(",\"warmup_chosen\":false"), "{text}");
        let older = text
            .replace(",\"warmup_chosen\":false", "")
            .replace(",\"startup\":null", "");
        assert_ne!(older, text);
        let state = decode(&older).expect("an older state decodes");
        let again = encode(&state.judge, None).expect("encode");
        assert!(again.contains(",\"warmup_chosen\":true"), "{again}");
    }

    #[test]
    fn a_state_stored_before_the_logs_lag_was_learned_keeps_its_learned_warm_up() {
        // Before a host's own start-up could shorten a learned warm-up, a judge stored no
        // `own_startup` and its record no `startup_lag`: it reads with neither.
        let mut j = judge();
        j.round(1_763_880_000, &[], &crate::judge::AppMemory::default());
        let text = encode(&j, None).expect("encode");
        assert!(text.contains(",\"startup_lag\":null"), "{text}");
        assert!(!text.contains("own_startup"), "{text}");
        let older = text.replace(",\"startup_lag\":null", "");
        let state = decode(&older).expect("an older state decodes");
        assert_eq!(state.judge, j);
    }

    #[test]
    fn a_state_stored_before_false_alarms_taught_the_released_minutes_reads_with_none() {
        // Before a false alarm taught the app how its host metrics behave after a release,
        // a judge's record kept no `released_hits` nor `released_span`.
        let mut j = judge();
        j.round(1_763_880_000, &[], &crate::judge::AppMemory::default());
        let text = encode(&j, None).expect("encode");
        let span = ",\"released_span\":[1763880000,1763880060]";
        assert!(
            text.contains(",\"released_hits\":{}") && text.contains(span),
            "{text}"
        );
        let older = text.replace(",\"released_hits\":{}", "").replace(span, "");
        let state = decode(&older).expect("an older state decodes");
        let again = encode(&state.judge, None).expect("encode");
        assert!(again.contains(",\"released_span\":null"), "{again}");
    }

    #[test]
    fn a_state_stored_before_the_host_metrics_had_their_own_warm_up_keeps_one_for_both() {
        // Before `metric_warmup_minutes`, one warm-up (the default or the app's learned
        // one, here 6) held for every test: a release judged then keeps it for its host
        // metrics too, not today's default of 3.
        let text = encode(&judge(), None).expect("encode");
        assert!(text.contains("\"metric_warmup_minutes\":3"), "{text}");
        let older = text
            .replace(",\"metric_warmup_minutes\":3", "")
            .replace("\"warmup_minutes\":2", "\"warmup_minutes\":6");
        assert!(!older.contains("metric_warmup_minutes") && older.contains("\"warmup_minutes\":6"));
        let state = decode(&older).expect("an older state decodes");
        let again = encode(&state.judge, None).expect("encode");
        assert!(!again.contains("metric_warmup_minutes"), "{again}");
        let mut params = serde_json::to_value(JudgeParams::default()).expect("params");
        params["warmup_minutes"] = 6.into();
        params
            .as_object_mut()
            .and_then(|p| p.remove("metric_warmup_minutes"))
            .expect("the field is in today's params");
        let older: JudgeParams = serde_json::from_value(params).expect("older params");
        assert_eq!(older.metric_warmup(), 6);
        assert_eq!(JudgeParams::default().metric_warmup(), 3);
    }

    #[test]
    fn newer_corrupt_and_garbled_states_are_unreadable_with_a_reason() {
        let newer = format!(
            "{{\"version\":3,\"judge\":{}}}",
            serde_json::to_string(&judge()).expect("judge")
        );
        let err = decode(&newer).expect_err("newer");
        assert!(
            err.0.contains("version 3 is newer than this detector's 2"),
            "{err}"
        );
        assert!(decode("{\"version\":2,\"judge\":{}}").is_err());
        assert!(
            decode("{\"window\":")
                .expect_err("cut")
                .0
                .starts_with("not JSON")
        );
        assert!(decode("{\"version\":\"two\"}").is_err());
        assert!(
            decode("{\"release\":42}")
                .expect_err("v1 corrupt")
                .0
                .contains("version 1")
        );
    }
}
