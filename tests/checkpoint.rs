//! Checkpoints of whole jobs: taken on every subtask, committed as one `_metadata`,
//! retained and collected, and restored at the same or another parallelism, on both
//! backends, against a model of what every key held at each checkpoint.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cairn::{
    CheckpointStorage, Error, LocalStore, MaxParallelism, Retention, RocksDbBackend, SnapshotStore,
    SnapshotWrite, StoragePath,
};
use common::Kind;
use tempfile::TempDir;

use common::job::*;

fn storage(retained: usize) -> (TempDir, Arc<dyn SnapshotStore>, CheckpointStorage) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let storage =
        CheckpointStorage::open(store.clone(), Retention::new(retained).unwrap()).unwrap();
    (dir, store, storage)
}

const KINDS: [Kind; 2] = [Kind::Heap, Kind::RocksDb];

#[test]
fn a_restore_gives_exactly_the_latest_checkpoint() {
    for kind in KINDS {
        let max = MaxParallelism::new(32).unwrap();
        let (_dir, store, storage) = storage(1);
        let job = Job::new(kind, max, 2);
        let (mut model, mut rng) = (Model::default(), Rng(7));
        job.write(&mut model, &mut rng, 200, 1_000);
        job.checkpoint(&storage, 1).unwrap();
        job.write(&mut model, &mut rng, 200, 1_000);
        job.checkpoint(&storage, 2).unwrap();
        let at_checkpoint = model.clone();
        job.write(&mut model, &mut rng, 200, 500);
        drop(job); // the crash: everything after checkpoint 2 is lost

        let latest = cairn::latest_checkpoint(store.as_ref()).unwrap().unwrap();
        assert_eq!(latest.checkpoint_id, 2);
        assert_eq!(storage.completed(), vec![2]);
        let restored = Job::restore(kind, &store, &latest, max, 2).unwrap();
        restored.check(&at_checkpoint);
    }
}

#[test]
fn restores_at_other_parallelisms_equal_the_model() {
    for kind in KINDS {
        let max = MaxParallelism::new(64).unwrap();
        for chain in [&[1u32, 2, 3, 1][..], &[4, 3]] {
            let (_dir, store, storage) = storage(1);
            let mut job = Job::new(kind, max, chain[0]);
            let (mut model, mut rng) = (Model::default(), Rng(11));
            for (step, &parallelism) in chain.iter().enumerate().skip(1) {
                job.write(&mut model, &mut rng, 300, 1_500);
                let id = step as u64;
                let snapshot = job.checkpoint(&storage, id).unwrap();
                drop(job);
                job = Job::restore(kind, &store, &snapshot, max, parallelism).unwrap();
                eprintln!("{kind:?}: {chain:?}: restored at parallelism {parallelism}");
                job.check(&model);
            }
            // The restored job goes on: it writes and checkpoints like any other.
            job.write(&mut model, &mut rng, 300, 500);
            let last = job.checkpoint(&storage, chain.len() as u64).unwrap();
            let again = Job::restore(kind, &store, &last, max, job.parallelism).unwrap();
            again.check(&model);
        }
    }
}

