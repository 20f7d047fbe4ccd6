//! Feeds a projection from the event log: pull a batch, apply it in one transaction,
//! commit the changes and the stream position in one atomic, flushed sled batch, and only
//! then acknowledge the batch to JetStream.
//!
//! Redelivered messages (at or below the stored position) are skipped, so delivery is
//! at-least-once and the effect exactly-once.
//!
//! **Poison events.** An event the projection cannot decode, or whose fold fails
//! ([`ApplyError::Event`]), does not fail the batch: a decode failure is parked at once (a
//! pure function of the stored bytes), an apply failure after [`MAX_ATTEMPTS`] attempts
//! with a short backoff. Parked means published to `<STREAM>_PARKED` and acknowledged by
//! JetStream *before* the batch's commit moves the position past it; the batch is applied
//! without it and the projection moves on. A store error still fails the whole batch.
//!
//! **Subjects and sectors.** An event stored under a subject other than its own (another
//! type's or another person's, which a direct NATS producer could do: the server checks
//! subjects only) is parked as well, kind `subject` ([`check_subject`]); so is one whose
//! source's sector may not assert its type (the API's sector rule), kind `source`.
//!
//! **Gaps.** The feed checks its consumer's delivery sequence ([`LogError::Gap`]): when
//! another pull request on the same consumer took messages, the runner settles what it
//! applied and reopens the feed at its position instead of moving past events it never saw.
//!
//! **Rebuilds.** When a rebuild swaps a new tree in ([`handover_store::Store::promote`]),
//! the runner notices (the tree's generation changes, or a commit fails with
//! [`StoreError::Swapped`]), rereads its position from the new tree and reopens its feed
//! there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use handover_events::subject::check_subject;
use handover_events::Event;
use handover_nats::{Delivery, EventLog, LogError, ParkedLog};
use handover_store::{StoreError, Tree, Tx};
use tokio::sync::watch;

use crate::journeys::{Applied, ApplyError, Journeys, JOURNEY_VERSION, NAME};
use crate::parking::{ParkedRecord, MAX_ATTEMPTS};

/// Why a projection stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task flushing the store stopped without an answer.
    #[error("read-model store: the flush task failed: {0}")]
    Flush(String),
}

impl From<ApplyError> for RunError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Store(e) => RunError::Store(e),
            // try_apply_batch's event errors are handled by project_batch; never reached.
            ApplyError::Event { error, .. } => RunError::Log(LogError::Consumer {
                name: NAME.into(),
                message: error,
            }),
        }
    }
}

/// Largest number of events applied in one transaction. Catching up on about 410,000 events
/// took about the same time with batches of 250, 1,000 and 4,000 (31.6–31.8 s, 30.9–32.3 s,
/// 32.4–33.1 s: within the run-to-run noise), but the projector's peak memory grew with the
/// batch (229–231 MB, 256–263 MB, 304 MB; docs/performance.md).
pub const MAX_BATCH: usize = 250;

/// How often an idle runner checks whether a rebuild replaced its tree.
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// A batch that spends longer than this in the runner (from its delivery until it is
/// durable and acknowledged), or an event that reaches a caught-up runner later than this
/// after JetStream stored it, is reported with a warning naming where the time went.
pub const SLOW: Duration = Duration::from_millis(100);

/// How often an idle runner asks the server whether its consumer delivered messages it
/// never received ([`handover_nats::Feed::pending`]).
const GAP_CHECK: Duration = Duration::from_secs(2);

/// Progress of a running projection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Stream position applied and committed.
    pub position: u64,
    /// Messages the consumer still had after the last batch.
    pub pending: u64,
    /// Events that could not be decoded and were skipped (unused since parking; kept 0).
    pub skipped: u64,
    /// Events parked in the dead-letter stream by this process.
    pub parked: u64,
    /// The projection has said where it stands: its feed is open (so `pending` is known),
    /// or it is waiting for the rebuild of an outdated tree that keeps serving meanwhile.
    /// False while it starts.
    pub open: bool,
}

/// A batch decoded and applied to a transaction, with what must be parked before it commits.
pub struct Projected<'t> {
    /// The writes, ready to commit.
    pub tx: Tx<'t>,
    /// Events left out, to park first.
    pub parked: Vec<ParkedRecord>,
    /// The last stream sequence of the batch (the position to commit).
    pub last: u64,
    /// Pending messages reported with the last delivery.
    pub pending: u64,
}

