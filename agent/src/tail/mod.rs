//! The tailing engine: every complete line of the configured log files, exactly once,
//! through rotation, truncation and restarts.
//!
//! Synchronous code over plain files; the agent drives it from its async loop:
//!
//! ```no_run
//! use vigil_agent::tail::{Checkpoints, FileKey, LineSink, SourceConfig, Tailer};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! struct Count(u64);
//! impl LineSink for Count {
//!     fn line(&mut self, _: usize, _: FileKey, _: &[u8], _: u64, _: bool) { self.0 += 1 }
//!     fn file_done(&mut self, _: usize, _: FileKey) {}
//! }
//! let data_dir = std::path::Path::new("/var/lib/vigil-agent");
//! let mut tailer = Tailer::new(
//!     vec![SourceConfig::new(["/var/log/shop/*.log"])],
//!     Checkpoints::load(data_dir)?,
//! )?;
//! let mut sink = Count(0);
//! loop {
//!     tailer.scan()?;                       // every second, and on a Watcher wake-up
//!     while tailer.read(1 << 20, &mut sink).more {}
//!     let snapshot = tailer.checkpoints();  // positions after the lines just counted...
//!     // ...ship the report; once the detector acknowledged it:
//!     snapshot.store(data_dir)?;
//! #   break;
//! }
//! # Ok(()) }
//! ```
//!
//! # How files are followed
//! * **Identity**: device + inode and a checksum of the first bytes (up to
//!   1 KiB; as many as a shorter file had when first seen, widened as it grows). A file
//!   whose inode is reused or whose content is replaced is a new file.
//! * **Truncation**: a file smaller than the read position, or whose head changed, was
//!   truncated. Before reading it again from 0 (under a new [`FileKey`]), the engine looks in
//!   the same directory for a *copy* with the old head checksum (copytruncate: `app.log.1`,
//!   or `app.log.1.gz` when compressed at once) and reads it from the old position to its
//!   end under the old key. What logrotate itself loses (lines written between its copy and
//!   its truncate) cannot be recovered by anyone.
//! * **Rename rotation**: when a path holds another inode, the old file (still open) is read
//!   to its end first — its writer may add a few lines before it reopens — and released once
//!   idle; the new file is read from 0.
//! * **Restart**: a checkpointed file is found again by identity, wherever it moved in its
//!   directory (a rotation while the agent was stopped), also when compressed meanwhile, and
//!   finished from its checkpoint; the file now at its old path is read from 0. Rotated
//!   siblings (`app.log.2`, `app.log.1.gz`, `app.log-20261123`) modified since the
//!   checkpoint whose head is neither a checkpointed stream, nor a stream finished before
//!   (the checkpoint remembers the last [`FINISHED_KEPT`]), nor a prefix of a followed file
//!   (a copy in progress) are whole generations rotated away meanwhile: read from 0.
//! * **Deleted files** are read to their end and released within
//!   [`TailerOptions::deleted_max`].
//! * **Start**: `start_at` applies only to files found by the first scan of an agent without
//!   checkpoint; a file appearing later, or created after the stored checkpoint, or found at
//!   the path of a checkpointed file, is read from 0.
//!
//! # Limits
//! * While running, one rotation of a file between two scans is followed; a second one
//!   before the next scan (rotation faster than every second) loses the generation in
//!   between unless the globs match the rotated names.
//! * copytruncate: lines written between logrotate's copy and its truncate exist in no file
//!   (logrotate's own race); the engine delivers them only if it read them before the
//!   truncate. The copy must stay in the directory of the log (no `olddir`).
//! * A file that was still empty when the checkpoint was stored has no head; if it is
//!   rotated away and compressed before a restart, it is found only as an unknown
//!   generation (read from 0, which is exact since its checkpoint was 0).
//! * Rotated names must not match the `paths` globs in copytruncate mode (use `exclude`):
//!   a copy is another inode and would be read again as a file of its own.

mod checkpoint;
mod config;
mod discover;
mod error;
mod identity;
mod lines;
mod watch;

pub use checkpoint::{
    CHECKPOINT_FILE, CHECKPOINT_VERSION, CheckpointEntry, Checkpoints, FINISHED_KEPT, FinishedEntry,
};
pub use config::{DEFAULT_MAX_LINE_BYTES, SourceConfig, StartAt};
pub use error::TailError;
pub use identity::{FileId, FileKey, HEAD_WINDOW};
pub use watch::Watcher;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::read::MultiGzDecoder;
use tracing::{debug, info, warn};

use discover::{Found, Matcher};
use identity::{fnv1a, head_matches, head_of, read_head, read_head_seq};
use lines::{Line, LineBuf};

/// Bytes read from one file in one turn.
const CHUNK: usize = 128 * 1024;
/// How far back from the end `StartAt::End` looks for the start of the last line.
const END_LOOKBACK: u64 = 64 * 1024;

