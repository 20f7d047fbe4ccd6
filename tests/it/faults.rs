//! Faults injected into real processes while events are being ingested over HTTP:
//! nothing acknowledged with `202` is ever lost, and nothing is stored or counted twice.
//!
//! - `nats_killed_and_restarted_during_ingest_*`: the single nats-server is SIGKILLed in
//!   the middle of a continuous HTTP load and restarted on the same port and store.
//! - `a_read_model_store_over_its_file_size_limit_*` (any user) and
//!   `a_full_read_model_disk_*` (a small tmpfs when root, else the same file-size limit):
//!   the real `handover` process cannot write its read-model store mid-run; ingest goes on,
//!   the projection reports the error and is not ready, and after the limit is lifted and
//!   the process restarted the read model is byte for byte a clean rebuild.
//!
//! - `a_frozen_nats_server_*`: the nats-server is SIGSTOPped (connections open, nothing
//!   answered); `/readyz` turns `503` once the log has been silent for `LOG_SILENT_AFTER`,
//!   and `200` again when it is resumed.
//!
//! The load generator, the read-back of the stream and the journey check are shared with
//! `cluster.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handover_api::Role;
use handover_events::Event;
use handover_nats::EventLog;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::support::{ev, token, Backbone};

pub(crate) const SOURCE: &str = "urn:ods:RX1:pas";

/// `n` events spread round-robin over `people`, each with a unique id (`tag-i`), mixing
/// five event types.
pub(crate) fn workload(tag: &str, people: &[String], n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let p = i % people.len();
            let round = i / people.len();
            let t = format!(
                "2026-11-{:02}T{:02}:{:02}:{:02}Z",
                1 + round / 24,
                round % 24,
                p % 60,
                i % 60
            );
            let enc = format!("E{p}");
            let (ty, data) = match round % 5 {
                0 => (
                    "discharge.admitted",
                    json!({"encounter_id": enc, "site": "RX1CC", "admitted_at": t, "ward": format!("W{round}")}),
                ),
                1 => (
                    "discharge.transferred",
                    json!({"encounter_id": enc, "ward": format!("W{round}")}),
                ),
                2 => (
                    "discharge.ready-date-recorded",
                    json!({"encounter_id": enc, "discharge_ready_date": &t[..10]}),
                ),
                3 => (
                    "discharge.delay-recorded",
                    json!({"encounter_id": enc, "reason": "awaiting-care-package", "attributed_to": "joint"}),
                ),
                _ => (
                    "referral.sent",
                    json!({"referral_id": format!("R{p}-{round}"), "to_council": "E08000035", "from_org": "RX1"}),
                ),
            };
            ev(&format!("{tag}-{i}"), SOURCE, ty, &people[p], &t, data)
        })
        .collect()
}

/// Splits events into requests of 1, 2 and 3 events in turn (1 = a single CloudEvent, more
/// = a batch).
pub(crate) fn requests(events: Vec<Value>) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut it = events.into_iter().peekable();
    let mut size = 1;
    while it.peek().is_some() {
        out.push(it.by_ref().take(size).collect());
        size = size % 3 + 1;
    }
    out
}

