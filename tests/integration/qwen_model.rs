//! Qwen3-VL on the tiny seeded fixture: loading, causal masking, determinism, batching, and
//! clear errors for broken checkpoints.

use crate::support::max_abs_diff;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use vlmtest::case::{ImageSource, Message, Part, Role};
use vlmtest::model::qwen3_vl::fixture::{self, Spec};
use vlmtest::model::qwen3_vl::Qwen3VlModel;
use vlmtest::model::{GenerationOptions, Model, ModelError, Request};

pub fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let ckpt = dir.join("tiny");
    fixture::write_checkpoint(&ckpt, &Spec::tiny(), 7, DType::F32).unwrap();
    ckpt
}

fn load(ckpt: &Path) -> Qwen3VlModel {
    Qwen3VlModel::load(ckpt, None, &Device::Cpu).unwrap()
}

pub fn image_message(dir: &Path, w: u32, h: u32, question: &str) -> Message {
    let path = dir.join(format!("img_{w}x{h}.png"));
    fixture::write_image(&path, w, h, u64::from(w * 1000 + h)).unwrap();
    Message {
        role: Role::User,
        parts: vec![
            Part::Image {
                image: ImageSource::Path(path),
            },
            Part::Text {
                text: question.into(),
            },
        ],
    }
}

#[test]
fn loads_and_produces_logits_of_the_right_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = load(&tiny_checkpoint(dir.path()));
    let p = m
        .prepare(&[image_message(dir.path(), 64, 96, "What is this?")])
        .unwrap();
    // 64 wide, 96 high -> 6x4 patches -> 3x2 merged tokens.
    let image_tokens = p
        .ids
        .iter()
        .filter(|&&t| t == Spec::tiny().image_token_id())
        .count();
    assert_eq!(image_tokens, 6);
    assert_eq!(p.images[0].grid_thw, [1, 6, 4]);
    let logits = m.network().prompt_logits(&p).unwrap();
    assert_eq!(logits.dims(), &[p.ids.len(), Spec::tiny().vocab_size]);
}

#[test]
fn full_prompt_logits_equal_token_by_token_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = load(&tiny_checkpoint(dir.path()));
    // Text only: prefill one token, then feed the rest one at a time.
    let p = m
        .prepare(&[Message::text(Role::User, "the cat is on the mat")])
        .unwrap();
    let full = m.network().prompt_logits(&p).unwrap();
    let inc = m.network().incremental_logits(&p, 1).unwrap();
    let d = max_abs_diff(&full, &inc);
    assert!(d < 1e-4, "text: full vs incremental differ by {d}");
    // With an image: prefill through the image, then token by token.
    let p = m
        .prepare(&[image_message(dir.path(), 64, 64, "what is in the image?")])
        .unwrap();
    let last_image = p
        .ids
        .iter()
        .rposition(|&t| t == Spec::tiny().image_token_id())
        .unwrap();
    let full = m.network().prompt_logits(&p).unwrap();
    let inc = m.network().incremental_logits(&p, last_image + 2).unwrap();
    let d = max_abs_diff(&full, &inc);
    assert!(d < 1e-4, "image: full vs incremental differ by {d}");
    // A bidirectional prompt pass would let early positions see later tokens: changing the last
    // token must leave every earlier position's logits unchanged.
    let mut q = p.clone();
    let n = q.ids.len();
    q.ids[n - 1] = if q.ids[n - 1] == 65 { 66 } else { 65 };
    let changed = m.network().prompt_logits(&q).unwrap();
    let d = max_abs_diff(
        &full.narrow(0, 0, n - 1).unwrap(),
        &changed.narrow(0, 0, n - 1).unwrap(),
    );
    assert_eq!(d, 0.0, "an earlier position saw a later token");
}

