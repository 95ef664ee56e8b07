//! Which keys of one partition have parked events, and what follows for the next event of a key.
//!
//! Guarantee (order per key): an event is attempted only when no event of its key with a lower
//! source offset is parked and not done. The owner of a partition builds this index from the
//! retry partition (from its committed position to its end) before it delivers any input of
//! the partition, and keeps it as events are parked and finished.
//!
//! Memory: one entry (two offsets and a state) per parked event that is not done, plus each key
//! once. An event read back while an earlier one of its key is not done keeps nothing else in
//! memory: it [waits](Place::Waiting) as this entry, and is read again by offset when its turn
//! comes, so a key's followers are written once, whatever its head's retries.

use std::collections::BTreeMap;

use crate::FastHashMap;

/// What the retry reader does with a parked record it has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRead {
    /// A later record of the same event exists, or the event is done: skip it.
    Obsolete,
    /// The first parked event of its key: attempt it when due.
    Attempt,
    /// An earlier event of its key is not done: wait, with nothing in memory but this index's
    /// entry; [`ParkedKeys::done`] of the earlier one names it when its turn comes.
    Wait,
}

/// Where a parked event not done is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Only in the log: the reader has not reached its latest record yet.
    Unread,
    /// In memory: waiting for its due time, or being attempted.
    Active,
    /// Read, and waiting for its turn behind an earlier event of its key with nothing in
    /// memory; its record is read again by offset when the turn comes.
    Waiting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The retry-topic offset of the event's latest parked record.
    retry_offset: i64,
    place: Place,
    /// When the event was first parked (milliseconds since the epoch).
    since_ms: i64,
}

/// The parked events of one partition, by key, in source order.
#[derive(Debug, Default)]
pub struct ParkedKeys {
    keys: FastHashMap<Vec<u8>, BTreeMap<i64, Entry>>,
    len: usize,
    waiting: usize,
}

/// A waiting event whose turn came: read its record again at `retry_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    pub source_offset: i64,
    pub retry_offset: i64,
}

impl ParkedKeys {
    /// Parked events not done.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Parked events read and waiting for their turn (nothing of them in memory but the entry).
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// The retry offsets of the waiting events.
    pub fn waiting_offsets(&self) -> Vec<i64> {
        self.keys
            .values()
            .flat_map(|events| events.values())
            .filter(|e| e.place == Place::Waiting)
            .map(|e| e.retry_offset)
            .collect()
    }

    /// Whether an event of `key` before `source_offset` is parked and not done: the event at
    /// `source_offset` cannot be attempted yet (its body need not be read now).
    pub fn has_earlier(&self, key: &[u8], source_offset: i64) -> bool {
        self.keys
            .get(key)
            .is_some_and(|events| events.range(..source_offset).next().is_some())
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
                if entry.place == Place::Waiting {
                    self.waiting -= 1;
                }
                *entry = Entry {
                    retry_offset,
                    place: Place::Unread,
                    since_ms: entry.since_ms.min(since_ms),
                }
            }
            None => {
                events.insert(
                    source_offset,
                    Entry {
                        retry_offset,
                        place: Place::Unread,
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

    /// The reader read the record at `retry_offset`: what to do with it. The event is then
    /// [`Place::Active`] (attempt) or [`Place::Waiting`] (wait).
    pub fn on_read(&mut self, key: &[u8], source_offset: i64, retry_offset: i64) -> OnRead {
        let Some(events) = self.keys.get_mut(key) else {
            return OnRead::Obsolete;
        };
        let head = *events
            .keys()
            .next()
            .expect("keys without events are removed");
        let Some(entry) = events.get_mut(&source_offset) else {
            return OnRead::Obsolete;
        };
        if entry.retry_offset != retry_offset || entry.place != Place::Unread {
            return OnRead::Obsolete;
        }
        if source_offset == head {
            entry.place = Place::Active;
            OnRead::Attempt
        } else {
            entry.place = Place::Waiting;
            self.waiting += 1;
            OnRead::Wait
        }
    }

    /// The event's delivery ended (delivered, dead-lettered or skipped). Returns the key's next
    /// parked event when it waits for this turn (it is then [`Place::Active`]: the caller reads
    /// it again and attempts it). A next event still unread becomes the head when read.
    pub fn done(&mut self, key: &[u8], source_offset: i64) -> Option<Next> {
        let events = self.keys.get_mut(key)?;
        if let Some(entry) = events.remove(&source_offset) {
            self.len -= 1;
            if entry.place == Place::Waiting {
                self.waiting -= 1;
            }
        }
        let Some((&next, entry)) = events.iter_mut().next() else {
            self.keys.remove(key);
            return None;
        };
        if entry.place != Place::Waiting {
            return None;
        }
        entry.place = Place::Active;
        self.waiting -= 1;
        Some(Next {
            source_offset: next,
            retry_offset: entry.retry_offset,
        })
    }

    /// The partition was revoked: forget it all (the next owner rebuilds it from the topic).
    pub fn clear(&mut self) {
        self.keys.clear();
        self.len = 0;
        self.waiting = 0;
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
        assert_eq!(keys.on_read(b"k", 11, 1), OnRead::Wait);
        assert_eq!(keys.waiting(), 1);
        assert!(keys.has_earlier(b"k", 11));
        assert!(!keys.has_earlier(b"k", 10));
        // N delivered: N+1 is next, read again from its record.
        assert_eq!(
            keys.done(b"k", 10),
            Some(Next {
                source_offset: 11,
                retry_offset: 1
            })
        );
        assert_eq!(keys.waiting(), 0);
        assert_eq!(keys.done(b"k", 11), None);
        assert!(keys.is_empty());
    }

    #[test]
    fn followers_wait_once_whatever_their_heads_retries() {
        let mut keys = ParkedKeys::default();
        keys.parked(b"k", 10, 0, 0); // N
        keys.parked(b"k", 12, 1, 0); // N+2
        assert_eq!(keys.on_read(b"k", 10, 0), OnRead::Attempt);
        assert_eq!(keys.on_read(b"k", 12, 1), OnRead::Wait);
        // N fails again and is parked again, further on: N+2 stays where it is.
        keys.parked(b"k", 10, 5, 0);
        assert_eq!(keys.on_read(b"k", 12, 1), OnRead::Obsolete, "read once");
        assert_eq!(keys.on_read(b"k", 10, 5), OnRead::Attempt);
        assert_eq!(keys.done(b"k", 10).map(|n| n.retry_offset), Some(1));
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn a_follower_read_before_its_head_waits_for_it() {
        let mut keys = ParkedKeys::default();
        keys.parked(b"k", 10, 5, 0); // N, parked again at 5
        keys.parked(b"k", 12, 1, 0); // N+2, read first
        assert_eq!(keys.on_read(b"k", 12, 1), OnRead::Wait);
        assert_eq!(keys.on_read(b"k", 10, 5), OnRead::Attempt);
        assert_eq!(
            keys.done(b"k", 10),
            Some(Next {
                source_offset: 12,
                retry_offset: 1
            })
        );
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
