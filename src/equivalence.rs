//! Effective equality of two entity snapshots (SPEC §3, suppression rule 2).
//!
//! Guarantee: two snapshots compare equal exactly when they are the same JSON value after the
//! volatile top-level fields are removed, where
//! - object key order never matters;
//! - an array whose items are all strings is a set (order and repeats ignored);
//! - an array whose items are all objects with an `id` is a map keyed by `id` (when the ids are
//!   unique; with a repeated id it falls back to order, which is the stricter reading);
//! - any other array is compared in order;
//! - numbers are compared as exact decimal values (`1`, `1.0` and `10e-1` are equal), without
//!   the rounding a float would bring to large integers.
//!
//! How: no tree is built. The comparison walks both texts side by side, and any two values whose
//! texts are byte for byte the same are equal without being read further (most members of two
//! snapshots are). Only values whose texts differ are split into members or items, on buffers
//! shared by the whole comparison. A record's entities come with their top-level members
//! already listed by the record's reading: [`members_effectively_equal`] starts from those, so
//! only the members whose texts differ are read again. `reference` (tests only) is the tree
//! comparison it replaced, and the tests check that all of them give the same answer.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::rawjson::{
    self,
    tape::{tape_into, Node},
};

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

/// The fields removed before comparing user snapshots, by default (SPEC §3).
pub const DEFAULT_VOLATILE_FIELDS: [&str; 3] = ["updated_at", "version", "last_seen_country"];

/// True when the JSON texts `before` and `after` differ only in the top-level `volatile`
/// fields, under the comparison rules in the module docs. Text that is not JSON is never equal.
pub fn effectively_equal(before: &str, after: &str, volatile: &[String]) -> bool {
    // Only to refuse what is not JSON: the comparison itself reads the texts on its tape.
    rawjson::parse(before).is_some()
        && rawjson::parse(after).is_some()
        && effectively_equal_validated(before, after, volatile)
}

/// [`effectively_equal`] for texts already known to be JSON, as the entities of a validated
/// record are: the same answer, without reading both texts once more only to check them. Text
/// that [`rawjson::parse`] refuses gives an answer that means nothing (but never a panic).
pub fn effectively_equal_validated(before: &str, after: &str, volatile: &[String]) -> bool {
    let (before, after) = (trim(before), trim(after));
    if before == after {
        return true;
    }
    let Some(mut comparison) = Comparison::new(before, after) else {
        return false;
    };
    let (a, b) = (0, comparison.split);
    if kind(before) == Kind::Obj && kind(after) == Kind::Obj {
        comparison.objects_equal(a, b, &is_volatile(volatile), 0)
    } else {
        comparison.values_equal(a, b, 0)
    }
}

