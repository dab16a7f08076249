//! The kernel-vs-twin checks behind `syncoder selftest` (and the `tests/cuda_*.rs` suite): every
//! fused op, forward and backward, on fresh random inputs of awkward sizes, against its
//! expected values, plus one training step of a small model.
//!
//! On a CUDA device the expected values come from the CPU twin (the same op's CPU
//! implementation, in f32, on the same inputs rounded to the device dtype), and the device's
//! memory pool is poisoned with NaN before each run so an element a kernel forgets to write
//! shows as a failure. On the CPU the fused CPU ops are checked against the composed references
//! of `ops::reference`, which exercises this module without a GPU.

use crate::model::{PackedBatch, Qwen2, Qwen2Config};
use crate::ops::{self, reference, AdamWStep, RopeTable, IGNORE_INDEX};
use anyhow::{Context, Result};
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

/// Normwise relative error of `got` against `want` (any devices and float dtypes).
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

/// Runs every check on `device` in each dtype it trains in (f32 on CPU; f32 and bf16 on CUDA).
pub fn run(device: &Device, seed: u64) -> Result<Vec<CheckResult>> {
    let dtypes: &[DType] = if device.is_cpu() {
        &[DType::F32]
    } else {
        &[DType::F32, DType::BF16]
    };
    let mut out = Vec::new();
    for &dtype in dtypes {
        let mut s = Suite {
            device: device.clone(),
            dtype,
            rng: ChaCha8Rng::seed_from_u64(seed),
            out: &mut out,
        };
        s.rms_norm()?;
        s.add_rms_norm()?;
        s.rope()?;
        s.swiglu()?;
        s.attention()?;
        s.cross_entropy_in_place()?;
        s.linear_cross_entropy()?;
        s.adamw()?;
        s.grad_norm()?;
        s.train_step()?;
    }
    Ok(out)
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

struct Suite<'a> {
    device: Device,
    dtype: DType,
    rng: ChaCha8Rng,
    out: &'a mut Vec<CheckResult>,
}

/// An op input: the host f32 values (already rounded to the device dtype), whether it gets a
/// gradient, and whether it stays f32 on the device (tables, targets keep their own dtype).
struct Input {
    host: Tensor,
    grad: bool,
    keep_dtype: bool,
}

impl Input {
    /// A differentiable input, in the suite's dtype on the device.
    fn var(host: Tensor) -> Self {
        Self {
            host,
            grad: true,
            keep_dtype: false,
        }
    }

    /// A constant input that keeps its own dtype (tables).
    fn fixed(host: Tensor) -> Self {
        Self {
            host,
            grad: false,
            keep_dtype: true,
        }
    }
}

