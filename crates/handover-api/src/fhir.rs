//! FHIR R4 (UK Core) intake over HTTP: `POST /fhir/r4/{Encounter,ServiceRequest,EpisodeOfCare,
//! Patient}` (and `PUT /fhir/r4/{type}/{id}`, the update interaction EPRs use for state
//! transfer, and `PUT /fhir/r4/{type}?identifier=…`, the conditional update, both taken as
//! the same), `POST /fhir/r4` (a `transaction`, `batch` or `message` Bundle; also
//! at `/fhir/r4/`), and `GET /fhir/r4/metadata` (the CapabilityStatement, for any valid token).
//!
//! The mapping is [`handover_adapters::fhir`]; this module authenticates (as `/v1/events`:
//! integration and admin roles), maps the body, publishes every event in one call to the sink
//! and answers only after the sink returned (the events are durable):
//!
//! - `201 Created` with an `OperationOutcome` of `information` issues (one per event); `200
//!   OK` when every event was already stored (a resend) or the resource records nothing; for
//!   a Bundle always `200 OK` (as FHIR R4 answers a transaction) with a
//!   `transaction-response` Bundle, one entry per request entry, each with its own status;
//! - `400` with an `OperationOutcome` listing every problem, each with a FHIRPath
//!   `expression`; nothing from the request is stored (a Bundle is all or nothing);
//! - with `Prefer: return=minimal` no body, with `return=representation` the resource as
//!   received (per entry of a Bundle: no `outcome`, or the `resource`), with
//!   `Preference-Applied`;
//! - `401`/`403`/`406`/`415` as an `OperationOutcome` too (`406` when `Accept`, or `_format`
//!   which overrides it, names no JSON type of FHIR R4; `415` for another `fhirVersion` sent,
//!   and for a compressed body: `Content-Encoding` other than `identity`, answered
//!   with `Accept-Encoding: identity`); `503` (`transient`) when the event log is
//!   unavailable: nothing may be assumed stored and a resend is safe (event ids are
//!   deterministic).
//!
//! Every response is `application/fhir+json`.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use handover_adapters::fhir::{
    nothing_recorded, operation_outcome, translate, translate_batch, translate_bundle, FhirContext,
    Issue, IssueCode, Severity, RESOURCE_TYPES,
};
use handover_events::{Event, SinkError, Stored, Timestamp};
use serde_json::{json, Value};

use crate::policy::Publisher;
use crate::{ApiError, AppState, MAX_BATCH};

/// The FHIR media type of every response.
pub const FHIR_JSON: &str = "application/fhir+json";

/// An error answer: a status and the `OperationOutcome` issues.
#[derive(Debug)]
pub struct FhirError {
    /// HTTP status.
    pub status: StatusCode,
    /// The issues (at least one).
    pub issues: Vec<Issue>,
    /// The `WWW-Authenticate` challenge of a `401`.
    pub challenge: Option<HeaderValue>,
    /// A `415` for a content coding: answered with `Accept-Encoding: identity` (RFC 9110
    /// 15.5.16), as `/v1` does.
    pub identity_only: bool,
}

impl FhirError {
    fn one(status: StatusCode, code: IssueCode, diagnostics: impl Into<String>) -> FhirError {
        FhirError {
            status,
            issues: vec![Issue {
                severity: if status.is_server_error() {
                    Severity::Fatal
                } else {
                    Severity::Error
                },
                code,
                diagnostics: diagnostics.into(),
                expression: None,
            }],
            challenge: None,
            identity_only: false,
        }
    }

    fn invalid(issues: Vec<Issue>) -> FhirError {
        FhirError {
            status: StatusCode::BAD_REQUEST,
            issues,
            challenge: None,
            identity_only: false,
        }
    }
}

