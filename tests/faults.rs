//! Fault injection: checkpoints and restores through a [`FaultyStore`] that fails, delays or
//! truncates writes and reads on command, or runs out of space, on both backends.
//!
//! - A checkpoint whose store fails (on `create`, in the middle of a file, on `finish`, on a
//!   full disk; on a shared SST, a private file, a heap stream or the `_metadata` commit
//!   point) fails alone: it is not completed, its `chk-<id>/` is gone (at once when the
//!   failure is in a subtask's upload, at the next commit when it is the commit point
//!   itself), its shared files are collected by the next garbage collection, the previous
//!   checkpoint stays the latest and restores, state access goes on, and the next
//!   checkpoint succeeds and restores.
//! - A slow store delays the asynchronous phase, never state access.
//! - A restore whose reads fail, or whose file was truncated by the store, fails with an
//!   error naming the file and why, and leaves the target directory removable (the
//!   directory of the RocksDB subtask that failed is left empty); once the fault is gone
//!   the same snapshot restores.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::{
    CheckpointStorage, Error, HeapBackend, JobSnapshot, KeyedStateStore, LocalStore, ManualClock,
    MaxParallelism, Retention, RocksDbBackend, SnapshotStore,
};
use common::faulty_store::{Fault, FaultyStore, INJECTED};
use common::job::{Job, Model, Rng, OPERATOR};
use common::Kind;
use tempfile::TempDir;

const KINDS: [Kind; 2] = [Kind::Heap, Kind::RocksDb];

fn max() -> MaxParallelism {
    MaxParallelism::new(16).unwrap()
}

/// A local store behind a faulty one, and checkpoint storage on the faulty one.
struct Setup {
    _dir: TempDir,
    faulty: FaultyStore,
    store: Arc<dyn SnapshotStore>,
    storage: CheckpointStorage,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let faulty = FaultyStore::new(local);
    let store: Arc<dyn SnapshotStore> = Arc::new(faulty.clone());
    let storage = CheckpointStorage::open(store.clone(), Retention::default()).unwrap();
    Setup {
        _dir: dir,
        faulty,
        store,
        storage,
    }
}

/// Checks a restored job against `model`, and closes it (a `Job` dropped open deletes its
/// directories first, and RocksDB then takes a second to close).
fn restored(job: Job, model: &Model) {
    job.check(model);
    close(job);
}

fn close(job: Job) {
    for subtask in &job.subtasks {
        subtask.close().unwrap();
    }
}

/// Every path in the store, as text.
fn stored(store: &Arc<dyn SnapshotStore>) -> BTreeSet<String> {
    store
        .list(None)
        .unwrap()
        .into_iter()
        .map(|p| p.to_string())
        .collect()
}

/// Exactly the retained checkpoints' `_metadata` and files are stored.
fn assert_only_retained(setup: &Setup, what: &str) {
    let mut expected = BTreeSet::new();
    for id in setup.storage.completed() {
        expected.insert(format!("chk-{id}/_metadata"));
        let job = setup.storage.get(id).unwrap();
        expected.extend(job.files().map(|f| f.path.to_string()));
    }
    assert_eq!(stored(&setup.store), expected, "{what}");
}

/// Whether `error`, or an error it wraps, is an I/O error of `kind`.
fn has_io_kind(error: &Error, kind: std::io::ErrorKind) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The write faults a checkpoint can meet, on the files of `kind` they can hit.
fn write_faults(kind: Kind) -> Vec<(&'static str, Fault)> {
    let data = match kind {
        Kind::Heap => "keyed-state",
        Kind::RocksDb => ".sst",
    };
    let mut faults = vec![
        (data, Fault::FailCreate),
        (data, Fault::FailWrite { after: 100 }),
        (data, Fault::FailFinish),
        ("_metadata", Fault::FailCreate),
        ("_metadata", Fault::FailWrite { after: 10 }),
        ("_metadata", Fault::FailFinish),
    ];
    if kind == Kind::RocksDb {
        // The private files. (The OPTIONS file is shared like an SST file, and checkpoint 2
        // reuses checkpoint 1's.)
        faults.push(("MANIFEST", Fault::FailWrite { after: 0 }));
        faults.push(("CURRENT", Fault::FailFinish));
        faults.push(("MANIFEST", Fault::FailCreate));
    }
    faults
}

