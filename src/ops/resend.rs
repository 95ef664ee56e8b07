//! `consent-webhooks resend`: one organization's webhooks of a time range, delivered again,
//! without touching the consumer group or the other organizations.
//!
//! The answer to "our endpoint lost an hour of webhooks". It reads the input topic with a
//! consumer of its own (assigned partitions, no group membership, nothing committed), from the
//! first record at or after `--since` to the first at or after `--until` (or to the end the topic
//! has when the resend starts), derives every record as the pipeline does, and delivers only the
//! given organization's events, with the ids the pipeline gave them (receivers that already have
//! one drop it by its `webhook-id`).
//!
//! Guarantees:
//! - the consumer group's offsets and the other organizations are never touched;
//! - the events of one entity (the same record key) are delivered in source order, one after
//!   the other; others concurrently, within the endpoint's `concurrency` and
//!   `max_in_flight_requests`;
//! - an event that cannot be delivered (after `--retries` retries on the organization's
//!   schedule) is written to the dead-letter topic like the pipeline's, so nothing is lost;
//! - the range ends: offsets are fixed when the resend starts.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::deadletter::Producers;
use crate::delivery::Deliverer;
use crate::derive::{derive_record, Derived};
use crate::kafka::offsets_for_time;

use super::redrive::deliver::{Job, Redriver, Tally};
use super::redrive::scan::{capture_ranges, parse_time, Ranges, Scanner};
use super::redrive::{fatal_error, print_summary, stop_on_fatal, stop_on_signal, Progress};

#[derive(Debug, Args)]
pub struct ResendArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArgs,
    /// The organization whose webhooks are sent again (it must be configured).
    #[arg(long = "organization", value_name = "ORG")]
    pub organization: String,
    /// From the first input record at or after this time (RFC 3339, e.g. 2026-11-27T09:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time_arg)]
    pub since: DateTime<Utc>,
    /// Up to the first input record at or after this time (RFC 3339); default: the end the
    /// topic has when the resend starts.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time_arg)]
    pub until: Option<DateTime<Utc>>,
    /// Retries after the first attempt of each event, on the organization's retry schedule
    /// (never more than the schedule has). Default: one attempt, no retry.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: usize,
    /// List what would be sent, deliver and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_time_arg(value: &str) -> Result<DateTime<Utc>, String> {
    parse_time(value)
        .ok_or_else(|| format!("{value:?} is not an RFC 3339 time, e.g. 2026-11-27T09:00:00Z"))
}

