//! Parking: how an event that must wait leaves memory without losing its place.
//!
//! The rule (docs/durable-retries.md has the whole design): an event that must wait — for a
//! retry, behind a full lane, behind an earlier parked event of its key, or because its
//! partition is revoked or the process stops — is written with its whole delivery state to the
//! retry topic, to the partition with the same number as its source partition. Once the broker
//! acknowledges that write, the source record is done. Whoever owns source partition *p* owns
//! retry partition *p*, and attempts each key's parked events in source order, continuing each
//! event's schedule where it stopped.
//!
//! This module holds the pure parts, tested on their own:
//! - [`record`]: what a parked record carries, and its encoding;
//! - [`keys`]: which keys of a partition have parked events, and what that means for the next
//!   event of such a key (park behind, hold in memory, or attempt).
//!
//! Status: the pipeline does not park yet; docs/durable-retries.md says what is left to build.

pub mod keys;
pub mod record;
pub mod state;

pub use record::{ParkReason, Parked};
pub use state::{Parking, Read, Turn};
