//! CRC32s and lengths made right again in mutated bytes, so that the fuzzer's mutations
//! reach the decoders behind the checksums instead of stopping at the first CRC32.
//!
//! Best effort: whatever of the layout cannot be found (a length beyond the bytes) is left
//! as it is. Valid files come out unchanged.

/// `_metadata` (docs/format.md, section 7): the payload length from the file's size, and
/// the CRC32 of everything before it.
pub(super) fn metadata(data: &[u8]) -> Option<Vec<u8>> {
    const HEADER: usize = 8 + 2 + 4;
    let payload = data.len().checked_sub(HEADER + 4)?;
    let mut out = data.to_vec();
    out[10..14].copy_from_slice(&u32::try_from(payload).ok()?.to_be_bytes());
    seal(&mut out, 0, HEADER + payload);
    Some(out)
}

/// The canonical stream (docs/format.md, section 8): the header's CRC32, the index's, and
/// the CRC32 of every block the index leads to.
pub(super) fn canonical(data: &[u8]) -> Option<Vec<u8>> {
    const PREFIX: usize = 8 + 2 + 4;
    const FOOTER: usize = 8 + 4 + 4 + 8;
    let mut out = data.to_vec();
    let payload = usize::try_from(be32(&out, 10)?).ok()?;
    let header_end = PREFIX.checked_add(payload)?;
    if header_end + 4 <= out.len() {
        seal(&mut out, 0, header_end);
    }
    let footer = out.len().checked_sub(FOOTER)?;
    let index_offset = usize::try_from(be64(&out, footer)?).ok()?;
    let index_len = usize::try_from(be32(&out, footer + 8)?).ok()?;
    let index_end = index_offset.checked_add(index_len)?;
    let index = out.get(index_offset..index_end)?.to_vec();
    let crc = crc32fast::hash(&index).to_be_bytes();
    out[footer + 12..footer + 16].copy_from_slice(&crc);
    for entry in index.chunks_exact(18) {
        let start = be64(entry, 2).and_then(|s| usize::try_from(s).ok());
        let len = be64(entry, 10).and_then(|l| usize::try_from(l).ok());
        if let Some((start, end)) = start
            .zip(len)
            .and_then(|(s, l)| Some((s, s.checked_add(l)?)))
        {
            reseal_blocks(&mut out, start, end.min(index_offset));
        }
    }
    Some(out)
}

/// The blocks of the section `start..end`: `[C][U][crc32 of the C bytes][C bytes]`.
fn reseal_blocks(out: &mut [u8], mut at: usize, end: usize) {
    while at + 12 <= end {
        let Some(compressed) = be32(out, at).and_then(|c| usize::try_from(c).ok()) else {
            return;
        };
        let data = at + 12;
        let Some(data_end) = data.checked_add(compressed).filter(|&e| e <= end) else {
            return;
        };
        let crc = crc32fast::hash(&out[data..data_end]).to_be_bytes();
        out[at + 8..at + 12].copy_from_slice(&crc);
        at = data_end;
    }
}

/// Writes the CRC32 of `out[from..to]` at `to`.
fn seal(out: &mut [u8], from: usize, to: usize) {
    if let Some(bytes) = out.get(from..to) {
        let crc = crc32fast::hash(bytes).to_be_bytes();
        if let Some(slot) = out.get_mut(to..to + 4) {
            slot.copy_from_slice(&crc);
        }
    }
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn be64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: &[u8] = include_bytes!("../../tests/golden/canonical-savepoint-v1/_metadata");
    const STREAM: &[u8] = include_bytes!(
        "../../tests/golden/canonical-savepoint-v1/state/5b11fb4d5f268a36e3f10bce8a375f46/keyed-state"
    );

    #[test]
    fn valid_files_come_out_unchanged() {
        assert_eq!(metadata(METADATA).as_deref(), Some(METADATA));
        assert_eq!(canonical(STREAM).as_deref(), Some(STREAM));
    }

    #[test]
    fn a_changed_byte_is_sealed_again() {
        for at in [20, METADATA.len() / 2, METADATA.len() - 5] {
            let mut bad = METADATA.to_vec();
            bad[at] ^= 0x40;
            let sealed = metadata(&bad).unwrap();
            assert_ne!(sealed, METADATA);
            let err = crate::snapshot::metadata::decode(&sealed)
                .err()
                .unwrap_or_default();
            assert!(!err.contains("CRC32"), "byte {at}: {err}");
        }
        // A byte of the first block's compressed data: the block CRC32 is made right.
        let block_data = 14 + usize::try_from(be32(STREAM, 10).unwrap()).unwrap() + 4 + 12;
        let mut bad = STREAM.to_vec();
        bad[block_data + 1] ^= 0x01;
        let sealed = canonical(&bad).unwrap();
        assert_ne!(sealed, bad, "the block CRC32 changed");
        assert_eq!(sealed[block_data + 1], bad[block_data + 1]);
    }
}
