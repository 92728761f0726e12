//! One-to-one matching of predicted to ground-truth deals (seed 000) by bounding-box IoU and/or
//! normalised name, and the deal metrics built on the matched counts.
//!
//! Matching is greedy on the pair score, highest first: a pair is a candidate when its IoU reaches
//! `iou_threshold` (both sides have a box) or its name similarity (token Jaccard of normalised
//! names) reaches `name_threshold`; its score is the larger of the two qualifying values. Ties go
//! to the lower ground-truth index, then the lower prediction index, so results are deterministic.

use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use super::{f1_from_counts, ratio};

/// Intersection over union of two `[x0, y0, x1, y1]` boxes (corners in any order); 0 when either
/// box has no area.
pub fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let norm = |r: [f64; 4]| {
        [
            r[0].min(r[2]),
            r[1].min(r[3]),
            r[0].max(r[2]),
            r[1].max(r[3]),
        ]
    };
    let (a, b) = (norm(a), norm(b));
    let area = |r: [f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 || !union.is_finite() {
        0.0
    } else {
        inter / union
    }
}

/// Lowercase, accents stripped, every run of non-alphanumerics collapsed to one space.
pub fn normalise_name(s: &str) -> String {
    let folded: String = s
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .collect::<String>()
        .to_lowercase();
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Jaccard similarity of the normalised names' token sets; 1 for two empty names.
pub fn name_similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (normalise_name(a), normalise_name(b));
    let ta: std::collections::BTreeSet<&str> = a.split(' ').filter(|t| !t.is_empty()).collect();
    let tb: std::collections::BTreeSet<&str> = b.split(' ').filter(|t| !t.is_empty()).collect();
    let union = ta.union(&tb).count();
    if union == 0 {
        return 1.0;
    }
    ta.intersection(&tb).count() as f64 / union as f64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    Iou,
    Name,
    #[default]
    IouOrName,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchOptions {
    pub mode: MatchMode,
    pub iou_threshold: f64,
    pub name_threshold: f64,
}

impl Default for MatchOptions {
    fn default() -> Self {
        Self {
            mode: MatchMode::IouOrName,
            iou_threshold: 0.5,
            name_threshold: 0.5,
        }
    }
}

/// What matching looks at in a deal.
#[derive(Debug, Clone, PartialEq)]
pub struct Matchable<'a> {
    pub bbox: Option<[f64; 4]>,
    pub name: &'a str,
}

fn pair_score(g: &Matchable, p: &Matchable, o: &MatchOptions) -> Option<f64> {
    let by_iou = match (o.mode, g.bbox, p.bbox) {
        (MatchMode::Iou | MatchMode::IouOrName, Some(a), Some(b)) => {
            Some(iou(a, b)).filter(|&v| v >= o.iou_threshold && v > 0.0)
        }
        _ => None,
    };
    let by_name = match o.mode {
        MatchMode::Name | MatchMode::IouOrName => {
            Some(name_similarity(g.name, p.name)).filter(|&v| v >= o.name_threshold && v > 0.0)
        }
        MatchMode::Iou => None,
    };
    match (by_iou, by_name) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Matched `(gt_index, pred_index)` pairs, each index used at most once.
pub fn match_one_to_one(
    gt: &[Matchable],
    pred: &[Matchable],
    o: &MatchOptions,
) -> Vec<(usize, usize)> {
    let mut cands = Vec::new();
    for (i, g) in gt.iter().enumerate() {
        for (j, p) in pred.iter().enumerate() {
            if let Some(s) = pair_score(g, p, o) {
                cands.push((s, i, j));
            }
        }
    }
    cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut used_g, mut used_p) = (vec![false; gt.len()], vec![false; pred.len()]);
    let mut out = Vec::new();
    for (_, i, j) in cands {
        if !used_g[i] && !used_p[j] {
            used_g[i] = true;
            used_p[j] = true;
            out.push((i, j));
        }
    }
    out.sort_unstable();
    out
}

/// Per-page (or pooled) deal counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DealCounts {
    pub gt: u64,
    pub pred: u64,
    pub matched: u64,
    /// Matched deals whose price is right.
    pub price_ok: u64,
    /// Matched deals whose price and unit are both right.
    pub safe: u64,
}

impl std::ops::Add for DealCounts {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            gt: self.gt + o.gt,
            pred: self.pred + o.pred,
            matched: self.matched + o.matched,
            price_ok: self.price_ok + o.price_ok,
            safe: self.safe + o.safe,
        }
    }
}

