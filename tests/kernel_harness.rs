//! Every kernel of `kernels/*.cu` executed on the CPU through the kernel harness
//! (`tests/harness/`), forward and backward, against its CPU twin in `src/ops/`, on awkward
//! sizes and under three thread orders. The launches are the ops' own launchers
//! (`launch` in `src/ops/<op>.rs`), the same code the GPU runs, driven through `Harness`, a
//! `KernelRunner` whose buffers are the harness's guarded, NaN-poisoned memory.
//!
//! `cargo test kernel_harness` runs exactly these; each kernel file `X.cu` has tests named
//! `kernel_harness::X_...`.

use ::kernel_harness as sim;
use candle_core::{Device, Result, Tensor, Var};
use half::bf16;
use rand::{Rng, SeedableRng};
use sim::{Buffer, Schedule};
use syncoder::ops::kernel_launch::{
    check_launch, DevPtr, DevPtrMut, KernelArgs, KernelElem, KernelFloat, KernelRunner, LaunchDims,
};

/// Runs launches through the harness with one thread schedule.
struct Harness {
    schedule: Schedule,
}

impl KernelRunner for Harness {
    type Buf<T: KernelElem> = Buffer<T>;

    fn alloc<T: KernelElem>(&self, n: usize) -> Result<Buffer<T>> {
        Ok(Buffer::poisoned(
            n,
            &format!("launcher allocation of {n} x {}", std::any::type_name::<T>()),
        ))
    }

    fn upload<T: KernelElem>(&self, data: &[T]) -> Result<Buffer<T>> {
        Ok(Buffer::from_slice(
            data,
            &format!("launcher upload of {} x {}", data.len(), std::any::type_name::<T>()),
        ))
    }

    fn addr<T: KernelElem>(&self, buf: &Buffer<T>) -> u64 {
        buf.addr()
    }

    fn launch(&self, args: &dyn KernelArgs, dims: LaunchDims) -> Result<()> {
        check_launch(args, dims)?;
        let bits: Vec<u64> = args.values().iter().map(|v| v.to_bits()).collect();
        sim::launch(
            &args.name(),
            dims.grid,
            dims.block,
            dims.shared_bytes,
            &bits,
            self.schedule,
        )
        .map_err(candle_core::Error::Msg)
    }
}

const SCHEDULES: [Schedule; 3] = [Schedule::Forward, Schedule::Reverse, Schedule::Shuffled(0x5eed)];

fn randn(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Sum of uniforms: roughly normal, cheap, deterministic.
            let s: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
            s * scale * 1.7
        })
        .collect()
}

/// A storage type under test: its values as the kernel stores them and back.
trait Storage: KernelFloat {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    /// Elementwise tolerance relative to the largest reference magnitude.
    const TOL: f32;
}
impl Storage for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    const TOL: f32 = 2e-5;
}
impl Storage for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    const TOL: f32 = 1.6e-2;
}

/// Values rounded to the storage type (what the kernel reads) and the buffer holding them.
fn stored<T: Storage>(x: &[f32], label: &str) -> (Vec<f32>, Buffer<T>) {
    let s: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
    (s.iter().map(|v| v.to_f32()).collect(), Buffer::from_slice(&s, label))
}

fn input<T: Copy>(b: &Buffer<T>) -> DevPtr<T> {
    DevPtr::new(b.addr(), 0)
}

fn widen<T: Storage>(b: &Buffer<T>) -> Vec<f32> {
    b.to_vec().into_iter().map(|v| v.to_f32()).collect()
}

/// Every element within `tol` of the reference, relative to the reference's largest
/// magnitude (each element of a bf16 output is one rounding of an f32 value); NaN (poison that
/// was never overwritten, or an unwritten shared value) always fails.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            !g.is_nan(),
            "{what}: element {i} is NaN (never written, or computed from poison)"
        );
        let e = (g - w).abs() / scale;
        if e > worst.1 {
            worst = (i, e);
        }
    }
    assert!(
        worst.1 <= tol,
        "{what}: element {} is {} where the twin gives {} (error {:.2e} of the scale {scale}, tolerance {tol:.1e})",
        worst.0,
        got[worst.0],
        want[worst.0],
        worst.1
    );
}

fn cpu(x: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(x.to_vec(), shape, &Device::Cpu).unwrap()
}

