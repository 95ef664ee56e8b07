//! At-least-once across crashes, rebalances, shutdowns and replays (SPEC §4, DESIGN "Offsets"):
//! `consent-webhooks run` as real child processes against a real broker and a real receiver.
//!
//! Every test streams thousands of generated `user.created` records over 20 organizations and
//! 6 partitions, disturbs the service mid-stream, and checks the outcome: every event derived
//! from the records (by the pure core, `derive_record`) is delivered (2xx) or dead-lettered, and
//! nothing else arrives (duplicates carry an expected id).
//!
//! Each process sends its own `User-Agent` (`consent-webhooks/<marker>`), so the receiver knows
//! which process delivered what. A request the receiver answers after its process died (the
//! receiver delays answers) is a "ghost": the service never saw that 2xx, so it does not count
//! as delivered; the restarted service must deliver that event again.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use consent_webhooks::derive::{derive_record, Derived, Rules};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use support::kafka;
use support::receiver::{Received, Receiver};
use support::service::{organization, Service, Topics};

const ORGANIZATIONS: usize = 20;
const PARTITIONS: i32 = 6;
/// A short session timeout: a SIGKILLed member's partitions move to the others after 10 s
/// instead of librdkafka's default 45 s (shorter risks fencing a CPU-starved member on CI).
const KAFKA: &str =
    r#"properties = { "session.timeout.ms" = "10000", "heartbeat.interval.ms" = "1000" }"#;
/// Time for everything left to arrive after the disturbance.
const SETTLE: Duration = Duration::from_secs(90);

fn organization_id(i: usize) -> String {
    format!("org-{i:02}")
}

/// `per_organization` valid `user.created` records for each organization, interleaved, keyed
/// `organization/user`, with change ids unique to `run`.
fn records(run: &str, per_organization: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity(ORGANIZATIONS * per_organization);
    for n in 0..per_organization {
        for o in 0..ORGANIZATIONS {
            let org = organization_id(o);
            let user = format!("{org}-user-{n}");
            let value = serde_json::json!({
                "id": format!("{run}-chg-{o}-{n}"),
                "organization_id": org,
                "occurred_at": "2026-11-27T09:00:01Z",
                "entity_type": "user",
                "action": "created",
                "after": {
                    "id": user,
                    "organization_id": org,
                    "organization_user_id": format!("{user}@example.com"),
                    "created_at": "2026-11-27T08:59:59Z",
                    "updated_at": "2026-11-27T09:00:00Z",
                    "version": 1,
                    "consents": {
                        "purposes": [{"id": "analytics", "enabled": true}],
                        "vendors": {"enabled": ["google"], "disabled": []}
                    }
                }
            });
            out.push((format!("{org}/{user}"), serde_json::to_vec(&value).unwrap()));
        }
    }
    out
}

