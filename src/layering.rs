//! The module layering, checked: every `crate::` path in a top-level module's source names a
//! module that module may import (the README's table). A back-edge (say `data` naming `model`)
//! fails here.

use std::collections::BTreeSet;
use std::path::Path;

/// Each top-level module and the modules it may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("io", &[]),
    ("config", &[]),
    ("ops", &[]),
    ("device", &["ops"]),
    ("model", &["io", "ops"]),
    ("data", &["io", "config"]),
    ("dist", &[]),
    ("infer", &["io", "ops", "device", "model", "data"]),
    ("arena", &["io", "config", "device", "model", "data", "infer"]),
    ("eval", &["io", "config", "device", "model", "data", "infer", "arena"]),
    ("synth", &["io", "config", "data", "arena", "eval"]),
    (
        "train",
        &[
            "io", "config", "ops", "device", "model", "data", "dist", "infer", "arena",
        ],
    ),
    ("tools", &["io", "config", "ops", "device", "model", "data", "train"]),
    (
        "cli",
        &[
            "io", "config", "ops", "device", "model", "data", "dist", "infer", "arena", "eval", "synth", "train",
            "tools",
        ],
    ),
];

/// The sources of a top-level module: `src/NAME.rs` or every file under `src/NAME/`.
fn sources(src: &Path, name: &str) -> Vec<(String, String)> {
    let file = src.join(format!("{name}.rs"));
    if file.is_file() {
        return vec![(file.display().to_string(), std::fs::read_to_string(&file).unwrap())];
    }
    let mut out = Vec::new();
    let mut dirs = vec![src.join(name)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out
}

/// The top-level modules a source names through `crate::` (comments skipped; grouped
/// `crate::{a, b::c}` imports expanded).
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for part in inner.split(',') {
                    let head = part.trim().split("::").next().unwrap_or("").trim();
                    if !head.is_empty() {
                        out.insert(head.to_string());
                    }
                }
            } else {
                let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                // `crate::name!` is a macro, not a module.
                if !rest[head.len()..].starts_with('!') {
                    out.insert(head);
                }
            }
        }
    }
    out
}

#[test]
fn no_module_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    let mut bad = Vec::new();
    for (module, allowed) in ALLOWED {
        let files = sources(&src, module);
        assert!(!files.is_empty(), "no sources for module {module}");
        for (path, text) in files {
            for named in named_modules(&text) {
                let ok = named == *module || allowed.contains(&named.as_str()) || !modules.contains(named.as_str());
                if !ok {
                    bad.push(format!("{path}: `{module}` imports `crate::{named}`"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "imports against the layering:\n{}", bad.join("\n"));
    // Every top-level module of lib.rs is in the table.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line.strip_prefix("pub mod ").and_then(|l| l.strip_suffix(';')) {
            assert!(
                modules.contains(name),
                "lib.rs declares `{name}`, which the layering table lacks"
            );
        }
    }
}

#[test]
fn grouped_and_macro_paths_are_read() {
    let names =
        named_modules("use crate::{data::x, model};\nlet y = crate::ops::f(); crate::dispatch!(a); // crate::cli");
    assert_eq!(names, ["data", "model", "ops"].iter().map(|s| s.to_string()).collect());
}
