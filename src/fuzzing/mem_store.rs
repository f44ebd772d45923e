//! A [`SnapshotStore`] of one file in memory, which can serve ranged reads short, as a
//! file that shrank after it was opened would.

use std::io::{self, Cursor, Read};

use crate::error::{Error, Result};
use crate::storage::{SnapshotStore, SnapshotWrite, StoragePath};

pub(super) struct MemStore {
    path: StoragePath,
    bytes: Vec<u8>,
    /// Ranged reads see only the bytes before this offset; `size` still says all of them.
    visible: usize,
}

impl MemStore {
    pub(super) fn new(path: StoragePath, bytes: Vec<u8>) -> Self {
        let visible = bytes.len();
        MemStore {
            path,
            bytes,
            visible,
        }
    }

    /// The same file, whose ranged reads end at `visible`.
    pub(super) fn shrunk(path: StoragePath, bytes: Vec<u8>, visible: usize) -> Self {
        MemStore {
            visible: visible.min(bytes.len()),
            ..MemStore::new(path, bytes)
        }
    }

    fn read_only(&self, op: &'static str, path: &StoragePath) -> Error {
        Error::Storage {
            op,
            location: self.location(),
            path: path.to_string(),
            source: io::Error::other("the fuzzing store is read-only"),
        }
    }

    fn file(&self, path: &StoragePath) -> Result<&[u8]> {
        if *path == self.path {
            Ok(&self.bytes[..self.visible])
        } else {
            Err(Error::NotFound {
                what: "file",
                location: self.location(),
                path: path.to_string(),
            })
        }
    }
}

impl SnapshotStore for MemStore {
    fn location(&self) -> String {
        "memory".into()
    }

    fn create(&self, path: &StoragePath) -> Result<Box<dyn SnapshotWrite>> {
        Err(self.read_only("create", path))
    }

    fn open(&self, path: &StoragePath) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(Cursor::new(self.file(path)?.to_vec())))
    }

    fn read_range(
        &self,
        path: &StoragePath,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn Read + Send>> {
        let file = self.file(path)?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(file.len());
        let end = usize::try_from(offset.saturating_add(len))
            .unwrap_or(usize::MAX)
            .min(file.len());
        Ok(Box::new(Cursor::new(file[start..end].to_vec())))
    }

    fn size(&self, path: &StoragePath) -> Result<Option<u64>> {
        Ok((*path == self.path).then_some(self.bytes.len() as u64))
    }

    fn list(&self, _dir: Option<&StoragePath>) -> Result<Vec<StoragePath>> {
        Ok(vec![self.path.clone()])
    }

    fn delete(&self, path: &StoragePath) -> Result<()> {
        Err(self.read_only("delete", path))
    }
}
