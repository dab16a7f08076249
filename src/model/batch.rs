//! A packed batch as the model sees it: `rows × seq_len` token ids with per-token position ids
//! that restart at each document, flattened to `[rows * seq_len]`, plus the document structure
//! the attention uses and the ids as the embedding reads them (`TokenIndex`).

use crate::ops::{DocSegments, TokenIndex, IGNORE_INDEX};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

#[derive(Clone, Debug)]
pub struct PackedBatch {
    /// `[rows * seq_len]` u32 token ids.
    pub input_ids: Tensor,
    /// Host copies of the ids and position ids (row-major).
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub segments: DocSegments,
    /// The ids for the embedding: `input_ids` is its device copy; sorted by value on the first
    /// backward (the embedding's gradient sums each id's tokens in that order).
    pub tokens: TokenIndex,
}

impl PackedBatch {
    /// Builds a batch from row-major ids and position ids of `rows` rows.
    pub fn new(ids: Vec<u32>, positions: Vec<u32>, rows: usize, device: &Device) -> Result<Self> {
        if rows == 0 || ids.is_empty() || !ids.len().is_multiple_of(rows) {
            bail!(
                "a packed batch needs a positive number of equally long rows; got {} tokens in {rows} rows",
                ids.len()
            );
        }
        if positions.len() != ids.len() {
            bail!("{} position ids for {} tokens", positions.len(), ids.len());
        }
        let seq_len = ids.len() / rows;
        let segments = DocSegments::from_positions(&positions, rows, seq_len)?;
        let tokens = TokenIndex::new(&ids, device)?;
        let input_ids = tokens.device_ids().clone();
        Ok(Self {
            input_ids,
            ids,
            positions,
            segments,
            tokens,
        })
    }

    /// Rows each holding one or more documents given as token lists; every row's documents are
    /// concatenated (positions restarting at each document) and must fill exactly `seq_len`.
    pub fn from_documents(rows: &[Vec<Vec<u32>>], device: &Device) -> Result<Self> {
        let mut ids = vec![];
        let mut positions = vec![];
        let mut seq_len = None;
        for (r, docs) in rows.iter().enumerate() {
            let len: usize = docs.iter().map(Vec::len).sum();
            if *seq_len.get_or_insert(len) != len {
                bail!("row {r} holds {len} tokens, row 0 holds {}", seq_len.unwrap_or(0));
            }
            for doc in docs {
                ids.extend_from_slice(doc);
                positions.extend(0..doc.len() as u32);
            }
        }
        Self::new(ids, positions, rows.len(), device)
    }

    /// A single row holding one document.
    pub fn single(ids: &[u32], device: &Device) -> Result<Self> {
        Self::from_documents(&[vec![ids.to_vec()]], device)
    }

    pub fn rows(&self) -> usize {
        self.segments.rows
    }

    pub fn seq_len(&self) -> usize {
        self.segments.seq_len
    }

    pub fn num_tokens(&self) -> usize {
        self.ids.len()
    }

    /// Next-token targets (i64, `[tokens]`): token t is trained to predict token t+1 when both
    /// are in the same document and `supervised[t+1]` holds (all tokens when `None`); every
    /// other position gets `IGNORE_INDEX`. The last token of a document predicts nothing, so no
    /// loss crosses a document boundary.
    pub fn next_token_targets(&self, supervised: Option<&[bool]>) -> Result<Tensor> {
        let targets = self.next_token_target_ids(supervised)?;
        Ok(Tensor::new(targets.as_slice(), self.input_ids.device())?)
    }

    /// The same targets on the host.
    pub fn next_token_target_ids(&self, supervised: Option<&[bool]>) -> Result<Vec<i64>> {
        let n = self.ids.len();
        if let Some(mask) = supervised {
            if mask.len() != n {
                bail!("loss mask has {} entries for {n} tokens", mask.len());
            }
        }
        let start = &self.segments.start;
        let targets: Vec<i64> = (0..n)
            .map(|t| {
                let next = t + 1;
                let same_doc = next < n && start[next] == start[t];
                if same_doc && supervised.is_none_or(|m| m[next]) {
                    self.ids[next] as i64
                } else {
                    IGNORE_INDEX
                }
            })
            .collect();
        Ok(targets)
    }
}
