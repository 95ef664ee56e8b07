//! Issue 10, live organizations, on the real broker with real HTTP receivers: organizations
//! registered, changed and removed through the registry topic (admin API, CLI) while the
//! service runs, decided the same way by every replica.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::admin::{endpoint, Api, TOKEN};
use support::kafka;
use support::receiver::Receiver;
use support::records;
use support::service::{
    fresh_registry, local_address, organization, registry_sections, Service, Topics,
};

/// An organization put through the admin API of a running replica receives its events; the
/// registry is read to its end before input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_put_through_the_api_receives_its_events() {
    let topics = Topics::create(3).await;
    let receiver = Receiver::start(200).await;
    let admin = local_address();
    let (_, sections) = fresh_registry(Some(admin), None).await;
    let _service = Service::start_with_registry(&(topics.config("") + &sections), &[]);

    let api = Api::new(admin);
    let (status, body) = api.put("acme", &endpoint(&receiver.url, json!({}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.put("acme", &endpoint(&receiver.url, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changed"], false,
        "the same value again writes nothing"
    );

    let input = records::users_created("acme", 30);
    kafka::produce(&topics.input, &input).await;
    let want = records::ids(&input);
    receiver
        .wait_delivered(&want, Duration::from_secs(30), "every event delivered")
        .await;
}

/// A short session timeout: partitions of a stopped member move on quickly.
const SESSION: &str =
    r#"properties = { "session.timeout.ms" = "10000", "heartbeat.interval.ms" = "1000" }"#;

/// `n` `user.created` changes of `org` numbered from `from`, one user each (distinct keys, so
/// they spread over every partition).
fn changes(org: &str, from: usize, n: usize) -> Vec<(String, Vec<u8>)> {
    (from..from + n)
        .map(|i| records::user_created(&format!("chg-{org}-{i}"), org, &format!("{org}-user-{i}")))
        .collect()
}

/// The webhook ids a receiver got with a 2xx.
fn delivered_ids(receiver: &Receiver) -> HashSet<String> {
    receiver.delivered().iter().map(|r| r.event_id()).collect()
}

/// The partitions of a `?partitions` log field (`"[0, 3]"`).
fn partitions_field(line: &serde_json::Value) -> Vec<i32> {
    line["fields"]["partitions"]
        .as_str()
        .unwrap_or_default()
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// The input partitions a process owns now, from what it logged (assigned minus revoked or
/// lost; incremental, as the cooperative protocol hands them).
fn owned(service: &Service) -> BTreeSet<i32> {
    let mut owned = BTreeSet::new();
    // Only the lines that may be about partitions are parsed: the logs grow long.
    let logs = service.logs();
    let lines = logs
        .lines()
        .filter(|line| line.contains("\"partitions "))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok());
    for line in lines {
        let message = line["fields"]["message"].as_str().unwrap_or_default();
        if message == "partitions assigned" {
            owned.extend(partitions_field(&line));
        } else if message.starts_with("partitions revoked")
            || message.starts_with("partitions lost")
        {
            for p in partitions_field(&line) {
                owned.remove(&p);
            }
        }
    }
    owned
}

/// Whether the group is settled: every process owns some partitions, and together they own
/// each of the topic's `partitions` exactly once.
fn is_settled(services: &[Service], partitions: i32) -> Result<(), Vec<BTreeSet<i32>>> {
    let owned: Vec<BTreeSet<i32>> = services.iter().map(owned).collect();
    let total: usize = owned.iter().map(BTreeSet::len).sum();
    let all: BTreeSet<i32> = owned.iter().flatten().copied().collect();
    if owned.iter().all(|o| !o.is_empty())
        && total == partitions as usize
        && all == (0..partitions).collect()
    {
        Ok(())
    } else {
        Err(owned)
    }
}

/// Waits until the group is settled (see [`is_settled`]).
async fn settled(services: &[Service], partitions: i32, deadline: Duration) {
    let end = Instant::now() + deadline;
    while let Err(owned) = is_settled(services, partitions) {
        assert!(
            Instant::now() < end,
            "the group did not settle within {deadline:?}: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the group has committed every record of `topic` (and, when `retry` is set,
/// its `.retry` group every record of the retry topic): everything taken is done.
async fn all_done(topics: &Topics, partitions: i32, retry: bool, deadline: Duration) {
    let end = Instant::now() + deadline;
    let mut checks = vec![(topics.group.clone(), topics.input.clone())];
    if retry {
        checks.push((format!("{}.retry", topics.group), topics.retry.clone()));
    }
    loop {
        let mut behind = Vec::new();
        for (group, topic) in &checks {
            let committed: i64 = kafka::committed(group, topic, partitions)
                .await
                .into_iter()
                .map(|c| c.unwrap_or(0))
                .sum();
            let written = records::record_count(topic).await;
            if committed < written {
                behind.push(format!("{topic}: {committed} of {written}"));
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "not everything committed within {deadline:?}: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many events of `org` a process logged as delivered at their first attempt.
fn delivered_by(service: &Service, org: &str) -> usize {
    service
        .log_messages("delivered")
        .iter()
        .filter(|line| line["span"]["organization_id"] == org)
        .count()
}

/// Waits until every process logged a delivery of `org`.
async fn wait_delivered_by_each(services: &[Service], org: &str, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let counts: Vec<usize> = services.iter().map(|s| delivered_by(s, org)).collect();
        if counts.iter().all(|&n| n > 0) {
            eprintln!("{org}: deliveries per process {counts:?}");
            return;
        }
        assert!(
            Instant::now() < end,
            "not every process delivered events of {org} within {deadline:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `holds` is true of `GET /v1/organizations/{id}` on every process's API; returns
/// how long it took.
async fn wait_everywhere(
    apis: &[Api],
    id: &str,
    what: &str,
    deadline: Duration,
    holds: impl Fn(u16, &serde_json::Value) -> bool,
) -> Duration {
    let started = Instant::now();
    for (i, api) in apis.iter().enumerate() {
        loop {
            let (status, body) = api.get(id).await;
            if holds(status, &body) {
                break;
            }
            assert!(
                started.elapsed() < deadline,
                "process {i} does not show {what} within {deadline:?}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

/// A registration time (`registered_at`, RFC 3339 with milliseconds) in ms since the epoch.
fn millis(registered_at: &serde_json::Value) -> i64 {
    let text = registered_at.as_str().expect("registered_at");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("registered_at {text}: {e}"))
        .timestamp_millis()
}

/// Stops a process with SIGTERM (it must exit cleanly) and starts it again with `config`: the
/// new one has read the registry to its end and has partitions when this returns.
fn restart(service: &mut Service, config: &str) {
    service.signal("TERM");
    let status = service.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "stopped cleanly on SIGTERM ({status:?}):\n{}",
        service.logs()
    );
    *service = Service::start(config, &[("ADMIN_TOKEN", TOKEN)]);
}

/// Issue 10 with three replicas of one group, each with its own admin API: an organization
/// registered through one replica's API is delivered by all three within seconds, a change
/// through another's applies everywhere, a removal through the third stops its deliveries
/// everywhere, and a restarted replica rebuilds the registry from the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_follow_changes_made_through_the_api() {
    const PARTITIONS: i32 = 6;
    let started = Instant::now();
    let topics = Topics::create(PARTITIONS).await;
    let (registry, _) = fresh_registry(None, None).await;
    let warm = Receiver::start(200).await;
    let a = Receiver::start(200).await;
    let b = Receiver::start(200).await;
    let admins: Vec<SocketAddr> = (0..3).map(|_| local_address()).collect();
    let configs: Vec<String> = admins
        .iter()
        .map(|admin| {
            topics.config_with(SESSION, "")
                + &registry_sections(&registry, Some(*admin))
                + &organization("warm", &warm.url, "")
        })
        .collect();
    let mut services: Vec<Service> = configs
        .iter()
        .map(|config| Service::start(config, &[("ADMIN_TOKEN", TOKEN)]))
        .collect();
    for (i, service) in services.iter().enumerate() {
        assert_eq!(
            service
                .log_messages("organization registry read to its end")
                .len(),
            1,
            "process {i} read the registry before taking input"
        );
    }
    settled(&services, PARTITIONS, Duration::from_secs(60)).await;
    // Every partition is taken: a file organization's events on all of them arrive.
    let warm_up = changes("warm", 0, 30);
    kafka::produce(&topics.input, &warm_up).await;
    warm.wait_delivered(
        &records::ids(&warm_up),
        Duration::from_secs(30),
        "every event delivered",
    )
    .await;
    let apis: Vec<Api> = admins.iter().map(|admin| Api::new(*admin)).collect();
    eprintln!("three replicas ready after {:?}", started.elapsed());

    // a. Registered through process 0: delivered by all three within seconds.
    let (status, body) = apis[0].put("acme", &endpoint(&a.url, json!({}))).await;
    assert_eq!(status, 201, "{body}");
    let put_returned = Instant::now();
    let registered_at = body["registered_at"].clone();
    let first = changes("acme", 0, 60);
    kafka::produce(&topics.input, &first).await;
    let produced = put_returned.elapsed();
    // Within 10 s of the PUT's answer (the promise: well under 5 s, plus slack for a loaded
    // machine).
    let left = Duration::from_secs(10).saturating_sub(put_returned.elapsed());
    a.wait_delivered(&records::ids(&first), left, "every event delivered")
        .await;
    eprintln!(
        "acme: {} events produced {produced:?} and delivered {:?} after its PUT returned",
        first.len(),
        put_returned.elapsed()
    );
    let read = kafka::consume(
        &topics.input,
        warm_up.len() + first.len(),
        Duration::from_secs(30),
    )
    .await;
    let acme_partitions: BTreeSet<i32> = read
        .iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with(b"acme/")))
        .map(|r| r.partition)
        .collect();
    assert_eq!(
        acme_partitions,
        (0..PARTITIONS).collect(),
        "acme's records are on every partition"
    );
    wait_delivered_by_each(&services, "acme", Duration::from_secs(10)).await;

    // b. Changed through process 1: every process sends to the new URL, the registration
    //    time is kept.
    let (status, body) = apis[1].put("acme", &endpoint(&b.url, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true, "{body}");
    assert_eq!(
        body["registered_at"], registered_at,
        "an update keeps the registration time"
    );
    let took = wait_everywhere(
        &apis,
        "acme",
        "the new URL",
        Duration::from_secs(5),
        |status, body| status == 200 && body["organization"]["url"] == b.url.as_str(),
    )
    .await;
    eprintln!("acme's change applied on every process {took:?} after its PUT returned");
    let second = changes("acme", 60, 60);
    kafka::produce(&topics.input, &second).await;
    b.wait_delivered(
        &records::ids(&second),
        Duration::from_secs(10),
        "every event delivered",
    )
    .await;

    // c. Removed through process 2: nothing of it is delivered anywhere afterwards.
    let (status, body) = apis[2].delete("acme").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], true, "{body}");
    let took = wait_everywhere(
        &apis,
        "acme",
        "the removal",
        Duration::from_secs(5),
        |status, _| status == 404,
    )
    .await;
    eprintln!("acme's removal applied on every process {took:?} after its DELETE returned");
    let third = changes("acme", 120, 60);
    let warm_after = changes("warm", 30, 30);
    kafka::produce(&topics.input, &third).await;
    kafka::produce(&topics.input, &warm_after).await;
    all_done(&topics, PARTITIONS, false, Duration::from_secs(30)).await;
    warm.wait_delivered(
        &records::ids(&warm_after),
        Duration::from_secs(10),
        "every event delivered",
    )
    .await;
    let (to_a, to_b) = (delivered_ids(&a), delivered_ids(&b));
    assert!(
        to_a.is_disjoint(&records::ids(&second)),
        "nothing sent to the old URL after the change"
    );
    assert!(
        to_a.is_disjoint(&records::ids(&third)) && to_b.is_disjoint(&records::ids(&third)),
        "nothing of acme delivered after its removal: {} to A, {} to B",
        to_a.intersection(&records::ids(&third)).count(),
        to_b.intersection(&records::ids(&third)).count()
    );

    // d. A restarted process rebuilds the registry from the topic.
    let g = Receiver::start(200).await;
    let (status, body) = apis[0].put("globex", &endpoint(&g.url, json!({}))).await;
    assert_eq!(status, 201, "{body}");
    let globex_registered_at = body["registered_at"].clone();
    restart(&mut services[1], &configs[1]);
    let read = services[1].log_messages("organization registry read to its end");
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(
        read[0]["fields"]["organizations"], 1,
        "the restarted process knows globex (acme's tombstone applied): {}",
        read[0]
    );
    let (status, body) = apis[1].get("globex").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["registered_at"], globex_registered_at, "{body}");
    let (status, body) = apis[1].get("acme").await;
    assert_eq!(status, 404, "{body}");
    settled(&services, PARTITIONS, Duration::from_secs(60)).await;
    let globex = changes("globex", 0, 60);
    kafka::produce(&topics.input, &globex).await;
    g.wait_delivered(
        &records::ids(&globex),
        Duration::from_secs(10),
        "every event delivered",
    )
    .await;
    wait_delivered_by_each(&services, "globex", Duration::from_secs(10)).await;
    eprintln!("test took {:?}", started.elapsed());
}

/// `PUT` through the first of `admins` (from `first`, in turn) that answers 200 or 201: a process
/// may be restarting.
async fn put_through_any(
    admins: &[SocketAddr],
    first: usize,
    id: &str,
    value: &serde_json::Value,
) -> (usize, serde_json::Value) {
    let http = reqwest::Client::new();
    let end = Instant::now() + Duration::from_secs(60);
    for i in (first..).map(|i| i % admins.len()) {
        let answer = http
            .put(format!("http://{}/v1/organizations/{id}", admins[i]))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(value.to_string())
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        if let Ok(response) = answer {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if status == 200 || status == 201 {
                return (i, body);
            }
            assert_eq!(status, 503, "{id} through process {i}: {body}");
        }
        assert!(Instant::now() < end, "no process took {id} within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// The rule, end to end, under change: records produced without pause for eight
/// organizations while they are registered one by one through the three processes' APIs and
/// the processes are restarted one after the other (their partitions moving twice each). Each
/// record is delivered iff its organization's registration time is not after its record's time:
/// no record is skipped by one process that another would have delivered, none delivered that
/// was registered after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_while_organizations_change_skips_nothing_owed() {
    const PARTITIONS: i32 = 6;
    const ORGS: usize = 8;
    /// Registry records written just before each registration.
    const QUIET: usize = 1000;
    let started = Instant::now();
    let topics = Topics::create(PARTITIONS).await;
    let (registry, _) = fresh_registry(None, None).await;
    let receiver = Receiver::start(200).await;
    let admins: Vec<SocketAddr> = (0..3).map(|_| local_address()).collect();
    let configs: Vec<String> = admins
        .iter()
        .map(|admin| topics.config_with(SESSION, "") + &registry_sections(&registry, Some(*admin)))
        .collect();
    let mut services: Vec<Service> = configs
        .iter()
        .map(|config| Service::start(config, &[("ADMIN_TOKEN", TOKEN)]))
        .collect();
    settled(&services, PARTITIONS, Duration::from_secs(60)).await;
    let org = |k: usize| format!("org-{k}");
    eprintln!("three replicas ready after {:?}", started.elapsed());

    // Records for every organization, a batch every 40 ms, for the whole scenario.
    let stop = tokio_util::sync::CancellationToken::new();
    let producing = {
        let (stop, input) = (stop.clone(), topics.input.clone());
        tokio::spawn(async move {
            let producer = kafka::producer();
            let mut tick = tokio::time::interval(Duration::from_millis(40));
            let mut n = 0;
            while !stop.is_cancelled() {
                tick.tick().await;
                let batch: Vec<(String, Vec<u8>)> = (0..ORGS)
                    .map(|k| {
                        let org = format!("org-{k}");
                        // Sixteen users per organization: keys spread over every partition,
                        // and each key's events keep their order.
                        let user = format!("user-{}", n % 16);
                        records::user_created(&format!("chg-{org}-{n}"), &org, &user)
                    })
                    .collect();
                let sends = batch.iter().map(|(key, value)| {
                    producer.send(
                        rdkafka::producer::FutureRecord::to(&input)
                            .key(key)
                            .payload(value),
                        Duration::from_secs(30),
                    )
                });
                for result in futures::future::join_all(sends).await {
                    result.unwrap_or_else(|(e, _)| panic!("record not acknowledged: {e}"));
                }
                n += 1;
            }
            n * ORGS
        })
    };

    // The rolling restart, each process stopped with SIGTERM and started again, in turn, once
    // the group has settled with the one before, each begun right after a registration.
    let (next_restart, mut restart_now) = tokio::sync::mpsc::unbounded_channel::<()>();
    let rolling = {
        let configs = configs.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..services.len() {
                restart_now.blocking_recv().expect("a restart signal");
                let began = started.elapsed();
                restart(&mut services[i], &configs[i]);
                let end = Instant::now() + Duration::from_secs(60);
                while let Err(owned) = is_settled(&services, PARTITIONS) {
                    assert!(Instant::now() < end, "the group did not settle: {owned:?}");
                    // Polls files the processes write: nothing to wait on but the files.
                    std::thread::sleep(Duration::from_millis(100));
                }
                eprintln!(
                    "process {i} restarted from {began:?} to {:?} (group settled)",
                    started.elapsed()
                );
            }
            services
        })
    };

    // Meanwhile the organizations are registered one by one, through the processes in turn,
    // each right after a burst of changes to organizations without traffic: every process's
    // view of the registry then trails its input for a while, and records stamped after a
    // registration reach processes that do not know it yet.
    let quiet = endpoint(&receiver.url, json!({})).to_string().into_bytes();
    let mut tick = tokio::time::interval(Duration::from_millis(1500));
    for k in 0..ORGS {
        tick.tick().await;
        let burst: Vec<(String, Vec<u8>)> = (0..QUIET)
            .map(|j| (format!("quiet-{k}-{j}"), quiet.clone()))
            .collect();
        kafka::produce(&registry, &burst).await;
        let put = Instant::now();
        let (through, body) =
            put_through_any(&admins, k % 3, &org(k), &endpoint(&receiver.url, json!({}))).await;
        eprintln!(
            "{} registered through process {through} at {:?} (applied there {:?} after its \
             burst): {}",
            org(k),
            started.elapsed(),
            put.elapsed(),
            body["registered_at"]
        );
        if k % 2 == 1 {
            let _ = next_restart.send(());
        }
    }
    let services = rolling.await.expect("the rolling restart");
    // The last one registered takes some traffic too before the producer stops.
    receiver
        .wait_until(
            Duration::from_secs(30),
            "events of the last organization",
            |received| {
                received
                    .iter()
                    .filter(|r| r.json()["organization_id"] == org(ORGS - 1).as_str())
                    .count()
                    >= 20
            },
        )
        .await;
    stop.cancel();
    let produced = producing.await.expect("the producer");
    all_done(&topics, PARTITIONS, true, Duration::from_secs(60)).await;

    // Every process holds the same registration times.
    let apis: Vec<Api> = admins.iter().map(|admin| Api::new(*admin)).collect();
    let mut registered_at: HashMap<String, i64> = HashMap::new();
    for k in 0..ORGS {
        let mut at = Vec::new();
        for api in &apis {
            let (status, body) = api.get(&org(k)).await;
            assert_eq!(status, 200, "{body}");
            at.push(millis(&body["registered_at"]));
        }
        assert!(
            at.iter().all(|t| *t == at[0]),
            "{} has one registration time on every process: {at:?}",
            org(k)
        );
        registered_at.insert(org(k), at[0]);
    }

    // What is owed, from the input topic itself: each record whose organization was
    // registered at its time.
    let input = kafka::consume(&topics.input, produced, Duration::from_secs(60)).await;
    assert_eq!(input.len(), produced, "every record read back");
    let mut owed = HashSet::new();
    let mut not_owed = HashSet::new();
    // Each record, told apart: its organization, place, and time from the registration.
    let mut described = HashMap::new();
    let mut near = 0;
    for record in &input {
        let event = records::event_of(&record.value);
        let after =
            record.timestamp.expect("a record time") - registered_at[&event.organization_id];
        if (0..1000).contains(&after) {
            near += 1;
        }
        described.insert(
            event.id.clone(),
            format!(
                "{} at {}@{}, stamped {after} ms after its registration",
                event.organization_id, record.partition, record.offset
            ),
        );
        if after >= 0 {
            owed.insert(event.id);
        } else {
            not_owed.insert(event.id);
        }
    }
    let received = receiver.delivered();
    let delivered: HashSet<String> = received.iter().map(|r| r.event_id()).collect();
    let list = |ids: Vec<&String>| -> Vec<String> {
        ids.iter()
            .take(10)
            .map(|id| {
                described
                    .get(*id)
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            })
            .collect()
    };
    let missing: Vec<&String> = owed.difference(&delivered).collect();
    let wrong: Vec<&String> = delivered.difference(&owed).collect();
    eprintln!(
        "{produced} records: {} owed ({near} within 1 s of their registration), {} before \
         their organization's registration; {} deliveries ({} duplicates); took {:?}",
        owed.len(),
        not_owed.len(),
        received.len(),
        received.len() - delivered.len(),
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "{} owed events never delivered (skipped), e.g. {:#?}",
        missing.len(),
        list(missing.clone())
    );
    assert!(
        wrong.is_empty(),
        "{} events delivered that were not owed, e.g. {:#?}",
        wrong.len(),
        list(wrong.clone())
    );
    assert!(
        !not_owed.is_empty() && near > 0,
        "both sides of the rule were exercised"
    );
    drop(services);
}

/// A changed URL applies from the next attempt of events already in their retries: events
/// failing at the old endpoint are parked with their schedule, and their next retry goes to
/// the new one (the schedule carries on: no first attempt again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_their_retries_go_to_the_changed_url_at_their_next_attempt() {
    let topics = Topics::create(2).await;
    let down = Receiver::start(503).await;
    let up = Receiver::start(200).await;
    let admin = local_address();
    let (_, sections) = fresh_registry(Some(admin), None).await;
    let _service = Service::start_with_registry(&(topics.config("") + &sections), &[]);
    // Retries 2, 4, 6, 8 and 10 s after the first attempt (time compressed for the test).
    let retry = json!({ "retry": {
        "schedule": ["2s", "4s", "6s", "8s", "10s"], "max_jitter": "0s", "budget": "12s",
        "allow_below_minimum": true
    }});
    let api = Api::new(admin);
    let (status, body) = api.put("acme", &endpoint(&down.url, retry.clone())).await;
    assert_eq!(status, 201, "{body}");

    let input = records::users_created("acme", 6);
    kafka::produce(&topics.input, &input).await;
    let want = records::ids(&input);
    // Every event failed its first attempt at the old endpoint.
    down.wait_until(
        Duration::from_secs(30),
        "a first attempt of every event at the old URL",
        |received| {
            let got: HashSet<String> = received.iter().map(|r| r.event_id()).collect();
            want.is_subset(&got)
        },
    )
    .await;
    let (status, body) = api.put("acme", &endpoint(&up.url, retry)).await;
    assert_eq!(status, 200, "{body}");
    let changed = Instant::now();

    up.wait_delivered(
        &want,
        Duration::from_secs(30),
        "every event delivered at the new URL",
    )
    .await;
    // At their next retry (2 s after the first attempt at the latest), not after a new
    // schedule, and never at the old URL again.
    assert!(
        changed.elapsed() < Duration::from_secs(10),
        "delivered {:?} after the change",
        changed.elapsed()
    );
    // An attempt that started before the change may still land just after it.
    let settled = changed + Duration::from_millis(500);
    let old_after: Vec<_> = down
        .received()
        .into_iter()
        .filter(|r| r.at > settled)
        .collect();
    assert!(
        old_after.is_empty(),
        "{} requests reached the old URL after the change",
        old_after.len()
    );
}
