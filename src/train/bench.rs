//! `vlmtest-train bench`: seconds per optimizer step and tokens/s of LoRA training, on data that
//! `scripts/peft_bench.py` reproduces token for token, so candle and PEFT + PyTorch are timed on
//! the same work.
//!
//! The batch is `batch_size` rows of `seq_len` ids from a fixed formula; the loss covers the second
//! half of each row (as an answer after a prompt). The base is the SmolLM2 GGUF, SmolLM2-135M's
//! shape with seeded weights (`random`), which costs the same per step, or a Qwen3-VL checkpoint
//! folder (on the CPU or CUDA, f32 or bf16 frozen weights), optionally with one seeded image per
//! row whose vision tower runs every step (as in training without a feature cache).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::Serialize;

use super::batch::plan;
use super::checkpoint::named_vars;
use super::config::{device_for, DeviceKind, WeightDtype};
use super::data::Example;
use super::model::TrainableModel;
use super::optim::{AdamW, AdamWParams, GradAccumulator};
use super::qwen::QwenTrain;
use super::TrainError;
use crate::image::{Pixels, PreprocessorConfig, RgbImage};
use crate::lora::{AdapterConfig, LoraRng, TargetModules};
use crate::model::llama_f32::{Llama, LlamaConfig};

/// Benchmark settings; the defaults are the ones documented in docs/train.md.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct BenchArgs {
    /// `smollm2`, a .gguf path, or `random` for SmolLM2-135M's shape with seeded weights.
    #[arg(long, default_value = "smollm2")]
    pub base: String,
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    #[arg(long, value_delimiter = ',', default_value = "q_proj,v_proj")]
    pub target_modules: Vec<String>,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Timed steps (after `warmup` untimed ones).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// `cpu` or `cuda` (default: cuda when built with it and a GPU is present). GGUF bases time
    /// on the CPU only.
    #[arg(long, value_enum)]
    pub device: Option<DeviceKind>,
    /// Qwen3-VL: frozen weight dtype (default f32 on the CPU, bf16 on CUDA).
    #[arg(long, value_enum)]
    pub dtype: Option<WeightDtype>,
    /// Qwen3-VL: put one seeded `WIDTHxHEIGHT` image before each row's text.
    #[arg(long)]
    pub image: Option<String>,
}

/// One benchmark's result (a JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub implementation: &'static str,
    pub base: String,
    pub rank: usize,
    pub target_modules: Vec<String>,
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: usize,
    pub threads: usize,
    pub seconds_per_step: f64,
    /// The step split into the forward with the loss, the backward, and clipping + AdamW (means
    /// of the timed steps, the device synchronised between the parts).
    pub forward_seconds: f64,
    pub backward_seconds: f64,
    pub optimizer_seconds: f64,
    pub tokens_per_second: f64,
    pub first_loss: f32,
    pub last_loss: f32,
    pub peak_rss_mib: Option<f64>,
    pub device: String,
    /// Frozen weight dtype.
    pub dtype: String,
    /// Image placeholder tokens per row (Qwen3-VL with `--image`), counted in `tokens_per_second`.
    pub image_tokens: usize,
    /// Peak GPU memory is not measured here; `nvidia-smi` beside the run shows it.
    pub trainable_params: usize,
}

