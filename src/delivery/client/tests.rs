//! Attempts against real HTTP servers in the test process.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{AuthStyle, OrganizationSettings};
use crate::delivery::retry::{Decision, GiveUpReason, RetryPolicy};
use crate::delivery::testkit::{
    delivery_settings, event, organization, Receiver, Reply, TokenServer, CLIENT_SECRET,
};
use crate::webhook::SigningKey;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn deliverer() -> Deliverer {
    Deliverer::new(&delivery_settings(Duration::from_secs(5))).expect("deliverer")
}

async fn attempt_with(deliverer: &Deliverer, settings: OrganizationSettings) -> AttemptOutcome {
    let endpoint = deliverer.endpoint("acme", Arc::new(settings));
    deliverer.attempt(&endpoint, &event()).await.outcome
}

fn ok(code: u16) -> AttemptOutcome {
    AttemptOutcome::Status {
        code,
        retry_after: None,
    }
}

#[tokio::test]
async fn posts_the_body_with_standard_webhooks_headers_and_a_valid_signature() {
    let receiver = Receiver::start().await;
    let mut settings = organization(receiver.url());
    settings.signing_key = Some(SigningKey::parse(SECRET).expect("key"));
    settings.headers = vec![
        ("x-tenant".into(), "acme-eu".into()),
        ("webhook-id".into(), "spoofed".into()),
    ];
    let event = event();
    let deliverer = deliverer();
    let endpoint = deliverer.endpoint("acme", Arc::new(settings));

    let attempt = deliverer.attempt(&endpoint, &event).await;

    assert_eq!(attempt.outcome, ok(200));
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.body, event.body);
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("user-agent"), Some("consent-webhooks-test/1.0"));
    assert_eq!(got.header("webhook-id"), Some(event.id.as_str()));
    assert_eq!(got.headers.get_all("webhook-id").iter().count(), 1);
    assert_eq!(got.header("x-tenant"), Some("acme-eu"));
    assert_eq!(got.header("authorization"), None);
    // The receiver listens on a port that is not http's default: it is in the host header.
    let authority = receiver.url().authority().to_owned();
    assert!(authority.contains(':'), "{authority}");
    assert_eq!(got.header("host"), Some(authority.as_str()));
    assert_eq!(got.headers.get_all("host").iter().count(), 1);
    let timestamp: i64 = got
        .header("webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("numeric webhook-timestamp");
    assert!((timestamp - attempt.at.timestamp()).abs() <= 5);
    let key = SigningKey::parse(SECRET).expect("key");
    assert_eq!(
        got.header("webhook-signature"),
        Some(key.sign(&event.id, timestamp, &got.body).as_str())
    );
}

/// A signing-secret rotation: both signatures, space-separated, the current one first; a
/// receiver holding either secret verifies the request.
#[tokio::test]
async fn a_rotation_sends_both_signatures() {
    const PREVIOUS: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let receiver = Receiver::start().await;
    let mut settings = organization(receiver.url());
    settings.signing_key = Some(SigningKey::parse(SECRET).expect("key"));
    settings.previous_signing_key = Some(SigningKey::parse(PREVIOUS).expect("key"));
    assert_eq!(attempt_with(&deliverer(), settings).await, ok(200));
    let got = &receiver.received()[0];
    let id = got.header("webhook-id").unwrap();
    let timestamp: i64 = got.header("webhook-timestamp").unwrap().parse().unwrap();
    let header = got.header("webhook-signature").unwrap();
    let signatures: Vec<&str> = header.split(' ').collect();
    let expected = [SECRET, PREVIOUS].map(|secret| {
        SigningKey::parse(secret)
            .unwrap()
            .sign(id, timestamp, &got.body)
    });
    assert_eq!(
        signatures,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn no_signature_without_a_signing_key() {
    let receiver = Receiver::start().await;
    assert_eq!(
        attempt_with(&deliverer(), organization(receiver.url())).await,
        ok(200)
    );
    assert_eq!(receiver.received()[0].header("webhook-signature"), None);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start().await;
    receiver.then(Reply::status(302).header("location", "/hook"));
    let outcome = attempt_with(&deliverer(), organization(receiver.url())).await;
    assert_eq!(outcome, ok(302));
    assert_eq!(receiver.received().len(), 1);
    let policy = RetryPolicy::new(&crate::delivery::testkit::retry_settings());
    assert_eq!(
        policy.decide(&outcome, 0, Duration::ZERO, 0.0),
        Decision::GiveUp(GiveUpReason::PermanentStatus)
    );
}

#[tokio::test]
async fn retry_after_is_read_from_a_429() {
    let receiver = Receiver::start().await;
    receiver.then(Reply::status(429).header("retry-after", "7"));
    let outcome = attempt_with(&deliverer(), organization(receiver.url())).await;
    assert_eq!(
        outcome,
        AttemptOutcome::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(7))
        }
    );
}

