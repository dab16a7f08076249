//! Fused output projection + cross-entropy over chunks of tokens.
//!
//! `linear_cross_entropy(hidden [N, H], weight [V, H], targets [N])` returns the summed loss over
//! supervised tokens and their count, without ever materialising the full `[N, V]` logits: per
//! chunk of tokens it computes the chunk's logits, then in one pass the per-token loss and the
//! logits' gradient written over the logits (`cross_entropy_in_place`), and immediately the
//! chunk's input gradient and its contribution to the weight gradient. The backward only scales
//! the gradients saved by the forward.

use super::cpu_f32;
use super::matmul::matmul;
use candle_core::{bail, CpuStorage, CustomOp3, DType, InplaceOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Target value of tokens that carry no loss (as in PyTorch / transformers).
pub const IGNORE_INDEX: i64 = -100;

/// The result of `linear_cross_entropy`.
pub struct CrossEntropyOutput {
    /// Scalar f32 tensor on the input's device: the sum of per-token losses over supervised
    /// tokens (backpropagates). Nothing is copied to the host to compute it.
    pub loss_sum: Tensor,
    /// Number of supervised tokens (targets != `IGNORE_INDEX`).
    pub supervised: usize,
    /// On a GPU, the device-side count of targets outside the vocabulary, for the caller to
    /// check when it next synchronises (`check_targets`); the CPU reports them at once.
    pub bad_targets: Option<Tensor>,
}

impl CrossEntropyOutput {
    /// An error if any target lay outside the vocabulary (reads the device-side count).
    pub fn check_targets(&self) -> Result<()> {
        if let Some(bad) = &self.bad_targets {
            super::device_calls::host_read();
            let n = bad.to_scalar::<u32>()?;
            if n > 0 {
                bail!("cross-entropy: {n} target id(s) outside the vocabulary");
            }
        }
        Ok(())
    }
}

/// Tokens per chunk when the caller gives none: about as many logits as the hidden states hold
/// values (the Liger-Kernel rule), but at least 256 tokens so the CPU matmuls stay efficient.
pub fn default_chunk_tokens(tokens: usize, vocab: usize, hidden: usize) -> usize {
    let ratio = vocab.div_ceil(hidden.max(1)).max(1);
    tokens.div_ceil(ratio).max(256).min(tokens.max(1))
}

/// Summed cross-entropy of `hidden · weightᵀ` against `targets` (i64, `IGNORE_INDEX` skipped),
/// computed `chunk_tokens` tokens at a time (`None`: `default_chunk_tokens`).
pub fn linear_cross_entropy(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    chunk_tokens: Option<usize>,
) -> Result<CrossEntropyOutput> {
    linear_cross_entropy_counted(hidden, weight, targets, chunk_tokens, None)
}

/// The chunk size (in tokens) of a call, after checking that `hidden [N, H]`, `weight [V, H]`
/// and `targets` (i64 `[N]`) fit together.
fn check_shapes(hidden: &Tensor, weight: &Tensor, targets: &Tensor, chunk_tokens: Option<usize>) -> Result<usize> {
    let (n, h) = hidden.dims2()?;
    let (v, hw) = weight.dims2()?;
    if hw != h {
        bail!("linear_cross_entropy: hidden size {h} but weight {:?}", weight.dims());
    }
    if targets.dims() != [n] || targets.dtype() != DType::I64 {
        bail!(
            "linear_cross_entropy: targets must be i64 of shape [{n}], got {:?} {:?}",
            targets.dtype(),
            targets.dims()
        );
    }
    Ok(chunk_tokens.unwrap_or_else(|| default_chunk_tokens(n, v, h)).max(1))
}

/// `linear_cross_entropy` with the supervised-token count given by a caller that counted the
/// targets on the host (`None`: counted here, which waits for the device).
pub fn linear_cross_entropy_counted(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    chunk_tokens: Option<usize>,
    supervised: Option<usize>,
) -> Result<CrossEntropyOutput> {
    let chunk = check_shapes(hidden, weight, targets, chunk_tokens)?;
    let needs_grad = hidden.track_op() || weight.track_op();
    let hd = hidden.detach().contiguous()?;
    let wd = weight.detach().contiguous()?;
    let targets = targets.contiguous()?;
    let supervised = match supervised {
        Some(n) => n,
        None => {
            super::device_calls::host_read();
            targets
                .ne(IGNORE_INDEX)?
                .to_dtype(DType::U32)?
                .sum_all()?
                .to_scalar::<u32>()? as usize
        }
    };
    let mut dh_chunks = Vec::new();
    // The weight gradient is summed over the chunks in f32 by the training path's GEMM (a bf16
    // running sum loses about 1% over the 30-odd chunks of 4096 tokens), rounded once at the end.
    let dw = if needs_grad {
        Some(Tensor::zeros(wd.shape(), DType::F32, wd.device())?)
    } else {
        None
    };
    let mut collect = |dlogits: &Tensor, h_c: &Tensor| -> Result<()> {
        let dlogits = dlogits.to_dtype(hd.dtype())?;
        dh_chunks.push(matmul(&dlogits, &wd)?);
        match &dw {
            Some(dw) => super::grad_accumulate::add_weight_grad(dw, &dlogits, h_c, 1.0),
            None => Ok(()),
        }
    };
    let grads: Option<&mut ChunkGrad> = if needs_grad { Some(&mut collect) } else { None };
    let (value, bad_targets) = chunked_loss(&hd, &wd, &targets, chunk, 1.0, grads)?;
    let loss_sum = if needs_grad {
        let dh = Tensor::cat(&dh_chunks, 0)?;
        let dw = match dw {
            Some(dw) => dw.to_dtype(wd.dtype())?,
            None => wd.zeros_like()?,
        };
        value.apply_op3(
            hidden,
            weight,
            SavedLoss {
                grads: Mutex::new(Some((dh, dw))),
            },
        )?
    } else {
        value
    };
    Ok(CrossEntropyOutput {
        loss_sum,
        supervised,
        bad_targets,
    })
}

/// What `linear_cross_entropy_backward` returns (its weight gradient is in the caller's buffer).
pub struct LossWithGrad {
    /// Σ per-token loss (f32 scalar on the device).
    pub loss_sum: Tensor,
    /// See `CrossEntropyOutput::bad_targets`.
    pub bad_targets: Option<Tensor>,
    /// `scale · ∂loss_sum/∂hidden`, `[tokens, hidden]` in the hidden states' dtype.
    pub dhidden: Tensor,
}

/// The loss and the hidden states' gradient of the explicit training step (no autograd):
/// `linear_cross_entropy` whose weight gradient, scaled by `scale` (the step's 1 / supervised
/// tokens), is added chunk by chunk into the f32 buffer `dweight` by GEMM, and whose hidden
/// gradient is returned scaled by `scale`. The loss is unscaled.
pub fn linear_cross_entropy_backward(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    chunk_tokens: Option<usize>,
    scale: f64,
    dweight: &Tensor,
) -> Result<LossWithGrad> {
    let chunk = check_shapes(hidden, weight, targets, chunk_tokens)?;
    if dweight.dims() != weight.dims() {
        bail!(
            "linear_cross_entropy_backward: gradient buffer {:?} for weight {:?}",
            dweight.dims(),
            weight.dims()
        );
    }
    let hd = hidden.detach().contiguous()?;
    let wd = weight.detach().contiguous()?;
    let mut dh_chunks = Vec::new();
    // The cross-entropy writes the logits' gradient already scaled (in f32, rounded once).
    let mut add = |dlogits: &Tensor, h_c: &Tensor| -> Result<()> {
        let dlogits = dlogits.to_dtype(hd.dtype())?;
        dh_chunks.push(matmul(&dlogits, &wd)?);
        super::grad_accumulate::add_weight_grad(dweight, &dlogits, h_c, 1.0)
    };
    let targets = targets.contiguous()?;
    let (loss_sum, bad_targets) = chunked_loss(&hd, &wd, &targets, chunk, scale as f32, Some(&mut add))?;
    let dhidden = match dh_chunks.as_slice() {
        [only] => only.clone(),
        all => Tensor::cat(all, 0)?,
    };
    Ok(LossWithGrad {
        loss_sum,
        bad_targets,
        dhidden,
    })
}

/// What a chunk's gradient goes to: called with the chunk's logits gradient
/// `softmax - onehot` (`[len, V]`) and its hidden states (`[len, H]`).
type ChunkGrad<'a> = dyn FnMut(&Tensor, &Tensor) -> Result<()> + 'a;

/// The chunk loop shared by both entry points: per chunk of `chunk` tokens, the logits, the
/// in-place cross-entropy, and (with `grad`) the logits' gradient handed on. Returns the summed
/// loss (on the device) and the device-side count of out-of-vocabulary targets (CUDA).
fn chunked_loss(
    hd: &Tensor,
    wd: &Tensor,
    targets: &Tensor,
    chunk: usize,
    grad_scale: f32,
    mut grad: Option<&mut ChunkGrad>,
) -> Result<(Tensor, Option<Tensor>)> {
    let (n, _) = hd.dims2()?;
    let mut host_sum = 0f64;
    let mut device_sum: Option<Tensor> = None;
    let mut bad_targets: Option<Tensor> = None;
    let mut a = 0;
    while a < n {
        let len = chunk.min(n - a);
        let h_c = hd.narrow(0, a, len)?;
        // The CPU kernel works in f32; the CUDA kernel reads bf16 logits and computes in f32
        // itself (the same values: bf16 -> f32 is exact), writing the gradient back in bf16.
        let logits = matmul(&h_c, &wd.t()?)?;
        let logits = if logits.device().is_cuda() {
            logits
        } else {
            logits.to_dtype(DType::F32)?
        };
        let op = CrossEntropyInPlace {
            row_loss: Mutex::new(None),
            grad_scale,
        };
        logits.inplace_op2(&targets.narrow(0, a, len)?, &op)?;
        let rows = op
            .row_loss
            .into_inner()
            .map_err(|_| candle_core::Error::Msg("cross-entropy: poisoned lock".into()))?;
        match rows {
            Some(RowLosses::Host(rows)) => host_sum += rows.iter().map(|&x| x as f64).sum::<f64>(),
            Some(RowLosses::Device(rows)) => {
                // Losses and the out-of-vocabulary flag (a row loss of -1) stay on the device.
                let s = rows.sum_all()?;
                let b = rows.lt(0f32)?.to_dtype(DType::U32)?.sum_all()?;
                device_sum = Some(match device_sum {
                    None => s,
                    Some(acc) => (acc + s)?,
                });
                bad_targets = Some(match bad_targets {
                    None => b,
                    Some(acc) => (acc + b)?,
                });
            }
            None => bail!("cross_entropy_in_place: the op produced no row losses"),
        }
        if let Some(g) = grad.as_mut() {
            g(&logits, &h_c)?;
        }
        a += len;
    }
    let value = match device_sum {
        Some(t) => (t + host_sum)?,
        None => Tensor::new(host_sum as f32, hd.device())?,
    };
    Ok((value, bad_targets))
}

/// The per-row losses of one chunk: on the host (CPU) or still on the device (CUDA).
pub enum RowLosses {
    Host(Vec<f32>),
    Device(Tensor),
}

/// One pass over a chunk of logits `[rows, V]`: records each row's loss
/// (`logsumexp(x) - x[target]`, 0 for ignored rows) and overwrites the row with
/// `grad_scale · (softmax(x) - onehot(target))` (zeros for ignored rows).
pub struct CrossEntropyInPlace {
    pub row_loss: Mutex<Option<RowLosses>>,
    /// Factor of the written gradient (applied in f32 before rounding).
    pub grad_scale: f32,
}

/// Loss of one row and its gradient (times `grad_scale`) written over it; the CPU twin of the
/// CUDA kernel.
pub fn cross_entropy_row(x: &mut [f32], target: i64, grad_scale: f32) -> Result<f32> {
    if target == IGNORE_INDEX {
        x.fill(0.0);
        return Ok(0.0);
    }
    if target < 0 || target as usize >= x.len() {
        bail!(
            "cross-entropy: target id {target} is outside the vocabulary (size {})",
            x.len()
        );
    }
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let picked = x[target as usize];
    // One exp per element: keep exp(x - m), then normalise.
    let mut s = 0f32;
    for xi in x.iter_mut() {
        *xi = (*xi - m).exp();
        s += *xi;
    }
    let loss = m + s.ln() - picked;
    let inv = 1.0 / s;
    for xi in x.iter_mut() {
        *xi *= inv;
    }
    x[target as usize] -= 1.0;
    if grad_scale != 1.0 {
        for xi in x.iter_mut() {
            *xi *= grad_scale;
        }
    }
    Ok(loss)
}

impl InplaceOp2 for CrossEntropyInPlace {
    fn name(&self) -> &'static str {
        "cross_entropy_in_place"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (rows, v) = l1.shape().dims2()?;
        let targets: &[i64] = match (s2, l2.contiguous_offsets()) {
            (CpuStorage::I64(t), Some((a, b))) => &t[a..b],
            _ => bail!("cross_entropy_in_place: targets must be contiguous i64"),
        };
        let logits = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(x), Some((a, b))) => &mut x[a..b],
            _ => bail!("cross_entropy_in_place: logits must be contiguous f32"),
        };
        let losses: Vec<f32> = logits
            .par_chunks_mut(v)
            .zip(targets.par_iter())
            .map(|(row, &t)| cross_entropy_row(row, t, self.grad_scale))
            .collect::<Result<_>>()?;
        debug_assert_eq!(losses.len(), rows);
        *self
            .row_loss
            .lock()
            .map_err(|_| candle_core::Error::Msg("cross-entropy: poisoned lock".into()))? =
            Some(RowLosses::Host(losses));
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        use candle_core::backend::BackendStorage;
        let (rows, _v) = l1.shape().dims2()?;
        let losses = crate::dispatch_kernel_dtype!(
            "cross_entropy_in_place",
            s1.dtype(),
            cuda::cross_entropy_in_place(s1, l1, s2, l2, self.grad_scale)
        )?;
        let losses = candle_core::CudaStorage::wrap_cuda_slice(losses, s1.device.clone());
        let t = Tensor::from_storage(
            candle_core::Storage::Cuda(losses),
            rows.max(1),
            candle_core::op::BackpropOp::none(),
            false,
        )
        .narrow(0, 0, rows)?;
        *self
            .row_loss
            .lock()
            .map_err(|_| candle_core::Error::Msg("cross-entropy: poisoned lock".into()))? = Some(RowLosses::Device(t));
        Ok(())
    }
}

