//! The resumable training-data loader: shards in a seeded order per epoch, records through a
//! seeded shuffle buffer, tokenised with the chat template and loss mask (or read pre-tokenised
//! from prepared shards), packed into rows, grouped into batches.
//!
//! Its state (`loader_state`: epoch, shard and line, RNG position, counters, and references to
//! the samples in the shuffle buffer, the packer and the rows not yet emitted) serialises to
//! JSON; a loader restored from the state taken after batch k re-reads the samples it names and
//! yields exactly the batches k+1, k+2, ... of a loader that never stopped.

use super::pack::{PackStrategy, Packed, PackedRow, Packer, SampleState};
use super::prepared::PreparedShard;
use super::record::Record;
use super::reread::{is_prepared, reread, take};
use super::sample::{Dropped, SampleBuilder};
use super::sample_ref::{Held, RefList, SampleRef};
use super::shard::ShardLines;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

/// What to do with a record that fails validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OnBadRecord {
    /// Stop with an error naming the file and line.
    Fail,
    /// Skip it and count it.
    Skip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    pub seed: u64,
    /// Shuffle the shard order each epoch.
    pub shuffle_shards: bool,
    /// Samples held in the shuffle buffer (1: no shuffling within shards).
    pub shuffle_buffer: usize,
    pub seq_len: usize,
    pub rows_per_batch: usize,
    pub pack: PackStrategy,
    pub pad_id: u32,
    pub on_bad_record: OnBadRecord,
    /// Stop after this many passes over the data (`None`: never).
    pub max_epochs: Option<usize>,
}

/// Counters of everything the loader has read and emitted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderStats {
    pub records: u64,
    pub bad_records: u64,
    pub dropped_too_long: u64,
    pub dropped_no_supervised: u64,
    pub samples: u64,
    pub rows: u64,
    pub row_tokens: u64,
    pub padding_tokens: u64,
    pub supervised_tokens: u64,
}

impl LoaderStats {
    /// Fraction of emitted row tokens that are padding.
    pub fn padding_fraction(&self) -> f64 {
        if self.row_tokens == 0 {
            0.0
        } else {
            self.padding_tokens as f64 / self.row_tokens as f64
        }
    }
}

pub use super::loader_state::{BufferOp, LoaderState, Position, StateDelta};

/// A batch of packed rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub rows: Vec<PackedRow>,
}

/// A position in the data, and the counts of what reading up to it met.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cursor {
    epoch: usize,
    /// Index into the epoch's shard order.
    shard_pos: usize,
    /// Lines (or prepared documents) read from the current shard.
    line: usize,
    /// Samples already taken from the record after `line`, when it gives several
    /// (`data.mask = "per_turn"`); it is read again on resume.
    part: usize,
    exhausted: bool,
    records: u64,
    bad_records: u64,
}

/// A record read ahead of the shuffle buffer and tokenised, with the position after it — or
/// the error reading or tokenising it, raised only when the buffer reaches it (so a bad record
/// stops the loader after the same batch however far ahead it had read).
struct Ahead {
    sample: Result<std::result::Result<Held, Dropped>>,
    after: Cursor,
}

/// Records are read and tokenised this many at a time (in parallel) ahead of the buffer.
const READ_AHEAD: usize = 256;

pub struct Loader {
    cfg: LoaderConfig,
    files: Vec<PathBuf>,
    builder: Arc<SampleBuilder>,
    /// Where the reader is (ahead of `at` by the samples in `ahead`).
    read: Cursor,
    /// The shard order of `read.epoch`.
    order: Vec<usize>,
    reader: Option<Reader>,
    /// Read and tokenised, not yet in the buffer (not part of the state: re-read on resume).
    ahead: VecDeque<Ahead>,
    /// The record whose samples are being taken one by one, when it gives several.
    partial: Option<Partial>,
    /// The position after the last sample that entered the buffer: the state's.
    at: Cursor,
    buffer: Vec<Held>,
    /// The buffer's changes since the last `take_delta` (only when tracking them).
    journal: Option<Vec<BufferOp>>,
    rng: ChaCha8Rng,
    packer: Packer,
    ready: VecDeque<Packed>,
    stats: LoaderStats,
}

