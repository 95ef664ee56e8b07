//! Offset tracking: which records of each assigned partition are done, and the watermark
//! below which everything is.
//!
//! Guarantee: [`OffsetTracker::watermark`] never passes a record that is not done. A record is
//! done when [`OffsetTracker::complete`] was called with its [`Ticket`]'s id: the dispatcher calls it
//! only once the webhook was delivered, or its dead-letter write acknowledged, or the record
//! yielded nothing, or its rejected-topic write was acknowledged. Tickets from an earlier
//! assignment of a partition (before a revoke) are ignored, so a late completion can never move
//! a watermark it does not belong to.
//!
//! Memory: one entry per record that is taken and not yet done; done records cost nothing.

use std::collections::BTreeSet;

use crate::FastHashMap;

use tokio_util::sync::CancellationToken;

/// A record taken from a partition, owed a completion.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub partition: i32,
    pub offset: i64,
    epoch: u64,
    /// Cancelled when the partition is revoked or the process shuts down: work for this record
    /// stops without completing (it will be consumed again by whoever owns the partition next).
    pub cancel: CancellationToken,
    /// Cancelled first, when the partition is about to go (revoke, shutdown): what waits is
    /// parked now; attempts in flight finish. Cancelled with `cancel` too.
    pub leave: CancellationToken,
}

impl Ticket {
    /// What the tracker needs to settle this ticket, without its tokens: cheap to send to the
    /// consumer thread.
    pub fn id(&self) -> TicketId {
        TicketId {
            partition: self.partition,
            offset: self.offset,
            epoch: self.epoch,
        }
    }
}

/// A ticket as its tracker knows it: partition, offset and the assignment it was taken in.
#[derive(Debug, Clone, Copy)]
pub struct TicketId {
    partition: i32,
    offset: i64,
    epoch: u64,
}

#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    pending: BTreeSet<i64>,
    /// Pending records whose work let go of them when the partition began to leave (a parked
    /// event waiting for its due time): still not done, so the watermark stays below them,
    /// but nothing waits for them either.
    released: BTreeSet<i64>,
    /// One past the highest offset taken; the watermark when nothing is pending.
    next: Option<i64>,
    /// The last watermark the broker confirmed as committed.
    committed: Option<i64>,
    cancel: CancellationToken,
    leave: CancellationToken,
}

/// Per-partition progress of one consumer, for one topic.
#[derive(Debug)]
pub struct OffsetTracker {
    partitions: FastHashMap<i32, PartitionState>,
    next_epoch: u64,
    shutdown: CancellationToken,
}

impl OffsetTracker {
    /// `shutdown` is the parent of every partition's cancellation token.
    pub fn new(shutdown: CancellationToken) -> Self {
        OffsetTracker {
            partitions: FastHashMap::default(),
            next_epoch: 1,
            shutdown,
        }
    }

