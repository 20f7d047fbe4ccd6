//! The adapter kit: checks every adapter's tests call, and [`RecordingSink`], an in-memory
//! [`EventSink`] for unit tests.
//!
//! An adapter conforms when:
//!
//! 1. its translation is **deterministic**: translating the same input twice gives the same
//!    events, ids included (so a resend is a duplicate) — [`assert_deterministic`];
//! 2. every event is **schema-valid** and survives a round trip through
//!    [`Event::from_json`]`(e.to_json())` unchanged — [`assert_schema_valid`];
//! 3. **no identifier reaches a subject**: every event names a person, and the NATS subject
//!    built for it ([`subject_for`] with a pseudonym key) contains neither the NHS number nor
//!    any local id value — [`assert_no_identifiers_in_subjects`];
//! 4. it **acknowledges only after durability**: while the sink has not returned the adapter
//!    has not reported success, and when the sink fails it reports failure —
//!    [`assert_acks_after_durability`].
//!
//! [`assert_translation_conforms`] runs 1–3; [`assert_adapter_conformance`] runs all four.
//! The helpers panic with a message naming the rule broken: they are for tests.
//!
//! ```
//! # use handover_adapters::conformance::assert_translation_conforms;
//! # use handover_adapters::fhir::{translate, FhirContext};
//! # use handover_events::Timestamp;
//! let patient = serde_json::json!({
//!     "resourceType": "Patient", "id": "p1",
//!     "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}]
//! });
//! let ctx = FhirContext::new("RX1", Timestamp::parse("2026-11-20T09:14:00Z").unwrap());
//! assert_translation_conforms(|| translate(&patient, &ctx).unwrap());
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use handover_events::sink::BoxFuture;
use handover_events::subject::subject_for;
use handover_events::{Event, EventData, EventSink, PersonRef, PseudonymKey, SinkError, Stored};
use tokio::sync::watch;

/// The pseudonym key the checks use (any 16+ bytes work; subjects must not depend on it).
pub const TEST_KEY: &[u8; 32] = b"conformance-test-pseudonym-key!!";

