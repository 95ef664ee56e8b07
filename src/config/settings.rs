//! Validated, typed settings: what the rest of the service reads. Built only by
//! [`crate::config::load`], so every value here has passed validation.
//!
//! Secrets are [`SecretString`]s (or a [`SigningKey`]): their `Debug` prints nothing usable.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;

use crate::derive::Rules;
use crate::webhook::{EventType, SigningKey};

#[derive(Debug, Clone)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub delivery: DeliverySettings,
    pub rules: Rules,
    pub server: ServerSettings,
    /// Organization id → its endpoint, from the file. With the registry on, its entries are
    /// added to these (and win over an entry of the same id). An organization in neither has no
    /// endpoint: its events are counted and skipped.
    pub organizations: BTreeMap<String, OrganizationSettings>,
    /// The `[organizations.<id>]` sections as written, so that their secret files can be read
    /// again when they change (see [`crate::registry`]).
    pub organization_sources: BTreeMap<String, toml::Value>,
    /// Where relative secret file paths resolve.
    pub config_dir: PathBuf,
    /// The organization registry (a compacted topic), when `[registry] enabled = true`.
    pub registry: Option<RegistrySettings>,
    /// The admin API, when `[admin] listen` is set.
    pub admin: Option<AdminSettings>,
}

/// `[registry]`: organizations kept in a compacted Kafka topic and followed live.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub topic: String,
    /// How far this replica's clock may be from the brokers': a record's skip decision waits
    /// until the registry is known complete up to its time plus this.
    pub clock_skew: Duration,
    /// How often secret files named by organizations are read again.
    pub secret_refresh: Duration,
}

impl RegistrySettings {
    pub const DEFAULT_TOPIC: &'static str = "consent.webhooks.organizations";
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            topic: Self::DEFAULT_TOPIC.to_owned(),
            clock_skew: Duration::from_millis(500),
            secret_refresh: Duration::from_secs(2),
        }
    }
}

/// `[admin]`: the organization API, on its own listener.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// The bearer token every request must carry.
    pub token: SecretString,
}

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub dead_letter_topic: String,
    pub rejected_topic: String,
    /// Where events waiting for a retry are parked (same partition count as the input topic).
    pub retry_topic: String,
    /// librdkafka properties passed through as they are (e.g. `security.protocol`).
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are secrets (e.g. `sasl.password`), read from env or
    /// files named in the config.
    pub secret_properties: BTreeMap<String, SecretString>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub connect_timeout: Duration,
    /// Whole request, response body included.
    pub request_timeout: Duration,
    /// Largest response body read; the rest is discarded unread.
    pub max_response_body_bytes: usize,
    /// Default retry policy for organizations that set none.
    pub retry: RetrySettings,
    /// Default concurrent requests per endpoint.
    pub endpoint_concurrency: usize,
    /// Concurrent requests across all endpoints.
    pub max_in_flight_requests: usize,
    /// Records taken from Kafka and not yet done, across all partitions; past it, partitions
    /// are paused.
    pub max_pending_records: usize,
    /// Events of one organization in memory before their first attempt (queued or in flight);
    /// past it, and while the organization's endpoint is failing, new events are parked on the
    /// retry topic (reason `lane_full`) instead of waiting in memory.
    pub max_pending_per_organization: usize,
    /// Parked events read back from the retry topic and tracked by the reader (waiting for
    /// their due time, behind an earlier event of their key, or in flight), across all
    /// partitions; past it, reading the retry topic pauses. An event due more than 10 s ahead
    /// is tracked by its headers only (its body is read again when it falls due).
    pub max_parked_in_memory: usize,
    /// On shutdown or revoke: how long in-flight work may take before it is abandoned
    /// (uncommitted, so redelivered after restart).
    pub drain_timeout: Duration,
    pub user_agent: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// Delays of the retries, each measured from the first attempt's start (cumulative),
    /// strictly increasing.
    pub schedule: Vec<Duration>,
    /// Upper bound of the random delay added to each retry.
    pub max_jitter: Duration,
    /// No retry is scheduled later than this after the first attempt.
    pub budget: Duration,
}

#[derive(Debug, Clone)]
pub struct OrganizationSettings {
    pub url: Url,
    /// `None` = every type.
    pub event_types: Option<BTreeSet<EventType>>,
    /// Regulations delivered, lower-case; default `{"gdpr"}`. Matched case-insensitively.
    pub regulations: BTreeSet<String>,
    /// Custom headers added to every request (validated names and values).
    pub headers: Vec<(String, CustomHeaderValue)>,
    pub signing_key: Option<SigningKey>,
    /// During a signing-secret rotation, the secret being retired: requests carry both
    /// signatures until it is removed, so a receiver may switch at any time. Only with
    /// `signing_key`.
    pub previous_signing_key: Option<SigningKey>,
    pub oauth: Option<OAuthSettings>,
    /// Plain `http://` allowed (development only).
    pub allow_http: bool,
    /// Loopback, private, link-local and other non-global addresses allowed (development only).
    pub allow_private_addresses: bool,
    pub concurrency: usize,
    pub retry: RetrySettings,
    /// Whether this organization's series carry its id in the `organization` label (otherwise
    /// `_other`). `None`: the default of where it is defined (the file: yes; the registry: no,
    /// so that thousands of organizations do not make thousands of series each).
    pub metrics_label: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scope: Option<String>,
    pub auth_style: AuthStyle,
    /// Extra headers on token requests.
    pub headers: Vec<(String, CustomHeaderValue)>,
}

