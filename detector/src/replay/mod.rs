//! Replay: judge recorded or generated releases with the live detector's own judgement
//! code and measure precision, recall and time to block (DESIGN §5, "Replay case").
//!
//! Cases are JSON Lines, judged in file order. For each case a [`ReleaseJudge`] runs one
//! round per completed minute from the first batch to `until` over the rows known up to
//! that minute, exactly as the live detector does; each app's [`AppMemory`] is carried
//! from case to case and every labelled case's outcome is fed back as a user would
//! (`expect` block + block → `valid_block`, pass + block → `false_alarm`, block + not
//! blocked → `missed_problem`, pass + not blocked → `confirmed_normal`).
//!
//! ```
//! use vigil_detector::replay::{parse_cases, Replayer};
//!
//! let line = r#"{"id":"c1","app":"shop","expect":"pass","release":{"batches":[{"at":600,"hosts":["h1"]}],"reference_hosts":["h2"],"until":900},"minutes":[]}"#;
//! let cases = parse_cases(line.as_bytes()).unwrap();
//! let mut replayer = Replayer::default();
//! let result = replayer.judge_case(&cases[0]);
//! assert_eq!(result.decision.as_str(), "pass");
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::judge::{
    AppMemory, Batch, Decision, Definition, Feedback, Fingerprint, HostMetrics, HostMinute,
    JudgeParams, Reason, Release, ReleaseJudge, Requests, minute_of,
};

/// The label of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expected {
    /// The release is bad and should be blocked.
    Block,
    /// The release is good and should pass.
    Pass,
}

impl Expected {
    /// `block` or `pass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Expected::Block => "block",
            Expected::Pass => "pass",
        }
    }
}

/// The `release` object of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRelease {
    /// Version released (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Batches (at least one).
    pub batches: Vec<Batch>,
    /// Hosts that kept the old version.
    #[serde(default)]
    pub reference_hosts: Vec<String>,
    /// End of the watch; the last minute with data when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

/// One element of `minutes`: the counters of a host in a minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseMinute {
    /// Host.
    pub host: String,
    /// Start of the minute (multiple of 60).
    pub minute: i64,
    /// Log lines.
    #[serde(default)]
    pub lines: u64,
    /// Log events (records); absent or 0 where they were not counted, and then `lines`
    /// is the unit of work.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub events: u64,
    /// Error lines.
    #[serde(default)]
    pub error_lines: u64,
    /// Warning lines.
    #[serde(default)]
    pub warn_lines: u64,
    /// Count per fingerprint (16 hex digits).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exceptions: BTreeMap<String, u64>,
    /// Host metrics; any field may be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_metrics: Option<CaseHostMetrics>,
    /// HTTP requests from the app's access logs (DESIGN §5); absent where it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Requests>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Host metrics as written in a case (absent fields are omitted): the judge's own type.
pub type CaseHostMetrics = HostMetrics;

/// A replay case exactly as written in the file (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Case id.
    pub id: String,
    /// Application.
    pub app: String,
    /// Label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expected>,
    /// When the fault started (label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_at: Option<i64>,
    /// What kind of release it is (label, e.g. `bad-KnownMore`, `ok-Surge`): the summary
    /// counts outcomes per kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The release.
    pub release: CaseRelease,
    /// Fingerprints the app had shown when the release started.
    #[serde(default)]
    pub known_fingerprints: Vec<String>,
    /// Definitions per fingerprint.
    #[serde(default)]
    pub exceptions: BTreeMap<String, Definition>,
    /// Counters per host and minute.
    #[serde(default)]
    pub minutes: Vec<CaseMinute>,
}

/// A validated case, ready to judge.
#[derive(Debug, Clone)]
pub struct ParsedCase {
    /// Case id.
    pub id: String,
    /// Label.
    pub expect: Option<Expected>,
    /// Fault start (label).
    pub fault_at: Option<i64>,
    /// Kind (label).
    pub kind: Option<String>,
    /// The release (with `until` resolved).
    pub release: Release,
    /// Known fingerprints at the start.
    pub known: HashSet<Fingerprint>,
    /// Definitions.
    pub definitions: HashMap<Fingerprint, Definition>,
    /// Rows sorted by minute, then host.
    pub rows: Vec<HostMinute>,
}

