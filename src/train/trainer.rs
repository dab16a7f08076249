//! The training loop of `syncoder train`: stages in order, each an optimizer step at a time —
//! fetch the step's micro-batches from the prefetching loader, compute their gradients
//! (normalised by the step's supervised tokens), update (global-norm clipping, AdamW with the
//! stage's LR schedule), record the step's metrics, then maybe save, evaluate or stop (guards
//! against non-finite steps, SIGINT/SIGTERM). A resumed run continues bit for bit where the
//! checkpoint left it. Setting up is in `setup.rs`, the end of a run in `finish.rs`; with
//! several ranks, `data_parallel.rs` says who computes what and who writes.

use super::arena_eval::{ArenaEval, ArenaMetrics, ArenaSink};
use super::checkpoint::{self, CheckpointFiles, TrainerState};
use super::config::RunConfig;
use super::data_parallel::DataParallel;
use super::finish::Summary;
use super::grad_reduce::GradReduce;
use super::loss_eval::Validation;
use super::metrics::{finite, MetricsLog, StepMetrics};
use super::optimizer::AdamW;
use super::progress::Progress;
use super::schedule::lr_at;
use super::setup::{resume_command, TrainOptions};
use super::signals::{StopRequest, Stopped};
use super::stage::{StageRun, StepBatches};
use super::step::share_gradients_into;
use super::{fault, memory};
use crate::data::loader::StateDelta;
use crate::data::SampleBuilder;
use crate::device;
use crate::model::training::GradBuffers;
use crate::model::Qwen2;
use crate::ops::global_norm;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Runs (or resumes) a training run to its end.
pub fn run(opts: TrainOptions) -> Result<Summary> {
    Trainer::setup(opts)?.train()
}

/// A run in progress: its components and counters.
pub struct Trainer {
    pub(super) cfg: RunConfig,
    pub(super) dir: PathBuf,
    pub(super) device: Device,
    pub(super) model: Qwen2,
    pub(super) opt: AdamW,
    /// The f32 gradient of every parameter, allocated once, zeroed at each step.
    pub(super) grads: GradBuffers,
    pub(super) builder: Arc<SampleBuilder>,
    pub(super) state: TrainerState,
    pub(super) files: CheckpointFiles,
    /// This process's rank and the reductions over the ranks (one process: a world of one).
    pub(super) dp: DataParallel,
    /// `metrics.jsonl` (rank 0 only).
    pub(super) metrics: Option<MetricsLog>,
    /// TensorBoard event file (`[log] tensorboard`).
    pub(super) tensorboard: Option<super::tensorboard::EventWriter>,
    pub(super) validation: Option<Validation>,
    pub(super) progress: Progress,
    pub(super) stop: StopRequest,
    pub(super) arena: Option<ArenaEval>,
    /// The step of the newest checkpoint on disk.
    pub(super) last_saved: Option<u64>,
    pub(super) last_val_step: Option<u64>,
    pub(super) first_loss: Option<f64>,
    /// When this process started training, and the training seconds of earlier processes.
    pub(super) clock: Option<(Instant, f64)>,
}

/// What one optimizer step computed.
struct StepOutcome {
    loss: f64,
    grad_norm: f64,
    lr: f64,
    /// The update was applied (finite loss and gradient, some supervised token).
    applied: bool,
    /// A rank received SIGINT/SIGTERM before this step's reduction: every rank stops after it.
    stop: Option<&'static str>,
}

