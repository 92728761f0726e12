//! The `[judge]` table of `vlmtest.toml`, overridable by `VLMTEST_JUDGE_URL` / `VLMTEST_JUDGE_MODEL`.
//!
//! The API key itself is never stored here: only the *name* of the environment variable that
//! holds it, so a settings dump, a report or a cache file cannot leak it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How the judge uses its on-disk cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Answer from the cache when the exact request was made before; call and store otherwise.
    #[default]
    Use,
    /// Always call the endpoint and overwrite the stored answer.
    Refresh,
    /// Neither read nor write the cache.
    Off,
    /// Only the cache: a request that is not in it is a judge error and no HTTP call is made.
    /// This is what CI uses with a committed cache file.
    Replay,
}

impl std::str::FromStr for CacheMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "use" => Ok(CacheMode::Use),
            "refresh" => Ok(CacheMode::Refresh),
            "off" => Ok(CacheMode::Off),
            "replay" => Ok(CacheMode::Replay),
            other => Err(format!(
                "unknown judge cache mode `{other}`: expected use, refresh, off or replay"
            )),
        }
    }
}

/// Judge endpoint and client settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeSettings {
    /// Base URL of an OpenAI-compatible API, up to and including `/v1`
    /// (`https://api.openai.com/v1`, `http://127.0.0.1:8080/v1`).
    pub url: String,
    /// The model name sent in each request; part of the cache key.
    pub model: String,
    /// Name of the environment variable holding the API key (`OPENAI_API_KEY`). Empty or unset
    /// variable: no `Authorization` header is sent.
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Per-request timeout, seconds (connect + response).
    pub timeout_s: f64,
    /// Retries after the first attempt, for connect errors, timeouts, 429 and 5xx.
    pub max_retries: u32,
    /// First backoff delay, seconds; doubled per retry, with full jitter, capped at `max_backoff_s`.
    pub backoff_s: f64,
    pub max_backoff_s: f64,
    pub cache: CacheMode,
    /// The cache file. Relative paths are resolved by the caller; default `<cache_dir>/judge.jsonl`.
    pub cache_file: Option<PathBuf>,
    /// Ask for `logprobs`/`top_logprobs` so rubric scores can be probability-weighted.
    pub logprobs: bool,
    /// Send `response_format` with a JSON schema (OpenAI, vLLM, llama.cpp, `vlmtest serve`).
    /// Turn off for endpoints that reject it; the strict parser and repair round still apply.
    pub json_schema: bool,
    /// Maximum tokens of one judge answer.
    pub max_tokens: u32,
    /// Price per million prompt / completion tokens, for the cost line of the report.
    pub price_prompt_per_mtok: f64,
    pub price_completion_per_mtok: f64,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080/v1".into(),
            model: "smollm2".into(),
            api_key_env: None,
            concurrency: 16,
            timeout_s: 60.0,
            max_retries: 4,
            backoff_s: 0.5,
            max_backoff_s: 20.0,
            cache: CacheMode::Use,
            cache_file: None,
            logprobs: true,
            json_schema: true,
            max_tokens: 512,
            price_prompt_per_mtok: 0.0,
            price_completion_per_mtok: 0.0,
        }
    }
}

impl JudgeSettings {
    /// Applies `VLMTEST_JUDGE_URL`, `VLMTEST_JUDGE_MODEL` and `VLMTEST_JUDGE_CACHE`
    /// (use|refresh|off|replay) over the file's values. An unparseable cache mode is ignored.
    pub fn apply_env(&mut self) {
        self.apply_vars(|k| std::env::var(k).ok());
    }

    fn apply_vars(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(url) = get("VLMTEST_JUDGE_URL").filter(|v| !v.trim().is_empty()) {
            self.url = url.trim().to_owned();
        }
        if let Some(model) = get("VLMTEST_JUDGE_MODEL").filter(|v| !v.trim().is_empty()) {
            self.model = model.trim().to_owned();
        }
        if let Some(mode) = get("VLMTEST_JUDGE_CACHE").and_then(|v| v.parse().ok()) {
            self.cache = mode;
        }
    }

    /// The judge of a run: the `[judge]` table of `vlmtest.toml` (if any) with the environment
    /// applied. `Ok(None)` when neither the table nor `VLMTEST_JUDGE_URL` configures one.
    pub fn resolve(table: Option<&toml::Table>) -> Result<Option<Self>, String> {
        Self::resolve_with(table, |k| std::env::var(k).ok())
    }

