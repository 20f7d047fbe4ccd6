//! HL7 v2 ADT over MLLP: a hospital PAS feed, acknowledged only when durable.
//!
//! The adapter listens for MLLP connections (`0x0B … 0x1C 0x0D` frames), parses each message
//! with [`handover_hl7`], maps it to catalogue events with the pure [`translate`], hands the
//! events to the [`EventSink`] and answers with an original-mode `ACK`:
//!
//! - `AA` only after [`EventSink::publish`] returned `Ok` (the events are in JetStream), or for
//!   an ADT trigger Handover does not use (ignored, counted);
//! - `AE` with an `ERR` segment naming the segment and field for content errors (an NHS number
//!   failing its Modulus 11 check, an unparseable date, a missing `PV1` or `PV1-19`, ...);
//! - `AR` for what is not about content: a message type other than ADT (`200`), a version
//!   before 2.3 or not 2.x (`203`), a processing id not in `processing_ids` (`202`), a
//!   missing MSH-9 or MSH-12 (or MSH-11 where processing ids are checked: `101`), an
//!   unlisted sending facility (`204`), an event log that is unavailable (`207`, so the
//!   sender resends), an unparseable or oversized frame (`102`), a frame holding a second
//!   message or a batch (`100`: one message per frame, nothing in it stored).
//!
//! Every ACK carries MSH-11 and MSH-12 (`P` and `2.4` when the message has none to echo).
//! A `0x0B` inside a frame restarts the frame (the bytes before it are dropped, a warning
//! logged); control characters in a message are dropped, never stored nor echoed.
//!
//! Messages on one connection are processed one at a time, in order. Event ids derive from
//! MSH-10 and a digest of the message (MSH-7 and MSH-18 left out), so a resent message produces
//! identical events that the log recognises as duplicates, and a different message under a
//! reused control id does not.
//! Logs carry the message control id, trigger and ACK code, never an identifier of a person.
//! `docs/adapters.md` has the full mapping and ACK tables.
//!
//! # Configuration
//!
//! The `[hl7]` section of `handover.toml`; every key is optional:
//!
//! ```toml
//! [hl7]
//! listen = "0.0.0.0:2575"
//! system = "pas"
//! max_message_bytes = 1048576
//! idle_timeout_secs = 600
//! responsible_council = "E08000035"
//! processing_ids = ["P"]
//!
//! [hl7.facilities]
//! RX1 = "RX1"
//! "LEEDS PAS" = "RR8"
//!
//! [hl7.sites]
//! SJUH = "RR813"
//! LGI = "RR801"
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use handover_events::{Event, EventSink, EventType, NhsNumber, SinkError, Timestamp};
use handover_hl7::mllp::{encode, MllpDecoder};
use handover_hl7::timestamp::{Precision, TimestampError};
use handover_hl7::{
    ack, ack_salvaged, ack_unparseable, AckCode, AckError, ErrorCode, ErrorLocation, FrameError,
    Message, ParseError, Repetition, Segment,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

/// This adapter's entry in the [registry](crate::ADAPTERS).
pub const ADAPTER: crate::Adapter = crate::Adapter {
    name: "hl7",
    config_section: "hl7",
    summary:
        "HL7 v2 ADT (A01-A03, A06, A08, A11-A13, A34, A36, A40, A47) over MLLP from a hospital PAS",
    check: |v| crate::section::<Hl7Config>("hl7", v).and_then(|c| c.validate()),
    start: |v, ctx| Box::pin(start(v, ctx)),
};

/// Binds the listener from the `[hl7]` section and returns the run loop.
async fn start(section: toml::Value, ctx: crate::Context) -> Result<crate::Started, String> {
    let cfg: Hl7Config = crate::section("hl7", &section)?;
    cfg.validate()?;
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
        format!(
            "cannot listen for HL7 MLLP on {} (hl7.listen): {e}",
            cfg.listen
        )
    })?;
    let listening = listener.local_addr().ok();
    let metrics = Arc::new(Hl7Metrics::default());
    let rendered = metrics.clone();
    let shutdown = ctx.shutdown_signal();
    let sink = ctx.sink.clone();
    Ok(crate::Started {
        listening,
        metrics: Box::new(move || rendered.render_prometheus()),
        task: Box::pin(async move {
            if let Err(e) = run(listener, Arc::new(cfg), sink, metrics, shutdown).await {
                tracing::error!(error = %e, "HL7 listener failed");
            }
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The `[hl7]` section of `handover.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hl7Config {
    /// Address the MLLP listener binds (default `127.0.0.1:2575`).
    pub listen: SocketAddr,
    /// Accepted sending facilities: MSH-4 → the ODS code used in the event source
    /// `urn:ods:<ODS>:<system>`. Empty (the default) accepts every facility, with MSH-4 itself as
    /// the ODS code; non-empty rejects (`AR`) a facility that is not listed.
    pub facilities: BTreeMap<String, String>,
    /// Source system suffix of the event source, e.g. `pas` in `urn:ods:RX1:pas`. Default: the
    /// sending application (MSH-3) lower-cased, else `pas`.
    pub system: Option<String>,
    /// Hospital sites: the point-of-care facility (PV1-3.4) or servicing facility (PV1-39) as
    /// sent → the ODS site code of `admitted.site`. A value not listed is used as sent; with
    /// neither field present the site is the sending facility's ODS code.
    pub sites: BTreeMap<String, String>,
    /// Largest accepted message in bytes (default 1 MiB); larger frames get `AR`.
    pub max_message_bytes: usize,
    /// A connection with no traffic for this many seconds is closed (default 600).
    pub idle_timeout_secs: u64,
    /// GSS code put in `admitted.responsible_council` (HL7 ADT does not carry it); default none.
    pub responsible_council: Option<String>,
    /// Processing ids (MSH-11.1, e.g. `P` production, `T` training, `D` debugging) accepted;
    /// a message with another is refused (`AR 202`), so a training or test feed cannot write
    /// into live journeys. Empty (the default) accepts every processing id.
    pub processing_ids: Vec<String>,
}

impl Hl7Config {
    /// Checks what serde cannot: `responsible_council` is a GSS code (a letter and eight
    /// digits), since every admission would otherwise be refused with `AE`.
    pub fn validate(&self) -> Result<(), String> {
        match self.responsible_council.as_deref().map(str::trim) {
            Some(c)
                if !(c.len() == 9
                    && c.as_bytes()[0].is_ascii_alphabetic()
                    && c.bytes().skip(1).all(|b| b.is_ascii_digit())) =>
            {
                Err(format!(
                    "hl7.responsible_council {c:?} is not a GSS code (a letter and 8 digits, e.g. E08000035)"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The default MLLP port, 2575 (IANA `hl7-mllp`), on loopback.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    2575,
));

impl Default for Hl7Config {
    fn default() -> Self {
        Hl7Config {
            listen: DEFAULT_LISTEN,
            facilities: BTreeMap::new(),
            system: None,
            sites: BTreeMap::new(),
            max_message_bytes: 1024 * 1024,
            idle_timeout_secs: 600,
            responsible_council: None,
            processing_ids: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Translation (pure)
// ---------------------------------------------------------------------------------------------

/// What one HL7 message becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Translation {
    /// Catalogue events to publish, in order; the sender gets `AA` once they are stored.
    Events(Vec<Event>),
    /// A well-formed ADT message Handover has no use for (e.g. A28, A31, or an A08 changing
    /// nothing Handover records); acknowledged `AA` and counted.
    Ignored {
        /// The trigger event, e.g. `A28`.
        trigger: String,
    },
}

/// Why a message cannot be turned into events; reported in the ACK's `MSA` and `ERR`.
///
/// The message never contains an identifier of a person (it is logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ContentError {
    /// `AE` (content error: correct and resend) or `AR` (rejected: not for this receiver).
    pub ack: AckCode,
    /// HL7 table 0357 error code.
    pub code: ErrorCode,
    /// The segment (and field) at fault.
    pub location: ErrorLocation,
    /// What is wrong, for the sender's interface team.
    pub message: String,
}

impl ContentError {
    fn ae(code: ErrorCode, location: ErrorLocation, message: impl Into<String>) -> Self {
        ContentError {
            ack: AckCode::Ae,
            code,
            location,
            message: message.into(),
        }
    }

    fn ar(code: ErrorCode, location: ErrorLocation, message: impl Into<String>) -> Self {
        ContentError {
            ack: AckCode::Ar,
            code,
            location,
            message: message.into(),
        }
    }

    /// The error as the hl7 crate's [`AckError`], for [`ack()`].
    pub fn to_ack_error(&self) -> AckError {
        AckError {
            code: self.code,
            location: Some(self.location.clone()),
            message: self.message.clone(),
        }
    }
}

/// The ADT triggers mapped to events; every other ADT trigger is [`Translation::Ignored`].
pub const SUPPORTED_TRIGGERS: &[&str] = &[
    "A01", "A02", "A03", "A06", "A08", "A11", "A12", "A13", "A28", "A31", "A34", "A36", "A40",
    "A47",
];

/// PV1-2 patient classes (HL7 table 0004) of visits that are not a hospital stay:
/// outpatient, pre-admit and recurring patient. A stay trigger (A01, A02, A03, A06, A11, A12,
/// A13) for one of them is ignored (`AA`), and an A08's expected discharge date (PV2-9) for
/// one is not set. Emergency (`E`) is kept: some PAS admit from the emergency department
/// under it.
pub const NOT_STAY_CLASSES: &[&str] = &["O", "P", "R"];

/// PV1-4 admission type → `admitted.admission_method` (case-insensitive). HL7 table 0007 codes
/// and the NHS Data Dictionary admission method codes some PAS send in PV1-4. Any other value
/// is `other`; an empty PV1-4 leaves `admission_method` out.
pub const ADMISSION_METHODS: &[(&str, &str)] = &[
    ("E", "emergency"),
    ("EM", "emergency"),
    ("A", "emergency"),
    ("U", "emergency"),
    ("21", "emergency"),
    ("22", "emergency"),
    ("23", "emergency"),
    ("24", "emergency"),
    ("25", "emergency"),
    ("28", "emergency"),
    ("2A", "emergency"),
    ("2B", "emergency"),
    ("2C", "emergency"),
    ("2D", "emergency"),
    ("EL", "elective"),
    ("C", "elective"),
    ("R", "elective"),
    ("11", "elective"),
    ("12", "elective"),
    ("13", "elective"),
    ("B", "maternity"),
    ("N", "maternity"),
    ("L", "maternity"),
    ("31", "maternity"),
    ("32", "maternity"),
    ("82", "maternity"),
    ("83", "maternity"),
    ("T", "transfer"),
    ("TR", "transfer"),
    ("81", "transfer"),
];

/// PV1-37 discharged-to location (NHS Data Dictionary discharge destination code) →
/// `discharged.destination`. `99` (not known) or an empty PV1-37 leaves `destination` out; any
/// other value is `other`. Transfers to another hospital (48–53, 84, 87) are `other`, not
/// `community-bed`: the code cannot tell an acute transfer from a D2A pathway 2 bed, and the
/// pathway is recorded explicitly (`pathway-assigned`).
pub const DISCHARGE_DESTINATIONS: &[(&str, &str)] = &[
    ("19", "usual-residence"),
    ("29", "usual-residence"),
    ("55", "care-home"),
    ("56", "care-home"),
    ("54", "care-home"),
    ("65", "care-home"),
    ("85", "care-home"),
    ("79", "died"),
    ("88", "hospice"),
    ("30", "other"),
    ("37", "other"),
    ("38", "other"),
    ("40", "other"),
    ("42", "other"),
    ("48", "other"),
    ("49", "other"),
    ("50", "other"),
    ("51", "other"),
    ("52", "other"),
    ("53", "other"),
    ("66", "other"),
    ("84", "other"),
    ("87", "other"),
    ("89", "other"),
];

/// NHS number status indicator codes (UK Core) accepted from PID-32.
const NHS_NUMBER_STATUSES: &[&str] = &["01", "02", "03", "04", "05", "06", "07", "08"];

/// The OID of the NHS number, accepted as an assigning authority's universal id.
const NHS_NUMBER_OID: &str = "2.16.840.1.113883.2.1.4.1";

/// Longest MSH-10 accepted (the event id is derived from it).
const MAX_CONTROL_ID: usize = 200;

/// The admission method for a PV1-4 value.
pub fn admission_method(pv1_4: &str) -> &'static str {
    table(ADMISSION_METHODS, pv1_4).unwrap_or("other")
}

/// The discharge destination for a PV1-37 value (`None` for `98`, not applicable, and `99`,
/// not known: the NHS Data Dictionary's default codes say there is none to record).
pub fn discharge_destination(pv1_37: &str) -> Option<&'static str> {
    let code = pv1_37.trim();
    // A PAS that pads its codes to three digits (`019`) means the two-digit code.
    let code = match code.strip_prefix('0') {
        Some(rest) if code.len() == 3 && rest.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => code,
    };
    match code {
        "98" | "99" | "" => None,
        code => Some(table(DISCHARGE_DESTINATIONS, code).unwrap_or("other")),
    }
}

fn table(table: &[(&str, &'static str)], code: &str) -> Option<&'static str> {
    let code = code.trim();
    table
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(code))
        .map(|(_, v)| *v)
}

/// Whether a version id (MSH-12) is accepted: 2.3 through 2.5.1 as specified, and any later
/// 2.x (the 2.x line is backwards compatible). Earlier, missing or non-2.x versions are not.
pub fn version_supported(version: &str) -> bool {
    let mut parts = version.trim().split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    let rest_ok = parts.all(|p| p.parse::<u32>().is_ok());
    matches!((major, minor), (Some(2), Some(minor)) if minor >= 3) && rest_ok
}

fn loc(segment: &str, sequence: usize, field: u32) -> ErrorLocation {
    let mut l = ErrorLocation::field(segment, field);
    l.sequence = u32::try_from(sequence).unwrap_or(u32::MAX);
    l
}

fn seg_loc(segment: &str, sequence: usize) -> ErrorLocation {
    ErrorLocation {
        segment: segment.to_owned(),
        sequence: u32::try_from(sequence).unwrap_or(u32::MAX),
        field: None,
        repetition: None,
        component: None,
    }
}

/// A decoded, trimmed, non-empty value; HL7's explicit null `""` counts as empty.
fn clean(v: &str) -> Option<&str> {
    let v = v.trim();
    (!v.is_empty() && v != "\"\"").then_some(v)
}

/// Component `comp`, subcomponent `sub` of a repetition.
fn rep_val(rep: &Repetition, comp: usize, sub: usize) -> Option<&str> {
    clean(rep.component(comp)?.subcomponent(sub)?)
}

/// Field `field` (first repetition), component `comp`, subcomponent `sub` of a segment.
fn val(seg: &Segment, field: usize, comp: usize, sub: usize) -> Option<&str> {
    rep_val(seg.field(field)?.repetition(1)?, comp, sub)
}

/// Text safe to put in a URN: ASCII letters, digits, `-`, `.` and `_`; others become `-`.
fn urn_token(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// The message header as Handover needs it.
struct Header {
    /// The events' id stem: MSH-10 and a digest of the message (see [`id_stem`]).
    stem: String,
    trigger: String,
    ods: String,
    source: String,
    time: Timestamp,
    /// Whether `time` came from EVN (the recorded event time) rather than MSH-7.
    time_from_evn: bool,
}

/// Checks that the message is for us: one message, ADT, a supported version, an accepted
/// processing id and facility. Returns the ODS code and the trigger.
fn route(msg: &Message, cfg: &Hl7Config) -> Result<(String, String), ContentError> {
    let msh = msg.segment("MSH").ok_or_else(|| {
        ContentError::ae(
            ErrorCode::SegmentSequenceError,
            seg_loc("MSH", 1),
            "no MSH segment",
        )
    })?;
    // A second MSH is a second message in the same frame (an engine concatenating its
    // queue, a file-to-MLLP bridge): read as one, its segments would be taken as more of
    // the first's (another PID/MRG pair of an A40) or dropped while the frame got AA.
    if msg.segments("MSH").nth(1).is_some() {
        return Err(ContentError::ar(
            ErrorCode::SegmentSequenceError,
            seg_loc("MSH", 2),
            "this frame holds more than one message (a second MSH segment): an MLLP frame \
             holds one message, so nothing in it was stored; send each message in a frame \
             of its own",
        ));
    }
    match msg.message_type().and_then(clean) {
        Some(t) if t.eq_ignore_ascii_case("ADT") => {}
        None => {
            return Err(ContentError::ar(
                ErrorCode::RequiredFieldMissing,
                loc("MSH", 1, 9),
                "MSH-9 message type is required",
            ));
        }
        Some(other) => {
            let shown: String = other.chars().take(16).collect();
            return Err(ContentError::ar(
                ErrorCode::UnsupportedMessageType,
                loc("MSH", 1, 9),
                format!("message type {shown} is not supported: only ADT"),
            ));
        }
    }
    match msg.version().and_then(clean) {
        Some(v) if version_supported(v) => {}
        None => {
            return Err(ContentError::ar(
                ErrorCode::RequiredFieldMissing,
                loc("MSH", 1, 12),
                "MSH-12 version id is required",
            ));
        }
        Some(other) => {
            let shown: String = other.chars().take(16).collect();
            return Err(ContentError::ar(
                ErrorCode::UnsupportedVersionId,
                loc("MSH", 1, 12),
                format!("HL7 version {shown} is not supported: 2.3 or later 2.x"),
            ));
        }
    }
    if !cfg.processing_ids.is_empty() {
        let Some(id) = val(msh, 11, 1, 1) else {
            // A receiver that checks processing ids cannot take a message without one for
            // production.
            return Err(ContentError::ar(
                ErrorCode::RequiredFieldMissing,
                loc("MSH", 1, 11),
                format!(
                    "MSH-11 processing id is required by this receiver (accepted: {})",
                    cfg.processing_ids.join(", ")
                ),
            ));
        };
        if !cfg
            .processing_ids
            .iter()
            .any(|p| p.trim().eq_ignore_ascii_case(id))
        {
            let shown: String = id.chars().take(8).collect();
            return Err(ContentError::ar(
                ErrorCode::UnsupportedProcessingId,
                loc("MSH", 1, 11),
                format!(
                    "processing id {shown} is not accepted by this receiver (accepted: {})",
                    cfg.processing_ids.join(", ")
                ),
            ));
        }
    }
    let facility = val(msh, 4, 1, 1)
        .or_else(|| val(msh, 4, 2, 1))
        .ok_or_else(|| {
            ContentError::ae(
                ErrorCode::RequiredFieldMissing,
                loc("MSH", 1, 4),
                "MSH-4 sending facility is required",
            )
        })?;
    let ods = if cfg.facilities.is_empty() {
        urn_token(facility).to_ascii_uppercase()
    } else {
        match cfg
            .facilities
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(facility))
        {
            Some((_, ods)) => urn_token(ods).to_ascii_uppercase(),
            None => {
                let shown: String = facility.chars().take(32).collect();
                return Err(ContentError::ar(
                    ErrorCode::UnknownKeyIdentifier,
                    loc("MSH", 1, 4),
                    format!("sending facility {shown} is not configured for this receiver"),
                ));
            }
        }
    };
    if ods.is_empty() {
        return Err(ContentError::ae(
            ErrorCode::DataTypeError,
            loc("MSH", 1, 4),
            "MSH-4 sending facility is not a usable ODS code",
        ));
    }
    let trigger = msg
        .trigger_event()
        .and_then(clean)
        .or_else(|| msg.get("EVN-1").and_then(clean))
        .map(str::to_ascii_uppercase)
        .ok_or_else(|| {
            ContentError::ae(
                ErrorCode::RequiredFieldMissing,
                loc("MSH", 1, 9),
                "MSH-9.2 trigger event is required",
            )
        })?;
    Ok((ods, trigger))
}

fn header(
    msg: &Message,
    cfg: &Hl7Config,
    ods: String,
    trigger: String,
) -> Result<Header, ContentError> {
    let control_id = msg.control_id().and_then(clean).ok_or_else(|| {
        ContentError::ae(
            ErrorCode::RequiredFieldMissing,
            loc("MSH", 1, 10),
            "MSH-10 message control id is required",
        )
    })?;
    if control_id.len() > MAX_CONTROL_ID {
        return Err(ContentError::ae(
            ErrorCode::DataTypeError,
            loc("MSH", 1, 10),
            format!("MSH-10 message control id is longer than {MAX_CONTROL_ID} characters"),
        ));
    }
    let system = match &cfg.system {
        Some(s) => urn_token(s),
        None => msg
            .header_value(3, 1)
            .and_then(clean)
            .map(|a| urn_token(a).to_ascii_lowercase())
            .unwrap_or_default(),
    };
    let system = if system.is_empty() {
        "pas".to_owned()
    } else {
        system
    };
    let source = format!("urn:ods:{ods}:{system}");
    let (time, time_from_evn) = event_time(msg, &trigger)?;
    Ok(Header {
        stem: id_stem(msg, control_id),
        trigger,
        ods,
        source,
        time,
        time_from_evn,
    })
}

/// The stem of the ids of a message's events: MSH-10, a dot and 12 hex digits of the SHA-256
/// of the message's segments (MSH-7, the time it was sent, and MSH-18, the character set,
/// left out). A resent message, even
/// one whose MSH-7 was regenerated, gives the same ids and is recognised as a duplicate; a
/// different message under a reused control id (a counter reset after a PAS rebuild or
/// failover, or a daily wrap) gives new ids and is not mistaken for one.
///
/// Trailing empty fields, repetitions, components and subcomponents (`|||` at the end of a
/// segment, `^^` at the end of a field) are left out of the digest: HL7 lets a sender omit
/// them or not, and an interface engine re-serialising a message on resend often changes
/// which. A message without any hashes exactly as it did before they were left out, so its
/// ids did not change; only a message with some got new ones (one stored before that
/// change and resent after it is stored again).
fn id_stem(msg: &Message, control_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let seps = msg.separators();
    let levels = [
        seps.field,
        seps.repetition,
        seps.component,
        seps.subcomponent,
    ];
    let mut h = Sha256::new();
    let mut buf = String::new();
    for seg in msg.all_segments() {
        buf.clear();
        if seg.name() == "MSH" {
            // Field by field: MSH-1 and MSH-2 are the delimiters themselves, taken as they
            // are; the others without their trailing empty parts, and empty fields at the
            // end left out.
            let mut ends = Vec::with_capacity(seg.fields().len());
            for (i, f) in seg.fields().iter().enumerate() {
                if i < 2 {
                    buf.push_str(f.raw());
                } else {
                    push_trimmed(&mut buf, f.raw(), &levels[1..]);
                }
                ends.push(buf.len());
            }
            // MSH-18 (character set) is left out too: an interface engine that re-encodes
            // a message on its way often adds or changes it, and the content is the same.
            let kept = (2..ends.len())
                .rev()
                .find(|&i| ends[i] > ends[i - 1] && i + 1 != 18)
                .map_or(ends.len().min(2), |i| i + 1);
            let mut start = 0;
            for (i, &end) in ends.iter().enumerate().take(kept) {
                if !matches!(i + 1, 7 | 18) {
                    h.update(&buf.as_bytes()[start..end]);
                }
                h.update([0x1f]);
                start = end;
            }
        } else {
            push_trimmed(&mut buf, seg.raw().trim_end(), &levels);
            h.update(buf.as_bytes());
        }
        h.update(b"\r");
    }
    let digest = h.finalize();
    format!("{control_id}.{}", hex::encode(&digest[..6]))
}

/// Appends `text` to `out` without its trailing empty parts: `levels` are the delimiters
/// that split it, outermost first (for a segment: field, repetition, component,
/// subcomponent). Each part is trimmed the same way at the next level, and parts left empty
/// at the end are dropped with their delimiters, so `A^B^^~` is `A^B`. Text with no trailing
/// empty part is appended unchanged.
fn push_trimmed(out: &mut String, text: &str, levels: &[char]) {
    let Some((&sep, inner)) = levels.split_first() else {
        out.push_str(text);
        return;
    };
    let mut keep = out.len();
    for (i, part) in text.split(sep).enumerate() {
        if i > 0 {
            out.push(sep);
        }
        let before = out.len();
        push_trimmed(out, part, inner);
        if out.len() > before {
            keep = out.len();
        }
    }
    out.truncate(keep);
}

/// EVN-6 (event occurred), else EVN-2 (recorded), else MSH-7; for A11, A12 and A13 EVN-2
/// before EVN-6. The first present is used and must parse.
fn event_time(msg: &Message, trigger: &str) -> Result<(Timestamp, bool), ContentError> {
    // A cancellation (A11, A12, A13) happens when it is recorded: some PAS put the time of
    // the event it cancels in EVN-6, which would sort it before what it cancels.
    let order = if matches!(trigger, "A11" | "A12" | "A13") {
        [2, 6]
    } else {
        [6, 2]
    };
    if let Some(evn) = msg.segment("EVN") {
        for field in order {
            if let Some(t) = hl7_time(evn, 1, field)? {
                return Ok((t, true));
            }
        }
    }
    if let Some(msh) = msg.segment("MSH") {
        if let Some(t) = hl7_time(msh, 1, 7)? {
            return Ok((t, false));
        }
    }
    Err(ContentError::ae(
        ErrorCode::RequiredFieldMissing,
        loc("MSH", 1, 7),
        "no event time: EVN-6, EVN-2 and MSH-7 are all empty",
    ))
}

/// Why a timestamp does not parse, without echoing the value (it may be a date of birth).
fn describe(e: &TimestampError) -> String {
    match e {
        TimestampError::Empty => "it is empty".into(),
        TimestampError::Malformed { reason, .. } => (*reason).to_string(),
        TimestampError::OutOfRange { part, min, max, .. } => {
            format!("{part} out of range {min}..={max}")
        }
    }
}

fn parse_dtm(
    seg: &Segment,
    seq: usize,
    field: usize,
) -> Result<Option<handover_hl7::Timestamp>, ContentError> {
    let Some(raw) = val(seg, field, 1, 1) else {
        return Ok(None);
    };
    let name = seg.name();
    let f = u32::try_from(field).unwrap_or(u32::MAX);
    handover_hl7::Timestamp::parse(raw).map(Some).map_err(|e| {
        ContentError::ae(
            ErrorCode::DataTypeError,
            loc(name, seq, f),
            format!(
                "{name}-{field} is not a valid HL7 date/time: {}",
                describe(&e)
            ),
        )
    })
}

/// An HL7 DTM field as a timestamp: without an offset it is UK local time, with one it is kept.
fn hl7_time(seg: &Segment, seq: usize, field: usize) -> Result<Option<Timestamp>, ContentError> {
    let Some(t) = parse_dtm(seg, seq, field)? else {
        return Ok(None);
    };
    let name = seg.name();
    let bad = || {
        ContentError::ae(
            ErrorCode::DataTypeError,
            loc(name, seq, u32::try_from(field).unwrap_or(u32::MAX)),
            format!("{name}-{field} is not a valid date/time"),
        )
    };
    let naive = NaiveDate::from_ymd_opt(i32::from(t.year), u32::from(t.month), u32::from(t.day))
        .and_then(|d| {
            d.and_hms_nano_opt(
                u32::from(t.hour),
                u32::from(t.minute),
                u32::from(t.second),
                t.nanos,
            )
        })
        .ok_or_else(bad)?;
    Ok(Some(match t.offset_minutes {
        None => Timestamp::from_london(naive),
        Some(m) => {
            let off = FixedOffset::east_opt(m * 60).ok_or_else(bad)?;
            Timestamp(local_to_fixed(off, naive).ok_or_else(bad)?)
        }
    }))
}

fn local_to_fixed(off: FixedOffset, naive: NaiveDateTime) -> Option<chrono::DateTime<FixedOffset>> {
    off.from_local_datetime(&naive).single()
}

/// An HL7 date (the date part of a DTM). `partial_ok`: a year or year-month is `None` rather
/// than an error.
fn hl7_date(
    seg: &Segment,
    seq: usize,
    field: usize,
    partial_ok: bool,
) -> Result<Option<NaiveDate>, ContentError> {
    let Some(t) = parse_dtm(seg, seq, field)? else {
        return Ok(None);
    };
    let name = seg.name();
    let bad = |why: &str| {
        ContentError::ae(
            ErrorCode::DataTypeError,
            loc(name, seq, u32::try_from(field).unwrap_or(u32::MAX)),
            format!("{name}-{field} {why}"),
        )
    };
    if t.precision < Precision::Day {
        return if partial_ok {
            Ok(None)
        } else {
            Err(bad("needs a full date (YYYYMMDD)"))
        };
    }
    NaiveDate::from_ymd_opt(i32::from(t.year), u32::from(t.month), u32::from(t.day))
        .map(Some)
        .ok_or_else(|| bad("is not a valid date"))
}

/// Who a PID (or MRG) segment is about.
struct Person {
    nhs: Option<NhsNumber>,
    /// `{system, value}` objects, in PID-3 order (the NHS number excluded).
    local_ids: Vec<Value>,
}

/// How a CX repetition says it holds an NHS number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NhsMark {
    /// It does not: a local id (or an account or visit number).
    None,
    /// It does, in the contract's terms: the value must be a valid NHS number (else `AE`).
    Marked,
    /// A spelling some UK PAS feeds use: an NHS number when the value is a valid one, else a
    /// local id as any other repetition (these spellings are not in the contract, so a
    /// value failing Modulus 11 under one is not refused).
    Likely,
}

/// How a CX repetition marks an NHS number: assigning authority (CX.4) `NHS` (or the NHS
/// number OID, as its universal id or as its namespace id), or identifier type (CX.5) `NH`
/// (HL7 table 0203's national health plan number) or `NHS`/`NHSNBR` as UK feeds send it, are
/// [`NhsMark::Marked`]; identifier type `NHSNMBR` (Cerner alias pools) or `NNGBR` (table
/// 0203's national person identifier, `NN` + the country), or assigning authority `NHSNBR`,
/// are [`NhsMark::Likely`].
fn nhs_mark(rep: &Repetition) -> NhsMark {
    let authority = rep_val(rep, 4, 1).unwrap_or("");
    let oid = rep_val(rep, 4, 2).unwrap_or("");
    let id_type = rep_val(rep, 5, 1).unwrap_or("");
    let any = |codes: &[&str], v: &str| codes.iter().any(|c| v.eq_ignore_ascii_case(c));
    if authority.eq_ignore_ascii_case("NHS")
        || authority == NHS_NUMBER_OID
        || oid == NHS_NUMBER_OID
        || any(&["NH", "NHS", "NHSNBR"], id_type)
    {
        NhsMark::Marked
    } else if any(&["NHSNMBR", "NNGBR"], id_type) || authority.eq_ignore_ascii_case("NHSNBR") {
        NhsMark::Likely
    } else {
        NhsMark::None
    }
}

/// Identifier types (CX.5, HL7 table 0203) of accounts and visits, not of the person: never
/// taken as a local id (one person has many; two people's can coincide with an MRN).
const NOT_PERSON_ID_TYPES: &[&str] = &["AN", "ANC", "AND", "ANT", "VN", "FILL", "PLAC"];

/// Identifier types (CX.5) of a patient's record number in the sender's own register: kept
/// under the `mrn` system (as is an identifier with no type).
const RECORD_ID_TYPES: &[&str] = &["MR", "MRT", "PI", "PT", "PN", "LR"];

/// The local id `system` of a CX repetition that is not an NHS number, or `None` when it
/// identifies an account or a visit rather than the person: `urn:ods:<ODS>:<authority>`, the
/// authority (CX.4.1, in lower case) left out when it is the sender's own ODS code, `mrn` when
/// there is none,
/// and a typed identifier's type (CX.5) added so that, say, a passport number and an MRN with
/// the same digits stay two identifiers.
fn local_system(rep: &Repetition, ods: &str) -> Option<String> {
    let id_type = rep_val(rep, 5, 1).unwrap_or("");
    if NOT_PERSON_ID_TYPES
        .iter()
        .any(|t| id_type.eq_ignore_ascii_case(t))
    {
        return None;
    }
    // Lower case, as the type: `PAS` and `pas` from two interfaces of one PAS are one
    // authority, so the same MRN is one local id.
    let authority = rep_val(rep, 4, 1)
        .map(|a| urn_token(a).to_ascii_lowercase())
        .filter(|a| !a.is_empty() && !a.eq_ignore_ascii_case(ods));
    let typed = !id_type.is_empty()
        && !RECORD_ID_TYPES
            .iter()
            .any(|t| id_type.eq_ignore_ascii_case(t));
    Some(match (authority, typed) {
        (Some(a), false) => format!("urn:ods:{ods}:{a}"),
        (None, false) => format!("urn:ods:{ods}:mrn"),
        (Some(a), true) => format!(
            "urn:ods:{ods}:{a}:{}",
            urn_token(id_type).to_ascii_lowercase()
        ),
        (None, true) => format!("urn:ods:{ods}:{}", urn_token(id_type).to_ascii_lowercase()),
    })
}

/// Reads the identifiers of a CX list field (PID-3 or MRG-1).
fn identifiers(seg: &Segment, seq: usize, field: usize, ods: &str) -> Result<Person, ContentError> {
    let name = seg.name();
    let f = u32::try_from(field).unwrap_or(u32::MAX);
    let mut nhs = None;
    let mut local_ids = Vec::new();
    let reps = seg
        .field(field)
        .map(|f| f.repetitions())
        .unwrap_or_default();
    for (i, rep) in reps.iter().enumerate() {
        let Some(id) = rep_val(rep, 1, 1) else {
            continue;
        };
        let mark = nhs_mark(rep);
        if mark == NhsMark::Likely {
            if let Ok(n) = NhsNumber::parse(id) {
                nhs.get_or_insert(n);
                continue;
            }
        }
        if mark == NhsMark::Marked {
            // Spaces and hyphens are ignored; the first NHS repetition wins.
            let n = NhsNumber::parse(id).map_err(|e| {
                let mut l = loc(name, seq, f);
                l.repetition = u32::try_from(i + 1).ok();
                l.component = Some(1);
                ContentError::ae(
                    ErrorCode::DataTypeError,
                    l,
                    format!(
                        "{name}-{field} repetition {} is not a valid NHS number: {e}",
                        i + 1
                    ),
                )
            })?;
            nhs.get_or_insert(n);
        } else if let Some(system) = local_system(rep, ods) {
            local_ids.push(json!({ "system": system, "value": id }));
        }
    }
    Ok(Person { nhs, local_ids })
}

/// The person of a PID segment; an error when it names nobody. The NHS number is taken from
/// PID-3, else from PID-2 (the v2.3 external patient id, where older PAS put it) when marked
/// as one.
fn person(pid: &Segment, seq: usize, ods: &str) -> Result<Person, ContentError> {
    let mut p = identifiers(pid, seq, 3, ods)?;
    if p.nhs.is_none() {
        p.nhs = identifiers(pid, seq, 2, ods)?.nhs;
    }
    if p.nhs.is_none() && p.local_ids.is_empty() {
        return Err(ContentError::ae(
            ErrorCode::RequiredFieldMissing,
            loc("PID", seq, 3),
            "PID-3 holds no patient identifier",
        ));
    }
    Ok(p)
}

/// The `handover.person.identified.v1` data of a PID (plus PD1), when it has local ids.
fn identified_data(
    msg: &Message,
    pid: &Segment,
    person: &Person,
) -> Result<Option<Value>, ContentError> {
    if person.local_ids.is_empty() && person.nhs.is_none() {
        return Ok(None);
    }
    // PID-32 repeats (table 0445 codes beside the NHS status, `AL~01`): the first
    // repetition that is an NHS number verification status.
    let status = pid
        .field(32)
        .map(|f| f.repetitions())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| rep_val(r, 1, 1))
        .map(|s| {
            if s.len() == 1 {
                format!("0{s}")
            } else {
                s.to_owned()
            }
        })
        .find(|s| NHS_NUMBER_STATUSES.contains(&s.as_str()))
        .unwrap_or_else(|| if person.nhs.is_some() { "02" } else { "03" }.to_owned());
    let mut data = Map::new();
    data.insert("nhs_number_status".into(), status.into());
    data.insert("local_ids".into(), person.local_ids.clone().into());
    // PID-5 repeats: the legal name (XPN-7 `L`), which HL7 puts first but not every
    // sender does; else the first repetition with a name in it (not an empty one).
    let names = pid.field(5).map(|f| f.repetitions()).unwrap_or_default();
    let has_name = |r: &&Repetition| rep_val(r, 1, 1).is_some() || rep_val(r, 2, 1).is_some();
    let name = names
        .iter()
        .filter(has_name)
        .find(|r| rep_val(r, 7, 1).is_some_and(|t| t.eq_ignore_ascii_case("L")))
        .or_else(|| names.iter().find(has_name));
    if let Some(v) = name.and_then(|r| rep_val(r, 2, 1)) {
        data.insert("given_name".into(), v.into());
    }
    if let Some(v) = name.and_then(|r| rep_val(r, 1, 1)) {
        data.insert("family_name".into(), v.into());
    }
    if let Some(d) = hl7_date(pid, 1, 7, true)? {
        data.insert("birth_date".into(), d.format("%Y-%m-%d").to_string().into());
    }
    let addresses = pid.field(11).map(|f| f.repetitions()).unwrap_or_default();
    let home = addresses
        .iter()
        .find(|a| rep_val(a, 7, 1).is_some_and(|t| t.eq_ignore_ascii_case("H")))
        .or_else(|| addresses.first());
    if let Some(pc) = home.and_then(|a| rep_val(a, 5, 1)) {
        data.insert(
            "postcode".into(),
            handover_events::normalise_postcode(pc).into(),
        );
    }
    if let Some(gp) = msg.segment("PD1").and_then(gp_practice) {
        data.insert("gp_practice".into(), gp.into());
    }
    if person.local_ids.is_empty() && data.len() == 2 {
        // Only the NHS number: nothing to say beyond the subject.
        return Ok(None);
    }
    Ok(Some(Value::Object(data)))
}

/// PD1-3 (XON): the ID number (component 3, v2.3/2.4) or organisation identifier (component
/// 10, v2.5+); else component 1 when it is shaped like a GP practice code (letter + 5 digits).
fn gp_practice(pd1: &Segment) -> Option<String> {
    let practice_code = |s: &str| {
        s.len() == 6
            && s.as_bytes()[0].is_ascii_alphabetic()
            && s.bytes().skip(1).all(|b| b.is_ascii_digit())
    };
    val(pd1, 3, 3, 1)
        .or_else(|| val(pd1, 3, 10, 1))
        .or_else(|| val(pd1, 3, 1, 1).filter(|s| practice_code(s)))
        .map(|s| s.to_ascii_uppercase())
}

/// What every event of one message shares.
struct Ctx<'a> {
    h: &'a Header,
}

impl Ctx<'_> {
    /// Builds and validates an event. `suffix` is appended to MSH-10 for the message's second
    /// and later events; without an NHS number the first local id goes in `data.local_id`.
    fn event(
        &self,
        suffix: &str,
        ty: EventType,
        person: &Person,
        mut data: Value,
    ) -> Result<Event, ContentError> {
        if let (None, Some(obj)) = (person.nhs, data.as_object_mut()) {
            if ty != EventType::PersonIdentified {
                if let Some(first) = person.local_ids.first() {
                    obj.insert("local_id".into(), first.clone());
                }
            }
        }
        Event::from_parts(
            format!("{}{suffix}", self.h.stem),
            self.h.source.clone(),
            person.nhs,
            self.h.time,
            ty,
            data,
        )
        .map_err(|e| {
            // Pointers only: validation messages can quote values.
            let fields: Vec<String> = e.0.iter().map(|f| f.pointer.clone()).collect();
            ContentError::ae(
                ErrorCode::ApplicationInternalError,
                seg_loc("MSH", 1),
                format!(
                    "the {} event built from this message is invalid at {}",
                    ty.as_str(),
                    fields.join(", ")
                ),
            )
        })
    }
}

fn required_segment<'m>(msg: &'m Message, name: &str) -> Result<&'m Segment, ContentError> {
    msg.segment(name).ok_or_else(|| {
        ContentError::ae(
            ErrorCode::RequiredFieldMissing,
            seg_loc(name, 1),
            format!("the {name} segment is required for this trigger"),
        )
    })
}

fn encounter_id(pv1: &Segment) -> Result<&str, ContentError> {
    val(pv1, 19, 1, 1).ok_or_else(|| {
        ContentError::ae(
            ErrorCode::RequiredFieldMissing,
            loc("PV1", 1, 19),
            "PV1-19 visit number (the encounter id) is required",
        )
    })
}

/// Maps one parsed HL7 message to catalogue events. Pure: no IO, no clock.
///
/// Checks, in order: one message (a second MSH is `AR 100`), message type ADT (else
/// `AR 200`, or `AR 101` when missing), version 2.3 or later 2.x (else `AR 203`, or
/// `AR 101` when missing), processing id accepted (else `AR 202`, or `AR 101` when missing),
/// sending facility accepted (else `AR 204`), then the trigger: one of
/// [`SUPPORTED_TRIGGERS`] is mapped (content errors give `AE`), any other is
/// [`Translation::Ignored`].
pub fn translate(msg: &Message, cfg: &Hl7Config) -> Result<Translation, ContentError> {
    let (ods, trigger) = route(msg, cfg)?;
    if !SUPPORTED_TRIGGERS.contains(&trigger.as_str()) {
        return Ok(Translation::Ignored { trigger });
    }
    let h = header(msg, cfg, ods, trigger)?;
    let stay_trigger = !matches!(
        h.trigger.as_str(),
        "A08" | "A28" | "A31" | "A34" | "A36" | "A40" | "A47"
    );
    let class = msg
        .segment("PV1")
        .and_then(|pv1| val(pv1, 2, 1, 1))
        .unwrap_or("");
    let a_stay = !NOT_STAY_CLASSES
        .iter()
        .any(|c| c.eq_ignore_ascii_case(class));
    if stay_trigger && !a_stay {
        return Ok(Translation::Ignored { trigger: h.trigger });
    }
    let ctx = Ctx { h: &h };
    let mut events = match h.trigger.as_str() {
        "A01" | "A06" => admitted(msg, cfg, &ctx)?,
        "A02" | "A12" => transferred(msg, &ctx)?,
        "A03" => discharged(msg, cfg, &ctx)?,
        "A08" => updated(msg, &ctx, a_stay)?,
        // Add and update person (no visit): what PID says of the person, as an A08 does.
        // A trace that finds the NHS number of someone admitted under their MRN comes so.
        "A28" | "A31" => updated(msg, &ctx, false)?,
        "A11" => encounter_only(msg, &ctx, EventType::AdmissionCancelled)?,
        "A13" => encounter_only(msg, &ctx, EventType::DischargeCancelled)?,
        "A34" | "A36" | "A40" | "A47" => merged(msg, &ctx)?,
        _ => Vec::new(),
    };
    if matches!(h.trigger.as_str(), "A01" | "A02" | "A06" | "A12") {
        // The stay's event came first, so the date lands on a stay the journey knows.
        if let Some(event) = stay_expected_date(msg, &ctx)? {
            events.push(event);
        }
    }
    if events.is_empty() {
        Ok(Translation::Ignored { trigger: h.trigger })
    } else {
        Ok(Translation::Events(events))
    }
}

fn pid_person<'m>(msg: &'m Message, ods: &str) -> Result<(&'m Segment, Person), ContentError> {
    let pid = required_segment(msg, "PID")?;
    Ok((pid, person(pid, 1, ods)?))
}

/// A01, and A06 (an outpatient or emergency attendance becoming an inpatient stay):
/// person.identified (when PID has local ids or demographics) then discharge.admitted.
fn admitted(msg: &Message, cfg: &Hl7Config, ctx: &Ctx) -> Result<Vec<Event>, ContentError> {
    let (pid, person) = pid_person(msg, &ctx.h.ods)?;
    let pv1 = required_segment(msg, "PV1")?;
    let encounter = encounter_id(pv1)?;
    let admitted_at = hl7_time(pv1, 1, 44)?.unwrap_or(ctx.h.time);
    let site = site(pv1, cfg, ctx);
    let mut data = json!({
        "encounter_id": encounter,
        "site": site,
        "admitted_at": admitted_at.to_rfc3339(),
    });
    if let Some(obj) = data.as_object_mut() {
        if let Some(ward) = val(pv1, 3, 1, 1) {
            obj.insert("ward".into(), ward.into());
        }
        if let Some(t) = val(pv1, 4, 1, 1) {
            obj.insert("admission_method".into(), admission_method(t).into());
        }
        if let Some(c) = cfg.responsible_council.as_deref().and_then(clean) {
            obj.insert("responsible_council".into(), c.into());
        }
    }
    let mut events = Vec::with_capacity(2);
    if let Some(d) = identified_data(msg, pid, &person)? {
        events.push(ctx.event(":person", EventType::PersonIdentified, &person, d)?);
    }
    events.push(ctx.event("", EventType::Admitted, &person, data)?);
    Ok(events)
}

/// The ODS site of the stay: PV1-3.4 (facility) or PV1-39 (servicing facility) through
/// `hl7.sites`, else as given; the sending organisation without either.
fn site(pv1: &Segment, cfg: &Hl7Config, ctx: &Ctx) -> String {
    match val(pv1, 3, 4, 1).or_else(|| val(pv1, 39, 1, 1)) {
        Some(k) => cfg
            .sites
            .iter()
            .find(|(s, _)| s.trim().eq_ignore_ascii_case(k))
            .map_or_else(|| k.to_owned(), |(_, v)| v.clone()),
        None => ctx.h.ods.clone(),
    }
}

/// A02: discharge.transferred. A12 (cancel transfer) is a transfer back: its PV1-3 is where
/// the patient was before the cancelled transfer (HL7 v2 chapter 3), PV1-6 where they leave.
fn transferred(msg: &Message, ctx: &Ctx) -> Result<Vec<Event>, ContentError> {
    let (_, person) = pid_person(msg, &ctx.h.ods)?;
    let pv1 = required_segment(msg, "PV1")?;
    let encounter = encounter_id(pv1)?;
    let ward = val(pv1, 3, 1, 1).ok_or_else(|| {
        ContentError::ae(
            ErrorCode::RequiredFieldMissing,
            loc("PV1", 1, 3),
            "PV1-3.1 ward (the new point of care) is required for a transfer",
        )
    })?;
    let mut data = json!({ "encounter_id": encounter, "ward": ward });
    if let Some(obj) = data.as_object_mut() {
        if let Some(prev) = val(pv1, 6, 1, 1) {
            obj.insert("previous_ward".into(), prev.into());
        }
        if ctx.h.time_from_evn {
            obj.insert("at".into(), ctx.h.time.to_rfc3339().into());
        }
    }
    Ok(vec![ctx.event(
        "",
        EventType::Transferred,
        &person,
        data,
    )?])
}

/// A03: discharge.discharged, with the stay's admission time (PV1-44), site and ward, which
/// fill in a stay admitted before Handover saw its A01.
fn discharged(msg: &Message, cfg: &Hl7Config, ctx: &Ctx) -> Result<Vec<Event>, ContentError> {
    let (_, person) = pid_person(msg, &ctx.h.ods)?;
    let pv1 = required_segment(msg, "PV1")?;
    let encounter = encounter_id(pv1)?;
    let given = hl7_time(pv1, 1, 45)?;
    let at = given.unwrap_or(ctx.h.time);
    if let (Some(out), Some(admitted)) = (given, hl7_time(pv1, 1, 44)?) {
        // Compared by calendar day: a PV1-45 given as a date alone is that day's midnight,
        // which is not before an admission earlier that day.
        if out.london_date() < admitted.london_date() {
            return Err(ContentError::ae(
                ErrorCode::DataTypeError,
                loc("PV1", 1, 45),
                "PV1-45 (discharge date/time) is before PV1-44 (admit date/time): the stay would end before it began",
            ));
        }
    }
    let mut data = json!({ "encounter_id": encounter, "discharged_at": at.to_rfc3339() });
    if let Some(obj) = data.as_object_mut() {
        // 6 (discharged themselves) and 7 (by a relative or advocate) split the NHS Data
        // Dictionary's 2 (the Mental Health Services Data Set, UK Core's England codes).
        if let Some(m) = val(pv1, 36, 1, 1)
            .and_then(|m| m.parse::<u8>().ok())
            .map(|m| if matches!(m, 6 | 7) { 2 } else { m })
            .filter(|m| (1..=5).contains(m))
        {
            obj.insert("method".into(), m.into());
        }
        if let Some(d) = val(pv1, 37, 1, 1).and_then(discharge_destination) {
            obj.insert("destination".into(), d.into());
        }
        if let Some(t) = hl7_time(pv1, 1, 44)? {
            obj.insert("admitted_at".into(), t.to_rfc3339().into());
        }
        obj.insert("site".into(), site(pv1, cfg, ctx).into());
        if let Some(ward) = val(pv1, 3, 1, 1) {
            obj.insert("ward".into(), ward.into());
        }
    }
    Ok(vec![ctx.event("", EventType::Discharged, &person, data)?])
}

/// A08: expected-date-set when PV2-9 is present and the visit is a stay (`a_stay`: its
/// PV1-2 class is not one of [`NOT_STAY_CLASSES`]), person.identified when PID has local ids
/// or demographics; nothing else (ward moves come as A02, discharges as A03). The planned
/// dates of a pre-admission or an outpatient visit are not a stay's: the journey would show
/// an in-hospital stay for someone never admitted.
fn updated(msg: &Message, ctx: &Ctx, a_stay: bool) -> Result<Vec<Event>, ContentError> {
    let (pid, person) = pid_person(msg, &ctx.h.ods)?;
    let mut events = Vec::new();
    if let Some(d) = identified_data(msg, pid, &person)? {
        events.push(ctx.event(":person", EventType::PersonIdentified, &person, d)?);
    }
    if let (Some(pv2), true) = (msg.segment("PV2"), a_stay) {
        if let Some(date) = hl7_date(pv2, 1, 9, false)? {
            let pv1 = required_segment(msg, "PV1")?;
            events.push(expected_date_set(ctx, "", &person, pv1, date)?);
        }
    }
    Ok(events)
}

/// A01, A02, A06 and A12: expected-date-set (`<stem>:expected-date`) when PV2-9 holds a full
/// date; many PAS set the expected discharge date at admission or on a move. The stay's own
/// event is what the message is for, so a PV2-9 that is not a full date is left out rather
/// than refusing it (an A08 refuses it: the date is all it is sent for).
fn stay_expected_date(msg: &Message, ctx: &Ctx) -> Result<Option<Event>, ContentError> {
    let (Some(pv2), Some(pv1)) = (msg.segment("PV2"), msg.segment("PV1")) else {
        return Ok(None);
    };
    let Ok(Some(date)) = hl7_date(pv2, 1, 9, true) else {
        return Ok(None);
    };
    let (_, person) = pid_person(msg, &ctx.h.ods)?;
    expected_date_set(ctx, ":expected-date", &person, pv1, date).map(Some)
}

/// The `discharge.expected-date-set` event of the visit in `pv1`.
fn expected_date_set(
    ctx: &Ctx,
    suffix: &str,
    person: &Person,
    pv1: &Segment,
    date: NaiveDate,
) -> Result<Event, ContentError> {
    let data = json!({
        "encounter_id": encounter_id(pv1)?,
        "expected_discharge_date": date.format("%Y-%m-%d").to_string(),
    });
    ctx.event(suffix, EventType::ExpectedDateSet, person, data)
}

/// A11 and A13: an event naming the encounter only.
fn encounter_only(msg: &Message, ctx: &Ctx, ty: EventType) -> Result<Vec<Event>, ContentError> {
    let (_, person) = pid_person(msg, &ctx.h.ods)?;
    let pv1 = required_segment(msg, "PV1")?;
    let data = json!({ "encounter_id": encounter_id(pv1)? });
    Ok(vec![ctx.event("", ty, &person, data)?])
}

/// A40, A34, A36 and A47 (merges, and a change of identifier list): for each PID/MRG pair, nhs-number-changed when both carry an NHS number and they
/// differ. A merge of local records only has no catalogue event and is ignored.
fn merged(msg: &Message, ctx: &Ctx) -> Result<Vec<Event>, ContentError> {
    let pids: Vec<&Segment> = msg.segments("PID").collect();
    let mrgs: Vec<&Segment> = msg.segments("MRG").collect();
    if pids.is_empty() {
        required_segment(msg, "PID")?;
    }
    let mut events = Vec::new();
    for (i, pid) in pids.iter().enumerate() {
        let seq = i + 1;
        let person = person(pid, seq, &ctx.h.ods)?;
        let mrg = mrgs.get(i).ok_or_else(|| {
            ContentError::ae(
                ErrorCode::RequiredFieldMissing,
                seg_loc("MRG", seq),
                "each PID of a merge needs its MRG segment",
            )
        })?;
        let mut prior = identifiers(mrg, seq, 1, &ctx.h.ods)?;
        if prior.nhs.is_none() {
            // MRG-4, the prior (external) patient id: where v2.3 senders put the prior NHS
            // number, as PID-2 holds the current one.
            prior.nhs = identifiers(mrg, seq, 4, &ctx.h.ods)?.nhs;
        }
        let (Some(new), Some(old)) = (person.nhs, prior.nhs) else {
            continue;
        };
        if new == old {
            continue;
        }
        let suffix = if seq == 1 {
            String::new()
        } else {
            format!(":{seq}")
        };
        let data = json!({ "previous_nhs_number": old.as_string() });
        events.push(ctx.event(&suffix, EventType::NhsNumberChanged, &person, data)?);
    }
    Ok(events)
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Most distinct trigger labels kept for the ignored counter; the rest count as `other`.
const MAX_TRIGGER_LABELS: usize = 64;

/// Counters of the HL7 listener, rendered as Prometheus text. No label carries an identifier.
#[derive(Debug, Default)]
pub struct Hl7Metrics {
    messages_received: AtomicU64,
    acks_aa: AtomicU64,
    acks_ae: AtomicU64,
    acks_ar: AtomicU64,
    events_published: AtomicU64,
    duplicates: AtomicU64,
    publish_failures: AtomicU64,
    unparseable: AtomicU64,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    ignored: Mutex<BTreeMap<String, u64>>,
}

/// A point-in-time copy of [`Hl7Metrics`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hl7MetricsSnapshot {
    /// Frames received (including unparseable and oversized ones).
    pub messages_received: u64,
    /// ACKs sent with `AA`.
    pub acks_aa: u64,
    /// ACKs sent with `AE`.
    pub acks_ae: u64,
    /// ACKs sent with `AR`.
    pub acks_ar: u64,
    /// Events stored by the sink (duplicates included).
    pub events_published: u64,
    /// Events the sink recognised as already stored (resent messages).
    pub duplicates: u64,
    /// Calls to the sink that failed (the message got `AR` or `AE`).
    pub publish_failures: u64,
    /// Frames that were oversized or could not be parsed as one HL7 message (batches
    /// included).
    pub unparseable: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Messages ignored (acknowledged `AA`, no events), by trigger.
    pub ignored: BTreeMap<String, u64>,
}

impl Hl7Metrics {
    /// The current values.
    pub fn snapshot(&self) -> Hl7MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Hl7MetricsSnapshot {
            messages_received: get(&self.messages_received),
            acks_aa: get(&self.acks_aa),
            acks_ae: get(&self.acks_ae),
            acks_ar: get(&self.acks_ar),
            events_published: get(&self.events_published),
            duplicates: get(&self.duplicates),
            publish_failures: get(&self.publish_failures),
            unparseable: get(&self.unparseable),
            connections_open: get(&self.connections_open),
            connections_total: get(&self.connections_total),
            ignored: self
                .ignored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn acked(&self, code: AckCode) {
        Self::inc(match code {
            AckCode::Aa => &self.acks_aa,
            AckCode::Ae => &self.acks_ae,
            AckCode::Ar => &self.acks_ar,
        });
    }

    fn ignored(&self, trigger: &str) {
        let label = if trigger.len() == 3 && trigger.bytes().all(|b| b.is_ascii_alphanumeric()) {
            trigger
        } else {
            "other"
        };
        let mut map = self.ignored.lock().unwrap_or_else(|e| e.into_inner());
        let label = if map.contains_key(label) || map.len() < MAX_TRIGGER_LABELS {
            label
        } else {
            "other"
        };
        *map.entry(label.to_owned()).or_insert(0) += 1;
    }

    /// The counters in the Prometheus text exposition format, names prefixed `handover_hl7_`.
    pub fn render_prometheus(&self) -> String {
        let s = self.snapshot();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
            out.push_str(&format!(
                "# HELP handover_hl7_{name} {help}\n# TYPE handover_hl7_{name} {kind}\n"
            ));
            for (labels, v) in rows {
                out.push_str(&format!("handover_hl7_{name}{labels} {v}\n"));
            }
        };
        let one = |v: u64| vec![(String::new(), v)];
        metric(
            "messages_received_total",
            "counter",
            "HL7 frames received.",
            &one(s.messages_received),
        );
        metric(
            "acks_total",
            "counter",
            "ACKs sent, by MSA-1 code.",
            &[
                ("{code=\"AA\"}".to_owned(), s.acks_aa),
                ("{code=\"AE\"}".to_owned(), s.acks_ae),
                ("{code=\"AR\"}".to_owned(), s.acks_ar),
            ],
        );
        let ignored: Vec<(String, u64)> = s
            .ignored
            .iter()
            .map(|(t, v)| (format!("{{trigger=\"{t}\"}}"), *v))
            .collect();
        metric(
            "ignored_total",
            "counter",
            "ADT messages acknowledged without events, by trigger.",
            &ignored,
        );
        metric(
            "events_published_total",
            "counter",
            "Events stored by the event log.",
            &one(s.events_published),
        );
        metric(
            "duplicates_total",
            "counter",
            "Events recognised as already stored (resent messages).",
            &one(s.duplicates),
        );
        metric(
            "publish_failures_total",
            "counter",
            "Failed hand-overs to the event log.",
            &one(s.publish_failures),
        );
        metric(
            "unparseable_total",
            "counter",
            "Frames oversized or not parseable as HL7.",
            &one(s.unparseable),
        );
        metric(
            "connections_open",
            "gauge",
            "MLLP connections open.",
            &one(s.connections_open),
        );
        metric(
            "connections_total",
            "counter",
            "MLLP connections accepted.",
            &one(s.connections_total),
        );
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------------------------

/// Shared by every connection of one [`run`].
struct Shared {
    cfg: Arc<Hl7Config>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<Hl7Metrics>,
    ack_prefix: String,
    ack_seq: AtomicU64,
}

impl Shared {
    /// A fresh MSH-10 for an ACK: a per-run prefix and a counter (at most 20 characters).
    fn ack_control_id(&self) -> String {
        let n = self.ack_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.ack_prefix)
    }
}

/// Now as an HL7 DTM in UTC with an explicit offset. The text changes once a second, so
/// each thread formats it once a second and copies it otherwise (formatting was 4% of an
/// MLLP connection's CPU, docs/performance.md).
fn hl7_now() -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = chrono::Utc::now();
    let secs = now.timestamp();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            *last = (secs, now.format("%Y%m%d%H%M%S+0000").to_string());
        }
        last.1.clone()
    })
}

/// Serves MLLP on `listener` until `shutdown` resolves.
///
/// Each connection is a task handling its messages one at a time, in order: frame → parse →
/// [`translate`] → [`EventSink::publish`] → ACK. `AA` is written only after `publish`
/// returned `Ok`. On shutdown the listener stops accepting, each connection finishes the
/// message it is working on (publish and ACK) and closes; messages not yet started get no ACK
/// and are resent by the sender. Returns once every connection has closed.
pub async fn run(
    listener: TcpListener,
    cfg: Arc<Hl7Config>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<Hl7Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let shared = Arc::new(Shared {
        cfg,
        sink,
        metrics,
        ack_prefix: format!("HO{started:x}-"),
        ack_seq: AtomicU64::new(1),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let local = listener.local_addr().ok();
    info!(listen = ?local, "hl7 listener started");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::info_span!("hl7_connection", %peer);
                    connections.spawn(
                        connection(stream, Arc::clone(&shared), stop_rx.clone()).instrument(span),
                    );
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    warn!(%error, "hl7 accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    info!(
        open = connections.len(),
        "hl7 listener stopping: finishing in-flight messages"
    );
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    info!("hl7 listener stopped");
    Ok(())
}

/// Decrements the open-connections gauge when a connection ends, however it ends.
struct OpenGuard(Arc<Hl7Metrics>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    Hl7Metrics::inc(&shared.metrics.connections_total);
    Hl7Metrics::inc(&shared.metrics.connections_open);
    let _guard = OpenGuard(Arc::clone(&shared.metrics));
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = MllpDecoder::new(shared.cfg.max_message_bytes);
    let idle = Duration::from_secs(shared.cfg.idle_timeout_secs.max(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut reported_discarded = 0;
    let mut reported_restarts = 0;
    // One idle timer for the connection, moved forward before each read: a new timer per
    // read (`tokio::time::timeout`) registered and cancelled a timer-wheel entry for every
    // message; moving a registered deadline later does not.
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    debug!("hl7 connection opened");
    'conn: loop {
        while let Some(frame) = decoder.next_frame() {
            let reply = handle_frame(frame, &shared).await;
            let framed = encode(reply.as_bytes());
            match tokio::time::timeout(idle, wr.write_all(&framed)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    info!(%error, "hl7 connection lost while sending an ACK");
                    break 'conn;
                }
                Err(_) => {
                    info!("hl7 sender is not reading its ACKs: closing");
                    break 'conn;
                }
            }
            if *stop.borrow() {
                break 'conn;
            }
        }
        if decoder.restarted_frames() > reported_restarts {
            // Counts only: the bytes given up may hold anything.
            warn!(
                restarts = decoder.restarted_frames() - reported_restarts,
                "hl7 MLLP start byte inside a frame: the sender restarted it, the partial \
                 frame before it was discarded"
            );
            reported_restarts = decoder.restarted_frames();
        }
        if decoder.discarded_bytes() > reported_discarded {
            debug!(
                bytes = decoder.discarded_bytes() - reported_discarded,
                "hl7 bytes outside MLLP frames skipped"
            );
            reported_discarded = decoder.discarded_bytes();
        }
        if *stop.borrow() {
            break;
        }
        idle_timer
            .as_mut()
            .reset(tokio::time::Instant::now() + idle);
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) => break,
                Ok(n) => decoder.push(&buf[..n]),
                Err(error) => {
                    info!(%error, "hl7 connection read failed");
                    break;
                }
            },
            () = &mut idle_timer => {
                info!(idle_secs = idle.as_secs(), "hl7 connection idle: closing");
                break;
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    if decoder.has_partial_frame() {
        debug!("hl7 connection closed inside a frame; the sender will resend it");
    }
    let _ = wr.shutdown().await;
    debug!("hl7 connection closed");
}

/// `bytes` from the first segment that is an MSH (at the start or after a segment
/// terminator), if any.
fn first_msh(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.starts_with(b"MSH") {
        return Some(bytes);
    }
    bytes
        .windows(4)
        .position(|w| matches!(w[0], b'\r' | b'\n') && &w[1..] == b"MSH")
        .map(|i| &bytes[i + 1..])
}

/// A short, identifier-free name for a parse error, for logs.
fn parse_error_kind(e: &ParseError) -> &'static str {
    match e {
        ParseError::Empty => "empty",
        ParseError::MissingMsh => "missing_msh",
        ParseError::InvalidFieldSeparator { .. } => "invalid_field_separator",
        ParseError::InvalidEncodingCharacters { .. } => "invalid_encoding_characters",
        ParseError::InvalidSegmentName { .. } => "invalid_segment_name",
        ParseError::Batch { .. } => "batch",
    }
}

/// One frame in, one ACK out, in a span of its own that starts a trace (a connection
/// carries many unrelated messages): `hl7.message` with the message control id, trigger
/// and ACK code, never an identifier of a person. The event log's publish spans are its
/// children.
async fn handle_frame(frame: Result<Vec<u8>, FrameError>, shared: &Shared) -> String {
    let span = tracing::info_span!(
        parent: None,
        "hl7.message",
        otel.name = "hl7 message",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        network.protocol.name = "mllp",
        hl7.message.control_id = tracing::field::Empty,
        hl7.message.trigger = tracing::field::Empty,
        hl7.ack.code = tracing::field::Empty,
    );
    let reply = handle_frame_traced(frame, shared)
        .instrument(span.clone())
        .await;
    // MSA-1 follows `MSA` and the field separator.
    if let Some(code) = reply
        .split('\r')
        .find_map(|seg| seg.strip_prefix("MSA"))
        .and_then(|rest| rest.get(1..3))
    {
        span.record("hl7.ack.code", code);
        if code != "AA" {
            span.record("otel.status_code", "ERROR");
        }
    }
    reply
}

async fn handle_frame_traced(frame: Result<Vec<u8>, FrameError>, shared: &Shared) -> String {
    let metrics = &shared.metrics;
    Hl7Metrics::inc(&metrics.messages_received);
    let now = hl7_now();
    let ack_id = shared.ack_control_id();
    let bytes = match frame {
        Ok(bytes) => bytes,
        Err(e) => {
            Hl7Metrics::inc(&metrics.unparseable);
            metrics.acked(AckCode::Ar);
            let (text, head) = match e {
                FrameError::TooLarge { limit, head } => {
                    (format!("message exceeds {limit} bytes"), head)
                }
                FrameError::Truncated { .. } => ("message truncated".to_owned(), Vec::new()),
            };
            warn!(ack = "AR", error = %text, "hl7 frame rejected");
            // Answered as the oversized message's own MSH (its control id in MSA-2), so the
            // sender's engine can tell which message was refused.
            return ack_unparseable(AckCode::Ar, &text, &now, &ack_id, &head);
        }
    };
    let msg = match Message::parse(&bytes) {
        Ok(m) => m,
        Err(ParseError::Batch { header }) => {
            Hl7Metrics::inc(&metrics.unparseable);
            metrics.acked(AckCode::Ar);
            warn!(ack = "AR", error = "batch", "hl7 batch refused");
            let error = AckError {
                code: ErrorCode::SegmentSequenceError,
                location: Some(seg_loc(header, 1)),
                message: format!(
                    "batches ({header} … BTS/FTS) are not supported over MLLP: nothing in \
                     this frame was stored; send one message per frame"
                ),
            };
            // Answered as the batch's first message, so the sender can tell which it was.
            return ack_salvaged(
                AckCode::Ar,
                &error,
                &now,
                &ack_id,
                first_msh(&bytes).unwrap_or_default(),
            );
        }
        Err(e) => {
            Hl7Metrics::inc(&metrics.unparseable);
            metrics.acked(AckCode::Ar);
            warn!(
                ack = "AR",
                error = parse_error_kind(&e),
                "hl7 message not parseable"
            );
            return ack_unparseable(
                AckCode::Ar,
                &format!("message could not be parsed: {e}"),
                &now,
                &ack_id,
                &bytes,
            );
        }
    };
    let control_id: String = msg.control_id().unwrap_or("").chars().take(64).collect();
    let trigger: String = msg.trigger_event().unwrap_or("").chars().take(8).collect();
    let span = tracing::Span::current();
    span.record("hl7.message.control_id", control_id.as_str());
    span.record("hl7.message.trigger", trigger.as_str());
    let reply = |code: AckCode, error: Option<&AckError>| {
        metrics.acked(code);
        ack(&msg, code, error, &now, &ack_id)
    };
    match translate(&msg, &shared.cfg) {
        Ok(Translation::Ignored { trigger }) => {
            metrics.ignored(&trigger);
            debug!(%control_id, %trigger, ack = "AA", "hl7 message ignored");
            reply(AckCode::Aa, None)
        }
        Err(e) => {
            info!(
                %control_id, %trigger, ack = e.ack.as_str(), code = e.code.code(),
                segment = %e.location.segment, field = e.location.field,
                "hl7 message not accepted"
            );
            reply(e.ack, Some(&e.to_ack_error()))
        }
        Ok(Translation::Events(events)) => match shared.sink.publish(&events).await {
            Ok(stored) => {
                let dups = stored.iter().filter(|s| s.duplicate).count() as u64;
                metrics
                    .events_published
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
                metrics.duplicates.fetch_add(dups, Ordering::Relaxed);
                debug!(%control_id, %trigger, ack = "AA", events = stored.len(), duplicates = dups, "hl7 message stored");
                reply(AckCode::Aa, None)
            }
            Err(error) => {
                Hl7Metrics::inc(&metrics.publish_failures);
                let (code, text) = match &error {
                    SinkError::Unavailable(_) => (
                        AckCode::Ar,
                        "event log unavailable: nothing was stored, resend later",
                    ),
                    SinkError::Refused(_) => (AckCode::Ae, "event log refused the events"),
                };
                warn!(%control_id, %trigger, ack = code.as_str(), %error, "hl7 message not stored");
                let e = AckError {
                    code: ErrorCode::ApplicationInternalError,
                    location: None,
                    message: text.to_owned(),
                };
                reply(code, Some(&e))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The TOML block of this module's `//!` doc.
    fn doc_example() -> String {
        let doc: Vec<&str> = include_str!("hl7.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect();
        let start = doc.iter().position(|l| *l == "```toml").unwrap() + 1;
        let len = doc[start..].iter().position(|l| *l == "```").unwrap();
        doc[start..start + len].join("\n")
    }

    #[test]
    fn the_documented_config_example_parses() {
        #[derive(Deserialize)]
        struct File {
            hl7: Hl7Config,
        }
        let cfg = toml::from_str::<File>(&doc_example()).unwrap().hl7;
        assert_eq!(cfg.listen, "0.0.0.0:2575".parse().unwrap());
        assert_eq!(cfg.facilities["LEEDS PAS"], "RR8");
        assert_eq!(cfg.sites["SJUH"], "RR813");
        assert_eq!(cfg.responsible_council.as_deref(), Some("E08000035"));
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let cfg: Hl7Config = toml::from_str("").unwrap();
        assert_eq!(cfg, Hl7Config::default());
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:2575");
        assert_eq!(cfg.max_message_bytes, 1 << 20);
        assert_eq!(cfg.idle_timeout_secs, 600);
        let err = toml::from_str::<Hl7Config>("listen = \"127.0.0.1:1\"\nport = 3").unwrap_err();
        assert!(err.to_string().contains("unknown field `port`"), "{err}");
    }

    #[test]
    fn the_ack_time_is_now_to_the_second() {
        for _ in 0..3 {
            let before = chrono::Utc::now().timestamp();
            let text = hl7_now();
            let after = chrono::Utc::now().timestamp();
            let t = chrono::NaiveDateTime::parse_from_str(&text, "%Y%m%d%H%M%S+0000")
                .unwrap()
                .and_utc()
                .timestamp();
            assert!((before..=after).contains(&t), "{text} is not now");
            std::thread::sleep(Duration::from_millis(600));
        }
    }

    #[test]
    fn versions() {
        for v in [
            "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7.1", "2.8.2", "2.9",
        ] {
            assert!(version_supported(v), "{v}");
        }
        for v in ["2.2", "2.1", "2", "3.0", "", "x", "2.x", "2.5.x"] {
            assert!(!version_supported(v), "{v}");
        }
    }

    #[test]
    fn code_tables() {
        assert_eq!(admission_method("em"), "emergency");
        assert_eq!(admission_method("2A"), "emergency");
        assert_eq!(admission_method("EL"), "elective");
        assert_eq!(admission_method("N"), "maternity");
        assert_eq!(admission_method("81"), "transfer");
        assert_eq!(admission_method("ZZ"), "other");
        assert_eq!(discharge_destination("19"), Some("usual-residence"));
        assert_eq!(discharge_destination("85"), Some("care-home"));
        assert_eq!(discharge_destination("55"), Some("care-home"));
        assert_eq!(discharge_destination("56"), Some("care-home"));
        assert_eq!(discharge_destination("42"), Some("other"));
        assert_eq!(discharge_destination("51"), Some("other"));
        assert_eq!(discharge_destination("LOCAL"), Some("other"));
        assert_eq!(discharge_destination("99"), None);
        assert_eq!(discharge_destination("98"), None);
    }

    /// The `| `code` | value |` rows of the `docs/adapters.md` section under `heading`.
    fn doc_table(heading: &str) -> Vec<(String, String)> {
        let doc = include_str!("../../../docs/adapters.md");
        let start = doc.find(heading).unwrap();
        let section = &doc[start + heading.len()..];
        let section = &section[..section.find("\n### ").unwrap_or(section.len())];
        section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                match cells.as_slice() {
                    ["", code, value, ""] if code.starts_with('`') => {
                        Some((code.trim_matches('`').to_owned(), (*value).to_owned()))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    #[test]
    fn docs_tables_match_the_code() {
        let owned = |t: &[(&str, &str)]| -> Vec<(String, String)> {
            t.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            doc_table("### PV1-4 admission type → `admission_method`"),
            owned(ADMISSION_METHODS)
        );
        assert_eq!(
            doc_table("### PV1-37 discharged-to location → `destination`"),
            owned(DISCHARGE_DESTINATIONS)
        );
        let doc = include_str!("../../../docs/adapters.md");
        let defaults = serde_json::to_value(Hl7Config::default()).unwrap();
        for key in defaults.as_object().unwrap().keys() {
            assert!(
                doc.contains(&format!("| `{key}` |")),
                "{key} missing from docs/adapters.md"
            );
        }
        for name in [
            "messages_received_total",
            "acks_total",
            "ignored_total",
            "events_published_total",
            "duplicates_total",
            "publish_failures_total",
            "unparseable_total",
            "connections_open",
            "connections_total",
        ] {
            assert!(Hl7Metrics::default()
                .render_prometheus()
                .contains(&format!("handover_hl7_{name}")));
            assert!(doc.contains(&format!("`handover_hl7_{name}`")), "{name}");
        }
    }

    #[test]
    fn prometheus_rendering_has_no_identifiers_and_bounded_labels() {
        let m = Hl7Metrics::default();
        m.acked(AckCode::Aa);
        m.ignored("A28");
        m.ignored("9434765919");
        for i in 0..100 {
            m.ignored(&format!("Z{i:02}"));
        }
        let text = m.render_prometheus();
        assert!(
            text.contains("handover_hl7_acks_total{code=\"AA\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("handover_hl7_ignored_total{trigger=\"A28\"} 1\n"));
        assert!(!text.contains("9434765919"));
        assert!(m.snapshot().ignored.len() <= MAX_TRIGGER_LABELS + 1);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("handover_hl7_"), "{line}");
        }
    }
}
