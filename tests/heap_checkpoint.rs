//! Heap backend snapshots and restores: every state kind, with and without TTL, written at
//! one parallelism, snapshotted per subtask as canonical streams, and restored at another,
//! against a model of what every key holds.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn::{
    BigEndian, Error, HeapBackend, KeyGroupRange, KeyedStateBackend, KeyedStateHandle,
    KeyedStateStore, LocalStore, ManualClock, MapStateDescriptor, MaxParallelism, SnapshotFormat,
    SnapshotRequest, SnapshotStore, StateDescriptor, StoragePath, TtlConfig, Utf8,
};
use common::stored_entries;
use tempfile::TempDir;

/// Entries of states with TTL live this long after their last write.
const TTL_MS: u64 = 10_000;
/// When the first batch is written (expired at the snapshot).
const T0: u64 = 1_000;
/// When the second batch is written (live at the snapshot).
const T1: u64 = 6_000;
/// When the snapshot is taken and the restores are checked.
const T2: u64 = 12_000;

fn ttl() -> TtlConfig {
    TtlConfig::new(Duration::from_millis(TTL_MS))
}

fn count() -> StateDescriptor<String, u64> {
    StateDescriptor::new("count", Utf8, BigEndian)
}
fn events() -> StateDescriptor<String, u32> {
    StateDescriptor::new("events", Utf8, BigEndian)
}
fn hours() -> MapStateDescriptor<String, u8, u64> {
    MapStateDescriptor::new("hours", Utf8, BigEndian, BigEndian)
}
fn session() -> StateDescriptor<String, u64> {
    StateDescriptor::new("session", Utf8, BigEndian).with_ttl(ttl())
}
fn recent() -> StateDescriptor<String, u32> {
    StateDescriptor::new("recent", Utf8, BigEndian).with_ttl(ttl())
}
fn last_seen() -> MapStateDescriptor<String, u8, u64> {
    MapStateDescriptor::new("last-seen", Utf8, BigEndian, BigEndian).with_ttl(ttl())
}
/// Registered, never written: must still exist after a restore.
fn unused() -> StateDescriptor<String, u64> {
    StateDescriptor::new("unused", Utf8, BigEndian)
}

const STATE_NAMES: [&str; 7] = [
    "count",
    "events",
    "hours",
    "last-seen",
    "recent",
    "session",
    "unused",
];

/// What one key holds; TTL entries carry the time of their write.
#[derive(Debug, Clone, Default, PartialEq)]
struct KeyModel {
    count: Option<u64>,
    events: Vec<u32>,
    hours: BTreeMap<u8, u64>,
    session: Option<(u64, u64)>,
    recent: Vec<(u64, u32)>,
    last_seen: BTreeMap<u8, (u64, u64)>,
}

fn live(stamp: u64, now: u64) -> bool {
    stamp + TTL_MS > now
}

impl KeyModel {
    /// What reads return at `now`.
    fn visible(&self, now: u64) -> Visible {
        Visible {
            count: self.count,
            events: self.events.clone(),
            hours: self.hours.clone(),
            session: self.session.filter(|(t, _)| live(*t, now)).map(|(_, v)| v),
            recent: self
                .recent
                .iter()
                .filter(|(t, _)| live(*t, now))
                .map(|(_, v)| *v)
                .collect(),
            last_seen: self
                .last_seen
                .iter()
                .filter(|(_, (t, _))| live(*t, now))
                .map(|(k, (_, v))| (*k, *v))
                .collect(),
        }
    }

    /// How many stored entries each state has for this key once a snapshot at `now` left
    /// out the entries that had entirely expired.
    fn stored(&self, now: u64) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("count", usize::from(self.count.is_some())),
            ("events", usize::from(!self.events.is_empty())),
            ("hours", self.hours.len()),
            (
                "session",
                usize::from(self.session.is_some_and(|(t, _)| live(t, now))),
            ),
            (
                "recent",
                usize::from(self.recent.iter().any(|(t, _)| live(*t, now))),
            ),
            (
                "last-seen",
                self.last_seen
                    .values()
                    .filter(|(t, _)| live(*t, now))
                    .count(),
            ),
            ("unused", 0),
        ])
    }
}

