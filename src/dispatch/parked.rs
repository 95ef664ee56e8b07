//! Parked events read back from the retry topic. The first of its key waits for its due time
//! (with its headers only when due later than the reader's horizon), then gets one more
//! attempt, and is delivered, parked again, or dead-lettered with every attempt. One read
//! behind an earlier event of its key waits for its turn with nothing in memory (an index
//! entry): when the event before it is done, it is read again by offset and goes on the same
//! way. A key's followers are thus written and read once, however often its head is parked
//! again. Leaving (revoke, shutdown) before the attempt releases an event: not done, read
//! again by the partition's next owner, whose scan knows from the *done* records which events
//! are finished.

use std::sync::Arc;

use chrono::Utc;
use rdkafka::message::{Header, OwnedHeaders};
use tracing::{debug, warn, Instrument};

use super::{attempt, dead_letter, delivered, park, scheduled, Lane, Outcome, Shared};
use crate::deadletter::{AttemptRecord, DeadLetter};
use crate::delivery::{Decision, Priority};
use crate::park::record::DONE_HEADER;
use crate::park::{Next, ParkReason, Parked, ParkedHead, Read};
use crate::work::Ticket;

/// A parked record read back: skipped (obsolete), left waiting for its turn, or attempted at its
/// due time. `parked` is `None` for an event due later or behind its key: its body is read
/// again when it is due.
pub(super) fn unpark(
    shared: &Arc<Shared>,
    ticket: Ticket,
    key: Vec<u8>,
    head: ParkedHead,
    parked: Option<Box<Parked>>,
) {
    let partition = ticket.partition;
    let read = shared.cx.parking.read(
        partition,
        &key,
        head.source_offset,
        ticket.offset,
        head.parked_at_ms,
    );
    match read {
        Read::Obsolete => shared.cx.retry_progress.complete(&ticket),
        Read::Wait => {
            // Nothing to finish for it: a partition that leaves does not wait for it (the
            // retry reader lets go of those waiting when the partition began to leave).
            if ticket.leave.is_cancelled() {
                shared.cx.retry_progress.release(&ticket);
            }
        }
        Read::Attempt => {
            let shared = shared.clone();
            shared
                .cx
                .tasks
                .clone()
                .spawn(take_turn(shared, ticket, key, head, parked));
        }
    }
}

/// The waiting event whose turn came: its record read again, then on like the first of its key.
fn resume(shared: &Arc<Shared>, partition: i32, key: Vec<u8>, next: Next) {
    let ticket = shared
        .cx
        .retry_progress
        .lock()
        .ticket(partition, next.retry_offset);
    let Some(ticket) = ticket else {
        // Its partition is gone: the next owner reads it again.
        return;
    };
    let shared = shared.clone();
    shared.cx.tasks.clone().spawn(async move {
        let parked = match body(&shared, &ticket, None).await {
            Ok(parked) => parked,
            Err(Outcome::Released) => {
                shared.cx.retry_progress.release(&ticket);
                return;
            }
            Err(_) => return,
        };
        let head = parked.head();
        Box::pin(take_turn(shared, ticket, key, head, Some(Box::new(parked)))).await;
    });
}

/// A parked event whose turn it is: waits for its due time, gets one more attempt, and ends
/// done (delivered, dead-lettered, skipped), parked again, or released.
async fn take_turn(
    shared: Arc<Shared>,
    ticket: Ticket,
    key: Vec<u8>,
    head: ParkedHead,
    parked: Option<Box<Parked>>,
) {
    let partition = ticket.partition;
    let source_offset = head.source_offset;
    let metrics = &shared.cx.metrics;
    let span = tracing::info_span!(
        "retry",
        organization_id = %head.organization_id,
        partition,
        offset = source_offset,
    );
    let outcome = async {
        let lead = if parked.is_some() {
            std::time::Duration::ZERO
        } else {
            FETCH_LEAD
        };
        // Waiting is small (thousands of events wait); the rest is boxed.
        match wait_due(&ticket, head.due_at, lead).await {
            Waited::Leave => Outcome::Released,
            // The organization as it is at the due time: removed, it gets nothing more.
            Waited::Due => match shared.lane(&head.organization_id) {
                None => {
                    metrics
                        .events_skipped
                        .with_label_values(&["no_endpoint"])
                        .inc();
                    Outcome::Skipped
                }
                Some(lane) => {
                    metrics
                        .unparks
                        .with_label_values(&[metrics.label(&head.organization_id)])
                        .inc();
                    Box::pin(retry(&lane, &shared, &key, &ticket, &head, parked)).await
                }
            },
        }
    }
    .instrument(span)
    .await;
    match outcome {
        Outcome::Abandoned => return,
        Outcome::Released => {
            shared.cx.retry_progress.release(&ticket);
            return;
        }
        // Superseded by a later record of the event, which goes on.
        Outcome::Superseded | Outcome::Parked(_) => {}
        Outcome::Delivered | Outcome::DeadLettered(_) | Outcome::Skipped => {
            let next = shared.cx.parking.done(partition, &key, source_offset);
            // The next owner's scan must know: without this record, a restart would attempt
            // the event again.
            mark_done(&shared, partition, &key, source_offset, &ticket).await;
            if let Some(next) = next {
                resume(&shared, partition, key, next);
            }
        }
    }
    shared.cx.retry_progress.complete(&ticket);
}

/// How long before its due time the body of an event held without it is read again.
const FETCH_LEAD: std::time::Duration = std::time::Duration::from_secs(1);

