//! Seed 004's workflow end to end with the real `vlmtest labels` binary: a generated photo folder
//! (with hostile files) annotated over loopback HTTP, killed and resumed, converted, sampled and
//! evaluated, every count checked against what the fixtures imply.
//!
//! The fault cases use the in-repo stub server (`vlmtest::judge::stub`), whose correct reply to
//! an image is a pure function of the image's MD5 ([`annotation_for`]), so every expected count
//! is computed here, independently of the code under test. The real path runs `vlmtest serve`'s
//! HTTP server over the tiny seeded Qwen3-VL checkpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use vlmtest::judge::stub::{ContentFn, Fault, FaultPlan, StubConfig, StubServer};
use vlmtest::labels::annotate::{annotate, AnnotateOptions};
use vlmtest::labels::id::IdHash;
use vlmtest::labels::schema::{default_schema, Schema, DEFAULT_PROMPT};
use vlmtest::model::qwen3_vl::fixture;

const BIN: &str = env!("CARGO_BIN_EXE_vlmtest");
/// Valid images in the generated library.
const IMAGES: usize = 50;

fn md5_hex(bytes: &[u8]) -> String {
    IdHash::Md5.id(bytes)
}

fn h(id: &str) -> u64 {
    u64::from_str_radix(&id[..16], 16).unwrap()
}

/// The stub's answer for an image: a pure function of its id.
fn annotation_for(id: &str) -> Value {
    let h = h(id);
    let scenes = [
        "product",
        "food",
        "people",
        "selfie",
        "animals",
        "document",
        "screenshot",
        "Landscape",
    ];
    let scene = scenes[(h % 8) as usize];
    let types = ["keyboard", "mug", "food", "Phone", "laptop", "chair"];
    let n = ((h >> 8) % 4) as usize;
    let objects: Vec<Value> = (0..n)
        .map(|i| {
            let confidence = [0.95, 0.6, 0.8][i % 3];
            json!({
                "name_free": format!("thing {i}"),
                "coarse_type": types[((h >> (12 + 4 * i)) % 6) as usize],
                "is_main": i == 0 || (h >> (24 + i)) & 1 == 0,
                "confidence": confidence,
            })
        })
        .collect();
    json!({"scene": scene, "has_person": (h >> 30) & 1 == 1, "is_document": scene == "document",
           "is_screenshot": scene == "screenshot", "objects": objects})
}

/// Images whose replies never match the schema, even after the repair round.
fn always_wrong(id: &str) -> bool {
    (h(id) >> 40).is_multiple_of(10)
}

/// The image id of a request (the MD5 of its data URI's bytes).
fn request_id(req: &Value) -> Option<String> {
    let url = req["messages"][1]["content"][0]["image_url"]["url"].as_str()?;
    let b64 = url.split_once("base64,")?.1;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(md5_hex(&bytes))
}

fn is_repair(req: &Value) -> bool {
    req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .is_some_and(|c| c.starts_with("Your reply could not be used"))
}

fn content() -> ContentFn {
    Arc::new(|req| match request_id(req) {
        Some(id) if always_wrong(&id) => r#"{"scene": 7, "objects": "none"}"#.to_owned(),
        Some(id) => annotation_for(&id).to_string(),
        None => "no image in the request".to_owned(),
    })
}

/// First attempts fail in every way the client must survive; repair requests never do.
fn faults() -> FaultPlan {
    Arc::new(|req, hash, attempt| {
        if attempt > 0 || is_repair(req) {
            return Fault::None;
        }
        match hash % 12 {
            0 => Fault::ServerError,
            1 => Fault::RateLimited,
            2 => Fault::MalformedBody,
            3 => Fault::Drop,
            4 | 5 => Fault::ProseContent,
            _ => Fault::None,
        }
    })
}

fn stub(latency_ms: u64, plan: FaultPlan, lifetime: Duration) -> StubServer {
    StubServer::start(StubConfig {
        latency: Duration::from_millis(latency_ms),
        retry_after_s: 0.05,
        plan,
        lifetime,
        content: Some(content()),
        ..StubConfig::default()
    })
    .unwrap()
}