impl Trainer {
    /// Every stage, then the end of the run.
    pub fn train(mut self) -> Result<Summary> {
        self.clock = Some((Instant::now(), self.state.elapsed_s));
        if self.state.stage >= self.cfg.stages.len() {
            eprintln!("the run is already complete (step {})", self.state.step);
        }
        while self.state.stage < self.cfg.stages.len() {
            let mut stage = self.start_stage()?;
            while self.state.stage_step < stage.total {
                let t0 = Instant::now();
                let Some((batches, loader)) = self.fetch(&mut stage.batches)? else {
                    self.progress.note(&format!(
                        "stage {}: data exhausted after {} steps",
                        stage.name, self.state.stage_step
                    ));
                    break;
                };
                let outcome = self.step(&batches, &stage)?;
                let m = self.record(&batches, loader, &outcome, &stage, t0)?;
                self.after_step(&m, outcome.stop)?;
            }
            drop(stage);
            self.state.next_stage();
        }
        self.progress.finish();
        self.finish()
    }

    /// Training seconds of the whole run so far.
    pub(super) fn elapsed(&self) -> f64 {
        self.clock
            .map_or(self.state.elapsed_s, |(t, base)| base + t.elapsed().as_secs_f64())
    }

    /// Gradients of the step (this rank's micro-batches, summed over the ranks layer by layer
    /// as the backward finishes each: `grad_reduce`), then the clipped AdamW update unless they
    /// are not finite.
    fn step(&mut self, batches: &StepBatches, stage: &StageRun) -> Result<StepOutcome> {
        let step = self.state.step + 1;
        // ZeRO-2: each rank receives only its block of the summed gradients; otherwise every
        // rank sums them whole.
        let shards = if self.zero2() { self.opt.shards() } else { None };
        let mut reduce = GradReduce::new(&self.dp, &self.grads.named, self.model.config.num_hidden_layers, shards);
        let g = share_gradients_into(
            &self.model,
            &self.grads,
            &batches.mine,
            batches.supervised(),
            fault::loss_factor(step),
            self.cfg.train.activation_checkpointing,
            &mut |m| fault::at_micro(step, m),
            &mut |l| reduce.layer_done(l),
        )
        .map_err(|e| memory::oom_hint(e, &self.cfg))
        .with_context(|| format!("step {step}"))?;
        let blocks = reduce.finish().with_context(|| format!("step {step}"))?;
        let block_sq = match &blocks {
            Some(b) => global_norm(b)?.powi(2),
            None => 0.0,
        };
        // The loss sums, whether any rank was asked to stop, and (ZeRO-2) the squared norms of
        // the gradient blocks, in one reduction.
        let asked = self.stop.requested();
        let mut values = [g.loss_sum, asked.map_or(0.0, |_| 1.0), block_sq];
        self.dp
            .sum_values(&mut values)
            .with_context(|| format!("step {step}"))?;
        let stop = (values[1] > 0.0).then_some(asked.unwrap_or("SIGTERM (on another rank)"));
        let loss = values[0] / g.supervised.max(1) as f64;
        let grad_norm = match blocks {
            Some(_) => values[2].sqrt(),
            None => global_norm(&g.grads)?,
        };
        let lr = lr_at(&stage.schedule, self.state.stage_step, stage.total);
        let applied = loss.is_finite() && grad_norm.is_finite() && g.supervised > 0;
        if applied {
            let scale = self.cfg.optim.clip_scale(grad_norm);
            if self.opt.is_sharded() {
                let blocks = match blocks {
                    Some(b) => b,
                    None => self.opt.grad_blocks(&g.grads)?,
                };
                let _w = self.dp.watch("gathering the updated parameters");
                self.opt.update_sharded(&blocks, lr, scale, self.dp.comm())?;
            } else {
                self.opt.update(&g.grads, lr, scale)?;
            }
            self.state.consecutive_nonfinite = 0;
            self.first_loss.get_or_insert(loss);
        } else {
            self.state.skipped_steps += 1;
            self.state.consecutive_nonfinite += 1;
        }
        Ok(StepOutcome {
            loss,
            grad_norm,
            lr,
            applied,
            stop,
        })
    }

