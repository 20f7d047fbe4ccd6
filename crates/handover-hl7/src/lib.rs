//! HL7 v2 parsing and MLLP framing (pure; no IO).
//!
//! * [`mllp`]: MLLP framing — [`MllpDecoder`] (streaming, push-style) and
//!   [`mllp::encode`].
//! * [`message`]: the [`Message`] model and parser (custom delimiters, any
//!   segment terminator, UTF-8 with ISO-8859-1 fallback), plus [`Path`]
//!   accessors such as `msg.get("PID-3[2].4")`.
//! * [`mod@escape`]: [`Separators`], [`escape()`] and [`unescape`].
//! * [`timestamp`]: HL7 DTM/TS parsing into a plain [`Timestamp`] struct.
//! * [`mod@ack`]: building `ACK` replies ([`ack()`], [`ack_unparseable`],
//!   [`ack_salvaged`]).
//!
//! ```
//! use handover_hl7::Message;
//!
//! let msg = Message::parse(
//!     b"MSH|^~\\&|PAS|RX1|HANDOVER|LA|20240301101500||ADT^A01^ADT_A01|MSG0001|P|2.4\r\
//!       PID|1||9434765919^^^NHS^NH~RX1-123456^^^RX1^MR||SMITH^JANE\r",
//! )?;
//! assert_eq!(msg.trigger_event(), Some("A01"));
//! assert_eq!(msg.get("PID-3[2].1"), Some("RX1-123456"));
//! # Ok::<(), handover_hl7::ParseError>(())
//! ```
//!
//! # Tests
//!
//! `cargo test -p handover-hl7` runs unit, snapshot, fixture and property
//! tests in a few seconds (proptest's default of 256 cases per property).
//! For a longer fuzzing run:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test -p handover-hl7
//! ```
//!
//! In a debug build that takes tens of minutes; with `--release` about a
//! minute (the properties are CPU-bound and unoptimised code is ~30x slower).
//!
//! Fixture messages live in `tests/fixtures/hl7/` at the workspace root.

pub mod ack;
pub mod escape;
pub mod message;
pub mod mllp;
pub mod timestamp;

pub use ack::{
    ack, ack_salvaged, ack_unparseable, salvage_control_id, AckCode, AckError, ErrorCode,
    ErrorLocation,
};
pub use escape::{escape, escape_into, unescape, Separators};
pub use message::{
    utf8_or_windows_1252, windows_1252, Component, Field, Message, ParseError, Path, PathError,
    Repetition, Segment, Text, TextEncoding,
};
pub use mllp::{FrameError, MllpDecoder};
pub use timestamp::{Precision, Timestamp, TimestampError};
