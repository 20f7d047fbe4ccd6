//! The HTTP API: the only crate that serves HTTP.
//!
//! [`app`] builds the router from an [`AppState`]; [`serve`] runs it on an already-bound
//! listener until a shutdown future resolves, so tests bind port 0.

pub mod admin;
pub mod auth;
pub mod erasure;
pub mod fhir;
pub mod metrics;
pub mod observe;
pub mod oidc;
pub mod openapi;
pub mod policy;
pub mod problem;
pub mod ui;
pub mod worklists;

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use handover_events::{Event, EventSink, FieldError, NhsNumber, SinkError};
use handover_projections::Journeys;
use handover_store::Tree;
use serde::Serialize;

pub use auth::{token_digest, Auth, Caller, Role, TokenConfig};
pub use metrics::Metrics;
pub use problem::ApiError;

/// Largest request body accepted (a batch of a few thousand events).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Largest number of events in one batch request.
pub const MAX_BATCH: usize = 5_000;

/// Whether the service can take traffic, as reported by its owner.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready; otherwise what is not ready.
    fn check(&self) -> Result<(), String>;
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Where accepted events go (JetStream in production).
    pub sink: Arc<dyn EventSink>,
    /// The journey projection (for reading).
    pub journeys: Journeys,
    /// The journey projection's tree.
    pub journey_tree: Tree,
    /// Token table.
    pub auth: Arc<Auth>,
    /// Readiness probe.
    pub readiness: Arc<dyn Readiness>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The journey projection's progress (for readiness and live pages).
    pub progress: tokio::sync::watch::Receiver<handover_projections::Progress>,
    /// Web UI sessions.
    pub sessions: Arc<ui::Sessions>,
    /// The access audit (durable before data is returned).
    pub audit: Arc<dyn handover_events::AuditTrail>,
    /// Operator actions on the event log (erasure); None where the API runs without it.
    pub log_admin: Option<Arc<dyn handover_events::LogAdmin>>,
    /// The rebuild queue, which an erasure keeps from starting while it runs.
    pub rebuilds: Arc<handover_projections::Rebuilds>,
}

/// The router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/fhir/r4", post(fhir::post_bundle))
        // FHIR clients configured with the base URL `…/fhir/r4/` post their Bundles here.
        .route("/fhir/r4/", post(fhir::post_bundle))
        .route("/fhir/r4/metadata", get(fhir::metadata))
        .route(
            "/fhir/r4/{resource_type}",
            post(fhir::post_resource).put(fhir::put_conditional),
        )
        .route("/fhir/r4/{resource_type}/{id}", put(fhir::put_resource))
        .route("/v1/persons/{nhs_number}/journey", get(get_journey))
        .route("/v1/worklists/discharge-delays", get(worklists::get_delays))
        .route("/v1/worklists/brokerage", get(worklists::get_brokerage))
        .route("/v1/measures/flow", get(worklists::get_flow))
        .route("/v1/audit", get(get_audit))
        .route(
            "/v1/admin/persons/{nhs_number}/erasure",
            post(erasure::erase),
        )
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::permanent("/ui/") }),
        )
        .route("/ui/", get(ui::index))
        .route("/ui/login", get(ui::login_form).post(ui::login))
        .route("/ui/logout", post(ui::logout))
        .route("/ui/delays", get(ui::delays))
        .route("/ui/brokerage", get(ui::brokerage))
        .route("/ui/measures", get(ui::measures))
        .route("/ui/integration", get(ui::integration))
        .route("/ui/persons/{nhs_number}", get(ui::person))
        .route("/ui/updates", get(ui::updates))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        // Set before the layers so that they wrap it: `framework_errors` words the 404.
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(problem::framework_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            observe::track,
        ))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, finishing in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // An answer goes out as soon as it is written, not when the client's acknowledgement of
    // the last one arrives (Nagle), as the MLLP listener does.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
    duplicates: usize,
    events: Vec<AcceptedEvent>,
}

