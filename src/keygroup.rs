//! Key groups: the unit in which keyed state moves between subtasks.
//!
//! A job's keyed state is split into `max_parallelism` key groups. A key belongs to key group
//! `murmur3_x86_32(serialized key, seed 0) % max_parallelism`; subtask `i` of `p` owns the
//! contiguous range `ceil(i * maxP / p) ..= ceil((i + 1) * maxP / p) - 1`. Both functions are
//! part of the on-disk contract (docs/format.md): changing them would send restored keys to the
//! wrong subtask, so they are pinned by known-answer tests.

use std::fmt;

use crate::error::{Error, Result};

/// The index of a key group, `0..max_parallelism`.
pub type KeyGroup = u16;

/// The number of key groups of an operator: the highest parallelism it can ever be rescaled to.
///
/// Valid values are `1..=32768`; the default is 128, as in Flink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MaxParallelism(u16);

impl MaxParallelism {
    /// The largest accepted value.
    pub const LIMIT: u32 = 32768;
    /// The default, 128.
    pub const DEFAULT: MaxParallelism = MaxParallelism(128);

    /// Checks `value` against `1..=32768`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when out of range.
    pub fn new(value: u32) -> Result<Self> {
        if value == 0 || value > Self::LIMIT {
            return Err(Error::InvalidConfig {
                what: "max_parallelism",
                detail: format!("{value} is outside 1..=32768"),
            });
        }
        // 32768 fits in u16; checked above.
        Ok(MaxParallelism(value as u16))
    }

    /// The number of key groups.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }

    /// The key group of a key, given its serialized bytes.
    pub fn key_group_of(self, key_bytes: &[u8]) -> KeyGroup {
        // The remainder is below max_parallelism <= 32768, so it fits in u16.
        (murmur3_x86_32(key_bytes, 0) % self.get()) as KeyGroup
    }

    /// The key groups that subtask `index` of `parallelism` owns.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `parallelism` is 0 or above max parallelism, or `index`
    /// is not below `parallelism`.
    pub fn subtask_range(self, index: u32, parallelism: u32) -> Result<KeyGroupRange> {
        self.check_parallelism(parallelism)?;
        if index >= parallelism {
            return Err(Error::InvalidConfig {
                what: "subtask index",
                detail: format!("{index} is not below parallelism {parallelism}"),
            });
        }
        let max = u64::from(self.get());
        let (i, p) = (u64::from(index), u64::from(parallelism));
        let start = (i * max).div_ceil(p);
        let end = ((i + 1) * max).div_ceil(p) - 1;
        // Both are below max_parallelism <= 32768.
        Ok(KeyGroupRange::new(start as KeyGroup, end as KeyGroup))
    }

    /// The subtask of `parallelism` that owns `key_group`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `parallelism` is out of range or `key_group` is not below
    /// max parallelism.
    pub fn subtask_of(self, key_group: KeyGroup, parallelism: u32) -> Result<u32> {
        self.check_parallelism(parallelism)?;
        if u32::from(key_group) >= self.get() {
            return Err(Error::InvalidConfig {
                what: "key group",
                detail: format!("{key_group} is not below max parallelism {}", self.get()),
            });
        }
        // kg * p / maxP is the inverse of the ceil-based ranges above (Flink uses the same).
        let owner = u64::from(key_group) * u64::from(parallelism) / u64::from(self.get());
        Ok(owner as u32)
    }

    fn check_parallelism(self, parallelism: u32) -> Result<()> {
        if parallelism == 0 || parallelism > self.get() {
            return Err(Error::InvalidConfig {
                what: "parallelism",
                detail: format!(
                    "{parallelism} is outside 1..={} (the max parallelism)",
                    self.get()
                ),
            });
        }
        Ok(())
    }
}

impl Default for MaxParallelism {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for MaxParallelism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An inclusive, non-empty range of key groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    start: KeyGroup,
    end: KeyGroup,
}

impl KeyGroupRange {
    /// The range `start..=end`; `end` below `start` is swapped into order.
    pub fn new(start: KeyGroup, end: KeyGroup) -> Self {
        KeyGroupRange {
            start: start.min(end),
            end: start.max(end),
        }
    }

    /// All key groups of `max_parallelism`: what a subtask of a job with parallelism 1 owns.
    pub fn all(max_parallelism: MaxParallelism) -> Self {
        KeyGroupRange::new(0, (max_parallelism.get() - 1) as KeyGroup)
    }

