//! Tests of the canonical stream: round trips, ranged reads, corruption, versions, order.

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex};

use super::*;
use crate::codec::CodecInfo;
use crate::storage::{LocalStore, SnapshotWrite};
use crate::ttl::TtlConfig;
use crate::StateKind;

/// A store in memory that records every ranged read.
#[derive(Default)]
struct MemStore {
    files: Mutex<HashMap<StoragePath, Vec<u8>>>,
    reads: Mutex<Vec<(u64, u64)>>,
}

struct MemWrite {
    store: Arc<MemStore>,
    path: StoragePath,
    bytes: Vec<u8>,
}

impl Write for MemWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotWrite for MemWrite {
    fn finish(self: Box<Self>) -> Result<u64> {
        let len = self.bytes.len() as u64;
        self.store
            .files
            .lock()
            .unwrap()
            .insert(self.path, self.bytes);
        Ok(len)
    }
}

impl MemStore {
    fn bytes(&self, path: &StoragePath) -> Result<Vec<u8>> {
        self.files
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: "file",
                location: "memory".into(),
                path: path.to_string(),
            })
    }

    fn set(&self, path: &StoragePath, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(path.clone(), bytes);
    }

    fn take_reads(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

impl SnapshotStore for Arc<MemStore> {
    fn location(&self) -> String {
        "memory".into()
    }
    fn create(&self, path: &StoragePath) -> Result<Box<dyn SnapshotWrite>> {
        Ok(Box::new(MemWrite {
            store: Arc::clone(self),
            path: path.clone(),
            bytes: Vec::new(),
        }))
    }
    fn open(&self, path: &StoragePath) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(Cursor::new(self.bytes(path)?)))
    }
    fn read_range(
        &self,
        path: &StoragePath,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn Read + Send>> {
        self.reads.lock().unwrap().push((offset, len));
        let bytes = self.bytes(path)?;
        let start = (offset as usize).min(bytes.len());
        let end = (offset.saturating_add(len) as usize).min(bytes.len());
        Ok(Box::new(Cursor::new(bytes[start..end].to_vec())))
    }
    fn size(&self, path: &StoragePath) -> Result<Option<u64>> {
        Ok(self.files.lock().unwrap().get(path).map(|b| b.len() as u64))
    }
    fn list(&self, _dir: Option<&StoragePath>) -> Result<Vec<StoragePath>> {
        Ok(self.files.lock().unwrap().keys().cloned().collect())
    }
    fn delete(&self, path: &StoragePath) -> Result<()> {
        self.files.lock().unwrap().remove(path);
        Ok(())
    }
}

fn meta(name: &str, kind: StateKind, ttl: bool) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind,
        key_codec: CodecInfo::new("utf8", 1),
        value_codec: CodecInfo::new("u64-be", 1),
        user_key_codec: (kind == StateKind::Map).then(|| CodecInfo::new("bytes", 1)),
        ttl: ttl.then(|| TtlConfig::new(std::time::Duration::from_secs(60))),
    }
}

fn states() -> Vec<StateMeta> {
    vec![
        meta("counts", StateKind::Value, false),
        meta("seen", StateKind::Map, true),
        meta("events", StateKind::List, false),
    ]
}

/// (state index, full composite key, value), in stream order.
type Entry = (u32, Vec<u8>, Vec<u8>);

fn key(kg: KeyGroup, rest: &[u8]) -> Vec<u8> {
    let mut k = kg.to_be_bytes().to_vec();
    k.extend_from_slice(rest);
    k
}

fn write(
    max: MaxParallelism,
    range: KeyGroupRange,
    states: &[StateMeta],
    entries: &[Entry],
) -> Vec<u8> {
    let mut w = CanonicalWriter::new(Vec::new(), max, range, states).unwrap();
    for (s, k, v) in entries {
        w.add(*s, k, v).unwrap();
    }
    w.finish().unwrap()
}

fn file(path: &str, bytes: &[u8]) -> SnapshotFile {
    SnapshotFile {
        name: "keyed-state".into(),
        path: StoragePath::new(path).unwrap(),
        size: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
    }
}

fn read_all(reader: &CanonicalReader<'_>, range: KeyGroupRange) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    reader.read(range, &mut |s, k, v| {
        out.push((s, k.to_vec(), v.to_vec()));
        Ok(())
    })?;
    Ok(out)
}

