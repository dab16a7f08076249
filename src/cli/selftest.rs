//! `syncoder selftest`: validates a node before a long run. Every fused kernel against its CPU
//! twin (forward and backward, f32 and bf16, poisoned outputs) and a short training step; prints
//! a pass/fail table and exits non-zero on any failure. Needs nothing but the binary and the
//! node's driver.

use crate::device::{describe_device, DeviceSpec};
use crate::tools::selftest;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// `cuda`, `cuda:N`, or `cpu` (checks the CPU ops against composed references).
    #[arg(long, default_value = "cuda")]
    pub device: DeviceSpec,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 20261125)]
    pub seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead, check the communicator between the ranks of this launch (every collective on
    /// known values, checked on every rank): `mpirun -np N syncoder selftest --comm`. Needs a
    /// build with `--features mpi`.
    #[arg(long)]
    pub comm: bool,
}

/// `selftest --comm`: the collectives of the launch's communicator.
fn run_comm() -> Result<()> {
    #[cfg(feature = "mpi")]
    {
        use crate::dist::comm::check_collectives;
        use crate::dist::Comm;
        let comm = crate::dist::mpi_comm::MpiComm::init()?;
        let (rank, size) = (comm.rank(), comm.size());
        let done = check_collectives(&comm, 1001).with_context(|| format!("rank {rank} of {size}"))?;
        println!("rank {rank} of {size}: PASS ({})", done.join(", "));
        Ok(())
    }
    #[cfg(not(feature = "mpi"))]
    bail!("this syncoder was built without a communicator: rebuild with `--features mpi` (CPU, MPI)")
}

pub fn run(args: SelftestArgs) -> Result<()> {
    if args.comm {
        return run_comm();
    }
    #[cfg(feature = "cuda")]
    if matches!(args.device, DeviceSpec::Cuda(_)) {
        eprintln!(
            "{}",
            crate::ops::cuda::check_driver().context("checking the NVIDIA driver")?
        );
        // Every kernel output starts as NaN bytes, whatever the allocator hands out.
        crate::ops::cuda::poison_outputs(true);
    }
    let device = args.device.open().context("--device")?;
    let label = describe_device(&device, &args.device.to_string());
    eprintln!("selftest on {label}");
    let results = selftest::run(&device, args.seed)?;
    print!("{}", selftest::table(&results, &label));
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "device": label, "seed": args.seed, "results": results });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        bail!("{failed} of {} selftest checks failed on {label}", results.len());
    }
    Ok(())
}
