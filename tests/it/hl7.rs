//! The HL7 v2 MLLP adapter end to end: real TCP on port 0, a real nats-server, the real event
//! log, and (for the burst) the journey projection and API. The sender only ever gets `AA`
//! for what JetStream has stored.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use handover_adapters::hl7::{run, Hl7Config, Hl7Metrics};
use handover_events::{Event, EventSink, PseudonymKey};
use handover_hl7::mllp::{encode, MllpDecoder};
use handover_hl7::Message;
use handover_nats::{EventLog, LogConfig};
use handover_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::Backbone;

// ----- messages -----------------------------------------------------------------------------

fn seg(name: &str, fields: &[(usize, &str)]) -> String {
    let n = fields.iter().map(|(i, _)| *i).max().unwrap_or(0);
    let mut out = vec![String::new(); n];
    for (i, v) in fields {
        out[i - 1] = (*v).to_string();
    }
    format!("{name}|{}", out.join("|"))
}

/// One test person's stay: an A01 and an A03, with control ids `<tag>-A01` / `<tag>-A03`.
struct Stay {
    tag: String,
    nhs: String,
}

impl Stay {
    fn message(&self, trigger: &str) -> (String, String) {
        let ctrl = format!("{}-{trigger}", self.tag);
        let msh = format!(
            "MSH|^~\\&|PAS|RX1|HANDOVER|HANDOVER|20240301101502||ADT^{trigger}|{ctrl}|P|2.4"
        );
        let pid = seg(
            "PID",
            &[
                (1, "1"),
                (
                    3,
                    &format!("{}^^^NHS^NH~MRN-{}^^^RX1^MR", self.nhs, self.tag),
                ),
                (5, "EXAMPLE^PAT"),
                (7, "19450312"),
            ],
        );
        let enc = format!("ENC-{}", self.tag);
        let (evn, pv1) = if trigger == "A01" {
            (
                seg("EVN", &[(1, "A01"), (2, "20240301101500")]),
                seg(
                    "PV1",
                    &[
                        (2, "I"),
                        (3, "WARD7^^^RX1CC"),
                        (4, "EM"),
                        (19, &enc),
                        (44, "20240301094500"),
                    ],
                ),
            )
        } else {
            (
                seg("EVN", &[(1, "A03"), (2, "20240305113200")]),
                seg(
                    "PV1",
                    &[
                        (2, "I"),
                        (3, "WARD7^^^RX1CC"),
                        (19, &enc),
                        (36, "1"),
                        (37, "19"),
                        (45, "20240305113000"),
                    ],
                ),
            )
        };
        (ctrl, format!("{msh}\r{evn}\r{pid}\r{pv1}\r"))
    }

    /// Both messages, in order, with their control ids.
    fn messages(&self) -> [(String, String); 2] {
        [self.message("A01"), self.message("A03")]
    }
}

/// Event ids stored for a message: A01 gives the person and the admission.
fn event_ids(ctrl: &str) -> Vec<String> {
    if ctrl.ends_with("A01") {
        vec![format!("{ctrl}:person"), ctrl.to_string()]
    } else {
        vec![ctrl.to_string()]
    }
}

fn stays(prefix: &str, nhs: &[String]) -> Vec<Stay> {
    nhs.iter()
        .enumerate()
        .map(|(i, n)| Stay {
            tag: format!("{prefix}{i}"),
            nhs: n.clone(),
        })
        .collect()
}

// ----- harness -------------------------------------------------------------------------------

/// The adapter running on 127.0.0.1:0 with a given sink.
struct Adapter {
    addr: SocketAddr,
    metrics: Arc<Hl7Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Adapter {
    async fn start(sink: Arc<dyn EventSink>) -> Adapter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Hl7Metrics::default());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(
            listener,
            Arc::new(Hl7Config::default()),
            sink,
            metrics.clone(),
            async {
                let _ = rx.await;
            },
        ));
        Adapter {
            addr,
            metrics,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("hl7 adapter did not stop")
            .unwrap()
            .unwrap();
    }
}

/// A sending PAS: one message at a time, waiting for each ACK.
struct Sender {
    stream: TcpStream,
    decoder: MllpDecoder,
}

