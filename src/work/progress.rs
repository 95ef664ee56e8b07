//! The offset tracker shared between the consumer thread and the delivery tasks.
//!
//! Guarantee: completions from any task are seen by the consumer thread's waits at once (a
//! condition variable, no polling), so a revoke or a shutdown drain ends as soon as its work is
//! done, and never later than its deadline.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::offsets::{OffsetTracker, Ticket};

#[derive(Debug)]
pub struct Progress {
    tracker: Mutex<OffsetTracker>,
    changed: Condvar,
}

impl Progress {
    pub fn new(abandon: CancellationToken) -> Self {
        Progress {
            tracker: Mutex::new(OffsetTracker::new(abandon)),
            changed: Condvar::new(),
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
        if self.lock().complete(ticket) {
            self.changed.notify_all();
        }
    }

    /// The record's work let go of it while its partition leaves (see
    /// [`OffsetTracker::release`]); wakes whoever waits on progress.
    pub fn release(&self, ticket: &Ticket) {
        if self.lock().release(ticket) {
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
            tracker = self
                .changed
                .wait_timeout(tracker, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}
