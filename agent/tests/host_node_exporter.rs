//! Agreement with `prometheus-node-exporter`: over the same intervals, CPU busy %, memory
//! used %, load and disk bytes computed from node_exporter's counters agree with the
//! agent's (CPU within 2 points, memory within 1 point, disk bytes within 5 %).
//!
//! Needs the `prometheus-node-exporter` binary (Debian package of that name) on `PATH`, or
//! its path in `VIGIL_NODE_EXPORTER`. Without it the test is skipped with a message — unless
//! the `CI` environment variable is set, where it fails.
// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_agent::host::disk::DiskFilter;
use vigil_agent::host::{HostSampler, Sample, sysfs_for};

/// node_exporter as a child process, killed when dropped.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_node_exporter() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VIGIL_NODE_EXPORTER") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["prometheus-node-exporter", "node_exporter"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

fn start(binary: &Path) -> NodeExporter {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--path.procfs=/proc")
        .arg("--collector.disable-defaults")
        .args([
            "--collector.cpu",
            "--collector.meminfo",
            "--collector.loadavg",
            "--collector.diskstats",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let exporter = NodeExporter { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(exporter.port).is_none() {
        assert!(
            Instant::now() < deadline,
            "node_exporter did not answer on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    exporter
}

/// `(name, labels) → value` of one scrape.
type Metrics = HashMap<(String, Vec<(String, String)>), f64>;

fn scrape(port: u16) -> Option<Metrics> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return None;
    }
    let mut metrics = Metrics::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ')?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once("=\"")?;
                        Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                    })
                    .collect();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        metrics.insert((name.to_owned(), labels), value.parse().ok()?);
    }
    Some(metrics)
}

