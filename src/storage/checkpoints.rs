//! Job-level checkpoints: begin, gather every subtask's handle, commit one `_metadata`,
//! retain the last N, and collect the garbage.
//!
//! A checkpoint exists once `chk-<id>/_metadata` does: [`CheckpointStorage::commit`] writes
//! it last, through [`SnapshotStore::create`] (a temporary name, synced, renamed). Then
//! checkpoints beyond the retained number are subsumed (their `_metadata` deleted first, so
//! a crash in between never leaves half a checkpoint that looks complete) and shared files
//! are collected by reachability: a shared file is deleted only when no retained
//! checkpoint references it *and* the checkpoint that created it (named in its path) is
//! older than the oldest retained one, so files of checkpoints still in flight are never
//! touched. There are no reference counts to drift: the retained `_metadata` files are the
//! whole truth.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::{info, warn};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::keygroup::MaxParallelism;
use crate::operator_state::OperatorStateSnapshot;
use crate::snapshot::metadata::MAX_METADATA_BYTES;
use crate::snapshot::{
    shared_file_creator, CheckpointId, JobSnapshot, KeyedStateHandle, OperatorSnapshot,
    SavepointFormat, SnapshotKind, SnapshotRequest, SnapshotType, METADATA_FILE, SHARED_DIR,
};
use crate::storage::{SnapshotStore, StoragePath, SubStore};

/// Savepoint directories are named `savepoint-<id>-<random>`.
const SAVEPOINT_PREFIX: &str = "savepoint-";

/// The directory, inside a savepoint, of the subtasks' files.
const SAVEPOINT_STATE_DIR: &str = "state";

/// How many completed checkpoints to keep, and what happens to them when the job is
/// cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    retained: usize,
    retain_on_cancel: bool,
}

impl Default for Retention {
    /// One checkpoint, deleted on cancellation: Flink's defaults.
    fn default() -> Self {
        Retention {
            retained: 1,
            retain_on_cancel: false,
        }
    }
}

impl Retention {
    /// Keep the last `retained` completed checkpoints.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for 0.
    pub fn new(retained: usize) -> Result<Self> {
        if retained == 0 {
            return Err(Error::InvalidConfig {
                what: "retained checkpoints",
                detail: "at least one completed checkpoint must be retained".into(),
            });
        }
        Ok(Retention {
            retained,
            ..Retention::default()
        })
    }

    /// Keep the latest checkpoint when the job is cancelled (Flink's
    /// `RETAIN_ON_CANCELLATION`), so it can be restored later.
    pub fn retain_on_cancel(mut self, retain: bool) -> Self {
        self.retain_on_cancel = retain;
        self
    }

    /// The number of completed checkpoints kept.
    pub fn retained(&self) -> usize {
        self.retained
    }
}

/// The checkpoints of one job in one [`SnapshotStore`].
pub struct CheckpointStorage {
    store: Arc<dyn SnapshotStore>,
    retention: Retention,
    clock: Arc<dyn Clock>,
    state: Mutex<Checkpoints>,
}

struct Checkpoints {
    completed: BTreeMap<CheckpointId, Arc<JobSnapshot>>,
    /// The highest id begun, completed or found in the store: new ids must be above it.
    highest_seen: CheckpointId,
}

/// What one garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GarbageReport {
    /// Checkpoints subsumed (their `_metadata` and private files deleted).
    pub subsumed: Vec<CheckpointId>,
    /// Directories of checkpoints that never completed, deleted.
    pub abandoned: Vec<CheckpointId>,
    /// Shared files deleted.
    pub shared_files: usize,
    /// Unfinished writes of shared files deleted: uploads a killed process left behind
    /// (see [`SnapshotStore::list_unfinished`]).
    pub unfinished_files: usize,
    /// Checkpoints whose `_metadata` exists but does not decode: kept, and while there are
    /// any no shared file is deleted (what they reference is unknown).
    pub unreadable: Vec<CheckpointId>,
}

