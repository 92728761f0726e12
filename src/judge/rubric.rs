//! Rubrics: `judges/*.toml`, one file per judge metric a case can name.
//!
//! A rubric says which metric computes the score (GEval-style rubric score, answer relevancy or
//! faithfulness), the criteria and frozen evaluation steps the judge is shown, the score range,
//! the default threshold and which case fields the judge sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::JudgeError;

/// How a rubric's verdict becomes a 0..1 score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// GEval-style: an integer score in `score_range`, normalised to 0..1, probability-weighted
    /// over the score tokens when the endpoint returns logprobs.
    Rubric,
    /// The answer's statements, each judged relevant to the question or not; score = share relevant.
    Relevancy,
    /// The answer's claims, each judged supported by the context/reference or not; score = share
    /// supported.
    Faithfulness,
}

/// A case field the judge may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The question (last user turn's text).
    Input,
    /// The model's answer.
    Answer,
    /// The reference answer (`case.reference`).
    Reference,
    /// The grounding context (`case.context`).
    Context,
}

impl Field {
    pub fn label(self) -> &'static str {
        match self {
            Field::Input => "Question",
            Field::Answer => "Answer",
            Field::Reference => "Reference answer",
            Field::Context => "Context",
        }
    }
}

/// One `judges/<name>.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rubric {
    /// Defaults to the file stem; must equal it when given.
    #[serde(default)]
    pub name: String,
    pub metric: MetricKind,
    /// What is being judged, in one or two sentences.
    pub criteria: String,
    /// Frozen evaluation steps shown to the judge (GEval's chain of thought).
    #[serde(default)]
    pub evaluation_steps: Vec<String>,
    /// Inclusive integer score range for `metric = "rubric"`.
    #[serde(default = "default_range")]
    pub score_range: [i64; 2],
    /// Pass threshold on the 0..1 score, when the case gives none.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Which case fields the judge sees. The rubric metric needs all of them (a missing
    /// reference or context skips the score); faithfulness needs at least one of context/reference.
    pub fields: Vec<Field>,
}

fn default_range() -> [i64; 2] {
    [1, 5]
}

fn default_threshold() -> f64 {
    0.5
}

impl Rubric {
    /// Parses and checks one rubric file's text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, JudgeError> {
        let bad = |reason: String| JudgeError::Rubric {
            path: path.to_owned(),
            reason,
        };
        let mut r: Rubric = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if r.name.is_empty() {
            r.name = stem;
        } else if r.name != stem {
            return Err(bad(format!(
                "field `name` is `{}` but the file is named `{stem}.toml`",
                r.name
            )));
        }
        if r.criteria.trim().is_empty() {
            return Err(bad("field `criteria` is empty".into()));
        }
        if !(0.0..=1.0).contains(&r.threshold) {
            return Err(bad(format!(
                "field `threshold` = {} is outside 0..1",
                r.threshold
            )));
        }
        let [lo, hi] = r.score_range;
        if r.metric == MetricKind::Rubric && (lo >= hi || hi - lo > 100) {
            return Err(bad(format!(
                "field `score_range` = [{lo}, {hi}] must be increasing and span at most 100"
            )));
        }
        if !r.fields.contains(&Field::Answer) {
            return Err(bad("field `fields` must include \"answer\"".into()));
        }
        let needs = match r.metric {
            MetricKind::Relevancy => r.fields.contains(&Field::Input),
            MetricKind::Faithfulness => {
                r.fields.contains(&Field::Context) || r.fields.contains(&Field::Reference)
            }
            MetricKind::Rubric => true,
        };
        if !needs {
            return Err(bad(match r.metric {
                MetricKind::Relevancy => {
                    "a relevancy rubric's `fields` must include \"input\"".into()
                }
                _ => "a faithfulness rubric's `fields` must include \"context\" or \"reference\""
                    .into(),
            }));
        }
        Ok(r)
    }

    /// Maps a raw score in `score_range` to 0..1.
    pub fn normalise(&self, raw: f64) -> f64 {
        let [lo, hi] = self.score_range;
        ((raw - lo as f64) / (hi - lo) as f64).clamp(0.0, 1.0)
    }
}

/// Loads every `*.toml` in `dir`, keyed by rubric name.
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Rubric>, JudgeError> {
    let entries = std::fs::read_dir(dir).map_err(|e| JudgeError::Rubric {
        path: dir.to_owned(),
        reason: format!("cannot read the judges folder: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out = BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| JudgeError::Rubric {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let rubric = Rubric::parse(&text, &path)?;
        out.insert(rubric.name.clone(), rubric);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Rubric, JudgeError> {
        Rubric::parse(text, Path::new("judges/correctness.toml"))
    }

    #[test]
    fn the_shipped_rubrics_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("judges");
        let all = load_dir(&dir).unwrap();
        for name in ["correctness", "relevancy", "faithfulness"] {
            assert!(all.contains_key(name), "missing judges/{name}.toml");
        }
        assert_eq!(all["relevancy"].metric, MetricKind::Relevancy);
    }

    #[test]
    fn name_defaults_to_the_stem_and_must_match_it() {
        let r = parse("metric = \"rubric\"\ncriteria = \"c\"\nfields = [\"input\", \"answer\"]\n")
            .unwrap();
        assert_eq!(r.name, "correctness");
        assert_eq!(r.score_range, [1, 5]);
        let err =
            parse("name = \"x\"\nmetric = \"rubric\"\ncriteria = \"c\"\nfields = [\"answer\"]\n")
                .unwrap_err();
        assert!(err.to_string().contains("judges/correctness.toml"), "{err}");
        assert!(err.to_string().contains("name"), "{err}");
    }

    #[test]
    fn rejects_bad_fields_with_the_field_name() {
        for (text, word) in [
            ("metric = \"rubric\"\ncriteria = \"c\"\nfields = [\"input\"]\n", "answer"),
            ("metric = \"rubric\"\ncriteria = \"c\"\nfields = [\"answer\"]\nthreshold = 2.0\n", "threshold"),
            ("metric = \"rubric\"\ncriteria = \"c\"\nfields = [\"answer\"]\nscore_range = [5, 1]\n", "score_range"),
            ("metric = \"faithfulness\"\ncriteria = \"c\"\nfields = [\"answer\"]\n", "context"),
            ("metric = \"relevancy\"\ncriteria = \"c\"\nfields = [\"answer\"]\n", "input"),
            ("metric = \"vibes\"\ncriteria = \"c\"\nfields = [\"answer\"]\n", "metric"),
            ("metric = \"rubric\"\ncriteria = \"c\"\nfields = [\"answer\"]\nsteps = []\n", "steps"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(word), "{text}: {err}");
        }
    }

    #[test]
    fn normalise_maps_the_range_to_unit_interval() {
        let r = parse(
            "metric = \"rubric\"\ncriteria = \"c\"\nfields = [\"answer\"]\nscore_range = [1, 5]\n",
        )
        .unwrap();
        assert_eq!(r.normalise(1.0), 0.0);
        assert_eq!(r.normalise(5.0), 1.0);
        assert_eq!(r.normalise(3.0), 0.5);
        assert_eq!(r.normalise(9.0), 1.0);
    }
}