/// [`effectively_equal_validated`] for two objects given as their top-level members, `(unescaped
/// key, raw value text)` in text order, as [`rawjson::members`] reads them from validated JSON:
/// the same answer, and a member whose text is the same on both sides is not read again (an
/// entity's record already listed them, and most members of two snapshots are unchanged).
pub fn members_effectively_equal(
    before: &[(Cow<'_, str>, &str)],
    after: &[(Cow<'_, str>, &str)],
    volatile: &[String],
) -> bool {
    let skip = is_volatile(volatile);
    let (a, b) = (last_values(before, &skip), last_values(after, &skip));
    // Below the top level nothing is volatile.
    equal_by_key(&a, &b, |x, y| {
        x == y || effectively_equal_validated(x, y, &[])
    })
}

/// Whether a top-level key is one of `volatile`.
fn is_volatile(volatile: &[String]) -> impl Fn(&str) -> bool + '_ {
    move |key| volatile.iter().any(|v| v == key)
}

/// An object's members as a map from key to value, the keys `skip` names left out: a repeated
/// key counts with its last value.
fn last_values<'a, V: Copy>(
    members: &[(Cow<'a, str>, V)],
    skip: &dyn Fn(&str) -> bool,
) -> BTreeMap<Cow<'a, str>, V> {
    members
        .iter()
        .filter(|(key, _)| !skip(key))
        .cloned()
        .collect()
}

/// Two objects' members, by key (see [`last_values`]): the same keys, and `equal` values under
/// each.
fn equal_by_key<K: Ord, V: Copy>(
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    mut equal: impl FnMut(V, V) -> bool,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(key, &x)| b.get(key).is_some_and(|&y| equal(x, y)))
}

/// What a value is, from its first byte (the texts here are valid JSON, without leading space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `null`, `true` or `false`: equal exactly when their texts are.
    Literal,
    Num,
    Str,
    Arr,
    Obj,
}

fn kind(text: &str) -> Kind {
    match text.as_bytes().first() {
        Some(b'"') => Kind::Str,
        Some(b'[') => Kind::Arr,
        Some(b'{') => Kind::Obj,
        Some(b'n' | b't' | b'f') => Kind::Literal,
        _ => Kind::Num,
    }
}

fn trim(text: &str) -> &str {
    text.trim_matches([' ', '\n', '\r', '\t'])
}

/// One comparison: both texts' [`Node`]s in one tape (those of `before` first), and buffers
/// used as stacks: each level appends the members or items it looks at and truncates back when
/// done, so a whole comparison allocates a few buffers, not a node per value.
struct Comparison<'a> {
    before: &'a str,
    after: &'a str,
    nodes: Vec<Node>,
    /// Where the nodes of `after` start.
    split: usize,
    members: Vec<(Cow<'a, str>, usize)>,
    items: Vec<usize>,
    strings: Vec<Cow<'a, str>>,
    ids: Vec<(Cow<'a, str>, usize)>,
}

impl<'a> Comparison<'a> {
    /// `None` when either text is not one JSON value.
    fn new(before: &'a str, after: &'a str) -> Option<Self> {
        // About one node per 14 bytes of entity text: one allocation, no growing.
        let mut nodes = Vec::with_capacity((before.len() + after.len()) / 8 + 8);
        let mut stack = Vec::new();
        tape_into(before, &mut nodes, &mut stack)?;
        let split = nodes.len();
        tape_into(after, &mut nodes, &mut stack)?;
        Some(Comparison {
            before,
            after,
            nodes,
            split,
            members: Vec::with_capacity(32),
            items: Vec::with_capacity(32),
            strings: Vec::with_capacity(32),
            ids: Vec::with_capacity(32),
        })
    }

    fn source(&self, node: usize) -> &'a str {
        if node < self.split {
            self.before
        } else {
            self.after
        }
    }

    fn text(&self, node: usize) -> &'a str {
        self.nodes[node].text(self.source(node))
    }

    /// The key of an object's member, unescaped.
    fn key(&self, node: usize) -> Option<Cow<'a, str>> {
        let raw = self.nodes[node].key(self.source(node));
        if self.nodes[node].key_escaped {
            rawjson::string(raw)
        } else {
            raw.get(1..raw.len().checked_sub(1)?).map(Cow::Borrowed)
        }
    }

    /// A string node's value, unescaped.
    fn string(&self, node: usize) -> Option<Cow<'a, str>> {
        let raw = self.text(node);
        if self.nodes[node].escaped {
            rawjson::string(raw)
        } else {
            raw.get(1..raw.len().checked_sub(1)?).map(Cow::Borrowed)
        }
    }

    /// `depth` only bounds the recursion (valid text is never nested deeper than
    /// [`rawjson::MAX_DEPTH`]).
    fn values_equal(&mut self, a: usize, b: usize, depth: usize) -> bool {
        let (x, y) = (self.text(a), self.text(b));
        if x == y {
            return true;
        }
        if depth > rawjson::MAX_DEPTH {
            return false;
        }
        match (kind(x), kind(y)) {
            (Kind::Num, Kind::Num) => decimal(x).is_some_and(|d| Some(d) == decimal(y)),
            // Texts without escapes that differ are different strings.
            (Kind::Str, Kind::Str) if self.nodes[a].escaped || self.nodes[b].escaped => {
                self.string(a).is_some_and(|x| Some(x) == self.string(b))
            }
            (Kind::Arr, Kind::Arr) => self.arrays_equal(a, b, depth),
            (Kind::Obj, Kind::Obj) => self.objects_equal(a, b, &|_| false, depth),
            _ => false,
        }
    }

    /// Objects as maps: key order never matters; a repeated key counts with its last value.
    fn objects_equal(
        &mut self,
        a: usize,
        b: usize,
        skip: &dyn Fn(&str) -> bool,
        depth: usize,
    ) -> bool {
        let start = self.members.len();
        let pushed = self.push_members(a).and_then(|()| {
            let mid = self.members.len();
            self.push_members(b).map(|()| mid)
        });
        let equal = pushed.is_some_and(|mid| self.members_equal(start, mid, skip, depth));
        self.members.truncate(start);
        equal
    }

    /// Appends the members of object `node` to `members`.
    fn push_members(&mut self, node: usize) -> Option<()> {
        let mut child = node + 1;
        while child < self.nodes[node].next() {
            self.members.push((self.key(child)?, child));
            child = self.nodes[child].next();
        }
        Some(())
    }

    /// `members[start..mid]` against `members[mid..]`. Linear in the members' count (small
    /// objects by search, large ones through maps), so a hostile object with many members costs
    /// no more than reading it.
    fn members_equal(
        &mut self,
        start: usize,
        mid: usize,
        skip: &dyn Fn(&str) -> bool,
        depth: usize,
    ) -> bool {
        const SMALL: usize = 16;
        let end = self.members.len();
        if mid - start > SMALL || end - mid > SMALL {
            let a = last_values(&self.members[start..mid], skip);
            let b = last_values(&self.members[mid..end], skip);
            return equal_by_key(&a, &b, |x, y| self.values_equal(x, y, depth + 1));
        }
        // Entities are small objects: a linear search beats building maps.
        let kept = |m: &[(Cow<'_, str>, usize)], i: usize| {
            !skip(&m[i].0) && !m[i + 1..].iter().any(|(k, _)| *k == m[i].0)
        };
        let count = |m: &[(Cow<'_, str>, usize)]| (0..m.len()).filter(|&i| kept(m, i)).count();
        if count(&self.members[start..mid]) != count(&self.members[mid..end]) {
            return false;
        }
        for i in 0..mid - start {
            let (a, b) = (&self.members[start..mid], &self.members[mid..end]);
            if !kept(a, i) {
                continue;
            }
            let Some(&(_, vb)) = b.iter().rev().find(|(k, _)| *k == a[i].0) else {
                return false;
            };
            if !self.values_equal(a[i].1, vb, depth + 1) {
                return false;
            }
        }
        true
    }

    /// As sets of strings, as maps by id, or in order, whichever the module docs' rules pick.
    fn arrays_equal(&mut self, a: usize, b: usize, depth: usize) -> bool {
        let start = self.items.len();
        let mut child = a + 1;
        while child < self.nodes[a].next() {
            self.items.push(child);
            child = self.nodes[child].next();
        }
        let mid = self.items.len();
        let mut child = b + 1;
        while child < self.nodes[b].next() {
            self.items.push(child);
            child = self.nodes[child].next();
        }
        let equal = self.items_equal(start, mid, depth);
        self.items.truncate(start);
        equal
    }

    /// `items[start..mid]` against `items[mid..]`.
    fn items_equal(&mut self, start: usize, mid: usize, depth: usize) -> bool {
        let end = self.items.len();
        let strings =
            |range: &[usize]| range.iter().all(|&item| kind(self.text(item)) == Kind::Str);
        if strings(&self.items[start..mid]) && strings(&self.items[mid..end]) {
            return self.string_sets_equal(start, mid);
        }
        let ids = self.ids.len();
        if self.push_id_map(start, mid).is_some() {
            if let Some(ids_mid) = self.push_id_map(mid, end) {
                let equal = self.id_maps_equal(ids, ids_mid, depth);
                self.ids.truncate(ids);
                return equal;
            }
        }
        self.ids.truncate(ids);
        mid - start == end - mid
            && (0..mid - start).all(|i| {
                let (x, y) = (self.items[start + i], self.items[mid + i]);
                self.values_equal(x, y, depth + 1)
            })
    }

    fn string_sets_equal(&mut self, start: usize, mid: usize) -> bool {
        let base = self.strings.len();
        let mut decoded = true;
        for i in start..self.items.len() {
            match self.string(self.items[i]) {
                Some(s) => self.strings.push(s),
                None => {
                    decoded = false;
                    break;
                }
            }
        }
        let equal = decoded && {
            let (a, b) = self.strings[base..].split_at_mut(mid - start);
            let (na, nb) = (sort_unique(a), sort_unique(b));
            a[..na] == b[..nb]
        };
        self.strings.truncate(base);
        equal
    }

    /// Appends the items `items[from..to]` to `ids` keyed by their ids, sorted, and returns where
    /// they start; `None` (with `ids` left for the caller to truncate) unless every item is an
    /// object with an `id`, no id repeats, and there is at least one item.
    fn push_id_map(&mut self, from: usize, to: usize) -> Option<usize> {
        if from == to {
            return None;
        }
        let base = self.ids.len();
        for i in from..to {
            let item = self.items[i];
            if kind(self.text(item)) != Kind::Obj {
                return None;
            }
            // The last `id` member counts.
            let mut id = None;
            let mut child = item + 1;
            while child < self.nodes[item].next() {
                let node = &self.nodes[child];
                let is_id = if node.key_escaped {
                    self.key(child).is_some_and(|key| key == "id")
                } else {
                    node.key(self.source(child)) == "\"id\""
                };
                if is_id {
                    id = Some(child);
                }
                child = self.nodes[child].next();
            }
            let id = id?;
            self.ids.push((self.id_key(id)?, item));
        }
        let ids = &mut self.ids[base..];
        ids.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        if ids.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return None;
        }
        Some(base)
    }

    /// A key under which ids that are equal as values collide (`"7"` stays apart from `7`).
    /// String ids, by far the common case, are borrowed; other kinds are prefixed with a NUL that
    /// no borrowed key starts with. The same keys as the tree comparison's: an id that is neither a
    /// string nor a number is keyed by its tree.
    fn id_key(&self, node: usize) -> Option<Cow<'a, str>> {
        let id = self.text(node);
        Some(Cow::Owned(match kind(id) {
            Kind::Str => {
                let s = self.string(node)?;
                if !s.starts_with('\0') {
                    return Some(s);
                }
                format!("\0s{s}")
            }
            Kind::Num => match decimal(id) {
                Some((neg, digits, exp)) => format!("\0n{neg}:{digits}e{exp}"),
                None => format!("\0n{id}"),
            },
            _ => format!("\0v{:?}", rawjson::parse(id)?),
        }))
    }

    /// `ids[start..mid]` against `ids[mid..]`, both sorted by id without repeats.
    fn id_maps_equal(&mut self, start: usize, mid: usize, depth: usize) -> bool {
        let end = self.ids.len();
        if mid - start != end - mid
            || (0..mid - start).any(|i| self.ids[start + i].0 != self.ids[mid + i].0)
        {
            return false;
        }
        (0..mid - start).all(|i| {
            let (x, y) = (self.ids[start + i].1, self.ids[mid + i].1);
            self.values_equal(x, y, depth + 1)
        })
    }
}

/// Sorts the strings and moves one of each to the front; returns how many there are.
fn sort_unique(strings: &mut [Cow<'_, str>]) -> usize {
    strings.sort_unstable();
    let mut unique = 0;
    for i in 0..strings.len() {
        if unique == 0 || strings[i] != strings[unique - 1] {
            strings.swap(unique, i);
            unique += 1;
        }
    }
    unique
}

/// A JSON number's text as exact `(negative, significant digits, exponent)`, canonical so that
/// equal values have equal triples. Zero is `(false, "", 0)`.
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = int.chars().chain(frac.chars()).collect();
    let mut exp = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
    let trimmed = digits.trim_start_matches('0').len();
    digits.drain(..digits.len() - trimmed);
    while digits.ends_with('0') {
        digits.pop();
        exp = exp.checked_add(1)?;
    }
    if digits.is_empty() {
        return Some((false, digits, 0));
    }
    Some((neg, digits, exp))
}
