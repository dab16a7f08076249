//! The CUDA side of the kernels of `kernels/*.cu` (fatbins compiled by `build.rs` and embedded
//! here): `CudaRunner`, which runs each op's launcher (`launch` in `src/ops/<op>.rs`) on a device;
//! opening a device (explicit stream, memory pool that keeps what is freed), the driver check,
//! and the device facts the trainer and the benchmark report (card name, pool peak). Only built
//! with the `cuda` feature.

use super::kernel_launch::{
    check_launch, ArgValue, DevPtr, KernelArgs, KernelElem, KernelFloat, KernelRunner, LaunchDims,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{result, sys};
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId, WrapErr};
use candle_core::{bail, DType, Device, Layout, Result, Storage, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The fatbin (sm_80 and sm_90a SASS, sm_80 PTX) of each kernel file, as `RMS_NORM`, `ROPE`,
/// `SWIGLU`, `CROSS_ENTROPY`, `ADAMW`, `GRAD_NORM`.
pub mod fatbin {
    include!(concat!(env!("OUT_DIR"), "/kernels_fatbin.rs"));
}

/// The storage dtypes the kernels are instantiated for, as candle's CUDA storage holds them.
pub trait KernelDType: KernelFloat + CudaDType {}
impl<T: KernelFloat + CudaDType> KernelDType for T {}

/// The compiled module of kernel file `file` (its stem, as `KernelArgs::file` names it).
fn module_image(file: &str) -> Result<&'static [u8]> {
    Ok(match file {
        "adamw" => fatbin::ADAMW,
        "cross_entropy" => fatbin::CROSS_ENTROPY,
        "embedding" => fatbin::EMBEDDING,
        "flash_attention" => fatbin::FLASH_ATTENTION,
        "grad_norm" => fatbin::GRAD_NORM,
        "rms_norm" => fatbin::RMS_NORM,
        "rope" => fatbin::ROPE,
        "swiglu" => fatbin::SWIGLU,
        other => bail!("no compiled kernel module `{other}`"),
    })
}

/// Loaded kernel modules, once per device and file, and the functions looked up in them, once
/// per device and entry point (launches on the training step's path only search this list).
#[derive(Default)]
struct Loaded {
    modules: Vec<((DeviceId, &'static str), Arc<CudaModule>)>,
    functions: Vec<((DeviceId, String), CudaFunction)>,
}

static LOADED: Mutex<Loaded> = Mutex::new(Loaded {
    modules: Vec::new(),
    functions: Vec::new(),
});

/// Kernel `name` of file `file`, loading the file's fatbin on first use on this device.
fn kernel_function(dev: &CudaDevice, file: &'static str, name: &str) -> Result<CudaFunction> {
    let mut loaded = LOADED
        .lock()
        .map_err(|_| candle_core::Error::Msg("kernel modules: poisoned lock".into()))?;
    if let Some((_, f)) = loaded.functions.iter().find(|((d, n), _)| *d == dev.id() && n == name) {
        return Ok(f.clone());
    }
    let module = match loaded.modules.iter().find(|(k, _)| *k == (dev.id(), file)) {
        Some((_, m)) => m.clone(),
        None => {
            let image = Ptx::from_binary(module_image(file)?.to_vec());
            let m = dev
                .cuda_stream()
                .context()
                .load_module(image)
                .map_err(|e| candle_core::Error::Msg(format!("loading kernels/{file}.cu's fatbin: {e}")))?;
            loaded.modules.push(((dev.id(), file), m.clone()));
            m
        }
    };
    let f = module
        .load_function(name)
        .map_err(|e| candle_core::Error::Msg(format!("kernel {name} in kernels/{file}.cu: {e}")))?;
    loaded.functions.push(((dev.id(), name.to_string()), f.clone()));
    Ok(f)
}

static POISON: AtomicBool = AtomicBool::new(false);

/// Check mode (`syncoder selftest`): every buffer a kernel launcher allocates is filled with
/// 0xFF bytes (NaN in f32, bf16 and f64) before the kernel runs, so an element the kernel
/// forgets to write fails the comparison whatever memory the allocator reuses.
pub fn poison_outputs(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

/// Runs the launchers of `src/ops/*.rs` on a CUDA device, on candle's stream of the device (so
/// kernels order with candle's own work). Buffers are cudarc slices.
pub struct CudaRunner<'a> {
    pub dev: &'a CudaDevice,
}

impl KernelRunner for CudaRunner<'_> {
    type Buf<T: KernelElem> = CudaSlice<T>;

    fn alloc<T: KernelElem>(&self, n: usize) -> Result<CudaSlice<T>> {
        let buf = unsafe { self.dev.alloc::<T>(n.max(1)) }?;
        if POISON.load(Ordering::Relaxed) {
            let stream = self.dev.cuda_stream();
            let (ptr, _guard) = buf.device_ptr(&stream);
            let bytes = n.max(1) * std::mem::size_of::<T>();
            unsafe { result::memset_d8_async(ptr, 0xFF, bytes, stream.cu_stream()) }.w()?;
        }
        Ok(buf)
    }

    fn upload<T: KernelElem>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        super::device_calls::upload();
        self.dev.clone_htod(data)
    }

