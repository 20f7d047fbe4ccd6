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

/// What the registry knows about one adapter, and how the binary starts it: the runtime
/// starts every registered adapter whose configuration section is present, so a new adapter
/// needs no change outside its file and its registry line.
#[derive(Clone, Copy)]
pub struct Adapter {
    /// Short name, used in logs and metrics (`handover_<name>_...`).
    pub name: &'static str,
    /// The `handover.toml` section holding its configuration, e.g. `hl7` for `[hl7]`.
    pub config_section: &'static str,
    /// One line: what it listens for.
    pub summary: &'static str,
    /// Checks a configuration section (unknown keys, types) without starting anything.
    pub check: fn(&toml::Value) -> Result<(), String>,
    /// Starts the adapter from its configuration section.
    pub start: fn(toml::Value, Context) -> BoxFuture<'static, Result<Started, String>>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter").field("name", &self.name).finish()
    }
}

impl PartialEq for Adapter {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What the runtime gives an adapter it starts.
pub struct Context {
    /// Where its events go (the JetStream event log).
    pub sink: std::sync::Arc<dyn handover_events::EventSink>,
    /// Becomes `true` when the process is shutting down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Context {
    /// A future that resolves at shutdown.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// A started adapter.
pub struct Started {
    /// The address it listens on, if it listens.
    pub listening: Option<std::net::SocketAddr>,
    /// Its counters in Prometheus text, appended to `/metrics`.
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
    /// Its run loop; the runtime spawns it.
    pub task: BoxFuture<'static, ()>,
}

/// Deserialises an adapter's configuration section, naming the section in errors.
pub fn section<T: serde::de::DeserializeOwned>(
    name: &str,
    value: &toml::Value,
) -> Result<T, String> {
    value
        .clone()
        .try_into()
        .map_err(|e| format!("[{name}]: {e}"))
}

/// The registry: every adapter Handover ships, in the order they are documented.
pub const ADAPTERS: &[Adapter] = &[hl7::ADAPTER, filedrop::ADAPTER];
