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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::rawjson::{self, Val};

/// The fields removed before comparing user snapshots, by default (SPEC §3).
pub const DEFAULT_VOLATILE_FIELDS: [&str; 3] = ["updated_at", "version", "last_seen_country"];

/// True when the JSON texts `before` and `after` differ only in the top-level `volatile`
/// fields, under the comparison rules in the module docs. Text that is not JSON is never equal.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_objects_compare_as_maps_like_small_ones() {
        let members = |n: usize, rev: bool| {
            let mut m: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            if rev {
                m.reverse();
            }
            format!("{{{}}}", m.join(","))
        };
        for n in [3, 17, 50_000] {
            let (a, b) = (members(n, false), members(n, true));
            assert!(effectively_equal(&a, &b, &volatile()), "{n} reordered");
            let changed = b.replacen("\"k1\":1", "\"k1\":2", 1);
            assert!(!effectively_equal(&a, &changed, &volatile()), "{n} changed");
            // A repeated key counts with its last value, on both paths.
            let repeated = a.replacen('{', "{\"k1\":9,", 1);
            assert!(
                effectively_equal(&a, &repeated, &volatile()),
                "{n} repeated"
            );
            let shadowed = a.replacen('}', ",\"k1\":9}", 1);
            assert!(
                !effectively_equal(&a, &shadowed, &volatile()),
                "{n} shadowed"
            );
            let volatile_only = a.replacen('}', ",\"version\":3}", 1);
            assert!(
                effectively_equal(&a, &volatile_only, &volatile()),
                "{n} volatile"
            );
        }
    }

    fn volatile() -> Vec<String> {
        DEFAULT_VOLATILE_FIELDS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn eq(a: &str, b: &str) -> bool {
        effectively_equal(a, b, &volatile())
    }

    #[test]
    fn comparison_rules() {
        let cases: &[(&str, &str, &str, bool)] = &[
            (
                "key order ignored",
                r#"{"a":1,"b":{"x":1,"y":2}}"#,
                r#"{"b":{"y":2,"x":1},"a":1}"#,
                true,
            ),
            (
                "volatile fields ignored",
                r#"{"id":"u","updated_at":"1","version":1,"last_seen_country":"FR"}"#,
                r#"{"id":"u","updated_at":"2","version":2,"last_seen_country":"DE"}"#,
                true,
            ),
            (
                "volatile field added",
                r#"{"id":"u"}"#,
                r#"{"id":"u","version":3}"#,
                true,
            ),
            (
                "volatile only at top level",
                r#"{"n":{"version":1}}"#,
                r#"{"n":{"version":2}}"#,
                false,
            ),
            (
                "real change",
                r#"{"id":"u","email":"a"}"#,
                r#"{"id":"u","email":"b"}"#,
                false,
            ),
            (
                "field added",
                r#"{"id":"u"}"#,
                r#"{"id":"u","email":"b"}"#,
                false,
            ),
            (
                "field added as null",
                r#"{"id":"u"}"#,
                r#"{"id":"u","email":null}"#,
                false,
            ),
            (
                "string array is a set",
                r#"{"t":["a","b","a"]}"#,
                r#"{"t":["b","a"]}"#,
                true,
            ),
            (
                "string set differs",
                r#"{"t":["a","b"]}"#,
                r#"{"t":["a","c"]}"#,
                false,
            ),
            (
                "id array is a map",
                r#"{"p":[{"id":"x","on":true},{"id":"y","on":false}]}"#,
                r#"{"p":[{"on":false,"id":"y"},{"id":"x","on":true}]}"#,
                true,
            ),
            (
                "id map value differs",
                r#"{"p":[{"id":"x","on":true}]}"#,
                r#"{"p":[{"id":"x","on":false}]}"#,
                false,
            ),
            (
                "id map key differs",
                r#"{"p":[{"id":"x"}]}"#,
                r#"{"p":[{"id":"z"}]}"#,
                false,
            ),
            (
                "nested id arrays as maps",
                r#"{"c":{"p":[{"id":"x","ch":[{"id":1},{"id":2}]},{"id":"y"}]}}"#,
                r#"{"c":{"p":[{"id":"y"},{"id":"x","ch":[{"id":2},{"id":1}]}]}}"#,
                true,
            ),
            (
                "numbers in order",
                r#"{"n":[1,2]}"#,
                r#"{"n":[2,1]}"#,
                false,
            ),
            (
                "mixed array in order",
                r#"{"n":["a",1]}"#,
                r#"{"n":[1,"a"]}"#,
                false,
            ),
            (
                "objects without id in order",
                r#"{"n":[{"a":1},{"b":1}]}"#,
                r#"{"n":[{"b":1},{"a":1}]}"#,
                false,
            ),
            (
                "numbers as values",
                r#"{"n":1,"m":-0,"k":2.50}"#,
                r#"{"n":1.0,"m":0,"k":25e-1}"#,
                true,
            ),
            (
                "large integers exact",
                r#"{"n":123456789012345678901234567890}"#,
                r#"{"n":123456789012345678901234567891}"#,
                false,
            ),
            ("string is not number", r#"{"n":"1"}"#, r#"{"n":1}"#, false),
            ("empty arrays", r#"{"t":[]}"#, r#"{"t":[]}"#, true),
            (
                "unicode",
                r#"{"name":"Zoë"}"#,
                r#"{"name":"Zo\u00eb"}"#,
                true,
            ),
        ];
        for (name, a, b, expected) in cases {
            assert_eq!(eq(a, b), *expected, "{name}: {a} vs {b}");
            assert_eq!(eq(b, a), *expected, "{name} (swapped): {b} vs {a}");
        }
    }

    #[test]
    fn volatile_list_is_configurable() {
        let a = r#"{"id": "u", "seen": 1, "version": 1}"#;
        let b = r#"{"id": "u", "seen": 2, "version": 2}"#;
        assert!(!effectively_equal(a, b, &volatile()));
        assert!(effectively_equal(a, b, &["seen".into(), "version".into()]));
    }
}
