//! The on-disk spool: every report is appended here (checksummed, fsynced) before it is
//! sent, and stays until the detector has acknowledged it. Bounded by size: when full, the
//! agent stops reading log files (the files keep the data) instead of dropping counts.
//!
//! Layout: `data_dir/spool/<first seq, 20 digits>.seg`, each segment an 8-byte header
//! (`VGSPOOL` + format version) and records `[len: u32 LE][crc32: u32 LE][payload]`, the
//! payload a protobuf [`SpoolRecord`]. A record cut short by a crash is dropped when the
//! spool is opened; a record failing its checksum is skipped with the rest of its segment
//! and counted, never a crash loop.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prost::Message;
use vigil_proto::v1::Report;

const MAGIC: &[u8; 7] = b"VGSPOOL";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: u64 = 8;
/// A segment is closed once it reaches this size; acknowledged segments are deleted whole.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Largest record accepted when reading (a report is far smaller).
const MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;

/// The spool shared by the main loop (appends) and the shipper (reads, acknowledgements).
#[derive(Debug, Clone)]
pub struct SharedSpool(Arc<Mutex<Spool>>);

impl SharedSpool {
    /// Shares `spool`.
    pub fn new(spool: Spool) -> Self {
        Self(Arc::new(Mutex::new(spool)))
    }

    /// The spool, for one short operation. A panic elsewhere while it was held leaves the
    /// spool itself consistent (every change is one call), so a poisoned lock is taken over.
    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One spooled report, with the file positions reached once its lines were counted.
#[derive(Clone, PartialEq, Message)]
pub struct SpoolRecord {
    #[prost(message, optional, tag = "1")]
    pub report: Option<Report>,
    /// Opaque checkpoint of the log files (set on the last report of a flush).
    #[prost(bytes = "vec", tag = "2")]
    pub positions: Vec<u8>,
}

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
}

/// Where the next read continues, so sending in order does not rescan segments.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    segment_first_seq: u64,
    offset: u64,
    next_seq: u64,
}

/// The spool of one agent.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    active: Option<File>,
    acked: u64,
    corrupt_records: u64,
    cursor: Option<Cursor>,
    latest_positions: Option<(u64, Vec<u8>)>,
}

/// What `status` shows about the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStatus {
    /// Reports not yet acknowledged.
    pub reports: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Records skipped because they failed their checksum.
    pub corrupt_records: u64,
    /// Whether reading is paused because the spool is full.
    pub full: bool,
}

