//! The journey projection over the store: people keyed by pseudonymous person key, with
//! aliases for linked local ids and merged NHS numbers.
//!
//! Keys in the `journey` tree (layout version 13; the keys are as in 9):
//! - `p/<person-key>`: the person's `Record`: a version byte (4), then three
//!   length-prefixed parts — the `Head` (JSON: their folded journey without its timeline,
//!   a digest of every event applied for de-duplication by `source`+`id`, the latest
//!   timeline position and a fingerprint of each of their brokerage rows as stored),
//!   their [`PersonFacts`] (JSON, for the measures) and their [`DelayRow`] (JSON; empty
//!   while they have none) — compressed together with LZ4 against a fixed dictionary
//!   (`packed`; the compressed length first, u32 big-endian), then their
//!   timeline's positions, 16 bytes each (event time in microseconds with the sign bit
//!   flipped, then stream sequence; u64 big-endian), in timeline order. For a key that is
//!   an alias (a local id linked to an NHS number, an NHS number merged into another) the
//!   value is `@` followed by the person key it leads to;
//! - `t/<seq>` (stream sequence, u64 big-endian): a chunk of the events of one batch, each
//!   exactly as stored in the log, compressed together (`chunks`); `seq` is the sequence of
//!   its last event. Written once, when the batch is applied, at the end of the key range
//!   (the log's order), so appending touches the same few pages whoever the events are
//!   about, and up to 16 events cost one insert; a merge of two journeys moves only
//!   positions, never these (a merged duplicate, and an erased person's events, leave
//!   their chunk, which is rewritten);
//! - `a/<person-key>`: the person key an alias leads to (kept for erasure, which must find
//!   every alias of a person);
//! - `w/<org>/<drd>/<site>\0<encounter>\0<person-key>` (empty value): the delay row's index
//!   entry under each organisation that may see it (the trust and the responsible council),
//!   so a worklist walks its organisation's entries already in worklist order (longest
//!   delayed first), counts them without reading them and reads only the records of the
//!   page it returns. Index entries change only when the DRD, site, encounter or
//!   organisations do;
//! - `n/<org>/<drd>`: how many `w/<org>/<drd>/…` index entries there are (u64 big-endian;
//!   no key at zero), so a worklist's total is a sum over dates rather than a walk over
//!   every row;
//! - `b/<person-key>/<package-id>`: a [`BrokerageRow`] per package not yet started;
//! - `q/<org>/<h|o>/<required-start>/<package-id>\0<person-key>` (value: the stay's
//!   discharge ready date, or empty): the brokerage row's index entry under each
//!   organisation that may see it (the arranging council and the trust), `h` while the
//!   person is in hospital, `o` otherwise, then in required-start order (`~` when none),
//!   so the queue's first page is read from the start of `h` (delayed people first) without
//!   reading or sorting every row;
//! - `qn/<org>`: how many `q/<org>/…` entries there are (u64 big-endian; no key at zero).
//!
//! An event therefore costs one read (the record, once per person per batch) and one sled
//! write and a sixteenth: the record (which holds the timeline's positions, not its
//! events) and its share of a chunk appended under `t/`.
//! Index entries and brokerage rows are written only when they change: the record keeps the
//! delay row as stored and the head a fingerprint of each brokerage row, and the entries a
//! changed row had are derived again from the row as stored before it is replaced, so the
//! record carries no copy of its index keys. The events of the timeline are decoded only
//! when one arrives out of time order or two journeys merge, which refold the state from
//! them, and when the journey is read.
//!
//! The rows are derived from the journey and written in the same batch, so they share the
//! journey's stream position and can never disagree with it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use handover_events::subject::person_key_of_subject;
use handover_events::{Event, EventData, NhsNumber, PersonRef, PseudonymKey, Timestamp};
use handover_store::{StoreError, Tree, Tx};
use serde::{Deserialize, Serialize};

use crate::chunks::{self, Events};

use crate::journey::{Entry, Journey};
use crate::rows::{
    brokerage_rows, delay_rows, parse_delay_rows, person_facts, BrokerageRow, BrokerageRowKey,
    DelayRow, PersonFacts,
};

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
/// - 2: care packages carry the v2 `schedule` (v1 requests are upcast to it);
/// - 4: one record per person holds a small head, the measure facts and the timeline as the
///   events' stored bytes; aliases redirect from `p/`; unchanged index rows are not
///   rewritten;
/// - 5: the delay row moves into the record, indexed per organisation in worklist order;
/// - 6: the timeline's events move out of the record to `t/<seq>`, appended in log order,
///   so applying an event no longer rewrites the person's earlier events; `n/` counts the
///   delay index per organisation and date;
/// - 7: the brokerage rows are indexed per organisation in queue order (`q/`, counted by
///   `qn/`);
/// - 8: a record's parts are compressed against a fixed dictionary (record version 4).
/// - 9: the timeline's events are kept in compressed chunks of a batch's events under
///   `t/<last sequence>` (`chunks`), not one plain event per key.
/// - 10: the fold changed: between an action and its cancellation the later recorded
///   wins; stays are keyed by trust and encounter id; a re-admission after discharge is a
///   stay of its own; a transfer's ward outlasts an admission keyed in later; the current
///   stay prefers one still in hospital; a discharge fills in the admission it did not
///   follow; re-sent referrals and re-requested packages reopen. The record's delay part
///   holds a JSON array of rows, one per stay in hospital with a DRD (one row before).
/// - 11: an event naming both an NHS number and a local id links them; a cancelled
///   discharge takes the pathway it named with it; a stay's delay counts in the measures
///   against the council of its latest referral, as on the worklist (the first before).
/// - 12: a package a council's own system requested, without a referral, is on that
///   council's brokerage queue even when the person's stay names another council.
/// - 13: a stay's measure facts say whether it was admitted as a transfer from another
///   provider, which is not a readmission.
pub const JOURNEY_VERSION: u32 = 13;

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

/// One event of a batch: its stream sequence, subject, decoded form and stored bytes.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    /// Stream sequence.
    pub seq: u64,
    /// NATS subject it was stored under.
    pub subject: &'a str,
    /// The decoded event.
    pub event: &'a Event,
    /// The event as stored in the log (kept verbatim as its timeline entry).
    pub raw: &'a [u8],
}

/// Longest alias chain followed (merges of merges).
const MAX_ALIAS_DEPTH: usize = 8;

/// First byte of a `p/` value that is an alias rather than a head.
const REDIRECT: u8 = b'@';

pub(crate) fn person_slot(key: &str) -> Vec<u8> {
    format!("p/{key}").into_bytes()
}

/// A timeline's positions as stored at the end of a record.
fn encode_positions(positions: &[At]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * positions.len());
    for (time, seq) in positions {
        out.extend_from_slice(&time.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
    }
    out
}

