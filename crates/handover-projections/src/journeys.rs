//! The journey projection over the store: people keyed by pseudonymous person key, with
//! aliases for linked local ids and merged NHS numbers.
//!
//! Keys in the `journey` tree:
//! - `p/<person-key>`: a [`Journey`] (JSON);
//! - `a/<person-key>`: the person key it is an alias of (a local id linked to an NHS
//!   number, or an NHS number merged into another);
//! - `w/<person-key>`: the person's [`DelayRow`] while in hospital with a DRD;
//! - `b/<person-key>/<package-id>`: a [`BrokerageRow`] per package not yet started;
//! - `m/<person-key>`: the person's [`PersonFacts`] for the measures.
//!
//! The rows are derived from the journey and written in the same batch, so they share the
//! journey's stream position and can never disagree with it.

use std::collections::HashMap;

use handover_events::subject::person_key_of_subject;
use handover_events::{Event, EventData, NhsNumber, PersonRef, PseudonymKey};
use handover_store::{StoreError, Tree, Tx};

use crate::journey::Journey;
use crate::rows::{brokerage_rows, delay_row, person_facts, BrokerageRow, DelayRow, PersonFacts};

/// The journey projection.
#[derive(Clone, Debug)]
pub struct Journeys {
    key: PseudonymKey,
    /// Test hook: events this returns an error for fail to apply (see [`Journeys::with_fault`]).
    fault: Option<fn(&Event) -> Option<String>>,
}

/// The projection's name and tree.
pub const NAME: &str = "journey";

/// The journey projection's code version, stored beside its position. Bump it whenever a
/// change to the fold or the stored layout means the existing tree no longer equals a fresh
/// replay: on start-up a tree written by another version is rebuilt into a shadow tree and
/// swapped in while the old one keeps serving.
///
/// - 1: the first layout (trees without a stored version are version 1);
/// - 2: care packages carry the v2 `schedule` (v1 requests are upcast to it).
pub const JOURNEY_VERSION: u32 = 2;

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store failed: the whole batch fails and is retried by the runner.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event at `index` of the batch cannot be applied (a bug or a bad event); the
    /// batch's other events are unaffected once it is left out.
    #[error("event {index} of the batch cannot be applied: {error}")]
    Event {
        /// Its index in the slice given to [`Journeys::try_apply_batch`].
        index: usize,
        /// Why (no identifiers).
        error: String,
    },
}

/// Longest alias chain followed (merges of merges).
const MAX_ALIAS_DEPTH: usize = 8;

pub(crate) fn person_slot(key: &str) -> Vec<u8> {
    format!("p/{key}").into_bytes()
}

pub(crate) fn alias_slot(key: &str) -> Vec<u8> {
    format!("a/{key}").into_bytes()
}

pub(crate) fn row_slot(kind: &str, key: &str, sub: Option<&str>) -> Vec<u8> {
    match sub {
        Some(s) => format!("{kind}/{key}/{s}").into_bytes(),
        None => format!("{kind}/{key}").into_bytes(),
    }
}

/// Journeys loaded during one batch, written back at its end.
struct Batch<'t, 'a> {
    tx: &'t mut Tx<'a>,
    cache: HashMap<String, Option<Journey>>,
    aliases: HashMap<String, String>,
    /// Package ids of journeys taken (merged away), whose rows must go.
    taken_packages: Vec<(String, Vec<String>)>,
}

impl Batch<'_, '_> {
    fn resolve(&self, key: &str) -> Result<String, StoreError> {
        let mut k = key.to_string();
        for _ in 0..MAX_ALIAS_DEPTH {
            let next = match self.aliases.get(&k) {
                Some(t) => Some(t.clone()),
                None => self
                    .tx
                    .get(&alias_slot(&k))?
                    .and_then(|v| String::from_utf8(v).ok()),
            };
            match next {
                Some(t) if t != k => k = t,
                _ => break,
            }
        }
        Ok(k)
    }

