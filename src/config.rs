//! The run config of `syncoder train`: a TOML file (documented key by key in `docs/config.md`),
//! optionally overridden by `--set section.key=value`, deserialised strictly (unknown keys and
//! wrong types are errors naming the key's path) and checked for impossible values.
//!
//! The part of the config that changes the numbers of a run (`RunConfig::math`) is hashed into
//! every checkpoint, so a resume with a different recipe is caught.

use crate::data::loader::OnBadRecord;
use crate::data::sample::Overflow;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The whole run config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub run: RunSection,
    pub model: ModelSection,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub optim: OptimSection,
    pub batch: BatchSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub eval: Option<EvalSection>,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub guards: GuardSection,
    /// CodeArena evaluation of checkpoints during the run.
    #[serde(default)]
    pub arena: Option<ArenaSection>,
    /// `[[stage]]` entries, run in order.
    #[serde(rename = "stage")]
    pub stages: Vec<StageSection>,
}

/// `[run]`: where the run lives and what it runs on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Name of the run directory under `output_dir` (`--run-name` overrides it).
    pub name: String,
    pub output_dir: PathBuf,
    /// Seed of the model init and of the data order.
    pub seed: u64,
    /// `cpu` or `cuda` / `cuda:N`.
    pub device: String,
    /// Parameter dtype: `f32`, `bf16` or `f16` (master weights and moments are always f32).
    pub dtype: String,
    /// Data-parallel processes (1: single process).
    pub world_size: usize,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            name: "run".into(),
            output_dir: "checkpoints".into(),
            seed: 0,
            device: "cpu".into(),
            dtype: "f32".into(),
            world_size: 1,
        }
    }
}

/// `[model]`: exactly one of `path`, `hub`, `init_config`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
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

/// `[data]`: tokenisation, packing and the data order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Tokens per packed row.
    pub seq_len: usize,
    /// Longest sample (default: `seq_len`).
    pub max_seq_len: Option<usize>,
    /// `truncate` or `drop` samples longer than `max_seq_len`.
    pub overflow: Overflow,
    /// `best_fit` or `greedy`.
    pub pack: String,
    /// Samples considered together by `best_fit`.
    pub pack_window: usize,
    pub shuffle_buffer: usize,
    pub shuffle_shards: bool,
    /// `fail` or `skip` on a malformed record.
    pub on_bad_record: OnBadRecord,
    /// Batches prepared ahead on a background thread.
    pub prefetch: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            seq_len: 2048,
            max_seq_len: None,
            overflow: Overflow::Truncate,
            pack: "best_fit".into(),
            pack_window: 64,
            shuffle_buffer: 10_000,
            shuffle_shards: true,
            on_bad_record: OnBadRecord::Fail,
            prefetch: 4,
        }
    }
}

/// Shape of the learning rate after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Cosine,
    Linear,
    Constant,
}

/// `[optim]`: AdamW and the default LR schedule of every stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    /// Peak learning rate.
    pub lr: f64,
    /// The schedule decays to `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub warmup_steps: u64,
    pub schedule: ScheduleKind,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Also decay norm weights and biases (default: matrices and embeddings only).
    pub decay_norms_and_biases: bool,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            min_lr_ratio: 0.1,
            warmup_steps: 0,
            schedule: ScheduleKind::Cosine,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_norms_and_biases: false,
            max_grad_norm: 1.0,
        }
    }
}

/// `[batch]`: the micro-batch and the global batch of one optimizer step (exactly one of
/// `global_rows` and `global_tokens`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    /// Packed rows per forward/backward pass on one process.
    pub micro_batch_rows: usize,
    /// Packed rows (sequences of `data.seq_len` tokens) per optimizer step over all processes.
    pub global_rows: Option<usize>,
    /// Tokens per optimizer step over all processes (a multiple of micro-batch tokens).
    pub global_tokens: Option<usize>,
}

/// `[checkpoint]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Save every this many optimizer steps (0: only at the end).
    pub every_steps: u64,
    /// Step directories kept (the oldest are removed).
    pub keep_last: usize,
    /// Shard `model.safetensors` above this many bytes.
    pub max_shard_bytes: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self {
            every_steps: 500,
            keep_last: 3,
            max_shard_bytes: crate::model::weights::DEFAULT_MAX_SHARD_BYTES,
        }
    }
}