fn decode_positions(bytes: &[u8]) -> Vec<At> {
    bytes
        .chunks_exact(16)
        .map(|c| {
            let (time, seq) = c.split_at(8);
            (
                u64::from_be_bytes(time.try_into().unwrap_or_default()),
                u64::from_be_bytes(seq.try_into().unwrap_or_default()),
            )
        })
        .collect()
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

/// Where an event sits in a timeline: event time (order-preserving) then stream sequence.
type At = (u64, u64);

fn at(time: &Timestamp, seq: u64) -> At {
    ((time.0.timestamp_micros() as u64) ^ (1 << 63), seq)
}

/// Version byte of a stored [`Record`]: its parts compressed (`packed`).
const RECORD_VERSION: u8 = 4;

/// Version byte of layout 6 and 7's records, whose parts were plain JSON: still read while
/// a store written by them is rebuilt after an upgrade.
const RECORD_VERSION_PLAIN: u8 = 3;

/// Version byte of layout 5's records, which carried the timeline inline after the parts:
/// still read while a store written by it is rebuilt after an upgrade.
const RECORD_VERSION_INLINE: u8 = 2;

/// A person's stored record, decoded from its bytes: head, facts, delay row (empty when
/// none), and the timeline's positions.
///
/// The bytes are the version byte, then (version 4) the length (u32 BE) of the packed
/// parts and the packed parts (the three parts, each prefixed with its length, u32 BE,
/// compressed together by `packed`), then the positions. A version 3 record holds the
/// length-prefixed parts uncompressed; a layout 5 record (version 2) carries the timeline
/// itself after them: frames of `time` u64 BE, `seq` u64 BE, `len` u32 BE and the event's
/// stored bytes.
struct Record<'a> {
    /// The length-prefixed parts: borrowed from a plain record, decompressed otherwise.
    parts: Cow<'a, [u8]>,
    /// Where head, facts and delay row are in `parts`.
    spans: [std::ops::Range<usize>; 3],
    /// The positions (16 bytes each), or a layout 5 record's inline frames.
    timeline: &'a [u8],
    inline: bool,
}

/// The spans of the three length-prefixed parts at the start of `bytes`, and where they end.
fn part_spans(bytes: &[u8]) -> Option<([std::ops::Range<usize>; 3], usize)> {
    let mut at = 0;
    let mut span = || {
        let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let start = at + 4;
        bytes.get(start..start + len)?;
        at = start + len;
        Some(start..at)
    };
    let spans = [span()?, span()?, span()?];
    Some((spans, at))
}

impl<'a> Record<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Record<'a>> {
        let (&version, rest) = bytes.split_first()?;
        match version {
            RECORD_VERSION => {
                let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                let parts = crate::packed::unpack(rest.get(4..4 + len)?)?;
                let (spans, end) = part_spans(&parts)?;
                (end == parts.len()).then_some(Record {
                    parts: Cow::Owned(parts),
                    spans,
                    timeline: &rest[4 + len..],
                    inline: false,
                })
            }
            RECORD_VERSION_PLAIN | RECORD_VERSION_INLINE => {
                let (spans, end) = part_spans(rest)?;
                Some(Record {
                    parts: Cow::Borrowed(&rest[..end]),
                    spans,
                    timeline: &rest[end..],
                    inline: version == RECORD_VERSION_INLINE,
                })
            }
            _ => None,
        }
    }

    fn head(&self) -> &[u8] {
        &self.parts[self.spans[0].clone()]
    }

    fn facts(&self) -> &[u8] {
        &self.parts[self.spans[1].clone()]
    }

    fn delay(&self) -> &[u8] {
        &self.parts[self.spans[2].clone()]
    }

    /// The record's bytes (version 4: the parts compressed).
    fn encode(head: &[u8], facts: &[u8], delay: &[u8], positions: &[At]) -> Vec<u8> {
        let mut parts = Vec::with_capacity(12 + head.len() + facts.len() + delay.len());
        for part in [head, facts, delay] {
            parts.extend_from_slice(&(part.len() as u32).to_be_bytes());
            parts.extend_from_slice(part);
        }
        let packed = crate::packed::pack(&parts);
        let mut out = Vec::with_capacity(5 + packed.len() + 16 * positions.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        out.extend_from_slice(&packed);
        out.extend_from_slice(&encode_positions(positions));
        out
    }
}

/// The events a timeline chunk stored under `key` (`t/…`) holds: `(stream sequence, the
/// event as stored)`, in order; `None` when it is not a chunk. Chunk boundaries follow the
/// batches, so two stores that projected the same stream in different batches hold the same
/// events in different chunks: compare these, not the chunks.
pub fn timeline_events(key: &[u8], value: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    key.starts_with(b"t/")
        .then(|| chunks::decode(key, value))
        .flatten()
}

/// The size of a stored value with its record's parts (or its timeline chunk's events)
/// uncompressed: the logical size of what the tree holds under `key` (for the benchmark's
/// disk figures).
pub fn plain_len(key: &[u8], value: &[u8]) -> u64 {
    let whole = value.len() as u64;
    if key.starts_with(b"t/") {
        return chunks::plain_len(value).unwrap_or(whole);
    }
    if !key.starts_with(b"p/") || value.first() != Some(&RECORD_VERSION) {
        return whole;
    }
    let packed = value
        .get(1..5)
        .and_then(|l| <[u8; 4]>::try_from(l).ok())
        .and_then(|l| value.get(5..5 + u32::from_be_bytes(l) as usize));
    match packed.and_then(|p| Some((p.len() as u64, crate::packed::unpacked_len(p)?))) {
        // The version byte, the parts uncompressed and the positions.
        Some((packed, plain)) => whole - 4 - packed + plain,
        None => whole,
    }
}

/// The frames of a layout 5 inline timeline: `(position, the event as stored)`, in order.
fn frames(mut timeline: &[u8]) -> impl Iterator<Item = (At, &[u8])> {
    std::iter::from_fn(move || {
        let time = u64::from_be_bytes(timeline.get(..8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(timeline.get(8..16)?.try_into().ok()?);
        let len = u32::from_be_bytes(timeline.get(16..20)?.try_into().ok()?) as usize;
        let raw = timeline.get(20..20 + len)?;
        timeline = &timeline[20 + len..];
        Some(((time, seq), raw))
    })
}

/// FNV-1a, 64 bits: a stable, fast fingerprint (not a security property; a collision
/// costs at most a skipped duplicate check or a skipped row rewrite within one person).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // 0 means "no row" in the marks.
    h.max(1)
}

fn digest(event: &Event) -> u64 {
    fnv(&[event.source.as_bytes(), event.id.as_bytes()])
}

/// What `p/<person-key>` holds for a person.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Head {
    /// The folded journey, with an empty timeline (the timeline is under `t/`).
    #[serde(rename = "j")]
    journey: Journey,
    /// Digests of `source`+`id` of every event in the timeline.
    #[serde(rename = "s", default)]
    seen: Vec<u64>,
    /// The latest position in the timeline.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    last: Option<At>,
    /// Fingerprints of the brokerage rows as stored.
    #[serde(rename = "r", default)]
    marks: Marks,
}

