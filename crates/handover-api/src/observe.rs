//! HTTP observability: a server span per request (continuing an incoming W3C
//! `traceparent`) and the `http_server_request_duration_seconds` histogram, labelled by
//! method, the matched route template (never the raw path, which may hold an NHS number)
//! and status code.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Metrics;

/// The route label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Parses a W3C `traceparent` (version `00`); `None` when malformed or all-zero.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let cx = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1),
        true,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

fn remote_parent(traceparent: &str) -> Option<opentelemetry::Context> {
    parse_traceparent(traceparent)
        .map(|cx| opentelemetry::Context::new().with_remote_span_context(cx))
}

/// The method as an OpenTelemetry `http.request.method` value (`_OTHER` when unknown).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Middleware (added with `Router::layer`, so the matched route is known): one server
/// span and one histogram observation per request.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route: String = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(cx) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(remote_parent)
    {
        let _ = span.set_parent(cx);
    }
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    metrics.observe_http(method, &route, status, started.elapsed());
    response
}

/// The span to publish ingested events under. A request that brought its own
/// `traceparent` header continues that trace (the request span); otherwise, when the
/// first event carries the CloudEvents `traceparent` attribute, a `handover.ingest` span
/// continues the producer's trace, linked to the request span.
pub fn ingest_span(headers: &HeaderMap, events: &[handover_events::Event]) -> tracing::Span {
    let current = tracing::Span::current();
    if headers.contains_key("traceparent") {
        return current;
    }
    let Some(parent) = events
        .iter()
        .find_map(|e| e.traceparent.as_deref())
        .and_then(remote_parent)
    else {
        return current;
    };
    let span = tracing::info_span!(
        parent: None,
        "handover.ingest",
        otel.kind = "internal",
        handover.events = events.len(),
    );
    if span.set_parent(parent).is_ok() {
        let request = current.context().span().span_context().clone();
        span.add_link(request);
        span
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_w3c_traceparent() {
        let cx =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(cx.is_sampled());
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(parse_traceparent("garbage").is_none());
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
        assert_eq!(method_label(&Method::GET), "GET");
    }
}
