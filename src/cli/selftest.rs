//! `syncoder selftest`: validates a node before a long run. Every fused kernel against its CPU
//! twin (forward and backward, f32 and bf16, poisoned outputs) and a short training step; prints
//! a pass/fail table and exits non-zero on any failure. Needs nothing but the binary and the
//! node's driver.

use crate::device::{describe_device, DeviceSpec};
use crate::dist::LaunchEnv;
use crate::tools::selftest;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// `cuda`, `cuda:N`, or `cpu` (checks the CPU ops against composed references). With
    /// --comm: the communicator's device (default `cpu`: MPI; `cuda`: NCCL).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 20261125)]
    pub seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead, check the communicator between the ranks of this launch (every collective on
    /// known values, checked on every rank): `mpirun -np N syncoder selftest --comm` (CPU, MPI),
    /// `syncoder launch --nproc-per-node N -- selftest --comm --device cuda` (NCCL).
    #[arg(long)]
    pub comm: bool,
    /// Instead, check only that the ranks of this launch meet rank 0 and receive its NCCL id
    /// (no GPU needed: where no NCCL library loads, rank 0 sends random bytes instead).
    #[arg(long, conflicts_with = "comm")]
    pub rendezvous: bool,
    /// Seconds to wait for the other ranks.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
}

/// `selftest --comm`: the collectives of the launch's communicator.
fn run_comm(device: DeviceSpec, timeout: Duration) -> Result<()> {
    use crate::dist::comm::check_collectives;
    let launch = LaunchEnv::from_process()?;
    if launch.launcher == crate::dist::Launcher::Single {
        bail!(
            "selftest --comm checks the ranks of a launch, and no launcher started this process: run \
             `mpirun -np N syncoder selftest --comm` (CPU, MPI) or `syncoder launch --nproc-per-node N -- selftest \
             --comm --device cuda` (GPUs, NCCL)"
        );
    }
    let device = device
        .for_local_rank(launch.local_rank, launch.local_world_size)
        .map_err(anyhow::Error::msg)
        .and_then(|d| d.open())
        .context("--device")?;
    let comm = crate::dist::connect::connect(&launch, &device, timeout)?;
    let (rank, size) = (comm.rank(), comm.size());
    let done = check_collectives(comm.as_ref(), 1001, &device).with_context(|| format!("rank {rank} of {size}"))?;
    println!("rank {rank} of {size}: PASS ({})", done.join(", "));
    Ok(())
}

/// `selftest --rendezvous`: rank 0's NCCL id (or random bytes) reaches every rank.
fn run_rendezvous(timeout: Duration) -> Result<()> {
    use sha2::{Digest, Sha256};
    let launch = LaunchEnv::from_process()?;
    let mut source = "random bytes (no NCCL library here)".to_string();
    let id = crate::dist::connect::share_id(
        &launch,
        || match crate::dist::nccl_lib::Nccl::get().and_then(|n| Ok((n.version()?, n.unique_id()?))) {
            Ok(((a, b, c), id)) => {
                source = format!("NCCL {a}.{b}.{c} unique id");
                Ok(id.to_bytes())
            }
            Err(_) => {
                let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
                let h = Sha256::digest(seed.as_bytes());
                Ok(std::array::from_fn(|i| h[i % h.len()] ^ (i as u8)))
            }
        },
        timeout,
    )?;
    let via = match &launch.master {
        Some((host, port)) => format!("{host}:{}", u32::from(*port) + 1),
        None => "MPI".into(),
    };
    let digest = Sha256::digest(id);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    if launch.rank == 0 {
        println!("rank 0 of {}: sent {source} via {via}: {hex}", launch.world_size);
    } else {
        println!(
            "rank {} of {}: received via {via}: {hex}",
            launch.rank, launch.world_size
        );
    }
    Ok(())
}

pub fn run(args: SelftestArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout_s);
    if args.comm {
        return run_comm(args.device.unwrap_or(DeviceSpec::Cpu), timeout);
    }
    if args.rendezvous {
        return run_rendezvous(timeout);
    }
    let device_spec = args.device.unwrap_or(DeviceSpec::Cuda(None));
    #[cfg(feature = "cuda")]
    if matches!(device_spec, DeviceSpec::Cuda(_)) {
        eprintln!(
            "{}",
            crate::ops::cuda::check_driver().context("checking the NVIDIA driver")?
        );
        // Every kernel output starts as NaN bytes, whatever the allocator hands out.
        crate::ops::cuda::poison_outputs(true);
    }
    let device = device_spec.open().context("--device")?;
    let label = describe_device(&device, &device_spec.to_string());
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
