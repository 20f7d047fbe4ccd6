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
use crate::envelope::{Event, PersonRef};

/// The first token of every Handover subject.
pub const SUBJECT_ROOT: &str = "care";

/// The secret key for person keys; from configuration, never logged. Held as the HMAC
/// state already keyed, so that each person key hashes only the person (keying hashes two
/// blocks of its own).
#[derive(Clone)]
pub struct PseudonymKey(Hmac<Sha256>);

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
        <Hmac<Sha256> as Mac>::new_from_slice(&bytes)
            .map(PseudonymKey)
            // HMAC accepts keys of any length.
            .map_err(|_| KeyError::TooShort)
    }

    /// The person key of a person: 32 lower-case hex characters.
    pub fn person_key(&self, person: &PersonRef) -> String {
        let mut mac = self.0.clone();
        match person {
            PersonRef::Nhs(n) => {
                mac.update(b"nhs\x1f");
                mac.update(&n.ascii());
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

/// Whether `event` was stored under its own subject: `care.<domain>.<event>.<person-key>`
/// of its type and person. Handover's own producers always do; a direct NATS producer
/// (deploy/nats-accounts.conf) is only checked by the server at subject level, so an event
/// of one type published under another type's subject, or under another person's key, is
/// refused here (the projection parks it). The reason names no identifier.
pub fn check_subject(key: &PseudonymKey, subject: &str, event: &Event) -> Result<(), String> {
    let t = event.event_type();
    let want = format!("{SUBJECT_ROOT}.{}.{}.", t.domain().as_str(), t.name());
    let Some(person) = event.person() else {
        return Err("the event names no person (no subject NHS number or data.local_id)".into());
    };
    let Some(own_key) = subject.strip_prefix(want.as_str()) else {
        let named: Vec<&str> = subject.split('.').take(3).collect();
        return Err(format!(
            "stored under {}.…, which is not the subject of a {} event ({want}…)",
            named.join("."),
            t.as_str()
        ));
    };
    if own_key != key.person_key(&person) {
        return Err(
            "stored under another person's key: the subject's person key is not that of the event's person"
                .into(),
        );
    }
    Ok(())
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

    #[test]
    fn person_keys_are_the_hmac_they_always_were() {
        // Stored read models and subjects are keyed by these: they must never change.
        // The expected values are HMAC-SHA-256 computed independently (Python's hmac).
        let key = PseudonymKey::new(*b"0123456789abcdef").unwrap();
        let n = NhsNumber::parse("943 476 5919").unwrap();
        assert_eq!(
            key.person_key(&PersonRef::Nhs(n)),
            "a36b3d991d3581ce0ce7a2872ec598bd"
        );
        let local = PersonRef::Local(crate::LocalId {
            system: "https://fhir.leeds.gov.uk/Id/person".into(),
            value: "L-123".into(),
        });
        assert_eq!(key.person_key(&local), "c4fe42853e4c83f828eb174076cd5f45");
        // A key longer than SHA-256's block is hashed first, as HMAC says.
        let long = PseudonymKey::new(
            &b"a much longer deployment secret of more than sixty-four bytes, as operators may configure it"[..],
        )
        .unwrap();
        assert_eq!(
            long.person_key(&PersonRef::Nhs(n)),
            "61fe76bb04072af6dd4c6e47cc1a8f51"
        );
        // The same key twice gives the same pseudonyms (the keyed state is not consumed).
        assert_eq!(key.person_key(&local), key.person_key(&local));
    }

    #[test]
    fn an_event_must_be_stored_under_its_own_type_and_person() {
        let key = PseudonymKey::new(*b"0123456789abcdef").unwrap();
        let event = |ty: &str, nhs: &str, data: serde_json::Value| {
            Event::from_json(serde_json::json!({
                "specversion": "1.0", "id": "x", "source": "urn:gss:E08000035:mosaic",
                "type": ty, "subject": nhs, "time": "2026-11-02T09:00:00Z", "data": data
            }))
            .unwrap()
        };
        let accepted = event(
            "handover.referral.accepted.v1",
            "9434765919",
            serde_json::json!({"referral_id": "R1"}),
        );
        let n = NhsNumber::parse("9434765919").unwrap();
        let k = key.person_key(&PersonRef::Nhs(n));
        let own = subject_for(EventType::ReferralAccepted, &k);
        assert_eq!(check_subject(&key, &own, &accepted), Ok(()));
        // a discharge published under a referral's subject (a council user may publish
        // there), and the reverse
        let discharged = event(
            "handover.discharge.discharged.v1",
            "9434765919",
            serde_json::json!({"encounter_id": "E1", "discharged_at": "2026-11-02T09:00:00Z"}),
        );
        let e = check_subject(&key, &own, &discharged).unwrap_err();
        assert_eq!(
            e,
            "stored under care.referral.accepted.…, which is not the subject of a handover.discharge.discharged.v1 event (care.discharge.discharged.…)"
        );
        // someone else's key
        let other = NhsNumber::parse("9434765870").unwrap();
        let theirs = subject_for(
            EventType::ReferralAccepted,
            &key.person_key(&PersonRef::Nhs(other)),
        );
        let e = check_subject(&key, &theirs, &accepted).unwrap_err();
        assert!(
            e.contains("another person's key") && !e.contains("943476"),
            "{e}"
        );
        // not a care subject at all
        assert!(check_subject(&key, "care.referral.accepted", &accepted).is_err());
    }
}
