//! Poison events are parked and the projection moves on; a rebuild replays the stream into a
//! shadow tree while the live one keeps answering, and swaps it in; a projection written by
//! another code version rebuilds itself on start-up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handover::runtime::Runtime;
use handover_api::Role;
use handover_events::Event;
use handover_projections::journeys::JOURNEY_VERSION;
use handover_projections::RebuildState;
use serde_json::json;

use crate::support::{ev, token, Backbone};

fn events(nhs: &[String], rounds: std::ops::Range<usize>) -> Vec<Event> {
    let mut out = Vec::new();
    for round in rounds {
        for (p, n) in nhs.iter().enumerate() {
            let t = format!(
                "2026-11-{:02}T{:02}:{:02}:00Z",
                1 + round / 24,
                round % 24,
                p % 60
            );
            let enc = format!("E{p}");
            let (ty, data) = match round % 3 {
                0 => (
                    "discharge.admitted",
                    json!({"encounter_id": enc, "site": "RX1CC", "admitted_at": t}),
                ),
                1 => (
                    "discharge.ready-date-recorded",
                    json!({"encounter_id": enc, "discharge_ready_date": &t[..10]}),
                ),
                _ => (
                    "discharge.transferred",
                    json!({"encounter_id": enc, "ward": format!("W{round}")}),
                ),
            };
            let v = ev(&format!("{p}-{round}"), "urn:ods:RX1:pas", ty, n, &t, data);
            out.push(Event::from_json(v).unwrap());
        }
    }
    out
}

