//! TensorBoard event files (`[log] tensorboard = true`): each optimizer step's loss, learning
//! rate, gradient norm, throughput and validation loss written as scalar summaries to
//! `RUN/tensorboard/events.out.tfevents.TIME.HOST`, which `tensorboard --logdir RUN` reads
//! while the run goes. The format: TFRecord framing (length, masked CRC-32C of the length,
//! payload, masked CRC-32C of the payload) around protobuf `tensorflow.Event` messages. A
//! resumed run first writes a `SessionLog START` at its step, which tells TensorBoard to drop
//! the events of steps redone after the crash.

use super::metrics::StepMetrics;
use anyhow::{Context, Result};
use prost::Message;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `tensorflow.Event` (the fields written here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "6")]
    pub session_log: Option<SessionLog>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a scalar.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// `tensorflow.SessionLog` (status 1 = START).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// The masked CRC-32C TFRecord uses.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32;
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// An open event file.
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl EventWriter {
    /// A new event file in `RUN/tensorboard/`; `resumed_at` (a resume's step) marks where
    /// earlier files' later steps stop counting.
    pub fn create(run_dir: &Path, resumed_at: Option<u64>) -> Result<Self> {
        let dir = run_dir.join("tensorboard");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now() as u64,
            std::process::id()
        ));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = Self { file, path };
        w.write(&Event {
            wall_time: now(),
            file_version: Some("brain.Event:2".into()),
            ..Event::default()
        })?;
        if let Some(step) = resumed_at {
            w.write(&Event {
                wall_time: now(),
                step: step as i64,
                session_log: Some(SessionLog { status: 1 }),
                ..Event::default()
            })?;
        }
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One record, flushed.
    pub fn write(&mut self, event: &Event) -> Result<()> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file
            .write_all(&record)
            .and_then(|_| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// The scalars of one step.
    pub fn step(&mut self, m: &StepMetrics) -> Result<()> {
        let mut values = vec![("train/lr", Some(m.lr)), ("train/tokens_per_s", Some(m.tokens_per_s))];
        values.push(("train/loss", m.loss));
        values.push(("train/grad_norm", m.grad_norm));
        values.push(("eval/loss", m.val_loss));
        values.push(("train/mfu", m.mfu));
        let value = values
            .into_iter()
            .filter_map(|(tag, v)| {
                v.map(|v| SummaryValue {
                    tag: tag.into(),
                    simple_value: Some(v as f32),
                })
            })
            .collect();
        self.write(&Event {
            wall_time: now(),
            step: m.step as i64,
            summary: Some(Summary { value }),
            ..Event::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32C's check value, and TFRecord's masking of it.
    #[test]
    fn crc32c_and_mask() {
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, b"123456789") as u32;
        assert_eq!(crc, 0xe306_9283);
        assert_eq!(
            masked_crc(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }
}
