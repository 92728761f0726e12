//! The judge against a fault-injecting OpenAI-compatible server on 127.0.0.1: every case ends
//! scored or judge-error, none lost, none duplicated; retries, Retry-After, the repair round,
//! the cache (use, replay, refresh) and key hygiene.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vlmtest::case::{Case, CaseId, Message, Origin, Role};
use vlmtest::judge::stub::{random_plan, Fault, StubConfig, StubServer};
use vlmtest::judge::{CacheMode, JudgeItem, JudgeRunner, JudgeSettings};
use vlmtest::score::{Score, ScoreStatus};

fn judges_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("judges")
}

fn case(i: usize, question: &str, reference: &str, context: Option<&str>) -> Case {
    Case {
        id: CaseId::new("judge", "t", &format!("c{i:03}")),
        tags: vec![],
        messages: vec![Message::text(Role::User, question)],
        reference: Some(reference.to_owned()),
        context: context.map(str::to_owned),
        expect: vec![],
        metadata: BTreeMap::new(),
        ignored: false,
        origin: Origin {
            file: PathBuf::from("cases/judge.jsonl"),
            line: Some(i + 1),
        },
    }
}

/// `n` cases, half answered right and half wrong.
fn cases(n: usize) -> (Vec<Case>, Vec<String>) {
    let mut cs = Vec::new();
    let mut answers = Vec::new();
    for i in 0..n {
        let nm = 40 + i;
        cs.push(case(
            i,
            &format!("What is the torque for bolt {i}?"),
            &format!("{nm} Nm"),
            Some(&format!("Tighten bolt {i} to {nm} Nm.")),
        ));
        answers.push(if i % 2 == 0 {
            format!("The torque for bolt {i} is {nm} Nm.")
        } else {
            format!("The torque for bolt {i} is {} Nm. Paint is blue.", nm + 7)
        });
    }
    (cs, answers)
}

fn items<'a>(cs: &'a [Case], answers: &'a [String], rubrics: &[&'a str]) -> Vec<JudgeItem<'a>> {
    let mut out = Vec::new();
    for (c, a) in cs.iter().zip(answers) {
        for r in rubrics {
            out.push(JudgeItem {
                case: c,
                answer: a,
                rubric: r,
                threshold: None,
            });
        }
    }
    out
}

fn settings(url: String) -> JudgeSettings {
    JudgeSettings {
        url,
        model: "stub-judge".into(),
        concurrency: 8,
        timeout_s: 0.5,
        max_retries: 3,
        backoff_s: 0.01,
        max_backoff_s: 0.05,
        ..JudgeSettings::default()
    }
}

