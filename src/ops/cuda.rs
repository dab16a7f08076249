//! Loading and launching the fused kernels of `kernels/*.cu` (compiled to PTX by `build.rs` and
//! embedded here), plus the small device facts the trainer and the benchmark report (card name,
//! memory in use). Only built with the `cuda` feature; each op's `cuda_fwd` lives beside its CPU
//! implementation in its own file.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaStream, CudaView, DevicePtr, DeviceRepr, LaunchArgs, LaunchConfig,
};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{bail, DType, Device, Layout, Result, Storage, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The PTX of each kernel file, as `RMS_NORM`, `ROPE`, `SWIGLU`, `CROSS_ENTROPY`, `ADAMW`,
/// `GRAD_NORM`.
pub mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels_ptx.rs"));
}

/// Threads per block of the row kernels (a multiple of 32, see `common.cuh`).
pub use super::kernel_constants::BLOCK;

/// Storage dtypes the kernels are instantiated for; `SUFFIX` names the `extern "C"` variant.
pub trait KernelDType: CudaDType + DeviceRepr + candle_core::WithDType {
    const SUFFIX: &'static str;
}
impl KernelDType for f32 {
    const SUFFIX: &'static str = "f32";
}
impl KernelDType for half::bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// A loaded kernel and the device stream it launches on.
pub struct Kernel {
    stream: Arc<CudaStream>,
    func: CudaFunction,
}

impl Kernel {
    /// A launch on candle's stream of the device (so it orders with candle's own work).
    pub fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// Loads (once per device) kernel `name` of the module `module` with the given PTX.
pub fn func(dev: &CudaDevice, module: &str, ptx: &str, name: &str) -> Result<Kernel> {
    let f = dev.get_or_load_custom_func(name, &format!("syncoder_{module}"), ptx)?;
    Ok(Kernel {
        stream: dev.cuda_stream(),
        func: f.into_cuda_function(),
    })
}

/// The contiguous elements of a storage as a device view, or a clear error naming the op.
pub fn view<'a, T: KernelDType>(op: &str, s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, T>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op}: expected a contiguous input");
    };
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}

/// One thread per element over `n` elements, grid-strided beyond a million blocks.
pub fn elementwise_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row.
pub fn row_config(rows: usize, shared_mem_bytes: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes,
    }
}

/// Calls `$f::<T>(...)` with `T` the kernel type of `$dtype` (f32 or bf16), or a clear error.
#[macro_export]
macro_rules! dispatch_kernel_dtype {
    ($op:expr, $dtype:expr, $($f:ident)::+ ( $($arg:expr),* $(,)? )) => {
        match $dtype {
            candle_core::DType::F32 => $($f)::+::<f32>($($arg),*),
            candle_core::DType::BF16 => $($f)::+::<half::bf16>($($arg),*),
            other => candle_core::bail!("{}: the CUDA kernel supports f32 and bf16, got {:?}", $op, other),
        }
    };
}

/// The device address of a contiguous CUDA tensor's first element (for the multi-tensor
/// kernels, which take tables of addresses). The tensor must outlive every use of the address.
pub fn device_address(op: &str, t: &Tensor) -> Result<u64> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        bail!("{op}: expected a CUDA tensor");
    };
    if !layout.is_contiguous() {
        bail!("{op}: expected a contiguous tensor");
    }
    let stream = s.device.cuda_stream();
    let (base, elem) = match s.dtype() {
        DType::F32 => (s.as_cuda_slice::<f32>()?.device_ptr(&stream).0, 4),
        DType::BF16 => (s.as_cuda_slice::<half::bf16>()?.device_ptr(&stream).0, 2),
        other => bail!("{op}: the CUDA kernel supports f32 and bf16, got {other:?}"),
    };
    Ok(base + (layout.start_offset() * elem) as u64)
}

/// Splits tensors of the given lengths into `(tensor << 40) | start` chunks of `chunk` elements
/// (the layout `common.cuh` decodes).
pub fn chunk_table(lens: &[usize], chunk: usize) -> Result<Vec<u64>> {
    if lens.len() >= 1 << 24 {
        bail!("multi-tensor kernel: too many tensors ({})", lens.len());
    }
    let mut out = Vec::new();
    for (i, &n) in lens.iter().enumerate() {
        if n as u64 >= 1 << 40 {
            bail!("multi-tensor kernel: tensor {i} has {n} elements");
        }
        for start in (0..n).step_by(chunk) {
            out.push(((i as u64) << 40) | start as u64);
        }
    }
    Ok(out)
}

/// Launches with candle's error wrapping.
pub fn launch(b: &mut LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

/// The CUDA device behind `device`, if it is one.
pub fn cuda_device(device: &Device) -> Option<&CudaDevice> {
    match device {
        Device::Cuda(d) => Some(d),
        _ => None,
    }
}

/// The card's name, e.g. "NVIDIA H100 80GB HBM3".
pub fn device_name(dev: &CudaDevice) -> Result<String> {
    dev.cuda_stream().context().name().w()
}

/// `(major, minor)` compute capability.
pub fn compute_capability(dev: &CudaDevice) -> Result<(i32, i32)> {
    dev.cuda_stream().context().compute_capability().w()
}

/// Bytes of device memory in use by every process (total - free), as the driver reports it.
pub fn memory_in_use(dev: &CudaDevice) -> Result<u64> {
    let (free, total) = dev.cuda_stream().context().mem_get_info().w()?;
    Ok(total.saturating_sub(free) as u64)
}

static PEAK_IN_USE: AtomicU64 = AtomicU64::new(0);

/// Samples the memory in use into the running peak (called at the points where a training step
/// holds the most: after each forward and before the optimizer frees gradients).
pub fn sample_peak_memory(device: &Device) {
    if let Some(dev) = cuda_device(device) {
        if let Ok(used) = memory_in_use(dev) {
            PEAK_IN_USE.fetch_max(used, Ordering::Relaxed);
        }
    }
}

/// The sampled peak in bytes since the last reset, then resets it to the current use.
pub fn take_peak_memory(device: &Device) -> Option<u64> {
    let dev = cuda_device(device)?;
    let now = memory_in_use(dev).ok()?;
    Some(PEAK_IN_USE.swap(now, Ordering::Relaxed).max(now))
}
