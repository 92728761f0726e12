//! Cross-process exclusive locks on a file, so concurrent test processes (nextest runs each test
//! in its own) do not fetch, convert or generate the same thing twice.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Holds an exclusive lock until dropped.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` (created if missing) is held.
    pub fn acquire(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.lock()?;
        Ok(Self { _file: file })
    }
}
