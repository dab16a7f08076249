//! The kernel check harness every op's `check` module uses (and `syncoder selftest` runs): an
//! op and its expected values over the same fresh random inputs, forward and backward, compared
//! with one NaN-aware relative error.
//!
//! On a CUDA device the expected values come from the CPU twin (the same op's CPU
//! implementation, in f32, on the same inputs rounded to the device dtype), and the device's
//! memory pool is poisoned with NaN before each run so an element a kernel forgets to write
//! shows as a failure. On the CPU the fused CPU ops are checked against their composed
//! references, which exercises the checks without a GPU.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// One comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub dtype: String,
    /// max |got - want| / max |want| (infinite where `got` is not finite and `want` is).
    pub rel_err: f64,
    pub tolerance: f64,
    pub passed: bool,
    pub note: String,
}

/// Normwise relative error `max|got - want| / max|want|` of two tensors (any devices and float
/// dtypes); infinite when an element of `got` is not finite where `want`'s is, or the shapes
/// differ in size. Every numeric test and the selftest measure with this.
pub fn rel_err(got: &Tensor, want: &Tensor) -> Result<f64> {
    if got.dims() != want.dims() {
        anyhow::bail!("shape {:?} where {:?} was expected", got.dims(), want.dims());
    }
    let g = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let w = want.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(rel_err_slices(&g, &w))
}

/// `rel_err` on host slices.
pub fn rel_err_slices(got: &[f32], want: &[f32]) -> f64 {
    let mut diff = 0f64;
    let mut scale = 0f64;
    for (&a, &b) in got.iter().zip(want) {
        if !a.is_finite() && b.is_finite() {
            return f64::INFINITY;
        }
        diff = diff.max((a as f64 - b as f64).abs());
        scale = scale.max((b as f64).abs());
    }
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    diff / scale.max(1e-12)
}

/// The results as an aligned text table with a closing verdict line.
pub fn table(results: &[CheckResult], device: &str) -> String {
    let mut s = format!(
        "{:<56} {:<5} {:>12} {:>10}  result\n",
        "check", "dtype", "rel. error", "tolerance"
    );
    for r in results {
        s.push_str(&format!(
            "{:<56} {:<5} {:>12.3e} {:>10.0e}  {}{}\n",
            r.check,
            r.dtype,
            r.rel_err,
            r.tolerance,
            if r.passed { "PASS" } else { "FAIL" },
            if r.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", r.note)
            }
        ));
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    s.push_str(&format!(
        "{}: {} of {} checks passed on {device}\n",
        if failed == 0 { "PASS" } else { "FAIL" },
        results.len() - failed,
        results.len()
    ));
    s
}

/// The checks of one device and dtype, with their random stream and results.
pub struct Suite<'a> {
    pub device: Device,
    pub dtype: DType,
    pub rng: ChaCha8Rng,
    out: &'a mut Vec<CheckResult>,
}

/// An op input: the host f32 values (already rounded to the device dtype), whether it gets a
/// gradient, and whether it stays f32 on the device (tables, targets keep their own dtype).
pub struct Input {
    host: Tensor,
    grad: bool,
    keep_dtype: bool,
}

impl Input {
    /// A differentiable input, in the suite's dtype on the device.
    pub fn var(host: Tensor) -> Self {
        Self {
            host,
            grad: true,
            keep_dtype: false,
        }
    }

    /// A constant input that keeps its own dtype (tables).
    pub fn fixed(host: Tensor) -> Self {
        Self {
            host,
            grad: false,
            keep_dtype: true,
        }
    }
}

/// A fused op or its expected values as a function of the inputs.
pub type OpFn<'f> = &'f dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>;

impl<'a> Suite<'a> {
    pub fn new(device: &Device, dtype: DType, seed: u64, out: &'a mut Vec<CheckResult>) -> Self {
        Self {
            device: device.clone(),
            dtype,
            rng: ChaCha8Rng::seed_from_u64(seed),
            out,
        }
    }

    pub fn is_cuda(&self) -> bool {
        self.device.is_cuda()
    }

    /// The tolerance of the suite's dtype: 1e-5 in f32, 1e-2 in bf16.
    pub fn tolerance(&self) -> f64 {
        if self.dtype == DType::F32 {
            1e-5
        } else {
            1e-2
        }
    }

    fn dtype_name(&self) -> String {
        format!("{:?}", self.dtype).to_lowercase()
    }

    pub fn record(&mut self, check: &str, rel_err: f64, tolerance: f64, note: &str) {
        let dtype = self.dtype_name();
        self.out.push(CheckResult {
            check: check.to_string(),
            dtype,
            rel_err,
            tolerance,
            passed: rel_err <= tolerance,
            note: note.to_string(),
        });
    }

