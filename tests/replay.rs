//! `consent-webhooks replay` against a real broker: the dry run changes nothing, `--execute`
//! moves the stopped group's offsets back so a restarted service delivers the same event ids
//! again (as Kafka's own `kafka-consumer-groups --reset-offsets` does), a group with live
//! members is refused, and bad targets get clear messages.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeZone, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use support::kafka;
use support::receiver::Receiver;
use support::records;
use support::service::{organization, Service, Topics};

const EVENTS: usize = 12;
const PARTITIONS: i32 = 3;
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `consent-webhooks replay --config CONFIG ARGS...`.
async fn replay(config: &Path, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_consent-webhooks"))
        .args(["replay", "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CONSENT_WEBHOOKS_GROUP_ID")
        .output()
        .await
        .expect("run consent-webhooks replay");
    eprintln!(
        "replay {args:?} → {}\nstdout:\n{}stderr:\n{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn group_consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

/// The end offset (high watermark) of each partition.
async fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer = group_consumer(&kafka::unique_name("watermarks"));
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Commits `offsets` (partition, offset) for `group`, as a stopped service would have left them.
async fn commit(group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let (group, topic, offsets) = (group.to_owned(), topic.to_owned(), offsets.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut list = TopicPartitionList::new();
        for (p, o) in offsets {
            list.add_partition_offset(&topic, p, Offset::Offset(o))
                .unwrap();
        }
        group_consumer(&group)
            .commit(&list, CommitMode::Sync)
            .expect("commit");
    })
    .await
    .unwrap()
}

/// Waits until the group's committed offsets are `want`; panics with what they are at the
/// deadline.
async fn wait_committed(group: &str, topic: &str, want: &[Option<i64>]) {
    let end = Instant::now() + DEADLINE;
    loop {
        let got = kafka::committed(group, topic, want.len() as i32).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "committed offsets {got:?}, want {want:?}"
        );
        // Polls the broker: there is no notification of another client's commit.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_config(dir: &tempfile::TempDir, config: &str) -> PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A stopped service that delivered `EVENTS` events once and committed everything.
struct Delivered {
    topics: Topics,
    receiver: Receiver,
    config: String,
    path: PathBuf,
    ids: Vec<String>,
    ends: Vec<i64>,
    _dir: tempfile::TempDir,
}

impl Delivered {
    /// Runs the service until every event is delivered, then stops it with SIGTERM (drained,
    /// committed, left the group) unless `keep_running`.
    async fn run(keep_running: bool) -> (Delivered, Option<Service>) {
        let topics = Topics::create(PARTITIONS).await;
        let receiver = Receiver::start(200).await;
        let config = topics.config("") + &organization("acme", &receiver.url, "");
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, &config);
        let input = records::users_created("acme", EVENTS);
        let mut ids: Vec<String> = records::events_by_id(&input).into_keys().collect();
        ids.sort();
        assert_eq!(ids.len(), EVENTS);

        let mut service = Service::start(&config, &[]);
        kafka::produce(&topics.input, &input).await;
        receiver
            .wait_until(DEADLINE, "every event once", |got| got.len() >= EVENTS)
            .await;
        let ends = end_offsets(&topics.input, PARTITIONS).await;
        assert_eq!(ends.iter().sum::<i64>(), EVENTS as i64);
        let service = if keep_running {
            // The running service commits what is done about every second.
            wait_committed(&topics.group, &topics.input, &some(&ends)).await;
            Some(service)
        } else {
            service.signal("TERM");
            let status = service
                .wait_exit(DEADLINE)
                .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", service.logs()));
            assert!(status.success(), "{status}:\n{}", service.logs());
            assert_eq!(
                kafka::committed(&topics.group, &topics.input, PARTITIONS).await,
                some(&ends),
                "the drained service committed everything"
            );
            None
        };
        let delivered = Delivered {
            topics,
            receiver,
            config,
            path,
            ids,
            ends,
            _dir: dir,
        };
        (delivered, service)
    }

    /// Starts the service again and checks it delivers every event a second time, and nothing
    /// else.
    async fn restart_and_expect_each_id_twice(&self) {
        let _service = Service::start(&self.config, &[]);
        self.receiver
            .wait_until(DEADLINE, "every event a second time", |got| {
                got.len() >= 2 * EVENTS
            })
            .await;
        let mut tally: BTreeMap<String, usize> = BTreeMap::new();
        for r in self.receiver.received() {
            *tally.entry(r.event_id()).or_default() += 1;
        }
        assert_eq!(
            tally.keys().cloned().collect::<Vec<_>>(),
            self.ids,
            "the same event ids, nothing else"
        );
        assert!(
            tally.values().all(|&n| n == 2),
            "each id twice overall: {tally:?}"
        );
        // What was replayed is committed again once done.
        wait_committed(&self.topics.group, &self.topics.input, &some(&self.ends)).await;
    }
}

fn some(offsets: &[i64]) -> Vec<Option<i64>> {
    offsets.iter().copied().map(Some).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_to_earliest_dry_run_then_execute_redelivers_the_same_ids() {
    let (run, _) = Delivered::run(false).await;
    let (group, topic) = (&run.topics.group, &run.topics.input);

    let dry = replay(&run.path, &["--to-earliest"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let out = stdout(&dry);
    assert!(
        out.contains(&format!(
            "total: {EVENTS} record(s) would be processed again"
        )),
        "{out}"
    );
    assert!(out.contains("dry run: nothing changed"), "{out}");
    for (p, end) in run.ends.iter().enumerate() {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&p.to_string()))
            .unwrap_or_else(|| panic!("no row for partition {p}:\n{out}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[1..4],
            [end.to_string(), "0".to_owned(), end.to_string()],
            "partition, committed, target, again: {row}"
        );
    }
    assert_eq!(
        kafka::committed(group, topic, PARTITIONS).await,
        some(&run.ends),
        "a dry run changes nothing"
    );

    let executed = replay(&run.path, &["--to-earliest", "--execute"]).await;
    assert_eq!(executed.status.code(), Some(0), "{}", stderr(&executed));
    let out = stdout(&executed);
    assert!(
        out.contains(&format!(
            "total: {EVENTS} record(s) will be processed again"
        )),
        "{out}"
    );
    assert!(out.contains("committed:"), "{out}");
    assert_eq!(
        kafka::committed(group, topic, PARTITIONS).await,
        vec![Some(0); PARTITIONS as usize],
        "--execute moved every partition to its first record"
    );

    run.restart_and_expect_each_id_twice().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_groups_reset_redelivers_the_same_ids() {
    let (run, _) = Delivered::run(false).await;
    let output = tokio::process::Command::new("bash")
        .arg(kafka::repo_root().join("deploy/local/kafka.sh"))
        .args(["consumer-groups", "--bootstrap-server", kafka::bootstrap()])
        .args(["--group", &run.topics.group, "--topic", &run.topics.input])
        .args(["--reset-offsets", "--to-earliest", "--execute"])
        .output()
        .await
        .expect("run kafka-consumer-groups");
    assert!(
        output.status.success(),
        "kafka-consumer-groups: {}\n{}\n{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(
        kafka::committed(&run.topics.group, &run.topics.input, PARTITIONS).await,
        vec![Some(0); PARTITIONS as usize]
    );
    run.restart_and_expect_each_id_twice().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_refused_while_the_group_has_live_members() {
    let (run, service) = Delivered::run(true).await;
    let _service = service.expect("running");
    let (group, topic) = (&run.topics.group, &run.topics.input);

    let refused = replay(&run.path, &["--to-earliest", "--execute"]).await;
    assert_eq!(refused.status.code(), Some(1), "refused: exit status 1");
    let err = stderr(&refused);
    assert!(err.contains("1 live member(s)"), "{err}");
    assert!(err.contains("refusing to move its offsets"), "{err}");
    assert!(err.contains("--replicas=0"), "{err}");
    assert!(
        stdout(&refused).is_empty(),
        "no plan is printed when refused"
    );

    // A dry run still shows the plan, with the same warning.
    let dry = replay(&run.path, &["--by-duration", "1h"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let out = stdout(&dry);
    assert!(out.contains("warning: group"), "{out}");
    assert!(out.contains("live member(s)"), "{out}");

    assert_eq!(
        kafka::committed(group, topic, PARTITIONS).await,
        some(&run.ends),
        "offsets unchanged"
    );
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Targets by time on records with known timestamps (no service needed: the group's offsets
/// are committed as a stopped service leaves them), partition selection, and usage errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_by_time_partitions_and_usage_errors() {
    let topics = Topics::create(2).await;
    let (group, topic) = (topics.group.clone(), topics.input.clone());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &(topics.config("") + &organization("acme", "http://127.0.0.1:9/hooks", "")),
    );
    // Partition 0: 4 records two hours old, then 6 records ten minutes old; partition 1 empty,
    // with nothing committed.
    let now = Utc::now().timestamp_millis();
    let old = now - 2 * 3600 * 1000;
    let recent = now - 10 * 60 * 1000;
    let timestamps: Vec<i64> = (0..10)
        .map(|i| if i < 4 { old + i } else { recent + i })
        .collect();
    let producer = kafka::producer();
    for (i, ts) in timestamps.iter().enumerate() {
        let (key, value) = records::user_created(&format!("chg-{i}"), "acme", &format!("u{i}"));
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .timestamp(*ts)
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
    }
    commit(&group, &topic, &[(0, 10)]).await;
    let before = kafka::committed(&group, &topic, 2).await;
    assert_eq!(before, vec![Some(10), None]);

    let total = |output: &Output| -> i64 {
        let out = stdout(output);
        let line = out
            .lines()
            .find(|l| l.starts_with("total: "))
            .unwrap_or_else(|| panic!("no total line:\n{out}"));
        line["total: ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };

    // By duration: back one hour reaches the first recent record.
    let output = replay(&path, &["--by-duration", "1h"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(total(&output), 6);
    let out = stdout(&output);
    assert!(
        out.contains("none") && out.contains("no committed offset"),
        "partition 1 has nothing committed, and says why: {out}"
    );

    // To a time between two records: the first record at or after it.
    let output = replay(&path, &["--to-datetime", &rfc3339(old + 2)]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(total(&output), 8);

    // The past edge: before every record is the same as --to-earliest.
    let output = replay(&path, &["--to-datetime", "1970-01-01T00:00:00Z"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(total(&output), 10);
    let output = replay(&path, &["--to-earliest"]).await;
    assert_eq!(total(&output), 10);

    // The future edge: no record at or after it, nothing replayed, nothing changed.
    let future = rfc3339(now + 24 * 3600 * 1000);
    let output = replay(&path, &["--to-datetime", &future, "--execute"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(total(&output), 0);
    let out = stdout(&output);
    assert!(out.contains("is in the future"), "{out}");
    assert!(out.contains("nothing to change"), "{out}");
    assert_eq!(kafka::committed(&group, &topic, 2).await, before);

    // --partitions: only those rows; a partition the topic lacks is a usage error.
    let output = replay(&path, &["--to-earliest", "--partitions", "1"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(total(&output), 0);
    let rows: Vec<String> = stdout(&output)
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with("total"))
        .map(str::to_owned)
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].trim_start().starts_with("1 "), "{rows:?}");
    let output = replay(&path, &["--to-earliest", "--partitions", "0,7"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("has no partition 7"));

    // Moving back one partition only, then checking the result.
    let output = replay(
        &path,
        &[
            "--to-datetime",
            &rfc3339(recent),
            "--partitions",
            "0",
            "--execute",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(total(&output), 6);
    assert_eq!(
        kafka::committed(&group, &topic, 2).await,
        vec![Some(4), None]
    );
    // Never forward: a later target leaves the partition where it is.
    let output = replay(&path, &["--to-datetime", &rfc3339(recent + 8), "--execute"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(total(&output), 0);
    assert!(stdout(&output).contains("never skips records"));
    assert_eq!(
        kafka::committed(&group, &topic, 2).await,
        vec![Some(4), None]
    );

    // Usage errors: exit status 2 and a message naming the problem.
    let usage: &[(&[&str], &str)] = &[
        (&[], "--to-earliest"),
        (
            &["--to-earliest", "--by-duration", "1h"],
            "cannot be used with",
        ),
        (
            &["--to-datetime", "2026-11-27T09:00:00.000"],
            "no time zone",
        ),
        (&["--to-datetime", "yesterday"], "RFC 3339"),
        (&["--to-datetime", "1969-12-31T23:59:59Z"], "--to-earliest"),
        (&["--by-duration", "30"], "e.g. 30m"),
        (&["--by-duration", "soon"], "e.g. 30m"),
        (&["--by-duration", "0s"], "greater than zero"),
        (&["--by-duration", "100000years"], "before 1970"),
    ];
    for (args, needle) in usage {
        let output = replay(&path, args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let err = stderr(&output);
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
    let output = replay(Path::new("/nonexistent/config.toml"), &["--to-earliest"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("invalid configuration"));

    assert_eq!(
        kafka::committed(&group, &topic, 2).await,
        vec![Some(4), None]
    );
}
