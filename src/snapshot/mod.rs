//! Snapshots of keyed state: what a subtask's snapshot is, how it is taken in two phases,
//! and how a job's snapshot is described and planned for restore.
//!
//! A backend takes a snapshot in two phases (see [`KeyedStateBackend::snapshot`]): a short
//! synchronous phase that fixes a consistent cut of its state, and an asynchronous phase,
//! the returned [`PendingSnapshot`], that writes it to a [`SnapshotStore`] while the state
//! goes on being read and written. The result is a [`KeyedStateHandle`]: the subtask's key
//! groups, the states' metadata and the stored files with their sizes and CRC32s. A job's
//! handles, per operator and subtask, make up a [`JobSnapshot`], which is what a `_metadata`
//! file holds (format in [`metadata`] and docs/format.md).
//!
//! [`KeyedStateBackend::snapshot`]: crate::KeyedStateBackend::snapshot

pub(crate) mod canonical;
pub(crate) mod metadata;
mod plan;
pub(crate) mod transfer;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::backend::StateMeta;
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::operator_state::OperatorStateSnapshot;
use crate::storage::{SnapshotStore, StoragePath};

pub use metadata::METADATA_VERSION;
pub use plan::SubtaskRestore;

/// A checkpoint's id: increasing over a job's life.
pub type CheckpointId = u64;

/// One opening of a backend: names the files it uploads, so that files of different
/// backend instances never collide in shared storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub u128);

impl InstanceId {
    /// A new, random id.
    pub fn random() -> Self {
        InstanceId(crate::storage::random_u128())
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// How a subtask's keyed state is stored in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotFormat {
    /// RocksDB's own files: SST and OPTIONS files (shared between checkpoints in an
    /// incremental checkpoint, private in a native savepoint), plus the MANIFEST and CURRENT
    /// files that make them a DB.
    RocksDb,
    /// The backend-independent, key-group-ordered stream of docs/format.md.
    Canonical,
}

impl SnapshotFormat {
    pub(crate) fn code(self) -> u8 {
        match self {
            SnapshotFormat::RocksDb => 1,
            SnapshotFormat::Canonical => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(SnapshotFormat::RocksDb),
            2 => Some(SnapshotFormat::Canonical),
            _ => None,
        }
    }
}

impl fmt::Display for SnapshotFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SnapshotFormat::RocksDb => "RocksDB files",
            SnapshotFormat::Canonical => "canonical",
        })
    }
}

/// One stored file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The file's name in the backend: its name in the RocksDB directory (`000012.sst`,
    /// `MANIFEST-000005`), or the role of a canonical stream (`keyed-state`).
    pub name: String,
    /// Where it is stored, relative to the storage root.
    pub path: StoragePath,
    /// Its size in bytes.
    pub size: u64,
    /// The CRC32 (IEEE) of its bytes.
    pub crc32: u32,
}

impl SnapshotFile {
    /// Whether the file is in shared storage (`shared/…`), referenced by other checkpoints.
    pub fn is_shared(&self) -> bool {
        self.path.top() == SHARED_DIR
    }
}

/// The snapshot of one subtask's keyed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedStateHandle {
    /// How the files store the state.
    pub format: SnapshotFormat,
    /// The key groups the subtask owned.
    pub key_groups: KeyGroupRange,
    /// The backend instance that took the snapshot.
    pub instance: InstanceId,
    /// The checkpoint (or savepoint) id it was taken for.
    pub checkpoint_id: CheckpointId,
    /// Every state the backend held, empty ones included.
    pub states: Vec<StateMeta>,
    /// The files, with sizes and CRC32s.
    pub files: Vec<SnapshotFile>,
}

impl KeyedStateHandle {
    /// The bytes of every file the snapshot needs.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The bytes this snapshot wrote itself: every file but the shared ones an earlier
    /// checkpoint wrote.
    pub fn written_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| !f.is_shared() || shared_file_creator(&f.path) == Some(self.checkpoint_id))
            .map(|f| f.size)
            .sum()
    }
}