/// A library of [`IMAGES`] distinct small PNG and JPEG images in nested folders. Returns their
/// ids by relative path.
fn library(root: &Path) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for i in 0..IMAGES {
        let dir = root.join(format!("{}/{:02}", 2020 + i % 3, i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let (w, hgt) = (24 + (i % 5) as u32 * 4, 16 + (i % 3) as u32 * 8);
        let path = if i % 4 == 0 {
            let p = dir.join(format!("IMG_{i:04}.JPG"));
            let img = image::RgbImage::from_fn(w, hgt, |x, y| {
                image::Rgb([(x * 9 + i as u32) as u8, (y * 7) as u8, (i * 5) as u8])
            });
            img.save_with_format(&p, image::ImageFormat::Jpeg).unwrap();
            p
        } else {
            let p = dir.join(format!("img_{i:04}.png"));
            fixture::write_image(&p, w, hgt, i as u64 + 1).unwrap();
            p
        };
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        ids.insert(rel, md5_hex(&std::fs::read(&path).unwrap()));
    }
    let distinct: HashSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), IMAGES, "the generated images are distinct");
    ids
}

/// Hostile files beside the library; returns what each should produce.
struct Hostile {
    empty: String,
    fake: String,
    huge: String,
    duplicate: String,
    /// `None` when running as root (permissions cannot make a file unreadable then).
    unreadable: Option<String>,
}

fn hostile(root: &Path, outside: &Path, some_image: &str) -> Hostile {
    std::fs::create_dir_all(root.join("junk")).unwrap();
    std::fs::write(root.join("junk/empty.jpg"), b"").unwrap();
    std::fs::write(
        root.join("junk/fake.png"),
        b"this is a text file, not a PNG\n",
    )
    .unwrap();
    let mut huge = vec![0xff, 0xd8, 0xff, 0xe0];
    huge.extend((0..600_000u32).map(|i| (i * 31 % 251) as u8));
    std::fs::write(root.join("junk/huge.jpeg"), huge).unwrap();
    std::fs::copy(root.join(some_image), root.join("junk/copy.png")).unwrap();
    std::fs::write(root.join("junk/IMG_9999.HEIC"), b"heic").unwrap();
    std::fs::write(root.join("junk/notes.txt"), b"notes").unwrap();
    std::fs::write(outside.join("private.jpg"), b"\xff\xd8\xff private").unwrap();
    std::os::unix::fs::symlink(outside.join("private.jpg"), root.join("junk/link.jpg")).unwrap();
    let unreadable = {
        let p = root.join("junk/locked.jpg");
        std::fs::write(&p, b"\xff\xd8\xff locked").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read(&p).is_ok() {
            eprintln!("labels_workflow: skipping the unreadable-file case: running as root, a mode-000 file is still readable");
            std::fs::remove_file(&p).unwrap();
            None
        } else {
            Some("junk/locked.jpg".to_owned())
        }
    };
    Hostile {
        empty: "junk/empty.jpg".into(),
        fake: "junk/fake.png".into(),
        huge: "junk/huge.jpeg".into(),
        duplicate: "junk/copy.png".into(),
        unreadable,
    }
}

fn labels<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(BIN)
        .arg("labels")
        .args(args)
        .env_remove("VLMTEST_MODEL_API_KEY")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn free_scene_schema_value() -> Value {
    let mut schema = default_schema();
    schema["properties"]["scene"] = json!({"type": "string", "maxLength": 32});
    schema
}

