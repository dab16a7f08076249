//! Flash attention on CUDA tensor cores (`kernels/flash_attention.cu`): the varlen causal
//! grouped-query attention of `ops::attention` (its CPU twin) for bf16 inputs with head dim 64 or
//! 128, forward and deterministic backward, as a candle `CustomOp3` with its backward.
//!
//! Memory is O(T): the forward keeps the output and one f32 log-sum-exp per (head, token); the
//! backward recomputes the probabilities tile by tile. Documents are read from one `u32` per
//! token (the flattened index of its document's first token, `DocSegments::device_starts`,
//! uploaded once per batch), never from a mask tensor.
//!
//! Tile sizes, and why (all blocks are 4 warps, each owning 16 rows of the block's tile; tiles
//! are bf16 `[rows, D]` in dynamic shared memory, XOR-swizzled for conflict-free `ldmatrix`):
//! - forward: 64 queries × 64 keys. Q, K, V tiles take 24 KiB (D = 64) or 48 KiB (D = 128),
//!   within what every GPU gives without an opt-in; Q's fragments stay in registers.
//! - dK/dV: 64 keys × `bwd_tile(D)` queries (64, or 32 at D = 128 so that K, V, Q and dO
//!   fit 48 KiB), one block per (key tile, query head): each query head's share of dK and dV
//!   accumulates in registers and goes to a transient f32 buffer `[n, hq, D]` (2·n·hq·D·4
//!   bytes, 29 MiB for Qwen2.5-Coder-0.5B at 4096 tokens); a small kernel adds each kv head's
//!   group of shares in head order (no atomics). The first H200 run blocked by kv head instead,
//!   and the 2 kv heads of the 0.5B model left the chip idle: 2.9 ms for the backward against
//!   0.25 ms for the forward.
//! - dQ: 64 queries × `bwd_tile(D)` keys, a separate pass (recomputing S and dP) instead of
//!   FlashAttention-2's atomic dQ updates: identical bits on every run.
//!
//! `ptxas -v` (sm_80 / sm_90a, `scripts/compile_kernels.sh` prints it; 0 bytes spilled
//! everywhere): forward 129/172 registers at D = 64/128, dK/dV 190/238, dQ 135/168. At 128
//! threads per block the register file holds 3 blocks per SM for the forward and dQ at D = 64
//! and 2 for the rest (shared memory alone would allow 3–9 on an A100/H100), i.e. 8–12 warps
//! per SM: the FlashAttention-2 operating point (it also runs 4 warps per block with most of
//! the register file holding accumulators), where the 16 independent MMAs of each step rather
//! than occupancy hide latency.

use super::attention::DocSegments;
use candle_core::{Device, Result, Tensor};

/// Head dims the kernel is instantiated for.
pub const HEAD_DIMS: [usize; 2] = [64, 128];

/// Whether the fused kernel handles `q` of dtype `dtype` and head dim `d` on `device`: CUDA
/// builds, a CUDA device, bf16, and a head dim in `HEAD_DIMS`. Other cases take the chunked
/// (cuBLAS) attention.
pub fn supported(device: &Device, dtype: candle_core::DType, d: usize) -> bool {
    cfg!(feature = "cuda") && device.is_cuda() && dtype == candle_core::DType::BF16 && HEAD_DIMS.contains(&d)
}

/// Attention of `q [N, Hq, D]` over `k, v [N, Hkv, D]` (bf16, on CUDA), causal within the
/// documents of `segs`. Returns `[N, Hq, D]`; differentiable in q, k and v.
pub fn flash_attention(q: &Tensor, k: &Tensor, v: &Tensor, segs: &DocSegments, scale: f64) -> Result<Tensor> {
    super::attention::check_shapes("flash attention", q, k, v, segs)?;
    #[cfg(feature = "cuda")]
    {
        cuda::flash_attention(q, k, v, segs, scale)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (q, k, v, segs, scale);
        candle_core::bail!("flash attention needs a build with `--features cuda`")
    }
}

