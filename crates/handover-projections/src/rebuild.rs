//! Zero-downtime rebuild of the journey projection.
//!
//! A rebuild replays the whole stream, through its own durable consumer
//! (`journey-rebuild`), into a shadow tree (`journey@<n>`) while the live tree keeps
//! serving and the live runner keeps projecting into it. Once the shadow has applied
//! everything the stream held when it last looked (it looks again after each pass, so events
//! that arrived during the rebuild are caught up too), it is stamped with
//! [`JOURNEY_VERSION`] and promoted: every reader's handle resolves to it from its next read,
//! and the live runner resumes from the shadow's position (see [`crate::runner`]). Poison
//! events are parked as by the runner (parking the same event again is a duplicate).
//!
//! One rebuild runs at a time, inside the running server (sled allows one process per
//! store): [`Rebuilds::request`] queues one, [`Rebuilds::run`] is the task that performs them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use handover_nats::{EventLog, LogError};
use handover_store::{Store, StoreError, Tree};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::journeys::{Journeys, JOURNEY_VERSION, NAME};
use crate::runner::{flushed, park, project_batch, spawn_flush, RunError, MAX_BATCH};

/// The durable consumer a rebuild reads through, for the store with id `store_id` (as
/// [`crate::runner::consumer_name`], one per store).
pub fn rebuild_consumer_name(store_id: &str) -> String {
    format!("{NAME}-rebuild-{store_id}")
}

/// What a rebuild is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebuildState {
    /// None has run since start-up.
    #[default]
    Idle,
    /// Replaying into the shadow tree.
    Running,
    /// The last rebuild was swapped in.
    Done,
    /// The last rebuild failed; the live tree is unchanged.
    Failed,
}

/// A rebuild's progress, as the admin API and the CLI show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebuildStatus {
    /// The projection.
    pub projection: String,
    /// State.
    pub state: RebuildState,
    /// Why it runs: `requested` or `version <old> -> <new>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The shadow tree being filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// Stream position applied to the shadow.
    pub position: u64,
    /// The stream's last sequence when last looked at.
    pub target: u64,
    /// Events parked during this rebuild.
    pub parked: u64,
    /// Seconds since it started.
    pub elapsed_secs: f64,
    /// Stream positions applied per second.
    pub events_per_sec: f64,
    /// Estimated seconds to go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<f64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Rebuilds completed since start-up.
    pub completed: u64,
}

/// Why a rebuild was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildRefused {
    /// No such projection.
    #[error("no projection named {0:?}; the projections are: journey")]
    UnknownProjection(String),
    /// One is already running.
    #[error("a rebuild of {0} is already running")]
    Running(String),
}

/// The rebuild queue and status of a running server.
pub struct Rebuilds {
    status: watch::Sender<RebuildStatus>,
    /// Held exclusively by a rebuild for its whole run and, shared, by each erasure for
    /// its own (see [`Rebuilds::hold_for_erasure`]).
    gate: Arc<tokio::sync::RwLock<()>>,
    requests: mpsc::Sender<String>,
    queue: std::sync::Mutex<Option<mpsc::Receiver<String>>>,
}

impl std::fmt::Debug for Rebuilds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuilds").finish_non_exhaustive()
    }
}

