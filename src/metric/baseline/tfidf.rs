//! TF-IDF as scikit-learn's `TfidfVectorizer` defaults compute it: lowercase, tokens matching
//! `(?u)\b\w\w+\b`, raw term counts, smooth idf `ln((1 + n) / (1 + df)) + 1`, rows L2-normalised,
//! and the vocabulary limited to the `max_features` most frequent terms.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use regex::Regex;

/// The seed's `max_features`.
pub const MAX_FEATURES: usize = 10_000;

static TOKEN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\w\w+\b").expect("static regex"));

/// A sparse row: `(column, value)` sorted by column.
pub type SparseRow = Vec<(usize, f64)>;

#[derive(Debug, Clone)]
pub struct TfIdf {
    vocab: HashMap<String, usize>,
    idf: Vec<f64>,
}

pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    let lower = text.to_lowercase();
    TOKEN
        .find_iter(&lower)
        .map(|m| m.as_str().to_owned())
        .collect::<Vec<_>>()
        .into_iter()
}

impl TfIdf {
    pub fn fit(docs: &[&str], max_features: usize) -> Self {
        let mut df: BTreeMap<String, usize> = BTreeMap::new();
        let mut tf: BTreeMap<String, usize> = BTreeMap::new();
        for d in docs {
            let mut seen = std::collections::BTreeSet::new();
            for t in tokens(d) {
                *tf.entry(t.clone()).or_default() += 1;
                seen.insert(t);
            }
            for t in seen {
                *df.entry(t).or_default() += 1;
            }
        }
        let mut terms: Vec<(String, usize)> = tf.into_iter().collect();
        if terms.len() > max_features {
            // Most frequent first; ties alphabetical.
            terms.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            terms.truncate(max_features);
            terms.sort();
        }
        let n = docs.len() as f64;
        let idf = terms
            .iter()
            .map(|(t, _)| ((1.0 + n) / (1.0 + df[t] as f64)).ln() + 1.0)
            .collect();
        let vocab = terms
            .into_iter()
            .enumerate()
            .map(|(i, (t, _))| (t, i))
            .collect();
        Self { vocab, idf }
    }

    pub fn len(&self) -> usize {
        self.idf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    pub fn column(&self, term: &str) -> Option<usize> {
        self.vocab.get(term).copied()
    }

    pub fn transform(&self, text: &str) -> SparseRow {
        let mut counts: BTreeMap<usize, f64> = BTreeMap::new();
        for t in tokens(text) {
            if let Some(&c) = self.vocab.get(&t) {
                *counts.entry(c).or_default() += 1.0;
            }
        }
        let mut row: SparseRow = counts
            .into_iter()
            .map(|(c, v)| (c, v * self.idf[c]))
            .collect();
        let norm = row.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut row {
                *v /= norm;
            }
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn idf_and_norm() {
        let v = TfIdf::fit(&["free shipping free", "shipping today"], 100);
        let row = v.transform("free shipping free");
        let free = v.column("free").unwrap();
        let ship = v.column("shipping").unwrap();
        let idf_free = (3.0f64 / 2.0).ln() + 1.0;
        let (a, b) = (2.0 * idf_free, 1.0);
        let n = (a * a + b * b).sqrt();
        let get = |c| row.iter().find(|x| x.0 == c).unwrap().1;
        assert!((get(free) - a / n).abs() < 1e-12);
        assert!((get(ship) - b / n).abs() < 1e-12);
        assert!(v.column("a").is_none(), "one-letter tokens are dropped");
    }

    proptest! {
        #[test]
        fn rows_are_unit_or_empty(docs in prop::collection::vec("[a-e ]{0,30}", 1..10), q in "[a-f ]{0,30}") {
            let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
            let v = TfIdf::fit(&refs, 5);
            prop_assert!(v.len() <= 5);
            let row = v.transform(&q);
            let norm: f64 = row.iter().map(|x| x.1 * x.1).sum();
            prop_assert!(row.is_empty() || (norm - 1.0).abs() < 1e-9);
        }
    }
}
