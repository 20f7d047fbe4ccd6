//! The JetStream event log: the only crate that talks to NATS.
//!
//! - [`EventLog::connect`] creates or updates the stream (file storage, replicas, duplicate
//!   window) at start-up.
//! - [`EventLog::publish`] stores events in order under pseudonymous subjects with
//!   `Nats-Msg-Id` set from `source`+`id`, and returns only after every publish
//!   acknowledgement: it is the [`EventSink`] adapters hand their events to. While NATS is
//!   away it waits for the reconnection (at most [`LogConfig::publish_wait`]); at most
//!   [`LogConfig::max_pending`] calls wait or are in flight at once, and one more is refused
//!   at once (back-pressure), so memory stays bounded however long the outage.
//! - [`EventLog::feed`] opens a durable pull consumer from a given stream position, for
//!   projections that keep their own position.
//! - [`observe`]: trace context in message headers, publish metrics, read-only status.

pub mod baseline;
pub mod observe;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use handover_events::subject::{subject_for, SUBJECT_ROOT};
use handover_events::{Event, EventSink, PseudonymKey, SinkError, Stored};
use sha2::{Digest, Sha256};

pub use observe::{ConsumerStatus, Inspector, LogStatus, PublishMetrics, StreamStatus};

/// How the event stream is set up.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Stream name (default `HANDOVER`).
    pub stream: String,
    /// Replicas: 1, or 3 on a cluster.
    pub replicas: usize,
    /// How long a resent `Nats-Msg-Id` is recognised as a duplicate by the server.
    pub duplicate_window: Duration,
    /// Longest time JetStream waits for a publish acknowledgement.
    pub ack_timeout: Duration,
    /// Most [`EventLog::publish`] calls waiting for NATS or in flight at once; one more is
    /// refused at once with [`SinkError::Unavailable`] (back-pressure).
    pub max_pending: usize,
    /// Longest time a publish waits for NATS to come back while disconnected before it
    /// fails with [`SinkError::Unavailable`]. Nothing is handed to the client meanwhile, so
    /// a publish that failed this way is not stored later.
    pub publish_wait: Duration,
    /// How the service authenticates to NATS (see deploy/nats-accounts.conf).
    pub auth: NatsAuth,
}

/// NATS credentials of the Handover service. `Debug` never shows a secret.
#[derive(Clone, Default)]
pub enum NatsAuth {
    /// No credentials (a server without authorisation, e.g. `handover dev`).
    #[default]
    None,
    /// An nkey user seed (`SU…`); the server holds only the public key.
    NKey(String),
    /// A user and password (the server holds a bcrypt hash).
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::NKey(_) => f.write_str("NKey(<secret>)"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user}, <secret>)"),
        }
    }
}

impl NatsAuth {
    /// Connection options carrying these credentials.
    pub fn options(&self) -> async_nats::ConnectOptions {
        match self {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::NKey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
            NatsAuth::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            stream: "HANDOVER".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(3600),
            ack_timeout: Duration::from_secs(10),
            max_pending: 1024,
            publish_wait: Duration::from_secs(5),
            auth: NatsAuth::None,
        }
    }
}

/// The longest pause between two reconnection attempts (async-nats backs off exponentially
/// from 1 ms; its own default cap is 4 s, too long for publishes waiting a few seconds).
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Room kept in a message for its headers (`Nats-Msg-Id`, `Content-Type`, `traceparent`)
/// under the server's `max_payload`, which counts headers and payload together.
const HEADER_ALLOWANCE: usize = 512;

/// How often a waiting publish looks at the connection state again, in case it missed the
/// wake-up of a reconnection.
const RECHECK: Duration = Duration::from_millis(100);

/// What bounds publishing: the permits of calls in flight, the wake-up on reconnection and
/// the counters behind `/metrics`. Shared by an [`EventLog`]'s clones.
#[derive(Debug)]
struct PublishGate {
    permits: Arc<tokio::sync::Semaphore>,
    capacity: usize,
    reconnected: Arc<tokio::sync::Notify>,
    waiting: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
}

impl PublishGate {
    fn new(capacity: usize, reconnected: Arc<tokio::sync::Notify>) -> PublishGate {
        let capacity = capacity.max(1);
        PublishGate {
            permits: Arc::new(tokio::sync::Semaphore::new(capacity)),
            capacity,
            reconnected,
            waiting: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        }
    }

    fn render_prometheus(&self) -> String {
        let in_flight = self.capacity - self.permits.available_permits();
        format!(
            "# HELP handover_publish_waiting Publish calls waiting for the connection to NATS to come back.\n# TYPE handover_publish_waiting gauge\nhandover_publish_waiting {}\n\
             # HELP handover_publish_in_flight Publish calls waiting for NATS or for their acknowledgements (at most nats.max_pending).\n# TYPE handover_publish_in_flight gauge\nhandover_publish_in_flight {in_flight}\n\
             # HELP handover_publish_max_pending The configured bound on publish calls waiting or in flight (nats.max_pending).\n# TYPE handover_publish_max_pending gauge\nhandover_publish_max_pending {}\n\
             # HELP handover_publish_refused_total Publish calls refused at once because nats.max_pending were already waiting or in flight (back-pressure).\n# TYPE handover_publish_refused_total counter\nhandover_publish_refused_total {}\n\
             # HELP handover_publish_wait_timeouts_total Publish calls that failed because NATS did not come back within nats.publish_wait_ms.\n# TYPE handover_publish_wait_timeouts_total counter\nhandover_publish_wait_timeouts_total {}\n",
            self.waiting.load(Ordering::Relaxed),
            self.capacity,
            self.refused.load(Ordering::Relaxed),
            self.timed_out.load(Ordering::Relaxed),
        )
    }
}

