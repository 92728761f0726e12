//! Bicubic resampling of 8-bit RGB images, bit-exact with the reference processor's resize.
//!
//! The reference Qwen3-VL processor resizes `uint8` images with antialiased bicubic
//! interpolation: by default with torchvision (transformers 5's default backend, PyTorch's native
//! uint8 kernel), or with Pillow (`backend: "pil"`). Both run the same separable algorithm — a
//! filter whose support widens with the downscale factor, a horizontal pass rounded to `u8`, then
//! a vertical pass — and differ only in the fixed-point precision of the coefficients: Pillow
//! uses 22 bits; PyTorch stores them as `i16` with the most bits that keep the largest weight
//! under 2^15. Pixels then differ by one level between the two, so both are implemented.

/// Pillow's fixed-point precision for 8-bit images (32 bits minus 8 for the value and 2 for the
/// sum of several terms).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Whose fixed-point arithmetic to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// PyTorch's uint8 antialiased kernel, as torchvision calls it (transformers 5's default).
    #[default]
    Torchvision,
    /// Pillow's `Image.resize(..., BICUBIC)`.
    Pil,
}

/// Pillow's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index: the first input index and its fixed-point weights.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    weights: Vec<Vec<i32>>,
    precision: u32,
}

fn coefficients(in_size: usize, out_size: usize, backend: Backend) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut float_weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero; the clamp below makes that equal to a floor.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..count)
            .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) / filter_scale))
            .collect();
        let total: f64 = k.iter().sum();
        if total != 0.0 {
            for w in &mut k {
                *w /= total;
            }
        }
        bounds.push((xmin, count));
        float_weights.push(k);
    }
    let precision = match backend {
        Backend::Pil => PRECISION_BITS,
        Backend::Torchvision => {
            // PyTorch: the first precision at which the largest weight, at one bit more, would
            // no longer fit in an i16.
            let max_w = float_weights.iter().flatten().fold(0f64, |m, &w| m.max(w));
            let mut p = 0;
            while p < 22 && ((0.5 + max_w * f64::from(1u32 << (p + 1))) as i64) < (1 << 15) {
                p += 1;
            }
            p
        }
    };
    let weights = float_weights
        .iter()
        .map(|k| {
            k.iter()
                .map(|w| {
                    let v = w * f64::from(1u32 << precision);
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect()
        })
        .collect();
    Coefficients {
        bounds,
        weights,
        precision,
    }
}

fn clip8(acc: i64, precision: u32) -> u8 {
    (acc >> precision).clamp(0, 255) as u8
}

/// Resizes an interleaved RGB8 image (`width * height * 3` bytes) to `out_w × out_h`.
pub fn resize_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    backend: Backend,
) -> Vec<u8> {
    debug_assert_eq!(src.len(), width * height * 3);
    // Horizontal pass (skipped when the width does not change, as both references do).
    let horizontal = if out_w != width {
        let c = coefficients(width, out_w, backend);
        let half = 1i64 << (c.precision - 1);
        let mut out = vec![0u8; out_w * height * 3];
        for y in 0..height {
            let row = &src[y * width * 3..(y + 1) * width * 3];
            for (xx, ((xmin, count), k)) in c.bounds.iter().zip(&c.weights).enumerate() {
                for ch in 0..3 {
                    let mut acc = half;
                    for (i, w) in k.iter().enumerate().take(*count) {
                        acc += i64::from(row[(xmin + i) * 3 + ch]) * i64::from(*w);
                    }
                    out[(y * out_w + xx) * 3 + ch] = clip8(acc, c.precision);
                }
            }
        }
        out
    } else {
        src.to_vec()
    };
    if out_h == height {
        return horizontal;
    }
    let c = coefficients(height, out_h, backend);
    let half = 1i64 << (c.precision - 1);
    let mut out = vec![0u8; out_w * out_h * 3];
    for (yy, ((ymin, count), k)) in c.bounds.iter().zip(&c.weights).enumerate() {
        for x in 0..out_w * 3 {
            let mut acc = half;
            for (i, w) in k.iter().enumerate().take(*count) {
                acc += i64::from(horizontal[(ymin + i) * out_w * 3 + x]) * i64::from(*w);
            }
            out[yy * out_w * 3 + x] = clip8(acc, c.precision);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn same_size_is_identity() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_rgb8(&src, 4, 3, 4, 3, Backend::Pil), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![200u8; 10 * 7 * 3];
        for backend in [Backend::Pil, Backend::Torchvision] {
            let out = resize_rgb8(&src, 10, 7, 4, 13, backend);
            assert!(out.iter().all(|&v| v == 200), "{out:?}");
        }
    }

    #[test]
    fn kernel_weights_sum_to_one() {
        for (i, o) in [(10, 3), (3, 10), (640, 448), (7, 7)] {
            for backend in [Backend::Pil, Backend::Torchvision] {
                let c = coefficients(i, o, backend);
                for k in &c.weights {
                    let sum: i64 = k.iter().map(|&w| i64::from(w)).sum();
                    assert!(
                        (sum - (1 << c.precision)).abs() <= k.len() as i64,
                        "{i}->{o}: {sum}"
                    );
                    assert!(k.iter().all(|&w| w.abs() < 1 << 15) || backend == Backend::Pil);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn output_has_requested_size_and_stays_in_range(
            w in 1usize..24, h in 1usize..24, ow in 1usize..24, oh in 1usize..24, seed in 0u8..255
        ) {
            let src: Vec<u8> = (0..w * h * 3).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let out = resize_rgb8(&src, w, h, ow, oh, Backend::Torchvision);
            prop_assert_eq!(out.len(), ow * oh * 3);
        }
    }
}
