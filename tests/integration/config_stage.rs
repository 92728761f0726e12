//! The configuration stage through the real binary: a misspelt key, a bad value or a bad
//! variable stops the run with exit code 2 and a message naming where it came from; an unknown
//! `VLMTEST_*` variable is a warning naming the closest known one.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_vlmtest");

const PROBE: &str =
    "[[probe]]\nid = \"p1\"\ncategory = \"c\"\nquestion = \"Which bolt?\"\nkeywords = [\"bolt\"]\n";
const ANSWERS: &str = "{\"name\": \"qa::c::p1\", \"answer\": \"The bolt.\"}\n";

/// A project with one passing probe, answered by a replay file, and `toml` as `vlmtest.toml`.
fn project(toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("probes")).expect("mkdir");
    std::fs::write(dir.path().join("probes/qa.toml"), PROBE).expect("probe");
    std::fs::write(dir.path().join("answers.jsonl"), ANSWERS).expect("answers");
    std::fs::write(dir.path().join("vlmtest.toml"), toml).expect("config");
    dir
}

/// Runs `vlmtest args` in `root` with exactly the variables `vars` (and `PATH`).
fn vlmtest(root: &Path, args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let out: Output = Command::new(BIN)
        .args(args)
        .current_dir(root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("VLMTEST_ROOT", root)
        .envs(vars.iter().copied())
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const RUN: &[&str] = &["run", "--model", "replay:answers.jsonl"];

#[test]
fn the_project_runs_when_the_configuration_is_good() {
    let dir = project("[suites.qa.gates]\n\"score.keywords\" = { max = 1.0 }\n");
    let (code, err) = vlmtest(dir.path(), RUN, &[]);
    assert_eq!(code, Some(0), "{err}");
}

/// Before the configuration stage this gate parsed as a bound with neither end and passed.
#[test]
fn a_misspelt_gate_bound_exits_2_naming_file_line_and_key() {
    let dir =
        project("[suites.qa.gates]\npass_rate = 0.5\n\"score.keywords\" = { maximum = 0.1 }\n");
    let (code, err) = vlmtest(dir.path(), RUN, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("vlmtest.toml:3") && err.contains("score.keywords") && err.contains("maximum"),
        "{err}"
    );
}

/// Before, `[judge]` was kept as a raw table and only checked once a judged case ran.
#[test]
fn a_misspelt_judge_key_exits_2_even_without_judged_cases() {
    let dir = project("[judge]\nurl = \"http://127.0.0.1:9/v1\"\nmodle = \"m\"\n");
    let (code, err) = vlmtest(dir.path(), &["list"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("vlmtest.toml:3") && err.contains("judge.modle"),
        "{err}"
    );
}

/// Before, a rubric was read only by the judge stage, and its error became a judge error per case.
#[test]
fn a_misspelt_rubric_key_exits_2_naming_the_rubric_file_and_line() {
    let dir = project("");
    std::fs::create_dir(dir.path().join("judges")).expect("mkdir");
    std::fs::write(
        dir.path().join("judges/tone.toml"),
        "metric = \"rubric\"\ncriteria = \"Polite?\"\nfeilds = [\"answer\"]\n",
    )
    .expect("rubric");
    let (code, err) = vlmtest(dir.path(), &["list"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("judges/tone.toml:3") && err.contains("feilds"),
        "{err}"
    );
}

/// Before, `VLMTEST_STRICT` counted only when it was `1` and `VLMTEST_JUDGE_CACHE` was dropped
/// when it did not parse; both were silent.
#[test]
fn an_unparseable_variable_exits_2_naming_it_and_its_value() {
    let dir = project("");
    for (name, value) in [
        ("VLMTEST_STRICT", "maybe"),
        ("VLMTEST_JUDGE_CACHE", "sometimes"),
        ("VLMTEST_MAX_SAMPLES", "abc"),
    ] {
        let (code, err) = vlmtest(dir.path(), RUN, &[(name, value)]);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(err.contains(&format!("{name}=`{value}`")), "{name}: {err}");
    }
}

#[test]
fn an_unknown_variable_is_a_warning_naming_the_closest_known_one() {
    let dir = project("");
    let (code, err) = vlmtest(dir.path(), &["list"], &[("VLMTEST_MODLE", "smollm2")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("VLMTEST_MODLE") && err.contains("did you mean VLMTEST_MODEL?"),
        "{err}"
    );
}

/// Before, a model that could not be resolved failed its cases under the label `unresolved` and
/// `run` exited 1, as if the model had answered wrong.
#[test]
fn a_model_that_cannot_be_resolved_exits_2_naming_it() {
    let dir = project("");
    let (code, err) = vlmtest(dir.path(), &["run", "--model", "smolm2"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("model `smolm2`"), "{err}");
}
