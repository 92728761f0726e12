//! `vlmtest labels annotate`: one JSON annotation per image of a folder, from any
//! OpenAI-compatible vision endpoint, appended to a JSONL file the moment it exists.
//!
//! Each image's bytes are read once: hashed for its content id, sniffed for its real format and
//! sent unchanged as a `data:` URI with the JSON-only prompt and the schema as `response_format`.
//! The reply is validated against the schema with one repair round, then becomes an
//! `annotation` line or an `invalid_reply` error line. Files that cannot be annotated at all
//! (unreadable, empty, too large, not an image whatever the extension) get an error line without
//! a request.
//!
//! Resuming is by content id: `--resume` reads the output, cuts off a torn last line (a run killed
//! mid-write), and skips every id (and every id-less error line's path) already there, so each
//! image has exactly one line however often the run is killed. A request that fails on the
//! endpoint itself (connection refused, 5xx or timeouts past the retries) writes no line, so
//! the next `--resume` retries it; when that happens to many requests in a row the endpoint is
//! taken to be down and the run stops. Requests reuse the judge's HTTP client (timeouts, retries
//! with backoff and `Retry-After`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::id::IdHash;
use super::jsonl::{self, Torn};
use super::record::{parse_line, timestamp_now, ErrorKind, RawRecord};
use super::schema::{prompt_hash, Schema, SYSTEM};
use super::walk::{walk, ImageFile, Skipped};
use super::LabelsError;
use crate::judge::client::{CallError, Client, Counters};
use crate::judge::prompt::repair;
use crate::judge::settings::JudgeSettings;
use crate::model::openai::{bytes_data_uri, parse_spec, API_KEY_ENV};

/// The longest unusable reply kept on an `invalid_reply` line.
const MAX_REPLY_CHARS: usize = 2000;

/// What to annotate and how.
#[derive(Debug, Clone)]
pub struct AnnotateOptions {
    pub root: PathBuf,
    pub output: PathBuf,
    /// `openai:<base-url>#<model-name>`.
    pub model: String,
    /// Only the first N images of the walk.
    pub limit: Option<usize>,
    pub resume: bool,
    /// Images in flight at once (reading, hashing and the request).
    pub concurrency: usize,
    pub prompt: String,
    pub schema: Schema,
    pub id_hash: IdHash,
    /// Image extensions, lowercase, without the dot.
    pub extensions: Vec<String>,
    /// Files larger than this get a `too_large` line.
    pub max_bytes: u64,
    pub max_tokens: u32,
    pub timeout: Duration,
    /// Retries of one request (connect errors, timeouts, 429, 5xx).
    pub retries: u32,
    /// First backoff delay, doubled per retry (a 429's `Retry-After` wins).
    pub backoff: Duration,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Images the walk found (after `--limit`).
    pub images: usize,
    /// Annotation lines written by this run.
    pub annotated: usize,
    /// Error lines written by this run, by kind.
    pub errors: BTreeMap<String, usize>,
    /// Images whose id was in the output already.
    pub already_done: usize,
    /// Files with the same bytes as an earlier file of this run: (file, first file).
    pub duplicates: Vec<(String, String)>,
    /// Images the endpoint failed on (no line written; `--resume` retries them).
    pub endpoint_failures: Vec<(String, String)>,
    /// Images not started because the run stopped early.
    pub not_started: usize,
    /// Files the walk skipped.
    pub skipped_files: Vec<Skipped>,
    /// The torn last line cut off before resuming.
    pub torn: Option<Torn>,
    /// Lines already in the output that another model or prompt wrote.
    pub foreign_lines: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub http_calls: u64,
    pub retries: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn error_lines(&self) -> usize {
        self.errors.values().sum()
    }

    /// Whether every image has its line now.
    pub fn complete(&self) -> bool {
        self.endpoint_failures.is_empty() && self.not_started == 0
    }

