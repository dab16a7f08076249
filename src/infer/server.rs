//! `syncoder serve`: an OpenAI-compatible HTTP endpoint over a model directory —
//! `POST /v1/chat/completions` and `GET /v1/models` — so a local checkpoint can serve as the
//! CodeArena judge or be used by other tools. axum takes any number of (keep-alive)
//! connections; generations run one at a time (each already uses every core); `stream` is not
//! supported and says so.

use super::{generate, ChatFormat, GenerationSettings, Sampling};
use crate::data::{Message, Role};
use crate::model::Qwen2;
use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;

/// A loaded model ready to answer.
pub struct ChatService {
    pub name: String,
    pub model: Qwen2,
    pub format: ChatFormat,
    pub default_max_tokens: usize,
    /// The key clients must send as `Authorization: Bearer KEY`, if any.
    pub api_key: Option<String>,
}

/// Why a request failed, as the client is told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be answered as sent.
    #[error("{0}")]
    BadRequest(String),
    /// 500: generation itself failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of the reply.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Internal(_) => 500,
        }
    }
}

impl ChatService {
    /// Answers one chat-completions request body.
    pub fn chat(&self, body: &Value) -> std::result::Result<Value, ApiError> {
        let bad = ApiError::BadRequest;
        if body.get("stream").and_then(|s| s.as_bool()) == Some(true) {
            return Err(bad("`stream: true` is not supported by syncoder serve".into()));
        }
        let msgs = body
            .get("messages")
            .and_then(|m| m.as_array())
            .ok_or_else(|| bad("`messages`: expected a list".into()))?;
        let mut messages = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let role = match m.get("role").and_then(|r| r.as_str()) {
                Some("system") | Some("developer") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                other => return Err(bad(format!("`messages[{i}].role`: unsupported {other:?}"))),
            };
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                // The list-of-parts form: keep the text parts.
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                    .collect::<Vec<_>>()
                    .join(""),
                _ => return Err(bad(format!("`messages[{i}].content`: expected a string"))),
            };
            messages.push(Message { role, content });
        }
        let num = |k: &str| body.get(k).and_then(|v| v.as_f64());
        let max_tokens = body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens"))
            .and_then(|v| v.as_u64())
            .map_or(self.default_max_tokens, |v| v as usize);
        let temperature = num("temperature").unwrap_or(0.0);
        let top_p = num("top_p").unwrap_or(1.0);
        if !((0.0..=2.0).contains(&temperature) && top_p > 0.0 && top_p <= 1.0) {
            return Err(bad("`temperature` must be in [0, 2] and `top_p` in (0, 1]".into()));
        }
        let sampling = Sampling {
            temperature,
            top_p,
            seed: body.get("seed").and_then(|s| s.as_u64()).unwrap_or(0),
        };
        let ids = self.format.chat_ids(&messages).map_err(|e| bad(format!("{e:#}")))?;
        let settings = GenerationSettings {
            max_new_tokens: max_tokens,
            sampling,
            stop_ids: self.format.stop_ids().to_vec(),
        };
        let out = generate(&self.model, std::slice::from_ref(&ids), &settings)
            .map_err(|e| ApiError::Internal(format!("{e:#}")))?
            .remove(0);
        let text = self
            .format
            .decode(&out.token_ids)
            .map_err(|e| ApiError::Internal(format!("{e:#}")))?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(json!({
            "id": format!("chatcmpl-syncoder-{created}"),
            "object": "chat.completion",
            "created": created,
            "model": self.name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": match out.finish_reason {
                    super::FinishReason::Stop => "stop",
                    super::FinishReason::Length => "length",
                },
            }],
            "usage": {
                "prompt_tokens": ids.len(),
                "completion_tokens": out.token_ids.len(),
                "total_tokens": ids.len() + out.token_ids.len(),
            },
        }))
    }

    pub fn models(&self) -> Value {
        json!({"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "syncoder"}]})
    }
}

fn error_body(status: u16, message: &str) -> Value {
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json!({"error": {"message": message, "type": kind}})
}

/// The service plus the lock that lets one generation run at a time (it uses every core).
struct Shared {
    service: ChatService,
    busy: std::sync::Mutex<()>,
}

fn reply(status: u16, body: Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    let code = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

async fn chat(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> axum::response::Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reply(400, error_body(400, &format!("invalid JSON: {e}"))),
    };
    let result = tokio::task::spawn_blocking(move || {
        let _one_at_a_time = shared.busy.lock().unwrap_or_else(|p| p.into_inner());
        shared.service.chat(&body)
    })
    .await;
    match result {
        Ok(Ok(v)) => reply(200, v),
        Ok(Err(e)) => reply(e.status(), error_body(e.status(), &e.to_string())),
        Err(e) => reply(500, error_body(500, &format!("generation failed: {e}"))),
    }
}

async fn models(State(shared): State<Arc<Shared>>) -> axum::response::Response {
    reply(200, shared.service.models())
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    reply(404, error_body(404, &format!("no route {uri}")))
}

/// Serves on `addr` until the process ends; `on_ready` gets the bound address.
pub fn serve(service: ChatService, addr: &str, on_ready: impl FnOnce(std::net::SocketAddr, &str)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        on_ready(listener.local_addr()?, &service.name);
        let shared = Arc::new(Shared {
            service,
            busy: std::sync::Mutex::new(()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
            .fallback(not_found)
            .with_state(shared);
        axum::serve(listener, app).await.context("serving")?;
        bail!("the server stopped")
    })
}
