//! `handover dev`: everything in one process for a newcomer, with a local `nats-server`
//! when no NATS URL is configured, data under `./.handover/`, and optional demo data.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use handover_api::{token_digest, Role, TokenConfig};
use handover_events::Event;
use rand::RngCore;

use crate::config::Config;
use crate::runtime::Runtime;

/// Options of `handover dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Load the demo week.
    pub demo: bool,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// Where Debian installs nats-server, checked after `PATH`.
const NATS_SERVER_PATHS: &[&str] = &[
    "/usr/sbin/nats-server",
    "/usr/bin/nats-server",
    "/usr/local/bin/nats-server",
];

/// Finds the `nats-server` binary.
pub fn find_nats_server() -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("nats-server");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    NATS_SERVER_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A nats-server child process, killed when dropped.
pub struct LocalNats {
    child: tokio::process::Child,
    /// Its client URL.
    pub url: String,
}

impl LocalNats {
    /// Starts nats-server with JetStream, storing under `dir`, on a free loopback port.
    pub async fn start(dir: &Path) -> anyhow::Result<LocalNats> {
        let bin = find_nats_server().ok_or_else(|| {
            anyhow::anyhow!(
                "nats-server is not installed and no NATS URL is configured.\n  \
                 Install it with `cargo xtask setup` (or `sudo apt-get install nats-server`),\n  \
                 or point Handover at a server with --nats-url / HANDOVER_NATS_URL."
            )
        })?;
        let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("nats-server.log"))?;
        let child = tokio::process::Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "nats-server did not start; see {}",
                    dir.join("nats-server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(LocalNats { child, url })
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Reads or creates the dev pseudonym key file.
fn dev_key(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("pseudonym.key");
    if !path.exists() {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        std::fs::write(&path, hex::encode(k))?;
    }
    Ok(path)
}

fn random_token() -> String {
    let mut k = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut k);
    format!("hdv_{}", hex::encode(k))
}

/// Runs `handover dev` until Ctrl-C.
pub async fn run(mut cfg: Config, opts: DevOptions) -> anyhow::Result<()> {
    let dir = &opts.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let today = handover_events::time::london_today();
    let own_nats = cfg.nats.url.is_none();
    if opts.demo && own_nats {
        // The demo week is relative to today: start afresh when it was loaded on another day.
        let stamp = dir.join("demo-date");
        let previous = std::fs::read_to_string(&stamp).unwrap_or_default();
        if !previous.is_empty() && previous.trim() != today.to_string() {
            eprintln!(
                "The demo data in {} is from {}; starting afresh for {today}.",
                dir.display(),
                previous.trim()
            );
            let _ = std::fs::remove_dir_all(dir.join("nats"));
            let _ = std::fs::remove_dir_all(dir.join("read-models"));
        }
        std::fs::write(&stamp, today.to_string())?;
    }
    let local = if own_nats {
        let n = LocalNats::start(&dir.join("nats")).await?;
        cfg.nats.url = Some(n.url.clone());
        Some(n)
    } else {
        None
    };
    if cfg.pseudonym.key_file.is_none() && std::env::var_os("HANDOVER_PSEUDONYM_KEY").is_none() {
        cfg.pseudonym.key_file = Some(dev_key(dir)?);
    }
    if cfg.store.path == crate::config::StoreConfig::default().path {
        cfg.store.path = dir.join("read-models");
    }
    // One token per role (the council's roles at Leeds, E08000035, the rest at the trust
    // RX1), and a second integration token for the council, whose brokerage system
    // publishes care-package and referral-answer events a trust may not.
    let mut tokens: Vec<(String, Role, String)> = Vec::new();
    let council_integration = (Role::Integration, "E08000035", "integration-council");
    for (role, organisation, label) in Role::ALL
        .into_iter()
        .map(|role| {
            let organisation = match role {
                Role::Broker | Role::SocialWorker => "E08000035",
                _ => "RX1",
            };
            (role, organisation, role.as_str())
        })
        .chain([council_integration])
    {
        let token = random_token();
        cfg.tokens.push(TokenConfig {
            name: format!("dev-{label}"),
            organisation: organisation.into(),
            role,
            token_sha256: token_digest(&token),
        });
        tokens.push((format!("{label} ({organisation})"), role, token));
    }

    if !cfg.adapters.contains_key("hl7") {
        // The contract's default MLLP port, or any free one when it is taken.
        let listen = if std::net::TcpListener::bind("127.0.0.1:2575").is_ok() {
            "127.0.0.1:2575"
        } else {
            "127.0.0.1:0"
        };
        let mut hl7 = toml::Table::new();
        hl7.insert("listen".into(), listen.into());
        cfg.adapters.insert("hl7".into(), toml::Value::Table(hl7));
    }
    let rt = Runtime::start(&cfg, None).await?;
    let mut example_nhs = None;
    if opts.demo {
        let mut values = crate::demo::demo_history(today_seed(today), today);
        values.extend(crate::demo::demo_week(today_seed(today), today));
        let events: Vec<Event> = values
            .into_iter()
            .map(Event::from_json)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("demo data is invalid: {e}"))?;
        example_nhs = pick_example(&events, today);
        let started = Instant::now();
        let (stored, dups) = crate::publish::publish_all(&rt.log, &events).await?;
        let last = rt.log.last_sequence().await?;
        rt.projected(last, Duration::from_secs(120)).await?;
        eprintln!(
            "Demo week loaded: {stored} events stored ({dups} already there) and projected in {:.1}s.",
            started.elapsed().as_secs_f64()
        );
    }

