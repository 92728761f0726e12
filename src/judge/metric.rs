//! From a parsed verdict to a 0..1 score and a one-line reason.
//!
//! - Rubric (GEval-style): the integer score, normalised over the rubric's range; when the reply
//!   carries logprobs for the score token, the expectation Σ p(s)·s over the in-range score tokens
//!   among its top logprobs replaces the integer (GEval's probability weighting).
//! - Relevancy: share of statements not judged irrelevant (`yes` and `idk` count, as in
//!   DeepEval); an answer with no statements scores 0.
//! - Faithfulness: share of claims judged supported (`yes` only: an unstated claim is a
//!   hallucination for a service manual); an answer with no claims scores 1.

use serde_json::{json, Value};

use super::parse::{Verdict, YesNo};
use super::rubric::Rubric;

/// A computed score with its explanation and structured detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub value: f64,
    pub reason: String,
    pub detail: Value,
}

/// Scores a verdict. `content` and `logprobs` (the choice's `logprobs` object) come from the reply.
pub fn compute(
    rubric: &Rubric,
    verdict: &Verdict,
    content: &str,
    logprobs: Option<&Value>,
) -> Outcome {
    match verdict {
        Verdict::Rubric(v) => {
            let weighted = logprobs.and_then(|lp| weighted_score(rubric, content, lp, v.score));
            let raw = weighted.map_or(v.score as f64, |w| w.0);
            let value = rubric.normalise(raw);
            let detail = json!({
                "raw_score": v.score,
                "weighted_score": weighted.map(|w| w.0),
                "score_prob_mass": weighted.map(|w| w.1),
                "score_range": rubric.score_range,
            });
            Outcome {
                value,
                reason: format!("{}/{}: {}", v.score, rubric.score_range[1], v.reason),
                detail,
            }
        }
        Verdict::Relevancy(v) => {
            let total = v.statements.len();
            let relevant = v
                .statements
                .iter()
                .filter(|s| s.relevant != YesNo::No)
                .count();
            let value = if total == 0 {
                0.0
            } else {
                relevant as f64 / total as f64
            };
            Outcome {
                value,
                reason: format!("{relevant}/{total} statements relevant: {}", v.reason),
                detail: json!({"relevant": relevant, "statements": total}),
            }
        }
        Verdict::Faithfulness(v) => {
            let total = v.claims.len();
            let supported = v
                .claims
                .iter()
                .filter(|c| c.supported == YesNo::Yes)
                .count();
            let value = if total == 0 {
                1.0
            } else {
                supported as f64 / total as f64
            };
            Outcome {
                value,
                reason: format!("{supported}/{total} claims supported: {}", v.reason),
                detail: json!({"supported": supported, "claims": total}),
            }
        }
    }
}

/// The probability-weighted score and the probability mass it rests on, when the token that
/// carries `score` in `content` is exactly the score's digits and its top logprobs hold at least
/// one in-range integer. `None` otherwise (multi-token numbers, missing or mismatched logprobs).
pub fn weighted_score(
    rubric: &Rubric,
    content: &str,
    logprobs: &Value,
    score: i64,
) -> Option<(f64, f64)> {
    let tokens = logprobs.get("content")?.as_array()?;
    let texts: Vec<&str> = tokens
        .iter()
        .map(|t| t.get("token").and_then(Value::as_str))
        .collect::<Option<_>>()?;
    if texts.concat() != content {
        return None;
    }
    let at = score_offset(content)?;
    let mut start = 0;
    for (tok, text) in tokens.iter().zip(&texts) {
        let end = start + text.len();
        if (start..end).contains(&at) {
            if text.trim() != score.to_string()
                || start + (text.len() - text.trim_start().len()) != at
            {
                return None;
            }
            let [lo, hi] = rubric.score_range;
            let (mut mass, mut sum) = (0.0, 0.0);
            for alt in tok.get("top_logprobs")?.as_array()? {
                let (Some(t), Some(lp)) = (
                    alt.get("token").and_then(Value::as_str),
                    alt.get("logprob").and_then(Value::as_f64),
                ) else {
                    continue;
                };
                if let Ok(s) = t.trim().parse::<i64>() {
                    if (lo..=hi).contains(&s) && lp.is_finite() {
                        let p = lp.exp();
                        mass += p;
                        sum += p * s as f64;
                    }
                }
            }
            // Rounding can put the mean a hair outside the range.
            return (mass > 0.0).then(|| ((sum / mass).clamp(lo as f64, hi as f64), mass));
        }
        start = end;
    }
    None
}

