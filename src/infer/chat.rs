//! Prompts for generation from a model directory: its tokenizer, its chat template (the same
//! `ChatTemplate` the data path trains with), and the tokens that end a reply.

use crate::data::sample::Overflow;
use crate::data::{Message, SampleBuilder};
use anyhow::{anyhow, Context, Result};
use std::path::Path;

/// The tokenizer and template of a model directory.
pub struct ChatFormat {
    builder: SampleBuilder,
    stop_ids: Vec<u32>,
}

impl ChatFormat {
    /// Reads `tokenizer.json`, the chat template of `tokenizer_config.json` (or the built-in
    /// Qwen2.5 ChatML one), and the stop tokens: `<|im_end|>`, `<|endoftext|>` and the
    /// `eos_token_id` of `generation_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::load(dir, dir)
    }

    /// The tokenizer and template of `tokenizer_dir`, the stop tokens of `model_dir`'s
    /// `generation_config.json` besides `<|im_end|>` and `<|endoftext|>`.
    pub fn load(tokenizer_dir: &Path, model_dir: &Path) -> Result<Self> {
        let dir = model_dir;
        let builder = SampleBuilder::from_dir(tokenizer_dir, usize::MAX, Overflow::Truncate)?;
        let mut stop_ids: Vec<u32> = ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| builder.tokenizer().token_to_id(t))
            .collect();
        let gen = dir.join("generation_config.json");
        if gen.is_file() {
            let text = std::fs::read_to_string(&gen).with_context(|| format!("reading {}", gen.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", gen.display()))?;
            let ids: Vec<u64> = match &v["eos_token_id"] {
                serde_json::Value::Number(n) => n.as_u64().into_iter().collect(),
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).collect(),
                _ => vec![],
            };
            stop_ids.extend(ids.into_iter().map(|i| i as u32));
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self { builder, stop_ids })
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Token ids of `messages` rendered with the generation prompt (the assistant turn opened).
    pub fn chat_ids(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self.builder.template.render(messages, true)?;
        self.encode(&text)
    }

    /// Token ids of `text` as it is (no template, no added special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .builder
            .tokenizer()
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// Text of generated ids, special tokens (the stop token) left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.builder
            .tokenizer()
            .decode(ids, true)
            .map_err(|e| anyhow!("decoding: {e}"))
    }
}
