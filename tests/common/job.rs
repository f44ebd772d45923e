//! A job of one operator for snapshot tests: its subtasks on either backend, a model of
//! what every key holds, and checkpoints, savepoints and restores of the whole job.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use cairn::{
    BigEndian, CheckpointStorage, HeapBackend, JobSnapshot, KeyedStateStore, ManualClock,
    MapStateDescriptor, MaxParallelism, PendingCheckpoint, RocksDbBackend, SavepointFormat,
    SnapshotStore, StateDescriptor, Utf8,
};
use tempfile::TempDir;

use super::Kind;

pub const OPERATOR: &str = "word-count";

/// What one key holds: a value, a list and a small map.
pub type KeyState = (Option<u64>, Vec<u32>, BTreeMap<u8, u64>);

/// What every key holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model(pub BTreeMap<String, KeyState>);

/// The backends a savepoint of `format` taken from `from` restores into: a native
/// savepoint of RocksDB is RocksDB's own files, which only RocksDB opens; anything else is
/// the canonical stream, which both backends read.
pub fn restore_targets(from: Kind, format: SavepointFormat) -> &'static [Kind] {
    if format == SavepointFormat::Native && from == Kind::RocksDb {
        &[Kind::RocksDb]
    } else {
        &super::KINDS
    }
}

pub fn value_descriptor() -> StateDescriptor<String, u64> {
    StateDescriptor::new("count", Utf8, BigEndian)
}
pub fn list_descriptor() -> StateDescriptor<String, u32> {
    StateDescriptor::new("seen", Utf8, BigEndian)
}
pub fn map_descriptor() -> MapStateDescriptor<String, u8, u64> {
    MapStateDescriptor::new("by-hour", Utf8, BigEndian, BigEndian)
}

/// One change to one key's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Sets the value.
    Set(String, u64),
    /// Appends to the list.
    Append(String, u32),
    /// Puts a map entry.
    Put(String, u8, u64),
    /// Removes a map entry and clears the value.
    Remove(String, u8),
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Set(key, _) | Op::Append(key, _) | Op::Put(key, _, _) | Op::Remove(key, _) => key,
        }
    }
}

/// `count` random changes to keys `0..keys`.
pub fn ops(rng: &mut Rng, keys: u64, count: usize) -> Vec<Op> {
    (0..count)
        .map(|_| {
            let n = rng.next();
            let key = format!("key-{}", n % keys);
            match (n >> 32) % 5 {
                0 | 1 => Op::Set(key, n >> 40),
                2 => Op::Append(key, (n >> 44) as u32),
                3 => Op::Put(key, (n >> 48) as u8 % 4, n >> 50),
                _ => Op::Remove(key, (n >> 48) as u8 % 4),
            }
        })
        .collect()
}

impl Model {
    /// Applies one change.
    pub fn apply(&mut self, op: &Op) {
        let entry = self.0.entry(op.key().to_string()).or_default();
        match op {
            Op::Set(_, v) => entry.0 = Some(*v),
            Op::Append(_, e) => entry.1.push(*e),
            Op::Put(_, uk, v) => {
                entry.2.insert(*uk, *v);
            }
            Op::Remove(_, uk) => {
                entry.2.remove(uk);
                entry.0 = None;
            }
        }
    }

    /// Forgets keys that hold nothing, as a backend does.
    pub fn prune(&mut self) {
        self.0
            .retain(|_, (v, l, m)| v.is_some() || !l.is_empty() || !m.is_empty());
    }
}

/// A deterministic stream of numbers for test data.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A job of one operator: its subtasks' stores, and where checkpoints go.
pub struct Job {
    pub kind: Kind,
    pub max: MaxParallelism,
    pub parallelism: u32,
    pub subtasks: Vec<KeyedStateStore>,
    _clock: ManualClock,
    /// Last: fields drop in order, so the backends close before their directories go.
    _dirs: TempDir,
}

impl Job {
    pub fn new(kind: Kind, max: MaxParallelism, parallelism: u32) -> Self {
        Self::new_in(&std::env::temp_dir(), kind, max, parallelism)
    }