#[tokio::test]
async fn a_large_response_body_is_read_only_up_to_the_cap() {
    let receiver = Receiver::start().await;
    receiver.then(Reply::status(200).body(vec![b'x'; 4 * 1024 * 1024]));
    receiver.then(Reply::status(500).body(vec![b'x'; 4 * 1024 * 1024]));
    let deliverer = deliverer();
    assert_eq!(
        attempt_with(&deliverer, organization(receiver.url())).await,
        ok(200)
    );
    assert_eq!(
        attempt_with(&deliverer, organization(receiver.url())).await,
        ok(500)
    );
}

#[tokio::test]
async fn an_endpoint_slower_than_the_request_timeout_times_out() {
    let receiver = Receiver::start().await;
    receiver.then(Reply::hang());
    let deliverer =
        Deliverer::new(&delivery_settings(Duration::from_millis(300))).expect("deliverer");
    let endpoint = deliverer.endpoint("acme", Arc::new(organization(receiver.url())));
    let attempt = deliverer.attempt(&endpoint, &event()).await;
    assert_eq!(
        attempt.outcome,
        AttemptOutcome::Failed(AttemptError::Timeout)
    );
    assert!(
        attempt.duration >= Duration::from_millis(300),
        "{:?}",
        attempt.duration
    );
    assert!(
        attempt.duration < deliverer.max_attempt_duration(),
        "{:?}",
        attempt.duration
    );
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = format!("http://{addr}/hook").parse().expect("url");
    assert_eq!(
        attempt_with(&deliverer(), organization(url)).await,
        AttemptOutcome::Failed(AttemptError::Connect)
    );
}

#[tokio::test]
async fn a_failed_tls_handshake_is_a_tls_error() {
    // A plain-HTTP server cannot answer a TLS ClientHello.
    let receiver = Receiver::start().await;
    let url = format!("https://{}/hook", receiver.addr)
        .parse()
        .expect("url");
    assert_eq!(
        attempt_with(&deliverer(), organization(url)).await,
        AttemptOutcome::Failed(AttemptError::Tls)
    );
}

#[tokio::test]
async fn an_unknown_host_is_a_dns_error() {
    let url = "http://no-such-host.invalid/hook".parse().expect("url");
    assert_eq!(
        attempt_with(&deliverer(), organization(url)).await,
        AttemptOutcome::Failed(AttemptError::Dns)
    );
}

#[tokio::test]
async fn loopback_is_refused_unless_allowed_by_literal_and_by_name() {
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    let deliverer = deliverer();
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
    ] {
        let mut settings = organization(url.parse().expect("url"));
        settings.allow_private_addresses = false;
        assert_eq!(
            attempt_with(&deliverer, settings).await,
            AttemptOutcome::Failed(AttemptError::AddressRefused),
            "{url}"
        );
    }
    assert!(receiver.received().is_empty());
    // The same endpoint with the development switch on is reached.
    let mut settings = organization(
        format!("http://localhost:{port}/hook")
            .parse()
            .expect("url"),
    );
    settings.allow_private_addresses = true;
    assert_eq!(attempt_with(&deliverer, settings).await, ok(200));
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn plain_http_is_refused_unless_allowed() {
    let receiver = Receiver::start().await;
    let mut settings = organization(receiver.url());
    settings.allow_http = false;
    assert_eq!(
        attempt_with(&deliverer(), settings).await,
        AttemptOutcome::Failed(AttemptError::AddressRefused)
    );
    assert!(receiver.received().is_empty());
}

