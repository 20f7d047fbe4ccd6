//! The stored journey projection (head record + one timeline key per event, aliases as
//! redirects) gives the same journey whatever order the events arrive in and however they
//! are split into batches, equals the pure fold ([`Journey::apply`]) of the same events,
//! follows links and NHS-number merges, ignores duplicates, and erasure leaves nothing.
#![allow(clippy::unwrap_used)]

use handover_events::{Event, NhsNumber, PseudonymKey};
use handover_projections::journeys::Applied;
use handover_projections::{Journey, Journeys};
use handover_store::{Store, Tree};
use serde_json::{json, Value};

const A: &str = "9434765919";
const B: &str = "9434765870";

fn example(event_type: &str) -> Value {
    let path = format!(
        "{}/../../schemas/examples/handover.{event_type}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An example event with its id, time and person replaced: `who` is an NHS number, or
/// `local:<value>` for a person known only by a hospital MRN.
fn ev(event_type: &str, id: &str, hour: u32, who: &str, data: Value) -> Value {
    let mut e = example(event_type);
    e["id"] = json!(id);
    e["time"] = json!(format!(
        "2026-11-{:02}T{:02}:00:00Z",
        10 + hour / 24,
        hour % 24
    ));
    match who.strip_prefix("local:") {
        Some(mrn) => {
            e.as_object_mut().unwrap().remove("subject");
            e["data"]["local_id"] = json!({"system": "https://rx1.nhs.uk/id/mrn", "value": mrn});
        }
        None => e["subject"] = json!(who),
    }
    if let (Some(d), Value::Object(extra)) = (e["data"].as_object_mut(), data) {
        d.extend(extra);
    }
    e
}

/// One person's story told by several systems: events under a local id before the NHS
/// number is known, a second NHS number merged in, a duplicate, and one event whose time
/// is earlier than everything else.
fn story() -> Vec<Value> {
    vec![
        ev("discharge.admitted.v1", "e1", 2, "local:M1", json!({})),
        ev(
            "discharge.ready-date-recorded.v1",
            "e2",
            5,
            "local:M1",
            json!({}),
        ),
        ev(
            "person.identified.v1",
            "e3",
            6,
            A,
            json!({"local_ids": [{"system": "https://rx1.nhs.uk/id/mrn", "value": "M1"}]}),
        ),
        ev("referral.sent.v1", "e4", 7, B, json!({})),
        ev("person.nhs-number-changed.v1", "e5", 9, A, json!({})),
        ev(
            "discharge.transferred.v1",
            "e6",
            10,
            A,
            json!({"ward": "Ward 9"}),
        ),
        ev(
            "discharge.ready-date-recorded.v1",
            "e2",
            5,
            "local:M1",
            json!({}),
        ),
        ev("discharge.delay-recorded.v1", "e0", 1, A, json!({})),
        ev("care-package.requested.v1", "e7", 12, A, json!({})),
        ev("referral.accepted.v1", "e8", 11, B, json!({})),
    ]
}

fn key() -> PseudonymKey {
    PseudonymKey::new(vec![3u8; 32]).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// `events` as stored in the log, and decoded from there.
fn stored(events: &[Value]) -> (Vec<Vec<u8>>, Vec<Event>) {
    let raws: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    let decoded = raws
        .iter()
        .map(|r| Event::from_stored(r).unwrap())
        .collect();
    (raws, decoded)
}

/// Projects `events` (in this arrival order, split into batches of the given sizes) into a
/// fresh store.
fn project(dir: &std::path::Path, events: &[Value], splits: &[usize]) -> (Store, Tree) {
    let store = Store::open(dir).unwrap();
    let tree = store.tree("journey").unwrap();
    project_into(&tree, events, splits);
    (store, tree)
}

/// Projects `events` into `tree` as [`project`] does.
fn project_into(tree: &Tree, events: &[Value], splits: &[usize]) {
    let journeys = Journeys::new(key());
    let (raws, decoded) = stored(events);
    let mut start = 0;
    let mut splits = splits.iter().cycle();
    while start < events.len() {
        let end = (start + splits.next().unwrap()).min(events.len());
        let batch: Vec<Applied<'_>> = (start..end)
            .map(|i| Applied {
                seq: i as u64 + 1,
                subject: "",
                event: &decoded[i],
                raw: &raws[i],
            })
            .collect();
        let mut tx = tree.begin();
        journeys.try_apply_batch(&mut tx, &batch).unwrap();
        block_on(tree.commit(tx, end as u64)).unwrap();
        start = end;
    }
}

#[test]
fn a_damaged_timeline_chunk_is_reported_as_corrupt_in_its_own_tree() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // a rebuild's shadow tree, named after the live one
    let shadow = store.shadow("journey").unwrap();
    project_into(&shadow, &story(), &[4]);
    let a = NhsNumber::parse(A).unwrap();
    assert!(Journeys::new(key()).get(&shadow, &a).unwrap().is_some());
    let (chunk, _) = shadow.scan_prefix(b"t/").next().unwrap().unwrap();
    let mut tx = shadow.begin();
    tx.put(chunk, b"\x01not lz4".to_vec());
    block_on(shadow.commit(tx, 100)).unwrap();
    match Journeys::new(key()).get(&shadow, &a) {
        Err(handover_store::StoreError::Corrupt { tree, detail }) => {
            assert_eq!(tree, shadow.name());
            assert_ne!(tree, "journey", "the shadow tree is named");
            assert!(detail.contains("timeline chunk"), "{detail}");
        }
        other => panic!("expected a corrupt-store error, got {other:?}"),
    }
}

/// The journey as a comparable value: its state, and its timeline and stay bookkeeping
/// without stream sequences (which depend on arrival order).
fn comparable(j: &Journey) -> Value {
    let mut v = serde_json::to_value(j).unwrap();
    for e in v["timeline"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("seq");
    }
    if let Some(marks) = v.get_mut("stay_marks").and_then(Value::as_array_mut) {
        for m in marks {
            let m = m.as_object_mut().unwrap();
            m.remove("admission");
            m.remove("discharge");
        }
    }
    v
}

/// A deterministic permutation of `0..n` from `seed` (Fisher–Yates over an LCG).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        p.swap(i, (s >> 33) as usize % (i + 1));
    }
    p
}

