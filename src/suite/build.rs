//! Pieces shared by the probe and row loaders: name checks, images, the system prompt.

use std::collections::BTreeMap;
use std::path::Path;

use super::{paths, SuiteError};
use crate::case::{Message, Part, Role};
use crate::config::{MissingImage, SuiteConfig};

/// The note a text-only prompt carries when its image could not be had (seed 001's fallback).
pub const IMAGE_UNAVAILABLE: &str = "(Image unavailable: answer from the text alone.)";

/// Test-name parts may hold letters, digits, `_`, `-` and `.`; `::` separates them.
pub fn check_name_part(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "`{s}` contains `{c}`; use letters, digits, `_`, `-` and `.`"
        ));
    }
    Ok(())
}

/// Reads a suite file; a read failure names the file.
pub fn read_file(file: &Path) -> Result<String, SuiteError> {
    let bytes = read_bytes(file)?;
    String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        SuiteError::new(
            file,
            Some(line),
            None,
            format!("not UTF-8 text ({})", e.utf8_error()),
        )
    })
}

/// A suite file's bytes, without a leading UTF-8 byte-order mark.
pub fn read_bytes(file: &Path) -> Result<Vec<u8>, SuiteError> {
    let mut bytes = std::fs::read(file)
        .map_err(|e| SuiteError::new(file, None, None, format!("cannot read: {e}")))?;
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    Ok(bytes)
}

/// The share of `len` items that `min` asks for (1.0 when all are needed).
pub fn share(min: Option<usize>, len: usize) -> f64 {
    match min {
        Some(m) if len > 0 => (m.min(len) as f64) / len as f64,
        _ => 1.0,
    }
}

/// Puts the images in front of the text of the last user turn (Qwen-VL's content order). A
/// missing file fails the case, or — where the suite says `missing_image = "text_only"` — is
/// dropped with an explicit note in the prompt. Records `image` = present / missing / none.
#[expect(
    clippy::too_many_arguments,
    reason = "the location of the error is four of them"
)]
pub fn attach_images(
    messages: &mut [Message],
    names: &[String],
    file: &Path,
    line: Option<usize>,
    field: &str,
    root: &Path,
    missing: MissingImage,
    metadata: &mut BTreeMap<String, serde_json::Value>,
) -> Result<(), SuiteError> {
    if names.is_empty() {
        metadata
            .entry("image".into())
            .or_insert_with(|| "none".into());
        return Ok(());
    }
    let mut parts = Vec::new();
    let mut any_missing = false;
    for name in names {
        match paths::resolve_image(name, file, line, field, root) {
            Ok(image) => parts.push(Part::Image { image }),
            Err(e) if missing == MissingImage::TextOnly && e.message.contains("not found") => {
                any_missing = true
            }
            Err(e) => return Err(e),
        }
    }
    let Some(user) = messages.iter_mut().rev().find(|m| m.role == Role::User) else {
        return Err(SuiteError::new(
            file,
            line,
            Some(field),
            "images need a user turn to attach to",
        ));
    };
    if any_missing {
        user.parts.push(Part::Text {
            text: IMAGE_UNAVAILABLE.into(),
        });
    }
    parts.append(&mut user.parts);
    user.parts = parts;
    let state = if any_missing { "missing" } else { "present" };
    metadata.insert("image".into(), state.into());
    Ok(())
}

/// Prepends the suite's system prompt unless the conversation has its own.
pub fn prepend_system(messages: &mut Vec<Message>, cfg: &SuiteConfig) {
    if let Some(system) = &cfg.system {
        if messages.first().is_none_or(|m| m.role != Role::System) {
            messages.insert(0, Message::text(Role::System, system.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn name_parts() {
        assert!(check_name_part("torque_001").is_ok());
        assert!(check_name_part("a::b").is_err());
        assert!(check_name_part("").is_err());
        assert!(check_name_part("has space").is_err());
    }

    proptest! {
        #[test]
        fn accepted_names_never_contain_separators(s in "\\PC{0,12}") {
            if check_name_part(&s).is_ok() {
                prop_assert!(!s.contains("::") && !s.contains(' ') && !s.is_empty());
            }
        }
    }
}
