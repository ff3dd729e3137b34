//! The detector's store on a real 4 MiB tmpfs that fills up while a real agent ships
//! lines, is freed again, and the detector is then killed with SIGKILL and restarted:
//! every line written is counted exactly once (nothing acknowledged without being
//! stored, nothing stored twice).
//!
//! Needs root (to mount a tmpfs): without it the test says it is skipped, unless `CI` is
//! set: then it fails.

mod common;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::time::Duration;

use common::{DetectorProcess, agent_config, append_lines, eventually, shop_logs, spawn};
use tmpfs::Tmpfs;

#[test]
fn a_full_detector_disk_loses_nothing_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("detector-data");
    let Some(disk) = Tmpfs::mount_or_skip(&data, "4m") else {
        return;
    };
    let (logs, log) = shop_logs(dir.path());
    let mut detector = DetectorProcess::start(dir.path());
    let config = agent_config(
        dir.path(),
        &detector.grpc,
        "disk-1",
        "shop",
        &format!("{}/*.log", logs.display()),
    );
    let _agent = spawn("vigil-agent", &config, &dir.path().join("agent.log"));

    let mut written = 0;
    append_lines(&log, written, 500);
    written += 500;
    assert!(
        eventually(Duration::from_secs(30), || detector.lines("shop", "disk-1")
            == written),
        "the first {written} lines did not arrive"
    );

    // The disk fills while lines keep coming.
    let filler = disk.fill();
    for _ in 0..20 {
        append_lines(&log, written, 100);
        written += 100;
        std::thread::sleep(Duration::from_millis(100));
    }
    // The detector cannot store them: it must not say it did. Once its log says a commit
    // failed, it has tried.
    let detector_log = dir.path().join("detector.log");
    let store_failed = || {
        let log_text = std::fs::read_to_string(&detector_log).unwrap_or_default();
        log_text.contains("full") || log_text.contains("commit failed")
    };
    assert!(
        eventually(Duration::from_secs(30), store_failed),
        "the detector's log does not say the store failed:\n{}",
        std::fs::read_to_string(&detector_log).unwrap_or_default()
    );
    let while_full = detector.try_lines("shop", "disk-1").unwrap_or(0);
    assert!(
        while_full < written,
        "all {written} lines stored on a full disk?"
    );

    // Space returns; more lines; then the detector dies and comes back.
    std::fs::remove_file(&filler).expect("free the disk");
    for _ in 0..10 {
        append_lines(&log, written, 100);
        written += 100;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        eventually(Duration::from_secs(60), || {
            detector.try_lines("shop", "disk-1") == Some(written)
        }),
        "after the disk was freed, {:?} of {written} lines were stored",
        detector.try_lines("shop", "disk-1")
    );
    detector.restart(dir.path());
    append_lines(&log, written, 200);
    written += 200;
    assert!(
        eventually(Duration::from_secs(60), || {
            detector.try_lines("shop", "disk-1") == Some(written)
        }),
        "after a restart, {:?} of {written} lines were stored",
        detector.try_lines("shop", "disk-1")
    );
    // Nothing arrives twice once the agent has flushed again.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(detector.lines("shop", "disk-1"), written);
    eprintln!(
        "{written} lines written, {while_full} stored while the disk was full, {written} in the end"
    );
}
