//! A directory of a store seen as a store of its own: how a savepoint's files are written
//! and read with paths relative to the savepoint's directory.

use std::io::Read;
use std::sync::Arc;

use crate::error::Result;
use crate::storage::{DirListing, SnapshotStore, SnapshotWrite, StoragePath, UnfinishedWrite};

/// The files under `dir` of another store, with paths relative to `dir`.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use cairn::{LocalStore, SnapshotStore, StoragePath, SubStore};
/// # let root = tempfile::tempdir().unwrap();
/// let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(root.path())?);
/// let savepoint = SubStore::new(store.clone(), StoragePath::new("savepoint-7-ab12")?);
/// savepoint.put(&StoragePath::new("_metadata")?, b"...")?;
/// assert!(store.exists(&StoragePath::new("savepoint-7-ab12/_metadata")?)?);
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Clone)]
pub struct SubStore {
    inner: Arc<dyn SnapshotStore>,
    dir: StoragePath,
}

impl SubStore {
    /// The directory `dir` of `inner`.
    pub fn new(inner: Arc<dyn SnapshotStore>, dir: StoragePath) -> Self {
        SubStore { inner, dir }
    }

    /// The directory, in the outer store.
    pub fn dir(&self) -> &StoragePath {
        &self.dir
    }

    fn outer(&self, path: &StoragePath) -> Result<StoragePath> {
        self.dir.join(path.as_str())
    }

    /// `dir` in the outer store; `dir` itself for `None`.
    fn outer_dir(&self, dir: Option<&StoragePath>) -> Result<StoragePath> {
        match dir {
            Some(dir) => self.outer(dir),
            None => Ok(self.dir.clone()),
        }
    }

    /// A path of the outer store relative to `dir`, if it is under it.
    fn inner_path(&self, outer: &StoragePath) -> Option<Result<StoragePath>> {
        let rest = outer.as_str().strip_prefix(self.dir.as_str())?;
        rest.strip_prefix('/').map(StoragePath::new)
    }
}

impl SnapshotStore for SubStore {
    fn location(&self) -> String {
        format!("{}/{}", self.inner.location(), self.dir)
    }

    fn create(&self, path: &StoragePath) -> Result<Box<dyn SnapshotWrite>> {
        self.inner.create(&self.outer(path)?)
    }

    fn open(&self, path: &StoragePath) -> Result<Box<dyn Read + Send>> {
        self.inner.open(&self.outer(path)?)
    }

    fn read_range(
        &self,
        path: &StoragePath,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn Read + Send>> {
        self.inner.read_range(&self.outer(path)?, offset, len)
    }

    fn size(&self, path: &StoragePath) -> Result<Option<u64>> {
        self.inner.size(&self.outer(path)?)
    }

    fn list(&self, dir: Option<&StoragePath>) -> Result<Vec<StoragePath>> {
        self.inner
            .list(Some(&self.outer_dir(dir)?))?
            .iter()
            .filter_map(|p| self.inner_path(p))
            .collect()
    }

    fn list_unfinished(&self, dir: Option<&StoragePath>) -> Result<Vec<UnfinishedWrite>> {
        let mut out = Vec::new();
        for write in self.inner.list_unfinished(Some(&self.outer_dir(dir)?))? {
            if let (Some(temp), Some(target)) =
                (self.inner_path(&write.temp), self.inner_path(&write.target))
            {
                out.push(UnfinishedWrite {
                    temp: temp?,
                    target: target?,
                });
            }
        }
        Ok(out)
    }

    fn list_dir(&self, dir: Option<&StoragePath>) -> Result<DirListing> {
        self.inner.list_dir(Some(&self.outer_dir(dir)?))
    }

    fn transfer_concurrency(&self) -> usize {
        self.inner.transfer_concurrency()
    }

    fn delete(&self, path: &StoragePath) -> Result<()> {
        self.inner.delete(&self.outer(path)?)
    }

    fn delete_dir(&self, dir: &StoragePath) -> Result<()> {
        self.inner.delete_dir(&self.outer(dir)?)
    }
}