/// The `(source, id)` of a CloudEvent as sent.
pub(crate) fn key_of(v: &Value) -> (String, String) {
    (
        v["source"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

/// One HTTP request as the client saw it.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub sent: Instant,
    pub received: Instant,
    /// HTTP status; 0 when the request itself failed (connection, client timeout).
    pub status: u16,
    /// The response was `application/problem+json`.
    pub problem: bool,
}

/// What the load generator saw.
#[derive(Debug, Default)]
pub(crate) struct LoadReport {
    pub outcomes: Vec<Outcome>,
    /// Every event that got a `202`, with the stream sequence and `duplicate` flag of that
    /// `202` (each event is posted until its first `202`, then never again).
    pub acked: BTreeMap<(String, String), (u64, bool)>,
}

impl LoadReport {
    /// Requests answered with `status`.
    pub fn count(&self, status: u16) -> usize {
        self.outcomes.iter().filter(|o| o.status == status).count()
    }

    /// The longest gap between two consecutive `202`s received: the outage as the client
    /// saw it.
    pub fn longest_gap_between_202s(&self) -> Duration {
        let mut t: Vec<Instant> = self
            .outcomes
            .iter()
            .filter(|o| o.status == 202)
            .map(|o| o.received)
            .collect();
        t.sort();
        t.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    /// min / median / max of `received - sent` over requests answered with `status`.
    pub fn latency(&self, status: u16) -> Option<(Duration, Duration, Duration)> {
        let mut l: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|o| o.status == status)
            .map(|o| o.received - o.sent)
            .collect();
        l.sort();
        (!l.is_empty()).then(|| (l[0], l[l.len() / 2], l[l.len() - 1]))
    }
}

/// A continuous HTTP ingest client running in the background.
pub(crate) struct Load {
    /// Events acknowledged so far.
    pub acked: Arc<AtomicUsize>,
    handle: tokio::task::JoinHandle<LoadReport>,
}

/// How often a new request is started.
const PACE: Duration = Duration::from_millis(20);
/// Most requests in flight at once (high, so hung requests do not stop new ones).
const MAX_IN_FLIGHT: usize = 256;

impl Load {
    /// Starts posting `requests` to `base`: a new request every [`PACE`] (up to
    /// [`MAX_IN_FLIGHT`] at once), and every request that did not get `202` is posted again,
    /// unchanged, until it does.
    pub fn start(http: reqwest::Client, base: String, requests: Vec<Vec<Value>>) -> Load {
        let acked = Arc::new(AtomicUsize::new(0));
        let counter = acked.clone();
        let handle = tokio::spawn(async move {
            let mut report = LoadReport::default();
            let mut fresh: VecDeque<Vec<Value>> = requests.into();
            let mut retry: VecDeque<Vec<Value>> = VecDeque::new();
            let mut in_flight = JoinSet::new();
            loop {
                while let Some(done) = in_flight.try_join_next() {
                    let (chunk, outcome, body) = done.unwrap();
                    record(&mut report, &mut retry, &counter, chunk, outcome, body);
                }
                if in_flight.len() < MAX_IN_FLIGHT {
                    if let Some(chunk) = retry.pop_front().or_else(|| fresh.pop_front()) {
                        let (http, base) = (http.clone(), base.clone());
                        in_flight.spawn(async move {
                            let (outcome, body) = post(&http, &base, &chunk).await;
                            (chunk, outcome, body)
                        });
                        tokio::time::sleep(PACE).await;
                        continue;
                    }
                }
                match in_flight.join_next().await {
                    Some(done) => {
                        let (chunk, outcome, body) = done.unwrap();
                        record(&mut report, &mut retry, &counter, chunk, outcome, body);
                    }
                    None => break,
                }
            }
            report
        });
        Load { acked, handle }
    }

    /// Waits until every event has been acknowledged.
    pub async fn finish(self, timeout: Duration) -> LoadReport {
        tokio::time::timeout(timeout, self.handle)
            .await
            .expect("the load did not get every event acknowledged in time")
            .unwrap()
    }

    /// Waits until at least `n` events are acknowledged.
    pub async fn wait_acked(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acked.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "{n} events not acknowledged in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn record(
    report: &mut LoadReport,
    retry: &mut VecDeque<Vec<Value>>,
    counter: &AtomicUsize,
    chunk: Vec<Value>,
    outcome: Outcome,
    body: Option<Value>,
) {
    if outcome.status == 202 {
        let body = body.expect("a 202 carries a JSON body");
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), chunk.len(), "{body}");
        for (sent, e) in chunk.iter().zip(events) {
            let key = key_of(sent);
            assert_eq!(e["id"].as_str(), Some(key.1.as_str()));
            let previous = report.acked.insert(
                key,
                (
                    e["sequence"].as_u64().unwrap(),
                    e["duplicate"].as_bool().unwrap(),
                ),
            );
            assert!(previous.is_none(), "an event was acknowledged twice");
        }
        counter.fetch_add(chunk.len(), Ordering::SeqCst);
    } else {
        retry.push_back(chunk);
    }
    report.outcomes.push(outcome);
}

async fn post(http: &reqwest::Client, base: &str, chunk: &[Value]) -> (Outcome, Option<Value>) {
    let (ct, body) = match chunk {
        [one] => ("application/cloudevents+json", one.to_string()),
        many => (
            "application/cloudevents-batch+json",
            Value::from(many.to_vec()).to_string(),
        ),
    };
    let sent = Instant::now();
    let r = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(token(Role::Integration))
        .header("content-type", ct)
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let (status, problem, body) = match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let problem = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                == Some("application/problem+json");
            let body = r.json::<Value>().await.ok();
            (status, problem, body)
        }
        Err(_) => (0, false, None),
    };
    let outcome = Outcome {
        sent,
        received: Instant::now(),
        status,
        problem,
    };
    (outcome, body)
}