/// Byte offset of the value of the top-level `"score"` key (the last such key: a `"score"` inside
/// a string is escaped and cannot match).
fn score_offset(content: &str) -> Option<usize> {
    let key = content.rfind("\"score\"")?;
    let rest = &content[key + 7..];
    let colon = rest.find(':')?;
    if !rest[..colon].trim().is_empty() {
        return None;
    }
    let after = &rest[colon + 1..];
    let ws = after.len() - after.trim_start().len();
    Some(key + 7 + colon + 1 + ws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::parse::{parse, Claim, FaithfulnessVerdict, RelevancyVerdict, Statement};
    use std::path::Path;

    fn rubric(metric: &str) -> Rubric {
        Rubric::parse(
            &format!("metric = \"{metric}\"\ncriteria = \"c\"\nfields = [\"input\", \"answer\", \"context\"]\n"),
            Path::new("judges/x.toml"),
        )
        .unwrap()
    }

    fn lp(tokens: &[(&str, &[(&str, f64)])]) -> Value {
        json!({"content": tokens.iter().map(|(t, alts)| json!({
            "token": t, "logprob": -0.1,
            "top_logprobs": alts.iter().map(|(a, l)| json!({"token": a, "logprob": l})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()})
    }

    #[test]
    fn rubric_score_without_logprobs_is_the_normalised_integer() {
        let r = rubric("rubric");
        let content = r#"{"reason": "close", "score": 4}"#;
        let v = parse(&r, content).unwrap();
        let o = compute(&r, &v, content, None);
        assert_eq!(o.value, 0.75);
        assert!(o.reason.starts_with("4/5: close"));
    }

    #[test]
    fn rubric_score_is_probability_weighted() {
        let r = rubric("rubric");
        let content = r#"{"reason": "ok", "score": 4}"#;
        let logprobs = lp(&[
            (r#"{"reason": "ok", "score": "#, &[]),
            (
                "4",
                &[
                    ("4", (0.6f64).ln()),
                    ("5", (0.2f64).ln()),
                    ("3", (0.2f64).ln()),
                    ("x", -0.1),
                ],
            ),
            ("}", &[]),
        ]);
        let v = parse(&r, content).unwrap();
        let o = compute(&r, &v, content, Some(&logprobs));
        // E[s] = 0.6·4 + 0.2·5 + 0.2·3 = 4.0 over a mass of 1.0.
        assert!((o.detail["weighted_score"].as_f64().unwrap() - 4.0).abs() < 1e-9);
        assert!((o.value - 0.75).abs() < 1e-9);
        let skewed = lp(&[
            (r#"{"reason": "ok", "score": "#, &[]),
            ("4", &[("4", (0.5f64).ln()), ("5", (0.5f64).ln())]),
            ("}", &[]),
        ]);
        let o = compute(&r, &v, content, Some(&skewed));
        assert!((o.value - 0.875).abs() < 1e-9, "{o:?}");
    }

    #[test]
    fn logprobs_that_do_not_line_up_are_ignored() {
        let r = rubric("rubric");
        let content = r#"{"reason": "ok", "score": 4}"#;
        // Tokens that do not concatenate to the content.
        let wrong = lp(&[("{}", &[])]);
        assert_eq!(weighted_score(&r, content, &wrong, 4), None);
        // Score split across tokens with a neighbour.
        let merged = lp(&[
            (r#"{"reason": "ok", "score":"#, &[]),
            (" 4}", &[("4", 0.0)]),
        ]);
        assert_eq!(weighted_score(&r, content, &merged, 4), None);
        // A leading-space score token is fine.
        let spaced = lp(&[
            (r#"{"reason": "ok", "score":"#, &[]),
            (" 4", &[(" 4", 0.0), (" 2", 0.0)]),
            ("}", &[]),
        ]);
        assert_eq!(weighted_score(&r, content, &spaced, 4), Some((3.0, 2.0)));
    }

    #[test]
    fn a_score_inside_the_reason_is_not_the_score() {
        let content = r#"{"reason": "the \"score\": 1 is wrong", "score": 5}"#;
        assert_eq!(&content[score_offset(content).unwrap()..], "5}");
    }

    #[test]
    fn relevancy_and_faithfulness_shares() {
        let st = |s: &str, r| Statement {
            statement: s.into(),
            relevant: r,
        };
        let v = Verdict::Relevancy(RelevancyVerdict {
            statements: vec![
                st("a", YesNo::Yes),
                st("b", YesNo::No),
                st("c", YesNo::Idk),
                st("d", YesNo::No),
            ],
            reason: "r".into(),
        });
        assert_eq!(compute(&rubric("relevancy"), &v, "", None).value, 0.5);
        let empty = Verdict::Relevancy(RelevancyVerdict {
            statements: vec![],
            reason: "r".into(),
        });
        assert_eq!(compute(&rubric("relevancy"), &empty, "", None).value, 0.0);
        let cl = |s: &str, r| Claim {
            claim: s.into(),
            supported: r,
        };
        let v = Verdict::Faithfulness(FaithfulnessVerdict {
            claims: vec![
                cl("a", YesNo::Yes),
                cl("b", YesNo::Idk),
                cl("c", YesNo::Yes),
                cl("d", YesNo::No),
            ],
            reason: "r".into(),
        });
        assert_eq!(compute(&rubric("faithfulness"), &v, "", None).value, 0.5);
        let none = Verdict::Faithfulness(FaithfulnessVerdict {
            claims: vec![],
            reason: "r".into(),
        });
        assert_eq!(compute(&rubric("faithfulness"), &none, "", None).value, 1.0);
    }

    proptest::proptest! {
        #[test]
        fn weighted_score_stays_in_range(ps in proptest::collection::vec((1i64..6, -20.0f64..0.0), 1..6), score in 1i64..6) {
            let r = rubric("rubric");
            let head = r#"{"reason": "", "score": "#;
            let content = format!("{head}{score}}}");
            let alts: Vec<(String, f64)> = ps.iter().map(|(s, l)| (s.to_string(), *l)).collect();
            let alts_ref: Vec<(&str, f64)> = alts.iter().map(|(s, l)| (s.as_str(), *l)).collect();
            let sc = score.to_string();
            let logprobs = lp(&[(head, &[]), (sc.as_str(), &alts_ref), ("}", &[])]);
            let (w, mass) = weighted_score(&r, &content, &logprobs, score).unwrap();
            proptest::prop_assert!((1.0..=5.0).contains(&w));
            proptest::prop_assert!(mass > 0.0);
        }
    }
}