/// `flash_attention` outside autograd: the output and what its backward needs.
pub fn flash_attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segs: &DocSegments,
    scale: f64,
) -> Result<(Tensor, super::attention::AttentionSaved)> {
    super::attention::check_shapes("flash attention", q, k, v, segs)?;
    #[cfg(feature = "cuda")]
    {
        cuda::flash_attention_forward(q, k, v, segs, scale)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (q, k, v, segs, scale);
        candle_core::bail!("flash attention needs a build with `--features cuda`")
    }
}

/// The launches of `kernels/flash_attention.cu`, for any `KernelRunner` (the GPU, and the CPU
/// kernel harness in `cargo test`).
pub mod launch {
    use crate::ops::kernel_constants::{FLASH_ROWS, FLASH_THREADS};
    use crate::ops::kernel_launch::args::{
        FlashAttentionBwdDkdvD128, FlashAttentionBwdDkdvD64, FlashAttentionBwdDkdvSum, FlashAttentionBwdDot,
        FlashAttentionBwdDqD128, FlashAttentionBwdDqD64, FlashAttentionFwdD128, FlashAttentionFwdD64,
    };
    use crate::ops::kernel_launch::{int_arg, DevPtr, KernelArgs, KernelRunner, LaunchDims};
    use candle_core::{bail, Result};
    use half::bf16;

    /// The shapes of one call: `n` tokens, `hq` query heads over `hkv` kv heads, head dim `d`.
    #[derive(Clone, Copy, Debug)]
    pub struct Dims {
        pub n: usize,
        pub hq: usize,
        pub hkv: usize,
        pub d: usize,
        /// The softmax scale (1/√d for the model).
        pub scale: f32,
    }

    /// Queries per tile of the dK/dV pass and keys per tile of the dQ pass.
    pub fn bwd_tile(d: usize) -> usize {
        if d <= 64 {
            64
        } else {
            32
        }
    }

    /// Dynamic shared memory of the forward: Q, K and V tiles of 64 rows.
    pub fn fwd_shared_bytes(d: usize) -> usize {
        3 * FLASH_ROWS * d * 2
    }

    /// Dynamic shared memory of either backward pass: two tiles of 64 rows and two of
    /// `bwd_tile(d)`.
    pub fn bwd_shared_bytes(d: usize) -> usize {
        (2 * FLASH_ROWS + 2 * bwd_tile(d)) * d * 2
    }

    struct Ints {
        n: i32,
        hq: i32,
        hkv: i32,
        scale_log2: f32,
    }

    fn check(dims: Dims, ptrs: &[(&str, u64)]) -> Result<Ints> {
        let Dims { n, hq, hkv, d, scale } = dims;
        if !super::HEAD_DIMS.contains(&d) {
            bail!(
                "flash attention: head dim {d}; the kernel is built for {:?}",
                super::HEAD_DIMS
            );
        }
        if hkv == 0 || !hq.is_multiple_of(hkv) {
            bail!("flash attention: {hq} query heads are not a multiple of {hkv} kv heads");
        }
        if n == 0 {
            bail!("flash attention: no tokens");
        }
        for (name, p) in ptrs {
            if p % 16 != 0 {
                bail!(
                    "flash attention: `{name}` at {p:#x} is not 16-byte aligned (the kernel loads 16 bytes at a time)"
                );
            }
        }
        int_arg("flash_attention", "tokens x heads x head dim", n * hq.max(hkv) * d)?;
        Ok(Ints {
            n: n as i32,
            hq: int_arg("flash_attention", "query heads", hq)?,
            hkv: int_arg("flash_attention", "kv heads", hkv)?,
            scale_log2: scale * std::f32::consts::LOG2_E,
        })
    }

