//! Judge prompts and response schemas, one pair per metric.
//!
//! Each metric asks for one JSON object, described both in words (for endpoints that ignore
//! `response_format`) and as a JSON schema (for those that enforce it). The schema lists its
//! properties in `required` in the order the judge should write them: reasoning first, verdict
//! last, so the verdict follows the reasoning.

use serde_json::{json, Value};

use super::rubric::{Field, MetricKind, Rubric};
use super::settings::JudgeSettings;

/// The case fields a request shows, already resolved.
#[derive(Debug, Clone, Default)]
pub struct Fields<'a> {
    pub input: Option<&'a str>,
    pub answer: &'a str,
    pub reference: Option<&'a str>,
    pub context: Option<&'a str>,
}

impl Fields<'_> {
    fn get(&self, f: Field) -> Option<&str> {
        match f {
            Field::Input => self.input,
            Field::Answer => Some(self.answer),
            Field::Reference => self.reference,
            Field::Context => self.context,
        }
    }

    /// The first field the rubric needs that the case lacks, if any.
    pub fn missing(&self, rubric: &Rubric) -> Option<Field> {
        match rubric.metric {
            MetricKind::Faithfulness => {
                let has = rubric.fields.iter().any(|f| {
                    matches!(f, Field::Context | Field::Reference) && self.get(*f).is_some()
                });
                (!has).then_some(Field::Context)
            }
            _ => rubric
                .fields
                .iter()
                .copied()
                .find(|f| self.get(*f).is_none()),
        }
    }
}

/// The JSON schema of a metric's answer.
pub fn schema(rubric: &Rubric) -> Value {
    let yes_no = json!({"type": "string", "enum": ["yes", "no", "idk"]});
    match rubric.metric {
        MetricKind::Rubric => {
            let [lo, hi] = rubric.score_range;
            let scores: Vec<i64> = (lo..=hi).collect();
            json!({
                "type": "object",
                "properties": {"reason": {"type": "string"}, "score": {"type": "integer", "enum": scores}},
                "required": ["reason", "score"],
                "additionalProperties": false,
            })
        }
        MetricKind::Relevancy => json!({
            "type": "object",
            "properties": {
                "statements": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"statement": {"type": "string"}, "relevant": yes_no},
                    "required": ["statement", "relevant"],
                    "additionalProperties": false,
                }},
                "reason": {"type": "string"},
            },
            "required": ["statements", "reason"],
            "additionalProperties": false,
        }),
        MetricKind::Faithfulness => json!({
            "type": "object",
            "properties": {
                "claims": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"claim": {"type": "string"}, "supported": yes_no},
                    "required": ["claim", "supported"],
                    "additionalProperties": false,
                }},
                "reason": {"type": "string"},
            },
            "required": ["claims", "reason"],
            "additionalProperties": false,
        }),
    }
}

fn instructions(rubric: &Rubric) -> String {
    match rubric.metric {
        MetricKind::Rubric => {
            let [lo, hi] = rubric.score_range;
            format!(
                "You are a strict evaluation judge. Grade the answer by the criteria and steps below.\n\
                 Reply with one JSON object and nothing else: \
                 {{\"reason\": \"<one or two sentences>\", \"score\": <integer from {lo} (worst) to {hi} (best)>}}."
            )
        }
        MetricKind::Relevancy => {
            "You are a strict evaluation judge. Split the answer into its separate statements. \
             For each statement decide whether it helps answer the question: \"yes\" (relevant), \
             \"no\" (irrelevant) or \"idk\" (ambiguous, supporting detail).\n\
             Reply with one JSON object and nothing else: \
             {\"statements\": [{\"statement\": \"...\", \"relevant\": \"yes\"|\"no\"|\"idk\"}], \
             \"reason\": \"<one sentence>\"}."
                .into()
        }
        MetricKind::Faithfulness => {
            "You are a strict evaluation judge. List the factual claims the answer makes. \
             For each claim decide whether the context and reference below support it: \"yes\" \
             (supported), \"no\" (contradicted) or \"idk\" (not stated there).\n\
             Reply with one JSON object and nothing else: \
             {\"claims\": [{\"claim\": \"...\", \"supported\": \"yes\"|\"no\"|\"idk\"}], \
             \"reason\": \"<one sentence>\"}."
                .into()
        }
    }
}

