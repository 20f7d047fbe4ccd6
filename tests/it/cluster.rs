//! A three-node JetStream cluster with the stream at three replicas: the stream leader is
//! SIGKILLed in the middle of a continuous HTTP ingest, and nothing acknowledged is lost;
//! the node comes back, rejoins and catches up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use handover::runtime::Runtime;
use handover_testkit::{wait_until, NatsCluster};
use serde_json::Value;

use crate::faults::{assert_stored_and_projected_once, projected_all, requests, workload, Load};

/// A plain HTTP/1.0 GET on a loopback port: the body when the status is 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(250)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

/// What one node's `/jsz?streams=true` says about `stream`: (cluster leader, last sequence,
/// message count).
fn stream_on_node(monitor_port: u16, stream: &str) -> Option<(Option<String>, u64, u64)> {
    let body = http_get(monitor_port, "/jsz?streams=true")?;
    let jsz: Value = serde_json::from_str(&body).ok()?;
    let detail = jsz["account_details"]
        .as_array()?
        .iter()
        .filter_map(|a| a["stream_detail"].as_array())
        .flatten()
        .find(|s| s["name"] == stream)?;
    let leader = detail["cluster"]["leader"]
        .as_str()
        .filter(|l| !l.is_empty())
        .map(str::to_string);
    Some((
        leader,
        detail["state"]["last_seq"].as_u64()?,
        detail["state"]["messages"].as_u64()?,
    ))
}

/// The stream leader (node index) as reported by any running node.
fn stream_leader(cluster: &mut NatsCluster, stream: &str) -> Option<usize> {
    let running: Vec<usize> = (0..cluster.len())
        .filter(|&i| cluster.is_running(i))
        .collect();
    running
        .into_iter()
        .find_map(|i| stream_on_node(cluster.monitor_port(i), stream).and_then(|s| s.0))
        .and_then(|name| name.strip_prefix('n')?.parse::<usize>().ok())
        .map(|n| n - 1)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_mid_ingest_loses_no_acknowledged_event_and_rejoins() {
    let started = Instant::now();
    let mut cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Create the stream (R3) first to learn its leader, then connect the backbone to the
    // leader's node, so the kill takes out both the stream leader and the node the client
    // is connected to: the client must fail over to a node it learnt from the cluster.
    // (async-nats 0.51 does not take a comma-separated list in one string: its `str`
    // parses a single URL; see docs/reliability.md.)
    let mut cfg = crate::support::config(&cluster.urls()[0], &store);
    cfg.nats.replicas = 3;
    let mut setup_cfg = cfg.clone();
    setup_cfg.api.enabled = false;
    setup_cfg.projections.enabled = false;
    let setup = Runtime::start(&setup_cfg, None).await.unwrap();
    let stream = setup.log.stream_name().to_string();
    setup.shutdown().await;
    let mut leader = None;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(20), "the stream's first leader", || {
            leader = stream_leader(&mut cluster, &stream);
            leader.is_some()
        })
    });
    let leader = leader.unwrap();
    cfg.nats.url = Some(cluster.urls()[leader].clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rt = Runtime::start(&cfg, Some(listener)).await.unwrap();
    let base = format!("http://{}", rt.api_addr.unwrap());
    let http = reqwest::Client::new();

    let people = crate::support::nhs_numbers(990_300_000, 30);
    let events = workload("cl", &people, 600);
    let load = Load::start(http.clone(), base.clone(), requests(events.clone()));

    load.wait_acked(150, Duration::from_secs(30)).await;
    assert_eq!(
        tokio::task::block_in_place(|| stream_leader(&mut cluster, &stream)),
        Some(leader),
        "the stream leader is the node the backbone is connected to"
    );
    tokio::task::block_in_place(|| cluster.kill(leader));
    let killed = Instant::now();
    let acked_at_kill = load.acked.load(std::sync::atomic::Ordering::SeqCst);

    // a new leader among the survivors
    let mut new_leader = None;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(20), "a new stream leader", || {
            new_leader = stream_leader(&mut cluster, &stream).filter(|&l| l != leader);
            new_leader.is_some()
        })
    });
    let elected = Instant::now();

    // keep ingesting on two nodes for a while, then bring the old leader back
    load.wait_acked(acked_at_kill + 150, Duration::from_secs(30))
        .await;
    let restart_at = Instant::now();
    tokio::task::block_in_place(|| cluster.restart(leader));
    let restarted = Instant::now();

    let report = load.finish(Duration::from_secs(40)).await;
    for o in &report.outcomes {
        assert!(
            matches!(o.status, 202 | 503),
            "only 202 or 503 during a failover, got {}",
            o.status
        );
        if o.status == 503 {
            assert!(o.problem, "a 503 is application/problem+json");
        }
    }
    let first_202_after_kill = report
        .outcomes
        .iter()
        .filter(|o| o.status == 202 && o.sent >= killed)
        .map(|o| o.received)
        .min()
        .expect("acknowledged after the kill");
    let latency_503 = report
        .latency(503)
        .map(|(a, m, z)| format!("{}/{}/{} ms", ms(a), ms(m), ms(z)))
        .unwrap_or_else(|| "none".into());
    eprintln!(
        "stream leader failover: killed n{} after {acked_at_kill} of {} events acknowledged; new leader n{} visible in /jsz after {} ms; \
         first 202 for a request sent after the kill: {} ms after the kill (the pause); longest gap between 202s: {} ms; \
         {} requests ({} x 202, {} x 503, 503 latency min/median/max {latency_503}); node restart took {} ms; \
         {} events were already stored when their 202 came",
        leader + 1,
        events.len(),
        new_leader.unwrap() + 1,
        ms(elected - killed),
        ms(first_202_after_kill - killed),
        ms(report.longest_gap_between_202s()),
        report.outcomes.len(),
        report.count(202),
        report.count(503),
        ms(restarted - restart_at),
        report.acked.values().filter(|(_, d)| *d).count(),
    );

    // the restarted node rejoined and caught up: every node holds the same stream
    let total = events.len() as u64;
    let caught_up_from = Instant::now();
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(20),
            "every node, the restarted one included, to hold the whole stream",
            || {
                (0..3).all(|i| {
                    stream_on_node(cluster.monitor_port(i), &stream)
                        .is_some_and(|(_, last, msgs)| last == total && msgs == total)
                })
            },
        )
    });
    eprintln!(
        "restarted node n{} caught up {} ms after the load finished",
        leader + 1,
        ms(caught_up_from.elapsed())
    );

    projected_all(&rt).await;
    assert_stored_and_projected_once(&rt.log, &http, &base, &events, &report).await;
    rt.shutdown().await;
    eprintln!("cluster test took {} ms", ms(started.elapsed()));
}