#[test]
fn any_arrival_order_and_batching_gives_the_pure_fold_of_the_whole_story() {
    let events = story();
    // The pure model: every event of the story folded into one journey.
    let mut pure = Journey::new(Some(A.to_string()));
    for (i, e) in events.iter().enumerate() {
        pure.apply(
            i as u64 + 1,
            &Event::from_stored(&serde_json::to_vec(e).unwrap()).unwrap(),
        );
    }
    let expected = comparable(&pure);
    assert_eq!(
        pure.timeline.len(),
        9,
        "the duplicate is not a second entry"
    );

    let a = NhsNumber::parse(A).unwrap();
    let b = NhsNumber::parse(B).unwrap();
    for seed in 0..40u64 {
        let order = permutation(events.len(), seed);
        let arrived: Vec<Value> = order.iter().map(|&i| events[i].clone()).collect();
        let splits = [1 + (seed as usize % 4), 3, 1 + (seed as usize % 7)];
        let dir = tempfile::tempdir().unwrap();
        let (_store, tree) = project(dir.path(), &arrived, &splits);
        let journeys = Journeys::new(key());
        let got = journeys.get(&tree, &a).unwrap().unwrap();
        let mut got_v = comparable(&got);
        // The pure model starts from the NHS number it is given; the store learns it.
        got_v["nhs_number"] = json!(A);
        assert_eq!(got_v, expected, "seed {seed}: order {order:?}");
        assert_eq!(
            comparable(&journeys.get(&tree, &b).unwrap().unwrap()),
            comparable(&got),
            "the merged NHS number leads to the same journey (seed {seed})"
        );
        // One journey and two aliases (the MRN and the merged number), the delay row (in the
        // record) indexed under the trust and the council, one brokerage row (indexed, and
        // counted, under the same two), and one
        // timeline entry per distinct event (the merged journeys' events stay where they
        // were written; the record lists them).
        let keys: Vec<Vec<u8>> = tree.scan_prefix(b"").map(|r| r.unwrap().0).collect();
        let count = |p: &[u8]| keys.iter().filter(|k| k.starts_with(p)).count();
        let timeline = got.timeline.len();
        assert!(timeline >= 8, "seed {seed}: {timeline} entries");
        assert_eq!(
            (
                count(b"p/"),
                count(b"a/"),
                count(b"d/"),
                count(b"w/"),
                count(b"b/"),
                Journeys::stored_event_seqs(&tree).unwrap().len(),
                count(b"n/"),
                count(b"q/"),
                count(b"qn/"),
            ),
            (3, 2, 0, 2, 1, timeline, 2, 2, 2),
            "seed {seed}"
        );
        // The events are in chunks of a batch's events: as many chunks as batches that
        // brought new events, at most.
        let chunks = count(b"t/");
        let batches = {
            let (mut start, mut n, mut sizes) = (0, 0, splits.iter().cycle());
            while start < events.len() {
                start += sizes.next().unwrap();
                n += 1;
            }
            n
        };
        assert!(
            (1..=batches).contains(&chunks) && batches < timeline,
            "seed {seed}: {chunks} chunks of {timeline} events in {batches} batches"
        );
        assert_eq!(
            keys.len(),
            3 + 2 + 2 + 1 + chunks + 2 + 2 + 2 + 1,
            "and the position (seed {seed})"
        );
        assert_eq!(Journeys::facts(&tree).unwrap().len(), 1, "seed {seed}");
        assert_eq!(Journeys::all(&tree).count(), 1, "seed {seed}");
    }
}