/// The longest `kind` a case may have.
pub const MAX_KIND_LEN: usize = 100;

/// Why a replay file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be read.
    #[error("cannot read cases: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not a valid case.
    #[error("line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Parses a fingerprint written as 1 to 16 hex digits.
///
/// # Errors
/// A description of what is wrong.
pub fn parse_fingerprint(text: &str) -> Result<Fingerprint, String> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "fingerprint {text:?} is not 1 to 16 hexadecimal digits"
        ));
    }
    u64::from_str_radix(text, 16).map_err(|e| format!("fingerprint {text:?}: {e}"))
}

impl Case {
    /// Validates the case.
    ///
    /// # Errors
    /// The first problem found, in words.
    pub fn validate(self) -> Result<ParsedCase, String> {
        if self.id.trim().is_empty() {
            return Err("`id` is empty".into());
        }
        if self.app.trim().is_empty() {
            return Err("`app` is empty".into());
        }
        if let Some(kind) = &self.kind {
            let chars = kind.chars().count();
            if kind.trim().is_empty() || chars > MAX_KIND_LEN {
                return Err(format!(
                    "`kind` must be 1 to {MAX_KIND_LEN} characters, not {chars}"
                ));
            }
            if kind.chars().any(char::is_control) {
                return Err("`kind` holds a control character".into());
            }
        }
        if self.release.batches.is_empty() {
            return Err("`release.batches` is empty: a case needs at least one batch".into());
        }
        for (i, b) in self.release.batches.iter().enumerate() {
            if b.hosts.iter().any(|h| h.is_empty()) {
                return Err(format!("`release.batches[{i}]` names an empty host"));
            }
        }
        let first = self
            .release
            .batches
            .iter()
            .map(|b| b.at)
            .min()
            .unwrap_or_default();
        let known = self
            .known_fingerprints
            .iter()
            .map(|f| parse_fingerprint(f).map_err(|e| format!("`known_fingerprints`: {e}")))
            .collect::<Result<HashSet<_>, _>>()?;
        let mut definitions = HashMap::new();
        for (f, d) in self.exceptions {
            definitions.insert(
                parse_fingerprint(&f).map_err(|e| format!("`exceptions`: {e}"))?,
                d,
            );
        }
        let mut rows = Vec::with_capacity(self.minutes.len());
        let mut last_minute = minute_of(first);
        for (i, m) in self.minutes.into_iter().enumerate() {
            if m.minute % 60 != 0 {
                return Err(format!(
                    "`minutes[{i}].minute` {} is not a multiple of 60",
                    m.minute
                ));
            }
            if m.host.is_empty() {
                return Err(format!("`minutes[{i}].host` is empty"));
            }
            let mut exceptions = BTreeMap::new();
            for (f, n) in m.exceptions {
                let fp = parse_fingerprint(&f).map_err(|e| format!("`minutes[{i}]`: {e}"))?;
                *exceptions.entry(fp).or_insert(0) += n;
            }
            if let Some(problem) = m.requests.as_ref().and_then(Requests::problem) {
                return Err(format!("`minutes[{i}].requests`: {problem}"));
            }
            last_minute = last_minute.max(m.minute);
            rows.push(HostMinute {
                host: m.host,
                minute: m.minute,
                lines: m.lines,
                events: m.events,
                error_lines: m.error_lines,
                warn_lines: m.warn_lines,
                exceptions,
                host_metrics: m.host_metrics.unwrap_or_default(),
                requests: m.requests,
            });
        }
        let until = self.release.until.unwrap_or(last_minute + 60);
        if until < first {
            return Err(format!(
                "`release.until` {until} is before the first batch {first}"
            ));
        }
        rows.sort_by(|a, b| a.minute.cmp(&b.minute).then_with(|| a.host.cmp(&b.host)));
        Ok(ParsedCase {
            id: self.id,
            expect: self.expect,
            fault_at: self.fault_at,
            kind: self.kind,
            release: Release {
                app: self.app,
                batches: self.release.batches,
                reference_hosts: self.release.reference_hosts,
                until: Some(until),
            },
            known,
            definitions,
            rows,
        })
    }
}

