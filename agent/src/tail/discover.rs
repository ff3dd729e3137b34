//! Finding the files of a source: `paths` globs minus `exclude` globs.

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
    /// several links lead to one file. Unreadable directories and entries are skipped.
    pub fn scan(&self) -> Vec<Found> {
        let mut out: Vec<Found> = Vec::new();
        for pattern in &self.paths {
            let Ok(paths) = glob::glob_with(pattern, OPTS) else {
                continue;
            };
            for path in paths.flatten() {
                if self.excluded(&path) {
                    continue;
                }
                // `metadata` follows symbolic links: a link is tailed as its target.
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let (dev, ino) = (meta.dev(), meta.ino());
                if out.iter().any(|f| f.dev == dev && f.ino == ino) {
                    continue;
                }
                out.push(Found {
                    path,
                    dev,
                    ino,
                    size: meta.len(),
                    created: meta.created().ok(),
                });
            }
        }
        out
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

    /// Directories to watch for this source: the literal prefix of every glob, and whether
    /// it must be watched recursively (the rest of the glob spans several components).
    pub fn watch_roots(&self) -> Vec<(PathBuf, bool)> {
        self.paths.iter().map(|p| watch_root(p)).collect()
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
