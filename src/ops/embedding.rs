//! Token embedding lookup `y[i] = w[ids[i]]` with a deterministic gradient: `dw[v]` is the sum
//! of `dy[i]` over the tokens with id `v`, accumulated in f32 in a fixed order — the batch's
//! tokens sorted by id (stably, so by position within an id) on the host at the batch's first
//! backward (`TokenIndex`) — and rounded once to the weight's dtype. candle's `index_select` backward is a
//! scatter-add in the weight's dtype (bf16 on a GPU), one token at a time; this replaces it on
//! the training path. CUDA: `kernels/embedding.cu`, this file's CPU code is its twin.

use super::cpu_f32;
use candle_core::{bail, CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex, OnceLock};

/// A batch's token ids on the host and on the device (uploaded once, shared with the batch's
/// `input_ids`), and — built on the first backward only — the ids sorted for the gradient.
#[derive(Clone, Debug)]
pub struct TokenIndex {
    pub ids: Arc<Vec<u32>>,
    /// `ids` on the batch's device.
    device_ids: Tensor,
    /// The sorted order on the host and its device copies (`grad_index`).
    grad: Arc<OnceLock<SortedIds>>,
    device_grad: Arc<Mutex<Option<DeviceGradIndex>>>,
}

/// The tokens sorted by id (stably, so by position within an id).
#[derive(Debug)]
struct SortedIds {
    order: Vec<u32>,
    /// The distinct ids, increasing.
    distinct: Vec<u32>,
    /// `order[seg[s] .. seg[s + 1]]` are the tokens of `distinct[s]`.
    seg: Vec<u32>,
}

/// What `embedding_bwd` reads, as u32 tensors on the batch's device for one vocabulary size:
/// `order`, `seg`, and `slot[v]`, the index of id `v` in the distinct ids (`u32::MAX` if absent).
#[derive(Clone, Debug)]
pub struct DeviceGradIndex {
    pub vocab: usize,
    pub order: Tensor,
    pub seg: Tensor,
    pub slot: Tensor,
}

impl TokenIndex {
    /// The ids, uploaded to `device`.
    pub fn new(ids: &[u32], device: &Device) -> Result<Self> {
        Ok(Self {
            ids: Arc::new(ids.to_vec()),
            device_ids: Tensor::new(ids, device)?,
            grad: Arc::new(OnceLock::new()),
            device_grad: Arc::new(Mutex::new(None)),
        })
    }

    /// The ids as a `[tokens]` u32 tensor on the batch's device.
    pub fn device_ids(&self) -> &Tensor {
        &self.device_ids
    }

    fn sorted(&self) -> &SortedIds {
        self.grad.get_or_init(|| {
            let ids = &self.ids;
            let mut order: Vec<u32> = (0..ids.len() as u32).collect();
            order.sort_by_key(|&i| ids[i as usize]);
            let (mut distinct, mut seg) = (Vec::new(), Vec::new());
            for (j, &i) in order.iter().enumerate() {
                let id = ids[i as usize];
                if distinct.last() != Some(&id) {
                    distinct.push(id);
                    seg.push(j as u32);
                }
            }
            seg.push(order.len() as u32);
            SortedIds { order, distinct, seg }
        })
    }

    /// The gradient's index on the batch's device for a vocabulary of `vocab` rows, built on
    /// first use and reused by the batch's later backward passes.
    pub fn grad_index(&self, vocab: usize) -> Result<DeviceGradIndex> {
        let mut cached = self
            .device_grad
            .lock()
            .map_err(|_| candle_core::Error::Msg("token index: poisoned lock".into()))?;
        if let Some(d) = cached.as_ref().filter(|d| d.vocab == vocab) {
            return Ok(d.clone());
        }
        let sorted = self.sorted();
        let mut slot = vec![u32::MAX; vocab];
        for (s, &v) in sorted.distinct.iter().enumerate() {
            if let Some(x) = slot.get_mut(v as usize) {
                *x = s as u32;
            }
        }
        let device = self.device_ids.device();
        let up = |v: &[u32]| Tensor::new(v, device);
        let d = DeviceGradIndex {
            vocab,
            order: up(&sorted.order)?,
            seg: up(&sorted.seg)?,
            slot: up(&slot)?,
        };
        *cached = Some(d.clone());
        Ok(d)
    }

