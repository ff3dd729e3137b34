//! Assembling physical lines into log events: an explicit state machine, one per file.
//!
//! States: *idle* (no pending event) and *pending* (an event is being collected). A line that
//! starts a record completes the pending event and opens the next; any other line attaches to
//! the pending event (or opens one without a record start when idle) unless it ends a printed
//! trace (below). A pending event also completes when the file goes quiet
//! ([`EventAssembler::flush_idle`]) or on demand ([`EventAssembler::flush`]).
//!
//! A pending event also tracks where it stands in a printed trace ([`TraceState`]), because
//! `printStackTrace()` output (`catalina.out`, `nohup.out`) carries no record starts: traces
//! follow each other and plain `System.out` lines with nothing in between. An exception
//! header after a trace's frames (not `Caused by:`/`Suppressed:`), after a header without a
//! message, or in the first column after a header with one, and any other line after frames
//! that is not a frame, a cause, an elision (`... N more`) or blank, completes the event and
//! opens the next. In an event opened by a line that is not a record start, an exception
//! header opens the next event too. Lines between a header with a message and its first frame
//! continue the message (`junit.framework.ComparisonFailure: expected:<…` over several lines).
//! A configured `event_start` turns this off: the pattern alone decides.

use std::time::{Duration, Instant};

use super::analyzer::Analyzer;
use super::exception::{self, ExceptionInfo, Scratch};
use super::json::{self, Scalar};
use super::record::{self, Kind, Level, RecordStart};
use super::time::{self, Clock};
use super::trace::{self, LineShape};

/// One log event: a record's first line and its continuation lines.
///
/// Borrows the assembler's buffers: valid only during the callback.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// UTC Unix seconds: the record's own timestamp, or the `read_at` of its first line when
    /// it has none that can be read.
    pub time: i64,
    /// Did `time` come from the record itself?
    pub timestamped: bool,
    /// The record's level.
    pub level: Level,
    /// Physical lines in the event (at least 1).
    pub lines: u32,
    /// 1-based number of the event's first line among the lines pushed to this assembler
    /// (the line number in the file when it was read from the start).
    pub line_number: u64,
    /// Was some of the event's text dropped for the size cap? (It is still one event.)
    pub truncated: bool,
    /// The first line (cut to the size cap).
    pub first_line: &'a [u8],
    /// The kept text of the event, lines joined by `\n`.
    pub text: &'a [u8],
    /// The exception the event holds, if any.
    pub exception: Option<&'a ExceptionInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonState {
    /// Not a JSON record.
    No,
    /// A JSON record; `json_text` holds its stack trace.
    Stack,
    /// A JSON record without a stack trace; `json_text` holds its message.
    Message,
}

/// Where a pending event stands in a printed stack trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TraceState {
    /// No exception header yet (a record's message, or plain lines).
    Text,
    /// After a header or cause with a message, before its first frame: lines may continue
    /// the message.
    Message,
    /// After a header or cause without a message (nothing can continue it), before a frame.
    Bare,
    /// After a frame or an elision (`... N more`): only frames, causes and elisions continue
    /// the trace.
    Frames,
}

impl TraceState {
    /// The state of an event whose first line has `shape` and is not a record start.
    fn first(shape: LineShape) -> TraceState {
        match shape {
            LineShape::Header { message, .. } | LineShape::Cause { message } => {
                Self::header(message)
            }
            LineShape::Frame => TraceState::Frames,
            LineShape::Blank | LineShape::Elision | LineShape::Other => TraceState::Text,
        }
    }

    fn header(message: bool) -> TraceState {
        if message {
            TraceState::Message
        } else {
            TraceState::Bare
        }
    }

    /// Does a line of `shape` (not a record start) end the event instead of joining it?
    /// `recorded`: the event was opened by a record start.
    fn ends_before(self, shape: LineShape, recorded: bool) -> bool {
        match (self, shape) {
            (_, LineShape::Blank) => false,
            (TraceState::Text, LineShape::Header { .. }) => !recorded,
            (TraceState::Text, _) => false,
            (TraceState::Message, LineShape::Header { margin, .. }) => margin,
            (TraceState::Message, _) => false,
            (
                TraceState::Bare | TraceState::Frames,
                LineShape::Frame | LineShape::Elision | LineShape::Cause { .. },
            ) => false,
            (TraceState::Bare | TraceState::Frames, _) => true,
        }
    }