/// Entries over several key groups and states, one key group larger than several blocks
/// and one value larger than a block.
fn many_entries() -> Vec<Entry> {
    let mut entries = Vec::new();
    for kg in [3u16, 4, 9, 40, 63] {
        for state in 0..3u32 {
            let n = if kg == 9 && state == 1 { 40_000 } else { 5 };
            for i in 0..n {
                let rest = format!("\x05k{i:07}\x00").into_bytes();
                let value = format!("value {kg} {state} {i}").into_bytes();
                entries.push((state, key(kg, &rest), value));
            }
        }
    }
    // A value of 2.5 blocks, incompressible enough to give several real blocks.
    let mut big = Vec::with_capacity(BLOCK_CAP * 5 / 2);
    let mut x: u32 = 1;
    while big.len() < BLOCK_CAP * 5 / 2 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        big.extend_from_slice(&x.to_be_bytes());
    }
    entries.push((2, key(63, b"\x01z\x00"), big));
    entries.sort_by(|a, b| (&a.1[..2], a.0, &a.1[2..]).cmp(&(&b.1[..2], b.0, &b.1[2..])));
    entries
}

#[test]
fn round_trips_through_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let max = MaxParallelism::new(64).unwrap();
    let range = KeyGroupRange::new(0, 63);
    let entries = many_entries();
    let path = StoragePath::new("chk-1/abc/keyed-state").unwrap();
    let mut out = crate::storage::CrcWriter::new(store.create(&path).unwrap());
    let mut w = CanonicalWriter::new(&mut out, max, range, &states()).unwrap();
    for (s, k, v) in &entries {
        w.add(*s, k, v).unwrap();
    }
    w.finish().unwrap();
    let crc32 = out.crc.finalize();
    let size = out.inner.finish().unwrap();
    let file = SnapshotFile {
        name: "keyed-state".into(),
        path,
        size,
        crc32,
    };
    let bytes = std::fs::read(dir.path().join("chk-1/abc/keyed-state")).unwrap();
    assert_eq!(crc32fast::hash(&bytes), crc32);

    let reader = CanonicalReader::open(&store, &file).unwrap();
    assert_eq!(reader.states(), states().as_slice());
    assert_eq!(reader.key_groups(), range);
    assert_eq!(reader.max_parallelism(), max);
    assert_eq!(
        reader.index.len(),
        5,
        "one section per key group with entries"
    );
    // Key groups 9 (many entries) and 63 (one big value) span several blocks: their first
    // block is a full one.
    for kg in [9, 63] {
        let section = reader.index.iter().find(|s| s.key_group == kg).unwrap();
        let at = section.offset as usize;
        let first_block = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        assert_eq!(first_block as usize, BLOCK_CAP, "key group {kg}");
    }
    assert_eq!(read_all(&reader, range).unwrap(), entries);
}

#[test]
fn an_empty_stream_keeps_its_states() {
    let store = Arc::new(MemStore::default());
    let max = MaxParallelism::DEFAULT;
    let range = KeyGroupRange::new(10, 20);
    let bytes = write(max, range, &states(), &[]);
    let f = file("e", &bytes);
    store.set(&f.path, bytes);
    let reader = CanonicalReader::open(&store, &f).unwrap();
    assert_eq!(reader.states(), states().as_slice());
    assert_eq!(reader.key_groups(), range);
    assert!(read_all(&reader, range).unwrap().is_empty());
}

#[test]
fn a_sub_range_reads_only_its_key_groups() {
    let store = Arc::new(MemStore::default());
    let max = MaxParallelism::new(64).unwrap();
    let entries = many_entries();
    let bytes = write(max, KeyGroupRange::new(0, 63), &states(), &entries);
    let f = file("s", &bytes);
    store.set(&f.path, bytes.clone());
    let reader = CanonicalReader::open(&store, &f).unwrap();
    // Opening reads the header (in two reads), the footer and the index, nothing else.
    let header_end = reader.index[0].offset;
    let last = reader.index.last().unwrap();
    let index_offset = last.offset + last.len;
    let size = bytes.len() as u64;
    assert_eq!(
        store.take_reads(),
        vec![
            (0, PREFIX_LEN),
            (PREFIX_LEN, header_end - PREFIX_LEN),
            (size - FOOTER_LEN, FOOTER_LEN),
            (index_offset, size - FOOTER_LEN - index_offset),
        ]
    );

    for (start, end) in [(4u16, 9u16), (0, 3), (10, 39), (41, 63), (9, 9)] {
        let sub = KeyGroupRange::new(start, end);
        let got = read_all(&reader, sub).unwrap();
        let expected: Vec<Entry> = entries
            .iter()
            .filter(|e| sub.contains(key_group_of(&e.1)))
            .cloned()
            .collect();
        assert_eq!(got, expected, "{sub}");
        let reads = store.take_reads();
        let wanted: Vec<&Section> = reader
            .index
            .iter()
            .filter(|s| sub.contains(s.key_group))
            .collect();
        match (wanted.first(), wanted.last()) {
            (Some(first), Some(last)) => {
                assert_eq!(
                    reads,
                    vec![(first.offset, last.offset + last.len - first.offset)],
                    "{sub}"
                );
            }
            _ => assert!(reads.is_empty(), "{sub}: no section, no read"),
        }
    }
    assert!(read_all(&reader, KeyGroupRange::new(0, 2))
        .unwrap()
        .is_empty());
}

