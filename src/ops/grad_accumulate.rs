//! In-place accumulation into the f32 gradient buffers of the explicit training step:
//! `dst += alpha · op(A) · B` with `dst` f32 and `A`, `B` in the activations' dtype, one matrix
//! product written straight into the buffer (GEMM with `beta = 1`), never a temporary gradient
//! added afterwards. Three uses, one op:
//!
//! - a weight gradient `dW [out, in] += alpha · gᵀ · x` (`add_weight_grad`),
//! - a bias gradient, the column sums `db [out] += alpha · 1ᵀ · g` (`add_column_sums`),
//! - a plain scaled add `dst += alpha · src` (`add_scaled`, a product with a 1×1 one).
//!
//! CPU: the `gemm` crate (candle's own CPU GEMM) on f32 storage, rayon-parallel. CUDA:
//! `cublasGemmEx` on candle's cuBLAS handle and stream, bf16/f16/f32 inputs, f32 output and
//! compute. `zero` clears a buffer in place (the start of a step).

use super::cpu_f32;
use super::gemm::{matmul_with, MatMut, MatRef};
use candle_core::{bail, CpuStorage, DType, InplaceOp1, InplaceOp3, Layout, Result, Tensor};

/// `dst [out, in] += alpha · gᵀ · x` for `g [n, out]`, `x [n, in]`.
pub fn add_weight_grad(dst: &Tensor, g: &Tensor, x: &Tensor, alpha: f64) -> Result<()> {
    let (o, i) = dst.dims2()?;
    let (n, go) = g.dims2()?;
    if go != o || x.dims() != [n, i] {
        bail!(
            "add_weight_grad: dW {:?}, g {:?} and x {:?} do not fit",
            dst.dims(),
            g.dims(),
            x.dims()
        );
    }
    accumulate(
        dst,
        &g.contiguous()?,
        &x.contiguous()?,
        Product {
            m: o,
            n: i,
            k: n,
            a_transposed: true,
            alpha: alpha as f32,
        },
    )
}

/// `dst [out] += alpha · Σ_rows g` for `g [n, out]` (a bias gradient).
pub fn add_column_sums(dst: &Tensor, g: &Tensor, alpha: f64) -> Result<()> {
    let (n, o) = g.dims2()?;
    if dst.dims() != [o] {
        bail!("add_column_sums: db {:?} and g {:?} do not fit", dst.dims(), g.dims());
    }
    let ones = Tensor::ones((1, n), g.dtype(), g.device())?;
    accumulate(
        dst,
        &ones,
        &g.contiguous()?,
        Product {
            m: 1,
            n: o,
            k: n,
            a_transposed: false,
            alpha: alpha as f32,
        },
    )
}

/// `dst += alpha · src` elementwise (same number of elements).
pub fn add_scaled(dst: &Tensor, src: &Tensor, alpha: f64) -> Result<()> {
    let len = dst.elem_count();
    if src.elem_count() != len {
        bail!(
            "add_scaled: dst {:?} and src {:?} differ in size",
            dst.dims(),
            src.dims()
        );
    }
    let one = Tensor::ones((1, 1), src.dtype(), src.device())?;
    accumulate(
        dst,
        &one,
        &src.contiguous()?,
        Product {
            m: 1,
            n: len,
            k: 1,
            a_transposed: false,
            alpha: alpha as f32,
        },
    )
}

/// Sets every element of the f32 buffer `dst` to zero, in place.
pub fn zero(dst: &Tensor) -> Result<()> {
    check_dst("zero", dst)?;
    dst.inplace_op1(&Zero)
}

fn check_dst(op: &str, dst: &Tensor) -> Result<()> {
    if dst.dtype() != DType::F32 || !dst.is_contiguous() {
        bail!(
            "{op}: the gradient buffer must be contiguous f32, got {:?} {:?}",
            dst.dtype(),
            dst.dims()
        );
    }
    Ok(())
}

fn accumulate(dst: &Tensor, a: &Tensor, b: &Tensor, p: Product) -> Result<()> {
    check_dst("gradient accumulation", dst)?;
    if a.dtype() != b.dtype() {
        bail!("gradient accumulation: operands in {:?} and {:?}", a.dtype(), b.dtype());
    }
    if p.m * p.n != dst.elem_count() || a.elem_count() != p.m * p.k || b.elem_count() != p.k * p.n {
        bail!("gradient accumulation: operand sizes do not match the product");
    }
    dst.inplace_op3(a, b, &p)
}

