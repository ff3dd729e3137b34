//! The `vigil-detector` command line, run as a user would.

#[path = "../../tests/common/wait.rs"]
mod wait;

use std::process::Command;
use std::time::Duration;

fn detector(args: &[&str]) -> (bool, String) {
    let output = wait::output_within(
        Command::new(env!("CARGO_BIN_EXE_vigil-detector")).args(args),
        None,
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn check_accepts_a_good_config_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "grpc_listen = \"127.0.0.1:7400\"\ndata_dir = \"/tmp/x\"\n",
    )
    .expect("write");
    let (ok, text) = detector(&["check", "--config", good.to_str().expect("utf-8")]);
    assert!(ok, "{text}");
    assert!(text.contains("good.toml: ok"), "{text}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "grpc_listen = \"everywhere\"\n").expect("write");
    let (ok, text) = detector(&["check", "--config", bad.to_str().expect("utf-8")]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("bad.toml") && text.contains("grpc_listen"),
        "{text}"
    );
}

#[test]
fn run_refuses_a_port_in_use_saying_which() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = dir.path().join("detector.toml");
    std::fs::write(
        &config,
        format!(
            "grpc_listen = \"127.0.0.1:{port}\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            dir.path().join("data")
        ),
    )
    .expect("write");
    let (ok, text) = detector(&["run", "--config", config.to_str().expect("utf-8")]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("cannot listen on 127.0.0.1:{port} (grpc_listen)")),
        "{text}"
    );
}
