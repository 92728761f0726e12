//! Writes seeded Qwen3-VL fixtures (`checkpoint DIR`, `adapter DIR`, `image FILE`) and times
//! generation on a checkpoint (`bench DIR`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vlmtest::model::qwen3_vl::fixture::{self, AdapterSpec, Spec};

#[derive(Parser)]
#[command(about = "Write tiny seeded Qwen3-VL checkpoints, PEFT adapters and test images")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// A tiny checkpoint folder (hidden 64, 2 text layers, 3 vision blocks, 288 tokens).
    Checkpoint {
        dir: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// config.json, tokenizer and processor files of the Qwen3-VL-2B shape, without weights
    /// (`scripts/qwen3vl_parity.py --bench` fills in seeded weights with transformers).
    Metadata2b { dir: PathBuf },
    /// Times prefill and decode on a checkpoint (bf16 on CUDA when built with `cuda`).
    Bench {
        dir: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        batches: Vec<usize>,
        #[arg(long, default_value_t = 64)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
        /// Also time the decode step's weight matmuls alone (the checkpoint's own text weights,
        /// one token per row): the floor a decode step cannot go under, and the rest overhead.
        #[arg(long)]
        breakdown: bool,
        /// Also time prompts that carry one seeded image of this size (`640x480`): image
        /// preprocessing, the vision tower and the prefill together.
        #[arg(long)]
        image: Option<String>,
    },
    /// A PEFT LoRA adapter for the tiny checkpoint.
    Adapter {
        dir: PathBuf,
        #[arg(long, default_value_t = 11)]
        seed: u64,
        #[arg(long, default_value_t = 4)]
        rank: usize,
        #[arg(long, default_value_t = 8.0)]
        alpha: f64,
        #[arg(long, value_delimiter = ',', default_value = "q_proj,v_proj")]
        targets: Vec<String>,
    },
    /// A seeded RGB test image (PNG).
    Image {
        path: PathBuf,
        #[arg(long)]
        width: u32,
        #[arg(long)]
        height: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().what {
        What::Checkpoint { dir, seed } => {
            fixture::write_checkpoint(&dir, &Spec::tiny(), seed, candle_core::DType::F32)
                .with_context(|| format!("writing checkpoint to {}", dir.display()))?;
        }
        What::Adapter {
            dir,
            seed,
            rank,
            alpha,
            targets,
        } => {
            let spec = AdapterSpec {
                rank,
                alpha,
                targets,
                seed,
            };
            fixture::write_adapter(&dir, &Spec::tiny(), &spec, "vlmtest/tiny-qwen3-vl")
                .with_context(|| format!("writing adapter to {}", dir.display()))?;
        }
        What::Metadata2b { dir } => {
            fixture::write_metadata(&dir, &Spec::qwen3_vl_2b())?;
        }
        What::Bench {
            dir,
            batches,
            prompt_tokens,
            new_tokens,
            breakdown,
            image,
        } => {
            bench(&dir, &batches, prompt_tokens, new_tokens)?;
            if let Some(size) = image {
                image_bench(&dir, &batches, &size)?;
            }
            if breakdown {
                matmul_floor(&dir, &batches)?;
            }
        }
        What::Image {
            path,
            width,
            height,
            seed,
        } => {
            fixture::write_image(&path, width, height, seed)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Prints one JSON line per batch size: prefill and decode tokens/s (median of 3 runs after a
/// warm-up that also absorbs CUDA's PTX compilation).
fn bench(
    dir: &std::path::Path,
    batches: &[usize],
    prompt_tokens: usize,
    new_tokens: usize,
) -> anyhow::Result<()> {
    use std::time::Instant;
    use vlmtest::model::qwen3_vl::{Prepared, Qwen3VlModel};
    let device = candle_core::Device::cuda_if_available(0)?;
    let t0 = Instant::now();
    let mut model = Qwen3VlModel::load(dir, None, &device)?;
    eprintln!(
        "loaded {} on {:?} in {:.1}s",
        dir.display(),
        device,
        t0.elapsed().as_secs_f64()
    );
    // A text prompt of ordinary byte tokens; no stop tokens so every row decodes `new_tokens`.
    let ids: Vec<u32> = (0..prompt_tokens)
        .map(|i| 32 + (i * 7 % 90) as u32)
        .collect();
    let prompt = Prepared {
        ids,
        images: Vec::new(),
    };
    let net = model.network();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for &b in batches {
        let rows: Vec<&Prepared> = std::iter::repeat_n(&prompt, b).collect();
        net.generate(&rows, 2, &[], 0)?;
        let mut prefill = Vec::new();
        let mut total = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            net.generate(&rows, 1, &[], 0)?;
            prefill.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let out = net.generate(&rows, 1 + new_tokens, &[], 0)?;
            total.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(
                out.iter().all(|r| r.len() == 1 + new_tokens),
                "a row stopped early"
            );
        }
        let (p, t) = (median(prefill), median(total));
        let decode_s = (t - p).max(1e-9);
        println!(
            "{}",
            serde_json::json!({
                "impl": "vlmtest", "device": format!("{device:?}"), "batch": b,
                "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                "prefill_s": p, "prefill_tok_s": (b * prompt_tokens) as f64 / p,
                "decode_step_ms": decode_s * 1e3 / new_tokens as f64,
                "decode_tok_s": (b * new_tokens) as f64 / decode_s,
            })
        );
    }
    Ok(())
}

/// Times, per batch size, one decode step's worth of weight matmuls with the checkpoint's own
/// text weights (7 projections per layer plus the LM head, one token per row), as a JSON line:
/// what the step would cost if nothing but the weights' matmuls ran.
fn matmul_floor(dir: &std::path::Path, batches: &[usize]) -> anyhow::Result<()> {
    use candle_core::{DType, Device, Module, Tensor};
    use std::time::Instant;
    use vlmtest::model::checkpoint::CheckpointFiles;
    use vlmtest::model::qwen3_vl::config::Config;
    let device = Device::cuda_if_available(0)?;
    let dtype = if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    };
    let files = CheckpointFiles::locate(dir)?;
    let cfg = Config::from_json(&files.read_config()?).map_err(anyhow::Error::msg)?;
    // SAFETY: the weight files are not modified while mapped (a benchmark's own fixture).
    let vb =
        unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files.weights, dtype, &device)? };
    let t = &cfg.text;
    let (h, kv) = (t.hidden_size, t.num_key_value_heads * t.head_dim);
    let q = t.num_attention_heads * t.head_dim;
    let mut linears = Vec::new();
    let mut bytes = 0usize;
    for i in 0..t.num_hidden_layers {
        let l = vb.pp(format!("model.language_model.layers.{i}"));
        for (name, out, inp) in [
            ("self_attn.q_proj", q, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, q),
            ("mlp.gate_proj", t.intermediate_size, h),
            ("mlp.up_proj", t.intermediate_size, h),
            ("mlp.down_proj", h, t.intermediate_size),
        ] {
            let w = l.get((out, inp), &format!("{name}.weight"))?;
            bytes += w.elem_count() * dtype.size_in_bytes();
            linears.push((inp, candle_nn::Linear::new(w, None)));
        }
    }
    let head = if vb.contains_tensor("lm_head.weight") {
        vb.get((t.vocab_size, h), "lm_head.weight")?
    } else {
        vb.get(
            (t.vocab_size, h),
            "model.language_model.embed_tokens.weight",
        )?
    };
    bytes += head.elem_count() * dtype.size_in_bytes();
    linears.push((h, candle_nn::Linear::new(head, None)));
    for &b in batches {
        let xs: Vec<Tensor> = [h, q, t.intermediate_size]
            .iter()
            .map(|&n| Tensor::ones((b, 1, n), dtype, &device))
            .collect::<Result<_, _>>()?;
        let input = |n: usize| {
            if n == h {
                &xs[0]
            } else if n == q {
                &xs[1]
            } else {
                &xs[2]
            }
        };
        let step = || -> anyhow::Result<()> {
            let mut last = None;
            for (inp, lin) in &linears {
                last = Some(lin.forward(input(*inp))?);
            }
            if let Some(l) = last {
                l.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            }
            Ok(())
        };
        step()?;
        let n = 20;
        let t0 = Instant::now();
        for _ in 0..n {
            step()?;
        }
        let s = t0.elapsed().as_secs_f64() / n as f64;
        println!(
            "{}",
            serde_json::json!({
                "impl": "vlmtest-matmul-floor", "device": format!("{device:?}"), "batch": b,
                "weight_bytes": bytes, "step_ms": s * 1e3,
                "effective_tb_s": bytes as f64 / s / 1e12,
                "roofline_step_ms_at_3_35_tb_s": bytes as f64 / 3.35e12 * 1e3,
            })
        );
    }
    Ok(())
}

/// Times image prompts per batch size: decoding + preprocessing the image (CPU), and the vision
/// tower + prefill of `batch` such prompts (one generated token), as a JSON line.
fn image_bench(dir: &std::path::Path, batches: &[usize], size: &str) -> anyhow::Result<()> {
    use std::time::Instant;
    use vlmtest::case::{ImageSource, Message, Part, Role};
    use vlmtest::model::qwen3_vl::{Prepared, Qwen3VlModel};
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .context("--image takes WIDTHxHEIGHT, e.g. 640x480")?;
    let device = candle_core::Device::cuda_if_available(0)?;
    let mut model = Qwen3VlModel::load(dir, None, &device)?;
    let path = std::env::temp_dir().join(format!("vlmtest-bench-{w}x{h}.png"));
    fixture::write_image(&path, w, h, 5)?;
    let messages = vec![Message {
        role: Role::User,
        parts: vec![
            Part::Image {
                image: ImageSource::Path(path),
            },
            Part::Text {
                text: "Describe the picture.".into(),
            },
        ],
    }];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut pre = Vec::new();
    let mut prompt: Option<Prepared> = None;
    for _ in 0..5 {
        let t = Instant::now();
        prompt = Some(model.prepare(&messages)?);
        pre.push(t.elapsed().as_secs_f64());
    }
    let prompt = prompt.context("no prompt prepared")?;
    let pre = median(pre);
    for &b in batches {
        let rows: Vec<&Prepared> = std::iter::repeat_n(&prompt, b).collect();
        let net = model.network();
        net.generate(&rows, 1, &[], 0)?;
        let mut times = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            net.generate(&rows, 1, &[], 0)?;
            times.push(t.elapsed().as_secs_f64());
        }
        let t = median(times);
        // The vision tower alone (synchronised by reading one value back).
        let pixels: Vec<&vlmtest::image::Pixels> =
            rows.iter().flat_map(|p| p.images.iter()).collect();
        let mut vision = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            if let Some(out) = net.encode_images(&pixels)? {
                out.embeds
                    .sum_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_scalar::<f32>()?;
            }
            vision.push(t.elapsed().as_secs_f64());
        }
        let vision = median(vision);
        println!(
            "{}",
            serde_json::json!({
                "impl": "vlmtest-image", "device": format!("{device:?}"), "batch": b,
                "image": size, "prompt_tokens": prompt.ids.len(),
                "preprocess_ms": pre * 1e3, "preprocess_images_s": 1.0 / pre,
                "vision_s": vision, "vision_plus_prefill_s": t, "images_s": b as f64 / t,
            })
        );
    }
    Ok(())
}
