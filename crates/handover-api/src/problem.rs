//! RFC 9457 problem details: every client and server error the API returns.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use handover_events::FieldError;
use serde::Serialize;

/// Base of problem `type` URIs.
pub const PROBLEM_BASE: &str = "https://handover.example.org/problems/";

/// An API error, rendered as `application/problem+json`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown bearer token.
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// An OpenID Connect token that is not valid (expired, wrong issuer or audience, bad
    /// signature, unknown key, …).
    #[error("{0}")]
    InvalidToken(crate::oidc::TokenError),
    /// A valid OpenID Connect token that does not carry exactly one Handover role.
    #[error("{0}")]
    NoRole(String),
    /// The caller's role may not do this.
    #[error("the {role} role may not {action}")]
    Forbidden {
        /// The caller's role.
        role: String,
        /// What was refused.
        action: &'static str,
    },
    /// Reading a person's record without a stated reason.
    #[error("state a reason for access in the Handover-Access-Reason header: direct-care, safeguarding, vital-interests or explicit-consent")]
    ReasonRequired,
    /// Events failed validation.
    #[error("{count} of {total} events are invalid; nothing was stored")]
    InvalidEvents {
        /// Invalid events.
        count: usize,
        /// Events submitted.
        total: usize,
        /// Every problem, with pointers into the request body.
        errors: Vec<FieldError>,
    },
    /// The caller may not publish some of the events.
    #[error("this token may not publish some of these events; nothing was stored")]
    NotPermitted {
        /// Every refusal, with pointers into the request body.
        errors: Vec<FieldError>,
    },
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A batch holds more events than one request may (`413`): nothing was stored.
    #[error("this batch holds {sent} events, more than the {limit} one request may hold; nothing was stored: send it as several batches")]
    TooManyEvents {
        /// Events in the batch.
        sent: usize,
        /// The most one request may hold.
        limit: usize,
    },
    /// The path's NHS number is not valid.
    #[error("{0}")]
    InvalidNhsNumber(String),
    /// No such record.
    #[error("no journey is recorded for this NHS number")]
    NotFound,
    /// The body's media type is not accepted.
    #[error(
        "send application/cloudevents+json, application/cloudevents-batch+json or application/json"
    )]
    UnsupportedMediaType,
    /// The body is compressed (`Content-Encoding`), which is not accepted.
    #[error("send the body uncompressed: Content-Encoding {0} is not accepted")]
    UnsupportedEncoding(String),
    /// The request conflicts with work in progress (an erasure while a rebuild runs).
    #[error("{0}")]
    Conflict(String),
    /// The event log is unavailable, or too many publishes are waiting for it: retry later.
    #[error("the event log is unavailable or busy; resend later with the same source and id (a resend is recognised as a duplicate)")]
    Unavailable,
    /// Anything else.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ProblemItem<'a>>,
}

#[derive(Serialize)]
struct ProblemItem<'a> {
    pointer: &'a str,
    detail: &'a str,
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
            ),
            InvalidToken(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid-token",
                "Invalid bearer token",
            ),
            NoRole(_) => (StatusCode::FORBIDDEN, "no-role", "No Handover role"),
            Forbidden { .. } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Not permitted for this role",
            ),
            ReasonRequired => (
                StatusCode::FORBIDDEN,
                "access-reason-required",
                "Reason for access required",
            ),
            InvalidEvents { .. } => (StatusCode::BAD_REQUEST, "invalid-events", "Invalid events"),
            NotPermitted { .. } => (
                StatusCode::FORBIDDEN,
                "not-permitted",
                "Not permitted to publish these events",
            ),
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            TooManyEvents { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-many-events",
                "Batch too large",
            ),
            InvalidNhsNumber(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-nhs-number",
                "Invalid NHS number",
            ),
            NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            UnsupportedEncoding(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-encoding",
                "Unsupported content encoding",
            ),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Event log unavailable",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }
}

