//! The machine a command runs on: which device (`cpu`, `cuda`, `cuda:N`) and parameter
//! precision (`f32`, `bf16`, `f16`) were asked for, opening the device, describing it, its dense
//! bf16 peak (for MFU), and peak memory (the device's in use, or the process's resident set).
//! Shared by the trainer, `bench` and `selftest`.

use anyhow::Result;
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A device as written in a config or on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    Cpu,
    /// `cuda` (`None`: GPU 0, or the local rank's GPU in a multi-process launch) or `cuda:N`.
    Cuda(Option<usize>),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        let bad = || format!("{name:?} is not `cpu`, `cuda` or `cuda:N`");
        match name {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(None)),
            _ => match name.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(Some(n))),
                _ => Err(bad()),
            },
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(None) => f.write_str("cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl DeviceSpec {
    /// The device of local rank `local_rank` of the `local_world` processes on this node: one
    /// GPU each, so `cuda` means `cuda:LOCAL_RANK`; a fixed `cuda:N` would put them all on one
    /// GPU and is refused (the CPU is shared).
    pub fn for_local_rank(self, local_rank: usize, local_world: usize) -> Result<Self, String> {
        match self {
            Self::Cuda(None) if local_world > 1 => Ok(Self::Cuda(Some(local_rank))),
            Self::Cuda(Some(n)) if local_world > 1 => Err(format!(
                "\"cuda:{n}\" would put all {local_world} processes of this node on one GPU; write \"cuda\" and each \
                 process takes the GPU of its local rank"
            )),
            other => Ok(other),
        }
    }

    /// Opens the device (a CUDA device needs a build with the `cuda` feature).
    pub fn open(&self) -> Result<Device> {
        let ordinal = match self {
            Self::Cpu => return Ok(Device::Cpu),
            Self::Cuda(n) => n.unwrap_or(0),
        };
        #[cfg(not(feature = "cuda"))]
        anyhow::bail!(
            "{:?}: this binary was built without the `cuda` feature (device {ordinal}); rebuild with \
             `cargo build --release --features cuda` (see docs/gpu.md) or run on the CPU (`cpu`)",
            self.to_string()
        );
        #[cfg(feature = "cuda")]
        anyhow::Context::with_context(crate::ops::cuda::open_device(ordinal), || {
            format!("opening CUDA device {ordinal}")
        })
    }
}

/// The dtype parameters are kept in (master weights and optimizer moments are always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(try_from = "String", into = "String")]
pub enum Precision {
    #[value(name = "f32", alias = "float32")]
    F32,
    #[value(name = "bf16", alias = "bfloat16")]
    Bf16,
    #[value(name = "f16", alias = "float16")]
    F16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            other => Err(format!("{other:?} is not one of f32, bf16, f16")),
        }
    }
}

impl TryFrom<String> for Precision {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

impl From<Precision> for String {
    fn from(p: Precision) -> String {
        p.to_string()
    }
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }

    /// The dtype, if the fused kernels of `device` train in it; otherwise why not.
    pub fn trainable_on(self, device: &Device) -> Result<DType, &'static str> {
        if device.is_cpu() && self != Self::F32 {
            return Err("CPU training runs in f32 (the CPU kernels are f32-only)");
        }
        if device.is_cuda() && self == Self::F16 {
            return Err("the CUDA kernels are built for f32 and bf16");
        }
        Ok(self.dtype())
    }
}

/// "cpu", or `name` with the card's name and compute capability.
pub fn describe_device(device: &Device, name: &str) -> String {
    #[cfg(feature = "cuda")]
    if let Some(d) = crate::ops::cuda::cuda_device(device) {
        let card = crate::ops::cuda::device_name(d).unwrap_or_else(|_| "unknown GPU".into());
        let cc = crate::ops::cuda::compute_capability(d).map_or(String::new(), |(a, b)| format!(", sm_{a}{b}"));
        return format!("{name} ({card}{cc})");
    }
    let _ = device;
    name.to_string()
}

