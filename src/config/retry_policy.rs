//! Retry policies (`delivery.retry` and each organization's `retry`): read, checked, and held to
//! the promise of SPEC §4.
//!
//! Guarantee: a policy that reaches [`RetrySettings`] has a non-empty, strictly increasing
//! schedule ending within its budget, and either gives at least [`MIN_RETRIES`] retries that
//! start within [`MIN_RETRY_WINDOW`] of the first attempt (whatever the jitter) with a budget of
//! at least that window, or was explicitly opted out with `allow_below_minimum = true` in its
//! own table (tests and development; never inherited).

use std::time::Duration;

use super::reader::{Keys, Node};
use super::settings::RetrySettings;
use super::ConfigError;

pub(super) const RETRY_KEYS: Keys = &[
    (
        "schedule",
        r#"schedule = ["5s", "20s", "50s", "110s", "200s", "290s"]"#,
    ),
    ("max_jitter", r#"max_jitter = "5s""#),
    ("budget", r#"budget = "5m""#),
    ("allow_below_minimum", "allow_below_minimum = false"),
];

/// SPEC §4: a failed delivery is retried at least this many times ...
pub const MIN_RETRIES: usize = 5;
/// ... within this long after the first attempt.
pub const MIN_RETRY_WINDOW: Duration = Duration::from_secs(300);

/// A retry policy: keys given in `node`, the rest from `base` (described as `base_name`).
/// Schedule: at least one entry, strictly increasing, none later than the budget. Unless the
/// table itself sets `allow_below_minimum = true` (the opt-out is not inherited), the policy
/// must keep SPEC §4's promise: see [`check_minimum`].
pub(super) fn retry(
    node: &Node<'_>,
    base: &RetrySettings,
    base_name: &str,
) -> Result<RetrySettings, ConfigError> {
    let own_schedule = node.durations("schedule")?;
    let schedule_set = own_schedule.is_some();
    let retry = RetrySettings {
        schedule: own_schedule.unwrap_or_else(|| base.schedule.clone()),
        // Zero jitter is allowed: it makes retry times exact (tests, debugging).
        max_jitter: node
            .duration("max_jitter", true)?
            .unwrap_or(base.max_jitter),
        budget: node.duration("budget", false)?.unwrap_or(base.budget),
    };
    let allow_below_minimum = node.bool_or("allow_below_minimum", false)?;
    if retry.schedule.is_empty() {
        return Err(node.err("schedule", "must have at least one retry"));
    }
    if let Some(w) = retry.schedule.windows(2).find(|w| w[1] <= w[0]) {
        return Err(node.err(
            "schedule",
            format!(
                "must be strictly increasing (offsets from the first attempt), but {} follows {}",
                show(w[1]),
                show(w[0])
            ),
        ));
    }
    let last = *retry.schedule.last().expect("non-empty");
    if last > retry.budget {
        let (key, whose) = if schedule_set {
            ("schedule", "the schedule")
        } else {
            ("budget", base_name)
        };
        return Err(node.err(
            key,
            format!(
                "{whose} ends at {}, later than the budget {}",
                show(last),
                show(retry.budget)
            ),
        ));
    }
    if !allow_below_minimum {
        check_minimum(node, &retry)?;
    }
    Ok(retry)
}

/// How many retries of `retry` start within [`MIN_RETRY_WINDOW`] of the first attempt, whatever
/// the jitter (jitter never moves a retry past the budget).
pub fn retries_within_window(retry: &RetrySettings) -> usize {
    retry
        .schedule
        .iter()
        .filter(|at| (**at + retry.max_jitter).min(retry.budget) <= MIN_RETRY_WINDOW)
        .count()
}

/// Whether `retry` keeps SPEC §4's promise: a budget of at least five minutes and at least
/// five retries that start within five minutes.
pub fn meets_minimum(retry: &RetrySettings) -> bool {
    retry.budget >= MIN_RETRY_WINDOW && retries_within_window(retry) >= MIN_RETRIES
}

/// Refuses a policy that cannot keep SPEC §4's promise (at least five retries within five
/// minutes), naming the opt-out for tests and development.
fn check_minimum(node: &Node<'_>, retry: &RetrySettings) -> Result<(), ConfigError> {
    let opt_out = format!(
        "or set {} = true to accept fewer (tests and development only)",
        node.key_path("allow_below_minimum")
    );
    if retry.budget < MIN_RETRY_WINDOW {
        return Err(node.err(
            "budget",
            format!(
                "{} is under five minutes, but every failed delivery is promised at least \
                 {MIN_RETRIES} retries within five minutes (SPEC §4); use at least \"5m\", {opt_out}",
                show(retry.budget)
            ),
        ));
    }
    let within = retries_within_window(retry);
    if within < MIN_RETRIES {
        let shown: Vec<String> = retry.schedule.iter().map(|d| show(*d)).collect();
        return Err(node.err(
            "schedule",
            format!(
                "[{}] with max_jitter {} gives {within} retries within five minutes of the first \
                 attempt, but at least {MIN_RETRIES} are promised (SPEC §4); add retries before \
                 5m (jitter included), {opt_out}",
                shown.join(", "),
                show(retry.max_jitter)
            ),
        ));
    }
    Ok(())
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
