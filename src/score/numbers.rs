//! Exact numeric match: every number in the answer is extracted with its unit, unit spellings are
//! normalised (`Nm`, `N·m`, `N m` → `Nm`; `°`, `deg`, `degrees` → `deg`), and the expected numbers
//! are matched one-to-one within tolerance, converting within a dimension (`1,250 ml` = `1.25 l`).

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::Score;
use crate::case::{ExpectedNumber, Tolerance};

/// A number found in text, with its canonical unit if one follows (or precedes, for currency).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantity {
    pub value: f64,
    pub unit: Option<&'static str>,
    /// Byte offset in the source text.
    pub at: usize,
}

/// Unit spellings (case-insensitive unless marked) and their canonical names. Longer spellings
/// come first so that `°C` wins over `°` and `min` over `m`.
const UNITS: &[(&str, &str)] = &[
    (r"(?i)n\s?[·.\-*]?\s?m\b|newton[\s-]?met(?:er|re)s?", "Nm"),
    (
        r"(?i)(?:ft|foot)[\s.\-·]*lbs?\b|lb[s]?[\s.\-·]*ft\b|pound[\s-]?feet",
        "lbft",
    ),
    (r"(?i)in[\s.\-·]*lbs?\b", "lbin"),
    (r"°\s?C\b|(?i:degrees?\s+(?:c\b|celsius))", "degC"),
    (r"°\s?F\b|(?i:degrees?\s+(?:f\b|fahrenheit))", "degF"),
    (r"°|(?i:deg(?:rees?)?\b)", "deg"),
    (r"%|(?i:per\s?cent\b)", "%"),
    (r"(?i)km/h\b|kph\b", "kmh"),
    (r"(?i)mph\b", "mph"),
    (r"(?i)rpm\b|r/min\b", "rpm"),
    (r"(?i)kpa\b", "kPa"),
    (r"(?i)psi\b", "psi"),
    (r"(?i)bars?\b", "bar"),
    (r"(?i)ml\b|millilit(?:er|re)s?\b", "ml"),
    (r"(?i)l\b|lit(?:er|re)s?\b", "l"),
    (r"(?i)mm\b|millimet(?:er|re)s?\b", "mm"),
    (r"(?i)cm\b|centimet(?:er|re)s?\b", "cm"),
    (r"(?i)km\b|kilomet(?:er|re)s?\b", "km"),
    (r"(?i)kg\b|kilos?\b|kilograms?\b", "kg"),
    (r"(?i)g\b|grams?\b", "g"),
    (r"(?i)lbs?\b|pounds?\b", "lb"),
    (r"(?i)oz\b|ounces?\b", "oz"),
    (r"(?i)in\.|inch(?:es)?\b|\x22", "in"),
    (r"(?i)kw\b", "kW"),
    (r"(?i)hp\b|horsepower\b", "hp"),
    (r"W\b|(?i:watts?\b)", "W"),
    (r"V\b|(?i:volts?\b)", "V"),
    (r"A\b|(?i:amps?\b|amperes?\b)", "A"),
    (r"Ω|(?i:ohms?\b)", "ohm"),
    (r"(?i)min\b|mins\b|minutes?\b", "min"),
    (r"(?i)h\b|hrs?\b|hours?\b", "h"),
    (r"(?i)s\b|secs?\b|seconds?\b", "s"),
    (r"(?i)m\b|met(?:er|re)s?\b", "m"),
    (r"(?i)usd\b|dollars?\b", "usd"),
    (r"(?i)eur\b|euros?\b|€", "eur"),
    (r"(?i)gbp\b|£", "gbp"),
];

/// Each canonical unit's base unit and the factor to convert into it.
fn base(unit: &str) -> (&str, f64) {
    match unit {
        "ml" => ("l", 1e-3),
        "mm" => ("m", 1e-3),
        "cm" => ("m", 1e-2),
        "km" => ("m", 1e3),
        "in" => ("m", 0.0254),
        "g" => ("kg", 1e-3),
        "lb" => ("kg", 0.453_592_37),
        "oz" => ("kg", 0.028_349_523_125),
        "kPa" => ("bar", 1e-2),
        "psi" => ("bar", 0.068_947_572_93),
        "min" => ("s", 60.0),
        "h" => ("s", 3600.0),
        "kW" => ("W", 1e3),
        "lbft" => ("Nm", 1.355_817_948),
        "lbin" => ("Nm", 0.112_984_829),
        other => (other, 1.0),
    }
}

