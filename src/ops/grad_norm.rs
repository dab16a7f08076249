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
    super::device_calls::host_read();
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

/// The launches of `kernels/grad_norm.cu`, written once for every `KernelRunner`.
pub mod launch {
    use super::SUM_SQUARES_CHUNK;
    use crate::ops::kernel_constants::SUM_PARTIALS_BLOCK;
    use crate::ops::kernel_launch::args::{SumPartials, SumSquaresMulti};
    use crate::ops::kernel_launch::{chunk_table, int_arg, KernelFloat, KernelRunner, LaunchDims, BLOCK};
    use candle_core::Result;

    /// Σ x² over tensors of dtype `T` given as `(device address, elements)`: one block per
    /// chunk writes a partial, one block adds them in order. Returns the one-element f64 sum
    /// (`None` when there is nothing to add).
    pub fn sum_squares<R: KernelRunner, T: KernelFloat>(
        r: &R,
        tensors: &[(u64, usize)],
    ) -> Result<Option<R::Buf<f64>>> {
        let lens: Vec<usize> = tensors.iter().map(|t| t.1).collect();
        let chunks = chunk_table(&lens, SUM_SQUARES_CHUNK)?;
        if chunks.is_empty() {
            return Ok(None);
        }
        let table: Vec<u64> = tensors.iter().flat_map(|&(a, n)| [a, n as u64]).collect();
        let table_d = r.upload(&table)?;
        let chunks_d = r.upload(&chunks)?;
        let mut partials = r.alloc::<f64>(chunks.len())?;
        let mut out = r.alloc::<f64>(1)?;
        let multi = SumSquaresMulti::<T> {
            table: r.input(&table_d, 0),
            chunks: r.input(&chunks_d, 0),
            partials: r.output(&mut partials, 0),
            dtype: std::marker::PhantomData,
        };
        let dims = LaunchDims {
            grid: chunks.len() as u32,
            block: BLOCK,
            shared_bytes: 0,
        };
        r.launch(&multi, dims)?;
        let add = SumPartials {
            partials: r.input(&partials, 0),
            n: int_arg("sum_partials", "chunks", chunks.len())?,
            out: r.output(&mut out, 0),
        };
        let one = LaunchDims {
            grid: 1,
            block: SUM_PARTIALS_BLOCK,
            shared_bytes: 0,
        };
        r.launch(&add, one)?;
        Ok(Some(out))
    }
}

/// Σ x² over many CUDA tensors (f32 or bf16) with two deterministic launches per dtype.
#[cfg(feature = "cuda")]
pub fn sum_squares_cuda(tensors: &[Tensor]) -> Result<f64> {
    use super::cuda::{device_address, CudaRunner};
    let Some(first) = tensors.first() else {
        return Ok(0.0);
    };
    let Some(dev) = super::cuda::cuda_device(first.device()).cloned() else {
        candle_core::bail!("sum_squares_cuda: expected CUDA tensors");
    };
    if let Some(t) = tensors.iter().find(|t| !matches!(t.dtype(), DType::F32 | DType::BF16)) {
        candle_core::bail!("sum_squares_cuda: unsupported dtype {:?}", t.dtype());
    }
    let r = CudaRunner { dev: &dev };
    let mut total = 0f64;
    for dtype in [DType::F32, DType::BF16] {
        let group: Vec<Tensor> = tensors
            .iter()
            .filter(|t| t.dtype() == dtype)
            .map(|t| t.contiguous())
            .collect::<Result<_>>()?;
        let table = group
            .iter()
            .map(|t| Ok((device_address("grad_norm", t)?, t.elem_count())))
            .collect::<Result<Vec<_>>>()?;
        let out = if dtype == DType::F32 {
            launch::sum_squares::<_, f32>(&r, &table)?
        } else {
            launch::sum_squares::<_, half::bf16>(&r, &table)?
        };
        if let Some(out) = out {
            total += dev.clone_dtoh(&out)?[0];
        }
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
