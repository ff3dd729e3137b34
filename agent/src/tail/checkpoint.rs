//! Durable per-file positions: `tail-checkpoints.json` in the agent's `data_dir`.
//!
//! The file is versioned (`"version": 1`) and replaced atomically: written to a `.tmp`
//! sibling, fsynced, renamed over the old one, and the directory fsynced, so a crash leaves
//! either the old or the new checkpoint, never a torn one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::TailError;
use super::identity::{FileId, FileKey};

/// Name of the checkpoint file inside `data_dir`.
pub const CHECKPOINT_FILE: &str = "tail-checkpoints.json";
/// Format version written and read by this agent.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The stored position of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointEntry {
    pub key: FileKey,
    /// Index of the source (`[[logs]]` entry) the file belonged to; used when `path` no
    /// longer matches a glob (a rotated copy being finished).
    #[serde(default)]
    pub source: usize,
    /// Where the file was last seen (a hint: the file is found again by identity).
    pub path: String,
    pub id: FileId,
    /// Offset just after the last line whose delivery is covered by this checkpoint.
    pub offset: u64,
}

/// A snapshot of the positions of every tracked file, taken by
/// [`super::Tailer::checkpoints`] and persisted once the lines up to those positions are
/// acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoints {
    version: u32,
    /// Unix seconds at the start of the last scan before the snapshot: a file created at or
    /// after this moment cannot have been tracked and is read from its start on restart.
    pub scanned_at: Option<u64>,
    /// Smallest key never handed out (keys are not reused after a restart from this).
    pub next_key: u64,
    pub files: Vec<CheckpointEntry>,
    /// Heads of the most recent streams delivered to their end (at most
    /// [`FINISHED_KEPT`]): after a restart, a rotated file with one of these heads is
    /// known to be read already.
    #[serde(default)]
    pub finished: Vec<FinishedEntry>,
}

/// How many finished streams a checkpoint remembers.
pub const FINISHED_KEPT: usize = 256;

/// A stream that was read to its end and released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishedEntry {
    pub source: usize,
    pub head_len: u32,
    pub head: u64,
    /// Where the stream was read to (its end). A file found later with this head (a rotated
    /// copy matched by the globs) continues from here; `None` (checkpoints of older
    /// agents): from its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl Checkpoints {
    /// No positions at all (a fresh agent).
    pub fn empty() -> Self {
        Checkpoints {
            version: CHECKPOINT_VERSION,
            ..Default::default()
        }
    }

    /// Path of the checkpoint file in `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(CHECKPOINT_FILE)
    }

    /// Loads the checkpoints from `data_dir`; a missing file means none.
    ///
    /// # Errors
    /// [`TailError::CheckpointRead`] when the file exists but cannot be read,
    /// [`TailError::CheckpointCorrupt`] when it does not parse,
    /// [`TailError::CheckpointVersion`] when it was written in another format version.
    pub fn load(data_dir: &Path) -> Result<Self, TailError> {
        let path = Self::path_in(data_dir);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::empty()),
            Err(source) => return Err(TailError::CheckpointRead { path, source }),
        };
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly =
            serde_json::from_slice(&bytes).map_err(|e| TailError::CheckpointCorrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if v.version != CHECKPOINT_VERSION {
            return Err(TailError::CheckpointVersion {
                path,
                found: v.version,
                supported: CHECKPOINT_VERSION,
            });
        }
        let mut cp: Checkpoints =
            serde_json::from_slice(&bytes).map_err(|e| TailError::CheckpointCorrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let max_key = cp.files.iter().map(|e| e.key.0 + 1).max().unwrap_or(0);
        cp.next_key = cp.next_key.max(max_key);
        Ok(cp)
    }

    /// Stores the checkpoints in `data_dir` atomically (tmp, fsync, rename, fsync dir).
    ///
    /// # Errors
    /// [`TailError::CheckpointWrite`] naming the file that could not be written.
    pub fn store(&self, data_dir: &Path) -> Result<(), TailError> {
        let path = Self::path_in(data_dir);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| TailError::CheckpointWrite {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        crate::fsutil::write_atomic(&path, &bytes)
            .map_err(|source| TailError::CheckpointWrite { path, source })
    }

    /// Sets the stored offset of `file` (no effect if it is not in the snapshot).
    ///
    /// Meant for *lowering* an offset to the end of the last completed multi-line event:
    /// the lines after it are read again on restart. `offset` must be a line end the sink
    /// was given for this key (or the current offset); anything else re-reads a line
    /// fragment.
    pub fn set_offset(&mut self, file: FileKey, offset: u64) {
        for e in self.files.iter_mut().filter(|e| e.key == file) {
            e.offset = offset;
        }
    }

    /// The stored offset of `file`, if it is in the snapshot.
    pub fn offset(&self, file: FileKey) -> Option<u64> {
        self.files.iter().find(|e| e.key == file).map(|e| e.offset)
    }

    /// Whether no file position is stored.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Checkpoints::load(dir.path()).unwrap().is_empty());
        let mut cp = Checkpoints::empty();
        cp.files.push(CheckpointEntry {
            key: FileKey(3),
            source: 0,
            path: "/var/log/a.log".into(),
            id: FileId {
                dev: 1,
                ino: 2,
                head_len: 10,
                head: 99,
            },
            offset: 1234,
        });
        cp.set_offset(FileKey(3), 1000);
        cp.store(dir.path()).unwrap();
        let back = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(back.offset(FileKey(3)), Some(1000));
        assert_eq!(back.next_key, 4);
        assert!(!dir.path().join("tail-checkpoints.json.tmp").exists());
    }

    #[test]
    fn corrupt_and_unknown_version_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = Checkpoints::path_in(dir.path());
        fs::write(&p, b"{not json").unwrap();
        let e = Checkpoints::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("tail-checkpoints.json") && e.contains("corrupt"),
            "{e}"
        );
        fs::write(&p, br#"{"version": 9, "files": []}"#).unwrap();
        let e = Checkpoints::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}
