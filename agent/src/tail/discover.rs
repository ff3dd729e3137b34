//! Finding the files of a source: `paths` globs minus `exclude` globs.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use glob::{MatchOptions, Pattern};

use super::config::SourceConfig;
use super::error::TailError;

/// A regular file matched by a source's globs (symbolic links resolved).
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub created: Option<SystemTime>,
}

/// What one [`Matcher::scan`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The files matched, in glob order.
    pub found: Vec<Found>,
    /// Index into `found` by (device, inode).
    by_id: HashMap<(u64, u64), usize>,
    /// Directories (or entries) that could not be examined: files under them are unknown.
    pub unsure: Vec<PathBuf>,
}

impl Scan {
    /// The file found with this device and inode.
    pub fn get(&self, dev: u64, ino: u64) -> Option<&Found> {
        self.by_id.get(&(dev, ino)).map(|&i| &self.found[i])
    }

    /// Whether `path` lies in a directory that could not be read (or is an entry that
    /// could not be examined): its absence from `found` proves nothing.
    pub fn is_unsure(&self, path: &Path) -> bool {
        self.unsure.iter().any(|u| path.starts_with(u))
    }
}

/// The compiled globs of one source.
#[derive(Debug)]
pub struct Matcher {
    paths: Vec<String>,
    compiled: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

const OPTS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Matcher {
    /// Compiles the globs of source `index`.
    ///
    /// # Errors
    /// [`TailError::BadGlob`] naming the pattern; [`TailError::BadSource`] when `paths` is
    /// empty or `max_line_bytes` is 0.
    pub fn new(index: usize, cfg: &SourceConfig) -> Result<Self, TailError> {
        if cfg.paths.is_empty() {
            return Err(TailError::BadSource {
                source_index: index,
                reason: "`paths` is empty".into(),
            });
        }
        if cfg.max_line_bytes == 0 {
            return Err(TailError::BadSource {
                source_index: index,
                reason: "`max_line_bytes` must be at least 1".into(),
            });
        }
        let bad = |pattern: &String, e: glob::PatternError| TailError::BadGlob {
            source_index: index,
            pattern: pattern.clone(),
            reason: e.to_string(),
        };
        let compiled = cfg
            .paths
            .iter()
            .map(|p| Pattern::new(p).map_err(|e| bad(p, e)))
            .collect::<Result<_, _>>()?;
        let exclude = cfg
            .exclude
            .iter()
            .map(|p| Pattern::new(p).map_err(|e| bad(p, e)))
            .collect::<Result<_, _>>()?;
        Ok(Matcher {
            paths: cfg.paths.clone(),
            compiled,
            exclude,
        })
    }

    /// Whether `path` is excluded (by full path or by file name).
    pub fn excluded(&self, path: &Path) -> bool {
        let name = path.file_name().map(Path::new);
        self.exclude.iter().any(|p| {
            p.matches_path_with(path, OPTS) || name.is_some_and(|n| p.matches_path_with(n, OPTS))
        })
    }

    /// Whether `path` matches one of the `paths` globs and no `exclude` glob.
    pub fn matches(&self, path: &Path) -> bool {
        !self.excluded(path)
            && self
                .compiled
                .iter()
                .any(|p| p.matches_path_with(path, OPTS))
    }

    /// The regular files matched now, one per (device, inode): the first path wins when
    /// several links lead to one file. Directories that cannot be read now (permissions, the
    /// descriptor limit) and entries that cannot be examined are listed in
    /// [`Scan::unsure`]: what they hold is unknown, not gone.
    pub fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        for pattern in &self.paths {
            let Ok(paths) = glob::glob_with(pattern, OPTS) else {
                continue;
            };
            for entry in paths {
                let path = match entry {
                    Ok(path) => path,
                    Err(e) => {
                        // A directory that vanished holds nothing; any other failure
                        // (EACCES, EMFILE, EIO) leaves its files unknown.
                        if e.error().kind() != std::io::ErrorKind::NotFound {
                            scan.unsure.push(e.path().to_path_buf());
                        }
                        continue;
                    }
                };
                if self.excluded(&path) {
                    continue;
                }
                // `metadata` follows symbolic links: a link is tailed as its target.
                let meta = match std::fs::metadata(&path) {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(_) => {
                        scan.unsure.push(path);
                        continue;
                    }
                };
                if !meta.is_file() {
                    continue;
                }
                let (dev, ino) = (meta.dev(), meta.ino());
                if scan.by_id.contains_key(&(dev, ino)) {
                    continue;
                }
                scan.by_id.insert((dev, ino), scan.found.len());
                scan.found.push(Found {
                    path,
                    dev,
                    ino,
                    size: meta.len(),
                    created: meta.created().ok(),
                });
            }
        }
        scan
    }