/// `[eval]`: validation loss on a held-out source.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub data: Vec<PathBuf>,
    /// Evaluate every this many optimizer steps (and at the end).
    pub every_steps: u64,
    /// Evaluate at most this many packed rows (default: the whole source).
    pub max_rows: Option<usize>,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressStyle {
    /// A progress bar on a terminal, log lines otherwise.
    Auto,
    Bar,
    Lines,
}

/// `[arena]`: CodeArena evaluation of checkpoints (answers, an LLM judge, a report per step).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArenaSection {
    /// CodeArena-format JSONL or `hf://datasets/CSJianYang/CodeArena`.
    pub questions: String,
    /// Task type → main category map (CodeArena's `tasktype_to_levels.json`).
    #[serde(default)]
    pub categories: Option<PathBuf>,
    /// Base URL of an OpenAI-compatible API.
    pub judge_url: String,
    pub judge_model: String,
    #[serde(default = "default_key_env")]
    pub judge_key_env: String,
    #[serde(default)]
    pub judge_prompt: Option<PathBuf>,
    /// `base` (the run's starting model) and/or `baseline:NAME` (stored answers).
    #[serde(default = "default_opponents")]
    pub opponents: Vec<String>,
    /// Evaluate every this many checkpoints (0: only at the end).
    #[serde(default)]
    pub every_checkpoints: u64,
    #[serde(default = "yes")]
    pub at_end: bool,
    #[serde(default = "default_answer_tokens")]
    pub max_new_tokens: usize,
    #[serde(default = "default_eight")]
    pub batch_size: usize,
    #[serde(default = "default_eight")]
    pub concurrency: usize,
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

fn default_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_opponents() -> Vec<String> {
    vec!["baseline:gpt-4-turbo-2024-04-09".into()]
}
fn yes() -> bool {
    true
}
fn default_answer_tokens() -> usize {
    1024
}
fn default_eight() -> usize {
    8
}
fn default_timeout() -> u64 {
    300
}
fn default_retries() -> u32 {
    6
}

/// `[log]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Print a log line every this many steps (log-line mode).
    pub every_steps: u64,
    pub progress: ProgressStyle,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            every_steps: 10,
            progress: ProgressStyle::Auto,
        }
    }
}

/// `[guards]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSection {
    /// Stop after this many optimizer steps in a row with a non-finite loss or gradient.
    pub max_consecutive_nonfinite: u64,
}

impl Default for GuardSection {
    fn default() -> Self {
        Self {
            max_consecutive_nonfinite: 5,
        }
    }
}

/// One `[[stage]]`: its data and length, and optionally its own LR schedule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSection {
    pub name: String,
    /// Shard files, directories, globs, prepared-shard directories or `hf://datasets/...`.
    pub data: Vec<PathBuf>,
    /// Optimizer steps of the stage (with `epochs`: whichever ends first).
    pub steps: Option<u64>,
    /// Passes over the stage's data.
    pub epochs: Option<usize>,
    pub lr: Option<f64>,
    pub min_lr_ratio: Option<f64>,
    pub warmup_steps: Option<u64>,
    pub schedule: Option<ScheduleKind>,
}

/// The LR schedule of a stage, with the defaults of `[optim]` filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSchedule {
    pub lr: f64,
    pub min_lr_ratio: f64,
    pub warmup_steps: u64,
    pub kind: ScheduleKind,
}

