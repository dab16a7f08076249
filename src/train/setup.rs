//! Setting a run up, before its first step: the config resolved (`--run-name`), the device and
//! precision checked, the run directory prepared, the tokenizer and chat template loaded, the
//! host memory checked, and the model, optimizer and trainer state either fresh or restored from
//! a checkpoint — refusing a resume whose numbers-changing keys differ, and naming them.

use super::arena_eval::ArenaEval;
use super::checkpoint::{self, CheckpointFiles, TrainerState};
use super::config::RunConfig;
use super::data_parallel::DataParallel;
use super::loss_eval::Validation;
use super::metrics::MetricsLog;
use super::model_source::{self, check_vocab, model_dirs, ModelDirs};
use super::optimizer::AdamW;
use super::progress::Progress;
use super::signals::StopRequest;
use super::trainer::Trainer;
use super::zero::OptimizerSharding;
use crate::arena::answers::AnswerModel;
use crate::config::{ConfigError, KeyContext};
use crate::data::loader::LoaderConfig;
use crate::data::prepared::resolve_training_sources;
use crate::data::SampleBuilder;
use crate::infer::InferDevice;
use crate::io::write_atomic;
use crate::model::{Qwen2, Qwen2Config};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `syncoder train` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    pub config: PathBuf,
    pub sets: Vec<String>,
    /// `latest`, a run directory or a step directory.
    pub resume: Option<String>,
    pub run_name: Option<String>,
    /// Resume even though the math-relevant config changed, or into a directory holding
    /// another run's checkpoints.
    pub force: bool,
    /// Check everything and print the plan, writing nothing.
    pub dry_run: bool,
}

/// The command that continues the run in `run_dir` after a stop: its resolved config (every
/// `--set` and the run name folded in) and `--resume latest`.
pub fn resume_command(run_dir: &Path) -> String {
    format!(
        "syncoder train --config {} --resume latest",
        shell_word(&run_dir.join("run.toml").display().to_string())
    )
}

/// `word` quoted for a POSIX shell where it needs quoting.
fn shell_word(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| word.to_string(), |q| q.into_owned())
}

/// Everything a run needs, checked and loaded before anything is written.
pub(super) struct Plan {
    pub cfg: RunConfig,
    pub device: Device,
    pub dir: PathBuf,
    pub dirs: ModelDirs,
    pub builder: Arc<SampleBuilder>,
    pub model: Qwen2,
    pub opt: AdamW,
    pub state: TrainerState,
    /// The checkpoint resumed from.
    pub resumed: Option<PathBuf>,
    pub validation: Option<Validation>,
    pub arena: Option<ArenaEval>,
    /// This process's rank among the run's processes.
    pub dp: DataParallel,
}

impl Plan {
    /// Config, device, run directory, tokenizer, model, optimizer and state, and the data
    /// sources of every stage: read and checked, nothing written.
    pub fn make(opts: &TrainOptions) -> Result<Self> {
        let mut cfg = resolve_config(opts)?;
        let launch = crate::dist::LaunchEnv::from_process().context("reading the launcher's environment")?;
        let (device, dtype) = open_device(&cfg, &launch)?;
        let dp = data_parallel(&cfg, &launch, &device)?;
        let resumed = resumed_checkpoint(&mut cfg, opts)?;
        let dir = cfg.run_dir();
        let dirs = model_dirs(&cfg.model)?;
        let builder = Arc::new(
            SampleBuilder::from_dir(&dirs.tokenizer, cfg.data.max_sample_len(), cfg.data.overflow)?
                .with_mask(cfg.data.mask),
        );
        let model_cfg = Qwen2Config::from_file(&dirs.config_path(&cfg.model)?)?;
        if device.is_cpu() {
            super::memory::check_host_memory(&cfg, &model_cfg)?;
        }
        #[cfg(feature = "cuda")]
        if let Some(dev) = crate::ops::cuda::cuda_device(&device) {
            let (free, _total) = crate::ops::cuda::memory_info(dev)?;
            let name = crate::ops::cuda::device_name(dev).unwrap_or_else(|_| "the GPU".into());
            // What is free now plus the context this process already holds (counted in the
            // estimate's runtime).
            super::memory::check_fits(
                &cfg,
                &model_cfg,
                true,
                free + (1 << 30),
                &format!("{name} (free memory)"),
            )?;
        }
        let (mut model, mut opt, state) = match &resumed {
            Some(ckpt) => resume(&cfg, opts, ckpt, dtype, &device)?,
            None => fresh(&cfg, &dir, &dirs, dtype, &device)?,
        };
        shard_optimizer(&cfg, &dp, &mut opt)?;
        model.loss_chunk_tokens = cfg.model.loss_chunk_tokens;
        check_vocab(&model, &builder)?;
        for (i, stage) in cfg.stages.iter().enumerate().skip(state.stage) {
            resolve_training_sources(&stage.data, &builder)
                .with_context(|| format!("stage {}", stage.name))
                .key_context(format!("stage[{i}].data"))?;
        }
        let validation = validation(&cfg, &builder)?;
        let arena = match &cfg.arena {
            Some(a) => {
                let device = InferDevice::new(cfg.run.device, Some(cfg.run.dtype));
                let base = dirs.model.clone().map(|d| AnswerModel {
                    tokenizer: Some(dirs.tokenizer.clone()),
                    dir: d,
                    device: device.clone(),
                });
                Some(ArenaEval::new(a.clone(), &dir, base, device)?)
            }
            None => None,
        };
        Ok(Self {
            arena,
            cfg,
            device,
            dir,
            dirs,
            builder,
            model,
            opt,
            state,
            resumed,
            validation,
            dp,
        })
    }
}

