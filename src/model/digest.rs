//! Content digests of weight files: the sha256 of every byte, streamed, so a re-export that
//! differs anywhere gets its own answers. A file's digest is paid once per version: memoised in
//! the process and on disk (`<cache root>/digests/`), keyed by the file's path, size,
//! modification time, device and inode.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use super::ModelError;
use crate::case::hex;
use crate::model::corrupt;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct Version {
    path: PathBuf,
    len: u64,
    modified_ns: u128,
    dev: u64,
    inode: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Memo {
    version: Version,
    sha256: String,
}

fn version(path: &Path) -> Result<Version, ModelError> {
    let canonical = path.canonicalize().map_err(|e| corrupt(path, e))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| corrupt(path, e))?;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let (dev, inode) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let (dev, inode) = (0, 0);
    Ok(Version {
        path: canonical,
        len: meta.len(),
        modified_ns,
        dev,
        inode,
    })
}

/// The sha256 of all of `path`'s bytes, read in 1 MiB blocks.
fn stream_sha256(path: &Path) -> Result<String, ModelError> {
    let mut f = std::fs::File::open(path).map_err(|e| corrupt(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| corrupt(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn memo_file(dir: &Path, v: &Version) -> PathBuf {
    let key = serde_json::to_vec(v).unwrap_or_default();
    dir.join(format!("{}.json", &hex(&Sha256::digest(&key))[..32]))
}

/// The sha256 of every byte of `path`, from the memo when this version of the file was hashed
/// before (in this process or, through `memo_dir`, in an earlier one).
pub fn file_digest_in(path: &Path, memo_dir: Option<&Path>) -> Result<String, ModelError> {
    static SEEN: OnceLock<Mutex<HashMap<Version, String>>> = OnceLock::new();
    let v = version(path)?;
    let seen = SEEN.get_or_init(Default::default);
    if let Some(d) = seen.lock().ok().and_then(|m| m.get(&v).cloned()) {
        return Ok(d);
    }
    let stored = memo_dir.map(|dir| memo_file(dir, &v));
    let remembered = stored
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<Memo>(&b).ok())
        .filter(|m| m.version == v)
        .map(|m| m.sha256);
    let digest = match remembered {
        Some(d) => d,
        None => {
            let d = stream_sha256(path)?;
            if let Some(p) = &stored {
                // A memo that cannot be written costs a re-hash next time, nothing else.
                let _ = write_memo(p, &v, &d);
            }
            d
        }
    };
    if let Ok(mut m) = seen.lock() {
        m.insert(v, digest.clone());
    }
    Ok(digest)
}

fn write_memo(path: &Path, v: &Version, sha256: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let memo = Memo {
        version: v.clone(),
        sha256: sha256.to_owned(),
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec(&memo).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// [`file_digest_in`] with the memo under vlmtest's cache root.
pub fn file_digest(path: &Path) -> Result<String, ModelError> {
    let dir = crate::config::env::cache_root().join("digests");
    file_digest_in(path, Some(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Before, a fingerprint sampled the first and last MiB and eight spread blocks: a file that
    /// differed only between the samples reused another model's answers.
    #[test]
    fn a_difference_anywhere_changes_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let len = 20 << 20;
        let a: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut b = a.clone();
        b[(3 << 20) + (1 << 19)] ^= 1; // 3.5 MiB: between the old samples at 2.2 and 4.4 MiB
        let (pa, pb) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
        std::fs::write(&pa, &a).unwrap();
        std::fs::write(&pb, &b).unwrap();
        let memo = dir.path().join("memo");
        let da = file_digest_in(&pa, Some(&memo)).unwrap();
        let db = file_digest_in(&pb, Some(&memo)).unwrap();
        assert_ne!(da, db);
        assert_eq!(da, hex(&Sha256::digest(&a)), "the sha256 of all the bytes");
        // Remembered on disk: one memo per file version.
        assert_eq!(std::fs::read_dir(&memo).unwrap().count(), 2);
        assert_eq!(file_digest_in(&pa, Some(&memo)).unwrap(), da);
    }

    #[test]
    fn a_rewritten_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        std::fs::write(&p, b"first version").unwrap();
        let first = file_digest_in(&p, None).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, b"other version").unwrap();
        let second = file_digest_in(&p, None).unwrap();
        assert_ne!(first, second, "same size, new mtime: a new version");
        assert_eq!(second, hex(&Sha256::digest(b"other version")));
    }
}
