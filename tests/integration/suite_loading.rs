//! Loading probes and validation rows: what becomes of each field, and errors that name the
//! file, line and field.

use std::path::Path;

use vlmtest::case::{Expectation, ImageSource, Part, Role};
use vlmtest::config::Config;
use vlmtest::suite::{load_all, Suite, IMAGE_UNAVAILABLE};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn load(dir: &Path) -> Vec<Suite> {
    let cfg = Config::load(dir).expect("config");
    load_all(dir, &cfg, None)
}

#[test]
fn rows_use_the_last_assistant_turn_as_reference_and_the_suite_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "vlmtest.toml",
        "[suites.qa]\nsystem = \"Be exact.\"\nrow_scorers = [\"numbers\", \"token_f1\"]\n",
    );
    write(dir.path(), "cases/images/p1.png", "not really a png");
    write(
        dir.path(),
        "cases/qa.jsonl",
        r#"{"image": "images/p1.png", "conversations": [{"role": "user", "content": "Torque?"}, {"role": "assistant", "content": "Stage 1: 40 Nm, Stage 2: 90°"}], "metadata": {"content_type": "table"}}
"#,
    );
    let suites = load(dir.path());
    assert!(suites[0].errors.is_empty(), "{:?}", suites[0].errors);
    let case = &suites[0].cases[0];
    assert_eq!(case.id.category, "table");
    assert!(case.id.id.starts_with("row_"));
    assert_eq!(
        case.reference.as_deref(),
        Some("Stage 1: 40 Nm, Stage 2: 90°")
    );
    assert_eq!(case.messages[0].role, Role::System);
    assert_eq!(
        case.messages.len(),
        2,
        "the reference turn is not sent to the model"
    );
    assert!(
        matches!(&case.messages[1].parts[0], Part::Image { image: ImageSource::Path(p) } if p.ends_with("cases/images/p1.png"))
    );
    let Expectation::Numbers { numbers, .. } = &case.expect[0] else {
        panic!("numbers first: {:?}", case.expect)
    };
    let units: Vec<Option<&str>> = numbers.iter().map(|n| n.unit.as_deref()).collect();
    assert_eq!(units, [None, Some("Nm"), None, Some("deg")]);
    assert!(matches!(case.expect[1], Expectation::TokenF1 { .. }));
}

#[test]
fn every_bad_entry_is_named_and_the_good_ones_still_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "probes/qa.toml",
        r#"[[probe]]
id = "ok_1"
category = "torque"
question = "Torque?"
numbers = [{ value = 40, unit = "Nm" }]

[[probe]]
id = "no_question"
category = "torque"
keywords = ["x"]

[[probe]]
id = "ok_1"
category = "torque"
question = "Again?"
keywords = ["x"]

[[probe]]
id = "escape"
category = "torque"
question = "Image?"
image = "../../etc/passwd"
keywords = ["x"]
"#,
    );
    write(dir.path(), "cases/qa.jsonl", "{\"conversations\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"7 Nm\"}], \"extra\": 1}\nnot json\n");
    let suites = load(dir.path());
    let s = &suites[0];
    assert_eq!(s.cases.len(), 1, "{:?}", s.cases);
    let errors: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
    let all = errors.join("\n");
    assert!(
        all.contains("qa.toml:7: field `question`: missing"),
        "{all}"
    );
    assert!(
        all.contains("qa.toml:18: field `image`") && all.contains("leaves the project root")
            || all.contains("not found"),
        "{all}"
    );
    assert!(all.contains("field `id`: duplicate id `ok_1`"), "{all}");
    assert!(all.contains("qa.jsonl:1: field `extra`"), "{all}");
    assert!(all.contains("qa.jsonl:2:"), "{all}");
}

#[test]
fn unknown_probe_fields_name_their_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "probes/qa.toml", "[[probe]]\nid = \"a\"\ncategory = \"c\"\nquestion = \"q\"\nkeywords = [\"k\"]\nexpected_answr = \"typo\"\n");
    let suites = load(dir.path());
    let msg = suites[0].errors[0].to_string();
    assert!(
        msg.contains("qa.toml:6") && msg.contains("expected_answr"),
        "{msg}"
    );
}

#[test]
fn a_missing_image_falls_back_to_text_only_where_the_suite_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "vlmtest.toml",
        "[suites.spam]\nmissing_image = \"text_only\"\n",
    );
    write(dir.path(), "probes/spam.toml", "[[probe]]\nid = \"p1\"\ncategory = \"c\"\nquestion = \"Spam?\"\nimage = \"gone.jpg\"\nkeywords = [\"no\"]\n");
    let suites = load(dir.path());
    assert!(suites[0].errors.is_empty(), "{:?}", suites[0].errors);
    let case = &suites[0].cases[0];
    assert!(!case.has_images());
    assert!(case.question().contains(IMAGE_UNAVAILABLE));
    assert_eq!(case.metadata["image"], "missing");

    write(dir.path(), "vlmtest.toml", "");
    let suites = load(dir.path());
    assert!(
        suites[0].errors[0].to_string().contains("gone.jpg"),
        "{:?}",
        suites[0].errors
    );
}

