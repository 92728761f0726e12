//! Comparing runs: the statistics against scipy/statsmodels/numpy (`scripts/reference_compare.py`
//! → `fixtures/compare/expected.json`), every report metric recomputed by the report's own
//! functions, the run store and `vlmtest compare` as a user runs them, and the baseline gate in
//! the harness and in `vlmtest run`.

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::Arguments;
use serde_json::Value;
use vlmtest::metric::significance::{mcnemar_exact, quantile_sorted};
use vlmtest::report::columns::Columns;
use vlmtest::report::gate;
use vlmtest::session::{Overrides, Session};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn mcnemar_and_percentiles_equal_statsmodels_scipy_and_numpy() {
    let text = std::fs::read_to_string(manifest().join("fixtures/compare/expected.json"))
        .expect("expected.json exists");
    let expected: Value = serde_json::from_str(&text).expect("parses");
    let cases = expected["mcnemar"].as_array().expect("mcnemar list");
    assert!(cases.len() >= 10);
    for c in cases {
        let (f, b) = (
            c["fixed"].as_u64().unwrap() as usize,
            c["broken"].as_u64().unwrap() as usize,
        );
        let ours = mcnemar_exact(f, b);
        for lib in ["statsmodels", "scipy"] {
            let theirs = c[lib].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() < 1e-12,
                "McNemar({f}, {b}): vlmtest {ours} vs {lib} {theirs}"
            );
        }
    }
    for q in expected["quantiles"].as_array().expect("quantiles") {
        let mut s: Vec<f64> = q["sample"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        s.sort_by(f64::total_cmp);
        for (p, key) in [(0.025, "q025"), (0.975, "q975")] {
            let ours = quantile_sorted(&s, p).unwrap();
            let theirs = q[key].as_f64().unwrap();
            assert!((ours - theirs).abs() < 1e-12, "{key}: {ours} vs {theirs}");
        }
    }
}

/// The example task suites, answered by their recorded answers (no model needed).
fn example_reports() -> Vec<vlmtest::report::Report> {
    let root = manifest();
    let session = Session::open(&root, &Overrides::default()).expect("example project opens");
    let suites: Vec<_> = session
        .suites
        .iter()
        .filter(|s| {
            session
                .config
                .model_spec_for(&s.name)
                .starts_with("replay:")
        })
        .collect();
    assert!(suites.len() >= 4, "the four replay-backed task suites");
    let cases: Vec<_> = suites
        .iter()
        .flat_map(|s| &s.cases)
        .filter(|c| !c.ignored)
        .collect();
    let eval = session.evaluate(&cases, false);
    suites.iter().map(|s| session.report(s, &eval)).collect()
}

#[test]
fn every_report_metric_is_recomputed_by_the_reports_own_functions() {
    for r in example_reports() {
        let cols = Columns::new(&r.verdicts).expect("columns");
        let all: Vec<usize> = (0..cols.len()).collect();
        let m = cols.metrics(&all, true);
        let task_metrics: usize = r
            .tasks
            .values()
            .filter_map(|t| t["metrics"].as_object())
            .map(|o| {
                o.keys()
                    .filter(|k| *k != "n" && *k != "scorer_errors")
                    .count()
            })
            .sum();
        assert!(
            m.len() > task_metrics,
            "{}: {} metrics recomputed, report has {task_metrics} task metrics",
            r.suite,
            m.len()
        );
        for (name, value) in &m {
            let reported = gate::metric(&r, name)
                .unwrap_or_else(|| panic!("{}: `{name}` is not a report metric", r.suite));
            assert!(
                (reported - value).abs() < 1e-12,
                "{}: {name} reported {reported}, recomputed {value}",
                r.suite
            );
        }
        // Every task metric of the report is among them, and has a bootstrap interval unless it
        // is a selection (the spam sweep's chosen point) or a count.
        for (task, t) in &r.tasks {
            for key in t["metrics"].as_object().unwrap().keys() {
                if key == "n" || key == "scorer_errors" {
                    continue;
                }
                let name = format!("{task}.{key}");
                assert!(m.contains_key(&name), "{}: {name} not recomputed", r.suite);
                let has_ci = t.get("ci95").and_then(|c| c.get(key)).is_some();
                assert!(
                    has_ci || key.starts_with("sweep."),
                    "{}: {name} has no interval",
                    r.suite
                );
            }
        }
    }
}