/// A shard being read: JSONL lines to tokenise, or a prepared (pre-tokenised) shard.
enum Reader {
    Lines(ShardLines),
    Prepared(PreparedShard),
}

impl Reader {
    /// Opens `path` positioned after `consumed` lines (JSONL) or documents (prepared).
    fn open(path: &std::path::Path, consumed: usize) -> Result<Self> {
        if is_prepared(path) {
            let shard = PreparedShard::open(path)?;
            if consumed > shard.len() {
                bail!(
                    "{}: has {} documents, cannot resume at {consumed}",
                    path.display(),
                    shard.len()
                );
            }
            Ok(Reader::Prepared(shard))
        } else {
            let mut lines = ShardLines::open(path)?;
            lines.skip_to(consumed)?;
            Ok(Reader::Lines(lines))
        }
    }
}

/// What a reader yields, and where: `(file, item)` as a `SampleRef` names it, and for a record
/// which of its samples.
enum Item {
    Record(Record, (usize, u64), usize),
    Sample(SampleState, (usize, u64)),
}

/// A record that gives several samples, some not yet taken (`Cursor::part` says how many are).
struct Partial {
    record: Record,
    at: (usize, u64),
    parts: usize,
}

/// The shard order of an epoch: a function of the seed and the epoch alone.
pub(crate) fn shard_order(cfg: &LoaderConfig, n: usize, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if cfg.shuffle_shards {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_5a4d_0000_0000 ^ epoch as u64);
        order.shuffle(&mut rng);
    }
    order
}

impl Loader {
    pub fn new(cfg: LoaderConfig, files: Vec<PathBuf>, builder: Arc<SampleBuilder>) -> Result<Self> {
        if files.is_empty() {
            bail!("the data source holds no shard files");
        }
        if cfg.shuffle_buffer == 0 || cfg.rows_per_batch == 0 {
            bail!("shuffle_buffer and rows_per_batch must be at least 1");
        }
        if builder.max_seq_len > cfg.seq_len {
            bail!(
                "max_seq_len {} exceeds the packed row length seq_len {}",
                builder.max_seq_len,
                cfg.seq_len
            );
        }
        let packer = Packer::new(cfg.seq_len, cfg.pad_id, cfg.pack)?;
        Ok(Self {
            order: shard_order(&cfg, files.len(), 0),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            files,
            builder,
            read: Cursor::default(),
            reader: None,
            ahead: VecDeque::new(),
            partial: None,
            at: Cursor::default(),
            buffer: vec![],
            journal: None,
            packer,
            ready: VecDeque::new(),
            stats: LoaderStats::default(),
        })
    }