/// Counts one waiting publish while alive.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Errors talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Could not connect to the server.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// JetStream refused the stream configuration or is not enabled.
    #[error("cannot set up stream {stream}: {message}")]
    Stream {
        /// Stream name.
        stream: String,
        /// Why.
        message: String,
    },
    /// A consumer operation failed.
    #[error("consumer {name}: {message}")]
    Consumer {
        /// Consumer name.
        name: String,
        /// Why.
        message: String,
    },
    /// The consumer delivered messages to a pull request this feed did not make (its
    /// delivery sequence jumped): another client is pulling from the same consumer, or a
    /// closed feed's last request reached the server after the consumer was recreated.
    /// Those messages were never seen here, so the reader must not move past them: reopen
    /// the feed at the reader's position.
    #[error(
        "consumer {name}: expected delivery {expected}, got {got}: deliveries went to another pull request on this consumer; reopening the feed at the stored position"
    )]
    Gap {
        /// Consumer name.
        name: String,
        /// The delivery (consumer) sequence expected next.
        expected: u64,
        /// The delivery sequence received.
        got: u64,
    },
}

/// The event log on JetStream.
#[derive(Clone)]
pub struct EventLog {
    client: async_nats::Client,
    js: jetstream::Context,
    config: LogConfig,
    key: PseudonymKey,
    metrics: Arc<PublishMetrics>,
    gate: Arc<PublishGate>,
    /// The largest stored event the server takes: its `max_payload` when connecting, less
    /// [`HEADER_ALLOWANCE`] (0: not known, not checked).
    max_event_bytes: usize,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("stream", &self.config.stream)
            .finish()
    }
}

/// The `Nats-Msg-Id` of an event: a digest of `source` and `id`, so a resent event is a
/// duplicate whatever the length or content of its id.
pub fn message_id(event: &Event) -> String {
    let mut h = Sha256::new();
    h.update(event.source.as_bytes());
    h.update([0x1f]);
    h.update(event.id.as_bytes());
    hex::encode(&h.finalize()[..20])
}