    fn block_launch(blocks: usize, shared: usize) -> Result<LaunchDims> {
        Ok(LaunchDims {
            grid: u32::try_from(blocks)
                .map_err(|_| candle_core::Error::Msg(format!("flash attention: {blocks} blocks")))?,
            block: FLASH_THREADS,
            shared_bytes: shared as u32,
        })
    }

    /// The forward: the output `[n, hq, d]` and the log-sum-exp `[hq, n]` (natural log) of
    /// every score row, which the backward takes.
    pub fn fwd<R: KernelRunner>(
        r: &R,
        q: DevPtr<bf16>,
        k: DevPtr<bf16>,
        v: DevPtr<bf16>,
        doc_start: DevPtr<u32>,
        dims: Dims,
    ) -> Result<(R::Buf<bf16>, R::Buf<f32>)> {
        let i = check(dims, &[("q", q.addr()), ("k", k.addr()), ("v", v.addr())])?;
        let mut o = r.alloc::<bf16>(dims.n * dims.hq * dims.d)?;
        let mut lse = r.alloc::<f32>(dims.hq * dims.n)?;
        let launch = dims_fwd(dims)?;
        let (o_ptr, lse_ptr) = (r.output(&mut o, 0), r.output(&mut lse, 0));
        // The two head-dim instantiations take the same arguments.
        macro_rules! args {
            ($ty:ident) => {
                Box::new($ty {
                    q,
                    k,
                    v,
                    doc_start,
                    o: o_ptr,
                    lse: lse_ptr,
                    n: i.n,
                    hq: i.hq,
                    hkv: i.hkv,
                    scale_log2: i.scale_log2,
                })
            };
        }
        let args: Box<dyn KernelArgs> = match dims.d {
            64 => args!(FlashAttentionFwdD64),
            _ => args!(FlashAttentionFwdD128),
        };
        r.launch(args.as_ref(), launch)?;
        Ok((o, lse))
    }

    fn dims_fwd(d: Dims) -> Result<LaunchDims> {
        block_launch(d.n.div_ceil(FLASH_ROWS) * d.hq, fwd_shared_bytes(d.d))
    }

