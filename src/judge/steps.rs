//! GEval's evaluation steps: generated once from a rubric's criteria by the judge, then frozen
//! into the rubric file, so every later run shows the judge the same steps (and the same request,
//! so the cache keeps working).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::client::{Client, Counters};
use super::rubric::Rubric;
use super::settings::JudgeSettings;
use super::JudgeError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepsReply {
    steps: Vec<String>,
}

/// The request that asks the judge for a rubric's steps.
pub fn request(settings: &JudgeSettings, rubric: &Rubric) -> Value {
    let fields: Vec<&str> = rubric.fields.iter().map(|f| f.label()).collect();
    let mut b = json!({
        "model": settings.model,
        "temperature": 0,
        "max_tokens": settings.max_tokens,
        "messages": [
            {"role": "system", "content": "You write evaluation steps for a strict grader. Given the criteria, write 3 to 6 short, \
                concrete steps the grader follows to check an answer. Reply with one JSON object and nothing else: \
                {\"steps\": [\"...\", \"...\"]}."},
            {"role": "user", "content": format!("Criteria: {}\nThe grader sees: {}.", rubric.criteria.trim(), fields.join(", "))},
        ],
    });
    if settings.json_schema {
        b["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "evaluation_steps", "strict": true, "schema": {
            "type": "object",
            "properties": {"steps": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 6}},
            "required": ["steps"],
            "additionalProperties": false,
        }}});
    }
    b
}

/// Parses the judge's reply: one object with 1 to 8 non-empty steps.
pub fn parse(reply: &str) -> Result<Vec<String>, String> {
    let r: StepsReply =
        serde_json::from_str(reply.trim()).map_err(|e| format!("invalid JSON: {e}"))?;
    let steps: Vec<String> = r.steps.into_iter().map(|s| s.trim().to_owned()).collect();
    if steps.is_empty() || steps.len() > 8 || steps.iter().any(String::is_empty) {
        return Err(format!("expected 1 to 8 non-empty steps, got {steps:?}"));
    }
    Ok(steps)
}

/// Asks the judge for `rubric`'s evaluation steps (one request, retried like any judge call).
pub fn generate(settings: &JudgeSettings, rubric: &Rubric) -> Result<Vec<String>, String> {
    settings.validate()?;
    let client = Client::new(settings, Arc::new(Counters::default())).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let body = request(settings, rubric);
    let v = rt
        .block_on(client.chat(&body))
        .map_err(|e| format!("judge: {e}"))?;
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    parse(content)
}

/// Appends `evaluation_steps` to the rubric file at `path`. Refuses a file that already has
/// steps (delete them to regenerate), and checks the result still parses.
pub fn freeze(path: &Path, steps: &[String], judge_model: &str) -> Result<(), JudgeError> {
    let err = |reason: String| JudgeError::Rubric {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let rubric = Rubric::parse(&text, path)?;
    if !rubric.evaluation_steps.is_empty() {
        return Err(err(
            "already has `evaluation_steps`; delete them to generate new ones".into(),
        ));
    }
    let mut out = text.trim_end().to_owned();
    out.push_str(&format!(
        "\n\n# Generated from `criteria` by the judge `{}` and frozen: edit freely, or delete to regenerate.\nevaluation_steps = [\n",
        judge_model.replace('\n', " ")
    ));
    for s in steps {
        out.push_str(&format!("    {},\n", toml::Value::String(s.clone())));
    }
    out.push_str("]\n");
    let frozen = Rubric::parse(&out, path)?;
    if frozen.evaluation_steps != steps {
        return Err(err("the frozen steps did not read back identically".into()));
    }
    std::fs::write(path, out).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_appends_once_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.toml");
        std::fs::write(&path, "# a rubric\nmetric = \"rubric\"\ncriteria = \"Is it polite?\"\nfields = [\"answer\"]\n").unwrap();
        let steps = vec![
            "Read the \"answer\".".to_string(),
            "Check the tone\\style.".to_string(),
        ];
        freeze(&path, &steps, "gpt-x").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# a rubric\n"));
        assert_eq!(Rubric::parse(&text, &path).unwrap().evaluation_steps, steps);
        let again = freeze(&path, &steps, "gpt-x").unwrap_err().to_string();
        assert!(again.contains("already has"), "{again}");
    }

    #[test]
    fn parse_is_strict() {
        assert_eq!(parse(r#"{"steps": [" a ", "b"]}"#).unwrap(), ["a", "b"]);
        assert!(parse(r#"{"steps": []}"#).is_err());
        assert!(parse(r#"{"steps": ["a", ""]}"#).is_err());
        assert!(parse(r#"{"steps": ["a"], "x": 1}"#).is_err());
        assert!(parse("1. Read").is_err());
    }
}