/// Canonical name of a unit spelling (`"N·m"` → `Some("Nm")`); `None` if unknown.
pub fn canonical_unit(spelling: &str) -> Option<&'static str> {
    let s = spelling.trim();
    for (re, canon) in unit_regexes() {
        if let Some(m) = re.find(s) {
            if m.start() == 0 && m.end() == s.len() {
                return Some(canon);
            }
        }
    }
    None
}

fn unit_regexes() -> &'static [(Regex, &'static str)] {
    static RES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        UNITS
            .iter()
            .map(|(p, c)| {
                (
                    Regex::new(&format!("^(?:{p})")).expect("unit pattern compiles"),
                    *c,
                )
            })
            .collect()
    });
    &RES
}

static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?P<cur>[$€£])?\s?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
        .expect("number pattern compiles")
});

static RANGE_JOIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(?:-|–|to)\s*$").expect("range pattern compiles"));

/// Extracts every number with its unit. Ranges such as `40-45 Nm` give both ends the unit.
pub fn extract(text: &str) -> Vec<Quantity> {
    let mut out: Vec<Quantity> = Vec::new();
    for caps in NUMBER.captures_iter(text) {
        let Some(num) = caps.name("num") else {
            continue;
        };
        let Ok(mut value) = num.as_str().replace(',', "").parse::<f64>() else {
            continue;
        };
        // A minus sign counts only where it cannot be a range dash (`40-45`) or a hyphen (`M-12`).
        let before = &text[..num.start()];
        let cur = caps.name("cur");
        let sign_zone = match cur {
            Some(c) => &text[..c.start()],
            None => before,
        };
        if let Some(prefix) = sign_zone
            .strip_suffix('-')
            .or_else(|| sign_zone.strip_suffix('−'))
        {
            let prev = prefix.chars().last();
            if prev.is_none_or(|c| c.is_whitespace() || matches!(c, '(' | ':' | '=' | '[')) {
                value = -value;
            }
        }
        // Digits glued to letters before them (`M12`, `E30`) are part of a name, not a quantity.
        if cur.is_none() && before.chars().last().is_some_and(|c| c.is_alphabetic()) {
            continue;
        }
        let mut unit = cur.map(|c| match c.as_str() {
            "$" => "usd",
            "€" => "eur",
            _ => "gbp",
        });
        if unit.is_none() {
            unit = unit_after(&text[num.end()..]);
        }
        out.push(Quantity {
            value,
            unit,
            at: num.start(),
        });
    }
    // Propagate a range's unit backwards: in `40-45 Nm` and `40 to 45 Nm` the first end has none.
    for i in (1..out.len()).rev() {
        if out[i - 1].unit.is_none() && out[i].unit.is_some() {
            let gap_start = out[i - 1].at;
            let between = &text[gap_start..out[i].at];
            let digits_end = between
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == ','))
                .map_or(between.len(), |(j, _)| j);
            if RANGE_JOIN.is_match(&between[digits_end..]) {
                out[i - 1].unit = out[i].unit;
            }
        }
    }
    out
}

fn unit_after(rest: &str) -> Option<&'static str> {
    let trimmed = rest.strip_prefix(' ').unwrap_or(rest);
    for (re, canon) in unit_regexes() {
        if re.is_match(trimmed) {
            return Some(canon);
        }
    }
    None
}