    /// The backward from the forward's output `o`, its log-sum-exp `lse` and the output
    /// gradient `dout`: one buffer `[dq (n·hq·d) | dk (n·hkv·d) | dv (n·hkv·d)]`. Four launches:
    /// delta = rowsum(dout ∘ o), the dK/dV pass (each query head's share, into a transient f32
    /// buffer of 2·n·hq·d), the sum of the shares over each kv head's group, the dQ pass.
    #[allow(clippy::too_many_arguments)]
    pub fn bwd<R: KernelRunner>(
        r: &R,
        q: DevPtr<bf16>,
        k: DevPtr<bf16>,
        v: DevPtr<bf16>,
        o: DevPtr<bf16>,
        dout: DevPtr<bf16>,
        lse: DevPtr<f32>,
        doc_start: DevPtr<u32>,
        dims: Dims,
    ) -> Result<R::Buf<bf16>> {
        let i = check(
            dims,
            &[
                ("q", q.addr()),
                ("k", k.addr()),
                ("v", v.addr()),
                ("o", o.addr()),
                ("dout", dout.addr()),
            ],
        )?;
        let Dims { n, hq, hkv, d, .. } = dims;
        let (nq, nkv) = (n * hq * d, n * hkv * d);
        let mut out = r.alloc::<bf16>(nq + 2 * nkv)?;
        let mut delta = r.alloc::<f32>(hq * n)?;
        let warps_per_block = (crate::ops::kernel_launch::BLOCK / 32) as usize;
        let dot = FlashAttentionBwdDot {
            o,
            dout,
            delta: r.output(&mut delta, 0),
            n: i.n,
            hq: i.hq,
            d: d as i32,
        };
        r.launch(
            &dot,
            LaunchDims {
                grid: u32::try_from((n * hq).div_ceil(warps_per_block))
                    .map_err(|_| candle_core::Error::Msg("flash attention: too many rows".into()))?,
                block: crate::ops::kernel_launch::BLOCK,
                shared_bytes: 0,
            },
        )?;
        let delta_in = r.input(&delta, 0);
        let mut parts = r.alloc::<f32>(2 * nq)?;
        let (dk_part, dv_part) = (r.output(&mut parts, 0), r.output(&mut parts, nq));
        let dq = r.output(&mut out, 0);
        let kv_launch = block_launch(n.div_ceil(FLASH_ROWS) * hq, bwd_shared_bytes(d))?;
        let q_launch = block_launch(n.div_ceil(FLASH_ROWS) * hq, bwd_shared_bytes(d))?;
        // The two head-dim instantiations of each pass take the same arguments; `$out` is the
        // pass's outputs (`dk, dv` or `dq`).
        macro_rules! args {
            ($ty:ident, $($out:ident),+) => {
                Box::new($ty {
                    q,
                    k,
                    v,
                    dout,
                    lse,
                    delta: delta_in,
                    doc_start,
                    $($out,)+
                    n: i.n,
                    hq: i.hq,
                    hkv: i.hkv,
                    scale_log2: i.scale_log2,
                })
            };
        }
        let (dkdv, dq_pass): (Box<dyn KernelArgs>, Box<dyn KernelArgs>) = match d {
            64 => (
                args!(FlashAttentionBwdDkdvD64, dk_part, dv_part),
                args!(FlashAttentionBwdDqD64, dq),
            ),
            _ => (
                args!(FlashAttentionBwdDkdvD128, dk_part, dv_part),
                args!(FlashAttentionBwdDqD128, dq),
            ),
        };
        r.launch(dkdv.as_ref(), kv_launch)?;
        let sum = FlashAttentionBwdDkdvSum {
            dk_part: r.input(&parts, 0),
            dv_part: r.input(&parts, nq),
            dk: r.output(&mut out, nq),
            dv: r.output(&mut out, nq + nkv),
            n: i.n,
            hq: i.hq,
            hkv: i.hkv,
            d: d as i32,
        };
        let block = crate::ops::kernel_launch::BLOCK;
        r.launch(
            &sum,
            LaunchDims {
                grid: u32::try_from(nkv.div_ceil(block as usize))
                    .map_err(|_| candle_core::Error::Msg("flash attention: too many kv elements".into()))?,
                block,
                shared_bytes: 0,
            },
        )?;
        r.launch(dq_pass.as_ref(), q_launch)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::launch::{bwd_shared_bytes, bwd_tile, fwd_shared_bytes};
    use crate::ops::kernel_launch::MAX_DYNAMIC_SHARED;

    /// The tile sizes the module documentation gives, and every pass within the 48 KiB a block
    /// gets without an opt-in (the harness and `check_launch` refuse more).
    #[test]
    fn tiles_fit_the_shared_memory_budget() {
        assert_eq!((bwd_tile(64), bwd_tile(128)), (64, 32));
        assert_eq!((fwd_shared_bytes(64), fwd_shared_bytes(128)), (24 << 10, 48 << 10));
        assert_eq!((bwd_shared_bytes(64), bwd_shared_bytes(128)), (32 << 10, 48 << 10));
        for d in super::HEAD_DIMS {
            assert!(fwd_shared_bytes(d).max(bwd_shared_bytes(d)) <= MAX_DYNAMIC_SHARED);
        }
    }

    /// Shapes that would make the kernel read past k, v or the document starts are refused
    /// before anything reaches a device.
    #[test]
    fn mismatched_shapes_are_refused() {
        use candle_core::{Device, Tensor};
        let segs = crate::ops::DocSegments::from_positions(&[0, 1, 2, 3], 1, 4).unwrap();
        let t = |n: usize, h: usize| Tensor::zeros((n, h, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        for (q, k, v) in [
            (t(4, 2), t(3, 1), t(3, 1)),
            (t(4, 2), t(4, 1), t(2, 1)),
            (t(5, 2), t(5, 1), t(5, 1)),
        ] {
            let err = super::flash_attention(&q, &k, &v, &segs, 0.125).unwrap_err();
            assert!(err.to_string().contains("incompatible shapes"), "{err}");
        }
    }
}

/// The kernel on candle's CUDA storages, as a `CustomOp3` whose backward is the kernel's.
#[cfg(feature = "cuda")]
mod cuda {
    use super::launch::{self, Dims};
    use crate::ops::attention::AttentionSaved;
    use crate::ops::attention::DocSegments;
    use crate::ops::cuda::{input, tensor_input, CudaRunner};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
    use half::bf16;
    use std::sync::Mutex;

    pub fn flash_attention(q: &Tensor, k: &Tensor, v: &Tensor, segs: &DocSegments, scale: f64) -> Result<Tensor> {
        aligned(q)?.apply_op3(&aligned(k)?, &aligned(v)?, FlashAttention::new(q, segs, scale)?)
    }

    pub fn flash_attention_forward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        segs: &DocSegments,
        scale: f64,
    ) -> Result<(Tensor, AttentionSaved)> {
        let op = FlashAttention::new(q, segs, scale)?;
        AttentionSaved::run(op, aligned(&q.detach())?, aligned(&k.detach())?, aligned(&v.detach())?)
    }

    /// `t` contiguous and starting on a 16-byte boundary (the kernel loads 16 bytes at a time):
    /// a view at another offset (a narrow of a larger buffer) is copied.
    fn aligned(t: &Tensor) -> Result<Tensor> {
        let t = t.contiguous()?;
        if t.layout().start_offset() % 8 == 0 {
            Ok(t)
        } else {
            t.copy()
        }
    }

    fn dims(l1: &Layout, l2: &Layout, scale: f32) -> Result<Dims> {
        let (n, hq, d) = l1.shape().dims3()?;
        let (_, hkv, _) = l2.shape().dims3()?;
        Ok(Dims { n, hq, hkv, d, scale })
    }

    struct FlashAttention {
        /// `DocSegments::device_starts`: u32 per token.
        starts: Tensor,
        scale: f32,
        /// The forward's log-sum-exp `[hq, n]`, for the backward.
        lse: Mutex<Option<CudaSlice<f32>>>,
    }

    impl FlashAttention {
        /// The op for `q`'s device: the documents' starts uploaded, no log-sum-exp yet.
        fn new(q: &Tensor, segs: &DocSegments, scale: f64) -> Result<Self> {
            Ok(Self {
                starts: segs.device_starts(q.device())?,
                scale: scale as f32,
                lse: Mutex::new(None),
            })
        }
    }

    impl CustomOp3 for FlashAttention {
        fn name(&self) -> &'static str {
            "flash_attention"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            bail!("flash attention runs on CUDA; the CPU takes ops::varlen_causal_attention")
        }

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            s3: &CudaStorage,
            l3: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            if s1.dtype() != DType::BF16 || s2.dtype() != DType::BF16 || s3.dtype() != DType::BF16 {
                bail!("flash attention: bf16 inputs only, got {:?}", s1.dtype());
            }
            let r = CudaRunner { dev: &s1.device };
            let dims = dims(l1, l2, self.scale)?;
            let starts = tensor_input::<u32>("document starts", &self.starts)?;
            let (o, lse) = launch::fwd(
                &r,
                input::<bf16>("q", s1, l1)?,
                input::<bf16>("k", s2, l2)?,
                input::<bf16>("v", s3, l3)?,
                starts,
                dims,
            )?;
            *self
                .lse
                .lock()
                .map_err(|_| candle_core::Error::Msg("flash attention: poisoned lock".into()))? = Some(lse);
            Ok((CudaStorage::wrap_cuda_slice(o, s1.device.clone()), l1.shape().clone()))
        }

        fn bwd(
            &self,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            res: &Tensor,
            grad: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            let (n, hq, d) = q.dims3()?;
            let hkv = k.dim(1)?;
            let bwd = FlashAttentionBwd {
                fwd: self,
                o: aligned(res)?,
                dout: aligned(&grad.to_dtype(DType::BF16)?)?,
            };
            let packed = q.apply_op3_no_bwd(k, v, &bwd)?;
            let (nq, nkv) = (n * hq * d, n * hkv * d);
            Ok((
                Some(packed.narrow(0, 0, nq)?.reshape((n, hq, d))?),
                Some(packed.narrow(0, nq, nkv)?.reshape((n, hkv, d))?),
                Some(packed.narrow(0, nq + nkv, nkv)?.reshape((n, hkv, d))?),
            ))
        }
    }

