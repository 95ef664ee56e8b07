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
//! What parks, and when (applied by [`crate::dispatch`]): a first attempt that failed and may
//! be retried (`retry`); a new event whose organization's lane is full, or holds its endpoint's
//! `concurrency` while that endpoint fails (`lane_full`); an event whose key has a parked event
//! not done (`behind_key`); whatever waits when its partition is revoked (`revoked`) or the
//! process stops (`shutdown`). The retry reader ([`crate::ingest::retry`]) reads parked
//! records back on the owner of their partition.
//!
//! The parts:
//! - [`record`]: what a parked record carries, and its encoding;
//! - [`keys`]: which keys of a partition have parked events, and what that means for the next
//!   event of such a key (park behind, hold in memory, or attempt);
//! - [`state`]: the indexes of the owned partitions and the followers held behind their key's
//!   head, under one lock;
//! - [`fetch`]: reads a parked record again by offset when an event held without its body
//!   falls due;
//! - [`marker`]: the input watermark a partition's last owner finished, when the broker refused
//!   its last commit (read by the next owner's scan).

pub mod fetch;
pub mod keys;
pub mod marker;
pub mod record;
pub mod state;

pub use fetch::Fetcher;
pub use record::{ParkReason, Parked, ParkedHead, RecordKind};
pub use state::{Next, Parking, Read};
