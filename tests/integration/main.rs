//! Integration tests, one module per area.

mod gguf_model;
mod harness;
mod suite_loading;