/// Receives the lines read by [`Tailer::read`].
pub trait LineSink {
    /// One complete line of `file` (from source `source`), without its `\n` or `\r\n`.
    /// `end_offset` is the offset just after the line in that file's stream; `truncated`
    /// means the line was longer than `max_line_bytes` and only its first
    /// `max_line_bytes` bytes are passed (the excess was skipped). `line` may be any bytes
    /// (invalid UTF-8 included).
    fn line(&mut self, source: usize, file: FileKey, line: &[u8], end_offset: u64, truncated: bool);
    /// `file` will deliver no more lines (rotated and finished, deleted, truncated): flush
    /// the state kept for it. A finished file's unterminated last line was passed first.
    fn file_done(&mut self, source: usize, file: FileKey);
}

/// What one [`Tailer::read`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadProgress {
    pub bytes: u64,
    pub lines: u64,
    /// Some file has data left that the budget did not cover: call `read` again.
    pub more: bool,
}

/// Status of one tracked file, for `vigil-agent status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    pub source: usize,
    pub key: FileKey,
    pub path: PathBuf,
    /// Offset after the last line handed on (what a checkpoint would store).
    pub offset: u64,
    /// Size last seen.
    pub size: u64,
    /// `size - offset`: bytes not yet handed on.
    pub lag: u64,
    /// Being finished after rotation, deletion or copytruncate.
    pub rotated: bool,
}

/// Counters of notable events, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailStats {
    pub lines: u64,
    pub bytes: u64,
    pub lines_truncated: u64,
    pub bytes_skipped: u64,
    pub files_opened: u64,
    pub files_released: u64,
    pub rotations: u64,
    pub truncations: u64,
    pub copies_found: u64,
    /// Data that could not be recovered: a truncated file without a copy, a checkpointed
    /// file that is gone.
    pub losses: u64,
    pub errors: u64,
}

/// Timing of the release of rotated and deleted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailerOptions {
    /// A file renamed away is released once at its end with no new data for this long (its
    /// writer may append a few lines before it reopens its log).
    pub rotated_idle: Duration,
    /// A deleted file is released once at its end with no new data for this long...
    pub deleted_idle: Duration,
    /// ...and at the latest this long after its deletion was noticed.
    pub deleted_max: Duration,
}

impl Default for TailerOptions {
    fn default() -> Self {
        TailerOptions {
            rotated_idle: Duration::from_secs(5),
            deleted_idle: Duration::from_secs(1),
            deleted_max: Duration::from_secs(60),
        }
    }
}

/// Where the bytes of a tracked stream come from.
enum Reader {
    Plain(File),
    /// A compressed rotated copy, read sequentially; `pos` is the decompressed offset.
    Gz {
        dec: Box<MultiGzDecoder<BufReader<File>>>,
        pos: u64,
    },
    /// Nothing more to read: finish the stream.
    Gone,
}

