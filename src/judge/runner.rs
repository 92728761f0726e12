//! The judge's entry point: every judge expectation of a run, scored concurrently.
//!
//! One request per (case, rubric). A request is answered from the cache when it can be, else
//! over HTTP under a semaphore of `concurrency` permits. A reply that does not parse gets one
//! repair round (the reply and the parse error sent back); a second failure, an HTTP failure or a
//! timeout becomes a `ScorerError` score. Results come back in input order, one per item.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::cache::{self, Cache, Entry};
use super::client::{CallError, Client, Counters};
use super::metric;
use super::parse;
use super::prompt::{self, Fields};
use super::rubric::{self, Rubric};
use super::settings::{CacheMode, JudgeSettings};
use super::JudgeError;
use crate::case::Case;
use crate::score::Score;

/// One judge expectation of one case, with the model's answer.
#[derive(Debug, Clone, Copy)]
pub struct JudgeItem<'a> {
    pub case: &'a Case,
    pub answer: &'a str,
    pub rubric: &'a str,
    pub threshold: Option<f64>,
}

/// Run counters for the report. Holds no secret: the key's variable name is not even here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JudgeStats {
    pub judge_model: String,
    /// Judge expectations handed to `score`.
    pub items: u64,
    pub scored: u64,
    pub skipped: u64,
    /// Judge errors (HTTP, timeout, unparseable after the repair round, unknown rubric).
    pub errors: u64,
    /// Replies that needed the repair round.
    pub repairs: u64,
    /// HTTP requests sent, retries included.
    pub http_calls: u64,
    pub retries: u64,
    /// Requests answered from the cache.
    pub cache_hits: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// From `price_*_per_mtok`; 0 when no price is set.
    pub cost_usd: f64,
    /// Why the run stopped calling the judge (the circuit breaker, a budget, the deadline);
    /// absent when it never stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl JudgeStats {
    /// Every one of `items` a judge error without a call (no judge configured, or it failed to
    /// start).
    pub fn all_errors(judge_model: &str, items: u64) -> Self {
        Self {
            judge_model: judge_model.to_owned(),
            items,
            errors: items,
            ..Self::default()
        }
    }

    /// What accrued between the snapshot `earlier` and this one (of the same runner).
    pub fn since(&self, earlier: &JudgeStats) -> JudgeStats {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        JudgeStats {
            judge_model: self.judge_model.clone(),
            items: d(self.items, earlier.items),
            scored: d(self.scored, earlier.scored),
            skipped: d(self.skipped, earlier.skipped),
            errors: d(self.errors, earlier.errors),
            repairs: d(self.repairs, earlier.repairs),
            http_calls: d(self.http_calls, earlier.http_calls),
            retries: d(self.retries, earlier.retries),
            cache_hits: d(self.cache_hits, earlier.cache_hits),
            prompt_tokens: d(self.prompt_tokens, earlier.prompt_tokens),
            completion_tokens: d(self.completion_tokens, earlier.completion_tokens),
            cost_usd: (self.cost_usd - earlier.cost_usd).max(0.0),
            stopped: self.stopped.clone(),
        }
    }

    /// Adds `other`'s counters to these (the judge model is kept, or taken from `other`).
    pub fn add(&mut self, other: &JudgeStats) {
        if self.judge_model.is_empty() {
            self.judge_model = other.judge_model.clone();
        }
        self.items += other.items;
        self.scored += other.scored;
        self.skipped += other.skipped;
        self.errors += other.errors;
        self.repairs += other.repairs;
        self.http_calls += other.http_calls;
        self.retries += other.retries;
        self.cache_hits += other.cache_hits;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_usd += other.cost_usd;
        if self.stopped.is_none() {
            self.stopped = other.stopped.clone();
        }
    }
}

