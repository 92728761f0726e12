//! The `vlmtest` command line: flags only. Resolution of flags, environment and `vlmtest.toml`
//! happens in `config` (through `Session::open`); its errors are printed here, once.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::case::Case;
use crate::config::project_root;
use crate::model::replay::ReplayModel;
use crate::report::{self, junit, table, Report};
use crate::run_store;
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
    /// Project root holding vlmtest.toml, probes/ and cases/ (default: `$VLMTEST_ROOT`, else
    /// the current directory).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Junit,
    /// One self-contained HTML page (images, plots, every case).
    Html,
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
        #[arg(long, value_parser = count)]
        max_samples: Option<usize>,
        /// Tokens generated per answer at most.
        #[arg(long, value_parser = count)]
        max_new_tokens: Option<usize>,
        /// The answer cache: `use` (default), `refresh` (generate again, overwrite), `off`.
        #[arg(long, value_enum)]
        cache: Option<crate::cache::AnswerCacheMode>,
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
    /// List the stored runs (target/vlmtest/runs/), oldest first; prune old ones.
    Runs {
        #[arg(long, value_enum, default_value = "table")]
        format: RunsFormat,
        /// Remove all runs but the newest `--keep`.
        #[arg(long, requires = "keep")]
        prune: bool,
        #[arg(long)]
        keep: Option<usize>,
    },
    /// Compare two runs (run ids, `latest`, run folders or report files), or two models run on
    /// the same cases (`--model A --model B`): metrics side by side with paired intervals and
    /// p-values, then the fixed, broken and both-failing cases.
    Compare(CompareArgs),
    /// Render saved reports (default: every target/vlmtest/report-*.json).
    Report {
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Write the artifact bundle of saved reports (default: every target/vlmtest/report-*.json):
    /// predictions.csv, metrics.json, classification_report.json, run_metadata.json, report.html.
    Export {
        paths: Vec<PathBuf>,
        /// Folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Also write artifacts.zip holding every file of the bundle.
        #[arg(long)]
        zip: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RunsFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompareFormat {
    Table,
    Json,
    Markdown,
    /// One self-contained page: metric deltas with intervals, the changed cases' answers side by
    /// side, filters for fixed and broken.
    Html,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The two sides: run ids (or unique prefixes), `latest`, run folders or report files.
    #[arg(num_args = 0..=2)]
    pub sides: Vec<String>,
    /// Instead of saved runs: run these two model specs on the same cases first (each is stored
    /// as a run), then compare them. Give it twice.
    #[arg(long = "model", num_args = 1)]
    pub models: Vec<String>,
    /// PEFT adapter for the first `--model`.
    #[arg(long)]
    pub adapter_a: Option<PathBuf>,
    /// PEFT adapter for the second `--model`.
    #[arg(long)]
    pub adapter_b: Option<PathBuf>,
    #[command(flatten)]
    pub selection: Selection,
    /// At most this many cases per suite.
    #[arg(long, value_parser = count)]
    pub max_samples: Option<usize>,
    /// The answer cache of the two `--model` runs: `use` (default), `refresh`, `off`.
    #[arg(long, value_enum)]
    pub cache: Option<crate::cache::AnswerCacheMode>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: CompareFormat,
    /// Paired bootstrap resamples.
    #[arg(long, default_value_t = crate::metric::significance::DEFAULT_BOOTSTRAP.resamples)]
    pub resamples: usize,
    #[arg(long, default_value_t = crate::metric::significance::DEFAULT_BOOTSTRAP.seed)]
    pub seed: u64,
    /// Significance level for marking a difference better or worse.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
}

/// A count flag's value: a whole number of at least 1, parsed as the environment's counts are.
fn count(text: &str) -> Result<usize, crate::config::env::ValueError> {
    crate::config::env::parse_count(text)
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
            cache,
            format,
            record,
        } => {
            let overrides = Overrides {
                model,
                adapter,
                max_samples,
                max_new_tokens,
                cache,
            };
            run(&root, &selection, &overrides, format, record)
        }
        Command::Report { paths, format } => show_reports(&root, paths, format),
        Command::Runs {
            format,
            prune,
            keep,
        } => runs(&root, format, prune.then_some(keep).flatten()),
        Command::Compare(args) => compare(&root, &args),
        Command::Export { paths, out, zip } => export(&root, paths, &out, zip),
        Command::Import(args) => match crate::task::import::run_import(&args, &root) {
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
    let session = Session::open(root, overrides).map_err(|e| {
        eprintln!("error: {:#}", anyhow::Error::new(e));
        exit::ERROR
    })?;
    for w in &session.config.warnings {
        eprintln!("warning: {w}");
    }
    Ok(session)
}

/// Prints each distinct model error of the selection once (a model that cannot be resolved or
/// loaded fails every case with the same message); true when there was any.
fn print_model_errors(cases: &[&Case], eval: &crate::session::Evaluation) -> bool {
    let errors: std::collections::BTreeSet<&str> = cases
        .iter()
        .filter_map(|c| eval.verdicts.get(&c.id.test_name()))
        .filter_map(|v| v.model_error.as_deref())
        .collect();
    const SHOWN: usize = 5;
    for e in errors.iter().take(SHOWN) {
        eprintln!("error: {e}");
    }
    if errors.len() > SHOWN {
        eprintln!("error: … and {} other model errors", errors.len() - SHOWN);
    }
    !errors.is_empty()
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
    let model_failed = print_model_errors(&cases, &eval);
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
    // Built once: a lookup per verdict, so the run stays linear in its cases.
    let ran: std::collections::HashSet<String> = cases.iter().map(|c| c.id.test_name()).collect();
    let suites_ran: std::collections::HashSet<&str> =
        cases.iter().map(|c| c.id.suite.as_str()).collect();
    for suite in &session.suites {
        if !suites_ran.contains(suite.name.as_str()) {
            continue;
        }
        let mut r = session.report(suite, &eval);
        // A filtered run reports on what it ran.
        r.verdicts.retain(|v| ran.contains(&v.name));
        if let Err(e) = report::write_json(&out_dir, &r) {
            eprintln!("warning: cannot write report: {e}");
        }
        reports.push(r);
    }
    let mut meta = html_meta(&session, &reports);
    let label = main_model_label(&session, &eval);
    meta.model = Some(label.clone());
    let adapter = session.config.model.adapter.clone();
    let page = |id: &str| {
        let mut m = meta.clone();
        m.run_id = Some(id.to_owned());
        report::html::render(&reports, &m)
    };
    let stored = run_store::save(
        &out_dir,
        &session.root,
        &label,
        adapter.as_deref(),
        &reports,
        Some(&page),
    );
    // The latest run's page, beside the latest reports: a copy of the stored run's page (rendered
    // once), else rendered here.
    let html_path = out_dir.join(run_store::PAGE_FILE);
    let written = match &stored {
        Ok(m) => std::fs::copy(
            run_store::runs_dir(&out_dir)
                .join(&m.id)
                .join(run_store::PAGE_FILE),
            &html_path,
        )
        .map(drop),
        Err(_) => std::fs::write(&html_path, report::html::render(&reports, &meta)),
    };
    if let Err(e) = written {
        eprintln!("warning: cannot write {}: {e}", html_path.display());
    }
    if let Ok(m) = &stored {
        meta.run_id = Some(m.id.clone());
    }
    render(&reports, format, &meta);
    match stored {
        Ok(m) => eprintln!(
            "run: {} ({})",
            m.id,
            run_store::runs_dir(&out_dir).join(&m.id).display()
        ),
        Err(e) => eprintln!("warning: cannot store the run: {e}"),
    }
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
    if load_failed || model_failed || eval.stats.failed > 0 {
        return exit::ERROR;
    }
    outcome_code(&reports)
}

/// The HTML page's header facts and the cases behind the reports' verdicts.
fn html_meta(session: &Session, reports: &[Report]) -> report::html::HtmlMeta {
    let git = run_store::git_commit(&session.root).map(|c| c.chars().take(12).collect());
    let mut meta = report::html::HtmlMeta {
        adapter: session
            .config
            .model
            .adapter
            .as_ref()
            .map(|a| a.display().to_string()),
        date: Some(report::html::utc_date(std::time::SystemTime::now())),
        git_commit: git,
        ..Default::default()
    }
    .with_cases(session.suites.iter().flat_map(|s| &s.cases));
    for r in reports {
        meta.known_failures.extend(
            report::snapshot::known_failures(&session.root, &r.suite, &r.model).unwrap_or_default(),
        );
    }
    meta
}

fn render(reports: &[Report], format: Format, meta: &report::html::HtmlMeta) {
    match format {
        Format::Html => print!("{}", report::html::render(reports, meta)),
        Format::Table => println!("\n{}", table::summary(reports)),
        Format::Json => {
            // Streamed: a large run's JSON is never held as one string.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if serde_json::to_writer_pretty(&mut out, reports).is_ok() {
                let _ = writeln!(out);
            }
        }
        Format::Junit => print!("{}", junit::render(reports)),
    }
}

fn show_reports(root: &std::path::Path, paths: Vec<PathBuf>, format: Format) -> u8 {
    let reports = match load_reports(root, paths) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let meta = saved_meta(root, &reports, matches!(format, Format::Html));
    render(&reports, format, &meta);
    outcome_code(&reports)
}

/// The exit code reports call for: 2 when an entry did not load or a case erred (model or
/// judge), 1 when a gate, a baseline or (without gates) a case failed, else 0.
fn outcome_code(reports: &[Report]) -> u8 {
    match report::outcome(reports) {
        report::Outcome::Error => exit::ERROR,
        report::Outcome::Failed => exit::FAILED,
        report::Outcome::Passed => exit::PASSED,
    }
}

/// The page facts of saved reports: the project's cases where it loads (a report read outside
/// its project is shown from its verdicts alone).
fn saved_meta(root: &std::path::Path, reports: &[Report], wanted: bool) -> report::html::HtmlMeta {
    if !wanted {
        return report::html::HtmlMeta::default();
    }
    match Session::open(root, &Overrides::default()) {
        Ok(session) => {
            // The run's date, adapter and commit are not in its JSON; today's would mislead.
            let mut meta = html_meta(&session, reports);
            (meta.date, meta.adapter, meta.git_commit) = (None, None, None);
            meta
        }
        Err(_) => report::html::HtmlMeta::default(),
    }
}

fn export(root: &std::path::Path, paths: Vec<PathBuf>, out: &std::path::Path, zip: bool) -> u8 {
    let reports = match load_reports(root, paths) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let meta = saved_meta(root, &reports, true);
    let opts = report::export::ExportOptions {
        zip,
        config: project_config_json(root),
    };
    match report::export::write(&reports, &meta, out, &opts) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            exit::PASSED
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

/// The project's `vlmtest.toml` as JSON, for the bundle's `run_metadata.json`: the file as it is
/// at export time (the saved reports do not keep the flags and variables of their run).
fn project_config_json(root: &std::path::Path) -> Option<serde_json::Value> {
    let file = root.join(crate::config::CONFIG_FILE);
    let text = std::fs::read_to_string(&file).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    Some(serde_json::json!({
        "file": file.display().to_string(),
        "read_at": "export",
        "content": serde_json::to_value(table).ok()?,
    }))
}

fn load_reports(root: &std::path::Path, mut paths: Vec<PathBuf>) -> Result<Vec<Report>, u8> {
    if paths.is_empty() {
        let dir = report::output_dir(root);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!(
                "error: no reports in {} (run `vlmtest run` first)",
                dir.display()
            );
            return Err(exit::ERROR);
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
                return Err(exit::ERROR);
            }
        }
    }
    Ok(reports)
}

