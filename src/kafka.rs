//! librdkafka client configuration shared by the consumer and the producers, the offset
//! look-up by time that `replay` and `resend` share, and the committed-offset look-up of the
//! input consumer and the retry reader.
//!
//! Guarantee: every client gets the operator's pass-through properties (so SASL/SSL to a managed
//! cluster work the same everywhere), with secret properties applied last and never logged.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use secrecy::ExposeSecret;

use crate::config::KafkaSettings;

/// `fetch.queue.backoff.ms` for our consumers. Once a consumer's queue passes its thresholds,
/// librdkafka waits this long before fetching again. Its default (1 s) is longer than the
/// pipeline took to empty the input's queue (16 MB then, about 0.6 s at full speed): the input
/// then ran in waves, full and idle by turns, capping the burst benchmark at ~25,000
/// deliveries/s with the CPUs half idle.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// A client config with the brokers, then `defaults` (tuning the operator may override), then
/// every pass-through property. Settings the service's guarantees depend on are set by the
/// caller afterwards, so they cannot be overridden.
pub fn client_config(kafka: &KafkaSettings, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    // librdkafka logs through `log`; keep its chatter at warnings unless asked for.
    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    for (key, value) in &kafka.secret_properties {
        config.set(key, value.expose_secret());
    }
    config
}

/// The committed offset of each of `partitions` of `topic` in the consumer's group (`None`: none
/// committed, or the look-up failed: `Err` says why, once for all).
pub fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> (Vec<(i32, Option<i64>)>, Option<rdkafka::error::KafkaError>) {
    let mut wanted = TopicPartitionList::new();
    for &p in partitions {
        let _ = wanted.add_partition_offset(topic, p, Offset::Invalid);
    }
    let (committed, error) = match consumer.committed_offsets(wanted, timeout) {
        Ok(list) => (Some(list), None),
        Err(error) => (None, Some(error)),
    };
    let offsets = partitions
        .iter()
        .map(|&p| {
            let offset = committed
                .as_ref()
                .and_then(|c| c.find_partition(topic, p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            (p, offset)
        })
        .collect();
    (offsets, error)
}

/// Per partition, the offset of the first record at or after `time` (`None`: no such record).
pub fn offsets_for_time(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    time: DateTime<Utc>,
    timeout: Duration,
) -> Result<Vec<Option<i64>>, String> {
    let mut list = TopicPartitionList::new();
    for &p in partitions {
        list.add_partition_offset(topic, p, Offset::Offset(time.timestamp_millis()))
            .map_err(|e| format!("cannot build the offset list: {e}"))?;
    }
    let list = consumer
        .offsets_for_times(list, timeout)
        .map_err(|e| format!("cannot look up offsets by time: {e}"))?;
    partitions
        .iter()
        .map(|&p| {
            let element = list
                .find_partition(topic, p)
                .ok_or_else(|| format!("no offset-by-time answer for {p}"))?;
            element
                .error()
                .map_err(|e| format!("cannot look up the offset by time of {p}: {e}"))?;
            Ok(match element.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            })
        })
        .collect()
}
