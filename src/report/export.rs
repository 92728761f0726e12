//! The artifact bundle of a run (seed 001's packaging step): `predictions.csv`, `metrics.json`,
//! `classification_report.json`, `run_metadata.json` and `report.html` in one folder, and
//! optionally `artifacts.zip` holding all of them (deflate).
//!
//! No Parquet file: the `parquet` crate (even without its arrow feature) takes minutes to compile
//! on the 2-core machines this project is built on, for a file pandas reads as easily as the CSV.

pub mod classification;
pub mod csv;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::html::{self, HtmlMeta};
use super::Report;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the ZIP archive {path}: {reason}")]
    Zip { path: PathBuf, reason: String },
}

/// What the bundle records beyond the reports.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Also write `artifacts.zip`.
    pub zip: bool,
    /// The resolved configuration of the run (`vlmtest.toml` after overrides), if known.
    pub config: Option<Value>,
}

/// The files the bundle holds, in the order they are written (and zipped).
pub const FILES: [&str; 5] = [
    "predictions.csv",
    "metrics.json",
    "classification_report.json",
    "run_metadata.json",
    "report.html",
];

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// `run_metadata.json`: vlmtest version, the run's facts, machine, per suite the model, case
/// count, thresholds, timings, tokens, gates and metrics.
pub fn run_metadata(reports: &[Report], meta: &HtmlMeta, config: Option<&Value>) -> Value {
    let mut suites = Map::new();
    for r in reports {
        let answered: Vec<_> = r
            .verdicts
            .iter()
            .filter_map(|v| v.answer.as_ref())
            .collect();
        let mut thresholds = Map::new();
        for s in r.verdicts.iter().flat_map(|v| &v.scores) {
            thresholds
                .entry(s.scorer.clone())
                .or_insert(json!(s.threshold));
        }
        let policy = r
            .verdicts
            .iter()
            .flat_map(|v| &v.scores)
            .find(|s| s.scorer == "spam")
            .and_then(|s| s.data.get("policy").cloned());
        suites.insert(
            r.suite.clone(),
            json!({
                "model": r.model,
                "cases": r.overall.cases,
                "passed": r.overall.passed,
                "model_errors": r.model_errors,
                "scorer_errors": r.scorer_errors,
                // Entries that did not load count as cases that did not pass (see `Report`).
                "load_errors": r.load_errors,
                "thresholds": thresholds,
                "spam_policy": policy,
                "timing": {
                    "answer_seconds": answered.iter().map(|a| a.elapsed.as_secs_f64()).sum::<f64>(),
                    "prompt_tokens": answered.iter().map(|a| a.prompt_tokens).sum::<usize>(),
                    "generated_tokens": answered.iter().map(|a| a.generated_tokens).sum::<usize>(),
                },
                "gates": r.gates,
                "gates_passed": r.gates_passed(),
                "task_metrics": r.tasks.iter().map(|(k, v)| (k.clone(), v.get("metrics").cloned().unwrap_or(Value::Null))).collect::<Map<_, _>>(),
                "judge": r.judge,
            }),
        );
    }
    json!({
        "vlmtest_version": env!("CARGO_PKG_VERSION"),
        "run_id": meta.run_id,
        "model": meta.model,
        "adapter": meta.adapter,
        "date": meta.date,
        "git_commit": meta.git_commit,
        "machine": {
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        "config": config,
        "suites": suites,
    })
}

/// The bundle's files as `(name, bytes)`, in [`FILES`] order.
pub fn files(
    reports: &[Report],
    meta: &HtmlMeta,
    opts: &ExportOptions,
) -> Vec<(&'static str, Vec<u8>)> {
    let metrics: Map<String, Value> = reports
        .iter()
        .map(|r| (r.suite.clone(), csv::metrics(r)))
        .collect();
    vec![
        (FILES[0], csv::predictions(reports, meta).into_bytes()),
        (FILES[1], pretty(&Value::Object(metrics)).into_bytes()),
        (FILES[2], pretty(&classification::all(reports)).into_bytes()),
        (
            FILES[3],
            pretty(&run_metadata(reports, meta, opts.config.as_ref())).into_bytes(),
        ),
        (FILES[4], html::render(reports, meta).into_bytes()),
    ]
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the bundle into `dir` (created if missing); returns the paths written.
pub fn write(
    reports: &[Report],
    meta: &HtmlMeta,
    dir: &Path,
    opts: &ExportOptions,
) -> Result<Vec<PathBuf>, ExportError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let files = files(reports, meta, opts);
    let mut written = Vec::new();
    for (name, bytes) in &files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        written.push(path);
    }
    if opts.zip {
        let path = dir.join("artifacts.zip");
        let zerr = |e: &dyn std::fmt::Display| ExportError::Zip {
            path: path.clone(),
            reason: e.to_string(),
        };
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in &files {
            zip.start_file(*name, options).map_err(|e| zerr(&e))?;
            zip.write_all(bytes).map_err(|e| zerr(&e))?;
        }
        zip.finish().map_err(|e| zerr(&e))?;
        written.push(path);
    }
    Ok(written)
}
