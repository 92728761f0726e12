//! The answer cache: one JSON file per (model fingerprint, case prompt, generation options), under
//! `target/vlmtest/answers/`. Every process (each nextest test, each `cargo test`) reads it first,
//! so a model is loaded only for answers nobody has produced yet.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::case::{hex, Case};
use crate::model::{Answer, GenerationOptions};

/// A cache directory for one model fingerprint.
#[derive(Debug, Clone)]
pub struct AnswerCache {
    dir: PathBuf,
    fingerprint: String,
    options_key: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    name: String,
    fingerprint: String,
    answer: Answer,
}

impl AnswerCache {
    pub fn new(root: &Path, fingerprint: &str, options: &GenerationOptions) -> Self {
        let fp = hex(&Sha256::digest(fingerprint.as_bytes()));
        Self {
            dir: root.join(&fp[..16]),
            fingerprint: fingerprint.to_owned(),
            options_key: serde_json::to_string(options).unwrap_or_default(),
        }
    }

    /// The default location: `<project>/target/vlmtest/answers`, or `$VLMTEST_ANSWER_CACHE`.
    pub fn default_root(project: &Path) -> PathBuf {
        std::env::var_os("VLMTEST_ANSWER_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::report::output_dir(project).join("answers"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key(&self, case: &Case) -> String {
        let mut h = Sha256::new();
        h.update(case.prompt_hash().as_bytes());
        h.update(self.options_key.as_bytes());
        hex(&h.finalize())
    }

    fn path(&self, case: &Case) -> PathBuf {
        self.dir.join(format!("{}.json", &self.key(case)[..32]))
    }

    pub fn get(&self, case: &Case) -> Option<Answer> {
        let bytes = std::fs::read(self.path(case)).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        // A hash collision across fingerprints is impossible in practice; check anyway.
        (entry.fingerprint == self.fingerprint).then_some(entry.answer)
    }

    /// Writes atomically (temporary file, then rename), so a killed run never leaves half a file.
    pub fn put(&self, case: &Case, answer: &Answer) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let entry = Entry {
            name: case.id.test_name(),
            fingerprint: self.fingerprint.clone(),
            answer: answer.clone(),
        };
        let path = self.path(case);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(
            &tmp,
            serde_json::to_vec(&entry).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &path)
    }
}