    /// `dw` (`[vocab, h]`, f32) of the output gradient `dy` (`[tokens, h]`): each present id's
    /// tokens summed in the sorted order, absent rows zero. The CPU twin of `embedding_bwd`.
    pub fn scatter_sum(&self, dy: &[f32], vocab: usize, h: usize) -> Vec<f32> {
        let mut dw = vec![0f32; vocab * h];
        for (v, row) in self.row_sums(dy, h) {
            dw[v * h..(v + 1) * h].copy_from_slice(&row);
        }
        dw
    }

    /// Each present id with the sum of its tokens' rows of `dy` (in the sorted order).
    fn row_sums(&self, dy: &[f32], h: usize) -> Vec<(usize, Vec<f32>)> {
        let SortedIds { order, distinct, seg } = self.sorted();
        (0..distinct.len())
            .into_par_iter()
            .map(|s| {
                let mut acc = vec![0f32; h];
                for &i in &order[seg[s] as usize..seg[s + 1] as usize] {
                    for (a, &g) in acc.iter_mut().zip(&dy[i as usize * h..(i as usize + 1) * h]) {
                        *a += g;
                    }
                }
                (distinct[s] as usize, acc)
            })
            .collect()
    }
}

/// Adds the lookup's weight gradient from `dy [tokens, h]` into the f32 buffer `dw [vocab, h]`
/// in place (the explicit training step; with tied embeddings the buffer also holds the output
/// projection's gradient). CPU: each present id's tokens summed in the sorted order
/// (`scatter_sum`'s order) and added to its row; CUDA: `embedding_bwd_add`, the same sums in f32
/// added in place (no `[vocab, h]` temporary).
pub fn add_embedding_grad(dw: &Tensor, dy: &Tensor, index: &TokenIndex) -> Result<()> {
    let (vocab, h) = dw.dims2()?;
    if dy.dims() != [index.ids.len(), h] {
        bail!(
            "embedding gradient: dy {:?} for {} tokens and a [{vocab}, {h}] table",
            dy.dims(),
            index.ids.len()
        );
    }
    if dw.dtype() != candle_core::DType::F32 || !dw.is_contiguous() {
        bail!(
            "embedding gradient: the buffer must be contiguous f32, got {:?}",
            dw.dtype()
        );
    }
    let dy = if dw.device().is_cpu() {
        dy.to_dtype(candle_core::DType::F32)?.contiguous()?
    } else {
        dy.contiguous()?
    };
    dw.inplace_op2(
        &dy,
        &AddEmbeddingGrad {
            index: index.clone(),
            vocab,
            h,
        },
    )
}

/// `add_embedding_grad`: rows of the present ids only.
struct AddEmbeddingGrad {
    index: TokenIndex,
    vocab: usize,
    h: usize,
}

impl candle_core::InplaceOp2 for AddEmbeddingGrad {
    fn name(&self) -> &'static str {
        "add_embedding_grad"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let dy = cpu_f32("add_embedding_grad", s2, l2)?;
        let dw = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((a, b))) => &mut d[a..b],
            _ => bail!("add_embedding_grad: the buffer must be contiguous f32"),
        };
        let h = self.h;
        if dw.len() != self.vocab * h {
            bail!("add_embedding_grad: a buffer of {} for [{}, {h}]", dw.len(), self.vocab);
        }
        for (v, row) in self.index.row_sums(dy, h) {
            for (d, g) in dw[v * h..(v + 1) * h].iter_mut().zip(row) {
                *d += g;
            }
        }
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
        let index = self.index.grad_index(self.vocab)?;
        crate::dispatch_kernel_dtype!(
            "add_embedding_grad",
            s2.dtype(),
            cuda::bwd_add(s1, l1, s2, l2, &index, self.vocab, self.h)
        )
    }
}

/// `weight [vocab, h]` rows of the index's ids: `[tokens, h]`, differentiable in `weight`.
pub fn embedding(weight: &Tensor, index: &TokenIndex) -> Result<Tensor> {
    let (vocab, _) = weight.dims2()?;
    if let Some((i, &id)) = index.ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        bail!("embedding: token {i} has id {id}, outside the vocabulary of {vocab}");
    }
    if !weight.device().is_cpu() && !weight.device().same_device(index.device_ids().device()) {
        bail!(
            "embedding: the weight is on {:?}, the batch's ids on {:?}",
            weight.device().location(),
            index.device_ids().device().location()
        );
    }
    weight.contiguous()?.apply_op1(Embedding { index: index.clone() })
}

struct Embedding {
    index: TokenIndex,
}

