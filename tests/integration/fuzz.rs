//! Fuzzing without a nightly toolchain: every parser that reads a user's file or a network reply
//! gets arbitrary input (raw bytes, and text built from its own syntax's pieces, which reaches
//! deeper than noise) and must return — an error is fine, a panic is a bug. A failing input is
//! kept by proptest under `proptest-regressions/` and replayed first on every later run.
//!
//! `cargo test --test integration fuzz::` runs each target with proptest's default 256 inputs;
//! `PROPTEST_CASES=100000 cargo test --release --test integration fuzz:: -- --test-threads 1`
//! runs them long.

use std::path::Path;

use proptest::prelude::*;
use vlmtest::case::{Message, Role};
use vlmtest::config::{Config, SuiteConfig};

/// Text made of a syntax's own pieces (and a little noise), up to `len` pieces.
fn pieces(alphabet: &'static [&'static str], len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::sample::select(alphabet).prop_map(str::to_owned),
            1 => "\\PC{0,4}",
        ],
        0..len,
    )
    .prop_map(|v| v.concat())
}

const JSON: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\"id\"",
    "\"conversations\"",
    "\"role\"",
    "\"user\"",
    "\"assistant\"",
    "\"content\"",
    "\"image\"",
    "\"metadata\"",
    "\"expect\"",
    "\"kind\"",
    "\"task\"",
    "\"spec\"",
    "\"numbers\"",
    "\"value\"",
    "\"unit\"",
    "\"name\"",
    "\"answer\"",
    "\"price\"",
    "\"is_spam\"",
    "\"deals\"",
    "\"bbox\"",
    "\"score\"",
    "\"reason\"",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1e308",
    "4.89",
    "\"Nm\"",
    "\"../x.png\"",
    "\"data:image/png;base64,AAAA\"",
    " ",
    "\n",
    "\\u0000",
    "\\\"",
];

const TOML: &[&str] = &[
    "[[probe]]\n",
    "[suites.s]\n",
    "[suites.s.gates]\n",
    "[model]\n",
    "[judge]\n",
    "id = ",
    "category = ",
    "question = ",
    "numbers = ",
    "keywords = ",
    "tolerance = ",
    "image = ",
    "messages = ",
    "thresholds = ",
    "pass_rate = ",
    "max = ",
    "min = ",
    "spec = ",
    "batch_size = ",
    "\"a\"",
    "\"c\"",
    "\"Q?\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    "=",
    "value = ",
    "unit = ",
    "\"Nm\"",
    "1",
    "-1",
    "0.5",
    "1e400",
    "nan",
    "inf",
    "true",
    "\n",
    " ",
    "\"\"\"",
    "#",
];

const TEXT: &[&str] = &[
    "40",
    "Nm",
    " ",
    "N·m",
    "-",
    "–",
    "±",
    "1,250",
    "4,89",
    "€",
    "$",
    ".",
    "ml",
    "l",
    "°",
    "e3",
    "×10³",
    "/",
    "rpm",
    "bar",
    "{",
    "}",
    "\"price\":",
    "\"score\":",
    "5",
    "[",
    "]",
    ",",
    "\n",
    "```json",
    "```",
    "M12",
    "%",
    "ft-lb",
    "x",
    "0.",
    ".5",
    "1e999",
    "-0",
];

fn write(dir: &Path, rel: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, bytes).expect("write");
    p
}

fn rubric() -> vlmtest::judge::rubric::Rubric {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("judges/correctness.toml");
    let text = std::fs::read_to_string(&path).expect("rubric");
    vlmtest::judge::rubric::Rubric::parse(&text, &path).expect("the example rubric parses")
}

