//! `Comm` over NCCL (`--features cuda`): the backend of data-parallel GPU runs, one process per
//! GPU. Each collective is enqueued on the stream candle runs the device's kernels on, in place
//! on the tensors' own device memory (a candle in-place op gives the storage), so it is ordered
//! after the backward that wrote the gradients and before the update that reads them, with no
//! synchronisation of its own. The host waits only where a value comes back to it (the step's
//! loss, a barrier), and that wait is what the trainer's watchdog watches.
//!
//! The `_async` forms run on a second stream of the communicator's own, so that a layer's
//! gradient reduction overlaps the backward of the layers before it: the second stream first
//! waits for everything the compute stream has enqueued so far (an event), the collective
//! runs there, and `wait_async` makes the compute stream wait for the second stream before
//! anything reads the results. The tensors involved are kept alive until then (a temporary
//! freed earlier could be reused by the compute stream while the collective still reads it).
//!
//! The communicator is made from a unique id rank 0 draws and hands the others: through MPI when
//! MPI started the job, else through `dist::bootstrap` at `MASTER_ADDR` (torchrun, `syncoder
//! launch`, Slurm).

use super::comm::Comm;
use super::nccl_lib::{DataType, Nccl, RawComm, RawStream, UniqueId};
use anyhow::{bail, Context, Result};
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, CudaStorageSlice};
use candle_core::{CudaStorage, DType, Device, InplaceOp1, InplaceOp2, Layout, Tensor};
use std::cell::RefCell;
use std::sync::Arc;

/// This rank's NCCL communicator on its GPU.
pub struct NcclComm {
    nccl: &'static Nccl,
    comm: RawComm,
    rank: usize,
    world: usize,
    device: CudaDevice,
    /// The stream of the overlapped (`_async`) collectives.
    side: Arc<CudaStream>,
    /// Operands of overlapped collectives not yet waited for.
    pending: RefCell<Vec<Tensor>>,
}

impl NcclComm {
    /// Joins the communicator of `world` ranks named by `id` as `rank`, on `device` (blocks
    /// until every rank has joined).
    pub fn join(nccl: &'static Nccl, id: UniqueId, rank: usize, world: usize, device: &Device) -> Result<Self> {
        let Device::Cuda(dev) = device else {
            bail!("NCCL runs on CUDA devices, not {:?}", device.location());
        };
        let compute = dev.cuda_stream();
        // NCCL takes the calling thread's current device.
        compute
            .context()
            .bind_to_thread()
            .map_err(|e| anyhow::anyhow!("making the GPU current for NCCL: {e:?}"))?;
        let side = compute
            .fork()
            .map_err(|e| anyhow::anyhow!("creating the stream of overlapped collectives: {e:?}"))?;
        let comm = nccl.comm_init_rank(world, id, rank)?;
        Ok(Self {
            nccl,
            comm,
            rank,
            world,
            device: dev.clone(),
            side,
            pending: RefCell::new(Vec::new()),
        })
    }

    fn op(&self, kind: Kind, overlapped: bool) -> Collective<'_> {
        Collective {
            c: self,
            kind,
            stream: if overlapped {
                self.side.clone()
            } else {
                self.device.cuda_stream()
            },
        }
    }

    /// The side stream waits for all the compute stream has enqueued so far.
    fn side_after_compute(&self) -> Result<()> {
        self.side
            .join(&self.device.cuda_stream())
            .map_err(|e| anyhow::anyhow!("ordering the collective after the backward: {e:?}"))
    }

    /// Waits for the device and reports an error NCCL met on the way (a peer that died).
    fn sync(&self) -> Result<()> {
        self.device
            .cuda_stream()
            .synchronize()
            .map_err(|e| anyhow::anyhow!("waiting for the GPU after a collective: {e:?}"))?;
        // SAFETY: the communicator lives as long as `self`.
        unsafe { self.nccl.async_error(self.comm) }
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // A communicator whose peers may be gone cannot be destroyed safely (destroy waits for
        // them): abort it if it reports an error, destroy it otherwise.
        // SAFETY: the communicator is live until the end of this function.
        let failed = unsafe { self.nccl.async_error(self.comm) }.is_err();
        // SAFETY: the communicator is live and not used after this.
        let r = unsafe {
            if failed {
                self.nccl.abort(self.comm)
            } else {
                self.nccl.destroy(self.comm)
            }
        };
        if let Err(e) = r {
            eprintln!("warning: rank {}: ending the NCCL communicator: {e:#}", self.rank);
        }
    }
}

