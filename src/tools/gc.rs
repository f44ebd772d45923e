//! `cairn gc`: delete the orphans a crash or an aborted checkpoint left under a storage
//! root, by the engine's own rule.
//!
//! The rule is not re-implemented here: the root is opened as [`CheckpointStorage`] with a
//! retention of exactly the completed checkpoints it holds (so none is subsumed: which
//! checkpoints to keep is the job's business, not a tool's) and its
//! [`collect_garbage`](CheckpointStorage::collect_garbage) runs on a store that records
//! every deletion (and, for a dry run, performs none). So the tool deletes exactly what the
//! engine would: shared files that no completed checkpoint references and that a
//! checkpoint older than the oldest completed one created, unfinished uploads of such files
//! (temporary files a killed process left in `shared/`), and `chk-<id>/` directories
//! without `_metadata` older than the latest completed one. Savepoint directories are never
//! touched.

use std::io::Read;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::snapshot::METADATA_FILE;
use crate::storage::{
    CheckpointStorage, DirListing, Location, Retention, SnapshotStore, SnapshotWrite, StoragePath,
    UnfinishedWrite,
};

use super::open::{checkpoint_dir_id, open_location, read_metadata};

/// A file [`collect_garbage`] deleted (or would delete, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedFile {
    /// Its path under the root.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The outcome of [`collect_garbage`].
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// The storage root.
    pub root: String,
    /// Whether nothing was deleted (only listed).
    pub dry_run: bool,
    /// The completed checkpoints found, which keep their files.
    pub checkpoints: Vec<u64>,
    /// `chk-<id>` directories of checkpoints that never completed, deleted.
    pub abandoned_checkpoints: Vec<u64>,
    /// Shared files deleted.
    pub shared_files: usize,
    /// Unfinished uploads to `shared/` deleted: temporary files a killed process left.
    pub unfinished_files: usize,
    /// Every file deleted, by path.
    pub deleted: Vec<DeletedFile>,
    /// Their bytes.
    pub deleted_bytes: u64,
}

/// A store that records deletions and, unless `dry_run`, performs them.
struct Recording {
    inner: Arc<dyn SnapshotStore>,
    dry_run: bool,
    deleted: Mutex<Vec<DeletedFile>>,
}

impl Recording {
    fn record(&self, path: &StoragePath) -> Result<()> {
        let size = self.inner.size(path)?.unwrap_or(0);
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(DeletedFile {
                path: path.to_string(),
                size,
            });
        Ok(())
    }
}

impl SnapshotStore for Recording {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self, path: &StoragePath) -> Result<Box<dyn SnapshotWrite>> {
        Err(Error::InvalidConfig {
            what: "gc",
            detail: format!("garbage collection must not write, and tried to write '{path}'"),
        })
    }

    fn open(&self, path: &StoragePath) -> Result<Box<dyn Read + Send>> {
        self.inner.open(path)
    }

    fn read_range(
        &self,
        path: &StoragePath,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn Read + Send>> {
        self.inner.read_range(path, offset, len)
    }

    fn size(&self, path: &StoragePath) -> Result<Option<u64>> {
        self.inner.size(path)
    }

    fn list(&self, dir: Option<&StoragePath>) -> Result<Vec<StoragePath>> {
        self.inner.list(dir)
    }

    fn list_unfinished(&self, dir: Option<&StoragePath>) -> Result<Vec<UnfinishedWrite>> {
        self.inner.list_unfinished(dir)
    }

    fn list_dir(&self, dir: Option<&StoragePath>) -> Result<DirListing> {
        self.inner.list_dir(dir)
    }

    fn delete(&self, path: &StoragePath) -> Result<()> {
        self.record(path)?;
        if self.dry_run {
            return Ok(());
        }
        self.inner.delete(path)
    }

    fn delete_dir(&self, dir: &StoragePath) -> Result<()> {
        let mut files = self.inner.list(Some(dir))?;
        files.sort();
        for file in &files {
            self.record(file)?;
        }
        if self.dry_run {
            return Ok(());
        }
        self.inner.delete_dir(dir)
    }
}

/// Refuses a root where a checkpoint's `_metadata` does not decode: the engine would take
/// that checkpoint for an aborted one and collect its files, which a tool must not do on
/// a guess. The user decides (`cairn verify` says what is wrong).
fn check_metadata(root: &Location, store: &dyn SnapshotStore) -> Result<()> {
    for name in store.list_dir(None)?.dirs {
        let Some(id) = checkpoint_dir_id(&name) else {
            continue;
        };
        if !store.exists(&StoragePath::new(name.as_str())?.join(METADATA_FILE)?)? {
            continue;
        }
        let metadata = root.join(&name).join(METADATA_FILE);
        let (job, _, _) = read_metadata(&metadata)?;
        if job.checkpoint_id != id {
            return Err(Error::Corrupted {
                what: "snapshot metadata",
                path: metadata.to_string().into(),
                detail: format!("it describes checkpoint {}", job.checkpoint_id),
            });
        }
    }
    Ok(())
}

/// Deletes (or, with `dry_run`, lists) the orphans under the storage root `root`, by the
/// engine's rule (see the module docs). Run it when no job is committing checkpoints to
/// the root, or rely on the rule: files of checkpoints in flight (newer than the latest
/// completed) are never touched.
///
/// # Errors
/// [`Error::Corrupted`] (and nothing is deleted) if a checkpoint's `_metadata` does not
/// decode; [`Error::Io`] / [`Error::Storage`] if the root cannot be read or a file cannot
/// be deleted (what was deleted before stays deleted).
pub fn collect_garbage(root: &Location, dry_run: bool) -> Result<GcReport> {
    if let Location::Local(path) = root {
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::InvalidPath {
                path: root.to_string(),
                reason: "it is not a directory; gc takes a checkpoint storage root",
            });
        }
    }
    let inner = open_location(root)?;
    if inner.exists(&StoragePath::new(METADATA_FILE)?)? {
        return Err(Error::InvalidPath {
            path: root.to_string(),
            reason: "it is one snapshot, not a storage root; gc takes the directory that \
                     holds chk-<id>/ and shared/",
        });
    }
    check_metadata(root, inner.as_ref())?;
    let recording = Arc::new(Recording {
        inner,
        dry_run,
        deleted: Mutex::new(Vec::new()),
    });
    let store: Arc<dyn SnapshotStore> = recording.clone();
    let probe = CheckpointStorage::open(store.clone(), Retention::default())?;
    let checkpoints = probe.completed();
    let mut report = GcReport {
        root: root.to_string(),
        dry_run,
        checkpoints: checkpoints.clone(),
        abandoned_checkpoints: Vec::new(),
        shared_files: 0,
        unfinished_files: 0,
        deleted: Vec::new(),
        deleted_bytes: 0,
    };
    if checkpoints.is_empty() {
        // Without a completed checkpoint nothing is an orphan: everything may be in flight.
        return Ok(report);
    }
    drop(probe);
    let storage = CheckpointStorage::open(store, Retention::new(checkpoints.len())?)?;
    let garbage = storage.collect_garbage()?;
    debug_assert!(garbage.subsumed.is_empty(), "every checkpoint is retained");
    report.abandoned_checkpoints = garbage.abandoned;
    report.shared_files = garbage.shared_files;
    report.unfinished_files = garbage.unfinished_files;
    report.deleted =
        std::mem::take(&mut *recording.deleted.lock().unwrap_or_else(|e| e.into_inner()));
    report.deleted_bytes = report.deleted.iter().map(|f| f.size).sum();
    Ok(report)
}
