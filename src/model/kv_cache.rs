//! The key/value cache of one sequence during generation, per layer the keys (after RoPE) and
//! values of every token so far, kept where the attention that reads them runs:
//!
//! - **host**: f32 rows `[tokens, kv_heads * head_dim]` for the CPU's `ops::cached_attention`,
//!   grown in place with room reserved up front for at most `RESERVE_TOKENS` tokens (it grows
//!   beyond that as tokens come: a long `max_new_tokens` costs nothing until it is used);
//! - **device**: tensors `[tokens, kv_heads, head_dim]` in the model's dtype on the model's
//!   device (candle-nn's `KvCache`: preallocated, written in place, grown by the same reserve),
//!   so that generating on a GPU copies nothing but the new tokens' logits to the host.

use candle_core::{Device, Result, Tensor};

/// Tokens of room reserved when a cache is made.
pub const RESERVE_TOKENS: usize = 4096;

/// Where a generation's caches live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvPlacement {
    /// f32 rows in host memory (the CPU attention op reads them).
    Host,
    /// Tensors on the model's device.
    Device,
}

impl KvPlacement {
    /// Host memory for a CPU model, the device otherwise.
    pub fn for_device(device: &Device) -> Self {
        if device.is_cpu() {
            KvPlacement::Host
        } else {
            KvPlacement::Device
        }
    }
}

#[derive(Clone, Debug)]
enum Storage {
    Host { keys: Vec<Vec<f32>>, values: Vec<Vec<f32>> },
    Device(Vec<candle_nn::kv_cache::KvCache>),
}

/// Keys and values of one sequence.
#[derive(Clone, Debug)]
pub struct KvCache {
    storage: Storage,
    len: usize,
}

impl Default for KvCache {
    fn default() -> Self {
        Self::new(0, 0, 0)
    }
}

impl KvCache {
    /// An empty host cache for `layers` layers with room for `capacity` tokens of `row` floats
    /// (at most `RESERVE_TOKENS` of them reserved now).
    pub fn new(layers: usize, row: usize, capacity: usize) -> Self {
        let capacity = capacity.min(RESERVE_TOKENS);
        Self {
            storage: Storage::Host {
                keys: (0..layers).map(|_| Vec::with_capacity(row * capacity)).collect(),
                values: (0..layers).map(|_| Vec::with_capacity(row * capacity)).collect(),
            },
            len: 0,
        }
    }

    /// An empty device cache for `layers` layers; its tensors are made, with room for
    /// `capacity` tokens (at most `RESERVE_TOKENS`), on the first append.
    pub fn on_device(layers: usize, capacity: usize) -> Self {
        let capacity = capacity.clamp(1, RESERVE_TOKENS);
        Self {
            storage: Storage::Device(
                (0..layers)
                    .map(|_| candle_nn::kv_cache::KvCache::new(0, capacity))
                    .collect(),
            ),
            len: 0,
        }
    }

    /// A cache placed as `placement` says (`row` = kv heads × head dim, for the host).
    pub fn placed(placement: KvPlacement, layers: usize, row: usize, capacity: usize) -> Self {
        match placement {
            KvPlacement::Host => Self::new(layers, row, capacity),
            KvPlacement::Device => Self::on_device(layers, capacity),
        }
    }

    /// Whether the cache holds device tensors.
    pub fn is_on_device(&self) -> bool {
        matches!(self.storage, Storage::Device(_))
    }

    /// Tokens held (committed after every layer of a forward has appended).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends f32 rows to layer `layer` of a host cache.
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) -> Result<()> {
        match &mut self.storage {
            Storage::Host { keys: k, values: v } => {
                k[layer].extend_from_slice(keys);
                v[layer].extend_from_slice(values);
                Ok(())
            }
            Storage::Device(_) => candle_core::bail!("KvCache::append: this cache lives on the device"),
        }
    }

    /// Keys and values of layer `layer` of a host cache (including rows appended by the
    /// current forward).
    pub fn layer(&self, layer: usize) -> Result<(&[f32], &[f32])> {
        match &self.storage {
            Storage::Host { keys, values } => Ok((&keys[layer], &values[layer])),
            Storage::Device(_) => candle_core::bail!("KvCache::layer: this cache lives on the device"),
        }
    }

    /// Appends `keys`, `values` `[tokens, kv_heads, head_dim]` to layer `layer` of a device
    /// cache and returns all its keys and values so far.
    pub fn append_tensors(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> Result<(Tensor, Tensor)> {
        match &mut self.storage {
            Storage::Device(layers) => layers[layer].append(&keys.contiguous()?, &values.contiguous()?),
            Storage::Host { .. } => candle_core::bail!("KvCache::append_tensors: this cache lives in host memory"),
        }
    }

    /// Records that `n` more tokens are complete in every layer.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }
}
