//! The run config of `syncoder train`: a TOML file (documented key by key in `docs/config.md`),
//! optionally overridden by `--set section.key=value`, deserialised strictly (unknown keys and
//! wrong types are errors naming the key's path) and checked for impossible values. Each section
//! is owned by its component (`[data]` by `data`, `[optim]` by the optimizer, `[arena]` by
//! `arena`, ...); this file composes them and holds what only the trainer reads.
//!
//! The part of the config that changes the numbers of a run (`RunConfig::math`) is hashed into
//! every checkpoint, so a resume with a different recipe is caught.

use super::checkpoint::CheckpointConfig;
use super::loss_eval::EvalConfig;
use super::model_source::ModelConfig;
use super::optimizer::{check_lr, check_ratio, OptimConfig};
use super::progress::LogConfig;
use super::schedule::{ScheduleKind, StageSchedule};
use crate::arena::ArenaConfig;
use crate::config::{ensure, ConfigError};
use crate::data::DataConfig;
use crate::device::{DeviceSpec, Precision};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The whole run config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub run: RunSettings,
    pub model: ModelConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    pub batch: BatchConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub eval: Option<EvalConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub guards: GuardConfig,
    #[serde(default)]
    pub train: TrainSettings,
    /// CodeArena evaluation of checkpoints during the run.
    #[serde(default)]
    pub arena: Option<ArenaConfig>,
    /// `[[stage]]` entries, run in order.
    #[serde(rename = "stage")]
    pub stages: Vec<StageConfig>,
}

/// `[run]`: where the run lives and what it runs on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// Name of the run directory under `output_dir` (`--run-name` overrides it).
    pub name: String,
    pub output_dir: PathBuf,
    /// Seed of the model init and of the data order.
    pub seed: u64,
    /// `cpu` or `cuda` / `cuda:N`.
    pub device: DeviceSpec,
    /// Parameter dtype: `f32`, `bf16` or `f16` (master weights and moments are always f32).
    pub dtype: Precision,
    /// Data-parallel processes (1: single process).
    pub world_size: usize,
    /// Seconds a rank waits in one collective for the other ranks before it ends itself with
    /// an error (a rank that hangs or died unseen); the launcher then ends the job.
    pub comm_timeout_s: u64,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            name: "run".into(),
            output_dir: "checkpoints".into(),
            seed: 0,
            device: DeviceSpec::Cpu,
            dtype: Precision::F32,
            world_size: 1,
            comm_timeout_s: 1800,
        }
    }
}

/// `[batch]`: the micro-batch and the global batch of one optimizer step (exactly one of
/// `global_rows` and `global_tokens`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Packed rows per forward/backward pass on one process.
    pub micro_batch_rows: usize,
    /// Packed rows (sequences of `data.seq_len` tokens) per optimizer step over all processes.
    pub global_rows: Option<usize>,
    /// Tokens per optimizer step over all processes (a multiple of micro-batch tokens).
    pub global_tokens: Option<usize>,
}

/// `[train]`: how the step runs (not what it computes: no key here changes a number).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// `"none"`, `"layers"`, or N: keep only every N-th layer's input for the backward.
    pub activation_checkpointing: crate::model::training::Checkpointing,
    /// `"none"` or `"zero1"`: the AdamW state replicated on every data-parallel rank, or cut
    /// over them (`train::zero`).
    pub optimizer_sharding: super::zero::OptimizerSharding,
}

/// `[guards]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Stop after this many optimizer steps in a row with a non-finite loss or gradient.
    pub max_consecutive_nonfinite: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            max_consecutive_nonfinite: 5,
        }
    }
}

/// One `[[stage]]`: its data and length, and optionally its own LR schedule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
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

impl StageConfig {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("stage[{i}].{k}");
        ensure(!self.data.is_empty(), &key("data"), || {
            "give at least one source".into()
        })?;
        ensure(self.steps.is_some() || self.epochs.is_some(), &key("steps"), || {
            "give `steps` or `epochs` (or both)".into()
        })?;
        ensure(self.steps != Some(0), &key("steps"), || "must be at least 1".into())?;
        ensure(self.epochs != Some(0), &key("epochs"), || "must be at least 1".into())?;
        if let Some(lr) = self.lr {
            check_lr(&key("lr"), lr)?;
        }
        if let Some(r) = self.min_lr_ratio {
            check_ratio(&key("min_lr_ratio"), r)?;
        }
        Ok(())
    }
}

