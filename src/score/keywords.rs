//! Keyword presence: each keyword must appear in the answer, case- and accent-insensitively, at
//! the start of a word (so `plate` matches `plates`, but `late` does not match `plate`).

use super::text::normalise;
use super::Score;

/// True when the normalised `keyword` occurs in the normalised `answer` starting at a word
/// boundary. An empty keyword never matches.
pub fn contains_keyword(answer_normalised: &str, keyword: &str) -> bool {
    let kw = normalise(keyword);
    if kw.is_empty() {
        return false;
    }
    answer_normalised
        .match_indices(&kw)
        .any(|(i, _)| i == 0 || answer_normalised.as_bytes()[i - 1] == b' ')
}

pub fn score(
    keywords: &[String],
    min_matched: Option<usize>,
    threshold: f64,
    answer: &str,
) -> Score {
    let norm = normalise(answer);
    let (found, missing): (Vec<&String>, Vec<&String>) =
        keywords.iter().partition(|k| contains_keyword(&norm, k));
    let needed = min_matched.unwrap_or(keywords.len()).min(keywords.len());
    let value = if keywords.is_empty() {
        1.0
    } else {
        found.len() as f64 / keywords.len() as f64
    };
    let mut detail = format!("found {}/{} keywords", found.len(), keywords.len());
    if !missing.is_empty() {
        let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        detail.push_str(&format!("; missing {}", list.join(", ")));
    }
    let mut s = Score::scored("keywords", value, threshold, detail);
    s.passed = found.len() >= needed && value >= threshold;
    s.with_data(serde_json::json!({ "found": found, "missing": missing }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn matches_case_and_accent_insensitively_at_word_starts() {
        let a =
            normalise("Remove the TRANSMISSION, then the pressure plates; use the Alignment-Tool.");
        assert!(contains_keyword(&a, "transmission"));
        assert!(contains_keyword(&a, "pressure plate"));
        assert!(contains_keyword(&a, "alignment tool"));
        assert!(!contains_keyword(&a, "late"));
        assert!(contains_keyword(&normalise("Café crème"), "creme"));
        assert!(!contains_keyword(&a, "  "));
    }

    #[test]
    fn min_matched_lowers_the_bar() {
        let kws = vec!["bolt".to_string(), "washer".to_string(), "nut".to_string()];
        let s = score(&kws, Some(2), 0.0, "Tighten the bolt and the nut.");
        assert!(s.passed);
        assert!(s.detail.contains("missing washer"));
        let s = score(&kws, None, 0.0, "Tighten the bolt and the nut.");
        assert!(!s.passed);
    }

    proptest! {
        #[test]
        fn every_word_of_the_answer_is_found(words in proptest::collection::vec("[a-zA-Zéü]{1,8}", 1..8)) {
            let answer = words.join(" ");
            let s = score(&words, None, 1.0, &answer);
            prop_assert!(s.passed, "{}", s.detail);
            prop_assert_eq!(s.value, Some(1.0));
        }

        #[test]
        fn value_is_a_fraction(kws in proptest::collection::vec("[a-z]{1,5}", 0..6), answer in "[a-z ]{0,40}") {
            let s = score(&kws, None, 0.5, &answer);
            let v = s.value.unwrap_or(-1.0);
            prop_assert!((0.0..=1.0).contains(&v));
        }
    }
}