struct Inner {
    settings: JudgeSettings,
    client: Client,
    cache: Option<Cache>,
    permits: Semaphore,
    counters: Arc<Counters>,
    items: AtomicU64,
    scored: AtomicU64,
    skipped: AtomicU64,
    errors: AtomicU64,
    repairs: AtomicU64,
    /// Judge calls that failed in a row (each after its retries); a success resets it.
    failures_in_a_row: AtomicU64,
    /// Set once, when the run stops calling the endpoint; every later call fails with it.
    stopped: std::sync::OnceLock<String>,
    /// When the stage's deadline passes (from the first `score`).
    deadline: std::sync::OnceLock<Option<tokio::time::Instant>>,
}

/// Scores judge expectations. Build once per process; `score` blocks until every item is done.
pub struct JudgeRunner {
    inner: Arc<Inner>,
    rubrics: BTreeMap<String, Arc<Rubric>>,
    runtime: tokio::runtime::Runtime,
}

/// The text of a chat completion's first choice ("" when it has none).
fn reply_content(response: &Value) -> &str {
    response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

/// One exchange, as kept in `Score.data`.
struct Reply {
    response: Value,
    cached: bool,
}

impl JudgeRunner {
    /// Loads the rubrics in `judges_dir` and opens the cache (`settings.cache_file`, else
    /// `<cache_dir>/judge.jsonl`).
    pub fn new(
        settings: JudgeSettings,
        judges_dir: &Path,
        cache_dir: &Path,
    ) -> Result<Self, JudgeError> {
        settings
            .validate()
            .map_err(|e| JudgeError::Settings(e.to_string()))?;
        let rubrics = rubric::load_dir(judges_dir)?
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        let cache = match settings.cache {
            CacheMode::Off => None,
            mode => {
                let path = settings
                    .cache_file
                    .clone()
                    .unwrap_or_else(|| cache_dir.join("judge.jsonl"));
                Some(Cache::open(&path, mode != CacheMode::Replay)?)
            }
        };
        let counters = Arc::new(Counters::default());
        let client = Client::new(&settings, counters.clone())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vlmtest-judge")
            .enable_all()
            .build()
            .map_err(|e| JudgeError::Client(e.to_string()))?;
        let inner = Inner {
            permits: Semaphore::new(settings.concurrency),
            settings,
            client,
            cache,
            counters,
            items: AtomicU64::new(0),
            scored: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            repairs: AtomicU64::new(0),
            failures_in_a_row: AtomicU64::new(0),
            stopped: std::sync::OnceLock::new(),
            deadline: std::sync::OnceLock::new(),
        };
        Ok(Self {
            inner: Arc::new(inner),
            rubrics,
            runtime,
        })
    }

    /// The loaded rubrics, by name.
    pub fn rubrics(&self) -> impl Iterator<Item = &Rubric> {
        self.rubrics.values().map(|r| r.as_ref())
    }

    /// Scores every item; one `Score` per item, in order. Never panics on a judge failure.
    pub fn score(&self, items: &[JudgeItem<'_>]) -> Vec<Score> {
        self.inner
            .items
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        // `tokio::time::Instant::now` needs no runtime; `score` may be called from inside one.
        let deadline = self.inner.settings.deadline_s;
        self.inner.deadline.get_or_init(|| {
            deadline.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s))
        });
        let mut out: Vec<Option<Score>> = vec![None; items.len()];
        let mut jobs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let scorer = format!("judge.{}", item.rubric);
            let Some(rubric) = self.rubrics.get(item.rubric) else {
                let known: Vec<&str> = self.rubrics.keys().map(String::as_str).collect();
                let msg = format!(
                    "unknown rubric `{}`; judges/ has: {}",
                    item.rubric,
                    known.join(", ")
                );
                out[i] = Some(self.inner.error(Score::scorer_error(
                    scorer,
                    item.threshold.unwrap_or(0.5),
                    msg,
                )));
                continue;
            };
            let threshold = item.threshold.unwrap_or(rubric.threshold);
            let question = item.case.question();
            let fields = Fields {
                input: Some(question.as_str()).filter(|q| !q.trim().is_empty()),
                answer: item.answer,
                reference: item.case.reference.as_deref(),
                context: item.case.context.as_deref(),
            };
            if let Some(missing) = fields.missing(rubric) {
                self.inner.skipped.fetch_add(1, Ordering::Relaxed);
                let msg = format!(
                    "not judged: the case has no {}",
                    missing.label().to_lowercase()
                );
                out[i] = Some(Score::skipped(scorer, msg));
                continue;
            }
            jobs.push((
                i,
                rubric.clone(),
                prompt::messages(rubric, &fields),
                threshold,
            ));
        }
        let inner = self.inner.clone();
        let run = async move {
            let mut set = tokio::task::JoinSet::new();
            for (i, rubric, messages, threshold) in jobs {
                let inner = inner.clone();
                set.spawn(
                    async move { (i, inner.judge_within(&rubric, messages, threshold).await) },
                );
            }
            let mut done = Vec::new();
            while let Some(res) = set.join_next().await {
                if let Ok(pair) = res {
                    done.push(pair);
                }
            }
            done
        };
        let done = if tokio::runtime::Handle::try_current().is_ok() {
            // Called from inside a runtime (an async harness): block on our own in a plain thread.
            std::thread::scope(|s| {
                s.spawn(|| self.runtime.block_on(run))
                    .join()
                    .unwrap_or_default()
            })
        } else {
            self.runtime.block_on(run)
        };
        for (i, score) in done {
            out[i] = Some(score);
        }
        out.into_iter()
            .zip(items)
            .map(|(s, item)| {
                s.unwrap_or_else(|| {
                    let score = Score::scorer_error(
                        format!("judge.{}", item.rubric),
                        item.threshold.unwrap_or(0.5),
                        "the judge task failed unexpectedly".into(),
                    );
                    self.inner.error(score)
                })
            })
            .collect()
    }

    /// Counters so far.
    pub fn stats(&self) -> JudgeStats {
        let i = &self.inner;
        let c = &i.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let prompt_tokens = load(&c.prompt_tokens);
        let completion_tokens = load(&c.completion_tokens);
        JudgeStats {
            judge_model: i.settings.model.clone(),
            items: load(&i.items),
            scored: load(&i.scored),
            skipped: load(&i.skipped),
            errors: load(&i.errors),
            repairs: load(&i.repairs),
            http_calls: load(&c.http_calls),
            retries: load(&c.retries),
            cache_hits: load(&c.cache_hits),
            prompt_tokens,
            completion_tokens,
            cost_usd: i.cost(),
            stopped: i.stopped.get().cloned(),
        }
    }
}