const PROBES: &str = r#"
[[probe]]
id = "torque_001"
category = "torque"
question = "Head bolt torque?"
numbers = [{ value = 40, unit = "Nm" }]
tags = ["critical"]

[[probe]]
id = "torque_002"
category = "torque"
question = "Drain plug torque?"
numbers = [{ value = 35, unit = "Nm" }]

[[probe]]
id = "oil_001"
category = "fluids"
question = "Oil capacity?"
numbers = [{ value = 4.5, unit = "l" }]
"#;

const GOOD: &str = r#"{"name": "shop::torque::torque_001", "answer": "Stage 1: 40 N·m."}
{"name": "shop::torque::torque_002", "answer": "35 Nm."}
{"name": "shop::fluids::oil_001", "answer": "4,500 ml"}
"#;

/// The good answers with the critical probe answered wrong.
fn worse() -> String {
    GOOD.replace("Stage 1: 40 N·m.", "Stage 1: 60 N·m.")
}

fn project(dir: &Path, baseline: &str) {
    std::fs::create_dir_all(dir.join("probes")).expect("mkdir");
    std::fs::create_dir_all(dir.join("snapshots")).expect("mkdir");
    std::fs::write(dir.join("probes/shop.toml"), PROBES).expect("write");
    std::fs::write(dir.join("good.jsonl"), GOOD).expect("write");
    std::fs::write(dir.join("worse.jsonl"), worse()).expect("write");
    std::fs::write(
        dir.join("vlmtest.toml"),
        format!("[model]\nspec = \"replay:good.jsonl\"\n\n[suites.shop]\n{baseline}\n"),
    )
    .expect("write");
}