    /// Whether the gradients are reduce-scattered (`train.optimizer_sharding = "zero2"` over
    /// several ranks) rather than all-reduced.
    fn zero2(&self) -> bool {
        self.cfg.train.optimizer_sharding == super::zero::OptimizerSharding::Zero2 && self.opt.is_sharded()
    }

    /// Advances the counters, computes the validation loss when due, and writes and shows the
    /// step's metrics.
    fn record(
        &mut self,
        batches: &StepBatches,
        loader: Vec<StateDelta>,
        o: &StepOutcome,
        stage: &StageRun,
        t0: Instant,
    ) -> Result<StepMetrics> {
        let step_tokens: u64 = batches.counts.iter().map(|m| m.tokens as u64).sum();
        let supervised = batches.supervised() as u64;
        let elapsed = self.elapsed();
        let st = &mut self.state;
        st.step += 1;
        st.stage_step += 1;
        st.optimizer_updates = self.opt.steps;
        st.tokens += step_tokens;
        st.supervised_tokens += supervised;
        st.lr = o.lr;
        st.last_loss = finite(o.loss);
        st.elapsed_s = elapsed;
        let step = st.step;
        let step_s = t0.elapsed().as_secs_f64().max(1e-9);
        let tokens_per_s = step_tokens as f64 / step_s;
        // MFU counts the tokens the model computes on for a reason: padding is waste.
        let real_tokens: u64 = batches.counts.iter().map(|m| (m.tokens - m.padding) as u64).sum();
        let state = st.loader.as_mut().context("the loader state of the stage is missing")?;
        for d in loader {
            state.apply(d)?;
        }
        let (stats, epoch) = (state.position.stats.clone(), state.position.epoch);
        let m = StepMetrics {
            step,
            stage: stage.name.clone(),
            loss: finite(o.loss),
            lr: o.lr,
            grad_norm: finite(o.grad_norm),
            tokens: self.state.tokens,
            step_tokens,
            supervised_tokens: supervised,
            tokens_per_s,
            elapsed_s: self.state.elapsed_s,
            epoch,
            skipped: !o.applied,
            bad_records: stats.bad_records,
            padding_fraction: stats.padding_fraction(),
            val_loss: self.validate_if_due(step)?,
            peak_rss_mb: self.device.is_cpu().then(device::peak_rss_mb).flatten(),
            peak_device_memory_gib: device::peak_device_memory_gib(&self.device),
            mfu: self.mfu(real_tokens as f64 / step_s / self.dp.world as f64),
        };
        if let Some(log) = &mut self.metrics {
            log.append(&m)?;
        }
        if let Some(tb) = &mut self.tensorboard {
            tb.step(&m)?;
        }
        self.progress.step(&m, self.state.stage_step, stage.total);
        if !o.applied {
            self.progress.note(&format!(
                "step {step}: non-finite loss or gradient (loss {}, grad norm {}); update skipped",
                o.loss, o.grad_norm
            ));
        }
        Ok(m)
    }

    /// The validation loss of `[eval]` on the steps it is due (rank 0 computes it alone).
    fn validate_if_due(&mut self, step: u64) -> Result<Option<f64>> {
        let every = self.cfg.eval.as_ref().map_or(u64::MAX, |e| e.every_steps);
        if !step.is_multiple_of(every) {
            return Ok(None);
        }
        let l = match &self.validation {
            Some(v) => v.loss(&self.model, &self.builder).context("validation loss")?,
            None => None,
        };
        // The other ranks (no validation set) wait for rank 0's pass, however long.
        self.dp.wait_for_writer()?;
        if self.dp.is_writer() {
            self.state.last_val_loss = l;
            self.last_val_step = Some(step);
        }
        Ok(l)
    }

    /// Model FLOPs utilisation of a step (GPU runs on a card of known peak).
    fn mfu(&self, tokens_per_s: f64) -> Option<f64> {
        let fpt = self.model.config.flops_per_token(self.cfg.data.seq_len);
        device::mfu(&self.device, tokens_per_s, fpt)
    }