#[test]
fn a_failed_checkpoint_fails_alone_and_is_cleaned_up() {
    for kind in KINDS {
        for (matching, fault) in write_faults(kind) {
            eprintln!("-- {kind:?}: {fault:?} on {matching}");
            failed_checkpoint_case(
                kind,
                |s| s.faulty.inject(matching, fault.clone()),
                |e| {
                    assert!(e.to_string().contains(INJECTED), "{e}");
                    assert!(e.to_string().contains(matching), "names the file: {e}");
                },
            );
        }
        eprintln!("-- {kind:?}: a full disk");
        failed_checkpoint_case(
            kind,
            |s| s.faulty.disk_full_after(2_000),
            |e| {
                assert!(has_io_kind(e, std::io::ErrorKind::StorageFull), "{e:?}");
            },
        );
    }
}

/// Checkpoint 1 completes; with `inject`ed faults checkpoint 2 fails (as `check_error`
/// says); then the job goes on and checkpoint 3 completes.
fn failed_checkpoint_case(kind: Kind, inject: impl Fn(&Setup), check_error: impl Fn(&Error)) {
    let setup = setup();
    let job = Job::new(kind, max(), 2);
    let (mut model, mut rng) = (Model::default(), Rng(5));
    job.write(&mut model, &mut rng, 300, 1_000);
    job.checkpoint(&setup.storage, 1).unwrap();
    let at_one = model.clone();
    job.write(&mut model, &mut rng, 300, 1_000);

    inject(&setup);
    let err = job.checkpoint(&setup.storage, 2).unwrap_err();
    check_error(&err);
    assert!(setup.faulty.fired() > 0);
    setup.faulty.clear();
    assert_eq!(setup.storage.completed(), vec![1]);
    let left: Vec<String> = stored(&setup.store)
        .into_iter()
        .filter(|p| p.starts_with("chk-2/"))
        .collect();
    if err.to_string().contains("_metadata") {
        // The commit point itself failed: `commit` consumed the pending checkpoint, and its
        // private files wait for the next commit's collection (checked below).
        eprintln!(
            "   the failed commit point left {} files in chk-2/",
            left.len()
        );
    } else {
        assert!(
            left.is_empty(),
            "an upload failed and chk-2/ was left: {left:?}"
        );
    }
    assert!(!setup
        .store
        .exists(&cairn::StoragePath::new("chk-2/_metadata").unwrap())
        .unwrap());

    // The previous checkpoint stays the latest, for this storage and a new one.
    let reopened = CheckpointStorage::open(setup.store.clone(), Retention::default()).unwrap();
    assert_eq!(reopened.latest().unwrap().checkpoint_id, 1);
    let latest = setup.storage.latest().unwrap();
    restored(
        Job::restore(kind, &setup.store, &latest, max(), 3).unwrap(),
        &at_one,
    );

    // State access goes on, and the next checkpoint succeeds and holds it.
    job.check(&model);
    job.write(&mut model, &mut rng, 300, 500);
    job.check(&model);
    let three = job.checkpoint(&setup.storage, 3).unwrap();
    restored(
        Job::restore(kind, &setup.store, &three, max(), 2).unwrap(),
        &model,
    );
    // Whatever the failed attempt left (shared files, or chk-2/ when its commit point
    // failed) is gone: the store holds exactly checkpoint 3.
    assert_only_retained(&setup, "after the next checkpoint");
    assert!(setup
        .store
        .list(None)
        .unwrap()
        .iter()
        .all(|p| cairn::shared_file_creator(p) != Some(2)));
    close(job);
}

#[test]
fn a_checkpoint_whose_commit_point_fails_is_cleaned_up_at_once() {
    for kind in KINDS {
        let setup = setup();
        let job = Job::new(kind, max(), 2);
        let (mut model, mut rng) = (Model::default(), Rng(19));
        job.write(&mut model, &mut rng, 300, 1_000);
        job.checkpoint(&setup.storage, 1).unwrap();
        setup.faulty.inject("_metadata", Fault::FailCreate);
        let err = job.checkpoint(&setup.storage, 2).unwrap_err();
        setup.faulty.clear();
        assert!(err.to_string().contains("chk-2/_metadata"), "{err}");
        let left: Vec<String> = stored(&setup.store)
            .into_iter()
            .filter(|p| p.starts_with("chk-2/"))
            .collect();
        close(job);
        assert_eq!(left, Vec::<String>::new(), "{kind:?}");
    }
}

