//! `consent-webhooks run` delivering to endpoints protected by OAuth 2.0 client credentials
//! (SPEC §4), against a real Kafka broker, a real token endpoint (RFC 6749 §4.4) and real
//! receivers: token reuse, refresh before expiry, a rejected token replaced at once, and a token
//! endpoint that is down.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine;
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use support::kafka;
use support::oauth_server::{OAuthServer, TokenRequest};
use support::receiver::{Received, Receiver};
use support::records;
use support::schemas::assert_dead_letter;
use support::service::{organization, Service, Topics};

const CLIENT_ID: &str = "consent-webhooks";
/// Characters that RFC 6749 §2.3.1 says to form-urlencode before Basic encoding (`:` included).
const CLIENT_SECRET: &str = "cs_9Zq:/+ %x=VeRy-SeCrEt&7781";
const SECRET_ENV: &str = "TEST_OAUTH_CLIENT_SECRET";
const SCOPE: &str = "webhooks:write";
const SHORT_RETRY: &str = r#"retry = { schedule = ["100ms", "200ms", "300ms", "400ms", "500ms"], max_jitter = "0s", budget = "5s", allow_below_minimum = true }"#;

/// An organization whose endpoint takes tokens from `oauth`.
fn oauth_organization(id: &str, receiver: &Receiver, oauth: &OAuthServer, extra: &str) -> String {
    organization(id, &receiver.url, extra)
        + &format!(
            "\n[organizations.{id}.oauth]\ntoken_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = {{ env = \"{SECRET_ENV}\" }}\nscope = \"{SCOPE}\"\nauth_style = \"basic\"\n",
            oauth.token_url
        )
}

fn start(config: &str) -> Service {
    Service::start(config, &[(SECRET_ENV, CLIENT_SECRET)])
}

/// Every token request was a client-credentials grant with the right client authentication.
fn assert_well_formed(requests: &[TokenRequest]) {
    for r in requests {
        assert_eq!(
            r.basic,
            Some((CLIENT_ID.to_owned(), CLIENT_SECRET.to_owned())),
            "HTTP Basic client authentication, RFC 6749 §2.3.1 encoding"
        );
        assert_eq!(r.param("grant_type"), Some("client_credentials"));
        assert_eq!(r.param("scope"), Some(SCOPE));
        assert_eq!(
            r.param("client_secret"),
            None,
            "the secret is not in the body"
        );
    }
}

/// Every form in which the client secret could leak.
fn secret_forms() -> Vec<String> {
    let urlencoded = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect()
    };
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        urlencoded(CLIENT_ID),
        urlencoded(CLIENT_SECRET)
    ));
    vec![
        CLIENT_SECRET.to_owned(),
        urlencoded(CLIENT_SECRET),
        "VeRy-SeCrEt".to_owned(),
        basic,
    ]
}

fn requests_per_event(got: &[Received]) -> BTreeMap<String, Vec<Received>> {
    let mut out: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for r in got {
        out.entry(r.event_id()).or_default().push(r.clone());
    }
    out
}

/// One token serves many deliveries: 20 events, one token request, every POST carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_serves_many_deliveries() {
    const N: usize = 20;
    let topics = Topics::create(3).await;
    let oauth = OAuthServer::start(CLIENT_ID, CLIENT_SECRET, Some(3600)).await;
    let receiver = Receiver::start(200).await;
    let config = topics.config("") + &oauth_organization("secure", &receiver, &oauth, "");
    let service = start(&config);
    let input = records::users_created("secure", N);
    kafka::produce(&topics.input, &input).await;

    let want: BTreeSet<String> = records::events_by_id(&input).into_keys().collect();
    receiver
        .wait_until(Duration::from_secs(30), "every event", |got| got.len() >= N)
        .await;
    let got = receiver.received();
    assert_eq!(got.len(), N, "one request per event");
    assert_eq!(
        got.iter().map(Received::event_id).collect::<BTreeSet<_>>(),
        want
    );
    for r in &got {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("authorization"), Some("Bearer tok-1"));
    }
    let requests = oauth.requests();
    assert_eq!(requests.len(), 1, "one token for all deliveries");
    assert_well_formed(&requests);
    let logs = service.logs();
    assert!(!logs.contains("tok-1"), "the token is never logged");
    for secret in secret_forms() {
        assert!(!logs.contains(&secret), "the client secret is never logged");
    }
}

