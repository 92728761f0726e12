//! `vlmtest-train` on a tiny seeded Qwen3-VL checkpoint: training on image/question/answer rows
//! learns the answers, the saved PEFT adapter reloads through the inference model (and through
//! `vlmtest`'s model spec) to the trainer's own answers, every LoRA tensor gets a gradient, and
//! bad settings are clear errors. `VLMTEST_PEFT_QWEN_FIXTURE=DIR` keeps the checkpoint, adapter
//! and expected logits for `scripts/peft_qwen_roundtrip.py` (PEFT + transformers).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use clap::Parser;
use vlmtest::lora::{AdapterConfig, LoraAdapter, LoraRng, TargetModules};
use vlmtest::model::qwen3_vl::fixture::{self, Spec};
use vlmtest::model::qwen3_vl::Qwen3VlModel;
use vlmtest::model::spec::ModelSpec;
use vlmtest::model::{GenerationOptions, Model, Request};
use vlmtest::train::batch::plan;
use vlmtest::train::cli::{load_rows, run, Cli};
use vlmtest::train::config::{DeviceKind, Schedule, TrainArgs, TrainConfig};
use vlmtest::train::eval::Validation;
use vlmtest::train::model::{load_base, TrainableModel};
use vlmtest::train::qwen::QwenTrain;
use vlmtest::train::run::train;

/// (image width, height, answer): one question, four pictures, four answers, so the answer
/// depends on the image.
const ROWS: [(u32, u32, &str); 4] = [
    (64, 96, "a red kite"),
    (96, 64, "two cats"),
    (48, 48, "the sea"),
    (80, 80, "green door"),
];

fn checkpoint(dir: &Path) -> PathBuf {
    let ckpt = dir.join("tiny");
    fixture::write_checkpoint(&ckpt, &Spec::tiny(), 7, DType::F32).unwrap();
    ckpt
}

