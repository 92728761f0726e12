//! vlmtest: `cargo test` for vision-language models.
//!
//! The flow, in the order data moves: `suite` loads probes and validation rows into `Case`s and
//! selects them by name; `model` answers them (batched, cached); `score` checks each answer;
//! `report` aggregates verdicts; `harness` turns each case into a libtest trial.

pub mod case;
pub mod judge;
pub mod lockfile;
pub mod model;
pub mod score;
pub mod serve;
