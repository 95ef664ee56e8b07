//! Fast reads over JSON text that serde_json has already validated (a [`RawValue`]).
//!
//! Guarantee: every function here is total on valid JSON and never panics on any input: on text
//! that is not valid JSON it returns `None` or stops early, it never reads out of bounds. The
//! pure core uses it to look into entities without building a tree: top-level members of an
//! object, and a borrowed value tree for comparisons, with numbers kept as their exact text.
//!
//! [`RawValue`]: serde_json::value::RawValue

use std::borrow::Cow;

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

/// The top-level members of a JSON object, as `(key, raw value text)`, keys unescaped.
/// Stops (returns what it has) at anything that is not a well-formed object.
pub fn members(text: &str) -> Vec<(Cow<'_, str>, &str)> {
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    p.ws();
    if !p.eat(b'{') {
        return out;
    }
    p.ws();
    if p.eat(b'}') {
        return out;
    }
    loop {
        p.ws();
        let Some(key) = p.string() else { return out };
        p.ws();
        if !p.eat(b':') {
            return out;
        }
        p.ws();
        let start = p.i;
        if p.skip(0).is_none() {
            return out;
        }
        out.push((key, &text[start..p.i]));
        p.ws();
        if p.eat(b',') {
            continue;
        }
        return out;
    }
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

/// Nesting deeper than this is refused (no stack overflow on hostile input).
const MAX_DEPTH: usize = 128;

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
    fn skip_to_closing_quote(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            let at = self.i + memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
            if self.b[at] == b'"' {
                self.i = at;
                return Some(escaped);
            }
            escaped = true;
            self.i = at + 2;
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

    /// Skips one value without building it.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.b.get(self.i)? {
            b'"' => {
                self.i += 1;
                self.skip_to_closing_quote()?;
                self.i += 1;
                Some(())
            }
            b'[' | b'{' => {
                self.i += 1;
                loop {
                    self.ws();
                    match *self.b.get(self.i)? {
                        b']' | b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        b',' | b':' => self.i += 1,
                        _ => self.skip(depth + 1)?,
                    }
                }
            }
            b'n' => self.literal("null"),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            _ => self.number().map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_of_an_object() {
        let m = members(r#" {"id":"a\"b","n":{"x":[1,"}"]},"s":"st\u00e9" , "e":[] } "#);
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
        assert!(members("[1]").is_empty());
        assert!(members("{\"a\":").is_empty());
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
        }
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).is_none());
        assert!(members(&format!("{{\"a\":{deep}")).is_empty());
    }
}
