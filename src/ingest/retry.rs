//! The retry reader: reads parked events back from the retry partitions whose input partitions
//! this replica owns, on the consumer thread.
//!
//! Guarantees:
//! - **One owner.** Retry partition *p* is read only by the owner of input partition *p*: it is
//!   assigned (not subscribed) when input *p* is assigned, and unassigned when *p* is revoked.
//!   Its read position is committed in the group `<group_id>.retry`, which has no members (it
//!   only holds commits), and, as for the input, never past a record that is not done.
//! - **Index first.** On assignment, retry *p* is scanned from its committed position to its
//!   end and the parked-key index of *p* is installed before any input record of *p* is
//!   delivered (the scan runs inside the rebalance callback, before the next poll).
//! - **Bounded.** Past `max_parked_in_memory` parked records read and held in memory (waiting
//!   for their due time, or attempted), reading pauses; it resumes below half of it. Records
//!   read while an earlier event of their key is not done hold nothing but an index entry (they
//!   wait for their turn and are read again by offset), so they do not count: reading never
//!   stops before the record of the head they wait for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::deadletter::Producers;
use crate::park::keys::ParkedKeys;
use crate::park::marker::{WatermarkMarker, MARKER_HEADER, MARKER_KEY, WATERMARK};
use crate::park::{Parked, Parking, RecordKind};
use crate::telemetry::Metrics;
use crate::work::{hand_over, DispatcherGone, Progress, Work};

/// Longest a scan of the retry partitions may take at assignment before delivery goes on with
/// what it read (logged as an error: order per key may then break for the keys not seen).
const SCAN_PATIENCE: Duration = Duration::from_secs(120);

/// Metadata and committed-offset requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Parked records taken per turn of the consumer loop.
const BATCH: usize = 512;

/// Longest wait for the watermark markers' acknowledgements at revoke or shutdown.
const MARK_PATIENCE: Duration = Duration::from_secs(5);

/// Parked events due later than this are held without their body.
const HORIZON: chrono::Duration = chrono::Duration::seconds(10);

fn kind_of(message: &impl Message) -> RecordKind {
    match message.headers() {
        Some(headers) => RecordKind::of(headers.iter().map(|h| (h.key, h.value))),
        None => RecordKind::Other,
    }
}

fn is_marker(message: &impl Message) -> bool {
    message.headers().is_some_and(|headers| {
        headers
            .iter()
            .any(|h| h.key == MARKER_HEADER && h.value == Some(WATERMARK.as_bytes()))
    })
}

pub struct RetryContext {
    topic: String,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
}

