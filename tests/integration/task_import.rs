//! The importers as a user runs them: real files on disk, a real HTTP server for image downloads,
//! bad rows reported by file, line and field without losing the good rows.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vlmtest::case::{Expectation, Part};
use vlmtest::task::import::download::{fetch_all, DownloadOptions, Outcome};
use vlmtest::task::import::{load_with, ImportOptions};

/// A tiny HTTP server: `/ok.png` (an image), `/page` (HTML), `/flaky.jpg` (503 once, then an
/// image), `/big.jpg` (too large), anything else 404. Returns its base URL and a request counter.
fn serve() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        let flaky = AtomicUsize::new(0);
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_owned();
            let (status, ctype, body): (&str, &str, Vec<u8>) = match path.as_str() {
                "/ok.png" => ("200 OK", "image/png", b"\x89PNG fake".to_vec()),
                "/page" => ("200 OK", "text/html", b"<html></html>".to_vec()),
                "/flaky.jpg" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => {
                    ("503 Busy", "text/plain", b"busy".to_vec())
                }
                "/flaky.jpg" => ("200 OK", "image/jpeg", b"jpeg bytes".to_vec()),
                "/big.jpg" => ("200 OK", "image/jpeg", vec![0u8; 5000]),
                _ => ("404 Not Found", "text/plain", b"no".to_vec()),
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (base, hits)
}

fn opts(cache: &Path) -> DownloadOptions {
    DownloadOptions {
        cache_dir: cache.to_owned(),
        workers: 3,
        retries: 2,
        backoff: Duration::from_millis(10),
        max_bytes: 1000,
        timeout: Duration::from_secs(5),
        offline: false,
    }
}

#[test]
fn downloads_validate_retry_and_cache() {
    let (base, hits) = serve();
    let tmp = tempfile::tempdir().unwrap();
    let urls: Vec<String> = ["/ok.png", "/page", "/flaky.jpg", "/big.jpg", "/gone.jpg"]
        .iter()
        .map(|p| format!("{base}{p}"))
        .collect();
    let out = fetch_all(&urls, &opts(tmp.path()));
    assert!(matches!(&out[0], Outcome::Downloaded(p) if p.extension().unwrap() == "png"));
    assert!(
        matches!(&out[1], Outcome::Failed(e) if e.contains("text/html")),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(&out[2], Outcome::Downloaded(_)),
        "retried after 503: {:?}",
        out[2]
    );
    assert!(
        matches!(&out[3], Outcome::Failed(e) if e.contains("limit")),
        "{:?}",
        out[3]
    );
    assert!(
        matches!(&out[4], Outcome::Failed(e) if e.contains("404")),
        "{:?}",
        out[4]
    );
    assert_eq!(
        std::fs::read(out[0].path().unwrap()).unwrap(),
        b"\x89PNG fake"
    );
    let before = hits.load(Ordering::SeqCst);
    let again = fetch_all(&urls[..1], &opts(tmp.path()));
    assert!(matches!(&again[0], Outcome::Cached(_)));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "a cached image is not fetched again"
    );
}

