//! Information governance, enforced in one place for every read and write path (API, web
//! UI): who may see whose records (organisation scoping), which fields each role sees (data
//! minimisation), who may assert which events (producer authorisation), and the access
//! audit that must be durable before any person's data is returned. docs/governance.md
//! explains the model; the tests named there prove it.

use handover_events::catalogue::DelayReason;
use handover_events::{AuditRecord, Event, EventType, FieldError};
use handover_projections::journey::{source_org, Journey};
use handover_projections::rows::{self, BrokerageRow, DelayRow};

use crate::auth::{Caller, Role};
use crate::{ApiError, AppState};

/// Whether `caller`'s organisation has a legitimate relationship with the person: it
/// reported any of their events (a trust's own patients, a council's own clients), is the
/// council responsible for one of their stays, or sent or received one of their referrals.
pub fn may_see_journey(caller: &Caller, j: &Journey) -> bool {
    let org = caller.organisation.as_str();
    j.timeline.iter().any(|e| source_org(&e.source).0 == org)
        || j.stays
            .iter()
            .any(|s| s.responsible_council.as_deref() == Some(org))
        || j.referrals
            .iter()
            .any(|r| r.to_council.as_deref() == Some(org) || r.from_org.as_deref() == Some(org))
}

/// The access records an auditor may see: those of their own organisation's users, and
/// any about a person their organisation has a relationship with (as for a journey), so a
/// trust's auditor has the whole "who viewed my record" report for its patients but does
/// not learn whom a council looked up that the trust never knew.
pub fn auditor_may_see(
    st: &AppState,
    caller: &Caller,
    records: Vec<AuditRecord>,
) -> Result<Vec<AuditRecord>, ApiError> {
    let mut known: std::collections::HashMap<handover_events::PersonRef, bool> =
        std::collections::HashMap::new();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let person = match (
            handover_events::NhsNumber::parse(&r.nhs_number),
            &r.local_id,
        ) {
            (Ok(n), _) => Some(handover_events::PersonRef::Nhs(n)),
            (Err(_), Some(l)) => Some(handover_events::PersonRef::Local(l.clone())),
            (Err(_), None) => None,
        };
        let visible = if r.organisation == caller.organisation {
            true
        } else if let Some(p) = person {
            match known.get(&p) {
                Some(v) => *v,
                None => {
                    let v = st
                        .journeys
                        .get_ref(&st.journey_tree, &p)
                        .map_err(|e| ApiError::Internal(e.to_string()))?
                        .is_some_and(|j| may_see_journey(caller, &j));
                    known.insert(p, v);
                    v
                }
            }
        } else {
            // Not identifiable: only the organisation's own users' records.
            false
        };
        if visible {
            out.push(r);
        }
    }
    Ok(out)
}

/// Whether a delay-worklist row is within `caller`'s organisation.
pub fn may_see_delay_row(caller: &Caller, r: &DelayRow) -> bool {
    let org = Some(caller.organisation.as_str());
    r.trust.as_deref() == org || r.council.as_deref() == org
}

/// Whether a brokerage row is within `caller`'s organisation.
pub fn may_see_brokerage_row(caller: &Caller, r: &BrokerageRow) -> bool {
    let org = Some(caller.organisation.as_str());
    r.council.as_deref() == org || r.hospital.as_ref().and_then(|h| h.trust.as_deref()) == org
}

/// Free-text and clinical fields of event data that brokers do not see.
const CLINICAL_DATA_FIELDS: &[&str] =
    &["note", "reason", "safeguarding_concern", "route_of_access"];

/// Whether `id` was issued by `organisation`'s own systems (`urn:gss:<org>:…` or
/// `urn:ods:<org>:…`): a broker's council's own case number, say.
fn issued_by(id: &handover_events::LocalId, organisation: &str) -> bool {
    let mut parts = id.system.splitn(4, ':');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("urn"), Some("gss" | "ods"), Some(org), Some(_)) if org.eq_ignore_ascii_case(organisation)
    )
}

