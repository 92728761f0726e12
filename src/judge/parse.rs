//! Strict parsing of a judge's reply into a verdict.
//!
//! The reply must be exactly one JSON object of the metric's shape (surrounding whitespace
//! allowed; no prose, no code fences, no unknown keys, scores inside the range). The error text
//! is what the repair round shows the judge.

use serde::{Deserialize, Serialize};

use super::rubric::{MetricKind, Rubric};

/// A three-way per-item verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    Yes,
    No,
    Idk,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RubricVerdict {
    pub reason: String,
    pub score: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub statement: String,
    pub relevant: YesNo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelevancyVerdict {
    pub statements: Vec<Statement>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub claim: String,
    pub supported: YesNo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaithfulnessVerdict {
    pub claims: Vec<Claim>,
    pub reason: String,
}

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Verdict {
    Rubric(RubricVerdict),
    Relevancy(RelevancyVerdict),
    Faithfulness(FaithfulnessVerdict),
}

impl Verdict {
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Rubric(v) => &v.reason,
            Verdict::Relevancy(v) => &v.reason,
            Verdict::Faithfulness(v) => &v.reason,
        }
    }
}

/// Parses `reply` for `rubric`'s metric.
pub fn parse(rubric: &Rubric, reply: &str) -> Result<Verdict, String> {
    let text = reply.trim();
    if !text.starts_with('{') {
        let head: String = text.chars().take(40).collect();
        return Err(format!("the reply must be a single JSON object starting with `{{`, but it starts with `{head}`"));
    }
    let json_err = |e: serde_json::Error| format!("invalid JSON: {e}");
    match rubric.metric {
        MetricKind::Rubric => {
            let v: RubricVerdict = serde_json::from_str(text).map_err(json_err)?;
            let [lo, hi] = rubric.score_range;
            if !(lo..=hi).contains(&v.score) {
                return Err(format!(
                    "`score` is {} but must be an integer from {lo} to {hi}",
                    v.score
                ));
            }
            Ok(Verdict::Rubric(v))
        }
        MetricKind::Relevancy => Ok(Verdict::Relevancy(
            serde_json::from_str(text).map_err(json_err)?,
        )),
        MetricKind::Faithfulness => Ok(Verdict::Faithfulness(
            serde_json::from_str(text).map_err(json_err)?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rubric(metric: &str) -> Rubric {
        Rubric::parse(
            &format!("metric = \"{metric}\"\ncriteria = \"c\"\nfields = [\"input\", \"answer\", \"context\"]\n"),
            Path::new("judges/x.toml"),
        )
        .unwrap()
    }

    #[test]
    fn accepts_exact_objects() {
        let v = parse(&rubric("rubric"), " {\"reason\": \"ok\", \"score\": 4}\n").unwrap();
        assert_eq!(
            v,
            Verdict::Rubric(RubricVerdict {
                reason: "ok".into(),
                score: 4
            })
        );
        let v = parse(
            &rubric("relevancy"),
            r#"{"statements": [{"statement": "a", "relevant": "yes"}, {"statement": "b", "relevant": "idk"}], "reason": "r"}"#,
        )
        .unwrap();
        assert_eq!(v.reason(), "r");
        let v = parse(
            &rubric("faithfulness"),
            r#"{"claims": [], "reason": "none"}"#,
        )
        .unwrap();
        assert!(matches!(v, Verdict::Faithfulness(f) if f.claims.is_empty()));
    }

    #[test]
    fn rejects_prose_fences_truncation_unknown_keys_and_out_of_range() {
        let r = rubric("rubric");
        for (reply, word) in [
            ("The answer is good. Score: 5", "starts with"),
            (
                "```json\n{\"reason\": \"ok\", \"score\": 4}\n```",
                "starts with",
            ),
            ("{\"reason\": \"ok\", \"sco", "EOF"),
            (
                "{\"reason\": \"ok\", \"score\": 4, \"extra\": 1}",
                "unknown field",
            ),
            ("{\"reason\": \"ok\", \"score\": 9}", "from 1 to 5"),
            ("{\"reason\": \"ok\", \"score\": \"4\"}", "invalid type"),
            ("{\"reason\": \"ok\"}", "missing field"),
            ("{\"reason\": \"ok\", \"score\": 4} {}", "trailing"),
        ] {
            let err = parse(&r, reply).unwrap_err();
            assert!(err.contains(word), "{reply}: {err}");
        }
        let err = parse(
            &rubric("relevancy"),
            r#"{"statements": [{"statement": "a", "relevant": "maybe"}], "reason": ""}"#,
        )
        .unwrap_err();
        assert!(err.contains("unknown variant"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_round_trips(reason in ".{0,40}", score in -3i64..9, junk in ".{0,30}") {
            let r = rubric("rubric");
            let text = serde_json::json!({"reason": reason, "score": score}).to_string();
            let parsed = parse(&r, &text);
            proptest::prop_assert_eq!(parsed.is_ok(), (1..=5).contains(&score));
            let _ = parse(&r, &junk);
            let _ = parse(&r, &format!("{text}{junk}"));
        }
    }
}