enum Kind {
    AllReduce,
    Broadcast(usize),
    ReduceScatter,
    AllGather,
}

/// One collective as a candle in-place op, enqueued on `stream`.
struct Collective<'a> {
    c: &'a NcclComm,
    kind: Kind,
    stream: Arc<CudaStream>,
}

fn range(l: &Layout) -> candle_core::Result<(usize, usize)> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok((a, b - a)),
        None => candle_core::bail!("NCCL collective: expected a contiguous tensor"),
    }
}

/// `f(address of the first element, elements, type)` for a storage NCCL reads, on `stream`:
/// the access guard (cudarc's record of the use, for its cross-stream ordering) is dropped
/// only after `f` has enqueued the collective.
fn with_operand(
    s: &CudaStorage,
    l: &Layout,
    stream: &Arc<CudaStream>,
    f: impl FnOnce(u64, usize, DataType) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    let (a, n) = range(l)?;
    match &s.slice {
        CudaStorageSlice::F32(d) => {
            let (p, _guard) = d.device_ptr(stream);
            f(p + (a * 4) as u64, n, DataType::F32)
        }
        CudaStorageSlice::F64(d) => {
            let (p, _guard) = d.device_ptr(stream);
            f(p + (a * 8) as u64, n, DataType::F64)
        }
        _ => candle_core::bail!("NCCL collective: expected an f32 or f64 tensor, got {:?}", s.dtype()),
    }
}

/// `with_operand` for a storage NCCL writes.
fn with_operand_mut(
    s: &mut CudaStorage,
    l: &Layout,
    stream: &Arc<CudaStream>,
    f: impl FnOnce(u64, usize, DataType) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    let (a, n) = range(l)?;
    let dtype = s.dtype();
    match &mut s.slice {
        CudaStorageSlice::F32(d) => {
            let (p, _guard) = d.device_ptr_mut(stream);
            f(p + (a * 4) as u64, n, DataType::F32)
        }
        CudaStorageSlice::F64(d) => {
            let (p, _guard) = d.device_ptr_mut(stream);
            f(p + (a * 8) as u64, n, DataType::F64)
        }
        _ => candle_core::bail!("NCCL collective: expected an f32 or f64 tensor, got {dtype:?}"),
    }
}

fn w(r: Result<()>) -> candle_core::Result<()> {
    r.map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
}

impl InplaceOp1 for Collective<'_> {
    fn name(&self) -> &'static str {
        "nccl collective"
    }

    fn cpu_fwd(&self, _: &mut candle_core::CpuStorage, _: &Layout) -> candle_core::Result<()> {
        candle_core::bail!("NCCL collectives take CUDA tensors")
    }

    fn cuda_fwd(&self, s: &mut CudaStorage, l: &Layout) -> candle_core::Result<()> {
        let (c, raw) = (self.c, self.stream.cu_stream() as RawStream);
        with_operand_mut(s, l, &self.stream, |ptr, n, dtype| {
            // SAFETY: `ptr` is `n` elements of `dtype` in this device's memory, alive while the
            // tensor is (kept until the stream has run the operation).
            w(unsafe {
                match self.kind {
                    Kind::AllReduce => c.nccl.all_reduce(ptr, ptr, n, dtype, c.comm, raw),
                    Kind::Broadcast(root) => c.nccl.broadcast(ptr, n, dtype, root, c.comm, raw),
                    _ => Err(anyhow::anyhow!("not a one-tensor collective")),
                }
            })
        })
    }
}