/// Token `j` of row `r`: the same formula as `scripts/peft_bench.py`.
pub fn bench_token(r: usize, j: usize, seq_len: usize) -> u32 {
    let k = (r * seq_len + j) as u64;
    ((1_103_515_245u64.wrapping_mul(k).wrapping_add(12_345)) % 2_147_483_648 % 40_000 + 100) as u32
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the benchmark.
pub fn run_bench(args: &BenchArgs) -> Result<BenchResult, TrainError> {
    if Path::new(&args.base).is_dir() {
        return run_qwen_bench(args);
    }
    if args.device == Some(DeviceKind::Cuda) || args.image.is_some() || args.dtype.is_some() {
        return Err(TrainError::Config {
            field: "base",
            reason:
                "--device cuda, --dtype and --image need a Qwen3-VL checkpoint folder as --base"
                    .into(),
        });
    }
    let device = Device::Cpu;
    let mut llama = match args.base.as_str() {
        "random" => Llama::random(LlamaConfig::smollm2_135m(), 7, &device)?,
        other => Llama::from_gguf(&super::model::resolve_base(other)?, &device)?,
    };
    let targets = TargetModules::List(args.target_modules.clone());
    let cfg = AdapterConfig::new(args.rank, args.alpha, 0.0, targets);
    let varmap = VarMap::new();
    llama.attach_trainable(&cfg, &varmap, &mut LoraRng::new(1))?;
    let vars: BTreeMap<_, _> = named_vars(&varmap);
    let mut opt = AdamW::new(vars.clone(), AdamWParams::new(1e-4, 0.0))?;

    let (b, t) = (args.batch_size, args.seq_len);
    let ids: Vec<u32> = (0..b)
        .flat_map(|r| (0..t).map(move |j| bench_token(r, j, t)))
        .collect();
    // Inputs are t-1 tokens predicting the next; loss on the second half, as in the PEFT script.
    let inputs: Vec<u32> = (0..b)
        .flat_map(|r| ids[r * t..r * t + t - 1].to_vec())
        .collect();
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for r in 0..b {
        for j in (t / 2 - 1)..(t - 1) {
            positions.push((r * (t - 1) + j) as u32);
            targets.push(ids[r * t + j + 1]);
        }
    }
    let n = targets.len();
    let inputs = Tensor::from_vec(inputs, (b, t - 1), &device)?;
    let positions = Tensor::from_vec(positions, n, &device)?;
    let targets = Tensor::from_vec(targets, n, &device)?;
    let (times, losses) = timed_steps(args, &device, &vars, &mut opt, |rng| {
        Ok((llama.loss_sum(&inputs, &positions, &targets, rng)? / n as f64)?)
    })?;
    Ok(BenchResult {
        implementation: "vlmtest (candle)",
        base: args.base.clone(),
        rank: args.rank,
        target_modules: args.target_modules.clone(),
        batch_size: b,
        seq_len: t,
        steps: args.steps,
        threads: candle_core::utils::get_num_threads(),
        seconds_per_step: times.step,
        forward_seconds: times.forward,
        backward_seconds: times.backward,
        optimizer_seconds: times.optimizer,
        tokens_per_second: (b * t) as f64 / times.step,
        first_loss: losses.first().copied().unwrap_or(f32::NAN),
        last_loss: losses.last().copied().unwrap_or(f32::NAN),
        peak_rss_mib: peak_rss_mib(),
        device: "cpu".into(),
        dtype: "f32".into(),
        image_tokens: 0,
        trainable_params: vars.values().map(|v| v.elem_count()).sum(),
    })
}

/// Mean seconds per timed step, whole and in parts.
#[derive(Debug, Default)]
struct StepTimes {
    step: f64,
    forward: f64,
    backward: f64,
    optimizer: f64,
}

/// Runs `warmup + steps` training steps (mean loss, backward, clipping at 1.0, AdamW) and
/// returns the mean seconds of the timed ones (the device synchronised around each part) and
/// every step's loss.
fn timed_steps(
    args: &BenchArgs,
    device: &Device,
    vars: &BTreeMap<String, candle_core::Var>,
    opt: &mut AdamW,
    mut mean_loss: impl FnMut(&mut LoraRng) -> Result<Tensor, TrainError> + Send,
) -> Result<(StepTimes, Vec<f32>), TrainError> {
    let mut rng = LoraRng::new(0);
    let mut losses = Vec::new();
    let mut sum = StepTimes::default();
    for step in 0..args.warmup + args.steps {
        device.synchronize()?;
        let start = Instant::now();
        let (loss, forward, backward) = device.with_context(|| {
            let loss = mean_loss(&mut rng)?;
            device.synchronize()?;
            let forward = start.elapsed().as_secs_f64();
            let mut acc = GradAccumulator::default();
            acc.add(vars, &loss.backward()?)?;
            device.synchronize()?;
            let backward = start.elapsed().as_secs_f64() - forward;
            acc.clip(1.0)?;
            opt.step(&acc)?;
            Ok::<_, TrainError>((loss, forward, backward))
        })?;
        losses.push(loss.to_scalar::<f32>()?);
        device.synchronize()?;
        let total = start.elapsed().as_secs_f64();
        if step >= args.warmup {
            sum.step += total;
            sum.forward += forward;
            sum.backward += backward;
            sum.optimizer += total - forward - backward;
        }
    }
    let n = args.steps.max(1) as f64;
    let mean = StepTimes {
        step: sum.step / n,
        forward: sum.forward / n,
        backward: sum.backward / n,
        optimizer: sum.optimizer / n,
    };
    Ok((mean, losses))
}

/// A seeded RGB image (smooth gradients plus noise), preprocessed as the checkpoint's processor
/// does.
fn bench_image(spec: &str, processor: &PreprocessorConfig) -> Result<Pixels, TrainError> {
    let bad = || TrainError::Config {
        field: "image",
        reason: format!("{spec:?} is not WIDTHxHEIGHT (e.g. 448x448)"),
    };
    let (w, h) = spec.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if w == 0 || h == 0 || w > 8192 || h > 8192 {
        return Err(bad());
    }
    let mut rng = LoraRng::new(u64::from(w) * 10_000 + u64::from(h));
    let (w, h) = (w as usize, h as usize);
    let noise = rng.uniform(w * h, 32.0);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let n = noise[y * w + x];
            for base in [
                255.0 * x as f32 / w as f32,
                255.0 * y as f32 / h as f32,
                128.0,
            ] {
                pixels.push((base + n).clamp(0.0, 255.0) as u8);
            }
        }
    }
    let img = RgbImage {
        width: w,
        height: h,
        pixels,
    };
    crate::image::preprocess(&img, processor).map_err(|e| TrainError::Config {
        field: "image",
        reason: e.to_string(),
    })
}

