//! `consent-webhooks redrive`: deliver dead letters again, with the current configuration.
//!
//! Two passes over the dead-letter topic, between the offsets it has when the redrive starts (so
//! it ends, and never reads what it writes back):
//! 1. **index** ([`select`]): every record is read; for each event id only its newest
//!    dead-letter record counts (a record written back by a redrive carries every attempt), and
//!    resolution markers say which records an earlier redrive delivered. Filters and `--limit`
//!    pick the selection; only small entries are kept in memory.
//! 2. **deliver** ([`deliver`]): the selected records are read again and delivered, bounded in
//!    memory and concurrency, each ending in a resolution marker (delivered) or a write-back
//!    (failed again).
//!
//! Guarantee (idempotence across runs, with Kafka as the only state): an event delivered by a
//! redrive is not delivered by a later one, because its marker names the very dead-letter record
//! it delivered and that record stays the event's newest. The marker is written after the
//! endpoint accepted the event, so a crash between the two can deliver it once more (the
//! `webhook-id` lets receivers drop the duplicate); two redrives must not run at the same time.

pub(crate) mod deliver;
pub(crate) mod scan;
mod select;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::message::{Message, OwnedMessage};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::deadletter::{DeadLetter, DeadLetterReason, Producers};
use crate::delivery::Deliverer;

use deliver::{Job, Redriver, Tally};
use scan::{capture_ranges, is_marker, is_reference, parse_time, Marker, Ranges, Scanner};
use select::{select, Coordinates, Entry, Filters, Index, Selection};

pub use scan::RESOLVED_HEADER;

#[derive(Debug, Args)]
pub struct RedriveArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArgs,
    /// Only dead letters of this organization (repeatable).
    #[arg(long = "organization", value_name = "ORG")]
    pub organizations: Vec<String>,
    /// Only dead letters written at or after this time (RFC 3339, e.g. 2026-11-27T09:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time_arg)]
    pub since: Option<DateTime<Utc>>,
    /// Only dead letters written before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time_arg)]
    pub until: Option<DateTime<Utc>>,
    /// Only dead letters with this reason (repeatable): exhausted, permanent_status,
    /// address_refused, endpoint_not_configured, park_refused, lane_overflow.
    #[arg(long = "reason", value_name = "REASON", value_parser = parse_reason)]
    pub reasons: Vec<DeadLetterReason>,
    /// Redrive at most this many events (the oldest dead letters first).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Retries after the first attempt of each event, on the organization's retry schedule
    /// (never more than the schedule has). Default: one attempt, no retry.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: usize,
    /// List what would be redriven, deliver and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_time_arg(value: &str) -> Result<DateTime<Utc>, String> {
    parse_time(value)
        .ok_or_else(|| format!("{value:?} is not an RFC 3339 time, e.g. 2026-11-27T09:00:00Z"))
}

fn parse_reason(value: &str) -> Result<DeadLetterReason, String> {
    DeadLetterReason::ALL
        .into_iter()
        .find(|r| r.code() == value)
        .ok_or_else(|| {
            format!(
                "unknown reason {value:?}; expected one of {}",
                DeadLetterReason::ALL.map(DeadLetterReason::code).join(", ")
            )
        })
}

/// Selected records held in memory (queued or being delivered) at most, in pass 2.
const MAX_PENDING: usize = 1000;
/// Progress lines, when stderr is not a terminal: at least this often...
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// ...and every this many records.
const PLAIN_PROGRESS_RECORDS: u64 = 10_000;

