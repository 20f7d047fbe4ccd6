//! Fuzzing with proptest: arbitrary bytes and mutated fixtures through MLLP decoder → parser
//! → translate never panic, and whatever translate emits is valid and names a person.
//! `PROPTEST_CASES=100000 cargo test -p handover-adapters --release hl7_props` searches longer.

use handover_adapters::hl7::{translate, Hl7Config, Translation};
use handover_events::Event;
use handover_hl7::mllp::{encode, MllpDecoder};
use handover_hl7::Message;
use proptest::prelude::*;

use crate::support::{fixture, fixtures_dir};

fn fixtures() -> &'static [Vec<u8>] {
    static ALL: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    ALL.get_or_init(read_fixtures)
}

fn read_fixtures() -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| fixture(p.file_name().unwrap().to_str().unwrap()))
        .collect()
}

/// Runs a byte stream through the whole pipeline; checks what comes out.
fn pipeline(stream: &[u8], cfg: &Hl7Config) {
    let mut decoder = MllpDecoder::new(cfg.max_message_bytes);
    decoder.push(stream);
    while let Some(frame) = decoder.next_frame() {
        let Ok(frame) = frame else { continue };
        let Ok(msg) = Message::parse(&frame) else {
            continue;
        };
        if let Ok(Translation::Events(events)) = translate(&msg, cfg) {
            assert!(!events.is_empty());
            for e in &events {
                assert!(e.person().is_some());
                // Round-trips through full validation.
                Event::from_json(e.to_json()).unwrap();
            }
        }
    }
}

/// Mutations of a fixture that keep it HL7-shaped.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite byte `at` with `byte`.
    Set(usize, u8),
    /// Insert delimiter-ish text at `at`.
    Insert(usize, &'static str),
    /// Delete `len` bytes at `at`.
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let inserts = prop_oneof![
        Just("|"),
        Just("^"),
        Just("~"),
        Just("&"),
        Just("\\"),
        Just("\r"),
        Just("\"\""),
        Just("9434765918"),
        Just("99999999999999"),
        Just("+2500"),
        Just("PV1|"),
        Just("MRG|"),
        Just("\\X00\\"),
        Just("A01"),
        Just("A40"),
        Just("NHS"),
        Just("\u{1c}"),
        Just("\u{0b}"),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        (any::<usize>(), inserts).prop_map(|(a, s)| Mutation::Insert(a, s)),
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Set(at, b) => {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = *b;
                }
            }
            Mutation::Insert(at, s) => {
                let i = at % (bytes.len() + 1);
                bytes.splice(i..i, s.bytes());
            }
            Mutation::Delete(at, n) => {
                let i = at % len;
                let end = (i + n).min(bytes.len());
                if i < end {
                    bytes.drain(i..end);
                }
            }
        }
    }
    bytes
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        stream in proptest::collection::vec(
            prop_oneof![Just(0x0Bu8), Just(0x1C), Just(0x0D), Just(b'|'), any::<u8>()], 0..1024),
    ) {
        pipeline(&stream, &Hl7Config::default());
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
        listed in any::<bool>(),
    ) {
        let all = fixtures();
        let original = which.get(all).clone();
        let mutated = apply(original, &mutations);
        let mut cfg = Hl7Config::default();
        if listed {
            cfg.facilities.insert("RX1".into(), "RX1".into());
            cfg.sites.insert("RX1CC".into(), "RX1CC".into());
        }
        pipeline(&encode(&mutated), &cfg);
    }
}

#[test]
fn every_fixture_goes_through_the_pipeline() {
    for f in fixtures() {
        pipeline(&encode(f), &Hl7Config::default());
    }
}