#[test]
fn erasing_a_person_leaves_nothing_of_them_in_the_tree() {
    let events = story();
    let dir = tempfile::tempdir().unwrap();
    let (_store, tree) = project(dir.path(), &events, &[4]);
    let a = NhsNumber::parse(A).unwrap();
    let keys = handover_projections::erase::person_keys(&key(), &tree, &a).unwrap();
    assert_eq!(
        keys.len(),
        3,
        "the journey's key, the merged number and the MRN"
    );
    let timeline = Journeys::new(key())
        .get(&tree, &a)
        .unwrap()
        .unwrap()
        .timeline
        .len();
    let mut tx = tree.begin();
    let removed = handover_projections::erase::erase(&tree, &mut tx, &keys).unwrap();
    block_on(tree.commit(tx, 100)).unwrap();
    assert_eq!(
        removed,
        3 + 2 + 2 + 1 + 2 + timeline,
        "records, aliases, the delay row's index entries, the brokerage row and its index \
         entries, the timeline"
    );
    let left: Vec<String> = tree
        .scan_prefix(b"")
        .map(|r| String::from_utf8_lossy(&r.unwrap().0).to_string())
        .collect();
    assert!(
        left.iter().all(|k| k.starts_with('\0')),
        "left behind: {left:?}"
    );
}

