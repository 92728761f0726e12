//! Errors of the task stage: bad rows name file, line and field; bad scores name the case.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown task `{0}` (expected one of deals, spam, price, labels)")]
    UnknownTask(String),
    #[error("unknown import kind `{0}` (expected one of deals, spam, price, labels)")]
    UnknownKind(String),
    #[error("{}:{line}: field `{field}`: {message}", file.display())]
    Row {
        file: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
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
    #[error("{}: no usable rows ({rejected} rejected), first problem: {first}", path.display())]
    NoRows {
        path: PathBuf,
        rejected: usize,
        first: Box<TaskError>,
    },
    #[error("{}: {message}", path.display())]
    Layout { path: PathBuf, message: String },
    #[error("case {case}: score data is not this task's: {message}")]
    Data { case: String, message: String },
}

impl TaskError {
    pub fn row(
        file: &std::path::Path,
        line: usize,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        TaskError::Row {
            file: file.to_owned(),
            line,
            field: field.to_owned(),
            message: message.into(),
        }
    }
}
