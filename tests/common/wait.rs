//! Waiting with a deadline, and child processes that never outlive a failing test.
//!
//! Plain `std`, so that the agent's and the detector's test crates use this very file too
//! (`#[path = "../../tests/common/wait.rs"] mod wait;`) instead of copies of it.
//!
//! Every wait in the suite goes through here or has its own deadline: a test that waits
//! for something that never happens fails saying what it was waiting for, it does not hang.

#![allow(dead_code)]

use std::fmt::Display;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a condition is polled: often enough not to slow a test down, seldom enough
/// that polling a detector over HTTP does not load a starved machine.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `done` until it holds; panics saying what it was waiting for (`what`) if `timeout`
/// passes first.
#[track_caller]
pub fn wait_until(timeout: Duration, what: impl Display, done: impl FnMut() -> bool) {
    wait_until_polling(POLL, timeout, what, done);
}

/// [`wait_until`], polling every `every`.
#[track_caller]
pub fn wait_until_polling(
    every: Duration,
    timeout: Duration,
    what: impl Display,
    mut done: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !done() {
        if started.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// Polls `f` until it returns a value and returns it; panics saying what it was waiting for
/// (`what`) if `timeout` passes first.
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: impl Display, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        if started.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held. For waits whose
/// failure message needs the state found at the end: `assert!(eventually(..), "...")`.
pub fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if done() {
            return true;
        }
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// A child process started in a process group of its own (see [`spawn_group`]); the whole
/// group (the child and whatever it started: Chromium's renderers, a script's commands) is
/// killed with SIGKILL when this is dropped, also while a failing test unwinds.
#[derive(Debug)]
pub struct Group {
    child: Child,
    done: bool,
}

/// Starts `command` as the leader of a new process group, killed when the returned guard is
/// dropped.
pub fn spawn_group(command: &mut Command) -> Group {
    command.process_group(0);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    Group { child, done: false }
}

impl Group {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the leader has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        if status.is_some() {
            self.done = true;
        }
        status
    }

    /// Waits at most `timeout` for the leader to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if started.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL to every process of the group, then reaps the leader.
    pub fn kill(&mut self) {
        // The group may hold processes the leader started even after the leader exited.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Also when the leader is done: what it left in its group goes too.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `command` to its end like [`Command::output`] (stdin `input`, or empty), but for at
/// most `timeout`: then its process group is killed and the test fails with the output so
/// far. Output is read while the command runs, so a chatty command never blocks on a full
/// pipe.
#[track_caller]
pub fn output_within(command: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut group = spawn_group(command);
    let feeder = input.map(|input| {
        let mut stdin = group.child().stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })
    });
    let drain = |pipe: Option<Box<dyn Read + Send>>| -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        group
            .child()
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        group
            .child()
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = group.wait_timeout(timeout);
    if status.is_none() {
        group.kill();
    } else {
        // The leader is done; anything it left behind holding the pipes goes now.
        drop(group);
    }
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{command:?} did not finish within {timeout:?} (killed); its output so far:\n{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}
