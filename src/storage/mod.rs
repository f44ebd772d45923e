//! Checkpoint storage: where snapshots live, and the rules for their paths.
//!
//! A [`SnapshotStore`] is a flat namespace of files under a root, addressed by
//! [`StoragePath`]s: relative, `/`-separated, each component made of `[A-Za-z0-9._-]` and
//! never `.` or `..`. That is all the snapshot layer needs from a file system or an object
//! store, so an object store implements the same five operations (create, open, read a
//! range, size, list, delete). The layout under the root is fixed (docs/format.md):
//!
//! ```text
//! chk-<id>/_metadata                     the commit point of checkpoint <id>
//! chk-<id>/<instance>/<file>             files private to one subtask's snapshot
//! shared/<created by>-<instance>-<file>  SST files shared between checkpoints
//! savepoint-<id>-<random>/_metadata      a savepoint: everything inside, paths relative
//! savepoint-<id>-<random>/state/…        to its directory
//! ```
//!
//! A file written through [`SnapshotStore::create`] becomes visible only when its writer
//! is [finished](SnapshotWrite::finish): complete and durable, or not there at all. A
//! writer that never finishes because its process was killed may leave bytes behind; a
//! store that can lists them ([`SnapshotStore::list_unfinished`]) for garbage collection.
//!
//! Two stores implement it: [`LocalStore`], a directory (the default for plain paths), and
//! [`BucketStore`], a prefix of an object store (S3 and S3-compatible servers, GCS, Azure,
//! memory). [`open_store`] picks one from a path or URL ([`Location`]).

pub(crate) mod checkpoints;
mod local;
mod location;
mod object;
mod sub;

use std::fmt;
use std::io::{Read, Write};

use crate::error::{Error, Result};

pub(crate) use checkpoints::checkpoint_request;
pub use checkpoints::{
    begin_savepoint, latest_checkpoint, list_savepoints, read_checkpoint, read_savepoint,
    CheckpointStorage, GarbageReport, PendingCheckpoint, Retention,
};
pub use local::LocalStore;
pub use location::{open_store, open_store_with, Location};
pub use object::{BucketStore, ObjectStoreOptions};
pub use sub::SubStore;

/// The longest path a store accepts, in bytes.
const MAX_PATH_LEN: usize = 1024;

/// A path relative to a store's root that cannot leave it.
///
/// # Examples
/// ```
/// use cairn::StoragePath;
/// let path = StoragePath::new("chk-7/_metadata")?;
/// assert_eq!(path.as_str(), "chk-7/_metadata");
/// assert!(StoragePath::new("../etc/passwd").is_err());
/// assert!(StoragePath::new("/abs").is_err());
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoragePath(String);

impl StoragePath {
    /// Checks `path` and wraps it.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for an empty, absolute, too long path, one with `.`, `..` or
    /// empty components, or characters outside `[A-Za-z0-9._-]`.
    pub fn new(path: impl Into<String>) -> Result<Self> {
        let path = path.into();
        match check_path(&path) {
            Ok(()) => Ok(StoragePath(path)),
            Err(reason) => Err(Error::InvalidPath { path, reason }),
        }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This path with `name` appended as a further component (or components).
    ///
    /// # Errors
    /// As [`StoragePath::new`], for the joined path.
    pub fn join(&self, name: &str) -> Result<Self> {
        StoragePath::new(format!("{}/{}", self.0, name))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The first component: the top-level directory (or file) this path is in.
    pub fn top(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_path(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("it is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("it is longer than 1024 bytes");
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err("it is absolute or has an empty component");
        }
        if component == "." || component == ".." {
            return Err("it has a '.' or '..' component");
        }
        if !component
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("it has characters outside [A-Za-z0-9._-]");
        }
    }
    Ok(())
}

/// A write that has not finished: see [`SnapshotStore::list_unfinished`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnfinishedWrite {
    /// Where its bytes are until it finishes; deleting this path discards it.
    pub temp: StoragePath,
    /// The path the file was being written to.
    pub target: StoragePath,
}

/// What is directly inside a directory of a store: see [`SnapshotStore::list_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// The names of the directories in it (on an object store: the common prefixes).
    pub dirs: Vec<String>,
    /// The names of the files in it, with their sizes in bytes.
    pub files: Vec<(String, u64)>,
}

