//! `vlmtest import <kind> <input>`: the importers as a command that writes `cases/<suite>.jsonl`.

use std::path::{Path, PathBuf};
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
    /// Output JSONL; default: `<project root>/cases/<suite>.jsonl` (`--root`, `VLMTEST_ROOT`).
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

/// The images of `cases` that lie outside `root` (the loader would refuse them), as one message.
fn images_outside(cases: &[crate::case::Case], root: &Path) -> Option<String> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let outside: Vec<String> = cases
        .iter()
        .flat_map(|c| {
            c.messages
                .iter()
                .flat_map(|m| m.images())
                .map(move |i| (c, i))
        })
        .filter_map(|(c, image)| match image {
            crate::case::ImageSource::Path(p) => {
                let inside = p.canonicalize().is_ok_and(|p| p.starts_with(&root));
                (!inside).then(|| format!("{}: {}", c.id, p.display()))
            }
            crate::case::ImageSource::DataUri(_) => None,
        })
        .collect();
    if outside.is_empty() {
        return None;
    }
    let shown: Vec<&str> = outside.iter().take(3).map(String::as_str).collect();
    Some(format!(
        "{} image(s) lie outside the project root {}, where `vlmtest run` would refuse them ({}{}); \
         copy the input under the project (e.g. into fixtures/) or import with --root naming a \
         folder that holds both",
        outside.len(),
        root.display(),
        shown.join(", "),
        if outside.len() > 3 { ", …" } else { "" }
    ))
}

/// Imports and writes the suite of the project at `root` (`--root` / `VLMTEST_ROOT`); prints a
/// summary, the notes and every rejected row to stderr. Writes nothing when a case's image lies
/// outside the project, since the loader would reject it.
pub fn run_import(args: &ImportArgs, root: &Path) -> Result<(), TaskError> {
    let suite = args.suite.clone().unwrap_or_else(|| args.kind.clone());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("cases").join(format!("{suite}.jsonl")));
    let imported = load_with(&args.kind, &args.input, &suite, &args.options())?;
    if let Some(message) = images_outside(&imported.cases, root) {
        return Err(TaskError::Layout {
            path: args.input.clone(),
            message,
        });
    }
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
