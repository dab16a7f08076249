//! `syncoder serve`: an OpenAI-compatible HTTP endpoint over a model — `POST
//! /v1/chat/completions` (whole replies, or streamed as server-sent events in OpenAI's chunk
//! format with a final usage chunk), `GET /v1/models` and `/health` — so a local checkpoint can
//! be the CodeArena judge or be used by the OpenAI SDK, Open WebUI or Continue.
//!
//! One generation thread owns the model and batches continuously (`serve_scheduler`): requests
//! join and leave the running batch token by token, up to `max_num_seqs` together, the rest
//! waiting in a bounded queue (full: 429 with `Retry-After`); each has a deadline, and a client
//! that disconnects ends its sequence. `stop` strings are honoured, fields the server cannot
//! honour (`n > 1`, `logprobs`, tools) are refused with a 400 naming them, an unknown `model` is
//! a 404, prompt + `max_tokens` beyond the model's context is a 400 naming the numbers, bodies
//! beyond `max_body_bytes` get 413, and with a key (`--api-key-env`) every `/v1` request must
//! carry it. SIGTERM or SIGINT stops accepting connections, lets in-flight requests finish for
//! the grace period (then cancels them with 503) and returns. Each request is logged as one
//! line on standard error.

use super::engine::GenerationSettings;
use super::serve_scheduler::{generation_loop, Chunk, ServeLimits, Sink, Work};
use super::{ChatFormat, Sampling};
use crate::data::{Message, Role};
use crate::model::Qwen2;
use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::{mpsc as tmpsc, oneshot};

/// A loaded model ready to answer.
pub struct ChatService {
    pub name: String,
    pub model: Qwen2,
    pub format: ChatFormat,
    pub default_max_tokens: usize,
    /// The key clients must send as `Authorization: Bearer KEY`, if any.
    pub api_key: Option<String>,
    /// Prompt + new tokens allowed per request (the model's `max_position_embeddings` unless
    /// told otherwise).
    pub context: usize,
    pub limits: ServeLimits,
}

/// Why a request failed, as the client is told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be answered as sent.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no key, or the wrong one.
    #[error("{0}")]
    Unauthorized(String),
    /// 404: no such model.
    #[error("{0}")]
    NotFound(String),
    /// 429: the waiting queue is full (the reply carries `Retry-After`).
    #[error("{0}")]
    Busy(String),
    /// 500: generation itself failed.
    #[error("{0}")]
    Internal(String),
    /// 503: timed out, or the server is shutting down.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of the reply.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::NotFound(_) => 404,
            Self::Busy(_) => 429,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
        }
    }
}

/// A request checked and tokenised, ready to generate.
#[derive(Debug)]
pub struct ChatRequest {
    pub ids: Vec<u32>,
    pub settings: GenerationSettings,
    /// Strings that end the reply (not included in it).
    pub stop: Vec<String>,
    pub stream: bool,
}

/// What a finished generation returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub text: String,
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Request fields this server cannot honour, refused rather than ignored.
const UNSUPPORTED: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
];

