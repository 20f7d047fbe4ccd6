//! Operator commands: `handover parked list|replay SEQ|discard SEQ` (straight to NATS) and
//! `handover rebuild [PROJECTION]` (through the running server's admin API, since the
//! read-model store belongs to that process), and the `/metrics` lines for both.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context};
use handover_nats::{EventLog, ParkedLog};
use handover_projections::{ParkedRecord, Progress, RebuildState, RebuildStatus};

use crate::config::{Config, DEFAULT_NATS_URL};

/// `/metrics` lines for parked events and the rebuild in progress. Labels never carry
/// identifiers.
pub fn render_metrics(progress: &Progress, rebuild: &RebuildStatus) -> String {
    let mut s = String::new();
    let p = &rebuild.projection;
    let _ = writeln!(
        s,
        "# HELP handover_projection_parked_total Events a projection could not apply and parked in the dead-letter stream (since start).\n# TYPE handover_projection_parked_total counter\nhandover_projection_parked_total{{projection=\"journey\"}} {}",
        progress.parked
    );
    let _ = writeln!(
        s,
        "# HELP handover_rebuild_running 1 while a rebuild replays into a shadow tree.\n# TYPE handover_rebuild_running gauge\nhandover_rebuild_running{{projection=\"{p}\"}} {}",
        u8::from(rebuild.state == RebuildState::Running)
    );
    let _ = writeln!(
        s,
        "# HELP handover_rebuild_position Stream position the current or last rebuild has applied.\n# TYPE handover_rebuild_position gauge\nhandover_rebuild_position{{projection=\"{p}\"}} {}",
        rebuild.position
    );
    let _ = writeln!(
        s,
        "# HELP handover_rebuild_target The stream's last sequence as the rebuild last saw it.\n# TYPE handover_rebuild_target gauge\nhandover_rebuild_target{{projection=\"{p}\"}} {}",
        rebuild.target
    );
    s
}

/// Connects to the event log as configured (for commands that run beside the server).
pub async fn connect_log(cfg: &Config) -> anyhow::Result<EventLog> {
    let url = cfg
        .nats
        .url
        .clone()
        .unwrap_or_else(|| DEFAULT_NATS_URL.to_string());
    let key = match cfg.pseudonym_key() {
        Ok(k) => k,
        Err(_) if std::path::Path::new(".handover/pseudonym.key").exists() => {
            let mut c = cfg.clone();
            c.pseudonym.key_file = Some(".handover/pseudonym.key".into());
            c.pseudonym_key()?
        }
        Err(e) => return Err(e),
    };
    Ok(EventLog::connect(
        &url,
        handover_nats::LogConfig {
            auth: cfg.nats_auth()?,
            ..cfg.log_config()
        },
        key,
    )
    .await?)
}

/// One parked event as `parked list` shows it: no identifiers, no payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedSummary {
    /// Sequence in the parked stream.
    pub parked_seq: u64,
    /// The projection that parked it.
    pub projection: String,
    /// Its sequence in the care stream (what `replay` and `discard` take).
    pub seq: u64,
    /// `decode` or `apply`.
    pub kind: String,
    /// Why (redacted when parked).
    pub error: String,
    /// When it was parked.
    pub parked_at: String,
}

/// Every parked record, with its parked-stream sequence.
pub async fn parked_records(parked: &ParkedLog) -> anyhow::Result<Vec<(u64, ParkedRecord)>> {
    let mut out = Vec::new();
    for m in parked.list().await? {
        match serde_json::from_slice::<ParkedRecord>(&m.payload) {
            Ok(r) => out.push((m.sequence, r)),
            Err(e) => {
                tracing::warn!(sequence = m.sequence, error = %e, "unreadable parking record")
            }
        }
    }
    Ok(out)
}

/// What `parked list` shows.
pub async fn parked_list(parked: &ParkedLog) -> anyhow::Result<Vec<ParkedSummary>> {
    Ok(parked_records(parked)
        .await?
        .into_iter()
        .map(|(parked_seq, r)| ParkedSummary {
            parked_seq,
            projection: r.projection,
            seq: r.sequence,
            kind: r.kind,
            error: r.error,
            parked_at: r.parked_at,
        })
        .collect())
}

/// The `parked list` table.
pub fn render_parked(rows: &[ParkedSummary]) -> String {
    if rows.is_empty() {
        return "no parked events\n".into();
    }
    let mut s = String::from("PROJECTION  SEQ        KIND    PARKED AT             ERROR\n");
    for r in rows {
        let mut error = r.error.replace(['\n', '\r'], " ");
        if error.chars().count() > 120 {
            error = error.chars().take(119).collect::<String>() + "…";
        }
        let _ = writeln!(
            s,
            "{:<11} {:<10} {:<7} {:<21} {}",
            r.projection, r.seq, r.kind, r.parked_at, error
        );
    }
    s
}

