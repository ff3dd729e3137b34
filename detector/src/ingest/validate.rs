//! What a report may hold (README "Limits"). A report outside these bounds is rejected
//! with a reason that names the field, and the agent does not send it again; every bound
//! is far above what a real agent sends in a minute, so that only a broken or hostile
//! sender meets it, and no report can make a commit, a page or a sum grow without limit.

use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::latency;
use vigil_proto::v1::{ExceptionDefinition, Report, RequestCounters, report::Body};

pub use crate::names::MAX_NAME_BYTES;
use crate::names::check as name;
/// Longest instance id, in bytes.
pub const MAX_INSTANCE_BYTES: usize = 64;
/// How far in the future a minute or alert may lie (clock skew), in seconds.
pub const MAX_FUTURE_SECS: i64 = 24 * 60 * 60;
/// How far in the past a minute or alert may lie (an agent's spool after a long outage),
/// in seconds.
pub const MAX_PAST_SECS: i64 = 30 * 24 * 60 * 60;
/// Most apps in one minute report.
pub const MAX_APPS: usize = 256;
/// Most fingerprint counts, and most definitions, of one app in one report.
pub const MAX_FINGERPRINTS: usize = 10_000;
/// Most fingerprint counts and definitions of one report, all apps together.
pub const MAX_REPORT_ITEMS: usize = 20_000;
/// Largest count (lines, events, one fingerprint) of one app in one minute report:
/// ten billion, 166 million a second, which no host logs.
pub const MAX_COUNT: u64 = 10_000_000_000;
/// Most causes and most frames of one definition.
pub const MAX_DEFINITION_ITEMS: usize = 64;
/// Most bytes of one definition (class, causes, message, frames and sample together).
pub const MAX_DEFINITION_BYTES: usize = 64 * 1024;

/// Why a report can never be stored. The agent is told and must not send it again.
///
/// # Errors
/// The reason, starting with the field it is about.
pub fn validate(report: &Report, now: i64) -> Result<(), String> {
    if report.protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported (this detector speaks {PROTOCOL_VERSION})",
            report.protocol_version
        ));
    }
    name("host", &report.host, MAX_NAME_BYTES)?;
    name("instance", &report.instance, MAX_INSTANCE_BYTES)?;
    if report.seq == 0 || i64::try_from(report.seq).is_err() {
        return Err(format!("seq {} is not between 1 and 2^63-1", report.seq));
    }
    match &report.body {
        None => Err("report has no body".into()),
        Some(Body::Minute(minute)) => {
            if minute.minute % 60 != 0 {
                return Err(format!("minute {} is not a multiple of 60", minute.minute));
            }
            time("minute", minute.minute, now)?;
            if minute.apps.len() > MAX_APPS {
                return Err(format!(
                    "apps: {} in one report, more than {MAX_APPS}",
                    minute.apps.len()
                ));
            }
            let items: usize = minute
                .apps
                .iter()
                .map(|a| a.exceptions.len() + a.definitions.len())
                .sum();
            if items > MAX_REPORT_ITEMS {
                return Err(format!(
                    "apps: {items} fingerprint counts and definitions in one report, more than \
                     {MAX_REPORT_ITEMS}"
                ));
            }
            for app in &minute.apps {
                name("app name", &app.app, MAX_NAME_BYTES)?;
                for (what, value) in [
                    ("lines", app.lines),
                    ("error_lines", app.error_lines),
                    ("warn_lines", app.warn_lines),
                    ("events", app.events),
                    ("truncated_lines", app.truncated_lines),
                ] {
                    count(&app.app, what, value)?;
                }
                if app.exceptions.len() > MAX_FINGERPRINTS
                    || app.definitions.len() > MAX_FINGERPRINTS
                {
                    return Err(format!(
                        "app {:?}: {} fingerprint counts and {} definitions in one report, \
                         more than {MAX_FINGERPRINTS}",
                        app.app,
                        app.exceptions.len(),
                        app.definitions.len()
                    ));
                }
                for e in &app.exceptions {
                    count(&app.app, "exception count", e.count)?;
                }
                for d in &app.definitions {
                    definition(d)?;
                }
                if let Some(r) = &app.requests {
                    requests(&app.app, r)?;
                }
            }
            Ok(())
        }
        Some(Body::Alert(alert)) => {
            name("alert app", &alert.app, MAX_NAME_BYTES)?;
            time("alert at", alert.at, now)?;
            if alert.count > MAX_COUNT {
                return Err(format!(
                    "alert count {} is more than {MAX_COUNT}",
                    alert.count
                ));
            }
            match &alert.definition {
                None => Err("alert without exception definition".into()),
                Some(d) => definition(d).map_err(|e| format!("alert {e}")),
            }
        }
    }
}