/// Writes the images and `rows.jsonl` (images relative to the file, as suites hold them).
fn write_rows(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for (i, (w, h, answer)) in ROWS.iter().enumerate() {
        let name = format!("pic{i}.png");
        fixture::write_image(&dir.join(&name), *w, *h, 100 + i as u64).unwrap();
        lines.push(
            serde_json::json!({
                "id": format!("r{i}"),
                "image": name,
                "conversations": [
                    {"role": "user", "content": "What is in the picture?"},
                    {"role": "assistant", "content": answer},
                ],
            })
            .to_string(),
        );
    }
    let p = dir.join("rows.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn config(ckpt: &Path, rows: &Path, out: &Path) -> TrainConfig {
    TrainConfig::from_args(TrainArgs {
        base: Some(ckpt.display().to_string()),
        train: Some(vec![rows.to_owned()]),
        val: Some(vec![rows.to_owned()]),
        output_dir: Some(out.to_owned()),
        rank: Some(8),
        alpha: Some(16.0),
        dropout: Some(0.0),
        learning_rate: Some(1e-2),
        schedule: Some(Schedule::Constant),
        warmup_ratio: Some(0.0),
        max_steps: Some(40),
        batch_size: Some(4),
        eval_max_new_tokens: Some(12),
        eval_each_epoch: Some(false),
        weight_decay: Some(0.0),
        target_modules: Some(
            "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
                .split(',')
                .map(str::to_owned)
                .collect(),
        ),
        device: Some(DeviceKind::Cpu),
        ..TrainArgs::default()
    })
    .unwrap()
}

#[test]
fn training_learns_the_image_answers_and_the_adapter_reloads_to_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let rows_path = write_rows(dir.path());
    let rows = load_rows(std::slice::from_ref(&rows_path), std::path::Path::new(".")).unwrap();
    assert!(rows.iter().all(|c| c.has_images()));
    let mut cfg = config(&ckpt, &rows_path, &dir.path().join("run"));
    cfg.save_merged = true;
    // Routed by config.json's model_type, as `vlmtest-train --base <folder>` does.
    let mut model = load_base(&cfg.base, &Device::Cpu, None).unwrap();
    assert!(model.label().starts_with("qwen3-vl-"));
    let report = train(
        &cfg,
        model.as_mut(),
        &rows,
        Validation::of_rows(rows.clone()),
        false,
    )
    .unwrap();

    let losses: Vec<f32> = report.state.losses.iter().map(|l| l.1).collect();
    let first = losses[..2].iter().sum::<f32>() / 2.0;
    let last = losses[losses.len() - 2..].iter().sum::<f32>() / 2.0;
    assert!(last < first * 0.2, "loss did not fall enough: {losses:?}");
    let (before, after) = (report.before.unwrap(), report.after.unwrap());
    assert!(
        after.metric("score.token_f1").unwrap() > before.metric("score.token_f1").unwrap(),
        "before {before:?}\nafter {after:?}"
    );
    assert!(
        after.metric("score.exact_normalised").unwrap() >= 0.75,
        "{after:?}"
    );
    assert!(after.metric("val_loss").unwrap() < before.metric("val_loss").unwrap());

    // PEFT's names for Qwen3VLForConditionalGeneration's text layers.
    let adapter = LoraAdapter::load(&report.adapter_dir, &Device::Cpu).unwrap();
    assert_eq!(adapter.modules.len(), 2 * 7);
    assert!(adapter.peft_tensors().contains_key(
        "base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.weight"
    ));

    // The adapter folder reloads through the inference model to the trainer's own answers…
    let mut reloaded = Qwen3VlModel::load(&ckpt, Some(&report.adapter_dir), &Device::Cpu).unwrap();
    let opts = GenerationOptions {
        max_new_tokens: cfg.eval_max_new_tokens,
    };
    for (case, row) in rows.iter().zip(&after.rows()) {
        let req = Request {
            name: row.case.clone(),
            messages: &case.messages,
        };
        let got = reloaded.generate(&[req], &opts).pop().unwrap().unwrap();
        assert_eq!(got.text, row.answer, "{}", row.case);
    }
    // The merged folder is a checkpoint of its own with the same answers.
    let mut merged =
        Qwen3VlModel::load(&cfg.output_dir.join("merged"), None, &Device::Cpu).unwrap();
    for (case, row) in rows.iter().zip(&after.rows()) {
        let req = Request {
            name: row.case.clone(),
            messages: &case.messages,
        };
        let got = merged.generate(&[req], &opts).pop().unwrap().unwrap();
        assert_eq!(got.text, row.answer, "merged: {}", row.case);
    }
    // …and through `vlmtest --model <ckpt> --adapter <run>/adapter` (one batch of all rows).
    let mut spec_model = ModelSpec::parse(ckpt.to_str().unwrap(), Path::new("."))
        .unwrap()
        .with_adapter(Some(report.adapter_dir.clone()))
        .unwrap()
        .load()
        .unwrap();
    let reqs: Vec<Request<'_>> = rows
        .iter()
        .map(|c| Request {
            name: c.id.test_name(),
            messages: &c.messages,
        })
        .collect();
    let answers = spec_model.generate(&reqs, &opts);
    for (a, row) in answers.into_iter().zip(&after.rows()) {
        assert_eq!(a.unwrap().text, row.answer, "{}", row.case);
    }

    // `VLMTEST_PEFT_QWEN_FIXTURE=DIR` keeps what `scripts/peft_qwen_roundtrip.py` needs to check
    // that PEFT + transformers load this adapter onto this checkpoint to the same logits.
    if let Some(out) = std::env::var_os("VLMTEST_PEFT_QWEN_FIXTURE").map(PathBuf::from) {
        export_for_peft(
            &out,
            &ckpt,
            &report.adapter_dir,
            &rows[0].messages,
            &mut reloaded,
        );
    }
}

