//! Ingest: the Kafka consumer, on its own thread.
//!
//! Guarantees (at-least-once):
//! - An offset is committed only when every record below it is done (see
//!   [`crate::work::offsets`]). This thread commits the moved watermarks itself, synchronously,
//!   five times a second, on revoke and at shutdown; librdkafka's auto-commit is off. A
//!   watermark counts as committed only once the broker confirmed it: a failed commit is tried
//!   again on the next tick, quiet partition or not. One thread, synchronous commits: a commit
//!   can never be overtaken by an older one (an auto-commit retried after a rebalance could).
//! - On revoke, the revoked partitions' work is told to leave: what waits is parked (see
//!   [`crate::park`]) and attempts in flight finish, within `drain_timeout` at most; what is
//!   done (parked included) is committed synchronously before the partitions go, the rest is
//!   cancelled and consumed again by the next owner (duplicates, same webhook id; never loss).
//!   The retry partitions of the same numbers go with them ([`retry`]). When the broker refuses
//!   that commit (it does during cooperative rebalances), a watermark marker on the retry
//!   partition tells the next owner where to start ([`crate::park::marker`]).
//! - Bounded: when `max_pending_records` records are taken and not done, no more are taken
//!   until a sixteenth of them are done; if that lasts [`STALL`], every partition is paused,
//!   and they resume below half of it.
//! - Shutdown: stop polling, park what waits, wait up to `drain_timeout` for in-flight work,
//!   cancel what is left, commit what is done, leave the group.
//!
//! Parsing and derivation (pure and fast) run here, on the consumer thread; only records that
//! need I/O (delivery, rejection) cross to the async side.

pub mod retry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use retry::RetryReader;

use crate::change::ConsentChange;
use crate::config::Settings;
use crate::deadletter::{InputRecord, SourceRef};
use crate::derive::{derive, Derived, Rules};
use crate::park::marker::WatermarkMarker;
use crate::telemetry::Metrics;
use crate::webhook::EventType;
use crate::work::{hand_over, Progress, Work};

/// Longest wait in one poll, so that commits and back-pressure are looked at regularly.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Under back-pressure, input is taken again once this fraction of `max_pending_records`
/// (at least one) is done.
const ROOM_BATCH_DIVISOR: usize = 16;

/// How long the loop stops taking input records over `max_pending_records` before it pauses the
/// partitions. Pausing makes librdkafka drop what it prefetched, and resuming fetches it again:
/// done every few thousand records, that costs most of the throughput (a 200,000-record burst
/// with a 4,000 limit: 5,200 deliveries/s with a pause at every crossing). Below this, the loop
/// only waits for completions; rebalance callbacks wait at most this long.
const STALL: Duration = Duration::from_millis(500);

/// How often moved watermarks are committed (a crash re-sends at most about this much work
/// besides the requests in flight).
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// The retry reader is polled at least this often while input flows, and at once whenever the
/// input is idle: not for every input record (a poll of an empty queue costs about as much as
/// reading a record), and still within a millisecond of a retry becoming readable.
const RETRY_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Observable state of the consumer, for readiness.
#[derive(Debug, Default)]
pub struct IngestState {
    /// The consumer has partitions assigned.
    pub assigned: AtomicBool,
    /// At least one broker connection is up (librdkafka statistics).
    pub broker_up: AtomicBool,
    /// Shutdown began: no new work is taken.
    pub draining: AtomicBool,
}

struct IngestContext {
    topic: String,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    drain_timeout: Duration,
    state: Arc<IngestState>,
    /// Whether partitions are paused for back-pressure (new assignments follow it).
    paused: AtomicBool,
    retry: Arc<RetryReader>,
}

