//! `handover bench`: the performance benchmark (issue 9, contract §5).
//!
//! One command starts its own `nats-server` (file storage, temporary store directory,
//! random port) and its own temporary sled directories, generates realistic catalogue
//! events deterministically from a seed, and measures, in the same run:
//!
//! 1. raw baselines: JetStream async publish (window of 1,024 acks), synchronous publish
//!    (1 in flight), durable pull consume with batched acks, sled batched
//!    read-modify-write plus append per event, and consume-plus-sled (the same sled work);
//! 2. ingest over real HTTP (`POST /v1/events`, batches of 100 and 1,000, 4 clients), as a
//!    ratio to the raw async publish; and over MLLP: HL7 v2 ADT^A03 messages sent one at a
//!    time, each waiting for its ACK (the way PAS senders work), on 1 connection and on 16,
//!    as a ratio to the raw synchronous publish, beside a bare MLLP relay that publishes
//!    each frame as it is (what MLLP's own round trip costs);
//! 3. the journey projection catching up on the whole stream, as a ratio to raw
//!    consume-plus-sled;
//! 4. `GET /v1/persons/{nhs}/journey` latency under 32 concurrent clients (as fast as
//!    answered, paced at 1,000 requests/s, and in a load sweep for the highest load that
//!    keeps the p99 under 2 ms, beside the same sweep of raw JetStream publishes, one of
//!    which each read's access audit is) and from one client; the discharge-delays
//!    worklist and the brokerage queue under 4 clients; all asked of a `handover serve`
//!    process of its own;
//! 5. end-to-end latency from the `202` of a single-event POST to the change being
//!    projected, at a paced 1,000 events/s;
//! 6. rebuild: catch-up time into an empty store, process RSS and the read model's size on
//!    disk.
//!
//! Every figure is reported as the median and range over `--runs` runs. Nothing here
//! asserts on a figure: a benchmark measures, it does not pass or fail.
//!
//! Figure names are stable (see [`FIGURES`]); tooling may key on them.

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use handover_api::{token_digest, Role, TokenConfig};
use serde::Serialize;

use crate::config::Config;
use crate::dev::{find_nats_server, LocalNats};
use crate::runtime::Runtime;

/// Hex pseudonym key used by the benchmark's own runtime (synthetic data only).
const BENCH_KEY_HEX: &str = "6265e3c8a41f0d9b7c2e5a8f1d3b6c9e0f4a7d2b5e8c1f3a6d9b2e5c8f1a4d7b";
/// The bench's bearer token for publishing: an admin token, because the generated batches mix
/// sources of four organisations (two trusts, two councils) and an integration token may
/// publish only as its own organisation.
const TOKEN_PUBLISH: &str = "bench-admin-token";
/// Discharge-team tokens for reading, one per trust (even people are RX1's, odd RR8's), so
/// every read is of a person the caller's organisation may see.
const TOKEN_READ: [&str; 2] = ["bench-discharge-team-rx1", "bench-discharge-team-rr8"];
/// Distinct subjects of the raw publish baselines.
const RAW_SUBJECTS: u64 = 10_000;
/// Outstanding publish acks in the raw async baseline.
const RAW_WINDOW: usize = 1_024;
/// Batch size of the sled baselines and of consume acks.
const SLED_BATCH: usize = 1_000;
/// Concurrent HTTP ingest clients.
const INGEST_CLIENTS: usize = 4;

/// Concurrent HTTP ingest clients for batches of `batch`: at least [`INGEST_CLIENTS`], and
/// enough that the events in flight match the raw publish baseline's window
/// ([`RAW_WINDOW`]), as a sender with that much to send would.
fn ingest_clients(batch: u64) -> usize {
    INGEST_CLIENTS.max(RAW_WINDOW.div_ceil(batch.max(1) as usize))
}

/// Journey reads per second offered, shared by the [`QUERY_CLIENTS`], in the paced query
/// phase.
const QUERY_PACED_RATE: u64 = 1_000;
/// Concurrent journey query clients.
const QUERY_CLIENTS: usize = 32;
/// The journey read's p99 ceiling (ms) from issue 9, which the sweep's capacity keeps under.
const JOURNEY_P99_MS: f64 = 2.0;
/// A sweep step holds only when it completes at least this share of what it offered.
const SWEEP_KEPT_UP: f64 = 0.95;
/// MLLP connections of the concurrent MLLP phase.
const MLLP_CONNECTIONS: u64 = 16;
/// Blocks of the phase alternating raw synchronous publish and MLLP on one connection.
const SYNC_BLOCKS: u64 = 10;
/// Blocks of each phase alternating raw async publish and HTTP ingest.
const INGEST_BLOCKS: u64 = 5;
/// Concurrent worklist query clients.
const WORKLIST_CLIENTS: usize = 4;

/// The figures, in report order: (name, unit, what it is).
pub const FIGURES: &[(&str, &str, &str)] = &[
    ("raw.publish.async", "events/s", "JetStream async publish, ~400 B, 10,000 subjects, Nats-Msg-Id, 1,024 acks outstanding"),
    ("raw.publish.async.alt100", "events/s", "the same, in blocks alternating with ingest.http.batch100"),
    ("raw.publish.async.alt1000", "events/s", "the same, in blocks alternating with ingest.http.batch1000"),
    ("raw.publish.sync", "events/s", "JetStream publish with 1 in flight (await each ack), alternating with MLLP on 1 connection"),
    ("raw.consume", "events/s", "durable pull consumer, batches of 1,000, one cumulative ack per batch"),
    ("raw.sled.rmw", "events/s", "sled per event: read-modify-write of a ~400 B record + append of the event under its own key; batches of 1,000, flush per batch"),
    ("raw.sled.commit.p50", "ms", "one event's sled work (read-modify-write + append) committed and flushed on its own, on the filled baseline store, 5,000 times at 1,000/s"),
    ("raw.sled.commit.p99", "ms", "as above, 99th percentile"),
    ("raw.consume_sled", "events/s", "raw consume + the same sled work per event (read-modify-write + append), commit (flush) then ack per batch"),
    ("raw.consume_sled.cpu", "µs/event", "CPU time (user + system) of the bench process and nats-server during raw.consume_sled, per event"),
    ("ingest.http.batch100", "events/s", "POST /v1/events, batches of 100, 11 concurrent clients (1,100 events in flight, like the raw baseline's window)"),
    ("ingest.http.batch1000", "events/s", "POST /v1/events, batches of 1,000, 4 concurrent clients"),
    ("raw.mllp.relay", "messages/s", "a bare MLLP relay on 1 connection, in the blocks of raw.publish.sync and ingest.mllp.1conn: the same A03 frames, each published as it is (1 in flight, Nats-Msg-Id) and answered with a fixed AA ACK once acknowledged; no parse, translation or validation (the floor of MLLP's extra round trip)"),
    ("ingest.mllp.1conn", "messages/s", "HL7 v2 ADT^A03 over MLLP, 1 connection, each message waits for its ACK (1 event per message)"),
    ("ingest.mllp.16conn", "messages/s", "as above, 16 connections"),
    ("projection.catchup", "events/s", "journey projection catching up on the whole stream from zero"),
    ("projection.catchup.cpu", "µs/event", "CPU time (user + system) of the projector process and nats-server during projection.catchup, per event"),
    ("raw.publish.paced.p50", "ms", "JetStream publish of one event, awaiting its ack, from 32 clients sharing 1,000 publishes/s (latency from each one's scheduled time): the JetStream part of a journey read, whose access-audit record is such a publish"),
    ("raw.publish.paced.p99", "ms", "as above, 99th percentile"),
    ("raw.publish.capacity", "msg/s", "the highest offered load of a sweep (500, 1,000, 1,500, … 3,000, 4,000, 5,000, 6,000, 8,000, … publishes/s) at which those 32 clients keep a p99 under 2 ms and complete 95 % of what is offered; 0 if none"),
    ("raw.publish.capacity.p99", "ms", "the publish p99 at that load"),
    ("query.journey.paced.p50", "ms", "GET /v1/persons/{nhs}/journey, random people, 32 clients sharing 1,000 requests/s (latency from each request's scheduled time)"),
    ("query.journey.paced.p99", "ms", "as above, 99th percentile"),
    ("query.journey.p50", "ms", "GET /v1/persons/{nhs}/journey, 32 concurrent clients each sending as fast as answered (saturation)"),
    ("query.journey.p99", "ms", "as above, 99th percentile"),
    ("query.journey.rate", "req/s", "as above, requests completed per second"),
    ("query.journey.cpu", "µs/read", "as above, CPU time (user + system) of the bench process (the 32 clients), the API process and nats-server (the access audit) per read"),
    ("query.journey.capacity", "req/s", "the highest offered load of the same sweep at which the 32 clients' journey reads keep a p99 under 2 ms (latency from each request's scheduled time) and complete 95 % of what is offered; 0 if none"),
    ("query.journey.capacity.p99", "ms", "the journey read's p99 at that load"),
    ("query.journey.1client.p50", "ms", "GET /v1/persons/{nhs}/journey from 1 client (latency without queueing)"),
    ("query.journey.1client.p99", "ms", "as above, 99th percentile"),
    ("query.worklist.delays.p50", "ms", "GET /v1/worklists/discharge-delays, first page (the default 100 rows), 4 concurrent clients"),
    ("query.worklist.delays.p99", "ms", "as above, 99th percentile"),
    ("query.worklist.brokerage.p50", "ms", "GET /v1/worklists/brokerage, first page (the default 100 rows), 4 concurrent clients"),
    ("query.worklist.brokerage.p99", "ms", "as above, 99th percentile"),
    ("e2e.p50", "ms", "202 of a single-event POST to the change projected, paced 1,000 events/s, 10 s after a 1 s warm-up"),
    ("e2e.p99", "ms", "as above, 99th percentile"),
    ("e2e.warmup.max", "ms", "the slowest event of the 1 s warm-up before the measured 10 s (the store's write path cold after opening; not in e2e.p50/p99)"),
    ("e2e.post.p99", "ms", "single-event POST to its 202 at the paced rate, 99th percentile"),
    ("rebuild.seconds_per_1m", "s", "rebuild (catch-up into an empty store), scaled to 1M events"),
    ("rebuild.rss_peak", "MB", "the projector process's peak resident set (VmHWM) during the rebuild"),
    ("rebuild.rss_after", "MB", "the projector process's resident set (VmRSS) once caught up"),
    ("rebuild.disk_per_1m", "MB", "read-model store size on disk (Store::size_on_disk), scaled to 1M events"),
    ("rebuild.logical_per_1m", "MB", "read-model keys + values (logical size: person records counted uncompressed), scaled to 1M events"),
    ("rebuild.stored_per_1m", "MB", "read-model keys + values as stored (person records compressed), scaled to 1M events"),
    ("rebuild.disk_ratio", "x", "on-disk size / logical size"),
];