/// The benchmark on a Qwen3-VL folder, through the trainer's own `TrainableModel` path.
fn run_qwen_bench(args: &BenchArgs) -> Result<BenchResult, TrainError> {
    let device = device_for(args.device)?;
    let dtype = match args.dtype {
        Some(d) => d.dtype(),
        None if device.is_cpu() => DType::F32,
        None => DType::BF16,
    };
    let mut model = QwenTrain::load(Path::new(&args.base), &device, dtype)?;
    model.cache_vision = false;
    let targets = TargetModules::List(args.target_modules.clone());
    let cfg = AdapterConfig::new(args.rank, args.alpha, 0.0, targets);
    let varmap = VarMap::new();
    model.attach_trainable(&cfg, &varmap, &mut LoraRng::new(1))?;
    let vars: BTreeMap<_, _> = named_vars(&varmap);
    let mut opt = AdamW::new(vars.clone(), AdamWParams::new(1e-4, 0.0))?;

    let (b, t) = (args.batch_size, args.seq_len);
    if t < 4 {
        return Err(TrainError::Config {
            field: "seq_len",
            reason: "must be at least 4".into(),
        });
    }
    // Text ids below the first special token (the formula's range fits Qwen's 151k vocabulary).
    let limit = model.pad_id().min(model.cfg.text.vocab_size as u32);
    let image = match &args.image {
        Some(spec) => Some(Arc::new(bench_image(spec, model.processor())?)),
        None => None,
    };
    let mut image_tokens = 0;
    let examples: Vec<Example> = (0..b)
        .map(|r| {
            let ids: Vec<u32> = (0..t).map(|j| bench_token(r, j, t) % limit).collect();
            let mut prompt = Vec::new();
            let mut images = Vec::new();
            if let Some(px) = &image {
                image_tokens = px.tokens(model.cfg.vision.spatial_merge_size);
                prompt.push(model.cfg.vision_start_token_id);
                prompt.extend(std::iter::repeat_n(model.cfg.image_token_id, image_tokens));
                prompt.push(model.cfg.vision_end_token_id);
                images.push(px.clone());
            }
            prompt.extend_from_slice(&ids[..t / 2]);
            Example {
                name: format!("bench{r}"),
                prompt,
                target: ids[t / 2..].to_vec(),
                images,
            }
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = plan(&refs, model.pad_id()).to_batch(&device)?;
    let n = batch.n_targets;
    let (times, losses) = timed_steps(args, &device, &vars, &mut opt, |rng| {
        Ok((model.loss_sum(&batch, rng)? / n as f64)?)
    })?;
    Ok(BenchResult {
        implementation: "vlmtest (candle)",
        base: args.base.clone(),
        rank: args.rank,
        target_modules: args.target_modules.clone(),
        batch_size: b,
        seq_len: t,
        steps: args.steps,
        threads: candle_core::utils::get_num_threads(),
        seconds_per_step: times.step,
        forward_seconds: times.forward,
        backward_seconds: times.backward,
        optimizer_seconds: times.optimizer,
        tokens_per_second: batch.n_tokens as f64 / times.step,
        first_loss: losses.first().copied().unwrap_or(f32::NAN),
        last_loss: losses.last().copied().unwrap_or(f32::NAN),
        peak_rss_mib: peak_rss_mib(),
        device: if device.is_cpu() { "cpu" } else { "cuda" }.into(),
        dtype: format!("{dtype:?}").to_lowercase(),
        image_tokens,
        trainable_params: vars.values().map(|v| v.elem_count()).sum(),
    })
}

/// Writes the token ids of the benchmark batch as JSON (for checking the Python side).
pub fn write_bench_ids(path: &Path, batch_size: usize, seq_len: usize) -> Result<(), TrainError> {
    let rows: Vec<Vec<u32>> = (0..batch_size)
        .map(|r| (0..seq_len).map(|j| bench_token(r, j, seq_len)).collect())
        .collect();
    super::checkpoint::save_json(path, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_tokens_are_in_the_vocabulary_and_fixed() {
        assert_eq!(bench_token(0, 0, 8), 12_445);
        for r in 0..3 {
            for j in 0..50 {
                let v = bench_token(r, j, 50);
                assert!((100..40_100).contains(&v));
            }
        }
    }
}
