//! Issue 10, live organizations: the admin API, the `organizations` command, signing-secret
//! rotation and secret files refreshed in place, on the real broker with real HTTP receivers and
//! the service as a child process.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::admin::{endpoint, Api, TOKEN};
use support::command::{self, Run};
use support::kafka;
use support::receiver::{Received, Receiver};
use support::records;
use support::service::{
    fresh_registry, local_address, organization, registry_sections, Service, Topics,
};

/// A Standard Webhooks secret: `whsec_` + base64 of 32 bytes derived from `seed`.
fn secret(seed: &str) -> String {
    let mut bytes = [0u8; 32];
    for (i, b) in seed.bytes().cycle().take(32).enumerate() {
        bytes[i] = b.wrapping_add(i as u8);
    }
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Whether one `v1,` entry of the request's `webhook-signature` is the HMAC-SHA256 of
/// `{webhook-id}.{webhook-timestamp}.{body}` under `secret` (its base64-decoded key), and the
/// timestamp is within the five minutes a Standard Webhooks receiver tolerates.
fn verifies(r: &Received, secret: &str) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = r.header("webhook-id").expect("a webhook-id header");
    let timestamp = r
        .header("webhook-timestamp")
        .expect("a webhook-timestamp header");
    let seconds: i64 = timestamp.parse().expect("a numeric timestamp");
    assert!(
        (Utc::now().timestamp() - seconds).abs() <= 300,
        "webhook-timestamp {timestamp} is not current"
    );
    let Some(header) = r.header("webhook-signature") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&r.body);
    let expected = engine.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|signature| signature == expected)
}

