//! Fast reads over JSON text that serde_json has already validated (a [`RawValue`]), and one
//! strict read of a whole record that nobody has validated yet ([`scan_record`]).
//!
//! Guarantees:
//! - Every function here is total and never panics on any input, and none recurses on the
//!   input's nesting: hostile depth cannot overflow the stack.
//! - [`members`] never truncates: it returns *every* top-level member of an object, at any
//!   nesting depth of their values, or `None`. A field check built on it sees the whole object.
//! - [`check_structure`] refuses what a strict reader would refuse although the syntax passed
//!   serde_json's raw reading: nesting deeper than [`MAX_DEPTH`] anywhere, and lone UTF-16
//!   surrogates in `\u` escapes. The pure core calls it once per record, so what it accepts a full
//!   `serde_json::Value` reading accepts too, and reads the same.
//! - [`scan_record`] accepts a record only when serde_json's reading and [`check_structure`]
//!   would both accept it, looking at every byte; what it refuses goes the slow way, which says
//!   why. It may refuse more than they do (then the record is only read more slowly), never less.
//!
//! The pure core uses it to look into entities without building a tree: top-level members of an
//! object, and for comparisons a flat [`tape`] of every value's span, read in one pass. A
//! borrowed value tree ([`parse`]), with numbers kept as their exact text, remains for the rare
//! value that must be read whole.
//!
//! [`RawValue`]: serde_json::value::RawValue

use std::borrow::Cow;

pub mod tape;

/// A borrowed JSON value. Numbers keep their text; strings are borrowed unless they contain
/// escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Num(&'a str),
    Str(Cow<'a, str>),
    Arr(Vec<Val<'a>>),
    /// Members in text order (duplicate keys are impossible: validation rejects them upstream
    /// only for the record itself, so comparisons treat the last one as the value).
    Obj(Vec<(Cow<'a, str>, Val<'a>)>),
}

impl<'a> Val<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Val<'a>> {
        match self {
            Val::Obj(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Parses JSON text into a borrowed tree; `None` if it is not valid JSON.
pub fn parse(text: &str) -> Option<Val<'_>> {
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    let value = p.value(0)?;
    p.ws();
    (p.i == p.b.len()).then_some(value)
}

/// The top-level members of a JSON object, as `(key, raw value text)`, keys unescaped, in
/// text order (a repeated key appears each time). `None` when the text is not one well-formed
/// object: never a partial list.
pub fn members(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    p.ws();
    if !p.eat(b'{') {
        return None;
    }
    p.ws();
    if !p.eat(b'}') {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            if !p.eat(b':') {
                return None;
            }
            p.ws();
            let start = p.i;
            p.skip()?;
            out.push((key, &text[start..p.i]));
            p.ws();
            if p.eat(b',') {
                continue;
            }
            if p.eat(b'}') {
                break;
            }
            return None;
        }
    }
    p.ws();
    (p.i == p.b.len()).then_some(out)
}

/// Why [`check_structure`] refuses a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A `\u` escape of a UTF-16 surrogate without its pair: no Unicode text has it.
    LoneSurrogate,
    /// A number beyond the range of a 64-bit float (a full reading refuses it).
    NumberOutOfRange,
    /// Not JSON text at all (an unterminated string or bracket).
    Broken,
}

/// One pass over JSON text that serde_json has validated, refusing what its raw reading lets
/// through but a full reading would not: see [`Malformed`]. Linear time, constant memory.
pub fn check_structure(text: &str) -> Result<(), Malformed> {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => i = end_of_string(b, i + 1)? + 1,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Malformed::TooDeep);
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.checked_sub(1).ok_or(Malformed::Broken)?;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                number_in_range(&text[start..i])?;
            }
            _ => i += 1,
        }
    }
    if depth == 0 {
        Ok(())
    } else {
        Err(Malformed::Broken)
    }
}

/// A number token a full reading accepts: it fits a 64-bit float (short plain ones always do).
fn number_in_range(token: &str) -> Result<(), Malformed> {
    let plain = token.len() <= 300 && !token.contains(['e', 'E']);
    if plain || token.parse::<f64>().is_ok_and(f64::is_finite) {
        Ok(())
    } else {
        Err(Malformed::NumberOutOfRange)
    }
}