/// Attaches the loss computed by the chunked forward to the autograd graph: applied to the loss
/// value (which stays on its device), the hidden states and the weight, its forward returns the
/// value, its backward the saved gradients scaled by the incoming gradient.
struct SavedLoss {
    grads: Mutex<Option<(Tensor, Tensor)>>,
}

impl CustomOp3 for SavedLoss {
    fn name(&self) -> &'static str {
        "linear_cross_entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        _s3: &CpuStorage,
        _l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((
            CpuStorage::F32(cpu_f32("linear_cross_entropy", s1, l1)?.to_vec()),
            Shape::from(()),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        _s2: &candle_core::CudaStorage,
        _l2: &Layout,
        _s3: &candle_core::CudaStorage,
        _l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((s1.try_clone(l1)?, Shape::from(())))
    }

    fn bwd(
        &self,
        _value: &Tensor,
        hidden: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .grads
            .lock()
            .map_err(|_| candle_core::Error::Msg("linear_cross_entropy: poisoned lock".into()))?
            .take();
        let Some((dh, dw)) = saved else {
            bail!("linear_cross_entropy: backward called twice for one forward");
        };
        // The incoming gradient (the loss scale, 1/tokens) is applied in f32 and the product
        // rounded once: a bf16 scale would be up to 0.4 % off on every gradient.
        let g = grad.to_dtype(DType::F32)?;
        let scale = |t: Tensor, like: &Tensor| -> Result<Tensor> {
            t.to_dtype(DType::F32)?.broadcast_mul(&g)?.to_dtype(like.dtype())
        };
        Ok((None, Some(scale(dh, hidden)?), Some(scale(dw, weight)?)))
    }
}

/// The launch of `kernels/cross_entropy.cu`, written once for every `KernelRunner`.
pub mod launch {
    use super::IGNORE_INDEX;
    use crate::ops::kernel_launch::args::CrossEntropyInPlace;
    use crate::ops::kernel_launch::{int_arg, DevPtr, DevPtrMut, KernelFloat, KernelRunner, LaunchDims};
    use candle_core::Result;