impl From<ApiError> for FhirError {
    fn from(e: ApiError) -> FhirError {
        let text = e.to_string();
        let (status, code) = match &e {
            ApiError::Unauthenticated | ApiError::InvalidToken(_) => {
                let mut out = FhirError::one(StatusCode::UNAUTHORIZED, IssueCode::Login, text);
                out.challenge = e.challenge();
                return out;
            }
            ApiError::Forbidden { .. }
            | ApiError::NoRole(_)
            | ApiError::ReasonRequired
            | ApiError::NotPermitted { .. } => (StatusCode::FORBIDDEN, IssueCode::Forbidden),
            ApiError::UnsupportedMediaType => {
                return FhirError::one(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    IssueCode::NotSupported,
                    "send application/fhir+json or application/json",
                )
            }
            ApiError::UnsupportedEncoding(_) => {
                let mut out = FhirError::one(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    IssueCode::NotSupported,
                    text,
                );
                out.identity_only = true;
                return out;
            }
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, IssueCode::Transient),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, IssueCode::Transient),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "fhir request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, IssueCode::Exception)
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, IssueCode::NotSupported),
            ApiError::TooManyEvents { .. } => (StatusCode::PAYLOAD_TOO_LARGE, IssueCode::TooCostly),
            ApiError::InvalidEvents { .. }
            | ApiError::BadRequest(_)
            | ApiError::InvalidNhsNumber(_) => (StatusCode::BAD_REQUEST, IssueCode::Invalid),
        };
        FhirError::one(status, code, text)
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let mut resp = fhir_response(self.status, &operation_outcome(&self.issues));
        let h = resp.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    self.challenge
                        .unwrap_or(HeaderValue::from_static("Bearer realm=\"handover\"")),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        if self.identity_only {
            h.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        resp
    }
}

fn fhir_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, serde_json::to_vec(body).unwrap_or_default()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// The media types of FHIR JSON: R4's, plain JSON, and `application/json+fhir`, which
/// DSTU2 and STU3 named and older clients still send.
const JSON_TYPES: [&str; 3] = [FHIR_JSON, "application/json", "application/json+fhir"];

/// The FHIR version this server speaks, as media types name it (`fhirVersion=4.0`; FHIR R4
/// versioning.html: the major and minor version, a patch level allowed).
fn is_r4(version: &str) -> bool {
    let v = version.trim().trim_matches('"');
    v == "4.0"
        || v.strip_prefix("4.0.")
            .is_some_and(|patch| !patch.is_empty())
}

/// The `fhirVersion` parameter of one media type (`application/fhir+json; fhirVersion=3.0`).
fn fhir_version<'a>(params: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("fhirVersion"))
        .map(|(_, v)| v)
}

/// What the client asked of a successful answer: FHIR R4 http.html#ops, `Prefer:
/// return=minimal` (no body), `return=representation` (the resource) or
/// `return=OperationOutcome` (the default here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

impl Return {
    /// The `return` preference of the request's `Prefer` headers (RFC 7240), if one is
    /// understood; the first wins.
    fn asked(headers: &HeaderMap) -> Option<Return> {
        headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split([',', ';']))
            .filter_map(|p| p.split_once('='))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("return"))
            .find_map(|(_, v)| {
                let v = v.trim().trim_matches('"');
                if v.eq_ignore_ascii_case("minimal") {
                    Some(Return::Minimal)
                } else if v.eq_ignore_ascii_case("representation") {
                    Some(Return::Representation)
                } else if v.eq_ignore_ascii_case("OperationOutcome") {
                    Some(Return::OperationOutcome)
                } else {
                    None
                }
            })
    }

    /// The `Preference-Applied` value (RFC 7240 section 3).
    fn applied(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Return::Minimal => "return=minimal",
            Return::Representation => "return=representation",
            Return::OperationOutcome => "return=OperationOutcome",
        })
    }
}

/// How a request wants its answer: checked before anything is stored. `_format` (FHIR R4
/// http.html#mime-type) overrides `Accept`; either naming no JSON type of FHIR R4 is a
/// `406`. `asked` is the `Prefer: return=` preference, when the request states one.
struct Negotiated {
    asked: Option<Return>,
}

impl Negotiated {
    /// What a successful create, update or Bundle entry answers with.
    fn returns(&self) -> Return {
        self.asked.unwrap_or(Return::OperationOutcome)
    }

    /// Adds `Preference-Applied` to a successful answer when the request stated a
    /// preference.
    fn mark(&self, response: &mut Response) {
        if let Some(r) = self.asked {
            response
                .headers_mut()
                .insert("preference-applied", r.applied());
        }
    }
}

