//! File identity: device + inode and a checksum of the file's first bytes.
//!
//! Device + inode alone are not enough: inodes are reused as soon as a file is deleted, and
//! copytruncate keeps the inode while replacing the content. The *head checksum* covers the
//! first [`HEAD_WINDOW`] bytes, or all the bytes the file had when it was first seen if it
//! was shorter. The covered length (`head_len`) is part of the identity, so the identity of
//! a short file stays stable while it grows: it is always re-checked over the same prefix.
//! While a file is tracked its head is widened up to the window as it grows (the engine
//! holds the file open, so the new bytes are known to belong to it).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// How many leading bytes the head checksum covers at most.
pub const HEAD_WINDOW: usize = 1024;

/// Names one stream of lines for the [`super::LineSink`] and in [`super::Checkpoints`].
///
/// Stable while a file is tracked, across restarts (it is stored in the checkpoint) and
/// across renames. A file truncated in place starts a new key; the lines that a
/// copytruncate copy still holds are delivered under the key of the file they were copied
/// from, because they continue its stream at the same offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileKey(pub u64);

impl std::fmt::Display for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a file *is*: where it lives on disk and what it starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// Number of leading bytes `head` covers (0 for a file first seen empty).
    pub head_len: u32,
    /// FNV-1a 64 of the first `head_len` bytes.
    pub head: u64,
}

/// FNV-1a 64: tiny, stable across Rust releases (unlike `DefaultHasher`), good enough to
/// tell different log heads apart (they start with timestamps).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_prefixes(bytes).last().map_or(FNV_OFFSET, |(_, h)| h)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// [`fnv1a`] of every prefix of `bytes`, as `(length, hash)`, in one pass: for matching a
/// head against known heads of any length.
pub fn fnv1a_prefixes(bytes: &[u8]) -> impl Iterator<Item = (u32, u64)> + '_ {
    bytes.iter().enumerate().scan(FNV_OFFSET, |h, (i, &b)| {
        *h = (*h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        Some((u32::try_from(i + 1).unwrap_or(u32::MAX), *h))
    })
}

/// Reads up to `want` bytes at offset 0 of `file` (fewer only at end of file).
pub fn read_head(file: &File, want: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    buf.resize(want, 0);
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(())
}

/// Reads up to `want` bytes from the start of a sequential reader (a gzip stream).
pub fn read_head_seq(reader: &mut impl Read, want: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    reader.take(want as u64).read_to_end(buf)?;
    Ok(())
}

/// The head (length, checksum) of a file of at least `size` bytes, as first seen.
pub fn head_of(file: &File, size: u64) -> io::Result<(u32, u64)> {
    let want = usize::try_from(size)
        .unwrap_or(HEAD_WINDOW)
        .min(HEAD_WINDOW);
    let mut buf = Vec::with_capacity(want);
    read_head(file, want, &mut buf)?;
    Ok((buf.len() as u32, fnv1a(&buf)))
}

/// Whether `file` still starts with the bytes `id.head` was computed from.
pub fn head_matches(file: &File, id: &FileId) -> io::Result<bool> {
    if id.head_len == 0 {
        return Ok(true);
    }
    let mut buf = Vec::with_capacity(id.head_len as usize);
    read_head(file, id.head_len as usize, &mut buf)?;
    Ok(buf.len() == id.head_len as usize && fnv1a(&buf) == id.head)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fnv_is_stable() {
        // Persisted in checkpoints: must never change.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn short_file_identity_is_stable_while_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(b"2026-11-23 first\n").unwrap();
        let r = File::open(&p).unwrap();
        let (len, head) = head_of(&r, 17).unwrap();
        assert_eq!(len, 17);
        let id = FileId {
            dev: 1,
            ino: 2,
            head_len: len,
            head,
        };
        f.write_all(&[b'x'; 4000]).unwrap();
        assert!(head_matches(&r, &id).unwrap(), "growth keeps identity");
        // Widened head after growth covers the whole window.
        let (len2, _) = head_of(&r, 4017).unwrap();
        assert_eq!(len2 as usize, HEAD_WINDOW);
    }

    #[test]
    fn replaced_content_changes_identity() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"2026-11-23 10:00:00 one\n").unwrap();
        let r = File::open(&p).unwrap();
        let (len, head) = head_of(&r, 24).unwrap();
        let id = FileId {
            dev: 1,
            ino: 2,
            head_len: len,
            head,
        };
        std::fs::write(&p, b"2026-11-23 10:00:01 two\n").unwrap();
        assert!(!head_matches(&r, &id).unwrap());
        std::fs::write(&p, b"2026").unwrap();
        assert!(!head_matches(&r, &id).unwrap(), "shorter than head_len");
    }
}
