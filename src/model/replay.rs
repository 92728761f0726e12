//! Recorded answers: a JSONL file of `{"name": "suite::category::id", "answer": "..."}` lines.
//! For tests, CI determinism and re-scoring an earlier run without the model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Answer, GenerationOptions, Model, ModelError, Request};
use crate::case::hex;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    name: String,
    answer: String,
}

/// Answers looked up by test name.
pub struct ReplayModel {
    answers: HashMap<String, String>,
    fingerprint: String,
    label: String,
}

impl ReplayModel {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::Missing {
                path: path.to_path_buf(),
                hint: " (replay file)".into(),
            },
            _ => ModelError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        })?;
        let text = String::from_utf8(bytes.clone()).map_err(|e| ModelError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut answers = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rec: Line = serde_json::from_str(line).map_err(|e| ModelError::Replay {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })?;
            if answers.insert(rec.name.clone(), rec.answer).is_some() {
                return Err(ModelError::Replay {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: format!("second answer for `{}`", rec.name),
                });
            }
        }
        Ok(Self {
            answers,
            fingerprint: Self::fingerprint_of(&bytes),
            label: Self::label_of(path),
        })
    }

    pub fn fingerprint_of(bytes: &[u8]) -> String {
        format!("replay:{}", hex(&Sha256::digest(bytes)))
    }

    pub fn label_of(path: &Path) -> String {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("answers");
        format!("replay-{stem}")
    }

    /// Writes answers as a replay file (used by `vlmtest run --record`).
    pub fn write(path: &PathBuf, answers: &[(String, String)]) -> std::io::Result<()> {
        let mut out = String::new();
        for (name, answer) in answers {
            let line = serde_json::json!({ "name": name, "answer": answer });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        std::fs::write(path, out)
    }
}

impl Model for ReplayModel {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn generate(
        &mut self,
        requests: &[Request<'_>],
        _options: &GenerationOptions,
    ) -> Vec<Result<Answer, ModelError>> {
        requests
            .iter()
            .map(|r| {
                self.answers
                    .get(&r.name)
                    .map(|text| Answer {
                        text: text.clone(),
                        prompt_tokens: 0,
                        generated_tokens: 0,
                        elapsed: Duration::ZERO,
                    })
                    .ok_or_else(|| ModelError::NoRecordedAnswer(r.name.clone()))
            })
            .collect()
    }
}
