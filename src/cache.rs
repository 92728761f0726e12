//! The answer cache: one JSON file per (model fingerprint, case prompt, generation options), under
//! `target/vlmtest/answers/`. Every process (each nextest test, each `cargo test`) reads it first,
//! so a model is loaded only for answers nobody has produced yet.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::case::{hex, Case};
use crate::model::{Answer, GenerationOptions};

/// How a run uses the answer cache (`--cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AnswerCacheMode {
    /// Answer from the cache where it can; generate and store the rest.
    #[default]
    Use,
    /// Generate every answer again and overwrite the stored ones.
    Refresh,
    /// Neither read nor write the cache.
    Off,
}

/// A cache directory for one model fingerprint.
#[derive(Debug, Clone)]
pub struct AnswerCache {
    mode: AnswerCacheMode,
    dir: PathBuf,
    fingerprint: String,
    options_key: String,
    /// Key answers by the case's name as well as its prompt: for recorded answers, which belong
    /// to a case, not to a prompt (two cases may ask the same thing and be answered apart).
    by_name: bool,
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
            mode: AnswerCacheMode::Use,
            dir: root.join(&fp[..16]),
            fingerprint: fingerprint.to_owned(),
            options_key: serde_json::to_string(options).unwrap_or_default(),
            by_name: false,
        }
    }

    /// Reads and writes as `mode` says.
    pub fn with_mode(mut self, mode: AnswerCacheMode) -> Self {
        self.mode = mode;
        self
    }

    /// Keys every answer by its case's name too (see the field).
    pub fn keyed_by_case_name(mut self, yes: bool) -> Self {
        self.by_name = yes;
        self
    }

    /// The default location, `<project>/target/vlmtest/answers`; `VLMTEST_ANSWER_CACHE`
    /// (`Config::answer_cache`) replaces it.
    pub fn default_root(project: &Path) -> PathBuf {
        crate::report::output_dir(project).join("answers")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key(&self, case: &Case) -> String {
        let mut h = Sha256::new();
        h.update(case.prompt_hash().as_bytes());
        h.update(self.options_key.as_bytes());
        if self.by_name {
            h.update(case.id.test_name().as_bytes());
        }
        hex(&h.finalize())
    }

    fn path(&self, case: &Case) -> PathBuf {
        self.dir.join(format!("{}.json", &self.key(case)[..32]))
    }

    pub fn get(&self, case: &Case) -> Option<Answer> {
        if self.mode != AnswerCacheMode::Use {
            return None;
        }
        let bytes = std::fs::read(self.path(case)).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        // A hash collision across fingerprints is impossible in practice; check anyway.
        (entry.fingerprint == self.fingerprint).then_some(entry.answer)
    }

    /// Writes atomically (temporary file, then rename), so a killed run never leaves half a file.
    pub fn put(&self, case: &Case, answer: &Answer) -> std::io::Result<()> {
        if self.mode == AnswerCacheMode::Off {
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::case::{CaseId, Message, Origin, Role};

    fn case(id: &str, question: &str) -> Case {
        Case {
            id: CaseId::new("s", "c", id),
            tags: vec![],
            messages: vec![Message::text(Role::User, question)],
            reference: None,
            context: None,
            expect: vec![],
            metadata: BTreeMap::new(),
            ignored: false,
            origin: Origin {
                file: PathBuf::from("x.jsonl"),
                line: Some(1),
            },
        }
    }

    fn answer(text: &str) -> Answer {
        Answer {
            text: text.into(),
            prompt_tokens: 1,
            generated_tokens: 1,
            elapsed: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn the_same_prompt_shares_an_answer_unless_keyed_by_case_name() {
        let dir = tempfile::tempdir().unwrap();
        let opts = GenerationOptions { max_new_tokens: 8 };
        let (a, b) = (case("a", "same question"), case("b", "same question"));
        let shared = AnswerCache::new(dir.path(), "model", &opts);
        shared.put(&a, &answer("one")).unwrap();
        assert_eq!(shared.get(&b).unwrap().text, "one");

        let named = AnswerCache::new(dir.path(), "replay", &opts).keyed_by_case_name(true);
        named.put(&a, &answer("for a")).unwrap();
        assert!(named.get(&b).is_none());
        named.put(&b, &answer("for b")).unwrap();
        assert_eq!(named.get(&a).unwrap().text, "for a");
        assert_eq!(named.get(&b).unwrap().text, "for b");
        // Another fingerprint or other options never see these answers.
        let other = AnswerCache::new(
            dir.path(),
            "model",
            &GenerationOptions { max_new_tokens: 9 },
        );
        assert!(other.get(&a).is_none());
    }

    #[test]
    fn refresh_regenerates_and_overwrites_off_neither_reads_nor_writes() {
        let dir = tempfile::tempdir().unwrap();
        let opts = GenerationOptions { max_new_tokens: 8 };
        let c = case("a", "q");
        let use_ = AnswerCache::new(dir.path(), "m", &opts);
        use_.put(&c, &answer("old")).unwrap();

        let refresh = AnswerCache::new(dir.path(), "m", &opts).with_mode(AnswerCacheMode::Refresh);
        assert!(refresh.get(&c).is_none(), "refresh answers again");
        refresh.put(&c, &answer("new")).unwrap();
        assert_eq!(use_.get(&c).unwrap().text, "new", "and overwrites");

        let off = AnswerCache::new(dir.path(), "m", &opts).with_mode(AnswerCacheMode::Off);
        assert!(off.get(&c).is_none());
        off.put(&c, &answer("never kept")).unwrap();
        assert_eq!(use_.get(&c).unwrap().text, "new");
        let fresh = tempfile::tempdir().unwrap();
        AnswerCache::new(fresh.path(), "m", &opts)
            .with_mode(AnswerCacheMode::Off)
            .put(&c, &answer("x"))
            .unwrap();
        assert_eq!(
            std::fs::read_dir(fresh.path()).unwrap().count(),
            0,
            "off writes nothing"
        );
    }
}
