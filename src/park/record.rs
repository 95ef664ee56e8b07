//! A parked record: everything needed to continue one event's delivery later, in any process.
//!
//! Guarantee: [`Parked::decode`] of [`Parked::encode`] gives back the same event body, byte for
//! byte, and the same delivery state (attempts, first attempt, due time). A record that does not
//! decode is refused with a reason, never half-read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::deadletter::{AttemptRecord, SourceRef};
use crate::webhook::{EventType, WebhookEvent};

/// Version of the record layout; a reader refuses versions it does not know.
pub const SCHEMA_VERSION: u32 = 1;

/// Headers of a parked record: what the retry reader needs to decide about it without its
/// body (the body is read again only when the event is due).
pub const ORGANIZATION_HEADER: &str = "consent-webhooks-organization";
pub const EVENT_ID_HEADER: &str = "webhook-id";
/// Due time, milliseconds since the epoch.
pub const DUE_HEADER: &str = "consent-webhooks-due";
pub const REASON_HEADER: &str = "consent-webhooks-park-reason";
/// The event's source offset (its partition is the record's partition).
pub const SOURCE_OFFSET_HEADER: &str = "consent-webhooks-source-offset";
/// When the event was first parked, milliseconds since the epoch.
pub const PARKED_AT_HEADER: &str = "consent-webhooks-parked-at";
/// On a *done* record (empty value): the parked event of this key and source offset was
/// delivered or dead-lettered; its earlier parked records are obsolete.
pub const DONE_HEADER: &str = "consent-webhooks-done";

/// What a parked record's headers say: enough to index it and wait for its due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedHead {
    pub organization_id: String,
    pub source_offset: i64,
    pub due_at: DateTime<Utc>,
    pub parked_at_ms: i64,
}

/// A record of the retry topic, as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// A parked event.
    Parked(ParkedHead),
    /// The event parked from this source offset is done.
    Done { source_offset: i64 },
    /// Something else (a watermark marker, or a record without these headers).
    Other,
}

impl RecordKind {
    /// Reads the kind from `(name, value)` headers.
    pub fn of<'a>(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> RecordKind {
        let (mut org, mut source, mut due, mut since, mut done) = (None, None, None, None, None);
        let number = |v: Option<&[u8]>| {
            v.and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        for (name, value) in headers {
            match name {
                ORGANIZATION_HEADER => {
                    org = value
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(str::to_owned)
                }
                SOURCE_OFFSET_HEADER => source = number(value),
                DUE_HEADER => due = number(value),
                PARKED_AT_HEADER => since = number(value),
                DONE_HEADER => done = number(value),
                _ => {}
            }
        }
        if let Some(source_offset) = done {
            return RecordKind::Done { source_offset };
        }
        match (
            org,
            source,
            due.and_then(DateTime::from_timestamp_millis),
            since,
        ) {
            (Some(organization_id), Some(source_offset), Some(due_at), Some(parked_at_ms)) => {
                RecordKind::Parked(ParkedHead {
                    organization_id,
                    source_offset,
                    due_at,
                    parked_at_ms,
                })
            }
            _ => RecordKind::Other,
        }
    }
}

/// Why an event was parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkReason {
    /// An attempt failed and the retry policy asked for another one later.
    Retry,
    /// The organization's lane held its limit of events in memory.
    LaneFull,
    /// An earlier event of the same key is parked: order per key holds.
    BehindKey,
    /// The source partition was revoked while the event waited.
    Revoked,
    /// The process stopped while the event waited.
    Shutdown,
}

impl ParkReason {
    pub const ALL: [ParkReason; 5] = [
        ParkReason::Retry,
        ParkReason::LaneFull,
        ParkReason::BehindKey,
        ParkReason::Revoked,
        ParkReason::Shutdown,
    ];

    /// A stable code for metric labels and headers.
    pub fn code(self) -> &'static str {
        match self {
            ParkReason::Retry => "retry",
            ParkReason::LaneFull => "lane_full",
            ParkReason::BehindKey => "behind_key",
            ParkReason::Revoked => "revoked",
            ParkReason::Shutdown => "shutdown",
        }
    }
}

/// One parked event with its delivery state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parked {
    pub schema_version: u32,
    /// The webhook event id (also the `webhook-id` header).
    pub event_id: String,
    pub organization_id: String,
    pub event_type: EventType,
    pub regulation: String,
    /// When the change happened (end-to-end latency is measured from it).
    pub occurred_at: DateTime<Utc>,
    /// The webhook body, exactly as POSTed.
    pub event: Box<RawValue>,
    /// Where the event's record was read: its partition is the retry partition, its offset
    /// orders the key's events.
    pub source: SourceRef,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// When the first attempt was sent: the retry budget counts from here. `None` while the
    /// event has never been attempted (parked behind a full lane or behind its key).
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due.
    pub due_at: DateTime<Utc>,
    /// When the event was first parked (the age of the parked backlog counts from here).
    pub parked_at: DateTime<Utc>,
    pub reason: ParkReason,
}

/// Why a parked record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a parked record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("parked record version {0} is not known to this version (knows {SCHEMA_VERSION})")]
    Version(u32),
}