/// Decodes `deliveries` after `position` and applies them to a new transaction on `tree`,
/// leaving out (for parking) each event that cannot be decoded or applied.
pub async fn project_batch<'t>(
    tree: &'t Tree,
    projection: &Journeys,
    deliveries: &[Delivery],
    position: u64,
) -> Result<Projected<'t>, StoreError> {
    let mut parked = Vec::new();
    let pending = deliveries.last().map_or(0, |d| d.pending);
    let fresh: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.sequence > position)
        .collect();
    let last = fresh.last().map_or(position, |d| d.sequence);
    // Decoding and checking an event does not depend on any other: done on the pool.
    let key = projection.pseudonym_key();
    let decoded = crate::par_map(&fresh, |d| {
        let e = Event::from_stored(&d.payload).map_err(|e| ("decode", e.to_string()))?;
        check_subject(key, &d.subject, &e).map_err(|why| ("subject", why))?;
        check_sector(&e).map_err(|why| ("source", why))?;
        Ok::<_, (&str, String)>(e)
    });
    let mut events: Vec<(u64, &str, Event)> = Vec::with_capacity(fresh.len());
    let mut sources: Vec<&Delivery> = Vec::with_capacity(fresh.len());
    for (d, e) in fresh.into_iter().zip(decoded) {
        match e {
            Ok(e) => {
                events.push((d.sequence, d.subject.as_str(), e));
                sources.push(d);
            }
            Err((kind, why)) => {
                if kind == "decode" {
                    tracing::warn!(
                        sequence = d.sequence,
                        projection = NAME,
                        "parking an event the projection cannot decode"
                    );
                } else {
                    // A direct NATS producer's event under another type's or person's
                    // subject, or one its source's sector may not assert: the server
                    // checked only the subject, so it is refused here.
                    tracing::warn!(
                        sequence = d.sequence,
                        projection = NAME,
                        kind,
                        "parking an event stored under the wrong subject or from the wrong sector"
                    );
                }
                parked.push(ParkedRecord::new(
                    NAME, d.sequence, &d.subject, kind, &why, 1, &d.payload,
                ));
            }
        }
    }
    let mut failures: Vec<u32> = vec![0; events.len()];
    loop {
        let mut tx = tree.begin_exclusive().await;
        let applied: Vec<Applied<'_>> = events
            .iter()
            .zip(&sources)
            .map(|((seq, subject, event), d)| Applied {
                seq: *seq,
                subject,
                event,
                raw: &d.payload,
            })
            .collect();
        match projection.try_apply_batch(&mut tx, &applied) {
            Ok(()) => {
                return Ok(Projected {
                    tx,
                    parked,
                    last,
                    pending,
                })
            }
            Err(ApplyError::Store(e)) => return Err(e),
            Err(ApplyError::Event { index, error }) => {
                failures[index] += 1;
                let attempts = failures[index];
                if attempts >= MAX_ATTEMPTS {
                    let (seq, _, _) = events.remove(index);
                    failures.remove(index);
                    let d = sources.remove(index);
                    tracing::warn!(
                        sequence = seq,
                        projection = NAME,
                        attempts,
                        "parking an event the projection cannot apply"
                    );
                    parked.push(ParkedRecord::new(
                        NAME, seq, &d.subject, "apply", &error, attempts, &d.payload,
                    ));
                    parked.sort_by_key(|r| r.sequence);
                } else {
                    // Deterministic backoff: 20 ms, 40 ms.
                    tokio::time::sleep(Duration::from_millis(20 << (attempts - 1))).await;
                }
            }
        }
    }
}

/// The sector rule on a stored event: its source's sector may assert its type.
fn check_sector(e: &Event) -> Result<(), String> {
    let (_, sector) = crate::journey::source_org(&e.source);
    if handover_events::sector::sector_may_assert(sector, e.event_type()) {
        Ok(())
    } else {
        Err(format!(
            "a source of sector {sector} may not assert {}",
            e.event_type().as_str()
        ))
    }
}

/// Parks `records`, each acknowledged by JetStream before this returns.
pub async fn park(parked_log: &ParkedLog, records: &[ParkedRecord]) -> Result<(), LogError> {
    for r in records {
        let payload = serde_json::to_vec(r).unwrap_or_default();
        parked_log
            .park(&r.parked_subject(), &r.message_id(), payload)
            .await?;
    }
    Ok(())
}

