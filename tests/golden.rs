//! The golden snapshots committed under `tests/golden/`, that every later cairn must still
//! read and restore: per format version `N`, a checkpoint (`checkpoint-vN/`), a canonical
//! savepoint (`canonical-savepoint-vN/`) and a native savepoint (`native-savepoint-vN/`).
//!
//! Each holds the operators `counts-rocksdb` (RocksDB, parallelism 2) and `counts-heap`
//! (heap, parallelism 1), both of max parallelism 8, each with a value, a list and a map
//! state filled by [`expected`], and `source` (parallelism 2, operator state only: offsets,
//! a union list and a broadcast map). Version 2 adds timers: both keyed operators hold the
//! timer service `window-end` filled by [`expected_timers`]. Regenerate a version's files
//! only when adding that version, never to make this test pass:
//! `CAIRN_WRITE_GOLDEN=<N> cargo test --test golden`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::{
    BigEndian, CheckpointStorage, HeapBackend, JobSnapshot, KeyedStateStore, LocalStore,
    ManualClock, MapStateDescriptor, MaxParallelism, OperatorStateStore, PendingCheckpoint,
    Retention, RocksDbBackend, SavepointFormat, SnapshotStore, StateDescriptor, StoragePath,
    TimeDomain, Utf8,
};

const ROCKSDB_OPERATOR: &str = "counts-rocksdb";
const HEAP_OPERATOR: &str = "counts-heap";
const SOURCE: &str = "source";
const TIMERS: &str = "window-end";

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
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

/// The timers of version 2's keyed operators: an event-time timer per key in the
/// namespace of its parity, a processing-time timer for every fifth key, and one timer
/// registered and deleted (`word-3` at 3 000).
fn expected_timers() -> Vec<(TimeDomain, u64, String, Vec<u8>)> {
    let mut timers = Vec::new();
    for i in 0..40u64 {
        timers.push((
            TimeDomain::EventTime,
            1_000 + i % 7,
            format!("word-{i}"),
            vec![(i % 2) as u8],
        ));
        if i.is_multiple_of(5) {
            timers.push((
                TimeDomain::ProcessingTime,
                5_000 + i,
                format!("word-{i}"),
                Vec::new(),
            ));
        }
    }
    timers
}

fn fill_timers(store: &KeyedStateStore) {
    let range = store.key_group_range();
    let mut service = store.timer_service(TIMERS, Utf8).unwrap();
    for (domain, timestamp, key, namespace) in expected_timers() {
        if !range.contains(max().key_group_of(key.as_bytes())) {
            continue;
        }
        match domain {
            TimeDomain::EventTime => service.register_event_time_timer(&key, &namespace, timestamp),
            TimeDomain::ProcessingTime => {
                service.register_processing_time_timer(&key, &namespace, timestamp)
            }
        }
        .unwrap();
    }
    let deleted = "word-3".to_string();
    if range.contains(max().key_group_of(deleted.as_bytes())) {
        service
            .register_event_time_timer(&deleted, b"", 3_000)
            .unwrap();
        service
            .delete_event_time_timer(&deleted, b"", 3_000)
            .unwrap();
    }
}

/// Fires every timer of `stores` and checks them against [`expected_timers`]: each once, on
/// its owner, in timestamp order.
fn check_timers(stores: &[KeyedStateStore], operator: &str) {
    let mut fired = Vec::new();
    for store in stores {
        let mut service = store.timer_service(TIMERS, Utf8).unwrap();
        service.advance_watermark(u64::MAX);
        service.advance_processing_time(u64::MAX);
        let mut last = (0, 0);
        while let Some(t) = service.poll_event_time().unwrap() {
            let kg = max().key_group_of(t.key.as_bytes());
            assert!(store.key_group_range().contains(kg), "{operator}: {t:?}");
            assert!(
                (t.timestamp, kg) >= last,
                "{operator}: out of order at {t:?}"
            );
            last = (t.timestamp, kg);
            fired.push((TimeDomain::EventTime, t.timestamp, t.key, t.namespace));
        }
        while let Some(t) = service.poll_processing_time().unwrap() {
            fired.push((TimeDomain::ProcessingTime, t.timestamp, t.key, t.namespace));
        }
    }
    fired.sort();
    let mut expected = expected_timers();
    expected.sort();
    assert_eq!(fired, expected, "{operator}");
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

/// The source's operator state in subtask `i` of 2.
fn source_state(i: u64) -> OperatorStateStore {
    let store = OperatorStateStore::new();
    store
        .list_state::<u64>("offsets", BigEndian)
        .unwrap()
        .update(&[10 + i, 20 + i])
        .unwrap();
    store
        .union_list_state::<u64>("partitions", BigEndian)
        .unwrap()
        .update(&[i])
        .unwrap();
    store
        .broadcast_state::<String, u64>("config", Utf8, BigEndian)
        .unwrap()
        .put(&"batch".to_string(), &64)
        .unwrap();
    store
}

/// Writes the golden snapshots of format `version` (only with `CAIRN_WRITE_GOLDEN=<version>`).
fn write_golden(version: u32) {
    let clock = ManualClock::new(1_763_700_000_000);
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
        if version >= 2 {
            fill_timers(store);
        }
    }
    let sources = [source_state(0), source_state(1)];
    let take = |mut pending: PendingCheckpoint| -> PendingCheckpoint {
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
        for (i, source) in sources.iter().enumerate() {
            pending
                .acknowledge_operator_state(SOURCE, 2, max(), i as u32, source.snapshot())
                .unwrap();
        }
        pending
    };

    let root = golden_dir(&format!("checkpoint-v{version}"));
    let _ = std::fs::remove_dir_all(&root);
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(&root).unwrap());
    let storage = CheckpointStorage::open(store, Retention::default())
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    storage.commit(take(storage.begin(1).unwrap())).unwrap();

    for (name, format) in [
        ("canonical-savepoint", SavepointFormat::Canonical),
        ("native-savepoint", SavepointFormat::Native),
    ] {
        let name = format!("{name}-v{version}");
        // Written in a scratch root, then moved: a savepoint is its own directory.
        let scratch = tempfile::tempdir().unwrap();
        let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(scratch.path()).unwrap());
        let pending = cairn::begin_savepoint(store, 2, format, &clock).unwrap();
        let dir = pending.savepoint_dir().unwrap().clone();
        take(pending).commit_savepoint().unwrap();
        let target = golden_dir(&name);
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(scratch.path().join(dir.as_str()), &target).unwrap();
    }
}