#[test]
fn spam_tsv_imports_with_images_and_text_only_fallback() {
    let (base, _) = serve();
    let tmp = tempfile::tempdir().unwrap();
    let mut tsv = String::from("product_id\tdescription\timage_url\tlabel\tyes_count\tno_count\n");
    for k in 0..10 {
        let url = if k % 2 == 0 {
            format!("{base}/ok.png?{k}")
        } else {
            format!("{base}/gone{k}.jpg")
        };
        tsv.push_str(&format!(
            "id{k}\t{} item {k}\t{url}\t{}\t2\t1\n",
            if k < 5 { "buy now free" } else { "blue mug" },
            u8::from(k < 5)
        ));
    }
    tsv.push_str("id3\tdup\t\t1\t0\t0\n");
    let file = tmp.path().join("rows.tsv");
    std::fs::write(&file, tsv).unwrap();
    let mut o = ImportOptions {
        val_fraction: 0.4,
        ..ImportOptions::default()
    };
    o.download = opts(&tmp.path().join("cache"));
    let imported = load_with("spam", &file, "spam_suite", &o).unwrap();
    assert_eq!(
        imported.cases.len(),
        4,
        "2 of each class of 5 go to validation"
    );
    assert_eq!(imported.rejected.len(), 1);
    assert!(imported.rejected[0]
        .to_string()
        .contains("rows.tsv:12: field `product_id`"));
    for c in &imported.cases {
        let has_image = c.messages[1]
            .parts
            .iter()
            .any(|p| matches!(p, Part::Image { .. }));
        let text = c.question();
        assert_eq!(has_image, !text.contains("image unavailable"), "{text}");
        assert_eq!(
            c.metadata["image"],
            if has_image { "present" } else { "missing" }
        );
        let Expectation::Task { task, spec } = &c.expect[0] else {
            panic!("task expectation")
        };
        assert_eq!(task, "spam");
        assert!(spec["baseline"]["p_spam"].is_f64());
        assert!((spec["label_confidence"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }
}

#[test]
fn bad_rows_are_named_and_good_rows_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("p.jsonl");
    std::fs::write(&file, "{\"id\": \"a\", \"title\": \"mug\", \"price\": 4.5}\n{\"id\": \"b\", \"title\": \"x\", \"price\": \"n/a\"}\nnot json\n").unwrap();
    let imported = load_with("price", &file, "p", &ImportOptions::default()).unwrap();
    assert_eq!(imported.cases.len(), 1);
    let msgs: Vec<String> = imported.rejected.iter().map(ToString::to_string).collect();
    assert!(
        msgs[0].ends_with(":2: field `price`: `\"n/a\"` is not a number"),
        "{}",
        msgs[0]
    );
    assert!(msgs[1].contains(":3: field `json`"), "{}", msgs[1]);
    let all_bad = tmp.path().join("bad.jsonl");
    std::fs::write(&all_bad, "{\"id\": 1}\n").unwrap();
    let err = load_with("price", &all_bad, "p", &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no usable rows (1 rejected)") && err.contains(":1: field `price`: missing"),
        "{err}"
    );
    assert!(load_with("pdf", &file, "p", &ImportOptions::default())
        .unwrap_err()
        .to_string()
        .contains("unknown import kind"));
}

#[test]
fn example_inputs_import_to_the_committed_suites() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ex = root.join("fixtures/tasks/examples");
    let mut spam = ImportOptions {
        val_fraction: 0.5,
        ..ImportOptions::default()
    };
    spam.download.cache_dir = ex.join("spam/cache");
    spam.download.offline = true;
    let labels = ImportOptions {
        images: Some(ex.join("labels/images")),
        ..ImportOptions::default()
    };
    for (kind, input, suite, o) in [
        (
            "deals",
            ex.join("flyers"),
            "flyer_deals",
            ImportOptions::default(),
        ),
        ("spam", ex.join("spam/products.tsv"), "product_spam", spam),
        (
            "price",
            ex.join("price/rows.jsonl"),
            "product_price",
            ImportOptions::default(),
        ),
        (
            "labels",
            ex.join("labels/ground_truth.jsonl"),
            "photo_labels",
            labels,
        ),
    ] {
        let imported = load_with(kind, &input, suite, &o).unwrap();
        let committed = std::fs::read_to_string(root.join(format!("cases/{suite}.jsonl"))).unwrap();
        let rows: Vec<String> = imported
            .cases
            .iter()
            .map(|c| vlmtest::task::import::case_to_row(c, &root.join("cases")).to_string())
            .collect();
        assert_eq!(
            rows,
            committed.lines().collect::<Vec<_>>(),
            "{suite}: regenerate with `cargo run --bin vlmtest-fixtures`"
        );
    }
}

#[test]
fn deal_pages_and_label_rows_are_rejected_with_their_field() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("shop_annotated")).unwrap();
    std::fs::create_dir_all(root.join("shop")).unwrap();
    std::fs::write(
        root.join("shop_annotated/0001.json"),
        r#"[{"name": "Tea", "price": "$2.50", "unit": "each"}]"#,
    )
    .unwrap();
    std::fs::write(
        root.join("shop_annotated/0002.json"),
        r#"[{"name": "Tea", "price": "free"}]"#,
    )
    .unwrap();
    std::fs::write(
        root.join("shop_annotated/0003.json"),
        r#"[{"name": "Tea", "price": 1}]"#,
    )
    .unwrap();
    std::fs::write(root.join("shop/0001.jpg"), b"jpg").unwrap();
    std::fs::write(root.join("shop/0002.jpg"), b"jpg").unwrap();
    let imported = load_with("deals", root, "d", &ImportOptions::default()).unwrap();
    assert_eq!(imported.cases.len(), 1);
    assert_eq!(imported.cases[0].id.test_name(), "d::shop::shop_0001");
    let Expectation::Task { spec, .. } = &imported.cases[0].expect[0] else {
        panic!()
    };
    assert_eq!(spec["deals"][0]["price"], 2.5);
    let msgs: Vec<String> = imported.rejected.iter().map(ToString::to_string).collect();
    assert!(
        msgs[0].contains("0002.json:1: field `[0].price`"),
        "{}",
        msgs[0]
    );
    assert!(
        msgs[1].contains("0003.json:1: field `image`"),
        "{}",
        msgs[1]
    );

    let gt = root.join("gt.jsonl");
    let id = "0".repeat(64);
    std::fs::write(root.join(format!("{id}.png")), b"not the hashed bytes").unwrap();
    std::fs::write(&gt, format!("{{\"image_id\": \"{id}\", \"scene\": [\"scene.food\"]}}\n{{\"image_id\": \"abc\", \"scene\": \"scene.food\"}}\n")).unwrap();
    let err = load_with("labels", &gt, "l", &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no usable rows (2 rejected)")
            && err.contains("gt.jsonl:1: field `image_id`")
            && err.contains("SHA-256"),
        "{err}"
    );
}

