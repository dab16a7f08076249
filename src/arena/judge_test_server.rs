//! Test-only scripted judge: a real OpenAI-compatible HTTP server on 127.0.0.1 (port 0) whose
//! behaviour is chosen by a marker `SCRIPT(id step step ...)` inside the request's messages.
//! Request `n` (0-based) for `id` plays step `n` (the last step repeats); requests, bodies and
//! `Authorization` headers are recorded per id.
//!
//! Steps: `L:<label>` (a reply ending with `[[label]]`), `none` (a reply without a label),
//! `conflict` (two different labels), `r429` (429 with `Retry-After: 1`), `r500`, `r400`,
//! `r401echo` / `r500echo` (the status with a body echoing the `Authorization` header), `slow`
//! (sleeps 3 s, then a labelled reply), `badjson` (200 with a body that is not JSON),
//! `nochoices` (200 JSON without `choices`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use tiny_http::{Header, Response, Server};

/// What the server saw for one script id.
#[derive(Default)]
struct Seen {
    bodies: Vec<Value>,
    auth: Vec<Option<String>>,
}

/// A running scripted server; stopped when dropped.
pub struct ScriptServer {
    server: Arc<Server>,
    port: u16,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    thread: Option<JoinHandle<()>>,
}

/// A name unique within this test process (for env vars and temp paths).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl ScriptServer {
    /// Starts the server on 127.0.0.1 with a port chosen by the OS.
    pub fn start() -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let thread = {
            let server = Arc::clone(&server);
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let seen = Arc::clone(&seen);
                    std::thread::spawn(move || handle(request, &seen));
                }
            })
        };
        ScriptServer {
            server,
            port,
            seen,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Requests received for `id`.
    pub fn count(&self, id: &str) -> usize {
        self.seen.lock().unwrap().get(id).map_or(0, |s| s.bodies.len())
    }

    /// Request bodies received for `id`, in order.
    pub fn bodies(&self, id: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .get(id)
            .map_or_else(Vec::new, |s| s.bodies.clone())
    }

    /// `Authorization` headers received for `id`, in order.
    pub fn auth(&self, id: &str) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .get(id)
            .map_or_else(Vec::new, |s| s.auth.clone())
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn find_script(body: &Value) -> Option<(String, Vec<String>)> {
    let messages = body.get("messages")?.as_array()?;
    for m in messages {
        let content = m.get("content")?.as_str()?;
        if let Some(start) = content.find("SCRIPT(") {
            let rest = &content[start + "SCRIPT(".len()..];
            let inner = &rest[..rest.find(')')?];
            let mut words = inner.split_whitespace().map(str::to_string);
            let id = words.next()?;
            return Some((id, words.collect()));
        }
    }
    None
}

fn chat_reply(text: &str) -> String {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "judge-model-2024-01-01",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
    .to_string()
}

fn handle(mut request: tiny_http::Request, seen: &Mutex<HashMap<String, Seen>>) {
    if *request.method() == tiny_http::Method::Get {
        // The client's check: an empty model list.
        let _ = request.respond(Response::from_string(r#"{"object":"list","data":[]}"#));
        return;
    }
    let mut raw = String::new();
    let _ = request.as_reader().read_to_string(&mut raw);
    let auth = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.to_string());
    let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    let (id, steps) = find_script(&body).unwrap_or_else(|| ("(none)".to_string(), vec!["L:A=B".to_string()]));
    let index = {
        let mut seen = seen.lock().unwrap();
        let entry = seen.entry(id).or_default();
        entry.bodies.push(body);
        entry.auth.push(auth.clone());
        entry.bodies.len() - 1
    };
    let step = steps
        .get(index)
        .or(steps.last())
        .cloned()
        .unwrap_or_else(|| "L:A=B".to_string());
    let echo = format!("{{\"error\":\"bad credentials: {}\"}}", auth.unwrap_or_default());
    let (status, text, extra): (u16, String, Option<Header>) = match step.as_str() {
        "none" => (200, chat_reply("Both answers have merits; it is hard to say."), None),
        "conflict" => (200, chat_reply("At first [[A>B]], but on reflection [[B>A]]."), None),
        "r429" => (
            429,
            "{\"error\":\"rate limited\"}".into(),
            Header::from_bytes("Retry-After", "1").ok(),
        ),
        "r500" => (500, "{\"error\":\"upstream exploded\"}".into(), None),
        "r400" => (400, "{\"error\":{\"message\":\"unknown model\"}}".into(), None),
        "r401echo" => (401, echo, None),
        "r500echo" => (500, echo, None),
        "slow" => {
            std::thread::sleep(Duration::from_secs(3));
            (200, chat_reply("Slowly: [[A=B]]"), None)
        }
        "badjson" => (200, "this is {not json".into(), None),
        // A body past the client's limit (`MAX_REPLY_BYTES`).
        "huge" => (200, " ".repeat(40 << 20), None),
        "nochoices" => (200, "{\"error\":\"no choices for you\"}".into(), None),
        label => {
            let label = label.strip_prefix("L:").unwrap_or("A=B");
            (
                200,
                chat_reply(&format!("Checked both answers.\n\nMy final verdict is [[{label}]].")),
                None,
            )
        }
    };
    let mut response = Response::from_string(text).with_status_code(status);
    if let Ok(h) = Header::from_bytes("Content-Type", "application/json") {
        response = response.with_header(h);
    }
    if let Some(h) = extra {
        response = response.with_header(h);
    }
    let _ = request.respond(response);
}
