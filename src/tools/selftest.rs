//! `syncoder selftest`: every fused op's kernel checks (each op's `check::selftest`, run by the
//! harness in `ops::check`) and one training step of a small model (every gradient, determinism,
//! accumulation), on a device in each dtype it trains in. On CUDA the expected values come from the CPU twins; on the CPU the fused CPU ops
//! are checked against their composed references, which exercises every check without a GPU.

use crate::data::pack::PackedRow;
use crate::model::{Qwen2, Qwen2Config};
use crate::ops;
use crate::ops::check::{CheckResult, Suite};
use crate::train::step::{step_gradients, MicroBatch};
use anyhow::Result;
use candle_core::{DType, Device};
use rand::Rng;

pub use crate::ops::check::table;

/// Runs every check on `device` in each dtype it trains in (f32 on CPU; f32 and bf16 on CUDA).
pub fn run(device: &Device, seed: u64) -> Result<Vec<CheckResult>> {
    let dtypes: &[DType] = if device.is_cpu() {
        &[DType::F32]
    } else {
        &[DType::F32, DType::BF16]
    };
    let mut out = Vec::new();
    for &dtype in dtypes {
        let mut s = Suite::new(device, dtype, seed, &mut out);
        ops::rms_norm::check::selftest(&mut s)?;
        ops::rope::check::selftest(&mut s)?;
        ops::swiglu::check::selftest(&mut s)?;
        ops::embedding::check::selftest(&mut s)?;
        ops::flash_attention::check::selftest(&mut s)?;
        ops::chunked_attention::check::selftest(&mut s)?;
        ops::linear_cross_entropy::check::selftest(&mut s)?;
        ops::grad_accumulate::check::selftest(&mut s)?;
        ops::adamw::check::selftest(&mut s)?;
        ops::grad_norm::check::selftest(&mut s)?;
        train_step(&mut s)?;
    }
    Ok(out)
}

/// What one training step produced, on the host.
struct StepResult {
    loss: f64,
    norm: f64,
    /// Every parameter's gradient, by name.
    grads: Vec<(String, Vec<f32>)>,
    /// The loss after one AdamW update.
    after: f64,
}

/// One training step of a small model (two packed rows of documents, ignored targets) through
/// the trainer's own `step_gradients`, device vs CPU f32: the loss, every parameter's gradient
/// (normwise, the worst named), the gradient norm and the loss after one AdamW update; then on
/// the device the same step again (identical bits: the step is deterministic) and the step in
/// two micro-batches (gradient accumulation) against the one-batch step.
fn train_step(s: &mut Suite) -> Result<()> {
    let cfg = small_model_config()?;
    let (rows, seq) = (2usize, 48usize);
    let packed: Vec<PackedRow> = (0..rows)
        .map(|_| {
            let ids: Vec<u32> = (0..seq).map(|_| s.rng.random_range(0..cfg.vocab_size as u32)).collect();
            PackedRow {
                ids,
                positions: (0..seq).map(|i| (i % 29) as u32).collect(),
                mask: (0..seq).map(|i| i % 5 != 0).collect(),
                doc_lens: vec![29, seq - 29],
            }
        })
        .collect();
    let run = |device: &Device, dtype: DType, micro_rows: usize| -> Result<StepResult> {
        let model = Qwen2::random(cfg.clone(), 7, dtype, device, true)?;
        let micros = packed
            .chunks(micro_rows)
            .map(|c| MicroBatch::new(c, device))
            .collect::<Result<Vec<_>>>()?;
        let g = step_gradients(&model, &micros, 1.0, &mut |_| {})?;
        let norm = ops::global_norm(&g.grads)?;
        let grads = model
            .parameters()
            .iter()
            .zip(&g.grads)
            .map(|((n, _), t)| Ok((n.clone(), t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)))
            .collect::<Result<_>>()?;
        let section = crate::train::OptimConfig {
            lr: 1e-3,
            ..Default::default()
        };
        let mut opt = crate::train::optimizer::AdamW::new(&model, &section)?;
        opt.update(&g.grads, 1e-3, 1.0)?;
        let all = MicroBatch::new(&packed, device)?;
        let after = model.loss(&all.batch, &all.targets)?;
        let after = after.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()? / all.supervised.max(1) as f64;
        Ok(StepResult {
            loss: g.loss(),
            norm,
            grads,
            after,
        })
    };
    let name = "train step (2 layers, 2x48 packed)";
    let tol = if s.dtype == DType::F32 { 1e-3 } else { 3e-2 };
    let want = run(&Device::Cpu, DType::F32, rows)?;
    s.poison()?;
    let got = match run(&s.device, s.dtype, rows) {
        Ok(got) => got,
        Err(e) => {
            s.record(name, f64::INFINITY, tol, &format!("error: {e:#}"));
            return Ok(());
        }
    };
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
    s.record(&format!("{name} loss"), rel(got.loss, want.loss), tol, "");
    let (worst, name_of_worst) = worst_gradient(&got, &want);
    s.record(
        &format!("{name} every parameter's gradient"),
        worst,
        tol,
        &format!("worst: {name_of_worst}"),
    );
    s.record(&format!("{name} grad norm"), rel(got.norm, want.norm), tol, "");
    let note = format!("loss {:.4} -> {:.4}", got.loss, got.after);
    let e = if got.after < got.loss {
        rel(got.after, want.after)
    } else {
        f64::INFINITY
    };
    s.record(&format!("{name} loss after update"), e, tol, &note);

    // The same step again: the same bits.
    let again = run(&s.device, s.dtype, rows)?;
    let same = again.loss.to_bits() == got.loss.to_bits()
        && again
            .grads
            .iter()
            .zip(&got.grads)
            .all(|((_, a), (_, b))| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    s.record(
        &format!("{name} deterministic (run twice)"),
        if same { 0.0 } else { f64::INFINITY },
        0.0,
        if same { "identical bits" } else { "the two runs differ" },
    );
    // Two micro-batches of one row each, accumulated, against the one-batch step.
    let accumulated = run(&s.device, s.dtype, 1)?;
    let (worst, name_of_worst) = worst_gradient(&accumulated, &got);
    s.record(
        &format!("{name} accumulated over 2 micro-batches"),
        worst.max(rel(accumulated.loss, got.loss)),
        tol,
        &format!("worst: {name_of_worst}"),
    );
    Ok(())
}

/// The largest normwise relative error over the parameters' gradients, and that parameter.
fn worst_gradient(got: &StepResult, want: &StepResult) -> (f64, String) {
    let mut worst = (0f64, String::from("-"));
    for ((n, g), (_, w)) in got.grads.iter().zip(&want.grads) {
        let e = ops::check::rel_err_slices(g, w);
        if e > worst.0 || e.is_nan() {
            worst = (e, n.clone());
        }
    }
    if got.grads.len() != want.grads.len() {
        worst = (f64::INFINITY, "parameter count".into());
    }
    worst
}

/// A small Qwen2 (GQA, tied embeddings, biases) for the training-step check; head dim 64, so in
/// bf16 on CUDA the step runs the flash-attention kernel.
fn small_model_config() -> Result<Qwen2Config> {
    Qwen2Config::from_json(
        r#"{"vocab_size": 503, "hidden_size": 128, "intermediate_size": 176, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
            "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
            "initializer_range": 0.02}"#,
    )
}