/// A [`Head`] to write, borrowed: serialised exactly as the head it stands for.
#[derive(Serialize)]
struct HeadOut<'a> {
    #[serde(rename = "j")]
    journey: &'a Journey,
    #[serde(rename = "s")]
    seen: &'a [u64],
    #[serde(rename = "l", skip_serializing_if = "Option::is_none")]
    last: Option<At>,
    #[serde(rename = "r")]
    marks: &'a Marks,
}

/// Fingerprints of a person's brokerage rows as stored, so an unchanged row is neither
/// rewritten nor re-indexed. The index entries of the delay row and of the brokerage rows
/// are not kept: they are derived again from the stored rows when these change.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Marks {
    /// `(package id, fingerprint of its stored row)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    b: Vec<(String, u64)>,
}

/// A person as loaded into a batch: the decoded head, their timeline's positions (the
/// events stay in the store) and their delay row as stored (empty when none).
#[derive(Debug, Default)]
struct Person {
    head: Head,
    positions: Vec<At>,
    delay: Vec<u8>,
}

fn corrupt(tree: &str, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: tree.to_string(),
        detail: format!("{what}: {e}"),
    }
}

/// Decodes a timeline frame (an event as stored in the log) into its [`Entry`].
fn entry((_, seq): At, raw: &[u8]) -> Option<Entry> {
    let e = Event::from_stored(raw).ok()?;
    Some(Entry {
        seq,
        time: e.time,
        event_type: e.event_type().as_str().to_string(),
        data: e.data.to_json(),
        id: e.id,
        source: e.source,
    })
}

/// A stored record decoded: its head, and its timeline's positions or, for a layout 5
/// record, the inline frames (`(positions, &[])` or `(vec![], frames)`).
fn decode_record<'b>(tree: &str, bytes: &'b [u8]) -> Result<(Head, Vec<At>, &'b [u8]), StoreError> {
    decode_parsed(tree, &parse_record(tree, bytes)?)
}

fn parse_record<'b>(tree: &str, bytes: &'b [u8]) -> Result<Record<'b>, StoreError> {
    Record::parse(bytes).ok_or_else(|| corrupt(tree, "journey record", "bad framing"))
}

/// [`decode_record`] of a record already parsed.
fn decode_parsed<'b>(tree: &str, r: &Record<'b>) -> Result<(Head, Vec<At>, &'b [u8]), StoreError> {
    let head = serde_json::from_slice(r.head()).map_err(|e| corrupt(tree, "journey head", e))?;
    Ok(if r.inline {
        (head, Vec::new(), r.timeline)
    } else {
        (head, decode_positions(r.timeline), &[])
    })
}

/// The delay index keys of the delay rows as stored in `person`'s record (none when empty).
fn stored_delay_keys(tree: &str, person: &str, delay: &[u8]) -> Result<Vec<String>, StoreError> {
    let rows: Vec<DelayRow> =
        parse_delay_rows(delay).map_err(|e| corrupt(tree, "delay rows", e))?;
    Ok(rows.iter().flat_map(|r| delay_keys(person, r)).collect())
}

/// The stored delay row a delay index key names (`w/<org>/<drd>/<site>\0<encounter>\0…`),
/// found among the person's rows by its ready date, site and encounter.
fn row_for_key<T>(key: &[u8], rows: Vec<T>, of: impl Fn(&T) -> (String, &str, &str)) -> Option<T> {
    let mut parts = key.split(|b| *b == 0);
    let head = std::str::from_utf8(parts.next()?).ok()?;
    let encounter = std::str::from_utf8(parts.next()?).ok()?;
    let mut head = head.splitn(4, '/');
    let (_w, _org, drd, site) = (head.next()?, head.next()?, head.next()?, head.next()?);
    rows.into_iter().find(|r| {
        let (d, s, e) = of(r);
        d == drd && s == site && e == encounter
    })
}

/// The brokerage index entries of `person`'s stored row for `package` (none when absent).
fn stored_brokerage_keys(
    tx: &Tx<'_>,
    person: &str,
    package: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let Some(bytes) = tx.get(&row_slot("b", person, Some(package)))? else {
        return Ok(Vec::new());
    };
    let row: BrokerageRow =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(tx.tree_name(), "brokerage row", e))?;
    Ok(brokerage_keys(person, &row))
}

/// A person's slot (`p/<key>`) as read ahead of a batch by [`Journeys::prefetch`].
enum Prefetched {
    /// Nothing stored.
    Absent,
    /// An alias of the journey kept under this key.
    Redirect(String),
    /// A stored journey, decoded.
    Person(Box<Person>),
}

/// Reads and decodes `key`'s slot as `tx` sees it; `None` for what is left to
/// [`Batch::resolve`] (a layout 5 record, whose inline timeline it moves, or one it cannot
/// read or decode: the resolve then reports the error).
fn prefetch_slot(tx: &Tx<'_>, key: &str) -> Option<Prefetched> {
    let Ok(v) = tx.get(&person_slot(key)) else {
        return None;
    };
    let Some(v) = v else {
        return Some(Prefetched::Absent);
    };
    if v.first() == Some(&REDIRECT) {
        return String::from_utf8(v[1..].to_vec())
            .ok()
            .map(Prefetched::Redirect);
    }
    let r = Record::parse(&v)?;
    if r.inline {
        return None;
    }
    let (head, positions, _) = decode_parsed(tx.tree_name(), &r).ok()?;
    Some(Prefetched::Person(Box::new(Person {
        head,
        positions,
        delay: r.delay().to_vec(),
    })))
}

/// People loaded during one batch, written back (with their rows) at its end.
struct Batch<'t, 'a> {
    tx: &'t mut Tx<'a>,
    people: HashMap<String, Person>,
    /// Slots read ahead of the batch; one is used only while the batch has not written it.
    prefetched: HashMap<String, Prefetched>,
    dirty: HashSet<String>,
    /// The timeline events added, read and removed; written into `tx` by `finish`.
    events: Events,
}

