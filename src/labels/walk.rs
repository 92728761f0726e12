//! The photo folder walk: every file under the root, recursively, in a stable order (entries of
//! each folder sorted by name, folders depth-first), split into images (by extension,
//! case-insensitive) and skipped files with a reason.
//!
//! Symbolic links are followed only while their target stays inside the root, so a link cannot
//! pull a home directory into the annotation run; a link that leaves the root, dangles, or would
//! revisit a folder (a loop) is skipped and listed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::LabelsError;

/// The default image extensions: what common OpenAI-compatible vision servers decode.
pub const DEFAULT_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// An image file found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// The root joined with `rel_path` (not canonicalised, so it reads as the user typed it).
    pub path: PathBuf,
    /// The path below the root, `/`-separated.
    pub rel_path: String,
}

/// Why a file was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Its extension is not an image extension (`heic`, `txt`, none).
    Unsupported(String),
    /// A link whose target is outside the root.
    LinkOutside(PathBuf),
    /// A link whose target does not exist, or a folder already visited.
    BadLink(String),
    /// A folder that could not be listed.
    Unlistable(String),
    /// Not a regular file (a socket, a device).
    Special,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Unsupported(e) if e.is_empty() => write!(f, "no extension"),
            SkipReason::Unsupported(e) => write!(f, "unsupported extension `.{e}`"),
            SkipReason::LinkOutside(t) => write!(f, "link out of the root to {}", t.display()),
            SkipReason::BadLink(m) => write!(f, "{m}"),
            SkipReason::Unlistable(m) => write!(f, "folder could not be listed: {m}"),
            SkipReason::Special => write!(f, "not a regular file"),
        }
    }
}

/// A skipped file and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub rel_path: String,
    pub reason: SkipReason,
}

/// The walk's result.
#[derive(Debug, Default)]
pub struct Walked {
    pub images: Vec<ImageFile>,
    pub skipped: Vec<Skipped>,
}

impl Walked {
    /// Skipped files counted by reason (`unsupported extension `.heic``: 3), for the summary.
    pub fn skipped_by_reason(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in &self.skipped {
            let key = match &s.reason {
                SkipReason::LinkOutside(_) => "link out of the root".to_owned(),
                other => other.to_string(),
            };
            *m.entry(key).or_insert(0) += 1;
        }
        m
    }
}

/// Walks `root`, taking files whose extension (lowercased) is in `extensions`.
pub fn walk(root: &Path, extensions: &[String]) -> Result<Walked, LabelsError> {
    let canon_root = root
        .canonicalize()
        .map_err(|e| LabelsError::read(root, e))?;
    if !canon_root.is_dir() {
        return Err(LabelsError::file(root, "not a folder"));
    }
    let exts: HashSet<String> = extensions
        .iter()
        .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
        .collect();
    let mut out = Walked::default();
    let mut visited = HashSet::from([canon_root.clone()]);
    visit(
        root,
        &canon_root,
        "",
        &canon_root,
        &exts,
        &mut visited,
        &mut out,
    );
    Ok(out)
}

fn join_rel(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

fn visit(
    root: &Path,
    dir: &Path,
    prefix: &str,
    canon_root: &Path,
    exts: &HashSet<String>,
    visited: &mut HashSet<PathBuf>,
    out: &mut Walked,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            out.skipped.push(Skipped {
                rel_path: prefix.to_owned(),
                reason: SkipReason::Unlistable(e.to_string()),
            });
            return;
        }
    };
    let mut names: Vec<std::ffi::OsString> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let rel = join_rel(prefix, &name.to_string_lossy());
        let path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            out.skipped.push(Skipped {
                rel_path: rel,
                reason: SkipReason::BadLink("vanished during the walk".into()),
            });
            continue;
        };
        let mut target_is_dir = meta.is_dir();
        let mut target_is_file = meta.is_file();
        let mut canon_dir = None;
        if meta.file_type().is_symlink() {
            let Ok(target) = path.canonicalize() else {
                out.skipped.push(Skipped {
                    rel_path: rel,
                    reason: SkipReason::BadLink("dangling link".into()),
                });
                continue;
            };
            if !target.starts_with(canon_root) {
                out.skipped.push(Skipped {
                    rel_path: rel,
                    reason: SkipReason::LinkOutside(target),
                });
                continue;
            }
            target_is_dir = target.is_dir();
            target_is_file = target.is_file();
            canon_dir = Some(target);
        }
        if target_is_dir {
            let canon = match canon_dir {
                Some(c) => c,
                None => path.canonicalize().unwrap_or_else(|_| path.clone()),
            };
            if !visited.insert(canon) {
                out.skipped.push(Skipped {
                    rel_path: rel,
                    reason: SkipReason::BadLink("folder already visited (a link loop)".into()),
                });
                continue;
            }
            visit(root, &path, &rel, canon_root, exts, visited, out);
        } else if target_is_file {
            let ext = Path::new(&name)
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if exts.contains(&ext) {
                out.images.push(ImageFile {
                    path: root.join(&rel),
                    rel_path: rel,
                });
            } else {
                out.skipped.push(Skipped {
                    rel_path: rel,
                    reason: SkipReason::Unsupported(ext),
                });
            }
        } else {
            out.skipped.push(Skipped {
                rel_path: rel,
                reason: SkipReason::Special,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exts() -> Vec<String> {
        DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stable_order_extensions_and_links() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("photos");
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        for f in [
            "b/c/z.JPG",
            "b/y.png",
            "a/x.jpeg",
            "a/w.heic",
            "top.webp",
            "notes.txt",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        std::fs::write(outer.path().join("secret.jpg"), b"s").unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret.jpg"), root.join("out.jpg")).unwrap();
        std::os::unix::fs::symlink(root.join("a/x.jpeg"), root.join("in.jpg")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("b/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("gone.jpg"), root.join("dangling.jpg")).unwrap();
        let w = walk(&root, &exts()).unwrap();
        let rels: Vec<&str> = w.images.iter().map(|i| i.rel_path.as_str()).collect();
        assert_eq!(
            rels,
            ["a/x.jpeg", "b/c/z.JPG", "b/y.png", "in.jpg", "top.webp"]
        );
        assert_eq!(w.images[0].path, root.join("a/x.jpeg"));
        let skipped: Vec<(&str, String)> = w
            .skipped
            .iter()
            .map(|s| (s.rel_path.as_str(), s.reason.to_string()))
            .collect();
        assert_eq!(
            skipped[0],
            ("a/w.heic", "unsupported extension `.heic`".into())
        );
        assert_eq!(
            skipped[1],
            ("b/loop", "folder already visited (a link loop)".into())
        );
        assert_eq!(skipped[2], ("dangling.jpg", "dangling link".into()));
        assert_eq!(
            skipped[3],
            ("notes.txt", "unsupported extension `.txt`".into())
        );
        assert_eq!(skipped[4].0, "out.jpg");
        assert!(
            skipped[4].1.starts_with("link out of the root"),
            "{skipped:?}"
        );
        assert_eq!(skipped.len(), 5);
        assert_eq!(w.skipped_by_reason()["link out of the root"], 1);
    }
}
