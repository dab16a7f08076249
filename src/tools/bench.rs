//! The training-step benchmark behind `syncoder bench train`: a randomly initialised model of a
//! given config (no download), batches of random tokens, full steps (forward, backward, global
//! gradient norm, fused AdamW) timed end to end, with tokens/s, model FLOPs utilisation, peak
//! memory and the time of each op family measured in isolation at the model's shapes.

use crate::device::{self, dense_bf16_peak_tflops};
use crate::model::training::{Checkpointing, GradBuffers};
use crate::model::{PackedBatch, Qwen2, Qwen2Config};
use crate::ops::{self, DocSegments, RopeTable};
use crate::train::optimizer::{AdamW, OptimConfig};
use crate::train::step::{step_gradients_into, MicroBatch};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

pub struct TrainBenchOptions {
    pub device: Device,
    /// Printed with the results ("cuda (NVIDIA H100 80GB HBM3, sm_90)").
    pub device_label: String,
    pub dtype: DType,
    pub config: Qwen2Config,
    pub seq_len: usize,
    pub batch: usize,
    pub warmup: usize,
    pub steps: usize,
    /// Dense bf16 peak of the card in TFLOP/s; `None`: looked up from the card's name.
    pub peak_tflops: Option<f64>,
    /// Also time each op family in isolation.
    pub op_times: bool,
}

#[derive(Debug, Serialize)]
pub struct OpFamilyTime {
    pub family: String,
    /// Calls per training step at these shapes.
    pub calls: usize,
    /// Milliseconds per step: one call's forward + backward, times `calls`.
    pub ms_per_step: f64,
}

#[derive(Debug, Serialize)]
pub struct TrainBenchReport {
    pub device: String,
    pub dtype: String,
    pub parameters: usize,
    pub layers: usize,
    pub hidden: usize,
    pub seq_len: usize,
    pub batch: usize,
    pub steps: usize,
    pub step_ms: f64,
    pub tokens_per_s: f64,
    /// 6·N + 12·L·d·T per token (N parameters, L layers, d attention width, T sequence length).
    pub flops_per_token: f64,
    pub achieved_tflops: f64,
    pub peak_tflops: Option<f64>,
    /// Where the peak comes from (the card it was looked up for, or the command line).
    pub peak_source: String,
    pub mfu: Option<f64>,
    /// Device memory in use at its sampled peak (GPU) or the process's peak RSS (CPU), GiB.
    pub peak_memory_gib: Option<f64>,
    /// What `syncoder plan` estimates for this model, dtype and micro-batch, GiB (its check
    /// against the measured peak on this device).
    pub planned_peak_gib: f64,
    pub first_loss: f64,
    pub last_loss: f64,
    /// Per timed step (one micro-batch): our kernel launches, our cuBLAS calls, uploads and
    /// device→host reads (`ops::device_calls`; candle's own kernels are not counted).
    pub kernels_per_step: f64,
    pub gemms_per_step: f64,
    pub uploads_per_step: f64,
    pub host_reads_per_step: f64,
    pub op_families: Vec<OpFamilyTime>,
}

fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

/// One micro-batch of `batch` rows of random tokens, one document per row.
fn random_batch(
    cfg: &Qwen2Config,
    batch: usize,
    seq: usize,
    device: &Device,
    rng: &mut ChaCha8Rng,
) -> Result<MicroBatch> {
    let ids: Vec<u32> = (0..batch * seq)
        .map(|_| rng.random_range(0..cfg.vocab_size as u32))
        .collect();
    let positions: Vec<u32> = (0..batch * seq).map(|i| (i % seq) as u32).collect();
    let mut targets = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        targets.push(if (i + 1) % seq == 0 {
            ops::IGNORE_INDEX
        } else {
            ids[i + 1] as i64
        });
    }
    let supervised = targets.iter().filter(|&&t| t != ops::IGNORE_INDEX).count();
    Ok(MicroBatch {
        batch: PackedBatch::new(ids, positions, batch, device)?,
        targets: Tensor::new(targets.as_slice(), device)?,
        supervised,
        tokens: batch * seq,
        padding: 0,
    })
}

