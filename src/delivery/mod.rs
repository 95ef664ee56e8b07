//! Delivery: one HTTP attempt of one webhook event to one endpoint, classified as data.
//!
//! - [`client`]: the [`Deliverer`] makes an attempt (headers, signature, OAuth, body cap) and
//!   returns an [`Attempt`];
//! - [`attempt`]: what an attempt produced ([`AttemptOutcome`], [`AttemptError`]);
//! - [`retry`]: the pure [`RetryPolicy`] turning an outcome into a [`Decision`];
//! - [`http`]: the pooled HTTP client webhooks are POSTed with (hyper, rustls, the guard);
//! - [`guard`]: the address guard (public addresses, HTTPS) in the resolver and before requests;
//! - [`oauth`]: the client-credentials [`TokenSource`] with its token cache;
//! - [`permits`]: request permits that serve due retries before first attempts;
//! - [`redact`]: URLs and error texts as they may be logged (no user info, no query).
//!
//! The orchestrator loops: `attempt` → `decide` → wait `RetryAfter` or stop on `Delivered` /
//! `GiveUp`. Nothing here sleeps between attempts or touches Kafka.

pub mod attempt;
pub mod client;
pub mod guard;
pub mod http;
pub mod keyed;
pub mod oauth;
pub mod permits;
pub mod redact;
pub mod retry;
pub mod target;

/// Test-only HTTP receivers and settings for the unit tests; they live with the tests.
#[cfg(test)]
#[path = "../../tests/unit/testkit.rs"]
pub(crate) mod testkit;

pub use attempt::{parse_retry_after, Attempt, AttemptError, AttemptOutcome};
pub use client::{Deliverer, DeliveryInitError, Endpoint};
pub use guard::{check_url, is_global, GuardError, GuardedResolver, UrlPolicy};
pub use keyed::KeyQueues;
pub use oauth::{AccessToken, OAuthError, TokenSource};
pub use permits::{Permit, Permits, Priority};
pub use retry::{is_retryable_status, Decision, GiveUpReason, RetryPolicy};
pub use target::Target;
