//! `kafka.properties` and `kafka.secret_properties` judged by librdkafka itself, at load time.
//!
//! Guarantee: a property librdkafka does not know (a typo such as `session.timout.ms`), a value
//! it refuses, or a combination it cannot build a client from fails [`crate::config::load`]
//! (so `check-config` too, not only `run`), with the key path of the property at fault. Nothing
//! connects: the clients are created without `bootstrap.servers`, never polled, and dropped.
//! A secret property's value, and librdkafka's text about it, never appear in the error.

use std::collections::BTreeMap;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaConfRes;
use secrecy::{ExposeSecret, SecretString};

use super::reader::{invalid, join, Node};
use super::ConfigError;

/// Where librdkafka's configuration properties are listed.
const REFERENCE: &str = "https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md";

/// Checks every property on its own (name and value, in key order), then all of them together
/// by creating a consumer and a producer, as the service does at start.
pub(super) fn check(
    node: &Node<'_>,
    group_id: &str,
    properties: &BTreeMap<String, String>,
    secret_properties: &BTreeMap<String, SecretString>,
) -> Result<(), ConfigError> {
    if properties.is_empty() && secret_properties.is_empty() {
        return Ok(());
    }
    let plain = properties.iter().map(|(k, v)| (k, v.as_str(), false));
    let secret = secret_properties
        .iter()
        .map(|(k, v)| (k, v.expose_secret(), true));
    let all: Vec<(&String, &str, bool)> = plain.chain(secret).collect();

    for (name, value, is_secret) in &all {
        let mut one = ClientConfig::new();
        one.set(name.as_str(), *value);
        if let Err(error) = one.create_native_config() {
            return Err(property_error(node, name, *is_secret, &error));
        }
    }

    let mut config = ClientConfig::new();
    config.set("group.id", group_id);
    config.set_log_level(RDKafkaLogLevel::Emerg);
    for (name, value, _) in &all {
        config.set(name.as_str(), *value);
    }
    let created = config
        .create_with_context::<_, BaseConsumer<Quiet>>(Quiet)
        .map(drop)
        .and_then(|()| {
            config
                .create_with_context::<_, BaseProducer<Quiet>>(Quiet)
                .map(drop)
        });
    match created {
        Ok(()) => Ok(()),
        Err(error) => Err(creation_error(node, &all, &error)),
    }
}

/// One property refused by name or value.
fn property_error(node: &Node<'_>, name: &str, is_secret: bool, error: &KafkaError) -> ConfigError {
    let table = table_of(is_secret);
    let message = match error {
        KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..) => {
            format!("librdkafka has no property {name:?} (misspelled? the list: {REFERENCE})")
        }
        // librdkafka quotes the value: say only that it is refused when it is a secret.
        _ if is_secret => "librdkafka refuses this value".to_owned(),
        KafkaError::ClientConfig(_, description, _, _) => {
            format!("librdkafka refuses it: {description}")
        }
        other => format!("librdkafka refuses it: {other}"),
    };
    invalid(
        &join(&node.key_path(table), name),
        message,
        node.example(table),
    )
}

/// A client librdkafka would not create from the properties together.
fn creation_error(
    node: &Node<'_>,
    all: &[(&String, &str, bool)],
    error: &KafkaError,
) -> ConfigError {
    let mut text = match error {
        KafkaError::ClientCreation(text) => text.clone(),
        other => other.to_string(),
    };
    for (_, value, is_secret) in all {
        if *is_secret && !value.is_empty() {
            text = text.replace(value, "[redacted]");
        }
    }
    // The longest property name the text mentions is the one at fault (`sasl.mechanism` rather
    // than a shorter name it contains).
    let culprit = all
        .iter()
        .filter(|(name, _, _)| text.contains(name.as_str()))
        .max_by_key(|(name, _, _)| name.len());
    let key = match culprit {
        Some((name, _, is_secret)) => join(&node.key_path(table_of(*is_secret)), name),
        None => node.key_path("properties"),
    };
    let table = culprit.map_or("properties", |(_, _, s)| table_of(*s));
    invalid(
        &key,
        format!("librdkafka cannot create a client from the Kafka properties: {text}"),
        node.example(table),
    )
}

fn table_of(is_secret: bool) -> &'static str {
    if is_secret {
        "secret_properties"
    } else {
        "properties"
    }
}

/// A client context that drops librdkafka's log lines: the clients here only exist to be judged.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _level: RDKafkaLogLevel, _facility: &str, _message: &str) {}
    fn error(&self, _error: KafkaError, _reason: &str) {}
}

impl ConsumerContext for Quiet {}

impl ProducerContext for Quiet {
    type DeliveryOpaque = ();
    fn delivery(&self, _result: &DeliveryResult<'_>, _opaque: ()) {}
}
