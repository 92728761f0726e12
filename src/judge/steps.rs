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
    settings.validate().map_err(|e| e.to_string())?;
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

/// The comment written above generated steps; a later `--force` recognises and replaces it.
const NOTE: &str = "# Generated from `criteria` by the judge";

/// Writes `steps` as the rubric file's `evaluation_steps`, keeping everything else of the file
/// (comments, order, formatting) as it was. Refuses a file that already has steps unless
/// `force`; checks that the result still parses as a rubric with exactly these steps; replaces
/// the file atomically.
pub fn freeze(
    path: &Path,
    steps: &[String],
    judge_model: &str,
    force: bool,
) -> Result<(), JudgeError> {
    let err = |reason: String| JudgeError::Rubric {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let rubric = Rubric::parse(&text, path)?;
    if !rubric.evaluation_steps.is_empty() && !force {
        return Err(err(format!(
            "already has {} `evaluation_steps`; pass --force to replace them",
            rubric.evaluation_steps.len()
        )));
    }
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| err(e.to_string()))?;
    let mut array = toml_edit::Array::new();
    for step in steps {
        array.push_formatted(toml_edit::Value::from(step.as_str()).decorated("\n    ", ""));
    }
    array.set_trailing_comma(true);
    array.set_trailing("\n");
    let note = format!(
        "{NOTE} `{}` and frozen: edit freely, or regenerate with `vlmtest judge-steps --force`.\n",
        judge_model.replace(['\n', '\r'], " ")
    );
    let table = doc.as_table_mut();
    // The comments above an existing key, less an earlier generated note; a new key gets a blank
    // line before its note.
    let kept: String = match table.key_mut("evaluation_steps") {
        Some(mut key) => key
            .leaf_decor_mut()
            .prefix()
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|line| !line.starts_with(NOTE))
            .collect(),
        None => "\n".to_owned(),
    };
    match table.get_mut("evaluation_steps") {
        Some(item) => *item = toml_edit::value(array),
        None => {
            table.insert("evaluation_steps", toml_edit::value(array));
        }
    }
    if let Some(mut key) = table.key_mut("evaluation_steps") {
        key.leaf_decor_mut().set_prefix(format!("{kept}{note}"));
    }
    let out = doc.to_string();
    let frozen = Rubric::parse(&out, path)?;
    if frozen.evaluation_steps != steps {
        return Err(err("the frozen steps did not read back identically".into()));
    }
    let tmp = path.with_extension(format!("toml.tmp{}", std::process::id()));
    std::fs::write(&tmp, &out).map_err(|e| err(format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("cannot replace: {e}")))
}

/// `vlmtest judge-steps` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct StepsArgs {
    /// The rubric file, e.g. `judges/correctness.toml`.
    pub rubric: std::path::PathBuf,
    /// Replace the rubric's existing `evaluation_steps`.
    #[arg(long)]
    pub force: bool,
}

/// `vlmtest judge-steps`: asks the judge configured for the project at `root` (`[judge]` of
/// `vlmtest.toml`, `VLMTEST_JUDGE_*`) for the rubric's evaluation steps and freezes them into the
/// file. Returns the steps written.
pub fn run(root: &Path, args: &StepsArgs) -> Result<Vec<String>, JudgeError> {
    let path = &args.rubric;
    let text = std::fs::read_to_string(path).map_err(|e| JudgeError::Rubric {
        path: path.clone(),
        reason: format!("cannot read: {e}"),
    })?;
    let rubric = Rubric::parse(&text, path)?;
    if !rubric.evaluation_steps.is_empty() && !args.force {
        return Err(JudgeError::Rubric {
            path: path.clone(),
            reason: format!(
                "already has {} `evaluation_steps`; pass --force to replace them",
                rubric.evaluation_steps.len()
            ),
        });
    }
    let config = crate::config::Config::from_process(root, &crate::config::Overrides::default())
        .map_err(|e| JudgeError::Settings(e.to_string()))?;
    let settings = config.judge.ok_or_else(|| {
        JudgeError::Settings(
            "no judge configured: set [judge] in vlmtest.toml or VLMTEST_JUDGE_URL".into(),
        )
    })?;
    let steps = generate(&settings, &rubric).map_err(JudgeError::Client)?;
    freeze(path, &steps, &settings.model, args.force)?;
    Ok(steps)
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
        freeze(&path, &steps, "gpt-x", false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# a rubric\nmetric = \"rubric\"\ncriteria = \"Is it polite?\"\nfields = [\"answer\"]\n\n# Generated from `criteria` by the judge `gpt-x`"), "{text}");
        assert_eq!(Rubric::parse(&text, &path).unwrap().evaluation_steps, steps);
        let again = freeze(&path, &steps, "gpt-x", false)
            .unwrap_err()
            .to_string();
        assert!(
            again.contains("already has 2") && again.contains("--force"),
            "{again}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn force_replaces_steps_in_place_and_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.toml");
        let original = "# a rubric\nmetric = \"rubric\"  # GEval\n\n# my own note\nevaluation_steps = [\"old\"]\ncriteria = \"Is it polite?\"\nfields = [\"answer\"] # seen\n";
        std::fs::write(&path, original).unwrap();
        let steps = vec!["one".to_string(), "two".to_string()];
        freeze(&path, &steps, "judge-a", true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# my own note\n# Generated from `criteria` by the judge `judge-a`"),
            "{text}"
        );
        assert!(text.contains("metric = \"rubric\"  # GEval\n"), "{text}");
        assert!(text.contains("fields = [\"answer\"] # seen\n"), "{text}");
        assert_eq!(text.matches("evaluation_steps").count(), 1, "{text}");
        // The key stays where it was, before `criteria`.
        assert!(text.find("evaluation_steps =").unwrap() < text.find("criteria =").unwrap());
        // A second forced run replaces the generated note rather than stacking another.
        freeze(&path, &["three".to_string()], "judge-b", true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(NOTE).count(), 1, "{text}");
        assert!(
            text.contains("judge-b") && !text.contains("judge-a"),
            "{text}"
        );
        assert_eq!(
            Rubric::parse(&text, &path).unwrap().evaluation_steps,
            ["three"]
        );
    }

    #[test]
    fn bad_files_are_named_with_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let steps = vec!["a".to_string()];
        let missing = dir.path().join("nope.toml");
        let e = freeze(&missing, &steps, "m", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.toml") && e.contains("cannot read"), "{e}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "metric = \"rubric\"\ncriteria = \"c\nfields = [\"answer\"]\n",
        )
        .unwrap();
        let e = freeze(&bad, &steps, "m", false).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("line 2"), "{e}");
        let unknown = dir.path().join("unknown.toml");
        std::fs::write(
            &unknown,
            "metric = \"rubric\"\ncriteria = \"c\"\nfields = [\"answer\"]\nsteps = [\"x\"]\n",
        )
        .unwrap();
        let e = freeze(&unknown, &steps, "m", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown.toml") && e.contains("line 4") && e.contains("steps"),
            "{e}"
        );
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