impl Sender {
    async fn connect(addr: SocketAddr) -> Sender {
        Sender {
            stream: TcpStream::connect(addr).await.unwrap(),
            decoder: MllpDecoder::default(),
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Message {
        self.stream.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                return Message::parse(&frame.unwrap()).unwrap();
            }
            let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut buf))
                .await
                .expect("no ACK within 30 s")
                .unwrap();
            assert!(n > 0, "connection closed before the ACK");
            self.decoder.push(&buf[..n]);
        }
    }

    /// Sends one message; returns `(MSA-1, MSA-2)`.
    async fn send(&mut self, message: &str) -> (String, String) {
        let ack = self.send_raw(&encode(message.as_bytes())).await;
        (
            ack.get("MSA-1").unwrap_or("").to_string(),
            ack.get("MSA-2").unwrap_or("").to_string(),
        )
    }

    /// Sends every message in order, asserting each gets `AA` echoing its control id.
    async fn send_all_expect_aa(&mut self, messages: &[(String, String)]) {
        for (ctrl, msg) in messages {
            assert_eq!(self.send(msg).await, ("AA".to_string(), ctrl.clone()));
        }
    }
}

fn key() -> PseudonymKey {
    PseudonymKey::new(crate::support::KEY_HEX.as_bytes().to_vec()).unwrap()
}

async fn nats_and_log(ack_timeout: Duration) -> (NatsServer, EventLog) {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let cfg = LogConfig {
        ack_timeout,
        ..LogConfig::default()
    };
    let log = EventLog::connect(&nats.url(), cfg, key()).await.unwrap();
    (nats, log)
}

/// Every event id in the stream, with how many times it is stored.
/// An HL7 event id without its message digest: `<MSH-10>.<12 hex digits><suffix>` →
/// `<MSH-10><suffix>` (the digest is checked to be there).
fn without_digest(id: &str) -> String {
    let (control, rest) = id.rsplit_once('.').expect("an HL7 event id has a digest");
    let (digest, suffix) = rest.split_at(12);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    format!("{control}{suffix}")
}

/// Every event id in the log (digests taken out), with how many times it is there.
async fn stored_ids(log: &EventLog) -> BTreeMap<String, usize> {
    let last = log.last_sequence().await.unwrap();
    let mut ids = BTreeMap::new();
    if last == 0 {
        return ids;
    }
    let mut feed = log.feed("hl7-test-readback", None, 0).await.unwrap();
    let mut seen = 0;
    while seen < last {
        let batch = tokio::time::timeout(Duration::from_secs(10), feed.next_batch(1000))
            .await
            .expect("stream read-back stalled")
            .unwrap();
        for d in &batch.deliveries {
            seen = seen.max(d.sequence);
            let e = Event::from_stored(&d.payload).unwrap();
            *ids.entry(without_digest(&e.id)).or_insert(0) += 1;
        }
    }
    ids
}