#[test]
fn import_command_writes_a_suite_file() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: vlmtest::task::import::ImportArgs,
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cases/flyers.jsonl");
    let cli = Cli::parse_from([
        "import".as_ref(),
        "deals".as_ref(),
        root.join("fixtures/tasks/examples/flyers").as_os_str(),
        "--suite".as_ref(),
        "flyers".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    vlmtest::task::import::run_import(&cli.args, root).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 5);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let image = out.parent().unwrap().join(first["image"].as_str().unwrap());
    assert!(
        image.is_file(),
        "image path is relative to the suite file: {}",
        image.display()
    );
    assert_eq!(first["expect"][0]["kind"], "task");
    assert_eq!(
        first["conversations"].as_array().unwrap().last().unwrap()["role"],
        "assistant"
    );
}

/// `vlmtest import` writes into the project `--root` names, and never writes a case whose image
/// the loader would refuse: pages outside the project are an error naming the root, with nothing
/// written; copied under the project, the same import writes a suite that loads cleanly.
#[test]
fn import_honours_the_root_and_refuses_images_outside_it() {
    let flyers = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tasks/examples/flyers");
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    let import = |input: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vlmtest"))
            .arg("--root")
            .arg(root)
            .args(["import", "deals"])
            .arg(input)
            .args(["--suite", "flyers"])
            .env_remove("VLMTEST_ROOT")
            .output()
            .expect("vlmtest runs")
    };
    let out = import(&flyers);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("outside the project root"), "{err}");
    assert!(!root.join("cases/flyers.jsonl").exists(), "nothing written");

    let copy = root.join("fixtures/flyers");
    for entry in walk(&flyers) {
        let rel = entry.strip_prefix(&flyers).unwrap();
        let to = copy.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let out = import(&copy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = vlmtest::config::Config::load(root).unwrap();
    let suites = vlmtest::suite::load_all(root, &cfg, None);
    let s = suites
        .iter()
        .find(|s| s.name == "flyers")
        .expect("the suite");
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.cases.len(), 5);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