fn key_group_of(key: &[u8]) -> KeyGroup {
    KeyGroup::from_be_bytes([key[0], key[1]])
}

/// A small stream: two key groups, two states, a handful of entries.
fn small() -> (Vec<u8>, Vec<Entry>) {
    let entries = vec![
        (0, key(1, b"\x01a\x00"), b"v1".to_vec()),
        (0, key(1, b"\x01b\x00"), b"v2".to_vec()),
        (
            1,
            key(1, b"\x01a\x00uk"),
            b"\x00\x00\x00\x00\x00\x00\x00\x07m".to_vec(),
        ),
        (2, key(5, b"\x01c\x00"), b"\x02\x00\x07".to_vec()),
    ];
    (
        write(
            MaxParallelism::new(8).unwrap(),
            KeyGroupRange::new(0, 7),
            &states(),
            &entries,
        ),
        entries,
    )
}

/// Opens and reads every key group of `bytes` (recorded with its own size).
fn open_and_read(store: &Arc<MemStore>, bytes: Vec<u8>) -> Result<Vec<Entry>> {
    let f = file("x", &bytes);
    store.set(&f.path, bytes);
    let reader = CanonicalReader::open(store, &f)?;
    read_all(&reader, KeyGroupRange::new(0, 7))
}

#[test]
fn every_truncation_and_flipped_bit_is_an_error() {
    let store = Arc::new(MemStore::default());
    let (bytes, entries) = small();
    assert_eq!(open_and_read(&store, bytes.clone()).unwrap(), entries);
    for len in 0..bytes.len() {
        let err = open_and_read(&store, bytes[..len].to_vec()).unwrap_err();
        assert!(
            matches!(err, Error::Corrupted { .. }),
            "truncated to {len}: {err}"
        );
    }
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            let err = open_and_read(&store, bad).unwrap_err();
            assert!(
                matches!(err, Error::Corrupted { .. }),
                "byte {i} bit {bit}: {err}"
            );
        }
    }
}

#[test]
fn a_size_other_than_the_recorded_one_or_a_missing_file_is_refused() {
    let store = Arc::new(MemStore::default());
    let (bytes, _) = small();
    let mut f = file("x", &bytes);
    store.set(&f.path, bytes);
    f.size += 1;
    assert!(matches!(
        CanonicalReader::open(&store, &f),
        Err(Error::Corrupted { .. })
    ));
    f.path = StoragePath::new("missing").unwrap();
    assert!(matches!(
        CanonicalReader::open(&store, &f),
        Err(Error::NotFound { .. })
    ));
}

/// Rewrites the header CRC after an edit of the header.
fn reseal_header(bytes: &mut [u8]) {
    let payload_len = u32::from_be_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let end = PREFIX_LEN as usize + payload_len;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..end + 4].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn a_newer_version_is_refused_with_a_hint() {
    let store = Arc::new(MemStore::default());
    let (mut bytes, _) = small();
    bytes[9] = 3;
    reseal_header(&mut bytes);
    let err = open_and_read(&store, bytes).unwrap_err();
    assert!(err.to_string().contains("use a newer cairn"), "{err}");
}