impl Reader {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Reader::Plain(f) => loop {
                match f.read_at(buf, offset) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => return r,
                }
            },
            Reader::Gz { dec, pos } => {
                while *pos < offset {
                    let want = usize::try_from(offset - *pos)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let n = dec.read(&mut buf[..want])?;
                    if n == 0 {
                        return Ok(0);
                    }
                    *pos += n as u64;
                }
                let n = dec.read(buf)?;
                *pos += n as u64;
                Ok(n)
            }
            Reader::Gone => Ok(0),
        }
    }

    fn plain(&self) -> Option<&File> {
        match self {
            Reader::Plain(f) => Some(f),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Renamed away: its writer may still append until it reopens.
    Rotated,
    /// Unlinked.
    Deleted,
    /// A rotated copy (or nothing): finished at its end.
    Copy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Active,
    Draining { kind: Drain, since: Instant },
}

/// One stream being read.
struct Tracked {
    key: FileKey,
    source: usize,
    path: PathBuf,
    id: FileId,
    reader: Reader,
    /// Offset of the next byte to read.
    read_pos: u64,
    /// Offset after the last line handed on (`<= read_pos`; the gap is the partial line).
    delivered: u64,
    lines: LineBuf,
    role: Role,
    size: u64,
    /// Worth a read: the size grew past `read_pos` or the last read filled its buffer.
    more: bool,
    /// A read saw the head change: the next scan handles it as a truncation.
    rewritten: bool,
    last_data: Instant,
}

impl Tracked {
    fn entry(&self) -> CheckpointEntry {
        CheckpointEntry {
            key: self.key,
            source: self.source,
            path: self.path.to_string_lossy().into_owned(),
            id: self.id,
            offset: self.delivered,
        }
    }
}

/// Follows the files of all sources. See the [module documentation](self).
pub struct Tailer {
    configs: Vec<SourceConfig>,
    matchers: Vec<Matcher>,
    files: Vec<Tracked>,
    /// Checkpoint entries not yet matched to a file (only until the first scan).
    restored: Vec<CheckpointEntry>,
    restored_scanned_at: Option<u64>,
    /// Heads of streams read to their end (newest last, at most `FINISHED_KEPT`).
    finished: Vec<FinishedEntry>,
    scanned_at: Option<u64>,
    scanned_once: bool,
    next_key: u64,
    chunk: Vec<u8>,
    cursor: usize,
    opts: TailerOptions,
    stats: TailStats,
    /// Paths whose open failed, so that each failure is logged once.
    failing: HashSet<PathBuf>,
}

impl std::fmt::Debug for Tailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tailer")
            .field("sources", &self.configs.len())
            .field("files", &self.files.len())
            .field("stats", &self.stats)
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Tailer {
    /// A tailer over `sources` (indexed `0..n`, one per `[[logs]]` entry) resuming from
    /// `checkpoints` as loaded from disk. Nothing is opened before the first
    /// [`scan`](Self::scan).
    ///
    /// # Errors
    /// [`TailError::BadGlob`] / [`TailError::BadSource`] naming the source and pattern.
    pub fn new(sources: Vec<SourceConfig>, checkpoints: Checkpoints) -> Result<Self, TailError> {
        Self::with_options(sources, checkpoints, TailerOptions::default())
    }

    /// [`new`](Self::new) with explicit release timing.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_options(
        sources: Vec<SourceConfig>,
        checkpoints: Checkpoints,
        opts: TailerOptions,
    ) -> Result<Self, TailError> {
        let matchers = sources
            .iter()
            .enumerate()
            .map(|(i, s)| Matcher::new(i, s))
            .collect::<Result<_, _>>()?;
        let next_key = checkpoints
            .files
            .iter()
            .map(|e| e.key.0 + 1)
            .max()
            .unwrap_or(0)
            .max(checkpoints.next_key);
        Ok(Tailer {
            configs: sources,
            matchers,
            files: Vec::new(),
            restored: checkpoints.files,
            restored_scanned_at: checkpoints.scanned_at,
            finished: checkpoints.finished,
            scanned_at: checkpoints.scanned_at,
            scanned_once: false,
            next_key,
            chunk: vec![0; CHUNK],
            cursor: 0,
            opts,
            stats: TailStats::default(),
            failing: HashSet::new(),
        })
    }

    fn new_key(&mut self) -> FileKey {
        let k = FileKey(self.next_key);
        self.next_key += 1;
        k
    }

    /// Counters of notable events since start.
    pub fn stats(&self) -> TailStats {
        self.stats
    }

    /// Rescans the globs: picks up new files, notices rotation, truncation, deletion and
    /// inode reuse. Cheap enough to call every second (one `stat` per file, one 1 KiB
    /// read per file that changed). Problems with single files are logged and counted,
    /// never returned.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for failures of the whole scan.
    pub fn scan(&mut self) -> Result<(), TailError> {
        let started = unix_now();
        let now = Instant::now();
        let first = !self.scanned_once;
        let found: Vec<Vec<Found>> = self.matchers.iter().map(Matcher::scan).collect();
        let mut claimed: HashSet<(u64, u64)> = HashSet::new();
        let mut spawned: Vec<Tracked> = Vec::new();

        // 1. Files already tracked.
        for i in 0..self.files.len() {
            let t = &mut self.files[i];
            let here = found
                .get(t.source)
                .and_then(|list| list.iter().find(|f| f.dev == t.id.dev && f.ino == t.id.ino));
            match (t.role, here) {
                (Role::Draining { kind, .. }, Some(f)) if kind != Drain::Copy => {
                    // Back under a glob (renamed back): follow it again.
                    info!(path = %f.path.display(), key = %t.key, "rotated file is matched again");
                    t.role = Role::Active;
                    t.path = f.path.clone();
                    claimed.insert((t.id.dev, t.id.ino));
                    update_size(t, f.size);
                }
                (Role::Draining { kind, since }, _) => {
                    claimed.insert((t.id.dev, t.id.ino));
                    if let Some(m) = t.reader.plain().and_then(|f| f.metadata().ok()) {
                        update_size(t, m.len());
                        if m.nlink() == 0 && kind == Drain::Rotated {
                            t.role = Role::Draining {
                                kind: Drain::Deleted,
                                since,
                            };
                        }
                    }
                }
                (Role::Active, Some(f)) => {
                    claimed.insert((t.id.dev, t.id.ino));
                    if f.path != t.path {
                        info!(from = %t.path.display(), to = %f.path.display(), key = %t.key, "file renamed");
                        t.path = f.path.clone();
                    }
                    if check_truncated(t, f.size) {
                        let key = self.new_key();
                        let t = &mut self.files[i];
                        let (old, copy_found) = truncated(t, key, now);
                        self.stats.truncations += 1;
                        if copy_found {
                            self.stats.copies_found += 1;
                        } else if old.delivered < old.read_pos || old.lines.has_partial() {
                            self.stats.losses += 1;
                        }
                        spawned.push(old);
                    }
                }
                (Role::Active, None) => {
                    let deleted = t
                        .reader
                        .plain()
                        .and_then(|f| f.metadata().ok())
                        .map(|m| {
                            update_size(t, m.len());
                            m.nlink() == 0
                        })
                        .unwrap_or(true);
                    let kind = if deleted {
                        Drain::Deleted
                    } else {
                        Drain::Rotated
                    };
                    info!(path = %t.path.display(), key = %t.key, deleted, "file rotated away; finishing it");
                    self.stats.rotations += 1;
                    t.role = Role::Draining { kind, since: now };
                    t.last_data = now;
                    t.more = true;
                }
            }
        }
        self.files.extend(spawned);

        // 2. Files seen for the first time.
        for (source, list) in found.iter().enumerate() {
            for f in list {
                if !claimed.insert((f.dev, f.ino)) {
                    continue;
                }
                self.open_new(source, f, first, now);
            }
        }

        // 3. Checkpointed files not found under the globs: rotated while we were stopped.
        if first {
            let restored = self.restored.clone();
            for e in std::mem::take(&mut self.restored) {
                let Some(source) = self.source_of(&e) else {
                    warn!(path = %e.path, "checkpointed file no longer matches any source; forgetting it");
                    continue;
                };
                match find_rotated(&e, &claimed) {
                    Some((path, id, reader, kind)) => {
                        info!(was = %e.path, now = %path.display(), offset = e.offset, "finishing a file rotated while the agent was stopped");
                        claimed.insert((id.dev, id.ino));
                        self.stats.files_opened += 1;
                        self.files.push(Tracked {
                            key: e.key,
                            source,
                            path,
                            id,
                            reader,
                            read_pos: e.offset,
                            delivered: e.offset,
                            lines: LineBuf::default(),
                            role: Role::Draining { kind, since: now },
                            size: 0,
                            more: true,
                            rewritten: false,
                            last_data: now,
                        });
                    }
                    None => {
                        warn!(path = %e.path, offset = e.offset, "checkpointed file is gone; lines after its checkpoint cannot be read");
                        self.stats.losses += 1;
                        // Never read again from its start should a copy turn up.
                        self.remember_finished(source, &e.id);
                    }
                }
            }
            // 4. Generations rotated away entirely while we were stopped.
            if let Some(at) = self.restored_scanned_at {
                self.recover_generations(&found, &restored, at, &mut claimed, now);
            }
            self.restored_scanned_at = None;
        }
        self.scanned_once = true;
        self.scanned_at = Some(started);
        Ok(())
    }

    /// After a restart, reads from their start the rotated siblings of the tailed files
    /// (`app.log.2`, `app.log.1.gz`, `app.log-20261123`) that hold lines written after the
    /// checkpoint (modified at or after its scan) and whose head is neither a checkpointed
    /// stream nor one finished before it: whole generations that were created and rotated
    /// away while the agent was stopped, or after the last stored checkpoint.
    fn recover_generations(
        &mut self,
        found: &[Vec<Found>],
        restored: &[CheckpointEntry],
        scanned_at: u64,
        claimed: &mut HashSet<(u64, u64)>,
        now: Instant,
    ) {
        let mut bases: Vec<(usize, PathBuf, std::ffi::OsString)> = Vec::new();
        let live = found
            .iter()
            .enumerate()
            .flat_map(|(s, l)| l.iter().map(move |f| (s, f.path.clone())));
        let checkpointed = restored
            .iter()
            .filter_map(|e| self.source_of(e).map(|s| (s, PathBuf::from(&e.path))))
            .filter(|(s, p)| self.matchers[*s].matches(p));
        let literal: Vec<(usize, PathBuf)> = self
            .matchers
            .iter()
            .enumerate()
            .flat_map(|(s, m)| {
                m.literal_files()
                    .into_iter()
                    .map(move |(d, n)| (s, d.join(n)))
            })
            .collect();
        for (source, path) in live.chain(checkpointed.collect::<Vec<_>>()).chain(literal) {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            if !bases.iter().any(|(_, d, n)| d == dir && n == name) {
                bases.push((source, dir.to_path_buf(), name.to_os_string()));
            }
        }
        let known: Vec<(u32, u64)> = restored
            .iter()
            .map(|e| (e.id.head_len, e.id.head))
            .chain(self.finished.iter().map(|f| (f.head_len, f.head)))
            .filter(|(len, _)| *len > 0)
            .collect();
        // The heads of the files followed now: a sibling that is a prefix of one of them is
        // a copy being made (copytruncate in progress), finished by the truncation logic.
        let live: Vec<Vec<u8>> = self
            .files
            .iter()
            .filter_map(|t| {
                let mut buf = Vec::new();
                read_head(t.reader.plain()?, HEAD_WINDOW, &mut buf).ok()?;
                Some(buf)
            })
            .collect();
        let mut head = Vec::with_capacity(HEAD_WINDOW);
        for (source, dir, base) in bases {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let base = base.to_string_lossy().into_owned();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(&base) else {
                    continue;
                };
                if !rest.starts_with(['.', '-', '_']) {
                    continue;
                }
                let path = entry.path();
                if self.matchers[source].matches(&path) {
                    continue; // tailed in its own right
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                if !meta.is_file()
                    || modified < scanned_at
                    || claimed.contains(&(meta.dev(), meta.ino()))
                {
                    continue;
                }
                let gz = name.ends_with(".gz");
                if gz && path.with_extension("").exists() {
                    continue; // still being compressed: the plain file is the one to read
                }
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                let reader = if gz {
                    let mut dec = MultiGzDecoder::new(BufReader::new(file));
                    if read_head_seq(&mut dec, HEAD_WINDOW, &mut head).is_err() {
                        continue;
                    }
                    let Ok(file) = File::open(&path) else {
                        continue;
                    };
                    Reader::Gz {
                        dec: Box::new(MultiGzDecoder::new(BufReader::new(file))),
                        pos: 0,
                    }
                } else {
                    if read_head(&file, HEAD_WINDOW, &mut head).is_err() {
                        continue;
                    }
                    Reader::Plain(file)
                };
                let is_known = known.iter().any(|&(len, h)| {
                    head.get(..len as usize)
                        .is_some_and(|prefix| fnv1a(prefix) == h)
                });
                let is_live_copy = live.iter().any(|p| p.starts_with(&head));
                if head.is_empty() || is_known || is_live_copy {
                    continue;
                }
                claimed.insert((meta.dev(), meta.ino()));
                let key = self.new_key();
                info!(path = %path.display(), key = %key, "reading a generation rotated away while the agent was stopped");
                self.stats.files_opened += 1;
                self.files.push(Tracked {
                    key,
                    source,
                    path,
                    id: FileId {
                        dev: meta.dev(),
                        ino: meta.ino(),
                        head_len: head.len() as u32,
                        head: fnv1a(&head),
                    },
                    reader,
                    read_pos: 0,
                    delivered: 0,
                    lines: LineBuf::default(),
                    role: Role::Draining {
                        kind: Drain::Copy,
                        since: now,
                    },
                    size: 0,
                    more: true,
                    rewritten: false,
                    last_data: now,
                });
            }
        }
    }

    fn remember_finished(&mut self, source: usize, id: &FileId) {
        if id.head_len == 0 {
            return;
        }
        if self.finished.len() >= FINISHED_KEPT {
            self.finished.remove(0);
        }
        self.finished.push(FinishedEntry {
            source,
            head_len: id.head_len,
            head: id.head,
        });
    }

    /// The source a restored entry belongs to: the one whose globs match its path.
    fn source_of(&self, e: &CheckpointEntry) -> Option<usize> {
        let p = Path::new(&e.path);
        self.matchers
            .iter()
            .position(|m| m.matches(p))
            .or((e.source < self.matchers.len()).then_some(e.source))
    }

    fn open_new(&mut self, source: usize, f: &Found, first: bool, now: Instant) {
        let file = match File::open(&f.path) {
            Ok(file) => {
                self.failing.remove(&f.path);
                file
            }
            Err(e) => {
                if self.failing.insert(f.path.clone()) {
                    warn!(path = %f.path.display(), error = %e, "cannot open log file; will retry");
                    self.stats.errors += 1;
                }
                return;
            }
        };
        let Ok(meta) = file.metadata() else { return };
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());
        if dev != f.dev || ino != f.ino {
            return; // replaced between stat and open: the next scan sees the new one
        }
        // Resume from a checkpoint?
        let same_inode = |e: &CheckpointEntry| e.id.dev == dev && e.id.ino == ino;
        if let Some(idx) = self.restored.iter().position(|e| {
            same_inode(e) && size >= e.offset && head_matches(&file, &e.id).unwrap_or(false)
        }) {
            {
                let e = self.restored.swap_remove(idx);
                debug!(path = %f.path.display(), offset = e.offset, "resuming from checkpoint");
                self.stats.files_opened += 1;
                self.files.push(Tracked {
                    key: e.key,
                    source,
                    path: f.path.clone(),
                    id: e.id,
                    reader: Reader::Plain(file),
                    read_pos: e.offset,
                    delivered: e.offset,
                    lines: LineBuf::default(),
                    role: Role::Active,
                    size,
                    more: size > e.offset,
                    rewritten: false,
                    last_data: now,
                });
                if let Some(t) = self.files.last_mut() {
                    widen_head(t);
                }
                return;
            }
        }
        // Same inode with other content (truncated while we were stopped, or the inode was
        // reused; step 3 looks for the old content), or a new file at a checkpointed path:
        // a successor, read from 0.
        let successor = self
            .restored
            .iter()
            .any(|e| same_inode(e) || Path::new(&e.path) == f.path);
        let created_since_checkpoint = match (self.restored_scanned_at, f.created) {
            (Some(at), Some(c)) => c
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() + 1 >= at)
                .unwrap_or(false),
            _ => false,
        };
        let mut lines = LineBuf::default();
        let start = if first && !successor && !created_since_checkpoint {
            match self.configs[source].start_at {
                StartAt::Beginning => 0,
                StartAt::End => {
                    let (pos, mid_line) = last_line_start(&file, size);
                    if mid_line {
                        lines.skip_first_line();
                    }
                    pos
                }
            }
        } else {
            0
        };
        let (head_len, head) = head_of(&file, size).unwrap_or((0, fnv1a(b"")));
        let key = self.new_key();
        debug!(path = %f.path.display(), key = %key, start, "following new file");
        self.stats.files_opened += 1;
        self.files.push(Tracked {
            key,
            source,
            path: f.path.clone(),
            id: FileId {
                dev,
                ino,
                head_len,
                head,
            },
            reader: Reader::Plain(file),
            read_pos: start,
            delivered: start,
            lines,
            role: Role::Active,
            size,
            more: size > start,
            rewritten: false,
            last_data: now,
        });
    }

    /// Reads at most `max_bytes` of new data, file by file in turns (at most 128 KiB per
    /// file per turn), and hands every complete line to `sink`. Data appended after a file
    /// reached its end is noticed by the next [`scan`](Self::scan) (call it on a
    /// [`Watcher`] wake-up and every second). A file being finished after rotation is read before the file that replaced
    /// it. Rotated, deleted and copied files that are finished are flushed
    /// ([`LineSink::file_done`]) and released here.
    pub fn read(&mut self, max_bytes: usize, sink: &mut impl LineSink) -> ReadProgress {
        let mut progress = ReadProgress::default();
        let mut budget = max_bytes;
        let now = Instant::now();
        let n = self.files.len();
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        let mut draining = vec![false; self.configs.len()];
        while budget > 0 {
            // Sources with a rotated file still holding data: their new file waits.
            draining.fill(false);
            for d in &self.files {
                if d.more
                    && d.role != Role::Active
                    && let Some(flag) = draining.get_mut(d.source)
                {
                    *flag = true;
                }
            }
            let mut any = false;
            for step in 0..n {
                if budget == 0 {
                    break;
                }
                let i = (self.cursor + step) % n;
                let t = &self.files[i];
                if !t.more {
                    continue;
                }
                if t.role == Role::Active && draining.get(t.source).copied().unwrap_or(false) {
                    continue; // finish the rotated file first
                }
                let want = budget.min(CHUNK);
                let got = read_file(
                    &mut self.files[i],
                    &mut self.chunk[..want],
                    &self.configs,
                    sink,
                    &mut self.stats,
                    &mut progress,
                    now,
                );
                budget -= got.min(budget);
                any |= got > 0;
            }
            if !any {
                break;
            }
        }
        self.release_finished(sink, now);
        progress.more = self.files.iter().any(|t| t.more);
        progress
    }

    fn release_finished(&mut self, sink: &mut impl LineSink, now: Instant) {
        let opts = self.opts;
        let mut i = 0;
        while i < self.files.len() {
            let t = &self.files[i];
            let Role::Draining { kind, since } = t.role else {
                i += 1;
                continue;
            };
            let idle = now.saturating_duration_since(t.last_data);
            let release = match kind {
                Drain::Copy => !t.more,
                Drain::Rotated => !t.more && idle >= opts.rotated_idle,
                Drain::Deleted => {
                    (!t.more && idle >= opts.deleted_idle)
                        || now.saturating_duration_since(since) >= opts.deleted_max
                }
            } || matches!(t.reader, Reader::Gone);
            if !release {
                i += 1;
                continue;
            }
            let mut t = self.files.swap_remove(i);
            let max = self.configs[t.source].max_line_bytes;
            let (source, key) = (t.source, t.key);
            let mut emitted = false;
            t.lines.flush(t.read_pos, max, &mut |l: Line<'_>| {
                sink.line(source, key, l.bytes, l.end_offset, l.truncated);
                emitted = true;
            });
            if emitted {
                self.stats.lines += 1;
            }
            sink.file_done(source, key);
            self.stats.files_released += 1;
            self.remember_finished(source, &t.id);
            debug!(path = %t.path.display(), key = %key, "finished rotated file released");
        }
    }

    /// Positions after the last line handed to the sink, for every tracked file (and
    /// rotated files still being finished). Persist it once the lines up to these positions
    /// are safely counted; a restart from it reads every later line again, exactly once.
    pub fn checkpoints(&self) -> Checkpoints {
        let mut cp = Checkpoints::empty();
        cp.scanned_at = self.scanned_at;
        cp.next_key = self.next_key;
        cp.files = self.files.iter().map(Tracked::entry).collect();
        // Entries not matched yet (before the first scan) are kept as they were.
        cp.files.extend(self.restored.iter().cloned());
        cp.finished.clone_from(&self.finished);
        cp
    }

    /// Path, offset, size and lag of every tracked file.
    pub fn files(&self) -> Vec<FileStatus> {
        self.files
            .iter()
            .map(|t| FileStatus {
                source: t.source,
                key: t.key,
                path: t.path.clone(),
                offset: t.delivered,
                size: t.size.max(t.read_pos),
                lag: t.size.max(t.read_pos) - t.delivered,
                rotated: t.role != Role::Active,
            })
            .collect()
    }
}