proptest! {
    #[test]
    fn rows_jsonl(text in pieces(JSON, 60), noise in proptest::collection::vec(any::<u8>(), 0..64)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = text.into_bytes();
        bytes.extend(noise);
        let f = write(dir.path(), "cases/s.jsonl", &bytes);
        let _ = vlmtest::suite::rows::load(&f, "s", &SuiteConfig::default(), dir.path());
    }

    #[test]
    fn probes_toml(text in pieces(TOML, 60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = write(dir.path(), "probes/s.toml", text.as_bytes());
        let _ = vlmtest::suite::probe::load(&f, "s", &SuiteConfig::default(), dir.path());
    }

    #[test]
    fn project_config(text in pieces(TOML, 60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "vlmtest.toml", text.as_bytes());
        let _ = Config::load(dir.path());
    }

    #[test]
    fn replay_file(text in pieces(JSON, 60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = write(dir.path(), "answers.jsonl", text.as_bytes());
        let _ = vlmtest::model::replay::ReplayModel::load(&f);
    }

    #[test]
    fn spam_tsv(text in pieces(&["\t", "\n", "spam", "ham", "1", "0", "0.5", "title", "description", "label", "x", "\"", " "], 80)) {
        let _ = vlmtest::task::import::spam::parse_tsv(Path::new("in.tsv"), &text);
    }

    #[test]
    fn labels_jsonl(text in pieces(JSON, 60), noise in proptest::collection::vec(any::<u8>(), 0..32)) {
        let mut bytes = text.into_bytes();
        bytes.extend(noise);
        let _ = vlmtest::labels::jsonl::parse(&bytes);
    }

    #[test]
    fn deals_page(text in pieces(JSON, 60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = write(dir.path(), "page.json", text.as_bytes());
        let _ = vlmtest::task::import::deals::read_page(&f);
    }

    #[test]
    fn gguf_header(magic in prop_oneof![Just(b"GGUF".to_vec()), Just(Vec::new())], bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut all = magic;
        all.extend(bytes);
        let f = write(dir.path(), "m.gguf", &all);
        let _ = vlmtest::model::gguf::GgufModel::load(&f);
    }

    #[test]
    fn adapter_config(text in pieces(&["{", "}", "\"r\"", "\"lora_alpha\"", "\"target_modules\"", "\"base_model_name_or_path\"", ":", ",", "[", "]", "8", "-1", "0", "1e400", "\"q_proj\"", "\"all-linear\"", "null", "\"peft_type\"", "\"LORA\""], 40)) {
        let _ = vlmtest::lora::config::AdapterConfig::from_json(&text, Path::new("adapter_config.json"));
    }

    #[test]
    fn chat_template(text in pieces(&["{{", "}}", "{%", "%}", " for m in messages ", " endfor ", " if ", " endif ", "m.role", "m.content", "|", "raise_exception('x')", "'", "\"", "loop.index", " ", "x", "[0]", ".split()", "add_generation_prompt"], 40)) {
        if let Ok(t) = vlmtest::model::qwen3_vl::template::ChatTemplate::compile(text, "t.jinja".into(), None, None) {
            let _ = t.render(&[Message::text(Role::User, "hi")]);
        }
    }

    #[test]
    fn image_header(bytes in proptest::collection::vec(any::<u8>(), 0..256), png in any::<bool>()) {
        let mut all = if png { b"\x89PNG\r\n\x1a\n".to_vec() } else { b"\xff\xd8\xff".to_vec() };
        all.extend(bytes);
        let _ = vlmtest::image::decode(&all, "fuzz");
        let _ = vlmtest::image::decode_data_uri(&String::from_utf8_lossy(&all));
    }

    #[test]
    fn judge_reply(text in pieces(TEXT, 40)) {
        let _ = vlmtest::judge::parse::parse(&rubric(), &text);
    }

    #[test]
    fn json_and_number_extractors(text in pieces(TEXT, 60)) {
        let _ = vlmtest::task::extract::first_json(&text);
        let _ = vlmtest::task::extract::parse_number(&text);
        let _ = vlmtest::score::numbers::extract(&text);
    }

    #[test]
    fn server_request_body(text in pieces(&["{", "}", "\"messages\"", "\"role\"", "\"content\"", "\"user\"", "\"type\"", "\"image_url\"", "\"url\"", "\"text\"", "\"max_tokens\"", "\"response_format\"", "\"json_schema\"", "\"schema\"", "\"logprobs\"", "\"top_logprobs\"", ":", ",", "[", "]", "1", "-5", "1e20", "true", "null", "\"x\""], 60)) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            let _ = vlmtest::serve::api::parse_request(&v, 512);
        }
    }
}
