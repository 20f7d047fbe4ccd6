//! Council file drop end to end, on a real event log: CSV exports become journeys; the same
//! file dropped twice, or a process killed mid-file and restarted, stores each event once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use handover_adapters::filedrop::{self, FileDropConfig, FileDropMetrics, FileFormat, FileSource};
use handover_events::sink::BoxFuture;
use handover_events::{Event, EventSink, SinkError, Stored};
use handover_nats::EventLog;
use serde_json::Value;
use tokio::task::JoinHandle;

use handover_api::Role;

use crate::support::{token_for, Backbone};

const BROKERAGE_FILE: &str = "brokerage_2026-11-24.csv";
const REFERRALS_FILE: &str = "referrals_2026-11-24.csv";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config(drop: &Path, chunk_rows: usize) -> Arc<FileDropConfig> {
    let source = |name: &str, source: &str, mapping: &str| FileSource {
        name: name.into(),
        dir: drop.join(name),
        source: source.into(),
        format: FileFormat::Csv,
        mapping: repo().join("deploy/mappings").join(mapping),
    };
    Arc::new(FileDropConfig {
        poll_interval_ms: 20,
        settle_ms: 30,
        chunk_rows,
        sources: vec![
            source(
                "brokerage",
                "urn:gss:E08000035:brokerage",
                "brokerage-homecare.toml",
            ),
            source(
                "referrals",
                "urn:gss:E08000035:mosaic",
                "referrals-assessments.toml",
            ),
        ],
    })
}

/// Drops a fixture as a writer should: write `*.tmp`, then rename.
fn drop_file(dir: &Path, fixture: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let bytes = std::fs::read(repo().join("tests/fixtures/filedrop").join(fixture)).unwrap();
    let tmp = dir.join(format!("{fixture}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(fixture)).unwrap();
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(
    cfg: Arc<FileDropConfig>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<FileDropMetrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        filedrop::run(cfg, sink, metrics, std::future::pending())
            .await
            .unwrap();
    })
}

async fn journey(b: &Backbone, nhs: &str) -> Value {
    b.caught_up().await;
    // Read as the council that sent the exports (the journey is visible to organisations
    // involved with the person).
    let r = b
        .http
        .get(format!("{}/v1/persons/{nhs}/journey", b.base))
        .bearer_auth(token_for(Role::SocialWorker, "E08000035"))
        .header("handover-access-reason", "direct-care")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body:#}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filedrop_csv_exports_become_journeys_and_a_redrop_is_stored_once() {
    let b = Backbone::start().await;
    let drop = b.dir.path().join("drop");
    let cfg = config(&drop, 200);
    let metrics = Arc::new(FileDropMetrics::default());
    let task = start(cfg, Arc::new(b.rt().log.clone()), metrics.clone());

    drop_file(&drop.join("brokerage"), BROKERAGE_FILE);
    drop_file(&drop.join("referrals"), REFERRALS_FILE);
    let done_b = drop.join("brokerage/done").join(BROKERAGE_FILE);
    let done_r = drop.join("referrals/done").join(REFERRALS_FILE);
    wait_for("both files in done/", || done_b.exists() && done_r.exists()).await;
    // 6 package events (one row skipped) + 5 referral events (one skipped).
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 11);

    let j = journey(&b, "9434765919").await;
    let pkg = &j["care_packages"][0];
    assert_eq!(pkg["package_id"], "LCC-PKG-5521", "{j:#}");
    assert_eq!(pkg["status"], "started");
    assert_eq!(pkg["provider"], "Leeds Reablement Service (South)");
    assert_eq!(pkg["service_type"], "reablement");
    assert_eq!(pkg["hours_per_week"], 10.5);
    assert_eq!(j["referrals"][0]["referral_id"], "RR8-REF-77120");
    assert_eq!(j["referrals"][0]["status"], "accepted");
    assert_eq!(j["timeline"].as_array().unwrap().len(), 6, "{j:#}");
    let j = journey(&b, "9434765927").await;
    assert_eq!(j["care_packages"][0]["status"], "sourced", "{j:#}");
    assert_eq!(j["referrals"][0]["status"], "declined");

    // The same file again: processed, every event a duplicate, nothing new stored.
    drop_file(&drop.join("brokerage"), BROKERAGE_FILE);
    let again = drop.join("brokerage/done/brokerage_2026-11-24.1.csv");
    wait_for("the re-dropped file in done/", || again.exists()).await;
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 11);
    let c = &metrics.snapshot()["brokerage"];
    assert_eq!(
        (c.files_done, c.accepted, c.skipped, c.duplicates),
        (2, 12, 2, 6)
    );
    let j = journey(&b, "9434765919").await;
    assert_eq!(j["timeline"].as_array().unwrap().len(), 6);
    assert_eq!(
        j["identity"]["local_ids"],
        serde_json::json!([{"system": "urn:gss:E08000035:mosaic", "value": "M-118203"}])
    );

    // The next day's export names M-120977, known so far only by the council's id, with
    // an NHS number too: the package requested and the referral withdrawn under the
    // council's id join that journey.
    let dir = drop.join("brokerage");
    let next = "Package ID,Status,Status Date,NHS Number,Person ID,Service Type,Hours Per Week,\
                Calls Per Day,Carers Per Call,Required Start,Provider,Agreed Start,Start Date,\
                Referral ID,Reason\n\
                LCC-PKG-5523,SOURCED,25/11/2026,9434765935,M-120977,HC,,,,,Aire Care Ltd,\
                02/12/2026,,,\n";
    std::fs::write(dir.join("next.tmp"), next).unwrap();
    std::fs::rename(dir.join("next.tmp"), dir.join("brokerage_2026-11-25.csv")).unwrap();
    let done = drop.join("brokerage/done/brokerage_2026-11-25.csv");
    wait_for("the next day's file in done/", || done.exists()).await;
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 12);
    let j = journey(&b, "9434765935").await;
    let pkg = &j["care_packages"][0];
    assert_eq!(pkg["package_id"], "LCC-PKG-5523", "{j:#}");
    assert_eq!(pkg["status"], "sourced");
    assert_eq!(pkg["hours_per_week"], 7.0);
    assert_eq!(pkg["provider"], "Aire Care Ltd");
    assert_eq!(j["referrals"][0]["referral_id"], "RR8-REF-77141");
    assert_eq!(j["referrals"][0]["status"], "withdrawn");
    assert_eq!(j["timeline"].as_array().unwrap().len(), 3, "{j:#}");
    task.abort();
}

