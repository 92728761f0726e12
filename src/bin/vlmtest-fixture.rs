//! Writes seeded Qwen3-VL fixtures: `checkpoint DIR`, `adapter DIR`, `image FILE`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vlmtest::model::qwen3_vl::fixture::{self, AdapterSpec, Spec};

#[derive(Parser)]
#[command(about = "Write tiny seeded Qwen3-VL checkpoints, PEFT adapters and test images")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// A tiny checkpoint folder (hidden 64, 2 text layers, 3 vision blocks, 288 tokens).
    Checkpoint {
        dir: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// A PEFT LoRA adapter for the tiny checkpoint.
    Adapter {
        dir: PathBuf,
        #[arg(long, default_value_t = 11)]
        seed: u64,
        #[arg(long, default_value_t = 4)]
        rank: usize,
        #[arg(long, default_value_t = 8.0)]
        alpha: f64,
        #[arg(long, value_delimiter = ',', default_value = "q_proj,v_proj")]
        targets: Vec<String>,
    },
    /// A seeded RGB test image (PNG).
    Image {
        path: PathBuf,
        #[arg(long)]
        width: u32,
        #[arg(long)]
        height: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().what {
        What::Checkpoint { dir, seed } => {
            fixture::write_checkpoint(&dir, &Spec::tiny(), seed, candle_core::DType::F32)
                .with_context(|| format!("writing checkpoint to {}", dir.display()))?;
        }
        What::Adapter {
            dir,
            seed,
            rank,
            alpha,
            targets,
        } => {
            let spec = AdapterSpec {
                rank,
                alpha,
                targets,
                seed,
            };
            fixture::write_adapter(&dir, &Spec::tiny(), &spec, "vlmtest/tiny-qwen3-vl")
                .with_context(|| format!("writing adapter to {}", dir.display()))?;
        }
        What::Image {
            path,
            width,
            height,
            seed,
        } => {
            fixture::write_image(&path, width, height, seed)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
