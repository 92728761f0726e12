//! The byte-level pushdown automaton over a compiled schema: which bytes may come next, and
//! when the JSON text is complete.

use std::sync::Arc;

use super::schema::{Node, Rejected, Schema};
use super::{DEFAULT_MAX_ITEMS, DEFAULT_MAX_STRING, MAX_ANY_KEYS, MAX_DEPTH, MAX_WS_RUN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjPhase {
    Open,
    /// Matching `"key"` byte `pos` of property `idx`.
    Key {
        pos: usize,
    },
    Colon,
    /// Waiting for `,` or `}` after property `idx`'s value.
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnyPhase {
    /// After `{`/`[` or `,`: a key/item or (only right after the opener) the closer.
    First,
    Next,
    Colon,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumPhase {
    Sign,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

#[derive(Debug, Clone, PartialEq)]
enum Frame {
    /// A value of `node` is expected next.
    Value(usize),
    Obj {
        node: usize,
        idx: usize,
        phase: ObjPhase,
    },
    AnyObj {
        phase: AnyPhase,
        count: usize,
    },
    Arr {
        items: usize,
        max_items: usize,
        count: usize,
        phase: AnyPhase,
        any: bool,
    },
    /// Inside a string: characters so far, pending escape state, UTF-8 continuation bytes due.
    Str {
        len: usize,
        max_len: usize,
        esc: u8,
        cont: u8,
    },
    Num {
        integer: bool,
        phase: NumPhase,
        digits: u8,
    },
    /// Matching enum alternatives of `node`: `alive` bitmask, `pos` bytes matched.
    Lit {
        node: usize,
        alive: u128,
        pos: usize,
    },
}

/// The decoding state for one generation.
#[derive(Debug, Clone)]
pub struct JsonConstraint {
    schema: Arc<Schema>,
    stack: Vec<Frame>,
    ws_run: u8,
    /// Set by `tighten`: new strings, arrays and objects are opened empty and closed at once.
    tight: bool,
}

impl JsonConstraint {
    pub fn new(schema: Arc<Schema>) -> Self {
        Self {
            schema,
            stack: vec![Frame::Value(0)],
            ws_run: 0,
            tight: false,
        }
    }

    /// Whether a complete JSON text has been produced (only end-of-sequence may follow).
    pub fn is_complete(&self) -> bool {
        match self.stack.as_slice() {
            [] => true,
            [Frame::Num { phase, .. }] => matches!(
                phase,
                NumPhase::Zero | NumPhase::Int | NumPhase::Frac | NumPhase::ExpDigits
            ),
            [Frame::Lit { node, alive, pos }] => self.lit_complete(*node, *alive, *pos),
            _ => false,
        }
    }

    /// Makes the shortest completion the only one: open strings accept only their closing quote
    /// (after a pending escape or UTF-8 sequence), arrays and objects take no further items.
    /// The engine calls this when the token budget runs low, so the JSON still closes.
    pub fn tighten(&mut self) {
        for f in &mut self.stack {
            match f {
                Frame::Str { len, max_len, .. } => *max_len = *len,
                // Right after a comma one more item (or key) is due: a trailing comma is invalid.
                Frame::Arr {
                    count,
                    max_items,
                    phase,
                    ..
                } => *max_items = *count + usize::from(*phase == AnyPhase::Next),
                Frame::AnyObj { count, phase } => {
                    *count = if *phase == AnyPhase::Next {
                        MAX_ANY_KEYS - 1
                    } else {
                        MAX_ANY_KEYS
                    }
                }
                _ => {}
            }
        }
        self.tight = true;
    }

    /// Whether appending `bytes` keeps the output a viable prefix.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        let mut c = self.clone();
        c.advance(bytes).is_ok()
    }

    /// Appends `bytes`; on error the state is unspecified (use `accepts` first).
    pub fn advance(&mut self, bytes: &[u8]) -> Result<(), Rejected> {
        bytes.iter().try_for_each(|&b| self.feed(b))
    }

    fn lit_complete(&self, node: usize, alive: u128, pos: usize) -> bool {
        let Node::Enum(alts) = &self.schema.nodes[node] else {
            return false;
        };
        alts.iter()
            .enumerate()
            .any(|(i, a)| alive & (1 << i) != 0 && a.len() == pos)
    }

    fn ws(&mut self, b: u8) -> Result<(), Rejected> {
        if matches!(b, b' ' | b'\n' | b'\t' | b'\r') && self.ws_run < MAX_WS_RUN && !self.tight {
            self.ws_run += 1;
            Ok(())
        } else {
            Err(Rejected)
        }
    }

    /// Starts a value of `node` with its first byte `b` (not whitespace).
    fn start_value(&mut self, node: usize, b: u8) -> Result<(), Rejected> {
        // Free-form containers nest at most MAX_DEPTH deep; scalars are always allowed, so a
        // value can always be completed (schema nesting is bounded when compiling).
        let deep = self.stack.len() >= MAX_DEPTH;
        if deep && matches!(self.schema.nodes[node], Node::Any) && matches!(b, b'{' | b'[') {
            return Err(Rejected);
        }
        let schema = self.schema.clone();
        let t = self.tight;
        match &schema.nodes[node] {
            Node::Any => match b {
                b'{' => self.stack.push(Frame::AnyObj {
                    phase: AnyPhase::First,
                    count: if t { MAX_ANY_KEYS } else { 0 },
                }),
                b'[' => self.stack.push(Frame::Arr {
                    items: node,
                    max_items: if t { 0 } else { DEFAULT_MAX_ITEMS },
                    count: 0,
                    phase: AnyPhase::First,
                    any: true,
                }),
                b'"' => self.stack.push(Frame::Str {
                    len: 0,
                    max_len: if t { 0 } else { DEFAULT_MAX_STRING },
                    esc: 0,
                    cont: 0,
                }),
                b'-' | b'0'..=b'9' => return self.start_number(false, b),
                b't' | b'f' | b'n' => {
                    let word: &[u8] = match b {
                        b't' => b"true",
                        b'f' => b"false",
                        _ => b"null",
                    };
                    let id = self.word_node(word);
                    self.stack.push(Frame::Lit {
                        node: id,
                        alive: 1,
                        pos: 1,
                    });
                }
                _ => return Err(Rejected),
            },
            Node::AnyObject => {
                if b != b'{' {
                    return Err(Rejected);
                }
                self.stack.push(Frame::AnyObj {
                    phase: AnyPhase::First,
                    count: if t { MAX_ANY_KEYS } else { 0 },
                });
            }
            Node::Object(_) => {
                self.stack.push(Frame::Obj {
                    node,
                    idx: 0,
                    phase: ObjPhase::Open,
                });
                return self.feed(b);
            }
            Node::Array { items, max_items } => {
                if b != b'[' {
                    return Err(Rejected);
                }
                let max_items = if t { 0 } else { *max_items };
                self.stack.push(Frame::Arr {
                    items: *items,
                    max_items,
                    count: 0,
                    phase: AnyPhase::First,
                    any: false,
                });
            }
            Node::String { max_len } => {
                if b != b'"' {
                    return Err(Rejected);
                }
                self.stack.push(Frame::Str {
                    len: 0,
                    max_len: if t { 0 } else { *max_len },
                    esc: 0,
                    cont: 0,
                });
            }
            Node::Number { integer } => return self.start_number(*integer, b),
            Node::Enum(alts) => {
                let alive: u128 = alts
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.first() == Some(&b))
                    .fold(0, |m, (i, _)| m | (1 << i));
                if alive == 0 {
                    return Err(Rejected);
                }
                self.stack.push(Frame::Lit {
                    node,
                    alive,
                    pos: 1,
                });
            }
        }
        Ok(())
    }

    fn word_node(&mut self, word: &[u8]) -> usize {
        if let Some(i) = self
            .schema
            .nodes
            .iter()
            .position(|n| matches!(n, Node::Enum(a) if a.len() == 1 && a[0] == word))
        {
            return i;
        }
        let mut s = (*self.schema).clone();
        s.nodes.push(Node::Enum(vec![word.to_vec()]));
        self.schema = Arc::new(s);
        self.schema.nodes.len() - 1
    }

    fn start_number(&mut self, integer: bool, b: u8) -> Result<(), Rejected> {
        let phase = match b {
            b'-' => NumPhase::Sign,
            b'0' => NumPhase::Zero,
            b'1'..=b'9' => NumPhase::Int,
            _ => return Err(Rejected),
        };
        self.stack.push(Frame::Num {
            integer,
            phase,
            digits: u8::from(b != b'-'),
        });
        Ok(())
    }

    pub(super) fn feed(&mut self, b: u8) -> Result<(), Rejected> {
        let is_ws = matches!(b, b' ' | b'\n' | b'\t' | b'\r');
        let Some(top) = self.stack.last().cloned() else {
            return Err(Rejected);
        };
        let schema = self.schema.clone();
        let last = self.stack.len() - 1;
        match top {
            Frame::Value(node) => {
                if is_ws {
                    return self.ws(b);
                }
                self.ws_run = 0;
                self.stack.pop();
                self.start_value(node, b)
            }
            Frame::Obj { node, idx, phase } => {
                let Node::Object(props) = &schema.nodes[node] else {
                    return Err(Rejected);
                };
                let set = |s: &mut Self, idx, phase| {
                    s.stack[last] = Frame::Obj { node, idx, phase };
                };
                match phase {
                    ObjPhase::Open => {
                        if b != b'{' {
                            return Err(Rejected);
                        }
                        set(
                            self,
                            0,
                            if props.is_empty() {
                                ObjPhase::After
                            } else {
                                ObjPhase::Key { pos: 0 }
                            },
                        );
                        Ok(())
                    }
                    ObjPhase::Key { pos } => {
                        if pos == 0 && is_ws {
                            return self.ws(b);
                        }
                        self.ws_run = 0;
                        let key = &props[idx].0;
                        let want = if pos == 0 || pos == key.len() + 1 {
                            Some(b'"')
                        } else {
                            key.as_bytes().get(pos - 1).copied()
                        };
                        if want != Some(b) {
                            return Err(Rejected);
                        }
                        set(
                            self,
                            idx,
                            if pos == key.len() + 1 {
                                ObjPhase::Colon
                            } else {
                                ObjPhase::Key { pos: pos + 1 }
                            },
                        );
                        Ok(())
                    }
                    ObjPhase::Colon => {
                        if is_ws {
                            return self.ws(b);
                        }
                        if b != b':' {
                            return Err(Rejected);
                        }
                        self.ws_run = 0;
                        set(self, idx, ObjPhase::After);
                        self.stack.push(Frame::Value(props[idx].1));
                        Ok(())
                    }
                    ObjPhase::After => {
                        if is_ws {
                            return self.ws(b);
                        }
                        self.ws_run = 0;
                        let done = props.is_empty() || idx + 1 >= props.len();
                        match b {
                            b',' if !done => {
                                set(self, idx + 1, ObjPhase::Key { pos: 0 });
                                Ok(())
                            }
                            b'}' if done => {
                                self.stack.pop();
                                Ok(())
                            }
                            _ => Err(Rejected),
                        }
                    }
                }
            }
            Frame::AnyObj { phase, count } => {
                if is_ws {
                    return self.ws(b);
                }
                self.ws_run = 0;
                match (phase, b) {
                    (AnyPhase::First, b'}') | (AnyPhase::After, b'}') => {
                        self.stack.pop();
                        Ok(())
                    }
                    (AnyPhase::First | AnyPhase::Next, b'"') if count < MAX_ANY_KEYS => {
                        self.stack[last] = Frame::AnyObj {
                            phase: AnyPhase::Colon,
                            count: count + 1,
                        };
                        self.stack.push(Frame::Str {
                            len: 0,
                            max_len: 64,
                            esc: 0,
                            cont: 0,
                        });
                        Ok(())
                    }
                    (AnyPhase::Colon, b':') => {
                        self.stack[last] = Frame::AnyObj {
                            phase: AnyPhase::After,
                            count,
                        };
                        let any = self.any_node();
                        self.stack.push(Frame::Value(any));
                        Ok(())
                    }
                    (AnyPhase::After, b',') if count < MAX_ANY_KEYS => {
                        self.stack[last] = Frame::AnyObj {
                            phase: AnyPhase::Next,
                            count,
                        };
                        Ok(())
                    }
                    _ => Err(Rejected),
                }
            }
            Frame::Arr {
                items,
                max_items,
                count,
                phase,
                any,
            } => {
                if is_ws {
                    return self.ws(b);
                }
                self.ws_run = 0;
                let item_node = if any { self.any_node() } else { items };
                match (phase, b) {
                    (AnyPhase::First | AnyPhase::After, b']') => {
                        self.stack.pop();
                        Ok(())
                    }
                    (AnyPhase::After, b',') if count < max_items => {
                        self.stack[last] = Frame::Arr {
                            items,
                            max_items,
                            count,
                            phase: AnyPhase::Next,
                            any,
                        };
                        Ok(())
                    }
                    (AnyPhase::First | AnyPhase::Next, _) if count < max_items => {
                        self.stack[last] = Frame::Arr {
                            items,
                            max_items,
                            count: count + 1,
                            phase: AnyPhase::After,
                            any,
                        };
                        self.start_value(item_node, b)
                    }
                    _ => Err(Rejected),
                }
            }
            Frame::Str {
                len,
                max_len,
                esc,
                cont,
            } => {
                let set = |s: &mut Self, len, esc, cont| {
                    s.stack[last] = Frame::Str {
                        len,
                        max_len,
                        esc,
                        cont,
                    };
                };
                if cont > 0 {
                    if b & 0xC0 != 0x80 {
                        return Err(Rejected);
                    }
                    set(self, len, 0, cont - 1);
                    return Ok(());
                }
                match esc {
                    1 => {
                        return match b {
                            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                                set(self, len + 1, 0, 0);
                                Ok(())
                            }
                            b'u' => {
                                set(self, len, 2, 0);
                                Ok(())
                            }
                            _ => Err(Rejected),
                        }
                    }
                    2..=5 => {
                        // `\uD...` is refused outright: it would allow lone surrogates, which no
                        // JSON parser accepts (costs the rare \uD000-\uD7FF escape).
                        if !b.is_ascii_hexdigit() || (esc == 2 && matches!(b, b'd' | b'D')) {
                            return Err(Rejected);
                        }
                        set(
                            self,
                            if esc == 5 { len + 1 } else { len },
                            if esc == 5 { 0 } else { esc + 1 },
                            0,
                        );
                        return Ok(());
                    }
                    _ => {}
                }
                match b {
                    b'"' => {
                        self.stack.pop();
                        Ok(())
                    }
                    _ if len >= max_len => Err(Rejected),
                    b'\\' => {
                        set(self, len, 1, 0);
                        Ok(())
                    }
                    0..=0x1F => Err(Rejected),
                    0x20..=0x7F => {
                        set(self, len + 1, 0, 0);
                        Ok(())
                    }
                    0xC2..=0xDF => {
                        set(self, len + 1, 0, 1);
                        Ok(())
                    }
                    0xE0..=0xEF => {
                        set(self, len + 1, 0, 2);
                        Ok(())
                    }
                    0xF0..=0xF4 => {
                        set(self, len + 1, 0, 3);
                        Ok(())
                    }
                    _ => Err(Rejected),
                }
            }
            Frame::Num {
                integer,
                phase,
                digits,
            } => {
                use NumPhase::*;
                let next = match (phase, b) {
                    (Sign, b'0') => Some(Zero),
                    (Sign, b'1'..=b'9') => Some(Int),
                    (Int, b'0'..=b'9') if digits < 15 => Some(Int),
                    (Zero | Int, b'.') if !integer => Some(Dot),
                    (Dot | Frac, b'0'..=b'9') if digits < 15 => Some(Frac),
                    (Zero | Int | Frac, b'e' | b'E') if !integer => Some(Exp),
                    (Exp, b'+' | b'-') => Some(ExpSign),
                    (Exp | ExpSign, b'0'..=b'9') => Some(ExpDigits),
                    // Two exponent digits at most: every number stays inside f64's range.
                    (ExpDigits, b'0'..=b'9') if digits < 1 => Some(ExpDigits),
                    _ => None,
                };
                match next {
                    Some(p) => {
                        self.stack[last] = Frame::Num {
                            integer,
                            phase: p,
                            // `digits` counts the mantissa, then restarts for the exponent.
                            digits: match (phase, p) {
                                (_, Exp) => 0,
                                (ExpDigits, ExpDigits) => digits + 1,
                                (_, ExpDigits) => 0,
                                _ => digits.saturating_add(1),
                            },
                        };
                        Ok(())
                    }
                    None if matches!(phase, Zero | Int | Frac | ExpDigits) => {
                        self.stack.pop();
                        self.feed_parent(b)
                    }
                    None => Err(Rejected),
                }
            }
            Frame::Lit { node, alive, pos } => {
                let Node::Enum(alts) = &schema.nodes[node] else {
                    return Err(Rejected);
                };
                let next: u128 = alts
                    .iter()
                    .enumerate()
                    .filter(|(i, a)| alive & (1 << i) != 0 && a.get(pos) == Some(&b))
                    .fold(0, |m, (i, _)| m | (1 << i));
                if next != 0 {
                    self.stack[last] = Frame::Lit {
                        node,
                        alive: next,
                        pos: pos + 1,
                    };
                    Ok(())
                } else if self.lit_complete(node, alive, pos) {
                    self.stack.pop();
                    self.feed_parent(b)
                } else {
                    Err(Rejected)
                }
            }
        }
    }

    /// A finished number or literal hands the byte that ended it to its parent.
    fn feed_parent(&mut self, b: u8) -> Result<(), Rejected> {
        if self.stack.is_empty() {
            return Err(Rejected);
        }
        self.feed(b)
    }

    fn any_node(&mut self) -> usize {
        if let Some(i) = self.schema.nodes.iter().position(|n| *n == Node::Any) {
            return i;
        }
        let mut s = (*self.schema).clone();
        s.nodes.push(Node::Any);
        self.schema = Arc::new(s);
        self.schema.nodes.len() - 1
    }
}