/// Every message in the stream, read back through a fresh durable consumer from position
/// 0, as `(source, id) -> number of copies`; also checks the stream holds nothing else.
pub(crate) async fn read_back(log: &EventLog, name: &str) -> BTreeMap<(String, String), usize> {
    let last = log.last_sequence().await.unwrap();
    let mut feed = log.feed(name, None, 0).await.unwrap();
    let mut seen = BTreeMap::new();
    let mut count = 0u64;
    while count < last {
        let batch = tokio::time::timeout(Duration::from_secs(10), feed.next_batch(1000))
            .await
            .expect("reading the stream back timed out")
            .unwrap();
        for d in &batch.deliveries {
            count += 1;
            let e = Event::from_stored(&d.payload).unwrap();
            *seen.entry((e.source, e.id)).or_insert(0) += 1;
        }
        batch.ack().await.unwrap();
    }
    assert_eq!(count, last, "the stream has no gaps");
    seen
}

/// Asserts the three reliability properties for the `sent` events after a load finished:
/// every `202` is in the stream, every event is stored exactly once, and the journey
/// projection applied each exactly once (every person's timeline holds exactly its events).
pub(crate) async fn assert_stored_and_projected_once(
    log: &EventLog,
    http: &reqwest::Client,
    base: &str,
    sent: &[Value],
    report: &LoadReport,
) {
    let expected: BTreeSet<(String, String)> = sent.iter().map(key_of).collect();
    assert_eq!(expected.len(), sent.len(), "the workload has unique ids");

    // every event got a 202 in the end (the load retries until it does)
    let acked: BTreeSet<_> = report.acked.keys().cloned().collect();
    assert_eq!(acked, expected, "every event was finally acknowledged");

    // every acknowledged event is in the stream, exactly once, and nothing else is
    let stored = read_back(log, "reliability-readback").await;
    let missing: Vec<_> = acked.iter().filter(|k| !stored.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(stored.len(), expected.len(), "nothing else is stored");
    assert_eq!(log.last_sequence().await.unwrap(), expected.len() as u64);
    // the 202's sequence is where the event really is
    let distinct_sequences: BTreeSet<u64> = report.acked.values().map(|(s, _)| *s).collect();
    assert_eq!(
        distinct_sequences.len(),
        expected.len(),
        "one sequence per event"
    );

    // the projection applied each event exactly once
    let mut by_person: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for v in sent {
        by_person
            .entry(v["subject"].as_str().unwrap().to_string())
            .or_default()
            .insert(key_of(v));
    }
    let mut total = 0;
    for (nhs, want) in &by_person {
        let r = http
            .get(format!("{base}/v1/persons/{nhs}/journey"))
            .bearer_auth(token(Role::DischargeTeam))
            .header("handover-access-reason", "direct-care")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let j: Value = r.json().await.unwrap();
        let timeline = j["timeline"].as_array().unwrap();
        let got: Vec<(String, String)> = timeline
            .iter()
            .map(|e| {
                (
                    e["source"].as_str().unwrap().to_string(),
                    e["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let got_set: BTreeSet<_> = got.iter().cloned().collect();
        assert_eq!(
            got.len(),
            got_set.len(),
            "an event applied twice for a person"
        );
        assert_eq!(
            &got_set, want,
            "a person's timeline is exactly their events"
        );
        total += timeline.len();
    }
    assert_eq!(
        total,
        expected.len(),
        "timeline lengths sum to the events sent"
    );
}

/// Waits until the runtime's journey projection has applied the whole stream.
pub(crate) async fn projected_all(rt: &handover::runtime::Runtime) {
    let last = rt.log.last_sequence().await.unwrap();
    rt.projected(last, Duration::from_secs(30)).await.unwrap();
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// How long the server stays down: longer than the publish acknowledgement timeout (10 s)
/// so that requests sent while it is down are answered `503` before it comes back.
const DOWN_FOR: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_during_ingest_loses_no_acknowledged_event_and_stores_each_once()
{
    let started = Instant::now();
    let mut b = Backbone::start().await;
    let people = crate::support::nhs_numbers(990_100_000, 25);
    let events = workload("nk", &people, 500);
    let load = Load::start(b.http.clone(), b.base.clone(), requests(events.clone()));

    load.wait_acked(120, Duration::from_secs(20)).await;
    let kill_at = Instant::now();
    tokio::task::block_in_place(|| b.nats.kill());
    let killed = Instant::now();
    assert!(!b.nats.is_running());
    let acked_before_kill = load.acked.load(Ordering::SeqCst);
    tokio::time::sleep(DOWN_FOR).await;
    let restart_at = Instant::now();
    tokio::task::block_in_place(|| b.nats.restart());
    let restarted = Instant::now();

    let report = load.finish(Duration::from_secs(30)).await;

    // what the client saw while the server was down
    for o in &report.outcomes {
        assert!(
            matches!(o.status, 202 | 503),
            "only 202 or 503 while the log restarts, got {}",
            o.status
        );
        if o.status == 503 {
            assert!(o.problem, "a 503 is application/problem+json");
        }
        if o.status == 202 {
            assert!(
                !(o.sent >= killed && o.received < restart_at),
                "a request sent while nats-server was dead was acknowledged before it came back"
            );
        }
    }
    let refused = report.count(503);
    assert!(
        refused > 0,
        "requests made while nats-server was down were refused with 503"
    );
    let first_202_after_restart = report
        .outcomes
        .iter()
        .filter(|o| o.status == 202 && o.received >= restart_at)
        .map(|o| o.received)
        .min()
        .expect("requests were acknowledged after the restart");
    let first_202_sent_after_kill = report
        .outcomes
        .iter()
        .filter(|o| o.status == 202 && o.sent >= killed)
        .map(|o| o.received)
        .min()
        .unwrap();
    let (l_min, l_med, l_max) = report.latency(503).unwrap();
    let duplicates = report.acked.values().filter(|(_, d)| *d).count();
    eprintln!(
        "nats restart during ingest: {} requests ({} x 202, {refused} x 503); {acked_before_kill} of {} events acknowledged before the kill; \
         killed in {} ms, down {} ms, restart took {} ms; 503 latency min/median/max {}/{}/{} ms; \
         first 202 after restart: {} ms after it was healthy; first 202 for a request sent after the kill: {} ms after the kill; \
         longest gap between 202s (client-visible outage): {} ms; {duplicates} events were already stored when their 202 came (a 503'd attempt had stored them)",
        report.outcomes.len(),
        report.count(202),
        events.len(),
        ms(killed - kill_at),
        ms(restart_at - killed),
        ms(restarted - restart_at),
        ms(l_min),
        ms(l_med),
        ms(l_max),
        ms(first_202_after_restart.saturating_duration_since(restarted)),
        ms(first_202_sent_after_kill - killed),
        ms(report.longest_gap_between_202s()),
    );

    projected_all(b.rt()).await;
    assert_stored_and_projected_once(&b.rt().log, &b.http, &b.base, &events, &report).await;
    eprintln!("nats restart test took {} ms", ms(started.elapsed()));
}

/// A tmpfs of a fixed size mounted on a temporary directory (root only); unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::Builder::new()
            .prefix("handover-tmpfs-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs { dir })
    }

    /// Grows (or shrinks) the filesystem in place, keeping its files.
    fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // still busy: detach it now, freed when let go
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Whether this process runs as root (read from /proc, no libc needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// How the read-model store is made unwritable.
enum DiskLimit {
    /// `RLIMIT_FSIZE` on the `handover` process (`prlimit`, any user): a write past this
    /// many bytes of a file fails with `EFBIG` (SIGXFSZ is ignored, so it is an error, not
    /// a kill). Lifted with `prlimit --pid`.
    FileSize(u64),
    /// The store on a tmpfs of this size (root only): writes fail with `ENOSPC`. Lifted by
    /// growing the filesystem.
    Tmpfs(&'static str),
}

/// The real `handover` process projects a continuous HTTP ingest until its read-model store
/// cannot be written; then: ingest still answers `202`, `/readyz` is `503` naming the
/// projection's error, the position stays where it was committed. The limit is lifted, the
/// process is restarted on the same store, and the read model ends equal, byte for byte, to a
/// clean rebuild from the stream, every event applied once.
async fn read_model_disk_fills_up(limit: DiskLimit) {
    use crate::process::{
        all_trees, handover_bin, serve_command, store_differences, write_config, Handover,
    };
    use crate::support::metric;

    let started = Instant::now();
    tokio::task::block_in_place(handover_bin);
    let nats = tokio::task::spawn_blocking(handover_testkit::NatsServer::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = match &limit {
        DiskLimit::Tmpfs(size) => Some(Tmpfs::mount(size).expect("mount a small tmpfs")),
        DiskLimit::FileSize(_) => None,
    };
    let store = match &tmpfs {
        Some(t) => t.dir.path().join("store"),
        None => dir.path().join("store"),
    };
    let admin = token(Role::Admin);
    let tokens = format!(
        "[[tokens]]\nname = \"test-admin\"\norganisation = \"RX1\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
        handover_api::token_digest(&admin)
    );
    let config = write_config(dir.path(), "limited", &nats.url(), &store, &tokens);
    let limited = match &limit {
        DiskLimit::FileSize(bytes) => {
            let mut c = std::process::Command::new("sh");
            c.arg("-c")
                .arg(r#"trap '' XFSZ; exec prlimit --fsize="$1":unlimited -- "$2" serve --config "$3""#)
                .arg("sh")
                .arg(bytes.to_string())
                .arg(handover_bin())
                .arg(&config);
            c
        }
        DiskLimit::Tmpfs(_) => serve_command(&config),
    };
    let mut child =
        tokio::task::block_in_place(|| Handover::spawn(limited, &dir.path().join("limited.log")));
    let http = reqwest::Client::new();
    let log = EventLog::connect(
        &nats.url(),
        Default::default(),
        crate::support::pseudonym_key(),
    )
    .await
    .unwrap();
    let post = |batch: Vec<Value>| {
        let (http, base, admin) = (http.clone(), child.base.clone(), admin.clone());
        async move {
            http.post(format!("{base}/v1/events"))
                .bearer_auth(admin)
                .header("content-type", "application/cloudevents-batch+json")
                .body(Value::from(batch).to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    // ingest until the projection stops advancing
    let people = crate::support::nhs_numbers(990_200_000, 40);
    let mut sent = Vec::new();
    let mut round = 0;
    let stuck_at = loop {
        let batch = workload(&format!("df{round}"), &people, 100);
        assert_eq!(
            post(batch.clone()).await,
            202,
            "ingest does not depend on the read-model disk"
        );
        sent.extend(batch);
        round += 1;
        let last = log.last_sequence().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut position = 0.0;
        while Instant::now() < deadline {
            let m = child.metrics(&http).await.unwrap_or_default();
            position =
                metric(&m, "handover_projection_position{projection=\"journey\"}").unwrap_or(0.0);
            if position >= last as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if position < last as f64 {
            break position as u64;
        }
        assert!(round < 400, "the read-model store never filled up");
    };
    let full_after = sent.len();

    // the failure is visible: readiness, metrics, the log
    let (status, why) = child.readyz(&http).await;
    let metrics = child.metrics(&http).await.unwrap();
    let errors = child
        .log_lines()
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .filter_map(|l| l["fields"]["error"].as_str().map(str::to_string))
        .collect::<Vec<_>>();
    eprintln!(
        "disk full after {full_after} events: projection stopped at {stuck_at}; /readyz {status} {}; first error logged: {:?}",
        why.trim(),
        errors.first()
    );
    assert_eq!(status, 503, "not ready while the projection cannot write");
    assert!(why.contains("journey projection failing"), "{why}");
    let errno = match limit {
        DiskLimit::FileSize(_) => "File too large",
        DiskLimit::Tmpfs(_) => "No space left on device",
    };
    assert!(why.contains(errno), "/readyz names the cause: {why}");
    assert!(
        errors.iter().any(|e| e.contains(errno)),
        "the log names the cause: {errors:?}"
    );
    assert_eq!(
        metric(
            &metrics,
            "handover_projection_errors{projection=\"journey\"}"
        ),
        Some(1.0)
    );

    // ingest goes on meanwhile
    let extra = workload("df-extra", &people, 100);
    assert_eq!(post(extra.clone()).await, 202);
    sent.extend(extra);
    let total = sent.len() as u64;
    assert_eq!(log.last_sequence().await.unwrap(), total);

    // lift the limit: does the running process recover by itself?
    match &limit {
        DiskLimit::FileSize(_) => {
            let out = std::process::Command::new("prlimit")
                .args([
                    "--pid",
                    &child.pid().to_string(),
                    "--fsize=unlimited:unlimited",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        DiskLimit::Tmpfs(_) => tmpfs.as_ref().unwrap().resize("64m"),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut recovered = false;
    while Instant::now() < deadline && !recovered {
        let m = child.metrics(&http).await.unwrap_or_default();
        recovered = metric(&m, "handover_projection_position{projection=\"journey\"}")
            .is_some_and(|p| p >= total as f64);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = child.readyz(&http).await;
    eprintln!(
        "limit lifted: the running process {} by itself; /readyz {status}",
        if recovered {
            "recovered"
        } else {
            "did not recover (sled keeps its I/O error)"
        }
    );
    if !recovered {
        assert_eq!(status, 503, "still not ready, rather than ready and stale");
    }

    // crash and restart on the same store (as systemd's Restart= would)
    tokio::task::block_in_place(|| child.kill());
    let committed = crate::support::reopen(&store)
        .tree("journey")
        .unwrap()
        .position()
        .unwrap();
    // Not necessarily `stuck_at`: sled 0.34 can report a flush as done for a write that
    // then fails (seen here: 850 reported, 800 on disk). Safe, because the position and
    // the read-model changes are one batch and the consumer restarts from the store's own
    // position; the comparison with a clean rebuild below is what proves it.
    eprintln!(
        "after the kill the store holds position {committed} (the process had reported {stuck_at})"
    );
    assert!(
        committed > 0 && committed <= stuck_at,
        "the store kept a committed prefix"
    );
    let mut child = tokio::task::block_in_place(|| {
        Handover::spawn(serve_command(&config), &dir.path().join("restarted.log"))
    });
    child
        .projected(&http, total, Duration::from_secs(120))
        .await;
    assert_eq!(child.readyz(&http).await.0, 200);
    tokio::task::block_in_place(|| child.stop());

    // byte for byte a clean rebuild (timeline chunks compared by their events); every event
    // applied once
    let clean_store = dir.path().join("clean");
    let clean_config = write_config(dir.path(), "clean", &nats.url(), &clean_store, "");
    let mut clean = tokio::task::block_in_place(|| {
        Handover::spawn(serve_command(&clean_config), &dir.path().join("clean.log"))
    });
    clean
        .projected(&http, total, Duration::from_secs(120))
        .await;
    tokio::task::block_in_place(|| clean.stop());
    let resumed = crate::support::reopen(&store);
    let differences = store_differences(
        &all_trees(&resumed),
        &all_trees(&crate::support::reopen(&clean_store)),
    );
    assert!(
        differences.is_empty(),
        "differs from a clean rebuild:\n{}",
        differences.join("\n")
    );
    let journeys = handover_projections::Journeys::new(log.pseudonym_key().clone());
    let tree = resumed.tree("journey").unwrap();
    let mut applied = 0;
    for nhs in &people {
        let n = handover_events::NhsNumber::parse(nhs).unwrap();
        let j = journeys.get(&tree, &n).unwrap().unwrap();
        let ids: BTreeSet<&str> = j.timeline.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), j.timeline.len(), "an event applied twice");
        applied += j.timeline.len();
    }
    assert_eq!(applied, sent.len(), "every event applied exactly once");
    eprintln!(
        "disk-full test ({}) took {} ms",
        match limit {
            DiskLimit::FileSize(b) => format!("file-size limit {b} bytes"),
            DiskLimit::Tmpfs(s) => format!("tmpfs {s}"),
        },
        ms(started.elapsed())
    );
}

/// Where the file-size limit falls: past sled's first segments, so the projection commits
/// a few thousand events before a write fails.
const FILE_SIZE_LIMIT: u64 = 2 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_store_over_its_file_size_limit_stops_the_projection_and_it_resumes_exactly_once(
) {
    read_model_disk_fills_up(DiskLimit::FileSize(FILE_SIZE_LIMIT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_model_disk_stops_the_projection_without_loss_and_it_resumes_exactly_once() {
    if is_root() {
        read_model_disk_fills_up(DiskLimit::Tmpfs("1m")).await;
    } else {
        eprintln!(
            "not root, so no tmpfs can be mounted: the disk fills up by a file-size limit instead"
        );
        read_model_disk_fills_up(DiskLimit::FileSize(FILE_SIZE_LIMIT)).await;
    }
}

/// Polls `/readyz` every 250 ms until it answers `status`; how long that took.
async fn until_readyz(b: &Backbone, status: u16, within: Duration) -> (Duration, String) {
    let start = Instant::now();
    loop {
        let (got, body) = crate::support::readyz(&b.http, &b.base).await;
        if got == status {
            return (start.elapsed(), body);
        }
        assert!(
            start.elapsed() < within,
            "/readyz still {got} ({body:?}) after {within:?}, waiting for {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A nats-server that hangs (SIGSTOP: its connections stay open, nothing is answered, as
/// behind a half-open network path) leaves the client "connected" for minutes. `/readyz`
/// must still say the instance is not ready once the log has been silent for
/// `LOG_SILENT_AFTER`, so a load balancer sends events elsewhere; and ready again once
/// the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_nats_server_makes_the_instance_not_ready_until_it_answers_again() {
    let mut b = Backbone::start().await;
    until_readyz(&b, 200, Duration::from_secs(20)).await;
    b.nats.freeze();
    let silent_after = handover::runtime::LOG_SILENT_AFTER;
    let (took, why) = until_readyz(&b, 503, silent_after + Duration::from_secs(10)).await;
    assert!(
        why.contains("event log (NATS JetStream) has not answered"),
        "{why}"
    );
    // Not before the log had been silent that long (it last answered at most a status
    // interval before the freeze).
    assert!(
        took + handover::runtime::STATUS_INTERVAL >= silent_after,
        "not ready after {took:?}"
    );
    assert!(
        b.rt().log.is_connected(),
        "the connection itself looks fine"
    );
    b.nats.thaw();
    until_readyz(&b, 200, Duration::from_secs(20)).await;
    // And it takes events again.
    let r = b
        .post_events(&ev(
            "after-thaw",
            SOURCE,
            "discharge.admitted",
            "9434765919",
            "2026-11-20T09:14:00Z",
            json!({"encounter_id": "E1", "site": "RX1CC", "admitted_at": "2026-11-20T09:14:00Z"}),
        ))
        .await;
    assert_eq!(r.status(), 202);
}
