//! The retry policy: a pure function from an attempt's outcome (and how far along the delivery
//! is) to a [`Decision`]. No clock, no randomness, no I/O: the caller passes the elapsed time and
//! the jitter, and does the waiting.
//!
//! Guarantees (SPEC §4):
//! - a 2xx is delivered; a 3xx, or a 4xx other than 408/425/429 (or any non-standard status),
//!   gives up at once, as does a destination refused by the address guard;
//! - everything else is retried on the schedule, whose entries are offsets from the first
//!   attempt's start, so slow attempts do not push later retries out;
//! - retries stay spaced: after a failed attempt, the next retry waits at least half the
//!   schedule's own gap before it (half the first offset for the first retry), even when its
//!   scheduled time has passed. So when a long `Retry-After` (or slow attempts) pushed a retry
//!   past the times of the next ones, those follow spaced out instead of back to back against
//!   an endpoint that asked us to slow down;
//! - jitter, spacing and `Retry-After` only ever move a retry later, and never past the budget:
//!   no retry is scheduled later than `budget` after the first attempt, and once the budget is
//!   spent the delivery is exhausted.

use std::time::Duration;

use crate::config::RetrySettings;

use super::attempt::{AttemptError, AttemptOutcome};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Offsets of the retries from the first attempt's start, increasing.
    schedule: Vec<Duration>,
    max_jitter: Duration,
    budget: Duration,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    /// Attempt again after waiting this long from now (possibly zero).
    RetryAfter(Duration),
    GiveUp(GiveUpReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUpReason {
    /// Every scheduled retry was used, or the budget is spent.
    Exhausted,
    /// A status that retrying cannot fix (3xx, most 4xx).
    PermanentStatus,
    /// The address guard refused the destination; only a configuration change can fix it.
    AddressRefused,
}

impl GiveUpReason {
    /// Stable identifier for dead-letter records and metric labels.
    pub fn code(self) -> &'static str {
        match self {
            GiveUpReason::Exhausted => "exhausted",
            GiveUpReason::PermanentStatus => "permanent_status",
            GiveUpReason::AddressRefused => "address_refused",
        }
    }
}

/// Whether a non-2xx status may succeed later: timeouts, too early, throttling, server errors.
pub fn is_retryable_status(code: u16) -> bool {
    matches!(code, 408 | 425 | 429 | 500..=599)
}

impl RetryPolicy {
    pub fn new(settings: &RetrySettings) -> Self {
        RetryPolicy {
            schedule: settings.schedule.clone(),
            max_jitter: settings.max_jitter,
            budget: settings.budget,
        }
    }

    /// How many retries follow the first attempt at most.
    pub fn max_retries(&self) -> usize {
        self.schedule.len()
    }

    /// No retry starts later than this after the first attempt.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Decides what follows an attempt.
    ///
    /// `retries_done`: retries already made (0 after the first attempt). `since_first`: time from
    /// the first attempt's start to now. `jitter`: a number in `[0, 1)` chosen by the caller
    /// (values outside are clamped, NaN counts as 0).
    pub fn decide(
        &self,
        outcome: &AttemptOutcome,
        retries_done: usize,
        since_first: Duration,
        jitter: f64,
    ) -> Decision {
        let retry_after = match *outcome {
            AttemptOutcome::Status { code, .. } if (200..300).contains(&code) => {
                return Decision::Delivered
            }
            AttemptOutcome::Status { code, retry_after } if is_retryable_status(code) => {
                retry_after
            }
            AttemptOutcome::Status { .. } => {
                return Decision::GiveUp(GiveUpReason::PermanentStatus)
            }
            AttemptOutcome::Failed(AttemptError::AddressRefused) => {
                return Decision::GiveUp(GiveUpReason::AddressRefused)
            }
            // Exhaustive on purpose: a new error kind must be placed on one side or the other.
            AttemptOutcome::Failed(
                AttemptError::Timeout
                | AttemptError::Connect
                | AttemptError::Dns
                | AttemptError::Tls
                | AttemptError::OAuthToken
                | AttemptError::Body
                | AttemptError::Request,
            ) => None,
        };

        let Some(&scheduled) = self.schedule.get(retries_done) else {
            return Decision::GiveUp(GiveUpReason::Exhausted);
        };
        // At the budget, not only past it: a retry clamped to the budget is the last one, and
        // two retries clamped there would run back to back.
        if since_first >= self.budget {
            return Decision::GiveUp(GiveUpReason::Exhausted);
        }

        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut at = scheduled
            .saturating_add(self.max_jitter.mul_f64(jitter))
            .max(since_first.saturating_add(self.min_spacing(retries_done)));
        if let Some(retry_after) = retry_after {
            at = at.max(since_first.saturating_add(retry_after));
        }
        let at = at.min(self.budget);
        Decision::RetryAfter(at.saturating_sub(since_first))
    }

