//! FHIR R4 (UK Core) intake: the pure mapping from Encounter, ServiceRequest, EpisodeOfCare,
//! Patient and transaction/message Bundles to catalogue events.
//!
//! HTTP lives in `handover-api` (`POST /fhir/r4/{type}` and `POST /fhir/r4`); this module only
//! maps JSON to [`Event`]s, or to the list of every problem as FHIR `OperationOutcome` issues
//! ([`Issue`]) with a FHIRPath `expression` each. Nothing here does IO.
//!
//! Resources are read as `serde_json::Value` with path-tracking extraction: only what the
//! mapping needs is validated, not all of FHIR (a generated R4 model would add ~100k lines of
//! code to build and report serde errors without a FHIRPath location).
//!
//! Decisions (the full tables are in `docs/adapters.md`, "FHIR R4"):
//!
//! - **Person.** `subject` (Encounter, ServiceRequest) or `patient` (EpisodeOfCare) is read from
//!   `.identifier` with system [`NHS_NUMBER_SYSTEM`] (the NHS number, checked with Modulus 11),
//!   else `.reference` to a Patient **in the same Bundle** (by `fullUrl` or `Patient/<id>`,
//!   with or without a version) or contained in the resource, when that has an NHS number
//!   (the subject is the NHS number when known), else `.identifier` of another system (a
//!   local id), else the referenced Patient's first local identifier. A bare reference
//!   outside a Bundle cannot be resolved and is an error.
//! - **Source.** `urn:ods:<ODS>:fhir` or `urn:gss:<GSS>:fhir` from the resource's organisation
//!   (Encounter.serviceProvider, ServiceRequest.requester — performer for `accepted` —,
//!   EpisodeOfCare.managingOrganization, Patient.managingOrganization), identified by an
//!   identifier of system [`ODS_ORGANISATION_SYSTEM`]/[`ODS_SITE_SYSTEM`] or [`GSS_SYSTEM`] (or
//!   an Organization in the Bundle or contained in the resource carrying one); else the
//!   caller's organisation.
//! - **Event ids.** `<type>/<id>/_history/<versionId>#<event>.<digest>` when the resource has
//!   `id` and `meta.versionId`; otherwise `<type>/<id or ->/_hash/<sha256 of
//!   meta.lastUpdated, as a UTC instant>#<event>.<digest>`, the digest being 12 hex digits of
//!   a SHA-256 of the person and the event's data. A resent resource (or Bundle) gives the
//!   same ids and is stored once; a changed resource, or another person's resource under the
//!   same id and version, gives new ones. `fullUrl` is not used: senders often mint a new
//!   `urn:uuid` per message.
//! - FHIR is state transfer: each version of a resource is mapped statelessly from its current
//!   status (e.g. an in-progress Encounter → `admitted`; a later version of it → `admitted`
//!   again with the new ward, which the journey projection folds as an update).

use std::collections::BTreeMap;

use handover_events::catalogue::ServiceType;
use handover_events::{Date, Event, NhsNumber, Timestamp};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The NHS number identifier system.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
/// The NHS number system of the NHS's DSTU2 profiles (CareConnect), which some senders
/// still use: read as [`NHS_NUMBER_SYSTEM`].
pub const LEGACY_NHS_NUMBER_SYSTEM: &str = "http://fhir.nhs.net/Id/nhs-number";
/// The NHS number's OID as a system (as HL7 v2 senders give it): read as
/// [`NHS_NUMBER_SYSTEM`] too.
pub const NHS_NUMBER_OID_SYSTEM: &str = "urn:oid:2.16.840.1.113883.2.1.4.1";
/// The UK Core NHS number verification status extension (on the NHS number identifier).
pub const NHS_NUMBER_VERIFICATION_URL: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus";
/// ODS organisation codes.
pub const ODS_ORGANISATION_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
/// ODS site codes.
pub const ODS_SITE_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-site-code";
/// ONS GSS codes of councils (the ONS statistical-geography URI base).
pub const GSS_SYSTEM: &str = "http://statistics.data.gov.uk/id/statistical-geography";
/// UK Core admission method extension (NHS Data Dictionary admission method codes).
pub const ADMISSION_METHOD_URL: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-AdmissionMethod";
/// UK Core discharge method extension (codes 1–5; England's 6 and 7 are read as 2).
pub const DISCHARGE_METHOD_URL: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-DischargeMethod";

/// The resource types accepted at `POST /fhir/r4/{type}`.
pub const RESOURCE_TYPES: &[&str] = &["Encounter", "ServiceRequest", "EpisodeOfCare", "Patient"];

/// Resource types that may appear in a Bundle only to be referred to; they produce no events.
pub const REFERENCED_ONLY: &[&str] = &[
    "MessageHeader",
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
];

/// NHS number verification status codes (UK Core `UKCore-NHSNumberVerificationStatus`).
pub const NHS_NUMBER_STATUSES: &[&str] = &["01", "02", "03", "04", "05", "06", "07", "08"];

/// EpisodeOfCare.type codes → `care-package.requested.service_type`: Handover's own codes and
/// the short brokerage codes, matched case-insensitively in any coding system.
pub const SERVICE_TYPE_CODES: &[(&str, ServiceType)] = &[
    ("home-care", ServiceType::HomeCare),
    ("HC", ServiceType::HomeCare),
    ("DOM", ServiceType::HomeCare),
    ("reablement", ServiceType::Reablement),
    ("REAB", ServiceType::Reablement),
    ("residential", ServiceType::Residential),
    ("RES", ServiceType::Residential),
    ("nursing", ServiceType::Nursing),
    ("NURS", ServiceType::Nursing),
    ("community-bed", ServiceType::CommunityBed),
    ("CB", ServiceType::CommunityBed),
    ("equipment", ServiceType::Equipment),
    ("EQ", ServiceType::Equipment),
    ("other", ServiceType::Other),
];

/// `hospitalization.dischargeDisposition` codes of the HL7 `discharge-disposition` code system
/// (and Handover's own destination codes) → `discharged.destination`. Two-digit NHS Data
/// Dictionary discharge destination codes (UK Core) use the same table as the HL7 v2 adapter.
pub const DISCHARGE_DISPOSITIONS: &[(&str, &str)] = &[
    ("home", "usual-residence"),
    ("alt-home", "other"),
    ("other-hcf", "other"),
    ("hosp", "hospice"),
    ("long", "care-home"),
    ("snf", "care-home"),
    ("rehab", "community-bed"),
    ("psy", "other"),
    ("aadvice", "other"),
    ("exp", "died"),
    ("oth", "other"),
    ("usual-residence", "usual-residence"),
    ("care-home", "care-home"),
    ("community-bed", "community-bed"),
    ("hospice", "hospice"),
    ("died", "died"),
    ("other", "other"),
];

// ---------------------------------------------------------------------------------------------
// Issues and OperationOutcome
// ---------------------------------------------------------------------------------------------

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The request could not be processed at all.
    Fatal,
    /// A problem that stops the resource being accepted.
    Error,
    /// Accepted, with a caveat.
    Warning,
    /// For information (success responses).
    Information,
}

/// `OperationOutcome.issue.code` (FHIR `issue-type`), the subset Handover uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueCode {
    /// Content invalid against the specification or a profile.
    Invalid,
    /// A structural issue: not JSON, wrong shape, wrong resource type.
    Structure,
    /// A required element is missing.
    Required,
    /// An element's value is invalid (a date, an NHS number).
    Value,
    /// A code is not one Handover knows.
    CodeInvalid,
    /// A resource type, status or interaction Handover does not support.
    NotSupported,
    /// Authentication is required.
    Login,
    /// Not permitted.
    Forbidden,
    /// Temporary failure (the event log is unavailable): retry.
    Transient,
    /// The request is more than Handover takes in one go (too many events): split it.
    TooCostly,
    /// An unexpected internal error.
    Exception,
    /// For information.
    Informational,
}

/// One problem (or, with [`Severity::Information`], one result) of processing a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// How bad it is.
    pub severity: Severity,
    /// The FHIR issue type.
    pub code: IssueCode,
    /// What is wrong, for the sender's interface team. Never quotes an NHS number.
    pub diagnostics: String,
    /// FHIRPath to the element at fault, e.g. `Patient.identifier[0].value` (or, inside a
    /// Bundle, `Bundle.entry[1].resource.identifier[0].value`).
    pub expression: Option<String>,
}

impl Issue {
    /// An error issue.
    pub fn error(
        code: IssueCode,
        expression: Option<String>,
        diagnostics: impl Into<String>,
    ) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression,
        }
    }

    /// An information issue (no expression).
    pub fn information(diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Information,
            code: IssueCode::Informational,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// The issue as an `OperationOutcome.issue` element.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("severity".into(), json!(self.severity));
        m.insert("code".into(), json!(self.code));
        m.insert("diagnostics".into(), self.diagnostics.clone().into());
        if let Some(e) = &self.expression {
            m.insert("expression".into(), json!([e]));
        }
        Value::Object(m)
    }
}

/// An `OperationOutcome` resource holding `issues`.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(Issue::to_json).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------------------------
// Context and entry points
// ---------------------------------------------------------------------------------------------

/// What the mapping needs to know besides the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirContext {
    /// The caller's organisation (ODS or GSS code): the event source when the resource names
    /// no organisation.
    pub organisation: String,
    /// When the request was received: the event time of status changes whose resource carries
    /// no time (no `meta.lastUpdated`).
    pub received_at: Timestamp,
}

impl FhirContext {
    /// A context for a caller of `organisation`, received at `received_at`.
    pub fn new(organisation: impl Into<String>, received_at: Timestamp) -> FhirContext {
        FhirContext {
            organisation: organisation.into(),
            received_at,
        }
    }
}

/// The events of one Bundle entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryEvents {
    /// Position in `Bundle.entry`.
    pub index: usize,
    /// The entry's resource type.
    pub resource_type: String,
    /// Its events, in order (empty for referenced-only resources and statuses Handover does
    /// not record).
    pub events: Vec<Event>,
}

/// Maps one resource (Encounter, ServiceRequest, EpisodeOfCare, Patient, or a `transaction` or
/// `message` Bundle of them) to events, or lists every problem found.
pub fn translate(resource: &Value, ctx: &FhirContext) -> Result<Vec<Event>, Vec<Issue>> {
    match resource.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => translate_bundle(resource, ctx)
            .map(|entries| entries.into_iter().flat_map(|e| e.events).collect()),
        _ => {
            let mut cx = Cx::new(ctx, None, String::new());
            let events = cx.resource(resource);
            cx.finish(events)
        }
    }
}

/// Maps a `transaction` or `message` Bundle entry by entry; all or nothing: any issue in any
/// entry fails the whole Bundle.
pub fn translate_bundle(bundle: &Value, ctx: &FhirContext) -> Result<Vec<EntryEvents>, Vec<Issue>> {
    let entries = bundle_entries(bundle, &["transaction", "message"])?;
    let index = BundleIndex::new(entries);
    let mut issues = Vec::new();
    let mut out = Vec::with_capacity(entries.len());
    let with_request = bundle.get("type").and_then(Value::as_str) == Some("transaction");
    for (i, entry) in entries.iter().enumerate() {
        match translate_entry(i, entry, &index, ctx, with_request) {
            Ok(e) => out.push(e),
            Err(mut e) => issues.append(&mut e),
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Maps a `batch` Bundle: each entry on its own (FHIR R4 http.html#transaction: a batch's
/// entries succeed or fail independently), so one bad entry does not cost the others. Only
/// a problem with the Bundle itself fails it whole.
pub fn translate_batch(
    bundle: &Value,
    ctx: &FhirContext,
) -> Result<Vec<Result<EntryEvents, Vec<Issue>>>, Vec<Issue>> {
    let entries = bundle_entries(bundle, &["batch"])?;
    let index = BundleIndex::new(entries);
    Ok(entries
        .iter()
        .enumerate()
        .map(|(i, entry)| translate_entry(i, entry, &index, ctx, true))
        .collect())
}

/// A Bundle's entries, once it is a Bundle of one of `types` with at least one entry.
fn bundle_entries<'b>(bundle: &'b Value, types: &[&str]) -> Result<&'b [Value], Vec<Issue>> {
    let mut issues = Vec::new();
    let Some(obj) = bundle.as_object() else {
        return Err(vec![Issue::error(
            IssueCode::Structure,
            None,
            "the body must be a JSON object (a FHIR Bundle)",
        )]);
    };
    match obj.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {}
        Some(other) => {
            return Err(vec![Issue::error(
                IssueCode::Structure,
                Some("resourceType".into()),
                format!(
                    "expected a Bundle, got {other}: post single resources to /fhir/r4/{other}"
                ),
            )])
        }
        None => {
            return Err(vec![Issue::error(
                IssueCode::Required,
                Some("resourceType".into()),
                "resourceType is required",
            )])
        }
    }
    match obj.get("type").and_then(Value::as_str) {
        Some(t) if types.contains(&t) => {}
        Some(t) => issues.push(Issue::error(
            IssueCode::NotSupported,
            Some("Bundle.type".into()),
            format!(
                "Bundle type {t:?} is not supported: send a transaction, batch or message Bundle"
            ),
        )),
        None => issues.push(Issue::error(
            IssueCode::Required,
            Some("Bundle.type".into()),
            "Bundle.type is required (transaction, batch or message)",
        )),
    }
    // A transaction or batch of no entries is valid and does nothing (FHIR R4
    // http.html#transaction); a message needs its MessageHeader.
    let is_message = obj.get("type").and_then(Value::as_str) == Some("message");
    let entries: &[Value] = match obj.get("entry") {
        Some(Value::Array(a)) if !a.is_empty() || !is_message => a,
        None if !is_message => &[],
        Some(Value::Array(_)) | None => {
            issues.push(Issue::error(
                IssueCode::Required,
                Some("Bundle.entry".into()),
                "the Bundle has no entries",
            ));
            &[]
        }
        Some(_) => {
            issues.push(Issue::error(
                IssueCode::Structure,
                Some("Bundle.entry".into()),
                "Bundle.entry must be an array",
            ));
            &[]
        }
    };
    if is_message
        && !entries.is_empty()
        && entries[0]
            .get("resource")
            .and_then(|r| str_at(r, "resourceType"))
            != Some("MessageHeader")
    {
        // FHIR R4 bdl-12: a message's first resource is its MessageHeader, which says what
        // the message is and whom the answer goes to.
        issues.push(Issue::error(
            IssueCode::Structure,
            Some("Bundle.entry[0].resource".into()),
            "a message Bundle starts with its MessageHeader (FHIR R4 invariant bdl-12)",
        ));
    }
    if issues.is_empty() {
        Ok(entries)
    } else {
        Err(issues)
    }
}

/// The problem with a transaction or batch entry's `request` for `resource` (FHIR R4
/// bdl-3: every such entry has one), if any: it must be a POST or PUT of the resource's own
/// type, and a PUT of `Type/id` must name the resource's id.
fn request_issue(i: usize, entry: &Value, resource: &Value) -> Option<Issue> {
    let at = |rel: &str| Some(format!("Bundle.entry[{i}].request{rel}"));
    let Some(request) = entry.get("request").filter(|q| q.is_object()) else {
        return Some(Issue::error(
            IssueCode::Required,
            at(""),
            "every entry of a transaction or batch needs a request (method and url; FHIR R4 invariant bdl-3)",
        ));
    };
    let method = str_at(request, "method").unwrap_or("");
    if !method.eq_ignore_ascii_case("POST") && !method.eq_ignore_ascii_case("PUT") {
        return Some(if method.is_empty() {
            Issue::error(
                IssueCode::Required,
                at(".method"),
                "request.method is required (POST or PUT)",
            )
        } else {
            Issue::error(
                IssueCode::NotSupported,
                at(".method"),
                format!("{} entries with a resource are not supported: send the resource with request.method POST or PUT", method.to_ascii_uppercase()),
            )
        });
    }
    let Some(url) = str_at(request, "url") else {
        return Some(Issue::error(
            IssueCode::Required,
            at(".url"),
            "request.url is required (e.g. Encounter, or Encounter/<id> for a PUT)",
        ));
    };
    let rtype = str_at(resource, "resourceType").unwrap_or("");
    let path = url.split('?').next().unwrap_or("");
    // The url is relative to the server's base; an absolute one ends in the same parts.
    let tail = if path.contains("://") {
        // `…/fhir/Encounter/enc-1` ends in `Type/id`; `…/fhir/Encounter` in the type alone.
        type_and_id(path)
            .filter(|t| t.starts_with(&format!("{rtype}/")))
            .unwrap_or_else(|| path.rsplit('/').next().unwrap_or("").to_owned())
    } else {
        path.trim_start_matches('/').to_owned()
    };
    let mut parts = tail.split('/');
    let named = parts.next().unwrap_or("");
    if named != rtype {
        return Some(Issue::error(
            IssueCode::Invalid,
            at(".url"),
            format!("request.url {url:?} does not name the entry's resource type {rtype}"),
        ));
    }
    if let (Some(id), Some(own)) = (
        parts.next().filter(|s| !s.is_empty()),
        str_at(resource, "id"),
    ) {
        if id != own {
            return Some(Issue::error(
                IssueCode::Invalid,
                at(".url"),
                format!("request.url names {rtype}/{id}, but the resource's id is {own:?}"),
            ));
        }
    }
    None
}

/// Maps entry `i` of a Bundle (references resolved through `index`). `with_request`: the
/// Bundle is a transaction or batch, whose entries say what to do with their resource.
fn translate_entry(
    i: usize,
    entry: &Value,
    index: &BundleIndex<'_>,
    ctx: &FhirContext,
    with_request: bool,
) -> Result<EntryEvents, Vec<Issue>> {
    let root = format!("Bundle.entry[{i}].resource");
    let Some(resource) = entry.get("resource").filter(|r| r.is_object()) else {
        // A transaction may also delete or read (FHIR R4 bundle.html); Handover only
        // takes resources to map, and says so rather than "needs a resource".
        let method = entry.get("request").and_then(|q| str_at(q, "method"));
        return Err(vec![match method {
            Some(m) if !m.eq_ignore_ascii_case("POST") && !m.eq_ignore_ascii_case("PUT") => {
                let m = m.to_ascii_uppercase();
                let hint = if m == "DELETE" {
                    "Handover records events, not resources: to undo what a resource recorded, send it with status entered-in-error (or cancelled)"
                } else {
                    "send each resource with request.method POST or PUT"
                };
                Issue::error(
                    IssueCode::NotSupported,
                    Some(format!("Bundle.entry[{i}].request.method")),
                    format!("{m} entries are not supported: {hint}"),
                )
            }
            _ => Issue::error(
                IssueCode::Required,
                Some(root),
                "every entry needs a resource",
            ),
        }]);
    };
    let rtype = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let nothing = || EntryEvents {
        index: i,
        resource_type: rtype.to_owned(),
        events: Vec::new(),
    };
    if with_request {
        if let Some(issue) = request_issue(i, entry, resource) {
            return Err(vec![issue]);
        }
    }
    // The entry's own modifiers (on the entry, its request), and those of a resource read
    // for what other entries refer to (an Organization's code, a Location's name): each
    // changes the meaning of what Handover would read, so is refused as on a mapped
    // resource. A resource Handover passes over entirely may carry any.
    let mut cx = Cx::new(ctx, Some(index), format!("Bundle.entry[{i}]"));
    if let Some(obj) = entry.as_object() {
        let around: serde_json::Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| k.as_str() != "resource")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        cx.modifier_extensions(&Value::Object(around), "");
    }
    if REFERENCED_ONLY.contains(&rtype) {
        cx.modifier_extensions(resource, "resource");
        cx.implicit_rules(resource, "resource");
    }
    if !cx.issues.is_empty() {
        return Err(cx.issues);
    }
    if REFERENCED_ONLY.contains(&rtype) {
        return Ok(nothing());
    }
    if rtype == "Bundle" {
        return Err(vec![Issue::error(
            IssueCode::NotSupported,
            Some(root),
            "nested Bundles are not supported",
        )]);
    }
    if !RESOURCE_TYPES.contains(&rtype) && is_resource_type_name(rtype) {
        // A discharge Bundle from an EPR carries Conditions, Observations, medication
        // and more beside the stay: none is Handover's to record, and refusing the
        // whole transaction for them would lose the stay. Each is answered as
        // recording nothing, saying so.
        return Ok(nothing());
    }
    let mut cx = Cx::new(ctx, Some(index), root);
    let events = cx.resource(resource);
    cx.finish(events).map(|events| EntryEvents {
        index: i,
        resource_type: rtype.to_owned(),
        events,
    })
}

// ---------------------------------------------------------------------------------------------
// Bundle references
// ---------------------------------------------------------------------------------------------

/// The resources of a Bundle by `fullUrl` and by `Type/id`.
struct BundleIndex<'a> {
    by_ref: BTreeMap<String, &'a Value>,
}

impl<'a> BundleIndex<'a> {
    fn new(entries: &'a [Value]) -> BundleIndex<'a> {
        let mut by_ref = BTreeMap::new();
        let mut tails = Vec::new();
        for e in entries {
            let Some(r) = e.get("resource") else { continue };
            if let Some(u) = e.get("fullUrl").and_then(Value::as_str) {
                by_ref.insert(u.to_owned(), r);
                // A relative reference (`Patient/p103`) resolves against the base of an
                // absolute fullUrl (`https://ehr.example.nhs.uk/fhir/Patient/p103`), FHIR R4
                // bundle.html "Resolving references in Bundles": the entry needs no `id`.
                if u.starts_with("http://") || u.starts_with("https://") {
                    tails.extend(type_and_id(u).map(|t| (t, r)));
                }
            }
            if let (Some(t), Some(id)) = (str_at(r, "resourceType"), str_at(r, "id")) {
                by_ref.insert(format!("{t}/{id}"), r);
            }
        }
        // After the ids: a resource's own `id` names it over another entry's URL.
        for (tail, r) in tails {
            by_ref.entry(tail).or_insert(r);
        }
        BundleIndex { by_ref }
    }

    /// The resource a reference points at: exactly, or by its trailing `Type/id`. A
    /// version-specific reference (`Patient/p3/_history/1`, FHIR R4 references.html) names
    /// the resource: a Bundle holds one version of each.
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        if let Some(r) = self.by_ref.get(reference) {
            return Some(r);
        }
        let unversioned = without_version(reference);
        if let Some(r) = self.by_ref.get(unversioned) {
            return Some(r);
        }
        self.by_ref.get(&type_and_id(unversioned)?).copied()
    }
}

/// A reference without its version: `Patient/p3/_history/1` → `Patient/p3`.
fn without_version(reference: &str) -> &str {
    match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    }
}

/// The `Type/id` a reference or URL ends with (`…/fhir/Patient/p103` → `Patient/p103`),
/// its version and any fragment left out.
fn type_and_id(reference: &str) -> Option<String> {
    let mut parts = without_version(reference).rsplit('/');
    let (id, t) = (parts.next()?, parts.next()?);
    let id = id.split('#').next().unwrap_or(id);
    (!id.is_empty() && !t.is_empty()).then(|| format!("{t}/{id}"))
}

// ---------------------------------------------------------------------------------------------
// Extraction helpers
// ---------------------------------------------------------------------------------------------

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// What kind of JSON value `v` is, for diagnostics ("an array").
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON kind a value of `shape` takes, for a message.
fn kind_wanted(shape: &Shape) -> &'static str {
    if shape.parts.is_some() {
        "a JSON object"
    } else {
        "a JSON string"
    }
}

