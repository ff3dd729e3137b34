//! `vigil-detector`: the central service of Vigil.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigil_detector::Detector;
use vigil_detector::config::{DEFAULT_PATH, DetectorConfig};

/// Vigil's detector: ingests agents' counters and judges releases.
#[derive(Debug, Parser)]
#[command(name = "vigil-detector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Run {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration file.
    Check {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Judge recorded or generated releases (JSON Lines replay cases) and print precision,
    /// recall and time to block.
    Replay {
        /// One JSON object per case, then a JSON summary as the last line.
        #[arg(long)]
        json: bool,
        /// The cases (JSON Lines).
        file: PathBuf,
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-detector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { config } => {
            DetectorConfig::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Replay { json, file } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            vigil_detector::replay::run_file(&file, json, &mut out)
                .with_context(|| format!("{}", file.display()))?;
            std::io::Write::flush(&mut out).context("cannot write the results")?;
            Ok(())
        }
        Command::Run { config: path } => {
            let mut config = DetectorConfig::load(&path)?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            // SIGHUP re-reads the configuration: a valid one takes over (the ports are
            // bound again; agents reconnect and re-send what was not acknowledged); an
            // invalid one is refused, the reason logged, the running one kept.
            loop {
                let next = Arc::new(Mutex::new(None));
                let stop = stop_signal(path.clone(), Arc::clone(&next));
                runtime.block_on(async {
                    let detector = Detector::bind(config).await?;
                    detector.serve(stop).await
                })?;
                let reloaded = next
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                match reloaded {
                    Some(new) => {
                        tracing::info!(config = %path.display(), "configuration reloaded");
                        config = new;
                    }
                    None => return Ok(()),
                }
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT (stop), or on SIGHUP with a valid configuration at `path`
/// (reload: the configuration is left in `next`). A SIGHUP with an invalid configuration is
/// logged and otherwise ignored.
async fn stop_signal(path: PathBuf, next: Arc<Mutex<Option<DetectorConfig>>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(hup)) => (term, hup),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM and SIGHUP; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => match DetectorConfig::load(&path) {
                Ok(config) => {
                    *next.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(config);
                    tracing::info!("reloading the configuration");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "new configuration refused; the running one is kept");
                }
            },
        }
    }
    tracing::info!("shutting down");
}
