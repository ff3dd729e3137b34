//! What a release request may hold: names, host lists and times, checked before anything
//! is stored. Host lists are checked with hash sets, so a request naming tens of thousands
//! of hosts costs milliseconds, not seconds.

use std::collections::HashSet;

use super::ReleaseError;
use crate::config::Limits;

/// Longest app, version and host name accepted, in bytes: as in reports.
pub(super) const MAX_NAME: usize = crate::names::MAX_NAME_BYTES;
/// How far in the future a time given to the API may lie (clock skew).
const MAX_FUTURE_SECS: i64 = 24 * 3600;

/// An app or version name: trimmed, 1 to [`MAX_NAME`] bytes, no control characters.
pub(super) fn check_name(what: &str, value: &str) -> Result<String, ReleaseError> {
    let value = value.trim();
    crate::names::check(what, value, MAX_NAME).map_err(ReleaseError::Invalid)?;
    Ok(value.to_owned())
}

/// Host names: each 1 to [`MAX_NAME`] bytes without surrounding spaces or control
/// characters, none twice.
pub(super) fn check_hosts(what: &str, hosts: &[String]) -> Result<(), ReleaseError> {
    let mut seen = HashSet::with_capacity(hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        if h.trim().is_empty()
            || h.len() > MAX_NAME
            || h.trim() != h
            || h.chars().any(char::is_control)
        {
            return Err(ReleaseError::Invalid(format!(
                "{what}[{i}] {h:?} is not a host name (1 to {MAX_NAME} bytes, no surrounding \
                 spaces or control characters)"
            )));
        }
        if !seen.insert(h.as_str()) {
            return Err(ReleaseError::Invalid(format!("{what} names {h:?} twice")));
        }
    }
    Ok(())
}

/// A release's hosts (every batch and the reference group) within
/// [`Limits::max_hosts_per_release`].
pub(super) fn check_host_count(total: usize, limits: &Limits) -> Result<(), ReleaseError> {
    if total > limits.max_hosts_per_release {
        return Err(ReleaseError::OutOfLimits(format!(
            "the release would name {total} hosts, more than limits.max_hosts_per_release ({})",
            limits.max_hosts_per_release
        )));
    }
    Ok(())
}

/// A time given to the API: Unix seconds, at most a day ahead and at most
/// [`Limits::max_backdate_secs`] back.
pub(super) fn check_time(
    what: &str,
    t: i64,
    now: i64,
    limits: &Limits,
) -> Result<(), ReleaseError> {
    if t <= 0 {
        return Err(ReleaseError::Invalid(format!(
            "{what} ({t}) must be UTC Unix seconds"
        )));
    }
    if t > now.saturating_add(MAX_FUTURE_SECS) {
        return Err(ReleaseError::Invalid(format!(
            "{what} ({t}) is more than a day in the future"
        )));
    }
    if t < now.saturating_sub(limits.max_backdate_secs) {
        return Err(ReleaseError::OutOfLimits(format!(
            "{what} ({t}) is {} s before now, more than limits.max_backdate ({} s)",
            now - t,
            limits.max_backdate_secs
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_bounded_on_both_sides() {
        let limits = Limits::default();
        let now = 1_763_880_000;
        assert!(check_time("at", now - 3600, now, &limits).is_ok());
        assert!(matches!(
            check_time("started_at", 1, now, &limits),
            Err(ReleaseError::OutOfLimits(m)) if m.contains("limits.max_backdate")
        ));
        assert!(matches!(
            check_time("at", now + 2 * 86_400, now, &limits),
            Err(ReleaseError::Invalid(_))
        ));
        assert!(matches!(
            check_time("at", i64::MIN, now, &limits),
            Err(ReleaseError::Invalid(_))
        ));
    }

    #[test]
    fn forty_thousand_hosts_are_checked_quickly() {
        let hosts: Vec<String> = (0..40_000).map(|i| format!("host-{i}")).collect();
        let started = std::time::Instant::now();
        check_hosts("hosts", &hosts).expect("distinct hosts");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let mut twice = hosts.clone();
        twice.push("host-7".into());
        assert!(check_hosts("hosts", &twice).is_err());
        assert!(check_hosts("hosts", &["a\nb".to_owned()]).is_err());
    }
}