/// Reads and validates every case of a JSON Lines stream (blank lines are skipped).
///
/// # Errors
/// [`ReplayError::Malformed`] with the line number and reason for the first bad line.
pub fn parse_cases(reader: impl BufRead) -> Result<Vec<ParsedCase>, ReplayError> {
    let mut cases = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |reason: String| ReplayError::Malformed {
            line: i + 1,
            reason,
        };
        let case: Case =
            serde_json::from_str(&line).map_err(|e| malformed(format!("invalid case: {e}")))?;
        cases.push(case.validate().map_err(malformed)?);
    }
    Ok(cases)
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseResult {
    /// Case id.
    pub id: String,
    /// Label.
    pub expected: Option<Expected>,
    /// Final decision.
    pub decision: Decision,
    /// When the final decision was taken.
    pub decided_at: i64,
    /// Seconds from `fault_at` (or the first batch) to the block.
    pub seconds_to_block: Option<i64>,
    /// Hosts released when the block came.
    pub hosts_released_at_block: Option<usize>,
    /// Why.
    pub reasons: Vec<Reason>,
    /// Kind (label), when the case has one (added last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Counts over a replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Cases judged.
    pub cases: usize,
    /// The labelled ones by how they ended (`tp`, `fp`, `tn`, `fn` in the JSON).
    #[serde(flatten)]
    pub counts: Confusion,
    /// tp / (tp + fp); `None` when nothing was blocked.
    pub precision: Option<f64>,
    /// tp / (tp + fn); `None` without labelled bad cases.
    pub recall: Option<f64>,
    /// Median seconds to block over the true positives.
    pub median_seconds_to_block: Option<f64>,
    /// Per rule (by its API name): the blocks it took part in (a block's critical reasons
    /// name one or more rules), right and wrong by the cases' labels.
    pub rules: BTreeMap<String, RuleBlocks>,
    /// Per kind of case (cases with a `kind`): how they ended.
    pub kinds: BTreeMap<String, KindOutcomes>,
}

/// Labelled cases by how they ended: blocked or not, against their label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Confusion {
    /// Labelled block, blocked.
    pub tp: usize,
    /// Labelled pass, blocked.
    pub fp: usize,
    /// Labelled pass, not blocked.
    pub tn: usize,
    /// Labelled block, not blocked.
    #[serde(rename = "fn")]
    pub fn_: usize,
}

impl Confusion {
    /// Counts a case labelled `expected` (nothing when unlabelled); true for a true
    /// positive.
    fn add(&mut self, expected: Option<Expected>, blocked: bool) -> bool {
        match (expected, blocked) {
            (Some(Expected::Block), true) => self.tp += 1,
            (Some(Expected::Pass), true) => self.fp += 1,
            (Some(Expected::Pass), false) => self.tn += 1,
            (Some(Expected::Block), false) => self.fn_ += 1,
            (None, _) => {}
        }
        expected == Some(Expected::Block) && blocked
    }
}

/// How the cases of one kind ended over a replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindOutcomes {
    /// Cases of the kind.
    pub cases: usize,
    /// The labelled ones by how they ended (`tp`, `fp`, `tn`, `fn` in the JSON).
    #[serde(flatten)]
    pub counts: Confusion,
    /// Ended on `watch`.
    pub watch: usize,
    /// Median seconds to block over the kind's true positives.
    pub median_seconds_to_block: Option<f64>,
}

/// The blocks one rule took part in over a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RuleBlocks {
    /// Of cases labelled `block`.
    pub right: usize,
    /// Of cases labelled `pass`.
    pub wrong: usize,
    /// Of unlabelled cases.
    pub unlabelled: usize,
}

