//! End-to-end tests: one binary, so the suite links once. Every test starts its own
//! nats-server on a random port with a temporary store.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod cluster;
mod faults;
mod fhir;
mod filedrop;
mod governance;
mod hl7;
mod ingest;
mod journey;
mod nats_accounts;
mod observability;
mod oidc;
mod process;
mod publisher;
mod rebuild;
mod recovery;
mod support;
mod ui;
mod worklists;
