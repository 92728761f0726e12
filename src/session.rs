//! One evaluation session: the project root, its configuration and suites, and the step from a
//! selection of cases to verdicts and reports. The harness and the CLI both drive it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::cache::AnswerCache;
use crate::case::{Case, Expectation};
use crate::compare::{self, BaselineConfig};
use crate::config::{Config, ConfigError};
use crate::model::spec::ModelSpec;
use crate::model::{Answer, GenerationOptions, Model};
use crate::pipeline::{self, Generation, GenerationStats};
use crate::report::{self, Report};
use crate::run_store;
use crate::score::Score;
use crate::suite::{self, Suite, SuiteError};
use crate::task;
use crate::verdict::Verdict;

pub use crate::config::Overrides;

/// The loaded project.
pub struct Session {
    pub root: PathBuf,
    pub config: Config,
    pub suites: Vec<Suite>,
}

/// Verdicts of an evaluated selection, by test name.
pub struct Evaluation {
    /// Suite → label of the model that answered it.
    pub model_labels: BTreeMap<String, String>,
    pub verdicts: HashMap<String, Verdict>,
    pub stats: GenerationStats,
    /// The LLM judge's counters, by suite (only suites with judge expectations).
    pub judge: BTreeMap<String, crate::judge::JudgeStats>,
}

impl Session {
    /// Resolves the configuration (`vlmtest.toml`, the environment, then `overrides`) and
    /// loads every suite.
    pub fn open(root: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let config = Config::from_process(root, overrides)?;
        let suites = suite::load_all(root, &config, Some(import_source));
        Ok(Self {
            root: root.to_path_buf(),
            config,
            suites,
        })
    }

    pub fn suite(&self, name: &str) -> Option<&Suite> {
        self.suites.iter().find(|s| s.name == name)
    }

    /// Answers and scores `cases`, each suite with its model. A model that cannot be resolved or
    /// loaded fails its cases with its error; nothing here panics on bad input.
    pub fn evaluate(&self, cases: &[&Case], progress: bool) -> Evaluation {
        let mut by_spec: BTreeMap<&str, Vec<&Case>> = BTreeMap::new();
        for c in cases {
            by_spec
                .entry(self.config.model_spec_for(&c.id.suite))
                .or_default()
                .push(c);
        }
        let mut eval = Evaluation {
            model_labels: BTreeMap::new(),
            verdicts: HashMap::new(),
            stats: GenerationStats::default(),
            judge: BTreeMap::new(),
        };
        for (spec, group) in by_spec {
            let (answers, stats, label) = self.answer(spec, &group, progress);
            eval.stats.absorb(&stats);
            self.score_into(&mut eval, &group, &answers, &label);
        }
        eval
    }

    /// Answers and scores `cases` with an already loaded `model` (no answer cache: the trainer's
    /// evaluations, whose weights change between calls), in batches of the configured size. The
    /// verdicts are made exactly as `evaluate` makes them.
    pub fn evaluate_with(
        &self,
        model: &mut dyn Model,
        cases: &[&Case],
        progress: bool,
    ) -> Evaluation {
        let mut eval = Evaluation {
            model_labels: BTreeMap::new(),
            verdicts: HashMap::new(),
            stats: GenerationStats::default(),
            judge: BTreeMap::new(),
        };
        let options = self.generation_options();
        let batches = pipeline::Batches {
            batch_size: self.config.model.batch_size,
            options: &options,
            progress,
        };
        let mut answers: Vec<Result<Answer, String>> =
            vec![Err("no answer produced".into()); cases.len()];
        let mut stats = GenerationStats::default();
        batches.generate(model, cases, &mut stats, |i, a| answers[i] = a);
        eval.stats = stats;
        let label = model.label();
        self.score_into(&mut eval, cases, &answers, &label);
        eval
    }

    fn generation_options(&self) -> GenerationOptions {
        GenerationOptions {
            max_new_tokens: self.config.model.max_new_tokens,
        }
    }

    /// Scores one model's answers to `group` (task scorers, then the judge over the whole group)
    /// into `eval`.
    fn score_into(
        &self,
        eval: &mut Evaluation,
        group: &[&Case],
        answers: &[Result<Answer, String>],
        label: &str,
    ) {
        for c in group {
            eval.model_labels
                .insert(c.id.suite.clone(), label.to_owned());
        }
        let judge_stats = std::cell::RefCell::new(BTreeMap::new());
        let judge = |requests: &[pipeline::JudgeRequest<'_>]| {
            let (scores, stats) = self.judge(requests);
            *judge_stats.borrow_mut() = stats;
            scores
        };
        let verdicts = pipeline::score_all(group, answers, &task::score, Some(&judge));
        for (suite, stats) in judge_stats.into_inner() {
            eval.judge.entry(suite).or_default().add(&stats);
        }
        eval.verdicts
            .extend(verdicts.into_iter().map(|v| (v.name.clone(), v)));
    }

