//! Compiles every `kernels/*.cu` of syncoder as C++ for the CPU, with `sim/cuda_sim.h` forced in
//! front and `sim/` shadowing `<cuda_bf16.h>`, plus `sim/runtime.cpp`; and writes, per kernel
//! entry point (read from the source by the same parser syncoder's `build.rs` uses), a C
//! trampoline `sch_entry_<name>(const uint64_t* args)` that casts each 64-bit slot to the
//! parameter's type and calls the kernel, and the Rust table `ENTRIES` of them. The same for
//! `sim/selfcheck.cu`, the harness's own deliberately broken kernels (its tests).
//!
//! The kernel text is compiled as it is but for one line-preserving rewrite: the two forms of
//! shared-memory declaration, `__shared__ T name[n];` and `extern __shared__ T name[];`, become
//! `SC_SIM_SHARED(T, name, n);` / `SC_SIM_DYNAMIC_SHARED(T, name);` (per-block arrays in
//! guarded, poisoned memory). Any other use of `__shared__` stops the build with its line.

#[path = "../../src/ops/kernel_signatures.rs"]
#[allow(dead_code)]
mod kernel_signatures;

#[path = "../../src/ops/kernel_constants.rs"]
#[allow(dead_code)]
mod kernel_constants;

use std::path::{Path, PathBuf};

/// Rewrites the shared-memory declarations of `text` (see the top of this file).
fn rewrite_shared(file: &str, text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let Some(at) = line.find("__shared__") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let bad = || {
            format!("{file}:{}: the kernel harness reads `__shared__ T name[n];` or `extern __shared__ T name[];` only, got `{}`", i + 1, line.trim())
        };
        let before = line[..at].trim();
        let decl = line[at + "__shared__".len()..].trim();
        let semi = decl.find(';').ok_or_else(bad)?;
        let (decl, rest) = (&decl[..semi], &decl[semi + 1..]);
        let open = decl.find('[').ok_or_else(bad)?;
        let close = decl.rfind(']').ok_or_else(bad)?;
        let size = decl[open + 1..close].trim();
        let mut words: Vec<&str> = decl[..open].split_whitespace().collect();
        let name = words.pop().ok_or_else(bad)?;
        let ty = words.join(" ");
        if ty.is_empty() || !decl[close + 1..].trim().is_empty() {
            return Err(bad());
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let replaced = match before {
            "extern" if size.is_empty() => format!("SC_SIM_DYNAMIC_SHARED({ty}, {name});"),
            "" if !size.is_empty() => format!("SC_SIM_SHARED({ty}, {name}, {size});"),
            _ => return Err(bad()),
        };
        out.push_str(indent);
        out.push_str(&replaced);
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

fn cast(p: &kernel_signatures::Param, i: usize) -> String {
    use kernel_signatures::{ParamType, Scalar};
    match p.ty {
        ParamType::Ptr { .. } => format!("({})(uintptr_t)a[{i}]", p.c_type),
        ParamType::Scalar(Scalar::I32) => format!("(int)(int64_t)a[{i}]"),
        ParamType::Scalar(Scalar::I64) => format!("(long long)a[{i}]"),
        ParamType::Scalar(Scalar::F32) => format!("sc_sim::from_bits<float>(a[{i}] & 0xffffffffull)"),
    }
}

fn main() -> Result<(), String> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest.join("../..").canonicalize().map_err(|e| e.to_string())?;
    let kernels = root.join("kernels");
    let sim = manifest.join("sim");
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let include = out.join("include");
    std::fs::create_dir_all(&include).map_err(|e| e.to_string())?;
    println!("cargo::rerun-if-changed={}", kernels.display());
    println!("cargo::rerun-if-changed={}", sim.display());
    println!(
        "cargo::rerun-if-changed={}",
        root.join("src/ops/kernel_signatures.rs").display()
    );
    println!(
        "cargo::rerun-if-changed={}",
        root.join("src/ops/kernel_constants.rs").display()
    );

    let mut names: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .map_err(|e| format!("{}: {e}", kernels.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let line_directive = |p: &Path| format!("#line 1 \"{}\"\n", p.display());

    // Headers next to the kernels, rewritten the same way, found before the originals.
    for p in names.iter().filter(|p| p.extension().is_some_and(|x| x == "cuh")) {
        let text = rewrite_shared(&p.display().to_string(), &read(p)?)?;
        let dest = include.join(p.file_name().unwrap());
        std::fs::write(&dest, line_directive(p) + &text).map_err(|e| e.to_string())?;
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(&include)
        .include(&sim)
        .include(&kernels)
        .flag("-include")
        .flag(sim.join("cuda_sim.h").display().to_string())
        .flag_if_supported("-Wno-unused-parameter")
        .file(sim.join("runtime.cpp"));
    for (name, value) in kernel_constants::NVCC_DEFINES {
        build.define(name, value.to_string().as_str());
    }
    let mut table = String::from("// Generated by tests/harness/build.rs.\n\nextern \"C\" {\n");
    let mut rows = String::new();
    // The kernels, then the harness's own check kernels (sim/selfcheck.cu).
    let mut sources: Vec<PathBuf> = names
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .cloned()
        .collect();
    sources.push(sim.join("selfcheck.cu"));
    for p in &sources {
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        let text = read(p)?;
        let entries = kernel_signatures::parse(&stem, &text)?;
        let mut src = line_directive(p) + &rewrite_shared(&p.display().to_string(), &text)?;
        src += "\n// Trampolines: one 64-bit slot per parameter.\n";
        for e in &entries {
            let args: Vec<String> = e.params.iter().enumerate().map(|(i, p)| cast(p, i)).collect();
            src += &format!(
                "extern \"C\" void sch_entry_{0}(const uint64_t* a) {{ {0}({1}); }}\n",
                e.name,
                args.join(", ")
            );
            table += &format!("    fn sch_entry_{}(args: *const u64);\n", e.name);
            rows += &format!(
                "    Entry {{ file: \"{stem}\", name: \"{}\", params: {}, func: sch_entry_{} }},\n",
                e.name,
                e.params.len(),
                e.name
            );
        }
        let dest = out.join(format!("{stem}.sim.cpp"));
        std::fs::write(&dest, src).map_err(|e| e.to_string())?;
        build.file(&dest);
    }
    table += "}\n\n/// Every kernel entry point of `kernels/*.cu`.\npub static ENTRIES: &[Entry] = &[\n";
    table += &rows;
    table += "];\n";
    std::fs::write(out.join("entries.rs"), table).map_err(|e| e.to_string())?;
    build.compile("syncoder_kernel_harness");
    Ok(())
}
