//! The text-only baseline of seed 001: TF-IDF features fitted on the training descriptions only
//! (no leakage), and an L2-regularised logistic regression on them. Its predictions are scored with
//! the same metrics as the model's, so a report shows the model's uplift over it.
//!
//! No maintained crate fits without pulling a linear-algebra stack into every build (linfa needs
//! ndarray and argmin), so both parts are small and checked against scikit-learn's
//! `TfidfVectorizer` and `LogisticRegression` by `scripts/reference_metrics.py`.

pub mod logistic;
pub mod tfidf;

use serde::{Deserialize, Serialize};

/// One baseline prediction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselinePrediction {
    pub is_spam: bool,
    /// Probability of spam.
    pub p_spam: f64,
}

/// Fits TF-IDF + logistic regression on `(text, label)` training rows and predicts `test`.
/// Returns `None` when the training rows hold a single class (nothing to learn).
pub fn fit_predict(train: &[(&str, bool)], test: &[&str]) -> Option<Vec<BaselinePrediction>> {
    let has = |c: bool| train.iter().any(|r| r.1 == c);
    if !has(true) || !has(false) {
        return None;
    }
    let texts: Vec<&str> = train.iter().map(|r| r.0).collect();
    let vec = tfidf::TfIdf::fit(&texts, tfidf::MAX_FEATURES);
    let x: Vec<tfidf::SparseRow> = texts.iter().map(|t| vec.transform(t)).collect();
    let y: Vec<bool> = train.iter().map(|r| r.1).collect();
    let model = logistic::Logistic::fit(&x, &y, vec.len(), 1.0);
    Some(
        test.iter()
            .map(|t| {
                let p = model.predict_proba(&vec.transform(t));
                BaselinePrediction {
                    is_spam: p > 0.5,
                    p_spam: p,
                }
            })
            .collect(),
    )
}
