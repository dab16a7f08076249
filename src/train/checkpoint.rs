//! Checkpoints of a run: `RUN/step-NNNNNNNN/` in Hugging Face layout (weights, `config.json`,
//! tokenizer files, `generation_config.json`), its `training_state/` sub-directory
//! (`optimizer.safetensors`, `trainer_state.json`), and `RUN/latest` naming the newest complete
//! one. The step directory's root holds only what inference loaders take: vLLM loads every
//! `*.safetensors` of a model directory without an index, so optimizer state there would break
//! it. Checkpoints of the earlier layout (both files at the root) are read as well.
//!
//! A step directory is written under a temporary name with every file fsynced, renamed into
//! place, and only then named by `latest` (itself replaced atomically), so a kill at any moment
//! leaves the previous checkpoint whole and `latest` pointing at a complete directory.

use super::config::RunConfig;
use super::fault;
use super::optimizer::AdamW;
use crate::config::{ensure, ConfigError};
use crate::data::loader::LoaderState;
use crate::io::{fsync_dir, write_atomic};
use crate::model::qwen2::SaveOptions;
use crate::model::Qwen2;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const LATEST: &str = "latest";
pub const TRAINER_STATE: &str = "trainer_state.json";
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// The sub-directory of a step directory holding what only resuming needs.
pub const TRAINING_STATE_DIR: &str = "training_state";

/// Where `file` (`TRAINER_STATE` or `OPTIMIZER`) of a step directory is: in
/// `training_state/`, or at the root in checkpoints of the earlier layout.
pub fn state_file(step_dir: &Path, file: &str) -> PathBuf {
    let new = step_dir.join(TRAINING_STATE_DIR).join(file);
    let old = step_dir.join(file);
    if !new.exists() && old.exists() {
        old
    } else {
        new
    }
}

/// Whether `dir` is a complete training checkpoint (it has a trainer state).
pub fn is_checkpoint(dir: &Path) -> bool {
    state_file(dir, TRAINER_STATE).is_file()
}

/// Version of `trainer_state.json` (2: the loader state names its samples by reference).
const STATE_FORMAT: u32 = 2;

/// `[checkpoint]`: how often a run is saved and how many saves it keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Save every this many optimizer steps (0: only at the end).
    pub every_steps: u64,
    /// Step directories kept (the oldest are removed).
    pub keep_last: usize,
    /// Shard `model.safetensors` above this many bytes.
    pub max_shard_bytes: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_steps: 500,
            keep_last: 3,
            max_shard_bytes: crate::model::weights::DEFAULT_MAX_SHARD_BYTES,
        }
    }
}

impl CheckpointConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.keep_last > 0, "checkpoint.keep_last", || {
            "must be at least 1".into()
        })
    }

    /// Whether optimizer step `step` ends with a save.
    pub fn due(&self, step: u64) -> bool {
        self.every_steps > 0 && step.is_multiple_of(self.every_steps)
    }
}

/// Everything besides tensors that resuming needs, and what `ckpt inspect` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub format_version: u32,
    pub crate_version: String,
    /// SHA-256 of the config keys that change the numbers (`RunConfig::math_hash`).
    pub config_hash: String,
    /// Those keys themselves, to name what changed on a refused resume.
    pub math_config: serde_json::Value,
    /// Optimizer steps done over the whole run (skipped updates included).
    pub step: u64,
    /// Index of the stage in progress (`stages.len()` once the run is complete).
    pub stage: usize,
    pub stage_name: String,
    /// Steps done within the stage.
    pub stage_step: u64,
    /// Length of the stage's LR schedule.
    pub stage_total_steps: u64,
    /// Updates applied (AdamW's bias-correction count).
    pub optimizer_updates: u64,
    pub tokens: u64,
    pub supervised_tokens: u64,
    pub skipped_steps: u64,
    pub consecutive_nonfinite: u64,
    pub elapsed_s: f64,
    pub lr: f64,
    pub last_loss: Option<f64>,
    pub last_val_loss: Option<f64>,
    /// The seed every random choice of the run derives from (the data order's RNG position is
    /// in `loader`; training itself draws no random numbers).
    pub seed: u64,
    /// The data loader of the stage in progress, right after the last consumed batch.
    pub loader: Option<LoaderState>,
    /// Every stage has finished.
    #[serde(default)]
    pub complete: bool,
}

