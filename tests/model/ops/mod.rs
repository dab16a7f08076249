//! Every fused op against its plain composed-candle reference: forward and every input
//! gradient, on random inputs of several shapes (including sizes that are multiples of no
//! block size). f32 tolerance: 1e-5 relative (max-norm) on the CPU, `CUDA_TOL` on a GPU, where
//! `test_device!` runs the same tests again.

mod adamw;
mod attention;
mod cached_attention;
mod linear_cross_entropy;
mod rms_norm;
mod rope;
mod swiglu;

use crate::common::{randn, rel_err};
use candle_core::{Device, Result, Tensor, Var};

pub const TOL: f32 = 1e-5;

/// f32 tolerance of a CUDA kernel against the composed reference (both on the GPU; sums are
/// reduced in another order).
pub const CUDA_TOL: f32 = 1e-4;

/// The f32 tolerance on `device`.
pub fn tol(device: &Device) -> f32 {
    if device.is_cpu() {
        TOL
    } else {
        CUDA_TOL
    }
}

/// Fresh variables holding `values`.
pub fn vars(values: &[Tensor]) -> Result<Vec<Var>> {
    values.iter().map(Var::from_tensor).collect()
}

/// Runs `f` on variables made from `inputs`, reduces the output with fixed random weights, and
/// returns the output and the gradient of every input.
pub fn fwd_and_grads(
    inputs: &[Tensor],
    seed: u64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let vs = vars(inputs)?;
    let ts: Vec<Tensor> = vs.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts)?;
    let w = randn(seed, out.dims(), 1.0, out.device())?;
    let loss = (out.clone() * w)?.sum_all()?;
    let grads = loss.backward()?;
    let gs = ts
        .iter()
        .map(|t| {
            grads
                .get(t)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("an input received no gradient".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out.detach(), gs))
}

/// Asserts the fused and reference computations agree on output and every gradient.
pub fn check_op(
    what: &str,
    inputs: &[Tensor],
    fused: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let (o1, g1) = fwd_and_grads(inputs, 99, fused)?;
    let (o2, g2) = fwd_and_grads(inputs, 99, reference)?;
    let tol = tol(o1.device());
    let e = rel_err(&o1, &o2)?;
    assert!(e <= tol, "{what}: forward rel err {e:e}");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let e = rel_err(a, b)?;
        assert!(e <= tol, "{what}: gradient of input {i} rel err {e:e}");
        assert!(
            b.abs()?.max_keepdim(0)?.flatten_all()?.max(0)?.to_scalar::<f32>()? > 0.0,
            "{what}: reference gradient {i} is all zero"
        );
    }
    Ok(())
}
