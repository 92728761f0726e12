//! vlmtest: `cargo test` for vision-language models.
//!
//! The flow, in the order data moves: `suite` loads probes and validation rows into `Case`s and
//! selects them by name; `model` answers them (batched, cached by `cache`); `score` checks each
//! answer; `report` aggregates verdicts; `harness` turns each case into a libtest trial and
//! `cli` drives the same `session` from the command line.

pub mod cache;
pub mod case;
pub mod cli;
pub mod compare;
pub mod config;
pub mod harness;
pub mod image;
pub mod judge;
pub mod labels;
pub mod lockfile;
pub mod lora;
pub mod metric;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod report;
pub mod run_store;
pub mod score;
pub mod serve;
pub mod session;
pub mod suite;
pub mod task;
pub mod train;
pub mod verdict;

#[cfg(test)]
mod test_support;
