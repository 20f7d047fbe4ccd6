//! The events of the journeys' timelines, kept in chunks under `t/` in the journey tree.
//!
//! Each event applied is kept exactly as stored in the log, for the journey's timeline and
//! for refolding a person's state. One key per event cost a sled insert per event (a copy
//! of the rightmost leaf, and a log write, each time) and left much of the store's disk use
//! to garbage awaiting segment cleaning; so the new events of a batch are written together,
//! in chunks of at most [`CHUNK_EVENTS`] events (or [`CHUNK_BYTES`] plain bytes), each
//! compressed as one LZ4 block against a fixed dictionary of events.
//!
//! - **Key:** `t/` and the stream sequence (u64 big-endian) of the chunk's *last* event
//!   when it was written. A chunk holds the events of one batch, all after everything
//!   stored before it, so chunks cover disjoint ranges of sequences and the chunk that may
//!   hold sequence `s` is the first at or after `t/<s>`. An event removed later (a merged
//!   duplicate, an erasure) leaves its chunk's key as it was; a chunk left empty goes.
//! - **Value:** [`CHUNK_VERSION`], then the frames — per event its sequence (u64
//!   big-endian), its length (u32 big-endian) and its bytes, in sequence order — packed
//!   (`packed`: plain length, LZ4 block) against `event-dictionary-1.dict`. A value that
//!   starts with `{` is one event of layouts 6 to 8 (one key per event, stored plain) under
//!   its own sequence: still read while such a tree serves reads during its rebuild.
//!
//! The dictionary is the contract's example events (`schemas/examples`, in file-name
//! order), each as the log stores it (`Event::to_json_vec`), concatenated. It is frozen like
//! the record dictionary: a new one needs a new chunk version.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use handover_store::{StoreError, Tree, Tx};

use crate::packed;

/// First byte of a chunk written by this layout.
const CHUNK_VERSION: u8 = 1;

/// Most events in one chunk: reading one event decompresses its whole chunk, so chunks
/// stay small (the benchmark's journey reads, about 10 events each from as many chunks,
/// stay under 1 ms p99 from one client at 1M events, docs/performance.md).
pub(crate) const CHUNK_EVENTS: usize = 16;

/// Most plain bytes in one chunk; an event larger than this has a chunk to itself.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

/// The end of the `t/` key range.
const END: &[u8] = b"t0";

/// The events of one chunk: `(sequence, the event as stored)`, in sequence order.
type Chunk = Vec<(u64, Vec<u8>)>;

/// The key of a chunk whose last event has sequence `seq`.
pub(crate) fn slot(seq: u64) -> Vec<u8> {
    let mut slot = b"t/".to_vec();
    slot.extend_from_slice(&seq.to_be_bytes());
    slot
}

/// A chunk's value.
pub(crate) fn encode<'e>(events: impl IntoIterator<Item = (u64, &'e [u8])>) -> Vec<u8> {
    let mut frames = Vec::new();
    for (seq, raw) in events {
        frames.extend_from_slice(&seq.to_be_bytes());
        frames.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        frames.extend_from_slice(raw);
    }
    let mut value = vec![CHUNK_VERSION];
    value.extend(packed::pack_with(&frames, packed::EVENT_DICTIONARY_1));
    value
}

/// A chunk's frames uncompressed, their framing checked: per event its sequence (u64
/// big-endian), its length (u32 big-endian) and its bytes, in sequence order.
struct Frames(Vec<u8>);

impl Frames {
    /// The frames of the chunk stored under `key` with `value`; `None` when it is not one.
    fn of(key: &[u8], value: &[u8]) -> Option<Frames> {
        let frames = match value.first()? {
            b'{' => {
                let seq = key.strip_prefix(b"t/")?;
                let seq: [u8; 8] = seq.try_into().ok()?;
                let len = u32::try_from(value.len()).ok()?;
                let mut frames = Vec::with_capacity(12 + value.len());
                frames.extend_from_slice(&seq);
                frames.extend_from_slice(&len.to_be_bytes());
                frames.extend_from_slice(value);
                frames
            }
            &CHUNK_VERSION => packed::unpack_with(&value[1..], packed::EVENT_DICTIONARY_1)?,
            _ => return None,
        };
        let frames = Frames(frames);
        // Every frame whole, and nothing after the last.
        let whole: usize = frames.iter().map(|(_, raw)| 12 + raw.len()).sum();
        (whole == frames.0.len()).then_some(frames)
    }

    /// The events, in order (stops at a frame that is not whole).
    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut rest = self.0.as_slice();
        std::iter::from_fn(move || {
            let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            let len = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
            let raw = rest.get(12..12 + len)?;
            rest = &rest[12 + len..];
            Some((seq, raw))
        })
    }

    /// The event with sequence `seq`.
    fn find(&self, seq: u64) -> Option<&[u8]> {
        self.iter().find(|(s, _)| *s == seq).map(|(_, raw)| raw)
    }
}