/// True when `found` satisfies `expected` within `tol` (converting units of one dimension).
pub fn quantity_matches(expected: &ExpectedNumber, tol: Tolerance, found: &Quantity) -> bool {
    let (exp_value, found_value) = match expected.unit.as_deref() {
        None => (expected.value, found.value),
        Some(spelled) => {
            let Some(exp_unit) = canonical_unit(spelled) else {
                return false;
            };
            let Some(found_unit) = found.unit else {
                return false;
            };
            let (eb, ef) = base(exp_unit);
            let (fb, ff) = base(found_unit);
            if eb != fb {
                return false;
            }
            (expected.value * ef, found.value * ff)
        }
    };
    let allowed = tol.abs.max(tol.rel * exp_value.abs());
    (exp_value - found_value).abs() <= allowed * (1.0 + 1e-12) + f64::EPSILON * exp_value.abs()
}

/// Matches expected numbers one-to-one against the answer's quantities, in order. Returns, per
/// expected number, the index of the quantity it matched.
pub fn match_all(
    expected: &[ExpectedNumber],
    tol: Tolerance,
    found: &[Quantity],
) -> Vec<Option<usize>> {
    let mut used = vec![false; found.len()];
    expected
        .iter()
        .map(|e| {
            let hit = found
                .iter()
                .enumerate()
                .find(|(i, q)| !used[*i] && quantity_matches(e, tol, q));
            hit.map(|(i, _)| {
                used[i] = true;
                i
            })
        })
        .collect()
}

fn show(e: &ExpectedNumber) -> String {
    match &e.unit {
        Some(u) => format!("{} {u}", e.value),
        None => e.value.to_string(),
    }
}

