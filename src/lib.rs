//! consent-webhooks: consent-change records from Kafka in, webhooks out (see SPEC.md).
//!
//! Pipeline stages, one module each: [`ingest`] (Kafka consumer, retry reader) → [`change`]
//! (parse and validate) → [`derive`] (pure rules) → [`webhook`] (the event, its id and
//! signature) → [`dispatch`] (per-organization lanes, first attempts, retries) → [`delivery`]
//! (HTTP, OAuth, retry policy) → [`park`] (durable retries) and [`deadletter`] (permanent
//! storage). [`work`] is what ingest and dispatch exchange; [`pipeline`] wires them with one
//! shutdown path.

pub mod admin;
pub mod allocator;
pub mod change;
pub mod cli;
pub mod config;
pub mod deadletter;
pub mod delivery;
pub mod derive;
pub mod dispatch;
pub mod equivalence;
pub mod ingest;
pub mod kafka;
pub mod ops;
pub mod park;
pub mod pipeline;
pub mod rawjson;
pub mod registry;
pub mod signals;
pub mod telemetry;
pub mod webhook;
pub mod work;

/// The hash map of the hot path (lanes, key queues, parked keys, offsets: a few look-ups per
/// delivery). aHash instead of SipHash: about a fifth of the cost per look-up, and still keyed at
/// random per process, so that keys in records cannot be chosen to collide.
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// The hash set of the hot path (see [`FastHashMap`]).
pub type FastHashSet<T> = std::collections::HashSet<T, ahash::RandomState>;
