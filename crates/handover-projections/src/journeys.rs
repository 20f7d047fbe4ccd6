//! The journey projection over the store: people keyed by pseudonymous person key, with
//! aliases for linked local ids and merged NHS numbers.
//!
//! Keys in the `journey` tree:
//! - `p/<person-key>`: a [`Journey`] (JSON);
//! - `a/<person-key>`: the person key it is an alias of (a local id linked to an NHS
//!   number, or an NHS number merged into another).

use std::collections::HashMap;

use handover_events::subject::person_key_of_subject;
use handover_events::{Event, EventData, NhsNumber, PersonRef, PseudonymKey};
use handover_store::{StoreError, Tree, Tx};

use crate::journey::Journey;

/// The journey projection.
#[derive(Clone, Debug)]
pub struct Journeys {
    key: PseudonymKey,
}

/// The projection's name and tree.
pub const NAME: &str = "journey";

/// Longest alias chain followed (merges of merges).
const MAX_ALIAS_DEPTH: usize = 8;

fn person_slot(key: &str) -> Vec<u8> {
    format!("p/{key}").into_bytes()
}

fn alias_slot(key: &str) -> Vec<u8> {
    format!("a/{key}").into_bytes()
}

/// Journeys loaded during one batch, written back at its end.
struct Batch<'t, 'a> {
    tx: &'t mut Tx<'a>,
    cache: HashMap<String, Option<Journey>>,
    aliases: HashMap<String, String>,
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

    fn finish(self) {
        for (k, v) in self.aliases {
            self.tx.put(alias_slot(&k), v.into_bytes());
        }
        for (k, j) in self.cache {
            match j {
                // Serialising a Journey cannot fail: plain structs and string-keyed maps.
                Some(j) => self
                    .tx
                    .put(person_slot(&k), serde_json::to_vec(&j).unwrap_or_default()),
                None => self.tx.remove(person_slot(&k)),
            }
        }
    }
}

impl Journeys {
    /// The projection, deriving person keys with `key` (the same key the log uses).
    pub fn new(key: PseudonymKey) -> Journeys {
        Journeys { key }
    }

    /// Applies a batch of events (with their stream sequences and subjects) to `tx`.
    pub fn apply_batch(
        &self,
        tx: &mut Tx<'_>,
        events: &[(u64, &str, Event)],
    ) -> Result<(), StoreError> {
        let mut b = Batch {
            tx,
            cache: HashMap::new(),
            aliases: HashMap::new(),
        };
        for (seq, subject, event) in events {
            let Some(person) = event.person() else {
                continue;
            };
            let own = match person_key_of_subject(subject) {
                Some(k) => k.to_string(),
                None => self.key.person_key(&person),
            };
            let key = b.resolve(&own)?;
            let mut journey = b
                .load(&key)?
                .unwrap_or_else(|| Journey::new(event.subject.map(|n| n.as_string())));
            journey.apply(*seq, event);
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
            b.put(&key, journey);
        }
        b.finish();
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

    /// Every journey in the tree, in key order.
    pub fn all(tree: &Tree) -> impl Iterator<Item = Result<Journey, StoreError>> + '_ {
        tree.scan_prefix(b"p/")
            .map(|r| r.map(|(_, v)| serde_json::from_slice(&v).unwrap_or_default()))
    }
}
