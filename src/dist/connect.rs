//! The communicator of this process's launch: which backend connects the ranks (NCCL for GPU
//! runs, MPI for CPU runs, nothing for one process), and how rank 0's NCCL id reaches the
//! others — through MPI when MPI started the job, else over TCP at `MASTER_ADDR`
//! (`dist::bootstrap`: torchrun, `syncoder launch`, Slurm).

use super::comm::SingleProcess;
use super::{bootstrap, Comm, LaunchEnv, Launcher};
use anyhow::{bail, Result};
use candle_core::Device;
use std::time::Duration;

/// Bytes of an NCCL unique id.
pub const ID_BYTES: usize = super::nccl_lib::UNIQUE_ID_BYTES;

/// The communicator of `launch` for tensors on `device`: every process a launcher started
/// joins one (even a world of one, so that `selftest --comm` checks the real backend); a
/// process no launcher started is a world of one by itself. Waits at most `timeout` for the
/// other ranks.
pub fn connect(launch: &LaunchEnv, device: &Device, timeout: Duration) -> Result<Box<dyn Comm>> {
    if launch.launcher == Launcher::Single {
        return Ok(Box::new(SingleProcess));
    }
    if !device.is_cpu() {
        return nccl(launch, device, timeout);
    }
    match launch.launcher {
        Launcher::OpenMpi | Launcher::Pmi | Launcher::Slurm => mpi(launch),
        _ => bail!(
            "this process was started as {}: CPU data parallelism runs over MPI; start the ranks with \
             `mpirun -np N syncoder train ...` or `srun --mpi=pmix ...` (docs/multi-gpu.md). torchrun and \
             `syncoder launch` start GPU runs (NCCL)",
            launch.describe()
        ),
    }
}

#[cfg(feature = "cuda")]
fn nccl(launch: &LaunchEnv, device: &Device, timeout: Duration) -> Result<Box<dyn Comm>> {
    use super::nccl_lib::{Nccl, UniqueId};
    use anyhow::Context;
    let lib = Nccl::get()?;
    let id = share_id(launch, || Ok(lib.unique_id()?.to_bytes()), timeout)?;
    let comm = super::nccl_comm::NcclComm::join(lib, UniqueId::from_bytes(&id), launch.rank, launch.world_size, device)
        .with_context(|| format!("{}: joining the NCCL communicator ({})", launch.describe(), lib.path()))?;
    Ok(Box::new(comm))
}

#[cfg(not(feature = "cuda"))]
fn nccl(launch: &LaunchEnv, _device: &Device, _timeout: Duration) -> Result<Box<dyn Comm>> {
    bail!(
        "{}: GPU data parallelism needs a build with `--features cuda`",
        launch.describe()
    )
}

#[cfg(feature = "mpi")]
fn mpi(launch: &LaunchEnv) -> Result<Box<dyn Comm>> {
    use anyhow::Context;
    let comm = super::mpi_comm::MpiComm::init().context("starting MPI")?;
    let (rank, world) = (comm.rank(), comm.size());
    if (rank, world) != (launch.rank, launch.world_size) {
        bail!(
            "MPI says rank {rank} of {world}, the launcher's variables {}: start the ranks with the MPI that \
             syncoder was built against (under Slurm, `srun --mpi=pmix ...`: without an MPI plugin every task \
             starts a world of its own)",
            launch.describe()
        );
    }
    Ok(Box::new(comm))
}

#[cfg(not(feature = "mpi"))]
fn mpi(launch: &LaunchEnv) -> Result<Box<dyn Comm>> {
    bail!(
        "this process was started as {}, but this syncoder was built without MPI: rebuild with \
         `--features mpi` (scripts/install_mpi.sh installs Open MPI)",
        launch.describe()
    )
}

/// Rank 0's id (`make` draws it there) on every rank: over TCP when the launcher named a
/// rendezvous (`MASTER_ADDR`, `MASTER_PORT`), else through MPI when MPI started the job.
pub fn share_id(
    launch: &LaunchEnv,
    make: impl FnOnce() -> Result<[u8; ID_BYTES]>,
    timeout: Duration,
) -> Result<[u8; ID_BYTES]> {
    let (rank, world) = (launch.rank, launch.world_size);
    if let Some((host, port)) = &launch.master {
        let port = bootstrap::port_for(*port)?;
        if rank == 0 {
            let id = make()?;
            bootstrap::serve(port, world, &id, timeout)?;
            return Ok(id);
        }
        let got = bootstrap::join(host, port, rank, world, timeout)?;
        return got
            .try_into()
            .map_err(|b: Vec<u8>| anyhow::anyhow!("rank {rank}: rank 0 sent {} bytes, not an NCCL id", b.len()));
    }
    match launch.launcher {
        Launcher::OpenMpi | Launcher::Pmi | Launcher::Slurm => share_id_mpi(launch, make),
        _ => bail!(
            "{}: no MASTER_ADDR and MASTER_PORT to meet rank 0 at: set both (rank 0's host and a free port; the \
             ranks use MASTER_PORT + 1)",
            launch.describe()
        ),
    }
}

#[cfg(feature = "mpi")]
fn share_id_mpi(launch: &LaunchEnv, make: impl FnOnce() -> Result<[u8; ID_BYTES]>) -> Result<[u8; ID_BYTES]> {
    use anyhow::Context;
    let comm = super::mpi_comm::MpiComm::init().context("starting MPI to share the NCCL id")?;
    let mut id = if launch.rank == 0 { make()? } else { [0u8; ID_BYTES] };
    comm.broadcast_bytes(&mut id, 0);
    Ok(id)
}

#[cfg(not(feature = "mpi"))]
fn share_id_mpi(launch: &LaunchEnv, _make: impl FnOnce() -> Result<[u8; ID_BYTES]>) -> Result<[u8; ID_BYTES]> {
    bail!(
        "{}: this syncoder was built without MPI, so the ranks meet over TCP: set MASTER_ADDR (rank 0's host) \
         and MASTER_PORT (a free port; MASTER_PORT + 1 is used) for every rank, or rebuild with `--features mpi`",
        launch.describe()
    )
}
