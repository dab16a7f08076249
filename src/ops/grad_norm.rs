//! Sum of squares of a tensor in f64, with a fixed reduction order on CPU (so a run's gradient
//! norms, and with them its clipping, are reproducible bit for bit). The global gradient norm
//! is the square root of the sum over all parameters, taken in parameter order.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// Σ x² over a slice: f64 partial sums per fixed-size chunk, added in chunk order.
pub fn sum_squares_cpu(x: &[f32]) -> f64 {
    let partial: Vec<f64> = x
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .collect();
    partial.iter().sum()
}

/// Σ x² of a tensor of any float dtype.
pub fn sum_squares(t: &Tensor) -> Result<f64> {
    match t.device() {
        Device::Cpu => {
            let t = t.to_dtype(DType::F32)?.flatten_all()?;
            super::with_cpu_f32("sum_squares", &t.contiguous()?, |x| Ok(sum_squares_cpu(x)))
        }
        _ => Ok(t.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64),
    }
}

/// `sqrt(Σ_params Σ g²)`, summed in the order given (on CUDA: one multi-tensor kernel).
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    #[cfg(feature = "cuda")]
    if grads.first().is_some_and(|g| g.device().is_cuda()) {
        return Ok(sum_squares_cuda(grads)?.sqrt());
    }
    let mut total = 0f64;
    for g in grads {
        total += sum_squares(g)?;
    }
    Ok(total.sqrt())
}

/// Elements per block of `kernels/grad_norm.cu` (`SUMSQ_CHUNK`).
pub use super::kernel_constants::SUMSQ_CHUNK as SUM_SQUARES_CHUNK;

/// Σ x² over many CUDA tensors (f32 or bf16) with two deterministic launches per dtype.
#[cfg(feature = "cuda")]
pub fn sum_squares_cuda(tensors: &[Tensor]) -> Result<f64> {
    use super::cuda::{chunk_table, device_address, func, launch, ptx, BLOCK};
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    let Some(first) = tensors.first() else {
        return Ok(0.0);
    };
    let Some(dev) = super::cuda::cuda_device(first.device()).cloned() else {
        candle_core::bail!("sum_squares_cuda: expected CUDA tensors");
    };
    let mut total = 0f64;
    for dtype in [DType::F32, DType::BF16] {
        let group: Vec<Tensor> = tensors
            .iter()
            .filter(|t| t.dtype() == dtype)
            .map(|t| t.contiguous())
            .collect::<Result<_>>()?;
        let mut table = Vec::with_capacity(group.len() * 2);
        let mut lens = Vec::with_capacity(group.len());
        for t in &group {
            table.extend_from_slice(&[device_address("grad_norm", t)?, t.elem_count() as u64]);
            lens.push(t.elem_count());
        }
        let chunks = chunk_table(&lens, SUM_SQUARES_CHUNK)?;
        if chunks.is_empty() {
            continue;
        }
        let table_d = dev.clone_htod(&table)?;
        let chunks_d = dev.clone_htod(&chunks)?;
        let mut partials = dev.alloc_zeros::<f64>(chunks.len())?;
        let mut out = dev.alloc_zeros::<f64>(1)?;
        let suffix = if dtype == DType::F32 { "f32" } else { "bf16" };
        {
            let f = func(
                &dev,
                "grad_norm",
                ptx::GRAD_NORM,
                &format!("sum_squares_multi_{suffix}"),
            )?;
            let mut b = f.builder();
            b.arg(&table_d).arg(&chunks_d).arg(&mut partials);
            let cfg = LaunchConfig {
                grid_dim: (chunks.len() as u32, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            launch(&mut b, cfg)?;
        }
        {
            let f = func(&dev, "grad_norm", ptx::GRAD_NORM, "sum_partials")?;
            let mut b = f.builder();
            let n = chunks.len() as i32;
            b.arg(&partials).arg(&n).arg(&mut out);
            let cfg = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1024, 1, 1),
                shared_mem_bytes: 0,
            };
            launch(&mut b, cfg)?;
        }
        total += dev.clone_dtoh(&out)?[0];
    }
    let other = tensors.iter().find(|t| !matches!(t.dtype(), DType::F32 | DType::BF16));
    if let Some(t) = other {
        candle_core::bail!("sum_squares_cuda: unsupported dtype {:?}", t.dtype());
    }
    Ok(total)
}

/// The global gradient norm in the kernel checks.
pub mod check {
    use super::super::check::Suite;
    use anyhow::Result;
    use candle_core::{DType, Tensor};

    /// Σ x² in f64 through a plain f64 tensor sum.
    pub fn sum_squares(t: &Tensor) -> candle_core::Result<f64> {
        t.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()
    }

    /// Four tensors around the chunk size (65536), against the reference sum of squares.
    pub fn selftest(s: &mut Suite) -> Result<()> {
        let sizes = [3usize, 65536, 65541, 200_000];
        let mut host = Vec::new();
        for &n in &sizes {
            host.push(s.randn(&[n], 1.0)?);
        }
        let mut want = 0f64;
        for t in &host {
            want += sum_squares(t)?;
        }
        let want = want.sqrt();
        let got: Result<f64> = (|| {
            let dev: Vec<Tensor> = host
                .iter()
                .map(|t| t.to_device(&s.device)?.to_dtype(s.dtype))
                .collect::<candle_core::Result<_>>()?;
            Ok(super::global_norm(&dev)?)
        })();
        s.record_result(
            "global grad norm (4 tensors)",
            got.map(|g| (g - want).abs() / want),
            1e-5,
        );
        Ok(())
    }
}
