//! A `Model` served by any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp's server,
//! Ollama, `vlmtest serve`): spec `openai:<base-url>#<model-name>`.
//!
//! Images travel as `data:` URIs (files are read and base64-encoded here), so the server needs no
//! access to the suite's files. Requests of a batch run concurrently, with the judge client's
//! timeout and retry policy; the API key comes from `VLMTEST_MODEL_API_KEY` when set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::{Answer, GenerationOptions, Model, ModelError, Request};
use crate::case::{ImageSource, Message, Part};
use crate::judge::client::{Client, Counters};
use crate::judge::settings::JudgeSettings;

/// The environment variable holding the model endpoint's API key.
pub const API_KEY_ENV: &str = "VLMTEST_MODEL_API_KEY";

/// A model behind an OpenAI-compatible endpoint.
pub struct OpenAiModel {
    base_url: String,
    model: String,
    client: Client,
    concurrency: usize,
    runtime: tokio::runtime::Runtime,
}

impl OpenAiModel {
    /// Parses `openai:<base-url>#<model-name>`, e.g. `openai:http://127.0.0.1:8080/v1#smollm2`.
    pub fn from_spec(spec: &str) -> Result<Self, ModelError> {
        let (url, model) = parse_spec(spec)?;
        Self::new(&url, &model, 8, Duration::from_secs(300))
    }

    /// The answer-cache fingerprint of a spec, without building a client: `openai:<url>#<model>`
    /// with the URL's trailing slashes removed.
    pub fn spec_fingerprint(spec: &str) -> Result<String, ModelError> {
        let (url, model) = parse_spec(spec)?;
        Ok(format!("openai:{url}#{model}"))
    }

    /// A client for `base_url` (up to `/v1`) and `model`, with `concurrency` requests in flight.
    pub fn new(
        base_url: &str,
        model: &str,
        concurrency: usize,
        timeout: Duration,
    ) -> Result<Self, ModelError> {
        let settings = JudgeSettings {
            url: base_url.trim_end_matches('/').to_owned(),
            model: model.to_owned(),
            api_key_env: Some(API_KEY_ENV.into()),
            concurrency: concurrency.max(1),
            timeout_s: timeout.as_secs_f64(),
            ..JudgeSettings::default()
        };
        settings
            .validate()
            .map_err(|e| ModelError::Other(format!("model spec: {e}")))?;
        let client = Client::new(&settings, Arc::new(Counters::default()))
            .map_err(|e| ModelError::Other(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ModelError::Other(e.to_string()))?;
        Ok(Self {
            base_url: settings.url,
            model: model.to_owned(),
            client,
            concurrency: settings.concurrency,
            runtime,
        })
    }

    /// The request body for one conversation.
    pub fn body(
        &self,
        messages: &[Message],
        options: &GenerationOptions,
    ) -> Result<Value, ModelError> {
        let msgs = messages
            .iter()
            .map(wire_message)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(
            json!({"model": self.model, "messages": msgs, "temperature": 0, "max_tokens": options.max_new_tokens}),
        )
    }
}

/// Splits `openai:<base-url>#<model-name>` into (base URL without trailing `/`, model name).
pub fn parse_spec(spec: &str) -> Result<(String, String), ModelError> {
    let rest = spec
        .trim()
        .strip_prefix("openai:")
        .ok_or_else(|| ModelError::UnknownSpec(spec.to_owned()))?;
    let bad = || {
        ModelError::Other(format!(
            "model spec `{spec}`: expected `openai:<base-url>#<model-name>`, e.g. `openai:http://127.0.0.1:8080/v1#smollm2`"
        ))
    };
    let (url, model) = rest.rsplit_once('#').ok_or_else(bad)?;
    let url = url.trim_end_matches('/');
    if model.trim().is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad());
    }
    Ok((url.to_owned(), model.trim().to_owned()))
}

fn wire_message(m: &Message) -> Result<Value, ModelError> {
    let content = if m.images().next().is_none() {
        Value::String(m.joined_text())
    } else {
        let parts = m
            .parts
            .iter()
            .map(|p| match p {
                Part::Text { text } => Ok(json!({"type": "text", "text": text})),
                Part::Image { image } => {
                    Ok(json!({"type": "image_url", "image_url": {"url": data_uri(image)?}}))
                }
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Value::Array(parts)
    };
    Ok(json!({"role": m.role.as_str(), "content": content}))
}

/// An image as a `data:` URI.
pub fn data_uri(image: &ImageSource) -> Result<String, ModelError> {
    match image {
        ImageSource::DataUri(uri) => Ok(uri.clone()),
        ImageSource::Path(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                ModelError::Other(format!("cannot read image {}: {e}", path.display()))
            })?;
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            let mime = match ext.as_str() {
                "png" => "image/png",
                "jpg" | "jpeg" => "image/jpeg",
                "webp" => "image/webp",
                "gif" => "image/gif",
                other => {
                    return Err(ModelError::Other(format!(
                        "image {}: unknown type `.{other}`",
                        path.display()
                    )))
                }
            };
            Ok(bytes_data_uri(mime, &bytes))
        }
    }
}

