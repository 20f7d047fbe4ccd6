//! The access audit: who read which person's record, when, why and from where.
//!
//! Records are stored in their own JetStream stream before the data is returned, under
//! subjects `audit.<person-key>.<user-key>` (pseudonymous like event subjects), so one
//! person's "who viewed my record" report and one user's activity are both subject filters.

use serde::{Deserialize, Serialize};

use crate::sink::BoxFuture;

/// One access to one person's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditRecord {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The user or system (token name).
    pub user: String,
    /// The user's organisation (ODS or GSS code).
    pub organisation: String,
    /// The user's role.
    pub role: String,
    /// The stated reason for access (`direct-care`, `safeguarding`, …).
    pub reason: String,
    /// What was read, e.g. `journey`, `worklist:discharge-delays`, `ui:journey`, `audit`,
    /// or done (`erasure`).
    pub action: String,
    /// The person's NHS number; empty for a person known only by a local id (then
    /// `local_id` names them).
    pub nhs_number: String,
    /// The person's local id, for a person known only by one (a worklist row from a system
    /// that had no NHS number for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<crate::LocalId>,
    /// The client address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Which records to read back.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only accesses to this person.
    pub nhs_number: Option<crate::NhsNumber>,
    /// The same person's other identifiers (NHS numbers merged into `nhs_number`, linked
    /// local ids): accesses made under them are theirs too, and are included. Only with
    /// `nhs_number`.
    pub also: Vec<crate::PersonRef>,
    /// Only accesses by this user.
    pub user: Option<String>,
    /// At most this many, newest last.
    pub limit: usize,
}

/// Why an audit operation failed; a read must then not be answered.
#[derive(Debug, thiserror::Error)]
#[error("audit trail unavailable: {0}")]
pub struct AuditError(pub String);

/// Where access records go, durably, before data is returned.
pub trait AuditTrail: Send + Sync + 'static {
    /// Stores the records; resolves only once they are durable.
    fn record<'a>(&'a self, records: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), AuditError>>;
    /// Reads records back.
    fn query<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, AuditError>>;
}