#[test]
fn generation_is_deterministic_and_batching_does_not_change_answers() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(dir.path());
    let convs = [
        vec![Message::text(Role::User, "hello")],
        vec![image_message(
            dir.path(),
            64,
            96,
            "Describe the picture in detail, please.",
        )],
        vec![
            image_message(dir.path(), 50, 77, "what?"),
            Message::text(Role::Assistant, "a"),
            Message::text(Role::User, "and?"),
        ],
    ];
    let opts = GenerationOptions { max_new_tokens: 12 };
    let reqs: Vec<Request<'_>> = convs
        .iter()
        .enumerate()
        .map(|(i, c)| Request {
            name: format!("c{i}"),
            messages: c,
        })
        .collect();
    let mut a = load(&ckpt);
    let batched: Vec<String> = a
        .generate(&reqs, &opts)
        .into_iter()
        .map(|r| r.unwrap().text)
        .collect();
    let single: Vec<String> = reqs
        .iter()
        .map(|r| {
            a.generate(std::slice::from_ref(r), &opts)
                .remove(0)
                .unwrap()
                .text
        })
        .collect();
    assert_eq!(batched, single);
    let mut b = load(&ckpt);
    let again: Vec<String> = b
        .generate(&reqs, &opts)
        .into_iter()
        .map(|r| r.unwrap().text)
        .collect();
    assert_eq!(batched, again);
    assert_eq!(a.fingerprint(), b.fingerprint());
    // Different seeds give different weights, answers and fingerprints.
    let other = dir.path().join("other");
    fixture::write_checkpoint(&other, &Spec::tiny(), 8, DType::F32).unwrap();
    let mut c = load(&other);
    assert_ne!(a.fingerprint(), c.fingerprint());
    let theirs: Vec<String> = c
        .generate(&reqs, &opts)
        .into_iter()
        .map(|r| r.unwrap().text)
        .collect();
    assert_ne!(batched, theirs);
}

#[test]
fn stop_tokens_end_generation_and_counts_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = load(&tiny_checkpoint(dir.path()));
    let msgs = [Message::text(Role::User, "count")];
    let p = m.prepare(&msgs).unwrap();
    let stop: Vec<u32> = m.stop_tokens().to_vec();
    let free = m.network().generate(&[&p], 20, &[], 0).unwrap().remove(0);
    assert_eq!(free.len(), 20);
    // Declare the third generated token a stop token: generation must end before it.
    let stop_at = free[2];
    let cut = m
        .network()
        .generate(&[&p], 20, &[stop_at], 0)
        .unwrap()
        .remove(0);
    let first = free.iter().position(|&t| t == stop_at).unwrap();
    assert_eq!(cut, free[..first].to_vec());
    assert!(
        stop.contains(&(Spec::tiny().special_base + 2)),
        "<|im_end|> is a stop token"
    );
    let ans = m.generate(
        &[Request {
            name: "x".into(),
            messages: &msgs,
        }],
        &GenerationOptions { max_new_tokens: 5 },
    );
    let ans = ans[0].as_ref().unwrap();
    assert_eq!(ans.prompt_tokens, p.ids.len());
    assert!(ans.generated_tokens <= 5);
}

#[test]
fn data_uri_images_answer_like_paths_and_a_missing_image_fails_only_its_request() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let mut m = load(&tiny_checkpoint(dir.path()));
    let by_path = image_message(dir.path(), 64, 64, "what?");
    let Part::Image {
        image: ImageSource::Path(path),
    } = &by_path.parts[0]
    else {
        unreachable!()
    };
    let bytes = std::fs::read(path).unwrap();
    let uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    let mut by_uri = by_path.clone();
    by_uri.parts[0] = Part::Image {
        image: ImageSource::DataUri(uri),
    };
    let mut missing = by_path.clone();
    missing.parts[0] = Part::Image {
        image: ImageSource::Path(dir.path().join("nope.png")),
    };
    let convs = [vec![by_path], vec![by_uri], vec![missing]];
    let reqs: Vec<Request<'_>> = convs
        .iter()
        .map(|c| Request {
            name: "r".into(),
            messages: c,
        })
        .collect();
    let out = m.generate(&reqs, &GenerationOptions { max_new_tokens: 6 });
    assert_eq!(out[0].as_ref().unwrap().text, out[1].as_ref().unwrap().text);
    let err = out[2].as_ref().unwrap_err().to_string();
    assert!(err.contains("nope.png"), "{err}");
}

