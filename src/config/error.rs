//! The configuration stage's errors and warnings: each names where the bad setting came from —
//! file, line and key for TOML, the variable and its value for the environment.

use std::fmt;
use std::path::PathBuf;

use super::env::{EnvError, UnknownVariable};
use crate::judge::JudgeError;

/// A setting in a TOML file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TomlError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key (`suites.spam.gates.pass_rate`), when known.
    pub key: Option<String>,
    /// What is wrong, as the parser or the check says it.
    pub message: String,
}

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why the run configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key or value of `vlmtest.toml` or of a rubric file.
    #[error(transparent)]
    Toml(#[from] TomlError),
    /// An environment variable.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A rubric file that parses but does not make sense (`name` ≠ file name, empty criteria).
    #[error(transparent)]
    Rubric(#[from] JudgeError),
}

/// Something the configuration stage tolerates but the user should see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A `VLMTEST_*` variable vlmtest does not read: probably a typo.
    UnknownVariable(UnknownVariable),
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::UnknownVariable(u) => u.fmt(f),
        }
    }
}