/// A checkpoint or savepoint being taken: the handles gathered so far.
#[derive(Debug)]
pub struct PendingCheckpoint {
    request: SnapshotRequest,
    started: Instant,
    taken_at_millis: u64,
    operators: BTreeMap<String, PendingOperator>,
    /// For a savepoint: its directory under the root it is written to.
    savepoint_dir: Option<StoragePath>,
}

#[derive(Debug)]
struct PendingOperator {
    parallelism: u32,
    max_parallelism: MaxParallelism,
    subtasks: Vec<Option<KeyedStateHandle>>,
    operator_state: Vec<Option<OperatorStateSnapshot>>,
}

impl PendingCheckpoint {
    /// The checkpoint's id.
    pub fn id(&self) -> CheckpointId {
        self.request.checkpoint_id
    }

    /// What each subtask's backend takes its snapshot with.
    pub fn request(&self) -> &SnapshotRequest {
        &self.request
    }

    /// For a savepoint, its directory (`savepoint-<id>-<random>`) under the root it is
    /// written to; `None` for a checkpoint.
    pub fn savepoint_dir(&self) -> Option<&StoragePath> {
        self.savepoint_dir.as_ref()
    }

    /// The job snapshot of the acknowledged handles, once every acknowledged operator has
    /// all its subtasks.
    fn into_job(self, kind: SnapshotKind) -> Result<JobSnapshot> {
        let id = self.id();
        let mut operators = Vec::with_capacity(self.operators.len());
        for (operator_id, op) in self.operators {
            let incomplete = |what: &str, missing: Vec<usize>| {
                Error::Checkpoint {
                checkpoint_id: id,
                detail: format!(
                    "operator '{operator_id}' has no {what} from subtasks {missing:?}; it is discarded"
                ),
            }
            };
            let subtasks =
                all_or_none(op.subtasks).map_err(|m| incomplete("keyed state snapshot", m))?;
            let operator_state =
                all_or_none(op.operator_state).map_err(|m| incomplete("operator state", m))?;
            operators.push(OperatorSnapshot {
                operator_id,
                parallelism: op.parallelism,
                max_parallelism: op.max_parallelism,
                subtasks,
                operator_state,
            });
        }
        Ok(JobSnapshot {
            checkpoint_id: id,
            kind,
            taken_at_millis: self.taken_at_millis,
            operators,
        })
    }

    /// Adds the handle of subtask `subtask` of operator `operator_id`, which runs with
    /// `parallelism` subtasks of `max_parallelism` key groups.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] if the handle is for another checkpoint or other key groups
    /// than the subtask owns, the subtask was already acknowledged, or the operator was
    /// acknowledged with another parallelism.
    pub fn acknowledge(
        &mut self,
        operator_id: &str,
        parallelism: u32,
        max_parallelism: MaxParallelism,
        subtask: u32,
        handle: KeyedStateHandle,
    ) -> Result<()> {
        let id = self.id();
        let fail = |detail: String| subtask_error(id, operator_id, subtask, detail);
        if handle.checkpoint_id != id {
            return Err(fail(format!(
                "the handle is for checkpoint {}",
                handle.checkpoint_id
            )));
        }
        let range = max_parallelism
            .subtask_range(subtask, parallelism)
            .map_err(|e| fail(e.to_string()))?;
        if handle.key_groups != range {
            return Err(fail(format!(
                "the handle holds {} but the subtask owns {range}",
                handle.key_groups
            )));
        }
        // Checked before the operator is created, so a refused handle leaves nothing behind.
        let operator = self.operator(operator_id, parallelism, max_parallelism, subtask)?;
        let slot = &mut operator.subtasks[subtask as usize];
        if slot.is_some() {
            return Err(fail("its keyed state was already acknowledged".into()));
        }
        *slot = Some(handle);
        Ok(())
    }

