//! The `extern "C" __global__` entry points of `kernels/*.cu`, parsed from their source: name,
//! `__launch_bounds__`, and each parameter's type and name. Two build scripts include this file
//! as it is (it imports nothing): `build.rs` turns every entry into the typed launch description
//! the Rust launchers fill in (`src/ops/kernel_launch.rs`), and `tests/harness/build.rs` into
//! the trampoline the CPU kernel harness calls. Both paths therefore see one signature, and an
//! argument of the wrong type or in the wrong place is a compile error in either.

/// Element type behind a pointer parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    Bf16,
    F64,
    I64,
    U64,
    U32,
}

/// A by-value parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    I32,
    I64,
    F32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// `const E*` (read) or `E*` (written).
    Ptr {
        elem: Elem,
        mutable: bool,
    },
    Scalar(Scalar),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub ty: ParamType,
    pub name: String,
    /// The C type as written, without `__restrict__` (`const float*`), for the harness casts.
    pub c_type: String,
}

/// One `extern "C" __global__ void __launch_bounds__(B) name(params)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The kernel file's stem (`rms_norm` for `kernels/rms_norm.cu`).
    pub file: String,
    pub name: String,
    /// The `__launch_bounds__` argument as written: a number or a constant of
    /// `src/ops/kernel_constants.rs`.
    pub bounds: String,
    pub params: Vec<Param>,
    /// 1-based line of the declaration.
    pub line: usize,
}

fn elem_of(base: &str) -> Option<Elem> {
    Some(match base {
        "float" => Elem::F32,
        "bf16" | "__nv_bfloat16" => Elem::Bf16,
        "double" => Elem::F64,
        "long long" => Elem::I64,
        "unsigned long long" => Elem::U64,
        "unsigned" | "unsigned int" => Elem::U32,
        _ => return None,
    })
}

fn scalar_of(base: &str) -> Option<Scalar> {
    Some(match base {
        "int" => Scalar::I32,
        "long long" => Scalar::I64,
        "float" => Scalar::F32,
        _ => return None,
    })
}

fn parse_param(text: &str) -> Result<Param, String> {
    let cleaned = text.replace("__restrict__", " ").replace('*', " * ");
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    let name = words
        .pop()
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .ok_or_else(|| format!("parameter `{text}` has no name"))?
        .to_string();
    let is_const = words.first() == Some(&"const");
    if is_const {
        words.remove(0);
    }
    let stars = words.iter().filter(|w| **w == "*").count();
    words.retain(|w| *w != "*");
    let base = words.join(" ");
    let ty = match stars {
        0 => {
            ParamType::Scalar(scalar_of(&base).ok_or_else(|| format!("unsupported scalar type `{base}` of `{name}`"))?)
        }
        1 => ParamType::Ptr {
            elem: elem_of(&base).ok_or_else(|| format!("unsupported element type `{base}` of `{name}`"))?,
            mutable: !is_const,
        },
        _ => return Err(format!("`{name}`: pointers to pointers are not supported")),
    };
    let c_type = match ty {
        ParamType::Ptr { .. } => format!("{}{base}*", if is_const { "const " } else { "" }),
        ParamType::Scalar(_) => base,
    };
    Ok(Param { ty, name, c_type })
}

