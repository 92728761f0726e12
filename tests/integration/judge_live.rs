//! CI's live judge (issue 4): the real `vlmtest serve` binary on the default model (SmolLM2-135M)
//! over loopback, and the real `vlmtest run` on the `judge_smoke` suite of `fixtures/judge/` with
//! the judge live (cache off, so every judge call goes over HTTP). The answers under test are
//! recorded (a replay file in a temporary folder), so the deterministic scores are fixed; the
//! judge's grades are SmolLM2's, which are parseable under `response_format` but not meaningful,
//! so the suite's judge thresholds are 0 and only a judge error could fail a case on them.
//! Everything the run writes goes to a temporary folder; the server is killed when its guard drops,
//! also when an assertion fails.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use vlmtest::model::fetch::ensure_default_model;
use vlmtest::report::{self, Report};
use vlmtest::score::ScoreStatus;

const BIN: &str = env!("CARGO_BIN_EXE_vlmtest");
const RUBRICS: [&str; 3] = ["judge.correctness", "judge.faithfulness", "judge.relevancy"];
const RIGHT: &str = "judge_smoke::torque::drain_plug";
const WRONG: &str = "judge_smoke::torque::wheel_bolts";

/// A child process that is killed and reaped when dropped (panics included).
struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn spawn(cmd: &mut Command, log: &Path) -> Self {
        let out = File::create(log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Self {
            child,
            log: log.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the exit, killing the process after `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `GET path` over a fresh connection; the status code, or `None` if nothing answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Starts `vlmtest serve` on the default model and waits until `/health` answers 200.
fn start_server(dir: &Path) -> (ChildGuard, u16) {
    let model = ensure_default_model().expect("the default model (cargo run -- fetch-model)");
    let port = free_port();
    let mut guard = ChildGuard::spawn(
        Command::new(BIN)
            .arg("serve")
            .arg("--model")
            .arg(&model)
            .args(["--name", "smollm2", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--max-tokens", "80"])
            // One compute thread: on a busy 2-core machine (CI runs the other tests beside this
            // one) two rayon threads make candle's decode collapse (FACTS.md); measured here,
            // 3 judge calls took 26 s with one thread and 44 s with two at load average 5-6.
            .env("RAYON_NUM_THREADS", "1"),
        &dir.join("serve.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = guard.child.try_wait().expect("try_wait") {
            panic!("vlmtest serve exited early ({status}):\n{}", guard.log());
        }
        if http_status(port, "/health") == Some(200) {
            return (guard, port);
        }
        assert!(
            Instant::now() < deadline,
            "vlmtest serve did not answer /health within 300 s:\n{}",
            guard.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The judge scores of every verdict, by case: scorer name → status.
fn judge_scores(r: &Report) -> BTreeMap<String, Vec<(String, ScoreStatus)>> {
    r.verdicts
        .iter()
        .map(|v| {
            let mut s: Vec<(String, ScoreStatus)> = v
                .scores
                .iter()
                .filter(|s| s.scorer.starts_with("judge."))
                .map(|s| (s.scorer.clone(), s.status))
                .collect();
            s.sort_by(|a, b| a.0.cmp(&b.0));
            (v.name.clone(), s)
        })
        .collect()
}

#[test]
fn judge_smoke_runs_live_against_vlmtest_serve_on_the_default_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/judge");
    let answers = dir.path().join("answers.jsonl");
    std::fs::write(
        &answers,
        format!(
            "{}\n{}\n",
            serde_json::json!({"name": RIGHT, "answer": "35 Nm, and replace the sealing washer."}),
            serde_json::json!({"name": WRONG, "answer": "The wheel bolts need 80 Nm."}),
        ),
    )
    .expect("write answers");

    let (server, port) = start_server(dir.path());
    let mut run = ChildGuard::spawn(
        Command::new(BIN)
            .args(["run", "--suite", "judge_smoke", "--model"])
            .arg(format!("replay:{}", answers.display()))
            .env("VLMTEST_ROOT", &root)
            .env("VLMTEST_JUDGE_URL", format!("http://127.0.0.1:{port}/v1"))
            .env("VLMTEST_JUDGE_MODEL", "smollm2")
            .env("VLMTEST_JUDGE_CACHE", "off")
            .env("CARGO_TARGET_DIR", dir.path())
            .env_remove("VLMTEST_ANSWER_CACHE")
            .env_remove("VLMTEST_MAX_SAMPLES"),
        &dir.path().join("run.log"),
    );
    let status = run.wait(Duration::from_secs(1500));
    let log = run.log();
    // 1 = a case failed: the wrong torque fails its numeric check; anything else is a bug here.
    assert_eq!(status.code(), Some(1), "vlmtest run:\n{log}");
    assert_eq!(
        http_status(port, "/health"),
        Some(200),
        "the server died during the run"
    );

    let report = report::read_json(&dir.path().join("vlmtest/report-judge_smoke.json"))
        .unwrap_or_else(|e| panic!("{e}\n{log}"));

    // Every judge expectation ended scored or judge-error: none lost, none duplicated.
    let judged = judge_scores(&report);
    assert_eq!(judged.keys().collect::<Vec<_>>(), [RIGHT, WRONG], "{log}");
    for (case, scores) in &judged {
        let names: Vec<&str> = scores.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, RUBRICS, "{case}");
        for (name, status) in scores {
            assert!(
                matches!(status, ScoreStatus::Scored | ScoreStatus::ScorerError),
                "{case} {name}: {status:?}"
            );
        }
    }
    // Under `response_format` SmolLM2 always answers parseable JSON: no judge errors.
    let errors: Vec<String> = report
        .verdicts
        .iter()
        .flat_map(|v| &v.scores)
        .filter(|s| s.status == ScoreStatus::ScorerError)
        .map(|s| format!("{}: {}", s.scorer, s.detail))
        .collect();
    assert!(errors.is_empty(), "judge errors: {errors:#?}");

    // Judge scores beside the deterministic one, each judge score with its live exchange.
    for v in &report.verdicts {
        let numeric = v.scores.iter().find(|s| s.scorer == "numeric").unwrap();
        assert_eq!(numeric.passed, v.name == RIGHT, "{}", v.name);
        for s in v.scores.iter().filter(|s| s.scorer.starts_with("judge.")) {
            let value = s.value.expect("a judge score");
            assert!((0.0..=1.0).contains(&value), "{}: {value}", s.scorer);
            let exchange = s.data["exchange"].as_array().expect("exchange");
            assert!(!exchange.is_empty() && exchange.iter().all(|e| e["cached"] == false));
        }
    }
    let failing: Vec<&str> = report
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(failing, [WRONG]);
    assert_eq!(report.scorers["numeric"].scored, 2);
    for name in RUBRICS {
        let s = &report.scorers[name];
        assert_eq!((s.scored, s.errors), (2, 0), "{name}");
    }

    // The judge's counters are in the report and the printed summary.
    let j = report.judge.as_ref().expect("judge stats in the report");
    assert_eq!(j.judge_model, "smollm2");
    assert_eq!((j.items, j.scored, j.skipped, j.errors), (6, 6, 0, 0));
    assert_eq!(j.cache_hits, 0);
    assert_eq!(j.http_calls, 6 + j.repairs + j.retries, "{j:?}");
    assert!(j.prompt_tokens > 0 && j.completion_tokens > 0, "{j:?}");
    assert!(
        log.contains("judge judge_smoke (smollm2): 6 items: 6 scored, 0 skipped, 0 errors"),
        "{log}"
    );
    assert!(log.contains(&format!("FAIL {WRONG}  numeric 0.00  judge.correctness ")));

    // The guard stops the server.
    drop(server);
    assert_eq!(http_status(port, "/health"), None);
}