    /// The globs whose file name is literal (`/var/log/app/app.log`), as (directory, name).
    pub fn literal_files(&self) -> Vec<(PathBuf, std::ffi::OsString)> {
        self.paths
            .iter()
            .filter_map(|p| {
                let path = Path::new(p);
                let name = path.file_name()?;
                let dir = path.parent()?;
                let glob_chars = |s: &str| s.contains(['*', '?', '[']);
                (!glob_chars(p)).then(|| (dir.to_path_buf(), name.to_os_string()))
            })
            .collect()
    }

    /// The globs whose directory is literal and whose file name starts with a literal part
    /// before its first wildcard (`/var/log/app/app.log*` gives `app.log`), as (directory,
    /// that part): rotated names beside it are looked for after a restart.
    pub fn literal_prefixes(&self) -> Vec<(PathBuf, std::ffi::OsString)> {
        let glob_chars = |s: &str| s.contains(['*', '?', '[']);
        self.paths
            .iter()
            .filter_map(|p| {
                let path = Path::new(p);
                let name = path.file_name()?.to_str()?;
                let dir = path.parent()?;
                let cut = name.find(['*', '?', '['])?;
                (cut > 0 && !glob_chars(&dir.to_string_lossy()))
                    .then(|| (dir.to_path_buf(), name[..cut].into()))
            })
            .collect()
    }

    /// Directories to watch for this source: the literal prefix of every glob, and whether
    /// it must be watched recursively (the rest of the glob spans several components).
    pub fn watch_roots(&self) -> Vec<(PathBuf, bool)> {
        self.paths.iter().map(|p| watch_root(p)).collect()
    }
}

/// The directories to watch for `sources`: the literal prefix of every glob, merged, with
/// whether each must be watched recursively.
///
/// # Errors
/// [`TailError::BadGlob`] / [`TailError::BadSource`] for a bad source.
pub fn watch_roots(sources: &[SourceConfig]) -> Result<Vec<(PathBuf, bool)>, TailError> {
    let mut roots: Vec<(PathBuf, bool)> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        for (dir, recursive) in Matcher::new(i, s)?.watch_roots() {
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            match roots.iter_mut().find(|(d, _)| *d == dir) {
                Some((_, r)) => *r |= recursive,
                None => roots.push((dir, recursive)),
            }
        }
    }
    Ok(roots)
}

/// What the file system told a [`PathWatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These paths were created, written, renamed, deleted or had their attributes changed.
    Paths(Vec<PathBuf>),
    /// Events were lost (queue overflow, a watcher error): everything must be rescanned.
    Rescan,
}

/// Watches the directories the sources' globs start from and says *which* paths changed, so
/// that the tailer looks at those files only (see [`super::Tailer::changed`]) instead of
/// rescanning every file on every event. Opening and reading files (the agent's own reads
/// included) is not a change.
///
/// Events are hints: inotify queues overflow and network file systems send none, so the
/// caller keeps a periodic [`super::Tailer::scan`] behind the watcher.
pub struct PathWatcher {
    /// Kept alive: dropping it stops the watching.
    _inner: notify::RecommendedWatcher,
    watched: Vec<PathBuf>,
}

