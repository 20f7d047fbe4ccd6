//! The MLLP listener over real TCP on port 0, against an in-memory sink: ordering, framing
//! across reads, oversized and unparseable frames, sink failures, idle timeout, graceful
//! shutdown and metrics. (`tests/it/hl7.rs` at the workspace root does the same against a
//! real nats-server.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use handover_adapters::hl7::{run, Hl7Config, Hl7Metrics};
use handover_events::SinkError;
use handover_hl7::mllp::encode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::support::{a01, fixture, join, summary, Client, MemorySink};

struct Running {
    addr: std::net::SocketAddr,
    metrics: Arc<Hl7Metrics>,
    sink: Arc<MemorySink>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(cfg: Hl7Config, sink: MemorySink) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Hl7Metrics::default());
    let sink = Arc::new(sink);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(
        listener,
        Arc::new(cfg),
        sink.clone(),
        metrics.clone(),
        async {
            let _ = rx.await;
        },
    ));
    Running {
        addr,
        metrics,
        sink,
        stop: Some(tx),
        task,
    }
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("run did not return after shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn messages_split_across_reads_and_several_per_read_are_acked_in_order() {
    let r = start(Hl7Config::default(), MemorySink::default()).await;
    let mut c = Client::connect(r.addr).await;
    let one = encode(join(&a01("C1")).as_bytes());
    for chunk in one.chunks(7) {
        c.write_raw(chunk).await;
    }
    let mut two = encode(join(&a01("C2")).as_bytes());
    two.extend_from_slice(b"\r\n");
    two.extend(encode(join(&a01("C3")).as_bytes()));
    c.write_raw(&two).await;
    let mut acks = Vec::new();
    for _ in 0..3 {
        acks.push(summary(&c.ack().await.unwrap()));
    }
    assert_eq!(acks, ["AA C1", "AA C2", "AA C3"]);
    let ids: Vec<String> = r
        .sink
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.id.clone())
        .collect();
    // Each id is MSH-10, a dot and the message's 12-hex-digit digest, then the suffix.
    let stems: Vec<String> = ids
        .iter()
        .map(|id| {
            let (control, rest) = id.split_once('.').unwrap();
            let (digest, suffix) = rest.split_at(12);
            assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            format!("{control}{suffix}")
        })
        .collect();
    assert_eq!(
        stems,
        ["C1:person", "C1", "C2:person", "C2", "C3:person", "C3"]
    );
    assert_eq!(ids[2].split(':').next(), Some(ids[3].as_str()));
    // A resend is acknowledged again and recognised as a duplicate.
    assert_eq!(summary(&c.call(&join(&a01("C2"))).await), "AA C2");
    assert_eq!(r.sink.events.lock().unwrap().len(), 6);
    let m = r.metrics.snapshot();
    assert_eq!((m.messages_received, m.acks_aa, m.duplicates), (4, 4, 2));
    r.shutdown().await;
}

#[tokio::test]
async fn oversized_and_unparseable_frames_get_ar_and_the_connection_stays_usable() {
    let cfg = Hl7Config {
        max_message_bytes: 512,
        ..Hl7Config::default()
    };
    let r = start(cfg, MemorySink::default()).await;
    let mut c = Client::connect(r.addr).await;
    let big = format!("{}ZZZ|{}\r", join(&a01("BIG")), "x".repeat(2000));
    c.send(&big).await;
    let ack = c.ack().await.unwrap();
    // Refused as that message: its control id and trigger, its sender as the receiver.
    assert_eq!(summary(&ack), "AR BIG 102  message exceeds 512 bytes");
    assert_eq!(ack.get("MSA-3"), Some("message exceeds 512 bytes"));
    assert_eq!(ack.get("MSH-9.2"), Some("A01"));
    assert_eq!(ack.get("MSH-5"), Some("PAS"));
    c.write_raw(b"some garbage between frames\r\n").await;
    c.send("hello, not HL7").await;
    assert_eq!(
        summary(&c.ack().await.unwrap()),
        "AR - 102  message could not be parsed: message does not start with an MSH segment"
    );
    assert_eq!(summary(&c.call(&join(&a01("OK1"))).await), "AA OK1");
    let m = r.metrics.snapshot();
    assert_eq!((m.acks_ar, m.acks_aa, m.unparseable), (2, 1, 2));
    r.shutdown().await;
}

