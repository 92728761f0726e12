//! Constrained decoding: a byte-level pushdown automaton that accepts exactly the prefixes of
//! JSON texts matching a (subset of) JSON schema, and a greedy picker that masks the logits with it.
//!
//! Supported: `type` object (properties generated in `required` order; only required ones),
//! array (`items`, `maxItems`, default cap 32), string (`maxLength`, default cap 512 characters),
//! integer, number, boolean, null, `enum` and `const` of any JSON values, small integer ranges
//! (`minimum`..`maximum`, at most 201 values) as enums. Anything else (`anyOf`, `$ref`, type
//! unions) is generated as any JSON value. `json_object` mode is "any JSON object". Whitespace
//! between tokens is allowed in runs of at most 4 bytes and nesting is capped at 16, so every
//! generation ends.

use std::sync::Arc;

use serde_json::Value;

const DEFAULT_MAX_STRING: usize = 512;
const DEFAULT_MAX_ITEMS: usize = 32;
const MAX_WS_RUN: u8 = 4;
const MAX_DEPTH: usize = 16;
const MAX_ANY_KEYS: usize = 32;

/// A byte that no JSON text matching the schema can continue with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the output would no longer match the JSON schema")]
pub struct Rejected;

/// A compiled schema node.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Any JSON value.
    Any,
    /// Any JSON object (keys are strings, values `Any`).
    AnyObject,
    /// An object with exactly these properties, in this order.
    Object(Vec<(String, usize)>),
    Array {
        items: usize,
        max_items: usize,
    },
    String {
        max_len: usize,
    },
    Number {
        integer: bool,
    },
    /// One of these JSON texts (compact serialisation), e.g. `"yes"`, `4`, `true`.
    Enum(Vec<Vec<u8>>),
}

/// A compiled schema: nodes, root first.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    nodes: Vec<Node>,
}

/// A schema this module cannot honour.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unsupported JSON schema: {0}")]
pub struct SchemaError(pub String);

impl Schema {
    /// `response_format: {"type": "json_object"}`.
    pub fn any_object() -> Self {
        Self {
            nodes: vec![Node::AnyObject],
        }
    }

