//! Near-duplicate detection: MinHash signatures over word shingles, banded for locality-sensitive
//! hashing. `num_perm` hash functions give a signature; it is cut into `bands` bands of
//! `num_perm / bands` rows, and two texts are near duplicates when any band is equal — which
//! happens with probability `1 - (1 - J^r)^b` for Jaccard similarity J (r rows, b bands): with
//! 128 permutations in 16 bands, about 0.7 is the similarity where that reaches one half.
//! The index keeps one 64-bit key per band per text, never the texts. Hashes are FNV-1a with a
//! SplitMix64 finaliser, fixed by this file (std's `DefaultHasher` may change between Rust
//! releases, and dedup decisions must not).

use std::collections::HashSet;

/// FNV-1a of `bytes`, mixed (SplitMix64's finaliser) so nearby inputs spread.
fn hash64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The index of the texts kept so far.
pub struct LshIndex {
    num_perm: usize,
    bands: usize,
    shingle_words: usize,
    /// Per permutation: (a, b) of `a * h + b` over the 64-bit shingle hash.
    perms: Vec<(u64, u64)>,
    keys: HashSet<u64>,
}

impl LshIndex {
    pub fn new(num_perm: usize, bands: usize, shingle_words: usize) -> Self {
        // Fixed odd multipliers from a SplitMix64 stream: the same signatures on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let perms = (0..num_perm).map(|_| (next() | 1, next())).collect();
        Self {
            num_perm,
            bands,
            shingle_words,
            perms,
            keys: HashSet::new(),
        }
    }

    /// The band keys of `text` (empty for a text without words).
    fn band_keys(&self, text: &str) -> Vec<u64> {
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        if words.is_empty() {
            return vec![];
        }
        let n = self.shingle_words.min(words.len());
        let shingles: Vec<u64> = words.windows(n).map(|w| hash64(w.join(" ").into_bytes())).collect();
        let sig: Vec<u64> = self
            .perms
            .iter()
            .map(|&(a, b)| {
                shingles
                    .iter()
                    .map(|&s| a.wrapping_mul(s).wrapping_add(b))
                    .min()
                    .unwrap_or(0)
            })
            .collect();
        let rows = self.num_perm / self.bands;
        sig.chunks(rows)
            .enumerate()
            .map(|(band, chunk)| {
                let bytes = (band as u64).to_le_bytes().into_iter();
                hash64(bytes.chain(chunk.iter().flat_map(|v| v.to_le_bytes())))
            })
            .collect()
    }

    /// Whether `text` nearly duplicates a text already inserted.
    pub fn contains(&self, text: &str) -> bool {
        self.band_keys(text).iter().any(|k| self.keys.contains(k))
    }

    /// Adds `text`.
    pub fn insert(&mut self, text: &str) {
        for k in self.band_keys(text) {
            self.keys.insert(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_duplicates_collide_and_different_texts_do_not() {
        let mut idx = LshIndex::new(128, 16, 5);
        // About 60 words: one changed word leaves ~90 % of the 5-word shingles shared.
        let a = "Write a function that returns the sum of all even numbers in a list of integers, \
                 and explain its complexity in one sentence with an example call and its output. The \
                 function must not modify the list it is given, must accept an empty list and return \
                 zero for it, and must treat negative even numbers like positive ones. Name it \
                 sum_even and give it type hints for the argument and the result.";
        idx.insert(a);
        assert!(idx.contains(a));
        assert!(
            idx.contains(&a.replace("one sentence", "a sentence")),
            "one word changed"
        );
        assert!(!idx.contains(
            "Implement a thread-safe LRU cache in Rust with get and put, both in constant time, and \
             show how eviction works when the capacity is exceeded by a new key."
        ));
        assert!(!idx.contains(""));
    }
}
