//! One launch description per kernel, for every backend that runs `kernels/*.cu`: the CUDA
//! device (`src/ops/cuda.rs`) and the CPU kernel harness of the tests (`tests/harness/`).
//!
//! `build.rs` reads each `extern "C" __global__` signature and generates a struct with one
//! typed field per parameter (`args::RmsNormFwd<T> { x: DevPtr<T>, w: DevPtr<T>, y:
//! DevPtrMut<T>, rows: i32, h: i32, eps: f32 }`); `KernelArgs::values` lists them in the
//! signature's order. Each op's launcher (`launch` in `src/ops/<op>.rs`) is written once against
//! `KernelRunner` — allocation sizes, grid, block, shared memory, arguments — and runs unchanged
//! on a GPU and, in `cargo test`, through the harness. A field of the wrong type or a missing
//! one is a compile error; `__launch_bounds__` is checked against every launch.

use candle_core::{bail, Result};
use std::marker::PhantomData;

/// Element types kernel buffers hold.
#[cfg(feature = "cuda")]
pub trait KernelElem:
    Copy
    + Send
    + Sync
    + 'static
    + candle_core::cuda_backend::cudarc::driver::DeviceRepr
    + candle_core::cuda_backend::cudarc::driver::ValidAsZeroBits
{
}
/// Element types kernel buffers hold.
#[cfg(not(feature = "cuda"))]
pub trait KernelElem: Copy + Send + Sync + 'static {}

impl KernelElem for f32 {}
impl KernelElem for half::bf16 {}
impl KernelElem for f64 {}
impl KernelElem for i64 {}
impl KernelElem for u64 {}
impl KernelElem for u32 {}

/// Storage dtypes the kernels are instantiated for; `SUFFIX` names the `extern "C"` variant.
pub trait KernelFloat: KernelElem + candle_core::WithDType {
    const SUFFIX: &'static str;
}
impl KernelFloat for f32 {
    const SUFFIX: &'static str = "f32";
}
impl KernelFloat for half::bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// The device address of a kernel's pointer parameter to `T`; `WRITTEN` tells a `T*` the kernel
/// writes from a `const T*` it only reads.
pub struct Addr<T, const WRITTEN: bool> {
    addr: u64,
    _t: PhantomData<fn() -> T>,
}
/// A `const T*` parameter.
pub type DevPtr<T> = Addr<T, false>;
/// A `T*` (written) parameter.
pub type DevPtrMut<T> = Addr<T, true>;

impl<T> Clone for DevPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DevPtr<T> {}

impl<T, const WRITTEN: bool> Addr<T, WRITTEN> {
    /// Element `offset` of the buffer at `addr`.
    pub fn new(addr: u64, offset: usize) -> Self {
        Self {
            addr: addr + (offset * std::mem::size_of::<T>()) as u64,
            _t: PhantomData,
        }
    }
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

/// One kernel argument by value, as the kernel's parameter list takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgValue {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl ArgValue {
    /// The 64-bit slot the harness trampolines read (`int`s sign-extended, `float` bits low).
    pub fn to_bits(self) -> u64 {
        match self {
            ArgValue::Ptr(p) => p,
            ArgValue::I32(v) => v as i64 as u64,
            ArgValue::I64(v) => v as u64,
            ArgValue::F32(v) => v.to_bits() as u64,
        }
    }
}

/// A 1-D launch: `grid` blocks of `block` threads with `shared_bytes` of dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: u32,
    pub block: u32,
    pub shared_bytes: u32,
}

/// Threads per block of the row and elementwise kernels.
pub use super::kernel_constants::BLOCK;

impl LaunchDims {
    /// One `BLOCK`-thread block per row.
    pub fn rows(rows: usize, shared_bytes: u32) -> Self {
        Self {
            grid: rows.clamp(1, u32::MAX as usize) as u32,
            block: BLOCK,
            shared_bytes,
        }
    }

    /// One thread per element over `n` elements, grid-strided beyond a million blocks.
    pub fn elementwise(n: usize) -> Self {
        Self {
            grid: n.div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32,
            block: BLOCK,
            shared_bytes: 0,
        }
    }
}

/// What a generated launch description provides.
pub trait KernelArgs {
    /// The `extern "C"` entry point (`rms_norm_fwd_bf16`).
    fn name(&self) -> String;
    /// The kernel file's stem (`rms_norm`).
    fn file(&self) -> &'static str;
    /// The entry's `__launch_bounds__`.
    fn max_threads(&self) -> u32;
    /// The arguments in the signature's order.
    fn values(&self) -> Vec<ArgValue>;
}

/// A launch that would fail on the device (or be undefined there) as a clear error instead.
pub fn check_launch(args: &dyn KernelArgs, dims: LaunchDims) -> Result<()> {
    let name = args.name();
    if dims.block == 0 || dims.block > args.max_threads() {
        bail!(
            "{name}: {} threads per block, the kernel's __launch_bounds__ allow 1..={}",
            dims.block,
            args.max_threads()
        );
    }
    if dims.grid == 0 {
        bail!("{name}: empty grid");
    }
    if dims.shared_bytes as usize > MAX_DYNAMIC_SHARED {
        bail!(
            "{name}: {} B of dynamic shared memory, above the {MAX_DYNAMIC_SHARED} B a launch gets without opt-in",
            dims.shared_bytes
        );
    }
    Ok(())
}

