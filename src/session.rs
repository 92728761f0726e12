//! One evaluation session: the project root, its configuration and suites, and the step from a
//! selection of cases to verdicts and reports. The harness and the CLI both drive it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::cache::AnswerCache;
use crate::case::Case;
use crate::config::Config;
use crate::model::spec::ModelSpec;
use crate::model::GenerationOptions;
use crate::pipeline::{self, Generation, GenerationStats};
use crate::report::{self, Report};
use crate::score::Score;
use crate::suite::{self, Suite, SuiteError};
use crate::verdict::Verdict;

/// Overrides from CLI flags (applied after `vlmtest.toml` and the environment).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub model: Option<String>,
    pub adapter: Option<PathBuf>,
    pub max_samples: Option<usize>,
    pub max_new_tokens: Option<usize>,
}

/// The loaded project.
pub struct Session {
    pub root: PathBuf,
    pub config: Config,
    pub suites: Vec<Suite>,
}

/// Verdicts of an evaluated selection, by test name.
pub struct Evaluation {
    pub model_label: String,
    pub verdicts: HashMap<String, Verdict>,
    pub stats: GenerationStats,
}

impl Session {
    /// Reads `vlmtest.toml`, applies environment and flag overrides, loads every suite.
    pub fn open(root: &Path, overrides: &Overrides) -> Result<Self, SuiteError> {
        let mut config = Config::load(root)?;
        config.apply_env()?;
        if let Some(m) = &overrides.model {
            config.model.spec = m.clone();
        }
        if let Some(a) = &overrides.adapter {
            config.model.adapter = Some(a.clone());
        }
        if let Some(n) = overrides.max_samples {
            config.model.max_samples = Some(n);
        }
        if let Some(n) = overrides.max_new_tokens {
            config.model.max_new_tokens = n;
        }
        let suites = suite::load_all(root, &config, None);
        Ok(Self {
            root: root.to_path_buf(),
            config,
            suites,
        })
    }

    pub fn suite(&self, name: &str) -> Option<&Suite> {
        self.suites.iter().find(|s| s.name == name)
    }

    /// Answers and scores `cases`. A model that cannot be resolved or loaded fails every case
    /// with its error; nothing here panics on bad input.
    pub fn evaluate(&self, cases: &[&Case], progress: bool) -> Evaluation {
        let options = GenerationOptions {
            max_new_tokens: self.config.model.max_new_tokens,
        };
        let spec = ModelSpec::parse(&self.config.model.spec, &self.root);
        let (answers, stats, label) = match spec.and_then(|s| s.fingerprint().map(|fp| (s, fp))) {
            Ok((spec, fingerprint)) => {
                let cache = AnswerCache::new(
                    &AnswerCache::default_root(&self.root),
                    &fingerprint,
                    &options,
                );
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
                let msg = format!("model `{}`: {e}", self.config.model.spec);
                (
                    cases.iter().map(|_| Err(msg.clone())).collect(),
                    GenerationStats::default(),
                    "unresolved".to_string(),
                )
            }
        };
        let task = |name: &str, _spec: &serde_json::Value, _answer: &str| {
            Score::scorer_error(
                name,
                0.0,
                format!("no scorer for task `{name}` in this build"),
            )
        };
        let verdicts = pipeline::score_all(cases, &answers, &task, None);
        let verdicts = verdicts.into_iter().map(|v| (v.name.clone(), v)).collect();
        Evaluation {
            model_label: label,
            verdicts,
            stats,
        }
    }

    /// The aggregate report of a suite whose cases were all evaluated.
    pub fn report(&self, suite: &Suite, eval: &Evaluation) -> Report {
        let cfg = self.config.suite(&suite.name);
        let cases: Vec<&Case> = suite.cases.iter().filter(|c| !c.ignored).collect();
        let verdicts: Vec<Verdict> = cases
            .iter()
            .filter_map(|c| eval.verdicts.get(&c.id.test_name()).cloned())
            .collect();
        report::build(
            &suite.name,
            &eval.model_label,
            &cfg,
            &cases,
            &verdicts,
            BTreeMap::new(),
        )
    }
}
