//! `consent-webhooks replay`: move the consumer group's committed offsets back (to a time, by a
//! duration, to the earliest record) so the stopped service processes those records again.
//!
//! Guarantees:
//! - Dry run unless `--execute`: without it nothing is written to Kafka.
//! - Refuses to write while the group has live members (the broker would reject the commit, or
//!   a running member would overwrite it on its next commit).
//! - Only ever moves an offset back: a partition whose committed offset is already at or before
//!   its target is left where it is, so a replay never skips records the group has not
//!   processed yet (`kafka-consumer-groups --reset-offsets` would move it forward).
//! - Commits without joining the group: a consumer with the group's `group.id` that never
//!   subscribes commits explicit offsets, which the broker accepts for an empty group.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use clap::{ArgGroup, Args};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::Settings;

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["to_datetime", "by_duration", "to_earliest"])
))]
#[command(after_long_help = "\
Stop the service first (e.g. kubectl scale deployment/consent-webhooks --replicas=0): replay \
refuses to commit while the group has live members. Offsets only ever move back; a partition \
already at or before its target is left as is. The service starts again from the new offsets \
and delivers the same event ids again.

Exit status: 0 done (dry run, or executed), 1 refused (live members) or Kafka failed, \
2 usage or configuration error.")]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArgs,
    /// Go back to the first record at or after TIME (RFC 3339 with a time zone, e.g.
    /// 2026-11-27T09:00:00Z or 2026-11-27T10:00:00+01:00).
    #[arg(long, value_name = "TIME", value_parser = parse_datetime)]
    pub to_datetime: Option<DateTime<Utc>>,
    /// Go back to the first record at or after now minus DURATION (e.g. 30m, 2h, 1day 12h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub by_duration: Option<Duration>,
    /// Go back to the earliest record still in the topic.
    #[arg(long)]
    pub to_earliest: bool,
    /// Only these partitions of the input topic (comma-separated); default: all.
    #[arg(long, value_name = "P,...", value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// Commit the new offsets; without it, only print what would change.
    #[arg(long)]
    pub execute: bool,
    /// Timeout of each request to Kafka.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// How far back to go.
#[derive(Debug, Clone, Copy)]
enum Target {
    Earliest,
    /// The first record whose timestamp is at or after this one.
    Time(DateTime<Utc>),
}

