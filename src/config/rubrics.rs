//! Checks every judge rubric (`judges/*.toml`) as part of the configuration stage, so a misspelt
//! key in a rubric stops the run with its file and line instead of turning every judged case into
//! a judge error later.

use std::path::Path;

use super::error::{ConfigError, TomlError};
use super::locate::{key_at, line_of};
use crate::judge::rubric::Rubric;

/// The rubric folder of a project.
pub const JUDGES_DIR: &str = "judges";

/// Parses and checks every `*.toml` under `<root>/judges` (none when the folder is absent).
pub fn check_all(root: &Path) -> Result<(), ConfigError> {
    let dir = root.join(JUDGES_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ConfigError::Read { path: dir, source }),
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        check(&path, &text)?;
    }
    Ok(())
}

/// Checks one rubric's text: the TOML shape (with line and key), then the rubric's own rules.
pub fn check(path: &Path, text: &str) -> Result<(), ConfigError> {
    if let Err(e) = toml::from_str::<Rubric>(text) {
        let offset = e.span().map(|s| s.start);
        return Err(TomlError {
            file: path.to_path_buf(),
            line: offset.map(|o| line_of(text, o)),
            key: offset.and_then(|o| key_at(text, o)),
            message: e.message().to_owned(),
        }
        .into());
    }
    Rubric::parse(text, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_rubric_key_names_file_line_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join(JUDGES_DIR)).expect("mkdir");
        std::fs::write(
            dir.path().join("judges/tone.toml"),
            "metric = \"rubric\"\ncriteria = \"Is it polite?\"\nfields = [\"answer\"]\n",
        )
        .expect("write");
        check_all(dir.path()).expect("a good rubric passes");
        std::fs::write(
            dir.path().join("judges/typo.toml"),
            "metric = \"rubric\"\ncriteria = \"c\"\nfeilds = [\"answer\"]\n",
        )
        .expect("write");
        let msg = check_all(dir.path()).expect_err("typo").to_string();
        assert!(
            msg.contains("typo.toml:3") && msg.contains("key `feilds`"),
            "{msg}"
        );
    }

    #[test]
    fn no_judges_folder_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        check_all(dir.path()).expect("nothing to check");
    }
}