impl Parked {
    /// The parked form of `event`, read at `source`, with its delivery state so far.
    pub fn new(
        event: &WebhookEvent,
        source: SourceRef,
        attempts: Vec<AttemptRecord>,
        first_attempt_at: Option<DateTime<Utc>>,
        due_at: DateTime<Utc>,
        reason: ParkReason,
    ) -> Parked {
        let body = std::str::from_utf8(&event.body)
            .ok()
            .and_then(|s| RawValue::from_string(s.to_owned()).ok())
            .expect("a derived body is UTF-8 JSON");
        Parked {
            schema_version: SCHEMA_VERSION,
            event_id: event.id.clone(),
            organization_id: event.organization_id.clone(),
            event_type: event.event_type,
            regulation: event.regulation.clone(),
            occurred_at: event.occurred_at,
            event: body,
            source,
            attempts,
            first_attempt_at,
            due_at,
            parked_at: Utc::now(),
            reason,
        }
    }

    /// The event to deliver: the same id and the same body bytes as when it was derived.
    pub fn webhook_event(&self) -> WebhookEvent {
        WebhookEvent {
            id: self.event_id.clone(),
            event_type: self.event_type,
            organization_id: self.organization_id.clone(),
            regulation: self.regulation.clone(),
            change_id: self.source.change_id.clone(),
            occurred_at: self.occurred_at,
            body: bytes::Bytes::copy_from_slice(self.event.get().as_bytes()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a parked record of strings and raw JSON serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Parked, DecodeError> {
        let parked: Parked = serde_json::from_slice(bytes)?;
        if parked.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::Version(parked.schema_version));
        }
        Ok(parked)
    }

    /// The headers of its record: the kind a reader recognizes ([`RecordKind::of`]).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (ORGANIZATION_HEADER, self.organization_id.clone()),
            (EVENT_ID_HEADER, self.event_id.clone()),
            (DUE_HEADER, self.due_at.timestamp_millis().to_string()),
            (REASON_HEADER, self.reason.code().to_owned()),
            (SOURCE_OFFSET_HEADER, self.source.offset.to_string()),
            (
                PARKED_AT_HEADER,
                self.parked_at.timestamp_millis().to_string(),
            ),
        ]
    }

    /// What its headers say of it, read from the record itself.
    pub fn head(&self) -> ParkedHead {
        ParkedHead {
            organization_id: self.organization_id.clone(),
            source_offset: self.source.offset,
            due_at: self.due_at,
            parked_at_ms: self.parked_at.timestamp_millis(),
        }
    }

    /// Retries already made: every attempt after the first.
    pub fn retries_done(&self) -> usize {
        self.attempts.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> Parked {
        Parked {
            schema_version: SCHEMA_VERSION,
            event_id: "6f1c".into(),
            organization_id: "acme".into(),
            event_type: EventType::UserUpdated,
            regulation: "gdpr".into(),
            occurred_at: "2026-12-02T09:59:59Z".parse().unwrap(),
            event: RawValue::from_string(
                r#"{"id":"6f1c","n":123456789012345678901234567890,"s":"\u00e9"}"#.into(),
            )
            .unwrap(),
            source: SourceRef {
                topic: "consent.changes".into(),
                partition: 3,
                offset: 41,
                change_id: "c1".into(),
            },
            attempts: vec![AttemptRecord {
                at: "2026-12-02T10:00:00.000Z".into(),
                duration_ms: 12,
                status: Some(503),
                error: None,
            }],
            first_attempt_at: Some("2026-12-02T10:00:00Z".parse().unwrap()),
            due_at: "2026-12-02T10:00:05Z".parse().unwrap(),
            parked_at: "2026-12-02T10:00:00Z".parse().unwrap(),
            reason: ParkReason::Retry,
        }
    }

    #[test]
    fn round_trip_keeps_the_body_bytes_and_the_state() {
        let original = parked();
        let back = Parked::decode(&original.encode()).unwrap();
        assert_eq!(back.event.get(), original.event.get());
        assert_eq!(back.attempts, original.attempts);
        assert_eq!(back.first_attempt_at, original.first_attempt_at);
        assert_eq!(back.due_at, original.due_at);
        assert_eq!(back.source, original.source);
        assert_eq!(back.reason, ParkReason::Retry);
        assert_eq!(back.retries_done(), 0);
        let event = back.webhook_event();
        assert_eq!(&event.body[..], original.event.get().as_bytes());
        assert_eq!(event.change_id, "c1");
        assert_eq!(event.event_type, EventType::UserUpdated);
    }

    #[test]
    fn headers_tell_the_reader_what_it_needs_without_the_body() {
        let parked = parked();
        let headers = parked.headers();
        let kind = RecordKind::of(headers.iter().map(|(k, v)| (*k, Some(v.as_bytes()))));
        assert_eq!(
            kind,
            RecordKind::Parked(ParkedHead {
                organization_id: "acme".into(),
                source_offset: 41,
                due_at: parked.due_at,
                parked_at_ms: parked.parked_at.timestamp_millis(),
            })
        );
        let done = [(DONE_HEADER, Some(&b"41"[..]))];
        assert_eq!(RecordKind::of(done), RecordKind::Done { source_offset: 41 });
        assert_eq!(RecordKind::of([("other", None)]), RecordKind::Other);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let mut newer = parked();
        newer.schema_version = SCHEMA_VERSION + 1;
        assert!(matches!(
            Parked::decode(&newer.encode()),
            Err(DecodeError::Version(_))
        ));
        assert!(matches!(Parked::decode(b"{}"), Err(DecodeError::Json(_))));
        assert!(matches!(Parked::decode(b"\xff"), Err(DecodeError::Json(_))));
    }
}
