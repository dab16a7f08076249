//! Benchmark (not a test): one f32 CPU training step (forward + backward) of a small Qwen2,
//! hidden 256, 4 layers, 4 heads / 2 kv heads, intermediate 704, vocab 8192, batch 4 × 256.
//! Prints two tables: the median step time of the explicit step the trainer runs and of the
//! candle-autograd reference (with its forward / backward split), and the time of
//! each op family (forward + backward, measured alone at the step's shapes, times its count per
//! step) to show what dominates.
//! Run: `cargo bench --bench train_step` (PyTorch side: `scripts/bench_torch.py`; both at once:
//! `scripts/bench_cpu_step.sh`).

/// mimalloc: glibc malloc contends badly across the tokenizer's and rayon's threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::randn;
use std::time::Instant;
use syncoder::model::training::{Checkpointing, GradBuffers};
use syncoder::model::{PackedBatch, Qwen2, Qwen2Config};
use syncoder::ops::{linear_cross_entropy, rms_norm, swiglu, varlen_causal_attention, QkvHeads, RopeTable};
use syncoder::train::step::{step_gradients_into, MicroBatch};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    #[cfg(feature = "openblas")]
    syncoder::ops::blas::init();
    let cfg = Qwen2Config::from_json(
        r#"{"vocab_size":8192,"hidden_size":256,"intermediate_size":704,"num_hidden_layers":4,
            "num_attention_heads":4,"num_key_value_heads":2,"tie_word_embeddings":true,
            "rope_theta":10000.0,"rms_norm_eps":1e-6,"max_position_embeddings":4096}"#,
    )?;
    let (rows, seq) = (4usize, 256usize);
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let model = Qwen2::random(cfg.clone(), 0, DType::F32, &Device::Cpu, true)?;
    let ids: Vec<u32> = (0..rows * seq).map(|i| ((i * 7919) % cfg.vocab_size) as u32).collect();
    let positions: Vec<u32> = (0..rows).flat_map(|_| 0..seq as u32).collect();
    let batch = PackedBatch::new(ids, positions, rows, &Device::Cpu)?;
    let targets = batch.next_token_targets(None)?;
    // The trainer's step: explicit forward/backward into f32 buffers allocated once.
    let mask = vec![true; rows * seq];
    let supervised = batch
        .next_token_target_ids(Some(&mask))?
        .iter()
        .filter(|&&t| t >= 0)
        .count();
    let micro = MicroBatch {
        batch: batch.clone(),
        targets: targets.clone(),
        supervised,
        tokens: rows * seq,
        padding: 0,
    };
    let buffers = GradBuffers::new(&cfg, &Device::Cpu)?;
    let mut explicit = vec![];
    for i in 0..iters + 2 {
        let t0 = Instant::now();
        let g = step_gradients_into(
            &model,
            &buffers,
            std::slice::from_ref(&micro),
            1.0,
            Checkpointing::None,
            &mut |_| {},
        )?;
        drop(g);
        if i >= 2 {
            explicit.push(t0.elapsed().as_secs_f64());
        }
    }
    // The autograd path over the same model (the tests' reference), split forward / backward.
    let (mut fwd, mut bwd, mut total) = (vec![], vec![], vec![]);
    for i in 0..iters + 2 {
        let t0 = Instant::now();
        let out = model.loss(&batch, &targets)?;
        let loss = (out.loss_sum / out.supervised as f64)?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        drop(grads);
        let t2 = Instant::now();
        if i >= 2 {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            total.push((t2 - t0).as_secs_f64());
        }
    }
    let threads = rayon::current_num_threads();
    println!("| impl | threads | step s (median of {iters}) | forward s | backward s | tokens/s |");
    println!("|---|---|---|---|---|---|");
    #[cfg(feature = "openblas")]
    let gemm = format!("OpenBLAS {}", syncoder::ops::blas::core_name().unwrap_or("not loaded"));
    #[cfg(not(feature = "openblas"))]
    let gemm = "gemm crate".to_string();
    let step = median(explicit);
    println!(
        "| syncoder (explicit step, as trained; {gemm}) | {threads} | {step:.4} | – | – | {:.0} |",
        (rows * seq) as f64 / step
    );
    let step = median(total);
    println!(
        "| syncoder (candle autograd, reference) | {threads} | {step:.4} | {:.4} | {:.4} | {:.0} |",
        median(fwd),
        median(bwd),
        (rows * seq) as f64 / step
    );
    op_families(&cfg, &batch, &targets, iters)?;
    Ok(())
}