/// From just inside a string at `i`, the index of its closing quote; checks `\u` surrogates.
fn end_of_string(b: &[u8], mut i: usize) -> Result<usize, Malformed> {
    // A high surrogate seen just before, waiting for its low half.
    let mut pending_high = false;
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', b.get(i..).unwrap_or_default())
            .ok_or(Malformed::Broken)?;
        if pending_high && at != i {
            return Err(Malformed::LoneSurrogate);
        }
        if b[at] == b'"' {
            return if pending_high {
                Err(Malformed::LoneSurrogate)
            } else {
                Ok(at)
            };
        }
        match b.get(at + 1) {
            Some(b'u') => {
                let unit = b
                    .get(at + 2..at + 6)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                    .ok_or(Malformed::Broken)?;
                match (pending_high, unit) {
                    (false, 0xD800..=0xDBFF) => pending_high = true,
                    (true, 0xDC00..=0xDFFF) => pending_high = false,
                    (false, 0xDC00..=0xDFFF) | (true, _) => return Err(Malformed::LoneSurrogate),
                    (false, _) => {}
                }
                i = at + 6;
            }
            Some(_) if pending_high => return Err(Malformed::LoneSurrogate),
            Some(_) => i = at + 2,
            None => return Err(Malformed::Broken),
        }
    }
}

/// One top-level member of a record, as [`scan_record`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopMember<'a> {
    /// The key; [`scan_record`] takes no record whose top-level keys hold escapes.
    pub key: &'a str,
    /// The value's exact text.
    pub value: &'a str,
    /// When the value is an object: its own members, what [`members`] returns for it.
    pub members: Option<Vec<(Cow<'a, str>, &'a str)>>,
}

/// The work of three passes in one, for a record in the common, plain form: serde_json's
/// reading of the syntax, [`check_structure`], and [`members`] on each object at the top level.
///
/// `Some` only for one JSON object that strict JSON syntax accepts (so serde_json does too),
/// that [`check_structure`] accepts, and whose top-level keys hold no escapes; then it returns
/// every top-level member in text order. `None` otherwise, never a partial list: the caller
/// reads such a record the slow way, which names what is wrong with it. So this pass only ever
/// accepts less than those three together, never more, and it looks at every byte.
pub fn scan_record(text: &str) -> Option<Vec<TopMember<'_>>> {
    let mut p = Strict {
        b: text.as_bytes(),
        i: 0,
    };
    p.ws();
    if p.b.get(p.i) != Some(&b'{') {
        return None;
    }
    // Sized for a record's usual members and an entity's, so that neither grows as it fills.
    let mut top = Vec::with_capacity(8);
    // `objects[d]`: the open container at depth `d` is an object. A byte each, not a bit of a
    // `u128`: a 128-bit shift and mask cost more than a load, and this is read at every value.
    let mut objects = [false; MAX_DEPTH + 1];
    let mut depth = 0usize;
    // The member being read at depth 1 (the record's) and at depth 2 (an object value's).
    let (mut top_key, mut top_start) = ("", 0);
    let (mut key, mut start) = (Cow::Borrowed(""), 0);
    let mut inner: Option<Vec<(Cow<'_, str>, &str)>> = None;
    'value: loop {
        p.ws();
        match depth {
            1 => top_start = p.i,
            2 => start = p.i,
            _ => {}
        }
        match *p.b.get(p.i)? {
            open @ (b'{' | b'[') => {
                p.i += 1;
                depth += 1;
                if depth > MAX_DEPTH {
                    return None;
                }
                let object = open == b'{';
                objects[depth] = object;
                if depth == 2 && object {
                    inner = Some(Vec::with_capacity(16));
                }
                p.ws();
                if !p.eat(if object { b'}' } else { b']' }) {
                    if object {
                        p.key(text, depth, &mut top_key, &mut key)?;
                    }
                    continue 'value;
                }
                depth -= 1;
            }
            b'"' => {
                p.string()?;
            }
            b't' => p.literal(b"true")?,
            b'f' => p.literal(b"false")?,
            b'n' => p.literal(b"null")?,
            _ => p.number(text)?,
        }
        // A value ended, inside the container at `depth`; so may the containers around it.
        loop {
            match depth {
                0 => break 'value,
                1 => top.push(TopMember {
                    key: top_key,
                    value: &text[top_start..p.i],
                    members: inner.take(),
                }),
                2 if objects[2] => {
                    if let Some(inner) = &mut inner {
                        inner.push((std::mem::take(&mut key), &text[start..p.i]));
                    }
                }
                _ => {}
            }
            p.ws();
            let object = objects[depth];
            match p.b.get(p.i)? {
                b',' => {
                    p.i += 1;
                    if object {
                        p.key(text, depth, &mut top_key, &mut key)?;
                    }
                    continue 'value;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return None,
            }
            p.i += 1;
            depth -= 1;
        }
    }
    p.ws();
    (p.i == p.b.len()).then_some(top)
}