#[derive(Debug, PartialEq)]
struct Visible {
    count: Option<u64>,
    events: Vec<u32>,
    hours: BTreeMap<u8, u64>,
    session: Option<u64>,
    recent: Vec<u32>,
    last_seen: BTreeMap<u8, u64>,
}

type Model = BTreeMap<String, KeyModel>;

/// A deterministic stream of numbers for test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One operator's subtasks on heap backends sharing a manual clock.
struct Job {
    max: MaxParallelism,
    parallelism: u32,
    clock: ManualClock,
    subtasks: Vec<KeyedStateStore>,
}

impl Job {
    fn new(max: MaxParallelism, parallelism: u32, clock: &ManualClock) -> Self {
        let subtasks = (0..parallelism)
            .map(|i| {
                let range = max.subtask_range(i, parallelism).unwrap();
                let backend = HeapBackend::with_clock(max, range, Arc::new(clock.clone()));
                let store = KeyedStateStore::new(backend);
                register_all(&store);
                store
            })
            .collect();
        Job {
            max,
            parallelism,
            clock: clock.clone(),
            subtasks,
        }
    }

    fn owner(&self, key: &str) -> &KeyedStateStore {
        let kg = self.max.key_group_of(key.as_bytes());
        &self.subtasks[self.max.subtask_of(kg, self.parallelism).unwrap() as usize]
    }

    /// Applies one random write to `key` in the backend and in the model.
    fn write(&self, rng: &mut Rng, model: &mut Model, key: &str) {
        let store = self.owner(key);
        let now = cairn::Clock::now_millis(&self.clock);
        let k = key.to_string();
        let m = model.entry(k.clone()).or_default();
        match rng.below(7) {
            0 => {
                let v = rng.below(1000);
                store.value_state(&count()).unwrap().update(&k, &v).unwrap();
                m.count = Some(v);
            }
            1 => {
                let v = rng.below(1000) as u32;
                store.list_state(&events()).unwrap().add(&k, &v).unwrap();
                m.events.push(v);
            }
            2 => {
                let (uk, v) = (rng.below(24) as u8, rng.below(1000));
                store.map_state(&hours()).unwrap().put(&k, &uk, &v).unwrap();
                m.hours.insert(uk, v);
            }
            3 => {
                let v = rng.below(1000);
                store
                    .value_state(&session())
                    .unwrap()
                    .update(&k, &v)
                    .unwrap();
                m.session = Some((now, v));
            }
            4 => {
                let v = rng.below(1000) as u32;
                store.list_state(&recent()).unwrap().add(&k, &v).unwrap();
                m.recent.push((now, v));
            }
            5 => {
                let (uk, v) = (rng.below(24) as u8, rng.below(1000));
                store
                    .map_state(&last_seen())
                    .unwrap()
                    .put(&k, &uk, &v)
                    .unwrap();
                m.last_seen.insert(uk, (now, v));
            }
            _ => {
                store.value_state(&count()).unwrap().clear(&k).unwrap();
                m.count = None;
            }
        }
    }

    /// Takes the synchronous phase of a snapshot on every subtask.
    fn snapshot(&self, request: &SnapshotRequest) -> Vec<cairn::PendingSnapshot> {
        self.subtasks
            .iter()
            .map(|s| s.backend().snapshot(request).unwrap())
            .collect()
    }
}

fn register_all(store: &KeyedStateStore) {
    store.value_state(&count()).unwrap();
    store.list_state(&events()).unwrap();
    store.map_state(&hours()).unwrap();
    store.value_state(&session()).unwrap();
    store.list_state(&recent()).unwrap();
    store.map_state(&last_seen()).unwrap();
    store.value_state(&unused()).unwrap();
}

/// Runs the asynchronous phases: the first on this thread, the others on their own.
fn finish(pending: Vec<cairn::PendingSnapshot>) -> Vec<KeyedStateHandle> {
    pending
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            if i == 0 {
                p.run().unwrap()
            } else {
                p.spawn().unwrap().wait().unwrap()
            }
        })
        .collect()
}