impl Inner {
    fn error(&self, score: Score) -> Score {
        self.errors.fetch_add(1, Ordering::Relaxed);
        score
    }

    /// Dollars spent so far, from the token counters and `price_*_per_mtok`.
    fn cost(&self) -> f64 {
        let c = &self.counters;
        (c.prompt_tokens.load(Ordering::Relaxed) as f64 * self.settings.price_prompt_per_mtok
            + c.completion_tokens.load(Ordering::Relaxed) as f64
                * self.settings.price_completion_per_mtok)
            / 1e6
    }

    /// Stops every later call with `why`; the first stop prints one message naming the
    /// endpoint, later ones keep the first reason.
    fn stop(&self, why: String) -> String {
        let why = format!("judge {} stopped: {why}", self.settings.url);
        if self.stopped.set(why.clone()).is_ok() {
            eprintln!("error: {why}; the remaining judge items are errors");
        }
        self.stopped.get().cloned().unwrap_or(why)
    }

    /// Why no call may be made now: stopped before, a budget spent or the deadline passed.
    fn refusal(&self) -> Option<String> {
        if let Some(why) = self.stopped.get() {
            return Some(why.clone());
        }
        let s = &self.settings;
        let calls = self.counters.http_calls.load(Ordering::Relaxed);
        if let Some(max) = s.max_calls.filter(|&m| calls >= m) {
            return Some(self.stop(format!("the call budget max_calls = {max} is spent")));
        }
        if let Some(max) = s.max_cost.filter(|&m| self.cost() >= m) {
            return Some(self.stop(format!("the cost budget max_cost = ${max} is spent")));
        }
        let late = self
            .deadline
            .get()
            .copied()
            .flatten()
            .is_some_and(|d| tokio::time::Instant::now() >= d);
        if late {
            let secs = s.deadline_s.unwrap_or_default();
            return Some(self.stop(format!("the stage deadline deadline_s = {secs} passed")));
        }
        None
    }