    /// A loader continuing from `state` (taken from a loader with the same config and files).
    pub fn restore(
        cfg: LoaderConfig,
        files: Vec<PathBuf>,
        builder: Arc<SampleBuilder>,
        state: LoaderState,
    ) -> Result<Self> {
        if state.files != files {
            bail!("the data files differ from those of the saved loader state; cannot resume the data order exactly");
        }
        if state.seq_len != cfg.seq_len || state.pack != cfg.pack {
            bail!("packing settings differ from those of the saved loader state");
        }
        let samples = reread(&state.files, state.all_refs(), &builder)
            .context("re-reading the samples the saved loader state names")?;
        let held = |list: &RefList| -> Result<Vec<Held>> {
            list.0.iter().map(|r| Ok(Held::new(*r, take(&samples, r)?))).collect()
        };
        let mut l = Self::new(cfg, files, builder)?;
        let pos = &state.position;
        let word_pos: u128 = pos
            .rng_word_pos
            .parse()
            .context("loader state: rng_word_pos is not a number")?;
        l.rng.set_word_pos(word_pos);
        l.order = shard_order(&l.cfg, l.files.len(), pos.epoch);
        l.at = Cursor {
            epoch: pos.epoch,
            shard_pos: pos.shard_pos,
            line: pos.line,
            part: pos.part,
            exhausted: pos.exhausted,
            records: pos.stats.records,
            bad_records: pos.stats.bad_records,
        };
        l.read = l.at.clone();
        l.buffer = held(&state.buffer)?;
        let pending = held(&pos.pending)?;
        let lens: Vec<usize> = pending.iter().map(|d| d.sample.ids.len()).collect();
        let fits = match l.cfg.pack {
            PackStrategy::Greedy => lens.iter().sum::<usize>() <= l.cfg.seq_len,
            PackStrategy::BestFit { window } => lens.len() < window && lens.iter().all(|&n| n <= l.cfg.seq_len),
        };
        if !fits {
            bail!("the saved loader state's pending samples do not fit its packing settings (corrupt state?)");
        }
        l.packer.restore_pending(pending);
        for row in &pos.ready {
            let docs = held(row)?;
            let len: usize = docs.iter().map(|d| d.sample.ids.len()).sum();
            if len > l.cfg.seq_len {
                bail!(
                    "the saved loader state packs {len} tokens into a row of {}",
                    l.cfg.seq_len
                );
            }
            l.ready.push_back(l.packer.row(docs));
        }
        l.stats = pos.stats.clone();
        Ok(l)
    }