/// The answer's format and the `Prefer` header, from the request's headers and query.
fn negotiate(headers: &HeaderMap, query: &[(String, String)]) -> Result<Negotiated, FhirError> {
    let asked = Return::asked(headers);
    let formats: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "_format")
        .map(|(_, v)| v.as_str())
        .collect();
    if formats.is_empty() {
        refuse_unacceptable(headers)?;
    } else if !formats.iter().any(|f| {
        let mut parts = f.split(';');
        // `application/fhir+json` unencoded in a URL arrives with a space for its `+`.
        let media = parts
            .next()
            .unwrap_or("")
            .trim()
            .replace(' ', "+")
            .to_ascii_lowercase();
        (media == "json" || JSON_TYPES.contains(&media.as_str()))
            && fhir_version(parts).is_none_or(is_r4)
    }) {
        return Err(FhirError::one(
            StatusCode::NOT_ACCEPTABLE,
            IssueCode::NotSupported,
            format!(
                "_format={}: this server answers in FHIR R4 JSON only (_format=json)",
                formats.join(",")
            ),
        ));
    }
    Ok(Negotiated { asked })
}

/// A `406` when the request's `Accept` names media types but none that is JSON of FHIR R4
/// (an XML-only client, or one asking for `fhirVersion=3.0`, say): every answer here is
/// `application/fhir+json` of R4. No `Accept`, a wildcard, or a header that does not parse is
/// answered as usual.
fn refuse_unacceptable(headers: &HeaderMap) -> Result<(), FhirError> {
    let ranges: Vec<(String, bool)> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            let params: Vec<&str> = parts.collect();
            let refused = params.iter().any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            }) || fhir_version(params.iter().copied()).is_some_and(|v| !is_r4(v));
            (!media.is_empty()).then_some((media, !refused))
        })
        .collect();
    let acceptable = |m: &str| m == "*/*" || m == "application/*" || JSON_TYPES.contains(&m);
    if ranges.is_empty() || ranges.iter().any(|(m, ok)| *ok && acceptable(m)) {
        return Ok(());
    }
    Err(FhirError::one(
        StatusCode::NOT_ACCEPTABLE,
        IssueCode::NotSupported,
        "this server answers in FHIR R4 (fhirVersion=4.0) application/fhir+json only: accept it (or application/json)",
    ))
}

/// Checks the media type and encoding and parses the body (the caller was authenticated
/// before the body was read, by [`Publisher`]); returns the mapping context.
fn prelude(
    caller: &crate::Caller,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: &Bytes,
) -> Result<(FhirContext, Value, Negotiated), FhirError> {
    let negotiated = negotiate(headers, query)?;
    crate::refuse_content_encoding(headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(FHIR_JSON);
    let mut parts = content_type.split(';');
    let ct = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if !JSON_TYPES.contains(&ct.as_str()) {
        return Err(ApiError::UnsupportedMediaType.into());
    }
    if let Some(v) = fhir_version(parts).filter(|v| !is_r4(v)) {
        return Err(FhirError::one(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueCode::NotSupported,
            format!(
                "fhirVersion={}: this server takes FHIR R4 (4.0) resources only",
                v.trim().trim_matches('"')
            ),
        ));
    }
    let charset = content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then_some(v)
    });
    let body = handover_adapters::fhir::utf8_body(body, charset).map_err(|(charset, why)| {
        if charset {
            FhirError::one(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                IssueCode::NotSupported,
                why,
            )
        } else {
            FhirError::one(StatusCode::BAD_REQUEST, IssueCode::Structure, why)
        }
    })?;
    // A UTF-8 byte order mark, which .NET and Windows tools write, is allowed before the
    // JSON (RFC 8259 lets a parser ignore it).
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body);
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        FhirError::one(
            StatusCode::BAD_REQUEST,
            IssueCode::Structure,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let now = Timestamp(chrono::Utc::now().fixed_offset());
    Ok((
        FhirContext::new(caller.organisation.clone(), now),
        value,
        negotiated,
    ))
}

