//! Importers: the seeds' data formats as cases. `load` returns cases for the harness directly;
//! `run_import` (the `vlmtest import` subcommand) writes them as a `cases/<suite>.jsonl` file in
//! the validation-row format. A bad row is reported with file, line and field and skipped; it
//! never costs the good rows.

pub mod deals;
pub mod download;
pub mod labels;
pub mod price;
mod row;
pub mod spam;
pub mod split;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::TaskError;
use crate::case::{Case, CaseId, Expectation, ImageSource, Message, Origin, Part, Role};

pub use row::{case_to_row, relative_to, write_jsonl};

/// Everything an importer may be told; `Default` is what `load` uses.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub seed: u64,
    pub val_fraction: f64,
    pub split: split::Split,
    pub download: download::DownloadOptions,
    /// The price importer's target field.
    pub target: String,
    /// The labels importer's image folder (default: beside the ground-truth file).
    pub images: Option<PathBuf>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            seed: 42,
            val_fraction: 0.1,
            split: split::Split::Val,
            download: download::DownloadOptions::default(),
            target: "price".into(),
            images: None,
        }
    }
}

/// An import's result: the good cases, the rejected rows, and notes (dropped unlabeled rows,
/// failed downloads).
#[derive(Debug, Default)]
pub struct Imported {
    pub cases: Vec<Case>,
    pub rejected: Vec<TaskError>,
    pub notes: Vec<String>,
}

/// Loads with explicit options; see `load`.
pub fn load_with(
    kind: &str,
    path: &Path,
    suite: &str,
    o: &ImportOptions,
) -> Result<Imported, TaskError> {
    let mut imported = match kind {
        "deals" => deals::import(path, suite)?,
        "spam" => spam::import(path, suite, o)?,
        "price" => price::import(path, suite, o)?,
        "labels" => labels::import(path, suite, o)?,
        other => return Err(TaskError::UnknownKind(other.into())),
    };
    if imported.cases.is_empty() {
        let rejected = imported.rejected.len();
        let first = imported
            .rejected
            .drain(..)
            .next()
            .unwrap_or(TaskError::Layout {
                path: path.to_owned(),
                message: "the input holds no rows".into(),
            });
        return Err(TaskError::NoRows {
            path: path.to_owned(),
            rejected,
            first: Box::new(first),
        });
    }
    let mut seen = std::collections::BTreeMap::new();
    for c in &imported.cases {
        if let Some(first) = seen.insert(c.id.test_name(), c.origin.line) {
            return Err(TaskError::Layout {
                path: path.to_owned(),
                message: format!(
                    "duplicate case name {} (rows {first:?} and {:?})",
                    c.id, c.origin.line
                ),
            });
        }
    }
    Ok(imported)
}

/// Makes a case id safe for a test name: anything but letters, digits, `_`, `-` and `.` becomes `_`.
pub fn sanitise_id(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "_".into()
    } else {
        out
    }
}

/// What an importer knows about one row.
pub(crate) struct CaseParts<'a> {
    pub suite: &'a str,
    pub category: &'a str,
    pub id: &'a str,
    pub system: &'a str,
    pub user: String,
    pub images: Vec<PathBuf>,
    pub reference: String,
    pub task: &'a str,
    pub spec: Value,
    pub metadata: BTreeMap<String, Value>,
    pub file: &'a Path,
    pub line: usize,
}

pub(crate) fn make_case(p: CaseParts) -> Case {
    let mut parts: Vec<Part> = p
        .images
        .into_iter()
        .map(|i| Part::Image {
            image: ImageSource::Path(i),
        })
        .collect();
    parts.push(Part::Text { text: p.user });
    let mut metadata = p.metadata;
    metadata.insert("category".into(), Value::String(p.category.to_owned()));
    Case {
        id: CaseId::new(p.suite, &sanitise_id(p.category), &sanitise_id(p.id)),
        tags: vec![p.task.to_owned()],
        messages: vec![
            Message::text(Role::System, p.system),
            Message {
                role: Role::User,
                parts,
            },
        ],
        reference: Some(p.reference),
        context: None,
        expect: vec![Expectation::Task {
            task: p.task.to_owned(),
            spec: p.spec,
        }],
        metadata,
        ignored: false,
        origin: Origin {
            file: p.file.to_owned(),
            line: Some(p.line),
        },
    }
}

/// Reads a whole input file, naming it on failure.
pub(crate) fn read(path: &Path) -> Result<String, TaskError> {
    std::fs::read_to_string(path).map_err(|source| TaskError::Read {
        path: path.to_owned(),
        source,
    })
}

pub use args::{run_import, ImportArgs};
mod args;