// ----- tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_admissions_and_discharges_is_acked_stored_and_projected() {
    let b = Backbone::start().await;
    let sink: Arc<dyn EventSink> = Arc::new(b.rt().log.clone());
    let hl7 = Adapter::start(sink).await;
    let before = b.rt().log.last_sequence().await.unwrap();
    let nhs = crate::support::nhs_numbers(943_100_000, 1000);

    // 1,000 messages (500 stays) on one connection.
    let single = stays("S", &nhs[..500]);
    let t = Instant::now();
    let mut sender = Sender::connect(hl7.addr).await;
    for stay in &single {
        sender.send_all_expect_aa(&stay.messages()).await;
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "hl7: 1000 messages on 1 connection in {secs:.2} s = {:.0} messages/s",
        1000.0 / secs
    );

    // 1,000 messages across 10 concurrent connections (50 stays each).
    let t = Instant::now();
    let tasks: Vec<_> = nhs[500..]
        .chunks(50)
        .enumerate()
        .map(|(c, chunk)| {
            let batch = stays(&format!("C{c}-"), chunk);
            let addr = hl7.addr;
            tokio::spawn(async move {
                let mut sender = Sender::connect(addr).await;
                for stay in &batch {
                    sender.send_all_expect_aa(&stay.messages()).await;
                }
            })
        })
        .collect();
    assert_eq!(tasks.len(), 10);
    for task in tasks {
        task.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "hl7: 1000 messages on 10 connections in {secs:.2} s = {:.0} messages/s",
        1000.0 / secs
    );

    // Each stay is 3 events: person.identified + admitted (A01), discharged (A03).
    let after = b.rt().log.last_sequence().await.unwrap();
    assert_eq!(after - before, 3000);
    let m = hl7.metrics.snapshot();
    assert_eq!((m.acks_aa, m.acks_ae, m.acks_ar), (2000, 0, 0));
    assert_eq!((m.events_published, m.duplicates), (3000, 0));

    b.caught_up().await;
    for (i, n) in nhs.iter().enumerate().step_by(97) {
        let j: serde_json::Value = b.journey(n).await.json().await.unwrap();
        let tag = if i < 500 {
            format!("S{i}")
        } else {
            format!("C{}-{}", (i - 500) / 50, (i - 500) % 50)
        };
        let stays = j["stays"].as_array().unwrap_or_else(|| panic!("{j}"));
        assert_eq!(stays.len(), 1, "{j}");
        let stay = &j["current_stay"];
        assert_eq!(stay["encounter_id"], format!("ENC-{tag}"), "{j}");
        assert_eq!(stay["status"], "discharged", "{j}");
        assert_eq!(stay["source"], "urn:ods:RX1:pas", "{j}");
        assert_eq!(stay["site"], "RX1CC", "{j}");
    }
    hl7.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_message_is_acked_again_and_stored_once() {
    let (_nats, log) = nats_and_log(Duration::from_secs(10)).await;
    let hl7 = Adapter::start(Arc::new(log.clone())).await;
    let stay = &stays("R", &crate::support::nhs_numbers(943_100_000, 1))[0];
    let (ctrl, a01) = stay.message("A01");
    let mut sender = Sender::connect(hl7.addr).await;
    assert_eq!(sender.send(&a01).await, ("AA".into(), ctrl.clone()));
    assert_eq!(log.last_sequence().await.unwrap(), 2);
    // Resent on the same connection and on a new one (as after a lost ACK).
    assert_eq!(sender.send(&a01).await, ("AA".into(), ctrl.clone()));
    let mut again = Sender::connect(hl7.addr).await;
    assert_eq!(again.send(&a01).await, ("AA".into(), ctrl.clone()));
    assert_eq!(log.last_sequence().await.unwrap(), 2);
    let ids = stored_ids(&log).await;
    assert_eq!(
        ids,
        BTreeMap::from([(format!("{ctrl}:person"), 1), (ctrl, 1)])
    );
    assert_eq!(hl7.metrics.snapshot().duplicates, 4);
    hl7.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_ar_and_content_errors_get_ae_naming_the_field() {
    let (_nats, log) = nats_and_log(Duration::from_secs(10)).await;
    let hl7 = Adapter::start(Arc::new(log.clone())).await;
    let mut sender = Sender::connect(hl7.addr).await;

    // A frame holding no HL7 at all.
    let ack = sender.send_raw(&encode(b"\x00\x01garbage\xff")).await;
    assert_eq!(ack.get("MSA-1"), Some("AR"));
    assert_eq!(ack.get("ERR-3.1"), Some("102"));
    // Garbage outside frames is skipped; a malformed MSH is AR.
    let ack = sender
        .send_raw(&[b"noise\r\n".as_slice(), &encode(b"MSH|^^^^|x")].concat())
        .await;
    assert_eq!(ack.get("MSA-1"), Some("AR"));

    // A content error: the NHS number fails its check digit.
    let stay = Stay {
        tag: "E1".into(),
        nhs: "9434765918".into(),
    };
    let (ctrl, a01) = stay.message("A01");
    let ack = sender.send_raw(&encode(a01.as_bytes())).await;
    assert_eq!(ack.get("MSA-1"), Some("AE"));
    assert_eq!(ack.get("MSA-2"), Some(ctrl.as_str()));
    let err = ack.segment("ERR").unwrap();
    assert_eq!(err.field(2).unwrap().raw(), "PID^1^3^1^1");
    assert_eq!(ack.get("ERR-3.1"), Some("102"));

    // A bad date names its field.
    let good = &stays("E", &crate::support::nhs_numbers(943_100_000, 1))[0];
    let (ctrl, a01) = good.message("A01");
    let bad_date = a01.replace("20240301094500", "20240231094500");
    let ack = sender.send_raw(&encode(bad_date.as_bytes())).await;
    assert_eq!(ack.get("MSA-1"), Some("AE"));
    assert_eq!(
        ack.segment("ERR").unwrap().field(2).unwrap().raw(),
        "PV1^1^44"
    );

    // The connection is still usable, and nothing but the good message was stored.
    assert_eq!(sender.send(&a01).await, ("AA".into(), ctrl));
    assert_eq!(log.last_sequence().await.unwrap(), 2);
    hl7.stop().await;
}

/// What each sender was told, by control id: every ACK code received, in order.
type Told = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_mid_stream_never_gets_an_aa_for_what_is_not_stored() {
    let (nats, log) = nats_and_log(Duration::from_secs(2)).await;
    let hl7 = Adapter::start(Arc::new(log.clone())).await;
    let told: Told = Arc::default();
    let (aa, ar) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let nhs = crate::support::nhs_numbers(943_100_000, 120);
    let all: Vec<(String, String)> = stays("K", &nhs).iter().flat_map(|s| s.messages()).collect();

    // Three PAS connections send their stays one message at a time, whatever the answer.
    let senders: Vec<_> = nhs
        .chunks(40)
        .enumerate()
        .map(|(c, chunk)| {
            let offset = c * 40;
            let messages: Vec<(String, String)> = chunk
                .iter()
                .enumerate()
                .flat_map(|(i, n)| {
                    Stay {
                        tag: format!("K{}", offset + i),
                        nhs: n.clone(),
                    }
                    .messages()
                })
                .collect();
            let (addr, told, aa, ar) = (hl7.addr, told.clone(), aa.clone(), ar.clone());
            tokio::spawn(async move {
                let mut sender = Sender::connect(addr).await;
                for (ctrl, msg) in &messages {
                    let (code, echoed) = sender.send(msg).await;
                    assert_eq!(&echoed, ctrl);
                    match code.as_str() {
                        "AA" => aa.fetch_add(1, Ordering::SeqCst),
                        "AR" => ar.fetch_add(1, Ordering::SeqCst),
                        other => panic!("unexpected {other} for {ctrl}"),
                    };
                    told.lock()
                        .unwrap()
                        .entry(ctrl.clone())
                        .or_default()
                        .push(code);
                }
            })
        })
        .collect();

    let wait = |what: &'static str, counter: Arc<AtomicUsize>, n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while counter.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    wait("some messages stored before the kill", aa.clone(), 30).await;
    let nats = tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.kill();
        nats
    })
    .await
    .unwrap();
    let aa_at_kill = aa.load(Ordering::SeqCst);
    wait("rejections while nats is down", ar.clone(), 3).await;
    // Kept until the end of the test: dropping it kills the server.
    let _nats = tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.restart();
        nats
    })
    .await
    .unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let rejected: Vec<String> = told
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, codes)| codes.last().map(String::as_str) != Some("AA"))
        .map(|(ctrl, _)| ctrl.clone())
        .collect();
    eprintln!(
        "hl7 outage: {aa_at_kill} AA before the kill, {} AR in all, {} messages to resend",
        ar.load(Ordering::SeqCst),
        rejected.len()
    );
    assert!(!rejected.is_empty(), "the outage rejected nothing");

    // The PAS resends everything that did not get AA, until it does.
    let by_ctrl: BTreeMap<&String, &String> = all.iter().map(|(c, m)| (c, m)).collect();
    let mut sender = Sender::connect(hl7.addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for ctrl in &rejected {
        loop {
            let (code, _) = sender.send(by_ctrl[ctrl]).await;
            told.lock()
                .unwrap()
                .entry(ctrl.clone())
                .or_default()
                .push(code.clone());
            if code == "AA" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ctrl} never accepted after the restart"
            );
        }
    }

    // Every message told AA is in the stream exactly once, and nothing else is there.
    let stored = stored_ids(&log).await;
    let told = told.lock().unwrap().clone();
    let mut expected = BTreeSet::new();
    for (ctrl, codes) in told.iter() {
        if codes.iter().any(|c| c == "AA") {
            expected.extend(event_ids(ctrl));
        }
    }
    assert_eq!(told.len(), all.len());
    assert_eq!(expected.len(), 120 * 3);
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let stored: BTreeSet<String> = stored.into_keys().collect();
    let missing: Vec<_> = expected.difference(&stored).collect();
    assert!(missing.is_empty(), "told AA but not stored: {missing:?}");
    assert_eq!(stored, expected);
    hl7.stop().await;
}

