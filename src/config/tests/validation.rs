//! One row per validation rule: the file, the key path the error must start with, and a
//! fragment of the message. Every error must also show a valid example.

use super::{error, org, MIN};

fn rows() -> Vec<(String, &'static str, &'static str)> {
    let kafka = |body: &str| format!("[kafka]\n{body}\n");
    let with = |section: &str| format!("{MIN}{section}\n");
    let url = |u: &str| format!("{MIN}[organizations.acme]\nurl = \"{u}\"\n");
    let oauth = |body: &str| {
        org(&format!(
            "[organizations.acme.oauth]\ntoken_url = \"https://auth.example/t\"\nclient_id = \"c\"\n\
             client_secret = {{ env = \"ACME_OAUTH_CLIENT_SECRET\" }}\n{body}"
        ))
    };
    vec![
        // Structure.
        (with("[kafak]"), "kafak", "did you mean `kafka`? valid keys at the top level: kafka"),
        (kafka("brokers = \"k:1\"\nbrokrs = 1"), "kafka.brokrs", "did you mean `brokers`?"),
        (with("[delivery.retry]\nattempts = 5"), "delivery.retry.attempts", "valid keys in [delivery.retry]: schedule, max_jitter, budget"),
        (format!("delivery = 5\n{MIN}"), "delivery", "expected a table, found the integer 5"),
        // Kafka.
        (kafka("group_id = \"g\""), "kafka.brokers", "required key is missing"),
        (kafka("brokers = \" \""), "kafka.brokers", "must not be empty"),
        (kafka("brokers = \"a:1,,b:2\""), "kafka.brokers", "empty entry"),
        (kafka("brokers = 9092"), "kafka.brokers", "expected a string, found the integer 9092"),
        (kafka("brokers = \"k:1\"\ngroup_id = \"\""), "kafka.group_id", "must not be empty"),
        (kafka("brokers = \"k:1\"\ninput_topic = \"consent changes\""), "kafka.input_topic", "contains ' '"),
        (kafka("brokers = \"k:1\"\ndead_letter_topic = \"..\""), "kafka.dead_letter_topic", "not a valid topic name"),
        (kafka(&format!("brokers = \"k:1\"\nrejected_topic = \"{}\"", "t".repeat(250))), "kafka.rejected_topic", "1 to 249"),
        (kafka("brokers = \"k:1\"\ndead_letter_topic = \"consent.changes\""), "kafka.dead_letter_topic", "is also kafka.input_topic"),
        (kafka("brokers = \"k:1\"\ninput_topic = \"a\"\nrejected_topic = \"consent.webhooks.dead-letter\""), "kafka.rejected_topic", "is also kafka.dead_letter_topic"),
        (with("[kafka.properties]\n\"bootstrap.servers\" = \"x:1\""), "kafka.properties.\"bootstrap.servers\"", "kafka.brokers instead"),
        (with("[kafka.properties]\n\"sasl.password\" = \"hunter2\""), "kafka.properties.\"sasl.password\"", "kafka.secret_properties"),
        (with("[kafka.properties]\n\"client.id\" = [1]"), "kafka.properties.\"client.id\"", "expected a string"),
        (with("[kafka.secret_properties]\n\"sasl.password\" = \"hunter2\""), "kafka.secret_properties.\"sasl.password\"", "must not be written in the config file"),
        (with("[kafka.secret_properties]\n\"sasl.password\" = { env = \"NOPE_UNSET\" }"), "kafka.secret_properties.\"sasl.password\"", "environment variable NOPE_UNSET is not set"),
        (with("[kafka.secret_properties]\n\"sasl.password\" = { vault = \"x\" }"), "kafka.secret_properties.\"sasl.password\".vault", "unknown key"),
        // Server and rules.
        (with("[server]\nlisten = \"9464\""), "server.listen", "not an address with a port"),
        (with("[rules]\nvolatile_fields = [1]"), "rules.volatile_fields", "entry 0: expected a string"),
        (with("[rules]\nvolatile_fields = [\"\"]"), "rules.volatile_fields", "entry 0 is an empty string"),
        // Delivery.
        (with("[delivery]\nrequest_timeout = \"10 parsecs\""), "delivery.request_timeout", "is not a duration"),
        (with("[delivery]\nconnect_timeout = \"0s\""), "delivery.connect_timeout", "greater than zero"),
        (with("[delivery]\ndrain_timeout = 15"), "delivery.drain_timeout", "expected a duration string"),
        (with("[delivery]\nendpoint_concurrency = 0"), "delivery.endpoint_concurrency", "at least 1"),
        (with("[delivery]\nmax_in_flight_requests = -1"), "delivery.max_in_flight_requests", "at least 1"),
        (with("[delivery]\nmax_response_body_bytes = \"64k\""), "delivery.max_response_body_bytes", "expected an integer"),
        (with("[delivery]\nmax_pending_records = 0"), "delivery.max_pending_records", "at least 1"),
        (with("[delivery]\nmax_pending_per_organization = 0"), "delivery.max_pending_per_organization", "at least 1"),
        (with("[delivery]\nmax_parked_in_memory = 10"), "delivery.max_parked_in_memory", "10 is below 100"),
        (kafka("brokers = \"k:1\"\nretry_topic = \"consent.changes\""), "kafka.retry_topic", "is also kafka.input_topic"),
        (with("[delivery]\nuser_agent = \"bad\\nagent\""), "delivery.user_agent", "not a valid HTTP header value"),
        (with("[delivery.retry]\nschedule = []"), "delivery.retry.schedule", "at least one retry"),
        (with("[delivery.retry]\nschedule = [\"20s\", \"5s\"]"), "delivery.retry.schedule", "strictly increasing"),
        (with("[delivery.retry]\nschedule = [\"5s\", \"5s\"]"), "delivery.retry.schedule", "strictly increasing"),
        (with("[delivery.retry]\nschedule = [\"0s\", \"5s\"]"), "delivery.retry.schedule", "entry 0: \"0s\" must be greater than zero"),
        (with("[delivery.retry]\nschedule = [\"5s\", \"6m\"]"), "delivery.retry.schedule", "the schedule ends at 6m, later than the budget 5m"),
        (with("[delivery.retry]\nbudget = \"1m\""), "delivery.retry.budget", "the default schedule ends at 4m 50s, later than the budget 1m"),
        (with("[delivery.retry]\nmax_jitter = \"x\""), "delivery.retry.max_jitter", "is not a duration"),
        // Retry policies that cannot keep SPEC §4's "five retries within five minutes".
        (with("[delivery.retry]\nschedule = [\"5s\", \"20s\", \"50s\", \"110s\", \"200s\"]\nbudget = \"4m\""), "delivery.retry.budget", "4m is under five minutes"),
        (with("[delivery.retry]\nschedule = [\"5s\", \"20s\", \"50s\", \"110s\", \"200s\"]\nbudget = \"4m\""), "delivery.retry.budget", "or set delivery.retry.allow_below_minimum = true"),
        (with("[delivery.retry]\nschedule = [\"5s\", \"20s\", \"50s\", \"110s\"]"), "delivery.retry.schedule", "gives 4 retries within five minutes"),
        (with("[delivery.retry]\nschedule = [\"5s\", \"20s\", \"50s\", \"110s\", \"6m\"]\nbudget = \"10m\""), "delivery.retry.schedule", "gives 4 retries within five minutes"),
        (with("[delivery.retry]\nschedule = [\"1m\", \"2m\", \"3m\", \"4m\", \"5m\"]\nmax_jitter = \"5s\"\nbudget = \"10m\""), "delivery.retry.schedule", "with max_jitter 5s gives 4 retries"),
        (with("[delivery.retry]\nallow_below_minimum = 1"), "delivery.retry.allow_below_minimum", "expected true or false"),
        (with("[delivery]\nmax_pending_records = 100\nmax_pending_per_organization = 200"), "delivery.max_pending_per_organization", "200 is above delivery.max_pending_records (100)"),
        (with("[delivery]\nmax_pending_records = 100\nmax_pending_per_organization = 200"), "delivery.max_pending_per_organization", "Example: max_pending_per_organization = 50"),
        (with("[delivery]\nmax_pending_per_organization = 5001"), "delivery.max_pending_per_organization", "above delivery.max_pending_records (5000)"),
        // librdkafka judges the pass-through properties.
        (with("[kafka.properties]\n\"session.timout.ms\" = \"6000\""), "kafka.properties.\"session.timout.ms\"", "librdkafka has no property \"session.timout.ms\""),
        (with("[kafka.properties]\n\"session.timeout.ms\" = \"soon\""), "kafka.properties.\"session.timeout.ms\"", "librdkafka refuses it"),
        (with("[kafka.properties]\n\"security.protocol\" = \"SASL_TLS\""), "kafka.properties.\"security.protocol\"", "librdkafka refuses it"),
        (with("[kafka.secret_properties]\n\"sasl.passwrd\" = { env = \"KAFKA_SASL_PASSWORD\" }"), "kafka.secret_properties.\"sasl.passwrd\"", "librdkafka has no property"),
        (with("[kafka.properties]\n\"enable.idempotence\" = true\n\"acks\" = \"1\""), "kafka.properties.\"enable.idempotence\"", "librdkafka cannot create a client"),
        // Organizations.
        (format!("{MIN}[organizations.acme]\nallow_http = true"), "organizations.acme.url", "required key is missing"),
        (format!("{MIN}[organizations]\nacme = \"https://x.example\""), "organizations.acme", "expected a table"),
        (format!("{MIN}[organizations.\"\"]\nurl = \"https://x.example\""), "organizations.\"\"", "must not be empty"),
        (url("ftp://x"), "organizations.acme.url", "\"ftp://x\" is not an http(s) URL"),
        (url("hooks.example.com"), "organizations.acme.url", "is not a valid URL"),
        (url("http://hooks.example.com/c"), "organizations.acme.url", "plain http; use https, or set organizations.acme.allow_http = true"),
        (url("https://user:pw@hooks.example.com/c"), "organizations.acme.url", "must not contain credentials"),
        (org("sigining_secret = 1"), "organizations.acme.sigining_secret", "did you mean `signing_secret`?"),
        (org("event_types = [\"user.update\"]"), "organizations.acme.event_types", "unknown event type \"user.update\""),
        (org("event_types = []"), "organizations.acme.event_types", "remove the key to receive all six"),
        (org("regulations = []"), "organizations.acme.regulations", "at least one regulation"),
        (org("regulations = [\"\"]"), "organizations.acme.regulations", "empty string"),
        (org("headers = { \"Content-Type\" = \"text/plain\" }"), "organizations.acme.headers.Content-Type", "set by the service"),
        (org("headers = { \"Webhook-Signature\" = \"v1,x\" }"), "organizations.acme.headers.Webhook-Signature", "set by the service"),
        (org("headers = { \"bad header\" = \"x\" }"), "organizations.acme.headers.\"bad header\"", "not a valid HTTP header name"),
        (org("headers = { \"X-A\" = \"a\\nb\" }"), "organizations.acme.headers.X-A", "not a valid HTTP header value"),
        (org("headers = { \"X-A\" = 1 }"), "organizations.acme.headers.X-A", "expected a string"),
        (org("headers = { \"X-Api-Key\" = \"k-123\" }"), "organizations.acme.headers.X-Api-Key", "carries a credential (its name contains \"key\")"),
        (org("headers = { \"X-Auth-Token\" = \"t\" }"), "organizations.acme.headers.X-Auth-Token", "use { env = \"VAR\" } or { file = \"/path\" }"),
        (org("headers = { \"X-A\" = { env = \"NOPE_UNSET\" } }"), "organizations.acme.headers.X-A", "environment variable NOPE_UNSET is not set"),
        (org("headers = { \"X-A\" = { vault = \"x\" } }"), "organizations.acme.headers.X-A.vault", "unknown key"),
        (org("headers = { \"X-A\" = { env = \"BAD_HEADER_SECRET\" } }"), "organizations.acme.headers.X-A", "the secret's value is not a valid HTTP header value"),
        (org("headers = \"X-A: 1\""), "organizations.acme.headers", "expected a table"),
        (org("signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\""), "organizations.acme.signing_secret", "use { env = \"VAR\" } or { file = \"/path\" }"),
        (org("signing_secret = 5"), "organizations.acme.signing_secret", "expected { env = \"VAR\" } or { file = \"/path\" }"),
        (org("signing_secret = { env = \"NOPE_UNSET\" }"), "organizations.acme.signing_secret", "environment variable NOPE_UNSET is not set"),
        (org("signing_secret = { env = \"EMPTY_SECRET\" }"), "organizations.acme.signing_secret", "environment variable EMPTY_SECRET is empty"),
        (org("signing_secret = { env = \"A\", file = \"b\" }"), "organizations.acme.signing_secret", "either `env` or `file`, not both"),
        (org("signing_secret = {}"), "organizations.acme.signing_secret", "expected { env = \"VAR\" }"),
        (org("signing_secret = { env = \"\" }"), "organizations.acme.signing_secret.env", "must not be empty"),
        (org("signing_secret = { vault = \"x\" }"), "organizations.acme.signing_secret.vault", "valid keys in [organizations.acme.signing_secret]: env, file"),
        (org("signing_secret = { env = \"BAD_SIGNING_SECRET\" }"), "organizations.acme.signing_secret", "not a Standard Webhooks signing secret"),
        (org("signing_secret = { file = \"/nonexistent/signing\" }"), "organizations.acme.signing_secret", "cannot read file /nonexistent/signing"),
        (org("allow_http = \"yes\""), "organizations.acme.allow_http", "expected true or false"),
        (org("allow_private_addresses = 1"), "organizations.acme.allow_private_addresses", "expected true or false"),
        (org("concurrency = 0"), "organizations.acme.concurrency", "at least 1"),
        (org("retry = { budget = \"1m\" }"), "organizations.acme.retry.budget", "delivery.retry.schedule ends at 4m 50s"),
        (org("retry = { schedule = [\"1s\", \"1s\"] }"), "organizations.acme.retry.schedule", "strictly increasing"),
        (org("retry = { tries = 3 }"), "organizations.acme.retry.tries", "valid keys"),
        (org("retry = { schedule = [\"1s\", \"2s\"], budget = \"5s\" }"), "organizations.acme.retry.budget", "or set organizations.acme.retry.allow_below_minimum = true"),
        (org("retry = { schedule = [\"1s\", \"2s\", \"3s\"] }"), "organizations.acme.retry.schedule", "gives 3 retries within five minutes"),
        // The opt-out of [delivery.retry] is not inherited by an organization's own `retry`.
        (format!("{MIN}[delivery.retry]\nschedule = [\"1s\"]\nbudget = \"5s\"\nallow_below_minimum = true\n[organizations.acme]\nurl = \"https://a.example\"\nretry = {{ max_jitter = \"0s\" }}"), "organizations.acme.retry.budget", "5s is under five minutes"),
        (org("[organizations.acme.oauth]\nclient_id = \"c\"\nclient_secret = { env = \"ACME_OAUTH_CLIENT_SECRET\" }"), "organizations.acme.oauth.token_url", "required key is missing"),
        (oauth("").replace("https://auth.example/t", "http://auth.example/t"), "organizations.acme.oauth.token_url", "set organizations.acme.allow_http = true"),
        (oauth("").replace("https://auth.example/t", "ftp://x"), "organizations.acme.oauth.token_url", "not an http(s) URL"),
        (oauth("").replace("{ env = \"ACME_OAUTH_CLIENT_SECRET\" }", "\"abc\""), "organizations.acme.oauth.client_secret", "must not be written in the config file"),
        (oauth("").replace("client_secret = { env = \"ACME_OAUTH_CLIENT_SECRET\" }\n", ""), "organizations.acme.oauth.client_secret", "required key is missing"),
        (oauth("").replace("client_id = \"c\"", "client_id = \"\""), "organizations.acme.oauth.client_id", "must not be empty"),
        (oauth("auth_style = \"header\""), "organizations.acme.oauth.auth_style", "not one of: basic, request_body"),
        (oauth("scope = \"\""), "organizations.acme.oauth.scope", "must not be empty"),
        (oauth("headers = { Authorization = \"Bearer x\" }"), "organizations.acme.oauth.headers.Authorization", "set by the service"),
        (oauth("headers = { \"X-Client-Secret\" = \"s\" }"), "organizations.acme.oauth.headers.X-Client-Secret", "carries a credential"),
        (oauth("grant_type = \"password\""), "organizations.acme.oauth.grant_type", "valid keys in [organizations.acme.oauth]"),
    ]
}