/// Sum of a metric over the series whose labels pass `keep`.
fn sum(m: &Metrics, name: &str, keep: impl Fn(&[(String, String)]) -> bool) -> f64 {
    m.iter()
        .filter(|((n, l), _)| n == name && keep(l))
        .map(|(_, v)| v)
        .sum()
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// What node_exporter users compute from two scrapes.
struct Computed {
    cpu_busy_pct: f64,
    mem_used_pct: f64,
    load1: f64,
    read_bytes: f64,
    write_bytes: f64,
    devices: Vec<String>,
}

fn compute(a: &Metrics, b: &Metrics, filter: &mut DiskFilter) -> Computed {
    let cpu = |m: &Metrics, modes: &[&str]| {
        sum(m, "node_cpu_seconds_total", |l| {
            modes.contains(&label(l, "mode"))
        })
    };
    let busy_modes = ["user", "nice", "system", "irq", "softirq", "steal"];
    let idle_modes = ["idle", "iowait"];
    let busy = cpu(b, &busy_modes) - cpu(a, &busy_modes);
    let idle = cpu(b, &idle_modes) - cpu(a, &idle_modes);
    let gauge = |name: &str| sum(b, name, |_| true);
    let mut devices: Vec<String> = b
        .keys()
        .filter(|(n, _)| n == "node_disk_read_bytes_total")
        .map(|(_, l)| label(l, "device").to_owned())
        .filter(|d| filter.is_physical(d))
        .collect();
    devices.sort();
    let disk = |name: &str| {
        let counted = |l: &[(String, String)]| devices.iter().any(|d| d == label(l, "device"));
        sum(b, name, counted) - sum(a, name, counted)
    };
    Computed {
        cpu_busy_pct: 100.0 * busy / (busy + idle),
        mem_used_pct: 100.0
            * (1.0 - gauge("node_memory_MemAvailable_bytes") / gauge("node_memory_MemTotal_bytes")),
        load1: gauge("node_load1"),
        read_bytes: disk("node_disk_read_bytes_total"),
        write_bytes: disk("node_disk_written_bytes_total"),
        devices,
    }
}

fn bytes_agree(ours: u64, theirs: f64, slack: f64) -> bool {
    (ours as f64 - theirs).abs() <= (theirs * 0.05).max(slack)
}

fn check(phase: &str, ours: &Sample, theirs: &Computed, loaded: bool) {
    let cpu = ours.cpu_busy_pct.unwrap();
    let mem = ours.mem_used_pct.unwrap();
    let disk = ours.disk.unwrap_or_default();
    eprintln!(
        "{phase}: over {:.2} s — CPU busy agent {cpu:.2} % / node_exporter {:.2} %; memory used \
         {mem:.2} % / {:.2} %; load1 {:.2} / {:.2}; disk read {} / {} bytes, written {} / {} \
         bytes (devices counted: {:?})",
        ours.interval.as_secs_f64(),
        theirs.cpu_busy_pct,
        theirs.mem_used_pct,
        ours.load1,
        theirs.load1,
        disk.read_bytes,
        theirs.read_bytes,
        disk.write_bytes,
        theirs.write_bytes,
        theirs.devices,
    );
    assert!(
        (cpu - theirs.cpu_busy_pct).abs() <= 2.0,
        "{phase}: CPU {cpu} vs {}",
        theirs.cpu_busy_pct
    );
    assert!(
        (mem - theirs.mem_used_pct).abs() <= 1.0,
        "{phase}: memory {mem} vs {}",
        theirs.mem_used_pct
    );
    assert!(
        (ours.load1 - theirs.load1).abs() <= 0.05 + 0.05 * theirs.load1,
        "{phase}: load1 {} vs {}",
        ours.load1,
        theirs.load1
    );
    // Small amounts (background writeback landing a few milliseconds apart) get 1 MiB slack.
    let slack = f64::from(1 << 20);
    assert!(
        bytes_agree(disk.read_bytes, theirs.read_bytes, slack),
        "{phase}: read bytes"
    );
    assert!(
        bytes_agree(disk.write_bytes, theirs.write_bytes, slack),
        "{phase}: write bytes"
    );
    if loaded && !theirs.devices.is_empty() && on_disk(Path::new(env!("CARGO_TARGET_TMPDIR"))) {
        assert!(
            theirs.write_bytes >= 8.0 * f64::from(1 << 20),
            "{phase}: the load reached the disk"
        );
        assert!(
            bytes_agree(disk.write_bytes, theirs.write_bytes, 0.0),
            "{phase}: write bytes within 5 %"
        );
        // One spinning thread is at least half a CPU's share of the machine.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(cpu >= 50.0 / cpus, "{phase}: a spinning thread shows");
    }
}

/// Whether `dir` is on a file system backed by a block device (not tmpfs or ramfs), from
/// the longest matching mount point in `/proc/self/mountinfo`.
fn on_disk(dir: &Path) -> bool {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let fstype = mountinfo
        .lines()
        .filter_map(|l| {
            let mount_point = l.split(' ').nth(4)?;
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            dir.starts_with(mount_point)
                .then_some((mount_point.len(), fstype))
        })
        .max_by_key(|(len, _)| *len)
        .map_or("unknown", |(_, t)| t);
    !matches!(fstype, "tmpfs" | "ramfs")
}

/// Spin one thread and write + fsync a file on a real disk until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(dir: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let spin = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    std::hint::black_box(x);
                }
            })
        };
        let writer = {
            let stop = stop.clone();
            let path = dir.join("vigil-host-agreement.bin");
            std::thread::spawn(move || {
                let chunk = vec![0x5au8; 1 << 20];
                let mut file = std::fs::File::create(&path).unwrap();
                let mut written = 0usize;
                // At most 96 MiB: enough to measure, little for a shared disk.
                while !stop.load(Ordering::Relaxed) && written < 96 << 20 {
                    for _ in 0..4 {
                        file.write_all(&chunk).unwrap();
                    }
                    file.sync_all().unwrap();
                    written += 4 << 20;
                }
                drop(file);
                let _ = std::fs::remove_file(&path);
            })
        };
        Self {
            stop,
            threads: vec![spin, writer],
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn agrees_with_node_exporter() {
    let Some(binary) = find_node_exporter() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)"
            );
        }
        eprintln!(
            "SKIPPED agrees_with_node_exporter: prometheus-node-exporter not found on PATH \
             (apt-get install prometheus-node-exporter, or set VIGIL_NODE_EXPORTER)"
        );
        return;
    };
    let exporter = start(&binary);
    let mut filter = DiskFilter::new(sysfs_for(Path::new("/proc")).as_deref());
    let mut sampler = HostSampler::new("/proc");

    // Each interval: our reading, then node_exporter's, a few milliseconds apart, at both
    // ends, so both cover the same stretch of kernel counters.
    let mut read_both = || {
        let ours = sampler.sample(Instant::now()).unwrap();
        let theirs = scrape(exporter.port).unwrap();
        (ours, theirs)
    };
    let (none, quiet_start) = read_both();
    assert!(none.is_none());
    std::thread::sleep(Duration::from_secs(2));
    let (quiet, loaded_start) = read_both();

    // The load runs on a disk-backed directory (the target directory, not a tmpfs /tmp).
    let load = Load::start(Path::new(env!("CARGO_TARGET_TMPDIR")));
    std::thread::sleep(Duration::from_secs(3));
    let (loaded, loaded_end) = read_both();
    drop(load);

    check(
        "quiet",
        &quiet.unwrap(),
        &compute(&quiet_start, &loaded_start, &mut filter),
        false,
    );
    check(
        "loaded",
        &loaded.unwrap(),
        &compute(&loaded_start, &loaded_end, &mut filter),
        true,
    );
}
