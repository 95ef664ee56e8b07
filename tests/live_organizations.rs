//! Issue 10, live organizations, on the real broker with real HTTP receivers: organizations
//! registered, changed and removed through the registry topic (admin API, CLI) while the
//! service runs, decided the same way by every replica.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use support::admin::{endpoint, Api, TOKEN};
use support::kafka;
use support::receiver::Receiver;
use support::records;
use support::service::{free_port, registry_sections, Service, Topics};

fn listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn ids(records: &[(String, Vec<u8>)]) -> HashSet<String> {
    records
        .iter()
        .map(|(_, v)| records::event_of(v).id)
        .collect()
}

/// An organization put through the admin API of a running replica receives its events; the
/// registry is read to its end before input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_put_through_the_api_receives_its_events() {
    let topics = Topics::create(3).await;
    let registry = kafka::unique_name("organizations");
    kafka::create_registry_topic(&registry).await;
    let receiver = Receiver::start(200).await;
    let admin = listen();
    let config = topics.config("") + &registry_sections(&registry, Some(admin));
    let service = Service::start(&config, &[("ADMIN_TOKEN", TOKEN)]);
    service.wait_log("organization registry read to its end", Duration::from_secs(30));

    let api = Api::new(admin);
    let (status, body) = api.put("acme", &endpoint(&receiver.url, json!({}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.put("acme", &endpoint(&receiver.url, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], false, "the same value again writes nothing");

    let input = records::users_created("acme", 30);
    kafka::produce(&topics.input, &input).await;
    let want = ids(&input);
    receiver
        .wait_until(Duration::from_secs(30), "every event delivered", |received| {
            let got: HashSet<String> = received.iter().map(|r| r.event_id()).collect();
            want.is_subset(&got)
        })
        .await;
}