/// `a` or `an`, for a FHIR type's name (`an Identifier`, `a Period`).
fn article(word: &str) -> &'static str {
    if word.starts_with(['A', 'E', 'I', 'O', 'U', 'a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// A repeating element's values. A lone value where FHIR JSON wants an array of one
/// (`"identifier": {…}`, a common slip) is read as that one: [`Shape`] checks that the
/// elements Handover reads are of the right kind before anything is mapped.
fn arr<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    match v.get(key) {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => &[],
        Some(one) => std::slice::from_ref(one),
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes: the JSON kinds of the elements Handover reads
// ---------------------------------------------------------------------------------------------

/// One element Handover reads, with its FHIR R4 type and cardinality. An element of the
/// wrong JSON kind (`"hospitalization": []`, `"period": "2026-11-20"`, a number where a
/// string belongs) is refused with a `structure` issue naming it, rather than read as
/// absent: reading it as absent would record a discharge without its destination, or an
/// encounter under a different id, without a word to the sender. Elements Handover does not
/// read are not looked at.
struct Shape {
    name: &'static str,
    /// `0..*` in FHIR R4: a JSON array (a lone value is accepted as one, see [`arr`]).
    many: bool,
    /// The FHIR type, for the message.
    fhir_type: &'static str,
    /// A complex type's elements that Handover reads; `None` for a primitive (a JSON
    /// string: every primitive Handover reads is a string in FHIR JSON).
    parts: Option<&'static [Shape]>,
}

impl Shape {
    const fn text(name: &'static str, fhir_type: &'static str) -> Self {
        Shape {
            name,
            many: false,
            fhir_type,
            parts: None,
        }
    }
    const fn texts(name: &'static str, fhir_type: &'static str) -> Self {
        Shape {
            name,
            many: true,
            fhir_type,
            parts: None,
        }
    }
    const fn one(name: &'static str, fhir_type: &'static str, parts: &'static [Shape]) -> Self {
        Shape {
            name,
            many: false,
            fhir_type,
            parts: Some(parts),
        }
    }
    const fn many(name: &'static str, fhir_type: &'static str, parts: &'static [Shape]) -> Self {
        Shape {
            name,
            many: true,
            fhir_type,
            parts: Some(parts),
        }
    }
}

const PERIOD: &[Shape] = &[
    Shape::text("start", "dateTime"),
    Shape::text("end", "dateTime"),
];
const CODING: &[Shape] = &[
    Shape::text("system", "uri"),
    Shape::text("code", "code"),
    Shape::text("display", "string"),
];
const CODEABLE_CONCEPT: &[Shape] = &[
    Shape::many("coding", "Coding", CODING),
    Shape::text("text", "string"),
];
const IDENTIFIER: &[Shape] = &[
    Shape::text("use", "code"),
    Shape::text("system", "uri"),
    Shape::text("value", "string"),
    Shape::one("period", "Period", PERIOD),
];
const REFERENCE: &[Shape] = &[
    Shape::text("reference", "string"),
    Shape::one("identifier", "Identifier", IDENTIFIER),
    Shape::text("display", "string"),
];
const EXTENSION: &[Shape] = &[
    Shape::text("url", "uri"),
    Shape::one("valueCodeableConcept", "CodeableConcept", CODEABLE_CONCEPT),
];
const STATUS_HISTORY: &[Shape] = &[
    Shape::text("status", "code"),
    Shape::one("period", "Period", PERIOD),
];
/// What every resource Handover maps has and Handover reads (`subject`, `patient` and
/// `status` are checked where they are read, with messages of their own).
const RESOURCE: &[Shape] = &[
    Shape::text("id", "id"),
    Shape::one(
        "meta",
        "Meta",
        &[
            Shape::text("versionId", "id"),
            Shape::text("lastUpdated", "instant"),
        ],
    ),
    Shape::many("extension", "Extension", EXTENSION),
    Shape::many("identifier", "Identifier", IDENTIFIER),
];
const ENCOUNTER: &[Shape] = &[
    Shape::many("statusHistory", "StatusHistory", STATUS_HISTORY),
    Shape::one("period", "Period", PERIOD),
    Shape::many(
        "location",
        "BackboneElement",
        &[
            Shape::one("location", "Reference", REFERENCE),
            Shape::text("status", "code"),
            Shape::one("physicalType", "CodeableConcept", CODEABLE_CONCEPT),
            Shape::one("period", "Period", PERIOD),
        ],
    ),
    Shape::one(
        "hospitalization",
        "BackboneElement",
        &[
            Shape::one("dischargeDisposition", "CodeableConcept", CODEABLE_CONCEPT),
            Shape::one("destination", "Reference", REFERENCE),
        ],
    ),
    Shape::one("serviceProvider", "Reference", REFERENCE),
    Shape::one("partOf", "Reference", REFERENCE),
];
const SERVICE_REQUEST: &[Shape] = &[
    Shape::text("intent", "code"),
    Shape::text("priority", "code"),
    Shape::one("encounter", "Reference", REFERENCE),
    Shape::one("requester", "Reference", REFERENCE),
    Shape::many("performer", "Reference", REFERENCE),
    Shape::one("performerType", "CodeableConcept", CODEABLE_CONCEPT),
    Shape::many("reasonCode", "CodeableConcept", CODEABLE_CONCEPT),
    Shape::many("note", "Annotation", &[Shape::text("text", "markdown")]),
    Shape::one("occurrencePeriod", "Period", PERIOD),
    Shape::text("occurrenceDateTime", "dateTime"),
    Shape::text("authoredOn", "dateTime"),
];
const EPISODE_OF_CARE: &[Shape] = &[
    Shape::many("statusHistory", "StatusHistory", STATUS_HISTORY),
    Shape::many("type", "CodeableConcept", CODEABLE_CONCEPT),
    Shape::one("managingOrganization", "Reference", REFERENCE),
    Shape::one("period", "Period", PERIOD),
    Shape::many("referralRequest", "Reference", REFERENCE),
];
const PATIENT: &[Shape] = &[
    Shape::many(
        "name",
        "HumanName",
        &[
            Shape::text("use", "code"),
            Shape::text("text", "string"),
            Shape::text("family", "string"),
            Shape::texts("given", "string"),
            Shape::one("period", "Period", PERIOD),
        ],
    ),
    Shape::text("birthDate", "date"),
    Shape::many(
        "address",
        "Address",
        &[
            Shape::text("use", "code"),
            Shape::text("postalCode", "string"),
            Shape::one("period", "Period", PERIOD),
        ],
    ),
    Shape::many("generalPractitioner", "Reference", REFERENCE),
    Shape::one("managingOrganization", "Reference", REFERENCE),
];

/// The elements of resource type `t` that [`Shape`] checks.
fn shapes(t: &str) -> &'static [Shape] {
    match t {
        "Encounter" => ENCOUNTER,
        "ServiceRequest" => SERVICE_REQUEST,
        "EpisodeOfCare" => EPISODE_OF_CARE,
        "Patient" => PATIENT,
        _ => &[],
    }
}

/// What an extension's CodeableConcept says, read by [`extension_coding`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Coded<T> {
    /// A coding understood, mapped.
    Understood(T),
    /// Nothing understood, and a coding of the extension's own code system (or of none)
    /// has a code that is not in it: the code and the FHIRPath to it (relative).
    Unknown(String, String),
}

/// The first coding of the extension with `url` that is understood: one of the extension's
/// own code system (a system containing `own_system`, e.g. `UKCore-DischargeMethod` for
/// `…/CodeSystem/UKCore-DischargeMethodEngland`) whose code `read` maps, else any coding
/// whose code `read` maps. A CodeableConcept may carry several codings (a SNOMED CT one
/// first, say), and UK Core's bindings are extensible, so codings of other systems are
/// passed over, as for `dischargeDisposition`. `None` when the extension is absent or only
/// has codings of other systems that are not understood.
fn extension_coding<T>(
    v: &Value,
    url: &str,
    own_system: &str,
    read: impl Fn(&str) -> Option<T>,
) -> Option<Coded<T>> {
    let own_system = own_system.to_ascii_lowercase();
    // (system is the extension's own, or none; code; path)
    let mut codings = Vec::new();
    // On the element itself, else on an Encounter's `hospitalization` (where Data
    // Standards Wales and some EPRs put the admission and discharge methods).
    let hospitalization = v.get("hospitalization").filter(|h| h.is_object());
    let places = std::iter::once(("", v)).chain(hospitalization.map(|h| ("hospitalization.", h)));
    let extensions = places.flat_map(|(prefix, holder)| {
        arr(holder, "extension")
            .iter()
            .enumerate()
            .map(move |(i, ext)| (format!("{prefix}extension[{i}]"), ext))
    });
    for (at, ext) in extensions {
        if !str_at(ext, "url").is_some_and(|u| same_extension(u, url)) {
            continue;
        }
        let concept = ext.get("valueCodeableConcept").unwrap_or(&Value::Null);
        for (j, c) in arr(concept, "coding").iter().enumerate() {
            let Some(code) = str_at(c, "code") else {
                continue;
            };
            let own = str_at(c, "system")
                .map(|s| s.to_ascii_lowercase().contains(&own_system))
                .unwrap_or(true);
            let path = format!("{at}.valueCodeableConcept.coding[{j}].code");
            codings.push((own, code, path));
        }
    }
    let understood = |own_only: bool| {
        codings
            .iter()
            .filter(|(own, _, _)| *own || !own_only)
            .find_map(|(_, code, _)| read(code))
    };
    if let Some(t) = understood(true).or_else(|| understood(false)) {
        return Some(Coded::Understood(t));
    }
    codings
        .into_iter()
        .find(|(own, _, _)| *own)
        .map(|(_, code, path)| Coded::Unknown(code.to_owned(), path))
}

/// Whether an extension's `url` is UK Core's `canonical` one: the same, or the same
/// extension under another base (a local mirror of the profiles, `http` for `https`) or
/// as NHS England's earlier Care Connect profiles (STU3) named it,
/// `Extension-CareConnect-<Name>-1`, which engines migrated to R4 still send.
fn same_extension(url: &str, canonical: &str) -> bool {
    if url == canonical {
        return true;
    }
    let name = |u: &str| u.rsplit('/').next().unwrap_or(u).to_owned();
    let (got, want) = (name(url), name(canonical));
    if !url.contains("/StructureDefinition/") {
        return false;
    }
    got == want
        || want
            .strip_prefix("Extension-UKCore-")
            .is_some_and(|n| got == format!("Extension-CareConnect-{n}-1"))
}

/// The body of a request as UTF-8, given the `charset` its `Content-Type` named.
///
/// FHIR's JSON is UTF-8 (http.html#mime). A body declared as ISO-8859-1, Windows-1252 or
/// US-ASCII (what some Windows integration engines label their output) is transcoded, as the
/// HL7 v2 and file-drop intakes read Windows-1252; any other charset, or a body that is not
/// UTF-8 when none was declared, is an error saying so: `(true, why)` when it is the
/// charset that is not taken (a `415`), `(false, why)` when the bytes are not what it says
/// (a `400`).
pub fn utf8_body<'b>(
    body: &'b [u8],
    charset: Option<&str>,
) -> Result<std::borrow::Cow<'b, [u8]>, (bool, String)> {
    use std::borrow::Cow;
    let charset = charset
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .filter(|c| !c.is_empty());
    let utf16 = body.starts_with(b"\xFF\xFE") || body.starts_with(b"\xFE\xFF");
    match charset.as_deref() {
        None | Some("utf-8" | "utf8") => {
            if utf16 {
                return Err((true, "the body is UTF-16 (it starts with a UTF-16 byte order mark): FHIR JSON is UTF-8 (FHIR R4 http.html#mime)".to_owned()));
            }
            match std::str::from_utf8(body) {
                Ok(_) => Ok(Cow::Borrowed(body)),
                Err(e) => Err((false, format!(
                    "the body is not UTF-8 (byte {} is not valid): FHIR JSON is UTF-8 (FHIR R4 http.html#mime); send it as UTF-8, or name its charset",
                    e.valid_up_to()
                ))),
            }
        }
        Some(
            "iso-8859-1" | "iso_8859-1" | "latin1" | "latin-1" | "l1" | "windows-1252" | "cp1252"
            | "us-ascii" | "ascii",
        ) => Ok(Cow::Owned(
            body.iter()
                .map(|&b| handover_hl7::windows_1252(b))
                .collect::<String>()
                .into_bytes(),
        )),
        Some(other) => Err((true, format!(
            "charset={other} is not supported: FHIR JSON is UTF-8 (FHIR R4 http.html#mime); send the body as UTF-8"
        ))),
    }
}

/// A text for a CodeableConcept: `text`, else the first coding's display, else its code.
fn concept_text(c: &Value) -> Option<String> {
    str_at(c, "text")
        .or_else(|| {
            arr(c, "coding")
                .iter()
                .find_map(|c| str_at(c, "display").or_else(|| str_at(c, "code")))
        })
        .map(str::to_owned)
}

/// The first business identifier value (use `official`, then `usual`, then the first).
fn business_id(v: &Value) -> Option<&str> {
    let ids = arr(v, "identifier");
    ["official", "usual"]
        .iter()
        .find_map(|u| {
            ids.iter()
                .find(|i| str_at(i, "use") == Some(u))
                .and_then(|i| str_at(i, "value"))
        })
        .or_else(|| ids.iter().find_map(|i| str_at(i, "value")))
}

/// Whether `s` is shaped like an ONS GSS code (a letter and eight digits, e.g. E08000035).
pub fn is_gss_code(s: &str) -> bool {
    s.len() == 9
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().skip(1).all(|b| b.is_ascii_digit())
}

/// An organisation named by a FHIR resource.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Org {
    /// NHS organisation or site (ODS code).
    Ods(String),
    /// Council (GSS code).
    Gss(String),
    /// Anything else (e.g. a care provider by name or CQC id).
    Other(String),
}

impl Org {
    fn from_code(code: &str) -> Org {
        if is_gss_code(code) {
            Org::Gss(code.to_owned())
        } else {
            Org::Ods(code.to_ascii_uppercase())
        }
    }

    fn code(&self) -> &str {
        match self {
            Org::Ods(c) | Org::Gss(c) | Org::Other(c) => c,
        }
    }

    /// The event source of the organisation. A trust's site (an ODS site code: the
    /// trust's three characters and two more, `RX1CC`) speaks for its trust
    /// (`urn:ods:RX1:fhir`), which is what the trust's tokens may assert.
    fn source(&self) -> Option<String> {
        match self {
            Org::Ods(c) if c.len() == 5 && c.is_ascii() => {
                Some(format!("urn:ods:{}:fhir", &c[..3]))
            }
            Org::Ods(c) => Some(format!("urn:ods:{c}:fhir")),
            Org::Gss(c) => Some(format!("urn:gss:{c}:fhir")),
            Org::Other(_) => None,
        }
    }
}

/// Whether `system` names ONS GSS codes: [`GSS_SYSTEM`], also over `https` and with a
/// trailing `/` (senders write it each way; the code's shape is checked by its use).
pub fn is_gss_system(system: &str) -> bool {
    is_system(system, GSS_SYSTEM)
}

/// Whether `system` is the web identifier system `canonical`, written either way senders
/// write it: over `http` or `https`, with or without a trailing `/`, the host in any case.
fn is_system(system: &str, canonical: &str) -> bool {
    fn parts(s: &str) -> Option<(&str, &str)> {
        let s = s.trim();
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        Some(rest.split_once('/').unwrap_or((rest, "")))
    }
    match (parts(system), parts(canonical)) {
        (Some((host, path)), Some((want_host, want_path))) => {
            host.eq_ignore_ascii_case(want_host) && path == want_path
        }
        _ => false,
    }
}

/// Whether `system` names NHS numbers: [`NHS_NUMBER_SYSTEM`] (over `http` too, or with a
/// trailing `/`), the legacy DSTU2 system, or the OID some senders still give. A valid NHS
/// number under a near miss of the system must not become a local id, which no one could
/// open the person's record by.
pub fn is_nhs_number_system(system: &str) -> bool {
    is_system(system, NHS_NUMBER_SYSTEM)
        || is_system(system, LEGACY_NHS_NUMBER_SYSTEM)
        || system.trim() == NHS_NUMBER_OID_SYSTEM
}

/// Whether `system` is the ODS organisation or site code system (either scheme, with or
/// without a trailing `/`).
fn is_ods_system(system: &str) -> bool {
    is_system(system, ODS_ORGANISATION_SYSTEM) || is_system(system, ODS_SITE_SYSTEM)
}

fn org_from_identifier(id: &Value) -> Option<Org> {
    let value = str_at(id, "value")?;
    Some(match str_at(id, "system") {
        Some(s) if is_ods_system(s) => Org::Ods(value.to_ascii_uppercase()),
        Some(s) if is_gss_system(s) => Org::Gss(value.to_ascii_uppercase()),
        Some(_) => Org::Other(value.to_owned()),
        None => Org::from_code(value),
    })
}

/// The caller's organisation as an event source.
fn caller_source(ctx: &FhirContext) -> String {
    Org::from_code(ctx.organisation.trim())
        .source()
        .unwrap_or_default()
}

/// Who an event is about.
#[derive(Debug, Clone)]
enum Who {
    Nhs(NhsNumber),
    Local { system: String, value: String },
}

/// The outcome of resolving a person.
enum Resolved {
    Found(Who),
    /// The referenced Patient is in the Bundle but its identifiers are broken; that entry
    /// reports the problem.
    ReportedElsewhere,
    Missing,
}

fn id_token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `Encounter.class` codes of attendances that are not a hospital stay: an Encounter of one
/// of these records nothing. HL7 v3 ActCode `AMB`, `EMER`, `FLD`, `HH`, `VR`, `OBSENC`
/// (`IMP`, `ACUTE`, `NONAC`, `SS` and `PRENC` are stays, as is an Encounter without a class);
/// the HL7 v2 patient classes (table 0004) `O`, `P`, `R` that engines translating ADT carry
/// over, as the HL7 v2 adapter ignores them ([`crate::hl7::NOT_STAY_CLASSES`]; `E` is kept
/// there too); SNOMED CT 4525004 (emergency department patient visit).
pub const NOT_INPATIENT_CLASSES: &[&str] = &[
    "AMB", "EMER", "FLD", "HH", "VR", "OBSENC", "O", "P", "R", "4525004",
];

/// The code of `Encounter.class`: a Coding in R4; also read from an R5-style list of
/// CodeableConcepts, or a CodeableConcept.
fn encounter_class(r: &Value) -> Option<&str> {
    let class = r.get("class")?;
    let concept = match class {
        Value::Array(a) => a.first()?,
        other => other,
    };
    str_at(concept, "code").or_else(|| {
        arr(concept, "coding")
            .iter()
            .find_map(|c| str_at(c, "code"))
    })
}

/// The logical id of a resource as event ids carry it: an NHS number (as PDS gives a
/// Patient's id) replaced by `nhs-` and 16 hex digits of its SHA-256.
fn logical_id(resource: &Value) -> Option<String> {
    let id = str_at(resource, "id").filter(|s| id_token_ok(s))?;
    Some(if NhsNumber::parse(id).is_ok() {
        format!("nhs-{}", hex::encode(&Sha256::digest(id.as_bytes())[..8]))
    } else {
        id.to_owned()
    })
}

/// `<type>/<id>` of a resource for event ids that do not depend on its version (`-` for
/// no id).
fn resource_stem(resource: &Value) -> String {
    let t = str_at(resource, "resourceType").unwrap_or("Resource");
    format!("{t}/{}", logical_id(resource).as_deref().unwrap_or("-"))
}

/// The class of an Encounter that is an attendance, not a hospital stay (one of
/// [`NOT_INPATIENT_CLASSES`]).
fn attendance_class(r: &Value) -> Option<&str> {
    encounter_class(r).filter(|c| {
        NOT_INPATIENT_CLASSES
            .iter()
            .any(|n| n.eq_ignore_ascii_case(c))
    })
}

/// Whether an Encounter's `partOf` names a parent: a reference or an identifier.
fn is_part_of(part_of: &Value) -> bool {
    part_of.is_object()
        && (str_at(part_of, "reference").is_some() || part_of.get("identifier").is_some())
}

/// Whether `t` is shaped like a FHIR resource type name (`Condition`, `AllergyIntolerance`).
fn is_resource_type_name(t: &str) -> bool {
    t.len() <= 64
        && t.starts_with(|c: char| c.is_ascii_uppercase())
        && t.chars().all(|c| c.is_ascii_alphabetic())
}

/// Why a resource that maps to no events records nothing, for the `information` issue
/// that answers it: an entry read only for references, an Encounter whose class is an
/// attendance, or a status Handover records nothing for.
pub fn nothing_recorded(resource: &Value) -> String {
    let t = str_at(resource, "resourceType").unwrap_or("resource");
    if t == "Bundle" {
        return "accepted: nothing to record (no entry of this Bundle records an event)".into();
    }
    if REFERENCED_ONLY.contains(&t) {
        return format!(
            "accepted: nothing to record (a {t} is read only for what other entries refer to)"
        );
    }
    if !RESOURCE_TYPES.contains(&t) && t != "Bundle" {
        return format!(
            "accepted: nothing to record (Handover records no event from a {t}: only Encounter, ServiceRequest, EpisodeOfCare and Patient are mapped)"
        );
    }
    if t == "ServiceRequest" && resource.get("doNotPerform") == Some(&Value::Bool(true)) {
        return "accepted: nothing to record (the ServiceRequest has doNotPerform: true, a request that the service not be given, which is no referral)".to_owned();
    }
    if t == "Patient" && resource.get("active") == Some(&Value::Bool(false)) {
        return "accepted: nothing to record (the Patient is inactive, active: false: a record no longer in use says nothing about the person; a replaced-by link to another NHS number records the change)".to_owned();
    }
    if t == "Encounter" {
        if let Some(class) = attendance_class(resource) {
            return format!("accepted: nothing to record (the Encounter's class {class} is an attendance, not a hospital stay: Handover records stays only, whatever the status)");
        }
        if resource.get("partOf").is_some_and(is_part_of) {
            return "accepted: nothing to record (the Encounter is part of another, its hospital stay (partOf): a ward stay or episode within a stay is not a stay of its own, and the stay's own Encounter records it)".to_owned();
        }
    }
    match str_at(resource, "status").filter(|s| id_token_ok(s)) {
        Some(status) => format!(
            "accepted: nothing to record (Handover records no event for a {t} with status {status})"
        ),
        None => "accepted: nothing to record (Handover records no event for this resource in its current status)".to_owned(),
    }
}

/// The base of a resource's event ids: `<type>/<id>/_history/<versionId>`, else a content hash.
/// A logical id that is an NHS number (as PDS gives a Patient) is replaced by `nhs-` and 16
/// hex digits of its SHA-256, so that no NHS number is carried in an event id (ids appear in
/// logs and in OperationOutcome diagnostics).
pub fn event_id_base(resource: &Value) -> String {
    let t = str_at(resource, "resourceType").unwrap_or("Resource");
    let id = logical_id(resource);
    let id = id.as_deref();
    let vid = resource
        .get("meta")
        .and_then(|m| str_at(m, "versionId"))
        .filter(|s| id_token_ok(s));
    match (id, vid) {
        (Some(id), Some(v)) => format!("{t}/{id}/_history/{v}"),
        // Not a hash of the whole resource: its references to other entries are the
        // Bundle's `urn:uuid` fullUrls, which senders mint afresh for each message, so a
        // retried Bundle looked new (and a retried original undid a later correction).
        // The event's own digest (see `event`) tells facts apart; `meta.lastUpdated` tells
        // a version that says again what an earlier one said from a resend of it.
        (id, _) => {
            let updated = resource
                .get("meta")
                .and_then(|m| str_at(m, "lastUpdated"))
                .map(normalised_instant)
                .unwrap_or_else(|| "-".to_owned());
            format!(
                "{t}/{}/_hash/{}",
                id.unwrap_or("-"),
                hex::encode(&Sha256::digest(updated.as_bytes())[..8])
            )
        }
    }
}

