//! The agent's `.deb`, built by `packaging/build-deb.sh` from the binary of this test
//! profile, installed with `dpkg -i` on this machine as an operator would: files, owners and
//! modes, the `vigil` user, the unit enabled, the installed `vigil-agent check` run as the
//! service user; then `dpkg --purge` leaves nothing behind.
//!
//! It changes the machine, so it runs only as root, on a machine without Vigil installed,
//! and a guard purges the package if the test fails midway.

mod common;
mod ops_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ops_common::{cannot_run, require_tool, workspace};

const TEST: &str = "agent_deb_installs_runs_and_purges";
const PACKAGE: &str = "vigil-agent";
const ENABLED_LINK: &str = "/etc/systemd/system/multi-user.target.wants/vigil-agent.service";

/// The longest one command of the test (a package build, an install) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

fn run(command: &mut Command) -> Output {
    let output = common::output_within(command, None, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8_lossy(&run(command).stdout)
        .trim()
        .to_owned()
}

/// dpkg's status of a package ("" when dpkg never heard of it).
fn package_status(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn is_known(package: &str) -> bool {
    let status = package_status(package);
    !status.is_empty() && !status.ends_with("not-installed")
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn group_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["group", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Purges the package when dropped unless the test already did: a failed assertion must not
/// leave Vigil installed on the machine.
struct Installed {
    purged: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            eprintln!("cleaning up: dpkg --purge {PACKAGE}");
            let _ = Command::new("dpkg").args(["--purge", PACKAGE]).status();
        }
    }
}

/// Asserts `path`'s owner, group and permission bits.
fn assert_owned(path: &str, user: u32, group: u32, mode: u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
        (user, group, mode),
        "{path}: (uid, gid, mode) should be ({user}, {group}, {mode:o})"
    );
}

#[test]
fn agent_deb_installs_runs_and_purges() {
    if !is_root() {
        cannot_run(TEST, "installing a package needs root");
        return;
    }
    let (Some(_), Some(_)) = (
        require_tool(TEST, "dpkg", "dpkg"),
        require_tool(TEST, "dpkg-deb", "dpkg"),
    ) else {
        return;
    };
    if is_known(PACKAGE) || is_known("vigil-detector") || user_exists("vigil") {
        cannot_run(
            TEST,
            "Vigil is already on this machine (a vigil package or user): this test installs and \
             purges it, so it runs only where it is absent (dpkg --purge vigil-agent vigil-detector)",
        );
        return;
    }
    let etc_vigil_existed = Path::new("/etc/vigil").exists();

    // Build from the binary the tests use: no second (release) build.
    let binary = common::binary(PACKAGE);
    let bin_dir = binary.parent().expect("binary directory");
    let out = tempfile::tempdir().expect("temp dir");
    let built = stdout(
        Command::new("bash")
            .arg(workspace().join("packaging/build-deb.sh"))
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--out")
            .arg(out.path())
            .args(["--compress", "none", "agent"]),
    );
    let deb = built.lines().last().unwrap_or_default().to_owned();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).is_file(),
        "build-deb.sh printed {built:?}"
    );
    let conffiles = stdout(Command::new("dpkg-deb").args(["-I", &deb, "conffiles"]));
    assert_eq!(conffiles, "/etc/vigil/agent.toml");

    let mut guard = Installed { purged: false };
    run(Command::new("dpkg")
        .args(["-i", &deb])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(
        package_status(PACKAGE).ends_with("ok installed"),
        "dpkg status: {}",
        package_status(PACKAGE)
    );

    // The service user: a system user with its own group, in adm, without a login.
    let uid: u32 = stdout(Command::new("id").args(["-u", "vigil"]))
        .parse()
        .expect("uid");
    let gid: u32 = stdout(Command::new("id").args(["-g", "vigil"]))
        .parse()
        .expect("gid");
    assert!(
        uid > 0 && uid < 1000,
        "vigil is not a system user: uid {uid}"
    );
    let groups = stdout(Command::new("id").args(["-nG", "vigil"]));
    assert!(
        groups.split_whitespace().any(|g| g == "adm"),
        "vigil is not in group adm: {groups}"
    );
    let passwd = stdout(Command::new("getent").args(["passwd", "vigil"]));
    assert!(passwd.ends_with(":/usr/sbin/nologin"), "{passwd}");

    // Files, owners and modes.
    assert_owned("/usr/bin/vigil-agent", 0, 0, 0o755);
    assert_owned("/etc/vigil/agent.toml", 0, gid, 0o640);
    assert_owned("/lib/systemd/system/vigil-agent.service", 0, 0, 0o644);
    assert_owned("/var/lib/vigil-agent", uid, gid, 0o700);
    let shipped = std::fs::read_to_string(workspace().join("packaging/agent.toml"))
        .expect("packaging/agent.toml");
    assert_eq!(
        std::fs::read_to_string("/etc/vigil/agent.toml").expect("installed config"),
        shipped
    );
    assert_eq!(
        std::fs::read_to_string("/lib/systemd/system/vigil-agent.service").expect("installed unit"),
        std::fs::read_to_string(workspace().join("systemd/vigil-agent.service"))
            .expect("systemd/vigil-agent.service")
    );
    // Enabled, so it starts at boot; postinst starts nothing.
    let link = std::fs::read_link(ENABLED_LINK)
        .unwrap_or_else(|e| panic!("the unit is not enabled: {ENABLED_LINK}: {e}"));
    assert_eq!(link, Path::new("/lib/systemd/system/vigil-agent.service"));

    // The installed binary validates the installed config, as root and as the service user
    // (as the unit's ExecStartPre runs it).
    let check = ["check", "--offline", "--config", "/etc/vigil/agent.toml"];
    let text = stdout(Command::new("/usr/bin/vigil-agent").args(check));
    assert!(text.contains("configuration is valid"), "{text}");
    if let Some(runuser) = ops_common::find_tool("runuser") {
        let text = stdout(
            Command::new(runuser)
                .args(["-u", "vigil", "--", "/usr/bin/vigil-agent"])
                .args(check),
        );
        assert!(text.contains("configuration is valid"), "{text}");
    }

    // Purge: nothing of Vigil is left.
    run(Command::new("dpkg")
        .args(["--purge", PACKAGE])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    guard.purged = true;
    assert!(
        !is_known(PACKAGE),
        "still known to dpkg: {}",
        package_status(PACKAGE)
    );
    for path in [
        "/usr/bin/vigil-agent",
        "/etc/vigil/agent.toml",
        "/lib/systemd/system/vigil-agent.service",
        "/var/lib/vigil-agent",
        ENABLED_LINK,
    ] {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} is left after purge"
        );
    }
    if !etc_vigil_existed {
        assert!(!Path::new("/etc/vigil").exists(), "/etc/vigil is left");
    }
    let overrides = stdout(Command::new("dpkg-statoverride").arg("--list"));
    assert!(
        !overrides.contains("/etc/vigil"),
        "stat override left: {overrides}"
    );
    assert!(!user_exists("vigil"), "the vigil user is left");
    assert!(!group_exists("vigil"), "the vigil group is left");
}
