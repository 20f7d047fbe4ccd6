//! The `handover` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use handover::config::{Config, DEFAULT_NATS_URL};

/// Handover: an event backbone sharing discharge, referral and care-package information
/// between NHS hospitals and councils.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (handover.toml).
    #[arg(long, global = true, env = "HANDOVER_CONFIG")]
    config: Option<PathBuf>,
    /// NATS server URL; overrides the configuration file.
    #[arg(long, global = true, env = "HANDOVER_NATS_URL")]
    nats_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Everything in one process for a newcomer; starts a local nats-server when no URL is given.
    Dev {
        /// Load a realistic synthetic week of events.
        #[arg(long)]
        demo: bool,
        /// Data directory.
        #[arg(long, default_value = ".handover")]
        data_dir: PathBuf,
    },
    /// Production: run the components the configuration enables.
    Serve,
    /// Publish CloudEvents from a JSON or JSON Lines file.
    Publish {
        /// The file.
        file: PathBuf,
    },
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HANDOVER_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.compact().init();
    } else {
        builder.json().init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = Config::resolve(cli.config.as_deref(), cli.nats_url.as_deref())?;
    match cli.command {
        Command::Dev { demo, data_dir } => {
            handover::dev::run(cfg, handover::dev::DevOptions { demo, data_dir }).await
        }
        Command::Serve => {
            let rt = handover::runtime::Runtime::start(&cfg, None).await?;
            if let Some(a) = rt.api_addr {
                tracing::info!(address = %a, "API listening");
            }
            tokio::signal::ctrl_c().await?;
            rt.shutdown().await;
            Ok(())
        }
        Command::Publish { file } => {
            let events = handover::publish::read_events(&file)?;
            let url = cfg
                .nats
                .url
                .clone()
                .unwrap_or_else(|| DEFAULT_NATS_URL.to_string());
            let key = match cfg.pseudonym_key() {
                Ok(k) => k,
                Err(_) if std::path::Path::new(".handover/pseudonym.key").exists() => {
                    let mut c = cfg.clone();
                    c.pseudonym.key_file = Some(".handover/pseudonym.key".into());
                    c.pseudonym_key()?
                }
                Err(e) => return Err(e),
            };
            let log = handover_nats::EventLog::connect(
                &url,
                handover_nats::LogConfig {
                    stream: cfg.nats.stream.clone(),
                    replicas: cfg.nats.replicas,
                    duplicate_window: std::time::Duration::from_secs(
                        cfg.nats.duplicate_window_secs,
                    ),
                    ..Default::default()
                },
                key,
            )
            .await?;
            let (stored, dups) = handover::publish::publish_all(&log, &events).await?;
            println!("{stored} events stored, {dups} duplicates of events already stored");
            Ok(())
        }
    }
}
