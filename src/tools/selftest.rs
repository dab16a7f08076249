//! `syncoder selftest`: every fused op's kernel checks (each op's `check::selftest`, run by the
//! harness in `ops::check`) and one training step of a small model, on a device in each dtype it
//! trains in. On CUDA the expected values come from the CPU twins; on the CPU the fused CPU ops
//! are checked against their composed references, which exercises every check without a GPU.

use crate::model::{PackedBatch, Qwen2, Qwen2Config};
use crate::ops::check::{CheckResult, Suite};
use crate::ops::{self, IGNORE_INDEX};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
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
        ops::chunked_attention::check::selftest(&mut s)?;
        ops::linear_cross_entropy::check::selftest(&mut s)?;
        ops::adamw::check::selftest(&mut s)?;
        ops::grad_norm::check::selftest(&mut s)?;
        train_step(&mut s)?;
    }
    Ok(out)
}

/// One training step of a small model (two documents per row, ignored targets): the loss,
/// the gradient norm, and the loss after one AdamW update, device vs CPU f32.
fn train_step(s: &mut Suite) -> Result<()> {
    let cfg = small_model_config()?;
    let (rows, seq) = (2usize, 48usize);
    let ids: Vec<u32> = (0..rows * seq)
        .map(|_| s.rng.random_range(0..cfg.vocab_size as u32))
        .collect();
    let positions: Vec<u32> = (0..rows * seq).map(|i| ((i % seq) % 29) as u32).collect();
    let mut targets: Vec<i64> = ids.iter().skip(1).map(|&t| t as i64).collect();
    targets.push(IGNORE_INDEX);
    for t in targets.iter_mut().step_by(5) {
        *t = IGNORE_INDEX;
    }
    let run = |device: &Device, dtype: DType| -> Result<(f64, f64, f64)> {
        let model = Qwen2::random(cfg.clone(), 7, dtype, device, true)?;
        let batch = PackedBatch::new(ids.clone(), positions.clone(), rows, device)?;
        let tg = Tensor::new(targets.as_slice(), device)?;
        let out = model.loss(&batch, &tg)?;
        let supervised = out.supervised as f64;
        let loss = out.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()? / supervised;
        let grads_store = (out.loss_sum / supervised)?.backward()?;
        let grads: Vec<Tensor> = model
            .vars()
            .iter()
            .map(|(n, v)| {
                grads_store
                    .get(v.as_tensor())
                    .cloned()
                    .with_context(|| format!("no gradient for {n}"))
            })
            .collect::<Result<_>>()?;
        let norm = ops::global_norm(&grads)?;
        let section = crate::train::OptimConfig {
            lr: 1e-3,
            ..Default::default()
        };
        let mut opt = crate::train::optimizer::AdamW::new(&model, &section)?;
        opt.update(&grads, 1e-3, 1.0)?;
        let after = model.loss(&batch, &tg)?;
        let after = after.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()? / supervised;
        Ok((loss, norm, after))
    };
    let name = "train step (2 layers, 2x48 packed)";
    let tol = if s.dtype == DType::F32 { 1e-3 } else { 3e-2 };
    let want = run(&Device::Cpu, DType::F32)?;
    s.poison()?;
    match run(&s.device, s.dtype) {
        Ok(got) => {
            let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
            s.record(&format!("{name} loss"), rel(got.0, want.0), tol, "");
            s.record(&format!("{name} grad norm"), rel(got.1, want.1), tol, "");
            let note = format!("loss {:.4} -> {:.4}", got.0, got.2);
            let e = if got.2 < got.0 {
                rel(got.2, want.2)
            } else {
                f64::INFINITY
            };
            s.record(&format!("{name} loss after update"), e, tol, &note);
        }
        Err(e) => s.record(name, f64::INFINITY, tol, &format!("error: {e:#}")),
    }
    Ok(())
}

/// A small Qwen2 (GQA, tied embeddings, biases) for the training-step check.
fn small_model_config() -> Result<Qwen2Config> {
    Qwen2Config::from_json(
        r#"{"vocab_size": 503, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
            "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
            "initializer_range": 0.02}"#,
    )
}
