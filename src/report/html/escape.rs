//! Escaping text for HTML element content and quoted attribute values.
//!
//! One function serves both contexts: `&`, `<`, `>`, `"` and `'` become character references,
//! NUL (which the HTML parser would turn into U+FFFD anyway, or drop) becomes U+FFFD, and every
//! other character is kept, so the page shows exactly what the model answered.

use std::borrow::Cow;

/// `s` with the five HTML-special characters as references and NUL as U+FFFD; borrowed when
/// nothing needs escaping (most metric names and numbers).
pub fn escape(s: &str) -> Cow<'_, str> {
    let special = |c: char| matches!(c, '&' | '<' | '>' | '"' | '\'' | '\0');
    if !s.contains(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + s.len() / 8 + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Appends `escape(s)` to `out` (the common case while building the page).
pub fn push(out: &mut String, s: &str) {
    out.push_str(&escape(s));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The inverse of `escape` for the references it writes, as an HTML parser reads them.
    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x&y's")</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;y&#39;s&quot;)&lt;/script&gt;"
        );
        assert!(matches!(escape("plain text 0.93"), Cow::Borrowed(_)));
        assert_eq!(escape("a\0b"), "a\u{FFFD}b");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    proptest! {
        #[test]
        fn output_has_no_markup_and_round_trips(s in "\\PC{0,80}|[<>&\"' a-z;#0-9]{0,40}") {
            let e = escape(&s);
            prop_assert!(!e.contains(['<', '>', '"', '\'', '\0']));
            // Every `&` starts one of the references we write.
            for (i, _) in e.match_indices('&') {
                let rest = &e[i..];
                prop_assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|r| rest.starts_with(r)));
            }
            prop_assert_eq!(unescape(&e), s.replace('\0', "\u{FFFD}"));
        }
    }
}