impl KafkaSettings {
    pub const DEFAULT_GROUP_ID: &'static str = "consent-webhooks";
    pub const DEFAULT_INPUT_TOPIC: &'static str = "consent.changes";
    pub const DEFAULT_DEAD_LETTER_TOPIC: &'static str = "consent.webhooks.dead-letter";
    pub const DEFAULT_REJECTED_TOPIC: &'static str = "consent.changes.rejected";
    pub const DEFAULT_RETRY_TOPIC: &'static str = "consent.webhooks.retry";
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
        }
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_response_body_bytes: 64 * 1024,
            retry: RetrySettings::default(),
            endpoint_concurrency: 16,
            max_in_flight_requests: 512,
            max_pending_records: 5_000,
            max_pending_per_organization: 2_500,
            max_parked_in_memory: 50_000,
            drain_timeout: Duration::from_secs(15),
            user_agent: concat!("consent-webhooks/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl Default for RetrySettings {
    /// Six retries, the last 290 s after the first attempt: with at most 5 s of jitter every
    /// retry starts within five minutes (SPEC §4: at least five retries within five minutes).
    fn default() -> Self {
        RetrySettings {
            schedule: [5, 20, 50, 110, 200, 290].map(Duration::from_secs).to_vec(),
            max_jitter: Duration::from_secs(5),
            budget: Duration::from_secs(300),
        }
    }
}

/// The value of a configured custom header: plain text, or a secret (an API key) read from a
/// `{ env = ".." }` / `{ file = ".." }` reference. A secret value never shows in `Debug` and is
/// marked sensitive on the request, so HTTP-level logging leaves it out too.
#[derive(Clone)]
pub enum CustomHeaderValue {
    Plain(String),
    Secret(SecretString),
}

impl CustomHeaderValue {
    /// The header value to send (validated when the configuration was loaded).
    pub fn to_header_value(
        &self,
    ) -> Result<reqwest::header::HeaderValue, reqwest::header::InvalidHeaderValue> {
        use secrecy::ExposeSecret;
        match self {
            CustomHeaderValue::Plain(text) => reqwest::header::HeaderValue::from_str(text),
            CustomHeaderValue::Secret(secret) => {
                let mut value = reqwest::header::HeaderValue::from_str(secret.expose_secret())?;
                value.set_sensitive(true);
                Ok(value)
            }
        }
    }

    pub fn is_secret(&self) -> bool {
        matches!(self, CustomHeaderValue::Secret(_))
    }

    /// The plain text, `None` for a secret.
    pub fn plain(&self) -> Option<&str> {
        match self {
            CustomHeaderValue::Plain(text) => Some(text),
            CustomHeaderValue::Secret(_) => None,
        }
    }
}

impl fmt::Debug for CustomHeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomHeaderValue::Plain(text) => fmt::Debug::fmt(text, f),
            CustomHeaderValue::Secret(_) => f.write_str("Secret([redacted])"),
        }
    }
}

impl From<&str> for CustomHeaderValue {
    fn from(text: &str) -> Self {
        CustomHeaderValue::Plain(text.to_owned())
    }
}

impl From<String> for CustomHeaderValue {
    fn from(text: String) -> Self {
        CustomHeaderValue::Plain(text)
    }
}

/// How the client credentials reach the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// HTTP Basic authentication (the RFC's recommended default).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    RequestBody,
}

impl AuthStyle {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStyle::Basic => "basic",
            AuthStyle::RequestBody => "request_body",
        }
    }
}

impl OrganizationSettings {
    /// Whether this endpoint wants events of this type and regulation (SPEC §4). Regulations
    /// match case-insensitively: `GDPR` in a record is `gdpr` in the filter.
    pub fn accepts(&self, event_type: EventType, regulation: &str) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.contains(&event_type))
            && self.accepts_regulation(regulation)
    }

    fn accepts_regulation(&self, regulation: &str) -> bool {
        // The filter is stored lower-case; most records already are, so no allocation then.
        if self.regulations.contains(regulation) {
            return true;
        }
        regulation.chars().any(char::is_uppercase)
            && self.regulations.contains(&regulation.to_lowercase())
    }
}