/// The events of the chunk stored under `key` with `value`; `None` when it is not one.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Option<Chunk> {
    let frames = Frames::of(key, value)?;
    Some(
        frames
            .iter()
            .map(|(seq, raw)| (seq, raw.to_vec()))
            .collect(),
    )
}

/// The size of a chunk's value with its frames uncompressed (its logical size).
pub(crate) fn plain_len(value: &[u8]) -> Option<u64> {
    match value.first()? {
        &CHUNK_VERSION => Some(1 + packed::unpacked_len(&value[1..])?),
        _ => None,
    }
}

fn corrupt(tree: &str) -> StoreError {
    StoreError::Corrupt {
        tree: tree.into(),
        detail: "timeline chunk: bad framing".into(),
    }
}

/// Reads the events at sequences `seqs` from `tree` (a journey read), each chunk
/// uncompressed once, handing each event found to `f` with its index in `seqs` (an event
/// not found, erased, is skipped). Events are handed out of the uncompressed frames, not
/// copied: a person's events are mostly each in a chunk of its own, of up to
/// [`CHUNK_EVENTS`], so a read uses one event of each chunk it uncompresses.
pub(crate) fn read(
    tree: &Tree,
    seqs: &[u64],
    mut f: impl FnMut(usize, &[u8]),
) -> Result<(), StoreError> {
    let mut chunks: HashMap<Vec<u8>, Frames> = HashMap::new();
    for (i, &seq) in seqs.iter().enumerate() {
        // A chunk not met before in this read is uncompressed straight from the store.
        let found = tree.first_in_with(&slot(seq), END, |key, value| {
            let fresh = (!chunks.contains_key(key)).then(|| Frames::of(key, value));
            (key.to_vec(), fresh)
        })?;
        let Some((key, fresh)) = found else {
            continue;
        };
        let frames = match (chunks.entry(key), fresh) {
            (std::collections::hash_map::Entry::Occupied(c), _) => c.into_mut(),
            (std::collections::hash_map::Entry::Vacant(v), Some(Some(frames))) => v.insert(frames),
            (std::collections::hash_map::Entry::Vacant(_), _) => return Err(corrupt(tree.name())),
        };
        if let Some(raw) = frames.find(seq) {
            f(i, raw);
        }
    }
    Ok(())
}

/// The chunk stored under `key` (as `value`), decoded once into `chunks`.
fn cached<'c>(
    chunks: &'c mut HashMap<Vec<u8>, Chunk>,
    key: Vec<u8>,
    value: &[u8],
    tree: &str,
) -> Result<&'c mut Chunk, StoreError> {
    Ok(match chunks.entry(key) {
        std::collections::hash_map::Entry::Occupied(c) => c.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let chunk = decode(v.key(), value).ok_or_else(|| corrupt(tree))?;
            v.insert(chunk)
        }
    })
}

fn find(chunk: &Chunk, seq: u64) -> Option<&[u8]> {
    chunk
        .binary_search_by_key(&seq, |(s, _)| *s)
        .ok()
        .map(|i| chunk[i].1.as_slice())
}

/// The timeline events one batch (or one erasure) adds, reads and removes; they reach its
/// transaction when it calls [`Events::write`].
#[derive(Default)]
pub(crate) struct Events {
    /// Events added, by sequence.
    added: BTreeMap<u64, Vec<u8>>,
    /// Stored chunks read or changed, decoded, by key.
    chunks: HashMap<Vec<u8>, Chunk>,
    /// Keys of the chunks changed.
    changed: BTreeSet<Vec<u8>>,
}

impl Events {
    /// Adds the event with sequence `seq`.
    pub(crate) fn add(&mut self, seq: u64, raw: &[u8]) {
        self.added.insert(seq, raw.to_vec());
    }

