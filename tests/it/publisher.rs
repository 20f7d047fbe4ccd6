//! Publisher resilience: while nats-server is away, `EventLog::publish` waits for it to come
//! back (at most `nats.publish_wait_ms`), at most `nats.max_pending` calls wait at once and
//! one more is refused at once (back-pressure), and nothing is acknowledged that is not
//! stored — nor stored after its caller was told it failed.
//!
//! Each test kills a real nats-server with SIGKILL and restarts it on the same port and store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handover_events::{Event, SinkError, Stored};
use handover_nats::{EventLog, LogConfig};
use handover_testkit::NatsServer;
use serde_json::{json, Value};

use crate::faults::{key_of, read_back, SOURCE};
use crate::support::{ev, Backbone};

/// `n` admissions of distinct people, ids `tag-0` …
fn admissions(tag: &str, n: usize) -> Vec<Value> {
    crate::support::nhs_numbers(981_000_000, n)
        .iter()
        .enumerate()
        .map(|(i, nhs)| {
            ev(
                &format!("{tag}-{i}"),
                SOURCE,
                "discharge.admitted",
                nhs,
                "2026-11-20T09:14:00Z",
                json!({"encounter_id": format!("{tag}-E{i}"), "site": "RX1CC", "admitted_at": "2026-11-20T09:14:00Z"}),
            )
        })
        .collect()
}

fn events(values: &[Value]) -> Vec<Event> {
    values
        .iter()
        .map(|v| Event::from_json(v.clone()).unwrap())
        .collect()
}

async fn start(max_pending: usize, publish_wait: Duration) -> (NatsServer, EventLog) {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let cfg = LogConfig {
        max_pending,
        publish_wait,
        ..LogConfig::default()
    };
    let log = EventLog::connect(&nats.url(), cfg, crate::support::pseudonym_key())
        .await
        .unwrap();
    (nats, log)
}

async fn kill(nats: NatsServer) -> NatsServer {
    tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.kill();
        nats
    })
    .await
    .unwrap()
}

async fn restart(nats: NatsServer) -> NatsServer {
    tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.restart();
        nats
    })
    .await
    .unwrap()
}

/// Waits (with a deadline) until `f` holds.
async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Publishes = Vec<tokio::task::JoinHandle<(Instant, Result<Vec<Stored>, SinkError>)>>;

/// Starts one publish call per chunk, each in its own task; each reports when it finished.
fn publish_each(log: &EventLog, chunks: Vec<Vec<Event>>) -> Publishes {
    chunks
        .into_iter()
        .map(|chunk| {
            let log = log.clone();
            tokio::spawn(async move {
                let r = log.publish(&chunk).await;
                (Instant::now(), r)
            })
        })
        .collect()
}