fn expect_error(ckpt: &Path, needle: &str) {
    match Qwen3VlModel::load(ckpt, None, &Device::Cpu) {
        Ok(_) => panic!("loading {} should fail with `{needle}`", ckpt.display()),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "error `{msg}` does not mention `{needle}`"
            );
        }
    }
}

#[test]
fn broken_checkpoints_fail_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(dir.path());
    // Missing files.
    for f in [
        "tokenizer.json",
        "preprocessor_config.json",
        "model.safetensors",
        "config.json",
    ] {
        let copy = dir.path().join(format!("missing_{f}"));
        copy_dir(&ckpt, &copy);
        std::fs::remove_file(copy.join(f)).unwrap();
        expect_error(&copy, f);
    }
    // Corrupt safetensors: truncated in the middle of the data.
    let copy = dir.path().join("truncated");
    copy_dir(&ckpt, &copy);
    let w = copy.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(&copy, "model.safetensors");
    // Garbage safetensors.
    std::fs::write(&w, b"definitely not safetensors").unwrap();
    expect_error(&copy, "not a valid safetensors file");
    // Wrong shapes: config claims a wider MLP than the weights have.
    let copy = dir.path().join("shapes");
    copy_dir(&ckpt, &copy);
    let cfg = std::fs::read_to_string(copy.join("config.json")).unwrap();
    std::fs::write(
        copy.join("config.json"),
        cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
    )
    .unwrap();
    expect_error(&copy, "weights do not match config.json");
    // Malformed config.
    std::fs::write(copy.join("config.json"), "{\"model_type\": \"qwen3_vl\"").unwrap();
    expect_error(&copy, "config.json");
    // A tokenizer whose image token disagrees with the config.
    let copy = dir.path().join("tok");
    copy_dir(&ckpt, &copy);
    let cfg = std::fs::read_to_string(copy.join("config.json")).unwrap();
    std::fs::write(
        copy.join("config.json"),
        cfg.replace("\"image_token_id\": 284", "\"image_token_id\": 285"),
    )
    .unwrap();
    expect_error(&copy, "image_token_id");
    // Not a folder at all.
    expect_error(&dir.path().join("nowhere"), "nowhere");
    let err = Qwen3VlModel::load(&dir.path().join("nowhere"), None, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, ModelError::Missing { .. }));
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn adapters_apply_merged_or_unmerged_alike_and_foreign_adapters_are_refused() {
    use vlmtest::model::qwen3_vl::fixture::AdapterSpec;
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(dir.path());
    let adapter = dir.path().join("adapter");
    let spec = AdapterSpec {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
        seed: 11,
    };
    fixture::write_adapter(&adapter, &Spec::tiny(), &spec, "tiny").unwrap();
    let msgs = [image_message(dir.path(), 64, 64, "what is it?")];
    let logits = |merge: Option<bool>| {
        let mut m = match merge {
            None => load(&ckpt),
            Some(merge) => Qwen3VlModel::load_with_dtype(
                &ckpt,
                Some(&adapter),
                &Device::Cpu,
                DType::F32,
                merge,
            )
            .unwrap(),
        };
        let p = m.prepare(&msgs).unwrap();
        (m.network().prompt_logits(&p).unwrap(), m.fingerprint())
    };
    let (base, base_fp) = logits(None);
    let (merged, merged_fp) = logits(Some(true));
    let (unmerged, _) = logits(Some(false));
    let d = max_abs_diff(&merged, &unmerged);
    assert!(d < 1e-4, "merged vs unmerged differ by {d}");
    assert!(
        max_abs_diff(&base, &merged) > 1e-2,
        "the adapter changed nothing"
    );
    assert_ne!(base_fp, merged_fp);
    // An adapter trained for a different base (hidden 32) is refused with the module named.
    let mut other = Spec::tiny();
    other.hidden = 32;
    let foreign = dir.path().join("foreign");
    fixture::write_adapter(&foreign, &other, &spec, "other").unwrap();
    let err = Qwen3VlModel::load(&ckpt, Some(&foreign), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("does not fit this base") && err.contains("q_proj"),
        "{err}"
    );
    // A folder without adapter files.
    let err = Qwen3VlModel::load(&ckpt, Some(&dir.path().join("none")), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("adapter_config.json"), "{err}");
}
