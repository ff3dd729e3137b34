//! The tailing engine against the real `logrotate -f` (create and copytruncate, with and
//! without compress / delaycompress), a writer appending numbered lines fast, and the
//! tailer restarting from stored checkpoints (clean stops and crashes that forget the lines
//! delivered since the last store) while rotations happen.
//!
//! Every numbered line found on disk afterwards (current and rotated files, `.gz`
//! decompressed) must have been delivered exactly once; in create mode every line written
//! must have been delivered. (copytruncate loses, on disk, the lines written between
//! logrotate's copy and its truncate; the tailer may or may not have read those.)
//!
//! The run always ends, whatever the speed of the machine: the writer writes a fixed number
//! of lines at a capped rate; rotations and restarts happen at fixed points of the writer's
//! progress (not of the clock), so every scenario rotates and restarts (and crashes) while
//! lines are being written, on a fast machine as on a starved one; the tailer reads a
//! bounded amount per round; every wait has a deadline and says what it waited for.
//!
//! Needs the `logrotate` program (Debian package `logrotate`). Without it the test is
//! skipped with a message, unless `CI` is set: then it fails.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/wait.rs"]
mod wait;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use vigil_agent::tail::{
    Checkpoints, FileKey, LineSink, SourceConfig, StartAt, Tailer, TailerOptions,
};

/// Lines the writer writes in one scenario (about 80 bytes each: some 4 MB on disk, copies
/// and all).
const LINES: u64 = 48_000;
/// Lines per burst; the writer sleeps [`PAUSE`] between bursts, so it writes at most
/// 100 lines / 2 ms = 50,000 lines a second, fast enough for the reader to lag behind now
/// and then, never so fast that it cannot catch up.
const BURST: u64 = 100;
const PAUSE: Duration = Duration::from_millis(2);
/// Rotations, at 1/4, 2/4 and 3/4 of the lines written.
const ROTATIONS: u64 = 3;
/// Restarts of the tailer, at every tenth of the lines written; every third is a crash.
const RESTARTS: u64 = 9;
/// Reads of at most 1 MiB per round of the main loop: a writer faster than the reader
/// cannot keep the loop from seeing that it is done.
const READS_PER_ROUND: usize = 32;
/// The longest a scenario may take (it takes about two seconds on an idle machine).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

fn logrotate() -> Option<PathBuf> {
    for p in [
        "/usr/sbin/logrotate",
        "/sbin/logrotate",
        "/usr/bin/logrotate",
    ] {
        if Path::new(p).exists() {
            return Some(p.into());
        }
    }
    Command::new("logrotate")
        .arg("--version")
        .output()
        .ok()
        .map(|_| "logrotate".into())
}

#[derive(Default)]
struct Sink {
    lines: Vec<u64>,
    /// The stream each line came from, and the tailer's run (restarts so far).
    from: Vec<(FileKey, u64)>,
    run: u64,
    fragments: u64,
}

impl LineSink for Sink {
    fn line(&mut self, _: usize, key: FileKey, line: &[u8], _: u64, truncated: bool) {
        assert!(!truncated);
        match number(line) {
            Some(n) => {
                self.lines.push(n);
                self.from.push((key, self.run));
            }
            None => self.fragments += 1,
        }
    }
    fn file_done(&mut self, _: usize, _: FileKey) {}
}

/// The number of a complete line. The unterminated last line of a file that is finished
/// (a copytruncate whose copy does not hold it) is handed on as the fragment it is; it must
/// not count as the line whose number is a prefix of its own.
fn number(line: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(line).ok()?;
    let n: u64 = s.strip_prefix("n=")?.split(' ').next()?.parse().ok()?;
    s.ends_with(&format!(" message number {n}")).then_some(n)
}

/// Appends [`LINES`] numbered lines in bursts of [`BURST`] with a pause after each, reopening
/// the file when its path holds a new inode (what an application does on logrotate's
/// postrotate signal). `written` is the number of lines written so far; `stop` ends it early
/// (the test failed).
fn writer(path: PathBuf, stop: Arc<AtomicBool>, written: Arc<AtomicU64>) {
    let open = |p: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    };
    let mut f = open(&path);
    let mut ino = f.metadata().unwrap().ino();
    let mut n = 0u64;
    while n < LINES && !stop.load(Ordering::Relaxed) {
        for _ in 0..BURST.min(LINES - n) {
            let line =
                format!("n={n} 2026-11-23T10:00:00.000Z INFO some.Logger - message number {n}\n");
            f.write_all(line.as_bytes()).unwrap();
            n += 1;
        }
        written.store(n, Ordering::Release);
        match fs::metadata(&path) {
            Ok(m) if m.ino() == ino => {}
            _ => {
                f = open(&path);
                ino = f.metadata().unwrap().ino();
            }
        }
        thread::sleep(PAUSE);
    }
}