    /// The whole state (O(buffer)): what a checkpoint saves, or the start of a chain of deltas.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            files: self.files.clone(),
            seq_len: self.cfg.seq_len,
            pack: self.cfg.pack,
            buffer: RefList::of(&self.buffer),
            position: self.position(),
        }
    }

    /// Everything of the state but the buffer (small).
    fn position(&self) -> Position {
        Position {
            epoch: self.at.epoch,
            shard_pos: self.at.shard_pos,
            line: self.at.line,
            part: self.at.part,
            rng_word_pos: self.rng.get_word_pos().to_string(),
            pending: RefList::of(self.packer.pending()),
            ready: self.ready.iter().map(|p| RefList(p.sources.clone())).collect(),
            exhausted: self.at.exhausted,
            stats: self.stats.clone(),
        }
    }

    /// From now on, records the shuffle buffer's changes for `take_delta`.
    pub fn track_changes(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The change of the state since the previous call (or since `track_changes`): the
    /// buffer's changes and the position — O(samples moved), whatever the buffer's size.
    pub fn take_delta(&mut self) -> Result<StateDelta> {
        let Some(journal) = self.journal.as_mut() else {
            bail!("take_delta needs track_changes first");
        };
        let ops = std::mem::take(journal);
        Ok(StateDelta {
            ops,
            position: self.position(),
        })
    }

    pub fn stats(&self) -> &LoaderStats {
        &self.stats
    }

    pub fn epoch(&self) -> usize {
        self.at.epoch
    }

    /// The next valid record or prepared sample, moving across shards and epochs; `None` when
    /// the data is done.
    fn next_item(&mut self) -> Result<Option<Item>> {
        if let Some(p) = self.partial.as_ref() {
            let part = self.read.part;
            if part + 1 < p.parts {
                self.read.part += 1;
                return Ok(Some(Item::Record(p.record.clone(), p.at, part)));
            }
            let p = self.partial.take().context("checked above")?;
            self.read.line = p.at.1 as usize;
            self.read.part = 0;
            return Ok(Some(Item::Record(p.record, p.at, part)));
        }
        loop {
            if self.read.exhausted {
                return Ok(None);
            }
            if self.reader.is_none() {
                if self.read.shard_pos >= self.order.len() {
                    self.read.epoch = self.read.epoch.checked_add(1).context("epoch count overflow")?;
                    self.read.shard_pos = 0;
                    self.read.line = 0;
                    if self.cfg.max_epochs.is_some_and(|m| self.read.epoch >= m) {
                        self.read.exhausted = true;
                        return Ok(None);
                    }
                    self.order = shard_order(&self.cfg, self.files.len(), self.read.epoch);
                }
                self.reader = Some(Reader::open(
                    &self.files[self.order[self.read.shard_pos]],
                    self.read.line,
                )?);
            }
            let file = self.order[self.read.shard_pos];
            let reader = self.reader.as_mut().expect("opened above");
            let next = match reader {
                Reader::Lines(lines) => match lines.next() {
                    Some(Ok(l)) => {
                        let before = self.read.line;
                        self.read.line = l.line;
                        if self.read.part == 0 {
                            self.read.records += 1;
                        }
                        match Record::parse(&l.text) {
                            Ok(r) => {
                                let at = (file, l.line as u64);
                                return self.first_part(r, at, before).map(Some);
                            }
                            Err(_) if self.cfg.on_bad_record == OnBadRecord::Skip => {
                                self.read.bad_records += 1;
                                continue;
                            }
                            Err(e) => bail!("{}:{}: {e}", lines.path().display(), l.line),
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None => None,
                },
                Reader::Prepared(shard) if self.read.line < shard.len() => {
                    let sample = shard.get(self.read.line)?;
                    let at = (file, self.read.line as u64);
                    self.read.line += 1;
                    self.read.records += 1;
                    Some((sample, at))
                }
                Reader::Prepared(_) => None,
            };
            match next {
                Some((sample, at)) => return Ok(Some(Item::Sample(sample, at))),
                None => {
                    self.reader = None;
                    self.read.shard_pos += 1;
                    self.read.line = 0;
                }
            }
        }
    }

    /// The first sample not yet taken of record `r`, read at `at` after line `before`: sample 0,
    /// or after a resume in the middle of the record, the sample the cursor names. A record with
    /// more samples to come stays unread in the cursor (a resume reads it again).
    fn first_part(&mut self, r: Record, at: (usize, u64), before: usize) -> Result<Item> {
        let parts = self.builder.parts(&r);
        let part = self.read.part;
        if part >= parts {
            bail!(
                "{}:{}: the saved loader state resumes at sample {part} of this record, which gives {parts} (the \
                 shard or data.mask changed since the checkpoint?)",
                self.files[at.0].display(),
                at.1
            );
        }
        if part + 1 < parts {
            self.read.line = before;
            self.read.part = part + 1;
            self.partial = Some(Partial {
                record: r.clone(),
                at,
                parts,
            });
        } else {
            self.read.part = 0;
        }
        Ok(Item::Record(r, at, part))
    }

    /// Reads up to `n` more records ahead and tokenises them in parallel; false at the end
    /// of the data. Each keeps the position after it, so the order and the state do not
    /// depend on how far ahead the loader has read or on the thread count.
    fn read_ahead(&mut self, n: usize) -> Result<bool> {
        let mut items = Vec::with_capacity(n);
        let mut failed = None;
        while items.len() < n {
            match self.next_item() {
                Ok(Some(item)) => items.push((item, self.read.clone())),
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if items.is_empty() && failed.is_none() {
            return Ok(false);
        }
        let builder = &self.builder;
        let files = &self.files;
        let built: Vec<Ahead> = items
            .into_par_iter()
            .map(|(item, after)| {
                let sample = match item {
                    Item::Sample(s, at) => Ok(Ok((s, at, 0))),
                    Item::Record(r, at, part) => builder
                        .build_part(&r, part)
                        .with_context(|| format!("{}:{}", files[at.0].display(), at.1))
                        .map(|b| b.map(|s| (SampleState::from_sample(s), at, part))),
                };
                let sample = sample.map(|b| {
                    b.map(|(s, (file, item), part)| Held::new(SampleRef::new(file, item, part as u32, &s), s))
                });
                Ahead { sample, after }
            })
            .collect();
        self.ahead.extend(built);
        if let Some(e) = failed {
            self.ahead.push_back(Ahead {
                sample: Err(e),
                after: self.read.clone(),
            });
        }
        Ok(true)
    }

    /// The next sample out of the shuffle buffer, which is first filled up to its size in
    /// read order (records dropped by the length rules are counted and skipped).
    fn next_sample(&mut self) -> Result<Option<Held>> {
        while self.buffer.len() < self.cfg.shuffle_buffer {
            if self.ahead.is_empty() {
                let need = self.cfg.shuffle_buffer - self.buffer.len();
                if !self.read_ahead(need.max(READ_AHEAD))? {
                    // The end: what was read past the last sample (bad records, the epoch's end).
                    self.at = self.read.clone();
                    self.stats.records = self.at.records;
                    self.stats.bad_records = self.at.bad_records;
                    break;
                }
            }
            let a = self.ahead.pop_front().context("read-ahead queue empty after a read")?;
            let sample = a.sample?;
            self.at = a.after;
            self.stats.records = self.at.records;
            self.stats.bad_records = self.at.bad_records;
            match sample {
                Ok(sample) => {
                    self.stats.samples += 1;
                    if let Some(j) = self.journal.as_mut() {
                        j.push(BufferOp::Push(sample.at));
                    }
                    self.buffer.push(sample);
                }
                Err(Dropped::TooLong) => self.stats.dropped_too_long += 1,
                Err(Dropped::NoSupervisedTokens) => self.stats.dropped_no_supervised += 1,
            }
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let i = self.rng.random_range(0..self.buffer.len());
        if let Some(j) = self.journal.as_mut() {
            j.push(BufferOp::Take(i));
        }
        Ok(Some(self.buffer.swap_remove(i)))
    }

    /// The next batch of `rows_per_batch` rows (fewer at the very end); `None` when done.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        while self.ready.len() < self.cfg.rows_per_batch {
            match self.next_sample()? {
                Some(s) => {
                    for docs in self.packer.push(s)? {
                        self.ready.push_back(self.packer.row(docs));
                    }
                }
                None => {
                    for docs in self.packer.finish() {
                        self.ready.push_back(self.packer.row(docs));
                    }
                    break;
                }
            }
        }
        if self.ready.is_empty() {
            return Ok(None);
        }
        let n = self.cfg.rows_per_batch.min(self.ready.len());
        let rows: Vec<PackedRow> = self.ready.drain(..n).map(|p| p.row).collect();
        for r in &rows {
            self.stats.rows += 1;
            self.stats.row_tokens += r.ids.len() as u64;
            self.stats.padding_tokens += r.padding() as u64;
            self.stats.supervised_tokens += r.mask.iter().filter(|&&m| m).count() as u64;
        }
        Ok(Some(Batch { rows }))
    }
}

/// Runs a loader on a background thread, up to `depth` batches ahead of the consumer. Each batch
/// comes with the change of the loader state over it (`StateDelta`); applied in order to
/// `start_state`, they give the state right after the last consumed batch, so a checkpoint
/// taken after consuming batch k resumes at batch k+1 however far ahead the thread has read.
pub struct Prefetcher {
    start: LoaderState,
    rx: std::sync::mpsc::Receiver<Result<Option<(Batch, StateDelta)>>>,
    handle: Option<std::thread::JoinHandle<()>>,
    done: bool,
}

impl Prefetcher {
    pub fn spawn(mut loader: Loader, depth: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(depth.max(1));
        let start = loader.state();
        loader.track_changes();
        let handle = std::thread::spawn(move || loop {
            let item = loader
                .next_batch()
                .and_then(|b| b.map(|b| Ok((b, loader.take_delta()?))).transpose());
            let last = !matches!(item, Ok(Some(_)));
            if tx.send(item).is_err() || last {
                break;
            }
        });
        Self {
            start,
            rx,
            handle: Some(handle),
            done: false,
        }
    }

    /// The loader's state before the first batch.
    pub fn start_state(&self) -> &LoaderState {
        &self.start
    }

    /// The next batch and the change of the loader state over it; `None` when the data is done.
    pub fn next_batch(&mut self) -> Result<Option<(Batch, StateDelta)>> {
        if self.done {
            return Ok(None);
        }
        let item = self
            .rx
            .recv()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the data loader thread stopped unexpectedly")));
        if !matches!(item, Ok(Some(_))) {
            self.done = true;
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
        item
    }
}