fn update_size(t: &mut Tracked, size: u64) {
    if size != t.size {
        t.size = size;
    }
    if size > t.read_pos {
        t.more = true;
    }
}

/// Whether an active file, still at its path with `size` bytes, was truncated (smaller than
/// what was read, or its head changed). Widens a short head as the file grows.
fn check_truncated(t: &mut Tracked, size: u64) -> bool {
    let changed = size != t.size;
    update_size(t, size);
    // Taken unconditionally: a flag left set would truncate the restarted file again.
    let rewritten = std::mem::take(&mut t.rewritten);
    if size < t.read_pos || rewritten {
        debug!(path = %t.path.display(), size, read_pos = t.read_pos, "shrunk or rewritten");
        return true;
    }
    let Some(file) = t.reader.plain() else {
        return false;
    };
    if changed && t.id.head_len > 0 && !head_matches(file, &t.id).unwrap_or(true) {
        debug!(path = %t.path.display(), size, read_pos = t.read_pos, head_len = t.id.head_len, "head changed");
        return true;
    }
    widen_head(t);
    false
}

fn widen_head(t: &mut Tracked) {
    let size = t.size.max(t.read_pos);
    if (t.id.head_len as usize) < HEAD_WINDOW
        && size > u64::from(t.id.head_len)
        && let Some(file) = t.reader.plain()
        && let Ok((len, head)) = head_of(file, size)
        && len > t.id.head_len
    {
        t.id.head_len = len;
        t.id.head = head;
    }
}