    /// The state after a line of `shape` joined the event.
    fn after(self, shape: LineShape) -> TraceState {
        match shape {
            LineShape::Frame => TraceState::Frames,
            LineShape::Cause { message } => Self::header(message),
            LineShape::Header { message, .. } if self == TraceState::Text => Self::header(message),
            LineShape::Elision if self != TraceState::Text => TraceState::Frames,
            _ => self,
        }
    }
}

/// What is known of the pending event.
#[derive(Debug, Clone, Copy)]
struct Pending {
    time: i64,
    timestamped: bool,
    level: Level,
    lines: u32,
    line_number: u64,
    truncated: bool,
    first_len: usize,
    kind: Kind,
    json: JsonState,
    /// The first line names `Exception`, `Error` or `Throwable`.
    hint: bool,
    /// A continuation line is a stack frame.
    has_frames: bool,
    /// Opened by a record start (not by a plain line).
    recorded: bool,
    trace: TraceState,
    /// Frames still kept after a `Caused by:` line once over the size cap.
    keep_after_cause: u8,
    last_end: u64,
}

/// Groups one file's lines into events. Build one per file with [`EventAssembler::new`]; feed
/// it every line in order.
///
/// Invariant: every pushed line belongs to exactly one event handed out (after a flush), and
/// [`committed_offset`](EventAssembler::committed_offset) never passes a line of an event not
/// yet handed out.
#[derive(Debug)]
pub struct EventAssembler {
    buf: Vec<u8>,
    pending: Option<Pending>,
    committed: Option<u64>,
    line_number: u64,
    idle_mark: u64,
    idle_since: Option<Instant>,
    clock: Clock,
    scratch: Scratch,
    exception: ExceptionInfo,
    json_text: String,
}

/// Frames kept after each `Caused by:` once an event is over its size cap.
const FRAMES_AFTER_CAUSE: u8 = 4;

impl EventAssembler {
    /// A new assembler for one file of `analyzer`'s `[[logs]]` entry.
    pub fn new(analyzer: &Analyzer) -> EventAssembler {
        EventAssembler {
            buf: Vec::with_capacity(1024),
            pending: None,
            committed: None,
            line_number: 0,
            idle_mark: 0,
            idle_since: None,
            clock: Clock::new(analyzer.zone.clone()),
            scratch: Scratch::default(),
            exception: ExceptionInfo::default(),
            json_text: String::new(),
        }
    }