/// The label of the model under test (`[model]` / `--model`), for the run id; the first suite's
/// model when no suite uses it.
fn main_model_label(session: &Session, eval: &crate::session::Evaluation) -> String {
    let main = session.config.model.spec.as_str();
    eval.model_labels
        .iter()
        .find(|(suite, _)| session.config.model_spec_for(suite) == main)
        .or_else(|| eval.model_labels.iter().next())
        .map(|(_, label)| label.clone())
        .unwrap_or_else(|| "unresolved".into())
}

fn runs(root: &std::path::Path, format: RunsFormat, prune: Option<usize>) -> u8 {
    let out_dir = report::output_dir(root);
    if let Some(keep) = prune {
        match run_store::prune(&out_dir, keep) {
            Ok(removed) => eprintln!("pruned {} run(s), kept the newest {keep}", removed.len()),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        }
    }
    match run_store::list(&out_dir) {
        Ok(metas) => {
            match format {
                RunsFormat::Table => print!("{}", table::grid(&run_store::table_rows(&metas))),
                RunsFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&metas).unwrap_or_default()
                ),
            }
            exit::PASSED
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

/// Runs one model over the selection and stores the run; returns its label and reports.
fn run_model(
    root: &std::path::Path,
    args: &CompareArgs,
    model: &str,
    adapter: Option<&PathBuf>,
) -> Result<(String, Vec<Report>), String> {
    let overrides = Overrides {
        model: Some(model.to_owned()),
        adapter: adapter.cloned(),
        max_samples: args.max_samples,
        max_new_tokens: None,
        cache: args.cache,
    };
    let session =
        Session::open(root, &overrides).map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
    if print_load_errors(&session) {
        return Err("some cases did not load".into());
    }
    let cases = selected(&session, &args.selection);
    if cases.is_empty() {
        return Err("no cases selected".into());
    }
    eprintln!("vlmtest: {} cases on `{model}`", cases.len());
    let eval = session.evaluate(&cases, true);
    if print_model_errors(&cases, &eval) || eval.stats.failed > 0 {
        return Err(format!(
            "model `{model}` failed to answer {} case(s)",
            eval.stats.failed
        ));
    }
    let reports: Vec<Report> = session
        .suites
        .iter()
        .filter(|s| cases.iter().any(|c| c.id.suite == s.name))
        .map(|s| session.report(s, &eval))
        .collect();
    let label = main_model_label(&session, &eval);
    let out_dir = report::output_dir(root);
    let meta = run_store::save(
        &out_dir,
        root,
        &label,
        adapter.map(PathBuf::as_path),
        &reports,
        None,
    )
    .map_err(|e| e.to_string())?;
    eprintln!("run: {}", meta.id);
    Ok((format!("run {} ({label})", meta.id), reports))
}

fn compare(root: &std::path::Path, args: &CompareArgs) -> u8 {
    let sides = match (args.sides.len(), args.models.len()) {
        (2, 0) => {
            let out_dir = report::output_dir(root);
            let a = run_store::resolve(&out_dir, &args.sides[0]);
            let b = run_store::resolve(&out_dir, &args.sides[1]);
            a.and_then(|a| b.map(|b| (a, b))).map_err(|e| e.to_string())
        }
        (0, 2) => run_model(root, args, &args.models[0], args.adapter_a.as_ref()).and_then(|a| {
            run_model(root, args, &args.models[1], args.adapter_b.as_ref()).map(|b| (a, b))
        }),
        _ => Err(
            "give two runs (`vlmtest compare A B`) or two models (`--model A --model B`)".into(),
        ),
    };
    let ((la, mut ra), (lb, mut rb)) = match sides {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    if !args.selection.suites.is_empty() {
        ra.retain(|r| args.selection.suites.contains(&r.suite));
        rb.retain(|r| args.selection.suites.contains(&r.suite));
    }
    let opts = crate::compare::Options {
        bootstrap: crate::metric::significance::Bootstrap {
            resamples: args.resamples,
            seed: args.seed,
        },
        alpha: args.alpha,
    };
    let sides = crate::compare::Sides { a: la, b: lb };
    let cmp = match crate::compare::compare(sides, &ra, &rb, opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    if cmp.suites.is_empty() {
        eprintln!("error: the two sides share no suite");
        return exit::ERROR;
    }
    match args.format {
        CompareFormat::Table => print!("{}", crate::compare::render::table(&cmp)),
        CompareFormat::Markdown => print!("{}", crate::compare::render::markdown(&cmp)),
        CompareFormat::Html => print!("{}", crate::compare::html::render(&cmp)),
        CompareFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&cmp).unwrap_or_default())
        }
    }
    exit::PASSED
}