/// Lines kept in the table for things not measured yet.
pub const NOT_YET: &[(&str, &str)] = &[];

/// What `handover bench` measures and how big.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events per run.
    pub events: u64,
    /// People the events are spread over.
    pub people: u64,
    /// Runs; figures are medians over them.
    pub runs: usize,
    /// Seed of the generated events.
    pub seed: u64,
    /// Events of the synchronous publish baseline (at most `events`).
    pub sync_events: u64,
    /// How long the query phase runs.
    pub query_time: Duration,
    /// How long the paced end-to-end phase runs.
    pub e2e_time: Duration,
    /// The paced end-to-end rate (events/s).
    pub e2e_rate: u64,
    /// Write the JSON report here.
    pub json: Option<PathBuf>,
    /// Write the Markdown report here.
    pub markdown: Option<PathBuf>,
    /// Draw a progress bar (else plain lines on stderr).
    pub progress_bar: bool,
    /// sled's page cache in MiB for the runtimes under test (None: the default).
    pub cache_mb: Option<u64>,
    /// Compress the read-model store under test (`store.compression`).
    pub compression: bool,
    /// The `handover` executable run as the projector process (None: this executable).
    pub projector_exe: Option<PathBuf>,
}

impl BenchOptions {
    /// The full size (1M events, 100k people, 3 runs) or, with `quick`, the smoke size
    /// (20k events, 2k people, 1 run); explicit values win.
    pub fn new(
        quick: bool,
        events: Option<u64>,
        people: Option<u64>,
        runs: Option<usize>,
    ) -> BenchOptions {
        let (de, dp, dr, q, e2e) = if quick {
            (
                20_000,
                2_000,
                1,
                Duration::from_secs(2),
                Duration::from_secs(2),
            )
        } else {
            (
                1_000_000,
                100_000,
                3,
                Duration::from_secs(10),
                Duration::from_secs(10),
            )
        };
        let events = events.unwrap_or(de).max(1);
        BenchOptions {
            events,
            people: people.unwrap_or(dp).clamp(1, events.max(1)),
            runs: runs.unwrap_or(dr).max(1),
            seed: 42,
            sync_events: events.min(25_000),
            query_time: q,
            e2e_time: e2e,
            e2e_rate: 1_000,
            json: None,
            markdown: None,
            progress_bar: std::io::stdout().is_terminal(),
            cache_mb: None,
            compression: false,
            projector_exe: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Report

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model (/proc/cpuinfo).
    pub cpu: String,
    /// Logical CPUs available.
    pub cores: usize,
    /// Total memory in MB (/proc/meminfo).
    pub memory_mb: u64,
    /// Kernel release.
    pub kernel: String,
    /// `nats-server --version`.
    pub nats_server: String,
}

/// One figure over all runs.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable name.
    pub name: String,
    /// Unit.
    pub unit: String,
    /// What it measures.
    pub description: String,
    /// Median over runs.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Every run's value.
    pub values: Vec<f64>,
    /// Ratio to a baseline measured in the same run, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<Ratio>,
}

/// A figure as a ratio to a baseline of the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The baseline figure's name.
    pub to: String,
    /// Median over runs of the per-run ratio.
    pub median: f64,
    /// Smallest per-run ratio.
    pub min: f64,
    /// Largest per-run ratio.
    pub max: f64,
}

/// A target from issue 9 and whether the medians meet it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The target as written.
    pub target: String,
    /// The measured median it is judged on.
    pub measured: String,
    /// Met, not met, or not measured.
    pub status: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// Events per run.
    pub events: u64,
    /// People.
    pub people: u64,
    /// Runs.
    pub runs: usize,
    /// Seed.
    pub seed: u64,
    /// Events of the synchronous publish baseline.
    pub sync_events: u64,
    /// Mean size in bytes of a generated event.
    pub mean_event_bytes: f64,
    /// 1-minute load average before each run.
    pub load_before: Vec<f64>,
    /// 1-minute load average after the last run.
    pub load_after: f64,
    /// When it ran (UTC, RFC 3339).
    pub started_at: String,
    /// The figures.
    pub figures: Vec<Figure>,
    /// Lines not measured yet.
    pub not_measured: Vec<String>,
    /// The issue's targets.
    pub targets: Vec<Target>,
}

impl Report {
    /// The figure called `name`.
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }
}

// ---------------------------------------------------------------------------------------
// Entry point

/// Runs the benchmark, writes the requested files and prints the Markdown table.
pub async fn main(opts: BenchOptions) -> anyhow::Result<()> {
    let report = run(&opts).await?;
    let md = markdown(&report);
    if let Some(p) = &opts.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &opts.markdown {
        std::fs::write(p, &md).with_context(|| format!("cannot write {}", p.display()))?;
    }
    println!("{md}");
    Ok(())
}

/// Runs every phase `opts.runs` times and gathers the figures.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Report> {
    let machine = machine()?;
    let gen = Gen::new(opts.seed, opts.people);
    let mean_event_bytes = {
        let mut buf = Vec::new();
        let n = opts.events.min(10_000);
        let mut total = 0usize;
        for i in 0..n {
            buf.clear();
            gen.event(&mut buf, i);
            total += buf.len();
        }
        total as f64 / n.max(1) as f64
    };
    let ui = Ui::new(opts.progress_bar);
    ui.line(&format!(
        "handover bench: {} events over {} people, {} run(s), seed {}; {} on {} cores; {}",
        opts.events,
        opts.people,
        opts.runs,
        opts.seed,
        machine.cpu,
        machine.cores,
        machine.nats_server
    ));
    let started_at = chrono::Utc::now().to_rfc3339();
    let mut runs: Vec<RunFigures> = Vec::new();
    let mut load_before = Vec::new();
    for r in 0..opts.runs {
        let load = loadavg();
        load_before.push(load);
        ui.line(&format!(
            "run {}/{} (load average {load:.2})",
            r + 1,
            opts.runs
        ));
        runs.push(one_run(opts, &gen, &ui, r).await?);
    }
    let load_after = loadavg();

    let mut figures = Vec::new();
    for (name, unit, description) in FIGURES {
        let values: Vec<f64> = runs.iter().map(|r| r.get(name)).collect();
        let ratio_to = match *name {
            "ingest.http.batch100" => Some("raw.publish.async.alt100"),
            "ingest.http.batch1000" => Some("raw.publish.async.alt1000"),
            "ingest.mllp.1conn" | "ingest.mllp.16conn" | "raw.mllp.relay" => {
                Some("raw.publish.sync")
            }
            "projection.catchup" => Some("raw.consume_sled"),
            "query.journey.capacity" => Some("raw.publish.capacity"),
            _ => None,
        };
        let ratio = ratio_to.map(|to| {
            let rs: Vec<f64> = runs.iter().map(|r| r.get(name) / r.get(to)).collect();
            let (median, min, max) = summary(&rs);
            Ratio {
                to: to.to_string(),
                median,
                min,
                max,
            }
        });
        let (median, min, max) = summary(&values);
        figures.push(Figure {
            name: name.to_string(),
            unit: unit.to_string(),
            description: description.to_string(),
            median,
            min,
            max,
            values,
            ratio,
        });
    }
    let mut report = Report {
        machine,
        events: opts.events,
        people: opts.people,
        runs: opts.runs,
        seed: opts.seed,
        sync_events: opts.sync_events,
        mean_event_bytes,
        load_before,
        load_after,
        started_at,
        figures,
        not_measured: NOT_YET.iter().map(|(n, w)| format!("{n}: {w}")).collect(),
        targets: Vec::new(),
    };
    report.targets = targets(&report);
    Ok(report)
}

