//! Crash-safe state files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `contents` so that after a crash the file holds either the old or
/// the new contents, never a mix: write `*.tmp`, fsync it, rename it over `path`, fsync the
/// directory.
///
/// # Errors
/// The I/O error of the step that failed; `path` is left as it was (and no `*.tmp` is left
/// behind when the write or the rename failed).
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let written = File::create(tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(tmp, path)) {
        // On a full disk the half-written copy would only hold on to space.
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn a_failed_rename_leaves_no_tmp() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory in the way: the rename of the file over it fails.
        let path = dir.path().join("state.json");
        fs::create_dir(&path).expect("mkdir");
        fs::write(path.join("inside"), b"x").expect("write");
        assert!(write_atomic(&path, b"one").is_err());
        assert!(!dir.path().join("state.json.tmp").exists());
    }
}
