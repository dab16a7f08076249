//! Blocking client for an OpenAI-compatible `POST {base_url}/chat/completions` endpoint, used as
//! the LLM judge: API key from an environment variable (or none, for local servers), retries with
//! exponential backoff and full jitter on 429 / 5xx / transport failures, `Retry-After` honoured,
//! and error messages that never contain the key.

use super::judge_settings::JudgeSettings;
use std::fmt;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest `Retry-After` the client is willing to wait for one retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How many characters of a reply body an error message quotes.
const EXCERPT_CHARS: usize = 300;

/// One message of a chat conversation (`role` is `system`, `user` or `assistant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "system".to_string(),
            content: content.into(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "user".to_string(),
            content: content.into(),
        }
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "assistant".to_string(),
            content: content.into(),
        }
    }
}

/// The judge's reply to one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// `choices[0].message.content`.
    pub text: String,
    /// The reply's `usage` object as sent by the server, if any.
    pub usage: Option<Value>,
    /// The model the server says answered (its `model` field), if it named one.
    pub model: Option<String>,
    /// `choices[0].finish_reason` (`stop`, `length`, ...), if given.
    pub finish_reason: Option<String>,
}

/// Sampling of one request, when not the settings' (answering through an endpoint).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestSampling {
    pub temperature: f64,
    pub top_p: f64,
    pub seed: Option<u64>,
    /// `None`: the server decides (vLLM: what is left of the model's context).
    pub max_tokens: Option<u32>,
}

/// What a client is for, as its messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRole {
    pub name: &'static str,
    pub url_flag: &'static str,
    pub model_flag: &'static str,
}

/// The LLM judge (`--judge-url`, `--judge-model`).
pub const JUDGE: ClientRole = ClientRole {
    name: "judge",
    url_flag: "--judge-url",
    model_flag: "--judge-model",
};

/// A server answering the questions (`arena answer --endpoint`).
pub const ENDPOINT: ClientRole = ClientRole {
    name: "endpoint",
    url_flag: "--endpoint",
    model_flag: "--endpoint-model",
};

/// A blocking chat-completions client; cheap to share between threads (`&JudgeClient` is `Sync`).
pub struct JudgeClient {
    role: ClientRole,
    cfg: JudgeSettings,
    url: String,
    http: Client,
    /// `Bearer KEY`, marked sensitive; `None` for keyless servers.
    auth: Option<HeaderValue>,
    /// The key itself, only to redact it from error messages.
    key: Option<String>,
}

impl fmt::Debug for JudgeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JudgeClient")
            .field("url", &self.url)
            .field("model", &self.cfg.model)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    stream: bool,
}

/// Why one attempt failed.
enum AttemptError {
    /// Worth another try; `retry_after` is the server's wish, if it said one.
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Fatal(String),
}

impl JudgeClient {
    /// Builds a client, reading the API key from the environment variable `cfg.key_env`
    /// (surrounding whitespace is ignored; unset or empty means keyless).
    pub fn new(cfg: JudgeSettings) -> anyhow::Result<Self> {
        let key = if cfg.key_env.is_empty() {
            None
        } else {
            std::env::var(&cfg.key_env).ok()
        };
        Self::with_api_key(cfg, key)
    }

    /// Builds a client with an explicit key instead of reading `cfg.key_env` (`None` or an empty
    /// string means keyless).
    pub fn with_api_key(cfg: JudgeSettings, key: Option<String>) -> anyhow::Result<Self> {
        let key = key.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        let base = cfg.url.trim().trim_end_matches('/');
        let url = format!("{base}/chat/completions");
        let parsed = reqwest::Url::parse(&url).with_context(|| format!("invalid judge base URL {:?}", cfg.url))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("judge base URL {:?} must start with http:// or https://", cfg.url);
        }
        if cfg.model.trim().is_empty() {
            bail!("judge model name is empty (base URL {})", cfg.url);
        }
        let auth = match &key {
            None => None,
            Some(k) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    anyhow!(
                        "the API key in ${} contains characters not allowed in an HTTP header",
                        cfg.key_env
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let http = Client::builder()
            .timeout(cfg.timeout())
            .connect_timeout(cfg.timeout().min(Duration::from_secs(30)))
            .build()
            .map_err(|e| anyhow!("cannot build the HTTP client for {url}: {}", render_reqwest_error(e)))?;
        Ok(JudgeClient {
            role: JUDGE,
            cfg,
            url,
            http,
            auth,
            key,
        })
    }

    /// The same client, its messages naming it as `role`.
    pub fn with_role(mut self, role: ClientRole) -> Self {
        self.role = role;
        self
    }

    /// The full endpoint URL, `{base_url}/chat/completions`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &JudgeSettings {
        &self.cfg
    }

