//! A local Qwen3-VL model, on candle: `processor` turns a conversation into ids and pixels (chat
//! template, image placeholders, preprocessing), `network` is the vision tower with DeepStack
//! features and the mrope text decoder with its prefill and decode steps, and `model` loads a
//! checkpoint (and adapter) behind the `Model` and `Decoder` traits. Generation itself is the
//! shared loop of `model::decode`.
//!
//! candle-transformers ships a `qwen3_vl` module, but it attends both ways over the prompt, has
//! no multimodal positions and no processor (see FACTS.md), so this is vlmtest's own forward,
//! checked against transformers on seeded checkpoints (`scripts/qwen3vl_parity.py`).

pub mod adapter;
pub mod config;
pub mod fixture;
pub mod linear;
pub mod model;
pub mod network;
pub mod processor;
pub mod prompt;
pub mod template;
pub mod text;
pub mod vision;

pub use config::Config;
pub use model::Qwen3VlModel;
pub use network::{BatchDecode, Network};
pub use processor::{Prepared, Processor, ProcessorError};
