//! The synthesis config (`syncoder synth --config FILE`): a TOML file like a run config, every
//! section owning its keys; unknown keys and impossible values are errors naming the key.

use crate::arena::judge_settings::JudgeSettings;
use crate::config::{ensure, ConfigError};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    pub input: InputConfig,
    #[serde(default)]
    pub recall: RecallConfig,
    pub generator: EndpointConfig,
    /// The scorer; default: the generator's endpoint and model.
    #[serde(default)]
    pub scorer: Option<EndpointConfig>,
    #[serde(default)]
    pub respond: RespondConfig,
    #[serde(default)]
    pub validate: ValidateConfig,
    #[serde(default)]
    pub dedup: DedupConfig,
    #[serde(default)]
    pub decontam: DecontamConfig,
    #[serde(default)]
    pub prompts: PromptFiles,
    pub output: OutputConfig,
}

/// `[input]`: the web text.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// JSONL(.zst/.gz) or Parquet files, directories, globs or `hf://datasets/...`.
    pub sources: Vec<PathBuf>,
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// The field naming a document (default: FILE:LINE).
    #[serde(default)]
    pub id_field: Option<String>,
    #[serde(default)]
    pub url_field: Option<String>,
    /// Documents read at most (0: all).
    #[serde(default)]
    pub max_docs: u64,
    /// A page is cut to this many characters before it is sent.
    #[serde(default = "default_page_chars")]
    pub max_page_chars: usize,
}

fn default_text_field() -> String {
    "text".into()
}
fn default_page_chars() -> usize {
    12_000
}

/// `[recall]`: the code-relatedness filter (`recall.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecallConfig {
    pub min_chars: usize,
    /// Signals needed (a code fence counts 3, each distinct keyword 1, symbol-dense lines 1
    /// per 5).
    pub min_score: u32,
}

impl Default for RecallConfig {
    fn default() -> Self {
        Self {
            min_chars: 200,
            min_score: 4,
        }
    }
}

/// An OpenAI-compatible endpoint (`[generator]`, `[scorer]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub url: String,
    pub model: String,
    /// Environment variable with the API key ("" or unset: none).
    #[serde(default)]
    pub key_env: String,
    /// Documents processed at once (generator) — each with its requests in turn.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    #[serde(default = "default_backoff")]
    pub backoff_s: f64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Temperature of the question (generator) or of the score (scorer).
    #[serde(default)]
    pub temperature: f64,
    /// Prices for the cost in the summary (0: not reported).
    #[serde(default)]
    pub price_input_per_mtok: f64,
    #[serde(default)]
    pub price_output_per_mtok: f64,
}

fn default_concurrency() -> usize {
    8
}
fn default_timeout() -> u64 {
    300
}
fn default_retries() -> u32 {
    4
}
fn default_backoff() -> f64 {
    1.0
}
fn default_max_tokens() -> u32 {
    2048
}

impl EndpointConfig {
    /// The judge client's settings for this endpoint.
    pub fn settings(&self) -> JudgeSettings {
        let mut s = JudgeSettings::new(self.url.clone(), self.model.clone());
        s.key_env = self.key_env.clone();
        s.concurrency = self.concurrency;
        s.timeout_s = self.timeout_s;
        s.max_retries = self.max_retries;
        s.backoff_s = self.backoff_s;
        s.max_tokens = Some(self.max_tokens);
        s.temperature = Some(self.temperature);
        s
    }

    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        ensure(!self.url.trim().is_empty(), &format!("{section}.url"), || {
            "is empty".into()
        })?;
        ensure(!self.model.trim().is_empty(), &format!("{section}.model"), || {
            "is empty".into()
        })?;
        ensure(self.concurrency > 0, &format!("{section}.concurrency"), || {
            "must be at least 1".into()
        })?;
        ensure(self.max_tokens > 0, &format!("{section}.max_tokens"), || {
            "must be at least 1".into()
        })?;
        ensure(
            self.price_input_per_mtok >= 0.0 && self.price_output_per_mtok >= 0.0,
            &format!("{section}.price_*"),
            || "prices cannot be negative".into(),
        )
    }
}

/// `[respond]`: candidate answers per question.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondConfig {
    pub candidates: usize,
    pub temperature: f64,
    pub top_p: f64,
}

impl Default for RespondConfig {
    fn default() -> Self {
        Self {
            candidates: 3,
            temperature: 0.8,
            top_p: 0.95,
        }
    }
}