/// The event ids the pure core derives from `records`: one per record, all distinct.
fn expected_ids(records: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    let ids: BTreeSet<String> = records
        .iter()
        .map(|(_, value)| match derive_record(value, &Rules::default()) {
            Ok(Derived::Webhook(event)) => event.id,
            other => panic!("a generated record yields no webhook: {other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), records.len(), "one distinct event per record");
    ids
}

/// Every organization points at `receiver` (its own path); `marker` names the process in its
/// `User-Agent`.
fn config(topics: &Topics, receiver: &Receiver, delivery: &str, marker: &str) -> String {
    let delivery = format!("{delivery}\nuser_agent = \"consent-webhooks/{marker}\"");
    let mut config = topics.config_with(KAFKA, &delivery);
    for o in 0..ORGANIZATIONS {
        let org = organization_id(o);
        config += &organization(&org, &format!("{}/{org}", receiver.url), "");
    }
    config
}

/// The process marker of a request (from its `User-Agent`).
fn marker(request: &Received) -> &str {
    request
        .header("user-agent")
        .and_then(|ua| ua.strip_prefix("consent-webhooks/"))
        .unwrap_or("?")
}

/// A process that is gone: its requests recorded from index `cutoff` on (answered after it
/// exited) are ghosts.
struct Gone<'a> {
    marker: &'a str,
    cutoff: usize,
}

fn is_delivery(index: usize, request: &Received, gone: &[Gone<'_>]) -> bool {
    (200..300).contains(&request.status)
        && !gone
            .iter()
            .any(|g| g.marker == marker(request) && index >= g.cutoff)
}

/// Event ids of the dead-letter topic (read only when it is not empty).
async fn dead_lettered(topic: &str) -> Vec<String> {
    let name = topic.to_owned();
    let (low, high) = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka::bootstrap())
            .create()
            .expect("consumer");
        consumer
            .fetch_watermarks(&name, 0, Duration::from_secs(10))
            .expect("dead-letter watermarks")
    })
    .await
    .unwrap();
    if high <= low {
        return Vec::new();
    }
    let records = kafka::consume(topic, (high - low) as usize, Duration::from_secs(30)).await;
    assert_eq!(
        records.len(),
        (high - low) as usize,
        "whole dead-letter topic"
    );
    records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            v["event"]["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// What arrived, once everything was accounted for.
#[derive(Debug)]
struct Tally {
    /// 2xx answers that count as deliveries.
    deliveries: usize,
    /// Of those, deliveries of an event already delivered.
    duplicates: usize,
    /// 2xx answers to processes already gone (not counted as deliveries).
    ghosts: usize,
    dead_lettered: usize,
    /// Deliveries per process marker.
    by_process: BTreeMap<String, usize>,
}

/// Waits until every expected event was delivered (by a request `counts` accepts) or
/// dead-lettered, then checks that nothing unexpected arrived.
async fn account(
    receiver: &Receiver,
    topics: &Topics,
    expected: &BTreeSet<String>,
    counts: impl Fn(usize, &Received) -> bool,
    deadline: Duration,
) -> Tally {
    let end = Instant::now() + deadline;
    let mut dead: Vec<String> = Vec::new();
    loop {
        let received = receiver.received();
        let mut done: BTreeSet<String> = dead.iter().cloned().collect();
        done.extend(
            received
                .iter()
                .enumerate()
                .filter(|(i, r)| counts(*i, r))
                .map(|(_, r)| r.event_id()),
        );
        let missing = expected.difference(&done).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "{missing} of {} events neither delivered nor dead-lettered within {deadline:?} \
             ({} requests received, {} dead-lettered)",
            expected.len(),
            received.len(),
            dead.len()
        );
        // Nothing new at the receiver for a while: maybe the rest went to the dead-letter topic.
        if !receiver.changed(Duration::from_secs(1)).await {
            dead = dead_lettered(&topics.dead_letter).await;
        }
    }
    let dead = dead_lettered(&topics.dead_letter).await;
    let received = receiver.received();
    let unexpected: Vec<String> = received
        .iter()
        .map(Received::event_id)
        .chain(dead.iter().cloned())
        .filter(|id| !expected.contains(id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} requests or dead letters carry an id derived from no record, e.g. {:?}",
        unexpected.len(),
        unexpected.first()
    );
    let mut seen = BTreeSet::new();
    let mut tally = Tally {
        deliveries: 0,
        duplicates: 0,
        ghosts: 0,
        dead_lettered: dead.len(),
        by_process: BTreeMap::new(),
    };
    for (i, r) in received.iter().enumerate() {
        if !(200..300).contains(&r.status) {
            continue;
        }
        if !counts(i, r) {
            tally.ghosts += 1;
            continue;
        }
        tally.deliveries += 1;
        *tally.by_process.entry(marker(r).to_owned()).or_default() += 1;
        if !seen.insert(r.event_id()) {
            tally.duplicates += 1;
        }
    }
    tally
}

/// Distinct events delivered (2xx) so far.
fn distinct_delivered(received: &[Received]) -> usize {
    received
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .map(Received::event_id)
        .collect::<BTreeSet<_>>()
        .len()
}

/// Starts the stream: records produced (acknowledged) while `service` consumes them.
async fn stream(topics: &Topics, per_organization: usize) -> BTreeSet<String> {
    let records = records(&topics.input, per_organization);
    let expected = expected_ids(&records);
    kafka::produce(&topics.input, &records).await;
    expected
}

async fn wait_for_a_quarter(receiver: &Receiver, total: usize) {
    receiver
        .wait_until(Duration::from_secs(60), "a quarter of the events", |got| {
            distinct_delivered(got) >= total / 4
        })
        .await;
}

/// (e) A crash loses nothing: SIGKILL mid-stream, restart in the same group, every event
/// arrives; the cost is duplicates (same id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_delivers_every_event() {
    let began = Instant::now();
    let topics = Topics::create(PARTITIONS).await;
    let receiver = Receiver::start(200).await;
    receiver.delay(Duration::from_millis(5));
    let delivery = "max_in_flight_requests = 16";
    let mut first = Service::start(&config(&topics, &receiver, delivery, "kill-1"), &[]);
    let expected = stream(&topics, 200).await;
    wait_for_a_quarter(&receiver, expected.len()).await;

    first.signal("KILL");
    first
        .wait_exit(Duration::from_secs(10))
        .expect("the process dies on SIGKILL");
    let cutoff = receiver.received().len();
    let at_kill = distinct_delivered(&receiver.received()[..cutoff]);
    assert!(
        at_kill < expected.len(),
        "killed mid-stream: only {at_kill} of {} delivered at the kill",
        expected.len()
    );

    let _second = Service::start(&config(&topics, &receiver, delivery, "kill-2"), &[]);
    let gone = [Gone {
        marker: "kill-1",
        cutoff,
    }];
    let tally = account(
        &receiver,
        &topics,
        &expected,
        |i, r| is_delivery(i, r, &gone),
        SETTLE,
    )
    .await;
    assert_eq!(
        tally.dead_lettered, 0,
        "a 200 receiver: nothing dead-lettered"
    );
    println!(
        "sigkill: {} events, {at_kill} delivered before the kill; after restart: {tally:?}; \
         duplicates {} ({:.1}%); {:?}",
        expected.len(),
        tally.duplicates,
        100.0 * tally.duplicates as f64 / expected.len() as f64,
        began.elapsed()
    );
}

