//! Safe strided matrix views over f32 slices and a matrix product on them
//! (the `gemm` crate candle itself uses on CPU). The fused CPU ops call it on blocks of their
//! inputs in place, without copying them into contiguous tensors first.

/// A read-only `rows × cols` matrix inside `data`: element (i, j) is at
/// `offset + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    offset: usize,
    pub rows: usize,
    pub cols: usize,
    rs: usize,
    cs: usize,
}

fn check(len: usize, offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows > 0 && cols > 0 {
        let last = offset + (rows - 1) * rs + (cols - 1) * cs;
        assert!(
            last < len,
            "matrix view out of bounds: last element {last}, slice of {len}"
        );
    }
}

impl<'a> MatRef<'a> {
    pub fn new(data: &'a [f32], offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check(data.len(), offset, rows, cols, rs, cs);
        Self {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// A mutable `rows × cols` matrix inside `data` (see `MatRef`).
pub struct MatMut<'a> {
    data: &'a mut [f32],
    offset: usize,
    pub rows: usize,
    pub cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatMut<'a> {
    pub fn new(data: &'a mut [f32], offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check(data.len(), offset, rows, cols, rs, cs);
        Self {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }
}

/// `dst = scale * lhs · rhs` (or `dst += scale * lhs · rhs` when `accumulate`), one thread.
pub fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, scale: f32, accumulate: bool) {
    matmul_with(dst, lhs, rhs, scale, accumulate, 1)
}

/// `matmul` on `threads` threads (1: the calling thread only, as inside a parallel loop). The
/// one routine every CPU matrix product of training and inference goes through (`ops::matmul`
/// for tensors): with `--features openblas`, a call allowed more than one thread whose views
/// have a unit stride in one dimension runs as OpenBLAS's `sgemm` (on its own threads);
/// everything else runs on the `gemm` crate (rayon threads).
pub fn matmul_with(
    #[allow(unused_mut)] mut dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    accumulate: bool,
    threads: usize,
) {
    #[cfg(feature = "openblas")]
    if threads > 1 && blas::sgemm(&mut dst, &lhs, &rhs, scale, accumulate) {
        return;
    }
    assert!(
        lhs.rows == dst.rows && rhs.cols == dst.cols && lhs.cols == rhs.rows,
        "matmul shapes: {}x{} · {}x{} -> {}x{}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols,
        dst.rows,
        dst.cols
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    if lhs.cols == 0 {
        if !accumulate {
            for i in 0..dst.rows {
                for j in 0..dst.cols {
                    dst.data[dst.offset + i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: every view was bounds-checked at construction (`check`), the destination is an
    // exclusive borrow distinct from the shared inputs, and the pointers stay valid for the call.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr().add(dst.offset),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            },
        )
    }
}

/// `ops::blas` (OpenBLAS) on the same views.
#[cfg(feature = "openblas")]
mod blas {
    use super::{MatMut, MatRef};

    /// How a row-major `rows × cols` view reads as a CBLAS operand: as stored (unit column
    /// stride) or transposed (unit row stride), with its leading dimension.
    fn operand(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(bool, usize)> {
        if cs == 1 && (rs >= cols || rows <= 1) {
            Some((false, rs.max(cols).max(1)))
        } else if rs == 1 && (cs >= rows || cols <= 1) {
            Some((true, cs.max(rows).max(1)))
        } else {
            None
        }
    }

    /// `dst (+)= scale · lhs · rhs` through OpenBLAS; `false` (nothing done) when a view does
    /// not fit CBLAS, a size exceeds its `int`, or OpenBLAS is not available.
    pub fn sgemm(dst: &mut MatMut<'_>, lhs: &MatRef<'_>, rhs: &MatRef<'_>, scale: f32, accumulate: bool) -> bool {
        let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
        if m == 0 || n == 0 || k == 0 || dst.cs != 1 || (dst.rs < n && m > 1) {
            return false;
        }
        let (Some((ta, lda)), Some((tb, ldb))) = (
            operand(lhs.rows, lhs.cols, lhs.rs, lhs.cs),
            operand(rhs.rows, rhs.cols, rhs.rs, rhs.cs),
        ) else {
            return false;
        };
        let ldc = dst.rs.max(n);
        let int = |x: usize| i32::try_from(x).ok();
        let (Some(mi), Some(ni), Some(ki), Some(lda), Some(ldb), Some(ldc)) =
            (int(m), int(n), int(k), int(lda), int(ldb), int(ldc))
        else {
            return false;
        };
        // SAFETY: the views were bounds-checked at construction; CBLAS reads `lhs` and `rhs`
        // and writes `dst` exactly within those views (leading dimensions as derived above).
        unsafe {
            crate::ops::blas::sgemm(
                ta,
                tb,
                mi,
                ni,
                ki,
                scale,
                lhs.data.as_ptr().add(lhs.offset),
                lda,
                rhs.data.as_ptr().add(rhs.offset),
                ldb,
                if accumulate { 1.0 } else { 0.0 },
                dst.data.as_mut_ptr().add(dst.offset),
                ldc,
            )
        }
    }
}
