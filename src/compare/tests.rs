use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::model::Answer;
use crate::report::Tally;
use crate::score::Score;

/// A verdict of one case scored by the real spam task scorer and a plain numeric-style score.
fn verdict(i: usize, label: bool, answer_spam: bool, conf: f64, extra: f64) -> Verdict {
    let text = json!({"is_spam": answer_spam, "confidence": conf, "reason": "r"}).to_string();
    let spam = crate::task::score("spam", &json!({"label": u8::from(label)}), &text);
    let other = Score::scored("numeric", extra, 0.5, String::new());
    let passed = spam.passed && other.passed;
    Verdict {
        name: format!("s::{}::c{i:04}", if label { "spam" } else { "ham" }),
        category: if label { "spam" } else { "ham" }.into(),
        tags: if i.is_multiple_of(3) {
            vec!["critical".into()]
        } else {
            vec![]
        },
        passed,
        answer: Some(Answer {
            text,
            prompt_tokens: 1,
            generated_tokens: 1,
            elapsed: Duration::ZERO,
        }),
        model_error: None,
        scores: vec![spam, other],
    }
}

fn report(model: &str, verdicts: Vec<Verdict>) -> Report {
    let passed = verdicts.iter().filter(|v| v.passed).count();
    Report {
        suite: "s".into(),
        model: model.into(),
        overall: Tally {
            cases: verdicts.len(),
            passed,
            ..Tally::default()
        },
        failed: verdicts.len() - passed,
        model_errors: 0,
        scorer_errors: 0,
        scorers: BTreeMap::new(),
        categories: BTreeMap::new(),
        slices: BTreeMap::new(),
        tasks: BTreeMap::new(),
        gates: Vec::new(),
        judge: None,
        baseline: None,
        load_errors: Vec::new(),
        verdicts,
    }
}

type Row = (bool, bool, f64, f64);

fn rows() -> impl Strategy<Value = Vec<Row>> {
    proptest::collection::vec(
        (any::<bool>(), any::<bool>(), 0.0f64..=1.0, 0.0f64..=1.0),
        2..40,
    )
}

fn build(model: &str, rows: &[Row]) -> Report {
    report(
        model,
        rows.iter()
            .enumerate()
            .map(|(i, &(l, s, c, x))| verdict(i, l, s, c, x))
            .collect(),
    )
}

