//! The fused AdamW update of one parameter: decoupled weight decay, first and second moments,
//! bias correction, applied to fp32 master weights with the gradient scaled by the clipping
//! factor, all in one pass over the elements (PyTorch's `torch.optim.AdamW` formula).
//!
//! `adamw_update` runs the CPU implementation on CPU tensors and the composed version
//! (`composed`, also the tests' reference) elsewhere until the device has its kernel;
//! `adamw_multi_cuda` updates every parameter in place with one launch per dtype.

use candle_core::{bail, DType, Device, Result, Tensor};
use rayon::prelude::*;

/// Hyper-parameters of one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay of this parameter (0 for parameters without decay).
    pub weight_decay: f64,
    /// 1-based count of updates, for bias correction.
    pub step: u64,
    /// Factor applied to the gradient first (global-norm clipping).
    pub grad_scale: f64,
}

impl AdamWStep {
    /// `(1 - lr·wd, lr / (1 - β1^t), sqrt(1 - β2^t))` in f64, as PyTorch computes them.
    pub fn factors(&self) -> (f64, f64, f64) {
        let bc1 = 1.0 - self.beta1.powf(self.step as f64);
        let bc2 = 1.0 - self.beta2.powf(self.step as f64);
        (1.0 - self.lr * self.weight_decay, self.lr / bc1, bc2.sqrt())
    }
}

const CHUNK: usize = 1 << 14;

/// In-place update of `master`, `m`, `v` (all f32, same length as `grad`).
pub fn adamw_cpu(master: &mut [f32], m: &mut [f32], v: &mut [f32], grad: &[f32], h: &AdamWStep) {
    let (decay, step_size, bc2_sqrt) = h.factors();
    let (decay, step_size, bc2_sqrt) = (decay as f32, step_size as f32, bc2_sqrt as f32);
    let (b1c, b2, b2c, eps, scale) = (
        (1.0 - h.beta1) as f32,
        h.beta2 as f32,
        (1.0 - h.beta2) as f32,
        h.eps as f32,
        h.grad_scale as f32,
    );
    master
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            for i in 0..p.len() {
                let g = g[i] * scale;
                m[i] += b1c * (g - m[i]);
                v[i] = v[i] * b2 + b2c * g * g;
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] = p[i] * decay - step_size * (m[i] / denom);
            }
        });
}

/// The updated `(master, m, v)` of one parameter given its gradient (any float dtype; the
/// update runs in f32).
pub fn adamw_update(
    master: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    h: &AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    for (name, t) in [("master", master), ("exp_avg", m), ("exp_avg_sq", v)] {
        if t.dtype() != DType::F32 {
            bail!("adamw: {name} must be f32, got {:?}", t.dtype());
        }
        if t.dims() != grad.dims() {
            bail!("adamw: {name} has shape {:?}, the gradient {:?}", t.dims(), grad.dims());
        }
    }
    let grad = grad.to_dtype(DType::F32)?;
    match master.device() {
        Device::Cpu => {
            let shape = master.shape().clone();
            let mut p = master.flatten_all()?.to_vec1::<f32>()?;
            let mut mm = m.flatten_all()?.to_vec1::<f32>()?;
            let mut vv = v.flatten_all()?.to_vec1::<f32>()?;
            let g = grad.flatten_all()?.to_vec1::<f32>()?;
            adamw_cpu(&mut p, &mut mm, &mut vv, &g, h);
            let dev = Device::Cpu;
            Ok((
                Tensor::from_vec(p, &shape, &dev)?,
                Tensor::from_vec(mm, &shape, &dev)?,
                Tensor::from_vec(vv, &shape, &dev)?,
            ))
        }
        _ => composed(master, m, v, &grad, h),
    }
}

