//! The `vlmtest` command line: flags only. Resolution of flags, environment and `vlmtest.toml`
//! happens in `session`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::case::Case;
use crate::config::project_root;
use crate::model::replay::ReplayModel;
use crate::report::{self, junit, table, Report};
use crate::session::{Overrides, Session};

/// Exit codes, in one place: 0 passed, 1 a gate (or a case of an ungated suite) failed, 2 could
/// not run.
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const ERROR: u8 = 2;
}

#[derive(Debug, Parser)]
#[command(
    name = "vlmtest",
    version,
    about = "cargo test for vision-language models"
)]
pub struct Cli {
    /// Project root holding vlmtest.toml, probes/ and cases/ (default: current directory).
    #[arg(long, global = true, env = "VLMTEST_ROOT")]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Junit,
}

#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Only these suites (repeatable).
    #[arg(long = "suite")]
    pub suites: Vec<String>,
    /// Only cases whose test name contains this text (as `cargo test -- FILTER`).
    #[arg(long)]
    pub filter: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the cases (test names) of every suite.
    List {
        #[command(flatten)]
        selection: Selection,
    },
    /// Run the evaluation: one line per case, a summary table, reports under target/vlmtest/.
    Run {
        #[command(flatten)]
        selection: Selection,
        /// Model spec: `smollm2`, a .gguf file, `replay:<answers.jsonl>`.
        #[arg(long)]
        model: Option<String>,
        /// PEFT LoRA adapter folder.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// At most this many cases per suite.
        #[arg(long)]
        max_samples: Option<usize>,
        #[arg(long)]
        max_new_tokens: Option<usize>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Also write the answers as a replay file.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Import a seed dataset (deals, spam, price, labels) as `cases/<suite>.jsonl`.
    Import(crate::task::import::ImportArgs),
    /// Weak labels from a VLM server: annotate a photo folder, convert, sample, evaluate.
    Labels(crate::labels::LabelsArgs),
    /// Serve a local model over the OpenAI chat-completions protocol.
    Serve(crate::serve::ServeArgs),
    /// Ask the configured judge for a rubric's evaluation steps (from its `criteria`) and freeze
    /// them into the rubric file, as GEval does.
    JudgeSteps(crate::judge::steps::StepsArgs),
    /// Fetch the default local model into the cache (done on first use otherwise); print its path.
    FetchModel,
    /// Render saved reports (default: every target/vlmtest/report-*.json).
    Report {
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    crate::model::gguf::pin_portable_kernels();
    let cli = Cli::parse();
    let root = cli.root.clone().unwrap_or_else(project_root);
    let code = match cli.command {
        Command::List { selection } => list(&root, &selection),
        Command::Run {
            selection,
            model,
            adapter,
            max_samples,
            max_new_tokens,
            format,
            record,
        } => {
            let overrides = Overrides {
                model,
                adapter,
                max_samples,
                max_new_tokens,
            };
            run(&root, &selection, &overrides, format, record)
        }
        Command::Report { paths, format } => show_reports(&root, paths, format),
        Command::Import(args) => match crate::task::import::run_import(&args) {
            Ok(()) => exit::PASSED,
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
        },
        Command::Labels(args) => match crate::labels::run(&args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {}", crate::labels::error_chain(&e));
                exit::ERROR
            }
        },
        Command::Serve(args) => match crate::serve::run_serve(&args) {
            Ok(()) => exit::PASSED,
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
        },
        Command::JudgeSteps(args) => match crate::judge::steps::run(&root, &args) {
            Ok(steps) => {
                println!(
                    "wrote {} evaluation steps to {}:",
                    steps.len(),
                    args.rubric.display()
                );
                for (i, s) in steps.iter().enumerate() {
                    println!("  {}. {s}", i + 1);
                }
                exit::PASSED
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
        },
        Command::FetchModel => match crate::model::fetch::ensure_default_model() {
            Ok(p) => {
                println!("{}", p.display());
                exit::PASSED
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
        },
    };
    ExitCode::from(code)
}

fn open(root: &std::path::Path, overrides: &Overrides) -> Result<Session, u8> {
    Session::open(root, overrides).map_err(|e| {
        eprintln!("error: {e}");
        exit::ERROR
    })
}

fn selected<'a>(session: &'a Session, sel: &Selection) -> Vec<&'a Case> {
    session
        .suites
        .iter()
        .filter(|s| sel.suites.is_empty() || sel.suites.contains(&s.name))
        .flat_map(|s| &s.cases)
        .filter(|c| {
            !c.ignored
                && sel
                    .filter
                    .as_ref()
                    .is_none_or(|f| c.id.test_name().contains(f.as_str()))
        })
        .collect()
}