/// `meta.lastUpdated` as the event id hashes it: the instant in UTC, RFC 3339 with `Z` and
/// the fraction only when it is not zero (`2026-11-20T09:15:00Z`,
/// `2026-11-20T09:15:00.123Z`), so that an engine re-serialising the same instant
/// (`…09:15:00.000+00:00`) resends, not a new version. The usual `Z` forms are their own
/// normal form and keep the ids they had when the string itself was hashed; a value that
/// does not parse is hashed as it is.
fn normalised_instant(updated: &str) -> String {
    match Timestamp::parse(updated) {
        Ok(t) => {
            t.0.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        }
        Err(_) => updated.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The mapping
// ---------------------------------------------------------------------------------------------

/// Translation state for one resource: where issues point and what was found.
struct Cx<'a> {
    ctx: &'a FhirContext,
    bundle: Option<&'a BundleIndex<'a>>,
    /// FHIRPath prefix replacing the resource type: empty for a posted resource, else
    /// `Bundle.entry[i].resource`.
    root: String,
    rtype: String,
    issues: Vec<Issue>,
}

impl<'a> Cx<'a> {
    fn new(ctx: &'a FhirContext, bundle: Option<&'a BundleIndex<'a>>, root: String) -> Cx<'a> {
        Cx {
            ctx,
            bundle,
            root,
            rtype: String::new(),
            issues: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> String {
        let base = if self.root.is_empty() {
            self.rtype.as_str()
        } else {
            self.root.as_str()
        };
        if rel.is_empty() {
            base.to_owned()
        } else {
            format!("{base}.{rel}")
        }
    }

    fn issue(&mut self, code: IssueCode, rel: &str, msg: impl Into<String>) {
        let expression = Some(self.path(rel));
        self.issues.push(Issue::error(code, expression, msg));
    }

    fn finish(self, events: Vec<Event>) -> Result<Vec<Event>, Vec<Issue>> {
        if self.issues.is_empty() {
            Ok(events)
        } else {
            Err(self.issues)
        }
    }

    fn resource(&mut self, r: &Value) -> Vec<Event> {
        if !r.is_object() {
            self.issues.push(Issue::error(
                IssueCode::Structure,
                None,
                "the body must be a JSON object (a FHIR resource)",
            ));
            return Vec::new();
        }
        let Some(t) = str_at(r, "resourceType") else {
            self.rtype = "Resource".into();
            self.issue(
                IssueCode::Required,
                "resourceType",
                "resourceType is required",
            );
            return Vec::new();
        };
        self.rtype = t.to_owned();
        if RESOURCE_TYPES.contains(&t) {
            let modified = self.modifier_extensions(r, "");
            if self.implicit_rules(r, "") || modified {
                return Vec::new();
            }
        }
        let before = self.issues.len();
        self.check_shapes(r, "", RESOURCE);
        self.check_shapes(r, "", shapes(t));
        if self.issues.len() > before {
            return Vec::new();
        }
        match t {
            "Encounter" => self.encounter(r),
            "ServiceRequest" => self.service_request(r),
            "EpisodeOfCare" => self.episode_of_care(r),
            "Patient" => self.patient(r),
            other => {
                self.issue(
                    IssueCode::NotSupported,
                    "",
                    format!("resource type {other} is not supported: send Encounter, ServiceRequest, EpisodeOfCare or Patient"),
                );
                Vec::new()
            }
        }
    }

    /// Refuses every `modifierExtension` in `v` (at `rel`), contained resources included:
    /// Handover understands none, and FHIR R4 (extensibility.html#modifierExtension) says a
    /// modifier extension changes the meaning of what holds it, so an application that does
    /// not know one must not process that element as if it were absent. Whether any was found.
    fn modifier_extensions(&mut self, v: &Value, rel: &str) -> bool {
        let join = |k: &str| {
            if rel.is_empty() {
                k.to_owned()
            } else {
                format!("{rel}.{k}")
            }
        };
        let mut found = false;
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    if k == "modifierExtension" {
                        for (i, x) in child
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or_default()
                            .iter()
                            .enumerate()
                        {
                            let url = str_at(x, "url").unwrap_or("(no url)");
                            self.issue(
                                IssueCode::NotSupported,
                                &format!("{}[{i}]", join(k)),
                                format!("the modifier extension {url} is not understood: a modifier extension changes the meaning of the element holding it, so Handover refuses it rather than record the element as if it were absent (FHIR R4 extensibility.html#modifierExtension)"),
                            );
                            found = true;
                        }
                    } else {
                        found |= self.modifier_extensions(child, &join(k));
                    }
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    found |= self.modifier_extensions(child, &format!("{rel}[{i}]"));
                }
            }
            _ => {}
        }
        found
    }

    /// Refuses `implicitRules` on `v` (at `rel`): a modifier element (FHIR R4
    /// resource.html#implicitRules) naming rules the content was made under, which "must be
    /// understood" to read it safely; Handover knows none. Whether it was there.
    fn implicit_rules(&mut self, v: &Value, rel: &str) -> bool {
        let Some(rules) = v.get("implicitRules").filter(|r| !r.is_null()) else {
            return false;
        };
        let url = rules.as_str().unwrap_or("(not a uri)").to_owned();
        let at = if rel.is_empty() {
            "implicitRules".to_owned()
        } else {
            format!("{rel}.implicitRules")
        };
        self.issue(
            IssueCode::NotSupported,
            &at,
            format!("implicitRules {url} are not understood: content made under rules Handover does not know cannot be read safely (FHIR R4 resource.html#implicitRules)"),
        );
        true
    }

    /// Checks the elements of `v` (at `rel`) that `shapes` lists, and theirs, for their
    /// JSON kind (see [`Shape`]). A `null` is let pass: it says nothing either way.
    fn check_shapes(&mut self, v: &Value, rel: &str, shapes: &[Shape]) {
        let join = |k: &str| {
            if rel.is_empty() {
                k.to_owned()
            } else {
                format!("{rel}.{k}")
            }
        };
        for shape in shapes {
            let Some(x) = v.get(shape.name) else { continue };
            let here = join(shape.name);
            match (x, shape.many) {
                (Value::Null, _) => {}
                (Value::Array(items), true) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check_shape(item, &format!("{here}[{i}]"), shape);
                    }
                }
                (Value::Array(_), false) => self.issue(
                    IssueCode::Structure,
                    &here,
                    format!(
                        "{} is a single {} ({}), not an array",
                        shape.name,
                        shape.fhir_type,
                        kind_wanted(shape)
                    ),
                ),
                (one, _) => self.check_shape(one, &here, shape),
            }
        }
    }

    /// Checks one value of `shape` (an item, for a repeating element).
    fn check_shape(&mut self, x: &Value, here: &str, shape: &Shape) {
        match (shape.parts, x) {
            (_, Value::Null) => {}
            (Some(parts), Value::Object(_)) => self.check_shapes(x, here, parts),
            (None, Value::String(_)) => {}
            _ => {
                // The value itself is never quoted: it may be an NHS number.
                let name = here.rsplit('.').next().unwrap_or(here);
                self.issue(
                    IssueCode::Structure,
                    here,
                    format!(
                        "{name} must be {} {} ({}), not {}",
                        article(shape.fhir_type),
                        shape.fhir_type,
                        kind_wanted(shape),
                        json_kind(x)
                    ),
                );
            }
        }
    }

    // --- values ---------------------------------------------------------------------------

    fn timestamp(&mut self, v: &Value, rel: &str) -> Option<Timestamp> {
        let s = str_at(v, rel.rsplit('.').next().unwrap_or(rel))?;
        match Timestamp::parse(s) {
            Ok(t) => Some(t),
            Err(_) => {
                self.issue(IssueCode::Value, rel, format!("{s:?} is not a FHIR dateTime with a time (e.g. 2026-11-20T09:14:00Z; no offset means UK local time)"));
                None
            }
        }
    }

    fn date(&mut self, s: &str, rel: &str) -> Option<Date> {
        match Date::parse(s) {
            Ok(d) => Some(d),
            Err(_) => {
                self.issue(
                    IssueCode::Value,
                    rel,
                    format!("{s:?} is not a full FHIR date (YYYY-MM-DD) or dateTime"),
                );
                None
            }
        }
    }

    /// FHIR invariant per-1 on the Period at `rel`: its start is not after its end. Ends
    /// given as a date alone cover the whole day, so they are compared by date (London).
    fn period_in_order(&mut self, period: &Value, rel: &str) {
        let (Some(start), Some(end)) = (str_at(period, "start"), str_at(period, "end")) else {
            return;
        };
        let (Ok(s), Ok(e)) = (Timestamp::parse(start), Timestamp::parse(end)) else {
            return;
        };
        let reversed = if start.len() <= 10 || end.len() <= 10 {
            e.london_date() < s.london_date()
        } else {
            e < s
        };
        if reversed {
            self.issue(
                IssueCode::Value,
                rel,
                format!("{rel}.end ({end}) is before {rel}.start ({start}): FHIR invariant per-1 says a Period's start SHALL have a lower value than its end"),
            );
        }
    }

    fn last_updated(&mut self, r: &Value) -> Option<Timestamp> {
        let m = r.get("meta")?;
        self.timestamp(m, "meta.lastUpdated")
    }

    fn status(&mut self, r: &Value) -> Option<String> {
        match (str_at(r, "status"), r.get("status")) {
            (Some(s), _) => Some(s.to_owned()),
            (None, Some(v)) if !v.is_null() && !v.is_string() => {
                self.issue(
                    IssueCode::Structure,
                    "status",
                    format!(
                        "status must be a code (a JSON string such as \"in-progress\"), not {}",
                        json_kind(v)
                    ),
                );
                None
            }
            (None, _) => {
                self.issue(IssueCode::Required, "status", "status is required");
                None
            }
        }
    }

    /// The resource a reference names: `#id` one contained in `container` (the resource
    /// holding the reference), else one in the Bundle (by `fullUrl`, `Type/id`, or either
    /// with a version).
    fn target<'v>(&self, container: &'v Value, reference: &str) -> Option<&'v Value>
    where
        'a: 'v,
    {
        match reference.strip_prefix('#') {
            Some(id) => arr(container, "contained")
                .iter()
                .find(|c| str_at(c, "id") == Some(id)),
            None => self.bundle.and_then(|b| b.resolve(reference)),
        }
    }

    /// The organisation a reference in `container` names: its identifier, or an
    /// Organization contained in `container` or in the Bundle.
    fn org(&self, container: &Value, reference: Option<&Value>) -> Option<Org> {
        let reference = reference?;
        if let Some(o) = reference.get("identifier").and_then(org_from_identifier) {
            return Some(o);
        }
        if let Some(res) = str_at(reference, "reference").and_then(|r| self.target(container, r)) {
            let ids = arr(res, "identifier");
            let mut found: Vec<Org> = ids.iter().filter_map(org_from_identifier).collect();
            found.sort_by_key(|o| matches!(o, Org::Other(_)));
            if let Some(o) = found.into_iter().next() {
                return Some(o);
            }
            if let Some(name) = str_at(res, "name") {
                return Some(Org::Other(name.to_owned()));
            }
        }
        str_at(reference, "display").map(|d| Org::Other(d.to_owned()))
    }

    fn source_of(&self, org: Option<&Org>) -> String {
        org.and_then(Org::source)
            .unwrap_or_else(|| caller_source(self.ctx))
    }

    /// The person a `subject`/`patient` reference names: an NHS number given as its
    /// identifier; else the referenced Patient's NHS number (contained or in the Bundle);
    /// else a local identifier given as its identifier; else the referenced Patient's
    /// local id. (Contract §2: the subject is the NHS number when known. EPRs commonly send
    /// both a reference and their MRN.)
    fn person(&mut self, r: &Value, field: &str) -> Option<Who> {
        let reference = match r.get(field) {
            Some(v) if v.is_object() => v,
            Some(v) if !v.is_null() => {
                self.issue(
                    IssueCode::Structure,
                    field,
                    format!(
                        "{field} is a single Reference (a JSON object), not {}",
                        json_kind(v)
                    ),
                );
                return None;
            }
            _ => {
                self.issue(
                    IssueCode::Required,
                    field,
                    format!("{field} is required: an identifier with system {NHS_NUMBER_SYSTEM}, or a reference to a Patient in the same Bundle or contained in the resource"),
                );
                return None;
            }
        };
        let mut local = None;
        let mut named = None;
        match reference.get("identifier") {
            None | Some(Value::Null) => {}
            Some(id) if !id.is_object() => {
                self.issue(
                    IssueCode::Structure,
                    &format!("{field}.identifier"),
                    format!(
                        "Reference.identifier is a single Identifier (a JSON object), not {}",
                        json_kind(id)
                    ),
                );
                return None;
            }
            Some(id) => match (str_at(id, "system"), str_at(id, "value")) {
                (Some(system), Some(v)) if is_nhs_number_system(system) => {
                    match NhsNumber::parse(v) {
                        Ok(n) => named = Some(n),
                        Err(e) => {
                            self.issue(
                                IssueCode::Value,
                                &format!("{field}.identifier.value"),
                                format!("not a valid NHS number: {e}"),
                            );
                            return None;
                        }
                    }
                }
                (Some(system), Some(v)) => {
                    local = Some(Who::Local {
                        system: system.to_owned(),
                        value: v.to_owned(),
                    })
                }
                (None, Some(_)) => {
                    self.issue(
                        IssueCode::Required,
                        &format!("{field}.identifier.system"),
                        "the identifier needs a system (the NHS number system or a local one)",
                    );
                    return None;
                }
                (_, None) => {}
            },
        }
        let rf = str_at(reference, "reference");
        if let Some(n) = named {
            // The identifier names the person; a reference beside it must name the same one
            // (FHIR R4 references.html: both identify the same resource), or which of the
            // two is meant cannot be known.
            let other = match self.referenced_nhs_number(r, rf) {
                Some(Resolved::Found(Who::Nhs(m))) => Some(m),
                _ => None,
            };
            if other.is_some_and(|m| m != n) {
                self.issue(
                    IssueCode::Invalid,
                    field,
                    format!("{field}.identifier and {field}.reference name different patients (two different NHS numbers): send one, or make them agree"),
                );
                return None;
            }
            return Some(Who::Nhs(n));
        }
        // A conditional reference (FHIR R4 http.html#trules), as integration engines write
        // it when they hold no logical id: `Patient?identifier=<system>|<value>` names the
        // person as `identifier` does, whether or not the Patient is in the Bundle.
        if local.is_none() {
            if let Some((system, value)) = rf.and_then(conditional_identifier) {
                if is_nhs_number_system(&system) {
                    return match NhsNumber::parse(&value) {
                        Ok(n) => Some(Who::Nhs(n)),
                        Err(e) => {
                            self.issue(
                                IssueCode::Value,
                                &format!("{field}.reference"),
                                format!("the conditional reference's identifier is not a valid NHS number: {e}"),
                            );
                            None
                        }
                    };
                }
                local = Some(Who::Local { system, value });
            }
        }
        // A reference to the Patient on PDS, whose logical id is the NHS number.
        if local.is_none() {
            if let Some(n) = rf.and_then(pds_nhs_number) {
                return Some(Who::Nhs(n));
            }
        }
        // A Patient contained in the resource (`"reference": "#p1"`).
        let contained = rf.and_then(|rf| rf.strip_prefix('#')).and_then(|id| {
            arr(r, "contained").iter().enumerate().find(|(_, c)| {
                str_at(c, "id") == Some(id) && str_at(c, "resourceType") == Some("Patient")
            })
        });
        let resolved = match (contained, rf, self.bundle) {
            (Some((_, p)), _, _) => self.patient_person(r, p),
            (None, Some(rf), Some(b)) => match b.resolve(rf) {
                Some(p) if str_at(p, "resourceType") == Some("Patient") => {
                    self.patient_person(p, p)
                }
                _ => Resolved::Missing,
            },
            _ => Resolved::Missing,
        };
        // The local identifier stands unless the reference leads to an NHS number.
        match (resolved, local) {
            (Resolved::Found(w @ Who::Nhs(_)), _) => Some(w),
            (_, Some(local)) => Some(local),
            (Resolved::Found(w), None) => Some(w),
            (_, None) if contained.is_some() => {
                let i = contained.map_or(0, |(i, _)| i);
                self.issue(
                    IssueCode::Value,
                    &format!("contained[{i}].identifier"),
                    format!("the contained Patient needs a valid NHS number (system {NHS_NUMBER_SYSTEM}) or another identifier"),
                );
                None
            }
            (Resolved::ReportedElsewhere, None) => None,
            (Resolved::Missing, None) => {
                let why = if self.bundle.is_some() {
                    "names no Patient of this Bundle"
                } else {
                    "has no identifier (a reference alone can only be resolved inside a Bundle)"
                };
                self.issue(
                    IssueCode::Required,
                    &format!("{field}.identifier"),
                    format!(
                        "{field} {why}: give {field}.identifier with system {NHS_NUMBER_SYSTEM}"
                    ),
                );
                None
            }
        }
    }

    /// The NHS number a Patient reference `rf` (in `r`) leads to, by any of the ways
    /// [`Cx::person`] reads one: a conditional reference, a PDS address, a contained Patient
    /// or one in the Bundle. `None` when it leads nowhere Handover can see.
    fn referenced_nhs_number(&self, r: &Value, rf: Option<&str>) -> Option<Resolved> {
        let rf = rf?;
        if let Some((system, value)) = conditional_identifier(rf) {
            return is_nhs_number_system(&system)
                .then(|| NhsNumber::parse(&value).ok())
                .flatten()
                .map(|n| Resolved::Found(Who::Nhs(n)));
        }
        if let Some(n) = pds_nhs_number(rf) {
            return Some(Resolved::Found(Who::Nhs(n)));
        }
        if let Some(id) = rf.strip_prefix('#') {
            let p = arr(r, "contained").iter().find(|c| {
                str_at(c, "id") == Some(id) && str_at(c, "resourceType") == Some("Patient")
            })?;
            return Some(self.patient_person(r, p));
        }
        let p = self.bundle?.resolve(rf)?;
        (str_at(p, "resourceType") == Some("Patient")).then(|| self.patient_person(p, p))
    }

    /// The business id of a referenced resource: its identifier, or that of the resource
    /// contained in `container` or in the Bundle, or the id part of the reference.
    fn referenced_id(&self, container: &Value, reference: Option<&Value>) -> Option<String> {
        let reference = reference?;
        if let Some(v) = reference.get("identifier").and_then(|i| str_at(i, "value")) {
            return Some(v.to_owned());
        }
        let rf = str_at(reference, "reference")?;
        if let Some(res) = self.target(container, rf) {
            return business_id(res)
                .or_else(|| str_at(res, "id"))
                .map(str::to_owned);
        }
        if rf.starts_with("urn:") || rf.starts_with('#') {
            return None;
        }
        without_version(rf).rsplit('/').next().map(str::to_owned)
    }

    /// Builds and validates one event; problems become issues on the resource.
    fn event(
        &mut self,
        base: &str,
        ty: &str,
        time: Timestamp,
        source: &str,
        who: &Who,
        mut data: Value,
    ) -> Option<Event> {
        let name = ty.rsplit('.').next().unwrap_or(ty);
        let mut ce = json!({
            "specversion": "1.0",
            "source": source,
            "type": format!("handover.{ty}.v1"),
            "time": time.to_rfc3339(),
        });
        let mut digest = Sha256::new();
        match who {
            Who::Nhs(n) => {
                ce["subject"] = n.as_string().into();
                digest.update(n.as_string().as_bytes());
            }
            Who::Local { system, value } => {
                if ty != "person.identified" {
                    data["local_id"] = json!({ "system": system, "value": value });
                }
                digest.update(system.as_bytes());
                digest.update(b"|");
                digest.update(value.as_bytes());
            }
        }
        // The id ends in a digest of the person and what the event says, so that two
        // different facts never share an id: another patient's resource with the same
        // logical id and version (two systems posting as one trust, small sequential ids,
        // a visit number reused as the id) is stored, not dropped as "already stored". A
        // resend says the same and keeps its id.
        digest.update(b"#");
        digest.update(serde_json::to_vec(&data).unwrap_or_default());
        let digest = hex::encode(&digest.finalize()[..6]);
        ce["id"] = format!("{base}#{name}.{digest}").into();
        ce["data"] = data;
        match Event::from_json(ce) {
            Ok(e) => Some(e),
            Err(errs) => {
                for f in errs.0 {
                    self.issue(
                        IssueCode::Invalid,
                        "",
                        format!(
                            "the {ty} event built from this resource is invalid at {}: {}",
                            f.pointer, f.message
                        ),
                    );
                }
                None
            }
        }
    }

    // --- Encounter --------------------------------------------------------------------------

    fn encounter(&mut self, r: &Value) -> Vec<Event> {
        let status = self.status(r);
        let encounter_id = business_id(r)
            .or_else(|| str_at(r, "id"))
            .map(str::to_owned);
        if encounter_id.is_none() {
            self.issue(
                IssueCode::Required,
                "identifier",
                "the Encounter needs an identifier (the spell number) or an id",
            );
        }
        let who = self.person(r, "subject");
        let provider = self.org(r, r.get("serviceProvider"));
        let source = self.source_of(provider.as_ref());
        let base = event_id_base(r);
        let period = r.get("period").cloned().unwrap_or(Value::Null);
        let kind = match status.as_deref() {
            // An attendance that is not a hospital stay (outpatient, emergency department,
            // virtual, home, field, observation): nothing for a discharge to follow.
            _ if attendance_class(r).is_some() => "none",
            // A ward stay or consultant episode within a hospital stay (`partOf` the spell):
            // the spell is the stay, and its own Encounter records it. Taken as one, the
            // child would be a second, phantom stay that never ends when the spell does.
            _ if self.within_a_stay(r) => "none",
            // On leave (a night at home before discharge, say) the patient still holds the
            // bed: the stay is as in progress, and one first seen on leave is recorded.
            Some("in-progress" | "arrived" | "onleave") => "admitted",
            Some("finished") => "discharged",
            Some("cancelled" | "entered-in-error") => "cancelled",
            Some("planned" | "triaged" | "unknown") => "none",
            Some(other) => {
                self.issue(
                    IssueCode::CodeInvalid,
                    "status",
                    format!("{other:?} is not an Encounter status"),
                );
                "none"
            }
            None => "none",
        };
        // The site is an ODS code: a provider named only by display text (or by a code of
        // another system) is the caller's organisation, as it is for the event source.
        let site = provider
            .as_ref()
            .filter(|o| !matches!(o, Org::Other(_)))
            .map(|o| o.code().to_owned())
            .unwrap_or_else(|| self.ctx.organisation.trim().to_ascii_uppercase());
        if kind != "none" {
            self.period_in_order(&period, "period");
        }
        // The locations that can name the ward, and their positions in `location[]`.
        let (idx, locations) = ward_locations(r, self.bundle);
        let mut out = Vec::new();
        match kind {
            "admitted" => {
                let admitted_at = self.timestamp(&period, "period.start");
                if str_at(&period, "start").is_none() {
                    self.issue(IssueCode::Required, "period.start", "period.start (the admission time) is required for an in-progress Encounter");
                }
                // `location.status` is optional: when no location has one, a period that has
                // ended is a completed stay on that ward, one only started the current ward.
                let statuses = locations.iter().any(|l| l.get("status").is_some());
                fn location_state(l: &Value, statuses: bool) -> Option<&str> {
                    if statuses {
                        return str_at(l, "status");
                    }
                    let p = l.get("period")?;
                    match (str_at(p, "start"), str_at(p, "end")) {
                        (_, Some(_)) => Some("completed"),
                        (Some(_), None) => Some("active"),
                        _ => None,
                    }
                }
                let active = locations
                    .iter()
                    .rposition(|l| location_state(l, statuses) == Some("active"));
                // The ward on admission: the location entered first (by period.start, else the
                // first listed); a later move is the `transferred` event below.
                let first = locations
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, l)| {
                        (
                            l.get("period")
                                .and_then(|p| str_at(p, "start"))
                                .and_then(|s| Timestamp::parse(s).ok())
                                .map(|t| t.unix_millis())
                                .unwrap_or(i64::MAX),
                            *i,
                        )
                    })
                    .map(|(i, _)| i);
                let ward = first.and_then(|i| location_name(locations[i], r, self.bundle));
                let method =
                    match extension_coding(r, ADMISSION_METHOD_URL, "UKCore-AdmissionMethod", |c| {
                        is_admission_method_code(c).then(|| admission_method(c))
                    }) {
                        Some(Coded::Understood(m)) => Some(m),
                        // A code of the extension's own system Handover does not map.
                        Some(Coded::Unknown(..)) => Some("other"),
                        None => None,
                    };
                // A ward move: an active location after a completed one.
                let transfer = active.and_then(|a| {
                    let prev = locations
                        .iter()
                        .enumerate()
                        .filter(|(i, l)| {
                            *i != a && location_state(l, statuses) == Some("completed")
                        })
                        .max_by_key(|(i, l)| {
                            (
                                l.get("period")
                                    .and_then(|p| str_at(p, "end"))
                                    .unwrap_or("")
                                    .to_owned(),
                                *i,
                            )
                        })?;
                    Some((a, prev.0))
                });
                let transfer_at = match transfer {
                    Some((a, _)) => match locations[a].get("period") {
                        Some(p) if p.get("start").is_some() => {
                            self.timestamp(p, &format!("location[{}].period.start", idx[a]))
                        }
                        _ => None,
                    },
                    None => None,
                };
                let updated = self.last_updated(r);
                if let (Some(id), Some(who), Some(at)) = (&encounter_id, &who, admitted_at) {
                    let mut d =
                        json!({ "encounter_id": id, "site": site, "admitted_at": at.to_rfc3339() });
                    if let Some(w) = &ward {
                        d["ward"] = w.clone().into();
                    }
                    if let Some(m) = method {
                        d["admission_method"] = m.into();
                    }
                    out.extend(self.event(&base, "discharge.admitted", at, &source, who, d));
                    if let Some((a, p)) = transfer {
                        match location_name(locations[a], r, self.bundle) {
                            Some(new_ward) => {
                                let mut d = json!({ "encounter_id": id, "ward": new_ward });
                                if let Some(pw) = location_name(locations[p], r, self.bundle) {
                                    d["previous_ward"] = pw.into();
                                }
                                if let Some(t) = transfer_at {
                                    d["at"] = t.to_rfc3339().into();
                                }
                                let time = transfer_at.or(updated).unwrap_or(at);
                                out.extend(self.event(
                                    &base,
                                    "discharge.transferred",
                                    time,
                                    &source,
                                    who,
                                    d,
                                ));
                            }
                            None => self.issue(
                                IssueCode::Required,
                                &format!("location[{}].location", idx[a]),
                                "the active location needs a display or identifier (the ward)",
                            ),
                        }
                    }
                }
            }
            "discharged" => {
                if str_at(&period, "end").is_none() {
                    self.issue(
                        IssueCode::Required,
                        "period.end",
                        "period.end (the discharge time) is required for a finished Encounter",
                    );
                }
                let at = self.timestamp(&period, "period.end");
                let method =
                    match extension_coding(r, DISCHARGE_METHOD_URL, "UKCore-DischargeMethod", |c| {
                        match c.parse::<u8>() {
                            Ok(m @ 1..=5) => Some(Some(m)),
                            // UK Core's England code system (1.1.0) splits the NHS Data
                            // Dictionary's 2 into 6 (discharged themselves) and 7 (by a
                            // relative or advocate): both are the catalogue's 2.
                            Ok(6 | 7) => Some(Some(2)),
                            // NHS Data Dictionary 8 "not applicable" and 9 "not known": no method.
                            Ok(8 | 9) => Some(None),
                            _ => None,
                        }
                    }) {
                        Some(Coded::Understood(m)) => m,
                        Some(Coded::Unknown(c, path)) => {
                            self.issue(
                                IssueCode::CodeInvalid,
                                &path,
                                format!(
                                "{c:?} is not a UK Core discharge method (1 to 7, or 8/9 for none)"
                            ),
                            );
                            None
                        }
                        None => None,
                    };
                let destination = self.discharge_destination(r);
                if let (Some(id), Some(who), Some(at)) = (&encounter_id, &who, at) {
                    let mut d = json!({ "encounter_id": id, "discharged_at": at.to_rfc3339() });
                    if let Some(m) = method {
                        d["method"] = m.into();
                    }
                    if let Some(dest) = destination {
                        d["destination"] = dest.into();
                    }
                    // Where and when the stay began, for a stay admitted before Handover saw
                    // it: period.start (when readable), the site, the ward discharged from.
                    if let Some(start) =
                        str_at(&period, "start").and_then(|s| Timestamp::parse(s).ok())
                    {
                        d["admitted_at"] = start.to_rfc3339().into();
                    }
                    d["site"] = site.into();
                    if let Some(w) = discharge_ward(&locations, r, self.bundle) {
                        d["ward"] = w.into();
                    }
                    out.extend(self.event(&base, "discharge.discharged", at, &source, who, d));
                }
            }
            "cancelled" => {
                let time = self.last_updated(r).unwrap_or(self.ctx.received_at);
                if let (Some(id), Some(who)) = (&encounter_id, &who) {
                    out.extend(self.event(
                        &base,
                        "discharge.admission-cancelled",
                        time,
                        &source,
                        who,
                        json!({ "encounter_id": id }),
                    ));
                }
            }
            _ => {}
        }
        out
    }

    /// Whether an Encounter is part of another (`partOf`) that is not known to be an
    /// attendance: a ward stay or consultant episode of a hospital spell. An admission
    /// modelled as part of its emergency department attendance (the parent, in the Bundle
    /// or contained, has an attendance class) is a stay of its own.
    fn within_a_stay(&self, r: &Value) -> bool {
        let Some(part_of) = r.get("partOf").filter(|p| is_part_of(p)) else {
            return false;
        };
        let parent = str_at(part_of, "reference").and_then(|re| self.target(r, re));
        parent.is_none_or(|p| attendance_class(p).is_none())
    }

    fn discharge_destination(&mut self, r: &Value) -> Option<&'static str> {
        let disposition = r.get("hospitalization")?.get("dischargeDisposition")?;
        let codings = arr(disposition, "coding");
        // The first coding that is understood; codings of other systems (SNOMED CT, say)
        // may come first and are passed over. An unknown code in a system of discharge
        // destinations or dispositions (or in none) is an error when nothing is understood.
        let mut unknown = None;
        for (j, c) in codings.iter().enumerate() {
            let Some(code) = str_at(c, "code") else {
                continue;
            };
            let system = str_at(c, "system").unwrap_or("").to_ascii_lowercase();
            if system.contains("wales") {
                // Wales's discharge destination codes (in UK Core's value set beside
                // England's) are two digits too, with other meanings (20 a care home, 55 a
                // transfer within the health board): not read by England's table.
                continue;
            }
            if code.len() == 2 && code.bytes().all(|b| b.is_ascii_digit()) {
                // 98 "not applicable" (the spell has not finished) and 99 "not known" are
                // understood: the discharge is recorded without a destination, as the HL7 v2
                // adapter does with PV1-37 99.
                if matches!(code, "98" | "99") {
                    return None;
                }
                if let Some(d) = crate::hl7::discharge_destination(code) {
                    return Some(d);
                }
            } else if let Some((_, d)) = DISCHARGE_DISPOSITIONS
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(code))
            {
                return Some(d);
            }
            if system.is_empty()
                || system.contains("dischargedestination")
                || system.contains("discharge-destination")
                || system.contains("discharge-disposition")
            {
                unknown.get_or_insert((j, code));
            }
        }
        if let Some((j, code)) = unknown {
            self.issue(
                IssueCode::CodeInvalid,
                &format!("hospitalization.dischargeDisposition.coding[{j}].code"),
                format!("{code:?} is not a known discharge destination (an NHS Data Dictionary code such as 19, or an HL7 discharge-disposition code such as home)"),
            );
        }
        None
    }

    // --- ServiceRequest ---------------------------------------------------------------------

    fn service_request(&mut self, r: &Value) -> Vec<Event> {
        if r.get("doNotPerform") == Some(&Value::Bool(true)) {
            // A request that the service NOT be given (a modifier element): no referral.
            return Vec::new();
        }
        let status = self.status(r);
        let referral_id = business_id(r)
            .or_else(|| str_at(r, "id"))
            .map(str::to_owned);
        if referral_id.is_none() {
            self.issue(
                IssueCode::Required,
                "identifier",
                "the ServiceRequest needs an identifier (the referral id) or an id",
            );
        }
        let who = self.person(r, "subject");
        let base = event_id_base(r);
        let requester = self.org(r, r.get("requester"));
        let performers: Vec<(usize, Org)> = arr(r, "performer")
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.org(r, Some(p)).map(|o| (i, o)))
            .collect();
        let council = performers.iter().find(|(_, o)| matches!(o, Org::Gss(_)));
        let updated = self.last_updated(r);
        let mut out = Vec::new();
        let note = arr(r, "note")
            .iter()
            .find_map(|n| str_at(n, "text"))
            .map(str::to_owned);
        match status.as_deref() {
            Some("active") => {
                match str_at(r, "intent") {
                    Some("order" | "original-order" | "proposal" | "plan" | "directive") => {}
                    Some(other) => self.issue(
                        IssueCode::NotSupported,
                        "intent",
                        format!("intent {other:?} is not a referral: use order or proposal"),
                    ),
                    None => self.issue(
                        IssueCode::Required,
                        "intent",
                        "intent is required (order or proposal)",
                    ),
                }
                if council.is_none() {
                    let why = if arr(r, "performer").is_empty() {
                        "the council referred to is required"
                    } else {
                        "no performer is a council"
                    };
                    self.issue(
                        IssueCode::Required,
                        "performer",
                        format!("{why}: give a performer with an identifier of system {GSS_SYSTEM} (its GSS code), or a reference to an Organization carrying one (contained or in the Bundle)"),
                    );
                }
                let from_org = requester
                    .as_ref()
                    .filter(|o| !matches!(o, Org::Other(_)))
                    .map(|o| o.code().to_owned())
                    .unwrap_or_else(|| self.ctx.organisation.trim().to_ascii_uppercase());
                let urgency = match str_at(r, "priority") {
                    // ServiceRequest.priority's meaning if missing: normal priority.
                    None => Some("routine"),
                    Some("routine") => Some("routine"),
                    Some("urgent" | "asap" | "stat") => Some("urgent"),
                    Some(other) => {
                        self.issue(
                            IssueCode::CodeInvalid,
                            "priority",
                            format!(
                                "{other:?} is not a request priority (routine, urgent, asap, stat)"
                            ),
                        );
                        None
                    }
                };
                let proposed = match (
                    str_at(r, "occurrenceDateTime"),
                    r.get("occurrencePeriod").and_then(|p| str_at(p, "start")),
                ) {
                    (Some(s), _) => self.date(s, "occurrenceDateTime"),
                    (None, Some(s)) => self.date(s, "occurrencePeriod.start"),
                    _ => None,
                };
                let authored = match r.get("authoredOn") {
                    Some(_) => self.timestamp(r, "authoredOn"),
                    None => None,
                };
                let encounter_id = self.referenced_id(r, r.get("encounter"));
                let reason = arr(r, "reasonCode").iter().find_map(concept_text).or(note);
                if let (Some(id), Some(who), Some((_, council))) = (&referral_id, &who, council) {
                    let mut d = json!({ "referral_id": id, "to_council": council.code(), "from_org": from_org });
                    if let Some(e) = encounter_id {
                        d["encounter_id"] = e.into();
                    }
                    if let Some(reason) = reason {
                        d["reason"] = reason.into();
                    }
                    if let Some(u) = urgency {
                        d["urgency"] = u.into();
                    }
                    if let Some(p) = proposed {
                        d["proposed_discharge_date"] = p.to_string().into();
                    }
                    let time = authored.or(updated).unwrap_or(self.ctx.received_at);
                    let source = self.source_of(requester.as_ref());
                    out.extend(self.event(&base, "referral.sent", time, &source, who, d));
                }
            }
            // The referring trust's own copy of its request, marked done: acceptance is the
            // council's to record, so nothing is (rather than refusing the trust its own
            // resource as if it spoke for the council).
            Some("completed")
                if council.is_some_and(|(_, c)| {
                    !c.code().eq_ignore_ascii_case(self.ctx.organisation.trim())
                }) && requester.as_ref().is_none_or(|q| {
                    q.code().eq_ignore_ascii_case(self.ctx.organisation.trim())
                }) => {}
            Some("completed") => {
                let team = r.get("performerType").and_then(concept_text);
                let source = self.source_of(council.map(|(_, o)| o).or(requester.as_ref()));
                if let (Some(id), Some(who)) = (&referral_id, &who) {
                    let mut d = json!({ "referral_id": id });
                    if let Some(t) = team {
                        d["team"] = t.into();
                    }
                    let time = updated.unwrap_or(self.ctx.received_at);
                    out.extend(self.event(&base, "referral.accepted", time, &source, who, d));
                }
            }
            Some(s @ ("revoked" | "entered-in-error")) => {
                let reason = match s {
                    "revoked" => note.unwrap_or_else(|| "revoked by the referrer".to_owned()),
                    _ => "entered in error".to_owned(),
                };
                let source = self.source_of(requester.as_ref());
                if let (Some(id), Some(who)) = (&referral_id, &who) {
                    let time = updated.unwrap_or(self.ctx.received_at);
                    out.extend(self.event(
                        &base,
                        "referral.withdrawn",
                        time,
                        &source,
                        who,
                        json!({ "referral_id": id, "reason": reason }),
                    ));
                }
            }
            Some("draft" | "on-hold" | "unknown") | None => {}
            Some(other) => self.issue(
                IssueCode::CodeInvalid,
                "status",
                format!("{other:?} is not a ServiceRequest status"),
            ),
        }
        out
    }

    // --- EpisodeOfCare ----------------------------------------------------------------------

    fn episode_of_care(&mut self, r: &Value) -> Vec<Event> {
        let status = self.status(r);
        let package_id = business_id(r)
            .or_else(|| str_at(r, "id"))
            .map(str::to_owned);
        if package_id.is_none() {
            self.issue(
                IssueCode::Required,
                "identifier",
                "the EpisodeOfCare needs an identifier (the package id) or an id",
            );
        }
        let who = self.person(r, "patient");
        let base = event_id_base(r);
        let managing = self.org(r, r.get("managingOrganization"));
        let (source_org, provider) = match managing {
            Some(Org::Other(p)) => (None, Some(p)),
            o => (o, None),
        };
        let source = self.source_of(source_org.as_ref());
        let period = r.get("period").cloned().unwrap_or(Value::Null);
        let updated = self.last_updated(r);
        let kind = match status.as_deref() {
            Some("planned" | "waitlist") => "care-package.requested",
            Some("active") => "care-package.started",
            Some("onhold") => "care-package.suspended",
            Some("finished") => "care-package.ended",
            Some("cancelled" | "entered-in-error") => "care-package.cancelled",
            Some(other) => {
                self.issue(
                    IssueCode::CodeInvalid,
                    "status",
                    format!("{other:?} is not an EpisodeOfCare status"),
                );
                return Vec::new();
            }
            None => return Vec::new(),
        };
        let service_type = self.service_type(r, kind == "care-package.requested");
        let start = match period.get("start") {
            Some(_) => str_at(&period, "start").and_then(|s| self.date(s, "period.start")),
            None => None,
        };
        let end_time = match period.get("end") {
            Some(_) => self.timestamp(&period, "period.end"),
            None => None,
        };
        let (Some(id), Some(who)) = (&package_id, &who) else {
            return Vec::new();
        };
        let start_time = start
            .and_then(|d| d.0.and_hms_opt(0, 0, 0))
            .map(Timestamp::from_london);
        // A request or its sourcing happened by now: a start date still to come is not when.
        let past_start = start_time.filter(|t| *t <= self.ctx.received_at);
        let fallback = updated.unwrap_or(self.ctx.received_at);
        let mut out = Vec::new();
        match kind {
            "care-package.requested" => {
                let Some(st) = service_type else { return out };
                let mut d = json!({ "package_id": id, "service_type": st.as_str() });
                if let Some(rid) = arr(r, "referralRequest")
                    .first()
                    .and_then(|rr| self.referenced_id(r, Some(rr)))
                {
                    d["referral_id"] = rid.into();
                }
                if let Some(s) = start {
                    d["required_start"] = s.to_string().into();
                }
                out.extend(self.event(
                    &base,
                    kind,
                    updated.or(past_start).unwrap_or(self.ctx.received_at),
                    &source,
                    who,
                    d,
                ));
            }
            "care-package.started" => {
                let Some(s) = start else {
                    self.issue(IssueCode::Required, "period.start", "period.start (the date care started) is required for an active EpisodeOfCare");
                    return out;
                };
                if let Some(p) = provider {
                    let d =
                        json!({ "package_id": id, "provider": p, "agreed_start": s.to_string() });
                    out.extend(self.event(
                        &base,
                        "care-package.sourced",
                        updated.or(past_start).unwrap_or(fallback),
                        &source,
                        who,
                        d,
                    ));
                }
                let d = json!({ "package_id": id, "started_on": s.to_string() });
                out.extend(self.event(
                    &base,
                    kind,
                    start_time.unwrap_or(fallback),
                    &source,
                    who,
                    d,
                ));
                // Care back on after a hold: statusHistory's latest `onhold` period that has
                // ended is when it resumed. (The `started` above is timed at period.start,
                // before the hold, so without this the package would stay suspended.) Its
                // id names the package and the hold's end, not the version, so the later
                // versions repeating the history record it once.
                let received = self.ctx.received_at;
                let resumed = arr(r, "statusHistory")
                    .iter()
                    .filter(|h| str_at(h, "status") == Some("onhold"))
                    .filter_map(|h| {
                        let end = h.get("period").and_then(|p| str_at(p, "end"))?;
                        let t = Timestamp::parse(end).ok().filter(|t| *t <= received)?;
                        if end.len() > 10 {
                            return Some(t);
                        }
                        // A date alone: some time that day, so not its midnight (which
                        // sorts before a hold begun that morning). This version's update
                        // time when it is that day, else the day's last second.
                        let day_end = Timestamp(t.0 + chrono::Duration::seconds(86_399));
                        let seen = updated.unwrap_or(received);
                        Some(if seen >= t && seen <= day_end {
                            seen
                        } else {
                            day_end.min(received)
                        })
                    })
                    .max();
                if let Some(end) = resumed {
                    let stem = match str_at(r, "id").filter(|i| id_token_ok(i)) {
                        Some(i) => format!("EpisodeOfCare/{i}"),
                        None => format!(
                            "EpisodeOfCare/-/{}",
                            hex::encode(&Sha256::digest(id.as_bytes())[..8])
                        ),
                    };
                    out.extend(self.event(
                        &format!("{stem}/_hold-ended/{}", end.unix_millis()),
                        "care-package.resumed",
                        end,
                        &source,
                        who,
                        json!({ "package_id": id }),
                    ));
                }
            }
            _ => {
                let mut d = json!({ "package_id": id });
                if status.as_deref() == Some("entered-in-error") {
                    d["reason"] = "entered in error".into();
                }
                let time = match kind {
                    "care-package.ended" => end_time.or(updated),
                    // The hold began when statusHistory's open `onhold` period started:
                    // without meta.lastUpdated the time received would sort it after a
                    // resumption the history of a later version dates earlier.
                    "care-package.suspended" => arr(r, "statusHistory")
                        .iter()
                        .filter(|h| str_at(h, "status") == Some("onhold"))
                        .filter_map(|h| h.get("period"))
                        .filter(|p| p.get("end").is_none())
                        .filter_map(|p| str_at(p, "start").and_then(|t| Timestamp::parse(t).ok()))
                        .filter(|t| *t <= self.ctx.received_at)
                        .max()
                        .or(updated),
                    _ => updated,
                };
                out.extend(self.event(
                    &base,
                    kind,
                    time.unwrap_or(self.ctx.received_at),
                    &source,
                    who,
                    d,
                ));
            }
        }
        out
    }

    fn service_type(&mut self, r: &Value, required: bool) -> Option<ServiceType> {
        let types = arr(r, "type");
        let mut first_code = None;
        for (i, t) in types.iter().enumerate() {
            for (j, c) in arr(t, "coding").iter().enumerate() {
                let Some(code) = str_at(c, "code") else {
                    continue;
                };
                if let Some((_, st)) = SERVICE_TYPE_CODES
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(code))
                {
                    return Some(*st);
                }
                first_code.get_or_insert((code.to_owned(), format!("type[{i}].coding[{j}].code")));
            }
        }
        match first_code {
            Some((code, path)) => self.issue(
                IssueCode::CodeInvalid,
                &path,
                format!("{code:?} is not a known service type (home-care/HC, reablement/REAB, residential/RES, nursing/NURS, community-bed/CB, equipment/EQ, other)"),
            ),
            // A type given as text alone ("Home care") cannot be mapped: say it is the
            // coding that is missing, not the type.
            None if required && !types.is_empty() => self.issue(
                IssueCode::Required,
                "type[0].coding",
                "type needs a coding with the service type code (e.g. reablement, home-care): text alone cannot be mapped",
            ),
            None if required => self.issue(IssueCode::Required, "type", "type (the service type, e.g. reablement) is required for a planned EpisodeOfCare"),
            None => {}
        }
        None
    }

    // --- Patient ----------------------------------------------------------------------------

    /// The event source of a Patient: its managing organisation, else the caller's.
    /// `container` is the resource holding `p` when it is contained (its `#id` references
    /// are to the container's contained resources), else `p` itself.
    fn patient_source(&self, container: &Value, p: &Value) -> String {
        let managing = self.org(container, p.get("managingOrganization"));
        self.source_of(managing.as_ref())
    }

    /// How a referencing resource identifies a Patient of the Bundle (or contained in
    /// `container`): as its own mapping does.
    fn patient_person(&self, container: &Value, p: &Value) -> Resolved {
        let source = self.patient_source(container, p);
        let ids = arr(p, "identifier");
        if let Some(id) = ids.iter().find(|i| is_current_nhs_number(i)) {
            return match str_at(id, "value").map(NhsNumber::parse) {
                Some(Ok(n)) => Resolved::Found(Who::Nhs(n)),
                _ => Resolved::ReportedElsewhere,
            };
        }
        if let Some(id) = ids
            .iter()
            .find(|i| str_at(i, "value").is_some() && !is_nhs_number_identifier(i))
        {
            let value = str_at(id, "value").unwrap_or_default().to_owned();
            let system = str_at(id, "system")
                .map(str::to_owned)
                .unwrap_or_else(|| local_system(&source));
            return Resolved::Found(Who::Local { system, value });
        }
        match str_at(p, "id").filter(|s| id_token_ok(s)) {
            Some(id) => Resolved::Found(Who::Local {
                system: format!("{source}:Patient"),
                value: id.to_owned(),
            }),
            None => Resolved::ReportedElsewhere,
        }
    }

    /// The NHS numbers `Patient.link` names with `kind` (`replaced-by`, `replaces`): a link's
    /// `other` by identifier, conditional or PDS reference, or a Patient of the Bundle.
    fn linked_nhs_numbers(&self, r: &Value, kind: &str) -> Vec<NhsNumber> {
        let mut out = Vec::new();
        for link in arr(r, "link") {
            if str_at(link, "type") != Some(kind) {
                continue;
            }
            let Some(other) = link.get("other") else {
                continue;
            };
            let by_identifier = other
                .get("identifier")
                .filter(|i| is_nhs_number_identifier(i))
                .and_then(|i| str_at(i, "value"))
                .and_then(|v| NhsNumber::parse(v).ok());
            let n = by_identifier.or_else(|| {
                match self.referenced_nhs_number(r, str_at(other, "reference")) {
                    Some(Resolved::Found(Who::Nhs(n))) => Some(n),
                    _ => None,
                }
            });
            if let Some(n) = n.filter(|n| !out.contains(n)) {
                out.push(n);
            }
        }
        out
    }

    /// A Patient record no longer in use (`active: false`): nothing about the person is
    /// taken from it (FHIR R4: a Patient replaced by another "must no longer be used").
    /// When it is `replaced-by` a Patient with another NHS number, its own number was
    /// replaced by that one: `person.nhs-number-changed` under the new number.
    fn inactive_patient(&mut self, r: &Value) -> Vec<Event> {
        let source = self.patient_source(r, r);
        let own = arr(r, "identifier")
            .iter()
            .filter(|i| is_nhs_number_identifier(i))
            .filter_map(|i| str_at(i, "value"))
            .find_map(|v| NhsNumber::parse(v).ok());
        let Some(old) = own else {
            return Vec::new();
        };
        let time = self.last_updated(r).unwrap_or(self.ctx.received_at);
        let mut out = Vec::new();
        for new in self.linked_nhs_numbers(r, "replaced-by") {
            out.extend(self.number_changed(r, time, &source, new, old));
        }
        out
    }

    /// `person.nhs-number-changed` for Patient `r`: `old` replaced by `current` (none when
    /// they are the same). The id names the Patient, not its version, and its digest the
    /// two numbers, so later versions that still say so record it once.
    fn number_changed(
        &mut self,
        r: &Value,
        time: Timestamp,
        source: &str,
        current: NhsNumber,
        old: NhsNumber,
    ) -> Option<Event> {
        if current == old {
            return None;
        }
        let base = format!("{}/_nhs-number-changed", resource_stem(r));
        self.event(
            &base,
            "person.nhs-number-changed",
            time,
            source,
            &Who::Nhs(current),
            json!({ "previous_nhs_number": old.as_string() }),
        )
    }

    fn patient(&mut self, r: &Value) -> Vec<Event> {
        if r.get("active") == Some(&Value::Bool(false)) {
            return self.inactive_patient(r);
        }
        let source = self.patient_source(r, r);
        let mut nhs = None;
        let mut status = None;
        let mut local_ids = Vec::new();
        // NHS numbers of `use: old` (FHIR: "no longer considered valid"): a number the
        // person had before a merge or replacement. Not the subject; valid ones become
        // `nhs-number-changed` below. One that does not parse is history and left alone.
        let mut previous: Vec<NhsNumber> = Vec::new();
        for (i, id) in arr(r, "identifier").iter().enumerate() {
            let Some(value) = str_at(id, "value") else {
                self.issue(
                    IssueCode::Required,
                    &format!("identifier[{i}].value"),
                    "an identifier needs a value",
                );
                continue;
            };
            match str_at(id, "system") {
                Some(_) if is_nhs_number_identifier(id) && !is_current_nhs_number(id) => {
                    if let Ok(n) = NhsNumber::parse(value) {
                        if !previous.contains(&n) {
                            previous.push(n);
                        }
                    }
                }
                Some(_) if is_nhs_number_identifier(id) => {
                    match NhsNumber::parse(value) {
                        Ok(n) => match &nhs {
                            Some(first) if *first != n => self.issue(
                                IssueCode::Invalid,
                                &format!("identifier[{i}].value"),
                                "the Patient has two different current NHS numbers: mark the superseded one `use: old`",
                            ),
                            _ => nhs = Some(n),
                        },
                        Err(e) => self.issue(
                            IssueCode::Value,
                            &format!("identifier[{i}].value"),
                            format!("not a valid NHS number: {e}"),
                        ),
                    }
                    let verification = extension_coding(
                        id,
                        NHS_NUMBER_VERIFICATION_URL,
                        "UKCore-NHSNumberVerificationStatus",
                        |c| NHS_NUMBER_STATUSES.contains(&c).then(|| c.to_owned()),
                    );
                    match verification {
                        Some(Coded::Understood(code)) => {
                            status.get_or_insert(code);
                        }
                        Some(Coded::Unknown(code, path)) => self.issue(
                            IssueCode::CodeInvalid,
                            &format!("identifier[{i}].{path}"),
                            format!("{code:?} is not an NHS number verification status (01 to 08)"),
                        ),
                        None => {}
                    }
                }
                Some(system) => local_ids.push(json!({ "system": system, "value": value })),
                None => local_ids.push(json!({ "system": local_system(&source), "value": value })),
            }
        }
        // A record this one replaces (`link` of type `replaces`, as PDS and EPRs show a
        // merge from the surviving record): its NHS number is an old one of this person.
        for n in self.linked_nhs_numbers(r, "replaces") {
            if !previous.contains(&n) {
                previous.push(n);
            }
        }
        if local_ids.is_empty() {
            // The Patient's logical id on the sender's server is a local identifier too
            // (unless it is the NHS number itself, as PDS gives it).
            if let Some(id) = str_at(r, "id")
                .filter(|s| id_token_ok(s))
                .filter(|s| NhsNumber::parse(s).is_err())
            {
                local_ids.push(json!({ "system": format!("{source}:Patient"), "value": id }));
            }
        }
        if nhs.is_none()
            && local_ids.is_empty()
            && !self.issues.iter().any(|i| i.code == IssueCode::Value)
        {
            self.issue(IssueCode::Required, "identifier", format!("the Patient needs an identifier: the NHS number (system {NHS_NUMBER_SYSTEM}) or a local one"));
        }
        let mut d = json!({
            "nhs_number_status": status.unwrap_or_else(|| if nhs.is_some() { "02" } else { "03" }.to_owned()),
            "local_ids": local_ids,
        });
        // Only names and addresses in use: not `use: old`, nor one whose period has ended
        // (PDS returns the history: a maiden name, a previous address).
        let today = self.ctx.received_at.london_date();
        let current = |v: &&Value| {
            // `maiden` is a name used before marriage and `anonymous` not the person's: no
            // more their current name than an `old` one.
            let bound = |k: &str| {
                v.get("period")
                    .and_then(|p| str_at(p, k))
                    .and_then(|e| Date::parse(e.get(..10).unwrap_or(e)).ok())
            };
            // Not one whose period has ended, nor one that starts later (a move PDS
            // already knows of: the address in use until then is the current one).
            !matches!(str_at(v, "use"), Some("old" | "maiden" | "anonymous"))
                && bound("end").is_none_or(|end| end.0 >= today)
                && bound("start").is_none_or(|start| start.0 <= today)
        };
        let names: Vec<&Value> = arr(r, "name").iter().filter(current).collect();
        if let Some(n) = names
            .iter()
            .find(|n| str_at(n, "use") == Some("official"))
            .or_else(|| names.iter().find(|n| str_at(n, "use") == Some("usual")))
            .or_else(|| names.iter().find(|n| str_at(n, "use") != Some("nickname")))
            .or_else(|| names.first())
        {
            fn text(v: &Value) -> Option<&str> {
                v.as_str().map(str::trim).filter(|t| !t.is_empty())
            }
            let given = arr(n, "given").iter().find_map(text);
            let family = n.get("family").and_then(text);
            // A name sent as `text` alone (FHIR allows it; some EPRs send no parts) is
            // split as a PAS writes it: `FAMILY, Given`, else `Given … Family`.
            let (given, family) = match (given, family, n.get("text").and_then(text)) {
                (None, None, Some(t)) => name_from_text(t),
                _ => (given, family),
            };
            if let Some(g) = given {
                d["given_name"] = g.into();
            }
            if let Some(f) = family {
                d["family_name"] = f.into();
            }
        }
        if let Some(b) = str_at(r, "birthDate") {
            // FHIR allows a year or a year and month: not a date of birth to record.
            let partial = |b: &str| {
                let parts: Vec<&str> = b.split('-').collect();
                matches!(parts.as_slice(), [y] | [y, _] if y.len() == 4)
                    && parts
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
                    && parts.get(1).is_none_or(|m| m.len() == 2)
            };
            if partial(b) {
            } else if b.len() != 10 {
                self.issue(
                    IssueCode::Value,
                    "birthDate",
                    format!("{b:?} is not a full date (YYYY-MM-DD), year-month or year"),
                );
            } else if let Some(date) = self.date(b, "birthDate") {
                d["birth_date"] = date.to_string().into();
            }
        }
        let addresses: Vec<&Value> = arr(r, "address").iter().filter(current).collect();
        if let Some(pc) = addresses
            .iter()
            .find(|a| str_at(a, "use") == Some("home"))
            .or_else(|| addresses.first())
            .and_then(|a| str_at(a, "postalCode"))
        {
            d["postcode"] = handover_events::normalise_postcode(pc).into();
        }
        if let Some(gp) =
            arr(r, "generalPractitioner")
                .iter()
                .find_map(|g| match self.org(r, Some(g)) {
                    Some(Org::Ods(c)) => Some(c),
                    _ => None,
                })
        {
            d["gp_practice"] = gp.into();
        }
        if !self.issues.is_empty() {
            return Vec::new();
        }
        let who = match nhs {
            Some(n) => Who::Nhs(n),
            None => {
                let first = &d["local_ids"][0];
                Who::Local {
                    system: first["system"].as_str().unwrap_or_default().to_owned(),
                    value: first["value"].as_str().unwrap_or_default().to_owned(),
                }
            }
        };
        let time = self.last_updated(r).unwrap_or(self.ctx.received_at);
        let mut out: Vec<Event> = self
            .event(
                &event_id_base(r),
                "person.identified",
                time,
                &source,
                &who,
                d,
            )
            .into_iter()
            .collect();
        // A current NHS number beside an old one: the old is replaced by it (a merge, as
        // HL7 A40 says).
        if let Who::Nhs(current) = who {
            for old in previous {
                out.extend(self.number_changed(r, time, &source, current, old));
            }
        }
        out
    }
}

