//! Writing the registry: what the admin API and `consent-webhooks organizations` share.
//!
//! Guarantee: a value is written only when it validates on this replica exactly as the file's
//! `[organizations.<id>]` would (same errors); writing the value an organization already has
//! writes nothing (idempotent); an update keeps the organization's registration time (header
//! `registered-at`); a call returns once this replica has applied the write.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::value::{decode, to_json, ValueError};
use super::{Entry, Registry, REGISTERED_AT_HEADER};
use crate::config::{ConfigError, KafkaSettings};

/// How long a write may take to come back through the follower.
const APPLY_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The value's keys do not validate: the same error as `check-config`'s.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The value is neither a JSON object nor TOML.
    #[error("organizations.{id}: {source}")]
    Value { id: String, source: ValueError },
    #[error("writing to the registry topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("written at offset {0}, but not applied here within {APPLY_PATIENCE:?}")]
    NotApplied(i64),
}

/// What a write did.
#[derive(Debug)]
pub enum Written {
    /// The organization already had this value: nothing written.
    Unchanged,
    /// Written at this offset; `created`: it was not registered before.
    Put { offset: i64, created: bool },
    /// A tombstone written at this offset.
    Removed { offset: i64 },
    /// Not registered: nothing to remove.
    Absent,
}

pub struct Writer {
    producer: FutureProducer,
    topic: String,
    registry: Arc<Registry>,
}

impl Writer {
    pub fn new(kafka: &KafkaSettings, registry: Arc<Registry>) -> anyhow::Result<Writer> {
        let topic = registry
            .settings
            .as_ref()
            .map(|s| s.topic.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the organization registry is not enabled ([registry] enabled = true)"
                )
            })?;
        let producer = crate::kafka::client_config(kafka, &[])
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()?;
        Ok(Writer {
            producer,
            topic,
            registry,
        })
    }

    /// Checks a value for `id` as a write would, without writing.
    pub fn check(&self, id: &str, bytes: &[u8]) -> Result<serde_json::Value, WriteError> {
        let toml = decode(bytes).map_err(|source| WriteError::Value {
            id: id.to_owned(),
            source,
        })?;
        self.registry.validate(id, &toml)?;
        Ok(to_json(&toml))
    }

    /// Registers `id` with `bytes` (a JSON object or TOML text), or changes it.
    pub async fn put(&self, id: &str, bytes: &[u8]) -> Result<Written, WriteError> {
        let value = self.check(id, bytes)?;
        self.up_to_date().await?;
        let current: Option<Entry> = self.registry.get(id);
        if let Some(entry) = &current {
            if entry.value == value && entry.error.is_none() {
                return Ok(Written::Unchanged);
            }
        }
        let payload = serde_json::to_vec(&value).expect("a JSON value serializes");
        let registered_at = current.as_ref().map(|e| e.registered_at.to_string());
        let mut headers = OwnedHeaders::new();
        if let Some(at) = &registered_at {
            headers = headers.insert(Header {
                key: REGISTERED_AT_HEADER,
                value: Some(at.as_str()),
            });
        }
        let record = FutureRecord::to(&self.topic)
            .key(id)
            .payload(payload.as_slice())
            .headers(headers);
        let offset = self.send(record).await?;
        self.applied(offset).await?;
        Ok(Written::Put {
            offset,
            created: current.is_none(),
        })
    }

    /// Removes `id` (a tombstone).
    pub async fn delete(&self, id: &str) -> Result<Written, WriteError> {
        self.up_to_date().await?;
        if self.registry.get(id).is_none() {
            return Ok(Written::Absent);
        }
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic).key(id);
        let offset = self.send(record).await?;
        self.applied(offset).await?;
        Ok(Written::Removed { offset })
    }

    /// Waits until this replica applied every registry record written before now: a write
    /// decides from the organization's current state (is it registered, since when), and
    /// another replica may have changed it a moment ago.
    async fn up_to_date(&self) -> Result<(), WriteError> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let (_, high) = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        })
        .await
        .expect("the watermark look-up does not panic")?;
        if high > 0 {
            self.applied(high - 1).await?;
        }
        Ok(())
    }

    async fn send(&self, record: FutureRecord<'_, str, [u8]>) -> Result<i64, WriteError> {
        match self.producer.send(record, Duration::from_secs(30)).await {
            Ok(delivery) => Ok(delivery.offset),
            Err((error, _)) => Err(WriteError::Kafka(error)),
        }
    }

    /// Waits until this replica's follower applied `offset`.
    async fn applied(&self, offset: i64) -> Result<(), WriteError> {
        tokio::time::timeout(APPLY_PATIENCE, self.registry.applied(offset))
            .await
            .map_err(|_| WriteError::NotApplied(offset))
    }
}