impl ApiError {
    /// The `WWW-Authenticate` challenge of a `401` (RFC 6750): `error="invalid_token"` with
    /// the reason when a token was presented but refused.
    pub fn challenge(&self) -> Option<HeaderValue> {
        match self {
            ApiError::Unauthenticated => {
                Some(HeaderValue::from_static("Bearer realm=\"handover\""))
            }
            ApiError::InvalidToken(e) => HeaderValue::from_str(&format!(
                "Bearer realm=\"handover\", error=\"invalid_token\", error_description=\"{e}\""
            ))
            .ok(),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let errors = match &self {
            ApiError::InvalidEvents { errors, .. } | ApiError::NotPermitted { errors } => errors
                .iter()
                .map(|e| ProblemItem {
                    pointer: &e.pointer,
                    detail: &e.message,
                })
                .collect(),
            _ => Vec::new(),
        };
        let body = Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            errors,
        };
        let mut resp = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = self.challenge() {
            h.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let ApiError::Unavailable = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let ApiError::UnsupportedEncoding(_) = self {
            // RFC 9110 15.5.16: a 415 for a content coding says which codings would do.
            h.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        resp
    }
}

/// Errors the framework answers itself — no route (`404`), a route without that method
/// (`405`), a body over the limit (`413`), a path that does not decode (`400`) — come as
/// plain text or an empty body. This layer rewrites them as problem details (an
/// `OperationOutcome` under `/fhir`), keeping their status and headers (`Allow`). Answers
/// the handlers wrote (JSON of any kind) and the web pages under `/ui` are left alone.
pub async fn framework_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let fhir = path.starts_with("/fhir");
    let ui = path == "/ui" || path.starts_with("/ui/");
    let options = req.method() == axum::http::Method::OPTIONS;
    let resp = next.run(req).await;
    let status = resp.status();
    if options && status == StatusCode::METHOD_NOT_ALLOWED {
        // RFC 9110 9.3.7: OPTIONS asks which methods a resource takes. The router adds them
        // (`Allow`) to this answer after the layers, as it does to a 405; they say nothing
        // about anyone, so the answer needs no token.
        return StatusCode::NO_CONTENT.into_response();
    }
    if ui || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("Error");
    let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
        // axum's own words ("Failed to buffer the request body: length limit exceeded") do
        // not say what the limit is.
        format!(
            "the request body is larger than the limit of {} MiB: send fewer resources or events per request",
            crate::MAX_BODY / (1024 * 1024)
        )
    } else if text.is_empty() {
        match status {
            StatusCode::NOT_FOUND => {
                "no such resource: see /openapi.json for the API's paths".to_owned()
            }
            // The router sets `Allow` after the layers, so this text cannot list the
            // methods; the header does.
            StatusCode::METHOD_NOT_ALLOWED => {
                "this resource does not take that method: the Allow header lists those it does"
                    .to_owned()
            }
            _ => reason.to_owned(),
        }
    } else {
        text
    };
    let (body, content_type) = if fhir {
        let code = match status {
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED => "not-supported",
            StatusCode::PAYLOAD_TOO_LARGE => "too-costly",
            s if s.is_server_error() => "exception",
            _ => "invalid",
        };
        let outcome = serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": detail}],
        });
        (outcome, "application/fhir+json")
    } else {
        let slug = match status {
            StatusCode::NOT_FOUND => "not-found".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed".to_owned(),
            StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large".to_owned(),
            StatusCode::BAD_REQUEST => "bad-request".to_owned(),
            s => format!("http-{}", s.as_u16()),
        };
        let problem = serde_json::json!({
            "type": format!("{PROBLEM_BASE}{slug}"),
            "title": reason,
            "status": status.as_u16(),
            "detail": detail,
        });
        (problem, "application/problem+json")
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Response::from_parts(
        parts,
        axum::body::Body::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}
