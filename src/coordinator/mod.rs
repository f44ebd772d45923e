//! One job checkpoint written by many processes.
//!
//! A job's subtasks may run in many processes on many hosts; each snapshots its own state
//! into the shared [`SnapshotStore`] and produces its handles. One coordinator (a process
//! of its own, or one of them) gathers every subtask's handles for checkpoint N and commits
//! `chk-N/_metadata`, the commit point, exactly as a job in one process does. The pieces:
//!
//! - a subtask builds its [`SnapshotRequest`] with [`checkpoint_request`] (the same one
//!   [`CheckpointStorage::begin`] hands out), snapshots, and puts its handles in a
//!   [`SubtaskAck`];
//! - it hands the acknowledgement over through the caller's own channel (its bytes,
//!   [`SubtaskAck::encode`]), or as a small object under `chk-N/acks/`
//!   ([`SubtaskAck::publish`]);
//! - the [`CheckpointCoordinator`] knows which operators and parallelisms to expect, takes
//!   acknowledgements ([`receive`](CheckpointCoordinator::receive) from a channel,
//!   [`poll`](CheckpointCoordinator::poll) lists the acknowledgement objects), commits once
//!   every subtask answered, and aborts the checkpoint when its timeout passes first.
//!
//! What a crash at each step leaves (docs/architecture.md has the whole protocol): files a
//! subtask uploaded and acknowledgements without `_metadata` are an unfinished checkpoint,
//! which no reader trusts and the garbage collection of a later commit deletes (the
//! `chk-N/` directory once N is below the latest completed checkpoint, shared files once
//! their creator N is below the oldest retained one); a `_metadata` written is a completed
//! checkpoint, whatever happens to the acknowledgements after it.

mod ack;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::snapshot::{CheckpointId, JobSnapshot, SnapshotRequest};
use crate::storage::{CheckpointStorage, PendingCheckpoint, StoragePath};

pub use ack::{SubtaskAck, ACKS_DIR, ACK_MAGIC, ACK_VERSION};

/// How long a checkpoint waits for its subtasks by default: Flink's checkpoint timeout.
pub const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How often [`CheckpointCoordinator::complete`] lists the acknowledgement objects by
/// default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Gathers the acknowledgements of every subtask of a job for one checkpoint, then commits
/// it, or aborts it once its timeout has passed.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use cairn::{CheckpointCoordinator, CheckpointStorage, HeapBackend, KeyedStateBackend,
///             MaxParallelism, Retention, SubtaskAck};
/// let store = cairn::open_store("memory://coordinator-doc/checkpoints")?;
/// let storage = CheckpointStorage::open(store.clone(), Retention::default())?;
/// let max = MaxParallelism::DEFAULT;
///
/// // The coordinator expects operator "counts" at parallelism 2.
/// let coordinator = CheckpointCoordinator::begin(&storage, 1, &[("counts", 2)])?
///     .with_timeout(Duration::from_secs(30));
///
/// // Each subtask, in its own process: snapshot, then publish its acknowledgement.
/// for subtask in 0..2 {
///     let backend = HeapBackend::new(max, max.subtask_range(subtask, 2)?);
///     let request = cairn::checkpoint_request(store.clone(), 1)?;
///     let handle = backend.snapshot(&request)?.run()?;
///     SubtaskAck::new(1, "counts", 2, max, subtask)
///         .with_keyed_state(handle)
///         .publish(store.as_ref())?;
/// }
///
/// // The coordinator lists the acknowledgements and commits chk-1/_metadata.
/// let job = coordinator.complete()?;
/// assert_eq!(job.operator("counts").map(|o| o.subtasks.len()), Some(2));
/// # Ok::<(), cairn::Error>(())
/// ```
pub struct CheckpointCoordinator<'s> {
    storage: &'s CheckpointStorage,
    pending: PendingCheckpoint,
    /// Operator id → parallelism.
    expected: BTreeMap<String, u32>,
    received: BTreeSet<(String, u32)>,
    /// Acknowledgement objects already read.
    read: HashSet<StoragePath>,
    acks_dir: StoragePath,
    started: Instant,
    timeout: Duration,
    poll_interval: Duration,
}

impl std::fmt::Debug for CheckpointCoordinator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointCoordinator")
            .field("checkpoint_id", &self.id())
            .field("expected", &self.expected)
            .field("received", &self.received.len())
            .finish_non_exhaustive()
    }
}

