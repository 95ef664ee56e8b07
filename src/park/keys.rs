//! Which keys of one partition have parked events, and what follows for the next event of a key.
//!
//! Guarantee (order per key): an event is attempted only when no event of its key with a lower
//! source offset is parked and not done. The owner of a partition builds this index from the
//! retry partition (from its committed position to its end) before it delivers any input of
//! the partition, and keeps it as events are parked and finished.
//!
//! Memory: one entry (two offsets and a flag) per parked event that is not done, plus each key
//! once.

use std::collections::{BTreeMap, HashMap};

/// What the retry reader does with a parked record it has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRead {
    /// A later record of the same event exists, or the event is done: skip it.
    Obsolete,
    /// The first parked event of its key: attempt it when due.
    Attempt,
    /// An earlier event of its key is in memory: hold this one behind it.
    Hold,
    /// An earlier event of its key is parked further on in the log: park this one again, so
    /// that it comes after it (holding it could fill memory while the earlier one is unread).
    ParkAgain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The retry-topic offset of the event's latest parked record.
    retry_offset: i64,
    /// The reader holds the event in memory (read, not done, not parked again).
    in_memory: bool,
    /// When the event was first parked (milliseconds since the epoch).
    since_ms: i64,
}

/// The parked events of one partition, by key, in source order.
#[derive(Debug, Default)]
pub struct ParkedKeys {
    keys: HashMap<Vec<u8>, BTreeMap<i64, Entry>>,
    len: usize,
}

impl ParkedKeys {
    /// Parked events not done.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a new event of `key` must park behind an earlier one.
    pub fn has_parked(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key)
    }

    /// Whether the event read at `source_offset` is parked (and not done): its source record
    /// read again (after a revoke or a restart) must not be delivered a second time.
    pub fn contains(&self, key: &[u8], source_offset: i64) -> bool {
        self.keys
            .get(key)
            .is_some_and(|events| events.contains_key(&source_offset))
    }

    /// When the oldest parked event not done was first parked (milliseconds since the epoch).
    pub fn oldest_since_ms(&self) -> Option<i64> {
        self.keys
            .values()
            .flat_map(|events| events.values().map(|e| e.since_ms))
            .min()
    }

    /// A parked record of the event at `source_offset` is at `retry_offset` (seen while catching
    /// up, or written and acknowledged); the event was first parked at `since_ms`. A later
    /// record of the same event replaces an earlier.
    pub fn parked(&mut self, key: &[u8], source_offset: i64, retry_offset: i64, since_ms: i64) {
        let events = self.keys.entry(key.to_vec()).or_default();
        match events.get_mut(&source_offset) {
            Some(entry) if entry.retry_offset >= retry_offset => {}
            Some(entry) => {
                *entry = Entry {
                    retry_offset,
                    in_memory: false,
                    since_ms: entry.since_ms.min(since_ms),
                }
            }
            None => {
                events.insert(
                    source_offset,
                    Entry {
                        retry_offset,
                        in_memory: false,
                        since_ms,
                    },
                );
                self.len += 1;
            }
        }
    }

    /// Whether `retry_offset` holds the event's latest parked record (and the event is not done).
    pub fn is_current(&self, key: &[u8], source_offset: i64, retry_offset: i64) -> bool {
        self.keys
            .get(key)
            .and_then(|events| events.get(&source_offset))
            .is_some_and(|entry| entry.retry_offset == retry_offset)
    }

    /// The reader read the record at `retry_offset`: what to do with it. Marks it in memory
    /// when the answer is [`OnRead::Attempt`] or [`OnRead::Hold`].
    pub fn on_read(&mut self, key: &[u8], source_offset: i64, retry_offset: i64) -> OnRead {
        let Some(events) = self.keys.get_mut(key) else {
            return OnRead::Obsolete;
        };
        let head = *events
            .keys()
            .next()
            .expect("keys without events are removed");
        let head_in_memory = events[&head].in_memory;
        let Some(entry) = events.get_mut(&source_offset) else {
            return OnRead::Obsolete;
        };
        if entry.retry_offset != retry_offset {
            return OnRead::Obsolete;
        }
        if source_offset == head {
            entry.in_memory = true;
            OnRead::Attempt
        } else if head_in_memory {
            entry.in_memory = true;
            OnRead::Hold
        } else {
            OnRead::ParkAgain
        }
    }

    /// The event's delivery ended (delivered or dead-lettered). Returns the source offset of the
    /// key's next parked event when it is held in memory: it is now the one to attempt.
    pub fn done(&mut self, key: &[u8], source_offset: i64) -> Option<i64> {
        let events = self.keys.get_mut(key)?;
        if events.remove(&source_offset).is_some() {
            self.len -= 1;
        }
        let next = events
            .iter()
            .next()
            .map(|(&offset, entry)| (offset, entry.in_memory));
        if events.is_empty() {
            self.keys.remove(key);
        }
        match next {
            Some((offset, true)) => Some(offset),
            _ => None,
        }
    }

    /// The partition was revoked: forget it all (the next owner rebuilds it from the topic).
    pub fn clear(&mut self) {
        self.keys.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_a_parked_event_parks_its_next_events() {
        let mut keys = ParkedKeys::default();
        assert!(!keys.has_parked(b"acme/u1"));
        keys.parked(b"acme/u1", 10, 0, 0);
        assert!(keys.has_parked(b"acme/u1"));
        assert!(!keys.has_parked(b"acme/u2"));
        assert_eq!(keys.done(b"acme/u1", 10), None);
        assert!(!keys.has_parked(b"acme/u1"));
        assert!(keys.is_empty());
    }

    #[test]
    fn the_reader_attempts_a_keys_events_in_source_order() {
        let mut keys = ParkedKeys::default();
        keys.parked(b"k", 10, 0, 0); // N
        keys.parked(b"k", 11, 1, 0); // N+1, behind it
        assert_eq!(keys.on_read(b"k", 10, 0), OnRead::Attempt);
        assert_eq!(keys.on_read(b"k", 11, 1), OnRead::Hold);
        // N delivered: N+1 is next, and it is in memory.
        assert_eq!(keys.done(b"k", 10), Some(11));
        assert_eq!(keys.done(b"k", 11), None);
        assert!(keys.is_empty());
    }

    #[test]
    fn an_event_whose_head_is_later_in_the_log_is_parked_again() {
        let mut keys = ParkedKeys::default();
        keys.parked(b"k", 10, 0, 0); // N
        keys.parked(b"k", 12, 1, 0); // N+2
        keys.parked(b"k", 10, 5, 0); // N parked again after a failed retry
        assert_eq!(keys.on_read(b"k", 10, 0), OnRead::Obsolete);
        assert_eq!(keys.on_read(b"k", 12, 1), OnRead::ParkAgain);
        keys.parked(b"k", 12, 6, 0);
        assert_eq!(keys.on_read(b"k", 10, 5), OnRead::Attempt);
        assert_eq!(keys.on_read(b"k", 12, 6), OnRead::Hold);
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn records_of_finished_events_are_obsolete() {
        let mut keys = ParkedKeys::default();
        keys.parked(b"k", 10, 0, 0);
        keys.done(b"k", 10);
        assert_eq!(keys.on_read(b"k", 10, 0), OnRead::Obsolete);
        // An older record seen after a newer one does not move the event back.
        keys.parked(b"j", 3, 9, 0);
        keys.parked(b"j", 3, 4, 0);
        assert_eq!(keys.on_read(b"j", 3, 4), OnRead::Obsolete);
        assert_eq!(keys.on_read(b"j", 3, 9), OnRead::Attempt);
    }
}
