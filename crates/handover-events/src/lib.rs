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
