//! Sum of squares of a tensor in f64, with a fixed reduction order on CPU (so a run's gradient
//! norms, and with them its clipping, are reproducible bit for bit). The global gradient norm
//! is the square root of the sum over all parameters, taken in parameter order.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// Σ x² over a slice: f64 partial sums per fixed-size chunk, added in chunk order.
pub fn sum_squares_cpu(x: &[f32]) -> f64 {
    let partial: Vec<f64> = x
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .collect();
    partial.iter().sum()
}

/// Σ x² of a tensor of any float dtype.
pub fn sum_squares(t: &Tensor) -> Result<f64> {
    match t.device() {
        Device::Cpu => {
            let t = t.to_dtype(DType::F32)?.flatten_all()?;
            super::with_cpu_f32("sum_squares", &t.contiguous()?, |x| Ok(sum_squares_cpu(x)))
        }
        _ => Ok(t.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64),
    }
}

/// `sqrt(Σ_params Σ g²)`, summed in the order given.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads {
        total += sum_squares(g)?;
    }
    Ok(total.sqrt())
}
