//! `handover publish FILE`: CloudEvents from a JSON file (one event or an array) or a JSON
//! Lines file, validated in full before anything is published.

use std::path::Path;

use anyhow::Context;
use handover_events::Event;
use handover_nats::EventLog;

/// Reads and validates every event of a file. Errors name the line (JSON Lines) or the
/// index (JSON array) and every bad field.
pub fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let trimmed = text.trim_start();
    let mut items: Vec<(String, serde_json::Value)> = Vec::new();
    if trimmed.starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(trimmed)
            .with_context(|| format!("{} is not a JSON array", path.display()))?;
        items.extend(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("event {i}"), v)),
        );
    } else {
        // One JSON document, or JSON Lines.
        match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(v) => items.push(("event 0".into(), v)),
            Err(_) => {
                for (n, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let v = serde_json::from_str(line)
                        .with_context(|| format!("{}:{}: not valid JSON", path.display(), n + 1))?;
                    items.push((format!("line {}", n + 1), v));
                }
            }
        }
    }
    let mut events = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (where_, v) in items {
        match Event::from_json(v) {
            Ok(e) => events.push(e),
            Err(errs) => {
                for e in errs.0 {
                    problems.push(format!(
                        "{}: {where_}: {} {}",
                        path.display(),
                        e.pointer,
                        e.message
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "nothing was published; fix these first:\n{}",
            problems.join("\n")
        );
    }
    Ok(events)
}

/// Publishes events in chunks; returns (stored, duplicates).
pub async fn publish_all(log: &EventLog, events: &[Event]) -> anyhow::Result<(usize, usize)> {
    let mut stored = 0;
    let mut dups = 0;
    for chunk in events.chunks(500) {
        let acks = log.publish(chunk).await?;
        dups += acks.iter().filter(|a| a.duplicate).count();
        stored += acks.iter().filter(|a| !a.duplicate).count();
    }
    Ok((stored, dups))
}
