//! Pass 2 of a redrive: each selected dead letter delivered again with the current
//! configuration, then resolved (a marker) or written back (attempts appended).
//!
//! Guarantees:
//! - events of the same organization and entity (the user, or the consent event) are delivered
//!   one after the other, in the order they are submitted (source order: see
//!   `deliver_selected`); once one of them fails again in a redrive, the key's later events are
//!   left as they are, so a later run still delivers them after it; others run concurrently,
//!   bounded by each endpoint's `concurrency` and by `max_in_flight_requests`, permits held only
//!   during an attempt;
//! - a delivered event gets its resolution marker; an event that fails again is written back with
//!   every earlier attempt followed by the new ones, a new `dead_lettered_at` and the new reason;
//!   an organization without an endpoint now is written back as `endpoint_not_configured`;
//! - after `stop`, no attempt starts; an event not attempted yet stays as it was.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::deadletter::{DeadLetter, DeadLetterReason, Producers};
use crate::delivery::{
    Attempt, Decision, Deliverer, GiveUpReason, KeyQueues, Permits, Priority, Target,
};
use crate::webhook::{EventType, WebhookEvent};

use super::scan::{parse_time, Marker};
use super::select::Coordinates;

/// How one selected dead letter ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered and its marker written.
    Delivered,
    /// Delivered, but the marker could not be written (interrupted): a later run delivers it
    /// again.
    DeliveredUnrecorded,
    /// Failed again and written back with this reason.
    FailedAgain(DeadLetterReason),
    /// The organization's endpoint no longer takes this type or regulation: left as it is.
    NotAccepted,
    /// Interrupted before its first attempt, or before its write-back, or behind an earlier
    /// event of its key that failed again in this run: left as it is.
    NotAttempted,
}

/// Counts of outcomes.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub delivered: u64,
    pub delivered_unrecorded: u64,
    pub failed_again: BTreeMap<&'static str, u64>,
    pub not_accepted: u64,
    pub not_attempted: u64,
}

impl Tally {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::DeliveredUnrecorded => self.delivered_unrecorded += 1,
            Outcome::FailedAgain(reason) => {
                *self.failed_again.entry(reason.code()).or_default() += 1
            }
            Outcome::NotAccepted => self.not_accepted += 1,
            Outcome::NotAttempted => self.not_attempted += 1,
        }
    }

    /// `{reason: n, ...}` for a summary line.
    pub fn failed_by_reason(&self) -> String {
        let reasons: Vec<String> = self
            .failed_again
            .iter()
            .map(|(reason, n)| format!("{reason}: {n}"))
            .collect();
        format!("{{{}}}", reasons.join(", "))
    }

    pub fn failed_again_total(&self) -> u64 {
        self.failed_again.values().sum()
    }

    pub fn done(&self) -> u64 {
        self.delivered
            + self.delivered_unrecorded
            + self.failed_again_total()
            + self.not_accepted
            + self.not_attempted
    }
}

/// One selected dead letter, rebuilt into an event ready to deliver.
pub struct Job {
    pub record: DeadLetter,
    pub event: WebhookEvent,
    pub at: Coordinates,
    /// Organization and entity: events with the same key keep their order.
    pub key: String,
}

#[derive(Deserialize)]
struct EventFields {
    id: String,
    #[serde(rename = "type")]
    event_type: EventType,
    organization_id: String,
    regulation: String,
    created_at: String,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    entity: Option<EntityId>,
    new_entity: Option<EntityId>,
    old_entity: Option<EntityId>,
}

#[derive(Deserialize)]
struct EntityId {
    id: String,
}

/// The order key of a stored event: its organization and entity (the user, or the consent
/// event); events with the same key are delivered in source order.
fn order_key(organization_id: &str, id: &str, parameters: Option<Parameters>) -> String {
    let entity = parameters
        .and_then(|p| p.entity.or(p.new_entity).or(p.old_entity))
        .map_or_else(|| id.to_owned(), |e| e.id);
    format!("{organization_id}\0{entity}")
}

/// The order key of a dead letter's event (see [`Job::key`]).
pub fn key_of(record: &DeadLetter) -> Result<String, String> {
    let fields: EventFields = serde_json::from_str(record.event.get())
        .map_err(|e| format!("the stored event is not a webhook event: {e}"))?;
    Ok(order_key(
        &record.organization_id,
        &fields.id,
        fields.parameters,
    ))
}

