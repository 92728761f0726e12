//! The run store: every `vlmtest run` is kept under `target/vlmtest/runs/<run-id>/` (its suite
//! reports with every verdict and answer, a replay file of the answers, and `run.json`), so a
//! later run can be compared with it. `target/vlmtest/report-<suite>.json` stays the latest.
//!
//! A run folder appears whole or not at all: it is written under a hidden name and renamed into
//! place. Runs are removed only on request (`vlmtest runs --prune --keep N`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::report::{self, Report};

/// A run store error, naming the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no run, run folder or report file `{0}` (see `vlmtest runs`)")]
    NotFound(String),
    #[error("`{given}` names several runs: {}", matches.join(", "))]
    Ambiguous { given: String, matches: Vec<String> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One suite's line in `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteSummary {
    pub suite: String,
    pub model: String,
    pub cases: usize,
    pub passed: usize,
    pub pass_rate: f64,
    pub model_errors: usize,
    pub scorer_errors: usize,
    /// Every gate (and the baseline rules) passed.
    pub gates_passed: bool,
}

/// `run.json`: what a run was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub id: String,
    /// UTC, RFC 3339 (`2026-12-07T13:01:02Z`).
    pub created: String,
    pub created_unix: u64,
    /// The label of the model under test (the run id's second part).
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// `git rev-parse HEAD` of the project, when it is a git checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    pub vlmtest_version: String,
    pub suites: Vec<SuiteSummary>,
}

impl RunMeta {
    /// The pass rate over every suite's cases.
    pub fn pass_rate(&self) -> f64 {
        let cases: usize = self.suites.iter().map(|s| s.cases).sum();
        let passed: usize = self.suites.iter().map(|s| s.passed).sum();
        report::rate(passed, cases)
    }

    pub fn gates_passed(&self) -> bool {
        self.suites.iter().all(|s| s.gates_passed)
    }
}

/// `<output dir>/runs`.
pub fn runs_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("runs")
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (the
/// era-based conversion of Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `(RFC 3339, compact)` forms of a UTC time: `2026-12-07T13:01:02Z`, `20261207T130102Z`.
pub fn utc_stamp(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    (
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
    )
}

/// A label as a path-safe run-id part: letters, digits, `.`, `_`, `-`; anything else `-`.
fn slug(label: &str) -> String {
    let s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_owned();
    if s.is_empty() {
        "model".into()
    } else {
        s.chars().take(80).collect()
    }
}

/// `git rev-parse HEAD` of `root`, when it is a git checkout.
pub fn git_commit(root: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// The file name of a run's HTML page, in its folder (and of the latest page beside the reports).
pub const PAGE_FILE: &str = "report.html";

/// A run's HTML page, rendered for its run id.
pub type PageFn<'a> = &'a dyn Fn(&str) -> String;

/// Stores a finished run under `<out_dir>/runs/<id>/`: the reports, `answers.jsonl` (a replay
/// file of every answer), `run.json` and, given `page`, `report.html` (`page` gets the run id).
/// The folder is written under a hidden name and renamed, so a listed run is always complete.
pub fn save(
    out_dir: &Path,
    project: &Path,
    model: &str,
    adapter: Option<&Path>,
    reports: &[Report],
    page: Option<PageFn<'_>>,
) -> Result<RunMeta, StoreError> {
    let runs = runs_dir(out_dir);
    std::fs::create_dir_all(&runs).map_err(io(&runs))?;
    let now = now_unix();
    let (_, compact) = utc_stamp(now);
    let base = format!("{compact}-{}", slug(model));
    let tmp = runs.join(format!(".partial-{base}-{}", std::process::id()));
    let mut meta = write_folder(&tmp, &base, now, project, model, adapter, reports)?;
    // Two runs in the same second with the same model get `-2`, `-3`, … The rename is atomic;
    // if another process took the name first, try the next.
    for n in 1.. {
        let id = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        if id != meta.id {
            meta.id = id.clone();
            write_meta(&tmp, &meta)?;
        }
        if let Some(page) = page {
            let html = tmp.join(PAGE_FILE);
            std::fs::write(&html, page(&id)).map_err(io(&html))?;
        }
        let dest = runs.join(&id);
        if dest.exists() {
            continue;
        }
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => return Ok(meta),
            Err(_) if dest.exists() => continue,
            Err(e) => return Err(io(&dest)(e)),
        }
    }
    unreachable!("the id loop only ends by returning")
}

/// Stores a run in the folder `dest` itself (replacing an earlier one there), as `save` writes
/// it, so `vlmtest compare` reads it like any stored run: the trainer's `evals/before`,
/// `evals/step-N` and `evals/after`. Its id is the folder's name.
pub fn save_at(
    dest: &Path,
    project: &Path,
    model: &str,
    adapter: Option<&Path>,
    reports: &[Report],
) -> Result<RunMeta, StoreError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let id = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let tmp = parent.join(format!(".partial-{id}-{}", std::process::id()));
    let meta = write_folder(&tmp, &id, now_unix(), project, model, adapter, reports)?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(io(dest))?;
    }
    std::fs::rename(&tmp, dest).map_err(io(dest))?;
    Ok(meta)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes a run's files into `dir` (created fresh): the reports, `answers.jsonl`, `run.json`.
