//! The attention benchmark behind `syncoder bench attention`: forward and backward time and
//! TFLOP/s of the training attention at one shape (rows of `seq_len` tokens, one document per
//! row, causal), for each implementation the device has: on CUDA the flash-attention kernel
//! (`ops::flash_attention`, what training runs in bf16) beside the chunked cuBLAS attention it
//! replaced; on the CPU the fused CPU op. `scripts/bench_torch_attention.py` prints the same rows
//! for PyTorch's `scaled_dot_product_attention` (and `flash_attn_varlen_func` where installed).
//!
//! FLOPs are the causal count FlashAttention reports: forward 4·D·H per visible (query, key)
//! pair, backward 2.5× the forward (its five matmuls to the forward's two), whatever the
//! implementation actually computes, so TFLOP/s compare across implementations.

use crate::ops::{self, chunked_attention, flash_attention, DocSegments};
use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;
use std::time::Instant;

pub struct AttentionBenchOptions {
    pub device: Device,
    /// Printed with the results.
    pub device_label: String,
    pub dtype: DType,
    pub seq_len: usize,
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub warmup: usize,
    pub reps: usize,
}

#[derive(Debug, Serialize)]
pub struct AttentionTiming {
    pub implementation: String,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub forward_tflops: f64,
    pub backward_tflops: f64,
    pub total_tflops: f64,
}

#[derive(Debug, Serialize)]
pub struct AttentionBenchReport {
    pub device: String,
    pub dtype: String,
    pub batch: usize,
    pub seq_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Causal forward FLOPs of one call.
    pub forward_flops: f64,
    pub timings: Vec<AttentionTiming>,
}

/// Causal forward FLOPs: 4·D·H per visible (query, key) pair, T(T+1)/2 pairs per row.
pub fn causal_forward_flops(batch: usize, t: usize, heads: usize, d: usize) -> f64 {
    4.0 * (d * heads * batch) as f64 * (t as f64 * (t as f64 + 1.0) / 2.0)
}

type AttentionFn = Box<dyn Fn(&Tensor, &Tensor, &Tensor, &DocSegments, f64) -> candle_core::Result<Tensor>>;

/// The implementations to time on this device and dtype.
fn implementations(o: &AttentionBenchOptions) -> Vec<(String, AttentionFn)> {
    let mut out: Vec<(String, AttentionFn)> = Vec::new();
    if o.device.is_cpu() {
        out.push((
            "fused CPU op (ops::attention)".into(),
            Box::new(ops::varlen_causal_attention),
        ));
        return out;
    }
    if flash_attention::supported(&o.device, o.dtype, o.head_dim) {
        out.push((
            "flash kernel (kernels/flash_attention.cu)".into(),
            Box::new(flash_attention::flash_attention),
        ));
    }
    out.push((
        "chunked cuBLAS (ops::chunked_attention)".into(),
        Box::new(|q, k, v, s, sc| chunked_attention::chunked_attention(q, k, v, s, sc, None)),
    ));
    out
}

fn mean_secs(dev: &Device, warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    // At least one untimed call: the first loads kernels and fills the memory pool.
    for _ in 0..warmup.max(1) {
        f()?;
    }
    dev.synchronize()?;
    let t0 = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    dev.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() / reps.max(1) as f64)
}

