//! `vlmtest labels sample`: a seeded subset of a ground-truth file for human review, written as a
//! pretty-printed JSON list with every record exactly as read (so `image_id` never changes), in
//! the input's order. The draw is a Fisher–Yates shuffle driven by SplitMix64 (the import
//! split's generator, fixed forever by its seed); `--stratify scene` draws from each primary
//! scene in proportion to its share (largest remainders), so rare scenes are not lost.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::convert::write_atomic;
use super::jsonl::read_records;
use super::LabelsError;
use crate::task::import::labels::parse_record;
use crate::task::import::split::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stratify {
    /// By each record's first scene label.
    Scene,
}

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub size: usize,
    pub seed: u64,
    pub stratify: Option<Stratify>,
}

/// What a sample took.
#[derive(Debug, Default)]
pub struct SampleReport {
    pub total: usize,
    pub written: usize,
    /// Records that are not ground truth, with line and why (skipped).
    pub rejected: Vec<String>,
    pub duplicate_ids: usize,
    /// Per stratum: (available, taken).
    pub strata: BTreeMap<String, (usize, usize)>,
}

impl SampleReport {
    pub fn render(&self, output: &Path) -> String {
        let mut s = format!(
            "sample: {} of {} records written to {} ({} rejected, {} duplicate ids)\n",
            self.written,
            self.total,
            output.display(),
            self.rejected.len(),
            self.duplicate_ids
        );
        for (k, (n, t)) in &self.strata {
            s.push_str(&format!("  {k:<32} {t:>6} of {n}\n"));
        }
        for r in self.rejected.iter().take(20) {
            s.push_str(&format!("  rejected: {r}\n"));
        }
        s
    }
}

fn shuffle(idx: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..idx.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
}

/// Picks `size` of the `groups` (each a list of item indices) in proportion to group size, by
/// largest remainder (ties to the larger group, then the earlier one). Returns the sorted chosen
/// indices.
pub fn draw(groups: &[Vec<usize>], size: usize, seed: u64) -> Vec<usize> {
    let total: usize = groups.iter().map(Vec::len).sum();
    let size = size.min(total);
    if total == 0 {
        return Vec::new();
    }
    let mut quota: Vec<usize> = groups.iter().map(|g| g.len() * size / total).collect();
    let mut left = size - quota.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    // Remainders compared exactly: (len·size mod total).
    order.sort_by_key(|&i| {
        (
            std::cmp::Reverse(groups[i].len() * size % total),
            std::cmp::Reverse(groups[i].len()),
            i,
        )
    });
    for &i in &order {
        if left == 0 {
            break;
        }
        if quota[i] < groups[i].len() {
            quota[i] += 1;
            left -= 1;
        }
    }
    let mut rng = SplitMix64::new(seed);
    let mut chosen = Vec::with_capacity(size);
    for (g, &q) in groups.iter().zip(&quota) {
        let mut idx = g.clone();
        shuffle(&mut idx, &mut rng);
        chosen.extend_from_slice(&idx[..q]);
    }
    chosen.sort_unstable();
    chosen
}

/// Runs the sample and writes the output.
pub fn sample(o: &SampleOptions) -> Result<SampleReport, LabelsError> {
    let parsed = read_records(&o.input)?;
    let mut report = SampleReport::default();
    for (line, why) in &parsed.bad {
        report
            .rejected
            .push(format!("{}:{line}: not JSON: {why}", o.input.display()));
    }
    let mut records: Vec<(String, Value)> = Vec::new();
    let mut seen = HashSet::new();
    for l in parsed.lines {
        match parse_record(&o.input, l.line, &l.value) {
            Ok((id, truth)) => {
                if !seen.insert(id) {
                    report.duplicate_ids += 1;
                    continue;
                }
                let key = match o.stratify {
                    Some(Stratify::Scene) => truth.scene.first().cloned().unwrap_or_default(),
                    None => String::new(),
                };
                records.push((key, l.value));
            }
            Err(e) => report.rejected.push(e.to_string()),
        }
    }
    report.total = records.len();
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (k, _)) in records.iter().enumerate() {
        groups.entry(k.as_str()).or_default().push(i);
    }
    let keys: Vec<&str> = groups.keys().copied().collect();
    let lists: Vec<Vec<usize>> = groups.values().cloned().collect();
    let chosen = draw(&lists, o.size, o.seed);
    if o.stratify.is_some() {
        for (k, g) in keys.iter().zip(&lists) {
            let taken = g.iter().filter(|i| chosen.binary_search(i).is_ok()).count();
            report.strata.insert((*k).to_owned(), (g.len(), taken));
        }
    }
    let picked: Vec<&Value> = chosen.iter().map(|&i| &records[i].1).collect();
    report.written = picked.len();
    let mut text = serde_json::to_string_pretty(&picked)
        .map_err(|e| LabelsError::write(&o.output, std::io::Error::other(e)))?;
    text.push('\n');
    write_atomic(&o.output, text.as_bytes())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A draw is deterministic, bounded by the total, free of repeats, and takes from each
        /// group its share rounded down or up.
        #[test]
        fn draws_are_proportional_subsets(sizes in prop::collection::vec(0usize..30, 1..6), size in 0usize..120, seed in any::<u64>()) {
            let mut next = 0;
            let groups: Vec<Vec<usize>> = sizes.iter().map(|&n| { let g = (next..next + n).collect(); next += n; g }).collect();
            let total = next;
            let a = draw(&groups, size, seed);
            prop_assert_eq!(&a, &draw(&groups, size, seed));
            prop_assert_eq!(a.len(), size.min(total));
            let mut d = a.clone();
            d.dedup();
            prop_assert_eq!(d.len(), a.len());
            prop_assert!(a.iter().all(|&i| i < total));
            let take = size.min(total);
            for g in &groups {
                let t = g.iter().filter(|i| a.contains(i)).count();
                if let Some(exact) = (g.len() * take).checked_div(total) {
                    prop_assert!(t == exact || t == exact + 1, "{t} vs {exact}");
                }
            }
        }
    }

    #[test]
    fn samples_keep_records_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("gt.jsonl");
        let mut text = String::new();
        for i in 0..30 {
            let scene = if i % 10 == 0 {
                "scene.food"
            } else {
                "scene.product"
            };
            text.push_str(&format!(
                "{{\"image_id\": \"id{i:02}\", \"scene\": [\"{scene}\"], \"objects\": []}}\n"
            ));
        }
        text.push_str("{\"image_id\": \"id00\", \"scene\": [\"scene.food\"]}\n{\"scene\": []}\n");
        std::fs::write(&input, text).unwrap();
        let output = dir.path().join("human.json");
        let o = SampleOptions {
            input,
            output: output.clone(),
            size: 10,
            seed: 42,
            stratify: Some(Stratify::Scene),
        };
        let r = sample(&o).unwrap();
        assert_eq!(
            (r.total, r.written, r.duplicate_ids, r.rejected.len()),
            (30, 10, 1, 1)
        );
        assert_eq!(r.strata["scene.food"], (3, 1));
        assert_eq!(r.strata["scene.product"], (27, 9));
        let list: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
        assert_eq!(list.len(), 10);
        assert!(list.iter().all(|v| v["objects"] == serde_json::json!([])));
        let r = sample(&SampleOptions {
            size: 1000,
            stratify: None,
            ..o
        })
        .unwrap();
        assert_eq!(r.written, 30);
    }
}