impl Batch<'_, '_> {
    /// Follows aliases from `key` to the key a journey is (or would be) kept under, loading
    /// the person into the batch when one is stored.
    fn resolve(&mut self, key: &str) -> Result<String, StoreError> {
        let mut k = key.to_string();
        for _ in 0..MAX_ALIAS_DEPTH {
            if self.people.contains_key(&k) {
                return Ok(k);
            }
            let slot = person_slot(&k);
            if !self.tx.has_write(&slot) {
                match self.prefetched.remove(&k) {
                    Some(Prefetched::Absent) => return Ok(k),
                    Some(Prefetched::Redirect(next)) => {
                        if next == k {
                            return Ok(k);
                        }
                        k = next;
                        continue;
                    }
                    Some(Prefetched::Person(p)) => {
                        self.people.insert(k.clone(), *p);
                        return Ok(k);
                    }
                    None => {}
                }
            }
            match self.tx.get(&slot)? {
                None => return Ok(k),
                Some(v) if v.first() == Some(&REDIRECT) => {
                    let next = String::from_utf8(v[1..].to_vec())
                        .map_err(|e| corrupt(self.tx.tree_name(), "alias", e))?;
                    if next == k {
                        return Ok(k);
                    }
                    k = next;
                }
                Some(v) => {
                    // Parsed (and decompressed) once for the head and the delay row.
                    let r = parse_record(self.tx.tree_name(), &v)?;
                    let (head, mut positions, inline) = decode_parsed(self.tx.tree_name(), &r)?;
                    // A layout 5 record's inline timeline moves to `t/`, each event in a
                    // chunk of its own (its sequence is before every chunk's written since).
                    for (at, raw) in frames(inline) {
                        self.tx
                            .put(chunks::slot(at.1), chunks::encode([(at.1, raw)]));
                        positions.push(at);
                    }
                    let delay = r.delay().to_vec();
                    self.people.insert(
                        k.clone(),
                        Person {
                            head,
                            positions,
                            delay,
                        },
                    );
                    return Ok(k);
                }
            }
        }
        Ok(k)
    }

    /// Refolds the person's state from their timeline (after an out-of-order event or a
    /// merge).
    fn refold(&mut self, p: &mut Person) -> Result<(), StoreError> {
        let nhs = p.head.journey.nhs_number.take();
        p.head.journey = Journey::new(nhs);
        p.head.last = None;
        for at in &p.positions {
            let Some(raw) = self.events.get(self.tx, at.1)? else {
                continue;
            };
            let Ok(e) = Event::from_stored(raw) else {
                continue;
            };
            p.head.journey.fold(&e.data, &e.time, at.1, &e.source);
            p.head.last = Some(*at).max(p.head.last);
        }
        Ok(())
    }

    /// Adds `here` to the person's timeline positions, in order.
    fn place(p: &mut Person, here: At) {
        let i = p.positions.partition_point(|x| *x <= here);
        p.positions.insert(i, here);
    }

    /// Adds `a` to the person's timeline; nothing when already there.
    fn apply(&mut self, p: &mut Person, a: &Applied<'_>) -> Result<(), StoreError> {
        let event = a.event;
        if p.head.journey.nhs_number.is_none() {
            p.head.journey.nhs_number = event.subject.map(|n| n.as_string());
        }
        let d = digest(event);
        if p.head.seen.contains(&d) {
            return Ok(());
        }
        p.head.seen.push(d);
        let here = at(&event.time, a.seq);
        self.events.add(a.seq, a.raw);
        Self::place(p, here);
        if p.head.last.is_none_or(|l| here >= l) {
            p.head.last = Some(here);
            p.head
                .journey
                .fold(&event.data, &event.time, a.seq, &event.source);
            Ok(())
        } else {
            self.refold(p)
        }
    }

    /// Makes the key `from` lead to `to` (`from` holds no journey of its own).
    fn redirect(&mut self, from: &str, to: &str) {
        let mut redirect = vec![REDIRECT];
        redirect.extend_from_slice(to.as_bytes());
        self.tx.put(person_slot(from), redirect);
        self.tx.put(alias_slot(from), to.as_bytes().to_vec());
    }

    /// Makes `from` an alias of `to`, absorbing any journey kept under `from` into `p`.
    fn alias(&mut self, from: &str, to: &str, p: &mut Person) -> Result<(), StoreError> {
        if from == to {
            return Ok(());
        }
        let other = self.people.remove(from);
        self.dirty.remove(from);
        self.redirect(from, to);
        let Some(other) = other else {
            return Ok(());
        };
        // Its rows go; its timeline joins this one (without duplicates) and the state is
        // refolded.
        for key in stored_delay_keys(self.tx.tree_name(), from, &other.delay)? {
            index_entry(self.tx, key.into_bytes(), None)?;
        }
        for (package, _) in &other.head.marks.b {
            for (key, _) in stored_brokerage_keys(self.tx, from, package)? {
                index_entry(self.tx, key.into_bytes(), None)?;
            }
            self.tx.remove(row_slot("b", from, Some(package)));
        }
        for here in other.positions {
            let Some(raw) = self.events.get(self.tx, here.1)? else {
                continue;
            };
            let d = Event::from_stored(raw).map(|e| digest(&e)).ok();
            match d {
                Some(d) if !p.head.seen.contains(&d) => {
                    p.head.seen.push(d);
                    Self::place(p, here);
                }
                // Already in this timeline (the same event sent twice, once under each
                // identity): this copy is no longer anyone's.
                _ => {
                    self.events.remove(self.tx, here.1)?;
                }
            }
        }
        if p.head.journey.nhs_number.is_none() {
            p.head.journey.nhs_number = other.head.journey.nhs_number;
        }
        self.refold(p)
    }

    /// Writes every changed person's record and those of their index rows whose content
    /// changed.
    fn finish(mut self) -> Result<(), StoreError> {
        let mut dirty: Vec<(String, Person)> = self
            .dirty
            .drain()
            .filter_map(|k| {
                let p = self.people.remove(&k)?;
                Some((k, p))
            })
            .collect();
        dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Encoding one person's rows and record does not depend on any other's: done on the
        // pool. What they change in the index is then written here, in key order.
        let encoded = crate::par_map(&dirty, |(_, p)| Encoded::of(p));
        let tree = self.tx.tree_name().to_string();
        for ((k, p), e) in dirty.iter().zip(encoded) {
            // The delay row lives in the record; its index entries change only when the
            // DRD, site, encounter or organisations do, and only a changed row is looked at.
            if e.delay != p.delay {
                let old = stored_delay_keys(&tree, k, &p.delay)?;
                let keys: Vec<String> = e.rows.iter().flat_map(|r| delay_keys(k, r)).collect();
                for key in &old {
                    if !keys.contains(key) {
                        index_entry(self.tx, key.as_bytes().to_vec(), None)?;
                    }
                }
                for key in keys {
                    if !old.contains(&key) {
                        index_entry(self.tx, key.into_bytes(), Some(Vec::new()))?;
                    }
                }
            }
            // A brokerage row and its index entries change only when its content does: the
            // old entries are derived from the row as stored, before it is replaced.
            let marks = &p.head.marks.b;
            for (row, bytes, h) in e.brokerage {
                let old = marks.iter().find(|(p, _)| *p == row.package_id);
                if old.map(|(_, oh)| *oh) == Some(h) {
                    continue;
                }
                let stored = match old {
                    Some(_) => stored_brokerage_keys(self.tx, k, &row.package_id)?,
                    None => Vec::new(),
                };
                let entries = brokerage_keys(k, &row);
                for (key, _) in &stored {
                    if !entries.iter().any(|(new, _)| new == key) {
                        index_entry(self.tx, key.as_bytes().to_vec(), None)?;
                    }
                }
                for (key, value) in entries {
                    match stored.iter().find(|(old, _)| *old == key) {
                        None => index_entry(self.tx, key.into_bytes(), Some(value.into_bytes()))?,
                        Some((_, old)) if *old != value => {
                            self.tx.put(key.into_bytes(), value.into_bytes())
                        }
                        Some(_) => {}
                    }
                }
                self.tx.put(row_slot("b", k, Some(&row.package_id)), bytes);
            }
            for (package, _) in marks {
                if !e.marks.b.iter().any(|(p, _)| p == package) {
                    for (key, _) in stored_brokerage_keys(self.tx, k, package)? {
                        index_entry(self.tx, key.into_bytes(), None)?;
                    }
                    self.tx.remove(row_slot("b", k, Some(package)));
                }
            }
            self.tx.put(person_slot(k), e.record);
        }
        self.events.write(self.tx);
        Ok(())
    }
}

