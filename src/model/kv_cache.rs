//! The key/value cache of one sequence during generation: per layer, the keys and values of
//! every token so far as f32 rows `[tokens, kv_heads * head_dim]` (keys after RoPE), grown in
//! place with room reserved up front for at most `RESERVE_TOKENS` tokens (it grows beyond that
//! as tokens come: a long `max_new_tokens` costs nothing until it is used).

/// Tokens of room reserved when a cache is made.
pub const RESERVE_TOKENS: usize = 4096;

/// Keys and values of one sequence.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers with room for `capacity` tokens of `row` floats (at
    /// most `RESERVE_TOKENS` of them reserved now).
    pub fn new(layers: usize, row: usize, capacity: usize) -> Self {
        let capacity = capacity.min(RESERVE_TOKENS);
        Self {
            keys: (0..layers).map(|_| Vec::with_capacity(row * capacity)).collect(),
            values: (0..layers).map(|_| Vec::with_capacity(row * capacity)).collect(),
            len: 0,
        }
    }

    /// Tokens held (committed after every layer of a forward has appended).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends rows to layer `layer`.
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        self.keys[layer].extend_from_slice(keys);
        self.values[layer].extend_from_slice(values);
    }

    /// Keys and values of layer `layer` (including rows appended by the current forward).
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Records that `n` more tokens are complete in every layer.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }
}
