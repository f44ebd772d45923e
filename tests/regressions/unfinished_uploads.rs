//! Found by the SIGKILL crash test (tests/crash.rs): a process killed while it uploads a
//! file leaves the file's temporary name behind (`shared/.cairn-tmp-…`, or in the
//! directory of a checkpoint that never completes). Garbage collection only listed
//! finished files, so those stayed forever, and a checkpoint directory holding nothing but
//! one was never taken for abandoned. Now a store lists unfinished writes with the path
//! each was becoming, and garbage collection deletes them by that path's rule; an upload
//! of a checkpoint still in flight is left alone.

use std::io::Write;
use std::sync::Arc;

use crate::common::job::{Job, Model, Rng};
use crate::common::Kind;
use cairn::tools::collect_garbage;
use cairn::{
    CheckpointStorage, LocalStore, Location, MaxParallelism, Retention, SnapshotStore, StoragePath,
};

/// Starts writing `path` and dies, as a killed process does: the writer is never dropped.
fn killed_upload(store: &LocalStore, path: &str) {
    let mut writer = store.create(&StoragePath::new(path).unwrap()).unwrap();
    writer.write_all(&[7; 4096]).unwrap();
    writer.flush().unwrap();
    std::mem::forget(writer);
}

fn unfinished_targets(store: &LocalStore) -> Vec<String> {
    let mut targets: Vec<String> = store
        .list_unfinished(None)
        .unwrap()
        .into_iter()
        .map(|w| w.target.to_string())
        .collect();
    targets.sort();
    targets
}

#[test]
fn uploads_a_killed_process_left_are_collected_by_the_rule_of_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::new(dir.path().join("root")).unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(local.clone());
    let max = MaxParallelism::new(8).unwrap();
    let job = Job::new(Kind::Heap, max, 1);
    job.write(&mut Model::default(), &mut Rng(3), 50, 100);
    let storage = CheckpointStorage::open(store.clone(), Retention::new(1).unwrap()).unwrap();
    job.checkpoint(&storage, 1).unwrap();

    // Checkpoint 2 dies in its uploads: one shared file and its only private file.
    killed_upload(&local, "shared/2-0123-000042.sst");
    killed_upload(&local, "chk-2/0123/keyed-state");
    assert_eq!(
        unfinished_targets(&local),
        ["chk-2/0123/keyed-state", "shared/2-0123-000042.sst"]
    );
    // A restarted job sees the id as used.
    let storage = CheckpointStorage::open(store.clone(), Retention::new(1).unwrap()).unwrap();
    assert!(
        storage.begin(2).is_err(),
        "checkpoint 2 wrote bytes: its id is used"
    );

    job.checkpoint(&storage, 3).unwrap();
    // Checkpoint 3 is the oldest retained: 2's upload and directory are garbage now.
    assert!(
        unfinished_targets(&local).is_empty(),
        "{:?}",
        unfinished_targets(&local)
    );
    assert!(
        !dir.path().join("root/chk-2").exists(),
        "chk-2 is abandoned"
    );

    // An upload of a checkpoint in flight (above the latest) is not touched, by the engine
    // or by `cairn gc`; once a newer one is the oldest retained, it goes.
    killed_upload(&local, "shared/5-0123-000043.sst");
    let report = collect_garbage(&Location::Local(dir.path().join("root")), false).unwrap();
    assert_eq!(report.unfinished_files, 0);
    assert_eq!(unfinished_targets(&local), ["shared/5-0123-000043.sst"]);
    job.checkpoint(&storage, 6).unwrap();
    assert!(
        unfinished_targets(&local).is_empty(),
        "the commit of 6 collects 5's"
    );

    // `cairn gc` finds one as well, and a dry run only lists it.
    killed_upload(&local, "shared/4-0123-000044.sst");
    let report = collect_garbage(&Location::Local(dir.path().join("root")), true).unwrap();
    assert_eq!(report.unfinished_files, 1, "{report:?}");
    assert_eq!(report.deleted.len(), 1);
    assert!(report.deleted[0].path.starts_with("shared/.cairn-tmp-"));
    assert!(report.deleted[0].path.ends_with("-4-0123-000044.sst"));
    assert_eq!(report.deleted[0].size, 4096);
    assert_eq!(
        unfinished_targets(&local).len(),
        1,
        "a dry run deletes nothing"
    );
    let report = collect_garbage(&Location::Local(dir.path().join("root")), false).unwrap();
    assert_eq!(report.unfinished_files, 1);
    assert!(unfinished_targets(&local).is_empty());
    assert_eq!(storage.completed(), [6]);
}