impl Default for Rebuilds {
    fn default() -> Self {
        let (requests, rx) = mpsc::channel(1);
        Rebuilds {
            status: watch::channel(RebuildStatus {
                projection: NAME.into(),
                ..RebuildStatus::default()
            })
            .0,
            requests,
            gate: Arc::default(),
            queue: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl Rebuilds {
    /// The current (or last) rebuild's status.
    pub fn status(&self) -> RebuildStatus {
        self.status.borrow().clone()
    }

    /// Follows the status.
    pub fn subscribe(&self) -> watch::Receiver<RebuildStatus> {
        self.status.subscribe()
    }

    /// Queues a rebuild of `projection`; refused when one is running.
    pub fn request(&self, projection: &str, reason: &str) -> Result<RebuildStatus, RebuildRefused> {
        if projection != NAME {
            return Err(RebuildRefused::UnknownProjection(projection.to_string()));
        }
        let started = self.status.send_if_modified(|s| {
            if s.state == RebuildState::Running {
                return false;
            }
            *s = RebuildStatus {
                projection: NAME.into(),
                state: RebuildState::Running,
                reason: Some(reason.to_string()),
                completed: s.completed,
                ..RebuildStatus::default()
            };
            true
        });
        if !started || self.requests.try_send(reason.to_string()).is_err() {
            return Err(RebuildRefused::Running(NAME.into()));
        }
        Ok(self.status())
    }

    /// Keeps rebuilds from starting until the returned guard is dropped; refused while one
    /// runs. An erasure holds it from before it purges the person's events from the log
    /// until their read-model entries are removed: a rebuild running meanwhile could have
    /// replayed those events into its shadow before the purge and then swapped the shadow
    /// in, bringing the person back. A rebuild requested meanwhile starts once the guard is
    /// dropped; erasures do not keep each other out.
    pub fn hold_for_erasure(
        &self,
    ) -> Result<tokio::sync::OwnedRwLockReadGuard<()>, RebuildRefused> {
        self.gate
            .clone()
            .try_read_owned()
            .map_err(|_| RebuildRefused::Running(NAME.into()))
    }

    /// The version a tree was written by, when it is not [`JOURNEY_VERSION`] and the tree is
    /// not empty (a tree without a stored version is version 1).
    pub fn outdated(tree: &Tree) -> Result<Option<u32>, StoreError> {
        let version = tree.version()?.unwrap_or(1);
        Ok((tree.position()? > 0 && version != JOURNEY_VERSION).then_some(version))
    }

    /// Performs queued rebuilds until `stop` resolves (a rebuild in progress is abandoned;
    /// its shadow tree is dropped by the next one). Call once.
    pub async fn run(
        &self,
        log: EventLog,
        store: Store,
        projection: Journeys,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let Some(mut rx) = self.queue.lock().ok().and_then(|mut q| q.take()) else {
            return;
        };
        tokio::pin!(stop);
        loop {
            let reason = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => return },
                _ = &mut stop => return,
            };
            tracing::info!(projection = NAME, reason, "rebuild started");
            let result = tokio::select! {
                r = async {
                    // Waits for erasures in progress; keeps new ones out until done.
                    let _gate = self.gate.write().await;
                    let result = self.rebuild(&log, &store, &projection).await;
                    // Reported while the gate is still held: a status that says running
                    // (with its shadow named) means erasures are refused.
                    self.status.send_modify(|s| match &result {
                        Ok(()) => {
                            s.state = RebuildState::Done;
                            s.eta_secs = Some(0.0);
                            s.completed += 1;
                        }
                        Err(e) => {
                            s.state = RebuildState::Failed;
                            s.error = Some(e.to_string());
                        }
                    });
                    result
                } => r,
                _ = &mut stop => return,
            };
            match result {
                Ok(()) => tracing::info!(projection = NAME, "rebuild swapped in"),
                Err(e) => {
                    tracing::error!(projection = NAME, error = %e, "rebuild failed; the live tree is unchanged")
                }
            }
        }
    }

    async fn rebuild(
        &self,
        log: &EventLog,
        store: &Store,
        projection: &Journeys,
    ) -> Result<(), RunError> {
        let parked_log = log.parked_log().await?;
        let consumer = rebuild_consumer_name(&store.instance_id().await?);
        let shadow = store.shadow(NAME)?;
        let started = Instant::now();
        let mut position = 0;
        let mut parked = 0;
        let mut flushing: Option<(
            tokio::task::JoinHandle<Result<Duration, StoreError>>,
            handover_nats::Batch,
        )> = None;
        let mut target = log.last_sequence().await?;
        let shadow_name = shadow.name().to_string();
        let report = |position: u64, target: u64, parked: u64| {
            let elapsed = started.elapsed().as_secs_f64();
            let rate = if elapsed > 0.0 {
                position as f64 / elapsed
            } else {
                0.0
            };
            self.status.send_modify(|s| {
                s.shadow = Some(shadow_name.clone());
                s.position = position;
                s.target = target;
                s.parked = parked;
                s.elapsed_secs = elapsed;
                s.events_per_sec = rate;
                s.eta_secs = (rate > 0.0).then(|| target.saturating_sub(position) as f64 / rate);
            });
        };
        report(position, target, parked);
        let mut feed = log.feed(&consumer, None, 0).await?;
        loop {
            if position >= target {
                // Caught up with what the stream held; look again for what arrived since.
                target = log.last_sequence().await?;
                if position >= target {
                    break;
                }
            }
            let batch = match tokio::time::timeout(
                Duration::from_millis(500),
                feed.next_batch(MAX_BATCH),
            )
            .await
            {
                Ok(Ok(b)) => b,
                Ok(Err(e @ LogError::Gap { .. })) => {
                    // Deliveries the rebuild never saw (see the runner): settle what was
                    // applied and start again after it.
                    tracing::warn!(error = %e, position, projection = NAME, "gap in the rebuild consumer's deliveries");
                    if let Some((flush, earlier)) = flushing.take() {
                        flushed(flush.await)?;
                        let _ = earlier.ack().await;
                    }
                    feed = log.feed(&consumer, None, position).await?;
                    continue;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    // Nothing delivered: when the server has nothing left for us either,
                    // the missing sequences do not exist (deleted or purged).
                    // (A consumer that delivered more than the feed saw reports a gap.)
                    target = log.last_sequence().await?;
                    match feed.pending().await {
                        Ok(0) => break,
                        Ok(_) | Err(LogError::Gap { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let p = project_batch(&shadow, projection, &batch.deliveries, position).await?;
            if p.last > position {
                park(&parked_log, &p.parked).await?;
                parked += p.parked.len() as u64;
                // Applied now, flushed while the next batch is projected (as the live
                // projection does); acknowledged once durable.
                shadow.apply(p.tx, p.last)?;
                position = p.last;
            }
            if let Some((flush, earlier)) = flushing.take() {
                flushed(flush.await)?;
                let _ = earlier.ack().await;
            }
            let mut batch = batch;
            batch.deliveries = Vec::new();
            flushing = Some((spawn_flush(&shadow), batch));
            target = target.max(position);
            report(position, target, parked);
        }
        if let Some((flush, earlier)) = flushing.take() {
            flushed(flush.await)?;
            let _ = earlier.ack().await;
        }
        shadow.set_version(JOURNEY_VERSION).await?;
        store.promote(NAME, &shadow).await?;
        report(position, target, parked);
        drop(feed);
        log.delete_consumer(&consumer).await?;
        Ok(())
    }
}
