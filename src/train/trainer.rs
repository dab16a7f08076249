//! The training loop of `syncoder train`: stages in order, each an optimizer step at a time
//! (micro-batches from the prefetching loader, gradients accumulated and normalised by the
//! step's supervised tokens, global-norm clipping, AdamW with the stage's LR schedule), with
//! metrics per step, validation, checkpoints, guards against non-finite steps, and a clean
//! stop on SIGINT/SIGTERM. A resumed run continues bit for bit where the checkpoint left it.

use super::checkpoint::{self, CheckpointFiles, TrainerState};
use super::eval::Validation;
use super::fault;
use super::metrics::{finite, peak_rss_mb, MetricsLog, StepMetrics};
use super::model_source::{self, check_vocab, model_dirs};
use super::optimizer::AdamW;
use super::progress::Progress;
use super::schedule::lr_at;
use super::signals::StopRequest;
use super::step::{step_gradients, MicroBatch};
use crate::config::{run_dir, RunConfig};
use crate::data::loader::{Loader, LoaderConfig, Prefetcher};
use crate::data::pack::PackStrategy;
use crate::data::prepared::resolve_training_sources;
use crate::data::SampleBuilder;
use crate::model::weights::write_atomic;
use crate::model::Qwen2;
use crate::ops::global_norm;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What `syncoder train` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    pub config: PathBuf,
    pub sets: Vec<String>,
    /// `latest`, a run directory or a step directory.
    pub resume: Option<String>,
    pub run_name: Option<String>,
    /// Resume even though the math-relevant config changed.
    pub force: bool,
}

/// The end-of-run report (also written to `summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub run_dir: PathBuf,
    pub checkpoint: PathBuf,
    pub steps: u64,
    pub tokens: u64,
    pub supervised_tokens: u64,
    pub first_loss: Option<f64>,
    pub final_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub skipped_steps: u64,
    pub elapsed_s: f64,
    pub tokens_per_s: f64,
    pub bad_records: u64,
}

/// The step's sampled peak of device memory in use, GiB (GPU runs).
fn peak_device_memory_gib(device: &Device) -> Option<f64> {
    #[cfg(feature = "cuda")]
    return crate::ops::cuda::take_peak_memory(device).map(|b| b as f64 / (1u64 << 30) as f64);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        None
    }
}

/// `cpu`, or `cuda` / `cuda:N` (GPU N) in builds with the `cuda` feature.
pub fn parse_device(name: &str) -> Result<Device> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match name.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => bail!("{name:?} is not `cpu`, `cuda` or `cuda:N`"),
        },
        None => bail!("{name:?} is not `cpu`, `cuda` or `cuda:N`"),
    };
    if !cfg!(feature = "cuda") {
        bail!(
            "{name:?}: this binary was built without the `cuda` feature; rebuild with \
             `cargo build --release --features cuda` (see docs/gpu.md) or set run.device = \"cpu\""
        );
    }
    Device::new_cuda(ordinal).with_context(|| format!("opening CUDA device {ordinal}"))
}

fn parse_dtype(name: &str, device: &Device) -> Result<DType> {
    let dtype = match name {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => bail!("key `run.dtype`: {other:?} is not one of f32, bf16, f16"),
    };
    if device.is_cpu() && dtype != DType::F32 {
        bail!("key `run.dtype`: CPU training runs in f32 (the CPU kernels are f32-only); set run.dtype = \"f32\"");
    }
    if device.is_cuda() && dtype == DType::F16 {
        bail!("key `run.dtype`: the CUDA kernels are built for f32 and bf16; set run.dtype = \"bf16\"");
    }
    Ok(dtype)
}