async fn oauth_setup(
    style: AuthStyle,
    expires_in: Option<u64>,
) -> (Receiver, TokenServer, Deliverer, Endpoint) {
    let receiver = Receiver::start().await;
    let tokens = TokenServer::start(style, expires_in, Duration::from_millis(50)).await;
    let mut settings = organization(receiver.url());
    settings.oauth = Some(tokens.settings(
        Some("webhooks.write consent.read"),
        vec![("x-tenant".into(), "acme-eu".into())],
    ));
    let deliverer = deliverer();
    let endpoint = deliverer.endpoint("acme", Arc::new(settings));
    (receiver, tokens, deliverer, endpoint)
}

fn bearers(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("-").to_owned())
        .collect()
}

#[tokio::test]
async fn oauth_one_token_fetch_serves_many_attempts_even_concurrent_ones() {
    let (receiver, tokens, deliverer, endpoint) = oauth_setup(AuthStyle::Basic, Some(3600)).await;
    let event = event();
    let concurrent = (0..10).map(|_| deliverer.attempt(&endpoint, &event));
    for attempt in futures::future::join_all(concurrent).await {
        assert_eq!(attempt.outcome, ok(200));
    }
    for _ in 0..3 {
        assert_eq!(deliverer.attempt(&endpoint, &event).await.outcome, ok(200));
    }
    assert_eq!(tokens.requests().len(), 1);
    assert_eq!(bearers(&receiver), vec!["Bearer tok-1".to_owned(); 13]);
    let source = endpoint.token_source().expect("oauth endpoint");
    assert_eq!((source.fetches(), source.failures()), (1, 0));
}

#[tokio::test]
async fn oauth_token_request_is_rfc6749_client_credentials_with_scope_and_extra_headers() {
    for style in [AuthStyle::Basic, AuthStyle::RequestBody] {
        let (_receiver, tokens, deliverer, endpoint) = oauth_setup(style, Some(3600)).await;
        assert_eq!(
            deliverer.attempt(&endpoint, &event()).await.outcome,
            ok(200)
        );
        let requests = tokens.requests();
        assert_eq!(requests.len(), 1, "{style:?}");
        let request = &requests[0];
        assert_eq!(request.param("grant_type"), Some("client_credentials"));
        assert_eq!(request.param("scope"), Some("webhooks.write consent.read"));
        assert_eq!(
            request
                .headers
                .get("x-tenant")
                .and_then(|v| v.to_str().ok()),
            Some("acme-eu")
        );
        let basic = request.headers.get("authorization").is_some();
        let in_body = request.param("client_secret") == Some(CLIENT_SECRET);
        assert_eq!(
            (basic, in_body),
            (style == AuthStyle::Basic, style == AuthStyle::RequestBody)
        );
    }
}