#[test]
fn an_incremental_checkpoint_after_touching_one_percent_writes_a_small_fraction() {
    let max = MaxParallelism::DEFAULT;
    let (_dir, _store, storage) = storage(1);
    let job = Job::new(Kind::RocksDb, max, 1);
    let store = &job.subtasks[0];
    let mut value = store.value_state(&value_descriptor()).unwrap();
    let mut map = store.map_state(&map_descriptor()).unwrap();
    let keys = 20_000u64;
    for k in 0..keys {
        let key = format!("key-{k:08}");
        value.update(&key, &k).unwrap();
        for h in 0..4u8 {
            map.put(&key, &h, &(k * u64::from(h))).unwrap();
        }
    }
    let first = job.checkpoint(&storage, 1).unwrap();
    let first_written = first.operators[0].subtasks[0].written_bytes();
    for k in (0..keys).step_by(100) {
        value.update(&format!("key-{k:08}"), &(k + 1)).unwrap();
    }
    let second = job.checkpoint(&storage, 2).unwrap();
    let handle = &second.operators[0].subtasks[0];
    let second_written = handle.written_bytes();
    eprintln!(
        "first checkpoint wrote {first_written} bytes; after 1% updates the second wrote \
         {second_written} of {} ({:.2}%)",
        handle.total_bytes(),
        100.0 * second_written as f64 / handle.total_bytes() as f64
    );
    assert!(
        first_written > 500_000,
        "the first checkpoint holds the state"
    );
    assert!(
        second_written * 20 < first_written,
        "the second checkpoint wrote {second_written} bytes, the first {first_written}"
    );
    // Everything the first wrote that is still live is referenced, not copied.
    let reused = handle
        .files
        .iter()
        .filter(|f| cairn::shared_file_creator(&f.path) == Some(1))
        .count();
    assert!(reused > 0);
    // So is RocksDB's OPTIONS file (~30 KiB, more than the 1% of updates flush here): only
    // MANIFEST and CURRENT are written again by every checkpoint.
    let options: Vec<_> = handle
        .files
        .iter()
        .filter(|f| f.name.starts_with("OPTIONS-"))
        .collect();
    assert_eq!(options.len(), 1, "{:?}", handle.files);
    assert_eq!(cairn::shared_file_creator(&options[0].path), Some(1));
    let private: Vec<&str> = handle
        .files
        .iter()
        .filter(|f| !f.is_shared())
        .map(|f| f.name.as_str())
        .collect();
    assert!(
        private
            .iter()
            .all(|n| n.starts_with("MANIFEST-") || *n == "CURRENT" || n.ends_with(".log")),
        "private files: {private:?}"
    );
}

#[test]
fn retention_keeps_exactly_the_files_of_the_retained_checkpoints() {
    for kind in KINDS {
        let max = MaxParallelism::new(16).unwrap();
        let (_dir, store, storage) = storage(2);
        let job = Job::new(kind, max, 2);
        let (mut model, mut rng) = (Model::default(), Rng(3));
        for id in 1..=10 {
            job.write(&mut model, &mut rng, 400, 800);
            job.checkpoint(&storage, id).unwrap();
        }
        assert_eq!(storage.completed(), vec![9, 10]);
        let mut expected: BTreeSet<String> = BTreeSet::new();
        for id in [9, 10] {
            let snapshot = storage.get(id).unwrap();
            expected.insert(format!("chk-{id}/_metadata"));
            expected.extend(snapshot.files().map(|f| f.path.to_string()));
        }
        let stored: BTreeSet<String> = store
            .list(None)
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(stored, expected, "{kind:?}");
        // Both retained checkpoints restore.
        for id in [9, 10] {
            let snapshot = storage.get(id).unwrap();
            Job::restore(kind, &store, &snapshot, max, 3).unwrap();
        }
    }
}