impl std::fmt::Debug for PathWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathWatcher")
            .field("watched", &self.watched)
            .finish()
    }
}

impl PathWatcher {
    /// Starts watching. `on_change` runs on notify's thread for every event; it must be
    /// cheap and must not block. Directories that do not exist yet are skipped: the
    /// periodic scan finds files created in them later.
    ///
    /// # Errors
    /// [`TailError::BadGlob`] for a bad glob, [`TailError::Watch`] when the watcher cannot be
    /// created (for example the inotify instance limit is reached).
    pub fn new(
        sources: &[SourceConfig],
        on_change: impl Fn(Change) + Send + 'static,
    ) -> Result<Self, TailError> {
        use notify::Watcher as _;
        let roots = watch_roots(sources)?;
        let mut inner =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if event.need_rescan() => on_change(Change::Rescan),
                // Opens, reads and closes (ours too) change nothing.
                Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
                Ok(event) => {
                    if !event.paths.is_empty() {
                        on_change(Change::Paths(event.paths));
                    }
                }
                Err(_) => on_change(Change::Rescan),
            })
            .map_err(|e| TailError::Watch {
                path: "(watcher)".into(),
                reason: e.to_string(),
            })?;
        let mut watched = Vec::new();
        for (dir, recursive) in roots {
            if !dir.is_dir() {
                tracing::debug!(dir = %dir.display(), "not watching a missing directory; the periodic scan covers it");
                continue;
            }
            let mode = if recursive {
                notify::RecursiveMode::Recursive
            } else {
                notify::RecursiveMode::NonRecursive
            };
            match inner.watch(&dir, mode) {
                Ok(()) => watched.push(dir),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; relying on the periodic scan")
                }
            }
        }
        Ok(PathWatcher {
            _inner: inner,
            watched,
        })
    }

    /// The directories being watched.
    pub fn watched(&self) -> &[PathBuf] {
        &self.watched
    }
}

fn watch_root(pattern: &str) -> (PathBuf, bool) {
    let path = Path::new(pattern);
    let mut base = PathBuf::new();
    let mut rest = 0;
    let mut in_glob = false;
    for comp in path.components() {
        let s = comp.as_os_str().to_string_lossy();
        if in_glob || s.contains(['*', '?', '[']) {
            in_glob = true;
            rest += 1;
        } else {
            base.push(comp);
        }
    }
    if rest == 0 {
        // A plain path: watch its directory.
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        return (dir, false);
    }
    (base, rest > 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn globs_with_double_star_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        for f in [
            "x.log",
            "a/y.log",
            "a/b/z.log",
            "a/b/z.log.1.gz",
            "a/debug.log",
        ] {
            std::fs::write(d.join(f), b"").unwrap();
        }
        let mut cfg = SourceConfig::new([format!("{}/**/*.log*", d.display())]);
        cfg.exclude = vec!["*.gz".into(), format!("{}/a/debug.log", d.display())];
        let m = Matcher::new(0, &cfg).unwrap();
        let mut names: Vec<_> = m
            .scan()
            .found
            .into_iter()
            .map(|f| f.path.strip_prefix(d).unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["a/b/z.log", "a/y.log", "x.log"]);
        assert!(m.matches(&d.join("a/b/new.log")));
        assert!(!m.matches(&d.join("a/b/new.log.2.gz")));
    }

    #[test]
    fn bad_glob_is_named() {
        let cfg = SourceConfig::new(["/var/log/[.log"]);
        let e = Matcher::new(2, &cfg).unwrap_err().to_string();
        assert!(e.contains("source 2") && e.contains("[.log"), "{e}");
    }

    #[test]
    fn watch_roots() {
        assert_eq!(
            watch_root("/var/log/app/*.log"),
            (PathBuf::from("/var/log/app"), false)
        );
        assert_eq!(
            watch_root("/var/log/**/*.log"),
            (PathBuf::from("/var/log"), true)
        );
        assert_eq!(
            watch_root("/var/log/app.log"),
            (PathBuf::from("/var/log"), false)
        );
    }
}