fn request(store: &Arc<LocalStore>, checkpoint_id: u64) -> SnapshotRequest {
    SnapshotRequest {
        checkpoint_id,
        store: store.clone(),
        private_dir: StoragePath::new(format!("chk-{checkpoint_id}")).unwrap(),
        snapshot_type: cairn::SnapshotType::Checkpoint,
    }
}

fn restore(
    max: MaxParallelism,
    parallelism: u32,
    clock: &ManualClock,
    store: &LocalStore,
    handles: &[KeyedStateHandle],
) -> Vec<KeyedStateStore> {
    (0..parallelism)
        .map(|i| {
            let range = max.subtask_range(i, parallelism).unwrap();
            // Every handle, overlapping or not: the restore reads only what it owns.
            let backend =
                HeapBackend::restore(max, range, Arc::new(clock.clone()), store, handles).unwrap();
            KeyedStateStore::new(backend)
        })
        .collect()
}

fn read(store: &KeyedStateStore, key: &str) -> cairn::Result<Visible> {
    let k = key.to_string();
    Ok(Visible {
        count: store.value_state(&count())?.get(&k)?,
        events: store.list_state(&events())?.get(&k)?.collect(),
        hours: store
            .map_state(&hours())?
            .iter(&k)?
            .collect::<cairn::Result<_>>()?,
        session: store.value_state(&session())?.get(&k)?,
        recent: store.list_state(&recent())?.get(&k)?.collect(),
        last_seen: store
            .map_state(&last_seen())?
            .iter(&k)?
            .collect::<cairn::Result<_>>()?,
    })
}

fn state_names(store: &KeyedStateStore) -> Vec<String> {
    let mut names: Vec<String> = store
        .backend()
        .states()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    names
}

/// Checks restored subtasks against the model: raw entry counts per state (before any read
/// can clean up), then what every key reads on its owner, and that no other subtask sees it.
fn check(restored: &[KeyedStateStore], max: MaxParallelism, model: &Model, now: u64) {
    let parallelism = restored.len() as u32;
    for (i, store) in restored.iter().enumerate() {
        assert_eq!(state_names(store), STATE_NAMES, "subtask {i}");
        let mut expected: BTreeMap<&str, usize> = STATE_NAMES.iter().map(|n| (*n, 0)).collect();
        for (key, m) in model {
            let kg = max.key_group_of(key.as_bytes());
            if store.key_group_range().contains(kg) {
                for (state, n) in m.stored(now) {
                    *expected.get_mut(state).unwrap() += n;
                }
            }
        }
        for (state, n) in expected {
            assert_eq!(
                stored_entries(store, state),
                n,
                "subtask {i} of {parallelism}, state {state}"
            );
        }
    }
    for (key, m) in model {
        let owner = max
            .subtask_of(max.key_group_of(key.as_bytes()), parallelism)
            .unwrap();
        for (i, store) in restored.iter().enumerate() {
            let got = read(store, key);
            if i as u32 == owner {
                assert_eq!(got.unwrap(), m.visible(now), "key {key} on subtask {i}");
            } else {
                assert!(
                    matches!(got, Err(Error::KeyGroupNotOwned { .. })),
                    "key {key} is visible on subtask {i} of {parallelism}"
                );
            }
        }
    }
}

/// Writes two batches (the first expires before the snapshot), snapshots, writes more after
/// the synchronous phase, and returns the handles and the model of the snapshot.
fn snapshot_job(job: &Job, store: &Arc<LocalStore>, seed: u64) -> (Vec<KeyedStateHandle>, Model) {
    let mut rng = Rng(seed);
    let mut model = Model::new();
    let keys: Vec<String> = (0..400).map(|i| format!("key-{i}")).collect();
    job.clock.set(T0);
    for _ in 0..1500 {
        let key = &keys[rng.below(keys.len() as u64) as usize];
        job.write(&mut rng, &mut model, key);
    }
    job.clock.set(T1);
    for _ in 0..1500 {
        let key = &keys[rng.below(keys.len() as u64) as usize];
        job.write(&mut rng, &mut model, key);
    }
    job.clock.set(T2);
    let pending = job.snapshot(&request(store, 1));
    let at_snapshot = model.clone();
    // After the synchronous phase: changes and new keys that the snapshot must not hold.
    for _ in 0..500 {
        let key = &keys[rng.below(keys.len() as u64) as usize];
        job.write(&mut rng, &mut model, key);
    }
    for i in 0..50 {
        job.write(&mut rng, &mut model, &format!("late-{i}"));
    }
    assert_ne!(model, at_snapshot);
    (finish(pending), at_snapshot)
}

