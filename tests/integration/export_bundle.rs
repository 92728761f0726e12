//! `vlmtest export`'s bundle: the files it writes and the ZIP holding them, the CSV's rows and
//! columns, and `classification_report.json` equal to scikit-learn's
//! `classification_report(output_dict=True, zero_division=0)` to 1e-9
//! (`scripts/reference_metrics.py` → `fixtures/tasks/reference/expected.json`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};
use vlmtest::model::Answer;
use vlmtest::report::export::{self, classification, ExportOptions};
use vlmtest::report::html::HtmlMeta;
use vlmtest::report::{Report, Tally};
use vlmtest::score::Score;
use vlmtest::task;
use vlmtest::verdict::Verdict;

fn reference(name: &str) -> (Vec<Value>, Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tasks/reference");
    let rows = std::fs::read_to_string(dir.join(format!("{name}.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (rows, expected[name]["classification_report"].clone())
}

/// A report of one verdict per `(id, answer, score)`.
fn report(suite: &str, scores: Vec<(String, String, Score)>) -> Report {
    let verdicts: Vec<Verdict> = scores
        .into_iter()
        .map(|(id, text, s)| Verdict {
            name: format!("{suite}::c::{id}"),
            category: "c".into(),
            tags: Vec::new(),
            passed: s.passed,
            answer: Some(Answer {
                text,
                prompt_tokens: 0,
                generated_tokens: 0,
                elapsed: Default::default(),
            }),
            model_error: None,
            scores: vec![s],
        })
        .collect();
    Report {
        suite: suite.into(),
        model: "m".into(),
        overall: Tally {
            cases: verdicts.len(),
            ..Tally::default()
        },
        failed: 0,
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

/// Every key of `want` in `ours`, numbers to 1e-9, and no extra key.
fn assert_same(what: &str, ours: &Value, want: &Value) {
    match (ours, want) {
        (Value::Object(o), Value::Object(w)) => {
            assert_eq!(
                o.keys().collect::<Vec<_>>(),
                w.keys().collect::<Vec<_>>(),
                "{what}: keys"
            );
            for (k, v) in w {
                assert_same(&format!("{what}.{k}"), &o[k], v);
            }
        }
        (a, b) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-9,
                "{what}: vlmtest {a} vs scikit-learn {b}"
            );
        }
    }
}

#[test]
fn classification_reports_equal_sklearn() {
    for name in [
        "spam_basic",
        "spam_one_class",
        "spam_all_malformed",
        "spam_ties",
    ] {
        let (rows, want) = reference(name);
        let scores =
            rows.iter()
                .map(|r| {
                    let answer = match &r["pred"] {
                        Value::Null => "not JSON".to_owned(),
                        p => json!({"is_spam": p["is_spam"], "confidence": p["confidence"]})
                            .to_string(),
                    };
                    let s = task::score("spam", &json!({"label": r["label"]}), &answer);
                    (r["id"].as_str().unwrap().to_owned(), answer, s)
                })
                .collect();
        let ours = classification::spam(&report("s", scores)).unwrap();
        assert!(
            want.is_object(),
            "{name}: expected.json has no classification_report (run scripts/reference_metrics.py)"
        );
        assert_same(name, &ours, &want);
    }
    for name in ["labels_basic", "labels_one_class"] {
        let (rows, want) = reference(name);
        let scores = rows
            .iter()
            .map(|r| {
                let answer = match &r["pred"] {
                    Value::Null => "no idea".to_owned(),
                    p => p.to_string(),
                };
                let s = task::score("labels", &r["truth"], &answer);
                (r["id"].as_str().unwrap().to_owned(), answer, s)
            })
            .collect();
        let ours = classification::scene(&report("l", scores)).unwrap();
        assert_same(name, &ours, &want);
    }
}

#[test]
fn the_bundle_holds_every_file_and_the_zip_holds_the_same_bytes() {
    let answers = [
        (
            "a",
            1,
            r#"{"is_spam": true, "confidence": 0.9, "reason": "hashtags, \"DM\""}"#,
        ),
        (
            "b",
            0,
            r#"{"is_spam": true, "confidence": 0.6, "reason": "x"}"#,
        ),
        ("c", 0, "no JSON\nat all"),
    ];
    let scores = answers
        .iter()
        .map(|(id, label, a)| {
            (
                id.to_string(),
                a.to_string(),
                task::score("spam", &json!({"label": label}), a),
            )
        })
        .collect();
    let r = report("product_spam", scores);
    let dir = tempfile::tempdir().unwrap();
    let opts = ExportOptions {
        zip: true,
        config: Some(json!({"model": {"spec": "replay:x"}})),
    };
    let written = export::write(&[r], &HtmlMeta::default(), dir.path(), &opts).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [&export::FILES[..], &["artifacts.zip"]].concat());

    let csv = std::fs::read_to_string(dir.path().join("predictions.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with(
        "suite,name,category,slices,status,passed,label,is_spam,confidence,reason,decision,"
    ));
    assert!(header.ends_with(",score.spam,pass.spam"));
    assert!(csv.contains(
        r#"product_spam,product_spam::c::a,c,,pass,true,1,1,0.9,"hashtags, ""DM""",demote,"#
    ));
    assert!(
        csv.contains(",review,"),
        "0.6 is between the review and demote thresholds"
    );
    assert!(
        csv.contains(",\"no JSON\nat all\","),
        "an answer with a line break is quoted"
    );
    assert_eq!(
        csv.lines()
            .filter(|l| l.starts_with("product_spam,"))
            .count(),
        3,
        "one row per case"
    );

    let cr: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("classification_report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cr["product_spam"]["spam"]["1"]["support"], 1);
    assert!((cr["product_spam"]["spam"]["accuracy"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run_metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["suites"]["product_spam"]["cases"], 3);
    assert_eq!(
        meta["suites"]["product_spam"]["spam_policy"]["demote_threshold"],
        0.7
    );
    assert_eq!(meta["config"]["model"]["spec"], "replay:x");

    let mut zip =
        zip::ZipArchive::new(std::fs::File::open(dir.path().join("artifacts.zip")).unwrap())
            .unwrap();
    assert_eq!(zip.len(), export::FILES.len());
    for name in export::FILES {
        let mut entry = zip.by_name(name).unwrap();
        assert_eq!(entry.compression(), zip::CompressionMethod::Deflated);
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        assert_eq!(
            bytes,
            std::fs::read(dir.path().join(name)).unwrap(),
            "{name} in the ZIP"
        );
    }
}