impl Trainer {
    /// Everything a run needs before its first step (or its first step after a resume). A
    /// start that fails leaves no run directory behind if it made one.
    pub fn setup(opts: TrainOptions) -> Result<Self> {
        let plan = Plan::make(&opts)?;
        let writer = plan.dp.is_writer();
        if writer {
            super::plan::print(&plan, &opts);
        }
        let dir = plan.dir.clone();
        let created = writer && !dir.exists();
        Self::start(plan).inspect_err(|_| {
            if created {
                let _ = std::fs::remove_dir_all(&dir);
            }
        })
    }

    /// Writes the run directory's files and opens its logs (rank 0; the other ranks write
    /// nothing and print only errors).
    fn start(plan: Plan) -> Result<Self> {
        let Plan {
            cfg,
            device,
            dir,
            dirs,
            builder,
            model,
            opt,
            state,
            resumed,
            validation,
            arena,
            dp,
        } = plan;
        let writer = dp.is_writer();
        if writer {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating run directory {}", dir.display()))?;
            checkpoint::remove_stale(&dir)?;
            write_atomic(&dir.join("run.toml"), cfg.to_toml()?.as_bytes())?;
        }
        let files = CheckpointFiles {
            tokenizer_files: model_source::tokenizer_files(&dirs.tokenizer, &builder)?,
            generation_config: model_source::generation_config(dirs.model.as_deref(), &builder)?,
            max_shard_bytes: cfg.checkpoint.max_shard_bytes,
            keep_last: cfg.checkpoint.keep_last,
        };
        let tensorboard = if cfg.log.tensorboard && writer {
            Some(super::tensorboard::EventWriter::create(
                &dir,
                resumed.as_ref().map(|_| state.step),
            )?)
        } else {
            None
        };
        let grads = crate::model::training::GradBuffers::new(&model.config, model.device())?;
        Ok(Self {
            tensorboard,
            grads,
            metrics: if writer {
                Some(MetricsLog::open(&dir, state.step)?)
            } else {
                None
            },
            progress: if writer {
                Progress::new(&cfg.log)
            } else {
                Progress::silent()
            },
            stop: StopRequest::install()?,
            last_saved: resumed.as_ref().map(|_| state.step),
            last_val_step: None,
            first_loss: None,
            clock: None,
            arena: if writer { arena } else { None },
            validation: if writer { validation } else { None },
            dp,
            cfg,
            dir,
            device,
            model,
            opt,
            builder,
            state,
            files,
        })
    }
}