/// Exit status: 0 done (even if some failed again), 1 infrastructure error (returned as an
/// error), 2 configuration or usage error, 130 interrupted.
pub fn run(args: RedriveArgs) -> anyhow::Result<ExitCode> {
    if let (Some(since), Some(until)) = (args.since, args.until) {
        if since >= until {
            eprintln!("--since ({since}) must be before --until ({until})");
            return Ok(ExitCode::from(2));
        }
    }
    let settings = match args.config.load_or_exit() {
        Ok(settings) => settings,
        Err(usage) => return Ok(usage),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("redrive")
        .build()?;
    runtime.block_on(async move {
        // With the registry on, its organizations count too.
        let settings = crate::registry::with_registered(settings).await?;
        redrive(settings, args).await
    })
}

/// What one run saw and did.
#[derive(Debug, Default)]
struct Summary {
    dry_run: bool,
    interrupted: bool,
    scanned: u64,
    dead_letters: u64,
    markers: u64,
    unreadable: u64,
    references: u64,
    superseded: u64,
    already_resolved: u64,
    filtered_out: u64,
    over_limit: u64,
    selected: u64,
    tally: Tally,
}

async fn redrive(settings: Settings, args: RedriveArgs) -> anyhow::Result<ExitCode> {
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    tokio::spawn(stop_on_signal("redrive", stop.clone(), abort.clone()));
    let tty = std::io::stderr().is_terminal();
    let kafka = &settings.kafka;
    let topic = kafka.dead_letter_topic.clone();

    let ranges = tokio::task::block_in_place(|| capture_ranges(kafka, &topic))?;
    let total: i64 = ranges.values().map(|(start, end)| end - start).sum();
    tracing::info!(
        topic,
        records = total,
        "redrive: reading the dead-letter topic"
    );

    // Pass 1: the index.
    let mut summary = Summary {
        dry_run: args.dry_run,
        ..Summary::default()
    };
    let mut index = Index::default();
    if !ranges.is_empty() {
        let progress = Progress::new(tty, "scanning", total as u64);
        let mut scanner = Scanner::new(kafka, &topic, &ranges)?;
        loop {
            let next = tokio::select! {
                next = scanner.next() => next?,
                _ = stop.cancelled() => {
                    summary.interrupted = true;
                    break;
                }
            };
            let Some(message) = next else { break };
            summary.scanned += 1;
            index_record(&mut index, &message);
            progress.set(summary.scanned, || {
                format!(
                    "{} dead letters, {} markers",
                    index.dead_letters, index.markers
                )
            });
        }
        progress.finish();
    }
    summary.dead_letters = index.dead_letters;
    summary.markers = index.markers;
    summary.unreadable = index.unreadable;
    summary.references = index.references;
    summary.superseded = index.superseded;
    let filters = Filters {
        organizations: args.organizations.clone(),
        reasons: args.reasons.clone(),
        since: args.since,
        until: args.until,
        limit: args.limit,
    };
    let Selection {
        selected,
        already_resolved,
        filtered_out,
        over_limit,
    } = select(index, &filters);
    summary.already_resolved = already_resolved;
    summary.filtered_out = filtered_out;
    summary.over_limit = over_limit;
    summary.selected = selected.len() as u64;

    if args.dry_run || summary.interrupted || selected.is_empty() {
        if args.dry_run {
            let mut out = std::io::stdout().lock();
            for entry in &selected {
                writeln!(
                    out,
                    "would redrive {} organization={} reason={} dead_lettered_at={} at={}/{}",
                    entry.event_id,
                    entry.organization_id,
                    entry.reason.code(),
                    entry.dead_lettered_at.to_rfc3339(),
                    entry.at.0,
                    entry.at.1
                )?;
            }
        }
        summary.tally.not_attempted = if args.dry_run { 0 } else { summary.selected };
        return finish(&summary);
    }

    // Pass 2: deliver.
    let deliverer = Deliverer::new(&settings.delivery).context("cannot build the HTTP client")?;
    let producers = Producers::new(kafka).context("cannot create the Kafka producer")?;
    tokio::spawn(stop_on_fatal(producers.clone(), stop.clone()));
    let progress = Progress::new(tty, "redriving", summary.selected);
    let redriver = Arc::new(Redriver::new(
        &settings,
        deliverer,
        producers.clone(),
        args.retries,
        stop.clone(),
        abort.clone(),
        Box::new({
            let progress = progress.clone();
            move |tally: &Tally| {
                progress.set(tally.done(), || {
                    format!(
                        "delivered {}, failed again {}",
                        tally.delivered,
                        tally.failed_again_total()
                    )
                })
            }
        }),
    ));
    let read = deliver_selected(&settings, &topic, &selected, &redriver, &stop).await;
    summary.tally = redriver.finish().await;
    progress.finish();
    producers.flush(Duration::from_secs(10));
    summary.interrupted = stop.is_cancelled();
    summary.tally.not_attempted += summary.selected.saturating_sub(summary.tally.done());
    if let Err(error) = read {
        let _ = finish(&summary);
        return Err(error);
    }
    let printed = finish(&summary);
    fatal_error(&producers).map_or(printed, Err)
}

/// Stops a run (no new attempt) once the producer met a fatal failure: every later write
/// would fail the same way.
pub(crate) async fn stop_on_fatal(producers: Producers, stop: CancellationToken) {
    producers.fatal().cancelled().await;
    stop.cancel();
}

/// The run's error when the producer met a fatal failure (exit 1, naming it).
pub(crate) fn fatal_error(producers: &Producers) -> Option<anyhow::Error> {
    producers.fatal_failure().map(|failure| {
        anyhow::anyhow!(
            "the dead-letter topic refused a write ({}): stopped; what was not written is left \
             as it was (see the ConsentWebhooksOutputWriteFailures runbook)",
            failure.code()
        )
    })
}

/// Reads the selected records again and hands them to the redriver, at most [`MAX_PENDING`] at
/// a time; returns when all were handed over, or at `stop`.
async fn deliver_selected(
    settings: &Settings,
    topic: &str,
    selected: &[Entry],
    redriver: &Arc<Redriver>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut wanted: HashSet<(i32, i64)> = selected.iter().map(|e| e.at).collect();
    let mut ranges = Ranges::new();
    for &(partition, offset) in &wanted {
        let range = ranges.entry(partition).or_insert((offset, offset + 1));
        range.0 = range.0.min(offset);
        range.1 = range.1.max(offset + 1);
    }
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    let mut order = Order::new(selected);
    let mut scanner = Scanner::new(&settings.kafka, topic, &ranges)?;
    while !wanted.is_empty() {
        let next = tokio::select! {
            next = scanner.next() => next?,
            _ = stop.cancelled() => return Ok(()),
        };
        let Some(message) = next else { break };
        let at = (message.partition(), message.offset());
        if !wanted.remove(&at) {
            continue;
        }
        let job = serde_json::from_slice::<DeadLetter>(message.payload().unwrap_or_default())
            .map_err(|e| e.to_string())
            .and_then(|record| Job::new(record, at));
        let ready = match job {
            Ok(job) => order.arrived(at, Some(job)),
            Err(error) => {
                tracing::warn!(partition = at.0, offset = at.1, %error, "cannot rebuild the event; left as it is");
                order.arrived(at, None)
            }
        };
        for job in ready {
            let permit = tokio::select! {
                permit = pending.clone().acquire_owned() => permit.expect("never closed"),
                _ = stop.cancelled() => return Ok(()),
            };
            redriver.submit(job, permit);
        }
    }
    if !wanted.is_empty() {
        tracing::warn!(
            missing = wanted.len(),
            "selected records not found on the second read; left as they are"
        );
    }
    // Records whose earlier events of the key were not found go last, still in source order.
    for job in order.rest() {
        let permit = tokio::select! {
            permit = pending.clone().acquire_owned() => permit.expect("never closed"),
            _ = stop.cancelled() => return Ok(()),
        };
        redriver.submit(job, permit);
    }
    Ok(())
}

/// Hands the records read in topic order over in each key's source order: a record waits here
/// until the earlier records of its key were handed over (or found unusable).
struct Order<'a> {
    /// Each key's records not handed over yet, in source order.
    queues: HashMap<&'a str, VecDeque<Coordinates>>,
    key_of: HashMap<Coordinates, &'a str>,
    /// Read and waiting for an earlier record of their key; `None`: unusable, skipped.
    arrived: HashMap<Coordinates, Option<Job>>,
}