/// A token is reused until shortly before it expires (margin: 10% of its lifetime, at least
/// 1 s), then a new one is fetched; no request ever carries an expired token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_refreshed_before_it_expires() {
    const EXPIRES_IN: Duration = Duration::from_secs(4);
    // 10% of 4 s is under the 1 s floor: reused for 3 s.
    const REUSED_FOR: Duration = Duration::from_secs(3);
    let topics = Topics::create(1).await;
    let oauth = OAuthServer::start(CLIENT_ID, CLIENT_SECRET, Some(EXPIRES_IN.as_secs())).await;
    let receiver = Receiver::start(200).await;
    let config = topics.config("") + &oauth_organization("secure", &receiver, &oauth, "");
    let _service = start(&config);

    // A steady trickle of events until a delivery carries a second token.
    let producer = kafka::producer();
    let mut produced = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    let end = Instant::now() + Duration::from_secs(20);
    while !receiver
        .received()
        .iter()
        .any(|r| r.bearer() == Some("tok-2"))
    {
        assert!(
            Instant::now() < end,
            "no delivery with a second token within 20 s; {} token requests",
            oauth.count()
        );
        ticks.tick().await;
        let (key, value) = records::user_created(
            &format!("chg-refresh-{produced}"),
            "secure",
            &format!("user-{produced}"),
        );
        producer
            .send(
                FutureRecord::to(&topics.input).key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("acknowledged");
        produced += 1;
    }
    receiver
        .wait_until(Duration::from_secs(30), "every event", |got| {
            got.len() >= produced
        })
        .await;

    let requests = oauth.requests();
    assert_well_formed(&requests);
    assert_eq!(
        requests
            .iter()
            .filter_map(|r| r.issued.as_deref())
            .collect::<Vec<_>>(),
        ["tok-1", "tok-2"],
        "exactly one refresh"
    );
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= REUSED_FOR - Duration::from_millis(200) && gap < EXPIRES_IN,
        "refreshed {gap:?} after the first token: reused until the margin, before expiry"
    );
    let got = receiver.received();
    assert_eq!(got.len(), produced, "one request per event, all delivered");
    for r in &got {
        assert_eq!(r.status, 200);
        let issued = match r.bearer() {
            Some("tok-1") => requests[0].at,
            Some("tok-2") => requests[1].at,
            other => panic!("unexpected authorization {other:?}"),
        };
        assert!(
            r.at - issued < EXPIRES_IN,
            "a token used {:?} after it was issued, past its expires_in",
            r.at - issued
        );
    }
    let with_first: Vec<Instant> = got
        .iter()
        .filter(|r| r.bearer() == Some("tok-1"))
        .map(|r| r.at)
        .collect();
    let span = *with_first.iter().max().unwrap() - *with_first.iter().min().unwrap();
    assert!(
        span >= Duration::from_secs(2),
        "the first token served deliveries spread over {span:?}"
    );
}

/// A 401 means the token was revoked early: the delivery fetches a new token and re-sends at
/// once, without waiting for the retry schedule (whose first retry is 30 s away here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_is_replaced_and_resent_at_once() {
    const N: usize = 5;
    let topics = Topics::create(1).await;
    let oauth = OAuthServer::start(CLIENT_ID, CLIENT_SECRET, Some(3600)).await;
    let receiver = Receiver::start(200).await;
    receiver.reject_bearer("tok-1");
    let config = topics.config("")
        + &oauth_organization(
            "secure",
            &receiver,
            &oauth,
            r#"retry = { schedule = ["30s", "40s", "50s", "60s", "70s"], max_jitter = "0s", budget = "80s", allow_below_minimum = true }"#,
        );
    let service = start(&config);
    let input = records::users_created("secure", N);
    kafka::produce(&topics.input, &input).await;

    let want: BTreeSet<String> = records::events_by_id(&input).into_keys().collect();
    receiver
        .wait_until(
            Duration::from_secs(10),
            "every event delivered, well before the first scheduled retry (30 s)",
            |_| {
                receiver
                    .delivered()
                    .iter()
                    .map(Received::event_id)
                    .collect::<BTreeSet<_>>()
                    == want
            },
        )
        .await;

    let requests = oauth.requests();
    assert_well_formed(&requests);
    assert_eq!(
        requests
            .iter()
            .filter_map(|r| r.issued.as_deref())
            .collect::<Vec<_>>(),
        ["tok-1", "tok-2"],
        "one new token, shared by every delivery that got a 401"
    );
    let got = receiver.received();
    assert!(
        got.iter().any(|r| r.status == 401),
        "the first token was used and rejected"
    );
    for (id, requests) in requests_per_event(&got) {
        let tokens: Vec<(Option<&str>, u16)> =
            requests.iter().map(|r| (r.bearer(), r.status)).collect();
        match tokens.as_slice() {
            [(Some("tok-2"), 200)] => {}
            [(Some("tok-1"), 401), (Some("tok-2"), 200)] => {
                let resent = requests[1].at - requests[0].at;
                assert!(
                    resent < Duration::from_secs(2),
                    "{id}: re-sent {resent:?} after the 401, not on the retry schedule"
                );
            }
            other => panic!("{id}: expected one re-send with a new token, got {other:?}"),
        }
    }
    assert_eq!(
        records::record_count(&topics.dead_letter).await,
        0,
        "nothing dead-lettered"
    );
    let logs = service.logs();
    assert!(
        !logs.contains("tok-1") && !logs.contains("tok-2"),
        "tokens are never logged"
    );
}

