//! `Linear { weight, bias }` as Hugging Face names it: `y = x · Wᵀ + b` on `[tokens, in]`
//! rows, and its explicit backward, which adds `dyᵀ · x` (and `Σ dy`) into the f32 gradient
//! buffers by GEMM and returns `dy · W`.
//!
//! A stacked `Linear` (`Linear::stacked`) is several Hugging Face projections of the same input
//! (`q_proj`, `k_proj`, `v_proj`) held as one `[Σ out, in]` matrix: one GEMM forward, one for
//! the weight gradient, one for the input gradient.

use super::params::{Init, ParamSource};
use crate::ops::grad_accumulate::{add_column_sums, add_weight_grad};
use crate::ops::matmul::matmul;
use anyhow::{Context, Result};
use candle_core::Tensor;

#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`, where the layer has one.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// `weight` (and `bias` when `bias`) under `src`.
    pub fn new(src: &ParamSource, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: src.get("weight", &[out_dim, in_dim], Init::Normal)?,
            bias: if bias {
                Some(src.get("bias", &[out_dim], Init::Zeros)?)
            } else {
                None
            },
        })
    }

    /// The projections `parts` (`(name, out)`, each with `name.weight` and, when `bias`,
    /// `name.bias` under `src`) stacked into one: its output is theirs side by side, in order.
    pub fn stacked(src: &ParamSource, parts: &[(&str, usize)], in_dim: usize, bias: bool) -> Result<Self> {
        let cols = [in_dim];
        let mut leaves = vec![("weight", &cols[..], Init::Normal)];
        if bias {
            leaves.push(("bias", &[], Init::Zeros));
        }
        let mut t = src.get_stacked(parts, &leaves)?.into_iter();
        Ok(Self {
            weight: t.next().context("stacked weight")?,
            bias: t.next(),
        })
    }

    /// The same parameters outside autograd (shared storage).
    pub fn detached(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            bias: self.bias.as_ref().map(Tensor::detach),
        }
    }

    /// `x [n, in]` → `[n, out]` without the bias (for a caller that fuses the bias add into
    /// what follows the product).
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        Ok(matmul(x, &self.weight.t()?)?)
    }

    /// `x [n, in]` → `[n, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.project(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Adds this layer's parameter gradients for input `x` and output gradient `dy` into
    /// `grads` (the same module built over the f32 gradient buffers) and returns `dx`.
    pub fn backward(&self, x: &Tensor, dy: &Tensor, grads: &Linear) -> Result<Tensor> {
        add_weight_grad(&grads.weight, dy, x, 1.0)?;
        if let Some(db) = &grads.bias {
            add_column_sums(db, dy, 1.0)?;
        }
        Ok(matmul(dy, &self.weight)?)
    }
}