/// Removes what a caller with `role` in `organisation` does not need from a journey (see
/// docs/governance.md).
pub fn minimise_journey(role: Role, organisation: &str, j: &mut Journey) {
    if role != Role::Broker {
        return;
    }
    // Brokers arrange care: they see who, where they live, care needs, dates and discharge
    // status; not other organisations' record numbers, GP, wards, clinical reasons or
    // free-text notes. Their own council's case number is theirs to see.
    j.identity.local_ids.retain(|l| issued_by(l, organisation));
    j.identity.gp_practice = None;
    for s in &mut j.stays {
        s.ward = None;
        if let Some(d) = &mut s.latest_delay {
            d.note = None;
            d.reason = as_broker_sees(d.reason);
        }
    }
    for r in &mut j.referrals {
        r.reason = None;
        r.safeguarding_concern = None;
        // Why a referral was declined or withdrawn is free text, often clinical or about
        // safeguarding; the status and its date say what a broker needs.
        r.closed_reason = None;
    }
    for p in &mut j.care_packages {
        // Free text too ("admitted under the Mental Health Act"): the status is enough.
        p.status_reason = None;
    }
    for e in &mut j.timeline {
        // A delay's reason is a code from the catalogue, what a broker needs to know
        // (`awaiting-care-package`), as the stay's latest delay shows it.
        let delay_reason = (e.event_type == EventType::DelayRecorded.as_str())
            .then(|| e.data.get("reason").cloned())
            .flatten()
            .map(|r| match serde_json::from_value::<DelayReason>(r) {
                Ok(d) => as_broker_sees(d).as_str(),
                Err(_) => DelayReason::Other.as_str(),
            });
        if let Some(obj) = e.data.as_object_mut() {
            for f in CLINICAL_DATA_FIELDS {
                obj.remove(*f);
            }
            if let Some(r) = delay_reason {
                obj.insert("reason".into(), r.into());
            }
            obj.remove("local_ids");
            obj.remove("local_id");
            obj.remove("gp_practice");
            obj.remove("ward");
            obj.remove("previous_ward");
        }
    }
}

/// A delay reason as a broker is shown it: `safeguarding` says there is a safeguarding
/// matter, which is not a broker's to know (docs/governance.md), so it shows as `other`, the
/// catalogue's code for a reason not listed. Leaving it out instead would say the same by
/// its absence.
fn as_broker_sees(reason: DelayReason) -> DelayReason {
    match reason {
        DelayReason::Safeguarding => DelayReason::Other,
        r => r,
    }
}

/// Removes what `caller` does not need from a delay-worklist row: for a broker, the ward
/// and a local id their own council did not issue; a safeguarding delay reason shows as
/// `other` (see `as_broker_sees`).
pub fn minimise_delay_row(caller: &Caller, r: &mut DelayRow) {
    if caller.role == Role::Broker {
        r.ward = None;
        if let Some(d) = r.delay_reason {
            let shown = as_broker_sees(d);
            if shown != d && r.waiting_for == rows::waiting_for_delay(d) {
                r.waiting_for = rows::waiting_for_delay(shown);
            }
            r.delay_reason = Some(shown);
        }
        r.person.local_id = r
            .person
            .local_id
            .take()
            .filter(|l| issued_by(l, &caller.organisation));
    }
}

/// Removes what `caller` does not need from a brokerage row (as [`minimise_delay_row`]).
pub fn minimise_brokerage_row(caller: &Caller, r: &mut BrokerageRow) {
    if caller.role == Role::Broker {
        r.person.local_id = r
            .person
            .local_id
            .take()
            .filter(|l| issued_by(l, &caller.organisation));
        if let Some(h) = &mut r.hospital {
            h.ward = None;
        }
    }
}

/// The event types a source of each sector (`nhs`, `council`) may assert: the sector rule,
/// defined with the catalogue ([`handover_events::sector::sector_may_assert`]) so the
/// projection and the NATS permissions apply the same one.
pub fn sector_may_publish(sector: &str, t: EventType) -> bool {
    handover_events::sector::sector_may_assert(sector, t)
}

/// Whether `caller` may publish `event`: an NHS source (`urn:ods:…`) may assert hospital
/// events and send or withdraw referrals, a council source (`urn:gss:…`) referral answers,
/// assessments and care packages; an integration token only for its own organisation.
pub fn may_publish(caller: &Caller, event: &Event) -> Result<(), FieldError> {
    let (org, sector) = source_org(&event.source);
    if !sector_may_publish(sector, event.event_type()) {
        let who = match sector {
            "nhs" => "an NHS source (urn:ods:…)",
            "council" => "a council source (urn:gss:…)",
            _ => "a source that names no NHS (urn:ods:) or council (urn:gss:) organisation",
        };
        return Err(FieldError {
            pointer: "/type".into(),
            message: format!("{who} may not assert {}", event.event_type().as_str()),
        });
    }
    if caller.role != Role::Admin && org != caller.organisation {
        return Err(FieldError {
            pointer: "/source".into(),
            message: format!(
                "a token of organisation {} may not publish as {}",
                caller.organisation, event.source
            ),
        });
    }
    Ok(())
}

