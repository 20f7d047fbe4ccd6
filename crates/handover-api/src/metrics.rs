//! Prometheus text metrics. Labels never carry identifiers of people.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters and gauges exposed at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Events stored (new).
    pub events_stored: AtomicU64,
    /// Events recognised as duplicates.
    pub events_duplicate: AtomicU64,
    /// Events rejected by validation.
    pub events_rejected: AtomicU64,
    /// Journey reads.
    pub journey_reads: AtomicU64,
    /// Gauges set by the owner of the process, e.g. projection positions: (name, labels, value).
    pub gauges: Mutex<Vec<(String, String, f64)>>,
    /// Further exposition text from other components (e.g. adapters' counters).
    pub sources: Mutex<Vec<Box<dyn Fn() -> String + Send + Sync>>>,
    /// `http_server_request_duration_seconds`, by (method, route template, status).
    pub http: Mutex<std::collections::BTreeMap<(&'static str, String, u16), Histogram>>,
    /// The latest sample of streams, consumers and projection lag (set by the owner of
    /// the process; shown at `/metrics` and on the integration page).
    pub status: Mutex<BackboneStatus>,
}

/// Bucket upper bounds (seconds) of the request-duration histogram: the OpenTelemetry
/// HTTP semantic-conventions advice, with a 1 ms bucket added.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// A fixed-bucket histogram (non-cumulative counts; rendered cumulatively).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Records one observation in seconds.
    pub fn observe(&mut self, secs: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn render(&self, s: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, c) in DURATION_BUCKETS.iter().zip(self.counts) {
            cumulative += c;
            let _ = writeln!(s, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(s, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(s, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(s, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// A sample of the event log and the projections, for `/metrics` and the integration page.
#[derive(Debug, Clone, Default)]
pub struct BackboneStatus {
    /// When it was taken (Unix seconds; 0 = never).
    pub sampled_at: u64,
    /// Why the last sample failed, if it did.
    pub error: Option<String>,
    /// Streams.
    pub streams: Vec<StreamRow>,
    /// Consumers.
    pub consumers: Vec<ConsumerRow>,
    /// Projections.
    pub projections: Vec<ProjectionRow>,
}

/// One JetStream stream.
#[derive(Debug, Clone, Default)]
pub struct StreamRow {
    /// Name.
    pub name: String,
    /// Messages.
    pub messages: u64,
    /// Bytes.
    pub bytes: u64,
    /// Last sequence.
    pub last_sequence: u64,
    /// Replicas.
    pub replicas: usize,
}

/// One JetStream consumer.
#[derive(Debug, Clone, Default)]
pub struct ConsumerRow {
    /// Its stream.
    pub stream: String,
    /// Name.
    pub name: String,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: u64,
    /// Acknowledged up to this stream sequence.
    pub ack_floor: u64,
}

/// One projection's progress.
#[derive(Debug, Clone, Default)]
pub struct ProjectionRow {
    /// Name.
    pub name: String,
    /// Stream position applied.
    pub position: u64,
    /// Messages in the stream after that position.
    pub pending: u64,
    /// Seconds since the oldest message not yet applied was stored (0 when caught up).
    pub lag_seconds: f64,
    /// Events set aside as unprocessable (when the projection reports it).
    pub parked: Option<u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Records one HTTP request. `route` is the matched route template.
    pub fn observe_http(
        &self,
        method: &'static str,
        route: &str,
        status: u16,
        d: std::time::Duration,
    ) {
        if let Ok(mut h) = self.http.lock() {
            h.entry((method, route.to_string(), status))
                .or_default()
                .observe(d.as_secs_f64());
        }
    }

    /// Replaces the backbone status sample.
    pub fn set_status(&self, status: BackboneStatus) {
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }

    /// The latest backbone status sample.
    pub fn status(&self) -> BackboneStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn render_observability(&self, s: &mut String) {
        let name = "http_server_request_duration_seconds";
        let _ = writeln!(s, "# HELP {name} Duration of HTTP server requests.");
        let _ = writeln!(s, "# TYPE {name} histogram");
        if let Ok(h) = self.http.lock() {
            for ((method, route, status), hist) in h.iter() {
                let labels = format!(
                    "http_request_method=\"{method}\",http_route=\"{}\",http_response_status_code=\"{status}\"",
                    route.replace('\\', "\\\\").replace('"', "\\\"")
                );
                hist.render(s, name, &labels);
            }
        }
        let st = self.status();
        if st.sampled_at == 0 {
            return;
        }
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(s, "{name}{{{labels}}} {v}");
            }
        };
        let by_stream = |f: fn(&StreamRow) -> f64| {
            st.streams
                .iter()
                .map(|r| (format!("stream=\"{}\"", r.name), f(r)))
                .collect::<Vec<_>>()
        };
        family(
            "handover_stream_messages",
            "gauge",
            "Messages in the stream.",
            by_stream(|r| r.messages as f64),
        );
        family(
            "handover_stream_bytes",
            "gauge",
            "Bytes in the stream.",
            by_stream(|r| r.bytes as f64),
        );
        family(
            "handover_stream_last_sequence",
            "gauge",
            "Last sequence of the stream.",
            by_stream(|r| r.last_sequence as f64),
        );
        family(
            "handover_stream_replicas",
            "gauge",
            "Configured replicas of the stream.",
            by_stream(|r| r.replicas as f64),
        );
        let by_consumer = |f: fn(&ConsumerRow) -> f64| {
            st.consumers
                .iter()
                .map(|r| {
                    (
                        format!("stream=\"{}\",consumer=\"{}\"", r.stream, r.name),
                        f(r),
                    )
                })
                .collect::<Vec<_>>()
        };
        family(
            "handover_consumer_pending_messages",
            "gauge",
            "Messages not yet delivered to the consumer.",
            by_consumer(|r| r.pending as f64),
        );
        family(
            "handover_consumer_ack_pending_messages",
            "gauge",
            "Messages delivered and not yet acknowledged.",
            by_consumer(|r| r.ack_pending as f64),
        );
        family(
            "handover_consumer_ack_floor_sequence",
            "gauge",
            "Stream sequence acknowledged up to.",
            by_consumer(|r| r.ack_floor as f64),
        );
        let by_projection = |f: fn(&ProjectionRow) -> Option<f64>| {
            st.projections
                .iter()
                .filter_map(|r| f(r).map(|v| (format!("projection=\"{}\"", r.name), v)))
                .collect::<Vec<_>>()
        };
        family(
            "handover_projection_position",
            "gauge",
            "Stream position the projection has applied.",
            by_projection(|r| Some(r.position as f64)),
        );
        family(
            "handover_projection_pending_messages",
            "gauge",
            "Messages in the stream after the projection's position.",
            by_projection(|r| Some(r.pending as f64)),
        );
        family(
            "handover_projection_lag_seconds",
            "gauge",
            "Age of the oldest message the projection has not applied (0 when caught up).",
            by_projection(|r| Some(r.lag_seconds)),
        );
        family(
            "handover_projection_parked_events",
            "gauge",
            "Events the projection set aside as unprocessable.",
            by_projection(|r| r.parked.map(|p| p as f64)),
        );
    }

    /// Records the result of a publish.
    pub fn record_stored(&self, new: usize, duplicates: usize) {
        self.events_stored.fetch_add(new as u64, Ordering::Relaxed);
        self.events_duplicate
            .fetch_add(duplicates as u64, Ordering::Relaxed);
    }

    /// Sets a gauge (replacing any with the same name and labels).
    pub fn set_gauge(&self, name: &str, labels: &str, value: f64) {
        if let Ok(mut g) = self.gauges.lock() {
            match g.iter_mut().find(|(n, l, _)| n == name && l == labels) {
                Some(entry) => entry.2 = value,
                None => g.push((name.to_string(), labels.to_string(), value)),
            }
        }
    }

    /// Adds a component's own exposition text to `/metrics`.
    pub fn add_source(&self, f: impl Fn() -> String + Send + Sync + 'static) {
        if let Ok(mut s) = self.sources.lock() {
            s.push(Box::new(f));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP handover_events_ingested_total Events received by ingest, by result."
        );
        let _ = writeln!(s, "# TYPE handover_events_ingested_total counter");
        for (result, v) in [
            ("stored", &self.events_stored),
            ("duplicate", &self.events_duplicate),
            ("rejected", &self.events_rejected),
        ] {
            let _ = writeln!(
                s,
                "handover_events_ingested_total{{result=\"{result}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP handover_journey_reads_total Journeys read through the API."
        );
        let _ = writeln!(s, "# TYPE handover_journey_reads_total counter");
        let _ = writeln!(
            s,
            "handover_journey_reads_total {}",
            self.journey_reads.load(Ordering::Relaxed)
        );
        self.render_observability(&mut s);
        if let Ok(sources) = self.sources.lock() {
            for source in sources.iter() {
                s.push_str(&source());
            }
        }
        if let Ok(g) = self.gauges.lock() {
            let mut last = "";
            for (name, labels, v) in g.iter() {
                if name != last {
                    let _ = writeln!(s, "# TYPE {name} gauge");
                    last = name;
                }
                if labels.is_empty() {
                    let _ = writeln!(s, "{name} {v}");
                } else {
                    let _ = writeln!(s, "{name}{{{labels}}} {v}");
                }
            }
        }
        s
    }
}