impl CustomOp1 for Embedding {
    fn name(&self) -> &'static str {
        "embedding"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = cpu_f32("embedding", s, l)?;
        let (_, h) = l.shape().dims2()?;
        let ids = &self.index.ids;
        let mut y = vec![0f32; ids.len() * h];
        y.par_chunks_mut(h.max(1)).zip(ids.par_iter()).for_each(|(row, &id)| {
            row.copy_from_slice(&w[id as usize * h..(id as usize + 1) * h]);
        });
        Ok((CpuStorage::F32(y), Shape::from((ids.len(), h))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (_, h) = l.shape().dims2()?;
        let ids = self.index.device_ids();
        let y = crate::dispatch_kernel_dtype!("embedding", s.dtype(), cuda::fwd(s, l, ids, h))?;
        Ok((y, Shape::from((self.index.ids.len(), h))))
    }

    fn bwd(&self, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (vocab, h) = w.dims2()?;
        let grad = grad.to_dtype(w.dtype())?.contiguous()?;
        let dw = grad.apply_op1_no_bwd(&EmbeddingBwd {
            index: self.index.clone(),
            vocab,
            h,
        })?;
        Ok(Some(dw))
    }
}

/// The gradient as an op on the output gradient: `[vocab, h]`.
struct EmbeddingBwd {
    index: TokenIndex,
    vocab: usize,
    h: usize,
}

impl CustomOp1 for EmbeddingBwd {
    fn name(&self) -> &'static str {
        "embedding_bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dy = cpu_f32("embedding_bwd", s, l)?;
        let dw = self.index.scatter_sum(dy, self.vocab, self.h);
        Ok((CpuStorage::F32(dw), Shape::from((self.vocab, self.h))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let index = self.index.grad_index(self.vocab)?;
        let dw =
            crate::dispatch_kernel_dtype!("embedding_bwd", s.dtype(), cuda::bwd(s, l, &index, self.vocab, self.h))?;
        Ok((dw, Shape::from((self.vocab, self.h))))
    }
}

/// The launches of `kernels/embedding.cu`, for any `KernelRunner`.
pub mod launch {
    use crate::ops::kernel_launch::args::{EmbeddingBwd, EmbeddingBwdAdd, EmbeddingFwd};
    use crate::ops::kernel_launch::{int_arg, DevPtr, DevPtrMut, KernelFloat, KernelRunner, LaunchDims};
    use candle_core::Result;

    /// Blocks of either launch at most (both grid-stride over their rows): about one full wave
    /// of 256-thread blocks on an H100/H200.
    pub const MAX_BLOCKS: usize = 1024;

    /// `[n, h]`: row `ids[i]` of `w` for each of the `n` tokens.
    pub fn fwd<R: KernelRunner, T: KernelFloat>(
        r: &R,
        w: DevPtr<T>,
        ids: DevPtr<u32>,
        n: usize,
        h: usize,
    ) -> Result<R::Buf<T>> {
        let mut y = r.alloc::<T>(n * h)?;
        let args = EmbeddingFwd {
            w,
            ids,
            y: r.output(&mut y, 0),
            n: int_arg("embedding", "tokens", n)?,
            h: int_arg("embedding", "hidden", h)?,
        };
        r.launch(&args, LaunchDims::rows(n.min(MAX_BLOCKS), 0))?;
        Ok(y)
    }

    /// `[vocab, h]`: the gradient of the lookup from `dy [n, h]` and the batch's `TokenIndex`
    /// on the device (`order`, `seg`, `slot`).
    #[allow(clippy::too_many_arguments)]
    pub fn bwd<R: KernelRunner, T: KernelFloat>(
        r: &R,
        dy: DevPtr<T>,
        order: DevPtr<u32>,
        seg: DevPtr<u32>,
        slot: DevPtr<u32>,
        vocab: usize,
        h: usize,
    ) -> Result<R::Buf<T>> {
        let mut dw = r.alloc::<T>(vocab * h)?;
        let args = EmbeddingBwd {
            dy,
            order,
            seg,
            slot,
            dw: r.output(&mut dw, 0),
            vocab: int_arg("embedding_bwd", "vocabulary", vocab)?,
            h: int_arg("embedding_bwd", "hidden", h)?,
        };
        r.launch(&args, LaunchDims::rows(vocab.min(MAX_BLOCKS), 0))?;
        Ok(dw)
    }

