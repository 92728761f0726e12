//! `vlmtest.toml`: the model, generation settings and each suite's prompt, scorers, thresholds and
//! gates; then environment overrides (`VLMTEST_MODEL`, `VLMTEST_ADAPTER`, `VLMTEST_MAX_SAMPLES`,
//! `VLMTEST_MAX_NEW_TOKENS`) and CLI flags, applied in that order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::suite::SuiteError;

/// The file name looked for at the project root.
pub const CONFIG_FILE: &str = "vlmtest.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub model: ModelConfig,
    /// Judge endpoint settings, read by the judge stage.
    #[serde(default)]
    pub judge: Option<toml::Table>,
    #[serde(default)]
    pub suites: BTreeMap<String, SuiteConfig>,
    /// Set when the environment or a flag chose the model: it then applies to every suite.
    #[serde(skip)]
    pub model_forced: bool,
}

/// Which model answers, and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `smollm2` (the default local model), a `.gguf` file, a checkpoint folder,
    /// `replay:<file.jsonl>` or `openai:<base-url>#<model>`.
    #[serde(default = "default_spec")]
    pub spec: String,
    pub adapter: Option<PathBuf>,
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Run at most this many cases per suite (in file order).
    pub max_samples: Option<usize>,
}

fn default_spec() -> String {
    "smollm2".into()
}
fn default_max_new_tokens() -> usize {
    64
}
fn default_batch_size() -> usize {
    8
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            spec: default_spec(),
            adapter: None,
            max_new_tokens: default_max_new_tokens(),
            batch_size: default_batch_size(),
            max_samples: None,
        }
    }
}

/// What to do with a case whose image file is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingImage {
    /// The case fails to load, naming the file.
    #[default]
    Fail,
    /// The image is dropped and the prompt says so ("image unavailable").
    TextOnly,
}

/// Scorers applied to every validation row, derived from its reference answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowScorer {
    /// Every number (with unit) stated in the reference must appear in the answer.
    Numbers,
    /// Token F1 against the reference.
    TokenF1,
    /// The answer equals the reference after normalisation.
    Exact,
}

/// One suite's settings (`[suites.<name>]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteConfig {
    /// This suite's model spec, instead of `[model].spec` (e.g. a replay file for an image suite
    /// when the default model is text-only). `--model` / `VLMTEST_MODEL` override it.
    pub model: Option<String>,
    /// System prompt prepended to every case that has none.
    pub system: Option<String>,
    /// Template for probe prompts: `{question}` and `{context}` are replaced.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    #[serde(default)]
    pub missing_image: MissingImage,
    /// Scorers derived from each row's reference answer.
    #[serde(default = "default_row_scorers")]
    pub row_scorers: Vec<RowScorer>,
    /// Judge rubrics applied to every row (`judges/<name>.toml`).
    #[serde(default)]
    pub row_judges: Vec<String>,
    /// Default thresholds per scorer name (`numeric`, `keywords`, `token_f1`, `judge.correctness`).
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
    /// Relative tolerance for numbers taken from a row's reference.
    #[serde(default = "default_row_tolerance")]
    pub row_tolerance: f64,
    /// Bounds on aggregate values: `pass_rate`, `score.<scorer>` (mean), `category.<name>`,
    /// `<task>.<metric>`. A number is a minimum; `{ max = 0.2 }` (or `{ min, max }`) bounds from
    /// above, for lower-is-better metrics such as SMAPE or the malformed rate.
    #[serde(default)]
    pub gates: BTreeMap<String, GateBound>,
    /// Metadata fields to break aggregates down by (besides `category`).
    #[serde(default)]
    pub slices: Vec<String>,
    /// Cases of this suite come from an importer instead of `cases/<name>.jsonl`.
    pub source: Option<SourceConfig>,
    /// Bootstrap resamples behind the report's intervals of scorer means and task metrics
    /// (seeded, so reproducible); 0 leaves the intervals out.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
    /// The regression gate against a baseline run (`[suites.<name>.baseline]`).
    pub baseline: Option<crate::compare::BaselineConfig>,
}

fn default_bootstrap() -> usize {
    crate::metric::significance::DEFAULT_BOOTSTRAP.resamples
}

/// A gate's bound: a bare number is a minimum.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum GateBound {
    Min(f64),
    Range {
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
    },
}

