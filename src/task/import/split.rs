//! A seeded, stratified train / validation split: each class is shuffled on its own (SplitMix64
//! and Fisher–Yates, stable across platforms and crate versions) and `round(n · fraction)` of it
//! goes to validation, keeping at least one row of a class with two or more in training.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    /// The validation rows (the default: what a suite evaluates).
    Val,
    Train,
    All,
}

/// SplitMix64: a tiny generator whose sequence is fixed by its seed forever.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

/// Marks each row `true` when it belongs to validation. `labels[i]` is row i's class.
pub fn stratified(labels: &[bool], fraction: f64, seed: u64) -> Vec<bool> {
    let mut rng = SplitMix64::new(seed);
    let mut is_val = vec![false; labels.len()];
    for class in [false, true] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        for i in (1..idx.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            idx.swap(i, j);
        }
        let mut n_val = (idx.len() as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
        if idx.len() >= 2 {
            n_val = n_val.min(idx.len() - 1);
        }
        for &i in &idx[..n_val] {
            is_val[i] = true;
        }
    }
    is_val
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stratified_and_deterministic(labels in prop::collection::vec(any::<bool>(), 0..200), seed in any::<u64>(), f in 0.0f64..0.5) {
            let a = stratified(&labels, f, seed);
            prop_assert_eq!(&a, &stratified(&labels, f, seed));
            for class in [false, true] {
                let n = labels.iter().filter(|&&l| l == class).count();
                let v = labels.iter().zip(&a).filter(|(&l, &v)| l == class && v).count();
                let want = ((n as f64 * f).round() as usize).min(if n >= 2 { n - 1 } else { n });
                prop_assert_eq!(v, want);
            }
        }
    }
}