    /// Whether an API key was found (an `Authorization` header is sent).
    pub fn has_key(&self) -> bool {
        self.auth.is_some()
    }

    /// Sends `messages` and returns `choices[0].message.content` and `usage`, retrying 429, 5xx,
    /// timeouts, connection failures and replies that are not JSON up to `max_retries` times.
    /// Other HTTP errors fail at once. Error messages name the URL, model and attempt, and the
    /// API key is replaced by `***` in them.
    pub fn complete(&self, messages: &[ChatMessage]) -> anyhow::Result<Completion> {
        self.complete_with(
            messages,
            RequestSampling {
                temperature: self.cfg.temperature(),
                top_p: 1.0,
                seed: None,
                max_tokens: Some(self.cfg.max_tokens()),
            },
        )
    }

    /// `complete` with the request's own sampling.
    pub fn complete_with(&self, messages: &[ChatMessage], sampling: RequestSampling) -> anyhow::Result<Completion> {
        let request = ChatRequest {
            model: &self.cfg.model,
            messages,
            temperature: sampling.temperature,
            top_p: (sampling.top_p < 1.0).then_some(sampling.top_p),
            seed: sampling.seed,
            max_tokens: sampling.max_tokens,
            stream: false,
        };
        let attempts = self.cfg.max_retries.saturating_add(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            match self.attempt(&request) {
                Ok(completion) => return Ok(completion),
                Err(AttemptError::Fatal(message)) => {
                    return Err(anyhow!(self.redact(&format!(
                        "{} request to {} (model {}) failed on attempt {} of {}: {}",
                        self.role.name,
                        self.url,
                        self.cfg.model,
                        attempt + 1,
                        attempts,
                        message
                    ))));
                }
                Err(AttemptError::Retry { message, retry_after }) => {
                    if attempt + 1 < attempts {
                        let wait = self.delay(attempt, retry_after);
                        eprintln!(
                            "{}",
                            self.redact(&format!(
                                "{}: attempt {} of {attempts} failed ({message}); retrying in {:.1} s",
                                self.role.name,
                                attempt + 1,
                                wait.as_secs_f64()
                            ))
                        );
                        std::thread::sleep(wait);
                    }
                    last = message;
                }
            }
        }
        Err(anyhow!(self.redact(&format!(
            "{} request to {} (model {}) failed after {} attempt(s); last error: {}",
            self.role.name, self.url, self.cfg.model, attempts, last
        ))))
    }

    /// One cheap request before any work: `GET {base}/models`, within 10 s. An unreachable
    /// server, a 401/403, a 404 (no OpenAI-compatible API at that URL) or a model list without
    /// the judge model fails at once with advice fitted to what happened; other statuses only
    /// warn (the server is there).
    pub fn check(&self) -> anyhow::Result<()> {
        self.check_model().map(|_| ())
    }