impl GateBound {
    /// `(min, max)`, either possibly absent.
    pub fn bounds(self) -> (Option<f64>, Option<f64>) {
        match self {
            GateBound::Min(m) => (Some(m), None),
            GateBound::Range { min, max } => (min, max),
        }
    }
}

/// An importer source: `{ kind = "spam", path = "fixtures/spam/val.tsv" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: String,
    pub path: PathBuf,
}

fn default_prompt() -> String {
    "{context}\n\n{question}".into()
}
fn default_row_scorers() -> Vec<RowScorer> {
    vec![RowScorer::Numbers]
}
fn default_row_tolerance() -> f64 {
    0.0
}

impl Default for SuiteConfig {
    fn default() -> Self {
        Self {
            model: None,
            system: None,
            prompt: default_prompt(),
            missing_image: MissingImage::default(),
            row_scorers: default_row_scorers(),
            row_judges: Vec::new(),
            thresholds: BTreeMap::new(),
            row_tolerance: default_row_tolerance(),
            gates: BTreeMap::new(),
            slices: Vec::new(),
            source: None,
            bootstrap: default_bootstrap(),
            baseline: None,
        }
    }
}

impl SuiteConfig {
    /// The threshold for `scorer`: the suite's, else `default`.
    pub fn threshold(&self, scorer: &str, default: f64) -> f64 {
        self.thresholds.get(scorer).copied().unwrap_or(default)
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Turns a TOML error into a `SuiteError` naming the file and line.
pub fn toml_error(file: &Path, text: &str, err: &toml::de::Error) -> SuiteError {
    let line = err.span().map(|s| line_of(text, s.start));
    SuiteError::new(file, line, None, err.message().to_string())
}

impl Config {
    /// Reads `vlmtest.toml` from `root`; a missing file means all defaults.
    pub fn load(root: &Path) -> Result<Self, SuiteError> {
        let path = root.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(SuiteError::new(
                    &path,
                    None,
                    None,
                    format!("cannot read: {e}"),
                ))
            }
        };
        toml::from_str(&text).map_err(|e| toml_error(&path, &text, &e))
    }

    /// Applies `VLMTEST_*` environment overrides.
    pub fn apply_env(&mut self) -> Result<(), SuiteError> {
        let env_path = Path::new("environment");
        if let Ok(spec) = std::env::var("VLMTEST_MODEL") {
            if !spec.is_empty() {
                self.model.spec = spec;
                self.model_forced = true;
            }
        }
        if let Ok(adapter) = std::env::var("VLMTEST_ADAPTER") {
            self.model.adapter = (!adapter.is_empty()).then(|| PathBuf::from(adapter));
        }
        for (var, slot) in [("VLMTEST_MAX_SAMPLES", &mut self.model.max_samples)] {
            if let Ok(v) = std::env::var(var) {
                let n = v.parse::<usize>().map_err(|e| {
                    SuiteError::new(env_path, None, Some(var), format!("`{v}`: {e}"))
                })?;
                *slot = Some(n);
            }
        }
        if let Ok(v) = std::env::var("VLMTEST_MAX_NEW_TOKENS") {
            self.model.max_new_tokens = v.parse::<usize>().map_err(|e| {
                SuiteError::new(
                    env_path,
                    None,
                    Some("VLMTEST_MAX_NEW_TOKENS"),
                    format!("`{v}`: {e}"),
                )
            })?;
        }
        Ok(())
    }

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

/// The project root: `$VLMTEST_ROOT`, else the directory of the crate under test
/// (`$CARGO_MANIFEST_DIR`, set by cargo for test processes), else the current directory.
pub fn project_root() -> PathBuf {
    for var in ["VLMTEST_ROOT", "CARGO_MANIFEST_DIR"] {
        if let Some(dir) = std::env::var_os(var) {
            return PathBuf::from(dir);
        }
    }
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "[model]\nspec = \"x\"\n\n[suites.a]\npromt = \"oops\"\n",
        )
        .expect("write");
        let err = Config::load(dir.path()).expect_err("unknown field");
        let msg = err.to_string();
        assert!(msg.contains("vlmtest.toml:5"), "{msg}");
        assert!(msg.contains("promt"), "{msg}");
    }

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config::load(dir.path()).expect("defaults");
        assert_eq!(cfg.model.spec, "smollm2");
        assert_eq!(cfg.suite("any").row_scorers, vec![RowScorer::Numbers]);
    }
}