/// Re-publishes the parked event(s) at care-stream sequence `seq` to their original subject
/// (a new message with the same `source`+`id`, so the projection applies it again — it was
/// never applied, so its duplicate check does not drop it), then removes them from the parked
/// stream. Returns how many were replayed.
pub async fn parked_replay(log: &EventLog, parked: &ParkedLog, seq: u64) -> anyhow::Result<usize> {
    let mut n = 0;
    for (parked_seq, r) in parked_records(parked).await? {
        if r.sequence != seq {
            continue;
        }
        let original = r
            .original()
            .context("the parking record holds no original message")?;
        let msg_id = format!("replay.{}.{}.{parked_seq}", r.projection, r.sequence);
        let new_seq = log.publish_raw(&r.subject, original, Some(&msg_id)).await?;
        parked.delete(parked_seq).await?;
        tracing::info!(seq, new_seq, "parked event replayed");
        n += 1;
    }
    Ok(n)
}

/// Deletes the parked event(s) at care-stream sequence `seq`. Returns how many.
pub async fn parked_discard(parked: &ParkedLog, seq: u64) -> anyhow::Result<usize> {
    let mut n = 0;
    for (parked_seq, r) in parked_records(parked).await? {
        if r.sequence == seq && parked.delete(parked_seq).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// What `handover parked` was asked to do.
#[derive(Debug, Clone)]
pub enum ParkedCommand {
    /// List.
    List,
    /// Replay one.
    Replay(u64),
    /// Discard one.
    Discard(u64),
}

/// `handover parked ...`.
pub async fn parked_main(cfg: &Config, cmd: ParkedCommand) -> anyhow::Result<()> {
    let log = connect_log(cfg).await?;
    let parked = log.parked_log().await?;
    match cmd {
        ParkedCommand::List => print!("{}", render_parked(&parked_list(&parked).await?)),
        ParkedCommand::Replay(seq) => match parked_replay(&log, &parked, seq).await? {
            0 => bail!("no parked event at sequence {seq}"),
            n => println!("replayed {n} parked event(s) at sequence {seq}"),
        },
        ParkedCommand::Discard(seq) => match parked_discard(&parked, seq).await? {
            0 => bail!("no parked event at sequence {seq}"),
            n => println!("discarded {n} parked event(s) at sequence {seq}"),
        },
    }
    Ok(())
}

/// One line of rebuild progress.
pub fn render_progress(s: &RebuildStatus) -> String {
    let pct = if s.target > 0 {
        (s.position as f64 * 100.0 / s.target as f64).min(100.0)
    } else {
        100.0
    };
    let eta = match (s.state, s.eta_secs) {
        (RebuildState::Done, _) => "done".to_string(),
        (_, Some(e)) => format!("ETA {:.0}s", e.ceil()),
        (_, None) => "ETA unknown".to_string(),
    };
    format!(
        "{}: {} / {} events ({pct:.0}%), {:.0} events/s, {eta}, {} parked",
        s.projection, s.position, s.target, s.events_per_sec, s.parked
    )
}

/// `handover rebuild [PROJECTION]`: asks the running server at `api_url` to rebuild, then
/// shows progress until it is swapped in.
pub async fn rebuild_main(api_url: &str, token: &str, projection: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!(
        "{}/v1/admin/rebuild/{projection}",
        api_url.trim_end_matches('/')
    );
    let resp = http
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {api_url}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.as_u16() == 409 {
        eprintln!("a rebuild is already running; following it");
    } else if !status.is_success() {
        bail!("the server refused the rebuild ({status}): {body}");
    }
    let tty = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let resp = http.get(&url).bearer_auth(token).send().await?;
        if !resp.status().is_success() {
            bail!("reading rebuild progress failed: {}", resp.status());
        }
        let s: RebuildStatus = serde_json::from_str(&resp.text().await?)?;
        let line = render_progress(&s);
        let finished = matches!(s.state, RebuildState::Done | RebuildState::Failed);
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else if finished || last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!("{line}");
            last_line = std::time::Instant::now();
        }
        match s.state {
            RebuildState::Done => {
                if tty {
                    eprintln!();
                }
                println!(
                    "rebuilt {} to position {} in {:.1}s and swapped it in",
                    s.projection, s.position, s.elapsed_secs
                );
                return Ok(());
            }
            RebuildState::Failed => {
                if tty {
                    eprintln!();
                }
                bail!(
                    "the rebuild failed (the live read model is unchanged): {}",
                    s.error.unwrap_or_default()
                );
            }
            _ => {}
        }
    }
}

/// `handover erase NHS --reason …`: asks the running server to erase a person and prints
/// what was removed.
pub async fn erase_main(
    api_url: &str,
    token: &str,
    nhs_number: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let url = format!(
        "{}/v1/admin/persons/{}/erasure",
        api_url.trim_end_matches('/'),
        nhs_number.trim()
    );
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "reason": reason }))
        .send()
        .await
        .with_context(|| format!("cannot reach {api_url}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "erasure refused ({status}): {}",
            body["detail"].as_str().unwrap_or("no detail")
        );
    }
    println!(
        "Erased: {} events purged from the log, {} read-model entries removed, {} person keys.",
        body["events_purged"], body["read_model_entries_removed"], body["person_keys"]
    );
    println!("The erasure is recorded in the access audit with its reason.");
    Ok(())
}