    pub fn record_result(&mut self, check: &str, r: Result<f64>, tolerance: f64) {
        match r {
            Ok(e) => self.record(check, e, tolerance, ""),
            Err(e) => self.record(check, f64::INFINITY, tolerance, &format!("error: {e:#}")),
        }
    }

    /// Host f32 values ~ N(0, std), rounded through the suite dtype.
    pub fn randn(&mut self, shape: &[usize], std: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let dist = rand_distr::Normal::new(0f32, std)?;
        let v: Vec<f32> = (0..n).map(|_| self.rng.sample(dist)).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_dtype(DType::F32)?)
    }

    /// Host values ~ N(1, std) rounded through the suite dtype (norm weights).
    pub fn near_one(&mut self, shape: &[usize], std: f32) -> Result<Tensor> {
        Ok((self.randn(shape, std)? + 1.0)?
            .to_dtype(self.dtype)?
            .to_dtype(DType::F32)?)
    }

    /// Fills the device's free memory pool with NaN, so outputs allocated next start poisoned.
    pub fn poison(&self) -> Result<()> {
        if self.is_cuda() {
            let t = Tensor::full(f32::NAN, 16 << 20, &self.device)?;
            self.device.synchronize()?;
            drop(t);
        }
        Ok(())
    }

    /// Runs `fused` on the device and the expected function on the CPU over the same inputs,
    /// then compares the outputs and the gradients of `sum(y * r)` for a random `r`.
    pub fn compare_with_grads(&mut self, name: &str, inputs: Vec<Input>, fused: OpFn, composed: OpFn) -> Result<()> {
        let tol = self.tolerance();
        self.compare_with_grads_tol(name, inputs, fused, composed, tol)
    }

    pub fn compare_with_grads_tol(
        &mut self,
        name: &str,
        inputs: Vec<Input>,
        fused: OpFn,
        composed: OpFn,
        tol: f64,
    ) -> Result<()> {
        let expected = if self.is_cuda() { fused } else { composed };
        let want_vars: Vec<Var> = inputs
            .iter()
            .map(|i| Var::from_tensor(&i.host))
            .collect::<candle_core::Result<_>>()?;
        let want_in: Vec<Tensor> = want_vars.iter().map(|v| v.as_tensor().clone()).collect();
        let want = expected(&want_in)?;
        let r = self.randn(want.dims(), 1.0)?;
        let want_grads = (want.to_dtype(DType::F32)? * &r)?.sum_all()?.backward()?;

        self.poison()?;
        let got_vars: Vec<Var> = inputs
            .iter()
            .map(|i| {
                let dt = if i.keep_dtype { i.host.dtype() } else { self.dtype };
                Var::from_tensor(&i.host.to_device(&self.device)?.to_dtype(dt)?)
            })
            .collect::<candle_core::Result<_>>()?;
        let got_in: Vec<Tensor> = got_vars.iter().map(|v| v.as_tensor().clone()).collect();
        let got = fused(&got_in)?;
        self.record_result(&format!("{name} forward"), rel_err(&got, &want), tol);
        self.poison()?;
        let got_grads = (got.to_dtype(DType::F32)? * r.to_device(&self.device)?)?
            .sum_all()?
            .backward()?;
        for (k, inp) in inputs.iter().enumerate() {
            if !inp.grad {
                continue;
            }
            let res = match (
                got_grads.get(got_vars[k].as_tensor()),
                want_grads.get(want_vars[k].as_tensor()),
            ) {
                (Some(g), Some(w)) => rel_err(g, w),
                _ => Err(anyhow::anyhow!("no gradient reached input {k}")),
            };
            self.record_result(&format!("{name} backward (input {k})"), res, tol);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_err_catches_unwritten_and_wrong_elements() {
        assert_eq!(rel_err_slices(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!(rel_err_slices(&[1.0, f32::NAN], &[1.0, 2.0]).is_infinite());
        assert!((rel_err_slices(&[1.0, 2.1], &[1.0, 2.0]) - 0.05).abs() < 1e-6);
        assert!(rel_err_slices(&[1.0], &[1.0, 2.0]).is_infinite());
        // A NaN after the first element (candle's CPU `max` would skip it) still fails.
        let got = Tensor::new(&[1.0f32, 2.0, f32::NAN, 4.0], &Device::Cpu).unwrap();
        let want = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
        assert!(rel_err(&got, &want).unwrap().is_infinite());
    }
}
