//! Pass 1 of a redrive, as pure data: the index of what the dead-letter topic holds (the newest
//! record of each event, and the records already resolved by an earlier redrive), and the
//! selection of what to deliver from it.
//!
//! Guarantees:
//! - each event id is selected at most once per run, through its newest dead-letter record
//!   (older copies are superseded: a record written back by a redrive carries every attempt);
//! - an event whose newest record is named by a resolution marker is never selected again;
//! - the filters apply to that newest record; `limit` keeps the oldest `dead_lettered_at` first.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};

use crate::deadletter::DeadLetterReason;

/// Where a record sits on the dead-letter topic.
pub type Coordinates = (i32, i64);

/// What pass 1 keeps of a dead-letter record (the record itself is read again in pass 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub event_id: String,
    pub organization_id: String,
    pub reason: DeadLetterReason,
    pub dead_lettered_at: DateTime<Utc>,
    pub at: Coordinates,
    /// Organization and entity: the events of a key are delivered in source order.
    pub key: String,
    /// The source record's partition and offset.
    pub source: Coordinates,
}

impl Entry {
    /// Newer copies sort last: by `dead_lettered_at`, then position.
    fn order(&self) -> (DateTime<Utc>, Coordinates) {
        (self.dead_lettered_at, self.at)
    }
}

/// The selected records of each key, in source order: the order in which pass 2 hands them
/// over, whatever their order on the dead-letter topic (a record written back by an earlier
/// redrive sits after later events of its key there).
pub fn source_order(selected: &[Entry]) -> HashMap<&str, VecDeque<Coordinates>> {
    let mut by_key: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for entry in selected {
        by_key.entry(entry.key.as_str()).or_default().push(entry);
    }
    by_key
        .into_iter()
        .map(|(key, mut entries)| {
            entries.sort_by_key(|e| (e.source, e.dead_lettered_at, e.at));
            (key, entries.iter().map(|e| e.at).collect())
        })
        .collect()
}

/// The dead-letter topic as pass 1 saw it.
#[derive(Debug, Default)]
pub struct Index {
    /// Event id → its newest dead-letter record.
    newest: HashMap<String, Entry>,
    /// Dead-letter records named by a resolution marker.
    resolved: HashSet<Coordinates>,
    pub dead_letters: u64,
    pub markers: u64,
    pub unreadable: u64,
    /// Dead letters in reference form: no body to deliver.
    pub references: u64,
    pub superseded: u64,
}

impl Index {
    pub fn add_dead_letter(&mut self, entry: Entry) {
        self.dead_letters += 1;
        match self.newest.get_mut(&entry.event_id) {
            Some(current) => {
                self.superseded += 1;
                if entry.order() > current.order() {
                    *current = entry;
                }
            }
            None => {
                self.newest.insert(entry.event_id.clone(), entry);
            }
        }
    }

    pub fn add_marker(&mut self, resolves: Coordinates) {
        self.markers += 1;
        self.resolved.insert(resolves);
    }

    pub fn add_reference(&mut self) {
        self.references += 1;
    }

    pub fn add_unreadable(&mut self) {
        self.unreadable += 1;
    }
}

/// Which dead letters an operator asked for; empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub organizations: Vec<String>,
    pub reasons: Vec<DeadLetterReason>,
    /// Inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive.
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
}

impl Filters {
    fn matches(&self, entry: &Entry) -> bool {
        (self.organizations.is_empty() || self.organizations.contains(&entry.organization_id))
            && (self.reasons.is_empty() || self.reasons.contains(&entry.reason))
            && self
                .since
                .is_none_or(|since| entry.dead_lettered_at >= since)
            && self
                .until
                .is_none_or(|until| entry.dead_lettered_at < until)
    }
}

#[derive(Debug, Default)]
pub struct Selection {
    /// Oldest `dead_lettered_at` first.
    pub selected: Vec<Entry>,
    pub already_resolved: u64,
    pub filtered_out: u64,
    pub over_limit: u64,
}

