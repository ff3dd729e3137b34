//! The store on a real, tiny tmpfs that fills up while reports arrive and is freed again:
//! every report the store says it stored is on disk (also after reopening), every report it
//! failed on can be stored when it is sent again, and nothing is counted twice.
//!
//! Needs root (to mount a tmpfs). Without it the test says it is skipped, unless `CI` is
//! set: then it fails.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/tmpfs.rs"]
mod tmpfs;

use tmpfs::Tmpfs;
use vigil_detector::store::{IngestOutcome, NewRelease, SeriesQuery, SqliteStore, Store};
use vigil_proto::v1::{AppCounters, ExceptionCount, MinuteReport, Report, report::Body};

fn report(seq: u64, minute: i64) -> Report {
    // Five fingerprint counts: a few pages of the store per report.
    let exceptions = (0..5)
        .map(|i| ExceptionCount {
            fingerprint: seq.wrapping_mul(1_000_003) ^ i,
            count: 1,
        })
        .collect();
    Report {
        protocol_version: vigil_proto::PROTOCOL_VERSION,
        host: "web-1".into(),
        instance: "disk-full".into(),
        agent_version: "test".into(),
        fingerprint_version: 1,
        seq,
        sent_at: minute + 61,
        body: Some(Body::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: "shop".into(),
                lines: 1,
                exceptions,
                ..Default::default()
            }],
            host_metrics: None,
        })),
    }
}

async fn stored_lines(store: &SqliteStore) -> u64 {
    store
        .series(&SeriesQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.lines)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_turns_a_failed_commit_into_an_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount_or_skip(&dir.path().join("disk"), "4m") else {
        return;
    };
    let data = fs.path().join("data");
    let store = SqliteStore::open(&data).await.unwrap();
    let minute = 1_763_880_000;
    let mut acked = 0u64;
    let mut failures = 0u32;
    let mut seq = 0u64;
    let mut unacked: Vec<u64> = Vec::new();

    // Some reports while there is room.
    for _ in 0..20 {
        seq += 1;
        let out = store.ingest(&[report(seq, minute)], minute + 61).await;
        assert_eq!(out.unwrap(), [IngestOutcome::Stored]);
        acked += 1;
    }
    // The disk fills; reports keep arriving (in small batches, as the writer sends them).
    let filler = fs.fill();
    for _ in 0..50 {
        let batch: Vec<Report> = (0..4)
            .map(|_| {
                seq += 1;
                report(seq, minute)
            })
            .collect();
        match store.ingest(&batch, minute + 61).await {
            Ok(outcomes) => {
                assert!(outcomes.iter().all(|o| *o == IngestOutcome::Stored));
                acked += batch.len() as u64;
            }
            Err(_) => {
                failures += 1;
                unacked.extend(batch.iter().map(|r| r.seq));
            }
        }
    }
    assert!(failures > 0, "the full disk never failed a commit");
    // A release created while the disk is full either fails or is really there.
    let release = store
        .create_release(&NewRelease {
            app: "shop".into(),
            version: "2.0.0".into(),
            created_at: minute,
            started_at: minute,
            reference_hosts: vec!["web-2".into()],
            first_batch: None,
        })
        .await;

    // Space returns: reports that failed are sent again, new ones arrive.
    std::fs::remove_file(&filler).unwrap();
    for s in unacked.clone() {
        let out = store.ingest(&[report(s, minute)], minute + 61).await;
        let out = out.unwrap();
        assert_eq!(out, [IngestOutcome::Stored], "seq {s} sent again");
        acked += 1;
    }
    for _ in 0..50 {
        seq += 1;
        let out = store.ingest(&[report(seq, minute)], minute + 61).await;
        assert_eq!(out.unwrap(), [IngestOutcome::Stored]);
        acked += 1;
    }
    let release_after = store
        .create_release(&NewRelease {
            app: "shop".into(),
            version: "2.0.1".into(),
            created_at: minute,
            started_at: minute,
            reference_hosts: vec!["web-2".into()],
            first_batch: None,
        })
        .await
        .unwrap();
    assert_eq!(
        stored_lines(&store).await,
        acked,
        "lines stored vs acknowledged"
    );
    store.close().await;

    // What was acknowledged is on disk, once.
    let store = SqliteStore::open(&data).await.unwrap();
    assert_eq!(stored_lines(&store).await, acked, "after reopening");
    assert_eq!(acked, seq, "every report stored once in the end");
    if let Ok(r) = release {
        assert!(
            store.release(r.id).await.unwrap().is_some(),
            "release {} was created during the full disk and then lost",
            r.id
        );
    }
    assert!(store.release(release_after.id).await.unwrap().is_some());
    eprintln!("{seq} reports, {failures} failed commits while full, {acked} stored");
}