fn write_folder(
    dir: &Path,
    id: &str,
    now: u64,
    project: &Path,
    model: &str,
    adapter: Option<&Path>,
    reports: &[Report],
) -> Result<RunMeta, StoreError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut answers = Vec::new();
    for r in reports {
        report::write_json(dir, r).map_err(io(dir))?;
        answers.extend(
            r.verdicts
                .iter()
                .filter_map(|v| v.answer.as_ref().map(|a| (v.name.clone(), a.text.clone()))),
        );
    }
    let replay = dir.join("answers.jsonl");
    crate::model::replay::ReplayModel::write(&replay, &answers).map_err(io(&replay))?;
    let meta = RunMeta {
        id: id.to_owned(),
        created: utc_stamp(now).0,
        created_unix: now,
        model: model.to_owned(),
        adapter: adapter.map(|a| a.display().to_string()),
        git_commit: git_commit(project),
        vlmtest_version: env!("CARGO_PKG_VERSION").to_owned(),
        suites: reports
            .iter()
            .map(|r| SuiteSummary {
                suite: r.suite.clone(),
                model: r.model.clone(),
                cases: r.overall.cases,
                passed: r.overall.passed,
                pass_rate: r.overall.pass_rate,
                model_errors: r.model_errors,
                scorer_errors: r.scorer_errors,
                gates_passed: r.gates_passed(),
            })
            .collect(),
    };
    write_meta(dir, &meta)?;
    Ok(meta)
}

fn write_meta(dir: &Path, meta: &RunMeta) -> Result<(), StoreError> {
    let meta_path = dir.join("run.json");
    let text = serde_json::to_string_pretty(meta).map_err(|e| StoreError::Parse {
        path: meta_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&meta_path, text).map_err(io(&meta_path))
}

fn read_meta(dir: &Path) -> Result<RunMeta, StoreError> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| StoreError::Parse {
        path,
        message: e.to_string(),
    })
}

/// Every stored run, oldest first. A folder without a readable `run.json` is an error naming
/// it, not skipped.
pub fn list(out_dir: &Path) -> Result<Vec<RunMeta>, StoreError> {
    let runs = runs_dir(out_dir);
    let entries = match std::fs::read_dir(&runs) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&runs)(e)),
    };
    let mut metas = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(&runs))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        metas.push(read_meta(&entry.path())?);
    }
    metas.sort_by(|a, b| (a.created_unix, &a.id).cmp(&(b.created_unix, &b.id)));
    Ok(metas)
}

/// Removes all but the newest `keep` runs; returns the removed ids.
pub fn prune(out_dir: &Path, keep: usize) -> Result<Vec<String>, StoreError> {
    let metas = list(out_dir)?;
    let drop = metas.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for m in metas.into_iter().take(drop) {
        let dir = runs_dir(out_dir).join(&m.id);
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        removed.push(m.id);
    }
    Ok(removed)
}

/// The reports of a run folder (every `report-*.json` in it), sorted by suite.
pub fn load_reports(dir: &Path) -> Result<Vec<Report>, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("report-") && n.ends_with(".json"))
        })
        .collect();
    paths.sort();
    let mut reports = Vec::new();
    for p in paths {
        reports.push(read_report(&p)?);
    }
    Ok(reports)
}