#[test]
fn erasing_a_person_takes_their_events_out_of_chunks_shared_with_others() {
    // The story's person and another, their events interleaved in the same batches, so the
    // chunks under t/ hold events of both.
    let other = (900_000_100u64..)
        .find_map(|stem| {
            let digits: Vec<u8> = stem.to_string().bytes().map(|b| b - b'0').collect();
            handover_events::nhs::check_digit(&digits).map(|c| format!("{stem}{c}"))
        })
        .unwrap();
    let other = other.as_str();
    let story = story();
    let theirs = stay(other, "o", "RX1CC", "2026-11-15", 1);
    let mut events = Vec::new();
    for (i, e) in story.iter().enumerate() {
        events.push(e.clone());
        if let Some(o) = theirs.get(i) {
            events.push(o.clone());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (_store, tree) = project(dir.path(), &events, &[5]);
    let journeys = Journeys::new(key());
    let o = NhsNumber::parse(other).unwrap();
    let before = journeys.get(&tree, &o).unwrap().unwrap();
    assert_eq!(before.timeline.len(), 2);
    let all = Journeys::stored_event_seqs(&tree).unwrap();
    assert!(
        tree.scan_prefix(b"t/").count() < all.len(),
        "events share chunks"
    );
    let a = NhsNumber::parse(A).unwrap();
    let keys = handover_projections::erase::person_keys(&key(), &tree, &a).unwrap();
    let mut tx = tree.begin();
    handover_projections::erase::erase(&tree, &mut tx, &keys).unwrap();
    block_on(tree.commit(tx, 100)).unwrap();
    assert_eq!(journeys.get(&tree, &a).unwrap(), None);
    assert_eq!(
        journeys.get(&tree, &o).unwrap().unwrap(),
        before,
        "the other person's journey and timeline are untouched"
    );
    let left = Journeys::stored_event_seqs(&tree).unwrap();
    let kept: Vec<u64> = before.timeline.iter().map(|e| e.seq).collect();
    assert_eq!(left, kept, "only the other person's events are left");
}

/// Admission + DRD for person `nhs` at `site` (trust RX1, council E08000035 from the
/// example), with DRD `drd`.
fn stay(nhs: &str, tag: &str, site: &str, drd: &str, hour: u32) -> Vec<Value> {
    vec![
        ev(
            "discharge.admitted.v1",
            &format!("{tag}-a"),
            hour,
            nhs,
            json!({"encounter_id": format!("ENC-{tag}"), "site": site}),
        ),
        ev(
            "discharge.ready-date-recorded.v1",
            &format!("{tag}-r"),
            hour + 1,
            nhs,
            json!({"encounter_id": format!("ENC-{tag}"), "discharge_ready_date": drd}),
        ),
    ]
}

#[test]
fn the_delay_index_is_per_organisation_in_worklist_order_and_follows_changes() {
    use handover_projections::rows::DelayRowKey;
    // Valid NHS numbers (Modulus 11) from consecutive stems.
    let nhs: Vec<String> = (900_000_100u64..)
        .filter_map(|stem| {
            let digits: Vec<u8> = stem.to_string().bytes().map(|b| b - b'0').collect();
            handover_events::nhs::check_digit(&digits).map(|c| format!("{stem}{c}"))
        })
        .take(5)
        .collect();
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let mut events = Vec::new();
    events.extend(stay(&nhs[0], "p0", "RX1CC", "2026-11-15", 1)); // 7 days
    events.extend(stay(&nhs[1], "p1", "RX1AB", "2026-11-18", 1)); // 4 days
    events.extend(stay(&nhs[2], "p2", "RX1AA", "2026-11-18", 1)); // 4 days, site sorts first
    events.extend(stay(&nhs[3], "p3", "RX1CC", "2026-11-25", 1)); // not yet due
    events.extend(stay(&nhs[4], "p4", "RX1CC", "2026-11-10", 1)); // discharged below
    let dir = tempfile::tempdir().unwrap();
    let (_store, tree) = project(dir.path(), &events, &[3]);
    let page = |org: &str, limit: usize| {
        Journeys::delay_page(&tree, org, today, None, (0, limit)).unwrap()
    };
    let encounters = |p: &handover_projections::journeys::DelayPage| {
        p.rows
            .iter()
            .map(|r| r.encounter_id.clone())
            .collect::<Vec<_>>()
    };
    let trust = page("RX1", 10);
    assert_eq!(trust.total, 4);
    assert_eq!(encounters(&trust), ["ENC-p4", "ENC-p0", "ENC-p2", "ENC-p1"]);
    let council = page("E08000035", 2);
    assert_eq!(
        (council.total, encounters(&council)),
        (4, vec!["ENC-p4".to_string(), "ENC-p0".into()])
    );
    assert_eq!(page("E08000032", 10).total, 0, "another council sees none");
    let only_cc = |r: &DelayRowKey<'_>| r.site.as_deref() == Some("RX1CC");
    let filtered = Journeys::delay_page(&tree, "RX1", today, Some(&only_cc), (0, 10)).unwrap();
    assert_eq!(encounters(&filtered), ["ENC-p4", "ENC-p0"]);
    assert_eq!(filtered.total, 2);
    let second = Journeys::delay_page(&tree, "RX1", today, None, (1, 2)).unwrap();
    assert_eq!(
        (second.total, encounters(&second)),
        (4, vec!["ENC-p0".to_string(), "ENC-p2".into()]),
        "a later page"
    );
    let second = Journeys::delay_page(&tree, "RX1", today, Some(&only_cc), (1, 5)).unwrap();
    assert_eq!(
        (second.total, encounters(&second)),
        (2, vec!["ENC-p0".to_string()]),
        "a later page of a filtered list"
    );
    let past = Journeys::delay_page(&tree, "RX1", today, None, (9, 5)).unwrap();
    assert_eq!((past.total, past.rows.len()), (4, 0), "past the end");

    // p4 is discharged, p0's DRD moves later: their old keys go.
    let mut more = vec![ev(
        "discharge.discharged.v1",
        "p4-d",
        10,
        &nhs[4],
        json!({"encounter_id": "ENC-p4"}),
    )];
    more.extend(
        stay(&nhs[0], "p0", "RX1CC", "2026-11-20", 1)
            .split_off(1)
            .into_iter()
            .map(|mut e| {
                e["id"] = json!("p0-r2");
                e["time"] = json!("2026-11-10T12:00:00Z");
                e
            }),
    );
    let mut all = events.clone();
    all.extend(more);
    let dir = tempfile::tempdir().unwrap();
    let (_store, tree) = project(dir.path(), &all, &[3]);
    let trust = Journeys::delay_page(&tree, "RX1", today, None, (0, 10)).unwrap();
    assert_eq!(encounters(&trust), ["ENC-p2", "ENC-p1", "ENC-p0"]);
    assert_eq!(trust.total, 3, "the counters follow the index");
    let counted: u64 = tree
        .scan_prefix(b"n/RX1/")
        .map(|r| u64::from_be_bytes(r.unwrap().1.try_into().unwrap()))
        .sum();
    assert_eq!(counted, 4, "p3's entry counts too, under its later date");
    let index = tree.scan_prefix(b"w/").count();
    assert_eq!(
        index,
        2 * 4,
        "four people in hospital with a DRD, two organisations each"
    );
    assert_eq!(Journeys::delay_rows(&tree).unwrap().len(), 4);
    assert!(
        tree.scan_prefix(b"w/").all(|r| r.unwrap().1.is_empty()),
        "index entries hold no row"
    );
}

#[test]
fn a_journey_stored_whole_as_json_by_layouts_1_and_2_is_still_read_during_the_upgrade_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tree = store.tree("journey").unwrap();
    let mut legacy = Journey::new(Some(A.to_string()));
    for (i, e) in story().iter().enumerate().take(3) {
        legacy.apply(
            i as u64 + 1,
            &Event::from_stored(&serde_json::to_vec(e).unwrap()).unwrap(),
        );
    }
    let person = key().person_key(&handover_events::PersonRef::Nhs(
        NhsNumber::parse(A).unwrap(),
    ));
    let mut tx = tree.begin();
    tx.put(
        format!("p/{person}").into_bytes(),
        serde_json::to_vec(&legacy).unwrap(),
    );
    block_on(tree.commit(tx, 3)).unwrap();
    let read = Journeys::new(key())
        .get(&tree, &NhsNumber::parse(A).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(read, legacy);
}

/// Records of earlier layouts are read during the upgrade rebuild, and a batch applied to
/// one rewrites it in the current layout (version 4, its parts compressed): a layout 5
/// record (version 2: head, facts and delay row, then the timeline's frames inline, moved
/// to `t/` keys on write) and a layout 6/7 record (version 3: the parts uncompressed, then
/// the timeline's positions).
#[test]
fn records_of_earlier_layouts_are_read_and_rewritten_in_the_current_one() {
    for version in [2u8, 3] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("journey").unwrap();
        let events = stay(A, "v5", "RX1CC", "2026-11-15", 1);
        let (raws, decoded) = stored(&events);
        let mut pure = Journey::new(Some(A.to_string()));
        for (i, e) in decoded.iter().enumerate() {
            pure.apply(i as u64 + 1, e);
        }
        let mut state = pure.clone();
        state.timeline.clear();
        let head = serde_json::to_vec(&json!({ "j": state })).unwrap();
        let mut record = vec![version];
        for part in [&head[..], b"", b""] {
            record.extend_from_slice(&(part.len() as u32).to_be_bytes());
            record.extend_from_slice(part);
        }
        let mut tx = tree.begin();
        for (i, (e, raw)) in decoded.iter().zip(&raws).enumerate() {
            let seq = i as u64 + 1;
            let time = (e.time.0.timestamp_micros() as u64) ^ (1 << 63);
            record.extend_from_slice(&time.to_be_bytes());
            record.extend_from_slice(&seq.to_be_bytes());
            if version == 2 {
                record.extend_from_slice(&(raw.len() as u32).to_be_bytes());
                record.extend_from_slice(raw);
            } else {
                let mut slot = b"t/".to_vec();
                slot.extend_from_slice(&seq.to_be_bytes());
                tx.put(slot, raw.clone());
            }
        }
        let person = key().person_key(&handover_events::PersonRef::Nhs(
            NhsNumber::parse(A).unwrap(),
        ));
        tx.put(format!("p/{person}").into_bytes(), record.clone());
        block_on(tree.commit(tx, 2)).unwrap();
        let journeys = Journeys::new(key());
        let a = NhsNumber::parse(A).unwrap();
        assert_eq!(
            journeys.get(&tree, &a).unwrap().unwrap(),
            pure,
            "version {version} read as stored"
        );

        // A third event: the record is rewritten in the current layout, its frames under t/.
        let more = ev(
            "discharge.discharged.v1",
            "v5-d",
            30,
            A,
            json!({"encounter_id": "ENC-v5"}),
        );
        let raw = serde_json::to_vec(&more).unwrap();
        let event = Event::from_stored(&raw).unwrap();
        pure.apply(3, &event);
        let mut tx = tree.begin();
        journeys
            .try_apply_batch(
                &mut tx,
                &[Applied {
                    seq: 3,
                    subject: "",
                    event: &event,
                    raw: &raw,
                }],
            )
            .unwrap();
        block_on(tree.commit(tx, 3)).unwrap();
        assert_eq!(journeys.get(&tree, &a).unwrap().unwrap(), pure);
        assert_eq!(tree.scan_prefix(b"t/").count(), 3);
        assert_eq!(
            Journeys::stored_event_seqs(&tree).unwrap(),
            [1, 2, 3],
            "the old events stay where they are, the new one is in a chunk"
        );
        let (k, v) = tree.scan_prefix(b"p/").map(|r| r.unwrap()).next().unwrap();
        assert_eq!(v[0], 4, "version {version} rewritten as a version 4 record");
        // Compressed: the head alone was larger than the whole record is now, and the
        // logical size counts the parts uncompressed.
        assert!(v.len() < head.len(), "{} bytes", v.len());
        assert!(
            handover_projections::journeys::plain_len(&k, &v) > head.len() as u64,
            "plain size"
        );
    }
}

/// The brokerage queue read from its per-organisation index (`q/`) is exactly the queue
/// built from every person's pure rows: the same rows, in the same order (delayed in
/// hospital first, then in hospital, then the rest, each by required start and package),
/// the same totals, for every organisation, several `today`s, pages and filters, after the
/// rows have come and gone (packages sourced and started, stays discharged, DRDs moved).
#[test]
fn the_brokerage_index_gives_the_queue_the_pure_rows_give() {
    use handover_projections::rows::{brokerage_rows, BrokerageRow, BrokerageRowKey};
    type Keep = dyn Fn(&BrokerageRowKey<'_>) -> bool;
    let nhs: Vec<String> = (900_000_200u64..)
        .filter_map(|stem| {
            let digits: Vec<u8> = stem.to_string().bytes().map(|b| b - b'0').collect();
            handover_events::nhs::check_digit(&digits).map(|c| format!("{stem}{c}"))
        })
        .take(100)
        .collect();
    // People 80.. are second NHS numbers: every fifth person's referral and packages are
    // recorded under one, which is then merged into theirs, so its rows and index entries
    // must go.
    let (nhs, second) = nhs.split_at(80);
    let mut seed = 7u64;
    let mut roll = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let day = |d: u64| format!("2026-11-{:02}", 10 + d);
    let mut events = Vec::new();
    for (i, n) in nhs.iter().enumerate() {
        let (trust, council) = [("RX1", "E08000035"), ("RR8", "E08000032")][roll(2) as usize];
        let source = format!("urn:ods:{trust}:pas");
        let enc = format!("ENC-{i}");
        let mut push = |mut e: Value, source: &str| {
            e["source"] = json!(source);
            events.push(e);
        };
        let stay = roll(4); // 0 none, 1 in hospital, 2 with a DRD, 3 discharged
        if stay > 0 {
            push(
                ev(
                    "discharge.admitted.v1",
                    &format!("{i}-a"),
                    1,
                    n,
                    json!({"encounter_id": enc, "site": format!("{trust}01"), "responsible_council": council}),
                ),
                &source,
            );
        }
        if stay >= 2 {
            for k in 0..=roll(2) {
                push(
                    ev(
                        "discharge.ready-date-recorded.v1",
                        &format!("{i}-r{k}"),
                        2 + k as u32,
                        n,
                        json!({"encounter_id": enc, "discharge_ready_date": day(roll(12))}),
                    ),
                    &source,
                );
            }
        }
        if stay == 3 {
            push(
                ev(
                    "discharge.discharged.v1",
                    &format!("{i}-d"),
                    30,
                    n,
                    json!({"encounter_id": enc}),
                ),
                &source,
            );
        }
        // A referral to the other council for some, so the arranging council differs from
        // the stay's.
        let to = if roll(3) == 0 { "E08000099" } else { council };
        let merged = i % 5 == 0;
        let who = if merged { &second[i / 5] } else { n };
        push(
            ev(
                "referral.sent.v1",
                &format!("{i}-s"),
                3,
                who,
                json!({"referral_id": format!("REF-{i}"), "to_council": to, "encounter_id": enc}),
            ),
            &source,
        );
        for p in 0..1 + roll(2) {
            let package = format!("PKG-{i}-{p}");
            let service = ["reablement", "home-care", "residential"][roll(3) as usize];
            let mut requested = ev(
                "care-package.requested.v1",
                &format!("{i}-p{p}"),
                4,
                who,
                json!({"package_id": package, "referral_id": format!("REF-{i}"),
                       "service_type": service,
                       "required_start": day(roll(15))}),
            );
            if roll(4) == 0 {
                requested["data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("required_start");
            }
            let brokerage = format!("urn:gss:{to}:brokerage");
            push(requested, &brokerage);
            let progress = roll(3); // 0 requested, 1 sourced, 2 started
            if progress >= 1 {
                push(
                    ev(
                        "care-package.sourced.v1",
                        &format!("{i}-p{p}-s"),
                        5,
                        who,
                        json!({"package_id": package}),
                    ),
                    &brokerage,
                );
            }
            if progress == 2 {
                push(
                    ev(
                        "care-package.started.v1",
                        &format!("{i}-p{p}-t"),
                        6,
                        who,
                        json!({"package_id": package}),
                    ),
                    &brokerage,
                );
            }
        }
        if merged {
            push(
                ev(
                    "person.nhs-number-changed.v1",
                    &format!("{i}-m"),
                    40,
                    n,
                    json!({"previous_nhs_number": who}),
                ),
                &source,
            );
        }
    }
    for (order, splits) in [(None, [7, 1, 13]), (Some(3u64), [2, 50, 5])] {
        let arrived: Vec<Value> = match order {
            None => events.clone(),
            Some(seed) => permutation(events.len(), seed)
                .into_iter()
                .map(|i| events[i].clone())
                .collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let (_store, tree) = project(dir.path(), &arrived, &splits);
        let rows: Vec<BrokerageRow> = Journeys::all(&tree)
            .flat_map(|j| brokerage_rows(&j.unwrap()))
            .collect();
        assert!(rows.len() > 40, "{} rows", rows.len());
        let key_of = |r: &BrokerageRow| {
            serde_json::from_slice::<BrokerageRowKey<'static>>(Box::leak(
                serde_json::to_vec(r).unwrap().into_boxed_slice(),
            ))
            .unwrap()
        };
        let filters: [(&str, Option<&Keep>); 3] = [
            ("none", None),
            (
                "home care",
                Some(&|r: &BrokerageRowKey<'_>| {
                    r.service_type.map(|t| t.as_str()) == Some("home-care")
                }),
            ),
            (
                "council E08000099",
                Some(&|r: &BrokerageRowKey<'_>| r.council.as_deref() == Some("E08000099")),
            ),
        ];
        for today in [
            "2026-11-08",
            "2026-11-13",
            "2026-11-16",
            "2026-11-19",
            "2026-11-30",
        ] {
            let today = chrono::NaiveDate::parse_from_str(today, "%Y-%m-%d").unwrap();
            for org in ["RX1", "RR8", "E08000035", "E08000032", "E08000099", "X"] {
                for (name, filter) in &filters {
                    let mut expected: Vec<&BrokerageRow> = rows
                        .iter()
                        .filter(|r| {
                            r.council.as_deref() == Some(org)
                                || r.hospital.as_ref().and_then(|h| h.trust.as_deref()) == Some(org)
                        })
                        .filter(|r| filter.is_none_or(|f| f(&key_of(r))))
                        .collect();
                    let rank = |r: &BrokerageRow| {
                        let drd = r.hospital.as_ref().and_then(|h| h.discharge_ready_date);
                        let group = match (&r.hospital, drd) {
                            (Some(_), Some(d)) if d.0 < today => 0,
                            (Some(_), _) => 1,
                            (None, _) => 2,
                        };
                        let start = r
                            .required_start
                            .map(|d| d.0)
                            .unwrap_or(chrono::NaiveDate::MAX);
                        (group, start, r.package_id.clone())
                    };
                    expected.sort_by_key(|r| rank(r));
                    for (offset, limit) in [(0, 1000), (0, 5), (3, 7), (10, 1), (500, 10)] {
                        let page =
                            Journeys::brokerage_page(&tree, org, today, *filter, (offset, limit))
                                .unwrap();
                        let want: Vec<&str> = expected
                            .iter()
                            .skip(offset)
                            .take(limit)
                            .map(|r| r.package_id.as_str())
                            .collect();
                        let got: Vec<&str> =
                            page.rows.iter().map(|r| r.package_id.as_str()).collect();
                        let at = format!(
                            "{org} {today} filter {name} page {offset}+{limit} order {order:?}"
                        );
                        assert_eq!(got, want, "{at}");
                        assert_eq!(page.total, expected.len(), "{at}");
                        for (g, w) in page.rows.iter().zip(expected.iter().skip(offset)) {
                            assert_eq!(&g, w, "{at}: the stored row");
                        }
                    }
                }
            }
        }
        let counted: u64 = tree
            .scan_prefix(b"qn/")
            .map(|r| u64::from_be_bytes(r.unwrap().1.try_into().unwrap()))
            .sum();
        assert_eq!(
            counted as usize,
            tree.scan_prefix(b"q/").count(),
            "the counters count the index"
        );
        for entry in tree.scan_prefix(b"q/") {
            let key = String::from_utf8(entry.unwrap().0).unwrap();
            let (rest, person) = key.rsplit_once('\0').unwrap();
            let package = rest.rsplit_once('/').unwrap().1;
            assert!(
                tree.get(format!("b/{person}/{package}").as_bytes())
                    .unwrap()
                    .is_some(),
                "index entry {key:?} leads to no row (order {order:?})"
            );
        }
    }
}