    let api = rt
        .api_addr
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    let token_of = |r: Role| {
        tokens
            .iter()
            .find(|(_, x, _)| *x == r)
            .map(|(_, _, t)| t.clone())
            .unwrap_or_default()
    };
    println!();
    println!("Handover is running.");
    println!(
        "  NATS JetStream: {}{}",
        cfg.nats.url.clone().unwrap_or_default(),
        if own_nats {
            format!(" (local, data in {})", opts.data_dir.join("nats").display())
        } else {
            String::new()
        }
    );
    println!("  Web UI:        {api}/ui/   (sign in with a token below)");
    println!("  API:           {api}/v1/");
    if let Some(a) = rt.hl7_addr {
        println!("  HL7 v2 MLLP:   {a}");
    }
    println!("  Health:        {api}/healthz  {api}/readyz  {api}/metrics");
    println!();
    println!("Tokens for this run:");
    for (label, _, token) in &tokens {
        println!("  {label:<32} {token}");
    }
    if let Some(nhs) = example_nhs {
        println!();
        println!("Try a journey (a demo person past their discharge ready date):");
        println!(
            "  curl -s -H 'Authorization: Bearer {}' -H 'Handover-Access-Reason: direct-care' {api}/v1/persons/{nhs}/journey",
            token_of(Role::DischargeTeam)
        );
    }
    println!();
    println!("Press Ctrl-C to stop.");
    crate::runtime::stop_signal().await?;
    eprintln!("Stopping…");
    rt.shutdown().await;
    if let Some(n) = local {
        n.stop().await;
    }
    Ok(())
}

fn today_seed(today: chrono::NaiveDate) -> u64 {
    use chrono::Datelike;
    today.num_days_from_ce() as u64
}

/// A demo person still in hospital past their DRD at RX1 (the dev discharge-team token's
/// trust), for the printed example.
fn pick_example(events: &[Event], today: chrono::NaiveDate) -> Option<String> {
    use handover_events::EventData;
    let mut candidates: Vec<(String, bool)> = Vec::new();
    for e in events {
        let Some(nhs) = e.subject.map(|n| n.as_string()) else {
            continue;
        };
        match &e.data {
            EventData::ReadyDateRecorded(d)
                if d.discharge_ready_date.0 < today && e.source.starts_with("urn:ods:RX1:") =>
            {
                candidates.push((nhs, true))
            }
            EventData::Discharged(_) => candidates.retain(|(n, _)| *n != nhs),
            _ => {}
        }
    }
    candidates.into_iter().map(|(n, _)| n).next()
}
