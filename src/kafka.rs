//! librdkafka client configuration shared by the consumer and the producers.
//!
//! Guarantee: every client gets the operator's pass-through properties (so SASL/SSL to a managed
//! cluster work the same everywhere), with secret properties applied last and never logged.

use rdkafka::config::ClientConfig;
use secrecy::ExposeSecret;

use crate::config::KafkaSettings;

/// A client config with the brokers and every pass-through property.
pub fn client_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
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
