//! Order per key, shared by the pipeline's lanes and by `redrive`: one worker per key at a
//! time, the key's later jobs queued behind it in arrival order.
//!
//! Guarantee: for one key, [`KeyQueues::submit`] hands back a job to start only when no worker
//! runs for the key, and [`KeyQueues::next`] gives the worker the key's jobs in the order they
//! were submitted; the key is idle again once `next` returns `None`.

use std::collections::VecDeque;

use crate::FastHashMap;
use std::hash::Hash;

#[derive(Debug)]
pub struct KeyQueues<K, J> {
    keys: FastHashMap<K, VecDeque<J>>,
}

impl<K, J> Default for KeyQueues<K, J> {
    fn default() -> Self {
        KeyQueues {
            keys: FastHashMap::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, J> KeyQueues<K, J> {
    /// A worker runs for `key`.
    pub fn is_running(&self, key: &K) -> bool {
        self.keys.contains_key(key)
    }

    /// Queues `job` behind the worker of its key; when the key is idle, marks it running and
    /// gives the job back: the caller starts the key's worker with it.
    pub fn submit(&mut self, key: &K, job: J) -> Option<J> {
        match self.keys.get_mut(key) {
            Some(queue) => {
                queue.push_back(job);
                None
            }
            None => {
                self.keys.insert(key.clone(), VecDeque::new());
                Some(job)
            }
        }
    }

    /// The worker of `key` finished a job: the key's next one, or `None` when the key is idle.
    pub fn next(&mut self, key: &K) -> Option<J> {
        let next = self.keys.get_mut(key).and_then(VecDeque::pop_front);
        if next.is_none() {
            self.keys.remove(key);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_key_in_submission_order() {
        let mut queues = KeyQueues::default();
        assert_eq!(queues.submit(&"k", 1), Some(1), "idle: start a worker");
        assert_eq!(queues.submit(&"k", 2), None, "queued behind it");
        assert_eq!(
            queues.submit(&"j", 7),
            Some(7),
            "other keys are independent"
        );
        assert_eq!(queues.submit(&"k", 3), None);
        assert_eq!(queues.next(&"k"), Some(2));
        assert_eq!(queues.next(&"k"), Some(3));
        assert!(queues.is_running(&"k"));
        assert_eq!(queues.next(&"k"), None);
        assert!(!queues.is_running(&"k"), "idle again");
        assert_eq!(queues.submit(&"k", 4), Some(4));
    }
}
