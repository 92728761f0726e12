//! Exactly once: `vlmtest run` against a slow loopback endpoint, killed with SIGKILL again and
//! again at seeded random moments, ends with every verdict once; every answer the endpoint had
//! finished before a kill was already cached: an answer is kept the moment it arrives, not when
//! its batch is done.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vlmtest::judge::stub::{StubConfig, StubServer};

const BIN: &str = env!("CARGO_BIN_EXE_vlmtest");
const CASES: usize = 500;
const KILLS: usize = 20;
const SLACK: Duration = Duration::from_millis(80);

#[test]
fn killed_runs_resume_and_each_answer_is_asked_about_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join("cases")).expect("mkdir");
    let rows: String = (0..CASES)
        .map(|i| {
            format!(
                "{{\"id\": \"q{i:03}\", \"conversations\": [{{\"role\": \"user\", \"content\": \"Question {i}?\"}}, {{\"role\": \"assistant\", \"content\": \"an answer\"}}], \"metadata\": {{\"category\": \"c\"}}}}\n"
            )
        })
        .collect();
    std::fs::write(root.join("cases/s.jsonl"), rows).expect("rows");
    std::fs::write(
        root.join("vlmtest.toml"),
        "[model]\nbatch_size = 8\n[suites.s]\nrow_scorers = [\"token_f1\"]\n",
    )
    .expect("config");
    // 10–210 ms per answer, fixed by the request: the answers of one batch finish apart.
    let server = StubServer::start(StubConfig {
        latency: Duration::from_millis(10),
        latency_spread: Duration::from_millis(200),
        content: Some(Arc::new(|_| "an answer".to_owned())),
        ..StubConfig::default()
    })
    .expect("stub server");
    let model = format!("openai:{}#stub", server.url());
    let run = || {
        Command::new(BIN)
            .args(["run", "--model", &model, "--format", "json"])
            .current_dir(root)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VLMTEST_ROOT", root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts")
    };
    let mut rng = fastrand::Rng::with_seed(20_261_208);
    let mut kills = 0;
    let mut required = 0;
    let started = Instant::now();
    while kills < KILLS {
        assert!(started.elapsed() < Duration::from_secs(120), "too slow");
        let spawned = Instant::now();
        let mut child = run();
        std::thread::sleep(Duration::from_millis(rng.u64(40..200)));
        if child.try_wait().expect("wait").is_some() {
            break; // it finished before the kill: nothing left to interrupt
        }
        let at = Instant::now();
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        kills += 1;
        // Let the endpoint finish the requests the dead process left in flight (their replies go
        // nowhere), so the next process's window holds only its own answers.
        std::thread::sleep(Duration::from_millis(250));
        // Every answer the endpoint finished for this process well before the kill (SLACK: time
        // for the client to read it and write its file) is in the cache. Before, answers were
        // cached per batch: a kill lost the finished answers of the unfinished batch.
        required += server
            .log
            .answered_at
            .lock()
            .expect("log")
            .iter()
            .filter(|t| **t >= spawned && **t + SLACK < at)
            .count();
        let cached = cached_answers(&root.join("target/vlmtest/answers"));
        assert!(
            cached >= required,
            "kill {kills}: {required} answers finished while their process lived, {cached} cached"
        );
    }
    let status = run().wait().expect("the last run");
    assert_eq!(status.code(), Some(0));

    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("target/vlmtest/report-s.json")).expect("report"),
    )
    .expect("report JSON");
    let verdicts = report["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), CASES);
    let mut names: Vec<&str> = verdicts.iter().filter_map(|v| v["name"].as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASES, "every case once");

    let answered = server
        .log
        .answered
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    let requests = server
        .log
        .requests
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    eprintln!("{CASES} cases, {kills} kills: {answered} answers sent, {requests} requests seen");
    // What a kill may still cost: the requests in flight (at most a batch, 8), never answered
    // to a living client.
    assert!(
        requests <= CASES + kills * 8,
        "{requests} requests for {CASES} cases and {kills} kills"
    );
}

/// Answer files in the cache (temporary files of a killed write left out).
fn cached_answers(dir: &std::path::Path) -> usize {
    let Ok(models) = std::fs::read_dir(dir) else {
        return 0;
    };
    models
        .filter_map(Result::ok)
        .filter_map(|m| std::fs::read_dir(m.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
        .count()
}
