//! The `vlmtest-train` command line: `--config train.toml`, a flag for every key, and `bench`.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use super::bench::{run_bench, BenchArgs};
use super::config::{device_for, TrainArgs, TrainConfig};
use super::eval::Validation;
use super::model::load_base;
use super::run::{summary_table, train};
use super::TrainError;
use crate::case::Case;
use crate::config::{RowScorer, SuiteConfig};

/// Fine-tune a model with LoRA on vlmtest case rows; evaluate before, during and after.
#[derive(Debug, Parser)]
#[command(name = "vlmtest-train", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A `train.toml` whose keys are the flags below (flags win).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
    #[command(flatten)]
    pub args: TrainArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Time LoRA training steps (seconds per step, tokens/s) and print one JSON line.
    Bench(BenchArgs),
}

/// The folder a row file's paths must stay within: the vlmtest project when the file is one of
/// its files (so `cases/x.jsonl` may name `../fixtures/…` as `vlmtest run` allows), else the
/// file's own folder.
fn rows_root(file: &Path, project: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    match (file.canonicalize(), project.canonicalize()) {
        (Ok(f), Ok(p)) if f.starts_with(&p) => p,
        _ => parent,
    }
}

/// Loads case rows for training: the suite loader with the reference kept as an exact-match and
/// token-F1 expectation, paths checked against `project` (see `rows_root`). Every bad row is
/// reported, one per line.
pub fn load_rows(files: &[PathBuf], project: &Path) -> Result<Vec<Case>, TrainError> {
    let cfg = SuiteConfig {
        row_scorers: vec![RowScorer::Exact, RowScorer::TokenF1],
        ..SuiteConfig::default()
    };
    let mut cases = Vec::new();
    for f in files {
        if !f.is_file() {
            return Err(TrainError::Io {
                path: f.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let suite = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rows".into());
        let root = rows_root(f, project);
        let (mut got, errors) = crate::suite::rows::load(f, &suite, &cfg, &root);
        if !errors.is_empty() {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(TrainError::Data {
                origin: f.display().to_string(),
                case: format!("{} bad row(s)", errors.len()),
                reason: lines.join("\n"),
            });
        }
        if got.is_empty() {
            return Err(TrainError::NoData(format!("{} holds no rows", f.display())));
        }
        cases.append(&mut got);
    }
    Ok(cases)
}

/// Runs the command; returns the text to print.
pub fn run(cli: Cli) -> Result<String, TrainError> {
    if let Some(Command::Bench(b)) = &cli.command {
        let r = run_bench(b)?;
        return serde_json::to_string(&r)
            .map(|line| line + "\n")
            .map_err(|e| TrainError::Io {
                path: "stdout".into(),
                source: std::io::Error::other(e),
            });
    }
    let cfg = TrainConfig::resolve(cli.config.as_deref(), &cli.args)?;
    let train_rows = load_rows(&cfg.train, &cfg.project)?;
    let val = match &cfg.suite {
        Some(name) => Validation::of_suite(&cfg.project, name)?,
        None if cfg.val.is_empty() => Validation::none(),
        None => Validation::of_rows(load_rows(&cfg.val, &cfg.project)?),
    };
    let device = device_for(cfg.device)?;
    let mut model = load_base(&cfg.base, &device, cfg.dtype)?;
    let report = train(&cfg, model.as_mut(), &train_rows, val, !cli.quiet)?;
    let compare_hint = match (&report.before, &report.after) {
        (Some(_), Some(_)) => format!(
            "compare with significance: vlmtest compare {0}/evals/before {0}/evals/after\n",
            cfg.output_dir.display()
        ),
        _ => String::new(),
    };
    Ok(format!(
        "{}\nsteps {}/{}{}; adapter written to {}\n{compare_hint}",
        summary_table(&report),
        report.state.step,
        report.total_steps,
        if report.state.stopped_early {
            " (stopped early)"
        } else {
            ""
        },
        report.adapter_dir.display()
    ))
}
