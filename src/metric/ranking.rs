//! Ranking metrics: average precision (the area under the precision-recall curve as
//! scikit-learn's `average_precision_score` computes it: a step sum over distinct thresholds, so
//! tied scores form one threshold).

/// `Σ (R_k − R_{k−1}) · P_k` over the distinct scores, highest first. `None` for no rows; 0 when
/// there is no positive row (scikit-learn sets recall to 1 everywhere then, which gives 0).
pub fn average_precision(truth: &[bool], score: &[f64]) -> Option<f64> {
    assert_eq!(truth.len(), score.len(), "truth and score lengths differ");
    if truth.is_empty() {
        return None;
    }
    let positives = truth.iter().filter(|&&t| t).count();
    if positives == 0 {
        return Some(0.0);
    }
    let mut order: Vec<usize> = (0..truth.len()).collect();
    // Unstable: ties are consumed as one group, so their order inside it does not matter.
    order.sort_unstable_by(|&a, &b| score[b].total_cmp(&score[a]));
    let (mut tp, mut seen) = (0usize, 0usize);
    let (mut ap, mut prev_recall) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        // Consume one group of tied scores: they share a threshold.
        let s = score[order[i]];
        while i < order.len() && score[order[i]] == s {
            tp += usize::from(truth[order[i]]);
            seen += 1;
            i += 1;
        }
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / seen as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sklearn_docstring_example() {
        // average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8333...
        let ap = average_precision(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8]).unwrap();
        assert!((ap - 0.833_333_333_333_333_3).abs() < 1e-12);
    }

    #[test]
    fn ties_form_one_threshold() {
        let ap = average_precision(&[true, false, true, false], &[0.5; 4]).unwrap();
        assert!((ap - 0.5).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn bounded_and_perfect_ranking_is_one(
            rows in prop::collection::vec((any::<bool>(), 0.0f64..1.0), 1..50)
        ) {
            let truth: Vec<bool> = rows.iter().map(|r| r.0).collect();
            let score: Vec<f64> = rows.iter().map(|r| r.1).collect();
            let ap = average_precision(&truth, &score).unwrap();
            prop_assert!((0.0..=1.0 + 1e-12).contains(&ap));
            let perfect: Vec<f64> = truth.iter().map(|&t| if t { 1.0 } else { 0.0 }).collect();
            let best = average_precision(&truth, &perfect).unwrap();
            if truth.iter().any(|&t| t) { prop_assert!((best - 1.0).abs() < 1e-12); }
            prop_assert!(ap <= best + 1e-12 || !truth.iter().any(|&t| t));
        }

        #[test]
        fn invariant_under_monotone_transform(
            rows in prop::collection::vec((any::<bool>(), 0.0f64..1.0), 1..50)
        ) {
            let truth: Vec<bool> = rows.iter().map(|r| r.0).collect();
            let score: Vec<f64> = rows.iter().map(|r| r.1).collect();
            let squashed: Vec<f64> = score.iter().map(|s| 3.0 * s + 1.0).collect();
            prop_assert_eq!(average_precision(&truth, &score), average_precision(&truth, &squashed));
        }
    }
}
