//! The whole `vigil-agent` process under load: a real `vigil-detector` on free loopback
//! ports (temp `data_dir`), one agent tailing one file (`flush_interval = "10s"`), and a
//! writer thread appending a generated logback log (2 % of records with traces, about 190
//! bytes per record, timestamps of the moment they are written) at each rate in turn.
//! For each rate it prints the agent's CPU in % of one core (`utime + stime` from
//! `/proc/PID/stat` over the writing period) and its peak RSS (`VmHWM`), then checks that
//! the detector counted exactly the lines written (`GET /api/v1/series`).
//!
//! Each rate gets a fresh agent and detector, so `VmHWM` is that rate's own peak.
//!
//! ```sh
//! cargo build --release -p vigil-agent -p vigil-detector --bins
//! cargo bench -p vigil-agent --bench agent_load
//! ```
//!
//! It builds nothing: it runs `target/release/vigil-agent` and `target/release/vigil-detector`
//! (or `VIGIL_BIN_DIR`). Environment: `VIGIL_LOAD_RATES` (MB/s, default `1,10,30`),
//! `VIGIL_LOAD_SECS` (default 20), `VIGIL_LOAD_CLOCK`: `now` (default: records stamped when
//! written, as a live service logs; a slice ends at the current second) or `log` (one continuous generated log whose clock runs
//! about 20 ms per record, so a flush interval holds minutes to hours of log time, as when
//! a backlog is read); `VIGIL_LOAD_SLICE_MS` (default 10): how often the writer appends. Every wait has a deadline; the processes are killed when
//! the bench ends or fails.
//!
//! A rate of `0` measures the agent at idle: [`IDLE_FILES`] files of one line each, read
//! once, then nothing written for the period (`VIGIL_LOAD_RATES=0`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_agent::java::generate;

type Error = Box<dyn std::error::Error>;

/// Files the agent tails at rate 0 (idle), one line each.
const IDLE_FILES: usize = 100;

/// A child process killed when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn spawn(bin: &Path, name: &'static str, config: &Path, log: &Path) -> Result<Self, Error> {
        let out = File::create(log)?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Self { child, name })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_running(&mut self, log: &Path) -> Result<(), Error> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{} exited ({status}):\n{text}", self.name).into());
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0u16; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr()?.port();
    }
    Ok(ports)
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 2..])
        .ok_or("bad /proc/PID/stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, Error> {
        Ok(f.get(i).ok_or("short /proc/PID/stat")?.parse::<f64>()?)
    };
    // Fields 14 and 15 of the file (after the command: 11 and 12), 100 ticks a second.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn status_kib(pid: u32, key: &str) -> Result<u64, Error> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("bad status")?
        .parse()?)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Total lines stored for `app` on `host`, if the detector answers.
fn stored_lines(http: &str, app: &str, host: &str) -> Option<u64> {
    let mut response = ureq::get(&format!("{http}/api/v1/series?app={app}&host={host}"))
        .call()
        .ok()?;
    let series: serde_json::Value = response.body_mut().read_json().ok()?;
    series["minutes"]
        .as_array()
        .map(|minutes| minutes.iter().filter_map(|m| m["lines"].as_u64()).sum())
}

fn wait_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Outcome {
    written_bytes: u64,
    written_lines: u64,
    secs: f64,
    cpu_pct: f64,
    hwm_kib: u64,
    rss_end_kib: u64,
}