impl Summary {
    /// Builds the summary of results.
    pub fn of(results: &[CaseResult]) -> Self {
        let mut s = Summary {
            cases: results.len(),
            ..Summary::default()
        };
        let mut seconds = Vec::new();
        let mut kind_seconds: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for r in results {
            let blocked = r.decision == Decision::Block;
            if let Some(kind) = &r.kind {
                let k = s.kinds.entry(kind.clone()).or_default();
                k.cases += 1;
                k.watch += usize::from(r.decision == Decision::Watch);
                if k.counts.add(r.expected, blocked)
                    && let Some(t) = r.seconds_to_block
                {
                    kind_seconds.entry(kind).or_default().push(t as f64);
                }
            }
            if blocked {
                let mut rules: Vec<&str> = r.reasons.iter().map(|x| x.rule.as_str()).collect();
                rules.sort_unstable();
                rules.dedup();
                for rule in rules {
                    let slot = s.rules.entry(rule.to_string()).or_default();
                    match r.expected {
                        Some(Expected::Block) => slot.right += 1,
                        Some(Expected::Pass) => slot.wrong += 1,
                        None => slot.unlabelled += 1,
                    }
                }
            }
            if s.counts.add(r.expected, blocked)
                && let Some(t) = r.seconds_to_block
            {
                seconds.push(t as f64);
            }
        }
        let c = s.counts;
        s.precision = (c.tp + c.fp > 0).then(|| c.tp as f64 / (c.tp + c.fp) as f64);
        s.recall = (c.tp + c.fn_ > 0).then(|| c.tp as f64 / (c.tp + c.fn_) as f64);
        s.median_seconds_to_block = crate::judge::stats::median(&mut seconds);
        for (kind, mut t) in kind_seconds {
            if let Some(k) = s.kinds.get_mut(kind) {
                k.median_seconds_to_block = crate::judge::stats::median(&mut t);
            }
        }
        s
    }

    /// F1 score, when precision and recall are defined.
    pub fn f1(&self) -> Option<f64> {
        let (p, r) = (self.precision.unwrap_or(0.0), self.recall?);
        if p + r <= 0.0 {
            return Some(0.0);
        }
        Some(2.0 * p * r / (p + r))
    }
}

/// Judges cases in order, carrying each app's memory.
#[derive(Debug, Default)]
pub struct Replayer {
    /// Memory per app.
    pub memories: HashMap<String, AppMemory>,
    /// Parameters of every judge.
    pub params: JudgeParams,
}

impl Replayer {
    /// A replayer with explicit judge parameters.
    pub fn with_params(params: JudgeParams) -> Self {
        Self {
            memories: HashMap::new(),
            params,
        }
    }

    /// Judges one case minute by minute and feeds a labelled outcome back to the app's
    /// memory.
    pub fn judge_case(&mut self, case: &ParsedCase) -> CaseResult {
        let memory = self.memories.entry(case.release.app.clone()).or_default();
        let mut judge = ReleaseJudge::with_params(
            case.release.clone(),
            case.known.clone(),
            case.definitions.clone(),
            self.params.clone(),
        );
        let first_at = case.release.batches.iter().map(|b| b.at).min().unwrap_or(0);
        let first = minute_of(first_at);
        let until = case.release.until.unwrap_or(first + 60);
        let mut verdict = judge.verdict().clone();
        let mut end = 0;
        let mut minute = first;
        while minute < until {
            while end < case.rows.len() && case.rows[end].minute <= minute {
                end += 1;
            }
            verdict = judge.round(minute, &case.rows[..end], memory);
            if verdict.decision == Decision::Block {
                break;
            }
            minute += 60;
        }
        let blocked = verdict.decision == Decision::Block;
        if let Some(expect) = case.expect {
            let feedback = match (expect, blocked) {
                (Expected::Block, true) => Feedback::ValidBlock,
                (Expected::Pass, true) => Feedback::FalseAlarm,
                (Expected::Block, false) => Feedback::MissedProblem,
                (Expected::Pass, false) => Feedback::ConfirmedNormal,
            };
            memory.learn(&judge, feedback);
        }
        let released_at = |t: i64| -> usize {
            let mut hosts: Vec<&str> = case
                .release
                .batches
                .iter()
                .filter(|b| minute_of(b.at) <= t)
                .flat_map(|b| b.hosts.iter().map(String::as_str))
                .collect();
            hosts.sort_unstable();
            hosts.dedup();
            hosts.len()
        };
        CaseResult {
            id: case.id.clone(),
            expected: case.expect,
            decision: verdict.decision,
            decided_at: verdict.decided_at,
            seconds_to_block: blocked
                .then(|| verdict.decided_at - case.fault_at.unwrap_or(first_at)),
            hosts_released_at_block: blocked.then(|| released_at(verdict.decided_at - 60)),
            reasons: verdict.reasons,
            kind: case.kind.clone(),
        }
    }
}