    /// The human summary, several lines.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            (self.annotated + self.error_lines()) as f64 / secs
        } else {
            0.0
        };
        s.push_str(&format!(
            "annotate: {} images: {} annotated, {} error lines, {} already done, {} duplicates, {} endpoint failures, {} not started ({:.1} s, {:.2} images/s)\n",
            self.images,
            self.annotated,
            self.error_lines(),
            self.already_done,
            self.duplicates.len(),
            self.endpoint_failures.len(),
            self.not_started,
            secs,
            rate,
        ));
        s.push_str(&format!(
            "tokens: {} prompt, {} completion over {} HTTP calls ({} retries)\n",
            self.prompt_tokens, self.completion_tokens, self.http_calls, self.retries
        ));
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            s.push_str(&format!("error lines: {}\n", kinds.join(", ")));
        }
        if let Some(t) = self.torn {
            s.push_str(&format!(
                "cut off a torn last line (line {}, {} bytes) before resuming; its image was redone\n",
                t.line, t.len
            ));
        }
        if self.foreign_lines > 0 {
            s.push_str(&format!(
                "note: {} lines already in the output were written with another model or prompt\n",
                self.foreign_lines
            ));
        }
        const SHOWN: usize = 20;
        if !self.skipped_files.is_empty() {
            s.push_str(&format!("skipped {} files:\n", self.skipped_files.len()));
            for f in self.skipped_files.iter().take(SHOWN) {
                s.push_str(&format!("  {}: {}\n", f.rel_path, f.reason));
            }
            if self.skipped_files.len() > SHOWN {
                s.push_str(&format!(
                    "  … and {} more\n",
                    self.skipped_files.len() - SHOWN
                ));
            }
        }
        for (f, first) in self.duplicates.iter().take(SHOWN) {
            s.push_str(&format!("duplicate: {f} has the bytes of {first}\n"));
        }
        for (f, why) in self.endpoint_failures.iter().take(SHOWN) {
            s.push_str(&format!("endpoint failure: {f}: {why}\n"));
        }
        if !self.complete() {
            s.push_str("some images have no line yet: rerun with --resume\n");
        }
        s
    }
}

/// What happened to one image.
enum Outcome {
    Line(Box<RawRecord>),
    AlreadyDone,
    Duplicate {
        rel: String,
        first: String,
    },
    EndpointFailed {
        rel: String,
        message: String,
    },
    /// Every further request would fail the same way (bad key, wrong URL or model).
    Fatal(String),
}

/// The output file, locked for this process, positioned at its end.
struct Output {
    file: File,
    path: PathBuf,
    written: usize,
}

impl Output {
    fn append(&mut self, rec: &RawRecord) -> Result<(), LabelsError> {
        let mut line = serde_json::to_vec(rec)
            .map_err(|e| LabelsError::write(&self.path, std::io::Error::other(e)))?;
        line.push(b'\n');
        // One write per line: a kill can tear only the line being written.
        self.file
            .write_all(&line)
            .map_err(|e| LabelsError::write(&self.path, e))?;
        self.written += 1;
        Ok(())
    }
}

/// What the output already holds.
#[derive(Default)]
struct Existing {
    /// id → the file its line names.
    ids: HashMap<String, String>,
    /// Paths of id-less error lines (unreadable files).
    rel_paths: HashSet<String>,
    lines: usize,
    foreign: usize,
    torn: Option<Torn>,
}

fn lock(file: &File, path: &Path) -> Result<(), LabelsError> {
    // SAFETY: flock on a file descriptor this `File` owns for the call's duration.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(LabelsError::Locked {
            path: path.to_owned(),
        })
    }
}

