//! Parity with transformers: the reference values in `fixtures/qwen3_vl/` were computed by
//! `scripts/qwen3vl_parity.py` (transformers + peft) on the same seeded tiny checkpoint that
//! `fixture::write_checkpoint(.., seed 7)` writes here; see docs/qwen3_vl.md for the run.

use crate::support::max_abs_diff;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use sha2::{Digest, Sha256};
use vlmtest::case::{ImageSource, Message, Part, Role};
use vlmtest::image::{self, smart_resize};
use vlmtest::model::qwen3_vl::fixture::{self, AdapterSpec, Spec};
use vlmtest::model::qwen3_vl::{Prepared, Qwen3VlModel};

/// Tolerances of issue 3.
const PIXEL_TOL: f32 = 1e-4;
const LOGIT_TOL: f32 = 1e-3;

fn reference() -> (Value, HashMap<String, Tensor>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen3_vl");
    let meta = std::fs::read_to_string(dir.join("reference.json"))
        .expect("fixtures/qwen3_vl/reference.json");
    let tensors =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    (serde_json::from_str(&meta).unwrap(), tensors)
}

/// The parity cases of the script, as vlmtest messages.
fn cases(images: &Path) -> Vec<(&'static str, Vec<Message>)> {
    let img = |name: &str| Part::Image {
        image: ImageSource::Path(images.join(name)),
    };
    let txt = |t: &str| Part::Text { text: t.into() };
    let user = |parts: Vec<Part>| Message {
        role: Role::User,
        parts,
    };
    vec![
        ("text_only", vec![user(vec![txt("the weather is")])]),
        (
            "one_image",
            vec![user(vec![
                img("img_64x96.png"),
                txt("What is in the image?"),
            ])],
        ),
        (
            "upscaled",
            vec![user(vec![img("img_50x77.png"), txt("Describe it.")])],
        ),
        (
            "two_images",
            vec![
                Message::text(Role::System, "Answer briefly."),
                user(vec![
                    txt("Compare "),
                    img("img_120x90.png"),
                    txt(" with "),
                    img("img_33x33.png"),
                ]),
            ],
        ),
        (
            "downscaled",
            vec![user(vec![img("img_300x200.png"), txt("Is there a cat?")])],
        ),
    ]
}

/// Writes the checkpoint, adapter and images exactly as the parity run used them.
pub fn write_parity_inputs(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ckpt = root.join("tiny");
    fixture::write_checkpoint(&ckpt, &Spec::tiny(), 7, DType::F32).unwrap();
    let adapter = root.join("adapter");
    let spec = AdapterSpec {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
        seed: 11,
    };
    fixture::write_adapter(&adapter, &Spec::tiny(), &spec, "vlmtest/tiny-qwen3-vl").unwrap();
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for (w, h) in [(64u32, 96u32), (50, 77), (120, 90), (33, 33), (300, 200)] {
        fixture::write_image(
            &images.join(format!("img_{w}x{h}.png")),
            w,
            h,
            u64::from(w * 1000 + h),
        )
        .unwrap();
    }
    (ckpt, adapter, images)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn preprocessing_matches_the_reference_processor() {
    let (meta, tensors) = reference();
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _, images) = write_parity_inputs(dir.path());
    let cfg = image::PreprocessorConfig::from_file(&ckpt.join("preprocessor_config.json")).unwrap();
    for row in meta["smart_resize"].as_array().unwrap() {
        let r: Vec<i64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let ours = smart_resize(
            r[0] as usize,
            r[1] as usize,
            cfg.factor(),
            cfg.min_pixels,
            cfg.max_pixels,
        );
        if r[2] < 0 {
            assert!(ours.is_err(), "{r:?}");
        } else {
            assert_eq!(
                ours.unwrap(),
                (r[2] as usize, r[3] as usize),
                "smart_resize{r:?}"
            );
        }
    }
    let mut worst = 0f32;
    for (name, entry) in meta["images"].as_object().unwrap() {
        let img = image::load(&ImageSource::Path(images.join(name))).unwrap();
        let px = image::preprocess(&img, &cfg).unwrap();
        let grid: Vec<usize> = ids(&entry["grid_thw"])
            .into_iter()
            .map(|x| x as usize)
            .collect();
        assert_eq!(px.grid_thw.to_vec(), grid, "{name}");
        let ours = Tensor::from_vec(px.data, (px.rows, px.cols), &Device::Cpu).unwrap();
        let d = max_abs_diff(&ours, &tensors[&format!("pixel_values.{name}")]);
        eprintln!("pixel_values {name}: max abs diff {d:e}");
        // The PIL backend, where the reference run had it.
        if let Some(t) = tensors.get(&format!("pixel_values_slow.{name}")) {
            let mut pil = cfg.clone();
            pil.backend = image::resize::Backend::Pil;
            let px = image::preprocess(&img, &pil).unwrap();
            let ours = Tensor::from_vec(px.data, (px.rows, px.cols), &Device::Cpu).unwrap();
            let dp = max_abs_diff(&ours, t);
            eprintln!("pixel_values {name} (PIL backend): max abs diff {dp:e}");
            worst = worst.max(dp);
        }
        worst = worst.max(d);
    }
    assert!(worst <= PIXEL_TOL, "pixel values differ by {worst}");
}

