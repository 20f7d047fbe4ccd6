//! A projector killed mid-stream and restarted ends with exactly the read model a fresh
//! replay of the whole stream produces.

use std::collections::BTreeMap;
use std::time::Duration;

use handover::runtime::{open_store, Runtime};
use handover_events::{Event, NhsNumber};
use serde_json::json;

use crate::support::Backbone;

fn nhs_numbers(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut base = 999_000_000u64;
    while out.len() < n {
        base += 1;
        let nine: Vec<u8> = base.to_string().bytes().map(|b| b - b'0').collect();
        if let Some(c) = handover_events::nhs::check_digit(&nine) {
            out.push(format!("{base}{c}"));
        }
    }
    out
}

fn load(people: usize, per_person: usize) -> Vec<Event> {
    let nhs = nhs_numbers(people);
    let mut events = Vec::new();
    for round in 0..per_person {
        for (p, n) in nhs.iter().enumerate() {
            let t = format!(
                "2026-11-{:02}T{:02}:{:02}:00Z",
                1 + round / 24,
                round % 24,
                p % 60
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
            let v = crate::support::ev(&format!("{p}-{round}"), "urn:ods:RX1:pas", ty, n, &t, data);
            events.push(Event::from_json(v).unwrap());
        }
    }
    events
}

/// Opens the store once the previous (killed) owner's background flush has let go of it.
fn reopen(path: &std::path::Path) -> handover_store::Store {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open_store(path) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::yield_now();
            }
            Err(e) => panic!("store still locked: {e:#}"),
        }
    }
}

fn snapshot(store: &handover_store::Store) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let tree = store.tree("journey").unwrap();
    tree.scan_prefix(b"").map(|r| r.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_stream_resumes_without_loss_or_double_counting() {
    let mut b = Backbone::start().await;
    // stop the backbone's own projector: this test drives projectors itself
    b.rt.take().unwrap().shutdown().await;
    let events = load(200, 40);
    let total = events.len() as u64;
    let mut cfg = b.config();
    cfg.api.enabled = false;
    cfg.projections.enabled = false;
    let publisher = Runtime::start(&cfg, None).await.unwrap();
    for chunk in events.chunks(1000) {
        publisher.log.publish(chunk).await.unwrap();
    }
    assert_eq!(publisher.log.last_sequence().await.unwrap(), total);
    publisher.shutdown().await;

    let mut cfg = b.config();
    cfg.api.enabled = false;
    let mut kills = 0;
    loop {
        let start = reopen(&cfg.store.path)
            .tree("journey")
            .unwrap()
            .position()
            .unwrap();
        let rt = Runtime::start(&cfg, None).await.unwrap();
        let mut progress = rt.journey_progress.clone();
        if start >= total {
            rt.shutdown().await;
            break;
        }
        // let it apply at least one batch, then kill it wherever it is
        tokio::time::timeout(
            Duration::from_secs(30),
            progress.wait_for(|p| p.position > start),
        )
        .await
        .unwrap()
        .unwrap();
        rt.abort().await;
        kills += 1;
        assert!(
            kills < 100,
            "the projector makes no progress across restarts"
        );
    }
    assert!(
        kills >= 2,
        "the projector was killed mid-stream at least twice (killed {kills} times)"
    );

    let resumed = snapshot(&reopen(&cfg.store.path));

    // a fresh replay of the whole stream into a new store
    let mut fresh_cfg = b.config();
    fresh_cfg.api.enabled = false;
    fresh_cfg.store.path = b.dir.path().join("fresh");
    let rt = Runtime::start(&fresh_cfg, None).await.unwrap();
    rt.projected(total, Duration::from_secs(60)).await.unwrap();
    rt.shutdown().await;
    let fresh = snapshot(&reopen(&fresh_cfg.store.path));

    assert_eq!(resumed.len(), fresh.len());
    assert_eq!(
        resumed.keys().filter(|k| k.starts_with(b"p/")).count(),
        200,
        "200 journeys"
    );
    for (k, v) in &fresh {
        assert_eq!(
            resumed.get(k),
            Some(v),
            "entry {} differs",
            String::from_utf8_lossy(k)
        );
    }
    // and the read model really holds every event once
    let store = reopen(&cfg.store.path);
    let journeys = handover_projections::Journeys::new(cfg.pseudonym_key().unwrap());
    let tree = store.tree("journey").unwrap();
    let first = NhsNumber::parse(&nhs_numbers(1)[0]).unwrap();
    let j = journeys.get(&tree, &first).unwrap().unwrap();
    assert_eq!(j.timeline.len(), 40);
    assert_eq!(tree.position().unwrap(), total);
}
