//! The run, shared by the harness and the CLI: answer the selected cases (cache first, then one
//! model load and batched generation for the misses), then score every answer.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cache::AnswerCache;
use crate::case::{Case, Expectation};
use crate::lockfile::FileLock;
use crate::model::spec::ModelSpec;
use crate::model::{Answer, GenerationOptions, Model, Request};
use crate::score::{score_deterministic, Score};
use crate::verdict::Verdict;

/// How the answers were obtained.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenerationStats {
    pub from_cache: usize,
    pub generated: usize,
    pub failed: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    #[serde(skip)]
    pub model_time: Duration,
}

impl GenerationStats {
    /// Adds another pass's counts.
    pub fn absorb(&mut self, other: &Self) {
        self.from_cache += other.from_cache;
        self.generated += other.generated;
        self.failed += other.failed;
        self.prompt_tokens += other.prompt_tokens;
        self.generated_tokens += other.generated_tokens;
        self.model_time += other.model_time;
    }

    /// Decode throughput of the answers generated in this run.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let secs = self.model_time.as_secs_f64();
        (self.generated_tokens > 0 && secs > 0.0).then(|| self.generated_tokens as f64 / secs)
    }
}

/// Settings of one generation pass.
pub struct Generation<'a> {
    pub spec: &'a ModelSpec,
    pub options: GenerationOptions,
    pub batch_size: usize,
    pub cache: AnswerCache,
    pub progress: bool,
}

/// Answers every case: cached answers first; the misses are generated under a cross-process lock
/// (so parallel test processes do not load the model at once), each answer written to the cache
/// as soon as it exists, so a killed run resumes where it stopped.
pub fn answer_all(
    cases: &[&Case],
    g: &Generation<'_>,
) -> (Vec<Result<Answer, String>>, GenerationStats) {
    let mut stats = GenerationStats::default();
    let mut answers: Vec<Option<Result<Answer, String>>> =
        cases.iter().map(|c| g.cache.get(c).map(Ok)).collect();
    if answers.iter().any(Option::is_none) {
        let _lock = FileLock::acquire(&g.cache.dir().join(".generate.lock"));
        // Another process may have produced some of them while this one waited.
        for (slot, case) in answers.iter_mut().zip(cases) {
            if slot.is_none() {
                *slot = g.cache.get(case).map(Ok);
            }
        }
        let missing: Vec<usize> = (0..cases.len()).filter(|i| answers[*i].is_none()).collect();
        if !missing.is_empty() {
            generate_missing(cases, &missing, g, &mut answers, &mut stats);
        }
    }
    let answers: Vec<Result<Answer, String>> = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err("no answer produced".into())))
        .collect();
    stats.from_cache = cases.len() - stats.generated - stats.failed;
    (answers, stats)
}

fn generate_missing(
    cases: &[&Case],
    missing: &[usize],
    g: &Generation<'_>,
    answers: &mut [Option<Result<Answer, String>>],
    stats: &mut GenerationStats,
) {
    let mut model = match g.spec.load() {
        Ok(m) => m,
        Err(e) => {
            let msg = format!("could not load model: {e}");
            for &i in missing {
                answers[i] = Some(Err(msg.clone()));
            }
            stats.failed += missing.len();
            return;
        }
    };
    let todo: Vec<&Case> = missing.iter().map(|&i| cases[i]).collect();
    let run = Batches {
        batch_size: g.batch_size,
        options: &g.options,
        progress: g.progress,
    };
    run.generate(model.as_mut(), &todo, stats, |k, result| {
        let i = missing[k];
        if let Ok(a) = &result {
            if let Err(e) = g.cache.put(cases[i], a) {
                eprintln!(
                    "vlmtest: warning: could not cache the answer of {}: {e}",
                    cases[i].id
                );
            }
        }
        answers[i] = Some(result);
    });
}

/// Batched generation with a loaded model: the one loop behind `vlmtest run`, the harness and the
/// trainer's evaluations.
pub struct Batches<'a> {
    pub batch_size: usize,
    pub options: &'a GenerationOptions,
    /// Draw a progress bar (hidden when stderr is not a terminal).
    pub progress: bool,
}

