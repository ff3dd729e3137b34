//! Errors of the tailing engine.

use std::io;
use std::path::PathBuf;

/// What can go wrong in the tailing engine as a whole.
///
/// Problems with one file (unreadable, vanished, truncated) are *not* errors: they are
/// logged, counted in [`super::TailStats`] and the engine goes on with the other files.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// A `paths` or `exclude` glob does not parse.
    #[error("source {source_index}: bad glob {pattern:?}: {reason}")]
    BadGlob {
        source_index: usize,
        pattern: String,
        reason: String,
    },
    /// A source configuration holds an impossible value.
    #[error("source {source_index}: {reason}")]
    BadSource { source_index: usize, reason: String },
    /// The checkpoint file exists but could not be read.
    #[error("cannot read checkpoint file {path}: {source}")]
    CheckpointRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The checkpoint file is not valid JSON of the expected shape.
    #[error("checkpoint file {path} is corrupt: {reason}")]
    CheckpointCorrupt { path: PathBuf, reason: String },
    /// The checkpoint file was written by an agent with another format version.
    #[error(
        "checkpoint file {path} has format version {found}, this agent reads version {supported}"
    )]
    CheckpointVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Writing, syncing or renaming the checkpoint file failed.
    #[error("cannot write checkpoint file {path}: {source}")]
    CheckpointWrite {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file-system watcher could not be set up.
    #[error("cannot watch {path}: {reason}")]
    Watch { path: PathBuf, reason: String },
}
