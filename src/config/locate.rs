//! Where in a TOML file something is: the line of a byte offset, the dotted key at an offset,
//! the line of a dotted key. Errors of the configuration stage point at file, line and key.

use std::ops::Range;
use std::path::Path;

use toml_edit::{ImDocument, Item, TableLike};

use crate::suite::SuiteError;

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Turns a TOML error into a `SuiteError` naming the file and line.
pub fn toml_error(file: &Path, text: &str, err: &toml::de::Error) -> SuiteError {
    let line = err.span().map(|s| line_of(text, s.start));
    SuiteError::new(file, line, None, err.message().to_string())
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

/// A key as a dotted path shows it: quoted when it holds a dot or a blank.
fn display_key(key: &str) -> String {
    if key.contains(['.', ' ', '"']) || key.is_empty() {
        format!("{key:?}")
    } else {
        key.to_owned()
    }
}

fn find_in(table: &dyn TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, item) in table.iter() {
        let Some((k, _)) = table.get_key_value(key) else {
            continue;
        };
        path.push(display_key(key));
        if contains(k.span(), offset) {
            return true;
        }
        let inner: Option<&dyn TableLike> = match item {
            Item::Table(t) => Some(t),
            Item::Value(toml_edit::Value::InlineTable(t)) => Some(t),
            _ => None,
        };
        if let Some(t) = inner {
            if find_in(t, offset, path) {
                return true;
            }
        }
        if contains(item.span(), offset) {
            return true;
        }
        path.pop();
    }
    false
}

/// The dotted key (`suites.spam.gates.pass_rate`) whose key or value holds byte `offset`.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let mut path = Vec::new();
    find_in(doc.as_table(), offset, &mut path).then(|| path.join("."))
}

/// The byte offset of dotted key `path` (its key, or its table's header), if present.
pub fn offset_of(text: &str, path: &[&str]) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut table: &dyn TableLike = doc.as_table();
    let mut found = None;
    for (i, part) in path.iter().enumerate() {
        let (key, item) = table.get_key_value(part)?;
        found = key.span().or_else(|| item.span()).map(|s| s.start);
        if i + 1 < path.len() {
            table = match item {
                Item::Table(t) => t,
                Item::Value(toml_edit::Value::InlineTable(t)) => t,
                _ => return found,
            };
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[model]\nspec = \"x\"\n\n[suites.a.gates]\npass_rate = 0.5\n\"price.smape\" = { maximum = 55.0 }\n";

    #[test]
    fn finds_the_key_at_an_offset() {
        let at = |s: &str| key_at(TEXT, TEXT.find(s).expect("in text"));
        assert_eq!(at("spec").as_deref(), Some("model.spec"));
        assert_eq!(at("\"x\"").as_deref(), Some("model.spec"));
        assert_eq!(at("0.5").as_deref(), Some("suites.a.gates.pass_rate"));
        assert_eq!(
            at("maximum").as_deref(),
            Some("suites.a.gates.\"price.smape\".maximum")
        );
    }

    #[test]
    fn finds_the_line_of_a_key() {
        let line = |p: &[&str]| offset_of(TEXT, p).map(|o| line_of(TEXT, o));
        assert_eq!(line(&["model", "spec"]), Some(2));
        assert_eq!(line(&["suites", "a", "gates", "pass_rate"]), Some(5));
        assert_eq!(line(&["suites", "a", "gates", "nope"]), None);
    }
}
