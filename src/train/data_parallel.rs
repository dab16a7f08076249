//! Data parallelism in the trainer: which rank this process is, which micro-batches of each
//! step it computes, and the reductions that make W ranks compute the step of one process.
//!
//! Every rank reads the same global stream of micro-batches (the loader is cheap beside the
//! step, and its state is then the same on every rank, so a checkpoint continues at any world
//! size); rank r computes micro-batches r, r + W, r + 2W, … of each step. Each micro-batch's loss
//! is divided by the step's supervised tokens over all ranks (counted on the host before the
//! step, no communication), so after the sum of every rank's f32 gradient buffers (layer by
//! layer as the backward finishes each: `train::grad_reduce`) each rank holds the gradient of
//! the whole step, and the step's loss is Σ loss / Σ supervised tokens
//! over all ranks and micro-batches. Every rank then clips and updates identically (plain data
//! parallelism: the replicated optimizer state makes a checkpoint of rank 0 a checkpoint of the
//! run). Rank 0 alone writes the run directory; the others wait at a barrier after each save so
//! that no rank leaves while a checkpoint is half-written.
//!
//! With `train.optimizer_sharding = "zero1"` the AdamW state is cut over the ranks instead of
//! replicated (`train::zero`), and each rank writes its part of every checkpoint. A watchdog
//! thread ends a rank whose collective waited longer than `run.comm_timeout_s` (MPI has no
//! timeouts), so a rank that hangs ends the job instead of hanging it.
//!
//! Backends (`dist::connect`): one process (`SingleProcess`), NCCL for GPU runs (one process
//! per GPU, started by torchrun, `syncoder launch`, `srun` or `mpirun`), MPI for CPU runs
//! (`--features mpi`, started by `mpirun` / `srun` with MPI).

use crate::dist::comm::SingleProcess;
use crate::dist::{Comm, LaunchEnv, Launcher};
use anyhow::Result;
use candle_core::Device;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// This process's place in the run and its communicator.
pub struct DataParallel {
    comm: Box<dyn Comm>,
    pub rank: usize,
    pub world: usize,
    /// Watches the collectives for a wait past `run.comm_timeout_s` (several ranks only).
    watchdog: Option<Watchdog>,
    /// Started by a launcher (even as a world of one).
    launched: bool,
}

/// A thread that ends this rank when one collective has waited too long: MPI has no timeouts,
/// and a rank that hangs without dying (a stuck filesystem, a deadlocked loader) would otherwise
/// hang every rank for ever. The rank exits with an error naming the collective and the key;
/// its launcher then ends the others.
struct Watchdog {
    /// Milliseconds since the epoch when the current collective began (0: none in progress).
    since_ms: Arc<AtomicU64>,
    what: Arc<Mutex<String>>,
}

impl Watchdog {
    fn spawn(rank: usize, world: usize, timeout: Duration) -> Self {
        let since_ms = Arc::new(AtomicU64::new(0));
        let what = Arc::new(Mutex::new(String::new()));
        let (since, name) = (since_ms.clone(), what.clone());
        let tick = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        std::thread::spawn(move || loop {
            std::thread::sleep(tick);
            let start = since.load(Ordering::SeqCst);
            if start == 0 || now_ms().saturating_sub(start) < timeout.as_millis() as u64 {
                continue;
            }
            let what = name.lock().map(|w| w.clone()).unwrap_or_default();
            eprintln!(
                "error: rank {rank} of {world}: {what} has waited {}s for the other ranks (run.comm_timeout_s = \
                 {}): a rank died or hangs; ending this rank so that the launcher ends the job. The last complete \
                 checkpoint is the one `latest` names",
                timeout.as_secs(),
                timeout.as_secs()
            );
            // _exit: no exit handlers, which could wait on the very MPI call that hangs.
            // SAFETY: _exit has no preconditions and does not return.
            unsafe { libc::_exit(1) }
        });
        Self { since_ms, what }
    }

    fn begin(&self, what: &str) {
        if let Ok(mut w) = self.what.lock() {
            w.clear();
            w.push_str(what);
        }
        self.since_ms.store(now_ms().max(1), Ordering::SeqCst);
    }

    fn end(&self) {
        self.since_ms.store(0, Ordering::SeqCst);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A collective in progress, watched until dropped.
pub struct Watched<'a>(Option<&'a Watchdog>);

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.0 {
            w.end();
        }
    }
}