/// The keys whose values differ between two `math` JSON trees.
fn changed_keys(a: &serde_json::Value, b: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                changed_keys(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                changed_keys(u, v, &format!("{prefix}[{i}]"), out);
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

fn oom_hint(e: anyhow::Error, cfg: &RunConfig) -> anyhow::Error {
    let text = format!("{e:#}").to_lowercase();
    if text.contains("out of memory") || text.contains("out_of_memory") {
        e.context(format!(
            "out of device memory with batch.micro_batch_rows = {} and data.seq_len = {}: lower \
             batch.micro_batch_rows (the global batch stays the same through more accumulation) or data.seq_len",
            cfg.batch.micro_batch_rows, cfg.data.seq_len
        ))
    } else {
        e
    }
}

struct Run {
    cfg: RunConfig,
    opts: TrainOptions,
    dir: PathBuf,
    device: Device,
    model: Qwen2,
    opt: AdamW,
    builder: Arc<SampleBuilder>,
    state: TrainerState,
    files: CheckpointFiles,
    metrics: MetricsLog,
    validation: Option<Validation>,
    progress: Progress,
    stop: StopRequest,
    last_saved: Option<u64>,
    last_val_step: Option<u64>,
    arena: Option<super::arena_eval::ArenaEval>,
    checkpoints_saved: u64,
    arena_done_step: Option<u64>,
    first_loss: Option<f64>,
}

/// Runs (or resumes) a training run to its end.
pub fn run(opts: TrainOptions) -> Result<Summary> {
    let mut cfg = RunConfig::load(&opts.config, &opts.sets)?;
    if let Some(name) = &opts.run_name {
        cfg.run.name = name.clone();
        cfg.validate().context("--run-name")?;
    }
    if cfg.run.world_size > 1 {
        bail!("key `run.world_size`: multi-process data parallelism (NCCL) is not built yet; set it to 1");
    }
    let device = parse_device(&cfg.run.device).context("key `run.device`")?;
    let dtype = parse_dtype(&cfg.run.dtype, &device)?;
    let dir = run_dir(&cfg);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating run directory {}", dir.display()))?;
    checkpoint::remove_stale(&dir)?;
    let dirs = model_dirs(&cfg)?;
    let max_seq_len = cfg.data.max_seq_len.unwrap_or(cfg.data.seq_len);
    let builder = Arc::new(SampleBuilder::from_dir(
        &dirs.tokenizer,
        max_seq_len,
        cfg.data.overflow,
    )?);

    if device.is_cpu() {
        let config_path = match (&dirs.model, &cfg.model.init_config) {
            (Some(d), _) => d.join("config.json"),
            (None, Some(p)) => p.clone(),
            (None, None) => bail!("key `model`: no model source"),
        };
        let model_cfg = crate::model::Qwen2Config::from_file(&config_path)?;
        check_host_memory(&cfg, &model_cfg)?;
    }
    let (model, opt, state) = match &opts.resume {
        Some(spec) => {
            let ckpt = checkpoint::resolve(spec, &dir)?;
            let state = checkpoint::read_state(&ckpt)?;
            if state.config_hash != cfg.math_hash() {
                let mut changed = vec![];
                changed_keys(&state.math_config, &cfg.math(), "", &mut changed);
                if opts.force {
                    eprintln!("warning: resuming with changed keys (--force): {}", changed.join(", "));
                } else {
                    bail!(
                        "{}: the config changed in keys that change the run's numbers: {}; resuming would not \
                         continue the same run (pass --force to resume anyway, or start a new --run-name)",
                        ckpt.display(),
                        changed.join(", ")
                    );
                }
            }
            if state.crate_version != env!("CARGO_PKG_VERSION") {
                eprintln!(
                    "warning: the checkpoint was written by syncoder {}, this is {}",
                    state.crate_version,
                    env!("CARGO_PKG_VERSION")
                );
            }
            let model = Qwen2::load(&ckpt, dtype, &device, true)
                .with_context(|| format!("loading checkpoint {}", ckpt.display()))?;
            let mut opt = AdamW::new(&model, &cfg.optim)?;
            opt.load_state(checkpoint::read_optimizer(&ckpt, &device)?, state.optimizer_updates)
                .with_context(|| format!("{}: optimizer state", ckpt.display()))?;
            eprintln!("resuming from {} (step {})", ckpt.display(), state.step);
            let mut state = state;
            // The resumed process gets a fresh allowance of non-finite steps.
            state.consecutive_nonfinite = 0;
            (model, opt, state)
        }
        None => {
            if let Some(latest) = checkpoint::latest(&dir)? {
                bail!(
                    "{} already holds checkpoints (latest: {}): resume it with `--resume latest`, or start a new run \
                     with another `--run-name`",
                    dir.display(),
                    latest.display()
                );
            }
            let model = model_source::initial_model(&cfg, &dirs, dtype, &device)?;
            let opt = AdamW::new(&model, &cfg.optim)?;
            let state = TrainerState {
                format_version: checkpoint::state_format(),
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
            };
            (model, opt, state)
        }
    };
    let mut model = model;
    model.loss_chunk_tokens = cfg.model.loss_chunk_tokens;
    check_vocab(&model, &builder)?;
    write_atomic(&dir.join("run.toml"), cfg.to_toml()?.as_bytes())?;
    let files = CheckpointFiles {
        tokenizer_files: model_source::tokenizer_files(&dirs.tokenizer, &builder)?,
        generation_config: model_source::generation_config(dirs.model.as_deref(), &builder)?,
        max_shard_bytes: cfg.checkpoint.max_shard_bytes,
        keep_last: cfg.checkpoint.keep_last,
    };
    let validation = match &cfg.eval {
        Some(e) => Some(Validation {
            files: resolve_training_sources(&e.data, &builder).context("key `eval.data`")?,
            loader: LoaderConfig {
                shuffle_shards: false,
                shuffle_buffer: 1,
                max_epochs: Some(1),
                ..loader_config(&cfg, &builder, 0)
            },
            max_rows: e.max_rows,
        }),
        None => None,
    };
    let arena = match &cfg.arena {
        Some(a) => Some(super::arena_eval::ArenaEval::new(a.clone(), &dir, dirs.model.clone())?),
        None => None,
    };
    let metrics = MetricsLog::open(&dir, state.step)?;
    let mut run = Run {
        progress: Progress::new(cfg.log.progress, cfg.log.every_steps),
        stop: StopRequest::install()?,
        last_saved: opts.resume.as_ref().map(|_| state.step),
        last_val_step: None,
        arena,
        checkpoints_saved: 0,
        arena_done_step: None,
        first_loss: None,
        cfg,
        opts,
        dir,
        device,
        model,
        opt,
        builder,
        state,
        files,
        metrics,
        validation,
    };
    run.train()
}

/// Refuses a CPU run whose estimated memory exceeds what the machine has available.
fn check_host_memory(cfg: &RunConfig, model: &crate::model::Qwen2Config) -> Result<()> {
    let tokens = (cfg.batch.micro_batch_rows * cfg.data.seq_len) as u64;
    let chunk = cfg.model.loss_chunk_tokens.unwrap_or_else(|| {
        crate::ops::linear_cross_entropy::default_chunk_tokens(tokens as usize, model.vocab_size, model.hidden_size)
    }) as u64;
    let need = super::memory::estimate(model, 4, tokens, chunk);
    let Some(avail) = super::memory::available() else {
        return Ok(());
    };
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if need.total() > avail {
        bail!(
            "out of memory ahead: this run needs about {:.1} GiB ({:.1} GiB of weights, gradients and AdamW state,              {:.1} GiB of activations for batch.micro_batch_rows = {} × data.seq_len = {} tokens) but {:.1} GiB are              available; lower batch.micro_batch_rows (the global batch stays the same through more accumulation)              or data.seq_len, or use a smaller model",
            gib(need.total()),
            gib(need.state),
            gib(need.activations),
            cfg.batch.micro_batch_rows,
            cfg.data.seq_len,
            gib(avail)
        );
    }
    Ok(())
}

/// The loader settings of stage `stage`.
fn loader_config(cfg: &RunConfig, builder: &SampleBuilder, stage: usize) -> LoaderConfig {
    let pad_id = builder.tokenizer.token_to_id("<|endoftext|>").unwrap_or(0);
    LoaderConfig {
        seed: cfg.run.seed.wrapping_add(stage as u64),
        shuffle_shards: cfg.data.shuffle_shards,
        shuffle_buffer: cfg.data.shuffle_buffer,
        seq_len: cfg.data.seq_len,
        rows_per_batch: cfg.batch.micro_batch_rows,
        pack: if cfg.data.pack == "greedy" {
            PackStrategy::Greedy
        } else {
            PackStrategy::BestFit {
                window: cfg.data.pack_window,
            }
        },
        pad_id,
        on_bad_record: cfg.data.on_bad_record,
        max_epochs: cfg.stages[stage].epochs,
    }
}

impl Run {
    fn train(&mut self) -> Result<Summary> {
        let started = Instant::now();
        let elapsed_base = self.state.elapsed_s;
        let n_stages = self.cfg.stages.len();
        if self.state.stage >= n_stages {
            eprintln!("the run is already complete (step {})", self.state.step);
        }
        while self.state.stage < n_stages {
            self.run_stage(started, elapsed_base)?;
        }
        self.progress.finish();
        self.finish(started, elapsed_base)
    }

    /// Steps of the schedule of stage `i`: its `steps`, or the count of one epoch times
    /// `epochs` (read once through the data), whichever is smaller.
    fn stage_total(&self, i: usize, files: &[PathBuf]) -> Result<u64> {
        let s = &self.cfg.stages[i];
        let Some(epochs) = s.epochs else {
            return Ok(s.steps.expect("validated: steps or epochs"));
        };
        self.progress.note(&format!(
            "stage {}: counting one epoch of the data for the LR schedule (give stage.steps to skip this)",
            s.name
        ));
        let mut loader = Loader::new(
            LoaderConfig {
                max_epochs: Some(1),
                ..loader_config(&self.cfg, &self.builder, i)
            },
            files.to_vec(),
            self.builder.clone(),
        )?;
        let mut rows = 0u64;
        while let Some(b) = loader.next_batch()? {
            rows += b.rows.len() as u64;
        }
        let per_step = self.cfg.global_rows()? as u64;
        let total = (rows.div_ceil(per_step) * epochs as u64).max(1);
        Ok(s.steps.map_or(total, |cap| cap.min(total)))
    }

    fn run_stage(&mut self, started: Instant, elapsed_base: f64) -> Result<()> {
        let i = self.state.stage;
        let stage = self.cfg.stages[i].clone();
        let files = resolve_training_sources(&stage.data, &self.builder)
            .with_context(|| format!("key `stage[{i}].data` (stage {})", stage.name))?;
        if self.state.stage_total_steps == 0 {
            self.state.stage_total_steps = self.stage_total(i, &files)?;
        }
        let total = self.state.stage_total_steps;
        self.state.stage_name = stage.name.clone();
        let lcfg = loader_config(&self.cfg, &self.builder, i);
        let loader = match self.state.loader.take() {
            Some(st) => Loader::restore(lcfg, files, self.builder.clone(), st)
                .with_context(|| format!("restoring the data position of stage {}", stage.name))?,
            None => Loader::new(lcfg, files, self.builder.clone())?,
        };
        let mut prefetch = Prefetcher::spawn(loader, self.cfg.data.prefetch);
        let sched = self.cfg.stage_schedule(i);
        let accum = self.cfg.accumulation_steps()?;
        self.progress.start_stage(&stage.name, total, self.state.stage_step);
        while self.state.stage_step < total {
            let t0 = Instant::now();
            let mut micros = Vec::with_capacity(accum);
            let mut after = None;
            while micros.len() < accum {
                match prefetch.next_batch()? {
                    Some((b, st)) => {
                        micros.push(MicroBatch::new(&b, &self.device)?);
                        after = Some(st);
                    }
                    None => break,
                }
            }
            let Some(loader_state) = after else {
                self.progress.note(&format!(
                    "stage {}: data exhausted after {} steps",
                    stage.name, self.state.stage_step
                ));
                break;
            };
            let step = self.state.step + 1;
            let g = step_gradients(&self.model, &micros, fault::loss_factor(step), &mut |m| {
                fault::at_micro(step, m)
            })
            .map_err(|e| oom_hint(e, &self.cfg))
            .with_context(|| format!("step {step}"))?;
            let loss = g.loss();
            let gnorm = global_norm(&g.grads)?;
            let lr = lr_at(&sched, self.state.stage_step, total);
            let ok = loss.is_finite() && gnorm.is_finite() && g.supervised > 0;
            if ok {
                let max = self.cfg.optim.max_grad_norm;
                let scale = if max > 0.0 && gnorm > max {
                    max / (gnorm + 1e-6)
                } else {
                    1.0
                };
                self.opt.update(&g.grads, lr, scale)?;
                self.state.consecutive_nonfinite = 0;
                self.first_loss.get_or_insert(loss);
            } else {
                self.state.skipped_steps += 1;
                self.state.consecutive_nonfinite += 1;
            }
            drop(g);
            let step_tokens: u64 = micros.iter().map(|m| m.tokens as u64).sum();
            let supervised: u64 = micros.iter().map(|m| m.supervised as u64).sum();
            let st = &mut self.state;
            st.step = step;
            st.stage_step += 1;
            st.optimizer_updates = self.opt.steps;
            st.tokens += step_tokens;
            st.supervised_tokens += supervised;
            st.lr = lr;
            st.last_loss = finite(loss);
            st.elapsed_s = elapsed_base + started.elapsed().as_secs_f64();
            let step_seconds = t0.elapsed().as_secs_f64().max(1e-9);
            let stats = loader_state.stats.clone();
            let epoch = loader_state.epoch;
            st.loader = Some(loader_state);
            let val_loss = match &self.validation {
                Some(v) if step.is_multiple_of(self.cfg.eval.as_ref().map_or(u64::MAX, |e| e.every_steps)) => {
                    let l = v.loss(&self.model, &self.builder).context("validation loss")?;
                    self.state.last_val_loss = l;
                    self.last_val_step = Some(step);
                    l
                }
                _ => None,
            };
            let m = StepMetrics {
                step,
                stage: stage.name.clone(),
                loss: finite(loss),
                lr,
                grad_norm: finite(gnorm),
                tokens: self.state.tokens,
                step_tokens,
                supervised_tokens: supervised,
                tokens_per_s: step_tokens as f64 / step_seconds,
                elapsed_s: self.state.elapsed_s,
                epoch,
                skipped: !ok,
                bad_records: stats.bad_records,
                padding_fraction: stats.padding_fraction(),
                val_loss,
                peak_rss_mb: self.device.is_cpu().then(peak_rss_mb).flatten(),
                peak_device_memory_gib: peak_device_memory_gib(&self.device),
                mfu: self.mfu(step_tokens as f64 / step_seconds),
            };
            self.metrics.append(&m)?;
            self.progress.step(&m, self.state.stage_step, total);
            if !ok {
                self.progress.note(&format!(
                    "step {step}: non-finite loss or gradient (loss {loss}, grad norm {gnorm}); update skipped"
                ));
            }
            if self.state.consecutive_nonfinite >= self.cfg.guards.max_consecutive_nonfinite {
                let dir = self.save()?;
                bail!(
                    "stopping: {} steps in a row had a non-finite loss or gradient (the last at step {step}); the \
                     last good weights are saved in {} — lower optim.lr or check the data before resuming",
                    self.state.consecutive_nonfinite,
                    dir.display()
                );
            }
            let every = self.cfg.checkpoint.every_steps;
            if every > 0 && step.is_multiple_of(every) {
                let dir = self.save()?;
                self.checkpoints_saved += 1;
                if self.arena.as_ref().is_some_and(|a| a.due(self.checkpoints_saved)) {
                    self.run_arena(Some((step, dir)));
                }
            }
            if let Some(sig) = self.stop.requested() {
                let dir = if self.last_saved == Some(step) {
                    self.dir.join(checkpoint::step_dir_name(step))
                } else {
                    self.save()?
                };
                self.progress.finish();
                bail!(
                    "stopped by {sig} after step {step}; checkpoint {} — continue with: syncoder train --config {} \
                     --resume latest{}",
                    dir.display(),
                    self.opts.config.display(),
                    self.opts
                        .run_name
                        .as_ref()
                        .map_or(String::new(), |n| format!(" --run-name {n}"))
                );
            }
        }
        drop(prefetch);
        self.state.stage += 1;
        self.state.stage_step = 0;
        self.state.stage_total_steps = 0;
        self.state.loader = None;
        Ok(())
    }

    /// Model FLOPs utilisation of a step (GPU runs on a card of known peak): tokens/s times
    /// 6·N + 12·L·d·T FLOPs per token (T = data.seq_len) over the card's dense bf16 peak.
    fn mfu(&self, tokens_per_s: f64) -> Option<f64> {
        #[cfg(feature = "cuda")]
        if let Some(dev) = crate::ops::cuda::cuda_device(&self.device) {
            let card = crate::ops::cuda::device_name(dev).ok()?;
            let (peak, _) = crate::bench::dense_bf16_peak_tflops(&card)?;
            let fpt = crate::bench::flops_per_token(&self.model.config, self.cfg.data.seq_len);
            return Some(tokens_per_s * fpt / (peak * 1e12));
        }
        let _ = tokens_per_s;
        None
    }

    fn save(&mut self) -> Result<PathBuf> {
        let dir = checkpoint::save(&self.dir, &self.model, &self.opt, &self.state, &self.files)
            .with_context(|| format!("saving the checkpoint of step {}", self.state.step))?;
        self.last_saved = Some(self.state.step);
        self.progress.note(&format!("saved {}", dir.display()));
        Ok(dir)
    }

    /// CodeArena evaluation of `target` (and of earlier steps whose evaluation failed); a
    /// failure is reported and the step kept for the next try, never an error of the run.
    fn run_arena(&mut self, target: Option<(u64, PathBuf)>) {
        let Some(arena) = self.arena.as_mut() else { return };
        let mut todo = std::mem::take(&mut arena.pending);
        todo.extend(target);
        for (step, dir) in todo {
            if !dir.is_dir() {
                self.progress.note(&format!(
                    "CodeArena: step {step} is no longer on disk (checkpoint.keep_last); not evaluated"
                ));
                continue;
            }
            self.progress.note(&format!("CodeArena: evaluating step {step}"));
            match arena.evaluate(step, &dir) {
                Ok(lines) => {
                    for l in &lines {
                        self.progress.note(&format!(
                            "CodeArena step {step} vs {}: win {:.1}%  tie {:.1}%  score {:.3} [{:.3}, {:.3}]",
                            l.opponent,
                            100.0 * l.codearena_win_rate,
                            100.0 * l.codearena_tie_rate,
                            l.codearena_score,
                            l.codearena_score_ci[0],
                            l.codearena_score_ci[1]
                        ));
                        if let Err(e) = self.metrics.append(l) {
                            self.progress
                                .note(&format!("CodeArena: could not write metrics: {e:#}"));
                        }
                    }
                    self.arena_done_step = Some(step);
                }
                Err(e) => {
                    self.progress.note(&format!(
                        "CodeArena: evaluating step {step} failed ({e:#}); training goes on, it is tried again later"
                    ));
                    arena.pending.push((step, dir));
                }
            }
        }
    }

    fn finish(&mut self, started: Instant, elapsed_base: f64) -> Result<Summary> {
        if let Some(v) = &self.validation {
            if self.last_val_step != Some(self.state.step) {
                self.state.last_val_loss = v.loss(&self.model, &self.builder).context("validation loss")?;
            }
        }
        self.state.complete = true;
        self.state.elapsed_s = elapsed_base + started.elapsed().as_secs_f64();
        let ckpt = if self.last_saved == Some(self.state.step) {
            // Already saved at this step: only record that the run is complete.
            let dir = self.dir.join(checkpoint::step_dir_name(self.state.step));
            write_atomic(
                &dir.join(checkpoint::TRAINER_STATE),
                serde_json::to_string_pretty(&self.state)?.as_bytes(),
            )?;
            dir
        } else {
            self.save()?
        };
        if let Some(a) = &self.arena {
            let target =
                (a.at_end() && self.arena_done_step != Some(self.state.step)).then(|| (self.state.step, ckpt.clone()));
            if target.is_some() || !a.pending.is_empty() {
                self.run_arena(target);
            }
            if let Some(a) = &self.arena {
                for (step, _) in &a.pending {
                    eprintln!("warning: CodeArena evaluation of step {step} did not succeed; see the messages above");
                }
            }
        }
        let all: Vec<StepMetrics> = super::metrics::read_steps(self.metrics.path())?;
        let title = format!("{} — loss per optimizer step", self.cfg.run.name);
        write_atomic(
            &self.dir.join("loss.svg"),
            super::loss_curve::render(&all, &title).as_bytes(),
        )?;
        let first_loss = all.iter().find_map(|m| m.loss).or(self.first_loss);
        let summary = Summary {
            run_dir: self.dir.clone(),
            checkpoint: ckpt,
            steps: self.state.step,
            tokens: self.state.tokens,
            supervised_tokens: self.state.supervised_tokens,
            first_loss,
            final_loss: self.state.last_loss,
            val_loss: self.state.last_val_loss,
            skipped_steps: self.state.skipped_steps,
            elapsed_s: self.state.elapsed_s,
            tokens_per_s: self.state.tokens as f64 / self.state.elapsed_s.max(1e-9),
            bad_records: all.last().map_or(0, |m| m.bad_records),
        };
        write_atomic(
            &self.dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        Ok(summary)
    }
}

/// Prints a summary for people.
pub fn print_summary(s: &Summary) {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!("run        {}", s.run_dir.display());
    println!("checkpoint {}", s.checkpoint.display());
    println!("steps      {}  ({} skipped)", s.steps, s.skipped_steps);
    println!("tokens     {}  ({} supervised)", s.tokens, s.supervised_tokens);
    println!("loss       {} -> {}", f(s.first_loss), f(s.final_loss));
    println!("val loss   {}", f(s.val_loss));
    println!("time       {:.1} s  ({:.0} tokens/s)", s.elapsed_s, s.tokens_per_s);
    if s.bad_records > 0 {
        println!("skipped {} malformed records", s.bad_records);
    }
    println!("loss curve {}", s.run_dir.join("loss.svg").display());
}

/// Path of the metrics file of a run directory.
pub fn metrics_path(run_dir: &Path) -> PathBuf {
    run_dir.join("metrics.jsonl")
}
