//! Timer services on both backends: timers fire in timestamp order across key groups, each
//! exactly once, and survive checkpoints, savepoints of both kinds and rescaling; deleted
//! timers never fire; snapshots with timers are written in format version 2.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use cairn::{
    BigEndian, CheckpointStorage, Error, LocalStore, MaxParallelism, Retention, SavepointFormat,
    SnapshotStore, StateDescriptor, SubStore, TimeDomain, Utf8,
};
use common::job::{restore_targets, Job, Model, Rng};
use common::timers::{
    delete, expect_fired, fire, firing_order, register, services, ModelTimer, Timers,
};
use common::{on_every_backend, KINDS};

const EVENT: TimeDomain = TimeDomain::EventTime;
const PROCESSING: TimeDomain = TimeDomain::ProcessingTime;

fn root() -> (tempfile::TempDir, Arc<dyn SnapshotStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    (dir, store)
}

/// `count` timers of both domains over 200 keys (so every key group has some), with
/// repeats, registered on `job` and in the model; then every 9th deleted from both.
fn register_many(
    job: &Job,
    services: &mut [cairn::TimerService<String>],
    model: &mut Timers,
    rng: &mut Rng,
    count: usize,
) {
    let namespaces: [&[u8]; 3] = [b"", &[1], &[2, 0]];
    let mut registered = Vec::new();
    for i in 0..count {
        let n = rng.next();
        let domain = if n.is_multiple_of(4) {
            PROCESSING
        } else {
            EVENT
        };
        let timer: ModelTimer = (
            domain,
            (n >> 8) % 300,
            format!("key-{}", (n >> 20) % 200),
            namespaces[(n >> 40) as usize % 3].to_vec(),
        );
        register(job, services, &timer);
        if i.is_multiple_of(10) {
            // Registered twice: still one timer.
            register(job, services, &timer);
        }
        model.insert(timer.clone());
        registered.push(timer);
    }
    for timer in registered.iter().step_by(9) {
        delete(job, services, timer);
        model.remove(timer);
    }
}

#[test]
fn timers_fire_in_order_across_key_groups_exactly_once() {
    on_every_backend(|f| {
        let job = Job::new(f.kind, f.max, 1);
        let mut services = services(&job);
        let (mut model, mut rng) = (Timers::new(), Rng(17));
        register_many(&job, &mut services, &mut model, &mut rng, 1_500);
        let key_groups: BTreeSet<u16> = model
            .iter()
            .map(|t| f.max.key_group_of(t.2.as_bytes()))
            .collect();
        assert!(
            key_groups.len() > 100,
            "timers in {} key groups",
            key_groups.len()
        );
        assert_eq!(
            services[0].next_event_time().unwrap(),
            model.iter().filter(|t| t.0 == EVENT).map(|t| t.1).min()
        );

        // Nothing is due before a watermark, nor below its timestamp.
        assert_eq!(services[0].poll_event_time().unwrap(), None);
        for to in [0, 99, 99, 150, 299] {
            let expected = expect_fired(&job, &mut model, EVENT, to);
            assert_eq!(
                fire(&mut services, EVENT, to),
                expected,
                "{:?} up to {to}",
                f.kind
            );
        }
        // A lower watermark is ignored; processing time is a clock of its own.
        assert_eq!(fire(&mut services, EVENT, 10), vec![Vec::new()]);
        assert_eq!(services[0].next_event_time().unwrap(), None);
        let expected = expect_fired(&job, &mut model, PROCESSING, 1_000);
        assert!(expected[0].len() > 100);
        assert_eq!(fire(&mut services, PROCESSING, 1_000), expected);
        assert!(model.is_empty());
        assert_eq!(services[0].next_processing_time().unwrap(), None);
    });
}