fn small() -> Options {
    Options {
        bootstrap: Bootstrap {
            resamples: 200,
            seed: 7,
        },
        alpha: 0.05,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn identical_runs_differ_by_nothing(r in rows()) {
        let a = build("m", &r);
        let c = compare_suite(&a, &a.clone(), small()).unwrap();
        prop_assert_eq!(c.paired, r.len());
        prop_assert!(c.fixed.is_empty() && c.broken.is_empty());
        for m in &c.metrics {
            prop_assert_eq!(m.diff, Some(0.0), "{}", m.name);
            if m.name.starts_with("spam.sweep.") {
                // A selection, not a statistic of fixed rows: compared, never resampled.
                prop_assert_eq!(m.p_value, None);
                prop_assert_eq!(m.change, Change::Untested);
                continue;
            }
            prop_assert_eq!(m.p_value, Some(1.0), "{}", m.name);
            prop_assert_eq!(m.change, Change::Unchanged);
            if let Some((lo, hi)) = m.ci95 {
                prop_assert!(lo == 0.0 && hi == 0.0, "{} {lo} {hi}", m.name);
            }
        }
    }

    #[test]
    fn swapping_the_sides_flips_every_sign(ra in rows(), rb in rows()) {
        let n = ra.len().min(rb.len());
        let a = build("a", &ra[..n]);
        // Same case names on both sides: B's rows relabelled with A's labels.
        let rb: Vec<Row> = rb[..n].iter().zip(&ra[..n]).map(|(b, a)| (a.0, b.1, b.2, b.3)).collect();
        let b = build("b", &rb);
        let ab = compare_suite(&a, &b, small()).unwrap();
        let ba = compare_suite(&b, &a, small()).unwrap();
        prop_assert_eq!(ab.pairs.fixed, ba.pairs.broken);
        prop_assert_eq!(ab.pairs.broken, ba.pairs.fixed);
        prop_assert_eq!(ab.metrics.len(), ba.metrics.len());
        for (x, y) in ab.metrics.iter().zip(&ba.metrics) {
            prop_assert_eq!(&x.name, &y.name);
            prop_assert_eq!(x.a, y.b);
            match (x.diff, y.diff) {
                (Some(d1), Some(d2)) => prop_assert!((d1 + d2).abs() < 1e-12, "{}", x.name),
                (d1, d2) => prop_assert_eq!(d1, d2),
            }
            prop_assert_eq!(x.p_value, y.p_value, "{}", x.name);
            if let (Some((lo1, hi1)), Some((lo2, hi2))) = (x.ci95, y.ci95) {
                prop_assert!((lo1 + hi2).abs() < 1e-12 && (hi1 + lo2).abs() < 1e-12, "{}", x.name);
            }
        }
    }
}

#[test]
fn the_bootstrap_is_reproducible_from_its_seed_and_moves_with_it() {
    let ra: Vec<Row> = (0..60usize)
        .map(|i| {
            (
                i.is_multiple_of(2),
                i.is_multiple_of(3),
                (i % 10) as f64 / 10.0,
                (i % 7) as f64 / 7.0,
            )
        })
        .collect();
    let rb: Vec<Row> = ra
        .iter()
        .map(|&(l, s, c, x)| (l, !s || l, c, 1.0 - x))
        .collect();
    let (a, b) = (build("a", &ra), build("b", &rb));
    let one = compare_suite(&a, &b, small()).unwrap();
    let two = compare_suite(&a, &b, small()).unwrap();
    assert_eq!(one, two);
    let other_seed = Options {
        bootstrap: Bootstrap {
            resamples: 200,
            seed: 8,
        },
        ..small()
    };
    let three = compare_suite(&a, &b, other_seed).unwrap();
    assert_ne!(
        one.metric("score.numeric").unwrap().ci95,
        three.metric("score.numeric").unwrap().ci95
    );
}

#[test]
fn cases_on_one_side_are_listed_and_left_out() {
    let rows: Vec<Row> = (0..10usize)
        .map(|i| (i.is_multiple_of(2), i.is_multiple_of(2), 0.9, 0.9))
        .collect();
    let a = build("a", &rows);
    let mut b = build("b", &rows);
    let gone = b.verdicts.remove(3);
    let c = compare_suite(&a, &b, small()).unwrap();
    assert_eq!(c.paired, 9);
    assert_eq!(c.only_a, vec![gone.name]);
    assert!(c.only_b.is_empty());
}

#[test]
fn a_clear_regression_is_flagged_with_the_broken_answers() {
    // A answers all 40 cases right; B gets the spam ones wrong.
    let a_rows: Vec<Row> = (0..40usize)
        .map(|i| (i.is_multiple_of(2), i.is_multiple_of(2), 0.9, 0.9))
        .collect();
    let b_rows: Vec<Row> = (0..40usize)
        .map(|i| (i.is_multiple_of(2), false, 0.9, 0.9))
        .collect();
    let (a, b) = (build("a", &a_rows), build("b", &b_rows));
    let c = compare_suite(&a, &b, Options::default()).unwrap();
    assert_eq!(c.pairs.broken, 20);
    let pass = c.metric("pass_rate").unwrap();
    assert_eq!(pass.test, "mcnemar");
    // 0 fixed vs 20 broken: 2 / 2^20.
    assert!((pass.p_value.unwrap() - 2.0 / 1_048_576.0).abs() < 1e-18);
    assert_eq!(pass.change, Change::Regressed);
    assert_eq!(c.metric("spam.macro_f1").unwrap().change, Change::Regressed);
    assert!(c.broken[0].b_answer.as_deref().unwrap().contains("false"));
    let text = render::table(&Comparison {
        sides: Sides::default(),
        suites: vec![c.clone()],
        unmatched_suites: vec![],
    });
    assert!(text.contains("WORSE"), "{text}");
    assert!(text.contains("broken (pass in A, fail in B): 20"), "{text}");

    // The baseline gate: no significant regression of the pass rate, no broken critical case.
    let cfg: BaselineConfig = toml::from_str(
        "report = \"b.json\"\nno_significant_regression = [\"pass_rate\", \"score.numeric\"]\nmax_broken = 0\nbroken_tags = [\"critical\"]",
    )
    .unwrap();
    let check = baseline::check(&cfg, Ok(a.clone()), &b);
    assert!(!check.passed);
    let failed: Vec<&str> = check
        .rules
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.rule.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "no_significant_regression(pass_rate)",
            "max_broken = 0 [tags: critical]"
        ]
    );
    assert!(baseline::check(&cfg, Ok(a.clone()), &a).passed);
    let typo: BaselineConfig =
        toml::from_str("report = \"b.json\"\nno_significant_regression = [\"pass_rat\"]").unwrap();
    let bad = baseline::check(&typo, Ok(a.clone()), &a);
    assert!(
        !bad.passed,
        "an unknown metric must fail, not pass silently"
    );
    assert!(toml::from_str::<BaselineConfig>("reprot = \"x\"").is_err());
    let missing = baseline::check(&cfg, Err("no such file".into()), &a);
    assert!(!missing.passed && missing.error.unwrap().contains("no such file"));
}
