//! The pipeline's unit of work: one question put to the model, and what its answer must satisfy.
//!
//! A `Case` is data, not code. Probes (`probes/*.toml`), validation rows (`cases/*.jsonl`) and the
//! importers all produce the same `Case`, so every later stage (inference, scoring, reporting) sees
//! one shape.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The stable, unique test name of a case: `suite::category::id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CaseId {
    pub suite: String,
    pub category: String,
    pub id: String,
}

impl CaseId {
    pub fn new(suite: &str, category: &str, id: &str) -> Self {
        Self {
            suite: suite.to_owned(),
            category: category.to_owned(),
            id: id.to_owned(),
        }
    }

    /// The libtest name, `suite::category::id`.
    pub fn test_name(&self) -> String {
        format!("{}::{}::{}", self.suite, self.category, self.id)
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}::{}", self.suite, self.category, self.id)
    }
}

/// Who speaks a turn of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// Where an image comes from. Paths are already resolved (absolute, inside the suite root).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    Path(PathBuf),
    /// A `data:image/...;base64,...` URI, kept verbatim.
    DataUri(String),
}

/// One piece of a message: text or an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    Image { image: ImageSource },
}

/// One turn of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            parts: vec![Part::Text { text: text.into() }],
        }
    }

    /// The message's text parts joined by newlines (images left out).
    pub fn joined_text(&self) -> String {
        let texts: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                Part::Image { .. } => None,
            })
            .collect();
        texts.join("\n")
    }

    pub fn images(&self) -> impl Iterator<Item = &ImageSource> {
        self.parts.iter().filter_map(|p| match p {
            Part::Image { image } => Some(image),
            Part::Text { .. } => None,
        })
    }
}

/// Tolerance for numeric matches: a value matches when it is within `abs` or within `rel` of the
/// expected magnitude (whichever is looser).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    #[serde(default, deserialize_with = "non_negative")]
    pub abs: f64,
    #[serde(default, deserialize_with = "non_negative")]
    pub rel: f64,
}

/// A tolerance bound: finite and at least 0 (a negative one would fail every match silently).
fn non_negative<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = f64::deserialize(d)?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "a tolerance must be a finite number of at least 0, not {x}"
        )))
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            abs: 1e-9,
            rel: 0.0,
        }
    }
}

/// A number the answer must state, with an optional unit (`Nm`, `deg`, `%`, `$`, `ml`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedNumber {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// What an answer must satisfy. Each expectation becomes one `Score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expectation {
    /// Every number (or at least `min_matched` of them) appears in the answer, unit-aware.
    Numbers {
        numbers: Vec<ExpectedNumber>,
        tolerance: Tolerance,
        /// How many must match; `None` means all.
        min_matched: Option<usize>,
        threshold: f64,
    },
    /// Keywords appear in the answer, case- and accent-insensitively.
    Keywords {
        keywords: Vec<String>,
        min_matched: Option<usize>,
        threshold: f64,
    },
    /// The answer equals the expected text (exactly, or after normalisation).
    Exact { text: String, normalise: bool },
    /// Token-overlap F1 against a reference answer (SQuAD-style), for free-text references.
    TokenF1 { reference: String, threshold: f64 },
    /// An LLM judge grades the answer with the named rubric from `judges/`.
    Judge {
        rubric: String,
        threshold: Option<f64>,
    },
    /// A task scorer (deals, labels, price, spam) owned by a task module; `spec` is its own data.
    Task {
        task: String,
        spec: serde_json::Value,
    },
}

impl Expectation {
    /// The scorer name this expectation reports under.
    pub fn scorer_name(&self) -> String {
        match self {
            Expectation::Numbers { .. } => "numeric".into(),
            Expectation::Keywords { .. } => "keywords".into(),
            Expectation::Exact {
                normalise: false, ..
            } => "exact".into(),
            Expectation::Exact {
                normalise: true, ..
            } => "exact_normalised".into(),
            Expectation::TokenF1 { .. } => "token_f1".into(),
            Expectation::Judge { rubric, .. } => format!("judge.{rubric}"),
            Expectation::Task { task, .. } => task.clone(),
        }
    }
}

/// Where a case came from, for error messages and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based line of a JSONL row; `None` for TOML probes.
    pub line: Option<usize>,
}

/// One test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: CaseId,
    pub tags: Vec<String>,
    /// The conversation up to the turn the model must produce (no final assistant turn).
    pub messages: Vec<Message>,
    /// The reference answer, when the source has one (last assistant turn, or `answer`).
    pub reference: Option<String>,
    /// Context the judge may use for faithfulness (e.g. the manual excerpt).
    pub context: Option<String>,
    pub expect: Vec<Expectation>,
    /// Free-form metadata, used for report slices (`image`, `content_type`, `store`, …).
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Marked `ignore` in its source: runs only under `--ignored` / `--include-ignored`.
    pub ignored: bool,
    pub origin: Origin,
}

impl Case {
    /// A hash of everything that influences the model's answer (not the expectations), so the
    /// answer cache survives edits to thresholds or keywords.
    pub fn prompt_hash(&self) -> String {
        let mut h = Sha256::new();
        // serde_json of the messages is stable: fields are in declaration order.
        h.update(serde_json::to_vec(&self.messages).unwrap_or_default());
        for m in &self.messages {
            for img in m.images() {
                if let ImageSource::Path(p) = img {
                    // Image bytes, not only the path, decide the answer.
                    if let Ok(bytes) = std::fs::read(p) {
                        h.update(Sha256::digest(&bytes));
                    }
                }
            }
        }
        hex(&h.finalize())
    }

    /// The last user turn's text, for display.
    pub fn question(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(Message::joined_text)
            .unwrap_or_default()
    }

    pub fn has_images(&self) -> bool {
        self.messages.iter().any(|m| m.images().next().is_some())
    }
}

/// Lowercase hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
