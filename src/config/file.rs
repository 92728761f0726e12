//! The tables of `vlmtest.toml` as serde types: every key that may be written, its type and its
//! default. Unknown keys are refused in every table, and values that would misbehave later
//! (a zero batch size, a threshold above 1, a negative tolerance) are refused while parsing, so
//! the error carries the line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::GateBound;
use crate::judge::JudgeSettings;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub judge: Option<JudgeSettings>,
    #[serde(default)]
    pub suites: BTreeMap<String, SuiteConfig>,
}

/// Which model answers, and how (`[model]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `smollm2` (the default local model), a `.gguf` file, a checkpoint folder,
    /// `replay:<file.jsonl>` or `openai:<base-url>#<model>`.
    #[serde(default = "default_spec")]
    pub spec: String,
    /// PEFT LoRA adapter folder, relative to the project root.
    pub adapter: Option<PathBuf>,
    /// Tokens generated per answer at most (at least 1).
    #[serde(
        default = "default_max_new_tokens",
        deserialize_with = "positive_count"
    )]
    pub max_new_tokens: usize,
    /// Cases answered per model call (at least 1).
    #[serde(default = "default_batch_size", deserialize_with = "positive_count")]
    pub batch_size: usize,
    /// Run at most this many cases per suite (in file order; at least 1).
    #[serde(default, deserialize_with = "some_positive_count")]
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

fn positive_count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(n)
}

fn some_positive_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    positive_count(d).map(Some)
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
    /// What a missing image does to its case.
    #[serde(default)]
    pub missing_image: MissingImage,
    /// Scorers derived from each row's reference answer.
    #[serde(default = "default_row_scorers")]
    pub row_scorers: Vec<RowScorer>,
    /// Judge rubrics applied to every row (`judges/<name>.toml`).
    #[serde(default)]
    pub row_judges: Vec<String>,
    /// Default thresholds per scorer name (`numeric`, `keywords`, `token_f1`, `judge.<rubric>`),
    /// each in 0..=1.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
    /// Relative tolerance for numbers taken from a row's reference (finite, at least 0).
    #[serde(default = "default_row_tolerance", deserialize_with = "tolerance")]
    pub row_tolerance: f64,
    /// Bounds on aggregate values: `pass_rate`, `score.<scorer>` (mean), `category.<name>`,
    /// `<task>.<metric>`. A number is a minimum; `{ max = 0.2 }` (or `{ min, max }`) bounds from
    /// above, for lower-is-better metrics such as SMAPE or the malformed rate.
    #[serde(default)]
    pub gates: BTreeMap<String, GateBound>,
    /// How many items a gate's metric may miss (entries that did not load, model errors, scorer
    /// and judge errors behind it) and still be judged; beyond that the gate fails as
    /// incomplete. 0 by default: a metric with errors behind it never passes by leaving them out.
    #[serde(default)]
    pub max_errors: usize,
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

/// The scorer names a threshold may be given for, besides `judge.<rubric>`.
pub const THRESHOLD_SCORERS: &[&str] = &["numeric", "keywords", "token_f1"];

/// Checks a suite's thresholds: a known scorer name (or `judge.<rubric>`) and a value in 0..=1.
/// Run after parsing, so the error can point at the key's own line.
pub(super) fn check_threshold(name: &str, value: f64) -> Result<(), String> {
    let judged = name.strip_prefix("judge.").is_some_and(|r| !r.is_empty());
    if !judged && !THRESHOLD_SCORERS.contains(&name) {
        return Err(format!(
            "unknown scorer `{name}` in thresholds, expected one of {} or `judge.<rubric>`",
            THRESHOLD_SCORERS
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("threshold `{name}` = {value} is outside 0..=1"));
    }
    Ok(())
}

fn tolerance<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(de::Error::custom(format!(
            "must be a finite number of at least 0, not {v}"
        )));
    }
    Ok(v)
}

/// An importer source: `{ kind = "spam", path = "fixtures/spam/val.tsv" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The importer: `deals`, `spam`, `price` or `labels`.
    pub kind: String,
    /// Its input, relative to the project root.
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
            max_errors: 0,
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