    /// Counts a call's outcome for the circuit breaker.
    fn record(&self, result: &Result<Value, CallError>) {
        match result {
            Ok(_) => self.failures_in_a_row.store(0, Ordering::Relaxed),
            Err(CallError::NotInCache | CallError::Stopped(_)) => {}
            Err(e) => {
                let n = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                let max = u64::from(self.settings.max_consecutive_failures);
                if n >= max {
                    self.stop(format!("{n} calls in a row failed, the last with: {e}"));
                }
            }
        }
    }

    /// `judge` under the item's deadline (`case_deadline_s`) and the stage's.
    async fn judge_within(&self, rubric: &Rubric, messages: Vec<Value>, threshold: f64) -> Score {
        let case = self.settings.case_deadline_s.map(Duration::from_secs_f64);
        let stage = self.deadline.get().copied().flatten();
        let until = match (case.map(|d| tokio::time::Instant::now() + d), stage) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(until) = until else {
            return self.judge(rubric, messages, threshold).await;
        };
        match tokio::time::timeout_at(until, self.judge(rubric, messages, threshold)).await {
            Ok(score) => score,
            Err(_) => {
                let why = if stage == Some(until) {
                    self.refusal()
                        .unwrap_or_else(|| "the stage deadline passed".into())
                } else {
                    format!(
                        "the item's deadline case_deadline_s = {} passed",
                        self.settings.case_deadline_s.unwrap_or_default()
                    )
                };
                self.error(Score::scorer_error(
                    format!("judge.{}", rubric.name),
                    threshold,
                    format!("judge error: {why}"),
                ))
            }
        }
    }

    /// One judge expectation, end to end.
    async fn judge(&self, rubric: &Rubric, messages: Vec<Value>, threshold: f64) -> Score {
        let scorer = format!("judge.{}", rubric.name);
        let mut exchange = Vec::new();
        let fail = |exchange: Vec<Value>, msg: String| {
            let data =
                json!({"rubric": rubric.name, "metric": rubric.metric, "exchange": exchange});
            self.error(
                Score::scorer_error(scorer.clone(), threshold, format!("judge error: {msg}"))
                    .with_data(data),
            )
        };
        let mut messages = messages;
        for round in 0..2 {
            let body = prompt::body(&self.settings, rubric, messages.clone());
            let mut reply = match self.reply(&body, false).await {
                Ok(r) => r,
                Err(e) => return fail(exchange, e.to_string()),
            };
            let mut parsed = parse::parse(rubric, reply_content(&reply.response));
            // A cached reply that does not parse (kept by an older vlmtest) is asked again,
            // never replayed as the same error.
            if reply.cached && parsed.is_err() {
                reply = match self.reply(&body, true).await {
                    Ok(r) => r,
                    Err(e) => return fail(exchange, e.to_string()),
                };
                parsed = parse::parse(rubric, reply_content(&reply.response));
            }
            let choice = &reply.response["choices"][0];
            let content = reply_content(&reply.response).to_owned();
            exchange.push(json!({
                "messages": messages,
                "reply": content,
                "finish_reason": choice["finish_reason"],
                "usage": reply.response["usage"],
                "cached": reply.cached,
            }));
            match parsed {
                Ok(verdict) => {
                    // Only a reply that parsed is kept: a broken one is asked again next run.
                    if !reply.cached {
                        self.store(&body, &reply.response);
                    }
                    let o = metric::compute(
                        rubric,
                        &verdict,
                        &content,
                        choice.get("logprobs").filter(|v| !v.is_null()),
                    );
                    self.scored.fetch_add(1, Ordering::Relaxed);
                    let data = json!({
                        "rubric": rubric.name,
                        "metric": rubric.metric,
                        "reason": verdict.reason(),
                        "verdict": verdict,
                        "detail": o.detail,
                        "repaired": round > 0,
                        "exchange": exchange,
                    });
                    return Score::scored(scorer, o.value, threshold, o.reason).with_data(data);
                }
                Err(err) if round == 0 => {
                    self.repairs.fetch_add(1, Ordering::Relaxed);
                    messages = prompt::repair(messages, &content, &err);
                }
                Err(err) => {
                    return fail(
                        exchange,
                        format!("reply unparseable after one repair round: {err}"),
                    )
                }
            }
        }
        fail(exchange, "no reply".into())
    }

