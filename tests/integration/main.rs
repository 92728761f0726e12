//! Integration tests, one module per area.

mod gguf_model;
mod judge_faults;
mod judge_serve;
mod harness;
mod suite_loading;
mod task_import;
mod task_reference;
mod task_suites;