/// (f) A second process joining the group mid-stream takes partitions over (cooperative-sticky,
/// back-pressure on): nothing is lost, and both processes deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_joining_mid_stream_shares_the_work_and_nothing_is_lost() {
    let began = Instant::now();
    let topics = Topics::create(PARTITIONS).await;
    let receiver = Receiver::start(200).await;
    receiver.delay(Duration::from_millis(10));
    let delivery = "max_in_flight_requests = 8\nmax_pending_records = 400\ndrain_timeout = \"5s\"";
    let a = Service::start(&config(&topics, &receiver, delivery, "member-a"), &[]);
    let expected = stream(&topics, 200).await;
    wait_for_a_quarter(&receiver, expected.len()).await;

    let b = Service::start(&config(&topics, &receiver, delivery, "member-b"), &[]);
    let joined = distinct_delivered(&receiver.received());
    let tally = account(
        &receiver,
        &topics,
        &expected,
        |_, r| (200..300).contains(&r.status),
        SETTLE,
    )
    .await;
    assert_eq!(
        tally.dead_lettered, 0,
        "a 200 receiver: nothing dead-lettered"
    );

    a.wait_log("partitions revoked", Duration::from_secs(10));
    let logged_a = a.log_messages("delivered").len();
    let logged_b = b.log_messages("delivered").len();
    let received_a = tally.by_process.get("member-a").copied().unwrap_or(0);
    let received_b = tally.by_process.get("member-b").copied().unwrap_or(0);
    println!(
        "join: {} events, {joined} delivered when member-b joined; {tally:?}; \
         logged \"delivered\": a {logged_a}, b {logged_b}; {:?}",
        expected.len(),
        began.elapsed()
    );
    assert!(
        received_a > 0 && received_b > 0,
        "both members delivered: a {received_a}, b {received_b}"
    );
    assert!(
        logged_a > 0 && logged_b > 0,
        "both logs say \"delivered\": a {logged_a}, b {logged_b}"
    );
    // A process logs "delivered" only for a 2xx the receiver answered it.
    assert!(
        received_a >= logged_a && received_b >= logged_b,
        "the receiver saw at least what each process logged as delivered"
    );
    for (name, service) in [("a", &a), ("b", &b)] {
        let assigned = service.log_messages("partitions assigned");
        assert!(!assigned.is_empty(), "{name}: partitions assigned");
    }
    // DESIGN, Offsets: on revoke, in-flight work gets its grace and what is done is committed
    // synchronously. When every revoked partition finished within the grace and the commit was
    // accepted, the new owner starts exactly after the old one: no event is delivered twice.
    // (A commit the coordinator refused, e.g. because a CPU-starved member was already fenced,
    // legitimately leaves duplicates: at-least-once. The service logs it.)
    let revokes = a.log_messages("partitions revoked; committing what is done");
    let commit_refused = a.logs().contains("synchronous commit failed");
    println!(
        "join: {} duplicates after revokes {:?}; a commit refused: {commit_refused}",
        tally.duplicates,
        revokes.iter().map(|r| &r["fields"]).collect::<Vec<_>>()
    );
    if !commit_refused && revokes.iter().all(|r| r["fields"]["all_done"] == true) {
        assert_eq!(
            tally.duplicates, 0,
            "member-a finished its revoked partitions within the grace ({revokes:?}), yet \
             member-b delivered {} of their events again: the revoke commit did not stick",
            tally.duplicates
        );
    }
}

