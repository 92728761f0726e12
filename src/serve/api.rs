//! The OpenAI chat-completions wire format, as `vlmtest serve` reads and writes it.
//!
//! Requests: `messages` with string content or parts (`text`, `image_url` with a `data:` URI),
//! `max_tokens` / `max_completion_tokens`, `response_format` (`text`, `json_object`,
//! `json_schema`), `logprobs` / `top_logprobs`. Decoding is always greedy, so `temperature`,
//! `top_p` and `seed` are accepted and ignored.

use std::sync::Arc;

use serde_json::{json, Value};

use super::engine::Generation;
use crate::case::{ImageSource, Message, Part, Role};
use crate::model::constrain::Schema;
use crate::model::decode::DecodeOptions;

/// A request the server cannot serve: HTTP 400 with this message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// A parsed chat request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub options: DecodeOptions,
}

fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(msg.into())
}

/// Parses a request body. `max_tokens_cap` bounds `max_tokens` (and is the default).
pub fn parse_request(body: &Value, max_tokens_cap: usize) -> Result<ChatRequest, BadRequest> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`messages` must be an array"))?;
    let mut messages = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => {
                return Err(bad(format!(
                    "messages[{i}].role: unsupported role {other:?}"
                )))
            }
        };
        let parts = match m.get("content") {
            Some(Value::String(s)) => vec![Part::Text { text: s.clone() }],
            Some(Value::Array(parts)) => parts
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    parse_part(p).map_err(|e| bad(format!("messages[{i}].content[{j}]: {}", e.0)))
                })
                .collect::<Result<_, _>>()?,
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(bad(format!(
                    "messages[{i}].content must be a string or an array of parts"
                )))
            }
        };
        messages.push(Message { role, parts });
    }
    if messages.is_empty() {
        return Err(bad("`messages` is empty"));
    }
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .map_or(max_tokens_cap, |n| (n as usize).min(max_tokens_cap));
    let schema = match body.get("response_format") {
        None | Some(Value::Null) => None,
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("text") => None,
            Some("json_object") => Some(Arc::new(Schema::any_object())),
            Some("json_schema") => {
                let s = rf
                    .pointer("/json_schema/schema")
                    .ok_or_else(|| bad("response_format.json_schema.schema is missing"))?;
                Some(Arc::new(
                    Schema::compile(s).map_err(|e| bad(format!("response_format: {e}")))?,
                ))
            }
            other => {
                return Err(bad(format!(
                    "response_format.type {other:?} is not supported"
                )))
            }
        },
    };
    let top_logprobs = match body.get("logprobs").and_then(Value::as_bool) {
        Some(true) => Some(
            body.get("top_logprobs")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(20) as usize,
        ),
        _ => None,
    };
    Ok(ChatRequest {
        model,
        messages,
        options: DecodeOptions {
            max_tokens,
            schema,
            top_logprobs,
        },
    })
}

fn parse_part(p: &Value) -> Result<Part, BadRequest> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Part::Text {
            text: p
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("text part without `text`"))?
                .to_owned(),
        }),
        Some("image_url") => {
            let url = p
                .pointer("/image_url/url")
                .or_else(|| p.get("image_url"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("image_url part without `image_url.url`"))?;
            if !url.starts_with("data:image/") || !url.contains(";base64,") {
                return Err(bad("only `data:image/...;base64,...` image URLs are accepted (the server fetches nothing)"));
            }
            Ok(Part::Image {
                image: ImageSource::DataUri(url.to_owned()),
            })
        }
        other => Err(bad(format!("part type {other:?} is not supported"))),
    }
}

/// The response body for a finished generation.
pub fn completion_body(model: &str, created: u64, id: u64, g: &Generation) -> Value {
    let mut choice = json!({
        "index": 0,
        "message": {"role": "assistant", "content": g.text},
        "finish_reason": g.finish_reason,
        "logprobs": null,
    });
    if let Some(lps) = &g.logprobs {
        let entry = |bytes: &[u8], lp: f32| json!({"token": String::from_utf8_lossy(bytes), "logprob": lp, "bytes": bytes});
        let content: Vec<Value> = lps
            .iter()
            .map(|t| {
                let mut e = entry(&t.bytes, t.logprob);
                e["top_logprobs"] =
                    Value::Array(t.top.iter().map(|(b, lp)| entry(b, *lp)).collect());
                e
            })
            .collect();
        choice["logprobs"] = json!({"content": content});
    }
    json!({
        "id": format!("chatcmpl-vlmtest-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.completion_tokens,
            "total_tokens": g.prompt_tokens + g.completion_tokens,
        },
    })
}

/// An OpenAI-style error body.
pub fn error_body(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decode::TokenLogprob;

    #[test]
    fn parses_text_parts_images_schema_and_logprobs() {
        let body = json!({
            "model": "smollm2",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ]},
            ],
            "max_tokens": 5000,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}}},
            "logprobs": true,
            "top_logprobs": 50,
        });
        let r = parse_request(&body, 256).unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].images().count(), 1);
        assert_eq!(r.options.max_tokens, 256);
        assert_eq!(r.options.top_logprobs, Some(20));
        assert!(r.options.schema.is_some());
    }

    #[test]
    fn rejects_remote_images_unknown_roles_and_bad_formats_with_a_path() {
        let img = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]});
        assert!(parse_request(&img, 10)
            .unwrap_err()
            .0
            .contains("messages[0].content[0]"));
        let role = json!({"messages": [{"role": "tool", "content": "x"}]});
        assert!(parse_request(&role, 10)
            .unwrap_err()
            .0
            .contains("messages[0].role"));
        let rf = json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "grammar"}});
        assert!(parse_request(&rf, 10)
            .unwrap_err()
            .0
            .contains("response_format"));
        let empty = json!({"messages": []});
        assert!(parse_request(&empty, 10).is_err());
    }

    #[test]
    fn completion_body_has_usage_and_logprobs() {
        let g = Generation {
            text: "{}".into(),
            prompt_tokens: 3,
            completion_tokens: 2,
            finish_reason: "stop",
            logprobs: Some(vec![
                TokenLogprob {
                    bytes: b"{".to_vec(),
                    logprob: -0.1,
                    top: vec![(b"{".to_vec(), -0.1)],
                },
                TokenLogprob {
                    bytes: b"}".to_vec(),
                    logprob: -0.2,
                    top: vec![],
                },
            ]),
        };
        let b = completion_body("m", 0, 1, &g);
        assert_eq!(b["usage"]["total_tokens"], 5);
        assert_eq!(
            b["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["token"],
            "{"
        );
        assert_eq!(b["choices"][0]["message"]["content"], "{}");
    }
}