/// Publishes `events` (all of them, one call) and waits for durability, after checking the
/// caller may assert every one of them (the same producer rules as `/v1/events`).
async fn publish(
    st: &AppState,
    caller: &crate::Caller,
    events: &[Event],
) -> Result<Vec<Stored>, FhirError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let refused: Vec<Issue> = events
        .iter()
        .filter_map(|e| crate::policy::may_publish(caller, e).err())
        .map(|f| Issue {
            severity: Severity::Error,
            code: IssueCode::Forbidden,
            diagnostics: f.message,
            expression: None,
        })
        .collect();
    if !refused.is_empty() {
        st.metrics
            .events_rejected
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
        return Err(FhirError {
            status: StatusCode::FORBIDDEN,
            issues: refused,
            challenge: None,
            identity_only: false,
        });
    }
    if events.len() > MAX_BATCH {
        return Err(FhirError::one(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueCode::TooCostly,
            format!(
                "this request would record {} events, more than the {MAX_BATCH} one request may; nothing was stored: send its resources in several requests",
                events.len()
            ),
        ));
    }
    let stored = st.sink.publish(events).await.map_err(|e| match e {
        SinkError::Unavailable(cause) => {
            tracing::warn!(error = %cause, "event log unavailable; refusing FHIR request");
            FhirError::from(ApiError::Unavailable)
        }
        SinkError::Refused(cause) => FhirError::one(
            StatusCode::BAD_REQUEST,
            IssueCode::Invalid,
            format!("the event log refused the events: {cause}"),
        ),
    })?;
    let duplicates = stored.iter().filter(|s| s.duplicate).count();
    st.metrics
        .record_stored(stored.len() - duplicates, duplicates);
    Ok(stored)
}

fn rejected(st: &AppState, issues: Vec<Issue>, resources: usize) -> FhirError {
    st.metrics
        .events_rejected
        .fetch_add(resources as u64, Ordering::Relaxed);
    FhirError::invalid(issues)
}

/// One information issue per event: what was stored, or recognised as already stored; for
/// a `resource` that records nothing, why.
fn outcome_issues(resource: &Value, events: &[Event], stored: &[Stored]) -> Vec<Issue> {
    if events.is_empty() {
        return vec![Issue::information(nothing_recorded(resource))];
    }
    events
        .iter()
        .zip(stored)
        .map(|(e, s)| {
            let what = if s.duplicate {
                "already stored"
            } else {
                "stored"
            };
            Issue::information(format!(
                "{what}: {} id {} from {} at sequence {}",
                e.event_type().as_str(),
                e.id,
                e.source,
                s.sequence
            ))
        })
        .collect()
}

fn created(stored: &[Stored]) -> bool {
    stored.iter().any(|s| !s.duplicate)
}

/// `POST /fhir/r4/{type}`: the FHIR create interaction.
pub async fn post_resource(
    State(st): State<AppState>,
    Path(resource_type): Path<String>,
    Publisher(caller, _): Publisher<FhirError>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    accept_resource(&st, &caller, &resource_type, None, &headers, &query, &body).await
}

/// `PUT /fhir/r4/{type}/{id}`: the FHIR update interaction, which EPRs use to send each
/// version of a resource. Handover stores events, not resources, so it is taken as a create
/// of the same resource (answered `201`/`200` as one), once the body's `id` is the URL's.
pub async fn put_resource(
    State(st): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    Publisher(caller, _): Publisher<FhirError>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    accept_resource(
        &st,
        &caller,
        &resource_type,
        Some(&id),
        &headers,
        &query,
        &body,
    )
    .await
}

/// `PUT /fhir/r4/{type}?<search>`: the FHIR conditional update (http.html#cond-update),
/// which integration engines send when they know a resource by its identifier
/// (`?identifier=<system>|<value>`) rather than by the server's id. Handover keeps events,
/// not resources, so there is nothing to search: it is taken as a create of the resource,
/// as a `PUT` to its id is. A `PUT` naming neither an id nor a search is a `400`.
pub async fn put_conditional(
    State(st): State<AppState>,
    Path(resource_type): Path<String>,
    Publisher(caller, _): Publisher<FhirError>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let searched = query
        .iter()
        .any(|(k, _)| !k.is_empty() && k != "_format" && k != "_pretty");
    if !searched {
        return Err(FhirError::one(
            StatusCode::BAD_REQUEST,
            IssueCode::Invalid,
            format!("a PUT names the {resource_type} it updates: PUT /fhir/r4/{resource_type}/<id>, or a conditional update with search parameters (?identifier=<system>|<value>)"),
        ));
    }
    accept_resource(&st, &caller, &resource_type, None, &headers, &query, &body).await
}

