//! One organization's delivery target: its endpoint, its retry policy and its concurrency cap,
//! built once from the configuration and shared by the pipeline's lanes and by `redrive`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{Attempt, Decision, Deliverer, Endpoint, Permit, Permits, Priority, RetryPolicy};
use crate::config::OrganizationSettings;

pub struct Target {
    pub endpoint: Endpoint,
    pub policy: RetryPolicy,
    /// Permits for requests in flight to this endpoint (`concurrency`), retries first.
    pub concurrency: Permits,
}

impl Target {
    pub fn new(deliverer: &Deliverer, organization_id: &str, org: &OrganizationSettings) -> Self {
        Target {
            endpoint: deliverer.endpoint(organization_id, Arc::new(org.clone())),
            policy: RetryPolicy::new(&org.retry),
            concurrency: Permits::new(org.concurrency),
        }
    }
}

impl Target {
    /// Waits for this endpoint's permit, then for one of the process-wide `global` ones (always
    /// in this order, so waiters never hold one kind while blocking the other's holders), and
    /// returns both with the moment the attempt may start: the budget clock of a first attempt
    /// starts here, not when it began to wait.
    pub async fn permits(&self, global: &Permits, priority: Priority) -> (Instant, [Permit; 2]) {
        let endpoint = self.concurrency.acquire(priority).await;
        let global = global.acquire(priority).await;
        (Instant::now(), [endpoint, global])
    }

    /// What follows `attempt` (made with its permits in hand) for an event that had
    /// `retries_done` retries before it, its first attempt started at `first_at` (`None`: this
    /// was the first). The one "attempt → decide" step of `run` (first attempts and parked
    /// events) and `redrive`: the budget counts from the first attempt's start, wherever and
    /// whenever it was made.
    pub fn decide(
        &self,
        attempt: &Attempt,
        retries_done: usize,
        first_at: Option<DateTime<Utc>>,
    ) -> Decision {
        let first = first_at.unwrap_or(attempt.at);
        let since_first = (Utc::now() - first).to_std().unwrap_or_default();
        self.policy.decide(
            &attempt.outcome,
            retries_done,
            since_first,
            rand::random::<f64>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::delivery::testkit::{delivery_settings, organization};

    /// Issue 8: an attempt's clock starts when its permits are in hand. Behind a hanging
    /// endpoint, the wait for a permit is not spent from the event's retry budget.
    #[tokio::test(start_paused = true)]
    async fn the_attempt_clock_starts_when_the_permits_are_in_hand() {
        let deliverer = Deliverer::new(&delivery_settings(Duration::from_secs(30))).unwrap();
        let mut org = organization("https://example.com/hook".parse().unwrap());
        org.concurrency = 1;
        let target = std::sync::Arc::new(Target::new(&deliverer, "acme", &org));
        let global = Permits::new(10);
        let busy = target.permits(&global, Priority::First).await;
        let waiting = {
            let (target, global) = (target.clone(), global.clone());
            tokio::spawn(async move { target.permits(&global, Priority::First).await.0 })
        };
        tokio::time::sleep(Duration::from_secs(600)).await;
        let released = Instant::now();
        drop(busy);
        let started = waiting.await.unwrap();
        assert!(
            started >= released,
            "the 10 minutes of waiting are not counted"
        );
        assert_eq!(global.available(), 10, "both permits are given back");
    }

    /// The budget counts from the first attempt's start, carried by the event (a parked record,
    /// a dead letter), not from this process's clock.
    #[test]
    fn the_budget_counts_from_the_first_attempt_wherever_it_was_made() {
        use crate::delivery::{AttemptOutcome, GiveUpReason};
        let deliverer = Deliverer::new(&delivery_settings(Duration::from_secs(30))).unwrap();
        let target = Target::new(
            &deliverer,
            "acme",
            &organization("https://example.com/hook".parse().unwrap()),
        );
        let attempt = Attempt {
            at: Utc::now(),
            duration: Duration::from_millis(5),
            outcome: AttemptOutcome::Status {
                code: 503,
                retry_after: None,
            },
            reauthorized: false,
        };
        assert!(matches!(
            target.decide(&attempt, 0, None),
            Decision::RetryAfter(_)
        ));
        let long_ago = Utc::now() - chrono::Duration::minutes(10);
        assert_eq!(
            target.decide(&attempt, 1, Some(long_ago)),
            Decision::GiveUp(GiveUpReason::Exhausted)
        );
    }
}
