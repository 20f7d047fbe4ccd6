//! The NATS permission sets of `deploy/nats-permissions.conf`, derived from the event
//! catalogue and the sector rule ([`handover_api::policy::sector_may_publish`]), so the
//! server-side producer authorisation cannot drift from the API's.
//!
//! `deploy/nats-accounts.conf` (edited by operators) gives each NATS user one of these sets;
//! a test fails when the committed permissions file is stale
//! (`UPDATE_DEPLOY=1 cargo test -p handover --lib nats_accounts` rewrites it).

use std::fmt::Write;

use handover_api::policy::sector_may_publish;
use handover_events::subject::SUBJECT_ROOT;
use handover_events::EventType;

/// The stream the reader example may consume (the default stream name).
pub const STREAM: &str = "HANDOVER";

/// The durable consumer name the reader example is confined to.
pub const READER_CONSUMER: &str = "analytics";

/// Inbox prefix of producers (they must set it in their client: the default `_INBOX` is
/// the Handover service's, whose replies carry event data).
pub const PRODUCER_INBOX: &str = "_INBOX_PRODUCER";

/// Inbox prefix of the reader example.
pub const READER_INBOX: &str = "_INBOX_ANALYTICS";

/// The subjects a producer of `sector` (`nhs` or `council`) may publish to: one
/// `care.<domain>.<event>.*` per catalogue type the sector rule lets it assert.
pub fn producer_subjects(sector: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in EventType::ALL
        .iter()
        .filter(|t| sector_may_publish(sector, **t))
    {
        // A type's versions share a subject.
        let s = format!("{SUBJECT_ROOT}.{}.{}.*", t.domain().as_str(), t.name());
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn list(out: &mut String, items: &[String]) {
    for i in items {
        let _ = writeln!(out, "      \"{i}\"");
    }
}

fn set(out: &mut String, name: &str, doc: &str, publish: &[String], subscribe: &[String]) {
    for line in doc.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let _ = writeln!(out, "{name} = {{");
    let _ = writeln!(out, "  publish: {{");
    let _ = writeln!(out, "    allow: [");
    list(out, publish);
    let _ = writeln!(out, "    ]");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "  subscribe: {{");
    let _ = writeln!(out, "    allow: [");
    list(out, subscribe);
    let _ = writeln!(out, "    ]");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "}}\n");
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The text of `deploy/nats-permissions.conf`.
pub fn permissions_conf() -> String {
    let mut out = String::new();
    out.push_str(
        "# GENERATED from the event catalogue and the sector rule by
#   UPDATE_DEPLOY=1 cargo test -p handover --lib nats_accounts
# Do not edit: a test fails when this file and the code disagree. Included by
# nats-accounts.conf, which gives each NATS user one of these permission sets
# (docs/operations.md, \"NATS accounts\"; docs/governance.md, \"Producer authorisation\").
#
# Subjects are care.<domain>.<event>.<person-key>; `*` is the person key. A producer may
# publish only the event types its sector may assert (the API's sector rule), may not
# read the stream, and may use no JetStream API: a publish with an acknowledgement needs
# only its own inbox. Producers must connect with the inbox prefix named below (e.g.
# async-nats `custom_inbox_prefix`, nats.go `nats.CustomInboxPrefix`): the default
# `_INBOX` belongs to the Handover service, whose replies carry event data.

",
    );
    set(
        &mut out,
        "HANDOVER_SERVICE",
        "The Handover service (handover serve): its three streams (care events, access audit,
parked events), the JetStream API to create and use them, acknowledgements and flow
control of its consumers, and replies to its own requests.",
        &strings(&[
            &format!("{SUBJECT_ROOT}.>"),
            "audit.>",
            "parked.>",
            "$JS.API.>",
            "$JS.ACK.>",
            "$JS.FC.>",
        ]),
        &strings(&["_INBOX.>"]),
    );
    set(
        &mut out,
        "HOSPITAL_PRODUCER",
        &format!(
            "A trust's producer (urn:ods:… sources): people, hospital stays, referrals sent or
withdrawn. Inbox prefix {PRODUCER_INBOX}."
        ),
        &producer_subjects("nhs"),
        &[format!("{PRODUCER_INBOX}.>")],
    );
    set(
        &mut out,
        "COUNCIL_PRODUCER",
        &format!(
            "A council's producer (urn:gss:… sources): people, referral answers and
assessments, care packages. Inbox prefix {PRODUCER_INBOX}."
        ),
        &producer_subjects("council"),
        &[format!("{PRODUCER_INBOX}.>")],
    );
    let c = READER_CONSUMER;
    set(
        &mut out,
        "ANALYTICS_READER",
        &format!(
            "A read-only subscriber: consumes the {STREAM} stream through its own durable pull
consumer `{c}` and nothing else (it cannot publish, purge, delete, or touch the
projections' consumers). It reads every event, identifiers included: grant it only
to a processor with a lawful basis. Inbox prefix {READER_INBOX}."
        ),
        &[
            "$JS.API.INFO".to_string(),
            format!("$JS.API.STREAM.INFO.{STREAM}"),
            format!("$JS.API.CONSUMER.CREATE.{STREAM}.{c}"),
            format!("$JS.API.CONSUMER.CREATE.{STREAM}.{c}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{c}"),
            format!("$JS.API.CONSUMER.INFO.{STREAM}.{c}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{c}"),
            format!("$JS.API.CONSUMER.DELETE.{STREAM}.{c}"),
            format!("$JS.ACK.{STREAM}.{c}.>"),
        ],
        &[format!("{READER_INBOX}.>")],
    );
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sectors_publish_disjoint_care_subjects_except_people_and_withdrawals() {
        let nhs = producer_subjects("nhs");
        let council = producer_subjects("council");
        assert!(nhs.contains(&"care.discharge.discharged.*".to_string()));
        assert!(nhs.contains(&"care.referral.sent.*".to_string()));
        assert!(!nhs.iter().any(|s| s.starts_with("care.care-package.")));
        assert!(!nhs.contains(&"care.referral.accepted.*".to_string()));
        assert!(council.contains(&"care.care-package.started.*".to_string()));
        assert!(council.contains(&"care.referral.assessment-completed.*".to_string()));
        assert!(!council.iter().any(|s| s.starts_with("care.discharge.")));
        assert!(!council.contains(&"care.referral.sent.*".to_string()));
        let shared: Vec<&String> = nhs.iter().filter(|s| council.contains(s)).collect();
        assert!(
            shared
                .iter()
                .all(|s| s.starts_with("care.person.") || *s == "care.referral.withdrawn.*"),
            "{shared:?}"
        );
        assert!(producer_subjects("other").is_empty());
    }

    #[test]
    fn nats_accounts_permissions_file_is_generated_from_the_catalogue() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/nats-permissions.conf");
        let want = permissions_conf();
        if std::env::var_os("UPDATE_DEPLOY").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "deploy/nats-permissions.conf is stale: run UPDATE_DEPLOY=1 cargo test -p handover --lib nats_accounts"
        );
    }
}
