//! The fused ops against their primitive formulas (values and gradients), on the CPU and, with
//! the `cuda` feature, on a GPU.

use candle_core::{DType, Device, Shape, Tensor, Var, D};
use proptest::prelude::*;

use super::*;
use crate::lora::LoraRng;
use crate::test_support::{max_abs_diff, weighted_sum};

fn rand(rng: &mut LoraRng, shape: &[usize]) -> Var {
    let n = shape.iter().product();
    Var::from_tensor(&Tensor::from_vec(rng.uniform(n, 2.0), shape, &Device::Cpu).unwrap()).unwrap()
}

/// Runs `f` once on the fused path and once on the primitive formula (f64, where the fused
/// kernels do not apply), with a weighted sum as the loss so every output element carries a
/// distinct gradient; returns the largest output and input-gradient differences.
fn compare(inputs: &[Var], f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>) -> (f32, f32) {
    let run = |dtype: DType| {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|v| Var::from_tensor(&v.as_tensor().to_dtype(dtype).unwrap()).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts).unwrap();
        let grads = weighted_sum(&y).unwrap().backward().unwrap();
        let gs: Vec<Tensor> = vars
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .expect("every input gets a gradient")
                    .to_dtype(DType::F32)
                    .unwrap()
            })
            .collect();
        (y.to_dtype(DType::F32).unwrap(), gs)
    };
    let (y1, g1) = run(DType::F32);
    let (y2, g2) = run(DType::F64);
    let gd = g1
        .iter()
        .zip(&g2)
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0f32, f32::max);
    (max_abs_diff(&y1, &y2), gd)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn rms_norm_matches_the_primitive_formula(rows in 1usize..40, d in 1usize..70, seed: u64) {
        let mut rng = LoraRng::new(seed);
        let x = rand(&mut rng, &[rows, d]);
        let w = Tensor::from_vec(rng.uniform(d, 1.5), d, &Device::Cpu).unwrap();
        let (dy, dg) = compare(&[x], |t| {
            rms_norm(&t[0], &w.to_dtype(t[0].dtype())?, 1e-5)
        });
        prop_assert!(dy < 1e-4 && dg < 1e-3, "value {dy}, grad {dg}");
    }

    #[test]
    fn causal_softmax_matches_the_masked_softmax(n in 1usize..6, t in 1usize..40, seed: u64) {
        let mut rng = LoraRng::new(seed);
        let x = rand(&mut rng, &[n, t, t]);
        let (dy, dg) = compare(&[x], |s| causal_softmax(&s[0], 0.37));
        prop_assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, grad {dg}");
    }

    #[test]
    fn rope_matches_the_rotation(b in 1usize..3, h in 1usize..4, t in 1usize..20,
                                 half in 1usize..12, per_row: bool, seed: u64) {
        let mut rng = LoraRng::new(seed);
        let x = rand(&mut rng, &[b, h, t, 2 * half]);
        let cb = if per_row { b } else { 1 };
        let cos = Tensor::from_vec(rng.uniform(cb * t * half, 1.0), (cb, 1, t, half), &Device::Cpu).unwrap();
        let sin = Tensor::from_vec(rng.uniform(cb * t * half, 1.0), (cb, 1, t, half), &Device::Cpu).unwrap();
        let (dy, dg) = compare(&[x], |s| {
            let dt = s[0].dtype();
            rope(&s[0], &cos.to_dtype(dt)?, &sin.to_dtype(dt)?)
        });
        prop_assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, grad {dg}");
    }

    #[test]
    fn silu_mul_matches_the_product(n in 1usize..5000, seed: u64) {
        let mut rng = LoraRng::new(seed);
        let g = rand(&mut rng, &[n]);
        let u = rand(&mut rng, &[n]);
        let (dy, dg) = compare(&[g, u], |s| silu_mul(&s[0], &s[1]));
        prop_assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, grad {dg}");
    }

    #[test]
    fn nll_matches_log_softmax_and_gather(rows in 1usize..20, v in 1usize..300, seed: u64) {
        let mut rng = LoraRng::new(seed);
        let x = rand(&mut rng, &[rows, v]);
        let t: Vec<u32> = (0..rows).map(|r| ((r as u64 * 31 + seed) % v as u64) as u32).collect();
        let t = Tensor::from_vec(t, rows, &Device::Cpu).unwrap();
        let (dy, dg) = compare(&[x], |s| nll(&s[0], &t));
        prop_assert!(dy < 1e-4 && dg < 1e-5, "value {dy}, grad {dg}");
    }
}