#[test]
fn a_timer_registered_while_firing_fires_in_the_same_round_if_due() {
    on_every_backend(|f| {
        let store = f.open();
        let mut windows = store.timer_service("windows", Utf8).unwrap();
        let key = "k".to_string();
        windows.register_event_time_timer(&key, b"", 10).unwrap();
        windows.advance_watermark(20);
        let mut fired = Vec::new();
        while let Some(timer) = windows.poll_event_time().unwrap() {
            fired.push(timer.timestamp);
            if timer.timestamp == 10 {
                // A follow-up inside the watermark, and one beyond it.
                windows.register_event_time_timer(&key, b"", 15).unwrap();
                windows.register_event_time_timer(&key, b"", 25).unwrap();
            }
        }
        assert_eq!(fired, [10, 15]);
        assert_eq!(windows.next_event_time().unwrap(), Some(25));
        // Another handle on the same service sees the same timers.
        let mut again = store.timer_service("windows", Utf8).unwrap();
        again.advance_watermark(30);
        assert_eq!(
            again.poll_event_time().unwrap().map(|t| t.timestamp),
            Some(25)
        );
        assert_eq!(windows.poll_event_time().unwrap(), None);
    });
}

#[test]
fn timer_sets_are_states_that_only_timer_calls_change() {
    on_every_backend(|f| {
        let store = f.open();
        let _timers = store.timer_service("t", Utf8).unwrap();
        let names: Vec<String> = store
            .backend()
            .states()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            ["_cairn_timers/t/event", "_cairn_timers/t/processing"]
        );
        // Another key codec for the same service is refused, as for any state.
        let err = store.timer_service::<u64>("t", BigEndian).err().unwrap();
        assert!(matches!(err, Error::StateMismatch { .. }), "{err}");
        // A state cannot take a timer set's name, nor write into one.
        let err = store
            .value_state(&StateDescriptor::<String, u64>::new(
                "_cairn_timers/t/event",
                Utf8,
                BigEndian,
            ))
            .err()
            .unwrap();
        assert!(matches!(err, Error::InvalidStateName { .. }), "{err}");
        let backend = store.backend();
        let meta = backend.states().unwrap().remove(0);
        let id = backend.register(&meta).unwrap();
        let mut timer = Vec::new();
        cairn::layout::write_timer_key(&mut timer, 3, 7, b"k", b"");
        let err = backend.put(id, &timer, b"").unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert!(backend.add_timer(id, b"not a timer").is_err());
        assert_eq!(backend.next_timer(id).unwrap(), None);
    });
}

#[test]
fn a_timer_of_another_subtask_is_refused() {
    let max = MaxParallelism::new(16).unwrap();
    for kind in KINDS {
        let job = Job::new(kind, max, 2);
        let mut services = services(&job);
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| job.owner(k) == 1)
            .unwrap();
        let err = services[0]
            .register_event_time_timer(&key, b"", 5)
            .unwrap_err();
        assert!(
            matches!(err, Error::KeyGroupNotOwned { .. }),
            "{kind:?}: {err}"
        );
        assert_eq!(services[0].next_event_time().unwrap(), None);
    }
}

/// Fires everything left on a restored job: each subtask fires exactly the pending timers of
/// its key groups, in order, each once.
fn fire_all_and_check(job: &Job, model: &Timers, what: &str) {
    let mut services = services(job);
    let mut left = model.clone();
    for domain in [EVENT, PROCESSING] {
        let expected = expect_fired(job, &mut left, domain, u64::MAX);
        assert_eq!(
            fire(&mut services, domain, u64::MAX),
            expected,
            "{what}: {domain:?}"
        );
    }
    assert!(left.is_empty());
    // Once fired, gone.
    for service in &mut services {
        assert_eq!(service.next_event_time().unwrap(), None, "{what}");
        assert_eq!(service.poll_event_time().unwrap(), None, "{what}");
    }
}