#[test]
fn uploads_that_land_after_an_abort_are_collected_later() {
    // A coordinator that aborts at the first failure does not wait for the other
    // subtasks: their files may land in chk-<id>/ and shared/ after the abort.
    let setup = setup();
    let job = Job::new(Kind::RocksDb, max(), 2);
    let (mut model, mut rng) = (Model::default(), Rng(7));
    job.write(&mut model, &mut rng, 300, 1_000);
    job.checkpoint(&setup.storage, 1).unwrap();
    job.write(&mut model, &mut rng, 300, 1_000);
    let pending = setup.storage.begin(2).unwrap();
    setup
        .faulty
        .inject("", Fault::Delay(Duration::from_millis(200)));
    let tasks: Vec<_> = job
        .subtasks
        .iter()
        .map(|s| {
            s.backend()
                .snapshot(pending.request())
                .unwrap()
                .spawn()
                .unwrap()
        })
        .collect();
    // The abort may race with the uploads (and then fail to delete chk-2/ that is being
    // written to): either way the checkpoint is not completed.
    if let Err(e) = setup.storage.abort(pending) {
        eprintln!("the abort raced with the uploads: {e}");
    }
    for task in tasks {
        // A straggler may also fail, when the abort deleted the directory it writes to.
        if let Err(e) = task.wait() {
            eprintln!("a straggler failed: {e}");
        }
    }
    setup.faulty.clear();
    assert!(
        stored(&setup.store).iter().any(|p| p.starts_with("chk-2/")),
        "the stragglers wrote after the abort"
    );
    job.checkpoint(&setup.storage, 3).unwrap();
    assert_only_retained(&setup, "the next commit collects the stragglers' files");
    let latest = setup.storage.latest().unwrap();
    restored(
        Job::restore(Kind::RocksDb, &setup.store, &latest, max(), 1).unwrap(),
        &model,
    );
    close(job);
}

#[test]
fn a_slow_store_delays_the_checkpoint_not_state_access() {
    for kind in KINDS {
        let setup = setup();
        let job = Job::new(kind, max(), 2);
        let (mut model, mut rng) = (Model::default(), Rng(9));
        job.write(&mut model, &mut rng, 200, 1_000);
        let at_checkpoint = model.clone();
        setup
            .faulty
            .inject("", Fault::Delay(Duration::from_millis(50)));
        let mut pending = setup.storage.begin(1).unwrap();
        let started = Instant::now();
        let tasks: Vec<_> = job
            .subtasks
            .iter()
            .map(|s| {
                s.backend()
                    .snapshot(pending.request())
                    .unwrap()
                    .spawn()
                    .unwrap()
            })
            .collect();
        // The synchronous phase is over; the uploads crawl; state is read and written.
        assert!(tasks.iter().all(|t| !t.is_finished()));
        job.write(&mut model, &mut rng, 200, 500);
        job.check(&model);
        let access = started.elapsed();
        for (i, task) in tasks.into_iter().enumerate() {
            pending
                .acknowledge(OPERATOR, 2, max(), i as u32, task.wait().unwrap())
                .unwrap();
        }
        let snapshot = setup.storage.commit(pending).unwrap();
        let total = started.elapsed();
        eprintln!("{kind:?}: state access took {access:?} while the checkpoint took {total:?}");
        assert!(total >= Duration::from_millis(100));
        setup.faulty.clear();
        restored(
            Job::restore(kind, &setup.store, &snapshot, max(), 2).unwrap(),
            &at_checkpoint,
        );
        close(job);
    }
}

/// Restores every subtask of `snapshot` at `parallelism` into `target/subtask-<i>`.
fn restore_into(
    kind: Kind,
    store: &Arc<dyn SnapshotStore>,
    snapshot: &JobSnapshot,
    parallelism: u32,
    target: &Path,
) -> cairn::Result<Vec<KeyedStateStore>> {
    let clock = Arc::new(ManualClock::new(1_000));
    let mut stores = Vec::new();
    for plan in snapshot.restore_plan(OPERATOR, parallelism, max())? {
        stores.push(match kind {
            Kind::Heap => KeyedStateStore::new(HeapBackend::restore(
                max(),
                plan.key_groups,
                clock.clone(),
                store.as_ref(),
                &plan.handles,
            )?),
            Kind::RocksDb => KeyedStateStore::new(
                RocksDbBackend::builder(
                    target.join(format!("subtask-{}", plan.subtask)),
                    max(),
                    plan.key_groups,
                )
                .clock(clock.clone())
                .restore_from(store.clone(), plan.handles.clone())
                .open()?,
            ),
        });
    }
    Ok(stores)
}

/// The read faults a restore can meet, on the files of `kind` they can hit.
fn read_faults(kind: Kind) -> Vec<(&'static str, Fault)> {
    match kind {
        Kind::Heap => vec![
            ("keyed-state", Fault::FailOpen),
            ("keyed-state", Fault::FailRead { after: 0 }),
            ("keyed-state", Fault::FailRead { after: 30 }),
        ],
        Kind::RocksDb => vec![
            (".sst", Fault::FailOpen),
            (".sst", Fault::FailRead { after: 1_000 }),
            ("MANIFEST", Fault::FailRead { after: 0 }),
            ("CURRENT", Fault::FailOpen),
        ],
    }
}