    /// Runs the judge stage over every judge request of a pass, suite by suite so each suite's
    /// counters are its own; a missing or broken judge configuration makes each request a judge
    /// error, never a pass. Returns the scores in request order and the counters by suite.
    fn judge(
        &self,
        requests: &[pipeline::JudgeRequest<'_>],
    ) -> (Vec<Score>, BTreeMap<String, crate::judge::JudgeStats>) {
        // Ignored cases (run with `--ignored`) are judged apart and left out of the counters,
        // as they are left out of the suite's report.
        let mut by_suite: BTreeMap<(&str, bool), Vec<usize>> = BTreeMap::new();
        for (i, r) in requests.iter().enumerate() {
            by_suite
                .entry((r.case.id.suite.as_str(), r.case.ignored))
                .or_default()
                .push(i);
        }
        let fail = |msg: String, model: &str| {
            let scores = requests
                .iter()
                .map(|r| {
                    Score::scorer_error(
                        format!("judge.{}", r.rubric),
                        r.threshold.unwrap_or(0.0),
                        msg.clone(),
                    )
                })
                .collect();
            let stats = by_suite
                .iter()
                .filter(|((_, ignored), _)| !ignored)
                .map(|((suite, _), idx)| {
                    let n = idx.len() as u64;
                    (
                        suite.to_string(),
                        crate::judge::JudgeStats::all_errors(model, n),
                    )
                })
                .collect();
            (scores, stats)
        };
        let Some(settings) = self.config.judge.clone() else {
            return fail(
                "no judge configured: set [judge] in vlmtest.toml or VLMTEST_JUDGE_URL".into(),
                "",
            );
        };
        let model = settings.model.clone();
        let judges = self.root.join("judges");
        let cache_dir = report::output_dir(&self.root).join("judge");
        match crate::judge::JudgeRunner::new(settings, &judges, &cache_dir) {
            Ok(runner) => {
                let mut scores: Vec<Option<Score>> = vec![None; requests.len()];
                let mut stats = BTreeMap::new();
                for ((suite, ignored), idx) in &by_suite {
                    let items: Vec<crate::judge::JudgeItem<'_>> = idx
                        .iter()
                        .map(|&i| crate::judge::JudgeItem {
                            case: requests[i].case,
                            answer: requests[i].answer,
                            rubric: requests[i].rubric,
                            threshold: requests[i].threshold,
                        })
                        .collect();
                    let before = runner.stats();
                    for (&i, s) in idx.iter().zip(runner.score(&items)) {
                        scores[i] = Some(s);
                    }
                    if !ignored {
                        stats.insert(suite.to_string(), runner.stats().since(&before));
                    }
                }
                // `score` answers every item; a gap would be a bug, reported as a judge error.
                let scores = scores
                    .into_iter()
                    .zip(requests)
                    .map(|(s, r)| {
                        s.unwrap_or_else(|| {
                            Score::scorer_error(
                                format!("judge.{}", r.rubric),
                                r.threshold.unwrap_or(0.0),
                                "the judge returned no score".into(),
                            )
                        })
                    })
                    .collect();
                (scores, stats)
            }
            Err(e) => fail(format!("judge not started: {e}"), &model),
        }
    }

    fn answer(
        &self,
        spec_text: &str,
        cases: &[&Case],
        progress: bool,
    ) -> (Vec<Result<Answer, String>>, GenerationStats, String) {
        let options = self.generation_options();
        let adapter = self
            .config
            .model
            .adapter
            .as_ref()
            .map(|a| self.root.join(a));
        let spec = ModelSpec::parse(spec_text, &self.root).and_then(|s| s.with_adapter(adapter));
        match spec.and_then(|s| s.fingerprint().map(|fp| (s, fp))) {
            Ok((spec, fingerprint)) => {
                let cache = AnswerCache::new(
                    &self
                        .config
                        .answer_cache
                        .clone()
                        .unwrap_or_else(|| AnswerCache::default_root(&self.root)),
                    &fingerprint,
                    &options,
                )
                .keyed_by_case_name(matches!(spec, ModelSpec::Replay(_)))
                .with_mode(self.config.answer_cache_mode);
                let g = Generation {
                    spec: &spec,
                    options,
                    batch_size: self.config.model.batch_size,
                    cache,
                    progress,
                };
                let (answers, stats) = pipeline::answer_all(cases, &g);
                (answers, stats, spec.label())
            }
            Err(e) => {
                let msg = format!("model `{spec_text}`: {e}");
                (
                    cases.iter().map(|_| Err(msg.clone())).collect(),
                    GenerationStats::default(),
                    "unresolved".to_string(),
                )
            }
        }
    }

    /// The aggregate report of a suite whose cases were all evaluated, with the metrics of every
    /// task its cases name.
    pub fn report(&self, suite: &Suite, eval: &Evaluation) -> Report {
        let cfg = self.config.suite(&suite.name);
        let cases: Vec<&Case> = suite.cases.iter().filter(|c| !c.ignored).collect();
        let verdicts: Vec<Verdict> = cases
            .iter()
            .filter_map(|c| eval.verdicts.get(&c.id.test_name()).cloned())
            .collect();
        let tasks = task_reports(&cases, &verdicts, &cfg.slices);
        let label = eval
            .model_labels
            .get(&suite.name)
            .cloned()
            .unwrap_or_else(|| "unresolved".into());
        let mut r = report::build(
            &suite.name,
            &label,
            &cfg,
            &cases,
            verdicts,
            tasks,
            &suite.errors,
        );
        r.judge = eval.judge.get(&suite.name).cloned();
        if let Some(b) = &cfg.baseline {
            let base = self.baseline_report(b, &suite.name);
            r.baseline = Some(compare::baseline::check(b, base, &r));
        }
        r
    }

    /// The baseline report a suite's `[suites.<name>.baseline]` names: a report file, a run
    /// folder (relative to the project root) or a stored run.
    fn baseline_report(&self, b: &BaselineConfig, suite: &str) -> Result<Report, String> {
        let reports = match (&b.report, &b.run) {
            (Some(_), Some(_)) => return Err("set `report` or `run`, not both".into()),
            (None, None) => return Err("set `report` (a file) or `run` (a run id)".into()),
            (Some(p), None) => {
                let path = self.root.join(p);
                if path.is_dir() {
                    run_store::load_reports(&path)
                } else {
                    run_store::read_report(&path).map(|r| vec![r])
                }
            }
            (None, Some(id)) => {
                run_store::resolve(&report::output_dir(&self.root), id).map(|(_, r)| r)
            }
        };
        let reports = reports.map_err(|e| e.to_string())?;
        let n = reports.len();
        reports
            .into_iter()
            .find(|r| r.suite == suite || n == 1)
            .ok_or_else(|| format!("{} holds no report of suite `{suite}`", b.describe()))
    }
}

/// Task metrics of a suite: one entry per task its cases name, `{metrics, details}` or `{error}`.
fn task_reports(
    cases: &[&Case],
    verdicts: &[Verdict],
    slices: &[String],
) -> BTreeMap<String, serde_json::Value> {
    let mut names: Vec<&str> = cases
        .iter()
        .flat_map(|c| &c.expect)
        .filter_map(|e| match e {
            Expectation::Task { task, .. } => Some(task.as_str()),
            _ => None,
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let by_name: HashMap<String, &Case> = cases.iter().map(|c| (c.id.test_name(), *c)).collect();
    let items: Vec<(&Case, &Score)> = verdicts
        .iter()
        .filter_map(|v| by_name.get(&v.name).map(|c| (*c, v)))
        .flat_map(|(c, v)| v.scores.iter().map(move |s| (c, s)))
        .collect();
    let slice_fields: Vec<&str> = slices.iter().map(String::as_str).collect();
    names
        .into_iter()
        .map(|name| {
            let value = match task::aggregate_with(name, &items, &slice_fields) {
                Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            };
            (name.to_owned(), value)
        })
        .collect()
}

/// Loads an importer-backed suite (`source = { kind, path }`): a row the importer rejects is a
/// load error of the suite (counted in every output), not a warning on stderr.
fn import_source(
    kind: &str,
    path: &Path,
    suite: &str,
) -> Result<(Vec<Case>, Vec<SuiteError>), SuiteError> {
    let imported = task::import::load_with(kind, path, suite, &Default::default())
        .map_err(|e| SuiteError::new(path, None, Some("source"), e.to_string()))?;
    let rejected = imported
        .rejected
        .iter()
        .map(|r| SuiteError::new(path, None, None, format!("rejected row: {r}")))
        .collect();
    Ok((imported.cases, rejected))
}
