//! The `handover` command's library half: configuration, the runtime that ties the event
//! log, projections and API together, `dev` mode, `publish`, and demo data.

pub mod bench;
pub mod config;
pub mod demo;
pub mod dev;
pub mod nats_accounts;
pub mod ops;
pub mod publish;
pub mod runtime;
pub mod status;
pub mod telemetry;
