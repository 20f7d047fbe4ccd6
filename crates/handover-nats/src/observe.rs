//! Observability of the event log: W3C trace context for NATS headers and CloudEvents,
//! publish counters and the JetStream publish-ack latency histogram, and read-only
//! stream/consumer status for `handover status`, `/metrics` and the integration page.
//!
//! Nothing here carries an identifier of a person: labels are event types, stream and
//! consumer names; span attributes are event id, type, source and stream sequence.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use futures::StreamExt;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use crate::LogError;

/// Parses a W3C `traceparent` (version `00`) into a remote span context; `None` when it is
/// malformed or all-zero.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & 1),
        true,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

/// The W3C `traceparent` of a span context (`None` when it is not valid).
pub fn format_traceparent(cx: &SpanContext) -> Option<String> {
    cx.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            cx.trace_id(),
            cx.span_id(),
            cx.trace_flags().to_u8() & 1
        )
    })
}

/// The `traceparent` of a tracing span, when an OpenTelemetry layer is installed.
pub fn span_traceparent(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    format_traceparent(span.context().span().span_context())
}

/// Makes `span` continue the trace of `traceparent` (only before the span is first entered).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) -> bool {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    match parse_traceparent(traceparent) {
        Some(cx) => span
            .set_parent(opentelemetry::Context::new().with_remote_span_context(cx))
            .is_ok(),
        None => false,
    }
}

/// Bucket upper bounds (seconds) of the latency histograms: the OpenTelemetry defaults for
/// durations, with finer steps below 5 ms where JetStream acks live.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Publish counters and the ack-latency histogram of one [`crate::EventLog`] (shared by
/// its clones).
#[derive(Debug, Default)]
pub struct PublishMetrics {
    by_type: Mutex<BTreeMap<(&'static str, bool), u64>>,
    ack: Mutex<Histogram>,
    failures: std::sync::atomic::AtomicU64,
}

impl PublishMetrics {
    pub(crate) fn stored(&self, event_type: &'static str, duplicate: bool) {
        if let Ok(mut m) = self.by_type.lock() {
            *m.entry((event_type, duplicate)).or_insert(0) += 1;
        }
    }

    pub(crate) fn ack_latency(&self, d: Duration) {
        if let Ok(mut h) = self.ack.lock() {
            h.observe(d.as_secs_f64());
        }
    }

    pub(crate) fn failed(&self) {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render_prometheus(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP handover_events_published_total Events acknowledged by JetStream, by CloudEvents type and result.\n# TYPE handover_events_published_total counter"
        );
        if let Ok(m) = self.by_type.lock() {
            for ((ty, dup), v) in m.iter() {
                let result = if *dup { "duplicate" } else { "stored" };
                let _ = writeln!(
                    s,
                    "handover_events_published_total{{cloudevents_event_type=\"{ty}\",result=\"{result}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP handover_jetstream_publish_failures_total Publish calls that failed (nothing acknowledged to the sender).\n# TYPE handover_jetstream_publish_failures_total counter\nhandover_jetstream_publish_failures_total {}",
            self.failures.load(std::sync::atomic::Ordering::Relaxed)
        );
        let h = self.ack.lock().map(|h| h.clone()).unwrap_or_default();
        let name = "handover_jetstream_publish_ack_duration_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Time from sending an event to its JetStream publish acknowledgement.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (b, c) in LATENCY_BUCKETS.iter().zip(h.counts) {
            cumulative += c;
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(s, "{name}_sum {}", h.sum);
        let _ = writeln!(s, "{name}_count {}", h.count);
        s
    }
}

/// One stream, as `handover status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStatus {
    /// Stream name.
    pub name: String,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First sequence held.
    pub first_sequence: u64,
    /// Last sequence stored.
    pub last_sequence: u64,
    /// Configured replicas.
    pub replicas: usize,
}

/// One consumer of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// The stream it reads.
    pub stream: String,
    /// Consumer name.
    pub name: String,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// Stream sequence below which everything is acknowledged.
    pub ack_floor: u64,
    /// Last stream sequence delivered.
    pub delivered: u64,
}

/// Streams and their consumers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStatus {
    /// Every stream of the account.
    pub streams: Vec<StreamStatus>,
    /// Every consumer of those streams.
    pub consumers: Vec<ConsumerStatus>,
}

