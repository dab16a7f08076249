//! The plan of a run, shown before its first step (and all that `train --dry-run` does): where
//! it is written, the model and its parameter count, the batch arithmetic (rows and tokens per
//! optimizer step, accumulation), each stage's steps and tokens, the data and the validation
//! set — so a wrong setting shows before hours of GPU time, not after.

use super::setup::{stage_loader, Plan, TrainOptions};
use crate::data::epoch_size::prepared_epoch_rows;
use crate::data::loader::LoaderConfig;
use crate::data::prepared::resolve_training_sources;
use anyhow::Result;
use std::fmt::Write;

/// The plan as lines of text.
pub(super) fn describe(plan: &Plan) -> String {
    let cfg = &plan.cfg;
    let mut out = String::new();
    let start = match &plan.resumed {
        Some(ckpt) => format!("resuming from {} (step {})", ckpt.display(), plan.state.step),
        None => "new run".to_string(),
    };
    let _ = writeln!(out, "run dir     {} ({start})", plan.dir.display());
    let mc = &plan.model.config;
    let _ = writeln!(
        out,
        "model       {} parameters ({} layers, hidden {}, heads {}/{} kv, vocab {}), {} on {}",
        group(mc.num_parameters() as u64),
        mc.num_hidden_layers,
        mc.hidden_size,
        mc.num_attention_heads,
        mc.num_kv_heads(),
        mc.vocab_size,
        format!("{:?}", plan.model.dtype()).to_lowercase(),
        cfg.run.device,
    );
    let rows = cfg.global_rows().unwrap_or(0);
    // The launcher's world decides the micro-batches each process runs.
    let world = plan.dp.world;
    let accum = cfg.global_micro_batches().unwrap_or(0) / world.max(1);
    let step_tokens = (rows * cfg.data.seq_len) as u64;
    let _ = writeln!(
        out,
        "batch       {rows} rows per step = {} rows × {accum} micro-batches × {} process(es); {} tokens per row \
         → {} tokens per step (padding included)",
        cfg.batch.micro_batch_rows,
        world,
        cfg.data.seq_len,
        group(step_tokens),
    );
    let mut planned: Option<u64> = Some(0);
    for (i, s) in cfg.stages.iter().enumerate() {
        let sched = cfg.stage_schedule(i);
        let length = match (s.steps, s.epochs) {
            (Some(n), None) => format!("{n} steps → {} tokens", group(n * step_tokens)),
            (steps, Some(e)) => match prepared_rows(plan, i) {
                Some(epoch_rows) => {
                    let n = super::stage::steps_for_epochs(epoch_rows, rows as u64, e, steps);
                    planned = planned.map(|p| p + n);
                    format!(
                        "{e} epoch(s) of {} rows → {n} steps → {} tokens (from the prepared shards' lengths)",
                        group(epoch_rows),
                        group(n * step_tokens)
                    )
                }
                None => {
                    planned = None;
                    let cap = steps.map_or(String::new(), |n| format!(", at most {n} steps"));
                    format!("{e} epoch(s){cap} (steps counted from the data when the stage starts)")
                }
            },
            (None, None) => "no length".to_string(),
        };
        if let (Some(p), Some(n), None) = (planned, s.steps, s.epochs) {
            planned = Some(p + n);
        }
        let done = if i < plan.state.stage {
            " — done"
        } else if i == plan.state.stage && plan.state.stage_step > 0 {
            " — in progress"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "stage {:<5} {length}; lr {:e} {}, warmup {}; data {}{done}",
            s.name,
            sched.lr,
            format!("{:?}", sched.kind).to_lowercase(),
            sched.warmup_steps,
            paths(&s.data),
        );
    }
    if let Some(steps) = planned {
        let _ = writeln!(
            out,
            "planned     {steps} optimizer steps, {} tokens",
            group(steps * step_tokens)
        );
    }
    if let Some(e) = &cfg.eval {
        let _ = writeln!(out, "validation  every {} steps on {}", e.every_steps, paths(&e.data));
    }
    let gpu = cfg.run.device != crate::device::DeviceSpec::Cpu;
    let mem = super::memory::for_run(cfg, mc, gpu);
    let _ = writeln!(
        out,
        "memory      ~{:.1} GiB peak per process ({:.1} GiB weights, gradients and AdamW state; {:.1} GiB \
         activations; train.activation_checkpointing = {}; `syncoder plan` for the table)",
        super::memory::gib(mem.peak()),
        super::memory::gib(mem.state()),
        super::memory::gib(mem.activations),
        cfg.train.activation_checkpointing,
    );
    let _ = writeln!(
        out,
        "checkpoint  every {} steps, keeping the last {}",
        cfg.checkpoint.every_steps, cfg.checkpoint.keep_last
    );
    out
}

/// Rows of one epoch of stage `i` when its data is prepared shards (from their lengths).
fn prepared_rows(plan: &Plan, i: usize) -> Option<u64> {
    let files = resolve_training_sources(&plan.cfg.stages[i].data, &plan.builder).ok()?;
    let lcfg = LoaderConfig {
        max_epochs: Some(1),
        ..stage_loader(&plan.cfg, &plan.builder, i)
    };
    prepared_epoch_rows(&lcfg, &files).ok().flatten()
}

/// Shows the plan at the start of a run (standard error, beside the progress).
pub(super) fn print(plan: &Plan, opts: &TrainOptions) {
    if !opts.dry_run {
        eprint!("{}", describe(plan));
    }
}

/// `train --dry-run`: the resolved config and the plan on standard output; nothing written.
pub fn dry_run(opts: &TrainOptions) -> Result<()> {
    let plan = Plan::make(opts)?;
    println!("# resolved config ({})", opts.config.display());
    println!("{}", plan.cfg.to_toml()?);
    print!("{}", describe(&plan));
    println!("dry run: configuration, data paths, tokenizer and model checked; nothing was written");
    Ok(())
}

fn paths(p: &[std::path::PathBuf]) -> String {
    p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// `1234567` as `1,234,567`.
pub(super) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::group(0), "0");
        assert_eq!(super::group(999), "999");
        assert_eq!(super::group(1_234_567), "1,234,567");
    }
}
