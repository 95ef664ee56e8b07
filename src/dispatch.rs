//! Fan-out: one lane per organization; each event gets its first attempt here, and waits in
//! memory for nothing but its turn.
//!
//! Guarantees:
//! - **Nothing waits in memory for a retry.** An event whose attempt failed and may be tried
//!   again is parked (see [`crate::park`]): written with its whole delivery state to the retry
//!   topic, and its source record is done once that write is acknowledged. Parked events come
//!   back as [`Work::Parked`] at their due time's reading and continue their schedule here.
//! - **Order per key.** Events with the same Kafka record key (SPEC §1 recommends
//!   `organization/user`) are attempted one after the other, in offset order; while a key has a
//!   parked event, its next events are parked behind it without an attempt, and parked events
//!   of a key are attempted in source order. Events without a key are unordered.
//! - **Isolation.** An organization's requests are capped by its endpoint's `concurrency`, and
//!   all requests by `max_in_flight_requests`; due retries take permits before first attempts.
//!   A lane holds at most `max_pending_per_organization` events before their first attempt, and
//!   no more than its endpoint's `concurrency` while that endpoint's last attempt failed;
//!   beyond, new events are parked at once (reason `lane_full`), so a dead endpoint never fills
//!   memory nor pauses the partitions it shares with others.
//! - **Completion.** A ticket is completed exactly when its outcome is terminal or durable:
//!   delivered, dead-letter write acknowledged, park write acknowledged, rejected-topic write
//!   acknowledged, or nothing to deliver. Cancelled work is not completed (consumed again).
//! - **Leaving** (revoke, shutdown): input events that wait (for permits, behind their key) are
//!   parked (reason `revoked` or `shutdown`); parked events that wait for their due time are
//!   released (not done: the next owner reads their records again); attempts in flight finish.
//!
//! Input events are handled here; parked events read back, in [`parked`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use prometheus::{Histogram, IntCounter, IntGauge};
use rdkafka::message::{Header, OwnedHeaders};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::config::Settings;
use crate::deadletter::{
    AttemptRecord, DeadLetter, DeadLetterReason, Producers, SourceRef, WriteError,
};
use crate::delivery::{
    Attempt, AttemptOutcome, Decision, Deliverer, KeyQueues, Priority, Target, TokenSource,
};
use crate::delivery::{Permit, Permits};
use crate::park::{Fetcher, ParkReason, Parked, Parking};
use crate::telemetry::Metrics;
use crate::webhook::WebhookEvent;
use crate::work::{Progress, Ticket, Work};

mod parked;

/// How an event's turn here ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    DeadLettered(DeadLetterReason),
    /// Written to the retry topic (acknowledged): continued from there.
    Parked(ParkReason),
    /// Nothing to do: no endpoint, filtered out, or already parked.
    Skipped,
    /// A parked record made obsolete by a later record of the same event.
    Superseded,
    /// Cancelled by a revoke or shutdown: not done, consumed again later.
    Abandoned,
    /// A parked event let go while its partition leaves: not done, read again by the next
    /// owner, not waited for.
    Released,
}

/// What the dispatcher shares with the rest of the pipeline.
pub struct Parts {
    pub producers: Producers,
    /// Input records taken and not done.
    pub progress: Arc<Progress>,
    /// Parked records read back and not done.
    pub retry_progress: Arc<Progress>,
    pub parking: Arc<Parking>,
    /// Reads parked records again, for events held without their body.
    pub fetcher: Arc<Fetcher>,
    /// Cancelled at shutdown (what is parked then says `shutdown`, not `revoked`).
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
    pub metrics: Arc<Metrics>,
}

/// Everything the lanes share.
struct Shared {
    /// One lane per configured organization.
    lanes: HashMap<String, Arc<Lane>>,
    deliverer: Deliverer,
    cx: Parts,
    /// Each organization's endpoint URL, for dead letters written outside a lane.
    urls: HashMap<String, reqwest::Url>,
    global: Permits,
    max_pending_per_organization: usize,
}