/// Events held in memory (queued or being delivered) at most.
const MAX_PENDING: usize = 1000;
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit status: 0 done (even if some failed), 1 infrastructure error, 2 configuration or usage
/// error, 130 interrupted.
pub fn run(args: ResendArgs) -> anyhow::Result<ExitCode> {
    if let Some(until) = args.until {
        if args.since >= until {
            eprintln!("--since ({}) must be before --until ({until})", args.since);
            return Ok(ExitCode::from(2));
        }
    }
    let settings = match args.config.load_or_exit() {
        Ok(settings) => settings,
        Err(usage) => return Ok(usage),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("resend")
        .build()?;
    runtime.block_on(async move {
        // With the registry on, its organizations count too.
        let settings = crate::registry::with_registered(settings).await?;
        if !settings.organizations.contains_key(&args.organization) {
            eprintln!(
                "organization {:?} has no endpoint (config file or registry); known: {}",
                args.organization,
                settings
                    .organizations
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(ExitCode::from(2));
        }
        resend(settings, args).await
    })
}

/// What one run saw and did.
#[derive(Debug, Default)]
struct Summary {
    dry_run: bool,
    interrupted: bool,
    read: u64,
    rejected: u64,
    suppressed: u64,
    other_organizations: u64,
    selected: u64,
    tally: Tally,
}

async fn resend(settings: Settings, args: ResendArgs) -> anyhow::Result<ExitCode> {
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    tokio::spawn(stop_on_signal("resend", stop.clone(), abort.clone()));
    let kafka = &settings.kafka;
    let topic = kafka.input_topic.clone();
    let ranges = tokio::task::block_in_place(|| time_ranges(&settings, &args))?;
    let total: i64 = ranges.values().map(|(start, end)| end - start).sum();
    tracing::info!(
        topic,
        organization = args.organization,
        records = total,
        "resend: reading the input topic"
    );

    let mut summary = Summary {
        dry_run: args.dry_run,
        ..Summary::default()
    };
    let tty = std::io::stderr().is_terminal();
    let reading = Progress::new(tty, "reading", total as u64);
    let redriver = if args.dry_run || ranges.is_empty() {
        None
    } else {
        let deliverer =
            Deliverer::new(&settings.delivery).context("cannot build the HTTP client")?;
        let producers = Producers::new(kafka).context("cannot create the Kafka producer")?;
        tokio::spawn(stop_on_fatal(producers.clone(), stop.clone()));
        let redriver = Redriver::new(
            &settings,
            deliverer,
            producers.clone(),
            args.retries,
            stop.clone(),
            abort.clone(),
            Box::new(|_: &Tally| {}),
        )
        .without_markers();
        Some((Arc::new(redriver), producers))
    };
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    let mut out = std::io::stdout().lock();
    let read = async {
        if ranges.is_empty() {
            return Ok(());
        }
        let mut scanner = Scanner::new(kafka, &topic, &ranges)?;
        loop {
            let next = tokio::select! {
                next = scanner.next() => next?,
                _ = stop.cancelled() => return Ok(()),
            };
            let Some(message) = next else { return Ok(()) };
            summary.read += 1;
            reading.set(summary.read, || format!("{} selected", summary.selected));
            let event = match derive_record(message.payload().unwrap_or_default(), &settings.rules)
            {
                Err(_) => {
                    summary.rejected += 1;
                    continue;
                }
                Ok(Derived::Suppressed(_)) => {
                    summary.suppressed += 1;
                    continue;
                }
                Ok(Derived::Webhook(event)) => event,
            };
            if event.organization_id != args.organization {
                summary.other_organizations += 1;
                continue;
            }
            summary.selected += 1;
            let at = (message.partition(), message.offset());
            let Some((redriver, _)) = &redriver else {
                writeln!(
                    out,
                    "would resend {} type={} created_at={} at={}/{}",
                    event.id,
                    event.event_type.as_str(),
                    event.occurred_at.to_rfc3339(),
                    at.0,
                    at.1
                )?;
                continue;
            };
            let key = match message.key() {
                Some(key) => String::from_utf8_lossy(key).into_owned(),
                None => event.id.clone(),
            };
            let permit = tokio::select! {
                permit = pending.clone().acquire_owned() => permit.expect("never closed"),
                _ = stop.cancelled() => return Ok(()),
            };
            redriver.submit(Job::derived(event, &topic, at, key), permit);
        }
    }
    .await;
    drop(out);
    reading.finish();
    let mut fatal = None;
    if let Some((redriver, producers)) = redriver {
        summary.tally = redriver.finish().await;
        producers.flush(Duration::from_secs(10));
        fatal = fatal_error(&producers);
    }
    summary.interrupted = stop.is_cancelled();
    if !args.dry_run {
        summary.tally.not_attempted += summary.selected.saturating_sub(summary.tally.done());
    }
    let printed = finish(&summary);
    read.and(fatal.map_or(printed, Err))
}

/// Per partition of the input topic, the offsets from `--since` to `--until` (or to the end
/// the partition has now); partitions with nothing in the range are left out.
fn time_ranges(settings: &Settings, args: &ResendArgs) -> anyhow::Result<Ranges> {
    let kafka = &settings.kafka;
    let topic = &kafka.input_topic;
    let now = capture_ranges(kafka, topic)?;
    let consumer: BaseConsumer = crate::kafka::client_config(kafka, &[])
        .create()
        .context("cannot create a Kafka client")?;
    let partitions: Vec<i32> = now.keys().copied().collect();
    let at = |time| {
        offsets_for_time(&consumer, topic, &partitions, time, LOOKUP_TIMEOUT)
            .map_err(anyhow::Error::msg)
    };
    let since = at(args.since)?;
    let until = match args.until {
        Some(until) => at(until)?,
        None => vec![None; partitions.len()],
    };
    let mut ranges = Ranges::new();
    for ((partition, since), until) in partitions.into_iter().zip(since).zip(until) {
        let (_, high) = now[&partition];
        let (Some(start), end) = (since, until.unwrap_or(high).min(high)) else {
            continue;
        };
        if end > start {
            ranges.insert(partition, (start, end));
        }
    }
    Ok(ranges)
}

fn finish(summary: &Summary) -> anyhow::Result<ExitCode> {
    let t = &summary.tally;
    let title = match (summary.dry_run, summary.interrupted) {
        (true, _) => "resend summary (dry run: nothing delivered or written)",
        (false, true) => "resend summary (interrupted)",
        (false, false) => "resend summary",
    };
    let rows: [(&str, String); 10] = [
        ("records read", summary.read.to_string()),
        ("rejected records", summary.rejected.to_string()),
        ("suppressed", summary.suppressed.to_string()),
        (
            "other organizations' events",
            summary.other_organizations.to_string(),
        ),
        ("selected", summary.selected.to_string()),
        ("delivered", t.delivered.to_string()),
        ("dead-lettered", t.failed_again_total().to_string()),
        ("dead-lettered by reason", t.failed_by_reason()),
        ("not accepted by endpoint", t.not_accepted.to_string()),
        ("not attempted", t.not_attempted.to_string()),
    ];
    print_summary(title, &rows, summary.interrupted)
}