    /// Partitions newly assigned: start tracking them afresh.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for partition in partitions {
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let cancel = self.shutdown.child_token();
            let leave = cancel.child_token();
            if let Some(old) = self.partitions.insert(
                partition,
                PartitionState {
                    epoch,
                    pending: BTreeSet::new(),
                    released: BTreeSet::new(),
                    next: None,
                    committed: None,
                    cancel,
                    leave,
                },
            ) {
                old.cancel.cancel();
            }
        }
    }

    /// Partitions revoked or lost: cancel their outstanding work and forget them.
    pub fn revoke(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for partition in partitions {
            if let Some(state) = self.partitions.remove(&partition) {
                state.cancel.cancel();
            }
        }
    }

    /// Partitions about to go (revoke, or every partition at shutdown): their work parks what
    /// waits and finishes what is in flight; nothing is cancelled yet.
    pub fn leave(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for partition in partitions {
            if let Some(state) = self.partitions.get(&partition) {
                state.leave.cancel();
            }
        }
    }

    pub fn is_assigned(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// A record was taken from Kafka. `None` when the partition is not assigned (a message
    /// that raced a revoke): it must not be processed.
    pub fn take(&mut self, partition: i32, offset: i64) -> Option<Ticket> {
        let state = self.partitions.get_mut(&partition)?;
        state.pending.insert(offset);
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(Ticket {
            partition,
            offset,
            epoch: state.epoch,
            cancel: state.cancel.clone(),
            leave: state.leave.clone(),
        })
    }

    /// The ticket of a record taken and not done in the current assignment of its partition
    /// (for work that let go of it and takes it up again); `None` when it is not pending.
    pub fn ticket(&self, partition: i32, offset: i64) -> Option<Ticket> {
        let state = self.partitions.get(&partition)?;
        state.pending.contains(&offset).then(|| Ticket {
            partition,
            offset,
            epoch: state.epoch,
            cancel: state.cancel.clone(),
            leave: state.leave.clone(),
        })
    }

    /// The record is done. Returns whether it counted (false for a stale ticket).
    pub fn complete(&mut self, ticket: TicketId) -> bool {
        match self.partitions.get_mut(&ticket.partition) {
            Some(state) if state.epoch == ticket.epoch => {
                state.released.remove(&ticket.offset);
                state.pending.remove(&ticket.offset)
            }
            _ => false,
        }
    }

    /// The record's work let go of it while its partition leaves: not done (the watermark
    /// stays below it, the next owner reads it again), but no longer waited for. Returns
    /// whether it counted.
    pub fn release(&mut self, ticket: TicketId) -> bool {
        match self.partitions.get_mut(&ticket.partition) {
            Some(state)
                if state.epoch == ticket.epoch && state.pending.contains(&ticket.offset) =>
            {
                state.released.insert(ticket.offset)
            }
            _ => false,
        }
    }

    /// Records taken, not done and not released, in one partition: what a revoke waits for.
    pub fn busy_in(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |s| s.pending.len() - s.released.len())
    }

    /// Records taken, not done and not released, across all partitions.
    pub fn busy(&self) -> usize {
        self.partitions
            .values()
            .map(|s| s.pending.len() - s.released.len())
            .sum()
    }

    /// The next offset to consume such that everything before it is done; `None` before the
    /// first record.
    pub fn watermark(&self, partition: i32) -> Option<i64> {
        let state = self.partitions.get(&partition)?;
        state.pending.first().copied().or(state.next)
    }

    /// Watermarks that differ from the last committed one, to commit: `(partition, offset)`.
    /// Nothing is marked here: a watermark is reported again on every call until
    /// [`committed`](Self::committed) records it, so a failed commit is retried on the next tick
    /// even when the partition is quiet.
    pub fn advanced(&self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(&partition, state)| {
                let w = state.pending.first().copied().or(state.next)?;
                (state.committed != Some(w)).then_some((partition, w))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The broker confirmed the commit of `offset` on `partition` (ignored if the partition was
    /// revoked meanwhile).
    pub fn committed(&mut self, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.committed = Some(offset);
        }
    }

    /// The last watermark the broker confirmed as committed for `partition`.
    pub fn confirmed(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.committed
    }

    /// Records taken and not done, in one partition.
    pub fn pending_in(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |s| s.pending.len())
    }

    /// Records taken and not done, across all partitions.
    pub fn pending(&self) -> usize {
        self.partitions.values().map(|s| s.pending.len()).sum()
    }

    pub fn assigned(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self.partitions.keys().copied().collect();
        partitions.sort_unstable();
        partitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> OffsetTracker {
        let mut t = OffsetTracker::new(CancellationToken::new());
        t.assign([0, 1]);
        t
    }

    #[test]
    fn watermark_stops_at_the_first_record_not_done() {
        let mut t = tracker();
        let tickets: Vec<Ticket> = (10..15).map(|o| t.take(0, o).unwrap()).collect();
        assert_eq!(t.watermark(0), Some(10));
        t.complete(tickets[1].id());
        t.complete(tickets[2].id());
        assert_eq!(t.watermark(0), Some(10), "out-of-order completions wait");
        t.complete(tickets[0].id());
        assert_eq!(t.watermark(0), Some(13));
        t.complete(tickets[4].id());
        t.complete(tickets[3].id());
        assert_eq!(t.watermark(0), Some(15), "all done: one past the last");
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn advanced_reports_each_move_until_committed() {
        let mut t = tracker();
        let a = t.take(1, 0).unwrap();
        assert_eq!(t.advanced(), vec![(1, 0)]);
        t.committed(1, 0);
        assert_eq!(t.advanced(), vec![]);
        t.complete(a.id());
        assert_eq!(t.advanced(), vec![(1, 1)]);
    }

    /// Issue 7 point 7: the commit of a quiet partition fails once; the next tick must try the
    /// same watermark again, although nothing new was taken or completed.
    #[test]
    fn a_failed_commit_is_retried_on_the_next_tick_of_a_quiet_partition() {
        let mut t = tracker();
        let a = t.take(0, 41).unwrap();
        t.complete(a.id());
        let first_tick = t.advanced();
        assert_eq!(first_tick, vec![(0, 42)]);
        // The commit failed: nothing is recorded; the partition stays quiet.
        assert_eq!(t.advanced(), vec![(0, 42)], "retried on the next tick");
        t.committed(0, 42);
        assert_eq!(t.advanced(), vec![], "done once committed");
        // A confirmation for a revoked partition changes nothing.
        t.revoke([0]);
        t.committed(0, 50);
        assert_eq!(t.watermark(0), None);
    }

    #[test]
    fn stale_tickets_are_ignored_after_revoke_and_reassign() {
        let mut t = tracker();
        let old = t.take(0, 5).unwrap();
        t.revoke([0]);
        assert!(old.cancel.is_cancelled(), "revoked work is told to stop");
        assert!(
            t.take(0, 6).is_none(),
            "a message racing the revoke is not taken"
        );
        t.assign([0]);
        let new = t.take(0, 5).unwrap();
        assert!(
            !t.complete(old.id()),
            "a completion from the old assignment does not count"
        );
        assert_eq!(t.watermark(0), Some(5));
        assert!(t.complete(new.id()));
        assert_eq!(t.watermark(0), Some(6));
    }

    #[test]
    fn shutdown_cancels_every_partition() {
        let shutdown = CancellationToken::new();
        let mut t = OffsetTracker::new(shutdown.clone());
        t.assign([3]);
        let ticket = t.take(3, 0).unwrap();
        shutdown.cancel();
        assert!(ticket.cancel.is_cancelled());
        assert!(ticket.leave.is_cancelled());
    }

    #[test]
    fn a_released_record_holds_the_watermark_but_is_not_waited_for() {
        let mut t = tracker();
        let a = t.take(0, 10).unwrap();
        let b = t.take(0, 11).unwrap();
        assert!(t.release(a.id()));
        assert_eq!(t.busy_in(0), 1, "only b is waited for");
        assert_eq!(t.pending_in(0), 2);
        t.complete(b.id());
        assert_eq!(t.busy(), 0);
        assert!(t.ticket(0, 10).is_some(), "a pending record's ticket");
        assert!(t.ticket(0, 99).is_none(), "none for a record not taken");
        assert_eq!(
            t.watermark(0),
            Some(10),
            "a is not done: read again by the next owner"
        );
        assert!(t.complete(a.id()));
        assert_eq!(t.watermark(0), Some(12));
    }

    #[test]
    fn leaving_comes_before_cancelling() {
        let mut t = tracker();
        let ticket = t.take(0, 7).unwrap();
        let other = t.take(1, 7).unwrap();
        t.leave([0]);
        assert!(ticket.leave.is_cancelled(), "told to park what waits");
        assert!(!ticket.cancel.is_cancelled(), "in-flight work goes on");
        assert!(!other.leave.is_cancelled(), "other partitions stay");
        assert!(
            t.complete(ticket.id()),
            "a completion after leave still counts"
        );
    }
}
