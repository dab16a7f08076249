//! Where the modules of the model tree get their tensors: a prefix-scoped source (`pp`, as
//! candle's `VarBuilder`) that records every parameter a module asks for — Hugging Face name,
//! shape, init rule, weight decay — and hands out the tensor under that name. Each module names
//! its weights once, in its `new`; the parameter list (`param_specs`), the loading, the
//! trainable variables and the f32 gradient buffers all follow from building the tree over a
//! different source.
//!
//! Parameters a module multiplies together (q/k/v, gate/up) can be asked for as one *stacked*
//! tensor (`get_stacked`): stored contiguously, so one GEMM computes them all, and handed out
//! under their own Hugging Face names as views of it — saving, loading, the optimizer and the
//! gradient buffers see the names, the layer sees one matrix.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// How a parameter is initialised (transformers' Qwen2 rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    Normal,
    Zeros,
    Ones,
}

/// One parameter of the model: Hugging Face name, shape, init rule, and whether weight decay
/// applies by default (matrices yes; biases and norm weights no).
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub decay: bool,
}

/// What the tensors come from.
enum Origin {
    /// Only the specs are wanted: every tensor is a zero-stride placeholder (no memory).
    Specs,
    /// Named tensors, converted to `dtype`; `trainable` wraps each in a variable.
    Tensors {
        map: BTreeMap<String, Tensor>,
        dtype: DType,
        trainable: bool,
    },
    /// New zero f32 tensors on `device` (gradient buffers).
    Zeros(Device),
}

struct Inner {
    origin: Origin,
    specs: Vec<ParamSpec>,
    params: Vec<(String, Tensor)>,
    vars: Vec<Trainable>,
}

/// One trainable variable and the named parameters it holds: a single parameter, or a stacked
/// group whose members are consecutive row ranges.
#[derive(Clone, Debug)]
pub struct Trainable {
    pub var: Var,
    /// `(Hugging Face name, first row, rows)` of each member, in order.
    pub members: Vec<(String, usize, usize)>,
}

/// A prefix-scoped view of one parameter source.
#[derive(Clone)]
pub struct ParamSource {
    prefix: String,
    inner: Rc<RefCell<Inner>>,
}

/// Everything a source handed out, in the order the modules asked.
pub struct Taken {
    pub specs: Vec<ParamSpec>,
    pub params: Vec<(String, Tensor)>,
    pub vars: Vec<Trainable>,
    /// Named tensors nobody asked for.
    pub unused: Vec<String>,
}

impl ParamSource {
    fn with(origin: Origin) -> Self {
        Self {
            prefix: String::new(),
            inner: Rc::new(RefCell::new(Inner {
                origin,
                specs: Vec::new(),
                params: Vec::new(),
                vars: Vec::new(),
            })),
        }
    }

    /// A source that only records the specs.
    pub fn specs_only() -> Self {
        Self::with(Origin::Specs)
    }

    /// A source over named tensors (converted to `dtype`, contiguous; variables if `trainable`).
    pub fn from_tensors(map: BTreeMap<String, Tensor>, dtype: DType, trainable: bool) -> Self {
        Self::with(Origin::Tensors { map, dtype, trainable })
    }

    /// A source of zero f32 tensors on `device`.
    pub fn zeros(device: &Device) -> Self {
        Self::with(Origin::Zeros(device.clone()))
    }

