//! The systemd units in `systemd/` pass `systemd-analyze verify` (with their `ExecStart`
//! pointing at the real built binaries, which verify requires to exist), keep the hardening
//! the packages promise, and stay under an exposure level of 2.5 in
//! `systemd-analyze security`.

mod common;
mod ops_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::output_within;
use ops_common::{require_tool, workspace};

const UNITS: [(&str, &str); 2] = [
    ("vigil-agent.service", "vigil-agent"),
    ("vigil-detector.service", "vigil-detector"),
];

/// Copies the units into `dir` with `/usr/bin/vigil-*` replaced by the built binaries.
fn units_with_built_binaries(dir: &std::path::Path) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|(unit, binary)| {
            let text = std::fs::read_to_string(workspace().join("systemd").join(unit))
                .unwrap_or_else(|e| panic!("read systemd/{unit}: {e}"));
            let built = common::binary(binary);
            let built = built.to_str().expect("binary path is UTF-8");
            assert!(
                !built.contains(char::is_whitespace),
                "systemd would need the binary path {built:?} quoted"
            );
            let installed = format!("/usr/bin/{binary} ");
            assert!(
                text.contains(&format!("ExecStart={installed}")),
                "{unit}: ExecStart is not {installed}"
            );
            let rewritten = text.replace(&installed, &format!("{built} "));
            let path = dir.join(unit);
            common::write(&path, &rewritten);
            path
        })
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = require_tool(
        "units_pass_systemd_analyze_verify",
        "systemd-analyze",
        "systemd",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let units = units_with_built_binaries(dir.path());
    let output = output_within(
        Command::new(&analyze).arg("verify").args(&units),
        None,
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    // verify exits 0 on warnings (an unknown key is only "ignoring"): any line about our
    // units fails the test. Lines about other units of this machine are not ours to judge.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("vigil-"))
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "systemd-analyze verify {}:\n{stderr}",
        output.status
    );

    for unit in &units {
        let output = output_within(
            Command::new(&analyze)
                .args(["security", "--offline=yes", "--no-pager", "--threshold=25"])
                .arg(unit),
            None,
            Duration::from_secs(120),
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let overall = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("no overall exposure level printed");
        eprintln!("{overall}");
        assert!(
            output.status.success(),
            "{}: exposure above 2.5 ({})\n{text}{}",
            unit.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The `[Service]` settings of a unit as (key, value) pairs, in order.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("systemd").join(unit))
        .unwrap_or_else(|e| panic!("read systemd/{unit}: {e}"));
    let mut in_service = false;
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((key, value)) = line.split_once('=')
        {
            settings.push((key.to_owned(), value.to_owned()));
        }
    }
    settings
}

#[test]
fn units_run_unprivileged_and_hardened() {
    let common = [
        ("User", "vigil"),
        ("Group", "vigil"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "077"),
        ("Restart", "on-failure"),
        ("StateDirectoryMode", "0700"),
    ];
    for (unit, binary) in UNITS {
        let settings = service_settings(unit);
        let has = |key: &str, value: &str| settings.iter().any(|(k, v)| k == key && v == value);
        for (key, value) in common {
            assert!(has(key, value), "{unit}: {key}={value} is missing");
        }
        assert!(has("StateDirectory", binary), "{unit}: StateDirectory");
        assert!(
            settings.iter().any(|(k, _)| k == "MemoryMax"),
            "{unit}: MemoryMax"
        );
        assert!(
            !settings
                .iter()
                .any(|(k, v)| (k == "User" || k == "Group") && (v == "root" || v == "0")),
            "{unit}: runs as root"
        );
        let config = format!("--config /etc/vigil/{}.toml", &binary["vigil-".len()..]);
        assert!(
            settings
                .iter()
                .any(|(k, v)| k == "ExecStart" && v.ends_with(&format!("run {config}"))),
            "{unit}: ExecStart does not run with {config}"
        );
    }
    let agent = service_settings("vigil-agent.service");
    let has = |key: &str, value: &str| agent.iter().any(|(k, v)| k == key && v == value);
    assert!(has("SupplementaryGroups", "adm"));
    assert!(has(
        "ExecStartPre",
        "/usr/bin/vigil-agent check --offline --config /etc/vigil/agent.toml"
    ));
    assert!(has("ExecReload", "/bin/kill -HUP $MAINPID"));
    let detector = service_settings("vigil-detector.service");
    assert!(detector.iter().any(|(k, v)| k == "ExecStartPre"
        && v == "/usr/bin/vigil-detector check --config /etc/vigil/detector.toml"));
}
