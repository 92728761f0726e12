//! `vlmtest serve`: an OpenAI-compatible chat server over a local model.
//!
//! It is the default local judge (its `response_format` support turns even SmolLM2-135M into a
//! judge that always answers parseable JSON) and puts the model under test behind the same
//! protocol the `openai:` model spec speaks.

pub mod api;
pub mod engine;
pub mod http;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::model::adapted_gguf::{AdaptedGguf, LlamaSession};
use crate::model::decode::Decoder;
use crate::model::gguf::GgufModel;
use crate::model::qwen3_vl::Qwen3VlModel;
use crate::model::spec::{default_device, ModelSpec};
use crate::model::ModelError;

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to load the model: {0}")]
    Model(#[from] ModelError),
    #[error("`vlmtest serve` serves a local model (a .gguf file, `smollm2` or a Qwen3-VL checkpoint folder), not {0}")]
    NotLocal(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// `vlmtest serve` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The model to serve: a .gguf file, `smollm2` for the default model (fetched on first use),
    /// or a Qwen3-VL checkpoint folder.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// A PEFT-format LoRA adapter folder to apply (merged at load; GGUF models run in f32 then).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Address to listen on. Keep the loopback default unless the network is trusted: there is no
    /// authentication.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The model id clients send and `/v1/models` lists (default: `smollm2` or the file stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Upper bound (and default) of `max_tokens` per request.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
}

/// Resolves `--model` to a GGUF file with the CLI's spec rules (`smollm2` is the default model,
/// fetched if needed; relative paths from the working directory).
pub fn resolve_model(spec: &str) -> Result<PathBuf, ModelError> {
    match ModelSpec::parse(spec, Path::new("."))? {
        ModelSpec::Gguf(path) => Ok(path),
        other => Err(ModelError::Other(format!(
            "`vlmtest serve` serves a local GGUF model, not {other:?}"
        ))),
    }
}

/// Loads the model `--model` (+ `--adapter`) names as a `Decoder` for the server: a GGUF
/// (quantized, as `vlmtest run` answers with it), a GGUF with a PEFT adapter (merged, f32), or a
/// Qwen3-VL checkpoint folder (images accepted), with or without an adapter.
pub fn load_decoder(
    spec: &str,
    adapter: Option<&Path>,
) -> Result<(Box<dyn Decoder>, PathBuf), ServeError> {
    let parsed =
        ModelSpec::parse(spec, Path::new("."))?.with_adapter(adapter.map(Path::to_path_buf))?;
    Ok(match parsed {
        ModelSpec::Gguf(path) => (Box::new(GgufModel::load(&path)?), path),
        ModelSpec::GgufAdapter { gguf, adapter } => (
            Box::new(LlamaSession::new(AdaptedGguf::load_described(
                &gguf, &adapter,
            )?)),
            gguf,
        ),
        ModelSpec::Checkpoint { dir, adapter } => (
            Box::new(Qwen3VlModel::load(
                &dir,
                adapter.as_deref(),
                &default_device(),
            )?),
            dir,
        ),
        other @ (ModelSpec::Replay(_) | ModelSpec::OpenAi(_)) => {
            return Err(ServeError::NotLocal(format!("{other:?}")))
        }
    })
}

/// Loads the model and serves until the process ends.
pub fn run_serve(args: &ServeArgs) -> Result<(), ServeError> {
    let (model, path) = load_decoder(&args.model, args.adapter.as_deref())?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.model, &path));
    let config = http::ServerConfig {
        name,
        max_tokens_cap: args.max_tokens,
    };
    let addr = SocketAddr::new(args.host, args.port);
    http::serve_blocking(model, &config, addr).map_err(|source| ServeError::Bind { addr, source })
}

fn default_name(spec: &str, path: &Path) -> String {
    if spec == "smollm2" || spec.is_empty() {
        return "smollm2".into();
    }
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_owned()
}
