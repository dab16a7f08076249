//! OpenBLAS's `cblas_sgemm`, loaded at run time (`--features openblas`): `ops::gemm` sends the
//! large CPU matrix products here. The library is opened on first use (`libopenblas.so.0`,
//! Debian's `libopenblas0`; `SYNCODER_OPENBLAS` names another file). OpenBLAS picks its CPU
//! kernels when it is loaded, from `OPENBLAS_CORETYPE` or its own CPU detection, and the
//! detection of older releases (Debian 12's 0.3.21) falls back to generic SSE3 kernels on CPUs
//! it does not know by model number — virtual machines' masked "Intel Xeon Processor" among
//! them, where that is 3× slower than the `gemm` crate. So unless the user set
//! `OPENBLAS_CORETYPE`, it is set from the CPU's features (AVX-512 → SkylakeX, AVX2 + FMA →
//! Haswell) before the library is opened; `init` does that at program start, while the process
//! has one thread. Without the library everything stays on the `gemm` crate, said once.

use std::ffi::{c_char, c_int, CStr};
use std::sync::OnceLock;

type Sgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);

struct OpenBlas {
    _lib: libloading::Library,
    sgemm: Sgemm,
    core: String,
}

static LIB: OnceLock<Option<OpenBlas>> = OnceLock::new();

/// The kernel set to ask for on this CPU, if OpenBLAS should not decide itself.
fn coretype() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
        {
            return Some("SkylakeX");
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Some("Haswell");
        }
    }
    None
}

/// Chooses OpenBLAS's kernels (see the module doc); call at program start, before any thread.
pub fn init() {
    if std::env::var_os("OPENBLAS_CORETYPE").is_none() {
        if let Some(core) = coretype() {
            std::env::set_var("OPENBLAS_CORETYPE", core);
        }
    }
}

fn open() -> Option<OpenBlas> {
    init();
    let name = std::env::var("SYNCODER_OPENBLAS").unwrap_or_else(|_| "libopenblas.so.0".into());
    // SAFETY: loading OpenBLAS runs its initialisers, which only set up its own thread pool.
    let lib = match unsafe { libloading::Library::new(&name) } {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "syncoder was built with `openblas` but {name} could not be loaded ({e}); matrix products use the \
                 gemm crate (Debian: apt-get install libopenblas0)"
            );
            return None;
        }
    };
    // SAFETY: the symbols have these C signatures in every OpenBLAS (cblas.h, openblas_config.h).
    unsafe {
        let sgemm = *lib.get::<Sgemm>(b"cblas_sgemm\0").ok()?;
        let core = match lib.get::<unsafe extern "C" fn() -> *const c_char>(b"openblas_get_corename\0") {
            Ok(f) => {
                let p = f();
                if p.is_null() {
                    "unknown".to_string()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            }
            Err(_) => "unknown".to_string(),
        };
        Some(OpenBlas { _lib: lib, sgemm, core })
    }
}

/// The kernel set OpenBLAS runs (`None`: not loaded), for benchmark labels.
pub fn core_name() -> Option<&'static str> {
    LIB.get_or_init(open).as_ref().map(|b| b.core.as_str())
}

/// Row-major `c (m×n) = alpha · op(a) · op(b) + beta · c` (`trans_*`: read the operand
/// transposed). `false` when OpenBLAS is not available.
///
/// # Safety
/// The pointers must address matrices of the sizes and leading dimensions given.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
) -> bool {
    const ROW_MAJOR: c_int = 101;
    let t = |x: bool| if x { 112 } else { 111 };
    match LIB.get_or_init(open) {
        Some(lib) => {
            (lib.sgemm)(
                ROW_MAJOR,
                t(trans_a),
                t(trans_b),
                m,
                n,
                k,
                alpha,
                a,
                lda,
                b,
                ldb,
                beta,
                c,
                ldc,
            );
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn openblas_loads_with_the_kernels_of_this_cpu() {
        let core = super::core_name().expect("OpenBLAS could not be loaded (apt-get install libopenblas0)");
        if let Some(want) = super::coretype() {
            assert!(
                core.eq_ignore_ascii_case(want) || std::env::var_os("OPENBLAS_CORETYPE").is_some_and(|c| c != want),
                "OpenBLAS runs {core} kernels on a CPU with {want} features"
            );
        }
        // A product through it: [[1, 2], [3, 4]] · [[5, 6], [7, 8]].
        let (a, b, mut c) = ([1f32, 2., 3., 4.], [5f32, 6., 7., 8.], [0f32; 4]);
        // SAFETY: 2×2 row-major matrices with leading dimension 2.
        let done = unsafe {
            super::sgemm(
                false,
                false,
                2,
                2,
                2,
                1.0,
                a.as_ptr(),
                2,
                b.as_ptr(),
                2,
                0.0,
                c.as_mut_ptr(),
                2,
            )
        };
        assert!(done);
        assert_eq!(c, [19., 22., 43., 50.]);
    }
}
