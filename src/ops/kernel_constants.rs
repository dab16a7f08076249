//! Constants shared by the CUDA kernels (`kernels/*.cu`) and their launchers, written once.
//! `build.rs` includes this file and passes every constant to nvcc as `-DNAME=VALUE`;
//! `scripts/compile_kernels.sh` reads the same lines (each `pub const NAME: TYPE = DIGITS;`),
//! and `kernels/common.cuh` stops the compile if one is missing. Kept free of crate imports so
//! `build.rs` can include it as it is.

/// Threads per block of every launch (a multiple of 32, at most 1024: the block reductions of
/// `kernels/common.cuh` assume both).
pub const BLOCK: u32 = 256;

/// Elements of one parameter tensor that one block of the multi-tensor AdamW kernel updates.
pub const ADAMW_CHUNK: usize = 65536;

/// Elements one block of the multi-tensor sum-of-squares kernel reduces to one partial sum.
pub const SUMSQ_CHUNK: usize = 65536;

/// Threads of the one-block `sum_partials` launch that adds the gradient-norm partial sums.
pub const SUM_PARTIALS_BLOCK: u32 = 1024;

/// Threads of every flash-attention block: 4 warps, each owning 16 rows of the block's tile.
pub const FLASH_THREADS: u32 = 128;

/// Rows (queries of the forward and dQ passes, keys of the dK/dV pass) one flash-attention
/// block owns.
pub const FLASH_ROWS: usize = 64;

/// Every constant above as `(name, value)`: the `-D` flags nvcc gets.
pub const NVCC_DEFINES: &[(&str, u64)] = &[
    ("BLOCK", BLOCK as u64),
    ("ADAMW_CHUNK", ADAMW_CHUNK as u64),
    ("SUMSQ_CHUNK", SUMSQ_CHUNK as u64),
    ("SUM_PARTIALS_BLOCK", SUM_PARTIALS_BLOCK as u64),
    ("FLASH_THREADS", FLASH_THREADS as u64),
    ("FLASH_ROWS", FLASH_ROWS as u64),
];

/// The `-DNAME=VALUE` flags for nvcc.
pub fn nvcc_flags() -> Vec<String> {
    NVCC_DEFINES.iter().map(|(n, v)| format!("-D{n}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `scripts/compile_kernels.sh` extracts (every `pub const NAME: TYPE = DIGITS;` line)
    /// is exactly the table build.rs passes.
    #[test]
    fn the_script_reads_the_same_defines_as_build_rs() {
        let text = include_str!("kernel_constants.rs");
        let parsed: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("pub const ")?;
                let (name, rest) = rest.split_once(':')?;
                let value = rest.split_once('=')?.1.trim().strip_suffix(';')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect();
        let want: Vec<(String, u64)> = NVCC_DEFINES.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(parsed, want);
        let script =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/compile_kernels.sh")).unwrap();
        assert!(
            script.contains("src/ops/kernel_constants.rs"),
            "compile_kernels.sh reads the constants"
        );
    }
}
