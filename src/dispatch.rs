//! Fan-out: one lane per organization, each delivering its events with retries.
//!
//! Guarantees:
//! - **Order per key.** Events with the same Kafka record key (SPEC §1 recommends
//!   `organization/user`) are delivered one after the other, in offset order: the next starts
//!   when the previous one is delivered or dead-lettered. Events without a key are unordered.
//! - **Isolation.** An organization's requests are capped by its endpoint's `concurrency`, and
//!   all requests by `max_in_flight_requests`; both permits are held only during an attempt,
//!   never while waiting to retry, so a slow or dead endpoint holds only its own lane.
//! - **Bounded.** A lane holds at most `max_pending_per_organization` events (queued, in
//!   flight or waiting to retry). When it is full, a new event for it is dead-lettered at once
//!   with reason `lane_overflow` (nothing is lost; `redrive` delivers it later), so that one dead
//!   endpoint cannot fill memory or stall the partitions it shares with others.
//! - **Completion.** A record's ticket is completed exactly when its outcome is terminal:
//!   delivered, dead-letter write acknowledged, rejected-topic write acknowledged, or nothing
//!   to deliver (no endpoint, filtered out). Cancelled work (revoke, shutdown) is not
//!   completed, so its offset is not committed and the record is consumed again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

use prometheus::IntGauge;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::change::Rejection;
use crate::config::Settings;
use crate::deadletter::{DeadLetter, DeadLetterReason, InputRecord, Producers, SourceRef};
use crate::delivery::{
    Attempt, Decision, Deliverer, GiveUpReason, Permits, Priority, Target, TokenSource,
};
use crate::ingest::{Progress, Ticket};
use crate::telemetry::Metrics;
use crate::webhook::WebhookEvent;

/// What the consumer hands to the dispatcher, one per record that needs asynchronous work.
#[derive(Debug)]
pub enum Work {
    Deliver {
        ticket: Ticket,
        key: Option<Vec<u8>>,
        event: WebhookEvent,
        source: SourceRef,
    },
    Reject {
        ticket: Ticket,
        record: InputRecord,
        rejection: Rejection,
    },
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    DeadLettered(DeadLetterReason),
    /// Cancelled by a revoke or shutdown: not done, consumed again later.
    Abandoned,
}

/// Everything the lanes share.
struct Shared {
    deliverer: Deliverer,
    producers: Producers,
    progress: Arc<Progress>,
    global: Permits,
    max_pending_per_organization: usize,
    tasks: TaskTracker,
    metrics: Arc<Metrics>,
}

struct Lane {
    target: Target,
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    /// Keys with a worker running, and the events waiting behind it.
    keys: HashMap<Vec<u8>, VecDeque<Job>>,
    /// Events in this lane that are not terminal yet.
    pending: usize,
}

struct Job {
    ticket: Ticket,
    event: WebhookEvent,
    source: SourceRef,
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    lanes: HashMap<String, Arc<Lane>>,
}

impl Dispatcher {
    pub fn new(
        settings: &Settings,
        deliverer: Deliverer,
        producers: Producers,
        progress: Arc<Progress>,
        tasks: TaskTracker,
        metrics: Arc<Metrics>,
    ) -> Self {
        let lanes = settings
            .organizations
            .iter()
            .map(|(id, org)| {
                let lane = Lane {
                    target: Target::new(&deliverer, id, org),
                    state: Mutex::new(LaneState::default()),
                };
                (id.clone(), Arc::new(lane))
            })
            .collect();
        Dispatcher {
            shared: Arc::new(Shared {
                deliverer,
                producers,
                progress,
                global: Permits::new(settings.delivery.max_in_flight_requests),
                max_pending_per_organization: settings.delivery.max_pending_per_organization,
                tasks,
                metrics,
            }),
            lanes,
        }
    }

    /// Each organization's OAuth token source, for the token-fetch metrics.
    pub fn token_sources(&self) -> Vec<(String, Arc<TokenSource>)> {
        self.lanes
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

    fn dispatch(&self, work: Work) {
        match work {
            Work::Reject {
                ticket,
                record,
                rejection,
            } => {
                let shared = self.shared.clone();
                self.shared.tasks.spawn(async move {
                    warn!(
                        partition = record.partition,
                        offset = record.offset,
                        reason = rejection.code(),
                        "record rejected: {rejection}"
                    );
                    if shared
                        .producers
                        .reject(&record, &rejection, &ticket.cancel)
                        .await
                        .is_ok()
                    {
                        shared.progress.complete(&ticket);
                    }
                });
            }
            Work::Deliver {
                ticket,
                key,
                event,
                source,
            } => {
                let lane = match self.lanes.get(&event.organization_id) {
                    Some(lane)
                        if lane
                            .target
                            .endpoint
                            .settings
                            .accepts(event.event_type, &event.regulation) =>
                    {
                        lane
                    }
                    Some(_) => {
                        self.shared
                            .metrics
                            .events_skipped
                            .with_label_values(&["filtered"])
                            .inc();
                        debug!(event_id = %event.id, "filtered out by the endpoint's type or regulation filter");
                        self.shared.progress.complete(&ticket);
                        return;
                    }
                    None => {
                        self.shared
                            .metrics
                            .events_skipped
                            .with_label_values(&["no_endpoint"])
                            .inc();
                        debug!(organization_id = %event.organization_id, "no endpoint configured; skipped");
                        self.shared.progress.complete(&ticket);
                        return;
                    }
                };
                // Without a key there is no order to keep: every record is its own key.
                let key = key.unwrap_or_else(|| {
                    format!("\0{}:{}", source.partition, source.offset).into_bytes()
                });
                submit(
                    lane.clone(),
                    self.shared.clone(),
                    key,
                    Job {
                        ticket,
                        event,
                        source,
                    },
                );
            }
        }
    }
}

fn submit(lane: Arc<Lane>, shared: Arc<Shared>, key: Vec<u8>, job: Job) {
    let mut state = lane.state.lock().unwrap_or_else(|p| p.into_inner());
    if state.pending >= shared.max_pending_per_organization {
        drop(state);
        let tasks = shared.tasks.clone();
        tasks.spawn(async move {
            warn!(organization_id = %job.event.organization_id, event_id = %job.event.id, "lane full; dead-lettering at once");
            let outcome =
                dead_letter(&shared, &lane, &job, DeadLetterReason::LaneOverflow, &[]).await;
            if outcome != Outcome::Abandoned {
                shared.progress.complete(&job.ticket);
            }
        });
        return;
    }
    state.pending += 1;
    if let Some(queue) = state.keys.get_mut(&key) {
        queue.push_back(job);
        return;
    }
    state.keys.insert(key.clone(), VecDeque::new());
    drop(state);
    let tasks = shared.tasks.clone();
    tasks.spawn(run_key(lane, shared, key, job));
}

/// Delivers the events of one key, one after the other, until its queue is empty.
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
        let outcome = deliver(&lane, &shared, &job).instrument(span).await;
        if outcome != Outcome::Abandoned {
            shared.progress.complete(&job.ticket);
        }
        let mut state = lane.state.lock().unwrap_or_else(|p| p.into_inner());
        state.pending -= 1;
        match state.keys.get_mut(&key).and_then(VecDeque::pop_front) {
            Some(next) => job = next,
            None => {
                state.keys.remove(&key);
                return;
            }
        }
    }
}