/// How many files a snapshot uploads, or a restore downloads, at once from a store that
/// does not say otherwise (a local directory).
pub(crate) const DEFAULT_TRANSFER_CONCURRENCY: usize = 4;

/// A file being written to a store; visible to readers only after [`finish`](Self::finish).
///
/// Dropping a writer without finishing it discards what was written.
pub trait SnapshotWrite: Write + Send {
    /// Makes the file durable and visible under its path, replacing any file there, and
    /// returns its size.
    ///
    /// # Errors
    /// The store's I/O error; the file is then not visible.
    fn finish(self: Box<Self>) -> Result<u64>;
}

/// Where snapshots are stored: a local directory or an object store.
///
/// Every path is relative to the store's root. Implementations must make
/// [`create`](Self::create)d files appear atomically on [`SnapshotWrite::finish`], which
/// is what makes a checkpoint's `_metadata` its commit point.
pub trait SnapshotStore: Send + Sync {
    /// Where the store is, for messages (a directory, a bucket URL).
    fn location(&self) -> String;

    /// Starts writing the file at `path`.
    ///
    /// # Errors
    /// The store's I/O error.
    fn create(&self, path: &StoragePath) -> Result<Box<dyn SnapshotWrite>>;

    /// Reads the file at `path` from its start.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such file; the store's I/O error.
    fn open(&self, path: &StoragePath) -> Result<Box<dyn Read + Send>>;

    /// Reads `len` bytes of the file at `path` from `offset`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such file; the store's I/O error. Reading past
    /// the end yields fewer bytes, which the caller must check.
    fn read_range(&self, path: &StoragePath, offset: u64, len: u64)
        -> Result<Box<dyn Read + Send>>;

    /// The size of the file at `path`, or `None` if there is none.
    ///
    /// # Errors
    /// The store's I/O error.
    fn size(&self, path: &StoragePath) -> Result<Option<u64>>;

    /// Every file under the directory `dir` (the whole store for `None`), recursively, in
    /// no particular order. Unfinished writes are not listed.
    ///
    /// # Errors
    /// The store's I/O error.
    fn list(&self, dir: Option<&StoragePath>) -> Result<Vec<StoragePath>>;

    /// What is directly in the directory `dir` (the root for `None`): its subdirectories'
    /// names and its files' names and sizes, in no particular order. On an object store it
    /// is one listing by prefix and delimiter, whatever lies deeper.
    ///
    /// # Errors
    /// The store's I/O error.
    fn list_dir(&self, dir: Option<&StoragePath>) -> Result<DirListing> {
        let depth = dir.map_or(0, |d| d.as_str().split('/').count());
        let mut listing = DirListing::default();
        for path in self.list(dir)? {
            let mut components = path.as_str().split('/').skip(depth);
            let (Some(first), rest) = (components.next(), components.next()) else {
                continue;
            };
            if rest.is_some() {
                if !listing.dirs.iter().any(|d| d == first) {
                    listing.dirs.push(first.to_string());
                }
            } else {
                let size = self.size(&path)?.unwrap_or(0);
                listing.files.push((first.to_string(), size));
            }
        }
        Ok(listing)
    }

    /// How many files a snapshot's upload or a restore's download moves at once with this
    /// store.
    fn transfer_concurrency(&self) -> usize {
        DEFAULT_TRANSFER_CONCURRENCY
    }

