//! The HTTP transport: one POST to `/chat/completions`, with a per-request timeout and retries.
//!
//! Connect errors, timeouts, malformed response bodies, 429 and 5xx are retried with
//! exponential backoff and jitter (a 429's `Retry-After` is honoured); other 4xx are final.
//! The API key is sent as a bearer token and scrubbed from every error message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::settings::JudgeSettings;
use super::JudgeError;

/// The longest `Retry-After` we honour; a server asking for more gets this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why one request finally failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("request timed out after {0:.1} s")]
    Timeout(f64),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("malformed response body: {0}")]
    BadBody(String),
    #[error("no cached answer for this request and the cache mode is `replay`")]
    NotInCache,
    /// The run stopped calling the endpoint: the circuit breaker, a budget or the deadline.
    #[error("{0}")]
    Stopped(String),
}

impl CallError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Status { status, .. } => *status == 429 || *status >= 500,
            CallError::Timeout(_) | CallError::Transport(_) | CallError::BadBody(_) => true,
            CallError::NotInCache | CallError::Stopped(_) => false,
        }
    }
}

/// Run counters shared by the client and the runner.
#[derive(Debug, Default)]
pub struct Counters {
    pub http_calls: AtomicU64,
    pub retries: AtomicU64,
    pub cache_hits: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
}

/// The retry policy, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based): `base·2^attempt` capped, with "equal
    /// jitter" (half fixed, half uniform) so synchronized clients spread out. A 429's
    /// `Retry-After` overrides it.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(MAX_RETRY_AFTER);
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.cap);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Parses a `Retry-After` header value: delay-seconds (integer or decimal). HTTP-dates are not
/// honoured (they fall back to the backoff), since judge endpoints send seconds.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

/// An OpenAI-compatible chat client.
pub struct Client {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
    timeout: Duration,
    backoff: Backoff,
    counters: Arc<Counters>,
}

impl Client {
    pub fn new(settings: &JudgeSettings, counters: Arc<Counters>) -> Result<Self, JudgeError> {
        let timeout = Duration::from_secs_f64(settings.timeout_s);
        Ok(Self {
            http: http_client(timeout, settings.concurrency)?,
            url: settings.chat_url(),
            key: settings.api_key(),
            timeout,
            backoff: Backoff {
                max_retries: settings.max_retries,
                base: Duration::from_secs_f64(settings.backoff_s),
                cap: Duration::from_secs_f64(settings.max_backoff_s),
            },
            counters,
        })
    }

    /// POSTs `body`, retrying per the policy. Returns the parsed response body.
    pub async fn chat(&self, body: &Value) -> Result<Value, CallError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CallError::BadBody(e.to_string()))?;
        let mut attempt = 0;
        loop {
            let (result, retry_after) = self.attempt(&bytes).await;
            match result {
                Ok(v) => {
                    self.count_usage(&v);
                    return Ok(v);
                }
                Err(e) if e.retryable() && attempt < self.backoff.max_retries => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.backoff.delay(attempt, retry_after)).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.scrub(e)),
            }
        }
    }

    async fn attempt(&self, body: &[u8]) -> (Result<Value, CallError>, Option<Duration>) {
        self.counters.http_calls.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (Err(self.transport(e)), None),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return (Err(self.transport(e)), retry_after),
        };
        if !(200..300).contains(&status) {
            // Scrub before truncating, so a cut never leaves part of the key behind.
            let text = self.scrub_text(&String::from_utf8_lossy(&bytes));
            let body: String = text.chars().take(300).collect();
            return (Err(CallError::Status { status, body }), retry_after);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.get("choices").is_some_and(Value::is_array) => (Ok(v), None),
            Ok(_) => (
                Err(CallError::BadBody(
                    "no `choices` array in the response".into(),
                )),
                None,
            ),
            Err(e) => (Err(CallError::BadBody(e.to_string())), None),
        }
    }

    fn transport(&self, e: reqwest::Error) -> CallError {
        if e.is_timeout() {
            CallError::Timeout(self.timeout.as_secs_f64())
        } else {
            // reqwest's Display omits the cause ("error sending request"); the chain says why.
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            CallError::Transport(msg)
        }
    }

    fn count_usage(&self, v: &Value) {
        let usage = &v["usage"];
        let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.counters
            .prompt_tokens
            .fetch_add(n("prompt_tokens"), Ordering::Relaxed);
        self.counters
            .completion_tokens
            .fetch_add(n("completion_tokens"), Ordering::Relaxed);
    }

    fn scrub_text(&self, text: &str) -> String {
        match &self.key {
            Some(key) => text.replace(key.as_str(), "[redacted]"),
            None => text.to_owned(),
        }
    }

    /// Removes the API key from an error's text (some servers echo a masked or whole key).
    fn scrub(&self, e: CallError) -> CallError {
        match e {
            CallError::Status { status, body } => CallError::Status {
                status,
                body: self.scrub_text(&body),
            },
            CallError::Transport(m) => CallError::Transport(self.scrub_text(&m)),
            e => e,
        }
    }
}

/// A reqwest client with rustls (ring provider), the per-request timeout and a pool sized for
/// the concurrency.
pub fn http_client(timeout: Duration, concurrency: usize) -> Result<reqwest::Client, JudgeError> {
    // The provider is process-wide; a second install (another runner) fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(concurrency.max(1))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| JudgeError::Client(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        let s = |status| CallError::Status {
            status,
            body: String::new(),
        };
        assert!(s(429).retryable());
        assert!(s(500).retryable());
        assert!(s(503).retryable());
        assert!(!s(400).retryable());
        assert!(!s(401).retryable());
        assert!(!s(404).retryable());
        assert!(CallError::Timeout(1.0).retryable());
        assert!(!CallError::NotInCache.retryable());
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.25 "),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    proptest::proptest! {
        #[test]
        fn backoff_stays_within_half_and_full_exponential(attempt in 0u32..40, base_ms in 1u64..2000, cap_ms in 1u64..60_000) {
            let b = Backoff { max_retries: 5, base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms) };
            let d = b.delay(attempt, None);
            let exp = Duration::from_millis(base_ms).saturating_mul(1 << attempt.min(20)).min(Duration::from_millis(cap_ms));
            proptest::prop_assert!(d <= exp);
            proptest::prop_assert!(d >= exp / 2);
        }

        #[test]
        fn retry_after_overrides_backoff(secs in 0u64..1000) {
            let b = Backoff { max_retries: 5, base: Duration::from_millis(10), cap: Duration::from_millis(20) };
            let d = b.delay(3, Some(Duration::from_secs(secs)));
            proptest::prop_assert_eq!(d, Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        }
    }
}
