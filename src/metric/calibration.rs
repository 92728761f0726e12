//! Calibration: expected calibration error with its reliability bins, over the probability of the
//! positive class. Bins are those of scikit-learn's `calibration_curve(strategy="uniform")`:
//! edges `i · (1/n)`, each bin `(lo, hi]` with 0 in the first bin.

use serde::Serialize;

/// One reliability bin (only non-empty bins are reported).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean predicted probability in the bin.
    pub mean_prob: f64,
    /// Observed fraction of positives in the bin.
    pub frac_pos: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// `Σ count/n · |frac_pos − mean_prob|` over the bins.
    pub ece: f64,
    pub bins: Vec<Bin>,
}

/// The bin index of `p` among `n_bins` uniform bins, matching numpy's
/// `searchsorted(linspace(0, 1, n+1)[1:-1], p)`.
fn bin_of(p: f64, n_bins: usize) -> usize {
    let step = 1.0 / n_bins as f64;
    (1..n_bins).filter(|&i| i as f64 * step < p).count()
}

/// ECE and reliability bins of `prob` (clamped to 0..=1) against `truth`; `None` for no rows.
pub fn calibration(truth: &[bool], prob: &[f64], n_bins: usize) -> Option<Calibration> {
    assert_eq!(
        truth.len(),
        prob.len(),
        "truth and probability lengths differ"
    );
    if truth.is_empty() || n_bins == 0 {
        return None;
    }
    let mut sum_p = vec![0.0; n_bins];
    let mut pos = vec![0usize; n_bins];
    let mut count = vec![0usize; n_bins];
    for (&t, &p) in truth.iter().zip(prob) {
        let p = p.clamp(0.0, 1.0);
        let b = bin_of(p, n_bins);
        sum_p[b] += p;
        pos[b] += usize::from(t);
        count[b] += 1;
    }
    let n = truth.len() as f64;
    let step = 1.0 / n_bins as f64;
    let mut bins = Vec::new();
    let mut ece = 0.0;
    for b in 0..n_bins {
        if count[b] == 0 {
            continue;
        }
        let mean_prob = sum_p[b] / count[b] as f64;
        let frac_pos = pos[b] as f64 / count[b] as f64;
        ece += count[b] as f64 / n * (frac_pos - mean_prob).abs();
        let hi = if b + 1 == n_bins {
            1.0
        } else {
            (b + 1) as f64 * step
        };
        bins.push(Bin {
            lo: b as f64 * step,
            hi,
            count: count[b],
            mean_prob,
            frac_pos,
        });
    }
    Some(Calibration { ece, bins })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edges_are_right_closed() {
        assert_eq!(bin_of(0.0, 10), 0);
        assert_eq!(bin_of(0.1, 10), 0);
        assert_eq!(bin_of(0.100_000_1, 10), 1);
        assert_eq!(bin_of(1.0, 10), 9);
    }

    #[test]
    fn perfectly_calibrated_extremes() {
        let c = calibration(&[true, false], &[1.0, 0.0], 10).unwrap();
        assert_eq!(c.ece, 0.0);
        assert_eq!(c.bins.len(), 2);
    }

    proptest! {
        #[test]
        fn ece_bounded_and_counts_add_up(
            rows in prop::collection::vec((any::<bool>(), 0.0f64..=1.0), 1..80),
            n_bins in 1usize..20,
        ) {
            let truth: Vec<bool> = rows.iter().map(|r| r.0).collect();
            let prob: Vec<f64> = rows.iter().map(|r| r.1).collect();
            let c = calibration(&truth, &prob, n_bins).unwrap();
            prop_assert!((0.0..=1.0).contains(&c.ece));
            prop_assert_eq!(c.bins.iter().map(|b| b.count).sum::<usize>(), rows.len());
            for b in &c.bins {
                prop_assert!(b.mean_prob >= b.lo - 1e-12 && b.mean_prob <= b.hi + 1e-12);
            }
        }
    }
}