/// `dst [m, n] (row-major) += alpha · op(A) · B`, with `A` `[m, k]` row-major, or (when
/// `a_transposed`) `[k, m]` row-major read transposed, and `B` `[k, n]` row-major.
#[derive(Clone, Copy, Debug)]
struct Product {
    m: usize,
    n: usize,
    k: usize,
    a_transposed: bool,
    alpha: f32,
}

impl InplaceOp3 for Product {
    fn name(&self) -> &'static str {
        "gradient_accumulate"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let Product {
            m,
            n,
            k,
            a_transposed,
            alpha,
        } = *self;
        let a = cpu_f32("gradient_accumulate", s2, l2)?;
        let b = cpu_f32("gradient_accumulate", s3, l3)?;
        let dst = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((start, end))) => &mut d[start..end],
            _ => bail!("gradient_accumulate: the buffer must be contiguous f32"),
        };
        let lhs = if a_transposed {
            MatRef::new(a, 0, k, m, m, 1).t()
        } else {
            MatRef::new(a, 0, m, k, k, 1)
        };
        let rhs = MatRef::new(b, 0, k, n, n, 1);
        let threads = if m * n * k >= 1 << 16 {
            rayon::current_num_threads()
        } else {
            1
        };
        matmul_with(MatMut::new(dst, 0, m, n, n, 1), lhs, rhs, alpha, true, threads);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<()> {
        cuda::gemm_accumulate(*self, s1, l1, s2, l2, s3, l3)
    }
}

struct Zero;

impl InplaceOp1 for Zero {
    fn name(&self) -> &'static str {
        "zero"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((start, end))) => d[start..end].fill(0.0),
            _ => bail!("zero: the buffer must be contiguous f32"),
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &mut candle_core::CudaStorage, l: &Layout) -> Result<()> {
        cuda::zero(s, l)
    }
}

/// `cublasGemmEx` on candle's storages.
#[cfg(feature = "cuda")]
mod cuda {
    use super::Product;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::cublas::{result, sys};
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};
    use candle_core::cuda_backend::{CudaStorage, WrapErr};
    use candle_core::{bail, DType, Layout, Result};
    use std::ffi::c_void;

    fn start(op: &str, l: &Layout) -> Result<usize> {
        match l.contiguous_offsets() {
            Some((a, _)) => Ok(a),
            None => bail!("{op}: expected a contiguous operand"),
        }
    }

    /// The device address of a contiguous operand's first element.
    fn address(s: &CudaStorage, l: &Layout) -> Result<u64> {
        let stream = s.device.cuda_stream();
        let off = start("gradient_accumulate", l)?;
        let (base, size) = match s.dtype() {
            DType::BF16 => (s.as_cuda_slice::<half::bf16>()?.device_ptr(&stream).0, 2),
            DType::F16 => (s.as_cuda_slice::<half::f16>()?.device_ptr(&stream).0, 2),
            DType::F32 => (s.as_cuda_slice::<f32>()?.device_ptr(&stream).0, 4),
            other => bail!("gradient_accumulate: operands in {other:?} are not supported"),
        };
        Ok(base + (off * size) as u64)
    }

    fn int(what: &str, v: usize) -> Result<i32> {
        i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("gradient_accumulate: {what} {v} exceeds i32")))
    }

    /// Row-major `D [m, n] += alpha · op(A) · B` as column-major `Dᵀ [n, m] += Bᵀ · op(A)ᵀ`:
    /// B row-major is Bᵀ column-major (ld n); A row-major `[m, k]` is Aᵀ column-major (ld k),
    /// and a transposed A (`[k, m]` row-major) is read with `CUBLAS_OP_T` (ld m).
    pub fn gemm_accumulate(
        p: Product,
        dst: &mut CudaStorage,
        ld: &Layout,
        a: &CudaStorage,
        la: &Layout,
        b: &CudaStorage,
        lb: &Layout,
    ) -> Result<()> {
        if p.m == 0 || p.n == 0 || p.k == 0 {
            return Ok(());
        }
        let in_type = match a.dtype() {
            DType::BF16 => sys::cudaDataType_t::CUDA_R_16BF,
            DType::F16 => sys::cudaDataType_t::CUDA_R_16F,
            DType::F32 => sys::cudaDataType_t::CUDA_R_32F,
            other => bail!("gradient_accumulate: operands in {other:?} are not supported"),
        };
        let a_ptr = address(a, la)?;
        let b_ptr = address(b, lb)?;
        let dev = dst.device.clone();
        let stream = dev.cuda_stream();
        let off = start("gradient_accumulate", ld)?;
        let blas = dev.cublas_handle();
        let d = dst.as_cuda_slice_mut::<f32>()?;
        let (d_base, _guard) = d.device_ptr_mut(&stream);
        let d_ptr = d_base + (off * 4) as u64;
        let (alpha, beta) = (p.alpha, 1f32);
        let (transb, ldb) = if p.a_transposed {
            (sys::cublasOperation_t::CUBLAS_OP_T, p.m)
        } else {
            (sys::cublasOperation_t::CUBLAS_OP_N, p.k)
        };
        crate::ops::device_calls::gemm();
        // SAFETY: the three operands are contiguous device buffers of the sizes the product
        // reads and writes (checked by `accumulate` before the op runs), alive for the call, on
        // the stream the handle is bound to.
        unsafe {
            result::gemm_ex(
                *blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_N,
                transb,
                int("n", p.n)?,
                int("m", p.m)?,
                int("k", p.k)?,
                (&alpha) as *const f32 as *const c_void,
                b_ptr as *const c_void,
                in_type,
                int("n", p.n)?,
                a_ptr as *const c_void,
                in_type,
                int("ld", ldb)?,
                (&beta) as *const f32 as *const c_void,
                d_ptr as *mut c_void,
                sys::cudaDataType_t::CUDA_R_32F,
                int("n", p.n)?,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
            .w()?;
        }
        Ok(())
    }

    pub fn zero(s: &mut CudaStorage, l: &Layout) -> Result<()> {
        let Some((a, b)) = l.contiguous_offsets() else {
            bail!("zero: expected a contiguous buffer");
        };
        let stream = s.device.cuda_stream();
        let d = s.as_cuda_slice_mut::<f32>()?;
        let mut view = d.slice_mut(a..b);
        stream.memset_zeros(&mut view).w()?;
        Ok(())
    }
}

