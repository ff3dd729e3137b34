//! Many log files: the agent follows 10,000 idle files for a small share of one core and a
//! handful of file descriptors (idle files are held closed and found again by device, inode
//! and head when they grow), and under a soft descriptor limit of 1,024 it follows 2,000
//! files by turns instead of running out of descriptors.
//!
//! The first tests drive the tailing engine as a library with files closed as soon as they
//! are idle and a descriptor budget of one or two files, through rotation, copytruncate,
//! truncation, deletion and restarts: every line is delivered exactly once. The last two run
//! the real `vigil-agent` binary and read its CPU time from `/proc/PID/stat` and its open
//! descriptors from `/proc/PID/fd`.
//!
//! Every wait has a deadline and says what it waited for; the writers write a fixed number
//! of lines.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/wait.rs"]
mod wait;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vigil_agent::tail::{
    Checkpoints, FileKey, LineSink, SourceConfig, StartAt, Tailer, TailerOptions,
};

// ---------------------------------------------------------------------------------------
// The engine with idle files closed at once and a budget of one or two descriptors.

#[derive(Default)]
struct Sink {
    lines: Vec<String>,
}

impl LineSink for Sink {
    fn line(&mut self, _: usize, _: FileKey, line: &[u8], _: u64, truncated: bool) {
        assert!(!truncated);
        self.lines.push(String::from_utf8_lossy(line).into_owned());
    }
    fn file_done(&mut self, _: usize, _: FileKey) {}
}

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// A tailer over `dir/*.log` that closes every file as soon as it has nothing to read and
/// holds at most `max_open` open.
fn closing_tailer(dir: &Path, cp: Checkpoints, max_open: usize) -> Tailer {
    let cfg = SourceConfig {
        start_at: StartAt::Beginning,
        ..SourceConfig::new([format!("{}/*.log", dir.display())])
    };
    let opts = TailerOptions {
        rotated_idle: Duration::ZERO,
        deleted_idle: Duration::ZERO,
        deleted_max: Duration::from_secs(60),
    };
    let mut t = Tailer::with_options(vec![cfg], cp, opts).unwrap();
    t.set_idle_close(Duration::ZERO);
    t.set_max_open(max_open);
    t
}

