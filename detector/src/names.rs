//! Names (hosts, apps, versions): the rule that reports and API calls alike are held to.

/// Longest host, instance and app name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// A name: 1 to `max` bytes, no control characters (they would forge log lines). The API's
/// app, version and host names are held to the same rule.
pub fn check(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!("{what} must be 1 to {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} {value:?} holds control characters"));
    }
    Ok(())
}
