//! The `handover` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use handover::config::Config;

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
    /// Rebuild a read model without downtime, inside the running server (admin token).
    Rebuild {
        /// The projection (default `journey`, the only one).
        #[arg(default_value = "journey")]
        projection: String,
        /// The running API (default: http:// and the configured api.listen address).
        #[arg(long, env = "HANDOVER_API_URL")]
        api_url: Option<String>,
        /// An admin bearer token.
        #[arg(long, env = "HANDOVER_TOKEN")]
        token: String,
    },
    /// Erase a person from the event log and every read model (admin token; recorded in the
    /// access audit with the reason).
    Erase {
        /// The person's NHS number.
        nhs_number: String,
        /// Why: the reference of the controller's decision.
        #[arg(long)]
        reason: String,
        /// The running API (default: http:// and the configured api.listen address).
        #[arg(long, env = "HANDOVER_API_URL")]
        api_url: Option<String>,
        /// An admin bearer token.
        #[arg(long, env = "HANDOVER_TOKEN")]
        token: String,
    },
    /// Events the projections could not apply: list, replay (after a fix) or discard.
    Parked {
        #[command(subcommand)]
        action: ParkedAction,
    },
    /// Streams, consumers, projection lag and the running API's readiness, as a table.
    Status {
        /// The running API (default: http:// and the configured api.listen address).
        #[arg(long, env = "HANDOVER_API_URL")]
        api_url: Option<String>,
    },
    /// The performance benchmark: starts its own nats-server and sled, prints a Markdown table.
    Bench {
        /// Events per run (default 1,000,000; 20,000 with --quick).
        #[arg(long)]
        events: Option<u64>,
        /// People the events are spread over (default 100,000; 2,000 with --quick).
        #[arg(long)]
        people: Option<u64>,
        /// Runs; each figure is the median and range over them (default 3; 1 with --quick).
        #[arg(long)]
        runs: Option<usize>,
        /// Smoke size: 20,000 events, 2,000 people, 1 run.
        #[arg(long)]
        quick: bool,
        /// Seed of the generated events.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// sled's page cache of the projection under test, in MiB (default: `store.cache_mb`'s
        /// default, 64).
        #[arg(long)]
        cache_mb: Option<u64>,
        /// Compress the read-model store under test (`store.compression`).
        #[arg(long)]
        compression: bool,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write the Markdown table to this file.
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ParkedAction {
    /// Projection, stream sequence, kind, time and error of each parked event (no identifiers).
    List,
    /// Re-publish the event parked at stream sequence SEQ to the care stream, then unpark it.
    Replay {
        /// Its sequence in the care stream (as `list` shows).
        seq: u64,
    },
    /// Delete the event parked at stream sequence SEQ from the parked stream.
    Discard {
        /// Its sequence in the care stream (as `list` shows).
        seq: u64,
    },
}

/// mimalloc instead of the system allocator: the projector and the ingest paths allocate per
/// event, and glibc's malloc/free were about 30% of their CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match handover::telemetry::init() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(cli).await;
    telemetry.shutdown().await;
    match result {
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
            handover::runtime::stop_signal().await?;
            rt.shutdown().await;
            Ok(())
        }
        Command::Publish { file } => {
            let events = handover::publish::read_events(&file)?;
            let log = handover::ops::connect_log(&cfg).await?;
            let (stored, dups) = handover::publish::publish_all(&log, &events).await?;
            println!("{stored} events stored, {dups} duplicates of events already stored");
            Ok(())
        }
        Command::Rebuild {
            projection,
            api_url,
            token,
        } => {
            let api_url = api_url.unwrap_or_else(|| format!("http://{}", cfg.api.listen));
            handover::ops::rebuild_main(&api_url, &token, &projection).await
        }
        Command::Erase {
            nhs_number,
            reason,
            api_url,
            token,
        } => {
            let api_url = api_url.unwrap_or_else(|| format!("http://{}", cfg.api.listen));
            handover::ops::erase_main(&api_url, &token, &nhs_number, &reason).await
        }
        Command::Parked { action } => {
            let cmd = match action {
                ParkedAction::List => handover::ops::ParkedCommand::List,
                ParkedAction::Replay { seq } => handover::ops::ParkedCommand::Replay(seq),
                ParkedAction::Discard { seq } => handover::ops::ParkedCommand::Discard(seq),
            };
            handover::ops::parked_main(&cfg, cmd).await
        }
        Command::Status { api_url } => handover::status::run(&cfg, api_url).await,
        Command::Bench {
            events,
            people,
            runs,
            quick,
            seed,
            cache_mb,
            compression,
            json,
            markdown,
        } => {
            let mut opts = handover::bench::BenchOptions::new(quick, events, people, runs);
            opts.seed = seed;
            opts.cache_mb = cache_mb;
            opts.compression = compression;
            opts.json = json;
            opts.markdown = markdown;
            handover::bench::main(opts).await
        }
    }
}
