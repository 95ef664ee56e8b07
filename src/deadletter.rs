//! The dead-letter and rejected-records topics: permanent storage for what could not be
//! delivered, and for input that could not be read.
//!
//! Guarantee: [`Producers::dead_letter`] and [`Producers::reject`] return only once the broker
//! acknowledged the write (idempotent producer, `acks=all`), retrying for as long as it takes
//! unless the work is cancelled; only then may the source offset count as done. A dead-letter
//! record carries the event, every attempt and the source coordinates, never a secret, token or
//! signature (the endpoint URL is stored without user info or query string).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::change::Rejection;
use crate::config::KafkaSettings;
use crate::delivery::{Attempt, AttemptOutcome};
use crate::webhook::WebhookEvent;

/// Version of the dead-letter record layout (`schemas/dead-letter.schema.json`).
pub const SCHEMA_VERSION: u32 = 1;

/// Why an event went to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Every scheduled attempt failed.
    Exhausted,
    /// A 3xx, or a 4xx other than 408/425/429: retrying cannot help.
    PermanentStatus,
    /// The endpoint resolves only to addresses the guard refuses.
    AddressRefused,
    /// At redrive, the organization has no endpoint any more.
    EndpointNotConfigured,
    /// The organization already had `max_pending_per_organization` events queued or retrying:
    /// parked here at once so that its endpoint cannot hold the others up.
    LaneOverflow,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 5] = [
        DeadLetterReason::Exhausted,
        DeadLetterReason::PermanentStatus,
        DeadLetterReason::AddressRefused,
        DeadLetterReason::EndpointNotConfigured,
        DeadLetterReason::LaneOverflow,
    ];

    pub fn code(self) -> &'static str {
        match self {
            DeadLetterReason::Exhausted => "exhausted",
            DeadLetterReason::PermanentStatus => "permanent_status",
            DeadLetterReason::AddressRefused => "address_refused",
            DeadLetterReason::EndpointNotConfigured => "endpoint_not_configured",
            DeadLetterReason::LaneOverflow => "lane_overflow",
        }
    }
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub change_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRef {
    pub url: Option<String>,
}

/// One attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub at: String,
    pub duration_ms: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl From<&Attempt> for AttemptRecord {
    fn from(attempt: &Attempt) -> Self {
        let (status, error) = match &attempt.outcome {
            AttemptOutcome::Status { code, .. } => (Some(*code), None),
            AttemptOutcome::Failed(e) => (None, Some(e.code().to_owned())),
        };
        AttemptRecord {
            at: timestamp(attempt.at),
            duration_ms: u64::try_from(attempt.duration.as_millis()).unwrap_or(u64::MAX),
            status,
            error,
        }
    }
}

/// A dead-letter record (`schemas/dead-letter.schema.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub schema_version: u32,
    /// The webhook event body, unchanged.
    pub event: Box<RawValue>,
    pub organization_id: String,
    pub endpoint: EndpointRef,
    pub reason: DeadLetterReason,
    pub attempts: Vec<AttemptRecord>,
    pub source: SourceRef,
    pub dead_lettered_at: String,
}

impl DeadLetter {
    pub fn new(
        event: &WebhookEvent,
        endpoint_url: Option<&Url>,
        reason: DeadLetterReason,
        attempts: &[Attempt],
        source: SourceRef,
    ) -> Self {
        let body = std::str::from_utf8(&event.body)
            .ok()
            .and_then(|s| RawValue::from_string(s.to_owned()).ok())
            .expect("a derived body is UTF-8 JSON");
        DeadLetter {
            schema_version: SCHEMA_VERSION,
            event: body,
            organization_id: event.organization_id.clone(),
            endpoint: EndpointRef {
                url: endpoint_url.map(public_url),
            },
            reason,
            attempts: attempts.iter().map(AttemptRecord::from).collect(),
            source,
            dead_lettered_at: timestamp(Utc::now()),
        }
    }
}

/// The URL without user info, query or fragment: those may hold credentials.
pub fn public_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The work was cancelled (revoke or shutdown) before the broker acknowledged the write.
#[derive(Debug, thiserror::Error)]
#[error("cancelled before the write was acknowledged")]
pub struct Cancelled;

/// The producer for both topics.
#[derive(Clone)]
pub struct Producers {
    producer: FutureProducer,
    dead_letter_topic: String,
    rejected_topic: String,
}