impl RunConfig {
    /// Reads `path`, applies `--set` overrides, deserialises and validates.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let cfg: RunConfig = crate::config::load_toml(path, sets)?;
        cfg.validate()
            .map_err(|e| anyhow::Error::new(e).context(format!("config {}", path.display())))?;
        Ok(cfg)
    }

    /// Parses TOML text with `--set` overrides.
    pub fn parse(text: &str, sets: &[String]) -> Result<Self> {
        let cfg: RunConfig = crate::config::parse_toml(text, sets)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate()?;
        ensure(self.run.comm_timeout_s > 0, "run.comm_timeout_s", || {
            "must be at least 1 second".into()
        })?;
        ensure(self.run.world_size > 0, "run.world_size", || {
            "must be at least 1".into()
        })?;
        ensure(
            !self.run.name.is_empty() && !self.run.name.contains('/'),
            "run.name",
            || format!("{:?} is not a valid directory name", self.run.name),
        )?;
        self.data.validate()?;
        self.optim.validate()?;
        self.accumulation_steps()?;
        self.checkpoint.validate()?;
        if let Some(e) = &self.eval {
            e.validate()?;
        }
        if let Some(a) = &self.arena {
            a.validate()?;
        }
        self.log.validate()?;
        ensure(
            self.guards.max_consecutive_nonfinite > 0,
            "guards.max_consecutive_nonfinite",
            || "must be at least 1".into(),
        )?;
        ensure(!self.stages.is_empty(), "stage", || {
            "give at least one [[stage]]".into()
        })?;
        for (i, s) in self.stages.iter().enumerate() {
            s.validate(i)?;
        }
        Ok(())
    }

    /// Micro-batches per optimizer step on one process.
    pub fn accumulation_steps(&self) -> Result<usize, ConfigError> {
        let b = &self.batch;
        ensure(b.micro_batch_rows > 0, "batch.micro_batch_rows", || {
            "must be at least 1".into()
        })?;
        let per_pass = b.micro_batch_rows * self.run.world_size;
        let rows = match (b.global_rows, b.global_tokens) {
            (Some(r), None) => {
                ensure(r > 0 && r % per_pass == 0, "batch.global_rows", || {
                    format!(
                        "{r} is not a positive multiple of batch.micro_batch_rows ({}) × run.world_size ({})",
                        b.micro_batch_rows, self.run.world_size
                    )
                })?;
                r
            }
            (None, Some(t)) => {
                let per_pass_tokens = per_pass * self.data.seq_len;
                ensure(t > 0 && t % per_pass_tokens == 0, "batch.global_tokens", || {
                    format!(
                        "{t} is not a positive multiple of batch.micro_batch_rows ({}) × data.seq_len ({}) × \
                         run.world_size ({})",
                        b.micro_batch_rows, self.data.seq_len, self.run.world_size
                    )
                })?;
                t / self.data.seq_len
            }
            _ => {
                return Err(ConfigError::new(
                    "batch",
                    "give exactly one of `batch.global_rows` and `batch.global_tokens`",
                ))
            }
        };
        Ok(rows / per_pass)
    }

    /// Micro-batches per optimizer step over all processes (the same at any world size).
    pub fn global_micro_batches(&self) -> Result<usize, ConfigError> {
        Ok(self.global_rows()? / self.batch.micro_batch_rows.max(1))
    }

    /// Rows per optimizer step over all processes.
    pub fn global_rows(&self) -> Result<usize, ConfigError> {
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
    /// the run is written, how often it is saved, logged or evaluated, the device and the number
    /// of data-parallel ranks are not (the global batch is the same rows at any world size).
    pub fn math(&self) -> Json {
        let mut v = serde_json::to_value(self).expect("the config serialises");
        let obj = v.as_object_mut().expect("the config is a table");
        for key in ["checkpoint", "eval", "log", "guards", "arena", "train"] {
            obj.remove(key);
        }
        if let Some(run) = obj.get_mut("run").and_then(|r| r.as_object_mut()) {
            for key in ["name", "output_dir", "device", "world_size", "comm_timeout_s"] {
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

    /// The run directory: `output_dir/name`.
    pub fn run_dir(&self) -> PathBuf {
        self.run.output_dir.join(&self.run.name)
    }
}