/// A store that fails every `create` after the first `allowed`, or holds writes until
/// released.
struct FaultyStore {
    inner: LocalStore,
    creates_left: AtomicUsize,
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl FaultyStore {
    fn new(root: &std::path::Path, allowed: usize) -> Self {
        FaultyStore {
            inner: LocalStore::new(root).unwrap(),
            creates_left: AtomicUsize::new(allowed),
            gate: Arc::new((Mutex::new(true), std::sync::Condvar::new())),
        }
    }

    fn close_gate(&self) {
        *self.gate.0.lock().unwrap() = false;
    }

    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl SnapshotStore for FaultyStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self, path: &StoragePath) -> cairn::Result<Box<dyn SnapshotWrite>> {
        let (open, cond) = &*self.gate;
        let mut guard = open.lock().unwrap();
        while !*guard {
            guard = cond.wait(guard).unwrap();
        }
        drop(guard);
        let left = self.creates_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(Error::Storage {
                op: "write",
                location: self.location(),
                path: path.to_string(),
                source: std::io::Error::other("injected failure"),
            });
        }
        self.creates_left.store(left - 1, Ordering::SeqCst);
        self.inner.create(path)
    }
    fn open(&self, path: &StoragePath) -> cairn::Result<Box<dyn Read + Send>> {
        self.inner.open(path)
    }
    fn read_range(
        &self,
        path: &StoragePath,
        offset: u64,
        len: u64,
    ) -> cairn::Result<Box<dyn Read + Send>> {
        self.inner.read_range(path, offset, len)
    }
    fn size(&self, path: &StoragePath) -> cairn::Result<Option<u64>> {
        self.inner.size(path)
    }
    fn list(&self, dir: Option<&StoragePath>) -> cairn::Result<Vec<StoragePath>> {
        self.inner.list(dir)
    }
    fn delete(&self, path: &StoragePath) -> cairn::Result<()> {
        self.inner.delete(path)
    }
}

#[test]
fn a_checkpoint_failing_midway_leaves_the_previous_one_restorable() {
    for kind in KINDS {
        let max = MaxParallelism::new(16).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let faulty = Arc::new(FaultyStore::new(dir.path(), usize::MAX));
        let store: Arc<dyn SnapshotStore> = faulty.clone();
        let storage = CheckpointStorage::open(store.clone(), Retention::default()).unwrap();
        let job = Job::new(kind, max, 2);
        let (mut model, mut rng) = (Model::default(), Rng(5));
        job.write(&mut model, &mut rng, 300, 1_000);
        job.checkpoint(&storage, 1).unwrap();
        let at_one = model.clone();
        job.write(&mut model, &mut rng, 300, 1_000);
        faulty.creates_left.store(1, Ordering::SeqCst);
        let err = job.checkpoint(&storage, 2).unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(storage.completed(), vec![1]);
        assert!(!store.list(None).unwrap().iter().any(|p| p.top() == "chk-2"));

        // A new storage (after a crash) finds checkpoint 1 as the latest and restores it.
        let reopened = CheckpointStorage::open(store.clone(), Retention::default()).unwrap();
        let latest = reopened.latest().unwrap();
        assert_eq!(latest.checkpoint_id, 1);
        Job::restore(kind, &store, &latest, max, 2)
            .unwrap()
            .check(&at_one);

        // The job goes on; ids increase past every id begun, and the next one succeeds.
        faulty.creates_left.store(usize::MAX, Ordering::SeqCst);
        assert!(matches!(storage.begin(2), Err(Error::Checkpoint { .. })));
        let three = job.checkpoint(&reopened, 3).unwrap();
        Job::restore(kind, &store, &three, max, 1)
            .unwrap()
            .check(&model);
    }
}

#[test]
fn state_is_read_and_written_while_the_asynchronous_phase_runs() {
    for kind in KINDS {
        let max = MaxParallelism::new(16).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let faulty = Arc::new(FaultyStore::new(dir.path(), usize::MAX));
        let store: Arc<dyn SnapshotStore> = faulty.clone();
        let storage = CheckpointStorage::open(store.clone(), Retention::default()).unwrap();
        let job = Job::new(kind, max, 1);
        let (mut model, mut rng) = (Model::default(), Rng(9));
        job.write(&mut model, &mut rng, 100, 500);
        let at_checkpoint = model.clone();

        let mut pending = storage.begin(1).unwrap();
        faulty.close_gate(); // every upload now waits
        let task = job.subtasks[0]
            .backend()
            .snapshot(pending.request())
            .unwrap()
            .spawn()
            .unwrap();
        // The asynchronous phase is stuck uploading; state access goes on.
        job.write(&mut model, &mut rng, 100, 500);
        job.check(&model);
        assert!(!task.is_finished());
        faulty.open_gate();
        let handle = task.wait().unwrap();
        pending.acknowledge(OPERATOR, 1, max, 0, handle).unwrap();
        let snapshot = storage.commit(pending).unwrap();
        // The checkpoint holds the state of its synchronous phase, not the later writes.
        Job::restore(kind, &store, &snapshot, max, 1)
            .unwrap()
            .check(&at_checkpoint);
    }
}

