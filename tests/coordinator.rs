//! One job checkpoint gathered from subtasks that hand their handles over as bytes or as
//! acknowledgement objects: commits when all answer, aborts at the timeout when one does
//! not, collects what a late subtask still writes, refuses acknowledgements that do not
//! fit. On in-memory object stores (`memory://`); tests/multiprocess.rs does it across
//! processes on an S3 server.

mod common;

use std::collections::BTreeSet;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cairn::{
    BigEndian, CheckpointCoordinator, CheckpointStorage, Error, KeyedStateHandle, MaxParallelism,
    OperatorStateStore, Retention, SnapshotStore, StoragePath, SubtaskAck,
};
use common::job::{Job, Model, Rng, OPERATOR};
use common::listing;
use common::Kind;

const SOURCE: &str = "source";

fn memory(name: &str) -> Arc<dyn SnapshotStore> {
    cairn::open_store(&format!("memory://coordinator-tests/{name}")).unwrap()
}

/// Every subtask's keyed state snapshot for checkpoint `id`, taken with the request any
/// process builds.
fn snapshots(job: &Job, store: &Arc<dyn SnapshotStore>, id: u64) -> Vec<KeyedStateHandle> {
    let request = cairn::checkpoint_request(store.clone(), id).unwrap();
    job.subtasks
        .iter()
        .map(|s| s.backend().snapshot(&request).unwrap().run().unwrap())
        .collect()
}

/// A source subtask's offsets, as its operator state.
fn offsets(subtask: u32, offset: u64) -> cairn::OperatorStateSnapshot {
    let state = OperatorStateStore::new();
    state
        .list_state("offsets", BigEndian)
        .unwrap()
        .add(&(u64::from(subtask) * 1_000 + offset))
        .unwrap();
    state.snapshot()
}

#[test]
fn acknowledgement_objects_from_every_subtask_commit_one_checkpoint() {
    let store = memory("objects");
    let storage = CheckpointStorage::open(store.clone(), Retention::default()).unwrap();
    let max = MaxParallelism::new(16).unwrap();
    let job = Job::new(Kind::RocksDb, max, 3);
    let (mut model, mut rng) = (Model::default(), Rng(1));
    job.write(&mut model, &mut rng, 200, 400);

    let coordinator =
        CheckpointCoordinator::begin(&storage, 1, &[(OPERATOR, 3), (SOURCE, 2)]).unwrap();
    // The subtasks, each on a thread of its own as it would be in a process of its own.
    std::thread::scope(|scope| {
        for (i, handle) in snapshots(&job, &store, 1).into_iter().enumerate() {
            let store = store.clone();
            scope.spawn(move || {
                SubtaskAck::new(1, OPERATOR, 3, max, i as u32)
                    .with_keyed_state(handle)
                    .publish(store.as_ref())
                    .unwrap()
            });
        }
        for i in 0..2 {
            let store = store.clone();
            scope.spawn(move || {
                SubtaskAck::new(1, SOURCE, 2, max, i)
                    .with_operator_state(offsets(i, 7))
                    .publish(store.as_ref())
                    .unwrap()
            });
        }
    });
    assert_eq!(
        listing(store.as_ref())
            .iter()
            .filter(|p| p.starts_with("chk-1/acks/"))
            .count(),
        5
    );
    let committed = coordinator.complete().unwrap();
    assert_eq!(committed.operator(OPERATOR).unwrap().subtasks.len(), 3);
    assert_eq!(committed.operator(SOURCE).unwrap().operator_state.len(), 2);
    assert!(
        !listing(store.as_ref()).iter().any(|p| p.contains("/acks/")),
        "the acknowledgements are deleted once _metadata is written"
    );
    for subtask in &job.subtasks {
        subtask.backend().notify_checkpoint_complete(1);
    }

    let latest = cairn::latest_checkpoint(store.as_ref()).unwrap().unwrap();
    Job::restore(Kind::RocksDb, &store, &latest, max, 2)
        .unwrap()
        .check(&model);
    let restored: Vec<u64> = latest
        .restore_plan(SOURCE, 1, max)
        .unwrap()
        .into_iter()
        .flat_map(|plan| {
            OperatorStateStore::restore(plan.operator_state)
                .list_state("offsets", BigEndian)
                .unwrap()
                .get()
                .unwrap()
        })
        .collect();
    assert_eq!(restored, vec![7, 1_007]);
}

