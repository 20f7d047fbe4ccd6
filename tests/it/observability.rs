//! Observability end to end: one trace from an HTTP request (continuing the caller's
//! `traceparent`) or an HL7 message (starting a trace) through the JetStream publish, the
//! trace context in the NATS header, and `/metrics` after a scripted load.
//!
//! Tracing subscribers are per process or per thread, and tests run in parallel (some
//! install a global subscriber). The trace test therefore builds its own tokio runtime
//! whose every thread (workers, blocking pool, and the thread calling `block_on`) gets the
//! test's dispatcher as its thread default, so spans from every task of that runtime reach
//! the test's span collector whatever else is installed globally.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use handover::runtime::Runtime;
use handover_api::Role;
use handover_hl7::mllp::{encode, MllpDecoder};
use handover_testkit::NatsServer;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{self, ev, metric, token, Backbone};

const NHS: &str = "9434765919";
const NHS_HL7: &str = "9434765870";

/// Collects finished spans in memory (what the SDK's `InMemorySpanExporter` does, without
/// its `testing` feature, which would build the SDK a second time with metrics and logs).
#[derive(Debug, Clone, Default)]
struct Collector(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collector {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

async fn start_with_hl7() -> Backbone {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = support::config(&nats.url(), &dir.path().join("store"));
    // Adapters are configured by their registry section, as in handover.toml.
    cfg.adapters.insert(
        "hl7".into(),
        handover::config::Config::parse("[hl7]\nlisten = \"127.0.0.1:0\"\n")
            .unwrap()
            .adapters["hl7"]
            .clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rt = Runtime::start(&cfg, Some(listener)).await.unwrap();
    Backbone {
        base: format!("http://{}", rt.api_addr.unwrap()),
        nats,
        dir,
        rt: Some(rt),
        http: reqwest::Client::new(),
    }
}

/// Sends one HL7 message over MLLP; returns MSA-1.
async fn send_hl7(addr: std::net::SocketAddr, msg: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&encode(msg.as_bytes())).await.unwrap();
    let mut dec = MllpDecoder::default();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(frame) = dec.next_frame() {
            let ack = handover_hl7::Message::parse(&frame.unwrap()).unwrap();
            return ack.get("MSA-1").unwrap_or("").to_string();
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("no ACK within 30 s")
            .unwrap();
        assert!(n > 0, "connection closed before the ACK");
        dec.push(&buf[..n]);
    }
}

fn a01(ctrl: &str) -> String {
    format!(
        "MSH|^~\\&|PAS|RX1|HANDOVER|HANDOVER|20240301101502||ADT^A01|{ctrl}|P|2.4\r\
         EVN|A01|20240301101500\r\
         PID|1||{NHS_HL7}^^^NHS^NH~MRN-OBS^^^RX1^MR||EXAMPLE^PAT||19450312\r\
         PV1||I|WARD7^^^RX1CC|EM|||||||||||||||ENC-OBS-1|||||||||||||||||||||||||20240301094500\r"
    )
}

#[test]
fn one_trace_from_http_or_hl7_through_the_jetstream_publish() {
    let collector = Collector::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collector.clone())
        .build();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry().with(handover::telemetry::layers(&provider)),
    );
    // tracing-core decides a callsite's interest from the registering thread's default
    // dispatcher while only one dispatcher exists; a second live one makes it ask every
    // dispatcher, so a callsite first hit by a parallel test (on a thread without ours)
    // is not switched off for good.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let on_start = dispatch.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // Kept for the thread's life: the thread is the runtime's.
            std::mem::forget(tracing::dispatcher::set_default(&on_start));
        })
        .build()
        .unwrap();
    let (trace_in, parent_in) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let deliveries = tracing::dispatcher::with_default(&dispatch, || {
        rt.block_on(async {
            let b = start_with_hl7().await;
            // 1. HTTP, continuing the caller's trace.
            let event = ev(
                "obs-http-1",
                "urn:ods:RX1:pas",
                "discharge.admitted",
                NHS,
                "2026-11-20T09:14:00Z",
                json!({"encounter_id": "RX1-ENC-OBS", "site": "RX1CC", "admitted_at": "2026-11-20T09:14:00Z"}),
            );
            let resp = b
                .http
                .post(format!("{}/v1/events", b.base))
                .bearer_auth(token(Role::Admin))
                .header("content-type", "application/cloudevents+json")
                .header("traceparent", format!("00-{trace_in}-{parent_in}-01"))
                .body(event.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
            // 2. HL7, starting a trace.
            let ack = send_hl7(b.rt().hl7_addr.unwrap(), &a01("OBS-CTRL-1")).await;
            assert_eq!(ack, "AA");
            b.caught_up().await;
            // The trace context as stored: the NATS header of every message.
            let mut feed = b.rt().log.feed("observability-test", None, 0).await.unwrap();
            let batch = feed.next_batch(100).await.unwrap();
            batch.deliveries.clone()
        })
    });
    provider.force_flush().unwrap();
    let spans = collector.0.lock().unwrap().clone();

    // No attribute (or span event field) anywhere names a person.
    for s in &spans {
        for kv in &s.attributes {
            let v = kv.value.to_string();
            assert!(
                !v.contains(NHS) && !v.contains(NHS_HL7) && !v.contains("EXAMPLE"),
                "{} = {v} in {}",
                kv.key,
                s.name
            );
        }
        for e in s.events.iter() {
            for kv in &e.attributes {
                let v = kv.value.to_string();
                assert!(
                    !v.contains(NHS) && !v.contains(NHS_HL7),
                    "{} = {v} in an event of {}",
                    kv.key,
                    s.name
                );
            }
        }
    }

    // HTTP server span continues the incoming trace.
    let http = spans
        .iter()
        .find(|s| s.name == "POST /v1/events")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        http.span_context.trace_id(),
        TraceId::from_hex(trace_in).unwrap()
    );
    assert_eq!(http.parent_span_id, SpanId::from_hex(parent_in).unwrap());
    assert_eq!(attr(http, "http.route").as_deref(), Some("/v1/events"));
    assert_eq!(attr(http, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attr(http, "http.response.status_code").as_deref(),
        Some("202")
    );
    assert_eq!(http.span_kind, opentelemetry::trace::SpanKind::Server);

    let publishes: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "publish HANDOVER")
        .collect();
    let http_publish = publishes
        .iter()
        .find(|s| attr(s, "cloudevents.event_id").as_deref() == Some("obs-http-1"))
        .expect("a publish span for the HTTP event");
    assert_eq!(
        http_publish.span_context.trace_id(),
        http.span_context.trace_id()
    );
    assert_eq!(http_publish.parent_span_id, http.span_context.span_id());
    assert_eq!(
        http_publish.span_kind,
        opentelemetry::trace::SpanKind::Producer
    );
    assert_eq!(
        attr(http_publish, "cloudevents.event_type").as_deref(),
        Some("handover.discharge.admitted.v1")
    );
    assert_eq!(
        attr(http_publish, "cloudevents.event_source").as_deref(),
        Some("urn:ods:RX1:pas")
    );
    assert_eq!(
        attr(http_publish, "messaging.system").as_deref(),
        Some("nats")
    );
    let seq: u64 = attr(http_publish, "messaging.nats.stream_sequence")
        .unwrap()
        .parse()
        .unwrap();

    // The message carries the publish span's context, in the header and (as the event had
    // none) in the stored CloudEvent.
    let d = deliveries
        .iter()
        .find(|d| d.sequence == seq)
        .expect("the HTTP event in the stream");
    let expected = format!(
        "00-{}-{}-01",
        http_publish.span_context.trace_id(),
        http_publish.span_context.span_id()
    );
    assert_eq!(d.traceparent.as_deref(), Some(expected.as_str()));
    let stored: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(stored["traceparent"], expected.as_str());

    // The HL7 message starts its own trace; its events' publish spans are children.
    let hl7 = spans
        .iter()
        .find(|s| s.name == "hl7 message")
        .expect("an hl7 message span");
    assert_eq!(
        attr(hl7, "hl7.message.control_id").as_deref(),
        Some("OBS-CTRL-1")
    );
    assert_eq!(attr(hl7, "hl7.message.trigger").as_deref(), Some("A01"));
    assert_eq!(attr(hl7, "hl7.ack.code").as_deref(), Some("AA"));
    assert_eq!(hl7.parent_span_id, SpanId::INVALID);
    assert_ne!(hl7.span_context.trace_id(), http.span_context.trace_id());
    let hl7_publishes: Vec<&&SpanData> = publishes
        .iter()
        .filter(|s| s.span_context.trace_id() == hl7.span_context.trace_id())
        .collect();
    assert!(!hl7_publishes.is_empty());
    for p in &hl7_publishes {
        assert_eq!(p.parent_span_id, hl7.span_context.span_id());
        assert!(attr(p, "cloudevents.event_id")
            .unwrap()
            .starts_with("OBS-CTRL-1"));
    }

    // The projection's span, when the runner creates one with `Delivery::span`, continues
    // the publish span's trace.
    for p in spans.iter().filter(|s| s.name == "process journey") {
        assert!(publishes
            .iter()
            .any(|s| s.span_context.span_id() == p.parent_span_id));
    }
    drop(rt);
}

