//! librdkafka client configuration shared by the consumer and the producers.
//!
//! Guarantee: every client gets the operator's pass-through properties (so SASL/SSL to a managed
//! cluster work the same everywhere), with secret properties applied last and never logged.

use rdkafka::config::ClientConfig;
use secrecy::ExposeSecret;

use crate::config::KafkaSettings;

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
