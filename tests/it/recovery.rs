//! A projector killed mid-stream and restarted ends with exactly the read model a fresh
//! replay of the whole stream produces.

use std::time::Duration;

use handover::runtime::Runtime;
use handover_events::{Event, NhsNumber};
use serde_json::json;

use crate::support::Backbone;

fn load(people: usize, per_person: usize) -> Vec<Event> {
    let nhs = crate::support::nhs_numbers(999_000_000, people);
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
        let start = crate::support::reopen(&cfg.store.path)
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

    let resumed = crate::support::snapshot(&crate::support::reopen(&cfg.store.path));

    // a fresh replay of the whole stream into a new store
    let mut fresh_cfg = b.config();
    fresh_cfg.api.enabled = false;
    fresh_cfg.store.path = b.dir.path().join("fresh");
    let rt = Runtime::start(&fresh_cfg, None).await.unwrap();
    rt.projected(total, Duration::from_secs(60)).await.unwrap();
    rt.shutdown().await;
    let fresh = crate::support::snapshot(&crate::support::reopen(&fresh_cfg.store.path));

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
    let store = crate::support::reopen(&cfg.store.path);
    let journeys = handover_projections::Journeys::new(cfg.pseudonym_key().unwrap());
    let tree = store.tree("journey").unwrap();
    let first = NhsNumber::parse(&crate::support::nhs_numbers(999_000_000, 1)[0]).unwrap();
    let j = journeys.get(&tree, &first).unwrap().unwrap();
    assert_eq!(j.timeline.len(), 40);
    assert_eq!(tree.position().unwrap(), total);
}