/// What committing `report` costs, in rows written (for fair turns between agents).
pub fn cost(report: &Report) -> usize {
    match &report.body {
        Some(Body::Minute(m)) => m
            .apps
            .iter()
            .map(|a| 1 + a.exceptions.len() + a.definitions.len())
            .sum::<usize>()
            .max(1),
        _ => 1,
    }
}

fn time(what: &str, t: i64, now: i64) -> Result<(), String> {
    if t > now.saturating_add(MAX_FUTURE_SECS) {
        return Err(format!("{what} {t} is more than a day in the future"));
    }
    if t < now.saturating_sub(MAX_PAST_SECS) {
        return Err(format!("{what} {t} is more than 30 days in the past"));
    }
    Ok(())
}

/// Request counters: counts bounded, status classes adding up to the requests, no more
/// buckets than the layout has (repeated indexes add up when stored), holding no more
/// times than requests, their sum no longer than that many of the longest time. (Scraped
/// values are not checked here: a bad one is left out when stored, never the report.)
fn requests(app: &str, r: &RequestCounters) -> Result<(), String> {
    let classes = [
        ("requests.status_1xx", r.status_1xx),
        ("requests.status_2xx", r.status_2xx),
        ("requests.status_3xx", r.status_3xx),
        ("requests.status_4xx", r.status_4xx),
        ("requests.status_5xx", r.status_5xx),
    ];
    for (what, value) in classes.into_iter().chain([
        ("requests.count", r.count),
        ("requests.malformed", r.malformed),
    ]) {
        count(app, what, value)?;
    }
    let sum: u64 = classes.iter().map(|c| c.1).sum();
    if sum != r.count {
        return Err(format!(
            "app {app:?}: requests.status classes add up to {sum}, not requests.count {}",
            r.count
        ));
    }
    let buckets = usize::try_from(latency::MAX_INDEX - latency::MIN_INDEX + 1).unwrap_or(0);
    if r.latency.len() > buckets {
        return Err(format!(
            "app {app:?}: {} latency buckets, more than the layout's {buckets}",
            r.latency.len()
        ));
    }
    let mut timed: u64 = 0;
    for b in &r.latency {
        if !(latency::MIN_INDEX..=latency::MAX_INDEX).contains(&b.index) {
            return Err(format!(
                "app {app:?}: latency bucket {} outside {}..={}",
                b.index,
                latency::MIN_INDEX,
                latency::MAX_INDEX
            ));
        }
        timed = timed.saturating_add(b.count);
    }
    if timed > r.count {
        return Err(format!(
            "app {app:?}: {timed} latency times for {} requests",
            r.count
        ));
    }
    // No time is longer than the layout's last bucket: a bound that also keeps sums of
    // many reports finite.
    let most = r.count as f64 * latency::upper_ms(latency::MAX_INDEX);
    if !r.latency_sum_ms.is_finite() || r.latency_sum_ms < 0.0 || r.latency_sum_ms > most {
        return Err(format!(
            "app {app:?}: requests.latency_sum_ms {} is not a time of {} requests",
            r.latency_sum_ms, r.count
        ));
    }
    Ok(())
}

