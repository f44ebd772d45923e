//! Finding a snapshot from a path or URL the user gave, and the one rule for where its
//! files are.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::snapshot::metadata::{self, MAX_METADATA_BYTES};
use crate::snapshot::{JobSnapshot, SnapshotKind, METADATA_FILE, SHARED_DIR};
use crate::storage::{Location, ObjectStoreOptions, SnapshotStore, StoragePath};

/// What a path or URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One snapshot: the location of its `_metadata` file.
    Snapshot(Location),
    /// A checkpoint storage root: a directory (or prefix) holding `chk-<id>/`,
    /// `savepoint-*/` or `shared/`.
    Root(Location),
}

/// The directory the file paths of a snapshot are relative to, given the directory that
/// holds its `_metadata`: the storage root (the parent of `chk-<id>/`) for a checkpoint,
/// whose files are shared with other checkpoints; the directory itself for a savepoint,
/// which is self-contained. Every tool resolves paths through this one function.
pub fn files_root(metadata_dir: &Location, kind: SnapshotKind) -> Location {
    match kind {
        SnapshotKind::Checkpoint => metadata_dir
            .parent()
            .unwrap_or_else(|| metadata_dir.clone()),
        SnapshotKind::Savepoint => metadata_dir.clone(),
    }
}

/// Opens the store rooted at `location`: a local directory, or an object store with the
/// options of the environment ([`ObjectStoreOptions::from_env`]).
pub(crate) fn open_location(location: &Location) -> Result<Arc<dyn SnapshotStore>> {
    let options = match location {
        Location::Local(_) => ObjectStoreOptions::default(),
        Location::Url(_) => ObjectStoreOptions::from_env()?,
    };
    location.open(&options)
}

/// The checkpoint id of a `chk-<id>` directory name, read as the engine reads it.
pub(crate) fn checkpoint_dir_id(name: &str) -> Option<u64> {
    crate::storage::checkpoints::parse_checkpoint_dir(name)
}

/// Whether a top-level directory name is a savepoint's.
pub(crate) fn is_savepoint_dir(name: &str) -> bool {
    name.starts_with("savepoint-")
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Says what `location` names: a snapshot (a directory holding `_metadata`, or a
/// `_metadata` file) or a storage root.
///
/// # Errors
/// [`Error::Io`] if a local path cannot be read, the store's errors for a URL;
/// [`Error::InvalidPath`] if it is neither a snapshot nor a storage root (with the reason:
/// an unfinished checkpoint directory, or nothing of cairn's).
pub fn locate(location: &Location) -> Result<Target> {
    match location {
        Location::Local(path) => locate_local(path),
        Location::Url(_) => locate_in_store(location),
    }
}

fn not_a_snapshot(location: &Location, reason: &'static str) -> Error {
    Error::InvalidPath {
        path: location.to_string(),
        reason,
    }
}

/// Why a directory named `name`, without `_metadata`, is not a snapshot; `None` if its
/// name says nothing.
fn unfinished(name: &str) -> Option<&'static str> {
    if checkpoint_dir_id(name).is_some() {
        return Some(
            "it is a checkpoint directory without _metadata: a checkpoint that never \
             completed (aborted, or still being written); `cairn gc` removes it once a later \
             one completes",
        );
    }
    if is_savepoint_dir(name) {
        return Some(
            "it is a savepoint directory without _metadata: a savepoint that never completed",
        );
    }
    None
}

/// Whether a top-level directory name makes its parent a storage root.
fn is_root_entry(name: &str) -> bool {
    name == SHARED_DIR || checkpoint_dir_id(name).is_some() || is_savepoint_dir(name)
}

const NOT_A_SNAPSHOT: &str = "it is not a snapshot (no _metadata in it) nor a checkpoint \
    storage root (no chk-<id>, savepoint-* or shared directory in it)";

fn locate_local(path: &Path) -> Result<Target> {
    let location = Location::Local(path.to_path_buf());
    let meta = fs::metadata(path).map_err(|e| io_error("open", path, e))?;
    let full = fs::canonicalize(path).map_err(|e| io_error("resolve", path, e))?;
    if meta.is_file() {
        return Ok(Target::Snapshot(Location::Local(full)));
    }
    let metadata = full.join(METADATA_FILE);
    if metadata.is_file() {
        return Ok(Target::Snapshot(Location::Local(metadata)));
    }
    let name = full.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if let Some(reason) = unfinished(name) {
        return Err(not_a_snapshot(&location, reason));
    }
    let entries = fs::read_dir(&full).map_err(|e| io_error("list", path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", path, e))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_dir && is_root_entry(name) {
            return Ok(Target::Root(Location::Local(full)));
        }
    }
    Err(not_a_snapshot(&location, NOT_A_SNAPSHOT))
}

/// [`locate`] for an object store URL: a URL ending in `_metadata` names that file; a
/// prefix holding `_metadata` is a snapshot; one holding `chk-<id>/`, `savepoint-*/` or
/// `shared/` is a storage root.
fn locate_in_store(location: &Location) -> Result<Target> {
    if location.file_name() == Some(METADATA_FILE) {
        return Ok(Target::Snapshot(location.clone()));
    }
    let store = open_location(location)?;
    if store.exists(&StoragePath::new(METADATA_FILE)?)? {
        return Ok(Target::Snapshot(location.join(METADATA_FILE)));
    }
    if let Some(reason) = location.file_name().and_then(unfinished) {
        return Err(not_a_snapshot(location, reason));
    }
    let listing = store.list_dir(None)?;
    if listing.dirs.iter().any(|name| is_root_entry(name)) {
        return Ok(Target::Root(location.clone()));
    }
    if listing.dirs.is_empty() && listing.files.is_empty() {
        return Err(not_a_snapshot(
            location,
            "nothing is stored under it: check the bucket and prefix",
        ));
    }
    Err(not_a_snapshot(location, NOT_A_SNAPSHOT))
}

/// Reads and decodes a `_metadata` file.
///
/// # Errors
/// [`Error::Io`] (local) or the store's errors if it cannot be read; [`Error::Corrupted`]
/// naming the file if it is longer than a `_metadata` may be or does not decode.
pub(crate) fn read_metadata(location: &Location) -> Result<(JobSnapshot, u64, u16)> {
    let bytes = match location {
        Location::Local(path) => {
            let file = fs::File::open(path).map_err(|e| io_error("open", path, e))?;
            let mut bytes = Vec::new();
            file.take(MAX_METADATA_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| io_error("read", path, e))?;
            bytes
        }
        Location::Url(_) => {
            let (Some(dir), Some(name)) = (location.parent(), location.file_name()) else {
                return Err(not_a_snapshot(location, "it names no object"));
            };
            open_location(&dir)?.get(&StoragePath::new(name)?, MAX_METADATA_BYTES + 1)?
        }
    };
    let corrupted = |detail: String| Error::Corrupted {
        what: "snapshot metadata",
        path: location.to_string().into(),
        detail,
    };
    if bytes.len() as u64 > MAX_METADATA_BYTES {
        return Err(corrupted(format!(
            "longer than the {MAX_METADATA_BYTES} bytes a _metadata may have"
        )));
    }
    let job = metadata::decode(&bytes).map_err(corrupted)?;
    // The decoder checked the header, so the version is there.
    let version = match bytes.get(8..10) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    };
    Ok((job, bytes.len() as u64, version))
}