/// One event through attempts and retries to a terminal outcome (or cancellation).
async fn deliver(lane: &Lane, shared: &Shared, job: &Job) -> Outcome {
    let cancel = &job.ticket.cancel;
    // The budget counts from the first attempt actually sent, not from the wait for permits.
    let mut first: Option<Instant> = None;
    let mut attempts: Vec<Attempt> = Vec::new();
    loop {
        if cancel.is_cancelled() {
            return Outcome::Abandoned;
        }
        let priority = if attempts.is_empty() {
            Priority::First
        } else {
            Priority::Retry
        };
        let (started, attempt) = tokio::select! {
            attempt = attempt(lane, shared, &job.event, priority) => attempt,
            _ = cancel.cancelled() => return Outcome::Abandoned,
        };
        let first = *first.get_or_insert(started);
        let retries_done = attempts.len();
        let decision = lane.target.policy.decide(
            &attempt.outcome,
            retries_done,
            first.elapsed(),
            rand::random::<f64>(),
        );
        debug!(outcome = %attempt.outcome.code(), retries_done, "attempt");
        attempts.push(attempt);
        match decision {
            Decision::Delivered => {
                debug!(attempts = attempts.len(), "delivered");
                let org = &job.event.organization_id;
                shared
                    .metrics
                    .deliveries
                    .with_label_values(&[org, "delivered"])
                    .inc();
                let latency = (chrono::Utc::now() - job.event.occurred_at)
                    .to_std()
                    .unwrap_or_default();
                shared
                    .metrics
                    .end_to_end_latency
                    .observe(latency.as_secs_f64());
                return Outcome::Delivered;
            }
            Decision::RetryAfter(wait) => {
                shared
                    .metrics
                    .retries_scheduled
                    .with_label_values(&[&job.event.organization_id])
                    .inc();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return Outcome::Abandoned,
                }
            }
            Decision::GiveUp(reason) => {
                let reason = match reason {
                    GiveUpReason::Exhausted => DeadLetterReason::Exhausted,
                    GiveUpReason::PermanentStatus => DeadLetterReason::PermanentStatus,
                    GiveUpReason::AddressRefused => DeadLetterReason::AddressRefused,
                };
                return dead_letter(shared, lane, job, reason, &attempts).await;
            }
        }
    }
}

/// One attempt, holding the endpoint's and the global permit only while it runs; with the
/// moment it started (permits in hand).
async fn attempt(
    lane: &Lane,
    shared: &Shared,
    event: &WebhookEvent,
    priority: Priority,
) -> (Instant, Attempt) {
    let (started, _permits) = lane.target.permits(&shared.global, priority).await;
    let metrics = &shared.metrics;
    let attempt = request(metrics, &shared.deliverer, &lane.target, event).await;
    let org = [event.organization_id.as_str()];
    let class = attempt.outcome.status_class();
    metrics
        .delivery_attempts
        .with_label_values(&[org[0], class])
        .inc();
    metrics
        .attempt_duration
        .with_label_values(&org)
        .observe(attempt.duration.as_secs_f64());
    metrics
        .endpoint_failing
        .with_label_values(&org)
        .set(i64::from(class != "2xx"));
    if attempt.reauthorized {
        metrics.oauth_reauthorizations.with_label_values(&org).inc();
    }
    (started, attempt)
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
    lane: &Lane,
    job: &Job,
    reason: DeadLetterReason,
    attempts: &[Attempt],
) -> Outcome {
    let record = DeadLetter::new(
        &job.event,
        Some(&lane.target.endpoint.settings.url),
        reason,
        attempts,
        job.source.clone(),
    );
    match Box::pin(
        shared
            .producers
            .dead_letter(&record, &job.event, &job.ticket.cancel),
    )
    .await
    {
        Ok(()) => {
            let org = job.event.organization_id.as_str();
            shared
                .metrics
                .deliveries
                .with_label_values(&[org, "dead_lettered"])
                .inc();
            shared
                .metrics
                .dead_letters
                .with_label_values(&[org, reason.code()])
                .inc();
            info!(
                reason = reason.code(),
                attempts = attempts.len(),
                "dead-lettered"
            );
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