/// Maps and publishes one resource posted (or, with `url_id`, put) to
/// `/fhir/r4/{resource_type}`.
async fn accept_resource(
    st: &AppState,
    caller: &crate::Caller,
    resource_type: &str,
    url_id: Option<&str>,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: &Bytes,
) -> Result<Response, FhirError> {
    let (ctx, value, negotiated) = prelude(caller, headers, query, body)?;
    if !RESOURCE_TYPES.contains(&resource_type) {
        return Err(FhirError::one(
            StatusCode::NOT_FOUND,
            IssueCode::NotSupported,
            format!("resource type {resource_type} is not supported here: post Encounter, ServiceRequest, EpisodeOfCare or Patient, or a Bundle to /fhir/r4"),
        ));
    }
    if !value.is_object() {
        return Err(rejected(
            st,
            vec![Issue::error(
                IssueCode::Structure,
                None,
                "the body must be a JSON object (a FHIR resource)",
            )],
            1,
        ));
    }
    let body_type = value.get("resourceType").and_then(Value::as_str);
    if body_type != Some(resource_type) {
        return Err(rejected(
            st,
            vec![Issue::error(
                IssueCode::Structure,
                Some("resourceType".into()),
                format!(
                    "the body's resourceType ({}) does not match the URL ({resource_type})",
                    body_type.unwrap_or("missing")
                ),
            )],
            1,
        ));
    }
    if let Some(url_id) = url_id {
        // FHIR R4 http.html#update: a body without an id, or with another, is a 400.
        let body_id = value.get("id").and_then(Value::as_str);
        if body_id != Some(url_id) {
            let why = match body_id {
                Some(_) => "the body's id does not match the id in the URL",
                None => {
                    "the body has no id: an update needs the resource's id, the same as in the URL"
                }
            };
            return Err(rejected(
                st,
                vec![Issue::error(
                    IssueCode::Invalid,
                    Some(format!("{resource_type}.id")),
                    why,
                )],
                1,
            ));
        }
    }
    let events = translate(&value, &ctx).map_err(|issues| rejected(st, issues, 1))?;
    let stored = publish(st, caller, &events).await?;
    let status = if created(&stored) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = match negotiated.returns() {
        Return::OperationOutcome => fhir_response(
            status,
            &operation_outcome(&outcome_issues(&value, &events, &stored)),
        ),
        // Handover keeps events, not resources: the representation is the resource as
        // received, every event it maps to being durable.
        Return::Representation => fhir_response(status, &value),
        Return::Minimal => status.into_response(),
    };
    negotiated.mark(&mut response);
    // FHIR R4 http.html#create: a 201 names what was created. Handover keeps events, not
    // resources, so this is the sender's own id (and version) for it, as an update's is.
    if status == StatusCode::CREATED {
        if let Some(location) =
            location(resource_type, &value).and_then(|l| HeaderValue::from_str(&l).ok())
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    Ok(response)
}

/// `Location` of a created resource: `/fhir/r4/<type>/<id>[/_history/<version>]`, when it
/// has an id that is a FHIR id.
fn location(resource_type: &str, resource: &Value) -> Option<String> {
    let fhir_id = |s: &&str| {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let id = resource.get("id").and_then(Value::as_str).filter(fhir_id)?;
    let mut at = format!("/fhir/r4/{resource_type}/{id}");
    if let Some(v) = resource
        .pointer("/meta/versionId")
        .and_then(Value::as_str)
        .filter(fhir_id)
    {
        at.push_str(&format!("/_history/{v}"));
    }
    Some(at)
}

/// The entry of a `transaction-response` or `batch-response` for a request entry whose
/// `resource` was stored (`stored`, its events' fates): its status, its `location` when it
/// created something, and the OperationOutcome, the resource or neither as `Prefer` asks.
fn stored_entry(
    negotiated: &Negotiated,
    resource: &Value,
    events: &[Event],
    stored: &[Stored],
) -> Value {
    let created = created(stored);
    let mut response = json!({ "status": if created { "201 Created" } else { "200 OK" } });
    if created {
        if let Some(at) = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .and_then(|t| location(t, resource))
        {
            response["location"] = at.into();
        }
    }
    match negotiated.returns() {
        Return::OperationOutcome => {
            response["outcome"] = operation_outcome(&outcome_issues(resource, events, stored));
            json!({ "response": response })
        }
        Return::Representation => json!({ "resource": resource, "response": response }),
        Return::Minimal => json!({ "response": response }),
    }
}

/// `POST /fhir/r4`: a `transaction` or `message` Bundle, all or nothing; or a `batch`, entry
/// by entry (`post_batch`).
pub async fn post_bundle(
    State(st): State<AppState>,
    Publisher(caller, _): Publisher<FhirError>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let (ctx, value, negotiated) = prelude(&caller, &headers, &query, &body)?;
    if value.get("type").and_then(Value::as_str) == Some("batch") {
        return post_batch(&st, &caller, &ctx, &value, &negotiated).await;
    }
    let entries = translate_bundle(&value, &ctx).map_err(|issues| {
        let n = value
            .get("entry")
            .and_then(Value::as_array)
            .map_or(1, |a| a.len().max(1));
        rejected(&st, issues, n)
    })?;
    let events: Vec<Event> = entries
        .iter()
        .flat_map(|e| e.events.iter().cloned())
        .collect();
    let stored = publish(&st, &caller, &events).await?;
    let mut offset = 0;
    let mut response_entries = Vec::with_capacity(entries.len());
    for entry in &entries {
        let n = entry.events.len();
        let mine = &stored[offset.min(stored.len())..(offset + n).min(stored.len())];
        let resource = &value["entry"][entry.index]["resource"];
        response_entries.push(stored_entry(&negotiated, resource, &entry.events, mine));
        offset += n;
    }
    if value.get("type").and_then(Value::as_str) == Some("message") {
        let outcome = operation_outcome(&outcome_issues(&value, &events, &stored));
        return Ok(fhir_response(
            StatusCode::OK,
            &message_response(&value, outcome),
        ));
    }
    // FHIR R4 (http.html#transaction): a processed transaction is `200 OK`; each entry's
    // `response.status` says whether it created anything.
    let status = StatusCode::OK;
    let body = json!({
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": response_entries,
    });
    let mut response = fhir_response(status, &body);
    negotiated.mark(&mut response);
    Ok(response)
}

/// One `batch` entry's fate: its index and the range of its events among those stored, or
/// the status and issues it is refused with.
type BatchAnswer = Result<(usize, std::ops::Range<usize>), (&'static str, Vec<Issue>)>;

/// A `batch` Bundle: each entry stands alone (FHIR R4 http.html#transaction), so the entries
/// that map and may be published are stored together, in one call (durable before the
/// answer), and each of the others is answered with its own `400` or `403` and
/// OperationOutcome in the `batch-response`. The answer is `200 OK` unless the Bundle
/// itself is wrong (`400`) or the event log is unavailable (`503`: nothing stored).
async fn post_batch(
    st: &AppState,
    caller: &crate::Caller,
    ctx: &FhirContext,
    value: &Value,
    negotiated: &Negotiated,
) -> Result<Response, FhirError> {
    let results = translate_batch(value, ctx).map_err(|issues| rejected(st, issues, 1))?;
    let mut events: Vec<Event> = Vec::new();
    let mut answers: Vec<BatchAnswer> = Vec::with_capacity(results.len());
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Err(issues) => answers.push(Err(("400 Bad Request", issues))),
            Ok(entry) => {
                let refused: Vec<Issue> = entry
                    .events
                    .iter()
                    .filter_map(|e| crate::policy::may_publish(caller, e).err())
                    .map(|f| Issue {
                        severity: Severity::Error,
                        code: IssueCode::Forbidden,
                        diagnostics: f.message,
                        expression: None,
                    })
                    .collect();
                if refused.is_empty() {
                    let start = events.len();
                    events.extend(entry.events);
                    answers.push(Ok((i, start..events.len())));
                } else {
                    answers.push(Err(("403 Forbidden", refused)));
                }
            }
        }
    }
    let failed = answers.iter().filter(|a| a.is_err()).count();
    if failed > 0 {
        st.metrics
            .events_rejected
            .fetch_add(failed as u64, Ordering::Relaxed);
    }
    let stored = publish(st, caller, &events).await?;
    let entries: Vec<Value> = answers
        .into_iter()
        .map(|a| match a {
            Ok((i, range)) => stored_entry(
                negotiated,
                &value["entry"][i]["resource"],
                &events[range.clone()],
                &stored[range],
            ),
            Err((status, issues)) => json!({"response": {
                "status": status,
                "outcome": operation_outcome(&issues),
            }}),
        })
        .collect();
    let mut response = fhir_response(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "type": "batch-response", "entry": entries}),
    );
    negotiated.mark(&mut response);
    Ok(response)
}