#[test]
fn a_restore_checks_files_before_using_them() {
    for kind in KINDS {
        let max = MaxParallelism::new(16).unwrap();
        let (dir, store, storage) = storage(1);
        let job = Job::new(kind, max, 1);
        let (mut model, mut rng) = (Model::default(), Rng(13));
        job.write(&mut model, &mut rng, 100, 500);
        let snapshot = job.checkpoint(&storage, 1).unwrap();
        let biggest = snapshot.files().max_by_key(|f| f.size).unwrap().clone();
        let on_disk = dir.path().join(biggest.path.as_str());
        let original = std::fs::read(&on_disk).unwrap();

        // A flipped byte: same size, other CRC32.
        let mut flipped = original.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        std::fs::write(&on_disk, &flipped).unwrap();
        let err = Job::restore(kind, &store, &snapshot, max, 1).err().unwrap();
        assert!(matches!(err, Error::Corrupted { .. }), "{kind:?}: {err}");

        // A truncated file.
        std::fs::write(&on_disk, &original[..original.len() - 1]).unwrap();
        let err = Job::restore(kind, &store, &snapshot, max, 1).err().unwrap();
        assert!(matches!(err, Error::Corrupted { .. }), "{kind:?}: {err}");

        // A missing file.
        std::fs::remove_file(&on_disk).unwrap();
        let err = Job::restore(kind, &store, &snapshot, max, 1).err().unwrap();
        assert!(
            matches!(err, Error::NotFound { .. } | Error::Restore { .. }),
            "{kind:?}: {err}"
        );

        // Put back, it restores; with another max parallelism, it is refused.
        std::fs::write(&on_disk, &original).unwrap();
        Job::restore(kind, &store, &snapshot, max, 1)
            .unwrap()
            .check(&model);
        let err = Job::restore(kind, &store, &snapshot, MaxParallelism::new(32).unwrap(), 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("max parallelism 16"), "{err}");
    }
}

#[test]
fn a_same_parallelism_restore_keeps_the_incremental_chain() {
    let max = MaxParallelism::new(16).unwrap();
    let (_dir, store, storage) = storage(1);
    let job = Job::new(Kind::RocksDb, max, 1);
    let (mut model, mut rng) = (Model::default(), Rng(17));
    job.write(&mut model, &mut rng, 5_000, 30_000);
    let first = job.checkpoint(&storage, 1).unwrap();
    drop(job);
    let restored = Job::restore(Kind::RocksDb, &store, &first, max, 1).unwrap();
    restored.write(&mut model, &mut rng, 5_000, 50);
    let second = restored.checkpoint(&storage, 2).unwrap();
    let handle = &second.operators[0].subtasks[0];
    let shared_bytes = |creator: u64| -> u64 {
        handle
            .files
            .iter()
            .filter(|f| f.name.ends_with(".sst"))
            .filter(|f| cairn::shared_file_creator(&f.path) == Some(creator))
            .map(|f| f.size)
            .sum()
    };
    // The restored SST files are referenced under the first checkpoint's names; only the
    // flush of the new writes is uploaded (and the OPTIONS file the reopened DB wrote).
    let (reused, uploaded) = (shared_bytes(1), shared_bytes(2));
    assert!(
        reused > 0 && uploaded * 10 < reused,
        "after a same-parallelism restore the next checkpoint referenced {reused} bytes of \
         SST files and uploaded {uploaded}"
    );
    Job::restore(Kind::RocksDb, &store, &second, max, 2)
        .unwrap()
        .check(&model);
}