/// The chat messages of a judge request.
pub fn messages(rubric: &Rubric, fields: &Fields<'_>) -> Vec<Value> {
    let mut user = format!("Criteria: {}\n", rubric.criteria.trim());
    if !rubric.evaluation_steps.is_empty() {
        user.push_str("Evaluation steps:\n");
        for (i, s) in rubric.evaluation_steps.iter().enumerate() {
            user.push_str(&format!("{}. {}\n", i + 1, s.trim()));
        }
    }
    for f in [
        Field::Input,
        Field::Context,
        Field::Reference,
        Field::Answer,
    ] {
        if rubric.fields.contains(&f) {
            if let Some(text) = fields.get(f) {
                user.push_str(&format!("\n{}:\n{}\n", f.label(), text.trim()));
            }
        }
    }
    vec![
        json!({"role": "system", "content": instructions(rubric)}),
        json!({"role": "user", "content": user}),
    ]
}

/// The full request body. Temperature 0; `response_format` and logprobs per the settings.
pub fn body(settings: &JudgeSettings, rubric: &Rubric, messages: Vec<Value>) -> Value {
    let mut b = json!({
        "model": settings.model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": settings.max_tokens,
    });
    if settings.json_schema {
        b["response_format"] = json!({
            "type": "json_schema",
            "json_schema": {"name": format!("judge_{}", rubric.name), "strict": true, "schema": schema(rubric)},
        });
    }
    if settings.logprobs && rubric.metric == MetricKind::Rubric {
        b["logprobs"] = json!(true);
        b["top_logprobs"] = json!(10);
    }
    b
}

/// The follow-up messages of the one repair round: the judge's reply and what was wrong with it.
pub fn repair(mut messages: Vec<Value>, reply: &str, error: &str) -> Vec<Value> {
    messages.push(json!({"role": "assistant", "content": reply}));
    messages.push(json!({"role": "user", "content": format!(
        "Your reply could not be used: {error}. Reply again with only the JSON object in the required format."
    )}));
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rubric(text: &str, name: &str) -> Rubric {
        Rubric::parse(text, Path::new(&format!("judges/{name}.toml"))).unwrap()
    }

    #[test]
    fn rubric_request_shows_the_chosen_fields_and_asks_for_the_schema() {
        let r = rubric(
            "metric = \"rubric\"\ncriteria = \"Is it correct?\"\nevaluation_steps = [\"Compare numbers\"]\nfields = [\"input\", \"answer\", \"reference\"]\n",
            "correctness",
        );
        let f = Fields {
            input: Some("Torque?"),
            answer: "40 Nm",
            reference: Some("45 Nm"),
            context: Some("secret"),
        };
        let m = messages(&r, &f);
        let user = m[1]["content"].as_str().unwrap();
        assert!(user.contains("1. Compare numbers"));
        assert!(user.contains("Question:\nTorque?"));
        assert!(user.contains("Reference answer:\n45 Nm"));
        assert!(
            !user.contains("secret"),
            "context is not in this rubric's fields"
        );
        let b = body(&JudgeSettings::default(), &r, m);
        assert_eq!(b["temperature"], 0);
        assert_eq!(b["top_logprobs"], 10);
        assert_eq!(
            b["response_format"]["json_schema"]["schema"]["properties"]["score"]["enum"],
            json!([1, 2, 3, 4, 5])
        );
    }

    #[test]
    fn missing_fields() {
        let r = rubric(
            "metric = \"rubric\"\ncriteria = \"c\"\nfields = [\"answer\", \"reference\"]\n",
            "c",
        );
        let f = Fields {
            answer: "a",
            ..Default::default()
        };
        assert_eq!(f.missing(&r), Some(Field::Reference));
        let r = rubric("metric = \"faithfulness\"\ncriteria = \"c\"\nfields = [\"answer\", \"context\", \"reference\"]\n", "f");
        assert_eq!(f.missing(&r), Some(Field::Context));
        let f = Fields {
            answer: "a",
            reference: Some("r"),
            ..Default::default()
        };
        assert_eq!(f.missing(&r), None);
    }

    #[test]
    fn no_logprobs_for_list_metrics_and_no_schema_when_off() {
        let r = rubric(
            "metric = \"relevancy\"\ncriteria = \"c\"\nfields = [\"input\", \"answer\"]\n",
            "relevancy",
        );
        let s = JudgeSettings {
            json_schema: false,
            ..Default::default()
        };
        let b = body(&s, &r, vec![]);
        assert!(b.get("logprobs").is_none());
        assert!(b.get("response_format").is_none());
    }
}
