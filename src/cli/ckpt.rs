//! `syncoder ckpt inspect`: what a checkpoint (or a run's latest) holds.

use crate::model::weights::WeightFiles;
use crate::model::Qwen2Config;
use crate::train::checkpoint::{self, OPTIMIZER};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CkptCommand {
    /// Print what a checkpoint holds (a step directory, or a run directory's latest).
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: CkptCommand) -> Result<()> {
    match cmd {
        CkptCommand::Inspect(a) => inspect(&a.dir, a.json),
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| it.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn inspect(dir: &Path, as_json: bool) -> Result<()> {
    let step_dir = if dir.join("config.json").is_file() {
        dir.to_path_buf()
    } else {
        checkpoint::latest(dir)?.with_context(|| {
            format!(
                "{}: neither a model directory (config.json) nor a run directory with `latest`",
                dir.display()
            )
        })?
    };
    let config = Qwen2Config::from_file(&step_dir.join("config.json"))?;
    let weights = WeightFiles::open(&step_dir)?;
    let names = weights.names();
    let state = if step_dir.join(checkpoint::TRAINER_STATE).is_file() {
        Some(checkpoint::read_state(&step_dir)?)
    } else {
        None
    };
    let optimizer_tensors = if step_dir.join(OPTIMIZER).is_file() {
        let bytes = std::fs::read(step_dir.join(OPTIMIZER))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: corrupt", step_dir.join(OPTIMIZER).display()))?;
        Some(st.names().len())
    } else {
        None
    };
    let files: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&step_dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let out = json!({
        "dir": step_dir,
        "files": files,
        "bytes": dir_size(&step_dir),
        "model": {
            "parameters": config.num_parameters(),
            "layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size,
            "vocab_size": config.vocab_size,
            "heads": config.num_attention_heads,
            "kv_heads": config.num_kv_heads(),
            "tied_embeddings": config.tie_word_embeddings,
            "torch_dtype": config.extra.get("torch_dtype"),
            "tensors": names.len(),
        },
        "optimizer_tensors": optimizer_tensors,
        "trainer_state": state,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("checkpoint  {}", step_dir.display());
    println!(
        "model       {} parameters, {} layers, hidden {}, vocab {}, heads {}/{} kv, {} tensors, dtype {}",
        config.num_parameters(),
        config.num_hidden_layers,
        config.hidden_size,
        config.vocab_size,
        config.num_attention_heads,
        config.num_kv_heads(),
        names.len(),
        config.extra.get("torch_dtype").and_then(|v| v.as_str()).unwrap_or("?")
    );
    println!("size        {:.1} MiB", dir_size(&step_dir) as f64 / (1 << 20) as f64);
    println!("files       {}", files.join(" "));
    match optimizer_tensors {
        Some(n) => println!("optimizer   AdamW state, {n} tensors"),
        None => println!("optimizer   none (model only)"),
    }
    match state {
        Some(s) => {
            let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
            if s.complete {
                println!(
                    "training    step {}, run complete (last stage {:?}), {} updates, {} skipped",
                    s.step, s.stage_name, s.optimizer_updates, s.skipped_steps
                );
            } else {
                println!(
                    "training    step {} (stage {:?}, step {} of {}), {} updates, {} skipped",
                    s.step, s.stage_name, s.stage_step, s.stage_total_steps, s.optimizer_updates, s.skipped_steps
                );
            }
            println!("tokens      {} ({} supervised)", s.tokens, s.supervised_tokens);
            println!(
                "loss        {}  val {}  lr {:.3e}",
                f(s.last_loss),
                f(s.last_val_loss),
                s.lr
            );
            println!("elapsed     {:.1} s", s.elapsed_s);
            if let Some(l) = &s.loader {
                println!(
                    "data        epoch {}, shard {} line {}, {} records read ({} bad)",
                    l.epoch, l.shard_pos, l.line, l.stats.records, l.stats.bad_records
                );
            }
            println!("config      sha256 {}", s.config_hash);
            println!("written by  syncoder {}", s.crate_version);
        }
        None => println!("training    no trainer_state.json (not a training checkpoint)"),
    }
    Ok(())
}
