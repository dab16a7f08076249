//! The CPU kernel harness: syncoder's `kernels/*.cu` compiled for the host under a small CUDA
//! execution model of our own (`sim/`), so `cargo test` executes every kernel's source against
//! its CPU twin on a machine without a GPU. A dev-dependency of syncoder only.
//!
//! [`launch`] runs one entry point with the grid, block, dynamic shared memory and arguments a
//! launcher computed (syncoder's `KernelRunner` in the tests feeds it); [`Buffer`] is global
//! memory in guarded pages, poisoned with 0xFF bytes until written. See `sim/runtime.cpp` for the
//! scheduling and what aborts a test.

use std::ffi::{c_char, CString};

/// One kernel entry point compiled into the harness.
pub struct Entry {
    /// The kernel file's stem (`rms_norm`).
    pub file: &'static str,
    /// The `extern "C"` name (`rms_norm_fwd_bf16`).
    pub name: &'static str,
    /// Its parameter count.
    pub params: usize,
    func: unsafe extern "C" fn(*const u64),
}

include!(concat!(env!("OUT_DIR"), "/entries.rs"));

extern "C" {
    fn sch_alloc(bytes: usize, label: *const c_char) -> *mut u8;
    fn sch_free(data: *mut u8);
    #[allow(clippy::too_many_arguments)]
    fn sch_launch(
        name: *const c_char,
        entry: unsafe extern "C" fn(*const u64),
        args: *const u64,
        grid: u32,
        block: u32,
        shared_bytes: u32,
        schedule: u64,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// The order threads of a block run in between synchronisation points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Forward,
    Reverse,
    /// A different shuffle in every pass of every block, from this seed.
    Shuffled(u64),
}

impl Schedule {
    fn code(self) -> u64 {
        match self {
            Schedule::Forward => 0,
            Schedule::Reverse => 1,
            Schedule::Shuffled(s) => 2 + (s & (u64::MAX >> 1)),
        }
    }
}

/// Global memory for a kernel: `len` elements ending exactly at an inaccessible page (and an
/// inaccessible page before), so reading or writing past either end aborts with the label.
pub struct Buffer<T> {
    ptr: *mut T,
    len: usize,
}

unsafe impl<T: Send> Send for Buffer<T> {}
unsafe impl<T: Sync> Sync for Buffer<T> {}

impl<T: Copy> Buffer<T> {
    /// `len` elements of 0xFF bytes (NaN for floats) until a kernel writes them.
    pub fn poisoned(len: usize, label: &str) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        let label = CString::new(label.replace('\0', " ")).unwrap_or_default();
        let ptr = unsafe { sch_alloc(bytes, label.as_ptr()) };
        assert!(!ptr.is_null(), "kernel harness: out of memory for {bytes} bytes");
        unsafe { std::ptr::write_bytes(ptr, 0xFF, bytes) };
        Self {
            ptr: ptr as *mut T,
            len,
        }
    }

    /// A buffer holding `data`.
    pub fn from_slice(data: &[T], label: &str) -> Self {
        let b = Self::poisoned(data.len(), label);
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), b.ptr, data.len()) };
        b
    }

    pub fn to_vec(&self) -> Vec<T> {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address kernels see.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl<T> Drop for Buffer<T> {
    fn drop(&mut self) {
        unsafe { sch_free(self.ptr as *mut u8) }
    }
}

/// The entry point called `name`.
pub fn entry(name: &str) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.name == name)
}

/// Runs `name` over `grid` blocks of `block` threads with `shared_bytes` of dynamic shared
/// memory; `args` holds one 64-bit slot per parameter (pointers as addresses, `int`s
/// sign-extended, `float` bits in the low half). Launches run one at a time. A deadlock or a
/// misuse is an `Err`; an out-of-bounds access aborts the process with a message naming the
/// buffer, block and thread.
pub fn launch(
    name: &str,
    grid: u32,
    block: u32,
    shared_bytes: u32,
    args: &[u64],
    schedule: Schedule,
) -> Result<(), String> {
    let e = entry(name).ok_or_else(|| format!("kernel harness: no kernel entry `{name}` in kernels/*.cu"))?;
    if args.len() != e.params {
        return Err(format!("{name}: {} arguments for {} parameters", args.len(), e.params));
    }
    if grid == 0 || block == 0 || block > 1024 {
        return Err(format!("{name}: grid {grid} x block {block} is not a valid launch"));
    }
    let cname = CString::new(name).map_err(|e| e.to_string())?;
    let mut err = vec![0u8; 512];
    let status = unsafe {
        sch_launch(
            cname.as_ptr(),
            e.func,
            args.as_ptr(),
            grid,
            block,
            shared_bytes,
            schedule.code(),
            err.as_mut_ptr() as *mut c_char,
            err.len(),
        )
    };
    if status == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    Err(String::from_utf8_lossy(&err[..end]).into_owned())
}