/// Scans and reads until nothing is left (bounded), checking the budget after every read.
fn pump(t: &mut Tailer, sink: &mut Sink, budget: usize) {
    for _ in 0..3 {
        t.scan().unwrap();
        let mut reads = 0;
        loop {
            let more = t.read(budget, sink).more;
            // Rotated, deleted and copied files being finished stay open whatever the
            // budget (a deleted file can be read through its descriptor only).
            let d = t.descriptors();
            let finishing = t.files().iter().filter(|f| f.rotated).count();
            assert!(
                d.open <= d.max_open.max(finishing),
                "{} files open ({finishing} being finished), the budget is {}",
                d.open,
                d.max_open
            );
            if !more {
                break;
            }
            reads += 1;
            assert!(
                reads < 100_000,
                "the tailer still says `more` of still files"
            );
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn files_take_turns_within_a_tiny_descriptor_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for f in 0..50 {
        let mut text = String::new();
        for n in 0..3 {
            let line = format!("file {f:02} line {n}");
            text.push_str(&line);
            text.push('\n');
            want.push(line);
        }
        append(&dir.path().join(format!("f{f:02}.log")), &text);
    }
    // Five files bigger than one read chunk (128 KiB): they stay open across reads.
    for f in 0..5 {
        let mut text = String::new();
        for n in 0..4000 {
            let line = format!("big {f} line {n:05} {}", "y".repeat(40));
            text.push_str(&line);
            text.push('\n');
            want.push(line);
        }
        append(&dir.path().join(format!("big{f}.log")), &text);
    }
    let mut t = closing_tailer(dir.path(), Checkpoints::empty(), 2);
    let mut sink = Sink::default();
    pump(&mut t, &mut sink, 64 * 1024);
    assert_eq!(sorted(sink.lines.clone()), sorted(want.clone()));
    let d = t.descriptors();
    assert_eq!(d.files, 55);
    assert_eq!(d.open, 0, "idle files are closed");
    assert!(d.limited, "55 files, 2 descriptors: files take turns");
    assert!(t.stats().fd_limit_hits > 0, "some opens waited");

    // New data in closed files is found by the scan and read, each line once.
    for f in (0..50).step_by(5) {
        let line = format!("file {f:02} line late");
        append(
            &dir.path().join(format!("f{f:02}.log")),
            &format!("{line}\n"),
        );
        want.push(line);
    }
    pump(&mut t, &mut sink, 64 * 1024);
    assert_eq!(sorted(sink.lines.clone()), sorted(want.clone()));

    // ...and a hint names the file without a full scan.
    let hinted = dir.path().join("f07.log");
    append(&hinted, "file 07 hinted\n");
    want.push("file 07 hinted".into());
    t.changed([hinted]);
    // Bounded: a tailer that kept saying `more` of a still file fails instead of hanging.
    let mut reads = 0;
    while t.read(1 << 20, &mut sink).more {
        reads += 1;
        assert!(
            reads < 10_000,
            "still `more` after 10,000 reads of still files"
        );
    }
    assert_eq!(sorted(sink.lines.clone()), sorted(want));

    // A restart from the checkpoint reads nothing again.
    let cp = t.checkpoints();
    drop(t);
    let before = sink.lines.len();
    let mut t = closing_tailer(dir.path(), cp, 2);
    pump(&mut t, &mut sink, 64 * 1024);
    assert_eq!(
        sink.lines.len(),
        before,
        "nothing read twice after a restart"
    );
}

#[test]
fn closed_files_follow_rename_copytruncate_truncation_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let other = dir.path().join("other.log");
    append(&log, "a1\na2\n");
    append(&other, "o1\n");
    let mut t = closing_tailer(dir.path(), Checkpoints::empty(), 1);
    let mut sink = Sink::default();
    pump(&mut t, &mut sink, 1 << 20);
    assert_eq!(sorted(sink.lines.clone()), ["a1", "a2", "o1"]);
    assert_eq!(t.descriptors().open, 0);

    // Rename rotation of a closed file with lines not read yet: found in its directory by
    // inode and head, finished, then the new file.
    append(&log, "a3\n");
    fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "b1\n");
    pump(&mut t, &mut sink, 1 << 20);
    assert_eq!(
        sorted(sink.lines.clone()),
        sorted(["a1", "a2", "a3", "b1", "o1"].map(String::from).to_vec())
    );

    // copytruncate of a closed file: the copy's unread lines, then the new content.
    append(&log, "b2\n");
    fs::copy(&log, dir.path().join("app.log.2")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "c1 after the truncation\n");
    pump(&mut t, &mut sink, 1 << 20);
    assert_eq!(
        sorted(sink.lines.clone()),
        sorted(
            [
                "a1",
                "a2",
                "a3",
                "b1",
                "b2",
                "c1 after the truncation",
                "o1"
            ]
            .map(String::from)
            .to_vec()
        )
    );
    assert_eq!(t.stats().copies_found, 1);

    // Truncated and written past the old size while closed: the head tells.
    let longer = "d1 a much longer first line than before\nd2\n";
    fs::write(&log, longer).unwrap();
    pump(&mut t, &mut sink, 1 << 20);
    assert!(
        sink.lines.iter().any(|l| l.starts_with("d1 ")),
        "{:?}",
        sink.lines
    );
    assert!(sink.lines.iter().any(|l| l == "d2"));

    // Deleted while closed and idle: released, nothing lost.
    let losses = t.stats().losses;
    fs::remove_file(&other).unwrap();
    pump(&mut t, &mut sink, 1 << 20);
    assert_eq!(t.stats().losses, losses);
    assert_eq!(t.descriptors().files, 1, "{:?}", t.files());
    let mut got = sink.lines.clone();
    let n = got.len();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), n, "no line twice: {:?}", sink.lines);
}

// A model test as `tail_model.rs`, with three logs, every file closed as soon as it is
// idle and one descriptor for all: random writes, rotations (rename and copytruncate,
// plain and compressed), truncations, deletions, checkpoint stores, restarts and crashes.

#[derive(Debug, Clone)]
enum Action {
    Write { log: usize, lines: u8 },
    Read { budget: u16 },
    Scan,
    RotateRename { log: usize, compress: bool },
    CopyTruncate { log: usize, compress: bool },
    Truncate { log: usize },
    Delete { log: usize },
    Store,
    Restart,
    Crash,
}

