//! Model-based test of snapshots: random programs of state operations (value, list and map
//! state in two namespaces, a value state with TTL under a manual clock), checkpoints,
//! savepoints of both formats, restores of the latest or a retained checkpoint or of a chosen
//! savepoint at a random parallelism (1..=5: scale-in and scale-out), backend switches
//! (heap <-> RocksDB) through canonical savepoints, checkpoints on a disk that fills up
//! (through the `FaultyStore`: they complete or fail alone), and garbage collection under a
//! random retention (1..=3), run against a plain `BTreeMap` model.
//!
//! The model keeps its state as of every snapshot it took, by snapshot id: after every
//! restore the job must hold exactly the state of the snapshot restored (TTL entries judged
//! at the current time, which never goes back), and nothing else. After every checkpoint
//! and garbage collection the store holds exactly the retained checkpoints' `_metadata` and
//! the files they reference, beside the savepoints (and what failed checkpoints left while
//! garbage collection must still take them for checkpoints in flight).
//!
//! A failing program shrinks to a short list of [`Op`]s. CI runs 48 programs of up to 60
//! steps (about half a minute in a debug build on two cores); the long run is
//!
//! ```text
//! PROPTEST_CASES=500 cargo test --release --test model_snapshots
//! ```
//!
//! and `PROPTEST_RNG_SEED=<n>` explores other programs (the default seed is fixed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cairn::{
    BigEndian, CheckpointStorage, JobSnapshot, LocalStore, MapStateDescriptor, MaxParallelism,
    Retention, SavepointFormat, SnapshotFormat, SnapshotStore, StateDescriptor, StoragePath,
    SubStore, TtlConfig,
};
use common::faulty_store::FaultyStore;
use common::job::Job;
use common::Kind;
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError};

/// Keys are `0..KEYS` (one byte each), spread over the key groups.
const KEYS: u8 = 12;
/// Key groups of the operator.
const MAX_PARALLELISM: u32 = 32;
/// The TTL of the `ttl` state, in milliseconds.
const TTL: u64 = 100;
/// Where the job's clock starts (and a restored job's clock, before it is set).
const START: u64 = 1_000;

/// One step of a program.
#[derive(Debug, Clone)]
enum Op {
    /// `value.namespace(ns).update(key, value)`.
    Put { key: u8, ns: u8, value: u64 },
    /// `value.namespace(ns).clear(key)`.
    Clear { key: u8, ns: u8 },
    /// `list.namespace(ns).add_all(key, elements)`.
    Append { key: u8, ns: u8, elements: Vec<u16> },
    /// `list.namespace(ns).clear(key)`.
    ClearList { key: u8, ns: u8 },
    /// `map.namespace(ns).put(key, user_key, value)`.
    MapPut {
        key: u8,
        ns: u8,
        user_key: u8,
        value: u64,
    },
    /// `map.namespace(ns).remove(key, user_key)`.
    MapRemove { key: u8, ns: u8, user_key: u8 },
    /// `map.namespace(ns).clear(key)`.
    MapClear { key: u8, ns: u8 },
    /// `ttl.update(key, value)`: lives `TTL` ms from now.
    PutTtl { key: u8, value: u64 },
    /// The clock moves forward.
    Advance(u64),
    /// A checkpoint of every subtask, with the next id.
    Checkpoint,
    /// A checkpoint on a disk with `space` bytes left: it completes, or fails alone (its
    /// files are collected once no checkpoint in flight could own them).
    CheckpointOnFullDisk { space: u16 },
    /// A savepoint of every subtask, with the next id.
    Savepoint(SavepointFormat),
    /// The job fails and restarts from the latest checkpoint (a new `CheckpointStorage`
    /// finds it), into the backend that took it.
    RestoreLatest { parallelism: u32 },
    /// The job restarts from a retained checkpoint (`pick` modulo their number).
    RestoreRetained { pick: usize, parallelism: u32 },
    /// The job restarts from a savepoint (`pick` modulo their number) into `backend`; a
    /// RocksDB native savepoint restores into RocksDB whatever `backend` says.
    RestoreSavepoint {
        pick: usize,
        parallelism: u32,
        backend: Kind,
    },
    /// `CheckpointStorage::collect_garbage`.
    CollectGarbage,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    let ns = 0u8..2;
    let parallelism = 1u32..=5;
    let backend = prop_oneof![Just(Kind::Heap), Just(Kind::RocksDb)];
    let format = prop_oneof![
        Just(SavepointFormat::Canonical),
        Just(SavepointFormat::Native)
    ];
    prop_oneof![
        6 => (key.clone(), ns.clone(), any::<u64>())
            .prop_map(|(key, ns, value)| Op::Put { key, ns, value }),
        2 => (key.clone(), ns.clone()).prop_map(|(key, ns)| Op::Clear { key, ns }),
        4 => (key.clone(), ns.clone(), prop::collection::vec(any::<u16>(), 1..4))
            .prop_map(|(key, ns, elements)| Op::Append { key, ns, elements }),
        1 => (key.clone(), ns.clone()).prop_map(|(key, ns)| Op::ClearList { key, ns }),
        5 => (key.clone(), ns.clone(), 0u8..4, any::<u64>())
            .prop_map(|(key, ns, user_key, value)| Op::MapPut { key, ns, user_key, value }),
        2 => (key.clone(), ns.clone(), 0u8..4)
            .prop_map(|(key, ns, user_key)| Op::MapRemove { key, ns, user_key }),
        1 => (key.clone(), ns).prop_map(|(key, ns)| Op::MapClear { key, ns }),
        3 => (key, any::<u64>()).prop_map(|(key, value)| Op::PutTtl { key, value }),
        2 => (0u64..=80).prop_map(Op::Advance),
        3 => Just(Op::Checkpoint),
        1 => any::<u16>().prop_map(|space| Op::CheckpointOnFullDisk { space }),
        2 => format.prop_map(Op::Savepoint),
        2 => parallelism.clone().prop_map(|parallelism| Op::RestoreLatest { parallelism }),
        1 => (any::<usize>(), parallelism.clone())
            .prop_map(|(pick, parallelism)| Op::RestoreRetained { pick, parallelism }),
        2 => (any::<usize>(), parallelism, backend).prop_map(|(pick, parallelism, backend)| {
            Op::RestoreSavepoint { pick, parallelism, backend }
        }),
        1 => Just(Op::CollectGarbage),
    ]
}