    /// The key of the stored chunk that may hold `seq`, decoded into `chunks`.
    fn chunk_of(&mut self, tx: &Tx<'_>, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((key, value)) = tx.first_in(&slot(seq), END)? else {
            return Ok(None);
        };
        cached(&mut self.chunks, key.clone(), &value, tx.tree_name())?;
        Ok(Some(key))
    }

    /// The event with sequence `seq`, added or stored.
    pub(crate) fn get(&mut self, tx: &Tx<'_>, seq: u64) -> Result<Option<&[u8]>, StoreError> {
        // (looked up twice: returning the first lookup's borrow would hold `self` for the
        // rest of the function)
        if self.added.contains_key(&seq) {
            return Ok(self.added.get(&seq).map(Vec::as_slice));
        }
        Ok(match self.chunk_of(tx, seq)? {
            Some(key) => find(&self.chunks[&key], seq),
            None => None,
        })
    }

    /// Removes the event with sequence `seq`; whether there was one.
    pub(crate) fn remove(&mut self, tx: &Tx<'_>, seq: u64) -> Result<bool, StoreError> {
        if self.added.remove(&seq).is_some() {
            return Ok(true);
        }
        let Some(key) = self.chunk_of(tx, seq)? else {
            return Ok(false);
        };
        let chunk = self
            .chunks
            .get_mut(&key)
            .ok_or_else(|| corrupt(tx.tree_name()))?;
        match chunk.binary_search_by_key(&seq, |(s, _)| *s) {
            Ok(i) => {
                chunk.remove(i);
                self.changed.insert(key);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Writes the changed chunks (a chunk left empty goes) and the added events, in new
    /// chunks, into `tx`.
    pub(crate) fn write(self, tx: &mut Tx<'_>) {
        for key in self.changed {
            match self.chunks.get(&key) {
                Some(chunk) if !chunk.is_empty() => {
                    let value = encode(chunk.iter().map(|(s, raw)| (*s, raw.as_slice())));
                    tx.put(key, value);
                }
                _ => tx.remove(key),
            }
        }
        let mut group: Vec<(u64, &[u8])> = Vec::new();
        let mut bytes = 0;
        let flush = |tx: &mut Tx<'_>, group: &mut Vec<(u64, &[u8])>| {
            if let Some(&(last, _)) = group.last() {
                tx.put(slot(last), encode(group.drain(..)));
            }
        };
        for (seq, raw) in &self.added {
            if group.len() == CHUNK_EVENTS || (!group.is_empty() && bytes + raw.len() > CHUNK_BYTES)
            {
                flush(tx, &mut group);
                bytes = 0;
            }
            group.push((*seq, raw));
            bytes += raw.len();
        }
        flush(tx, &mut group);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_dictionary_is_frozen() {
        // Every chunk of version 1 was compressed against these bytes.
        assert_eq!(packed::EVENT_DICTIONARY_1.len(), 12483);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in packed::EVENT_DICTIONARY_1 {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(h, 5_658_316_078_802_718_628, "fnv of the dictionary");
    }

    #[test]
    fn chunks_round_trip_and_old_single_events_read() {
        let events: Vec<(u64, Vec<u8>)> = (0..5)
            .map(|i| {
                (
                    100 + i,
                    format!(r#"{{"id":"e{i}","specversion":"1.0"}}"#).into_bytes(),
                )
            })
            .collect();
        let value = encode(events.iter().map(|(s, r)| (*s, r.as_slice())));
        assert_eq!(value[0], CHUNK_VERSION);
        assert_eq!(decode(&slot(104), &value).unwrap(), events);
        // A journey read finds one event in the uncompressed frames.
        let frames = Frames::of(&slot(104), &value).unwrap();
        assert_eq!(frames.find(102), Some(events[2].1.as_slice()));
        assert_eq!(frames.find(104), Some(events[4].1.as_slice()));
        assert_eq!(frames.find(105), None);
        let plain: usize = events.iter().map(|(_, r)| 12 + r.len()).sum();
        assert_eq!(plain_len(&value), Some(1 + plain as u64));
        // Layouts 6 to 8: one event, plain, under its own sequence.
        let old = br#"{"id":"x"}"#;
        assert_eq!(decode(&slot(7), old).unwrap(), vec![(7, old.to_vec())]);
        assert_eq!(plain_len(old), None);
        // Not a chunk, and a truncated one.
        assert_eq!(decode(&slot(7), b"\x09abc"), None);
        assert_eq!(decode(&slot(7), &value[..value.len() - 2]), None);
        assert_eq!(decode(b"t/short", old), None);
    }

    #[test]
    fn a_read_finds_each_event_in_its_chunk_once_uncompressed() {
        let dir = tempfile::tempdir().unwrap();
        let store = handover_store::Store::open(dir.path()).unwrap();
        let tree = store.tree("journeys").unwrap();
        let event = |seq: u64| format!(r#"{{"id":"e{seq}","specversion":"1.0"}}"#).into_bytes();
        let mut tx = tree.begin();
        // Chunks 10..=12 and 13..=15, a layout 6 event stored alone under 20, and a chunk
        // whose bytes are damaged under 30.
        for seqs in [10..=12u64, 13..=15] {
            let events: Vec<(u64, Vec<u8>)> = seqs.map(|s| (s, event(s))).collect();
            let last = events.last().unwrap().0;
            tx.put(
                slot(last),
                encode(events.iter().map(|(s, r)| (*s, r.as_slice()))),
            );
        }
        tx.put(slot(20), event(20));
        let mut damaged = encode([(30, event(30).as_slice())]);
        damaged.truncate(damaged.len() - 3);
        tx.put(slot(30), damaged);
        tree.apply(tx, 1).unwrap();

        // Two events of one chunk, one of another, one missing (erased), the single event.
        let seqs = [11, 12, 14, 16, 20];
        let mut found = Vec::new();
        read(&tree, &seqs, |i, raw| found.push((i, raw.to_vec()))).unwrap();
        assert_eq!(
            found,
            vec![
                (0, event(11)),
                (1, event(12)),
                (2, event(14)),
                (4, event(20))
            ]
        );
        // Past the last chunk: nothing.
        let mut none = 0;
        read(&tree, &[31], |_, _| none += 1).unwrap();
        assert_eq!(none, 0);
        // A damaged chunk fails the read rather than dropping its events unseen.
        let err = read(&tree, &[11, 30], |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("timeline chunk"), "{err}");
    }
}
