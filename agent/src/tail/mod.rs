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
//!     // tailer.changed(paths) with what a PathWatcher reported, then:
//!     if tailer.scan_due() {
//!         tailer.scan()?;
//!     }
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
//! * **Descriptors**: a file is held open only while it has data to read and for
//!   [`IDLE_CLOSE`] after its last data (sooner when more than half the budget is in use);
//!   then it is closed and opened again by its path when it grows, after checking device,
//!   inode and head, so nothing is read twice or skipped. At most
//!   [`Tailer::set_max_open`] files are open at once (by default the process's soft
//!   descriptor limit less a reserve for the rest of the agent); beyond, files with data
//!   take turns ([`Tailer::descriptors`]). A file held closed that leaves its globs is looked
//!   for in its directory (by inode, then as a copy by its head, compressed or not), and a
//!   directory that cannot be read (permissions, no descriptor left) leaves its files as they
//!   were: they are not taken for rotated away.
//! * **Cost**: a full [`scan`](Tailer::scan) stats every matched file; between scans the
//!   watcher's hints ([`Tailer::changed`], one `stat` per changed path) and a cheap `fstat`
//!   of the open files notice new data. [`Tailer::scan_due`] spaces the periodic scans out
//!   to at least 100 times their own CPU cost, so 10,000 idle files take about 1 % of a
//!   core.
//! * **Start**: `start_at` applies only to files found by the first scan of an agent without
//!   checkpoint; a file appearing later, or created after the stored checkpoint, or found at
//!   the path of a checkpointed file, is read from 0.
//!
//! # Limits
//! * While running, a scan that finds a file rotated away also looks for generations that
//!   rotated away since the previous scan unseen (two rotations between scans), as a
//!   restart does; a generation rotated away and then deleted or compressed beyond
//!   recognition before that scan is lost.
//! * copytruncate: lines written between logrotate's copy and its truncate exist in no file
//!   (logrotate's own race); the engine delivers them only if it read them before the
//!   truncate. The copy must stay in the directory of the log (no `olddir`).
//! * A file that was still empty when the checkpoint was stored has no head; if it is
//!   rotated away and compressed before a restart, it is found only as an unknown
//!   generation (read from 0, which is exact since its checkpoint was 0).
//! * Globs may match rotated names (`app.log*` minus `*.gz`): a file found for the first
//!   time whose head is a known stream's (same checksum over the same length: a followed
//!   file, a checkpoint entry, a finished stream) is that data and continues at its offset;
//!   a copy of a file still followed waits until that file is truncated. Two different
//!   files with the same first bytes (up to 1 KiB) are taken for one.
//! * A file held closed (idle for [`IDLE_CLOSE`]) that is written and then deleted before
//!   the agent notices the write (a watcher hint usually comes at once; without one the
//!   next scan) loses those lines: only an open descriptor reaches a deleted file. Renamed
//!   or compressed, it is found again.
//! * Without watcher hints (no inotify, a network file system), appends to files held
//!   closed are noticed by the periodic scan: within a second for up to a few thousand
//!   files, within a few seconds for 10,000.

mod checkpoint;
mod config;
mod discover;
mod error;
mod identity;
mod lines;

pub use checkpoint::{
    CHECKPOINT_FILE, CHECKPOINT_VERSION, CheckpointEntry, Checkpoints, FINISHED_KEPT, FinishedEntry,
};
pub use config::{DEFAULT_MAX_LINE_BYTES, SourceConfig, StartAt};
pub use discover::{Change, PathWatcher};
pub use error::TailError;
pub use identity::{FileId, FileKey, HEAD_WINDOW};

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::read::MultiGzDecoder;
use tracing::{debug, info, warn};

use discover::{Found, Matcher, Scan};
use identity::{fnv1a, head_matches, head_of, read_head, read_head_seq};
use lines::{Line, LineBuf};

/// Bytes read from one file in one turn.
const CHUNK: usize = 128 * 1024;
/// How far back from the end `StartAt::End` looks for the start of the last line.
const END_LOOKBACK: u64 = 64 * 1024;
/// A followed file with nothing to read is closed after this long without new data.
pub const IDLE_CLOSE: Duration = Duration::from_secs(5);
/// Shortest time between two full scans asked for by [`Tailer::changed`] or
/// [`Tailer::request_scan`] (new files, renames, a lost event queue).
const REQUESTED_SCAN_GAP: Duration = Duration::from_millis(100);
/// A full scan asked for waits at least this many times as long as the last one took, and a
/// periodic one [`PERIODIC_SCAN_FACTOR`] times: with very many files the scans space out so
/// that they never take more than a few percent of a core.
const REQUESTED_SCAN_FACTOR: u32 = 20;
const PERIODIC_SCAN_FACTOR: u32 = 100;
/// Open files with nothing to read are checked for growth (one `fstat` each) at most this
/// often by [`Tailer::read`]; the watcher's hints and the scans notice the rest.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Descriptors left to the rest of the agent (spool, connections, state files) below the
/// process's limit; the rest may hold log files.
const FD_RESERVE_MIN: u64 = 64;
const FD_RESERVE_MAX: u64 = 256;
/// Linux `EMFILE` (the process's descriptor limit) and `ENFILE` (the system's).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// Whether `e` says that no descriptor is left.
fn is_fd_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

/// The soft limit on open descriptors of this process, from `/proc/self/limits`.
pub fn fd_soft_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// How many log files may be held open at once under a descriptor limit of `limit`.
pub fn max_open_for_limit(limit: u64) -> usize {
    let reserve = (limit / 4).clamp(FD_RESERVE_MIN, FD_RESERVE_MAX);
    usize::try_from(limit.saturating_sub(reserve).max(8)).unwrap_or(usize::MAX)
}

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
    /// Opens that waited because the descriptor budget ([`Tailer::set_max_open`]) was
    /// used up or the process ran out of descriptors.
    pub fd_limit_hits: u64,
    /// Full scans of the globs.
    pub scans: u64,
    /// Directories or files a scan could not examine (their files were left as they were).
    pub scan_errors: u64,
}

