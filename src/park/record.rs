//! A parked record: everything needed to continue one event's delivery later, in any process.
//!
//! Guarantee: [`Parked::decode`] of [`Parked::encode`] gives back the same event body, byte for
//! byte, and the same delivery state (attempts, first attempt, due time). A record that does not
//! decode is refused with a reason, never half-read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::deadletter::{AttemptRecord, SourceRef};

/// Version of the record layout; a reader refuses versions it does not know.
pub const SCHEMA_VERSION: u32 = 1;

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