    /// Overwrites `logits` `[rows, v]` with the gradient times `grad_scale` and returns the
    /// per-row losses (-1 where a target lies outside the vocabulary).
    pub fn cross_entropy_in_place<R: KernelRunner, T: KernelFloat>(
        r: &R,
        logits: DevPtrMut<T>,
        targets: DevPtr<i64>,
        rows: usize,
        v: usize,
        grad_scale: f32,
    ) -> Result<R::Buf<f32>> {
        let mut row_loss = r.alloc::<f32>(rows.max(1))?;
        let args = CrossEntropyInPlace {
            logits,
            targets,
            row_loss: r.output(&mut row_loss, 0),
            rows: int_arg("cross_entropy_in_place", "rows", rows)?,
            v: int_arg("cross_entropy_in_place", "vocabulary", v)?,
            ignore_index: IGNORE_INDEX,
            grad_scale,
        };
        r.launch(&args, LaunchDims::rows(rows, 0))?;
        Ok(row_loss)
    }
}

/// `kernels/cross_entropy.cu` on candle's CUDA storages.
#[cfg(feature = "cuda")]
mod cuda {
    use crate::ops::cuda::{input, CudaRunner, KernelDType};
    use crate::ops::kernel_launch::DevPtrMut;
    use candle_core::cuda_backend::cudarc::driver::CudaSlice;
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{bail, Layout, Result};

