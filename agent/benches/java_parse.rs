//! Throughput of the Java analysis through the full pipeline: split lines (memchr), assemble
//! events, levels, timestamps, exception fingerprints, per-minute counters.
//!
//! `cargo bench -p vigil-agent --bench java_parse`
//!
//! Generates (once, reused by size) a realistic logback-style log of `VIGIL_BENCH_BYTES`
//! bytes (default 1 GiB) at `VIGIL_BENCH_FILE` (default: the temp dir), runs the pipeline over
//! it and prints MB/s per core (CPU time of this process), the peak RSS, and the time of
//! `rg -c Exception FILE` on the same file.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use vigil_agent::java::{
    Analyzer, AnalyzerConfig, EventAssembler, Fingerprint, Level, Tz, generate, read_lines,
};

const SEED: u64 = 1;

#[derive(Default)]
struct MinuteCounts {
    lines: u64,
    error_lines: u64,
    warn_lines: u64,
    exceptions: HashMap<Fingerprint, u64>,
}

/// CPU time of this process in seconds (user + system).
fn cpu_seconds() -> f64 {
    // /proc/self/stat fields 14 and 15 (utime, stime) in clock ticks (100 Hz on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let size: u64 = std::env::var("VIGIL_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let path = std::env::var_os("VIGIL_BENCH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("vigil-java-bench-{size}-s{SEED}.log"))
        });
    let have = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if have < size {
        let t = Instant::now();
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let st = generate::write_log(&mut w, size, SEED, 1_763_923_483)?;
        drop(w);
        println!(
            "generated {} ({} bytes, {} records, {} with traces = {:.2}%) in {:.1}s",
            path.display(),
            st.bytes,
            st.records,
            st.traces,
            100.0 * st.traces as f64 / st.records as f64,
            t.elapsed().as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "machine: {} ({} cores)",
        cpu_model(),
        std::thread::available_parallelism()?.get()
    );
    println!("file: {} ({:.1} MB)", path.display(), bytes as f64 / 1e6);

    // Warm the page cache the same way for both contenders.
    let _ = read_lines(File::open(&path)?, 1 << 20, |_, _| {});

    let analyzer = Analyzer::new(AnalyzerConfig {
        timezone: Tz::Utc,
        ..AnalyzerConfig::default()
    })?;
    let mut asm = EventAssembler::new(&analyzer);
    let mut minutes: HashMap<i64, MinuteCounts> = HashMap::new();
    let (mut events, mut exceptions) = (0u64, 0u64);
    let mut count = |ev: vigil_agent::java::Event<'_>| {
        events += 1;
        let m = minutes.entry(ev.time.div_euclid(60) * 60).or_default();
        m.lines += u64::from(ev.lines);
        match ev.level {
            Level::Error => m.error_lines += 1,
            Level::Warn => m.warn_lines += 1,
            _ => {}
        }
        if let Some(x) = ev.exception {
            exceptions += 1;
            *m.exceptions.entry(x.fingerprint).or_default() += 1;
        }
    };
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    read_lines(File::open(&path)?, 1 << 20, |line, end| {
        asm.push_line(&analyzer, line, end, 0, &mut count);
    })?;
    asm.flush(&analyzer, &mut count);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let fps: std::collections::HashSet<_> =
        minutes.values().flat_map(|m| m.exceptions.keys()).collect();
    let mb = bytes as f64 / 1e6;
    println!(
        "vigil java pipeline: {events} events, {exceptions} exceptions, {} fingerprints, {} minutes",
        fps.len(),
        minutes.len()
    );
    println!(
        "vigil java pipeline: wall {wall:.2}s ({:.0} MB/s), cpu {cpu:.2}s => {:.0} MB/s per core",
        mb / wall,
        mb / cpu
    );
    match status_kib("VmHWM:") {
        Some(k) => println!("peak RSS: {:.1} MB", k as f64 / 1024.0),
        None => println!("peak RSS: unknown"),
    }

    let t = Instant::now();
    match Command::new("rg")
        .arg("-c")
        .arg("Exception")
        .arg(&path)
        .output()
    {
        Ok(out) => {
            let secs = t.elapsed().as_secs_f64();
            println!(
                "rg -c Exception: {} matching lines in {secs:.2}s wall ({:.0} MB/s)",
                String::from_utf8_lossy(&out.stdout).trim(),
                mb / secs
            );
        }
        Err(e) => {
            println!("rg -c Exception: not run ({e}); install ripgrep (apt-get install -y ripgrep)")
        }
    }
    Ok(())
}
