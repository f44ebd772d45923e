//! The composite key: how (key group, key, namespace[, user key]) becomes one RocksDB key.
//!
//! ```text
//! [key group: u16 BE][varint len][key bytes][varint len][namespace bytes][user key bytes]
//! ```
//!
//! The user key (map state only) is the rest of the key. Lengths are unsigned LEB128 varints
//! of at most 5 bytes (values up to `u32::MAX`). Length prefixes, unlike Flink's rule of
//! guessing where a variable-length key ends, make every key and namespace unambiguous, and
//! the key group in front keeps each key group's entries contiguous and in order, so a
//! snapshot can be cut by key group. The prefix `[kg][key][namespace]` is what map iteration
//! seeks on. Specified in docs/format.md.

use crate::keygroup::KeyGroup;

/// The longest varint: 5 bytes hold 32 bits.
const MAX_VARINT_LEN: usize = 5;

/// Appends `value` as an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a varint from the front of `bytes`: the value and how many bytes it used.
///
/// `None` for a truncated varint, one longer than 5 bytes, or one above `u32::MAX`.
pub fn read_varint(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().take(MAX_VARINT_LEN).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return u32::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

/// Appends a length-prefixed byte string.
pub fn write_framed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys, namespaces and elements above 4 GiB are refused by the state layer before this.
    write_varint(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Splits a length-prefixed byte string off the front of `bytes`: (it, the rest).
pub fn read_framed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, used) = read_varint(bytes)?;
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    Some((bytes.get(used..end)?, &bytes[end..]))
}

/// Writes `[kg][len][key][len][namespace]` into `out` (cleared first).
pub fn write_prefix(out: &mut Vec<u8>, key_group: KeyGroup, key: &[u8], namespace: &[u8]) {
    out.clear();
    out.extend_from_slice(&key_group.to_be_bytes());
    write_framed(out, key);
    write_framed(out, namespace);
}

/// The parts of a composite key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompositeKey<'a> {
    /// The key group.
    pub key_group: KeyGroup,
    /// The serialized key.
    pub key: &'a [u8],
    /// The namespace (empty when none).
    pub namespace: &'a [u8],
    /// The serialized user key of map state; empty for other kinds.
    pub user_key: &'a [u8],
}

impl<'a> CompositeKey<'a> {
    /// Parses a composite key; `None` if it is not one.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let key_group = key_group_of(bytes)?;
        let (key, rest) = read_framed(&bytes[2..])?;
        let (namespace, user_key) = read_framed(rest)?;
        Some(CompositeKey {
            key_group,
            key,
            namespace,
            user_key,
        })
    }

    /// The length of the `[kg][key][namespace]` prefix of `bytes`, if it parses.
    pub fn prefix_len(bytes: &[u8]) -> Option<usize> {
        let parsed = CompositeKey::parse(bytes)?;
        Some(bytes.len() - parsed.user_key.len())
    }
}

/// The key group in the first two bytes of a composite key.
pub fn key_group_of(bytes: &[u8]) -> Option<KeyGroup> {
    let kg: [u8; 2] = bytes.get(..2)?.try_into().ok()?;
    Some(KeyGroup::from_be_bytes(kg))
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` when
/// there is none (the prefix is empty or all `0xFF`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_pinned() {
        let mut out = Vec::new();
        write_prefix(&mut out, 0x0102, b"k", b"");
        assert_eq!(out, [0x01, 0x02, 1, b'k', 0]);
        out.extend_from_slice(b"uk");
        let parsed = CompositeKey::parse(&out).unwrap();
        assert_eq!(parsed.key_group, 0x0102);
        assert_eq!(parsed.key, b"k");
        assert_eq!(parsed.namespace, b"");
        assert_eq!(parsed.user_key, b"uk");
        assert_eq!(CompositeKey::prefix_len(&out), Some(5));
    }

    #[test]
    fn varints() {
        for (value, bytes) in [
            (0u32, vec![0u8]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xAC, 0x02]),
            (u32::MAX, vec![0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(out, bytes);
            assert_eq!(read_varint(&bytes), Some((value, bytes.len())));
        }
        assert_eq!(read_varint(&[0x80]), None, "truncated");
        assert_eq!(
            read_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x1F]),
            None,
            "above u32"
        );
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            None,
            "too long"
        );
    }

    #[test]
    fn garbage_does_not_parse() {
        assert_eq!(CompositeKey::parse(&[]), None);
        assert_eq!(CompositeKey::parse(&[0, 1, 9, b'a']), None);
        assert_eq!(
            CompositeKey::parse(&[0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
            None
        );
    }

    #[test]
    fn successor() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_successor(&[]), None);
    }
}
