//! Helpers shared by the adapter tests: fixtures, message building, an MLLP client and an
//! in-memory sink.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handover_events::sink::BoxFuture;
use handover_events::{Event, EventSink, SinkError, Stored};
use handover_hl7::mllp::{encode, MllpDecoder};
use handover_hl7::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// `tests/fixtures/hl7/` at the workspace root.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hl7")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A segment with the given fields set (1-based, as numbered in the standard; for MSH use
/// the real message text instead).
pub fn seg(name: &str, fields: &[(usize, &str)]) -> String {
    let n = fields.iter().map(|(i, _)| *i).max().unwrap_or(0);
    let mut out = vec![String::new(); n];
    for (i, v) in fields {
        out[i - 1] = (*v).to_string();
    }
    format!("{name}|{}", out.join("|"))
}

pub fn msh(trigger: &str, control_id: &str) -> String {
    format!("MSH|^~\\&|PAS|RX1|HANDOVER|HANDOVER|20240301101502||ADT^{trigger}|{control_id}|P|2.4")
}

/// A valid A01 (NHS number plus an MRN) as segments, to be edited by tests.
pub fn a01(control_id: &str) -> Vec<String> {
    vec![
        msh("A01^ADT_A01", control_id),
        seg("EVN", &[(1, "A01"), (2, "20240301101500")]),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, "9434765919^^^NHS^NH~RX1-100001^^^RX1^MR"),
                (5, "SMITH^JANE"),
                (7, "19450312"),
                (11, "1 HIGH STREET^^LEEDS^^LS1 1AA^GBR^H"),
            ],
        ),
        seg(
            "PV1",
            &[
                (1, "1"),
                (2, "I"),
                (3, "WARD7^^^RX1CC"),
                (4, "EM"),
                (19, "RX1-ENC-0042"),
                (44, "20240301094500"),
            ],
        ),
    ]
}

pub fn join(segments: &[String]) -> String {
    segments.join("\r") + "\r"
}

/// A sink that keeps events in memory; it can be told to fail, or to hold each publish until
/// a permit is added to `gate`.
pub struct MemorySink {
    pub events: Mutex<Vec<Event>>,
    pub fail: Mutex<Option<fn() -> SinkError>>,
    pub gate: Option<Arc<Semaphore>>,
    pub entered: Semaphore,
}

impl Default for MemorySink {
    fn default() -> Self {
        MemorySink {
            events: Mutex::default(),
            fail: Mutex::default(),
            gate: None,
            entered: Semaphore::new(0),
        }
    }
}

impl EventSink for MemorySink {
    fn publish<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Vec<Stored>, SinkError>> {
        Box::pin(async move {
            self.entered.add_permits(1);
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            if let Some(f) = *self.fail.lock().unwrap() {
                return Err(f());
            }
            let mut stored = self.events.lock().unwrap();
            let mut out = Vec::new();
            for e in events {
                let dup = stored.iter().any(|s| s.source == e.source && s.id == e.id);
                if !dup {
                    stored.push(e.clone());
                }
                out.push(Stored {
                    sequence: stored.len() as u64,
                    duplicate: dup,
                });
            }
            Ok(out)
        })
    }
}

/// A minimal MLLP client.
pub struct Client {
    stream: TcpStream,
    decoder: MllpDecoder,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            decoder: MllpDecoder::default(),
        }
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, message: &str) {
        self.write_raw(&encode(message.as_bytes())).await;
    }

    /// The next ACK, or `None` when the server closed the connection.
    pub async fn ack(&mut self) -> Option<Message> {
        let frame = self.ack_bytes().await?;
        Some(Message::parse(&frame).unwrap())
    }

    /// The next ACK's frame payload as sent, or `None` when the server closed the connection.
    pub async fn ack_bytes(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                return Some(frame.unwrap());
            }
            let n = tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut buf))
                .await
                .expect("no ACK within 20 s")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// Sends and waits for the ACK.
    pub async fn call(&mut self, message: &str) -> Message {
        self.send(message).await;
        self.ack().await.expect("connection closed before the ACK")
    }
}

/// `MSA-1 MSA-2 [ERR-3.1 ERR-2]` of an ACK, e.g. `AE MSG1 102 PID^1^3^1^1`.
pub fn summary(ack: &Message) -> String {
    let mut s = format!(
        "{} {}",
        ack.get("MSA-1").unwrap_or("-"),
        ack.get("MSA-2").unwrap_or("-")
    );
    if let Some(err) = ack.segment("ERR") {
        let code = ack.get("ERR-3.1").unwrap_or("-");
        let location = err.field(2).map(|f| f.raw()).unwrap_or("");
        let text = ack.get("ERR-8").unwrap_or("");
        s.push_str(&format!(" {code} {location} {text}"));
    }
    s
}