impl<'a> Order<'a> {
    fn new(selected: &'a [Entry]) -> Self {
        Order {
            queues: select::source_order(selected),
            key_of: selected.iter().map(|e| (e.at, e.key.as_str())).collect(),
            arrived: HashMap::new(),
        }
    }

    /// The record at `at` was read (`None`: it cannot be delivered): the jobs now ready.
    fn arrived(&mut self, at: Coordinates, job: Option<Job>) -> Vec<Job> {
        let Some(&key) = self.key_of.get(&at) else {
            return job.into_iter().collect();
        };
        self.arrived.insert(at, job);
        let mut ready = Vec::new();
        if let Some(queue) = self.queues.get_mut(key) {
            while let Some(front) = queue.front() {
                let Some(job) = self.arrived.remove(front) else {
                    break;
                };
                queue.pop_front();
                ready.extend(job);
            }
        }
        ready
    }

    /// What still waits (its earlier records were never read), in source order per key.
    fn rest(mut self) -> Vec<Job> {
        let mut rest = Vec::new();
        for queue in self.queues.into_values() {
            for at in queue {
                if let Some(Some(job)) = self.arrived.remove(&at) {
                    rest.push(job);
                }
            }
        }
        rest
    }
}

#[derive(Deserialize)]
struct EventId {
    id: String,
}

