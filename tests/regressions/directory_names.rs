//! Found while writing the `cli_path` fuzz target's check that the engine and the tools
//! read a `chk-<id>` name alike (the fuzzer itself had not reached such a name in 65,000
//! runs; the inputs are frozen in `fuzz/regressions/cli_path/`). The engine read any
//! decimal after `chk-` (`chk-05`, `chk-+5` for 5) and the tools only digits, leading
//! zeros included, so one id had several directory names: a stray `chk-01/` was taken for
//! the abandoned checkpoint 1 by every garbage collection, which then deleted `chk-1/`
//! instead and reported it, and a stray `chk-09/` made `begin(3)` refuse id 3. An id in a
//! name is now decimal without sign or leading zeros, read by one function for both.

use std::sync::Arc;

use cairn::{CheckpointStorage, LocalStore, MaxParallelism, Retention, SnapshotStore, StoragePath};

use crate::common::job::{Job, Model, Rng};
use crate::common::Kind;

#[test]
fn directories_cairn_did_not_name_are_not_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let job = Job::new(Kind::Heap, MaxParallelism::new(4).unwrap(), 1);
    job.write(&mut Model::default(), &mut Rng(5), 20, 40);
    let storage = CheckpointStorage::open(store.clone(), Retention::new(1).unwrap()).unwrap();
    job.checkpoint(&storage, 1).unwrap();
    job.checkpoint(&storage, 2).unwrap();
    for stray in [
        "chk-01/notes",
        "chk-09/notes",
        "savepoint-07-0000abcd/notes",
    ] {
        store
            .put(&StoragePath::new(stray).unwrap(), b"not cairn's")
            .unwrap();
    }

    let storage = CheckpointStorage::open(store.clone(), Retention::new(1).unwrap()).unwrap();
    let report = storage.collect_garbage().unwrap();
    assert!(report.abandoned.is_empty(), "{report:?}");
    job.checkpoint(&storage, 3).unwrap();
    assert_eq!(storage.completed(), [3]);
    let root =
        cairn::tools::collect_garbage(&cairn::Location::Local(dir.path().to_path_buf()), false)
            .unwrap();
    assert!(root.abandoned_checkpoints.is_empty(), "{root:?}");
    for stray in ["chk-01", "chk-09", "savepoint-07-0000abcd"] {
        assert!(
            dir.path().join(stray).join("notes").is_file(),
            "{stray} is not cairn's"
        );
    }
}
