//! Any bytes an agent stream could carry, decoded as a `Report` and validated: the
//! validator never panics, and a report it accepts stays within the documented limits.
//!
//! `cargo +nightly fuzz run report_validate` (from `detector/`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vigil_detector::ingest::{MAX_APPS, MAX_COUNT, MAX_REPORT_ITEMS, validate};
use vigil_proto::v1::{Report, report::Body};

const NOW: i64 = 1_763_880_000;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = Report::decode(data) else {
        return;
    };
    if validate(&report, NOW).is_ok() {
        assert!(report.seq >= 1 && i64::try_from(report.seq).is_ok());
        if let Some(Body::Minute(m)) = &report.body {
            assert!(m.apps.len() <= MAX_APPS);
            let items: usize = m
                .apps
                .iter()
                .map(|a| a.exceptions.len() + a.definitions.len())
                .sum();
            assert!(items <= MAX_REPORT_ITEMS);
            for a in &m.apps {
                assert!(a.lines <= MAX_COUNT && a.exceptions.iter().all(|e| e.count <= MAX_COUNT));
            }
        }
    }
});
