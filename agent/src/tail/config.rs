//! Configuration of one tailed source (one `[[logs]]` entry).

use serde::{Deserialize, Serialize};

/// Where to start reading a file that is seen for the first time and has no checkpoint.
///
/// Only files found by the *first* scan of a fresh agent are subject to it: a file that
/// appears while the agent runs (or that was created after the last stored checkpoint) is
/// always read from its beginning, so `End` never skips lines of a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Read the whole file.
    Beginning,
    /// Skip what the file holds now (from the start of its last, unfinished line).
    #[default]
    End,
}

/// Default cap on the length of one line: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

/// One source of log files: the globs of a `[[logs]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Globs of files to tail; `*`, `?`, `[..]` and `**` (any depth) are understood.
    /// Symbolic links are followed (the file is identified by its target).
    pub paths: Vec<String>,
    /// Globs of files to leave alone, matched against the full path *and* the file name
    /// (`"*.gz"` excludes every compressed file, `"/var/log/app/debug.log"` one file).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where to start a file first seen without a checkpoint.
    #[serde(default)]
    pub start_at: StartAt,
    /// Longest line handed on; the excess of a longer line is skipped and counted.
    /// At least 1.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl SourceConfig {
    /// A source over `paths` with no exclusions, `start_at = end` and 1 MiB lines.
    pub fn new(paths: impl IntoIterator<Item = impl Into<String>>) -> Self {
        SourceConfig {
            paths: paths.into_iter().map(Into::into).collect(),
            exclude: Vec::new(),
            start_at: StartAt::End,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}