#[tokio::test]
async fn oauth_a_token_too_short_lived_to_reuse_is_fetched_again() {
    let (receiver, tokens, deliverer, endpoint) = oauth_setup(AuthStyle::Basic, Some(1)).await;
    for _ in 0..2 {
        assert_eq!(
            deliverer.attempt(&endpoint, &event()).await.outcome,
            ok(200)
        );
    }
    assert_eq!(tokens.requests().len(), 2);
    assert_eq!(bearers(&receiver), ["Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test]
async fn oauth_401_gets_a_new_token_and_exactly_one_immediate_resend() {
    let (receiver, tokens, deliverer, endpoint) = oauth_setup(AuthStyle::Basic, Some(3600)).await;
    assert!(!deliverer.attempt(&endpoint, &event()).await.reauthorized);
    receiver.reject_token("tok-1");
    let attempt = deliverer.attempt(&endpoint, &event()).await;
    assert_eq!(attempt.outcome, ok(200));
    assert!(
        attempt.reauthorized,
        "the 401-then-re-send path is reported"
    );
    assert_eq!(
        bearers(&receiver),
        ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    );
    assert_eq!(tokens.requests().len(), 2);

    // Still 401 with the new token: the attempt reports it, after one re-send only.
    receiver.reject_all_tokens();
    let attempt = deliverer.attempt(&endpoint, &event()).await;
    assert_eq!(attempt.outcome, ok(401));
    assert!(attempt.reauthorized);
    assert_eq!(
        bearers(&receiver)[3..],
        ["Bearer tok-2".to_owned(), "Bearer tok-3".to_owned()]
    );
    assert_eq!(tokens.requests().len(), 3);
}

#[tokio::test]
async fn oauth_token_endpoint_failure_is_an_oauth_token_error_and_recovers() {
    let (receiver, tokens, deliverer, endpoint) = oauth_setup(AuthStyle::Basic, Some(3600)).await;
    tokens.fail_with(Some(500));
    assert_eq!(
        deliverer.attempt(&endpoint, &event()).await.outcome,
        AttemptOutcome::Failed(AttemptError::OAuthToken)
    );
    assert!(receiver.received().is_empty());
    let source = endpoint.token_source().expect("oauth endpoint");
    assert_eq!((source.fetches(), source.failures()), (1, 1));

    // Within the failure TTL the failure is shared: no second request.
    tokens.fail_with(None);
    assert_eq!(
        deliverer.attempt(&endpoint, &event()).await.outcome,
        AttemptOutcome::Failed(AttemptError::OAuthToken)
    );
    assert_eq!(tokens.requests().len(), 1);
    assert_eq!((source.fetches(), source.failures()), (1, 1));
}

#[tokio::test]
async fn oauth_a_shared_failure_expires_after_its_ttl() {
    let tokens = TokenServer::start(AuthStyle::Basic, Some(3600), Duration::ZERO).await;
    let source = TokenSource::new(
        &tokens.settings(None, Vec::new()),
        deliverer().permissive.tokens,
    )
    .with_url_policy(UrlPolicy {
        allow_private: true,
        allow_http: true,
    })
    .with_failure_ttl(Duration::from_millis(200));
    tokens.fail_with(Some(503));
    assert!(source.token().await.is_err());
    tokens.fail_with(None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        match source.token().await {
            Ok(token) => break token,
            Err(_) => {
                assert!(Instant::now() < deadline, "never recovered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(token.secret(), "tok-1");
    assert_eq!(
        tokens.requests().len(),
        2,
        "one failed request, one good one"
    );
}

/// Issue 7 point 5: behind a token endpoint that hangs past the request timeout, concurrent
/// deliveries used to fetch one after the other (holding their permits) and end as `timeout`.
/// The one fetch's failure is shared: one request, and every waiter ends `oauth_token`.
#[tokio::test]
async fn oauth_a_hanging_token_endpoint_fails_every_waiter_once_as_oauth_token() {
    let receiver = Receiver::start().await;
    let tokens = TokenServer::start(AuthStyle::Basic, Some(3600), Duration::from_secs(30)).await;
    let mut settings = organization(receiver.url());
    settings.oauth = Some(tokens.settings(None, Vec::new()));
    let deliverer = Deliverer::new(&delivery_settings(Duration::from_millis(400))).unwrap();
    let endpoint = deliverer.endpoint("acme", Arc::new(settings));
    let event = event();
    let concurrent = (0..6).map(|_| deliverer.attempt(&endpoint, &event));
    for attempt in futures::future::join_all(concurrent).await {
        assert_eq!(
            attempt.outcome,
            AttemptOutcome::Failed(AttemptError::OAuthToken)
        );
        assert!(attempt.duration < deliverer.max_attempt_duration());
    }
    assert_eq!(
        tokens.requests().len(),
        1,
        "one token request for all waiters"
    );
    let source = endpoint.token_source().expect("oauth endpoint");
    assert_eq!((source.fetches(), source.failures()), (1, 1));
    assert!(receiver.received().is_empty());
}

/// Issue 7 point 5: a token URL the address guard refuses ends the attempt `address_refused`
/// (dead-lettered like an endpoint URL), not `oauth_token` (retried for nothing).
#[tokio::test]
async fn oauth_a_token_url_refused_by_the_guard_is_address_refused() {
    let tokens = TokenServer::start(AuthStyle::Basic, Some(3600), Duration::ZERO).await;
    // A public literal endpoint (never contacted: the token comes first) and a loopback token
    // URL, under the strict address rules (plain http allowed, to reach the test server).
    let mut settings = organization("https://93.184.215.14/hook".parse().unwrap());
    settings.allow_private_addresses = false;
    settings.oauth = Some(tokens.settings(None, Vec::new()));
    let deliverer = deliverer();
    let endpoint = deliverer.endpoint("acme", Arc::new(settings));
    let attempt = deliverer.attempt(&endpoint, &event()).await;
    assert_eq!(
        attempt.outcome,
        AttemptOutcome::Failed(AttemptError::AddressRefused)
    );
    let policy = RetryPolicy::new(&crate::delivery::testkit::retry_settings());
    assert_eq!(
        policy.decide(&attempt.outcome, 0, Duration::from_secs(1), 0.0),
        Decision::GiveUp(GiveUpReason::AddressRefused)
    );
    assert!(tokens.requests().is_empty());
}

/// Issue 7 point 8: a token URL with a secret in its query string never shows in the error
/// text or the `Debug` output of the token source.
#[tokio::test]
async fn oauth_errors_and_debug_never_show_the_token_url_query() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let tokens = TokenServer::start(AuthStyle::Basic, Some(3600), Duration::ZERO).await;
    let settings = crate::config::OAuthSettings {
        token_url: format!("http://127.0.0.1:{port}/token?api_key=hunter2")
            .parse()
            .unwrap(),
        ..tokens.settings(None, Vec::new())
    };
    let source =
        TokenSource::new(&settings, deliverer().permissive.tokens).with_url_policy(UrlPolicy {
            allow_private: true,
            allow_http: true,
        });
    let error = source.token().await.expect_err("nothing listens there");
    let shown = format!("{error} {error:?} {source:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(error.attempt_error(), AttemptError::OAuthToken);
}

#[tokio::test]
async fn oauth_token_url_is_guarded_like_the_endpoint() {
    let tokens = TokenServer::start(AuthStyle::Basic, Some(3600), Duration::ZERO).await;
    let deliverer = deliverer();
    let settings = tokens.settings(None, Vec::new());
    let strict = TokenSource::new(&settings, deliverer.guarded.tokens.clone());
    let refused = strict.token().await.expect_err("refused");
    assert!(
        matches!(&refused, super::super::OAuthError::Shared(e) if matches!(**e, super::super::OAuthError::Guard(_))),
        "{refused:?}"
    );
    assert_eq!(refused.attempt_error(), AttemptError::AddressRefused);
    let by_name = TokenSource::new(
        &crate::config::OAuthSettings {
            token_url: format!("http://localhost:{}/token", tokens.addr.port())
                .parse()
                .expect("url"),
            ..settings.clone()
        },
        deliverer.guarded.tokens.clone(),
    )
    .with_url_policy(UrlPolicy {
        allow_private: false,
        allow_http: true,
    });
    let refused = by_name.token().await.expect_err("refused at connect time");
    assert_eq!(refused.attempt_error(), AttemptError::AddressRefused);
    assert!(tokens.requests().is_empty());
    assert_eq!(by_name.failures(), 1);
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output() {
    let (_receiver, _tokens, deliverer, endpoint) = oauth_setup(AuthStyle::Basic, Some(3600)).await;
    let token = endpoint
        .token_source()
        .expect("oauth endpoint")
        .token()
        .await
        .expect("token");
    let mut settings = (*endpoint.settings).clone();
    settings.signing_key = Some(SigningKey::parse(SECRET).expect("key"));
    let shown = format!("{settings:?} {endpoint:?} {token:?} {deliverer:?}");
    for secret in [CLIENT_SECRET, "tok-1", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
}

/// A token response that does not parse is reported by where and how it failed, never by the
/// value serde would quote (it may be the token).
#[tokio::test]
async fn oauth_unreadable_token_response_never_quotes_its_values() {
    let tokens = Receiver::start().await;
    tokens.then(
        Reply::status(200)
            .header("content-type", "application/json")
            .body(
                br#"{"access_token":987654321012,"token_type":"bearer","expires_in":60}"#.to_vec(),
            ),
    );
    let stand_in = TokenServer::start(AuthStyle::Basic, Some(3600), Duration::ZERO).await;
    let mut oauth = stand_in.settings(None, vec![]);
    oauth.token_url = tokens.url();
    let source = crate::delivery::TokenSource::new(&oauth, reqwest::Client::new()).with_url_policy(
        crate::delivery::UrlPolicy {
            allow_private: true,
            allow_http: true,
        },
    );
    let error = source
        .token()
        .await
        .expect_err("a number is not a token")
        .to_string();
    assert!(!error.contains("987654321012"), "{error}");
    assert!(error.contains("access_token"), "names the field: {error}");
}