#[test]
fn each_rule_names_its_key_and_shows_an_example() {
    let mut failures = Vec::new();
    for (toml, key, fragment) in rows() {
        let message = error(&toml);
        let ok = message.starts_with(&format!("{key}: "))
            && message.contains(fragment)
            && message.contains(". Example: ");
        if !ok {
            failures.push(format!(
                "key {key}, fragment {fragment:?}\n  got: {message}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn example_in_message_is_the_keys_own() {
    let message = error(&super::org("").replace("https://hooks.acme.example/consent", "ftp://x"));
    assert_eq!(
        message,
        "organizations.acme.url: \"ftp://x\" is not an http(s) URL. \
         Example: url = \"https://hooks.example.com/consent\""
    );
}

#[test]
fn url_credentials_are_not_echoed() {
    let message = error(&super::org("").replace("https://", "https://user:pw-Zx81@"));
    assert!(!message.contains("pw-Zx81"), "{message}");
}

#[test]
fn syntax_errors_name_the_file() {
    let message = error("[kafka\nbrokers = 1");
    assert!(
        message.starts_with("config file <string> is not valid TOML"),
        "{message}"
    );
}

#[test]
fn zero_jitter_is_allowed() {
    let s = super::parse(&format!("{MIN}[delivery.retry]\nmax_jitter = \"0s\"")).unwrap();
    assert!(s.delivery.retry.max_jitter.is_zero());
}

#[test]
fn properties_accept_numbers_and_booleans_as_text() {
    let s = super::parse(&format!(
        "{MIN}[kafka.properties]\n\"session.timeout.ms\" = 45000\n\"enable.idempotence\" = true"
    ))
    .unwrap();
    assert_eq!(s.kafka.properties["session.timeout.ms"], "45000");
    assert_eq!(s.kafka.properties["enable.idempotence"], "true");
}
