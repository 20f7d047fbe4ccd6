//! Tests of the adapters: snapshot tests of the pure translations, listener behaviour over
//! real TCP against an in-memory sink, and property tests. The real-NATS end-to-end tests
//! live in the workspace's `tests/it/hl7.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod fhir_props;
mod hl7_listener;
mod hl7_props;
mod hl7_snapshots;
mod support;