/// Handles the truncation of `t`: returns the stream of the old content (reading its
/// copy if one is found, else empty) and restarts `t` from 0 under `key`.
fn truncated(t: &mut Tracked, key: FileKey, now: Instant) -> (Tracked, bool) {
    let dir = t.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut exclude = HashSet::new();
    exclude.insert((t.id.dev, t.id.ino));
    let copy = find_copy(&dir, &t.id, t.delivered, &exclude);
    let copy_found = copy.is_some();
    let (path, id, reader) = match copy {
        Some((path, id, reader)) => {
            info!(path = %t.path.display(), copy = %path.display(), offset = t.delivered, "file truncated; finishing its copy first");
            (path, id, reader)
        }
        None => {
            if t.read_pos > 0 {
                info!(path = %t.path.display(), offset = t.read_pos, "file truncated; no copy found");
            }
            (t.path.clone(), t.id, Reader::Gone)
        }
    };
    let mut lines = std::mem::take(&mut t.lines);
    let read_pos = if copy_found {
        // The copy holds the unfinished line whole (or as far as it got): read it again
        // from its start rather than flush the fragment read before the truncation.
        lines.forget_partial();
        t.delivered
    } else {
        t.read_pos
    };
    let old = Tracked {
        key: t.key,
        source: t.source,
        path,
        id,
        reader,
        read_pos,
        delivered: t.delivered,
        lines,
        role: Role::Draining {
            kind: Drain::Copy,
            since: now,
        },
        size: 0,
        more: true,
        rewritten: false,
        last_data: now,
    };
    t.key = key;
    t.rewritten = false;
    t.read_pos = 0;
    t.delivered = 0;
    t.lines = LineBuf::default();
    let size = t.size;
    if let Some(file) = t.reader.plain() {
        let (head_len, head) = head_of(file, size).unwrap_or((0, fnv1a(b"")));
        t.id.head_len = head_len;
        t.id.head = head;
    }
    t.more = size > 0;
    (old, copy_found)
}