#[test]
fn acknowledgements_through_the_callers_channel_commit_as_well() {
    let store = memory("channel");
    let storage = CheckpointStorage::open(store.clone(), Retention::default()).unwrap();
    let max = MaxParallelism::new(16).unwrap();
    let job = Job::new(Kind::Heap, max, 2);
    let (mut model, mut rng) = (Model::default(), Rng(2));
    job.write(&mut model, &mut rng, 100, 300);
    let mut coordinator = CheckpointCoordinator::begin(&storage, 4, &[(OPERATOR, 2)])
        .unwrap()
        .with_timeout(Duration::from_secs(30));
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    for (i, handle) in snapshots(&job, &store, 4).into_iter().enumerate() {
        let bytes = SubtaskAck::new(4, OPERATOR, 2, max, i as u32)
            .with_keyed_state(handle)
            .encode();
        sender.send(bytes).unwrap();
    }
    while !coordinator.is_complete() {
        let bytes = receiver.recv_timeout(coordinator.remaining()).unwrap();
        coordinator
            .receive(SubtaskAck::decode(&bytes).unwrap())
            .unwrap();
    }
    assert!(coordinator.missing().is_empty());
    let job_snapshot = coordinator.commit().unwrap();
    assert_eq!(job_snapshot.checkpoint_id, 4);
    Job::restore(Kind::Heap, &store, &job_snapshot, max, 3)
        .unwrap()
        .check(&model);
}

