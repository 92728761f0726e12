//! `vlmtest import <kind> <input>`: the importers as a command that writes `cases/<suite>.jsonl`.

use std::path::PathBuf;
use std::time::Duration;

use super::download::DownloadOptions;
use super::split::Split;
use super::{load_with, write_jsonl, ImportOptions};
use crate::task::TaskError;

/// Arguments of `vlmtest import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// What the input is: deals (a folder of `*_annotated/NNNN.json` beside page images), spam (a
    /// TSV), price (a JSONL of rows with a numeric target) or labels (a ground-truth JSONL).
    #[arg(value_parser = ["deals", "spam", "price", "labels"])]
    pub kind: String,
    /// The input file or folder.
    pub input: PathBuf,
    /// Suite name (the first part of every test name); default: the kind.
    #[arg(long)]
    pub suite: Option<String>,
    /// Output JSONL; default: `cases/<suite>.jsonl`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the stratified split (spam).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of each class that goes to validation (spam).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Which split becomes cases (spam).
    #[arg(long, value_enum, default_value_t = Split::Val)]
    pub split: Split,
    /// Image cache folder, files named sha1(url) + extension (spam).
    #[arg(long, default_value = "cache/images")]
    pub image_cache: PathBuf,
    /// Parallel downloads (spam).
    #[arg(long, default_value_t = 8)]
    pub download_workers: usize,
    /// Retries of a transient download failure, with exponential backoff (spam).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// First backoff in milliseconds, doubled on each retry (spam).
    #[arg(long, default_value_t = 500)]
    pub backoff_ms: u64,
    /// Largest image accepted, in bytes (spam).
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub max_image_bytes: u64,
    /// Use only cached images; never download (spam).
    #[arg(long)]
    pub offline: bool,
    /// Target field of price rows.
    #[arg(long, default_value = "price")]
    pub target: String,
    /// Folder of content-hash-named images (labels); default: beside the ground truth.
    #[arg(long)]
    pub images: Option<PathBuf>,
}

impl ImportArgs {
    pub fn options(&self) -> ImportOptions {
        ImportOptions {
            seed: self.seed,
            val_fraction: self.val_fraction,
            split: self.split,
            download: DownloadOptions {
                cache_dir: self.image_cache.clone(),
                workers: self.download_workers,
                retries: self.retries,
                backoff: Duration::from_millis(self.backoff_ms),
                max_bytes: self.max_image_bytes,
                offline: self.offline,
                ..DownloadOptions::default()
            },
            target: self.target.clone(),
            images: self.images.clone(),
        }
    }
}

/// Imports and writes the suite; prints a summary, the notes and every rejected row to stderr.
pub fn run_import(args: &ImportArgs) -> Result<(), TaskError> {
    let suite = args.suite.clone().unwrap_or_else(|| args.kind.clone());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("cases").join(format!("{suite}.jsonl")));
    let imported = load_with(&args.kind, &args.input, &suite, &args.options())?;
    write_jsonl(&imported.cases, &out)?;
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    for r in &imported.rejected {
        eprintln!("rejected: {r}");
    }
    eprintln!(
        "wrote {} cases to {} ({} rows rejected)",
        imported.cases.len(),
        out.display(),
        imported.rejected.len()
    );
    Ok(())
}
