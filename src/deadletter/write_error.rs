//! Why a write to the dead-letter or rejected topic failed, and what follows from it.
//!
//! Guarantee: every produce error maps to exactly one [`WriteFailure`], and every
//! [`WriteFailure`] to exactly one [`Disposition`] (an exhaustive match: a new variant does not
//! compile until someone decides how it is handled). Nothing parses error text. librdkafka has
//! already retried what it retries itself (up to `message.timeout.ms`) before an error reaches
//! us, so:
//! - a failure the broker may get over (timeouts, unavailable leaders, full queues) is retried
//!   for as long as it takes: nothing is lost, the partition's watermark waits;
//! - a record the broker will never take as it is (too large, refused as invalid) is written in
//!   its small *reference* form instead (see [`super::Producers::dead_letter`]);
//! - a producer that can write nothing any more (authorization, a fatal idempotent-producer
//!   error, an unusable topic) stops the service: retrying cannot help, and the operator must.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A failed write, as a fixed code (metric label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteFailure {
    /// Not acknowledged in time (`message.timeout.ms`, or librdkafka's request timeouts).
    Timeout,
    /// No usable broker, leader or in-sync replicas right now; or the local queue is full.
    Unavailable,
    /// The record (or its batch) is larger than the topic or the producer accepts.
    TooLarge,
    /// The broker refused this record as invalid (record validation, policy).
    Invalid,
    /// Authentication or authorization refused: no write can succeed until an operator acts.
    Unauthorized,
    /// The idempotent producer reached a fatal state (e.g. out-of-order sequence, fenced).
    FatalProducer,
    /// The topic cannot be written at all (invalid name, unsupported settings).
    UnusableTopic,
    /// Any other error: treated as transient.
    Other,
}

/// What the writer does about a [`WriteFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try the same record again after a short pause.
    Retry,
    /// This record cannot be written as it is: write its reference form instead.
    Shrink,
    /// Stop the service (readiness fails, the one shutdown path runs).
    Fatal,
}

impl WriteFailure {
    /// Every failure, for pre-registering metric series.
    pub const ALL: [WriteFailure; 8] = [
        WriteFailure::Timeout,
        WriteFailure::Unavailable,
        WriteFailure::TooLarge,
        WriteFailure::Invalid,
        WriteFailure::Unauthorized,
        WriteFailure::FatalProducer,
        WriteFailure::UnusableTopic,
        WriteFailure::Other,
    ];

    /// Stable identifier (metric label, logs).
    pub fn code(self) -> &'static str {
        match self {
            WriteFailure::Timeout => "timeout",
            WriteFailure::Unavailable => "unavailable",
            WriteFailure::TooLarge => "too_large",
            WriteFailure::Invalid => "invalid",
            WriteFailure::Unauthorized => "unauthorized",
            WriteFailure::FatalProducer => "fatal_producer",
            WriteFailure::UnusableTopic => "unusable_topic",
            WriteFailure::Other => "other",
        }
    }

    pub fn disposition(self) -> Disposition {
        match self {
            WriteFailure::Timeout | WriteFailure::Unavailable | WriteFailure::Other => {
                Disposition::Retry
            }
            WriteFailure::TooLarge | WriteFailure::Invalid => Disposition::Shrink,
            WriteFailure::Unauthorized
            | WriteFailure::FatalProducer
            | WriteFailure::UnusableTopic => Disposition::Fatal,
        }
    }

    /// Classifies a produce error. `fatal` says whether the producer itself reports a fatal
    /// error (`rd_kafka_fatal_error`), which wins over the record's own error code.
    pub fn classify(error: &KafkaError, fatal: bool) -> WriteFailure {
        if fatal {
            return WriteFailure::FatalProducer;
        }
        match error.rdkafka_error_code() {
            Some(code) => Self::of_code(code),
            None => WriteFailure::Other,
        }
    }

    fn of_code(code: RDKafkaErrorCode) -> WriteFailure {
        use RDKafkaErrorCode as C;
        match code {
            C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => WriteFailure::Timeout,
            C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
                WriteFailure::TooLarge
            }
            C::InvalidRecord
            | C::InvalidMessage
            | C::PolicyViolation
            | C::UnsupportedForMessageFormat
            | C::BadMessage => WriteFailure::Invalid,
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication => WriteFailure::Unauthorized,
            C::Fatal
            | C::ProducerFenced
            | C::OutOfOrderSequenceNumber
            | C::InvalidProducerEpoch
            | C::InvalidProducerIdMapping => WriteFailure::FatalProducer,
            C::InvalidTopic | C::InvalidRequiredAcks => WriteFailure::UnusableTopic,
            C::QueueFull
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::BrokerNotAvailable
            | C::AllBrokersDown
            | C::BrokerTransportFailure => WriteFailure::Unavailable,
            _ => WriteFailure::Other,
        }
    }
}

