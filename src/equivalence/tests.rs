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

/// The comparison against the tree comparison it replaced, on many generated pairs: two
/// spellings of one value (keys, string sets and id arrays reordered, strings repeated, numbers
/// and strings spelled differently, shadowed keys, volatile fields), one value against a changed
/// one, text that is not JSON, and nesting around the depth limit. Deterministic: a failure
/// names its seed.
#[test]
fn agrees_with_the_tree_comparison_on_generated_pairs() {
    let volatile = volatile();
    let (mut equal, mut different, mut members_compared) = (0, 0, 0);
    for seed in 0..40_000u64 {
        let mut rng = Rng(seed);
        let (a, b) = pair(&mut rng);
        let expected = reference::effectively_equal(&a, &b, &volatile);
        assert_eq!(
            effectively_equal(&a, &b, &volatile),
            expected,
            "seed {seed}:\n{a}\n{b}"
        );
        if rawjson::parse(&a).is_some() && rawjson::parse(&b).is_some() {
            assert_eq!(
                effectively_equal_validated(&a, &b, &volatile),
                expected,
                "validated, seed {seed}:\n{a}\n{b}"
            );
            if let (Some(ma), Some(mb)) = (rawjson::members(&a), rawjson::members(&b)) {
                members_compared += 1;
                assert_eq!(
                    members_effectively_equal(&ma, &mb, &volatile),
                    expected,
                    "members, seed {seed}:\n{a}\n{b}"
                );
            }
        }
        if expected {
            equal += 1;
        } else {
            different += 1;
        }
    }
    // Both answers are common: the pairs test the rules, not one side of them.
    assert!(
        equal > 10_000 && different > 10_000,
        "{equal} equal, {different} different"
    );
    // Most pairs are objects: the comparison by members is checked on them all.
    assert!(members_compared > 20_000, "{members_compared} by members");
}

/// SplitMix64: a deterministic generator, enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A generated JSON value, which both texts of a pair spell out.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    /// The exact value `digits` × 10^`exp`; `digits` canonical (no leading or trailing zeros,
    /// empty for zero).
    Num {
        neg: bool,
        digits: String,
        exp: i32,
    },
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

const KEYS: [&str; 10] = [
    "id",
    "a",
    "b",
    "name",
    "é",
    "version",
    "updated_at",
    "last_seen_country",
    "k\"q",
    "",
];
const STRINGS: [&str; 10] = [
    "a",
    "b",
    "c",
    "é",
    "\0x",
    "x\"y",
    "back\\slash",
    "",
    "tab\t",
    "😀",
];

fn pair(rng: &mut Rng) -> (String, String) {
    match rng.below(20) {
        // Deep nesting around the limit, the same or changed inside.
        0 => {
            let depth = 95 + rng.below(10);
            let inner = gen(rng, 1);
            let changed = if rng.chance(50) {
                inner.clone()
            } else {
                mutate(rng, &inner)
            };
            (nest(rng, depth, &inner), nest(rng, depth, &changed))
        }
        // Text that is not JSON, on one side or both (even the same text).
        1 | 2 => {
            let value = top(rng);
            let a = render(rng, &value);
            let b = if rng.chance(30) {
                a.clone()
            } else {
                render(rng, &value)
            };
            let a = corrupt(rng, &a);
            let b = if rng.chance(50) { corrupt(rng, &b) } else { b };
            (a, b)
        }
        // Not an object at the top.
        3 => {
            let value = gen(rng, 3);
            let other = if rng.chance(50) {
                value.clone()
            } else {
                mutate(rng, &value)
            };
            (render(rng, &value), render(rng, &other))
        }
        // One value in two spellings, or a value and a changed one.
        _ => {
            let value = top(rng);
            let other = if rng.chance(55) {
                value.clone()
            } else {
                mutate(rng, &value)
            };
            (render_top(rng, &value), render_top(rng, &other))
        }
    }
}

/// An entity-like object.
fn top(rng: &mut Rng) -> J {
    let mut members = vec![("id".to_string(), J::Str(rng.pick(&STRINGS).to_string()))];
    for _ in 0..rng.below(6) {
        members.push((rng.pick(&KEYS).to_string(), gen(rng, 3)));
    }
    J::Obj(members)
}