fn print_load_errors(session: &Session) -> bool {
    let mut any = false;
    for e in session.suites.iter().flat_map(|s| &s.errors) {
        eprintln!("error: {e}");
        any = true;
    }
    any
}

fn list(root: &std::path::Path, sel: &Selection) -> u8 {
    let session = match open(root, &Overrides::default()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    for c in selected(&session, sel) {
        println!("{}", c.id);
    }
    if print_load_errors(&session) {
        exit::ERROR
    } else {
        exit::PASSED
    }
}

fn run(
    root: &std::path::Path,
    sel: &Selection,
    overrides: &Overrides,
    format: Format,
    record: Option<PathBuf>,
) -> u8 {
    let session = match open(root, overrides) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let load_failed = print_load_errors(&session);
    let cases = selected(&session, sel);
    if cases.is_empty() {
        eprintln!("error: no cases selected");
        return exit::ERROR;
    }
    // Each suite may name its own model; list the ones this run uses.
    let mut models: Vec<&str> = cases
        .iter()
        .map(|c| session.config.model_spec_for(&c.id.suite))
        .collect();
    models.sort_unstable();
    models.dedup();
    let models: Vec<String> = models.iter().map(|m| format!("`{m}`")).collect();
    eprintln!(
        "vlmtest: {} cases, model{} {}",
        cases.len(),
        if models.len() == 1 { "" } else { "s" },
        models.join(", ")
    );
    let eval = session.evaluate(&cases, true);
    if matches!(format, Format::Table) {
        for c in &cases {
            if let Some(v) = eval.verdicts.get(&c.id.test_name()) {
                println!("{}", table::case_line(v));
            }
        }
    }
    if let Some(path) = record {
        let answers: Vec<(String, String)> = cases
            .iter()
            .filter_map(|c| {
                eval.verdicts
                    .get(&c.id.test_name())
                    .and_then(|v| v.answer.as_ref().map(|a| (v.name.clone(), a.text.clone())))
            })
            .collect();
        if let Err(e) = ReplayModel::write(&path, &answers) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return exit::ERROR;
        }
    }
    let out_dir = report::output_dir(&session.root);
    let mut reports: Vec<Report> = Vec::new();
    for suite in &session.suites {
        let wanted = cases.iter().any(|c| c.id.suite == suite.name);
        if !wanted {
            continue;
        }
        let mut r = session.report(suite, &eval);
        // A filtered run reports on what it ran.
        r.verdicts
            .retain(|v| cases.iter().any(|c| c.id.test_name() == v.name));
        if let Err(e) = report::write_json(&out_dir, &r) {
            eprintln!("warning: cannot write report: {e}");
        }
        reports.push(r);
    }
    render(&reports, format);
    if let Some(tps) = eval.stats.tokens_per_second() {
        eprintln!(
            "answers: {} from cache, {} generated ({:.1} tok/s decode+prompt), {} failed",
            eval.stats.from_cache, eval.stats.generated, tps, eval.stats.failed
        );
    } else {
        eprintln!(
            "answers: {} from cache, {} generated, {} failed",
            eval.stats.from_cache, eval.stats.generated, eval.stats.failed
        );
    }
    eprintln!("reports: {}", out_dir.display());
    let failed = reports.iter().any(|r| {
        if r.gates.is_empty() {
            r.failed > 0
        } else {
            !r.gates_passed()
        }
    });
    if load_failed || eval.stats.failed > 0 {
        exit::ERROR
    } else if failed {
        exit::FAILED
    } else {
        exit::PASSED
    }
}

fn render(reports: &[Report], format: Format) {
    match format {
        Format::Table => println!("\n{}", table::summary(reports)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(reports).unwrap_or_default()
        ),
        Format::Junit => print!("{}", junit::render(reports)),
    }
}

fn show_reports(root: &std::path::Path, mut paths: Vec<PathBuf>, format: Format) -> u8 {
    if paths.is_empty() {
        let dir = report::output_dir(root);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!(
                "error: no reports in {} (run `vlmtest run` first)",
                dir.display()
            );
            return exit::ERROR;
        };
        paths = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("report-") && n.ends_with(".json"))
            })
            .collect();
        paths.sort();
    }
    let mut reports = Vec::new();
    for p in &paths {
        match report::read_json(p) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        }
    }
    render(&reports, format);
    exit::PASSED
}