#[test]
fn restores_at_another_parallelism_hold_exactly_the_snapshot() {
    let max = MaxParallelism::new(64).unwrap();
    for (seed, (from, to)) in [(1, 2), (2, 3), (3, 1), (4, 3)].into_iter().enumerate() {
        eprintln!("-- parallelism {from} -> {to}");
        let dir = TempDir::new().unwrap();
        let store = Arc::new(LocalStore::new(dir.path()).unwrap());
        let clock = ManualClock::new(T0);
        let job = Job::new(max, from, &clock);
        let (handles, model) = snapshot_job(&job, &store, 0x9E37_79B9 + seed as u64);

        assert_eq!(handles.len(), from as usize);
        for (i, h) in handles.iter().enumerate() {
            assert_eq!(h.format, SnapshotFormat::Canonical);
            assert_eq!(h.key_groups, max.subtask_range(i as u32, from).unwrap());
            assert_eq!(h.checkpoint_id, 1);
            assert_eq!(h.states.len(), STATE_NAMES.len());
            let [file] = h.files.as_slice() else {
                panic!("one file per heap snapshot")
            };
            assert_eq!(file.name, "keyed-state");
            assert_eq!(
                file.path.as_str(),
                format!("chk-1/{}/keyed-state", h.instance)
            );
            let bytes = std::fs::read(dir.path().join(file.path.as_str())).unwrap();
            assert_eq!(bytes.len() as u64, file.size);
            assert_eq!(crc32(&bytes), file.crc32);
        }
        let instances: std::collections::BTreeSet<_> = handles.iter().map(|h| h.instance).collect();
        assert_eq!(
            instances.len(),
            handles.len(),
            "every subtask has its own instance"
        );

        let restored = restore(max, to, &clock, &store, &handles);
        check(&restored, max, &model, T2);
    }
}

#[test]
fn a_restored_backend_snapshots_again() {
    let max = MaxParallelism::new(32).unwrap();
    let dir = TempDir::new().unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let clock = ManualClock::new(T0);
    let job = Job::new(max, 2, &clock);
    let (handles, model) = snapshot_job(&job, &store, 77);
    let restored = restore(max, 3, &clock, &store, &handles);
    let again: Vec<KeyedStateHandle> = restored
        .iter()
        .map(|s| {
            s.backend()
                .snapshot(&request(&store, 2))
                .unwrap()
                .run()
                .unwrap()
        })
        .collect();
    let twice = restore(max, 2, &clock, &store, &again);
    check(&twice, max, &model, T2);
}