fn export_for_peft(
    out: &Path,
    ckpt: &Path,
    adapter: &Path,
    messages: &[vlmtest::case::Message],
    adapted: &mut Qwen3VlModel,
) {
    for (from, to) in [(ckpt, out.join("tiny")), (adapter, out.join("adapter"))] {
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(from).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let p = adapted.prepare(messages).unwrap();
    let with = adapted.network().prompt_logits(&p).unwrap();
    let mut base = Qwen3VlModel::load(ckpt, None, &Device::Cpu).unwrap();
    let without = base.network().prompt_logits(&p).unwrap();
    let px = &p.images[0];
    let pixels = Tensor::from_vec(px.data.clone(), (px.rows, px.cols), &Device::Cpu).unwrap();
    let tensors = std::collections::HashMap::from([
        ("pixel_values".to_owned(), pixels),
        ("logits_base".to_owned(), without),
        ("logits_adapter".to_owned(), with),
    ]);
    candle_core::safetensors::save(&tensors, out.join("expected.safetensors")).unwrap();
    let meta = serde_json::json!({"input_ids": p.ids, "image_grid_thw": [px.grid_thw]});
    std::fs::write(out.join("expected.json"), meta.to_string()).unwrap();
}

#[test]
fn every_lora_tensor_gets_a_nonzero_gradient_through_images_and_deepstack() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let rows = load_rows(&[write_rows(dir.path())], std::path::Path::new(".")).unwrap();
    let mut m = QwenTrain::load(&ckpt, &Device::Cpu, DType::F32).unwrap();
    let varmap = VarMap::new();
    let mut rng = LoraRng::new(3);
    let cfg = AdapterConfig::new(
        4,
        8.0,
        0.05,
        TargetModules::List(
            [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
    );
    m.attach_trainable(&cfg, &varmap, &mut rng).unwrap();
    // B starts at zero, which zeroes A's gradient; give B a value so both must be reached.
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if name.ends_with("lora_B.weight") {
            let (o, r) = var.as_tensor().dims2().unwrap();
            var.set(&Tensor::from_vec(rng.uniform(o * r, 0.1), (o, r), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let examples: Vec<_> = rows.iter().map(|c| m.encode(c, 256).unwrap()).collect();
    let refs: Vec<_> = examples.iter().collect();
    let batch = plan(&refs, m.pad_id()).to_batch(&Device::Cpu).unwrap();
    let loss = m.loss_sum(&batch, &mut rng).unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    assert_eq!(data.len(), 2 * 7 * 2);
    for (name, var) in data.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} got no gradient"));
        let n = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(n > 0.0, "{name} got a zero gradient");
    }
}

#[test]
fn an_interrupted_qwen_run_resumes_to_the_same_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let rows_path = write_rows(dir.path());
    let rows = load_rows(std::slice::from_ref(&rows_path), std::path::Path::new(".")).unwrap();
    let setup = |out: &str, steps: usize| {
        let mut c = config(&ckpt, &rows_path, &dir.path().join(out));
        c.eval_before = false;
        c.val.clear();
        c.dropout = 0.1;
        c.batch_size = 2;
        c.max_steps = steps;
        c
    };
    let fresh = || load_base(ckpt.to_str().unwrap(), &Device::Cpu, None).unwrap();
    let straight = setup("straight", 3);
    train(
        &straight,
        fresh().as_mut(),
        &rows,
        Validation::none(),
        false,
    )
    .unwrap();
    let mut cut = setup("cut", 1);
    assert_eq!(
        train(&cut, fresh().as_mut(), &rows, Validation::none(), false)
            .unwrap()
            .state
            .step,
        1
    );
    cut.max_steps = 3;
    let resumed = train(&cut, fresh().as_mut(), &rows, Validation::none(), false).unwrap();
    assert_eq!(resumed.resumed_from_step, Some(1));
    let a = LoraAdapter::load(&straight.output_dir.join("adapter"), &Device::Cpu).unwrap();
    let b = LoraAdapter::load(&cut.output_dir.join("adapter"), &Device::Cpu).unwrap();
    assert_eq!(a.modules.len(), b.modules.len());
    for (m, wa) in &a.modules {
        let wb = &b.modules[m];
        assert_eq!(
            wa.a.to_vec2::<f32>().unwrap(),
            wb.a.to_vec2::<f32>().unwrap(),
            "{m} A"
        );
        assert_eq!(
            wa.b.to_vec2::<f32>().unwrap(),
            wb.b.to_vec2::<f32>().unwrap(),
            "{m} B"
        );
    }
}

fn cli_error(args: &[&str]) -> String {
    let mut all = vec!["vlmtest-train", "--quiet", "--device", "cpu"];
    all.extend_from_slice(args);
    format!(
        "{:#}",
        anyhow::Error::from(run(Cli::parse_from(all)).unwrap_err())
    )
}

#[test]
fn bad_qwen_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let rows = write_rows(dir.path());
    let (ckpt_s, rows_s) = (ckpt.to_str().unwrap(), rows.to_str().unwrap());
    let out = dir.path().join("o");
    let out_s = out.to_str().unwrap();

    let err = cli_error(&[
        "--train",
        rows_s,
        "--base",
        ckpt_s,
        "--output-dir",
        out_s,
        "--target-modules",
        "q_proj,attn.qkv",
    ]);
    assert!(
        err.contains("attn.qkv") && err.contains("match no linear layer"),
        "{err}"
    );

    let err = cli_error(&[
        "--train",
        rows_s,
        "--base",
        ckpt_s,
        "--output-dir",
        out_s,
        "--max-seq-len",
        "10",
    ]);
    assert!(
        err.contains("rows.jsonl:1") && err.contains("max_seq_len 10"),
        "{err}"
    );

    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.json"), r#"{"model_type": "llava"}"#).unwrap();
    let err = cli_error(&["--train", rows_s, "--base", other.to_str().unwrap()]);
    assert!(
        err.contains("config.json") && err.contains("\"llava\""),
        "{err}"
    );
}