/// Appends generated records to `path` at `rate` bytes a second for `secs`, in slices every
/// 10 ms (`VIGIL_LOAD_SLICE_MS`), each starting at the current time (`log_clock`: the generator's own clock, about
/// 20 ms per record from 20 hours ago, one continuous log). Returns (bytes, lines).
fn write_at_rate(
    path: &Path,
    rate: f64,
    secs: f64,
    log_clock: bool,
    stop: &AtomicBool,
) -> Result<(u64, u64), Error> {
    let mut file = OpenOptions::new().append(true).open(path)?;
    let started = Instant::now();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut seed = 1u64;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut clock_ms = (unix_now() - 20 * 3600) * 1000;
    let slice = Duration::from_millis(
        std::env::var("VIGIL_LOAD_SLICE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    );
    while !stop.load(Ordering::Relaxed) {
        let elapsed = started.elapsed().as_secs_f64();
        if elapsed >= secs {
            break;
        }
        // Truncation is fine: the deficit carries over to the next slice.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let due = (rate * elapsed) as u64;
        if due > bytes {
            buf.clear();
            // A slice spans about 20 ms of log time per record (~190 bytes): it ends now
            // (the detector's series stop at the current minute).
            let start = if log_clock {
                clock_ms / 1000
            } else {
                unix_now() - i64::try_from((due - bytes) / 190 * 20 / 1000).unwrap_or(0)
            };
            let st = generate::write_log(&mut buf, due - bytes, seed, start)?;
            // The generator advances 0-39 ms per record.
            clock_ms += i64::try_from(st.records).unwrap_or(0) * 39 / 2;
            seed += 1;
            file.write_all(&buf)?;
            bytes += st.bytes;
            lines += st.lines;
        }
        std::thread::sleep(slice);
    }
    Ok((bytes, lines))
}

fn run_rate(bins: &Path, rate_mb: f64, secs: f64, log_clock: bool) -> Result<Outcome, Error> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let [grpc, http] = free_ports()?;
    let detector_config = d.join("detector.toml");
    std::fs::write(
        &detector_config,
        format!(
            "grpc_listen = \"127.0.0.1:{grpc}\"\nhttp_listen = \"127.0.0.1:{http}\"\ndata_dir = \"{}\"\n",
            d.join("detector-data").display()
        ),
    )?;
    let detector_log = d.join("detector.log");
    let mut detector = Proc::spawn(
        &bins.join("vigil-detector"),
        "vigil-detector",
        &detector_config,
        &detector_log,
    )?;
    let http = format!("http://127.0.0.1:{http}");
    wait_until(Duration::from_secs(30), "the detector's /healthz", || {
        detector.check_running(&detector_log)?;
        Ok(ureq::get(&format!("{http}/healthz")).call().is_ok())
    })?;

    let logs = d.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("shop.log");
    File::create(&log)?;
    let mut idle_lines = 0;
    if rate_mb == 0.0 {
        // One generated record each, stamped now.
        for i in 0..IDLE_FILES {
            let path = if i == 0 {
                log.clone()
            } else {
                logs.join(format!("idle-{i}.log"))
            };
            let mut buf = Vec::new();
            let st = generate::write_log(&mut buf, 1, i as u64 + 1, unix_now())?;
            std::fs::write(path, &buf)?;
            idle_lines += st.lines;
        }
    }
    let agent_config = d.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            r#"data_dir = "{data}"
admin_listen = ""

[host]
name = "load-1"

[detector]
endpoint = "http://127.0.0.1:{grpc}"
flush_interval = "10s"

[[logs]]
app = "shop"
paths = ["{logs}/*.log"]
start_at = "beginning"
"#,
            data = d.join("agent-data").display(),
            logs = logs.display(),
        ),
    )?;
    let agent_log = d.join("agent.log");
    let mut agent = Proc::spawn(
        &bins.join("vigil-agent"),
        "vigil-agent",
        &agent_config,
        &agent_log,
    )?;
    // Settled: the agent is up and has its file open.
    std::thread::sleep(Duration::from_millis(1500));
    agent.check_running(&agent_log)?;
    let pid = agent.pid();

    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let log = log.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            write_at_rate(&log, rate_mb * 1e6, secs, log_clock, &stop).map_err(|e| e.to_string())
        })
    };
    // Watch the agent while the writer runs (a dead agent ends the run).
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 30.0);
    while !writer.is_finished() {
        if let Err(e) = agent.check_running(&agent_log) {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            return Err("the writer did not finish in time".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (written_bytes, written_lines) = writer.join().map_err(|_| "writer panicked")??;
    let written_lines = written_lines + idle_lines;
    // The agent's CPU over the writing period plus a second to read what was written last.
    std::thread::sleep(Duration::from_secs(1));
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let hwm_kib = status_kib(pid, "VmHWM:")?;
    let rss_end_kib = status_kib(pid, "VmRSS:")?;

    // Everything written arrives, counted once (the agent flushes every 10 s).
    let mut last = None;
    let waited = wait_until(
        Duration::from_secs(60),
        "the detector to count every line written",
        || {
            agent.check_running(&agent_log)?;
            last = stored_lines(&http, "shop", "load-1");
            Ok(last == Some(written_lines))
        },
    );
    if let Err(e) = waited {
        let tail = |p: &Path| {
            let t = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        return Err(format!(
            "{e}: {last:?} of {written_lines} lines stored\nagent log:\n{}\ndetector log:\n{}",
            tail(&agent_log),
            tail(&detector_log)
        )
        .into());
    }
    // Nothing more arrives after another flush.
    std::thread::sleep(Duration::from_secs(11));
    let again = stored_lines(&http, "shop", "load-1");
    if again != Some(written_lines) {
        return Err(
            format!("{again:?} lines stored after another flush, {written_lines} written").into(),
        );
    }
    drop(agent);
    drop(detector);
    Ok(Outcome {
        written_bytes,
        written_lines,
        secs: elapsed,
        cpu_pct: 100.0 * cpu / elapsed,
        hwm_kib,
        rss_end_kib,
    })
}

fn main() -> Result<(), Error> {
    let bins = std::env::var_os("VIGIL_BIN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release"),
        PathBuf::from,
    );
    for name in ["vigil-agent", "vigil-detector"] {
        if !bins.join(name).exists() {
            return Err(format!(
                "{} missing: run `cargo build --release -p vigil-agent -p vigil-detector --bins` first (or set VIGIL_BIN_DIR)",
                bins.join(name).display()
            )
            .into());
        }
    }
    let rates: Vec<f64> = std::env::var("VIGIL_LOAD_RATES")
        .unwrap_or_else(|_| "1,10,30".into())
        .split(',')
        .map(|r| r.trim().parse::<f64>())
        .collect::<Result<_, _>>()?;
    let secs: f64 = std::env::var("VIGIL_LOAD_SECS")
        .ok()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20.0);
    let log_clock = match std::env::var("VIGIL_LOAD_CLOCK").as_deref() {
        Ok("log") => true,
        Ok("now") | Err(_) => false,
        Ok(other) => return Err(format!("VIGIL_LOAD_CLOCK={other}: `now` or `log`").into()),
    };
    println!(
        "agent under load: {} s per rate, one file, flush_interval 10s, timestamps {}, binaries in {}",
        secs,
        if log_clock {
            "of a continuous log from 20 h ago (about 20 ms per record: hours of log per flush)"
        } else {
            "of the moment each slice is written"
        },
        bins.display()
    );
    for rate in rates {
        let o = run_rate(&bins, rate, secs, log_clock)?;
        #[allow(clippy::cast_precision_loss)]
        let actual = o.written_bytes as f64 / 1e6 / secs;
        println!(
            "{rate:>5} MB/s (written {actual:.2} MB/s, {} lines): agent CPU {:.2} % of one core over {:.1} s, peak RSS {:.1} MiB (VmRSS at the end {:.1} MiB); detector counted {} lines: ok",
            o.written_lines,
            o.cpu_pct,
            o.secs,
            o.hwm_kib as f64 / 1024.0,
            o.rss_end_kib as f64 / 1024.0,
            o.written_lines,
        );
    }
    Ok(())
}
