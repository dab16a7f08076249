//! `syncoder serve`: an OpenAI-compatible chat-completions endpoint over a model directory.

use crate::infer::serve_scheduler::ServeLimits;
use crate::infer::server::{serve, ChatService};
use crate::infer::{InferDevice, LoadedModel};
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  syncoder serve --model checkpoints/my-run --port 8000
  SYNCODER_API_KEY=secret syncoder serve --model checkpoints/my-run --host 0.0.0.0 --api-key-env SYNCODER_API_KEY --device cuda")]
pub struct ServeArgs {
    /// The model: a model or checkpoint step directory, a run directory (its latest checkpoint),
    /// or a Hugging Face Hub id (from the HF cache).
    #[arg(long)]
    pub model: String,
    /// A directory with tokenizer.json and tokenizer_config.json (default: the model's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub device: InferDevice,
    /// TCP port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to bind (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The model name clients use (default: RUN/step-N for a checkpoint, else the directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// `max_tokens` when a request gives none.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Prompt + new tokens allowed per request [default: the model's max_position_embeddings];
    /// beyond that the model runs on positions it was not trained on.
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Environment variable holding a key clients must send (`Authorization: Bearer KEY`);
    /// required when binding an address other than loopback.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Requests generating together (continuous batching: they join and leave token by token).
    #[arg(long, default_value_t = 16)]
    pub max_num_seqs: usize,
    /// Requests waiting for a place; more are answered 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Seconds from a request's arrival to its last token; past it the request gets 503.
    #[arg(long, default_value_t = 600)]
    pub request_timeout_s: u64,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 2 << 20)]
    pub max_body_bytes: usize,
    /// After SIGTERM/SIGINT, seconds in-flight requests may take to finish before they are
    /// cancelled (503); then the server exits 0.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_s: u64,
}

/// `RUN/step-N` for a checkpoint of a run, else the directory's name.
fn default_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().to_string());
    match (name(&dir), dir.parent().and_then(name)) {
        (Some(step), Some(run)) if step.starts_with("step-") => format!("{run}/{step}"),
        (Some(n), _) => n,
        _ => "syncoder".into(),
    }
}

/// Whether `host` only accepts connections from this machine.
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn run(args: ServeArgs) -> Result<()> {
    let api_key = match &args.api_key_env {
        Some(var) => {
            let key = std::env::var(var).unwrap_or_default().trim().to_string();
            if key.is_empty() {
                anyhow::bail!("--api-key-env {var}: the variable is unset or empty");
            }
            Some(key)
        }
        None if !is_loopback(&args.host) => anyhow::bail!(
            "--host {}: binding beyond this machine needs a key: set one in an environment variable and pass \
             --api-key-env VAR",
            args.host
        ),
        None => None,
    };
    if args.max_num_seqs == 0 || args.max_queue == 0 || args.request_timeout_s == 0 {
        anyhow::bail!("--max-num-seqs, --max-queue and --request-timeout-s must be at least 1");
    }
    let limits = ServeLimits {
        max_num_seqs: args.max_num_seqs,
        max_queue: args.max_queue,
        request_timeout: Duration::from_secs(args.request_timeout_s),
        max_body_bytes: args.max_body_bytes,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_s),
    };
    let loaded = LoadedModel::load(&args.model, args.tokenizer.as_deref(), &args.device)?;
    let name = args.name.clone().unwrap_or_else(|| default_name(&loaded.dir));
    let context = args
        .max_model_len
        .unwrap_or(loaded.model.config.max_position_embeddings);
    let service = ChatService {
        context,
        format: loaded.format,
        model: loaded.model,
        name,
        default_max_tokens: args.max_tokens,
        api_key,
        limits,
    };
    serve(service, &format!("{}:{}", args.host, args.port), |addr, name| {
        eprintln!("serving {name} on http://{addr}/v1 (POST /v1/chat/completions, GET /v1/models)");
    })
}
