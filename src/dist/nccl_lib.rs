//! NCCL's C API, opened at run time: `libnccl.so.2` (PyTorch's wheels ship it as
//! `nvidia/nccl/lib/libnccl.so.2`; `SYNCODER_NCCL` names another file). Opening at run time
//! keeps a binary that never starts a multi-GPU run free of the library: candle links cudarc
//! with `dynamic-linking`, so cudarc's own NCCL bindings would make every CUDA build need
//! `libnccl.so` at start, one GPU or eight.
//!
//! Only what data parallelism uses is bound: the version, a unique id, a communicator per rank
//! (made, checked for asynchronous errors, aborted or destroyed) and the sum all-reduce,
//! reduce-scatter, all-gather and broadcast of f32 / f64 buffers on a CUDA stream. Nothing here
//! needs a GPU until a communicator is made: `ncclGetUniqueId` and `ncclGetVersion` run on any
//! machine, which is what the tests use.

use anyhow::{bail, Context, Result};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// `ncclUniqueId`: 128 opaque bytes rank 0 makes and every rank passes to `comm_init_rank`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    pub internal: [c_char; UNIQUE_ID_BYTES],
}

/// `NCCL_UNIQUE_ID_BYTES`.
pub const UNIQUE_ID_BYTES: usize = 128;

impl UniqueId {
    pub fn from_bytes(b: &[u8; UNIQUE_ID_BYTES]) -> Self {
        Self {
            internal: b.map(|x| x as c_char),
        }
    }

    pub fn to_bytes(&self) -> [u8; UNIQUE_ID_BYTES] {
        self.internal.map(|x| x as u8)
    }
}

/// `ncclComm_t`.
pub type RawComm = *mut c_void;
/// `cudaStream_t` (the driver's `CUstream`: the same pointer).
pub type RawStream = *mut c_void;

/// `ncclDataType_t` values used here.
#[derive(Clone, Copy, Debug)]
#[repr(i32)]
pub enum DataType {
    F32 = 7,
    F64 = 8,
}

/// `ncclSum`.
const SUM: c_int = 0;
/// `ncclSuccess`, `ncclInProgress`.
const SUCCESS: c_int = 0;
const IN_PROGRESS: c_int = 7;

type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type GetUniqueId = unsafe extern "C" fn(*mut UniqueId) -> c_int;
type CommInitRank = unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> c_int;
type CommOne = unsafe extern "C" fn(RawComm) -> c_int;
type CommAsyncError = unsafe extern "C" fn(RawComm, *mut c_int) -> c_int;
type ErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
type LastError = unsafe extern "C" fn(RawComm) -> *const c_char;
type AllReduce = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, RawStream) -> c_int;
type AllGather = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, RawComm, RawStream) -> c_int;
type Broadcast = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, RawStream) -> c_int;

/// The opened library and its entry points.
pub struct Nccl {
    path: String,
    get_version: GetVersion,
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    comm_destroy: CommOne,
    comm_abort: CommOne,
    comm_get_async_error: CommAsyncError,
    get_error_string: ErrorString,
    get_last_error: Option<LastError>,
    all_reduce: AllReduce,
    /// `ncclReduceScatter`: the same shape as `ncclAllReduce`.
    reduce_scatter: AllReduce,
    all_gather: AllGather,
    broadcast: Broadcast,
    _lib: libloading::Library,
}

static LIB: OnceLock<std::result::Result<Nccl, String>> = OnceLock::new();

/// The function `name` of `lib` as a `T`.
///
/// # Safety
/// `T` is the symbol's true type.
unsafe fn sym<T: Copy>(lib: &libloading::Library, path: &str, name: &str) -> Result<T> {
    // SAFETY: as the caller promises.
    let s = unsafe { lib.get::<T>(name.as_bytes()) }
        .with_context(|| format!("{path}: no symbol {name}: not an NCCL 2 library"))?;
    Ok(*s)
}

/// What to open: `SYNCODER_NCCL`, else the soname through the loader's search path
/// (`LD_LIBRARY_PATH`, the system cache).
fn wanted() -> String {
    std::env::var("SYNCODER_NCCL").unwrap_or_else(|_| "libnccl.so.2".to_string())
}

