//! Savepoints: canonical and native, restored into either backend at any parallelism,
//! relocatable, independent of the checkpoints beside them.

mod common;

use std::sync::Arc;

use cairn::{
    Bincode, CheckpointStorage, Error, LocalStore, MaxParallelism, Retention, SavepointFormat,
    SnapshotStore, StateDescriptor, SubStore, Utf8,
};
use common::job::*;
use common::Kind;

const KINDS: [Kind; 2] = [Kind::Heap, Kind::RocksDb];

fn root() -> (tempfile::TempDir, Arc<dyn SnapshotStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    (dir, store)
}

/// The store of one savepoint directory: what a restore reads from.
fn savepoint_store(
    root: &Arc<dyn SnapshotStore>,
    dir: &cairn::StoragePath,
) -> Arc<dyn SnapshotStore> {
    Arc::new(SubStore::new(root.clone(), dir.clone()))
}

#[test]
fn savepoints_restore_at_any_parallelism_into_either_backend() {
    let max = MaxParallelism::new(64).unwrap();
    for from in KINDS {
        for format in [SavepointFormat::Canonical, SavepointFormat::Native] {
            let (_dir, root) = root();
            let job = Job::new(from, max, 2);
            let (mut model, mut rng) = (Model::default(), Rng(31));
            job.write(&mut model, &mut rng, 400, 2_000);
            let (dir, snapshot) = job.savepoint(&root, 1, format).unwrap();
            // Stop with savepoint: the backends close after it.
            for subtask in &job.subtasks {
                subtask.close().unwrap();
            }
            assert!(dir.as_str().starts_with("savepoint-1-"), "{dir}");
            assert_eq!(snapshot.kind, cairn::SnapshotKind::Savepoint);
            // Every path is inside the savepoint directory.
            let store = savepoint_store(&root, &dir);
            assert_eq!(cairn::read_savepoint(store.as_ref()).unwrap(), *snapshot);
            for file in snapshot.files() {
                assert!(store.exists(&file.path).unwrap(), "{}", file.path);
                assert!(!file.is_shared());
            }
            // A native savepoint of RocksDB is RocksDB's files; anything else is canonical.
            for &to in restore_targets(from, format) {
                for parallelism in [1, 2, 3, 7] {
                    eprintln!("{from:?} {format:?} savepoint -> {to:?} at {parallelism}");
                    Job::restore(to, &store, &snapshot, max, parallelism)
                        .unwrap()
                        .check(&model);
                }
            }
            if restore_targets(from, format) == [Kind::RocksDb] {
                let err = Job::restore(Kind::Heap, &store, &snapshot, max, 2)
                    .err()
                    .unwrap();
                assert!(matches!(err, Error::Restore { .. }), "{err}");
            }
        }
    }
}

#[test]
fn canonical_savepoints_carry_state_between_backends_and_back() {
    let max = MaxParallelism::new(32).unwrap();
    let (_dir, root) = root();
    let rocks = Job::new(Kind::RocksDb, max, 2);
    let (mut model, mut rng) = (Model::default(), Rng(37));
    rocks.write(&mut model, &mut rng, 300, 1_500);
    let (dir, first) = rocks
        .savepoint(&root, 1, SavepointFormat::Canonical)
        .unwrap();
    let heap = Job::restore(Kind::Heap, &savepoint_store(&root, &dir), &first, max, 3).unwrap();
    heap.check(&model);
    heap.write(&mut model, &mut rng, 300, 500);
    let (dir, second) = heap
        .savepoint(&root, 2, SavepointFormat::Canonical)
        .unwrap();
    let back = Job::restore(
        Kind::RocksDb,
        &savepoint_store(&root, &dir),
        &second,
        max,
        2,
    )
    .unwrap();
    back.check(&model);
}

#[test]
fn a_moved_savepoint_still_restores() {
    let max = MaxParallelism::new(16).unwrap();
    for kind in KINDS {
        for format in [SavepointFormat::Canonical, SavepointFormat::Native] {
            let (dir, root) = root();
            let job = Job::new(kind, max, 2);
            let (mut model, mut rng) = (Model::default(), Rng(41));
            job.write(&mut model, &mut rng, 200, 1_000);
            let (savepoint, _) = job.savepoint(&root, 1, format).unwrap();
            let elsewhere = tempfile::tempdir().unwrap();
            let moved = elsewhere.path().join("kept-for-the-upgrade");
            std::fs::rename(dir.path().join(savepoint.as_str()), &moved).unwrap();
            let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(&moved).unwrap());
            let snapshot = cairn::read_savepoint(store.as_ref()).unwrap();
            Job::restore(kind, &store, &snapshot, max, 3)
                .unwrap()
                .check(&model);
        }
    }
}