impl RunConfig {
    /// Reads `path`, applies `--set` overrides, deserialises and validates.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text, sets).with_context(|| format!("config {}", path.display()))
    }

    /// Parses TOML text with `--set` overrides.
    pub fn parse(text: &str, sets: &[String]) -> Result<Self> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| anyhow!("invalid TOML: {e}"))?;
        for set in sets {
            apply_set(&mut value, set)?;
        }
        let cfg: RunConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            anyhow!("key `{path}`: {}", e.into_inner().message())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let sources = [m.path.is_some(), m.hub.is_some(), m.init_config.is_some()];
        if sources.iter().filter(|&&s| s).count() != 1 {
            bail!("key `model`: give exactly one of `model.path`, `model.hub`, `model.init_config`");
        }
        if m.init_config.is_some() && m.tokenizer.is_none() {
            bail!("key `model.tokenizer`: required with `model.init_config` (a random model has no tokenizer)");
        }
        if m.revision.is_some() && m.hub.is_none() {
            bail!("key `model.revision`: only meaningful with `model.hub`");
        }
        match self.run.dtype.as_str() {
            "f32" | "bf16" | "f16" => {}
            other => bail!("key `run.dtype`: {other:?} is not one of f32, bf16, f16"),
        }
        if self.run.device != "cpu" && !self.run.device.starts_with("cuda") {
            bail!(
                "key `run.device`: {:?} is not `cpu`, `cuda` or `cuda:N`",
                self.run.device
            );
        }
        if self.run.world_size == 0 {
            bail!("key `run.world_size`: must be at least 1");
        }
        if self.run.name.is_empty() || self.run.name.contains('/') {
            bail!("key `run.name`: {:?} is not a valid directory name", self.run.name);
        }
        let d = &self.data;
        if d.seq_len < 2 {
            bail!("key `data.seq_len`: must be at least 2");
        }
        if let Some(max) = d.max_seq_len {
            if max == 0 || max > d.seq_len {
                bail!(
                    "key `data.max_seq_len`: {max} must be in 1..=data.seq_len ({})",
                    d.seq_len
                );
            }
        }
        if !matches!(d.pack.as_str(), "best_fit" | "greedy") {
            bail!("key `data.pack`: {:?} is not `best_fit` or `greedy`", d.pack);
        }
        if d.pack == "best_fit" && d.pack_window == 0 {
            bail!("key `data.pack_window`: must be at least 1");
        }
        if d.shuffle_buffer == 0 {
            bail!("key `data.shuffle_buffer`: must be at least 1 (1 means no shuffling)");
        }
        let o = &self.optim;
        check_lr("optim.lr", o.lr)?;
        check_ratio("optim.min_lr_ratio", o.min_lr_ratio)?;
        for (key, b) in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&b) {
                bail!("key `{key}`: {b} must be in [0, 1)");
            }
        }
        if o.eps <= 0.0 || !o.eps.is_finite() {
            bail!("key `optim.eps`: must be positive");
        }
        if o.weight_decay < 0.0 || !o.weight_decay.is_finite() {
            bail!("key `optim.weight_decay`: must be non-negative");
        }
        if o.max_grad_norm < 0.0 || !o.max_grad_norm.is_finite() {
            bail!("key `optim.max_grad_norm`: must be non-negative (0: no clipping)");
        }
        self.accumulation_steps()?;
        if self.checkpoint.keep_last == 0 {
            bail!("key `checkpoint.keep_last`: must be at least 1");
        }
        if let Some(e) = &self.eval {
            if e.data.is_empty() {
                bail!("key `eval.data`: give at least one source");
            }
            if e.every_steps == 0 {
                bail!("key `eval.every_steps`: must be at least 1");
            }
        }
        if let Some(a) = &self.arena {
            if a.opponents.is_empty() {
                bail!("key `arena.opponents`: give at least one of \"base\", \"baseline:NAME\"");
            }
            for o in &a.opponents {
                if o != "base" && o.strip_prefix("baseline:").is_none_or(|b| b.is_empty()) {
                    bail!("key `arena.opponents`: {o:?} is not \"base\" or \"baseline:NAME\"");
                }
            }
            if !a.at_end && a.every_checkpoints == 0 {
                bail!("key `arena.every_checkpoints`: with arena.at_end = false, give how often to evaluate");
            }
        }
        if self.log.every_steps == 0 {
            bail!("key `log.every_steps`: must be at least 1");
        }
        if self.guards.max_consecutive_nonfinite == 0 {
            bail!("key `guards.max_consecutive_nonfinite`: must be at least 1");
        }
        if self.stages.is_empty() {
            bail!("key `stage`: give at least one [[stage]]");
        }
        for (i, s) in self.stages.iter().enumerate() {
            let key = |k: &str| format!("stage[{i}].{k}");
            if s.data.is_empty() {
                bail!("key `{}`: give at least one source", key("data"));
            }
            if s.steps.is_none() && s.epochs.is_none() {
                bail!("key `{}`: give `steps` or `epochs` (or both)", key("steps"));
            }
            if s.steps == Some(0) {
                bail!("key `{}`: must be at least 1", key("steps"));
            }
            if s.epochs == Some(0) {
                bail!("key `{}`: must be at least 1", key("epochs"));
            }
            if let Some(lr) = s.lr {
                check_lr(&key("lr"), lr)?;
            }
            if let Some(r) = s.min_lr_ratio {
                check_ratio(&key("min_lr_ratio"), r)?;
            }
        }
        Ok(())
    }

    /// Micro-batches per optimizer step on one process.
    pub fn accumulation_steps(&self) -> Result<usize> {
        let b = &self.batch;
        if b.micro_batch_rows == 0 {
            bail!("key `batch.micro_batch_rows`: must be at least 1");
        }
        let per_pass = b.micro_batch_rows * self.run.world_size;
        let rows = match (b.global_rows, b.global_tokens) {
            (Some(r), None) => {
                if r == 0 || r % per_pass != 0 {
                    bail!(
                        "key `batch.global_rows`: {r} is not a positive multiple of batch.micro_batch_rows ({}) \
                         × run.world_size ({})",
                        b.micro_batch_rows,
                        self.run.world_size
                    );
                }
                r
            }
            (None, Some(t)) => {
                let per_pass_tokens = per_pass * self.data.seq_len;
                if t == 0 || t % per_pass_tokens != 0 {
                    bail!(
                        "key `batch.global_tokens`: {t} is not a positive multiple of batch.micro_batch_rows ({}) \
                         × data.seq_len ({}) × run.world_size ({})",
                        b.micro_batch_rows,
                        self.data.seq_len,
                        self.run.world_size
                    );
                }
                t / self.data.seq_len
            }
            _ => bail!("key `batch`: give exactly one of `batch.global_rows` and `batch.global_tokens`"),
        };
        Ok(rows / per_pass)
    }

    /// Rows per optimizer step over all processes.
    pub fn global_rows(&self) -> Result<usize> {
        Ok(self.accumulation_steps()? * self.batch.micro_batch_rows * self.run.world_size)
    }

    /// The LR schedule of stage `i`.
    pub fn stage_schedule(&self, i: usize) -> StageSchedule {
        let s = &self.stages[i];
        StageSchedule {
            lr: s.lr.unwrap_or(self.optim.lr),
            min_lr_ratio: s.min_lr_ratio.unwrap_or(self.optim.min_lr_ratio),
            warmup_steps: s.warmup_steps.unwrap_or(self.optim.warmup_steps),
            kind: s.schedule.unwrap_or(self.optim.schedule),
        }
    }

    /// The keys that change the numbers of the run (what a resume must keep unchanged); where
    /// the run is written, how often it is saved, logged or evaluated, and the device are not.
    pub fn math(&self) -> Json {
        let mut v = serde_json::to_value(self).expect("the config serialises");
        let obj = v.as_object_mut().expect("the config is a table");
        for key in ["checkpoint", "eval", "log", "guards", "arena"] {
            obj.remove(key);
        }
        if let Some(run) = obj.get_mut("run").and_then(|r| r.as_object_mut()) {
            for key in ["name", "output_dir", "device"] {
                run.remove(key);
            }
        }
        if let Some(data) = obj.get_mut("data").and_then(|r| r.as_object_mut()) {
            data.remove("prefetch");
        }
        v
    }

    /// SHA-256 of `math()` (keys sorted).
    pub fn math_hash(&self) -> String {
        let text = serde_json::to_string(&self.math()).expect("JSON serialises");
        format!("{:x}", Sha256::digest(text.as_bytes()))
    }

    /// The config as TOML (written to the run directory).
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