    /// The backward launches, producing `[dq | dk | dv]` flattened.
    struct FlashAttentionBwd<'a> {
        fwd: &'a FlashAttention,
        o: Tensor,
        dout: Tensor,
    }

    impl CustomOp3 for FlashAttentionBwd<'_> {
        fn name(&self) -> &'static str {
            "flash_attention_bwd"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            bail!("flash attention's backward runs on CUDA")
        }

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            s3: &CudaStorage,
            l3: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let r = CudaRunner { dev: &s1.device };
            let dims = dims(l1, l2, self.fwd.scale)?;
            let lse = self
                .fwd
                .lse
                .lock()
                .map_err(|_| candle_core::Error::Msg("flash attention: poisoned lock".into()))?;
            let Some(lse) = lse.as_ref() else {
                bail!("flash attention: backward without a forward on the device");
            };
            let lse = crate::ops::kernel_launch::DevPtr::new(lse.device_ptr(&s1.device.cuda_stream()).0, 0);
            let out = launch::bwd(
                &r,
                input::<bf16>("q", s1, l1)?,
                input::<bf16>("k", s2, l2)?,
                input::<bf16>("v", s3, l3)?,
                tensor_input::<bf16>("o", &self.o)?,
                tensor_input::<bf16>("dout", &self.dout)?,
                lse,
                tensor_input::<u32>("document starts", &self.fwd.starts)?,
                dims,
            )?;
            let len = dims.n * (dims.hq + 2 * dims.hkv) * dims.d;
            Ok((CudaStorage::wrap_cuda_slice(out, s1.device.clone()), Shape::from(len)))
        }
    }
}