/// Shared memory per block (static plus dynamic) every CUDA GPU gives without an opt-in.
pub const MAX_DYNAMIC_SHARED: usize = 48 * 1024;

/// Where kernels run: allocation, upload and launch, for the launchers of `src/ops/*.rs`.
pub trait KernelRunner {
    /// An owned device buffer of `T`.
    type Buf<T: KernelElem>;
    /// `n` uninitialised elements (the harness and the GPU check mode fill them with NaN bytes).
    fn alloc<T: KernelElem>(&self, n: usize) -> Result<Self::Buf<T>>;
    /// A buffer holding `data`.
    fn upload<T: KernelElem>(&self, data: &[T]) -> Result<Self::Buf<T>>;
    /// The buffer's device address.
    fn addr<T: KernelElem>(&self, buf: &Self::Buf<T>) -> u64;
    /// Queues one launch (after `check_launch`).
    fn launch(&self, args: &dyn KernelArgs, dims: LaunchDims) -> Result<()>;

    /// Element `offset` of `buf`, read-only.
    fn input<T: KernelElem>(&self, buf: &Self::Buf<T>, offset: usize) -> DevPtr<T> {
        DevPtr::new(self.addr(buf), offset)
    }
    /// Element `offset` of `buf`, written.
    fn output<T: KernelElem>(&self, buf: &mut Self::Buf<T>, offset: usize) -> DevPtrMut<T> {
        DevPtrMut::new(self.addr(buf), offset)
    }
}

/// `v` as a kernel's `int` parameter, or an error naming the op and the value.
pub fn int_arg(op: &str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{op}: {what} = {v} does not fit the kernel's int")))
}

/// Splits tensors of the given lengths into `(tensor << 40) | start` chunks of `chunk` elements
/// (the layout `kernels/common.cuh` decodes) for the multi-tensor kernels.
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

/// The generated launch descriptions, one per kernel entry group.
pub mod args {
    use super::{ArgValue, DevPtr, DevPtrMut, KernelArgs, KernelFloat};
    include!(concat!(env!("OUT_DIR"), "/kernel_args.rs"));
}

#[cfg(test)]
mod tests {
    use super::args::*;
    use super::*;

    /// The generated description follows the kernel's parameter order and types, and its
    /// bounds are the source's `__launch_bounds__`.
    #[test]
    fn descriptions_follow_the_kernel_signatures() {
        let a = RmsNormFwd::<half::bf16> {
            x: DevPtr::new(0x1000, 0),
            w: DevPtr::new(0x2000, 1),
            y: DevPtrMut::new(0x3000, 2),
            rows: 7,
            h: -3,
            eps: 0.5,
        };
        assert_eq!(a.name(), "rms_norm_fwd_bf16");
        assert_eq!(a.file(), "rms_norm");
        assert_eq!(a.max_threads(), BLOCK);
        assert_eq!(
            a.values(),
            vec![
                ArgValue::Ptr(0x1000),
                ArgValue::Ptr(0x2002),
                ArgValue::Ptr(0x3004),
                ArgValue::I32(7),
                ArgValue::I32(-3),
                ArgValue::F32(0.5)
            ]
        );
        assert_eq!(ArgValue::I32(-3).to_bits(), u64::MAX - 2);
        let s = SumPartials {
            partials: DevPtr::new(8, 0),
            n: 3,
            out: DevPtrMut::new(16, 0),
        };
        assert_eq!(s.max_threads(), super::super::kernel_constants::SUM_PARTIALS_BLOCK);
        let too_wide = LaunchDims {
            grid: 1,
            block: 2048,
            shared_bytes: 0,
        };
        assert!(check_launch(&s, too_wide)
            .unwrap_err()
            .to_string()
            .contains("__launch_bounds__"));
        let shared = LaunchDims {
            grid: 1,
            block: 32,
            shared_bytes: 49 * 1024,
        };
        assert!(check_launch(&s, shared).is_err());
    }

    /// A signature the generator cannot describe is refused with its file and line.
    #[test]
    fn the_parser_names_the_line_of_a_bad_signature() {
        use crate::ops::kernel_signatures::parse;
        let err = parse("x", "\n\nextern \"C\" __global__ void k(const float* a) {}").unwrap_err();
        assert!(
            err.contains("kernels/x.cu:3") && err.contains("__launch_bounds__"),
            "{err}"
        );
        let err = parse("x", "extern \"C\" __global__ void __launch_bounds__(32) k(short a) {}").unwrap_err();
        assert!(err.contains("short"), "{err}");
        let ok = parse(
            "x",
            "extern \"C\" __global__ void __launch_bounds__(BLOCK) k(const float* __restrict__ a, bf16* b, long long n) {}",
        )
        .unwrap();
        assert_eq!(ok[0].params[0].c_type, "const float*");
        assert_eq!(ok[0].params[1].c_type, "bf16*");
        assert_eq!(ok[0].params[2].c_type, "long long");
    }
}
