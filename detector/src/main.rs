//! `vigil-detector`: the central service of Vigil.

use std::path::PathBuf;
use std::process::ExitCode;

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
        Command::Run { config } => {
            let config = DetectorConfig::load(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(async {
                let detector = Detector::bind(config).await?;
                detector.serve(shutdown_signal()).await?;
                Ok(())
            })
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
