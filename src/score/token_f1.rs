//! SQuAD-style token F1 between an answer and a free-text reference: normalised words, articles
//! dropped, multiset overlap.

use std::collections::HashMap;

use super::text::words;
use super::Score;

fn tokens(s: &str) -> Vec<String> {
    words(s)
        .into_iter()
        .filter(|w| !matches!(w.as_str(), "a" | "an" | "the"))
        .collect()
}

/// Token F1 in 0..=1. Two empty texts agree (1.0); one empty text against a non-empty one is 0.
pub fn token_f1(reference: &str, answer: &str) -> f64 {
    let r = tokens(reference);
    let a = tokens(answer);
    if r.is_empty() || a.is_empty() {
        return if r.is_empty() && a.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &r {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let mut overlap = 0usize;
    for t in &a {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                overlap += 1;
            }
        }
    }
    if overlap == 0 {
        return 0.0;
    }
    let p = overlap as f64 / a.len() as f64;
    let rec = overlap as f64 / r.len() as f64;
    2.0 * p * rec / (p + rec)
}

pub fn score(reference: &str, threshold: f64, answer: &str) -> Score {
    let f1 = token_f1(reference, answer);
    Score::scored(
        "token_f1",
        f1,
        threshold,
        format!("token F1 {f1:.3} vs reference"),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(token_f1("The cat sat", "cat sat"), 1.0);
        // 1 overlap, precision 1/2, recall 1/3 → F1 0.4.
        assert!((token_f1("red blue green", "red black") - 0.4).abs() < 1e-12);
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("x", ""), 0.0);
    }

    proptest! {
        #[test]
        fn symmetric_and_bounded(a in "[a-z ]{0,30}", b in "[a-z ]{0,30}") {
            let f = token_f1(&a, &b);
            prop_assert!((0.0..=1.0).contains(&f));
            prop_assert!((f - token_f1(&b, &a)).abs() < 1e-12);
        }

        #[test]
        fn identity_is_one(a in "[a-z]{1,6}( [a-z]{1,6}){0,5}") {
            prop_assert_eq!(token_f1(&a, &a), 1.0);
        }
    }
}
