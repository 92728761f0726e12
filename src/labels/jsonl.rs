//! The JSONL reader of the labels commands: one JSON value per `\n`-terminated line, blank lines
//! skipped, a bad line reported with its number, and a *torn* tail — bytes after the last `\n`,
//! what a process killed mid-write leaves — told apart from a bad line, so `annotate --resume` can
//! cut it off and redo that image. A tail that happens to parse is still torn: our writer ends
//! every line with `\n`, so a line without one was never finished.
//!
//! Ground-truth files may also be one JSON list (the seed's `ground_truth_human.json`):
//! [`read_records`] takes either.

use std::path::Path;

use serde_json::Value;

use super::LabelsError;

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number (the item number for a JSON list).
    pub line: usize,
    pub value: Value,
}

/// An unfinished last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Torn {
    /// Its line number.
    pub line: usize,
    /// The byte offset where it starts: the file's length once it is cut off.
    pub offset: u64,
    /// Its length in bytes.
    pub len: usize,
}

/// A parsed JSONL text.
#[derive(Debug, Default)]
pub struct Parsed {
    pub lines: Vec<Line>,
    /// Complete lines that are not JSON, with line number and reason.
    pub bad: Vec<(usize, String)>,
    pub torn: Option<Torn>,
}

/// Parses JSONL bytes.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let mut start = 0usize;
    let mut number = 0usize;
    while start < bytes.len() {
        number += 1;
        let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') else {
            out.torn = Some(Torn {
                line: number,
                offset: start as u64,
                len: bytes.len() - start,
            });
            break;
        };
        let raw = &bytes[start..start + nl];
        start += nl + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(raw) {
            Ok(value) => out.lines.push(Line {
                line: number,
                value,
            }),
            Err(e) => out.bad.push((number, e.to_string())),
        }
    }
    out
}

/// Reads a ground-truth style file: a JSON list, or JSONL (a torn last line counts as bad there:
/// nothing resumes a ground-truth file).
pub fn read_records(path: &Path) -> Result<Parsed, LabelsError> {
    let bytes = std::fs::read(path).map_err(|e| LabelsError::read(path, e))?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| LabelsError::file(path, format!("not a JSON list: {e}")))?;
        let items = match v {
            Value::Array(items) => items,
            _ => return Err(LabelsError::file(path, "not a JSON list")),
        };
        return Ok(Parsed {
            lines: items
                .into_iter()
                .enumerate()
                .map(|(i, value)| Line { line: i + 1, value })
                .collect(),
            ..Parsed::default()
        });
    }
    let mut p = parse(&bytes);
    // A hand-written file may lack the final newline: take the tail when it parses.
    if let Some(t) = p.torn.take() {
        let tail = &bytes[t.offset as usize..];
        match serde_json::from_slice::<Value>(tail) {
            Ok(value) => p.lines.push(Line {
                line: t.line,
                value,
            }),
            Err(e) if tail.iter().all(u8::is_ascii_whitespace) => drop(e),
            Err(e) => p
                .bad
                .push((t.line, format!("{e} (an unfinished last line?)"))),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn lines_bad_lines_and_torn_tails() {
        let p = parse(b"{\"a\":1}\n\n  \nnot json\n{\"b\":2}\r\n{\"c\":");
        assert_eq!(p.lines.len(), 2);
        assert_eq!(
            p.lines[1],
            Line {
                line: 5,
                value: json!({"b": 2})
            }
        );
        assert_eq!(p.bad.len(), 1);
        assert_eq!(p.bad[0].0, 4);
        assert_eq!(
            p.torn,
            Some(Torn {
                line: 6,
                offset: 30,
                len: 5
            })
        );
        // A complete object without its newline is still torn.
        assert!(parse(b"{\"a\":1}").torn.is_some());
        assert!(parse(b"").torn.is_none());
    }

    #[test]
    fn ground_truth_files_are_lists_or_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("a.json");
        std::fs::write(&list, "[{\"image_id\": \"x\"}, {\"image_id\": \"y\"}]").unwrap();
        assert_eq!(read_records(&list).unwrap().lines.len(), 2);
        let jl = dir.path().join("b.jsonl");
        std::fs::write(&jl, "{\"image_id\": \"x\"}\n{\"image_id\": \"y\"}").unwrap();
        let p = read_records(&jl).unwrap();
        assert_eq!((p.lines.len(), p.torn), (2, None));
        std::fs::write(&jl, "{\"image_id\": \"x\"}\n{\"image_").unwrap();
        let p = read_records(&jl).unwrap();
        assert_eq!((p.lines.len(), p.bad.len()), (1, 1));
    }

    fn record() -> impl Strategy<Value = Value> {
        ("[a-f0-9]{1,32}", any::<bool>(), "\\PC{0,20}")
            .prop_map(|(id, b, s)| json!({"image_id": id, "ok": b, "s": s}))
    }

    proptest! {
        /// Cutting a file of whole lines at any byte leaves every line before the cut, and
        /// nothing else: the rest is one torn tail (or nothing, at a line boundary).
        #[test]
        fn a_cut_anywhere_keeps_every_whole_line(recs in prop::collection::vec(record(), 0..12), cut in any::<prop::sample::Index>()) {
            let mut text = Vec::new();
            let mut ends = Vec::new();
            for r in &recs {
                text.extend_from_slice(r.to_string().as_bytes());
                text.push(b'\n');
                ends.push(text.len());
            }
            let at = if text.is_empty() { 0 } else { cut.index(text.len() + 1) };
            let p = parse(&text[..at]);
            let whole = ends.iter().filter(|&&e| e <= at).count();
            prop_assert!(p.bad.is_empty());
            prop_assert_eq!(p.lines.len(), whole);
            for (l, r) in p.lines.iter().zip(&recs) {
                prop_assert_eq!(&l.value, r);
            }
            match p.torn {
                None => prop_assert!(at == 0 || ends.contains(&at)),
                Some(t) => {
                    let start = if whole == 0 { 0 } else { ends[whole - 1] };
                    prop_assert_eq!(t.offset as usize, start);
                    prop_assert_eq!(t.offset as usize + t.len, at);
                    prop_assert_eq!(t.line, whole + 1);
                }
            }
        }

        /// Arbitrary bytes never panic, and every line is accounted for exactly once.
        #[test]
        fn any_bytes_are_lines_bad_lines_or_a_tail(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let p = parse(&bytes);
            let complete = bytes.iter().filter(|&&b| b == b'\n').count();
            prop_assert!(p.lines.len() + p.bad.len() <= complete);
            prop_assert_eq!(p.torn.is_some(), !bytes.is_empty() && bytes.last() != Some(&b'\n'));
            let mut numbers: Vec<usize> = p.lines.iter().map(|l| l.line).chain(p.bad.iter().map(|b| b.0)).collect();
            numbers.sort_unstable();
            numbers.dedup();
            prop_assert_eq!(numbers.len(), p.lines.len() + p.bad.len());
        }
    }
}