struct Lane {
    target: Target,
    metrics: LaneMetrics,
    state: Mutex<LaneState>,
    /// The endpoint's last attempt failed: the lane takes no more than `concurrency` events.
    failing: AtomicBool,
    concurrency: usize,
}

/// An organization's metric handles on the delivery path, resolved once: a label look-up
/// hashes its values and takes a lock on every call.
struct LaneMetrics {
    delivered: IntCounter,
    /// By status class, in [`AttemptOutcome::CLASSES`] order (others are looked up).
    attempts: [IntCounter; 5],
    attempt_duration: Histogram,
    endpoint_failing: IntGauge,
}

impl LaneMetrics {
    fn new(metrics: &Metrics, org: &str) -> Self {
        LaneMetrics {
            delivered: metrics.deliveries.with_label_values(&[org, "delivered"]),
            attempts: AttemptOutcome::CLASSES
                .map(|class| metrics.delivery_attempts.with_label_values(&[org, class])),
            attempt_duration: metrics.attempt_duration.with_label_values(&[org]),
            endpoint_failing: metrics.endpoint_failing.with_label_values(&[org]),
        }
    }
}

#[derive(Default)]
struct LaneState {
    /// Keys with a worker running, and the events waiting behind it.
    keys: KeyQueues<Vec<u8>, Job>,
    /// Events in this lane that are not done yet.
    pending: usize,
}

struct Job {
    ticket: Ticket,
    event: WebhookEvent,
    source: SourceRef,
    /// The lane was full when it came: parked without an attempt.
    lane_full: bool,
}

pub struct Dispatcher {
    shared: Arc<Shared>,
}

impl Dispatcher {
    pub fn new(settings: &Settings, deliverer: Deliverer, cx: Parts) -> Self {
        let lanes = settings
            .organizations
            .iter()
            .map(|(id, org)| {
                let lane = Lane {
                    target: Target::new(&deliverer, id, org),
                    metrics: LaneMetrics::new(&cx.metrics, id),
                    state: Mutex::new(LaneState::default()),
                    failing: AtomicBool::new(false),
                    concurrency: org.concurrency,
                };
                (id.clone(), Arc::new(lane))
            })
            .collect();
        let urls = settings
            .organizations
            .iter()
            .map(|(id, org)| (id.clone(), org.url.clone()))
            .collect();
        Dispatcher {
            shared: Arc::new(Shared {
                lanes,
                deliverer,
                cx,
                urls,
                global: Permits::new(settings.delivery.max_in_flight_requests),
                max_pending_per_organization: settings.delivery.max_pending_per_organization,
            }),
        }
    }

    /// Each organization's OAuth token source, for the token-fetch metrics.
    pub fn token_sources(&self) -> Vec<(String, Arc<TokenSource>)> {
        self.shared
            .lanes
            .iter()
            .filter_map(|(org, lane)| {
                Some((org.clone(), lane.target.endpoint.token_source()?.clone()))
            })
            .collect()
    }

    /// Takes work until the consumer closes the channel. Never waits on a delivery: lanes run
    /// on their own tasks.
    pub async fn run(self, mut work: mpsc::Receiver<Work>) {
        while let Some(item) = work.recv().await {
            self.dispatch(item);
        }
    }

    /// The lane of an event, or why it has none (counted).
    fn lane_for(&self, event: &WebhookEvent) -> Option<Arc<Lane>> {
        let metrics = &self.shared.cx.metrics;
        match self.shared.lanes.get(&event.organization_id) {
            Some(lane)
                if lane
                    .target
                    .endpoint
                    .settings
                    .accepts(event.event_type, &event.regulation) =>
            {
                Some(lane.clone())
            }
            Some(_) => {
                metrics
                    .events_skipped
                    .with_label_values(&["filtered"])
                    .inc();
                debug!(event_id = %event.id, "filtered out by the endpoint's type or regulation filter");
                None
            }
            None => {
                metrics
                    .events_skipped
                    .with_label_values(&["no_endpoint"])
                    .inc();
                debug!(organization_id = %event.organization_id, "no endpoint configured; skipped");
                None
            }
        }
    }