/// Opens (and locks) the output; with `resume`, reads what is there and cuts off a torn tail.
fn open_output(
    o: &AnnotateOptions,
    model: &str,
    hash: &str,
) -> Result<(Output, Existing), LabelsError> {
    let path = &o.output;
    let exists_nonempty = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    if exists_nonempty && !o.resume {
        return Err(LabelsError::OutputExists { path: path.clone() });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| LabelsError::write(dir, e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| LabelsError::write(path, e))?;
    lock(&file, path)?;
    let mut existing = Existing::default();
    if exists_nonempty {
        let bytes = std::fs::read(path).map_err(|e| LabelsError::read(path, e))?;
        let parsed = jsonl::parse(&bytes);
        if let Some((line, why)) = parsed.bad.first() {
            return Err(LabelsError::Line {
                path: path.clone(),
                line: *line,
                message: format!(
                    "not JSON ({why}); only the last line can be torn by a killed run, so this \
                     one was edited: fix or remove it, then resume"
                ),
            });
        }
        for l in &parsed.lines {
            let raw = parse_line(path, l.line, &l.value)?;
            match &raw.image_id {
                Some(id) => {
                    existing
                        .ids
                        .insert(id.clone(), raw.rel_path.clone().unwrap_or_default());
                }
                None => {
                    existing
                        .rel_paths
                        .insert(raw.rel_path.clone().unwrap_or_default());
                }
            }
            if raw.model.as_deref() != Some(model) || raw.prompt_hash.as_deref() != Some(hash) {
                existing.foreign += 1;
            }
        }
        existing.lines = parsed.lines.len();
        if let Some(t) = parsed.torn {
            file.set_len(t.offset)
                .map_err(|e| LabelsError::write(path, e))?;
            existing.torn = Some(t);
        }
    }
    Ok((
        Output {
            file,
            path: path.clone(),
            written: 0,
        },
        existing,
    ))
}

/// Everything a task needs, shared.
struct Shared {
    client: Client,
    model: String,
    prompt: String,
    schema: Schema,
    hash: String,
    id_hash: IdHash,
    max_bytes: u64,
    max_tokens: u32,
    done_ids: HashMap<String, String>,
    done_rels: HashSet<String>,
    /// id → the first file of this run with it.
    seen: Mutex<HashMap<String, String>>,
}

impl Shared {
    fn record(&self, img: &ImageFile, id: Option<String>) -> RawRecord {
        RawRecord {
            image_id: id,
            image_path: img.path.to_string_lossy().into_owned(),
            rel_path: img.rel_path.clone(),
            annotation: None,
            error: None,
            error_kind: None,
            reply: None,
            model: self.model.clone(),
            prompt_hash: self.hash.clone(),
            timestamp: timestamp_now(),
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }

    fn error_line(
        &self,
        img: &ImageFile,
        id: Option<String>,
        kind: ErrorKind,
        msg: String,
    ) -> Outcome {
        let mut r = self.record(img, id);
        r.error = Some(msg);
        r.error_kind = Some(kind);
        Outcome::Line(Box::new(r))
    }

    fn body(&self, messages: &[Value]) -> Value {
        json!({
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "image_annotation", "strict": true, "schema": self.schema.value()}},
        })
    }
}

/// The MIME type of encoded image bytes, by their magic numbers.
pub fn sniff_mime(bytes: &[u8]) -> Result<&'static str, String> {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => Ok("image/jpeg"),
        Ok(image::ImageFormat::Png) => Ok("image/png"),
        Ok(image::ImageFormat::WebP) => Ok("image/webp"),
        Ok(image::ImageFormat::Gif) => Ok("image/gif"),
        Ok(other) => Err(format!(
            "the content is {other:?}, not JPEG, PNG, WebP or GIF"
        )),
        Err(_) => Err("the content is not a recognised image format".into()),
    }
}