/// What the job holds: per (key, namespace) for the plain states, per key (with the time of
/// its last write) for the TTL state.
#[derive(Debug, Clone, Default, PartialEq)]
struct State {
    values: BTreeMap<(u8, u8), u64>,
    lists: BTreeMap<(u8, u8), Vec<u16>>,
    maps: BTreeMap<(u8, u8), BTreeMap<u8, u64>>,
    ttl: BTreeMap<u8, (u64, u64)>,
}

impl State {
    fn ttl_visible(&self, key: u8, now: u64) -> Option<u64> {
        self.ttl
            .get(&key)
            .filter(|(_, stamp)| stamp + TTL > now)
            .map(|(value, _)| *value)
    }
}

/// A snapshot the model took: what it holds, and how to restore it.
struct Snap {
    state: State,
    job: Arc<JobSnapshot>,
    /// The backend that took it.
    kind: Kind,
    /// For a savepoint: its directory under the root.
    savepoint: Option<StoragePath>,
}

impl Snap {
    /// Whether it is RocksDB's files, which only a RocksDB backend restores.
    fn is_rocksdb_files(&self) -> bool {
        self.job
            .operators
            .iter()
            .flat_map(|o| &o.subtasks)
            .any(|h| h.format == SnapshotFormat::RocksDb)
    }
}

fn ns_bytes(ns: u8) -> &'static [u8] {
    match ns {
        0 => &[],
        _ => &[7, 0],
    }
}

fn value_state() -> StateDescriptor<u8, u64> {
    StateDescriptor::new("value", BigEndian, BigEndian)
}
fn list_state() -> StateDescriptor<u8, u16> {
    StateDescriptor::new("list", BigEndian, BigEndian)
}
fn map_state() -> MapStateDescriptor<u8, u8, u64> {
    MapStateDescriptor::new("map", BigEndian, BigEndian, BigEndian)
}
fn ttl_state() -> StateDescriptor<u8, u64> {
    StateDescriptor::new("ttl", BigEndian, BigEndian)
        .with_ttl(TtlConfig::new(Duration::from_millis(TTL)))
}

/// The subtask of `job` that owns `key`.
fn owner(job: &Job, key: u8) -> usize {
    let key_group = job.max.key_group_of(&[key]);
    job.max.subtask_of(key_group, job.parallelism).unwrap() as usize
}

