//! The worked examples of docs/judge.md, run by the real `vlmtest run` against the in-repo stub
//! judge (`vlmtest::judge::stub`, deterministic grading rules): the documented output lines, the
//! judge counters in the report and the summary, and a snapshot that stays the same whether the
//! judge answered live or from the cache.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use vlmtest::judge::stub::{StubConfig, StubServer};
use vlmtest::report::{self, snapshot, Report};

const BIN: &str = env!("CARGO_BIN_EXE_vlmtest");

/// The case lines docs/judge.md shows.
const LINES: [&str; 4] = [
    "PASS judge_examples::correctness::drain_plug  numeric 1.00  judge.correctness 0.96",
    "FAIL judge_examples::correctness::wheel_bolts  numeric 0.00  judge.correctness 0.04",
    "FAIL judge_examples::relevancy::wheel_bolts  judge.relevancy 0.50",
    "FAIL judge_examples::faithfulness::coolant  judge.faithfulness 0.50",
];

fn run(url: &str, out: &Path) -> (Output, Report) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/judge");
    let output = Command::new(BIN)
        .args(["run", "--suite", "judge_examples"])
        .env("VLMTEST_ROOT", &root)
        .env("VLMTEST_JUDGE_URL", url)
        .env("VLMTEST_JUDGE_MODEL", "stub-judge")
        .env("VLMTEST_JUDGE_CACHE", "use")
        .env("CARGO_TARGET_DIR", out)
        .env_remove("VLMTEST_ANSWER_CACHE")
        .env_remove("VLMTEST_MODEL")
        .output()
        .unwrap();
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = report::read_json(&out.join("vlmtest/report-judge_examples.json"))
        .unwrap_or_else(|e| panic!("{e}\n{log}"));
    (output, report)
}

#[test]
fn worked_examples_score_as_documented_and_the_rerun_comes_from_the_cache() {
    let server = StubServer::start(StubConfig::default()).unwrap();
    let out = tempfile::tempdir().unwrap();

    let (first, live) = run(&server.url(), out.path());
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(
        first.status.code(),
        Some(1),
        "three examples fail:\n{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().take(4).collect();
    assert_eq!(lines, LINES);
    assert!(
        stdout.contains("judge judge_examples (stub-judge): 4 items: 4 scored, 0 skipped, 0 errors, 0 repaired; 4 HTTP calls, 0 retries, 0 cache hits;"),
        "{stdout}"
    );
    assert_eq!(server.log.requests.load(Ordering::Relaxed), 4);
    let j = live.judge.clone().expect("judge stats");
    assert_eq!(
        (j.items, j.scored, j.http_calls, j.cache_hits),
        (4, 4, 4, 0)
    );
    assert!(j.prompt_tokens > 0 && j.completion_tokens > 0);

    // The judge scores sit beside the deterministic ones, with the judge's reason and verdict.
    let drain = &live.verdicts[0];
    let judged = drain
        .scores
        .iter()
        .find(|s| s.scorer == "judge.correctness")
        .unwrap();
    assert_eq!(judged.detail, "5/5: the answer states the reference");
    assert!((judged.data["detail"]["weighted_score"].as_f64().unwrap() - 4.8235).abs() < 1e-3);
    assert_eq!(judged.data["verdict"]["score"], 5);
    assert_eq!(live.scorers["numeric"].scored, 2);
    assert_eq!(live.scorers["judge.relevancy"].mean, Some(0.5));

    // Re-run: every judge answer comes from the cache, nothing reaches the server, and the
    // scores and the snapshot view are the same; only the volatile counters differ.
    let (second, cached) = run(&server.url(), out.path());
    let log2 = format!(
        "{}{}",
        String::from_utf8_lossy(&second.stdout),
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(second.status.code(), Some(1), "{log2}");
    assert_eq!(server.log.requests.load(Ordering::Relaxed), 4, "{log2}");
    let j = cached.judge.clone().expect("judge stats");
    assert_eq!(
        (
            j.items,
            j.scored,
            j.http_calls,
            j.cache_hits,
            j.prompt_tokens
        ),
        (4, 4, 0, 4, 0)
    );
    assert!(String::from_utf8_lossy(&second.stdout)
        .contains("0 HTTP calls, 0 retries, 4 cache hits; 0 prompt + 0 completion tokens"));
    let scores = |r: &Report| -> Vec<Option<f64>> {
        r.verdicts
            .iter()
            .flat_map(|v| v.scores.iter().map(|s| s.value))
            .collect()
    };
    assert_eq!(scores(&live), scores(&cached));
    assert_eq!(snapshot::view(&live), snapshot::view(&cached));
    insta::assert_json_snapshot!("judge_examples_report", snapshot::view(&cached));
}

#[test]
fn ignored_cases_are_judged_but_stay_out_of_the_report_and_its_counters() {
    use vlmtest::case::Case;
    use vlmtest::session::{Overrides, Session};
    let server = StubServer::start(StubConfig::default()).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/judge");
    let root = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| std::fs::copy(from, to).unwrap();
    std::fs::create_dir_all(root.path().join("probes")).unwrap();
    std::fs::create_dir_all(root.path().join("judges")).unwrap();
    copy(
        &fixtures.join("probes/judge_examples.toml"),
        &root.path().join("probes/judge_examples.toml"),
    );
    copy(
        &fixtures.join("examples-answers.jsonl"),
        &root.path().join("examples-answers.jsonl"),
    );
    for rubric in ["correctness", "relevancy", "faithfulness"] {
        copy(
            &fixtures.join(format!("judges/{rubric}.toml")),
            &root.path().join(format!("judges/{rubric}.toml")),
        );
    }
    std::fs::write(
        root.path().join("vlmtest.toml"),
        format!(
            "[judge]\nurl = \"{}\"\nmodel = \"stub-judge\"\ncache = \"off\"\n\n[suites.judge_examples]\nmodel = \"replay:examples-answers.jsonl\"\nprompt = \"{{question}}\"\n",
            server.url()
        ),
    )
    .unwrap();
    let session = Session::open(root.path(), &Overrides::default()).unwrap();
    let suite = session.suite("judge_examples").unwrap();
    assert!(suite.errors.is_empty(), "{:?}", suite.errors);
    let all: Vec<&Case> = suite.cases.iter().collect();
    assert_eq!(all.iter().filter(|c| c.ignored).count(), 1);
    let eval = session.evaluate(&all, false);
    // The ignored case was judged (the stub got 5 requests) …
    assert_eq!(server.log.requests.load(Ordering::Relaxed), 5);
    let ignored = &eval.verdicts["judge_examples::correctness::ignored"];
    assert_eq!(ignored.scores[0].scorer, "judge.correctness");
    assert!(ignored.passed);
    // … but the report and its counters hold the 4 cases it reports on.
    let report = session.report(suite, &eval);
    assert_eq!(report.verdicts.len(), 4);
    let j = report.judge.expect("judge stats");
    assert_eq!((j.items, j.scored, j.http_calls), (4, 4, 4));
}