impl EventLog {
    /// Connects and creates or updates the stream.
    pub async fn connect(
        url: &str,
        config: LogConfig,
        key: PseudonymKey,
    ) -> Result<EventLog, LogError> {
        // Several servers may be given, comma-separated (a cluster's seed list).
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let reconnected = Arc::new(tokio::sync::Notify::new());
        let wake = reconnected.clone();
        let client = config
            .auth
            .options()
            .name("handover")
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                let exp = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
                Duration::from_millis(2u64.saturating_pow(exp)).min(MAX_RECONNECT_DELAY)
            })
            .event_callback(move |event| {
                let wake = wake.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            wake.notify_waiters();
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("disconnected from NATS; reconnecting")
                        }
                        _ => {}
                    }
                }
            })
            .connect(urls.as_slice())
            .await
            .map_err(|source| LogError::Connect {
                url: redact_url(url),
                source,
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.ack_timeout);
        let gate = Arc::new(PublishGate::new(config.max_pending, reconnected));
        let max_event_bytes = client
            .server_info()
            .max_payload
            .saturating_sub(HEADER_ALLOWANCE);
        let log = EventLog {
            client,
            js,
            config,
            key,
            metrics: Arc::default(),
            gate,
            max_event_bytes,
        };
        log.ensure_stream().await?;
        Ok(log)
    }

    async fn ensure_stream(&self) -> Result<(), LogError> {
        let cfg = stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{SUBJECT_ROOT}.>")],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.config.replicas,
            duplicate_window: self.config.duplicate_window,
            discard: stream::DiscardPolicy::New,
            description: Some("Handover care events (CloudEvents 1.0 JSON)".into()),
            ..Default::default()
        };
        self.js
            .create_or_update_stream(cfg)
            .await
            .map(|_| ())
            .map_err(|e| LogError::Stream {
                stream: self.config.stream.clone(),
                message: e.to_string(),
            })
    }

    /// Publish counters, ack latency and the publish gate (waiting, in flight, refused), as
    /// Prometheus text.
    pub fn render_metrics(&self) -> String {
        self.metrics.render_prometheus() + &self.gate.render_prometheus()
    }

    /// Publish calls waiting for the connection to NATS to come back right now.
    pub fn publish_waiting(&self) -> u64 {
        self.gate.waiting.load(Ordering::Relaxed)
    }

    /// Read-only status of every stream and consumer on this connection.
    pub fn inspector(&self) -> Inspector {
        Inspector::from_context(self.js.clone())
    }

    /// The pseudonym key in use.
    pub fn pseudonym_key(&self) -> &PseudonymKey {
        &self.key
    }

    /// The stream name.
    pub fn stream_name(&self) -> &str {
        &self.config.stream
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The NATS subject an event is stored under.
    pub fn subject(&self, event: &Event) -> Option<String> {
        event
            .person()
            .map(|p| subject_for(event.event_type(), &self.key.person_key(&p)))
    }

    /// Stores events in order; resolves once JetStream has acknowledged every one.
    ///
    /// All publishes are sent before the first acknowledgement is awaited, so a batch costs
    /// about one round trip. If any acknowledgement fails the whole call fails and nothing in
    /// it may be acknowledged to the sender; a retry is safe (duplicates are recognised).
    ///
    /// **While NATS is away** the call waits for the client to reconnect, at most
    /// [`LogConfig::publish_wait`], and then publishes; past that it fails with
    /// [`SinkError::Unavailable`] without having handed anything to the client (so nothing
    /// of it is stored later). At most [`LogConfig::max_pending`] calls wait or are in
    /// flight at once; one more fails at once with [`SinkError::Unavailable`]
    /// (back-pressure: the caller tells its sender to retry later).
    ///
    /// Each event gets a producer span `handover.publish` (a child of the caller's span;
    /// without one, it continues the event's own `traceparent`) carrying the event id, type
    /// and source and, once acknowledged, the stream sequence. The span's W3C
    /// `traceparent` goes into the NATS header `traceparent`, and into the stored
    /// CloudEvent when the event has none (the `Nats-Msg-Id` does not depend on it).
    pub async fn publish(&self, events: &[Event]) -> Result<Vec<Stored>, SinkError> {
        let result = match self.gate.permits.clone().try_acquire_owned() {
            Ok(_permit) => match self.wait_connected().await {
                Ok(()) => self.publish_traced(events).await,
                Err(e) => Err(e),
            },
            Err(_) => {
                self.gate.refused.fetch_add(1, Ordering::Relaxed);
                Err(SinkError::Unavailable(format!(
                    "{} publishes are already waiting for NATS or for their acknowledgements (nats.max_pending); retry later",
                    self.gate.capacity
                )))
            }
        };
        if result.is_err() {
            self.metrics.failed();
        }
        result
    }

    /// Returns once the client is connected, or fails after [`LogConfig::publish_wait`].
    async fn wait_connected(&self) -> Result<(), SinkError> {
        if self.is_connected() {
            return Ok(());
        }
        let _waiting = Waiting::new(&self.gate.waiting);
        let deadline = tokio::time::Instant::now() + self.config.publish_wait;
        loop {
            // Registered before looking, so a reconnection in between is not missed; the
            // periodic recheck covers a wake-up that comes before the state changes.
            let woken = self.gate.reconnected.notified();
            if self.is_connected() {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                self.gate.timed_out.fetch_add(1, Ordering::Relaxed);
                return Err(SinkError::Unavailable(format!(
                    "not connected to NATS, and it did not come back within {} ms (nats.publish_wait_ms); nothing was sent",
                    self.config.publish_wait.as_millis()
                )));
            }
            let _ = tokio::time::timeout((deadline - now).min(RECHECK), woken).await;
        }
    }

    async fn publish_traced(&self, events: &[Event]) -> Result<Vec<Stored>, SinkError> {
        // Every message is built, and its size checked, before any is sent: an event the
        // server cannot take must not leave the others of its batch stored under an error
        // the sender would retry for ever.
        let limit = self.max_event_bytes;
        let mut messages = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let subject = self
                .subject(event)
                .ok_or_else(|| SinkError::Refused("event names no person".into()))?;
            let span = self.publish_span(event);
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", message_id(event).as_str());
            headers.insert("Content-Type", "application/cloudevents+json");
            let traced = observe::span_traceparent(&span);
            let payload = match (&event.traceparent, &traced) {
                (None, Some(tp)) => {
                    let mut e = event.clone();
                    e.traceparent = Some(tp.clone());
                    e.to_json_vec()
                }
                _ => event.to_json_vec(),
            };
            if let Some(tp) = traced.as_ref().or(event.traceparent.as_ref()) {
                headers.insert("traceparent", tp.as_str());
            }
            if limit > 0 && payload.len() > limit {
                return Err(SinkError::Refused(format!(
                    "event {} of {} (id {:?}) is {} bytes as stored, over the event log's limit of {limit} bytes per event; none of them was stored",
                    i + 1,
                    events.len(),
                    event.id,
                    payload.len(),
                )));
            }
            messages.push((event, subject, headers, payload, span));
        }
        let mut pending = Vec::with_capacity(messages.len());
        for (event, subject, headers, payload, span) in messages {
            let sent = Instant::now();
            let ack = self
                .js
                .publish_with_headers(subject, headers, Bytes::from(payload))
                .await
                .map_err(|e| SinkError::Unavailable(e.to_string()))?;
            pending.push((ack, span, sent, event.event_type().as_str()));
        }
        let mut stored = Vec::with_capacity(pending.len());
        for (ack, span, sent, event_type) in pending {
            let ack = ack.await.map_err(|e| {
                span.record("otel.status_code", "ERROR");
                SinkError::Unavailable(e.to_string())
            })?;
            self.metrics.ack_latency(sent.elapsed());
            self.metrics.stored(event_type, ack.duplicate);
            span.record("messaging.nats.stream_sequence", ack.sequence);
            span.record("handover.duplicate", ack.duplicate);
            stored.push(Stored {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
        Ok(stored)
    }

    /// The producer span of one event: never the subject (a person key) or any data.
    fn publish_span(&self, event: &Event) -> tracing::Span {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let event_type = event.event_type().as_str();
        let span = tracing::info_span!(
            "handover.publish",
            otel.name = %format_args!("publish {}", self.config.stream),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = %self.config.stream,
            cloudevents.event_id = %event.id,
            cloudevents.event_type = event_type,
            cloudevents.event_source = %event.source,
            messaging.nats.stream_sequence = tracing::field::Empty,
            handover.duplicate = tracing::field::Empty,
        );
        if let Some(tp) = &event.traceparent {
            if tracing::Span::current().is_none() {
                // Nothing to continue in this process: continue the producer's trace.
                observe::continue_trace(&span, tp);
            } else if let Some(cx) = observe::parse_traceparent(tp) {
                span.add_link(cx);
            }
        }
        span
    }

    /// The sequence of the last message in the stream (0 when empty).
    pub async fn last_sequence(&self) -> Result<u64, LogError> {
        let mut s =
            self.js
                .get_stream(&self.config.stream)
                .await
                .map_err(|e| LogError::Stream {
                    stream: self.config.stream.clone(),
                    message: e.to_string(),
                })?;
        let info = s.info().await.map_err(|e| LogError::Stream {
            stream: self.config.stream.clone(),
            message: e.to_string(),
        })?;
        Ok(info.state.last_sequence)
    }

    /// Opens the durable consumer `name` delivering every message after stream sequence
    /// `after` (the caller's stored position), recreating it at that position so the
    /// caller's position, not the server's, decides what is delivered.
    pub async fn feed(
        &self,
        name: &str,
        filter: Option<String>,
        after: u64,
    ) -> Result<Feed, LogError> {
        let err = |message: String| LogError::Consumer {
            name: name.to_string(),
            message,
        };
        let stream = self
            .js
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| err(e.to_string()))?;
        // Ignore "not found": the consumer is recreated at our position either way.
        let _ = stream.delete_consumer(name).await;
        let deliver_policy = if after == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        };
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.to_string()),
                description: Some("Handover projection".into()),
                deliver_policy,
                ack_policy: consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 20_000,
                // A consumer nobody has pulled from for a day (its store deleted, its
                // server gone) is removed by the server (durables too, since 2.9); a
                // projector recreates its own at start-up anyway.
                inactive_threshold: CONSUMER_INACTIVE,
                filter_subject: filter.unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        // From the create's own answer: the first pull request goes out at once (another
        // client's requests on this consumer are answered in turn with ours).
        let pending = consumer.cached_info().num_pending;
        let messages = consumer
            .stream()
            .max_messages_per_batch(2000)
            .messages()
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(Feed {
            name: name.to_string(),
            consumer,
            messages,
            pending,
            // A new consumer's first delivery is number 1. Anything else (a delete above that
            // failed, or another client's request answered since the create) shows as a gap
            // at the first message.
            next_delivery: 1,
            gap: None,
        })
    }
}