/// How the tailer uses file descriptors, for `status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Descriptors {
    /// Files followed (open or held closed while idle).
    pub files: usize,
    /// Log files held open now.
    pub open: usize,
    /// Most log files held open at once.
    pub max_open: usize,
    /// Files with data to read that wait for a descriptor (followed files, and files found
    /// but not opened yet).
    pub waiting: usize,
    /// More files are followed than may be held open at once (they take turns), or an open
    /// had to wait for a descriptor in the last seconds.
    pub limited: bool,
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
    /// A followed file held closed because it has nothing to read: opened again by its
    /// path (and checked to be the same file: device, inode and head) once it grows.
    Closed,
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
            Reader::Closed | Reader::Gone => Ok(0),
        }
    }

    fn is_open(&self) -> bool {
        matches!(self, Reader::Plain(_) | Reader::Gz { .. })
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
    /// Where `path` leads when it is a symbolic link: a target held closed is looked for in
    /// its own directory when the link points elsewhere.
    target: Option<PathBuf>,
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

/// Checkpoint entries not matched to a file yet (after a restart), indexed by inode and by
/// path so that matching many files is not quadratic.
#[derive(Debug, Default)]
struct Restored {
    entries: Vec<Option<CheckpointEntry>>,
    by_inode: HashMap<(u64, u64), Vec<usize>>,
    /// Paths of the entries left, with how many entries name each.
    paths: HashMap<PathBuf, usize>,
    left: usize,
}

impl Restored {
    fn new(entries: Vec<CheckpointEntry>) -> Self {
        let mut restored = Restored::default();
        for e in entries {
            restored.push(e);
        }
        restored
    }

    fn push(&mut self, e: CheckpointEntry) {
        let i = self.entries.len();
        self.by_inode
            .entry((e.id.dev, e.id.ino))
            .or_default()
            .push(i);
        *self.paths.entry(PathBuf::from(&e.path)).or_default() += 1;
        self.entries.push(Some(e));
        self.left += 1;
    }

    fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The entries left, in checkpoint order.
    fn iter(&self) -> impl Iterator<Item = &CheckpointEntry> {
        self.entries.iter().flatten()
    }

    fn has_inode(&self, dev: u64, ino: u64) -> bool {
        self.by_inode
            .get(&(dev, ino))
            .is_some_and(|list| !list.is_empty())
    }

    fn has_path(&self, path: &Path) -> bool {
        self.paths.get(path).is_some_and(|&n| n > 0)
    }

    /// Removes and returns the first entry (in checkpoint order) of this inode that
    /// `accept`s.
    fn take_inode(
        &mut self,
        dev: u64,
        ino: u64,
        mut accept: impl FnMut(&CheckpointEntry) -> bool,
    ) -> Option<CheckpointEntry> {
        let list = self.by_inode.get_mut(&(dev, ino))?;
        let entries = &self.entries;
        let pos = list
            .iter()
            .position(|&i| entries[i].as_ref().is_some_and(&mut accept))?;
        let i = list.remove(pos);
        let e = self.entries[i].take()?;
        if let Some(n) = self.paths.get_mut(Path::new(&e.path)) {
            *n = n.saturating_sub(1);
        }
        self.left -= 1;
        Some(e)
    }

    /// Removes entry `i` (its path still counts as checkpointed: a file found there later is
    /// a successor).
    fn take_index(&mut self, i: usize) -> Option<CheckpointEntry> {
        let e = self.entries.get_mut(i)?.take()?;
        if let Some(list) = self.by_inode.get_mut(&(e.id.dev, e.id.ino)) {
            list.retain(|&j| j != i);
        }
        self.left -= 1;
        Some(e)
    }

    /// Removes every entry left.
    fn take_all(&mut self) -> Vec<CheckpointEntry> {
        let out = std::mem::take(&mut self.entries)
            .into_iter()
            .flatten()
            .collect();
        *self = Restored::default();
        out
    }
}

/// A directory's entries with their metadata (symbolic links followed).
#[derive(Debug, Default)]
struct Listing {
    entries: Vec<(PathBuf, Metadata)>,
    by_id: HashMap<(u64, u64), usize>,
}

/// Directory listings read at most once per scan: finding where a rotated file went, or a
/// copytruncate copy, costs one pass over its directory however many files rotated.
#[derive(Debug, Default)]
struct DirCache {
    dirs: HashMap<PathBuf, Listing>,
}

impl DirCache {
    fn list(&mut self, dir: &Path) -> io::Result<&Listing> {
        if !self.dirs.contains_key(dir) {
            let mut listing = Listing::default();
            for entry in std::fs::read_dir(dir)? {
                let Ok(entry) = entry else { continue };
                let path = entry.path();
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                listing
                    .by_id
                    .entry((meta.dev(), meta.ino()))
                    .or_insert(listing.entries.len());
                listing.entries.push((path, meta));
            }
            self.dirs.insert(dir.to_path_buf(), listing);
        }
        Ok(&self.dirs[dir])
    }

    /// Where the file with this device and inode is in `dir`, if there.
    fn find(&mut self, dir: &Path, dev: u64, ino: u64) -> io::Result<Option<(PathBuf, u64)>> {
        let listing = self.list(dir)?;
        Ok(listing
            .by_id
            .get(&(dev, ino))
            .map(|&i| &listing.entries[i])
            .filter(|(_, meta)| meta.is_file())
            .map(|(path, meta)| (path.clone(), meta.len())))
    }
}

/// What [`Tailer::reopen`] got.
enum Reopen {
    /// Open and the same file: read it.
    Ready,
    /// No descriptor left.
    NoFd,
    /// Not now (gone, replaced, unreadable, rewritten): the next scan sorts it out.
    NotNow,
}

/// Follows the files of all sources. See the [module documentation](self).
pub struct Tailer {
    configs: Vec<SourceConfig>,
    matchers: Vec<Matcher>,
    files: Vec<Tracked>,
    /// Checkpoint entries not yet matched to a file (until the scan that finds or gives up
    /// their file).
    restored: Restored,
    restored_scanned_at: Option<u64>,
    /// Heads of streams read to their end (newest last, at most `FINISHED_KEPT`).
    finished: Vec<FinishedEntry>,
    scanned_at: Option<u64>,
    scanned_once: bool,
    /// Files the first scan found but could not open (no descriptor left): `start_at` still
    /// applies to them when they are opened.
    deferred_first: HashSet<(u64, u64)>,
    /// Files the last scan found but could not open (no descriptor left).
    unopened: HashSet<(u64, u64)>,
    next_key: u64,
    chunk: Vec<u8>,
    cursor: usize,
    opts: TailerOptions,
    stats: TailStats,
    /// Paths whose open failed, so that each failure is logged once.
    failing: HashSet<PathBuf>,
    /// Most log files held open at once.
    max_open: usize,
    /// Log files held open now (kept up to date by the code that opens and closes them).
    open: usize,
    idle_close: Duration,
    scan_interval: Duration,
    /// A hint asked for a full scan (new file, rename, lost events).
    scan_wanted: bool,
    last_scan: Option<Instant>,
    /// CPU time (or, where unknown, wall time) the last full scan took.
    last_scan_cost: Duration,
    last_probe: Option<Instant>,
    /// When descriptors last ran short.
    fd_limited_at: Option<Instant>,
    /// Index of `files` by path, for hints; rebuilt when stale.
    by_path: HashMap<PathBuf, usize>,
    by_path_stale: bool,
}

impl std::fmt::Debug for Tailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tailer")
            .field("sources", &self.configs.len())
            .field("files", &self.files.len())
            .field("open", &self.open)
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

/// CPU time of the calling thread so far, from `/proc/thread-self/schedstat`.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
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
            restored: Restored::new(checkpoints.files),
            restored_scanned_at: checkpoints.scanned_at,
            finished: checkpoints.finished,
            scanned_at: checkpoints.scanned_at,
            scanned_once: false,
            deferred_first: HashSet::new(),
            unopened: HashSet::new(),
            next_key,
            chunk: vec![0; CHUNK],
            cursor: 0,
            opts,
            stats: TailStats::default(),
            failing: HashSet::new(),
            max_open: max_open_for_limit(fd_soft_limit().unwrap_or(1024)),
            open: 0,
            idle_close: IDLE_CLOSE,
            scan_interval: Duration::from_secs(1),
            scan_wanted: false,
            last_scan: None,
            last_scan_cost: Duration::ZERO,
            last_probe: None,
            fd_limited_at: None,
            by_path: HashMap::new(),
            by_path_stale: true,
        })
    }

    /// Holds at most `n` (at least 1) log files open at once. The default leaves a reserve
    /// below the process's soft descriptor limit ([`max_open_for_limit`]); files beyond it
    /// wait their turn, they are not dropped.
    pub fn set_max_open(&mut self, n: usize) {
        self.max_open = n.max(1);
    }

    /// Most log files held open at once.
    pub fn max_open(&self) -> usize {
        self.max_open
    }

    /// Closes a followed file once it had no new data for `idle` (default [`IDLE_CLOSE`]).
    pub fn set_idle_close(&mut self, idle: Duration) {
        self.idle_close = idle;
    }

    /// The shortest time between two periodic full scans (default 1 s; see
    /// [`scan_due`](Self::scan_due)).
    pub fn set_scan_interval(&mut self, every: Duration) {
        self.scan_interval = every;
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

    /// Descriptors held, the budget and the files waiting for one.
    pub fn descriptors(&self) -> Descriptors {
        let waiting = self
            .files
            .iter()
            .filter(|t| t.more && matches!(t.reader, Reader::Closed))
            .count()
            + self.unopened.len();
        Descriptors {
            files: self.files.len(),
            open: self.files.iter().filter(|t| t.reader.is_open()).count(),
            max_open: self.max_open,
            waiting,
            limited: self.files.len() + self.unopened.len() > self.max_open
                || self
                    .fd_limited_at
                    .is_some_and(|at| at.elapsed() < Duration::from_secs(5)),
        }
    }

    fn count_open(&self) -> usize {
        self.files.iter().filter(|t| t.reader.is_open()).count()
    }

    fn fd_limit_hit(&mut self, now: Instant) {
        self.stats.fd_limit_hits += 1;
        let quiet = self
            .fd_limited_at
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(60));
        if !quiet {
            warn!(
                open = self.open,
                max_open = self.max_open,
                files = self.files.len(),
                "out of file descriptors for log files: files take turns and are read later (raise LimitNOFILE / ulimit -n)"
            );
        }
        self.fd_limited_at = Some(now);
    }

    /// Whether a full [`scan`](Self::scan) is due: one was asked for (a hint named a new,
    /// renamed or vanished file, or events were lost) and the last one is at least 100 ms
    /// and 20 times its own cost old, or the last one is older than the scan interval and
    /// 100 times its cost (at most a minute). Between scans the watcher's hints
    /// ([`changed`](Self::changed)) and cheap checks of the open files notice new data.
    pub fn scan_due(&self) -> bool {
        let Some(last) = self.last_scan else {
            return true;
        };
        let since = last.elapsed();
        let cost = self.last_scan_cost;
        (self.scan_wanted && since >= REQUESTED_SCAN_GAP.max(cost * REQUESTED_SCAN_FACTOR))
            || since
                >= self
                    .scan_interval
                    .max(cost * PERIODIC_SCAN_FACTOR)
                    .min(Duration::from_secs(60))
    }

    /// Asks for a full scan as soon as [`scan_due`](Self::scan_due) allows (the watcher
    /// lost events).
    pub fn request_scan(&mut self) {
        self.scan_wanted = true;
    }

    fn index(&mut self) {
        if !self.by_path_stale {
            return;
        }
        self.by_path.clear();
        // Active files win over a rotated file still known by the same path.
        for (i, t) in self.files.iter().enumerate() {
            if t.role != Role::Active {
                self.by_path.insert(t.path.clone(), i);
            }
        }
        for (i, t) in self.files.iter().enumerate() {
            if t.role == Role::Active {
                self.by_path.insert(t.path.clone(), i);
            }
        }
        self.by_path_stale = false;
    }

    /// Takes hints from a [`PathWatcher`]: these paths changed. A followed file is checked
    /// at once (one `stat`) and read by the next [`read`](Self::read) if it grew; a new
    /// matching path, or a followed file replaced, shrunk or gone, asks for a full scan.
    /// Paths no glob matches are ignored.
    pub fn changed(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        self.index();
        for path in paths {
            let Some(&i) = self.by_path.get(&path) else {
                if !self.scan_wanted && self.matchers.iter().any(|m| m.matches(&path)) {
                    self.scan_wanted = true;
                }
                continue;
            };
            let Some(t) = self.files.get_mut(i) else {
                continue;
            };
            if t.role != Role::Active {
                if let Some(size) = t
                    .reader
                    .plain()
                    .and_then(|f| f.metadata().ok())
                    .map(|m| m.len())
                {
                    update_size(t, size);
                }
                // A file finishing after rotation is still known by the path it had, which
                // holds a new file now (the next generation): a scan finds that one.
                if self
                    .matchers
                    .get(t.source)
                    .is_some_and(|m| m.matches(&path))
                {
                    self.scan_wanted = true;
                }
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.dev() == t.id.dev && m.ino() == t.id.ino => {
                    if m.len() < t.read_pos {
                        self.scan_wanted = true; // truncated
                    } else {
                        update_size(t, m.len());
                    }
                }
                // Replaced, renamed away or deleted.
                _ => self.scan_wanted = true,
            }
        }
    }

    /// Rescans the globs: picks up new files, notices rotation, truncation, deletion and
    /// inode reuse. One `stat` per matched file, one 1 KiB read per file that changed; see
    /// [`scan_due`](Self::scan_due) for how often the agent calls it. Problems with single
    /// files are logged and counted, never returned; a directory that cannot be read leaves
    /// its files as they were (they are not taken for rotated away).
    ///
    /// # Errors
    /// None today; the `Result` leaves room for failures of the whole scan.
    pub fn scan(&mut self) -> Result<(), TailError> {
        let clock = Instant::now();
        let cpu = thread_cpu();
        let started = unix_now();
        let now = clock;
        let first = !self.scanned_once;
        // The previous scan's start, for generations that rotated away since (below).
        let previous_scan = self.scanned_at;
        // The paths whose files rotated away in this scan, by source.
        let mut rotated_away: Vec<(usize, PathBuf)> = Vec::new();
        let scans: Vec<Scan> = self.matchers.iter().map(Matcher::scan).collect();
        self.stats.scans += 1;
        self.stats.scan_errors += scans.iter().map(|s| s.unsure.len() as u64).sum::<u64>();
        self.open = self.count_open();
        self.unopened.clear();
        self.by_path_stale = true;
        let mut claimed: HashSet<(u64, u64)> = HashSet::new();
        let mut spawned: Vec<Tracked> = Vec::new();
        let mut refound: Vec<usize> = Vec::new();
        let mut dirs = DirCache::default();

        // 1. Files already tracked.
        for i in 0..self.files.len() {
            let t = &mut self.files[i];
            let scan = scans.get(t.source);
            let here = scan.and_then(|s| s.get(t.id.dev, t.id.ino));
            match (t.role, here) {
                // A finished stream no longer open proves nothing by its inode, which a
                // new file may have taken over.
                (Role::Draining { .. }, _) if !t.reader.is_open() => {}
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
                    if f.path != t.path {
                        info!(from = %t.path.display(), to = %f.path.display(), key = %t.key, "file renamed");
                        t.path = f.path.clone();
                    }
                    if !check_truncated(t, f.size) {
                        claimed.insert((t.id.dev, t.id.ino));
                    } else {
                        // Its old content is finished from its copy (or lost); its new
                        // content is looked at as a file found now (step 2), since it may be
                        // data of another stream: an inode freed by a deleted generation is
                        // often taken at once by logrotate's next copy of the live file.
                        refound.push(i);
                        let key = self.new_key();
                        let t = &mut self.files[i];
                        let (old, copy_found) = truncated(t, key, now, &mut dirs);
                        self.stats.truncations += 1;
                        if copy_found {
                            self.stats.copies_found += 1;
                            // Read from the old position under the old key: not a new file
                            // for step 2 when the globs match it.
                            claimed.insert((old.id.dev, old.id.ino));
                        } else if old.delivered < old.read_pos || old.lines.has_partial() {
                            self.stats.losses += 1;
                        }
                        spawned.push(old);
                    }
                }
                (Role::Active, None) => {
                    if scan.is_none_or(|s| s.is_unsure(&t.path)) {
                        // Its directory cannot be read now (permissions, no descriptor
                        // left): whether it is still there is unknown.
                        claimed.insert((t.id.dev, t.id.ino));
                        continue;
                    }
                    let was = (t.source, t.path.clone());
                    if self.left_globs(i, now, &mut dirs, &claimed) {
                        rotated_away.push(was);
                    } else {
                        let t = &self.files[i];
                        claimed.insert((t.id.dev, t.id.ino));
                    }
                }
            }
        }
        if !refound.is_empty() {
            let mut i = 0;
            self.files.retain(|_| {
                i += 1;
                !refound.contains(&(i - 1))
            });
        }
        self.files.extend(spawned);
        // Copies found for truncated files and rotated files reopened count too.
        self.open = self.count_open();

        // 2. Files seen for the first time: those of a checkpoint entry by inode first, then
        // the others, which may be known by their head (a rotated copy or a file renamed
        // while the agent was stopped: data already read, continued where it was).
        let mut later = Vec::new();
        let mut changed = Vec::new();
        for (source, scan) in scans.iter().enumerate() {
            for f in &scan.found {
                if claimed.contains(&(f.dev, f.ino)) {
                    continue;
                }
                if !self.restored.has_inode(f.dev, f.ino) {
                    later.push((source, f));
                    continue;
                }
                claimed.insert((f.dev, f.ino));
                let first_here = first || self.deferred_first.contains(&(f.dev, f.ino));
                let pass = Pass::Checkpointed;
                if self.open_new(source, f, first_here, now, &mut None, pass) == Opened::Changed {
                    // Its inode holds other data now (an inode reused by logrotate's next
                    // copy, a file truncated while the agent was stopped): looked at by its
                    // content, once every checkpointed file still holding its data is
                    // followed again.
                    claimed.remove(&(f.dev, f.ino));
                    changed.push((source, f));
                }
            }
        }
        later.extend(changed);
        let mut known = None;
        for (source, f) in later {
            if !claimed.insert((f.dev, f.ino)) {
                continue;
            }
            let first_here = first || self.deferred_first.contains(&(f.dev, f.ino));
            if self.open_new(source, f, first_here, now, &mut known, Pass::Rest) != Opened::Followed
            {
                claimed.remove(&(f.dev, f.ino)); // looked at again by the next scan
            }
        }

        // 3. Checkpointed files not found under the globs: rotated while we were stopped.
        // (Entries whose file could not be opened yet, or whose directory could not be
        // read, wait for a later scan.)
        if first || !self.restored.is_empty() {
            let remaining: Vec<CheckpointEntry> = if first {
                self.restored.iter().cloned().collect()
            } else {
                Vec::new()
            };
            let mut keep = Vec::new();
            for e in self.restored.take_all() {
                let Some(source) = self.source_of(&e) else {
                    warn!(path = %e.path, "checkpointed file no longer matches any source; forgetting it");
                    continue;
                };
                let unsure = scans
                    .get(source)
                    .is_some_and(|s| s.is_unsure(Path::new(&e.path)));
                if unsure || self.unopened.contains(&(e.id.dev, e.id.ino)) {
                    keep.push(e);
                    continue;
                }
                match find_rotated(&e, &claimed, &mut dirs) {
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
                            target: None,
                        });
                    }
                    None => {
                        warn!(path = %e.path, offset = e.offset, "checkpointed file is gone; lines after its checkpoint cannot be read");
                        self.stats.losses += 1;
                        // Never read again from its start should a copy turn up.
                        self.remember_finished(source, &e.id, Some(e.offset));
                    }
                }
            }
            for e in keep {
                self.restored.push(e);
            }
            // 4. Generations rotated away entirely while we were stopped.
            if first && let Some(at) = self.restored_scanned_at {
                self.recover_generations(
                    &scans,
                    &remaining,
                    at,
                    None,
                    &mut claimed,
                    now,
                    &mut dirs,
                );
            }
            if first {
                self.restored_scanned_at = None;
            }
        }
        // 5. A file rotated away since the previous scan may not have been the only one: a
        // second rotation before this scan renamed away a generation created after the
        // previous scan, which no scan saw. Its siblings written since then whose head is
        // not known are read from 0, as after a restart.
        if !first
            && !rotated_away.is_empty()
            && let Some(at) = previous_scan
        {
            let running = Some(rotated_away.as_slice());
            self.recover_generations(&scans, &[], at, running, &mut claimed, now, &mut dirs);
        }
        self.scanned_once = true;
        self.scanned_at = Some(started);
        self.scan_wanted = false;
        self.close_idle(now);
        self.last_scan = Some(Instant::now());
        self.last_scan_cost = match (cpu, thread_cpu()) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => clock.elapsed(),
        };
        debug!(
            files = self.files.len(),
            open = self.open,
            cost_us = self.last_scan_cost.as_micros(),
            "scanned the globs"
        );
        Ok(())
    }

    /// An active file that is no longer under its globs: rotated away (finish it where it
    /// went) or deleted. Returns whether it was dealt with; `false` when its directory could
    /// not be read (left as it is until the next scan).
    fn left_globs(
        &mut self,
        i: usize,
        now: Instant,
        dirs: &mut DirCache,
        claimed: &HashSet<(u64, u64)>,
    ) -> bool {
        let t = &mut self.files[i];
        if let Some(file) = t.reader.plain() {
            let deleted = file
                .metadata()
                .map(|m| {
                    let len = m.len();
                    let gone = m.nlink() == 0;
                    update_size(t, len);
                    gone
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
            self.by_path_stale = true;
            return true;
        }
        // Held closed while idle: find where it went in its directory (the directory of
        // its target when it was followed through a symbolic link).
        let dir = t
            .target
            .as_deref()
            .unwrap_or(&t.path)
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let moved = match dirs.find(&dir, t.id.dev, t.id.ino) {
            Ok(found) => found,
            Err(e) => {
                debug!(dir = %dir.display(), error = %e, "cannot read the directory of a file that left its globs; retrying");
                self.stats.scan_errors += 1;
                if is_fd_limit(&e) {
                    self.fd_limit_hit(now);
                }
                return false;
            }
        };
        let reopened = moved.and_then(|(path, _)| {
            let file = File::open(&path).ok()?;
            let meta = file.metadata().ok()?;
            // An empty file (no head) cannot be told from a later file that reused its
            // inode (a compressed copy made since): only a head identifies a file that moved.
            let same = t.id.head_len > 0
                && meta.dev() == t.id.dev
                && meta.ino() == t.id.ino
                && head_matches(&file, &t.id).unwrap_or(false);
            same.then_some((path, file, meta.len()))
        });
        self.stats.rotations += 1;
        self.by_path_stale = true;
        match reopened {
            Some((path, file, len)) => {
                info!(path = %t.path.display(), now = %path.display(), key = %t.key, "file rotated away; finishing it");
                t.path = path;
                t.reader = Reader::Plain(file);
                self.open += 1;
                update_size(t, len);
                t.role = Role::Draining {
                    kind: Drain::Rotated,
                    since: now,
                };
                t.last_data = now;
                t.more = true;
            }
            None => {
                // Gone from its directory: compressed (or copied) and deleted since it was
                // last read? Its lines after the position are read from the copy.
                let copy = if t.size > t.read_pos || t.lines.has_partial() {
                    find_copy(&dir, &t.id, t.delivered, claimed, dirs)
                } else {
                    None
                };
                if let Some((path, id, reader)) = copy {
                    info!(path = %t.path.display(), copy = %path.display(), key = %t.key, offset = t.delivered, "file rotated away before its last lines were read; reading them from its copy");
                    self.open += 1;
                    t.path = path;
                    t.id = id;
                    t.reader = reader;
                    // The copy holds the unfinished line whole: read it again from its start.
                    t.lines.forget_partial();
                    t.read_pos = t.delivered;
                    t.size = 0;
                    t.role = Role::Draining {
                        kind: Drain::Copy,
                        since: now,
                    };
                    t.last_data = now;
                    t.more = true;
                    return true;
                }
                if t.size > t.read_pos {
                    warn!(path = %t.path.display(), key = %t.key, unread = t.size - t.read_pos, "file deleted or moved out of its directory before its last lines were read");
                    self.stats.losses += 1;
                } else {
                    info!(path = %t.path.display(), key = %t.key, "file deleted or moved out of its directory while idle; released");
                }
                t.reader = Reader::Gone;
                t.role = Role::Draining {
                    kind: Drain::Deleted,
                    since: now,
                };
                t.more = false;
            }
        }
        true
    }

    /// After a restart, or when a scan finds a file rotated away, reads from their start
    /// the rotated siblings of the tailed files (`app.log.2`, `app.log.1.gz`,
    /// `app.log-20261123`) that hold lines written after `scanned_at` (the checkpoint's
    /// scan, or the previous scan: modified at or after it) and whose head is neither a checkpointed
    /// stream nor one finished before it: whole generations that were created and rotated
    /// away while the agent was stopped, or after the last stored checkpoint.
    ///
    /// While running (`rotated`: the paths whose files this scan found rotated away), only
    /// their siblings are looked at, only plain files (a compressed one is a generation
    /// already read, re-packed), and only names that continue with a number or a date
    /// (`app.log.1`, `app.log-20261130`): not `app.log.json`, another stream.
    #[allow(clippy::too_many_arguments)]
    fn recover_generations(
        &mut self,
        scans: &[Scan],
        restored: &[CheckpointEntry],
        scanned_at: u64,
        rotated: Option<&[(usize, PathBuf)]>,
        claimed: &mut HashSet<(u64, u64)>,
        now: Instant,
        dirs: &mut DirCache,
    ) {
        // Base names by directory; the first source to name one wins.
        let mut bases: HashMap<PathBuf, HashMap<Vec<u8>, usize>> = HashMap::new();
        let live = scans
            .iter()
            .enumerate()
            .flat_map(|(s, scan)| scan.found.iter().map(move |f| (s, f.path.clone())));
        let checkpointed: Vec<(usize, PathBuf)> = restored
            .iter()
            .filter_map(|e| self.source_of(e).map(|s| (s, PathBuf::from(&e.path))))
            .filter(|(s, p)| self.matchers[*s].matches(p))
            .collect();
        let literal: Vec<(usize, PathBuf)> = self
            .matchers
            .iter()
            .enumerate()
            .flat_map(|(s, m)| {
                m.literal_files()
                    .into_iter()
                    .chain(m.literal_prefixes())
                    .map(move |(d, n)| (s, d.join(n)))
            })
            .collect();
        let all: Vec<(usize, PathBuf)> = match rotated {
            Some(rotated) => rotated.to_vec(),
            None => live.chain(checkpointed).chain(literal).collect(),
        };
        for (source, path) in all {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            bases
                .entry(dir.to_path_buf())
                .or_default()
                .entry(name.as_bytes().to_vec())
                .or_insert(source);
        }
        // Heads known to be read (checkpointed, followed now or finished), by length. A
        // followed file's own head counts, not what its path holds now: a generation that
        // rotated since the listing (`app.log.1` compressed into `app.log.2.gz`) is the
        // followed file's data, and its path already holds the next one's.
        let mut known: HashMap<u32, HashSet<u64>> = HashMap::new();
        for (len, head) in restored
            .iter()
            .map(|e| (e.id.head_len, e.id.head))
            .chain(self.files.iter().map(|t| (t.id.head_len, t.id.head)))
            .chain(self.finished.iter().map(|f| (f.head_len, f.head)))
        {
            if len > 0 {
                known.entry(len).or_default().insert(head);
            }
        }
        // Siblings modified since the checkpoint, not followed and not tailed in their own
        // right.
        let mut candidates: Vec<(usize, PathBuf, Metadata)> = Vec::new();
        let mut dir_list: Vec<&PathBuf> = bases.keys().collect();
        dir_list.sort();
        for dir in dir_list {
            let Ok(listing) = dirs.list(dir) else {
                continue;
            };
            let names = &bases[dir];
            for (path, meta) in &listing.entries {
                let Some(name) = path.file_name().map(OsStr::as_bytes) else {
                    continue;
                };
                // The longest base this name continues with `.`, `-` or `_`.
                let Some((cut, source)) = name
                    .iter()
                    .enumerate()
                    .rev()
                    .filter(|(_, b)| matches!(b, b'.' | b'-' | b'_'))
                    .find_map(|(i, _)| names.get(&name[..i]).map(|s| (i, *s)))
                else {
                    continue;
                };
                if rotated.is_some()
                    && (name.ends_with(b".gz")
                        || !name.get(cut + 1).is_some_and(u8::is_ascii_digit))
                {
                    continue;
                }
                if self.matchers[source].matches(path) {
                    continue; // tailed in its own right
                }
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
                candidates.push((source, path.clone(), meta.clone()));
            }
        }
        if candidates.is_empty() {
            return;
        }
        // The heads of the files followed now: a sibling that is a prefix of one of them is
        // a copy being made (copytruncate in progress), finished by the truncation logic.
        let live = LiveHeads::of(&self.files);
        let mut head = Vec::with_capacity(HEAD_WINDOW);
        for (source, path, meta) in candidates {
            let gz = path.extension().is_some_and(|e| e == "gz");
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
            if head.is_empty() || is_known_head(&known, &head) || live.has_prefix(&head) {
                continue;
            }
            claimed.insert((meta.dev(), meta.ino()));
            let key = self.new_key();
            info!(path = %path.display(), key = %key, "reading a generation rotated away unseen (while the agent was stopped, or between two scans)");
            self.stats.files_opened += 1;
            self.open += 1;
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
                target: None,
            });
        }
    }

    fn remember_finished(&mut self, source: usize, id: &FileId, offset: Option<u64>) {
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
            offset,
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

    /// Opens a file found by a scan and follows it. With `known` (files not of a checkpoint
    /// entry by inode), a file whose head is that of a stream already read continues where
    /// that stream was read to. Returns `false` when the file is not followed for now (empty,
    /// or a copy of a followed file in progress or not yet truncated): the next scan looks
    /// at it again.
    fn open_new(
        &mut self,
        source: usize,
        f: &Found,
        first: bool,
        now: Instant,
        known: &mut Option<KnownIndex>,
        pass: Pass,
    ) -> Opened {
        let file = match File::open(&f.path) {
            Ok(file) => {
                if !self.failing.is_empty() {
                    self.failing.remove(&f.path);
                }
                file
            }
            Err(e) if is_fd_limit(&e) => {
                // Taken up again by a later scan, as if found now.
                self.fd_limit_hit(now);
                self.unopened.insert((f.dev, f.ino));
                if first {
                    self.deferred_first.insert((f.dev, f.ino));
                }
                return Opened::NotNow;
            }
            Err(e) => {
                if self.failing.insert(f.path.clone()) {
                    warn!(path = %f.path.display(), error = %e, "cannot open log file; will retry");
                    self.stats.errors += 1;
                }
                return Opened::NotNow;
            }
        };
        if !self.deferred_first.is_empty() {
            self.deferred_first.remove(&(f.dev, f.ino));
        }
        let Ok(meta) = file.metadata() else {
            return Opened::NotNow;
        };
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());
        if dev != f.dev || ino != f.ino {
            return Opened::NotNow; // replaced between stat and open: the next scan sees the new one
        }
        self.by_path_stale = true;
        let target = std::fs::symlink_metadata(&f.path)
            .is_ok_and(|m| m.file_type().is_symlink())
            .then(|| std::fs::canonicalize(&f.path).ok())
            .flatten();
        // Resume from a checkpoint?
        if let Some(e) = self.restored.take_inode(dev, ino, |e| {
            size >= e.offset && head_matches(&file, &e.id).unwrap_or(false)
        }) {
            debug!(path = %f.path.display(), offset = e.offset, "resuming from checkpoint");
            self.stats.files_opened += 1;
            let mut t = Tracked {
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
                target,
            };
            widen_head(&mut t);
            self.keep_open_if_needed(&mut t);
            self.files.push(t);
            return Opened::Followed;
        }
        if pass == Pass::Checkpointed {
            return Opened::Changed;
        }
        if size == 0 {
            // No identity yet: a copy just begun looks like this. Followed once it has a
            // head (nothing is lost meanwhile: it holds nothing).
            return Opened::NotNow;
        }
        let mut head = Vec::with_capacity(HEAD_WINDOW);
        if read_head(&file, HEAD_WINDOW, &mut head).is_ok() && !head.is_empty() {
            let index = known.get_or_insert_with(|| KnownIndex::of(self));
            match self.identify(index, &head, size, (dev, ino), &f.path) {
                Ident::New => {}
                Ident::Copy => {
                    debug!(path = %f.path.display(), "a copy of a followed file; not read while that file holds its lines");
                    return Opened::NotNow;
                }
                Ident::Resume { key, id, offset } => {
                    let key = key.unwrap_or_else(|| self.new_key());
                    info!(path = %f.path.display(), key = %key, offset, "file holds data already read (a rotated copy or a renamed file); continuing where it was read to");
                    self.stats.files_opened += 1;
                    let mut t = Tracked {
                        key,
                        source,
                        path: f.path.clone(),
                        id: FileId { dev, ino, ..id },
                        reader: Reader::Plain(file),
                        read_pos: offset,
                        delivered: offset,
                        lines: LineBuf::default(),
                        role: Role::Active,
                        size,
                        more: size > offset,
                        rewritten: false,
                        last_data: now,
                        target,
                    };
                    widen_head(&mut t);
                    index.add(self.files.len(), &t.id);
                    self.keep_open_if_needed(&mut t);
                    self.files.push(t);
                    return Opened::Followed;
                }
            }
        }
        // Same inode with other content (truncated while we were stopped, or the inode was
        // reused; step 3 looks for the old content), or a new file at a checkpointed path:
        // a successor, read from 0.
        let successor = self.restored.has_inode(dev, ino) || self.restored.has_path(&f.path);
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
        let mut t = Tracked {
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
            target,
        };
        if let Some(index) = known {
            index.add(self.files.len(), &t.id);
        }
        self.keep_open_if_needed(&mut t);
        self.files.push(t);
        Opened::Followed
    }

    /// What a file found with `head` (its first bytes, `size` in all) is to the streams known.
    fn identify(
        &mut self,
        index: &mut KnownIndex,
        head: &[u8],
        size: u64,
        ino: (u64, u64),
        path: &Path,
    ) -> Ident {
        // The longest known head this file starts with.
        let best = identity::fnv1a_prefixes(head)
            .filter(|(len, h)| index.by_len.get(len).is_some_and(|m| m.contains_key(h)))
            .last();
        let Some((len, h)) = best else {
            // A small file may be the start of a followed file's head (a copy in progress, or
            // a copy of a file that grew since): compared byte for byte with the followed
            // files of its directory.
            if head.len() < HEAD_WINDOW {
                let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                let files = &self.files;
                let live = index.live.entry(dir.clone()).or_insert_with(|| {
                    LiveHeads::of(files.iter().filter(|t| {
                        (t.role == Role::Active || t.reader.is_open())
                            && (t.id.dev, t.id.ino) != ino
                            && t.path.parent() == Some(dir.as_path())
                    }))
                });
                if live.has_prefix(head) {
                    return Ident::Copy;
                }
            }
            return Ident::New;
        };
        let refs = index.by_len[&len][&h].clone();
        let id = FileId {
            dev: ino.0,
            ino: ino.1,
            head_len: len,
            head: h,
        };
        let mut resume: Option<(u8, Option<FileKey>, u64, Option<usize>)> = None;
        let mut better = |rank: u8, key: Option<FileKey>, offset: u64, entry: Option<usize>| {
            if resume.as_ref().is_none_or(|r| rank > r.0) {
                resume = Some((rank, key, offset.min(size), entry));
            }
        };
        // Rotation keeps a file's data in its directory (a renamed file, a copytruncate
        // copy, a compressed generation): a file elsewhere with the same first bytes is
        // other data that starts alike (two services logging the same banner), not a copy.
        let dir = path.parent();
        for r in refs {
            match r {
                KnownRef::File(i) => {
                    let Some(t) = self.files.get(i) else { continue };
                    if (t.id.dev, t.id.ino) == ino || t.path.parent() != dir {
                        continue;
                    }
                    if matches!(t.reader, Reader::Gone) {
                        // Its content is gone from its own file (truncated, no copy found
                        // then): this file is that copy, read up to where it was read.
                        better(2, None, t.read_pos, None);
                    } else {
                        // A copy of a file still holding these lines (copytruncate before its
                        // truncate, or a copy in progress): its lines come from that file, and
                        // the rest from this copy once that file is truncated. Even when it
                        // is larger than that file was at the last look: the file grew since,
                        // or was truncated since (the next scan finds this copy for it).
                        return Ident::Copy;
                    }
                }
                KnownRef::Restored(i) => {
                    if let Some(Some(e)) = self.restored.entries.get(i)
                        && Path::new(&e.path).parent() == dir
                    {
                        better(3, Some(e.key), e.offset, Some(i));
                    }
                }
                KnownRef::Finished(i) => {
                    if let Some(f) = self.finished.get(i) {
                        better(1, None, f.offset.unwrap_or(size), None);
                    }
                }
            }
        }
        match resume {
            Some((_, key, offset, entry)) => {
                if let Some(i) = entry {
                    self.restored.take_index(i);
                }
                Ident::Resume { key, id, offset }
            }
            None => Ident::New,
        }
    }

    /// A file just found stays open only when it has data to read and the budget allows;
    /// otherwise it is closed until it has.
    fn keep_open_if_needed(&mut self, t: &mut Tracked) {
        if t.more && self.open < self.max_open {
            self.open += 1;
        } else {
            t.reader = Reader::Closed;
        }
    }

    /// Opens a file held closed again, checking it is the same file (device, inode, head).
    fn reopen(&mut self, i: usize) -> Reopen {
        let t = &mut self.files[i];
        let file = match File::open(&t.path) {
            Ok(file) => file,
            Err(e) if is_fd_limit(&e) => return Reopen::NoFd,
            Err(e) => {
                t.more = false;
                if e.kind() == io::ErrorKind::NotFound {
                    self.scan_wanted = true; // renamed away or deleted
                } else if self.failing.insert(t.path.clone()) {
                    warn!(path = %t.path.display(), error = %e, "cannot open log file; will retry");
                    self.stats.errors += 1;
                }
                return Reopen::NotNow;
            }
        };
        let Ok(meta) = file.metadata() else {
            t.more = false;
            return Reopen::NotNow;
        };
        if meta.dev() != t.id.dev || meta.ino() != t.id.ino {
            // Another file is at its path now: the scan finds where this one went.
            t.more = false;
            self.scan_wanted = true;
            return Reopen::NotNow;
        }
        if !self.failing.is_empty() {
            self.failing.remove(&t.path);
        }
        let rewritten = t.id.head_len > 0 && !head_matches(&file, &t.id).unwrap_or(true);
        t.reader = Reader::Plain(file);
        self.open += 1;
        update_size(t, meta.len());
        if rewritten {
            // Truncated (and written again) while closed: the scan handles it.
            t.rewritten = true;
            t.more = false;
            self.scan_wanted = true;
            return Reopen::NotNow;
        }
        Reopen::Ready
    }

    /// Closes the followed files that have had nothing to read for the idle time, or every
    /// one with nothing to read when more than half the budget is in use.
    fn close_idle(&mut self, now: Instant) {
        let pressure = self.open * 2 > self.max_open;
        let idle_close = self.idle_close;
        let mut open = 0;
        for t in &mut self.files {
            if !t.reader.is_open() {
                continue;
            }
            if t.role == Role::Active
                && !t.more
                && !t.rewritten
                && (pressure || now.saturating_duration_since(t.last_data) >= idle_close)
            {
                t.reader = Reader::Closed;
            } else {
                open += 1;
            }
        }
        self.open = open;
    }

    /// Checks the open files with nothing to read for growth (one `fstat` each), at most
    /// every [`PROBE_INTERVAL`]: appends that no hint announced (no watcher, a network file
    /// system) and the last lines of a rotated file are not left for the next full scan.
    fn probe_open(&mut self, now: Instant) {
        if self
            .last_probe
            .is_some_and(|at| now.saturating_duration_since(at) < PROBE_INTERVAL)
        {
            return;
        }
        self.last_probe = Some(now);
        for t in &mut self.files {
            if t.more || t.rewritten {
                continue;
            }
            let Some(size) = t
                .reader
                .plain()
                .and_then(|f| f.metadata().ok())
                .map(|m| m.len())
            else {
                continue;
            };
            if size < t.read_pos {
                if t.role == Role::Active {
                    self.scan_wanted = true; // truncated: the scan handles it
                }
            } else {
                update_size(t, size);
            }
        }
    }

    /// Reads at most `max_bytes` of new data, file by file in turns (at most 128 KiB per
    /// file per turn), and hands every complete line to `sink`. Data appended after a file
    /// reached its end is noticed by [`changed`](Self::changed), by a cheap check of the
    /// files held open, or by the next [`scan`](Self::scan). A file being finished after
    /// rotation is read before the file that replaced it. Rotated, deleted and copied files
    /// that are finished are flushed ([`LineSink::file_done`]) and released here. Files held
    /// closed are opened when they have data, within the descriptor budget; idle ones are
    /// closed.
    pub fn read(&mut self, max_bytes: usize, sink: &mut impl LineSink) -> ReadProgress {
        let mut progress = ReadProgress::default();
        let mut budget = max_bytes;
        let now = Instant::now();
        self.open = self.count_open();
        self.probe_open(now);
        let n = self.files.len();
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        let mut draining = vec![false; self.configs.len()];
        // No descriptor could be had in this call: stop opening files.
        let mut no_fds = false;
        // The process itself ran out of descriptors (not only the budget).
        let mut emfile = false;
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
                if matches!(t.reader, Reader::Closed) {
                    if no_fds {
                        continue;
                    }
                    if self.open >= self.max_open {
                        // Make room: close every file that has nothing to read.
                        let idle = self.idle_close;
                        self.idle_close = Duration::ZERO;
                        self.close_idle(now);
                        self.idle_close = idle;
                    }
                    let outcome = if self.open >= self.max_open {
                        Reopen::NoFd
                    } else {
                        self.reopen(i)
                    };
                    match outcome {
                        Reopen::Ready => {}
                        Reopen::NoFd => {
                            self.fd_limit_hit(now);
                            emfile |= self.open < self.max_open;
                            no_fds = true;
                            continue;
                        }
                        Reopen::NotNow => continue,
                    }
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
                // Short of descriptors, a file that has caught up gives its own back.
                let t = &mut self.files[i];
                if (no_fds || self.open * 2 > self.max_open)
                    && t.role == Role::Active
                    && !t.more
                    && !t.rewritten
                    && t.reader.is_open()
                {
                    t.reader = Reader::Closed;
                    self.open -= 1;
                }
            }
            if !any {
                break;
            }
        }
        self.release_finished(sink, now);
        self.close_idle(now);
        // Files waiting for a descriptor are worth another call only if one may be had: the
        // budget has room again (finished files were released), and the process did not
        // run out of descriptors in this call.
        let room = !emfile && self.open < self.max_open;
        progress.more = self
            .files
            .iter()
            .any(|t| t.more && (!matches!(t.reader, Reader::Closed) || room));
        progress
    }

    fn release_finished(&mut self, sink: &mut impl LineSink, now: Instant) {
        let opts = self.opts;
        let mut i = 0;
        while i < self.files.len() {
            let t = &mut self.files[i];
            let Role::Draining { kind, since } = t.role else {
                i += 1;
                continue;
            };
            let idle = now.saturating_duration_since(t.last_data);
            let timed_out =
                kind == Drain::Deleted && now.saturating_duration_since(since) >= opts.deleted_max;
            let mut release = match kind {
                Drain::Copy => !t.more,
                Drain::Rotated => !t.more && idle >= opts.rotated_idle,
                Drain::Deleted => !t.more && idle >= opts.deleted_idle,
            };
            // Its writer may have appended since the last look: finish that first.
            if release
                && kind != Drain::Copy
                && let Some(size) = t
                    .reader
                    .plain()
                    .and_then(|f| f.metadata().ok())
                    .map(|m| m.len())
                && size > t.read_pos
            {
                update_size(t, size);
                release = false;
            }
            if !(release || timed_out || matches!(t.reader, Reader::Gone)) {
                i += 1;
                continue;
            }
            let mut t = self.files.swap_remove(i);
            self.by_path_stale = true;
            if t.reader.is_open() {
                self.open = self.open.saturating_sub(1);
            }
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
            self.remember_finished(source, &t.id, Some(t.read_pos));
            debug!(path = %t.path.display(), key = %key, read_to = t.read_pos, "finished rotated file released");
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
        // Entries not matched yet (before the first scan, or waiting for a descriptor) are
        // kept as they were.
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

/// Whether `head` starts with a known head (a checkpointed or finished stream), checking
/// every known length with one pass of FNV-1a over `head`.
fn is_known_head(known: &HashMap<u32, HashSet<u64>>, head: &[u8]) -> bool {
    if known.is_empty() {
        return false;
    }
    identity::fnv1a_prefixes(head)
        .any(|(len, h)| known.get(&len).is_some_and(|set| set.contains(&h)))
}

/// A stream whose head identifies data already seen.
#[derive(Debug, Clone, Copy)]
enum KnownRef {
    /// A tracked file (by index in `Tailer::files`, valid during one scan).
    File(usize),
    /// A checkpoint entry not matched yet (by index in `Restored::entries`).
    Restored(usize),
    /// A stream read to its end (by index in `Tailer::finished`).
    Finished(usize),
}

/// The heads of the streams known during one scan, by length then checksum, to recognise a
/// file found for the first time as data already seen; and the heads of the followed files
/// of a directory, read when a small file must be compared byte for byte.
#[derive(Default)]
struct KnownIndex {
    by_len: HashMap<u32, HashMap<u64, Vec<KnownRef>>>,
    live: HashMap<PathBuf, LiveHeads>,
}

impl KnownIndex {
    fn of(tailer: &Tailer) -> Self {
        let mut index = KnownIndex::default();
        for (i, t) in tailer.files.iter().enumerate() {
            index.add(i, &t.id);
        }
        for (i, e) in tailer.restored.entries.iter().enumerate() {
            if let Some(e) = e
                && e.id.head_len > 0
            {
                index.push(e.id.head_len, e.id.head, KnownRef::Restored(i));
            }
        }
        for (i, f) in tailer.finished.iter().enumerate() {
            if f.head_len > 0 {
                index.push(f.head_len, f.head, KnownRef::Finished(i));
            }
        }
        index
    }

    fn add(&mut self, file: usize, id: &FileId) {
        if id.head_len > 0 {
            self.push(id.head_len, id.head, KnownRef::File(file));
        }
    }

    fn push(&mut self, len: u32, head: u64, r: KnownRef) {
        self.by_len
            .entry(len)
            .or_default()
            .entry(head)
            .or_default()
            .push(r);
    }
}

/// Which files [`Tailer::open_new`] is given.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Files at a checkpointed inode: followed from their entry if they still hold its
    /// data, else [`Opened::Changed`].
    Checkpointed,
    /// The others, and the changed ones: known by their head, else new.
    Rest,
}

/// What [`Tailer::open_new`] did with a file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Opened {
    Followed,
    /// Not followed for now (no descriptor, not openable, a copy, no content yet): looked
    /// at again by the next scan.
    NotNow,
    /// Its checkpointed inode holds other data now: to be looked at with [`Pass::Rest`].
    Changed,
}