    fn dispatch(&self, work: Work) {
        let shared = &self.shared;
        match work {
            Work::Reject {
                ticket,
                record,
                rejection,
            } => {
                let shared = shared.clone();
                self.shared.cx.tasks.spawn(async move {
                    warn!(
                        partition = record.partition,
                        offset = record.offset,
                        reason = rejection.code(),
                        "record rejected: {rejection}"
                    );
                    if shared
                        .cx
                        .producers
                        .reject(&record, &rejection, &ticket.cancel)
                        .await
                        .is_ok()
                    {
                        shared.cx.progress.complete(&ticket);
                    }
                });
            }
            Work::Deliver {
                ticket,
                key,
                event,
                source,
            } => {
                let Some(lane) = self.lane_for(&event) else {
                    shared.cx.progress.complete(&ticket);
                    return;
                };
                // Without a key there is no order to keep: every record is its own key.
                let key = key.unwrap_or_else(|| keyless(&source));
                let job = Job {
                    ticket,
                    event,
                    source,
                    lane_full: false,
                };
                submit(lane, shared.clone(), key, job);
            }
            Work::Parked {
                ticket,
                key,
                head,
                parked,
            } => parked::unpark(shared, ticket, key, head, parked),
        }
    }
}

impl Shared {
    fn url_of(&self, organization_id: &str) -> Option<reqwest::Url> {
        self.urls.get(organization_id).cloned()
    }
}

/// The key of a record without one: unique, so it orders nothing.
fn keyless(source: &SourceRef) -> Vec<u8> {
    format!("\0{}:{}", source.partition, source.offset).into_bytes()
}

/// What a revoke or a shutdown parks: which one it is.
fn leaving(shared: &Shared) -> ParkReason {
    if shared.cx.stop.is_cancelled() {
        ParkReason::Shutdown
    } else {
        ParkReason::Revoked
    }
}

fn submit(lane: Arc<Lane>, shared: Arc<Shared>, key: Vec<u8>, mut job: Job) {
    let mut state = lane.state.lock().unwrap_or_else(|p| p.into_inner());
    let running = state.keys.is_running(&key);
    // A key already running keeps its events behind it in memory (they are parked behind it as
    // soon as it parks); a new key of a full lane is parked at once.
    if !running {
        let limit = if lane.failing.load(Ordering::Relaxed) {
            lane.concurrency.min(shared.max_pending_per_organization)
        } else {
            shared.max_pending_per_organization
        };
        job.lane_full = state.pending >= limit;
    }
    state.pending += 1;
    let Some(job) = state.keys.submit(&key, job) else {
        return;
    };
    drop(state);
    let tasks = shared.cx.tasks.clone();
    tasks.spawn(run_key(lane, shared, key, job));
}