/// Why a run ended without doing its job; the exit status follows from the kind.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Exit status 2: the command line or the configuration is wrong.
    #[error("{0}")]
    Usage(String),
    /// Exit status 1: refused (live members) or Kafka failed.
    #[error("{0}")]
    Failed(String),
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    match replay(&args) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(Failure::Usage(message)) => {
            eprintln!("replay: {message}");
            Ok(ExitCode::from(2))
        }
        Err(Failure::Failed(message)) => {
            eprintln!("replay: {message}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn replay(args: &ReplayArgs) -> Result<(), Failure> {
    let settings = args
        .config
        .load()
        .map_err(|e| Failure::Usage(format!("invalid configuration: {e}")))?;
    let now = Utc::now();
    let target = match (args.to_earliest, args.to_datetime, args.by_duration) {
        (true, _, _) => Target::Earliest,
        (_, Some(time), _) => Target::Time(time),
        (_, _, Some(duration)) => {
            let back = chrono::Duration::from_std(duration)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .filter(|t| t.timestamp_millis() >= 0)
                .ok_or_else(|| {
                    Failure::Usage(format!(
                        "--by-duration {} goes back before 1970-01-01T00:00:00Z; use --to-earliest",
                        humantime::format_duration(duration)
                    ))
                })?;
            Target::Time(back)
        }
        _ => unreachable!("clap requires exactly one target"),
    };
    let kafka = &settings.kafka;
    let group = kafka.group_id.as_str();
    let topic = kafka.input_topic.as_str();
    let consumer: BaseConsumer = crate::kafka::client_config(kafka, &[])
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Failure::Usage(format!("cannot create the Kafka client: {e}")))?;
    let timeout = args.timeout;

    let partitions = partitions(&consumer, topic, &args.partitions, timeout)?;
    let members = live_members(&consumer, group, timeout)?;
    if args.execute && !members.is_empty() {
        return Err(Failure::Failed(refusal(group, &members)));
    }

    let before = committed(&consumer, topic, &partitions, timeout)?;
    let mut rows = Vec::with_capacity(partitions.len());
    let times = match target {
        Target::Time(time) => Some(
            crate::kafka::offsets_for_time(&consumer, topic, &partitions, time, timeout)
                .map_err(Failure::Failed)?,
        ),
        Target::Earliest => None,
    };
    let reset = ResetPolicy::of(&settings);
    for (i, &partition) in partitions.iter().enumerate() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| {
                Failure::Failed(format!(
                    "cannot read the offsets of {topic}/{partition}: {e}"
                ))
            })?;
        let wanted = match &times {
            Some(times) => times[i].unwrap_or(high),
            None => low,
        };
        rows.push(Row::plan(
            partition,
            before[i],
            low,
            high,
            wanted.clamp(low, high),
            reset,
        ));
    }

    print_plan(&settings, target, now, &rows, args.execute);
    if !args.execute {
        if !members.is_empty() {
            println!("warning: {}", refusal(group, &members));
        }
        println!("dry run: nothing changed; add --execute to commit the target offsets");
        return Ok(());
    }

    let mut moves = TopicPartitionList::new();
    for row in rows.iter().filter(|r| r.moves) {
        moves
            .add_partition_offset(topic, row.partition, Offset::Offset(row.target))
            .map_err(|e| Failure::Failed(format!("cannot build the offset list: {e}")))?;
    }
    if moves.count() == 0 {
        println!("nothing to change: no partition moves");
        return Ok(());
    }
    // The broker accepts offsets from a client outside the group only while the group is empty;
    // a member that joined since the check above makes the commit fail here.
    consumer
        .commit(&moves, CommitMode::Sync)
        .map_err(|e| commit_failure(group, e))?;
    let moved: Vec<i32> = rows
        .iter()
        .filter(|r| r.moves)
        .map(|r| r.partition)
        .collect();
    let after = committed(&consumer, topic, &moved, timeout)?;
    for (row, now) in rows.iter().filter(|r| r.moves).zip(&after) {
        if *now != Some(row.target) {
            return Err(Failure::Failed(format!(
                "partition {}: committed {} but the group now reads {}; check the group with \
                 kafka-consumer-groups --describe",
                row.partition,
                row.target,
                display_offset(*now)
            )));
        }
    }
    println!(
        "committed: group {group} now starts {} partition(s) of {topic} at the target offsets; \
         start the service again to process them",
        moved.len()
    );
    Ok(())
}

/// What the service does with a partition that has no (valid) committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetPolicy {
    Earliest,
    Latest,
    /// `error` or anything else: the service does not start such a partition by itself.
    Other,
}

impl ResetPolicy {
    /// The service sets `auto.offset.reset=earliest` unless the operator's properties override.
    fn of(settings: &Settings) -> ResetPolicy {
        match settings
            .kafka
            .properties
            .get("auto.offset.reset")
            .map(String::as_str)
            .unwrap_or("earliest")
        {
            "earliest" | "smallest" | "beginning" => ResetPolicy::Earliest,
            "latest" | "largest" | "end" => ResetPolicy::Latest,
            _ => ResetPolicy::Other,
        }
    }
}

/// One partition of the plan.
#[derive(Debug)]
struct Row {
    partition: i32,
    committed: Option<i64>,
    target: i64,
    /// Whether the committed offset changes.
    moves: bool,
    /// Records processed again once the service starts (0 when nothing moves).
    again: i64,
    note: String,
}

impl Row {
    fn plan(
        partition: i32,
        committed: Option<i64>,
        low: i64,
        high: i64,
        target: i64,
        reset: ResetPolicy,
    ) -> Row {
        // Where the service would start this partition without a replay.
        let (start, why) = match committed {
            Some(c) if (low..=high).contains(&c) => (Some(c), None),
            _ => {
                let why = if committed.is_none() {
                    "no committed offset"
                } else {
                    "committed offset outside the topic's records (retention)"
                };
                match reset {
                    ResetPolicy::Earliest => (Some(low), Some((why, Some("the earliest record")))),
                    ResetPolicy::Latest => {
                        (Some(high), Some((why, Some("the end of the partition"))))
                    }
                    ResetPolicy::Other => (None, Some((why, None))),
                }
            }
        };
        let (moves, again, moving) = match start {
            Some(start) if target < start => (true, start - target, None),
            Some(start) if target > start => (
                false,
                0,
                Some(
                    "target is after where the group starts: left unchanged (a replay never \
                     skips records)"
                        .to_owned(),
                ),
            ),
            Some(_) => (
                false,
                0,
                why.map(|_| "nothing to replay; left as is".to_owned()),
            ),
            None => (true, high - target, None),
        };
        let reset_note = why.map(|(why, from)| match from {
            Some(from) => format!("{why}: the service starts at {from} (auto.offset.reset)"),
            None => format!("{why}; auto.offset.reset is neither earliest nor latest"),
        });
        let note = [reset_note, moving]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        Row {
            partition,
            committed,
            target,
            moves,
            again,
            note,
        }
    }
}

