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
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
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