/// One run's values by figure name.
#[derive(Debug, Default)]
struct RunFigures(Vec<(&'static str, f64)>);

impl RunFigures {
    fn set(&mut self, name: &'static str, v: f64) {
        self.0.push((name, v));
    }
    fn get(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    }
}

fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

// ---------------------------------------------------------------------------------------
// One run

fn bench_config(
    nats_url: &str,
    dir: &Path,
    store: &Path,
    api: bool,
    projections: bool,
    (cache_mb, compression): (Option<u64>, bool),
) -> anyhow::Result<Config> {
    let mut cfg = Config::default();
    cfg.nats.url = Some(nats_url.to_string());
    cfg.store.path = store.to_path_buf();
    if let Some(mb) = cache_mb {
        cfg.store.cache_mb = mb;
    }
    cfg.store.compression = compression;
    let key_file = dir.join("pseudonym.key");
    if !key_file.exists() {
        std::fs::write(&key_file, BENCH_KEY_HEX)?;
    }
    cfg.pseudonym.key_file = Some(key_file);
    cfg.api.enabled = api;
    cfg.projections.enabled = projections;
    cfg.projections.ready_max_lag = u64::MAX;
    cfg.tokens = bench_tokens();
    Ok(cfg)
}

/// The API's bearer tokens: [`TOKEN_PUBLISH`] and the two [`TOKEN_READ`].
fn bench_tokens() -> Vec<TokenConfig> {
    [
        (Role::Admin, "RX1", TOKEN_PUBLISH),
        (Role::DischargeTeam, "RX1", TOKEN_READ[0]),
        (Role::DischargeTeam, "RR8", TOKEN_READ[1]),
    ]
    .into_iter()
    .map(|(role, org, token)| TokenConfig {
        name: format!("bench-{}-{org}", role.as_str()),
        organisation: org.into(),
        role,
        token_sha256: token_digest(token),
    })
    .collect()
}

async fn start_runtime(cfg: &Config) -> anyhow::Result<(Runtime, String)> {
    let listener = if cfg.api.enabled {
        Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
    } else {
        None
    };
    let rt = Runtime::start(cfg, listener).await?;
    let base = rt
        .api_addr
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    Ok((rt, base))
}

async fn one_run(
    opts: &BenchOptions,
    gen: &Gen,
    ui: &Ui,
    run: usize,
) -> anyhow::Result<RunFigures> {
    let tmp = tempfile::Builder::new()
        .prefix("handover-bench-")
        .tempdir()?;
    let dir = tmp.path();
    let nats = LocalNats::start(&dir.join("nats")).await?;
    let url = nats.url.clone();
    let n = opts.events;
    let mut f = RunFigures::default();

    // 1. Raw baselines.
    let raw = raw::Raw::connect(&url).await?;
    raw.create_stream("BENCHRAW", "bench.raw").await?;
    raw.create_stream("BENCHSYNC", "bench.sync").await?;
    let p = ui.phase("raw publish (async, window 1,024)", n);
    let t = Instant::now();
    raw.publish(gen, "bench.raw", 0, n, RAW_WINDOW, &p).await?;
    f.set("raw.publish.async", rate(n, t.elapsed()));
    p.finish(t.elapsed());

    let p = ui.phase("raw consume (batches of 1,000)", n);
    let t = Instant::now();
    raw.consume("BENCHRAW", "bench-consume", n, None, opts.people, &p)
        .await?;
    f.set("raw.consume", rate(n, t.elapsed()));
    p.finish(t.elapsed());

    // sled as it comes (no compression), with the cache the projection gets (Handover's
    // default or --cache-mb); each baseline gets a fresh store, as the projection does.
    let raw_store = |name: &str| {
        handover_store::Store::open_with(
            &dir.join(name),
            opts.cache_mb
                .map(|mb| mb << 20)
                .unwrap_or(handover_store::DEFAULT_CACHE_BYTES),
            false,
        )
    };
    {
        let store = raw_store("raw-sled")?;
        let tree = store.tree("rmw")?;
        let p = ui.phase("raw sled read-modify-write + append", n);
        let t = Instant::now();
        sled_rmw(&tree, n, opts.people, &p).await?;
        f.set("raw.sled.rmw", rate(n, t.elapsed()));
        p.finish(t.elapsed());
        // The storage's own latency at the end-to-end phase's rate, on the filled store.
        let p = ui.phase("raw sled single-event commits (1,000/s)", SLED_COMMITS);
        let t = Instant::now();
        let lat = sled_commits(&tree, n, opts.people, &p).await?;
        p.finish(t.elapsed());
        f.set("raw.sled.commit.p50", percentile_ms(&lat, 50.0));
        f.set("raw.sled.commit.p99", percentile_ms(&lat, 99.0));
    }
    let _ = std::fs::remove_dir_all(dir.join("raw-sled"));
    {
        let store = raw_store("raw-consume-sled")?;
        let tree = store.tree("consume")?;
        let p = ui.phase("raw consume + sled", n);
        let cpu = Cpu::start(std::iter::once(std::process::id()).chain(nats.pid()));
        let t = Instant::now();
        raw.consume(
            "BENCHRAW",
            "bench-consume-sled",
            n,
            Some(&tree),
            opts.people,
            &p,
        )
        .await?;
        f.set("raw.consume_sled", rate(n, t.elapsed()));
        f.set("raw.consume_sled.cpu", cpu.micros_per(n));
        p.finish(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(dir.join("raw-consume-sled"));
    raw.delete_stream("BENCHRAW").await?;

    // 2. Ingest over HTTP. Each size gets a fresh HANDOVER stream; the last one stays for
    // the projection.
    for (i, (batch, name, raw_name)) in [
        (100u64, "ingest.http.batch100", "raw.publish.async.alt100"),
        (1000, "ingest.http.batch1000", "raw.publish.async.alt1000"),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = bench_config(
            &url,
            dir,
            &dir.join(format!("ingest-{batch}")),
            true,
            false,
            (opts.cache_mb, opts.compression),
        )?;
        let (rt, base) = start_runtime(&cfg).await?;
        // In blocks alternating with the raw async publish it is compared with (which goes
        // first alternates too), into a raw stream of its own, for the reason given for MLLP
        // below.
        let p = ui.phase(
            &format!(
                "raw async publish and HTTP ingest (batches of {batch}, {} clients), alternating",
                ingest_clients(batch)
            ),
            2 * n,
        );
        raw.create_stream("BENCHASYNC", "bench.async").await?;
        let started = Instant::now();
        let (raw_took, http_took) = alternating(
            INGEST_BLOCKS,
            n,
            async |first, k| {
                raw.publish(gen, "bench.async", first, k, RAW_WINDOW, &p)
                    .await
            },
            async |first, k| http_ingest(gen, &base, first, k, batch, &p).await,
        )
        .await?;
        raw.delete_stream("BENCHASYNC").await?;
        f.set(name, rate(n, http_took));
        f.set(raw_name, rate(n, raw_took));
        p.finish(started.elapsed());
        let last = rt.log.last_sequence().await?;
        anyhow::ensure!(
            last == n,
            "the stream holds {last} events after ingesting {n}"
        );
        if i == 0 {
            // MLLP on the same runtime (projections off), before its stream is dropped. One
            // connection is measured in blocks rotating with the raw synchronous publish it
            // is compared with and with the bare relay (which goes first rotates too), so
            // that all three see the same server and machine: measured minutes apart, MLLP
            // and the raw publish drifted by more than the difference between them.
            let sync_n = opts.sync_events.min(n);
            let p = ui.phase(
                "raw sync publish, bare MLLP relay and MLLP (1 connection, ACK per message), alternating",
                3 * sync_n,
            );
            let relay = Arc::new(raw::Raw::connect(&url).await?);
            let started = Instant::now();
            let [raw_took, relay_took, mllp_took] = alternating3(
                SYNC_BLOCKS,
                sync_n,
                async |first, k| raw.publish(gen, "bench.sync", first, k, 1, &p).await,
                async |first, k| relay_ingest(&relay, gen, run, first, k, &p).await,
                async |first, k| mllp_ingest(&rt, gen, run, first, k, 1, &p).await,
            )
            .await?;
            f.set("raw.publish.sync", rate(sync_n, raw_took));
            f.set("raw.mllp.relay", rate(sync_n, relay_took));
            f.set("ingest.mllp.1conn", rate(sync_n, mllp_took));
            p.finish(started.elapsed());
            let count = sync_n * 4;
            let p = ui.phase(
                &format!("MLLP ingest ({MLLP_CONNECTIONS} connections, ACK per message)"),
                count,
            );
            let t = Instant::now();
            mllp_ingest(&rt, gen, run, sync_n, count, MLLP_CONNECTIONS, &p).await?;
            f.set("ingest.mllp.16conn", rate(count, t.elapsed()));
            p.finish(t.elapsed());
            raw.delete_stream("BENCHSYNC").await?;
        }
        rt.shutdown().await;
        if i == 0 {
            raw.delete_stream(&cfg.nats.stream).await?;
        }
    }

    // 3 and 6. Projection catch-up from zero into an empty store = a rebuild, in a
    // `handover serve` process of its own so that its memory is the projector's alone.
    let store_dir = dir.join("read-models");
    let p = ui.phase("journey projection catch-up (rebuild, own process)", n);
    let last = n;
    let projector = projector_process(&url, dir, &store_dir, opts, last, nats.pid(), &p).await?;
    p.finish(projector.took);
    f.set("projection.catchup", rate(n, projector.took));
    f.set(
        "projection.catchup.cpu",
        projector.cpu_s * 1e6 / n.max(1) as f64,
    );
    f.set(
        "rebuild.seconds_per_1m",
        projector.took.as_secs_f64() * 1e6 / n as f64,
    );
    f.set("rebuild.rss_peak", projector.peak_mb);
    f.set("rebuild.rss_after", projector.rss_mb);
    let cfg = bench_config(
        &url,
        dir,
        &store_dir,
        false,
        true,
        (opts.cache_mb, opts.compression),
    )?;
    let (rt, _) = start_runtime(&cfg).await?;
    rt.projected(last, Duration::from_secs(600)).await?;
    rt.store.flush().await?;
    let disk = rt.store.size_on_disk()? as f64;
    let (logical, stored) = logical_size(&rt.store)?;
    let (logical, stored) = (logical as f64, stored as f64);
    f.set("rebuild.disk_per_1m", disk / 1e6 * 1e6 / n as f64);
    f.set("rebuild.logical_per_1m", logical / 1e6 * 1e6 / n as f64);
    f.set("rebuild.stored_per_1m", stored / 1e6 * 1e6 / n as f64);
    f.set("rebuild.disk_ratio", disk / logical.max(1.0));
    rt.shutdown().await;

    // 4. Queries on the caught-up store, asked of a `handover serve` process of its own.
    let p = ui.phase("API process start", last);
    let t = Instant::now();
    let mut api = ServeProcess::start(&url, dir, &store_dir, opts, "api", &bench_tokens()).await?;
    api.caught_up(last, t, &p).await?;
    p.finish(t.elapsed());
    let base = api.base.clone();
    // The journey read's JetStream baseline: what one acknowledged publish (as each
    // read's access-audit record is) costs the same 32 clients at the same loads.
    let paced = raw::Raw::connect(&url).await?;
    paced.create_stream("BENCHPACED", "bench.paced").await?;
    let publish = paced.paced_publisher(gen, "bench.paced");
    let p = ui.phase(
        &format!("raw publish ({QUERY_CLIENTS} clients, {QUERY_PACED_RATE}/s offered)"),
        0,
    );
    let (lat, _, took) = drive(
        QUERY_CLIENTS,
        opts.query_time,
        gen.seed ^ run as u64 ^ 3,
        &p,
        Some(QUERY_PACED_RATE),
        publish.clone(),
    )
    .await?;
    p.finish(took);
    f.set("raw.publish.paced.p50", percentile_ms(&lat, 50.0));
    f.set("raw.publish.paced.p99", percentile_ms(&lat, 99.0));
    let (capacity, capacity_p99) = sweep(
        ui,
        "raw publish load sweep",
        opts.query_time / 2,
        gen.seed ^ run as u64 ^ 0x5eee,
        f64::INFINITY,
        publish,
    )
    .await?;
    f.set("raw.publish.capacity", capacity);
    f.set("raw.publish.capacity.p99", capacity_p99);
    raw.delete_stream("BENCHPACED").await?;

    let p = ui.phase(&format!("journey queries ({QUERY_CLIENTS} clients)"), 0);
    let people = n.min(opts.people);
    let journey_url = {
        let (gen, base) = (gen.clone(), base.clone());
        move |rng: &mut rand::rngs::StdRng| {
            use rand::Rng;
            let person = gen.person_at(rng.gen_range(0..people));
            (
                format!("{base}/v1/persons/{}/journey", nhs_for(person)),
                TOKEN_READ[(person % 2) as usize],
            )
        }
    };
    let cpu = Cpu::start([std::process::id(), api.pid].into_iter().chain(nats.pid()));
    let (lat, count, took) = query(
        QUERY_CLIENTS,
        journey_url.clone(),
        opts.query_time,
        gen.seed ^ run as u64,
        &p,
        None,
    )
    .await?;
    f.set("query.journey.cpu", cpu.micros_per(count));
    p.finish(took);
    f.set("query.journey.p50", percentile_ms(&lat, 50.0));
    f.set("query.journey.p99", percentile_ms(&lat, 99.0));
    let saturated = rate(count, took);
    f.set("query.journey.rate", saturated);

    // The load sweep: the same 32 clients offering 500, 1,000, 1,500, … reads/s until the
    // p99 reaches 2 ms or they cannot keep up; the last load that held is the capacity.
    let get = authorised_get(journey_url.clone());
    let (capacity, capacity_p99) = sweep(
        ui,
        "journey load sweep",
        opts.query_time / 2,
        gen.seed ^ run as u64 ^ 0x5eed,
        saturated * 1.05,
        get,
    )
    .await?;
    f.set("query.journey.capacity", capacity);
    f.set("query.journey.capacity.p99", capacity_p99);

    let p = ui.phase(
        &format!("journey queries ({QUERY_CLIENTS} clients, {QUERY_PACED_RATE}/s offered)"),
        0,
    );
    let (lat, _, took) = query(
        QUERY_CLIENTS,
        journey_url.clone(),
        opts.query_time,
        gen.seed ^ run as u64 ^ 2,
        &p,
        Some(QUERY_PACED_RATE),
    )
    .await?;
    p.finish(took);
    f.set("query.journey.paced.p50", percentile_ms(&lat, 50.0));
    f.set("query.journey.paced.p99", percentile_ms(&lat, 99.0));

    let p = ui.phase("journey queries (1 client)", 0);
    let (lat, _, took) = query(
        1,
        journey_url,
        opts.query_time / 2,
        gen.seed ^ run as u64 ^ 1,
        &p,
        None,
    )
    .await?;
    p.finish(took);
    f.set("query.journey.1client.p50", percentile_ms(&lat, 50.0));
    f.set("query.journey.1client.p99", percentile_ms(&lat, 99.0));

    let p = ui.phase(
        &format!("discharge-delays worklist ({WORKLIST_CLIENTS} clients)"),
        0,
    );
    let delays_url = {
        let base = base.clone();
        move |_: &mut rand::rngs::StdRng| {
            (
                format!("{base}/v1/worklists/discharge-delays"),
                TOKEN_READ[0],
            )
        }
    };
    let (lat, _, took) = query(
        WORKLIST_CLIENTS,
        delays_url,
        opts.query_time / 2,
        0,
        &p,
        None,
    )
    .await?;
    p.finish(took);
    f.set("query.worklist.delays.p50", percentile_ms(&lat, 50.0));
    f.set("query.worklist.delays.p99", percentile_ms(&lat, 99.0));

    let p = ui.phase(&format!("brokerage queue ({WORKLIST_CLIENTS} clients)"), 0);
    let brokerage_url = {
        let base = base.clone();
        move |_: &mut rand::rngs::StdRng| (format!("{base}/v1/worklists/brokerage"), TOKEN_READ[0])
    };
    let (lat, _, took) = query(
        WORKLIST_CLIENTS,
        brokerage_url,
        opts.query_time / 2,
        0,
        &p,
        None,
    )
    .await?;
    p.finish(took);
    f.set("query.worklist.brokerage.p50", percentile_ms(&lat, 50.0));
    f.set("query.worklist.brokerage.p99", percentile_ms(&lat, 99.0));
    api.stop().await?;

    // 5. End-to-end latency, in this process (it follows the projection's progress).
    let cfg = bench_config(
        &url,
        dir,
        &store_dir,
        true,
        true,
        (opts.cache_mb, opts.compression),
    )?;
    let (rt, base) = start_runtime(&cfg).await?;
    rt.projected(last, Duration::from_secs(600)).await?;

    let total = opts.e2e_rate * opts.e2e_time.as_secs().max(1);
    // The first second's events warm the store's write path: this runtime opened the store
    // after the catch-up and has only read from it since.
    let warmup = opts.e2e_rate;
    let p = ui.phase(
        &format!(
            "end-to-end at {} events/s (after a 1 s warm-up)",
            opts.e2e_rate
        ),
        warmup + total,
    );
    let t = Instant::now();
    let e = end_to_end(
        gen,
        &base,
        &rt,
        n.min(opts.people),
        (opts.e2e_rate, warmup, total),
        run,
        &p,
    )
    .await?;
    p.finish(t.elapsed());
    f.set("e2e.p50", percentile_ms(&e.e2e, 50.0));
    f.set("e2e.p99", percentile_ms(&e.e2e, 99.0));
    f.set("e2e.post.p99", percentile_ms(&e.post, 99.0));
    f.set("e2e.warmup.max", percentile_ms(&e.warmup, 100.0));
    rt.shutdown().await;
    nats.stop().await;
    drop(tmp);
    Ok(f)
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn percentile_ms(sorted_us: &[u64], pct: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let idx =
        ((sorted_us.len() as f64 * pct / 100.0).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[idx] as f64 / 1000.0
}

/// The journey tree's keys and values: their logical size (each person's record counted
/// with its parts uncompressed) and their size as stored.
fn logical_size(store: &handover_store::Store) -> anyhow::Result<(u64, u64)> {
    let tree = store.tree(handover_projections::journeys::NAME)?;
    let (mut logical, mut stored) = (0u64, 0u64);
    for kv in tree.scan_prefix(b"") {
        let (k, v) = kv?;
        logical += k.len() as u64 + handover_projections::journeys::plain_len(&k, &v);
        stored += (k.len() + v.len()) as u64;
    }
    Ok((logical, stored))
}

/// What the projector process did: how long it took to catch up, its memory (MB) and the
/// CPU time it and nats-server used meanwhile (s).
struct Projector {
    took: Duration,
    cpu_s: f64,
    rss_mb: f64,
    peak_mb: f64,
}

/// Runs `handover serve` (this executable) with only the projection and the API on, over a
/// fresh store, until `/readyz` says it has caught up with stream position `last` (readiness
/// with no lag allowed); reads its memory from `/proc`, then stops it (SIGTERM).
async fn projector_process(
    nats_url: &str,
    dir: &Path,
    store: &Path,
    opts: &BenchOptions,
    last: u64,
    nats_pid: Option<u32>,
    p: &Phase,
) -> anyhow::Result<Projector> {
    let t = Instant::now();
    let mut serve = ServeProcess::start(nats_url, dir, store, opts, "projector", &[]).await?;
    let nats_cpu = Cpu::start(nats_pid);
    let took = serve.caught_up(last, t, p).await?;
    let (rss_mb, peak_mb) = serve.memory();
    // The process's whole life, from its start (its own CPU time counts from zero).
    let cpu_s = cpu_seconds(serve.pid) + nats_cpu.seconds();
    serve.stop().await?;
    Ok(Projector {
        took,
        cpu_s,
        rss_mb,
        peak_mb,
    })
}

/// A `handover serve` process of the bench's own (the projection and the API on, nothing
/// else), on the bench's store: the projector of the catch-up phase, and the API the query
/// phases ask, so that what they measure is that process's work and not the load
/// generator's, as with a real deployment (the 32 clients keep to the bench process).
struct ServeProcess {
    child: tokio::process::Child,
    pid: u32,
    /// `http://127.0.0.1:<port>`.
    base: String,
    log_file: PathBuf,
}

impl ServeProcess {
    /// Starts it with `tokens` for the API, as `name` (its config and log file names).
    async fn start(
        nats_url: &str,
        dir: &Path,
        store: &Path,
        opts: &BenchOptions,
        name: &str,
        tokens: &[TokenConfig],
    ) -> anyhow::Result<ServeProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let q = |v: &str| toml::Value::String(v.to_string()).to_string();
        let key_file = dir.join("pseudonym.key");
        if !key_file.exists() {
            std::fs::write(&key_file, BENCH_KEY_HEX)?;
        }
        let mut config = format!(
            "[nats]\nurl = {}\n\n[pseudonym]\nkey_file = {}\n\n[store]\npath = {}\ncompression = {}\n",
            q(nats_url),
            q(&key_file.to_string_lossy()),
            q(&store.to_string_lossy()),
            opts.compression
        );
        if let Some(mb) = opts.cache_mb {
            config += &format!("cache_mb = {mb}\n");
        }
        config += &format!(
            "\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n[projections]\nready_max_lag = 0\n"
        );
        #[derive(Serialize)]
        struct Tokens<'a> {
            tokens: &'a [TokenConfig],
        }
        if !tokens.is_empty() {
            config += "\n";
            config += &toml::to_string(&Tokens { tokens })?;
        }
        let config_file = dir.join(format!("{name}.toml"));
        std::fs::write(&config_file, config)?;
        let log_file = dir.join(format!("{name}.log"));
        let exe = match &opts.projector_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()?,
        };
        let child = tokio::process::Command::new(exe)
            .arg("--config")
            .arg(&config_file)
            .arg("serve")
            .env_remove("HANDOVER_NATS_URL")
            .env_remove("HANDOVER_CONFIG")
            .env("HANDOVER_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_file)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the {name} process"))?;
        let pid = child.id().context("the serve process has no pid")?;
        Ok(ServeProcess {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
            log_file,
        })
    }

    /// What went wrong, with the end of the process's log.
    fn failed(&self, why: String) -> anyhow::Error {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        anyhow::anyhow!(
            "the serve process {why}; its log ends:\n{}",
            tail(&log, 2000)
        )
    }

    /// Waits until `/readyz` answers 200 with no lag allowed (the projection has caught
    /// up on the whole stream), showing progress towards `last`; the time since `t`.
    async fn caught_up(&mut self, last: u64, t: Instant, p: &Phase) -> anyhow::Result<Duration> {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.base);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(self.failed(format!("exited ({status})")));
            }
            if t.elapsed() > Duration::from_secs(24 * 3600) {
                return Err(self.failed("did not catch up within a day".into()));
            }
            if let Ok(resp) = client.get(&url).send().await {
                let took = t.elapsed();
                if resp.status().is_success() {
                    // Caught up: the progress polled last was from before.
                    p.set(last);
                    return Ok(took);
                }
                // "not ready: journey projection is N events behind"
                let text = resp.text().await.unwrap_or_default();
                if let Some(behind) = text
                    .split(" is ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    p.set(last.saturating_sub(behind));
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Its resident set (`VmRSS`) and peak resident set (`VmHWM`), MB.
    fn memory(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
                .unwrap_or(f64::NAN)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM: a graceful stop that flushes the store before the next phase opens it.
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(
                    status.success(),
                    self.failed(format!("stopped badly ({status})"))
                );
                Ok(())
            }
            Err(_) => Err(self.failed("did not stop within 60 s of SIGTERM".into())),
        }
    }
}

/// The CPU time (user + system, s) process `pid` has used, from `/proc/<pid>/stat` (in
/// clock ticks of 1/100 s, Linux's `USER_HZ`); 0 when unreadable.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are the stat file's 14th and 15th fields, the 12th and 13th after
    // the command name.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

/// CPU time of some processes from a starting point.
struct Cpu {
    pids: Vec<u32>,
    at_start: f64,
}

impl Cpu {
    /// Starts counting for processes `pids`.
    fn start(pids: impl IntoIterator<Item = u32>) -> Cpu {
        let pids: Vec<u32> = pids.into_iter().collect();
        let at_start = pids.iter().map(|p| cpu_seconds(*p)).sum();
        Cpu { pids, at_start }
    }

    /// Seconds used since the start.
    fn seconds(&self) -> f64 {
        let now: f64 = self.pids.iter().map(|p| cpu_seconds(*p)).sum();
        now - self.at_start
    }

    /// Microseconds used since the start per one of `n` things done.
    fn micros_per(&self, n: u64) -> f64 {
        self.seconds() * 1e6 / n.max(1) as f64
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

/// Single-event commits of the raw sled baseline measured for their latency.
const SLED_COMMITS: u64 = 5_000;

/// [`SLED_COMMITS`] commits of one event each (the baseline's read-modify-write and
/// append, then flush), paced at 1,000/s, after the `n` events of [`sled_rmw`]: each one's
/// latency (sorted, µs).
async fn sled_commits(
    tree: &handover_store::Tree,
    n: u64,
    people: u64,
    p: &Phase,
) -> anyhow::Result<Vec<u64>> {
    let mut event = vec![b'e'; 400];
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut lat = Vec::with_capacity(SLED_COMMITS as usize);
    for k in 0..SLED_COMMITS {
        ticker.tick().await;
        let seq = n + k + 1;
        let t = Instant::now();
        let mut tx = tree.begin();
        event[..8].copy_from_slice(&seq.to_be_bytes());
        sled_apply(
            &mut tx,
            (seq.wrapping_mul(0x9E37_79B9)) % people.max(1),
            seq,
            &event,
        )?;
        tree.commit(tx, seq).await?;
        lat.push(t.elapsed().as_micros() as u64);
        p.set(k + 1);
    }
    lat.sort_unstable();
    Ok(lat)
}

/// The raw sled work per event the issue's baseline names: one read-modify-write of the
/// person's ~400-byte record and one append of the event (a new key per event), batches
/// of 1,000, flush per batch.
async fn sled_rmw(
    tree: &handover_store::Tree,
    n: u64,
    people: u64,
    p: &Phase,
) -> anyhow::Result<()> {
    // The event's content does not matter to sled (uncompressed): a ~400-byte stand-in.
    let mut event = vec![b'e'; 400];
    let mut i = 0;
    while i < n {
        let end = (i + SLED_BATCH as u64).min(n);
        let mut tx = tree.begin();
        for j in i..end {
            event[..8].copy_from_slice(&j.to_be_bytes());
            sled_apply(&mut tx, j % people, j + 1, &event)?;
        }
        tree.commit(tx, end).await?;
        p.set(end);
        i = end;
    }
    Ok(())
}

/// One event of the raw sled baseline: read the person's record, write it back changed
/// (same ~400 bytes, a counter and the latest sequence), and append the event under a key
/// of its own.
fn sled_apply(
    tx: &mut handover_store::Tx<'_>,
    person: u64,
    seq: u64,
    event: &[u8],
) -> anyhow::Result<()> {
    let key = sled_key(person);
    let mut record = tx.get(&key)?.unwrap_or_else(|| vec![b'x'; 400]);
    record[..8].copy_from_slice(&seq.to_be_bytes());
    record[8] = record[8].wrapping_add(1);
    let mut append = key.clone();
    append[0] = b't';
    append.extend_from_slice(&seq.to_be_bytes());
    tx.put(key, record);
    tx.put(append, event.to_vec());
    Ok(())
}

fn sled_key(person: u64) -> Vec<u8> {
    let h = (person as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    format!("p/{h:032x}").into_bytes()
}

/// Runs `raw` and `ours` over `n` events each, in `blocks` blocks taking turns (which goes
/// first alternates too), so that a figure and the raw baseline it is compared with see the
/// same server and machine. Each is given its block's first event and size; returns the time
/// each took in all.
async fn alternating(
    blocks: u64,
    n: u64,
    mut raw: impl AsyncFnMut(u64, u64) -> anyhow::Result<()>,
    mut ours: impl AsyncFnMut(u64, u64) -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, Duration)> {
    let (mut raw_took, mut ours_took) = (Duration::ZERO, Duration::ZERO);
    let mut done = 0;
    for block in 0..blocks {
        let k = n / blocks + u64::from(block < n % blocks);
        for raw_turn in [block % 2 == 0, block % 2 == 1] {
            let t = Instant::now();
            if raw_turn {
                raw(done, k).await?;
                raw_took += t.elapsed();
            } else {
                ours(done, k).await?;
                ours_took += t.elapsed();
            }
        }
        done += k;
    }
    Ok((raw_took, ours_took))
}

/// [`alternating`] for three: in each block all three run, the one going first rotating.
async fn alternating3(
    blocks: u64,
    n: u64,
    mut a: impl AsyncFnMut(u64, u64) -> anyhow::Result<()>,
    mut b: impl AsyncFnMut(u64, u64) -> anyhow::Result<()>,
    mut c: impl AsyncFnMut(u64, u64) -> anyhow::Result<()>,
) -> anyhow::Result<[Duration; 3]> {
    let mut took = [Duration::ZERO; 3];
    let mut done = 0;
    for block in 0..blocks {
        let k = n / blocks + u64::from(block < n % blocks);
        for turn in 0..3 {
            let which = (block as usize + turn) % 3;
            let t = Instant::now();
            match which {
                0 => a(done, k).await?,
                1 => b(done, k).await?,
                _ => c(done, k).await?,
            }
            took[which] += t.elapsed();
        }
        done += k;
    }
    Ok(took)
}

/// Publishes events `[first, first + n)` over HTTP in batches, from [`ingest_clients`] clients.
async fn http_ingest(
    gen: &Gen,
    base: &str,
    first: u64,
    n: u64,
    batch: u64,
    p: &Phase,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(first));
    let n = first + n;
    let url = format!("{base}/v1/events");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..ingest_clients(batch) {
        let (client, next, url, gen, p) = (
            client.clone(),
            next.clone(),
            url.clone(),
            gen.clone(),
            p.clone(),
        );
        set.spawn(async move {
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= n {
                    return anyhow::Ok(());
                }
                let end = (start + batch).min(n);
                let mut body = Vec::with_capacity((end - start) as usize * 460 + 2);
                body.push(b'[');
                for i in start..end {
                    if i > start {
                        body.push(b',');
                    }
                    gen.event(&mut body, i);
                }
                body.push(b']');
                let resp = client
                    .post(&url)
                    .bearer_auth(TOKEN_PUBLISH)
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(body)
                    .send()
                    .await?;
                let status = resp.status();
                if status.as_u16() != 202 {
                    let text = resp.text().await.unwrap_or_default();
                    anyhow::bail!(
                        "POST /v1/events answered {status}: {}",
                        truncate(&text, 2000)
                    );
                }
                let _ = resp.bytes().await?;
                p.add(end - start);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// An ADT^A03 (discharge) for `person`, control id unique per run, connection and message.
fn a03(run: usize, connection: u64, i: u64, person: u64) -> String {
    /// A segment with `fields` at their (1-based) positions.
    fn seg(name: &str, fields: &[(usize, String)]) -> String {
        let n = fields.iter().map(|(i, _)| *i).max().unwrap_or(0);
        let mut out = vec![String::new(); n];
        for (i, v) in fields {
            out[i - 1] = v.clone();
        }
        format!("{name}|{}", out.join("|"))
    }
    let nhs = nhs_for(person);
    let msh = format!(
        "MSH|^~\\&|PAS|RX1|HANDOVER|HANDOVER|20261120113200||ADT^A03|B{run}-{connection}-{i}|P|2.4"
    );
    let evn = seg("EVN", &[(1, "A03".into()), (2, "20261120113200".into())]);
    let pid = seg(
        "PID",
        &[
            (1, "1".into()),
            (3, format!("{nhs}^^^NHS^NH~MRN{person}^^^RX1^MR")),
            (5, "EXAMPLE^PAT".into()),
            (7, "19450312".into()),
        ],
    );
    let pv1 = seg(
        "PV1",
        &[
            (2, "I".into()),
            (3, "WARD7^^^RX1CC".into()),
            (19, format!("ENC-{person}")),
            (36, "1".into()),
            (37, "19".into()),
            (45, "20261120113000".into()),
        ],
    );
    format!("{msh}\r{evn}\r{pid}\r{pv1}\r")
}

/// [`mllp_send`] against the HL7 adapter serving on the runtime's event log.
async fn mllp_ingest(
    rt: &Runtime,
    gen: &Gen,
    run: usize,
    first: u64,
    n: u64,
    connections: u64,
    p: &Phase,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(handover_adapters::hl7::run(
        listener,
        Arc::new(handover_adapters::hl7::Hl7Config::default()),
        Arc::new(rt.log.clone()),
        Arc::new(handover_adapters::hl7::Hl7Metrics::default()),
        async {
            let _ = stopped.await;
        },
    ));
    let sent = mllp_send(addr, gen, run, first, n, connections, p).await;
    let _ = stop.send(());
    server.await??;
    sent
}

/// The bare relay of `raw.mllp.relay`, on one connection: the same senders as
/// [`mllp_ingest`], against a relay that publishes each frame as it is through `relay` and
/// answers a fixed `AA` once JetStream acknowledged it.
async fn relay_ingest(
    relay: &Arc<raw::Raw>,
    gen: &Gen,
    run: usize,
    first: u64,
    n: u64,
    p: &Phase,
) -> anyhow::Result<()> {
    use handover_hl7::mllp::{encode, MllpDecoder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let relay = Arc::clone(relay);
    let server = tokio::spawn(async move {
        let ack =
            encode(b"MSH|^~\\&|RELAY|BENCH|PAS|RX1|20261120113200||ACK^A03|R1|P|2.4\rMSA|AA|R1\r");
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let mut decoder = MllpDecoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut i = first;
        loop {
            while let Some(frame) = decoder.next_frame() {
                let frame = frame.map_err(|e| anyhow::anyhow!("MLLP framing: {e:?}"))?;
                relay
                    .publish_one(
                        format!("bench.sync.{:04}", i % RAW_SUBJECTS),
                        format!("relay-{run}-{i}"),
                        bytes::Bytes::from(frame),
                    )
                    .await?;
                wr.write_all(&ack).await?;
                i += 1;
            }
            let k = rd.read(&mut buf).await?;
            if k == 0 {
                return anyhow::Ok(());
            }
            decoder.push(&buf[..k]);
        }
    });
    let sent = mllp_send(addr, gen, run, first, n, 1, p).await;
    let served = server.await?;
    sent.and(served)
}

/// `connections` MLLP senders to `addr`, each sending its share of `n` A03 messages one at a
/// time and waiting for each ACK, which must be `AA`. Messages are numbered from `first` on
/// each connection, so calls with disjoint ranges send no message twice.
async fn mllp_send(
    addr: std::net::SocketAddr,
    gen: &Gen,
    run: usize,
    first: u64,
    n: u64,
    connections: u64,
    p: &Phase,
) -> anyhow::Result<()> {
    use handover_hl7::mllp::{encode, MllpDecoder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut set = tokio::task::JoinSet::new();
    for c in 0..connections {
        let count = n / connections + u64::from(c < n % connections);
        let (gen, p) = (gen.clone(), p.clone());
        set.spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut decoder = MllpDecoder::default();
            let mut buf = vec![0u8; 4096];
            for i in first..first + count {
                let person = gen.person_at(c * count + i);
                stream
                    .write_all(&encode(a03(run, c, i, person).as_bytes()))
                    .await?;
                let frame = loop {
                    if let Some(frame) = decoder.next_frame() {
                        break frame.map_err(|e| anyhow::anyhow!("MLLP framing: {e:?}"))?;
                    }
                    let k = stream.read(&mut buf).await?;
                    anyhow::ensure!(k > 0, "the MLLP connection closed before the ACK");
                    decoder.push(&buf[..k]);
                };
                let ack = handover_hl7::Message::parse(&frame)
                    .map_err(|e| anyhow::anyhow!("unreadable ACK: {e:?}"))?;
                let code = ack.get("MSA-1").unwrap_or("").to_string();
                anyhow::ensure!(code == "AA", "ACK {code}, not AA, for message {i}");
                p.add(1);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// `clients` concurrent clients each doing `op` (given its client number and a random
/// generator) and waiting for it before the next, for `time`: as fast as each is done, or
/// with `pace`, sharing that many operations per second. The latencies (µs, sorted), how
/// many were done and how long it took.
async fn drive<F, Fut>(
    clients: usize,
    time: Duration,
    seed: u64,
    p: &Phase,
    pace: Option<u64>,
    op: F,
) -> anyhow::Result<(Vec<u64>, u64, Duration)>
where
    F: Fn(usize, &mut rand::rngs::StdRng) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    use rand::SeedableRng;
    let started = Instant::now();
    let deadline = started + time;
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (op, p) = (op.clone(), p.clone());
        set.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.rotate_left(17) ^ c as u64);
            let mut lat = Vec::new();
            let mut k = 0u64;
            while Instant::now() < deadline {
                // Paced: operation k of client c is due at (k × clients + c) / rate. When a
                // slow answer made it late, its latency counts from when it was due, so the
                // delay is not hidden (no coordinated omission); when on time, from when it
                // is sent (the timer's own lateness, up to a millisecond, is not the
                // server's).
                let t = match pace {
                    Some(rate) => {
                        let due = started
                            + Duration::from_secs_f64(
                                (k * clients as u64 + c as u64) as f64 / rate as f64,
                            );
                        k += 1;
                        if due >= deadline {
                            break;
                        }
                        if due > Instant::now() {
                            tokio::time::sleep_until(due.into()).await;
                            Instant::now()
                        } else {
                            due
                        }
                    }
                    None => Instant::now(),
                };
                op(c, &mut rng).await?;
                lat.push(t.elapsed().as_micros() as u64);
                p.add(1);
            }
            anyhow::Ok(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    let took = started.elapsed();
    all.sort_unstable();
    let count = all.len() as u64;
    Ok((all, count, took))
}

/// [`drive`] with GET requests ([`authorised_get`]).
async fn query<F>(
    clients: usize,
    url: F,
    time: Duration,
    seed: u64,
    p: &Phase,
    pace: Option<u64>,
) -> anyhow::Result<(Vec<u64>, u64, Duration)>
where
    F: Fn(&mut rand::rngs::StdRng) -> (String, &'static str) + Clone + Send + 'static,
{
    drive(clients, time, seed, p, pace, authorised_get(url)).await
}

/// Offered loads of a load sweep (operations/s): steps of 500 to 3,000, then wider.
const SWEEP_LOADS: &[u64] = &[
    500, 1_000, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 12_000, 16_000,
    20_000, 24_000, 32_000,
];

/// A load sweep: [`QUERY_CLIENTS`] clients doing `op` paced at each of [`SWEEP_LOADS`] in
/// turn for `time`, until the p99 reaches [`JOURNEY_P99_MS`], the clients complete less
/// than [`SWEEP_KEPT_UP`] of what is offered, or the load passes `ceiling`. The highest load
/// that held (0 if none) and its p99 (ms).
async fn sweep<F, Fut>(
    ui: &Ui,
    label: &str,
    time: Duration,
    seed: u64,
    ceiling: f64,
    op: F,
) -> anyhow::Result<(f64, f64)>
where
    F: Fn(usize, &mut rand::rngs::StdRng) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let (mut held, mut held_p99) = (0.0, f64::NAN);
    for (i, &offered) in SWEEP_LOADS.iter().enumerate() {
        if offered as f64 > ceiling {
            break;
        }
        let p = ui.phase(
            &format!("{label} ({QUERY_CLIENTS} clients, {offered}/s offered)"),
            0,
        );
        let (lat, count, took) = drive(
            QUERY_CLIENTS,
            time,
            seed ^ (i as u64) << 8,
            &p,
            Some(offered),
            op.clone(),
        )
        .await?;
        p.finish(took);
        let p99 = percentile_ms(&lat, 99.0);
        let done = rate(count, time);
        ui.line(&format!("    p99 {p99:.2} ms, {done:.0}/s done"));
        if p99 >= JOURNEY_P99_MS || done < offered as f64 * SWEEP_KEPT_UP {
            break;
        }
        (held, held_p99) = (offered as f64, p99);
    }
    Ok((held, held_p99))
}

/// A read as an operation for [`drive`]: a GET of the URL `url` gives, with the bearer
/// token it gives and the access reason `direct-care`; an answer that is not 2xx is an
/// error.
fn authorised_get<F>(
    url: F,
) -> impl Fn(
    usize,
    &mut rand::rngs::StdRng,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>
       + Clone
       + Send
       + 'static
where
    F: Fn(&mut rand::rngs::StdRng) -> (String, &'static str) + Clone + Send + 'static,
{
    let client = reqwest::Client::new();
    move |_, rng| {
        let (u, token) = url(rng);
        let request = client
            .get(&u)
            .bearer_auth(token)
            .header("handover-access-reason", "direct-care")
            .send();
        Box::pin(async move {
            let resp = request.await?;
            let status = resp.status();
            let _ = resp.bytes().await?;
            anyhow::ensure!(status.is_success(), "GET {u} answered {status}");
            Ok(())
        })
    }
}

/// Latencies of the end-to-end phase (sorted, µs).
struct EndToEnd {
    /// From each measured POST's 202 until the journey projection committed its event.
    e2e: Vec<u64>,
    /// Each measured POST's own latency.
    post: Vec<u64>,
    /// `e2e` of the warm-up's events.
    warmup: Vec<u64>,
}

/// Single-event POSTs paced at `rate`/s: `warmup` of them, then `total` measured.
async fn end_to_end(
    gen: &Gen,
    base: &str,
    rt: &Runtime,
    people: u64,
    (rate, warmup, total): (u64, u64, u64),
    run: usize,
    p: &Phase,
) -> anyhow::Result<EndToEnd> {
    use rand::{Rng, SeedableRng};
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/events");
    let mut rng = rand::rngs::StdRng::seed_from_u64(gen.seed ^ 0xE2E ^ run as u64);
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut set = tokio::task::JoinSet::new();
    for k in 0..warmup + total {
        ticker.tick().await;
        let person = gen.person_at(rng.gen_range(0..people));
        let mut body = Vec::with_capacity(512);
        gen.e2e_event(&mut body, run, k, person);
        let (client, url, p) = (client.clone(), url.clone(), p.clone());
        let mut progress = rt.journey_progress.clone();
        set.spawn(async move {
            let t = Instant::now();
            let resp = client
                .post(&url)
                .bearer_auth(TOKEN_PUBLISH)
                .header("content-type", "application/cloudevents+json")
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let bytes = resp.bytes().await?;
            let acked = Instant::now();
            if status.as_u16() != 202 {
                anyhow::bail!(
                    "POST /v1/events answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            let seq = v["events"][0]["sequence"]
                .as_u64()
                .context("the 202 names no sequence")?;
            tokio::time::timeout(
                Duration::from_secs(60),
                progress.wait_for(|pr| pr.position >= seq),
            )
            .await
            .context("the event was not projected within 60 s")??;
            p.add(1);
            anyhow::Ok((
                k,
                acked.elapsed().as_micros() as u64,
                (acked - t).as_micros() as u64,
            ))
        });
    }
    let mut out = EndToEnd {
        e2e: Vec::new(),
        post: Vec::new(),
        warmup: Vec::new(),
    };
    while let Some(r) = set.join_next().await {
        let (k, a, b) = r??;
        if k < warmup {
            out.warmup.push(a);
        } else {
            out.e2e.push(a);
            out.post.push(b);
        }
    }
    out.e2e.sort_unstable();
    out.post.sort_unstable();
    out.warmup.sort_unstable();
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Event generation

/// Deterministic generator of realistic catalogue events: event `i` is step `i / people` of
/// the story of person `permute(i % people)`, so every person's events arrive in order and
/// interleaved with everyone else's.
#[derive(Debug, Clone)]
pub struct Gen {
    seed: u64,
    people: u64,
    mul: u64,
}

/// A person's story: one hospital stay with a council-arranged package (10 events), repeated
/// as further stays when a person has more events. For a third of the people (person % 3 ==
/// 0) the package has not started and the person is still in hospital: steps 8 and 9 are
/// further delay-recorded events, so the worklists are not empty.
const STORY: &[&str] = &[
    "handover.discharge.admitted.v1",
    "handover.discharge.transferred.v1",
    "handover.discharge.ready-date-recorded.v1",
    "handover.discharge.pathway-assigned.v1",
    "handover.referral.sent.v1",
    "handover.discharge.delay-recorded.v1",
    "handover.care-package.requested.v1",
    "handover.care-package.sourced.v1",
    "handover.care-package.started.v1",
    "handover.discharge.discharged.v1",
];

const WARDS: &[&str] = &[
    "Ward 7",
    "Ward 12",
    "Elderly Care 3",
    "Elderly Care 4",
    "Stroke Unit",
    "Ward 21 (Respiratory)",
];
const DELAYS: &[(&str, &str, &str)] = &[
    (
        "awaiting-care-package",
        "council",
        "no provider capacity in the area",
    ),
    (
        "awaiting-assessment",
        "council",
        "social worker allocated, visit booked",
    ),
    (
        "awaiting-equipment",
        "nhs",
        "hospital bed and hoist on order",
    ),
    (
        "patient-family-choice",
        "joint",
        "family visiting care homes this week",
    ),
];

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A valid NHS number (Modulus 11) for person `p`: the first valid one in the block of ten
/// nine-digit stems starting at `900000000 + 10 p`.
pub fn nhs_for(p: u64) -> String {
    let block = 900_000_000 + (p % 9_999_999) * 10;
    for j in 0..10 {
        let stem = block + j;
        let mut digits = [0u8; 9];
        let mut s = stem;
        for d in digits.iter_mut().rev() {
            *d = (s % 10) as u8;
            s /= 10;
        }
        if let Some(c) = handover_events::nhs::check_digit(&digits) {
            return format!("{stem}{c}");
        }
    }
    // Unreachable: at most one stem in eleven has no check digit.
    format!("{}0", block + 1)
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct Ts(i64);
impl std::fmt::Display for Ts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = civil(self.0.div_euclid(86_400));
        let s = self.0.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}
struct Day(i64);
impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = civil(self.0.div_euclid(86_400));
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// 2024-01-01T00:00:00Z.
const EPOCH_2024: i64 = 1_704_067_200;

impl Gen {
    /// A generator for `people` people.
    pub fn new(seed: u64, people: u64) -> Gen {
        let people = people.max(1);
        let mut mul = 1_000_003 + (seed % 1000) * 2;
        while gcd(mul, people) != 1 {
            mul += 1;
        }
        Gen { seed, people, mul }
    }

    /// The person of the `slot`-th position in the interleaving.
    pub fn person_at(&self, slot: u64) -> u64 {
        ((slot % self.people) * self.mul + self.seed) % self.people
    }

    /// Appends event `i` as compact CloudEvents JSON.
    pub fn event(&self, out: &mut Vec<u8>, i: u64) {
        let person = self.person_at(i % self.people);
        let step = i / self.people;
        self.write(out, &format!("{:x}-{i:010}", self.seed), person, step);
    }

    /// Appends an extra delay-recorded event for `person` (end-to-end phase).
    fn e2e_event(&self, out: &mut Vec<u8>, run: usize, k: u64, person: u64) {
        self.write(out, &format!("e2e-{:x}-{run}-{k:08}", self.seed), person, 5);
    }

    fn write(&self, out: &mut Vec<u8>, id: &str, person: u64, step: u64) {
        let mut kind = (step % STORY.len() as u64) as usize;
        if person.is_multiple_of(3) && kind >= 8 {
            kind = 5;
        }
        let stay = step / STORY.len() as u64;
        let ty = STORY[kind];
        let mix = person.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.seed;
        // Each stay starts on its own day; events of a stay follow over the next days.
        let admitted = EPOCH_2024
            + ((person % 500) as i64 + stay as i64 * 45) * 86_400
            + 8 * 3600
            + (mix % 600) as i64 * 60;
        let t = admitted + kind as i64 * 86_400 + ((mix >> 10) % 240) as i64 * 60;
        let (hospital, site, council) = if person.is_multiple_of(2) {
            ("RX1", "RX1CC", "E08000035")
        } else {
            ("RR8", "RR801", "E08000032")
        };
        let source = match kind {
            0..=5 | 9 => format!("urn:ods:{hospital}:pas"),
            _ => format!("urn:gss:{council}:brokerage"),
        };
        let nhs = nhs_for(person);
        let enc = format!("{hospital}-ENC-{person:07}-{stay}");
        let referral = format!("REF-{hospital}-{person:07}-{stay}");
        let package = format!("PKG-{council}-{person:07}-{stay}");
        let ward = WARDS[(mix % WARDS.len() as u64) as usize];
        let drd = admitted + 2 * 86_400;
        let start = admitted + 8 * 86_400;
        let _ = write!(
            out,
            r#"{{"specversion":"1.0","id":"{id}","source":"{source}","type":"{ty}","subject":"{nhs}","time":"{}","datacontenttype":"application/json","traceparent":"00-{:016x}{:016x}-{:016x}-01","data":"#,
            Ts(t),
            mix,
            mix.rotate_left(29) | 1,
            (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
        );
        let _ = match kind {
            0 => write!(
                out,
                r#"{{"encounter_id":"{enc}","site":"{site}","ward":"{ward}","admitted_at":"{}","admission_method":"emergency","responsible_council":"{council}"}}"#,
                Ts(admitted)
            ),
            1 => write!(
                out,
                r#"{{"encounter_id":"{enc}","ward":"Elderly Care 3","previous_ward":"{ward}","at":"{}"}}"#,
                Ts(t)
            ),
            2 => write!(
                out,
                r#"{{"encounter_id":"{enc}","discharge_ready_date":"{}"}}"#,
                Day(drd)
            ),
            3 => write!(
                out,
                r#"{{"encounter_id":"{enc}","pathway":{}}}"#,
                1 + mix % 3
            ),
            4 => write!(
                out,
                r#"{{"referral_id":"{referral}","to_council":"{council}","from_org":"{hospital}","encounter_id":"{enc}","reason":"needs support with personal care after a fall","urgency":"urgent","proposed_discharge_date":"{}","consent_obtained":true}}"#,
                Day(drd)
            ),
            5 => {
                let (reason, who, note) = DELAYS[((mix >> 4) % DELAYS.len() as u64) as usize];
                write!(
                    out,
                    r#"{{"encounter_id":"{enc}","reason":"{reason}","attributed_to":"{who}","note":"{note}"}}"#
                )
            }
            6 => write!(
                out,
                r#"{{"package_id":"{package}","service_type":"reablement","referral_id":"{referral}","hours_per_week":10.5,"calls_per_day":3,"carers_per_call":1,"required_start":"{}"}}"#,
                Day(start)
            ),
            7 => write!(
                out,
                r#"{{"package_id":"{package}","provider":"1-{:09}","agreed_start":"{}"}}"#,
                mix % 1_000_000_000,
                Day(start)
            ),
            8 => write!(
                out,
                r#"{{"package_id":"{package}","started_on":"{}"}}"#,
                Day(start)
            ),
            _ => write!(
                out,
                r#"{{"encounter_id":"{enc}","discharged_at":"{}","method":1,"destination":"usual-residence","pathway":1}}"#,
                Ts(start + 11 * 3600)
            ),
        };
        out.push(b'}');
    }
}

// ---------------------------------------------------------------------------------------
// Machine facts

fn machine() -> anyhow::Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let bin = find_nats_server().context("nats-server is not installed (cargo xtask setup)")?;
    let out = std::process::Command::new(&bin).arg("--version").output()?;
    let nats_server = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Machine {
        cpu,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_mb,
        kernel,
        nats_server,
    })
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------
// Output

fn fmt_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    match unit {
        "events/s" | "req/s" => {
            let r = v.round() as u64;
            let s = r.to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        "ms" => format!("{v:.2}"),
        "x" => format!("{v:.2}"),
        _ => format!("{v:.1}"),
    }
}

fn targets(r: &Report) -> Vec<Target> {
    let med = |n: &str| r.figure(n).map(|f| f.median).unwrap_or(f64::NAN);
    let ratio = |n: &str| {
        r.figure(n)
            .and_then(|f| f.ratio.as_ref())
            .map(|x| x.median)
            .unwrap_or(f64::NAN)
    };
    let judge = |ok: bool| if ok { "met" } else { "NOT met" }.to_string();
    let mut t = Vec::new();
    // Ratios to a baseline that must reach a floor.
    for (name, target, floor) in [
        (
            "ingest.http.batch100",
            "Ingest over HTTP (batches of 100) ≥ 0.7× raw async publish",
            0.7,
        ),
        (
            "ingest.http.batch1000",
            "Ingest over HTTP (batches of 1,000) ≥ 0.7× raw async publish",
            0.7,
        ),
        (
            "ingest.mllp.1conn",
            "MLLP, 1 connection ≥ 0.8× raw sync publish",
            0.8,
        ),
        (
            "projection.catchup",
            "Projection ≥ 0.8× raw consume-plus-sled",
            0.8,
        ),
    ] {
        let x = ratio(name);
        t.push(Target {
            target: target.into(),
            measured: format!("{x:.2}×"),
            status: judge(x >= floor),
        });
    }
    // Latencies (ms) that must stay under a ceiling.
    for (name, target, ceiling) in [
        (
            "query.journey.1client.p99",
            "Journey query p99 < 2 ms (1 client)",
            2.0,
        ),
        (
            "query.worklist.delays.p99",
            "Delays worklist (first page) p99 < 20 ms (4 clients)",
            20.0,
        ),
        (
            "query.worklist.brokerage.p99",
            "Brokerage queue (first page) p99 < 20 ms (4 clients)",
            20.0,
        ),
        (
            "query.journey.paced.p99",
            "Journey query p99 < 2 ms (32 clients, 1,000 requests/s offered)",
            2.0,
        ),
        (
            "query.journey.p99",
            "Journey query p99 < 2 ms (32 clients sending as fast as answered)",
            2.0,
        ),
        ("e2e.p99", "End-to-end p99 < 50 ms at 1,000 events/s", 50.0),
    ] {
        let x = med(name);
        t.push(Target {
            target: target.into(),
            measured: format!("{x:.2} ms"),
            status: judge(x < ceiling),
        });
    }
    let x = med("query.journey.capacity");
    t.push(Target {
        target: "Journey query p99 < 2 ms (32 clients): the highest load that keeps it".into(),
        measured: format!(
            "{x:.0} requests/s offered (p99 {:.2} ms); the raw JetStream publish's, same sweep: {:.0}/s; saturation {:.0} requests/s",
            med("query.journey.capacity.p99"),
            med("raw.publish.capacity"),
            med("query.journey.rate")
        ),
        status: if x >= QUERY_PACED_RATE as f64 {
            format!("met up to {x:.0}/s")
        } else {
            "NOT met".to_string()
        },
    });
    let x = med("rebuild.rss_peak");
    t.push(Target {
        target: "Projector RSS < 300 MB at 1M events".into(),
        measured: format!(
            "{x:.0} MB peak, {:.0} MB once caught up (the projector's own process, {} events)",
            med("rebuild.rss_after"),
            r.events
        ),
        status: judge(x < 300.0),
    });
    let x = med("rebuild.disk_ratio");
    t.push(Target {
        target: "Read-model disk ≤ 3× logical size".into(),
        measured: format!("{x:.2}×"),
        status: judge(x <= 3.0),
    });
    t
}

/// The report as Markdown: the machine, the figures table and the targets.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let loads: Vec<String> = r.load_before.iter().map(|l| format!("{l:.2}")).collect();
    s.push_str(&format!(
        "Machine: {} ({} cores, {} MB), Linux {}; {}.\n\
         Size: {} events (mean {:.0} bytes) over {} people, seed {}; {} run(s); sync publish baseline over {} events.\n\
         Load average (1 min) before each run: {}; after: {:.2}. Started {}.\n\n",
        m.cpu, m.cores, m.memory_mb, m.kernel, m.nats_server, r.events, r.mean_event_bytes, r.people, r.seed, r.runs,
        r.sync_events, loads.join(", "), r.load_after, r.started_at
    ));
    s.push_str(
        "| figure | unit | median | range (min–max) | ratio to baseline (median, range) |\n",
    );
    s.push_str("|---|---|---:|---:|---|\n");
    for f in &r.figures {
        let ratio = match &f.ratio {
            Some(x) => format!("{:.2}× {} ({:.2}–{:.2})", x.median, x.to, x.min, x.max),
            None => String::new(),
        };
        s.push_str(&format!(
            "| `{}` | {} | {} | {}–{} | {} |\n",
            f.name,
            f.unit,
            fmt_value(f.median, &f.unit),
            fmt_value(f.min, &f.unit),
            fmt_value(f.max, &f.unit),
            ratio
        ));
    }
    for (name, why) in NOT_YET {
        s.push_str(&format!("| `{name}` | | – | – | {why} |\n"));
    }
    s.push_str("\n| target (issue 9) | measured (median) | status |\n|---|---|---|\n");
    for t in &r.targets {
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            t.target, t.measured, t.status
        ));
    }
    s
}

// ---------------------------------------------------------------------------------------
// Progress

/// Progress output: a bar on a terminal, plain lines otherwise.
struct Ui {
    bar: bool,
}

impl Ui {
    fn new(bar: bool) -> Ui {
        Ui { bar }
    }

    fn line(&self, s: &str) {
        if self.bar {
            println!("{s}");
        } else {
            eprintln!("{s}");
        }
    }

    fn phase(&self, label: &str, total: u64) -> Phase {
        let p = Phase(Arc::new(PhaseInner {
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            started: Instant::now(),
            bar: self.bar,
            stop: AtomicU64::new(0),
        }));
        if self.bar {
            let q = p.clone();
            tokio::spawn(async move {
                while q.0.stop.load(Ordering::Relaxed) == 0 {
                    q.draw();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        p
    }
}

#[derive(Clone)]
struct Phase(Arc<PhaseInner>);

struct PhaseInner {
    label: String,
    total: u64,
    done: AtomicU64,
    started: Instant,
    bar: bool,
    stop: AtomicU64,
}

impl Phase {
    fn add(&self, n: u64) {
        self.0.done.fetch_add(n, Ordering::Relaxed);
    }

    fn set(&self, n: u64) {
        self.0.done.store(n, Ordering::Relaxed);
    }

    fn draw(&self) {
        let done = self.0.done.load(Ordering::Relaxed);
        let secs = self.0.started.elapsed().as_secs_f64();
        let width = 30usize;
        let filled = if self.0.total > 0 {
            ((done.min(self.0.total) as f64 / self.0.total as f64) * width as f64) as usize
        } else {
            0
        };
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2K  [{}{}] {} {}{} {:.1}s",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.0.label,
            done,
            if self.0.total > 0 {
                format!("/{}", self.0.total)
            } else {
                String::new()
            },
            secs
        );
        let _ = out.flush();
    }

    fn finish(&self, took: Duration) {
        self.0.stop.store(1, Ordering::Relaxed);
        let done = self.0.done.load(Ordering::Relaxed);
        let line = format!(
            "  {}: {} in {:.2}s ({}/s)",
            self.0.label,
            done,
            took.as_secs_f64(),
            fmt_value(done as f64 / took.as_secs_f64().max(1e-9), "events/s")
        );
        if self.0.bar {
            println!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw JetStream baselines

/// The raw JetStream baseline, through handover-nats's `baseline` (the only crate that
/// talks to NATS), and the raw sled read-modify-write beside it.
mod raw {
    use anyhow::Context;
    use bytes::Bytes;
    use handover_nats::baseline::RawJetStream;

    use super::{Gen, Phase, RAW_SUBJECTS, SLED_BATCH};

    pub struct Raw {
        js: RawJetStream,
    }

    impl Raw {
        pub async fn connect(url: &str) -> anyhow::Result<Raw> {
            Ok(Raw {
                js: RawJetStream::connect(url)
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?,
            })
        }

        /// A stream configured like the event log's over `<root>.>`.
        pub async fn create_stream(&self, name: &str, root: &str) -> anyhow::Result<()> {
            Ok(self.js.create_stream(name, root).await?)
        }

        pub async fn delete_stream(&self, name: &str) -> anyhow::Result<()> {
            Ok(self.js.delete_stream(name).await?)
        }

        /// Publishes events `[from, from + n)` under `<root>.<person mod 10,000>` with
        /// `Nats-Msg-Id`, keeping at most `window` acknowledgements outstanding.
        pub async fn publish(
            &self,
            gen: &Gen,
            root: &str,
            from: u64,
            n: u64,
            window: usize,
            p: &Phase,
        ) -> anyhow::Result<()> {
            let items = (from..from + n).map(|i| {
                let mut buf = Vec::with_capacity(1024);
                gen.event(&mut buf, i);
                let person = gen.person_at(i % gen.people);
                (
                    format!("{root}.{:04}", person % RAW_SUBJECTS),
                    format!("{:040x}", (i as u128) << 8 | 0x5a),
                    Bytes::from(buf),
                )
            });
            self.js.publish(items, window, || p.add(1)).await?;
            Ok(())
        }

        /// An operation for [`super::drive`]: publishes one of `gen`'s events (a random one)
        /// under `<root>.<person mod 10,000>` with a fresh `Nats-Msg-Id` and waits for its
        /// acknowledgement.
        #[allow(clippy::type_complexity)]
        pub fn paced_publisher(
            self,
            gen: &Gen,
            root: &str,
        ) -> impl Fn(
            usize,
            &mut rand::rngs::StdRng,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>
               + Clone
               + Send
               + 'static {
            let (raw, gen, root) = (std::sync::Arc::new(self), gen.clone(), root.to_string());
            move |_, rng| {
                use rand::Rng;
                let i = rng.gen_range(0..gen.people * 10);
                let mut buf = Vec::with_capacity(1024);
                gen.event(&mut buf, i);
                let person = gen.person_at(i % gen.people);
                let subject = format!("{root}.{:04}", person % RAW_SUBJECTS);
                let id = format!("{:032x}", rng.gen::<u128>());
                let raw = raw.clone();
                Box::pin(async move { raw.publish_one(subject, id, Bytes::from(buf)).await })
            }
        }

        /// Publishes one message with `Nats-Msg-Id` `id` and waits for its acknowledgement.
        pub async fn publish_one(
            &self,
            subject: String,
            id: String,
            payload: Bytes,
        ) -> anyhow::Result<()> {
            self.js
                .publish(std::iter::once((subject, id, payload)), 1, || {})
                .await?;
            Ok(())
        }

        /// Consumes `n` messages of `stream_name` through a durable pull consumer in batches
        /// of up to 1,000, acknowledging each batch once. With `tree`, each message is also a
        /// sled read-modify-write and each batch is committed (flushed) before its ack, like
        /// a projection.
        pub async fn consume(
            &self,
            stream_name: &str,
            durable: &str,
            n: u64,
            tree: Option<&handover_store::Tree>,
            people: u64,
            p: &Phase,
        ) -> anyhow::Result<()> {
            let mut feed = self.js.feed(stream_name, durable, SLED_BATCH).await?;
            let mut seen = 0u64;
            while seen < n {
                let batch = feed.next_batch(SLED_BATCH).await?;
                let count = batch.deliveries.len() as u64;
                if let Some(tree) = tree {
                    let mut tx = tree.begin();
                    for d in &batch.deliveries {
                        super::sled_apply(
                            &mut tx,
                            (d.sequence - 1) % people,
                            d.sequence,
                            &d.payload,
                        )?;
                    }
                    let pos = batch.deliveries.last().map(|d| d.sequence).unwrap_or(0);
                    tree.commit(tx, pos).await?;
                }
                batch.ack().await?;
                seen += count;
                p.add(count);
            }
            let _ = self.js.delete_consumer(stream_name, durable).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_events_are_valid_catalogue_events_of_about_400_bytes() {
        let gen = Gen::new(7, 50);
        let mut total = 0;
        for i in 0..500 {
            let mut buf = Vec::new();
            gen.event(&mut buf, i);
            total += buf.len();
            let e = handover_events::Event::from_json_slice(&buf).unwrap_or_else(|e| {
                panic!(
                    "event {i} invalid: {e:?}\n{}",
                    String::from_utf8_lossy(&buf)
                )
            });
            let person = gen.person_at(i % 50);
            let step = (i / 50 % 10) as usize;
            let expected = if person.is_multiple_of(3) && step >= 8 {
                STORY[5]
            } else {
                STORY[step]
            };
            assert_eq!(e.event_type().as_str(), expected);
        }
        let mean = total / 500;
        assert!((300..=520).contains(&mean), "mean event size {mean}");
        let mut buf = Vec::new();
        gen.e2e_event(&mut buf, 0, 1, 3);
        handover_events::Event::from_json_slice(&buf).unwrap();
    }

    #[test]
    fn nhs_numbers_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for p in 0..20_000 {
            let n = nhs_for(p);
            handover_events::NhsNumber::parse(&n).unwrap();
            assert!(seen.insert(n));
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(Ts(EPOCH_2024).to_string(), "2024-01-01T00:00:00Z");
        assert_eq!(Day(EPOCH_2024 + 59 * 86_400).to_string(), "2024-02-29");
    }
}