/// Takes the events of one key, one after the other, until its queue is empty.
async fn run_key(lane: Arc<Lane>, shared: Arc<Shared>, key: Vec<u8>, first: Job) {
    let mut job = first;
    loop {
        let span = tracing::info_span!(
            "deliver",
            organization_id = %job.event.organization_id,
            event_id = %job.event.id,
            change_id = %job.event.change_id,
            partition = job.source.partition,
            offset = job.source.offset,
        );
        let outcome = first_attempt(&lane, &shared, &key, &job)
            .instrument(span)
            .await;
        if outcome != Outcome::Abandoned {
            shared.cx.progress.complete(&job.ticket);
        }
        let mut state = lane.state.lock().unwrap_or_else(|p| p.into_inner());
        state.pending -= 1;
        match state.keys.next(&key) {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// An input event: parked behind its key (or its full lane, or because its partition goes),
/// or attempted once; a failure that may be retried parks it.
async fn first_attempt(lane: &Lane, shared: &Shared, key: &[u8], job: &Job) -> Outcome {
    let parking = &shared.cx.parking;
    let (partition, offset) = (job.source.partition, job.source.offset);
    if parking.contains(partition, key, offset) {
        // Read again after a revoke or restart: its parked record carries it already.
        debug!("already parked");
        return Outcome::Skipped;
    }
    let wait = if job.lane_full {
        Some(ParkReason::LaneFull)
    } else if parking.has_parked(partition, key) {
        Some(ParkReason::BehindKey)
    } else if job.ticket.leave.is_cancelled() {
        Some(leaving(shared))
    } else {
        None
    };
    let parked = |reason, attempts, first, due| {
        Parked::new(&job.event, job.source.clone(), attempts, first, due, reason)
    };
    if let Some(reason) = wait {
        return park(
            shared,
            key,
            parked(reason, vec![], None, Utc::now()),
            reason,
            &job.ticket,
        )
        .await;
    }
    let permits = tokio::select! {
        permits = lane.target.permits(&shared.global, Priority::First) => permits.1,
        _ = job.ticket.leave.cancelled() => {
            let reason = leaving(shared);
            return park(shared, key, parked(reason, vec![], None, Utc::now()), reason, &job.ticket).await;
        }
    };
    let attempt = tokio::select! {
        attempt = attempt(lane, shared, &job.event, permits) => attempt,
        _ = job.ticket.cancel.cancelled() => return Outcome::Abandoned,
    };
    let decision = lane.target.decide(&attempt, 0, None);
    debug!(outcome = %attempt.outcome.code(), "first attempt");
    let first = Some(attempt.at);
    let attempts = vec![AttemptRecord::from(&attempt)];
    match decision {
        Decision::Delivered => {
            delivered(lane, shared, &job.event, 1);
            Outcome::Delivered
        }
        Decision::RetryAfter(wait) => {
            scheduled(shared, &job.event);
            let due = Utc::now() + wait;
            let record = parked(ParkReason::Retry, attempts, first, due);
            park(shared, key, record, ParkReason::Retry, &job.ticket).await
        }
        Decision::GiveUp(reason) => {
            let record = DeadLetter::with_records(
                &job.event,
                Some(&lane.target.endpoint.settings.url),
                reason.into(),
                attempts,
                job.source.clone(),
            );
            dead_letter(shared, &job.event, record, &job.ticket).await
        }
    }
}

fn delivered(lane: &Lane, shared: &Shared, event: &WebhookEvent, attempts: usize) {
    debug!(attempts, "delivered");
    lane.metrics.delivered.inc();
    let latency = (Utc::now() - event.occurred_at)
        .to_std()
        .unwrap_or_default();
    shared
        .cx
        .metrics
        .end_to_end_latency
        .observe(latency.as_secs_f64());
}

fn scheduled(shared: &Shared, event: &WebhookEvent) {
    shared
        .cx
        .metrics
        .retries_scheduled
        .with_label_values(&[&event.organization_id])
        .inc();
}

/// Writes the event's parked record to the retry partition of its source partition; once
/// acknowledged, the parked-key index knows it.
async fn park(
    shared: &Shared,
    key: &[u8],
    mut parked: Parked,
    reason: ParkReason,
    ticket: &Ticket,
) -> Outcome {
    parked.reason = reason;
    let headers = parked
        .headers()
        .iter()
        .fold(OwnedHeaders::new(), |headers, (name, value)| {
            headers.insert(Header {
                key: name,
                value: Some(value.as_str()),
            })
        });
    let partition = parked.source.partition;
    let written = Box::pin(shared.cx.producers.park(
        partition,
        key,
        &parked.encode(),
        headers,
        &ticket.cancel,
    ))
    .await;
    let retry_offset = match written {
        Ok(offset) => offset,
        Err(WriteError::Refused(failure)) => {
            warn!(
                cause = failure.code(),
                "the retry topic refuses the parked event; dead-lettering it at once"
            );
            let event = parked.webhook_event();
            let url = shared.url_of(&parked.organization_id);
            let record = DeadLetter::with_records(
                &event,
                url.as_ref(),
                DeadLetterReason::ParkRefused,
                parked.attempts,
                parked.source,
            );
            return dead_letter(shared, &event, record, ticket).await;
        }
        Err(_) => return Outcome::Abandoned,
    };
    shared.cx.parking.parked(
        partition,
        key,
        parked.source.offset,
        retry_offset,
        parked.parked_at.timestamp_millis(),
    );
    shared
        .cx
        .metrics
        .parks
        .with_label_values(&[&parked.organization_id, reason.code()])
        .inc();
    debug!(
        reason = reason.code(),
        retry_offset,
        due = %parked.due_at,
        attempts = parked.attempts.len(),
        "parked"
    );
    Outcome::Parked(reason)
}

/// One attempt, holding the endpoint's and the global permit while it runs.
async fn attempt(
    lane: &Lane,
    shared: &Shared,
    event: &WebhookEvent,
    _permits: [Permit; 2],
) -> Attempt {
    let metrics = &shared.cx.metrics;
    let attempt = request(metrics, &shared.deliverer, &lane.target, event).await;
    let class = attempt.outcome.status_class();
    match AttemptOutcome::CLASSES.iter().position(|c| *c == class) {
        Some(i) => lane.metrics.attempts[i].inc(),
        None => metrics
            .delivery_attempts
            .with_label_values(&[&event.organization_id, class])
            .inc(),
    }
    lane.metrics
        .attempt_duration
        .observe(attempt.duration.as_secs_f64());
    let failing = class != "2xx";
    lane.failing.store(failing, Ordering::Relaxed);
    lane.metrics.endpoint_failing.set(i64::from(failing));
    let org = [event.organization_id.as_str()];
    if attempt.reauthorized {
        metrics.oauth_reauthorizations.with_label_values(&org).inc();
    }
    attempt
}

/// The request itself, counted in `in_flight_requests` while it runs: the count is taken back
/// when the request ends or is cancelled (revoke, shutdown drop the future mid-flight).
async fn request(
    metrics: &Metrics,
    deliverer: &Deliverer,
    target: &Target,
    event: &WebhookEvent,
) -> Attempt {
    let _in_flight = InFlight::enter(&metrics.in_flight_requests);
    // Boxed: the request future is large, and thousands of tasks may be waiting for permits;
    // they should not each carry its space before they run.
    Box::pin(deliverer.attempt(&target.endpoint, event)).await
}

/// One unit of a gauge, given back on drop.
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: &IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn dead_letter(
    shared: &Shared,
    event: &WebhookEvent,
    record: DeadLetter,
    ticket: &Ticket,
) -> Outcome {
    let reason = record.reason;
    let attempts = record.attempts.len();
    match Box::pin(
        shared
            .cx
            .producers
            .dead_letter(&record, event, &ticket.cancel),
    )
    .await
    {
        Ok(()) => {
            let org = event.organization_id.as_str();
            let metrics = &shared.cx.metrics;
            metrics
                .deliveries
                .with_label_values(&[org, "dead_lettered"])
                .inc();
            metrics
                .dead_letters
                .with_label_values(&[org, reason.code()])
                .inc();
            info!(reason = reason.code(), attempts, "dead-lettered");
            Outcome::DeadLettered(reason)
        }
        Err(_) => Outcome::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::delivery::testkit::{delivery_settings, event, organization, Receiver, Reply};

    /// Issue 7 point 6: a request cancelled mid-flight (its future dropped, as a revoke or a
    /// shutdown does) gives its `in_flight_requests` unit back.
    #[tokio::test]
    async fn a_cancelled_request_leaves_the_in_flight_gauge_at_zero() {
        let receiver = Receiver::start().await;
        receiver.then(Reply::hang());
        let deliverer = Deliverer::new(&delivery_settings(Duration::from_secs(30))).unwrap();
        let target = Target::new(&deliverer, "acme", &organization(receiver.url()));
        let metrics = Arc::new(Metrics::new(["acme"]));
        let task = {
            let metrics = metrics.clone();
            tokio::spawn(async move { request(&metrics, &deliverer, &target, &event()).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while receiver.received().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the request never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            metrics.in_flight_requests.get(),
            1,
            "counted while in flight"
        );
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(metrics.in_flight_requests.get(), 0, "given back on cancel");
    }
}