    /// The first key group.
    pub fn start(&self) -> KeyGroup {
        self.start
    }

    /// The last key group (inclusive).
    pub fn end(&self) -> KeyGroup {
        self.end
    }

    /// Whether `key_group` is in the range.
    pub fn contains(&self, key_group: KeyGroup) -> bool {
        self.start <= key_group && key_group <= self.end
    }

    /// The number of key groups.
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Always false: a range holds at least one key group.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The key groups in order.
    pub fn iter(&self) -> impl Iterator<Item = KeyGroup> {
        self.start..=self.end
    }

    /// The key groups in both ranges, if any.
    pub fn intersect(&self, other: &KeyGroupRange) -> Option<KeyGroupRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start <= end).then_some(KeyGroupRange { start, end })
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key groups {}..={}", self.start, self.end)
    }
}

/// MurmurHash3, x86 32-bit variant, over `data` with `seed`.
///
/// Part of the on-disk contract: it decides which key group a key belongs to.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, byte) in tail.iter().enumerate() {
            k |= u32::from(*byte) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    // The length is mixed in modulo 2^32, as the reference implementation does.
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers from the reference implementation (also what Python's `mmh3` prints).
    #[test]
    fn murmur3_known_answers() {
        let cases: [(&[u8], u32); 9] = [
            (b"", 0),
            (b"a", 0x3c25_69b2),
            (b"ab", 0x9bbf_d75f),
            (b"abc", 0xb3dd_93fa),
            (b"abcd", 0x43ed_676a),
            (b"hello", 0x248b_fa47),
            (b"word-count", 0x4c2b_aca7),
            (&[0, 1, 2, 3, 4, 5, 6], 0x8d7e_4914),
            (b"The quick brown fox jumps over the lazy dog", 0x2e4f_f723),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur3_x86_32(input, 0), expected, "input {input:?}");
        }
    }

    #[test]
    fn key_group_known_answers() {
        let p128 = MaxParallelism::DEFAULT;
        let p32768 = MaxParallelism::new(32768).unwrap();
        assert_eq!(p128.key_group_of(b"hello"), 71);
        assert_eq!(p128.key_group_of(b"flink"), 11);
        assert_eq!(p128.key_group_of(b"cairn"), 64);
        assert_eq!(p128.key_group_of(&42u64.to_be_bytes()), 55);
        assert_eq!(p32768.key_group_of(b"hello"), 31303);
        assert_eq!(p32768.key_group_of(b"flink"), 20491);
        assert_eq!(MaxParallelism::new(1).unwrap().key_group_of(b"x"), 0);
    }

    #[test]
    fn max_parallelism_bounds() {
        assert!(MaxParallelism::new(0).is_err());
        assert!(MaxParallelism::new(32769).is_err());
        assert_eq!(MaxParallelism::new(32768).unwrap().get(), 32768);
        assert_eq!(MaxParallelism::default().get(), 128);
    }

    #[test]
    fn subtask_ranges_known_answers() {
        let m = MaxParallelism::DEFAULT;
        let ranges: Vec<_> = (0..3).map(|i| m.subtask_range(i, 3).unwrap()).collect();
        assert_eq!(ranges[0], KeyGroupRange::new(0, 42));
        assert_eq!(ranges[1], KeyGroupRange::new(43, 85));
        assert_eq!(ranges[2], KeyGroupRange::new(86, 127));
        assert_eq!(m.subtask_range(0, 1).unwrap(), KeyGroupRange::all(m));
        assert!(m.subtask_range(3, 3).is_err());
        assert!(m.subtask_range(0, 129).is_err());
    }

    /// Every key group is owned by exactly one subtask, ranges are contiguous, and
    /// `subtask_of` agrees with `subtask_range`, for every parallelism of several maxima.
    #[test]
    fn ranges_partition_key_groups_and_agree_with_owner() {
        for max in [1u32, 2, 3, 7, 128, 1000] {
            let m = MaxParallelism::new(max).unwrap();
            for p in 1..=max.min(130) {
                let mut next = 0u32;
                for i in 0..p {
                    let r = m.subtask_range(i, p).unwrap();
                    assert_eq!(u32::from(r.start()), next, "max {max} p {p} i {i}");
                    for kg in r.iter() {
                        assert_eq!(m.subtask_of(kg, p).unwrap(), i, "max {max} p {p} kg {kg}");
                    }
                    next = u32::from(r.end()) + 1;
                }
                assert_eq!(next, max);
            }
        }
    }
}
