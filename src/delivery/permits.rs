//! Request permits where due retries go first.
//!
//! Guarantee: a released permit goes to the longest-waiting *retry* before any first attempt,
//! and among equals in arrival order. Behind a slow endpoint (or a full `max_in_flight_requests`)
//! first attempts queue up by the thousand; a retry that falls due then takes the next free
//! permit instead of waiting behind all of them, so its budget is not spent in a queue.
//!
//! Cancellation-safe: a waiter dropped before it is served leaves the queue, and a permit handed
//! to a waiter that is gone is passed on at once. A permit is given back when dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Who asks for a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A retry (an event that has been attempted at least once): served first.
    Retry,
    /// An event's first attempt.
    First,
}

/// A counting semaphore with two FIFO queues, retries before first attempts.
#[derive(Clone)]
pub struct Permits(Arc<Mutex<State>>);

struct State {
    available: usize,
    retries: VecDeque<oneshot::Sender<Permit>>,
    firsts: VecDeque<oneshot::Sender<Permit>>,
}

/// One permit, given back (to the next waiter, retries first) when dropped.
pub struct Permit(Option<Permits>);

impl Permits {
    pub fn new(permits: usize) -> Self {
        Permits(Arc::new(Mutex::new(State {
            available: permits,
            retries: VecDeque::new(),
            firsts: VecDeque::new(),
        })))
    }

    /// Waits for a permit; retries are served before first attempts.
    pub async fn acquire(&self, priority: Priority) -> Permit {
        let waiting = {
            let mut state = self.lock();
            let nobody_ahead = state.retries.is_empty()
                && (priority == Priority::Retry || state.firsts.is_empty());
            if state.available > 0 && nobody_ahead {
                state.available -= 1;
                return Permit(Some(self.clone()));
            }
            let (tx, rx) = oneshot::channel();
            match priority {
                Priority::Retry => state.retries.push_back(tx),
                Priority::First => state.firsts.push_back(tx),
            }
            rx
        };
        // The sender is only dropped after a permit was sent or by `release` skipping a closed
        // waiter, which this one is not while it is being awaited.
        waiting.await.expect("a queued waiter is served")
    }

    /// Permits free right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.lock().available
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self) {
        let mut state = self.lock();
        loop {
            let next = match state.retries.pop_front() {
                Some(tx) => tx,
                None => match state.firsts.pop_front() {
                    Some(tx) => tx,
                    None => {
                        state.available += 1;
                        return;
                    }
                },
            };
            if next.is_closed() {
                continue;
            }
            // Sent under the lock, so no waiter can overtake. A receiver gone since the check
            // hands the permit back here (defused: its drop would take this lock again); one
            // gone after the send gives it back through its drop, outside this lock.
            match next.send(Permit(Some(self.clone()))) {
                Ok(()) => return,
                Err(mut unsent) => unsent.0 = None,
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(permits) = self.0.take() {
            permits.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The permit, if the waiter is served within a moment (of paused time).
    async fn served(waiter: &mut tokio::task::JoinHandle<Permit>) -> Option<Permit> {
        tokio::time::timeout(Duration::from_millis(50), waiter)
            .await
            .ok()
            .map(|joined| joined.expect("the waiter does not panic"))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_overtake_waiting_first_attempts() {
        let permits = Permits::new(1);
        let held = permits.acquire(Priority::First).await;
        let p = permits.clone();
        let mut first = tokio::spawn(async move { p.acquire(Priority::First).await });
        tokio::task::yield_now().await;
        let p = permits.clone();
        let mut retry = tokio::spawn(async move { p.acquire(Priority::Retry).await });
        tokio::task::yield_now().await;
        assert!(served(&mut retry).await.is_none(), "no permit free yet");
        drop(held);
        let retried = served(&mut retry).await;
        assert!(retried.is_some(), "the retry gets the released permit");
        assert!(
            served(&mut first).await.is_none(),
            "the first attempt still waits"
        );
        drop(retried);
        assert!(served(&mut first).await.is_some(), "then the first attempt");
        assert_eq!(permits.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn first_attempts_wait_behind_queued_ones_and_permits_come_back() {
        let permits = Permits::new(2);
        let a = permits.acquire(Priority::First).await;
        let b = permits.acquire(Priority::Retry).await;
        assert_eq!(permits.available(), 0);
        drop((a, b));
        assert_eq!(permits.available(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_passes_its_turn_on() {
        let permits = Permits::new(1);
        let held = permits.acquire(Priority::First).await;
        let p = permits.clone();
        let gone = tokio::spawn(async move { p.acquire(Priority::Retry).await });
        tokio::task::yield_now().await;
        let p = permits.clone();
        let mut next = tokio::spawn(async move { p.acquire(Priority::First).await });
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        let permit = served(&mut next).await;
        assert!(permit.is_some(), "the next waiter is served");
        drop(permit);
        assert_eq!(permits.available(), 1, "no permit lost");
    }
}