    fn resolve_with(
        table: Option<&toml::Table>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let env_url = get("VLMTEST_JUDGE_URL").filter(|v| !v.trim().is_empty());
        let mut s = match table {
            Some(t) => toml::Value::Table(t.clone())
                .try_into::<Self>()
                .map_err(|e| format!("vlmtest.toml [judge]: {e}"))?,
            None if env_url.is_some() => Self::default(),
            None => return Ok(None),
        };
        s.apply_vars(get);
        s.validate()
            .map_err(|e| format!("vlmtest.toml [judge]: {e}"))?;
        Ok(Some(s))
    }

    /// The API key, read from the environment variable this names. Never stored or logged.
    pub(crate) fn api_key(&self) -> Option<String> {
        let var = self.api_key_env.as_deref()?;
        std::env::var(var).ok().filter(|k| !k.is_empty())
    }

    /// Checks the values that would otherwise fail later with a less clear message.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "judge.url `{}` must start with http:// or https://",
                self.url
            ));
        }
        if self.model.trim().is_empty() {
            return Err("judge.model is empty".into());
        }
        if self.concurrency == 0 {
            return Err("judge.concurrency must be at least 1".into());
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err("judge.timeout_s must be a positive number".into());
        }
        if !(self.backoff_s.is_finite() && self.backoff_s >= 0.0 && self.max_backoff_s >= 0.0) {
            return Err("judge.backoff_s and judge.max_backoff_s must be non-negative".into());
        }
        Ok(())
    }

    /// `<url>/chat/completions`.
    pub fn chat_url(&self) -> String {
        format!("{}/chat/completions", self.url.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_judge_table() {
        let s: JudgeSettings = toml::from_str(
            "url = \"https://api.openai.com/v1\"\nmodel = \"gpt-4o-mini\"\napi_key_env = \"OPENAI_API_KEY\"\nconcurrency = 32\ncache = \"replay\"\n",
        )
        .unwrap();
        assert_eq!(s.model, "gpt-4o-mini");
        assert_eq!(s.concurrency, 32);
        assert_eq!(s.cache, CacheMode::Replay);
        assert_eq!(s.timeout_s, 60.0);
        assert_eq!(s.chat_url(), "https://api.openai.com/v1/chat/completions");
    }

    #[test]
    fn rejects_unknown_fields_and_an_inline_key() {
        let err = toml::from_str::<JudgeSettings>("api_key = \"sk-123\"\n").unwrap_err();
        assert!(err.to_string().contains("api_key"), "{err}");
    }

    #[test]
    fn environment_overrides_url_model_and_cache() {
        let mut s = JudgeSettings::default();
        s.apply_vars(|k| match k {
            "VLMTEST_JUDGE_URL" => Some("http://127.0.0.1:9/v1/".into()),
            "VLMTEST_JUDGE_MODEL" => Some("judge-x".into()),
            "VLMTEST_JUDGE_CACHE" => Some("Refresh".into()),
            _ => None,
        });
        assert_eq!(s.url, "http://127.0.0.1:9/v1/");
        assert_eq!(s.chat_url(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(s.model, "judge-x");
        assert_eq!(s.cache, CacheMode::Refresh);
        s.apply_vars(|_| Some("  ".into()));
        assert_eq!(s.model, "judge-x");
    }

    #[test]
    fn resolve_from_table_env_or_nothing() {
        let none = |_: &str| None;
        assert_eq!(JudgeSettings::resolve_with(None, none).unwrap(), None);
        let url = |k: &str| (k == "VLMTEST_JUDGE_URL").then(|| "http://127.0.0.1:1/v1".to_string());
        let s = JudgeSettings::resolve_with(None, url).unwrap().unwrap();
        assert_eq!(s.url, "http://127.0.0.1:1/v1");
        let t: toml::Table = toml::from_str("model = \"m\"\nconcurrency = 0\n").unwrap();
        let err = JudgeSettings::resolve_with(Some(&t), none).unwrap_err();
        assert!(
            err.contains("[judge]") && err.contains("concurrency"),
            "{err}"
        );
        let t: toml::Table = toml::from_str("modle = \"m\"\n").unwrap();
        assert!(JudgeSettings::resolve_with(Some(&t), none)
            .unwrap_err()
            .contains("modle"));
    }

    #[test]
    fn validate_names_the_field() {
        let s = JudgeSettings {
            concurrency: 0,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("concurrency"));
        let s = JudgeSettings {
            url: "localhost:8080".into(),
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("judge.url"));
    }
}