/// The seed's deal metrics (zero-division gives 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DealMetrics {
    pub precision: f64,
    /// Recall over ground-truth deals.
    pub deal_retrieval_rate: f64,
    pub f1: f64,
    /// Ground-truth deals found with the right price and unit.
    pub safe_deal_rate: f64,
    /// Price correctness among matched deals.
    pub price_reliability: f64,
}

pub fn deal_metrics(c: DealCounts) -> DealMetrics {
    let (m, g, p) = (c.matched as f64, c.gt as f64, c.pred as f64);
    DealMetrics {
        precision: ratio(m, p),
        deal_retrieval_rate: ratio(m, g),
        f1: f1_from_counts(m, p - m, g - m),
        safe_deal_rate: ratio(c.safe as f64, g),
        price_reliability: ratio(c.price_ok as f64, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn iou_known() {
        assert_eq!(iou([0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]), 1.0);
        assert!((iou([0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0]) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(iou([0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]), 0.0);
    }

    #[test]
    fn names_normalise() {
        assert_eq!(
            normalise_name("  Crème-Fraîche 200g!"),
            "creme fraiche 200g"
        );
        assert_eq!(name_similarity("Bananas, loose", "bananas LOOSE"), 1.0);
    }

    #[test]
    fn greedy_prefers_best_pair() {
        let gt = [
            Matchable {
                bbox: Some([0.0, 0.0, 10.0, 10.0]),
                name: "apples",
            },
            Matchable {
                bbox: Some([20.0, 0.0, 30.0, 10.0]),
                name: "pears",
            },
        ];
        let pred = [
            Matchable {
                bbox: Some([20.0, 0.0, 30.0, 10.0]),
                name: "pear",
            },
            Matchable {
                bbox: Some([1.0, 0.0, 10.0, 10.0]),
                name: "apples",
            },
            Matchable {
                bbox: None,
                name: "apples",
            },
        ];
        assert_eq!(
            match_one_to_one(&gt, &pred, &MatchOptions::default()),
            vec![(0, 1), (1, 0)]
        );
    }

    fn boxes() -> impl Strategy<Value = Vec<[f64; 4]>> {
        prop::collection::vec(
            (0.0f64..100.0, 0.0f64..100.0, 1.0f64..50.0, 1.0f64..50.0)
                .prop_map(|(x, y, w, h)| [x, y, x + w, y + h]),
            0..8,
        )
    }

    proptest! {
        #[test]
        fn iou_symmetric_bounded(a in boxes(), b in boxes()) {
            for x in &a { for y in &b {
                let v = iou(*x, *y);
                prop_assert!((0.0..=1.0 + 1e-12).contains(&v));
                prop_assert!((v - iou(*y, *x)).abs() < 1e-12);
            }}
        }

        #[test]
        fn matching_is_one_to_one(a in boxes(), b in boxes()) {
            let g: Vec<Matchable> = a.iter().map(|&r| Matchable { bbox: Some(r), name: "x" }).collect();
            let p: Vec<Matchable> = b.iter().map(|&r| Matchable { bbox: Some(r), name: "y" }).collect();
            let m = match_one_to_one(&g, &p, &MatchOptions::default());
            let gs: std::collections::BTreeSet<_> = m.iter().map(|x| x.0).collect();
            let ps: std::collections::BTreeSet<_> = m.iter().map(|x| x.1).collect();
            prop_assert_eq!(gs.len(), m.len());
            prop_assert_eq!(ps.len(), m.len());
            prop_assert!(m.len() <= a.len().min(b.len()));
            // Self-matching finds everything.
            let all = match_one_to_one(&g, &g, &MatchOptions::default());
            prop_assert_eq!(all.len(), a.len());
        }

        #[test]
        fn deal_metrics_bounded(gt in 0u64..50, pred in 0u64..50, m in 0u64..50, s in 0u64..50) {
            let matched = m.min(gt).min(pred);
            let price_ok = s.min(matched);
            let c = DealCounts { gt, pred, matched, price_ok, safe: price_ok / 2 };
            let d = deal_metrics(c);
            for v in [d.precision, d.deal_retrieval_rate, d.f1, d.safe_deal_rate, d.price_reliability] {
                prop_assert!((0.0..=1.0).contains(&v));
            }
            prop_assert!(d.safe_deal_rate <= d.deal_retrieval_rate);
        }
    }
}