/// Reads one report file.
pub fn read_report(path: &Path) -> Result<Report, StoreError> {
    report::read_json(path).map_err(|message| StoreError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// The reports that `given` names, and a label for it: a run id (or a unique prefix of one),
/// `latest`, a run folder, or a report file.
pub fn resolve(out_dir: &Path, given: &str) -> Result<(String, Vec<Report>), StoreError> {
    let path = Path::new(given);
    if path.is_file() {
        return Ok((given.to_owned(), vec![read_report(path)?]));
    }
    if path.is_dir() && path.join("run.json").is_file() {
        return Ok((given.to_owned(), load_reports(path)?));
    }
    let metas = list(out_dir)?;
    let id = if given == "latest" {
        metas.last().map(|m| m.id.clone())
    } else if metas.iter().any(|m| m.id == given) {
        Some(given.to_owned())
    } else {
        let matches: Vec<String> = metas
            .iter()
            .filter(|m| m.id.starts_with(given))
            .map(|m| m.id.clone())
            .collect();
        if matches.len() > 1 {
            return Err(StoreError::Ambiguous {
                given: given.to_owned(),
                matches,
            });
        }
        matches.into_iter().next()
    };
    let id = id.ok_or_else(|| StoreError::NotFound(given.to_owned()))?;
    let dir = runs_dir(out_dir).join(&id);
    Ok((format!("run {id}"), load_reports(&dir)?))
}

/// The rows of `vlmtest runs`: id, date, model, suites, pass rate, gates.
pub fn table_rows(metas: &[RunMeta]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "run".to_string(),
        "date (UTC)".into(),
        "model".into(),
        "suites".into(),
        "cases".into(),
        "pass rate".into(),
        "gates".into(),
    ]];
    for m in metas {
        let suites: Vec<&str> = m.suites.iter().map(|s| s.suite.as_str()).collect();
        let cases: usize = m.suites.iter().map(|s| s.cases).sum();
        let failed: Vec<&str> = m
            .suites
            .iter()
            .filter(|s| !s.gates_passed)
            .map(|s| s.suite.as_str())
            .collect();
        rows.push(vec![
            m.id.clone(),
            m.created.replace('T', " ").trim_end_matches('Z').to_owned(),
            m.model.clone(),
            suites.join(","),
            cases.to_string(),
            format!("{:.2}", m.pass_rate()),
            if failed.is_empty() {
                "ok".into()
            } else {
                format!("FAILED: {}", failed.join(","))
            },
        ]);
    }
    rows
}

/// Suite → label of each report's model, for the run's one-line model name.
pub fn model_of(reports: &[Report]) -> BTreeMap<String, String> {
    reports
        .iter()
        .map(|r| (r.suite.clone(), r.model.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn stamps_are_utc_calendar_dates() {
        assert_eq!(utc_stamp(0).0, "1970-01-01T00:00:00Z");
        // 2026-12-07T13:01:02Z
        assert_eq!(
            utc_stamp(1_796_648_462),
            (
                "2026-12-07T13:01:02Z".to_string(),
                "20261207T130102Z".to_string()
            )
        );
        // A leap day.
        assert_eq!(utc_stamp(951_782_400).0, "2000-02-29T00:00:00Z");
    }

    proptest! {
        #[test]
        fn slugs_are_path_safe(label in "\\PC{0,100}") {
            let s = slug(&label);
            prop_assert!(!s.is_empty() && s.len() <= 80);
            prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        }

        #[test]
        fn days_count_up_one_calendar_day_at_a_time(day in 0i64..200_000) {
            let (y0, m0, d0) = civil_from_days(day);
            let (y1, m1, d1) = civil_from_days(day + 1);
            let next_day = (y1, m1, d1) == (y0, m0, d0 + 1);
            let next_month = d1 == 1 && ((y1 == y0 && m1 == m0 + 1) || (y1 == y0 + 1 && m0 == 12 && m1 == 1));
            prop_assert!(next_day || next_month, "{y0}-{m0}-{d0} -> {y1}-{m1}-{d1}");
        }
    }
}
