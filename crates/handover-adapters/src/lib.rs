//! Adapters: the network listeners that turn what hospital and council systems send into
//! Handover events.
//!
//! An adapter is **one file plus one line in [`ADAPTERS`]** (see `docs/adapters.md` for the
//! step-by-step guide, with [`hl7`] as the worked example). Each adapter file holds:
//!
//! - a `//!` doc with a TOML configuration example;
//! - its configuration struct (`Deserialize + Default + Clone`, unknown keys rejected, a `///`
//!   on every field), read from its own section of `handover.toml`;
//! - a pure `translate` function from one source message to catalogue events (or a protocol
//!   error to report back), which is where the mapping decisions live and what the snapshot
//!   tests exercise;
//! - the async `run` loop that owns the listener, hands events to an
//!   [`EventSink`](handover_events::EventSink) and acknowledges its sender **only after**
//!   `publish` has returned (that is, after the JetStream acknowledgement).
//!
//! Invariant: adapters never see NATS. This crate does not depend on `async-nats`; the binary
//! gives each adapter an `Arc<dyn EventSink>`.

pub mod conformance;
pub mod fhir;
pub mod filedrop;
pub mod hl7;

/// What the registry knows about one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapter {
    /// Short name, used in logs and metrics (`handover_<name>_...`).
    pub name: &'static str,
    /// The `handover.toml` section holding its configuration, e.g. `hl7` for `[hl7]`.
    pub config_section: &'static str,
    /// One line: what it listens for.
    pub summary: &'static str,
}

/// The registry: every adapter Handover ships, in the order they are documented.
pub const ADAPTERS: &[Adapter] = &[hl7::ADAPTER, filedrop::ADAPTER];
