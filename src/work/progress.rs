//! The offset tracker shared between the consumer thread and the delivery tasks.
//!
//! Guarantee: completions from any task are seen by the consumer thread's waits at once (a
//! condition variable, no polling), so a revoke or a shutdown drain ends as soon as its work is
//! done, and never later than its deadline. A completion wakes only when someone waits: a
//! notification costs a system call (a futex wake) even when nobody waits, and completions
//! happen once per record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::offsets::{OffsetTracker, Ticket};

#[derive(Debug)]
pub struct Progress {
    tracker: Mutex<OffsetTracker>,
    changed: Condvar,
    /// Threads in [`Progress::wait_until`]; changed and read only with `tracker` held.
    waiters: AtomicUsize,
}

impl Progress {
    pub fn new(abandon: CancellationToken) -> Self {
        Progress {
            tracker: Mutex::new(OffsetTracker::new(abandon)),
            changed: Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// The tracker, for short reads and updates (never held across an await).
    pub fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the record done and wakes whoever waits on progress.
    pub fn complete(&self, ticket: &Ticket) {
        let mut tracker = self.lock();
        if tracker.complete(ticket) {
            self.notify(tracker);
        }
    }

    /// The record's work let go of it while its partition leaves (see
    /// [`OffsetTracker::release`]); wakes whoever waits on progress.
    pub fn release(&self, ticket: &Ticket) {
        let mut tracker = self.lock();
        if tracker.release(ticket) {
            self.notify(tracker);
        }
    }

    /// Wakes the waiters, if any. `tracker` is held while they are counted: a waiter counts
    /// itself before it releases the lock to wait, so it is either counted here or sees the
    /// change before it waits.
    fn notify(&self, tracker: MutexGuard<'_, OffsetTracker>) {
        let waiting = self.waiters.load(Ordering::Relaxed) > 0;
        drop(tracker);
        if waiting {
            self.changed.notify_all();
        }
    }

    /// Blocks until `done` holds or `timeout` passes; returns whether it holds.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&OffsetTracker) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut tracker = self.lock();
        loop {
            if done(&tracker) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.waiters.fetch_add(1, Ordering::Relaxed);
            tracker = self
                .changed
                .wait_timeout(tracker, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
            self.waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
