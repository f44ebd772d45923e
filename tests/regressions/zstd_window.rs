//! Found by reading the canonical reader for "no allocation driven by an unchecked
//! length": a block's zstd frame says in its header how large a window its decoder needs,
//! and the streaming decoder the reader used allocated that much before it looked at the
//! data. A 30-byte block asking for 2^27 bytes made the reader map 128 MiB (seen with
//! `strace -e trace=mmap` on this test), and a frame asking for more was refused although
//! it decompresses to its few bytes, which is all the format asks of it. The reader now
//! decompresses a block in one call into its share of the pending buffer (exactly its
//! uncompressed length, at most 1 MiB), which needs no window of its own: what a frame's
//! header claims allocates nothing, and every window size reads.

use std::sync::Arc;

use cairn::{
    BigEndian, CodecInfo, HeapBackend, InstanceId, KeyGroupRange, KeyedStateHandle,
    KeyedStateStore, LocalStore, ManualClock, MaxParallelism, SnapshotFile, SnapshotFormat,
    SnapshotStore, StateDescriptor, StateKind, StateMeta, StoragePath, Utf8,
};

fn meta() -> StateMeta {
    StateMeta {
        name: "v".into(),
        kind: StateKind::Value,
        key_codec: CodecInfo::new("utf8", 1),
        value_codec: CodecInfo::new("u64-be", 1),
        user_key_codec: None,
        ttl: None,
    }
}

/// A zstd frame (RFC 8878) without a content size whose header asks for a window of
/// `2^window_log` bytes, holding `data` in one raw block.
fn frame(window_log: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD];
    out.push(0x00); // no content size, not single-segment, no checksum, no dictionary
    out.push((window_log - 10) << 3); // exponent, mantissa 0
    let header = ((data.len() as u32) << 3) | 1; // raw block, last
    out.extend_from_slice(&header.to_le_bytes()[..3]);
    out.extend_from_slice(data);
    out
}

/// A canonical stream of max parallelism 1 with one entry, `"k" -> 42`, in a block
/// compressed as `frame`, laid out as docs/format.md (section 8) specifies.
fn stream(window_log: u8) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u32.to_be_bytes());
    payload.extend_from_slice(&[0, 0, 0, 0]);
    payload.push(1);
    let mut record = Vec::new();
    meta().encode(&mut record);
    cairn::layout::write_framed(&mut payload, &record);
    let mut out = b"CAIRN-KS".to_vec();
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());

    // Group: state 0, one entry; key [len 1]["k"][namespace len 0], value 42 (u64 BE).
    let mut section_payload = vec![0, 1, 3, 1, b'k', 0, 8];
    section_payload.extend_from_slice(&42u64.to_be_bytes());
    let compressed = frame(window_log, &section_payload);
    let section_start = out.len() as u64;
    out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    out.extend_from_slice(&(section_payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&compressed).to_be_bytes());
    out.extend_from_slice(&compressed);
    let index_offset = out.len() as u64;
    let mut index = 0u16.to_be_bytes().to_vec();
    index.extend_from_slice(&section_start.to_be_bytes());
    index.extend_from_slice(&(index_offset - section_start).to_be_bytes());
    out.extend_from_slice(&index);
    out.extend_from_slice(&index_offset.to_be_bytes());
    out.extend_from_slice(&(index.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&index).to_be_bytes());
    out.extend_from_slice(b"CAIRN-KS");
    out
}

/// CRC32 (IEEE), bit by bit: the test does not lean on the crate it checks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn restore(bytes: &[u8]) -> cairn::Result<Option<u64>> {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let path = StoragePath::new("state/0123/keyed-state").unwrap();
    store.put(&path, bytes).unwrap();
    let max = MaxParallelism::new(1).unwrap();
    let handle = KeyedStateHandle {
        format: SnapshotFormat::Canonical,
        key_groups: KeyGroupRange::new(0, 0),
        instance: InstanceId(0x0123),
        checkpoint_id: 1,
        states: vec![meta()],
        files: vec![SnapshotFile {
            name: "keyed-state".into(),
            path,
            size: bytes.len() as u64,
            crc32: crc32(bytes),
        }],
    };
    let clock = Arc::new(ManualClock::new(0));
    let backend = HeapBackend::restore(max, KeyGroupRange::new(0, 0), clock, &store, &[handle])?;
    let store = KeyedStateStore::new(backend);
    let mut state = store.value_state(&StateDescriptor::new("v", Utf8, BigEndian))?;
    state.get(&"k".to_string())
}

#[test]
fn a_block_reads_whatever_window_its_frame_header_claims() {
    for window_log in [10, 20, 27, 28, 31] {
        let got = restore(&stream(window_log));
        assert!(
            matches!(got, Ok(Some(42))),
            "a window of 2^{window_log}: {got:?}"
        );
    }
}
