//! `vlmtest labels …`: the flags of each step and their resolution into the steps' options.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};

use super::annotate::{annotate, AnnotateOptions};
use super::convert::{convert, ConvertOptions};
use super::eval::evaluate;
use super::id::IdHash;
use super::mapping::{Mapping, DEFAULT_MAPPING};
use super::sample::{sample, SampleOptions, Stratify};
use super::schema::{default_schema, Schema, DEFAULT_PROMPT};
use super::walk::DEFAULT_EXTENSIONS;
use super::LabelsError;

/// `vlmtest labels`.
#[derive(Debug, clap::Args)]
pub struct LabelsArgs {
    #[command(subcommand)]
    pub command: LabelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Annotate every image under a folder with an OpenAI-compatible vision model, one JSON line
    /// per image (resumable).
    Annotate(AnnotateArgs),
    /// Turn annotation lines into label ground truth through a mapping file.
    Convert(ConvertArgs),
    /// Draw a seeded subset of a ground truth for human review.
    Sample(SampleArgs),
    /// Score a prediction file against a ground truth, joined by image_id.
    Eval(EvalArgs),
    /// Print the default mapping file (seed 004's), to edit and pass to `convert --mapping`.
    Mapping,
}

#[derive(Debug, clap::Args)]
pub struct AnnotateArgs {
    /// The photo folder, walked recursively (links are followed only inside it).
    #[arg(long)]
    pub root: PathBuf,
    /// The JSONL file lines are appended to.
    #[arg(long)]
    pub output: PathBuf,
    /// `openai:<base-url>#<model-name>`; the API key comes from VLMTEST_MODEL_API_KEY.
    #[arg(long)]
    pub model: String,
    /// Only the first N images of the walk (a dry run).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Continue an existing output: skip every image already there.
    #[arg(long)]
    pub resume: bool,
    /// Images in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// A text file replacing the default prompt (sent after the image).
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// A JSON schema file replacing the default schema (sent as response_format, checked here).
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// The content id's hash over the file's bytes.
    #[arg(long, value_enum, default_value_t = IdHash::Md5)]
    pub id_hash: IdHash,
    /// Image extensions, comma-separated, case-insensitive.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_EXTENSIONS.map(String::from))]
    pub extensions: Vec<String>,
    /// Files over this many bytes get an error line instead of a request.
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    pub max_bytes: u64,
    /// `max_tokens` of each request.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Retries of a request after a connect error, timeout, 429 or 5xx.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// First backoff delay, seconds, doubled per retry (a 429's Retry-After wins).
    #[arg(long, default_value_t = 0.5)]
    pub backoff: f64,
}

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Annotation lines (`labels annotate`'s output, or the seed's own).
    #[arg(long)]
    pub input: PathBuf,
    /// The ground-truth JSONL to write.
    #[arg(long)]
    pub output: PathBuf,
    /// A mapping file (default: the seed's, see `vlmtest labels mapping`).
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Objects under this confidence are left out.
    #[arg(long, default_value_t = 0.7)]
    pub min_object_confidence: f64,
    /// Keep objects that are not the main subject.
    #[arg(long)]
    pub include_non_main: bool,
}

#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// A ground truth (JSONL or a JSON list).
    #[arg(long)]
    pub input: PathBuf,
    /// The pretty-printed JSON list to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Records to draw (at most all of them).
    #[arg(long, default_value_t = 1000)]
    pub size: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Draw from each stratum in proportion.
    #[arg(long, value_enum)]
    pub stratify: Option<Stratify>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EvalFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The ground truth (JSONL or a JSON list).
    #[arg(long)]
    pub gt: PathBuf,
    /// The predictions, in the same format (objects ranked best first).
    #[arg(long)]
    pub pred: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    pub format: EvalFormat,
}

fn seconds(flag: &str, s: f64) -> Result<Duration, LabelsError> {
    if s.is_finite() && s > 0.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(LabelsError::Option(format!(
            "{flag} {s} is not a positive number of seconds"
        )))
    }
}

impl AnnotateArgs {
    /// Reads the prompt and schema files and checks the numbers.
    pub fn options(&self) -> Result<AnnotateOptions, LabelsError> {
        let prompt = match &self.prompt {
            Some(p) => std::fs::read_to_string(p).map_err(|e| LabelsError::read(p, e))?,
            None => DEFAULT_PROMPT.to_owned(),
        };
        let schema = match &self.schema {
            Some(p) => Schema::read(p)?,
            None => Schema::new(default_schema()).map_err(LabelsError::Option)?,
        };
        Ok(AnnotateOptions {
            root: self.root.clone(),
            output: self.output.clone(),
            model: self.model.clone(),
            limit: self.limit,
            resume: self.resume,
            concurrency: self.concurrency,
            prompt,
            schema,
            id_hash: self.id_hash,
            extensions: self.extensions.clone(),
            max_bytes: self.max_bytes,
            max_tokens: self.max_tokens,
            timeout: seconds("--timeout", self.timeout)?,
            retries: self.retries,
            backoff: seconds("--backoff", self.backoff)?,
            progress: std::io::stderr().is_terminal(),
        })
    }
}

/// Runs one `vlmtest labels` command: the reports go to stderr (stdout for `eval` and
/// `mapping`). Returns the exit code: 0 done, 2 could not finish.
pub fn run(args: &LabelsArgs) -> Result<u8, LabelsError> {
    match &args.command {
        LabelsCommand::Annotate(a) => {
            let summary = annotate(&a.options()?)?;
            eprint!("{}", summary.render());
            Ok(if summary.complete() { 0 } else { 2 })
        }
        LabelsCommand::Convert(c) => {
            let mapping = match &c.mapping {
                Some(p) => Mapping::read(p)?,
                None => Mapping::seed(),
            };
            let report = convert(&ConvertOptions {
                input: c.input.clone(),
                output: c.output.clone(),
                mapping,
                min_object_confidence: c.min_object_confidence,
                include_non_main: c.include_non_main,
            })?;
            eprint!("{}", report.render());
            eprintln!("wrote {}", c.output.display());
            Ok(0)
        }
        LabelsCommand::Sample(s) => {
            let report = sample(&SampleOptions {
                input: s.input.clone(),
                output: s.output.clone(),
                size: s.size,
                seed: s.seed,
                stratify: s.stratify,
            })?;
            eprint!("{}", report.render(&s.output));
            Ok(0)
        }
        LabelsCommand::Eval(e) => {
            let report = evaluate(&e.gt, &e.pred)?;
            match e.format {
                EvalFormat::Table => print!("{}", report.render()),
                EvalFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
            }
            Ok(if report.metrics.is_some() { 0 } else { 2 })
        }
        LabelsCommand::Mapping => {
            print!("{DEFAULT_MAPPING}");
            Ok(0)
        }
    }
}
