//! Read models projected from the event log, and the runner that feeds them.
//!
//! - [`journey`]: the per-person read model and its fold (pure);
//! - [`journeys`]: the projection over the store, with person keys and aliases;
//! - [`view`]: what the API shows of a journey, with derived delays;
//! - [`runner`]: JetStream → apply → atomic commit of changes and position → ack, with
//!   poison events parked ([`parking`]);
//! - [`rebuild`]: zero-downtime rebuild into a shadow tree, swapped in when caught up;
//! - `packed`: the LZ4 dictionary compression of a person's stored record and of the
//!   timeline's events;
//! - `chunks`: the timeline's events, kept in compressed chunks of a batch's events.

mod chunks;
pub mod erase;
pub mod journey;
pub mod journeys;
pub mod measures;
mod packed;
pub mod parking;
pub mod rebuild;
pub mod rows;
pub mod runner;
pub mod view;

pub use journey::Journey;
pub use journeys::Journeys;
pub use parking::ParkedRecord;
pub use rebuild::{RebuildRefused, RebuildState, RebuildStatus, Rebuilds};
pub use runner::{run_journeys, Progress, RunError};