/// Samples the waiting gauge until `stop` is set; returns the highest value seen.
fn sample_waiting(log: &EventLog, stop: Arc<AtomicU64>) -> tokio::task::JoinHandle<u64> {
    let log = log.clone();
    tokio::spawn(async move {
        let mut max = 0;
        while stop.load(Ordering::SeqCst) == 0 {
            max = max.max(log.publish_waiting());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        max
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_made_during_a_short_outage_wait_and_are_stored_once_when_nats_is_back() {
    let (nats, log) = start(1024, Duration::from_secs(20)).await;
    let warm = events(&admissions("warm", 1));
    log.publish(&warm).await.unwrap();

    let nats = kill(nats).await;
    until("the client to notice", Duration::from_secs(5), || {
        !log.is_connected()
    })
    .await;
    let sent = admissions("short", 100);
    let chunks: Vec<Vec<Event>> = events(&sent).chunks(2).map(<[Event]>::to_vec).collect();
    let calls = chunks.len();
    let publishes = publish_each(&log, chunks);
    // every call waits for the server instead of failing
    until("every publish to wait", Duration::from_secs(5), || {
        log.publish_waiting() == calls as u64
    })
    .await;
    assert!(publishes.iter().all(|p| !p.is_finished()));
    let metrics = log.render_metrics();
    assert!(
        metrics.contains(&format!("handover_publish_waiting {calls}\n")),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        publishes.iter().all(|p| !p.is_finished()),
        "nothing is answered while the server is down"
    );

    let down_at = Instant::now();
    let nats = restart(nats).await;
    let healthy = Instant::now();
    let mut sequences = Vec::new();
    let mut last_ack = healthy;
    for p in publishes {
        let (at, r) = p.await.unwrap();
        let stored = r.expect("a publish made during a short outage is acknowledged");
        sequences.extend(stored.iter().map(|s| s.sequence));
        assert!(stored.iter().all(|s| !s.duplicate));
        last_ack = last_ack.max(at);
    }
    eprintln!(
        "short outage: {calls} publishes waited; restart took {} ms; all acknowledged {} ms after the server was healthy",
        (healthy - down_at).as_millis(),
        (last_ack - healthy).as_millis()
    );
    assert_eq!(log.publish_waiting(), 0);
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(sequences.len(), sent.len(), "one sequence per event");

    // each event in the stream exactly once, and nothing else
    let stored = read_back(&log, "short-outage-readback").await;
    assert_eq!(stored.len(), sent.len() + 1);
    for v in &sent {
        assert_eq!(stored.get(&key_of(v)), Some(&1), "{:?}", key_of(v));
    }
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_fail_as_unavailable_after_the_wait_and_are_never_stored_later() {
    let wait = Duration::from_millis(1500);
    let (nats, log) = start(1024, wait).await;
    log.publish(&events(&admissions("warm", 1))).await.unwrap();

    let nats = kill(nats).await;
    until("the client to notice", Duration::from_secs(5), || {
        !log.is_connected()
    })
    .await;
    let refused = admissions("long", 20);
    let started = Instant::now();
    let publishes = publish_each(
        &log,
        events(&refused).into_iter().map(|e| vec![e]).collect(),
    );
    for p in publishes {
        let (at, r) = p.await.unwrap();
        match r {
            Err(SinkError::Unavailable(why)) => {
                assert!(why.contains("did not come back within 1500 ms"), "{why}")
            }
            other => panic!("expected unavailable after the wait, got {other:?}"),
        }
        let took = at - started;
        assert!(
            took >= wait && took < wait + Duration::from_secs(3),
            "failed after {took:?}, not after the configured wait"
        );
    }
    assert_eq!(log.publish_waiting(), 0);
    assert!(log
        .render_metrics()
        .contains("handover_publish_wait_timeouts_total 20\n"));

    // the server comes back: none of the refused publishes turns up in the stream
    let nats = restart(nats).await;
    let after = events(&admissions("after", 1));
    let stored = log.publish(&after).await.unwrap();
    assert_eq!(
        stored[0].sequence, 2,
        "nothing was stored between the warm-up event and this one"
    );
    let all = read_back(&log, "long-outage-readback").await;
    assert_eq!(all.len(), 2);
    assert!(refused.iter().all(|v| !all.contains_key(&key_of(v))));
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_pending_publishes_are_refused_at_once_and_the_waiting_stay_bounded() {
    let capacity = 8;
    let (nats, log) = start(capacity, Duration::from_secs(20)).await;
    log.publish(&events(&admissions("warm", 1))).await.unwrap();

    let nats = kill(nats).await;
    until("the client to notice", Duration::from_secs(5), || {
        !log.is_connected()
    })
    .await;
    let stop = Arc::new(AtomicU64::new(0));
    let sampler = sample_waiting(&log, stop.clone());
    let sent = admissions("burst", 30);
    let started = Instant::now();
    let publishes = publish_each(&log, events(&sent).into_iter().map(|e| vec![e]).collect());
    until("the burst to be sorted", Duration::from_secs(5), || {
        publishes.iter().filter(|p| p.is_finished()).count() == sent.len() - capacity
    })
    .await;
    let sorted_in = started.elapsed();
    until("the rest to wait", Duration::from_secs(5), || {
        log.publish_waiting() == capacity as u64
    })
    .await;
    let metrics = log.render_metrics();
    assert!(
        metrics.contains(&format!("handover_publish_waiting {capacity}\n"))
            && metrics.contains(&format!("handover_publish_in_flight {capacity}\n"))
            && metrics.contains(&format!(
                "handover_publish_refused_total {}\n",
                sent.len() - capacity
            )),
        "{metrics}"
    );

    let nats = restart(nats).await;
    let (mut ok, mut refused) = (Vec::new(), 0);
    for (p, v) in publishes.into_iter().zip(&sent) {
        let (at, r) = p.await.unwrap();
        match r {
            Ok(_) => ok.push(key_of(v)),
            Err(SinkError::Unavailable(why)) => {
                assert!(why.contains("nats.max_pending"), "{why}");
                assert!(
                    at - started < Duration::from_secs(2),
                    "back-pressure is immediate"
                );
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    stop.store(1, Ordering::SeqCst);
    let max_waiting = sampler.await.unwrap();
    eprintln!(
        "back-pressure: {} publishes during the outage, {refused} refused within {} ms, {} waited and were stored; most waiting at once: {max_waiting}",
        sent.len(),
        sorted_in.as_millis(),
        ok.len()
    );
    assert_eq!((ok.len(), refused), (capacity, sent.len() - capacity));
    assert!(max_waiting <= capacity as u64);

    let stored = read_back(&log, "burst-readback").await;
    let expected: BTreeMap<_, _> = ok.iter().map(|k| (k.clone(), 1)).collect();
    let burst: BTreeMap<_, _> = stored
        .into_iter()
        .filter(|((_, id), _)| id.starts_with("burst-"))
        .collect();
    assert_eq!(
        burst, expected,
        "exactly the acknowledged publishes are stored, once"
    );
    drop(nats);
}

async fn get(http: &reqwest::Client, url: String) -> reqwest::Response {
    http.get(url).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_answers_503_with_retry_after_under_back_pressure_and_202_once_nats_is_back() {
    let capacity = 4;
    let mut b = Backbone::start().await;
    b.rt.take().unwrap().shutdown().await;
    let mut cfg = b.config();
    cfg.nats.max_pending = capacity;
    cfg.nats.publish_wait_ms = 20_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    b.rt = Some(
        handover::runtime::Runtime::start(&cfg, Some(listener))
            .await
            .unwrap(),
    );
    b.base = format!("http://{}", b.rt().api_addr.unwrap());
    let sent = admissions("http", 10);
    assert_eq!(b.post_events(&sent[0]).await.status(), 202);
    b.caught_up().await;
    assert_eq!(
        get(&b.http, format!("{}/readyz", b.base)).await.status(),
        200
    );

    tokio::task::block_in_place(|| b.nats.kill());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&b.http, format!("{}/readyz", b.base)).await;
        if r.status() == 503 {
            let why = r.text().await.unwrap();
            assert!(why.contains("not connected to NATS"), "{why}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz stayed 200 without NATS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let posts: Vec<_> = sent[1..]
        .iter()
        .map(|v| {
            let (http, base, v) = (b.http.clone(), b.base.clone(), v.clone());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(crate::support::token(handover_api::Role::Admin))
                    .header("content-type", "application/cloudevents+json")
                    .body(v.to_string())
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|h| h.to_str().unwrap().to_string());
                let ct = r
                    .headers()
                    .get("content-type")
                    .map(|h| h.to_str().unwrap().to_string());
                (Instant::now(), status, retry_after, ct, key_of(&v))
            })
        })
        .collect();
    let refused_n = posts.len() - capacity;
    until("the excess to be refused", Duration::from_secs(5), || {
        posts.iter().filter(|p| p.is_finished()).count() == refused_n
    })
    .await;
    until("the rest to wait", Duration::from_secs(5), || {
        b.rt().log.publish_waiting() == capacity as u64
    })
    .await;
    let metrics = get(&b.http, format!("{}/metrics", b.base))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("handover_publish_waiting {capacity}\n")),
        "/metrics shows the waiting publishes"
    );

    // Taken before the restart: the client may reconnect before the restart call returns.
    let restarting = Instant::now();
    tokio::task::block_in_place(|| b.nats.restart());
    let mut accepted = Vec::new();
    for p in posts {
        let (at, status, retry_after, ct, k) = p.await.unwrap();
        match status {
            202 => {
                assert!(at >= restarting, "a 202 only once NATS is back");
                accepted.push(k);
            }
            503 => {
                assert!(at - started < Duration::from_secs(2), "refused at once");
                assert_eq!(retry_after.as_deref(), Some("5"));
                assert_eq!(ct.as_deref(), Some("application/problem+json"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted.len(), capacity);
    let stored = read_back(&b.rt().log, "http-readback").await;
    let http_ids: Vec<_> = stored
        .iter()
        .filter(|((_, id), n)| id.starts_with("http-") && **n == 1)
        .map(|(k, _)| k.clone())
        .collect();
    accepted.push(key_of(&sent[0]));
    accepted.sort();
    assert_eq!(http_ids, accepted, "exactly the 202s are stored, once each");
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&b.http, format!("{}/readyz", b.base)).await.status() != 200 {
        assert!(Instant::now() < deadline, "/readyz did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