const LOGS: usize = 3;

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0..LOGS, 1u8..5).prop_map(|(log, lines)| Action::Write { log, lines }),
        4 => (1u16..300).prop_map(|budget| Action::Read { budget }),
        3 => Just(Action::Scan),
        2 => (0..LOGS, any::<bool>()).prop_map(|(log, compress)| Action::RotateRename { log, compress }),
        2 => (0..LOGS, any::<bool>()).prop_map(|(log, compress)| Action::CopyTruncate { log, compress }),
        1 => (0..LOGS).prop_map(|log| Action::Truncate { log }),
        1 => (0..LOGS).prop_map(|log| Action::Delete { log }),
        2 => Just(Action::Store),
        1 => Just(Action::Restart),
        1 => Just(Action::Crash),
    ]
}

struct World {
    dir: tempfile::TempDir,
    data: tempfile::TempDir,
    next_line: u32,
    written: Vec<String>,
    generation: u32,
    tailer: Option<Tailer>,
    sink: Sink,
    committed: usize,
}

fn line_text(log: usize, n: u32) -> String {
    format!(
        "log {log} line {n:06} {}",
        "x".repeat((n as usize * 7) % 23)
    )
}

impl World {
    fn new() -> Self {
        World {
            dir: tempfile::tempdir().unwrap(),
            data: tempfile::tempdir().unwrap(),
            next_line: 0,
            written: Vec::new(),
            generation: 0,
            tailer: None,
            sink: Sink::default(),
            committed: 0,
        }
    }

    fn log(&self, log: usize) -> PathBuf {
        self.dir.path().join(format!("app{log}.log"))
    }

    fn start(&mut self) {
        if self.tailer.is_none() {
            let cp = Checkpoints::load(self.data.path()).unwrap();
            self.tailer = Some(closing_tailer(self.dir.path(), cp, 1));
        }
    }

    fn scan(&mut self) {
        if let Some(t) = &mut self.tailer {
            t.scan().unwrap();
        }
    }

    fn drain(&mut self) {
        if let Some(t) = &mut self.tailer {
            pump(t, &mut self.sink, 1 << 16);
        }
    }

    fn store(&mut self) {
        if let Some(t) = &self.tailer {
            t.checkpoints().store(self.data.path()).unwrap();
            self.committed = self.sink.lines.len();
        }
    }

    fn rotated_name(&mut self, log: usize) -> PathBuf {
        self.generation += 1;
        self.dir
            .path()
            .join(format!("app{log}.log.{}", self.generation))
    }

    fn apply(&mut self, a: &Action) {
        match *a {
            Action::Write { log, lines } => {
                let mut s = String::new();
                for _ in 0..lines {
                    let line = line_text(log, self.next_line);
                    s.push_str(&line);
                    s.push('\n');
                    self.written.push(line);
                    self.next_line += 1;
                }
                append(&self.log(log), &s);
            }
            Action::Read { budget } => {
                if let Some(t) = &mut self.tailer {
                    t.read(budget as usize, &mut self.sink);
                }
            }
            Action::Scan => self.scan(),
            Action::RotateRename { log, compress } => {
                if !self.log(log).exists() {
                    return;
                }
                // While running, the tailer scans between two rotations (every second).
                self.scan();
                let to = self.rotated_name(log);
                fs::rename(self.log(log), &to).unwrap();
                // The application starts its new log at once (logback does): the engine
                // finds rotated generations next to the logs it follows.
                fs::File::create(self.log(log)).unwrap();
                if compress {
                    gzip(&to);
                }
            }
            Action::CopyTruncate { log, compress } => {
                if !self.log(log).exists() {
                    return;
                }
                self.scan();
                let to = self.rotated_name(log);
                fs::copy(self.log(log), &to).unwrap();
                OpenOptions::new()
                    .write(true)
                    .open(self.log(log))
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                if compress {
                    gzip(&to);
                }
            }
            Action::Truncate { log } | Action::Delete { log } => {
                // Only once its lines are read and stored (else they are gone for anyone).
                if self.tailer.is_none() || !self.log(log).exists() {
                    return;
                }
                self.drain();
                self.store();
                if matches!(a, Action::Truncate { .. }) {
                    OpenOptions::new()
                        .write(true)
                        .open(self.log(log))
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                } else {
                    fs::remove_file(self.log(log)).unwrap();
                }
            }
            Action::Store => self.store(),
            Action::Restart => {
                self.store();
                self.tailer = None;
                self.start();
            }
            Action::Crash => {
                if self.tailer.is_none() {
                    return;
                }
                self.tailer = None;
                self.sink.lines.truncate(self.committed);
                self.start();
            }
        }
    }

