//! Weak labels from a VLM server (seed 004): the seed's four `tools/*.py` scripts as
//! `vlmtest labels …` commands.
//!
//! `annotate` walks a photo folder and asks an OpenAI-compatible vision model for one JSON
//! annotation per image (appended to a JSONL file, resumable); `convert` maps those annotations
//! to label ground truth with an editable mapping file; `sample` draws a seeded subset for human
//! review; `eval` joins any prediction file to a ground truth by `image_id` and reports the label
//! metrics of [`crate::metric::labels`]. One job per file: `walk` (the folder), `id` (content
//! ids), `jsonl` (the torn-line-aware reader), `record` (the annotate output line), `schema` (the
//! default prompt and a JSON-schema validator), `annotate`, `mapping`, `convert`, `sample`, `eval`;
//! `args` holds the command-line flags.

pub mod annotate;
pub mod args;
pub mod convert;
pub mod eval;
pub mod id;
pub mod jsonl;
pub mod mapping;
pub mod record;
pub mod sample;
pub mod schema;
pub mod walk;

use std::path::{Path, PathBuf};

pub use args::{run, LabelsArgs};

/// An error and its causes, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Errors that stop a `vlmtest labels` command. Per-image problems are lines of the output, not
/// errors.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: field `{field}`: {message}", path.display())]
    Field {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{} exists: pass --resume to continue it, or remove it", path.display())]
    OutputExists { path: PathBuf },
    #[error("{} is locked by another process (is another `vlmtest labels annotate` writing it?)", path.display())]
    Locked { path: PathBuf },
    #[error("model spec: {0}")]
    Spec(String),
    #[error("invalid option: {0}")]
    Option(String),
    #[error(
        "the endpoint stopped answering ({failures} requests in a row failed, last: {last}); \
         {written} lines are safe in {}: rerun with --resume",
        path.display()
    )]
    EndpointDown {
        failures: usize,
        last: String,
        written: usize,
        path: PathBuf,
    },
}

impl LabelsError {
    pub(crate) fn field(path: &Path, line: usize, field: &str, message: impl Into<String>) -> Self {
        Self::Field {
            path: path.to_owned(),
            line,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::File {
            path: path.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn read(path: &Path, source: std::io::Error) -> Self {
        Self::Read {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn write(path: &Path, source: std::io::Error) -> Self {
        Self::Write {
            path: path.to_owned(),
            source,
        }
    }
}
