//! Raw JetStream operations for the benchmark's baseline (`handover bench`): the same
//! server, stream settings and client as the event log, without Handover's own work, so the
//! benchmark can report Handover's figures as ratios to what JetStream itself does on the
//! machine. Kept here so that this crate stays the only one that talks to NATS.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::{Feed, LogError};

/// A bare JetStream context.
pub struct RawJetStream {
    js: jetstream::Context,
}

fn stream_err(stream: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Stream {
        stream: stream.to_string(),
        message: e.to_string(),
    }
}

impl RawJetStream {
    /// Connects.
    pub async fn connect(url: &str) -> Result<RawJetStream, LogError> {
        let client = async_nats::ConnectOptions::new()
            .name("handover-bench")
            .connect(url)
            .await
            .map_err(|source| LogError::Connect {
                url: url.to_string(),
                source,
            })?;
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(30));
        Ok(RawJetStream { js })
    }

    /// A stream configured like the event log's (file storage, limits, discard new, one-hour
    /// duplicate window) over `<root>.>`.
    pub async fn create_stream(&self, name: &str, root: &str) -> Result<(), LogError> {
        self.js
            .create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![format!("{root}.>")],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                num_replicas: 1,
                duplicate_window: Duration::from_secs(3600),
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| stream_err(name, e))
    }

    /// Deletes a stream.
    pub async fn delete_stream(&self, name: &str) -> Result<(), LogError> {
        self.js
            .delete_stream(name)
            .await
            .map(|_| ())
            .map_err(|e| stream_err(name, e))
    }

    /// Publishes `(subject, Nats-Msg-Id, payload)` items with at most `window` acknowledgements
    /// outstanding, calling `on_ack` for each acknowledgement.
    pub async fn publish(
        &self,
        items: impl Iterator<Item = (String, String, Bytes)>,
        window: usize,
        mut on_ack: impl FnMut(),
    ) -> Result<(), LogError> {
        let mut pending = VecDeque::with_capacity(window);
        for (subject, id, payload) in items {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("Content-Type", "application/cloudevents+json");
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| stream_err("publish", e))?;
            pending.push_back(ack);
            while pending.len() >= window.max(1) {
                if let Some(a) = pending.pop_front() {
                    a.await.map_err(|e| stream_err("publish ack", e))?;
                    on_ack();
                }
            }
        }
        for a in pending {
            a.await.map_err(|e| stream_err("publish ack", e))?;
            on_ack();
        }
        Ok(())
    }

    /// A durable pull consumer over the whole of `stream_name` (acknowledged cumulatively,
    /// like the projections'), read through the same [`Feed`].
    pub async fn feed(
        &self,
        stream_name: &str,
        durable: &str,
        batch: usize,
    ) -> Result<Feed, LogError> {
        let err = |e: String| LogError::Consumer {
            name: durable.to_string(),
            message: e,
        };
        let stream = self
            .js
            .get_stream(stream_name)
            .await
            .map_err(|e| err(e.to_string()))?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(durable.to_string()),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(Feed {
            name: durable.to_string(),
            pending: consumer.cached_info().num_pending,
            next_delivery: consumer.cached_info().delivered.consumer_sequence + 1,
            gap: None,
            consumer,
            messages,
        })
    }

    /// Deletes a consumer.
    pub async fn delete_consumer(&self, stream_name: &str, durable: &str) -> Result<(), LogError> {
        let stream = self
            .js
            .get_stream(stream_name)
            .await
            .map_err(|e| stream_err(stream_name, e))?;
        stream
            .delete_consumer(durable)
            .await
            .map(|_| ())
            .map_err(|e| stream_err(stream_name, e))
    }
}