#[test]
fn the_example_suite_loads_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suites = load(root);
    let qa = suites
        .iter()
        .find(|s| s.name == "manual_qa")
        .expect("manual_qa");
    assert!(qa.errors.is_empty(), "{:?}", qa.errors);
    assert!(qa.cases.len() >= 32);
}

/// Before, one bad `[[probe]]` (an unknown key) failed its whole file: the good probes beside it
/// did not load either.
#[test]
fn one_bad_probe_costs_that_probe_not_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "probes/qa.toml",
        "[[probe]]\nid = \"a\"\ncategory = \"c\"\nquestion = \"q\"\nkeywords = [\"k\"]\n\n[[probe]]\nid = \"b\"\ncategory = \"c\"\nquestion = \"q\"\nkeywords = [\"k\"]\ncolour = 1\n\n[[probe]]\nid = \"n\"\ncategory = \"c\"\nquestion = \"q\"\nnumbers = [{ value = 1 }]\ntolerance = { abs = -1.0 }\n\n[[probe]]\nid = \"z\"\ncategory = \"c\"\nquestion = \"q\"\nkeywords = [\"k\"]\n",
    );
    let suites = load(dir.path());
    let ids: Vec<&str> = suites[0].cases.iter().map(|c| c.id.id.as_str()).collect();
    assert_eq!(ids, ["a", "z"]);
    let errors: Vec<String> = suites[0].errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("qa.toml:12: field `colour`: unknown field"),
        "{errors:?}"
    );
    // A negative tolerance would fail every match silently: it is a load error.
    assert!(
        errors[1].contains("qa.toml:19: field `tolerance.abs`") && errors[1].contains("at least 0"),
        "{errors:?}"
    );
}

#[test]
fn rows_survive_a_byte_order_mark_and_a_line_that_is_not_utf8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(b"{\"conversations\": [{\"role\": \"user\", \"content\": \"q1\"}, {\"role\": \"assistant\", \"content\": \"1 Nm\"}]}\n");
    bytes.extend_from_slice(
        b"{\"conversations\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}\n",
    );
    bytes.extend_from_slice(b"{\"conversations\": [{\"role\": \"bot\", \"content\": \"q\"}]}\r\n");
    bytes.extend_from_slice(b"{\"conversations\": [{\"role\": \"user\", \"content\": \"q4\"}, {\"role\": \"assistant\", \"content\": \"4 Nm\"}]}\r\n");
    let p = dir.path().join("cases/qa.jsonl");
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, bytes).expect("write");
    let suites = load(dir.path());
    assert_eq!(suites[0].cases.len(), 2, "{:?}", suites[0].errors);
    let errors: Vec<String> = suites[0].errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("qa.jsonl:2: not UTF-8"), "{errors:?}");
    // The field is named by its path, not by the bad value (`bot`).
    assert!(
        errors[1].contains("qa.jsonl:3: field `conversations[0].role`: unknown variant `bot`"),
        "{errors:?}"
    );
}

#[test]
fn an_empty_suite_file_is_a_named_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "cases/qa.jsonl", "\n\n");
    let suites = load(dir.path());
    assert!(suites[0].cases.is_empty());
    let msg = suites[0].errors[0].to_string();
    assert!(msg.contains("qa.jsonl: the file holds no cases"), "{msg}");
}

#[test]
fn a_suite_name_holding_the_separator_is_a_load_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "cases/shop::qa.jsonl",
        "{\"conversations\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"7 Nm\"}]}\n",
    );
    let suites = load(dir.path());
    assert!(suites[0].cases.is_empty());
    let msg = suites[0].errors[0].to_string();
    assert!(msg.contains("suite name") && msg.contains("`:`"), "{msg}");
}

#[cfg(unix)]
#[test]
fn a_symlink_that_leads_out_of_the_project_is_refused_like_dot_dot() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.png"), "not an image").expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("cases")).expect("mkdir");
    std::os::unix::fs::symlink(
        outside.path().join("secret.png"),
        dir.path().join("cases/link.png"),
    )
    .expect("symlink");
    write(
        dir.path(),
        "cases/qa.jsonl",
        "{\"image\": \"link.png\", \"conversations\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"7 Nm\"}]}\n",
    );
    let suites = load(dir.path());
    let msg = suites[0].errors[0].to_string();
    assert!(msg.contains("leaves the project root"), "{msg}");
}