/// Registers every state on every subtask, so that even an empty state is in every
/// snapshot.
fn register(job: &Job) {
    for store in &job.subtasks {
        store.value_state(&value_state()).unwrap();
        store.list_state(&list_state()).unwrap();
        store.map_state(&map_state()).unwrap();
        store.value_state(&ttl_state()).unwrap();
    }
}

/// Closes the subtasks of a job about to be dropped: while its directories still exist (a
/// `Job` drops them before its subtasks, and RocksDB then takes a second to close).
fn close(job: &Job) {
    for store in &job.subtasks {
        store.close().unwrap();
    }
}

/// Applies a state operation to the job and the model.
fn apply(job: &Job, state: &mut State, now: u64, op: &Op) {
    let store = |key: u8| &job.subtasks[owner(job, key)];
    match *op {
        Op::Put { key, ns, value } => {
            let mut s = store(key).value_state(&value_state()).unwrap();
            s.namespace(ns_bytes(ns)).update(&key, &value).unwrap();
            state.values.insert((key, ns), value);
        }
        Op::Clear { key, ns } => {
            let mut s = store(key).value_state(&value_state()).unwrap();
            s.namespace(ns_bytes(ns)).clear(&key).unwrap();
            state.values.remove(&(key, ns));
        }
        Op::Append {
            key,
            ns,
            ref elements,
        } => {
            let mut s = store(key).list_state(&list_state()).unwrap();
            s.namespace(ns_bytes(ns)).add_all(&key, elements).unwrap();
            state
                .lists
                .entry((key, ns))
                .or_default()
                .extend(elements.iter().copied());
        }
        Op::ClearList { key, ns } => {
            let mut s = store(key).list_state(&list_state()).unwrap();
            s.namespace(ns_bytes(ns)).clear(&key).unwrap();
            state.lists.remove(&(key, ns));
        }
        Op::MapPut {
            key,
            ns,
            user_key,
            value,
        } => {
            let mut s = store(key).map_state(&map_state()).unwrap();
            s.namespace(ns_bytes(ns))
                .put(&key, &user_key, &value)
                .unwrap();
            state
                .maps
                .entry((key, ns))
                .or_default()
                .insert(user_key, value);
        }
        Op::MapRemove { key, ns, user_key } => {
            let mut s = store(key).map_state(&map_state()).unwrap();
            s.namespace(ns_bytes(ns)).remove(&key, &user_key).unwrap();
            if let Some(map) = state.maps.get_mut(&(key, ns)) {
                map.remove(&user_key);
                if map.is_empty() {
                    state.maps.remove(&(key, ns));
                }
            }
        }
        Op::MapClear { key, ns } => {
            let mut s = store(key).map_state(&map_state()).unwrap();
            s.namespace(ns_bytes(ns)).clear(&key).unwrap();
            state.maps.remove(&(key, ns));
        }
        Op::PutTtl { key, value } => {
            let mut s = store(key).value_state(&ttl_state()).unwrap();
            s.update(&key, &value).unwrap();
            state.ttl.insert(key, (value, now));
        }
        _ => unreachable!("not a state operation: {op:?}"),
    }
}