    /// `check`, returning the served model's context length when the server lists one
    /// (`max_model_len`, as vLLM and `syncoder serve` do).
    pub fn check_model(&self) -> anyhow::Result<Option<usize>> {
        let base = self.url.trim_end_matches("/chat/completions");
        let url = format!("{base}/models");
        let mut request = self.http.get(&url).timeout(Duration::from_secs(10));
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = match request.send() {
            Ok(r) => r,
            Err(e) => bail!(self.redact(&format!(
                "the {} at {base} cannot be reached: {}; check {} (is the server running there?)",
                self.role.name,
                render_reqwest_error(e),
                self.role.url_flag
            ))),
        };
        let status = response.status();
        let body = read_body_lossy(response);
        let key = if self.cfg.key_env.is_empty() {
            "no key variable set (--judge-key-env)".to_string()
        } else {
            format!(
                "${} (set: {})",
                self.cfg.key_env,
                if self.has_key() { "yes" } else { "no" }
            )
        };
        match status.as_u16() {
            200 => {
                let list: Vec<Value> = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("data").and_then(Value::as_array).cloned())
                    .unwrap_or_default();
                let served: Vec<String> = list
                    .iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect();
                if !served.is_empty() && !served.iter().any(|m| m == &self.cfg.model) {
                    let mut list = served.clone();
                    list.truncate(20);
                    bail!(
                        "the {} at {base} does not serve model {:?} ({}); it serves: {}{}",
                        self.role.name,
                        self.cfg.model,
                        self.role.model_flag,
                        list.join(", "),
                        if served.len() > 20 { ", …" } else { "" }
                    );
                }
                Ok(list
                    .iter()
                    .find(|m| m.get("id").and_then(Value::as_str) == Some(self.cfg.model.as_str()))
                    .and_then(|m| m.get("max_model_len").and_then(Value::as_u64))
                    .map(|n| n as usize))
            }
            401 | 403 => bail!(self.redact(&format!(
                "HTTP {status} from the {} at {base}: check the API key in {key}: {}",
                self.role.name,
                self.excerpt(&body)
            ))),
            404 => {
                bail!("HTTP 404 for {url}: no OpenAI-compatible API there; check --judge-url (it usually ends in /v1)")
            }
            _ => {
                eprintln!(
                    "warning: the {} at {base} answered GET /models with HTTP {status}: {}",
                    self.role.name,
                    self.excerpt(&body)
                );
                Ok(None)
            }
        }
    }

    /// The sleep before retry number `attempt` (0-based).
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wait) => wait.min(MAX_RETRY_AFTER),
            None => {
                let window = self
                    .cfg
                    .backoff()
                    .saturating_mul(2u32.saturating_pow(attempt))
                    .min(self.cfg.backoff_cap());
                window.mul_f64(rand::random::<f64>())
            }
        }
    }

    fn attempt(&self, request: &ChatRequest<'_>) -> Result<Completion, AttemptError> {
        let mut builder = self.http.post(&self.url).json(request);
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let response = builder.send().map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = parse_retry_after(response.headers(), SystemTime::now());
            let body = self.excerpt(&read_body_lossy(response));
            let message = format!("HTTP {status}: {body}");
            return if status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error() {
                Err(AttemptError::Retry { message, retry_after })
            } else {
                Err(AttemptError::Fatal(message))
            };
        }
        let body = read_bounded(response, MAX_REPLY_BYTES).map_err(|e| match e {
            BodyError::Transport(e) => AttemptError::Retry {
                message: format!("reading the reply: {e}"),
                retry_after: None,
            },
            BodyError::TooLarge => AttemptError::Fatal(format!(
                "the reply is larger than {} MiB; not read further",
                MAX_REPLY_BYTES >> 20
            )),
        })?;
        let json: Value = serde_json::from_str(&body).map_err(|e| AttemptError::Retry {
            message: format!("reply is not valid JSON ({e}): {}", self.excerpt(&body)),
            retry_after: None,
        })?;
        let text = extract_content(&json)
            .map_err(|problem| AttemptError::Fatal(format!("unusable reply: {problem}: {}", self.excerpt(&body))))?;
        let usage = json.get("usage").filter(|u| !u.is_null()).cloned();
        let model = json.get("model").and_then(Value::as_str).map(str::to_string);
        let finish_reason = json
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Completion {
            text,
            usage,
            model,
            finish_reason,
        })
    }

    fn transport_error(&self, e: reqwest::Error) -> AttemptError {
        let fatal = e.is_builder() || e.is_redirect();
        let message = render_reqwest_error(e);
        if fatal {
            AttemptError::Fatal(message)
        } else {
            AttemptError::Retry {
                message,
                retry_after: None,
            }
        }
    }

    /// A short single-line quote of a reply body, with the key redacted before it is cut (so no
    /// prefix of the key can survive the cut).
    fn excerpt(&self, body: &str) -> String {
        let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let flat = self.redact(&flat);
        if flat.is_empty() {
            return "(empty body)".to_string();
        }
        match flat.char_indices().nth(EXCERPT_CHARS) {
            Some((cut, _)) => format!("{}…", &flat[..cut]),
            None => flat,
        }
    }

    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) => text.replace(key.as_str(), "***"),
            None => text.to_string(),
        }
    }
}