pub fn select(index: Index, filters: &Filters) -> Selection {
    let mut selection = Selection::default();
    let mut candidates = Vec::new();
    for entry in index.newest.into_values() {
        if index.resolved.contains(&entry.at) {
            selection.already_resolved += 1;
        } else if !filters.matches(&entry) {
            selection.filtered_out += 1;
        } else {
            candidates.push(entry);
        }
    }
    candidates.sort_by_key(Entry::order);
    if let Some(limit) = filters.limit {
        if candidates.len() > limit {
            selection.over_limit = (candidates.len() - limit) as u64;
            candidates.truncate(limit);
        }
    }
    selection.selected = candidates;
    selection
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: &str, org: &str, reason: DeadLetterReason, secs: i64, offset: i64) -> Entry {
        Entry {
            event_id: event.to_owned(),
            organization_id: org.to_owned(),
            reason,
            dead_lettered_at: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            at: (0, offset),
            key: format!("{org}\0{event}"),
            source: (0, offset),
        }
    }

    #[test]
    fn a_keys_records_go_in_source_order_whatever_their_place_on_the_topic() {
        use DeadLetterReason::*;
        let mut n = entry("n", "acme", Exhausted, 10, 7); // written back by a redrive
        let mut n1 = entry("n1", "acme", Exhausted, 5, 3);
        let other = entry("x", "acme", Exhausted, 6, 4);
        (n.key, n1.key) = ("acme\0u1".into(), "acme\0u1".into());
        (n.source, n1.source) = ((2, 100), (2, 101));
        let selected = [n1, other, n];
        let order = source_order(&selected);
        assert_eq!(order["acme\0u1"], [(0, 7), (0, 3)]);
        assert_eq!(order["acme\0x"], [(0, 4)]);
    }

    fn ids(selection: &Selection) -> Vec<(&str, i64)> {
        selection
            .selected
            .iter()
            .map(|e| (e.event_id.as_str(), e.at.1))
            .collect()
    }

    #[test]
    fn newest_copy_wins_and_resolved_ones_are_skipped() {
        use DeadLetterReason::*;
        let mut index = Index::default();
        index.add_dead_letter(entry("a", "acme", Exhausted, 0, 0));
        index.add_dead_letter(entry("b", "acme", Exhausted, 1, 1));
        index.add_dead_letter(entry("c", "acme", LaneOverflow, 2, 2));
        // "a" written back by a redrive, then that copy delivered by another redrive.
        index.add_dead_letter(entry("a", "acme", PermanentStatus, 10, 3));
        index.add_marker((0, 3));
        // A marker for a copy that is not the newest any more does not resolve the event.
        index.add_marker((0, 1));
        index.add_dead_letter(entry("b", "acme", Exhausted, 11, 4));
        let selection = select(index, &Filters::default());
        assert_eq!(ids(&selection), [("c", 2), ("b", 4)]);
        assert_eq!(selection.already_resolved, 1);
    }

    #[test]
    fn filters_apply_to_the_newest_copy_and_limit_keeps_the_oldest() {
        use DeadLetterReason::*;
        let mut index = Index::default();
        index.add_dead_letter(entry("a", "acme", Exhausted, 0, 0));
        index.add_dead_letter(entry("b", "globex", Exhausted, 1, 1));
        index.add_dead_letter(entry("c", "acme", PermanentStatus, 2, 2));
        index.add_dead_letter(entry("d", "acme", Exhausted, 3, 3));
        index.add_dead_letter(entry("a", "acme", LaneOverflow, 4, 4));
        assert_eq!(index.superseded, 1);
        let filters = Filters {
            organizations: vec!["acme".into()],
            reasons: vec![Exhausted, PermanentStatus],
            since: Some(DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
            until: Some(DateTime::from_timestamp(1_800_000_004, 0).unwrap()),
            limit: Some(1),
        };
        let selection = select(index, &filters);
        // "a" is lane_overflow now; "b" is globex; of "c" and "d" the oldest is kept.
        assert_eq!(ids(&selection), [("c", 2)]);
        assert_eq!(selection.filtered_out, 2);
        assert_eq!(selection.over_limit, 1);
    }
}