/// (h) SIGTERM mid-stream with a slow endpoint: exit status 0 within `drain_timeout` plus a
/// small margin; what was not done is consumed again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_with_a_slow_endpoint_exits_0_within_the_drain_deadline() {
    const DRAIN: Duration = Duration::from_secs(5);
    const MARGIN: Duration = Duration::from_secs(3);
    let began = Instant::now();
    let topics = Topics::create(PARTITIONS).await;
    let receiver = Receiver::start(200).await;
    receiver.delay(Duration::from_millis(10));
    let delivery = "max_in_flight_requests = 16\ndrain_timeout = \"5s\"";
    let mut first = Service::start(&config(&topics, &receiver, delivery, "term-1"), &[]);
    let expected = stream(&topics, 200).await;
    wait_for_a_quarter(&receiver, expected.len()).await;

    // Slow-ish from now on: the drain cannot finish the stream within its deadline.
    receiver.delay(Duration::from_millis(1500));
    let signalled = Instant::now();
    first.signal("TERM");
    let status = first
        .wait_exit(DRAIN + MARGIN)
        .unwrap_or_else(|| panic!("no exit within {:?}:\n{}", DRAIN + MARGIN, first.logs()));
    let took = signalled.elapsed();
    let cutoff = receiver.received().len();
    assert!(status.success(), "{status}:\n{}", first.logs());
    let at_exit = distinct_delivered(&receiver.received()[..cutoff]);
    assert!(at_exit < expected.len(), "stopped mid-stream");
    let stopping = first.log_messages("stopping: committing what is done");
    assert_eq!(stopping.len(), 1, "one drain:\n{}", first.logs());
    assert!(first.logs().contains("\"stopped\""), "{}", first.logs());

    receiver.delay(Duration::ZERO);
    let _second = Service::start(&config(&topics, &receiver, delivery, "term-2"), &[]);
    let gone = [Gone {
        marker: "term-1",
        cutoff,
    }];
    let tally = account(
        &receiver,
        &topics,
        &expected,
        |i, r| is_delivery(i, r, &gone),
        SETTLE,
    )
    .await;
    assert_eq!(
        tally.dead_lettered, 0,
        "a 200 receiver: nothing dead-lettered"
    );
    println!(
        "sigterm: {} events, {at_exit} delivered at exit; exit 0 after {took:?} (drain {DRAIN:?}); \
         drain: {}; after restart: {tally:?}; {:?}",
        expected.len(),
        stopping[0]["fields"],
        began.elapsed()
    );
}

