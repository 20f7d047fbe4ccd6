//! Feeds a projection from the event log: pull a batch, apply it in one transaction,
//! commit the changes and the stream position in one atomic, flushed sled batch, and only
//! then acknowledge the batch to JetStream.
//!
//! Redelivered messages (at or below the stored position) are skipped, so delivery is
//! at-least-once and the effect exactly-once.

use std::sync::Arc;

use handover_events::Event;
use handover_nats::{EventLog, LogError};
use handover_store::{StoreError, Tree};
use tokio::sync::watch;

use crate::journeys::Journeys;

/// Why a projection stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Largest number of events applied in one transaction.
pub const MAX_BATCH: usize = 1000;

/// Progress of a running projection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Stream position applied and committed.
    pub position: u64,
    /// Messages the consumer still had after the last batch.
    pub pending: u64,
    /// Events that could not be decoded and were skipped.
    pub skipped: u64,
}

/// Runs the journey projection until `shutdown` resolves or an error occurs.
pub async fn run_journeys(
    log: EventLog,
    tree: Tree,
    projection: Journeys,
    progress: Arc<watch::Sender<Progress>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let mut position = tree.position()?;
    let mut skipped = 0;
    progress.send_modify(|p| p.position = position);
    let mut feed = log.feed(crate::journeys::NAME, None, position).await?;
    tokio::pin!(shutdown);
    loop {
        let batch = tokio::select! {
            b = feed.next_batch(MAX_BATCH) => b?,
            _ = &mut shutdown => return Ok(()),
        };
        let mut events = Vec::with_capacity(batch.deliveries.len());
        let mut last = position;
        let mut pending = 0;
        for d in &batch.deliveries {
            pending = d.pending;
            if d.sequence <= position {
                continue;
            }
            last = d.sequence;
            match Event::from_stored(&d.payload) {
                Ok(e) => events.push((d.sequence, d.subject.as_str(), e)),
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(sequence = d.sequence, error = %e, "skipping an event the projection cannot decode");
                }
            }
        }
        if last > position {
            let mut tx = tree.begin();
            projection.apply_batch(&mut tx, &events)?;
            tree.commit(tx, last).await?;
            position = last;
        }
        if let Err(e) = batch.ack().await {
            // Not fatal: a redelivery is skipped by position.
            tracing::warn!(error = %e, "acknowledging a projected batch failed");
        }
        progress.send_replace(Progress {
            position,
            pending,
            skipped,
        });
    }
}