    /// Adds the operator state of subtask `subtask` of operator `operator_id` (taken with
    /// [`OperatorStateStore::snapshot`](crate::OperatorStateStore::snapshot) at the same
    /// barrier as its keyed state). An operator with operator state must acknowledge it
    /// for every subtask.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] as [`acknowledge`](Self::acknowledge).
    pub fn acknowledge_operator_state(
        &mut self,
        operator_id: &str,
        parallelism: u32,
        max_parallelism: MaxParallelism,
        subtask: u32,
        state: OperatorStateSnapshot,
    ) -> Result<()> {
        let id = self.id();
        let operator = self.operator(operator_id, parallelism, max_parallelism, subtask)?;
        let slot = &mut operator.operator_state[subtask as usize];
        if slot.is_some() {
            return Err(subtask_error(
                id,
                operator_id,
                subtask,
                "its operator state was already acknowledged".into(),
            ));
        }
        *slot = Some(state);
        Ok(())
    }

    /// The pending operator, created on its first acknowledgement.
    fn operator(
        &mut self,
        operator_id: &str,
        parallelism: u32,
        max_parallelism: MaxParallelism,
        subtask: u32,
    ) -> Result<&mut PendingOperator> {
        let id = self.id();
        let fail = |detail: String| subtask_error(id, operator_id, subtask, detail);
        if operator_id.is_empty() {
            return Err(fail("the operator id is empty".into()));
        }
        if subtask >= parallelism || parallelism > max_parallelism.get() {
            return Err(fail(format!(
                "no such subtask of parallelism {parallelism} and max parallelism {max_parallelism}"
            )));
        }
        let operator = self
            .operators
            .entry(operator_id.to_string())
            .or_insert_with(|| PendingOperator {
                parallelism,
                max_parallelism,
                subtasks: vec![None; parallelism as usize],
                operator_state: vec![None; parallelism as usize],
            });
        if operator.parallelism != parallelism || operator.max_parallelism != max_parallelism {
            return Err(fail(format!(
                "the operator was acknowledged with parallelism {} and max parallelism {}",
                operator.parallelism, operator.max_parallelism
            )));
        }
        Ok(operator)
    }
}

/// The error for an acknowledgement that cannot be taken.
fn subtask_error(id: CheckpointId, operator_id: &str, subtask: u32, detail: String) -> Error {
    Error::Checkpoint {
        checkpoint_id: id,
        detail: format!("operator '{operator_id}', subtask {subtask}: {detail}"),
    }
}

/// The items of `slots` if every one is there, none if none is; the subtasks missing
/// otherwise.
fn all_or_none<T>(slots: Vec<Option<T>>) -> std::result::Result<Vec<T>, Vec<usize>> {
    if slots.iter().all(Option::is_none) {
        return Ok(Vec::new());
    }
    let missing: Vec<usize> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| i)
        .collect();
    if missing.is_empty() {
        Ok(slots.into_iter().flatten().collect())
    } else {
        Err(missing)
    }
}

fn checkpoint_dir(id: CheckpointId) -> Result<StoragePath> {
    StoragePath::new(format!("chk-{id}"))
}

fn metadata_path(id: CheckpointId) -> Result<StoragePath> {
    checkpoint_dir(id)?.join(METADATA_FILE)
}

/// The request a subtask snapshots checkpoint `id` into the storage root `store` with.
pub(crate) fn checkpoint_request(
    store: Arc<dyn SnapshotStore>,
    id: CheckpointId,
) -> Result<SnapshotRequest> {
    Ok(SnapshotRequest {
        checkpoint_id: id,
        snapshot_type: SnapshotType::Checkpoint,
        store,
        private_dir: checkpoint_dir(id)?,
    })
}

/// The id of a top-level `savepoint-<id>-<random>` directory name.
pub(crate) fn parse_savepoint_dir(name: &str) -> Option<CheckpointId> {
    parse_id(name.strip_prefix(SAVEPOINT_PREFIX)?.split_once('-')?.0)
}