fn print_plan(
    settings: &Settings,
    target: Target,
    now: DateTime<Utc>,
    rows: &[Row],
    execute: bool,
) {
    let kafka = &settings.kafka;
    let what = match target {
        Target::Earliest => "the earliest record of each partition".to_owned(),
        Target::Time(time) => format!(
            "the first record at or after {}",
            time.to_rfc3339_opts(SecondsFormat::Millis, true)
        ),
    };
    println!(
        "{} group {}, topic {}: go back to {what}",
        if execute {
            "replay"
        } else {
            "replay (dry run)"
        },
        kafka.group_id,
        kafka.input_topic
    );
    if let Target::Time(time) = target {
        if time > now {
            println!(
                "note: {} is in the future: no partition has a record at or after it, so \
                 nothing is replayed",
                time.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
    }
    let header = ["partition", "committed", "target", "again", "note"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.partition.to_string(),
                display_offset(r.committed),
                r.target.to_string(),
                r.again.to_string(),
                r.note.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let text = format!(
            "{:>w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        println!("{}", text.trim_end());
    };
    line(header);
    for row in &cells {
        line(row.each_ref().map(String::as_str));
    }
    let total: i64 = rows.iter().map(|r| r.again).sum();
    println!(
        "total: {total} record(s) {} processed again",
        if execute { "will be" } else { "would be" }
    );
}

fn display_offset(offset: Option<i64>) -> String {
    offset.map_or_else(|| "none".to_owned(), |o| o.to_string())
}

/// The input topic's partitions, or the `--partitions` subset after checking they exist.
fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
    wanted: &[i32],
    timeout: Duration,
) -> Result<Vec<i32>, Failure> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| Failure::Failed(format!("cannot read the metadata of {topic}: {e}")))?;
    let Some(info) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(Failure::Failed(format!("topic {topic} not found")));
    };
    if let Some(error) = info.error() {
        return Err(Failure::Failed(format!(
            "topic {topic}: {}",
            RDKafkaErrorCode::from(error)
        )));
    }
    let all: BTreeSet<i32> = info.partitions().iter().map(|p| p.id()).collect();
    if all.is_empty() {
        return Err(Failure::Failed(format!("topic {topic} has no partitions")));
    }
    if wanted.is_empty() {
        return Ok(all.into_iter().collect());
    }
    let wanted: BTreeSet<i32> = wanted.iter().copied().collect();
    let missing: Vec<String> = wanted.difference(&all).map(ToString::to_string).collect();
    if !missing.is_empty() {
        return Err(Failure::Usage(format!(
            "--partitions: {topic} has no partition {} (it has {})",
            missing.join(", "),
            all.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(wanted.into_iter().collect())
}

/// `client_id@host` of each live member of `group`.
fn live_members(
    consumer: &BaseConsumer,
    group: &str,
    timeout: Duration,
) -> Result<Vec<String>, Failure> {
    let list = consumer
        .fetch_group_list(Some(group), timeout)
        .map_err(|e| Failure::Failed(format!("cannot describe group {group}: {e}")))?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members())
        .map(|m| {
            format!(
                "{}@{}",
                m.client_id(),
                m.client_host().trim_start_matches('/')
            )
        })
        .collect())
}

fn refusal(group: &str, members: &[String]) -> String {
    format!(
        "group {group} has {} live member(s) ({}): refusing to move its offsets while it is \
         consuming. Stop every replica first (e.g. kubectl scale deployment/consent-webhooks \
         --replicas=0), wait until they have left the group, then run again. A replica that \
         was killed rather than stopped stays a member until its session.timeout.ms expires.",
        members.len(),
        members.join(", ")
    )
}

fn commit_failure(group: &str, error: KafkaError) -> Failure {
    let joined = matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::StaleMemberEpoch
        )
    );
    if joined {
        Failure::Failed(format!(
            "the commit was rejected because group {group} has live members again ({error}); \
             nothing changed. Stop every replica, then run again."
        ))
    } else {
        Failure::Failed(format!(
            "committing the offsets of group {group} failed: {error}"
        ))
    }
}