    /// A new job whose RocksDB directories are in a new directory under `base`.
    pub fn new_in(base: &Path, kind: Kind, max: MaxParallelism, parallelism: u32) -> Self {
        let dirs = tempfile::tempdir_in(base).unwrap();
        let clock = ManualClock::new(1_000);
        let subtasks = (0..parallelism)
            .map(|i| {
                let range = max.subtask_range(i, parallelism).unwrap();
                let clock = Arc::new(clock.clone());
                match kind {
                    Kind::Heap => KeyedStateStore::new(HeapBackend::with_clock(max, range, clock)),
                    Kind::RocksDb => KeyedStateStore::new(
                        RocksDbBackend::builder(
                            dirs.path().join(format!("subtask-{i}")),
                            max,
                            range,
                        )
                        .clock(clock)
                        .open()
                        .unwrap(),
                    ),
                }
            })
            .collect();
        Job {
            kind,
            max,
            parallelism,
            _dirs: dirs,
            subtasks,
            _clock: clock,
        }
    }

    /// Restores the operator from `snapshot` at `parallelism` subtasks.
    pub fn restore(
        kind: Kind,
        store: &Arc<dyn SnapshotStore>,
        snapshot: &JobSnapshot,
        max: MaxParallelism,
        parallelism: u32,
    ) -> cairn::Result<Self> {
        Self::restore_in(
            &std::env::temp_dir(),
            kind,
            store,
            snapshot,
            max,
            parallelism,
        )
    }

    /// [`Job::restore`], with the RocksDB directories in a new directory under `base`.
    pub fn restore_in(
        base: &Path,
        kind: Kind,
        store: &Arc<dyn SnapshotStore>,
        snapshot: &JobSnapshot,
        max: MaxParallelism,
        parallelism: u32,
    ) -> cairn::Result<Self> {
        let dirs = tempfile::tempdir_in(base).unwrap();
        let clock = ManualClock::new(1_000);
        let mut subtasks = Vec::new();
        for plan in snapshot.restore_plan(OPERATOR, parallelism, max)? {
            let clock = Arc::new(clock.clone());
            let store_backend = match kind {
                Kind::Heap => KeyedStateStore::new(HeapBackend::restore(
                    max,
                    plan.key_groups,
                    clock,
                    store.as_ref(),
                    &plan.handles,
                )?),
                Kind::RocksDb => KeyedStateStore::new(
                    RocksDbBackend::builder(
                        dirs.path().join(format!("subtask-{}", plan.subtask)),
                        max,
                        plan.key_groups,
                    )
                    .clock(clock)
                    .restore_from(store.clone(), plan.handles.clone())
                    .open()?,
                ),
            };
            subtasks.push(store_backend);
        }
        Ok(Job {
            kind,
            max,
            parallelism,
            _dirs: dirs,
            subtasks,
            _clock: clock,
        })
    }

    pub fn owner(&self, key: &str) -> usize {
        let kg = self.max.key_group_of(key.as_bytes());
        self.max.subtask_of(kg, self.parallelism).unwrap() as usize
    }

    /// Applies `count` random changes to keys `0..keys`, to the job and the model.
    pub fn write(&self, model: &mut Model, rng: &mut Rng, keys: u64, count: usize) {
        for op in ops(rng, keys, count) {
            self.apply(&op);
            model.apply(&op);
        }
        model.prune();
    }

    /// Applies one change to the subtask that owns its key.
    pub fn apply(&self, op: &Op) {
        let store = &self.subtasks[self.owner(op.key())];
        match op {
            Op::Set(key, v) => store
                .value_state(&value_descriptor())
                .unwrap()
                .update(key, v)
                .unwrap(),
            Op::Append(key, e) => store
                .list_state(&list_descriptor())
                .unwrap()
                .add(key, e)
                .unwrap(),
            Op::Put(key, uk, v) => store
                .map_state(&map_descriptor())
                .unwrap()
                .put(key, uk, v)
                .unwrap(),
            Op::Remove(key, uk) => {
                store
                    .map_state(&map_descriptor())
                    .unwrap()
                    .remove(key, uk)
                    .unwrap();
                store
                    .value_state(&value_descriptor())
                    .unwrap()
                    .clear(key)
                    .unwrap();
            }
        }
    }