#[test]
fn hostile_lengths_with_valid_crcs_are_refused() {
    let store = Arc::new(MemStore::default());
    let (bytes, _) = small();
    let f = file("x", &bytes);
    store.set(&f.path, bytes.clone());
    let first_block = CanonicalReader::open(&store, &f).unwrap().index[0].offset as usize;
    // A block that claims to decompress to more than the cap (its CRC covers only the
    // compressed bytes, so it still matches).
    for claim in [BLOCK_CAP as u32 + 1, u32::MAX, 0] {
        let mut bad = bytes.clone();
        bad[first_block + 4..first_block + 8].copy_from_slice(&claim.to_be_bytes());
        let err = open_and_read(&store, bad).unwrap_err();
        assert!(err.to_string().contains("block cap"), "{claim}: {err}");
    }
    // A header that claims a states table of 4 GiB.
    let mut bad = bytes.clone();
    bad[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = open_and_read(&store, bad).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn the_layout_is_as_documented() {
    let (bytes, _) = small();
    // Header: magic, version 1, payload length, payload, CRC.
    assert_eq!(&bytes[..8], b"CAIRN-KS");
    assert_eq!(&bytes[8..10], &[0, 1]);
    let payload_len = u32::from_be_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let payload = &bytes[14..14 + payload_len];
    assert_eq!(
        &payload[..8],
        &[0, 0, 0, 8, 0, 0, 0, 7],
        "max 8, key groups 0..=7"
    );
    assert_eq!(payload[8], 3, "three states");
    let mut metas = Vec::new();
    for s in states() {
        let mut m = Vec::new();
        s.encode(&mut m);
        write_framed(&mut metas, &m);
    }
    assert_eq!(&payload[9..], metas.as_slice());
    let header_end = 14 + payload_len + 4;
    assert_eq!(
        &bytes[14 + payload_len..header_end],
        &crc32fast::hash(&bytes[..14 + payload_len]).to_be_bytes()
    );

    // Footer and index.
    let footer = &bytes[bytes.len() - 24..];
    assert_eq!(&footer[16..], b"CAIRN-KS");
    let index_offset = u64::from_be_bytes(footer[..8].try_into().unwrap()) as usize;
    let index_len = u32::from_be_bytes(footer[8..12].try_into().unwrap()) as usize;
    assert_eq!(index_len, 36, "two key groups");
    let index = &bytes[index_offset..index_offset + index_len];
    assert_eq!(&footer[12..16], &crc32fast::hash(index).to_be_bytes());
    assert_eq!(index_offset + index_len + 24, bytes.len());
    let kg1_len = u64::from_be_bytes(index[10..18].try_into().unwrap()) as usize;
    assert_eq!(&index[..2], &[0, 1]);
    assert_eq!(
        u64::from_be_bytes(index[2..10].try_into().unwrap()) as usize,
        header_end
    );
    assert_eq!(&index[18..20], &[0, 5]);
    assert_eq!(
        u64::from_be_bytes(index[20..28].try_into().unwrap()) as usize,
        header_end + kg1_len
    );

    // Key group 1: one block, state 0 with 2 entries then state 1 with 1 (keys without
    // their key group).
    let block = &bytes[header_end..header_end + kg1_len];
    let clen = u32::from_be_bytes(block[..4].try_into().unwrap()) as usize;
    let ulen = u32::from_be_bytes(block[4..8].try_into().unwrap()) as usize;
    assert_eq!(clen + 12, kg1_len);
    assert_eq!(&block[8..12], &crc32fast::hash(&block[12..]).to_be_bytes());
    let payload = zstd::bulk::decompress(&block[12..], ulen).unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 2,
        3, 1, b'a', 0, 2, b'v', b'1',
        3, 1, b'b', 0, 2, b'v', b'2',
        1, 1,
        5, 1, b'a', 0, b'u', b'k', 9, 0, 0, 0, 0, 0, 0, 0, 7, b'm',
    ];
    assert_eq!(payload, expected);
}

#[test]
fn the_writer_refuses_bad_input_without_writing_it() {
    let max = MaxParallelism::new(8).unwrap();
    let mut w = CanonicalWriter::new(Vec::new(), max, KeyGroupRange::new(2, 5), &states()).unwrap();
    w.add(1, &key(3, b"b"), b"").unwrap();
    let refused = [
        (1, key(3, b"b")), // the same key again
        (1, key(3, b"a")), // a smaller key
        (0, key(3, b"z")), // a smaller state
        (1, key(2, b"z")), // a smaller key group
        (1, key(6, b"z")), // outside the range
        (3, key(4, b"z")), // no such state
        (0, vec![4]),      // no key group
    ];
    for (state, k) in refused {
        let err = w.add(state, &k, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{k:?}");
    }
    w.add(2, &key(3, b"a"), b"").unwrap();
    w.add(0, &key(4, b"a"), b"").unwrap();
    let bytes = w.finish().unwrap();
    let store = Arc::new(MemStore::default());
    let f = file("w", &bytes);
    store.set(&f.path, bytes);
    let reader = CanonicalReader::open(&store, &f).unwrap();
    let keys: Vec<(u32, Vec<u8>)> = read_all(&reader, KeyGroupRange::new(0, 7))
        .unwrap()
        .into_iter()
        .map(|(s, k, _)| (s, k))
        .collect();
    assert_eq!(
        keys,
        vec![(1, key(3, b"b")), (2, key(3, b"a")), (0, key(4, b"a"))]
    );
    assert!(
        CanonicalWriter::new(Vec::new(), max, KeyGroupRange::new(0, 8), &states()).is_err(),
        "a range beyond max parallelism"
    );
}

#[test]
fn a_visitor_error_stops_the_read() {
    let store = Arc::new(MemStore::default());
    let (bytes, _) = small();
    let f = file("x", &bytes);
    store.set(&f.path, bytes);
    let reader = CanonicalReader::open(&store, &f).unwrap();
    let mut seen = 0;
    let err = reader
        .read(KeyGroupRange::new(0, 7), &mut |_, _, _| {
            seen += 1;
            Err(Error::Closed)
        })
        .unwrap_err();
    assert!(matches!(err, Error::Closed));
    assert_eq!(seen, 1);
}
