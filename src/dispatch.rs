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
//!   A lane's first attempts are made by at most `concurrency` workers, which take the next
//!   event of each ready key in turn; waiting events are data in the lane's queue, not tasks.
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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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
use crate::registry::{self, Known, Registry};
use crate::telemetry::Metrics;
use crate::webhook::WebhookEvent;
use crate::work::{Progress, Ticket, Work};
use crate::FastHashMap;

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
    /// One lane per organization with an endpoint, changed live by the registry.
    lanes: RwLock<FastHashMap<String, Arc<Lane>>>,
    deliverer: Deliverer,
    cx: Parts,
    registry: Arc<Registry>,
    global: Permits,
    max_pending_per_organization: usize,
}

struct Lane {
    /// The endpoint as configured now: an attempt takes it when it starts, so a change applies
    /// from the next attempt.
    current: RwLock<Arc<Current>>,
    /// When the organization was registered (ms; [`registry::ALWAYS`] for the file's).
    registered_at: AtomicI64,
    /// Removed from the registry: its queued events are skipped.
    removed: AtomicBool,
    state: Mutex<LaneState>,
    /// The endpoint's last attempt failed: the lane takes no more than `concurrency` events.
    failing: AtomicBool,
}

/// A lane's endpoint and metric handles, replaced as one when the organization changes.
struct Current {
    target: Target,
    metrics: LaneMetrics,
}

impl Lane {
    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
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
        let org = metrics.label(org);
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
    /// Keys with an event in progress or ready, and the events waiting behind it.
    keys: KeyQueues<Vec<u8>, Job>,
    /// The next event of each key whose turn it is, in the order they became ready: what the
    /// lane's workers take.
    ready: VecDeque<(Vec<u8>, Job)>,
    /// Workers running (at most the endpoint's `concurrency`).
    workers: usize,
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
    pub fn new(
        settings: &Settings,
        deliverer: Deliverer,
        registry: Arc<Registry>,
        cx: Parts,
    ) -> Self {
        let shared = Arc::new(Shared {
            lanes: RwLock::new(FastHashMap::default()),
            deliverer,
            cx,
            registry,
            global: Permits::new(settings.delivery.max_in_flight_requests),
            max_pending_per_organization: settings.delivery.max_pending_per_organization,
        });
        for (id, org) in &settings.organizations {
            shared.apply(
                id,
                Some(registry::Live {
                    settings: Arc::new(org.clone()),
                    registered_at: registry::ALWAYS,
                }),
            );
        }
        Dispatcher { shared }
    }

    /// How the registry changes the lanes: see [`Shared::apply`].
    pub fn organizations(&self) -> registry::Apply {
        let shared = self.shared.clone();
        Arc::new(move |id, live| shared.apply(id, live))
    }

