//! The harness end to end on a temporary project answered by the replay model: selection by
//! name, failure output, gates, and load errors that never lose the good cases.

use std::path::Path;

use libtest_mimic::Arguments;
use vlmtest::harness::run_in;

const PROBES: &str = r#"
[[probe]]
id = "torque_001"
category = "torque"
question = "Head bolt torque?"
numbers = [{ value = 40, unit = "Nm" }]

[[probe]]
id = "torque_002"
category = "torque"
question = "Drain plug torque?"
numbers = [{ value = 35, unit = "Nm" }]
keywords = ["washer"]

[[probe]]
id = "oil_001"
category = "fluids"
question = "Oil capacity?"
numbers = [{ value = 4.5, unit = "l" }]
"#;

const ROWS: &str = r#"{"id": "row_1", "conversations": [{"role": "user", "content": "Idle speed?"}, {"role": "assistant", "content": "880 rpm"}], "metadata": {"category": "specs"}}
{"id": "row_2", "conversations": [{"role": "user", "content": "Tyre pressure?"}, {"role": "assistant", "content": "2.3 bar"}], "metadata": {"category": "specs"}}
"#;

fn project(dir: &Path, replay: &str, gates: &str) {
    std::fs::create_dir_all(dir.join("probes")).expect("mkdir");
    std::fs::create_dir_all(dir.join("cases")).expect("mkdir");
    std::fs::create_dir_all(dir.join("snapshots")).expect("mkdir");
    std::fs::write(dir.join("probes/shop.toml"), PROBES).expect("write");
    std::fs::write(dir.join("cases/shop.jsonl"), ROWS).expect("write");
    std::fs::write(dir.join("answers.jsonl"), replay).expect("write");
    let config =
        format!("[model]\nspec = \"replay:answers.jsonl\"\n\n[suites.shop.gates]\n{gates}\n");
    std::fs::write(dir.join("vlmtest.toml"), config).expect("write");
}

const GOOD: &str = r#"{"name": "shop::torque::torque_001", "answer": "Stage 1: 40 N·m."}
{"name": "shop::torque::torque_002", "answer": "35 Nm with a new washer."}
{"name": "shop::fluids::oil_001", "answer": "4,500 ml"}
{"name": "shop::specs::row_1", "answer": "About 880 rpm."}
{"name": "shop::specs::row_2", "answer": "2.3 bars"}
"#;

fn args(extra: &[&str]) -> Arguments {
    let mut v = vec!["eval", "--quiet", "--test-threads", "1"];
    v.extend_from_slice(extra);
    Arguments::from_iter(v)
}

#[test]
fn a_filter_selects_by_name_and_every_case_is_a_trial() {
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path(), GOOD, "pass_rate = 1.0");
    let c = run_in(dir.path(), &args(&["torque"]));
    assert_eq!((c.num_passed, c.num_failed), (2, 0), "{c:?}");
    // Three probes, two rows and the suite's report trial.
    let c = run_in(dir.path(), &args(&["--skip", "report"]));
    assert_eq!(
        (c.num_passed, c.num_failed, c.num_filtered_out),
        (5, 0, 1),
        "{c:?}"
    );
    let c = run_in(dir.path(), &args(&["--exact", "shop::fluids::oil_001"]));
    assert_eq!((c.num_passed, c.num_filtered_out), (1, 5), "{c:?}");
}

#[test]
fn a_wrong_answer_fails_its_case_and_a_metric_drop_fails_the_gate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let worse = GOOD.replace("35 Nm with a new washer.", "25 Nm.");
    project(dir.path(), &worse, "pass_rate = 0.9");
    let c = run_in(dir.path(), &args(&["--skip", "report"]));
    assert_eq!((c.num_passed, c.num_failed), (4, 1), "{c:?}");
    let c = run_in(dir.path(), &args(&["--exact", "shop::report"]));
    assert_eq!(
        c.num_failed, 1,
        "the pass-rate gate (0.8 < 0.9) must fail: {c:?}"
    );
}

#[test]
fn a_malformed_row_is_reported_and_the_good_cases_still_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path(), GOOD, "pass_rate = 0.0");
    let broken = format!("{ROWS}{{\"id\": \"row_3\", \"conversation\": []}}\n");
    std::fs::write(dir.path().join("cases/shop.jsonl"), broken).expect("write");
    let c = run_in(dir.path(), &args(&["--skip", "report"]));
    // The load trial fails; the five good cases pass.
    assert_eq!((c.num_passed, c.num_failed), (5, 1), "{c:?}");
    let suites = vlmtest::suite::load_all(
        dir.path(),
        &vlmtest::config::Config::load(dir.path()).expect("config"),
        None,
    );
    let msg = suites[0].errors[0].to_string();
    assert!(
        msg.contains("shop.jsonl:3") && msg.contains("conversation"),
        "{msg}"
    );
}

#[test]
fn a_missing_model_fails_every_case_with_its_error_instead_of_crashing() {
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path(), GOOD, "pass_rate = 0.0");
    std::fs::remove_file(dir.path().join("answers.jsonl")).expect("rm");
    let c = run_in(dir.path(), &args(&["--skip", "report"]));
    assert_eq!((c.num_passed, c.num_failed), (0, 5), "{c:?}");
}

/// Before, a suite's report pulled every case into inference, the skipped ones too.
#[test]
fn skip_answers_only_the_cases_that_run_and_ignores_the_partial_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path(), GOOD, "pass_rate = 1.0");
    let c = run_in(dir.path(), &args(&["--skip", "torque_002"]));
    assert_eq!(
        (
            c.num_passed,
            c.num_failed,
            c.num_ignored,
            c.num_filtered_out
        ),
        (4, 0, 1, 1),
        "four cases run, the report is ignored, the skipped case filtered out: {c:?}"
    );
    let answers = dir.path().join("target/vlmtest/answers");
    let cached: usize = std::fs::read_dir(&answers)
        .expect("answer cache")
        .filter_map(Result::ok)
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
        .count();
    assert_eq!(cached, 4, "the skipped case was not answered");
}