/// A sink that stores events up to `limit` and then never returns, as a process that dies
/// mid-file (a chunk may be partly stored).
struct DiesAfter {
    log: EventLog,
    limit: usize,
    stored: AtomicUsize,
}

impl EventSink for DiesAfter {
    fn publish<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Vec<Stored>, SinkError>> {
        Box::pin(async move {
            let room = self
                .limit
                .saturating_sub(self.stored.load(Ordering::SeqCst));
            if events.len() > room {
                self.log.publish(&events[..room]).await?;
                self.stored.fetch_add(room, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            let r = self.log.publish(events).await?;
            self.stored.fetch_add(events.len(), Ordering::SeqCst);
            Ok(r)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filedrop_crash_mid_file_then_restart_stores_each_event_once() {
    let b = Backbone::start().await;
    let drop = b.dir.path().join("drop");
    let cfg = config(&drop, 2);
    let dying = Arc::new(DiesAfter {
        log: b.rt().log.clone(),
        limit: 3,
        stored: AtomicUsize::new(0),
    });
    let task = start(cfg.clone(), dying.clone(), Arc::default());
    drop_file(&drop.join("brokerage"), BROKERAGE_FILE);
    wait_for("3 events stored", || {
        dying.stored.load(Ordering::SeqCst) == 3
    })
    .await;
    // Killed mid-file: the second chunk of two is half stored.
    task.abort();
    let _ = task.await;
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 3);
    let inbox = drop.join("brokerage").join(BROKERAGE_FILE);
    assert!(
        inbox.exists(),
        "an unfinished file stays in the drop directory"
    );

    let metrics = Arc::new(FileDropMetrics::default());
    let task = start(cfg, Arc::new(b.rt().log.clone()), metrics.clone());
    let done = drop.join("brokerage/done").join(BROKERAGE_FILE);
    wait_for("the file in done/", || done.exists()).await;
    assert!(!inbox.exists());
    assert_eq!(
        b.rt().log.last_sequence().await.unwrap(),
        6,
        "each event once"
    );
    assert_eq!(metrics.snapshot()["brokerage"].duplicates, 3);
    let j = journey(&b, "9434765919").await;
    assert_eq!(j["care_packages"][0]["status"], "started", "{j:#}");
    assert_eq!(j["timeline"].as_array().unwrap().len(), 3);
    task.abort();
}