impl Job {
    /// A job for an event derived anew from its source record (resend): failures are written
    /// to the dead-letter topic as first-time dead letters. `key` orders the events of one
    /// entity (the source record's key); `at` is the source record's partition and offset.
    pub fn derived(event: WebhookEvent, topic: &str, at: Coordinates, key: String) -> Job {
        let source = crate::deadletter::SourceRef {
            topic: topic.to_owned(),
            partition: at.0,
            offset: at.1,
            change_id: event.change_id.clone(),
        };
        // A stand-in: only its source and (empty) attempts are read when it is written back.
        let record = DeadLetter::new(&event, None, DeadLetterReason::Exhausted, &[], source);
        Job {
            record,
            event,
            at,
            key,
        }
    }

    /// Rebuilds the event from a dead-letter record: the body is the stored event, byte for
    /// byte; the change id comes from the record's source.
    pub fn new(record: DeadLetter, at: Coordinates) -> Result<Job, String> {
        let fields: EventFields = serde_json::from_str(record.event.get())
            .map_err(|e| format!("the stored event is not a webhook event: {e}"))?;
        let occurred_at = parse_time(&fields.created_at)
            .ok_or_else(|| format!("created_at {:?} is not a time", fields.created_at))?;
        let key = order_key(&record.organization_id, &fields.id, fields.parameters);
        let event = WebhookEvent {
            id: fields.id,
            event_type: fields.event_type,
            organization_id: fields.organization_id,
            regulation: fields.regulation,
            change_id: record.source.change_id.clone(),
            occurred_at,
            body: Bytes::copy_from_slice(record.event.get().as_bytes()),
        };
        Ok(Job {
            record,
            event,
            at,
            key,
        })
    }
}

/// What every delivery shares.
pub struct Redriver {
    deliverer: Deliverer,
    producers: Producers,
    dead_letter_topic: String,
    lanes: HashMap<String, Target>,
    global: Permits,
    /// Retries after the first attempt, at most (and never more than the org's schedule has).
    retries: usize,
    /// No attempt starts once cancelled.
    stop: CancellationToken,
    /// Writes (markers, write-backs) are abandoned once cancelled.
    abort: CancellationToken,
    keys: Mutex<KeyQueues<String, (Job, OwnedSemaphorePermit)>>,
    /// Keys with an event that failed again in this run (redrive only): their later events are
    /// left as they are, so that a later run delivers the key's events in source order.
    failed_keys: Mutex<HashSet<String>>,
    tasks: TaskTracker,
    tally: Mutex<Tally>,
    on_done: Box<dyn Fn(&Tally) + Send + Sync>,
    /// Write a resolution marker for each delivered event (redrive), or not (resend: its jobs
    /// are not dead letters).
    markers: bool,
}

