//! `syncoder serve`: an OpenAI-compatible HTTP endpoint over a model directory —
//! `POST /v1/chat/completions` and `GET /v1/models` — so a local checkpoint can serve as the
//! CodeArena judge or be used by other tools. Requests are answered one at a time (generation
//! already uses every core); `stream` is not supported and says so.

use super::{generate, ChatFormat, GenerationSettings, Sampling};
use crate::data::{Message, Role};
use crate::model::Qwen2;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Response, Server};

/// A loaded model ready to answer.
pub struct ChatService {
    pub name: String,
    pub model: Qwen2,
    pub format: ChatFormat,
    pub default_max_tokens: usize,
}

/// Why a request failed: the HTTP status and the message for the client.
pub struct ApiError(pub u16, pub String);

impl ChatService {
    /// Answers one chat-completions request body.
    pub fn chat(&self, body: &Value) -> std::result::Result<Value, ApiError> {
        let bad = |m: String| ApiError(400, m);
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
            .map_err(|e| ApiError(500, format!("{e:#}")))?
            .remove(0);
        let text = self
            .format
            .decode(&out.token_ids)
            .map_err(|e| ApiError(500, format!("{e:#}")))?;
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

fn json_response(status: u16, v: &Value) -> Response<std::io::Cursor<Vec<u8>>> {
    let header = Header::from_bytes("Content-Type", "application/json").expect("a valid header");
    Response::from_data(v.to_string().into_bytes())
        .with_status_code(status)
        .with_header(header)
}

fn error_body(status: u16, message: &str) -> Value {
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json!({"error": {"message": message, "type": kind}})
}

/// Serves on `addr` until the process ends; `on_ready` gets the bound address.
pub fn serve(service: &ChatService, addr: &str, on_ready: impl FnOnce(std::net::SocketAddr)) -> Result<()> {
    let server = Server::http(addr).map_err(|e| anyhow!("binding {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .context("the server is not bound to an IP address")?;
    on_ready(bound);
    for mut request in server.incoming_requests() {
        let path = request
            .url()
            .split('?')
            .next()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_string();
        let (status, body) = match (request.method(), path.as_str()) {
            (Method::Get, "/v1/models") => (200, service.models()),
            (Method::Get, "/health") => (200, json!({"status": "ok"})),
            (Method::Post, "/v1/chat/completions") => {
                let mut text = String::new();
                match request.as_reader().read_to_string(&mut text) {
                    Err(e) => (400, error_body(400, &format!("reading the body: {e}"))),
                    Ok(_) => match serde_json::from_str::<Value>(&text) {
                        Err(e) => (400, error_body(400, &format!("invalid JSON: {e}"))),
                        Ok(body) => match service.chat(&body) {
                            Ok(v) => (200, v),
                            Err(ApiError(s, m)) => (s, error_body(s, &m)),
                        },
                    },
                }
            }
            _ => (404, error_body(404, &format!("no route {} {path}", request.method()))),
        };
        if let Err(e) = request.respond(json_response(status, &body)) {
            eprintln!("serve: could not answer a request: {e}");
        }
    }
    bail!("the server stopped")
}