    /// Runs the kernel over the logits in place and returns the per-row losses, on the device.
    pub fn cross_entropy_in_place<T: KernelDType>(
        s1: &mut CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        grad_scale: f32,
    ) -> Result<CudaSlice<f32>> {
        let (rows, v) = l1.shape().dims2()?;
        if l2.shape().elem_count() != rows {
            bail!(
                "cross_entropy_in_place: {} targets for {rows} rows",
                l2.shape().elem_count()
            );
        }
        let logits = input::<T>("cross_entropy_in_place", s1, l1)?;
        let logits = DevPtrMut::<T>::new(logits.addr(), 0);
        let targets = input::<i64>("cross_entropy_in_place (targets)", s2, l2)?;
        let dev = s1.device.clone();
        let r = CudaRunner { dev: &dev };
        super::launch::cross_entropy_in_place(&r, logits, targets, rows, v, grad_scale)
    }
}

/// The composed reference of the loss and its cases in the kernel checks: the in-place kernel
/// alone, and the whole chunked op with gradients.
pub mod check {
    use super::super::check::{rel_err, rel_err_slices, Input, Suite};
    use super::{CrossEntropyInPlace, IGNORE_INDEX};
    use candle_core::{DType, Device, Result, Tensor, D};
    use rand::Rng;