#[derive(Serialize)]
struct AcceptedEvent {
    id: String,
    source: String,
    sequence: u64,
    duplicate: bool,
    /// JSON Pointers (into this event as sent) of what was sent and is not kept: extension
    /// attributes, `tracestate`, a malformed `traceparent`, `data` members the type does
    /// not define (a misspelt field, say). For data sent as `data_base64`, the pointer into
    /// the decoded data follows in parentheses: `/data_base64 (decoded: /field)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ignored: Vec<String>,
}

/// A request body as JSON (a UTF-8 byte order mark, which some Windows tools write, is
/// allowed before it).
fn json_body(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

/// A CloudEvent sent in the HTTP binding's *binary* content mode, as the JSON object of
/// structured mode: each `ce-<attribute>` header is an attribute (its value
/// percent-decoded, as the binding requires of senders), `Content-Type` the
/// `datacontenttype`, and the body the `data`, which must be JSON.
fn binary_mode_event(
    headers: &HeaderMap,
    content_type: &str,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let mut event = serde_json::Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value.to_str().map_err(|_| {
            ApiError::BadRequest(format!("the {name} header is not printable ASCII"))
        })?;
        let value = percent_decode(value).ok_or_else(|| {
            ApiError::BadRequest(format!("the {name} header is not percent-encoded UTF-8"))
        })?;
        if event.insert(attribute.to_owned(), value.into()).is_some() {
            // Two field lines of one attribute: which one the sender meant is unknowable,
            // and taking either could put the event on the wrong person.
            return Err(ApiError::BadRequest(format!(
                "the {name} header is given more than once: send each CloudEvents attribute once"
            )));
        }
    }
    let json = handover_events::envelope::is_json_content_type(content_type);
    if !body.is_empty() {
        if !json {
            return Err(ApiError::BadRequest(format!(
                "a binary-mode CloudEvent's data must be JSON (Content-Type application/json), not {content_type}"
            )));
        }
        event.insert("data".into(), json_body(body)?);
    }
    if json {
        event.insert("datacontenttype".into(), "application/json".into());
    }
    Ok(serde_json::Value::Object(event))
}

/// `%XX` sequences decoded (as UTF-8); `None` when one is malformed.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// A compressed body (`Content-Encoding` other than `identity`) is refused by name, rather
/// than answered "the body is not valid JSON" (gzip) or read as if plain when the sender
/// believes it compressed.
pub(crate) fn refuse_content_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|e| !e.eq_ignore_ascii_case("identity"))
    {
        Some(encoding) => Err(ApiError::UnsupportedEncoding(
            encoding.chars().take(32).collect(),
        )),
        None => Ok(()),
    }
}