fn check_model(
    m: &mut Qwen3VlModel,
    images: &Path,
    meta: &Value,
    tensors: &HashMap<String, Tensor>,
    tag: &str,
) -> f32 {
    let mut worst = 0f32;
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut expected: Vec<Vec<u32>> = Vec::new();
    for (cid, messages) in cases(images) {
        let case = &meta["cases"][cid];
        let p = m.prepare(&messages).unwrap();
        assert_eq!(
            p.ids,
            ids(&case["input_ids"]),
            "{cid}: token ids differ from the reference processor"
        );
        let logits = m.network().prompt_logits(&p).unwrap();
        let d = max_abs_diff(&logits, &tensors[&format!("logits.{tag}.{cid}")]);
        eprintln!(
            "{tag} {cid}: {} tokens, logits max abs diff {d:e}",
            p.ids.len()
        );
        worst = worst.max(d);
        let want = ids(&case[format!("greedy.{tag}")]);
        let stop = m.stop_tokens().to_vec();
        let got = m.network().generate(&[&p], 12, &stop, 0).unwrap().remove(0);
        assert_eq!(got, want, "{tag} {cid}: greedy tokens differ");
        prepared.push(p);
        expected.push(want);
    }
    // The whole set as one left-padded batch gives the same tokens.
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let stop = m.stop_tokens().to_vec();
    assert_eq!(
        m.network().generate(&refs, 12, &stop, 0).unwrap(),
        expected,
        "{tag}: batched greedy differs"
    );
    worst
}

#[test]
fn logits_and_greedy_tokens_match_transformers() {
    let (meta, tensors) = reference();
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _, images) = write_parity_inputs(dir.path());
    let bytes = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        meta["checkpoint_sha256"].as_str().unwrap(),
        "the fixture generator no longer writes the checkpoint the reference was computed on"
    );
    let mut m = Qwen3VlModel::load(&ckpt, None, &Device::Cpu).unwrap();
    let worst = check_model(&mut m, &images, &meta, &tensors, "base");
    eprintln!("base: worst logits diff {worst:e}");
    assert!(worst <= LOGIT_TOL);
}

#[test]
fn adapter_merged_and_unmerged_match_peft() {
    let (meta, tensors) = reference();
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, adapter, images) = write_parity_inputs(dir.path());
    for merge in [true, false] {
        let mut m =
            Qwen3VlModel::load_with_dtype(&ckpt, Some(&adapter), &Device::Cpu, DType::F32, merge)
                .unwrap();
        let worst = check_model(&mut m, &images, &meta, &tensors, "adapter");
        eprintln!("adapter (merged: {merge}): worst logits diff {worst:e}");
        assert!(worst <= LOGIT_TOL);
    }
}
