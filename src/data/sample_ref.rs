//! Where a sample of the loader comes from: its shard (an index into the loader's files), its
//! line or row there (1-based, as `ShardLines` numbers them) or its document (0-based, prepared
//! shards), and a CRC-32C of its tokens and loss mask. The loader's saved state names samples
//! this way instead of holding their token ids, and re-reads them to resume; the checksum proves
//! the re-read sample is the one that was buffered.
//!
//! A record that gives several samples (`data.mask = "per_turn"`) names each by its part: item
//! `LINE/PART` (part 0 is written as the line alone).
//!
//! A list of references serialises as one compact string, `"FILE:ITEM:CHECK FILE:ITEM:CHECK …"`
//! (the checksum in hex), so even a pretty-printed `trainer_state.json` stays small: about 20
//! bytes per buffered sample.

use super::pack::SampleState;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt::Write;

/// One sample's origin and checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRef {
    pub file: u32,
    pub item: u64,
    /// Which sample of the record (0 unless the record gives several).
    pub part: u32,
    pub check: u32,
}

impl SampleRef {
    /// The reference of `sample`, sample `part` of `item` of file `file`.
    pub fn new(file: usize, item: u64, part: u32, sample: &SampleState) -> Self {
        Self {
            file: file as u32,
            item,
            part,
            check: fingerprint(sample),
        }
    }

    /// `(file, item, part)`: what names the sample, without its checksum.
    pub fn key(&self) -> (u32, u64, u32) {
        (self.file, self.item, self.part)
    }
}

/// CRC-32C of a sample's token ids and supervised ranges (little-endian u32s).
pub fn fingerprint(s: &SampleState) -> u32 {
    let mut bytes = Vec::with_capacity(4 * (s.ids.len() + 2 * s.supervised.len() + 1));
    for &id in &s.ids {
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    for &(a, b) in &s.supervised {
        bytes.extend_from_slice(&a.to_le_bytes());
        bytes.extend_from_slice(&b.to_le_bytes());
    }
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &bytes) as u32
}

/// A sample in memory with its reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub at: SampleRef,
    pub sample: SampleState,
}

impl Held {
    pub fn new(at: SampleRef, sample: SampleState) -> Self {
        Self { at, sample }
    }
}

/// A list of references, serialised as one compact string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefList(pub Vec<SampleRef>);

impl RefList {
    pub fn of(held: &[Held]) -> Self {
        Self(held.iter().map(|h| h.at).collect())
    }

    /// The compact text form.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.0.len() * 20);
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            let _ = match r.part {
                0 => write!(s, "{}:{}:{:08x}", r.file, r.item, r.check),
                p => write!(s, "{}:{}/{p}:{:08x}", r.file, r.item, r.check),
            };
        }
        s
    }

    /// Parses the compact text form; errors name the entry.
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = Vec::new();
        for (i, entry) in text.split_ascii_whitespace().enumerate() {
            let parse = || -> Result<SampleRef> {
                let mut parts = entry.split(':');
                let (Some(f), Some(n), Some(c), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                    bail!("expected FILE:ITEM:CHECK");
                };
                let (n, part) = match n.split_once('/') {
                    Some((n, p)) => (n, p.parse().context("part")?),
                    None => (n, 0),
                };
                Ok(SampleRef {
                    file: f.parse().context("file index")?,
                    item: n.parse().context("item")?,
                    part,
                    check: u32::from_str_radix(c, 16).context("checksum")?,
                })
            };
            out.push(parse().with_context(|| format!("sample reference {} ({entry:?})", i + 1))?);
        }
        Ok(Self(out))
    }
}

impl Serialize for RefList {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> Deserialize<'de> for RefList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RefList::parse(&text).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_lists_round_trip_through_their_text() {
        let s = SampleState::from_parts(vec![5, 6, 7], &[false, true, true]);
        let list = RefList(vec![
            SampleRef::new(2, 17, 0, &s),
            SampleRef::new(0, 1 << 40, 0, &s),
            SampleRef::new(1, 9, 3, &s),
        ]);
        let text = list.to_text();
        assert_eq!(text.split(' ').next().unwrap(), format!("2:17:{:08x}", fingerprint(&s)));
        assert_eq!(
            text.split(' ').nth(2).unwrap(),
            format!("1:9/3:{:08x}", fingerprint(&s))
        );
        assert_eq!(RefList::parse(&text).unwrap(), list);
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<RefList>(&json).unwrap(), list);
        assert_eq!(RefList::parse("").unwrap(), RefList::default());
        let err = format!("{:#}", RefList::parse("1:2:3 1:x:3").unwrap_err());
        assert!(err.contains("reference 2") && err.contains("item"), "{err}");
        assert!(RefList::parse("1:2").is_err());
        assert!(RefList::parse("1:2/x:3").is_err());
    }

    #[test]
    fn the_fingerprint_sees_tokens_and_mask() {
        let a = SampleState::from_parts(vec![5, 6, 7], &[false, true, true]);
        let b = SampleState::from_parts(vec![5, 6, 7], &[false, false, true]);
        let c = SampleState::from_parts(vec![5, 6, 8], &[false, true, true]);
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    }
}