#[test]
fn a_savepoint_outlives_the_checkpoints_beside_it_and_leaves_their_chain_alone() {
    let max = MaxParallelism::new(16).unwrap();
    for format in [SavepointFormat::Native, SavepointFormat::Canonical] {
        let (_dir, root) = root();
        let storage = CheckpointStorage::open(root.clone(), Retention::default()).unwrap();
        let job = Job::new(Kind::RocksDb, max, 2);
        let (mut model, mut rng) = (Model::default(), Rng(43));
        job.write(&mut model, &mut rng, 2_000, 8_000);
        job.checkpoint(&storage, 1).unwrap();

        let pending = storage.begin_savepoint(format).unwrap();
        assert_eq!(pending.id(), 2);
        let (dir, savepoint) = job.savepoint_into(pending).unwrap();
        let at_savepoint = model.clone();

        // The next checkpoint is still incremental against checkpoint 1.
        job.write(&mut model, &mut rng, 2_000, 20);
        let third = job.checkpoint(&storage, 3).unwrap();
        let shared_bytes = |creator: u64| -> u64 {
            third
                .files()
                .filter(|f| cairn::shared_file_creator(&f.path) == Some(creator))
                .map(|f| f.size)
                .sum()
        };
        let (reused, uploaded) = (shared_bytes(1), shared_bytes(3));
        assert!(
            reused > 0 && uploaded * 5 < reused,
            "{format:?}: checkpoint 3 referenced {reused} bytes of checkpoint 1's SST files \
             and uploaded {uploaded}"
        );

        // Checkpoints come and go, garbage is collected; the savepoint stays.
        for id in 4..=6 {
            job.write(&mut model, &mut rng, 2_000, 2_000);
            job.checkpoint(&storage, id).unwrap();
        }
        assert_eq!(storage.completed(), vec![6]);
        storage.collect_garbage().unwrap();
        let store = savepoint_store(&root, &dir);
        Job::restore(Kind::RocksDb, &store, &savepoint, max, 3)
            .unwrap()
            .check(&at_savepoint);
        assert_eq!(cairn::list_savepoints(root.as_ref()).unwrap(), vec![dir]);
        // Cancelling the job deletes its checkpoints, never a savepoint.
        storage.cancel().unwrap();
        Job::restore(Kind::RocksDb, &store, &savepoint, max, 1)
            .unwrap()
            .check(&at_savepoint);
    }
}

#[test]
fn a_codec_version_change_is_refused_naming_the_state_and_both_versions() {
    let max = MaxParallelism::new(16).unwrap();
    for kind in KINDS {
        let (_dir, root) = root();
        let job = Job::new(kind, max, 1);
        let v1 = StateDescriptor::<String, u64>::new("totals", Utf8, Bincode::new());
        job.subtasks[0]
            .value_state(&v1)
            .unwrap()
            .update(&"k".to_string(), &7)
            .unwrap();
        let (dir, snapshot) = job.savepoint(&root, 1, SavepointFormat::Canonical).unwrap();
        for to in KINDS {
            let restored =
                Job::restore(to, &savepoint_store(&root, &dir), &snapshot, max, 1).unwrap();
            let v2 = StateDescriptor::<String, u64>::new("totals", Utf8, Bincode::with_version(2));
            let err = restored.subtasks[0].value_state(&v2).err().unwrap();
            let message = err.to_string();
            assert!(matches!(err, Error::SchemaIncompatible { .. }), "{message}");
            assert!(message.contains("'totals'"), "{message}");
            assert!(
                message.contains("v1") && message.contains("v2"),
                "{message}"
            );
            // Registered as before, it reads.
            let value = restored.subtasks[0]
                .value_state(&v1)
                .unwrap()
                .get(&"k".to_string());
            assert_eq!(value.unwrap(), Some(7));
        }
    }
}

/// What one source subtask's operator state reads: offsets, the union, the config.
type SourceState = (Vec<u64>, Vec<u64>, Vec<(String, u64)>);