/// A changed person's rows and record, encoded for writing (see [`Batch::finish`]).
struct Encoded {
    /// The delay rows (one per stay in hospital with a DRD) and their JSON (empty when
    /// none).
    rows: Vec<DelayRow>,
    delay: Vec<u8>,
    /// Each brokerage row, its JSON and that JSON's fingerprint.
    brokerage: Vec<(BrokerageRow, Vec<u8>, u64)>,
    /// The fingerprints of those rows, as the record's head now holds them.
    marks: Marks,
    /// The person's record: the head with the new marks, facts, delay row, positions.
    record: Vec<u8>,
}

impl Encoded {
    fn of(p: &Person) -> Encoded {
        let j = &p.head.journey;
        let rows = delay_rows(j);
        let delay = if rows.is_empty() {
            Vec::new()
        } else {
            json(&rows)
        };
        let brokerage: Vec<(BrokerageRow, Vec<u8>, u64)> = brokerage_rows(j)
            .into_iter()
            .map(|row| {
                let bytes = json(&row);
                let h = fnv(&[&bytes]);
                (row, bytes, h)
            })
            .collect();
        let marks = Marks {
            b: brokerage
                .iter()
                .map(|(row, _, h)| (row.package_id.clone(), *h))
                .collect(),
        };
        let head = json(&HeadOut {
            journey: j,
            seen: &p.head.seen,
            last: p.head.last,
            marks: &marks,
        });
        let facts = json(&person_facts(j));
        let record = Record::encode(&head, &facts, &delay, &p.positions);
        Encoded {
            rows,
            delay,
            brokerage,
            marks,
            record,
        }
    }
}

/// The organisations a row is indexed under: each of the two given, once.
fn orgs<'a>(a: Option<&'a str>, b: Option<&'a str>) -> Vec<&'a str> {
    let mut orgs: Vec<&str> = [a, b].into_iter().flatten().collect();
    orgs.dedup();
    orgs
}

/// The keys a delay row is stored under: one per organisation that may see it.
fn delay_keys(person: &str, r: &DelayRow) -> Vec<String> {
    orgs(r.trust.as_deref(), r.council.as_deref())
        .into_iter()
        .map(|org| {
            format!(
                "w/{org}/{}/{}\0{}\0{person}",
                r.discharge_ready_date,
                r.site.as_deref().unwrap_or(""),
                r.encounter_id
            )
        })
        .collect()
}

/// The keys a brokerage row is stored under, one per organisation that may see it (the
/// arranging council and the trust of the stay), with the discharge ready date as value.
fn brokerage_keys(person: &str, r: &BrokerageRow) -> Vec<(String, String)> {
    let trust = r.hospital.as_ref().and_then(|h| h.trust.as_deref());
    let group = if r.hospital.is_some() { 'h' } else { 'o' };
    let start = r
        .required_start
        .map(|d| d.to_string())
        .unwrap_or_else(|| "~".into());
    let drd = r
        .hospital
        .as_ref()
        .and_then(|h| h.discharge_ready_date)
        .map(|d| d.to_string())
        .unwrap_or_default();
    orgs(r.council.as_deref(), trust)
        .into_iter()
        .map(|org| {
            (
                format!("q/{org}/{group}/{start}/{}\0{person}", r.package_id),
                drd.clone(),
            )
        })
        .collect()
}

/// The counter an index entry counts in: `n/<org>/<drd>` for a delay entry
/// `w/<org>/<drd>/…`, `qn/<org>` for a brokerage entry `q/<org>/…`.
fn counter_slot(index_key: &[u8]) -> Option<Vec<u8>> {
    if let Some(rest) = index_key.strip_prefix(b"q/") {
        let org = rest.iter().position(|b| *b == b'/')?;
        let mut slot = b"qn/".to_vec();
        slot.extend_from_slice(&rest[..org]);
        return Some(slot);
    }
    let rest = index_key.strip_prefix(b"w/")?;
    let org = rest.iter().position(|b| *b == b'/')?;
    let drd = rest[org + 1..].iter().position(|b| *b == b'/')?;
    let mut slot = b"n/".to_vec();
    slot.extend_from_slice(&rest[..org + 1 + drd]);
    Some(slot)
}

/// Adds an index entry with its value (`Some`) to, or removes it (`None`) from, the tree,
/// keeping its counter. Adding must be of a key not yet stored.
pub(crate) fn index_entry(
    tx: &mut Tx<'_>,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
) -> Result<(), StoreError> {
    let put = value.is_some();
    if let Some(slot) = counter_slot(&key) {
        let n = tx
            .get(&slot)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let n = if put { n + 1 } else { n.saturating_sub(1) };
        if n == 0 {
            tx.remove(slot);
        } else {
            tx.put(slot, n.to_be_bytes().to_vec());
        }
    }
    match value {
        Some(v) => tx.put(key, v),
        None => tx.remove(key),
    }
    Ok(())
}

/// The sequences of a person's timeline events, read from their stored record (for
/// erasure).
pub(crate) fn event_seqs(record: &[u8]) -> Vec<u64> {
    match Record::parse(record) {
        Some(r) if !r.inline => decode_positions(r.timeline)
            .into_iter()
            .map(|(_, seq)| seq)
            .collect(),
        _ => Vec::new(),
    }
}