pub fn bench_attention(o: &AttentionBenchOptions) -> Result<AttentionBenchReport> {
    if o.kv_heads == 0 || !o.heads.is_multiple_of(o.kv_heads) {
        anyhow::bail!("--heads {} is not a multiple of --kv-heads {}", o.heads, o.kv_heads);
    }
    let (t, d) = (o.seq_len, o.head_dim);
    let n = o.batch * t;
    let positions: Vec<u32> = (0..n).map(|i| (i % t) as u32).collect();
    let segs = DocSegments::from_positions(&positions, o.batch, t)?;
    let scale = 1.0 / (d as f64).sqrt();
    let var = |h: usize| -> Result<Var> {
        Ok(Var::from_tensor(
            &Tensor::randn(0f32, 1.0, (n, h, d), &o.device)?.to_dtype(o.dtype)?,
        )?)
    };
    let (q, k, v) = (var(o.heads)?, var(o.kv_heads)?, var(o.kv_heads)?);
    let dout = Tensor::randn(0f32, 1.0, (n, o.heads, d), &o.device)?.to_dtype(o.dtype)?;
    let fwd_flops = causal_forward_flops(o.batch, t, o.heads, d);
    let mut timings = Vec::new();
    for (name, f) in implementations(o) {
        let forward = || -> Result<()> {
            // Without gradients: what the forward alone costs.
            let y = f(
                &q.as_tensor().detach(),
                &k.as_tensor().detach(),
                &v.as_tensor().detach(),
                &segs,
                scale,
            )?;
            drop(y);
            Ok(())
        };
        let both = || -> Result<()> {
            let y = f(q.as_tensor(), k.as_tensor(), v.as_tensor(), &segs, scale)?;
            let _grads = (y * &dout)?.sum_all()?.backward()?;
            Ok(())
        };
        let fwd_s = mean_secs(&o.device, o.warmup, o.reps, forward)?;
        let both_s = mean_secs(&o.device, o.warmup, o.reps, both)?;
        let bwd_s = (both_s - fwd_s).max(1e-9);
        timings.push(AttentionTiming {
            implementation: name,
            forward_ms: fwd_s * 1e3,
            backward_ms: bwd_s * 1e3,
            forward_tflops: fwd_flops / fwd_s / 1e12,
            backward_tflops: 2.5 * fwd_flops / bwd_s / 1e12,
            total_tflops: 3.5 * fwd_flops / both_s / 1e12,
        });
    }
    Ok(AttentionBenchReport {
        device: o.device_label.clone(),
        dtype: format!("{:?}", o.dtype).to_lowercase(),
        batch: o.batch,
        seq_len: t,
        heads: o.heads,
        kv_heads: o.kv_heads,
        head_dim: d,
        forward_flops: fwd_flops,
        timings,
    })
}

/// The report as a text table.
pub fn attention_table(r: &AttentionBenchReport) -> String {
    let mut s = format!(
        "syncoder bench attention: {} ({}), {} x {} tokens, {} heads / {} kv heads, head dim {}, causal\n\n",
        r.device, r.dtype, r.batch, r.seq_len, r.heads, r.kv_heads, r.head_dim
    );
    s.push_str(&format!(
        "| {:<44} | {:>9} | {:>9} | {:>10} | {:>10} | {:>12} |\n|{}|{}|{}|{}|{}|{}|\n",
        "implementation",
        "fwd ms",
        "bwd ms",
        "fwd TF/s",
        "bwd TF/s",
        "fwd+bwd TF/s",
        "-".repeat(46),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(14)
    ));
    for t in &r.timings {
        s.push_str(&format!(
            "| {:<44} | {:>9.3} | {:>9.3} | {:>10.2} | {:>10.2} | {:>12.2} |\n",
            t.implementation, t.forward_ms, t.backward_ms, t.forward_tflops, t.backward_tflops, t.total_tflops
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The causal count: a row of 4 tokens has 10 visible pairs.
    #[test]
    fn causal_flops_count_the_visible_pairs() {
        assert_eq!(causal_forward_flops(1, 4, 1, 1), 40.0);
        assert_eq!(causal_forward_flops(2, 4, 3, 64), 2.0 * 3.0 * 64.0 * 40.0);
    }

    /// The CPU run times the fused CPU op and reports finite, positive numbers.
    #[test]
    fn cpu_bench_reports_the_cpu_op() {
        let o = AttentionBenchOptions {
            device: Device::Cpu,
            device_label: "cpu".into(),
            dtype: DType::F32,
            seq_len: 40,
            batch: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            warmup: 0,
            reps: 1,
        };
        let r = bench_attention(&o).unwrap();
        assert_eq!(r.timings.len(), 1);
        assert!(r.timings[0].implementation.contains("CPU"));
        assert!(r.timings[0].forward_ms > 0.0 && r.timings[0].total_tflops.is_finite());
        assert!(attention_table(&r).contains("fwd+bwd TF/s"));
        let bad = AttentionBenchOptions { kv_heads: 3, ..o };
        assert!(bench_attention(&bad).unwrap_err().to_string().contains("multiple"));
    }
}