/// Renders a reqwest error without its URL or any request detail: what failed and its causes.
fn render_reqwest_error(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the reply failed"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut parts = vec![what.to_string(), e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Largest successful reply read from an endpoint: a chat completion is text plus a little
/// JSON; anything bigger is a misbehaving server, and reading it whole could exhaust memory.
pub const MAX_REPLY_BYTES: u64 = 32 << 20;

/// Why a body was not read.
enum BodyError {
    Transport(std::io::Error),
    TooLarge,
}

/// The body as text, read up to `limit` bytes.
fn read_bounded(response: Response, limit: u64) -> Result<String, BodyError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    response
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(BodyError::Transport)?;
    if bytes.len() as u64 > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// An error reply's body for the message (its first 64 KiB).
fn read_body_lossy(response: Response) -> String {
    match read_bounded(response, 64 << 10) {
        Ok(text) => text,
        Err(BodyError::TooLarge) => "(a body larger than 64 KiB)".to_string(),
        Err(BodyError::Transport(_)) => "(body unreadable)".to_string(),
    }
}

/// `choices[0].message.content` as text (a list of text parts is joined), or what is missing.
fn extract_content(json: &Value) -> Result<String, String> {
    let choices = json.get("choices").ok_or("no \"choices\" field")?;
    let first = choices.get(0).ok_or("\"choices\" is empty or not a list")?;
    let message = first.get("message").ok_or("choices[0] has no \"message\"")?;
    match message.get("content") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            if texts.is_empty() {
                Err("choices[0].message.content has no text part".to_string())
            } else {
                Ok(texts.concat())
            }
        }
        _ => {
            let finish = first.get("finish_reason").and_then(Value::as_str).unwrap_or("unknown");
            Err(format!(
                "choices[0].message.content is missing or not text (finish_reason {finish})"
            ))
        }
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date (a date in the past
/// means no wait). `None` when the header is absent or unreadable.
fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Some(Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64())));
        }
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::super::judge_test_server::{unique_name, ScriptServer};
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    fn cfg(base_url: &str) -> JudgeSettings {
        JudgeSettings {
            key_env: unique_name("JUDGE_TEST_UNSET_KEY"),
            timeout_s: 30,
            max_retries: 3,
            backoff_s: 0.005,
            backoff_cap_s: 0.05,
            ..JudgeSettings::new(base_url, "judge-model")
        }
    }

    fn ask(client: &JudgeClient, marker: &str) -> anyhow::Result<Completion> {
        client.complete(&[
            ChatMessage::system("be fair"),
            ChatMessage::user(format!("question {marker}")),
        ])
    }

    #[test]
    fn url_accepts_trailing_slash_and_rejects_bad_schemes() {
        let a = JudgeClient::new(cfg("http://127.0.0.1:9/v1/")).unwrap();
        let b = JudgeClient::new(cfg("http://127.0.0.1:9/v1")).unwrap();
        assert_eq!(a.url(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(a.url(), b.url());
        assert!(JudgeClient::new(cfg("ftp://x/v1")).is_err());
        assert!(JudgeClient::new(cfg("not a url")).is_err());
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let wait = parse_retry_after(&h, now).unwrap();
        assert!(
            wait > Duration::from_secs(118) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(120));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&past).unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h, now), None);
    }

    #[test]
    fn backoff_stays_in_the_jitter_window() {
        let mut c = cfg("http://127.0.0.1:9/v1");
        c.backoff_s = 0.1;
        c.backoff_cap_s = 0.25;
        let client = JudgeClient::new(c).unwrap();
        for _ in 0..50 {
            assert!(client.delay(0, None) <= Duration::from_millis(100));
            assert!(client.delay(5, None) <= Duration::from_millis(250));
            assert!(client.delay(40, None) <= Duration::from_millis(250));
        }
        assert_eq!(client.delay(0, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(client.delay(0, Some(Duration::from_secs(100_000))), MAX_RETRY_AFTER);
    }

    #[test]
    fn content_and_usage_are_extracted() {
        let server = ScriptServer::start();
        let client = JudgeClient::new(cfg(&server.base_url())).unwrap();
        let reply = ask(&client, "SCRIPT(plain L:A>B)").unwrap();
        assert!(reply.text.contains("[[A>B]]"));
        assert_eq!(reply.usage.unwrap()["total_tokens"], 15);
        let body = &server.bodies("plain")[0];
        assert_eq!(body["model"], "judge-model");
        // The default (codearena) protocol's sampling, as the official script sends it.
        assert_eq!(
            (body["temperature"].as_f64(), body["max_tokens"].as_u64()),
            (Some(0.2), Some(16384))
        );
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "question SCRIPT(plain L:A>B)");
    }

    #[test]
    fn a_reply_larger_than_the_limit_is_refused_without_reading_it_whole() {
        let server = ScriptServer::start();
        let client = JudgeClient::new(cfg(&server.base_url())).unwrap();
        let err = ask(&client, "SCRIPT(big huge)").unwrap_err().to_string();
        assert!(err.contains("larger than 32 MiB"), "{err}");
        assert_eq!(server.count("big"), 1, "not retried");
    }

    #[test]
    fn missing_content_is_an_error_naming_the_problem() {
        let server = ScriptServer::start();
        let client = JudgeClient::new(cfg(&server.base_url())).unwrap();
        let err = ask(&client, "SCRIPT(nochoice nochoices)").unwrap_err().to_string();
        assert!(err.contains("choices"), "{err}");
        assert!(err.contains("judge-model") && err.contains(client.url()), "{err}");
        assert_eq!(server.count("nochoice"), 1);
    }

    #[test]
    fn status_429_with_retry_after_waits_then_succeeds() {
        let server = ScriptServer::start();
        let client = JudgeClient::new(cfg(&server.base_url())).unwrap();
        let start = Instant::now();
        let reply = ask(&client, "SCRIPT(ra r429 L:B>A)").unwrap();
        assert!(start.elapsed() >= Duration::from_millis(950), "{:?}", start.elapsed());
        assert!(reply.text.contains("[[B>A]]"));
        assert_eq!(server.count("ra"), 2);
    }

    #[test]
    fn status_500_and_bad_json_are_retried() {
        let server = ScriptServer::start();
        let client = JudgeClient::new(cfg(&server.base_url())).unwrap();
        assert!(ask(&client, "SCRIPT(five r500 L:A=B)")
            .unwrap()
            .text
            .contains("[[A=B]]"));
        assert_eq!(server.count("five"), 2);
        assert!(ask(&client, "SCRIPT(garbage badjson L:A=B)")
            .unwrap()
            .text
            .contains("[[A=B]]"));
        assert_eq!(server.count("garbage"), 2);
    }

    #[test]
    fn a_reply_slower_than_the_timeout_is_retried() {
        let server = ScriptServer::start();
        let mut c = cfg(&server.base_url());
        c.timeout_s = 1;
        let client = JudgeClient::new(c).unwrap();
        let reply = ask(&client, "SCRIPT(slowpoke slow L:A>>B)").unwrap();
        assert!(reply.text.contains("[[A>>B]]"));
        assert_eq!(server.count("slowpoke"), 2);
    }

    #[test]
    fn a_dropped_connection_is_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut connections = 0;
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                connections += 1;
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head and the whole body (Content-Length) before answering or hanging up.
                loop {
                    let n = stream.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_string())
                            })
                            .map(|v| v.parse::<usize>().unwrap())
                            .unwrap_or(0);
                        if request.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                if connections == 1 {
                    drop(stream); // hang up without a word
                    continue;
                }
                let body = r#"{"choices":[{"message":{"role":"assistant","content":"fine [[B>>A]]"}}]}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                stream.write_all(reply.as_bytes()).unwrap();
                return connections;
            }
            connections
        });
        let client = JudgeClient::new(cfg(&format!("http://127.0.0.1:{port}/v1"))).unwrap();
        let reply = ask(&client, "dropped").unwrap();
        assert_eq!(reply.text, "fine [[B>>A]]");
        assert_eq!(handle.join().unwrap(), 2);
    }

    #[test]
    fn connection_refused_exhausts_retries_with_a_clear_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut c = cfg(&format!("http://127.0.0.1:{port}/v1"));
        c.max_retries = 2;
        let client = JudgeClient::new(c).unwrap();
        let err = ask(&client, "nobody home").unwrap_err().to_string();
        assert!(
            err.contains("after 3 attempt(s)") && err.contains("judge-model"),
            "{err}"
        );
        assert!(err.contains(&format!("127.0.0.1:{port}/v1/chat/completions")), "{err}");
    }

    #[test]
    fn status_400_fails_at_once() {
        let server = ScriptServer::start();
        let client = JudgeClient::new(cfg(&server.base_url())).unwrap();
        let err = ask(&client, "SCRIPT(four r400 L:A>B)").unwrap_err().to_string();
        assert!(err.contains("400") && err.contains("unknown model"), "{err}");
        assert!(err.contains("attempt 1 of 4"), "{err}");
        assert_eq!(server.count("four"), 1);
    }

    #[test]
    fn retries_run_out() {
        let server = ScriptServer::start();
        let mut c = cfg(&server.base_url());
        c.max_retries = 2;
        let client = JudgeClient::new(c).unwrap();
        let err = ask(&client, "SCRIPT(always r500)").unwrap_err().to_string();
        assert!(err.contains("after 3 attempt(s)") && err.contains("HTTP 500"), "{err}");
        assert_eq!(server.count("always"), 3);
    }

    #[test]
    fn the_key_is_sent_and_never_shown() {
        let secret = "sk-test-SECRET-123";
        let key_env = unique_name("JUDGE_TEST_KEY");
        std::env::set_var(&key_env, format!("  {secret}\n"));
        let server = ScriptServer::start();
        let mut c = cfg(&server.base_url());
        c.key_env = key_env;
        c.max_retries = 1;
        let client = JudgeClient::new(c).unwrap();
        assert!(client.has_key());
        assert!(!format!("{client:?}").contains(secret));

        ask(&client, "SCRIPT(keyed L:A>B)").unwrap();
        assert_eq!(server.auth("keyed"), vec![Some(format!("Bearer {secret}"))]);

        let err = ask(&client, "SCRIPT(echo401 r401echo)").unwrap_err();
        let text = format!("{err} {err:#} {err:?}");
        assert!(text.contains("401") && text.contains("***"), "{text}");
        assert!(!text.contains(secret) && !text.contains("sk-test-SEC"), "{text}");
        assert_eq!(server.count("echo401"), 1);

        let err = ask(&client, "SCRIPT(echo500 r500echo)").unwrap_err();
        let text = format!("{err} {err:#} {err:?}");
        assert!(
            text.contains("500") && text.contains("***") && !text.contains(secret),
            "{text}"
        );
        assert_eq!(server.count("echo500"), 2);
    }

    #[test]
    fn keyless_sends_no_authorization() {
        let server = ScriptServer::start();
        let client = JudgeClient::new(cfg(&server.base_url())).unwrap();
        assert!(!client.has_key());
        ask(&client, "SCRIPT(nokey L:A=B)").unwrap();
        assert_eq!(server.auth("nokey"), vec![None]);
        let explicit_empty = JudgeClient::with_api_key(cfg(&server.base_url()), Some("  ".into())).unwrap();
        assert!(!explicit_empty.has_key());
    }
}
