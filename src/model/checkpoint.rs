//! Hugging Face checkpoint folders: finding and checking the files a model needs.
//!
//! A checkpoint is a folder with `config.json`, the weights (`model.safetensors`, or shards named
//! by `model.safetensors.index.json`), `tokenizer.json`, optionally `tokenizer_config.json` and
//! `generation_config.json`, and for vision models `preprocessor_config.json`. Every missing or
//! unreadable file is reported by path, with what to do about it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::ModelError;

/// The files of one checkpoint folder.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
    pub tokenizer: PathBuf,
    pub tokenizer_config: Option<PathBuf>,
    pub generation_config: Option<PathBuf>,
    pub preprocessor: Option<PathBuf>,
}

fn missing(path: PathBuf, hint: &str) -> ModelError {
    ModelError::Missing {
        path,
        hint: format!(" ({hint})"),
    }
}

fn optional(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    p.is_file().then_some(p)
}

impl CheckpointFiles {
    /// Locates the files of the checkpoint in `dir`.
    pub fn locate(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(missing(
                dir.to_owned(),
                "expected a checkpoint folder in Hugging Face layout",
            ));
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(missing(
                config,
                "every checkpoint folder needs its config.json",
            ));
        }
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(missing(
                tokenizer,
                "copy tokenizer.json from the base model",
            ));
        }
        let weights = weight_files(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            weights,
            tokenizer,
            tokenizer_config: optional(dir, "tokenizer_config.json"),
            generation_config: optional(dir, "generation_config.json"),
            preprocessor: optional(dir, "preprocessor_config.json"),
        })
    }

    /// Reads `config.json` as text.
    pub fn read_config(&self) -> Result<String, ModelError> {
        std::fs::read_to_string(&self.config).map_err(|e| ModelError::Corrupt {
            path: self.config.clone(),
            reason: e.to_string(),
        })
    }

    /// A hash of what decides the answers: config, tokenizer, generation and preprocessor
    /// settings in full, and every byte of each weight file (its digest is memoised per file
    /// version, so the gigabytes are read once).
    pub fn fingerprint(&self) -> Result<String, ModelError> {
        let mut h = Sha256::new();
        // The chat template's files too: a new template changes every prompt.
        let template_files =
            ["chat_template.jinja", "chat_template.json"].map(|n| optional(&self.dir, n));
        let small = [
            Some(&self.config),
            Some(&self.tokenizer),
            self.tokenizer_config.as_ref(),
            self.generation_config.as_ref(),
            self.preprocessor.as_ref(),
        ];
        for p in small
            .into_iter()
            .chain(template_files.iter().map(Option::as_ref))
            .flatten()
        {
            let bytes = std::fs::read(p).map_err(|e| ModelError::Corrupt {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            h.update(
                p.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            h.update(&bytes);
        }
        for w in &self.weights {
            sample_file(w, &mut h)?;
        }
        Ok(format!("{:x}", h.finalize())[..16].to_owned())
    }
}

/// Hashes a file's name and the sha256 of all its bytes (memoised per file version) into `h`.
pub fn sample_file(path: &Path, h: &mut Sha256) -> Result<(), ModelError> {
    h.update(
        path.file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default(),
    );
    h.update(super::digest::file_digest(path)?.as_bytes());
    Ok(())
}

/// The weight files: the shards named by the index, or the single `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::Corrupt {
            path: index.clone(),
            reason: e.to_string(),
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Corrupt {
                path: index.clone(),
                reason: e.to_string(),
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Corrupt {
                path: index.clone(),
                reason: "no `weight_map` object".into(),
            })?;
        let mut shards = BTreeSet::new();
        for (tensor, file) in map {
            let name = file.as_str().ok_or_else(|| ModelError::Corrupt {
                path: index.clone(),
                reason: format!("weight_map entry `{tensor}` is not a file name"),
            })?;
            if name.contains('/') || name.contains("..") {
                return Err(ModelError::Corrupt {
                    path: index.clone(),
                    reason: format!(
                        "weight_map entry `{tensor}` names `{name}` outside the folder"
                    ),
                });
            }
            shards.insert(name.to_owned());
        }
        let paths: Vec<PathBuf> = shards.into_iter().map(|s| dir.join(s)).collect();
        if let Some(p) = paths.iter().find(|p| !p.is_file()) {
            return Err(missing(
                p.clone(),
                "a shard named in model.safetensors.index.json",
            ));
        }
        if paths.is_empty() {
            return Err(ModelError::Corrupt {
                path: index,
                reason: "weight_map is empty".into(),
            });
        }
        return Ok(paths);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(missing(
        single,
        "no model.safetensors or model.safetensors.index.json in the folder",
    ))
}

/// Checks that every weight file parses as safetensors, naming the first that does not.
pub fn check_safetensors(paths: &[PathBuf]) -> Result<(), ModelError> {
    for p in paths {
        // SAFETY: the file is only read; a concurrent writer could change it, as for any mmap.
        unsafe { candle_core::safetensors::MmapedSafetensors::new(p) }.map_err(|e| {
            ModelError::Corrupt {
                path: p.clone(),
                reason: format!("not a valid safetensors file: {e}"),
            }
        })?;
    }
    Ok(())
}

/// Turns a `--model` value into a local folder: an existing path as is; otherwise a hub id
/// (`owner/name`) is looked up in the Hugging Face cache (`$HF_HOME/hub` or
/// `~/.cache/huggingface/hub`) and, with the `hub` feature, downloaded there.
pub fn resolve(spec: &str) -> Result<PathBuf, ModelError> {
    let path = PathBuf::from(spec);
    if path.exists() {
        return Ok(path);
    }
    let looks_like_id =
        spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/');
    if !looks_like_id {
        return Err(missing(
            path,
            "not a folder, and not a hub id of the form owner/name",
        ));
    }
    if let Some(dir) = cached_snapshot(spec) {
        return Ok(dir);
    }
    download(spec)
}

fn hub_cache() -> Option<PathBuf> {
    crate::config::env::hf_hub_cache()
}

/// The snapshot folder of `repo` in the HF cache, if one with a config.json is there.
pub fn cached_snapshot(repo: &str) -> Option<PathBuf> {
    let base = hub_cache()?.join(format!("models--{}", repo.replace('/', "--")));
    let rev = std::fs::read_to_string(base.join("refs/main")).ok()?;
    let dir = base.join("snapshots").join(rev.trim());
    dir.join("config.json").is_file().then_some(dir)
}

#[cfg(not(feature = "hub"))]
fn download(repo: &str) -> Result<PathBuf, ModelError> {
    Err(ModelError::Fetch(format!(
        "`{repo}` is not a local folder and is not in the Hugging Face cache ({}); this build has \
         no hub download (build with `--features hub`), so download it with \
         `huggingface-cli download {repo}` or pass a folder",
        hub_cache()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "unknown".into())
    )))
}