/// Sets `stop` when dropped: a failing scenario stops its writer and rotator threads.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Reads at most [`READS_PER_ROUND`] times; returns whether data is left.
fn read_round(tailer: &mut Tailer, max_bytes: usize, sink: &mut Sink) -> bool {
    for _ in 0..READS_PER_ROUND {
        if !tailer.read(max_bytes, sink).more {
            return false;
        }
    }
    true
}

fn on_disk(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("app.log") {
            continue;
        }
        let mut data = Vec::new();
        if name.ends_with(".gz") {
            flate2::read::MultiGzDecoder::new(fs::File::open(&p).unwrap())
                .read_to_end(&mut data)
                .unwrap();
        } else {
            data = fs::read(&p).unwrap();
        }
        out.extend(data.split(|&b| b == b'\n').filter_map(number));
    }
    out
}

/// One run of the writer, logrotate and the tailer. With `glob`, the tailer follows
/// `app.log*` minus `*.gz`, so every rotated generation (a renamed file, or a copytruncate
/// copy, which is data already read from `app.log`) matches too; rotations and crashes are
/// then four times as many, a crash soon after each rotation (a copy found on restart,
/// an inode freed by a deleted generation and taken by the next copy).
fn scenario(logrotate: &Path, mode: &str, compress: bool, delay: bool, glob: bool) {
    let (rotations, restarts_planned, crash_every) = if glob {
        (4 * ROTATIONS, 4 * RESTARTS, 2)
    } else {
        (ROTATIONS, RESTARTS, 3)
    };
    // `RUST_LOG=vigil_agent=debug` shows what the tailer did.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let conf = dir.path().join("rotate.conf");
    let state = dir.path().join("rotate.state");
    let mut opts = vec![mode, "rotate 100", "missingok", "nomail"];
    if compress {
        opts.push("compress");
    }
    if delay {
        opts.push("delaycompress");
    }
    fs::write(
        &conf,
        format!("{} {{\n    {}\n}}\n", log.display(), opts.join("\n    ")),
    )
    .unwrap();
    fs::write(&log, b"").unwrap();

    let label = format!("{mode} compress={compress} delaycompress={delay} glob={glob}");
    let stop = Arc::new(AtomicBool::new(false));
    // A failing scenario (a panic below) stops the writer and the rotator.
    let _stop = StopOnDrop(stop.clone());
    let written = Arc::new(AtomicU64::new(0));
    let mut writer_thread = Some({
        let (log, stop, written) = (log.clone(), stop.clone(), written.clone());
        thread::spawn(move || writer(log, stop, written))
    });
    // Rotates at fixed points of the writer's progress; returns the lines written at each
    // rotation.
    let mut rotator = Some({
        let (lr, conf, state) = (logrotate.to_path_buf(), conf.clone(), state.clone());
        let (stop, written) = (stop.clone(), written.clone());
        thread::spawn(move || {
            let mut at_lines = Vec::new();
            for k in 1..=rotations {
                let at = LINES * k / (rotations + 1);
                wait::wait_until_polling(
                    Duration::from_millis(1),
                    SCENARIO_TIMEOUT,
                    format_args!("the writer to reach line {at} (rotation {k})"),
                    || stop.load(Ordering::Relaxed) || written.load(Ordering::Acquire) >= at,
                );
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                at_lines.push(written.load(Ordering::Acquire));
                let out = wait::output_within(
                    Command::new(&lr).arg("-f").arg("-s").arg(&state).arg(&conf),
                    None,
                    Duration::from_secs(60),
                );
                assert!(
                    out.status.success(),
                    "logrotate failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            at_lines
        })
    });
    let mut rotated_at = Vec::new();

    let cfg = if glob {
        SourceConfig {
            start_at: StartAt::Beginning,
            exclude: vec!["*.gz".to_owned()],
            ..SourceConfig::new([format!("{}*", log.display())])
        }
    } else {
        SourceConfig {
            start_at: StartAt::Beginning,
            ..SourceConfig::new([log.display().to_string()])
        }
    };
    let topts = TailerOptions {
        rotated_idle: Duration::from_millis(300),
        deleted_idle: Duration::from_millis(300),
        deleted_max: Duration::from_secs(30),
    };
    let new = |cp: Checkpoints| Tailer::with_options(vec![cfg.clone()], cp, topts).unwrap();
    let mut tailer = new(Checkpoints::empty());
    let mut sink = Sink::default();
    let mut restarts = 0u64;
    let started = Instant::now();
    loop {
        // Whether everything that happens to the files has happened, before this round's
        // scan and reads: if they then leave nothing unread, nothing is left to come.
        if rotator.as_ref().is_some_and(|r| r.is_finished()) {
            let r = rotator.take().unwrap();
            rotated_at = r.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
        if writer_thread.as_ref().is_some_and(|w| w.is_finished()) {
            let w = writer_thread.take().unwrap();
            w.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
        let settled = rotator.is_none() && writer_thread.is_none() && restarts == restarts_planned;
        tailer.scan().unwrap();
        let more = read_round(&mut tailer, 1 << 20, &mut sink);
        // Done once all is read and the rotated files are let go (after `rotated_idle`).
        if settled && !more && !tailer.files().iter().any(|f| f.rotated) {
            break;
        }
        assert!(
            started.elapsed() < SCENARIO_TIMEOUT,
            "{label}: timed out after {SCENARIO_TIMEOUT:?} waiting for the writer to finish \
             and the tailer to read every line and let go of the rotated files: written {} of \
             {LINES}, rotations at {rotated_at:?} (rotator running: {}), restarts {restarts} \
             of {restarts_planned}, unread data left: {more}, delivered {}, files tracked {}",
            written.load(Ordering::Acquire),
            rotator.is_some(),
            sink.lines.len(),
            tailer.files().len()
        );
        // Restarts at every tenth of the lines written, whatever the speed of the machine.
        if restarts < restarts_planned
            && written.load(Ordering::Acquire) >= LINES * (restarts + 1) / (restarts_planned + 1)
        {
            restarts += 1;
            let cp = tailer.checkpoints();
            cp.store(data.path()).unwrap();
            let committed = sink.lines.len();
            if restarts.is_multiple_of(crash_every) {
                // Crash: lines delivered after the store are forgotten (never acknowledged).
                read_round(&mut tailer, 1 << 16, &mut sink);
                sink.lines.truncate(committed);
                sink.from.truncate(committed);
            }
            drop(tailer);
            tailer = new(Checkpoints::load(data.path()).unwrap());
            sink.run = restarts;
            eprintln!(
                "{label}: run {restarts} starts (after a {}) at line {} written, {committed} delivered",
                if restarts.is_multiple_of(crash_every) {
                    "crash"
                } else {
                    "stop"
                },
                written.load(Ordering::Acquire)
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    let total = written.load(Ordering::Acquire);

    let mut delivered: HashMap<u64, u32> = HashMap::new();
    for n in &sink.lines {
        *delivered.entry(*n).or_default() += 1;
    }
    let mut dups: Vec<_> = delivered
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    dups.sort_unstable();
    // Where the first and the last were delivered from: (stream, run) each time.
    let dup_from: Vec<(u64, Vec<(FileKey, u64)>)> = [dups.first(), dups.last()]
        .into_iter()
        .flatten()
        .map(|&d| {
            let from = sink
                .lines
                .iter()
                .zip(&sink.from)
                .filter(|(n, _)| **n == d)
                .map(|(_, f)| *f)
                .collect();
            (d, from)
        })
        .collect();
    let dup_count = dups.len();
    dups.truncate(10);
    let disk = on_disk(dir.path());
    let missing: Vec<_> = disk
        .iter()
        .filter(|n| !delivered.contains_key(n))
        .take(10)
        .collect();
    eprintln!(
        "{label}: written {total}, on disk {}, delivered {} (+{} fragments), rotations at \
         lines {rotated_at:?}, {restarts} restarts ({} crashes), {:.1} s",
        disk.len(),
        sink.lines.len(),
        sink.fragments,
        restarts / crash_every,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(total, LINES, "{label}: the writer stopped early");
    assert_eq!(
        rotated_at.len() as u64,
        rotations,
        "{label}: rotations at {rotated_at:?}"
    );
    assert!(
        dups.is_empty(),
        "{label}: {dup_count} lines delivered twice, the first ones: {dups:?}; (stream, run) \
         of the first and the last: {dup_from:?}"
    );
    assert!(
        missing.is_empty(),
        "{label}: on disk but not delivered: {missing:?}"
    );
    if mode == "create" {
        let lost: Vec<_> = (0..total)
            .filter(|n| !delivered.contains_key(n))
            .take(10)
            .collect();
        assert!(
            lost.is_empty(),
            "{label}: written but not delivered: {lost:?}"
        );
    }
}

fn with_logrotate(f: impl Fn(&Path)) {
    match logrotate() {
        Some(lr) => f(&lr),
        None if std::env::var_os("CI").is_some() => {
            panic!("logrotate is not installed (Debian package `logrotate`); CI must install it")
        }
        None => eprintln!("SKIPPED: logrotate is not installed (apt-get install logrotate)"),
    }
}

#[test]
fn logrotate_create() {
    with_logrotate(|lr| {
        scenario(lr, "create", false, false, false);
        scenario(lr, "create", true, false, false);
        scenario(lr, "create", true, true, false);
    });
}

#[test]
fn logrotate_copytruncate() {
    with_logrotate(|lr| {
        scenario(lr, "copytruncate", false, false, false);
        scenario(lr, "copytruncate", true, false, false);
        scenario(lr, "copytruncate", true, true, false);
    });
}

/// `app.log*` minus `*.gz`: the rotated files match the glob; each line once all the same.
#[test]
fn logrotate_with_a_glob_matching_the_rotated_files() {
    with_logrotate(|lr| {
        scenario(lr, "create", true, true, true);
        scenario(lr, "copytruncate", false, false, true);
        scenario(lr, "copytruncate", true, true, true);
    });
}
