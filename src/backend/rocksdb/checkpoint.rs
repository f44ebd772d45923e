//! Incremental checkpoints of a RocksDB backend.
//!
//! The synchronous phase flushes the memtables (atomically across column families, so all
//! states are cut at the same write, and without waiting for compaction: see
//! [`super::flush`]), then asks RocksDB for a checkpoint of the DB in a staging directory
//! inside the backend's directory, which hard-links the live SST files: it costs the
//! memtables' size, never the state's. The asynchronous phase uploads the
//! staged files and removes the staging directory:
//! - an SST or OPTIONS file that the last completed checkpoint known to this backend already
//!   holds is referenced, not uploaded: within one DB a file number is never reused and
//!   these files never change once written, so the local name identifies the file (an
//!   OPTIONS file, ~30 KiB with a handful of states, changes only when a state is
//!   registered or the backend reopened);
//! - any other SST or OPTIONS file goes to `shared/<checkpoint>-<instance>-<name>`
//!   (incremental) or to the snapshot's private directory (self-contained snapshots);
//! - MANIFEST and CURRENT, which change with every flush, go to `chk-<id>/<instance>/` as
//!   private files.
//!
//! Which files a backend may reference is tracked per checkpoint: files of a checkpoint
//! become referencable only once [`notify_checkpoint_complete`] says it completed, so an
//! aborted checkpoint's uploads are never relied on.
//!
//! [`notify_checkpoint_complete`]: crate::KeyedStateBackend::notify_checkpoint_complete

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rocksdb::checkpoint::Checkpoint;
use tracing::info;

use crate::error::{Error, Result};
use crate::snapshot::transfer::{in_parallel, upload};
use crate::snapshot::{
    shared_file_path, CheckpointId, InstanceId, KeyedStateHandle, PendingSnapshot, SnapshotFile,
    SnapshotFormat, SnapshotRequest,
};
use crate::{KeyGroupRange, StateMeta};

/// The directory, inside a backend's directory, where checkpoints are staged.
pub(super) const STAGING_DIR: &str = "_cairn_staging";

/// The SST files of snapshots, by local file name: of the last completed checkpoint this
/// backend was told of, and of the ones still pending; each with the location of the store
/// that holds them, since a checkpoint can reference only files of its own store.
#[derive(Debug, Default)]
pub(super) struct UploadedFiles {
    confirmed: Option<Uploads>,
    pending: BTreeMap<CheckpointId, Uploads>,
}

#[derive(Debug, Clone)]
struct Uploads {
    checkpoint_id: CheckpointId,
    location: String,
    files: Arc<HashMap<String, SnapshotFile>>,
}

impl UploadedFiles {
    /// Starts the chain from a restored checkpoint, read from `location`, whose files are
    /// this DB's files.
    pub(super) fn restored(handle: &KeyedStateHandle, location: String) -> Self {
        let files = handle
            .files
            .iter()
            .filter(|f| f.is_shared())
            .map(|f| (f.name.clone(), f.clone()))
            .collect();
        UploadedFiles {
            confirmed: Some(Uploads {
                checkpoint_id: handle.checkpoint_id,
                location,
                files: Arc::new(files),
            }),
            pending: BTreeMap::new(),
        }
    }

    pub(super) fn complete(&mut self, checkpoint_id: CheckpointId) {
        if let Some(uploads) = self.pending.remove(&checkpoint_id) {
            if self
                .confirmed
                .as_ref()
                .is_none_or(|confirmed| confirmed.checkpoint_id < checkpoint_id)
            {
                self.confirmed = Some(uploads);
            }
        }
        self.pending = self.pending.split_off(&checkpoint_id.saturating_add(1));
    }

    /// The files a checkpoint written to `location` may reference: none if the last
    /// completed checkpoint is in another store (a job restored from one root and
    /// checkpointing to another uploads everything once, then references again).
    fn base(&self, location: &str) -> Arc<HashMap<String, SnapshotFile>> {
        match &self.confirmed {
            Some(uploads) if uploads.location == location => uploads.files.clone(),
            _ => Arc::default(),
        }
    }
}

/// What the asynchronous phase needs, taken in the synchronous phase.
pub(super) struct StagedCheckpoint {
    pub(super) request: SnapshotRequest,
    pub(super) staging: PathBuf,
    pub(super) instance: InstanceId,
    pub(super) range: KeyGroupRange,
    pub(super) states: Vec<StateMeta>,
    pub(super) uploaded: Arc<Mutex<UploadedFiles>>,
    pub(super) db_dir: PathBuf,
}