    /// Summed cross-entropy of the full logits `hidden · weightᵀ` over non-ignored targets.
    pub fn linear_cross_entropy(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = hidden.matmul(&weight.t()?)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let keep = targets.ne(IGNORE_INDEX)?;
        let safe = keep.where_cond(targets, &targets.zeros_like()?)?;
        let picked = log_probs.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?;
        (picked * keep.to_dtype(DType::F32)?)?.sum_all()?.neg()
    }

    /// Targets for `rows` rows over `vocab`: both vocabulary ends and some ignored rows.
    fn targets(s: &mut Suite, rows: usize, vocab: usize) -> Vec<i64> {
        (0..rows)
            .map(|i| match i % 7 {
                0 => IGNORE_INDEX,
                1 => 0,
                2 => vocab as i64 - 1,
                _ => s.rng.random_range(0..vocab as i64),
            })
            .collect()
    }

    pub fn selftest(s: &mut Suite) -> anyhow::Result<()> {
        in_place(s)?;
        whole_op(s)?;
        if s.is_cuda() {
            realistic_size(s)?;
        }
        Ok(())
    }

    /// The Qwen2.5-Coder-0.5B shape (H 896, V 151936) over T 4096 tokens, on the GPU only (the
    /// CPU twin would take minutes): loss and both gradients of the fused op (default chunks)
    /// against the composed op in f32 on the same device.
    fn realistic_size(s: &mut Suite) -> anyhow::Result<()> {
        let (n, h, vocab) = (4096, 896, 151_936);
        let targets = targets(s, n, vocab);
        let hidden = s.randn(&[n, h], 1.0)?.to_device(&s.device)?;
        let weight = s.randn(&[vocab, h], 0.02)?.to_device(&s.device)?;
        let tg = Tensor::new(targets.as_slice(), &s.device)?;
        let name = format!("linear_cross_entropy [{n}x{h}]x[{vocab}]");
        let tol = s.tolerance();
        let run = |fused: bool, dtype: DType| -> anyhow::Result<(Tensor, Tensor, Tensor)> {
            let hv = candle_core::Var::from_tensor(&hidden.to_dtype(dtype)?)?;
            let wv = candle_core::Var::from_tensor(&weight.to_dtype(dtype)?)?;
            let loss = if fused {
                super::linear_cross_entropy(hv.as_tensor(), wv.as_tensor(), &tg, None)?.loss_sum
            } else {
                linear_cross_entropy(hv.as_tensor(), wv.as_tensor(), &tg)?
            };
            let g = loss.backward()?;
            let grad = |v: &candle_core::Var| -> anyhow::Result<Tensor> {
                Ok(g.get(v.as_tensor())
                    .ok_or_else(|| anyhow::anyhow!("no gradient"))?
                    .clone())
            };
            Ok((loss, grad(&hv)?, grad(&wv)?))
        };
        let results = (|| -> anyhow::Result<[f64; 3]> {
            let want = run(false, DType::F32)?;
            let got = run(true, s.dtype)?;
            Ok([
                rel_err(&got.0, &want.0)?,
                rel_err(&got.1, &want.1)?,
                rel_err(&got.2, &want.2)?,
            ])
        })();
        match results {
            Ok([l, dh, dw]) => {
                s.record(&format!("{name} loss"), l, tol, "");
                s.record(&format!("{name} d hidden"), dh, tol, "");
                s.record(&format!("{name} d weight"), dw, tol, "");
            }
            Err(e) => s.record(&name, f64::INFINITY, tol, &format!("error: {e:#}")),
        }
        Ok(())
    }