    /// The response to `body`: from the cache when allowed, else over HTTP. Nothing is stored
    /// here: `judge` stores a reply once it parsed, so an error reply is never replayed.
    async fn reply(&self, body: &Value, fresh: bool) -> Result<Reply, CallError> {
        let mode = self.settings.cache;
        if let Some(cache) = &self.cache {
            if !fresh && matches!(mode, CacheMode::Use | CacheMode::Replay) {
                let key = cache::key(&self.settings.model, body);
                if let Some(response) = cache.get(&key) {
                    self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Reply {
                        response,
                        cached: true,
                    });
                }
            }
            if mode == CacheMode::Replay {
                return Err(CallError::NotInCache);
            }
        }
        let response = {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?;
            // Checked once a permit is held, so items queued behind a failing endpoint see the
            // breaker the calls ahead of them tripped.
            if let Some(why) = self.refusal() {
                return Err(CallError::Stopped(why));
            }
            let result = self.client.chat(body).await;
            self.record(&result);
            result?
        };
        Ok(Reply {
            response,
            cached: false,
        })
    }

    /// Keeps a good reply (modes `use` and `refresh`). A failed write costs a re-call next run,
    /// not this run's score.
    fn store(&self, body: &Value, response: &Value) {
        if let Some(cache) = &self.cache {
            let _ = cache.put(Entry {
                key: cache::key(&self.settings.model, body),
                model: self.settings.model.clone(),
                request: body.clone(),
                response: response.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(n: u64) -> JudgeStats {
        JudgeStats {
            judge_model: "m".into(),
            items: n,
            scored: n,
            skipped: 0,
            errors: 0,
            repairs: 1,
            http_calls: n + 2,
            retries: 2,
            cache_hits: 1,
            prompt_tokens: 100 * n,
            completion_tokens: 10 * n,
            cost_usd: 0.5 * n as f64,
            stopped: None,
        }
    }

    #[test]
    fn since_and_add_are_inverse() {
        let before = stats(3);
        let mut after = before.clone();
        after.add(&stats(4));
        let delta = after.since(&before);
        assert_eq!(delta.items, 4);
        assert_eq!(delta.http_calls, 6);
        assert_eq!(delta.prompt_tokens, 400);
        assert!((delta.cost_usd - 2.0).abs() < 1e-12);
        assert_eq!(delta.judge_model, "m");
        // A later snapshot never yields negative counts, even against a newer one.
        assert_eq!(before.since(&after).items, 0);
    }

    #[test]
    fn all_errors_counts_every_item_as_an_error() {
        let s = JudgeStats::all_errors("gpt", 5);
        assert_eq!((s.items, s.errors, s.scored, s.http_calls), (5, 5, 0, 0));
    }

    #[test]
    fn old_reports_without_new_fields_still_read() {
        let s: JudgeStats = serde_json::from_str(r#"{"items": 2, "errors": 1}"#).unwrap();
        assert_eq!((s.items, s.errors, s.cache_hits), (2, 1, 0));
    }
}