#[tokio::test]
async fn content_errors_get_ae_with_the_field_and_nothing_is_published() {
    let r = start(Hl7Config::default(), MemorySink::default()).await;
    let mut c = Client::connect(r.addr).await;
    let mut m = a01("BAD1");
    m[2] = m[2].replace("9434765919", "9434765918");
    let ack = c.call(&join(&m)).await;
    assert_eq!(
        summary(&ack),
        "AE BAD1 102 PID^1^3^1^1 PID-3 repetition 1 is not a valid NHS number: the NHS number's check digit is wrong (Modulus 11)"
    );
    // v2.4: ERR-1 carries the location and code too, for older receivers.
    assert_eq!(ack.get("ERR-1.1"), Some("PID"));
    // The ACK's MSH swaps the applications and facilities.
    assert_eq!(ack.get("MSH-3"), Some("HANDOVER"));
    assert_eq!(ack.get("MSH-6"), Some("RX1"));
    assert_eq!(ack.get("MSH-9.1"), Some("ACK"));
    assert!(r.sink.events.lock().unwrap().is_empty());
    r.shutdown().await;
}

#[tokio::test]
async fn an_unavailable_sink_gets_ar_207_and_a_refusing_one_ae() {
    let sink = MemorySink::default();
    *sink.fail.lock().unwrap() = Some(|| SinkError::Unavailable("down".into()));
    let r = start(Hl7Config::default(), sink).await;
    let mut c = Client::connect(r.addr).await;
    assert_eq!(
        summary(&c.call(&join(&a01("U1"))).await),
        "AR U1 207  event log unavailable: nothing was stored, resend later"
    );
    *r.sink.fail.lock().unwrap() = Some(|| SinkError::Refused("too big".into()));
    assert_eq!(
        summary(&c.call(&join(&a01("U2"))).await),
        "AE U2 207  event log refused the events"
    );
    *r.sink.fail.lock().unwrap() = None;
    assert_eq!(summary(&c.call(&join(&a01("U1"))).await), "AA U1");
    assert_eq!(r.metrics.snapshot().publish_failures, 2);
    r.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let cfg = Hl7Config {
        idle_timeout_secs: 1,
        ..Hl7Config::default()
    };
    let r = start(cfg, MemorySink::default()).await;
    let mut c = Client::connect(r.addr).await;
    assert_eq!(summary(&c.call(&join(&a01("I1"))).await), "AA I1");
    let t = Instant::now();
    assert!(
        c.ack().await.is_none(),
        "the server should close an idle connection"
    );
    assert!(t.elapsed() >= Duration::from_millis(900));
    wait_for("the open-connections gauge to drop", || {
        r.metrics.snapshot().connections_open == 0
    })
    .await;
    r.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_finishes_the_in_flight_message() {
    let gate = Arc::new(Semaphore::new(0));
    let sink = MemorySink {
        gate: Some(gate.clone()),
        ..MemorySink::default()
    };
    let mut r = start(Hl7Config::default(), sink).await;
    let mut c = Client::connect(r.addr).await;
    c.send(&join(&a01("S1"))).await;
    // The publish has started and is held at the gate.
    r.sink.entered.acquire().await.unwrap().forget();
    let _ = r.stop.take().unwrap().send(());
    let addr = r.addr;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "listener still accepting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !r.task.is_finished(),
        "run returned with a message in flight"
    );
    gate.add_permits(1);
    assert_eq!(summary(&c.ack().await.unwrap()), "AA S1");
    assert!(
        c.ack().await.is_none(),
        "connection closed after the in-flight message"
    );
    tokio::time::timeout(Duration::from_secs(20), r.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.sink.events.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_and_metrics() {
    let r = start(Hl7Config::default(), MemorySink::default()).await;
    let addr = r.addr;
    let tasks: Vec<_> = (0..20)
        .map(|conn| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                for i in 0..10 {
                    let id = format!("K{conn}-{i}");
                    assert_eq!(summary(&c.call(&join(&a01(&id))).await), format!("AA {id}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = Client::connect(addr).await;
    // An A04 (a registration, not a stay): acknowledged, recorded as nothing.
    let a04 = String::from_utf8(fixture("a28_v2.4.hl7"))
        .unwrap()
        .replace("A28", "A04");
    assert_eq!(summary(&c.call(&a04).await), "AA RX1-MSG-000600");
    let m = r.metrics.snapshot();
    assert_eq!(
        (m.acks_aa, m.connections_total, m.events_published),
        (201, 21, 400)
    );
    assert_eq!(r.sink.events.lock().unwrap().len(), 400);
    // The 20 finished clients have hung up; the server notices each EOF.
    wait_for("finished connections to close", || {
        r.metrics.snapshot().connections_open == 1
    })
    .await;
    let text = r.metrics.render_prometheus();
    assert!(
        text.contains("handover_hl7_ignored_total{trigger=\"A04\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("handover_hl7_acks_total{code=\"AA\"} 201\n"),
        "{text}"
    );
    assert!(text.contains("handover_hl7_connections_open 1\n"), "{text}");
    r.shutdown().await;
}

/// Whether an ACK frame holds a C0 control character other than the `\r` segment terminator
/// (an MLLP reader resyncing on `0x0B` would cut it there).
fn has_raw_controls(frame: &[u8]) -> bool {
    frame.iter().any(|&b| b < 0x20 && b != b'\r')
}

#[tokio::test]
async fn a_start_byte_inside_a_frame_restarts_it_and_the_message_after_it_is_stored() {
    let r = start(Hl7Config::default(), MemorySink::default()).await;
    let mut c = Client::connect(r.addr).await;
    // The sender gives up on a frame after a few bytes, then sends the message whole.
    let mut wire = b"\x0BMSH|^~\\&|PAS|RX1|HAND".to_vec();
    wire.extend(encode(join(&a01("K03")).as_bytes()));
    c.write_raw(&wire).await;
    let frame = c.ack_bytes().await.unwrap();
    assert!(frame.starts_with(b"MSH|"), "{frame:?}");
    assert!(!has_raw_controls(&frame), "{frame:?}");
    let ack = handover_hl7::Message::parse(&frame).unwrap();
    assert_eq!(summary(&ack), "AA K03");
    assert_eq!(ack.get("MSH-3"), Some("HANDOVER"));
    let types: Vec<String> = r
        .sink
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.event_type().as_str().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "handover.person.identified.v1",
            "handover.discharge.admitted.v1"
        ]
    );
    assert_eq!(r.metrics.snapshot().messages_received, 1);
    r.shutdown().await;
}

#[tokio::test]
async fn control_characters_are_neither_stored_nor_echoed_in_the_ack() {
    let r = start(Hl7Config::default(), MemorySink::default()).await;
    let mut c = Client::connect(r.addr).await;
    let mut m = a01("G17");
    m[0] = m[0].replace("|PAS|RX1|", "|PAS\x01|RX1\x07|");
    m[2] = m[2].replace("SMITH^JANE", "SMI\x00TH^JA\x1BNE");
    c.send(&join(&m)).await;
    let frame = c.ack_bytes().await.unwrap();
    assert!(!has_raw_controls(&frame), "{frame:?}");
    let ack = handover_hl7::Message::parse(&frame).unwrap();
    assert_eq!(summary(&ack), "AA G17");
    assert_eq!(
        (ack.get("MSH-5"), ack.get("MSH-6")),
        (Some("PAS"), Some("RX1"))
    );
    let events = r.sink.events.lock().unwrap().clone();
    let person = events[0].data.to_json();
    assert_eq!(person["family_name"], "SMITH");
    assert_eq!(person["given_name"], "JANE");
    assert!(events.iter().all(|e| e.source == "urn:ods:RX1:pas"));
    r.shutdown().await;
}

#[tokio::test]
async fn two_messages_in_one_frame_are_refused_and_nothing_is_stored() {
    let r = start(Hl7Config::default(), MemorySink::default()).await;
    let mut c = Client::connect(r.addr).await;
    let mut second = a01("B06");
    second[2] = second[2].replace("9434765919", "9434765870");
    let frame = join(&a01("B05")) + &join(&second);
    let ack = c.call(&frame).await;
    assert_eq!(
        summary(&ack),
        "AR B05 100 MSH^2 this frame holds more than one message (a second MSH segment): an MLLP frame holds one message, so nothing in it was stored; send each message in a frame of its own"
    );
    assert_eq!(ack.get("MSA-3"), ack.get("ERR-8"));
    assert!(r.sink.events.lock().unwrap().is_empty());
    // Each message in a frame of its own is stored.
    assert_eq!(summary(&c.call(&join(&a01("B05"))).await), "AA B05");
    assert_eq!(summary(&c.call(&join(&second)).await), "AA B06");
    assert_eq!(r.sink.events.lock().unwrap().len(), 4);
    r.shutdown().await;
}

#[tokio::test]
async fn a_batch_gets_ar_saying_batches_are_not_supported_for_its_first_message() {
    let r = start(Hl7Config::default(), MemorySink::default()).await;
    let mut c = Client::connect(r.addr).await;
    let fhs = "FHS|^~\\&|PAS|RX1|HANDOVER|HANDOVER|20240301101500||||FILE1";
    let bhs = "BHS|^~\\&|PAS|RX1|HANDOVER|HANDOVER|20240301101500||||BATCH1";
    let mut batch = vec![fhs.to_owned(), bhs.to_owned()];
    batch.extend(a01("B01"));
    batch.extend(a01("B02"));
    batch.extend(["BTS|2".to_owned(), "FTS|1".to_owned()]);
    let ack = c.call(&join(&batch)).await;
    assert_eq!(
        summary(&ack),
        "AR B01 100 FHS^1 batches (FHS … BTS/FTS) are not supported over MLLP: nothing in this frame was stored; send one message per frame"
    );
    // Addressed back to the sender, as any ACK.
    assert_eq!(
        (ack.get("MSH-5"), ack.get("MSH-6"), ack.get("MSH-12")),
        (Some("PAS"), Some("RX1"), Some("2.4"))
    );
    // A batch without a file header, and one holding no message.
    let ack = c.call(&join(&batch[1..])).await;
    assert!(
        summary(&ack).starts_with("AR B01 100 BHS^1 batches (BHS"),
        "{}",
        summary(&ack)
    );
    let ack = c.call(&join(&[bhs.to_owned(), "BTS|0".to_owned()])).await;
    assert!(
        summary(&ack).starts_with("AR - 100 BHS^1 "),
        "{}",
        summary(&ack)
    );
    assert!(r.sink.events.lock().unwrap().is_empty());
    let m = r.metrics.snapshot();
    assert_eq!((m.acks_ar, m.unparseable), (3, 3));
    r.shutdown().await;
}

#[tokio::test]
async fn acks_always_carry_a_processing_id_and_a_version() {
    let r = start(Hl7Config::default(), MemorySink::default()).await;
    let mut c = Client::connect(r.addr).await;
    let mut no_version = a01("V1");
    no_version[0] = no_version[0].replace("|P|2.4", "|P|");
    let ack = c.call(&join(&no_version)).await;
    assert_eq!(
        summary(&ack),
        "AR V1 101 MSH^1^12 MSH-12 version id is required"
    );
    assert_eq!(
        (ack.get("MSH-11"), ack.get("MSH-12")),
        (Some("P"), Some("2.4"))
    );
    // Without processing ids configured, a message without one is taken; its ACK says P.
    let mut no_processing_id = a01("V3");
    no_processing_id[0] = no_processing_id[0].replace("|P|2.4", "||2.4");
    let ack = c.call(&join(&no_processing_id)).await;
    assert_eq!(summary(&ack), "AA V3");
    assert_eq!(
        (ack.get("MSH-11"), ack.get("MSH-12")),
        (Some("P"), Some("2.4"))
    );
    // An MSH cut short after MSH-4.
    let ack = c.call("MSH|^~\\&|PAS|RX1\r").await;
    assert_eq!(
        summary(&ack),
        "AR - 101 MSH^1^9 MSH-9 message type is required"
    );
    assert_eq!(
        (ack.get("MSH-11"), ack.get("MSH-12")),
        (Some("P"), Some("2.4"))
    );
    r.shutdown().await;
}
