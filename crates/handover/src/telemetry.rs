//! Logging and distributed tracing for the `handover` binary.
//!
//! [`init`] installs one `tracing` subscriber:
//!
//! - log lines on stderr, JSON when stderr is not a terminal (with `trace_id` and `span_id`
//!   when a traced span is active), compact otherwise; filtered by `HANDOVER_LOG` (default
//!   `info,async_nats=warn`);
//! - when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and
//!   neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`), spans are exported
//!   with OTLP over HTTP/protobuf through `tracing-opentelemetry`. The standard variables
//!   apply: `OTEL_SERVICE_NAME` (default `handover`), `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER`
//!   (default parent-based always-on) and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`.
//!
//! When no endpoint is set no OpenTelemetry layer is installed at all: nothing is exported,
//! spans cost what plain `tracing` spans cost, and an event's own CloudEvents `traceparent`
//! is still passed on in the NATS header.
//!
//! The exporter sends through [`TokioHttpClient`]: the SDK's batch span processor runs on
//! its own thread and hands each export to the process's tokio runtime (the workspace's
//! reqwest 0.12 client), so no blocking client and no second reqwest or gRPC stack is built.
//!
//! Span attributes carry event ids, types, sources, stream sequences, HL7 control ids and
//! route templates; never NHS numbers, names or NATS subjects.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::dispatcher::WeakDispatch;
use tracing::span::Id;
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The default log filter when `HANDOVER_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,async_nats=warn";

/// What [`init`] installed; call [`Telemetry::shutdown`] before exiting to flush spans.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter (waits at most for its export timeout).
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    }
}

/// Whether the environment asks for OTLP trace export.
pub fn otlp_requested() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let is = |k: &str, v: &str| std::env::var(k).is_ok_and(|x| x.trim().eq_ignore_ascii_case(v));
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// Installs the global subscriber (see the module docs). Call from inside the tokio runtime.
pub fn init() -> anyhow::Result<Telemetry> {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_from_env("HANDOVER_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let provider = if otlp_requested() {
        Some(otlp_provider()?)
    } else {
        None
    };
    let otel: Box<dyn Layer<_> + Send + Sync> = match &provider {
        Some(p) => layers(p),
        None => Box::new(tracing_subscriber::layer::Identity::new()),
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = if std::io::stderr().is_terminal() {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(JsonWithTraceIds(tracing_subscriber::fmt::format().json()))
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    installed.context("a tracing subscriber is already installed")?;
    if provider.is_some() {
        tracing::info!(service = %service_name(), "exporting traces with OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "handover".into())
}

/// A tracer provider exporting with OTLP/HTTP (protobuf) in batches, configured from the
/// standard `OTEL_*` variables.
pub fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    if let Ok(p) = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        if p.trim() != "http/protobuf" {
            anyhow::bail!("OTEL_EXPORTER_OTLP_PROTOCOL={p} is not supported: handover exports OTLP as http/protobuf");
        }
    }
    let handle = tokio::runtime::Handle::try_current()
        .context("telemetry must be initialised inside the tokio runtime")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(TokioHttpClient::new(handle)?)
        .build()
        .context("cannot build the OTLP span exporter")?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build())
}

/// The resource: `service.name` from `OTEL_SERVICE_NAME` (else `handover`, unless
/// `OTEL_RESOURCE_ATTRIBUTES` names one) and `service.version`.
pub fn resource() -> Resource {
    let named_by_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| {
        a.split(',')
            .any(|kv| kv.trim().starts_with("service.name="))
    });
    let mut b = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var("OTEL_SERVICE_NAME").is_err() && !named_by_attributes {
        b = b.with_service_name("handover");
    }
    b.build()
}

/// The layers that bridge `tracing` spans to `provider` and note each traced span's ids
/// for the JSON log lines. Used by [`init`] and by tests that install their own exporter.
pub fn layers<S>(provider: &SdkTracerProvider) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let tracer = provider.tracer("handover");
    Box::new(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .and_then(TraceIdsLayer::default()),
    )
}

/// The trace and span id of a traced span, kept in its extensions for log lines.
#[derive(Debug, Clone)]
struct TraceIds {
    trace_id: String,
    span_id: String,
}

/// Notes the OpenTelemetry ids of each span when it is first entered (after the
/// OpenTelemetry layer has started it).
#[derive(Default)]
struct TraceIdsLayer {
    dispatch: OnceLock<WeakDispatch>,
}

impl<S> Layer<S> for TraceIdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.extensions().get::<TraceIds>().is_some() {
            return;
        }
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        let Some(cx) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.extensions_mut().insert(TraceIds {
                trace_id: sc.trace_id().to_string(),
                span_id: sc.span_id().to_string(),
            });
        }
    }
}

/// The JSON event format with `trace_id` and `span_id` first when a traced span is active.
struct JsonWithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for JsonWithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|s| s.extensions().get::<TraceIds>().cloned())
        });
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id, ids.span_id
            ),
            None => writer.write_str(&line),
        }
    }
}

/// An OpenTelemetry HTTP client that runs each request on the tokio runtime it was made
/// in, so the SDK's exporter thread never blocks a runtime worker and needs no runtime of
/// its own.
#[derive(Debug, Clone)]
pub struct TokioHttpClient {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
}

impl TokioHttpClient {
    /// A client sending on `handle`'s runtime, each request limited to 10 s.
    pub fn new(handle: tokio::runtime::Handle) -> anyhow::Result<TokioHttpClient> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the OTLP HTTP client")?;
        Ok(TokioHttpClient { client, handle })
    }
}

impl HttpClient for TokioHttpClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let task = self.handle.spawn(async move {
            let (parts, body) = request.into_parts();
            let resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            let mut out = Response::builder().status(status).body(body)?;
            *out.headers_mut() = headers;
            Ok::<_, HttpError>(out)
        });
        Box::pin(async move { task.await.map_err(|e| Box::new(e) as HttpError)? })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_trace_and_span_id_inside_a_traced_span() {
        let provider = SdkTracerProvider::builder().build();
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(layers(&provider)).with(
            tracing_subscriber::fmt::layer()
                .json()
                .event_format(JsonWithTraceIds(tracing_subscriber::fmt::format().json()))
                .with_writer(move || out.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("traced");
            let _g = span.enter();
            tracing::info!(answer = 42, "inside");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none());
        assert_eq!(lines[1]["fields"]["answer"], 42);
        assert_eq!(lines[1]["trace_id"].as_str().unwrap().len(), 32);
        assert_eq!(lines[1]["span_id"].as_str().unwrap().len(), 16);
    }
}
