//! Compiling a JSON schema into the automaton's nodes.

use serde_json::Value;

use super::{DEFAULT_MAX_ITEMS, DEFAULT_MAX_STRING, MAX_DEPTH};

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
    pub(super) nodes: Vec<Node>,
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