    fn load(&mut self, key: &str) -> Result<Option<Journey>, StoreError> {
        if let Some(j) = self.cache.get(key) {
            return Ok(j.clone());
        }
        let j = match self.tx.get(&person_slot(key))? {
            Some(bytes) => serde_json::from_slice(&bytes).ok(),
            None => None,
        };
        self.cache.insert(key.to_string(), j.clone());
        Ok(j)
    }

    fn take(&mut self, key: &str) -> Result<Option<Journey>, StoreError> {
        let j = self.load(key)?;
        if let Some(j) = &j {
            let ids = j
                .care_packages
                .iter()
                .map(|p| p.package_id.clone())
                .collect();
            self.taken_packages.push((key.to_string(), ids));
        }
        self.cache.insert(key.to_string(), None);
        Ok(j)
    }

    fn put(&mut self, key: &str, j: Journey) {
        self.cache.insert(key.to_string(), Some(j));
    }

    /// Makes `from` an alias of `to`, absorbing any journey kept under `from`.
    fn alias(&mut self, from: &str, to: &str, journey: &mut Journey) -> Result<(), StoreError> {
        if from == to {
            return Ok(());
        }
        self.aliases.insert(from.to_string(), to.to_string());
        if let Some(other) = self.take(from)? {
            journey.merge(other);
        }
        Ok(())
    }

    fn finish(self, touched: &std::collections::HashSet<String>) {
        for (k, v) in self.aliases {
            self.tx.put(alias_slot(&k), v.into_bytes());
        }
        for (k, ids) in self.taken_packages {
            for id in ids {
                self.tx.remove(row_slot("b", &k, Some(&id)));
            }
        }
        for (k, j) in self.cache {
            match j {
                Some(j) if touched.contains(&k) => {
                    match delay_row(&j) {
                        Some(row) => self.tx.put(row_slot("w", &k, None), json(&row)),
                        None => self.tx.remove(row_slot("w", &k, None)),
                    }
                    let open = brokerage_rows(&j);
                    for p in &j.care_packages {
                        if !open.iter().any(|r| r.package_id == p.package_id) {
                            self.tx.remove(row_slot("b", &k, Some(&p.package_id)));
                        }
                    }
                    for row in open {
                        self.tx
                            .put(row_slot("b", &k, Some(&row.package_id)), json(&row));
                    }
                    self.tx
                        .put(row_slot("m", &k, None), json(&person_facts(&j)));
                    self.tx.put(person_slot(&k), json(&j));
                }
                Some(_) => {}
                None => {
                    self.tx.remove(person_slot(&k));
                    self.tx.remove(row_slot("w", &k, None));
                    self.tx.remove(row_slot("m", &k, None));
                }
            }
        }
    }
}