fn check_lr(key: &str, lr: f64) -> Result<()> {
    if !(lr > 0.0 && lr.is_finite()) {
        bail!("key `{key}`: {lr} must be a positive learning rate");
    }
    Ok(())
}

fn check_ratio(key: &str, r: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&r) {
        bail!("key `{key}`: {r} must be in [0, 1]");
    }
    Ok(())
}

/// Applies one `section.key=value` override (`value` in TOML syntax; a bare word is a string;
/// a numeric path segment indexes an array, e.g. `stage.0.lr=1e-4`).
fn apply_set(root: &mut toml::Value, set: &str) -> Result<()> {
    let (path, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {set:?}: expected section.key=value"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = path.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set {set:?}: empty key in {path:?}");
    }
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    t.insert(part.to_string(), value);
                    return Ok(());
                }
                t.entry(part.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            toml::Value::Array(a) => {
                let idx: usize = part
                    .parse()
                    .map_err(|_| anyhow!("--set {set:?}: {part:?} is not an index into an array"))?;
                let len = a.len();
                let slot = a
                    .get_mut(idx)
                    .ok_or_else(|| anyhow!("--set {set:?}: index {idx} is out of range (the array has {len})"))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => bail!("--set {set:?}: {:?} is not a table", parts[..i].join(".")),
        };
    }
    bail!("--set {set:?}: nothing to set")
}

/// The run directory of a config: `output_dir/name`.
pub fn run_dir(cfg: &RunConfig) -> PathBuf {
    cfg.run.output_dir.join(&cfg.run.name)
}
