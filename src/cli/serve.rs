//! `syncoder serve`: an OpenAI-compatible chat-completions endpoint over a model directory.

use crate::infer::server::{serve, ChatService};
use crate::infer::ChatFormat;
use crate::model::Qwen2;
use anyhow::Result;
use candle_core::{DType, Device};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A Hugging Face model directory (a checkpoint step directory works).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to bind (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The model name clients use (default: the directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// `max_tokens` when a request gives none.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| {
        args.model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_else(|| "syncoder".into())
    });
    let service = ChatService {
        format: ChatFormat::from_dir(&args.model)?,
        model: Qwen2::load(&args.model, DType::F32, &Device::Cpu, false)?,
        name,
        default_max_tokens: args.max_tokens,
    };
    serve(service, &format!("{}:{}", args.host, args.port), |addr, name| {
        eprintln!("serving {name} on http://{addr}/v1 (POST /v1/chat/completions, GET /v1/models)");
    })
}