impl EventLog {
    /// Deletes the durable consumer `name` (absent is not an error).
    pub async fn delete_consumer(&self, name: &str) -> Result<(), LogError> {
        let stream =
            self.js
                .get_stream(&self.config.stream)
                .await
                .map_err(|e| LogError::Consumer {
                    name: name.to_string(),
                    message: e.to_string(),
                })?;
        let _ = stream.delete_consumer(name).await;
        Ok(())
    }
}

/// URLs without credentials, for error messages.
fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|u| redact_one(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_creds, host)) => match scheme_creds.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***@{host}"),
            None => format!("***@{host}"),
        },
        None => url.to_string(),
    }
}

impl EventSink for EventLog {
    fn publish<'a>(
        &'a self,
        events: &'a [Event],
    ) -> handover_events::sink::BoxFuture<'a, Result<Vec<Stored>, SinkError>> {
        Box::pin(EventLog::publish(self, events))
    }
}

/// One message delivered to a projection.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stream sequence.
    pub sequence: u64,
    /// The NATS subject (pseudonymous).
    pub subject: String,
    /// The CloudEvent JSON.
    pub payload: Bytes,
    /// Messages still pending for this consumer after this one.
    pub pending: u64,
    /// The W3C trace context the message was published under (NATS header `traceparent`).
    pub traceparent: Option<String>,
    /// When JetStream stored the message (the server's clock), if known.
    pub published: Option<std::time::SystemTime>,
}

impl Delivery {
    /// A consumer span for applying this message in `projection`, continuing the trace it
    /// was published under: enter it (or keep it alive) while the message is applied.
    /// Carries the stream sequence only; the projection may record more.
    pub fn span(&self, projection: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "handover.project",
            otel.name = %format_args!("process {projection}"),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.consumer.group.name = projection,
            messaging.nats.stream_sequence = self.sequence,
        );
        if let Some(tp) = &self.traceparent {
            observe::continue_trace(&span, tp);
        }
        span
    }
}

/// A batch of deliveries; acknowledge it only after its effects are durable.
pub struct Batch {
    /// The messages, in stream order.
    pub deliveries: Vec<Delivery>,
    last: Option<jetstream::Message>,
}

