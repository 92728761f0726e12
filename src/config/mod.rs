//! The configuration stage: `vlmtest.toml`, then every `VLMTEST_*` variable, then CLI flags
//! (later wins), resolved and checked once into one typed [`Config`]. Nothing else reads the
//! environment or the file: the rest of the crate receives typed values.
//!
//! - [`file`]: the file's tables as serde types;
//! - `gate`: a gate's bound;
//! - [`env`](mod@env): every variable read, with its type and default, and the process-wide knobs;
//! - `resolve`: the merge of file, environment and flags;
//! - [`rubrics`]: the judge rubrics checked with the rest;
//! - `locate`: file, line and key of a TOML error;
//! - `error`: the stage's errors and warnings.

pub mod env;
mod error;
mod file;
mod gate;
mod locate;
mod resolve;
pub mod rubrics;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use error::{ConfigError, ConfigWarning, TomlError};
pub use file::{
    MissingImage, ModelConfig, RowScorer, SourceConfig, SuiteConfig, THRESHOLD_SCORERS,
};
pub use gate::GateBound;
pub use locate::{line_of, toml_error};
pub use resolve::project_root;

use crate::judge::JudgeSettings;

/// The file name looked for at the project root.
pub const CONFIG_FILE: &str = "vlmtest.toml";

/// Overrides from CLI flags (applied after `vlmtest.toml` and the environment).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--model`.
    pub model: Option<String>,
    /// `--adapter`.
    pub adapter: Option<PathBuf>,
    /// `--max-samples`.
    pub max_samples: Option<usize>,
    /// `--max-new-tokens`.
    pub max_new_tokens: Option<usize>,
    /// `--cache`.
    pub cache: Option<crate::cache::AnswerCacheMode>,
}

/// The resolved run configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[model]`, with the environment and flags applied.
    pub model: ModelConfig,
    /// The judge: `[judge]` with `VLMTEST_JUDGE_*` applied; `None` when neither configures one.
    pub judge: Option<JudgeSettings>,
    /// `[suites.<name>]` tables.
    pub suites: BTreeMap<String, SuiteConfig>,
    /// Set when the environment or a flag chose the model: it then applies to every suite.
    pub model_forced: bool,
    /// `VLMTEST_STRICT`: known failures of the accepted snapshot fail too.
    pub strict: bool,
    /// `VLMTEST_ANSWER_CACHE`: the answer cache folder instead of `target/vlmtest/answers`.
    pub answer_cache: Option<PathBuf>,
    /// `--cache`: how the run uses the answer cache.
    pub answer_cache_mode: crate::cache::AnswerCacheMode,
    /// What the stage tolerated but the user should see (printed once by the binary or harness).
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// The settings of suite `name` (defaults when it has no table).
    pub fn suite(&self, name: &str) -> SuiteConfig {
        self.suites.get(name).cloned().unwrap_or_default()
    }

    /// The model spec that answers `suite`: a forced one (flag, environment), else the suite's
    /// own, else `[model].spec`.
    pub fn model_spec_for(&self, suite: &str) -> &str {
        if !self.model_forced {
            if let Some(spec) = self.suites.get(suite).and_then(|s| s.model.as_deref()) {
                return spec;
            }
        }
        &self.model.spec
    }
}