/// The `webhook-signature` entries of a request.
fn signature_entries(r: &Received) -> Vec<String> {
    r.header("webhook-signature")
        .unwrap_or_default()
        .split(' ')
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Waits until `receiver` got every event of `records` with a 2xx.
async fn wait_delivered(receiver: &Receiver, records: &[(String, Vec<u8>)], what: &str) {
    receiver
        .wait_delivered(&records::ids(records), Duration::from_secs(30), what)
        .await;
}

/// Writes `config` to a file of `dir`, for the commands that take `--config`.
fn config_file(dir: &Path, config: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Replaces `path`'s content the way Kubernetes updates a mounted Secret: the new content is
/// written aside, then renamed over the old file (a reader sees the old or the new, never half).
fn replace_atomically(path: &Path, content: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, content).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The admin API
// ---------------------------------------------------------------------------------------------

/// Every request needs the token; invalid values are refused with `check-config`'s key and
/// example; puts are idempotent; reads show secret references, never values (nor does the log);
/// the list pages in id order; deletes are idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_validates_like_check_config_and_never_echoes_secrets() {
    let topics = Topics::create(1).await;
    let receiver = Receiver::start(200).await;
    let admin = local_address();
    let (_, sections) = fresh_registry(Some(admin), None).await;
    let signing = secret("api-signing");
    let pasted = secret("pasted-in-clear");
    let service = Service::start_with_registry(
        &(topics.config("") + &sections),
        &[("SIGNING", signing.as_str())],
    );
    let api = Api::new(admin);
    let valid = endpoint(
        &receiver.url,
        json!({ "signing_secret": { "env": "SIGNING" }, "concurrency": 4 }),
    );

    // No token, a wrong token: 401, and nothing written.
    for token in [None, Some("not-the-token"), Some("")] {
        let (status, body) = api
            .put_raw("acme", "application/json", valid.to_string(), token)
            .await;
        assert_eq!(status, 401, "token {token:?}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let unauthorized = reqwest::Client::new()
        .get(format!("http://{admin}/v1/organizations"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unauthorized.status().as_u16(),
        401,
        "a read needs the token too"
    );
    let wrong = reqwest::Client::new()
        .delete(format!("http://{admin}/v1/organizations/acme"))
        .bearer_auth(format!("{TOKEN}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(
        api.get("acme").await.0,
        404,
        "nothing written without the token"
    );

    // Invalid values: 400 with the key path and an example, the same checks as the file.
    let invalid = [
        (
            endpoint("ftp://x", json!({})),
            "organizations.acme.url",
            "ftp",
        ),
        (
            endpoint(&receiver.url, json!({ "concurency": 4 })),
            "organizations.acme.concurency",
            "concurrency",
        ),
        (
            endpoint(&receiver.url, json!({ "signing_secret": pasted })),
            "organizations.acme.signing_secret",
            "env",
        ),
        (
            endpoint(
                &receiver.url,
                json!({ "signing_secret": { "env": "NOT_SET_ANYWHERE" } }),
            ),
            "organizations.acme.signing_secret",
            "NOT_SET_ANYWHERE",
        ),
        (
            json!({ "url": "https://hooks.example.com/consent", "allow_http": "yes" }),
            "organizations.acme.allow_http",
            "allow_http",
        ),
    ];
    for (value, key, mention) in &invalid {
        let (status, body) = api.put("acme", value).await;
        assert_eq!(status, 400, "{value}: {body}");
        assert_eq!(body["key"], *key, "{value}: {body}");
        assert!(
            body["example"]
                .as_str()
                .is_some_and(|e| !e.trim().is_empty()),
            "{value}: an example: {body}"
        );
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(key) && error.contains(mention),
            "{value}: the error names the key and the problem: {error}"
        );
        assert!(
            !body.to_string().contains(&pasted),
            "a secret given in clear is not echoed: {body}"
        );
    }
    // Neither a JSON object nor TOML text.
    let (status, body) = api
        .put_raw("acme", "application/json", "[1, 2]".into(), Some(TOKEN))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("organizations.acme"));
    assert_eq!(
        api.get("acme").await.0,
        404,
        "an invalid value writes nothing"
    );

    // Valid: created, then the same value again changes nothing, in JSON or as TOML text.
    let (status, body) = api.put("acme", &valid).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["changed"], true, "{body}");
    assert_eq!(body["id"], "acme");
    let (status, body) = api.put("acme", &valid).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changed"], false,
        "the same value again writes nothing: {body}"
    );
    let toml = format!(
        "url = \"{}\"\nallow_http = true\nallow_private_addresses = true\nconcurrency = 4\nsigning_secret = {{ env = \"SIGNING\" }}\n",
        receiver.url
    );
    let (status, body) = api
        .put_raw("acme", "application/toml", toml, Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changed"], false,
        "TOML text of the same settings: {body}"
    );

    // Read back: the reference as written, never the value.
    let (status, acme) = api.get("acme").await;
    assert_eq!(status, 200, "{acme}");
    assert_eq!(acme["id"], "acme");
    assert_eq!(acme["organization"], valid, "the value as stored");
    assert_eq!(
        acme["organization"]["signing_secret"],
        json!({ "env": "SIGNING" })
    );
    assert!(acme["error"].is_null(), "{acme}");
    assert!(acme["offset"].as_i64().is_some_and(|o| o >= 0), "{acme}");
    let registered_at = acme["registered_at"].as_str().expect("registered_at");
    let registered_at = chrono::DateTime::parse_from_rfc3339(registered_at).unwrap();
    assert!(
        (Utc::now() - registered_at.with_timezone(&Utc))
            .num_seconds()
            .abs()
            < 120,
        "{acme}"
    );

    // Four more, then the list in pages of two walks all five in id order.
    for id in ["delta", "bravo", "echo", "charlie"] {
        let (status, body) = api.put(id, &endpoint(&receiver.url, json!({}))).await;
        assert_eq!(status, 201, "{id}: {body}");
    }
    let mut walked = Vec::new();
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    let mut bodies = vec![acme.to_string()];
    loop {
        let (status, page) = api.list(2, after.as_deref()).await;
        assert_eq!(status, 200, "{page}");
        bodies.push(page.to_string());
        let listed: Vec<String> = page["organizations"]
            .as_array()
            .expect("organizations")
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(listed.len() <= 2, "{page}");
        pages.push(listed.len());
        walked.extend(listed.clone());
        match &page["next"] {
            Value::Null => break,
            Value::String(next) => {
                assert_eq!(
                    Some(next),
                    listed.last(),
                    "the cursor is the page's last id"
                );
                after = Some(next.clone());
            }
            other => panic!("next is an id or null: {other}"),
        }
        assert!(pages.len() <= 5, "the paging ends: {walked:?}");
    }
    assert_eq!(pages, [2, 2, 1], "{walked:?}");
    assert_eq!(walked, ["acme", "bravo", "charlie", "delta", "echo"]);
    let (_, whole) = api.list(100, None).await;
    assert_eq!(whole["organizations"].as_array().unwrap().len(), 5);
    assert!(whole["next"].is_null(), "{whole}");
    bodies.push(whole.to_string());
    let listed_acme = whole["organizations"][0].clone();
    assert_eq!(
        listed_acme["organization"]["signing_secret"],
        json!({ "env": "SIGNING" })
    );

    // Deletes: removed, then nothing to remove; read afterwards: 404.
    let (status, body) = api.delete("acme").await;
    assert_eq!(
        (status, body["removed"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (status, body) = api.delete("acme").await;
    assert_eq!(
        (status, body["removed"].clone()),
        (200, json!(false)),
        "{body}"
    );
    let (status, body) = api.get("acme").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("acme")));
    let (_, rest) = api.list(100, None).await;
    assert_eq!(rest["organizations"].as_array().unwrap().len(), 4, "{rest}");

    // No secret value anywhere: API bodies and the service's log.
    service.wait_log(
        "organization deleted through the admin API",
        Duration::from_secs(10),
    );
    let logs = service.logs();
    assert!(
        logs.contains("organization put through the admin API"),
        "{logs}"
    );
    for text in bodies.iter().chain([&logs]) {
        for secret in [&signing, &pasted] {
            let bare = secret.trim_start_matches("whsec_");
            assert!(
                !text.contains(secret.as_str()) && !text.contains(bare),
                "a secret value leaked: {text}"
            );
        }
    }
}

/// `POST /v1/organizations/{id}/test`: a `ping` reaches the endpoint, signed like any event; an
/// unknown organization is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_reaches_the_endpoint_signed() {
    let topics = Topics::create(1).await;
    let receiver = Receiver::start(200).await;
    let failing = Receiver::start(503).await;
    let admin = local_address();
    let (_, sections) = fresh_registry(Some(admin), None).await;
    let signing = secret("ping-signing");
    let _service = Service::start_with_registry(
        &(topics.config("") + &sections),
        &[("SIGNING", signing.as_str())],
    );
    let api = Api::new(admin);
    let value = endpoint(
        &receiver.url,
        json!({ "signing_secret": { "env": "SIGNING" } }),
    );
    assert_eq!(api.put("acme", &value).await.0, 201);

    let (status, answer) = api.test("acme").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], true, "{answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    assert!(
        answer["outcome"].as_str().is_some_and(|o| !o.is_empty()),
        "{answer}"
    );
    assert!(answer["duration_ms"].as_u64().is_some(), "{answer}");
    let webhook_id = answer["webhook_id"]
        .as_str()
        .expect("webhook_id")
        .to_owned();
    assert!(webhook_id.starts_with("ping_"), "{answer}");

    let received = receiver.received();
    assert_eq!(
        received.len(),
        1,
        "one request, answered before the API answers"
    );
    let ping = &received[0];
    let body = ping.json();
    assert_eq!(body["type"], "ping", "{body}");
    assert_eq!(body["id"], webhook_id.as_str(), "{body}");
    assert_eq!(body["organization_id"], "acme", "{body}");
    assert_eq!(ping.header("webhook-id"), Some(webhook_id.as_str()));
    assert_eq!(ping.header("content-type"), Some("application/json"));
    assert_eq!(
        signature_entries(ping).len(),
        1,
        "one secret, one signature"
    );
    assert!(verifies(ping, &signing), "the ping's signature verifies");
    assert!(
        !verifies(ping, &secret("another")),
        "the check discriminates"
    );

    // A second ping has its own id.
    let (_, again) = api.test("acme").await;
    assert_ne!(again["webhook_id"], answer["webhook_id"]);
    assert_eq!(receiver.received().len(), 2);

    // An endpoint that refuses: reported, not delivered.
    assert_eq!(
        api.put("globex", &endpoint(&failing.url, json!({})))
            .await
            .0,
        201
    );
    let (status, refused) = api.test("globex").await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["delivered"], false, "{refused}");
    assert_eq!(refused["status"], 503, "{refused}");
    assert_eq!(failing.received().len(), 1, "one attempt, no retries");

    let (status, body) = api.test("nobody").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("nobody")));
}

