//! A wake-up hint from the file system: `notify` watches the directories of the globs.
//!
//! Events are only hints (inotify queues overflow, network file systems send none), so the
//! caller keeps a periodic [`super::Tailer::scan`] behind the watcher and treats a wake-up
//! as "scan and read now".

use std::path::Path;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use super::config::SourceConfig;
use super::discover::Matcher;
use super::error::TailError;

/// Watches the directories the sources' globs start from and calls `wake` on any change.
pub struct Watcher {
    /// Kept alive: dropping it stops the watching.
    _inner: RecommendedWatcher,
    watched: Vec<std::path::PathBuf>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("watched", &self.watched)
            .finish()
    }
}

impl Watcher {
    /// Starts watching. `wake` runs on notify's thread for every event batch (also for
    /// errors such as a queue overflow); it must be cheap and must not block — send on a
    /// channel, `Notify::notify_one`, set a flag. Directories that do not exist yet are
    /// skipped: the periodic scan finds files created in them later.
    ///
    /// # Errors
    /// [`TailError::BadGlob`] for a bad glob, [`TailError::Watch`] when the watcher cannot
    /// be created (for example the inotify instance limit is reached).
    pub fn new(
        sources: &[SourceConfig],
        wake: impl Fn() + Send + 'static,
    ) -> Result<Self, TailError> {
        let mut inner =
            notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                wake();
            })
            .map_err(|e| TailError::Watch {
                path: "(watcher)".into(),
                reason: e.to_string(),
            })?;
        let mut roots: Vec<(std::path::PathBuf, bool)> = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            for (dir, recursive) in Matcher::new(i, s)?.watch_roots() {
                match roots.iter_mut().find(|(d, _)| *d == dir) {
                    Some((_, r)) => *r |= recursive,
                    None => roots.push((dir, recursive)),
                }
            }
        }
        let mut watched = Vec::new();
        for (dir, recursive) in roots {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".").to_path_buf()
            } else {
                dir
            };
            if !dir.is_dir() {
                tracing::debug!(dir = %dir.display(), "not watching a missing directory; the periodic scan covers it");
                continue;
            }
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match inner.watch(&dir, mode) {
                Ok(()) => watched.push(dir),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; relying on the periodic scan")
                }
            }
        }
        Ok(Watcher {
            _inner: inner,
            watched,
        })
    }

    /// The directories being watched.
    pub fn watched(&self) -> &[std::path::PathBuf] {
        &self.watched
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn wakes_on_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let cfg = SourceConfig::new([format!("{}/*.log", dir.path().display())]);
        let w = Watcher::new(&[cfg], move || {
            let _ = tx.send(());
        })
        .unwrap();
        assert_eq!(w.watched().len(), 1);
        std::fs::write(dir.path().join("a.log"), b"x\n").unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok());
    }
}
