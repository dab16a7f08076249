//! Fused training ops as candle `CustomOp`s, one file each, and each file an op's whole story:
//! the CPU forward and backward (the twin every CUDA kernel must equal), the launch of its
//! `kernels/*.cu` kernel (`mod cuda`), and a `check` module with the plain composed-candle
//! reference and the op's cases in the kernel checks (`check.rs` is their harness).
//!
//! Every op carries its own backward (candle's built-in fused `rms_norm`, `rope` and
//! `softmax_last_dim` are applied without one, which silently cuts gradients). Imports nothing
//! of the crate.
//!
//! The CPU implementations work on contiguous f32 data (the CPU training dtype) with rayon
//! parallelism over rows; other dtypes get a clear error.

pub mod adamw;
pub mod attention;
#[cfg(feature = "openblas")]
pub mod blas;
pub mod cached_attention;
pub mod check;
pub mod chunked_attention;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device_calls;
pub mod embedding;
pub mod flash_attention;
pub mod gemm;
pub mod grad_accumulate;
pub mod grad_norm;
pub mod kernel_constants;
pub mod kernel_launch;
#[cfg(test)]
#[allow(dead_code)]
mod kernel_signatures;
pub mod linear_cross_entropy;
pub mod matmul;
pub mod rms_norm;
pub mod rope;
pub mod swiglu;

pub use adamw::{adamw_update, AdamWSlot, AdamWStep};
pub use attention::{varlen_causal_attention, DocSegments};
pub use embedding::{embedding, TokenIndex};
pub use grad_norm::global_norm;
pub use linear_cross_entropy::{linear_cross_entropy, CrossEntropyOutput, IGNORE_INDEX};
pub use rms_norm::{add_rms_norm, rms_norm};
pub use rope::{qkv_rope, QkvHeads, RopeTable};
pub use swiglu::swiglu;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor};

/// The contiguous f32 data behind a CPU storage and layout, or a clear error naming the op.
pub(crate) fn cpu_f32<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(data) => data.as_slice(),
        other => bail!(
            "{op}: the CPU implementation supports f32 only, got {:?}",
            other.dtype()
        ),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: expected a contiguous input"),
    }
}

/// Runs `f` on the contiguous f32 CPU data of `t` without copying it.
pub(crate) fn with_cpu_f32<R>(op: &str, t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(cpu_f32(op, cpu, layout)?),
        _ => bail!("{op}: no implementation for {:?} yet", t.device().location()),
    }
}

/// Dot product with eight independent accumulators so that LLVM vectorises it.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest elementwise difference of two tensors (the unit tests' comparison).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("comparable tensors")
}