/// Where `StartAt::End` starts: after the last `\n` in the last [`END_LOOKBACK`] bytes, or
/// at the end in mid-line (the fragment is then skipped).
fn last_line_start(file: &File, size: u64) -> (u64, bool) {
    if size == 0 {
        return (0, false);
    }
    let from = size.saturating_sub(END_LOOKBACK);
    let mut buf = vec![0; usize::try_from(size - from).unwrap_or(0)];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], from + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    match memchr::memrchr(b'\n', &buf[..got]) {
        Some(i) => (from + i as u64 + 1, false),
        None if from == 0 && got == buf.len() => (0, false),
        None => (size, true),
    }
}

/// Reads one chunk of `t` and hands on its lines. Returns the bytes read.
fn read_file(
    t: &mut Tracked,
    chunk: &mut [u8],
    configs: &[SourceConfig],
    sink: &mut impl LineSink,
    stats: &mut TailStats,
    progress: &mut ReadProgress,
    now: Instant,
) -> usize {
    let n = match t.reader.read_at(chunk, t.read_pos) {
        Ok(n) => n,
        Err(e) => {
            warn!(path = %t.path.display(), error = %e, "read failed");
            stats.errors += 1;
            t.more = false;
            if matches!(t.reader, Reader::Gz { .. }) {
                t.reader = Reader::Gone; // a damaged archive: finish what we have
            }
            return 0;
        }
    };
    if n == 0 {
        t.more = false;
        return 0;
    }
    // Reading the head back after the data catches a truncation (copytruncate) that
    // happened before this read but after the last scan: such bytes belong to the new
    // content and are left for the scan to handle.
    if t.role == Role::Active
        && t.id.head_len > 0
        && let Some(file) = t.reader.plain()
        && !head_matches(file, &t.id).unwrap_or(true)
    {
        t.rewritten = true;
        t.more = false;
        return 0;
    }
    t.more = n == chunk.len() || !matches!(t.reader, Reader::Plain(_));
    let max = configs
        .get(t.source)
        .map_or(DEFAULT_MAX_LINE_BYTES, |c| c.max_line_bytes);
    let (source, key) = (t.source, t.key);
    let mut delivered = t.delivered;
    let mut truncated = 0;
    let skipped_before = t.lines.skipped_bytes;
    let lines = t
        .lines
        .feed(&chunk[..n], t.read_pos, max, &mut |l: Line<'_>| {
            sink.line(source, key, l.bytes, l.end_offset, l.truncated);
            delivered = l.end_offset;
            truncated += u64::from(l.truncated);
        });
    t.delivered = delivered;
    t.read_pos += n as u64;
    t.last_data = now;
    if t.read_pos > t.size {
        t.size = t.read_pos;
    }
    if t.role == Role::Active {
        widen_head(t);
    }
    stats.lines += lines;
    stats.bytes += n as u64;
    stats.lines_truncated += truncated;
    stats.bytes_skipped += t.lines.skipped_bytes - skipped_before;
    progress.lines += lines;
    progress.bytes += n as u64;
    n
}