/// The request a subtask snapshots checkpoint `checkpoint_id` into `store` (the job's
/// checkpoint storage root) with, in any process: the same request
/// [`CheckpointStorage::begin`] hands out.
///
/// # Errors
/// [`Error::InvalidPath`] never in practice.
pub fn checkpoint_request(
    store: Arc<dyn crate::storage::SnapshotStore>,
    checkpoint_id: CheckpointId,
) -> Result<SnapshotRequest> {
    crate::storage::checkpoint_request(store, checkpoint_id)
}

impl<'s> CheckpointCoordinator<'s> {
    /// Begins checkpoint `id` in `storage` (as [`CheckpointStorage::begin`]), expecting one
    /// acknowledgement from every subtask of each `(operator id, parallelism)`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for no operator, an operator given twice, or a parallelism
    /// of 0; as [`CheckpointStorage::begin`].
    pub fn begin(
        storage: &'s CheckpointStorage,
        id: CheckpointId,
        operators: &[(&str, u32)],
    ) -> Result<Self> {
        let invalid = |detail: String| Error::InvalidConfig {
            what: "checkpoint coordinator",
            detail,
        };
        if operators.is_empty() {
            return Err(invalid("a checkpoint needs at least one operator".into()));
        }
        let mut expected = BTreeMap::new();
        for &(operator, parallelism) in operators {
            if operator.is_empty() || parallelism == 0 {
                return Err(invalid(format!(
                    "operator '{operator}' with parallelism {parallelism}: ids are not empty and \
                     parallelisms at least 1"
                )));
            }
            if expected.insert(operator.to_string(), parallelism).is_some() {
                return Err(invalid(format!("operator '{operator}' is given twice")));
            }
        }
        let acks_dir = StoragePath::new(format!("chk-{id}/{ACKS_DIR}"))?;
        Ok(CheckpointCoordinator {
            pending: storage.begin(id)?,
            storage,
            expected,
            received: BTreeSet::new(),
            read: HashSet::new(),
            acks_dir,
            started: Instant::now(),
            timeout: DEFAULT_CHECKPOINT_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
        })
    }

    /// Aborts the checkpoint if not every subtask acknowledged within `timeout` of
    /// [`begin`](Self::begin) (default 10 minutes).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Lists the acknowledgement objects this often while waiting (default 200 ms).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The checkpoint's id.
    pub fn id(&self) -> CheckpointId {
        self.pending.id()
    }

    /// The request subtasks of this process snapshot with (others build it with
    /// [`checkpoint_request`]).
    pub fn request(&self) -> &SnapshotRequest {
        self.pending.request()
    }