    /// Each labelled organization's OAuth token source, for the token-fetch metrics.
    pub fn token_sources(&self) -> Arc<dyn Fn() -> Vec<(String, Arc<TokenSource>)> + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || {
            shared
                .read_lanes()
                .iter()
                // Only organizations with their own label: see `Metrics::label`.
                .filter(|(org, _)| shared.cx.metrics.label(org) == org.as_str())
                .filter_map(|(org, lane)| {
                    let source = lane.current().target.endpoint.token_source()?.clone();
                    Some((org.clone(), source))
                })
                .collect()
        })
    }

    /// Takes work until the consumer closes the channel. Never waits on a delivery: lanes run
    /// on their own tasks. Events whose organization is unknown here wait until the registry
    /// is known complete up to their record's time (see [`crate::registry`]), in order per
    /// organization.
    pub async fn run(self, mut work: mpsc::Receiver<Work>) {
        let mut complete = self.shared.registry.watch_complete();
        let mut waiting = Waiting::default();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                item = work.recv() => match item {
                    Some(item) => self.dispatch(item, &mut waiting),
                    None => break,
                },
                _ = complete.changed(), if waiting.count > 0 => self.recheck(&mut waiting),
                _ = tick.tick(), if waiting.count > 0 => self.recheck(&mut waiting),
            }
            self.shared
                .cx
                .metrics
                .events_waiting_for_registry
                .set(i64::try_from(waiting.count).unwrap_or(i64::MAX));
        }
        for held in waiting.by_organization.into_values().flatten() {
            self.shared.cx.progress.release(&held.ticket);
        }
        self.shared.cx.metrics.events_waiting_for_registry.set(0);
    }

    /// The lane of an event, why it has none (counted), or that it must wait for the registry.
    fn lane_for(&self, event: &WebhookEvent, at: i64) -> Route {
        let metrics = &self.shared.cx.metrics;
        let lane = self.shared.lane(&event.organization_id);
        let since = lane
            .as_ref()
            .map(|l| l.registered_at.load(Ordering::Relaxed));
        match self.shared.registry.known(since, at) {
            Known::NotYet => return Route::Wait,
            Known::No => {
                metrics
                    .events_skipped
                    .with_label_values(&["no_endpoint"])
                    .inc();
                debug!(organization_id = %event.organization_id, "no endpoint for the organization at the record's time; skipped");
                return Route::Skip;
            }
            Known::Yes => {}
        }
        let lane = lane.expect("known organizations have a lane");
        if lane
            .current()
            .target
            .endpoint
            .settings
            .accepts(event.event_type, &event.regulation)
        {
            Route::Lane(lane)
        } else {
            metrics
                .events_skipped
                .with_label_values(&["filtered"])
                .inc();
            debug!(event_id = %event.id, "filtered out by the endpoint's type or regulation filter");
            Route::Skip
        }
    }

    /// Events waiting for the registry, again: in order per organization, up to the first that
    /// must still wait. One whose partition leaves goes on waiting, as work in flight does (its
    /// decision comes within about `clock_skew`, and the revoke's drain waits for it: the next
    /// owner does not deliver again what its stretch of the partition holds); dropped, not done,
    /// once abandoned (the drain timed out: the next owner reads it again).
    fn recheck(&self, waiting: &mut Waiting) {
        let mut emptied = Vec::new();
        for (org, queue) in waiting.by_organization.iter_mut() {
            while let Some(held) = queue.front() {
                if held.ticket.cancel.is_cancelled() {
                    queue.pop_front();
                    waiting.count -= 1;
                    continue;
                }
                match self.lane_for(&held.event, held.at) {
                    Route::Wait => break,
                    route => {
                        let held = queue.pop_front().expect("front");
                        waiting.count -= 1;
                        self.route(route, held);
                    }
                }
            }
            if queue.is_empty() {
                emptied.push(org.clone());
            }
        }
        for org in emptied {
            waiting.by_organization.remove(&org);
        }
    }

    fn route(&self, route: Route, held: Held) {
        match route {
            Route::Lane(lane) => {
                // Without a key there is no order to keep: every record is its own key.
                let key = held.key.unwrap_or_else(|| keyless(&held.source));
                let job = Job {
                    ticket: held.ticket,
                    event: held.event,
                    source: held.source,
                    lane_full: false,
                };
                submit(lane, self.shared.clone(), key, job);
            }
            Route::Skip => self.shared.cx.progress.complete(&held.ticket),
            Route::Wait => unreachable!("waiting events stay in `Waiting`: callers keep them"),
        }
    }

    fn dispatch(&self, work: Work, waiting: &mut Waiting) {
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
                at,
            } => {
                let held = Held {
                    ticket,
                    key,
                    event,
                    source,
                    at,
                };
                // Behind an earlier event of its organization that waits: in order, after it.
                if let Some(queue) = waiting.by_organization.get_mut(&held.event.organization_id) {
                    queue.push_back(held);
                    waiting.count += 1;
                    return;
                }
                match self.lane_for(&held.event, held.at) {
                    Route::Wait => {
                        waiting
                            .by_organization
                            .entry(held.event.organization_id.clone())
                            .or_default()
                            .push_back(held);
                        waiting.count += 1;
                    }
                    route => self.route(route, held),
                }
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

/// Where an input event goes.
enum Route {
    Lane(Arc<Lane>),
    Skip,
    /// Its organization is unknown here and the registry is not known complete up to its
    /// record's time yet.
    Wait,
}

/// An input event not routed yet.
struct Held {
    ticket: Ticket,
    key: Option<Vec<u8>>,
    event: WebhookEvent,
    source: SourceRef,
    /// Its record's time (ms).
    at: i64,
}

/// Events waiting for the registry, per organization, in arrival order.
#[derive(Default)]
struct Waiting {
    by_organization: HashMap<String, VecDeque<Held>>,
    count: usize,
}

impl Shared {
    fn url_of(&self, organization_id: &str) -> Option<reqwest::Url> {
        self.lane(organization_id)
            .map(|lane| lane.current().target.endpoint.settings.url.clone())
    }

    fn read_lanes(&self) -> std::sync::RwLockReadGuard<'_, FastHashMap<String, Arc<Lane>>> {
        self.lanes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The lane of an organization with an endpoint now.
    fn lane(&self, organization_id: &str) -> Option<Arc<Lane>> {
        self.read_lanes().get(organization_id).cloned()
    }

    /// Adds, changes (from its next attempt) or removes an organization's lane. A changed lane
    /// keeps its queues, its permits (when its concurrency is the same) and its events in
    /// flight; a removed one skips what it still holds.
    fn apply(&self, id: &str, live: Option<registry::Live>) {
        let metrics = &self.cx.metrics;
        let mut lanes = self.lanes.write().unwrap_or_else(|p| p.into_inner());
        let Some(live) = live else {
            if let Some(lane) = lanes.remove(id) {
                lane.removed.store(true, Ordering::SeqCst);
                metrics.label_organization(id, false);
                info!(organization_id = id, "endpoint removed");
            }
            return;
        };
        let labelled = live
            .settings
            .metrics_label
            .unwrap_or(live.registered_at == registry::ALWAYS);
        metrics.label_organization(id, labelled);
        let mut target = Target::new(&self.deliverer, id, &live.settings);
        match lanes.get(id) {
            Some(lane) => {
                let mut current = lane.current.write().unwrap_or_else(|p| p.into_inner());
                if current.target.endpoint.settings.concurrency == live.settings.concurrency {
                    target.concurrency = current.target.concurrency.clone();
                }
                *current = Arc::new(Current {
                    target,
                    metrics: LaneMetrics::new(metrics, id),
                });
                lane.registered_at
                    .store(live.registered_at, Ordering::SeqCst);
                debug!(
                    organization_id = id,
                    "endpoint changed: applies from the next attempt"
                );
            }
            None => {
                let lane = Lane {
                    current: RwLock::new(Arc::new(Current {
                        target,
                        metrics: LaneMetrics::new(metrics, id),
                    })),
                    registered_at: AtomicI64::new(live.registered_at),
                    removed: AtomicBool::new(false),
                    state: Mutex::new(LaneState::default()),
                    failing: AtomicBool::new(false),
                };
                lanes.insert(id.to_owned(), Arc::new(lane));
                debug!(organization_id = id, "endpoint added");
            }
        }
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
            let concurrency = lane.current().target.endpoint.settings.concurrency;
            concurrency.min(shared.max_pending_per_organization)
        } else {
            shared.max_pending_per_organization
        };
        job.lane_full = state.pending >= limit;
    }
    state.pending += 1;
    if let Some(job) = state.keys.submit(&key, job) {
        ready(&lane, &shared, state, key, job);
    }
}