/// Whether an Identifier is an NHS number (by its system).
/// The identifier a conditional reference to a Patient searches by:
/// `[base/]Patient?identifier=<system>|<value>` (form-encoded; other search parameters may
/// follow). `None` for any other reference, or one whose token has no system or value.
fn conditional_identifier(reference: &str) -> Option<(String, String)> {
    let (path, query) = reference.split_once('?')?;
    if path.rsplit('/').next() != Some("Patient") {
        return None;
    }
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "identifier")
        .and_then(|(_, token)| {
            let (system, value) = token.split_once('|').unwrap_or(("", &token));
            let (system, value) = (system.trim(), value.trim());
            if system.is_empty() {
                // A token without a system matches any (FHIR R4 search.html#token): taken
                // as the NHS number when it is a valid one, which no other identifier of a
                // Patient is likely to be.
                return NhsNumber::parse(value)
                    .is_ok()
                    .then(|| (NHS_NUMBER_SYSTEM.to_owned(), value.to_owned()));
            }
            (!value.is_empty()).then(|| (system.to_owned(), value.to_owned()))
        })
}

/// The NHS number in a reference to a Patient on PDS (the Personal Demographics Service,
/// whose Patient ids are NHS numbers): `https://api.service.nhs.uk/personal-demographics/
/// FHIR/R4/Patient/<nhs number>` and the same on PDS's other environments.
fn pds_nhs_number(reference: &str) -> Option<NhsNumber> {
    let reference = without_version(reference);
    let (base, id) = reference.rsplit_once("/Patient/")?;
    if !base.contains("personal-demographics") {
        return None;
    }
    NhsNumber::parse(id).ok()
}