fn assert_one_per_item(items: &[JudgeItem<'_>], scores: &[Score]) {
    assert_eq!(scores.len(), items.len(), "no item lost or duplicated");
    for (it, s) in items.iter().zip(scores) {
        assert_eq!(s.scorer, format!("judge.{}", it.rubric));
        assert!(
            matches!(s.status, ScoreStatus::Scored | ScoreStatus::ScorerError),
            "{s:?}"
        );
        if s.status == ScoreStatus::ScorerError {
            assert!(!s.passed, "a judge error never passes");
            assert!(s.value.is_none());
        }
    }
}

#[test]
fn without_faults_right_answers_pass_and_wrong_ones_fail() {
    let server = StubServer::start(StubConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = JudgeRunner::new(settings(server.url()), &judges_dir(), dir.path()).unwrap();
    let (cs, ans) = cases(6);
    let its = items(&cs, &ans, &["correctness", "relevancy", "faithfulness"]);
    let scores = runner.score(&its);
    assert_one_per_item(&its, &scores);
    for (it, s) in its.iter().zip(&scores) {
        assert_eq!(s.status, ScoreStatus::Scored, "{s:?}");
        let right = it.answer.ends_with(" Nm.");
        match it.rubric {
            // Logprob-weighted: 0.7 on 5 and 0.15 on 4 (6 is out of range) → 4.82 → 0.956.
            "correctness" if right => assert!(
                (s.value.unwrap() - (0.7 * 5.0 + 0.15 * 4.0) / 0.85 / 4.0 + 0.25).abs() < 1e-9,
                "{s:?}"
            ),
            "correctness" => assert!(s.value.unwrap() < 0.2, "{s:?}"),
            "relevancy" if right => assert_eq!(s.value, Some(1.0)),
            "relevancy" => assert_eq!(s.value, Some(0.5), "{s:?}"),
            "faithfulness" if right => assert_eq!(s.value, Some(1.0)),
            _ => assert_eq!(s.value, Some(0.5), "{s:?}"),
        }
        assert_eq!(s.passed, right, "{s:?}");
        assert!(s.data["reason"].is_string() && s.data["exchange"][0]["reply"].is_string());
    }
    let st = runner.stats();
    assert_eq!(
        (st.items, st.scored, st.errors, st.http_calls),
        (18, 18, 0, 18)
    );
    assert!(st.prompt_tokens > 0 && st.completion_tokens > 0);
}

#[test]
fn every_case_ends_scored_or_judge_error_under_faults() {
    let faults = vec![
        Fault::ServerError,
        Fault::RateLimited,
        Fault::Stall,
        Fault::Drop,
        Fault::MalformedBody,
        Fault::TruncatedBody,
        Fault::ProseContent,
        Fault::TruncatedContent,
    ];
    let config = StubConfig {
        plan: random_plan(faults, 0.6, 3),
        stall: Duration::from_secs(2),
        retry_after_s: 0.02,
        lifetime: Duration::from_secs(120),
        ..StubConfig::default()
    };
    let server = StubServer::start(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = JudgeRunner::new(settings(server.url()), &judges_dir(), dir.path()).unwrap();
    let (cs, ans) = cases(30);
    let its = items(&cs, &ans, &["correctness", "relevancy", "faithfulness"]);
    let scores = runner.score(&its);
    assert_one_per_item(&its, &scores);
    let st = runner.stats();
    assert_eq!(st.items, 90);
    assert_eq!(st.scored + st.errors + st.skipped, 90);
    assert!(st.retries > 0 && st.repairs > 0, "{st:?}");
    // Content faults that hit both the reply and its repair end as judge errors, not passes.
    assert!(st.errors > 0, "{st:?}");
    assert!(st.scored > 45, "{st:?}");
    // Each distinct body was sent at most 1 + max_retries times: retries are bounded, no loop.
    let per_body = server.log.by_body.lock().unwrap();
    assert!(per_body.values().all(|n| *n <= 4), "{per_body:?}");
    let faults = server.log.by_fault.lock().unwrap();
    for f in [
        "ServerError",
        "RateLimited",
        "Stall",
        "Drop",
        "MalformedBody",
        "TruncatedBody",
        "ProseContent",
        "TruncatedContent",
    ] {
        assert!(
            faults.get(f).copied().unwrap_or(0) > 0,
            "fault {f} never injected: {faults:?}"
        );
    }
}

#[test]
fn retry_after_is_honoured() {
    let config = StubConfig {
        plan: Arc::new(|_, _, attempt| {
            if attempt == 0 {
                Fault::RateLimited
            } else {
                Fault::None
            }
        }),
        retry_after_s: 0.4,
        ..StubConfig::default()
    };
    let server = StubServer::start(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = JudgeSettings {
        backoff_s: 0.0,
        max_backoff_s: 0.0,
        ..settings(server.url())
    };
    let runner = JudgeRunner::new(s, &judges_dir(), dir.path()).unwrap();
    let (cs, ans) = cases(1);
    let start = Instant::now();
    let scores = runner.score(&items(&cs, &ans, &["correctness"]));
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(scores[0].status, ScoreStatus::Scored);
    assert_eq!((runner.stats().retries, runner.stats().http_calls), (1, 2));
}

#[test]
fn a_reply_in_prose_is_repaired_once() {
    // Only first-round requests (system + user) get prose; the repair request is answered right.
    let config = StubConfig {
        plan: Arc::new(|req: &Value, _, _| {
            if req["messages"].as_array().map_or(0, Vec::len) == 2 {
                Fault::ProseContent
            } else {
                Fault::None
            }
        }),
        ..StubConfig::default()
    };
    let server = StubServer::start(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = JudgeRunner::new(settings(server.url()), &judges_dir(), dir.path()).unwrap();
    let (cs, ans) = cases(4);
    let scores = runner.score(&items(&cs, &ans, &["correctness"]));
    for s in &scores {
        assert_eq!(s.status, ScoreStatus::Scored, "{s:?}");
        assert_eq!(s.data["repaired"], true);
        let second = &s.data["exchange"][1]["messages"];
        assert!(
            second[3]["content"]
                .as_str()
                .unwrap()
                .contains("starts with `I think"),
            "{second}"
        );
    }
    assert_eq!(runner.stats().repairs, 4);
}

#[test]
fn client_errors_are_final_and_the_key_never_leaks() {
    let key_var = "VLMTEST_TEST_JUDGE_KEY_7F3A";
    let key = "sk-test-7f3a-SECRET-abcdef";
    // SAFETY of set_var: this variable name is used by this test only.
    std::env::set_var(key_var, key);
    let config = StubConfig {
        plan: Arc::new(|_, _, _| Fault::Unauthorized),
        ..StubConfig::default()
    };
    let server = StubServer::start(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = JudgeSettings {
        api_key_env: Some(key_var.into()),
        ..settings(server.url())
    };
    let runner = JudgeRunner::new(s, &judges_dir(), dir.path()).unwrap();
    let (cs, ans) = cases(3);
    let its = items(&cs, &ans, &["correctness"]);
    let scores = runner.score(&its);
    assert_one_per_item(&its, &scores);
    let st = runner.stats();
    assert_eq!(
        (st.errors, st.http_calls, st.retries),
        (3, 3, 0),
        "401 is not retried"
    );
    assert!(
        server
            .log
            .auth
            .lock()
            .unwrap()
            .iter()
            .all(|a| a == &format!("Bearer {key}")),
        "the key was sent"
    );
    for s in &scores {
        assert!(s.detail.contains("HTTP 401"), "{}", s.detail);
        assert!(s.detail.contains("[redacted]"), "{}", s.detail);
    }
    let everything = format!(
        "{}{}{}",
        serde_json::to_string(&scores).unwrap(),
        serde_json::to_string(&st).unwrap(),
        std::fs::read_to_string(dir.path().join("judge.jsonl")).unwrap_or_default()
    );
    assert!(
        !everything.contains(key) && !everything.contains("SECRET"),
        "key leaked"
    );
}

#[test]
fn a_cached_rerun_makes_no_calls_replay_needs_the_cache_and_refresh_calls_again() {
    let server = StubServer::start(StubConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cs, ans) = cases(5);
    let its = items(&cs, &ans, &["correctness", "relevancy"]);
    let first = JudgeRunner::new(settings(server.url()), &judges_dir(), dir.path()).unwrap();
    let a = first.score(&its);
    assert_eq!(first.stats().http_calls, 10);
    drop(first);
    let before = server
        .log
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);

    // Replay the committed file against a dead endpoint: no HTTP at all, same scores.
    let replay = JudgeSettings {
        cache: CacheMode::Replay,
        ..settings("http://127.0.0.1:9/v1".into())
    };
    let again = JudgeRunner::new(replay.clone(), &judges_dir(), dir.path()).unwrap();
    let b = again.score(&its);
    let values = |v: &[Score]| v.iter().map(|s| s.value).collect::<Vec<_>>();
    assert_eq!(values(&a), values(&b));
    assert_eq!(
        (again.stats().http_calls, again.stats().cache_hits),
        (0, 10)
    );
    assert_eq!(
        server
            .log
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        before
    );

    // Replay without the cache entry: a judge error, still no call.
    let empty = tempfile::tempdir().unwrap();
    let cold = JudgeRunner::new(replay, &judges_dir(), empty.path()).unwrap();
    let c = cold.score(&its[..1]);
    assert_eq!(c[0].status, ScoreStatus::ScorerError);
    assert!(c[0].detail.contains("replay"), "{}", c[0].detail);
    assert_eq!(cold.stats().http_calls, 0);
    assert!(
        !empty.path().join("judge.jsonl").exists(),
        "replay never writes"
    );

    // Refresh: live calls even though the cache has the answers.
    let fresh = JudgeRunner::new(
        JudgeSettings {
            cache: CacheMode::Refresh,
            ..settings(server.url())
        },
        &judges_dir(),
        dir.path(),
    )
    .unwrap();
    fresh.score(&its);
    assert_eq!(
        (fresh.stats().http_calls, fresh.stats().cache_hits),
        (10, 0)
    );
}

#[test]
fn missing_fields_skip_and_unknown_rubrics_are_judge_errors() {
    let server = StubServer::start(StubConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = JudgeRunner::new(settings(server.url()), &judges_dir(), dir.path()).unwrap();
    let mut c = case(0, "Q?", "r", None);
    c.reference = None;
    let its = [
        JudgeItem {
            case: &c,
            answer: "a",
            rubric: "correctness",
            threshold: None,
        },
        JudgeItem {
            case: &c,
            answer: "a",
            rubric: "faithfulness",
            threshold: None,
        },
        JudgeItem {
            case: &c,
            answer: "a",
            rubric: "nonesuch",
            threshold: Some(0.9),
        },
    ];
    let s = runner.score(&its);
    assert_eq!(s[0].status, ScoreStatus::Skipped);
    assert!(s[0].detail.contains("reference"), "{}", s[0].detail);
    assert_eq!(s[1].status, ScoreStatus::Skipped);
    assert_eq!(s[2].status, ScoreStatus::ScorerError);
    assert!(
        s[2].detail.contains("correctness"),
        "lists the known rubrics: {}",
        s[2].detail
    );
    assert_eq!(runner.stats().http_calls, 0);
}

#[test]
fn evaluation_steps_are_generated_once_and_frozen() {
    use vlmtest::judge::rubric::Rubric;
    use vlmtest::judge::steps;
    let server = StubServer::start(StubConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clarity.toml");
    std::fs::write(
        &path,
        "metric = \"rubric\"\ncriteria = \"Is the answer clear? Does it name the unit?\"\nfields = [\"input\", \"answer\"]\n",
    )
    .unwrap();
    let rubric = Rubric::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    let got = steps::generate(&settings(server.url()), &rubric).unwrap();
    assert_eq!(
        got,
        ["Check: Is the answer clear", "Check: Does it name the unit"]
    );
    steps::freeze(&path, &got, "stub-judge", false).unwrap();
    let frozen = vlmtest::judge::rubric::load_dir(dir.path()).unwrap();
    assert_eq!(frozen["clarity"].evaluation_steps, got);
}

/// A port nothing listens on (bound, then released).
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1")
}

/// An endpoint that is down from the start costs a few failed calls, not retries for every
/// item: the breaker stops calling it, names it and the cause, and the rest are judge errors.
#[test]
fn a_dead_endpoint_trips_the_breaker_and_the_rest_make_no_call() {
    let url = dead_url();
    let dir = tempfile::tempdir().unwrap();
    let s = JudgeSettings {
        concurrency: 2,
        max_consecutive_failures: 3,
        ..settings(url.clone())
    };
    let runner = JudgeRunner::new(s, &judges_dir(), dir.path()).unwrap();
    let (cs, ans) = cases(20);
    let its = items(&cs, &ans, &["correctness", "relevancy"]);
    let t = Instant::now();
    let scores = runner.score(&its);
    assert_one_per_item(&its, &scores);
    assert!(scores.iter().all(|s| s.status == ScoreStatus::ScorerError));
    let st = runner.stats();
    assert_eq!(st.errors, 40);
    // At most the 3 failures that trip it plus the calls already in flight, each with its
    // retries: (3 + 2) × (1 + 3), against 40 × 4 = 160 without the breaker.
    assert!(st.http_calls <= 20, "{st:?}");
    let why = st.stopped.clone().expect("the breaker tripped");
    assert!(
        why.contains(&url) && why.contains("3 calls in a row failed"),
        "{why}"
    );
    let late = scores.last().unwrap();
    assert!(late.detail.contains("stopped"), "{}", late.detail);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn a_call_budget_stops_the_calls_once_spent() {
    let server = StubServer::start(StubConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = JudgeSettings {
        concurrency: 1,
        max_calls: Some(4),
        ..settings(server.url())
    };
    let runner = JudgeRunner::new(s, &judges_dir(), dir.path()).unwrap();
    let (cs, ans) = cases(10);
    let scores = runner.score(&items(&cs, &ans, &["correctness"]));
    let st = runner.stats();
    assert_eq!((st.http_calls, st.scored, st.errors), (4, 4, 6), "{st:?}");
    assert!(st.stopped.unwrap().contains("max_calls = 4"));
    assert!(
        scores[9].detail.contains("max_calls = 4"),
        "{}",
        scores[9].detail
    );
}

/// A reply that breaks the rubric's schema (even after the repair round) is not cached: the
/// next run asks again instead of replaying the error with zero calls.
#[test]
fn an_unparseable_reply_is_not_cached_and_is_asked_again_next_run() {
    let prose = StubServer::start(StubConfig {
        plan: Arc::new(|_, _, _| Fault::ProseContent),
        ..StubConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cs, ans) = cases(3);
    let its = items(&cs, &ans, &["correctness"]);
    let first = JudgeRunner::new(settings(prose.url()), &judges_dir(), dir.path()).unwrap();
    let a = first.score(&its);
    assert!(a.iter().all(|s| s.status == ScoreStatus::ScorerError));
    assert_eq!(
        first.stats().http_calls,
        6,
        "a reply and its repair per item"
    );
    drop(first);

    let good = StubServer::start(StubConfig::default()).unwrap();
    let second = JudgeRunner::new(settings(good.url()), &judges_dir(), dir.path()).unwrap();
    let b = second.score(&its);
    assert!(b.iter().all(|s| s.status == ScoreStatus::Scored), "{b:?}");
    let st = second.stats();
    assert_eq!((st.http_calls, st.cache_hits), (3, 0), "{st:?}");
    drop(second);
    // The good replies are kept: a third run makes no call.
    let third = JudgeRunner::new(settings(good.url()), &judges_dir(), dir.path()).unwrap();
    third.score(&its);
    assert_eq!((third.stats().http_calls, third.stats().cache_hits), (0, 3));
}
