//! `syncoder generate`: a reply of a model to a prompt or a conversation, greedy or sampled.

use crate::data::record::parse_message;
use crate::data::{Message, Role};
use crate::infer::{generate, GenerationSettings, InferDevice, LoadedModel, Sampling};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  syncoder generate --model checkpoints/smoke --prompt \"Write a Python function that reverses a string.\"
  syncoder generate --model Qwen/Qwen2.5-Coder-0.5B-Instruct --device cuda --messages conv.json --temperature 0.7")]
pub struct GenerateArgs {
    /// The model: a model or checkpoint step directory, a run directory (its latest checkpoint),
    /// or a Hugging Face Hub id (from the HF cache).
    #[arg(long)]
    pub model: String,
    /// A directory with tokenizer.json and tokenizer_config.json (default: the model's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub device: InferDevice,
    /// The user's message (or, with --raw, the exact text to continue).
    #[arg(long, conflicts_with = "messages", required_unless_present = "messages")]
    pub prompt: Option<String>,
    /// A JSON file with a conversation: `[{"role": ..., "content": ...}, ...]` or `{"messages": [...]}`.
    #[arg(long)]
    pub messages: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Greedy decoding (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_p"])]
    pub greedy: bool,
    /// Sample at this temperature (0: greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, in (0, 1] (needs --temperature).
    #[arg(long, requires = "temperature")]
    pub top_p: Option<f64>,
    /// Seed of the sampling stream.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the prompt text as it is, without the chat template.
    #[arg(long, conflicts_with = "messages")]
    pub raw: bool,
    /// Print `{"text": ..., "token_ids": [...], "finish_reason": ...}`.
    #[arg(long)]
    pub json: bool,
}

/// Reads a conversation file.
pub fn read_messages(path: &PathBuf) -> Result<Vec<Message>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let list = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => match o.get("messages") {
            Some(serde_json::Value::Array(a)) => a,
            _ => bail!(
                "{}: expected a list of messages or {{\"messages\": [...]}}",
                path.display()
            ),
        },
        _ => bail!(
            "{}: expected a list of messages or {{\"messages\": [...]}}",
            path.display()
        ),
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| parse_message(m, i))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let sampling = match (args.temperature, args.greedy) {
        (Some(t), false) if t > 0.0 => Sampling {
            temperature: t,
            top_p: args.top_p.unwrap_or(1.0),
            seed: args.seed,
        },
        (Some(t), false) if t < 0.0 => bail!("--temperature must be positive (0 means greedy)"),
        _ => Sampling::greedy(),
    };
    if !(0.0..=1.0).contains(&sampling.top_p) || sampling.top_p == 0.0 {
        bail!("--top-p must be in (0, 1]");
    }
    let loaded = LoadedModel::load(&args.model, args.tokenizer.as_deref(), &args.device)?;
    let format = &loaded.format;
    let ids = match (&args.prompt, &args.messages) {
        (Some(p), _) if args.raw => format.encode(p)?,
        (Some(p), _) => format.chat_ids(&[Message {
            role: Role::User,
            content: p.clone(),
        }])?,
        (None, Some(path)) => format.chat_ids(&read_messages(path)?)?,
        (None, None) => bail!("give --prompt or --messages"),
    };
    let model = &loaded.model;
    let context = model.config.max_position_embeddings;
    if ids.len().saturating_add(args.max_new_tokens) > context {
        bail!(
            "the prompt ({} tokens) plus --max-new-tokens ({}) exceed the model's context of {context} tokens; \
             use --max-new-tokens {} or less",
            ids.len(),
            args.max_new_tokens,
            context.saturating_sub(ids.len())
        );
    }
    let settings = GenerationSettings {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop_ids: format.stop_ids().to_vec(),
    };
    let out = generate(model, &[ids], &settings)?.remove(0);
    let text = format.decode(&out.token_ids)?;
    if args.json {
        let v = serde_json::json!({"text": text, "token_ids": out.token_ids, "finish_reason": out.finish_reason});
        println!("{v}");
    } else {
        println!("{text}");
    }
    Ok(())
}
