//! The `[judge]` table of `vlmtest.toml`, typed. The configuration stage (`config`) parses it with
//! the rest of the file and applies `VLMTEST_JUDGE_URL` / `_MODEL` / `_CACHE` over it.
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
    /// The circuit breaker: after this many judge calls in a row failed (each after its
    /// retries), the run stops calling the endpoint; every later item is a judge error naming
    /// the endpoint and the last cause. At least 1.
    pub max_consecutive_failures: u32,
    /// The run's budget of HTTP calls to the judge, retries included; once spent, the rest are
    /// judge errors without a call. None: no limit.
    pub max_calls: Option<u64>,
    /// The run's budget in dollars (from `price_*_per_mtok`); once reached, no more calls.
    pub max_cost: Option<f64>,
    /// One item's deadline, seconds, over its calls, retries and repair round together.
    pub case_deadline_s: Option<f64>,
    /// The whole judge stage's deadline, seconds from its first item; items still waiting then
    /// are judge errors.
    pub deadline_s: Option<f64>,
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
            max_consecutive_failures: 5,
            max_calls: None,
            max_cost: None,
            case_deadline_s: None,
            deadline_s: None,
        }
    }
}

/// A judge setting that cannot work, naming its key of `[judge]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// `url` is not an HTTP(S) URL.
    #[error("judge.url `{0}` must start with http:// or https://")]
    Url(String),
    /// `model` is blank.
    #[error("judge.model is empty")]
    EmptyModel,
    /// `concurrency` is 0.
    #[error("judge.concurrency must be at least 1")]
    Concurrency,
    /// `timeout_s` is not a positive number.
    #[error("judge.timeout_s must be a positive number")]
    Timeout,
    /// A backoff is negative or not a number.
    #[error("judge.{0} must be a non-negative number")]
    Backoff(&'static str),
    /// A budget or deadline is not a positive number (or the breaker's count is 0).
    #[error("judge.{0} must be a positive number")]
    Limit(&'static str),
}

impl SettingsError {
    /// The key of `[judge]` that is wrong.
    pub fn key(&self) -> &'static str {
        match self {
            SettingsError::Url(_) => "url",
            SettingsError::EmptyModel => "model",
            SettingsError::Concurrency => "concurrency",
            SettingsError::Timeout => "timeout_s",
            SettingsError::Backoff(key) | SettingsError::Limit(key) => key,
        }
    }
}

impl JudgeSettings {
    /// The API key, read from the environment variable this names. Never stored or logged.
    pub(crate) fn api_key(&self) -> Option<String> {
        crate::config::env::secret(self.api_key_env.as_deref()?)
    }

    /// Checks the values that would otherwise fail later with a less clear message.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if crate::config::env::parse_url(&self.url).is_err() {
            return Err(SettingsError::Url(self.url.clone()));
        }
        if self.model.trim().is_empty() {
            return Err(SettingsError::EmptyModel);
        }
        if self.concurrency == 0 {
            return Err(SettingsError::Concurrency);
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(SettingsError::Timeout);
        }
        for (key, v) in [
            ("backoff_s", self.backoff_s),
            ("max_backoff_s", self.max_backoff_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SettingsError::Backoff(key));
            }
        }
        if self.max_consecutive_failures == 0 {
            return Err(SettingsError::Limit("max_consecutive_failures"));
        }
        if self.max_calls == Some(0) {
            return Err(SettingsError::Limit("max_calls"));
        }
        for (key, v) in [
            ("max_cost", self.max_cost),
            ("case_deadline_s", self.case_deadline_s),
            ("deadline_s", self.deadline_s),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(SettingsError::Limit(key));
            }
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
    fn validate_names_the_field() {
        let s = JudgeSettings {
            concurrency: 0,
            ..Default::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("concurrency"));
        let s = JudgeSettings {
            url: "localhost:8080".into(),
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("judge.url"));
    }
}
