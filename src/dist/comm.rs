//! The collectives data parallelism needs, over whatever connects the ranks: `Comm` (in place on
//! contiguous f32 tensors: all-reduce, reduce-scatter, all-gather, broadcast, barrier; and an
//! all-reduce of a few host f64 values), and
//! `check_collectives`, which runs each of them on known values and checks every element on
//! every rank — what `syncoder selftest --comm` runs under a launcher before a long job, and
//! what the tests run over 2 and 3 processes.
//!
//! Backends: `SingleProcess` (a world of one), MPI for CPU runs (`dist::mpi_comm`, `--features
//! mpi`), NCCL for GPU runs (`dist::nccl_comm`, `--features cuda`).

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// One rank's view of the job's communicator. Every call is collective: all ranks make it, in
/// the same order, with the same sizes.
pub trait Comm {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// `t` ← Σ over ranks of `t`, in place.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()>;
    /// `dst` ← this rank's block of Σ over ranks of `src` (`src` has `size` blocks of
    /// `dst`'s length; rank r gets block r).
    fn reduce_scatter_sum(&self, src: &Tensor, dst: &Tensor) -> Result<()>;
    /// `dst` ← every rank's `src`, in rank order (`dst` is `size` times `src`'s length).
    fn all_gather(&self, src: &Tensor, dst: &Tensor) -> Result<()>;
    /// `t` ← rank `root`'s `t`.
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<()>;
    fn barrier(&self) -> Result<()>;
    /// `v` ← Σ over ranks of `v`, in place: a few host values (a step's loss sum, flags), in
    /// f64 so that the loss of a step is the same to the last digit at any world size.
    fn all_reduce_f64(&self, v: &mut [f64]) -> Result<()>;

    /// `all_reduce_sum`, which may return before the sum is done: NCCL runs it on a stream of
    /// its own, overlapping what the device does next (the rest of the backward). `t` is kept
    /// alive and must not be used until `wait_async`. Blocking where the backend has no such
    /// stream (MPI, one process).
    fn all_reduce_sum_async(&self, t: &Tensor) -> Result<()> {
        self.all_reduce_sum(t)
    }

    /// `reduce_scatter_sum` as `all_reduce_sum_async` is to `all_reduce_sum`.
    fn reduce_scatter_sum_async(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        self.reduce_scatter_sum(src, dst)
    }

    /// Every `_async` collective is done, and its results are visible to what runs after.
    fn wait_async(&self) -> Result<()> {
        Ok(())
    }
}

/// `whole` is exactly `size` blocks of `block`'s length (a reduce-scatter's input, an
/// all-gather's output).
pub fn check_block_sizes(what: &str, whole: &Tensor, block: &Tensor, size: usize) -> Result<()> {
    if whole.elem_count() != block.elem_count() * size {
        bail!(
            "{what}: {} elements are not {size} blocks of {}",
            whole.elem_count(),
            block.elem_count()
        );
    }
    Ok(())
}

/// Rank `r`'s test values: `len` elements that differ per rank and per position, small
/// integers so every sum is exact in f32.
fn values(rank: usize, len: usize) -> Vec<f32> {
    (0..len).map(|i| ((rank + 1) * 1000 + i % 997) as f32).collect()
}

fn expect_eq(what: &str, got: &Tensor, want: &[f32]) -> Result<()> {
    let got = got.flatten_all()?.to_vec1::<f32>()?;
    if got.len() != want.len() {
        bail!("{what}: {} elements, expected {}", got.len(), want.len());
    }
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        bail!("{what}: element {i} is {} where {} was expected", got[i], want[i]);
    }
    Ok(())
}