/// `job` is its key's turn: queued for the lane's workers, and a worker started when fewer run
/// than the endpoint's `concurrency` (more could only wait for its permits).
fn ready(
    lane: &Arc<Lane>,
    shared: &Arc<Shared>,
    mut state: std::sync::MutexGuard<'_, LaneState>,
    key: Vec<u8>,
    job: Job,
) {
    state.ready.push_back((key, job));
    if state.workers < lane.current().target.endpoint.settings.concurrency.max(1) {
        state.workers += 1;
        drop(state);
        shared
            .cx
            .tasks
            .spawn(work_lane(lane.clone(), shared.clone()));
    }
}

/// A lane's worker: takes the ready events one after the other until none is left. Events
/// without an attempt (parked at once, skipped) are handed to a task of their own, so that
/// parking a lane's backlog (a revoke, a full lane) is never paced by its concurrency.
async fn work_lane(lane: Arc<Lane>, shared: Arc<Shared>) {
    loop {
        let (key, job) = {
            let mut state = lane.state.lock().unwrap_or_else(|p| p.into_inner());
            match state.ready.pop_front() {
                Some(next) => next,
                None => {
                    state.workers -= 1;
                    return;
                }
            }
        };
        if without_attempt(&lane, &shared, &key, &job) {
            let (lane, shared2) = (lane.clone(), shared.clone());
            shared.cx.tasks.spawn(async move {
                run_job(&lane, &shared2, key, job).await;
            });
        } else {
            run_job(&lane, &shared, key, job).await;
        }
    }
}

/// Whether the event ends without an attempt: skipped, or parked at once.
fn without_attempt(lane: &Lane, shared: &Shared, key: &[u8], job: &Job) -> bool {
    let parking = &shared.cx.parking;
    lane.removed.load(Ordering::SeqCst)
        || job.lane_full
        || job.ticket.leave.is_cancelled()
        || parking.has_parked(job.source.partition, key)
        || parking.contains(job.source.partition, key, job.source.offset)
}

