//! `syncoder plan --config C`: the memory a run needs (`memory::estimate`), for the config as
//! given and for each activation-checkpointing choice, whether it fits common cards (or a given
//! memory size), and the same step's estimate for PyTorch + transformers without fused ops, as
//! a table. Works from the config alone: the model's `config.json` comes from `model.path`,
//! `model.init_config`, the built-in shapes of the Qwen2.5-Coder family for `model.hub`, or
//! `--model-config`; nothing is downloaded and no weight is read.
//!
//! With `run.world_size` W > 1 (`--world-size W`) it adds the memory per rank of the same
//! micro-batch data-parallel over W ranks: plain DP, ZeRO-1 and ZeRO-2, with and without
//! activation checkpointing (`memory::sharded`).

use super::config::RunConfig;
use super::memory::{for_run, gib, remedies, sharded, Sharding, Widths};
use super::plan::group;
use crate::model::training::Checkpointing;
use crate::model::Qwen2Config;
use anyhow::{bail, Context, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Cards the plan answers for when no memory size is given: (name, GiB the driver reports).
pub const CARDS: [(&str, f64); 6] = [
    ("RTX 4090 24GB", 23.6),
    ("L40S 48GB", 44.4),
    ("A100 40GB", 39.4),
    ("A100 80GB", 79.2),
    ("H100 80GB", 79.1),
    ("H200 141GB", 139.8),
];

/// The `config.json` of the Qwen2.5-Coder bases (and their -Instruct twins, same shapes).
const BUILT_IN: [(&str, &str); 4] = [
    (
        "qwen2.5-coder-0.5b",
        include_str!("../../configs/models/qwen2.5-coder-0.5b.json"),
    ),
    (
        "qwen2.5-coder-1.5b",
        include_str!("../../configs/models/qwen2.5-coder-1.5b.json"),
    ),
    (
        "qwen2.5-coder-7b",
        include_str!("../../configs/models/qwen2.5-coder-7b.json"),
    ),
    (
        "qwen2.5-coder-32b",
        include_str!("../../configs/models/qwen2.5-coder-32b.json"),
    ),
];

/// The model's shape for a run config: `model_config` if given, else from the config's model
/// source without touching the network.
pub fn model_config(cfg: &RunConfig, model_config: Option<&Path>) -> Result<(Qwen2Config, String)> {
    if let Some(p) = model_config {
        return Ok((Qwen2Config::from_file(p)?, p.display().to_string()));
    }
    let m = &cfg.model;
    if let Some(p) = &m.init_config {
        return Ok((Qwen2Config::from_file(p)?, p.display().to_string()));
    }
    if let Some(dir) = &m.path {
        let p = dir.join("config.json");
        return Ok((Qwen2Config::from_file(&p)?, p.display().to_string()));
    }
    if let Some(repo) = &m.hub {
        let name = repo.rsplit('/').next().unwrap_or(repo).to_lowercase();
        let base = name.strip_suffix("-instruct").unwrap_or(&name);
        if let Some((_, json)) = BUILT_IN.iter().find(|(n, _)| *n == base) {
            let c = Qwen2Config::from_json(json).with_context(|| format!("the built-in shape of {repo}"))?;
            return Ok((c, format!("{repo} (built-in shape)")));
        }
        bail!(
            "model.hub = {repo:?}: no built-in shape for it; give its config.json with --model-config FILE \
             (built in: Qwen/Qwen2.5-Coder-0.5B, -1.5B, -7B, -32B and their -Instruct twins)"
        );
    }
    bail!("the config names no model (model.path, model.hub or model.init_config)")
}

/// What `plan` prints for a run config.
pub struct PlanReport {
    pub text: String,
    /// The peak of the config as given, in bytes.
    pub peak: u64,
    /// Whether it fits `memory_gib` (when given).
    pub fits: Option<bool>,
}

/// PyTorch + transformers' `Qwen2ForCausalLM` for the same micro-batch, trained the common way
/// (Hugging Face Trainer, bf16 autocast over f32 weights, SDPA attention, no fused kernels, no
/// checkpointing): f32 weights, gradients and AdamW moments (16 bytes per parameter, 12 with
/// f32-only) and what autograd keeps per layer and token — both norms' input, f32 upcast and
/// normalised copy; q/k/v projections, RoPE's inputs and rotated halves, k and v repeated to
/// every query head, SDPA's output and log-sum-exp, the output projection's input; the MLP's
/// input, gate, SiLU, up and product — plus the full logits (bf16, their f32 upcast and
/// log-softmax, and the gradient on the way back). An estimate from the model's code, for the
/// ratio only.
pub fn transformers_estimate(cfg: &Qwen2Config, tokens: u64, act_bytes: u64) -> u64 {
    let p = cfg.num_parameters() as u64;
    let b = act_bytes;
    let Widths { h, i, v, q, kv } = Widths::of(cfg);
    let norms = 2 * (2 * b * h + 8 * h);
    let attn = b * h + b * (q + 2 * kv) + 2 * b * (q + kv) + 2 * b * q + 2 * b * q + 4 * cfg.num_attention_heads as u64;
    let mlp = b * h + 4 * b * i;
    let layers = cfg.num_hidden_layers as u64 * tokens * (norms + attn + mlp);
    let logits = tokens * v * (b + 4 + 4) + tokens * v * (4 + b);
    let state = p * 16;
    state + layers + logits + (1 << 30)
}

/// The plan of a run config; `memory_gib`: the memory to check against (else the list of
/// cards for a GPU run, the machine's available memory for a CPU run).
pub fn report(cfg: &RunConfig, model: &Qwen2Config, source: &str, memory_gib: Option<f64>) -> PlanReport {
    let gpu = cfg.run.device != crate::device::DeviceSpec::Cpu;
    let est = for_run(cfg, model, gpu);
    let tokens = (cfg.batch.micro_batch_rows * cfg.data.seq_len) as u64;
    let mut out = String::new();
    let dtype = format!("{:?}", cfg.run.dtype.dtype()).to_lowercase();
    let _ = writeln!(
        out,
        "model        {source}: {} parameters ({} layers, hidden {}, heads {}/{} kv, intermediate {}, vocab {}), {dtype} on {}",
        group(model.num_parameters() as u64),
        model.num_hidden_layers,
        model.hidden_size,
        model.num_attention_heads,
        model.num_kv_heads(),
        model.intermediate_size,
        model.vocab_size,
        cfg.run.device,
    );
    let _ = writeln!(
        out,
        "micro-batch  {} row(s) × {} tokens = {} tokens; train.activation_checkpointing = {}",
        cfg.batch.micro_batch_rows,
        cfg.data.seq_len,
        group(tokens),
        cfg.train.activation_checkpointing
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| memory per process | GiB |");
    let _ = writeln!(out, "|---|---|");
    let rows: [(&str, u64); 6] = [
        ("parameters", est.parameters),
        (
            "gradients (f32 buffers, + copies in the parameter dtype)",
            est.gradients,
        ),
        ("AdamW state (f32 moments, + f32 masters)", est.optimizer),
        ("activations kept for the backward (one micro-batch)", est.activations),
        (
            "working set (loss chunk / a layer's backward / recomputed span)",
            est.working,
        ),
        (
            if gpu {
                "runtime (CUDA context, cuBLAS workspace)"
            } else {
                "runtime (binary, tokenizer, data pipeline)"
            },
            est.runtime,
        ),
    ];
    for (what, b) in rows {
        let _ = writeln!(out, "| {what} | {:.2} |", gib(b));
    }
    let _ = writeln!(out, "| **peak** | **{:.2}** |", gib(est.peak()));
    let _ = writeln!(out);

    let _ = writeln!(out, "| train.activation_checkpointing | activations GiB | peak GiB |");
    let _ = writeln!(out, "|---|---|---|");
    let layers = model.num_hidden_layers.max(1);
    let mut choices = vec![Checkpointing::None, Checkpointing::Every(1)];
    for n in [2, 4] {
        if n < layers {
            choices.push(Checkpointing::Every(n));
        }
    }
    for c in choices {
        let mut alt = cfg.clone();
        alt.train.activation_checkpointing = c;
        let e = for_run(&alt, model, gpu);
        let mark = if c == cfg.train.activation_checkpointing {
            " (as configured)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| {}{mark} | {:.2} | {:.2} |",
            c,
            gib(e.activations),
            gib(e.peak())
        );
    }
    let _ = writeln!(out);
    if cfg.run.world_size > 1 {
        data_parallel_table(&mut out, cfg, model, gpu, memory_gib);
    }
    let act_bytes = if cfg.run.dtype.dtype() == candle_core::DType::F32 {
        4
    } else {
        2
    };
    let baseline = transformers_estimate(model, tokens, act_bytes);
    let _ = writeln!(
        out,
        "PyTorch + transformers, unfused (HF Trainer, bf16 autocast, SDPA, no checkpointing), same micro-batch: \
         ~{:.1} GiB → syncoder / transformers = {:.2}",
        gib(baseline),
        est.peak() as f64 / baseline as f64
    );

    let fits = match memory_gib {
        Some(g) => {
            let ok = gib(est.peak()) <= g;
            let _ = writeln!(
                out,
                "fits {g:.1} GiB: {}",
                if ok {
                    "yes".to_string()
                } else {
                    format!("no — {}", remedies(cfg))
                }
            );
            Some(ok)
        }
        None if gpu => {
            let verdicts: Vec<String> = CARDS
                .iter()
                .map(|(name, g)| format!("{name} {}", if gib(est.peak()) <= *g { "yes" } else { "no" }))
                .collect();
            let _ = writeln!(out, "fits (one card per process): {}", verdicts.join(", "));
            None
        }
        None => {
            if let Some(avail) = super::memory::available() {
                let ok = est.peak() <= avail;
                let _ = writeln!(
                    out,
                    "fits this machine ({:.1} GiB available): {}",
                    gib(avail),
                    if ok { "yes" } else { "no" }
                );
                Some(ok)
            } else {
                None
            }
        }
    };
    PlanReport {
        text: out,
        peak: est.peak(),
        fits,
    }
}

/// Per-rank memory over `run.world_size` ranks for each sharding, with and without activation
/// checkpointing, and the smallest listed card (or the given size) that holds it.
fn data_parallel_table(out: &mut String, cfg: &RunConfig, model: &Qwen2Config, gpu: bool, memory_gib: Option<f64>) {
    let world = cfg.run.world_size as u64;
    let _ = writeln!(
        out,
        "data parallel over {world} ranks, per rank (the ZeRO-2 rows shard the gradient buffers, which the trainer's \
         \"zero2\" does not do yet: it needs ZeRO-1's memory):"
    );
    let _ = writeln!(out);
    let fits_head = match memory_gib {
        Some(g) => format!("fits {g:.1} GiB"),
        None => "smallest card that holds it".into(),
    };
    let _ = writeln!(
        out,
        "| sharding | train.activation_checkpointing | gradients GiB | AdamW state GiB | peak GiB | {fits_head} |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut cards = CARDS.to_vec();
    cards.sort_by(|a, b| a.1.total_cmp(&b.1));
    for sharding in Sharding::ALL {
        for c in [Checkpointing::None, Checkpointing::Every(1)] {
            let mut alt = cfg.clone();
            alt.train.activation_checkpointing = c;
            let e = sharded(model, for_run(&alt, model, gpu), world, sharding);
            let peak = gib(e.peak());
            let fits = match memory_gib {
                Some(g) => (if peak <= g { "yes" } else { "no" }).to_string(),
                None => cards
                    .iter()
                    .find(|(_, g)| peak <= *g)
                    .map_or("none listed".to_string(), |(name, _)| name.to_string()),
            };
            let _ = writeln!(
                out,
                "| {} | {c} | {:.2} | {:.2} | {peak:.2} | {fits} |",
                sharding.name(),
                gib(e.gradients),
                gib(e.optimizer),
            );
        }
    }
    let _ = writeln!(out);
}

/// `syncoder plan`.
pub fn run(config: &Path, sets: &[String], model_cfg: Option<&PathBuf>, memory_gib: Option<f64>) -> Result<bool> {
    let cfg = RunConfig::load(config, sets)?;
    let (model, source) = model_config(&cfg, model_cfg.map(PathBuf::as_path))?;
    let r = report(&cfg, &model, &source, memory_gib);
    print!("{}", r.text);
    Ok(r.fits.unwrap_or(true))
}
