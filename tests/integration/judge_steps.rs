//! `vlmtest judge-steps`: the real binary asks the in-repo OpenAI-compatible stub server
//! (`vlmtest::judge::stub`) for a rubric's evaluation steps and freezes them into the file.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vlmtest::judge::rubric::Rubric;
use vlmtest::judge::stub::{Fault, StubConfig, StubServer};

const BIN: &str = env!("CARGO_BIN_EXE_vlmtest");

const RUBRIC: &str = "# Tone: graded by the judge.\n\
metric = \"rubric\"   # GEval-style\n\
criteria = \"Is the answer polite? Does it name the unit?\"\n\
\n\
# what the judge sees\n\
fields = [\"input\", \"answer\"]\n\
threshold = 0.6\n";

fn project(judge: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let toml = match judge {
        Some(url) => format!(
            "[judge]\nurl = \"{url}\"\nmodel = \"stub-judge\"\ncache = \"off\"\nbackoff_s = 0.01\n"
        ),
        None => String::new(),
    };
    std::fs::write(dir.path().join("vlmtest.toml"), toml).unwrap();
    std::fs::create_dir(dir.path().join("judges")).unwrap();
    std::fs::write(dir.path().join("judges/tone.toml"), RUBRIC).unwrap();
    dir
}

fn judge_steps(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("judge-steps")
        .args(args)
        .current_dir(root)
        .env("VLMTEST_ROOT", root)
        .env_remove("VLMTEST_JUDGE_URL")
        .env_remove("VLMTEST_JUDGE_MODEL")
        .env_remove("VLMTEST_JUDGE_CACHE")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn judge_steps_freezes_generated_steps_and_keeps_the_rest_of_the_file() {
    // The first attempt of each request gets a 500: the command retries like any judge call.
    let server = StubServer::start(StubConfig {
        plan: Arc::new(|_, _, attempt| {
            if attempt == 0 {
                Fault::ServerError
            } else {
                Fault::None
            }
        }),
        ..StubConfig::default()
    })
    .unwrap();
    let dir = project(Some(&server.url()));
    let path = dir.path().join("judges/tone.toml");

    let out = judge_steps(dir.path(), &["judges/tone.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("wrote 2 evaluation steps to judges/tone.toml"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(server.log.requests.load(Ordering::Relaxed), 2);
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(
        written.starts_with(RUBRIC),
        "the rest of the file is kept:\n{written}"
    );
    assert!(
        written.contains("# Generated from `criteria` by the judge `stub-judge`"),
        "{written}"
    );
    let rubric = Rubric::parse(&written, &path).unwrap();
    assert_eq!(
        rubric.evaluation_steps,
        [
            "Check: Is the answer polite",
            "Check: Does it name the unit"
        ]
    );
    assert_eq!(rubric.threshold, 0.6);

    // Existing steps are not overwritten without --force, and no judge call is made.
    let out = judge_steps(dir.path(), &["judges/tone.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("tone.toml") && err.contains("already has 2") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
    assert_eq!(server.log.requests.load(Ordering::Relaxed), 2);

    // --force replaces them in place: still one `evaluation_steps`, comments kept.
    let out = judge_steps(dir.path(), &["judges/tone.toml", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let forced = std::fs::read_to_string(&path).unwrap();
    assert_eq!(forced.matches("evaluation_steps").count(), 1, "{forced}");
    assert_eq!(forced.matches("# Generated from").count(), 1, "{forced}");
    assert!(forced.starts_with(RUBRIC), "{forced}");
}

#[test]
fn judge_steps_names_the_file_line_and_field_of_bad_input() {
    let server = StubServer::start(StubConfig::default()).unwrap();
    let dir = project(Some(&server.url()));

    let out = judge_steps(dir.path(), &["judges/missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("judges/missing.toml") && err.contains("cannot read"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("judges/broken.toml"),
        "metric = \"rubric\"\ncriteria = \"unterminated\nfields = [\"answer\"]\n",
    )
    .unwrap();
    let out = judge_steps(dir.path(), &["judges/broken.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("judges/broken.toml") && err.contains("line 2"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("judges/typo.toml"),
        "metric = \"rubric\"\ncriteria = \"c\"\nfeilds = [\"answer\"]\n",
    )
    .unwrap();
    let out = judge_steps(dir.path(), &["judges/typo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("judges/typo.toml") && err.contains("line 3") && err.contains("feilds"),
        "{err}"
    );
    assert_eq!(
        server.log.requests.load(Ordering::Relaxed),
        0,
        "bad input never reaches the judge"
    );

    // No judge configured: a clear error, the file untouched.
    let bare = project(None);
    let out = judge_steps(bare.path(), &["judges/tone.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no judge configured"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(bare.path().join("judges/tone.toml")).unwrap(),
        RUBRIC
    );
}