#[tokio::test]
async fn metrics_after_a_scripted_load() {
    let b = start_with_hl7().await;
    let admitted = |i: usize| {
        ev(
            &format!("obs-m-{i}"),
            "urn:ods:RX1:pas",
            "discharge.admitted",
            NHS,
            "2026-11-20T09:14:00Z",
            json!({"encounter_id": format!("RX1-ENC-M{i}"), "site": "RX1CC", "admitted_at": "2026-11-20T09:14:00Z"}),
        )
    };
    // 3 stored in a batch, 1 duplicate, 1 invalid.
    let r = b
        .post_events(&json!([admitted(1), admitted(2), admitted(3)]))
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(b.post_events(&admitted(1)).await.status(), 202);
    assert_eq!(
        b.post_events(&json!({"specversion": "1.0"})).await.status(),
        400
    );
    assert_eq!(
        send_hl7(b.rt().hl7_addr.unwrap(), &a01("OBS-M-CTRL")).await,
        "AA"
    );
    b.caught_up().await;
    // Journey reads: one found, one not (a different valid NHS number).
    assert_eq!(b.journey(NHS).await.status(), 200);
    assert_eq!(b.journey("9434765870").await.status(), 200);
    assert_eq!(b.journey("4010232137").await.status(), 404);
    let last = b.rt().log.last_sequence().await.unwrap();

    // Wait for a status sample taken after everything was projected.
    let get = || async {
        b.http
            .get(format!("{}/metrics", b.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let t = get().await;
        if metric(&t, "handover_projection_position{projection=\"journey\"}") == Some(last as f64)
            && metric(&t, "handover_stream_last_sequence{stream=\"HANDOVER\"}") == Some(last as f64)
        {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no caught-up status sample:\n{t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // No person identifier anywhere, and routes are templates.
    assert!(!text.contains(NHS) && !text.contains("9434765870") && !text.contains("4010232137"));
    let http = |method: &str, route: &str, status: u16| {
        metric(
            &text,
            &format!("http_server_request_duration_seconds_count{{http_request_method=\"{method}\",http_route=\"{route}\",http_response_status_code=\"{status}\"}}"),
        )
    };
    assert_eq!(http("POST", "/v1/events", 202), Some(2.0));
    assert_eq!(http("POST", "/v1/events", 400), Some(1.0));
    assert_eq!(
        http("GET", "/v1/persons/{nhs_number}/journey", 200),
        Some(2.0)
    );
    assert_eq!(
        http("GET", "/v1/persons/{nhs_number}/journey", 404),
        Some(1.0)
    );
    assert!(text.contains("http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_route=\"/v1/events\",http_response_status_code=\"202\",le=\"+Inf\"} 2\n"));

    // Ingest and publish counters (the HL7 A01 stores a person and an admission).
    assert_eq!(
        metric(&text, "handover_events_ingested_total{result=\"stored\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "handover_events_ingested_total{result=\"duplicate\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "handover_events_ingested_total{result=\"rejected\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "handover_events_published_total{cloudevents_event_type=\"handover.discharge.admitted.v1\",result=\"stored\"}"),
        Some(4.0)
    );
    assert_eq!(
        metric(&text, "handover_events_published_total{cloudevents_event_type=\"handover.discharge.admitted.v1\",result=\"duplicate\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "handover_jetstream_publish_ack_duration_seconds_count"
        ),
        Some(last as f64 + 1.0)
    );
    assert_eq!(
        metric(&text, "handover_hl7_acks_total{code=\"AA\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "handover_hl7_connections_total"), Some(1.0));

    // Streams, consumers and lag.
    assert_eq!(
        metric(&text, "handover_stream_messages{stream=\"HANDOVER\"}"),
        Some(last as f64)
    );
    assert_eq!(
        metric(&text, "handover_stream_replicas{stream=\"HANDOVER\"}"),
        Some(1.0)
    );
    // the projection's consumer is its store's own
    let consumer =
        handover_projections::runner::consumer_name(&b.rt().store.instance_id().await.unwrap());
    assert!(consumer.starts_with("journey-"));
    assert!(text.contains(&format!(
        "handover_consumer_ack_floor_sequence{{stream=\"HANDOVER\",consumer=\"{consumer}\"}}"
    )));
    assert!(
        !text.contains("consumer=\"journey\""),
        "no consumer under the name used before"
    );
    assert_eq!(
        metric(
            &text,
            "handover_projection_pending_messages{projection=\"journey\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "handover_projection_lag_seconds{projection=\"journey\"}"
        ),
        Some(0.0)
    );

    // The integration page shows the same, and integration users land on it.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{}/ui/login", b.base))
        .form(&[("token", token(Role::Integration))])
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .expect("a session cookie");
    let index = client
        .get(format!("{}/ui/", b.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(index.headers()["location"], "/ui/integration");
    let page = client
        .get(format!("{}/ui/integration", b.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Integration status")
            && html.contains("HANDOVER")
            && html.contains("journey"),
        "{html}"
    );

    // `handover status` renders the same sample.
    let st =
        handover::status::sample(&b.rt().log.inspector(), "HANDOVER", &[("journey", last)]).await;
    let out = handover::status::render(&st, &handover::status::readiness(&b.base).await);
    assert!(
        out.contains("HANDOVER/journey") && out.contains("ready (200)"),
        "{out}"
    );
}

/// A batch held up in the projection (here: an erasure-like holder of the tree's write lock
/// for 300 ms) is reported once it is durable, naming the stage that took the time; a
/// batch that was not held up is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_batch_held_up_is_reported_with_the_stage_that_took_the_time() {
    let logs = crate::governance::captured_logs();
    let b = Backbone::start().await;
    let tree = b
        .rt()
        .store
        .tree(handover_projections::journeys::NAME)
        .unwrap();
    let admitted = |i: usize| {
        ev(
            &format!("obs-slow-{i}"),
            "urn:ods:RX1:pas",
            "discharge.admitted",
            NHS,
            "2026-11-20T09:14:00Z",
            json!({"encounter_id": format!("RX1-ENC-S{i}"), "site": "RX1CC", "admitted_at": "2026-11-20T09:14:00Z"}),
        )
    };
    // This test's warnings are the ones carrying its stream sequences' batch sizes; other
    // tests in this binary may warn too, and at most one warning a second is written, so
    // try a few times, a second apart.
    let reported = |from: usize| {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()[from..]).into_owned();
        text.lines()
            .filter(|l| l.contains("a slow projection batch"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["fields"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(b.post_events(&admitted(0)).await.status(), 202);
    b.caught_up().await;
    let mut seen = None;
    for attempt in 1..=4 {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let from = logs.lock().unwrap().len();
        let held = tree.begin_exclusive().await;
        assert_eq!(b.post_events(&admitted(attempt)).await.status(), 202);
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        b.caught_up().await;
        // The warning is written just after the batch's progress is published.
        for _ in 0..20 {
            seen = reported(from)
                .into_iter()
                .find(|f| f["projected_ms"].as_f64().unwrap_or(0.0) >= 250.0);
            if seen.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if seen.is_some() {
            break;
        }
    }
    let f = seen.expect("no slow-batch warning for a batch held up 300 ms");
    let ms = |k: &str| f[k].as_f64().unwrap_or_else(|| panic!("no {k} in {f}"));
    assert_eq!(f["events"], 1, "{f}");
    assert!(ms("projected_ms") < 5_000.0, "{f}");
    // Each stage is measured from the delivery, so they come in order.
    assert!(ms("applied_ms") >= ms("projected_ms"), "{f}");
    assert!(ms("previous_settled_ms") >= ms("applied_ms"), "{f}");
    assert!(ms("durable_ms") >= ms("previous_settled_ms"), "{f}");
    assert!(ms("total_ms") >= ms("durable_ms"), "{f}");
    assert!(
        ms("flush_ms") >= 0.0 && ms("flush_ms") < ms("total_ms"),
        "{f}"
    );

    // Not held up: no warning for this batch (one more second so that one could be written).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let from = logs.lock().unwrap().len();
    assert_eq!(b.post_events(&admitted(9)).await.status(), 202);
    b.caught_up().await;
    // The warning is written after the progress is published: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        reported(from)
            .iter()
            .all(|f| f["projected_ms"].as_f64().unwrap_or(0.0) < 250.0),
        "a batch that was not held up was reported as held up: {:?}",
        reported(from)
    );
}