impl ChatService {
    /// Checks and tokenises one chat-completions request body.
    pub fn parse(&self, body: &Value) -> std::result::Result<ChatRequest, ApiError> {
        let bad = ApiError::BadRequest;
        if !body.is_object() {
            return Err(bad("the body must be a JSON object".into()));
        }
        if let Some(m) = body.get("model").and_then(Value::as_str) {
            if m != self.name {
                return Err(ApiError::NotFound(format!(
                    "the model `{m}` does not exist; this server serves `{}`",
                    self.name
                )));
            }
        }
        let unsupported: Vec<&str> = UNSUPPORTED
            .iter()
            .copied()
            .filter(|k| body.get(*k).is_some_and(|v| !v.is_null() && *v != Value::Bool(false)))
            .collect();
        if !unsupported.is_empty() {
            return Err(bad(format!(
                "not supported by syncoder serve: {}",
                unsupported.join(", ")
            )));
        }
        if body.get("n").is_some_and(|n| n.as_u64() != Some(1) && !n.is_null()) {
            return Err(bad("`n`: only 1 choice per request is supported".into()));
        }
        let messages = parse_messages(body)?;
        let num = |k: &str| body.get(k).and_then(|v| v.as_f64());
        let asked = match body.get("max_completion_tokens").or_else(|| body.get("max_tokens")) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(n as usize),
                _ => return Err(bad(format!("`max_tokens` must be a positive integer, not {v}"))),
            },
        };
        let temperature = num("temperature").unwrap_or(0.0);
        let top_p = num("top_p").unwrap_or(1.0);
        if !((0.0..=2.0).contains(&temperature) && top_p > 0.0 && top_p <= 1.0) {
            return Err(bad("`temperature` must be in [0, 2] and `top_p` in (0, 1]".into()));
        }
        let stop = match body.get("stop") {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => {
                a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()
            }
            Some(_) => return Err(bad("`stop`: a string or a list of up to 4 strings".into())),
        };
        if stop.iter().any(String::is_empty) {
            return Err(bad("`stop`: empty strings cannot stop anything".into()));
        }
        let ids = self.format.chat_ids(&messages).map_err(|e| bad(format!("{e:#}")))?;
        let context = self.context;
        // Without `max_tokens`: the default, or what the context leaves, whichever is less.
        let max_tokens = asked.unwrap_or(self.default_max_tokens.min(context.saturating_sub(ids.len())).max(1));
        if ids.len() + max_tokens > context {
            return Err(bad(format!(
                "the prompt ({} tokens) plus `max_tokens` ({max_tokens}) exceed the model's context of {context} tokens",
                ids.len()
            )));
        }
        Ok(ChatRequest {
            ids,
            settings: GenerationSettings {
                max_new_tokens: max_tokens,
                sampling: Sampling {
                    temperature,
                    top_p,
                    seed: body.get("seed").and_then(|s| s.as_u64()).unwrap_or(0),
                },
                // vLLM's extension, for benchmarks that need replies of a fixed length.
                stop_ids: if body.get("ignore_eos").and_then(Value::as_bool) == Some(true) {
                    vec![]
                } else {
                    self.format.stop_ids().to_vec()
                },
            },
            stop,
            stream: body.get("stream").and_then(Value::as_bool) == Some(true),
        })
    }

    fn completion_body(&self, o: &Outcome) -> Value {
        let created = unix_now();
        json!({
            "id": format!("chatcmpl-syncoder-{created}"),
            "object": "chat.completion",
            "created": created,
            "model": self.name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": o.text},
                "finish_reason": o.finish_reason,
            }],
            "usage": usage(o),
        })
    }

    pub fn models(&self) -> Value {
        json!({"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "syncoder",
                                           "max_model_len": self.context}]})
    }
}

fn parse_messages(body: &Value) -> std::result::Result<Vec<Message>, ApiError> {
    let bad = ApiError::BadRequest;
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
    Ok(messages)
}

