//! `vigil-agent`: Vigil's agent for every production host.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigil_agent::config::{AgentConfig, DEFAULT_PATH};

/// Vigil's agent: watches Java logs and host metrics and ships per-minute counters.
#[derive(Debug, Parser)]
#[command(name = "vigil-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration, list the files each glob matches and the scrape targets,
    /// try the targets and the detector.
    Check {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Try neither the detector nor the scrape targets (for a unit's ExecStartPre: the
        /// agent must start, and keep its reports, while they are down).
        #[arg(long)]
        offline: bool,
    },
    /// Read log files from the start and print every exception event, then a summary per
    /// fingerprint.
    Parse {
        /// One JSON object per event, then a summary object.
        #[arg(long)]
        json: bool,
        /// Packages whose frames are the app's own (comma-separated).
        #[arg(long, value_delimiter = ',')]
        app_packages: Vec<String>,
        /// Log files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Ask the running agent (its admin endpoint) for files, spool and detector state.
    Status {
        /// Configuration file (for `admin_listen`).
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Print the status as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Take one host-metrics sample over one second and print it.
    Sample {
        /// One JSON object with the `host_metrics` keys of a replay case.
        #[arg(long)]
        json: bool,
        /// Where the host's /proc is mounted.
        #[arg(long, default_value = "/proc")]
        procfs: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vigil-agent: error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already holds (most errors here name their OS error in their own message: it must not
/// be printed twice).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Returns whether everything was fine.
fn run(cli: Cli) -> anyhow::Result<bool> {
    // One thread: the main loop, the shipper and the admin endpoint take turns on it, so a
    // timer or a file event wakes one thread instead of a worker that then wakes another.
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime")
    };
    match cli.command {
        Command::Run { config: path } => {
            let mut config = AgentConfig::load(&path)?;
            let runtime = runtime()?;
            // SIGHUP re-reads the configuration: a valid one takes over (the spool and the
            // checkpoints carry everything over); an invalid one is refused, the reason
            // logged, and the running configuration kept.
            let next = Arc::new(Mutex::new(None));
            loop {
                let stop = stop_signal(path.clone(), Arc::clone(&next));
                match runtime.block_on(vigil_agent::run_until(config, stop))? {
                    vigil_agent::Stop::Shutdown => return Ok(true),
                    vigil_agent::Stop::Reload => {
                        config = next
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .take()
                            .context("reload without a configuration")?;
                        tracing::info!(config = %path.display(), "configuration reloaded");
                    }
                }
            }
        }
        Command::Parse {
            json,
            app_packages,
            files,
        } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            vigil_agent::java::parse_files(&files, &app_packages, json, &mut out)?;
            std::io::Write::flush(&mut out)?;
            Ok(true)
        }
        Command::Status { config, json } => {
            let config = AgentConfig::load(&config)?;
            let addr = config
                .admin_listen
                .context("admin_listen is \"\" in the configuration: the agent serves no status")?;
            let url = format!("http://{addr}/status");
            let status: vigil_agent::admin::Status = ureq::get(&url)
                .call()
                .with_context(|| format!("cannot reach the agent at {url}"))?
                .body_mut()
                .read_json()
                .with_context(|| format!("{url}: not a status"))?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                print_status(&status);
            }
            Ok(true)
        }
        Command::Sample { json, procfs } => {
            let mut out = std::io::stdout().lock();
            vigil_agent::host::sample_command(&procfs, json, &mut out)?;
            Ok(true)
        }
        Command::Check {
            config: path,
            offline,
        } => {
            let config = AgentConfig::load(&path)?;
            println!("{}: configuration is valid", path.display());
            let mut ok = check_data_dir(&config.data_dir, offline);
            ok &= list_files(&config);
            let runtime = runtime()?;
            ok &= list_scrapes(&config, (!offline).then_some(&runtime));
            if offline {
                return Ok(ok);
            }
            match runtime.block_on(vigil_agent::ship::probe(&config.detector)) {
                Ok(()) => println!("detector {}: reachable", config.detector.endpoint),
                Err(e) => {
                    println!("detector {}: PROBLEM: {e}", config.detector.endpoint);
                    ok = false;
                }
            }
            Ok(ok)
        }
    }
}

fn print_status(status: &vigil_agent::admin::Status) {
    println!(
        "host {} (instance {}, vigil-agent {})",
        status.host, status.instance, status.version
    );
    let d = &status.detector;
    println!(
        "detector {}: {}, last acknowledged report {}",
        d.endpoint,
        if d.connected {
            "connected"
        } else {
            "NOT CONNECTED"
        },
        d.last_acked_seq
    );
    let s = &status.spool;
    println!(
        "spool: {} reports, {} bytes{}{}{}",
        s.reports,
        s.bytes,
        s.oldest
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
            .map(|t| format!(", oldest made at {}", t.strftime("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default(),
        if s.full { ", FULL: reading paused" } else { "" },
        if s.corrupt_records > 0 {
            format!(", {} corrupt records skipped", s.corrupt_records)
        } else {
            String::new()
        }
    );
    let d = &status.data_dir;
    match &d.error {
        Some(error) if !d.writable => println!("data_dir {}: NOT WRITABLE: {error}", d.path),
        _ => println!("data_dir {}: writable", d.path),
    }
    if let Some(why) = &status.paused {
        println!("READING PAUSED: {why}");
    }
    let t = &status.tail;
    println!(
        "files: {} ({} open, at most {} at once{}{})",
        status.files.len(),
        t.open_files,
        t.max_open_files,
        if t.files_waiting > 0 {
            format!(", {} waiting for a file descriptor", t.files_waiting)
        } else {
            String::new()
        },
        if t.fd_limited {
            ", FILE DESCRIPTOR LIMIT: files take turns (raise LimitNOFILE / ulimit -n)"
        } else {
            ""
        }
    );
    for f in &status.files {
        println!(
            "  {:<12} {}  offset {} of {} (lag {} bytes)",
            f.app, f.path, f.offset, f.size, f.lag
        );
    }
}

/// Checks that `dir` is a directory the agent can write (creating it, as the agent would, if
/// it is missing): writes, syncs and removes a small probe file. A full file system is a
/// problem, or with `offline` (the service's pre-start check) a warning: the agent starts
/// and waits for room, reading nothing meanwhile.
fn check_data_dir(dir: &Path, offline: bool) -> bool {
    use std::io::Write;
    if dir.exists() && !dir.is_dir() {
        println!("data_dir {}: PROBLEM: not a directory", dir.display());
        return false;
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        println!("data_dir {}: PROBLEM: cannot create it: {e}", dir.display());
        return false;
    }
    let probe = dir.join(format!(".vigil-check-{}.tmp", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut file| {
        file.write_all(b"vigil-agent check\n")?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => {
            println!("data_dir {}: writable", dir.display());
            true
        }
        // ENOSPC, EDQUOT
        Err(e) if matches!(e.raw_os_error(), Some(28 | 122)) => {
            if offline {
                println!(
                    "data_dir {}: WARNING: full ({e}): the agent will read nothing until it has room",
                    dir.display()
                );
                true
            } else {
                println!("data_dir {}: PROBLEM: full: {e}", dir.display());
                false
            }
        }
        Err(e) => {
            println!("data_dir {}: PROBLEM: not writable: {e}", dir.display());
            false
        }
    }
}

/// Prints the files each glob matches now; returns false when a glob's directory is
/// missing or a matched file or directory cannot be read.
fn list_files(config: &AgentConfig) -> bool {
    let mut ok = true;
    let logs = config
        .logs
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("logs[{i}]"), &l.app, &l.paths));
    let access = config
        .access_logs
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("access_logs[{i}]"), &a.app, &a.paths));
    for (entry, app, paths) in logs.chain(access) {
        for pattern in paths {
            println!("{entry} app {app:?}: {pattern}");
            let base = glob_base(pattern);
            if !base.is_dir() {
                println!("    PROBLEM: directory {} does not exist", base.display());
                ok = false;
                continue;
            }
            let mut matched = 0;
            for entry in glob::glob(pattern).into_iter().flatten() {
                match entry {
                    Ok(path) if path.is_file() => {
                        matched += 1;
                        // Opened as the agent would open it: a file the agent's user
                        // cannot read is a problem, however it is listed.
                        match std::fs::File::open(&path) {
                            Ok(file) => {
                                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                                println!("    {} ({size} bytes)", path.display());
                            }
                            Err(e) => {
                                println!("    {}: PROBLEM: cannot read: {e}", path.display());
                                ok = false;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        println!("    PROBLEM: {e}");
                        ok = false;
                    }
                }
            }
            if matched == 0 {
                println!("    matches no file now (files that appear later are picked up)");
            }
        }
    }
    ok
}

/// Prints the scrape targets and, with a runtime, scrapes each once; returns false when one
/// cannot be scraped.
fn list_scrapes(config: &AgentConfig, runtime: Option<&tokio::runtime::Runtime>) -> bool {
    let mut ok = true;
    for (i, scrape) in config.scrape.iter().enumerate() {
        let requests = if config.access_logs.iter().any(|a| a.app == scrape.app) {
            "requests from the access log"
        } else {
            "requests from http_server_requests_seconds"
        };
        println!(
            "scrape[{i}] app {:?}: {} every {} (timeout {}, at most {} bytes; {requests})",
            scrape.app,
            scrape.endpoint.url,
            humantime::format_duration(scrape.interval),
            humantime::format_duration(scrape.timeout),
            scrape.max_bytes
        );
        if !scrape.families.is_empty() {
            let names: Vec<&str> = scrape.families.iter().map(|f| f.text.as_str()).collect();
            println!("    families: {}", names.join(", "));
        }
        let Some(runtime) = runtime else {
            continue;
        };
        match runtime.block_on(vigil_agent::scrape::probe(scrape)) {
            Ok(probe) => {
                println!(
                    "    scraped: {} bytes, {} samples, {} series of http_server_requests_seconds",
                    probe.bytes, probe.samples, probe.request_series
                );
                if !probe.families_missing.is_empty() {
                    println!(
                        "    not on the page now: {}",
                        probe.families_missing.join(", ")
                    );
                }
            }
            Err(e) => {
                println!("    PROBLEM: {} ({})", e, e.reason());
                ok = false;
            }
        }
    }
    ok
}

/// The directory part of a glob before its first wildcard.
fn glob_base(pattern: &str) -> &Path {
    let cut = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    let head = &pattern[..cut];
    let dir = match head.rfind('/') {
        Some(0) => "/",
        Some(i) => &head[..i],
        None => ".",
    };
    Path::new(dir)
}

/// Resolves on SIGTERM or SIGINT (stop), or on SIGHUP with a valid configuration at `path`
/// (reload, the configuration left in `next`). A SIGHUP with an invalid configuration is
/// logged and otherwise ignored.
async fn stop_signal(path: PathBuf, next: Arc<Mutex<Option<AgentConfig>>>) -> vigil_agent::Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(hup)) => (term, hup),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM and SIGHUP; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return vigil_agent::Stop::Shutdown;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => match AgentConfig::load(&path) {
                Ok(config) => {
                    *next.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(config);
                    return vigil_agent::Stop::Reload;
                }
                Err(e) => {
                    tracing::error!(error = %e, "new configuration refused; the running one is kept");
                }
            },
        }
    }
    tracing::info!("shutting down");
    vigil_agent::Stop::Shutdown
}