/// The index entries of the person stored under `person` with `record`: those of their
/// delay row (from the record) and of their brokerage rows (read from the tree), for
/// erasure.
pub(crate) fn index_keys(
    tx: &Tx<'_>,
    person: &str,
    record: &[u8],
) -> Result<Vec<Vec<u8>>, StoreError> {
    let Some(r) = Record::parse(record) else {
        return Ok(Vec::new());
    };
    let mut keys = stored_delay_keys(tx.tree_name(), person, r.delay())?;
    let head: Head =
        serde_json::from_slice(r.head()).map_err(|e| corrupt(tx.tree_name(), "journey head", e))?;
    for (package, _) in &head.marks.b {
        keys.extend(
            stored_brokerage_keys(tx, person, package)?
                .into_iter()
                .map(|(k, _)| k),
        );
    }
    Ok(keys.into_iter().map(String::into_bytes).collect())
}

/// The row of a person's stored delay rows `v` that the index key `k` names.
fn full_row(k: &[u8], v: &[u8]) -> Option<DelayRow> {
    let rows: Vec<DelayRow> = parse_delay_rows(v).ok()?;
    row_for_key(k, rows, |r| {
        (
            r.discharge_ready_date.to_string(),
            r.site.as_deref().unwrap_or(""),
            &r.encounter_id,
        )
    })
}

/// `w/…` → `n/…`: the counter range matching an index range bound.
fn counter_slot_of(bound: &[u8]) -> Vec<u8> {
    let mut slot = bound.to_vec();
    slot[0] = b'n';
    slot
}

/// One page of an organisation's discharge-delays worklist (see [`Journeys::delay_page`]).
#[derive(Debug, Default)]
pub struct DelayPage {
    /// Rows matching, in all.
    pub total: usize,
    /// The page asked for, longest delayed first.
    pub rows: Vec<DelayRow>,
}

/// One page of an organisation's brokerage queue (see [`Journeys::brokerage_page`]).
#[derive(Debug, Default)]
pub struct BrokeragePage {
    /// Rows matching, in all.
    pub total: usize,
    /// The page asked for, in queue order.
    pub rows: Vec<BrokerageRow>,
}

/// `q/<org>/<g>/<start>/<package>\0<person>` → `b/<person>/<package>`.
fn brokerage_slot(index_key: &[u8]) -> Option<Vec<u8>> {
    let rest = index_key.strip_prefix(b"q/")?;
    let mut parts = rest.splitn(4, |b| *b == b'/');
    let (_org, _group, _start) = (parts.next()?, parts.next()?, parts.next()?);
    let tail = parts.next()?;
    let nul = tail.iter().rposition(|b| *b == 0)?;
    let mut slot = b"b/".to_vec();
    slot.extend_from_slice(&tail[nul + 1..]);
    slot.push(b'/');
    slot.extend_from_slice(&tail[..nul]);
    Some(slot)
}

