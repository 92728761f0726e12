//! vlmtest's task metrics equal scikit-learn's (`scripts/reference_metrics.py` →
//! `fixtures/tasks/reference/expected.json`) to 1e-9, going through the real path: answers are
//! scored by `task::score` and aggregated by `task::aggregate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use vlmtest::case::{Case, CaseId, ImageSource, Message, Origin, Part, Role};
use vlmtest::metric::baseline::{fit_predict, tfidf};
use vlmtest::score::Score;
use vlmtest::task;

const TOL: f64 = 1e-9;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tasks/reference")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).expect("expected.json exists");
    serde_json::from_str(&text).expect("expected.json parses")
}

fn rows(name: &str) -> Vec<Value> {
    let text =
        std::fs::read_to_string(dir().join(format!("{name}.jsonl"))).expect("fixture exists");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("fixture row parses"))
        .collect()
}

fn case(suite: &str, row: &Value, image: bool) -> Case {
    let mut parts = vec![Part::Text { text: "q".into() }];
    if image {
        parts.insert(
            0,
            Part::Image {
                image: ImageSource::Path("x.png".into()),
            },
        );
    }
    Case {
        id: CaseId::new(
            suite,
            row["category"].as_str().unwrap(),
            row["id"].as_str().unwrap(),
        ),
        tags: vec![],
        messages: vec![Message {
            role: Role::User,
            parts,
        }],
        reference: None,
        context: None,
        expect: vec![],
        metadata: BTreeMap::new(),
        ignored: false,
        origin: Origin {
            file: "x".into(),
            line: None,
        },
    }
}

/// The same prediction in the different wrappings models produce.
fn wrap(k: usize, v: &Value) -> String {
    match k % 3 {
        0 => format!("```json\n{v}\n```"),
        1 => format!("Sure, here is my answer: {v} Hope it helps."),
        _ => v.to_string(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOL
}

fn assert_metrics(what: &str, ours: &Value, want: &Value) {
    let (o, w) = (ours.as_object().unwrap(), want.as_object().unwrap());
    let ok: Vec<&String> = o.keys().collect();
    let wk: Vec<&String> = w.keys().collect();
    assert_eq!(ok, wk, "{what}: metric names differ");
    for (k, v) in w {
        let (a, b) = (o[k].as_f64().unwrap(), v.as_f64().unwrap());
        assert!(close(a, b), "{what}.{k}: vlmtest {a} vs scikit-learn {b}");
    }
}

fn check(name: &str, task: &str, items: Vec<(Case, Score)>) -> Value {
    let exp = &expected()[name];
    let refs: Vec<(&Case, &Score)> = items.iter().map(|(c, s)| (c, s)).collect();
    let report = task::aggregate(task, &refs).unwrap();
    assert_metrics(
        name,
        &serde_json::to_value(&report.metrics).unwrap(),
        &exp["metrics"],
    );
    let slices = &report.details["slices"];
    for (field, groups) in exp["slices"].as_object().unwrap() {
        let ours = slices[field]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no slice {field}"));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            groups.as_object().unwrap().keys().collect::<Vec<_>>()
        );
        for (g, want) in groups.as_object().unwrap() {
            assert_eq!(ours[g]["n"], want["n"], "{name}: slice {field}={g} size");
            assert_metrics(
                &format!("{name}[{field}={g}]"),
                &ours[g]["metrics"],
                &want["metrics"],
            );
        }
    }
    report.details
}

fn spam_items(name: &str) -> Vec<(Case, Score)> {
    rows(name)
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let mut spec = json!({"label": r["label"]});
            if !r["baseline"].is_null() {
                spec["baseline"] = r["baseline"].clone();
            }
            let answer = match &r["pred"] {
                Value::Null => [
                    "It is spam.",
                    "{\"is_spam\": \"yes\"}",
                    "{\"is_spam\": true, \"confidence\": 7}",
                ][k % 3]
                    .to_owned(),
                p => wrap(
                    k,
                    &json!({"is_spam": p["is_spam"], "confidence": p["confidence"], "reason": "r"}),
                ),
            };
            (
                case("spam", r, r["image"].as_bool().unwrap()),
                task::score("spam", &spec, &answer),
            )
        })
        .collect()
}