/// The checkpoint `--resume` names, and the run directory it continues: `latest` is the
/// config's run; a run or step directory continues in that run's own directory unless
/// `--run-name` names another, which must not hold checkpoints of its own (unless `--force`).
fn resumed_checkpoint(cfg: &mut RunConfig, opts: &TrainOptions) -> Result<Option<PathBuf>> {
    let Some(spec) = opts.resume.as_deref() else {
        return Ok(None);
    };
    if spec == "latest" {
        return checkpoint::resolve(spec, &cfg.run_dir()).map(Some);
    }
    if !Path::new(spec).exists() {
        bail!("--resume {spec}: does not exist");
    }
    let ckpt = checkpoint::resolve(spec, Path::new(spec))?;
    let own = std::fs::canonicalize(&ckpt)
        .with_context(|| format!("--resume {spec}"))?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("--resume {spec}: a checkpoint lies in a run directory"))?;
    let target = cfg.run_dir();
    let same = std::fs::canonicalize(&target).is_ok_and(|t| t == own);
    if same {
        return Ok(Some(ckpt));
    }
    if opts.run_name.is_none() {
        // Continue the checkpoint's own run, wherever the config would have put a new one.
        let name = own.file_name().map(|n| n.to_string_lossy().to_string());
        let parent = own.parent().map(Path::to_path_buf);
        let (Some(name), Some(parent)) = (name, parent) else {
            bail!("--resume {spec}: {} is not a run directory", own.display());
        };
        eprintln!(
            "continuing the run in {} (the checkpoint's own run directory)",
            own.display()
        );
        cfg.run.name = name;
        cfg.run.output_dir = parent;
        return Ok(Some(ckpt));
    }
    if let Some(latest) = checkpoint::latest(&target)? {
        if !opts.force {
            bail!(
                "--resume {spec} --run-name {}: {} already holds checkpoints of its own (latest: {}); \
                 continuing another run there would overwrite them. Leave out --run-name to continue {} in its \
                 own directory, choose a new --run-name, or pass --force",
                cfg.run.name,
                target.display(),
                latest.display(),
                own.display()
            );
        }
        eprintln!(
            "warning: --force: writing into {}, which holds checkpoints of another run",
            target.display()
        );
    }
    Ok(Some(ckpt))
}

/// The run config with `--run-name` applied, refused where this build cannot run it.
fn resolve_config(opts: &TrainOptions) -> Result<RunConfig> {
    let mut cfg = RunConfig::load(&opts.config, &opts.sets)?;
    if let Some(name) = &opts.run_name {
        cfg.run.name = name.clone();
        cfg.validate().context("--run-name")?;
    }
    Ok(cfg)
}

/// The ranks of the run: the launcher's (torchrun, Slurm, MPI variables); the config may name
/// the same number in `run.world_size`, or leave it at 1 (what `run.toml` keeps, so a resume
/// may take another world size). The global batch must split into whole micro-batches on
/// every rank.
fn data_parallel(cfg: &RunConfig, launch: &crate::dist::LaunchEnv, device: &Device) -> Result<DataParallel> {
    let configured = cfg.run.world_size;
    if configured > 1 && configured != launch.world_size {
        return Err(ConfigError::new(
            "run.world_size",
            format!(
                "{configured}, but this process was started as {}: start {configured} processes (e.g. \
                 `mpirun -np {configured} syncoder train ...`), or leave run.world_size at 1 and let the launcher \
                 decide",
                launch.describe()
            ),
        )
        .into());
    }
    let timeout = std::time::Duration::from_secs(cfg.run.comm_timeout_s);
    let dp = DataParallel::from_launch(launch, device, timeout)?;
    let mut at_this_world = cfg.clone();
    at_this_world.run.world_size = dp.world;
    at_this_world.accumulation_steps()?;
    Ok(dp)
}

/// `train.optimizer_sharding`: ZeRO-1 and ZeRO-2 cut the (whole, fresh or loaded) AdamW
/// state over the ranks of a launch (one block each in a launch of one); a process no launcher
/// started keeps it whole.
fn shard_optimizer(cfg: &RunConfig, dp: &DataParallel, opt: &mut AdamW) -> Result<()> {
    match cfg.train.optimizer_sharding {
        OptimizerSharding::None => Ok(()),
        OptimizerSharding::Zero1 | OptimizerSharding::Zero2 if dp.is_launched() => opt.shard(dp.rank, dp.world),
        OptimizerSharding::Zero1 | OptimizerSharding::Zero2 => Ok(()),
    }
}