fn vlmtest(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vlmtest"))
        .args(args)
        .env("VLMTEST_ROOT", dir)
        .env_remove("VLMTEST_MODEL")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("vlmtest runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("run: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in\n{stderr}"))
        .to_owned()
}

#[test]
fn runs_are_stored_listed_and_compared() {
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path(), "");
    let (code, _, err) = vlmtest(dir.path(), &["run"]);
    assert_eq!(code, 0, "{err}");
    let first = run_id(&err);
    let (code, _, err) = vlmtest(dir.path(), &["run", "--model", "replay:worse.jsonl"]);
    assert_eq!(code, 1, "a failing case of an ungated suite exits 1: {err}");
    let second = run_id(&err);
    assert_ne!(first, second);
    let run_dir = dir.path().join("target/vlmtest/runs").join(&second);
    for f in ["run.json", "report-shop.json", "answers.jsonl"] {
        assert!(run_dir.join(f).is_file(), "{f} in the run folder");
    }

    let (code, out, err) = vlmtest(dir.path(), &["runs"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "header, rule and two runs:\n{out}");
    assert!(
        lines[2].starts_with(&first) && lines[3].starts_with(&second),
        "{out}"
    );
    assert!(lines[3].contains("0.67"), "{out}");

    let (code, out, err) = vlmtest(
        dir.path(),
        &["compare", &first, "latest", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let cmp: Value = serde_json::from_str(&out).expect("compare JSON");
    let s = &cmp["suites"][0];
    assert_eq!(s["paired"], 3);
    assert_eq!(s["pairs"]["broken"], 1);
    assert_eq!(s["broken"][0]["name"], "shop::torque::torque_001");
    assert_eq!(s["broken"][0]["b_answer"], "Stage 1: 60 N·m.");
    let pass = s["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "pass_rate")
        .expect("pass_rate row");
    assert!((pass["diff"].as_f64().unwrap() + 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(
        pass["p_value"], 1.0,
        "one discordant pair cannot be significant"
    );

    let (code, out, _) = vlmtest(
        dir.path(),
        &["compare", &first, &second, "--format", "markdown"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("| pass_rate |") && out.contains("**Broken** (pass → fail): 1"),
        "{out}"
    );

    // The same comparison as one page: self-contained, the broken case with both answers.
    let (code, page, _) = vlmtest(
        dir.path(),
        &["compare", &first, &second, "--format", "html"],
    );
    assert_eq!(code, 0);
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert!(page.contains("default-src 'none'"), "the report's CSP");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no network reference"
    );
    assert!(
        page.contains(r#"<button data-show="broken">broken (1)</button>"#),
        "{page}"
    );
    assert_eq!(
        page.matches(r#"<tr class="chg broken">"#).count(),
        1,
        "{page}"
    );
    assert!(page.contains("<td>pass_rate</td>"), "{page}");

    // Two models run on the same cases first, each stored as a run.
    let (code, out, err) = vlmtest(
        dir.path(),
        &[
            "compare",
            "--model",
            "replay:worse.jsonl",
            "--model",
            "replay:good.jsonl",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fixed (fail in A, pass in B): 1"), "{out}");
    let (_, out, _) = vlmtest(dir.path(), &["runs", "--format", "json"]);
    let runs: Value = serde_json::from_str(&out).expect("runs JSON");
    assert_eq!(runs.as_array().unwrap().len(), 4);

    let (code, _, err) = vlmtest(dir.path(), &["runs", "--prune", "--keep", "1"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = vlmtest(dir.path(), &["runs", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (code, _, err) = vlmtest(dir.path(), &["compare", "nope", "latest"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no run, run folder or report file `nope`"),
        "{err}"
    );
}

fn harness_args(extra: &[&str]) -> Arguments {
    let mut v = vec!["eval", "--quiet", "--test-threads", "1"];
    v.extend_from_slice(extra);
    Arguments::from_iter(v)
}

#[test]
fn the_baseline_gate_fails_on_a_broken_critical_case_in_cargo_test_and_vlmtest_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path(), "");
    // Accept today's run as the baseline, committed beside the suite.
    let (code, _, err) = vlmtest(dir.path(), &["run"]);
    assert_eq!(code, 0, "{err}");
    std::fs::create_dir_all(dir.path().join("baselines")).unwrap();
    std::fs::copy(
        dir.path().join("target/vlmtest/report-shop.json"),
        dir.path().join("baselines/shop.json"),
    )
    .unwrap();
    project(
        dir.path(),
        "[suites.shop.baseline]\nreport = \"baselines/shop.json\"\nno_significant_regression = [\"pass_rate\"]\nmax_broken = 0\nbroken_tags = [\"critical\"]\n",
    );
    let c = vlmtest::harness::run_in(dir.path(), &harness_args(&["--exact", "shop::compare"]));
    assert_eq!(
        (c.num_passed, c.num_failed),
        (1, 0),
        "same answers pass: {c:?}"
    );

    let cfg = std::fs::read_to_string(dir.path().join("vlmtest.toml")).unwrap();
    std::fs::write(
        dir.path().join("vlmtest.toml"),
        cfg.replace("replay:good.jsonl", "replay:worse.jsonl"),
    )
    .unwrap();
    let c = vlmtest::harness::run_in(dir.path(), &harness_args(&["compare"]));
    assert_eq!(
        (c.num_passed, c.num_failed),
        (0, 1),
        "the broken critical case fails shop::compare: {c:?}"
    );
    let (code, out, err) = vlmtest(dir.path(), &["run"]);
    assert_eq!(
        code, 1,
        "vlmtest run exits 1 on the baseline gate: {out}\n{err}"
    );
    assert!(
        out.contains("baseline failed: shop against baselines/shop.json")
            && out.contains("max_broken = 0 [tags: critical]: 1 broken: shop::torque::torque_001"),
        "{out}"
    );
    let (_, junit, _) = vlmtest(dir.path(), &["report", "--format", "junit"]);
    assert!(
        junit.contains("name=\"shop::compare\"") && junit.contains("<failure message=\"baseline"),
        "{junit}"
    );

    // A typo in the rules is an error, not a silent pass.
    project(
        dir.path(),
        "[suites.shop.baseline]\nreport = \"baselines/shop.json\"\nno_significant_regresion = [\"pass_rate\"]\n",
    );
    let (code, _, err) = vlmtest(dir.path(), &["run"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no_significant_regresion"), "{err}");
}