// ---------------------------------------------------------------------------------------------
// Signing secrets
// ---------------------------------------------------------------------------------------------

/// During a rotation every request carries both signatures, and a receiver holding either
/// secret alone verifies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_with_two_signing_secrets_verifies_with_either() {
    let topics = Topics::create(2).await;
    let receiver = Receiver::start(200).await;
    let admin = local_address();
    let (_, sections) = fresh_registry(Some(admin), None).await;
    let old = secret("rotation-old");
    let new = secret("rotation-new");
    // The retiring secret from a file, the new one from the environment: both kinds of reference.
    let dir = tempfile::tempdir().unwrap();
    let old_file = dir.path().join("previous-signing");
    std::fs::write(&old_file, format!("{old}\n")).unwrap();
    let _service = Service::start_with_registry(
        &(topics.config("") + &sections),
        &[("NEW_SIGNING", new.as_str())],
    );
    let api = Api::new(admin);
    let value = endpoint(
        &receiver.url,
        json!({
            "signing_secret": { "env": "NEW_SIGNING" },
            "previous_signing_secret": { "file": old_file.display().to_string() },
        }),
    );
    let (status, body) = api.put("acme", &value).await;
    assert_eq!(status, 201, "{body}");

    let input = records::users_created("acme", 20);
    kafka::produce(&topics.input, &input).await;
    wait_delivered(&receiver, &input, "every event delivered").await;

    let received = receiver.received();
    assert!(received.len() >= 20);
    let stranger = secret("rotation-stranger");
    for r in &received {
        let id = r.event_id();
        assert_eq!(signature_entries(r).len(), 2, "{id}: two signatures");
        assert!(
            verifies(r, &new),
            "{id}: verifies with the new secret alone"
        );
        assert!(
            verifies(r, &old),
            "{id}: verifies with the previous secret alone"
        );
        assert!(!verifies(r, &stranger), "{id}: the check discriminates");
    }

    // The rotation done: only the new secret signs.
    let value = endpoint(
        &receiver.url,
        json!({ "signing_secret": { "env": "NEW_SIGNING" } }),
    );
    let (status, body) = api.put("acme", &value).await;
    assert_eq!(
        (status, body["changed"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let later = (0..5)
        .map(|i| {
            records::user_created(&format!("chg-rotated-{i}"), "acme", &format!("rotated-{i}"))
        })
        .collect::<Vec<_>>();
    kafka::produce(&topics.input, &later).await;
    wait_delivered(&receiver, &later, "the events after the rotation").await;
    let want = records::ids(&later);
    for r in receiver
        .received()
        .iter()
        .filter(|r| want.contains(&r.event_id()))
    {
        assert_eq!(
            signature_entries(r).len(),
            1,
            "one signature after the rotation"
        );
        assert!(verifies(r, &new));
        assert!(!verifies(r, &old), "the retired secret no longer signs");
    }
}

/// A signing-secret file replaced in place (as a Kubernetes Secret update does) applies within
/// `secret_refresh`, without a restart; from the first request signed with the new secret on,
/// every request is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_changed_in_place_applies_without_a_restart() {
    let topics = Topics::create(1).await;
    let receiver = Receiver::start(200).await;
    let admin = local_address();
    let (_, sections) = fresh_registry(Some(admin), Some("200ms")).await;
    let a = secret("file-secret-a");
    let b = secret("file-secret-b");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signing");
    std::fs::write(&file, format!("{a}\n")).unwrap();
    let service = Service::start_with_registry(&(topics.config("") + &sections), &[]);
    let api = Api::new(admin);
    let value = endpoint(
        &receiver.url,
        json!({ "signing_secret": { "file": file.display().to_string() } }),
    );
    assert_eq!(api.put("acme", &value).await.0, 201);

    let first = records::users_created("acme", 5);
    kafka::produce(&topics.input, &first).await;
    wait_delivered(&receiver, &first, "the first events").await;
    for r in receiver.received() {
        assert!(verifies(&r, &a), "{}: signed with A", r.event_id());
    }

    replace_atomically(&file, &format!("{b}\n"));
    let replaced = Instant::now();
    // One event at a time, each delivered before the next is produced, until one is signed
    // with B.
    let mut n = 0;
    let switched_after = loop {
        assert!(
            replaced.elapsed() < Duration::from_secs(20),
            "no request signed with the new secret within 20 s of the file change ({n} sent)"
        );
        let one = vec![records::user_created(
            &format!("chg-switch-{n}"),
            "acme",
            &format!("switch-user-{n}"),
        )];
        n += 1;
        kafka::produce(&topics.input, &one).await;
        wait_delivered(&receiver, &one, "an event after the file change").await;
        let id = records::event_of(&one[0].1).id;
        let r = receiver
            .received()
            .into_iter()
            .find(|r| r.event_id() == id)
            .unwrap();
        if verifies(&r, &b) {
            assert!(!verifies(&r, &a), "only the new secret signs");
            break replaced.elapsed();
        }
        assert!(verifies(&r, &a), "{id}: signed with A or B, nothing else");
    };
    eprintln!("the new secret applied after {switched_after:?} ({n} events)");
    service.wait_log(
        "a secret of the organization changed: applied from its next attempt",
        Duration::from_secs(5),
    );

    let after = (0..10)
        .map(|i| records::user_created(&format!("chg-after-{i}"), "acme", &format!("after-{i}")))
        .collect::<Vec<_>>();
    kafka::produce(&topics.input, &after).await;
    wait_delivered(&receiver, &after, "the events after the switch").await;
    let want = records::ids(&after);
    for r in receiver
        .received()
        .iter()
        .filter(|r| want.contains(&r.event_id()))
    {
        assert!(verifies(r, &b), "{}: signed with B", r.event_id());
        assert!(!verifies(r, &a), "{}: not with A", r.event_id());
    }
    // Neither secret in the log.
    let logs = service.logs();
    for s in [&a, &b] {
        assert!(
            !logs.contains(s.trim_start_matches("whsec_")),
            "a secret reached the log"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

async fn organizations(config: &Path, args: &[&str]) -> Run {
    command::run("organizations", config, args).await
}

fn describe(run: &Run) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    )
}

/// `consent-webhooks organizations` writes and reads the registry topic itself: a running
/// service follows what it puts and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_organizations_command_puts_gets_lists_and_deletes_through_the_topic() {
    // One input partition: a later record is decided only after every earlier one.
    let topics = Topics::create(1).await;
    let acme = Receiver::start(200).await;
    let globex = Receiver::start(200).await;
    let (_, sections) = fresh_registry(None, None).await;
    let config = topics.config("") + &sections;
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &config);
    let _service = Service::start_with_registry(&config, &[]);

    let acme_value = endpoint(&acme.url, json!({ "concurrency": 2 })).to_string();
    let put = organizations(&path, &["put", "acme", "--value", &acme_value]).await;
    assert_eq!(put.code, Some(0), "{}", describe(&put));
    assert!(
        put.stdout.contains("acme: registered"),
        "{}",
        describe(&put)
    );
    let again = organizations(&path, &["put", "acme", "--value", &acme_value]).await;
    assert_eq!(again.code, Some(0), "{}", describe(&again));
    assert!(again.stdout.contains("unchanged"), "{}", describe(&again));
    // From a file, as TOML text.
    let globex_file = dir.path().join("globex.toml");
    std::fs::write(
        &globex_file,
        format!(
            "url = \"{}\"\nallow_http = true\nallow_private_addresses = true\n",
            globex.url
        ),
    )
    .unwrap();
    let put = organizations(
        &path,
        &["put", "globex", "--file", globex_file.to_str().unwrap()],
    )
    .await;
    assert_eq!(put.code, Some(0), "{}", describe(&put));

    // The running service follows: acme's events are delivered.
    let input = records::users_created("acme", 10);
    kafka::produce(&topics.input, &input).await;
    wait_delivered(&acme, &input, "acme's events, registered by the command").await;

    let get = organizations(&path, &["get", "acme"]).await;
    assert_eq!(get.code, Some(0), "{}", describe(&get));
    let shown: Value = serde_json::from_str(&get.stdout).expect("get prints JSON");
    assert_eq!(shown["id"], "acme");
    assert_eq!(
        shown["organization"],
        serde_json::from_str::<Value>(&acme_value).unwrap()
    );
    assert!(shown["offset"].as_i64().is_some_and(|o| o >= 0), "{shown}");

    let list = organizations(&path, &["list"]).await;
    assert_eq!(list.code, Some(0), "{}", describe(&list));
    let lines: Vec<Value> = list
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let listed: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ["acme", "globex"], "{}", list.stdout);
    assert_eq!(lines[1]["organization"]["url"], globex.url.as_str());

    // Invalid: exit 2, the key named, nothing written.
    let bad = endpoint("ftp://x", json!({})).to_string();
    let invalid = organizations(&path, &["put", "acme", "--value", &bad]).await;
    assert_eq!(invalid.code, Some(2), "{}", describe(&invalid));
    assert!(
        invalid.stderr.contains("organizations.acme.url"),
        "{}",
        describe(&invalid)
    );
    let typo = organizations(&path, &["put", "acme", "--value", r#"{"urll": "x"}"#]).await;
    assert_eq!(typo.code, Some(2), "{}", describe(&typo));
    assert!(
        typo.stderr.contains("organizations.acme.urll"),
        "{}",
        describe(&typo)
    );
    let get = organizations(&path, &["get", "acme"]).await;
    let still: Value = serde_json::from_str(&get.stdout).unwrap();
    assert_eq!(
        still["offset"], shown["offset"],
        "an invalid put writes nothing"
    );

    // Delete: the service follows; get: 3.
    let delete = organizations(&path, &["delete", "acme"]).await;
    assert_eq!(delete.code, Some(0), "{}", describe(&delete));
    assert!(
        delete.stdout.contains("acme: removed"),
        "{}",
        describe(&delete)
    );
    let get = organizations(&path, &["get", "acme"]).await;
    assert_eq!(get.code, Some(3), "{}", describe(&get));
    let delete = organizations(&path, &["delete", "acme"]).await;
    assert_eq!(delete.code, Some(0), "{}", describe(&delete));
    assert!(
        delete.stdout.contains("not registered"),
        "{}",
        describe(&delete)
    );

    // acme's later events are skipped: globex's, after them on the one partition, arrive, and
    // acme hears nothing more.
    let before = acme.received().len();
    let acme_later = (0..5)
        .map(|i| records::user_created(&format!("chg-late-{i}"), "acme", &format!("late-{i}")))
        .collect::<Vec<_>>();
    kafka::produce(&topics.input, &acme_later).await;
    let globex_events = records::users_created("globex", 3);
    kafka::produce(&topics.input, &globex_events).await;
    wait_delivered(
        &globex,
        &globex_events,
        "globex's events after acme's removal",
    )
    .await;
    assert_eq!(
        acme.received().len(),
        before,
        "a removed organization hears nothing"
    );
}

/// `resend` knows the registry's organizations: a registry-only organization's history is sent
/// again, with the pipeline's ids, signed with its secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_sends_a_registry_organizations_history() {
    let topics = Topics::create(2).await;
    let receiver = Receiver::start(200).await;
    let admin = local_address();
    let (topic, sections) = fresh_registry(Some(admin), None).await;
    let signing = secret("resend-signing");
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("signing");
    std::fs::write(&secret_file, &signing).unwrap();
    let service = Service::start_with_registry(&(topics.config("") + &sections), &[]);
    let api = Api::new(admin);
    let value = endpoint(
        &receiver.url,
        json!({ "signing_secret": { "file": secret_file.display().to_string() } }),
    );
    assert_eq!(api.put("acme", &value).await.0, 201);

    let since = Utc::now() - chrono::Duration::seconds(1);
    let input = records::users_created("acme", 8);
    kafka::produce(&topics.input, &input).await;
    wait_delivered(&receiver, &input, "the first deliveries").await;
    let first = receiver.received().len();
    drop(service);

    // The command's config: the registry without the admin API (no token to give it).
    let path = config_file(
        dir.path(),
        &(topics.config("") + &registry_sections(&topic, None)),
    );
    let since = since.to_rfc3339_opts(SecondsFormat::Millis, true);
    let run = command::run(
        "resend",
        &path,
        &["--organization", "acme", "--since", &since],
    )
    .await;
    run.assert_success();
    assert_eq!(run.count("selected"), 8, "{}", run.stdout);
    assert_eq!(run.count("delivered"), 8, "{}", run.stdout);
    assert_eq!(run.count("dead-lettered"), 0, "{}", run.stdout);

    let received = receiver.received();
    let again = &received[first..];
    let resent: Vec<String> = again.iter().map(Received::event_id).collect();
    assert_eq!(resent.len(), 8, "each once: {resent:?}");
    assert_eq!(
        resent.into_iter().collect::<HashSet<_>>(),
        records::ids(&input),
        "the same ids again"
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &received {
        *counts.entry(r.event_id()).or_default() += 1;
    }
    assert!(counts.values().all(|&c| c == 2), "{counts:?}");
    for r in again {
        assert!(verifies(r, &signing), "{}: resent signed", r.event_id());
    }

    // An organization neither in the file nor in the registry is refused.
    let unknown = command::run(
        "resend",
        &path,
        &["--organization", "nobody", "--since", &since],
    )
    .await;
    assert_ne!(unknown.code, Some(0), "{}", describe(&unknown));
    assert!(unknown.stderr.contains("nobody"), "{}", describe(&unknown));
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// The series of the service's `/metrics`: `name{labels}` → value.
async fn scrape(listen: SocketAddr) -> HashMap<String, f64> {
    let text = support::service::metrics_text(listen).await;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn deliveries(metrics: &HashMap<String, f64>, organization: &str) -> f64 {
    metrics
        .get(&format!(
            "consent_webhooks_deliveries_total{{organization=\"{organization}\",outcome=\"delivered\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
}

/// Registry organizations get their own `organization` series only with `metrics_label = true`;
/// the others are counted under `_other`; the file's have theirs by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_organizations_are_labelled_only_when_they_opt_in() {
    let topics = Topics::create(2).await;
    let plain = Receiver::start(200).await;
    let labelled = Receiver::start(200).await;
    let filed = Receiver::start(200).await;
    let admin = local_address();
    let server = local_address();
    let (_, sections) = fresh_registry(Some(admin), None).await;
    let config =
        topics.config_listening(server, "") + &sections + &organization("filed", &filed.url, "");
    let _service = Service::start_with_registry(&config, &[]);
    let api = Api::new(admin);
    assert_eq!(
        api.put("plain", &endpoint(&plain.url, json!({}))).await.0,
        201
    );
    let value = endpoint(&labelled.url, json!({ "metrics_label": true }));
    assert_eq!(api.put("labelled", &value).await.0, 201);

    let plain_events = records::users_created("plain", 4);
    let labelled_events = records::users_created("labelled", 3);
    let filed_events = records::users_created("filed", 2);
    kafka::produce(&topics.input, &plain_events).await;
    kafka::produce(&topics.input, &labelled_events).await;
    kafka::produce(&topics.input, &filed_events).await;
    wait_delivered(&plain, &plain_events, "plain's events").await;
    wait_delivered(&labelled, &labelled_events, "labelled's events").await;
    wait_delivered(&filed, &filed_events, "filed's events").await;

    // The counters move right after the receivers answer: wait for them, with a deadline.
    let end = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = scrape(server).await;
        if deliveries(&metrics, "_other") >= 4.0
            && deliveries(&metrics, "labelled") >= 3.0
            && deliveries(&metrics, "filed") >= 2.0
        {
            break metrics;
        }
        assert!(
            Instant::now() < end,
            "the delivery counters did not reach 4 (_other), 3 (labelled), 2 (filed) in 10 s: {:?}",
            metrics
                .iter()
                .filter(|(k, _)| k.starts_with("consent_webhooks_deliveries_total"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        deliveries(&metrics, "_other"),
        4.0,
        "plain's, and only those"
    );
    assert_eq!(deliveries(&metrics, "labelled"), 3.0);
    assert_eq!(deliveries(&metrics, "filed"), 2.0);
    let with_plain: Vec<&String> = metrics
        .keys()
        .filter(|k| k.contains("organization=\"plain\""))
        .collect();
    assert!(
        with_plain.is_empty(),
        "no series of its own: {with_plain:?}"
    );
    assert_eq!(metrics["consent_webhooks_registry_organizations"], 2.0);
    assert!(
        metrics["consent_webhooks_registry_applied_offset"] >= 1.0,
        "two records applied"
    );

    // Opting out later takes its series away; its counts go on under `_other`.
    let value = endpoint(&labelled.url, json!({ "metrics_label": false }));
    assert_eq!(api.put("labelled", &value).await.0, 200);
    let more = (0..2)
        .map(|i| records::user_created(&format!("chg-more-{i}"), "labelled", &format!("more-{i}")))
        .collect::<Vec<_>>();
    kafka::produce(&topics.input, &more).await;
    wait_delivered(&labelled, &more, "labelled's events after opting out").await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(server).await;
        if deliveries(&metrics, "_other") >= 6.0 {
            let own: BTreeSet<&String> = metrics
                .keys()
                .filter(|k| k.contains("organization=\"labelled\""))
                .collect();
            assert!(own.is_empty(), "its series are gone: {own:?}");
            assert_eq!(metrics["consent_webhooks_registry_organizations"], 2.0);
            break;
        }
        assert!(Instant::now() < end, "_other did not reach 6 in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