pub fn score(
    expected: &[ExpectedNumber],
    tol: Tolerance,
    min_matched: Option<usize>,
    threshold: f64,
    answer: &str,
) -> Score {
    let found = extract(answer);
    let hits = match_all(expected, tol, &found);
    let matched = hits.iter().filter(|h| h.is_some()).count();
    let needed = min_matched.unwrap_or(expected.len()).min(expected.len());
    let value = if expected.is_empty() {
        1.0
    } else {
        matched as f64 / expected.len() as f64
    };
    let missing: Vec<String> = expected
        .iter()
        .zip(&hits)
        .filter(|(_, h)| h.is_none())
        .map(|(e, _)| show(e))
        .collect();
    let mut detail = format!("matched {matched}/{} numbers", expected.len());
    if !missing.is_empty() {
        detail.push_str(&format!("; missing {}", missing.join(", ")));
    }
    let mut s = Score::scored("numeric", value, threshold, detail);
    s.passed = matched >= needed && value >= threshold;
    s.with_data(serde_json::json!({ "found": found, "missing": missing }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn units(text: &str) -> Vec<(f64, Option<&'static str>)> {
        extract(text)
            .into_iter()
            .map(|q| (q.value, q.unit))
            .collect()
    }

    #[test]
    fn extracts_the_issue_examples() {
        assert_eq!(
            units("Stage 1: 40 Nm, Stage 2: 90°"),
            vec![
                (1.0, None),
                (40.0, Some("Nm")),
                (2.0, None),
                (90.0, Some("deg"))
            ]
        );
        assert_eq!(units("$4.89"), vec![(4.89, Some("usd"))]);
        assert_eq!(units("1,250 ml"), vec![(1250.0, Some("ml"))]);
        assert_eq!(units("12.5%"), vec![(12.5, Some("%"))]);
    }

    #[test]
    fn normalises_unit_spellings() {
        for s in [
            "40 Nm",
            "40 N·m",
            "40 N m",
            "40 N-m",
            "40 newton metres",
            "40Nm",
        ] {
            assert_eq!(units(s), vec![(40.0, Some("Nm"))], "{s}");
        }
        for s in ["90°", "90 °", "90 degrees", "90 deg"] {
            assert_eq!(units(s), vec![(90.0, Some("deg"))], "{s}");
        }
        assert_eq!(units("85 °C"), vec![(85.0, Some("degC"))]);
        assert_eq!(units("2.9 bars"), vec![(2.9, Some("bar"))]);
        assert_eq!(canonical_unit("N·m"), Some("Nm"));
        assert_eq!(canonical_unit("degrees"), Some("deg"));
        assert_eq!(canonical_unit("furlongs"), None);
    }

    #[test]
    fn ranges_signs_and_names() {
        assert_eq!(
            units("40-45 Nm"),
            vec![(40.0, Some("Nm")), (45.0, Some("Nm"))]
        );
        assert_eq!(
            units("40 to 45 Nm"),
            vec![(40.0, Some("Nm")), (45.0, Some("Nm"))]
        );
        assert_eq!(units("set to -5 °C"), vec![(-5.0, Some("degC"))]);
        assert_eq!(units("the E30 M3 uses M12 bolts"), vec![]);
        assert_eq!(units("5 screws"), vec![(5.0, None)]);
    }

    #[test]
    fn matches_with_units_tolerance_and_conversion() {
        let tol = Tolerance { abs: 0.0, rel: 0.0 };
        let e = |v: f64, u: &str| ExpectedNumber {
            value: v,
            unit: Some(u.into()),
        };
        let s = score(
            &[e(40.0, "Nm"), e(90.0, "°"), e(90.0, "deg")],
            tol,
            None,
            1.0,
            "Stage 1: 40 Nm, Stage 2: 90°, Stage 3: 90 degrees",
        );
        assert!(s.passed, "{}", s.detail);
        let s = score(
            &[e(40.0, "Nm"), e(90.0, "deg"), e(90.0, "deg")],
            tol,
            None,
            1.0,
            "40 Nm then 90°",
        );
        assert!(!s.passed);
        assert!(s.detail.contains("matched 2/3"), "{}", s.detail);
        assert!(score(&[e(1.25, "l")], tol, None, 1.0, "about 1,250 ml").passed);
        assert!(!score(&[e(40.0, "Nm")], tol, None, 1.0, "40 mm").passed);
        let loose = Tolerance {
            abs: 0.0,
            rel: 0.05,
        };
        assert!(score(&[e(40.0, "Nm")], loose, None, 1.0, "41 Nm").passed);
        assert!(!score(&[e(40.0, "Nm")], loose, None, 1.0, "43 Nm").passed);
        let any = ExpectedNumber {
            value: 4.89,
            unit: None,
        };
        assert!(score(&[any], tol, None, 1.0, "Price: $4.89").passed);
        assert!(score(&[e(40.0, "Nm"), e(7.0, "Nm")], tol, Some(1), 0.0, "40 Nm").passed);
    }

    proptest! {
        #[test]
        fn extraction_never_panics(s in "\\PC{0,60}") {
            let _ = extract(&s);
        }

        #[test]
        fn a_formatted_quantity_is_found(v in 0u32..100_000, cents in 0u32..100, unit in prop::sample::select(vec!["Nm", "N·m", "°", "degrees", "%", "ml", "mm", "kg", "psi", "rpm"])) {
            let value = v as f64 + cents as f64 / 100.0;
            let text = format!("Spec: {value:.2} {unit}.");
            let exp = ExpectedNumber { value, unit: Some(unit.to_string()) };
            let tol = Tolerance { abs: 1e-9, rel: 0.0 };
            prop_assert!(score(&[exp], tol, None, 1.0, &text).passed, "{}", text);
        }

        #[test]
        fn thousands_separators_parse(v in 1_000u64..10_000_000) {
            let mut digits = v.to_string();
            let mut grouped = String::new();
            while digits.len() > 3 {
                let tail = digits.split_off(digits.len() - 3);
                grouped = format!(",{tail}{grouped}");
            }
            let text = format!("{digits}{grouped} ml");
            prop_assert_eq!(units(&text), vec![(v as f64, Some("ml"))]);
        }

        #[test]
        fn matching_is_one_to_one(vals in proptest::collection::vec(0u16..50, 1..6)) {
            let text: Vec<String> = vals.iter().map(|v| format!("{v} Nm")).collect();
            let text = text.join(", ");
            let exps: Vec<ExpectedNumber> = vals.iter().map(|v| ExpectedNumber { value: *v as f64, unit: Some("Nm".into()) }).collect();
            let mut doubled = exps.clone();
            doubled.extend(exps.iter().cloned());
            let tol = Tolerance::default();
            prop_assert!(score(&exps, tol, None, 1.0, &text).passed);
            // Each found number can satisfy one expectation only.
            prop_assert!(!score(&doubled, tol, None, 1.0, &text).passed);
        }
    }
}