    fn finish(mut self) {
        self.start();
        self.drain();
        let got = sorted(std::mem::take(&mut self.sink.lines));
        let want = sorted(std::mem::take(&mut self.written));
        let missing: Vec<&String> = want
            .iter()
            .filter(|w| got.binary_search(w).is_err())
            .collect();
        assert!(missing.is_empty(), "lost lines: {missing:?}");
        let mut dedup = got.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), got.len(), "duplicated lines");
        assert_eq!(got, want);
    }
}

fn gzip(path: &Path) {
    use flate2::{Compression, write::GzEncoder};
    let data = fs::read(path).unwrap();
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let mut enc = GzEncoder::new(fs::File::create(&gz).unwrap(), Compression::fast());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
    fs::remove_file(path).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn closed_files_deliver_every_line_once(actions in prop::collection::vec(action(), 1..50)) {
        let mut w = World::new();
        // The agent stores a first checkpoint soon after it starts.
        w.start();
        w.scan();
        w.store();
        for a in &actions {
            w.apply(a);
        }
        w.finish();
    }
}

// ---------------------------------------------------------------------------------------
// The real agent.

/// A `vigil-agent run` (in a process group of its own, killed when dropped) with its admin
/// endpoint.
struct Agent {
    process: wait::Group,
    admin: String,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent on `dir/logs/*.log` (data in `dir/data`), through `wrapper` (a
    /// command that runs the agent in its own process, as `prlimit ... --` does).
    fn start(dir: &Path, wrapper: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("agent.toml");
        fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
admin_listen = "127.0.0.1:{port}"

[host]
name = "many"

[detector]
# Nobody listens: reports stay in the spool, which is all these tests need.
endpoint = "http://127.0.0.1:1"

[[logs]]
app = "shop"
paths = ["{logs}/*.log"]
start_at = "beginning"
"#,
                data = dir.join("data").display(),
                logs = dir.join("logs").display(),
            ),
        )
        .unwrap();
        let log = dir.join("agent.log");
        let out = fs::File::create(&log).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_vigil-agent"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_vigil-agent")),
        };
        command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("VIGIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let process = wait::spawn_group(&mut command);
        let agent = Agent {
            process,
            admin: format!("http://127.0.0.1:{port}"),
            log,
        };
        wait::wait_until(
            Duration::from_secs(60),
            "the agent's admin endpoint",
            || {
                agent.assert_running_ref();
                agent.get("/healthz").is_some()
            },
        );
        agent
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }

    fn get(&self, path: &str) -> Option<String> {
        ureq::get(&format!("{}{path}", self.admin))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()
    }

    fn status(&self) -> serde_json::Value {
        let text = self.get("/status").expect("GET /status");
        serde_json::from_str(&text).expect("status JSON")
    }

    /// The value of a metric line (`name{labels}` as written).
    fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn lines_read(&self) -> u64 {
        self.metric("vigil_agent_lines_read_total{app=\"shop\"}")
            .unwrap_or(0.0) as u64
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running_ref(&self) {
        let stat = format!("/proc/{}/stat", self.pid());
        let alive = fs::read_to_string(&stat)
            .map(|s| !s.contains(") Z ") && !s.contains(") X "))
            .unwrap_or(false);
        assert!(alive, "vigil-agent exited; its log:\n{}", self.log_text());
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.process.try_wait() {
            panic!(
                "vigil-agent exited ({status}); its log:\n{}",
                self.log_text()
            );
        }
    }

    /// CPU time used so far (user + system), from `/proc/PID/stat`.
    fn cpu(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The fields after the command name (which may hold spaces) in parentheses.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_secs_f64(ticks as f64 / clock_ticks())
    }

    /// Open file descriptors, from `/proc/PID/fd`.
    fn fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// The agent's share of one core over `window`.
    fn cpu_share(&mut self, window: Duration) -> f64 {
        let (cpu0, t0) = (self.cpu(), Instant::now());
        std::thread::sleep(window);
        let (cpu1, t1) = (self.cpu(), Instant::now());
        self.assert_running();
        100.0 * (cpu1 - cpu0).as_secs_f64() / (t1 - t0).as_secs_f64()
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Makes `dir/logs` with `n` files of one line each; returns their paths.
fn many_files(dir: &Path, n: usize) -> Vec<PathBuf> {
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).unwrap();
    (0..n)
        .map(|i| {
            let path = logs.join(format!("app-{i:05}.log"));
            fs::write(
                &path,
                format!("2026-11-23 18:44:43.651 INFO  [main] shop.Service - file {i} line 0\n"),
            )
            .unwrap();
            path
        })
        .collect()
}

fn append_line(path: &Path, n: u64) {
    append(
        path,
        &format!("2026-11-23 18:44:44.000 INFO  [main] shop.Service - line {n}\n"),
    );
}

#[test]
fn ten_thousand_idle_files_cost_little_cpu_and_few_descriptors() {
    const FILES: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let files = many_files(dir.path(), FILES);
    let mut agent = Agent::start(dir.path(), &[]);
    wait::wait_until(
        Duration::from_secs(120),
        format!("the agent to read the first line of all {FILES} files"),
        || {
            agent.assert_running_ref();
            agent.lines_read() == FILES as u64
        },
    );
    // Files read to their end are closed after 5 s idle.
    assert!(
        wait::eventually(Duration::from_secs(60), || agent.fds() < 100),
        "the agent still holds {} descriptors with {FILES} idle files",
        agent.fds()
    );
    let status = agent.status();
    assert_eq!(status["tail"]["files"], FILES as u64, "{}", status["tail"]);
    assert_eq!(status["tail"]["fd_limited"], false);

    let cpu = agent.cpu_share(Duration::from_secs(8));
    let fds = agent.fds();
    eprintln!("{FILES} idle files: {cpu:.2} % of one core, {fds} open descriptors");
    assert!(
        cpu < 5.0,
        "{FILES} idle files take {cpu:.2} % of one core (before issue 15: 30 to 50 %)"
    );
    assert!(fds < 100, "{fds} open descriptors for {FILES} idle files");

    // Lines appended to some of them are read, each once.
    let touched: Vec<&PathBuf> = files.iter().step_by(97).collect();
    for (n, path) in touched.iter().enumerate() {
        append_line(path, n as u64 + 1);
    }
    let want = (FILES + touched.len()) as u64;
    wait::wait_until(
        Duration::from_secs(60),
        format!(
            "{want} lines read after appending to {} files",
            touched.len()
        ),
        || agent.lines_read() == want,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.lines_read(), want, "no line read twice");
    agent.assert_running();
    let log = agent.log_text();
    assert!(!log.contains("rotated away"), "{log}");
}

#[test]
fn a_soft_descriptor_limit_of_1024_leaves_2000_files_taking_turns() {
    const FILES: usize = 2_000;
    if Command::new("prlimit")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is needed for this test on CI"
        );
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = many_files(dir.path(), FILES);
    let mut agent = Agent::start(dir.path(), &["prlimit", "--nofile=1024:1024", "--"]);
    let limits = fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
        "prlimit did not apply: {limits}"
    );
    wait::wait_until(
        Duration::from_secs(120),
        format!("the agent to read the first line of all {FILES} files"),
        || {
            agent.assert_running_ref();
            agent.lines_read() == FILES as u64
        },
    );
    // Every file gets three lines at once: more files with data than descriptors.
    let mut n = 0;
    for _ in 0..3 {
        for path in &files {
            n += 1;
            append_line(path, n);
        }
    }
    let want = FILES as u64 + n;
    wait::wait_until(
        Duration::from_secs(120),
        format!("{want} lines read under a limit of 1024 descriptors"),
        || {
            agent.assert_running_ref();
            agent.lines_read() == want
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.lines_read(), want, "no line read twice");
    agent.assert_running();

    let status = agent.status();
    let tail = &status["tail"];
    assert_eq!(tail["files"], FILES as u64, "{tail}");
    assert_eq!(
        tail["fd_limited"], true,
        "status says files take turns: {tail}"
    );
    let max_open = tail["max_open_files"].as_u64().unwrap();
    assert!(
        (100..1024).contains(&max_open),
        "at most {max_open} files open under a limit of 1024"
    );
    assert_eq!(agent.metric("vigil_agent_fd_limited"), Some(1.0));
    assert!(agent.fds() < 1024);

    let log = agent.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("rotated away"), "no file rotated: {log}");
}
