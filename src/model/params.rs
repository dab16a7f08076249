//! Where the modules of the model tree get their tensors: a prefix-scoped source (`pp`, as
//! candle's `VarBuilder`) that records every parameter a module asks for — Hugging Face name,
//! shape, init rule, weight decay — and hands out the tensor under that name. Each module names
//! its weights once, in its `new`; the parameter list (`param_specs`), the loading, the
//! trainable variables and the f32 gradient buffers all follow from building the tree over a
//! different source.

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
    vars: Vec<(String, Var)>,
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
    pub vars: Vec<(String, Var)>,
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

    /// The tensor `name` (under this prefix) of `shape`, recorded with its init rule.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        let mut inner = self.inner.borrow_mut();
        inner.specs.push(ParamSpec {
            name: full.clone(),
            shape: shape.to_vec(),
            init,
            decay: init == Init::Normal,
        });
        let (t, var) = match &mut inner.origin {
            Origin::Specs => (Tensor::zeros((), DType::F32, &Device::Cpu)?.broadcast_as(shape)?, None),
            Origin::Zeros(device) => (Tensor::zeros(shape, DType::F32, device)?, None),
            Origin::Tensors { map, dtype, trainable } => {
                let t = map.remove(&full).with_context(|| format!("missing tensor {full:?}"))?;
                if t.dims() != shape {
                    bail!("tensor {full:?} has shape {:?}, the config implies {shape:?}", t.dims());
                }
                let t = t.to_dtype(*dtype)?.contiguous()?;
                if *trainable {
                    let var = Var::from_tensor(&t)?;
                    (var.as_tensor().clone(), Some(var))
                } else {
                    (t, None)
                }
            }
        };
        if let Some(var) = var {
            inner.vars.push((full.clone(), var));
        }
        inner.params.push((full, t.clone()));
        Ok(t)
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
}