    /// Feeds one physical line (without its newline; a trailing `\r` is ignored).
    /// `end_offset` is the byte offset just after the line's newline in the file; `read_at`
    /// the Unix seconds when it was read (the event's time when the record has no readable
    /// timestamp). Events completed by this line are passed to `out`.
    pub fn push_line(
        &mut self,
        analyzer: &Analyzer,
        line: &[u8],
        end_offset: u64,
        read_at: i64,
        out: &mut impl FnMut(Event<'_>),
    ) {
        self.line_number += 1;
        let line = match line {
            [rest @ .., b'\r'] => rest,
            l => l,
        };
        if let Some(p) = &mut self.pending
            && p.kind == Kind::JulHeader
            && p.lines == 1
            && let Some(level) = record::jul_level_line(line)
        {
            p.level = level;
            p.hint |= analyzer.hints.is_match(line);
            self.attach(analyzer, line, end_offset, LineShape::Other);
            return;
        }
        let mut start = record::record_start(analyzer, line);
        if start.is_none()
            && analyzer.config.event_start.is_none()
            && self.pending.is_some_and(|p| p.kind == Kind::Json)
            && json::looks_like_json(line)
        {
            // In a JSON-lines log every object is a record, whatever its keys.
            start = Some(RecordStart {
                civil: None,
                time_of_day: None,
                level: Level::Other,
                kind: Kind::Json,
            });
        }
        if let Some(start) = start {
            if self.pending.is_some() {
                self.complete(analyzer, out);
            }
            self.begin(analyzer, line, Ok(start), end_offset, read_at);
            return;
        }
        let shape = trace::shape(line);
        match self.pending {
            Some(p)
                if analyzer.config.event_start.is_some()
                    || !p.trace.ends_before(shape, p.recorded) =>
            {
                self.attach(analyzer, line, end_offset, shape);
            }
            Some(_) => {
                self.complete(analyzer, out);
                self.begin(analyzer, line, Err(shape), end_offset, read_at);
            }
            None => self.begin(analyzer, line, Err(shape), end_offset, read_at),
        }
    }

    /// Completes the pending event once no line has arrived for at least `idle`, measured
    /// from the first call that saw the current line count (call it periodically, e.g. every
    /// 100 ms to 1 s; `now` is normally `Instant::now()`).
    pub fn flush_idle(
        &mut self,
        analyzer: &Analyzer,
        now: Instant,
        idle: Duration,
        out: &mut impl FnMut(Event<'_>),
    ) {
        if self.pending.is_none() {
            self.idle_since = None;
            return;
        }
        match self.idle_since {
            Some(since) if self.idle_mark == self.line_number => {
                if now.saturating_duration_since(since) >= idle {
                    self.complete(analyzer, out);
                    self.idle_since = None;
                }
            }
            _ => {
                self.idle_mark = self.line_number;
                self.idle_since = Some(now);
            }
        }
    }

    /// Completes the pending event now (end of file, shutdown).
    pub fn flush(&mut self, analyzer: &Analyzer, out: &mut impl FnMut(Event<'_>)) {
        if self.pending.is_some() {
            self.complete(analyzer, out);
        }
    }

    /// Byte offset just after the last line of the last completed event: every line before
    /// it has been handed out in an event. `None` until the first event completes. Persist
    /// this as the file's checkpoint; lines after it belong to the pending event.
    pub fn committed_offset(&self) -> Option<u64> {
        self.committed
    }

    /// Is an event pending (lines pushed but not yet handed out)?
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Opens an event with `line`: a record start, or (`Err`) a line of that shape that
    /// starts none.
    fn begin(
        &mut self,
        an: &Analyzer,
        line: &[u8],
        start: Result<RecordStart, LineShape>,
        end_offset: u64,
        read_at: i64,
    ) {
        let cap = an.max_event_bytes;
        self.buf.clear();
        let kept = line.len().min(cap);
        self.buf.extend_from_slice(&line[..kept]);
        let recorded = start.is_ok();
        let trace = match start {
            Ok(_) => TraceState::Text,
            Err(shape) => TraceState::first(shape),
        };
        let start = start.unwrap_or(RecordStart {
            civil: None,
            time_of_day: None,
            level: Level::Other,
            kind: Kind::Text,
        });
        let (time, timestamped) = match (&start.civil, start.time_of_day) {
            (Some(c), _) => (self.clock.unix(c), true),
            (None, Some(tod)) => (self.clock.at_time_of_day(tod, read_at), true),
            (None, None) => (read_at, false),
        };
        let mut p = Pending {
            time,
            timestamped,
            level: start.level,
            lines: 1,
            line_number: self.line_number,
            truncated: kept < line.len(),
            first_len: kept,
            kind: start.kind,
            json: JsonState::No,
            hint: false,
            has_frames: false,
            recorded,
            trace,
            keep_after_cause: 0,
            last_end: end_offset,
        };
        match start.kind {
            Kind::Json => self.begin_json(line, &mut p),
            Kind::Text | Kind::JulHeader => p.hint = an.hints.is_match(line),
        }
        self.pending = Some(p);
    }

    /// Reads a JSON record's time, level and stack trace (or message) from the whole line,
    /// whatever the size cap.
    fn begin_json(&mut self, line: &[u8], p: &mut Pending) {
        let Some(rec) = json::parse(line) else {
            // Not valid JSON after all: a text line.
            p.kind = Kind::Text;
            p.level = record::scan_level(line);
            p.hint = true;
            return;
        };
        match &rec.time {
            Some(Scalar::Str(s)) => {
                if let Some((c, _)) = time::parse_iso(s.as_bytes()) {
                    p.time = self.clock.unix(&c);
                    p.timestamped = true;
                }
            }
            Some(Scalar::Num(n)) if n.is_finite() && *n > 0.0 => {
                // Epoch milliseconds (logstash `timestamp` as number) or seconds.
                let secs = if *n > 1e11 { *n / 1000.0 } else { *n };
                p.time = secs.floor() as i64;
                p.timestamped = true;
            }
            _ => {}
        }
        if let Some(l) = rec
            .level
            .as_deref()
            .and_then(|l| Level::from_word(l.as_bytes()))
        {
            p.level = l;
        }
        self.json_text.clear();
        if let Some(st) = rec.stack_trace.as_deref().filter(|s| !s.trim().is_empty()) {
            self.json_text.push_str(st);
            p.json = JsonState::Stack;
        } else if let Some(ty) = rec.error_type.as_deref().filter(|s| !s.trim().is_empty()) {
            // ECS without the trace: the class (and message) alone.
            self.json_text.push_str(ty.trim());
            if let Some(m) = rec.error_message.as_deref() {
                self.json_text.push_str(": ");
                self.json_text
                    .push_str(m.lines().next().unwrap_or_default());
            }
            p.json = JsonState::Stack;
        } else if let Some(m) = rec.message.as_deref() {
            self.json_text.push_str(m);
            p.json = JsonState::Message;
        } else {
            p.json = JsonState::Message;
        }
    }

    fn attach(&mut self, an: &Analyzer, line: &[u8], end_offset: u64, shape: LineShape) {
        let Some(p) = &mut self.pending else {
            return;
        };
        p.lines = p.lines.saturating_add(1);
        p.last_end = end_offset;
        let t = trace::trim_start(line);
        let frame = shape == LineShape::Frame;
        p.has_frames |= frame;
        p.trace = p.trace.after(shape);
        let cap = an.max_event_bytes;
        if self.buf.len() + 1 + line.len() <= cap {
            self.buf.push(b'\n');
            self.buf.extend_from_slice(line);
            return;
        }
        p.truncated = true;
        // Over the cap: the event stays one event; keep only what names the rest of the
        // cause chain (each `Caused by:` line and its top frames), within an eighth more.
        let keep = if t.starts_with(b"Caused by: ") {
            p.keep_after_cause = FRAMES_AFTER_CAUSE;
            true
        } else if frame && p.keep_after_cause > 0 {
            p.keep_after_cause -= 1;
            true
        } else {
            false
        };
        if keep && self.buf.len() + 1 + line.len() <= cap + cap / 8 {
            self.buf.push(b'\n');
            self.buf.extend_from_slice(line);
        } else if !keep && self.buf.len() < cap {
            // A long line reaching over the cap: keep its start.
            let room = cap - self.buf.len();
            if room > 1 {
                self.buf.push(b'\n');
                self.buf
                    .extend_from_slice(&line[..(room - 1).min(line.len())]);
            }
        }
    }

    fn complete(&mut self, an: &Analyzer, out: &mut impl FnMut(Event<'_>)) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let mut found = false;
        if p.json != JsonState::No {
            let text = self.json_text.as_bytes();
            found = (p.json == JsonState::Stack || an.hints.is_match(text))
                && exception::analyze(an, text, &mut self.scratch, &mut self.exception);
        }
        if !found
            && (p.has_frames
                || p.hint
                || (p.lines > 1 && an.hints.is_match(&self.buf[p.first_len..])))
        {
            found = exception::analyze(an, &self.buf, &mut self.scratch, &mut self.exception);
        }
        out(Event {
            time: p.time,
            timestamped: p.timestamped,
            level: p.level,
            lines: p.lines,
            line_number: p.line_number,
            truncated: p.truncated,
            first_line: &self.buf[..p.first_len],
            text: &self.buf,
            exception: found.then_some(&self.exception),
        });
        self.committed = Some(p.last_end);
    }
}