fn usage(o: &Outcome) -> Value {
    json!({
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "total_tokens": o.prompt_tokens + o.completion_tokens,
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        401 => "authentication_error",
        404 => "not_found_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    json!({"error": {"message": message, "type": kind}})
}

fn reply(status: u16, body: Value) -> Response {
    let code = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

fn error_reply(e: &ApiError) -> Response {
    let mut r = reply(e.status(), error_body(e.status(), &e.to_string()));
    if matches!(e, ApiError::Busy(_)) {
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    r
}

/// What the handlers share.
struct Shared {
    service: Arc<ChatService>,
    queue: mpsc::SyncSender<Work>,
}

impl Shared {
    /// Queues a request for the generation thread; a full queue is a 429.
    fn submit(&self, req: ChatRequest, sink: Sink) -> std::result::Result<(), ApiError> {
        let work = Work {
            req,
            sink,
            arrived: Instant::now(),
        };
        self.queue.try_send(work).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => ApiError::Busy(format!(
                "{} requests are already waiting (serve --max-queue); retry later",
                self.service.limits.max_queue
            )),
            mpsc::TrySendError::Disconnected(_) => ApiError::Unavailable("the generation thread has stopped".into()),
        })
    }
}

async fn chat(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reply(400, error_body(400, &format!("invalid JSON: {e}"))),
    };
    let req = match shared.service.parse(&body) {
        Ok(r) => r,
        Err(e) => return error_reply(&e),
    };
    if req.stream {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let (tx, rx) = tmpsc::unbounded_channel();
        if let Err(e) = shared.submit(req, Sink::Stream(tx)) {
            return error_reply(&e);
        }
        return stream_reply(shared.service.name.clone(), rx, include_usage);
    }
    let (tx, rx) = oneshot::channel();
    if let Err(e) = shared.submit(req, Sink::Reply(tx)) {
        return error_reply(&e);
    }
    match rx.await {
        Ok(Ok(outcome)) => reply(200, shared.service.completion_body(&outcome)),
        Ok(Err(e)) => error_reply(&e),
        Err(_) => reply(500, error_body(500, "the generation thread dropped the request")),
    }
}

/// A streamed reply: a first chunk with the role, one chunk per text delta, a last chunk with
/// the finish reason, a usage chunk (`choices: []`, as OpenAI sends with `include_usage`), and
/// `[DONE]`.
fn stream_reply(model: String, rx: tmpsc::UnboundedReceiver<Chunk>, include_usage: bool) -> Response {
    let created = unix_now();
    let id = format!("chatcmpl-syncoder-{created}");
    let chunk = move |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    let state = (
        rx,
        VecDeque::from([Event::default().data(first.to_string())]),
        false,
        chunk,
    );
    let stream = futures_util::stream::unfold(state, move |(mut rx, mut pending, mut ended, chunk)| async move {
        loop {
            if let Some(ev) = pending.pop_front() {
                return Some((Ok::<Event, Infallible>(ev), (rx, pending, ended, chunk)));
            }
            if ended {
                return None;
            }
            match rx.recv().await {
                Some(Chunk::Delta(text)) => {
                    pending.push_back(Event::default().data(chunk(json!({"content": text}), Value::Null).to_string()));
                }
                Some(Chunk::Done(o)) => {
                    pending.push_back(Event::default().data(chunk(json!({}), json!(o.finish_reason)).to_string()));
                    if include_usage {
                        let mut u = chunk(json!({}), Value::Null);
                        u["choices"] = json!([]);
                        u["usage"] = usage(&o);
                        pending.push_back(Event::default().data(u.to_string()));
                    }
                    pending.push_back(Event::default().data("[DONE]"));
                    ended = true;
                }
                Some(Chunk::Failed(e)) => {
                    pending.push_back(Event::default().data(error_body(e.status(), &e.to_string()).to_string()));
                    ended = true;
                }
                None => return None,
            }
        }
    });
    Sse::new(stream).into_response()
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    reply(200, shared.service.models())
}

async fn not_found(uri: axum::http::Uri) -> Response {
    reply(404, error_body(404, &format!("no route {uri}")))
}

/// Refuses `/v1` requests without the server's key; logs one line per request.
async fn guard_and_log(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = match &shared.service.api_key {
        Some(key) if path.starts_with("/v1") => {
            let sent = request
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if sent == Some(key.as_str()) {
                next.run(request).await
            } else {
                error_reply(&ApiError::Unauthorized(
                    "missing or wrong API key (send `Authorization: Bearer KEY`)".into(),
                ))
            }
        }
        _ => next.run(request).await,
    };
    eprintln!(
        "{method} {path} {} {:.3}s",
        response.status().as_u16(),
        started.elapsed().as_secs_f64()
    );
    response
}

/// Serves on `addr` until SIGTERM or SIGINT; `on_ready` gets the bound address. On a signal it
/// stops accepting connections, lets in-flight requests finish for `limits.shutdown_grace`
/// (then cancels them with 503), and returns `Ok`.
pub fn serve(service: ChatService, addr: &str, on_ready: impl FnOnce(std::net::SocketAddr, &str)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let service = Arc::new(service);
    let (queue, work) = mpsc::sync_channel(service.limits.max_queue.max(1));
    let cancel = Arc::new(AtomicBool::new(false));
    let generation = {
        let (service, cancel) = (service.clone(), cancel.clone());
        std::thread::Builder::new()
            .name("generation".into())
            .spawn(move || generation_loop(service, work, cancel))
            .context("starting the generation thread")?
    };
    let grace = service.limits.shutdown_grace;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        on_ready(listener.local_addr()?, &service.name);
        let body_limit = service.limits.max_body_bytes;
        let shared = Arc::new(Shared { service, queue });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
            .fallback(not_found)
            .layer(axum::extract::DefaultBodyLimit::max(body_limit))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), guard_and_log))
            .with_state(shared);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal(cancel, grace))
            .await
            .context("serving")
    });
    // Every handler is gone, and with them the queue's senders: the generation thread ends.
    drop(runtime);
    if generation.join().is_err() {
        bail!("the generation thread panicked");
    }
    served
}

/// Resolves on SIGTERM or SIGINT (axum then stops accepting connections and waits for the
/// in-flight ones); after `grace`, sets `cancel` so the generation thread ends what still runs.
async fn shutdown_signal(cancel: Arc<AtomicBool>, grace: std::time::Duration) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    eprintln!(
        "shutting down: no new connections; in-flight requests may finish for {} s",
        grace.as_secs()
    );
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}
