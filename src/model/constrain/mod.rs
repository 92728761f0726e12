//! Constrained decoding, in three steps with a file each: `schema` compiles a (subset of) JSON
//! schema, `automaton` is the byte-level pushdown automaton that accepts exactly the prefixes of
//! JSON texts matching it, and `pick` masks a step's logits with it.
//!
//! Supported: `type` object (properties generated in `required` order; only required ones),
//! array (`items`, `maxItems`, default cap 32), string (`maxLength`, default cap 512 characters),
//! integer, number, boolean, null, `enum` and `const` of any JSON values, small integer ranges
//! (`minimum`..`maximum`, at most 201 values) as enums. Anything else (`anyOf`, `$ref`, type
//! unions) is generated as any JSON value. `json_object` mode is "any JSON object". Whitespace
//! between tokens is allowed in runs of at most 4 bytes and nesting is capped at 16, so every
//! generation ends.

mod automaton;
mod pick;
mod schema;
#[cfg(test)]
mod tests;

pub use automaton::JsonConstraint;
pub use pick::{allowed_by_rank, pick};
pub use schema::{Node, Rejected, Schema, SchemaError};

const DEFAULT_MAX_STRING: usize = 512;
const DEFAULT_MAX_ITEMS: usize = 32;
const MAX_WS_RUN: u8 = 4;
const MAX_DEPTH: usize = 16;
const MAX_ANY_KEYS: usize = 32;