impl Batches<'_> {
    /// Answers `cases` in batches of `batch_size`, handing each result to `sink` (with the case's
    /// index) the moment its batch returns, and counting it in `stats`.
    pub fn generate(
        &self,
        model: &mut dyn Model,
        cases: &[&Case],
        stats: &mut GenerationStats,
        mut sink: impl FnMut(usize, Result<Answer, String>),
    ) {
        let bar = if self.progress {
            ProgressBar::new(cases.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} generating {pos}/{len} [{elapsed_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let size = self.batch_size.max(1);
        for (b, chunk) in cases.chunks(size).enumerate() {
            let requests: Vec<Request<'_>> = chunk
                .iter()
                .map(|c| Request {
                    name: c.id.test_name(),
                    messages: &c.messages,
                })
                .collect();
            let start = Instant::now();
            // Each answer goes to `sink` (the answer cache) the moment the model has it.
            model.generate_each(&requests, self.options, &mut |k, result| {
                let result = match result {
                    Ok(a) => {
                        stats.generated += 1;
                        stats.prompt_tokens += a.prompt_tokens;
                        stats.generated_tokens += a.generated_tokens;
                        Ok(a)
                    }
                    Err(e) => {
                        stats.failed += 1;
                        Err(e.to_string())
                    }
                };
                sink(b * size + k, result);
                bar.inc(1);
            });
            stats.model_time += start.elapsed();
            if let Some(tps) = stats.tokens_per_second() {
                bar.set_message(format!("{tps:.1} tok/s"));
            }
        }
        bar.finish_and_clear();
    }
}

/// One judge request: the case, its answer, the rubric and the case's threshold.
pub struct JudgeRequest<'a> {
    pub case: &'a Case,
    pub answer: &'a str,
    pub rubric: &'a str,
    pub threshold: Option<f64>,
}

/// The judge stage: scores a batch of judge requests, one score per request, in order.
pub type JudgeFn<'f> = &'f dyn Fn(&[JudgeRequest<'_>]) -> Vec<Score>;

/// Scores every answer. Deterministic scorers run inline; task scorers through `task`; all judge
/// requests of the run go to `judge` in one call, so it can run them concurrently.
pub fn score_all(
    cases: &[&Case],
    answers: &[Result<Answer, String>],
    task: &dyn Fn(&str, &serde_json::Value, &str) -> Score,
    judge: Option<JudgeFn<'_>>,
) -> Vec<Verdict> {
    let mut scores: Vec<Vec<Option<Score>>> = Vec::with_capacity(cases.len());
    let mut judge_requests = Vec::new();
    let mut judge_slots = Vec::new();
    for (ci, (case, answer)) in cases.iter().zip(answers).enumerate() {
        let Ok(answer) = answer else {
            scores.push(Vec::new());
            continue;
        };
        let mut row = Vec::with_capacity(case.expect.len());
        for (ei, e) in case.expect.iter().enumerate() {
            let s = match e {
                Expectation::Task { task: name, spec } => Some(task(name, spec, &answer.text)),
                Expectation::Judge { rubric, threshold } => {
                    judge_requests.push(JudgeRequest {
                        case,
                        answer: &answer.text,
                        rubric,
                        threshold: *threshold,
                    });
                    judge_slots.push((ci, ei));
                    None
                }
                other => score_deterministic(other, &answer.text),
            };
            row.push(s);
        }
        scores.push(row);
    }
    if !judge_requests.is_empty() {
        let results = match judge {
            Some(run) => run(&judge_requests),
            None => judge_requests
                .iter()
                .map(|r| {
                    Score::scorer_error(
                        format!("judge.{}", r.rubric),
                        r.threshold.unwrap_or(0.0),
                        "no judge configured: set [judge] in vlmtest.toml or VLMTEST_JUDGE_URL"
                            .into(),
                    )
                })
                .collect(),
        };
        for ((ci, ei), s) in judge_slots.into_iter().zip(results) {
            scores[ci][ei] = Some(s);
        }
    }
    cases
        .iter()
        .zip(answers)
        .zip(scores)
        .map(|((case, answer), row)| {
            Verdict::new(case, answer.clone(), row.into_iter().flatten().collect())
        })
        .collect()
}
