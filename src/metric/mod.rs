//! Pure aggregate metrics over per-case results: classification, ranking, calibration, the review
//! / demote policy and its sweep, regression, deal matching, image labels and slices.
//!
//! Every function here is a pure function of plain slices, checked against scikit-learn by
//! `scripts/reference_metrics.py` and the `task_reference` integration test. A metric that is
//! undefined on its input (an empty slice) returns `None` rather than a made-up number.

pub mod baseline;
pub mod calibration;
pub mod classification;
pub mod labels;
pub mod matching;
pub mod policy;
pub mod ranking;
pub mod regression;
pub mod significance;
pub mod slice;

/// `num / den`, or 0 when `den` is 0 (scikit-learn's `zero_division=0`).
pub fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// F1 from counts: `2·tp / (2·tp + fp + fn)`, 0 when nothing was predicted or expected.
pub fn f1_from_counts(tp: f64, fp: f64, fn_: f64) -> f64 {
    ratio(2.0 * tp, 2.0 * tp + fp + fn_)
}