/// What every subtask's operator state of a source reads after a restore.
fn read_source(stores: &[cairn::OperatorStateStore]) -> Vec<SourceState> {
    stores
        .iter()
        .map(|s| {
            let offsets = s
                .list_state::<u64>("offsets", cairn::BigEndian)
                .unwrap()
                .get()
                .unwrap();
            let all = s
                .union_list_state::<u64>("partitions", cairn::BigEndian)
                .unwrap()
                .get()
                .unwrap();
            let config = s
                .broadcast_state::<String, u64>("config", Utf8, cairn::BigEndian)
                .unwrap()
                .entries()
                .unwrap();
            (offsets, all, config)
        })
        .collect()
}

/// Takes a snapshot of a source's operator state (no keyed state) and restores it at
/// `parallelism`.
fn snapshot_and_restore(
    storage: &CheckpointStorage,
    stores: &[cairn::OperatorStateStore],
    max: MaxParallelism,
    kind: Option<SavepointFormat>,
    id: u64,
    parallelism: u32,
) -> Vec<cairn::OperatorStateStore> {
    let mut pending = match kind {
        None => storage.begin(id).unwrap(),
        Some(format) => storage.begin_savepoint(format).unwrap(),
    };
    let p = stores.len() as u32;
    for (i, s) in stores.iter().enumerate() {
        pending
            .acknowledge_operator_state("source", p, max, i as u32, s.snapshot())
            .unwrap();
    }
    let job = storage.commit(pending).unwrap();
    // Read back from storage: what is restored is what was persisted.
    let job = match kind {
        None => cairn::read_checkpoint(storage.store().as_ref(), job.checkpoint_id).unwrap(),
        Some(_) => {
            let dir = cairn::list_savepoints(storage.store().as_ref())
                .unwrap()
                .pop()
                .unwrap();
            cairn::read_savepoint(&SubStore::new(storage.store().clone(), dir)).unwrap()
        }
    };
    assert!(
        job.operator("source").unwrap().subtasks.is_empty(),
        "no keyed state"
    );
    job.restore_plan("source", parallelism, max)
        .unwrap()
        .into_iter()
        .map(|plan| {
            assert!(plan.handles.is_empty());
            cairn::OperatorStateStore::restore(plan.operator_state)
        })
        .collect()
}

#[test]
fn operator_state_is_split_unioned_and_broadcast_on_rescale() {
    let max = MaxParallelism::new(16).unwrap();
    for kind in [
        None,
        Some(SavepointFormat::Canonical),
        Some(SavepointFormat::Native),
    ] {
        let (_dir, root) = root();
        let storage = CheckpointStorage::open(root.clone(), Retention::default()).unwrap();
        // Three source subtasks reading partitions 0..6, two each.
        let three: Vec<cairn::OperatorStateStore> = (0..3u64)
            .map(|i| {
                let s = cairn::OperatorStateStore::new();
                s.list_state::<u64>("offsets", cairn::BigEndian)
                    .unwrap()
                    .update(&[100 + 2 * i, 101 + 2 * i])
                    .unwrap();
                s.union_list_state::<u64>("partitions", cairn::BigEndian)
                    .unwrap()
                    .update(&[i])
                    .unwrap();
                let mut config = s
                    .broadcast_state::<String, u64>("config", Utf8, cairn::BigEndian)
                    .unwrap();
                config.put(&"batch".to_string(), &64).unwrap();
                config.put(&"linger".to_string(), &5).unwrap();
                s
            })
            .collect();
        let config = vec![("batch".to_string(), 64), ("linger".to_string(), 5)];

        let two = snapshot_and_restore(&storage, &three, max, kind, 1, 2);
        // Offsets 100..106 dealt round-robin; every subtask has the whole union and config.
        assert_eq!(
            read_source(&two),
            vec![
                (vec![100, 102, 104], vec![0, 1, 2], config.clone()),
                (vec![101, 103, 105], vec![0, 1, 2], config.clone()),
            ],
            "{kind:?}: 3 -> 2"
        );
        // Each subtask keeps only its own partitions of the union before the next snapshot.
        for (i, s) in two.iter().enumerate() {
            let mut union = s
                .union_list_state::<u64>("partitions", cairn::BigEndian)
                .unwrap();
            union.update(&[i as u64]).unwrap();
        }
        let five = snapshot_and_restore(&storage, &two, max, kind, 2, 5);
        assert_eq!(
            read_source(&five),
            vec![
                (vec![100, 105], vec![0, 1], config.clone()),
                (vec![102], vec![0, 1], config.clone()),
                (vec![104], vec![0, 1], config.clone()),
                (vec![101], vec![0, 1], config.clone()),
                (vec![103], vec![0, 1], config.clone()),
            ],
            "{kind:?}: 2 -> 5"
        );
    }
}