impl Suite<'_> {
    fn is_cuda(&self) -> bool {
        self.device.is_cuda()
    }

    fn tolerance(&self) -> f64 {
        if self.dtype == DType::F32 {
            1e-5
        } else {
            1e-2
        }
    }

    fn dtype_name(&self) -> String {
        format!("{:?}", self.dtype).to_lowercase()
    }

    fn record(&mut self, check: &str, rel_err: f64, tolerance: f64, note: &str) {
        self.out.push(CheckResult {
            check: check.to_string(),
            dtype: self.dtype_name(),
            rel_err,
            tolerance,
            passed: rel_err <= tolerance,
            note: note.to_string(),
        });
    }

    fn record_result(&mut self, check: &str, r: Result<f64>, tolerance: f64) {
        match r {
            Ok(e) => self.record(check, e, tolerance, ""),
            Err(e) => self.record(check, f64::INFINITY, tolerance, &format!("error: {e:#}")),
        }
    }

    /// Host f32 values ~ N(0, std), rounded through the suite dtype.
    fn randn(&mut self, shape: &[usize], std: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let dist = rand_distr::Normal::new(0f32, std)?;
        let v: Vec<f32> = (0..n).map(|_| self.rng.sample(dist)).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_dtype(DType::F32)?)
    }

    /// Fills the device's free memory pool with NaN, so outputs allocated next start poisoned.
    fn poison(&self) -> Result<()> {
        if self.is_cuda() {
            let t = Tensor::full(f32::NAN, 16 << 20, &self.device)?;
            self.device.synchronize()?;
            drop(t);
        }
        Ok(())
    }

    /// Runs `fused` on the device and the expected function on the CPU over the same inputs,
    /// then compares the outputs and the gradients of `sum(y * r)` for a random `r`.
    fn compare_with_grads(
        &mut self,
        name: &str,
        inputs: Vec<Input>,
        fused: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>,
        composed: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    ) -> Result<()> {
        self.compare_with_grads_tol(name, inputs, fused, composed, self.tolerance())
    }

    fn compare_with_grads_tol(
        &mut self,
        name: &str,
        inputs: Vec<Input>,
        fused: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>,
        composed: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>,
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

    fn rms_norm(&mut self) -> Result<()> {
        for (rows, h) in [(37, 1000), (5, 2304)] {
            let x = self.randn(&[rows, h], 1.0)?;
            let w = (self.randn(&[h], 0.1)? + 1.0)?
                .to_dtype(self.dtype)?
                .to_dtype(DType::F32)?;
            let inputs = vec![Input::var(x), Input::var(w)];
            self.compare_with_grads(
                &format!("rms_norm [{rows}x{h}]"),
                inputs,
                &|t| ops::rms_norm(&t[0], &t[1], 1e-6),
                &|t| reference::rms_norm(&t[0], &t[1], 1e-6),
            )?;
        }
        Ok(())
    }

    fn add_rms_norm(&mut self) -> Result<()> {
        let (rows, h) = (29, 1000);
        let inputs = vec![
            Input::var(self.randn(&[rows, h], 1.0)?),
            Input::var(self.randn(&[rows, h], 0.5)?),
            Input::var(
                (self.randn(&[h], 0.1)? + 1.0)?
                    .to_dtype(self.dtype)?
                    .to_dtype(DType::F32)?,
            ),
        ];
        self.compare_with_grads(
            &format!("add_rms_norm (residual-fused) [{rows}x{h}]"),
            inputs,
            &|t| {
                let (s, n) = ops::add_rms_norm(&t[0], &t[1], &t[2], 1e-6)?;
                Tensor::stack(&[s, n], 0)
            },
            &|t| {
                let s = (&t[0] + &t[1])?;
                let n = reference::rms_norm(&s, &t[2], 1e-6)?;
                Tensor::stack(&[s, n], 0)
            },
        )
    }

    fn rope(&mut self) -> Result<()> {
        let (n, heads, d) = (29, 3, 80);
        let positions: Vec<u32> = (0..n as u32).map(|p| (p * 7) % 23).collect();
        let table = RopeTable::new(&positions, d, 1_000_000.0, &Device::Cpu)?;
        let x = self.randn(&[n, heads, d], 1.0)?;
        let inputs = vec![
            Input::var(x),
            Input::fixed(table.cos.clone()),
            Input::fixed(table.sin.clone()),
        ];
        self.compare_with_grads(
            &format!("rope [{n}x{heads}x{d}]"),
            inputs,
            &|t| {
                let table = RopeTable {
                    cos: t[1].clone(),
                    sin: t[2].clone(),
                };
                ops::rope(&t[0], &table)
            },
            &|t| reference::rope(&t[0], &t[1], &t[2]),
        )
    }

    fn swiglu(&mut self) -> Result<()> {
        let shape = [41, 1003];
        let inputs = vec![
            Input::var(self.randn(&shape, 2.0)?),
            Input::var(self.randn(&shape, 1.0)?),
        ];
        self.compare_with_grads("swiglu [41x1003]", inputs, &|t| ops::swiglu(&t[0], &t[1]), &|t| {
            reference::swiglu(&t[0], &t[1])
        })
    }

    /// The attention of the GPU path (`ops::chunked_attention`: cuBLAS matmuls and an f32
    /// softmax a block of heads at a time): packed documents, grouped-query heads, two head
    /// blocks. In bf16 the scores leave the matmul in bf16, hence the wider tolerance.
    fn attention(&mut self) -> Result<()> {
        let docs = [vec![5usize, 40, 20], vec![65]];
        let (hq, hkv, d) = (6, 2, 64);
        let positions: Vec<u32> = docs.iter().flat_map(|r| r.iter().flat_map(|&l| 0..l as u32)).collect();
        let segs = ops::DocSegments::from_positions(&positions, docs.len(), 65)?;
        let n = segs.len();
        let inputs = vec![
            Input::var(self.randn(&[n, hq, d], 1.0)?),
            Input::var(self.randn(&[n, hkv, d], 1.0)?),
            Input::var(self.randn(&[n, hkv, d], 1.0)?),
        ];
        let scale = 1.0 / (d as f64).sqrt();
        let tol = if self.dtype == DType::F32 { 1e-5 } else { 3e-2 };
        let (s1, s2) = (segs.clone(), segs);
        self.compare_with_grads_tol(
            &format!("attention (blocks of 4 heads) [{n}x{hq}/{hkv}x{d}]"),
            inputs,
            &move |t| ops::chunked_attention::chunked_attention(&t[0], &t[1], &t[2], &s1, scale, Some(4)),
            &move |t| ops::attention::composed_attention(&t[0], &t[1], &t[2], &s2, scale),
            tol,
        )
    }

    /// Targets for `rows` rows over `vocab`: both vocabulary ends and some ignored rows.
    fn targets(&mut self, rows: usize, vocab: usize) -> Vec<i64> {
        (0..rows)
            .map(|i| match i % 7 {
                0 => IGNORE_INDEX,
                1 => 0,
                2 => vocab as i64 - 1,
                _ => self.rng.random_range(0..vocab as i64),
            })
            .collect()
    }

    /// The in-place kernel alone: row losses and the gradient written over the logits.
    fn cross_entropy_in_place(&mut self) -> Result<()> {
        let tol = self.tolerance();
        let (rows, vocab) = (67, 1543);
        let logits = (self.randn(&[rows, vocab], 3.0)?)
            .to_dtype(self.dtype)?
            .to_dtype(DType::F32)?;
        let targets = self.targets(rows, vocab);
        // Expected: the CPU row function on f32 copies.
        let mut want = logits.flatten_all()?.to_vec1::<f32>()?;
        let mut want_loss = Vec::with_capacity(rows);
        for (row, &t) in want.chunks_mut(vocab).zip(&targets) {
            want_loss.push(ops::linear_cross_entropy::cross_entropy_row(row, t)?);
        }
        self.poison()?;
        let dev_logits = if self.is_cuda() {
            logits.to_device(&self.device)?.to_dtype(self.dtype)?
        } else {
            logits.copy()?
        };
        let dev_targets = Tensor::new(targets.as_slice(), &self.device)?;
        let op = ops::linear_cross_entropy::CrossEntropyInPlace {
            row_loss: std::sync::Mutex::new(Vec::new()),
        };
        let name = format!("cross_entropy_in_place [{rows}x{vocab}]");
        match dev_logits.inplace_op2(&dev_targets, &op) {
            Ok(()) => {
                let got_loss = op.row_loss.into_inner().map_err(|_| anyhow::anyhow!("poisoned lock"))?;
                self.record(
                    &format!("{name} row losses"),
                    rel_err_slices(&got_loss, &want_loss),
                    tol,
                    "",
                );
                let got = dev_logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                self.record(&format!("{name} gradient"), rel_err_slices(&got, &want), tol, "");
            }
            Err(e) => self.record(&name, f64::INFINITY, tol, &format!("error: {e}")),
        }
        // A target outside the vocabulary must be reported, not silently used.
        let bad = Tensor::new(&[vocab as i64], &self.device)?;
        let one = dev_logits.narrow(0, 0, 1)?.copy()?;
        let op = ops::linear_cross_entropy::CrossEntropyInPlace {
            row_loss: std::sync::Mutex::new(Vec::new()),
        };
        let refused = one.inplace_op2(&bad, &op).is_err();
        self.record(
            "cross_entropy_in_place rejects target == vocab",
            if refused { 0.0 } else { f64::INFINITY },
            0.0,
            if refused { "" } else { "accepted" },
        );
        Ok(())
    }

    /// The whole chunked op (cuBLAS matmuls + the kernel), with gradients.
    fn linear_cross_entropy(&mut self) -> Result<()> {
        let (n, h, vocab) = (300, 72, 1031);
        let targets = self.targets(n, vocab);
        let inputs = vec![
            Input::var(self.randn(&[n, h], 1.0)?),
            Input::var(self.randn(&[vocab, h], 0.2)?),
        ];
        let t_host = Tensor::new(targets.as_slice(), &Device::Cpu)?;
        let t_dev = Tensor::new(targets.as_slice(), &self.device)?;
        let fused = move |t: &[Tensor]| -> candle_core::Result<Tensor> {
            let tg = if t[0].device().is_cpu() { &t_host } else { &t_dev };
            ops::linear_cross_entropy(&t[0], &t[1], tg, Some(128))?
                .loss_sum
                .reshape(1)
        };
        let t_ref = Tensor::new(targets.as_slice(), &Device::Cpu)?;
        let composed = move |t: &[Tensor]| reference::linear_cross_entropy(&t[0], &t[1], &t_ref)?.reshape(1);
        self.compare_with_grads(
            &format!("linear_cross_entropy [{n}x{h}]x[{vocab}]"),
            inputs,
            &fused,
            &composed,
        )
    }

    fn adamw(&mut self) -> Result<()> {
        let tol = self.tolerance();
        let sizes = [1usize, 1000, 65537, 70001];
        let h = AdamWStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 3,
            grad_scale: 0.7,
        };
        let mut worst = [0f64; 4];
        let mut note = String::new();
        // Per parameter: master, m, v (f32, host), grad (rounded to the dtype), decay.
        let mut params = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let master = Tensor::randn(0f32, 1.0, n, &Device::Cpu)?;
            let master = if self.dtype == DType::F32 {
                master
            } else {
                master.to_dtype(self.dtype)?.to_dtype(DType::F32)?
            };
            let m = (self.randn(&[n], 0.01)?).to_dtype(DType::F32)?;
            let v = self.randn(&[n], 0.01)?.sqr()?;
            let g = self.randn(&[n], 0.05)?;
            params.push((master, m, v, g, if i % 2 == 0 { 0.1 } else { 0.0 }));
        }
        // Expected: the CPU update on host vectors.
        let mut want = Vec::new();
        for (master, m, v, g, wd) in &params {
            let (mut p, mut mm, mut vv) = (master.to_vec1::<f32>()?, m.to_vec1::<f32>()?, v.to_vec1::<f32>()?);
            let hh = AdamWStep { weight_decay: *wd, ..h };
            if self.is_cuda() {
                ops::adamw::adamw_cpu(&mut p, &mut mm, &mut vv, &g.to_vec1::<f32>()?, &hh);
            } else {
                let (rp, rm, rv) = reference::adamw(master, m, v, g, &hh)?;
                (p, mm, vv) = (rp.to_vec1()?, rm.to_vec1()?, rv.to_vec1()?);
            }
            want.push((p, mm, vv));
        }
        let got = self.adamw_on_device(&params, &h);
        match got {
            Ok(got) => {
                for (k, ((gp, gm, gv, gparam), (wp, wm, wv))) in got.iter().zip(&want).enumerate() {
                    let old = params[k].0.to_vec1::<f32>()?;
                    let d = |x: &[f32]| -> Vec<f32> { x.iter().zip(&old).map(|(a, b)| a - b).collect() };
                    worst[0] = worst[0].max(rel_err_slices(&d(gp), &d(wp)));
                    worst[1] = worst[1].max(rel_err_slices(gm, wm));
                    worst[2] = worst[2].max(rel_err_slices(gv, wv));
                    if let Some(param) = gparam {
                        let rounded: Vec<f32> = gp.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
                        worst[3] = worst[3].max(rel_err_slices(param, &rounded));
                    }
                }
            }
            Err(e) => {
                worst = [f64::INFINITY; 4];
                note = format!("error: {e:#}");
            }
        }
        let name = "adamw (4 params, decay mask)";
        let tol_update = if self.dtype == DType::F32 { tol } else { 1e-5 };
        self.record(&format!("{name} master update"), worst[0], tol_update, &note);
        self.record(&format!("{name} exp_avg"), worst[1], tol_update, &note);
        self.record(&format!("{name} exp_avg_sq"), worst[2], tol_update, &note);
        if self.dtype == DType::BF16 {
            self.record(&format!("{name} bf16 write-back"), worst[3], 0.0, &note);
        }
        Ok(())
    }

    /// Runs the device's AdamW: the fused multi-tensor kernel on CUDA, the CPU op on the CPU.
    #[allow(clippy::type_complexity)]
    fn adamw_on_device(
        &self,
        params: &[(Tensor, Tensor, Tensor, Tensor, f64)],
        h: &AdamWStep,
    ) -> Result<Vec<(Vec<f32>, Vec<f32>, Vec<f32>, Option<Vec<f32>>)>> {
        let mut out = Vec::new();
        if self.is_cuda() {
            #[cfg(feature = "cuda")]
            {
                let dev = |t: &Tensor, dt: DType| -> Result<Tensor> { Ok(t.to_device(&self.device)?.to_dtype(dt)?) };
                let mut held = Vec::new();
                for (master, m, v, g, _) in params {
                    let param = (self.dtype != DType::F32)
                        .then(|| dev(master, self.dtype))
                        .transpose()?;
                    held.push((
                        dev(master, DType::F32)?,
                        dev(m, DType::F32)?,
                        dev(v, DType::F32)?,
                        dev(g, self.dtype)?,
                        param,
                    ));
                }
                let slots: Vec<ops::AdamWSlot> = held
                    .iter()
                    .zip(params)
                    .map(|((p, m, v, g, param), (.., wd))| ops::AdamWSlot {
                        master: p,
                        m,
                        v,
                        grad: g,
                        param: param.as_ref(),
                        weight_decay: *wd,
                    })
                    .collect();
                ops::adamw::adamw_multi_cuda(&slots, h)?;
                for (p, m, v, _, param) in &held {
                    let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.to_vec1::<f32>()?) };
                    out.push((host(p)?, host(m)?, host(v)?, param.as_ref().map(host).transpose()?));
                }
            }
            return Ok(out);
        }
        for (master, m, v, g, wd) in params {
            let (p, m, v) = ops::adamw_update(
                master,
                m,
                v,
                g,
                &AdamWStep {
                    weight_decay: *wd,
                    ..*h
                },
            )?;
            out.push((p.to_vec1()?, m.to_vec1()?, v.to_vec1()?, None));
        }
        Ok(out)
    }

    fn grad_norm(&mut self) -> Result<()> {
        let sizes = [3usize, 65536, 65541, 200_000];
        let mut host = Vec::new();
        for &n in &sizes {
            host.push(self.randn(&[n], 1.0)?);
        }
        let mut want = 0f64;
        for t in &host {
            want += reference::sum_squares(t)?;
        }
        let want = want.sqrt();
        let got: Result<f64> = (|| {
            let dev: Vec<Tensor> = host
                .iter()
                .map(|t| t.to_device(&self.device)?.to_dtype(self.dtype))
                .collect::<candle_core::Result<_>>()?;
            Ok(ops::global_norm(&dev)?)
        })();
        let tol = 1e-5;
        self.record_result(
            "global grad norm (4 tensors)",
            got.map(|g| (g - want).abs() / want),
            tol,
        );
        Ok(())
    }

    /// One training step of a small model (two documents per row, ignored targets): the loss,
    /// the gradient norm, and the loss after one AdamW update, device vs CPU f32.
    fn train_step(&mut self) -> Result<()> {
        let cfg = small_model_config()?;
        let (rows, seq) = (2usize, 48usize);
        let ids: Vec<u32> = (0..rows * seq)
            .map(|_| self.rng.random_range(0..cfg.vocab_size as u32))
            .collect();
        let positions: Vec<u32> = (0..rows * seq).map(|i| ((i % seq) % 29) as u32).collect();
        let mut targets: Vec<i64> = ids.iter().skip(1).map(|&t| t as i64).collect();
        targets.push(IGNORE_INDEX);
        for t in targets.iter_mut().step_by(5) {
            *t = IGNORE_INDEX;
        }
        let run = |device: &Device, dtype: DType| -> Result<(f64, f64, f64)> {
            let model = Qwen2::random(cfg.clone(), 7, dtype, device, true)?;
            let batch = PackedBatch::new(ids.clone(), positions.clone(), rows, device)?;
            let tg = Tensor::new(targets.as_slice(), device)?;
            let out = model.loss(&batch, &tg)?;
            let supervised = out.supervised as f64;
            let loss = out.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()? / supervised;
            let grads_store = (out.loss_sum / supervised)?.backward()?;
            let grads: Vec<Tensor> = model
                .vars()
                .iter()
                .map(|(n, v)| {
                    grads_store
                        .get(v.as_tensor())
                        .cloned()
                        .with_context(|| format!("no gradient for {n}"))
                })
                .collect::<Result<_>>()?;
            let norm = ops::global_norm(&grads)?;
            let section = crate::config::OptimSection {
                lr: 1e-3,
                ..Default::default()
            };
            let mut opt = crate::train::optimizer::AdamW::new(&model, &section)?;
            opt.update(&grads, 1e-3, 1.0)?;
            let after = model.loss(&batch, &tg)?;
            let after = after.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()? / supervised;
            Ok((loss, norm, after))
        };
        let name = "train step (2 layers, 2x48 packed)";
        let tol = if self.dtype == DType::F32 { 1e-3 } else { 3e-2 };
        let want = run(&Device::Cpu, DType::F32)?;
        self.poison()?;
        match run(&self.device, self.dtype) {
            Ok(got) => {
                let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
                self.record(&format!("{name} loss"), rel(got.0, want.0), tol, "");
                self.record(&format!("{name} grad norm"), rel(got.1, want.1), tol, "");
                let note = format!("loss {:.4} -> {:.4}", got.0, got.2);
                let e = if got.2 < got.0 {
                    rel(got.2, want.2)
                } else {
                    f64::INFINITY
                };
                self.record(&format!("{name} loss after update"), e, tol, &note);
            }
            Err(e) => self.record(name, f64::INFINITY, tol, &format!("error: {e:#}")),
        }
        Ok(())
    }
}

/// A small Qwen2 (GQA, tied embeddings, biases) for the training-step check.
fn small_model_config() -> Result<Qwen2Config> {
    Qwen2Config::from_json(
        r#"{"vocab_size": 503, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
            "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
            "initializer_range": 0.02}"#,
    )
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
    }
}
