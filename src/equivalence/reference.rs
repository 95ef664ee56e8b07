//! The tree comparison that [`super::effectively_equal`] replaced, kept as its reference: parse
//! both texts into [`Val`] trees, then compare the trees. Slower (it builds every node of both
//! snapshots), but short enough to read against the rules in the module docs; the tests check
//! that both answer the same on every pair they generate.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::decimal;
use crate::rawjson::{self, Val};

/// The answer [`super::effectively_equal`] must give.
pub fn effectively_equal(before: &str, after: &str, volatile: &[String]) -> bool {
    let (Some(before), Some(after)) = (rawjson::parse(before), rawjson::parse(after)) else {
        return false;
    };
    match (&before, &after) {
        (Val::Obj(b), Val::Obj(a)) => objects_equal(b, a, &|key| volatile.iter().any(|v| v == key)),
        _ => values_equal(&before, &after),
    }
}

fn values_equal(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y || decimal(x).is_some_and(|d| Some(d) == decimal(y)),
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Arr(x), Val::Arr(y)) => arrays_equal(x, y),
        (Val::Obj(x), Val::Obj(y)) => objects_equal(x, y, &|_| false),
        _ => false,
    }
}

type Members<'a> = [(Cow<'a, str>, Val<'a>)];

/// Objects as maps: key order never matters; a repeated key counts with its last value.
/// Linear in the members' count (small objects by search, large ones through maps), so a hostile
/// object with many members costs no more than reading it.
fn objects_equal(a: &Members<'_>, b: &Members<'_>, skip: &dyn Fn(&str) -> bool) -> bool {
    const SMALL: usize = 16;
    if a.len() > SMALL || b.len() > SMALL {
        let (a, b) = (last_values(a, skip), last_values(b, skip));
        return a.len() == b.len()
            && a.iter()
                .all(|(key, va)| b.get(key).is_some_and(|vb| values_equal(va, vb)));
    }
    // Entities are small objects: a linear search beats building maps.
    let last = |m: &Members<'_>, i: usize| !m[i + 1..].iter().any(|(k, _)| *k == m[i].0);
    let kept = |m: &Members<'_>| {
        (0..m.len())
            .filter(|&i| !skip(&m[i].0) && last(m, i))
            .count()
    };
    kept(a) == kept(b)
        && (0..a.len())
            .filter(|&i| !skip(&a[i].0) && last(a, i))
            .all(|i| {
                b.iter()
                    .rev()
                    .find(|(k, _)| *k == a[i].0)
                    .is_some_and(|(_, vb)| values_equal(&a[i].1, vb))
            })
}

/// An object's members as a map, a later copy of a key replacing an earlier one.
fn last_values<'m, 'a>(
    members: &'m Members<'a>,
    skip: &dyn Fn(&str) -> bool,
) -> BTreeMap<&'m str, &'m Val<'a>> {
    members
        .iter()
        .filter(|(key, _)| !skip(key))
        .map(|(key, value)| (&**key, value))
        .collect()
}

fn arrays_equal(a: &[Val<'_>], b: &[Val<'_>]) -> bool {
    if let (Some(x), Some(y)) = (string_set(a), string_set(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (id_map(a), id_map(b)) {
        return x.len() == y.len()
            && x.iter()
                .all(|(id, va)| y.get(id).is_some_and(|vb| values_equal(va, vb)));
    }
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| values_equal(x, y))
}

/// The array as a set, when every item is a string.
fn string_set<'v>(items: &'v [Val<'_>]) -> Option<BTreeSet<&'v str>> {
    items.iter().map(Val::as_str).collect()
}

/// The array as a map keyed by each item's `id`, when every item is an object with an `id` and
/// no id repeats.
fn id_map<'v, 'a>(items: &'v [Val<'a>]) -> Option<BTreeMap<Cow<'v, str>, &'v Val<'a>>> {
    if items.is_empty() {
        return None;
    }
    let mut map = BTreeMap::new();
    for item in items {
        let Val::Obj(_) = item else { return None };
        let id = item.get("id")?;
        if map.insert(id_key(id), item).is_some() {
            return None;
        }
    }
    Some(map)
}

/// A key under which ids that are equal as values collide (`"7"` stays apart from `7`).
/// String ids, by far the common case, are borrowed; other kinds are prefixed with a NUL that
/// no borrowed key starts with.
fn id_key<'v>(id: &'v Val<'_>) -> Cow<'v, str> {
    Cow::Owned(match id {
        Val::Str(s) if !s.starts_with('\0') => return Cow::Borrowed(&**s),
        Val::Str(s) => format!("\0s{s}"),
        Val::Num(n) => match decimal(n) {
            Some((neg, digits, exp)) => format!("\0n{neg}:{digits}e{exp}"),
            None => format!("\0n{n}"),
        },
        other => format!("\0v{other:?}"),
    })
}