/// What a file found for the first time is.
enum Ident {
    /// Unknown data: read from its start (or as `start_at` says).
    New,
    /// A copy of a file still followed: left alone for now.
    Copy,
    /// Data already read up to `offset`: continue there (under `key`, a checkpoint entry's,
    /// when given).
    Resume {
        key: Option<FileKey>,
        id: FileId,
        offset: u64,
    },
}

/// The heads of the followed files (files held closed are read by their path), to tell a
/// copy in progress from a rotated generation.
struct LiveHeads {
    /// Heads of at least [`LiveHeads::KEY`] bytes, by the hash of their first `KEY` bytes.
    long: HashMap<u64, Vec<Vec<u8>>>,
    short: Vec<Vec<u8>>,
}

impl LiveHeads {
    const KEY: usize = 64;

    fn of<'a>(files: impl IntoIterator<Item = &'a Tracked>) -> Self {
        let mut live = LiveHeads {
            long: HashMap::new(),
            short: Vec::new(),
        };
        for t in files {
            let mut buf = Vec::new();
            let ok = match &t.reader {
                Reader::Plain(file) => read_head(file, HEAD_WINDOW, &mut buf).is_ok(),
                Reader::Closed => File::open(&t.path)
                    .and_then(|file| read_head(&file, HEAD_WINDOW, &mut buf))
                    .is_ok(),
                _ => false,
            };
            if !ok {
                continue;
            }
            if buf.len() >= Self::KEY {
                live.long
                    .entry(fnv1a(&buf[..Self::KEY]))
                    .or_default()
                    .push(buf);
            } else {
                live.short.push(buf);
            }
        }
        live
    }

    /// Whether `head` is a prefix of a live file's head.
    fn has_prefix(&self, head: &[u8]) -> bool {
        if head.len() >= Self::KEY {
            self.long
                .get(&fnv1a(&head[..Self::KEY]))
                .is_some_and(|heads| heads.iter().any(|p| p.starts_with(head)))
        } else {
            self.short.iter().any(|p| p.starts_with(head))
                || self.long.values().flatten().any(|p| p.starts_with(head))
        }
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
    if !changed && !t.reader.is_open() {
        return false; // held closed and unchanged: nothing to look at
    }
    // A file held closed that changed is opened for a moment, as an open one is looked at:
    // its head must still be its own, and a short head is widened now (a copy made before
    // the next read is found by it).
    let opened = match t.reader {
        Reader::Closed => match File::open(&t.path) {
            Ok(file)
                if file
                    .metadata()
                    .is_ok_and(|m| m.dev() == t.id.dev && m.ino() == t.id.ino) =>
            {
                Some(file)
            }
            _ => return false, // gone or replaced since the scan: the next one sees it
        },
        _ => None,
    };
    let Some(file) = t.reader.plain().or(opened.as_ref()) else {
        return false;
    };
    if changed && t.id.head_len > 0 && !head_matches(file, &t.id).unwrap_or(true) {
        debug!(path = %t.path.display(), size, read_pos = t.read_pos, head_len = t.id.head_len, "head changed");
        return true;
    }
    let widened = widen_head_of(&t.id, file, t.size.max(t.read_pos));
    if let Some((len, head)) = widened {
        t.id.head_len = len;
        t.id.head = head;
    }
    false
}