/// Every entry point of one kernel file, in source order.
pub fn parse(file: &str, text: &str) -> Result<Vec<Entry>, String> {
    const MARK: &str = "extern \"C\" __global__ void";
    let mut out = Vec::new();
    let mut rest = text;
    let mut consumed = 0;
    while let Some(at) = rest.find(MARK) {
        let start = consumed + at;
        let line = text[..start].matches('\n').count() + 1;
        let here = |msg: String| format!("kernels/{file}.cu:{line}: {msg}");
        let after = &text[start + MARK.len()..];
        let open = after.find('(').ok_or_else(|| here("no parameter list".into()))?;
        let head = after[..open].trim();
        let Some(bounds_open) = head.strip_prefix("__launch_bounds__") else {
            return Err(here(format!(
                "`{head}` has no __launch_bounds__: write `extern \"C\" __global__ void __launch_bounds__(BLOCK) name(...)`"
            )));
        };
        let bounds_open = bounds_open.trim_start();
        let close_b = after[open + 1..]
            .find(')')
            .ok_or_else(|| here("unclosed __launch_bounds__".into()))?;
        let bounds = after[open + 1..open + 1 + close_b].trim().to_string();
        if !bounds_open.is_empty() {
            return Err(here(format!(
                "unexpected `{bounds_open}` before __launch_bounds__'s `(`"
            )));
        }
        let after_bounds = &after[open + 1 + close_b + 1..];
        let p_open = after_bounds.find('(').ok_or_else(|| here("no parameter list".into()))?;
        let name = after_bounds[..p_open].trim().to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(here(format!("cannot read the kernel name from `{name}`")));
        }
        let p_close = after_bounds[p_open..]
            .find(')')
            .ok_or_else(|| here(format!("{name}: unclosed parameter list")))?;
        let list = &after_bounds[p_open + 1..p_open + p_close];
        let params = list
            .split(',')
            .map(|p| parse_param(p.trim()).map_err(|e| here(format!("{name}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Entry {
            file: file.to_string(),
            name,
            bounds,
            params,
            line,
        });
        consumed = start + MARK.len();
        rest = &text[consumed..];
    }
    Ok(out)
}

/// Entries `X_f32` and `X_bf16` with the same parameters (up to the storage type) form one
/// group `X`, generic over the storage type; any other entry is a group of its own.
#[derive(Clone, Debug)]
pub struct Group {
    /// The name without the dtype suffix.
    pub base: String,
    pub file: String,
    pub bounds: String,
    /// The parameters; for a generic group, the f32 variant's, with `generic[i]` telling which
    /// pointer parameters take the storage type.
    pub params: Vec<Param>,
    pub generic: Option<Vec<bool>>,
}

/// Groups the entries of all files, or an error naming the pair whose signatures disagree.
pub fn groups(entries: &[Entry]) -> Result<Vec<Group>, String> {
    // An entry without a dtype pair is a group of its own.
    let single = |e: &Entry| Group {
        base: e.name.clone(),
        file: e.file.clone(),
        bounds: e.bounds.clone(),
        params: e.params.clone(),
        generic: None,
    };
    let mut out = Vec::new();
    for e in entries {
        if let Some(base) = e.name.strip_suffix("_bf16") {
            if !entries.iter().any(|f| f.name == format!("{base}_f32")) {
                out.push(single(e));
            }
            continue;
        }
        let pair = e
            .name
            .strip_suffix("_f32")
            .and_then(|base| Some((base, entries.iter().find(|f| f.name == format!("{base}_bf16"))?)));
        let Some((base, b)) = pair else {
            out.push(single(e));
            continue;
        };
        let differ = |why: String| {
            format!(
                "kernels/{}.cu:{} and :{}: {}_f32 and {}_bf16 {why}",
                e.file, e.line, b.line, base, base
            )
        };
        if e.params.len() != b.params.len() || e.bounds != b.bounds {
            return Err(differ("differ in parameter count or launch bounds".into()));
        }
        let mut generic = Vec::new();
        for (p, q) in e.params.iter().zip(&b.params) {
            if p.name != q.name {
                return Err(differ(format!(
                    "name parameters differently (`{}` vs `{}`)",
                    p.name, q.name
                )));
            }
            let g = match (p.ty, q.ty) {
                (a, c) if a == c => false,
                (
                    ParamType::Ptr {
                        elem: Elem::F32,
                        mutable: m1,
                    },
                    ParamType::Ptr {
                        elem: Elem::Bf16,
                        mutable: m2,
                    },
                ) if m1 == m2 => true,
                _ => return Err(differ(format!("disagree on the type of `{}`", p.name))),
            };
            generic.push(g);
        }
        out.push(Group {
            base: base.to_string(),
            file: e.file.clone(),
            bounds: e.bounds.clone(),
            params: e.params.clone(),
            generic: Some(generic),
        });
    }
    Ok(out)
}

/// `rms_norm_fwd` -> `RmsNormFwd`.
pub fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}