#[cfg(feature = "hub")]
fn download(repo: &str) -> Result<PathBuf, ModelError> {
    let api =
        hf_hub::api::sync::Api::new().map_err(|e| ModelError::Fetch(format!("hub client: {e}")))?;
    let r = api.model(repo.to_owned());
    let fetch = |name: &str| {
        r.get(name).map_err(|e| {
            ModelError::Fetch(format!(
                "could not download {name} of `{repo}` (offline, or no such repo?): {e}"
            ))
        })
    };
    let config = fetch("config.json")?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "generation_config.json",
    ] {
        if name == "tokenizer.json" {
            fetch(name)?;
        } else {
            let _ = fetch(name);
        }
    }
    match fetch("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::Corrupt {
                path: index.clone(),
                reason: e.to_string(),
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Corrupt {
                    path: index.clone(),
                    reason: e.to_string(),
                })?;
            let shards: BTreeSet<String> = json["weight_map"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            for s in shards {
                fetch(&s)?;
            }
        }
        Err(_) => {
            fetch("model.safetensors")?;
        }
    }
    config
        .parent()
        .map(Path::to_owned)
        .ok_or_else(|| ModelError::Fetch(format!("odd cache path {}", config.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pieces_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = CheckpointFiles::locate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = CheckpointFiles::locate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        let err = CheckpointFiles::locate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn sharded_index_lists_shards_and_catches_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json", "a.safetensors"] {
            std::fs::write(dir.path().join(f), "{}").unwrap();
        }
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}"#,
        )
        .unwrap();
        let err = CheckpointFiles::locate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("b.safetensors"), "{err}");
        std::fs::write(dir.path().join("b.safetensors"), "{}").unwrap();
        let files = CheckpointFiles::locate(dir.path()).unwrap();
        assert_eq!(files.weights.len(), 2);
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"x": "../etc/passwd"}}"#,
        )
        .unwrap();
        assert!(CheckpointFiles::locate(dir.path()).is_err());
    }

    #[test]
    fn unknown_spec_is_a_clear_error() {
        let err = resolve("./no/such/folder").unwrap_err().to_string();
        assert!(err.contains("no/such/folder"), "{err}");
        std::env::set_var("HF_HUB_CACHE", "/nonexistent-hf-cache");
        let err = resolve("nobody/no-such-model").unwrap_err().to_string();
        assert!(err.contains("nobody/no-such-model"), "{err}");
    }
}
