//! The Handover event model: the v1 catalogue as typed Rust inside a CloudEvents 1.0
//! envelope, validation that names every bad field, generated JSON Schemas, and the
//! pseudonymous NATS subject layout.
//!
//! This crate is plain data and pure functions: no IO, no async runtime.

pub mod audit;
pub mod catalogue;
pub mod envelope;
pub mod nhs;
pub mod schema;
pub mod sector;
pub mod sink;
pub mod subject;
pub mod time;

pub use audit::{AuditError, AuditQuery, AuditRecord, AuditTrail};
pub use catalogue::{Domain, EventData, EventType, LocalId};
pub use envelope::{Event, FieldError, PersonRef, ValidationErrors};
pub use nhs::NhsNumber;
pub use sink::{EventSink, LogAdmin, SinkError, Stored};
pub use subject::PseudonymKey;
pub use time::{Date, Timestamp};

/// A UK postcode in its one written form: upper case, the outward code, one space, the
/// three-character inward code (`ls11aa` and `LS1  1AA` are both `LS1 1AA`), so the same
/// address from two systems reads the same. A value not shaped like a postcode keeps its
/// characters, upper-cased, with runs of spaces made one.
pub fn normalise_postcode(postcode: &str) -> String {
    let compact: String = postcode
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let b = compact.as_bytes();
    let shaped = (5..=7).contains(&b.len())
        && b.iter().all(u8::is_ascii_alphanumeric)
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 3].is_ascii_digit()
        && b[b.len() - 2..].iter().all(u8::is_ascii_alphabetic);
    if shaped {
        let (outward, inward) = compact.split_at(compact.len() - 3);
        format!("{outward} {inward}")
    } else {
        postcode
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_uppercase()
    }
}

#[cfg(test)]
mod postcode_tests {
    use super::normalise_postcode;

    #[test]
    fn postcodes_take_their_one_written_form() {
        for (given, want) in [
            ("LS1 1AA", "LS1 1AA"),
            ("ls11aa", "LS1 1AA"),
            ("  ls1  4ap ", "LS1 4AP"),
            ("ls64aa", "LS6 4AA"),
            ("EC1A1BB", "EC1A 1BB"),
            ("W1A 0AX", "W1A 0AX"),
            ("M1 1AE", "M1 1AE"),
            ("b338th", "B33 8TH"),
            ("NFA", "NFA"),
            ("zz99  3vz", "ZZ99 3VZ"),
            ("not a postcode", "NOT A POSTCODE"),
        ] {
            assert_eq!(normalise_postcode(given), want, "{given:?}");
        }
    }
}