/// The answer to a processed `message` Bundle (FHIR R4 messaging.html, synchronous): a
/// `message` Bundle whose MessageHeader responds `ok` to the request's MessageHeader (its
/// `id`, else the Bundle's), echoes its event and answers its source, with the outcome of
/// each resource as an OperationOutcome it names in `response.details`.
fn message_response(request: &Value, outcome: Value) -> Value {
    let header = request
        .get("entry")
        .and_then(Value::as_array)
        .and_then(|entries| {
            entries
                .iter()
                .filter_map(|e| e.get("resource"))
                .find(|r| r.get("resourceType").and_then(Value::as_str) == Some("MessageHeader"))
        });
    let responding_to = header
        .and_then(|h| h.get("id"))
        .or_else(|| request.get("id"))
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let header_id = uuid::Uuid::now_v7().to_string();
    let outcome_id = uuid::Uuid::now_v7().to_string();
    let mut mh = json!({
        "resourceType": "MessageHeader",
        "id": header_id,
        "source": { "name": "Handover", "endpoint": "urn:handover:fhir" },
        "response": {
            "identifier": responding_to,
            "code": "ok",
            "details": { "reference": format!("urn:uuid:{outcome_id}") },
        },
    });
    match header.and_then(|h| {
        h.get("eventCoding")
            .or_else(|| h.get("eventUri"))
            .map(|e| (h, e))
    }) {
        Some((h, e)) if h.get("eventCoding").is_some() => mh["eventCoding"] = e.clone(),
        Some((_, e)) => mh["eventUri"] = e.clone(),
        None => mh["eventUri"] = "urn:handover:fhir:message".into(),
    }
    if let Some(endpoint) = header
        .and_then(|h| h.get("source"))
        .and_then(|s| s.get("endpoint"))
    {
        mh["destination"] = json!([{ "endpoint": endpoint }]);
    }
    let mut outcome = outcome;
    outcome["id"] = outcome_id.clone().into();
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::now_v7().to_string(),
        "type": "message",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "entry": [
            { "fullUrl": format!("urn:uuid:{header_id}"), "resource": mh },
            { "fullUrl": format!("urn:uuid:{outcome_id}"), "resource": outcome },
        ],
    })
}

