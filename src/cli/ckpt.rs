//! `syncoder ckpt inspect`: what a checkpoint (or a run's latest) holds; `syncoder ckpt export`:
//! a checkpoint's model alone (weights, config, tokenizer, generation config) in a new directory.

use crate::io::write_dir_atomic;
use crate::model::weights::WeightFiles;
use crate::model::Qwen2Config;
use crate::train::checkpoint::{self, OPTIMIZER, TRAINER_STATE, TRAINING_STATE_DIR};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CkptCommand {
    /// Print what a checkpoint holds (a step directory, or a run directory's latest).
    Inspect(InspectArgs),
    /// Copy a checkpoint's model (weights, config, tokenizer, generation config) to a new
    /// directory, without optimizer or trainer state: what to hand to vLLM, transformers or the Hub.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A step directory, or a run directory (its latest checkpoint).
    pub dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// With --json: the whole trainer state, the data loader's shuffle buffer included.
    #[arg(long, requires = "json")]
    pub full: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A step directory, or a run directory (its latest checkpoint).
    pub dir: PathBuf,
    /// The new model directory (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: CkptCommand) -> Result<()> {
    match cmd {
        CkptCommand::Inspect(a) => inspect(&a.dir, a.json, a.full),
        CkptCommand::Export(a) => export(&a.dir, &a.out),
    }
}

/// The step directory `dir` names: itself, or its run's latest.
fn step_dir_of(dir: &Path) -> Result<PathBuf> {
    if !dir.exists() {
        anyhow::bail!("{}: does not exist", dir.display());
    }
    if dir.join("config.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    checkpoint::latest(dir)?.with_context(|| {
        format!(
            "{}: neither a model directory (config.json) nor a run directory with `latest`",
            dir.display()
        )
    })
}

/// Files of a step directory's root that belong to the model (not to resuming).
fn model_files(step_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for e in std::fs::read_dir(step_dir).with_context(|| format!("listing {}", step_dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if e.file_type()?.is_file() && name != OPTIMIZER && name != TRAINER_STATE {
            files.push(e.path());
        }
    }
    files.sort();
    Ok(files)
}

fn export(dir: &Path, out: &Path) -> Result<()> {
    let step_dir = step_dir_of(dir)?;
    let files = model_files(&step_dir)?;
    write_dir_atomic(out, false, |tmp| {
        for f in &files {
            let to = tmp.join(f.file_name().expect("a listed file has a name"));
            std::fs::copy(f, &to).with_context(|| format!("copying {} to {}", f.display(), to.display()))?;
            std::fs::File::open(&to)?.sync_all()?;
        }
        Ok(())
    })
    .context("--out")?;
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    println!(
        "exported {} to {}: {}",
        step_dir.display(),
        out.display(),
        names.join(" ")
    );
    Ok(())
}

/// Bytes of the files under `dir` (its sub-directories included).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some(if m.is_dir() { dir_size(&e.path()) } else { m.len() })
                })
                .sum()
        })
        .unwrap_or(0)
}

fn inspect(dir: &Path, as_json: bool, full: bool) -> Result<()> {
    let step_dir = step_dir_of(dir)?;
    let config = Qwen2Config::from_file(&step_dir.join("config.json"))?;
    let weights = WeightFiles::open(&step_dir)?;
    let names = weights.names();
    let state = if checkpoint::is_checkpoint(&step_dir) {
        Some(checkpoint::read_state(&step_dir)?)
    } else {
        None
    };
    let optimizer = checkpoint::state_file(&step_dir, OPTIMIZER);
    let optimizer_parts = crate::train::zero::shard_world(&step_dir.join(TRAINING_STATE_DIR))?;
    let optimizer_tensors = if optimizer.is_file() {
        let bytes = std::fs::read(&optimizer)?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: corrupt", optimizer.display()))?;
        Some(st.names().len())
    } else {
        None
    };
    let files: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&step_dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .map(|n| if n == TRAINING_STATE_DIR { format!("{n}/") } else { n })
            .collect();
        v.sort();
        v
    };
    let mut state_json = serde_json::to_value(&state)?;
    if !full {
        // The references to the loader's buffered samples only matter to resuming.
        if let Some(loader) = state_json.get_mut("loader").and_then(|l| l.as_object_mut()) {
            for key in ["buffer", "pending", "ready"] {
                if let Some(v) = loader.get_mut(key) {
                    let count = |v: &serde_json::Value| v.as_str().map_or(0, |s| s.split_ascii_whitespace().count());
                    let n = match v.as_array() {
                        Some(rows) => rows.iter().map(count).sum(),
                        None => count(v),
                    };
                    *v = json!(format!("({n} samples; --full shows them)"));
                }
            }
        }
    }
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
        "optimizer_parts": optimizer_parts,
        "trainer_state": state_json,
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
    match (optimizer_tensors, optimizer_parts) {
        (Some(n), _) => println!("optimizer   AdamW state, {n} tensors"),
        (None, Some(w)) => println!("optimizer   AdamW state in {w} parts, one per rank (ZeRO-1)"),
        (None, None) => println!("optimizer   none (model only)"),
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
                    l.position.epoch,
                    l.position.shard_pos,
                    l.position.line,
                    l.position.stats.records,
                    l.position.stats.bad_records
                );
            }
            println!("config      sha256 {}", s.config_hash);
            println!("written by  syncoder {}", s.crate_version);
        }
        None => println!("training    no trainer_state.json (not a training checkpoint)"),
    }
    Ok(())
}