async fn metrics(b: &Backbone) -> String {
    b.http
        .get(format!("{}/metrics", b.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_parked_and_the_projection_moves_on() {
    let b = Backbone::start().await;
    let nhs = crate::support::nhs_numbers(943_000_000, 2);
    let before = ev(
        "good-1",
        "urn:ods:RX1:pas",
        "discharge.admitted",
        &nhs[0],
        "2026-11-01T10:00:00Z",
        json!({"encounter_id": "E1", "site": "RX1CC", "admitted_at": "2026-11-01T10:00:00Z"}),
    );
    assert_eq!(b.post_events(&before).await.status(), 202);
    // A message no producer could store: it bypasses validation, straight into the stream.
    let poison = json!({
        "specversion": "1.0", "id": "poison-1", "type": "handover.discharge.admitted.v1",
        "subject": nhs[1], "data": {"encounter_id": 5, "site": "RX1CC"}
    });
    let poison_seq = b
        .rt()
        .log
        .publish_raw(
            "care.discharge.admitted.00000000000000000000000000000000",
            poison.to_string().into_bytes(),
            None,
        )
        .await
        .unwrap();
    let after = ev(
        "good-2",
        "urn:ods:RX1:pas",
        "discharge.admitted",
        &nhs[1],
        "2026-11-01T11:00:00Z",
        json!({"encounter_id": "E2", "site": "RX1CC", "admitted_at": "2026-11-01T11:00:00Z"}),
    );
    assert_eq!(b.post_events(&after).await.status(), 202);
    b.caught_up().await;

    // the good events around it are applied
    for n in &nhs {
        let r = b.journey(n).await;
        assert_eq!(
            r.status(),
            200,
            "journey of the person after the poison event"
        );
    }
    assert_eq!(b.rt().journey_progress.borrow().parked, 1);
    assert!(metrics(&b)
        .await
        .contains("handover_projection_parked_total{projection=\"journey\"} 1"));

    // the parked stream holds it, and `parked list` shows it without identifiers
    let parked = b.rt().log.parked_log().await.unwrap();
    let records = handover::ops::parked_records(&parked).await.unwrap();
    assert_eq!(records.len(), 1);
    let (_, r) = &records[0];
    assert_eq!(
        (r.projection.as_str(), r.sequence, r.kind.as_str()),
        ("journey", poison_seq, "decode")
    );
    assert_eq!(
        r.original().unwrap(),
        poison.to_string().into_bytes(),
        "the original message is kept"
    );
    let list = handover::ops::parked_list(&parked).await.unwrap();
    let table = handover::ops::render_parked(&list);
    println!("{table}");
    assert!(
        table.contains(&format!("journey     {poison_seq}")),
        "{table}"
    );
    assert!(table.contains("/source is required"), "{table}");
    assert!(
        !table.contains(&nhs[1]),
        "no NHS number in the listing: {table}"
    );

    // replay re-publishes it (still bad, so it is parked again under its new sequence) ...
    assert_eq!(
        handover::ops::parked_replay(&b.rt().log, &parked, poison_seq)
            .await
            .unwrap(),
        1
    );
    b.caught_up().await;
    let list = handover::ops::parked_list(&parked).await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(
        list[0].seq > poison_seq,
        "parked again as the replayed message"
    );
    // ... and discard removes it
    assert_eq!(
        handover::ops::parked_discard(&parked, list[0].seq)
            .await
            .unwrap(),
        1
    );
    assert!(handover::ops::parked_list(&parked)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_keep_answering_during_a_rebuild_and_the_swapped_tree_equals_a_fresh_replay() {
    let b = Backbone::start().await;
    let nhs = crate::support::nhs_numbers(943_000_000, 300);
    let first = events(&nhs, 0..10);
    for chunk in first.chunks(1000) {
        b.rt().log.publish(chunk).await.unwrap();
    }
    b.caught_up().await;

    // readers hammer the live tree throughout
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (http, base, stop, ok, bad) = (
            b.http.clone(),
            b.base.clone(),
            stop.clone(),
            ok.clone(),
            bad.clone(),
        );
        let who = nhs[7].clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .get(format!("{base}/v1/persons/{who}/journey"))
                    .bearer_auth(token(Role::DischargeTeam))
                    .header("handover-access-reason", "direct-care")
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    eprintln!("a read during the rebuild answered {status}: {body}");
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // events that arrive during the rebuild
    let more = events(&nhs, 10..12);
    let writer = {
        let log = b.rt().log.clone();
        tokio::spawn(async move {
            for chunk in more.chunks(50) {
                log.publish(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    handover::ops::rebuild_main(&b.base, &token(Role::Admin), "journey")
        .await
        .unwrap();
    let took = started.elapsed();
    writer.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    println!(
        "rebuild of {} events took {took:?}; {ok} reads answered during it",
        first.len()
    );
    assert_eq!(bad, 0, "every read during the rebuild answered 200");
    assert!(ok > 10, "reads kept flowing ({ok})");

    let status = b.rt().rebuilds.status();
    assert_eq!(status.state, RebuildState::Done);
    assert!(status.position >= first.len() as u64);
    let m = metrics(&b).await;
    assert!(
        m.contains(&format!(
            "handover_rebuild_position{{projection=\"journey\"}} {}",
            status.position
        )),
        "{m}"
    );
    // a non-admin may not rebuild
    let r = b
        .http
        .post(format!("{}/v1/admin/rebuild/journey", b.base))
        .bearer_auth(token(Role::DischargeTeam))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    b.caught_up().await;
    let total = b.rt().log.last_sequence().await.unwrap();
    assert_eq!(total, 12 * 300);
    assert_eq!(
        b.rt().store.tree("journey").unwrap().physical_name(),
        "journey@1"
    );
    let rebuilt = crate::support::snapshot(&b.rt().store);
    // one projector per stream: stop this one before the fresh replay takes the consumer
    let mut b = b;
    b.rt.take().unwrap().shutdown().await;

    let mut fresh_cfg = b.config();
    fresh_cfg.api.enabled = false;
    fresh_cfg.store.path = b.dir.path().join("fresh");
    let rt = Runtime::start(&fresh_cfg, None).await.unwrap();
    rt.projected(total, Duration::from_secs(60)).await.unwrap();
    rt.shutdown().await;
    let fresh = crate::support::snapshot(&crate::support::reopen(&fresh_cfg.store.path));
    assert_eq!(rebuilt.len(), fresh.len());
    for (k, v) in &fresh {
        assert_eq!(
            rebuilt.get(k),
            Some(v),
            "entry {} differs",
            String::from_utf8_lossy(k)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_written_by_another_version_rebuilds_itself_on_start() {
    let mut b = Backbone::start().await;
    let nhs = crate::support::nhs_numbers(943_000_000, 50);
    let evs = events(&nhs, 0..4);
    b.rt().log.publish(&evs).await.unwrap();
    b.caught_up().await;
    let path = b.config().store.path;
    b.rt.take().unwrap().shutdown().await;
    {
        let store = crate::support::reopen(&path);
        let tree = store.tree("journey").unwrap();
        assert_eq!(tree.version().unwrap(), Some(JOURNEY_VERSION));
        tree.set_version(JOURNEY_VERSION - 1).await.unwrap();
        store.flush().await.unwrap();
    }
    let before = Instant::now();
    b.start_runtime().await;
    let mut status = b.rt().rebuilds.subscribe();
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| s.state == RebuildState::Done),
    )
    .await
    .unwrap()
    .unwrap();
    println!("start-up rebuild took {:?}", before.elapsed());
    let s = b.rt().rebuilds.status();
    assert_eq!(
        s.reason.as_deref(),
        Some(format!("version {} -> {JOURNEY_VERSION}", JOURNEY_VERSION - 1).as_str())
    );
    let tree = b.rt().store.tree("journey").unwrap();
    assert_eq!(tree.version().unwrap(), Some(JOURNEY_VERSION));
    assert_eq!(tree.physical_name(), "journey@1");
    b.caught_up().await;
    assert_eq!(b.journey(&nhs[3]).await.status(), 200);
}

/// An erasure purges a person's events from the log and then removes their read-model
/// entries. A rebuild replaying the log at the same time could take their events into its
/// shadow before the purge and swap them back in, so the two never overlap: a rebuild
/// requested during an erasure waits for it, and an erasure during a rebuild is refused
/// with 409 (problem+json) until the rebuild has finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_and_a_rebuild_never_overlap() {
    let b = Backbone::start().await;
    let nhs = crate::support::nhs_numbers(944_000_000, 300);
    for chunk in events(&nhs, 0..20).chunks(1000) {
        b.rt().log.publish(chunk).await.unwrap();
    }
    b.caught_up().await;
    let rebuilds = &b.rt().rebuilds;

    // A rebuild requested while an erasure runs waits for it.
    let erasing = rebuilds.hold_for_erasure().unwrap();
    let r = b
        .http
        .post(format!("{}/v1/admin/rebuild/journey", b.base))
        .bearer_auth(token(Role::Admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = rebuilds.status();
    assert_eq!(waiting.state, RebuildState::Running);
    assert_eq!(
        waiting.shadow, None,
        "the rebuild started during an erasure"
    );
    assert_eq!(waiting.position, 0);
    drop(erasing);

    // While it runs, erasures are refused.
    let erase = |who: String| {
        let (http, base) = (b.http.clone(), b.base.clone());
        async move {
            http.post(format!("{base}/v1/admin/persons/{who}/erasure"))
                .bearer_auth(token(Role::Admin))
                .json(&json!({"reason": "entered in error (test)"}))
                .send()
                .await
                .unwrap()
        }
    };
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = rebuilds.status();
        if before.state != RebuildState::Running {
            break;
        }
        assert!(Instant::now() < deadline, "the rebuild did not finish");
        if before.shadow.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let r = erase(nhs[refused % nhs.len()].clone()).await;
        let after = rebuilds.status();
        if after.state == RebuildState::Running {
            // the rebuild ran throughout the request
            assert_eq!(r.status(), 409, "an erasure ran during a rebuild");
            assert_eq!(
                r.headers()["content-type"].to_str().unwrap(),
                "application/problem+json"
            );
            let p: serde_json::Value = r.json().await.unwrap();
            assert!(p["type"].as_str().unwrap().ends_with("/conflict"), "{p}");
            assert!(p["detail"].as_str().unwrap().contains("rebuild"), "{p}");
            refused += 1;
        }
    }
    assert_eq!(rebuilds.status().state, RebuildState::Done);
    assert!(refused > 0, "no erasure was tried while the rebuild ran");
    println!("{refused} erasures refused during the rebuild");

    // Once it has finished, the erasure goes ahead.
    let r = erase(nhs[0].clone()).await;
    assert_eq!(r.status(), 200);
}
