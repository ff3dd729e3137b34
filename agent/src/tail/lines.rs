//! Splitting a byte stream into lines with a cap on line length.
//!
//! Lines that lie wholly inside one read chunk are handed on as slices of that chunk (no
//! copy); only the unfinished tail of a chunk is copied into the per-file `pending` buffer,
//! which never holds more than `max_line_bytes + 1` bytes.

use memchr::memchr;

/// Above this capacity the pending buffer is released after use, so that 1,000 files that
/// each once saw a 1 MiB line do not keep 1 GiB.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The unfinished line of one file.
#[derive(Debug, Default)]
pub struct LineBuf {
    /// Bytes of the unfinished line (at most `max + 1`).
    pending: Vec<u8>,
    /// The unfinished line was longer than `max + 1`: the excess was dropped.
    overflow: bool,
    /// Drop everything up to and including the next newline (start in mid-line).
    skip_to_newline: bool,
    /// Bytes dropped from over-long lines, for the stats.
    pub skipped_bytes: u64,
}

/// One line found by [`LineBuf::feed`].
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// File offset just after the line's `\n` (or after its last byte when flushed).
    pub end_offset: u64,
    pub truncated: bool,
}

impl LineBuf {
    /// Starts in the middle of a line: its rest is dropped, not delivered.
    pub fn skip_first_line(&mut self) {
        self.skip_to_newline = true;
    }

    /// Forgets the unfinished line, to read it again from its start (kept: a pending skip
    /// of the first, partial line).
    pub fn forget_partial(&mut self) {
        self.reset();
    }