impl Batch {
    /// Acknowledges every message of the batch (the consumer acknowledges cumulatively).
    pub async fn ack(self) -> Result<(), LogError> {
        if let Some(m) = self.last {
            m.ack().await.map_err(|e| LogError::Consumer {
                name: "ack".into(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// How long a projection's consumer may go without a pull request before the server
/// removes it.
pub const CONSUMER_INACTIVE: Duration = Duration::from_secs(24 * 60 * 60);

/// A durable consumer's message feed.
///
/// Every delivery's consumer sequence is checked: a feed only ever returns an unbroken run
/// of its consumer's deliveries. A jump means another pull request on the same consumer
/// took messages this feed never saw ([`LogError::Gap`]); the messages before the jump are
/// returned, and the next call reports the gap.
pub struct Feed {
    name: String,
    consumer: consumer::PullConsumer,
    messages: consumer::pull::Stream,
    pending: u64,
    /// The consumer (delivery) sequence the next message must carry.
    next_delivery: u64,
    /// A jump found while taking the last batch: `(expected, got)`.
    gap: Option<(u64, u64)>,
}

impl Feed {
    /// Messages after the start position when the feed was opened: how far behind its
    /// reader is before the first batch arrives.
    pub fn pending_at_open(&self) -> u64 {
        self.pending
    }

    /// Waits for at least one message, then takes what else is ready, up to `max`.
    pub async fn next_batch(&mut self, max: usize) -> Result<Batch, LogError> {
        if let Some((expected, got)) = self.gap {
            return Err(LogError::Gap {
                name: self.name.clone(),
                expected,
                got,
            });
        }
        let mut deliveries = Vec::new();
        let mut last = None;
        let first = self.messages.next().await;
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                None => {
                    return Err(LogError::Consumer {
                        name: self.name.clone(),
                        message: "message stream ended".into(),
                    })
                }
                Some(Err(e)) => {
                    if deliveries.is_empty() {
                        return Err(LogError::Consumer {
                            name: self.name.clone(),
                            message: e.to_string(),
                        });
                    }
                    break;
                }
                Some(Ok(msg)) => {
                    let (sequence, delivery, pending, published) = match msg.info() {
                        Ok(i) => (
                            i.stream_sequence,
                            i.consumer_sequence,
                            i.pending,
                            u64::try_from(i.published.unix_timestamp_nanos())
                                .ok()
                                .map(|ns| std::time::UNIX_EPOCH + Duration::from_nanos(ns)),
                        ),
                        Err(e) => {
                            return Err(LogError::Consumer {
                                name: self.name.clone(),
                                message: format!("message without JetStream metadata: {e}"),
                            })
                        }
                    };
                    if delivery != self.next_delivery {
                        let (expected, got) = (self.next_delivery, delivery);
                        if deliveries.is_empty() {
                            return Err(LogError::Gap {
                                name: self.name.clone(),
                                expected,
                                got,
                            });
                        }
                        self.gap = Some((expected, got));
                        break;
                    }
                    self.next_delivery += 1;
                    let traceparent = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("traceparent"))
                        .map(|v| v.as_str().to_string());
                    deliveries.push(Delivery {
                        sequence,
                        subject: msg.subject.to_string(),
                        payload: msg.payload.clone(),
                        pending,
                        traceparent,
                        published,
                    });
                    last = Some(msg);
                }
            }
            if deliveries.len() >= max {
                break;
            }
            // What has already arrived, past tokio's cooperative budget: under it a task's
            // 128th receive in one poll reports "not ready" however many messages wait, and
            // batches were cut at about 126 deliveries.
            next = tokio::task::unconstrained(self.messages.next()).now_or_never();
        }
        Ok(Batch { deliveries, last })
    }

    /// Messages the server still has for this consumer, once it has checked that the
    /// consumer delivered nothing this feed has not received ([`LogError::Gap`]: another
    /// pull request took the messages after the last one seen here, so no later delivery
    /// would reveal the gap). Call it when no message has arrived for a while: a message
    /// still on its way here would also be reported as a gap.
    pub async fn pending(&mut self) -> Result<u64, LogError> {
        let gap = |expected, got| LogError::Gap {
            name: self.name.clone(),
            expected,
            got,
        };
        if let Some((expected, got)) = self.gap {
            return Err(gap(expected, got));
        }
        let (delivered, pending) = self
            .consumer
            .info()
            .await
            .map(|i| (i.delivered.consumer_sequence, i.num_pending))
            .map_err(|e| LogError::Consumer {
                name: self.name.clone(),
                message: e.to_string(),
            })?;
        if delivered >= self.next_delivery {
            self.gap = Some((self.next_delivery, delivered + 1));
            return Err(gap(self.next_delivery, delivered + 1));
        }
        Ok(pending)
    }
}

/// The access-audit stream: `HANDOVER_AUDIT`, subjects `audit.<person-key>.<user-key>`.
#[derive(Clone)]
pub struct AuditLog {
    js: jetstream::Context,
    stream: String,
    key: PseudonymKey,
    ack_timeout: Duration,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("stream", &self.stream)
            .finish()
    }
}

impl EventLog {
    /// Creates or updates a stream beside the event stream, `<STREAM>_<suffix>` over
    /// `<root>.>`, file-stored with the event stream's replicas; returns its name.
    async fn side_stream(
        &self,
        suffix: &str,
        root: &str,
        description: &str,
        duplicate_window: Option<Duration>,
    ) -> Result<String, LogError> {
        let name = format!("{}_{suffix}", self.config.stream);
        let mut cfg = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{root}.>")],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            discard: stream::DiscardPolicy::New,
            description: Some(description.into()),
            ..Default::default()
        };
        if let Some(w) = duplicate_window {
            cfg.duplicate_window = w;
        }
        self.js
            .create_or_update_stream(cfg)
            .await
            .map_err(|e| LogError::Stream {
                stream: name.clone(),
                message: e.to_string(),
            })?;
        Ok(name)
    }

    /// Opens (creating or updating) the audit stream beside the event stream, with the same
    /// replicas. Audit records are kept until removed by an operator.
    pub async fn audit_log(&self) -> Result<AuditLog, LogError> {
        let stream = self
            .side_stream("AUDIT", "audit", "Handover access audit", None)
            .await?;
        Ok(AuditLog {
            js: self.js.clone(),
            stream,
            key: self.key.clone(),
            ack_timeout: self.config.ack_timeout,
        })
    }
}

impl AuditLog {
    fn user_key(&self, user: &str) -> String {
        // Users are keyed like people, in their own namespace.
        self.key.person_key(&handover_events::PersonRef::Local(
            handover_events::LocalId {
                system: "handover:user".into(),
                value: user.into(),
            },
        ))
    }

    fn person_key(&self, nhs: &handover_events::NhsNumber) -> String {
        self.key.person_key(&handover_events::PersonRef::Nhs(*nhs))
    }