/// The accumulation in the kernel checks (`syncoder selftest`): on the suite's device and dtype
/// (cuBLAS on a GPU), against f32 host products: a weight gradient added twice into a buffer
/// that holds something already (one of them into a view at an offset), column sums, a scaled
/// add, and zeroing. Every buffer is a copy of its own (a CPU `to_device` shares storage, and the
/// ops write in place).
pub mod check {
    use super::super::check::{rel_err, Suite};
    use candle_core::{DType, Tensor};

    pub fn selftest(s: &mut Suite) -> anyhow::Result<()> {
        let tol = if s.dtype == DType::F32 { 1e-5 } else { 1e-3 };
        let (n, o, i) = (300, 70, 130);
        let (g1, x1, g2, x2) = (
            s.randn(&[n, o], 1.0)?,
            s.randn(&[n, i], 1.0)?,
            s.randn(&[n, o], 1.0)?,
            s.randn(&[n, i], 1.0)?,
        );
        let base = s.randn(&[2 * o, i], 1.0)?;
        let (device, dtype) = (s.device.clone(), s.dtype);
        let dev = |t: &Tensor| -> anyhow::Result<Tensor> { Ok(t.to_device(&device)?.to_dtype(dtype)?) };
        // Host reference in f32: the upper half of the buffer gets 0.5·g1ᵀx1 + g2ᵀx2.
        let upper = (base.narrow(0, 0, o)? + (g1.t()?.matmul(&x1)? * 0.5)?)?;
        let want = Tensor::cat(&[(upper + g2.t()?.matmul(&x2)?)?, base.narrow(0, o, o)?], 0)?;
        let got = (|| -> anyhow::Result<Tensor> {
            let buf = base.to_device(&device)?.copy()?;
            let view = buf.narrow(0, 0, o)?;
            super::add_weight_grad(&view, &dev(&g1)?, &dev(&x1)?, 0.5)?;
            super::add_weight_grad(&view, &dev(&g2)?, &dev(&x2)?, 1.0)?;
            Ok(buf.to_device(&candle_core::Device::Cpu)?)
        })();
        s.record_result(
            &format!("gradient accumulation: dW += gᵀx into a view [{o}x{i}] of {n} rows"),
            got.and_then(|g| rel_err(&g, &want)),
            tol,
        );
        let db = s.randn(&[o], 1.0)?;
        let want = (&db + (g1.sum(0)? * 0.25)?)?;
        let got = (|| -> anyhow::Result<Tensor> {
            let buf = db.to_device(&device)?.copy()?;
            super::add_column_sums(&buf, &dev(&g1)?, 0.25)?;
            Ok(buf.to_device(&candle_core::Device::Cpu)?)
        })();
        s.record_result(
            &format!("gradient accumulation: column sums of {n} rows"),
            got.and_then(|g| rel_err(&g, &want)),
            tol,
        );
        let want = (&x1 + (&x2 * -2.0)?)?;
        let got = (|| -> anyhow::Result<(Tensor, f32)> {
            let buf = x1.to_device(&device)?.copy()?;
            super::add_scaled(&buf, &dev(&x2)?, -2.0)?;
            let added = buf.to_device(&candle_core::Device::Cpu)?.copy()?;
            super::zero(&buf)?;
            let left = buf.abs()?.sum_all()?.to_scalar::<f32>()?;
            Ok((added, left))
        })();
        let (added, zeroed) = match got {
            Ok((a, left)) => (
                rel_err(&a, &want),
                if left == 0.0 { Ok(0.0) } else { Ok(f64::INFINITY) },
            ),
            Err(e) => (Err(anyhow::anyhow!("{e:#}")), Err(e)),
        };
        s.record_result("gradient accumulation: scaled add", added, tol);
        s.record_result("gradient accumulation: zero in place", zeroed, 0.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::max_abs_diff;
    use candle_core::Device;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn weight_grads_accumulate_in_place() {
        let (n, o, i) = (37, 19, 23);
        let (g1, x1, g2, x2) = (
            randn(&[n, o], 1),
            randn(&[n, i], 2),
            randn(&[n, o], 3),
            randn(&[n, i], 4),
        );
        let dst = randn(&[o, i], 5);
        let want = ((&dst + (g1.t().unwrap().matmul(&x1).unwrap() * 0.5).unwrap()).unwrap()
            + g2.t().unwrap().matmul(&x2).unwrap())
        .unwrap();
        add_weight_grad(&dst, &g1, &x1, 0.5).unwrap();
        add_weight_grad(&dst, &g2, &x2, 1.0).unwrap();
        assert!(max_abs_diff(&dst, &want) < 1e-5, "{}", max_abs_diff(&dst, &want));
    }

    #[test]
    fn large_weight_grads_take_the_parallel_path() {
        let (n, o, i) = (64, 48, 40);
        let (g, x) = (randn(&[n, o], 6), randn(&[n, i], 7));
        let dst = Tensor::zeros((o, i), DType::F32, &Device::Cpu).unwrap();
        add_weight_grad(&dst, &g, &x, 2.0).unwrap();
        let want = (g.t().unwrap().matmul(&x).unwrap() * 2.0).unwrap();
        assert!(max_abs_diff(&dst, &want) < 1e-4);
    }

    #[test]
    fn column_sums_and_scaled_adds() {
        let g = randn(&[11, 7], 8);
        let db = randn(&[7], 9);
        let want = (&db + (g.sum(0).unwrap() * 0.25).unwrap()).unwrap();
        add_column_sums(&db, &g, 0.25).unwrap();
        assert!(max_abs_diff(&db, &want) < 1e-6);
        let src = randn(&[3, 5], 10);
        let dst = randn(&[3, 5], 11);
        let want = (&dst + (&src * -2.0).unwrap()).unwrap();
        add_scaled(&dst, &src, -2.0).unwrap();
        assert!(max_abs_diff(&dst, &want) < 1e-6);
        zero(&dst).unwrap();
        assert_eq!(dst.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn a_view_of_a_buffer_is_written_in_its_place_only() {
        let buf = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
        let row = buf.narrow(0, 1, 2).unwrap();
        add_scaled(&row, &Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap(), 1.0).unwrap();
        let v = buf.to_vec2::<f32>().unwrap();
        assert_eq!(v[0], [0.0; 3]);
        assert_eq!(v[1], [1.0; 3]);
        assert_eq!(v[3], [0.0; 3]);
    }

    #[test]
    fn mismatched_shapes_and_dtypes_are_refused() {
        let dst = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(add_weight_grad(&dst, &randn(&[5, 3], 1), &randn(&[5, 5], 2), 1.0).is_err());
        assert!(add_column_sums(&dst, &randn(&[5, 3], 1), 1.0).is_err());
        let f64_dst = Tensor::zeros((3, 4), DType::F64, &Device::Cpu).unwrap();
        assert!(add_scaled(&f64_dst, &randn(&[3, 4], 1), 1.0).is_err());
    }
}
