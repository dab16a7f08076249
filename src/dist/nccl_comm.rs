//! `Comm` over NCCL (`--features cuda`): the backend of data-parallel GPU runs, one process per
//! GPU. Each collective is enqueued on the stream candle runs the device's kernels on, in place
//! on the tensors' own device memory (a candle in-place op gives the storage), so it is ordered
//! after the backward that wrote the gradients and before the update that reads them, with no
//! synchronisation of its own. The host waits only where a value comes back to it (the step's
//! loss, a barrier), and that wait is what the trainer's watchdog watches.
//!
//! The communicator is made from a unique id rank 0 draws and hands the others: through MPI when
//! MPI started the job, else through `dist::bootstrap` at `MASTER_ADDR` (torchrun, `syncoder
//! launch`, Slurm).

use super::comm::Comm;
use super::nccl_lib::{DataType, Nccl, RawComm, RawStream, UniqueId};
use anyhow::{bail, Context, Result};
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, CudaStorageSlice};
use candle_core::{CudaStorage, DType, Device, InplaceOp1, InplaceOp2, Layout, Tensor};

/// This rank's NCCL communicator on its GPU.
pub struct NcclComm {
    nccl: &'static Nccl,
    comm: RawComm,
    rank: usize,
    world: usize,
    device: CudaDevice,
}

impl NcclComm {
    /// Joins the communicator of `world` ranks named by `id` as `rank`, on `device` (blocks
    /// until every rank has joined).
    pub fn join(nccl: &'static Nccl, id: UniqueId, rank: usize, world: usize, device: &Device) -> Result<Self> {
        let Device::Cuda(dev) = device else {
            bail!("NCCL runs on CUDA devices, not {:?}", device.location());
        };
        // NCCL takes the calling thread's current device.
        dev.cuda_stream()
            .context()
            .bind_to_thread()
            .map_err(|e| anyhow::anyhow!("making the GPU current for NCCL: {e:?}"))?;
        let comm = nccl.comm_init_rank(world, id, rank)?;
        Ok(Self {
            nccl,
            comm,
            rank,
            world,
            device: dev.clone(),
        })
    }

    fn stream(&self) -> RawStream {
        self.device.cuda_stream().cu_stream() as RawStream
    }

    fn op(&self, kind: Kind) -> Collective<'_> {
        Collective { c: self, kind }
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

struct Collective<'a> {
    c: &'a NcclComm,
    kind: Kind,
}

/// The device address of a contiguous storage's first element, its element count and NCCL type.
fn operand(s: &CudaStorage, l: &Layout, dev: &CudaDevice) -> candle_core::Result<(u64, usize, DataType)> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("NCCL collective: expected a contiguous tensor");
    };
    let stream = dev.cuda_stream();
    Ok(match &s.slice {
        CudaStorageSlice::F32(d) => (d.device_ptr(&stream).0 + (a * 4) as u64, b - a, DataType::F32),
        CudaStorageSlice::F64(d) => (d.device_ptr(&stream).0 + (a * 8) as u64, b - a, DataType::F64),
        _ => candle_core::bail!("NCCL collective: expected an f32 or f64 tensor, got {:?}", s.dtype()),
    })
}

fn operand_mut(s: &mut CudaStorage, l: &Layout, dev: &CudaDevice) -> candle_core::Result<(u64, usize, DataType)> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("NCCL collective: expected a contiguous tensor");
    };
    let stream = dev.cuda_stream();
    Ok(match &mut s.slice {
        CudaStorageSlice::F32(d) => (d.device_ptr_mut(&stream).0 + (a * 4) as u64, b - a, DataType::F32),
        CudaStorageSlice::F64(d) => (d.device_ptr_mut(&stream).0 + (a * 8) as u64, b - a, DataType::F64),
        _ => candle_core::bail!("NCCL collective: expected an f32 or f64 tensor, got {:?}", s.dtype()),
    })
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
        let c = self.c;
        let (ptr, n, dtype) = operand_mut(s, l, &c.device)?;
        // SAFETY: `ptr` is `n` elements of `dtype` in this device's memory, alive while the
        // tensor is (the stream runs the operation before any later use of it).
        w(unsafe {
            match self.kind {
                Kind::AllReduce => c.nccl.all_reduce(ptr, ptr, n, dtype, c.comm, c.stream()),
                Kind::Broadcast(root) => c.nccl.broadcast(ptr, n, dtype, root, c.comm, c.stream()),
                _ => Err(anyhow::anyhow!("not a one-tensor collective")),
            }
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
        let c = self.c;
        let (d, dn, dtype) = operand_mut(dst, ld, &c.device)?;
        let (s, sn, _) = operand(src, ls, &c.device)?;
        // SAFETY: as above; the sizes were checked against the world by the caller.
        w(unsafe {
            match self.kind {
                Kind::ReduceScatter => c.nccl.reduce_scatter(s, d, dn, dtype, c.comm, c.stream()),
                Kind::AllGather => c.nccl.all_gather(s, d, sn, dtype, c.comm, c.stream()),
                _ => Err(anyhow::anyhow!("not a two-tensor collective")),
            }
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
    if whole.elem_count() != block.elem_count() * size {
        bail!(
            "{what}: {} elements are not {size} blocks of {}",
            whole.elem_count(),
            block.elem_count()
        );
    }
    Ok(())
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
        Ok(t.inplace_op1(&self.op(Kind::AllReduce))?)
    }

    fn reduce_scatter_sum(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        check_blocks("reduce-scatter", src, dst, self.world, &self.device)?;
        Ok(dst.inplace_op2(src, &self.op(Kind::ReduceScatter))?)
    }

    fn all_gather(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        check_blocks("all-gather", dst, src, self.world, &self.device)?;
        Ok(dst.inplace_op2(src, &self.op(Kind::AllGather))?)
    }

    fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        check("broadcast", t, &self.device)?;
        if root >= self.world {
            bail!("broadcast: root {root} is not a rank of {}", self.world);
        }
        Ok(t.inplace_op1(&self.op(Kind::Broadcast(root)))?)
    }

    fn barrier(&self) -> Result<()> {
        let t = Tensor::zeros(1, DType::F32, &Device::Cuda(self.device.clone()))?;
        t.inplace_op1(&self.op(Kind::AllReduce))?;
        self.sync().context("barrier")
    }

    fn all_reduce_f64(&self, v: &mut [f64]) -> Result<()> {
        if v.is_empty() {
            return Ok(());
        }
        let t = Tensor::from_slice(v, v.len(), &Device::Cuda(self.device.clone()))?;
        t.inplace_op1(&self.op(Kind::AllReduce))?;
        self.sync().context("summing host values")?;
        v.copy_from_slice(&t.to_vec1::<f64>()?);
        Ok(())
    }
}
