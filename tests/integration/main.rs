//! Integration tests, one module per area.

mod gguf_model;
mod train_lora;
mod train_parity;
mod train_peft;