    /// Stores records; resolves once JetStream acknowledged every one.
    pub async fn record(
        &self,
        records: &[handover_events::AuditRecord],
    ) -> Result<(), handover_events::AuditError> {
        let err = |e: String| handover_events::AuditError(e);
        let Some(first) = records.first() else {
            return Ok(());
        };
        let user_key = self.user_key(&first.user);
        if records.len() < AUDIT_BATCH {
            let mut acks = Vec::with_capacity(records.len());
            for r in records {
                let payload = serde_json::to_vec(r).map_err(|e| err(e.to_string()))?;
                let user = (r.user == first.user).then_some(user_key.as_str());
                acks.push(
                    self.js
                        .publish(self.audit_subject(r, user), Bytes::from(payload))
                        .await
                        .map_err(|e| err(e.to_string()))?,
                );
            }
            for a in acks {
                a.await.map_err(|e| err(e.to_string()))?;
            }
            return Ok(());
        }
        // A worklist page: its records differ only in the person. One reply subscription
        // collects every acknowledgement (rather than a request, a timer and an ack
        // decode each), and each payload is the first record's JSON with the NHS number
        // put in its place.
        let client = self.js.client();
        let inbox = async_nats::Subject::from(client.new_inbox());
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| err(e.to_string()))?;
        let template = AuditTemplate::new(first);
        for r in records {
            let payload = match template.as_ref().and_then(|t| t.fill(r)) {
                Some(p) => p,
                None => serde_json::to_vec(r).map_err(|e| err(e.to_string()))?,
            };
            let user = (r.user == first.user).then_some(user_key.as_str());
            client
                .publish_with_reply(
                    self.audit_subject(r, user),
                    inbox.clone(),
                    Bytes::from(payload),
                )
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        for acked in 0..records.len() {
            let reply = tokio::time::timeout_at(deadline, replies.next())
                .await
                .map_err(|_| {
                    err(format!(
                        "{} of {} audit records not acknowledged within {:?}",
                        records.len() - acked,
                        records.len(),
                        self.ack_timeout
                    ))
                })?
                .ok_or_else(|| err("the connection closed the acknowledgement inbox".into()))?;
            audit_ack(&reply).map_err(err)?;
        }
        let _ = replies.unsubscribe().await;
        Ok(())
    }

    /// `audit.<person-key>.<user-key>`; `user` is the user's key when already known.
    fn audit_subject(&self, r: &handover_events::AuditRecord, user: Option<&str>) -> String {
        let person = match (
            handover_events::NhsNumber::parse(&r.nhs_number),
            &r.local_id,
        ) {
            (Ok(n), _) => self.person_key(&n),
            // Keyed like the person's events, so a purge by subject finds these too.
            (Err(_), Some(l)) => self
                .key
                .person_key(&handover_events::PersonRef::Local(l.clone())),
            (Err(_), None) => "unknown".to_string(),
        };
        let user = match user {
            Some(u) => std::borrow::Cow::Borrowed(u),
            None => std::borrow::Cow::Owned(self.user_key(&r.user)),
        };
        let mut subject = String::with_capacity(8 + person.len() + user.len());
        subject.push_str("audit.");
        subject.push_str(&person);
        subject.push('.');
        subject.push_str(&user);
        subject
    }

    /// Reads records matching `q` (oldest first, at most `q.limit`, the newest kept).
    pub async fn query(
        &self,
        q: &handover_events::AuditQuery,
    ) -> Result<Vec<handover_events::AuditRecord>, handover_events::AuditError> {
        let user = q
            .user
            .as_deref()
            .map(|u| self.user_key(u))
            .unwrap_or_else(|| "*".into());
        let limit = q.limit.max(1);
        let Some(n) = &q.nhs_number else {
            let filter = if user == "*" {
                "audit.>".to_string()
            } else {
                format!("audit.*.{user}")
            };
            let found = self.scan(filter, limit).await?;
            return Ok(found.into_iter().map(|(_, r)| r).collect());
        };
        // The person under each of their identifiers: one filter each (nats-server 2.9
        // takes one filter per consumer), merged in the order they were stored.
        let mut keys = vec![self.person_key(n)];
        for other in &q.also {
            let key = self.key.person_key(other);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let mut all = Vec::new();
        for key in keys {
            all.extend(self.scan(format!("audit.{key}.{user}"), limit).await?);
        }
        all.sort_by_key(|(seq, _)| *seq);
        all.dedup_by_key(|(seq, _)| *seq);
        let skip = all.len().saturating_sub(limit);
        Ok(all.into_iter().skip(skip).map(|(_, r)| r).collect())
    }

    /// The newest `limit` records under `filter`, with their stream sequences, oldest first.
    async fn scan(
        &self,
        filter: String,
        limit: usize,
    ) -> Result<Vec<(u64, handover_events::AuditRecord)>, handover_events::AuditError> {
        let err = |e: String| handover_events::AuditError(e);
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| err(e.to_string()))?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                filter_subject: filter,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut out = std::collections::VecDeque::new();
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1000)
                .messages()
                .await
                .map_err(|e| err(e.to_string()))?;
            let mut got = 0;
            let mut pending = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| err(e.to_string()))?;
                got += 1;
                let (seq, left) = m
                    .info()
                    .map(|i| (i.stream_sequence, i.pending))
                    .unwrap_or((0, 0));
                pending = left;
                if let Ok(r) = serde_json::from_slice(&m.payload) {
                    out.push_back((seq, r));
                    if out.len() > limit {
                        out.pop_front();
                    }
                }
            }
            if got == 0 || pending == 0 {
                break;
            }
        }
        let _ = stream
            .delete_consumer(consumer.cached_info().name.as_str())
            .await;
        Ok(out.into_iter().collect())
    }
}

impl handover_events::AuditTrail for AuditLog {
    fn record<'a>(
        &'a self,
        records: &'a [handover_events::AuditRecord],
    ) -> handover_events::sink::BoxFuture<'a, Result<(), handover_events::AuditError>> {
        Box::pin(AuditLog::record(self, records))
    }

    fn query<'a>(
        &'a self,
        query: &'a handover_events::AuditQuery,
    ) -> handover_events::sink::BoxFuture<
        'a,
        Result<Vec<handover_events::AuditRecord>, handover_events::AuditError>,
    > {
        Box::pin(AuditLog::query(self, query))
    }
}

/// From this many records on, [`AuditLog::record`] collects the acknowledgements on one
/// reply subscription (a worklist page); fewer (a journey read) are published one by one.
const AUDIT_BATCH: usize = 4;

