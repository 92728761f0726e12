//! Turns a `--model` string into a backend, without loading it: the fingerprint (the answer
//! cache's key) is known before any weights are read, so a fully cached run never loads a model.

use std::path::{Path, PathBuf};

use super::gguf::{file_fingerprint, GgufModel};
use super::replay::ReplayModel;
use super::{fetch, Model, ModelError};

/// A parsed model spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A Llama-family GGUF file (the default model resolves to one).
    Gguf(PathBuf),
    /// Recorded answers.
    Replay(PathBuf),
}

impl ModelSpec {
    /// Parses `smollm2` / `default`, `replay:<file>`, or a path to a `.gguf` file. Relative paths
    /// resolve against `root`. The default model is fetched on first use.
    pub fn parse(spec: &str, root: &Path) -> Result<Self, ModelError> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "smollm2" || spec == "default" {
            return Ok(Self::Gguf(fetch::ensure_default_model()?));
        }
        if let Some(rest) = spec.strip_prefix("replay:") {
            return Ok(Self::Replay(root.join(rest)));
        }
        let path = root.join(spec);
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Ok(Self::Gguf(path));
        }
        if path.is_dir() {
            return Err(ModelError::Other(format!(
                "{}: checkpoint folders (Qwen3-VL) are not supported by this build; use a .gguf file",
                path.display()
            )));
        }
        Err(ModelError::UnknownSpec(spec.to_owned()))
    }

    /// The answer-cache key, computed without loading weights.
    pub fn fingerprint(&self) -> Result<String, ModelError> {
        match self {
            Self::Gguf(p) => {
                if !p.is_file() {
                    return Err(ModelError::Missing {
                        path: p.clone(),
                        hint: String::new(),
                    });
                }
                Ok(format!(
                    "{}:{}",
                    super::gguf::IMPL_VERSION,
                    file_fingerprint(p)?
                ))
            }
            Self::Replay(p) => {
                let bytes = std::fs::read(p).map_err(|_| ModelError::Missing {
                    path: p.clone(),
                    hint: " (replay file)".into(),
                })?;
                Ok(ReplayModel::fingerprint_of(&bytes))
            }
        }
    }

    /// Short label for reports and snapshot names.
    pub fn label(&self) -> String {
        match self {
            Self::Gguf(p) => super::gguf::label_of(p),
            Self::Replay(p) => ReplayModel::label_of(p),
        }
    }

    /// Loads the backend.
    pub fn load(&self) -> Result<Box<dyn Model>, ModelError> {
        Ok(match self {
            Self::Gguf(p) => Box::new(GgufModel::load(p)?),
            Self::Replay(p) => Box::new(ReplayModel::load(p)?),
        })
    }
}
