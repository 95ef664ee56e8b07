//! The parked events of the partitions this replica owns, shared by the consumer thread (which
//! installs a partition's index on assignment and drops it on revoke) and the delivery tasks.
//!
//! Guarantee: every decision about a key (is it parked? may this parked event go? who is next?)
//! is taken under one lock, so a follower that waits for its turn can never miss it: the
//! [`done`](Parking::done) of the event before it names it.

use std::sync::{Mutex, MutexGuard};

use crate::FastHashMap;

use super::keys::ParkedKeys;
pub use super::keys::{Next, OnRead as Read};

#[derive(Default)]
struct Inner {
    partitions: FastHashMap<i32, ParkedKeys>,
}

/// Parked-key indexes of the owned partitions.
#[derive(Default)]
pub struct Parking {
    inner: Mutex<Inner>,
}

impl Parking {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of a newly assigned partition, built from its retry partition (before any of
    /// its input is delivered).
    pub fn install(&self, partition: i32, keys: ParkedKeys) {
        self.lock().partitions.insert(partition, keys);
    }

    /// Revoked partitions: forget them.
    pub fn remove(&self, partitions: &[i32]) {
        let mut inner = self.lock();
        for p in partitions {
            inner.partitions.remove(p);
        }
    }

    /// The source record at `source_offset` is parked and not done.
    pub fn contains(&self, partition: i32, key: &[u8], source_offset: i64) -> bool {
        self.lock()
            .partitions
            .get(&partition)
            .is_some_and(|k| k.contains(key, source_offset))
    }

    /// `key` has a parked event not done: a new event of it parks behind.
    pub fn has_parked(&self, partition: i32, key: &[u8]) -> bool {
        self.lock()
            .partitions
            .get(&partition)
            .is_some_and(|k| k.has_parked(key))
    }

    /// An earlier event of `key` than `source_offset` is parked and not done.
    pub fn has_earlier(&self, partition: i32, key: &[u8], source_offset: i64) -> bool {
        self.lock()
            .partitions
            .get(&partition)
            .is_some_and(|k| k.has_earlier(key, source_offset))
    }

    /// Parked events read and waiting for their turn, with nothing in memory.
    pub fn waiting(&self) -> usize {
        self.lock()
            .partitions
            .values()
            .map(ParkedKeys::waiting)
            .sum()
    }

    /// The retry offsets of the waiting events of `partition`.
    pub fn waiting_offsets(&self, partition: i32) -> Vec<i64> {
        self.lock()
            .partitions
            .get(&partition)
            .map(ParkedKeys::waiting_offsets)
            .unwrap_or_default()
    }

    /// A parked record was acknowledged at `retry_offset`.
    pub fn parked(
        &self,
        partition: i32,
        key: &[u8],
        source_offset: i64,
        retry_offset: i64,
        since_ms: i64,
    ) {
        if let Some(keys) = self.lock().partitions.get_mut(&partition) {
            keys.parked(key, source_offset, retry_offset, since_ms);
        }
    }

    /// A parked record was read back at `retry_offset`: what to do with it.
    pub fn read(
        &self,
        partition: i32,
        key: &[u8],
        source_offset: i64,
        retry_offset: i64,
        since_ms: i64,
    ) -> Read {
        let mut inner = self.lock();
        let Some(keys) = inner.partitions.get_mut(&partition) else {
            return Read::Obsolete;
        };
        keys.parked(key, source_offset, retry_offset, since_ms);
        keys.on_read(key, source_offset, retry_offset)
    }

    /// Whether the record at `retry_offset` is still the event's latest (a later one makes it
    /// obsolete: the event was parked again meanwhile).
    pub fn is_current(
        &self,
        partition: i32,
        key: &[u8],
        source_offset: i64,
        retry_offset: i64,
    ) -> bool {
        self.lock()
            .partitions
            .get(&partition)
            .is_some_and(|k| k.is_current(key, source_offset, retry_offset))
    }

    /// The parked event is done (delivered, dead-lettered or skipped). Returns the next event of
    /// its key when it waits for this turn: the caller reads it again and attempts it.
    pub fn done(&self, partition: i32, key: &[u8], source_offset: i64) -> Option<Next> {
        self.lock()
            .partitions
            .get_mut(&partition)?
            .done(key, source_offset)
    }

    /// Parked events not done, and when the oldest of them was first parked (ms since epoch).
    pub fn backlog(&self) -> (usize, Option<i64>) {
        let inner = self.lock();
        let len = inner.partitions.values().map(ParkedKeys::len).sum();
        let oldest = inner
            .partitions
            .values()
            .filter_map(ParkedKeys::oldest_since_ms)
            .min();
        (len, oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_follower_is_named_when_its_head_is_done() {
        let parking = Parking::default();
        parking.install(0, ParkedKeys::default());
        assert_eq!(parking.read(0, b"k", 10, 0, 0), Read::Attempt);
        assert_eq!(parking.read(0, b"k", 11, 1, 0), Read::Wait);
        assert_eq!(parking.waiting(), 1);
        assert_eq!(parking.waiting_offsets(0), vec![1]);
        assert!(parking.has_parked(0, b"k"));
        let next = parking.done(0, b"k", 10).expect("the follower's turn");
        assert_eq!((next.source_offset, next.retry_offset), (11, 1));
        assert_eq!(parking.waiting(), 0);
        assert_eq!(parking.done(0, b"k", 11), None);
        assert!(!parking.has_parked(0, b"k"));
        assert_eq!(parking.backlog().0, 0);
    }

    #[test]
    fn a_revoked_partition_forgets_its_keys() {
        let parking = Parking::default();
        parking.install(3, ParkedKeys::default());
        assert_eq!(parking.read(3, b"k", 1, 0, 0), Read::Attempt);
        assert_eq!(parking.read(3, b"k", 2, 1, 0), Read::Wait);
        parking.remove(&[3]);
        assert_eq!(parking.read(3, b"k", 1, 0, 0), Read::Obsolete);
        assert_eq!(parking.waiting(), 0);
    }
}