/// Checks that every subtask holds exactly the model's state of its keys at `now`.
fn check(job: &Job, state: &State, now: u64, what: &str) -> Result<(), TestCaseError> {
    let context = |detail: String| {
        TestCaseError::fail(format!(
            "{what}: {:?} job at parallelism {}: {detail}",
            job.kind, job.parallelism
        ))
    };
    for (i, store) in job.subtasks.iter().enumerate() {
        let mut value = store.value_state(&value_state()).unwrap();
        let mut list = store.list_state(&list_state()).unwrap();
        let mut map = store.map_state(&map_state()).unwrap();
        let mut ttl = store.value_state(&ttl_state()).unwrap();
        let owned: Vec<u8> = (0..KEYS).filter(|&k| owner(job, k) == i).collect();
        for &key in &owned {
            let got = ttl.get(&key).unwrap();
            if got != state.ttl_visible(key, now) {
                return Err(context(format!(
                    "ttl state of key {key}: {got:?}, the model says {:?} at {now}",
                    state.ttl.get(&key)
                )));
            }
            for ns in 0..2u8 {
                let got = value.namespace(ns_bytes(ns)).get(&key).unwrap();
                let want = state.values.get(&(key, ns)).copied();
                if got != want {
                    return Err(context(format!(
                        "value of key {key} ns {ns}: {got:?} instead of {want:?}"
                    )));
                }
                let got: Vec<u16> = list.namespace(ns_bytes(ns)).get(&key).unwrap().collect();
                let want = state.lists.get(&(key, ns)).cloned().unwrap_or_default();
                if got != want {
                    return Err(context(format!(
                        "list of key {key} ns {ns}: {got:?} instead of {want:?}"
                    )));
                }
                let got: BTreeMap<u8, u64> = map
                    .namespace(ns_bytes(ns))
                    .iter(&key)
                    .unwrap()
                    .collect::<cairn::Result<_>>()
                    .unwrap();
                let want = state.maps.get(&(key, ns)).cloned().unwrap_or_default();
                if got != want {
                    return Err(context(format!(
                        "map of key {key} ns {ns}: {got:?} instead of {want:?}"
                    )));
                }
            }
        }
        // No subtask holds a key the model does not (of its own or another's key groups).
        for ns in 0..2u8 {
            let keys = |stored: BTreeSet<u8>, model: BTreeSet<u8>, name: &str| {
                let model: BTreeSet<u8> = model.into_iter().filter(|k| owned.contains(k)).collect();
                if stored == model {
                    Ok(())
                } else {
                    Err(context(format!(
                        "subtask {i}: the keys of {name} in ns {ns} are {stored:?}, not {model:?}"
                    )))
                }
            };
            let filter = |keys: Vec<&(u8, u8)>| -> BTreeSet<u8> {
                keys.into_iter()
                    .filter(|(_, n)| *n == ns)
                    .map(|(k, _)| *k)
                    .collect()
            };
            keys(
                value
                    .namespace(ns_bytes(ns))
                    .keys()
                    .collect::<cairn::Result<_>>()
                    .unwrap(),
                filter(state.values.keys().collect()),
                "value",
            )?;
            keys(
                list.namespace(ns_bytes(ns))
                    .keys()
                    .collect::<cairn::Result<_>>()
                    .unwrap(),
                filter(state.lists.keys().collect()),
                "list",
            )?;
            keys(
                map.namespace(ns_bytes(ns))
                    .state_keys()
                    .collect::<cairn::Result<_>>()
                    .unwrap(),
                filter(state.maps.keys().collect()),
                "map",
            )?;
        }
    }
    Ok(())
}

/// Checks that the store holds exactly the retained checkpoints (the last `retained` taken)
/// with the files they reference, and the savepoints.
fn check_storage(
    store: &Arc<dyn SnapshotStore>,
    storage: &CheckpointStorage,
    checkpoints: &[u64],
    failed: &[u64],
    retained: usize,
) -> Result<(), TestCaseError> {
    let expected_ids = checkpoints[checkpoints.len().saturating_sub(retained)..].to_vec();
    prop_assert_eq!(
        storage.completed(),
        expected_ids.clone(),
        "retained checkpoints"
    );
    let (oldest, latest) = (expected_ids.first().copied(), expected_ids.last().copied());
    let mut expected = BTreeSet::new();
    for id in expected_ids {
        let job = storage.get(id).unwrap();
        expected.insert(format!("chk-{id}/_metadata"));
        expected.extend(job.files().map(|f| f.path.to_string()));
    }
    let stored: BTreeSet<String> = store
        .list(None)
        .unwrap()
        .into_iter()
        .filter(|p| !p.top().starts_with("savepoint-"))
        // What a failed checkpoint left is kept while it could be a checkpoint in flight:
        // its directory while it is above the latest completed, its shared files while it is
        // not below the oldest retained.
        .filter(|p| {
            let failed_dir = p
                .top()
                .strip_prefix("chk-")
                .and_then(|id| id.parse::<u64>().ok())
                .is_some_and(|id| failed.contains(&id) && Some(id) > latest);
            let failed_shared = cairn::shared_file_creator(p)
                .is_some_and(|id| failed.contains(&id) && oldest.is_none_or(|o| id >= o));
            !failed_dir && !failed_shared
        })
        .map(|p| p.to_string())
        .collect();
    prop_assert_eq!(stored, expected, "the checkpoint files in the store");
    Ok(())
}

