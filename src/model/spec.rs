//! Turns a `--model` string into a backend, without loading it: the fingerprint (the answer
//! cache's key) is known before any weights are read, so a fully cached run never loads a model.

use std::path::{Path, PathBuf};

use super::adapted_gguf::AdaptedGguf;
use super::checkpoint::CheckpointFiles;
use super::gguf::{file_fingerprint, GgufModel};
use super::qwen3_vl::Qwen3VlModel;
use super::replay::ReplayModel;
use super::{fetch, Model, ModelError};

/// A parsed model spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A Llama-family GGUF file (the default model resolves to one).
    Gguf(PathBuf),
    /// Recorded answers.
    Replay(PathBuf),
    /// An OpenAI-compatible endpoint: `openai:<base-url>#<model-name>`.
    OpenAi(String),
    /// A Llama-family GGUF with a PEFT LoRA adapter (as `vlmtest-train` writes it), merged into
    /// f32 weights at load.
    GgufAdapter { gguf: PathBuf, adapter: PathBuf },
    /// A Hugging Face checkpoint folder (Qwen3-VL), with an optional PEFT LoRA adapter folder.
    Checkpoint {
        dir: PathBuf,
        adapter: Option<PathBuf>,
    },
}

impl ModelSpec {
    /// Parses `smollm2` / `default`, `replay:<file>`, or a path to a `.gguf` file. Relative paths
    /// resolve against `root`. The default model is fetched on first use.
    pub fn parse(spec: &str, root: &Path) -> Result<Self, ModelError> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "smollm2" || spec == "default" {
            return Ok(Self::Gguf(fetch::ensure_default_model()?));
        }
        if spec.starts_with("openai:") {
            super::openai::OpenAiModel::spec_fingerprint(spec)?;
            return Ok(Self::OpenAi(spec.to_owned()));
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
            return Ok(Self::Checkpoint {
                dir: path,
                adapter: None,
            });
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
            Self::OpenAi(s) => super::openai::OpenAiModel::spec_fingerprint(s),
            Self::GgufAdapter { gguf, adapter } => {
                let base = Self::Gguf(gguf.clone()).fingerprint()?;
                Ok(format!(
                    "{ADAPTED_GGUF_VERSION}:{base}{}",
                    adapter_fingerprint(adapter)?
                ))
            }
            Self::Checkpoint { dir, adapter } => {
                let mut fp = format!("qwen3_vl:{}", CheckpointFiles::locate(dir)?.fingerprint()?);
                if let Some(a) = adapter {
                    fp.push_str(&adapter_fingerprint(a)?);
                }
                Ok(fp)
            }
        }
    }

    /// Attaches a PEFT LoRA adapter (GGUF files and checkpoint folders; recorded answers ignore it).
    pub fn with_adapter(self, adapter: Option<PathBuf>) -> Result<Self, ModelError> {
        match (self, adapter) {
            // Recorded answers have no weights to adapt.
            (spec @ Self::Replay(_), _) | (spec, None) => Ok(spec),
            (Self::Checkpoint { dir, .. }, Some(a)) => Ok(Self::Checkpoint { dir, adapter: Some(a) }),
            (Self::Gguf(gguf) | Self::GgufAdapter { gguf, .. }, Some(adapter)) => {
                Ok(Self::GgufAdapter { gguf, adapter })
            }
            (Self::OpenAi(_), Some(a)) => Err(ModelError::Other(format!(
                "adapter {}: a model behind an OpenAI-compatible endpoint is adapted by its server, not by vlmtest",
                a.display()
            ))),
        }
    }

    /// Short label for reports and snapshot names.
    pub fn label(&self) -> String {
        match self {
            Self::Gguf(p) => super::gguf::label_of(p),
            Self::GgufAdapter { gguf, adapter } => {
                let base = super::gguf::label_of(gguf);
                let base = base.strip_suffix("-q8_0").unwrap_or(&base);
                format!("{base}-f32+{}", dir_name(adapter))
            }
            Self::Replay(p) => ReplayModel::label_of(p),
            Self::OpenAi(s) => s.rsplit_once('#').map_or("openai", |(_, m)| m).to_owned(),
            Self::Checkpoint { dir, adapter } => match adapter {
                Some(a) => format!("qwen3-vl-{}+{}", dir_name(dir), dir_name(a)),
                None => format!("qwen3-vl-{}", dir_name(dir)),
            },
        }
    }

    /// Loads the backend.
    pub fn load(&self) -> Result<Box<dyn Model>, ModelError> {
        Ok(match self {
            Self::Gguf(p) => Box::new(GgufModel::load(p)?),
            Self::GgufAdapter { gguf, adapter } => {
                Box::new(AdaptedGguf::load_described(gguf, adapter)?)
            }
            Self::Replay(p) => Box::new(ReplayModel::load(p)?),
            Self::OpenAi(s) => Box::new(super::openai::OpenAiModel::from_spec(s)?),
            Self::Checkpoint { dir, adapter } => Box::new(Qwen3VlModel::load(
                dir,
                adapter.as_deref(),
                &default_device(),
            )?),
        })
    }
}

/// Bumped when the adapted-GGUF inference path changes its answers (invalidates cached answers).
const ADAPTED_GGUF_VERSION: &str = "adapted-gguf-f32-v1";

/// `+<config hash>+<weights hash>` of a PEFT adapter folder; a missing file is an error naming it.
fn adapter_fingerprint(dir: &Path) -> Result<String, ModelError> {
    let mut fp = String::new();
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(ModelError::Missing {
                path,
                hint: " (PEFT adapter)".into(),
            });
        }
        fp.push('+');
        fp.push_str(&file_fingerprint(&path)?);
    }
    Ok(fp)
}

fn dir_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// CUDA device 0 when built with `cuda` and one is present, else the CPU.
pub fn default_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = super::cuda_device::open(0) {
        return d;
    }
    candle_core::Device::Cpu
}