/// Restores every operator of `job` from `store` at parallelism 1, 2 and 3 and checks it,
/// and its timers if it has them.
fn restore_everything(job: &JobSnapshot, store: &Arc<dyn SnapshotStore>, timers: bool) {
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
        if timers {
            check_timers(&rocks, ROCKSDB_OPERATOR);
        }
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
        if timers {
            check_timers(&heap, HEAP_OPERATOR);
        }
        let offsets: Vec<Vec<u64>> = job
            .restore_plan(SOURCE, parallelism, max())
            .unwrap()
            .into_iter()
            .map(|plan| {
                let store = OperatorStateStore::restore(plan.operator_state);
                let config = store
                    .broadcast_state::<String, u64>("config", Utf8, BigEndian)
                    .unwrap();
                assert_eq!(config.get(&"batch".to_string()).unwrap(), Some(64));
                let union = store
                    .union_list_state::<u64>("partitions", BigEndian)
                    .unwrap();
                assert_eq!(union.get().unwrap(), vec![0, 1]);
                store
                    .list_state::<u64>("offsets", BigEndian)
                    .unwrap()
                    .get()
                    .unwrap()
            })
            .collect();
        let expected: Vec<Vec<u64>> = match parallelism {
            1 => vec![vec![10, 20, 11, 21]],
            2 => vec![vec![10, 11], vec![20, 21]],
            _ => vec![vec![10, 21], vec![20], vec![11]],
        };
        assert_eq!(offsets, expected, "offsets at parallelism {parallelism}");
    }
}

/// The bytes decode and encode back to themselves: the encoding is pinned, version and all.
fn check_pinned(store: &dyn SnapshotStore, path: &str, version: u16) {
    let path = StoragePath::new(path).unwrap();
    let bytes = store.get(&path, 1 << 20).unwrap();
    assert_eq!(&bytes[..8], b"CAIRN-MD");
    assert_eq!(u16::from_be_bytes([bytes[8], bytes[9]]), version);
    assert_eq!(JobSnapshot::decode(&bytes, &path).unwrap().encode(), bytes);
}

/// Writes a version's golden files first if `CAIRN_WRITE_GOLDEN` names it.
fn maybe_write(version: u32) {
    if std::env::var("CAIRN_WRITE_GOLDEN").ok() == Some(version.to_string()) {
        write_golden(version);
    }
}

#[test]
fn the_version_1_snapshots_still_restore() {
    maybe_write(1);
    check_version(1);
}

#[test]
fn the_version_2_snapshots_with_timers_still_restore() {
    maybe_write(2);
    check_version(2);
}

fn check_version(version: u16) {
    let timers = version >= 2;
    let store: Arc<dyn SnapshotStore> =
        Arc::new(LocalStore::new(golden_dir(&format!("checkpoint-v{version}"))).unwrap());
    let job = cairn::latest_checkpoint(store.as_ref())
        .unwrap()
        .expect("golden checkpoint");
    assert_eq!(job.checkpoint_id, 1);
    assert_eq!(job.taken_at_millis, 1_763_700_000_000);
    check_pinned(store.as_ref(), "chk-1/_metadata", version);
    restore_everything(&job, &store, timers);

    for name in ["canonical-savepoint", "native-savepoint"] {
        let name = format!("{name}-v{version}");
        let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(golden_dir(&name)).unwrap());
        let job = cairn::read_savepoint(store.as_ref()).unwrap();
        assert_eq!(
            (job.checkpoint_id, job.kind),
            (2, cairn::SnapshotKind::Savepoint),
            "{name}"
        );
        check_pinned(store.as_ref(), "_metadata", version);
        restore_everything(&job, &store, timers);
    }
}