/// The device of `run.device` (`cuda` on a node of several ranks: the GPU of this process's
/// local rank) and the parameter dtype of `run.dtype`, if its kernels train in it.
fn open_device(cfg: &RunConfig, launch: &crate::dist::LaunchEnv) -> Result<(Device, DType)> {
    let spec = cfg
        .run
        .device
        .for_local_rank(launch.local_rank, launch.local_world_size)
        .map_err(|why| ConfigError::new("run.device", why))?;
    let device = spec.open().key_context("run.device")?;
    let dtype = cfg.run.dtype.trainable_on(&device).map_err(|why| {
        let fix = if device.is_cpu() { "f32" } else { "bf16" };
        ConfigError::new("run.dtype", format!("{why}; set run.dtype = \"{fix}\""))
    })?;
    Ok((device, dtype))
}

/// Model, optimizer and state of a new run (refused where the run directory has checkpoints).
fn fresh(
    cfg: &RunConfig,
    dir: &Path,
    dirs: &ModelDirs,
    dtype: DType,
    device: &Device,
) -> Result<(Qwen2, AdamW, TrainerState)> {
    if let Some(latest) = checkpoint::latest(dir)? {
        bail!(
            "{} already holds checkpoints (latest: {}): resume it with `--resume latest`, or start a new run \
             with another `--run-name`",
            dir.display(),
            latest.display()
        );
    }
    let model = model_source::initial_model(&cfg.model, cfg.run.seed, dirs, dtype, device)?;
    let opt = AdamW::new(&model, &cfg.optim)?;
    Ok((model, opt, TrainerState::fresh(cfg)))
}

/// Model, optimizer and state restored from checkpoint `ckpt`.
fn resume(
    cfg: &RunConfig,
    opts: &TrainOptions,
    ckpt: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(Qwen2, AdamW, TrainerState)> {
    let ckpt = ckpt.to_path_buf();
    let mut state = checkpoint::read_state(&ckpt)?;
    let mut changed = vec![];
    if state.config_hash != cfg.math_hash() {
        // Checkpoints written before the world size left the math still hold it there.
        let mut saved = state.math_config.clone();
        if let Some(run) = saved.get_mut("run").and_then(|r| r.as_object_mut()) {
            run.remove("world_size");
        }
        changed_keys(&saved, &cfg.math(), "", &mut changed);
    }
    if !changed.is_empty() {
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
    let model =
        Qwen2::load(&ckpt, dtype, device, true).with_context(|| format!("loading checkpoint {}", ckpt.display()))?;
    let mut opt = AdamW::new(&model, &cfg.optim)?;
    opt.load_state(checkpoint::read_optimizer(&ckpt, device)?, state.optimizer_updates)
        .with_context(|| format!("{}: optimizer state", ckpt.display()))?;
    eprintln!("resuming from {} (step {})", ckpt.display(), state.step);
    // The resumed process gets a fresh allowance of non-finite steps.
    state.consecutive_nonfinite = 0;
    Ok((model, opt, state))
}

/// The keys whose values differ between two `math` JSON trees, as `key: old → new`.
fn changed_keys(a: &Value, b: &Value, prefix: &str, out: &mut Vec<String>) {
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
        _ if a != b => out.push(format!("{prefix}: {a} → {b}")),
        _ => {}
    }
}

/// The held-out source of `[eval]`, read once in order with the training layout.
fn validation(cfg: &RunConfig, builder: &SampleBuilder) -> Result<Option<Validation>> {
    let Some(e) = &cfg.eval else { return Ok(None) };
    Ok(Some(Validation {
        files: resolve_training_sources(&e.data, builder).key_context("eval.data")?,
        loader: LoaderConfig {
            shuffle_shards: false,
            shuffle_buffer: 1,
            max_epochs: Some(1),
            ..stage_loader(cfg, builder, 0)
        },
        max_rows: e.max_rows,
    }))
}

/// The loader settings of stage `stage`.
pub fn stage_loader(cfg: &RunConfig, builder: &SampleBuilder, stage: usize) -> LoaderConfig {
    let pad_id = builder.tokenizer().token_to_id("<|endoftext|>").unwrap_or(0);
    cfg.data.loader(
        cfg.run.seed.wrapping_add(stage as u64),
        cfg.batch.micro_batch_rows,
        pad_id,
        cfg.stages[stage].epochs,
    )
}