/// Replaces NUL characters in the free text of `report` (the agent version, exception
/// definitions, scraped names) with U+FFFD: a Java message may hold one, and PostgreSQL's
/// text cannot, so one such report would otherwise fail every group commit it joins.
/// Names that identify (host, instance, app) are checked by [`validate`] instead, which
/// refuses control characters in them.
pub fn without_nul(report: &mut Report) {
    fn clean(text: &mut String) {
        if text.contains('\0') {
            *text = text.replace('\0', "\u{fffd}");
        }
    }
    fn clean_definition(d: &mut ExceptionDefinition) {
        clean(&mut d.class);
        clean(&mut d.message);
        clean(&mut d.sample);
        d.causes.iter_mut().for_each(clean);
        d.frames.iter_mut().for_each(clean);
    }
    clean(&mut report.agent_version);
    match &mut report.body {
        Some(Body::Minute(minute)) => {
            for app in &mut minute.apps {
                app.definitions.iter_mut().for_each(clean_definition);
                for value in &mut app.scraped {
                    clean(&mut value.name);
                }
            }
        }
        Some(Body::Alert(alert)) => {
            if let Some(d) = &mut alert.definition {
                clean_definition(d);
            }
        }
        None => {}
    }
}

fn count(app: &str, what: &str, value: u64) -> Result<(), String> {
    if value > MAX_COUNT {
        return Err(format!(
            "app {app:?}: {what} {value} is more than {MAX_COUNT} in one minute"
        ));
    }
    Ok(())
}

