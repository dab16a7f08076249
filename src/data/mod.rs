//! The data path: shard files -> validated records -> chat template + loss mask -> token ids.
//!
//! Built so far: records (`record`), streaming shard readers for JSONL and compressed JSONL
//! (`shard`), chat templates with the assistant-token loss mask (`template`), and tokenisation
//! into training samples (`sample`). Packing, resumable loading, Parquet and hf:// sources come
//! next (see the README's status table).

pub mod decontam;
pub mod eval_loss;
pub mod hub;
pub mod inspect;
pub mod loader;
pub mod pack;
pub mod prepared;
pub mod record;
pub mod sample;
pub mod shard;
pub mod template;
pub mod tokenizer_train;
pub mod validate;

pub use record::{Message, Record, RecordError, Role};
pub use sample::{Dropped, Overflow, Sample, SampleBuilder};
pub use shard::{ShardLines, SourceLine};
pub use template::{ChatTemplate, QWEN25_DEFAULT_SYSTEM};