fn gen(rng: &mut Rng, depth: usize) -> J {
    let leaf = depth == 0 || rng.chance(35);
    match if leaf { rng.below(4) } else { 4 + rng.below(5) } {
        0 => J::Null,
        1 => J::Bool(rng.chance(50)),
        2 => number(rng),
        3 => J::Str(rng.pick(&STRINGS).to_string()),
        // A string array: a set.
        4 | 5 => J::Arr(
            (0..rng.below(5))
                .map(|_| J::Str(rng.pick(&STRINGS).to_string()))
                .collect(),
        ),
        // An id-keyed array: a map, unless an id repeats or an item has none.
        6 => J::Arr(
            (0..1 + rng.below(4))
                .map(|_| {
                    let mut members = Vec::new();
                    if !rng.chance(5) {
                        members.push(("id".to_string(), id(rng, depth)));
                    }
                    for _ in 0..rng.below(3) {
                        members.push((rng.pick(&KEYS).to_string(), gen(rng, depth - 1)));
                    }
                    J::Obj(members)
                })
                .collect(),
        ),
        // Any other array: in order.
        7 => J::Arr((0..rng.below(4)).map(|_| gen(rng, depth - 1)).collect()),
        _ => J::Obj(
            (0..rng.below(5))
                .map(|_| (rng.pick(&KEYS).to_string(), gen(rng, depth - 1)))
                .collect(),
        ),
    }
}

fn id(rng: &mut Rng, depth: usize) -> J {
    match rng.below(10) {
        0 | 1 => number(rng),
        2 => J::Null,
        3 => gen(rng, depth.saturating_sub(1).min(1)),
        _ => J::Str(rng.pick(&["x", "y", "z", "7", "\0s", "é"]).to_string()),
    }
}

fn number(rng: &mut Rng) -> J {
    let digits = match rng.below(6) {
        0 => String::new(),
        1 => "123456789012345678901234567891".to_string(),
        2 => "9007199254740993".to_string(),
        _ => rng.pick(&["1", "7", "25", "101"]).to_string(),
    };
    J::Num {
        neg: !digits.is_empty() && rng.chance(20),
        exp: if digits.is_empty() {
            0
        } else {
            rng.below(5) as i32 - 2
        },
        digits,
    }
}

/// The value with one real change somewhere (which may still compare equal: a changed volatile
/// field, a repeated string added to a set).
fn mutate(rng: &mut Rng, value: &J) -> J {
    match value {
        J::Arr(items) if !items.is_empty() && rng.chance(70) => {
            let mut items = items.clone();
            let i = rng.below(items.len());
            match rng.below(4) {
                0 => {
                    items.remove(i);
                }
                1 => items.push(items[i].clone()),
                _ => items[i] = mutate(rng, &items[i]),
            }
            J::Arr(items)
        }
        J::Obj(members) if !members.is_empty() && rng.chance(75) => {
            let mut members = members.clone();
            let i = rng.below(members.len());
            match rng.below(5) {
                0 => {
                    members.remove(i);
                }
                1 => members.push((rng.pick(&KEYS).to_string(), gen(rng, 1))),
                _ => members[i].1 = mutate(rng, &members[i].1),
            }
            J::Obj(members)
        }
        J::Num { neg, digits, exp } if rng.chance(50) => J::Num {
            neg: *neg,
            digits: digits.clone(),
            exp: exp + 1,
        },
        J::Str(s) if rng.chance(50) => J::Str(format!("{s}x")),
        J::Bool(b) => J::Bool(!b),
        _ => gen(rng, 2),
    }
}

/// The top-level object with volatile fields added or changed, in any spelling.
fn render_top(rng: &mut Rng, value: &J) -> String {
    let J::Obj(members) = value else {
        return render(rng, value);
    };
    let mut members = members.clone();
    for key in ["version", "updated_at", "last_seen_country"] {
        if rng.chance(40) {
            members.push((key.to_string(), gen(rng, 1)));
        }
    }
    render(rng, &J::Obj(members))
}

fn render(rng: &mut Rng, value: &J) -> String {
    let mut out = String::new();
    write(rng, value, &mut out);
    out
}

