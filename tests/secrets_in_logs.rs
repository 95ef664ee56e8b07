//! Secrets never reach the logs: a delivery with OAuth and a signing secret, every crate
//! logging at debug level, and not one secret, token, signing key or signature in the output.

mod support;

use std::time::Duration;

use base64::Engine;
use support::kafka;
use support::oauth_server::OAuthServer;
use support::receiver::Receiver;
use support::records;
use support::service::{organization, Service, Topics};

const CLIENT_SECRET: &str = "oauth-client-secret-Zx81q";
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_token_or_signature_in_debug_logs() {
    let topics = Topics::create(1).await;
    let receiver = Receiver::start(200).await;
    let oauth = OAuthServer::start("client-1", CLIENT_SECRET, Some(3600)).await;
    let config = topics.config("")
        + &organization("acme", &receiver.url, "signing_secret = { env = \"TEST_SIGNING\" }")
        + &format!(
            "\n[organizations.acme.oauth]\ntoken_url = \"{}\"\nclient_id = \"client-1\"\nclient_secret = {{ env = \"TEST_CLIENT_SECRET\" }}\n",
            oauth.token_url
        );
    let service = Service::start(
        &config,
        &[
            ("TEST_SIGNING", SIGNING_SECRET),
            ("TEST_CLIENT_SECRET", CLIENT_SECRET),
            ("RUST_LOG", "debug"),
        ],
    );
    let events = records::users_created("acme", 5);
    kafka::produce(&topics.input, &events).await;
    receiver
        .wait_until(Duration::from_secs(60), "5 deliveries", |got| {
            got.len() >= 5
        })
        .await;
    service.wait_log("delivered", Duration::from_secs(10));

    let received = receiver.received();
    let token = received[0].bearer().expect("a bearer token").to_owned();
    let key = SIGNING_SECRET.trim_start_matches("whsec_");
    let raw_key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    let mut forbidden = vec![
        CLIENT_SECRET.to_owned(),
        SIGNING_SECRET.to_owned(),
        key.to_owned(),
        String::from_utf8_lossy(&raw_key).into_owned(),
        token.clone(),
        base64::engine::general_purpose::STANDARD.encode(format!("client-1:{CLIENT_SECRET}")),
    ];
    for r in &received {
        let signature = r.header("webhook-signature").unwrap();
        forbidden.push(signature.trim_start_matches("v1,").to_owned());
    }
    let logs = service.logs();
    assert!(logs.lines().count() > 20, "debug logging was on:\n{logs}");
    assert!(logs.contains("\"level\":\"DEBUG\""), "debug lines present");
    for secret in &forbidden {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the log: {secret:?}"
        );
    }
}