struct Run {
    _root: tempfile::TempDir,
    store: Arc<dyn SnapshotStore>,
    retained: usize,
    storage: CheckpointStorage,
    job: Job,
    state: State,
    now: u64,
    next_id: u64,
    snaps: BTreeMap<u64, Snap>,
    checkpoints: Vec<u64>,
    /// Checkpoints that failed on a full disk.
    failed: Vec<u64>,
    savepoints: Vec<u64>,
    faulty: FaultyStore,
}

impl Run {
    fn new(kind: Kind, parallelism: u32, retained: usize) -> Self {
        let root = tempfile::tempdir().unwrap();
        let local: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(root.path()).unwrap());
        let faulty = FaultyStore::new(local);
        let store: Arc<dyn SnapshotStore> = Arc::new(faulty.clone());
        let storage = Self::storage(&store, retained);
        let max = MaxParallelism::new(MAX_PARALLELISM).unwrap();
        let job = Job::new(kind, max, parallelism);
        register(&job);
        Run {
            _root: root,
            store,
            retained,
            storage,
            job,
            state: State::default(),
            now: START,
            next_id: 1,
            snaps: BTreeMap::new(),
            checkpoints: Vec::new(),
            failed: Vec::new(),
            savepoints: Vec::new(),
            faulty,
        }
    }

    fn storage(store: &Arc<dyn SnapshotStore>, retained: usize) -> CheckpointStorage {
        CheckpointStorage::open(store.clone(), Retention::new(retained).unwrap()).unwrap()
    }

    fn restore(
        &mut self,
        id: u64,
        kind: Kind,
        parallelism: u32,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let snap = &self.snaps[&id];
        let kind = if snap.is_rocksdb_files() {
            Kind::RocksDb
        } else {
            kind
        };
        let store: Arc<dyn SnapshotStore> = match &snap.savepoint {
            Some(dir) => Arc::new(SubStore::new(self.store.clone(), dir.clone())),
            None => self.store.clone(),
        };
        let job = Job::restore(kind, &store, &snap.job, self.job.max, parallelism)
            .map_err(|e| TestCaseError::fail(format!("{what}: restore failed: {e}")))?;
        job.clock().set(self.now);
        register(&job);
        close(&self.job);
        self.job = job;
        self.state = snap.state.clone();
        check(&self.job, &self.state, self.now, what)
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Advance(ms) => {
                self.now += ms;
                self.job.clock().set(self.now);
            }
            Op::Checkpoint | Op::CheckpointOnFullDisk { .. } => {
                let id = self.next_id;
                self.next_id += 1;
                if let Op::CheckpointOnFullDisk { space } = *op {
                    self.faulty.disk_full_after(u64::from(space));
                }
                let result = self.job.checkpoint(&self.storage, id);
                self.faulty.clear();
                let job = match result {
                    Ok(job) => job,
                    Err(e) if matches!(op, Op::CheckpointOnFullDisk { .. }) => {
                        prop_assert!(
                            e.to_string().contains("no space left"),
                            "checkpoint {} failed for another reason: {}",
                            id,
                            e
                        );
                        let completed = self.checkpoints.len().saturating_sub(self.retained);
                        prop_assert_eq!(
                            self.storage.completed(),
                            self.checkpoints[completed..].to_vec(),
                            "a failed checkpoint changes no retained one"
                        );
                        self.failed.push(id);
                        return Ok(());
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("checkpoint {id}: {e}"))),
                };
                self.snaps.insert(
                    id,
                    Snap {
                        state: self.state.clone(),
                        job,
                        kind: self.job.kind,
                        savepoint: None,
                    },
                );
                self.checkpoints.push(id);
                check_storage(
                    &self.store,
                    &self.storage,
                    &self.checkpoints,
                    &self.failed,
                    self.retained,
                )?;
            }
            Op::Savepoint(format) => {
                let id = self.next_id;
                self.next_id += 1;
                let (dir, job) = self
                    .job
                    .savepoint(&self.store, id, format)
                    .map_err(|e| TestCaseError::fail(format!("savepoint {id}: {e}")))?;
                self.snaps.insert(
                    id,
                    Snap {
                        state: self.state.clone(),
                        job,
                        kind: self.job.kind,
                        savepoint: Some(dir),
                    },
                );
                self.savepoints.push(id);
            }
            Op::RestoreLatest { parallelism } => {
                let Some(&id) = self.checkpoints.last() else {
                    return Ok(());
                };
                // A restart: a new storage finds the latest checkpoint in the store.
                self.storage = Self::storage(&self.store, self.retained);
                let latest = cairn::latest_checkpoint(self.store.as_ref())
                    .unwrap()
                    .map(|j| j.checkpoint_id);
                prop_assert_eq!(latest, Some(id), "the latest checkpoint in the store");
                let kind = self.snaps[&id].kind;
                self.restore(id, kind, parallelism, &format!("restore checkpoint {id}"))?;
            }
            Op::RestoreRetained { pick, parallelism } => {
                let retained = self.storage.completed();
                if retained.is_empty() {
                    return Ok(());
                }
                let id = retained[pick % retained.len()];
                let kind = self.snaps[&id].kind;
                self.restore(
                    id,
                    kind,
                    parallelism,
                    &format!("restore retained checkpoint {id}"),
                )?;
            }
            Op::RestoreSavepoint {
                pick,
                parallelism,
                backend,
            } => {
                if self.savepoints.is_empty() {
                    return Ok(());
                }
                let id = self.savepoints[pick % self.savepoints.len()];
                self.restore(id, backend, parallelism, &format!("restore savepoint {id}"))?;
            }
            Op::CollectGarbage => {
                self.storage.collect_garbage().unwrap();
                check_storage(
                    &self.store,
                    &self.storage,
                    &self.checkpoints,
                    &self.failed,
                    self.retained,
                )?;
            }
            _ => apply(&self.job, &mut self.state, self.now, op),
        }
        Ok(())
    }
}