/// AdamW (PyTorch's formula) spelled out with tensor ops, on any device: returns
/// `(master, m, v)`.
pub fn composed(
    master: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    h: &AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (decay, step_size, bc2_sqrt) = h.factors();
    let g = (grad.to_dtype(DType::F32)? * h.grad_scale)?;
    let m = (m + ((&g - m)? * (1.0 - h.beta1))?)?;
    let v = ((v * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
    let denom = ((v.sqrt()? / bc2_sqrt)? + h.eps)?;
    let p = ((master * decay)? - ((&m / denom)? * step_size)?)?;
    Ok((p, m, v))
}

/// One parameter of a multi-tensor update, all updated in place.
pub struct AdamWSlot<'a> {
    /// fp32 master weights (the parameter itself when it is f32).
    pub master: &'a Tensor,
    pub m: &'a Tensor,
    pub v: &'a Tensor,
    /// The gradient, in the parameter's dtype, or f32 for a bf16 parameter.
    pub grad: &'a Tensor,
    /// The bf16 parameter the rounded master is written back to (`None`: f32 parameter).
    pub param: Option<&'a Tensor>,
    /// This parameter's weight decay (0 where the mask turns it off).
    pub weight_decay: f64,
}

/// Elements per block of the multi-tensor kernels (`ADAMW_CHUNK` in `kernels/adamw.cu`).
pub use super::kernel_constants::ADAMW_CHUNK as MULTI_TENSOR_CHUNK;

/// One parameter's entry of the multi-tensor AdamW table (`kernels/adamw.cu`): device
/// addresses of its master, moments, gradient and (0 for none) the parameter written back.
#[derive(Clone, Copy, Debug)]
pub struct AdamWEntry {
    pub master: u64,
    pub m: u64,
    pub v: u64,
    pub grad: u64,
    pub param: u64,
    pub len: usize,
    /// `1 - lr * weight_decay` of this parameter.
    pub decay: f32,
}

/// The launch of `kernels/adamw.cu`, written once for every `KernelRunner`.
pub mod launch {
    use super::{AdamWEntry, AdamWStep, MULTI_TENSOR_CHUNK};
    use crate::ops::kernel_launch::args::{AdamwMulti, AdamwMultiMixed};
    use crate::ops::kernel_launch::{chunk_table, KernelFloat, KernelRunner, LaunchDims, BLOCK};
    use candle_core::Result;

    /// Updates every entry in place in one launch; `T` is the gradients' (and written-back
    /// parameters') dtype. The uploaded tables may be freed once the launch is queued (the
    /// device frees in stream order).
    pub fn adamw_multi<R: KernelRunner, T: KernelFloat>(r: &R, entries: &[AdamWEntry], h: &AdamWStep) -> Result<()> {
        let Some(t) = Tables::<R>::upload(r, entries, h)? else {
            return Ok(());
        };
        let args = AdamwMulti::<T> {
            table: r.input(&t.table, 0),
            chunks: r.input(&t.chunks, 0),
            step_size: t.f[0],
            bc2_sqrt: t.f[1],
            b1c: t.f[2],
            b2: t.f[3],
            b2c: t.f[4],
            eps: t.f[5],
            scale: t.f[6],
            dtype: std::marker::PhantomData,
        };
        r.launch(&args, t.dims)
    }

    /// `adamw_multi` for f32 gradients (the explicit step's buffers) of bf16 parameters with
    /// f32 masters (`adamw_multi_mixed`).
    pub fn adamw_multi_mixed<R: KernelRunner>(r: &R, entries: &[AdamWEntry], h: &AdamWStep) -> Result<()> {
        let Some(t) = Tables::<R>::upload(r, entries, h)? else {
            return Ok(());
        };
        let args = AdamwMultiMixed {
            table: r.input(&t.table, 0),
            chunks: r.input(&t.chunks, 0),
            step_size: t.f[0],
            bc2_sqrt: t.f[1],
            b1c: t.f[2],
            b2: t.f[3],
            b2c: t.f[4],
            eps: t.f[5],
            scale: t.f[6],
        };
        r.launch(&args, t.dims)
    }

    /// The uploaded entry and chunk tables of one launch, its grid, and its scalar arguments
    /// (step size, bias-correction root, 1 - β1, β2, 1 - β2, ε, gradient scale).
    struct Tables<R: KernelRunner> {
        table: R::Buf<u64>,
        chunks: R::Buf<u64>,
        dims: LaunchDims,
        f: [f32; 7],
    }

    impl<R: KernelRunner> Tables<R> {
        fn upload(r: &R, entries: &[AdamWEntry], h: &AdamWStep) -> Result<Option<Self>> {
            let lens: Vec<usize> = entries.iter().map(|e| e.len).collect();
            let chunks = chunk_table(&lens, MULTI_TENSOR_CHUNK)?;
            if chunks.is_empty() {
                return Ok(None);
            }
            let table: Vec<u64> = entries
                .iter()
                .flat_map(|e| {
                    [
                        e.master,
                        e.m,
                        e.v,
                        e.grad,
                        e.param,
                        e.len as u64,
                        e.decay.to_bits() as u64,
                        0,
                    ]
                })
                .collect();
            let (_, step_size, bc2_sqrt) = h.factors();
            let dims = LaunchDims {
                grid: chunks.len() as u32,
                block: BLOCK,
                shared_bytes: 0,
            };
            Ok(Some(Self {
                table: r.upload(&table)?,
                chunks: r.upload(&chunks)?,
                dims,
                f: [
                    step_size as f32,
                    bc2_sqrt as f32,
                    (1.0 - h.beta1) as f32,
                    h.beta2 as f32,
                    (1.0 - h.beta2) as f32,
                    h.eps as f32,
                    h.grad_scale as f32,
                ],
            }))
        }
    }
}

/// Updates every slot in place on the GPU, one `kernels/adamw.cu` launch per gradient dtype
/// (f32 parameters, bf16 parameters with fp32 masters). `h.weight_decay` is ignored: each slot
/// carries its own.
#[cfg(feature = "cuda")]
pub fn adamw_multi_cuda(slots: &[AdamWSlot], h: &AdamWStep) -> Result<()> {
    use super::cuda::{device_address, CudaRunner};
    let Some(first) = slots.first() else {
        return Ok(());
    };
    let Some(dev) = super::cuda::cuda_device(first.master.device()).cloned() else {
        bail!("adamw_multi_cuda: expected CUDA tensors");
    };
    let r = CudaRunner { dev: &dev };
    // (gradient dtype, written-back parameter dtype; None: the master is the parameter).
    let variants = [
        (DType::F32, None),
        (DType::BF16, Some(DType::BF16)),
        (DType::F32, Some(DType::BF16)),
    ];
    let variant_of = |s: &AdamWSlot| (s.grad.dtype(), s.param.map(Tensor::dtype));
    if let Some(s) = slots.iter().find(|s| !variants.contains(&variant_of(s))) {
        let (g, p) = variant_of(s);
        bail!("adamw: no fused update for {g:?} gradients of {p:?} parameters");
    }
    for (gdtype, pdtype) in variants {
        let group: Vec<&AdamWSlot> = slots.iter().filter(|s| variant_of(s) == (gdtype, pdtype)).collect();
        if group.is_empty() {
            continue;
        }
        // Contiguous gradients, kept alive until the kernel has been queued.
        let grads: Vec<Tensor> = group.iter().map(|s| s.grad.contiguous()).collect::<Result<_>>()?;
        let mut entries = Vec::with_capacity(group.len());
        for (s, g) in group.iter().zip(&grads) {
            let n = s.master.elem_count();
            for (name, t) in [("master", s.master), ("exp_avg", s.m), ("exp_avg_sq", s.v)] {
                if t.dtype() != DType::F32 || t.elem_count() != n || !t.is_contiguous() {
                    bail!("adamw: {name} must be a contiguous f32 tensor of {n} elements");
                }
            }
            if g.elem_count() != n {
                bail!("adamw: gradient of {} elements for a parameter of {n}", g.elem_count());
            }
            let param = match s.param {
                Some(p) if p.elem_count() == n && p.is_contiguous() => device_address("adamw", p)?,
                Some(p) => bail!(
                    "adamw: parameter {:?} does not fit its gradient of {n} elements",
                    p.dims()
                ),
                None => 0,
            };
            entries.push(AdamWEntry {
                master: device_address("adamw", s.master)?,
                m: device_address("adamw", s.m)?,
                v: device_address("adamw", s.v)?,
                grad: device_address("adamw", g)?,
                param,
                len: n,
                decay: (1.0 - h.lr * s.weight_decay) as f32,
            });
        }
        match (gdtype, pdtype) {
            (DType::F32, None) => launch::adamw_multi::<_, f32>(&r, &entries, h)?,
            (DType::BF16, _) => launch::adamw_multi::<_, half::bf16>(&r, &entries, h)?,
            _ => launch::adamw_multi_mixed(&r, &entries, h)?,
        }
    }
    Ok(())
}

/// AdamW in the kernel checks: four parameters of awkward sizes (one element, a chunk and a
/// bit, several chunks), every other one with weight decay, and the bf16 write-back.
pub mod check {
    use super::super::check::{rel_err_slices, Suite};
    use super::AdamWStep;
    use anyhow::Result;
    use candle_core::{DType, Device, Tensor};

    /// Master, m, v (f32, host), the gradient (rounded to the suite dtype) and the decay of one
    /// parameter.
    type Param = (Tensor, Tensor, Tensor, Tensor, f64);
    /// Master, m, v after the update, and the bf16 parameter written back (host f32 values).
    type Updated = (Vec<f32>, Vec<f32>, Vec<f32>, Option<Vec<f32>>);

    pub fn selftest(s: &mut Suite) -> Result<()> {
        let tol = s.tolerance();
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
        let mut params: Vec<Param> = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let master = Tensor::randn(0f32, 1.0, n, &Device::Cpu)?;
            let master = if s.dtype == DType::F32 {
                master
            } else {
                master.to_dtype(s.dtype)?.to_dtype(DType::F32)?
            };
            let m = (s.randn(&[n], 0.01)?).to_dtype(DType::F32)?;
            let v = s.randn(&[n], 0.01)?.sqr()?;
            let g = s.randn(&[n], 0.05)?;
            params.push((master, m, v, g, if i % 2 == 0 { 0.1 } else { 0.0 }));
        }
        // Expected: the CPU update on host vectors (the composed one checks the CPU op).
        let mut want = Vec::new();
        for (master, m, v, g, wd) in &params {
            let (mut p, mut mm, mut vv) = (master.to_vec1::<f32>()?, m.to_vec1::<f32>()?, v.to_vec1::<f32>()?);
            let hh = AdamWStep { weight_decay: *wd, ..h };
            if s.is_cuda() {
                super::adamw_cpu(&mut p, &mut mm, &mut vv, &g.to_vec1::<f32>()?, &hh);
            } else {
                let (rp, rm, rv) = super::composed(master, m, v, g, &hh)?;
                (p, mm, vv) = (rp.to_vec1()?, rm.to_vec1()?, rv.to_vec1()?);
            }
            want.push((p, mm, vv));
        }
        match on_device(s, &params, &h) {
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
        let tol_update = if s.dtype == DType::F32 { tol } else { 1e-5 };
        s.record(&format!("{name} master update"), worst[0], tol_update, &note);
        s.record(&format!("{name} exp_avg"), worst[1], tol_update, &note);
        s.record(&format!("{name} exp_avg_sq"), worst[2], tol_update, &note);
        if s.dtype == DType::BF16 {
            s.record(&format!("{name} bf16 write-back"), worst[3], 0.0, &note);
        }
        Ok(())
    }

    /// Runs the device's AdamW: the fused multi-tensor kernel on CUDA, the CPU op on the CPU.
    fn on_device(s: &Suite, params: &[Param], h: &AdamWStep) -> Result<Vec<Updated>> {
        let mut out = Vec::new();
        if s.is_cuda() {
            #[cfg(feature = "cuda")]
            {
                let dev = |t: &Tensor, dt: DType| -> Result<Tensor> { Ok(t.to_device(&s.device)?.to_dtype(dt)?) };
                let mut held = Vec::new();
                for (master, m, v, g, _) in params {
                    let param = (s.dtype != DType::F32).then(|| dev(master, s.dtype)).transpose()?;
                    held.push((
                        dev(master, DType::F32)?,
                        dev(m, DType::F32)?,
                        dev(v, DType::F32)?,
                        dev(g, s.dtype)?,
                        param,
                    ));
                }
                let slots: Vec<super::AdamWSlot> = held
                    .iter()
                    .zip(params)
                    .map(|((p, m, v, g, param), (.., wd))| super::AdamWSlot {
                        master: p,
                        m,
                        v,
                        grad: g,
                        param: param.as_ref(),
                        weight_decay: *wd,
                    })
                    .collect();
                super::adamw_multi_cuda(&slots, h)?;
                for (p, m, v, _, param) in &held {
                    let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.to_vec1::<f32>()?) };
                    out.push((host(p)?, host(m)?, host(v)?, param.as_ref().map(host).transpose()?));
                }
            }
            return Ok(out);
        }
        for (master, m, v, g, wd) in params {
            let hh = AdamWStep {
                weight_decay: *wd,
                ..*h
            };
            let (p, m, v) = super::adamw_update(master, m, v, g, &hh)?;
            out.push((p.to_vec1()?, m.to_vec1()?, v.to_vec1()?, None));
        }
        Ok(out)
    }
}