    /// Deletes the file at `path`; deleting a missing file is not an error.
    ///
    /// # Errors
    /// The store's I/O error.
    fn delete(&self, path: &StoragePath) -> Result<()>;

    /// The writes under `dir` (the whole store for `None`) that began and have not
    /// finished: in flight, or left behind for good by a writer that died (a killed
    /// process never drops its [`SnapshotWrite`]). The store cannot tell which; garbage
    /// collection decides by the path each was being written to, and deletes one with
    /// [`delete`](Self::delete) of its [`UnfinishedWrite::temp`] path.
    ///
    /// A store whose interrupted writes leave nothing behind returns none (the default).
    ///
    /// # Errors
    /// The store's I/O error.
    fn list_unfinished(&self, dir: Option<&StoragePath>) -> Result<Vec<UnfinishedWrite>> {
        let _ = dir;
        Ok(Vec::new())
    }

    /// Deletes every file under the directory `dir`.
    ///
    /// # Errors
    /// The store's I/O error; files deleted before it stay deleted.
    fn delete_dir(&self, dir: &StoragePath) -> Result<()> {
        for path in self.list(Some(dir))? {
            self.delete(&path)?;
        }
        Ok(())
    }

    /// Whether a file exists at `path`.
    ///
    /// # Errors
    /// The store's I/O error.
    fn exists(&self, path: &StoragePath) -> Result<bool> {
        Ok(self.size(path)?.is_some())
    }

    /// Writes `bytes` as the whole file at `path`.
    ///
    /// # Errors
    /// The store's I/O error.
    fn put(&self, path: &StoragePath, bytes: &[u8]) -> Result<()> {
        let mut writer = self.create(path)?;
        writer.write_all(bytes).map_err(|source| Error::Storage {
            op: "write",
            location: self.location(),
            path: path.to_string(),
            source,
        })?;
        writer.finish().map(|_| ())
    }

    /// Reads the whole file at `path`, refusing one longer than `limit` bytes.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Corrupted`] if the file is longer than `limit`; the
    /// store's I/O error.
    fn get(&self, path: &StoragePath, limit: u64) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(path)?
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| Error::Storage {
                op: "read",
                location: self.location(),
                path: path.to_string(),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(Error::Corrupted {
                what: "snapshot file",
                path: path.as_str().into(),
                detail: format!("longer than the {limit} bytes such a file may have"),
            });
        }
        Ok(bytes)
    }
}

/// A CRC32 (IEEE, as zlib and gzip) of everything written through it.
pub(crate) struct CrcWriter<W> {
    pub(crate) inner: W,
    pub(crate) crc: crc32fast::Hasher,
    pub(crate) written: u64,
}

impl<W: Write> CrcWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        CrcWriter {
            inner,
            crc: crc32fast::Hasher::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// 128 random bits from the standard library's randomly keyed hasher, for names that must
/// not collide across processes (backend instances, savepoint directories).
pub(crate) fn random_u128() -> u128 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut halves = [0u64; 2];
    for half in &mut halves {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        *half = hasher.finish();
    }
    (u128::from(halves[0]) << 64) | u128::from(halves[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_root() {
        for bad in [
            "", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "a b", "a\\b", "ä",
        ] {
            assert!(StoragePath::new(bad).is_err(), "{bad:?}");
        }
        for good in [
            "a",
            "chk-1/_metadata",
            "shared/3-ab-000012.sst",
            "..a",
            "a..",
        ] {
            assert_eq!(StoragePath::new(good).unwrap().as_str(), good);
        }
        assert!(StoragePath::new("x".repeat(1025)).is_err());
        let p = StoragePath::new("chk-1")
            .unwrap()
            .join("ab/CURRENT")
            .unwrap();
        assert_eq!((p.top(), p.file_name()), ("chk-1", "CURRENT"));
    }

    #[test]
    fn random_names_differ() {
        let a = random_u128();
        let b = random_u128();
        assert_ne!(a, b);
    }
}
