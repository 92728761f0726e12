//! Pulling structured answers out of free model text: the first JSON object or array (inside code
//! fences or surrounded by prose), and numbers written as prices (`$4.89`, `4,89 €`, `1,299.00`).

use std::sync::LazyLock;

use regex::Regex;

/// The first JSON object or array in `text` that parses as a whole value, with its byte offset.
/// Candidates start at each `{` or `[`; one that does not parse is skipped, so prose such as
/// `[see below]` before the real answer does not hide it.
pub fn first_json(text: &str) -> Option<(serde_json::Value, usize)> {
    for (i, c) in text.char_indices() {
        if c != '{' && c != '[' {
            continue;
        }
        let mut it =
            serde_json::Deserializer::from_str(&text[i..]).into_iter::<serde_json::Value>();
        if let Some(Ok(v)) = it.next() {
            return Some((v, i));
        }
    }
    None
}

static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.,]\d+)?").expect("static regex")
});

/// Parses a price-like string: currency symbols and words around it are ignored, `1,299.50` and
/// `1.299,50`-free forms are handled (a lone comma followed by one or two digits is a decimal
/// comma). `None` when the text holds no number.
pub fn parse_number(text: &str) -> Option<f64> {
    let m = NUMBER.find(text)?;
    let s = m.as_str();
    let cleaned = if s.contains('.') {
        s.replace(',', "")
    } else if let Some((head, tail)) = s.rsplit_once(',') {
        if tail.len() <= 2 && !head.contains(',') {
            format!("{head}.{tail}")
        } else {
            s.replace(',', "")
        }
    } else {
        s.to_owned()
    };
    cleaned.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A JSON number, or a string that `parse_number` reads.
pub fn json_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => parse_number(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn finds_json_in_fences_and_prose() {
        let t = "Sure! [see below]\n```json\n{\"is_spam\": true, \"confidence\": 0.9}\n```\nDone.";
        assert_eq!(
            first_json(t).unwrap().0,
            json!({"is_spam": true, "confidence": 0.9})
        );
        assert_eq!(
            first_json("deals: [{\"name\":\"a\"}] ok").unwrap().0,
            json!([{"name": "a"}])
        );
        assert!(first_json("no json {here").is_none());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("$4.89"), Some(4.89));
        assert_eq!(parse_number("The price is 1,299.50 USD"), Some(1299.5));
        assert_eq!(parse_number("2,49 €"), Some(2.49));
        assert_eq!(parse_number("12,000"), Some(12000.0));
        assert_eq!(parse_number("free"), None);
    }

    proptest! {
        #[test]
        fn embedded_value_is_recovered(
            prose in "[a-zA-Z ,.:!]{0,40}",
            tail in "[a-zA-Z ,.:!]{0,40}",
            v in prop::collection::btree_map("[a-z]{1,6}", any::<i32>(), 0..5),
        ) {
            let value = serde_json::to_value(&v).unwrap();
            let text = format!("{prose}```json\n{value}\n```{tail}");
            prop_assert_eq!(first_json(&text).map(|x| x.0), Some(value));
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = first_json(&s);
            let _ = parse_number(&s);
        }

        #[test]
        fn prices_round_trip(cents in 0u32..10_000_000, sym in prop::sample::select(vec!["$", "€ ", "", "USD "])) {
            let v = cents as f64 / 100.0;
            let text = format!("{sym}{v:.2}");
            prop_assert!((parse_number(&text).unwrap() - v).abs() < 1e-9);
        }
    }
}