/// The group's committed offset of each partition (`None`: nothing committed).
fn committed(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<Option<i64>>, Failure> {
    let mut list = TopicPartitionList::new();
    for &p in partitions {
        list.add_partition(topic, p);
    }
    let list = consumer
        .committed_offsets(list, timeout)
        .map_err(|e| Failure::Failed(format!("cannot read the committed offsets: {e}")))?;
    partitions
        .iter()
        .map(|&p| {
            let element = list
                .find_partition(topic, p)
                .ok_or_else(|| Failure::Failed(format!("no committed offset answer for {p}")))?;
            element.error().map_err(|e| {
                Failure::Failed(format!("cannot read the committed offset of {p}: {e}"))
            })?;
            Ok(match element.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
        })
        .collect()
}

/// `--to-datetime`: RFC 3339 with an explicit offset or `Z`.
fn parse_datetime(text: &str) -> Result<DateTime<Utc>, String> {
    let time = match DateTime::parse_from_rfc3339(text.trim()) {
        Ok(time) => time.with_timezone(&Utc),
        Err(error) => {
            let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .any(|f| NaiveDateTime::parse_from_str(text.trim(), f).is_ok());
            return Err(if naive {
                format!(
                    "{text:?} has no time zone: add Z for UTC (e.g. {}Z) or an offset (e.g. +01:00)",
                    text.trim()
                )
            } else {
                format!(
                    "{error}: expected an RFC 3339 time with a time zone, e.g. \
                     2026-11-27T09:00:00Z or 2026-11-27T10:00:00+01:00"
                )
            });
        }
    };
    if time.timestamp_millis() < 0 {
        return Err(
            "is before 1970-01-01T00:00:00Z, where Kafka timestamps start; use --to-earliest"
                .to_owned(),
        );
    }
    Ok(time)
}

/// `--by-duration`: a humantime duration with units, greater than zero.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}: expected a duration with units, e.g. 30m, 2h, 1day 12h"))?;
    if duration.is_zero() {
        return Err("must be greater than zero (0 would replay nothing)".to_owned());
    }
    Ok(duration)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".to_owned()),
        Err(e) => Err(format!("{e}: expected a duration with units, e.g. 15s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_needs_a_time_zone() {
        assert!(parse_datetime("2026-11-27T09:00:00Z").is_ok());
        assert_eq!(
            parse_datetime("2026-11-27T10:00:00+01:00").unwrap(),
            parse_datetime("2026-11-27T09:00:00Z").unwrap()
        );
        let error = parse_datetime("2026-11-27T09:00:00.000").unwrap_err();
        assert!(error.contains("no time zone"), "{error}");
        let error = parse_datetime("yesterday").unwrap_err();
        assert!(error.contains("RFC 3339"), "{error}");
        let error = parse_datetime("1969-12-31T23:59:59Z").unwrap_err();
        assert!(error.contains("--to-earliest"), "{error}");
    }

    #[test]
    fn duration_needs_units() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert!(parse_duration("30").unwrap_err().contains("e.g. 30m"));
        assert!(parse_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
    }

    #[test]
    fn plan_only_moves_back() {
        let back = Row::plan(0, Some(10), 0, 10, 4, ResetPolicy::Earliest);
        assert!(back.moves);
        assert_eq!(back.again, 6);
        let forward = Row::plan(0, Some(3), 0, 10, 8, ResetPolicy::Earliest);
        assert!(!forward.moves);
        assert_eq!(forward.again, 0);
        assert!(forward.note.contains("never skips"), "{}", forward.note);
        let none = Row::plan(0, None, 0, 10, 0, ResetPolicy::Earliest);
        assert!(!none.moves);
        assert_eq!(none.again, 0);
        assert!(none.note.contains("no committed offset"), "{}", none.note);
        let none_latest = Row::plan(0, None, 0, 10, 2, ResetPolicy::Latest);
        assert!(none_latest.moves);
        assert_eq!(none_latest.again, 8);
    }
}