/// How a parked event's wait ended.
enum Waited {
    /// Its due time (minus the lead) came.
    Due,
    /// Its partition leaves.
    Leave,
}

/// Waits for a parked event's due time less `lead`. Small on purpose: every event waiting for a
/// retry holds one.
async fn wait_due(
    ticket: &Ticket,
    due_at: chrono::DateTime<Utc>,
    lead: std::time::Duration,
) -> Waited {
    let wait = (due_at - Utc::now())
        .to_std()
        .unwrap_or_default()
        .saturating_sub(lead);
    tokio::select! {
        _ = tokio::time::sleep(wait) => Waited::Due,
        _ = ticket.leave.cancelled() => Waited::Leave,
    }
}

/// A parked event at its due time (its body read again if it waited without it): one more
/// attempt; parked again when it may be retried once more. Leaving (revoke, shutdown) before
/// the attempt releases it: the next owner reads its record again, and its scan knows which
/// events are done.
async fn retry(
    lane: &Lane,
    shared: &Shared,
    key: &[u8],
    ticket: &Ticket,
    head: &ParkedHead,
    parked: Option<Box<Parked>>,
) -> Outcome {
    let parking = &shared.cx.parking;
    let partition = ticket.partition;
    if !parking.is_current(partition, key, head.source_offset, ticket.offset) {
        return Outcome::Superseded;
    }
    let mut parked = match body(shared, ticket, parked).await {
        Ok(parked) => parked,
        Err(outcome) => return outcome,
    };
    let until_due = (head.due_at - Utc::now()).to_std().unwrap_or_default();
    tokio::select! {
        _ = tokio::time::sleep(until_due) => {}
        _ = ticket.leave.cancelled() => return Outcome::Released,
    }
    let event = parked.webhook_event();
    if lane.removed.load(std::sync::atomic::Ordering::SeqCst) {
        debug!("the organization was removed");
        return Outcome::Skipped;
    }
    let current = lane.current();
    if !current
        .target
        .endpoint
        .settings
        .accepts(event.event_type, &event.regulation)
    {
        shared
            .cx
            .metrics
            .events_skipped
            .with_label_values(&["filtered"])
            .inc();
        return Outcome::Skipped;
    }
    let permits = tokio::select! {
        permits = current.target.permits(&shared.global, Priority::Retry) => permits.1,
        _ = ticket.leave.cancelled() => return Outcome::Released,
    };
    let attempt = tokio::select! {
        attempt = attempt(lane, &current, shared, &event, permits) => attempt,
        _ = ticket.cancel.cancelled() => return Outcome::Abandoned,
    };
    let retries_done = parked.attempts.len();
    let decision = current
        .target
        .decide(&attempt, retries_done, parked.first_attempt_at);
    parked.first_attempt_at.get_or_insert(attempt.at);
    debug!(outcome = %attempt.outcome.code(), retries_done, "attempt");
    parked.attempts.push(AttemptRecord::from(&attempt));
    match decision {
        Decision::Delivered => {
            delivered(&current, shared, &event, parked.attempts.len());
            Outcome::Delivered
        }
        Decision::RetryAfter(wait) => {
            scheduled(shared, &event);
            parked.due_at = Utc::now() + wait;
            park(shared, key, parked, ParkReason::Retry, ticket).await
        }
        Decision::GiveUp(reason) => {
            let record = DeadLetter::with_records(
                &event,
                Some(&current.target.endpoint.settings.url),
                reason.into(),
                std::mem::take(&mut parked.attempts),
                parked.source.clone(),
            );
            dead_letter(shared, &event, record, ticket).await
        }
    }
}

/// The parked record: as read, or read again by offset, tried until it is read or the
/// partition leaves (`Err(Released)`: the next owner reads it again) or is gone
/// (`Err(Abandoned)`), so that a broker hiccup never leaves a key stuck behind it.
async fn body(
    shared: &Shared,
    ticket: &Ticket,
    parked: Option<Box<Parked>>,
) -> Result<Parked, Outcome> {
    if let Some(parked) = parked {
        return Ok(*parked);
    }
    let mut tries = 0u32;
    loop {
        if ticket.cancel.is_cancelled() {
            return Err(Outcome::Abandoned);
        }
        if let Some(parked) = shared
            .cx
            .fetcher
            .fetch(ticket.partition, ticket.offset)
            .await
        {
            return Ok(parked);
        }
        tries += 1;
        if tries % 10 == 3 {
            warn!(
                partition = ticket.partition,
                retry_offset = ticket.offset,
                tries,
                "cannot read the parked event again yet; trying on"
            );
        }
        let pause = std::time::Duration::from_millis(500 * u64::from(tries.min(10)));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = ticket.leave.cancelled() => return Err(Outcome::Released),
        }
    }
}

/// Writes the *done* record of a parked event (acknowledged, or given up when cancelled).
async fn mark_done(
    shared: &Shared,
    partition: i32,
    key: &[u8],
    source_offset: i64,
    ticket: &Ticket,
) {
    let offset = source_offset.to_string();
    let headers = OwnedHeaders::new().insert(Header {
        key: DONE_HEADER,
        value: Some(offset.as_str()),
    });
    let written = Box::pin(
        shared
            .cx
            .producers
            .park(partition, key, &[], headers, &ticket.cancel),
    )
    .await;
    if let Err(error) = written {
        debug!(%error, "done record not written; a restart may attempt the event once more");
    }
}