    /// Checks that every subtask holds exactly the model's state of its keys, and no other.
    pub fn check(&self, model: &Model) {
        for (key, (value, list, map)) in &model.0 {
            let store = &self.subtasks[self.owner(key)];
            let got_value = store
                .value_state(&value_descriptor())
                .unwrap()
                .get(key)
                .unwrap();
            let got_list: Vec<u32> = store
                .list_state(&list_descriptor())
                .unwrap()
                .get(key)
                .unwrap()
                .collect();
            let got_map: BTreeMap<u8, u64> = store
                .map_state(&map_descriptor())
                .unwrap()
                .iter(key)
                .unwrap()
                .map(|e| e.unwrap())
                .collect();
            assert_eq!(
                (&got_value, &got_list, &got_map),
                (value, list, map),
                "{:?}: key {key} on subtask {} of {}",
                self.kind,
                self.owner(key),
                self.parallelism
            );
        }
        for (i, store) in self.subtasks.iter().enumerate() {
            let range = store.key_group_range();
            let mut seen = BTreeSet::new();
            for keys in [
                store.value_state(&value_descriptor()).unwrap().keys(),
                store.list_state(&list_descriptor()).unwrap().keys(),
                store.map_state(&map_descriptor()).unwrap().state_keys(),
            ] {
                for key in keys {
                    let key = key.unwrap();
                    assert!(
                        range.contains(self.max.key_group_of(key.as_bytes())),
                        "{:?}: subtask {i} ({range}) sees key {key} of another subtask",
                        self.kind
                    );
                    seen.insert(key);
                }
            }
            let expected: BTreeSet<String> = model
                .0
                .keys()
                .filter(|k| self.owner(k) == i)
                .cloned()
                .collect();
            assert_eq!(seen, expected, "{:?}: the keys of subtask {i}", self.kind);
        }
    }

    /// Takes checkpoint `id` of every subtask (asynchronous phases on background threads)
    /// and commits it.
    pub fn checkpoint(
        &self,
        storage: &CheckpointStorage,
        id: u64,
    ) -> cairn::Result<Arc<JobSnapshot>> {
        let mut pending = storage.begin(id)?;
        let tasks = self
            .subtasks
            .iter()
            .map(|s| s.backend().snapshot(pending.request())?.spawn())
            .collect::<cairn::Result<Vec<_>>>()?;
        // Every asynchronous phase finishes before the checkpoint is judged, so an abort
        // never races an upload.
        let results: Vec<_> = tasks.into_iter().map(|t| t.wait()).collect();
        let mut failure = None;
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(handle) => {
                    pending.acknowledge(OPERATOR, self.parallelism, self.max, i as u32, handle)?
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            storage.abort(pending)?;
            return Err(e);
        }
        let job = storage.commit(pending)?;
        for s in &self.subtasks {
            s.backend().notify_checkpoint_complete(id);
        }
        Ok(job)
    }
}

impl Job {
    /// Takes a savepoint of every subtask into a new directory of `root` and commits it.
    pub fn savepoint(
        &self,
        root: &Arc<dyn SnapshotStore>,
        id: u64,
        format: cairn::SavepointFormat,
    ) -> cairn::Result<(cairn::StoragePath, Arc<JobSnapshot>)> {
        let pending = cairn::begin_savepoint(root.clone(), id, format, &cairn::SystemClock)?;
        self.savepoint_into(pending)
    }

    /// Takes the snapshots of a begun savepoint and commits it.
    pub fn savepoint_into(
        &self,
        mut pending: PendingCheckpoint,
    ) -> cairn::Result<(cairn::StoragePath, Arc<JobSnapshot>)> {
        let tasks = self
            .subtasks
            .iter()
            .map(|s| s.backend().snapshot(pending.request())?.spawn())
            .collect::<cairn::Result<Vec<_>>>()?;
        for (i, task) in tasks.into_iter().enumerate() {
            pending.acknowledge(OPERATOR, self.parallelism, self.max, i as u32, task.wait()?)?;
        }
        let dir = pending.savepoint_dir().cloned().expect("a savepoint");
        Ok((dir, pending.commit_savepoint()?))
    }
}

impl Job {
    /// The clock every subtask of the job reads: set or advance it to move TTL time. A
    /// restored job starts with a clock of its own, at 1 000.
    pub fn clock(&self) -> &ManualClock {
        &self._clock
    }
}
