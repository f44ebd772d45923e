//! Fuzz target `canonical`: the canonical keyed-state stream (docs/format.md, section 8),
//! read through [`CanonicalReader`] from an in-memory store, whole and by key-group range.

use arbitrary::Unstructured;

use crate::backend::StateMeta;
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::snapshot::canonical::{CanonicalReader, CanonicalWriter, BLOCK_CAP, STREAM_NAME};
use crate::snapshot::SnapshotFile;
use crate::storage::{SnapshotStore, StoragePath};

use super::mem_store::MemStore;
use super::{recipe, reseal};

/// One entry as the reader hands it out: state index, full composite key, value.
type Entry = (u32, Vec<u8>, Vec<u8>);

/// At most this many single key groups are read one by one per input.
const SINGLE_READS: usize = 32;

/// Reads `data` as a canonical stream; checks what it accepts (order, ranged reads that
/// agree with the whole, a rewrite that reads back the same), reads it again from a store
/// whose ranged reads come back short, then writes valid entries and reads them back.
pub fn canonical(data: &[u8]) -> Result<(), String> {
    let answer = read_raw(MemStore::new(stream_path(), data.to_vec()), data.len());
    if let Some(sealed) = reseal::canonical(data).filter(|sealed| sealed != data) {
        let _ = read_raw(MemStore::new(stream_path(), sealed.clone()), sealed.len());
    }
    if !data.is_empty() {
        // Somewhere in the file the bytes end early: never a panic.
        let visible = crc32fast::hash(data) as usize % data.len();
        let store = MemStore::shrunk(stream_path(), data.to_vec(), visible);
        let _ = read_all(&store, data.len());
    }
    let mut u = Unstructured::new(data);
    if let Ok((max, range, states, entries)) = stream_recipe(&mut u) {
        check_written(&mut u, max, range, &states, &entries);
    }
    answer
}

fn stream_path() -> StoragePath {
    match StoragePath::new(format!("chk-1/0123/{STREAM_NAME}")) {
        Ok(path) => path,
        Err(e) => panic!("the stream path is refused: {e}"),
    }
}

fn stream_file(size: usize) -> SnapshotFile {
    SnapshotFile {
        name: STREAM_NAME.into(),
        path: stream_path(),
        size: size as u64,
        crc32: 0,
    }
}

/// Every entry of key groups `range`, in the order read.
fn read_entries(reader: &CanonicalReader<'_>, range: KeyGroupRange) -> crate::Result<Vec<Entry>> {
    let mut out = Vec::new();
    reader.read(range, &mut |state, key, value| {
        out.push((state, key.to_vec(), value.to_vec()));
        Ok(())
    })?;
    Ok(out)
}

/// Opens the stream and reads all of it.
fn read_all(store: &dyn SnapshotStore, size: usize) -> crate::Result<Vec<Entry>> {
    let file = stream_file(size);
    let reader = CanonicalReader::open(store, &file)?;
    read_entries(&reader, reader.key_groups())
}

fn read_raw(store: MemStore, size: usize) -> Result<(), String> {
    let file = stream_file(size);
    let reader = CanonicalReader::open(&store, &file).map_err(|e| e.to_string())?;
    let range = reader.key_groups();
    assert!(u32::from(range.end()) < reader.max_parallelism().get());
    let all = match read_entries(&reader, range) {
        Ok(all) => all,
        Err(e) => {
            // The sections before and after the one that fails read on their own.
            let mid = range.start() + (range.end() - range.start()) / 2;
            let _ = read_entries(&reader, KeyGroupRange::new(range.start(), mid));
            let _ = read_entries(&reader, KeyGroupRange::new(mid, range.end()));
            return Err(e.to_string());
        }
    };
    check_order(&all, range, reader.states().len());
    check_ranges(&reader, &all);
    let rewritten = write(reader.max_parallelism(), range, reader.states(), &all);
    let store = MemStore::new(stream_path(), rewritten.clone());
    match read_all(&store, rewritten.len()) {
        Ok(again) => assert!(again == all, "a rewritten stream reads back differently"),
        Err(e) => panic!("a rewritten stream is refused: {e}"),
    }
    Ok(())
}

/// Entries come in strictly increasing (key group, state, key) order, inside the range,
/// with known states.
fn check_order(all: &[Entry], range: KeyGroupRange, states: usize) {
    for (state, key, _) in all {
        assert!(
            (*state as usize) < states,
            "state index {state} of {states}"
        );
        assert!(key.len() >= 2, "a key without its key group");
        assert!(range.contains(key_group(key)), "a key outside {range}");
    }
    for pair in all.windows(2) {
        let order = |(state, key, _): &Entry| (key_group(key), *state, key[2..].to_vec());
        assert!(order(&pair[0]) < order(&pair[1]), "entries out of order");
    }
}

fn key_group(key: &[u8]) -> u16 {
    u16::from_be_bytes([key[0], key[1]])
}

