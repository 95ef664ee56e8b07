//! The dead-letter and rejected-records topics: permanent storage for what could not be
//! delivered, and for input that could not be read.
//!
//! Guarantees:
//! - [`Producers::dead_letter`] and [`Producers::reject`] return `Ok` only once the broker
//!   acknowledged the write (idempotent producer, `acks=all`); only then may the source offset
//!   count as done. Transient failures are retried for as long as it takes unless the work is
//!   cancelled (see [`write_error`] for the classification).
//! - A record the broker will never take as it is (larger than the topic's `max.message.bytes`,
//!   or refused as invalid) is written in its *reference* form: for a dead letter, the event id
//!   and type, organization, endpoint, reason, attempts, source coordinates and original size,
//!   without the event body ([`DeadLetterReference`]); for a rejected record, no value and the
//!   reason in headers. Both are small and bounded whatever the input, so the watermark moves on.
//! - A producer that can write nothing any more (authorization, fatal idempotent-producer
//!   state) or a topic that refuses even the reference form trips [`Producers::fatal`]: every
//!   later write fails at once, and the pipeline stops through its one shutdown path.
//! - A dead-letter record carries the event, every attempt and the source coordinates, never a
//!   secret, token or signature (the endpoint URL is stored without user info or query string).

mod producers;
pub mod write_error;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::delivery::{Attempt, AttemptOutcome};
use crate::webhook::WebhookEvent;

pub use producers::{
    OutputTopic, Producers, DEAD_LETTER_FORM_HEADER, ORIGINAL_SIZE_HEADER, REJECTED_CAUSE_HEADER,
    REJECTED_FORM_HEADER,
};
pub use write_error::{Disposition, WriteError, WriteFailure};

/// Longest change id or key kept in a reference form: beyond it they are left out (the source
/// record still has them), so that a reference stays small whatever the input holds.
const REFERENCE_FIELD_MAX: usize = 256;

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
    /// Written by versions before durable retries, when an organization's lane was full; no
    /// longer written (a full lane parks on the retry topic), still read by `redrive`.
    LaneOverflow,
    /// The retry topic refused the event's parked record (larger than its
    /// `max.message.bytes`): dead-lettered at once, with the attempts made so far.
    ParkRefused,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 6] = [
        DeadLetterReason::Exhausted,
        DeadLetterReason::PermanentStatus,
        DeadLetterReason::AddressRefused,
        DeadLetterReason::EndpointNotConfigured,
        DeadLetterReason::LaneOverflow,
        DeadLetterReason::ParkRefused,
    ];

    pub fn code(self) -> &'static str {
        match self {
            DeadLetterReason::Exhausted => "exhausted",
            DeadLetterReason::PermanentStatus => "permanent_status",
            DeadLetterReason::AddressRefused => "address_refused",
            DeadLetterReason::EndpointNotConfigured => "endpoint_not_configured",
            DeadLetterReason::LaneOverflow => "lane_overflow",
            DeadLetterReason::ParkRefused => "park_refused",
        }
    }
}

impl From<crate::delivery::GiveUpReason> for DeadLetterReason {
    fn from(reason: crate::delivery::GiveUpReason) -> Self {
        use crate::delivery::GiveUpReason;
        match reason {
            GiveUpReason::Exhausted => DeadLetterReason::Exhausted,
            GiveUpReason::PermanentStatus => DeadLetterReason::PermanentStatus,
            GiveUpReason::AddressRefused => DeadLetterReason::AddressRefused,
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
        let attempts = attempts.iter().map(AttemptRecord::from).collect();
        DeadLetter::with_records(event, endpoint_url, reason, attempts, source)
    }

    /// Like [`DeadLetter::new`], with the attempts as stored (a parked event's history).
    pub fn with_records(
        event: &WebhookEvent,
        endpoint_url: Option<&Url>,
        reason: DeadLetterReason,
        attempts: Vec<AttemptRecord>,
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
            attempts,
            source,
            dead_lettered_at: timestamp(Utc::now()),
        }
    }
}

/// The reference form of a dead letter whose full record the topic refused (too large): what
/// identifies the event and why it failed, without its body. The event can be delivered again
/// by replaying its source record (`source`), while the input topic still holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterReference {
    pub schema_version: u32,
    /// Always `"reference"`; the full form has no `form`.
    pub form: String,
    pub event_id: String,
    pub event_type: String,
    pub organization_id: String,
    pub endpoint: EndpointRef,
    pub reason: DeadLetterReason,
    pub attempts: Vec<AttemptRecord>,
    /// The source coordinates; `change_id` is left out when longer than 256 bytes.
    pub source: SourceCoordinates,
    /// Bytes of the full dead-letter record that was refused.
    pub original_size: u64,
    pub dead_lettered_at: String,
}

/// [`SourceRef`] with an optional change id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCoordinates {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
}

impl DeadLetterReference {
    pub fn new(record: &DeadLetter, event: &WebhookEvent, original_size: usize) -> Self {
        let source = &record.source;
        DeadLetterReference {
            schema_version: SCHEMA_VERSION,
            form: "reference".to_owned(),
            event_id: event.id.clone(),
            event_type: event.event_type.as_str().to_owned(),
            organization_id: record.organization_id.clone(),
            endpoint: record.endpoint.clone(),
            reason: record.reason,
            attempts: record.attempts.clone(),
            source: SourceCoordinates {
                topic: source.topic.clone(),
                partition: source.partition,
                offset: source.offset,
                change_id: Some(source.change_id.clone())
                    .filter(|id| id.len() <= REFERENCE_FIELD_MAX),
            },
            original_size: u64::try_from(original_size).unwrap_or(u64::MAX),
            dead_lettered_at: record.dead_lettered_at.clone(),
        }
    }
}

/// The URL without user info, query or fragment: those may hold credentials.
pub fn public_url(url: &Url) -> String {
    crate::delivery::redact::url(url)
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
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

impl InputRecord {
    /// Bytes of the record as consumed: key, value, header names and values.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.as_ref().map_or(0, Vec::len))
            .sum();
        self.key.as_ref().map_or(0, Vec::len) + self.payload.len() + headers
    }
}
