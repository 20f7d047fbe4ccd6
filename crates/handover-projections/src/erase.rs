//! Erasure of a person from the journey read model: their journey, worklist and measure
//! rows, and the aliases (linked local ids, merged NHS numbers) that lead to them.
//!
//! The event log is purged separately (their subjects); this removes what the projection
//! derived, so a rebuild from the purged log cannot bring them back.

use handover_events::{NhsNumber, PersonRef, PseudonymKey};
use handover_store::{StoreError, Tree, Tx};

use crate::journeys::{alias_slot, person_slot, row_slot};

/// Longest alias chain followed.
const MAX_DEPTH: usize = 8;

/// The person keys that make up one person: the key their journey is stored under, their
/// NHS number's own key, and every key aliased to it (linked local ids, merged numbers).
pub fn person_keys(
    key: &PseudonymKey,
    tree: &Tree,
    nhs: &NhsNumber,
) -> Result<Vec<String>, StoreError> {
    let own = key.person_key(&PersonRef::Nhs(*nhs));
    let resolve = |start: &str| -> Result<String, StoreError> {
        let mut k = start.to_string();
        for _ in 0..MAX_DEPTH {
            match tree
                .get(&alias_slot(&k))?
                .and_then(|v| String::from_utf8(v).ok())
            {
                Some(t) if t != k => k = t,
                _ => break,
            }
        }
        Ok(k)
    };
    let target = resolve(&own)?;
    let mut keys = vec![target.clone()];
    if own != target {
        keys.push(own);
    }
    for entry in tree.scan_prefix(b"a/") {
        let (k, _) = entry?;
        let alias = String::from_utf8_lossy(&k[2..]).to_string();
        if !keys.contains(&alias) && resolve(&alias)? == target {
            keys.push(alias);
        }
    }
    Ok(keys)
}

/// Removes everything stored under `keys` into `tx`; returns how many entries go.
pub fn erase(tree: &Tree, tx: &mut Tx<'_>, keys: &[String]) -> Result<usize, StoreError> {
    let mut removed = 0;
    // Their timeline's events leave the chunks they share with other people's events.
    let mut events = crate::chunks::Events::default();
    for k in keys {
        if let Some(record) = tree.get(&person_slot(k))? {
            for slot in crate::journeys::index_keys(tx, k, &record)? {
                crate::journeys::index_entry(tx, slot, None)?;
                removed += 1;
            }
            for seq in crate::journeys::event_seqs(&record) {
                if events.remove(tx, seq)? {
                    removed += 1;
                }
            }
        }
        for slot in [
            person_slot(k),
            // layout 4 kept the delay row under d/, earlier ones under w/<person>
            row_slot("d", k, None),
            row_slot("w", k, None),
            // `m/` rows are gone since layout 4 (the facts are in the record); an old
            // tree being erased before its rebuild may still hold one.
            row_slot("m", k, None),
            alias_slot(k),
        ] {
            if tree.get(&slot)?.is_some() {
                tx.remove(slot);
                removed += 1;
            }
        }
        for entry in tree.scan_prefix(&row_slot("b", k, Some(""))) {
            let (slot, _) = entry?;
            tx.remove(slot);
            removed += 1;
        }
    }
    events.write(tx);
    Ok(removed)
}