/// Adds one record to the index: a marker, a dead letter, or something unreadable.
fn index_record(index: &mut Index, message: &OwnedMessage) {
    let payload = message.payload().unwrap_or_default();
    let (partition, offset) = (message.partition(), message.offset());
    if is_marker(message) {
        match serde_json::from_slice::<Marker>(payload) {
            Ok(marker) => {
                index.add_marker((marker.dead_letter.partition, marker.dead_letter.offset))
            }
            Err(error) => {
                tracing::warn!(partition, offset, %error, "unreadable resolution marker; ignored");
                index.add_unreadable();
            }
        }
        return;
    }
    if is_reference(message) {
        // Too large for the topic when written: its body is in the source record only.
        tracing::warn!(
            partition,
            offset,
            "a dead letter stored as a reference (no event body): replay or resend its source \
             offsets to deliver it"
        );
        index.add_reference();
        return;
    }
    let entry = serde_json::from_slice::<DeadLetter>(payload)
        .map_err(|e| e.to_string())
        .and_then(|record| {
            let event: EventId = serde_json::from_str(record.event.get())
                .map_err(|e| format!("event without an id: {e}"))?;
            let dead_lettered_at = parse_time(&record.dead_lettered_at).ok_or_else(|| {
                format!(
                    "dead_lettered_at {:?} is not a time",
                    record.dead_lettered_at
                )
            })?;
            // Pass 2 reports a record it cannot rebuild; here it only orders nothing.
            let key =
                deliver::key_of(&record).unwrap_or_else(|_| format!("\0{partition}:{offset}"));
            Ok(Entry {
                event_id: event.id,
                organization_id: record.organization_id,
                reason: record.reason,
                dead_lettered_at,
                at: (partition, offset),
                key,
                source: (record.source.partition, record.source.offset),
            })
        });
    match entry {
        Ok(entry) => index.add_dead_letter(entry),
        Err(error) => {
            tracing::warn!(partition, offset, %error, "not a dead-letter record; ignored");
            index.add_unreadable();
        }
    }
}