/// Flash attention in the kernel checks (`syncoder selftest`): on CUDA in bf16 it is what
/// `ops::varlen_causal_attention` runs, compared with the CPU twin, forward and dq/dk/dv, on the
/// awkward shapes of the harness tests; elsewhere the same cases check the twin against the
/// composed attention.
pub mod check {
    use super::super::attention::{composed_attention, varlen_causal_attention, AttentionKernel, DocSegments};
    use super::super::check::{rel_err, Input, Suite};
    use candle_core::{DType, Tensor, Var};

    /// Documents per row for the checks: a 1-token document, documents ending inside a tile,
    /// rows whose length is not a multiple of the 64-token tile.
    pub const DOCS: [&[usize]; 2] = [&[1, 70, 9, 1, 50], &[131]];

    pub fn selftest(s: &mut Suite) -> anyhow::Result<()> {
        let t = DOCS.iter().map(|r| r.iter().sum::<usize>()).max().unwrap_or(0);
        let positions: Vec<u32> = DOCS
            .iter()
            .flat_map(|r| {
                let mut p: Vec<u32> = r.iter().flat_map(|&l| 0..l as u32).collect();
                // Pad the row with a continuing document so every row has t tokens.
                let last = p.last().copied().unwrap_or(0);
                let pad = t - p.len();
                p.extend((1..=pad as u32).map(|i| last + i));
                p
            })
            .collect();
        let segs = DocSegments::from_positions(&positions, DOCS.len(), t)?;
        let n = segs.len();
        for (hq, hkv, d) in [(2, 2, 64), (4, 2, 128), (7, 1, 64)] {
            let inputs = vec![
                Input::var(s.randn(&[n, hq, d], 4.0)?),
                Input::var(s.randn(&[n, hkv, d], 4.0)?),
                Input::var(s.randn(&[n, hkv, d], 1.0)?),
            ];
            let scale = 1.0 / (d as f64).sqrt();
            // |s| ~ 16: bf16 inputs, f32 scores and softmax.
            let tol = if s.dtype == DType::F32 { 1e-4 } else { 1e-2 };
            let (s1, s2) = (segs.clone(), segs.clone());
            let which = AttentionKernel::for_call(&s.device, s.dtype, d).name();
            s.compare_with_grads_tol(
                &format!("attention ({which}) [{n}x{hq}/{hkv}x{d}], logits |s| ~ 16"),
                inputs,
                &move |t| varlen_causal_attention(&t[0], &t[1], &t[2], &s1, scale),
                &move |t| composed_attention(&t[0], &t[1], &t[2], &s2, scale),
                tol,
            )?;
            against_f64(s, &segs, hq, hkv, d, which)?;
        }
        Ok(())
    }