    /// Adds the gradient of the lookup from `dy [n, h]` into the f32 buffer `dw [vocab, h]`
    /// (rows of ids absent from the batch untouched).
    #[allow(clippy::too_many_arguments)]
    pub fn bwd_add<R: KernelRunner, T: KernelFloat>(
        r: &R,
        dy: DevPtr<T>,
        order: DevPtr<u32>,
        seg: DevPtr<u32>,
        slot: DevPtr<u32>,
        dw: DevPtrMut<f32>,
        vocab: usize,
        h: usize,
    ) -> Result<()> {
        let args = EmbeddingBwdAdd {
            dy,
            order,
            seg,
            slot,
            dw,
            vocab: int_arg("embedding_bwd_add", "vocabulary", vocab)?,
            h: int_arg("embedding_bwd_add", "hidden", h)?,
        };
        r.launch(&args, LaunchDims::rows(vocab.min(MAX_BLOCKS), 0))
    }
}

/// `kernels/embedding.cu` on candle's CUDA storages.
#[cfg(feature = "cuda")]
mod cuda {
    use super::DeviceGradIndex;
    use crate::ops::cuda::{input, tensor_input, CudaRunner, KernelDType};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{Layout, Result, Tensor};

    pub fn fwd<T: KernelDType>(s: &CudaStorage, l: &Layout, ids: &Tensor, h: usize) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s.device };
        let w = input::<T>("embedding", s, l)?;
        let n = ids.elem_count();
        let y = super::launch::fwd(&r, w, tensor_input::<u32>("embedding ids", ids)?, n, h)?;
        Ok(CudaStorage::wrap_cuda_slice(y, s.device.clone()))
    }

    pub fn bwd<T: KernelDType>(
        s: &CudaStorage,
        l: &Layout,
        index: &DeviceGradIndex,
        vocab: usize,
        h: usize,
    ) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s.device };
        let dy = input::<T>("embedding_bwd", s, l)?;
        let dw = super::launch::bwd(
            &r,
            dy,
            tensor_input::<u32>("embedding order", &index.order)?,
            tensor_input::<u32>("embedding segments", &index.seg)?,
            tensor_input::<u32>("embedding slots", &index.slot)?,
            vocab,
            h,
        )?;
        Ok(CudaStorage::wrap_cuda_slice(dw, s.device.clone()))
    }

    /// `launch::bwd_add` into the f32 storage `s1` (`dw`) from `s2` (`dy`).
    #[allow(clippy::too_many_arguments)]
    pub fn bwd_add<T: KernelDType>(
        s1: &mut CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        index: &DeviceGradIndex,
        vocab: usize,
        h: usize,
    ) -> Result<()> {
        use crate::ops::kernel_launch::DevPtrMut;
        use candle_core::cuda_backend::cudarc::driver::DevicePtrMut as _;
        let dev = s1.device.clone();
        let r = CudaRunner { dev: &dev };
        let dy = input::<T>("embedding_bwd_add", s2, l2)?;
        let Some((start, _)) = l1.contiguous_offsets() else {
            candle_core::bail!("embedding_bwd_add: the buffer must be contiguous");
        };
        let stream = dev.cuda_stream();
        let slice = s1.as_cuda_slice_mut::<f32>()?;
        let (ptr, _guard) = slice.device_ptr_mut(&stream);
        super::launch::bwd_add(
            &r,
            dy,
            tensor_input::<u32>("embedding order", &index.order)?,
            tensor_input::<u32>("embedding segments", &index.seg)?,
            tensor_input::<u32>("embedding slots", &index.slot)?,
            DevPtrMut::<f32>::new(ptr, start),
            vocab,
            h,
        )
    }
}

/// The embedding in the kernel checks: against candle's `index_select` (forward and the
/// weight's gradient), repeated and absent ids, a vocabulary and width that are not multiples
/// of the block.
pub mod check {
    use super::super::check::{Input, Suite};
    use super::TokenIndex;
    use rand::Rng;

    pub fn selftest(s: &mut Suite) -> anyhow::Result<()> {
        let (vocab, h, n) = (1001, 300, 517);
        // Ids from a small range, so most repeat and most of the vocabulary is absent.
        let ids: Vec<u32> = (0..n).map(|_| s.rng.random_range(0..97u32) * 10).collect();
        let index = TokenIndex::new(&ids, &s.device)?;
        let ids_t = candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)?;
        let inputs = vec![Input::var(s.randn(&[vocab, h], 1.0)?)];
        s.compare_with_grads(
            &format!("embedding [{n} of {vocab}x{h}]"),
            inputs,
            &move |t| super::embedding(&t[0], &index),
            &move |t| t[0].index_select(&ids_t.to_device(t[0].device())?, 0),
        )
    }
}
