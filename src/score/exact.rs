//! Exact string match: byte-equal after trimming, or equal after `text::normalise`.

use super::text::normalise;
use super::Score;

pub fn matches(expected: &str, normalise_first: bool, answer: &str) -> bool {
    if normalise_first {
        normalise(expected) == normalise(answer)
    } else {
        expected.trim() == answer.trim()
    }
}

pub fn score(expected: &str, normalise_first: bool, answer: &str) -> Score {
    let ok = matches(expected, normalise_first, answer);
    let name = if normalise_first {
        "exact_normalised"
    } else {
        "exact"
    };
    let detail = if ok {
        "matched".to_string()
    } else {
        format!("expected `{expected}`")
    };
    Score::scored(name, if ok { 1.0 } else { 0.0 }, 1.0, detail)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn exact_and_normalised() {
        assert!(matches("Paris", false, "  Paris\n"));
        assert!(!matches("Paris", false, "paris."));
        assert!(matches("Paris", true, "paris."));
        assert!(!score("Paris", true, "Lyon").passed);
    }

    proptest! {
        #[test]
        fn a_string_matches_itself(s in "\\PC*") {
            prop_assert!(matches(&s, false, &s));
            prop_assert!(matches(&s, true, &s.to_uppercase()) || normalise(&s) != normalise(&s.to_uppercase()));
        }
    }
}