    fn addr<T: KernelElem>(&self, buf: &CudaSlice<T>) -> u64 {
        buf.device_ptr(&self.dev.cuda_stream()).0
    }

    fn launch(&self, args: &dyn KernelArgs, dims: LaunchDims) -> Result<()> {
        check_launch(args, dims)?;
        super::device_calls::kernel();
        let name = args.name();
        let f = kernel_function(self.dev, args.file(), &name)?;
        let stream = self.dev.cuda_stream();
        let values = args.values();
        let mut b = stream.launch_builder(&f);
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

/// The device address of a contiguous CUDA tensor's first element as a typed kernel input (the
/// tensor must outlive the launch: ops keep such tensors in their own struct).
pub fn tensor_input<T: KernelElem + CudaDType>(what: &str, t: &Tensor) -> Result<DevPtr<T>> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        bail!("{what}: not on the CUDA device");
    };
    input::<T>(what, s, layout)
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

/// `(free, total)` bytes of device memory, as the driver reports them.
pub fn memory_info(dev: &CudaDevice) -> Result<(u64, u64)> {
    let (free, total) = dev.cuda_stream().context().mem_get_info().w()?;
    Ok((free as u64, total as u64))
}

/// Opens CUDA device `ordinal` for training or inference: on a stream of its own (candle's
/// default is the per-thread default stream, so work queued from another thread, as `generate`
/// and `serve` do, would race; one explicit stream orders it all), with the device memory pool
/// told to keep what is freed (by default every synchronisation hands it back to the driver and
/// the next step maps it again).
pub fn open_device(ordinal: usize) -> Result<Device> {
    let dev = CudaDevice::new_with_stream(ordinal)?;
    set_pool_attribute(
        &dev,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
        u64::MAX,
    )?;
    Ok(Device::Cuda(dev))
}

fn pool(dev: &CudaDevice) -> Result<sys::CUmemoryPool> {
    let ctx = dev.cuda_stream().context().clone();
    ctx.bind_to_thread().w()?;
    unsafe { result::device::get_mem_pool(ctx.cu_device()) }.w()
}

fn set_pool_attribute(dev: &CudaDevice, attr: sys::CUmemPool_attribute, value: u64) -> Result<()> {
    let pool = pool(dev)?;
    let mut v = value;
    unsafe { result::mem_pool::set_attribute(pool, attr, &mut v as *mut u64 as *mut std::ffi::c_void) }.w()
}

fn pool_attribute(dev: &CudaDevice, attr: sys::CUmemPool_attribute) -> Result<u64> {
    let pool = pool(dev)?;
    let mut v = 0u64;
    unsafe { result::mem_pool::get_attribute(pool, attr, &mut v as *mut u64 as *mut std::ffi::c_void) }.w()?;
    Ok(v)
}

/// The most memory the device pool has held since the last call (its reserved high-water
/// mark, the counterpart of PyTorch's `max_memory_reserved`), then resets the mark.
pub fn take_peak_memory(device: &Device) -> Option<u64> {
    let dev = cuda_device(device)?;
    let peak = pool_attribute(dev, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH).ok()?;
    let _ = set_pool_attribute(dev, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, 0);
    Some(peak)
}

/// The CUDA version this binary was built with, `(major, minor)`.
pub fn build_cuda_version() -> (u32, u32) {
    let v = env!("SYNCODER_CUDA_VERSION");
    let (a, b) = v.split_once('.').unwrap_or((v, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// The highest CUDA version the installed driver supports, `(major, minor)`.
pub fn driver_cuda_version() -> Result<(u32, u32)> {
    let mut v = 0i32;
    unsafe { sys::cuDriverGetVersion(&mut v) }.result().w()?;
    Ok(((v / 1000) as u32, ((v % 1000) / 10) as u32))
}

/// A clear error when the driver is older than the CUDA this binary was built with.
pub fn check_driver() -> Result<String> {
    let (dm, dn) = driver_cuda_version()?;
    let (bm, bn) = build_cuda_version();
    let line = format!("driver supports CUDA {dm}.{dn}; this binary is built with CUDA {bm}.{bn}");
    if (dm, dn) < (bm, bn) {
        bail!("{line}: update the NVIDIA driver (CUDA 13.0 needs 580 or newer, 12.8 needs 570 or newer) or use the bundle built for an older CUDA");
    }
    Ok(line)
}
