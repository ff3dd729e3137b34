//! The report validator on arbitrary input (the same property as the fuzz target in
//! `detector/fuzz`, run on every test run): whatever bytes arrive, decoding and validating
//! never panics, and an accepted report stays within the documented limits.

use proptest::prelude::*;
use prost::Message;
use vigil_detector::ingest::{MAX_APPS, MAX_COUNT, MAX_REPORT_ITEMS, validate};
use vigil_proto::v1::{AppCounters, ExceptionCount, MinuteReport, Report, report::Body};

const NOW: i64 = 1_763_880_000;

fn within_limits(report: &Report) -> bool {
    if report.seq == 0 || i64::try_from(report.seq).is_err() {
        return false;
    }
    match &report.body {
        Some(Body::Minute(m)) => {
            let items: usize = m
                .apps
                .iter()
                .map(|a| a.exceptions.len() + a.definitions.len())
                .sum();
            m.apps.len() <= MAX_APPS
                && items <= MAX_REPORT_ITEMS
                && m.apps.iter().all(|a| {
                    a.lines <= MAX_COUNT && a.exceptions.iter().all(|e| e.count <= MAX_COUNT)
                })
        }
        Some(Body::Alert(a)) => a.count <= MAX_COUNT,
        None => false,
    }
}

fn arbitrary_report() -> impl Strategy<Value = Report> {
    (
        any::<u64>(),
        any::<i64>(),
        prop::collection::vec(
            (
                ".{0,8}",
                any::<u64>(),
                prop::collection::vec(any::<u64>(), 0..4),
            ),
            0..4,
        ),
        ".{0,10}",
    )
        .prop_map(|(seq, minute, apps, host)| Report {
            protocol_version: vigil_proto::PROTOCOL_VERSION,
            host,
            instance: "i".into(),
            seq,
            body: Some(Body::Minute(MinuteReport {
                minute: if minute % 3 == 0 { NOW } else { minute },
                apps: apps
                    .into_iter()
                    .map(|(app, lines, counts)| AppCounters {
                        app,
                        lines,
                        exceptions: counts
                            .into_iter()
                            .map(|count| ExceptionCount {
                                fingerprint: count ^ 0x5a5a,
                                count,
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                host_metrics: None,
            })),
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_decode_and_validate_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(report) = Report::decode(bytes.as_slice())
            && validate(&report, NOW).is_ok()
        {
            prop_assert!(within_limits(&report));
        }
    }

    #[test]
    fn accepted_reports_are_within_the_limits(report in arbitrary_report()) {
        if validate(&report, NOW).is_ok() {
            prop_assert!(within_limits(&report));
        }
    }
}