/// `GET /fhir/r4/metadata`: the CapabilityStatement (FHIR R4 http.html#capabilities), which
/// FHIR clients and integration engines fetch on connecting. It describes the server only,
/// never anyone's data, but the contract holds every `/fhir` call to a token: any valid
/// token of any role will do (a `401` OperationOutcome otherwise).
pub async fn metadata(
    State(st): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    st.auth.authenticate(&headers).await?;
    negotiate(&headers, &query)?;
    Ok(fhir_response(StatusCode::OK, &capability_statement()))
}

/// What `/fhir/r4` accepts, as a FHIR R4 CapabilityStatement.
pub fn capability_statement() -> Value {
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|t| {
            json!({
                "type": t,
                "interaction": [
                    {"code": "create", "documentation": format!("POST /fhir/r4/{t}: mapped to catalogue events; 201 with an OperationOutcome when stored, 200 when already stored or nothing to record")},
                    {"code": "update", "documentation": format!("PUT /fhir/r4/{t}/[id]: taken as create; the body's id must be the URL's. PUT /fhir/r4/{t}?identifier=… (conditional update): taken as create")},
                ],
                "conditionalUpdate": true,
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "publisher": "Handover",
        "kind": "instance",
        "software": {"name": "Handover", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Handover FHIR R4 (UK Core) intake: resources become catalogue events shared between NHS trusts and councils"},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "Every request needs Authorization: Bearer <token>: this one any role's, the others the integration or admin role's. Errors are OperationOutcomes. Bundles are all or nothing.",
            "security": {
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth"}]}],
                "description": "Bearer tokens: Handover tokens, or JWTs from an organisation's configured OpenID Connect identity provider"
            },
            "resource": resources,
            "interaction": [
                {"code": "transaction", "documentation": "POST /fhir/r4: a transaction Bundle, all or nothing, answered with a transaction-response Bundle"},
                {"code": "batch", "documentation": "POST /fhir/r4: a batch Bundle, each entry on its own, answered with a batch-response Bundle"}
            ],
        }],
        "messaging": [{
            "documentation": "POST /fhir/r4: a message Bundle of the same resources, processed synchronously and answered with a response message Bundle (MessageHeader.response.code ok)"
        }],
    })
}
