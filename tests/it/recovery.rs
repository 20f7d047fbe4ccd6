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

/// A backbone whose own runtime is stopped: the test drives projectors itself.
async fn without_runtime() -> Backbone {
    let mut b = Backbone::start().await;
    b.rt.take().unwrap().shutdown().await;
    b
}

/// A runtime that only publishes (no API, no projection), on a store of its own.
async fn publisher(b: &Backbone) -> Runtime {
    let mut cfg = b.config();
    cfg.api.enabled = false;
    cfg.projections.enabled = false;
    cfg.store.path = b.dir.path().join("publisher");
    Runtime::start(&cfg, None).await.unwrap()
}

/// Publishes `events` through the real log, `chunk` at a time.
async fn publish_all(b: &Backbone, events: &[Event], chunk: usize) {
    let publisher = publisher(b).await;
    let before = publisher.log.last_sequence().await.unwrap();
    for chunk in events.chunks(chunk) {
        publisher.log.publish(chunk).await.unwrap();
    }
    let after = publisher.log.last_sequence().await.unwrap();
    assert_eq!(after - before, events.len() as u64, "every event stored");
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_stream_resumes_without_loss_or_double_counting() {
    let b = without_runtime().await;
    let events = load(200, 40);
    let total = events.len() as u64;
    // The stream arrives in four parts, the next after each kill: a projector that caught
    // up on everything published before it was killed (a fast machine, or a test thread
    // scheduled late) still leaves events for the next one to resume on.
    let mut parts = events.chunks(events.len().div_ceil(4));
    publish_all(&b, parts.next().unwrap(), 1000).await;

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
        if let Some(part) = parts.next() {
            publish_all(&b, part, 1000).await;
        }
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

    let by_prefix = |m: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>| {
        let mut c = std::collections::BTreeMap::<String, usize>::new();
        for k in m.keys() {
            let p = k.iter().position(|b| *b == b'/').map_or(k.len(), |i| i + 1);
            *c.entry(String::from_utf8_lossy(&k[..p]).to_string())
                .or_default() += 1;
        }
        c
    };
    assert_eq!(
        resumed.len(),
        fresh.len(),
        "entries by prefix, resumed {:?}, fresh {:?}",
        by_prefix(&resumed),
        by_prefix(&fresh)
    );
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

/// Size of the real-process kill test: `(events, kills)`. The issue's full size, 50,000
/// events and 10 kills, unless `HANDOVER_KILL_EVENTS` / `HANDOVER_KILL_ROUNDS` say otherwise.
fn kill_test_size() -> (usize, usize) {
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        var("HANDOVER_KILL_EVENTS", 50_000),
        var("HANDOVER_KILL_ROUNDS", 10),
    )
}

/// What one kill found.
#[derive(Debug)]
struct Kill {
    after: Duration,
    /// The position the killed process had committed.
    position: u64,
    /// The stream's last sequence at the kill.
    stream_last: u64,
    load_in_flight: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_process_sigkilled_at_random_points_under_load_ends_equal_to_a_clean_rebuild()
{
    use rand::{Rng, SeedableRng};

    use crate::process::{all_trees, serve_command, store_differences, write_config, Handover};

    let started = std::time::Instant::now();
    let (total, kills) = kill_test_size();
    let seed = std::env::var("HANDOVER_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!(
        "kill test: {total} events, {kills} SIGKILLs, seed {seed} (HANDOVER_KILL_SEED={seed} replays these delays)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Built before the clock starts for the load.
    tokio::task::block_in_place(crate::process::handover_bin);

    let nats = tokio::task::spawn_blocking(handover_testkit::NatsServer::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = crate::support::pseudonym_key();
    // The load goes through the real log from this process; the projector is the child.
    let log = handover_nats::EventLog::connect(&nats.url(), Default::default(), key)
        .await
        .unwrap();
    let people = crate::support::nhs_numbers(970_000_000, (total / 25).max(1));
    let events: Vec<Event> = crate::faults::workload("kill", &people, total)
        .into_iter()
        .map(|v| Event::from_json(v).unwrap())
        .collect();

    // The kill delays, drawn first so the load can be paced over them.
    let delays: Vec<Duration> = (0..kills)
        .map(|_| Duration::from_millis(rng.gen_range(200..2500)))
        .collect();
    // Half the load is a backlog before the first start; the other half is published in
    // chunks of 100 paced over the kill delays, so it is in flight while the kills happen.
    let (backlog, paced) = events.split_at(total / 2);
    for chunk in backlog.chunks(500) {
        log.publish(chunk).await.unwrap();
    }
    // Each round also spends a few hundred ms starting the process and reading its store.
    let load_for: Duration =
        delays.iter().sum::<Duration>() + Duration::from_millis(500) * kills as u32;
    let paced = paced.to_vec();
    let publisher = {
        let log = log.clone();
        tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            let chunks: Vec<&[Event]> = paced.chunks(100).collect();
            let n = chunks.len().max(1) as u32;
            for (i, chunk) in chunks.into_iter().enumerate() {
                tokio::time::sleep_until(t0 + load_for * i as u32 / n).await;
                log.publish(chunk).await.unwrap();
            }
            t0.elapsed()
        })
    };

    let store = dir.path().join("killed");
    let config = write_config(dir.path(), "killed", &nats.url(), &store, "");
    let http = reqwest::Client::new();
    let mut history: Vec<Kill> = Vec::new();
    for (round, after) in delays.into_iter().enumerate() {
        let log_path = dir.path().join(format!("killed-{round}.log"));
        let mut child =
            tokio::task::block_in_place(|| Handover::spawn(serve_command(&config), &log_path));
        tokio::time::sleep(after).await;
        let load_in_flight = !publisher.is_finished();
        assert!(
            child.is_running(),
            "handover died by itself:\n{}",
            child.log()
        );
        tokio::task::block_in_place(|| child.kill());
        let stream_last = log.last_sequence().await.unwrap();
        let position = crate::support::reopen(&store)
            .tree("journey")
            .unwrap()
            .position()
            .unwrap();
        if let Some(previous) = history.last() {
            assert!(position >= previous.position, "the position went back");
        }
        history.push(Kill {
            after,
            position,
            stream_last,
            load_in_flight,
        });
    }
    let load_took = publisher.await.unwrap();
    let last = log.last_sequence().await.unwrap();
    assert_eq!(last, total as u64, "the whole load is in the stream");
    for (i, k) in history.iter().enumerate() {
        eprintln!(
            "  kill {}: after {} ms, committed position {} of {} in the stream{}",
            i + 1,
            k.after.as_millis(),
            k.position,
            k.stream_last,
            if k.load_in_flight {
                ", load in flight"
            } else {
                ""
            }
        );
    }
    let mid_stream = history
        .iter()
        .filter(|k| k.position < k.stream_last)
        .count();
    let under_load = history.iter().filter(|k| k.load_in_flight).count();
    assert!(
        mid_stream >= 1,
        "no kill hit the projector while it had events to apply"
    );
    assert!(
        under_load * 2 >= kills,
        "most kills happened with the load in flight ({under_load} of {kills})"
    );

    // Restarted once more: it catches up and stops cleanly.
    let t = std::time::Instant::now();
    let mut child = tokio::task::block_in_place(|| {
        Handover::spawn(serve_command(&config), &dir.path().join("killed-final.log"))
    });
    child.projected(&http, last, Duration::from_secs(600)).await;
    tokio::task::block_in_place(|| child.stop());
    let catch_up = t.elapsed();

    // A clean rebuild: a fresh process on an empty store, the same stream.
    let t = std::time::Instant::now();
    let clean_store = dir.path().join("clean");
    let clean_config = write_config(dir.path(), "clean", &nats.url(), &clean_store, "");
    let mut clean = tokio::task::block_in_place(|| {
        Handover::spawn(serve_command(&clean_config), &dir.path().join("clean.log"))
    });
    clean.projected(&http, last, Duration::from_secs(600)).await;
    tokio::task::block_in_place(|| clean.stop());
    let rebuild = t.elapsed();

    let killed = all_trees(&crate::support::reopen(&store));
    let fresh = all_trees(&crate::support::reopen(&clean_store));
    let differences = store_differences(&killed, &fresh);
    assert!(
        differences.is_empty(),
        "the killed store differs from a clean rebuild ({} entries):\n{}",
        differences.len(),
        differences[..differences.len().min(20)].join("\n")
    );
    let journeys = &fresh["journey"];
    assert_eq!(
        journeys.keys().filter(|k| k.starts_with(b"p/")).count(),
        people.len(),
        "one journey per person"
    );
    assert_eq!(
        crate::support::reopen(&store)
            .tree("journey")
            .unwrap()
            .position()
            .unwrap(),
        last
    );

    // The comparison would notice a lost or a changed entry.
    let mut broken = killed.clone();
    let tree = broken.get_mut("journey").unwrap();
    let lost = tree.keys().find(|k| k.starts_with(b"p/")).unwrap().clone();
    tree.remove(&lost);
    let changed = tree.keys().rfind(|k| k.starts_with(b"p/")).unwrap().clone();
    if let Some(b) = tree.get_mut(&changed).unwrap().last_mut() {
        *b ^= 1;
    }
    assert_eq!(store_differences(&broken, &fresh).len(), 2);

    eprintln!(
        "kill test: {total} events published over {} ms; {kills} kills ({mid_stream} behind the stream, {under_load} with the load in flight); \
         final catch-up and clean stop {} ms; clean rebuild of {last} events {} ms; {} trees, {} entries equal byte for byte; whole test {} ms",
        load_took.as_millis(),
        catch_up.as_millis(),
        rebuild.as_millis(),
        fresh.len(),
        fresh.values().map(|t| t.len()).sum::<usize>(),
        started.elapsed().as_millis()
    );
}

/// A pull request on the projection's consumer that the projector did not make (the last
/// request of a killed projector's connection, reaching the server after its successor
/// recreated the consumer; or a second projector on the same consumer) takes deliveries
/// away from it. The projector must notice the gap in its deliveries and reopen its feed
/// rather than move its position past events it never saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_taken_by_another_pull_request_are_not_skipped() {
    let b = without_runtime().await;
    let events = load(100, 30);
    let total = events.len() as u64;

    // the projector starts on an empty stream: its pull request waits on the consumer
    let mut cfg = b.config();
    cfg.api.enabled = false;
    let projector = Runtime::start(&cfg, None).await.unwrap();
    let mut progress = projector.journey_progress.clone();
    tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|p| p.open))
        .await
        .unwrap()
        .unwrap();

    // a pull request from another connection, whose deliveries nobody applies
    let ghost = async_nats::connect(b.nats.url()).await.unwrap();
    let mut inbox = ghost.subscribe("ghost.inbox").await.unwrap();
    let taken = tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut inbox)).await
        {
            n += 1;
        }
        n
    });
    // wait until the server holds the projector's request, then queue the ghost's
    let id = projector.store.instance_id().await.unwrap();
    let pull = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
        cfg.nats.stream,
        handover_projections::runner::consumer_name(&id)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    ghost
        .publish_with_reply(pull.clone(), "ghost.inbox", r#"{"batch":300}"#.into())
        .await
        .unwrap();
    ghost.flush().await.unwrap();

    publish_all(&b, &events, 100).await;

    projector
        .projected(total, Duration::from_secs(60))
        .await
        .unwrap();
    let taken = taken.await.unwrap();
    assert!(taken > 0, "the other pull request was answered");
    let complete = |what: &str, total: u64| {
        let tree = projector.store.tree("journey").unwrap();
        let mut seqs = handover_projections::Journeys::stored_event_seqs(&tree).unwrap();
        seqs.sort_unstable();
        let missing: Vec<u64> = (1..=total)
            .filter(|s| seqs.binary_search(s).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "{what}: {} of {total} events missing from the read model, first {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        assert_eq!(seqs.len() as u64, total, "{what}: every event once");
    };
    complete(
        &format!("live projection (the other request took {taken})"),
        total,
    );

    // The other request takes the last event published: no later delivery shows the gap,
    // so the idle projector has to ask the server.
    let mut inbox = ghost.subscribe("ghost.tail").await.unwrap();
    let mut total = total;
    let publisher = publisher(&b).await;
    let mut round = 0;
    loop {
        round += 1;
        assert!(round <= 20, "the other request never took the last event");
        ghost
            .publish_with_reply(pull.clone(), "ghost.tail", r#"{"batch":1}"#.into())
            .await
            .unwrap();
        ghost.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let extra = crate::support::ev(
            &format!("tail-{round}"),
            "urn:ods:RX1:pas",
            "discharge.transferred",
            &crate::support::nhs_numbers(999_000_000, 1)[0],
            "2026-11-20T10:00:00Z",
            json!({"encounter_id": "E0", "ward": format!("T{round}")}),
        );
        publisher
            .log
            .publish(&[Event::from_json(extra).unwrap()])
            .await
            .unwrap();
        total += 1;
        let took = tokio::time::timeout(
            Duration::from_millis(500),
            futures::StreamExt::next(&mut inbox),
        )
        .await;
        if let Ok(Some(_)) = took {
            break;
        }
        projector
            .projected(total, Duration::from_secs(10))
            .await
            .unwrap();
    }
    publisher.shutdown().await;
    projector
        .projected(total, Duration::from_secs(20))
        .await
        .expect("the projector noticed that the last event went elsewhere");
    complete(&format!("after {round} tail events"), total);

    // The same for a rebuild's consumer: pull requests keep arriving while it rebuilds,
    // until one of them has taken deliveries from it.
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut inbox = ghost.subscribe("ghost.rebuild").await.unwrap();
    let counter = taken.clone();
    let count = tokio::spawn(async move {
        while futures::StreamExt::next(&mut inbox).await.is_some() {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let pull = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
        cfg.nats.stream,
        handover_projections::rebuild::rebuild_consumer_name(&id)
    );
    let mut rounds = 0;
    while taken.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        rounds += 1;
        assert!(
            rounds <= 10,
            "no pull request reached the rebuild's consumer"
        );
        let mut status = projector.rebuilds.subscribe();
        let before = status.borrow().completed;
        projector.rebuilds.request("journey", "test").unwrap();
        let (ghost, pull) = (ghost.clone(), pull.clone());
        let spam = tokio::spawn(async move {
            loop {
                let _ = ghost
                    .publish_with_reply(pull.clone(), "ghost.rebuild", r#"{"batch":50}"#.into())
                    .await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let s = tokio::time::timeout(
            Duration::from_secs(60),
            status.wait_for(|s| {
                s.completed > before || s.state == handover_projections::RebuildState::Failed
            }),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        spam.abort();
        assert!(s.completed > before, "rebuild failed: {:?}", s.error);
        complete(&format!("rebuild round {rounds}"), total);
    }
    count.abort();
    projector.shutdown().await;
}

/// Two servers projecting one stream, each into its own store (two `serve` instances for
/// more read capacity), each end with every event: each store has its own consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_projecting_one_stream_each_get_every_event() {
    let b = without_runtime().await;
    let events = load(100, 30);
    let total = events.len() as u64;
    let mut projectors = Vec::new();
    for store in ["a", "b"] {
        let mut cfg = b.config();
        cfg.api.enabled = false;
        cfg.store.path = b.dir.path().join(store);
        projectors.push(Runtime::start(&cfg, None).await.unwrap());
    }
    let ids = [
        projectors[0].store.instance_id().await.unwrap(),
        projectors[1].store.instance_id().await.unwrap(),
    ];
    assert_ne!(
        ids[0], ids[1],
        "each store has its own id, so its own consumer"
    );

    // published while both project, in small chunks
    publish_all(&b, &events, 50).await;

    for (p, id) in projectors.iter().zip(&ids) {
        p.projected(total, Duration::from_secs(60)).await.unwrap();
        let tree = p.store.tree("journey").unwrap();
        let mut seqs = handover_projections::Journeys::stored_event_seqs(&tree).unwrap();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<u64>>(),
            "store {id}: every event once"
        );
    }
    // each through its own consumer, which delivered every event once, to it alone
    let js = async_nats::jetstream::new(async_nats::connect(b.nats.url()).await.unwrap());
    let stream = js.get_stream(&b.config().nats.stream).await.unwrap();
    for id in &ids {
        let name = handover_projections::runner::consumer_name(id);
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&name).await.unwrap();
        // (an acknowledgement is sent without waiting for the server: allow it a moment)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let info = loop {
            let info = c.info().await.unwrap().clone();
            if info.ack_floor.stream_sequence == total || tokio::time::Instant::now() > deadline {
                break info;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(info.delivered.consumer_sequence, total, "{name} delivered");
        assert_eq!(info.ack_floor.stream_sequence, total, "{name} acknowledged");
    }
    for p in projectors {
        p.shutdown().await;
    }
}

/// A feed's batch takes every delivery that has already arrived. Under tokio's cooperative
/// budget a task's 128th receive in one poll reports "not ready" however many messages
/// wait: batches were cut at about 126 deliveries, and the projector committed, flushed and
/// acknowledged ten times as often as its batch size allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_batch_takes_every_delivery_already_received() {
    let b = without_runtime().await;
    let events = load(50, 20);
    let total = events.len();
    publish_all(&b, &events, 500).await;
    let rt = publisher(&b).await;
    let mut feed = rt.log.feed("batch-size", None, 0).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), feed.next_batch(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.deliveries.len(), 1);
    // The consumer's pull requests ask for 2,000 at a time: the rest arrive meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rest = feed.next_batch(4000).await.unwrap();
    assert_eq!(
        rest.deliveries.len(),
        total - 1,
        "one batch holds every delivery already received"
    );
    let seqs: Vec<u64> = rest.deliveries.iter().map(|d| d.sequence).collect();
    assert_eq!(seqs, (2..=total as u64).collect::<Vec<_>>());
    rest.ack().await.unwrap();
    rt.shutdown().await;
}
