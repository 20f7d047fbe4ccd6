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
//!
//! Within a batch, the work that does not depend on other events (decoding and checking
//! each event, reading and decoding each person's record, encoding each changed record) is
//! spread over a thread pool (`par_map`, threads named `projection-<n>`); the fold and the index run in event order.

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

/// Batches smaller than this are projected on the calling thread alone: handing a few
/// events to the thread pool costs more than it saves.
const PARALLEL_MIN: usize = 64;

/// `f` over `items`, in order: on the thread pool for a batch-sized input, on this thread
/// for a small one.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    static POOL: std::sync::Once = std::sync::Once::new();
    POOL.call_once(|| {
        // One thread per core, named for `top -H` and profiles; when another part of the
        // process built rayon's pool first, that one is used.
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("projection-{i}"))
            .build_global();
    });
    if items.len() < PARALLEL_MIN {
        items.iter().map(f).collect()
    } else {
        items
            .par_iter()
            .with_min_len(PARALLEL_MIN / 2)
            .map(f)
            .collect()
    }
}
