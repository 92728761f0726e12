//! Nothing looks green when it is not: an entry that did not load is counted in every output of
//! `vlmtest run` and `vlmtest report` (table, JSON, JUnit, HTML) and in the exit code.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vlmtest");

const ROWS: &str = r#"{"id": "r1", "conversations": [{"role": "user", "content": "Torque?"}, {"role": "assistant", "content": "25 Nm"}], "metadata": {"category": "c"}}
{"id": "r2", "conversations": [{"role": "user", "content": "Gap?"}, {"role": "assistant", "content": "0.7 mm"}], "metadata": {"category": "c"}}
{"id": broken
"#;
const ANSWERS: &str = "{\"name\": \"s::c::r1\", \"answer\": \"25 Nm\"}\n{\"name\": \"s::c::r2\", \"answer\": \"0.7 mm\"}\n";

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("cases")).expect("mkdir");
    std::fs::write(dir.path().join("cases/s.jsonl"), ROWS).expect("rows");
    std::fs::write(dir.path().join("answers.jsonl"), ANSWERS).expect("answers");
    std::fs::write(
        dir.path().join("vlmtest.toml"),
        "[suites.s]\nrow_scorers = [\"numbers\"]\n[suites.s.gates]\npass_rate = 0.5\n",
    )
    .expect("config");
    dir
}

fn vlmtest(root: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("VLMTEST_ROOT", root)
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const RUN: &[&str] = &["run", "--model", "replay:answers.jsonl"];

#[test]
fn one_bad_row_of_three_is_an_error_in_every_output() {
    let dir = project();
    let root = dir.path();

    let mut args = RUN.to_vec();
    args.extend(["--format", "junit"]);
    let (code, junit, err) = vlmtest(root, &args);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        junit.contains(r#"<testsuite name="s" tests="3" failures="0" errors="1">"#),
        "{junit}"
    );
    assert!(junit.contains(r#"name="s::load::s.jsonl:3""#), "{junit}");

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("target/vlmtest/report-s.json")).expect("report"),
    )
    .expect("report JSON");
    assert_eq!(json["overall"]["cases"], 3);
    assert_eq!(json["overall"]["passed"], 2);
    assert_eq!(json["load_errors"][0]["line"], 3);
    assert!(json["load_errors"][0]["file"]
        .as_str()
        .is_some_and(|f| f.ends_with("s.jsonl")));
    // The pass-rate gate (0.67 >= 0.5) fails: an entry is missing behind it.
    assert_eq!(json["gates"][0]["missing"], 1);
    assert_eq!(json["gates"][0]["passed"], false);

    let (code, table, _) = vlmtest(root, &["report"]);
    assert_eq!(
        code,
        Some(2),
        "`vlmtest report` of a report with a load error"
    );
    assert!(table.contains("load error: s:"), "{table}");
    assert!(table.contains("errors"), "{table}");
    let (code, html, _) = vlmtest(root, &["report", "--format", "html"]);
    assert_eq!(code, Some(2));
    assert!(
        html.contains("Entries that did not load"),
        "html lists the bad row"
    );
    assert!(html.contains("s.jsonl:3"));

    // Fixed, the same project is green everywhere.
    std::fs::write(
        root.join("cases/s.jsonl"),
        ROWS.lines().take(2).collect::<Vec<_>>().join("\n"),
    )
    .expect("rows");
    let (code, junit, err) = vlmtest(root, &args);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        junit.contains(r#"tests="2" failures="0" errors="0""#),
        "{junit}"
    );
    let (code, _, _) = vlmtest(root, &["report"]);
    assert_eq!(code, Some(0));
}

/// `vlmtest export` of saved reports: `run_metadata.json` counts the entry that did not load
/// among the cases, lists it, and carries the project's configuration file.
#[test]
fn the_export_bundle_counts_load_errors_and_keeps_the_configuration() {
    let dir = project();
    let root = dir.path();
    let (code, _, err) = vlmtest(root, RUN);
    assert_eq!(code, Some(2), "{err}");
    let out = root.join("bundle");
    let (code, _, err) = vlmtest(root, &["export", "--out", out.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{err}");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("run_metadata.json")).expect("metadata"),
    )
    .expect("JSON");
    let s = &meta["suites"]["s"];
    assert_eq!(s["cases"], 3);
    assert_eq!(s["passed"], 2);
    assert_eq!(s["load_errors"][0]["line"], 3);
    assert_eq!(
        meta["config"]["content"]["suites"]["s"]["gates"]["pass_rate"],
        0.5
    );
}