/// Reads, hashes and encodes one file (blocking).
fn prepare(img: &ImageFile, sh: &Shared) -> Result<(String, String), Outcome> {
    let unreadable = |e: std::io::Error| {
        if sh.done_rels.contains(&img.rel_path) {
            Outcome::AlreadyDone
        } else {
            sh.error_line(
                img,
                None,
                ErrorKind::Unreadable,
                format!("cannot read the file: {e}"),
            )
        }
    };
    let size = std::fs::metadata(&img.path).map_err(unreadable)?.len();
    // A file too large to send is hashed as a stream, never held in memory.
    let bytes = if size > sh.max_bytes {
        None
    } else {
        Some(std::fs::read(&img.path).map_err(unreadable)?)
    };
    let id = match &bytes {
        Some(b) => sh.id_hash.id(b),
        None => File::open(&img.path)
            .and_then(|f| sh.id_hash.id_reader(f))
            .map_err(unreadable)?,
    };
    if let Some(done) = sh.done_ids.get(&id) {
        // Another file with these bytes has the line: a duplicate, not this file's line.
        if done != &img.rel_path {
            return Err(Outcome::Duplicate {
                rel: img.rel_path.clone(),
                first: done.clone(),
            });
        }
        return Err(Outcome::AlreadyDone);
    }
    if let Ok(mut seen) = sh.seen.lock() {
        if let Some(first) = seen.get(&id) {
            return Err(Outcome::Duplicate {
                rel: img.rel_path.clone(),
                first: first.clone(),
            });
        }
        seen.insert(id.clone(), img.rel_path.clone());
    }
    let Some(bytes) = bytes else {
        return Err(sh.error_line(
            img,
            Some(id),
            ErrorKind::TooLarge,
            format!("{size} bytes, over --max-bytes {}", sh.max_bytes),
        ));
    };
    if bytes.is_empty() {
        return Err(sh.error_line(img, Some(id), ErrorKind::Empty, "a zero-byte file".into()));
    }
    let mime = match sniff_mime(&bytes) {
        Ok(m) => m,
        Err(why) => return Err(sh.error_line(img, Some(id), ErrorKind::NotAnImage, why)),
    };
    Ok((id, bytes_data_uri(mime, &bytes)))
}

/// The reply's content as a schema-valid JSON value, or why not.
fn check_reply(v: &Value, schema: &Schema) -> Result<Value, (String, String)> {
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            (
                String::new(),
                "the reply has no choices[0].message.content".to_owned(),
            )
        })?;
    let parsed: Value = serde_json::from_str(content.trim())
        .map_err(|e| (content.to_owned(), format!("the reply is not JSON ({e})")))?;
    schema
        .validate(&parsed)
        .map_err(|e| (content.to_owned(), e))?;
    Ok(parsed)
}

fn usage(v: &Value) -> (u64, u64) {
    let n = |k: &str| {
        v.pointer(&format!("/usage/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    (n("prompt_tokens"), n("completion_tokens"))
}

/// What an HTTP failure means for this image.
fn classify(img: &ImageFile, id: &str, e: CallError, sh: &Shared) -> Outcome {
    match &e {
        CallError::Status { status, .. } if [400, 413, 422].contains(status) => sh.error_line(
            img,
            Some(id.to_owned()),
            ErrorKind::Rejected,
            format!("the endpoint refused the request: {e}"),
        ),
        CallError::Status { status, .. } if [401, 403, 404].contains(status) => Outcome::Fatal(
            format!("the endpoint answered {e} (check the URL, model name and {API_KEY_ENV})"),
        ),
        _ => Outcome::EndpointFailed {
            rel: img.rel_path.clone(),
            message: e.to_string(),
        },
    }
}

async fn annotate_one(img: ImageFile, sh: Arc<Shared>) -> Outcome {
    let prepared = {
        let (img, sh) = (img.clone(), sh.clone());
        tokio::task::spawn_blocking(move || prepare(&img, &sh)).await
    };
    let (id, uri) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(outcome)) => return outcome,
        Err(e) => {
            return Outcome::EndpointFailed {
                rel: img.rel_path.clone(),
                message: format!("reading task failed: {e}"),
            }
        }
    };
    let messages = vec![
        json!({"role": "system", "content": SYSTEM}),
        json!({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": uri}},
            {"type": "text", "text": sh.prompt},
        ]}),
    ];
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    let first = match sh.client.chat(&sh.body(&messages)).await {
        Ok(v) => v,
        Err(e) => return classify(&img, &id, e, &sh),
    };
    let (p, c) = usage(&first);
    prompt_tokens += p;
    completion_tokens += c;
    let result = match check_reply(&first, &sh.schema) {
        Ok(a) => Ok(a),
        Err((reply, why)) => {
            let again = repair(messages, &reply, &why);
            match sh.client.chat(&sh.body(&again)).await {
                Ok(v) => {
                    let (p, c) = usage(&v);
                    prompt_tokens += p;
                    completion_tokens += c;
                    check_reply(&v, &sh.schema)
                        .map_err(|(r, w)| (r, format!("{w} (first reply: {why})")))
                }
                Err(e) => return classify(&img, &id, e, &sh),
            }
        }
    };
    let mut rec = sh.record(&img, Some(id));
    rec.prompt_tokens = prompt_tokens;
    rec.completion_tokens = completion_tokens;
    match result {
        Ok(a) => rec.annotation = Some(a),
        Err((reply, why)) => {
            rec.error = Some(format!("invalid reply after the repair round: {why}"));
            rec.error_kind = Some(ErrorKind::InvalidReply);
            rec.reply = Some(reply.chars().take(MAX_REPLY_CHARS).collect());
        }
    }
    Outcome::Line(Box::new(rec))
}

