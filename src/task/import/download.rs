//! On-demand image downloads for the spam importer (seed 001): a cache named by the SHA-1 of the
//! URL with its extension kept (`.jpg` when the URL has none), parallel workers, retries with
//! exponential backoff on transient failures, a content-type check and a size limit. A failure is
//! an outcome, not an error: the row then becomes a text-only case.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::case::hex;

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub cache_dir: PathBuf,
    pub workers: usize,
    /// Attempts after the first, for transient failures (network errors, 5xx, 429).
    pub retries: u32,
    /// Wait before retry `k` (0-based) is `backoff · 2^k`.
    pub backoff: Duration,
    pub max_bytes: u64,
    pub timeout: Duration,
    /// Use only what is already cached.
    pub offline: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("cache/images"),
            workers: 8,
            retries: 3,
            backoff: Duration::from_millis(500),
            max_bytes: 10 * 1024 * 1024,
            timeout: Duration::from_secs(20),
            offline: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Cached(PathBuf),
    Downloaded(PathBuf),
    Failed(String),
}

impl Outcome {
    pub fn path(&self) -> Option<&Path> {
        match self {
            Outcome::Cached(p) | Outcome::Downloaded(p) => Some(p),
            Outcome::Failed(_) => None,
        }
    }
}

const EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "gif", "webp", "bmp", "tiff"];

/// The image extension of a URL's path (query and fragment ignored), lowercased.
pub fn extension(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let last = path.rsplit('/').next()?;
    let (_, ext) = last.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    EXTENSIONS.contains(&ext.as_str()).then_some(ext)
}

/// `<cache>/<sha1(url)>.<ext>`.
pub fn cache_path(cache_dir: &Path, url: &str) -> PathBuf {
    let name = hex(&Sha1::digest(url.as_bytes()));
    let ext = extension(url).unwrap_or_else(|| "jpg".into());
    cache_dir.join(format!("{name}.{ext}"))
}

enum Attempt {
    Done(Vec<u8>),
    Transient(String),
    Permanent(String),
}

fn attempt(agent: &ureq::Agent, url: &str, max_bytes: u64) -> Attempt {
    let mut resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(code)) if code == 429 || code >= 500 => {
            return Attempt::Transient(format!("http status {code}"))
        }
        Err(ureq::Error::StatusCode(code)) => {
            return Attempt::Permanent(format!("http status {code}"))
        }
        Err(ureq::Error::BadUri(e)) => return Attempt::Permanent(format!("bad url: {e}")),
        Err(e) => return Attempt::Transient(e.to_string()),
    };
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ctype.starts_with("image/") {
        return Attempt::Permanent(format!("content-type `{ctype}` is not an image"));
    }
    match resp.body_mut().with_config().limit(max_bytes).read_to_vec() {
        Ok(b) => Attempt::Done(b),
        Err(ureq::Error::BodyExceedsLimit(n)) => {
            Attempt::Permanent(format!("image larger than the {n}-byte limit"))
        }
        Err(e) => Attempt::Transient(e.to_string()),
    }
}

fn agent(o: &DownloadOptions) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(o.timeout))
        .build()
        .into()
}

/// Fetches one URL into the cache, reusing a cached copy.
pub fn fetch(url: &str, o: &DownloadOptions) -> Outcome {
    fetch_with(&agent(o), url, o)
}

fn fetch_with(agent: &ureq::Agent, url: &str, o: &DownloadOptions) -> Outcome {
    if url.trim().is_empty() {
        return Outcome::Failed("no image url".into());
    }
    let path = cache_path(&o.cache_dir, url);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        return Outcome::Cached(path);
    }
    if o.offline {
        return Outcome::Failed("not cached (offline)".into());
    }
    let mut last = String::new();
    for k in 0..=o.retries {
        if k > 0 {
            std::thread::sleep(o.backoff * 2u32.saturating_pow(k - 1));
        }
        match attempt(agent, url, o.max_bytes) {
            Attempt::Done(bytes) => return store(&path, &bytes),
            Attempt::Permanent(e) => return Outcome::Failed(e),
            Attempt::Transient(e) => last = e,
        }
    }
    Outcome::Failed(format!("{last} (after {} attempts)", o.retries + 1))
}

/// Writes through a temporary file so a killed run never leaves a truncated image in the cache.
fn store(path: &Path, bytes: &[u8]) -> Outcome {
    let tmp = path.with_extension("part");
    let res = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
        .and_then(|_| std::fs::write(&tmp, bytes))
        .and_then(|_| std::fs::rename(&tmp, path));
    match res {
        Ok(()) => Outcome::Downloaded(path.to_owned()),
        Err(e) => Outcome::Failed(format!("cannot write {}: {e}", path.display())),
    }
}

/// Fetches every URL with `o.workers` threads; outcomes are in input order.
pub fn fetch_all(urls: &[String], o: &DownloadOptions) -> Vec<Outcome> {
    let agent = agent(o);
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; urls.len()]);
    std::thread::scope(|s| {
        for _ in 0..o.workers.max(1).min(urls.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(url) = urls.get(i) else { break };
                let r = fetch_with(&agent, url, o);
                if let Ok(mut g) = out.lock() {
                    g[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Outcome::Failed("worker did not finish".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        assert_eq!(extension("https://x.com/a/b.JPG?w=200"), Some("jpg".into()));
        assert_eq!(extension("https://x.com/a/b"), None);
        assert_eq!(extension("https://x.com/a.php"), None);
        let p = cache_path(Path::new("c"), "https://x.com/a.png");
        assert!(p.to_string_lossy().ends_with(".png"));
        assert_eq!(p.file_stem().unwrap().len(), 40);
    }

    proptest! {
        #[test]
        fn cache_name_is_stable_and_flat(url in "\\PC{0,60}") {
            let a = cache_path(Path::new("c"), &url);
            prop_assert_eq!(&a, &cache_path(Path::new("c"), &url));
            prop_assert_eq!(a.parent(), Some(Path::new("c")));
        }
    }
}