/// Reads of parts of the range give exactly the entries of those key groups.
fn check_ranges(reader: &CanonicalReader<'_>, all: &[Entry]) {
    let range = reader.key_groups();
    let of = |part: KeyGroupRange| -> Vec<Entry> {
        all.iter()
            .filter(|(_, key, _)| part.contains(key_group(key)))
            .cloned()
            .collect()
    };
    let read = |part: KeyGroupRange| match read_entries(reader, part) {
        Ok(got) => got,
        Err(e) => panic!("{part} fails to read where the whole stream reads: {e}"),
    };
    let mid = range.start() + (range.end() - range.start()) / 2;
    for part in [
        KeyGroupRange::new(range.start(), mid),
        KeyGroupRange::new(mid, range.end()),
        KeyGroupRange::new(0, range.start()),
        KeyGroupRange::new(range.end(), u16::MAX),
    ] {
        assert!(read(part) == of(part), "reading {part} disagrees");
    }
    let mut groups: Vec<u16> = all.iter().map(|(_, key, _)| key_group(key)).collect();
    groups.dedup();
    for kg in groups.into_iter().take(SINGLE_READS) {
        let part = KeyGroupRange::new(kg, kg);
        assert!(
            read(part) == of(part),
            "reading key group {kg} alone disagrees"
        );
    }
}

/// The stream cairn writes for `entries`.
fn write(
    max: MaxParallelism,
    range: KeyGroupRange,
    states: &[StateMeta],
    entries: &[Entry],
) -> Vec<u8> {
    let written = CanonicalWriter::new(Vec::new(), max, range, states).and_then(|mut writer| {
        for (state, key, value) in entries {
            writer.add(*state, key, value)?;
        }
        writer.finish()
    });
    match written {
        Ok(bytes) => bytes,
        Err(e) => panic!("the writer refuses entries the reader accepted: {e}"),
    }
}

type Recipe = (MaxParallelism, KeyGroupRange, Vec<StateMeta>, Vec<Entry>);

/// A subtask's range, its states and sorted entries; now and then one value over a block.
fn stream_recipe(u: &mut Unstructured<'_>) -> arbitrary::Result<Recipe> {
    let max = recipe::max_parallelism(u)?;
    let parallelism = u.int_in_range(1..=max.get().min(4))?;
    let subtask = u.int_in_range(0..=parallelism - 1)?;
    let Ok(range) = max.subtask_range(subtask, parallelism) else {
        panic!("subtask {subtask} of {parallelism} under {max}");
    };
    let states = recipe::states(u, 3)?;
    let mut entries = Vec::new();
    let mut big = false;
    if !states.is_empty() {
        for _ in 0..recipe::count(u, 40)? {
            let kg = range.start() + u.int_in_range(0..=range.end() - range.start())?;
            let state = u.int_in_range(0..=states.len() - 1)? as u32;
            let mut key = kg.to_be_bytes().to_vec();
            key.extend_from_slice(&recipe::bytes(u, 12)?);
            // One byte in 256, at most once a stream (not `ratio`, which says yes to every
            // entry once the bytes run out).
            let value = if !big && u.arbitrary::<u8>()? == 0xB1 {
                big = true;
                // Crosses block boundaries: the writer cuts inside the entry.
                let len = u.int_in_range(BLOCK_CAP - 8..=2 * BLOCK_CAP + 8)?;
                let seed: u8 = u.arbitrary()?;
                (0..len).map(|i| (i as u8).wrapping_mul(seed | 1)).collect()
            } else {
                recipe::bytes(u, 24)?
            };
            entries.push((state, key, value));
        }
    }
    entries.sort_by(|a, b| (key_group(&a.1), a.0, &a.1).cmp(&(key_group(&b.1), b.0, &b.1)));
    entries.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1);
    Ok((max, range, states, entries))
}

/// Writes the entries, reads all back and one random part.
fn check_written(
    u: &mut Unstructured<'_>,
    max: MaxParallelism,
    range: KeyGroupRange,
    states: &[StateMeta],
    entries: &[Entry],
) {
    let bytes = write(max, range, states, entries);
    let store = MemStore::new(stream_path(), bytes.clone());
    let file = stream_file(bytes.len());
    let reader = match CanonicalReader::open(&store, &file) {
        Ok(reader) => reader,
        Err(e) => panic!("a stream cairn wrote is refused: {e}"),
    };
    assert_eq!(reader.states(), states);
    assert_eq!(reader.key_groups(), range);
    match read_entries(&reader, range) {
        Ok(all) => assert!(
            all == entries,
            "a stream cairn wrote reads back differently"
        ),
        Err(e) => panic!("a stream cairn wrote fails to read: {e}"),
    }
    if let (Ok(a), Ok(b)) = (u.arbitrary::<u16>(), u.arbitrary::<u16>()) {
        let part = KeyGroupRange::new(a.min(b), a.max(b));
        let expected: Vec<Entry> = entries
            .iter()
            .filter(|(_, key, _)| part.contains(key_group(key)))
            .cloned()
            .collect();
        match read_entries(&reader, part) {
            Ok(got) => assert!(got == expected, "reading {part} of a written stream"),
            Err(e) => panic!("{part} of a stream cairn wrote fails to read: {e}"),
        }
    }
}