/// PV1 from PV1-3 on: ward (PV1-3), visit (PV1-19), destination (PV1-37), admitted
/// (PV1-44), discharged (PV1-45).
fn pv1(ward: &str, visit: &str, dest: &str, admit: &str, disch: &str) -> String {
    let mut f = vec![""; 43];
    f[0] = ward;
    f[16] = visit;
    f[34] = dest;
    f[41] = admit;
    f[42] = disch;
    f.join("|")
}

/// An ADT message for `nhs` at recorded time `evn` (EVN-2), with a PV1 of `pv1` fields.
fn adt(trigger: &str, control: &str, nhs: &str, evn: &str, pv1: &str) -> String {
    format!(
        "MSH|^~\\&|PAS|RX1|HANDOVER|HANDOVER|{evn}||ADT^{trigger}|{control}|P|2.4\r\
         EVN|{trigger}|{evn}\r\
         PID|1||{nhs}^^^NHS^NH~MRN-{control}^^^RX1^MR||EXAMPLE^PAT\r\
         PV1|1|I|{pv1}\r"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrections_after_a_cancellation_stand() {
    let b = Backbone::start().await;
    let sink: Arc<dyn EventSink> = Arc::new(b.rt().log.clone());
    let hl7 = Adapter::start(sink).await;
    let nhs = crate::support::nhs_numbers(943_200_000, 2);
    let mut s = Sender::connect(hl7.addr).await;
    // A re-admission after a cancelled admission, with the original admission time.
    let a = &nhs[0];
    for (t, c, evn, p) in [
        (
            "A01",
            "R1",
            "202611200905",
            pv1("W7", "V1", "", "202611200900", ""),
        ),
        ("A11", "R2", "202611201000", pv1("W7", "V1", "", "", "")),
        (
            "A01",
            "R3",
            "202611201015",
            pv1("W8", "V1", "", "202611200900", ""),
        ),
    ] {
        assert_eq!(s.send(&adt(t, c, a, evn, &p)).await.0, "AA");
    }
    // A corrected discharge after a cancelled one, with the original discharge time.
    let d = &nhs[1];
    for (t, c, evn, p) in [
        (
            "A01",
            "D1",
            "202611200905",
            pv1("W7", "V2", "", "202611200900", ""),
        ),
        (
            "A03",
            "D2",
            "202611221500",
            pv1("W7", "V2", "19", "", "202611221500"),
        ),
        ("A13", "D3", "202611221530", pv1("W7", "V2", "", "", "")),
        (
            "A03",
            "D4",
            "202611221600",
            pv1("W7", "V2", "54", "", "202611221500"),
        ),
    ] {
        assert_eq!(s.send(&adt(t, c, d, evn, &p)).await.0, "AA");
    }
    b.caught_up().await;
    let j: serde_json::Value = b.journey(a).await.json().await.unwrap();
    assert_eq!(j["current_stay"]["status"], "in-hospital", "{j}");
    assert_eq!(j["current_stay"]["ward"], "W8", "{j}");
    let j: serde_json::Value = b.journey(d).await.json().await.unwrap();
    assert_eq!(j["current_stay"]["status"], "discharged", "{j}");
    assert_eq!(j["current_stay"]["destination"], "care-home", "{j}");
    hl7.stop().await;
}

/// [`adt`] from another sending facility (MSH-4), so from another trust's source.
fn adt_from(
    facility: &str,
    trigger: &str,
    control: &str,
    nhs: &str,
    evn: &str,
    pv1: &str,
) -> String {
    adt(trigger, control, nhs, evn, pv1).replacen("|PAS|RX1|", &format!("|PAS|{facility}|"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stays_follow_the_trust_the_record_and_the_episode() {
    let b = Backbone::start().await;
    let sink: Arc<dyn EventSink> = Arc::new(b.rt().log.clone());
    let hl7 = Adapter::start(sink).await;
    let nhs = crate::support::nhs_numbers(943_300_000, 6);
    let mut s = Sender::connect(hl7.addr).await;
    let mut msgs: Vec<String> = Vec::new();
    // 0: admitted before go-live; only the A03 is seen.
    msgs.extend([adt(
        "A03",
        "G1",
        &nhs[0],
        "202611221500",
        &pv1("W9", "V1", "19", "202611010800", "202611221500"),
    )]);
    // 1: an A13 whose EVN clock runs five minutes behind the A03's still cancels it.
    msgs.extend([
        adt(
            "A01",
            "K1",
            &nhs[1],
            "202611200905",
            &pv1("W7", "V2", "", "202611200900", ""),
        ),
        adt(
            "A03",
            "K2",
            &nhs[1],
            "202611221500",
            &pv1("W7", "V2", "19", "", "202611221500"),
        ),
        adt(
            "A13",
            "K3",
            &nhs[1],
            "202611221455",
            &pv1("W7", "V2", "", "", ""),
        ),
    ]);
    // 2: a visit number used again after its discharge is a new episode.
    msgs.extend([
        adt(
            "A01",
            "E1",
            &nhs[2],
            "202611010900",
            &pv1("W1", "V3", "", "202611010900", ""),
        ),
        adt(
            "A03",
            "E2",
            &nhs[2],
            "202611051200",
            &pv1("W1", "V3", "54", "", "202611051200"),
        ),
        adt(
            "A01",
            "E3",
            &nhs[2],
            "202611200900",
            &pv1("W2", "V3", "", "202611200900", ""),
        ),
    ]);
    // 3: two trusts with the same visit number are two stays; the later one's discharge
    // leaves the person in hospital at the first.
    msgs.extend([
        adt_from(
            "RX1",
            "A01",
            "T1",
            &nhs[3],
            "202611200900",
            &pv1("W1", "V4", "", "202611200900", ""),
        ),
        adt_from(
            "RR8",
            "A01",
            "T2",
            &nhs[3],
            "202611210900",
            &pv1("L27", "V4", "", "202611210900", ""),
        ),
        adt_from(
            "RR8",
            "A03",
            "T3",
            &nhs[3],
            "202611221200",
            &pv1("L27", "V4", "19", "", "202611221200"),
        ),
    ]);
    // 4: the admission keyed in after the transfer it preceded.
    msgs.extend([
        adt(
            "A02",
            "W1",
            &nhs[4],
            "202611201000",
            &pv1("W5", "V5", "", "202611200900", ""),
        ),
        adt(
            "A01",
            "W2",
            &nhs[4],
            "202611201005",
            &pv1("W4", "V5", "", "202611200900", ""),
        ),
    ]);
    // 5: an A12 whose EVN-6 is the time of the transfer it cancels, as some PAS send it.
    msgs.extend([
        adt(
            "A01",
            "X1",
            &nhs[5],
            "202611151000",
            &pv1("W1", "V6", "", "202611151000", ""),
        ),
        adt(
            "A02",
            "X2",
            &nhs[5],
            "202611161005",
            &pv1("W2", "V6", "", "202611151000", ""),
        ),
        adt(
            "A12",
            "X3",
            &nhs[5],
            "202611161130",
            &pv1("W1", "V6", "", "202611151000", ""),
        )
        .replace(
            "EVN|A12|202611161130\r",
            "EVN|A12|202611161130||||202611161000\r",
        ),
    ]);
    for m in &msgs {
        assert_eq!(s.send(m).await.0, "AA", "{m}");
    }
    b.caught_up().await;
    let journey = |i: usize| {
        let b = &b;
        let n = nhs[i].clone();
        async move {
            b.journey(&n)
                .await
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };

    let j = journey(0).await;
    let stay = &j["current_stay"];
    assert_eq!(stay["status"], "discharged", "{j}");
    assert_eq!(stay["admitted_at"], "2026-11-01T08:00:00Z", "{j}");
    assert_eq!(stay["ward"], "W9", "{j}");
    assert_eq!(stay["site"], "RX1", "{j}");

    let j = journey(1).await;
    assert_eq!(j["current_stay"]["status"], "in-hospital", "{j}");
    assert!(j["current_stay"].get("discharged_at").is_none(), "{j}");

    let j = journey(2).await;
    let stay = &j["current_stay"];
    assert_eq!(stay["status"], "in-hospital", "{j}");
    assert_eq!(stay["ward"], "W2", "{j}");
    assert_eq!(stay["admitted_at"], "2026-11-20T09:00:00Z", "{j}");
    assert!(stay.get("discharged_at").is_none(), "{j}");
    assert!(stay.get("destination").is_none(), "{j}");
    // The first episode is kept as it was.
    assert_eq!(j["stays"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(j["stays"][0]["status"], "discharged", "{j}");
    assert_eq!(j["stays"][0]["destination"], "care-home", "{j}");

    let j = journey(3).await;
    assert_eq!(j["stays"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(j["current_stay"]["source"], "urn:ods:RX1:pas", "{j}");
    assert_eq!(j["current_stay"]["status"], "in-hospital", "{j}");
    assert_eq!(j["current_stay"]["ward"], "W1", "{j}");

    let j = journey(4).await;
    assert_eq!(j["current_stay"]["ward"], "W5", "{j}");
    assert_eq!(
        j["current_stay"]["admitted_at"], "2026-11-20T09:00:00Z",
        "{j}"
    );
    let j = journey(5).await;
    assert_eq!(j["current_stay"]["ward"], "W1", "the A12 stands: {j}");
    hl7.stop().await;
}