    /// After a step: stop on too many non-finite steps, save when due (and hand the checkpoint
    /// to CodeArena), stop with a checkpoint on SIGINT/SIGTERM (`stop`: received by some rank
    /// before the step's reduction, so every rank stops after the same step).
    fn after_step(&mut self, m: &StepMetrics, stop: Option<&'static str>) -> Result<()> {
        let step = m.step;
        if self.state.consecutive_nonfinite >= self.cfg.guards.max_consecutive_nonfinite {
            let dir = self.save()?;
            bail!(
                "stopping: {} steps in a row had a non-finite loss or gradient (the last at step {step}); the \
                 last good weights are saved in {} — lower optim.lr or check the data before resuming",
                self.state.consecutive_nonfinite,
                dir.display()
            );
        }
        if self.cfg.checkpoint.due(step) {
            let dir = self.save()?;
            if let Some(mut arena) = self.arena.take() {
                arena.on_checkpoint(step, &dir, self);
                self.arena = Some(arena);
            }
            if self.cfg.arena.is_some() {
                // Rank 0 evaluated the checkpoint alone; the others waited here.
                self.dp.wait_for_writer()?;
            }
        }
        if let Some(signal) = stop {
            let checkpoint = self.saved_or_save()?;
            self.progress.finish();
            return Err(Stopped {
                signal,
                step,
                checkpoint,
                resume: resume_command(&self.dir),
            }
            .into());
        }
        Ok(())
    }

    /// Writes the checkpoint of the current step (rank 0; the other ranks wait for it).
    /// With a sharded optimizer state every rank first writes its part into the checkpoint's
    /// temporary directory (between two barriers).
    pub(super) fn save(&mut self) -> Result<PathBuf> {
        let step = self.state.step;
        let what = || format!("saving the checkpoint of step {step}");
        let sharded = self.opt.is_sharded();
        if sharded {
            if self.dp.is_writer() {
                checkpoint::begin(&self.dir, step).with_context(what)?;
            }
            self.dp.barrier()?;
            let tmp = checkpoint::tmp_dir(&self.dir, step);
            checkpoint::write_optimizer_shard(&tmp, &self.opt, self.dp.rank, self.dp.world).with_context(what)?;
            self.dp.barrier()?;
        }
        if !self.dp.is_writer() {
            self.dp.barrier()?;
            self.last_saved = Some(step);
            return Ok(self.dir.join(checkpoint::step_dir_name(step)));
        }
        let dir = if sharded {
            let tmp = checkpoint::tmp_dir(&self.dir, step);
            checkpoint::commit(&self.dir, &tmp, &self.model, None, &self.state, &self.files)
        } else {
            checkpoint::save(&self.dir, &self.model, &self.opt, &self.state, &self.files)
        }
        .with_context(what)?;
        self.dp.barrier()?;
        self.last_saved = Some(self.state.step);
        self.progress.note(&format!("saved {}", dir.display()));
        if let Err(e) = self.write_loss_curve() {
            self.progress.note(&format!("could not draw loss.svg: {e:#}"));
        }
        Ok(dir)
    }

    /// The checkpoint of the current step: the one already saved, or a new one.
    pub(super) fn saved_or_save(&mut self) -> Result<PathBuf> {
        if self.last_saved == Some(self.state.step) {
            Ok(self.dir.join(checkpoint::step_dir_name(self.state.step)))
        } else {
            self.save()
        }
    }
}

/// CodeArena reports into the run's progress notes and `metrics.jsonl`.
impl ArenaSink for Trainer {
    fn note(&mut self, text: &str) {
        self.progress.note(text);
    }

    fn metrics(&mut self, line: &ArenaMetrics) {
        if let Some(Err(e)) = self.metrics.as_mut().map(|log| log.append(line)) {
            self.progress
                .note(&format!("CodeArena: could not write metrics: {e:#}"));
        }
    }
}
