//! The HTTP layer of `vlmtest serve` (axum): `/v1/chat/completions`, `/v1/models`, `/health`.
//!
//! One model, one generation at a time (the model holds one KV cache): requests queue on a mutex
//! and run on tokio's blocking pool, so the server keeps accepting connections meanwhile.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::api::{self, BadRequest};
use super::engine;
use crate::model::decode::Decoder;

struct AppState {
    model: Mutex<Box<dyn Decoder>>,
    name: String,
    max_tokens_cap: usize,
    next_id: AtomicU64,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model id `/v1/models` lists and responses echo.
    pub name: String,
    pub max_tokens_cap: usize,
}

/// The router over a loaded model.
fn router(model: Box<dyn Decoder>, config: &ServerConfig) -> Router {
    let state = Arc::new(AppState {
        model: Mutex::new(model),
        name: config.name.clone(),
        max_tokens_cap: config.max_tokens_cap,
        next_id: AtomicU64::new(0),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        // A 12-megapixel photo is 5–8 MB, a third more as base64: axum's 2 MB default would
        // refuse camera images before the model sees them.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The largest request body accepted (images arrive inline as data URIs).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

fn error(status: StatusCode, msg: &str, kind: &str) -> Response {
    (status, Json(api::error_body(msg, kind))).into_response()
}

async fn models(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": s.name, "object": "model", "created": 0, "owned_by": "vlmtest"}]}),
    )
}

async fn chat(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("request body is not JSON: {e}"),
                "invalid_request_error",
            )
        }
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return error(
            StatusCode::BAD_REQUEST,
            "streaming is not supported",
            "invalid_request_error",
        );
    }
    let req = match api::parse_request(&body, s.max_tokens_cap) {
        Ok(r) => r,
        Err(BadRequest(m)) => return error(StatusCode::BAD_REQUEST, &m, "invalid_request_error"),
    };
    let state = s.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut model = state
            .model
            .lock()
            .map_err(|_| "the model lock is poisoned".to_owned())?;
        if req.messages.iter().any(|m| m.images().next().is_some()) && !model.accepts_images() {
            return Err(
                "this model cannot read images; send text only or serve a vision model".to_owned(),
            );
        }
        engine::generate(model.as_mut(), &req.messages, &req.options).map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(g)) => {
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let id = s.next_id.fetch_add(1, Ordering::Relaxed);
            Json(api::completion_body(&s.name, created, id, &g)).into_response()
        }
        Ok(Err(m)) if m.contains("cannot read images") => {
            error(StatusCode::BAD_REQUEST, &m, "invalid_request_error")
        }
        Ok(Err(m)) => error(StatusCode::INTERNAL_SERVER_ERROR, &m, "server_error"),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("generation task failed: {e}"),
            "server_error",
        ),
    }
}

/// Serves until the process ends.
pub fn serve_blocking(
    model: Box<dyn Decoder>,
    config: &ServerConfig,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let app = router(model, config);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!(
            "vlmtest serve: listening on http://{}/v1 (model `{}`)",
            listener.local_addr()?,
            config.name
        );
        axum::serve(listener, app).await
    })
}

/// A server on a background thread; dropping it stops it. For tests and embedding.
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// `http://<addr>/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a server on `addr` (port 0 picks a free one) on a background thread.
pub fn spawn(
    model: Box<dyn Decoder>,
    config: &ServerConfig,
    addr: SocketAddr,
) -> std::io::Result<ServerHandle> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = router(model, config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        rt.shutdown_timeout(std::time::Duration::from_millis(200));
    });
    Ok(ServerHandle {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