/// The brokerage queue of a tree without the `q/` index (layouts before 7): every row
/// read, filtered and sorted.
fn unindexed_brokerage_page(
    tree: &Tree,
    org: &str,
    today: chrono::NaiveDate,
    filter: Option<&dyn Fn(&BrokerageRowKey<'_>) -> bool>,
    (offset, limit): (usize, usize),
) -> Result<BrokeragePage, StoreError> {
    let values: Vec<Vec<u8>> = tree
        .scan_prefix(b"b/")
        .map(|r| r.map(|(_, v)| v))
        .collect::<Result<_, _>>()?;
    let mut keyed: Vec<(BrokerageRowKey<'_>, &[u8])> = values
        .iter()
        .filter_map(|v| {
            Some((
                serde_json::from_slice::<BrokerageRowKey<'_>>(v).ok()?,
                &v[..],
            ))
        })
        .filter(|(r, _)| {
            r.council.as_deref() == Some(org)
                || r.hospital.as_ref().and_then(|h| h.trust.as_deref()) == Some(org)
        })
        .filter(|(r, _)| filter.is_none_or(|keep| keep(r)))
        .collect();
    let delayed = |r: &BrokerageRowKey<'_>| {
        r.hospital
            .as_ref()
            .and_then(|h| h.discharge_ready_date)
            .is_some_and(|d| d.0 < today)
    };
    keyed.sort_by(|(a, _), (b, _)| {
        delayed(b)
            .cmp(&delayed(a))
            .then_with(|| a.hospital.is_none().cmp(&b.hospital.is_none()))
            .then_with(|| {
                let start = |r: &BrokerageRowKey<'_>| r.required_start.map(|d| d.0);
                start(a)
                    .unwrap_or(chrono::NaiveDate::MAX)
                    .cmp(&start(b).unwrap_or(chrono::NaiveDate::MAX))
            })
            .then_with(|| a.package_id.cmp(&b.package_id))
    });
    Ok(BrokeragePage {
        total: keyed.len(),
        rows: keyed
            .into_iter()
            .skip(offset)
            .take(limit)
            .filter_map(|(_, v)| serde_json::from_slice(v).ok())
            .collect(),
    })
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

    /// Applies a batch of events to `tx`; an event that cannot be applied fails the batch
    /// (see [`Journeys::try_apply_batch`]).
    pub fn apply_batch(&self, tx: &mut Tx<'_>, events: &[Applied<'_>]) -> Result<(), ApplyError> {
        self.try_apply_batch(tx, events)
    }

    /// Applies a batch of events to `tx`, event by event. When one cannot be applied (its
    /// fold panics, or the test hook refuses it), stops and names it: `tx` then holds a
    /// partial batch and must be dropped; the caller applies the batch again without it.
    pub fn try_apply_batch(
        &self,
        tx: &mut Tx<'_>,
        events: &[Applied<'_>],
    ) -> Result<(), ApplyError> {
        let prefetched = self.prefetch(tx, events);
        let mut b = Batch {
            tx,
            people: HashMap::new(),
            prefetched,
            dirty: HashSet::new(),
            events: Events::default(),
        };
        for (index, a) in events.iter().enumerate() {
            if let Some(error) = self.fault.and_then(|f| f(a.event)) {
                return Err(ApplyError::Event { index, error });
            }
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.apply_one(&mut b, a)
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
        b.finish()?;
        Ok(())
    }

    /// The key `a`'s person's own journey is kept under (before aliases); `None` when the
    /// event names no person.
    fn own_key(&self, a: &Applied<'_>) -> Option<String> {
        let person = a.event.person()?;
        Some(match person_key_of_subject(a.subject) {
            Some(k) => k.to_string(),
            None => self.key.person_key(&person),
        })
    }

    /// Reads ahead, on the thread pool, the stored records of the people `events` are about
    /// (under their own keys), decoded: reading and decoding a record is most of an
    /// event's work outside sled's writes, and one person's does not wait on another's.
    fn prefetch(&self, tx: &Tx<'_>, events: &[Applied<'_>]) -> HashMap<String, Prefetched> {
        let mut keys: Vec<String> = events.iter().filter_map(|a| self.own_key(a)).collect();
        keys.sort_unstable();
        keys.dedup();
        let slots = crate::par_map(&keys, |k| prefetch_slot(tx, k));
        keys.into_iter()
            .zip(slots)
            .filter_map(|(k, p)| Some((k, p?)))
            .collect()
    }

    fn apply_one(&self, b: &mut Batch<'_, '_>, a: &Applied<'_>) -> Result<(), StoreError> {
        let event = a.event;
        let Some(own) = self.own_key(a) else {
            return Ok(());
        };
        let key = b.resolve(&own)?;
        let mut person = b.people.remove(&key).unwrap_or_else(|| Person {
            head: Head {
                journey: Journey::new(event.subject.map(|n| n.as_string())),
                ..Head::default()
            },
            positions: Vec::new(),
            delay: Vec::new(),
        });
        let result = (|| {
            b.apply(&mut person, a)?;
            if event.subject.is_some() {
                let links: Vec<PersonRef> = match &event.data {
                    EventData::PersonIdentified(d) => {
                        d.local_ids.iter().cloned().map(PersonRef::Local).collect()
                    }
                    EventData::PersonLinked(d) => vec![PersonRef::Local(d.local_id.clone())],
                    EventData::NhsNumberChanged(d) => vec![PersonRef::Nhs(d.previous_nhs_number)],
                    // Any other event that names the person both ways (a council export's
                    // row with the NHS number and the council's person id, a producer that
                    // knows both) asserts the link as a person.linked event would.
                    other => other
                        .local_id()
                        .cloned()
                        .map(PersonRef::Local)
                        .into_iter()
                        .collect(),
                };
                for l in links {
                    let local = matches!(l, PersonRef::Local(_));
                    let link = self.key.person_key(&l);
                    let from = b.resolve(&link)?;
                    // A local id now asserted for this NHS number while it leads to another
                    // NHS number's journey (a reused or mistyped id, or a record the source
                    // re-assigned): the NHS number identifies the person, so the two are not
                    // merged. The local id leads here from now on; that journey stays as is.
                    let elsewhere = from != key
                        && b.people.get(&from).is_some_and(|o| {
                            o.head.journey.nhs_number.is_some()
                                && o.head.journey.nhs_number != person.head.journey.nhs_number
                        });
                    if local && elsewhere {
                        if link != from {
                            b.redirect(&link, &key);
                        }
                        continue;
                    }
                    b.alias(&from, &key, &mut person)?;
                }
            }
            Ok(())
        })();
        b.dirty.insert(key.clone());
        b.people.insert(key, person);
        result
    }

    /// Reads a person's journey (with its timeline) by NHS number.
    pub fn get(&self, tree: &Tree, nhs: &NhsNumber) -> Result<Option<Journey>, StoreError> {
        self.get_ref(tree, &PersonRef::Nhs(*nhs))
    }

    /// Reads a person's journey by NHS number or local id (a local id linked to an NHS
    /// number leads to that number's journey).
    pub fn get_ref(&self, tree: &Tree, person: &PersonRef) -> Result<Option<Journey>, StoreError> {
        // The record, its redirects and its timeline chunks from one tree, should a
        // rebuild swap it meanwhile.
        let tree = &tree.pinned();
        let mut key = self.key.person_key(person);
        for _ in 0..MAX_ALIAS_DEPTH {
            match tree.get(&person_slot(&key))? {
                None => return Ok(None),
                Some(v) if v.first() == Some(&REDIRECT) => {
                    let next = String::from_utf8_lossy(&v[1..]).to_string();
                    if next == key {
                        return Ok(None);
                    }
                    key = next;
                }
                Some(v) => return load(tree, &v).map(Some),
            }
        }
        Ok(None)
    }

    /// Every delay row (stays in hospital with a DRD), unfiltered.
    pub fn delay_rows(tree: &Tree) -> Result<Vec<DelayRow>, StoreError> {
        let mut out = Vec::new();
        for r in tree.scan_prefix(b"p/") {
            let (_, v) = r?;
            if let Some(r) = Record::parse(&v) {
                out.extend(parse_delay_rows::<DelayRow>(r.delay()).unwrap_or_default());
            }
        }
        Ok(out)
    }

    /// The delay rows `org` may see whose discharge ready date is before `today`, longest
    /// delayed first (then by site and encounter): how many pass `filter` and, of those,
    /// `limit` from the `offset`-th (`None`: every row passes, and the total comes from the
    /// counters without reading the rows).
    pub fn delay_page(
        tree: &Tree,
        org: &str,
        today: chrono::NaiveDate,
        filter: Option<&dyn Fn(&crate::rows::DelayRowKey<'_>) -> bool>,
        (offset, limit): (usize, usize),
    ) -> Result<DelayPage, StoreError> {
        let tree = &tree.pinned();
        let start = format!("w/{org}/").into_bytes();
        let end = format!("w/{org}/{}", handover_events::Date(today)).into_bytes();
        let mut page = DelayPage::default();
        let row = |key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
            let person = key.rsplit(|b| *b == 0).next().unwrap_or_default();
            let mut slot = b"p/".to_vec();
            slot.extend_from_slice(person);
            Ok(tree
                .get(&slot)?
                .and_then(|v| Record::parse(&v).map(|r| r.delay().to_vec()))
                .filter(|d| !d.is_empty()))
        };
        match filter {
            None => {
                // The counters of the dates before today.
                let (cs, ce) = (counter_slot_of(&start), counter_slot_of(&end));
                for r in tree.scan_range(&cs, &ce) {
                    let (_, v) = r?;
                    let n = <[u8; 8]>::try_from(v.as_slice())
                        .map(u64::from_be_bytes)
                        .map_err(|_| corrupt(tree.name(), "delay index counter", "not 8 bytes"))?;
                    page.total += n as usize;
                }
                for r in tree.scan_range(&start, &end).skip(offset).take(limit) {
                    let (k, _) = r?;
                    if let Some(row) = row(&k)?.and_then(|v| full_row(&k, &v)) {
                        page.rows.push(row);
                    }
                }
            }
            Some(keep) => {
                for r in tree.scan_range(&start, &end) {
                    let (k, _) = r?;
                    let Some(v) = row(&k)? else {
                        continue;
                    };
                    let Ok(keys) = parse_delay_rows::<crate::rows::DelayRowKey<'_>>(&v) else {
                        continue;
                    };
                    let Some(key) = row_for_key(&k, keys, |r| {
                        (
                            r.discharge_ready_date.to_string(),
                            r.site.as_deref().unwrap_or(""),
                            &r.encounter_id,
                        )
                    }) else {
                        continue;
                    };
                    if !keep(&key) {
                        continue;
                    }
                    page.total += 1;
                    if page.total > offset && page.rows.len() < limit {
                        if let Some(row) = full_row(&k, &v) {
                            page.rows.push(row);
                        }
                    }
                }
            }
        }
        Ok(page)
    }

    /// One page of `org`'s brokerage queue: the packages not yet started that `org` may see
    /// (it is the arranging council or the trust of the stay), people delayed in hospital
    /// (past their discharge ready date on `today`) first, then others in hospital, then
    /// the rest, each by required start (none last) and package id: how many pass `filter`
    /// and, of those, `limit` from the `offset`-th.
    ///
    /// Without a filter the total comes from the counter and the walk of the index stops
    /// as soon as the page is known; with one, every entry of `org` is checked.
    pub fn brokerage_page(
        tree: &Tree,
        org: &str,
        today: chrono::NaiveDate,
        filter: Option<&dyn Fn(&BrokerageRowKey<'_>) -> bool>,
        (offset, limit): (usize, usize),
    ) -> Result<BrokeragePage, StoreError> {
        let tree = &tree.pinned();
        if tree.scan_prefix(b"q/").next().is_none() {
            // No index: empty, or a tree of an earlier layout still serving while its
            // rebuild runs.
            return unindexed_brokerage_page(tree, org, today, filter, (offset, limit));
        }
        let need = offset.saturating_add(limit);
        let today = handover_events::Date(today).to_string();
        let row = |key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
            match brokerage_slot(key) {
                Some(slot) => tree.get(&slot),
                None => Err(corrupt(tree.name(), "brokerage index", "bad key")),
            }
        };
        // Index keys of the three parts of the queue, in order, at most `need` of each.
        let (mut delayed, mut waiting, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        let mut total = 0;
        for group in ["h", "o"] {
            for entry in tree.scan_prefix(format!("q/{org}/{group}/").as_bytes()) {
                let (k, v) = entry?;
                if let Some(keep) = filter {
                    let Some(value) = row(&k)? else {
                        continue;
                    };
                    match serde_json::from_slice::<BrokerageRowKey<'_>>(&value) {
                        Ok(r) if keep(&r) => {}
                        _ => continue,
                    }
                    total += 1;
                } else if delayed.len() >= need
                    || (group == "o" && delayed.len() + waiting.len() + rest.len() >= need)
                {
                    // The page is known; the total comes from the counter.
                    break;
                }
                let part = match group {
                    "o" => &mut rest,
                    _ if !v.is_empty() && v.as_slice() < today.as_bytes() => &mut delayed,
                    _ => &mut waiting,
                };
                if part.len() < need {
                    part.push(k);
                }
            }
        }
        if filter.is_none() {
            total = match tree.get(format!("qn/{org}").as_bytes())? {
                None => 0,
                Some(v) => <[u8; 8]>::try_from(v.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt(tree.name(), "brokerage index counter", "not 8 bytes"))?
                    as usize,
            };
        }
        let mut page = BrokeragePage {
            total,
            rows: Vec::new(),
        };
        for k in delayed
            .into_iter()
            .chain(waiting)
            .chain(rest)
            .skip(offset)
            .take(limit)
        {
            if let Some(r) = row(&k)?.and_then(|v| serde_json::from_slice(&v).ok()) {
                page.rows.push(r);
            }
        }
        Ok(page)
    }

    /// Every person's facts for the measures.
    pub fn facts(tree: &Tree) -> Result<Vec<PersonFacts>, StoreError> {
        from_records(tree, |r| r.facts())
    }

    /// The stream sequence of every timeline event the tree holds (in its chunks under
    /// `t/`), in order: for checks that nothing is kept twice and nothing erased is left.
    pub fn stored_event_seqs(tree: &Tree) -> Result<Vec<u64>, StoreError> {
        let mut seqs = Vec::new();
        for r in tree.scan_prefix(b"t/") {
            let (k, v) = r?;
            let chunk = chunks::decode(&k, &v)
                .ok_or_else(|| corrupt(tree.name(), "timeline chunk", "bad framing"))?;
            seqs.extend(chunk.into_iter().map(|(seq, _)| seq));
        }
        Ok(seqs)
    }

    /// Every journey in the tree (with its timeline), in person-key order.
    pub fn all(tree: &Tree) -> impl Iterator<Item = Result<Journey, StoreError>> + '_ {
        tree.scan_prefix(b"p/").filter_map(move |r| match r {
            Err(e) => Some(Err(e)),
            Ok((_, v)) if v.first() == Some(&REDIRECT) => None,
            Ok((_, v)) => Some(load(tree, &v)),
        })
    }
}