impl Spool {
    /// Opens the spool in `data_dir/spool`, checking every record; `acked` is the highest
    /// seq known to be acknowledged (records up to it are not sent again).
    ///
    /// # Errors
    /// [`SpoolError`] when the directory cannot be read or written.
    pub fn open(data_dir: &Path, max_bytes: u64, acked: u64) -> Result<Self, SpoolError> {
        let dir = data_dir.join("spool");
        fs::create_dir_all(&dir).map_err(|source| SpoolError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(&dir)
            .map_err(|source| SpoolError::Io {
                path: dir.clone(),
                source,
            })?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                let seq = path
                    .extension()
                    .filter(|e| *e == "seg")
                    .and(path.file_stem())
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())?;
                Some((seq, path))
            })
            .collect();
        names.sort();
        let mut spool = Self {
            dir,
            max_bytes,
            segments: VecDeque::new(),
            active: None,
            acked,
            corrupt_records: 0,
            cursor: None,
            latest_positions: None,
        };
        let count = names.len();
        for (i, (first_seq, path)) in names.into_iter().enumerate() {
            spool.load_segment(first_seq, path, i + 1 == count)?;
        }
        // Segments before the first one left were acknowledged whole.
        if let Some(first) = spool.segments.front() {
            spool.acked = spool.acked.max(first.first_seq.saturating_sub(1));
        }
        let acked = spool.acked;
        if let Err(e) = spool.drop_acked(acked) {
            // Acknowledged reports are never sent again; their segments go later.
            tracing::warn!(error = %e, "cannot delete acknowledged spool segments now");
        }
        Ok(spool)
    }

    /// Reads a segment at start-up: finds its last seq, drops a torn tail, counts damage.
    fn load_segment(
        &mut self,
        first_seq: u64,
        path: PathBuf,
        last: bool,
    ) -> Result<(), SpoolError> {
        let io_err = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        // A read-only data_dir still lets the spooled reports be read (and sent); appends
        // then start a new segment once it takes writes again.
        let (mut file, writable) = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => (file, true),
            Err(e) if read_only(&e) => (File::open(&path).map_err(io_err)?, false),
            Err(e) => return Err(io_err(e)),
        };
        let mut header = [0u8; HEADER_LEN as usize];
        if file.read_exact(&mut header).is_err()
            || &header[..7] != MAGIC
            || header[7] != FORMAT_VERSION
        {
            tracing::warn!(path = %path.display(), "spool segment with a bad header; removed");
            self.corrupt_records += 1;
            drop(file);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the damaged spool segment; it is skipped");
            }
            return Ok(());
        }
        let mut reader = BufReader::new(&mut file);
        let mut offset = HEADER_LEN;
        let mut last_seq = first_seq.saturating_sub(1);
        loop {
            match read_record(&mut reader) {
                Ok(Some((record, len))) => {
                    if let Some(report) = &record.report {
                        last_seq = report.seq;
                        if !record.positions.is_empty() {
                            self.latest_positions = Some((report.seq, record.positions));
                        }
                    }
                    offset += len;
                }
                Ok(None) => break,
                Err(RecordError::Torn) => {
                    if last {
                        tracing::warn!(path = %path.display(), offset, "torn record at the end of the spool (crash while appending); dropped");
                    } else {
                        self.corrupt_records += 1;
                    }
                    break;
                }
                Err(RecordError::Corrupt) => {
                    tracing::warn!(path = %path.display(), offset, "corrupt spool record; the rest of the segment is skipped");
                    self.corrupt_records += 1;
                    break;
                }
                Err(RecordError::Io(source)) => return Err(io_err(source)),
            }
        }
        drop(reader);
        if last && writable {
            // Appends continue right after the last good record.
            if file
                .set_len(offset)
                .and_then(|()| file.seek(SeekFrom::End(0)))
                .is_ok()
            {
                self.active = Some(file);
            }
        }
        self.segments.push_back(Segment {
            path,
            first_seq,
            last_seq,
            bytes: offset,
        });
        Ok(())
    }

    /// The highest seq known to be acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The highest seq in the spool (acknowledged or not), 0 when it never held one.
    pub fn last_seq(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.last_seq)
            .max()
            .unwrap_or(0)
            .max(self.acked)
    }

    /// The newest file positions stored with a report, and that report's seq.
    pub fn latest_positions(&self) -> Option<&(u64, Vec<u8>)> {
        self.latest_positions.as_ref()
    }

    /// Appends records (seqs increasing) and makes them durable before returning.
    ///
    /// # Errors
    /// [`SpoolError`] when writing or syncing failed; the spool is unchanged then, as far
    /// as later reads are concerned (a partly written record is cut on the next open).
    pub fn append(&mut self, records: &[SpoolRecord]) -> Result<(), SpoolError> {
        let Some(first) = records.first().and_then(|r| r.report.as_ref()) else {
            return Ok(());
        };
        let first_seq = first.seq;
        let roll = match self.segments.back() {
            None => true,
            Some(last) => last.bytes >= SEGMENT_BYTES || self.active.is_none(),
        };
        if roll {
            self.start_segment(first_seq)?;
        }
        let mut buf = Vec::new();
        let mut last_seq = first_seq;
        let mut positions = None;
        for record in records {
            let payload = record.encode_to_vec();
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
            if let Some(report) = &record.report {
                last_seq = report.seq;
                if !record.positions.is_empty() {
                    positions = Some((report.seq, record.positions.clone()));
                }
            }
        }
        let (Some(file), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        let io_err = |source| SpoolError::Io {
            path: segment.path.clone(),
            source,
        };
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            // A disk that filled up (or failed) mid-write leaves part of these records:
            // cut them, so that the retry continues right after the last good record. If
            // even that fails, the retry starts a new segment (reads of this one stop at
            // its last good record).
            let good = segment.bytes;
            let cut = file
                .set_len(good)
                .and_then(|()| file.seek(SeekFrom::Start(good)))
                .is_ok();
            if !cut {
                self.active = None;
            }
            return Err(io_err(e));
        }
        segment.bytes += buf.len() as u64;
        segment.last_seq = last_seq;
        if positions.is_some() {
            self.latest_positions = positions;
        }
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(format!("{first_seq:020}.seg"));
        let io_err = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(io_err)?;
        let mut header = [0u8; HEADER_LEN as usize];
        header[..7].copy_from_slice(MAGIC);
        header[7] = FORMAT_VERSION;
        let written = file
            .write_all(&header)
            .and_then(|()| file.sync_all())
            .map_err(io_err)
            .and_then(|()| {
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|source| SpoolError::Io {
                        path: self.dir.clone(),
                        source,
                    })
            });
        if let Err(e) = written {
            // Not a segment yet: leave no half-written file behind to be taken for a
            // damaged one at the next start.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        // A segment started for this seq before whose first append failed holds no
        // record: this file replaces it.
        if self
            .segments
            .back()
            .is_some_and(|s| s.first_seq == first_seq && s.last_seq < first_seq)
        {
            self.segments.pop_back();
        }
        self.active = Some(file);
        self.segments.push_back(Segment {
            path,
            first_seq,
            last_seq: first_seq.saturating_sub(1),
            bytes: HEADER_LEN,
        });
        Ok(())
    }

    /// Reads up to `max` records with seq ≥ `from` that are not acknowledged, in order.
    ///
    /// # Errors
    /// [`SpoolError`] when a segment cannot be read.
    pub fn read_from(&mut self, from: u64, max: usize) -> Result<Vec<Report>, SpoolError> {
        let from = from.max(self.acked + 1);
        let mut out = Vec::new();
        let Some(index) = self.segments.iter().position(|s| s.last_seq >= from) else {
            return Ok(out);
        };
        for segment in self.segments.iter().skip(index) {
            if out.len() >= max {
                break;
            }
            let start = match self.cursor {
                Some(c) if c.segment_first_seq == segment.first_seq && c.next_seq == from => {
                    c.offset
                }
                _ => HEADER_LEN,
            };
            let io_err = |source| SpoolError::Io {
                path: segment.path.clone(),
                source,
            };
            let mut file = File::open(&segment.path).map_err(io_err)?;
            file.seek(SeekFrom::Start(start)).map_err(io_err)?;
            let mut reader = BufReader::new(file).take(segment.bytes.saturating_sub(start));
            let mut offset = start;
            while out.len() < max {
                match read_record(&mut reader) {
                    Ok(Some((record, len))) => {
                        offset += len;
                        if let Some(report) = record.report
                            && report.seq >= from
                        {
                            self.cursor = Some(Cursor {
                                segment_first_seq: segment.first_seq,
                                offset,
                                next_seq: report.seq + 1,
                            });
                            out.push(report);
                        }
                    }
                    Ok(None) | Err(RecordError::Torn | RecordError::Corrupt) => break,
                    Err(RecordError::Io(source)) => return Err(io_err(source)),
                }
            }
        }
        Ok(out)
    }

    /// Records that every report up to `seq` is acknowledged: they are not read again.
    /// Their segments stay on disk until [`release`](Self::release)d, so that the file
    /// positions they carry survive until the checkpoint file holds them.
    pub fn ack(&mut self, seq: u64) {
        self.acked = self.acked.max(seq);
    }

    /// Deletes the segments that hold only acknowledged reports up to `seq`.
    ///
    /// # Errors
    /// [`SpoolError`] when a segment cannot be deleted.
    pub fn release(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.drop_acked(seq.min(self.acked))
    }

    fn drop_acked(&mut self, upto: u64) -> Result<(), SpoolError> {
        while let Some(segment) = self.segments.front() {
            if segment.last_seq > upto {
                break;
            }
            if self.segments.len() == 1 {
                self.active = None;
            }
            fs::remove_file(&segment.path).map_err(|source| SpoolError::Io {
                path: segment.path.clone(),
                source,
            })?;
            self.segments.pop_front();
        }
        Ok(())
    }

    /// Reports, bytes and whether the spool is full.
    pub fn status(&self) -> SpoolStatus {
        let bytes = self.segments.iter().map(|s| s.bytes).sum();
        SpoolStatus {
            reports: self.last_seq().saturating_sub(self.acked),
            bytes,
            corrupt_records: self.corrupt_records,
            full: bytes >= self.max_bytes,
        }
    }
}