impl ClientContext for IngestContext {
    /// librdkafka statistics (every `statistics.interval.ms`): broker liveness for readiness,
    /// and per-partition committed offset, high watermark and lag for the metrics.
    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        self.state.broker_up.store(up, Ordering::SeqCst);
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let assigned = self.progress.lock().assigned();
        for (&partition, p) in &topic.partitions {
            if partition < 0 || !assigned.contains(&partition) {
                continue;
            }
            let label = partition.to_string();
            if p.committed_offset >= 0 {
                self.metrics
                    .committed_offset
                    .with_label_values(&[&label])
                    .set(p.committed_offset);
            }
            if p.hi_offset >= 0 {
                self.metrics
                    .high_watermark
                    .with_label_values(&[&label])
                    .set(p.hi_offset);
            }
            if p.consumer_lag >= 0 {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[&label])
                    .set(p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    /// As rdkafka's own, plus: before newly assigned partitions are fetched, their retry
    /// partitions are scanned (the parked-key index must be in place before their first input
    /// record is delivered), and a partition whose last owner left a watermark marker (its last
    /// commit refused) starts at that watermark instead of the older committed offset.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions = self.partitions_of(tpl);
                // An empty assignment (cooperative rounds, leaving the group) asks nothing: the
                // group may be on its way out, and a request would only wait for its timeout.
                let committed = if partitions.is_empty() {
                    Vec::new()
                } else {
                    let markers = self.retry.assign(&partitions);
                    let committed = self.group_committed(consumer, &partitions);
                    self.resume_at_markers(tpl, &committed, &markers);
                    committed
                };
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(error) = assigned {
                    error!(%error, ?partitions, "cannot take the assigned partitions");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
                // What the group has committed counts as confirmed: a marker written later
                // names it, and an unchanged watermark is not committed again.
                let mut tracker = self.progress.lock();
                for (p, offset) in committed {
                    if let Some(offset) = offset {
                        tracker.committed(p, offset);
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                let revoked = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = revoked {
                    error!(%error, "cannot give the revoked partitions up");
                }
                self.post_rebalance(consumer, &Rebalance::Revoke(tpl));
            }
            other => {
                let error = rdkafka::error::KafkaError::Rebalance(other.into());
                self.post_rebalance(consumer, &Rebalance::Error(error));
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions = self.partitions_of(list);
        if partitions.is_empty() {
            return;
        }
        if consumer.assignment_lost() {
            warn!(
                ?partitions,
                "partitions lost; their in-flight work is abandoned"
            );
            self.retry.leave(&partitions);
        } else {
            // Park what waits, let attempts in flight finish: both end well before the grace
            // unless an endpoint hangs until the request timeout.
            self.progress.lock().leave(partitions.iter().copied());
            self.retry.leave(&partitions);
            let grace = if self.state.draining.load(Ordering::SeqCst) {
                Duration::ZERO
            } else {
                self.drain_timeout
            };
            let deadline = Instant::now() + grace;
            let input_done = self
                .progress
                .wait_until(grace, |t| partitions.iter().all(|&p| t.busy_in(p) == 0));
            let retry_done = self
                .retry
                .progress
                .wait_until(deadline.saturating_duration_since(Instant::now()), |t| {
                    partitions.iter().all(|&p| t.busy_in(p) == 0)
                });
            info!(
                ?partitions,
                all_done = input_done && retry_done,
                "partitions revoked; committing what is done"
            );
            self.commit(consumer, &partitions);
            self.retry.commit(&partitions);
            self.mark_unconfirmed(&partitions);
        }
        self.retry.revoke(&partitions);
        for p in &partitions {
            let label = [p.to_string()];
            let _ = self
                .metrics
                .committed_offset
                .remove_label_values(&[&label[0]]);
            let _ = self
                .metrics
                .high_watermark
                .remove_label_values(&[&label[0]]);
            let _ = self.metrics.consumer_lag.remove_label_values(&[&label[0]]);
        }
        self.progress.lock().revoke(partitions);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = self.partitions_of(list);
                info!(?partitions, "partitions assigned");
                self.progress.lock().assign(partitions);
                if self.paused.load(Ordering::SeqCst) {
                    if let Err(error) = consumer.pause(list) {
                        warn!(%error, "cannot pause newly assigned partitions");
                    }
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => warn!(%error, "rebalance error"),
        }
        let assigned = consumer
            .assignment()
            .map(|a| a.count() > 0)
            .unwrap_or(false);
        self.state.assigned.store(assigned, Ordering::SeqCst);
    }
}

impl IngestContext {
    /// The group's committed offset of each of `partitions` (`None`: none, or unreadable).
    fn group_committed(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: &[i32],
    ) -> Vec<(i32, Option<i64>)> {
        let (committed, error) = crate::kafka::committed_offsets(
            consumer,
            &self.topic,
            partitions,
            Duration::from_secs(5),
        );
        if let Some(error) = error {
            warn!(%error, "cannot read the group's committed offsets");
        }
        committed
    }

    /// Sets the start offset of each newly assigned partition whose marker still applies.
    fn resume_at_markers(
        &self,
        tpl: &mut TopicPartitionList,
        committed: &[(i32, Option<i64>)],
        markers: &[WatermarkMarker],
    ) {
        for m in markers {
            let Some(&(_, now)) = committed.iter().find(|(p, _)| *p == m.partition) else {
                continue;
            };
            if let Some(at) = m.resume_at(&self.topic, now) {
                if tpl
                    .set_partition_offset(&self.topic, m.partition, Offset::Offset(at))
                    .is_ok()
                {
                    info!(
                        partition = m.partition,
                        committed = now,
                        resume_at = at,
                        "starting at the last owner's watermark (its last commit was refused)"
                    );
                }
            }
        }
    }

    /// Partitions going whose watermark the broker did not confirm: a marker for their next
    /// owner (see [`crate::park::marker`]).
    fn mark_unconfirmed(&self, partitions: &[i32]) {
        let markers: Vec<WatermarkMarker> = {
            let tracker = self.progress.lock();
            partitions
                .iter()
                .filter_map(|&p| {
                    let watermark = tracker.watermark(p)?;
                    let confirmed = tracker.confirmed(p);
                    (confirmed != Some(watermark))
                        .then(|| WatermarkMarker::new(&self.topic, p, watermark, confirmed))
                })
                .collect()
        };
        self.retry.mark(&markers);
    }

    fn partitions_of(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }

    /// Synchronously commits the watermarks of `partitions`; only a commit the broker confirmed
    /// is recorded as such, so a failed one is tried again on the next tick.
    fn commit(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let mut list = TopicPartitionList::new();
        {
            let tracker = self.progress.lock();
            for &p in partitions {
                if let Some(w) = tracker.watermark(p) {
                    let _ = list.add_partition_offset(&self.topic, p, Offset::Offset(w));
                }
            }
        }
        if list.count() == 0 {
            return;
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                let mut tracker = self.progress.lock();
                for element in list.elements() {
                    if let (Offset::Offset(offset), Ok(())) = (element.offset(), element.error()) {
                        tracker.committed(element.partition(), offset);
                    }
                }
            }
            Err(error) => {
                warn!(%error, "synchronous commit failed; retried on the next tick (records after the last commit would be redelivered)");
            }
        }
    }
}

/// The consumer's part of the settings.
pub struct Ingest {
    consumer: BaseConsumer<IngestContext>,
    topic: String,
    rules: Rules,
    progress: Arc<Progress>,
    max_pending: usize,
    drain_timeout: Duration,
    state: Arc<IngestState>,
    metrics: Arc<Metrics>,
    /// `events_derived_total` by type, in [`EventType::ALL`] order: resolved once, not per
    /// record.
    derived: [prometheus::IntCounter; 6],
    retry: Arc<RetryReader>,
}

impl Ingest {
    pub fn new(
        settings: &Settings,
        progress: Arc<Progress>,
        state: Arc<IngestState>,
        metrics: Arc<Metrics>,
        retry: Arc<RetryReader>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let kafka = &settings.kafka;
        let context = IngestContext {
            topic: kafka.input_topic.clone(),
            progress: progress.clone(),
            drain_timeout: settings.delivery.drain_timeout,
            state: state.clone(),
            metrics: metrics.clone(),
            paused: AtomicBool::new(false),
            retry: retry.clone(),
        };
        let defaults = [
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("auto.offset.reset", "earliest"),
            // Pre-fetched bytes held by librdkafka; its default (64 MB) dwarfs our own buffers.
            // 8 MB is ~0.1 s of input at full speed, and fetching again takes a round trip:
            // measured 2026-12-06 (burst benchmark, alternated), 16 MB → 8 MB cost no
            // deliveries/s and 15 MB of peak RSS; 4 MB, 11 MB more, at the edge of a slowdown.
            ("queued.max.messages.kbytes", "8192"),
            (
                "fetch.queue.backoff.ms",
                crate::kafka::FETCH_QUEUE_BACKOFF_MS,
            ),
            // Lag, committed offsets and broker liveness come from these statistics.
            ("statistics.interval.ms", "5000"),
        ];
        let consumer: BaseConsumer<IngestContext> = crate::kafka::client_config(kafka, &defaults)
            // At-least-once: nothing is committed but the watermarks this thread commits.
            .set("group.id", &kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create_with_context(context)?;
        consumer.subscribe(&[&kafka.input_topic])?;
        Ok(Ingest {
            consumer,
            topic: kafka.input_topic.clone(),
            rules: settings.rules.clone(),
            progress,
            max_pending: settings.delivery.max_pending_records,
            drain_timeout: settings.delivery.drain_timeout,
            state,
            derived: EventType::ALL
                .map(|t| metrics.events_derived.with_label_values(&[t.as_str()])),
            metrics,
            retry,
        })
    }

    /// Polls until `stop` is cancelled (or the dispatcher is gone), then drains, cancels
    /// `abandon`, commits and leaves the group. Blocking: run it on its own thread.
    pub fn run(
        self,
        work: mpsc::Sender<Work>,
        stop: CancellationToken,
        abandon: CancellationToken,
    ) {
        let mut last_commit = Instant::now();
        // Idle at the start: the first turn polls the retry reader.
        let mut last_retry_poll = Instant::now();
        let mut idle = true;
        let mut stalled_since: Option<Instant> = None;
        while !stop.is_cancelled() {
            // Back-pressure is checked for every record (cheap, keeps the bound exact).
            let full = self.flow_control(&mut stalled_since);
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                self.commit_done();
                self.retry.commit_done();
                last_commit = Instant::now();
            }
            if idle || last_retry_poll.elapsed() >= RETRY_POLL_INTERVAL {
                if self.retry.poll(&work).is_err() {
                    break;
                }
                last_retry_poll = Instant::now();
            }
            if full {
                idle = true;
                // Take no input until a batch of records is done (or the stall turns into a
                // pause): one wake-up per batch, not per record, and the records then taken
                // reach the dispatcher together.
                let max = self.max_pending;
                let batch = (max / ROOM_BATCH_DIVISOR).max(1);
                self.progress
                    .wait_batched(POLL_INTERVAL, batch, |t| t.pending() + batch <= max);
                continue;
            }
            let polled = self.consumer.poll(POLL_INTERVAL);
            idle = polled.is_none();
            match polled {
                None => {}
                Some(Err(error)) => warn!(%error, "consumer error"),
                Some(Ok(message)) => {
                    if let Some(item) = self.take(&message) {
                        if hand_over(&work, item).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        drop(work);
        self.state.draining.store(true, Ordering::SeqCst);
        // What waits is parked now; attempts in flight get the rest of `drain_timeout`.
        let assigned = self.progress.lock().assigned();
        self.progress.lock().leave(assigned.iter().copied());
        let retry_assigned = self.retry.assigned();
        self.retry.leave(&retry_assigned);
        let deadline = Instant::now() + self.drain_timeout;
        let drained = self
            .progress
            .wait_until(self.drain_timeout, |t| t.busy() == 0)
            && self
                .retry
                .progress
                .wait_until(deadline.saturating_duration_since(Instant::now()), |t| {
                    t.busy() == 0
                });
        let left = self.progress.lock().busy() + self.retry.progress.lock().busy();
        info!(drained, left, "stopping: committing what is done");
        abandon.cancel();
        self.consumer.context().commit(&self.consumer, &assigned);
        self.retry.commit(&retry_assigned);
        self.consumer.context().mark_unconfirmed(&assigned);
        self.consumer.unsubscribe();
        // Dropping the consumer closes it: it leaves the group at once.
    }

    /// Registers the record and turns it into work, or completes it here when there is none.
    fn take(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Work> {
        let (partition, offset) = (message.partition(), message.offset());
        let ticket = self.progress.lock().take(partition, offset)?;
        self.metrics.records_consumed.inc();
        let payload = message.payload().unwrap_or_default();
        let change = match ConsentChange::parse(payload) {
            Ok(change) => change,
            Err(rejection) => {
                self.metrics
                    .records_rejected
                    .with_label_values(&[rejection.code()])
                    .inc();
                return Some(Work::Reject {
                    ticket,
                    record: self.input_record(message),
                    rejection,
                });
            }
        };
        match derive(&change, &self.rules) {
            Derived::Suppressed(reason) => {
                self.metrics
                    .events_suppressed
                    .with_label_values(&[reason.code()])
                    .inc();
                debug!(partition, offset, reason = reason.code(), "suppressed");
                self.progress.complete(&ticket);
                None
            }
            Derived::Webhook(event) => {
                if let Some(i) = EventType::ALL.iter().position(|t| *t == event.event_type) {
                    self.derived[i].inc();
                }
                let at = message
                    .timestamp()
                    .to_millis()
                    .unwrap_or_else(|| event.occurred_at.timestamp_millis());
                Some(Work::Deliver {
                    at,
                    source: SourceRef {
                        topic: self.topic.clone(),
                        partition,
                        offset,
                        change_id: event.change_id.clone(),
                    },
                    ticket,
                    key: message.key().map(<[u8]>::to_vec),
                    event,
                })
            }
        }
    }

    /// The record exactly as consumed, for the rejected topic.
    fn input_record(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> InputRecord {
        InputRecord {
            topic: self.topic.clone(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers: message
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Commits the watermarks that differ from the last confirmed commit.
    fn commit_done(&self) {
        let moved: Vec<i32> = self
            .progress
            .lock()
            .advanced()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        if !moved.is_empty() {
            self.consumer.context().commit(&self.consumer, &moved);
        }
    }

    /// Back-pressure at `max_pending` records taken and not done. Returns true while the loop
    /// must take no input (over the limit for less than [`STALL`]); past it, every partition
    /// is paused, and resumed below half of the limit.
    fn flow_control(&self, stalled_since: &mut Option<Instant>) -> bool {
        let pending = self.progress.lock().pending();
        self.metrics
            .pending_records
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        let context = self.consumer.context();
        let paused = context.paused.load(Ordering::SeqCst);
        let change = if paused {
            (pending <= self.max_pending / 2).then_some(false)
        } else if pending < self.max_pending {
            *stalled_since = None;
            None
        } else if stalled_since.get_or_insert_with(Instant::now).elapsed() < STALL {
            return true;
        } else {
            *stalled_since = None;
            Some(true)
        };
        let Some(pause) = change else { return false };
        let Ok(assignment) = self.consumer.assignment() else {
            return false;
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                context.paused.store(pause, Ordering::SeqCst);
                let count = if pause { assignment.count() } else { 0 };
                self.metrics
                    .paused_partitions
                    .set(i64::try_from(count).unwrap_or(0));
                info!(pending, paused = pause, "back-pressure");
            }
            Err(error) => warn!(%error, "pause/resume failed"),
        }
        false
    }
}
