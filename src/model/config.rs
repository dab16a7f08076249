//! The Hugging Face `config.json` of a Qwen2 model: parsing, validation and writing back.
//!
//! Every field Qwen2.5-Coder 0.5B–32B uses is read; fields syncoder does not interpret are kept
//! verbatim so that a saved config round-trips. Settings that would change the math and that
//! syncoder does not implement (RoPE scaling, sliding-window attention, dropout, another
//! activation) are rejected with an error naming the field, never silently ignored.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

fn default_rope_theta() -> Option<f64> {
    None
}
fn default_eps() -> f64 {
    1e-6
}
fn default_init_range() -> f64 {
    0.02
}
fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    32768
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Qwen2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no grouping) when absent, as in transformers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// transformers < 5 writes `rope_theta`; 5.x writes `rope_parameters.rope_theta`.
    #[serde(default = "default_rope_theta", skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<Value>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Everything else (`bos_token_id`, `eos_token_id`, `sliding_window`, `max_window_layers`,
    /// `torch_dtype`, `architectures`, `transformers_version`, ...), kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Qwen2Config {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading model config {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("in model config {}", path.display()))
    }

    /// Parses and validates the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text).context("not a valid Qwen2 config.json")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The RoPE base frequency, wherever the config keeps it (default 10000, as transformers).
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }

    /// Checks the config describes a model syncoder computes exactly.
    pub fn validate(&self) -> Result<()> {
        if let Some(mt) = &self.model_type {
            if mt != "qwen2" {
                bail!("model_type: expected \"qwen2\", got {mt:?} (syncoder implements the Qwen2 architecture)");
            }
        }
        for (key, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_kv_heads()),
        ] {
            if value == 0 {
                bail!("{key}: must be positive");
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            bail!(
                "num_key_value_heads: {} does not divide num_attention_heads {}",
                self.num_kv_heads(),
                self.num_attention_heads
            );
        }
        if !self.head_dim().is_multiple_of(2) || self.head_dim() == 0 {
            bail!(
                "head_dim: must be even and positive for rotary embeddings, got {}",
                self.head_dim()
            );
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size: {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.hidden_act != "silu" {
            bail!("hidden_act: only \"silu\" is supported, got {:?}", self.hidden_act);
        }
        if self.use_sliding_window {
            bail!("use_sliding_window: sliding-window attention is not supported; set it to false");
        }
        if self.attention_dropout != 0.0 {
            bail!(
                "attention_dropout: only 0.0 is supported, got {}",
                self.attention_dropout
            );
        }
        if let Some(types) = self.extra.get("layer_types").and_then(Value::as_array) {
            if let Some((i, t)) = types
                .iter()
                .enumerate()
                .find(|(_, t)| t.as_str() != Some("full_attention"))
            {
                bail!("layer_types[{i}]: only \"full_attention\" layers are supported, got {t}");
            }
        }
        check_rope_kind("rope_scaling", self.rope_scaling.as_ref())?;
        check_rope_kind("rope_parameters", self.rope_parameters.as_ref())?;
        if self.rope_theta().is_nan() || self.rope_theta() <= 0.0 {
            bail!("rope_theta: must be positive, got {}", self.rope_theta());
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            bail!("rms_norm_eps: must be positive, got {}", self.rms_norm_eps);
        }
        Ok(())
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (q, kv) = (
            self.num_attention_heads * self.head_dim(),
            self.num_kv_heads() * self.head_dim(),
        );
        let layer = h + (h * q + q) + 2 * (h * kv + kv) + q * h + h + 3 * h * i;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers * layer + h + head
    }

    /// Parameters that take part in a matmul per token: all of them but an untied input
    /// embedding, which is a lookup (a tied one is the LM head's matmul, counted once).
    pub fn matmul_parameters(&self) -> usize {
        let lookup = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * self.hidden_size
        };
        self.num_parameters() - lookup
    }

    /// FLOPs per trained token at sequence length `seq_len`: 6·N for the parameters' matmuls
    /// (forward + backward; N = `matmul_parameters`) plus 12·L·d·T for attention scores and
    /// values (the PaLM appendix formula; MFU divides tokens/s times this by the card's peak).
    pub fn flops_per_token(&self, seq_len: usize) -> f64 {
        let n = self.matmul_parameters() as f64;
        let d = (self.num_attention_heads * self.head_dim()) as f64;
        6.0 * n + 12.0 * self.num_hidden_layers as f64 * d * seq_len as f64
    }

    /// The config as written into a saved model: `model_type`, `architectures` and the dtype
    /// fields are set so transformers loads the weights in the dtype they were saved in.
    pub fn to_saved_json(&self, saved_dtype: &str) -> Result<String> {
        let mut cfg = self.clone();
        cfg.model_type = Some("qwen2".into());
        cfg.extra
            .entry("architectures")
            .or_insert_with(|| Value::from(vec!["Qwen2ForCausalLM"]));
        cfg.extra.insert("torch_dtype".into(), Value::from(saved_dtype));
        if cfg.extra.contains_key("dtype") {
            cfg.extra.insert("dtype".into(), Value::from(saved_dtype));
        }
        Ok(serde_json::to_string_pretty(&cfg)?)
    }
}

/// RoPE variants other than the plain one change the math: reject them by name. A section is
/// accepted only if it says `"rope_type": "default"` (or nothing) and holds no other setting
/// than `rope_theta`.
fn check_rope_kind(key: &str, value: Option<&Value>) -> Result<()> {
    let Some(value) = value else { return Ok(()) };
    if value.is_null() {
        return Ok(());
    }
    let Some(obj) = value.as_object() else {
        bail!("{key}: expected an object or null, got {value}");
    };
    for (k, v) in obj {
        match k.as_str() {
            "rope_type" | "type" => {
                if v.as_str() != Some("default") {
                    bail!("{key}.{k}: RoPE scaling {v} is not supported (only the default rotary embedding is)");
                }
            }
            "rope_theta" => {}
            other => {
                bail!("{key}.{other}: RoPE scaling settings are not supported (only the default rotary embedding is)")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_per_token_follows_6n_plus_12ldt() {
        let cfg = Qwen2Config::from_file(std::path::Path::new("configs/models/qwen2.5-coder-0.5b.json")).unwrap();
        let n = cfg.num_parameters() as f64;
        // Qwen2.5-0.5B: 24 layers, 14 heads x 64 = 896 attention width.
        let want = 6.0 * n + 12.0 * 24.0 * 896.0 * 4096.0;
        assert_eq!(cfg.flops_per_token(4096), want);
        assert!((n - 494.0e6).abs() < 1.0e6, "{n}");
        // Untied: the input embedding is a lookup, not a matmul.
        let mut untied = cfg.clone();
        untied.tie_word_embeddings = false;
        let (v, h) = (cfg.vocab_size as f64, cfg.hidden_size as f64);
        assert_eq!(untied.num_parameters() as f64, n + v * h);
        assert_eq!(untied.flops_per_token(4096), want);
    }
}