/// The default schema with a free-string scene (as the seed's own prompt has it), so unmapped
/// scene values reach `convert`; written beside the photo folder.
fn free_scene_schema(root: &Path) -> String {
    let schema = free_scene_schema_value();
    let path = root.parent().unwrap().join("free_scene_schema.json");
    std::fs::write(&path, schema.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

fn annotate_args(root: &str, out: &str, model: &str) -> Vec<String> {
    let schema = free_scene_schema(Path::new(root));
    [
        "annotate",
        "--root",
        root,
        "--output",
        out,
        "--model",
        model,
        "--schema",
        &schema,
        "--max-bytes",
        "100000",
        "--retries",
        "3",
        "--backoff",
        "0.02",
        "--timeout",
        "5",
    ]
    .map(String::from)
    .to_vec()
}

/// Every line of a JSONL file, parsed (a torn tail fails the test).
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// The seed's mapping, written out here so the expectations do not come from the code under test.
fn expected_truth(id: &str) -> Value {
    let a = annotation_for(id);
    let scene = match a["scene"].as_str().unwrap() {
        "product" => "scene.product",
        "food" => "scene.food",
        "people" | "selfie" => "scene.people",
        "animals" => "scene.animals",
        "document" => "scene.document",
        "screenshot" => "scene.screenshot",
        _ => "scene.other",
    };
    let mut objects: Vec<&str> = Vec::new();
    for o in a["objects"].as_array().unwrap() {
        if !o["is_main"].as_bool().unwrap() || o["confidence"].as_f64().unwrap() < 0.7 {
            continue;
        }
        let label = match o["coarse_type"].as_str().unwrap() {
            "keyboard" => "object.electronics.peripheral.keyboard",
            "food" => "object.food",
            "Phone" => "object.electronics.phone",
            "laptop" => "object.electronics.laptop",
            _ => continue,
        };
        if !objects.contains(&label) {
            objects.push(label);
        }
    }
    json!({"image_id": id, "scene": [scene], "attributes": {
        "attr.has_person": a["has_person"], "attr.is_document": a["is_document"],
        "attr.is_screenshot": a["is_screenshot"]}, "objects": objects})
}

#[test]
fn annotate_convert_sample_eval_with_faults_and_hostile_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let ids = library(&root);
    let first_image = ids.keys().next().unwrap().clone();
    let bad = hostile(&root, &outside, &first_image);
    let server = stub(0, faults(), Duration::from_secs(120));
    let model = format!("openai:{}#stub-vl", server.url());
    let raw = tmp.path().join("cache/raw.jsonl");
    let (root_s, raw_s) = (root.to_str().unwrap(), raw.to_str().unwrap());

    // A dry run on the first 10 images of the walk, then the full run resuming it.
    let mut args = annotate_args(root_s, raw_s, &model);
    args.extend(["--limit", "10", "--concurrency", "4"].map(String::from));
    let o = labels(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(count_lines(&raw), 10);
    let again = labels(&annotate_args(root_s, raw_s, &model));
    assert_eq!(
        again.status.code(),
        Some(2),
        "refuses to append without --resume"
    );
    assert!(text(&again).contains("pass --resume"), "{}", text(&again));
    let mut args = annotate_args(root_s, raw_s, &model);
    args.extend(["--resume", "--concurrency", "6"].map(String::from));
    let o = labels(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let log = text(&o);

    let wrong: HashSet<&String> = ids.values().filter(|id| always_wrong(id)).collect();
    let recs = lines(&raw);
    let by_rel: HashMap<&str, &Value> = recs
        .iter()
        .map(|r| (r["rel_path"].as_str().unwrap(), r))
        .collect();
    let hostile_lines = 3 + usize::from(bad.unreadable.is_some());
    assert_eq!(recs.len(), IMAGES + hostile_lines, "{log}");
    assert_eq!(by_rel.len(), recs.len(), "one line per file");
    for (rel, id) in &ids {
        let r = by_rel[rel.as_str()];
        assert_eq!(r["image_id"], json!(id));
        assert_eq!(r["image_path"], json!(root.join(rel).to_str().unwrap()));
        assert_eq!(r["model"], "stub-vl");
        assert_eq!(r["prompt_hash"].as_str().unwrap().len(), 16);
        assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
        if wrong.contains(id) {
            assert_eq!(r["error_kind"], "invalid_reply", "{r}");
            assert!(r["error"]
                .as_str()
                .unwrap()
                .contains("after the repair round"));
            assert_eq!(r["reply"], r#"{"scene": 7, "objects": "none"}"#);
        } else {
            assert_eq!(r["annotation"], annotation_for(id), "{rel}");
        }
    }
    let kind = |rel: &str| by_rel[rel]["error_kind"].as_str().unwrap().to_owned();
    assert_eq!(kind(&bad.empty), "empty");
    assert_eq!(by_rel[bad.empty.as_str()]["image_id"], md5_hex(b""));
    assert_eq!(kind(&bad.fake), "not_an_image");
    assert_eq!(kind(&bad.huge), "too_large");
    if let Some(u) = &bad.unreadable {
        assert_eq!(kind(u), "unreadable");
        assert_eq!(by_rel[u.as_str()]["image_id"], Value::Null);
    }
    assert!(!by_rel.contains_key(bad.duplicate.as_str()));
    assert!(!by_rel.contains_key("junk/link.jpg"));
    assert!(
        log.contains(&format!(
            "duplicate: {} has the bytes of {first_image}",
            bad.duplicate
        )),
        "{log}"
    );
    assert!(
        log.contains("junk/IMG_9999.HEIC: unsupported extension `.heic`"),
        "{log}"
    );
    assert!(log.contains("junk/link.jpg: link out of the root"), "{log}");
    assert!(
        log.contains("junk/notes.txt: unsupported extension `.txt`"),
        "{log}"
    );
    assert!(log.contains("10 already done"), "{log}");
    // Faults happened and were survived: retries, and the prose replies were repaired.
    let faults = server.log.by_fault.lock().unwrap().clone();
    for f in [
        "ServerError",
        "RateLimited",
        "MalformedBody",
        "Drop",
        "ProseContent",
    ] {
        assert!(
            faults.get(f).copied().unwrap_or(0) > 0,
            "{f} never injected: {faults:?}"
        );
    }

    // A resumed run over a complete output does nothing.
    let mut args = annotate_args(root_s, raw_s, &model);
    args.push("--resume".into());
    let before = server
        .log
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    let o = labels(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        server
            .log
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        before
    );
    assert_eq!(count_lines(&raw), recs.len());

    // Convert with the shipped mapping.
    let gt = tmp.path().join("ground_truth_auto.jsonl");
    let o = labels(&[
        "convert",
        "--input",
        raw_s,
        "--output",
        gt.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report = text(&o);
    let truth = lines(&gt);
    let good: Vec<&String> = ids.values().filter(|id| !always_wrong(id)).collect();
    assert_eq!(truth.len(), good.len());
    let got: HashMap<&str, &Value> = truth
        .iter()
        .map(|t| (t["image_id"].as_str().unwrap(), t))
        .collect();
    for id in &good {
        assert_eq!(got[id.as_str()], &expected_truth(id), "{id}");
    }
    assert!(
        report.contains(&format!(
            "{} lines: {} records written, {} error lines",
            recs.len(),
            good.len(),
            recs.len() - good.len()
        )),
        "{report}"
    );
    let mugs = good
        .iter()
        .flat_map(|id| annotation_for(id)["objects"].as_array().unwrap().clone())
        .filter(|o| {
            o["coarse_type"] == "mug"
                && o["is_main"] == true
                && o["confidence"].as_f64().unwrap() >= 0.7
        })
        .count();
    if mugs > 0 {
        assert!(
            report.contains("unmapped object types (dropped)"),
            "{report}"
        );
        assert!(
            report.contains(&format!("  {:<44} {:>7}", "mug", mugs)),
            "{report}"
        );
    }
    let landscapes = good
        .iter()
        .filter(|id| annotation_for(id)["scene"] == "Landscape")
        .count();
    let other = truth
        .iter()
        .filter(|t| t["scene"][0] == "scene.other")
        .count();
    assert_eq!(other, landscapes);
    if landscapes > 0 {
        assert!(report.contains("unmapped scene values"), "{report}");
    }

    // Sample 20 for review, stratified by scene; the human corrects two scenes.
    let human = tmp.path().join("ground_truth_human.json");
    let o = labels(&[
        "sample",
        "--input",
        gt.to_str().unwrap(),
        "--output",
        human.to_str().unwrap(),
        "--size",
        "20",
        "--seed",
        "42",
        "--stratify",
        "scene",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut list: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&human).unwrap()).unwrap();
    assert_eq!(list.len(), 20);
    for r in &list {
        assert_eq!(
            r,
            got[r["image_id"].as_str().unwrap()],
            "records are unchanged"
        );
    }
    let again = labels(&[
        "sample",
        "--input",
        gt.to_str().unwrap(),
        "--output",
        tmp.path().join("h2.json").to_str().unwrap(),
        "--size",
        "20",
        "--seed",
        "42",
        "--stratify",
        "scene",
    ]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        std::fs::read(&human).unwrap(),
        std::fs::read(tmp.path().join("h2.json")).unwrap(),
        "the same seed draws the same sample"
    );
    let mut corrected = 0;
    for r in list.iter_mut() {
        if corrected < 2 && r["scene"][0] != "scene.animals" {
            r["scene"] = json!(["scene.animals"]);
            corrected += 1;
        }
    }
    std::fs::write(&human, serde_json::to_string_pretty(&list).unwrap()).unwrap();

    // Evaluate the auto labels (as a prediction file) against the corrected human subset.
    let o = labels(&[
        "eval",
        "--gt",
        human.to_str().unwrap(),
        "--pred",
        gt.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["joined"], 20);
    assert_eq!(r["missing_predictions"], json!([]));
    assert_eq!(
        r["unknown_predictions"].as_array().unwrap().len(),
        good.len() - 20
    );
    let acc = r["metrics"]["scene_accuracy"].as_f64().unwrap();
    assert!((acc - 18.0 / 20.0).abs() < 1e-12, "{r}");
    // And the table names the missing side when the prediction file lacks some ids.
    let partial = tmp.path().join("pred_partial.jsonl");
    let keep: Vec<String> = truth.iter().skip(5).map(|t| t.to_string() + "\n").collect();
    std::fs::write(&partial, keep.concat()).unwrap();
    let o = labels(&[
        "eval",
        "--gt",
        gt.to_str().unwrap(),
        "--pred",
        partial.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        table.contains(&format!(
            "{} ground-truth records, {} predictions, {} joined",
            good.len(),
            good.len() - 5,
            good.len() - 5
        )),
        "{table}"
    );
    assert!(
        table.contains("ground-truth ids without a prediction (5): "),
        "{table}"
    );
    assert!(table.contains("scene accuracy 1.000"), "{table}");
}

#[test]
fn killed_runs_resume_with_no_duplicate_and_no_missing_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let ids = library(&root);
    // Latency makes the run last long enough to be killed at chosen points.
    let server = stub(
        25,
        Arc::new(|_, _, _| Fault::None),
        Duration::from_secs(120),
    );
    let model = format!("openai:{}#stub-vl", server.url());
    let raw = tmp.path().join("raw.jsonl");
    let (root_s, raw_s) = (root.to_str().unwrap(), raw.to_str().unwrap());
    let mut args = annotate_args(root_s, raw_s, &model);
    args.extend(["--resume", "--concurrency", "3"].map(String::from));
    // Kill points (lines written before the kill), seeded; the third kill also tears the last
    // line, as a kill in the middle of a write would.
    let mut rng = vlmtest::task::import::split::SplitMix64::new(2024);
    let mut points: Vec<usize> = (0..4).map(|_| 3 + rng.below(40) as usize).collect();
    points.sort_unstable();
    let mut kills = 0;
    let mut tears = 0;
    let mut runs = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for (k, &at) in points.iter().enumerate() {
        runs += 1;
        let mut child = Command::new(BIN)
            .arg("labels")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if count_lines(&raw) >= at {
                break None;
            }
            assert!(Instant::now() < deadline, "the run took too long");
            std::thread::sleep(Duration::from_millis(2));
        };
        if finished.is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
            if k == 2 {
                let len = std::fs::metadata(&raw).unwrap().len();
                let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
                f.set_len(len - 7).unwrap();
                tears += 1;
            }
        }
    }
    runs += 1;
    let o = labels(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let recs = lines(&raw);
    let got: Vec<&str> = recs
        .iter()
        .map(|r| r["image_id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = got.iter().copied().collect();
    assert_eq!(got.len(), unique.len(), "no duplicate line");
    let want: HashSet<&str> = ids.values().map(String::as_str).collect();
    assert_eq!(unique, want, "no missing line");
    for r in &recs {
        let id = r["image_id"].as_str().unwrap();
        if always_wrong(id) {
            assert_eq!(r["error_kind"], "invalid_reply");
        } else {
            assert_eq!(r["annotation"], annotation_for(id));
        }
    }
    eprintln!(
        "labels_workflow: {runs} runs, {kills} killed with SIGKILL at {points:?} lines, {tears} torn line(s) redone; {} lines, all distinct",
        recs.len()
    );
    assert!(kills >= 3, "the kills happened ({kills} of 4)");
    assert_eq!(tears, 1);
}

#[test]
fn a_dying_server_stops_the_run_and_nothing_written_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let ids = library(&root);
    let server = stub(
        40,
        Arc::new(|_, _, _| Fault::None),
        Duration::from_millis(500),
    );
    let model = format!("openai:{}#stub-vl", server.url());
    let raw = tmp.path().join("raw.jsonl");
    let (root_s, raw_s) = (root.to_str().unwrap(), raw.to_str().unwrap());
    let mut args = annotate_args(root_s, raw_s, &model);
    args.extend(["--resume", "--concurrency", "2"].map(String::from));
    let at = args.iter().position(|a| a == "--retries").unwrap();
    args[at + 1] = "1".into();
    let o = labels(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the endpoint stopped answering"),
        "{}",
        text(&o)
    );
    let written = lines(&raw);
    assert!(
        !written.is_empty() && written.len() < IMAGES,
        "{}",
        written.len()
    );
    assert!(
        written
            .iter()
            .all(|r| r.get("annotation").is_some() || r["error_kind"] == "invalid_reply"),
        "no endpoint failure becomes a line"
    );
    drop(server);

    let server = stub(0, Arc::new(|_, _, _| Fault::None), Duration::from_secs(60));
    let model = format!("openai:{}#stub-vl", server.url());
    let mut args = annotate_args(root_s, raw_s, &model);
    args.push("--resume".into());
    let o = labels(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{} already done", written.len())),
        "{}",
        text(&o)
    );
    let recs = lines(&raw);
    assert_eq!(
        &recs[..written.len()],
        &written[..],
        "earlier lines unchanged"
    );
    let got: HashSet<&str> = recs
        .iter()
        .map(|r| r["image_id"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), recs.len());
    assert_eq!(
        got,
        ids.values().map(String::as_str).collect::<HashSet<_>>()
    );
}

#[test]
fn a_torn_last_line_is_cut_off_and_redone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let ids = library(&root);
    let server = stub(0, Arc::new(|_, _, _| Fault::None), Duration::from_secs(60));
    let model = format!("openai:{}#stub-vl", server.url());
    let raw = tmp.path().join("raw.jsonl");
    let (root_s, raw_s) = (root.to_str().unwrap(), raw.to_str().unwrap());
    let mut args = annotate_args(root_s, raw_s, &model);
    args.extend(["--limit", "12"].map(String::from));
    assert_eq!(labels(&args).status.code(), Some(0));
    let full = std::fs::read(&raw).unwrap();
    let mut rng = vlmtest::task::import::split::SplitMix64::new(7);
    for _ in 0..3 {
        // Cut inside the last line, keeping at least its first byte.
        let last_start = full[..full.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        let cut = last_start + 1 + rng.below((full.len() - last_start - 1) as u64) as usize;
        std::fs::write(&raw, &full[..cut]).unwrap();
        let mut args = annotate_args(root_s, raw_s, &model);
        args.extend(["--limit", "12", "--resume"].map(String::from));
        let o = labels(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            text(&o).contains("cut off a torn last line (line 12"),
            "{}",
            text(&o)
        );
        let t = text(&o);
        assert!(
            t.contains("1 annotated, 0 error lines") || t.contains("0 annotated, 1 error lines"),
            "exactly the torn line's image was redone: {t}"
        );
        let recs = lines(&raw);
        assert_eq!(recs.len(), 12);
        let got: HashSet<&str> = recs
            .iter()
            .map(|r| r["image_id"].as_str().unwrap())
            .collect();
        assert_eq!(got.len(), 12);
        let first12: HashSet<&str> = ids.values().map(String::as_str).collect();
        assert!(got.is_subset(&first12));
    }
    // A bad line that is not the last is refused, naming the line.
    let mut text_ = std::fs::read_to_string(&raw).unwrap();
    text_.insert_str(0, "garbage\n");
    std::fs::write(&raw, text_).unwrap();
    let mut args = annotate_args(root_s, raw_s, &model);
    args.push("--resume".into());
    let o = labels(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("raw.jsonl:1: not JSON"), "{}", text(&o));
}

/// The real path: `vlmtest serve`'s HTTP server over the tiny seeded Qwen3-VL checkpoint (random
/// weights, so the replies are schema-shaped noise under constrained decoding).
#[test]
fn annotate_against_vlmtest_serve_on_the_tiny_qwen3_vl_fixture() {
    use vlmtest::serve::http::{spawn, ServerConfig};
    use vlmtest::serve::load_decoder;
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("tiny");
    fixture::write_checkpoint(&ckpt, &fixture::Spec::tiny(), 7, candle_core::DType::F32).unwrap();
    let (model, _) = load_decoder(ckpt.to_str().unwrap(), None).unwrap();
    let server = spawn(
        model,
        &ServerConfig {
            name: "tiny".into(),
            max_tokens_cap: 160,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let root = tmp.path().join("photos");
    std::fs::create_dir_all(&root).unwrap();
    let n = 12;
    for i in 0..n {
        fixture::write_image(&root.join(format!("p{i}.png")), 32 + 8 * i, 32, i as u64).unwrap();
    }
    let out = tmp.path().join("raw.jsonl");
    let o = AnnotateOptions {
        root: root.clone(),
        output: out.clone(),
        model: format!("openai:{}#tiny", server.url()),
        limit: None,
        resume: false,
        concurrency: 2,
        prompt: DEFAULT_PROMPT.into(),
        schema: Schema::new(default_schema()).unwrap(),
        id_hash: IdHash::Md5,
        extensions: vec!["png".into()],
        max_bytes: 1 << 20,
        max_tokens: 160,
        timeout: Duration::from_secs(120),
        retries: 0,
        backoff: Duration::from_millis(50),
        progress: false,
    };
    let start = Instant::now();
    // A dry run of 5, then the rest by resuming.
    let dry = annotate(&AnnotateOptions {
        limit: Some(5),
        ..o.clone()
    })
    .unwrap();
    assert_eq!(dry.annotated + dry.error_lines(), 5);
    let s = annotate(&AnnotateOptions {
        resume: true,
        ..o.clone()
    })
    .unwrap();
    assert_eq!(s.already_done, 5);
    eprintln!(
        "labels_workflow: tiny Qwen3-VL over HTTP: {n} images in {:.1} s\n{}",
        start.elapsed().as_secs_f64(),
        s.render()
    );
    assert!(s.complete(), "{}", s.render());
    assert_eq!(s.annotated + s.error_lines(), n as usize - 5);
    assert!(
        s.prompt_tokens > 16 * (n as u64 - 5),
        "image tokens were counted: {}",
        s.prompt_tokens
    );
    let schema = Schema::new(default_schema()).unwrap();
    let recs = lines(&out);
    assert_eq!(recs.len(), n as usize);
    for r in &recs {
        match r.get("annotation") {
            Some(a) => assert_eq!(schema.validate(a), Ok(())),
            None => {
                assert_eq!(r["error_kind"], "invalid_reply", "{r}");
                assert!(r["reply"].is_string());
            }
        }
    }
}

/// Throughput against a stub with 100 ms latency, at a few concurrency levels, and the cost of
/// hashing and encoding a 12-megapixel JPEG. `cargo test --test integration labels_throughput
/// -- --ignored --nocapture` prints the table.
#[test]
#[ignore = "a measurement (about 20 s): run with --ignored --nocapture"]
fn labels_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    std::fs::create_dir_all(&root).unwrap();
    let n = 96;
    for i in 0..n {
        fixture::write_image(&root.join(format!("p{i:03}.png")), 32, 24, i as u64).unwrap();
    }
    // Every reply valid: one request per image.
    let server = StubServer::start(StubConfig {
        latency: Duration::from_millis(100),
        lifetime: Duration::from_secs(300),
        content: Some(Arc::new(|req| {
            annotation_for(&request_id(req).unwrap_or_else(|| "0".repeat(32))).to_string()
        })),
        ..StubConfig::default()
    })
    .unwrap();
    let mut table = String::from(
        "concurrency  images  seconds  images/s  ideal c/0.1s  rate/ideal (goal >= 0.9)\n",
    );
    for c in [1usize, 4, 16, 32] {
        let count = if c == 1 { 24 } else { n };
        let out = tmp.path().join(format!("raw{c}.jsonl"));
        let o = AnnotateOptions {
            root: root.clone(),
            output: out.clone(),
            model: format!("openai:{}#stub-vl", server.url()),
            limit: Some(count),
            resume: false,
            concurrency: c,
            prompt: DEFAULT_PROMPT.into(),
            schema: Schema::new(free_scene_schema_value()).unwrap(),
            id_hash: IdHash::Md5,
            extensions: vec!["png".into()],
            max_bytes: 1 << 20,
            max_tokens: 256,
            timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(50),
            progress: false,
        };
        let s = annotate(&o).unwrap();
        let errors: Vec<Value> = lines(&out)
            .into_iter()
            .filter(|r| r.get("error").is_some())
            .collect();
        assert_eq!(s.annotated, count, "{}{errors:?}", s.render());
        let secs = s.elapsed.as_secs_f64();
        let rate = count as f64 / secs;
        let ideal = c as f64 / 0.1;
        table.push_str(&format!(
            "{c:>11}  {count:>6}  {secs:>7.2}  {rate:>8.1}  {ideal:>12.1}  {:>5.2}\n",
            rate / ideal
        ));
    }
    // Hashing and encoding a 12-megapixel JPEG: the per-image work before the request.
    let big = image::RgbImage::from_fn(4000, 3000, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
    });
    let jpg = tmp.path().join("big.jpg");
    big.save_with_format(&jpg, image::ImageFormat::Jpeg)
        .unwrap();
    let bytes = std::fs::read(&jpg).unwrap();
    let t = Instant::now();
    let reps = 5;
    for _ in 0..reps {
        let b = std::fs::read(&jpg).unwrap();
        let id = IdHash::Md5.id(&b);
        let uri = vlmtest::model::openai::bytes_data_uri("image/jpeg", &b);
        assert!(id.len() == 32 && uri.len() > b.len());
    }
    let per = t.elapsed().as_secs_f64() / reps as f64;
    table.push_str(&format!(
        "12-megapixel JPEG ({:.1} MB): read + MD5 + base64 {:.1} ms per image on one core, {:.0} images/s\n",
        bytes.len() as f64 / 1e6,
        per * 1e3,
        1.0 / per
    ));
    eprintln!("{table}");
}

/// The walkthrough of docs/labels.md: the four steps on a 12-image library against the stub,
/// printing each command's output. `cargo test --test integration labels_walkthrough --
/// --ignored --nocapture`.
#[test]
#[ignore = "prints the documentation's example output"]
fn labels_walkthrough() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let ids = library(&root);
    std::fs::write(root.join("2020/IMG_0001.HEIC"), b"heic").unwrap();
    let server = stub(0, faults(), Duration::from_secs(60));
    let model = format!("openai:{}#Qwen3-VL-32B-Instruct", server.url());
    let raw = tmp.path().join("raw.jsonl");
    let (root_s, raw_s) = (root.to_str().unwrap(), raw.to_str().unwrap());
    let show = |title: &str, o: &Output| {
        eprintln!(
            "$ {title}\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let mut args = annotate_args(root_s, raw_s, &model);
    args.extend(["--limit", "12"].map(String::from));
    show("annotate --limit 12", &labels(&args));
    let mut args = annotate_args(root_s, raw_s, &model);
    args.push("--resume".into());
    show("annotate --resume", &labels(&args));
    eprintln!(
        "first line: {}",
        std::fs::read_to_string(&raw)
            .unwrap()
            .lines()
            .next()
            .unwrap()
    );
    let gt = tmp.path().join("ground_truth_auto.jsonl");
    show(
        "convert",
        &labels(&[
            "convert",
            "--input",
            raw_s,
            "--output",
            gt.to_str().unwrap(),
        ]),
    );
    eprintln!(
        "first record: {}",
        std::fs::read_to_string(&gt)
            .unwrap()
            .lines()
            .next()
            .unwrap()
    );
    let human = tmp.path().join("ground_truth_human.json");
    show(
        "sample",
        &labels(&[
            "sample",
            "--input",
            gt.to_str().unwrap(),
            "--output",
            human.to_str().unwrap(),
            "--size",
            "20",
            "--seed",
            "42",
            "--stratify",
            "scene",
        ]),
    );
    let mut list: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&human).unwrap()).unwrap();
    list[0]["scene"] = json!(["scene.food"]);
    list[1]["attributes"]["attr.has_person"] = json!(true);
    std::fs::write(&human, serde_json::to_string_pretty(&list).unwrap()).unwrap();
    show(
        "eval (auto labels scored against the corrected human subset)",
        &labels(&[
            "eval",
            "--gt",
            human.to_str().unwrap(),
            "--pred",
            gt.to_str().unwrap(),
        ]),
    );
    assert_eq!(ids.len(), IMAGES);
}