fn run(kind: Kind, parallelism: u32, retained: usize, program: &[Op]) -> Result<(), TestCaseError> {
    let mut run = Run::new(kind, parallelism, retained);
    for (step, op) in program.iter().enumerate() {
        run.step(op)
            .map_err(|e| TestCaseError::fail(format!("step {step} ({op:?}): {e}")))?;
    }
    check(&run.job, &run.state, run.now, "at the end")?;
    close(&run.job);
    Ok(())
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(common::proptest_cases());
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x6361_6972_6e21);
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn restores_equal_the_model_of_the_snapshot_restored(
        kind in prop_oneof![Just(Kind::Heap), Just(Kind::RocksDb)],
        parallelism in 1u32..=5,
        retained in 1usize..=3,
        program in prop::collection::vec(op(), 1..60),
    ) {
        run(kind, parallelism, retained, &program)?;
    }
}

/// Every kind of step at least once, on both backends, whatever the random programs hit.
#[test]
fn a_program_with_every_step() {
    use Op::*;
    for kind in [Kind::Heap, Kind::RocksDb] {
        let program = vec![
            Put {
                key: 1,
                ns: 0,
                value: 10,
            },
            Put {
                key: 2,
                ns: 1,
                value: 20,
            },
            Append {
                key: 3,
                ns: 0,
                elements: vec![1, 2],
            },
            MapPut {
                key: 4,
                ns: 1,
                user_key: 1,
                value: 40,
            },
            PutTtl { key: 5, value: 50 },
            Checkpoint,
            Savepoint(SavepointFormat::Canonical),
            Advance(60),
            PutTtl { key: 6, value: 60 },
            Clear { key: 1, ns: 0 },
            ClearList { key: 3, ns: 0 },
            MapRemove {
                key: 4,
                ns: 1,
                user_key: 1,
            },
            Append {
                key: 7,
                ns: 1,
                elements: vec![7],
            },
            Checkpoint,
            Savepoint(SavepointFormat::Native),
            Advance(60), // key 5 expires, key 6 lives on
            RestoreLatest { parallelism: 3 },
            MapPut {
                key: 8,
                ns: 0,
                user_key: 2,
                value: 80,
            },
            MapClear { key: 8, ns: 0 },
            Checkpoint,
            RestoreRetained {
                pick: 0,
                parallelism: 1,
            },
            RestoreSavepoint {
                pick: 0,
                parallelism: 5,
                backend: Kind::Heap,
            },
            Checkpoint,
            RestoreSavepoint {
                pick: 1,
                parallelism: 2,
                backend: Kind::RocksDb,
            },
            Advance(80),
            Checkpoint,
            CheckpointOnFullDisk { space: 100 },
            CollectGarbage,
            RestoreLatest { parallelism: 4 },
            CheckpointOnFullDisk { space: 60_000 },
            RestoreLatest { parallelism: 1 },
        ];
        run(kind, 2, 2, &program).unwrap();
    }
}
