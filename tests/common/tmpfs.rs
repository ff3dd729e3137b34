//! A real tmpfs for tests of full and read-only disks (needs root). Shared by the
//! workspace's test crates through `#[path = "../../tests/common/tmpfs.rs"] mod tmpfs;`.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory while this lives (unmounted lazily on drop, so a file
/// still open in a process being torn down does not keep it).
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`"4m"`) at `dir`, creating it.
    ///
    /// # Errors
    /// What `mount` said (not root, no tmpfs, ...).
    pub fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Self {
                dir: dir.to_owned(),
            })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Like [`Tmpfs::mount`]; when that is not possible, `None` after saying the test is
    /// skipped, unless `CI` is set: CI runs as root, so there it fails the test.
    pub fn mount_or_skip(dir: &Path, size: &str) -> Option<Self> {
        match Self::mount(dir, size) {
            Ok(t) => Some(t),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("cannot mount a tmpfs ({e}); the test needs root, as CI has")
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot mount a tmpfs ({e}); run as root");
                None
            }
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `mount -o remount,OPTIONS`.
    pub fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "remount {options}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Fills the file system with a file `filler` until it refuses a write (in 64 KiB,
    /// then 512-byte pieces); returns the file.
    pub fn fill(&self) -> PathBuf {
        let filler = self.dir.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        for size in [64 * 1024, 512] {
            let chunk = vec![0u8; size];
            for _ in 0..100_000 {
                if file
                    .write_all(&chunk)
                    .and_then(|()| file.sync_all())
                    .is_err()
                {
                    break;
                }
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