/// Replay: after the service stopped, Kafka's own tool resets the group to the earliest
/// offsets; a restarted service delivers the same event ids again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_the_group_to_earliest_replays_the_same_event_ids() {
    let began = Instant::now();
    let topics = Topics::create(PARTITIONS).await;
    let receiver = Receiver::start(200).await;
    let delivery = "drain_timeout = \"5s\"";
    let mut first = Service::start(&config(&topics, &receiver, delivery, "replay-1"), &[]);
    let expected = stream(&topics, 25).await;
    let delivered_by = |name: &'static str| move |_: usize, r: &Received| marker(r) == name;
    account(
        &receiver,
        &topics,
        &expected,
        delivered_by("replay-1"),
        SETTLE,
    )
    .await;
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "{status}:\n{}", first.logs());

    let output = Command::new("bash")
        .arg(kafka::repo_root().join("deploy/local/kafka.sh"))
        .args(["consumer-groups", "--bootstrap-server", kafka::bootstrap()])
        .args(["--group", &topics.group, "--reset-offsets", "--to-earliest"])
        .args(["--topic", &topics.input, "--execute"])
        .output()
        .expect("run kafka.sh consumer-groups");
    assert!(
        output.status.success(),
        "reset failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let _second = Service::start(&config(&topics, &receiver, delivery, "replay-2"), &[]);
    let tally = account(
        &receiver,
        &topics,
        &expected,
        delivered_by("replay-2"),
        SETTLE,
    )
    .await;
    let replayed = tally.by_process.get("replay-2").copied().unwrap_or(0);
    println!(
        "replay: {} events delivered, then {replayed} again after the reset; {:?}",
        expected.len(),
        began.elapsed()
    );
}

/// SIGTERM whose drain finishes in time: everything taken is done and committed, so a restart
/// in the same group redelivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_whose_drain_finishes_commits_everything_so_a_restart_redelivers_nothing() {
    let began = Instant::now();
    let topics = Topics::create(PARTITIONS).await;
    let receiver = Receiver::start(200).await;
    receiver.delay(Duration::from_millis(50));
    // Few records taken at a time (back-pressure), a slow-ish endpoint: at SIGTERM some are in
    // flight, and all of them finish well within the drain deadline.
    let delivery =
        "max_in_flight_requests = 16\nmax_pending_records = 100\ndrain_timeout = \"10s\"";
    let mut first = Service::start(&config(&topics, &receiver, delivery, "drain-1"), &[]);
    let expected = stream(&topics, 100).await;
    // Past a round number (back-pressure takes records in batches of about 100), so the drain
    // has work to finish.
    let threshold = expected.len() / 4 + 50;
    receiver
        .wait_until(Duration::from_secs(60), "a quarter of the events", |got| {
            distinct_delivered(got) >= threshold
        })
        .await;
    let at_signal = distinct_delivered(&receiver.received());
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "{status}:\n{}", first.logs());
    let stopping = first.log_messages("stopping: committing what is done");
    assert_eq!(stopping.len(), 1, "one drain:\n{}", first.logs());
    assert_eq!(
        stopping[0]["fields"]["drained"], true,
        "the drain finished: {}",
        stopping[0]
    );
    let cutoff = receiver.received().len();
    let at_exit = distinct_delivered(&receiver.received()[..cutoff]);
    assert!(at_exit < expected.len(), "stopped mid-stream");
    assert!(
        at_exit > at_signal,
        "the drain finished in-flight work: {at_signal} delivered at SIGTERM, {at_exit} at exit"
    );

    receiver.delay(Duration::ZERO);
    let _second = Service::start(&config(&topics, &receiver, delivery, "drain-2"), &[]);
    let tally = account(
        &receiver,
        &topics,
        &expected,
        |_, r| (200..300).contains(&r.status),
        SETTLE,
    )
    .await;
    println!(
        "drained sigterm: {} events, {at_signal} delivered at SIGTERM, {at_exit} at exit; after restart: {tally:?}; {:?}",
        expected.len(),
        began.elapsed()
    );
    assert_eq!(
        tally.duplicates, 0,
        "the drain finished and committed everything it did, yet the restart delivered {} \
         events again",
        tally.duplicates
    );
}
