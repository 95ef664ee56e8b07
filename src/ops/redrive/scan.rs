//! Reading the dead-letter topic between offsets fixed at the start, with a consumer of its own
//! (assigned partitions, no group membership, nothing committed), and the resolution markers.
//!
//! Guarantee: a scan ends. It reads each partition from a start offset up to the high watermark
//! captured when the redrive began, so what the redrive writes back is never read in the same
//! run; a partition also ends at its log end (gaps at the end of a compacted log).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::KafkaSettings;

use super::select::Coordinates;

/// Header naming the event a resolution marker resolves. The service's own dead-letter records
/// never carry it: readers of the topic skip records that do.
pub const RESOLVED_HEADER: &str = "webhook-dead-letter-resolved";

/// How long a scan waits for the next record before calling the broker unreachable.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// The value of a resolution marker: the dead-letter record a redrive delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The event id (also in the header).
    pub resolved: String,
    pub organization_id: String,
    /// The dead-letter record delivered: its partition and offset on this topic.
    pub dead_letter: MarkerCoordinates,
    /// When the event was delivered.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerCoordinates {
    pub partition: i32,
    pub offset: i64,
}

impl Marker {
    pub fn new(event_id: &str, organization_id: &str, at: Coordinates) -> Marker {
        Marker {
            resolved: event_id.to_owned(),
            organization_id: organization_id.to_owned(),
            dead_letter: MarkerCoordinates {
                partition: at.0,
                offset: at.1,
            },
            at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }

    pub fn headers(&self) -> OwnedHeaders {
        OwnedHeaders::new()
            .insert(Header {
                key: RESOLVED_HEADER,
                value: Some(&self.resolved),
            })
            .insert(Header {
                key: "webhook-organization-id",
                value: Some(&self.organization_id),
            })
    }
}

/// Whether a record is a resolution marker (by its header: the value is not even looked at).
pub fn is_marker(message: &OwnedMessage) -> bool {
    message
        .headers()
        .is_some_and(|headers| headers.iter().any(|h| h.key == RESOLVED_HEADER))
}

/// Whether a record is a dead letter stored in its reference form (too large for the topic:
/// no event body, only where its source record is).
pub fn is_reference(message: &OwnedMessage) -> bool {
    message.headers().is_some_and(|headers| {
        headers.iter().any(|h| {
            h.key == crate::deadletter::DEAD_LETTER_FORM_HEADER && h.value == Some(b"reference")
        })
    })
}

/// Per partition: `[start, end)` to read.
pub type Ranges = HashMap<i32, (i64, i64)>;

/// The partitions of `topic` with their low and high watermarks now; empty partitions left out.
pub fn capture_ranges(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<Ranges> {
    let consumer: BaseConsumer = crate::kafka::client_config(kafka, &[])
        .create()
        .context("cannot create a Kafka client")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} not found");
    };
    if let Some(error) = meta.error() {
        bail!("topic {topic}: {}", KafkaError::MetadataFetch(error.into()));
    }
    if meta.partitions().is_empty() {
        bail!("topic {topic} does not exist (no partitions)");
    }
    let mut ranges = Ranges::new();
    for partition in meta.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), METADATA_TIMEOUT)
            .with_context(|| format!("cannot read the offsets of {topic}/{}", partition.id()))?;
        if high > low {
            ranges.insert(partition.id(), (low, high));
        }
    }
    Ok(ranges)
}

/// Reads the given ranges; records come in offset order within each partition.
pub struct Scanner {
    consumer: StreamConsumer,
    topic: String,
    /// Partition → end offset (exclusive), for partitions not finished yet.
    remaining: HashMap<i32, i64>,
}

impl Scanner {
    pub fn new(kafka: &KafkaSettings, topic: &str, ranges: &Ranges) -> anyhow::Result<Scanner> {
        let group = format!(
            "{}-redrive-{}-{}",
            kafka.group_id,
            std::process::id(),
            Utc::now().timestamp_millis()
        );
        let consumer: StreamConsumer = crate::kafka::client_config(kafka, &[])
            // Never joins the group (partitions are assigned) and never commits.
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("cannot create a Kafka consumer")?;
        let mut assignment = TopicPartitionList::new();
        for (&partition, &(start, _)) in ranges {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(start))
                .context("cannot build the assignment")?;
        }
        consumer
            .assign(&assignment)
            .with_context(|| format!("cannot assign the partitions of {topic}"))?;
        Ok(Scanner {
            consumer,
            topic: topic.to_owned(),
            remaining: ranges.iter().map(|(&p, &(_, end))| (p, end)).collect(),
        })
    }

    /// The next record in range, or `None` once every partition reached its end.
    pub async fn next(&mut self) -> anyhow::Result<Option<OwnedMessage>> {
        loop {
            if self.remaining.is_empty() {
                return Ok(None);
            }
            let received = tokio::time::timeout(STALL_TIMEOUT, self.consumer.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no record from topic {} for {STALL_TIMEOUT:?} \
                         ({} partitions unfinished)",
                        self.topic,
                        self.remaining.len()
                    )
                })?;
            match received {
                Ok(message) => {
                    let partition = message.partition();
                    let offset = message.offset();
                    let Some(&end) = self.remaining.get(&partition) else {
                        continue;
                    };
                    if offset + 1 >= end {
                        self.remaining.remove(&partition);
                    }
                    if offset < end {
                        return Ok(Some(message.detach()));
                    }
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    self.remaining.remove(&partition);
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot read topic {}", self.topic));
                }
            }
        }
    }
}

/// `dead_lettered_at` as a time, when it is one.
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