/// The directory of files shared between checkpoints.
pub const SHARED_DIR: &str = "shared";

/// The name of the file that commits a checkpoint or savepoint.
pub const METADATA_FILE: &str = "_metadata";

/// The path of a shared file created by `checkpoint_id`:
/// `shared/<checkpoint id>-<instance>-<name>`. The creator's id is what garbage collection
/// compares with the oldest retained checkpoint.
pub(crate) fn shared_file_path(
    checkpoint_id: CheckpointId,
    instance: InstanceId,
    name: &str,
) -> Result<StoragePath> {
    StoragePath::new(format!("{SHARED_DIR}/{checkpoint_id}-{instance}-{name}"))
}

/// The checkpoint that created a shared file, from its path; `None` for any other path.
pub fn shared_file_creator(path: &StoragePath) -> Option<CheckpointId> {
    let rest = path.as_str().strip_prefix(SHARED_DIR)?.strip_prefix('/')?;
    let (id, _) = rest.split_once('-')?;
    id.parse().ok()
}

/// What kind of snapshot a backend is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotType {
    /// An incremental checkpoint: RocksDB's SST files go to `shared/` and later
    /// checkpoints reference them. (The heap backend writes its canonical stream.)
    Checkpoint,
    /// A savepoint in the backend-independent canonical stream, from any backend.
    CanonicalSavepoint,
    /// A savepoint in the backend's own files, all private: RocksDB's SST files (the heap
    /// backend's own format is the canonical stream).
    NativeSavepoint,
}

/// The format of a savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SavepointFormat {
    /// Backend-independent: restores into any backend, at any parallelism.
    Canonical,
    /// The backend's own files: fast to take and restore, into the same backend.
    Native,
}

impl SavepointFormat {
    pub(crate) fn snapshot_type(self) -> SnapshotType {
        match self {
            SavepointFormat::Canonical => SnapshotType::CanonicalSavepoint,
            SavepointFormat::Native => SnapshotType::NativeSavepoint,
        }
    }
}

/// What a backend needs to take a snapshot: its id, its type and where to write.
#[derive(Clone)]
pub struct SnapshotRequest {
    /// The checkpoint or savepoint id.
    pub checkpoint_id: CheckpointId,
    /// What kind of snapshot.
    pub snapshot_type: SnapshotType,
    /// Where the files go: the storage root for checkpoints, the savepoint's own directory
    /// for savepoints (so that every path in a savepoint is relative to it).
    pub store: Arc<dyn SnapshotStore>,
    /// The directory, in `store`, for files private to this snapshot (`chk-<id>` for a
    /// checkpoint).
    pub private_dir: StoragePath,
}

impl SnapshotRequest {
    /// Whether SST files go to `shared/` and are referenced by later checkpoints.
    pub fn is_incremental(&self) -> bool {
        self.snapshot_type == SnapshotType::Checkpoint
    }
}

impl fmt::Debug for SnapshotRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotRequest")
            .field("checkpoint_id", &self.checkpoint_id)
            .field("store", &self.store.location())
            .field("snapshot_type", &self.snapshot_type)
            .field("private_dir", &self.private_dir)
            .finish()
    }
}

/// The asynchronous phase of a snapshot, ready to run.
///
/// The synchronous phase already fixed what the snapshot contains; running this writes it
/// to storage and does not block the backend. Dropping it without running it discards the
/// snapshot and its local staging files.
pub struct PendingSnapshot {
    checkpoint_id: CheckpointId,
    work: Box<dyn FnOnce() -> Result<KeyedStateHandle> + Send>,
}

impl PendingSnapshot {
    pub(crate) fn new(
        checkpoint_id: CheckpointId,
        work: impl FnOnce() -> Result<KeyedStateHandle> + Send + 'static,
    ) -> Self {
        PendingSnapshot {
            checkpoint_id,
            work: Box::new(work),
        }
    }

    /// The checkpoint id this snapshot is for.
    pub fn checkpoint_id(&self) -> CheckpointId {
        self.checkpoint_id
    }