/// One event's turn, then its key's next event made ready (or the key idle).
async fn run_job(lane: &Arc<Lane>, shared: &Arc<Shared>, key: Vec<u8>, job: Job) {
    // At debug: a span per delivery at `info` cost ~10 % of a delivery's instructions (the
    // JSON layer formats its fields for every event); the warnings and the dead-letter line of
    // this path name the organization and the event themselves.
    let span = tracing::debug_span!(
        "deliver",
        organization_id = %job.event.organization_id,
        event_id = %job.event.id,
        change_id = %job.event.change_id,
        partition = job.source.partition,
        offset = job.source.offset,
    );
    let outcome = first_attempt(lane, shared, &key, &job)
        .instrument(span)
        .await;
    if outcome != Outcome::Abandoned {
        shared.cx.progress.complete(&job.ticket);
    }
    drop(job);
    let mut state = lane.state.lock().unwrap_or_else(|p| p.into_inner());
    state.pending -= 1;
    if let Some(next) = state.keys.next(&key) {
        ready(lane, shared, state, key, next);
    }
}

/// An input event: parked behind its key (or its full lane, or because its partition goes),
/// or attempted once; a failure that may be retried parks it.
async fn first_attempt(lane: &Lane, shared: &Shared, key: &[u8], job: &Job) -> Outcome {
    let parking = &shared.cx.parking;
    let (partition, offset) = (job.source.partition, job.source.offset);
    if lane.removed.load(Ordering::SeqCst) {
        debug!("the organization was removed");
        return Outcome::Skipped;
    }
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
    let current = lane.current();
    let permits = tokio::select! {
        permits = current.target.permits(&shared.global, Priority::First) => permits.1,
        _ = job.ticket.leave.cancelled() => {
            let reason = leaving(shared);
            return park(shared, key, parked(reason, vec![], None, Utc::now()), reason, &job.ticket).await;
        }
    };
    let attempt = tokio::select! {
        attempt = attempt(lane, &current, shared, &job.event, permits) => attempt,
        _ = job.ticket.cancel.cancelled() => return Outcome::Abandoned,
    };
    let decision = current.target.decide(&attempt, 0, None);
    debug!(outcome = %attempt.outcome.code(), "first attempt");
    let first = Some(attempt.at);
    // The attempt as a record (its time formatted) only when it is kept: not for a delivery.
    let attempts = || vec![AttemptRecord::from(&attempt)];
    match decision {
        Decision::Delivered => {
            delivered(&current, shared, &job.event, 1);
            Outcome::Delivered
        }
        Decision::RetryAfter(wait) => {
            scheduled(shared, &job.event);
            let due = Utc::now() + wait;
            let record = parked(ParkReason::Retry, attempts(), first, due);
            park(shared, key, record, ParkReason::Retry, &job.ticket).await
        }
        Decision::GiveUp(reason) => {
            let record = DeadLetter::with_records(
                &job.event,
                Some(&current.target.endpoint.settings.url),
                reason.into(),
                attempts(),
                job.source.clone(),
            );
            dead_letter(shared, &job.event, record, &job.ticket).await
        }
    }
}

fn delivered(current: &Current, shared: &Shared, event: &WebhookEvent, attempts: usize) {
    debug!(attempts, "delivered");
    current.metrics.delivered.inc();
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
        .with_label_values(&[shared.cx.metrics.label(&event.organization_id)])
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
                organization_id = %parked.organization_id,
                event_id = %parked.event_id,
                partition,
                offset = parked.source.offset,
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
        .with_label_values(&[
            shared.cx.metrics.label(&parked.organization_id),
            reason.code(),
        ])
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
    current: &Current,
    shared: &Shared,
    event: &WebhookEvent,
    _permits: [Permit; 2],
) -> Attempt {
    let metrics = &shared.cx.metrics;
    let attempt = request(metrics, &shared.deliverer, &current.target, event).await;
    let class = attempt.outcome.status_class();
    let label = metrics.label(&event.organization_id);
    match AttemptOutcome::CLASSES.iter().position(|c| *c == class) {
        Some(i) => current.metrics.attempts[i].inc(),
        None => metrics
            .delivery_attempts
            .with_label_values(&[label, class])
            .inc(),
    }
    current
        .metrics
        .attempt_duration
        .observe(attempt.duration.as_secs_f64());
    let failing = class != "2xx";
    lane.failing.store(failing, Ordering::Relaxed);
    current.metrics.endpoint_failing.set(i64::from(failing));
    let org = [label];
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
            let metrics = &shared.cx.metrics;
            let org = metrics.label(&event.organization_id);
            metrics
                .deliveries
                .with_label_values(&[org, "dead_lettered"])
                .inc();
            metrics
                .dead_letters
                .with_label_values(&[org, reason.code()])
                .inc();
            info!(
                organization_id = %event.organization_id,
                event_id = %event.id,
                reason = reason.code(),
                attempts,
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