#[test]
fn spam_metrics_equal_sklearn() {
    for name in [
        "spam_basic",
        "spam_one_class",
        "spam_all_malformed",
        "spam_ties",
    ] {
        let details = check(name, "spam", spam_items(name));
        let exp = &expected()[name];
        assert_eq!(
            details["confusion"]["counts"], exp["confusion"],
            "{name}: confusion"
        );
        let bins = details["reliability_bins"].as_array().unwrap();
        let want = exp["bins"].as_array().unwrap();
        assert_eq!(bins.len(), want.len(), "{name}: bins");
        for (b, w) in bins.iter().zip(want) {
            assert_eq!(b["count"], w["count"]);
            for k in ["lo", "hi", "mean_prob", "frac_pos"] {
                assert!(
                    close(b[k].as_f64().unwrap(), w[k].as_f64().unwrap()),
                    "{name}: bin {k}"
                );
            }
        }
        let table: Vec<f64> = details["sweep"]["table"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["macro_f1"].as_f64().unwrap())
            .collect();
        let want: Vec<f64> = exp["sweep"]["macro_f1"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(table.len(), want.len());
        assert!(
            table.iter().zip(&want).all(|(a, b)| close(*a, *b)),
            "{name}: sweep table"
        );
        for k in [
            "review_threshold",
            "demote_threshold",
            "demote_precision",
            "review_rate",
        ] {
            let (a, b) = (&details["sweep"]["chosen"][k], &exp["sweep"]["chosen"][k]);
            assert!(
                close(a.as_f64().unwrap(), b.as_f64().unwrap()),
                "{name}: chosen {k}"
            );
        }
    }
}

#[test]
fn price_metrics_equal_reference() {
    for name in ["price_basic", "price_all_malformed"] {
        let items = rows(name)
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let answer = match r["pred"].as_f64() {
                    None => "I cannot tell the price.".to_owned(),
                    Some(p) if k % 2 == 0 => format!("The price is ${p}."),
                    Some(p) => wrap(k, &json!({"price": p})),
                };
                (
                    case("price", r, false),
                    task::score("price", &json!({"target": r["target"]}), &answer),
                )
            })
            .collect();
        check(name, "price", items);
    }
}

#[test]
fn label_metrics_equal_sklearn() {
    for name in ["labels_basic", "labels_one_class"] {
        let items = rows(name)
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let answer = match &r["pred"] {
                    Value::Null => "A nice photo.".to_owned(),
                    p => wrap(k, p),
                };
                (
                    case("labels", r, true),
                    task::score("labels", &r["truth"], &answer),
                )
            })
            .collect();
        let details = check(name, "labels", items);
        let exp = &expected()[name]["scene_confusion"];
        assert_eq!(details["scene_confusion"]["labels"], exp["labels"]);
        assert_eq!(details["scene_confusion"]["counts"], exp["counts"]);
    }
}

#[test]
fn baseline_equals_sklearn() {
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("baseline_texts.json")).unwrap())
            .unwrap();
    let train: Vec<(&str, bool)> = data["train"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap(), r[1].as_i64() == Some(1)))
        .collect();
    let test: Vec<&str> = data["test"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let exp = &expected()["baseline"];
    let texts: Vec<&str> = train.iter().map(|r| r.0).collect();
    let vec = tfidf::TfIdf::fit(&texts, tfidf::MAX_FEATURES);
    for (t, want) in test.iter().zip(exp["tfidf"].as_array().unwrap()) {
        let row = vec.transform(t);
        let want = want.as_object().unwrap();
        assert_eq!(row.len(), want.len(), "{t}: tf-idf terms");
        for (term, v) in want {
            let col = vec
                .column(term)
                .unwrap_or_else(|| panic!("term {term} missing"));
            let ours = row.iter().find(|x| x.0 == col).unwrap().1;
            assert!(close(ours, v.as_f64().unwrap()), "{t}: tf-idf {term}");
        }
    }
    let preds = fit_predict(&train, &test).unwrap();
    for (p, want) in preds.iter().zip(exp["p_spam"].as_array().unwrap()) {
        // Both solvers stop at a tolerance; sklearn runs with tol=1e-10 in the script.
        assert!(
            (p.p_spam - want.as_f64().unwrap()).abs() < 1e-6,
            "{} vs {want}",
            p.p_spam
        );
    }
}