    /// Time left before the timeout (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.timeout.saturating_sub(self.started.elapsed())
    }

    /// Whether every expected subtask acknowledged.
    pub fn is_complete(&self) -> bool {
        self.missing().is_empty()
    }

    /// The subtasks not heard from yet, as (operator id, subtask).
    pub fn missing(&self) -> Vec<(String, u32)> {
        self.expected
            .iter()
            .flat_map(|(operator, &p)| (0..p).map(move |subtask| (operator.clone(), subtask)))
            .filter(|key| !self.received.contains(key))
            .collect()
    }

    /// Takes one subtask's acknowledgement (from the caller's channel, or read by
    /// [`poll`](Self::poll)).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for an acknowledgement of another checkpoint, of an operator
    /// not expected or with another parallelism, of a subtask already heard from, or whose
    /// handles [`PendingCheckpoint::acknowledge`] refuses; nothing is taken from it then.
    pub fn receive(&mut self, ack: SubtaskAck) -> Result<()> {
        let id = self.id();
        let refuse = |detail: String| Error::Checkpoint {
            checkpoint_id: id,
            detail: format!(
                "operator '{}', subtask {}: {detail}",
                ack.operator_id, ack.subtask
            ),
        };
        if ack.checkpoint_id != id {
            return Err(refuse(format!(
                "the acknowledgement is for checkpoint {}",
                ack.checkpoint_id
            )));
        }
        match self.expected.get(&ack.operator_id) {
            None => {
                return Err(refuse(
                    "the operator is not one this checkpoint expects".into(),
                ))
            }
            Some(&p) if p != ack.parallelism => {
                return Err(refuse(format!(
                    "the acknowledgement says parallelism {}, this checkpoint expects {p}",
                    ack.parallelism
                )))
            }
            Some(_) => {}
        }
        let key = (ack.operator_id.clone(), ack.subtask);
        if self.received.contains(&key) {
            return Err(refuse("it was already acknowledged".into()));
        }
        let (operator, p, max, subtask) = (
            ack.operator_id.as_str(),
            ack.parallelism,
            ack.max_parallelism,
            ack.subtask,
        );
        if let Some(handle) = ack.keyed_state.clone() {
            self.pending
                .acknowledge(operator, p, max, subtask, handle)?;
        }
        if let Some(state) = ack.operator_state.clone() {
            self.pending
                .acknowledge_operator_state(operator, p, max, subtask, state)?;
        }
        self.received.insert(key);
        Ok(())
    }

    /// Reads the acknowledgement objects under `chk-<id>/acks/` not read before and takes
    /// them; returns how many it took.
    ///
    /// # Errors
    /// [`Error::Corrupted`] for an object that does not decode; as
    /// [`receive`](Self::receive); the store's errors.
    pub fn poll(&mut self) -> Result<usize> {
        let store = self.storage.store().clone();
        let mut paths = store.list(Some(&self.acks_dir))?;
        paths.sort();
        let mut taken = 0;
        for path in paths {
            if self.read.contains(&path) {
                continue;
            }
            let ack = SubtaskAck::read(store.as_ref(), &path)?;
            self.read.insert(path);
            self.receive(ack)?;
            taken += 1;
        }
        Ok(taken)
    }

    /// Waits for every subtask's acknowledgement object, listing them every poll interval,
    /// then commits the checkpoint (`_metadata`, retention, garbage collection) and deletes
    /// the acknowledgements. Acknowledgements already [`receive`](Self::receive)d count.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the subtasks that did not answer if the timeout passes
    /// first; any error of [`poll`](Self::poll) or [`CheckpointStorage::commit`]. The
    /// checkpoint is then aborted (its `chk-<id>/` deleted; what a late subtask still
    /// writes is collected by a later commit) and the previous one stays the latest.
    pub fn complete(mut self) -> Result<Arc<JobSnapshot>> {
        loop {
            if let Err(e) = self.poll() {
                return self.fail(e);
            }
            if self.is_complete() {
                return self.commit();
            }
            let remaining = self.remaining();
            if remaining.is_zero() {
                let e = self.timed_out();
                return self.fail(e);
            }
            std::thread::sleep(self.poll_interval.min(remaining));
        }
    }

    /// Commits the checkpoint now, with the acknowledgements taken so far, and deletes the
    /// acknowledgement objects.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the subtasks missing, if any (the checkpoint is then
    /// aborted); as [`CheckpointStorage::commit`].
    pub fn commit(self) -> Result<Arc<JobSnapshot>> {
        if !self.is_complete() {
            let e = Error::Checkpoint {
                checkpoint_id: self.id(),
                detail: format!(
                    "subtasks {} did not acknowledge; it is aborted",
                    describe(&self.missing())
                ),
            };
            return self.fail(e);
        }
        let store = self.storage.store().clone();
        let acks_dir = self.acks_dir.clone();
        let job = self.storage.commit(self.pending)?;
        // The commit point is written: the acknowledgements are only garbage now, and
        // deleted with the checkpoint's directory if this fails.
        if let Err(e) = store.delete_dir(&acks_dir) {
            warn!(checkpoint = job.checkpoint_id, error = %e, "cannot delete the acknowledgements");
        }
        Ok(job)
    }

    /// Aborts the checkpoint: deletes `chk-<id>/` (private files and acknowledgements).
    ///
    /// # Errors
    /// The store's errors.
    pub fn abort(self) -> Result<()> {
        self.storage.abort(self.pending)
    }

    fn timed_out(&self) -> Error {
        Error::Checkpoint {
            checkpoint_id: self.id(),
            detail: format!(
                "subtasks {} did not acknowledge within {:?}; it is aborted, and files a \
                 late subtask still writes are collected after a later checkpoint completes",
                describe(&self.missing()),
                self.timeout
            ),
        }
    }

    /// Aborts the checkpoint and returns `e`.
    fn fail<T>(self, e: Error) -> Result<T> {
        let id = self.id();
        info!(checkpoint = id, error = %e, "checkpoint aborted by its coordinator");
        if let Err(abort) = self.abort() {
            warn!(checkpoint = id, error = %abort, "cannot delete an aborted checkpoint");
        }
        Err(e)
    }
}

/// `operator 'a' [0, 3], operator 'b' [1]`.
fn describe(missing: &[(String, u32)]) -> String {
    let mut by_operator: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (operator, subtask) in missing {
        by_operator.entry(operator).or_default().push(*subtask);
    }
    by_operator
        .iter()
        .map(|(operator, subtasks)| format!("of operator '{operator}' {subtasks:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
