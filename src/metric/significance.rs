//! Significance and intervals: the exact McNemar test on the pass/fail pairs of two runs, and the
//! seeded percentile bootstrap (interval and p-value) for any metric that is a function of the
//! per-case rows — of one report (its confidence intervals) or of two (the paired comparison).
//!
//! In a comparison both sides answered the same cases, so the tests are paired: the same
//! resampled cases serve both sides. An unpaired test on paired data (as some harnesses use)
//! throws the pairing away and is far less sensitive.

use serde::{Deserialize, Serialize};

/// The pass/fail pairs of two runs over the same cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PairCounts {
    pub both_pass: usize,
    /// Failed in A, passed in B.
    pub fixed: usize,
    /// Passed in A, failed in B.
    pub broken: usize,
    pub both_fail: usize,
}

/// The exact (binomial) McNemar test's two-sided p-value for the discordant pairs `fixed` and
/// `broken`: `min(1, 2 · P(X ≤ min(fixed, broken)))` with `X ~ Binomial(fixed + broken, 1/2)`,
/// as statsmodels' `mcnemar(exact=True)` and scipy's `binomtest(k, n, 0.5)` compute it. No
/// discordant pair gives 1.
pub fn mcnemar_exact(fixed: usize, broken: usize) -> f64 {
    let n = fixed + broken;
    if n == 0 {
        return 1.0;
    }
    let k = fixed.min(broken);
    (2.0 * binomial_half_cdf(k, n)).min(1.0)
}

/// `P(X ≤ k)` for `X ~ Binomial(n, 1/2)`. The top term `C(n, k) / 2ⁿ` is built as a product
/// with exact halvings interleaved (so it neither overflows nor underflows on the way); the lower
/// terms follow by the ratio `C(n, i−1) / C(n, i) = i / (n − i + 1)`. About `2k` roundings in
/// all: within 1e-12 of scipy's `binom.cdf` for n in the tens of thousands.
fn binomial_half_cdf(k: usize, n: usize) -> f64 {
    if k >= n {
        return 1.0;
    }
    let mut top = 1.0f64;
    let mut halvings = n;
    for j in 1..=k {
        top = top * (n - k + j) as f64 / j as f64;
        while top >= 2.0 && halvings > 0 {
            top *= 0.5;
            halvings -= 1;
        }
    }
    while halvings > 0 {
        let step = halvings.min(1000);
        top *= 2f64.powi(-(step as i32));
        halvings -= step;
    }
    let mut term = top;
    let mut sum = top;
    for i in (1..=k).rev() {
        term *= i as f64 / (n - i + 1) as f64;
        sum += term;
        if term <= sum * 1e-18 {
            break;
        }
    }
    sum.min(1.0)
}

/// Bootstrap settings: how many resamples and the seed that makes them reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
}

/// At least 2,000 resamples, as the comparison's intervals promise; the seed is arbitrary but
/// fixed, so the same reports give the same intervals on every machine.
pub const DEFAULT_BOOTSTRAP: Bootstrap = Bootstrap {
    resamples: 2000,
    seed: 0x7e57_5eed,
};

impl Default for Bootstrap {
    fn default() -> Self {
        DEFAULT_BOOTSTRAP
    }
}

impl Bootstrap {
    /// The resamples' index lists over `n` items: each draws `n` indices with replacement. The
    /// same lists serve both sides of a comparison, which is what makes the bootstrap paired.
    pub fn draws(&self, n: usize) -> Draws {
        Draws {
            rng: fastrand::Rng::with_seed(self.seed),
            n,
            left: if n == 0 { 0 } else { self.resamples },
            buf: Vec::with_capacity(n),
        }
    }
}

/// An iterator-like source of resampled index lists (see `Bootstrap::draws`).
pub struct Draws {
    rng: fastrand::Rng,
    n: usize,
    left: usize,
    buf: Vec<usize>,
}

impl Draws {
    /// The next resample's indices, or `None` after the last.
    pub fn next_draw(&mut self) -> Option<&[usize]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.buf.clear();
        for _ in 0..self.n {
            self.buf.push(self.rng.usize(..self.n));
        }
        Some(&self.buf)
    }
}

/// The `q`-quantile of sorted values by linear interpolation between order statistics (numpy's
/// default `linear` method).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// A percentile interval from bootstrap replicates of a statistic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
    /// Replicates the interval rests on (resamples where the statistic was defined).
    pub replicates: usize,
    /// `bootstrap_p_value` of the replicates: for a statistic that is a difference (an uplift),
    /// the two-sided p-value of "no difference".
    pub p_zero: f64,
}