/// Checks that `translate` gives the same events (ids, times, data) when called twice, and
/// returns them.
pub fn assert_deterministic(translate: impl Fn() -> Vec<Event>) -> Vec<Event> {
    let first = translate();
    let second = translate();
    let ids = |v: &[Event]| {
        v.iter()
            .map(|e| (e.source.clone(), e.id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&second), "conformance: event ids must be deterministic (the same input must give the same source and id)");
    assert_eq!(
        first, second,
        "conformance: translating the same input twice must give the same events"
    );
    let mut seen = std::collections::HashSet::new();
    for e in &first {
        assert!(
            seen.insert((e.source.as_str(), e.id.as_str())),
            "conformance: two events of one input share source+id {} {}",
            e.source,
            e.id
        );
    }
    first
}

/// Checks that every event validates as a CloudEvent of the catalogue and round-trips
/// through its JSON form unchanged.
pub fn assert_schema_valid(events: &[Event]) {
    for e in events {
        match Event::from_json(e.to_json()) {
            Ok(back) => assert_eq!(
                &back, e,
                "conformance: event {} changed in a JSON round trip",
                e.id
            ),
            Err(errs) => panic!(
                "conformance: event {} ({}) is not schema-valid: {errs}",
                e.id,
                e.event_type().as_str()
            ),
        }
    }
}

/// Every identifier value an event carries: its NHS number and all local id values.
pub fn identifiers_of(e: &Event) -> Vec<String> {
    let mut out: Vec<String> = e.subject.iter().map(|n| n.as_string()).collect();
    if let EventData::PersonIdentified(d) = &e.data {
        out.extend(d.local_ids.iter().map(|l| l.value.clone()));
    }
    out.extend(e.data.local_id().map(|l| l.value.clone()));
    if let EventData::NhsNumberChanged(d) = &e.data {
        out.push(d.previous_nhs_number.as_string());
    }
    out
}

/// Checks that every event names a person and that its NATS subject carries no identifier
/// (neither the event's own nor any of `also_forbidden`, e.g. values from the input).
pub fn assert_no_identifiers_in_subjects(events: &[Event], also_forbidden: &[&str]) {
    let key = match PseudonymKey::new(TEST_KEY.to_vec()) {
        Ok(k) => k,
        Err(e) => panic!("conformance: test key refused: {e}"),
    };
    for e in events {
        let Some(person) = e.person() else {
            panic!(
                "conformance: event {} names nobody (no subject and no data.local_id)",
                e.id
            );
        };
        if let PersonRef::Nhs(n) = &person {
            assert_eq!(e.subject.map(|s| s.as_string()), Some(n.as_string()));
        }
        let subject = subject_for(e.event_type(), &key.person_key(&person));
        let forbidden = identifiers_of(e)
            .into_iter()
            .chain(also_forbidden.iter().map(|s| s.to_string()));
        for id in forbidden.filter(|s| s.len() >= 3) {
            assert!(
                !subject.contains(&id),
                "conformance: the subject of event {} contains an identifier",
                e.id
            );
        }
    }
}

/// Runs checks 1–3 on what `translate` produces; returns the events.
pub fn assert_translation_conforms(translate: impl Fn() -> Vec<Event>) -> Vec<Event> {
    let events = assert_deterministic(translate);
    assert_schema_valid(&events);
    assert_no_identifiers_in_subjects(&events, &[]);
    events
}

/// Checks that an adapter operation reports success only after its sink has stored the
/// events, and failure when the sink fails.
///
/// `op` runs the adapter's unit of work (e.g. handle one message, or process one file) against
/// the given sink and returns whether it **reported success** to its sender (an `AA`, a `201`,
/// a file moved to `done/`). It is called three times, each with a fresh [`RecordingSink`]:
/// failing (`Unavailable`) → must report failure; held (publish blocks) → must not have
/// completed while the sink holds; released → must report success, with at least one event
/// published.
pub async fn assert_acks_after_durability<F, Fut>(mut op: F)
where
    F: FnMut(Arc<RecordingSink>) -> Fut,
    Fut: Future<Output = bool>,
{
    let failing = Arc::new(RecordingSink::new());
    failing.fail_with(Some(FailMode::Unavailable));
    assert!(
        !op(Arc::clone(&failing)).await,
        "conformance: the adapter reported success although the sink failed"
    );
    assert!(
        failing.events().is_empty(),
        "conformance: a failing sink stored events"
    );

    let held = Arc::new(RecordingSink::new());
    held.hold();
    let fut = op(Arc::clone(&held));
    tokio::pin!(fut);
    tokio::select! {
        biased;
        _ = &mut fut => panic!("conformance: the adapter finished before the sink acknowledged"),
        _ = held.wait_for_waiting_call(Duration::from_secs(10)) => {}
    }
    assert!(held.events().is_empty());
    held.release();
    assert!(
        fut.await,
        "conformance: the adapter did not report success once the sink acknowledged"
    );
    assert!(
        !held.events().is_empty(),
        "conformance: the adapter reported success without publishing"
    );
}

/// Runs all four checks: [`assert_translation_conforms`] on `translate`, then
/// [`assert_acks_after_durability`] on `op`.
pub async fn assert_adapter_conformance<F, Fut>(
    translate: impl Fn() -> Vec<Event>,
    op: F,
) -> Vec<Event>
where
    F: FnMut(Arc<RecordingSink>) -> Fut,
    Fut: Future<Output = bool>,
{
    let events = assert_translation_conforms(translate);
    assert_acks_after_durability(op).await;
    events
}

// ---------------------------------------------------------------------------------------------
// RecordingSink
// ---------------------------------------------------------------------------------------------

/// How a [`RecordingSink`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// [`SinkError::Unavailable`]: the log is down; retry later.
    Unavailable,
    /// [`SinkError::Refused`].
    Refused,
}

#[derive(Default)]
struct State {
    stored: Vec<Event>,
    seen: HashMap<(String, String), u64>,
    calls: usize,
    fail: Option<FailMode>,
    /// Fail every call once this many events are stored (after storing up to it).
    fail_after: Option<usize>,
    delay: Option<Duration>,
}

/// An in-memory [`EventSink`] for unit tests: stores events in order, recognises duplicates
/// by `source`+`id` as the event log does, and can be told to fail, to fail after a number of
/// events (a crash mid-batch), to delay, or to hold every call until released.
pub struct RecordingSink {
    state: Mutex<State>,
    gate: watch::Sender<bool>,
    waiting: watch::Sender<usize>,
}

impl Default for RecordingSink {
    fn default() -> Self {
        RecordingSink::new()
    }
}

impl std::fmt::Debug for RecordingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSink")
            .field("stored", &self.lock().stored.len())
            .finish()
    }
}