fn error_kind_name(k: ErrorKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Runs the annotation; `Err` only for what stops the whole run.
pub fn annotate(o: &AnnotateOptions) -> Result<Summary, LabelsError> {
    let start = Instant::now();
    let (url, model) = parse_spec(&o.model).map_err(|e| LabelsError::Spec(e.to_string()))?;
    if o.concurrency == 0 {
        return Err(LabelsError::Option(
            "--concurrency must be at least 1".into(),
        ));
    }
    let hash = prompt_hash(SYSTEM, &o.prompt, &o.schema);
    let walked = walk(&o.root, &o.extensions)?;
    let mut images = walked.images;
    if let Some(n) = o.limit {
        images.truncate(n);
    }
    let (mut out, existing) = open_output(o, &model, &hash)?;
    let settings = JudgeSettings {
        url,
        model: model.clone(),
        api_key_env: Some(API_KEY_ENV.into()),
        concurrency: o.concurrency,
        timeout_s: o.timeout.as_secs_f64(),
        max_retries: o.retries,
        backoff_s: o.backoff.as_secs_f64(),
        ..JudgeSettings::default()
    };
    settings
        .validate()
        .map_err(|e| LabelsError::Spec(e.to_string()))?;
    let counters = Arc::new(Counters::default());
    let client =
        Client::new(&settings, counters.clone()).map_err(|e| LabelsError::Spec(e.to_string()))?;
    let shared = Arc::new(Shared {
        client,
        model,
        prompt: o.prompt.clone(),
        schema: o.schema.clone(),
        hash,
        id_hash: o.id_hash,
        max_bytes: o.max_bytes,
        max_tokens: o.max_tokens,
        done_ids: existing.ids,
        done_rels: existing.rel_paths,
        seen: Mutex::new(HashMap::new()),
    });
    let mut summary = Summary {
        images: images.len(),
        skipped_files: walked.skipped,
        torn: existing.torn,
        foreign_lines: existing.foreign,
        ..Summary::default()
    };
    let bar = if o.progress {
        ProgressBar::new(images.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images [{elapsed_precise}<{eta_precise}] {per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LabelsError::Spec(format!("cannot start the runtime: {e}")))?;
    // Requests in a row that failed on the endpoint; this many means it is down.
    let down_after = (2 * o.concurrency).max(8);
    let in_a_row = AtomicUsize::new(0);
    let result: Result<(), LabelsError> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let mut queue = images.into_iter();
        let mut stop: Option<LabelsError> = None;
        loop {
            while stop.is_none() && tasks.len() < o.concurrency {
                let Some(img) = queue.next() else { break };
                tasks.spawn(annotate_one(img, shared.clone()));
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            bar.inc(1);
            let outcome = match joined {
                Ok(x) => x,
                Err(e) if e.is_cancelled() => {
                    summary.not_started += 1;
                    continue;
                }
                Err(e) => Outcome::EndpointFailed {
                    rel: String::new(),
                    message: format!("task failed: {e}"),
                },
            };
            match outcome {
                Outcome::Line(rec) => {
                    in_a_row.store(0, Ordering::Relaxed);
                    match &rec.error_kind {
                        Some(k) => *summary.errors.entry(error_kind_name(*k)).or_insert(0) += 1,
                        None => summary.annotated += 1,
                    }
                    out.append(&rec)?;
                }
                Outcome::AlreadyDone => summary.already_done += 1,
                Outcome::Duplicate { rel, first } => summary.duplicates.push((rel, first)),
                Outcome::EndpointFailed { rel, message } => {
                    let n = in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                    bar.set_message(format!("endpoint failures: {n} in a row"));
                    if n >= down_after && stop.is_none() {
                        stop = Some(LabelsError::EndpointDown {
                            failures: n,
                            last: message.clone(),
                            written: existing.lines + out.written,
                            path: out.path.clone(),
                        });
                        tasks.abort_all();
                    }
                    summary.endpoint_failures.push((rel, message));
                }
                Outcome::Fatal(m) => {
                    if stop.is_none() {
                        stop = Some(LabelsError::Spec(m));
                        tasks.abort_all();
                    }
                }
            }
        }
        summary.not_started += queue.count();
        match stop {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    bar.finish_and_clear();
    summary.prompt_tokens = counters.prompt_tokens.load(Ordering::Relaxed);
    summary.completion_tokens = counters.completion_tokens.load(Ordering::Relaxed);
    summary.http_calls = counters.http_calls.load(Ordering::Relaxed);
    summary.retries = counters.retries.load(Ordering::Relaxed);
    summary.elapsed = start.elapsed();
    match result {
        Ok(()) => Ok(summary),
        Err(e) => {
            eprint!("{}", summary.render());
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::schema::default_schema;

    fn shared(done_rels: &[&str]) -> Shared {
        Shared {
            client: Client::new(&JudgeSettings::default(), Arc::new(Counters::default())).unwrap(),
            model: "m".into(),
            prompt: String::new(),
            schema: Schema::new(default_schema()).unwrap(),
            hash: "h".into(),
            id_hash: IdHash::Md5,
            max_bytes: 1 << 20,
            max_tokens: 16,
            done_ids: HashMap::new(),
            done_rels: done_rels.iter().map(|s| s.to_string()).collect(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn a_file_that_cannot_be_read_gets_one_unreadable_line() {
        let dir = tempfile::tempdir().unwrap();
        // Gone between the walk and the read: what an unreadable file looks like to a root user.
        let img = ImageFile {
            path: dir.path().join("gone.jpg"),
            rel_path: "gone.jpg".into(),
        };
        match prepare(&img, &shared(&[])) {
            Err(Outcome::Line(r)) => {
                assert_eq!(
                    (r.error_kind, r.image_id.as_deref()),
                    (Some(ErrorKind::Unreadable), None)
                );
                assert!(r.error.unwrap().starts_with("cannot read the file"));
            }
            _ => panic!("expected an unreadable line"),
        }
        assert!(matches!(
            prepare(&img, &shared(&["gone.jpg"])),
            Err(Outcome::AlreadyDone)
        ));
    }

    #[test]
    fn formats_are_sniffed_from_the_bytes() {
        assert_eq!(sniff_mime(b"\x89PNG\r\n\x1a\n rest"), Ok("image/png"));
        assert_eq!(sniff_mime(b"\xff\xd8\xff\xe0 rest"), Ok("image/jpeg"));
        assert!(sniff_mime(b"hello, I am text").is_err());
        assert!(sniff_mime(b"").is_err());
    }

    #[test]
    fn replies_are_checked_against_the_schema() {
        let schema = Schema::new(default_schema()).unwrap();
        let reply = |content: &str| json!({"choices": [{"message": {"content": content}}]});
        let ok = r#"{"scene": "food", "has_person": false, "is_document": false, "is_screenshot": false, "objects": []}"#;
        assert!(check_reply(&reply(ok), &schema).is_ok());
        let (_, why) = check_reply(&reply("A photo of food."), &schema).unwrap_err();
        assert!(why.starts_with("the reply is not JSON"), "{why}");
        let (raw, why) = check_reply(&reply(r#"{"scene": "food"}"#), &schema).unwrap_err();
        assert_eq!(
            (raw.as_str(), why.as_str()),
            (
                r#"{"scene": "food"}"#,
                "the reply: missing field `has_person`"
            )
        );
        assert!(check_reply(&json!({"choices": []}), &schema).is_err());
    }
}