/// The attention reference: every kv head copied to its query heads (transformers'
/// `repeat_kv`), scores masked and softmaxed from primitives.
fn attention_with_repeated_kv(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    let (b, nh, t, d) = q.dims4().unwrap();
    let rep = nh / k.dim(1).unwrap();
    let repeat = |x: &Tensor| {
        Tensor::cat(&vec![x; rep], 2)
            .unwrap()
            .reshape((b, nh, t, d))
            .unwrap()
    };
    let (k, v) = (repeat(k), repeat(v));
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), q.device())
        .unwrap()
        .to_dtype(q.dtype())
        .unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale)
        .unwrap()
        .broadcast_add(&mask)
        .unwrap();
    candle_nn::ops::softmax(&scores, D::Minus1)
        .unwrap()
        .matmul(&v)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn grouped_attention_matches_repeated_kv(b in 1usize..3, nkv in 1usize..4, rep in 1usize..4,
                                             t in 1usize..12, d in 1usize..9, seed: u64) {
        let mut rng = LoraRng::new(seed);
        let q = rand(&mut rng, &[b, nkv * rep, t, d]);
        let k = rand(&mut rng, &[b, nkv, t, d]);
        let v = rand(&mut rng, &[b, nkv, t, d]);
        let grouped = |s: &[Tensor]| causal_attention(&s[0], &s[1], &s[2], 0.3);
        let (dy, dg) = compare(&[q.clone(), k.clone(), v.clone()], grouped);
        prop_assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, grad {dg}");
        let fused = causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), 0.3).unwrap();
        let reference =
            attention_with_repeated_kv(q.as_tensor(), k.as_tensor(), v.as_tensor(), 0.3);
        prop_assert!(max_abs_diff(&fused, &reference) < 1e-5);
    }
}

#[test]
fn attention_rejects_heads_that_do_not_group() {
    let dev = Device::Cpu;
    let q = Tensor::zeros((1, 3, 4, 2), DType::F32, &dev).unwrap();
    let kv = Tensor::zeros((1, 2, 4, 2), DType::F32, &dev).unwrap();
    let e = causal_attention(&q, &kv, &kv, 1.0).unwrap_err().to_string();
    assert!(e.contains("do not fit"), "{e}");
}

#[test]
fn rope_takes_shared_tables_of_rank_two() {
    let mut rng = LoraRng::new(3);
    let x = rand(&mut rng, &[2, 3, 5, 8]);
    let cos = Tensor::from_vec(rng.uniform(20, 1.0), (5, 4), &Device::Cpu).unwrap();
    let sin = Tensor::from_vec(rng.uniform(20, 1.0), (5, 4), &Device::Cpu).unwrap();
    let fused = rope(x.as_tensor(), &cos, &sin).unwrap();
    let slow = candle_nn::rotary_emb::rope_slow(x.as_tensor(), &cos, &sin).unwrap();
    assert!(max_abs_diff(&fused, &slow) < 1e-6);
}

#[test]
fn bad_shapes_and_targets_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
    assert!(causal_softmax(&x, 1.0).is_err());
    let w = Tensor::ones(5, DType::F32, &dev).unwrap();
    assert!(rms_norm(&x, &w, 1e-5).is_err());
    let logits = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    let t = Tensor::from_vec(vec![0u32, 3], 2, &dev).unwrap();
    let e = nll(&logits, &t).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
}

#[test]
fn dropout_masks_follow_the_seed_and_the_rate() {
    let shape = Shape::from((300, 200));
    let m = dropout_mask(&shape, 0.25, 7, &Device::Cpu).unwrap();
    let again = dropout_mask(&shape, 0.25, 7, &Device::Cpu).unwrap();
    let other = dropout_mask(&shape, 0.25, 8, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&m, &again), 0.0);
    assert!(max_abs_diff(&m, &other) > 0.0);
    let v = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let dropped = v.iter().filter(|x| **x == 0.0).count() as f64 / v.len() as f64;
    // 60,000 draws: the rate is within 1% of 0.25 (about 5 standard deviations).
    assert!((dropped - 0.25).abs() < 0.01, "{dropped}");
    assert!(v
        .iter()
        .all(|x| *x == 0.0 || (*x - 1.0 / 0.75).abs() < 1e-6));
    assert!(dropout_mask(&shape, 1.0, 7, &Device::Cpu).is_err());
}

/// The CUDA kernels against the CPU ones (built with `--features cuda`; needs a GPU).
#[cfg(feature = "cuda")]
mod on_cuda {
    use super::*;