#[test]
fn a_failed_restore_names_the_file_and_why_and_leaves_a_removable_target() {
    for kind in KINDS {
        let setup = setup();
        let job = Job::new(kind, max(), 2);
        let (mut model, mut rng) = (Model::default(), Rng(11));
        job.write(&mut model, &mut rng, 300, 2_000);
        let snapshot = job.checkpoint(&setup.storage, 1).unwrap();
        for parallelism in [2, 3] {
            for (matching, fault) in read_faults(kind) {
                eprintln!("-- {kind:?} at {parallelism}: {fault:?} on {matching}");
                setup.faulty.inject(matching, fault.clone());
                let target = tempfile::tempdir().unwrap();
                let err = restore_into(kind, &setup.store, &snapshot, parallelism, target.path())
                    .err()
                    .expect("the restore fails");
                setup.faulty.clear();
                let text = err.to_string();
                assert!(text.contains(INJECTED), "says why: {text}");
                assert!(text.contains(matching), "names the file: {text}");
                assert_target_removable(target.path(), &text);
                // Without the fault, the same snapshot restores into the same place.
                restore_into(kind, &setup.store, &snapshot, parallelism, target.path()).unwrap();
            }
        }
        restored(
            Job::restore(kind, &setup.store, &snapshot, max(), 3).unwrap(),
            &model,
        );
        close(job);
    }
}

#[test]
fn a_file_truncated_by_the_store_fails_the_restore_naming_it() {
    for kind in KINDS {
        let data = match kind {
            Kind::Heap => "keyed-state",
            Kind::RocksDb => ".sst",
        };
        let setup = setup();
        let job = Job::new(kind, max(), 2);
        let (mut model, mut rng) = (Model::default(), Rng(13));
        job.write(&mut model, &mut rng, 300, 2_000);
        job.checkpoint(&setup.storage, 1).unwrap();
        job.write(&mut model, &mut rng, 300, 200);
        // The store loses the tail of one file, and says nothing: the checkpoint commits.
        setup
            .faulty
            .inject_times(data, Fault::Truncate { keep: 64 }, 1);
        let snapshot = job.checkpoint(&setup.storage, 2).unwrap();
        setup.faulty.clear();
        let truncated = snapshot
            .files()
            .find(|f| setup.store.size(&f.path).unwrap() != Some(f.size))
            .expect("a truncated file")
            .clone();
        for parallelism in [1, 2] {
            let target = tempfile::tempdir().unwrap();
            let err = restore_into(kind, &setup.store, &snapshot, parallelism, target.path())
                .err()
                .expect("the restore fails");
            let text = err.to_string();
            assert!(matches!(err, Error::Corrupted { .. }), "{kind:?}: {err}");
            assert!(
                text.contains(truncated.path.as_str()),
                "names the file: {text}"
            );
            assert!(
                text.contains("64") && text.contains(&truncated.size.to_string()),
                "says why (its size and the recorded one): {text}"
            );
            assert_target_removable(target.path(), &text);
        }
        close(job);
    }
}

/// A RocksDB restore that fails on a file leaves its target directory as it found it, so a
/// retry into the same directory works (found by this suite, fixed in 593a278).
#[test]
fn a_failed_rocksdb_restore_leaves_its_target_as_it_found_it() {
    let setup = setup();
    let job = Job::new(Kind::RocksDb, max(), 1);
    let (mut model, mut rng) = (Model::default(), Rng(17));
    job.write(&mut model, &mut rng, 300, 2_000);
    let snapshot = job.checkpoint(&setup.storage, 1).unwrap();
    close(job);
    setup.faulty.inject("CURRENT", Fault::FailOpen);
    let target = tempfile::tempdir().unwrap();
    let err = restore_into(Kind::RocksDb, &setup.store, &snapshot, 1, target.path())
        .err()
        .expect("the restore fails");
    setup.faulty.clear();
    assert!(err.to_string().contains("CURRENT"), "{err}");
    assert_eq!(walk(target.path()), Vec::<std::path::PathBuf>::new());
    // The retry a user would make, into the same directory.
    restore_into(Kind::RocksDb, &setup.store, &snapshot, 1, target.path()).unwrap();
}

/// After a failed restore the target directory can be removed (and so reused).
fn assert_target_removable(target: &Path, error: &str) {
    let left: Vec<_> = walk(target);
    if !left.is_empty() {
        eprintln!(
            "   a failed restore left {} files in the target ({error})",
            left.len()
        );
    }
    std::fs::remove_dir_all(target).unwrap();
    std::fs::create_dir_all(target).unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
