//! The checks that turn a TOML tree into [`Settings`]: the `kafka`, `server`, `rules` and
//! `delivery` sections here, `organizations` in [`super::validate_org`].
//!
//! Guarantee: every default is filled in from the `Default` impls in `settings.rs` (one source
//! of truth, also what `check-config` prints), and every value that reaches [`Settings`] passed
//! its check here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use secrecy::SecretString;
use toml::{Table, Value};

use super::reader::{describe, empty_table, invalid, join, Keys, Node};
use super::retry_policy::{retry, RETRY_KEYS};
use super::settings::*;
use super::{librdkafka, secret, validate_org, ConfigError};
use crate::derive::Rules;

/// What validation may read besides the tree: where relative secret files are, and the
/// environment for `{ env = "VAR" }` secrets.
pub(super) struct Ctx<'a> {
    pub base_dir: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

pub(super) const ROOT_KEYS: Keys = &[
    ("kafka", "[kafka]"),
    ("server", "[server]"),
    ("rules", "[rules]"),
    ("delivery", "[delivery]"),
    ("organizations", "[organizations.acme]"),
    ("registry", "[registry]"),
    ("admin", "[admin]"),
];

pub(super) const REGISTRY_KEYS: Keys = &[
    ("enabled", "enabled = true"),
    ("topic", r#"topic = "consent.webhooks.organizations""#),
    ("clock_skew", r#"clock_skew = "500ms""#),
    ("secret_refresh", r#"secret_refresh = "2s""#),
];

pub(super) const ADMIN_KEYS: Keys = &[
    ("listen", r#"listen = "0.0.0.0:9465""#),
    (
        "token",
        r#"token = { env = "CONSENT_WEBHOOKS_ADMIN_TOKEN" }"#,
    ),
];

pub(super) const KAFKA_KEYS: Keys = &[
    (
        "brokers",
        r#"brokers = "kafka-0.kafka:9092,kafka-1.kafka:9092""#,
    ),
    ("group_id", r#"group_id = "consent-webhooks""#),
    ("input_topic", r#"input_topic = "consent.changes""#),
    (
        "dead_letter_topic",
        r#"dead_letter_topic = "consent.webhooks.dead-letter""#,
    ),
    (
        "rejected_topic",
        r#"rejected_topic = "consent.changes.rejected""#,
    ),
    ("retry_topic", r#"retry_topic = "consent.webhooks.retry""#),
    (
        "properties",
        r#"properties = { "security.protocol" = "SASL_SSL" }"#,
    ),
    (
        "secret_properties",
        r#"secret_properties = { "sasl.password" = { env = "KAFKA_SASL_PASSWORD" } }"#,
    ),
];

pub(super) const SERVER_KEYS: Keys = &[("listen", r#"listen = "0.0.0.0:9464""#)];

pub(super) const RULES_KEYS: Keys = &[(
    "volatile_fields",
    r#"volatile_fields = ["updated_at", "version", "last_seen_country"]"#,
)];

pub(super) const DELIVERY_KEYS: Keys = &[
    ("connect_timeout", r#"connect_timeout = "5s""#),
    ("request_timeout", r#"request_timeout = "10s""#),
    ("max_response_body_bytes", "max_response_body_bytes = 65536"),
    ("endpoint_concurrency", "endpoint_concurrency = 16"),
    ("max_in_flight_requests", "max_in_flight_requests = 512"),
    ("max_pending_records", "max_pending_records = 5000"),
    (
        "max_pending_per_organization",
        "max_pending_per_organization = 2500",
    ),
    ("max_parked_in_memory", "max_parked_in_memory = 50000"),
    ("drain_timeout", r#"drain_timeout = "15s""#),
    ("user_agent", r#"user_agent = "consent-webhooks/1.0""#),
    (
        "retry",
        r#"retry = { schedule = ["5s", "20s", "50s", "110s", "200s", "290s"], max_jitter = "5s", budget = "5m" }"#,
    ),
];

/// librdkafka properties that have a dedicated key here, and that key.
const OWNED_PROPERTIES: [(&str, &str); 2] =
    [("bootstrap.servers", "brokers"), ("group.id", "group_id")];

pub(super) fn settings(root: &Table, ctx: &Ctx<'_>) -> Result<Settings, ConfigError> {
    let root = Node::open(String::new(), root, ROOT_KEYS)?;
    let delivery = delivery(&root.child("delivery", DELIVERY_KEYS)?)?;
    let kafka = kafka(&root.child("kafka", KAFKA_KEYS)?, ctx)?;
    let server = server(&root.child("server", SERVER_KEYS)?)?;
    let registry = registry(&root.child("registry", REGISTRY_KEYS)?, &kafka)?;
    let admin = admin(&root.child("admin", ADMIN_KEYS)?, ctx, &server)?;
    if admin.is_some() && registry.is_none() {
        return Err(invalid(
            "admin.listen",
            "the admin API writes to the organization registry: set [registry] enabled = true too",
            "registry.enabled = true",
        ));
    }
    let organization_sources = root
        .table("organizations")?
        .map(|t| t.iter().map(|(id, v)| (id.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Settings {
        kafka,
        rules: rules(&root.child("rules", RULES_KEYS)?)?,
        server,
        organizations: validate_org::organizations(&root, &delivery, ctx)?,
        organization_sources,
        config_dir: ctx.base_dir.to_owned(),
        registry,
        admin,
        delivery,
    })
}

/// `[registry]`: off unless `enabled = true`; its topic differs from the other four.
fn registry(
    node: &Node<'_>,
    kafka: &KafkaSettings,
) -> Result<Option<RegistrySettings>, ConfigError> {
    let defaults = RegistrySettings::default();
    let topic = node
        .string("topic")?
        .unwrap_or_else(|| defaults.topic.clone());
    check_topic(&topic).map_err(|m| node.err("topic", format!("{topic:?} {m}")))?;
    let others = [
        &kafka.input_topic,
        &kafka.dead_letter_topic,
        &kafka.rejected_topic,
        &kafka.retry_topic,
    ];
    if others.contains(&&topic) {
        return Err(node.err(
            "topic",
            format!("{topic:?} is already one of the [kafka] topics; the registry needs its own"),
        ));
    }
    let settings = RegistrySettings {
        topic,
        clock_skew: node
            .duration("clock_skew", true)?
            .unwrap_or(defaults.clock_skew),
        secret_refresh: node
            .duration("secret_refresh", false)?
            .unwrap_or(defaults.secret_refresh),
    };
    Ok(node.bool_or("enabled", false)?.then_some(settings))
}

/// `[admin]`: off unless `listen` is set; then a token is required, and the listener differs
/// from the operations endpoint's.
fn admin(
    node: &Node<'_>,
    ctx: &Ctx<'_>,
    server: &ServerSettings,
) -> Result<Option<AdminSettings>, ConfigError> {
    let Some(text) = node.nonempty_string("listen")? else {
        if node.get("token").is_some() {
            return Err(node.err(
                "listen",
                "a token without a listener: set where the admin API listens",
            ));
        }
        return Ok(None);
    };
    let listen: SocketAddr = text
        .parse()
        .map_err(|_| node.err("listen", format!("{text:?} is not an address:port")))?;
    if listen == server.listen && listen.port() != 0 {
        return Err(node.err(
            "listen",
            format!("{listen} is server.listen too; the admin API needs its own listener"),
        ));
    }
    let token = secret::read(node, "token", ctx)?
        .ok_or_else(|| node.err("token", "required when the admin API listens"))?;
    Ok(Some(AdminSettings {
        listen,
        token: token.value,
    }))
}

fn kafka(node: &Node<'_>, ctx: &Ctx<'_>) -> Result<KafkaSettings, ConfigError> {
    let brokers = node.required_string("brokers")?;
    if brokers.split(',').any(|b| b.trim().is_empty()) {
        return Err(node.err("brokers", format!("{brokers:?} has an empty entry")));
    }
    let group_id = node
        .nonempty_string("group_id")?
        .unwrap_or_else(|| KafkaSettings::DEFAULT_GROUP_ID.into());

    let topic_keys = [
        ("input_topic", KafkaSettings::DEFAULT_INPUT_TOPIC),
        (
            "dead_letter_topic",
            KafkaSettings::DEFAULT_DEAD_LETTER_TOPIC,
        ),
        ("rejected_topic", KafkaSettings::DEFAULT_REJECTED_TOPIC),
        ("retry_topic", KafkaSettings::DEFAULT_RETRY_TOPIC),
    ];
    let mut topics: Vec<String> = Vec::new();
    for (key, default) in &topic_keys {
        let topic = node.string(key)?.unwrap_or_else(|| (*default).into());
        check_topic(&topic).map_err(|m| node.err(key, format!("{topic:?} {m}")))?;
        if let Some(j) = topics.iter().position(|t| *t == topic) {
            let other = node.key_path(topic_keys[j].0);
            return Err(node.err(
                key,
                format!("{topic:?} is also {other}; the four topics must differ"),
            ));
        }
        topics.push(topic);
    }
    let [input_topic, dead_letter_topic, rejected_topic, retry_topic] =
        <[String; 4]>::try_from(topics).expect("four topics");

    let properties = properties(node)?;
    let secret_properties = secret_properties(node, ctx)?;
    librdkafka::check(node, &group_id, &properties, &secret_properties)?;
    Ok(KafkaSettings {
        brokers: brokers.trim().to_owned(),
        group_id,
        input_topic,
        dead_letter_topic,
        rejected_topic,
        retry_topic,
        properties,
        secret_properties,
    })
}

fn empty_or(table: Option<&Table>) -> &Table {
    table.unwrap_or_else(|| empty_table())
}

/// Kafka topic name rules: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err("must be 1 to 249 characters long".into());
    }
    if topic == "." || topic == ".." {
        return Err("is not a valid topic name".into());
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {c:?}; topic names use only a-z, A-Z, 0-9, '.', '_', '-'"
        ));
    }
    Ok(())
}

/// `kafka.properties`: strings (integers and booleans are taken as their text).
fn properties(node: &Node<'_>) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, value) in empty_or(node.table("properties")?) {
        let key = join(&node.key_path("properties"), name);
        let err = |message: String| invalid(&key, message, node.example("properties"));
        if let Some((_, own)) = OWNED_PROPERTIES.iter().find(|(p, _)| p == name) {
            return Err(err(format!("set it with {} instead", node.key_path(own))));
        }
        if is_secret_property(name) {
            return Err(err(format!(
                "holds a secret: set it in {} as {{ env = \"VAR\" }} or {{ file = \"/path\" }}",
                node.key_path("secret_properties")
            )));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Integer(i) => i.to_string(),
            Value::Boolean(b) => b.to_string(),
            other => return Err(err(format!("expected a string, found {}", describe(other)))),
        };
        out.insert(name.clone(), text);
    }
    Ok(out)
}

fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password") || name.contains("secret") || name == "ssl.key.pem"
}

fn secret_properties(
    node: &Node<'_>,
    ctx: &Ctx<'_>,
) -> Result<BTreeMap<String, SecretString>, ConfigError> {
    let table = empty_or(node.table("secret_properties")?);
    let mut out = BTreeMap::new();
    for (name, value) in table {
        let path = join(&node.key_path("secret_properties"), name);
        let example = r#""sasl.password" = { env = "KAFKA_SASL_PASSWORD" }"#;
        let secret = secret::read_value(value, &path, example, ctx)?;
        out.insert(name.clone(), secret.value);
    }
    Ok(out)
}

fn server(node: &Node<'_>) -> Result<ServerSettings, ConfigError> {
    let mut server = ServerSettings::default();
    if let Some(listen) = node.string("listen")? {
        server.listen = listen.parse::<SocketAddr>().map_err(|_| {
            node.err(
                "listen",
                format!("{listen:?} is not an address with a port"),
            )
        })?;
    }
    Ok(server)
}

fn rules(node: &Node<'_>) -> Result<Rules, ConfigError> {
    let mut rules = Rules::default();
    if let Some(fields) = node.strings("volatile_fields")? {
        rules.volatile_fields = fields;
    }
    Ok(rules)
}

fn delivery(node: &Node<'_>) -> Result<DeliverySettings, ConfigError> {
    let d = DeliverySettings::default();
    let user_agent = node.nonempty_string("user_agent")?.unwrap_or(d.user_agent);
    if reqwest::header::HeaderValue::from_str(&user_agent).is_err() {
        return Err(node.err("user_agent", "is not a valid HTTP header value"));
    }
    let max_pending_records = node.count_or("max_pending_records", d.max_pending_records)?;
    let max_pending_per_organization =
        max_pending_per_organization(node, max_pending_records, d.max_pending_per_organization)?;
    Ok(DeliverySettings {
        connect_timeout: node
            .duration("connect_timeout", false)?
            .unwrap_or(d.connect_timeout),
        request_timeout: node
            .duration("request_timeout", false)?
            .unwrap_or(d.request_timeout),
        max_response_body_bytes: node
            .count_or("max_response_body_bytes", d.max_response_body_bytes)?,
        endpoint_concurrency: node.count_or("endpoint_concurrency", d.endpoint_concurrency)?,
        max_in_flight_requests: node
            .count_or("max_in_flight_requests", d.max_in_flight_requests)?,
        max_pending_records,
        max_pending_per_organization,
        max_parked_in_memory: max_parked_in_memory(node, d.max_parked_in_memory)?,
        drain_timeout: node
            .duration("drain_timeout", false)?
            .unwrap_or(d.drain_timeout),
        retry: retry(
            &node.child("retry", RETRY_KEYS)?,
            &d.retry,
            "the default schedule",
        )?,
        user_agent,
    })
}

/// `max_parked_in_memory`: at least [`MIN_PARKED_IN_MEMORY`]. The retry reader reads parked
/// events in log order and holds them until due; with a tiny window, one event waiting minutes
/// for its next retry would hold back everyone's due retries behind it in the log, and those
/// would start late and lose retries to the budget.
fn max_parked_in_memory(node: &Node<'_>, default: usize) -> Result<usize, ConfigError> {
    const KEY: &str = "max_parked_in_memory";
    let value = node.count_or(KEY, default)?;
    if value < MIN_PARKED_IN_MEMORY {
        return Err(invalid(
            &node.key_path(KEY),
            format!(
                "{value} is below {MIN_PARKED_IN_MEMORY}: events waiting for a late retry would \
                 hold back the due retries behind them on the retry topic"
            ),
            &format!("{KEY} = {default}"),
        ));
    }
    Ok(value)
}

/// The smallest retry-reader window accepted.
const MIN_PARKED_IN_MEMORY: usize = 100;

/// `max_pending_per_organization`: at most `max_pending_records`, where one organization's lane
/// could otherwise hold every pending record and pause the partitions for everyone. Unset, it is
/// the default or `max_pending_records`, whichever is lower.
fn max_pending_per_organization(
    node: &Node<'_>,
    max_pending_records: usize,
    default: usize,
) -> Result<usize, ConfigError> {
    const KEY: &str = "max_pending_per_organization";
    if node.get(KEY).is_none() {
        return Ok(default.min(max_pending_records));
    }
    let per_organization = node.count_or(KEY, default)?;
    if per_organization > max_pending_records {
        return Err(invalid(
            &node.key_path(KEY),
            format!(
                "{per_organization} is above {} ({max_pending_records}): one organization \
                 whose endpoint is down could fill every pending slot and pause all partitions; \
                 set it at most {max_pending_records} (well below, so other organizations keep \
                 flowing)",
                node.key_path("max_pending_records"),
            ),
            &format!("{KEY} = {}", (max_pending_records / 2).max(1)),
        ));
    }
    Ok(per_organization)
}