fn is_nhs_number_identifier(id: &Value) -> bool {
    str_at(id, "system").is_some_and(is_nhs_number_system)
}

/// Whether an Identifier is the current NHS number: not one of `use: old`, which FHIR
/// defines as "no longer considered valid" (PDS lists a superseded number that way).
fn is_current_nhs_number(id: &Value) -> bool {
    is_nhs_number_identifier(id) && str_at(id, "use") != Some("old")
}

/// The identifier system for a Patient identifier sent without one: `<source>:local`.
fn local_system(source: &str) -> String {
    format!("{source}:local")
}

/// The Location an `Encounter.location[]` entry references: one contained in the
/// Encounter `r` (`#id`) or one in the Bundle.
fn location_target<'v>(
    l: &Value,
    r: &'v Value,
    bundle: Option<&BundleIndex<'v>>,
) -> Option<&'v Value> {
    let reference = str_at(l.get("location")?, "reference")?;
    let target = match reference.strip_prefix('#') {
        Some(id) => arr(r, "contained")
            .iter()
            .find(|c| str_at(c, "id") == Some(id)),
        None => bundle.and_then(|b| b.resolve(reference)),
    };
    target.filter(|t| str_at(t, "resourceType") == Some("Location"))
}

/// The ward of an `Encounter.location[]` entry: its reference's `display`, else its
/// `identifier.value`; else the referenced Location (in the Bundle, or contained in the
/// Encounter `r`): its `name`, else its first identifier; else the reference's id (the
/// `ward-7` of `Location/ward-7`; not a `urn:uuid`).
fn location_name(l: &Value, r: &Value, bundle: Option<&BundleIndex<'_>>) -> Option<String> {
    let loc = l.get("location")?;
    if let Some(name) =
        str_at(loc, "display").or_else(|| loc.get("identifier").and_then(|i| str_at(i, "value")))
    {
        return Some(name.to_owned());
    }
    let reference = str_at(loc, "reference")?;
    if let Some(t) = location_target(l, r, bundle) {
        if let Some(name) = str_at(t, "name")
            .or_else(|| arr(t, "identifier").iter().find_map(|i| str_at(i, "value")))
        {
            return Some(name.to_owned());
        }
    }
    if reference.starts_with("urn:") || reference.starts_with('#') {
        return None;
    }
    without_version(reference)
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// The `physicalType` code of an `Encounter.location[]` entry (R4 has it on the entry), else
/// of the Location it references, lower-cased (`wa` ward, `ro` room, `bd` bed, …).
fn physical_type(l: &Value, r: &Value, bundle: Option<&BundleIndex<'_>>) -> Option<String> {
    let concept = match l.get("physicalType") {
        Some(c) => c,
        None => location_target(l, r, bundle)?.get("physicalType")?,
    };
    arr(concept, "coding")
        .iter()
        .find_map(|c| str_at(c, "code"))
        .map(str::to_ascii_lowercase)
}

/// The `Encounter.location[]` entries that can name the ward, with their positions. EPRs
/// often list the bed (or room) beside its ward: when one entry is a ward (`physicalType`
/// `wa`), entries of another physical type (bed, room, building…) are passed over, so the
/// ward is named and a bed move is not taken for a ward move. Entries without a physical
/// type are kept.
fn ward_locations<'v>(
    r: &'v Value,
    bundle: Option<&BundleIndex<'_>>,
) -> (Vec<usize>, Vec<&'v Value>) {
    let all = arr(r, "location");
    let types: Vec<Option<String>> = all.iter().map(|l| physical_type(l, r, bundle)).collect();
    let any_ward = types.iter().any(|t| t.as_deref() == Some("wa"));
    all.iter()
        .enumerate()
        .zip(types)
        .filter(|(_, t)| !any_ward || t.as_deref().is_none_or(|t| t == "wa"))
        .map(|(l, _)| l)
        .unzip()
}

/// The ward a finished stay was discharged from, among `locations` with a name: the one
/// whose period ends last (an open period, one only started, counts as ending last), then
/// the one that started last, then the last listed. FHIR gives `location[]` no order (EPR
/// APIs often list the newest first); the admission reads `period.start` likewise.
fn discharge_ward(
    locations: &[&Value],
    r: &Value,
    bundle: Option<&BundleIndex<'_>>,
) -> Option<String> {
    let millis = |l: &Value, key: &str| {
        l.get("period")
            .and_then(|p| str_at(p, key))
            .and_then(|s| Timestamp::parse(s).ok())
            .map(|t| t.unix_millis())
    };
    locations
        .iter()
        .enumerate()
        .filter_map(|(i, l)| location_name(l, r, bundle).map(|name| (i, *l, name)))
        .max_by_key(|(i, l, _)| {
            let start = millis(l, "start");
            let end = match (millis(l, "end"), start) {
                (Some(end), _) => end,
                (None, Some(_)) => i64::MAX,
                (None, None) => i64::MIN,
            };
            (end, start.unwrap_or(i64::MIN), *i)
        })
        .map(|(_, _, name)| name)
}

/// Whether `code` is shaped like an NHS Data Dictionary admission method code (two
/// characters: `11`, `2A`, `81`…), as opposed to a SNOMED CT concept id.
fn is_admission_method_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The admission method for a UK Core admission method code (NHS Data Dictionary): 1x
/// elective, 2x emergency, 3x and 82/83 maternity, 81 transfer, anything else other.
pub fn admission_method(code: &str) -> &'static str {
    match code.trim() {
        c if c.starts_with('1') && c.len() == 2 => "elective",
        c if c.starts_with('2') && c.len() == 2 => "emergency",
        c if c.starts_with('3') && c.len() == 2 => "maternity",
        "82" | "83" => "maternity",
        "81" => "transfer",
        _ => "other",
    }
}