/// The 95% percentile interval of the replicates (non-finite ones dropped), or `None` when none
/// is finite.
pub fn percentile_interval(replicates: &mut Vec<f64>) -> Option<Interval> {
    replicates.retain(|x| x.is_finite());
    if replicates.is_empty() {
        return None;
    }
    replicates.sort_by(f64::total_cmp);
    Some(Interval {
        lo: quantile_sorted(replicates, 0.025)?,
        hi: quantile_sorted(replicates, 0.975)?,
        replicates: replicates.len(),
        p_zero: bootstrap_p_value(replicates)?,
    })
}

/// The two-sided percentile-bootstrap p-value of a difference: `min(1, 2 · min(#{d ≤ 0},
/// #{d ≥ 0}) / R)` over the `R` finite replicates. It is the smallest α at which the
/// (1 − α) percentile interval leaves out 0, so "p < 0.05" and "the 95% interval excludes 0"
/// agree; identical sides give 1, and swapping the sides leaves it unchanged.
pub fn bootstrap_p_value(diffs: &[f64]) -> Option<f64> {
    let finite: Vec<f64> = diffs.iter().copied().filter(|d| d.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    let le = finite.iter().filter(|d| **d <= 0.0).count();
    let ge = finite.iter().filter(|d| **d >= 0.0).count();
    Some((2.0 * le.min(ge) as f64 / finite.len() as f64).min(1.0))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Exact binomial tail by rational arithmetic on small n (no logs), for cross-checking.
    fn direct_cdf(k: usize, n: usize) -> f64 {
        let mut c = 1.0f64;
        let mut sum = 0.0;
        for i in 0..=k {
            if i > 0 {
                c = c * (n - i + 1) as f64 / i as f64;
            }
            sum += c;
        }
        sum / 2f64.powi(n as i32)
    }

    #[test]
    fn mcnemar_edge_cases() {
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        // One discordant pair: P(X <= 0) = 1/2, doubled.
        assert_eq!(mcnemar_exact(1, 0), 1.0);
        // 0 vs 6: 2 / 64.
        assert!((mcnemar_exact(0, 6) - 2.0 / 64.0).abs() < 1e-15);
    }

    proptest! {
        #[test]
        fn log_space_cdf_equals_the_direct_sum(n in 1usize..60, k in 0usize..60) {
            let k = k % (n + 1);
            let a = binomial_half_cdf(k, n);
            let b = direct_cdf(k, n);
            prop_assert!((a - b).abs() < 1e-13, "{a} vs {b}");
        }

        #[test]
        fn mcnemar_is_symmetric_and_a_probability(f in 0usize..3000, b in 0usize..3000) {
            let p = mcnemar_exact(f, b);
            prop_assert_eq!(p, mcnemar_exact(b, f));
            prop_assert!((0.0..=1.0).contains(&p));
        }

        #[test]
        fn draws_are_reproducible_and_in_range(n in 1usize..200, seed in any::<u64>()) {
            let boot = Bootstrap { resamples: 5, seed };
            let (mut a, mut b) = (boot.draws(n), boot.draws(n));
            let mut count = 0;
            while let Some(x) = a.next_draw() {
                let x = x.to_vec();
                prop_assert_eq!(Some(&x[..]), b.next_draw());
                prop_assert!(x.iter().all(|&i| i < n));
                prop_assert_eq!(x.len(), n);
                count += 1;
            }
            prop_assert_eq!(count, 5);
        }

        #[test]
        fn p_value_is_symmetric_under_sign_flip(d in proptest::collection::vec(-1.0f64..1.0, 1..100)) {
            let flipped: Vec<f64> = d.iter().map(|x| -x).collect();
            prop_assert_eq!(bootstrap_p_value(&d), bootstrap_p_value(&flipped));
        }
    }

    #[test]
    fn quantiles_follow_numpy_linear() {
        // numpy.quantile([1, 2, 3, 4], [0.025, 0.975]) = [1.075, 3.925]
        let s = [1.0, 2.0, 3.0, 4.0];
        assert!((quantile_sorted(&s, 0.025).unwrap() - 1.075).abs() < 1e-12);
        assert!((quantile_sorted(&s, 0.975).unwrap() - 3.925).abs() < 1e-12);
        assert_eq!(bootstrap_p_value(&[0.0; 10]), Some(1.0));
        assert_eq!(bootstrap_p_value(&[0.1; 10]), Some(0.0));
    }
}