    /// The gradient scale of the in-place cases (a step's 1 / supervised tokens, not a power of
    /// two).
    const SCALE: f32 = 0.37;

    /// The in-place kernel alone: row losses and the scaled gradient written over the logits,
    /// and a target outside the vocabulary refused.
    fn in_place(s: &mut Suite) -> anyhow::Result<()> {
        let tol = s.tolerance();
        let (rows, vocab) = (67, 1543);
        let logits = (s.randn(&[rows, vocab], 3.0)?)
            .to_dtype(s.dtype)?
            .to_dtype(DType::F32)?;
        let targets = targets(s, rows, vocab);
        // Expected: the CPU row function on f32 copies.
        let mut want = logits.flatten_all()?.to_vec1::<f32>()?;
        let mut want_loss = Vec::with_capacity(rows);
        for (row, &t) in want.chunks_mut(vocab).zip(&targets) {
            want_loss.push(super::cross_entropy_row(row, t, SCALE)?);
        }
        s.poison()?;
        let dev_logits = if s.is_cuda() {
            logits.to_device(&s.device)?.to_dtype(s.dtype)?
        } else {
            logits.copy()?
        };
        let dev_targets = Tensor::new(targets.as_slice(), &s.device)?;
        let op = CrossEntropyInPlace {
            row_loss: std::sync::Mutex::new(None),
            grad_scale: SCALE,
        };
        let name = format!("cross_entropy_in_place [{rows}x{vocab}], gradient scale {SCALE}");
        match dev_logits.inplace_op2(&dev_targets, &op) {
            Ok(()) => {
                let got_loss = host_losses(op)?;
                s.record(
                    &format!("{name} row losses"),
                    rel_err_slices(&got_loss, &want_loss),
                    tol,
                    "",
                );
                let got = dev_logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                s.record(&format!("{name} gradient"), rel_err_slices(&got, &want), tol, "");
            }
            Err(e) => s.record(&name, f64::INFINITY, tol, &format!("error: {e}")),
        }
        let bad = Tensor::new(&[vocab as i64], &s.device)?;
        let one = dev_logits.narrow(0, 0, 1)?.copy()?;
        let op = CrossEntropyInPlace {
            row_loss: std::sync::Mutex::new(None),
            grad_scale: 1.0,
        };
        // The CPU refuses at once; the GPU flags the row with a loss of -1 for the caller.
        let refused = match one.inplace_op2(&bad, &op) {
            Err(_) => true,
            Ok(()) => host_losses(op)?.iter().any(|&l| l < 0.0),
        };
        s.record(
            "cross_entropy_in_place reports target == vocab",
            if refused { 0.0 } else { f64::INFINITY },
            0.0,
            if refused { "" } else { "accepted" },
        );
        Ok(())
    }