    /// The source under `name.` (`name` itself at the root).
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            prefix,
            inner: self.inner.clone(),
        }
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The tensor `name` (under this prefix) of `shape`, recorded with its init rule.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = self.full_name(name);
        let mut inner = self.inner.borrow_mut();
        inner.specs.push(spec(&full, shape, init));
        let t = match &mut inner.origin {
            Origin::Specs => placeholder(shape)?,
            Origin::Zeros(device) => Tensor::zeros(shape, DType::F32, device)?,
            Origin::Tensors { map, dtype, .. } => take(map, &full, shape, *dtype)?,
        };
        let rows = shape.first().copied().unwrap_or(1);
        let t = inner.maybe_trainable(t, vec![(full.clone(), 0, rows)])?;
        inner.params.push((full, t.clone()));
        Ok(t)
    }

    /// Parameters stored as one tensor per leaf: for each leaf `(leaf, trailing dims, init)`,
    /// the members `part.leaf` of every `(part, rows)` stacked along dim 0 in the order given
    /// (`[Σ rows, trailing...]`). Each member is recorded (part by part, leaf by leaf: Hugging
    /// Face's order) and handed out under its own name as a row range of the stacked tensor.
    pub fn get_stacked(&self, parts: &[(&str, usize)], leaves: &[(&str, &[usize], Init)]) -> Result<Vec<Tensor>> {
        // Each member's first row in the stacked tensor.
        let firsts: Vec<usize> = parts
            .iter()
            .scan(0, |next, (_, rows)| {
                let first = *next;
                *next += rows;
                Some(first)
            })
            .collect();
        let total: usize = parts.iter().map(|(_, r)| r).sum();
        let name = |part: &str, leaf: &str| self.full_name(&format!("{part}.{leaf}"));
        let shape_of = |rows: usize, trailing: &[usize]| [&[rows][..], trailing].concat();
        let mut inner = self.inner.borrow_mut();
        for (part, rows) in parts {
            for (leaf, trailing, init) in leaves {
                inner
                    .specs
                    .push(spec(&name(part, leaf), &shape_of(*rows, trailing), *init));
            }
        }
        let mut stacked = Vec::with_capacity(leaves.len());
        for (leaf, trailing, _) in leaves {
            let shape = shape_of(total, trailing);
            let t = match &mut inner.origin {
                Origin::Specs => placeholder(&shape)?,
                Origin::Zeros(device) => Tensor::zeros(shape.as_slice(), DType::F32, device)?,
                Origin::Tensors { map, dtype, .. } => {
                    let members = parts
                        .iter()
                        .map(|(part, rows)| take(map, &name(part, leaf), &shape_of(*rows, trailing), *dtype))
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&members, 0)?
                }
            };
            let members = parts
                .iter()
                .zip(&firsts)
                .map(|((part, rows), first)| (name(part, leaf), *first, *rows))
                .collect();
            stacked.push(inner.maybe_trainable(t, members)?);
        }
        for ((part, rows), first) in parts.iter().zip(&firsts) {
            for (t, (leaf, _, _)) in stacked.iter().zip(leaves) {
                inner.params.push((name(part, leaf), t.narrow(0, *first, *rows)?));
            }
        }
        Ok(stacked)
    }

    /// Drops a named tensor that is not a parameter but may be present (a tied `lm_head`).
    pub fn discard(&self, name: &str) {
        if let Origin::Tensors { map, .. } = &mut self.inner.borrow_mut().origin {
            map.remove(name);
        }
    }

    /// What the source handed out (call once the tree is built).
    pub fn taken(self) -> Taken {
        let mut inner = self.inner.borrow_mut();
        let unused = match &inner.origin {
            Origin::Tensors { map, .. } => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        Taken {
            specs: std::mem::take(&mut inner.specs),
            params: std::mem::take(&mut inner.params),
            vars: std::mem::take(&mut inner.vars),
            unused,
        }
    }
}

fn spec(name: &str, shape: &[usize], init: Init) -> ParamSpec {
    ParamSpec {
        name: name.to_string(),
        shape: shape.to_vec(),
        init,
        decay: init == Init::Normal,
    }
}

/// A zero-stride tensor of `shape` (no memory).
fn placeholder(shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::zeros((), DType::F32, &Device::Cpu)?.broadcast_as(shape)?)
}

/// The named tensor `full` out of `map`, checked against `shape`, in `dtype`, contiguous.
fn take(map: &mut BTreeMap<String, Tensor>, full: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let t = map.remove(full).with_context(|| format!("missing tensor {full:?}"))?;
    if t.dims() != shape {
        bail!("tensor {full:?} has shape {:?}, the config implies {shape:?}", t.dims());
    }
    Ok(t.to_dtype(dtype)?.contiguous()?)
}