/// Why a write returned without the broker's acknowledgement.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The work was cancelled (revoke or shutdown) before the broker acknowledged the write.
    #[error("cancelled before the write was acknowledged")]
    Cancelled,
    /// The broker will not take this record as it is (too large, invalid).
    #[error("the broker refused the record ({})", .0.code())]
    Refused(WriteFailure),
    /// The producer can write nothing any more; the service is stopping.
    #[error("fatal producer error ({})", .0.code())]
    Fatal(WriteFailure),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn produce_errors_are_classified() {
        use RDKafkaErrorCode as C;
        let rows = [
            (
                C::MessageTimedOut,
                WriteFailure::Timeout,
                Disposition::Retry,
            ),
            (
                C::RequestTimedOut,
                WriteFailure::Timeout,
                Disposition::Retry,
            ),
            (C::QueueFull, WriteFailure::Unavailable, Disposition::Retry),
            (
                C::NotEnoughReplicas,
                WriteFailure::Unavailable,
                Disposition::Retry,
            ),
            (
                C::AllBrokersDown,
                WriteFailure::Unavailable,
                Disposition::Retry,
            ),
            (
                C::MessageSizeTooLarge,
                WriteFailure::TooLarge,
                Disposition::Shrink,
            ),
            (
                C::MessageBatchTooLarge,
                WriteFailure::TooLarge,
                Disposition::Shrink,
            ),
            (C::InvalidRecord, WriteFailure::Invalid, Disposition::Shrink),
            (
                C::PolicyViolation,
                WriteFailure::Invalid,
                Disposition::Shrink,
            ),
            (
                C::TopicAuthorizationFailed,
                WriteFailure::Unauthorized,
                Disposition::Fatal,
            ),
            (
                C::ClusterAuthorizationFailed,
                WriteFailure::Unauthorized,
                Disposition::Fatal,
            ),
            (
                C::SaslAuthenticationFailed,
                WriteFailure::Unauthorized,
                Disposition::Fatal,
            ),
            (C::Fatal, WriteFailure::FatalProducer, Disposition::Fatal),
            (
                C::OutOfOrderSequenceNumber,
                WriteFailure::FatalProducer,
                Disposition::Fatal,
            ),
            (
                C::ProducerFenced,
                WriteFailure::FatalProducer,
                Disposition::Fatal,
            ),
            (
                C::InvalidTopic,
                WriteFailure::UnusableTopic,
                Disposition::Fatal,
            ),
            (C::Unknown, WriteFailure::Other, Disposition::Retry),
        ];
        for (code, failure, disposition) in rows {
            let classified = WriteFailure::classify(&produce(code), false);
            assert_eq!(classified, failure, "{code:?}");
            assert_eq!(classified.disposition(), disposition, "{code:?}");
        }
    }

    #[test]
    fn a_fatal_producer_wins_over_the_record_error() {
        let error = produce(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(
            WriteFailure::classify(&error, true),
            WriteFailure::FatalProducer
        );
        assert_eq!(
            WriteFailure::classify(&KafkaError::Canceled, false),
            WriteFailure::Other
        );
    }

    #[test]
    fn codes_are_distinct_snake_case() {
        let codes: std::collections::BTreeSet<&str> =
            WriteFailure::ALL.iter().map(|f| f.code()).collect();
        assert_eq!(codes.len(), WriteFailure::ALL.len());
        assert!(codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
