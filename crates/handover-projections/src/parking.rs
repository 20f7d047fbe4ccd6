//! Poison events: what a projection cannot apply is parked in the dead-letter stream
//! `<STREAM>_PARKED` and the projection moves on.
//!
//! A parking record is JSON ([`ParkedRecord`]) under `parked.<projection>.<person-key or
//! unknown>`, with `Nats-Msg-Id` `<projection>.<stream sequence>` so parking the same
//! event again (a restart before the commit, a rebuild) is a duplicate within the window.

use serde::{Deserialize, Serialize};

/// Attempts at applying an event before it is parked (decode failures are parked at once:
/// decoding is a pure function of the stored bytes, so a retry cannot succeed).
pub const MAX_ATTEMPTS: u32 = 3;

/// One parked event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedRecord {
    /// The projection that could not apply it.
    pub projection: String,
    /// Its sequence in the care stream.
    pub sequence: u64,
    /// Its subject in the care stream (pseudonymous).
    pub subject: String,
    /// `decode` (the stored bytes are not a catalogue event), `subject` (stored under a
    /// subject that is not the event's own), `source` (its source's sector may not assert
    /// it) or `apply` (the fold failed).
    pub kind: String,
    /// Why, with quoted values and long digit runs removed (no identifiers).
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was parked (RFC 3339, UTC).
    pub parked_at: String,
    /// The original message, when it is UTF-8 (the CloudEvent JSON as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The original message in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

impl ParkedRecord {
    /// A record for the message at `sequence`.
    pub fn new(
        projection: &str,
        sequence: u64,
        subject: &str,
        kind: &str,
        error: &str,
        attempts: u32,
        payload: &[u8],
    ) -> ParkedRecord {
        let (payload, payload_hex) = match std::str::from_utf8(payload) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(hex_encode(payload))),
        };
        ParkedRecord {
            projection: projection.to_string(),
            sequence,
            subject: subject.to_string(),
            kind: kind.to_string(),
            error: redact(error),
            attempts,
            parked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            payload,
            payload_hex,
        }
    }

    /// The parked-stream subject.
    pub fn parked_subject(&self) -> String {
        let key = handover_events::subject::person_key_of_subject(&self.subject)
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("unknown");
        format!("parked.{}.{key}", self.projection)
    }

    /// The parked message's `Nats-Msg-Id`.
    pub fn message_id(&self) -> String {
        format!("{}.{}", self.projection, self.sequence)
    }

    /// The original message's bytes.
    pub fn original(&self) -> Option<Vec<u8>> {
        match (&self.payload, &self.payload_hex) {
            (Some(p), _) => Some(p.as_bytes().to_vec()),
            (None, Some(h)) => hex_decode(h),
            (None, None) => None,
        }
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// An error text without the values it quotes: anything between quotes or backticks becomes
/// `…`, and so does any run of six or more digits (an NHS number, a date of birth).
pub fn redact(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut quote: Option<char> = None;
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 6 {
            out.push('…');
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in error.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' => {
                flush(&mut digits, &mut out);
                out.push(c);
                quote = Some(c);
            }
            None if c.is_ascii_digit() => digits.push(c),
            None => {
                flush(&mut digits, &mut out);
                out.push(c);
            }
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    flush(&mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn redaction_removes_quoted_values_and_long_numbers() {
        assert_eq!(
            redact(
                r#"/subject must be the person's NHS number: "9434765919" fails; invalid type: string "Smith", expected u8 at line 1 column 42"#
            ),
            r#"/subject must be the person's NHS number: "…" fails; invalid type: string "…", expected u8 at line 1 column 42"#
        );
        assert_eq!(redact("born 19450101 unquoted"), "born … unquoted");
        assert_eq!(redact("unterminated \"abc"), "unterminated \"…");
    }

    #[test]
    fn records_keep_the_original_bytes_and_a_pseudonymous_subject() {
        let r = ParkedRecord::new(
            "journey",
            7,
            "care.discharge.admitted.0123abcd",
            "decode",
            "x",
            1,
            b"{\"a\":1}",
        );
        assert_eq!(r.parked_subject(), "parked.journey.0123abcd");
        assert_eq!(r.message_id(), "journey.7");
        assert_eq!(r.original().unwrap(), b"{\"a\":1}");
        let bin = ParkedRecord::new("journey", 8, "care.x", "decode", "x", 1, &[0xff, 0x00]);
        assert_eq!(bin.parked_subject(), "parked.journey.unknown");
        assert_eq!(bin.original().unwrap(), vec![0xff, 0x00]);
    }
}