impl Nccl {
    /// The process's NCCL, opened on first use.
    pub fn get() -> Result<&'static Nccl> {
        match LIB.get_or_init(|| Self::open(&wanted()).map_err(|e| format!("{e:#}"))) {
            Ok(n) => Ok(n),
            Err(e) => bail!("{e}"),
        }
    }

    /// Opens the library at `path` (a file, or a soname the loader searches for).
    pub fn open(path: &str) -> Result<Self> {
        // SAFETY: loading NCCL runs its initialisers, which only set up its own state.
        let lib = unsafe { libloading::Library::new(path) }.with_context(|| {
            format!(
                "opening NCCL ({path}): multi-GPU runs need libnccl.so.2 — PyTorch's wheels ship it; put its folder \
                 on LD_LIBRARY_PATH (`python3 -c 'import nvidia.nccl as n; print(n.__path__[0] + \"/lib\")'` prints \
                 it) or name the file in SYNCODER_NCCL"
            )
        })?;
        // SAFETY: each symbol is NCCL's C function of the signature its type spells (nccl.h,
        // NCCL 2.x); the library stays open as long as the pointers (`_lib` is kept).
        unsafe {
            Ok(Self {
                get_version: sym(&lib, path, "ncclGetVersion")?,
                get_unique_id: sym(&lib, path, "ncclGetUniqueId")?,
                comm_init_rank: sym(&lib, path, "ncclCommInitRank")?,
                comm_destroy: sym(&lib, path, "ncclCommDestroy")?,
                comm_abort: sym(&lib, path, "ncclCommAbort")?,
                comm_get_async_error: sym(&lib, path, "ncclCommGetAsyncError")?,
                get_error_string: sym(&lib, path, "ncclGetErrorString")?,
                // NCCL ≥ 2.13.
                get_last_error: sym(&lib, path, "ncclGetLastError").ok(),
                all_reduce: sym(&lib, path, "ncclAllReduce")?,
                reduce_scatter: sym(&lib, path, "ncclReduceScatter")?,
                all_gather: sym(&lib, path, "ncclAllGather")?,
                broadcast: sym(&lib, path, "ncclBroadcast")?,
                path: path.to_string(),
                _lib: lib,
            })
        }
    }

    /// The file or soname it was opened from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `rc` as a result naming `what` and NCCL's own words for the failure.
    fn check(&self, rc: c_int, what: &str, comm: RawComm) -> Result<()> {
        if rc == SUCCESS || rc == IN_PROGRESS {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static string for any code.
        let msg = unsafe { CStr::from_ptr((self.get_error_string)(rc)) }.to_string_lossy();
        let last = match self.get_last_error {
            // SAFETY: a null communicator asks for the last error of the thread; the string is
            // NCCL's, valid until the next call.
            Some(f) => {
                let p = unsafe { f(comm) };
                if p.is_null() {
                    String::new()
                } else {
                    unsafe { CStr::from_ptr(p) }.to_string_lossy().to_string()
                }
            }
            None => String::new(),
        };
        if last.is_empty() {
            bail!("NCCL {what}: {msg} (code {rc})");
        }
        bail!("NCCL {what}: {msg} (code {rc}): {last}");
    }

    /// (major, minor, patch).
    pub fn version(&self) -> Result<(u32, u32, u32)> {
        let mut v: c_int = 0;
        // SAFETY: writes one int.
        self.check(
            unsafe { (self.get_version)(&mut v) },
            "ncclGetVersion",
            std::ptr::null_mut(),
        )?;
        let v = v as u32;
        // NCCL ≥ 2.9 encodes major*10000 + minor*100 + patch.
        Ok((v / 10000, (v / 100) % 100, v % 100))
    }

    /// A fresh id for a new communicator (rank 0 makes it and sends it to the others).
    pub fn unique_id(&self) -> Result<UniqueId> {
        let mut id = UniqueId {
            internal: [0; UNIQUE_ID_BYTES],
        };
        // SAFETY: writes the 128-byte struct.
        self.check(
            unsafe { (self.get_unique_id)(&mut id) },
            "ncclGetUniqueId",
            std::ptr::null_mut(),
        )?;
        Ok(id)
    }

    /// This rank's communicator of `world` ranks on the current CUDA device of the calling
    /// thread (blocks until every rank has called it).
    pub fn comm_init_rank(&self, world: usize, id: UniqueId, rank: usize) -> Result<RawComm> {
        let mut comm: RawComm = std::ptr::null_mut();
        let (w, r) = (c_int::try_from(world)?, c_int::try_from(rank)?);
        // SAFETY: writes the communicator handle; the id is passed by value as nccl.h declares.
        let rc = unsafe { (self.comm_init_rank)(&mut comm, w, id, r) };
        self.check(rc, &format!("ncclCommInitRank (rank {rank} of {world})"), comm)?;
        Ok(comm)
    }

    /// The communicator's asynchronous error (a peer that died, a network failure), if any.
    ///
    /// # Safety
    /// `comm` is a live communicator.
    pub unsafe fn async_error(&self, comm: RawComm) -> Result<()> {
        let mut e: c_int = SUCCESS;
        // SAFETY: `comm` is live (the caller's promise); writes one int.
        let rc = unsafe { (self.comm_get_async_error)(comm, &mut e) };
        self.check(rc, "ncclCommGetAsyncError", comm)?;
        self.check(e, "communicator", comm)
    }

    /// Frees a communicator whose operations completed.
    ///
    /// # Safety
    /// `comm` is a live communicator, not used again.
    pub unsafe fn destroy(&self, comm: RawComm) -> Result<()> {
        self.check(
            unsafe { (self.comm_destroy)(comm) },
            "ncclCommDestroy",
            std::ptr::null_mut(),
        )
    }

    /// Ends a communicator whose operations may never complete (a peer died).
    ///
    /// # Safety
    /// `comm` is a live communicator, not used again.
    pub unsafe fn abort(&self, comm: RawComm) -> Result<()> {
        self.check(
            unsafe { (self.comm_abort)(comm) },
            "ncclCommAbort",
            std::ptr::null_mut(),
        )
    }

    /// `recv` ← Σ over ranks of `send` (`count` elements; the same address for in place).
    ///
    /// # Safety
    /// Both are device buffers of `count` elements of `dtype` on `stream`'s device, alive until
    /// the stream has run the operation; `comm` is live.
    pub unsafe fn all_reduce(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: DataType,
        comm: RawComm,
        stream: RawStream,
    ) -> Result<()> {
        // SAFETY: the caller's promise.
        unsafe {
            self.sum(
                self.all_reduce,
                "ncclAllReduce",
                [send, recv],
                count,
                dtype,
                comm,
                stream,
            )
        }
    }

    /// `recv` (`count` elements) ← this rank's block of Σ over ranks of `send` (`count` × W).
    ///
    /// # Safety
    /// As `all_reduce`, with the sizes given.
    pub unsafe fn reduce_scatter(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: DataType,
        comm: RawComm,
        stream: RawStream,
    ) -> Result<()> {
        // SAFETY: the caller's promise.
        unsafe {
            self.sum(
                self.reduce_scatter,
                "ncclReduceScatter",
                [send, recv],
                count,
                dtype,
                comm,
                stream,
            )
        }
    }

    /// A sum reduction of NCCL's shape (`ncclAllReduce`, `ncclReduceScatter`).
    ///
    /// # Safety
    /// As `all_reduce`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn sum(
        &self,
        f: AllReduce,
        what: &str,
        [send, recv]: [u64; 2],
        count: usize,
        dtype: DataType,
        comm: RawComm,
        stream: RawStream,
    ) -> Result<()> {
        // SAFETY: as the caller promises.
        let rc = unsafe {
            f(
                send as *const c_void,
                recv as *mut c_void,
                count,
                dtype as c_int,
                SUM,
                comm,
                stream,
            )
        };
        self.check(rc, what, comm)
    }

    /// `recv` (`count` × W) ← every rank's `send` (`count` elements), in rank order.
    ///
    /// # Safety
    /// As `all_reduce`, with the sizes given.
    pub unsafe fn all_gather(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: DataType,
        comm: RawComm,
        stream: RawStream,
    ) -> Result<()> {
        let rc = unsafe {
            (self.all_gather)(
                send as *const c_void,
                recv as *mut c_void,
                count,
                dtype as c_int,
                comm,
                stream,
            )
        };
        self.check(rc, "ncclAllGather", comm)
    }

    /// `buf` ← rank `root`'s `buf` (in place).
    ///
    /// # Safety
    /// As `all_reduce`.
    pub unsafe fn broadcast(
        &self,
        buf: u64,
        count: usize,
        dtype: DataType,
        root: usize,
        comm: RawComm,
        stream: RawStream,
    ) -> Result<()> {
        let root = c_int::try_from(root)?;
        let rc = unsafe {
            (self.broadcast)(
                buf as *const c_void,
                buf as *mut c_void,
                count,
                dtype as c_int,
                root,
                comm,
                stream,
            )
        };
        self.check(rc, "ncclBroadcast", comm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_named_with_where_to_find_one() {
        let e = Nccl::open("/nonexistent/libnccl.so.2").err().map(|e| format!("{e:#}"));
        let e = e.unwrap_or_default();
        assert!(
            e.contains("/nonexistent/libnccl.so.2") && e.contains("SYNCODER_NCCL"),
            "{e}"
        );
    }

    #[test]
    fn a_library_that_is_not_nccl_is_refused_by_symbol() {
        // The C library opens but has no NCCL entry points.
        let e = Nccl::open("libc.so.6").err().map(|e| format!("{e:#}"));
        assert!(e.is_some_and(|e| e.contains("no symbol ncclGetVersion")));
    }

    /// The real library where the machine has one (CI installs NVIDIA's wheel and names it in
    /// `SYNCODER_NCCL`): its version, and two unique ids that differ — no GPU needed.
    #[test]
    fn the_installed_nccl_gives_its_version_and_fresh_ids() {
        let Ok(path) = std::env::var("SYNCODER_NCCL") else {
            eprintln!("SYNCODER_NCCL is not set: no NCCL library to check on this machine");
            return;
        };
        let nccl = Nccl::open(&path).unwrap();
        let (major, minor, _) = nccl.version().unwrap();
        assert!(major == 2 && minor >= 18, "NCCL {major}.{minor}");
        let (a, b) = (nccl.unique_id().unwrap(), nccl.unique_id().unwrap());
        assert_ne!(a.to_bytes(), b.to_bytes());
        assert_ne!(a.to_bytes(), [0u8; UNIQUE_ID_BYTES]);
    }
}