impl RecordingSink {
    /// An empty, working sink.
    pub fn new() -> RecordingSink {
        RecordingSink {
            state: Mutex::new(State::default()),
            gate: watch::Sender::new(true),
            waiting: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The events stored (duplicates not repeated), in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().stored.clone()
    }

    /// Calls to `publish` so far (failed ones included).
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    /// Makes every following call fail (`None`: work again).
    pub fn fail_with(&self, mode: Option<FailMode>) {
        self.lock().fail = mode;
    }

    /// Stores events until `n` are stored, then fails (`Unavailable`) the call that would go
    /// past `n` — having stored the ones before, as a log does when the process dies mid-batch —
    /// and every later call; `None` lifts it.
    pub fn fail_after(&self, n: Option<usize>) {
        self.lock().fail_after = n;
    }

    /// Delays every call by `d` before it stores anything.
    pub fn set_delay(&self, d: Option<Duration>) {
        self.lock().delay = d;
    }

    /// Makes every following call wait until [`release`](Self::release).
    pub fn hold(&self) {
        self.gate.send_replace(false);
    }

    /// Lets held calls (and later ones) proceed.
    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    /// Waits until at least one call is waiting at the hold (panics after `timeout`).
    pub async fn wait_for_waiting_call(&self, timeout: Duration) {
        let mut rx = self.waiting.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|n| *n > 0))
            .await
            .is_err()
        {
            panic!("conformance: no publish call reached the sink within {timeout:?}");
        }
    }

    async fn publish_inner(&self, events: &[Event]) -> Result<Vec<Stored>, SinkError> {
        let delay = {
            let mut s = self.lock();
            s.calls += 1;
            s.delay
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut gate = self.gate.subscribe();
        if !*gate.borrow() {
            self.waiting.send_modify(|n| *n += 1);
            let _ = gate.wait_for(|open| *open).await;
            self.waiting.send_modify(|n| *n -= 1);
        }
        let mut s = self.lock();
        match s.fail {
            Some(FailMode::Unavailable) => {
                return Err(SinkError::Unavailable("recording sink told to fail".into()))
            }
            Some(FailMode::Refused) => {
                return Err(SinkError::Refused("recording sink told to refuse".into()))
            }
            None => {}
        }
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let key = (e.source.clone(), e.id.clone());
            if let Some(seq) = s.seen.get(&key) {
                out.push(Stored {
                    sequence: *seq,
                    duplicate: true,
                });
                continue;
            }
            if s.fail_after.is_some_and(|n| s.stored.len() >= n) {
                return Err(SinkError::Unavailable(
                    "recording sink: simulated failure mid-batch".into(),
                ));
            }
            s.stored.push(e.clone());
            let seq = s.stored.len() as u64;
            s.seen.insert(key, seq);
            out.push(Stored {
                sequence: seq,
                duplicate: false,
            });
        }
        Ok(out)
    }
}

impl EventSink for RecordingSink {
    fn publish<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Vec<Stored>, SinkError>> {
        Box::pin(self.publish_inner(events))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ev(id: &str) -> Event {
        Event::from_json(json!({
            "specversion": "1.0", "id": id, "source": "urn:ods:RX1:test",
            "type": "handover.discharge.admission-cancelled.v1", "subject": "9434765919",
            "time": "2026-11-20T09:14:00Z", "data": {"encounter_id": "E1"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn recording_sink_dedupes_fails_and_holds() {
        let sink = RecordingSink::new();
        let r = sink.publish(&[ev("a"), ev("a"), ev("b")]).await.unwrap();
        assert_eq!(
            r.iter()
                .map(|s| (s.sequence, s.duplicate))
                .collect::<Vec<_>>(),
            [(1, false), (1, true), (2, false)]
        );
        sink.fail_after(Some(3));
        assert!(sink.publish(&[ev("c"), ev("d")]).await.is_err());
        assert_eq!(sink.events().len(), 3, "stored up to the failure point");
        sink.fail_after(None);
        sink.fail_with(Some(FailMode::Refused));
        assert!(matches!(
            sink.publish(&[ev("e")]).await,
            Err(SinkError::Refused(_))
        ));
        sink.fail_with(None);
        assert_eq!(sink.calls(), 3);
    }

    #[tokio::test]
    async fn a_well_behaved_operation_passes_and_an_eager_one_fails() {
        // Reports success only with the publish result: conforms.
        assert_acks_after_durability(|sink| async move { sink.publish(&[ev("x")]).await.is_ok() })
            .await;
        // Reports success whatever the sink says: caught.
        let eager = tokio::spawn(assert_acks_after_durability(|sink| async move {
            let _ = sink.publish(&[ev("x")]).await;
            true
        }));
        assert!(
            eager.await.is_err(),
            "an adapter ignoring sink failures must fail the check"
        );
    }

    #[test]
    fn nondeterministic_ids_are_caught() {
        let n = std::sync::atomic::AtomicU32::new(0);
        let r = std::panic::catch_unwind(|| {
            assert_deterministic(|| {
                vec![ev(&n
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .to_string())]
            })
        });
        assert!(r.is_err());
    }
}