/// The JSON of an audit record cut where its NHS number goes, so that a page's records
/// (the same but for the person) are written without serialising each.
struct AuditTemplate<'a> {
    first: &'a handover_events::AuditRecord,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl<'a> AuditTemplate<'a> {
    fn new(first: &'a handover_events::AuditRecord) -> Option<Self> {
        let blank = handover_events::AuditRecord {
            nhs_number: String::new(),
            ..first.clone()
        };
        let json = serde_json::to_vec(&blank).ok()?;
        // The only unescaped `"nhs_number":""` in the JSON is the key (a quote inside a
        // string value is always escaped).
        const KEY: &[u8] = b"\"nhs_number\":\"";
        let at = json
            .windows(KEY.len() + 1)
            .position(|w| &w[..KEY.len()] == KEY && w[KEY.len()] == b'"')
            .map(|i| i + KEY.len() - 1)?;
        Some(AuditTemplate {
            first,
            head: json[..at].to_vec(),
            tail: json[at + 2..].to_vec(),
        })
    }

    /// `r`'s JSON, when it differs from the first record only in the NHS number.
    fn fill(&self, r: &handover_events::AuditRecord) -> Option<Vec<u8>> {
        // Every field named, so that a field added to the record cannot be left out of
        // the comparison (this stops compiling instead).
        let handover_events::AuditRecord {
            time,
            user,
            organisation,
            role,
            reason,
            action,
            nhs_number: _,
            local_id,
            from,
        } = self.first;
        let same = r.time == *time
            && r.user == *user
            && r.organisation == *organisation
            && r.role == *role
            && r.reason == *reason
            && r.action == *action
            && r.local_id == *local_id
            && r.from == *from;
        if !same {
            return None;
        }
        let mut out =
            Vec::with_capacity(self.head.len() + self.tail.len() + r.nhs_number.len() + 2);
        out.extend_from_slice(&self.head);
        serde_json::to_writer(&mut out, &r.nhs_number).ok()?;
        out.extend_from_slice(&self.tail);
        Some(out)
    }
}

/// Whether a reply to an audit publish is JetStream's acknowledgement of a stored message
/// (an error, or a no-responders status when no stream takes the subject, is not).
fn audit_ack(reply: &async_nats::Message) -> Result<(), String> {
    if let Some(status) = reply.status {
        if reply.payload.is_empty() {
            return Err(format!("audit publish answered with status {status}"));
        }
    }
    // `{"stream":"…","seq":N}` (perhaps with "domain" or "duplicate"), or
    // `{"error":{…}}`: only an error holds the key "error" (a quote inside a string value
    // is escaped), so the reply is decoded in full only then.
    let has_key = |key: &[u8]| reply.payload.windows(key.len()).any(|w| w == key);
    if has_key(b"\"error\":") {
        let e = serde_json::from_slice::<serde_json::Value>(&reply.payload)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .unwrap_or_default();
        return Err(format!("JetStream refused an audit record: {e}"));
    }
    if reply.payload.first() == Some(&b'{') && has_key(b"\"stream\":") && has_key(b"\"seq\":") {
        Ok(())
    } else {
        Err(format!(
            "unexpected reply to an audit publish ({} bytes)",
            reply.payload.len()
        ))
    }
}

/// A message held in the parked (dead-letter) stream.
#[derive(Debug, Clone)]
pub struct ParkedMessage {
    /// Its sequence in the parked stream.
    pub sequence: u64,
    /// Its subject, `parked.<projection>.<person-key or unknown>`.
    pub subject: String,
    /// The parking record (JSON, written by the projection runner).
    pub payload: Bytes,
}

/// The dead-letter stream `<STREAM>_PARKED` (subjects `parked.<projection>.<person-key>`):
/// events a projection could not apply, kept for inspection, replay or discard.
#[derive(Clone)]
pub struct ParkedLog {
    js: jetstream::Context,
    stream: String,
}

impl std::fmt::Debug for ParkedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedLog")
            .field("stream", &self.stream)
            .finish()
    }
}

impl EventLog {
    /// Opens (creating or updating) the parked stream beside the event stream, with the same
    /// replicas and duplicate window. Parked records are kept until discarded.
    pub async fn parked_log(&self) -> Result<ParkedLog, LogError> {
        let stream = self
            .side_stream(
                "PARKED",
                "parked",
                "Handover parked (poison) events",
                Some(self.config.duplicate_window),
            )
            .await?;
        Ok(ParkedLog {
            js: self.js.clone(),
            stream,
        })
    }

    /// Stores `payload` under `subject` in the care stream as it is, without validation;
    /// `msg_id` becomes the `Nats-Msg-Id`. For replaying parked events (and for tests that
    /// need a malformed event in the stream). Returns the stream sequence.
    pub async fn publish_raw(
        &self,
        subject: &str,
        payload: Vec<u8>,
        msg_id: Option<&str>,
    ) -> Result<u64, LogError> {
        let err = |message: String| LogError::Stream {
            stream: self.config.stream.clone(),
            message,
        };
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        headers.insert("Content-Type", "application/cloudevents+json");
        let ack = self
            .js
            .publish_with_headers(subject.to_string(), headers, Bytes::from(payload))
            .await
            .map_err(|e| err(e.to_string()))?
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(ack.sequence)
    }
}

impl ParkedLog {
    fn err(&self, message: String) -> LogError {
        LogError::Stream {
            stream: self.stream.clone(),
            message,
        }
    }

    /// The stream name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// Stores a parking record; resolves once JetStream acknowledged it. `msg_id` makes
    /// parking the same event again (after a crash or during a rebuild) a duplicate.
    pub async fn park(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<(), LogError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        self.js
            .publish_with_headers(subject.to_string(), headers, Bytes::from(payload))
            .await
            .map_err(|e| self.err(e.to_string()))?
            .await
            .map_err(|e| self.err(e.to_string()))?;
        Ok(())
    }

