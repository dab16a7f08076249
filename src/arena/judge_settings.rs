//! The settings of the LLM judge, defined once: they are the `--judge-*` flags of `arena judge`
//! and `compare` (clap), the judge keys of a run's `[arena]` table (`arena::config`), and what a
//! [`JudgeClient`](super::judge_client::JudgeClient) is built from. Every default is written here.

use super::judge_client::JudgeClient;
use super::protocol::{Protocol, ProtocolKind};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";
pub const DEFAULT_CONCURRENCY: usize = 8;
pub const DEFAULT_TIMEOUT_S: u64 = 300;
pub const DEFAULT_MAX_RETRIES: u32 = 6;
pub const DEFAULT_BACKOFF_S: f64 = 1.0;
pub const DEFAULT_BACKOFF_CAP_S: f64 = 60.0;

/// The judge endpoint and how it is called.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct JudgeSettings {
    /// Base URL of an OpenAI-compatible API, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1
    /// (requests go to {URL}/chat/completions).
    #[arg(id = "judge_url", long = "judge-url", value_name = "JUDGE_URL")]
    pub url: String,
    /// Judge model name, e.g. gpt-4o.
    #[arg(id = "judge_model", long = "judge-model", value_name = "JUDGE_MODEL")]
    pub model: String,
    /// Environment variable holding the API key (unset: no key, for local servers).
    #[arg(id = "judge_key_env", long = "judge-key-env", value_name = "JUDGE_KEY_ENV", default_value = DEFAULT_KEY_ENV)]
    pub key_env: String,
    /// The judging protocol: syncoder's prompt, or the official CodeArena judge configuration
    /// (read from --judge-config).
    #[arg(long, value_enum, default_value_t)]
    pub protocol: ProtocolKind,
    /// The official judge configuration file (`judge_config.yaml`, arena-hard format) for
    /// --protocol codearena.
    #[arg(id = "judge_config", long = "judge-config", value_name = "JUDGE_CONFIG")]
    pub judge_config: Option<PathBuf>,
    /// A judge prompt template with {question}, {answer_a}, {answer_b} (system prompt above a `===` line).
    #[arg(id = "judge_prompt", long = "judge-prompt", value_name = "JUDGE_PROMPT")]
    pub prompt: Option<PathBuf>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Seconds allowed per request.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout_s: u64,
    /// Retries after a failed request (429, 5xx, timeouts, replies that are not JSON).
    #[arg(long, default_value_t = DEFAULT_MAX_RETRIES)]
    pub max_retries: u32,
    /// Seconds of the first retry's backoff (doubling, with jitter).
    #[arg(long, default_value_t = DEFAULT_BACKOFF_S)]
    pub backoff_s: f64,
    /// Longest backoff between retries, in seconds.
    #[arg(long, default_value_t = DEFAULT_BACKOFF_CAP_S)]
    pub backoff_cap_s: f64,
    /// Longest judge reply, in tokens [default: the protocol's: 4096 syncoder, 16384 codearena].
    #[arg(id = "judge_max_tokens", long = "judge-max-tokens", value_name = "JUDGE_MAX_TOKENS")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature sent to the judge [default: the protocol's: 0 syncoder, 0.2 codearena].
    #[arg(
        id = "judge_temperature",
        long = "judge-temperature",
        value_name = "JUDGE_TEMPERATURE"
    )]
    pub temperature: Option<f64>,
}

impl JudgeSettings {
    /// The endpoint `url` and `model` with every other setting at its default.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            model: model.into(),
            key_env: DEFAULT_KEY_ENV.into(),
            protocol: ProtocolKind::default(),
            judge_config: None,
            prompt: None,
            concurrency: DEFAULT_CONCURRENCY,
            timeout_s: DEFAULT_TIMEOUT_S,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_s: DEFAULT_BACKOFF_S,
            backoff_cap_s: DEFAULT_BACKOFF_CAP_S,
            max_tokens: None,
            temperature: None,
        }
    }

    /// The temperature sent: as set, or the protocol's.
    pub fn temperature(&self) -> f64 {
        self.temperature.unwrap_or(self.protocol.sampling().0)
    }

    /// The max_tokens sent: as set, or the protocol's.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens.unwrap_or(self.protocol.sampling().1)
    }

    /// The limit for one whole request (at least a second).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s.max(1))
    }

    /// The backoff window of the first retry; retry `n` (0-based) sleeps uniformly in
    /// `[0, min(backoff_cap, backoff * 2^n)]` unless the server sent `Retry-After`.
    pub fn backoff(&self) -> Duration {
        Duration::from_secs_f64(self.backoff_s.max(0.0))
    }

    pub fn backoff_cap(&self) -> Duration {
        Duration::from_secs_f64(self.backoff_cap_s.max(0.0))
    }

    /// Requests in flight at once (at least one).
    pub fn parallel(&self) -> usize {
        self.concurrency.max(1)
    }

    /// The client (its key read from `$key_env`) and the protocol these settings name.
    pub fn client(&self) -> Result<(JudgeClient, Protocol)> {
        let protocol = Protocol::load(self)?;
        Ok((JudgeClient::new(self.clone())?, protocol))
    }
}
