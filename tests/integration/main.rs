//! Integration tests, one module per area.

mod compare;
mod config_stage;
mod exactly_once;
mod export_bundle;
mod fuzz;
mod gguf_adapter;
mod gguf_model;
mod green_means_green;
mod harness;
mod html_report;
mod judge_examples;
mod judge_faults;
mod judge_live;
mod judge_serve;
mod judge_steps;
mod labels_workflow;
mod qwen_model;
mod qwen_parity;
mod serve_models;
mod suite_loading;
/// The unit tests' helpers, one file for both.
#[path = "../../src/test_support.rs"]
mod support;
mod task_import;
mod task_reference;
mod task_suites;
mod train_lora;
mod train_parity;
mod train_peft;
mod train_qwen;