fn definition(d: &ExceptionDefinition) -> Result<(), String> {
    if d.causes.len() > MAX_DEFINITION_ITEMS || d.frames.len() > MAX_DEFINITION_ITEMS {
        return Err(format!(
            "definition {:016x}: {} causes and {} frames, more than {MAX_DEFINITION_ITEMS}",
            d.fingerprint,
            d.causes.len(),
            d.frames.len()
        ));
    }
    let bytes = d.class.len()
        + d.message.len()
        + d.sample.len()
        + d.causes.iter().map(String::len).sum::<usize>()
        + d.frames.iter().map(String::len).sum::<usize>();
    if bytes > MAX_DEFINITION_BYTES {
        return Err(format!(
            "definition {:016x}: {bytes} bytes, more than {MAX_DEFINITION_BYTES}",
            d.fingerprint
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_in_free_text_are_replaced() {
        let mut r = report(NOW - 120);
        r.agent_version = "1.0\0".into();
        if let Some(Body::Minute(m)) = &mut r.body {
            m.apps[0].definitions.push(ExceptionDefinition {
                class: "java.lang.IllegalStateException".into(),
                message: "bad\0byte".into(),
                frames: vec!["at a.B(B.java:1)\0".into()],
                ..Default::default()
            });
        }
        without_nul(&mut r);
        assert_eq!(r.agent_version, "1.0\u{fffd}");
        let Some(Body::Minute(m)) = &r.body else {
            panic!("a minute report");
        };
        assert_eq!(m.apps[0].definitions[0].message, "bad\u{fffd}byte");
        assert!(!m.apps[0].definitions[0].frames[0].contains('\0'));
    }
    use vigil_proto::v1::{Alert, AppCounters, ExceptionCount, MinuteReport};

    const NOW: i64 = 1_763_880_000;

    fn report(minute: i64) -> Report {
        Report {
            protocol_version: PROTOCOL_VERSION,
            host: "h".into(),
            instance: "i".into(),
            seq: 1,
            body: Some(Body::Minute(MinuteReport {
                minute,
                apps: vec![AppCounters {
                    app: "shop".into(),
                    ..Default::default()
                }],
                host_metrics: None,
            })),
            ..Default::default()
        }
    }

    fn app(r: &mut Report) -> &mut AppCounters {
        match &mut r.body {
            Some(Body::Minute(m)) => &mut m.apps[0],
            _ => unreachable!("a minute report"),
        }
    }

    fn rejected(r: &Report, expected: &str) {
        match validate(r, NOW) {
            Ok(()) => panic!("accepted; expected a rejection with {expected:?}"),
            Err(e) => assert!(e.contains(expected), "{e:?} does not say {expected:?}"),
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(validate(&report(NOW), NOW), Ok(()));
        rejected(&report(NOW + 30), "multiple of 60");
        rejected(&report(NOW + 2 * 86_400), "in the future");
        rejected(&report(NOW - 31 * 86_400), "in the past");
        rejected(&report(i64::MIN + 8), "in the past");
        let mut old = report(NOW);
        old.protocol_version = 7;
        rejected(&old, "protocol version 7");
        let mut no_seq = report(NOW);
        no_seq.seq = 0;
        rejected(&no_seq, "seq 0");
        let mut big_seq = report(NOW);
        big_seq.seq = u64::MAX;
        rejected(&big_seq, "seq 18446744073709551615");
    }

    #[test]
    fn request_counters_must_add_up() {
        use vigil_proto::v1::{LatencyBucket, RequestCounters};
        let good = RequestCounters {
            count: 10,
            status_2xx: 9,
            status_5xx: 1,
            latency: vec![LatencyBucket {
                index: 20,
                count: 10,
            }],
            latency_sum_ms: 320.0,
            ..Default::default()
        };
        let with = |change: &dyn Fn(&mut RequestCounters)| {
            let mut r = report(NOW);
            let mut counters = good.clone();
            change(&mut counters);
            app(&mut r).requests = Some(counters);
            r
        };
        assert_eq!(validate(&with(&|_| {}), NOW), Ok(()));
        rejected(
            &with(&|r| r.status_2xx = 3),
            "add up to 4, not requests.count 10",
        );
        rejected(
            &with(&|r| r.latency[0].count = 11),
            "11 latency times for 10 requests",
        );
        rejected(
            &with(&|r| r.latency[0].index = 500),
            "latency bucket 500 outside",
        );
        rejected(
            &with(&|r| r.latency_sum_ms = f64::NAN),
            "not a time of 10 requests",
        );
        rejected(
            &with(&|r| r.latency_sum_ms = 1e300),
            "not a time of 10 requests",
        );
        rejected(&with(&|r| r.malformed = u64::MAX), "requests.malformed");
        rejected(
            &with(&|r| {
                r.latency = (0..200)
                    .map(|i| LatencyBucket {
                        index: i - 40,
                        count: 0,
                    })
                    .collect();
            }),
            "200 latency buckets",
        );
    }

    #[test]
    fn names_with_control_characters_are_refused() {
        let mut r = report(NOW);
        r.host = "web-1\n2026-11-29 INFO forged".into();
        rejected(&r, "host \"web-1\\n2026");
        let mut r = report(NOW);
        app(&mut r).app = "shop\u{1b}[31m".into();
        rejected(&r, "control characters");
    }

    #[test]
    fn counts_and_sizes_are_bounded() {
        let mut r = report(NOW);
        app(&mut r).lines = u64::MAX;
        rejected(&r, "lines 18446744073709551615 is more than");
        let mut r = report(NOW);
        app(&mut r).exceptions = vec![ExceptionCount {
            fingerprint: 1,
            count: i64::MAX as u64,
        }];
        rejected(&r, "exception count");
        let mut r = report(NOW);
        app(&mut r).exceptions = (0..=MAX_FINGERPRINTS as u64)
            .map(|fingerprint| ExceptionCount {
                fingerprint,
                count: 1,
            })
            .collect();
        rejected(&r, "10001 fingerprint counts");
        let mut r = report(NOW);
        app(&mut r).definitions = vec![ExceptionDefinition {
            sample: "x".repeat(MAX_DEFINITION_BYTES + 1),
            ..Default::default()
        }];
        rejected(&r, "bytes, more than");
        let mut r = report(NOW);
        if let Some(Body::Minute(m)) = &mut r.body {
            m.apps = (0..=MAX_APPS)
                .map(|i| AppCounters {
                    app: format!("app-{i}"),
                    ..Default::default()
                })
                .collect();
        }
        rejected(&r, "apps: 257");
    }

    #[test]
    fn alerts_are_bounded_in_time() {
        let alert = |at| Report {
            body: Some(Body::Alert(Alert {
                app: "shop".into(),
                at,
                definition: Some(ExceptionDefinition::default()),
                count: 1,
            })),
            ..report(NOW)
        };
        assert_eq!(validate(&alert(NOW), NOW), Ok(()));
        rejected(&alert(i64::MIN), "alert at");
        rejected(&alert(NOW + 10 * 365 * 86_400), "alert at");
    }
}
