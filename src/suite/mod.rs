//! Stage 1 of the flow: loading suites into `Case`s.
//!
//! A suite is named by a file stem: `probes/<suite>.toml` (hand-written probes) and
//! `cases/<suite>.jsonl` (validation rows) both feed suite `<suite>`, configured by
//! `[suites.<suite>]` in `vlmtest.toml`. A suite may instead name an importer `source`.

mod build;
mod error;
pub mod paths;
pub mod probe;
pub mod rows;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use build::IMAGE_UNAVAILABLE;
pub use error::{SuiteError, SuiteErrors};

use crate::case::Case;
use crate::config::Config;

/// One suite: its cases in file order (probes first), and the errors of the entries that failed.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
    pub errors: Vec<SuiteError>,
}

/// Hook for importer-backed suites: `(kind, path, suite) -> (cases, the rows it rejected)`. The
/// task module provides it.
pub type SourceLoader = fn(&str, &Path, &str) -> Result<(Vec<Case>, Vec<SuiteError>), SuiteError>;

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned()
}

/// A suite is named by its file's stem, which becomes the first part of every test name: it may
/// not hold the `::` separator (or anything but letters, digits, `_`, `-`, `.`).
fn check_suite_name(file: &Path, name: &str) -> Result<(), SuiteError> {
    build::check_name_part(name).map_err(|m| {
        SuiteError::new(
            file,
            None,
            None,
            format!("suite name (the file's stem): {m}"),
        )
    })
}

/// Adds one file's cases and errors to its suite; a file that holds nothing is an error of its
/// own (in `list` as in `run`), never a silently empty suite.
fn keep_loaded(
    entry: &mut (Vec<Case>, Vec<SuiteError>),
    file: &Path,
    cases: Vec<Case>,
    errors: Vec<SuiteError>,
) {
    if cases.is_empty() && errors.is_empty() {
        entry
            .1
            .push(SuiteError::new(file, None, None, "the file holds no cases"));
    }
    entry.0.extend(cases);
    entry.1.extend(errors);
}

/// Loads every suite under `root` (sorted by name). Duplicate test names (`suite::category::id`)
/// are errors naming both places. `max_samples` keeps the first N cases of each suite.
pub fn load_all(root: &Path, config: &Config, source_loader: Option<SourceLoader>) -> Vec<Suite> {
    let mut by_suite: BTreeMap<String, (Vec<Case>, Vec<SuiteError>)> = BTreeMap::new();
    for file in files_with_ext(&root.join("probes"), "toml") {
        let name = stem(&file);
        if let Err(e) = check_suite_name(&file, &name) {
            by_suite.entry(name).or_default().1.push(e);
            continue;
        }
        let (cases, errors) = probe::load(&file, &name, &config.suite(&name), root);
        let entry = by_suite.entry(name).or_default();
        keep_loaded(entry, &file, cases, errors);
    }
    for file in files_with_ext(&root.join("cases"), "jsonl") {
        let name = stem(&file);
        if let Err(e) = check_suite_name(&file, &name) {
            by_suite.entry(name).or_default().1.push(e);
            continue;
        }
        let (cases, errors) = rows::load(&file, &name, &config.suite(&name), root);
        let entry = by_suite.entry(name).or_default();
        keep_loaded(entry, &file, cases, errors);
    }
    for (name, cfg) in &config.suites {
        if let Some(source) = &cfg.source {
            let entry = by_suite.entry(name.clone()).or_default();
            let path = root.join(&source.path);
            match source_loader {
                Some(load) => match load(&source.kind, &path, name) {
                    Ok((cases, rejected)) => {
                        entry.0.extend(cases);
                        entry.1.extend(rejected);
                    }
                    Err(e) => entry.1.push(e),
                },
                None => entry.1.push(SuiteError::new(
                    &root.join(crate::config::CONFIG_FILE),
                    None,
                    Some("source"),
                    format!("suite `{name}`: no importer for kind `{}`", source.kind),
                )),
            }
        } else if !by_suite.contains_key(name) {
            let file = root.join(crate::config::CONFIG_FILE);
            by_suite.entry(name.clone()).or_default().1.push(SuiteError::new(
                &file,
                None,
                Some(&format!("suites.{name}")),
                format!("suite `{name}` is configured but has no probes/{name}.toml, cases/{name}.jsonl or source"),
            ));
        }
    }
    by_suite
        .into_iter()
        .map(|(name, (mut cases, mut errors))| {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut keep = Vec::with_capacity(cases.len());
            for case in cases.drain(..) {
                let full = case.id.test_name();
                let short = full.clone();
                if let Some(&first) = seen.get(&short) {
                    let other: &Case = &keep[first];
                    errors.push(SuiteError::new(
                        &case.origin.file,
                        case.origin.line,
                        Some("id"),
                        format!(
                            "duplicate id `{}` ({full}); first defined at {}{}",
                            case.id.id,
                            other.origin.file.display(),
                            other
                                .origin
                                .line
                                .map(|l| format!(":{l}"))
                                .unwrap_or_default()
                        ),
                    ));
                    continue;
                }
                seen.insert(short, keep.len());
                keep.push(case);
            }
            if let Some(n) = config.model.max_samples {
                keep.truncate(n);
            }
            Suite {
                name,
                cases: keep,
                errors,
            }
        })
        .collect()
}