/// JSON of a stored value; serialising these plain structs cannot fail.
fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Journeys {
    /// The projection, deriving person keys with `key` (the same key the log uses).
    pub fn new(key: PseudonymKey) -> Journeys {
        Journeys { key, fault: None }
    }

    /// The pseudonym key person keys are derived with.
    pub fn pseudonym_key(&self) -> &PseudonymKey {
        &self.key
    }

    /// Test hook: the projection fails to apply every event `fault` returns an error for,
    /// as it would an event that trips a bug in the fold.
    #[doc(hidden)]
    pub fn with_fault(mut self, fault: fn(&Event) -> Option<String>) -> Journeys {
        self.fault = Some(fault);
        self
    }

    /// Applies a batch of events (with their stream sequences and subjects) to `tx`; an
    /// event that cannot be applied fails the batch (see [`Journeys::try_apply_batch`]).
    pub fn apply_batch(
        &self,
        tx: &mut Tx<'_>,
        events: &[(u64, &str, Event)],
    ) -> Result<(), ApplyError> {
        self.try_apply_batch(tx, events)
    }

    /// Applies a batch of events to `tx`, event by event. When one cannot be applied (its
    /// fold panics, or the test hook refuses it), stops and names it: `tx` then holds a
    /// partial batch and must be dropped; the caller applies the batch again without it.
    pub fn try_apply_batch(
        &self,
        tx: &mut Tx<'_>,
        events: &[(u64, &str, Event)],
    ) -> Result<(), ApplyError> {
        let mut b = Batch {
            tx,
            cache: HashMap::new(),
            aliases: HashMap::new(),
            taken_packages: Vec::new(),
        };
        let mut touched = std::collections::HashSet::new();
        for (index, (seq, subject, event)) in events.iter().enumerate() {
            if let Some(error) = self.fault.and_then(|f| f(event)) {
                return Err(ApplyError::Event { index, error });
            }
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.apply_one(&mut b, &mut touched, *seq, subject, event)
            }));
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(ApplyError::Store(e)),
                Err(panic) => {
                    let error = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "the fold panicked".into());
                    return Err(ApplyError::Event { index, error });
                }
            }
        }
        b.finish(&touched);
        Ok(())
    }

    fn apply_one(
        &self,
        b: &mut Batch<'_, '_>,
        touched: &mut std::collections::HashSet<String>,
        seq: u64,
        subject: &str,
        event: &Event,
    ) -> Result<(), StoreError> {
        {
            let Some(person) = event.person() else {
                return Ok(());
            };
            let own = match person_key_of_subject(subject) {
                Some(k) => k.to_string(),
                None => self.key.person_key(&person),
            };
            let key = b.resolve(&own)?;
            let mut journey = b
                .load(&key)?
                .unwrap_or_else(|| Journey::new(event.subject.map(|n| n.as_string())));
            journey.apply(seq, event);
            if let Some(nhs) = event.subject {
                let links: Vec<PersonRef> = match &event.data {
                    EventData::PersonIdentified(d) => {
                        d.local_ids.iter().cloned().map(PersonRef::Local).collect()
                    }
                    EventData::PersonLinked(d) => vec![PersonRef::Local(d.local_id.clone())],
                    EventData::NhsNumberChanged(d) => vec![PersonRef::Nhs(d.previous_nhs_number)],
                    _ => Vec::new(),
                };
                let _ = nhs;
                for l in links {
                    let from = self.key.person_key(&l);
                    let from = b.resolve(&from)?;
                    b.alias(&from, &key, &mut journey)?;
                }
            }
            touched.insert(key.clone());
            b.put(&key, journey);
        }
        Ok(())
    }

    /// Reads a person's journey by NHS number.
    pub fn get(&self, tree: &Tree, nhs: &NhsNumber) -> Result<Option<Journey>, StoreError> {
        let mut key = self.key.person_key(&PersonRef::Nhs(*nhs));
        for _ in 0..MAX_ALIAS_DEPTH {
            match tree
                .get(&alias_slot(&key))?
                .and_then(|v| String::from_utf8(v).ok())
            {
                Some(t) if t != key => key = t,
                _ => break,
            }
        }
        Ok(tree
            .get(&person_slot(&key))?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Every delay row (people in hospital with a DRD), unfiltered.
    pub fn delay_rows(tree: &Tree) -> Result<Vec<DelayRow>, StoreError> {
        rows(tree, b"w/")
    }

    /// Every brokerage row (packages not yet started), unfiltered.
    pub fn brokerage_rows(tree: &Tree) -> Result<Vec<BrokerageRow>, StoreError> {
        rows(tree, b"b/")
    }

    /// Every person's facts for the measures.
    pub fn facts(tree: &Tree) -> Result<Vec<PersonFacts>, StoreError> {
        rows(tree, b"m/")
    }

    /// Every journey in the tree, in key order.
    pub fn all(tree: &Tree) -> impl Iterator<Item = Result<Journey, StoreError>> + '_ {
        tree.scan_prefix(b"p/")
            .map(|r| r.map(|(_, v)| serde_json::from_slice(&v).unwrap_or_default()))
    }
}

fn rows<T: serde::de::DeserializeOwned>(tree: &Tree, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for r in tree.scan_prefix(prefix) {
        let (_, v) = r?;
        if let Ok(row) = serde_json::from_slice(&v) {
            out.push(row);
        }
    }
    Ok(out)
}
