//! Integration tests, one module per area.

mod gguf_model;
mod judge_faults;
mod judge_serve;