/// The live journey projection's durable consumer for the store with id `store_id`
/// ([`handover_store::Store::instance_id`]): each store has its own, so that two servers
/// projecting one stream into their own stores never share a consumer.
pub fn consumer_name(store_id: &str) -> String {
    format!("{NAME}-{store_id}")
}

/// Consumer names used before they were per store (the first to the sixth sessions'
/// builds): deleted at start-up so that they do not linger as stale projections.
pub const LEGACY_CONSUMERS: [&str; 2] = ["journey", "journey-rebuild"];

/// Runs the journey projection through the durable consumer `consumer` (see
/// [`consumer_name`]) until `shutdown` resolves or an error occurs.
pub async fn run_journeys(
    log: EventLog,
    consumer: &str,
    tree: Tree,
    projection: Journeys,
    progress: Arc<watch::Sender<Progress>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let parked_log = log.parked_log().await?;
    let mut position = tree.position()?;
    let mut generation = tree.generation();
    if position == 0 && tree.version()? != Some(JOURNEY_VERSION) {
        tree.set_version(JOURNEY_VERSION).await?;
    }
    let mut parked = progress.borrow().parked;
    progress.send_modify(|p| p.position = position);
    tokio::pin!(shutdown);
    if tree.version()?.unwrap_or(1) != JOURNEY_VERSION && position > 0 {
        // A tree written by another version of the projection: the runtime has asked for a
        // rebuild, and projecting into it with this code would mix layouts. Readers keep
        // the old tree until the rebuilt one is swapped in; then carry on from its position.
        tracing::info!(
            projection = NAME,
            "waiting for the rebuild of a tree written by another version"
        );
        progress.send_modify(|p| p.open = true);
        while tree.generation() == generation {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(IDLE_CHECK) => {}
            }
        }
        generation = tree.generation();
        position = tree.position()?;
        progress.send_modify(|p| p.position = position);
    }
    let mut feed = log.feed(consumer, None, position).await?;
    let mut flushing: Option<Flushing> = None;
    let mut last_check = Instant::now();
    // The last batch left nothing pending: the runner is waiting for new events.
    let mut caught_up = false;
    let mut lateness = Lateness::new(Instant::now());
    // Behind from the start (after a restart or into an empty tree): not ready until caught up.
    progress.send_modify(|p| {
        p.pending = feed.pending_at_open();
        p.open = true;
    });
    loop {
        if tree.generation() != generation {
            // A rebuild swapped a new tree in: settle the old tree's last batch (so its
            // progress cannot arrive after the new tree's), then continue from the new
            // tree's position.
            if let Some(f) = flushing.take() {
                f.finish(&progress).await?;
            }
            generation = tree.generation();
            position = tree.position()?;
            tracing::info!(
                position,
                projection = NAME,
                "projection tree replaced by a rebuild; resuming from its position"
            );
            feed = log.feed(consumer, None, position).await?;
            progress.send_modify(|p| {
                p.position = position;
                p.pending = feed.pending_at_open();
            });
        }
        let batch = tokio::select! {
            b = feed.next_batch(MAX_BATCH) => match b {
                Ok(b) => b,
                Err(e @ LogError::Gap { .. }) => {
                    // Deliveries this feed never saw: settle what was applied and start
                    // again after it (recreating the consumer ends the other request).
                    tracing::warn!(error = %e, position, projection = NAME, "gap in the consumer's deliveries");
                    if let Some(f) = flushing.take() {
                        f.finish(&progress).await?;
                    }
                    feed = log.feed(consumer, None, position).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            },
            // Nothing new: finish the last batch's flush now rather than with the next one.
            done = async { flushing.as_mut().map(|f| &mut f.flush).expect("guarded").await },
                if flushing.is_some() =>
            {
                if let Some(f) = flushing.take() {
                    f.settle(done, &progress).await?;
                }
                continue;
            }
            _ = &mut shutdown => {
                if let Some(f) = flushing.take() {
                    f.finish(&progress).await?;
                }
                return Ok(());
            }
            _ = tokio::time::sleep(IDLE_CHECK) => {
                // Idle: now and then, check that no other pull request took the messages
                // after the last one seen (no later delivery would show that gap). A gap is
                // reported by the next call for a batch; a failed check is left to the feed's
                // own error handling (a server away shows there too).
                if last_check.elapsed() >= GAP_CHECK {
                    last_check = Instant::now();
                    let _ = tokio::time::timeout(IDLE_CHECK * 4, feed.pending()).await;
                }
                continue;
            }
        };
        if tree.generation() != generation {
            continue;
        }
        let received = Instant::now();
        if let Some(age) = batch
            .deliveries
            .first()
            .and_then(|d| d.published)
            .map(|p| signed_age_ms(std::time::SystemTime::now(), p))
        {
            let late = lateness.late(age, received);
            if caught_up && late > SLOW.as_secs_f64() * 1e3 && slow_report_due() {
                // The runner was waiting: the event was held up before it (in the broker or
                // the network) or behind the previous batch's settling.
                tracing::warn!(
                    projection = NAME,
                    late_ms = late,
                    "an event reached the caught-up projection late after JetStream stored it"
                );
            }
        }
        // One consumer span per event, continuing its publisher's trace, open until the
        // batch is committed.
        let _spans: Vec<tracing::Span> = batch
            .deliveries
            .iter()
            .filter(|d| d.sequence > position)
            .map(|d| d.span(NAME))
            .collect();
        let p = project_batch(&tree, &projection, &batch.deliveries, position).await?;
        let projected = received.elapsed();
        let events = batch.deliveries.len();
        caught_up = p.pending == 0;
        if p.last > position {
            park(&parked_log, &p.parked).await?;
            let n = p.parked.len() as u64;
            // Applied now (the next batch reads it), durable once flushed.
            match tree.apply(p.tx, p.last) {
                Ok(()) => {
                    position = p.last;
                    parked += n;
                }
                Err(StoreError::Swapped(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // The previous batch's flush has run while this one was projected: wait for it,
        // acknowledge that batch and report it; then this batch's flush starts and runs
        // while the next one is projected. A batch is acknowledged, and counted in the
        // progress, only once it is durable.
        let applied = received.elapsed();
        if let Some(f) = flushing.take() {
            f.finish(&progress).await?;
        }
        let mut batch = batch;
        batch.deliveries = Vec::new();
        flushing = Some(Flushing {
            flush: spawn_flush(&tree),
            batch,
            timing: Timing {
                received,
                events,
                projected,
                applied,
                previous: received.elapsed(),
            },
            progress: Progress {
                position,
                pending: p.pending,
                skipped: 0,
                parked,
                open: true,
            },
            _spans,
        });
    }
}

/// A flush of everything applied to `tree` so far, run while the caller goes on; it
/// answers how long the flush took.
pub(crate) fn spawn_flush(tree: &Tree) -> tokio::task::JoinHandle<Result<Duration, StoreError>> {
    let tree = tree.clone();
    tokio::spawn(async move {
        let t = Instant::now();
        tree.flush().await?;
        Ok(t.elapsed())
    })
}

/// The outcome of a flush started with [`spawn_flush`]: how long it took.
pub(crate) fn flushed(
    done: Result<Result<Duration, StoreError>, tokio::task::JoinError>,
) -> Result<Duration, RunError> {
    match done {
        Ok(r) => Ok(r?),
        Err(e) => Err(RunError::Flush(e.to_string())),
    }
}

/// How late a delivery is: its age at receipt above the smallest age seen over the current
/// and the previous minute. That smallest age is the clock difference between this host and
/// the server plus the quickest delivery, so a steady difference between the clocks is not
/// lateness, and after a clock step the baseline follows within two minutes.
struct Lateness {
    previous: f64,
    current: f64,
    since: Instant,
}

impl Lateness {
    const WINDOW: Duration = Duration::from_secs(60);

    fn new(now: Instant) -> Lateness {
        Lateness {
            previous: f64::INFINITY,
            current: f64::INFINITY,
            since: now,
        }
    }

    /// Milliseconds by which a delivery aged `age` ms (see [`signed_age_ms`]) at `now` is
    /// later than the baseline (0 for the quickest).
    fn late(&mut self, age: f64, now: Instant) -> f64 {
        if now.duration_since(self.since) >= Self::WINDOW {
            self.previous = self.current;
            self.current = f64::INFINITY;
            self.since = now;
        }
        self.current = self.current.min(age);
        age - self.previous.min(self.current)
    }
}

/// `now - then` in milliseconds, negative when `then` is later (another host's clock).
fn signed_age_ms(now: std::time::SystemTime, then: std::time::SystemTime) -> f64 {
    match now.duration_since(then) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// At most one slow-batch or late-event warning a second per process, so that a slow disk
/// under a catch-up does not flood the log.
fn slow_report_due() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1_000;
    let last = LAST.load(Ordering::Relaxed);
    now >= last + 1_000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Where a batch's time went in the runner, each stage measured from its delivery.
struct Timing {
    received: Instant,
    events: usize,
    /// Decoded and applied to a transaction (including waiting for the tree's write lock).
    projected: Duration,
    /// Applied to the tree (visible to readers).
    applied: Duration,
    /// The previous batch settled (its flush awaited and acknowledged).
    previous: Duration,
}

/// A batch applied to the store whose flush is under way: it is acknowledged, and its
/// progress published, once the flush is done.
struct Flushing {
    flush: tokio::task::JoinHandle<Result<Duration, StoreError>>,
    batch: handover_nats::Batch,
    timing: Timing,
    progress: Progress,
    /// The batch's consumer spans, open until it is durable.
    _spans: Vec<tracing::Span>,
}

impl Flushing {
    /// Waits for the flush, then settles.
    async fn finish(mut self, progress: &watch::Sender<Progress>) -> Result<(), RunError> {
        let done = (&mut self.flush).await;
        self.settle(done, progress).await
    }

    /// Acknowledges the batch and publishes its progress when its flush (`done`) succeeded.
    async fn settle(
        self,
        done: Result<Result<Duration, StoreError>, tokio::task::JoinError>,
        progress: &watch::Sender<Progress>,
    ) -> Result<(), RunError> {
        let flush = flushed(done)?;
        let durable = self.timing.received.elapsed();
        if let Err(e) = self.batch.ack().await {
            // Not fatal: a redelivery is skipped by position.
            tracing::warn!(error = %e, "acknowledging a projected batch failed");
        }
        progress.send_replace(self.progress);
        let t = &self.timing;
        let total = t.received.elapsed();
        if total > SLOW && slow_report_due() {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            tracing::warn!(
                projection = NAME,
                events = t.events,
                total_ms = ms(total),
                projected_ms = ms(t.projected),
                applied_ms = ms(t.applied),
                previous_settled_ms = ms(t.previous),
                flush_ms = ms(flush),
                durable_ms = ms(durable),
                "a slow projection batch: times from its delivery to each stage"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use handover_events::PseudonymKey;

    /// A delivery under the event's own subject (key as in the tests below).
    fn delivery(seq: u64, payload: &str) -> Delivery {
        let key = PseudonymKey::new(vec![7u8; 32]).unwrap();
        let subject = Event::from_stored(payload.as_bytes())
            .ok()
            .and_then(|e| {
                e.person().map(|p| {
                    handover_events::subject::subject_for(e.event_type(), &key.person_key(&p))
                })
            })
            .unwrap_or_else(|| "care.x".into());
        Delivery {
            sequence: seq,
            subject,
            payload: payload.as_bytes().to_vec().into(),
            pending: 0,
            traceparent: None,
            published: None,
        }
    }

    fn admitted(id: &str, nhs: &str) -> String {
        serde_json::json!({
            "specversion": "1.0", "id": id, "source": "urn:ods:RX1:pas",
            "type": "handover.discharge.admitted.v1", "subject": nhs,
            "time": "2026-11-01T10:00:00Z",
            "data": {"encounter_id": id, "site": "RX1CC", "admitted_at": "2026-11-01T10:00:00Z"}
        })
        .to_string()
    }

    fn refuse_bad(e: &Event) -> Option<String> {
        (e.id == "bad").then(|| "refused by the test hook for \"bad\"".to_string())
    }

    #[tokio::test]
    async fn a_bad_event_is_left_out_for_parking_and_the_rest_of_the_batch_applies() {
        let dir = tempfile::tempdir().unwrap();
        let store = handover_store::Store::open(dir.path()).unwrap();
        let tree = store.tree(NAME).unwrap();
        let key = PseudonymKey::new(vec![7u8; 32]).unwrap();
        let projection = Journeys::new(key.clone()).with_fault(refuse_bad);
        let deliveries = vec![
            delivery(1, &admitted("a", "9434765919")),
            delivery(2, "{\"not\": \"an event\"}"),
            delivery(3, &admitted("bad", "9434765919")),
            delivery(4, &admitted("b", "9434765870")),
        ];
        let started = std::time::Instant::now();
        let p = project_batch(&tree, &projection, &deliveries, 0)
            .await
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(60),
            "two backoffs"
        );
        assert_eq!(p.last, 4);
        let kinds: Vec<_> = p
            .parked
            .iter()
            .map(|r| (r.sequence, r.kind.as_str(), r.attempts))
            .collect();
        assert_eq!(kinds, vec![(2, "decode", 1), (3, "apply", MAX_ATTEMPTS)]);
        assert_eq!(p.parked[1].error, "refused by the test hook for \"…\"");
        tree.commit(p.tx, p.last).await.unwrap();
        let j = Journeys::new(key);
        for nhs in ["9434765919", "9434765870"] {
            let n = handover_events::NhsNumber::parse(nhs).unwrap();
            assert_eq!(j.get(&tree, &n).unwrap().unwrap().timeline.len(), 1);
        }
    }

    #[tokio::test]
    async fn an_event_under_another_types_or_persons_subject_or_from_the_wrong_sector_is_left_out_for_parking(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = handover_store::Store::open(dir.path()).unwrap();
        let tree = store.tree(NAME).unwrap();
        let projection = Journeys::new(PseudonymKey::new(vec![7u8; 32]).unwrap());
        let mut wrong_type = delivery(1, &admitted("a", "9434765919"));
        wrong_type.subject = wrong_type
            .subject
            .replace("care.discharge.admitted.", "care.referral.accepted.");
        let mut wrong_person = delivery(2, &admitted("b", "9434765919"));
        wrong_person.subject = delivery(9, &admitted("x", "9434765870")).subject;
        let deliveries = vec![
            wrong_type,
            wrong_person,
            delivery(3, &admitted("c", "9434765870")),
        ];
        let p = project_batch(&tree, &projection, &deliveries, 0)
            .await
            .unwrap();
        assert_eq!(p.last, 3);
        let kinds: Vec<_> = p
            .parked
            .iter()
            .map(|r| (r.sequence, r.kind.as_str()))
            .collect();
        assert_eq!(kinds, vec![(1, "subject"), (2, "subject")]);
        assert!(p.parked[0]
            .error
            .contains("not the subject of a handover.discharge.admitted.v1"));
        assert!(p.parked[1].error.contains("another person's key"));
        // The batch's transaction holds the tree's write lock until applied or dropped.
        drop(p);
        // a council source asserting an admission, under the admission's own subject
        let council =
            admitted("d", "9434765919").replace("urn:ods:RX1:pas", "urn:gss:E08000035:mosaic");
        let q = project_batch(&tree, &projection, &[delivery(4, &council)], 3)
            .await
            .unwrap();
        assert_eq!(q.parked.len(), 1);
        assert_eq!(q.parked[0].kind, "source");
        assert_eq!(
            q.parked[0].error,
            "a source of sector council may not assert handover.discharge.admitted.v1"
        );
    }

    #[test]
    fn slow_reports_come_at_most_once_a_second() {
        // Another test's slow batch may have taken this second's report: wait for the next.
        let t = Instant::now();
        while !slow_report_due() {
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "no report was due for 3 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let due = Instant::now();
        assert!(!slow_report_due(), "a second report in the same second");
        std::thread::sleep(Duration::from_millis(1_100).saturating_sub(due.elapsed()));
        assert!(slow_report_due(), "no report due a second later");
    }

    #[test]
    fn a_delivery_age_is_signed_when_the_clocks_differ() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(signed_age_ms(t + Duration::from_millis(250), t), 250.0);
        assert_eq!(signed_age_ms(t, t + Duration::from_millis(40)), -40.0);
    }

    #[test]
    fn lateness_is_measured_above_the_quickest_delivery_and_follows_a_clock_step() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l = Lateness::new(t0);
        // The server's clock is 500 ms behind: steady ages of about 500 ms are not late.
        assert_eq!(l.late(500.0, at(0)), 0.0);
        assert_eq!(l.late(502.0, at(1)), 2.0);
        assert_eq!(l.late(650.0, at(2)), 150.0);
        // A clock step of 2 s: late at first, then the baseline follows.
        assert_eq!(l.late(2_500.0, at(30)), 2_000.0);
        assert_eq!(
            l.late(2_500.0, at(70)),
            2_000.0,
            "the previous minute still counts"
        );
        assert_eq!(
            l.late(2_501.0, at(130)),
            1.0,
            "two minutes later it no longer does"
        );
    }
}