/// Read-only access to JetStream state: never creates or changes a stream.
#[derive(Clone)]
pub struct Inspector {
    js: jetstream::Context,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inspector")
    }
}

impl Inspector {
    /// Connects for reading status only.
    pub async fn connect(url: &str, auth: &crate::NatsAuth) -> Result<Inspector, LogError> {
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let client = auth
            .options()
            .name("handover-status")
            .connection_timeout(Duration::from_secs(5))
            .connect(urls.as_slice())
            .await
            .map_err(|source| LogError::Connect {
                url: crate::redact_url(url),
                source,
            })?;
        Ok(Inspector {
            js: jetstream::new(client),
        })
    }

    pub(crate) fn from_context(js: jetstream::Context) -> Inspector {
        Inspector { js }
    }

    /// Every stream and consumer, streams by name.
    pub async fn status(&self) -> Result<LogStatus, LogError> {
        let err = |stream: &str, e: String| LogError::Stream {
            stream: stream.to_string(),
            message: e,
        };
        let mut out = LogStatus::default();
        let mut names = self.js.stream_names();
        let mut list = Vec::new();
        while let Some(n) = names.next().await {
            list.push(n.map_err(|e| err("*", e.to_string()))?);
        }
        list.sort();
        for name in list {
            let stream = match self.js.get_stream(&name).await {
                Ok(s) => s,
                // Deleted meanwhile.
                Err(_) => continue,
            };
            let info = stream.cached_info();
            out.streams.push(StreamStatus {
                name: name.clone(),
                messages: info.state.messages,
                bytes: info.state.bytes,
                first_sequence: info.state.first_sequence,
                last_sequence: info.state.last_sequence,
                replicas: info.config.num_replicas,
            });
            let mut consumers = stream.consumers();
            let mut rows = Vec::new();
            while let Some(c) = consumers.next().await {
                let c = c.map_err(|e| err(&name, e.to_string()))?;
                rows.push(ConsumerStatus {
                    stream: name.clone(),
                    name: c.name.clone(),
                    pending: c.num_pending,
                    ack_pending: c.num_ack_pending as u64,
                    ack_floor: c.ack_floor.stream_sequence,
                    delivered: c.delivered.stream_sequence,
                });
            }
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            out.consumers.extend(rows);
        }
        Ok(out)
    }

    /// When the message at `sequence` of `stream` was stored (`None` if it is gone).
    pub async fn stored_at(&self, stream: &str, sequence: u64) -> Option<SystemTime> {
        let s = self.js.get_stream_no_info(stream).await.ok()?;
        let m = s.get_raw_message(sequence).await.ok()?;
        Some(SystemTime::from(m.time))
    }

    /// How far behind a reader at `position` is: `(pending messages, seconds since the
    /// oldest message it has not applied was stored)`; `(0, 0.0)` when caught up.
    pub async fn lag(&self, stream: &str, position: u64) -> Result<(u64, f64), LogError> {
        let mut s = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| LogError::Stream {
                stream: stream.to_string(),
                message: e.to_string(),
            })?;
        let state = s
            .info()
            .await
            .map_err(|e| LogError::Stream {
                stream: stream.to_string(),
                message: e.to_string(),
            })?
            .state
            .clone();
        if position >= state.last_sequence {
            return Ok((0, 0.0));
        }
        let next = (position + 1).max(state.first_sequence);
        let pending = state.last_sequence - position;
        let secs = match self.stored_at(stream, next).await {
            Some(t) => SystemTime::now()
                .duration_since(t)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            None => 0.0,
        };
        Ok((pending, secs))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_junk() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(tp).unwrap();
        assert!(cx.is_remote() && cx.is_sampled());
        assert_eq!(format_traceparent(&cx).as_deref(), Some(tp));
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn publish_metrics_render_a_histogram() {
        let m = PublishMetrics::default();
        m.stored("handover.discharge.admitted.v1", false);
        m.stored("handover.discharge.admitted.v1", true);
        m.ack_latency(Duration::from_millis(2));
        let text = m.render_prometheus();
        assert!(text.contains("handover_events_published_total{cloudevents_event_type=\"handover.discharge.admitted.v1\",result=\"stored\"} 1\n"));
        assert!(text
            .contains("handover_jetstream_publish_ack_duration_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text
            .contains("handover_jetstream_publish_ack_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("handover_jetstream_publish_ack_duration_seconds_count 1\n"));
    }
}