/// Median seconds of `f` (forward + backward of one op) over `iters` runs.
fn time_op(iters: usize, mut f: impl FnMut() -> candle_core::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut v = vec![];
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    Ok(median(v))
}

fn var(seed: u64, shape: &[usize]) -> candle_core::Result<Var> {
    Var::from_tensor(&randn(seed, shape, 1.0, &Device::Cpu)?)
}

/// Backward of `out` (through a plain sum).
fn backward(out: Tensor) -> candle_core::Result<()> {
    out.sum_all()?.backward()?;
    Ok(())
}

fn op_families(cfg: &Qwen2Config, batch: &PackedBatch, targets: &Tensor, iters: usize) -> anyhow::Result<()> {
    let n = batch.num_tokens();
    let (h, i, v, l) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.num_hidden_layers,
    );
    let (hq, hkv, d) = (cfg.num_attention_heads, cfg.num_kv_heads(), cfg.head_dim());
    let x = var(1, &[n, h])?;
    let mut rows: Vec<(String, f64)> = vec![];
    let w = var(2, &[v, h])?;
    rows.push((
        "output projection + cross-entropy (fused)".into(),
        time_op(iters, || {
            linear_cross_entropy(&x, &w, targets, None)?
                .loss_sum
                .backward()
                .map(|_| ())
        })?,
    ));
    let mut linears = 0.0;
    // The layer's four GEMMs: q/k/v stacked, o, gate/up stacked, down.
    for (k, (out_dim, in_dim)) in [((hq + 2 * hkv) * d, h), (h, hq * d), (2 * i, h), (h, i)]
        .into_iter()
        .enumerate()
    {
        let (xin, wv) = (
            var(10 + k as u64, &[n, in_dim])?,
            var(20 + k as u64, &[out_dim, in_dim])?,
        );
        linears += time_op(iters, || backward(xin.matmul(&wv.t()?)?))?;
    }
    rows.push((format!("linear layers (4 stacked per layer) x {l}"), linears * l as f64));
    let (q, k, vv) = (var(3, &[n, hq, d])?, var(4, &[n, hkv, d])?, var(5, &[n, hkv, d])?);
    let scale = 1.0 / (d as f64).sqrt();
    let att = time_op(iters, || {
        backward(varlen_causal_attention(&q, &k, &vv, &batch.segments, scale)?)
    })?;
    rows.push((format!("attention (fused, varlen) x {l}"), att * l as f64));
    let table = RopeTable::new(&batch.positions, d, cfg.rope_theta(), &Device::Cpu)?;
    let wqkv = (hq + 2 * hkv) * d;
    let (qkv, qkv_bias) = (var(11, &[n, wqkv])?, var(12, &[wqkv])?);
    let heads = QkvHeads { q: hq, kv: hkv };
    let rq = time_op(iters, || {
        backward(syncoder::ops::rope::check::qkv_rope_flat(
            &qkv, &qkv_bias, &table, heads,
        )?)
    })?;
    rows.push((format!("q/k/v bias + rope x {l}"), rq * l as f64));
    let nw = var(6, &[h])?;
    let rn = time_op(iters, || backward(rms_norm(&x, &nw, 1e-6)?))?;
    rows.push((format!("rms_norm x {}", 2 * l + 1), rn * (2 * l + 1) as f64));
    let gu = var(7, &[n, 2 * i])?;
    rows.push((
        format!("swiglu x {l}"),
        time_op(iters, || backward(swiglu(&gu)?))? * l as f64,
    ));
    println!();
    println!("| op family (forward + backward, measured alone) | s per step |");
    println!("|---|---|");
    let mut sum = 0.0;
    for (name, t) in &rows {
        println!("| {name} | {t:.4} |");
        sum += t;
    }
    println!("| sum | {sum:.4} |");
    Ok(())
}
