//! The golden checkpoint: a small job checkpoint of format version 1, committed under
//! `tests/golden/checkpoint-v1/`, that every later cairn must still read and restore.
//!
//! It holds two operators: `counts-rocksdb` (RocksDB, parallelism 2) and `counts-heap` (heap,
//! parallelism 1), both of max parallelism 8, each with a value, a list and a map state
//! filled by [`expected`]. Regenerate it only when adding a new version's golden files, never
//! to make this test pass: `CAIRN_WRITE_GOLDEN=1 cargo test --test golden_checkpoint`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::{
    BigEndian, CheckpointStorage, HeapBackend, JobSnapshot, KeyedStateStore, LocalStore,
    ManualClock, MapStateDescriptor, MaxParallelism, Retention, RocksDbBackend, SnapshotStore,
    StateDescriptor, StoragePath, Utf8,
};

const ROCKSDB_OPERATOR: &str = "counts-rocksdb";
const HEAP_OPERATOR: &str = "counts-heap";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/checkpoint-v1")
}

fn max() -> MaxParallelism {
    MaxParallelism::new(8).unwrap()
}

fn value() -> StateDescriptor<String, u64> {
    StateDescriptor::new("count", Utf8, BigEndian)
}
fn list() -> StateDescriptor<String, u32> {
    StateDescriptor::new("seen", Utf8, BigEndian)
}
fn map() -> MapStateDescriptor<String, u8, u64> {
    MapStateDescriptor::new("by-hour", Utf8, BigEndian, BigEndian)
}

/// A key's count, list and map.
type KeyState = (u64, Vec<u32>, BTreeMap<u8, u64>);

/// Key `word-<i>` holds count `i * 3`, list `[i, i + 1]` and map `{i % 4: i}`.
fn expected() -> BTreeMap<String, KeyState> {
    (0..40u32)
        .map(|i| {
            let map = BTreeMap::from([((i % 4) as u8, u64::from(i))]);
            (format!("word-{i}"), (u64::from(i) * 3, vec![i, i + 1], map))
        })
        .collect()
}

fn fill(store: &KeyedStateStore) {
    let range = store.key_group_range();
    for (key, (count, elements, entries)) in expected() {
        if !range.contains(max().key_group_of(key.as_bytes())) {
            continue;
        }
        store
            .value_state(&value())
            .unwrap()
            .update(&key, &count)
            .unwrap();
        store
            .list_state(&list())
            .unwrap()
            .add_all(&key, &elements)
            .unwrap();
        for (uk, v) in entries {
            store.map_state(&map()).unwrap().put(&key, &uk, &v).unwrap();
        }
    }
}

fn check(stores: &[KeyedStateStore], operator: &str) {
    let expected = expected();
    let mut found = 0;
    for store in stores {
        let range = store.key_group_range();
        for (key, (count, elements, entries)) in &expected {
            if !range.contains(max().key_group_of(key.as_bytes())) {
                continue;
            }
            found += 1;
            let got_count = store.value_state(&value()).unwrap().get(key).unwrap();
            let got_list: Vec<u32> = store
                .list_state(&list())
                .unwrap()
                .get(key)
                .unwrap()
                .collect();
            let got_map: BTreeMap<u8, u64> = store
                .map_state(&map())
                .unwrap()
                .iter(key)
                .unwrap()
                .map(|e| e.unwrap())
                .collect();
            assert_eq!(
                (got_count, &got_list, &got_map),
                (Some(*count), elements, entries),
                "{operator}: {key}"
            );
        }
    }
    assert_eq!(found, expected.len(), "{operator}: every key has one owner");
}

/// Writes the golden checkpoint (only with `CAIRN_WRITE_GOLDEN=1`).
fn write_golden() {
    let root = golden_dir();
    let _ = std::fs::remove_dir_all(&root);
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(&root).unwrap());
    let storage = CheckpointStorage::open(store, Retention::default())
        .unwrap()
        .with_clock(Arc::new(ManualClock::new(1_763_700_000_000)));
    let work = tempfile::tempdir().unwrap();
    let rocks: Vec<KeyedStateStore> = (0..2)
        .map(|i| {
            let range = max().subtask_range(i, 2).unwrap();
            let dir = work.path().join(format!("subtask-{i}"));
            KeyedStateStore::new(RocksDbBackend::builder(dir, max(), range).open().unwrap())
        })
        .collect();
    let heap = KeyedStateStore::new(HeapBackend::new(max(), cairn::KeyGroupRange::all(max())));
    for store in rocks.iter().chain([&heap]) {
        fill(store);
    }
    let mut pending = storage.begin(1).unwrap();
    for (i, store) in rocks.iter().enumerate() {
        let handle = store
            .backend()
            .snapshot(pending.request())
            .unwrap()
            .run()
            .unwrap();
        pending
            .acknowledge(ROCKSDB_OPERATOR, 2, max(), i as u32, handle)
            .unwrap();
    }
    let handle = heap
        .backend()
        .snapshot(pending.request())
        .unwrap()
        .run()
        .unwrap();
    pending
        .acknowledge(HEAP_OPERATOR, 1, max(), 0, handle)
        .unwrap();
    storage.commit(pending).unwrap();
}

#[test]
fn the_version_1_checkpoint_still_restores() {
    if std::env::var_os("CAIRN_WRITE_GOLDEN").is_some() {
        write_golden();
    }
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(golden_dir()).unwrap());
    let job = cairn::latest_checkpoint(store.as_ref())
        .unwrap()
        .expect("golden checkpoint");
    assert_eq!(job.checkpoint_id, 1);
    assert_eq!(job.taken_at_millis, 1_763_700_000_000);

    // The bytes decode and encode back to themselves: the encoding is pinned.
    let path = StoragePath::new("chk-1/_metadata").unwrap();
    let bytes = store.get(&path, 1 << 20).unwrap();
    assert_eq!(&bytes[..8], b"CAIRN-MD");
    assert_eq!(JobSnapshot::decode(&bytes, &path).unwrap().encode(), bytes);

    let restore_dirs = tempfile::tempdir().unwrap();
    for parallelism in [1, 2, 3] {
        let rocks: Vec<KeyedStateStore> = job
            .restore_plan(ROCKSDB_OPERATOR, parallelism, max())
            .unwrap()
            .into_iter()
            .map(|plan| {
                let dir = restore_dirs
                    .path()
                    .join(format!("p{parallelism}-{}", plan.subtask));
                let backend = RocksDbBackend::builder(dir, max(), plan.key_groups)
                    .restore_from(store.clone(), plan.handles)
                    .open()
                    .unwrap();
                KeyedStateStore::new(backend)
            })
            .collect();
        check(&rocks, ROCKSDB_OPERATOR);
        let heap: Vec<KeyedStateStore> = job
            .restore_plan(HEAP_OPERATOR, parallelism, max())
            .unwrap()
            .into_iter()
            .map(|plan| {
                let backend = HeapBackend::restore(
                    max(),
                    plan.key_groups,
                    Arc::new(ManualClock::new(0)),
                    store.as_ref(),
                    &plan.handles,
                )
                .unwrap();
                KeyedStateStore::new(backend)
            })
            .collect();
        check(&heap, HEAP_OPERATOR);
    }
}
