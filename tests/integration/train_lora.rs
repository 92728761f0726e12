//! `vlmtest-train` end to end on the default SmolLM2: training learns, a saved adapter reloads to
//! the same answers, an interrupted run resumes to the same adapter, bad input is a clear error.

use std::path::{Path, PathBuf};

use candle_core::Device;
use clap::Parser;
use vlmtest::lora::LoraAdapter;
use vlmtest::model::adapted_gguf::AdaptedGguf;
use vlmtest::model::fetch::ensure_default_model;
use vlmtest::train::cli::{load_rows, run, Cli};
use vlmtest::train::config::{Schedule, TrainArgs, TrainConfig};
use vlmtest::train::eval::Validation;
use vlmtest::train::model::SmolLm;
use vlmtest::train::run::train;

const FACTS: [(&str, &str); 4] = [
    ("What is the code word for blue?", "Zebra 42"),
    ("What is the code word for red?", "Falcon 17"),
    ("What is the code word for green?", "Otter 93"),
    ("What is the code word for white?", "Maple 58"),
];

fn write_rows(dir: &Path, name: &str, rows: &[(&str, &str)]) -> PathBuf {
    let p = dir.join(name);
    let lines: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, (q, a))| {
            serde_json::json!({
                "id": format!("r{i}"),
                "conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            })
            .to_string()
        })
        .collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn base() -> PathBuf {
    ensure_default_model().expect("the default model is fetchable")
}

fn config(dir: &Path, rows: &Path, out: &str, max_steps: usize) -> TrainConfig {
    TrainConfig::from_args(TrainArgs {
        base: Some(base().display().to_string()),
        train: Some(vec![rows.to_owned()]),
        val: Some(vec![rows.to_owned()]),
        output_dir: Some(dir.join(out)),
        rank: Some(8),
        alpha: Some(16.0),
        dropout: Some(0.0),
        learning_rate: Some(3e-3),
        schedule: Some(Schedule::Constant),
        warmup_ratio: Some(0.0),
        max_steps: Some(max_steps),
        batch_size: Some(2),
        eval_max_new_tokens: Some(8),
        eval_each_epoch: Some(false),
        weight_decay: Some(0.0),
        target_modules: Some(vec!["all-linear".into()]),
        ..TrainArgs::default()
    })
    .unwrap()
}

#[test]
fn training_learns_the_rows_and_the_saved_adapter_reloads_to_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let rows_path = write_rows(dir.path(), "facts.jsonl", &FACTS);
    let rows = load_rows(std::slice::from_ref(&rows_path), std::path::Path::new(".")).unwrap();
    let cfg = config(dir.path(), &rows_path, "run", 20);
    let mut model = SmolLm::load(&base()).unwrap();
    let report = train(
        &cfg,
        &mut model,
        &rows,
        Validation::of_rows(rows.clone()),
        false,
    )
    .unwrap();

    let losses: Vec<f32> = report.state.losses.iter().map(|l| l.1).collect();
    let first = losses[..2].iter().sum::<f32>() / 2.0;
    let last = losses[losses.len() - 2..].iter().sum::<f32>() / 2.0;
    assert!(last < first * 0.3, "loss did not fall enough: {losses:?}");
    let (before, after) = (report.before.unwrap(), report.after.unwrap());
    assert!(
        after.metric("score.exact_normalised").unwrap()
            > before.metric("score.exact_normalised").unwrap(),
        "before {before:?}\nafter {after:?}"
    );
    assert!(
        after.metric("score.exact_normalised").unwrap() >= 0.75,
        "{after:?}"
    );
    assert!(after.metric("val_loss").unwrap() < before.metric("val_loss").unwrap());

    // The PEFT folder reloads onto the GGUF and answers exactly as the trainer's own evaluation.
    let adapter = LoraAdapter::load(&report.adapter_dir, &Device::Cpu).unwrap();
    assert_eq!(adapter.modules.len(), 30 * 7);
    let reloaded = AdaptedGguf::load(&base(), Some(&report.adapter_dir)).unwrap();
    for (case, row) in rows.iter().zip(&after.rows()) {
        assert_eq!(
            reloaded.answer(&case.messages, 8).unwrap().text,
            row.answer,
            "{}",
            row.case
        );
    }
    for f in [
        "run_metadata.json",
        "prebench_before_training_summary.json",
        "prebench_after_training_summary.json",
    ] {
        assert!(cfg.output_dir.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn an_interrupted_run_resumes_to_the_same_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let rows_path = write_rows(dir.path(), "facts.jsonl", &FACTS);
    let rows = load_rows(std::slice::from_ref(&rows_path), std::path::Path::new(".")).unwrap();
    let quiet = |mut c: TrainConfig| {
        c.eval_before = false;
        c.val.clear();
        c.dropout = 0.1;
        c
    };
    let straight = quiet(config(dir.path(), &rows_path, "straight", 3));
    train(
        &straight,
        &mut SmolLm::load(&base()).unwrap(),
        &rows,
        Validation::none(),
        false,
    )
    .unwrap();

    let mut cut = quiet(config(dir.path(), &rows_path, "cut", 1));
    let first = train(
        &cut,
        &mut SmolLm::load(&base()).unwrap(),
        &rows,
        Validation::none(),
        false,
    )
    .unwrap();
    assert_eq!(first.state.step, 1);
    cut.max_steps = 3;
    let resumed = train(
        &cut,
        &mut SmolLm::load(&base()).unwrap(),
        &rows,
        Validation::none(),
        false,
    )
    .unwrap();
    assert_eq!(resumed.resumed_from_step, Some(1));
    assert_eq!(resumed.state.step, 3);

    let a = LoraAdapter::load(&straight.output_dir.join("adapter"), &Device::Cpu).unwrap();
    let b = LoraAdapter::load(&cut.output_dir.join("adapter"), &Device::Cpu).unwrap();
    for (m, wa) in &a.modules {
        let wb = &b.modules[m];
        assert_eq!(
            wa.a.to_vec2::<f32>().unwrap(),
            wb.a.to_vec2::<f32>().unwrap(),
            "{m} lora_A"
        );
        assert_eq!(
            wa.b.to_vec2::<f32>().unwrap(),
            wb.b.to_vec2::<f32>().unwrap(),
            "{m} lora_B"
        );
    }
}

fn cli_error(args: &[&str]) -> String {
    let mut all = vec!["vlmtest-train", "--quiet"];
    all.extend_from_slice(args);
    format!(
        "{:#}",
        anyhow::Error::from(run(Cli::parse_from(all)).unwrap_err())
    )
}

#[test]
fn bad_rows_and_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_rows(dir.path(), "good.jsonl", &FACTS[..1]);
    let good_s = good.to_str().unwrap();

    let malformed = dir.path().join("malformed.jsonl");
    std::fs::write(&malformed, "{\"conversations\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n{not json\n").unwrap();
    let err = cli_error(&["--train", malformed.to_str().unwrap()]);
    assert!(
        err.contains("malformed.jsonl") && err.contains(":2"),
        "{err}"
    );

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let err = cli_error(&["--train", empty.to_str().unwrap()]);
    assert!(err.contains("empty.jsonl holds no rows"), "{err}");

    let no_answer = dir.path().join("no_answer.jsonl");
    let row = serde_json::json!({
        "id": "q1",
        "conversations": [{"role": "user", "content": "What is 2 + 3?"}],
        "expect": [{"kind": "keywords", "keywords": ["5"], "min_matched": null, "threshold": 1.0}],
    });
    std::fs::write(&no_answer, format!("{row}\n")).unwrap();
    let err = cli_error(&[
        "--train",
        no_answer.to_str().unwrap(),
        "--base",
        base().to_str().unwrap(),
    ]);
    assert!(
        err.contains("no_answer.jsonl:1") && err.contains("no reference answer"),
        "{err}"
    );

    let out = dir.path().join("o");
    let err = cli_error(&[
        "--train",
        good_s,
        "--base",
        base().to_str().unwrap(),
        "--target-modules",
        "q_proj,qkv_proj",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("\"qkv_proj\"") && err.contains("q_proj") && err.contains("down_proj"),
        "{err}"
    );

    let err = cli_error(&["--train", good_s, "--warmup-ratio", "1.5"]);
    assert!(err.contains("warmup_ratio"), "{err}");
    let err = cli_error(&["--train", good_s, "--base", "/nonexistent/model.gguf"]);
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
    let toml = dir.path().join("train.toml");
    std::fs::write(&toml, "train = [\"x.jsonl\"]\nlearning_rat = 1e-3\n").unwrap();
    let err = cli_error(&["--config", toml.to_str().unwrap()]);
    assert!(
        err.contains("train.toml") && err.contains("learning_rat"),
        "{err}"
    );
}

/// The trainer evaluates through `vlmtest run`'s pipeline: on a project suite with its own
/// scorers and gate, every `eval_every` steps, and its after-summary carries exactly the numbers a
/// `vlmtest run --adapter` of the saved adapter reports, metric by metric and answer by answer.
#[test]
fn the_trainers_after_summary_equals_a_vlmtest_run_of_the_saved_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("cases")).unwrap();
    let rows_path = write_rows(&project.join("cases"), "facts.jsonl", &FACTS);
    std::fs::write(
        project.join("vlmtest.toml"),
        "[model]\nmax_new_tokens = 8\n\n[suites.facts]\nrow_scorers = [\"exact\", \"token_f1\"]\n\n\
         [suites.facts.gates]\npass_rate = 0.5\n",
    )
    .unwrap();
    let rows = load_rows(std::slice::from_ref(&rows_path), std::path::Path::new(".")).unwrap();
    let mut cfg = config(dir.path(), &rows_path, "run", 6);
    cfg.val.clear();
    cfg.suite = Some("facts".into());
    cfg.project = project.clone();
    cfg.eval_every = 3;
    cfg.metric = "score.token_f1".into();
    cfg.patience = 0;
    cfg.validate().unwrap();
    let val = Validation::of_suite(&project, "facts").unwrap();
    let report = train(&cfg, &mut SmolLm::load(&base()).unwrap(), &rows, val, false).unwrap();
    let labels: Vec<&str> = report.evals.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(labels, ["step-3", "step-6"]);
    let after = report.after.unwrap();
    assert!(after.report.gates.iter().any(|g| g.name == "pass_rate"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vlmtest"))
        .arg("--root")
        .arg(&project)
        .args(["run", "--suite", "facts", "--model"])
        .arg(base())
        .arg("--adapter")
        .arg(&report.adapter_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env("VLMTEST_ANSWER_CACHE", dir.path().join("answers"))
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run =
        vlmtest::report::read_json(&project.join("target/vlmtest/report-facts.json")).unwrap();
    let mut trained = after.metrics.clone();
    assert!(trained.remove("val_loss").is_some());
    assert_eq!(vlmtest::report::gate::metrics(&run), trained);
    assert_eq!(run.gates, after.report.gates);
    for v in &run.verdicts {
        let answer = v.answer.as_ref().map(|a| a.text.as_str());
        assert_eq!(answer, after.answer(&v.name), "{}", v.name);
    }

    // Each evaluation is a stored run: `vlmtest compare` reads the before and after folders.
    let evals = cfg.output_dir.join("evals");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vlmtest"))
        .arg("compare")
        .arg(evals.join("before"))
        .arg(evals.join("after"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["suites"][0]["suite"], "facts", "{cmp}");
}
