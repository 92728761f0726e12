//! Integration tests, one module per area.

mod gguf_model;