/// A journey from its stored record `bytes`, with its timeline's events read and decoded.
fn load(tree: &Tree, bytes: &[u8]) -> Result<Journey, StoreError> {
    if bytes.first() == Some(&b'{') {
        // Layouts 1 and 2 stored the whole journey as JSON: still readable while a store
        // written by them is rebuilt after an upgrade.
        return serde_json::from_slice(bytes).map_err(|e| corrupt(tree.name(), "journey", e));
    }
    let (head, positions, inline) = decode_record(tree.name(), bytes)?;
    let mut journey = head.journey;
    journey.timeline = frames(inline)
        .filter_map(|(at, raw)| entry(at, raw))
        .collect();
    let seqs: Vec<u64> = positions.iter().map(|at| at.1).collect();
    chunks::read(tree, &seqs, |i, raw| {
        if let Some(e) = entry(positions[i], raw) {
            journey.timeline.push(e);
        }
    })?;
    Ok(journey)
}

/// One part (`part`) of every person's record, decoded; records without it (an empty part)
/// and alias redirects are skipped.
fn from_records<T: serde::de::DeserializeOwned>(
    tree: &Tree,
    part: for<'r> fn(&'r Record<'_>) -> &'r [u8],
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for r in tree.scan_prefix(b"p/") {
        let (_, v) = r?;
        let Some(r) = Record::parse(&v) else {
            continue;
        };
        let bytes = part(&r);
        if bytes.is_empty() {
            continue;
        }
        if let Ok(x) = serde_json::from_slice(bytes) {
            out.push(x);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_head_is_written_exactly_as_the_head_it_stands_for() {
        let mut journey = Journey::new(Some("9434765919".into()));
        journey.identity.family_name = Some("Jones \"Jr\"".into());
        journey.identity.postcode = Some("LS1 4AP".into());
        for (last, marks) in [
            (Some((7, 3)), vec![("pkg-1".to_string(), 42)]),
            (None, Vec::new()),
        ] {
            let head = Head {
                journey: journey.clone(),
                seen: vec![1, 2, 3],
                last,
                marks: Marks { b: marks },
            };
            let out = json(&HeadOut {
                journey: &head.journey,
                seen: &head.seen,
                last: head.last,
                marks: &head.marks,
            });
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                String::from_utf8(json(&head)).unwrap()
            );
            let back: Head = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                (back.journey, back.seen, back.last, back.marks),
                (head.journey, head.seen, head.last, head.marks)
            );
        }
    }
}
