//! A fresh database on the test PostgreSQL server for each test that needs one, and a
//! plain TCP load balancer, for detectors sharing a store.
//!
//! The server is the throwaway cluster `.ci/postgres start` runs (`.ci/run` starts it and
//! exports `VIGIL_TEST_POSTGRES`). Without it a test is skipped with a message, except
//! under CI, where it must be there.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A database of its own on the test server, dropped with it.
pub struct TestDatabase {
    /// `postgres://...` of the database.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDatabase {
    /// Creates `vigil_<prefix>_<pid>_<nanos>`; `None` (after saying why) when no test
    /// server is configured outside CI.
    pub fn create(prefix: &str) -> Option<Self> {
        let Ok(admin) = std::env::var("VIGIL_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "VIGIL_TEST_POSTGRES is not set under CI: .ci/run must start PostgreSQL (.ci/postgres start)"
            );
            eprintln!(
                "SKIPPED: no PostgreSQL server (run `eval \"$(.ci/postgres start)\"` first; needs the postgresql package)"
            );
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("vigil_{prefix}_{}_{nanos}", std::process::id());
        psql(&admin, &format!("CREATE DATABASE {name}"));
        // The admin URL names the server's default database; swap in the new one.
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Some(Self {
            url: format!("{base}/{name}"),
            admin,
            name,
        })
    }

    /// Runs `sql` on this database and returns psql's unaligned output.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &self.admin, "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn psql(url: &str, sql: &str) -> String {
    let out = super::output_within(
        Command::new("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", url, "-c"])
            .arg(sql),
        None,
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A TCP load balancer on 127.0.0.1: each connection goes to the next backend that
/// accepts it (round robin), bytes copied both ways until either side closes. A backend
/// that dies takes its connections with it; its clients reconnect and reach another.
pub struct TcpBalancer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TcpBalancer {
    pub fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("balancer port");
        let addr = listener.local_addr().expect("balancer address");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let backends = backends.clone();
                            let first = next.fetch_add(1, Ordering::Relaxed);
                            std::thread::spawn(move || forward(client, &backends, first));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
        Self { addr, stop }
    }

    /// `http://addr`, as an agent's endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TcpBalancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn forward(client: TcpStream, backends: &[SocketAddr], first: usize) {
    let _ = client.set_nonblocking(false);
    let server = (0..backends.len())
        .map(|i| backends[(first + i) % backends.len()])
        .find_map(|b| TcpStream::connect_timeout(&b, Duration::from_secs(1)).ok());
    let Some(server) = server else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(client2, server2));
    pipe(server, client);
    let _ = up.join();
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