pub fn bench_train(o: &TrainBenchOptions) -> Result<TrainBenchReport> {
    let cfg = &o.config;
    let dev = &o.device;
    let model = Qwen2::random(cfg.clone(), 0, o.dtype, dev, true).context("initialising the model")?;
    let optim = OptimConfig {
        lr: 1e-4,
        ..Default::default()
    };
    let mut opt = AdamW::new(&model, &optim)?;
    let buffers = GradBuffers::new(cfg, dev)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mb = random_batch(cfg, o.batch, o.seq_len, dev, &mut rng)?;
    let _ = device::peak_device_memory_gib(dev);
    let mut timed = 0f64;
    let mut calls = ops::device_calls::DeviceCalls::default();
    for i in 0..o.warmup + o.steps {
        sync(dev)?;
        let before = ops::device_calls::DeviceCalls::now();
        let t0 = Instant::now();
        let g = step_gradients_into(
            &model,
            &buffers,
            std::slice::from_ref(&mb),
            1.0,
            Checkpointing::None,
            &mut |_| {},
        )?;
        let norm = ops::global_norm(&g.grads)?;
        let scale = if norm > 1.0 { 1.0 / norm } else { 1.0 };
        opt.update(&g.grads, optim.lr, scale)?;
        drop(g);
        sync(dev)?;
        if i >= o.warmup {
            timed += t0.elapsed().as_secs_f64();
            calls = ops::device_calls::DeviceCalls::since(before);
        }
        eprintln!(
            "step {}/{}: {:.1} ms",
            i + 1,
            o.warmup + o.steps,
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    // Read before the loss checks below allocate a second model.
    let peak_memory_gib = peak_memory_gib(dev);
    // The loss of the last and first steps (recomputed without gradients for the first).
    let loss_of = |m: &Qwen2| -> Result<f64> {
        let out = m.loss(&mb.batch, &mb.targets)?;
        Ok(out.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()? / out.supervised.max(1) as f64)
    };
    let last_loss = loss_of(&model)?;
    let first_loss = {
        let fresh = Qwen2::random(cfg.clone(), 0, o.dtype, dev, false)?;
        loss_of(&fresh)?
    };
    let steps = o.steps.max(1);
    let step_s = timed / steps as f64;
    let tokens = (o.batch * o.seq_len) as f64;
    let tokens_per_s = tokens / step_s.max(1e-12);
    let fpt = cfg.flops_per_token(o.seq_len);
    let achieved = tokens_per_s * fpt / 1e12;
    let (peak, source) = match o.peak_tflops {
        Some(p) => (Some(p), "--peak-tflops".to_string()),
        None => match dense_bf16_peak_tflops(&o.device_label) {
            Some((p, s)) => (Some(p), s.to_string()),
            None => (None, "unknown device (give --peak-tflops)".to_string()),
        },
    };
    let op_families = if o.op_times {
        op_family_times(&model, &mut opt, &mb, o)?
    } else {
        Vec::new()
    };
    Ok(TrainBenchReport {
        device: o.device_label.clone(),
        dtype: format!("{:?}", o.dtype).to_lowercase(),
        parameters: cfg.num_parameters(),
        layers: cfg.num_hidden_layers,
        hidden: cfg.hidden_size,
        seq_len: o.seq_len,
        batch: o.batch,
        steps,
        step_ms: step_s * 1e3,
        tokens_per_s,
        flops_per_token: fpt,
        achieved_tflops: achieved,
        peak_tflops: peak,
        peak_source: source,
        mfu: peak.map(|p| achieved / p),
        peak_memory_gib,
        planned_peak_gib: planned_peak_gib(o),
        first_loss,
        last_loss,
        kernels_per_step: calls.kernels as f64,
        gemms_per_step: calls.gemms as f64,
        uploads_per_step: calls.uploads as f64,
        host_reads_per_step: calls.host_reads as f64,
        op_families,
    })
}

/// `syncoder plan`'s peak for the benchmark's step (no checkpointing), GiB.
fn planned_peak_gib(o: &TrainBenchOptions) -> f64 {
    use crate::train::memory::{estimate, gib, MemoryInput};
    let input = MemoryInput::new(
        &o.config,
        o.dtype,
        o.batch * o.seq_len,
        None,
        crate::model::training::Checkpointing::None,
        o.device.is_cuda(),
    );
    gib(estimate(&o.config, input).peak())
}

/// Device memory in use at its sampled peak (GPU) or the process's peak RSS (CPU), GiB.
fn peak_memory_gib(dev: &Device) -> Option<f64> {
    device::peak_device_memory_gib(dev).or_else(|| device::peak_rss_mb().map(|mb| mb / 1024.0))
}

/// Mean seconds of `f` over a few runs after one warm-up, synchronised.
fn time_it(dev: &Device, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    sync(dev)?;
    let t0 = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    sync(dev)?;
    Ok(t0.elapsed().as_secs_f64() / reps as f64)
}

/// Forward + backward of `op` on fresh variables of the given shapes, as a closure to time.
fn fwd_bwd(
    dev: &Device,
    dtype: DType,
    shapes: &[&[usize]],
    op: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> Result<impl FnMut() -> Result<()>> {
    let vars: Vec<Var> = shapes
        .iter()
        .map(|s| Var::from_tensor(&(Tensor::randn(0f32, 1.0, *s, dev)?.to_dtype(dtype)?)))
        .collect::<candle_core::Result<_>>()?;
    Ok(move || {
        let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = op(&inputs)?;
        let _grads = y.to_dtype(DType::F32)?.sum_all()?.backward()?;
        Ok(())
    })
}

fn op_family_times(
    model: &Qwen2,
    opt: &mut AdamW,
    mb: &MicroBatch,
    o: &TrainBenchOptions,
) -> Result<Vec<OpFamilyTime>> {
    let cfg = &o.config;
    let (dev, dt) = (&o.device, o.dtype);
    let n = o.batch * o.seq_len;
    let (h, inter, l) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers);
    let (hq, hkv, hd) = (cfg.num_attention_heads, cfg.num_kv_heads(), cfg.head_dim());
    let reps = 3;
    let mut out = Vec::new();
    let mut push = |family: &str, calls: usize, secs: f64| {
        out.push(OpFamilyTime {
            family: family.to_string(),
            calls,
            ms_per_step: secs * calls as f64 * 1e3,
        });
    };
    // The seven projections of one layer.
    let mut matmul_s = 0f64;
    for (out_f, in_f) in [
        (hq * hd, h),
        (hkv * hd, h),
        (hkv * hd, h),
        (h, hq * hd),
        (inter, h),
        (inter, h),
        (h, inter),
    ] {
        let f = fwd_bwd(dev, dt, &[&[n, in_f], &[out_f, in_f]], |t| t[0].matmul(&t[1].t()?))?;
        matmul_s += time_it(dev, reps, f)?;
    }
    push("matmul (cuBLAS / gemm), 7 per layer", l, matmul_s);
    let segs = DocSegments::from_positions(&mb.batch.positions, o.batch, o.seq_len)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let f = fwd_bwd(dev, dt, &[&[n, hq, hd], &[n, hkv, hd], &[n, hkv, hd]], move |t| {
        ops::varlen_causal_attention(&t[0], &t[1], &t[2], &segs, scale)
    })?;
    let kernel = ops::attention::AttentionKernel::for_call(dev, dt, hd);
    push(&format!("attention ({})", kernel.name()), l, time_it(dev, reps, f)?);
    let f = fwd_bwd(dev, dt, &[&[n, h], &[h]], |t| ops::rms_norm(&t[0], &t[1], 1e-6))?;
    push("rms_norm (kernel)", 1, time_it(dev, reps, f)?);
    let f = fwd_bwd(dev, dt, &[&[n, h], &[n, h], &[h]], |t| {
        let (s, y) = ops::add_rms_norm(&t[0], &t[1], &t[2], 1e-6)?;
        s + y
    })?;
    push("residual add + rms_norm (kernel)", 2 * l, time_it(dev, reps, f)?);
    let table = RopeTable::new(&mb.batch.positions, hd, cfg.rope_theta(), dev)?;
    let heads = ops::QkvHeads { q: hq, kv: hkv };
    let w = (hq + 2 * hkv) * hd;
    let f = fwd_bwd(dev, dt, &[&[n, w], &[w]], move |t| {
        ops::rope::check::qkv_rope_flat(&t[0], &t[1], &table, heads)
    })?;
    push("q/k/v bias + rope (kernel)", l, time_it(dev, reps, f)?);
    let f = fwd_bwd(dev, dt, &[&[n, 2 * inter]], |t| ops::swiglu(&t[0]))?;
    push("swiglu (kernel)", l, time_it(dev, reps, f)?);
    let targets = mb.targets.clone();
    let vocab = cfg.vocab_size;
    let f = fwd_bwd(dev, dt, &[&[n, h], &[vocab, h]], move |t| {
        Ok(ops::linear_cross_entropy(&t[0], &t[1], &targets, None)?.loss_sum)
    })?;
    push("linear_cross_entropy (kernel + matmuls)", 1, time_it(dev, reps, f)?);
    let grads: Vec<Tensor> = model
        .parameters()
        .iter()
        .map(|(_, p)| p.zeros_like())
        .collect::<candle_core::Result<_>>()?;
    push(
        "global grad norm (kernel)",
        1,
        time_it(dev, reps, || Ok(ops::global_norm(&grads).map(|_| ())?))?,
    );
    push(
        "adamw, all parameters (kernel)",
        1,
        time_it(dev, reps, || opt.update(&grads, 0.0, 1.0))?,
    );
    Ok(out)
}

/// The report as a text table.
pub fn table(r: &TrainBenchReport) -> String {
    let mut s = String::new();
    let line = |s: &mut String, k: &str, v: String| s.push_str(&format!("| {k:<28} | {v:<44} |\n"));
    s.push_str(&format!(
        "| {:<28} | {:<44} |\n|{}|{}|\n",
        "syncoder bench train",
        "",
        "-".repeat(30),
        "-".repeat(46)
    ));
    line(&mut s, "device", r.device.clone());
    line(
        &mut s,
        "model",
        format!(
            "{:.1}M params, {} layers, hidden {}, {}",
            r.parameters as f64 / 1e6,
            r.layers,
            r.hidden,
            r.dtype
        ),
    );
    line(
        &mut s,
        "batch x seq",
        format!("{} x {} ({} timed steps)", r.batch, r.seq_len, r.steps),
    );
    line(&mut s, "step time", format!("{:.1} ms", r.step_ms));
    line(&mut s, "tokens/s", format!("{:.0}", r.tokens_per_s));
    line(
        &mut s,
        "achieved",
        format!(
            "{:.1} TFLOP/s ({:.3e} FLOPs/token)",
            r.achieved_tflops, r.flops_per_token
        ),
    );
    line(
        &mut s,
        "MFU",
        match (r.mfu, r.peak_tflops) {
            (Some(m), Some(p)) => format!("{:.1}% of {p} TFLOP/s ({})", m * 100.0, r.peak_source),
            _ => format!("n/a ({})", r.peak_source),
        },
    );
    line(
        &mut s,
        "peak memory",
        format!(
            "{} (syncoder plan: {:.2} GiB)",
            r.peak_memory_gib.map_or("n/a".into(), |g| format!("{g:.2} GiB")),
            r.planned_peak_gib
        ),
    );
    line(
        &mut s,
        "device calls per step",
        format!(
            "{:.0} kernels + {:.0} cuBLAS (ours), {:.0} uploads, {:.0} host reads",
            r.kernels_per_step, r.gemms_per_step, r.uploads_per_step, r.host_reads_per_step
        ),
    );
    line(
        &mut s,
        "loss (init -> last step)",
        format!("{:.4} -> {:.4}", r.first_loss, r.last_loss),
    );
    if !r.op_families.is_empty() {
        s.push_str(&format!(
            "\n| {:<46} | {:>5} | {:>12} |\n|{}|{}|{}|\n",
            "op family (isolated fwd+bwd)",
            "calls",
            "ms per step",
            "-".repeat(46),
            "-".repeat(7),
            "-".repeat(14)
        ));
        let mut total = 0.0;
        for f in &r.op_families {
            total += f.ms_per_step;
            s.push_str(&format!(
                "| {:<46} | {:>5} | {:>12.2} |\n",
                f.family, f.calls, f.ms_per_step
            ));
        }
        s.push_str(&format!(
            "| {:<46} | {:>5} | {:>12.2} |\n",
            "rest (embedding, bias adds, reshapes, copies)",
            "",
            (r.step_ms - total).max(0.0)
        ));
    }
    s
}
