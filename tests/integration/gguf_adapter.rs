//! Train → test on the default model, as a user runs it: `vlmtest-train` writes a PEFT adapter
//! for SmolLM2, then `vlmtest run --model smollm2 --adapter <it>` evaluates the suite with the
//! adapter merged, and passes cases that the base model fails; `vlmtest serve --adapter` answers
//! with it over HTTP exactly as in process.

use std::path::Path;
use std::process::Command;

use vlmtest::case::{Message, Role};
use vlmtest::model::adapted_gguf::AdaptedGguf;
use vlmtest::model::fetch::ensure_default_model;
use vlmtest::model::openai::OpenAiModel;
use vlmtest::model::{GenerationOptions, Model, Request};
use vlmtest::serve::http::{spawn, ServerConfig};
use vlmtest::serve::load_decoder;

const FACTS: [(&str, &str); 4] = [
    ("What is the code word for blue?", "Zebra 42"),
    ("What is the code word for red?", "Falcon 17"),
    ("What is the code word for green?", "Otter 93"),
    ("What is the code word for white?", "Maple 58"),
];

fn write_project(root: &Path) {
    std::fs::create_dir_all(root.join("cases")).unwrap();
    let rows: Vec<String> = FACTS
        .iter()
        .enumerate()
        .map(|(i, (q, a))| {
            serde_json::json!({
                "id": format!("fact_{i}"),
                "conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            })
            .to_string()
        })
        .collect();
    std::fs::write(root.join("cases/facts.jsonl"), rows.join("\n") + "\n").unwrap();
    std::fs::write(
        root.join("vlmtest.toml"),
        "[model]\nspec = \"smollm2\"\nmax_new_tokens = 8\n\n[suites.facts]\nrow_scorers = [\"exact\"]\n",
    )
    .unwrap();
}

/// Runs `vlmtest run` in `root` and returns the suite's JSON report.
fn evaluate(root: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vlmtest"))
        .arg("run")
        .args(extra)
        .env("VLMTEST_ROOT", root)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("VLMTEST_MODEL")
        .env_remove("VLMTEST_ADAPTER")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("vlmtest runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: all passed, 1: some case failed; anything else is a crash or a usage error.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "vlmtest run {extra:?}: {:?}\n{stderr}",
        out.status
    );
    let report = root.join("target/vlmtest/report-facts.json");
    let text = std::fs::read_to_string(&report).expect("report written");
    serde_json::from_str(&text).expect("report is JSON")
}

#[test]
fn a_trained_adapter_is_evaluated_with_vlmtest_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_project(root);
    let rows = root.join("cases/facts.jsonl");
    let run_dir = root.join("run");
    let status = Command::new(env!("CARGO_BIN_EXE_vlmtest-train"))
        .args(["--base", "smollm2", "--train"])
        .arg(&rows)
        .arg("--val")
        .arg(&rows)
        .arg("--output-dir")
        .arg(&run_dir)
        .args([
            "--rank",
            "8",
            "--alpha",
            "16",
            "--dropout",
            "0",
            "--learning-rate",
            "3e-3",
            "--schedule",
            "constant",
            "--warmup-ratio",
            "0",
            "--max-steps",
            "20",
            "--batch-size",
            "2",
            "--eval-max-new-tokens",
            "8",
            "--eval-before",
            "false",
            "--eval-each-epoch",
            "false",
            "--weight-decay",
            "0",
            "--target-modules",
            "all-linear",
        ])
        .env("RAYON_NUM_THREADS", "1")
        .status()
        .expect("vlmtest-train runs");
    assert!(status.success(), "vlmtest-train failed: {status:?}");
    let adapter = run_dir.join("adapter");

    let base = evaluate(root, &[]);
    let tuned = evaluate(root, &["--adapter", adapter.to_str().unwrap()]);
    let passed = |r: &serde_json::Value| r["overall"]["passed"].as_u64().unwrap();
    assert_eq!(base["model"], "smollm2-135m-instruct-q8_0");
    assert_eq!(tuned["model"], "smollm2-135m-instruct-f32+adapter");
    assert_eq!(
        passed(&base),
        0,
        "the base model does not know the code words"
    );
    assert!(
        passed(&tuned) >= 3,
        "adapter answers: {:#}",
        tuned["verdicts"]
    );

    // A re-run is answered from the cache, keyed by the adapter's bytes too.
    let again = evaluate(root, &["--adapter", adapter.to_str().unwrap()]);
    assert_eq!(passed(&again), passed(&tuned));

    // The same adapter behind `vlmtest serve` answers over HTTP as it does in process.
    let (served, _) = load_decoder("smollm2", Some(&adapter)).expect("serve loads it");
    let config = ServerConfig {
        name: "tuned".into(),
        max_tokens_cap: 16,
    };
    let server = spawn(served, &config, "127.0.0.1:0".parse().unwrap()).expect("listen");
    let mut remote = OpenAiModel::from_spec(&format!("openai:{}#tuned", server.url())).unwrap();
    let local = AdaptedGguf::load(&ensure_default_model().unwrap(), Some(&adapter)).unwrap();
    for (q, _) in FACTS {
        let msgs = [Message::text(Role::User, q)];
        let req = [Request {
            name: q.into(),
            messages: &msgs,
        }];
        let over_http = remote.generate(&req, &GenerationOptions { max_new_tokens: 8 });
        let over_http = over_http[0].as_ref().expect("served answer");
        assert_eq!(
            over_http.text.trim(),
            local.answer(&msgs, 8).unwrap().text,
            "{q}"
        );
    }
}

#[test]
fn an_adapter_folder_without_its_files_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_project(root);
    let empty = root.join("not-an-adapter");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vlmtest"))
        .args(["run", "--adapter"])
        .arg(&empty)
        .env("VLMTEST_ROOT", root)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text.contains("adapter_config.json") && text.contains("not-an-adapter"),
        "{text}"
    );
}
