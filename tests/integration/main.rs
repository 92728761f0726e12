//! Integration tests, one module per area.

mod gguf_model;
mod qwen_model;
mod qwen_parity;
