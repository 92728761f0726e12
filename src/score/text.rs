//! Text normalisation shared by the string scorers: lowercase, accents stripped, punctuation
//! turned into spaces, whitespace collapsed.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Lowercases, strips accents (NFKD, combining marks dropped), maps every non-alphanumeric
/// character to a space and collapses runs of spaces. `"Crème  Brûlée!"` → `"creme brulee"`.
pub fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
    {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else {
            pending_space = true;
        }
    }
    out
}

/// Words of the normalised text.
pub fn words(s: &str) -> Vec<String> {
    normalise(s)
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Shortens `s` to at most `max` characters, marking the cut with `…`.
pub fn shorten(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn strips_case_accents_and_punctuation() {
        assert_eq!(normalise("Crème  Brûlée!"), "creme brulee");
        assert_eq!(
            normalise("  Pressure-Plate, ALIGNMENT tool. "),
            "pressure plate alignment tool"
        );
        assert_eq!(normalise(""), "");
    }

    #[test]
    fn shorten_marks_the_cut() {
        assert_eq!(shorten("a  b\nc", 10), "a b c");
        assert_eq!(shorten("abcdefghij", 5), "abcd…");
    }

    proptest! {
        #[test]
        fn normalise_is_idempotent(s in "\\PC*") {
            let once = normalise(&s);
            prop_assert_eq!(normalise(&once), once.clone());
        }

        #[test]
        fn normalised_has_no_edge_or_double_spaces(s in "\\PC*") {
            let n = normalise(&s);
            prop_assert!(!n.starts_with(' ') && !n.ends_with(' ') && !n.contains("  "));
        }

        #[test]
        fn shorten_respects_the_limit(s in "\\PC*", max in 1usize..80) {
            prop_assert!(shorten(&s, max).chars().count() <= max);
        }
    }
}