/// `[validate]`: which candidate is kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateConfig {
    /// Lowest score (1–10) kept.
    pub min_score: u32,
    /// Run the candidate against generated tests where the language can be executed.
    pub execute: bool,
    pub run_seconds: u64,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        Self {
            min_score: 7,
            execute: true,
            run_seconds: 10,
        }
    }
}

/// `[dedup]`: MinHash/LSH near-duplicate removal (`minhash.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    pub num_perm: usize,
    pub bands: usize,
    pub shingle_words: usize,
    /// Earlier outputs (synth output directories or shard files) the new records must not
    /// duplicate.
    pub against: Vec<PathBuf>,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            num_perm: 128,
            bands: 16,
            shingle_words: 5,
            against: vec![],
        }
    }
}

/// `[decontam]`: benchmark question files (JSONL, as `syncoder data decontam --against` reads).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecontamConfig {
    pub against: Vec<PathBuf>,
    pub ngram: usize,
}

impl Default for DecontamConfig {
    fn default() -> Self {
        Self {
            against: vec![],
            ngram: crate::data::decontam::NGRAM,
        }
    }
}

/// `[prompts]`: files replacing the built-in prompts (`prompts.rs`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptFiles {
    pub instruct: Option<PathBuf>,
    pub respond: Option<PathBuf>,
    pub score: Option<PathBuf>,
    pub tests: Option<PathBuf>,
}

/// `[output]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub dir: PathBuf,
    #[serde(default = "default_per_shard")]
    pub records_per_shard: usize,
    /// Seeds every sampled request (`seed` sent to the endpoint).
    #[serde(default)]
    pub seed: u64,
}

fn default_per_shard() -> usize {
    100_000
}

impl SynthConfig {
    /// Reads and checks `path`; relative paths in it are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut cfg: SynthConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() && !p.to_string_lossy().starts_with("hf://") {
                *p = base.join(&*p);
            }
        };
        cfg.input.sources.iter_mut().for_each(rebase);
        cfg.dedup.against.iter_mut().for_each(rebase);
        cfg.decontam.against.iter_mut().for_each(rebase);
        for p in [
            &mut cfg.prompts.instruct,
            &mut cfg.prompts.respond,
            &mut cfg.prompts.score,
            &mut cfg.prompts.tests,
        ]
        .into_iter()
        .flatten()
        {
            rebase(p);
        }
        rebase(&mut cfg.output.dir);
        cfg.validate().with_context(|| format!("in {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(!self.input.sources.is_empty(), "input.sources", || "is empty".into())?;
        ensure(!self.input.text_field.is_empty(), "input.text_field", || {
            "is empty".into()
        })?;
        ensure(self.input.max_page_chars > 0, "input.max_page_chars", || {
            "must be at least 1".into()
        })?;
        self.generator.validate("generator")?;
        if let Some(s) = &self.scorer {
            s.validate("scorer")?;
        }
        ensure(self.respond.candidates > 0, "respond.candidates", || {
            "must be at least 1".into()
        })?;
        ensure(
            (0.0..=2.0).contains(&self.respond.temperature) && self.respond.top_p > 0.0 && self.respond.top_p <= 1.0,
            "respond.temperature",
            || "temperature must be in [0, 2] and top_p in (0, 1]".into(),
        )?;
        ensure(
            (1..=10).contains(&self.validate.min_score),
            "validate.min_score",
            || "must be in 1..=10".into(),
        )?;
        ensure(
            self.dedup.bands > 0
                && self.dedup.num_perm >= self.dedup.bands
                && self.dedup.num_perm.is_multiple_of(self.dedup.bands),
            "dedup.bands",
            || format!("must be at least 1 and divide dedup.num_perm ({})", self.dedup.num_perm),
        )?;
        ensure(self.dedup.shingle_words > 0, "dedup.shingle_words", || {
            "must be at least 1".into()
        })?;
        ensure(self.decontam.ngram > 0, "decontam.ngram", || {
            "must be at least 1".into()
        })?;
        ensure(self.output.records_per_shard > 0, "output.records_per_shard", || {
            "must be at least 1".into()
        })
    }

    /// The scorer's endpoint (the generator's when not set).
    pub fn scorer(&self) -> &EndpointConfig {
        self.scorer.as_ref().unwrap_or(&self.generator)
    }
}