fn crc32(bytes: &[u8]) -> u32 {
    // CRC-32/ISO-HDLC (IEEE), bit by bit: independent of the crate's implementation.
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One subtask (all key groups) with a few entries, snapshotted.
fn small_snapshot(
    max: MaxParallelism,
) -> (TempDir, Arc<LocalStore>, ManualClock, KeyedStateHandle) {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let clock = ManualClock::new(T0);
    let job = Job::new(max, 1, &clock);
    let mut rng = Rng(5);
    let mut model = Model::new();
    for i in 0..200 {
        job.write(&mut rng, &mut model, &format!("k{i}"));
    }
    let handle = job.subtasks[0]
        .backend()
        .snapshot(&request(&store, 1))
        .unwrap()
        .run()
        .unwrap();
    (dir, store, clock, handle)
}

#[test]
fn a_corrupted_stream_fails_the_restore() {
    let max = MaxParallelism::DEFAULT;
    let (dir, store, clock, handle) = small_snapshot(max);
    let path = dir.path().join(handle.files[0].path.as_str());
    let original = std::fs::read(&path).unwrap();
    // A byte of the header, of a block in the middle, and of the index.
    for at in [20, original.len() / 2, original.len() - 30] {
        let mut bad = original.clone();
        bad[at] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let result = HeapBackend::restore(
            max,
            KeyGroupRange::all(max),
            Arc::new(clock.clone()),
            store.as_ref(),
            std::slice::from_ref(&handle),
        );
        assert!(
            matches!(result, Err(Error::Corrupted { .. })),
            "flipped byte {at}: {:?}",
            result.err()
        );
    }
    std::fs::write(&path, &original).unwrap();
    HeapBackend::restore(
        max,
        KeyGroupRange::all(max),
        Arc::new(clock.clone()),
        store.as_ref(),
        std::slice::from_ref(&handle),
    )
    .unwrap();

    // A file of another size than recorded, and a missing one.
    std::fs::write(&path, &original[..original.len() - 1]).unwrap();
    let result = HeapBackend::restore(
        max,
        KeyGroupRange::all(max),
        Arc::new(clock.clone()),
        store.as_ref(),
        std::slice::from_ref(&handle),
    );
    assert!(
        matches!(result, Err(Error::Corrupted { .. })),
        "{:?}",
        result.err()
    );
    std::fs::remove_file(&path).unwrap();
    let result = HeapBackend::restore(
        max,
        KeyGroupRange::all(max),
        Arc::new(clock),
        store.as_ref(),
        &[handle],
    );
    assert!(
        matches!(result, Err(Error::NotFound { .. })),
        "{:?}",
        result.err()
    );
}

#[test]
fn restoring_with_another_max_parallelism_fails() {
    let (_dir, store, clock, handle) = small_snapshot(MaxParallelism::DEFAULT);
    let other = MaxParallelism::new(256).unwrap();
    let result = HeapBackend::restore(
        other,
        KeyGroupRange::new(0, 127),
        Arc::new(clock),
        store.as_ref(),
        &[handle],
    );
    let Err(err @ Error::Restore { .. }) = result else {
        panic!("expected a restore error, got {:?}", result.err())
    };
    assert!(err.to_string().contains("cannot change"), "{err}");
}

#[test]
fn handles_a_heap_backend_cannot_restore_are_refused() {
    let max = MaxParallelism::DEFAULT;
    let (_dir, store, clock, handle) = small_snapshot(max);
    let all = KeyGroupRange::all(max);
    let attempt = |handles: &[KeyedStateHandle]| {
        HeapBackend::restore(max, all, Arc::new(clock.clone()), store.as_ref(), handles)
    };
    let refused = |handles: &[KeyedStateHandle], needle: &str| match attempt(handles) {
        Err(err @ Error::Restore { .. }) => {
            assert!(err.to_string().contains(needle), "{err}");
        }
        other => panic!(
            "expected a restore error with '{needle}', got {:?}",
            other.err()
        ),
    };

    let mut rocksdb = handle.clone();
    rocksdb.format = SnapshotFormat::RocksDb;
    refused(&[rocksdb], "format");

    // Another handle (of other key groups) holding "count" as a list state.
    let mut conflicting = handle.clone();
    conflicting.key_groups = KeyGroupRange::new(0, 0);
    let mut left = handle.clone();
    left.key_groups = KeyGroupRange::new(1, 127);
    let meta = conflicting
        .states
        .iter_mut()
        .find(|m| m.name == "count")
        .unwrap();
    meta.kind = cairn::StateKind::List;
    refused(&[left.clone(), conflicting], "state 'count'");

    // Two handles of the same key groups.
    refused(&[handle.clone(), handle.clone()], "same key groups");

    // A handle whose metadata disagrees with its stream.
    refused(&[left], "do not belong together");

    // The untouched handle restores.
    let backend = attempt(&[handle]).unwrap();
    assert_eq!(backend.states().unwrap().len(), STATE_NAMES.len());
}

#[test]
fn a_closed_backend_takes_no_snapshot() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let max = MaxParallelism::DEFAULT;
    let backend = HeapBackend::new(max, KeyGroupRange::all(max));
    backend.close().unwrap();
    assert!(matches!(
        backend.snapshot(&request(&store, 1)),
        Err(Error::Closed)
    ));
    assert!(store.list(None).unwrap().is_empty());
}