#[test]
fn timers_survive_a_checkpoint_and_a_rescale_from_2_to_3_firing_once() {
    let max = MaxParallelism::new(64).unwrap();
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
        let storage = CheckpointStorage::open(store.clone(), Retention::new(2).unwrap()).unwrap();
        let job = Job::new(kind, max, 2);
        let mut services = services(&job);
        let (mut timers, mut rng) = (Timers::new(), Rng(5));
        let mut state = Model::default();
        job.write(&mut state, &mut rng, 300, 500);
        register_many(&job, &mut services, &mut timers, &mut rng, 1_200);
        // Timers fired before the checkpoint never fire again.
        let expected = expect_fired(&job, &mut timers, EVENT, 100);
        assert_eq!(fire(&mut services, EVENT, 100), expected);
        let snapshot = job.checkpoint(&storage, 1).unwrap();
        // Timers fired after it are lost with the job: the restored one fires them again.
        let after = expect_fired(&job, &mut timers.clone(), EVENT, 200);
        assert_eq!(fire(&mut services, EVENT, 200), after);
        assert!(after.iter().map(Vec::len).sum::<usize>() > 100);

        let restored = Job::restore(kind, &store, &snapshot, max, 3).unwrap();
        restored.check(&state);
        fire_all_and_check(&restored, &timers, &format!("{kind:?} 2 -> 3"));
    }
}

#[test]
fn timers_travel_through_savepoints_of_both_kinds_into_either_backend() {
    let max = MaxParallelism::new(32).unwrap();
    for from in KINDS {
        for format in [SavepointFormat::Canonical, SavepointFormat::Native] {
            let (_dir, root) = root();
            let job = Job::new(from, max, 2);
            let mut services = services(&job);
            let (mut timers, mut rng) = (Timers::new(), Rng(23));
            register_many(&job, &mut services, &mut timers, &mut rng, 600);
            let expected = expect_fired(&job, &mut timers, PROCESSING, 50);
            assert_eq!(fire(&mut services, PROCESSING, 50), expected);
            let (dir, snapshot) = job.savepoint(&root, 1, format).unwrap();
            let store: Arc<dyn SnapshotStore> = Arc::new(SubStore::new(root.clone(), dir));
            for &to in restore_targets(from, format) {
                for parallelism in [1, 3] {
                    let restored = Job::restore(to, &store, &snapshot, max, parallelism).unwrap();
                    let what = format!("{from:?} {format:?} -> {to:?} at {parallelism}");
                    fire_all_and_check(&restored, &timers, &what);
                }
            }
        }
    }
}

#[test]
fn snapshots_with_timers_are_format_version_2_and_others_stay_version_1() {
    for kind in KINDS {
        let (_dir, root) = root();
        let max = MaxParallelism::new(8).unwrap();
        let job = Job::new(kind, max, 1);
        job.write(&mut Model::default(), &mut Rng(3), 20, 50);
        let (plain_dir, _) = job.savepoint(&root, 1, SavepointFormat::Canonical).unwrap();
        let mut services = services(&job);
        register(&job, &mut services, &(EVENT, 9, "k".into(), Vec::new()));
        let (timers_dir, snapshot) = job.savepoint(&root, 2, SavepointFormat::Canonical).unwrap();
        let version = |dir: &cairn::StoragePath, file: &str| {
            let bytes = root.get(&dir.join(file).unwrap(), 1 << 20).unwrap();
            u16::from_be_bytes([bytes[8], bytes[9]])
        };
        assert_eq!(version(&plain_dir, "_metadata"), 1, "{kind:?}");
        assert_eq!(version(&timers_dir, "_metadata"), 2, "{kind:?}");
        let stream = snapshot.files().next().unwrap().path.clone();
        let bytes = root
            .get(&timers_dir.join(stream.as_str()).unwrap(), 1 << 20)
            .unwrap();
        assert_eq!(
            &bytes[..10],
            b"CAIRN-KS\x00\x02",
            "{kind:?}: the canonical stream"
        );
    }
}

#[test]
fn firing_order_is_timestamp_then_key_group() {
    // The helper the model tests rely on: timestamps first, key groups break ties.
    let max = MaxParallelism::DEFAULT;
    let a: ModelTimer = (EVENT, 5, "hello".into(), Vec::new()); // key group 71
    let b: ModelTimer = (EVENT, 5, "flink".into(), Vec::new()); // key group 11
    let c: ModelTimer = (EVENT, 4, "hello".into(), Vec::new());
    let mut timers = vec![a.clone(), b.clone(), c.clone()];
    timers.sort_by_key(|t| firing_order(max, t));
    assert_eq!(timers, [c, b, a]);
}