/// Encoded image bytes (sent as they are, never recompressed) as a `data:` URI.
pub fn bytes_data_uri(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

impl Model for OpenAiModel {
    fn fingerprint(&self) -> String {
        format!("openai:{}#{}", self.base_url, self.model)
    }

    fn label(&self) -> String {
        self.model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    fn generate(
        &mut self,
        requests: &[Request<'_>],
        options: &GenerationOptions,
    ) -> Vec<Result<Answer, ModelError>> {
        let mut out: Vec<Option<Result<Answer, ModelError>>> =
            requests.iter().map(|_| None).collect();
        self.generate_each(requests, options, &mut |i, r| out[i] = Some(r));
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ModelError::Other("no reply".into()))))
            .collect()
    }

    fn generate_each(
        &mut self,
        requests: &[Request<'_>],
        options: &GenerationOptions,
        sink: &mut dyn FnMut(usize, Result<Answer, ModelError>),
    ) {
        let bodies: Vec<Result<Value, ModelError>> = requests
            .iter()
            .map(|r| self.body(r.messages, options))
            .collect();
        let client = &self.client;
        let permits = tokio::sync::Semaphore::new(self.concurrency);
        let permits = &permits;
        let calls = bodies.into_iter().map(|b| async move {
            let body = b?;
            let _permit = permits
                .acquire()
                .await
                .map_err(|e| ModelError::Other(e.to_string()))?;
            let start = Instant::now();
            let v = client
                .chat(&body)
                .await
                .map_err(|e| ModelError::Other(format!("endpoint: {e}")))?;
            answer(&v, start.elapsed())
        });
        self.runtime.block_on(each_as_ready(calls.collect(), sink));
    }
}

/// Polls every future concurrently on the current task, handing each output to `sink` (with its
/// index) as soon as that future is done.
async fn each_as_ready<F: std::future::Future>(
    futures: Vec<F>,
    sink: &mut dyn FnMut(usize, F::Output),
) {
    let mut futures: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, slot) in futures.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *slot = None;
                        sink(i, v);
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
}

fn answer(v: &Value, elapsed: Duration) -> Result<Answer, ModelError> {
    let text = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ModelError::Other("endpoint reply has no choices[0].message.content".into())
        })?;
    let n = |k: &str| {
        v.pointer(&format!("/usage/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize
    };
    Ok(Answer {
        text: text.to_owned(),
        prompt_tokens: n("prompt_tokens"),
        generated_tokens: n("completion_tokens"),
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Role;

    #[test]
    fn spec_parsing() {
        let m = OpenAiModel::from_spec("openai:http://127.0.0.1:8080/v1/#smollm2").unwrap();
        assert_eq!(m.fingerprint(), "openai:http://127.0.0.1:8080/v1#smollm2");
        assert_eq!(m.label(), "smollm2");
        assert_eq!(
            OpenAiModel::spec_fingerprint("openai:http://127.0.0.1:8080/v1/#smollm2").unwrap(),
            m.fingerprint()
        );
        assert!(OpenAiModel::from_spec("openai:http://x/v1#").is_err());
        assert!(OpenAiModel::from_spec("openai:http://x/v1").is_err());
        assert!(OpenAiModel::from_spec("openai:ftp://x#m").is_err());
        assert!(matches!(
            OpenAiModel::from_spec("gguf:x"),
            Err(ModelError::UnknownSpec(_))
        ));
    }

    #[test]
    fn images_become_data_uris() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.png");
        std::fs::write(&img, [0x89, b'P', b'N', b'G']).unwrap();
        let msg = Message {
            role: Role::User,
            parts: vec![
                Part::Text {
                    text: "what?".into(),
                },
                Part::Image {
                    image: ImageSource::Path(img),
                },
            ],
        };
        let w = wire_message(&msg).unwrap();
        assert_eq!(w["content"][0]["text"], "what?");
        assert_eq!(
            w["content"][1]["image_url"]["url"],
            "data:image/png;base64,iVBORw=="
        );
        let text = wire_message(&Message::text(Role::System, "hi")).unwrap();
        assert_eq!(text, json!({"role": "system", "content": "hi"}));
    }
}