impl Redriver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &Settings,
        deliverer: Deliverer,
        producers: Producers,
        retries: usize,
        stop: CancellationToken,
        abort: CancellationToken,
        on_done: Box<dyn Fn(&Tally) + Send + Sync>,
    ) -> Redriver {
        let lanes = settings
            .organizations
            .iter()
            .map(|(id, org)| (id.clone(), Target::new(&deliverer, id, org)))
            .collect();
        Redriver {
            deliverer,
            producers,
            dead_letter_topic: settings.kafka.dead_letter_topic.clone(),
            lanes,
            global: Permits::new(settings.delivery.max_in_flight_requests),
            retries,
            stop,
            abort,
            keys: Mutex::new(KeyQueues::default()),
            failed_keys: Mutex::new(HashSet::new()),
            tasks: TaskTracker::new(),
            tally: Mutex::new(Tally::default()),
            on_done,
            markers: true,
        }
    }

    /// Delivered events get no resolution marker (their jobs are not dead letters); failed ones
    /// are still written to the dead-letter topic.
    pub fn without_markers(mut self) -> Self {
        self.markers = false;
        self
    }

    /// Queues a job behind the earlier ones of its key; `permit` is released when it ends.
    pub fn submit(self: &Arc<Self>, job: Job, permit: OwnedSemaphorePermit) {
        let key = job.key.clone();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let Some((job, permit)) = keys.submit(&key, (job, permit)) else {
            return;
        };
        drop(keys);
        let this = self.clone();
        self.tasks
            .spawn(async move { this.run_key(job, permit).await });
    }

    /// Waits until every submitted job ended; returns the tally.
    pub async fn finish(&self) -> Tally {
        self.tasks.close();
        self.tasks.wait().await;
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn run_key(&self, first: Job, permit: OwnedSemaphorePermit) {
        let (mut job, mut permit) = (first, permit);
        loop {
            let span = tracing::info_span!(
                "redrive",
                organization_id = %job.event.organization_id,
                event_id = %job.event.id,
                partition = job.at.0,
                offset = job.at.1,
            );
            let outcome = if self.behind_failed(&job.key) {
                debug!(event_id = %job.event.id, "an earlier event of its key failed again; left as it is");
                Outcome::NotAttempted
            } else {
                tracing::Instrument::instrument(self.redrive(&job), span).await
            };
            if self.markers && matches!(outcome, Outcome::FailedAgain(_)) {
                self.failed_keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(job.key.clone());
            }
            {
                let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
                tally.add(outcome);
                (self.on_done)(&tally);
            }
            drop(permit);
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            match keys.next(&job.key) {
                Some(next) => (job, permit) = next,
                None => return,
            }
        }
    }

    /// An earlier event of `key` failed again in this run (redrive only).
    fn behind_failed(&self, key: &str) -> bool {
        self.markers
            && self
                .failed_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(key)
    }

    async fn redrive(&self, job: &Job) -> Outcome {
        let Some(lane) = self.lanes.get(&job.record.organization_id) else {
            return self
                .write_back(job, None, DeadLetterReason::EndpointNotConfigured, &[])
                .await;
        };
        if !lane
            .endpoint
            .settings
            .accepts(job.event.event_type, &job.event.regulation)
        {
            debug!("not accepted by the endpoint's type or regulation filter; left as it is");
            return Outcome::NotAccepted;
        }
        // The budget counts from the first attempt actually sent, not from the wait for permits
        // (`Target::decide`).
        let mut attempts: Vec<Attempt> = Vec::new();
        loop {
            if self.stop.is_cancelled() {
                if attempts.is_empty() {
                    return Outcome::NotAttempted;
                }
                return self
                    .write_back(job, Some(lane), DeadLetterReason::Exhausted, &attempts)
                    .await;
            }
            let priority = if attempts.is_empty() {
                Priority::First
            } else {
                Priority::Retry
            };
            let attempt = self.attempt(lane, &job.event, priority).await;
            let retries_done = attempts.len();
            let mut decision = lane.decide(&attempt, retries_done, attempts.first().map(|a| a.at));
            if matches!(decision, Decision::RetryAfter(_)) && retries_done >= self.retries {
                decision = Decision::GiveUp(GiveUpReason::Exhausted);
            }
            debug!(outcome = %attempt.outcome.code(), retries_done, "attempt");
            attempts.push(attempt);
            match decision {
                Decision::Delivered if !self.markers => return Outcome::Delivered,
                Decision::Delivered => return self.resolve(job).await,
                Decision::RetryAfter(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.cancelled() => {}
                    }
                }
                Decision::GiveUp(reason) => {
                    return self
                        .write_back(job, Some(lane), reason.into(), &attempts)
                        .await;
                }
            }
        }
    }

    /// One attempt, with its permits in hand.
    async fn attempt(&self, lane: &Target, event: &WebhookEvent, priority: Priority) -> Attempt {
        let _permits = lane.permits(&self.global, priority).await;
        Box::pin(self.deliverer.attempt(&lane.endpoint, event)).await
    }

    /// Writes the resolution marker of a delivered event.
    async fn resolve(&self, job: &Job) -> Outcome {
        let marker = Marker::new(&job.event.id, &job.record.organization_id, job.at);
        let value = serde_json::to_vec(&marker).expect("a marker serializes");
        let written = Box::pin(self.producers.send(
            &self.dead_letter_topic,
            Some(job.record.organization_id.as_bytes()),
            &value,
            marker.headers(),
            &self.abort,
        ))
        .await;
        match written {
            Ok(()) => {
                debug!("delivered; resolved");
                Outcome::Delivered
            }
            Err(_) => {
                warn!("delivered, but interrupted before the resolution was written: a later redrive delivers it again");
                Outcome::DeliveredUnrecorded
            }
        }
    }

    /// Writes the event back: the earlier attempts, then the new ones.
    async fn write_back(
        &self,
        job: &Job,
        lane: Option<&Target>,
        reason: DeadLetterReason,
        attempts: &[Attempt],
    ) -> Outcome {
        let mut record = DeadLetter::new(
            &job.event,
            lane.map(|lane| &lane.endpoint.settings.url),
            reason,
            attempts,
            job.record.source.clone(),
        );
        record
            .attempts
            .splice(0..0, job.record.attempts.iter().cloned());
        match Box::pin(self.producers.dead_letter(&record, &job.event, &self.abort)).await {
            Ok(()) => {
                info!(
                    reason = reason.code(),
                    attempts = attempts.len(),
                    "failed again; written back to the dead-letter topic"
                );
                Outcome::FailedAgain(reason)
            }
            Err(_) => {
                warn!("interrupted before the write-back was acknowledged; left as it was");
                Outcome::NotAttempted
            }
        }
    }
}
