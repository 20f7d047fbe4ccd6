//! `handover status`: the event log's streams and consumers, each projection's lag and the
//! running API's readiness, as a readable table. Read-only: it never creates or changes a
//! stream, and reads projection positions from the consumers' acknowledgement floors (the
//! running process owns the read-model store).
//!
//! [`sample`] is also what the runtime runs every second for `/metrics` and the
//! integration page (there with the projection's own committed position).

use std::fmt::Write;
use std::time::Duration;

use handover_api::metrics::{BackboneStatus, ConsumerRow, ProjectionRow, StreamRow};
use handover_nats::Inspector;

use crate::config::{Config, DEFAULT_NATS_URL};

/// Takes a status sample: every stream and consumer, and for each `(projection, position)`
/// its pending messages and seconds behind on `stream`. Streams whose name contains
/// `PARKED` count as the parked events of the projections.
pub async fn sample(
    inspector: &Inspector,
    stream: &str,
    projections: &[(&str, u64)],
) -> BackboneStatus {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    let mut out = BackboneStatus {
        sampled_at: now,
        ..Default::default()
    };
    let log = match inspector.status().await {
        Ok(s) => s,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let parked: Option<u64> = {
        let p: Vec<u64> = log
            .streams
            .iter()
            .filter(|s| s.name.to_ascii_uppercase().contains("PARKED"))
            .map(|s| s.messages)
            .collect();
        (!p.is_empty()).then(|| p.iter().sum())
    };
    out.streams = log
        .streams
        .iter()
        .map(|s| StreamRow {
            name: s.name.clone(),
            messages: s.messages,
            bytes: s.bytes,
            last_sequence: s.last_sequence,
            replicas: s.replicas,
        })
        .collect();
    out.consumers = log
        .consumers
        .iter()
        .map(|c| ConsumerRow {
            stream: c.stream.clone(),
            name: c.name.clone(),
            pending: c.pending,
            ack_pending: c.ack_pending,
            ack_floor: c.ack_floor,
        })
        .collect();
    for (name, position) in projections {
        let (pending, lag_seconds) = match inspector.lag(stream, *position).await {
            Ok(l) => l,
            Err(e) => {
                out.error = Some(e.to_string());
                (0, 0.0)
            }
        };
        out.projections.push(ProjectionRow {
            name: name.to_string(),
            position: *position,
            pending,
            lag_seconds,
            parked,
        });
    }
    out
}

/// The status as text tables, with the API's readiness line.
pub fn render(status: &BackboneStatus, readiness: &str) -> String {
    let mut s = String::new();
    let table = |s: &mut String, title: &str, head: &[&str], rows: Vec<Vec<String>>| {
        let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let _ = writeln!(s, "{title}");
        let line = |s: &mut String, cells: &[String]| {
            let mut l = String::from(" ");
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                // First column left-aligned, numbers right-aligned.
                if i == 0 {
                    let _ = write!(l, " {c:<w$}");
                } else {
                    let _ = write!(l, "  {c:>w$}");
                }
            }
            let _ = writeln!(s, "{}", l.trim_end());
        };
        line(s, &head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        if rows.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for r in &rows {
            line(s, r);
        }
        let _ = writeln!(s);
    };
    table(
        &mut s,
        "Streams",
        &["name", "messages", "bytes", "last seq", "replicas"],
        status
            .streams
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.messages.to_string(),
                    r.bytes.to_string(),
                    r.last_sequence.to_string(),
                    r.replicas.to_string(),
                ]
            })
            .collect(),
    );
    table(
        &mut s,
        "Consumers",
        &["stream/consumer", "pending", "awaiting ack", "ack floor"],
        status
            .consumers
            .iter()
            .map(|r| {
                vec![
                    format!("{}/{}", r.stream, r.name),
                    r.pending.to_string(),
                    r.ack_pending.to_string(),
                    r.ack_floor.to_string(),
                ]
            })
            .collect(),
    );
    table(
        &mut s,
        "Projections",
        &["name", "position", "pending", "seconds behind", "parked"],
        status
            .projections
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.position.to_string(),
                    r.pending.to_string(),
                    format!("{:.1}", r.lag_seconds),
                    r.parked
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "n/a".into()),
                ]
            })
            .collect(),
    );
    if let Some(e) = &status.error {
        let _ = writeln!(s, "Problem reading status: {e}\n");
    }
    let _ = writeln!(s, "API: {readiness}");
    s
}

/// `handover status`: prints the tables; `api_url` defaults to the configured listen address.
pub async fn run(cfg: &Config, api_url: Option<String>) -> anyhow::Result<()> {
    let url = cfg
        .nats
        .url
        .clone()
        .unwrap_or_else(|| DEFAULT_NATS_URL.to_string());
    let inspector = Inspector::connect(&url, &cfg.nats_auth()?).await?;
    let stream = cfg.nats.stream.as_str();
    // Projections are the durable consumers of the event stream; their ack floor is the
    // position they have committed and acknowledged.
    let first = sample(&inspector, stream, &[]).await;
    let projections: Vec<(&str, u64)> = first
        .consumers
        .iter()
        .filter(|c| c.stream == stream)
        .map(|c| (c.name.as_str(), c.ack_floor))
        .collect();
    let status = sample(&inspector, stream, &projections).await;
    let api = api_url.unwrap_or_else(|| format!("http://{}", cfg.api.listen));
    print!("{}", render(&status, &readiness(&api).await));
    Ok(())
}

/// `GET {api}/readyz`, summarised in one line.
pub async fn readiness(api: &str) -> String {
    let api = api.trim_end_matches('/');
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => return format!("{api}: {e}"),
    };
    match client.get(format!("{api}/readyz")).send().await {
        Ok(r) => {
            let code = r.status();
            let body = r.text().await.unwrap_or_default();
            format!("{api} {} ({})", body.trim(), code.as_u16())
        }
        Err(e) => format!("{api} unreachable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_tables() {
        let st = BackboneStatus {
            sampled_at: 1,
            error: None,
            streams: vec![StreamRow {
                name: "HANDOVER".into(),
                messages: 12,
                bytes: 3456,
                last_sequence: 12,
                replicas: 1,
            }],
            consumers: vec![ConsumerRow {
                stream: "HANDOVER".into(),
                name: "journey".into(),
                pending: 0,
                ack_pending: 0,
                ack_floor: 12,
            }],
            projections: vec![ProjectionRow {
                name: "journey".into(),
                position: 12,
                pending: 0,
                lag_seconds: 0.0,
                parked: None,
            }],
        };
        expect_test::expect![[r#"
            Streams
              name      messages  bytes  last seq  replicas
              HANDOVER        12   3456        12         1

            Consumers
              stream/consumer   pending  awaiting ack  ack floor
              HANDOVER/journey        0             0         12

            Projections
              name     position  pending  seconds behind  parked
              journey        12        0             0.0     n/a

            API: http://127.0.0.1:8080 ready (200)
        "#]]
        .assert_eq(&render(&st, "http://127.0.0.1:8080 ready (200)"));
    }
}