    /// Every parked message, oldest first.
    pub async fn list(&self) -> Result<Vec<ParkedMessage>, LogError> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| self.err(e.to_string()))?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| self.err(e.to_string()))?;
        let mut out = Vec::new();
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1000)
                .messages()
                .await
                .map_err(|e| self.err(e.to_string()))?;
            let mut got = 0;
            let mut pending = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| self.err(e.to_string()))?;
                got += 1;
                let info = m.info().map_err(|e| self.err(e.to_string()))?;
                pending = info.pending;
                out.push(ParkedMessage {
                    sequence: info.stream_sequence,
                    subject: m.subject.to_string(),
                    payload: m.payload.clone(),
                });
            }
            if got == 0 || pending == 0 {
                break;
            }
        }
        let _ = stream
            .delete_consumer(consumer.cached_info().name.as_str())
            .await;
        Ok(out)
    }

    /// Removes a parked message by its sequence in the parked stream.
    pub async fn delete(&self, sequence: u64) -> Result<bool, LogError> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| self.err(e.to_string()))?;
        stream
            .delete_message(sequence)
            .await
            .map_err(|e| self.err(e.to_string()))
    }
}

impl EventLog {
    /// Purges every message of the given people (subjects `care.*.*.<key>`); returns the
    /// number of messages removed.
    pub async fn purge_people(&self, person_keys: &[String]) -> Result<u64, LogError> {
        let err = |message: String| LogError::Stream {
            stream: self.config.stream.clone(),
            message,
        };
        let stream = self
            .js
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut purged = 0;
        for key in person_keys {
            let r = stream
                .purge()
                .filter(handover_events::subject::person_filter(key))
                .await
                .map_err(|e| err(e.to_string()))?;
            purged += r.purged;
        }
        // Parked (dead-letter) copies of their events hold the same data.
        if let Ok(parked) = self
            .js
            .get_stream(format!("{}_PARKED", self.config.stream))
            .await
        {
            for key in person_keys {
                let r = parked
                    .purge()
                    .filter(format!("parked.*.{key}"))
                    .await
                    .map_err(|e| err(e.to_string()))?;
                purged += r.purged;
            }
        }
        Ok(purged)
    }
}

impl handover_events::LogAdmin for EventLog {
    fn purge_people<'a>(
        &'a self,
        person_keys: &'a [String],
    ) -> handover_events::sink::BoxFuture<'a, Result<u64, SinkError>> {
        Box::pin(async move {
            EventLog::purge_people(self, person_keys)
                .await
                .map_err(|e| SinkError::Unavailable(e.to_string()))
        })
    }

    fn last_sequence(&self) -> handover_events::sink::BoxFuture<'_, Result<u64, SinkError>> {
        Box::pin(async move {
            EventLog::last_sequence(self)
                .await
                .map_err(|e| SinkError::Unavailable(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use handover_events::AuditRecord;

    fn record(nhs: &str, user: &str, from: Option<&str>) -> AuditRecord {
        AuditRecord {
            time: "2026-11-23T22:41:07.123Z".into(),
            user: user.into(),
            organisation: "RX1".into(),
            role: "discharge-team".into(),
            reason: "direct-care".into(),
            action: "worklist:discharge-delays".into(),
            nhs_number: nhs.into(),
            local_id: None,
            from: from.map(Into::into),
        }
    }

    #[test]
    fn only_a_stored_acknowledgement_counts_for_an_audit_record() {
        let reply = |payload: &str, status: Option<u16>| async_nats::Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: Bytes::from(payload.to_string()),
            headers: None,
            status: status.map(|s| async_nats::StatusCode::from_u16(s).unwrap()),
            description: None,
            length: payload.len(),
        };
        for ok in [
            r#"{"stream":"HANDOVER_AUDIT","seq":17}"#,
            r#"{"stream":"HANDOVER_AUDIT","domain":"hub","seq":18}"#,
            r#"{"stream":"error","seq":19,"duplicate":true}"#,
        ] {
            assert_eq!(audit_ack(&reply(ok, None)), Ok(()), "{ok}");
        }
        let refused = audit_ack(&reply(
            r#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"HANDOVER_AUDIT","seq":0}"#,
            None,
        ))
        .unwrap_err();
        assert!(refused.contains("maximum messages exceeded"), "{refused}");
        assert!(audit_ack(&reply("", Some(503)))
            .unwrap_err()
            .contains("503"));
        for junk in [
            "",
            "+OK",
            r#"{"stream":"HANDOVER_AUDIT"}"#,
            r#"{"seq":3}"#,
            "[]",
        ] {
            assert!(audit_ack(&reply(junk, None)).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_page_record_written_from_the_template_is_the_record_serialised() {
        // Users and NHS numbers that need escaping, or that hold the key's own text.
        let users = [
            "test-discharge-team-RX1",
            "o'brien \"the\" user",
            "\",\"nhs_number\":\"",
            "back\\slash\u{1}\u{e9}",
        ];
        let numbers = [
            "9434765919",
            "",
            "not \"a\" number",
            "\\",
            "\",\"nhs_number\":\"\"",
        ];
        for user in users {
            for from in [None, Some("10.0.0.7"), Some("\"")] {
                let first = record(numbers[0], user, from);
                let t = AuditTemplate::new(&first).unwrap();
                for n in numbers {
                    let r = record(n, user, from);
                    let written = t.fill(&r).unwrap();
                    assert_eq!(written, serde_json::to_vec(&r).unwrap(), "{user:?} {n:?}");
                    let back: AuditRecord = serde_json::from_slice(&written).unwrap();
                    assert_eq!(back, r);
                }
                // A record that differs in anything but the person is not templated.
                let mut other = record(numbers[0], user, from);
                other.reason = "safeguarding".into();
                assert!(t.fill(&other).is_none());
                let mut other = record(numbers[0], user, from);
                other.from = Some("192.0.2.1".into());
                assert!(t.fill(&other).is_none());
                assert!(t.fill(&record(numbers[0], "someone else", from)).is_none());
            }
        }
    }
}