/// How long to wait between two tries of a write the broker did not acknowledge.
const WRITE_RETRY_BACKOFF: Duration = Duration::from_millis(500);

impl Producers {
    pub fn new(kafka: &KafkaSettings) -> Result<Self, KafkaError> {
        let defaults = [("linger.ms", "5"), ("message.timeout.ms", "60000")];
        let producer: FutureProducer = crate::kafka::client_config(kafka, &defaults)
            // Permanent storage: no write counts until every in-sync replica has it, once.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(Producers {
            producer,
            dead_letter_topic: kafka.dead_letter_topic.clone(),
            rejected_topic: kafka.rejected_topic.clone(),
        })
    }

    /// Writes a dead-letter record, keyed by organization id; returns once acknowledged.
    pub async fn dead_letter(
        &self,
        record: &DeadLetter,
        event: &WebhookEvent,
        cancel: &CancellationToken,
    ) -> Result<(), Cancelled> {
        let value = serde_json::to_vec(record).expect("a dead-letter record serializes");
        let partition = record.source.partition.to_string();
        let offset = record.source.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(header("__connect.errors.topic", &record.source.topic))
            .insert(header("__connect.errors.partition", &partition))
            .insert(header("__connect.errors.offset", &offset))
            .insert(header(
                "__connect.errors.exception.message",
                record.reason.code(),
            ))
            .insert(header("webhook-dead-letter-reason", record.reason.code()))
            .insert(header("webhook-id", &event.id))
            .insert(header("webhook-type", event.event_type.as_str()))
            .insert(header("webhook-organization-id", &event.organization_id))
            .insert(header("webhook-change-id", &event.change_id));
        self.send(
            &self.dead_letter_topic,
            Some(record.organization_id.as_bytes()),
            &value,
            headers,
            cancel,
        )
        .await
    }

    /// Writes a rejected input record: original key and bytes untouched, original headers kept,
    /// the reason in headers; returns once acknowledged.
    pub async fn reject(
        &self,
        source: &InputRecord,
        rejection: &Rejection,
        cancel: &CancellationToken,
    ) -> Result<(), Cancelled> {
        let partition = source.partition.to_string();
        let offset = source.offset.to_string();
        let message = rejection.to_string();
        let mut headers = OwnedHeaders::new();
        for (name, value) in &source.headers {
            headers = headers.insert(Header {
                key: name,
                value: value.as_deref(),
            });
        }
        let headers = headers
            .insert(header("__connect.errors.topic", &source.topic))
            .insert(header("__connect.errors.partition", &partition))
            .insert(header("__connect.errors.offset", &offset))
            .insert(header("__connect.errors.exception.message", &message))
            .insert(header("consent-webhooks-rejection", rejection.code()));
        self.send(
            &self.rejected_topic,
            source.key.as_deref(),
            &source.payload,
            headers,
            cancel,
        )
        .await
    }

    /// Writes any record to `topic` (e.g. `redrive`'s resolution markers on the dead-letter
    /// topic), with the same guarantee: returns once acknowledged, or when cancelled.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
        cancel: &CancellationToken,
    ) -> Result<(), Cancelled> {
        loop {
            let mut record = FutureRecord::to(topic)
                .payload(value)
                .headers(headers.clone());
            if let Some(key) = key {
                record = record.key(key);
            }
            let sent = tokio::select! {
                sent = self.producer.send(record, Duration::from_secs(5)) => sent,
                _ = cancel.cancelled() => return Err(Cancelled),
            };
            match sent {
                Ok(_) => return Ok(()),
                Err((error, _)) => {
                    tracing::warn!(topic, %error, "write not acknowledged; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(WRITE_RETRY_BACKOFF) => {}
                        _ = cancel.cancelled() => return Err(Cancelled),
                    }
                }
            }
        }
    }

    /// Which of `topics` the cluster does not have (blocking: a metadata request).
    pub fn missing_topics(
        &self,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<Vec<String>, KafkaError> {
        let metadata = self.producer.client().fetch_metadata(None, timeout)?;
        let existing: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
        Ok(topics
            .iter()
            .filter(|t| !existing.contains(t))
            .map(|t| (*t).to_owned())
            .collect())
    }

    /// Waits for every write in flight, up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "producer flush incomplete");
        }
    }
}

/// An input record exactly as consumed, kept to be written to the rejected topic as it was.
#[derive(Debug, Clone)]
pub struct InputRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
