//! The parked events of the partitions this replica owns, shared by the consumer thread (which
//! installs a partition's index on assignment and drops it on revoke) and the delivery tasks.
//!
//! Guarantee: every decision about a key (is it parked? may this parked event go? who is next?)
//! is taken under one lock, so a follower put on hold can never miss the wake-up of its head.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::keys::{OnRead, ParkedKeys};

/// What a held event is told when its turn comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The earlier events of its key are done: attempt it (at its due time).
    Attempt,
    /// The head of its key was parked again: park this one again too, after it.
    ParkAgain,
}

/// What to do with a parked record read back from the retry topic.
#[derive(Debug)]
pub enum Read {
    /// A later record of the same event exists, or the event is done: skip it.
    Obsolete,
    /// The first of its key: attempt it when due.
    Attempt,
    /// Behind an earlier event of its key held in memory: wait for the turn.
    Hold(oneshot::Receiver<Turn>),
    /// Behind an earlier event of its key that is further on in the log: park it again.
    ParkAgain,
}

#[derive(Default)]
struct Inner {
    partitions: HashMap<i32, ParkedKeys>,
    held: HashMap<(i32, Vec<u8>), BTreeMap<i64, oneshot::Sender<Turn>>>,
}

/// Parked-key indexes and held followers of the owned partitions.
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
        let mut inner = self.lock();
        inner.partitions.insert(partition, keys);
        inner.held.retain(|(p, _), _| *p != partition);
    }

    /// Revoked partitions: forget them (held followers see their channel close).
    pub fn remove(&self, partitions: &[i32]) {
        let mut inner = self.lock();
        for p in partitions {
            inner.partitions.remove(p);
        }
        inner.held.retain(|(p, _), _| !partitions.contains(p));
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
        match keys.on_read(key, source_offset, retry_offset) {
            OnRead::Obsolete => Read::Obsolete,
            OnRead::Attempt => Read::Attempt,
            OnRead::ParkAgain => Read::ParkAgain,
            OnRead::Hold => {
                let (tx, rx) = oneshot::channel();
                inner
                    .held
                    .entry((partition, key.to_vec()))
                    .or_default()
                    .insert(source_offset, tx);
                Read::Hold(rx)
            }
        }
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

    /// The parked event is done (delivered, dead-lettered or skipped): the next of its key, if
    /// held, gets its turn.
    pub fn done(&self, partition: i32, key: &[u8], source_offset: i64) {
        let mut inner = self.lock();
        let Some(keys) = inner.partitions.get_mut(&partition) else {
            return;
        };
        let Some(next) = keys.done(key, source_offset) else {
            return;
        };
        let slot = (partition, key.to_vec());
        if let Some(waiting) = inner.held.get_mut(&slot) {
            if let Some(tx) = waiting.remove(&next) {
                let _ = tx.send(Turn::Attempt);
            }
            if waiting.is_empty() {
                inner.held.remove(&slot);
            }
        }
    }

    /// The head of `key` was parked again: its held followers are parked again after it, so
    /// that none waits in memory for a head that is back in the log.
    pub fn park_followers_again(&self, partition: i32, key: &[u8]) {
        let followers = self.lock().held.remove(&(partition, key.to_vec()));
        for tx in followers.into_iter().flat_map(BTreeMap::into_values) {
            let _ = tx.send(Turn::ParkAgain);
        }
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

    #[tokio::test]
    async fn a_held_follower_gets_its_turn_when_its_head_is_done() {
        let parking = Parking::default();
        parking.install(0, ParkedKeys::default());
        assert!(matches!(parking.read(0, b"k", 10, 0, 0), Read::Attempt));
        let Read::Hold(turn) = parking.read(0, b"k", 11, 1, 0) else {
            panic!("the follower waits behind its head");
        };
        assert!(parking.has_parked(0, b"k"));
        parking.done(0, b"k", 10);
        assert_eq!(turn.await.unwrap(), Turn::Attempt);
        parking.done(0, b"k", 11);
        assert!(!parking.has_parked(0, b"k"));
        assert_eq!(parking.backlog().0, 0);
    }

    #[tokio::test]
    async fn followers_are_parked_again_with_their_head() {
        let parking = Parking::default();
        parking.install(0, ParkedKeys::default());
        assert!(matches!(parking.read(0, b"k", 10, 0, 0), Read::Attempt));
        let Read::Hold(turn) = parking.read(0, b"k", 11, 1, 0) else {
            panic!("held");
        };
        parking.parked(0, b"k", 10, 2, 0);
        assert!(
            !parking.is_current(0, b"k", 10, 0),
            "the old record is obsolete"
        );
        parking.park_followers_again(0, b"k");
        assert_eq!(turn.await.unwrap(), Turn::ParkAgain);
    }

    #[tokio::test]
    async fn a_revoked_partition_closes_its_held_followers() {
        let parking = Parking::default();
        parking.install(3, ParkedKeys::default());
        assert!(matches!(parking.read(3, b"k", 1, 0, 0), Read::Attempt));
        let Read::Hold(turn) = parking.read(3, b"k", 2, 1, 0) else {
            panic!("held");
        };
        parking.remove(&[3]);
        assert!(turn.await.is_err());
        assert!(matches!(parking.read(3, b"k", 1, 0, 0), Read::Obsolete));
    }
}