/// A snapshot opened for reading: its decoded `_metadata` and the store its file paths
/// resolve against.
pub struct OpenSnapshot {
    /// The `_metadata` file.
    pub metadata_path: Location,
    /// The directory holding it (`chk-<id>/` or the savepoint directory).
    pub dir: Location,
    /// Where the file paths are relative to (see [`files_root`]).
    pub files_root: Location,
    /// A store rooted at `files_root`.
    pub store: Arc<dyn SnapshotStore>,
    /// The decoded `_metadata`.
    pub job: JobSnapshot,
    /// The size of `_metadata` in bytes.
    pub metadata_bytes: u64,
    /// Its format version.
    pub metadata_version: u16,
}

impl std::fmt::Debug for OpenSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSnapshot")
            .field("metadata_path", &self.metadata_path)
            .field("files_root", &self.files_root)
            .field("checkpoint_id", &self.job.checkpoint_id)
            .finish_non_exhaustive()
    }
}

impl OpenSnapshot {
    /// Opens the snapshot `location` names (a directory or prefix holding `_metadata`, or
    /// the file).
    ///
    /// # Errors
    /// [`Error::InvalidPath`] if `location` is not a snapshot (a storage root included:
    /// name one of its snapshots); [`Error::Corrupted`] if its `_metadata` does not decode;
    /// [`Error::Io`] or the store's errors if it cannot be read.
    pub fn open(location: &Location) -> Result<Self> {
        match locate(location)? {
            Target::Snapshot(metadata_path) => Self::open_metadata(&metadata_path),
            Target::Root(_) => Err(Error::InvalidPath {
                path: location.to_string(),
                reason: "it is a checkpoint storage root, not one snapshot; name one of its \
                         chk-<id> or savepoint directories (`cairn inspect` lists them)",
            }),
        }
    }

    /// Opens the snapshot whose `_metadata` is at `metadata_path`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_metadata(metadata_path: &Location) -> Result<Self> {
        let (job, metadata_bytes, metadata_version) = read_metadata(metadata_path)?;
        let dir = metadata_path
            .parent()
            .unwrap_or_else(|| Location::Local(".".into()));
        let files_root = files_root(&dir, job.kind);
        let store = open_location(&files_root)?;
        Ok(OpenSnapshot {
            metadata_path: metadata_path.clone(),
            dir,
            files_root,
            store,
            job,
            metadata_bytes,
            metadata_version,
        })
    }

    /// The checkpoint id the directory's name says (`chk-<id>`), if it is one.
    pub(crate) fn dir_checkpoint_id(&self) -> Option<u64> {
        self.dir.file_name().and_then(checkpoint_dir_id)
    }
}