/// Dense (no sparsity) bf16 tensor-core peak of known cards, TFLOP/s, from NVIDIA's data sheets.
pub fn dense_bf16_peak_tflops(card: &str) -> Option<(f64, &'static str)> {
    let c = card.to_uppercase();
    let table: &[(&[&str], f64, &str)] = &[
        (&["GH200"], 989.4, "GH200 dense bf16"),
        (&["H200", "NVL"], 835.0, "H200 NVL dense bf16"),
        (&["H200"], 989.4, "H200 SXM dense bf16"),
        (&["H100", "PCIE"], 756.0, "H100 PCIe dense bf16"),
        (&["H100", "NVL"], 835.0, "H100 NVL dense bf16"),
        (&["H100"], 989.4, "H100 SXM dense bf16"),
        (&["H800"], 989.4, "H800 SXM dense bf16"),
        (&["A100"], 312.0, "A100 dense bf16"),
        (&["A800"], 312.0, "A800 dense bf16"),
        (&["L40S"], 362.1, "L40S dense bf16"),
        (&["B200"], 2250.0, "B200 dense bf16"),
    ];
    table
        .iter()
        .find(|(keys, ..)| keys.iter().all(|k| c.contains(k)))
        .map(|&(_, v, s)| (v, s))
}

/// The name of the GPU behind `device` (`None` on the CPU).
pub fn card_name(device: &Device) -> Option<String> {
    #[cfg(feature = "cuda")]
    if let Some(d) = crate::ops::cuda::cuda_device(device) {
        return crate::ops::cuda::device_name(d).ok();
    }
    let _ = device;
    None
}

/// Model FLOPs utilisation: `tokens_per_s × flops_per_token` over the dense bf16 peak of the
/// card behind `device` (`None` on the CPU or an unknown card).
pub fn mfu(device: &Device, tokens_per_s: f64, flops_per_token: f64) -> Option<f64> {
    let (peak, _) = dense_bf16_peak_tflops(&card_name(device)?)?;
    Some(tokens_per_s * flops_per_token / (peak * 1e12))
}

/// The device memory pool's peak since the last call, GiB (`None` on the CPU).
pub fn peak_device_memory_gib(device: &Device) -> Option<f64> {
    #[cfg(feature = "cuda")]
    return crate::ops::cuda::take_peak_memory(device).map(|b| b as f64 / (1u64 << 30) as f64);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        None
    }
}

/// Peak resident set size of this process in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes into the provided struct and has no other precondition.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so the struct is initialised; ru_maxrss is in KiB on Linux.
    let usage = unsafe { usage.assume_init() };
    Some(usage.ru_maxrss as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_and_bad_names_are_explained() {
        for s in ["cpu", "cuda", "cuda:3"] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
        assert_eq!(
            "gpu".parse::<DeviceSpec>().unwrap_err(),
            "\"gpu\" is not `cpu`, `cuda` or `cuda:N`"
        );
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!(
            "fp8".parse::<Precision>().unwrap_err(),
            "\"fp8\" is not one of f32, bf16, f16"
        );
        assert!(Precision::Bf16.trainable_on(&Device::Cpu).is_err());
        assert_eq!(Precision::F32.trainable_on(&Device::Cpu), Ok(DType::F32));
    }

    #[test]
    fn each_local_rank_takes_its_own_gpu() {
        assert_eq!(
            DeviceSpec::Cuda(None).for_local_rank(3, 8),
            Ok(DeviceSpec::Cuda(Some(3)))
        );
        assert_eq!(DeviceSpec::Cuda(None).for_local_rank(0, 1), Ok(DeviceSpec::Cuda(None)));
        assert_eq!(
            DeviceSpec::Cuda(Some(2)).for_local_rank(0, 1),
            Ok(DeviceSpec::Cuda(Some(2)))
        );
        assert!(DeviceSpec::Cuda(Some(0))
            .for_local_rank(1, 2)
            .is_err_and(|e| e.contains("all 2 processes")));
        assert_eq!(DeviceSpec::Cpu.for_local_rank(1, 2), Ok(DeviceSpec::Cpu));
    }

    #[test]
    fn peaks_are_looked_up_by_card_name() {
        assert_eq!(dense_bf16_peak_tflops("NVIDIA H100 80GB HBM3").unwrap().0, 989.4);
        assert_eq!(dense_bf16_peak_tflops("NVIDIA H100 PCIe").unwrap().0, 756.0);
        assert_eq!(dense_bf16_peak_tflops("NVIDIA H200").unwrap().0, 989.4);
        assert_eq!(dense_bf16_peak_tflops("NVIDIA A100-SXM4-80GB").unwrap().0, 312.0);
        assert!(dense_bf16_peak_tflops("cpu").is_none());
    }
}