/// The checkpoint id of a top-level `chk-<id>` directory name: the engine's and the tools'
/// one reading of it.
pub(crate) fn parse_checkpoint_dir(name: &str) -> Option<CheckpointId> {
    parse_id(name.strip_prefix("chk-")?)
}

/// An id as cairn writes it in a name: decimal, without sign or leading zeros, so that
/// one id has one directory (`chk-05` is not checkpoint 5's, and is not cairn's).
fn parse_id(digits: &str) -> Option<CheckpointId> {
    let id: CheckpointId = digits.parse().ok()?;
    (id.to_string() == digits).then_some(id)
}

/// Reads `chk-<id>/_metadata`.
///
/// # Errors
/// [`Error::NotFound`] if the checkpoint does not exist (never completed or was deleted);
/// [`Error::Corrupted`] if its `_metadata` does not decode.
pub fn read_checkpoint(store: &dyn SnapshotStore, id: CheckpointId) -> Result<JobSnapshot> {
    let path = metadata_path(id)?;
    let bytes = store.get(&path, MAX_METADATA_BYTES)?;
    let job = JobSnapshot::decode(&bytes, &path)?;
    if job.checkpoint_id != id {
        return Err(Error::Corrupted {
            what: "snapshot metadata",
            path: path.as_str().into(),
            detail: format!("it describes checkpoint {}", job.checkpoint_id),
        });
    }
    Ok(job)
}

