//! Loading and launching the fused kernels of `kernels/*.cu` (compiled to PTX by `build.rs` and
//! embedded here), plus the small device facts the trainer and the benchmark report (card name,
//! memory in use). Only built with the `cuda` feature; each op's `cuda_fwd` lives beside its CPU
//! implementation in its own file.

use super::kernel_launch::{
    check_launch, ArgValue, DevPtr, KernelArgs, KernelElem, KernelFloat, KernelRunner, LaunchDims,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{bail, DType, Device, Layout, Result, Storage, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};

/// The PTX of each kernel file, as `RMS_NORM`, `ROPE`, `SWIGLU`, `CROSS_ENTROPY`, `ADAMW`,
/// `GRAD_NORM`.
pub mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels_ptx.rs"));
}

/// The storage dtypes the kernels are instantiated for, as candle's CUDA storage holds them.
pub trait KernelDType: KernelFloat + CudaDType {}
impl<T: KernelFloat + CudaDType> KernelDType for T {}

/// The compiled module of kernel file `file` (its stem, as `KernelArgs::file` names it).
fn module_ptx(file: &str) -> Result<&'static str> {
    Ok(match file {
        "adamw" => ptx::ADAMW,
        "cross_entropy" => ptx::CROSS_ENTROPY,
        "grad_norm" => ptx::GRAD_NORM,
        "rms_norm" => ptx::RMS_NORM,
        "rope" => ptx::ROPE,
        "swiglu" => ptx::SWIGLU,
        other => bail!("no compiled kernel module `{other}`"),
    })
}

/// Runs the launchers of `src/ops/*.rs` on a CUDA device, on candle's stream of the device (so
/// kernels order with candle's own work). Buffers are cudarc slices.
pub struct CudaRunner<'a> {
    pub dev: &'a CudaDevice,
}

impl KernelRunner for CudaRunner<'_> {
    type Buf<T: KernelElem> = CudaSlice<T>;

    fn alloc<T: KernelElem>(&self, n: usize) -> Result<CudaSlice<T>> {
        unsafe { self.dev.alloc::<T>(n.max(1)) }
    }

    fn upload<T: KernelElem>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        self.dev.clone_htod(data)
    }

    fn addr<T: KernelElem>(&self, buf: &CudaSlice<T>) -> u64 {
        buf.device_ptr(&self.dev.cuda_stream()).0
    }

    fn launch(&self, args: &dyn KernelArgs, dims: LaunchDims) -> Result<()> {
        check_launch(args, dims)?;
        let name = args.name();
        let f =
            self.dev
                .get_or_load_custom_func(&name, &format!("syncoder_{}", args.file()), module_ptx(args.file())?)?;
        let values = args.values();
        let mut b = f.builder();
        for v in &values {
            match v {
                ArgValue::Ptr(p) => b.arg(p),
                ArgValue::I32(x) => b.arg(x),
                ArgValue::I64(x) => b.arg(x),
                ArgValue::F32(x) => b.arg(x),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (dims.grid, 1, 1),
            block_dim: (dims.block, 1, 1),
            shared_mem_bytes: dims.shared_bytes,
        };
        unsafe { b.launch(cfg) }.map_err(|e| candle_core::Error::Msg(format!("{name}: launch failed: {e}")))?;
        Ok(())
    }
}

/// The device address of a contiguous input given as a candle storage and layout.
pub fn input<T: KernelElem + CudaDType>(op: &str, s: &CudaStorage, l: &Layout) -> Result<DevPtr<T>> {
    let Some((a, _)) = l.contiguous_offsets() else {
        bail!("{op}: expected a contiguous input");
    };
    let slice = s.as_cuda_slice::<T>()?;
    Ok(DevPtr::new(slice.device_ptr(&s.device.cuda_stream()).0, a))
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