/// One spelling of the value, among the many that compare equal.
fn write(rng: &mut Rng, value: &J, out: &mut String) {
    space(rng, out);
    match value {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num { neg, digits, exp } => spell_number(rng, *neg, digits, *exp, out),
        J::Str(s) => spell_string(rng, s, out),
        J::Arr(items) => {
            let mut items = items.clone();
            if items.iter().all(|item| matches!(item, J::Str(_))) {
                // A set: any order, any repeats.
                if !items.is_empty() && rng.chance(30) {
                    let i = rng.below(items.len());
                    items.push(items[i].clone());
                }
                shuffle(rng, &mut items);
            } else if items.iter().all(|item| matches!(item, J::Obj(_))) && rng.chance(70) {
                shuffle(rng, &mut items);
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(rng, item, out);
            }
            space(rng, out);
            out.push(']');
        }
        J::Obj(members) => {
            // Any order, but copies of a repeated key keep theirs: the last one counts.
            let mut order: Vec<usize> = (0..members.len()).collect();
            shuffle(rng, &mut order);
            for i in 0..order.len() {
                for j in i + 1..order.len() {
                    if members[order[i]].0 == members[order[j]].0 && order[i] > order[j] {
                        order.swap(i, j);
                    }
                }
            }
            let mut members: Vec<(String, J)> = order.iter().map(|&i| members[i].clone()).collect();
            if !members.is_empty() && rng.chance(15) {
                // A shadowed copy of a key, before the one that counts.
                let key = members[rng.below(members.len())].0.clone();
                members.insert(0, (key, gen(rng, 1)));
            }
            out.push('{');
            for (i, (key, member)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                space(rng, out);
                spell_string(rng, key, out);
                space(rng, out);
                out.push(':');
                write(rng, member, out);
            }
            space(rng, out);
            out.push('}');
        }
    }
    space(rng, out);
}

fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

fn space(rng: &mut Rng, out: &mut String) {
    if rng.chance(10) {
        out.push_str(rng.pick(&[" ", "\n", "\t", "\r\n  "]));
    }
}

/// `digits` × 10^`exp` as JSON: with or without a point, an exponent, trailing zeros.
fn spell_number(rng: &mut Rng, neg: bool, digits: &str, exp: i32, out: &mut String) {
    if neg || (digits.is_empty() && rng.chance(20)) {
        out.push('-');
    }
    if digits.is_empty() {
        out.push_str(rng.pick(&["0", "0.0", "0e5", "0.000", "0E-3"]));
        return;
    }
    let zeros = rng.below(3);
    let mantissa = format!("{digits}{}", "0".repeat(zeros));
    let exp = exp - zeros as i32;
    // A point after `point` digits moves the exponent by the digits after it.
    let point = 1 + rng.below(mantissa.len());
    let exp = exp + (mantissa.len() - point) as i32;
    out.push_str(&mantissa[..point]);
    if point < mantissa.len() {
        out.push('.');
        out.push_str(&mantissa[point..]);
    }
    if exp > 0 && point == mantissa.len() && rng.chance(40) {
        out.push_str(&"0".repeat(exp as usize));
    } else if exp != 0 || rng.chance(20) {
        out.push_str(rng.pick(&["e", "E", "e+"][..if exp < 0 { 2 } else { 3 }]));
        out.push_str(&exp.to_string());
    }
}

/// The string as JSON, each character plain or escaped at random.
fn spell_string(rng: &mut Rng, s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let escape = rng.chance(20);
        match c {
            '"' | '\\' if !escape => {
                out.push('\\');
                out.push(c);
            }
            '\t' if !escape => out.push_str("\\t"),
            c if escape || c < ' ' || c == '"' || c == '\\' => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The value inside `depth` arrays or objects.
fn nest(rng: &mut Rng, depth: usize, inner: &J) -> String {
    let mut out = String::new();
    let objects: Vec<bool> = (0..depth).map(|_| rng.chance(30)).collect();
    for &object in &objects {
        out.push_str(if object { "{\"a\":" } else { "[" });
    }
    write(rng, inner, &mut out);
    for &object in objects.iter().rev() {
        out.push(if object { '}' } else { ']' });
    }
    out
}

/// The text made not JSON, most of the time: cut short, or a piece put in or taken out.
fn corrupt(rng: &mut Rng, text: &str) -> String {
    let boundaries: Vec<usize> = (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    let at = rng.pick(&boundaries);
    match rng.below(4) {
        0 => text[..at].to_string(),
        1 => {
            let end = boundaries
                [(boundaries.iter().position(|&i| i == at).unwrap() + 1).min(boundaries.len() - 1)];
            format!("{}{}", &text[..at], &text[end..])
        }
        _ => {
            let piece = rng.pick(&[
                "{", "}", "[", "]", ",", ":", "\"", "\\", "x", "1", " ", "\\u12", "\t", "nul",
                "\\ud800", "-", ".", "e",
            ]);
            format!("{}{piece}{}", &text[..at], &text[at..])
        }
    }
}
