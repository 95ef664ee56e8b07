//! `consent-webhooks resend` against a real Kafka broker and real receivers: one organization's
//! webhooks of a time range are sent again, with the pipeline's ids, in key order, without the
//! consumer group and without any other organization; what fails is dead-lettered.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use support::command::{self, Run};
use support::kafka;
use support::receiver::Receiver;
use support::records;
use support::schemas::assert_dead_letter;
use support::service::{organization, Topics};

async fn resend(config: &Path, args: &[&str]) -> Run {
    command::run("resend", config, args).await
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A moment strictly after every record produced so far and before every later one (record
/// timestamps are the producer's milliseconds): waits until the clock has moved past it.
async fn boundary() -> DateTime<Utc> {
    let at = Utc::now() + chrono::Duration::milliseconds(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Utc::now() <= at + chrono::Duration::milliseconds(2) {
        assert!(tokio::time::Instant::now() < deadline, "the clock moves");
        tokio::task::yield_now().await;
    }
    at
}

fn ids(records: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    records::events_by_id(records).into_keys().collect()
}

/// An hour lost by acme's endpoint: only acme's events of that range are sent again, each once,
/// with the pipeline's ids; globex hears nothing, the group is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_delivers_one_organizations_range_and_nothing_else() {
    let topics = Topics::create(2).await;
    let acme = Receiver::start(200).await;
    let globex = Receiver::start(200).await;
    let config = topics.config("")
        + &organization("acme", &acme.url, "")
        + &organization("globex", &globex.url, "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();

    let acme_all = records::users_created("acme", 7);
    let globex_all = records::users_created("globex", 4);
    let (acme_before, acme_lost) = acme_all.split_at(3);
    let (globex_before, globex_lost) = globex_all.split_at(2);
    kafka::produce(&topics.input, acme_before).await;
    kafka::produce(&topics.input, globex_before).await;
    let lost_from = boundary().await;
    kafka::produce(&topics.input, acme_lost).await;
    kafka::produce(&topics.input, globex_lost).await;
    let lost_until = boundary().await;
    // After the range: never sent.
    let acme_after = records::users_created("acme-late", 1);
    kafka::produce(&topics.input, &acme_after).await;

    // A dry run lists what would go, and sends nothing.
    let since = rfc3339(lost_from);
    let until = rfc3339(lost_until);
    let args = [
        "--organization",
        "acme",
        "--since",
        &since,
        "--until",
        &until,
    ];
    let dry = resend(&path, &[&args[..], &["--dry-run"]].concat()).await;
    dry.assert_success();
    let listed: BTreeSet<String> = dry
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would resend "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids(acme_lost), "{}", dry.stdout);
    assert!(acme.received().is_empty() && globex.received().is_empty());

    let run = resend(&path, &args).await;
    run.assert_success();
    let got: Vec<String> = acme.received().iter().map(|r| r.event_id()).collect();
    assert_eq!(got.len(), acme_lost.len(), "each once: {got:?}");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), ids(acme_lost));
    assert!(
        globex.received().is_empty(),
        "no other organization hears anything"
    );
    assert_eq!(run.count("records read"), 6, "{}", run.stdout);
    assert_eq!(run.count("other organizations' events"), 2);
    assert_eq!(run.count("selected"), 4);
    assert_eq!(run.count("delivered"), 4);
    assert_eq!(run.count("dead-lettered"), 0);
    assert_eq!(
        kafka::committed(&topics.group, &topics.input, 2).await,
        [None, None],
        "the consumer group has no offsets"
    );
}

/// An endpoint still failing: every selected event is dead-lettered, with its source record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_dead_letters_what_fails_and_refuses_an_unknown_organization() {
    let topics = Topics::create(1).await;
    let acme = Receiver::start(503).await;
    let config = topics.config("") + &organization("acme", &acme.url, "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
    let since = rfc3339(Utc::now() - chrono::Duration::minutes(1));
    let input = records::users_created("acme", 3);
    kafka::produce(&topics.input, &input).await;

    let unknown = resend(&path, &["--organization", "initech", "--since", &since]).await;
    assert_eq!(unknown.code, Some(2), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("initech"), "{}", unknown.stderr);

    let run = resend(&path, &["--organization", "acme", "--since", &since]).await;
    run.assert_success();
    assert_eq!(run.count("dead-lettered"), 3, "{}", run.stdout);
    let dead = kafka::consume(&topics.dead_letter, 3, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 3);
    let mut offsets = BTreeSet::new();
    for record in &dead {
        let value = records::json_value(record);
        assert_dead_letter(&value);
        assert_eq!(value["reason"], "exhausted");
        assert_eq!(value["source"]["topic"], topics.input.as_str());
        assert_eq!(value["attempts"].as_array().unwrap().len(), 1);
        offsets.insert(value["source"]["offset"].as_i64().unwrap());
    }
    assert_eq!(offsets, BTreeSet::from([0, 1, 2]));
    let got: BTreeSet<String> = acme.received().iter().map(|r| r.event_id()).collect();
    assert_eq!(got, ids(&input));
}