impl DataParallel {
    /// A run of one process.
    pub fn single() -> Self {
        Self {
            comm: Box::new(SingleProcess),
            rank: 0,
            world: 1,
            watchdog: None,
            launched: false,
        }
    }

    /// The communicator of the launcher that started this process (none: one process), its
    /// collectives — the rendezvous itself first — watched against `timeout`. A launch of one
    /// rank has its communicator too (ZeRO then runs through it: what a one-GPU check of the
    /// multi-GPU path exercises).
    pub fn from_launch(launch: &LaunchEnv, device: &Device, timeout: Duration) -> Result<Self> {
        // One CPU rank needs a communicator only where MPI provides it (ZeRO through it);
        // torchrun's single-process job, or a build without MPI, is just a process.
        let mpi_launch = matches!(launch.launcher, Launcher::OpenMpi | Launcher::Pmi | Launcher::Slurm);
        let lone_cpu = launch.world_size == 1 && device.is_cpu() && !(cfg!(feature = "mpi") && mpi_launch);
        if launch.launcher == Launcher::Single || lone_cpu {
            return Ok(Self::single());
        }
        let watchdog = (launch.world_size > 1).then(|| Watchdog::spawn(launch.rank, launch.world_size, timeout));
        if let Some(w) = &watchdog {
            w.begin("meeting the other ranks (the communicator's rendezvous)");
        }
        let comm = crate::dist::connect::connect(launch, device, timeout);
        if let Some(w) = &watchdog {
            w.end();
        }
        let comm = comm?;
        Ok(Self {
            rank: comm.rank(),
            world: comm.size(),
            comm,
            watchdog,
            launched: true,
        })
    }

    /// Whether a launcher started this process (a world of one included).
    pub fn is_launched(&self) -> bool {
        self.launched
    }

    /// The communicator (ZeRO-1's all-gather of the parameters; watch it with `watch`).
    pub fn comm(&self) -> &dyn Comm {
        self.comm.as_ref()
    }

    /// Marks collectives in progress (`what` names them in the timeout's error) until the
    /// returned guard is dropped.
    pub fn watch(&self, what: &str) -> Watched<'_> {
        if let Some(w) = &self.watchdog {
            w.begin(what);
        }
        Watched(self.watchdog.as_ref())
    }

    /// Rank 0 writes the run directory, metrics and checkpoints.
    pub fn is_writer(&self) -> bool {
        self.rank == 0
    }

    /// Whether micro-batch `i` of a step is computed here.
    pub fn owns(&self, i: usize) -> bool {
        i % self.world == self.rank
    }

    /// Host values ← their sums over the ranks.
    pub fn sum_values(&self, v: &mut [f64]) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let _w = self.watch("summing the step's loss");
        self.comm.all_reduce_f64(v)
    }

    /// The other ranks wait here for rank 0's work of unbounded length (a validation pass, a
    /// CodeArena evaluation), outside the collective timeout.
    pub fn wait_for_writer(&self) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        self.comm.barrier()
    }

    /// Every rank waits here until all have arrived.
    pub fn barrier(&self) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let _w = self.watch("waiting for rank 0's checkpoint (a barrier)");
        self.comm.barrier()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batches_go_round_robin() {
        let dp = |rank, world| DataParallel {
            comm: Box::new(SingleProcess),
            rank,
            world,
            watchdog: None,
            launched: world > 1,
        };
        let owned = |d: &DataParallel| (0..7).filter(|&i| d.owns(i)).collect::<Vec<_>>();
        assert_eq!(owned(&dp(0, 1)), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(owned(&dp(1, 3)), vec![1, 4]);
        assert_eq!(owned(&dp(2, 3)), vec![2, 5]);
        assert!(dp(0, 3).is_writer() && !dp(1, 3).is_writer());
    }

    #[test]
    fn torchrun_on_the_cpu_is_refused_plainly() {
        let env = LaunchEnv {
            launcher: Launcher::Torchrun,
            rank: 1,
            world_size: 2,
            local_rank: 1,
            local_world_size: 2,
            master: Some(("localhost".into(), 29500)),
        };
        let e = DataParallel::from_launch(&env, &Device::Cpu, Duration::from_secs(1))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("mpirun -np N")));
    }
}
