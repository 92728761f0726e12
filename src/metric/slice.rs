//! Slices: the rows of an aggregate grouped by the value of one metadata field, so any aggregate
//! can be recomputed per group (image present / missing, category, content_type, store).

use std::collections::BTreeMap;

/// The group name of rows that lack the field.
pub const MISSING_VALUE: &str = "(unset)";

/// Renders a metadata value as a slice key: strings as they are, other JSON values as JSON.
pub fn key_of(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => MISSING_VALUE.into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Groups row indices by `key`, keeping `always` groups even when empty (their slice then has
/// no rows and reports no metrics).
pub fn group_indices<T>(
    rows: &[T],
    key: impl Fn(&T) -> String,
    always: &[&str],
) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = always
        .iter()
        .map(|k| ((*k).to_owned(), Vec::new()))
        .collect();
    for (i, r) in rows.iter().enumerate() {
        out.entry(key(r)).or_default().push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_empty_required_groups() {
        let g = group_indices(&["a", "a", "b"], |s| s.to_string(), &["present", "missing"]);
        assert_eq!(g["a"], vec![0, 1]);
        assert!(g["missing"].is_empty());
        assert_eq!(key_of(None), MISSING_VALUE);
        assert_eq!(key_of(Some(&serde_json::json!(3))), "3");
    }

    proptest! {
        #[test]
        fn partitions_rows(rows in prop::collection::vec(0u8..5, 0..50)) {
            let g = group_indices(&rows, |r| r.to_string(), &[]);
            let mut all: Vec<usize> = g.values().flatten().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..rows.len()).collect::<Vec<_>>());
            for (k, idx) in &g { for &i in idx { prop_assert_eq!(&rows[i].to_string(), k); } }
        }
    }
}