impl InplaceOp2 for Collective<'_> {
    fn name(&self) -> &'static str {
        "nccl collective"
    }

    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<()> {
        candle_core::bail!("NCCL collectives take CUDA tensors")
    }

    fn cuda_fwd(&self, dst: &mut CudaStorage, ld: &Layout, src: &CudaStorage, ls: &Layout) -> candle_core::Result<()> {
        let (c, raw) = (self.c, self.stream.cu_stream() as RawStream);
        with_operand_mut(dst, ld, &self.stream, |d, dn, dtype| {
            with_operand(src, ls, &self.stream, |s, sn, _| {
                // SAFETY: as above; the sizes were checked against the world by the caller.
                w(unsafe {
                    match self.kind {
                        Kind::ReduceScatter => c.nccl.reduce_scatter(s, d, dn, dtype, c.comm, raw),
                        Kind::AllGather => c.nccl.all_gather(s, d, sn, dtype, c.comm, raw),
                        _ => Err(anyhow::anyhow!("not a two-tensor collective")),
                    }
                })
            })
        })
    }
}

/// A contiguous f32 tensor on this communicator's GPU.
fn check(what: &str, t: &Tensor, dev: &CudaDevice) -> Result<()> {
    let same = matches!(t.device(), Device::Cuda(d) if d.same_device(dev));
    if !same || t.dtype() != DType::F32 || !t.is_contiguous() {
        bail!(
            "{what}: NCCL here takes contiguous f32 tensors on this rank's GPU, got {:?} {:?} on {:?}",
            t.dtype(),
            t.dims(),
            t.device().location()
        );
    }
    Ok(())
}

fn check_blocks(what: &str, whole: &Tensor, block: &Tensor, size: usize, dev: &CudaDevice) -> Result<()> {
    check(what, whole, dev)?;
    check(what, block, dev)?;
    super::comm::check_block_sizes(what, whole, block, size)
}

impl Comm for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        check("all-reduce", t, &self.device)?;
        Ok(t.inplace_op1(&self.op(Kind::AllReduce, false))?)
    }

    fn reduce_scatter_sum(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        check_blocks("reduce-scatter", src, dst, self.world, &self.device)?;
        Ok(dst.inplace_op2(src, &self.op(Kind::ReduceScatter, false))?)
    }

    fn all_gather(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        check_blocks("all-gather", dst, src, self.world, &self.device)?;
        Ok(dst.inplace_op2(src, &self.op(Kind::AllGather, false))?)
    }

    fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        check("broadcast", t, &self.device)?;
        if root >= self.world {
            bail!("broadcast: root {root} is not a rank of {}", self.world);
        }
        Ok(t.inplace_op1(&self.op(Kind::Broadcast(root), false))?)
    }

    fn barrier(&self) -> Result<()> {
        let t = Tensor::zeros(1, DType::F32, &Device::Cuda(self.device.clone()))?;
        t.inplace_op1(&self.op(Kind::AllReduce, false))?;
        self.sync().context("barrier")
    }

    fn all_reduce_f64(&self, v: &mut [f64]) -> Result<()> {
        if v.is_empty() {
            return Ok(());
        }
        let t = Tensor::from_slice(v, v.len(), &Device::Cuda(self.device.clone()))?;
        t.inplace_op1(&self.op(Kind::AllReduce, false))?;
        self.sync().context("summing host values")?;
        v.copy_from_slice(&t.to_vec1::<f64>()?);
        Ok(())
    }

    fn all_reduce_sum_async(&self, t: &Tensor) -> Result<()> {
        check("all-reduce", t, &self.device)?;
        self.side_after_compute()?;
        t.inplace_op1(&self.op(Kind::AllReduce, true))?;
        self.pending.borrow_mut().push(t.clone());
        Ok(())
    }

    fn reduce_scatter_sum_async(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        check_blocks("reduce-scatter", src, dst, self.world, &self.device)?;
        self.side_after_compute()?;
        dst.inplace_op2(src, &self.op(Kind::ReduceScatter, true))?;
        let mut p = self.pending.borrow_mut();
        p.push(src.clone());
        p.push(dst.clone());
        Ok(())
    }

    fn wait_async(&self) -> Result<()> {
        self.device
            .cuda_stream()
            .join(&self.side)
            .map_err(|e| anyhow::anyhow!("waiting for the overlapped collectives: {e:?}"))?;
        // Freed (stream-ordered) after the compute stream's wait.
        self.pending.borrow_mut().clear();
        Ok(())
    }
}
