//! `HostSampler` over a fixture procfs in a temporary directory.
// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use vigil_agent::host::{HostError, HostSampler, sysfs_for};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/host");

fn install(procfs: &Path, reading: u32) {
    for (to, from) in [
        ("stat", format!("stat.{}", reading.min(2))),
        ("meminfo", "meminfo".to_owned()),
        ("loadavg", "loadavg".to_owned()),
        ("diskstats", format!("diskstats.{reading}")),
    ] {
        std::fs::copy(Path::new(FIXTURES).join(from), procfs.join(to)).unwrap();
    }
}

#[test]
fn first_sample_primes_then_rates() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), 1);
    let mut sampler = HostSampler::with_sysfs(dir.path(), None);
    let t0 = Instant::now();
    assert_eq!(sampler.sample(t0).unwrap(), None);
    install(dir.path(), 2);
    let s = sampler
        .sample(t0 + Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(s.interval, Duration::from_secs(10));
    assert!((s.cpu_busy_pct.unwrap() - 50.0).abs() < 1e-9);
    assert!((s.mem_used_pct.unwrap() - 75.0).abs() < 1e-9);
    assert!((s.swap_used_pct.unwrap() - 25.0).abs() < 1e-9);
    assert_eq!((s.load1, s.load5, s.load15), (1.5, 0.75, 0.25));
    let disk = s.disk.unwrap();
    assert_eq!(disk.read_bytes, (8000 + 80 + 8) * 512);
    assert_eq!(disk.disks, 3);
    // Same instant again: no rates, and the previous reading is kept.
    assert_eq!(sampler.sample(t0 + Duration::from_secs(10)).unwrap(), None);
    install(dir.path(), 3);
    let s = sampler
        .sample(t0 + Duration::from_secs(20))
        .unwrap()
        .unwrap();
    assert_eq!(
        s.cpu_busy_pct, None,
        "no CPU tick between identical readings"
    );
    assert_eq!(s.disk.unwrap().disks, 5);
}

#[test]
fn missing_diskstats_gives_no_disk_figures() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), 1);
    std::fs::remove_file(dir.path().join("diskstats")).unwrap();
    let mut sampler = HostSampler::with_sysfs(dir.path(), None);
    let t0 = Instant::now();
    sampler.sample(t0).unwrap();
    let s = sampler
        .sample(t0 + Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(s.disk, None);
    assert!(s.mem_used_pct.is_some());
}

#[test]
fn errors_name_the_file_and_the_next_sample_primes_again() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), 1);
    let mut sampler = HostSampler::with_sysfs(dir.path(), None);
    let t0 = Instant::now();
    sampler.sample(t0).unwrap();

    std::fs::write(dir.path().join("meminfo"), "nothing useful\n").unwrap();
    let err = sampler.sample(t0 + Duration::from_secs(10)).unwrap_err();
    assert!(matches!(err, HostError::Parse { .. }));
    assert!(
        err.to_string().contains("meminfo") && err.to_string().contains("MemTotal"),
        "{err}"
    );

    install(dir.path(), 2);
    assert_eq!(
        sampler.sample(t0 + Duration::from_secs(20)).unwrap(),
        None,
        "primes again"
    );

    std::fs::remove_file(dir.path().join("stat")).unwrap();
    let err = sampler.sample(t0 + Duration::from_secs(30)).unwrap_err();
    assert!(matches!(err, HostError::Read { .. }));
    assert!(
        err.to_string()
            .contains(&dir.path().join("stat").display().to_string()),
        "{err}"
    );
}

#[test]
fn sysfs_is_derived_from_procfs() {
    let root = tempfile::tempdir().unwrap();
    let proc = root.path().join("proc");
    std::fs::create_dir_all(&proc).unwrap();
    assert_eq!(sysfs_for(&proc), None, "no sibling sys/block: names alone");
    std::fs::create_dir_all(root.path().join("sys/block")).unwrap();
    assert_eq!(sysfs_for(&proc), Some(root.path().join("sys")));
    let sampler = HostSampler::new(&proc);
    assert_eq!(
        sampler.sysfs_block(),
        Some(root.path().join("sys/block").as_path())
    );
}