impl ClientContext for RetryContext {
    /// Retry-topic lag per owned partition, from librdkafka statistics.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let assigned = self.progress.lock().assigned();
        for (&partition, p) in &topic.partitions {
            if partition >= 0 && assigned.contains(&partition) && p.consumer_lag >= 0 {
                self.metrics
                    .retry_lag
                    .with_label_values(&[&partition.to_string()])
                    .set(p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for RetryContext {}

pub struct RetryReader {
    consumer: BaseConsumer<RetryContext>,
    /// Reads a partition to its end at assignment, without a group.
    scanner: BaseConsumer,
    topic: String,
    /// Parked records read and not done.
    pub progress: Arc<Progress>,
    parking: Arc<Parking>,
    max_in_memory: usize,
    paused: AtomicBool,
    metrics: Arc<Metrics>,
    /// Writes watermark markers (from the consumer thread, on this runtime).
    producers: Producers,
    runtime: tokio::runtime::Handle,
}

impl RetryReader {
    pub fn new(
        settings: &Settings,
        progress: Arc<Progress>,
        parking: Arc<Parking>,
        metrics: Arc<Metrics>,
        producers: Producers,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let kafka = &settings.kafka;
        let defaults = [
            ("auto.offset.reset", "earliest"),
            ("queued.max.messages.kbytes", "16384"),
            (
                "fetch.queue.backoff.ms",
                crate::kafka::FETCH_QUEUE_BACKOFF_MS,
            ),
            ("statistics.interval.ms", "5000"),
        ];
        let context = RetryContext {
            topic: kafka.retry_topic.clone(),
            metrics: metrics.clone(),
            progress: progress.clone(),
        };
        let consumer: BaseConsumer<RetryContext> = crate::kafka::client_config(kafka, &defaults)
            .set("group.id", format!("{}.retry", kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create_with_context(context)?;
        let scanner: BaseConsumer = crate::kafka::client_config(kafka, &defaults[..1])
            .set("group.id", format!("{}.retry-scan", kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()?;
        Ok(RetryReader {
            consumer,
            scanner,
            topic: kafka.retry_topic.clone(),
            progress,
            parking,
            max_in_memory: settings.delivery.max_parked_in_memory,
            paused: AtomicBool::new(false),
            metrics,
            producers,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn list(&self, partitions: &[(i32, Offset)]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &(p, offset) in partitions {
            let _ = list.add_partition_offset(&self.topic, p, offset);
        }
        list
    }

    /// Input partitions were assigned: scan their retry partitions, install their indexes,
    /// and start reading them from their committed positions. Returns the latest watermark
    /// marker found on each (see [`crate::park::marker`]).
    pub fn assign(&self, partitions: &[i32]) -> Vec<WatermarkMarker> {
        if partitions.is_empty() {
            return Vec::new();
        }
        let starts = self.committed(partitions);
        let (indexes, markers) = self.scan(&starts);
        for (p, keys) in indexes {
            self.parking.install(p, keys);
        }
        self.progress.lock().assign(partitions.iter().copied());
        let list = self.list(&starts);
        if let Err(error) = self.consumer.incremental_assign(&list) {
            error!(%error, ?partitions, "cannot assign the retry partitions: parked events of them wait for the next assignment");
        }
        if self.paused.load(Ordering::SeqCst) {
            let _ = self.consumer.pause(&list);
        }
        markers
    }

    /// Writes a watermark marker on each partition's retry partition (its next owner's scan
    /// reads it); waits for the acknowledgements, at most a few seconds. Blocking.
    pub fn mark(&self, markers: &[WatermarkMarker]) {
        if markers.is_empty() {
            return;
        }
        let cancel = tokio_util::sync::CancellationToken::new();
        let writes = markers.iter().map(|marker| {
            let headers = OwnedHeaders::new().insert(Header {
                key: MARKER_HEADER,
                value: Some(WATERMARK),
            });
            let value = marker.encode();
            let (producers, cancel) = (&self.producers, &cancel);
            async move {
                let written = producers
                    .park(marker.partition, MARKER_KEY, &value, headers, cancel)
                    .await;
                (marker, written)
            }
        });
        let all = futures::future::join_all(writes);
        let done = self
            .runtime
            .block_on(async { tokio::time::timeout(MARK_PATIENCE, all).await });
        cancel.cancel();
        match done {
            Ok(results) => {
                for (marker, written) in results {
                    match written {
                        Ok(offset) => info!(
                            partition = marker.partition,
                            watermark = marker.watermark,
                            retry_offset = offset,
                            "offset commit not confirmed: watermark marked for the next owner"
                        ),
                        Err(error) => warn!(partition = marker.partition, %error, "cannot write the watermark marker; the next owner starts at the committed offset (duplicates)"),
                    }
                }
            }
            Err(_) => warn!("watermark markers not acknowledged in time; the next owners start at the committed offsets (duplicates)"),
        }
    }

    /// Where to read each retry partition from: its committed position, or its beginning.
    fn committed(&self, partitions: &[i32]) -> Vec<(i32, Offset)> {
        let (committed, error) = crate::kafka::committed_offsets(
            &self.consumer,
            &self.topic,
            partitions,
            REQUEST_TIMEOUT,
        );
        if let Some(error) = error {
            warn!(%error, "cannot read the retry reader's committed positions; reading from the beginning");
        }
        committed
            .into_iter()
            .map(|(p, offset)| (p, offset.map_or(Offset::Beginning, Offset::Offset)))
            .collect()
    }

    /// Reads each partition from `starts` to its current end: the parked events not done.
    fn scan(&self, starts: &[(i32, Offset)]) -> (Vec<(i32, ParkedKeys)>, Vec<WatermarkMarker>) {
        let mut indexes: Vec<(i32, ParkedKeys)> = Vec::new();
        let mut markers: Vec<WatermarkMarker> = Vec::new();
        let mut ends: Vec<(i32, i64)> = Vec::new();
        for &(p, start) in starts {
            indexes.push((p, ParkedKeys::default()));
            let (low, high) = match self
                .scanner
                .fetch_watermarks(&self.topic, p, REQUEST_TIMEOUT)
            {
                Ok(watermarks) => watermarks,
                Err(error) => {
                    error!(%error, partition = p, "cannot read the retry partition's end; delivering without its index");
                    continue;
                }
            };
            let from = match start {
                Offset::Offset(o) => o.max(low),
                _ => low,
            };
            // Until librdkafka's statistics report it (only once the group has committed).
            self.metrics
                .retry_lag
                .with_label_values(&[&p.to_string()])
                .set((high - from).max(0));
            if high > from {
                ends.push((p, high));
            }
        }
        if ends.is_empty() {
            return (indexes, markers);
        }
        let list = self.list(
            &starts
                .iter()
                .filter(|(p, _)| ends.iter().any(|(e, _)| e == p))
                .copied()
                .collect::<Vec<_>>(),
        );
        if let Err(error) = self.scanner.assign(&list) {
            error!(%error, "cannot scan the retry partitions; delivering without their index");
            return (indexes, markers);
        }
        let started = Instant::now();
        let mut records = 0usize;
        while !ends.is_empty() && started.elapsed() < SCAN_PATIENCE {
            let Some(message) = self.scanner.poll(Duration::from_millis(100)) else {
                continue;
            };
            let Ok(message) = message else { continue };
            let (p, offset) = (message.partition(), message.offset());
            records += 1;
            if is_marker(&message) {
                if let Some(marker) = message.payload().and_then(WatermarkMarker::decode) {
                    markers.retain(|m| m.partition != marker.partition);
                    markers.push(marker);
                }
            } else if let (Some(key), Some((_, keys))) =
                (message.key(), indexes.iter_mut().find(|(q, _)| *q == p))
            {
                match kind_of(&message) {
                    RecordKind::Parked(head) => {
                        keys.parked(key, head.source_offset, offset, head.parked_at_ms);
                    }
                    RecordKind::Done { source_offset } => {
                        keys.done(key, source_offset);
                    }
                    RecordKind::Other => {}
                }
            }
            ends.retain(|&(q, high)| !(q == p && offset + 1 >= high));
        }
        if !ends.is_empty() {
            error!(
                ?ends,
                "the retry partitions were not read to their end in time: order per key may break for keys parked there"
            );
        }
        let _ = self.scanner.unassign();
        let parked: usize = indexes.iter().map(|(_, k)| k.len()).sum();
        info!(
            records,
            parked,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "retry partitions scanned"
        );
        (indexes, markers)
    }

    /// The partitions are about to go: stop reading them, tell their work to park what waits.
    pub fn leave(&self, partitions: &[i32]) {
        self.progress.lock().leave(partitions.iter().copied());
        // Events waiting for their turn have no work to finish: let go of them now (the
        // dispatcher lets go itself of those that start waiting after this).
        for &p in partitions {
            for offset in self.parking.waiting_offsets(p) {
                let ticket = self.progress.lock().ticket(p, offset);
                if let Some(ticket) = ticket {
                    self.progress.release(&ticket);
                }
            }
        }
        // Only those still read (a shutdown leaves them before the group's own revoke does).
        let reading: Vec<(i32, Offset)> = match self.consumer.assignment() {
            Ok(assigned) => partitions
                .iter()
                .filter(|&&p| assigned.find_partition(&self.topic, p).is_some())
                .map(|&p| (p, Offset::Invalid))
                .collect(),
            Err(_) => Vec::new(),
        };
        if reading.is_empty() {
            return;
        }
        if let Err(error) = self.consumer.incremental_unassign(&self.list(&reading)) {
            warn!(%error, ?partitions, "cannot unassign the retry partitions");
        }
    }

    /// The partitions are gone: forget their work and their index.
    pub fn revoke(&self, partitions: &[i32]) {
        self.progress.lock().revoke(partitions.iter().copied());
        self.parking.remove(partitions);
        for p in partitions {
            let _ = self
                .metrics
                .retry_lag
                .remove_label_values(&[&p.to_string()]);
        }
    }

    /// Commits the read positions of `partitions` below which everything is done.
    pub fn commit(&self, partitions: &[i32]) {
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
        match self.consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                let mut tracker = self.progress.lock();
                for element in list.elements() {
                    if let (Offset::Offset(offset), Ok(())) = (element.offset(), element.error()) {
                        tracker.committed(element.partition(), offset);
                    }
                }
            }
            Err(error) => {
                warn!(%error, "retry reader commit failed; retried on the next tick");
            }
        }
    }

    /// Commits what moved since the last confirmed commit.
    pub fn commit_done(&self) {
        let moved: Vec<i32> = self
            .progress
            .lock()
            .advanced()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        if !moved.is_empty() {
            self.commit(&moved);
        }
    }

    /// Takes what was read (up to a batch) and hands it to the dispatcher. `Err` when the
    /// dispatcher is gone.
    pub fn poll(&self, work: &mpsc::Sender<Work>) -> Result<(), DispatcherGone> {
        for _ in 0..BATCH {
            self.flow_control();
            if self.paused.load(Ordering::SeqCst) {
                // Still serve callbacks (statistics) while paused.
                let _ = self.consumer.poll(Duration::ZERO);
                return Ok(());
            }
            match self.consumer.poll(Duration::ZERO) {
                None => return Ok(()),
                Some(Err(error)) => warn!(%error, "retry reader error"),
                Some(Ok(message)) => {
                    if let Some(item) = self.take(&message) {
                        hand_over(work, item)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn take(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Work> {
        let (partition, offset) = (message.partition(), message.offset());
        let ticket = self.progress.lock().take(partition, offset)?;
        if is_marker(message) {
            self.progress.complete(&ticket);
            return None;
        }
        let problem = match (kind_of(message), message.key()) {
            (RecordKind::Done { .. }, _) => {
                self.progress.complete(&ticket);
                return None;
            }
            (RecordKind::Parked(head), Some(key)) => {
                if head.due_at > chrono::Utc::now() + HORIZON
                    || self.parking.has_earlier(partition, key, head.source_offset)
                {
                    // Due later, or behind an earlier event of its key: wait with its headers
                    // only; the body is read again when due.
                    return Some(Work::Parked {
                        ticket,
                        key: key.to_vec(),
                        head,
                        parked: None,
                    });
                }
                match message.payload().map(Parked::decode) {
                    Some(Ok(parked)) if parked.source.partition == partition => {
                        return Some(Work::Parked {
                            ticket,
                            key: key.to_vec(),
                            head,
                            parked: Some(Box::new(parked)),
                        });
                    }
                    Some(Ok(parked)) => format!(
                        "its source partition {} is not its retry partition",
                        parked.source.partition
                    ),
                    Some(Err(e)) => e.to_string(),
                    None => "no value".to_owned(),
                }
            }
            (RecordKind::Parked(_), None) => "it has no key".to_owned(),
            (RecordKind::Other, _) => "its headers do not describe a parked event".to_owned(),
        };
        error!(
            partition,
            offset, "skipping a record of the retry topic that is not a parked event: {problem}"
        );
        self.progress.complete(&ticket);
        None
    }

    /// Pauses reading past `max_parked_in_memory` records held, resumes below half of it.
    fn flow_control(&self) {
        let taken = self.progress.lock().pending();
        let pending = taken.saturating_sub(self.parking.waiting());
        self.metrics
            .parked_in_memory
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        let paused = self.paused.load(Ordering::SeqCst);
        let pause = if !paused && pending >= self.max_in_memory {
            true
        } else if paused && pending <= self.max_in_memory / 2 {
            false
        } else {
            return;
        };
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                self.paused.store(pause, Ordering::SeqCst);
                info!(pending, paused = pause, "retry reader back-pressure");
            }
            Err(error) => warn!(%error, "retry reader pause/resume failed"),
        }
    }

    /// Every owned partition, for shutdown.
    pub fn assigned(&self) -> Vec<i32> {
        self.progress.lock().assigned()
    }
}