/// Judges every case and writes one line per case and the summary to `out` (JSON Lines
/// with `json`). Returns the summary.
///
/// # Errors
/// [`ReplayError::Io`] when writing fails.
pub fn run(
    cases: &[ParsedCase],
    params: JudgeParams,
    json: bool,
    out: &mut impl Write,
) -> Result<Summary, ReplayError> {
    let mut replayer = Replayer::with_params(params);
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        let r = replayer.judge_case(case);
        if json {
            let line = serde_json::to_string(&r).map_err(std::io::Error::from)?;
            writeln!(out, "{line}")?;
        } else {
            let reasons: Vec<String> = r.reasons.iter().map(Reason::line).collect();
            writeln!(
                out,
                "{}\texpected={}\tdecision={}\tseconds_to_block={}\treasons={}",
                r.id,
                r.expected.map_or("-", Expected::as_str),
                r.decision.as_str(),
                r.seconds_to_block
                    .map_or_else(|| "-".to_string(), |s| s.to_string()),
                if reasons.is_empty() {
                    "-".to_string()
                } else {
                    reasons.join(" | ")
                }
            )?;
        }
        results.push(r);
    }
    let summary = Summary::of(&results);
    if json {
        // Field order is the contract: cases, tp, fp, tn, fn, precision, recall,
        // median_seconds_to_block, then what was added later, last: rules, kinds.
        let line = serde_json::to_string(&summary).map_err(std::io::Error::from)?;
        writeln!(out, "{line}")?;
    } else {
        let fmt = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
        // The summary stays the last line (DESIGN §5): the rules go on it, each as
        // `name:right/wrong/unlabelled`, then the kinds, each as
        // `name:tp/fp/tn/fn/watch/median seconds to block`.
        let rules: Vec<String> = summary
            .rules
            .iter()
            .map(|(rule, b)| format!("{rule}:{}/{}/{}", b.right, b.wrong, b.unlabelled))
            .collect();
        let kinds: Vec<String> = summary
            .kinds
            .iter()
            .map(|(kind, k)| {
                format!(
                    "{}:{}/{}/{}/{}/{}/{}",
                    escape_kind(kind),
                    k.counts.tp,
                    k.counts.fp,
                    k.counts.tn,
                    k.counts.fn_,
                    k.watch,
                    k.median_seconds_to_block
                        .map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
                )
            })
            .collect();
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "-".to_string()
            } else {
                items.join(",")
            }
        };
        writeln!(
            out,
            "summary: cases={} tp={} fp={} tn={} fn={} precision={} recall={} median_seconds_to_block={} rules={} kinds={}",
            summary.cases,
            summary.counts.tp,
            summary.counts.fp,
            summary.counts.tn,
            summary.counts.fn_,
            fmt(summary.precision),
            fmt(summary.recall),
            fmt(summary.median_seconds_to_block),
            list(rules),
            list(kinds),
        )?;
    }
    Ok(summary)
}

/// A kind as one token of the text summary: `%`, `,`, `:`, `=` and whitespace
/// percent-encoded (UTF-8 bytes), so that distinct kinds stay distinct.
fn escape_kind(kind: &str) -> String {
    let mut out = String::with_capacity(kind.len());
    for c in kind.chars() {
        if c.is_whitespace() || matches!(c, '%' | ',' | ':' | '=') {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads, validates and replays a file: the `vigil-detector replay` command.
///
/// # Errors
/// [`ReplayError`] when the file cannot be read, a case is malformed (nothing is judged
/// then) or the output cannot be written.
pub fn run_file(
    path: &std::path::Path,
    json: bool,
    out: &mut impl Write,
) -> Result<Summary, ReplayError> {
    let file = std::fs::File::open(path)?;
    let cases = parse_cases(std::io::BufReader::new(file))?;
    run(&cases, JudgeParams::default(), json, out)
}
