//! `vlmtest-train`: LoRA fine-tuning with the same cases and scorers vlmtest tests with.
//! Everything lives in `vlmtest::train`; this file only parses flags and prints.

use clap::Parser;
use vlmtest::train::cli::{run, Cli};

fn main() -> std::process::ExitCode {
    vlmtest::train::tune_allocator();
    let cli = Cli::parse();
    match run(cli).map_err(anyhow::Error::from) {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
