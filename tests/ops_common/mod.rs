//! Shared parts of the operations tests (`tests/ops_*.rs`): finding the system tools they
//! drive, skipping politely on a developer's machine and failing under CI.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Whether the tests run under CI (`.ci/run` sets `CI`), where a missing tool is a failure.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Says why a test cannot run here: under CI that fails the test (`.ci/run` installs what
/// the tests need), elsewhere the test is skipped with the reason on stderr.
pub fn cannot_run(test: &str, reason: &str) {
    if under_ci() {
        panic!("{test}: {reason} (CI must provide it: see .ci/run)");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// The path of `tool` on `PATH` (or in the sbin directories root's `PATH` has), if any.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

/// `tool`, or `None` after [`cannot_run`] saying which Debian package provides it.
pub fn require_tool(test: &str, tool: &str, package: &str) -> Option<PathBuf> {
    let found = find_tool(tool);
    if found.is_none() {
        cannot_run(
            test,
            &format!("{tool} is not installed (Debian package {package})"),
        );
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The workspace root (where `systemd/` and `packaging/` are).
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