async fn post_events(
    State(st): State<AppState>,
    policy::Publisher(caller, _): policy::Publisher<ApiError>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    refuse_content_encoding(&headers)?;
    let (value, batch_expected) =
        if headers.contains_key("ce-specversion") && !ct.starts_with("application/cloudevents") {
            (binary_mode_event(&headers, &ct, &body)?, Some(false))
        } else {
            let batch_expected = match ct.as_str() {
                "application/cloudevents-batch+json" => Some(true),
                "application/cloudevents+json" => Some(false),
                "application/json" => None,
                _ => return Err(ApiError::UnsupportedMediaType),
            };
            (json_body(&body)?, batch_expected)
        };
    let (items, is_batch) = match (value, batch_expected) {
        (serde_json::Value::Array(a), Some(true) | None) => (a, true),
        (v @ serde_json::Value::Object(_), Some(false) | None) => (vec![v], false),
        (_, Some(true)) => {
            return Err(ApiError::BadRequest(
                "a batch must be a JSON array of CloudEvents".into(),
            ))
        }
        (_, _) => {
            return Err(ApiError::BadRequest(
                "a CloudEvent must be a JSON object".into(),
            ))
        }
    };
    if items.is_empty() {
        // An empty batch is a valid request (CloudEvents JSON format, section 4.3): there
        // is nothing to store, so it is accepted at once.
        let body = Accepted {
            accepted: 0,
            duplicates: 0,
            events: Vec::new(),
        };
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::TooManyEvents {
            sent: items.len(),
            limit: MAX_BATCH,
        });
    }
    let total = items.len();
    let mut events = Vec::with_capacity(total);
    let mut ignored = Vec::with_capacity(total);
    let mut errors = Vec::new();
    let mut invalid = 0;
    for (i, item) in items.into_iter().enumerate() {
        match Event::from_json_noting(item) {
            Ok((e, not_kept)) => {
                events.push(e);
                ignored.push(not_kept);
            }
            Err(errs) => {
                invalid += 1;
                errors.extend(errs.0.into_iter().map(|e| FieldError {
                    pointer: if is_batch {
                        format!("/{i}{}", e.pointer)
                    } else {
                        e.pointer
                    },
                    message: e.message,
                }));
            }
        }
    }
    // Two events of one batch under the same source and id but with other content: the log
    // would keep the first and take the second for a resend of it, losing it unseen.
    if is_batch && invalid == 0 {
        let mut first: std::collections::HashMap<(&str, &str), usize> =
            std::collections::HashMap::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            match first.entry((e.source.as_str(), e.id.as_str())) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    let j = *o.get();
                    if events[j].to_json_vec() != e.to_json_vec() {
                        invalid += 1;
                        errors.push(FieldError {
                            pointer: format!("/{i}/id"),
                            message: format!(
                                "event /{j} of this batch has the same source and id with other \
                                 content: an id names one event, so this one needs its own"
                            ),
                        });
                    }
                }
            }
        }
    }
    if invalid > 0 {
        st.metrics
            .events_rejected
            .fetch_add(invalid as u64, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::InvalidEvents {
            count: invalid,
            total,
            errors,
        });
    }
    let refused: Vec<FieldError> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            policy::may_publish(&caller, e).err().map(|f| FieldError {
                pointer: if is_batch {
                    format!("/{i}{}", f.pointer)
                } else {
                    f.pointer
                },
                message: f.message,
            })
        })
        .collect();
    if !refused.is_empty() {
        st.metrics
            .events_rejected
            .fetch_add(refused.len() as u64, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::NotPermitted { errors: refused });
    }
    let ingest = observe::ingest_span(&headers, &events);
    let stored = tracing::Instrument::instrument(st.sink.publish(&events), ingest)
        .await
        .map_err(|e| match e {
            SinkError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "event log unavailable; refusing events");
                ApiError::Unavailable
            }
            SinkError::Refused(cause) => {
                ApiError::BadRequest(format!("the event log refused the events: {cause}"))
            }
        })?;
    let duplicates = stored.iter().filter(|s| s.duplicate).count();
    st.metrics
        .record_stored(stored.len() - duplicates, duplicates);
    let body = Accepted {
        accepted: stored.len() - duplicates,
        duplicates,
        events: events
            .iter()
            .zip(&stored)
            .zip(ignored)
            .map(|((e, s), ignored)| AcceptedEvent {
                id: e.id.clone(),
                source: e.source.clone(),
                sequence: s.sequence,
                duplicate: s.duplicate,
                ignored,
            })
            .collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn get_journey(
    State(st): State<AppState>,
    headers: HeaderMap,
    from: policy::ClientAddr,
    Path(nhs_number): Path<String>,
) -> Result<Response, ApiError> {
    let caller = worklists::require_people_reader(&st, &headers).await?;
    let reason = access_reason(&headers).ok_or(ApiError::ReasonRequired)?;
    let nhs =
        NhsNumber::parse(&nhs_number).map_err(|e| ApiError::InvalidNhsNumber(e.to_string()))?;
    let mut journey = read_journey(&st, &caller, &nhs)?;
    let (role, organisation) = (caller.role, caller.organisation.clone());
    let answer = policy::audited(
        &st,
        &caller,
        reason,
        "journey",
        from,
        [nhs.as_string().as_str()],
        move || {
            policy::minimise_journey(role, &organisation, &mut journey);
            no_store_json(&journey.view(handover_events::time::london_today()), 4096)
        },
    )
    .await?;
    st.metrics
        .journey_reads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(answer)
}

/// A person's data as a JSON answer that no cache may keep (`Cache-Control: no-store`),
/// serialised into a buffer of `capacity` bytes to begin with: a worklist page is tens of
/// kilobytes, which axum's `Json` (128 bytes, then doubling) reaches after about nine
/// reallocations, each copying what was written so far.
pub(crate) fn no_store_json<T: Serialize>(value: &T, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// The stated reason for access, when it is one of the lawful reasons.
pub(crate) fn access_reason(headers: &HeaderMap) -> Option<&'static str> {
    let given = headers.get("handover-access-reason")?.to_str().ok()?.trim();
    auth::ACCESS_REASONS
        .iter()
        .find(|r| r.eq_ignore_ascii_case(given))
        .copied()
}

/// A person's journey if the caller's organisation may see it; 404 otherwise, so that
/// whether someone is known elsewhere is not disclosed.
pub(crate) fn read_journey(
    st: &AppState,
    caller: &Caller,
    nhs: &NhsNumber,
) -> Result<handover_projections::Journey, ApiError> {
    let journey = st
        .journeys
        .get(&st.journey_tree, nhs)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or(ApiError::NotFound)?;
    if !policy::may_see_journey(caller, &journey) {
        return Err(ApiError::NotFound);
    }
    Ok(journey)
}

#[derive(Serialize)]
struct AuditPage {
    count: usize,
    records: Vec<handover_events::AuditRecord>,
}

async fn get_audit(
    State(st): State<AppState>,
    headers: HeaderMap,
    from: policy::ClientAddr,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let caller = st.auth.authenticate(&headers).await?;
    if caller.role != Role::Auditor {
        return Err(ApiError::Forbidden {
            role: caller.role.as_str().into(),
            action: "read the access audit",
        });
    }
    let nhs = match q
        .get("nhs_number")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(n) => {
            Some(NhsNumber::parse(n).map_err(|e| ApiError::InvalidNhsNumber(e.to_string()))?)
        }
        None => None,
    };
    let user = q
        .get("user")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if nhs.is_none() && user.is_none() {
        return Err(ApiError::BadRequest(
            "give nhs_number or user (or both)".into(),
        ));
    }
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest("limit must be a whole number from 1 to 10000".into())
            })?,
        None => 1000,
    };
    // "Who viewed my record" covers the person under every identifier they had: NHS
    // numbers merged into theirs and local ids linked to it (the journey knows them; a read
    // under an old number found the same journey). Not under the identifiers alone: a
    // person known by an old number only is found through it.
    let also = match &nhs {
        Some(n) => match st.journeys.get(&st.journey_tree, n) {
            Ok(Some(j)) => {
                let mut also: Vec<handover_events::PersonRef> = Vec::new();
                for other in j
                    .nhs_number
                    .iter()
                    .chain(&j.identity.previous_nhs_numbers)
                    .filter_map(|p| NhsNumber::parse(p).ok())
                    .filter(|p| p != n)
                {
                    also.push(handover_events::PersonRef::Nhs(other));
                }
                also.extend(
                    j.identity
                        .local_ids
                        .iter()
                        .cloned()
                        .map(handover_events::PersonRef::Local),
                );
                also
            }
            Ok(None) => Vec::new(),
            Err(e) => return Err(ApiError::Internal(e.to_string())),
        },
        None => Vec::new(),
    };
    let records = st
        .audit
        .query(&handover_events::AuditQuery {
            nhs_number: nhs,
            also,
            user,
            limit,
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "audit query failed");
            ApiError::Unavailable
        })?;
    let records = policy::auditor_may_see(&st, &caller, records)?;
    // Reading who viewed a person is itself an access to that person's record; it is
    // recorded (durably) after the query, so it is not in its own answer.
    if let Some(n) = &nhs {
        policy::audit(
            &st,
            &caller,
            "audit",
            "audit",
            from,
            [n.as_string().as_str()],
        )
        .await?;
    }
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(AuditPage {
            count: records.len(),
            records,
        }),
    )
        .into_response())
}

async fn readyz(State(st): State<AppState>) -> Response {
    match st.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
