//! consent-webhooks: consent-change records from Kafka in, webhooks out (see SPEC.md).
//!
//! Pipeline stages, one module each: [`change`] (parse and validate) → [`derive`] (pure rules)
//! → [`webhook`] (the event, its id and signature) → [`delivery`] (HTTP, OAuth, retry policy).

pub mod change;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod derive;
pub mod equivalence;
pub mod ops;
pub mod rawjson;
pub mod webhook;