/// A candidate found in a directory.
type Candidate = (PathBuf, FileId, Reader);

/// Looks in `dir` for a copy of the stream `id` (same head checksum, another inode) holding
/// at least `min_size` bytes: a plain file first, else a gzip file. The most recently
/// modified match wins.
fn find_copy(
    dir: &Path,
    id: &FileId,
    min_size: u64,
    exclude: &HashSet<(u64, u64)>,
) -> Option<Candidate> {
    if id.head_len == 0 {
        return None;
    }
    let entries = std::fs::read_dir(dir).ok()?;
    let mut plain: Option<(SystemTime, Candidate)> = None;
    let mut gz: Vec<(SystemTime, PathBuf, u64, u64)> = Vec::new();
    let mut head = Vec::with_capacity(HEAD_WINDOW);
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || exclude.contains(&(meta.dev(), meta.ino())) {
            continue;
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        if path.extension().is_some_and(|e| e == "gz") {
            gz.push((mtime, path, meta.dev(), meta.ino()));
            continue;
        }
        if meta.len() < min_size.max(u64::from(id.head_len)) {
            continue;
        }
        if plain.as_ref().is_some_and(|(t, _)| *t >= mtime) {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if read_head(&file, id.head_len as usize, &mut head).is_ok()
            && head.len() == id.head_len as usize
            && fnv1a(&head) == id.head
        {
            let cid = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
                ..*id
            };
            plain = Some((mtime, (path, cid, Reader::Plain(file))));
        }
    }
    if let Some((_, c)) = plain {
        return Some(c);
    }
    gz.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, path, dev, ino) in gz {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let mut dec = MultiGzDecoder::new(BufReader::new(file));
        if read_head_seq(&mut dec, id.head_len as usize, &mut head).is_ok()
            && head.len() == id.head_len as usize
            && fnv1a(&head) == id.head
        {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(_) => continue,
            };
            let cid = FileId { dev, ino, ..*id };
            let dec = Box::new(MultiGzDecoder::new(BufReader::new(file)));
            return Some((path, cid, Reader::Gz { dec, pos: 0 }));
        }
    }
    None
}