fn vec_of(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

mod kernel_harness {
    use super::*;
    use syncoder::ops::attention::{composed_attention, varlen_causal_attention, DocSegments};
    use syncoder::ops::{
        embedding as emb, flash_attention as fa, linear_cross_entropy, rms_norm as rms, rope as rp, swiglu as sw,
    };

    // ---- rms_norm.cu ----

    fn rms_norm_case<T: Storage>(rows: usize, h: usize) {
        let eps = 1e-6;
        let (x, xb) = stored::<T>(&randn(rows * h, 1.0, 1), "x");
        let (w, wb) = stored::<T>(&randn(h, 0.5, 2).iter().map(|v| 1.0 + v).collect::<Vec<_>>(), "w");
        let (g, gb) = stored::<T>(&randn(rows * h, 1.0, 3), "dy");
        let (d, db) = stored::<T>(&randn(rows * h, 0.3, 4), "delta");
        // The twin: the CPU op, forward and (through autograd) backward.
        let xv = Var::from_tensor(&cpu(&x, &[rows, h])).unwrap();
        let wv = Var::from_tensor(&cpu(&w, &[h])).unwrap();
        let y = rms::rms_norm(xv.as_tensor(), wv.as_tensor(), eps).unwrap();
        let grads = (&y * cpu(&g, &[rows, h]))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (want_dx, want_dw) = (vec_of(grads.get(&xv).unwrap()), vec_of(grads.get(&wv).unwrap()));
        let (s, y2) = rms::add_rms_norm(&cpu(&x, &[rows, h]), &cpu(&d, &[rows, h]), &cpu(&w, &[h]), eps).unwrap();
        for schedule in SCHEDULES {
            let r = Harness { schedule };
            let tag = format!("{} rows {rows} h {h} {schedule:?}", T::SUFFIX);
            let out = rms::launch::fwd(&r, input(&xb), input(&wb), rows, h, eps as f32).unwrap();
            assert_close(&format!("rms_norm_fwd {tag}"), &widen(&out), &vec_of(&y), T::TOL);
            let out = rms::launch::add_fwd(&r, input(&xb), input(&db), input(&wb), rows, h, eps as f32).unwrap();
            let got = widen(&out);
            assert_close(
                &format!("add_rms_norm_fwd (sum) {tag}"),
                &got[..rows * h],
                &vec_of(&s),
                T::TOL,
            );
            assert_close(
                &format!("add_rms_norm_fwd (norm) {tag}"),
                &got[rows * h..],
                &vec_of(&y2),
                T::TOL,
            );
            let out = rms::launch::bwd(&r, input(&xb), input(&wb), input(&gb), rows, h, eps as f32).unwrap();
            let got = widen(&out);
            assert_close(&format!("rms_norm_bwd dx {tag}"), &got[..rows * h], &want_dx, T::TOL);
            assert_close(
                &format!("rms_norm_dw_reduce dw {tag}"),
                &got[rows * h..],
                &want_dw,
                T::TOL,
            );
        }
    }

    #[test]
    fn rms_norm_forward_backward_f32_matches_twin() {
        rms_norm_case::<f32>(37, 300);
    }

    #[test]
    fn rms_norm_forward_backward_bf16_matches_twin() {
        rms_norm_case::<bf16>(5, 1000);
    }

    /// More rows than backward blocks: the grid-stride path real runs take.
    #[test]
    fn rms_norm_backward_strides_over_more_rows_than_blocks() {
        rms_norm_case::<f32>(1100, 40);
    }

    /// The widest hidden size the launcher allows fits the 48 KiB of shared memory with the
    /// static scratch (the harness refuses a launch that does not).
    #[test]
    fn rms_norm_backward_at_the_largest_hidden_size_fits_shared_memory() {
        rms_norm_case::<f32>(2, rms::launch::MAX_HIDDEN);
    }

    // ---- rope.cu ----

    fn rope_case<T: Storage>(n: usize, hq: usize, hkv: usize, d: usize) {
        let heads = rp::QkvHeads { q: hq, kv: hkv };
        let w = (hq + 2 * hkv) * d;
        let positions: Vec<u32> = (0..n as u32).map(|p| (p * 7) % 23).collect();
        let table = rp::RopeTable::new(&positions, d, 1_000_000.0, &Device::Cpu).unwrap();
        let (cos, sin) = (vec_of(&table.cos), vec_of(&table.sin));
        let (x, xb) = stored::<T>(&randn(n * w, 1.0, 5), "qkv");
        let (bias, bb) = stored::<T>(&randn(w, 0.5, 4), "bias");
        let (g, gb) = stored::<T>(&randn(n * w, 1.0, 6), "d[q|k|v]");
        let (cb, sb) = (Buffer::from_slice(&cos, "cos"), Buffer::from_slice(&sin, "sin"));
        let xv = Var::from_tensor(&cpu(&x, &[n, w])).unwrap();
        let bv = Var::from_tensor(&cpu(&bias, &[w])).unwrap();
        let y = rp::check::qkv_rope_flat(xv.as_tensor(), bv.as_tensor(), &table, heads).unwrap();
        let grads = (&y * cpu(&g, &[n * w])).unwrap().sum_all().unwrap().backward().unwrap();
        let want_dx = vec_of(grads.get(&xv).unwrap());
        // dq, dk, dv as three pointers into the one gradient buffer.
        let (qn, kn) = (n * hq * d, n * hkv * d);
        let at = |offset: usize| DevPtr::<T>::new(gb.addr(), offset);
        for schedule in SCHEDULES {
            let r = Harness { schedule };
            let tag = format!("{} [{n}x({hq}+{hkv}+{hkv})x{d}] {schedule:?}", T::SUFFIX);
            let out = rp::launch::fwd(&r, input(&xb), input(&bb), input(&cb), input(&sb), n, heads, d).unwrap();
            assert_close(&format!("qkv_rope_fwd {tag}"), &widen(&out), &vec_of(&y), T::TOL);
            let out = rp::launch::bwd(&r, at(0), at(qn), at(qn + kn), input(&cb), input(&sb), n, heads, d).unwrap();
            assert_close(&format!("qkv_rope_bwd {tag}"), &widen(&out), &want_dx, T::TOL);
        }
    }

    #[test]
    fn rope_forward_backward_f32_matches_twin() {
        rope_case::<f32>(29, 4, 2, 80);
    }

    #[test]
    fn rope_forward_backward_bf16_matches_twin() {
        rope_case::<bf16>(17, 3, 1, 64);
    }

    // ---- swiglu.cu ----

    fn swiglu_case<T: Storage>(rows: usize, w: usize) {
        let n = rows * 2 * w;
        let (gu, gub) = stored::<T>(&randn(n, 2.0, 7), "gate|up");
        let (dy, dyb) = stored::<T>(&randn(rows * w, 1.0, 9), "dy");
        let guv = Var::from_tensor(&cpu(&gu, &[rows, 2 * w])).unwrap();
        let y = sw::swiglu(guv.as_tensor()).unwrap();
        let grads = (&y * cpu(&dy, &[rows, w]))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let want_dgu = vec_of(grads.get(&guv).unwrap());
        for schedule in SCHEDULES {
            let r = Harness { schedule };
            let tag = format!("{} [{rows}x2x{w}] {schedule:?}", T::SUFFIX);
            let out = sw::launch::fwd(&r, input(&gub), rows, w).unwrap();
            assert_close(&format!("swiglu_fwd {tag}"), &widen(&out), &vec_of(&y), T::TOL);
            let out = sw::launch::bwd(&r, input(&gub), input(&dyb), rows, w).unwrap();
            assert_close(&format!("swiglu_bwd {tag}"), &widen(&out), &want_dgu, T::TOL);
        }
    }

    #[test]
    fn swiglu_forward_backward_f32_matches_twin() {
        swiglu_case::<f32>(67, 1_001);
    }

    #[test]
    fn swiglu_forward_backward_bf16_matches_twin() {
        swiglu_case::<bf16>(3, 343);
    }

    // ---- cross_entropy.cu ----

    fn cross_entropy_case<T: Storage>(rows: usize, v: usize) {
        let (logits, _) = stored::<T>(&randn(rows * v, 3.0, 10), "logits");
        let mut targets: Vec<i64> = (0..rows as i64).map(|i| (i * 7919 + 13) % v as i64).collect();
        targets[1] = linear_cross_entropy::IGNORE_INDEX;
        targets[rows - 1] = v as i64 - 1;
        targets[2] = v as i64; // outside the vocabulary: loss -1, zero gradient
        let tb = Buffer::from_slice(&targets, "targets");
        // The twin, row by row (its error for the bad target is what the kernel's -1 reports).
        let mut want_grad = logits.clone();
        let mut want_loss = Vec::new();
        for (row, &t) in want_grad.chunks_mut(v).zip(&targets) {
            match linear_cross_entropy::cross_entropy_row(row, t, 0.37) {
                Ok(l) => want_loss.push(l),
                Err(_) => {
                    row.fill(0.0);
                    want_loss.push(-1.0);
                }
            }
        }
        for schedule in SCHEDULES {
            let r = Harness { schedule };
            let tag = format!("{} [{rows}x{v}] {schedule:?}", T::SUFFIX);
            let (_, lb) = stored::<T>(&logits, "logits (in place)");
            let loss = linear_cross_entropy::launch::cross_entropy_in_place(
                &r,
                DevPtrMut::<T>::new(lb.addr(), 0),
                input(&tb),
                rows,
                v,
                0.37,
            )
            .unwrap();
            assert_close(&format!("cross_entropy loss {tag}"), &loss.to_vec(), &want_loss, 2e-5);
            assert_close(
                &format!("cross_entropy gradient {tag}"),
                &widen(&lb),
                &want_grad,
                T::TOL,
            );
        }
    }

    #[test]
    fn cross_entropy_f32_matches_twin_with_ignored_and_bad_targets() {
        cross_entropy_case::<f32>(13, 1000);
    }

    #[test]
    fn cross_entropy_bf16_matches_twin_with_ignored_and_bad_targets() {
        cross_entropy_case::<bf16>(6, 777);
    }

    // ---- adamw.cu ----

    /// Gradients stored as `G`, parameters written back as `P`, launched by `run`.
    fn adamw_case<G: Storage, P: Storage>(
        run: impl Fn(&Harness, &[syncoder::ops::adamw::AdamWEntry], &syncoder::ops::adamw::AdamWStep),
    ) {
        use syncoder::ops::adamw::{adamw_cpu, AdamWEntry, AdamWStep, MULTI_TENSOR_CHUNK};
        let sizes = [1usize, MULTI_TENSOR_CHUNK + 5, 3000];
        let h = AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 3,
            grad_scale: 0.7,
        };
        for schedule in SCHEDULES {
            let r = Harness { schedule };
            let mut bufs = Vec::new();
            let mut entries = Vec::new();
            let mut want = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let seed = 20 + i as u64 * 5;
                let master = randn(n, 1.0, seed);
                let m = randn(n, 0.01, seed + 1);
                let v: Vec<f32> = randn(n, 0.001, seed + 2).iter().map(|x| x * x).collect();
                let (grad, gb) = stored::<G>(&randn(n, 0.1, seed + 3), "grad");
                let wd = if i % 2 == 0 { 0.1 } else { 0.0 };
                let (mb, mmb, vb) = (
                    Buffer::from_slice(&master, "master"),
                    Buffer::from_slice(&m, "exp_avg"),
                    Buffer::from_slice(&v, "exp_avg_sq"),
                );
                let pb = Buffer::<P>::poisoned(n, "param");
                let (mut wm, mut wmm, mut wv) = (master.clone(), m.clone(), v.clone());
                adamw_cpu(&mut wm, &mut wmm, &mut wv, &grad, &AdamWStep { weight_decay: wd, ..h });
                entries.push(AdamWEntry {
                    master: mb.addr(),
                    m: mmb.addr(),
                    v: vb.addr(),
                    grad: gb.addr(),
                    param: pb.addr(),
                    len: n,
                    decay: (1.0 - h.lr * wd) as f32,
                });
                want.push((wm, wmm, wv));
                bufs.push((mb, mmb, vb, gb, pb));
            }
            run(&r, &entries, &h);
            for (i, ((mb, mmb, vb, _, pb), (wm, wmm, wv))) in bufs.iter().zip(&want).enumerate() {
                let tag = format!(
                    "{} grads, {} params, tensor {i} ({} elements) {schedule:?}",
                    G::SUFFIX,
                    P::SUFFIX,
                    sizes[i]
                );
                assert_close(&format!("adamw master {tag}"), &mb.to_vec(), wm, 1e-6);
                assert_close(&format!("adamw exp_avg {tag}"), &mmb.to_vec(), wmm, 1e-6);
                assert_close(&format!("adamw exp_avg_sq {tag}"), &vb.to_vec(), wv, 1e-6);
                let rounded: Vec<f32> = mb.to_vec().iter().map(|&x| P::from_f32(x).to_f32()).collect();
                assert_eq!(widen(pb), rounded, "adamw param write-back {tag}");
            }
        }
    }

    #[test]
    fn adamw_multi_f32_matches_twin() {
        adamw_case::<f32, f32>(|r, e, h| syncoder::ops::adamw::launch::adamw_multi::<_, f32>(r, e, h).unwrap());
    }

    #[test]
    fn adamw_multi_bf16_matches_twin_and_writes_back_rounded_params() {
        adamw_case::<bf16, bf16>(|r, e, h| syncoder::ops::adamw::launch::adamw_multi::<_, bf16>(r, e, h).unwrap());
    }

    #[test]
    fn adamw_multi_mixed_reads_f32_grads_and_writes_back_bf16_params() {
        adamw_case::<f32, bf16>(|r, e, h| syncoder::ops::adamw::launch::adamw_multi_mixed(r, e, h).unwrap());
    }

    // ---- grad_norm.cu ----

    fn grad_norm_case<T: Storage>() {
        use syncoder::ops::grad_norm::{launch, sum_squares_cpu};
        let sizes = [3usize, 65_536, 65_541, 140_000];
        let data: Vec<(Vec<f32>, Buffer<T>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| stored::<T>(&randn(n, 1.0, 40 + i as u64), "gradient"))
            .collect();
        let want: f64 = data.iter().map(|(x, _)| sum_squares_cpu(x)).sum();
        let table: Vec<(u64, usize)> = data.iter().map(|(x, b)| (b.addr(), x.len())).collect();
        for schedule in SCHEDULES {
            let r = Harness { schedule };
            let out = launch::sum_squares::<_, T>(&r, &table).unwrap().unwrap();
            let got = out.to_vec()[0];
            let err = (got - want).abs() / want;
            assert!(
                err < 1e-12,
                "grad_norm sum_squares_multi + sum_partials {}: {got} vs {want} ({schedule:?})",
                T::SUFFIX
            );
        }
    }

    #[test]
    fn grad_norm_f32_matches_twin() {
        grad_norm_case::<f32>();
    }

    #[test]
    fn grad_norm_bf16_matches_twin() {
        grad_norm_case::<bf16>();
    }

    // ---- the harness itself ----

    /// Every entry point of every kernel file is compiled into the harness, and every kernel
    /// file has tests here named after it.
    #[test]
    fn harness_covers_every_kernel_file_and_entry() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels");
        let this = include_str!("kernel_harness.rs");
        let mut files = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "cu") {
                files += 1;
                let stem = p.file_stem().unwrap().to_string_lossy().to_string();
                assert!(
                    this.contains(&format!("fn {stem}_")),
                    "kernels/{stem}.cu has no kernel_harness::{stem}_* test"
                );
                let text = std::fs::read_to_string(&p).unwrap();
                let declared = text.matches("extern \"C\" __global__").count();
                let compiled = sim::ENTRIES.iter().filter(|e| e.file == stem).count();
                assert!(declared > 0, "kernels/{stem}.cu declares no entry point");
                assert_eq!(
                    declared, compiled,
                    "kernels/{stem}.cu: entry points compiled into the harness"
                );
            }
        }
        assert!(files >= 6, "found {files} kernel files");
    }

    /// A deadlock (a barrier only some threads reach) is reported, not hung on; a launch with
    /// the wrong argument count is refused.
    #[test]
    fn harness_reports_misuse_instead_of_hanging() {
        let out = Buffer::<f32>::poisoned(4, "out");
        let err = sim::launch("sum_partials", 1, 64, 0, &[0, 0], Schedule::Forward).unwrap_err();
        assert!(err.contains("arguments"), "{err}");
        // sum_partials with n = 0 reads nothing and writes out[0] = 0.
        let partials = Buffer::<f64>::poisoned(1, "partials");
        sim::launch(
            "sum_partials",
            1,
            64,
            0,
            &[partials.addr(), 0, out.addr()],
            Schedule::Forward,
        )
        .unwrap();
        let err = sim::launch("no_such_kernel", 1, 32, 0, &[], Schedule::Forward).unwrap_err();
        assert!(err.contains("no kernel entry"), "{err}");
    }

    // ---- embedding.cu ----

    /// The lookup and its gradient against the CPU twin (`ops::embedding`, its backward by
    /// autograd): repeated ids, absent ids (zero rows), more vocabulary rows than the grid's
    /// blocks (`MAX_BLOCKS`, the grid-stride path); identical bits under every schedule (the
    /// per-id sums have a fixed order).
    fn embedding_case<T: Storage>(vocab: usize, h: usize, n: usize) {
        let ids: Vec<u32> = (0..n).map(|i| ((i * 7919) % 61 * 17 % vocab) as u32).collect();
        let index = syncoder::ops::TokenIndex::new(&ids, &Device::Cpu).unwrap();
        let (w, wb) = stored::<T>(&randn(vocab * h, 1.0, 31), "w");
        let (g, gb) = stored::<T>(&randn(n * h, 1.0, 32), "dy");
        let wv = Var::from_tensor(&cpu(&w, &[vocab, h])).unwrap();
        let y = syncoder::ops::embedding(wv.as_tensor(), &index).unwrap();
        let grads = (&y * cpu(&g, &[n, h])).unwrap().sum_all().unwrap().backward().unwrap();
        let want_dw = vec_of(grads.get(&wv).unwrap());
        let grad = index.grad_index(vocab).unwrap();
        let host = |t: &Tensor| Buffer::from_slice(&t.to_vec1::<u32>().unwrap(), "index");
        let (idb, ob, sb, slb) = (
            host(index.device_ids()),
            host(&grad.order),
            host(&grad.seg),
            host(&grad.slot),
        );
        let mut first: Option<Vec<f32>> = None;
        for schedule in SCHEDULES {
            let r = Harness { schedule };
            let tag = format!("{} [{n} of {vocab}x{h}] {schedule:?}", T::SUFFIX);
            let out = emb::launch::fwd(&r, input(&wb), input(&idb), n, h).unwrap();
            assert_close(&format!("embedding_fwd {tag}"), &widen(&out), &vec_of(&y), T::TOL);
            let dw = emb::launch::bwd(&r, input(&gb), input(&ob), input(&sb), input(&slb), vocab, h).unwrap();
            let got = widen(&dw);
            assert_close(&format!("embedding_bwd {tag}"), &got, &want_dw, T::TOL);
            // Added into an f32 buffer holding something already (the tied output projection's
            // gradient): absent rows keep their values, present rows get the twin's exact sums.
            let base = randn(vocab * h, 1.0, 33);
            let acc = Buffer::from_slice(&base, "dw (f32 buffer)");
            let dw_ptr = DevPtrMut::<f32>::new(acc.addr(), 0);
            emb::launch::bwd_add(&r, input(&gb), input(&ob), input(&sb), input(&slb), dw_ptr, vocab, h).unwrap();
            let twin = cpu(&base, &[vocab, h]);
            emb::add_embedding_grad(&twin, &cpu(&g, &[n, h]), &index).unwrap();
            let (got_add, want_add) = (acc.to_vec(), vec_of(&twin));
            assert!(
                got_add.iter().zip(&want_add).all(|(a, b)| a.to_bits() == b.to_bits()),
                "embedding_bwd_add {tag}: differs from the twin (max |diff| {})",
                got_add
                    .iter()
                    .zip(&want_add)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max)
            );
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "embedding_bwd {tag}: the bits differ between schedules"
                ),
            }
        }
    }

    #[test]
    fn embedding_forward_backward_f32_matches_twin() {
        embedding_case::<f32>(emb::launch::MAX_BLOCKS + 7, 70, 333);
    }

    #[test]
    fn embedding_forward_backward_bf16_matches_twin() {
        embedding_case::<bf16>(emb::launch::MAX_BLOCKS + 476, 24, 129);
    }

    // ---- flash_attention.cu ----

    /// Packed rows of documents (each row's lengths sum to the row length).
    fn doc_segments(rows: &[&[usize]]) -> DocSegments {
        let t: usize = rows[0].iter().sum();
        let positions: Vec<u32> = rows
            .iter()
            .flat_map(|r| {
                assert_eq!(r.iter().sum::<usize>(), t, "every row holds {t} tokens");
                r.iter().flat_map(|&l| 0..l as u32)
            })
            .collect();
        DocSegments::from_positions(&positions, rows.len(), t).unwrap()
    }

    /// What the kernels produced for one case, bit for bit.
    #[derive(PartialEq)]
    struct FlashOutputs {
        o: Vec<u16>,
        lse: Vec<u32>,
        grads: Vec<u16>,
    }

    /// Forward and backward of `kernels/flash_attention.cu` through its launcher on bf16 inputs
    /// with attention logits |s| ~ 16 (q, k ~ N(0, 4²)), against the CPU twin
    /// (`varlen_causal_attention` in f32 on the same rounded values) and the composed attention
    /// in f64, under every thread schedule; the schedules must agree bit for bit (no atomics, no
    /// order-dependent sums).
    fn flash_attention_case(rows: &[&[usize]], hq: usize, hkv: usize, d: usize) {
        let segs = doc_segments(rows);
        let n = segs.len();
        let scale = 1.0 / (d as f64).sqrt();
        let (q, qb) = stored::<bf16>(&randn(n * hq * d, 4.0, 21), "q");
        let (k, kb) = stored::<bf16>(&randn(n * hkv * d, 4.0, 22), "k");
        let (v, vb) = stored::<bf16>(&randn(n * hkv * d, 1.0, 23), "v");
        let (g, gb) = stored::<bf16>(&randn(n * hq * d, 1.0, 24), "dout");
        let starts = Buffer::from_slice(segs.start.as_slice(), "doc_start");
        // The twin, forward and backward.
        let vars: Vec<Var> = [(&q, hq), (&k, hkv), (&v, hkv)]
            .iter()
            .map(|(x, h)| Var::from_tensor(&cpu(x, &[n, *h, d])).unwrap())
            .collect();
        let y = varlen_causal_attention(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
            &segs,
            scale,
        )
        .unwrap();
        let grads = (&y * cpu(&g, &[n, hq, d]))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let twin: Vec<Vec<f32>> = std::iter::once(vec_of(&y))
            .chain(vars.iter().map(|x| vec_of(grads.get(x).unwrap())))
            .collect();
        // The f64 reference, forward and backward.
        let f64s: Vec<Var> = vars
            .iter()
            .map(|x| Var::from_tensor(&x.as_tensor().to_dtype(candle_core::DType::F64).unwrap()).unwrap())
            .collect();
        let y64 = composed_attention(
            f64s[0].as_tensor(),
            f64s[1].as_tensor(),
            f64s[2].as_tensor(),
            &segs,
            scale,
        )
        .unwrap();
        let g64 = cpu(&g, &[n, hq, d]).to_dtype(candle_core::DType::F64).unwrap();
        let grads64 = (&y64 * g64).unwrap().sum_all().unwrap().backward().unwrap();
        let as_f32 = |t: &Tensor| vec_of(&t.to_dtype(candle_core::DType::F32).unwrap());
        let exact: Vec<Vec<f32>> = std::iter::once(as_f32(&y64))
            .chain(f64s.iter().map(|x| as_f32(grads64.get(x).unwrap())))
            .collect();

        let dims = fa::launch::Dims {
            n,
            hq,
            hkv,
            d,
            scale: scale as f32,
        };
        let (nq, nkv) = (n * hq * d, n * hkv * d);
        let mut first: Option<FlashOutputs> = None;
        for schedule in SCHEDULES {
            let r = Harness { schedule };
            let tag = format!("[{n}x{hq}/{hkv}x{d}] {schedule:?}");
            let (o, lse) = fa::launch::fwd(&r, input(&qb), input(&kb), input(&vb), input(&starts), dims).unwrap();
            let packed = fa::launch::bwd(
                &r,
                input(&qb),
                input(&kb),
                input(&vb),
                input(&o),
                input(&gb),
                input(&lse),
                input(&starts),
                dims,
            )
            .unwrap();
            let got = widen(&packed);
            let parts = [
                widen(&o),
                got[..nq].to_vec(),
                got[nq..nq + nkv].to_vec(),
                got[nq + nkv..].to_vec(),
            ];
            for (i, what) in ["output", "dq", "dk", "dv"].iter().enumerate() {
                assert_close(
                    &format!("flash attention {what} vs the twin {tag}"),
                    &parts[i],
                    &twin[i],
                    1e-2,
                );
                assert_close(
                    &format!("flash attention {what} vs f64 {tag}"),
                    &parts[i],
                    &exact[i],
                    1e-2,
                );
            }
            let outputs = FlashOutputs {
                o: o.to_vec().iter().map(|x| x.to_bits()).collect(),
                lse: lse.to_vec().iter().map(|x| x.to_bits()).collect(),
                grads: packed.to_vec().iter().map(|x| x.to_bits()).collect(),
            };
            match &first {
                None => first = Some(outputs),
                Some(f) => assert!(
                    *f == outputs,
                    "flash attention {tag}: the bits differ between schedules"
                ),
            }
        }
    }

    /// Head dim 64, one query head per kv head; a 1-token document first, documents ending
    /// inside a 64-token tile, a document of one token between two others, rows of 131 tokens
    /// (not a multiple of the tile).
    #[test]
    fn flash_attention_d64_mha_documents_inside_tiles() {
        flash_attention_case(&[&[1, 70, 9, 1, 50], &[131]], 2, 2, 64);
    }

    /// Head dim 128 (its own tile sizes in the backward), two query heads per kv head.
    #[test]
    fn flash_attention_d128_gqa2() {
        flash_attention_case(&[&[3, 61, 36, 1]], 4, 2, 128);
    }

    /// Seven query heads per kv head (the dK/dV pass sums over all seven), a long document
    /// spanning three key tiles.
    #[test]
    fn flash_attention_d64_gqa7_long_document() {
        flash_attention_case(&[&[150]], 7, 1, 64);
    }

    /// The launcher refuses what the kernel cannot do instead of launching it.
    #[test]
    fn flash_attention_launcher_refuses_unsupported_shapes() {
        let r = Harness {
            schedule: Schedule::Forward,
        };
        let b = Buffer::<bf16>::poisoned(96 * 4, "x");
        let s = Buffer::<u32>::from_slice(&[0; 4], "starts");
        let dims = |hq, hkv, d| fa::launch::Dims {
            n: 4,
            hq,
            hkv,
            d,
            scale: 1.0,
        };
        let err = fa::launch::fwd(&r, input(&b), input(&b), input(&b), input(&s), dims(1, 1, 96))
            .err()
            .unwrap();
        assert!(err.to_string().contains("head dim 96"), "{err}");
        let err = fa::launch::fwd(&r, input(&b), input(&b), input(&b), input(&s), dims(3, 2, 64))
            .err()
            .unwrap();
        assert!(err.to_string().contains("multiple"), "{err}");
        let odd = DevPtr::<bf16>::new(b.addr(), 1);
        let err = fa::launch::fwd(&r, odd, input(&b), input(&b), input(&s), dims(1, 1, 64))
            .err()
            .unwrap();
        assert!(err.to_string().contains("16-byte aligned"), "{err}");
    }

    // ---- the harness catches what it claims to (tests/harness/sim/selfcheck.cu) ----

    fn run_selfcheck(
        name: &str,
        block: u32,
        out: &Buffer<f32>,
        extra: &[u64],
        schedule: Schedule,
    ) -> std::result::Result<(), String> {
        let mut args = vec![out.addr()];
        args.extend_from_slice(extra);
        sim::launch(name, 1, block, 0, &args, schedule)
    }

    /// With its barrier the shared-memory sum is right under every schedule; without it, the
    /// reader sees values not yet written (NaN poison, or missing terms) under some schedule.
    #[test]
    fn harness_catches_a_missing_barrier() {
        let want = (1..=256).sum::<u32>() as f32;
        for schedule in SCHEDULES {
            let out = Buffer::<f32>::poisoned(1, "out");
            run_selfcheck("selfcheck_sum", 256, &out, &[], schedule).unwrap();
            assert_eq!(out.to_vec()[0], want, "{schedule:?}");
        }
        let wrong = SCHEDULES.iter().filter(|&&schedule| {
            let out = Buffer::<f32>::poisoned(1, "out");
            run_selfcheck("selfcheck_sum_without_barrier", 256, &out, &[], schedule).unwrap();
            out.to_vec()[0] != want
        });
        assert!(wrong.count() >= 1, "no schedule exposed the missing barrier");
    }

    /// Warp shuffles exchange values between the lanes of each warp.
    #[test]
    fn harness_shuffles_within_warps() {
        let out = Buffer::<f32>::poisoned(4, "out");
        run_selfcheck("selfcheck_warp_sum", 128, &out, &[], Schedule::Shuffled(3)).unwrap();
        assert_eq!(out.to_vec(), vec![528.0; 4]);
    }

    /// A barrier only some threads reach is reported (whichever side runs first), not hung on
    /// or silently completed.
    #[test]
    fn harness_reports_a_divergent_barrier() {
        let out = Buffer::<f32>::poisoned(64, "out");
        for schedule in SCHEDULES {
            let err = run_selfcheck("selfcheck_divergent_barrier", 64, &out, &[], schedule).unwrap_err();
            assert!(err.contains("divergent barrier"), "{err}");
        }
    }

    /// An out-of-bounds write aborts the process with the buffer, kernel, block and thread
    /// (checked in a child process: the abort is the point).
    #[test]
    fn harness_aborts_on_an_out_of_bounds_write() {
        if std::env::var_os("SC_HARNESS_OOB_CHILD").is_some() {
            let out = Buffer::<f32>::poisoned(100, "out");
            let _ = run_selfcheck("selfcheck_off_by_one", 64, &out, &[100], Schedule::Forward);
            return;
        }
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kernel_harness::harness_aborts_on_an_out_of_bounds_write",
                "--nocapture",
            ])
            .env("SC_HARNESS_OOB_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(
            !child.status.success(),
            "the out-of-bounds write went unnoticed: {stderr}"
        );
        assert!(
            stderr.contains("selfcheck_off_by_one, block 0, thread 36: out-of-bounds access 0 bytes past the end of `out` (400 bytes)"),
            "{stderr}"
        );
    }

    /// The harness's `ldmatrix` (plain and transposed) and `mma.m16n8k16` give each lane the
    /// elements the PTX ISA's layouts say (written out here independently of the emulation):
    /// ldmatrix register m of lane l holds row l/4, columns 2(l%4), +1 of matrix m (transposed:
    /// column l/4 of rows 2(l%4), +1), matrix m's row i read from lane 8m+i's address; the
    /// accumulator c[e] of lane l is C[l/4 + 8(e/2)][2(l%4) + e%2].
    #[test]
    fn harness_tensor_core_layouts_follow_the_ptx_isa() {
        let a: Vec<bf16> = (0..256)
            .map(|i| bf16::from_f32(((i * 37) % 23) as f32 - 11.0))
            .collect();
        let b: Vec<bf16> = (0..128).map(|i| bf16::from_f32(((i * 11) % 13) as f32 - 6.0)).collect();
        let (ab, bb) = (Buffer::from_slice(&a, "a"), Buffer::from_slice(&b, "b"));
        let out = Buffer::<f32>::poisoned(384, "out");
        sim::launch(
            "selfcheck_tensor_core",
            1,
            32,
            0,
            &[ab.addr(), bb.addr(), out.addr()],
            Schedule::Shuffled(9),
        )
        .unwrap();
        let got = out.to_vec();
        let bits = |x: bf16| x.to_bits() as u32;
        // Element offset of the row whose address lane `lane` gave: a + (lane % 16) * 16 + (lane / 16) * 8.
        let row_at = |lane: usize| (lane % 16) * 16 + (lane / 16) * 8;
        for l in 0..32 {
            let (g, t) = (l / 4, l % 4);
            for m in 0..4 {
                let plain = row_at(8 * m + g);
                let want = bits(a[plain + 2 * t]) | bits(a[plain + 2 * t + 1]) << 16;
                assert_eq!(got[128 + 4 * l + m].to_bits(), want, "ldmatrix lane {l} register {m}");
                let (r0, r1) = (row_at(8 * m + 2 * t), row_at(8 * m + 2 * t + 1));
                let want = bits(a[r0 + g]) | bits(a[r1 + g]) << 16;
                assert_eq!(
                    got[256 + 4 * l + m].to_bits(),
                    want,
                    "ldmatrix.trans lane {l} register {m}"
                );
            }
            for e in 0..4 {
                let (row, col) = (g + 8 * (e / 2), 2 * t + e % 2);
                // A[row][k] = a[row * 16 + k]; B[k][col] = b[col * 16 + k].
                let want: f32 = (0..16)
                    .map(|k| a[row * 16 + k].to_f32() * b[col * 16 + k].to_f32())
                    .sum();
                assert_eq!(got[4 * l + e], want, "mma lane {l} c[{e}] = C[{row}][{col}]");
            }
        }
    }

    /// bf16 conversion in the harness header rounds to nearest even like `half` (and the GPU).
    #[test]
    fn harness_bf16_rounding_matches_half() {
        // rms_norm_fwd_bf16 with w = 1 and one-element rows is x / sqrt(x^2 + eps) rounded;
        // compare the stored bits with half's rounding of the same f32 computation.
        let n = 64;
        let x: Vec<bf16> = (0..n).map(|i| bf16::from_f32(0.37 + i as f32 * 1.13)).collect();
        let xb = Buffer::from_slice(&x, "x");
        let wb = Buffer::from_slice(&[bf16::ONE], "w");
        let r = Harness {
            schedule: Schedule::Forward,
        };
        let y = rms::launch::fwd(&r, input(&xb), input(&wb), n, 1, 0.25).unwrap();
        for (i, (got, xi)) in y.to_vec().iter().zip(&x).enumerate() {
            let xf = xi.to_f32();
            let want = bf16::from_f32(1.0 * (xf * (1.0 / (xf * xf / 1.0 + 0.25).sqrt())));
            assert_eq!(got.to_bits(), want.to_bits(), "element {i}");
        }
    }
}