    /// The row losses an in-place run recorded, on the host.
    fn host_losses(op: CrossEntropyInPlace) -> anyhow::Result<Vec<f32>> {
        match op.row_loss.into_inner().map_err(|_| anyhow::anyhow!("poisoned lock"))? {
            Some(super::RowLosses::Host(v)) => Ok(v),
            Some(super::RowLosses::Device(t)) => Ok(t.to_vec1::<f32>()?),
            None => anyhow::bail!("no row losses recorded"),
        }
    }

    /// The whole chunked op (matmuls + the kernel), with gradients, in chunks of 128 tokens.
    fn whole_op(s: &mut Suite) -> anyhow::Result<()> {
        let (n, h, vocab) = (300, 72, 1031);
        let targets = targets(s, n, vocab);
        let inputs = vec![
            Input::var(s.randn(&[n, h], 1.0)?),
            Input::var(s.randn(&[vocab, h], 0.2)?),
        ];
        let t_host = Tensor::new(targets.as_slice(), &Device::Cpu)?;
        let t_dev = Tensor::new(targets.as_slice(), &s.device)?;
        let fused = move |t: &[Tensor]| -> Result<Tensor> {
            let tg = if t[0].device().is_cpu() { &t_host } else { &t_dev };
            super::linear_cross_entropy(&t[0], &t[1], tg, Some(128))?
                .loss_sum
                .reshape(1)
        };
        let t_ref = Tensor::new(targets.as_slice(), &Device::Cpu)?;
        let composed = move |t: &[Tensor]| linear_cross_entropy(&t[0], &t[1], &t_ref)?.reshape(1);
        s.compare_with_grads(
            &format!("linear_cross_entropy [{n}x{h}]x[{vocab}]"),
            inputs,
            &fused,
            &composed,
        )
    }
}
