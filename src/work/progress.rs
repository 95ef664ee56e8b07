//! The offset tracker shared between the consumer thread and the delivery tasks.
//!
//! Guarantees:
//! - Whoever locks the tracker sees every completion and release made before (by any thread):
//!   [`Progress::lock`] applies them first.
//! - A wait ends as soon as its condition holds after a completion (a revoke's or a shutdown's
//!   drain), or after each batch of completions for a batched wait (back-pressure); never
//!   later than its deadline. No polling.
//!
//! Cost: the delivery tasks never take the tracker's lock. A completion is a message on a
//! lock-free channel that the consumer thread applies when it next looks, and it wakes the
//! consumer thread only when that waits for it. (Completing under the tracker's lock, once per
//! record, made the workers and the consumer thread contend for it; waking the consumer at
//! every completion while back-pressure held it made it take one record per wake-up. Together
//! about two thirds of the service's `futex` calls.)

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::offsets::{OffsetTracker, Ticket, TicketId};

/// A settled ticket, on its way to the tracker.
#[derive(Debug, Clone, Copy)]
enum Settled {
    Complete(TicketId),
    Release(TicketId),
}

#[derive(Debug)]
struct Inner {
    tracker: OffsetTracker,
    settled: Receiver<Settled>,
}

impl Inner {
    /// Applies what was settled since the last look.
    fn apply(&mut self) {
        while let Ok(settled) = self.settled.try_recv() {
            self.settle(settled);
        }
    }

    /// Stale tickets (an earlier assignment of the partition) count for nothing.
    fn settle(&mut self, settled: Settled) {
        match settled {
            Settled::Complete(id) => self.tracker.complete(id),
            Settled::Release(id) => self.tracker.release(id),
        };
    }
}

#[derive(Debug)]
pub struct Progress {
    inner: Mutex<Inner>,
    settle: Sender<Settled>,
    /// Settles still to come before the waiter wants to look again; 0 when nobody waits.
    need: AtomicUsize,
    /// The thread that waits (it holds `inner`).
    waiter: Mutex<Option<Thread>>,
}

/// The tracker, locked, with every earlier completion applied.
pub struct Tracker<'a>(MutexGuard<'a, Inner>);

impl Deref for Tracker<'_> {
    type Target = OffsetTracker;

    fn deref(&self) -> &OffsetTracker {
        &self.0.tracker
    }
}

impl DerefMut for Tracker<'_> {
    fn deref_mut(&mut self) -> &mut OffsetTracker {
        &mut self.0.tracker
    }
}

impl Progress {
    pub fn new(abandon: CancellationToken) -> Self {
        let (settle, settled) = mpsc::channel();
        Progress {
            inner: Mutex::new(Inner {
                tracker: OffsetTracker::new(abandon),
                settled,
            }),
            settle,
            need: AtomicUsize::new(0),
            waiter: Mutex::new(None),
        }
    }

    /// The tracker, for short reads and updates (never held across an await).
    pub fn lock(&self) -> Tracker<'_> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.apply();
        Tracker(inner)
    }

    /// Marks the record done and wakes whoever waits on progress.
    pub fn complete(&self, ticket: &Ticket) {
        self.send(Settled::Complete(ticket.id()));
    }

    /// The record's work let go of it while its partition leaves (see
    /// [`OffsetTracker::release`]); wakes whoever waits on progress.
    pub fn release(&self, ticket: &Ticket) {
        self.send(Settled::Release(ticket.id()));
    }

    fn send(&self, settled: Settled) {
        // The receiver lives as long as `self`: sending cannot fail.
        let _ = self.settle.send(settled);
        // Either this sees the waiter's `need`, or the waiter sees the message (both fence).
        fence(Ordering::SeqCst);
        if self.need.load(Ordering::Relaxed) == 0 {
            return;
        }
        let counted = self
            .need
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if counted == Ok(1) {
            let waiter = self.waiter.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(thread) = waiter.as_ref() {
                thread.unpark();
            }
        }
    }

    /// Blocks until `done` holds or `timeout` passes; returns whether it holds. Looks again
    /// after every completion.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&OffsetTracker) -> bool) -> bool {
        self.wait_batched(timeout, 1, done)
    }

    /// [`Progress::wait_until`], looking again only after `batch` completions (or releases),
    /// for a waiter that has no use for each one alone. Only one thread waits at a time (the
    /// consumer thread): the tracker stays locked while it does.
    pub fn wait_batched(
        &self,
        timeout: Duration,
        batch: usize,
        done: impl Fn(&OffsetTracker) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut tracker = self.lock();
        *self.waiter.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread::current());
        let held = loop {
            if done(&tracker) {
                break true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.need.store(batch.max(1), Ordering::Relaxed);
            fence(Ordering::SeqCst);
            // What was sent before `need` was seen is here now.
            tracker.0.apply();
            if done(&tracker) {
                break true;
            }
            // An unpark that came before this returns at once (a token), so none is lost.
            thread::park_timeout(left);
            tracker.0.apply();
        };
        self.need.store(0, Ordering::Relaxed);
        held
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn progress(records: i64) -> (Arc<Progress>, Vec<Ticket>) {
        let progress = Arc::new(Progress::new(CancellationToken::new()));
        let tickets = {
            let mut tracker = progress.lock();
            tracker.assign([0]);
            (0..records).map(|o| tracker.take(0, o).unwrap()).collect()
        };
        (progress, tickets)
    }

    /// Completes every ticket, one after the other, from a thread of its own.
    fn complete_elsewhere(
        progress: &Arc<Progress>,
        tickets: Vec<Ticket>,
    ) -> thread::JoinHandle<()> {
        let progress = progress.clone();
        thread::spawn(move || {
            for ticket in &tickets {
                progress.complete(ticket);
            }
        })
    }

    #[test]
    fn a_completion_is_seen_by_the_next_lock() {
        let (progress, tickets) = progress(3);
        progress.complete(&tickets[0]);
        progress.release(&tickets[2]);
        let tracker = progress.lock();
        assert_eq!(tracker.pending(), 2);
        assert_eq!(tracker.busy(), 1);
        assert_eq!(tracker.watermark(0), Some(1));
    }

    #[test]
    fn a_wait_ends_at_the_completion_from_another_thread() {
        // Many rounds, each racing the completer against the waiter's going to sleep.
        for _ in 0..500 {
            let (progress, tickets) = progress(2);
            let completer = complete_elsewhere(&progress, tickets);
            let start = Instant::now();
            let held = progress.wait_until(Duration::from_secs(10), |t| t.busy() == 0);
            completer.join().unwrap();
            assert!(held);
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "a wake-up was missed: the wait ran to its deadline"
            );
        }
    }

    #[test]
    fn a_batched_wait_ends_once_its_condition_holds() {
        let (progress, tickets) = progress(100);
        let completer = complete_elsewhere(&progress, tickets);
        let start = Instant::now();
        let held = progress.wait_batched(Duration::from_secs(10), 16, |t| t.pending() <= 20);
        assert!(held);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a wake-up was missed: the wait ran to its deadline"
        );
        completer.join().unwrap();
        assert_eq!(progress.lock().pending(), 0);
    }

    #[test]
    fn a_wait_that_nothing_satisfies_ends_at_its_deadline() {
        let (progress, tickets) = progress(2);
        progress.complete(&tickets[0]);
        let start = Instant::now();
        let held = progress.wait_batched(Duration::from_millis(50), 4, |t| t.pending() == 0);
        assert!(!held);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
