//! Packing samples into rows of exactly `seq_len` tokens. Each row keeps its document
//! boundaries (positions restart at every document, so the model's attention stays inside each
//! one); the tail of a row is padding, a separate pseudo-document with no loss. A document is
//! never split across rows (samples longer than `seq_len` are cut or dropped before packing, by
//! the configured overflow policy).

use super::sample::Sample;
use super::sample_ref::{Held, SampleRef};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How samples are assigned to rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PackStrategy {
    /// Fill one row in arrival order; start a new row when the next sample does not fit.
    Greedy,
    /// Collect `window` samples, then place them longest first, each into the fullest row it
    /// still fits (best-fit decreasing); emit the rows in the order they were opened.
    BestFit { window: usize },
}

/// One packed row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedRow {
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// Per token: is it a training target.
    pub mask: Vec<bool>,
    /// Lengths of the real documents, in order (padding excluded).
    pub doc_lens: Vec<usize>,
}

impl PackedRow {
    pub fn padding(&self) -> usize {
        self.ids.len() - self.doc_lens.iter().sum::<usize>()
    }
}

/// A row and the samples it was packed from, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    pub row: PackedRow,
    pub sources: Vec<SampleRef>,
}

/// Packs a stream of samples; `push` returns rows (as their documents) as they complete,
/// `finish` the rest; `row` lays a row's documents out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packer<T = Held> {
    pub seq_len: usize,
    pub pad_id: u32,
    pub strategy: PackStrategy,
    /// Samples accepted but not yet in an emitted row.
    pending: Vec<T>,
}

/// A sample in compact, serialisable form (the mask as supervised ranges).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SampleState {
    pub ids: Vec<u32>,
    pub supervised: Vec<(u32, u32)>,
}

impl SampleState {
    /// The sample's ids (moved, not copied) and its mask as ranges.
    pub fn from_sample(s: Sample) -> Self {
        Self::from_parts(s.ids, &s.mask)
    }

    /// From token ids and their per-token mask.
    pub fn from_parts(ids: Vec<u32>, mask: &[bool]) -> Self {
        let mut supervised = vec![];
        let mut start = None;
        for (i, &m) in mask.iter().chain(std::iter::once(&false)).enumerate() {
            match (m, start) {
                (true, None) => start = Some(i as u32),
                (false, Some(a)) => {
                    supervised.push((a, i as u32));
                    start = None;
                }
                _ => {}
            }
        }
        Self { ids, supervised }
    }

    pub fn mask(&self) -> Vec<bool> {
        let mut m = vec![false; self.ids.len()];
        for &(a, b) in &self.supervised {
            m[a as usize..b as usize].fill(true);
        }
        m
    }
}

/// What the packer places: anything with a length in tokens.
pub trait Doc {
    fn tokens(&self) -> usize;
}

impl Doc for Held {
    fn tokens(&self) -> usize {
        self.sample.ids.len()
    }
}

/// A document known only by its length (counting rows without reading tokens).
impl Doc for u32 {
    fn tokens(&self) -> usize {
        *self as usize
    }
}

impl<T: Doc> Packer<T> {
    pub fn new(seq_len: usize, pad_id: u32, strategy: PackStrategy) -> Result<Self> {
        if seq_len == 0 {
            bail!("seq_len must be positive");
        }
        if let PackStrategy::BestFit { window } = strategy {
            if window == 0 {
                bail!("best-fit packing needs a window of at least one sample");
            }
        }
        Ok(Self {
            seq_len,
            pad_id,
            strategy,
            pending: vec![],
        })
    }

    /// Samples accepted but not yet in an emitted row, in arrival order.
    pub fn pending(&self) -> &[T] {
        &self.pending
    }

    /// Puts back the pending samples of a saved state (a fresh packer's only).
    pub fn restore_pending(&mut self, pending: Vec<T>) {
        self.pending = pending;
    }

    /// Adds a sample (at most `seq_len` tokens); returns the documents of the rows this
    /// completes, each in row order.
    pub fn push(&mut self, sample: T) -> Result<Vec<Vec<T>>> {
        if sample.tokens() > self.seq_len {
            bail!(
                "a sample of {} tokens does not fit rows of {}",
                sample.tokens(),
                self.seq_len
            );
        }
        match self.strategy {
            PackStrategy::Greedy => {
                let used: usize = self.pending.iter().map(Doc::tokens).sum();
                let mut out = vec![];
                if used + sample.tokens() > self.seq_len {
                    out.push(std::mem::take(&mut self.pending));
                }
                self.pending.push(sample);
                Ok(out)
            }
            PackStrategy::BestFit { window } => {
                self.pending.push(sample);
                if self.pending.len() >= window {
                    Ok(self.best_fit())
                } else {
                    Ok(vec![])
                }
            }
        }
    }

    /// Every pending sample in (possibly partly filled) rows.
    pub fn finish(&mut self) -> Vec<Vec<T>> {
        match self.strategy {
            PackStrategy::Greedy if self.pending.is_empty() => vec![],
            PackStrategy::Greedy => vec![std::mem::take(&mut self.pending)],
            PackStrategy::BestFit { .. } => self.best_fit(),
        }
    }

    fn best_fit(&mut self) -> Vec<Vec<T>> {
        let mut samples = std::mem::take(&mut self.pending);
        // Longest first; ties keep arrival order (stable sort), so the result is deterministic.
        samples.sort_by_key(|s| std::cmp::Reverse(s.tokens()));
        let mut bins: Vec<(usize, Vec<T>)> = vec![];
        for s in samples {
            let len = s.tokens();
            let best = bins
                .iter()
                .enumerate()
                .filter(|(_, (used, _))| used + len <= self.seq_len)
                .max_by_key(|(i, (used, _))| (*used, std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            match best {
                Some(i) => {
                    bins[i].0 += len;
                    bins[i].1.push(s);
                }
                None => bins.push((len, vec![s])),
            }
        }
        bins.into_iter().map(|(_, docs)| docs).collect()
    }
}

impl Packer<Held> {
    /// The row of `docs` in this order (the rows `push` and `finish` complete; also how a resumed
    /// loader rebuilds the rows it had ready).
    pub fn row(&self, docs: Vec<Held>) -> Packed {
        let mut row = PackedRow {
            ids: Vec::with_capacity(self.seq_len),
            positions: Vec::with_capacity(self.seq_len),
            mask: Vec::with_capacity(self.seq_len),
            doc_lens: vec![],
        };
        for d in docs.iter().map(|d| &d.sample) {
            row.ids.extend_from_slice(&d.ids);
            row.positions.extend(0..d.ids.len() as u32);
            row.mask.extend(d.mask());
            row.doc_lens.push(d.ids.len());
        }
        let pad = self.seq_len.saturating_sub(row.ids.len());
        row.ids.extend(std::iter::repeat_n(self.pad_id, pad));
        row.positions.extend(0..pad as u32);
        row.mask.extend(std::iter::repeat_n(false, pad));
        Packed {
            row,
            sources: docs.iter().map(|d| d.at).collect(),
        }
    }
}