/// Whether opening for writing failed because the file system or the file is read-only.
fn read_only(e: &io::Error) -> bool {
    // EROFS
    e.raw_os_error() == Some(30) || e.kind() == io::ErrorKind::PermissionDenied
}

enum RecordError {
    /// The record ends before its length says (a crash while appending).
    Torn,
    /// The checksum does not match or the length is impossible.
    Corrupt,
    Io(io::Error),
}

/// Reads one record; `Ok(None)` at a clean end. Returns the record and its size on disk.
fn read_record(reader: &mut impl Read) -> Result<Option<(SpoolRecord, u64)>, RecordError> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(RecordError::Torn),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RecordError::Io(e)),
        }
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD_BYTES {
        return Err(RecordError::Corrupt);
    }
    let mut payload = vec![0u8; len as usize];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(RecordError::Torn),
        Err(e) => return Err(RecordError::Io(e)),
    }
    if crc32fast::hash(&payload) != crc {
        return Err(RecordError::Corrupt);
    }
    let record = SpoolRecord::decode(payload.as_slice()).map_err(|_| RecordError::Corrupt)?;
    Ok(Some((record, 8 + u64::from(len))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::{MinuteReport, report::Body};

    fn record(seq: u64, positions: &[u8]) -> SpoolRecord {
        SpoolRecord {
            report: Some(Report {
                seq,
                host: "h".into(),
                body: Some(Body::Minute(MinuteReport {
                    minute: 60 * seq as i64,
                    ..Default::default()
                })),
                ..Default::default()
            }),
            positions: positions.to_vec(),
        }
    }

    fn seqs(reports: &[Report]) -> Vec<u64> {
        reports.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn records_survive_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut spool = Spool::open(dir.path(), 1 << 30, 0).expect("open");
            spool
                .append(&[record(1, b""), record(2, b""), record(3, b"pos-3")])
                .expect("append");
            assert_eq!(seqs(&spool.read_from(1, 10).expect("read")), [1, 2, 3]);
            assert_eq!(seqs(&spool.read_from(3, 10).expect("read")), [3]);
            spool.ack(1);
            assert_eq!(spool.status().reports, 2);
        }
        let mut spool = Spool::open(dir.path(), 1 << 30, 1).expect("reopen");
        assert_eq!(seqs(&spool.read_from(0, 10).expect("read")), [2, 3]);
        assert_eq!(spool.last_seq(), 3);
        assert_eq!(spool.latest_positions(), Some(&(3, b"pos-3".to_vec())));
        spool.ack(3);
        spool.release(3).expect("release");
        assert_eq!(spool.status().reports, 0);
        assert!(spool.read_from(0, 10).expect("read").is_empty());
        spool
            .append(&[record(4, b"")])
            .expect("append after a full ack");
        assert_eq!(seqs(&spool.read_from(4, 10).expect("read")), [4]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = {
            let mut spool = Spool::open(dir.path(), 1 << 30, 0).expect("open");
            spool
                .append(&[record(1, b""), record(2, b"")])
                .expect("append");
            spool.segments[0].path.clone()
        };
        // A crash in the middle of appending record 3.
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 9, 9])
            .expect("torn write");
        drop(file);
        let mut spool = Spool::open(dir.path(), 1 << 30, 0).expect("reopen");
        assert_eq!(spool.status().corrupt_records, 0);
        spool.append(&[record(3, b"")]).expect("append");
        assert_eq!(seqs(&spool.read_from(1, 10).expect("read")), [1, 2, 3]);
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = {
            let mut spool = Spool::open(dir.path(), 1 << 30, 0).expect("open");
            spool
                .append(&[record(1, b""), record(2, b"")])
                .expect("append");
            spool.segments[0].path.clone()
        };
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // damage record 2's payload
        fs::write(&path, bytes).expect("write");
        let mut spool = Spool::open(dir.path(), 1 << 30, 0).expect("reopen");
        assert_eq!(spool.status().corrupt_records, 1);
        assert_eq!(seqs(&spool.read_from(1, 10).expect("read")), [1]);
    }

    #[test]
    fn segments_roll_and_the_bound_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 6 * 1024 * 1024, 0).expect("open");
        let big = vec![7u8; 512 * 1024];
        for seq in 1..=12 {
            spool.append(&[record(seq, &big)]).expect("append");
        }
        assert!(
            spool.segments.len() >= 2,
            "segments roll at {SEGMENT_BYTES} bytes"
        );
        assert!(spool.status().full);
        assert_eq!(
            seqs(&spool.read_from(1, 100).expect("read")),
            (1..=12).collect::<Vec<_>>()
        );
        spool.ack(9);
        assert!(
            spool.status().full,
            "acknowledged segments stay until released"
        );
        spool.release(9).expect("release");
        assert!(!spool.status().full);
        assert_eq!(seqs(&spool.read_from(1, 100).expect("read")), [10, 11, 12]);
    }

    #[test]
    fn a_failed_append_is_retried_whole_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 30, 0).expect("open");
        spool.append(&[record(1, b"pos-1")]).expect("append");
        // The disk fills up: every write of the active segment fails (and it cannot be cut
        // back either).
        spool.active = Some(
            OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        );
        assert!(spool.append(&[record(2, b"pos-2")]).is_err());
        assert_eq!(spool.latest_positions(), Some(&(1, b"pos-1".to_vec())));
        assert_eq!(spool.last_seq(), 1);
        // Space returns: the retry lands in a new segment, and everything reads back.
        spool.append(&[record(2, b"pos-2")]).expect("retry");
        assert_eq!(seqs(&spool.read_from(1, 10).expect("read")), [1, 2]);
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 30, 0).expect("reopen");
        assert_eq!(spool.status().corrupt_records, 0);
        assert_eq!(seqs(&spool.read_from(1, 10).expect("read")), [1, 2]);
        assert_eq!(spool.latest_positions(), Some(&(2, b"pos-2".to_vec())));
    }

    #[test]
    fn a_segment_that_cannot_be_started_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 30, 0).expect("open");
        let path = dir.path().join("spool/00000000000000000001.seg");
        std::os::unix::fs::symlink("/dev/full", &path).expect("symlink");
        assert!(spool.append(&[record(1, b"")]).is_err());
        assert!(fs::symlink_metadata(&path).is_err(), "nothing left behind");
        spool.append(&[record(1, b"")]).expect("retry");
        assert_eq!(seqs(&spool.read_from(1, 10).expect("read")), [1]);
    }

    #[test]
    fn garbage_segment_files_do_not_stop_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("spool")).expect("mkdir");
        fs::write(
            dir.path().join("spool/00000000000000000001.seg"),
            b"not a spool",
        )
        .expect("write");
        let mut spool = Spool::open(dir.path(), 1 << 30, 0).expect("open");
        assert_eq!(spool.status().corrupt_records, 1);
        spool.append(&[record(1, b"")]).expect("append");
        assert_eq!(seqs(&spool.read_from(1, 10).expect("read")), [1]);
    }
}