    /// Runs `f` on the CPU and on the GPU with the same inputs and a weighted-sum loss;
    /// returns the largest output and input-gradient differences.
    fn cpu_vs_cuda(
        inputs: &[Tensor],
        grads_of: usize,
        f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    ) -> (f32, f32) {
        let gpu = Device::new_cuda(0).expect("the cuda feature's tests need a GPU");
        let run = |dev: &Device| {
            let vars: Vec<Var> = inputs[..grads_of]
                .iter()
                .map(|t| Var::from_tensor(&t.to_device(dev).unwrap()).unwrap())
                .collect();
            let mut ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            ts.extend(inputs[grads_of..].iter().map(|t| t.to_device(dev).unwrap()));
            let y = f(&ts).unwrap();
            let grads = weighted_sum(&y).unwrap().backward().unwrap();
            let gs: Vec<Tensor> = vars
                .iter()
                .map(|v| {
                    grads
                        .get(v.as_tensor())
                        .unwrap()
                        .to_device(&Device::Cpu)
                        .unwrap()
                })
                .collect();
            (y.to_device(&Device::Cpu).unwrap(), gs)
        };
        let (y1, g1) = run(&Device::Cpu);
        let (y2, g2) = run(&gpu);
        let gd = g1
            .iter()
            .zip(&g2)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0f32, f32::max);
        (max_abs_diff(&y1, &y2), gd)
    }

    fn uniform(rng: &mut LoraRng, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(rng.uniform(n, scale), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn every_fused_op_on_cuda_matches_the_cpu() {
        let mut rng = LoraRng::new(11);
        // The 2B Qwen3-VL shapes (hidden 2048, head 128, 512 positions), and odd ones.
        for (rows, d) in [(64, 2048), (300, 128), (7, 33)] {
            let x = uniform(&mut rng, &[rows, d], 2.0);
            let w = uniform(&mut rng, &[d], 1.5);
            let (dy, dg) = cpu_vs_cuda(&[x, w], 1, |t| rms_norm(&t[0], &t[1], 1e-6));
            assert!(dy < 1e-5 && dg < 1e-4, "rms_norm {rows}x{d}: {dy} {dg}");
        }
        for (n, t) in [(4, 512), (3, 37), (2, 1)] {
            let x = uniform(&mut rng, &[n, t, t], 4.0);
            let (dy, dg) = cpu_vs_cuda(&[x], 1, |s| causal_softmax(&s[0], 0.088));
            assert!(dy < 1e-5 && dg < 1e-5, "softmax {n}x{t}: {dy} {dg}");
        }
        for (b, h, t, half, cb) in [(2, 16, 64, 64, 2), (1, 3, 5, 4, 1), (3, 2, 7, 3, 3)] {
            let x = uniform(&mut rng, &[b, h, t, 2 * half], 2.0);
            let cos = uniform(&mut rng, &[cb, 1, t, half], 1.0);
            let sin = uniform(&mut rng, &[cb, 1, t, half], 1.0);
            let (dy, dg) = cpu_vs_cuda(&[x, cos, sin], 1, |s| rope(&s[0], &s[1], &s[2]));
            assert!(dy < 1e-5 && dg < 1e-5, "rope {b}x{h}x{t}x{half}: {dy} {dg}");
        }
        for n in [6144 * 3 + 5, 1] {
            let g = uniform(&mut rng, &[n], 4.0);
            let u = uniform(&mut rng, &[n], 2.0);
            let (dy, dg) = cpu_vs_cuda(&[g, u], 2, |s| silu_mul(&s[0], &s[1]));
            assert!(dy < 1e-5 && dg < 1e-5, "silu_mul {n}: {dy} {dg}");
        }
        for (rows, v) in [(5, 151_936), (3, 1000), (2, 1)] {
            let x = uniform(&mut rng, &[rows, v], 8.0);
            let t: Vec<u32> = (0..rows).map(|r| ((r * 7919) % v) as u32).collect();
            let t = Tensor::from_vec(t, rows, &Device::Cpu).unwrap();
            let (dy, dg) = cpu_vs_cuda(&[x, t], 1, |s| nll(&s[0], &s[1]));
            // Values near 17: the CPU sums a row's 151,936 exponentials in sequence, the GPU
            // as a tree, so they differ in the fifth significant digit.
            assert!(dy < 5e-4 && dg < 1e-6, "nll {rows}x{v}: {dy} {dg}");
        }
        let q = uniform(&mut rng, &[2, 16, 64, 128], 1.0);
        let k = uniform(&mut rng, &[2, 8, 64, 128], 1.0);
        let v = uniform(&mut rng, &[2, 8, 64, 128], 1.0);
        let (dy, dg) = cpu_vs_cuda(&[q, k, v], 3, |s| {
            causal_attention(&s[0], &s[1], &s[2], 0.088)
        });
        assert!(dy < 1e-4 && dg < 1e-4, "attention: {dy} {dg}");
    }

    #[test]
    fn a_dropout_mask_made_on_the_gpu_equals_the_cpu_one() {
        let gpu = Device::new_cuda(0).expect("the cuda feature's tests need a GPU");
        let shape = Shape::from((1000, 333));
        let c = dropout_mask(&shape, 0.05, 12345, &Device::Cpu).unwrap();
        let g = dropout_mask(&shape, 0.05, 12345, &gpu).unwrap();
        assert_eq!(max_abs_diff(&c, &g.to_device(&Device::Cpu).unwrap()), 0.0);
    }

    #[test]
    fn empty_inputs_launch_nothing() {
        let gpu = Device::new_cuda(0).expect("the cuda feature's tests need a GPU");
        let x = Tensor::zeros((0, 8), DType::F32, &gpu).unwrap();
        let w = Tensor::ones(8, DType::F32, &gpu).unwrap();
        assert_eq!(rms_norm(&x, &w, 1e-6).unwrap().dims(), [0, 8]);
    }
}