#[test]
fn late_and_incomplete_checkpoints_are_discarded() {
    let max = MaxParallelism::new(16).unwrap();
    let (_dir, store, storage) = storage(1);
    let job = Job::new(Kind::RocksDb, max, 2);
    let (mut model, mut rng) = (Model::default(), Rng(19));
    job.write(&mut model, &mut rng, 100, 300);

    // Checkpoint 1 starts, checkpoint 2 overtakes it and completes: 1 is late.
    let mut late = storage.begin(1).unwrap();
    for (i, s) in job.subtasks.iter().enumerate() {
        let handle = s.backend().snapshot(late.request()).unwrap().run().unwrap();
        late.acknowledge(OPERATOR, 2, max, i as u32, handle)
            .unwrap();
    }
    job.checkpoint(&storage, 2).unwrap();
    let err = storage.commit(late).unwrap_err();
    assert!(err.to_string().contains("late"), "{err}");
    assert!(!store.list(None).unwrap().iter().any(|p| p.top() == "chk-1"));

    // A checkpoint missing a subtask is not committed.
    let mut incomplete = storage.begin(3).unwrap();
    let handle = job.subtasks[0]
        .backend()
        .snapshot(incomplete.request())
        .unwrap()
        .run()
        .unwrap();
    incomplete.acknowledge(OPERATOR, 2, max, 0, handle).unwrap();
    let err = storage.commit(incomplete).unwrap_err();
    assert!(err.to_string().contains("subtasks [1]"), "{err}");
    assert_eq!(storage.completed(), vec![2]);
    let latest = storage.latest().unwrap();
    Job::restore(Kind::RocksDb, &store, &latest, max, 2)
        .unwrap()
        .check(&model);
}

#[test]
fn cancelling_deletes_or_retains_as_configured() {
    for retain in [false, true] {
        let max = MaxParallelism::new(16).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
        let retention = Retention::new(2).unwrap().retain_on_cancel(retain);
        let storage = CheckpointStorage::open(store.clone(), retention).unwrap();
        let job = Job::new(Kind::RocksDb, max, 1);
        let (mut model, mut rng) = (Model::default(), Rng(23));
        for id in 1..=3 {
            job.write(&mut model, &mut rng, 100, 300);
            job.checkpoint(&storage, id).unwrap();
        }
        storage.cancel().unwrap();
        let latest = cairn::latest_checkpoint(store.as_ref()).unwrap();
        if retain {
            let latest = latest.unwrap();
            assert_eq!(latest.checkpoint_id, 3);
            Job::restore(Kind::RocksDb, &store, &latest, max, 1)
                .unwrap()
                .check(&model);
        } else {
            assert!(latest.is_none());
            assert!(store.list(None).unwrap().is_empty());
        }
    }
}

