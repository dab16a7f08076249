//! Where the model of a run comes from: a local Hugging Face directory, a Hub repo (through
//! hf-hub and its cache), or a random init from a `config.json`; plus the files every
//! checkpoint carries along (tokenizer files with the chat template, generation config).

use crate::config::{ensure, ConfigError, KeyContext};
use crate::data::hub::fetch_model;
use crate::data::SampleBuilder;
use crate::model::{Qwen2, Qwen2Config};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// `[model]`: exactly one of `path`, `hub`, `init_config`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A local Hugging Face model directory.
    pub path: Option<PathBuf>,
    /// A Hugging Face Hub model repo id, e.g. `Qwen/Qwen2.5-Coder-0.5B`.
    pub hub: Option<String>,
    /// Hub revision (branch, tag or commit) with `hub`.
    pub revision: Option<String>,
    /// A `config.json` to initialise a random model from (smoke runs).
    pub init_config: Option<PathBuf>,
    /// Directory with `tokenizer.json` (+ `tokenizer_config.json`); default: the model directory.
    pub tokenizer: Option<PathBuf>,
    /// Tokens per chunk of the fused output projection + loss (default: automatic).
    pub loss_chunk_tokens: Option<usize>,
}

impl ModelConfig {
    /// Rejects impossible combinations, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sources = [self.path.is_some(), self.hub.is_some(), self.init_config.is_some()];
        ensure(sources.iter().filter(|&&s| s).count() == 1, "model", || {
            "give exactly one of `model.path`, `model.hub`, `model.init_config`".into()
        })?;
        ensure(
            self.init_config.is_none() || self.tokenizer.is_some(),
            "model.tokenizer",
            || "required with `model.init_config` (a random model has no tokenizer)".into(),
        )?;
        ensure(self.revision.is_none() || self.hub.is_some(), "model.revision", || {
            "only meaningful with `model.hub`".into()
        })
    }
}

/// Tokenizer-side files copied into checkpoints when the tokenizer directory has them.
const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
];

/// The model's directory (none for a random init) and the tokenizer's.
pub struct ModelDirs {
    pub model: Option<PathBuf>,
    pub tokenizer: PathBuf,
}

impl ModelDirs {
    /// The `config.json` of the model the run starts from.
    pub fn config_path(&self, m: &ModelConfig) -> Result<PathBuf, ConfigError> {
        match (&self.model, &m.init_config) {
            (Some(d), _) => Ok(d.join("config.json")),
            (None, Some(p)) => Ok(p.clone()),
            (None, None) => Err(ConfigError::new("model", "no model source")),
        }
    }
}

/// Resolves the directories of `[model]`, downloading from the Hub when asked.
pub fn model_dirs(m: &ModelConfig) -> Result<ModelDirs> {
    let model = if let Some(p) = &m.path {
        ensure(p.join("config.json").is_file(), "model.path", || {
            format!(
                "{} has no config.json (not a Hugging Face model directory)",
                p.display()
            )
        })?;
        Some(p.clone())
    } else if let Some(repo) = &m.hub {
        Some(fetch_model(repo, m.revision.as_deref())?)
    } else {
        None
    };
    let tokenizer = match (&m.tokenizer, &model) {
        (Some(t), _) => t.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => return Err(ConfigError::new("model.tokenizer", "required with `model.init_config`").into()),
    };
    if !tokenizer.join("tokenizer.json").is_file() {
        bail!(
            "{}: no tokenizer.json (set `model.tokenizer` to a directory that has one)",
            tokenizer.display()
        );
    }
    Ok(ModelDirs { model, tokenizer })
}

/// The trainable model of a fresh run (a random init draws from `seed`).
pub fn initial_model(m: &ModelConfig, seed: u64, dirs: &ModelDirs, dtype: DType, device: &Device) -> Result<Qwen2> {
    match (&dirs.model, &m.init_config) {
        (Some(dir), _) => Qwen2::load(dir, dtype, device, true),
        (None, Some(path)) => {
            let config = Qwen2Config::from_file(path)
                .with_context(|| path.display().to_string())
                .key_context("model.init_config")?;
            Qwen2::random(config, seed, dtype, device, true)
        }
        (None, None) => Err(ConfigError::new("model", "no model source").into()),
    }
}

/// Checks that the tokenizer fits the model (every token id is a row of the embedding).
pub fn check_vocab(model: &Qwen2, builder: &SampleBuilder) -> Result<()> {
    let n = builder.tokenizer().get_vocab_size(true);
    if n > model.config.vocab_size {
        bail!(
            "the tokenizer has {n} tokens but the model's vocab_size is {}: they do not belong together",
            model.config.vocab_size
        );
    }
    Ok(())
}

/// The tokenizer files to copy into checkpoints; `tokenizer_config.json` gets the chat template
/// the run trains with when it has none, so transformers and vLLM format chats the same way.
pub fn tokenizer_files(dir: &Path, builder: &SampleBuilder) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in TOKENIZER_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let mut bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if name == "tokenizer_config.json" {
            let mut v: Value =
                serde_json::from_slice(&bytes).with_context(|| format!("{}: invalid JSON", path.display()))?;
            if let Some(obj) = v.as_object_mut() {
                if !obj.contains_key("chat_template") {
                    obj.insert(
                        "chat_template".into(),
                        Value::String(builder.template.source().to_string()),
                    );
                    bytes = serde_json::to_vec_pretty(&v)?;
                }
            }
        }
        out.push((name.to_string(), bytes));
    }
    if !out.iter().any(|(n, _)| n == "tokenizer_config.json") {
        let cfg = json!({
            "tokenizer_class": "Qwen2Tokenizer",
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "chat_template": builder.template.source(),
        });
        out.push(("tokenizer_config.json".into(), serde_json::to_vec_pretty(&cfg)?));
    }
    Ok(out)
}

/// `generation_config.json` for the fine-tuned chat model: the source model's, with
/// `<|im_end|>` and `<|endoftext|>` as end-of-sequence tokens.
pub fn generation_config(model_dir: Option<&Path>, builder: &SampleBuilder) -> Result<Vec<u8>> {
    let mut v = match model_dir
        .map(|d| d.join("generation_config.json"))
        .filter(|p| p.is_file())
    {
        Some(p) => {
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", p.display()))?
        }
        None => json!({}),
    };
    let id = |t: &str| builder.tokenizer().token_to_id(t);
    let eos: Vec<u32> = [id("<|im_end|>"), id("<|endoftext|>")].into_iter().flatten().collect();
    if let Some(obj) = v.as_object_mut() {
        if !eos.is_empty() {
            obj.insert("eos_token_id".into(), json!(eos));
        }
        if let Some(pad) = id("<|endoftext|>") {
            obj.insert("pad_token_id".into(), json!(pad));
            obj.entry("bos_token_id").or_insert(json!(pad));
        }
    }
    Ok(serde_json::to_vec_pretty(&v)?)
}