#[test]
fn a_subtask_that_never_answers_aborts_the_checkpoint_and_its_late_files_are_collected() {
    let store = memory("timeout");
    let storage = CheckpointStorage::open(store.clone(), Retention::default()).unwrap();
    let max = MaxParallelism::new(16).unwrap();
    let job = Job::new(Kind::RocksDb, max, 3);
    let (mut model, mut rng) = (Model::default(), Rng(3));
    job.write(&mut model, &mut rng, 200, 400);
    job.checkpoint(&storage, 1).unwrap();
    let at_one = model.clone();

    // Checkpoint 2: subtasks 0 and 1 answer, subtask 2 uploads but does not answer.
    job.write(&mut model, &mut rng, 200, 400);
    let coordinator = CheckpointCoordinator::begin(&storage, 2, &[(OPERATOR, 3)])
        .unwrap()
        .with_timeout(Duration::from_millis(400))
        .with_poll_interval(Duration::from_millis(20));
    let mut handles = snapshots(&job, &store, 2);
    let late = handles.pop().unwrap();
    for (i, handle) in handles.into_iter().enumerate() {
        SubtaskAck::new(2, OPERATOR, 3, max, i as u32)
            .with_keyed_state(handle)
            .publish(store.as_ref())
            .unwrap();
    }
    let started = Instant::now();
    let e = coordinator.complete().unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it waited for the timeout"
    );
    let message = e.to_string();
    assert!(
        matches!(
            e,
            Error::Checkpoint {
                checkpoint_id: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(message.contains("operator 'word-count' [2]"), "{message}");
    assert!(
        !listing(store.as_ref())
            .iter()
            .any(|p| p.starts_with("chk-2/")),
        "the aborted checkpoint's directory is deleted"
    );
    let latest = cairn::latest_checkpoint(store.as_ref()).unwrap().unwrap();
    assert_eq!(latest.checkpoint_id, 1);
    Job::restore(Kind::RocksDb, &store, &latest, max, 2)
        .unwrap()
        .check(&at_one);

    // The late subtask answers after the abort: garbage, which the next commit collects.
    SubtaskAck::new(2, OPERATOR, 3, max, 2)
        .with_keyed_state(late)
        .publish(store.as_ref())
        .unwrap();
    assert!(listing(store.as_ref())
        .iter()
        .any(|p| p.starts_with("chk-2/")));
    assert!(
        listing(store.as_ref())
            .iter()
            .any(|p| p.starts_with("shared/2-")),
        "the aborted checkpoint uploaded shared files"
    );
    job.write(&mut model, &mut rng, 200, 400);
    let committed = job.checkpoint(&storage, 3).unwrap();
    let mut expected: BTreeSet<String> = committed.files().map(|f| f.path.to_string()).collect();
    expected.insert("chk-3/_metadata".into());
    assert_eq!(
        listing(store.as_ref()),
        expected,
        "only the retained checkpoint's files are left"
    );
    Job::restore(Kind::RocksDb, &store, &committed, max, 3)
        .unwrap()
        .check(&model);
}

#[test]
fn acknowledgements_that_do_not_fit_are_refused() {
    let store = memory("refused");
    let storage = CheckpointStorage::open(store.clone(), Retention::default()).unwrap();
    let max = MaxParallelism::new(16).unwrap();
    let job = Job::new(Kind::Heap, max, 2);
    let handles = snapshots(&job, &store, 1);
    let mut coordinator = CheckpointCoordinator::begin(&storage, 1, &[(OPERATOR, 2)]).unwrap();
    let ack = |subtask: u32| {
        SubtaskAck::new(1, OPERATOR, 2, max, subtask)
            .with_keyed_state(handles[subtask as usize].clone())
    };
    let refusals = [
        (
            SubtaskAck {
                checkpoint_id: 9,
                ..ack(0)
            },
            "checkpoint 9",
        ),
        (
            SubtaskAck {
                operator_id: "other".into(),
                ..ack(0)
            },
            "not one this checkpoint expects",
        ),
        (
            SubtaskAck {
                keyed_state: Some(handles[1].clone()),
                ..ack(0)
            },
            "owns",
        ),
    ];
    for (bad, expected) in refusals {
        let e = coordinator.receive(bad).unwrap_err().to_string();
        assert!(e.contains(expected), "{e}");
    }
    coordinator.receive(ack(0)).unwrap();
    let e = coordinator.receive(ack(0)).unwrap_err().to_string();
    assert!(e.contains("already acknowledged"), "{e}");
    assert_eq!(coordinator.missing(), vec![(OPERATOR.to_string(), 1)]);

    // A damaged acknowledgement object fails the checkpoint at once, naming the object.
    let mut bytes = ack(1).encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let object = ack(1).object_path().unwrap();
    store.put(&object, &bytes).unwrap();
    let e = coordinator.complete().unwrap_err();
    assert!(matches!(e, Error::Corrupted { .. }), "{e:?}");
    assert!(e.to_string().contains("word-count.1.ack"), "{e}");
    assert!(!store
        .exists(&StoragePath::new("chk-1/acks/word-count.1.ack").unwrap())
        .unwrap());
    assert!(cairn::latest_checkpoint(store.as_ref()).unwrap().is_none());

    // An object under another subtask's name is refused too.
    let mut coordinator = CheckpointCoordinator::begin(&storage, 2, &[(OPERATOR, 2)]).unwrap();
    let handles = snapshots(&job, &store, 2);
    let ack = SubtaskAck::new(2, OPERATOR, 2, max, 0).with_keyed_state(handles[0].clone());
    store
        .put(
            &StoragePath::new("chk-2/acks/word-count.1.ack").unwrap(),
            &ack.encode(),
        )
        .unwrap();
    let e = coordinator.poll().unwrap_err().to_string();
    assert!(e.contains("belongs at chk-2/acks/word-count.0.ack"), "{e}");
}