#[test]
fn a_restore_refuses_a_directory_that_is_not_empty() {
    let max = MaxParallelism::new(16).unwrap();
    let (_dir, store, storage) = storage(1);
    let job = Job::new(Kind::RocksDb, max, 1);
    let (mut model, mut rng) = (Model::default(), Rng(29));
    job.write(&mut model, &mut rng, 100, 100);
    let snapshot = job.checkpoint(&storage, 1).unwrap();
    let target = tempfile::tempdir().unwrap();
    std::fs::File::create(target.path().join("precious"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let plan = snapshot.restore_plan(OPERATOR, 1, max).unwrap();
    let err = RocksDbBackend::builder(target.path(), max, plan[0].key_groups)
        .restore_from(store.clone(), plan[0].handles.clone())
        .open()
        .err()
        .unwrap();
    assert!(matches!(err, Error::Restore { .. }), "{err}");
    assert!(target.path().join("precious").exists());
}

#[test]
fn garbage_collection_keeps_everything_a_damaged_checkpoint_might_reference() {
    let max = MaxParallelism::new(16).unwrap();
    let (dir, store, storage) = storage(2);
    let job = Job::new(Kind::RocksDb, max, 1);
    let (mut model, mut rng) = (Model::default(), Rng(47));
    job.write(&mut model, &mut rng, 500, 2_000);
    job.checkpoint(&storage, 1).unwrap();
    job.write(&mut model, &mut rng, 500, 2_000);
    job.checkpoint(&storage, 2).unwrap();
    // Checkpoint 1's commit point is damaged on disk; a new storage cannot read it.
    let metadata = dir.path().join("chk-1/_metadata");
    let mut bytes = std::fs::read(&metadata).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&metadata, &bytes).unwrap();
    let reopened = CheckpointStorage::open(store.clone(), Retention::new(1).unwrap()).unwrap();
    assert_eq!(reopened.completed(), vec![2]);
    let before: BTreeSet<StoragePath> = store.list(None).unwrap().into_iter().collect();
    let report = reopened.collect_garbage().unwrap();
    assert_eq!(report.unreadable, vec![1]);
    assert!(
        report.abandoned.is_empty() && report.shared_files == 0,
        "{report:?}"
    );
    let after: BTreeSet<StoragePath> = store.list(None).unwrap().into_iter().collect();
    assert_eq!(
        before, after,
        "nothing is deleted while a damaged checkpoint exists"
    );
    // Once the user removes it, collection goes on.
    std::fs::remove_file(&metadata).unwrap();
    let report = reopened.collect_garbage().unwrap();
    assert_eq!(report.abandoned, vec![1]);
}

#[test]
fn a_job_restored_from_one_root_checkpoints_into_another() {
    let max = MaxParallelism::new(16).unwrap();
    let (_old_dir, old_store, old_storage) = storage(1);
    let job = Job::new(Kind::RocksDb, max, 2);
    let (mut model, mut rng) = (Model::default(), Rng(53));
    job.write(&mut model, &mut rng, 500, 2_000);
    let snapshot = job.checkpoint(&old_storage, 1).unwrap();
    drop(job);
    // Same parallelism: the restored backends hold the old root's files as their base...
    let restored = Job::restore(Kind::RocksDb, &old_store, &snapshot, max, 2).unwrap();
    restored.write(&mut model, &mut rng, 500, 100);
    // ...but a checkpoint into a new root cannot reference them: it uploads everything.
    let (_new_dir, new_store, new_storage) = storage(1);
    let first = restored.checkpoint(&new_storage, 2).unwrap();
    assert!(first
        .files()
        .all(|f| !f.is_shared() || cairn::shared_file_creator(&f.path) == Some(2)));
    // Then the chain goes on in the new root.
    restored.write(&mut model, &mut rng, 500, 100);
    let second = restored.checkpoint(&new_storage, 3).unwrap();
    assert!(second
        .files()
        .any(|f| cairn::shared_file_creator(&f.path) == Some(2)));
    Job::restore(Kind::RocksDb, &new_store, &second, max, 3)
        .unwrap()
        .check(&model);
}

#[test]
fn ids_continue_above_savepoints_after_a_restart() {
    let max = MaxParallelism::new(16).unwrap();
    let (_dir, store, storage) = storage(1);
    let job = Job::new(Kind::Heap, max, 1);
    job.checkpoint(&storage, 1).unwrap();
    let pending = storage
        .begin_savepoint(cairn::SavepointFormat::Canonical)
        .unwrap();
    assert_eq!(pending.id(), 2);
    job.savepoint_into(pending).unwrap();
    let reopened = CheckpointStorage::open(store, Retention::default()).unwrap();
    assert!(matches!(reopened.begin(2), Err(Error::Checkpoint { .. })));
    assert_eq!(
        reopened
            .begin_savepoint(cairn::SavepointFormat::Native)
            .unwrap()
            .id(),
        3
    );
}
