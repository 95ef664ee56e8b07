//! What the consumer thread and the dispatcher exchange, in one place both use (neither
//! imports the other): the [`Work`] handed over, the [`Ticket`] each piece of work owes a
//! completion, and the [`Progress`] that turns completions into committable offsets.

pub mod offsets;
mod progress;

pub use offsets::{OffsetTracker, Ticket};
pub use progress::Progress;

use tokio::sync::mpsc;

use crate::change::Rejection;
use crate::deadletter::{InputRecord, SourceRef};
use crate::park::{Parked, ParkedHead};
use crate::webhook::WebhookEvent;

/// What the consumer hands to the dispatcher, one per record that needs asynchronous work.
#[derive(Debug)]
pub enum Work {
    Deliver {
        ticket: Ticket,
        key: Option<Vec<u8>>,
        event: WebhookEvent,
        source: SourceRef,
        /// The record's time (ms): its Kafka timestamp, else the change's `occurred_at`. Whether
        /// its organization is known is decided at this time (see [`crate::registry`]).
        at: i64,
    },
    Reject {
        ticket: Ticket,
        record: InputRecord,
        rejection: Rejection,
    },
    /// A parked record read back from the retry topic (its ticket is on the retry topic).
    Parked {
        ticket: Ticket,
        key: Vec<u8>,
        head: ParkedHead,
        /// The record itself when it is due soon; `None` when it is due later: its body is
        /// read again then, so that waiting events cost memory for their headers only.
        parked: Option<Box<Parked>>,
    },
}

/// The dispatcher is gone (shutdown): stop reading.
#[derive(Debug)]
pub struct DispatcherGone;

/// Hands `item` to the dispatcher from the consumer thread, waiting while the channel is full.
/// Tries without waiting first: `blocking_send` enters a blocking region and a `block_on` for
/// every item, which cost about as much as the send itself.
pub fn hand_over(work: &mpsc::Sender<Work>, item: Work) -> Result<(), DispatcherGone> {
    match work.try_send(item) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(item)) => {
            work.blocking_send(item).map_err(|_| DispatcherGone)
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(DispatcherGone),
    }
}