/// Prints the summary on stdout and picks the exit status.
fn finish(summary: &Summary) -> anyhow::Result<ExitCode> {
    let t = &summary.tally;
    let failed = t.failed_by_reason();
    let title = match (summary.dry_run, summary.interrupted) {
        (true, _) => "redrive summary (dry run: nothing delivered or written)",
        (false, true) => "redrive summary (interrupted)",
        (false, false) => "redrive summary",
    };
    let rows: [(&str, String); 16] = [
        ("scanned", summary.scanned.to_string()),
        ("dead letters", summary.dead_letters.to_string()),
        ("resolution markers", summary.markers.to_string()),
        ("unreadable", summary.unreadable.to_string()),
        ("references without a body", summary.references.to_string()),
        ("skipped superseded", summary.superseded.to_string()),
        (
            "skipped already resolved",
            summary.already_resolved.to_string(),
        ),
        ("skipped filtered out", summary.filtered_out.to_string()),
        ("skipped over limit", summary.over_limit.to_string()),
        ("selected", summary.selected.to_string()),
        ("delivered", t.delivered.to_string()),
        ("delivered unrecorded", t.delivered_unrecorded.to_string()),
        ("failed again", t.failed_again_total().to_string()),
        ("failed again by reason", failed),
        ("not accepted by endpoint", t.not_accepted.to_string()),
        ("not attempted", t.not_attempted.to_string()),
    ];
    print_summary(title, &rows, summary.interrupted)
}

/// Prints a run's summary on stdout (a title, then `  name: value` lines); the exit status is
/// 130 when the run was interrupted, else 0.
pub(crate) fn print_summary(
    title: &str,
    rows: &[(&str, String)],
    interrupted: bool,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{title}")?;
    for (name, value) in rows {
        writeln!(out, "  {name}: {value}")?;
    }
    out.flush()?;
    Ok(if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// First SIGINT/SIGTERM: no new attempt starts, what is in flight finishes and is recorded.
/// Second: writes in flight are abandoned too.
pub(crate) async fn stop_on_signal(
    command: &'static str,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let mut signals = match crate::signals::StopSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "cannot install signal handlers");
            return;
        }
    };
    signals.next().await;
    eprintln!("{command}: interrupted; finishing what is in flight (again to abandon it)");
    stop.cancel();
    signals.next().await;
    eprintln!("{command}: interrupted again; abandoning the writes in flight");
    abort.cancel();
}

/// A progress bar on a terminal, progress log lines otherwise.
#[derive(Clone)]
pub(crate) struct Progress {
    inner: Arc<ProgressInner>,
}

struct ProgressInner {
    bar: Option<ProgressBar>,
    phase: &'static str,
    total: u64,
    last: Mutex<Instant>,
}

impl Progress {
    pub(crate) fn new(tty: bool, phase: &'static str, total: u64) -> Progress {
        let bar = tty.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>9} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(phase);
            bar
        });
        Progress {
            inner: Arc::new(ProgressInner {
                bar,
                phase,
                total,
                last: Mutex::new(Instant::now()),
            }),
        }
    }

    pub(crate) fn set(&self, done: u64, detail: impl FnOnce() -> String) {
        let inner = &self.inner;
        if let Some(bar) = &inner.bar {
            bar.set_position(done);
            if done % 64 == 0 || done == inner.total {
                bar.set_message(detail());
            }
            return;
        }
        let mut last = inner.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= PLAIN_PROGRESS_EVERY
            || done % PLAIN_PROGRESS_RECORDS == 0
            || done == inner.total
        {
            *last = Instant::now();
            tracing::info!(
                phase = inner.phase,
                done,
                total = inner.total,
                "redrive progress: {} {done}/{}: {}",
                inner.phase,
                inner.total,
                detail()
            );
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_from_their_codes() {
        for reason in DeadLetterReason::ALL {
            assert_eq!(parse_reason(reason.code()), Ok(reason));
        }
        assert!(parse_reason("gone").unwrap_err().contains("lane_overflow"));
        assert!(parse_time_arg("2026-11-27T09:00:00+01:00").is_ok());
        assert!(parse_time_arg("yesterday").is_err());
    }

    #[test]
    fn marker_header_name_is_stable() {
        assert_eq!(RESOLVED_HEADER, "webhook-dead-letter-resolved");
    }
}