/// Runs every collective of `comm` on `len` elements per rank (an odd length, so nothing
/// divides evenly by accident) in tensors on `dev` and checks the results exactly; returns a
/// line per check.
pub fn check_collectives(comm: &dyn Comm, len: usize, dev: &Device) -> Result<Vec<String>> {
    let (rank, size) = (comm.rank(), comm.size());
    let mut done = Vec::new();

    let t = Tensor::from_vec(values(rank, len), len, dev)?;
    comm.all_reduce_sum(&t)?;
    let sum: Vec<f32> = (0..len).map(|i| (0..size).map(|r| values(r, len)[i]).sum()).collect();
    expect_eq("all-reduce (sum)", &t, &sum)?;
    done.push(format!("all-reduce sum of {len} f32"));

    let src = Tensor::from_vec(values(rank, len * size), len * size, dev)?;
    let dst = Tensor::zeros(len, candle_core::DType::F32, dev)?;
    comm.reduce_scatter_sum(&src, &dst)?;
    let full: Vec<f32> = (0..len * size)
        .map(|i| (0..size).map(|r| values(r, len * size)[i]).sum())
        .collect();
    expect_eq("reduce-scatter (sum)", &dst, &full[rank * len..(rank + 1) * len])?;
    done.push(format!("reduce-scatter sum, {len} f32 per rank"));

    let src = Tensor::from_vec(values(rank, len), len, dev)?;
    let dst = Tensor::zeros(len * size, candle_core::DType::F32, dev)?;
    comm.all_gather(&src, &dst)?;
    let all: Vec<f32> = (0..size).flat_map(|r| values(r, len)).collect();
    expect_eq("all-gather", &dst, &all)?;
    done.push(format!("all-gather, {len} f32 per rank"));

    // From the last rank, so a broadcast that ignores its root is caught.
    let root = size - 1;
    let t = Tensor::from_vec(values(rank, len), len, dev)?;
    comm.broadcast(&t, root)?;
    expect_eq("broadcast", &t, &values(root, len))?;
    done.push(format!("broadcast of {len} f32 from rank {root}"));

    // The overlapped forms: two sums and a reduce-scatter in flight together, then one wait.
    let a = Tensor::from_vec(values(rank, len), len, dev)?;
    let b = Tensor::from_vec(values(rank, len + 2), len + 2, dev)?;
    let src = Tensor::from_vec(values(rank, len * size), len * size, dev)?;
    let dst = Tensor::zeros(len, candle_core::DType::F32, dev)?;
    comm.all_reduce_sum_async(&a)?;
    comm.reduce_scatter_sum_async(&src, &dst)?;
    comm.all_reduce_sum_async(&b)?;
    comm.wait_async()?;
    expect_eq("all-reduce (overlapped)", &a, &sum)?;
    let sum2: Vec<f32> = (0..len + 2)
        .map(|i| (0..size).map(|r| values(r, len + 2)[i]).sum())
        .collect();
    expect_eq("all-reduce (overlapped, second)", &b, &sum2)?;
    expect_eq("reduce-scatter (overlapped)", &dst, &full[rank * len..(rank + 1) * len])?;
    done.push("overlapped all-reduces and reduce-scatter, one wait".into());

    comm.barrier()?;
    done.push("barrier".into());

    let mut v: Vec<f64> = values(rank, 3).into_iter().map(|x| f64::from(x) + 0.25).collect();
    comm.all_reduce_f64(&mut v)?;
    let want: Vec<f64> = (0..3)
        .map(|i| (0..size).map(|r| f64::from(values(r, 3)[i]) + 0.25).sum())
        .collect();
    if v != want {
        bail!("all-reduce (f64 host values): {v:?} where {want:?} was expected");
    }
    done.push("all-reduce sum of 3 f64 host values".into());
    Ok(done)
}

/// The communicator of a run that is one process: every collective is the identity (a
/// reduce-scatter or all-gather over one rank copies its one block).
pub struct SingleProcess;

impl Comm for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _t: &Tensor) -> Result<()> {
        Ok(())
    }

    fn reduce_scatter_sum(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        copy_block("reduce-scatter", src, dst)
    }

    fn all_gather(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        copy_block("all-gather", src, dst)
    }

    fn broadcast(&self, _t: &Tensor, root: usize) -> Result<()> {
        if root != 0 {
            bail!("broadcast: root {root} is not a rank of 1");
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn all_reduce_f64(&self, _v: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

fn copy_block(what: &str, src: &Tensor, dst: &Tensor) -> Result<()> {
    if src.elem_count() != dst.elem_count() {
        bail!(
            "{what}: {} elements into {} over one rank",
            src.elem_count(),
            dst.elem_count()
        );
    }
    Ok(dst.flatten_all()?.slice_set(&src.flatten_all()?.contiguous()?, 0, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_of_one_passes_the_collective_checks() {
        let done = check_collectives(&SingleProcess, 1001, &Device::Cpu).unwrap();
        assert_eq!(done.len(), 7);
    }

    /// A world of one whose all-gather forgets to copy: the check must catch it.
    struct Forgetful;
    impl Comm for Forgetful {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            1
        }
        fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
            SingleProcess.all_reduce_sum(t)
        }
        fn reduce_scatter_sum(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
            SingleProcess.reduce_scatter_sum(src, dst)
        }
        fn all_gather(&self, _src: &Tensor, _dst: &Tensor) -> Result<()> {
            Ok(())
        }
        fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
            SingleProcess.broadcast(t, root)
        }
        fn barrier(&self) -> Result<()> {
            SingleProcess.barrier()
        }
        fn all_reduce_f64(&self, v: &mut [f64]) -> Result<()> {
            SingleProcess.all_reduce_f64(v)
        }
    }

    #[test]
    fn a_collective_that_does_nothing_is_caught() {
        let e = check_collectives(&Forgetful, 7, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("all-gather: element 0"), "{e}");
    }
}