/// Finds the file of a checkpoint entry after a restart: the same inode renamed within its
/// directory, else a copy (copytruncate), else a compressed copy.
fn find_rotated(
    e: &CheckpointEntry,
    claimed: &HashSet<(u64, u64)>,
) -> Option<(PathBuf, FileId, Reader, Drain)> {
    let dir = Path::new(&e.path).parent().unwrap_or(Path::new("."));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            // An empty-at-checkpoint file (no head) cannot be told from a later file
            // that reused its inode: only a head identifies a file that moved.
            if e.id.head_len == 0 {
                break;
            }
            if meta.dev() != e.id.dev || meta.ino() != e.id.ino || !meta.is_file() {
                continue;
            }
            if meta.len() < e.offset || claimed.contains(&(meta.dev(), meta.ino())) {
                break;
            }
            let Ok(file) = File::open(&path) else { break };
            if head_matches(&file, &e.id).unwrap_or(false) {
                return Some((path, e.id, Reader::Plain(file), Drain::Rotated));
            }
            break;
        }
    }
    // `claimed` holds the file now at the entry's path (same inode, new content); the
    // entry's own inode stays a candidate: it may be a compressed copy being finished.
    find_copy(dir, &e.id, e.offset, claimed).map(|(p, id, r)| (p, id, r, Drain::Copy))
}

#[cfg(test)]
mod tests;