/// The completed checkpoints of a store, by id, and the highest checkpoint id found in it
/// (completed or not). A `_metadata` that does not decode is skipped with a warning: that
/// checkpoint cannot be restored, and an older one is the latest.
///
/// It lists only the root's top level (one request on an object store, whatever the
/// number of shared files), then reads each `chk-<id>/_metadata`: a checkpoint directory
/// without one never completed.
fn scan(
    store: &dyn SnapshotStore,
) -> Result<(BTreeMap<CheckpointId, Arc<JobSnapshot>>, CheckpointId)> {
    let mut completed = BTreeMap::new();
    let mut highest = 0;
    for name in store.list_dir(None)?.dirs {
        if let Some(id) = parse_savepoint_dir(&name) {
            // Savepoints share the id sequence: a new checkpoint or savepoint goes above.
            highest = highest.max(id);
            continue;
        }
        let Some(id) = parse_checkpoint_dir(&name) else {
            continue;
        };
        highest = highest.max(id);
        match read_checkpoint(store, id) {
            Ok(job) => {
                completed.insert(id, Arc::new(job));
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => {
                warn!(checkpoint = id, error = %e, "skipping a checkpoint that cannot be read")
            }
        }
    }
    // A directory holding only a write that never finished still used its id.
    for write in store.list_unfinished(None)? {
        let top = write.target.top();
        let id = parse_checkpoint_dir(top).or_else(|| parse_savepoint_dir(top));
        highest = highest.max(id.unwrap_or(0));
    }
    Ok((completed, highest))
}

/// Begins savepoint `id` in a new directory `savepoint-<id>-<random>` of `root`, in
/// `format`. Every path in it will be relative to that directory, so it can be moved or
/// copied and still restores; nothing in it is shared with checkpoints, and checkpoint
/// garbage collection never touches it.
///
/// Commit it with [`CheckpointStorage::commit`] or [`PendingCheckpoint::commit_savepoint`].
///
/// # Errors
/// [`Error::InvalidPath`] never in practice (the name is generated).
pub fn begin_savepoint(
    root: Arc<dyn SnapshotStore>,
    id: CheckpointId,
    format: SavepointFormat,
    clock: &dyn Clock,
) -> Result<PendingCheckpoint> {
    let dir = StoragePath::new(format!(
        "{SAVEPOINT_PREFIX}{id}-{:08x}",
        crate::storage::random_u128() as u32
    ))?;
    let store: Arc<dyn SnapshotStore> = Arc::new(SubStore::new(root, dir.clone()));
    Ok(PendingCheckpoint {
        request: SnapshotRequest {
            checkpoint_id: id,
            snapshot_type: format.snapshot_type(),
            store,
            private_dir: StoragePath::new(SAVEPOINT_STATE_DIR)?,
        },
        started: Instant::now(),
        taken_at_millis: clock.now_millis(),
        operators: BTreeMap::new(),
        savepoint_dir: Some(dir),
    })
}

impl PendingCheckpoint {
    /// Commits a savepoint: writes `_metadata` in its directory, last.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a checkpoint (commit those through their
    /// [`CheckpointStorage`]) or an operator lacking a subtask; the store's errors.
    pub fn commit_savepoint(self) -> Result<Arc<JobSnapshot>> {
        let id = self.id();
        if self.savepoint_dir.is_none() {
            return Err(Error::Checkpoint {
                checkpoint_id: id,
                detail: "it is a checkpoint; commit it through its CheckpointStorage".into(),
            });
        }
        let store = self.request.store.clone();
        let started = self.started;
        let dir = self.savepoint_dir.clone();
        let job = match self.into_job(SnapshotKind::Savepoint) {
            Ok(job) => job,
            Err(e) => {
                discard_savepoint(store.as_ref());
                return Err(e);
            }
        };
        store.put(&StoragePath::new(METADATA_FILE)?, &job.encode())?;
        let total: u64 = job.files().map(|f| f.size).sum();
        info!(savepoint = id, dir = ?dir.map(|d| d.to_string()), total_bytes = total,
            ms = started.elapsed().as_millis() as u64, "savepoint completed");
        Ok(Arc::new(job))
    }
}

fn discard_savepoint(store: &dyn SnapshotStore) {
    let result = store
        .list(None)
        .and_then(|files| files.iter().try_for_each(|f| store.delete(f)));
    if let Err(e) = result {
        warn!(location = %store.location(), error = %e, "cannot delete a discarded savepoint");
    }
}

/// Reads the `_metadata` of a savepoint whose directory is the root of `store` (a
/// [`LocalStore`](crate::LocalStore) on the directory, or a [`SubStore`]).
///
/// # Errors
/// [`Error::NotFound`] if there is no `_metadata`; [`Error::Corrupted`] if it does not
/// decode or is not a savepoint's.
pub fn read_savepoint(store: &dyn SnapshotStore) -> Result<JobSnapshot> {
    let path = StoragePath::new(METADATA_FILE)?;
    let bytes = store.get(&path, MAX_METADATA_BYTES)?;
    let job = JobSnapshot::decode(&bytes, &path)?;
    if job.kind != SnapshotKind::Savepoint {
        return Err(Error::Corrupted {
            what: "snapshot metadata",
            path: format!("{}/{path}", store.location()).into(),
            detail: "it is a checkpoint's, not a savepoint's; read it with read_checkpoint".into(),
        });
    }
    Ok(job)
}

/// The savepoint directories (`savepoint-<id>-<random>` with a `_metadata`) of `root`.
///
/// # Errors
/// The store's errors.
pub fn list_savepoints(root: &dyn SnapshotStore) -> Result<Vec<StoragePath>> {
    let mut dirs = Vec::new();
    for name in root.list_dir(None)?.dirs {
        if !name.starts_with(SAVEPOINT_PREFIX) {
            continue;
        }
        let dir = StoragePath::new(name)?;
        if root.exists(&dir.join(METADATA_FILE)?)? {
            dirs.push(dir);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The latest completed checkpoint in `store`, if any.
///
/// # Errors
/// The store's errors.
pub fn latest_checkpoint(store: &dyn SnapshotStore) -> Result<Option<JobSnapshot>> {
    let (mut completed, _) = scan(store)?;
    Ok(completed
        .pop_last()
        .map(|(_, job)| Arc::unwrap_or_clone(job)))
}

impl CheckpointStorage {
    /// The checkpoints of a job in `store`, finding those already completed there.
    ///
    /// # Errors
    /// The store's errors.
    pub fn open(store: Arc<dyn SnapshotStore>, retention: Retention) -> Result<Self> {
        let (completed, highest_seen) = scan(store.as_ref())?;
        info!(location = %store.location(), completed = completed.len(),
            latest = ?completed.keys().next_back(), "opened checkpoint storage");
        Ok(CheckpointStorage {
            store,
            retention,
            clock: Arc::new(SystemClock),
            state: Mutex::new(Checkpoints {
                completed,
                highest_seen,
            }),
        })
    }

    /// Sets the clock that timestamps checkpoints.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, Checkpoints> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest completed checkpoint.
    pub fn latest(&self) -> Option<Arc<JobSnapshot>> {
        self.lock().completed.values().next_back().cloned()
    }

    /// The ids of the retained completed checkpoints, oldest first.
    pub fn completed(&self) -> Vec<CheckpointId> {
        self.lock().completed.keys().copied().collect()
    }

    /// A retained completed checkpoint.
    pub fn get(&self, id: CheckpointId) -> Option<Arc<JobSnapshot>> {
        self.lock().completed.get(&id).cloned()
    }

    /// Begins a savepoint in this storage's root, with the next id: a directory of its
    /// own (see [`begin_savepoint`]); the checkpoints and their chain are not affected.
    ///
    /// # Errors
    /// As [`begin_savepoint`].
    pub fn begin_savepoint(&self, format: SavepointFormat) -> Result<PendingCheckpoint> {
        let id = {
            let mut state = self.lock();
            let id = state.highest_seen.checked_add(1).ok_or(Error::Checkpoint {
                checkpoint_id: state.highest_seen,
                detail: "no checkpoint id is left above it".into(),
            })?;
            state.highest_seen = id;
            id
        };
        begin_savepoint(self.store.clone(), id, format, self.clock.as_ref())
    }

    /// Begins checkpoint `id`, which must be higher than every checkpoint begun or found
    /// before.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for an id that does not increase.
    pub fn begin(&self, id: CheckpointId) -> Result<PendingCheckpoint> {
        let mut state = self.lock();
        if id <= state.highest_seen {
            return Err(Error::Checkpoint {
                checkpoint_id: id,
                detail: format!(
                    "checkpoint ids must increase, and {} was already used; begin checkpoint {}",
                    state.highest_seen,
                    state.highest_seen.saturating_add(1)
                ),
            });
        }
        state.highest_seen = id;
        Ok(PendingCheckpoint {
            request: checkpoint_request(self.store.clone(), id)?,
            started: Instant::now(),
            taken_at_millis: self.clock.now_millis(),
            operators: BTreeMap::new(),
            savepoint_dir: None,
        })
    }

    /// Commits `pending`: writes its `_metadata` (the commit point), subsumes checkpoints
    /// beyond the retained number and collects garbage. Tell every backend afterwards with
    /// [`KeyedStateBackend::notify_checkpoint_complete`](crate::KeyedStateBackend::notify_checkpoint_complete).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] (and the checkpoint is discarded with its private files) if
    /// an acknowledged operator lacks a subtask, a newer checkpoint completed first (it is
    /// late), or a shared file it references is gone; the store's errors otherwise, after
    /// which the previous checkpoint stays the latest.
    pub fn commit(&self, pending: PendingCheckpoint) -> Result<Arc<JobSnapshot>> {
        if pending.savepoint_dir.is_some() {
            return pending.commit_savepoint();
        }
        let id = pending.id();
        let mut state = self.lock();
        let started = pending.started;
        let job = self
            .check_references(&pending, &state)
            .and_then(|()| pending.into_job(SnapshotKind::Checkpoint));
        let job = match job {
            Ok(job) => job,
            Err(e) => {
                drop(state);
                self.discard(id);
                return Err(e);
            }
        };
        if let Err(e) = self.store.put(&metadata_path(id)?, &job.encode()) {
            drop(state);
            self.discard(id);
            return Err(e);
        }
        let job = Arc::new(job);
        state.completed.insert(id, job.clone());
        let total: u64 = job.files().map(|f| f.size).sum();
        let written: u64 = job
            .operators
            .iter()
            .flat_map(|o| &o.subtasks)
            .map(KeyedStateHandle::written_bytes)
            .sum();
        info!(
            checkpoint = id,
            total_bytes = total,
            written_bytes = written,
            ms = started.elapsed().as_millis() as u64,
            "checkpoint completed"
        );
        let report = self.collect_garbage_locked(&mut state)?;
        if report != GarbageReport::default() {
            info!(checkpoint = id, ?report, "collected checkpoint garbage");
        }
        Ok(job)
    }

    /// Checks that `pending` is not late and that the shared files it references from
    /// older checkpoints are still there.
    fn check_references(&self, pending: &PendingCheckpoint, state: &Checkpoints) -> Result<()> {
        let id = pending.id();
        if let Some(&latest) = state.completed.keys().next_back() {
            if latest > id {
                return Err(Error::Checkpoint {
                    checkpoint_id: id,
                    detail: format!(
                        "it is late: checkpoint {latest} completed first; it is discarded"
                    ),
                });
            }
        }
        // A backend references only files of checkpoints it was told completed; make sure
        // they are still there, so a committed checkpoint is always restorable.
        let retained: HashSet<&StoragePath> = state
            .completed
            .values()
            .flat_map(|job| job.files())
            .map(|f| &f.path)
            .collect();
        for handle in pending
            .operators
            .values()
            .flat_map(|o| o.subtasks.iter().flatten())
        {
            for file in handle.files.iter().filter(|f| f.is_shared()) {
                if shared_file_creator(&file.path) == Some(id) || retained.contains(&file.path) {
                    continue;
                }
                if self.store.size(&file.path)? != Some(file.size) {
                    return Err(Error::Checkpoint {
                        checkpoint_id: id,
                        detail: format!(
                            "it references the shared file '{}', which is gone; it is discarded, \
                             and the next checkpoint uploads its files anew",
                            file.path
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Discards checkpoint `id` that will not complete, with its private files. Shared
    /// files it uploaded are collected once an older-than-retained rule allows.
    ///
    /// # Errors
    /// The store's errors.
    pub fn abort(&self, pending: PendingCheckpoint) -> Result<()> {
        let id = pending.id();
        if pending.savepoint_dir.is_some() {
            info!(savepoint = id, "savepoint aborted");
            discard_savepoint(pending.request.store.as_ref());
            return Ok(());
        }
        info!(checkpoint = id, "checkpoint aborted");
        self.store.delete_dir(&checkpoint_dir(id)?)
    }

    fn discard(&self, id: CheckpointId) {
        match checkpoint_dir(id).and_then(|dir| self.store.delete_dir(&dir)) {
            Ok(()) => info!(checkpoint = id, "checkpoint discarded"),
            Err(e) => warn!(checkpoint = id, error = %e, "cannot delete a discarded checkpoint"),
        }
    }

    /// Subsumes checkpoints beyond the retained number and deletes what nothing retained
    /// references. [`commit`](Self::commit) does this; call it after a crash or from tools.
    ///
    /// # Errors
    /// The store's errors; what was deleted before stays deleted, and nothing retained is.
    pub fn collect_garbage(&self) -> Result<GarbageReport> {
        let mut state = self.lock();
        self.collect_garbage_locked(&mut state)
    }

    fn collect_garbage_locked(&self, state: &mut Checkpoints) -> Result<GarbageReport> {
        let mut report = GarbageReport::default();
        while state.completed.len() > self.retention.retained {
            let Some((id, _)) = state.completed.pop_first() else {
                break;
            };
            // The commit point goes first: a crash after it leaves garbage, never a
            // checkpoint that looks complete and is not.
            self.store.delete(&metadata_path(id)?)?;
            self.store.delete_dir(&checkpoint_dir(id)?)?;
            report.subsumed.push(id);
        }
        let (Some(&oldest), Some(&latest)) = (
            state.completed.keys().next(),
            state.completed.keys().next_back(),
        ) else {
            return Ok(report);
        };
        let referenced: HashSet<&StoragePath> = state
            .completed
            .values()
            .flat_map(|job| job.files())
            .map(|f| &f.path)
            .collect();
        let mut abandoned = HashSet::new();
        let mut unreadable = HashSet::new();
        // The top level, then `shared/`: listing by prefix, never the savepoints' files.
        for name in self.store.list_dir(None)?.dirs {
            let Some(id) = parse_checkpoint_dir(&name) else {
                continue;
            };
            if state.completed.contains_key(&id) {
                continue;
            }
            if self.store.exists(&metadata_path(id)?)? {
                // A commit point that does not decode: damaged, not aborted. What it
                // references is unknown, so nothing it might reference is deleted.
                unreadable.insert(id);
            } else if id < latest {
                // Older than the latest and not retained: aborted, late, or left by a crash.
                abandoned.insert(id);
            }
        }
        let mut unreferenced = Vec::new();
        let shared = StoragePath::new(SHARED_DIR)?;
        for path in self.store.list(Some(&shared))? {
            let old = shared_file_creator(&path).is_some_and(|creator| creator < oldest);
            if old && !referenced.contains(&path) {
                unreferenced.push(path);
            }
        }
        // Uploads to shared/ that a killed process left unfinished go by the rule of the
        // file each was becoming; those inside a checkpoint's directory go with it.
        let mut unfinished = Vec::new();
        for write in self.store.list_unfinished(Some(&shared))? {
            if shared_file_creator(&write.target).is_some_and(|creator| creator < oldest) {
                unfinished.push(write.temp);
            }
        }
        report.unreadable = unreadable.iter().copied().collect();
        report.unreadable.sort_unstable();
        if !report.unreadable.is_empty() {
            warn!(checkpoints = ?report.unreadable, location = %self.store.location(),
                "checkpoints whose _metadata cannot be read are kept, and no shared file is \
                 deleted while they exist; inspect them with `cairn verify`, then delete them");
        } else {
            for path in &unreferenced {
                self.store.delete(path)?;
            }
            report.shared_files = unreferenced.len();
            for temp in &unfinished {
                self.store.delete(temp)?;
            }
            report.unfinished_files = unfinished.len();
        }
        for id in abandoned.difference(&unreadable) {
            self.store.delete_dir(&checkpoint_dir(*id)?)?;
            report.abandoned.push(*id);
        }
        report.abandoned.sort_unstable();
        Ok(report)
    }

    /// Ends the job as cancelled: keeps the latest checkpoint if the retention says so,
    /// otherwise deletes every checkpoint and shared file.
    ///
    /// # Errors
    /// The store's errors.
    pub fn cancel(&self) -> Result<()> {
        let mut state = self.lock();
        if self.retention.retain_on_cancel {
            let keep = state.completed.pop_last();
            while let Some((id, _)) = state.completed.pop_first() {
                self.store.delete(&metadata_path(id)?)?;
                self.store.delete_dir(&checkpoint_dir(id)?)?;
            }
            if let Some((id, job)) = keep {
                state.completed.insert(id, job);
            }
            self.collect_garbage_locked(&mut state)?;
            return Ok(());
        }
        let ids: Vec<CheckpointId> = state.completed.keys().copied().collect();
        for id in ids {
            self.store.delete(&metadata_path(id)?)?;
        }
        state.completed.clear();
        for path in self.store.list(None)? {
            if path.top() == SHARED_DIR || parse_checkpoint_dir(path.top()).is_some() {
                self.store.delete(&path)?;
            }
        }
        for write in self.store.list_unfinished(None)? {
            let top = write.target.top();
            if top == SHARED_DIR || parse_checkpoint_dir(top).is_some() {
                self.store.delete(&write.temp)?;
            }
        }
        info!(location = %self.store.location(), "deleted every checkpoint of the cancelled job");
        Ok(())
    }
}
