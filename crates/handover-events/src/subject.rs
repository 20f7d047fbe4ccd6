//! Pseudonymous person keys and the NATS subject layout.
//!
//! Subjects are `care.<domain>.<event>.<person-key>`, where the person key is a keyed hash
//! (HMAC-SHA-256, truncated to 128 bits, hex) of the NHS number or local id. A subject
//! therefore never carries an identifier, yet one person's events can be read, ordered and
//! purged by subject (`care.*.*.<key>`) and a consumer can filter by domain
//! (`care.discharge.>`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::catalogue::EventType;
use crate::envelope::PersonRef;

/// The first token of every Handover subject.
pub const SUBJECT_ROOT: &str = "care";

/// The secret key for person keys; from configuration, never logged.
#[derive(Clone)]
pub struct PseudonymKey(Vec<u8>);

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(<secret>)")
    }
}

/// Why a pseudonym key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Fewer than 16 bytes.
    #[error("the pseudonym key must be at least 16 bytes")]
    TooShort,
}

impl PseudonymKey {
    /// A key from raw bytes (at least 16).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<PseudonymKey, KeyError> {
        let bytes = bytes.into();
        if bytes.len() < 16 {
            return Err(KeyError::TooShort);
        }
        Ok(PseudonymKey(bytes))
    }

    /// The person key of a person: 32 lower-case hex characters.
    pub fn person_key(&self, person: &PersonRef) -> String {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            // HMAC accepts keys of any length.
            Err(_) => return String::new(),
        };
        match person {
            PersonRef::Nhs(n) => {
                mac.update(b"nhs\x1f");
                mac.update(n.as_string().as_bytes());
            }
            PersonRef::Local(l) => {
                mac.update(b"local\x1f");
                mac.update(l.system.as_bytes());
                mac.update(b"\x1f");
                mac.update(l.value.as_bytes());
            }
        }
        let out = mac.finalize().into_bytes();
        hex::encode(&out[..16])
    }
}

/// The subject for an event of `event_type` about the person with `person_key`.
pub fn subject_for(event_type: EventType, person_key: &str) -> String {
    format!(
        "{SUBJECT_ROOT}.{}.{}.{person_key}",
        event_type.domain().as_str(),
        event_type.name()
    )
}

/// The subject filter for all of one person's events.
pub fn person_filter(person_key: &str) -> String {
    format!("{SUBJECT_ROOT}.*.*.{person_key}")
}

/// The person key, the last token of a Handover subject.
pub fn person_key_of_subject(subject: &str) -> Option<&str> {
    let mut parts = subject.split('.');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(SUBJECT_ROOT), Some(_), Some(_), Some(k), None) => Some(k),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nhs::NhsNumber;

    #[test]
    fn subjects_carry_a_keyed_hash_not_the_number() {
        let key = PseudonymKey::new(*b"0123456789abcdef").unwrap();
        let n = NhsNumber::parse("9434765919").unwrap();
        let k = key.person_key(&PersonRef::Nhs(n));
        assert_eq!(k.len(), 32);
        let s = subject_for(EventType::ReadyDateRecorded, &k);
        assert_eq!(s, format!("care.discharge.ready-date-recorded.{k}"));
        assert!(!s.contains("9434765919"));
        assert_eq!(person_key_of_subject(&s), Some(k.as_str()));
        // another key gives another pseudonym: keys can be per deployment
        let other = PseudonymKey::new(*b"fedcba9876543210").unwrap();
        assert_ne!(other.person_key(&PersonRef::Nhs(n)), k);
    }
}
