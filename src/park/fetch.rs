//! Reads parked records again by offset, when an event that waited with its headers only falls
//! due: the retry reader holds far-off events without their bodies, so its memory does not grow
//! with their number.
//!
//! Guarantee: a request is answered once, with the decoded record at that offset, or `None`
//! when it cannot be read within [`FETCH_PATIENCE`] (the caller asks again later). Requests that
//! fall due together were mostly written together, so they are read in runs: one seek per run
//! of nearby offsets, not one per record.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tracing::warn;

use crate::config::Settings;
use crate::park::Parked;

/// Longest a run may take to read.
pub const FETCH_PATIENCE: Duration = Duration::from_secs(10);

/// Offsets at most this far apart are read in one run (a few hundred KB to skip, at most).
const RUN_GAP: i64 = 256;

/// How long requests are gathered before a round of reads starts.
const GATHER: Duration = Duration::from_millis(5);

struct Request {
    partition: i32,
    offset: i64,
    reply: oneshot::Sender<Option<Parked>>,
}

/// Handle to the fetch thread; dropping every handle stops it.
pub struct Fetcher {
    requests: Mutex<std_mpsc::Sender<Request>>,
}

impl Fetcher {
    pub fn start(settings: &Settings) -> Result<Fetcher, rdkafka::error::KafkaError> {
        let kafka = &settings.kafka;
        let consumer: BaseConsumer = crate::kafka::client_config(kafka, &[])
            .set("group.id", format!("{}.retry-fetch", kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "10")
            // Reads are short runs at scattered offsets: no deep prefetch to throw away at
            // each seek (librdkafka's defaults queue up to 64 MB per partition).
            .set("queued.min.messages", "512")
            .set("queued.max.messages.kbytes", "2048")
            .set("max.partition.fetch.bytes", "262144")
            .set("fetch.max.bytes", "1048576")
            // Past those thresholds, a run longer than the queue would stall librdkafka's 1 s.
            .set(
                "fetch.queue.backoff.ms",
                crate::kafka::FETCH_QUEUE_BACKOFF_MS,
            )
            .create()?;
        let topic = kafka.retry_topic.clone();
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("retry-fetch".into())
            .spawn(move || serve(&consumer, &topic, &rx))
            .expect("starting the retry fetch thread");
        Ok(Fetcher {
            requests: Mutex::new(tx),
        })
    }

    /// The parked record at `offset` of retry partition `partition`.
    pub async fn fetch(&self, partition: i32, offset: i64) -> Option<Parked> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Request {
                partition,
                offset,
                reply,
            });
        sent.ok()?;
        answer.await.ok().flatten()
    }
}

fn serve(consumer: &BaseConsumer, topic: &str, requests: &std_mpsc::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut pending = vec![first];
        let gather_until = Instant::now() + GATHER;
        while let Ok(more) =
            requests.recv_timeout(gather_until.saturating_duration_since(Instant::now()))
        {
            pending.push(more);
        }
        // partition → offset → who waits for it.
        let mut wanted: BTreeMap<i32, BTreeMap<i64, Vec<Request>>> = BTreeMap::new();
        for request in pending {
            wanted
                .entry(request.partition)
                .or_default()
                .entry(request.offset)
                .or_default()
                .push(request);
        }
        for (partition, mut offsets) in wanted {
            while let Some((&start, _)) = offsets.first_key_value() {
                let mut end = start;
                for &o in offsets.keys() {
                    if o - end > RUN_GAP {
                        break;
                    }
                    end = o;
                }
                read_run(consumer, topic, partition, start, end, &mut offsets);
                // Whatever the run did not find is answered `None` (asked again later).
                let missed: Vec<i64> = offsets.range(start..=end).map(|(&o, _)| o).collect();
                for o in missed {
                    for request in offsets.remove(&o).unwrap_or_default() {
                        let _ = request.reply.send(None);
                    }
                }
            }
        }
    }
}

/// Reads `start..=end` of `partition`, answering the requests for the offsets it meets.
fn read_run(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    offsets: &mut BTreeMap<i64, Vec<Request>>,
) {
    let mut list = TopicPartitionList::new();
    if list
        .add_partition_offset(topic, partition, Offset::Offset(start))
        .is_err()
        || consumer.assign(&list).is_err()
    {
        warn!(partition, start, "cannot read the retry partition again");
        return;
    }
    let deadline = Instant::now() + FETCH_PATIENCE;
    while Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                warn!(%error, partition, "reading the retry partition again");
                continue;
            }
        };
        if message.partition() != partition {
            continue;
        }
        let offset = message.offset();
        if let Some(requests) = offsets.remove(&offset) {
            let parked = message.payload().and_then(|p| Parked::decode(p).ok());
            for request in requests {
                let _ = request.reply.send(parked.clone());
            }
        }
        if offset >= end {
            return;
        }
    }
    warn!(
        partition,
        start, end, "reading the retry partition again took too long"
    );
}