    /// The same attention on the device against the composed attention in f64 on the CPU:
    /// forward and the gradients of `sum(y * dout)`.
    fn against_f64(
        s: &mut Suite,
        segs: &DocSegments,
        hq: usize,
        hkv: usize,
        d: usize,
        which: &str,
    ) -> anyhow::Result<()> {
        let n = segs.len();
        let host = [
            s.randn(&[n, hq, d], 4.0)?,
            s.randn(&[n, hkv, d], 4.0)?,
            s.randn(&[n, hkv, d], 1.0)?,
        ];
        let dout = s.randn(&[n, hq, d], 1.0)?;
        let scale = 1.0 / (d as f64).sqrt();
        let tol = if s.dtype == DType::F32 { 1e-4 } else { 1e-2 };
        let vars = |dev: &candle_core::Device, dt: DType| -> candle_core::Result<Vec<Var>> {
            host.iter()
                .map(|h| Var::from_tensor(&h.to_device(dev)?.to_dtype(dt)?))
                .collect()
        };
        let want_vars = vars(&candle_core::Device::Cpu, DType::F64)?;
        let want = composed_attention(
            want_vars[0].as_tensor(),
            want_vars[1].as_tensor(),
            want_vars[2].as_tensor(),
            segs,
            scale,
        )?;
        let want_grads = (&want * dout.to_dtype(DType::F64)?)?.sum_all()?.backward()?;
        let (dev, dt) = (s.device.clone(), s.dtype);
        let got = (|| -> anyhow::Result<(Tensor, candle_core::backprop::GradStore, Vec<Var>)> {
            let got_vars = vars(&dev, dt)?;
            let y = varlen_causal_attention(
                got_vars[0].as_tensor(),
                got_vars[1].as_tensor(),
                got_vars[2].as_tensor(),
                segs,
                scale,
            )?;
            let grads = (y.to_dtype(DType::F32)? * dout.to_device(&dev)?)?
                .sum_all()?
                .backward()?;
            Ok((y, grads, got_vars))
        })();
        let name = format!("attention ({which}) vs f64 [{n}x{hq}/{hkv}x{d}]");
        match got {
            Ok((y, grads, got_vars)) => {
                s.record_result(&format!("{name} forward"), rel_err(&y, &want), tol);
                for (i, what) in ["dq", "dk", "dv"].iter().enumerate() {
                    let r = match (
                        grads.get(got_vars[i].as_tensor()),
                        want_grads.get(want_vars[i].as_tensor()),
                    ) {
                        (Some(g), Some(w)) => rel_err(g, w),
                        _ => Err(anyhow::anyhow!("no gradient reached {what}")),
                    };
                    s.record_result(&format!("{name} {what}"), r, tol);
                }
            }
            Err(e) => s.record_result(&format!("{name} forward"), Err(e), tol),
        }
        Ok(())
    }
}
