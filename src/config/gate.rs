//! A gate's bound as `vlmtest.toml` writes it: a bare number is a minimum; a table holds `min`,
//! `max` or both. Anything else (`{ maximum = 0.1 }`, `{}`, `min > max`, a non-finite number) is a
//! parse error, so a misspelt bound can never leave a gate that always passes.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A gate's bound: a bare number is a minimum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GateBound {
    /// `name = 0.5`: at least this.
    Min(f64),
    /// `name = { min = …, max = … }`: at least one of the two is present.
    Range {
        /// Lower bound, inclusive.
        min: Option<f64>,
        /// Upper bound, inclusive.
        max: Option<f64>,
    },
}

impl GateBound {
    /// `(min, max)`, either possibly absent.
    pub fn bounds(self) -> (Option<f64>, Option<f64>) {
        match self {
            GateBound::Min(m) => (Some(m), None),
            GateBound::Range { min, max } => (min, max),
        }
    }
}

const KEYS: &[&str] = &["min", "max"];

fn finite<E: de::Error>(v: f64, what: &str) -> Result<f64, E> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(E::custom(format!(
            "gate {what} must be a finite number, not {v}"
        )))
    }
}

struct BoundVisitor;

impl<'de> Visitor<'de> for BoundVisitor {
    type Value = GateBound;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number (a minimum) or a table `{ min = …, max = … }`")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<GateBound, E> {
        finite(v, "minimum").map(GateBound::Min)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<GateBound, E> {
        Ok(GateBound::Min(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<GateBound, E> {
        Ok(GateBound::Min(v as f64))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GateBound, A::Error> {
        let (mut min, mut max) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "min" => &mut min,
                "max" => &mut max,
                other => return Err(de::Error::unknown_field(other, KEYS)),
            };
            if slot.is_some() {
                return Err(de::Error::custom(format!("duplicate gate bound `{key}`")));
            }
            *slot = Some(finite(map.next_value::<f64>()?, &key)?);
        }
        match (min, max) {
            (None, None) => Err(de::Error::custom(
                "a gate bound table needs `min`, `max` or both",
            )),
            (Some(lo), Some(hi)) if lo > hi => Err(de::Error::custom(format!(
                "gate bound min = {lo} is above max = {hi}: no value could pass"
            ))),
            _ => Ok(GateBound::Range { min, max }),
        }
    }
}

impl<'de> Deserialize<'de> for GateBound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoundVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct One {
        g: GateBound,
    }

    fn parse(value: &str) -> Result<GateBound, String> {
        toml::from_str::<One>(&format!("g = {value}\n"))
            .map(|o| o.g)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn numbers_and_tables() {
        assert_eq!(parse("0.5"), Ok(GateBound::Min(0.5)));
        assert_eq!(parse("1"), Ok(GateBound::Min(1.0)));
        assert_eq!(
            parse("{ max = 55.0 }"),
            Ok(GateBound::Range {
                min: None,
                max: Some(55.0)
            })
        );
        assert_eq!(
            parse("{ min = 0.1, max = 0.9 }").map(GateBound::bounds),
            Ok((Some(0.1), Some(0.9)))
        );
    }

    /// Each of these was accepted before as a bound with neither end: a gate that always passed.
    #[test]
    fn a_misspelt_or_empty_bound_is_an_error() {
        let err = parse("{ maximum = 0.1 }").expect_err("unknown key");
        assert!(err.contains("maximum") && err.contains("min"), "{err}");
        assert!(parse("{}").expect_err("empty").contains("needs"));
        assert!(parse("{ min = 0.9, max = 0.1 }")
            .expect_err("empty range")
            .contains("above"));
        assert!(parse("nan").is_err());
        assert!(parse("{ max = inf }").is_err());
        assert!(parse("\"0.5\"").is_err());
    }

    proptest! {
        #[test]
        fn any_other_key_is_refused(key in "[a-z_]{1,10}", v in -10.0f64..10.0) {
            prop_assume!(key != "min" && key != "max");
            let err = parse(&format!("{{ {key} = {v:?} }}")).expect_err("unknown key");
            prop_assert!(err.contains(&key), "{}", err);
        }

        #[test]
        fn ranges_parse_when_ordered(lo in -1e6f64..1e6, hi in -1e6f64..1e6) {
            let got = parse(&format!("{{ min = {lo:?}, max = {hi:?} }}"));
            if lo <= hi {
                prop_assert_eq!(got, Ok(GateBound::Range { min: Some(lo), max: Some(hi) }));
            } else {
                prop_assert!(got.is_err());
            }
        }

        #[test]
        fn a_bare_number_is_a_minimum(v in -1e9f64..1e9) {
            prop_assert_eq!(parse(&format!("{v:?}")), Ok(GateBound::Min(v)));
        }
    }
}
