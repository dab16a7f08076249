//! `Comm` over MPI (rsmpi, `--features mpi`): the CPU backend of data-parallel runs, started by
//! `mpirun` / `srun` (Open MPI, MPICH). Each collective runs in place on the tensor's own host
//! memory through a candle in-place op, so nothing is copied out of the tensor and back.
//! MPI itself has no timeouts: a rank that dies makes the launcher (`mpirun`, `srun`) take the
//! job down, and the trainer's watchdog (`train::data_parallel`, `run.comm_timeout_s`) ends a
//! rank whose collective waits on one that hangs.

use super::comm::Comm;
use anyhow::{bail, Context, Result};
use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Tensor};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};

/// This process's MPI world (MPI is initialised once per process; dropping this finalises it).
pub struct MpiComm {
    world: SimpleCommunicator,
    _universe: Universe,
}

impl MpiComm {
    /// Initialises MPI (only the calling thread makes MPI calls).
    pub fn init() -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .context("MPI was already initialised in this process")?;
        Ok(Self {
            world: universe.world(),
            _universe: universe,
        })
    }
}

/// The host slice of a contiguous f32 CPU storage.
fn slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&d[a..b]),
        _ => candle_core::bail!("{op}: expected a contiguous f32 tensor"),
    }
}

fn slice_mut<'a>(op: &str, s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&mut d[a..b]),
        _ => candle_core::bail!("{op}: expected a contiguous f32 tensor"),
    }
}

enum Kind {
    AllReduce,
    Broadcast(usize),
    ReduceScatter,
    AllGather,
}

/// One collective as a candle in-place op on the tensor's storage.
struct Collective<'a> {
    world: &'a SimpleCommunicator,
    kind: Kind,
}

impl InplaceOp1 for Collective<'_> {
    fn name(&self) -> &'static str {
        "mpi collective"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let buf = slice_mut("mpi collective", storage, layout)?;
        match self.kind {
            Kind::AllReduce => {
                let send = buf.to_vec();
                self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
            }
            Kind::Broadcast(root) => self.world.process_at_rank(root as i32).broadcast_into(buf),
            _ => candle_core::bail!("mpi collective: not a one-tensor collective"),
        }
        Ok(())
    }
}

impl InplaceOp2 for Collective<'_> {
    fn name(&self) -> &'static str {
        "mpi collective"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let dst = slice_mut("mpi collective", s1, l1)?;
        let src = slice("mpi collective", s2, l2)?;
        match self.kind {
            Kind::ReduceScatter => self.world.reduce_scatter_block_into(src, dst, SystemOperation::sum()),
            Kind::AllGather => self.world.all_gather_into(src, dst),
            _ => candle_core::bail!("mpi collective: not a two-tensor collective"),
        }
        Ok(())
    }
}

impl MpiComm {
    fn op(&self, kind: Kind) -> Collective<'_> {
        Collective {
            world: &self.world,
            kind,
        }
    }
}

impl MpiComm {
    /// `b` ← rank `root`'s `b` (a few bytes: the NCCL id of a GPU job MPI started).
    pub fn broadcast_bytes(&self, b: &mut [u8], root: usize) {
        self.world.process_at_rank(root as i32).broadcast_into(b);
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        check_tensor("all-reduce", t)?;
        Ok(t.inplace_op1(&self.op(Kind::AllReduce))?)
    }

    fn reduce_scatter_sum(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        check_blocks("reduce-scatter", src, dst, self.size())?;
        Ok(dst.inplace_op2(src, &self.op(Kind::ReduceScatter))?)
    }

    fn all_gather(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        check_blocks("all-gather", dst, src, self.size())?;
        Ok(dst.inplace_op2(src, &self.op(Kind::AllGather))?)
    }

    fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        check_tensor("broadcast", t)?;
        if root >= self.size() {
            bail!("broadcast: root {root} is not a rank of {}", self.size());
        }
        Ok(t.inplace_op1(&self.op(Kind::Broadcast(root)))?)
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn all_reduce_f64(&self, v: &mut [f64]) -> Result<()> {
        let send = v.to_vec();
        self.world.all_reduce_into(&send[..], v, SystemOperation::sum());
        Ok(())
    }
}

/// Contiguous f32 data of a CPU tensor, for backends that hand host memory to their library.
fn check_tensor(what: &str, t: &Tensor) -> Result<()> {
    if !t.device().is_cpu() || t.dtype() != candle_core::DType::F32 || !t.is_contiguous() {
        bail!(
            "{what}: this communicator takes contiguous f32 CPU tensors, got {:?} {:?} on {:?}",
            t.dtype(),
            t.dims(),
            t.device().location()
        );
    }
    Ok(())
}

/// Both tensors host f32, and `whole` exactly `size` blocks of `block`'s length.
fn check_blocks(what: &str, whole: &Tensor, block: &Tensor, size: usize) -> Result<()> {
    check_tensor(what, whole)?;
    check_tensor(what, block)?;
    super::comm::check_block_sizes(what, whole, block, size)
}