/// The synchronous phase: a flush of every column family that does not wait for
/// compaction (see [`super::flush`]), then a RocksDB checkpoint (hard links, no second
/// flush) in the staging directory. Returns the staging directory.
pub(super) fn stage(
    db: &rocksdb::DB,
    db_dir: &Path,
    states: &[StateMeta],
    checkpoint_id: CheckpointId,
) -> Result<PathBuf> {
    let staging_root = db_dir.join(STAGING_DIR);
    let staging = staging_root.join(format!("chk-{checkpoint_id}"));
    if staging.exists() {
        // Left by a snapshot with the same id that was interrupted.
        std::fs::remove_dir_all(&staging).map_err(|source| Error::Io {
            op: "remove a stale staging directory",
            path: staging.clone(),
            source,
        })?;
    }
    std::fs::create_dir_all(&staging_root).map_err(|source| Error::Io {
        op: "create the staging directory",
        path: staging_root.clone(),
        source,
    })?;
    let rocks = |e: rocksdb::Error| Error::RocksDb {
        op: format!("create the checkpoint of checkpoint {checkpoint_id}"),
        path: db_dir.to_path_buf(),
        detail: e.into_string(),
    };
    let names = [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, super::META_CF]
        .into_iter()
        .chain(states.iter().map(|meta| meta.name.as_str()));
    let mut column_families = Vec::with_capacity(states.len() + 2);
    for name in names {
        column_families.push(db.cf_handle(name).ok_or_else(|| Error::RocksDb {
            op: format!("flush for checkpoint {checkpoint_id}"),
            path: db_dir.to_path_buf(),
            detail: format!("column family '{name}' is missing"),
        })?);
    }
    super::flush::flush_allowing_write_stall(db, &column_families).map_err(|detail| {
        Error::RocksDb {
            op: format!("flush for checkpoint {checkpoint_id}"),
            path: db_dir.to_path_buf(),
            detail,
        }
    })?;
    // Everything written before the call is in SST files now: the checkpoint must not
    // flush again (a log size of u64::MAX says never), or it would wait for compaction.
    Checkpoint::new(db)
        .and_then(|c| c.create_checkpoint_with_log_size(&staging, u64::MAX))
        .map_err(rocks)?;
    Ok(staging)
}

impl StagedCheckpoint {
    /// The asynchronous phase as a [`PendingSnapshot`].
    pub(super) fn into_pending(self, sync_started: Instant) -> PendingSnapshot {
        let id = self.request.checkpoint_id;
        let sync_time = sync_started.elapsed();
        PendingSnapshot::new(id, move || {
            let staging = self.staging.clone();
            let result = self.upload(sync_time);
            if let Err(e) = std::fs::remove_dir_all(&staging) {
                tracing::warn!(dir = %staging.display(), error = %e, "cannot remove a staging directory");
            }
            result
        })
    }

    fn upload(self, sync_time: std::time::Duration) -> Result<KeyedStateHandle> {
        let started = Instant::now();
        let id = self.request.checkpoint_id;
        let location = self.request.store.location();
        let base = self
            .uploaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .base(&location);
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.staging).map_err(|source| Error::Io {
            op: "list the staging directory",
            path: self.staging.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                op: "list the staging directory",
                path: self.staging.clone(),
                source,
            })?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|name| Error::Corrupted {
                    what: "checkpoint staging directory",
                    path: self.staging.clone(),
                    detail: format!("the file name {name:?} is not UTF-8"),
                })?;
            names.push(name);
        }
        names.sort();
        let private_dir = self.request.private_dir.join(&self.instance.to_string())?;
        let store = self.request.store.as_ref();
        let files = in_parallel(store.transfer_concurrency(), &names, |name| {
            let immutable = name.ends_with(".sst") || name.starts_with("OPTIONS-");
            let local = self.staging.join(name);
            if immutable && self.request.is_incremental() {
                if let Some(existing) = base.get(name) {
                    let size = std::fs::metadata(&local).map(|m| m.len()).ok();
                    if size == Some(existing.size) {
                        return Ok((existing.clone(), false));
                    }
                }
                let path = shared_file_path(id, self.instance, name)?;
                return Ok((upload(store, &local, name, path)?, true));
            }
            let path = private_dir.join(name)?;
            Ok((upload(store, &local, name, path)?, true))
        })?;
        let uploaded_bytes: u64 = files
            .iter()
            .filter(|(_, new)| *new)
            .map(|(f, _)| f.size)
            .sum();
        let files: Vec<SnapshotFile> = files.into_iter().map(|(f, _)| f).collect();
        if self.request.is_incremental() {
            let ssts = files
                .iter()
                .filter(|f| f.is_shared())
                .map(|f| (f.name.clone(), f.clone()))
                .collect();
            self.uploaded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .insert(
                    id,
                    Uploads {
                        checkpoint_id: id,
                        location,
                        files: Arc::new(ssts),
                    },
                );
        }
        let handle = KeyedStateHandle {
            format: SnapshotFormat::RocksDb,
            key_groups: self.range,
            instance: self.instance,
            checkpoint_id: id,
            states: self.states,
            files,
        };
        info!(
            checkpoint = id,
            dir = %self.db_dir.display(),
            sync_ms = sync_time.as_millis() as u64,
            async_ms = started.elapsed().as_millis() as u64,
            files = handle.files.len(),
            total_bytes = handle.total_bytes(),
            uploaded_bytes,
            "RocksDB snapshot written"
        );
        Ok(handle)
    }
}