    /// The least wait between a failed attempt and retry `n`: half the schedule's gap between
    /// retry `n - 1` (or the first attempt) and retry `n`.
    fn min_spacing(&self, n: usize) -> Duration {
        let previous = n
            .checked_sub(1)
            .and_then(|p| self.schedule.get(p))
            .copied()
            .unwrap_or(Duration::ZERO);
        let this = self.schedule.get(n).copied().unwrap_or(previous);
        this.saturating_sub(previous) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The documented default: 6 retries, the 5th at 200 s, all within 5 minutes.
    fn default_policy(max_jitter: Duration) -> RetryPolicy {
        RetryPolicy::new(&RetrySettings {
            schedule: [5, 20, 50, 110, 200, 290].map(secs).to_vec(),
            max_jitter,
            budget: secs(300),
        })
    }

    fn status(code: u16) -> AttemptOutcome {
        AttemptOutcome::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn statuses_are_classified() {
        let policy = default_policy(Duration::ZERO);
        let rows: &[(u16, Decision)] = &[
            (200, Decision::Delivered),
            (201, Decision::Delivered),
            (204, Decision::Delivered),
            (299, Decision::Delivered),
            (100, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (101, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (301, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (302, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (307, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (400, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (401, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (404, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (410, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (413, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (499, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (600, Decision::GiveUp(GiveUpReason::PermanentStatus)),
            (408, Decision::RetryAfter(secs(5))),
            (425, Decision::RetryAfter(secs(5))),
            (429, Decision::RetryAfter(secs(5))),
            (500, Decision::RetryAfter(secs(5))),
            (502, Decision::RetryAfter(secs(5))),
            (503, Decision::RetryAfter(secs(5))),
            (504, Decision::RetryAfter(secs(5))),
            (599, Decision::RetryAfter(secs(5))),
        ];
        for &(code, expected) in rows {
            assert_eq!(
                policy.decide(&status(code), 0, Duration::ZERO, 0.0),
                expected,
                "status {code}"
            );
        }
    }

    #[test]
    fn errors_are_classified() {
        let policy = default_policy(Duration::ZERO);
        let retryable = [
            AttemptError::Timeout,
            AttemptError::Connect,
            AttemptError::Dns,
            AttemptError::Tls,
            AttemptError::OAuthToken,
            AttemptError::Body,
            AttemptError::Request,
        ];
        for error in retryable {
            assert_eq!(
                policy.decide(&AttemptOutcome::Failed(error), 0, secs(1), 0.0),
                Decision::RetryAfter(secs(4)),
                "{error:?}"
            );
        }
        assert_eq!(
            policy.decide(
                &AttemptOutcome::Failed(AttemptError::AddressRefused),
                0,
                secs(1),
                0.0
            ),
            Decision::GiveUp(GiveUpReason::AddressRefused)
        );
    }

    #[test]
    fn schedule_is_cumulative_from_the_first_attempt() {
        let policy = default_policy(Duration::ZERO);
        assert_eq!(policy.max_retries(), 6);
        // Retry n is due at schedule[n] from the first attempt, whatever time has passed.
        let rows = [
            (0, 1, 4),
            (1, 6, 14),
            (2, 21, 29),
            (3, 51, 59),
            (4, 111, 89),
            (5, 201, 89),
        ];
        for (retries_done, since_first, wait) in rows {
            assert_eq!(
                policy.decide(&status(503), retries_done, secs(since_first), 0.0),
                Decision::RetryAfter(secs(wait)),
                "retry {retries_done}"
            );
        }
    }

    #[test]
    fn overdue_retry_waits_half_its_gap_not_zero() {
        let policy = default_policy(secs(10));
        // Retry 1 was due at 20 s (+ 5 s jitter); at 45 s it waits half of 20 − 5 s.
        assert_eq!(
            policy.decide(&status(503), 1, secs(45), 0.5),
            Decision::RetryAfter(Duration::from_millis(7500))
        );
    }

    /// Issue 7 point 4: a 429 with `Retry-After: 120` at the first attempt pushes retry 0 to
    /// 121 s, past the times of retries 1–3 (20, 50, 110 s). They must not then run back to
    /// back: each waits at least half its schedule gap, and all stay within the budget.
    #[test]
    fn retries_after_a_long_retry_after_stay_spaced_within_the_budget() {
        let policy = default_policy(Duration::ZERO);
        let attempt_takes = Duration::from_millis(100);
        let mut now = attempt_takes;
        let mut starts = Vec::new();
        let mut outcome = AttemptOutcome::Status {
            code: 429,
            retry_after: Some(secs(120)),
        };
        let reason = loop {
            match policy.decide(&outcome, starts.len(), now, 0.0) {
                Decision::RetryAfter(wait) => {
                    now += wait;
                    starts.push(now);
                    now += attempt_takes;
                    outcome = status(503);
                }
                Decision::GiveUp(reason) => break reason,
                Decision::Delivered => unreachable!("never delivered"),
            }
        };
        assert_eq!(reason, GiveUpReason::Exhausted);
        assert_eq!(starts[0], Duration::from_millis(120_100), "{starts:?}");
        for (n, pair) in starts.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= secs(7),
                "retries {n} and {} {gap:?} apart: {starts:?}",
                n + 1
            );
        }
        assert!(starts.len() >= 5, "{starts:?}");
        assert!(starts.iter().all(|t| *t <= policy.budget()), "{starts:?}");
    }

    #[test]
    fn spacing_is_half_the_schedule_gap() {
        let policy = default_policy(Duration::ZERO);
        let halves: Vec<Duration> = (0..7).map(|n| policy.min_spacing(n)).collect();
        let ms = Duration::from_millis;
        assert_eq!(
            halves,
            [
                ms(2500),
                ms(7500),
                secs(15),
                secs(30),
                secs(45),
                secs(45),
                Duration::ZERO
            ]
        );
    }

    #[test]
    fn exhausted_after_the_last_retry_or_past_the_budget() {
        let policy = default_policy(Duration::ZERO);
        assert_eq!(
            policy.decide(&status(503), 6, secs(291), 0.0),
            Decision::GiveUp(GiveUpReason::Exhausted)
        );
        assert_eq!(
            policy.decide(&status(503), 3, secs(301), 0.0),
            Decision::GiveUp(GiveUpReason::Exhausted)
        );
        // A permanent status wins over exhaustion: it is the more useful reason.
        assert_eq!(
            policy.decide(&status(404), 6, secs(291), 0.0),
            Decision::GiveUp(GiveUpReason::PermanentStatus)
        );
    }

    #[test]
    fn jitter_is_added_and_clamped_to_the_budget() {
        let policy = default_policy(secs(20));
        assert_eq!(
            policy.decide(&status(503), 0, Duration::ZERO, 0.5),
            Decision::RetryAfter(secs(15))
        );
        // 290 s + 0.999 × 20 s would be past 300 s: clamped to the budget.
        assert_eq!(
            policy.decide(&status(503), 5, secs(250), 0.999),
            Decision::RetryAfter(secs(50))
        );
        // Out-of-range jitter is clamped, NaN is zero: never a panic.
        assert_eq!(
            policy.decide(&status(503), 0, Duration::ZERO, 7.0),
            Decision::RetryAfter(secs(25))
        );
        assert_eq!(
            policy.decide(&status(503), 0, Duration::ZERO, f64::NAN),
            Decision::RetryAfter(secs(5))
        );
    }

    #[test]
    fn retry_after_moves_later_but_not_past_the_budget() {
        let policy = default_policy(Duration::ZERO);
        let throttled = |s| AttemptOutcome::Status {
            code: 429,
            retry_after: Some(secs(s)),
        };
        // Asks later than scheduled (5 s): waits 30 s from now.
        assert_eq!(
            policy.decide(&throttled(30), 0, secs(1), 0.0),
            Decision::RetryAfter(secs(30))
        );
        // Asks earlier than scheduled: the schedule wins.
        assert_eq!(
            policy.decide(&throttled(1), 0, secs(1), 0.0),
            Decision::RetryAfter(secs(4))
        );
        // Asks for an hour: clamped to the budget.
        assert_eq!(
            policy.decide(&throttled(3600), 2, secs(30), 0.0),
            Decision::RetryAfter(secs(270))
        );
        // Retry-After on a permanent status does not make it retryable.
        let gone = AttemptOutcome::Status {
            code: 410,
            retry_after: Some(secs(1)),
        };
        assert_eq!(
            policy.decide(&gone, 0, secs(1), 0.0),
            Decision::GiveUp(GiveUpReason::PermanentStatus)
        );
    }

    #[test]
    fn give_up_codes() {
        assert_eq!(GiveUpReason::Exhausted.code(), "exhausted");
        assert_eq!(GiveUpReason::PermanentStatus.code(), "permanent_status");
        assert_eq!(GiveUpReason::AddressRefused.code(), "address_refused");
    }

    /// Drives the policy the way the orchestrator does, on a virtual clock, against an endpoint
    /// that always answers 503 after `attempt_takes`: at least five retries happen within five
    /// minutes, all within the budget, even with the largest jitter and slow attempts.
    ///
    /// (A plain virtual clock: the policy is pure. The test below drives the same loop with
    /// tokio's paused clock, the way the dispatcher waits.)
    #[test]
    fn always_503_gets_five_retries_within_five_minutes() {
        for max_jitter in [Duration::ZERO, secs(10), secs(60)] {
            for attempt_takes in [Duration::from_millis(50), secs(1), secs(30)] {
                let policy = default_policy(max_jitter);
                let mut now = Duration::ZERO; // since the first attempt's start
                let mut retry_times = Vec::new();
                let given_up = loop {
                    now += attempt_takes;
                    match policy.decide(&status(503), retry_times.len(), now, 0.999) {
                        Decision::RetryAfter(wait) => {
                            now += wait;
                            retry_times.push(now);
                        }
                        Decision::GiveUp(reason) => break reason,
                        Decision::Delivered => unreachable!("503 is never delivered"),
                    }
                };
                let case =
                    format!("jitter {max_jitter:?}, attempts {attempt_takes:?}: {retry_times:?}");
                assert_eq!(given_up, GiveUpReason::Exhausted, "{case}");
                assert!(retry_times.len() >= 5, "{case}");
                assert!(retry_times[4] <= secs(300), "{case}");
                assert!(retry_times.iter().all(|t| *t <= policy.budget()), "{case}");
                assert!(retry_times.windows(2).all(|w| w[0] <= w[1]), "{case}");
            }
        }
    }

    /// The dispatcher's loop (attempt, decide, sleep) against an always-503 endpoint, in
    /// tokio's paused time: at least five retries start within five minutes of the first
    /// attempt, none after the budget, and then the event is given up as exhausted.
    #[tokio::test(start_paused = true)]
    async fn paused_time_always_503_retries_five_times_within_five_minutes() {
        let policy = default_policy(secs(5));
        let first = tokio::time::Instant::now();
        let mut retries = Vec::new();
        let reason = loop {
            // An attempt that takes a second: the endpoint answers 503 slowly.
            tokio::time::sleep(secs(1)).await;
            let jitter = 0.999;
            match policy.decide(&status(503), retries.len(), first.elapsed(), jitter) {
                Decision::RetryAfter(wait) => {
                    tokio::time::sleep(wait).await;
                    retries.push(first.elapsed());
                }
                Decision::GiveUp(reason) => break reason,
                Decision::Delivered => unreachable!("503 is never delivered"),
            }
        };
        assert_eq!(reason, GiveUpReason::Exhausted);
        assert!(retries.len() >= 5, "{retries:?}");
        assert!(
            retries[4] <= secs(300),
            "fifth retry by five minutes: {retries:?}"
        );
        assert!(retries.iter().all(|t| *t <= secs(300)), "{retries:?}");
    }

    /// The dispatcher's loop in paused time against an endpoint that throttles with
    /// `Retry-After: 120` once, then fails: after the long wait, the retries are spaced (never
    /// two within 7 s), not fired back to back, and all happen within the budget.
    #[tokio::test(start_paused = true)]
    async fn paused_time_retries_after_a_long_retry_after_are_spaced() {
        let policy = default_policy(secs(5));
        let first = tokio::time::Instant::now();
        let mut outcome = AttemptOutcome::Status {
            code: 429,
            retry_after: Some(secs(120)),
        };
        let mut retries = Vec::new();
        let reason = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match policy.decide(&outcome, retries.len(), first.elapsed(), 0.3) {
                Decision::RetryAfter(wait) => {
                    tokio::time::sleep(wait).await;
                    retries.push(first.elapsed());
                    outcome = status(503);
                }
                Decision::GiveUp(reason) => break reason,
                Decision::Delivered => unreachable!("never delivered"),
            }
        };
        assert_eq!(reason, GiveUpReason::Exhausted);
        assert!(retries[0] >= secs(120), "{retries:?}");
        assert!(
            retries.windows(2).all(|w| w[1] - w[0] >= secs(7)),
            "{retries:?}"
        );
        assert!(retries.len() >= 5, "{retries:?}");
        assert!(retries.iter().all(|t| *t <= secs(300)), "{retries:?}");
    }
}