    /// Compiles a JSON schema (the `schema` of a `json_schema` response format).
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let mut s = Self { nodes: Vec::new() };
        s.add(schema, 0)?;
        Ok(s)
    }

    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn add(&mut self, v: &Value, depth: usize) -> Result<usize, SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError(format!("nested deeper than {MAX_DEPTH}")));
        }
        let Some(obj) = v.as_object() else {
            return Ok(self.push(Node::Any));
        };
        if let Some(c) = obj.get("const") {
            return Ok(self.push(Node::Enum(vec![c.to_string().into_bytes()])));
        }
        if let Some(e) = obj.get("enum") {
            let alts: Vec<Vec<u8>> = e
                .as_array()
                .ok_or_else(|| SchemaError("`enum` must be an array".into()))?
                .iter()
                .map(|x| x.to_string().into_bytes())
                .collect();
            if alts.is_empty() || alts.len() > 128 {
                return Err(SchemaError("`enum` must have 1 to 128 values".into()));
            }
            return Ok(self.push(Node::Enum(alts)));
        }
        let ty = obj.get("type").and_then(Value::as_str);
        let node = match ty {
            Some("object") => match obj.get("properties").and_then(Value::as_object) {
                Some(props) if !props.is_empty() => {
                    let order: Vec<String> = match obj.get("required").and_then(Value::as_array) {
                        Some(req) => req
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect(),
                        None => props.keys().cloned().collect(),
                    };
                    let id = self.push(Node::Any);
                    let mut fields = Vec::new();
                    for name in order {
                        let sub = props.get(&name).ok_or_else(|| {
                            SchemaError(format!(
                                "required property `{name}` is not in `properties`"
                            ))
                        })?;
                        let child = self.add(sub, depth + 1)?;
                        fields.push((name, child));
                    }
                    self.nodes[id] = Node::Object(fields);
                    return Ok(id);
                }
                _ => Node::AnyObject,
            },
            Some("array") => {
                let id = self.push(Node::Any);
                let items = match obj.get("items") {
                    Some(i) => self.add(i, depth + 1)?,
                    None => self.push(Node::Any),
                };
                let max_items = obj
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .map_or(DEFAULT_MAX_ITEMS, |m| m as usize);
                self.nodes[id] = Node::Array { items, max_items };
                return Ok(id);
            }
            Some("string") => Node::String {
                max_len: obj
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .map_or(DEFAULT_MAX_STRING, |m| m as usize),
            },
            Some("integer") => {
                match (
                    obj.get("minimum").and_then(Value::as_i64),
                    obj.get("maximum").and_then(Value::as_i64),
                ) {
                    (Some(lo), Some(hi)) if lo <= hi && hi - lo <= 200 => {
                        Node::Enum((lo..=hi).map(|i| i.to_string().into_bytes()).collect())
                    }
                    _ => Node::Number { integer: true },
                }
            }
            Some("number") => Node::Number { integer: false },
            Some("boolean") => Node::Enum(vec![b"true".to_vec(), b"false".to_vec()]),
            Some("null") => Node::Enum(vec![b"null".to_vec()]),
            Some(other) => return Err(SchemaError(format!("unknown type `{other}`"))),
            None => Node::Any,
        };
        Ok(self.push(node))
    }
}

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

    fn feed(&mut self, b: u8) -> Result<(), Rejected> {
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

/// Picks the highest-logit token that keeps the output viable, or an end-of-sequence token once
/// the JSON is complete. `vocab[id]` is the token's bytes (`None` for special tokens).
/// Returns `None` only if no token fits (a vocabulary without the needed bytes).
pub fn pick(
    constraint: &JsonConstraint,
    logits: &[f32],
    vocab: &[Option<Vec<u8>>],
    eos: &[u32],
) -> Option<u32> {
    if constraint.is_complete() {
        return eos.first().copied();
    }
    allowed_by_rank(constraint, logits, vocab, 1)
        .first()
        .copied()
}

/// The `k` highest-logit tokens that keep the output viable, best first.
pub fn allowed_by_rank(
    constraint: &JsonConstraint,
    logits: &[f32],
    vocab: &[Option<Vec<u8>>],
    k: usize,
) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    let mut order: Vec<u32> = (0..logits.len().min(vocab.len()) as u32).collect();
    // Most steps are settled by the first few candidates: sort a prefix first, all only if needed.
    let mut out = Vec::new();
    let mut sorted_upto = 0;
    let mut cut = 256.min(order.len());
    loop {
        if cut > sorted_upto {
            let desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
            if cut < order.len() {
                order[sorted_upto..].select_nth_unstable_by(cut - sorted_upto - 1, desc);
            }
            order[sorted_upto..cut].sort_unstable_by(desc);
        }
        for &id in &order[sorted_upto..cut] {
            if let Some(bytes) = vocab[id as usize].as_deref() {
                if !bytes.is_empty() && constraint.accepts(bytes) {
                    out.push(id);
                    if out.len() >= k {
                        return out;
                    }
                }
            }
        }
        if cut >= order.len() {
            return out;
        }
        sorted_upto = cut;
        cut = (cut * 4).min(order.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(schema: &Schema, text: &str) -> Result<bool, usize> {
        let mut c = JsonConstraint::new(Arc::new(schema.clone()));
        for (i, b) in text.bytes().enumerate() {
            c.feed(b).map_err(|_| i)?;
        }
        Ok(c.is_complete())
    }

    fn judge_schema() -> Schema {
        Schema::compile(&json!({
            "type": "object",
            "properties": {"reason": {"type": "string"}, "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
            "required": ["reason", "score"],
        }))
        .unwrap()
    }

    #[test]
    fn accepts_matching_texts_and_rejects_others() {
        let s = judge_schema();
        assert_eq!(
            run(&s, r#"{"reason": "fine \"x\" \u00e9 é", "score": 4}"#),
            Ok(true)
        );
        assert_eq!(run(&s, "{\n  \"reason\":\"\",\"score\":5}"), Ok(true));
        assert_eq!(run(&s, r#"{"reason": "fine", "score": 4"#), Ok(false));
        assert!(
            run(&s, r#"{"score": 4, "reason": ""}"#).is_err(),
            "order follows `required`"
        );
        assert!(run(&s, r#"{"reason": "x", "score": 7}"#).is_err());
        assert!(
            run(&s, r#"{"reason": "x", "score": 4} "#).is_err(),
            "nothing after the end"
        );
        assert!(run(&s, "The answer").is_err());
        assert!(
            run(&s, "{\"reason\": \"a\nb\"").is_err(),
            "raw control characters"
        );
        assert!(
            run(&s, "{      \"reason\"").is_err(),
            "whitespace runs are capped"
        );
    }

    #[test]
    fn any_object_and_nested_values() {
        let s = Schema::any_object();
        assert_eq!(
            run(
                &s,
                r#"{"a": [1, -2.5e3, true, null, {"b": "c"}], "d": false}"#
            ),
            Ok(true)
        );
        assert_eq!(run(&s, "{}"), Ok(true));
        assert!(run(&s, "[1]").is_err());
        assert!(run(&s, r#"{"a": 01}"#).is_err());
        assert!(run(&s, r#"{"a": tru}"#).is_err());
    }

    #[test]
    fn arrays_strings_and_enums_respect_caps() {
        let s = Schema::compile(
            &json!({"type": "array", "items": {"type": "string", "maxLength": 2}, "maxItems": 2}),
        )
        .unwrap();
        assert_eq!(run(&s, r#"["ab", "c"]"#), Ok(true));
        assert!(run(&s, r#"["abc"]"#).is_err());
        assert!(run(&s, r#"["a", "b", "c"]"#).is_err());
        let e = Schema::compile(&json!({"enum": [1, 10, "x"]})).unwrap();
        assert_eq!(run(&e, "10"), Ok(true));
        assert_eq!(run(&e, "1"), Ok(true));
        assert!(run(&e, "2").is_err());
        let r = Schema::compile(&json!({"type": "integer", "minimum": 0, "maximum": 10})).unwrap();
        assert_eq!(run(&r, "10"), Ok(true));
        assert!(run(&r, "11").is_err());
    }

    #[test]
    fn tighten_forces_the_shortest_close() {
        let s = Schema::compile(&json!({
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "string"}}, "score": {"enum": [1, 2]}},
            "required": ["items", "score"],
        }))
        .unwrap();
        let mut c = JsonConstraint::new(Arc::new(s));
        c.advance(br#"{"items": ["abc"#).unwrap();
        c.tighten();
        assert!(!c.accepts(b"d"));
        assert!(!c.accepts(b" "));
        assert!(c.accepts(b"\""));
        c.advance(b"\"").unwrap();
        assert!(!c.accepts(b","), "no more items");
        assert!(!c.accepts(b"] "), "no whitespace once tight");
        c.advance(br#"],"score":2}"#).unwrap();
        assert!(c.is_complete());
    }

    #[test]
    fn tightening_right_after_a_comma_leaves_one_more_item() {
        let s = Schema::compile(&json!({
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"enum": ["yes", "no"]}}},
            "required": ["items"],
        }))
        .unwrap();
        let mut c = JsonConstraint::new(Arc::new(s));
        c.advance(br#"{"items": ["yes","#).unwrap();
        c.tighten();
        assert!(!c.accepts(b"]"), "a trailing comma is not JSON");
        c.advance(br#""no"]}"#).unwrap();
        assert!(c.is_complete());
        let mut c = JsonConstraint::new(Arc::new(Schema::any_object()));
        c.advance(br#"{"a": 1,"#).unwrap();
        c.tighten();
        assert!(c.accepts(b"\"\""), "one more key is due");
        c.advance(br#""":""}"#).unwrap();
        assert!(c.is_complete());
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        assert!(Schema::compile(
            &json!({"type": "object", "properties": {"a": {}}, "required": ["b"]})
        )
        .is_err());
        assert!(Schema::compile(&json!({"type": "tuple"})).is_err());
    }

    /// A toy vocabulary: single bytes, a few JSON-ish multi-byte tokens, prose words, specials.
    fn toy_vocab() -> Vec<Option<Vec<u8>>> {
        let mut v: Vec<Option<Vec<u8>>> = (0x20u8..0x7F).map(|b| Some(vec![b])).collect();
        for t in [
            "{\"", "\":", " \"", "\",", "\"}", "reason", "score", " the", " answer", "Hello", "4}",
            "}\n", "é", "\\u00",
        ] {
            v.push(Some(t.as_bytes().to_vec()));
        }
        v.push(None); // an end-of-sequence special token
        v
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn greedy_decoding_under_any_logits_yields_schema_valid_json(seed in proptest::prelude::any::<u64>()) {
            let vocab = toy_vocab();
            let eos = (vocab.len() - 1) as u32;
            let schema = Arc::new(judge_schema());
            let mut c = JsonConstraint::new(schema);
            let mut out = Vec::new();
            let mut rng = fastrand::Rng::with_seed(seed);
            for _ in 0..2000 {
                let logits: Vec<f32> = (0..vocab.len()).map(|_| rng.f32() * 10.0).collect();
                let id = pick(&c, &logits, &vocab, &[eos]).expect("a viable token always exists");
                if id == eos {
                    break;
                }
                let bytes = vocab[id as usize].clone().unwrap();
                c.advance(&bytes).unwrap();
                out.extend_from_slice(&bytes);
            }
            proptest::prop_assert!(c.is_complete(), "did not finish: {}", String::from_utf8_lossy(&out));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert!(v["reason"].is_string());
            proptest::prop_assert!((1..=5).contains(&v["score"].as_i64().unwrap()));
        }

        #[test]
        fn tightening_at_any_step_still_closes_the_json(seed in proptest::prelude::any::<u64>(), at in 0usize..120, any in proptest::prelude::any::<bool>()) {
            let vocab = toy_vocab();
            let eos = (vocab.len() - 1) as u32;
            let schema = if any {
                Schema::any_object()
            } else {
                Schema::compile(&json!({
                    "type": "object",
                    "properties": {
                        "statements": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"statement": {"type": "string"}, "relevant": {"enum": ["yes", "no", "idk"]}},
                            "required": ["statement", "relevant"],
                        }},
                        "reason": {"type": "string"},
                    },
                    "required": ["statements", "reason"],
                }))
                .unwrap()
            };
            let mut c = JsonConstraint::new(Arc::new(schema));
            let mut out = Vec::new();
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut finished = false;
            for step in 0..(at + 600) {
                if step >= at {
                    c.tighten();
                }
                // Favour structure-opening bytes so arrays and objects are open when tightening.
                let logits: Vec<f32> = (0..vocab.len())
                    .map(|i| rng.f32() + if matches!(vocab[i].as_deref(), Some(b"[" | b"{" | b"," | b"\"")) { 0.8 } else { 0.0 })
                    .collect();
                let id = pick(&c, &logits, &vocab, &[eos]);
                proptest::prop_assert!(id.is_some(), "dead end after {}", String::from_utf8_lossy(&out));
                let id = id.unwrap();
                if id == eos {
                    finished = true;
                    break;
                }
                let bytes = vocab[id as usize].clone().unwrap();
                c.advance(&bytes).unwrap();
                out.extend_from_slice(&bytes);
            }
            proptest::prop_assert!(finished, "not closed 600 steps after tightening: {}", String::from_utf8_lossy(&out));
            proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).unwrap().is_object());
        }

        #[test]
        fn the_any_object_mode_yields_parseable_json(seed in proptest::prelude::any::<u64>()) {
            let vocab = toy_vocab();
            let eos = (vocab.len() - 1) as u32;
            let mut c = JsonConstraint::new(Arc::new(Schema::any_object()));
            let mut out = Vec::new();
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut finished = false;
            for _ in 0..20_000 {
                let logits: Vec<f32> = (0..vocab.len()).map(|_| rng.f32()).collect();
                let id = pick(&c, &logits, &vocab, &[eos]).unwrap();
                if id == eos {
                    finished = true;
                    break;
                }
                let bytes = vocab[id as usize].clone().unwrap();
                c.advance(&bytes).unwrap();
                out.extend_from_slice(&bytes);
            }
            if finished {
                proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).unwrap().is_object());
            }
        }
    }
}
