//! The example suites end to end without the harness: the committed cases, the committed replay
//! answers, `task::score` per case and `task::aggregate` per suite, with the aggregate metrics
//! snapshotted (insta) so a change in any parser or metric shows up as a reviewable diff.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use vlmtest::case::{Case, Expectation};
use vlmtest::score::Score;
use vlmtest::task;
use vlmtest::task::import::{load_with, ImportOptions};

fn replay(suite: &str) -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(root.join(format!("fixtures/replay/{suite}.jsonl"))).unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["name"].as_str().unwrap().to_owned(),
                v["answer"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn cases(kind: &str, suite: &str) -> Vec<Case> {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tasks/examples");
    let mut o = ImportOptions {
        val_fraction: 0.5,
        images: Some(ex.join("labels/images")),
        ..ImportOptions::default()
    };
    o.download.cache_dir = ex.join("spam/cache");
    o.download.offline = true;
    let input = match kind {
        "deals" => ex.join("flyers"),
        "spam" => ex.join("spam/products.tsv"),
        "price" => ex.join("price/rows.jsonl"),
        _ => ex.join("labels/ground_truth.jsonl"),
    };
    load_with(kind, &input, suite, &o).unwrap().cases
}

fn run(kind: &str, suite: &str) -> task::TaskReport {
    let answers = replay(suite);
    let cases = cases(kind, suite);
    let scores: Vec<Score> = cases
        .iter()
        .map(|c| {
            let Expectation::Task { task, spec } = &c.expect[0] else {
                panic!("task case")
            };
            let answer = answers
                .get(&c.id.test_name())
                .unwrap_or_else(|| panic!("no replay answer for {}", c.id));
            task::score(task, spec, answer)
        })
        .collect();
    let items: Vec<(&Case, &Score)> = cases.iter().zip(&scores).collect();
    let passed = scores.iter().filter(|s| s.passed).count();
    assert!(
        passed > 0 && passed < scores.len(),
        "{suite}: the replay mixes passes and failures"
    );
    task::aggregate(kind, &items).unwrap()
}

fn rounded(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .map(|(k, v)| (k.clone(), (v * 1e6).round() / 1e6))
        .collect()
}

#[test]
fn flyer_deals_suite() {
    let r = run("deals", "flyer_deals");
    assert!(r.metrics["malformed_rate"] > 0.0);
    assert!(r.details["slices"]["store"].as_object().unwrap().len() == 2);
    insta::assert_json_snapshot!("task_flyer_deals", rounded(&r.metrics));
}

#[test]
fn product_spam_suite() {
    let r = run("spam", "product_spam");
    let image = r.details["slices"]["image"].as_object().unwrap();
    assert!(
        image["present"]["n"].as_u64().unwrap() > 0 && image["missing"]["n"].as_u64().unwrap() > 0
    );
    assert!(
        r.metrics.contains_key("baseline.macro_f1") && r.metrics.contains_key("uplift.macro_f1")
    );
    insta::assert_json_snapshot!("task_product_spam", rounded(&r.metrics));
}

#[test]
fn product_price_suite() {
    let r = run("price", "product_price");
    assert!(r.metrics["parse_failure_rate"] > 0.0);
    insta::assert_json_snapshot!("task_product_price", rounded(&r.metrics));
}

#[test]
fn photo_labels_suite() {
    let r = run("labels", "photo_labels");
    assert!(
        r.details["scene_confusion"]["labels"]
            .as_array()
            .unwrap()
            .len()
            >= 5
    );
    insta::assert_json_snapshot!("task_photo_labels", rounded(&r.metrics));
}