    /// Whether an unfinished line is held (or being skipped).
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty() || self.overflow
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.overflow = false;
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
    }

    fn push(&mut self, bytes: &[u8], max: usize) {
        let room = (max + 1).saturating_sub(self.pending.len());
        if bytes.len() > room {
            self.pending.extend_from_slice(&bytes[..room]);
            self.overflow = true;
            self.skipped_bytes += (bytes.len() - room) as u64;
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    /// Feeds `chunk`, the bytes of the file at offsets `start..start + chunk.len()`,
    /// calling `emit` for every line completed by a `\n`. Returns the number of lines.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        start: u64,
        max: usize,
        emit: &mut impl FnMut(Line<'_>),
    ) -> u64 {
        let max = max.max(1);
        let mut pos = 0;
        let mut lines = 0;
        if self.skip_to_newline {
            match memchr(b'\n', chunk) {
                Some(i) => {
                    self.skipped_bytes += i as u64 + 1;
                    self.skip_to_newline = false;
                    pos = i + 1;
                }
                None => {
                    self.skipped_bytes += chunk.len() as u64;
                    return 0;
                }
            }
        }
        while pos < chunk.len() {
            let Some(i) = memchr(b'\n', &chunk[pos..]) else {
                self.push(&chunk[pos..], max);
                break;
            };
            let nl = pos + i;
            let end_offset = start + nl as u64 + 1;
            if self.pending.is_empty() && !self.overflow {
                let (bytes, truncated) = cap(&chunk[pos..nl], max);
                if truncated {
                    self.skipped_bytes += (nl - pos - bytes.len()) as u64;
                }
                emit(Line {
                    bytes,
                    end_offset,
                    truncated,
                });
            } else {
                self.push(&chunk[pos..nl], max);
                self.emit_pending(end_offset, max, emit);
            }
            lines += 1;
            pos = nl + 1;
        }
        lines
    }

    /// Hands on the unfinished line as a line of its own (the file will not grow any
    /// more). Returns whether there was one.
    pub fn flush(&mut self, end_offset: u64, max: usize, emit: &mut impl FnMut(Line<'_>)) -> bool {
        self.skip_to_newline = false;
        if !self.has_partial() {
            return false;
        }
        self.emit_pending(end_offset, max.max(1), emit);
        true
    }

    fn emit_pending(&mut self, end_offset: u64, max: usize, emit: &mut impl FnMut(Line<'_>)) {
        let (bytes, truncated) = if self.overflow {
            (&self.pending[..max.min(self.pending.len())], true)
        } else {
            cap(&self.pending, max)
        };
        if truncated {
            // Covers the one byte kept beyond `max` (to tell a trailing `\r`) as well.
            self.skipped_bytes += (self.pending.len() - bytes.len()) as u64;
        }
        emit(Line {
            bytes,
            end_offset,
            truncated,
        });
        self.reset();
    }
}

/// Trims a trailing `\r` and caps at `max` bytes.
fn cap(line: &[u8], max: usize) -> (&[u8], bool) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max {
        (&line[..max], true)
    } else {
        (line, false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]], max: usize) -> (Vec<(Vec<u8>, u64, bool)>, LineBuf) {
        let mut lb = LineBuf::default();
        let mut out = Vec::new();
        let mut off = 0u64;
        for c in chunks {
            lb.feed(c, off, max, &mut |l: Line<'_>| {
                out.push((l.bytes.to_vec(), l.end_offset, l.truncated))
            });
            off += c.len() as u64;
        }
        (out, lb)
    }

    #[test]
    fn splits_and_trims_crlf() {
        let (out, lb) = run(&[b"a\r\nbb\n\nccc"], 100);
        assert_eq!(
            out,
            vec![
                (b"a".to_vec(), 3, false),
                (b"bb".to_vec(), 6, false),
                (b"".to_vec(), 7, false)
            ]
        );
        assert!(lb.has_partial(), "ccc is held until its newline");
    }

    #[test]
    fn partial_line_completed_by_later_chunks() {
        let (out, lb) = run(&[b"hel", b"lo wo", b"rld\r", b"\nx"], 100);
        assert_eq!(out, vec![(b"hello world".to_vec(), 13, false)]);
        assert!(lb.has_partial());
    }

    #[test]
    fn long_lines_are_capped_across_chunks() {
        let (out, lb) = run(&[b"0123456789", b"abcdef\nshort\n0123", b"456\n"], 4);
        assert_eq!(
            out,
            vec![
                (b"0123".to_vec(), 17, true),
                (b"shor".to_vec(), 23, true),
                (b"0123".to_vec(), 31, true),
            ]
        );
        assert_eq!(lb.skipped_bytes, 12 + 1 + 3);
        assert!(!lb.has_partial());
    }

    #[test]
    fn exactly_max_with_crlf_is_not_truncated() {
        let (out, _) = run(&[b"abc", b"d\r\n"], 4);
        assert_eq!(out, vec![(b"abcd".to_vec(), 6, false)]);
        let (out, _) = run(&[b"abcd\r\n"], 4);
        assert_eq!(out, vec![(b"abcd".to_vec(), 6, false)]);
    }

    #[test]
    fn garbage_and_invalid_utf8_pass_through() {
        let junk: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let mut lb = LineBuf::default();
        let mut n = 0;
        let mut total = 0;
        lb.feed(&junk, 0, 100, &mut |l: Line<'_>| {
            n += 1;
            total = l.end_offset;
        });
        // b'\n' sits at 10 + 256k: 12 newlines, the last one at 2826.
        assert_eq!(n, 12);
        assert_eq!(total, 2827);
    }

    #[test]
    fn flush_hands_on_the_unterminated_line() {
        let (_, mut lb) = run(&[b"a\nlast"], 100);
        let mut got = Vec::new();
        assert!(lb.flush(6, 100, &mut |l: Line<'_>| {
            got.push((l.bytes.to_vec(), l.end_offset))
        }));
        assert_eq!(got, vec![(b"last".to_vec(), 6)]);
        assert!(!lb.flush(6, 100, &mut |_| {}));
    }

    #[test]
    fn skip_first_line_drops_the_fragment() {
        let mut lb = LineBuf::default();
        lb.skip_first_line();
        let mut got = Vec::new();
        lb.feed(b"ment\nwhole\n", 100, 100, &mut |l: Line<'_>| {
            got.push(l.bytes.to_vec())
        });
        assert_eq!(got, vec![b"whole".to_vec()]);
    }
}