impl Inner {
    /// `t` itself, or (from a trainable source) a new variable holding it, recorded with the
    /// named members it holds.
    fn maybe_trainable(&mut self, t: Tensor, members: Vec<(String, usize, usize)>) -> Result<Tensor> {
        match &self.origin {
            Origin::Tensors { trainable: true, .. } => {
                let var = Var::from_tensor(&t)?;
                let t = var.as_tensor().clone();
                self.vars.push(Trainable { var, members });
                Ok(t)
            }
            _ => Ok(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_nest_and_specs_record_in_order() {
        let src = ParamSource::specs_only();
        let layer = src.pp("model").pp("layers.3");
        layer.pp("mlp").get("weight", &[4, 2], Init::Normal).unwrap();
        layer.get("bias", &[4], Init::Zeros).unwrap();
        let taken = src.taken();
        let names: Vec<_> = taken.specs.iter().map(|s| (s.name.as_str(), s.decay)).collect();
        assert_eq!(
            names,
            [("model.layers.3.mlp.weight", true), ("model.layers.3.bias", false)]
        );
    }

    #[test]
    fn tensors_are_checked_by_name_and_shape() {
        let mut map = BTreeMap::new();
        map.insert(
            "a".to_string(),
            Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        map.insert("extra".to_string(), Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap());
        let src = ParamSource::from_tensors(map, DType::F32, true);
        let err = src.get("a", &[3, 2], Init::Normal).unwrap_err().to_string();
        assert!(err.contains("\"a\"") && err.contains("[2, 3]"), "{err}");
        assert!(src.get("missing", &[1], Init::Ones).is_err());
        let taken = src.taken();
        assert_eq!(taken.unused, ["extra"]);
    }

    #[test]
    fn stacked_members_keep_their_names_order_and_storage() {
        let rows = |n: usize, v: f32| Tensor::full(v, (n, 2), &Device::Cpu).unwrap();
        let mut map = BTreeMap::new();
        for (name, n, v) in [("a", 3, 1.0), ("b", 1, 2.0), ("c", 2, 3.0)] {
            map.insert(format!("m.{name}.weight"), rows(n, v));
            map.insert(format!("m.{name}.bias"), Tensor::full(-v, n, &Device::Cpu).unwrap());
        }
        let src = ParamSource::from_tensors(map, DType::F32, true);
        let both = src
            .pp("m")
            .get_stacked(
                &[("a", 3), ("b", 1), ("c", 2)],
                &[("weight", &[2], Init::Normal), ("bias", &[], Init::Zeros)],
            )
            .unwrap();
        assert_eq!(both[0].dims(), [6, 2]);
        assert_eq!(both[1].to_vec1::<f32>().unwrap(), [-1., -1., -1., -2., -3., -3.]);
        let taken = src.taken();
        let names: Vec<_> = taken.specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "m.a.weight",
                "m.a.bias",
                "m.b.weight",
                "m.b.bias",
                "m.c.weight",
                "m.c.bias"
            ]
        );
        let views: Vec<_> = taken
            .params
            .iter()
            .map(|(n, t)| (n.as_str(), t.dims().to_vec()))
            .collect();
        assert_eq!(views[2], ("m.b.weight", vec![1, 2]));
        assert_eq!(taken.params[2].1.to_vec2::<f32>().unwrap(), [[2., 2.]]);
        // One variable per stacked leaf, its members as row ranges; the views share its storage.
        assert_eq!(taken.vars.len(), 2);
        let m = &taken.vars[0].members;
        assert_eq!(m[2], ("m.c.weight".to_string(), 4, 2));
        taken.params[4].1.slice_set(&rows(2, 9.0), 0, 0).unwrap();
        let w = taken.vars[0].var.as_tensor().to_vec2::<f32>().unwrap();
        assert_eq!(w[4], [9., 9.]);
        assert_eq!(w[3], [2., 2.]);
    }
}
