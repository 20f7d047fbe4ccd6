//! The boundary between producers and the event log: adapters hand events to an
//! [`EventSink`] and never see NATS.

use std::future::Future;
use std::pin::Pin;

use crate::envelope::Event;

/// What the log did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The stream sequence the event is stored at.
    pub sequence: u64,
    /// True when the event was already stored (same `source` and `id`) and this was a resend.
    pub duplicate: bool,
}

/// Why events could not be stored; nothing in the failed call may be acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The log is unreachable or did not acknowledge in time; retry later.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// The log refused the event (e.g. it is too large).
    #[error("event log refused the event: {0}")]
    Refused(String),
}

/// A boxed future, as returned by [`EventSink::publish`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Somewhere events are durably stored.
///
/// `publish` resolves only when every event is durably stored (for JetStream: after the
/// publish acknowledgement), in order; producers acknowledge their senders only then.
pub trait EventSink: Send + Sync + 'static {
    /// Stores `events` in order, returning one [`Stored`] per event.
    fn publish<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Vec<Stored>, SinkError>>;
}

/// Operator actions on the event log that are not publishing.
pub trait LogAdmin: Send + Sync + 'static {
    /// Removes every event stored under the given person keys (erasure); returns how many.
    fn purge_people<'a>(
        &'a self,
        person_keys: &'a [String],
    ) -> BoxFuture<'a, Result<u64, SinkError>>;
    /// The sequence of the last event stored.
    fn last_sequence(&self) -> BoxFuture<'_, Result<u64, SinkError>>;
}
