//! Stage 3b of the flow: scoring answers with an LLM judge over any OpenAI-compatible endpoint.
//!
//! The harness calls [`JudgeRunner::score`] once per process, after inference, with every
//! selected case's judge expectations. Each becomes one chat request built from its rubric
//! (`judges/*.toml`), answered from the on-disk cache or over HTTP with bounded concurrency,
//! parsed strictly (one repair round), and turned into a `Score` named `judge.<rubric>`.
//! Every failure of the judge itself is a `ScorerError` score: counted apart, never a crash and
//! never a silent pass.

pub mod cache;
pub mod client;
pub mod metric;
pub mod parse;
pub mod prompt;
pub mod rubric;
pub mod runner;
pub mod settings;
pub mod steps;
pub mod stub;

use std::path::PathBuf;

pub use runner::{JudgeItem, JudgeRunner, JudgeStats};
pub use settings::{CacheMode, JudgeSettings};

/// Errors that stop the judge from starting. Per-case failures are scores, not errors.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("invalid rubric {path}: {reason}")]
    Rubric { path: PathBuf, reason: String },
    #[error("invalid [judge] settings: {0}")]
    Settings(String),
    #[error("judge cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("failed to start the judge client: {0}")]
    Client(String),
}