/// The token endpoint answers 500: every attempt fails with `oauth_token`, the schedule runs
/// out, the events are dead-lettered; the client secret is in neither the dead-letter records
/// nor the service's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_dead_letters_without_leaking_the_secret() {
    const N: usize = 2;
    const ATTEMPTS: usize = 6;
    let topics = Topics::create(1).await;
    let oauth = OAuthServer::start(CLIENT_ID, CLIENT_SECRET, Some(3600)).await;
    oauth.fail(true);
    let receiver = Receiver::start(200).await;
    let config = topics.config("") + &oauth_organization("secure", &receiver, &oauth, SHORT_RETRY);
    let service = start(&config);
    let input = records::users_created("secure", N);
    kafka::produce(&topics.input, &input).await;

    let dead = kafka::consume(&topics.dead_letter, N, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), N, "every event dead-lettered");
    let coordinates = records::coordinates_by_key(&topics.input, N).await;
    let events = records::events_by_id(&input);
    let mut ids = BTreeSet::new();
    for record in &dead {
        let value: Value = records::json_value(record);
        assert_dead_letter(&value);
        assert_eq!(record.key.as_deref(), Some(&b"secure"[..]));
        assert_eq!(value["reason"], "exhausted");
        assert_eq!(value["endpoint"]["url"], receiver.url.as_str());
        let id = value["event"]["id"].as_str().unwrap().to_owned();
        let event = &events[&id];
        let expected: Value = serde_json::from_slice(&event.body).unwrap();
        assert_eq!(value["event"], expected);
        let key = input
            .iter()
            .find(|(_, v)| records::event_of(v).id == id)
            .map(|(k, _)| k)
            .unwrap();
        assert_eq!(value["source"]["offset"], coordinates[key].offset);
        assert_eq!(value["source"]["change_id"], event.change_id.as_str());
        assert_eq!(
            record.header("__connect.errors.offset"),
            Some(coordinates[key].offset.to_string())
        );
        let attempts = value["attempts"].as_array().unwrap();
        assert_eq!(
            attempts.len(),
            ATTEMPTS,
            "first attempt + 5 retries: {value}"
        );
        for attempt in attempts {
            assert_eq!(attempt["status"], Value::Null, "{attempt}");
            assert_eq!(attempt["error"], "oauth_token", "{attempt}");
        }
        let raw = String::from_utf8_lossy(&record.value);
        for secret in secret_forms() {
            assert!(!raw.contains(&secret), "secret in a dead-letter record");
            for (name, header) in &record.headers {
                assert!(
                    !String::from_utf8_lossy(header).contains(&secret),
                    "secret in dead-letter header {name}"
                );
            }
        }
        ids.insert(id);
    }
    assert_eq!(ids, events.keys().cloned().collect::<BTreeSet<_>>());
    assert!(receiver.received().is_empty(), "no POST without a token");
    let requests = oauth.requests();
    // A failure is shared with every attempt that needs a token within 5 s (the whole 0.5 s
    // schedule here): one request, not one per attempt (a second only on a very slow machine).
    assert!(
        (1..=2).contains(&requests.len()),
        "{} token requests for {} attempts",
        requests.len(),
        N * ATTEMPTS
    );
    assert!(requests.iter().all(|r| r.status == 500));
    assert_well_formed(&requests);

    let logs = service.logs();
    assert!(
        logs.contains("OAuth token fetch failed"),
        "the failures are logged"
    );
    for secret in secret_forms() {
        assert!(!logs.contains(&secret), "the client secret is never logged");
    }
}