    /// Writes the snapshot on this thread.
    ///
    /// # Errors
    /// The store's errors; nothing is committed (the caller aborts the checkpoint).
    pub fn run(self) -> Result<KeyedStateHandle> {
        (self.work)()
    }

    /// Writes the snapshot on a background thread.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] if the thread cannot be started.
    pub fn spawn(self) -> Result<SnapshotTask> {
        let id = self.checkpoint_id;
        let thread = std::thread::Builder::new()
            .name(format!("cairn-snapshot-{id}"))
            .spawn(move || self.run())
            .map_err(|e| Error::Checkpoint {
                checkpoint_id: id,
                detail: format!("cannot start the snapshot thread: {e}"),
            })?;
        Ok(SnapshotTask {
            checkpoint_id: id,
            thread,
        })
    }
}

impl fmt::Debug for PendingSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingSnapshot")
            .field("checkpoint_id", &self.checkpoint_id)
            .finish_non_exhaustive()
    }
}

/// The asynchronous phase of a snapshot, running on a background thread.
#[derive(Debug)]
pub struct SnapshotTask {
    checkpoint_id: CheckpointId,
    thread: JoinHandle<Result<KeyedStateHandle>>,
}

impl SnapshotTask {
    /// Whether the snapshot has finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the snapshot and returns its handle.
    ///
    /// # Errors
    /// The snapshot's error, or [`Error::Checkpoint`] if its thread panicked.
    pub fn wait(self) -> Result<KeyedStateHandle> {
        let id = self.checkpoint_id;
        self.thread.join().unwrap_or_else(|_| {
            Err(Error::Checkpoint {
                checkpoint_id: id,
                detail: "the snapshot thread panicked".into(),
            })
        })
    }
}

/// The keyed state of one operator in a job snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSnapshot {
    /// The operator's stable id.
    pub operator_id: String,
    /// The number of subtasks it ran with.
    pub parallelism: u32,
    /// Its number of key groups.
    pub max_parallelism: MaxParallelism,
    /// The keyed state: one handle per subtask, in subtask order, or none for an operator
    /// without keyed state (a source).
    pub subtasks: Vec<KeyedStateHandle>,
    /// The operator state: one per subtask, in subtask order, or none for an operator
    /// without operator state.
    pub operator_state: Vec<OperatorStateSnapshot>,
}

/// Whether a job snapshot is a checkpoint or a savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotKind {
    /// Taken by the engine for recovery; shares files with other checkpoints.
    Checkpoint,
    /// Taken on purpose by the user; self-contained.
    Savepoint,
}

/// A whole job's snapshot: what one `_metadata` file describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSnapshot {
    /// The checkpoint or savepoint id.
    pub checkpoint_id: CheckpointId,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub taken_at_millis: u64,
    /// Every stateful operator.
    pub operators: Vec<OperatorSnapshot>,
}

impl JobSnapshot {
    /// The operator with id `operator_id`.
    pub fn operator(&self, operator_id: &str) -> Option<&OperatorSnapshot> {
        self.operators.iter().find(|o| o.operator_id == operator_id)
    }

    /// Every file of every subtask.
    pub fn files(&self) -> impl Iterator<Item = &SnapshotFile> {
        self.operators
            .iter()
            .flat_map(|o| &o.subtasks)
            .flat_map(|h| &h.files)
    }

    /// Encodes the `_metadata` bytes (docs/format.md).
    pub fn encode(&self) -> Vec<u8> {
        metadata::encode(self)
    }

    /// Decodes `_metadata` bytes, checking magic, version, CRC32 and every path.
    ///
    /// # Errors
    /// [`Error::Corrupted`] naming `path` and what was wrong.
    pub fn decode(bytes: &[u8], path: &StoragePath) -> Result<Self> {
        metadata::decode(bytes).map_err(|detail| Error::Corrupted {
            what: "snapshot metadata",
            path: path.as_str().into(),
            detail,
        })
    }
}