/// The caller of a publishing endpoint, authenticated and allowed to publish, as an
/// extractor. It runs before the body is read (extractors from the request's parts run
/// before the one that takes the body), so a request without a valid token or role is
/// answered at once and its body, up to `MAX_BODY`, is never buffered. `E` is the error
/// the endpoint answers with (`ApiError` or an OperationOutcome under `/fhir`).
pub struct Publisher<E>(pub Caller, pub std::marker::PhantomData<fn() -> E>);

impl<E> axum::extract::FromRequestParts<AppState> for Publisher<E>
where
    E: From<ApiError> + axum::response::IntoResponse,
{
    type Rejection = E;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &AppState,
    ) -> Result<Self, E> {
        let caller = st.auth.authenticate(&parts.headers).await?;
        if !caller.role.publishes() {
            return Err(ApiError::Forbidden {
                role: caller.role.as_str().into(),
                action: "publish events",
            }
            .into());
        }
        Ok(Publisher(caller, std::marker::PhantomData))
    }
}

/// The client address of a request, as an extractor that never fails.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// Whose record an access read: an NHS number, or the local id of a person known only by
/// one (or neither, for a worklist row stored before rows carried local ids: the access is
/// still recorded, against no one in particular).
#[derive(Debug, Clone, Copy)]
pub enum Person<'a> {
    /// By NHS number.
    Nhs(&'a str),
    /// By local id.
    Local(&'a handover_events::LocalId),
    /// Not identifiable from what was read.
    Unnamed,
}

impl<'a> From<&'a str> for Person<'a> {
    fn from(nhs: &'a str) -> Self {
        Person::Nhs(nhs)
    }
}

impl<'a> Person<'a> {
    /// The person a worklist row is about: its NHS number, else the local id kept for
    /// the audit (`local_id`, which survives the row's minimisation).
    pub fn of(
        p: &'a handover_projections::rows::PersonSummary,
        local_id: Option<&'a handover_events::LocalId>,
    ) -> Person<'a> {
        match (p.nhs_number.as_deref(), local_id.or(p.local_id.as_ref())) {
            (Some(n), _) => Person::Nhs(n),
            (None, Some(l)) => Person::Local(l),
            (None, None) => Person::Unnamed,
        }
    }
}

/// Builds an answer while its access records are on their way to the audit stream, and
/// gives it back only once they are stored (or the read fails, 503, as with [`audit`]).
/// The records are sent before `answer` runs and acknowledged after, so the answer's
/// rendering overlaps nats-server storing them instead of following it.
pub async fn audited<'a, T>(
    st: &AppState,
    caller: &Caller,
    reason: &str,
    action: &str,
    from: ClientAddr,
    people: impl IntoIterator<Item = impl Into<Person<'a>>>,
    answer: impl FnOnce() -> T,
) -> Result<T, ApiError> {
    // `join!` polls the audit first: it publishes every record and then waits for the
    // acknowledgements, and only then is `answer` run, on this task, while they are due.
    let (stored, answer) = tokio::join!(
        audit(st, caller, reason, action, from, people),
        async move { answer() }
    );
    stored.map(|()| answer)
}

/// Records one access per person, durably, before the data is returned; fails the read
/// (503) when the audit trail cannot store them.
pub async fn audit<'a>(
    st: &AppState,
    caller: &Caller,
    reason: &str,
    action: &str,
    from: ClientAddr,
    people: impl IntoIterator<Item = impl Into<Person<'a>>>,
) -> Result<(), ApiError> {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let records: Vec<AuditRecord> = people
        .into_iter()
        .map(|p| {
            let (nhs_number, local_id) = match p.into() {
                Person::Nhs(n) => (n.to_owned(), None),
                Person::Local(l) => (String::new(), Some(l.clone())),
                Person::Unnamed => (String::new(), None),
            };
            AuditRecord {
                time: time.clone(),
                user: caller.name.clone(),
                organisation: caller.organisation.clone(),
                role: caller.role.as_str().into(),
                reason: reason.into(),
                action: action.into(),
                nhs_number,
                local_id,
                from: from.0.map(|a| a.ip().to_string()),
            }
        })
        .collect();
    if records.is_empty() {
        return Ok(());
    }
    st.audit.record(&records).await.map_err(|e| {
        tracing::warn!(error = %e, "audit trail unavailable; refusing the read");
        ApiError::Unavailable
    })
}
