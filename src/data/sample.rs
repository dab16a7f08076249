//! Turning a validated record into a training sample: token ids plus, per token, whether it is
//! trained on (it overlaps the supervised text of an assistant turn). Which text that is, and
//! how many samples a conversation gives, is the builder's `MaskPolicy` (`data.mask`).
//!
//! The ids are those of encoding the rendered text without added special tokens, exactly what
//! transformers' `apply_chat_template(..., tokenize=True)` returns for the same template and
//! tokenizer.

use super::encoder::Encoder;
use super::mask_policy::MaskPolicy;
use super::record::Record;
use super::template::ChatTemplate;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

/// A tokenised conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub id: Option<String>,
    pub ids: Vec<u32>,
    /// `mask[t]`: token t is a training target.
    pub mask: Vec<bool>,
}

impl Sample {
    pub fn supervised_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }
}

/// What to do with samples longer than `max_seq_len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Keep the first `max_seq_len` tokens.
    Truncate,
    /// Drop the sample.
    Drop,
}

/// Why a record produced no sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Longer than `max_seq_len` with `Overflow::Drop`.
    TooLong,
    /// No supervised token left (after truncation).
    NoSupervisedTokens,
}

pub struct SampleBuilder {
    encoder: Encoder,
    pub template: ChatTemplate,
    pub max_seq_len: usize,
    pub overflow: Overflow,
    pub mask: MaskPolicy,
}

/// A conversation rendered and tokenised, before the length rules: its text, token ids, each
/// token's byte range in the text, and whether it is trained on.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub text: String,
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
    pub mask: Vec<bool>,
}

impl SampleBuilder {
    pub fn new(tokenizer: Tokenizer, template: ChatTemplate, max_seq_len: usize, overflow: Overflow) -> Self {
        Self {
            encoder: Encoder::new(tokenizer),
            template,
            max_seq_len,
            overflow,
            mask: MaskPolicy::Auto,
        }
    }

    /// The same builder with mask policy `mask`.
    pub fn with_mask(mut self, mask: MaskPolicy) -> Self {
        self.mask = mask;
        self
    }

    /// The tokenizer (fixed for the builder's life: its per-thread copies encode).
    pub fn tokenizer(&self) -> &Tokenizer {
        self.encoder.tokenizer()
    }

    /// A builder from a model or tokenizer directory: `tokenizer.json`, and the chat template of
    /// `tokenizer_config.json` when it has one (else the built-in Qwen2.5 ChatML template with
    /// its default system turn).
    pub fn from_dir(dir: &std::path::Path, max_seq_len: usize, overflow: Overflow) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| anyhow!("loading {}: {e}", tok_path.display()))?;
        let cfg = dir.join("tokenizer_config.json");
        let template = if cfg.exists() {
            ChatTemplate::from_tokenizer_config(&cfg)?
        } else {
            None
        };
        let template = match template {
            Some(t) => t,
            None => ChatTemplate::qwen25_chatml(Some(super::template::QWEN25_DEFAULT_SYSTEM))?,
        };
        Ok(Self::new(tokenizer, template, max_seq_len, overflow))
    }

    /// How many samples `record` gives (more than one only under `per_turn`).
    pub fn parts(&self, record: &Record) -> usize {
        self.mask.parts(&record.messages)
    }

    /// Sample `part` of `record` rendered and tokenised, before the length rules.
    pub fn render(&self, record: &Record, part: usize) -> Result<Rendered> {
        let (text, spans) = self.mask.supervised(&self.template, &record.messages, part)?;
        let enc = self.encoder.encode(&text)?;
        let ids = enc.get_ids().to_vec();
        let offsets = enc.get_offsets().to_vec();
        if offsets.len() != ids.len() {
            bail!("tokenizer returned {} offsets for {} tokens", offsets.len(), ids.len());
        }
        let mask = offsets
            .iter()
            .map(|&(a, b)| spans.iter().any(|s| a < s.end && b > s.start))
            .collect();
        Ok(Rendered {
            text,
            ids,
            offsets,
            mask,
        })
    }

    /// Every sample of `record`, in order; `Err(Dropped)` inside says why one was skipped.
    pub fn build_all(&self, record: &Record) -> Result<Vec<std::result::Result<Sample, Dropped>>> {
        (0..self.parts(record)).map(|p| self.build_part(record, p)).collect()
    }

    /// Sample `part` of `record` rendered, tokenised and masked, with the length rules applied;
    /// `Err(Dropped)` inside `Ok` says why it was skipped.
    pub fn build_part(&self, record: &Record, part: usize) -> Result<std::result::Result<Sample, Dropped>> {
        let Rendered { ids, mask, .. } = self.render(record, part)?;
        Ok(self.fit(record, ids, mask))
    }

    /// The length rules applied to a rendered sample of `record`.
    pub fn fit(&self, record: &Record, mut ids: Vec<u32>, mut mask: Vec<bool>) -> std::result::Result<Sample, Dropped> {
        if ids.len() > self.max_seq_len {
            match self.overflow {
                Overflow::Drop => return Err(Dropped::TooLong),
                Overflow::Truncate => {
                    ids.truncate(self.max_seq_len);
                    mask.truncate(self.max_seq_len);
                }
            }
        }
        if !mask.iter().any(|&m| m) {
            return Err(Dropped::NoSupervisedTokens);
        }
        Ok(Sample {
            id: record.id.clone(),
            ids,
            mask,
        })
    }
}
