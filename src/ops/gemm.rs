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

/// `matmul` on `threads` rayon threads (1: the calling thread only).
pub fn matmul_with(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, scale: f32, accumulate: bool, threads: usize) {
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