impl TrainerState {
    /// The state of a run that has not taken a step yet.
    pub fn fresh(cfg: &RunConfig) -> Self {
        Self {
            format_version: STATE_FORMAT,
            crate_version: env!("CARGO_PKG_VERSION").into(),
            config_hash: cfg.math_hash(),
            math_config: cfg.math(),
            step: 0,
            stage: 0,
            stage_name: cfg.stages[0].name.clone(),
            stage_step: 0,
            stage_total_steps: 0,
            optimizer_updates: 0,
            tokens: 0,
            supervised_tokens: 0,
            skipped_steps: 0,
            consecutive_nonfinite: 0,
            elapsed_s: 0.0,
            lr: 0.0,
            last_loss: None,
            last_val_loss: None,
            seed: cfg.run.seed,
            loader: None,
            complete: false,
        }
    }

    /// Moves on to the next stage (its loader starts fresh).
    pub fn next_stage(&mut self) {
        self.stage += 1;
        self.stage_step = 0;
        self.stage_total_steps = 0;
        self.loader = None;
    }
}

/// The non-tensor files written into every step directory.
pub struct CheckpointFiles {
    /// (file name, bytes): tokenizer.json, tokenizer_config.json, ...
    pub tokenizer_files: Vec<(String, Vec<u8>)>,
    pub generation_config: Vec<u8>,
    pub max_shard_bytes: usize,
    pub keep_last: usize,
}

pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Removes temporary step directories left by a save that was killed.
pub fn remove_stale(run_dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(".tmp-step-") || name.starts_with(".old-step-") {
            std::fs::remove_dir_all(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Writes the checkpoint of `state.step`; returns its directory.
pub fn save(
    run_dir: &Path,
    model: &Qwen2,
    opt: &AdamW,
    state: &TrainerState,
    files: &CheckpointFiles,
) -> Result<PathBuf> {
    let tmp = begin(run_dir, state.step)?;
    commit(run_dir, &tmp, model, Some(opt), state, files)
}

/// Where the checkpoint of `step` is written before it is renamed into place.
pub fn tmp_dir(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join(format!(".tmp-{}", step_dir_name(step)))
}

/// The empty temporary directory of the checkpoint of `step` (and its training-state folder),
/// left over ones removed first.
pub fn begin(run_dir: &Path, step: u64) -> Result<PathBuf> {
    let tmp = tmp_dir(run_dir, step);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let training = tmp.join(TRAINING_STATE_DIR);
    std::fs::create_dir_all(&training).with_context(|| format!("creating {}", training.display()))?;
    Ok(tmp)
}

/// This rank's part of a sharded (ZeRO-1) optimizer state, into the temporary directory that
/// rank 0 made with `begin`.
pub fn write_optimizer_shard(tmp: &Path, opt: &AdamW, rank: usize, world: usize) -> Result<()> {
    let path = super::zero::shard_file(&tmp.join(TRAINING_STATE_DIR), rank, world);
    write_optimizer(&path, opt)
}

fn write_optimizer(path: &Path, opt: &AdamW) -> Result<()> {
    let tensors = opt.state_tensors();
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("optimizer".to_string(), "adamw".to_string()),
        ("updates".to_string(), opt.steps.to_string()),
    ]);
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_atomic(path, &safetensors::serialize(refs, Some(meta))?)
}

/// The rest of the checkpoint into `tmp` (the model, `opt`'s state unless the ranks wrote it in
/// parts, tokenizer and trainer state), then renamed into place and named by `latest`.
pub fn commit(
    run_dir: &Path,
    tmp: &Path,
    model: &Qwen2,
    opt: Option<&AdamW>,
    state: &TrainerState,
    files: &CheckpointFiles,
) -> Result<PathBuf> {
    let name = step_dir_name(state.step);
    let final_dir = run_dir.join(&name);
    model.save(
        tmp,
        &SaveOptions {
            dtype: None,
            max_shard_bytes: files.max_shard_bytes,
        },
    )?;
    fault::in_save(state.step);
    let training = tmp.join(TRAINING_STATE_DIR);
    if let Some(opt) = opt {
        write_optimizer(&training.join(OPTIMIZER), opt)?;
    }
    for (file, bytes) in &files.tokenizer_files {
        write_atomic(&tmp.join(file), bytes)?;
    }
    write_atomic(&tmp.join("generation_config.json"), &files.generation_config)?;
    write_atomic(
        &training.join(TRAINER_STATE),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    fsync_dir(&training)?;
    fsync_dir(tmp)?;
    if final_dir.exists() {
        // The same step saved again (e.g. the final save of a resumed, already finished
        // stage): move the old one aside first so a complete directory always exists.
        let old = run_dir.join(format!(".old-{name}"));
        std::fs::rename(&final_dir, &old).with_context(|| format!("moving {} aside", final_dir.display()))?;
        std::fs::rename(tmp, &final_dir).with_context(|| format!("renaming into {}", final_dir.display()))?;
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    } else {
        std::fs::rename(tmp, &final_dir).with_context(|| format!("renaming into {}", final_dir.display()))?;
    }
    fsync_dir(run_dir)?;
    write_atomic(&run_dir.join(LATEST), format!("{name}\n").as_bytes())?;
    fsync_dir(run_dir)?;
    prune(run_dir, files.keep_last, &name)?;
    fault::after_save(state.step);
    Ok(final_dir)
}

/// The step directories of a run, oldest first.
pub fn list_steps(run_dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(run_dir)
        .with_context(|| format!("listing {}", run_dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("step-") && n[5..].chars().all(|c| c.is_ascii_digit()))
        .collect();
    names.sort();
    Ok(names)
}

fn prune(run_dir: &Path, keep: usize, latest: &str) -> Result<()> {
    let steps = list_steps(run_dir)?;
    let excess = steps.len().saturating_sub(keep);
    for name in steps.iter().take(excess).filter(|n| n.as_str() != latest) {
        let dir = run_dir.join(name);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing old checkpoint {}", dir.display()))?;
    }
    Ok(())
}

/// The step directory named by `latest` in `run_dir`.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    let path = run_dir.join(LATEST);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let name = text.trim();
            if name.is_empty() || name.contains('/') {
                bail!("{}: does not name a step directory ({name:?})", path.display());
            }
            let dir = run_dir.join(name);
            if !is_checkpoint(&dir) {
                bail!(
                    "{} names {}, which is not a complete checkpoint",
                    path.display(),
                    dir.display()
                );
            }
            Ok(Some(dir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A checkpoint directory from `--resume` (`latest` in the run directory, a run directory, or
/// a step directory).
pub fn resolve(spec: &str, run_dir: &Path) -> Result<PathBuf> {
    let dir = if spec == "latest" {
        run_dir.to_path_buf()
    } else {
        PathBuf::from(spec)
    };
    if is_checkpoint(&dir) {
        return Ok(dir);
    }
    match latest(&dir)? {
        Some(d) => Ok(d),
        None if spec == "latest" => bail!(
            "--resume latest: {} holds no checkpoint yet (no `latest` file); start the run without --resume",
            dir.display()
        ),
        None => {
            bail!("--resume {spec}: neither a checkpoint (no {TRAINER_STATE}) nor a run directory with a `latest` file")
        }
    }
}

pub fn read_state(step_dir: &Path) -> Result<TrainerState> {
    let path = state_file(step_dir, TRAINER_STATE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    // The format first: an older state does not parse as this one.
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
    let format = value.get("format_version").and_then(|v| v.as_u64());
    if format != Some(STATE_FORMAT as u64) {
        let older = match format {
            Some(1) => {
                " — written by an older syncoder, whose loader state held the buffered samples' \
                        token ids; resume with that version, or start a new run from the step's weights"
            }
            _ => "",
        };
        bail!(
            "{}: trainer state format {} (this build reads {STATE_FORMAT}){older}",
            path.display(),
            format.map_or("missing".to_string(), |f| f.to_string()),
        );
    }
    let state: TrainerState =
        serde_json::from_value(value).with_context(|| format!("{}: not a valid trainer state", path.display()))?;
    Ok(state)
}

/// The optimizer tensors of a checkpoint.
pub fn read_optimizer(step_dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = state_file(step_dir, OPTIMIZER);
    if !path.is_file() {
        // A ZeRO-1 run's ranks each wrote a part.
        if let Some(joined) = super::zero::read_shards(&step_dir.join(TRAINING_STATE_DIR), device)? {
            return Ok(joined);
        }
        bail!("{}: missing (not a training checkpoint?)", path.display());
    }
    candle_core::safetensors::load(&path, device)
        .with_context(|| format!("{}: corrupt optimizer state", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_of_another_format_is_refused_by_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_file(dir.path(), TRAINER_STATE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Format 1 held token ids in the loader state: it no longer parses, but the version
        // is read first and named.
        std::fs::write(&path, r#"{"format_version": 1, "loader": {"buffer": [{"ids": [1]}]}}"#).unwrap();
        let err = format!("{:#}", read_state(dir.path()).unwrap_err());
        assert!(err.contains("format 1") && err.contains("older syncoder"), "{err}");
        std::fs::write(&path, r#"{"step": 3}"#).unwrap();
        let err = format!("{:#}", read_state(dir.path()).unwrap_err());
        assert!(err.contains("format missing"), "{err}");
    }
}