/// The strict reader behind [`scan_record`]: it refuses (`None`) whatever strict JSON, serde_json
/// or [`check_structure`] would refuse, and, to stay simple, a little more.
struct Strict<'a> {
    b: &'a [u8],
    i: usize,
}

impl Strict<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// A member's key and its colon. Keeps the record's keys (depth 1), which must be plain, and
    /// its object values' keys (depth 2), unescaped.
    #[inline(always)]
    fn key<'t>(
        &mut self,
        text: &'t str,
        depth: usize,
        top_key: &mut &'t str,
        key: &mut Cow<'t, str>,
    ) -> Option<()> {
        self.ws();
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i;
        let escaped = self.string()?;
        match (depth, escaped) {
            (1, false) => *top_key = &text[start + 1..self.i - 1],
            (1, true) => return None,
            (2, false) => *key = Cow::Borrowed(&text[start + 1..self.i - 1]),
            (2, true) => *key = string(&text[start..self.i])?,
            _ => {}
        }
        self.ws();
        self.eat(b':').then_some(())
    }

    /// A string, from its opening quote to just past its closing one: no control characters,
    /// only JSON's escapes, every `\u` surrogate paired. Tells whether it holds escapes.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        self.i += 1;
        let mut escaped = false;
        loop {
            self.i = plain_run_end(self.b, self.i);
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return None,
            }
        }
    }

    /// One escape, from its backslash.
    fn escape(&mut self) -> Option<()> {
        match *self.b.get(self.i + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
            b'u' => {
                let unit = self.hex4(self.i + 2)?;
                self.i += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        if self.b.get(self.i..self.i + 2)? != b"\\u" {
                            return None;
                        }
                        let low = self.hex4(self.i + 2)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        self.i += 6;
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => {}
                }
            }
            _ => return None,
        }
        Some(())
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        self.b
            .get(at..at + 4)?
            .iter()
            .try_fold(0, |unit, &h| Some(unit << 4 | char::from(h).to_digit(16)?))
    }

    /// A number: JSON's grammar, the token [`check_structure`] would see, in its range.
    fn number(&mut self, text: &str) -> Option<()> {
        let start = self.i;
        self.eat(b'-');
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            self.digits_one_or_more()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.digits_one_or_more()?;
        }
        if let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.b.get(self.i) {
            return None;
        }
        number_in_range(&text[start..self.i]).ok()
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn digits_one_or_more(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

/// From `i`, the index of the first byte that ends a plain run inside a string: a quote, a
/// backslash or a control character; `b.len()` when there is none. Eight bytes at a time (one
/// word, three zero-byte tests), then the last few one by one.
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // The high bit of each byte of `w` that is zero. A borrow can also flag a byte above a zero
    // byte, never below one: the lowest flag is exact, and it is the only one read.
    let zero_bytes = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    while let Some(word) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // Bytes below 0x20 (as for zeros: the lowest flag is exact; bytes >= 0x80 never flag).
        let control = w.wrapping_sub(0x20 * ONES) & !w & HIGHS;
        let ends = control
            | zero_bytes(w ^ (u64::from(b'"') * ONES))
            | zero_bytes(w ^ (u64::from(b'\\') * ONES));
        if ends != 0 {
            // Little-endian: the lowest flagged byte is the first in the text.
            return i + (ends.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let Some(rest) = b.get(i..) else {
        return b.len();
    };
    i + rest
        .iter()
        .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
        .unwrap_or(rest.len())
}

/// Decodes a raw JSON string value (`"..."`), `None` if `raw` is not one.
pub fn string(raw: &str) -> Option<Cow<'_, str>> {
    let mut p = Parser {
        s: raw,
        b: raw.as_bytes(),
        i: 0,
    };
    let s = p.string()?;
    (p.i == p.b.len()).then_some(s)
}

/// Arrays and objects nested deeper than this, counting the outermost, are refused by
/// [`check_structure`] and by [`parse`]. Below serde_json's own limit (127 levels), so every
/// text accepted here is also readable as a `serde_json::Value`.
pub const MAX_DEPTH: usize = 100;

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.b[self.i..]
            .starts_with(word.as_bytes())
            .then(|| self.i += word.len())
    }

    /// From inside a string, moves to its closing quote; tells whether it saw an escape.
    #[inline(always)]
    fn skip_to_closing_quote(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            self.i = plain_run_end(self.b, self.i);
            match *self.b.get(self.i)? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                // A control character: validated text has none, and it ends nothing.
                _ => self.i += 1,
            }
        }
    }

    /// A string token; borrowed when it has no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        let escaped = self.skip_to_closing_quote()?;
        let end = self.i;
        self.i += 1;
        if escaped {
            serde_json::from_str::<String>(self.s.get(start - 1..end + 1)?)
                .ok()
                .map(Cow::Owned)
        } else {
            self.s.get(start..end).map(Cow::Borrowed)
        }
    }

    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    fn value(&mut self, depth: usize) -> Option<Val<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.b.get(self.i)? {
            b'n' => self.literal("null").map(|_| Val::Null),
            b't' => self.literal("true").map(|_| Val::Bool(true)),
            b'f' => self.literal("false").map(|_| Val::Bool(false)),
            b'"' => self.string().map(Val::Str),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b']') {
                    return Some(Val::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    return self.eat(b']').then_some(Val::Arr(items));
                }
            }
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.eat(b'}') {
                    return Some(Val::Obj(members));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    if !self.eat(b':') {
                        return None;
                    }
                    members.push((key, self.value(depth + 1)?));
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    return self.eat(b'}').then_some(Val::Obj(members));
                }
            }
            _ => self.number().map(Val::Num),
        }
    }

    /// Skips one value without building it. Iterative: nesting costs no stack, only a count.
    fn skip(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            self.ws();
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    self.skip_to_closing_quote()?;
                    self.i += 1;
                }
                b'[' | b'{' => {
                    self.i += 1;
                    depth += 1;
                    continue;
                }
                b']' | b'}' => {
                    self.i += 1;
                    depth = depth.checked_sub(1)?;
                }
                b',' | b':' if depth > 0 => {
                    self.i += 1;
                    continue;
                }
                b'n' => self.literal("null")?,
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                _ => {
                    self.number()?;
                }
            }
            if depth == 0 {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_run_end_finds_the_first_quote_backslash_or_control_byte() {
        // Every position of texts built from the bytes around each boundary, against the plain
        // definition: word-wide borrows must never move the answer.
        let alphabet = [
            0x00, 0x1f, 0x20, 0x21, b'"', b'#', b'[', b'\\', b']', 0x7f, 0x80, 0xff,
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..40 {
            for _ in 0..200 {
                let text: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Mostly plain bytes, so that runs are long enough to span words.
                        if seed % 4 == 0 {
                            alphabet[(seed >> 8) as usize % alphabet.len()]
                        } else {
                            b'a' + (seed >> 8) as u8 % 26
                        }
                    })
                    .collect();
                for i in 0..=len + 1 {
                    let expected = text
                        .iter()
                        .enumerate()
                        .skip(i)
                        .find(|&(_, &c)| c < 0x20 || c == b'"' || c == b'\\')
                        .map_or(len, |(at, _)| at);
                    assert_eq!(plain_run_end(&text, i), expected, "{text:?} from {i}");
                }
            }
        }
    }

    #[test]
    fn members_of_an_object() {
        let m = members(r#" {"id":"a\"b","n":{"x":[1,"}"]},"s":"st\u00e9" , "e":[] } "#).unwrap();
        let got: Vec<(String, &str)> = m.into_iter().map(|(k, v)| (k.into_owned(), v)).collect();
        assert_eq!(
            got,
            [
                ("id".to_string(), r#""a\"b""#),
                ("n".to_string(), r#"{"x":[1,"}"]}"#),
                ("s".to_string(), r#""st\u00e9""#),
                ("e".to_string(), "[]"),
            ]
        );
        assert_eq!(string(r#""st\u00e9""#).unwrap(), "sté");
        assert_eq!(members("{}"), Some(vec![]));
        assert!(members("[1]").is_none());
        assert!(members("{\"a\":").is_none());
        assert!(members("{\"a\":1} x").is_none());
    }

    #[test]
    fn members_sees_every_member_after_any_depth() {
        // Deeper than any limit: a member after it must still be seen, never cut off.
        for depth in [1, 127, 128, 129, 200, 10_000] {
            let pad = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let text = format!(r#"{{"id":"u1","pad":{pad},"organization_id":"globex"}}"#);
            let m = members(&text).unwrap();
            let keys: Vec<&str> = m.iter().map(|(k, _)| &**k).collect();
            assert_eq!(keys, ["id", "pad", "organization_id"], "depth {depth}");
            assert_eq!(m[2].1, r#""globex""#);
        }
    }

    #[test]
    fn check_structure_refuses_depth_and_lone_surrogates() {
        let huge = format!("{{\"a\":{}}}", "9".repeat(400));
        assert_eq!(check_structure(&huge), Err(Malformed::NumberOutOfRange));
        assert!(serde_json::from_str::<serde_json::Value>(&huge).is_err());
        for fine in ["{\"a\":-1.5e3}", "{\"a\":1e-400}", "{\"a\":[1,2e300]}"] {
            assert_eq!(check_structure(fine), Ok(()), "{fine}");
            assert!(serde_json::from_str::<serde_json::Value>(fine).is_ok());
        }
        assert_eq!(
            check_structure("{\"a\":1e400}"),
            Err(Malformed::NumberOutOfRange)
        );
        let nested = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert_eq!(check_structure(&nested(MAX_DEPTH)), Ok(()));
        assert_eq!(
            check_structure(&nested(MAX_DEPTH + 1)),
            Err(Malformed::TooDeep)
        );
        assert_eq!(check_structure(r#"{"a":"[[[{{{"}"#), Ok(()));
        assert_eq!(
            check_structure(r#"{"a":"\ud83d\ude00 \" \\ \u00e9"}"#),
            Ok(())
        );
        for lone in [
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"\ude00"}"#,
            r#"{"a":"\ud83dx\ude00"}"#,
            r#"{"a":"\ud83d\n"}"#,
            r#"{"a":"\ud83d\ud83d"}"#,
            r#"{"\udfff":1}"#,
        ] {
            assert_eq!(
                check_structure(lone),
                Err(Malformed::LoneSurrogate),
                "{lone}"
            );
            // serde_json agrees: a full reading refuses it.
            assert!(
                serde_json::from_str::<serde_json::Value>(lone).is_err(),
                "{lone}"
            );
        }
        for broken in ["{\"a\":\"", "[[", "]", "\"\\u12"] {
            assert_eq!(check_structure(broken), Err(Malformed::Broken), "{broken}");
        }
    }

    /// A record with `{X}` placed in each position a value can take: a top-level field, inside
    /// an entity, deep in an entity's arrays, in an unknown field, and after a value that the
    /// fast path keeps only as text.
    fn in_every_position(x: &str) -> Vec<String> {
        [
            r#"{"id":{X},"after":{"id":"u1"}}"#,
            r#"{"id":"c1","after":{"id":{X}}}"#,
            r#"{"id":"c1","after":{"id":"u1","p":[{"id":"a","on":[1,{X}]}]}}"#,
            r#"{"id":"c1","extra":{"a":{"b":[{X}]}},"after":{"id":"u1"}}"#,
            r#"{"id":"c1","after":{"id":"u1"},"source":{"m":{"n":"x"},"k":{X}}}"#,
            r#"{"id":"c1","after":{"id":"u1"},"last":{X}}"#,
            r#"{"id":"c1","list":[{X},2]}"#,
        ]
        .iter()
        .map(|t| t.replace("{X}", x))
        .collect()
    }

    /// The slow passes together: what [`scan_record`] must never accept more than.
    fn slow_accepts(text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text).is_ok() && check_structure(text).is_ok()
    }

    #[test]
    fn scan_record_refuses_what_the_slow_passes_refuse_in_every_position() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let hostile = [
            // Past the depth limit wherever it sits (the record and entity levels count).
            deep(MAX_DEPTH),
            deep(150),
            // Lone surrogates, in values and in keys.
            r#""\ud800""#.to_string(),
            r#""\udc00""#.to_string(),
            r#""a\ud83dx\ude00""#.to_string(),
            r#""\ud83d\n""#.to_string(),
            r#""\ud83d\ud83d""#.to_string(),
            r#"{"\udfff":1}"#.to_string(),
            // Numbers beyond a float.
            "1e400".to_string(),
            "-1e400".to_string(),
            "9".repeat(400),
            format!("{}.5e10", "9".repeat(400)),
            // Not JSON.
            "01".to_string(),
            "1.".to_string(),
            ".5".to_string(),
            "+1".to_string(),
            "1e".to_string(),
            "-".to_string(),
            "tru".to_string(),
            "nulll".to_string(),
            "\"tab\there\"".to_string(),
            r#""\x""#.to_string(),
            r#""\u12G4""#.to_string(),
            r#""\u+123""#.to_string(),
            "[1,]".to_string(),
            r#"{"a":1,}"#.to_string(),
            r#"{"a" 1}"#.to_string(),
            r#"{1:1}"#.to_string(),
            "[1 2]".to_string(),
            "[1}".to_string(),
            "\"open".to_string(),
        ];
        for x in &hostile {
            for text in in_every_position(x) {
                assert!(!slow_accepts(&text), "the slow passes accept {text}");
                assert_eq!(scan_record(&text), None, "{text}");
            }
        }
        for text in [
            "{\"a\":1} x",
            "{\"a\":1}}",
            "{\"a\":1",
            "[{\"a\":1}]",
            "",
            " ",
        ] {
            assert_eq!(scan_record(text), None, "{text}");
        }
        // Within the limits: accepted in every position, as the slow passes accept it.
        let fine = [
            deep(MAX_DEPTH - 6),
            r#""\ud83d\ude00 \" \\ \/ \b\f\n\r\t \u00e9""#.to_string(),
            "-0.5e-3".to_string(),
            "1e-400".to_string(),
            "2E+300".to_string(),
            "0".to_string(),
            "[]".to_string(),
            "{}".to_string(),
            " [ true , false , null ] ".to_string(),
        ];
        for x in &fine {
            for text in in_every_position(x) {
                assert!(slow_accepts(&text), "{text}");
                assert!(scan_record(&text).is_some(), "{text}");
            }
        }
    }

    #[test]
    fn scan_record_finds_what_members_finds() {
        let text = r#" { "id" : "c\"1" , "after":{"id":"u\u00e9", "n":{"x":[1,"}"]},"\u0069d":2,"e":[]},
            "before" : null , "list":[{"a":1}], "after":{} } "#;
        let top = scan_record(text).unwrap();
        let expected = members(text).unwrap();
        assert_eq!(top.len(), expected.len());
        for (member, (key, value)) in top.iter().zip(&expected) {
            assert_eq!((member.key, member.value), (&**key, *value));
            let object = value.starts_with('{');
            assert_eq!(
                member.members,
                object.then(|| members(value).unwrap()),
                "{key}"
            );
        }
        assert_eq!(
            top[1].members.as_ref().unwrap()[2],
            (Cow::Borrowed("id"), "2")
        );
        // A top-level key with an escape is left to the slow way, which reads keys in full.
        assert_eq!(scan_record(r#"{"\u0069d":"c1"}"#), None);
    }

    #[test]
    fn parse_keeps_numbers_as_text_and_unescapes_strings() {
        let v = parse(
            r#"{"n":123456789012345678901234567890,"f":-1.5e3,"s":"\u00e9","a":[true,false,null]}"#,
        )
        .unwrap();
        assert_eq!(
            v.get("n"),
            Some(&Val::Num("123456789012345678901234567890"))
        );
        assert_eq!(v.get("f"), Some(&Val::Num("-1.5e3")));
        assert_eq!(v.get("s").and_then(Val::as_str), Some("é"));
        assert_eq!(
            v.get("a"),
            Some(&Val::Arr(vec![
                Val::Bool(true),
                Val::Bool(false),
                Val::Null
            ]))
        );
    }

    #[test]
    fn never_panics_on_broken_or_hostile_text() {
        for text in [
            "",
            "{",
            "\"",
            "\"\\",
            "[1,",
            "{\"a\"",
            "nul",
            "{\"a\":tru}",
            "-",
            "[[[[[",
        ] {
            let _ = parse(text);
            let _ = members(text);
            let _ = string(text);
            let _ = check_structure(text);
        }
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).is_none());
        assert!(members(&format!("{{\"a\":{deep}")).is_none());
        assert_eq!(check_structure(&deep), Err(Malformed::TooDeep));
    }
}
