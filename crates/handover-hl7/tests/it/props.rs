//! Property tests. The default case count (256, or `PROPTEST_CASES`) keeps
//! `cargo test` fast; run `PROPTEST_CASES=100000 cargo test -p handover-hl7`
//! for a longer search.

use handover_hl7::mllp::{encode, MllpDecoder};
use handover_hl7::{escape, unescape, Message, Separators, Timestamp};
use proptest::prelude::*;

/// Feeds `stream` to a decoder in the pieces given by the `cuts`, and drains
/// everything it produces.
fn decode_in_pieces(
    decoder: &mut MllpDecoder,
    stream: &[u8],
    cuts: &[usize],
) -> Vec<Result<Vec<u8>, handover_hl7::FrameError>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        decoder.push(&stream[start..cut]);
        start = cut;
        out.extend(std::iter::from_fn(|| decoder.next_frame()));
    }
    out
}

/// Any byte except the MLLP block bytes 0x0B and 0x1C (mapped rather than
/// filtered, so long runs don't hit proptest's rejection limit).
fn no_block_bytes() -> impl Strategy<Value = u8> {
    any::<u8>().prop_map(|b| match b {
        0x0B => 0x0C,
        0x1C => 0x1D,
        b => b,
    })
}

/// Five distinct delimiter characters (plus an optional truncation char).
fn separators() -> impl Strategy<Value = Separators> {
    let pool: Vec<char> = "|^~\\&#$%!@*+=/:;?<>{}[]_`'\"¦§".chars().collect();
    (Just(pool.clone()).prop_shuffle(), any::<bool>()).prop_map(|(chars, trunc)| Separators {
        field: chars[0],
        component: chars[1],
        repetition: chars[2],
        escape: chars[3],
        subcomponent: chars[4],
        truncation: trunc.then_some(chars[5]),
    })
}

/// `text` without the C0 control characters HL7 text cannot carry (all but tab, line feed
/// and carriage return).
fn without_stray_controls(text: &str) -> String {
    text.chars()
        .filter(|&c| c >= ' ' || matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

/// Text that looks a lot like HL7, to reach deeper parser paths than random
/// bytes do.
fn hl7ish() -> impl Strategy<Value = String> {
    "(MSH|PID|PV1|ZU1|\\||\\^|~|\\\\|&|#|\r|\n|\r\n|X0D|XC3A9|\\.br|F|S|T|R|E|H|N|[0-9A-Z]|é| ){0,80}"
}

proptest! {
    #[test]
    fn decoder_never_panics(
        stream in proptest::collection::vec(
            prop_oneof![Just(0x0Bu8), Just(0x1C), Just(0x0D), Just(b'\n'), any::<u8>()], 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        max in 0usize..64,
    ) {
        let mut d = MllpDecoder::new(max);
        for f in decode_in_pieces(&mut d, &stream, &cuts).into_iter().flatten() {
            prop_assert!(f.len() <= max);
            prop_assert!(!f.contains(&0x1C));
            prop_assert!(!f.contains(&0x0B));
        }
        let _ = d.finish();
    }

    #[test]
    fn payload_without_end_block_round_trips(
        payload in proptest::collection::vec(no_block_bytes(), 0..2048),
    ) {
        let mut d = MllpDecoder::new(payload.len());
        d.push(&encode(&payload));
        prop_assert_eq!(d.next_frame(), Some(Ok(payload)));
        prop_assert_eq!(d.next_frame(), None);
        prop_assert!(!d.has_partial_frame());
        prop_assert_eq!(d.discarded_bytes(), 0);
    }

    #[test]
    fn split_stream_yields_same_frames(
        payloads in proptest::collection::vec(
            proptest::collection::vec(no_block_bytes(), 0..200), 1..6),
        separators in proptest::collection::vec(prop_oneof![Just(&b""[..]), Just(&b"\r\n"[..]), Just(&b"\n"[..])], 6),
        drop_trailer in proptest::collection::vec(any::<bool>(), 6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let mut framed = encode(p);
            if drop_trailer[i] {
                framed.pop();
            }
            stream.extend(framed);
            stream.extend_from_slice(separators[i]);
        }
        let mut d = MllpDecoder::new(256);
        let got = decode_in_pieces(&mut d, &stream, &cuts);
        let want: Vec<_> = payloads.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(d.discarded_bytes(), 0);
    }

    #[test]
    fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::parse(&bytes);
        let mut with_header = b"MSH|^~\\&|".to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = Message::parse(&with_header);
    }

    #[test]
    fn parser_never_panics_on_hl7ish_text(body in hl7ish(), header in "MSH.{0,6}") {
        for text in [format!("{header}{body}"), format!("MSH|^~\\&|{body}")] {
            if let Ok(msg) = Message::parse(text.as_bytes()) {
                // Every leaf is reachable through a path, and the dump helper
                // asserts exactly that.
                let _ = crate::dump(&msg);
                let _ = msg.get("PID-3[2].4.1");
            }
        }
    }

    #[test]
    fn unescape_inverts_escape(text in any::<String>(), seps in separators()) {
        let escaped = escape(&text, &seps);
        // No C0 control character at all: not the segment terminator, not MLLP's block bytes.
        prop_assert!(!escaped.contains(|c: char| c < ' '));
        for c in [seps.field, seps.component, seps.repetition, seps.subcomponent] {
            prop_assert!(!escaped.contains(c));
        }
        prop_assert_eq!(unescape(&escaped, &seps), without_stray_controls(&text));
    }

    #[test]
    fn escaped_value_survives_a_whole_message(text in any::<String>(), seps in separators()) {
        let enc = seps.encoding_characters();
        let f = seps.field;
        let wire = format!("MSH{f}{enc}{f}PAS{f}RX1\rZU1{f}{}{f}END\r", escape(&text, &seps));
        let msg = Message::parse(wire.as_bytes()).unwrap();
        prop_assert_eq!(msg.separators(), &seps);
        let text = without_stray_controls(&text);
        let expected = (!text.is_empty()).then_some(text.as_str());
        prop_assert_eq!(msg.get("ZU1-1"), expected);
        prop_assert_eq!(msg.get("ZU1-2"), Some("END"));
    }

    #[test]
    fn decoded_values_hold_no_stray_control_characters(
        body in proptest::collection::vec(
            prop_oneof![(0u8..0x20).prop_map(char::from), Just('|'), Just('^'), Just('\\'), Just('X'), Just('0'), Just('B'), any::<char>()],
            0..80),
    ) {
        let body: String = body.into_iter().collect();
        if let Ok(msg) = Message::parse(format!("MSH|^~\\&|A\rZU1|{body}").as_bytes()) {
            for seg in msg.all_segments() {
                for field in seg.fields() {
                    for rep in field.repetitions() {
                        for comp in rep.components() {
                            for sub in comp.subcomponents() {
                                prop_assert!(without_stray_controls(sub) == sub.as_str(), "{sub:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn timestamp_never_panics(s in "[0-9+\\-.^ ]{0,30}") {
        if let Ok(t) = Timestamp::parse(&s) {
            // A valid timestamp formats back to a value that parses to itself.
            prop_assert_eq!(Timestamp::parse(&t.to_string()), Ok(t));
        }
    }

    #[test]
    fn timestamp_any_text_never_panics(s in any::<String>()) {
        let _ = Timestamp::parse(&s);
    }
}
