//! Per-app process metrics: a fixture procfs, then this very test process.
// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use vigil_agent::host::{HostError, ProcessSampler};
use vigil_agent::host::{parse_pid_stat, vm_rss_kb};

fn write_process(
    procfs: &Path,
    pid: u32,
    cmdline: &[&str],
    ticks: (u64, u64),
    start: u64,
    rss_kb: u64,
) {
    let dir = procfs.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = cmdline.join("\0");
    cmd.push('\0');
    std::fs::write(dir.join("cmdline"), cmd).unwrap();
    let comm = cmdline[0].rsplit('/').next().unwrap();
    std::fs::write(
        dir.join("stat"),
        format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 1000 0 0 0 {} {} 0 0 20 0 50 0 {start} 1000000 2500 \
             18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 17 1 0 0 0 0 0\n",
            ticks.0, ticks.1
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("status"),
        format!("Name:\t{comm}\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  900000 kB\nVmRSS:\t  {rss_kb} kB\nThreads:\t50\n"),
    )
    .unwrap();
}

fn apps() -> Vec<(String, String)> {
    vec![
        ("shop".into(), r"java .*shop\.jar".into()),
        ("billing".into(), r"billing-\d+\.jar".into()),
    ]
}

#[test]
fn pid_stat_and_status() {
    let stat = "4242 (java (main) x) S 1 2 3 0 -1 0 0 0 0 0 700 150 0 0 20 0 50 0 98765 1 2 3\n";
    let s = parse_pid_stat(stat).unwrap();
    assert_eq!((s.ticks, s.start), (850, 98765));
    assert_eq!(parse_pid_stat("4242 (java"), None);
    assert_eq!(parse_pid_stat("4242 (java) S 1 2"), None);
    assert_eq!(
        vm_rss_kb("Name:\tjava\nVmRSS:\t  123456 kB\n"),
        Some(123456)
    );
    assert_eq!(vm_rss_kb("Name:\tkthreadd\n"), None);
}

#[test]
fn invalid_pattern_names_the_app() {
    let err = ProcessSampler::new("/proc", &[("shop".into(), "java (".into())]).unwrap_err();
    assert!(matches!(err, HostError::Pattern { ref app, .. } if app == "shop"));
    assert!(err.to_string().contains("shop"), "{err}");
}

#[test]
fn apps_found_by_command_line_with_cpu_rss_and_pid_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let proc = dir.path();
    std::fs::create_dir_all(proc.join("self")).unwrap(); // not a pid: skipped
    write_process(
        proc,
        100,
        &["/usr/bin/java", "-Xmx2g", "-jar", "/opt/shop/shop.jar"],
        (500, 100),
        1000,
        200_000,
    );
    write_process(
        proc,
        101,
        &["java", "-jar", "billing-2.jar"],
        (10, 10),
        1100,
        50_000,
    );
    write_process(proc, 102, &["/bin/bash"], (1, 1), 900, 3_000);
    write_process(
        proc,
        103,
        &["java", "-Dx=1", "-jar", "shop.jar", "--worker"],
        (0, 0),
        1200,
        100_000,
    );

    let mut sampler = ProcessSampler::new(proc, &apps()).unwrap();
    let t0 = Instant::now();
    let first = sampler.sample(t0).unwrap().to_vec();
    assert_eq!(first[0].app, "shop");
    assert_eq!(first[0].processes, 2);
    assert_eq!(first[0].cpu_pct, None, "first sample primes");
    assert_eq!(first[0].rss_bytes, 300_000 * 1024);
    assert_eq!((first[1].app.as_str(), first[1].processes), ("billing", 1));

    // Ten seconds later: shop used 250 + 50 ticks (3 s of CPU: 30 % of a core), billing
    // 1000 ticks (100 %).
    write_process(
        proc,
        100,
        &["/usr/bin/java", "-Xmx2g", "-jar", "/opt/shop/shop.jar"],
        (700, 150),
        1000,
        210_000,
    );
    write_process(
        proc,
        103,
        &["java", "-Dx=1", "-jar", "shop.jar", "--worker"],
        (40, 10),
        1200,
        100_000,
    );
    write_process(
        proc,
        101,
        &["java", "-jar", "billing-2.jar"],
        (510, 510),
        1100,
        50_000,
    );
    let s = sampler
        .sample(t0 + Duration::from_secs(10))
        .unwrap()
        .to_vec();
    assert_eq!(s[0].interval, Duration::from_secs(10));
    assert!(
        (s[0].cpu_pct.unwrap() - 30.0).abs() < 1e-9,
        "{:?}",
        s[0].cpu_pct
    );
    assert_eq!(s[0].rss_bytes, 310_000 * 1024);
    assert!(
        (s[1].cpu_pct.unwrap() - 100.0).abs() < 1e-9,
        "{:?}",
        s[1].cpu_pct
    );

    // Billing exits and its pid is reused by another program; a new billing JVM starts.
    std::fs::remove_dir_all(proc.join("101")).unwrap();
    write_process(proc, 101, &["sleep", "100"], (0, 0), 5000, 500);
    write_process(
        proc,
        104,
        &["java", "-jar", "billing-3.jar"],
        (300, 0),
        5001,
        60_000,
    );
    std::fs::remove_dir_all(proc.join("103")).unwrap();
    let s = sampler
        .sample(t0 + Duration::from_secs(20))
        .unwrap()
        .to_vec();
    assert_eq!(s[0].processes, 1);
    assert_eq!((s[1].processes, s[1].rss_bytes), (1, 60_000 * 1024));
    assert_eq!(s[1].cpu_pct, None, "the new JVM has no previous reading");
    let s = sampler
        .sample(t0 + Duration::from_secs(30))
        .unwrap()
        .to_vec();
    assert_eq!(s[1].cpu_pct, Some(0.0));
}

#[test]
fn missing_procfs_is_an_error_naming_it() {
    let mut sampler = ProcessSampler::new("/nonexistent/proc", &apps()).unwrap();
    let err = sampler.sample(Instant::now()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/proc"), "{err}");
}

#[test]
fn this_test_process_on_the_real_machine() {
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_name().unwrap().to_str().unwrap().to_owned();
    let pattern = regex::escape(&name);
    let mut sampler = ProcessSampler::new("/proc", &[("self".into(), pattern)]).unwrap();
    let t0 = Instant::now();
    sampler.sample(t0).unwrap();
    // Burn CPU so there is something to measure: 400 ms, and at least 200 ms of CPU time
    // of this thread (on a busy machine the 400 ms alone may hold little of it).
    let thread_cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // utime and stime, the 14th and 15th fields; the 2nd, (comm), may hold spaces.
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let ticks0 = thread_cpu_ticks();
    let mut x = 0u64;
    while t0.elapsed() < Duration::from_millis(400) || thread_cpu_ticks() < ticks0 + 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "this thread got less than 200 ms of CPU in 30 s"
        );
        for _ in 0..100_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
    }
    std::hint::black_box(x);
    let s = sampler.sample(Instant::now()).unwrap();
    assert!(s[0].processes >= 1);
    assert!(s[0].rss_bytes > 1 << 20, "{}", s[0].rss_bytes);
    let cpu = s[0].cpu_pct.unwrap();
    assert!(cpu > 5.0 && cpu < 100.0 * 64.0, "{cpu}");
}