/// The first given name and the family name of a HumanName written as one text:
/// `SMITH, John Paul` (as PAS lists and NHS letters write it: the family name before the
/// comma), else `Mrs Margaret Ann Whitfield` (a title first is passed over, the last word
/// is the family name). One word alone is taken as the family name. What follows an
/// opening bracket (`Whitfield (née Smith)`) and a word in quotes (a nickname: `Margaret
/// "Peggy" Whitfield`) are no part of either.
fn name_from_text(text: &str) -> (Option<&str>, Option<&str>) {
    const TITLES: &[&str] = &[
        "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "lady", "lord", "rev",
        "master",
    ];
    let title = |w: &&str| TITLES.contains(&w.trim_end_matches('.').to_ascii_lowercase().as_str());
    /// The words of `t` but those in quotes (a nickname).
    fn words(t: &str) -> Vec<&str> {
        t.split_whitespace()
            .filter(|w| !w.starts_with(['"', '\'', '\u{201c}', '\u{2018}']))
            .collect()
    }
    let text = text.split_once('(').map_or(text, |(before, _)| before);
    if let Some((family, rest)) = text.split_once(',') {
        let given = words(rest).into_iter().find(|w| !title(w));
        let family = family.trim();
        return (given, (!family.is_empty()).then_some(family));
    }
    match words(text).split_last() {
        None => (None, None),
        Some((family, rest)) => (rest.iter().find(|w| !title(w)).copied(), Some(*family)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::conformance::{assert_acks_after_durability, assert_translation_conforms};
    use expect_test::{expect, Expect};
    use handover_events::EventSink;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../../tests/fixtures/fhir/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn ctx() -> FhirContext {
        FhirContext::new("RR8", Timestamp::parse("2026-11-28T08:00:00Z").unwrap())
    }

    fn render(events: &[Event]) -> String {
        let mut s = String::new();
        for e in events {
            let subject = e
                .subject
                .map(|n| n.as_string())
                .unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "{} {}\n  source={} subject={} time={}\n  data={}\n",
                e.event_type().as_str(),
                e.id,
                e.source,
                subject,
                e.time,
                serde_json::to_string(&e.data.to_json()).unwrap()
            ));
        }
        s
    }

    fn render_issues(issues: &[Issue]) -> String {
        issues
            .iter()
            .map(|i| {
                let j = i.to_json();
                format!(
                    "{} {} @ {}: {}\n",
                    j["severity"].as_str().unwrap(),
                    j["code"].as_str().unwrap(),
                    i.expression.as_deref().unwrap_or("-"),
                    i.diagnostics
                )
            })
            .collect()
    }

    /// Fixture → events, checked for conformance and against the snapshot.
    fn check(resource: &Value, expect: Expect) {
        let events = assert_translation_conforms(|| match translate(resource, &ctx()) {
            Ok(e) => e,
            Err(issues) => panic!("unexpected issues:\n{}", render_issues(&issues)),
        });
        expect.assert_eq(&render(&events));
    }

    /// Bad input → the OperationOutcome issues.
    fn check_err(resource: &Value, expect: Expect) {
        match translate(resource, &ctx()) {
            Ok(events) => panic!("expected issues, got events:\n{}", render(&events)),
            Err(issues) => expect.assert_eq(&render_issues(&issues)),
        }
    }

    fn with(mut v: Value, path: &str, new: Value) -> Value {
        let ptr = format!("/{}", path.replace('.', "/"));
        match v.pointer_mut(&ptr) {
            Some(slot) => *slot = new,
            None => {
                let (parent, key) = ptr.rsplit_once('/').unwrap();
                v.pointer_mut(parent)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .insert(key.to_owned(), new);
            }
        }
        v
    }

    /// The events' data (or the issues) for `resource`, as JSON lines.
    fn data(resource: &Value) -> Vec<Value> {
        translate(resource, &ctx())
            .unwrap_or_else(|issues| panic!("unexpected issues:\n{}", render_issues(&issues)))
            .iter()
            .map(|e| e.data.to_json())
            .collect()
    }

    #[test]
    fn a_patient_s_current_name_and_address_are_taken_and_partial_birth_dates_left_out() {
        let p = with(
            fixture("patient.json"),
            "name",
            json!([
                {"use": "old", "family": "Maidenname", "given": ["Margaret"]},
                {"family": "Former", "given": ["Peggy"], "period": {"end": "2020-01-01"}},
                {"use": "usual", "family": "Whitfield", "given": ["Margaret"]}
            ]),
        );
        let p = with(
            p,
            "address",
            json!([
                {"use": "home", "postalCode": "LS1 1AA", "period": {"start": "2001-01-01", "end": "2025-06-30"}},
                {"use": "old", "postalCode": "LS2 2BB"},
                {"use": "home", "postalCode": "ls6 4ab", "period": {"start": "2025-07-01"}}
            ]),
        );
        let p = with(p, "birthDate", json!("1941-03"));
        let d = &data(&p)[0];
        assert_eq!(d["family_name"], "Whitfield");
        assert_eq!(d["postcode"], "LS6 4AB");
        assert!(d.get("birth_date").is_none());
        assert_eq!(
            data(&with(p.clone(), "birthDate", json!("1941")))[0].get("birth_date"),
            None
        );
        check_err(
            &with(p, "birthDate", json!("14/03/1941")),
            expect![[r#"
                error value @ Patient.birthDate: "14/03/1941" is not a full FHIR date (YYYY-MM-DD) or dateTime
            "#]],
        );
    }

    #[test]
    fn a_pds_style_patient_id_never_puts_the_nhs_number_in_an_event_id() {
        let p = with(fixture("patient.json"), "id", json!("9434765919"));
        let events = translate(&p, &ctx()).unwrap();
        assert!(
            events.iter().all(|e| !e.id.contains("9434765919")),
            "{:?}",
            events[0].id
        );
        assert!(events[0].id.starts_with("Patient/nhs-"), "{}", events[0].id);
        // Unversioned, the id is replaced the same way.
        let p = with(p, "meta", json!({}));
        let events = translate(&p, &ctx()).unwrap();
        assert!(events.iter().all(|e| !e.id.contains("9434765919")));
        assert!(events[0].id.starts_with("Patient/nhs-"), "{}", events[0].id);
    }

    #[test]
    fn wards_given_only_by_reference_are_resolved() {
        let e = with(
            fixture("encounter_in_progress.json"),
            "location",
            json!([
                {"location": {"reference": "#amu"}, "status": "completed",
                 "period": {"start": "2026-11-20T09:14:00Z", "end": "2026-11-21T14:00:00Z"}},
                {"location": {"reference": "Location/ward-l27"}, "status": "active",
                 "period": {"start": "2026-11-21T14:00:00Z"}}
            ]),
        );
        let e = with(
            e,
            "contained",
            json!([{"resourceType": "Location", "id": "amu", "name": "Ward J12 (AMU)"}]),
        );
        let d = data(&e);
        assert_eq!(d[0]["ward"], "Ward J12 (AMU)");
        assert_eq!(d[1]["ward"], "ward-l27");
        assert_eq!(d[1]["previous_ward"], "Ward J12 (AMU)");
        // In a Bundle, the Location entry's name.
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b6c", "resource": {"resourceType": "Location", "id": "ward-l27", "name": "Ward L27 (Elderly Care)"},
             "request": {"method": "PUT", "url": "Location/ward-l27"}},
            {"fullUrl": "urn:uuid:1c7d", "resource": e, "request": {"method": "PUT", "url": "Encounter/enc-4471"}}
        ]});
        let entries = translate_bundle(&bundle, &ctx()).unwrap();
        let transferred = entries
            .iter()
            .flat_map(|x| x.events.iter())
            .find(|e| e.event_type().as_str() == "handover.discharge.transferred.v1")
            .unwrap();
        assert_eq!(
            transferred.data.to_json()["ward"],
            "Ward L27 (Elderly Care)"
        );
    }

    #[test]
    fn location_periods_tell_the_current_ward_when_no_status_is_given() {
        let e = with(
            fixture("encounter_in_progress.json"),
            "location",
            json!([
                {"location": {"display": "AMU"}, "period": {"start": "2026-11-20T09:14:00Z", "end": "2026-11-21T14:00:00Z"}},
                {"location": {"display": "Ward 3"}, "period": {"start": "2026-11-21T14:00:00Z"}}
            ]),
        );
        let d = data(&e);
        assert_eq!(d[0]["ward"], "AMU");
        assert_eq!(d[1]["ward"], "Ward 3");
        assert_eq!(d[1]["previous_ward"], "AMU");
    }

    #[test]
    fn a_contained_patient_names_the_person() {
        let e = with(
            fixture("encounter_in_progress.json"),
            "subject",
            json!({"reference": "#p1"}),
        );
        let e = with(
            e,
            "contained",
            json!([{"resourceType": "Patient", "id": "p1",
                    "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "943 476 5919"}]}]),
        );
        let events = translate(&e, &ctx()).unwrap();
        assert!(!events.is_empty());
        assert!(events
            .iter()
            .all(|e| e.subject.map(|n| n.as_string()).as_deref() == Some("9434765919")));
        let bad = with(
            e,
            "contained",
            json!([{"resourceType": "Patient", "id": "p1",
                    "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765918"}]}]),
        );
        check_err(
            &bad,
            expect![[r#"
            error value @ Encounter.contained[0].identifier: the contained Patient needs a valid NHS number (system https://fhir.nhs.uk/Id/nhs-number) or another identifier
        "#]],
        );
    }

    #[test]
    fn encounters_that_are_not_a_hospital_stay_record_nothing() {
        for class in ["AMB", "EMER", "VR", "HH", "FLD", "OBSENC"] {
            for fixture_name in ["encounter_in_progress.json", "encounter_finished.json"] {
                let e = with(
                    fixture(fixture_name),
                    "class",
                    json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class}),
                );
                assert_eq!(
                    translate(&e, &ctx()).unwrap(),
                    vec![],
                    "{class} {fixture_name}"
                );
            }
        }
        // An inpatient class, an R5-style class list and none at all are stays.
        for class in [
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}),
            json!([{"coding": [{"code": "ACUTE"}]}]),
            Value::Null,
        ] {
            let e = with(
                fixture("encounter_in_progress.json"),
                "class",
                class.clone(),
            );
            assert!(!translate(&e, &ctx()).unwrap().is_empty(), "{class}");
        }
    }

    #[test]
    fn a_ward_stay_within_a_spell_records_nothing_but_an_admission_from_ed_does() {
        for fixture_name in ["encounter_in_progress.json", "encounter_finished.json"] {
            for part_of in [
                json!({"reference": "Encounter/spell-1"}),
                json!({"identifier": {"system": "https://trust.example/spell", "value": "S1"}}),
            ] {
                let child = with(fixture(fixture_name), "partOf", part_of.clone());
                assert_eq!(
                    translate(&child, &ctx()).unwrap(),
                    vec![],
                    "{fixture_name} {part_of}"
                );
                assert!(nothing_recorded(&child).contains("partOf"));
            }
        }
        // Part of its emergency department attendance, in the same Bundle: a stay.
        let mut admission = with(
            fixture("encounter_in_progress.json"),
            "partOf",
            json!({"reference": "urn:uuid:7c0a7b7e-2f1e-4c55-9b8e-0d9a1f3c2b11"}),
        );
        admission["subject"] = json!({"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}});
        let ed = json!({
            "resourceType": "Encounter", "id": "ed-1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
            "subject": admission["subject"].clone(),
            "period": {"start": "2024-03-01T08:00:00Z", "end": "2024-03-01T10:00:00Z"}
        });
        let bundle = json!({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [
                {"fullUrl": "urn:uuid:7c0a7b7e-2f1e-4c55-9b8e-0d9a1f3c2b11", "resource": ed,
                 "request": {"method": "PUT", "url": "Encounter/ed-1"}},
                {"fullUrl": "urn:uuid:0b6f3e2a-4d4b-4a7e-8f57-3f1b9c2d5e60", "resource": admission,
                 "request": {"method": "POST", "url": "Encounter"}}
            ]
        });
        let entries = translate_bundle(&bundle, &ctx()).unwrap();
        let types: Vec<&str> = entries
            .iter()
            .flat_map(|e| e.events.iter().map(|e| e.event_type().as_str()))
            .collect();
        assert!(
            types.contains(&"handover.discharge.admitted.v1"),
            "{types:?}"
        );
    }

    #[test]
    fn a_discharge_takes_the_first_understood_coding_and_no_method_for_8_or_9() {
        let e = with(
            fixture("encounter_finished.json"),
            "hospitalization.dischargeDisposition",
            json!({"coding": [
                {"system": "http://snomed.info/sct", "code": "306689006", "display": "Discharge to home"},
                {"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeDestination", "code": "19"}
            ]}),
        );
        for method in ["8", "9"] {
            let e = with(
                e.clone(),
                "extension",
                json!([{"url": DISCHARGE_METHOD_URL, "valueCodeableConcept": {"coding": [{"code": method}]}}]),
            );
            let d = &data(&e)[0];
            assert_eq!(d["destination"], "usual-residence", "{method}");
            assert!(d.get("method").is_none(), "{method}");
        }
        // Only a SNOMED CT coding Handover does not map: no destination, no error.
        let snomed_only = with(
            e,
            "hospitalization.dischargeDisposition",
            json!({"coding": [{"system": "http://snomed.info/sct", "code": "306689006"}]}),
        );
        assert!(data(&snomed_only)[0].get("destination").is_none());
    }

    #[test]
    fn patient_with_verified_nhs_number_and_mrn() {
        check(
            &fixture("patient.json"),
            expect![[r#"
                handover.person.identified.v1 Patient/9f3c1a2e-5b7d-4e1f-8a2b-3c4d5e6f7a80/_history/3#identified.2efcd7bb648d
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-20T09:20:00Z
                  data={"birth_date":"1941-03-14","family_name":"Whitfield","given_name":"Margaret","gp_practice":"B86010","local_ids":[{"system":"https://fhir.leedsth.nhs.uk/Id/mrn","value":"RR80042317"}],"nhs_number_status":"01","postcode":"LS6 4AB"}
            "#]],
        );
    }

    #[test]
    fn encounter_in_progress_with_a_ward_move() {
        check(
            &fixture("encounter_in_progress.json"),
            expect![[r#"
                handover.discharge.admitted.v1 Encounter/enc-4471/_history/2#admitted.0424661b0960
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-20T09:14:00Z
                  data={"admission_method":"emergency","admitted_at":"2026-11-20T09:14:00Z","encounter_id":"RR8-SP-2026-118834","site":"RR8","ward":"Ward J12 (Acute Medical Unit)"}
                handover.discharge.transferred.v1 Encounter/enc-4471/_history/2#transferred.70c33a2e4075
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-21T14:00:00Z
                  data={"at":"2026-11-21T14:00:00Z","encounter_id":"RR8-SP-2026-118834","previous_ward":"Ward J12 (Acute Medical Unit)","ward":"Ward L27 (Elderly Care)"}
            "#]],
        );
    }

    #[test]
    fn encounter_finished() {
        check(
            &fixture("encounter_finished.json"),
            expect![[r#"
                handover.discharge.discharged.v1 Encounter/enc-4471/_history/4#discharged.b5b567f90c71
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-27T16:30:00Z
                  data={"admitted_at":"2026-11-20T09:14:00Z","destination":"usual-residence","discharged_at":"2026-11-27T16:30:00Z","encounter_id":"RR8-SP-2026-118834","method":1,"site":"RR8","ward":"Ward L27 (Elderly Care)"}
            "#]],
        );
    }

    #[test]
    fn service_request_referral() {
        check(
            &fixture("service_request.json"),
            expect![[r#"
                handover.referral.sent.v1 ServiceRequest/sr-20261121-0007/_history/1#sent.d3c3165783a2
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-21T15:02:00Z
                  data={"encounter_id":"RR8-SP-2026-118834","from_org":"RR8","proposed_discharge_date":"2026-11-25","reason":"Reduced mobility after a fall; lives alone; needs help with personal care","referral_id":"RR8-REF-77120","to_council":"E08000035","urgency":"urgent"}
            "#]],
        );
    }

    #[test]
    fn episode_of_care_reablement() {
        check(
            &fixture("episode_of_care.json"),
            expect![[r#"
                handover.care-package.requested.v1 EpisodeOfCare/eoc-reab-5521/_history/1#requested.54a20adcdf3c
                  source=urn:gss:E08000035:fhir subject=9434765919 time=2026-11-24T11:30:00Z
                  data={"package_id":"LCC-PKG-5521","referral_id":"RR8-REF-77120","required_start":"2026-11-27","service_type":"reablement"}
            "#]],
        );
    }

    /// The reablement EpisodeOfCare, active since 10 November.
    fn active_since_the_10th() -> Value {
        with(
            with(fixture("episode_of_care.json"), "status", json!("active")),
            "period",
            json!({"start": "2026-11-10"}),
        )
    }

    #[test]
    fn an_active_episode_after_a_hold_resumes_when_the_hold_ended() {
        let mut eoc = active_since_the_10th();
        eoc["meta"]["versionId"] = json!("3");
        eoc["statusHistory"] = json!([
            {"status": "planned", "period": {"start": "2026-11-05", "end": "2026-11-10"}},
            {"status": "active", "period": {"start": "2026-11-10", "end": "2026-11-18T10:00:00Z"}},
            {"status": "onhold", "period": {"start": "2026-11-18T10:00:00Z", "end": "2026-11-25T09:00:00Z"}},
            {"status": "onhold", "period": {"start": "2099-01-01T00:00:00Z", "end": "2099-01-02T00:00:00Z"}}
        ]);
        check(
            &eoc,
            expect![[r#"
                handover.care-package.started.v1 EpisodeOfCare/eoc-reab-5521/_history/3#started.3fd1965381d6
                  source=urn:gss:E08000035:fhir subject=9434765919 time=2026-11-10T00:00:00Z
                  data={"package_id":"LCC-PKG-5521","started_on":"2026-11-10"}
                handover.care-package.resumed.v1 EpisodeOfCare/eoc-reab-5521/_hold-ended/1795597200000#resumed.af125f4ca98b
                  source=urn:gss:E08000035:fhir subject=9434765919 time=2026-11-25T09:00:00Z
                  data={"package_id":"LCC-PKG-5521"}
            "#]],
        );
    }

    #[test]
    fn a_hold_ended_on_a_date_alone_resumes_later_that_day() {
        let mut eoc = active_since_the_10th();
        eoc["meta"]["lastUpdated"] = json!("2026-11-25T14:00:00Z");
        eoc["statusHistory"] = json!([{"status": "onhold", "period": {"start": "2026-11-25T09:00:00Z", "end": "2026-11-25"}}]);
        // The time of the `resumed` event the version gives.
        let resumed_at = |eoc: &Value| {
            translate(eoc, &ctx())
                .unwrap()
                .into_iter()
                .find(|e| e.event_type().as_str().ends_with("resumed.v1"))
                .unwrap()
                .time
        };
        assert_eq!(
            resumed_at(&eoc),
            Timestamp::parse("2026-11-25T14:00:00Z").unwrap()
        );
        // Updated another day: the day's last second (London time).
        eoc["meta"]["lastUpdated"] = json!("2026-11-27T08:00:00Z");
        assert_eq!(
            resumed_at(&eoc),
            Timestamp::parse("2026-11-25T23:59:59Z").unwrap()
        );
    }

    #[test]
    fn a_hold_is_timed_when_its_statushistory_period_began() {
        let mut eoc = with(fixture("episode_of_care.json"), "status", json!("onhold"));
        eoc["meta"].as_object_mut().unwrap().remove("lastUpdated");
        eoc["statusHistory"] = json!([
            {"status": "active", "period": {"start": "2026-11-10", "end": "2026-11-18T10:00:00Z"}},
            {"status": "onhold", "period": {"start": "2026-11-18T10:00:00Z"}}
        ]);
        check(
            &eoc,
            expect![[r#"
            handover.care-package.suspended.v1 EpisodeOfCare/eoc-reab-5521/_history/1#suspended.af125f4ca98b
              source=urn:gss:E08000035:fhir subject=9434765919 time=2026-11-18T10:00:00Z
              data={"package_id":"LCC-PKG-5521"}
        "#]],
        );
    }

    #[test]
    fn a_site_as_service_provider_speaks_for_its_trust() {
        let mut enc = fixture("encounter_in_progress.json");
        enc["serviceProvider"] =
            json!({"identifier": {"system": ODS_SITE_SYSTEM, "value": "rr8ab"}});
        let events = translate(&enc, &ctx()).unwrap();
        assert_eq!(events[0].source, "urn:ods:RR8:fhir");
        assert_eq!(events[0].data.to_json()["site"], "RR8AB");
    }

    #[test]
    fn transaction_bundle_resolves_references() {
        check(
            &fixture("bundle_transaction.json"),
            expect![[r#"
                handover.person.identified.v1 Patient/9f3c1a2e-5b7d-4e1f-8a2b-3c4d5e6f7a80/_history/3#identified.2efcd7bb648d
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-20T09:20:00Z
                  data={"birth_date":"1941-03-14","family_name":"Whitfield","given_name":"Margaret","gp_practice":"B86010","local_ids":[{"system":"https://fhir.leedsth.nhs.uk/Id/mrn","value":"RR80042317"}],"nhs_number_status":"01","postcode":"LS6 4AB"}
                handover.discharge.admitted.v1 Encounter/enc-4471/_history/2#admitted.0424661b0960
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-20T09:14:00Z
                  data={"admission_method":"emergency","admitted_at":"2026-11-20T09:14:00Z","encounter_id":"RR8-SP-2026-118834","site":"RR8","ward":"Ward J12 (Acute Medical Unit)"}
                handover.discharge.transferred.v1 Encounter/enc-4471/_history/2#transferred.70c33a2e4075
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-21T14:00:00Z
                  data={"at":"2026-11-21T14:00:00Z","encounter_id":"RR8-SP-2026-118834","previous_ward":"Ward J12 (Acute Medical Unit)","ward":"Ward L27 (Elderly Care)"}
                handover.referral.sent.v1 ServiceRequest/sr-20261121-0007/_history/1#sent.d3c3165783a2
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-21T15:02:00Z
                  data={"encounter_id":"RR8-SP-2026-118834","from_org":"RR8","proposed_discharge_date":"2026-11-25","reason":"Reduced mobility after a fall; lives alone; needs help with personal care","referral_id":"RR8-REF-77120","to_council":"E08000035","urgency":"urgent"}
                handover.care-package.requested.v1 EpisodeOfCare/eoc-reab-5521/_history/1#requested.54a20adcdf3c
                  source=urn:gss:E08000035:fhir subject=9434765919 time=2026-11-24T11:30:00Z
                  data={"package_id":"LCC-PKG-5521","referral_id":"RR8-REF-77120","required_start":"2026-11-27","service_type":"reablement"}
            "#]],
        );
    }

    #[test]
    fn clinical_entries_beside_the_stay_record_nothing_and_lose_nothing() {
        let plain = fixture("bundle_transaction.json");
        let mut with_clinical = plain.clone();
        let entries = with_clinical["entry"].as_array_mut().unwrap();
        for r in [
            json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/x"}}),
            json!({"resourceType": "Observation", "id": "o1", "status": "final"}),
        ] {
            entries.push(
                json!({"fullUrl": format!("urn:uuid:{}", r["id"].as_str().unwrap()),
                                "resource": r, "request": {"method": "POST", "url": r["resourceType"].clone()}}),
            );
        }
        let events = |b: &Value| -> Vec<String> {
            translate_bundle(b, &ctx())
                .unwrap()
                .into_iter()
                .flat_map(|e| e.events)
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(events(&with_clinical), events(&plain));
        let out = translate_bundle(&with_clinical, &ctx()).unwrap();
        let last = out.last().unwrap();
        assert_eq!(
            (last.resource_type.as_str(), last.events.len()),
            ("Observation", 0)
        );
        assert_eq!(
            nothing_recorded(&json!({"resourceType": "Condition"})),
            "accepted: nothing to record (Handover records no event from a Condition: only Encounter, ServiceRequest, EpisodeOfCare and Patient are mapped)"
        );
        // Not a resource type at all: still refused.
        let mut odd = plain.clone();
        odd["entry"][0]["resource"]["resourceType"] = json!("not a type");
        assert!(translate_bundle(&odd, &ctx()).is_err());
    }

    #[test]
    fn status_changes() {
        let enc = fixture("encounter_in_progress.json");
        check(
            &with(
                with(enc.clone(), "status", json!("entered-in-error")),
                "meta.versionId",
                json!("5"),
            ),
            expect![[r#"
                handover.discharge.admission-cancelled.v1 Encounter/enc-4471/_history/5#admission-cancelled.b675a2f1e6c0
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-21T14:05:00Z
                  data={"encounter_id":"RR8-SP-2026-118834"}
            "#]],
        );
        let sr = fixture("service_request.json");
        check(
            &with(
                with(sr.clone(), "status", json!("revoked")),
                "note",
                json!([{"text": "Patient went home with family support"}]),
            ),
            expect![[r#"
                handover.referral.withdrawn.v1 ServiceRequest/sr-20261121-0007/_history/1#withdrawn.98b0c68352ab
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-21T15:10:00Z
                  data={"reason":"Patient went home with family support","referral_id":"RR8-REF-77120"}
            "#]],
        );
        let completed = with(
            with(sr, "status", json!("completed")),
            "performerType",
            json!({"text": "Hospital Social Work Team"}),
        );
        // Sent by the council: it accepted the referral.
        let council = FhirContext::new("E08000035", ctx().received_at);
        expect![[r#"
            handover.referral.accepted.v1 ServiceRequest/sr-20261121-0007/_history/1#accepted.51b3e2c7f0c4
              source=urn:gss:E08000035:fhir subject=9434765919 time=2026-11-21T15:10:00Z
              data={"referral_id":"RR8-REF-77120","team":"Hospital Social Work Team"}
        "#]]
        .assert_eq(&render(&translate(&completed, &council).unwrap()));
        // Sent by the referring trust, its own request marked done: nothing to record, and
        // no claim to speak for the council.
        assert_eq!(translate(&completed, &ctx()).unwrap(), Vec::new());
        let eoc = fixture("episode_of_care.json");
        let active = with(
            with(eoc.clone(), "status", json!("active")),
            "managingOrganization",
            json!({"display": "Leeds Reablement Service (South)"}),
        );
        check(
            &active,
            expect![[r#"
                handover.care-package.sourced.v1 EpisodeOfCare/eoc-reab-5521/_history/1#sourced.c1aeea48eac7
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-24T11:30:00Z
                  data={"agreed_start":"2026-11-27","package_id":"LCC-PKG-5521","provider":"Leeds Reablement Service (South)"}
                handover.care-package.started.v1 EpisodeOfCare/eoc-reab-5521/_history/1#started.0e4e370ad6e6
                  source=urn:ods:RR8:fhir subject=9434765919 time=2026-11-27T00:00:00Z
                  data={"package_id":"LCC-PKG-5521","started_on":"2026-11-27"}
            "#]],
        );
        check(
            &with(eoc.clone(), "status", json!("onhold")),
            expect![[r#"
                handover.care-package.suspended.v1 EpisodeOfCare/eoc-reab-5521/_history/1#suspended.af125f4ca98b
                  source=urn:gss:E08000035:fhir subject=9434765919 time=2026-11-24T11:30:00Z
                  data={"package_id":"LCC-PKG-5521"}
            "#]],
        );
        check(
            &with(
                with(eoc, "status", json!("finished")),
                "period.end",
                json!("2026-12-30T12:00:00Z"),
            ),
            expect![[r#"
                handover.care-package.ended.v1 EpisodeOfCare/eoc-reab-5521/_history/1#ended.af125f4ca98b
                  source=urn:gss:E08000035:fhir subject=9434765919 time=2026-12-30T12:00:00Z
                  data={"package_id":"LCC-PKG-5521"}
            "#]],
        );
        // planned encounters and draft requests record nothing
        assert_eq!(
            translate(&with(enc.clone(), "status", json!("planned")), &ctx()),
            Ok(vec![])
        );
        // A patient on leave holds the bed: the stay, as when in progress.
        let in_progress =
            translate(&with(enc.clone(), "status", json!("in-progress")), &ctx()).unwrap();
        let on_leave = translate(&with(enc, "status", json!("onleave")), &ctx()).unwrap();
        assert!(
            on_leave
                .iter()
                .any(|e| e.event_type() == handover_events::EventType::Admitted),
            "{on_leave:?}"
        );
        assert_eq!(
            on_leave
                .iter()
                .map(|e| (&e.id, &e.data))
                .collect::<Vec<_>>(),
            in_progress
                .iter()
                .map(|e| (&e.id, &e.data))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn patient_with_only_a_local_identifier() {
        let p = fixture("patient.json");
        let ids =
            json!([{"system": "https://www.leeds.gov.uk/Id/mosaic-person", "value": "M-118203"}]);
        check(
            &with(
                with(p, "identifier", ids),
                "managingOrganization",
                json!({"identifier": {"system": GSS_SYSTEM, "value": "E08000035"}}),
            ),
            expect![[r#"
                handover.person.identified.v1 Patient/9f3c1a2e-5b7d-4e1f-8a2b-3c4d5e6f7a80/_history/3#identified.96973624f669
                  source=urn:gss:E08000035:fhir subject=- time=2026-11-20T09:20:00Z
                  data={"birth_date":"1941-03-14","family_name":"Whitfield","given_name":"Margaret","gp_practice":"B86010","local_ids":[{"system":"https://www.leeds.gov.uk/Id/mosaic-person","value":"M-118203"}],"nhs_number_status":"03","postcode":"LS6 4AB"}
            "#]],
        );
    }

    #[test]
    fn unversioned_resources_get_content_digest_ids_and_resends_match() {
        let mut sr = fixture("service_request.json");
        sr.as_object_mut().unwrap().remove("meta");
        let a = translate(&sr, &ctx()).unwrap();
        let b = translate(&sr, &ctx()).unwrap();
        assert_eq!(a, b);
        // A resend whose references are freshly minted urn:uuids says the same: same ids.
        let mut resent = sr.clone();
        resent["subject"]["reference"] = json!("urn:uuid:0b7f6a52-5a0e-4e43-9d0e-6f1b2c3d4e5f");
        assert_eq!(translate(&resent, &ctx()).unwrap()[0].id, a[0].id);
        // A later version saying the same again (a new meta.lastUpdated) is new.
        let mut again = sr.clone();
        again["meta"] = json!({"lastUpdated": "2026-11-25T10:00:00Z"});
        assert_ne!(translate(&again, &ctx()).unwrap()[0].id, a[0].id);
        assert!(
            a[0].id
                .starts_with("ServiceRequest/sr-20261121-0007/_hash/"),
            "{}",
            a[0].id
        );
        let changed = with(sr, "priority", json!("routine"));
        assert_ne!(translate(&changed, &ctx()).unwrap()[0].id, a[0].id);
    }

    #[test]
    fn missing_nhs_number() {
        let enc = fixture("encounter_in_progress.json");
        check_err(
            &with(
                enc.clone(),
                "subject",
                json!({"reference": "Patient/9f3c1a2e"}),
            ),
            expect![[r#"
                error required @ Encounter.subject.identifier: subject has no identifier (a reference alone can only be resolved inside a Bundle): give subject.identifier with system https://fhir.nhs.uk/Id/nhs-number
            "#]],
        );
        check_err(
            &with(enc, "subject", Value::Null),
            expect![[r#"
                error required @ Encounter.subject: subject is required: an identifier with system https://fhir.nhs.uk/Id/nhs-number, or a reference to a Patient in the same Bundle or contained in the resource
            "#]],
        );
    }

    #[test]
    fn invalid_check_digit() {
        let p = fixture("patient.json");
        check_err(
            &with(p, "identifier.0.value", json!("9434765918")),
            expect![[r#"
                error value @ Patient.identifier[0].value: not a valid NHS number: the NHS number's check digit is wrong (Modulus 11)
            "#]],
        );
        let sr = fixture("service_request.json");
        check_err(
            &with(sr, "subject.identifier.value", json!("943 476 5918")),
            expect![[r#"
                error value @ ServiceRequest.subject.identifier.value: not a valid NHS number: the NHS number's check digit is wrong (Modulus 11)
            "#]],
        );
    }

    #[test]
    fn unknown_codes() {
        check_err(
            &with(
                fixture("episode_of_care.json"),
                "type.0.coding.0.code",
                json!("RESPITE-X"),
            ),
            expect![[r#"
                error code-invalid @ EpisodeOfCare.type[0].coding[0].code: "RESPITE-X" is not a known service type (home-care/HC, reablement/REAB, residential/RES, nursing/NURS, community-bed/CB, equipment/EQ, other)
            "#]],
        );
        check_err(
            &with(
                fixture("service_request.json"),
                "priority",
                json!("whenever"),
            ),
            expect![[r#"
                error code-invalid @ ServiceRequest.priority: "whenever" is not a request priority (routine, urgent, asap, stat)
            "#]],
        );
        let fin = fixture("encounter_finished.json");
        check_err(
            &with(
                fin.clone(),
                "hospitalization.dischargeDisposition.coding.0.code",
                json!("beach"),
            ),
            expect![[r#"
                error code-invalid @ Encounter.hospitalization.dischargeDisposition.coding[0].code: "beach" is not a known discharge destination (an NHS Data Dictionary code such as 19, or an HL7 discharge-disposition code such as home)
            "#]],
        );
        check_err(
            &with(fin, "status", json!("done")),
            expect![[r#"
            error code-invalid @ Encounter.status: "done" is not an Encounter status
        "#]],
        );
        check_err(
            &with(
                fixture("patient.json"),
                "identifier.0.extension.0.valueCodeableConcept.coding.0.code",
                json!("99"),
            ),
            expect![[r#"
                error code-invalid @ Patient.identifier[0].extension[0].valueCodeableConcept.coding[0].code: "99" is not an NHS number verification status (01 to 08)
            "#]],
        );
    }

    #[test]
    fn malformed_dates() {
        check_err(
            &with(
                fixture("encounter_in_progress.json"),
                "period.start",
                json!("20/11/2026 09:14"),
            ),
            expect![[r#"
                error value @ Encounter.period.start: "20/11/2026 09:14" is not a FHIR dateTime with a time (e.g. 2026-11-20T09:14:00Z; no offset means UK local time)
            "#]],
        );
        check_err(
            &with(fixture("patient.json"), "birthDate", json!("1941-3")),
            expect![[r#"
                error value @ Patient.birthDate: "1941-3" is not a full date (YYYY-MM-DD), year-month or year
            "#]],
        );
        check_err(
            &with(
                fixture("service_request.json"),
                "occurrenceDateTime",
                json!("next Tuesday"),
            ),
            expect![[r#"
                error value @ ServiceRequest.occurrenceDateTime: "next Tuesday" is not a full FHIR date (YYYY-MM-DD) or dateTime
            "#]],
        );
        check_err(
            &with(
                fixture("encounter_finished.json"),
                "period.end",
                Value::Null,
            ),
            expect![[r#"
                error required @ Encounter.period.end: period.end (the discharge time) is required for a finished Encounter
            "#]],
        );
    }

    #[test]
    fn wrong_resource_type_and_structure() {
        check_err(
            &json!({"resourceType": "Observation", "id": "o1", "status": "final"}),
            expect![[r#"
                error not-supported @ Observation: resource type Observation is not supported: send Encounter, ServiceRequest, EpisodeOfCare or Patient
            "#]],
        );
        check_err(
            &json!({"id": "x"}),
            expect![[r#"
            error required @ Resource.resourceType: resourceType is required
        "#]],
        );
        check_err(
            &json!([1, 2]),
            expect![[r#"
            error structure @ -: the body must be a JSON object (a FHIR resource)
        "#]],
        );
        check_err(
            &with(
                fixture("bundle_transaction.json"),
                "type",
                json!("collection"),
            ),
            expect![[r#"
                error not-supported @ Bundle.type: Bundle type "collection" is not supported: send a transaction, batch or message Bundle
            "#]],
        );
    }

    #[test]
    fn a_bundle_with_one_bad_entry_yields_nothing_and_names_the_entry() {
        let b = fixture("bundle_transaction.json");
        let b = with(
            b,
            "entry.0.resource.identifier.0.value",
            json!("9434765918"),
        );
        let b = with(b, "entry.4.resource.period.start", json!("27/11/2026"));
        check_err(
            &b,
            expect![[r#"
            error value @ Bundle.entry[0].resource.identifier[0].value: not a valid NHS number: the NHS number's check digit is wrong (Modulus 11)
            error value @ Bundle.entry[4].resource.period.start: "27/11/2026" is not a full FHIR date (YYYY-MM-DD) or dateTime
        "#]],
        );
    }

    #[tokio::test]
    async fn acknowledges_only_after_the_sink_acknowledges() {
        // The unit of work the HTTP handler performs: translate, publish, report success.
        let bundle = fixture("bundle_transaction.json");
        assert_acks_after_durability(|sink| {
            let bundle = bundle.clone();
            async move {
                let events = translate(&bundle, &ctx()).unwrap();
                sink.publish(&events).await.is_ok()
            }
        })
        .await;
    }

    #[test]
    fn operation_outcome_shape() {
        let oo = operation_outcome(&[Issue::error(
            IssueCode::CodeInvalid,
            Some("Encounter.status".into()),
            "bad",
        )]);
        assert_eq!(
            oo,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "code-invalid", "diagnostics": "bad", "expression": ["Encounter.status"]}]})
        );
    }

    #[test]
    fn admission_methods() {
        let got: Vec<_> = ["11", "21", "2A", "31", "81", "82", "99", ""]
            .iter()
            .map(|c| admission_method(c))
            .collect();
        assert_eq!(
            got,
            [
                "elective",
                "emergency",
                "emergency",
                "maternity",
                "transfer",
                "maternity",
                "other",
                "other"
            ]
        );
    }

    #[test]
    fn a_discharge_destination_not_known_or_not_applicable_is_left_out() {
        for code in ["99", "98"] {
            let e = with(
                fixture("encounter_finished.json"),
                "hospitalization.dischargeDisposition",
                json!({"coding": [{"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeDestinationEngland", "code": code}]}),
            );
            let d = &data(&e)[0];
            assert!(d.get("destination").is_none(), "{code}: {d}");
            assert_eq!(d["discharged_at"], "2026-11-27T16:30:00Z", "{code}");
        }
    }

    #[test]
    fn extension_codings_of_other_systems_are_passed_over() {
        let snomed = |code: &str| json!({"system": "http://snomed.info/sct", "code": code});
        let e = with(
            fixture("encounter_finished.json"),
            "extension.1.valueCodeableConcept.coding",
            json!([snomed("306689006"), {"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeMethodEngland", "code": "2"}]),
        );
        assert_eq!(data(&e)[0]["method"], 2);
        let admission = |codings: Value| {
            let e = with(
                fixture("encounter_in_progress.json"),
                "extension",
                json!([{"url": ADMISSION_METHOD_URL, "valueCodeableConcept": {"coding": codings}}]),
            );
            data(&e)[0].get("admission_method").cloned()
        };
        let england = |code: &str| json!({"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-AdmissionMethodEngland", "code": code});
        assert_eq!(
            admission(json!([snomed("183452005"), england("21")])),
            Some(json!("emergency"))
        );
        assert_eq!(
            admission(json!([snomed("183452005"), {"code": "11"}])),
            Some(json!("elective"))
        );
        // Nothing understood: left out; a code of its own system it does not map: other.
        assert_eq!(admission(json!([snomed("183452005")])), None);
        assert_eq!(admission(json!([england("ZZZ")])), Some(json!("other")));
        let p = with(
            fixture("patient.json"),
            "identifier.0.extension.0.valueCodeableConcept.coding",
            json!([{"system": "http://example.org/other", "code": "999"},
                   {"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland", "code": "01"}]),
        );
        assert_eq!(data(&p)[0]["nhs_number_status"], "01");
        // Only a code of the extension's own system that it does not know is an error.
        check_err(
            &with(
                fixture("encounter_finished.json"),
                "extension.1.valueCodeableConcept.coding",
                json!([snomed("306689006"), {"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeMethodEngland", "code": "0"}]),
            ),
            expect![[r#"
                error code-invalid @ Encounter.extension[1].valueCodeableConcept.coding[1].code: "0" is not a UK Core discharge method (1 to 7, or 8/9 for none)
            "#]],
        );
    }

    #[test]
    fn england_s_discharge_methods_6_and_7_are_the_catalogue_s_2() {
        // UK Core's England code system (1.1.0) has no 2: it splits it into 6 (discharged
        // themselves) and 7 (by a relative or advocate). Refusing them lost the discharge.
        for code in ["6", "7"] {
            let e = with(
                fixture("encounter_finished.json"),
                "extension.1.valueCodeableConcept.coding",
                json!([{"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeMethodEngland", "code": code}]),
            );
            assert_eq!(data(&e)[0]["method"], 2, "code {code}");
        }
        // The same extension on `hospitalization` (Data Standards Wales puts it there), and
        // under Care Connect's (STU3) name.
        let mut e = fixture("encounter_finished.json");
        let ext = e["extension"][1].take();
        e["extension"] = json!([]);
        let mut ext = with(ext, "valueCodeableConcept.coding", json!([{"code": "4"}]));
        e["hospitalization"]["extension"] = json!([ext.clone()]);
        assert_eq!(data(&e)[0]["method"], 4);
        ext["url"] = json!(
            "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-DischargeMethod-1"
        );
        e["hospitalization"]["extension"] = json!([ext]);
        assert_eq!(data(&e)[0]["method"], 4);
    }

    /// A transaction Bundle of `patient` and `encounter`, at `fullUrl`s `patient_url` and
    /// `urn:uuid:…02`.
    fn bundle_of(patient: Value, patient_url: &str, encounter: Value) -> Value {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": patient_url, "resource": patient, "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:0b7f6a52-5a0e-4e43-9d0e-6f1b2c3d4e02", "resource": encounter,
             "request": {"method": "POST", "url": "Encounter"}}
        ]})
    }

    /// The subjects of the events of `resource` (a Bundle or one resource).
    fn subjects(resource: &Value) -> Vec<String> {
        translate(resource, &ctx())
            .unwrap_or_else(|issues| panic!("unexpected issues:\n{}", render_issues(&issues)))
            .iter()
            .map(|e| {
                e.subject
                    .map(|n| n.as_string())
                    .unwrap_or_else(|| format!("local {}", e.data.to_json()["local_id"]))
            })
            .collect()
    }

    #[test]
    fn a_referenced_patient_s_nhs_number_wins_over_a_local_identifier() {
        let patient = json!({"resourceType": "Patient", "id": "p2",
            "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}]});
        let mrn = json!({"system": "https://rr8.example.nhs.uk/Id/mrn", "value": "MRN0051"});
        let url = "urn:uuid:0b7f6a52-5a0e-4e43-9d0e-6f1b2c3d4e01";
        let encounter = with(
            fixture("encounter_in_progress.json"),
            "subject",
            json!({"reference": url, "identifier": mrn}),
        );
        let b = bundle_of(patient.clone(), url, encounter.clone());
        assert!(
            subjects(&b).iter().all(|s| s == "9434765919"),
            "{:?}",
            subjects(&b)
        );
        // Contained, likewise.
        let mut contained = with(
            encounter.clone(),
            "subject",
            json!({"reference": "#p2", "identifier": mrn}),
        );
        contained["contained"] = json!([patient]);
        assert!(subjects(&contained).iter().all(|s| s == "9434765919"));
        // A reference that cannot be resolved leaves the local identifier standing.
        let alone = with(
            encounter,
            "subject",
            json!({"reference": "Patient/elsewhere", "identifier": mrn}),
        );
        assert!(subjects(&alone).iter().all(|s| s.contains("MRN0051")));
    }

    #[test]
    fn versioned_and_relative_references_resolve_in_a_bundle() {
        let patient = json!({"resourceType": "Patient", "id": "p3",
            "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}]});
        let by = |reference: &str| {
            with(
                fixture("encounter_in_progress.json"),
                "subject",
                json!({"reference": reference}),
            )
        };
        let url = "https://ehr.rr8.example.nhs.uk/fhir/Patient/p3";
        for reference in ["Patient/p3/_history/1", url, "Patient/p3"] {
            let b = bundle_of(patient.clone(), url, by(reference));
            assert!(
                subjects(&b).iter().all(|s| s == "9434765919"),
                "{reference}"
            );
        }
        // The Patient named by its absolute fullUrl alone (no id).
        let mut no_id = patient;
        no_id.as_object_mut().unwrap().remove("id");
        let b = bundle_of(no_id, url, by("Patient/p3"));
        assert!(subjects(&b).iter().all(|s| s == "9434765919"));
        let b = bundle_of(
            json!({"resourceType": "Patient", "id": "p3"}),
            url,
            by("Patient/p4/_history/1"),
        );
        check_err(
            &b,
            expect![[r#"
                error required @ Bundle.entry[1].resource.subject.identifier: subject names no Patient of this Bundle: give subject.identifier with system https://fhir.nhs.uk/Id/nhs-number
            "#]],
        );
    }

    #[test]
    fn contained_organisations_are_read_like_bundle_entries() {
        let mut sr = with(
            fixture("service_request.json"),
            "performer",
            json!([{"reference": "#la"}]),
        );
        sr["requester"] = json!({"reference": "#trust"});
        sr["contained"] = json!([
            {"resourceType": "Organization", "id": "la", "name": "Leeds City Council",
             "identifier": [{"system": GSS_SYSTEM, "value": "E08000035"}]},
            {"resourceType": "Organization", "id": "trust",
             "identifier": [{"system": ODS_ORGANISATION_SYSTEM, "value": "RX1"}]}
        ]);
        let events = translate(&sr, &ctx()).unwrap();
        assert_eq!(events[0].data.to_json()["to_council"], "E08000035");
        assert_eq!(events[0].data.to_json()["from_org"], "RX1");
        assert_eq!(events[0].source, "urn:ods:RX1:fhir");
        let mut enc = with(
            fixture("encounter_in_progress.json"),
            "serviceProvider",
            json!({"reference": "#site"}),
        );
        enc["contained"] = json!([{"resourceType": "Organization", "id": "site",
            "identifier": [{"system": ODS_SITE_SYSTEM, "value": "RX1CC"}]}]);
        let events = translate(&enc, &ctx()).unwrap();
        assert_eq!(events[0].source, "urn:ods:RX1:fhir");
        assert_eq!(events[0].data.to_json()["site"], "RX1CC");
    }

    #[test]
    fn an_old_nhs_number_is_replaced_by_the_current_one() {
        let p = with(
            fixture("patient.json"),
            "identifier",
            json!([
                {"use": "old", "system": NHS_NUMBER_SYSTEM, "value": "9991001115"},
                {"use": "official", "system": NHS_NUMBER_SYSTEM, "value": "9991001123"},
                {"system": "https://fhir.leedsth.nhs.uk/Id/mrn", "value": "RR80042317"}
            ]),
        );
        check(
            &p,
            expect![[r#"
                handover.person.identified.v1 Patient/9f3c1a2e-5b7d-4e1f-8a2b-3c4d5e6f7a80/_history/3#identified.f5ba92af07c0
                  source=urn:ods:RR8:fhir subject=9991001123 time=2026-11-20T09:20:00Z
                  data={"birth_date":"1941-03-14","family_name":"Whitfield","given_name":"Margaret","gp_practice":"B86010","local_ids":[{"system":"https://fhir.leedsth.nhs.uk/Id/mrn","value":"RR80042317"}],"nhs_number_status":"02","postcode":"LS6 4AB"}
                handover.person.nhs-number-changed.v1 Patient/9f3c1a2e-5b7d-4e1f-8a2b-3c4d5e6f7a80/_nhs-number-changed#nhs-number-changed.6e0d25582775
                  source=urn:ods:RR8:fhir subject=9991001123 time=2026-11-20T09:20:00Z
                  data={"previous_nhs_number":"9991001115"}
            "#]],
        );
        // A later version still listing the old number records the change once (same id).
        let later = with(p.clone(), "meta.versionId", json!("4"));
        let ids = |r: &Value| -> Vec<String> {
            translate(r, &ctx())
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(ids(&later)[1], ids(&p)[1]);
        assert_ne!(ids(&later)[0], ids(&p)[0]);
        // An old number alone is not the subject: the Patient is known by its local id.
        let only_old = with(
            p,
            "identifier",
            json!([{"use": "old", "system": NHS_NUMBER_SYSTEM, "value": "9991001115"},
                   {"system": "https://fhir.leedsth.nhs.uk/Id/mrn", "value": "RR80042317"}]),
        );
        let events = translate(&only_old, &ctx()).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].subject, None);
    }

    #[test]
    fn near_misses_of_the_nhs_number_system_are_read_as_the_nhs_number() {
        for system in [
            "http://fhir.nhs.uk/Id/nhs-number",
            "https://fhir.nhs.uk/Id/nhs-number/",
            "https://FHIR.NHS.UK/Id/nhs-number",
        ] {
            let e = with(
                fixture("encounter_in_progress.json"),
                "subject.identifier.system",
                json!(system),
            );
            assert!(subjects(&e).iter().all(|s| s == "9434765919"), "{system}");
            let p = with(
                fixture("patient.json"),
                "identifier.0.system",
                json!(system),
            );
            assert_eq!(subjects(&p), vec!["9434765919".to_owned()], "{system}");
        }
        // Not the NHS number system: a local id, as before.
        let e = with(
            fixture("encounter_in_progress.json"),
            "subject.identifier.system",
            json!("https://fhir.nhs.uk/Id/nhs-number-old"),
        );
        assert!(subjects(&e).iter().all(|s| s.starts_with("local ")));
    }

    #[test]
    fn a_conditional_reference_by_nhs_number_names_the_person() {
        let e = fixture("encounter_in_progress.json");
        for reference in [
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919",
            "Patient?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9434765919&active=true",
        ] {
            let c = with(e.clone(), "subject", json!({"reference": reference}));
            assert!(subjects(&c).iter().all(|s| s == "9434765919"), "{reference}");
            // In a transaction, whether or not the Patient is one of its entries.
            let b = bundle_of(
                fixture("patient.json"),
                "urn:uuid:0b7f6a52-5a0e-4e43-9d0e-6f1b2c3d4e01",
                c,
            );
            assert!(subjects(&b).iter().all(|s| s == "9434765919"), "{reference}");
        }
        let bad = with(
            e,
            "subject",
            json!({"reference": "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9434765918"}),
        );
        check_err(
            &bad,
            expect![[r#"
                error value @ Encounter.subject.reference: the conditional reference's identifier is not a valid NHS number: the NHS number's check digit is wrong (Modulus 11)
            "#]],
        );
    }

    #[test]
    fn a_modifier_extension_is_refused_wherever_it_is() {
        let ext = json!([{"url": "https://example.org/fhir/do-not-act", "valueBoolean": true}]);
        check_err(
            &with(
                fixture("encounter_in_progress.json"),
                "modifierExtension",
                ext.clone(),
            ),
            expect![[r#"
                error not-supported @ Encounter.modifierExtension[0]: the modifier extension https://example.org/fhir/do-not-act is not understood: a modifier extension changes the meaning of the element holding it, so Handover refuses it rather than record the element as if it were absent (FHIR R4 extensibility.html#modifierExtension)
            "#]],
        );
        let mut p = fixture("patient.json");
        p["name"][0]["modifierExtension"] = ext;
        let issues = translate(&p, &ctx()).unwrap_err();
        assert_eq!(
            issues[0].expression.as_deref(),
            Some("Patient.name[0].modifierExtension[0]")
        );
        // An ordinary extension is fine.
        let plain = with(
            fixture("encounter_in_progress.json"),
            "extension",
            json!([{"url": "https://example.org/fhir/note", "valueString": "x"}]),
        );
        assert!(!data(&plain).is_empty());
    }

    #[test]
    fn a_name_sent_as_text_alone_is_split_into_given_and_family() {
        for (name, given, family) in [
            (
                json!({"use": "official", "text": "Margaret Ann Whitfield"}),
                Some("Margaret"),
                Some("Whitfield"),
            ),
            (
                json!({"text": "  WHITFIELD, Margaret Ann "}),
                Some("Margaret"),
                Some("WHITFIELD"),
            ),
            (
                json!({"text": "Mrs. Margaret Whitfield"}),
                Some("Margaret"),
                Some("Whitfield"),
            ),
            (
                json!({"text": "Whitfield, Mrs Margaret"}),
                Some("Margaret"),
                Some("Whitfield"),
            ),
            (json!({"text": "Whitfield"}), None, Some("Whitfield")),
            (
                json!({"text": "Margaret \"Peggy\" Whitfield (née Smith)"}),
                Some("Margaret"),
                Some("Whitfield"),
            ),
            (
                json!({"text": "Dr Margaret Whitfield \u{201c}Peggy\u{201d}"}),
                Some("Margaret"),
                Some("Whitfield"),
            ),
            (json!({"text": "   "}), None, None),
            // Parts win over the text whenever there are any.
            (
                json!({"text": "Peggy Whitfield", "given": ["Margaret"]}),
                Some("Margaret"),
                None,
            ),
        ] {
            let p = with(fixture("patient.json"), "name", json!([name]));
            let d = &data(&p)[0];
            assert_eq!(d["given_name"].as_str(), given, "{name}");
            assert_eq!(d["family_name"].as_str(), family, "{name}");
        }
        // A text of the wrong kind is refused at its path, as other elements are.
        let p = with(
            fixture("patient.json"),
            "name",
            json!([{"text": ["Margaret Whitfield"]}]),
        );
        let issues = translate(&p, &ctx()).unwrap_err();
        assert_eq!(issues[0].code, IssueCode::Structure);
        assert_eq!(
            issues[0].expression.as_deref(),
            Some("Patient.name[0].text")
        );
    }

    #[test]
    fn maiden_names_are_passed_over_and_names_and_postcodes_tidied() {
        let p = with(
            with(
                fixture("patient.json"),
                "name",
                json!([
                    {"use": "maiden", "family": "Maid", "given": ["Ann"]},
                    {"use": "nickname", "given": ["Annie"]},
                    {"family": "  Whitfield ", "given": ["  ", " Ann "]}
                ]),
            ),
            "address",
            json!([{"use": "home", "postalCode": "  ls1  4ap "}]),
        );
        let d = &data(&p)[0];
        assert_eq!(d["family_name"], "Whitfield");
        assert_eq!(d["given_name"], "Ann");
        assert_eq!(d["postcode"], "LS1 4AP");
    }

    #[test]
    fn a_service_provider_named_only_by_display_leaves_the_site_the_caller_s() {
        let e = with(
            fixture("encounter_in_progress.json"),
            "serviceProvider",
            json!({"display": "RR8 Hospitals"}),
        );
        assert_eq!(data(&e)[0]["site"], "RR8");
    }

    #[test]
    fn a_referral_without_a_priority_is_routine() {
        let sr = fixture("service_request.json");
        let mut no_priority = sr.clone();
        no_priority.as_object_mut().unwrap().remove("priority");
        assert_eq!(data(&no_priority)[0]["urgency"], "routine");
        assert_eq!(data(&sr)[0]["urgency"], "urgent");
    }

    #[test]
    fn transaction_entries_need_a_request_for_their_own_resource() {
        let b = fixture("bundle_transaction.json");
        let issues = |f: &dyn Fn(&mut Value)| {
            let mut b = b.clone();
            f(&mut b["entry"][1]);
            render_issues(&translate(&b, &ctx()).unwrap_err())
        };
        expect![[r#"
            error required @ Bundle.entry[1].request: every entry of a transaction or batch needs a request (method and url; FHIR R4 invariant bdl-3)
        "#]]
        .assert_eq(&issues(&|e| {
            e.as_object_mut().unwrap().remove("request");
        }));
        expect![[r#"
            error invalid @ Bundle.entry[1].request.url: request.url "Patient" does not name the entry's resource type Encounter
        "#]]
        .assert_eq(&issues(&|e| e["request"] = json!({"method": "POST", "url": "Patient"})));
        expect![[r#"
            error invalid @ Bundle.entry[1].request.url: request.url names Encounter/other-id, but the resource's id is "enc-4471"
        "#]]
        .assert_eq(&issues(&|e| {
            e["request"] = json!({"method": "PUT", "url": "Encounter/other-id"})
        }));
        expect![[r#"
            error not-supported @ Bundle.entry[1].request.method: PATCH entries with a resource are not supported: send the resource with request.method POST or PUT
        "#]]
        .assert_eq(&issues(&|e| {
            e["request"] = json!({"method": "PATCH", "url": "Encounter/enc-4471"})
        }));
        // Conditional and absolute urls name the type too.
        for url in [
            "Encounter?identifier=https://rr8.example/spell|RR8-SP-2026-118834",
            "https://ehr.example.nhs.uk/fhir/Encounter/enc-4471",
            "https://ehr.example.nhs.uk/fhir/Encounter",
        ] {
            let mut ok = b.clone();
            ok["entry"][1]["request"] = json!({"method": "PUT", "url": url});
            assert!(translate(&ok, &ctx()).is_ok(), "{url}");
        }
    }

    #[test]
    fn a_message_bundle_starts_with_its_message_header() {
        let b = json!({"resourceType": "Bundle", "type": "message", "entry": [
            {"fullUrl": "urn:uuid:0b7f6a52-5a0e-4e43-9d0e-6f1b2c3d4e02",
             "resource": fixture("encounter_in_progress.json")}]});
        check_err(
            &b,
            expect![[r#"
                error structure @ Bundle.entry[0].resource: a message Bundle starts with its MessageHeader (FHIR R4 invariant bdl-12)
            "#]],
        );
    }

    #[test]
    fn the_legacy_nhs_number_system_is_read_as_the_nhs_number() {
        let p = with(
            fixture("patient.json"),
            "identifier.0.system",
            json!(LEGACY_NHS_NUMBER_SYSTEM),
        );
        let events = translate(&p, &ctx()).unwrap();
        assert_eq!(
            events[0].subject.map(|n| n.as_string()).as_deref(),
            Some("9434765919")
        );
        let e = with(
            fixture("encounter_in_progress.json"),
            "subject.identifier.system",
            json!(LEGACY_NHS_NUMBER_SYSTEM),
        );
        assert!(subjects(&e).iter().all(|s| s == "9434765919"));
    }

    #[test]
    fn a_period_ending_before_it_starts_is_refused() {
        check_err(
            &with(
                fixture("encounter_finished.json"),
                "period",
                json!({"start": "2026-11-23T15:00:00Z", "end": "2026-11-20T09:00:00Z"}),
            ),
            expect![[r#"
                error value @ Encounter.period: period.end (2026-11-20T09:00:00Z) is before period.start (2026-11-23T15:00:00Z): FHIR invariant per-1 says a Period's start SHALL have a lower value than its end
            "#]],
        );
        // A date alone as the end covers its day.
        let same_day = with(
            fixture("encounter_finished.json"),
            "period",
            json!({"start": "2026-11-20T09:00:00Z", "end": "2026-11-20"}),
        );
        assert!(translate(&same_day, &ctx()).is_ok());
    }

    #[test]
    fn the_discharge_ward_is_the_one_left_last_whatever_the_order() {
        let discharged_from = |locations: Value| {
            let e = with(fixture("encounter_finished.json"), "location", locations);
            data(&e)[0]["ward"].clone()
        };
        let ward = |name: &str, start: &str, end: Option<&str>| {
            let mut l = json!({"location": {"display": name}, "period": {"start": start}});
            if let Some(end) = end {
                l["period"]["end"] = json!(end);
            }
            l
        };
        let ward_9 = ward(
            "Ward 9",
            "2026-11-22T14:00:00Z",
            Some("2026-11-27T16:30:00Z"),
        );
        let amu = ward("AMU", "2026-11-20T09:14:00Z", Some("2026-11-22T14:00:00Z"));
        assert_eq!(discharged_from(json!([ward_9, amu])), "Ward 9");
        assert_eq!(discharged_from(json!([amu, ward_9])), "Ward 9");
        // A period still open at discharge is the last ward.
        let open = ward("Ward 9", "2026-11-22T14:00:00Z", None);
        assert_eq!(discharged_from(json!([open, amu])), "Ward 9");
        // No periods: the last listed.
        assert_eq!(
            discharged_from(
                json!([{"location": {"display": "A"}}, {"location": {"display": "B"}}])
            ),
            "B"
        );
    }

    #[test]
    fn a_ward_is_named_rather_than_its_bed() {
        let typed = |name: &str, code: &str| {
            json!({"location": {"display": name}, "status": "active",
                   "period": {"start": "2026-11-20T09:14:00Z"},
                   "physicalType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/location-physical-type", "code": code}]}})
        };
        let e = with(
            fixture("encounter_in_progress.json"),
            "location",
            json!([typed("Bed 4", "bd"), typed("Ward 7", "wa")]),
        );
        let d = data(&e);
        assert_eq!(d.len(), 1, "a bed beside its ward is no ward move: {d:?}");
        assert_eq!(d[0]["ward"], "Ward 7");
        let mut fin = with(
            fixture("encounter_finished.json"),
            "location",
            json!([typed("Ward 7", "wa"), typed("Bed 4", "bd")]),
        );
        fin["location"][0]["period"]["end"] = json!("2026-11-27T16:30:00Z");
        fin["location"][1]["period"]["end"] = json!("2026-11-27T16:30:00Z");
        assert_eq!(data(&fin)[0]["ward"], "Ward 7");
        // The type may be on the referenced Location instead.
        let mut by_ref = with(
            fixture("encounter_in_progress.json"),
            "location",
            json!([{"location": {"reference": "#bed"}, "status": "active"},
                   {"location": {"reference": "#ward"}, "status": "active"}]),
        );
        by_ref["contained"] = json!([
            {"resourceType": "Location", "id": "bed", "name": "Bed 4", "physicalType": {"coding": [{"code": "bd"}]}},
            {"resourceType": "Location", "id": "ward", "name": "Ward 7", "physicalType": {"coding": [{"code": "wa"}]}}
        ]);
        assert_eq!(data(&by_ref)[0]["ward"], "Ward 7");
    }

    #[test]
    fn the_same_instant_written_differently_gives_the_same_ids() {
        let mut sr = fixture("service_request.json");
        sr["meta"] = json!({"lastUpdated": "2026-11-20T09:15:00Z"});
        let a = translate(&sr, &ctx()).unwrap();
        for same in [
            "2026-11-20T09:15:00.000+00:00",
            "2026-11-20T09:15:00.000Z",
            "2026-11-20T09:15:00+00:00",
        ] {
            sr["meta"]["lastUpdated"] = json!(same);
            assert_eq!(translate(&sr, &ctx()).unwrap()[0].id, a[0].id, "{same}");
        }
        // The `Z` form hashes as the string itself did before instants were normalised, so
        // ids stored from it are unchanged.
        let before = hex::encode(&Sha256::digest(b"2026-11-20T09:15:00Z")[..8]);
        assert!(
            a[0].id.contains(&format!("/_hash/{before}#")),
            "{}",
            a[0].id
        );
        sr["meta"]["lastUpdated"] = json!("2026-11-20T09:15:01Z");
        assert_ne!(translate(&sr, &ctx()).unwrap()[0].id, a[0].id);
    }

    #[test]
    fn unclear_input_gets_an_issue_saying_what_is_wrong() {
        check_err(
            &with(fixture("encounter_in_progress.json"), "status", json!(5)),
            expect![[r#"
                error structure @ Encounter.status: status must be a code (a JSON string such as "in-progress"), not a number
            "#]],
        );
        check_err(
            &with(
                fixture("encounter_in_progress.json"),
                "subject.identifier",
                json!([{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}]),
            ),
            expect![[r#"
                error structure @ Encounter.subject.identifier: Reference.identifier is a single Identifier (a JSON object), not an array
            "#]],
        );
        check_err(
            &with(
                fixture("episode_of_care.json"),
                "type",
                json!([{"text": "Home care"}]),
            ),
            expect![[r#"
                error required @ EpisodeOfCare.type[0].coding: type needs a coding with the service type code (e.g. reablement, home-care): text alone cannot be mapped
            "#]],
        );
        check_err(
            &with(
                fixture("service_request.json"),
                "performer",
                json!([{"display": "Leeds City Council"}]),
            ),
            expect![[r#"
                error required @ ServiceRequest.performer: no performer is a council: give a performer with an identifier of system http://statistics.data.gov.uk/id/statistical-geography (its GSS code), or a reference to an Organization carrying one (contained or in the Bundle)
            "#]],
        );
        // The GSS system over https, or with a trailing slash, is read.
        for system in [
            "https://statistics.data.gov.uk/id/statistical-geography",
            "http://statistics.data.gov.uk/id/statistical-geography/",
        ] {
            let sr = with(
                fixture("service_request.json"),
                "performer",
                json!([{"identifier": {"system": system, "value": "E08000035"}}]),
            );
            assert_eq!(data(&sr)[0]["to_council"], "E08000035", "{system}");
        }
        let mut b = fixture("bundle_transaction.json");
        b["entry"]
            .as_array_mut()
            .unwrap()
            .push(json!({"request": {"method": "DELETE", "url": "Encounter?identifier=x|1"}}));
        check_err(
            &b,
            expect![[r#"
                error not-supported @ Bundle.entry[5].request.method: DELETE entries are not supported: Handover records events, not resources: to undo what a resource recorded, send it with status entered-in-error (or cancelled)
            "#]],
        );
    }

    #[test]
    fn what_records_nothing_says_why() {
        let amb = with(
            fixture("encounter_in_progress.json"),
            "class",
            json!({"code": "AMB"}),
        );
        assert!(
            nothing_recorded(&amb).contains("class AMB is an attendance"),
            "{}",
            nothing_recorded(&amb)
        );
        let planned = with(
            fixture("encounter_in_progress.json"),
            "status",
            json!("planned"),
        );
        assert!(nothing_recorded(&planned).contains("Encounter with status planned"));
        assert!(nothing_recorded(&json!({"resourceType": "Organization"}))
            .contains("read only for what other entries refer to"));
    }

    #[test]
    fn elements_of_the_wrong_json_kind_are_refused_and_a_lone_value_is_read_as_one() {
        let fin = fixture("encounter_finished.json");
        // Each would otherwise be read as absent: a discharge recorded without its
        // destination or its method, or a stay under another id.
        for (path, value) in [
            ("period", json!("2026-11-20")),
            ("period.end", json!(20261127)),
            ("hospitalization", json!([])),
            ("hospitalization.dischargeDisposition", json!("19")),
            ("serviceProvider", json!("RR8")),
            ("meta.lastUpdated", json!(123)),
            ("identifier", json!("RR8-SP-2026-118834")),
        ] {
            assert!(
                translate(&with(fin.clone(), path, value.clone()), &ctx()).is_err(),
                "{path} = {value}"
            );
        }
        let mut bad = with(fin.clone(), "hospitalization", json!([]));
        bad = with(bad, "period.end", json!(20261127));
        bad["location"][1]["period"] = json!(["2026-11-21"]);
        bad["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = json!(21);
        check_err(
            &bad,
            expect![[r#"
                error structure @ Encounter.extension[0].valueCodeableConcept.coding[0].code: code must be a code (a JSON string), not a number
                error structure @ Encounter.period.end: end must be a dateTime (a JSON string), not a number
                error structure @ Encounter.location[1].period: period is a single Period (a JSON object), not an array
                error structure @ Encounter.hospitalization: hospitalization is a single BackboneElement (a JSON object), not an array
            "#]],
        );
        // The value is never quoted back: it may be an NHS number.
        let issues = translate(
            &with(
                fin.clone(),
                "identifier",
                json!([{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": 9434765919_u64}]),
            ),
            &ctx(),
        )
        .unwrap_err();
        let text = render_issues(&issues);
        assert!(
            text.contains("value must be a string (a JSON string), not a number")
                && !text.contains("9434765919"),
            "{text}"
        );
        // An array of one written as its one value: read as FHIR JSON means it.
        let lone = with(
            with(
                fin.clone(),
                "identifier",
                json!({"system": "https://fhir.leedsth.nhs.uk/Id/spell-number", "value": "RR8-SP-2026-118834"}),
            ),
            "location",
            json!({"location": {"display": "Ward L27 (Elderly Care)"}, "status": "completed"}),
        );
        let (a, b) = (data(&fin), data(&lone));
        assert_eq!(a, b);
        let patient = with(
            with(
                fixture("patient.json"),
                "name",
                json!({"family": "Whitfield", "given": "Margaret"}),
            ),
            "address",
            json!({"postalCode": "LS6 4AB"}),
        );
        let d = &data(&patient)[0];
        assert_eq!(
            (
                d["given_name"].as_str(),
                d["family_name"].as_str(),
                d["postcode"].as_str()
            ),
            (Some("Margaret"), Some("Whitfield"), Some("LS6 4AB"))
        );
        check_err(
            &with(
                fixture("patient.json"),
                "name",
                json!([{"family": ["Whitfield"]}]),
            ),
            expect![[r#"
                error structure @ Patient.name[0].family: family is a single string (a JSON string), not an array
            "#]],
        );
    }

    #[test]
    fn a_referral_that_is_not_to_be_made_records_nothing() {
        // doNotPerform is a modifier element: the request is that the service NOT be given.
        let sr = with(fixture("service_request.json"), "doNotPerform", json!(true));
        assert!(data(&sr).is_empty());
        assert!(nothing_recorded(&sr).contains("doNotPerform"));
        let sr = with(
            fixture("service_request.json"),
            "doNotPerform",
            json!(false),
        );
        assert_eq!(data(&sr).len(), 1);
    }

    #[test]
    fn an_inactive_patient_replaced_by_another_records_the_change_of_number_only() {
        let old = with(fixture("patient.json"), "active", json!(false));
        // No link: a record no longer in use says nothing.
        assert!(data(&old).is_empty());
        assert!(nothing_recorded(&old).contains("inactive"));
        let replaced = with(
            old,
            "link",
            json!([{"type": "replaced-by", "other": {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": "9990000018"}}}]),
        );
        check(
            &replaced,
            expect![[r#"
                handover.person.nhs-number-changed.v1 Patient/9f3c1a2e-5b7d-4e1f-8a2b-3c4d5e6f7a80/_nhs-number-changed#nhs-number-changed.7b6b22f413ab
                  source=urn:ods:RR8:fhir subject=9990000018 time=2026-11-20T09:20:00Z
                  data={"previous_nhs_number":"9434765919"}
            "#]],
        );
        // The surviving record's `replaces` link: the other number is an old one of theirs.
        let survivor = with(
            fixture("patient.json"),
            "link",
            json!([{"type": "replaces", "other": {"reference": "https://api.service.nhs.uk/personal-demographics/FHIR/R4/Patient/9990000018"}}]),
        );
        let events = translate(&survivor, &ctx()).unwrap();
        let changed: Vec<_> = events
            .iter()
            .filter(|e| e.event_type() == handover_events::EventType::NhsNumberChanged)
            .collect();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].subject.unwrap().as_string(), "9434765919");
        assert_eq!(
            changed[0].data.to_json()["previous_nhs_number"],
            "9990000018"
        );
    }

    #[test]
    fn a_subject_whose_identifier_and_reference_name_different_people_is_refused() {
        let e = with(
            fixture("encounter_in_progress.json"),
            "subject",
            json!({"reference": "#p1", "identifier": {"system": NHS_NUMBER_SYSTEM, "value": "9990000018"}}),
        );
        let agree = with(
            e.clone(),
            "contained",
            json!([{"resourceType": "Patient", "id": "p1",
                    "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9990000018"}]}]),
        );
        assert!(!data(&agree).is_empty());
        let differ = with(
            e,
            "contained",
            json!([{"resourceType": "Patient", "id": "p1",
                    "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}]}]),
        );
        check_err(
            &differ,
            expect![[r#"
                error invalid @ Encounter.subject: subject.identifier and subject.reference name different patients (two different NHS numbers): send one, or make them agree
            "#]],
        );
        // A conditional reference without a system, and a PDS address, name the person.
        for reference in [
            "Patient?identifier=9990000018",
            "https://api.service.nhs.uk/personal-demographics/FHIR/R4/Patient/9990000018",
        ] {
            let e = with(
                fixture("encounter_in_progress.json"),
                "subject",
                json!({ "reference": reference }),
            );
            let events = translate(&e, &ctx()).unwrap();
            assert!(!events.is_empty(), "{reference}");
            assert!(events
                .iter()
                .all(|e| e.subject.unwrap().as_string() == "9990000018"));
        }
    }

    #[test]
    fn a_patient_with_two_different_current_nhs_numbers_is_refused() {
        let p = with(
            fixture("patient.json"),
            "identifier",
            json!([{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"},
                   {"system": NHS_NUMBER_SYSTEM, "value": "9990000018"}]),
        );
        check_err(
            &p,
            expect![[r#"
                error invalid @ Patient.identifier[1].value: the Patient has two different current NHS numbers: mark the superseded one `use: old`
            "#]],
        );
        // The same number twice is one.
        let p = with(
            fixture("patient.json"),
            "identifier",
            json!([{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"},
                   {"system": LEGACY_NHS_NUMBER_SYSTEM, "value": "943 476 5919"}]),
        );
        assert_eq!(data(&p).len(), 1);
    }

    #[test]
    fn outpatient_and_emergency_department_classes_are_attendances() {
        for (system, code) in [
            ("http://terminology.hl7.org/CodeSystem/v2-0004", "O"),
            ("http://terminology.hl7.org/CodeSystem/v2-0004", "P"),
            ("http://snomed.info/sct", "4525004"),
        ] {
            let e = with(
                fixture("encounter_in_progress.json"),
                "class",
                json!({"system": system, "code": code}),
            );
            assert!(data(&e).is_empty(), "{code}");
            assert!(nothing_recorded(&e).contains("is an attendance"), "{code}");
        }
    }

    #[test]
    fn wales_discharge_destinations_are_not_read_as_england_s() {
        let e = with(
            fixture("encounter_finished.json"),
            "hospitalization.dischargeDisposition.coding",
            json!([{"system": "https://fhir.nhs.wales/CodeSystem/DataStandardsWales-DischargeDestination", "code": "55"}]),
        );
        assert_eq!(data(&e)[0].get("destination"), None);
    }

    #[test]
    fn an_address_that_starts_later_is_not_the_current_one() {
        // The context's today is 2026-11-28.
        let p = with(
            fixture("patient.json"),
            "address",
            json!([
                {"use": "home", "postalCode": "LS8 1AA", "period": {"start": "2027-01-01"}},
                {"use": "home", "postalCode": "LS9 2BB", "period": {"start": "2019-05-01T00:00:00Z"}}
            ]),
        );
        assert_eq!(data(&p)[0]["postcode"], "LS9 2BB");
    }

    #[test]
    fn modifiers_around_a_bundle_entry_and_implicit_rules_are_refused() {
        let bundle = fixture("bundle_transaction.json");
        let mut b = bundle.clone();
        b["entry"][0]["request"]["modifierExtension"] =
            json!([{"url": "https://example.org/only-if", "valueBoolean": true}]);
        let issues = translate_bundle(&b, &ctx()).map(|_| ()).unwrap_err();
        assert_eq!(
            issues[0].expression.as_deref(),
            Some("Bundle.entry[0].request.modifierExtension[0]")
        );
        assert_eq!(issues[0].code, IssueCode::NotSupported);
        let p = with(
            fixture("patient.json"),
            "implicitRules",
            json!("https://example.org/rules"),
        );
        check_err(
            &p,
            expect![[r#"
                error not-supported @ Patient.implicitRules: implicitRules https://example.org/rules are not understood: content made under rules Handover does not know cannot be read safely (FHIR R4 resource.html#implicitRules)
            "#]],
        );
    }

    #[test]
    fn a_body_is_read_as_utf_8_or_the_latin_charset_it_names() {
        let latin1 = b"{\"family\":\"Sm\xEFth\"}";
        let body = utf8_body(latin1, Some("ISO-8859-1")).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\"family\":\"Sm\u{EF}th\"}"
        );
        assert!(matches!(utf8_body(latin1, None), Err((false, why)) if why.contains("not UTF-8")));
        assert!(
            matches!(utf8_body(b"\xFF\xFE{\x00", None), Err((true, why)) if why.contains("UTF-16"))
        );
        assert!(
            matches!(utf8_body(b"{}", Some("\"utf-16\"")), Err((true, why)) if why.contains("charset=utf-16"))
        );
        assert!(matches!(
            utf8_body(b"{}", Some("UTF-8")),
            Ok(std::borrow::Cow::Borrowed(_))
        ));
    }
}
