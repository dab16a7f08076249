//! The matrix product of the model's layers and loss, `a [m, k] · b [k, n]` (either may be a
//! transposed view, as `w.t()`): on the CPU in f32 it runs through `gemm::matmul_with`, the one
//! routine every CPU product goes through (OpenBLAS with `--features openblas`, else the `gemm`
//! crate), without copying transposed views; elsewhere (CUDA, other dtypes), and whenever an
//! input is tracked by autograd (the tests' reference path), it is candle's `matmul`.

use super::gemm::{matmul_with, MatMut, MatRef};
use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};

pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cpu_f32 = a.device().is_cpu() && a.dtype() == candle_core::DType::F32 && b.dtype() == a.dtype();
    if !cpu_f32 || a.rank() != 2 || b.rank() != 2 || a.track_op() || b.track_op() {
        return a.matmul(b);
    }
    let ((m, k), (kb, n)) = (a.dims2()?, b.dims2()?);
    if k != kb {
        candle_core::bail!("matmul: [{m}, {k}] · [{kb}, {n}]");
    }
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(da)), Storage::Cpu(CpuStorage::F32(db))) = (&*sa, &*sb) else {
        drop((sa, sb));
        return a.matmul(b);
    };
    let mut out = vec![0f32; m * n];
    matmul_with(
        MatMut::new(&mut out, 0, m, n, n, 1),
        view(da, la),
        view(db, lb),
        1.0,
        false,
        rayon::current_num_threads(),
    );
    drop((sa, sb));
    Tensor::from_vec(out, (m, n), a.device())
}

/// The 2-D strided view of a CPU tensor's storage.
fn view<'a>(data: &'a [f32], l: &Layout) -> MatRef<'a> {
    let (dims, strides) = (l.dims(), l.stride());
    MatRef::new(data, l.start_offset(), dims[0], dims[1], strides[0], strides[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::max_abs_diff;
    use candle_core::{DType, Device, Var};

    #[test]
    fn plain_and_transposed_views_match_candle() {
        let a = Tensor::randn(0f32, 1.0, (37, 64), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1.0, (29, 64), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (64, 29), &Device::Cpu).unwrap();
        for (x, y) in [
            (&a, &w.t().unwrap()),
            (&a, &b),
            (&w, &a.t().unwrap()),
            (&b.t().unwrap(), &a.t().unwrap()),
        ] {
            let got = matmul(x, y).unwrap();
            let want = x.matmul(y).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(max_abs_diff(&got, &want) < 1e-4, "{}", max_abs_diff(&got, &want));
        }
        // A narrowed view (an offset into its storage).
        let part = a.narrow(0, 5, 20).unwrap();
        assert!(max_abs_diff(&matmul(&part, &b).unwrap(), &part.matmul(&b).unwrap()) < 1e-4);
    }

    #[test]
    fn tracked_inputs_keep_their_gradient() {
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 3), &Device::Cpu).unwrap()).unwrap();
        let b = Tensor::randn(0f32, 1.0, (3, 2), &Device::Cpu).unwrap();
        let grads = matmul(a.as_tensor(), &b)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(a.as_tensor()).is_some());
        let f64s = Tensor::zeros((2, 2), DType::F64, &Device::Cpu).unwrap();
        assert_eq!(matmul(&f64s, &f64s).unwrap().dtype(), DType::F64);
    }
}
