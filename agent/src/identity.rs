//! The agent's identity: a random `instance` id made once per data directory, and the
//! `seq` of its reports, which never repeats for that instance (DESIGN §4).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

const FILE: &str = "identity.json";
const VERSION: u32 = 1;

/// Why the identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a Vigil identity file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u32,
    instance: String,
    /// The next seq to hand out; every smaller one may have been used.
    next_seq: u64,
}

/// The instance id and the seq counter, persisted in the data directory.
#[derive(Debug)]
pub struct Identity {
    path: PathBuf,
    stored: Stored,
}

impl Identity {
    /// Loads the identity of `data_dir`, creating the directory and a new instance id when
    /// there is none.
    ///
    /// # Errors
    /// [`IdentityError`] when the directory or file cannot be used, or the file is corrupt
    /// (it is never silently replaced: a new instance id would re-count old data).
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join(FILE);
        let io_err = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(data_dir).map_err(|source| IdentityError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        match fs::read(&path) {
            Ok(bytes) => {
                let stored: Stored =
                    serde_json::from_slice(&bytes).map_err(|e| IdentityError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if stored.version != VERSION || stored.instance.is_empty() || stored.next_seq == 0 {
                    return Err(IdentityError::Corrupt {
                        path,
                        reason: format!("unsupported version {}", stored.version),
                    });
                }
                Ok(Self { path, stored })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let identity = Self {
                    path: path.clone(),
                    stored: Stored {
                        version: VERSION,
                        instance: uuid::Uuid::new_v4().simple().to_string(),
                        next_seq: 1,
                    },
                };
                identity.save().map_err(io_err)?;
                Ok(identity)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// The instance id.
    pub fn instance(&self) -> &str {
        &self.stored.instance
    }

    /// Hands out `n` consecutive seqs with one write of the identity file (a flush that
    /// cuts a backlog into hundreds of minute reports persists the counter once, not once
    /// per report), persisted before they are returned.
    ///
    /// # Errors
    /// [`IdentityError`] when the counter cannot be persisted; no seq is handed out then.
    pub fn next_seqs(&mut self, n: u64) -> Result<std::ops::Range<u64>, IdentityError> {
        let first = self.stored.next_seq;
        self.stored.next_seq = first.saturating_add(n);
        if let Err(source) = self.save() {
            self.stored.next_seq = first;
            return Err(IdentityError::Io {
                path: self.path.clone(),
                source,
            });
        }
        Ok(first..self.stored.next_seq)
    }

    /// Makes sure seqs handed out from now on are above `seq` (one found in the spool).
    ///
    /// # Errors
    /// [`IdentityError`] when the counter cannot be persisted.
    pub fn advance_past(&mut self, seq: u64) -> Result<(), IdentityError> {
        if self.stored.next_seq > seq {
            return Ok(());
        }
        let before = self.stored.next_seq;
        self.stored.next_seq = seq + 1;
        self.save().map_err(|source| {
            self.stored.next_seq = before;
            IdentityError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }

    fn save(&self) -> io::Result<()> {
        let json = serde_json::to_vec(&self.stored).map_err(io::Error::other)?;
        write_atomic(&self.path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_persists_and_seq_never_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (instance, last) = {
            let mut identity = Identity::load_or_create(dir.path()).expect("create");
            assert_eq!(identity.next_seqs(1).expect("seq"), 1..2);
            assert_eq!(identity.next_seqs(1).expect("seq"), 2..3);
            (identity.instance().to_owned(), 2)
        };
        let mut again = Identity::load_or_create(dir.path()).expect("load");
        assert_eq!(again.instance(), instance);
        assert_eq!(again.next_seqs(1).expect("seq"), last + 1..last + 2);
        assert_eq!(again.next_seqs(3).expect("seqs"), last + 2..last + 5);
        let mut third = Identity::load_or_create(dir.path()).expect("load");
        assert_eq!(third.next_seqs(1).expect("seq"), last + 5..last + 6);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_new_instance() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE), b"{garbage").expect("write");
        let err = Identity::load_or_create(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains("identity.json"), "{err}");
    }
}