fn widen_head(t: &mut Tracked) {
    let widened = t
        .reader
        .plain()
        .and_then(|file| widen_head_of(&t.id, file, t.size.max(t.read_pos)));
    if let Some((len, head)) = widened {
        t.id.head_len = len;
        t.id.head = head;
    }
}

/// The wider head of `file` (of at least `size` bytes), if its head covers less than the
/// window and the file has more.
fn widen_head_of(id: &FileId, file: &File, size: u64) -> Option<(u32, u64)> {
    if (id.head_len as usize) < HEAD_WINDOW && size > u64::from(id.head_len) {
        let (len, head) = head_of(file, size).ok()?;
        (len > id.head_len).then_some((len, head))
    } else {
        None
    }
}

/// Handles the truncation of `t`: returns the stream of the old content (reading its
/// copy if one is found, else empty) and restarts `t` from 0 under `key`.
fn truncated(t: &mut Tracked, key: FileKey, now: Instant, dirs: &mut DirCache) -> (Tracked, bool) {
    let dir = t.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut exclude = HashSet::new();
    exclude.insert((t.id.dev, t.id.ino));
    let copy = find_copy(&dir, &t.id, t.delivered, &exclude, dirs);
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
        target: None,
    };
    t.key = key;
    t.rewritten = false;
    t.read_pos = 0;
    t.delivered = 0;
    t.lines = LineBuf::default();
    let size = t.size;
    // A file held closed is opened just to take its new head.
    let opened = match t.reader {
        Reader::Closed => File::open(&t.path).ok().filter(|file| {
            file.metadata()
                .is_ok_and(|m| m.dev() == t.id.dev && m.ino() == t.id.ino)
        }),
        _ => None,
    };
    if let Some(file) = t.reader.plain().or(opened.as_ref()) {
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
    // A rotated file or a copy is identified by its own head too (a file matched later by
    // that head continues from where it was read to).
    widen_head(t);
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
    dirs: &mut DirCache,
) -> Option<Candidate> {
    if id.head_len == 0 {
        return None;
    }
    let listing = dirs.list(dir).ok()?;
    let mut plain: Option<(SystemTime, Candidate)> = None;
    let mut gz: Vec<(SystemTime, PathBuf, u64, u64)> = Vec::new();
    let mut head = Vec::with_capacity(HEAD_WINDOW);
    for (path, meta) in &listing.entries {
        if !meta.is_file() || exclude.contains(&(meta.dev(), meta.ino())) {
            continue;
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        if path.extension().is_some_and(|e| e == "gz") {
            gz.push((mtime, path.clone(), meta.dev(), meta.ino()));
            continue;
        }
        if meta.len() < min_size.max(u64::from(id.head_len)) {
            continue;
        }
        if plain.as_ref().is_some_and(|(t, _)| *t >= mtime) {
            continue;
        }
        let Ok(file) = File::open(path) else {
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
            plain = Some((mtime, (path.clone(), cid, Reader::Plain(file))));
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
    dirs: &mut DirCache,
) -> Option<(PathBuf, FileId, Reader, Drain)> {
    let dir = Path::new(&e.path).parent().unwrap_or(Path::new("."));
    // An empty-at-checkpoint file (no head) cannot be told from a later file that reused
    // its inode: only a head identifies a file that moved.
    if e.id.head_len > 0
        && let Ok(Some((path, len))) = dirs.find(dir, e.id.dev, e.id.ino)
        && len >= e.offset
        && !claimed.contains(&(e.id.dev, e.id.ino))
        && let Ok(file) = File::open(&path)
        && head_matches(&file, &e.id).unwrap_or(false)
    {
        return Some((path, e.id, Reader::Plain(file), Drain::Rotated));
    }
    // `claimed` holds the file now at the entry's path (same inode, new content); the
    // entry's own inode stays a candidate: it may be a compressed copy being finished.
    find_copy(dir, &e.id, e.offset, claimed, dirs).map(|(p, id, r)| (p, id, r, Drain::Copy))
}

#[cfg(test)]
mod tests;
