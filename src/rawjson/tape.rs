//! A flat index of a JSON text, read in one pass: one [`Node`] per value, in text order, each
//! with the span of its text and of its key, and where its next sibling starts. A comparison
//! walks it instead of reading the text again at each level, and builds no tree.
//!
//! For text that [`super::parse`] accepts; on other text, [`tape_into`] returns `None` or an
//! index that means nothing, never panics, and never recurses (nesting costs a stack entry).

use super::Parser;

/// One value. The children of a container are the nodes from the one after it up to its
/// [`next`](Node::next), going from sibling to sibling through `next`.
///
/// Positions and indexes are `u32`: 24 bytes a node rather than 48, which matters for a dense
/// array of small values (a node for every two bytes of `0,0,0`). A text, with the nodes
/// already in the tape, must stay under 4 GiB; [`tape_into`] refuses a longer one (Kafka's
/// records are under 2 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// The value's text: `text[start..end]`.
    start: u32,
    end: u32,
    /// The raw key (quotes included) of an object member; empty for other values.
    key_start: u32,
    key_end: u32,
    /// The index of the node after this value and all its descendants.
    next: u32,
    /// The value is a string that holds escapes.
    pub escaped: bool,
    /// The key holds escapes.
    pub key_escaped: bool,
}

impl Node {
    pub fn text<'t>(&self, text: &'t str) -> &'t str {
        &text[self.start as usize..self.end as usize]
    }

    pub fn key<'t>(&self, text: &'t str) -> &'t str {
        &text[self.key_start as usize..self.key_end as usize]
    }

    /// The index of the node after this value and all its descendants.
    pub fn next(&self) -> usize {
        self.next as usize
    }
}

/// A position or an index in a tape: [`tape_into`] has checked that they all fit.
#[inline(always)]
fn at(i: usize) -> u32 {
    debug_assert!(
        u32::try_from(i).is_ok(),
        "tape_into checks the text's length"
    );
    i as u32
}

/// Appends the nodes of the one value in `text` to `out` (the root first); `stack` is scratch
/// space, left as it was found. `None` when the text is not one value (then `out` may hold some
/// nodes: the caller truncates it), and when the text with the nodes already in `out` reaches
/// 4 GiB.
pub fn tape_into(text: &str, out: &mut Vec<Node>, stack: &mut Vec<usize>) -> Option<()> {
    // A value is at least one byte: `out` ends up with at most `text.len()` more nodes.
    if out.len().checked_add(text.len())? >= u32::MAX as usize {
        return None;
    }
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    let base = stack.len();
    let read = p.tape(out, stack, base);
    stack.truncate(base);
    read?;
    p.ws();
    (p.i == p.b.len()).then_some(())
}

impl Parser<'_> {
    fn tape(&mut self, out: &mut Vec<Node>, stack: &mut Vec<usize>, base: usize) -> Option<()> {
        let (mut key_start, mut key_end, mut key_escaped) = (0, 0, false);
        loop {
            self.ws();
            let start = self.i;
            let open = *self.b.get(self.i)?;
            out.push(Node {
                start: at(start),
                end: at(start),
                key_start: at(key_start),
                key_end: at(key_end),
                next: 0,
                escaped: false,
                key_escaped,
            });
            match open {
                b'[' | b'{' => {
                    self.i += 1;
                    self.ws();
                    if !self.eat(if open == b'[' { b']' } else { b'}' }) {
                        stack.push(out.len() - 1);
                        (key_start, key_end, key_escaped) = if open == b'{' {
                            self.key()?
                        } else {
                            (0, 0, false)
                        };
                        continue;
                    }
                }
                b'"' => {
                    self.i += 1;
                    let node = out.len() - 1;
                    out[node].escaped = self.skip_to_closing_quote()?;
                    self.i += 1;
                }
                b'n' => self.literal("null")?,
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                _ => {
                    self.number()?;
                }
            }
            let node = out.len() - 1;
            out[node].end = at(self.i);
            out[node].next = at(out.len());
            // A value ended: so may the containers around it.
            loop {
                if stack.len() == base {
                    return Some(());
                }
                let container = *stack.last()?;
                self.ws();
                match self.b.get(self.i)? {
                    b',' => {
                        self.i += 1;
                        (key_start, key_end, key_escaped) =
                            if self.b[out[container].start as usize] == b'{' {
                                self.key()?
                            } else {
                                (0, 0, false)
                            };
                        break;
                    }
                    &close @ (b']' | b'}') => {
                        if (close == b'}') != (self.b[out[container].start as usize] == b'{') {
                            return None;
                        }
                        self.i += 1;
                        stack.pop();
                        out[container].end = at(self.i);
                        out[container].next = at(out.len());
                    }
                    _ => return None,
                }
            }
        }
    }

    /// A member's key and its colon; the key's span, quotes included, and whether it holds
    /// escapes.
    #[inline(always)]
    fn key(&mut self) -> Option<(usize, usize, bool)> {
        self.ws();
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i - 1;
        let escaped = self.skip_to_closing_quote()?;
        self.i += 1;
        let end = self.i;
        self.ws();
        self.eat(b':').then_some((start, end, escaped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tape(text: &str) -> Option<Vec<(&str, &str, usize)>> {
        let (mut out, mut stack) = (Vec::new(), Vec::new());
        tape_into(text, &mut out, &mut stack)?;
        assert!(stack.is_empty());
        Some(
            out.iter()
                .map(|n| (n.text(text), n.key(text), n.next()))
                .collect(),
        )
    }

    #[test]
    fn one_node_per_value_in_text_order() {
        assert_eq!(
            tape(r#" {"a":1, "b" : {"x":[true,"]"],"y":{}},"c":[]} "#).unwrap(),
            [
                (r#"{"a":1, "b" : {"x":[true,"]"],"y":{}},"c":[]}"#, "", 8),
                ("1", r#""a""#, 2),
                (r#"{"x":[true,"]"],"y":{}}"#, r#""b""#, 7),
                (r#"[true,"]"]"#, r#""x""#, 6),
                ("true", "", 5),
                (r#""]""#, "", 6),
                ("{}", r#""y""#, 7),
                ("[]", r#""c""#, 8),
            ]
        );
        assert_eq!(tape("-1.5e3").unwrap(), [("-1.5e3", "", 1)]);
    }

    #[test]
    fn refuses_what_is_not_one_value_and_never_panics() {
        for text in [
            "",
            "{",
            "[1,",
            "{\"a\"",
            "{\"a\":}",
            "[1}",
            "]",
            "1 2",
            "{\"a\":1}}",
            "\"\\",
        ] {
            assert_eq!(tape(text), None, "{text}");
        }
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(tape(&deep).map(|nodes| nodes.len()), Some(100_001));
    }
}
