//! The on-disk judge cache: one JSON line per exchange, keyed by the hash of (endpoint model,
//! full request body).
//!
//! The file is append-only JSONL, so a killed run loses at most its last line, several processes
//! (nextest) can append to it, and a committed copy replays in CI. A request body never holds the
//! API key (that travels in a header), so the file is safe to commit.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::JudgeError;
use crate::case::hex;

/// One stored exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub model: String,
    pub request: Value,
    pub response: Value,
}

/// The cache key of a request: sha256 of the model name, a NUL, and the request body's JSON.
/// `serde_json::Value` keeps object keys sorted, so equal requests serialise equally.
pub fn key(model: &str, body: &Value) -> String {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0]);
    h.update(body.to_string().as_bytes());
    hex(&h.finalize())
}

/// The loaded cache plus its append handle.
pub struct Cache {
    path: PathBuf,
    entries: Mutex<HashMap<String, Value>>,
    file: Mutex<Option<File>>,
    /// Lines that could not be read (a torn last line after a kill), reported in the stats.
    pub skipped_lines: usize,
}

impl Cache {
    /// Opens (creating if needed) the cache at `path`. `writable = false` never creates or
    /// appends (replay mode, or a read-only checkout).
    pub fn open(path: &Path, writable: bool) -> Result<Self, JudgeError> {
        let err = |reason: String| JudgeError::Cache {
            path: path.to_owned(),
            reason,
        };
        let mut entries = HashMap::new();
        let mut skipped_lines = 0;
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(|e| err(e.to_string()))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Entry>(&line) {
                        Ok(e) => {
                            entries.insert(e.key, e.response);
                        }
                        Err(_) => skipped_lines += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e.to_string())),
        }
        let file = if writable {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| err(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Self {
            path: path.to_owned(),
            entries: Mutex::new(entries),
            file: Mutex::new(file),
            skipped_lines,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    /// Stores an exchange in memory and appends it to the file in one `write` (appends of one
    /// line from concurrent processes do not interleave on a local file system).
    pub fn put(&self, entry: Entry) -> Result<(), JudgeError> {
        let mut line = serde_json::to_string(&entry).map_err(|e| JudgeError::Cache {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        line.push('\n');
        if let Ok(mut file) = self.file.lock() {
            if let Some(f) = file.as_mut() {
                f.write_all(line.as_bytes())
                    .map_err(|e| JudgeError::Cache {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
            }
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(entry.key, entry.response);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_tolerates_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/judge.jsonl");
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let k = key("m", &body);
        {
            let c = Cache::open(&path, true).unwrap();
            assert!(c.is_empty());
            c.put(Entry {
                key: k.clone(),
                model: "m".into(),
                request: body.clone(),
                response: json!({"choices": []}),
            })
            .unwrap();
            assert_eq!(c.get(&k), Some(json!({"choices": []})));
        }
        // A killed writer leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"key\": \"abc\", \"mod").unwrap();
        let c = Cache::open(&path, false).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c.skipped_lines, 1);
        assert_eq!(c.get(&k), Some(json!({"choices": []})));
    }

    #[test]
    fn read_only_open_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.jsonl");
        let c = Cache::open(&path, false).unwrap();
        c.put(Entry {
            key: "k".into(),
            model: "m".into(),
            request: json!({}),
            response: json!(1),
        })
        .unwrap();
        assert!(!path.exists());
        assert_eq!(c.get("k"), Some(json!(1)));
    }

    proptest::proptest! {
        #[test]
        fn key_depends_on_model_and_every_byte_of_the_body(a in ".{0,20}", b in ".{0,20}") {
            let ba = json!({"messages": [a.clone()]});
            let bb = json!({"messages": [b.clone()]});
            proptest::prop_assert_eq!(key("m", &ba) == key("m", &bb), a == b);
            proptest::prop_assert_ne!(key("m", &ba), key("n", &ba));
        }
    }
}
