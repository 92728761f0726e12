//! Resolves paths named in suite files: relative to the naming file's directory, and never outside
//! the project root.

use std::path::{Path, PathBuf};

use super::SuiteError;
use crate::case::ImageSource;

/// Resolves `raw` (a path or a `data:` URI) named at `file:line` in field `field`.
pub fn resolve_image(
    raw: &str,
    file: &Path,
    line: Option<usize>,
    field: &str,
    root: &Path,
) -> Result<ImageSource, SuiteError> {
    if raw.starts_with("data:") {
        if !raw.starts_with("data:image/") || !raw.contains(";base64,") {
            return Err(SuiteError::new(
                file,
                line,
                Some(field),
                "a data URI must be `data:image/<type>;base64,<data>`",
            ));
        }
        return Ok(ImageSource::DataUri(raw.to_owned()));
    }
    resolve_path(raw, file, line, field, root).map(ImageSource::Path)
}

/// Resolves a file path and checks that it exists and stays inside `root`.
pub fn resolve_path(
    raw: &str,
    file: &Path,
    line: Option<usize>,
    field: &str,
    root: &Path,
) -> Result<PathBuf, SuiteError> {
    if raw.trim().is_empty() {
        return Err(SuiteError::new(file, line, Some(field), "empty path"));
    }
    let base = file.parent().unwrap_or(root);
    let joined = base.join(raw);
    let resolved = joined.canonicalize().map_err(|_| {
        SuiteError::new(
            file,
            line,
            Some(field),
            format!("file `{raw}` not found (looked at {})", joined.display()),
        )
    })?;
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    if !resolved.starts_with(&root) {
        return Err(SuiteError::new(
            file,
            line,
            Some(field),
            format!("path `{raw}` leaves the project root {}", root.display()),
        ));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_and_refuses_escapes_and_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("proj");
        std::fs::create_dir_all(root.join("cases/images")).expect("mkdir");
        std::fs::write(root.join("cases/images/a.png"), b"x").expect("write");
        std::fs::write(dir.path().join("secret.png"), b"x").expect("write");
        let file = root.join("cases/s.jsonl");
        assert!(resolve_path("images/a.png", &file, Some(1), "image", &root).is_ok());
        let e =
            resolve_path("../../secret.png", &file, Some(2), "image", &root).expect_err("escape");
        assert!(e.to_string().contains("leaves the project root"), "{e}");
        let e =
            resolve_path("images/none.png", &file, Some(3), "image", &root).expect_err("missing");
        assert!(e.to_string().contains("s.jsonl:3: field `image`"), "{e}");
        assert!(matches!(
            resolve_image("data:image/png;base64,AAAA", &file, None, "image", &root),
            Ok(ImageSource::DataUri(_))
        ));
        assert!(resolve_image("data:text/plain,hi", &file, None, "image", &root).is_err());
    }
}
