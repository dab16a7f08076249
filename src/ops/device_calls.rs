//! What a training step asks of the device, counted where our code asks it: every launch of a
//! `kernels/*.cu` kernel (they all go through `CudaRunner::launch`), every cuBLAS call we make
//! (the weight-gradient GEMMs with `beta = 1`), every host→device upload of a launcher, and
//! every device→host read our code makes (each one a synchronisation of the stream on CUDA).
//! candle's own kernels (element-wise ops, copies, its matmuls) are not seen here, so on CUDA
//! the kernel count is a lower bound; the read count is exact for our code.
//!
//! Counted per thread (the thread that runs a step issues all of its device work), so
//! concurrent steps — tests in parallel — do not mix. `syncoder bench train` prints them per
//! step; a test holds the explicit step to reads only at the step's end.

use std::cell::Cell;

thread_local! {
    static COUNTS: Cell<DeviceCalls> = const { Cell::new(DeviceCalls { kernels: 0, gemms: 0, uploads: 0, host_reads: 0 }) };
}

fn bump(f: impl FnOnce(&mut DeviceCalls)) {
    COUNTS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}

/// The counts so far (or, from `since`, over a span).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCalls {
    pub kernels: u64,
    pub gemms: u64,
    pub uploads: u64,
    pub host_reads: u64,
}

impl DeviceCalls {
    /// This thread's counts so far.
    pub fn now() -> Self {
        COUNTS.with(Cell::get)
    }

    /// What happened since `before`.
    pub fn since(before: Self) -> Self {
        let n = Self::now();
        Self {
            kernels: n.kernels - before.kernels,
            gemms: n.gemms - before.gemms,
            uploads: n.uploads - before.uploads,
            host_reads: n.host_reads - before.host_reads,
        }
    }
}

pub fn kernel() {
    bump(|c| c.kernels += 1);
}

pub fn gemm() {
    bump(|c| c.gemms += 1);
}

pub fn upload() {
    bump(|c| c.uploads += 1);
}

/// A device→host read (`to_scalar`, `to_vec*`) by our code.
pub fn host_read() {
    bump(|c| c.host_reads += 1);
}
