//! A [`SnapshotStore`] in a local directory (or a mounted shared file system).
//!
//! A file is written to a temporary name in its directory, synced, renamed into place and
//! its directory synced: after [`SnapshotWrite::finish`] returns, the file survives a crash
//! and no reader ever sees half of it. The temporary name, `.cairn-tmp-<32 hex>-<name>`,
//! keeps the file's own name, so that the write a killed process left behind can be told
//! by [`SnapshotStore::list_unfinished`] and collected by the rule for the file it was
//! becoming. Symbolic links under the root are never followed.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::{
    random_u128, DirListing, SnapshotStore, SnapshotWrite, StoragePath, UnfinishedWrite,
};

/// Names of files being written start with this; [`LocalStore::list`] skips them.
const TEMP_PREFIX: &str = ".cairn-tmp-";

/// The longest file name a temporary name carries: with the prefix and the random part it
/// stays within the 255 bytes file systems allow in a name.
const MAX_NAMED_TEMP: usize = 200;

/// The temporary name of a write of the file `name`: `.cairn-tmp-<32 hex>-<name>`, or
/// `.cairn-tmp-<32 hex>` for a name too long to carry.
fn temp_name(name: &str) -> String {
    let random = random_u128();
    if name.len() <= MAX_NAMED_TEMP {
        format!("{TEMP_PREFIX}{random:032x}-{name}")
    } else {
        format!("{TEMP_PREFIX}{random:032x}")
    }
}

/// The file name a temporary name carries, if it carries one.
fn temp_target(temp: &str) -> Option<&str> {
    let rest = temp.strip_prefix(TEMP_PREFIX)?;
    let (random, name) = (rest.get(..32)?, rest.get(32..)?.strip_prefix('-')?);
    let hex = random.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && !name.is_empty()).then_some(name)
}

/// Snapshot storage in a directory.
///
/// # Examples
/// ```
/// use cairn::{LocalStore, SnapshotStore, StoragePath};
/// # let dir = tempfile::tempdir().unwrap();
/// let store = LocalStore::new(dir.path())?;
/// let path = StoragePath::new("chk-1/notes")?;
/// store.put(&path, b"hello")?;
/// assert_eq!(store.get(&path, 1024)?, b"hello");
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, created if missing.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be created.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(|source| Error::Io {
            op: "create the checkpoint directory",
            path: root.clone(),
            source,
        })?;
        Ok(LocalStore { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file system path of `path`, after checking that no component of it is a
    /// symbolic link (which could lead out of the root).
    fn resolve(&self, path: &StoragePath) -> Result<PathBuf> {
        let mut full = self.root.clone();
        for component in path.as_str().split('/') {
            full.push(component);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(Error::InvalidPath {
                        path: path.to_string(),
                        reason: "it goes through a symbolic link, which cairn does not follow",
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(self.io("inspect", path, source)),
            }
        }
        Ok(full)
    }

    fn io(&self, op: &'static str, path: &StoragePath, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::NotFound {
            return Error::NotFound {
                what: "snapshot file",
                location: self.location(),
                path: path.to_string(),
            };
        }
        Error::Storage {
            op,
            location: self.location(),
            path: path.to_string(),
            source,
        }
    }

    /// The finished files and the unfinished writes under `dir` (the root for `None`).
    fn walk(&self, dir: Option<&StoragePath>) -> Result<(Vec<StoragePath>, Vec<UnfinishedWrite>)> {
        let (mut files, mut unfinished) = (Vec::new(), Vec::new());
        match dir {
            None => self.list_into(&self.root, "", &mut files, &mut unfinished)?,
            Some(dir) => {
                let full = self.resolve(dir)?;
                self.list_into(&full, dir.as_str(), &mut files, &mut unfinished)?;
            }
        }
        Ok((files, unfinished))
    }

    fn open_file(&self, path: &StoragePath) -> Result<File> {
        let full = self.resolve(path)?;
        File::open(full).map_err(|e| self.io("open", path, e))
    }

    /// Walks `dir` (at `rel` under the root): finished files into `out`, temporary files of
    /// unfinished writes into `unfinished`.
    fn list_into(
        &self,
        dir: &Path,
        rel: &str,
        out: &mut Vec<StoragePath>,
        unfinished: &mut Vec<UnfinishedWrite>,
    ) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::Io {
                    op: "list",
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                op: "list",
                path: dir.to_path_buf(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let file_type = entry.file_type().map_err(|source| Error::Io {
                op: "list",
                path: entry.path(),
                source,
            })?;
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            if file_type.is_dir() {
                self.list_into(&entry.path(), &child, out, unfinished)?;
            } else if !file_type.is_file() {
                continue;
            } else if name.starts_with(TEMP_PREFIX) {
                let target = temp_target(name).map(|target| match rel {
                    "" => target.to_string(),
                    _ => format!("{rel}/{target}"),
                });
                if let (Ok(temp), Some(Ok(target))) =
                    (StoragePath::new(child), target.map(StoragePath::new))
                {
                    unfinished.push(UnfinishedWrite { temp, target });
                }
            } else if let Ok(path) = StoragePath::new(child) {
                // A name the store could not have written is not a snapshot file.
                out.push(path);
            }
        }
        Ok(())
    }
}

impl SnapshotStore for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self, path: &StoragePath) -> Result<Box<dyn SnapshotWrite>> {
        let target = self.resolve(path)?;
        let dir = target
            .parent()
            .map_or_else(|| self.root.clone(), Path::to_path_buf);
        fs::create_dir_all(&dir).map_err(|e| self.io("create the directory of", path, e))?;
        let temp = dir.join(temp_name(path.file_name()));
        let file = File::create(&temp).map_err(|e| self.io("create", path, e))?;
        Ok(Box::new(LocalWrite {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            temp,
            target,
            dir,
            path: path.clone(),
            location: self.location(),
            written: 0,
        }))
    }

    fn open(&self, path: &StoragePath) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.open_file(path)?))
    }

    fn read_range(
        &self,
        path: &StoragePath,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn Read + Send>> {
        let mut file = self.open_file(path)?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| self.io("seek in", path, e))?;
        Ok(Box::new(file.take(len)))
    }

    fn size(&self, path: &StoragePath) -> Result<Option<u64>> {
        let full = self.resolve(path)?;
        match fs::metadata(full) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("inspect", path, e)),
        }
    }

    fn list(&self, dir: Option<&StoragePath>) -> Result<Vec<StoragePath>> {
        Ok(self.walk(dir)?.0)
    }

    fn list_unfinished(&self, dir: Option<&StoragePath>) -> Result<Vec<UnfinishedWrite>> {
        Ok(self.walk(dir)?.1)
    }

    fn list_dir(&self, dir: Option<&StoragePath>) -> Result<DirListing> {
        let full = match dir {
            None => self.root.clone(),
            Some(dir) => self.resolve(dir)?,
        };
        let list_error = |source| Error::Io {
            op: "list",
            path: full.clone(),
            source,
        };
        let entries = match fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DirListing::default()),
            Err(e) => return Err(list_error(e)),
        };
        let mut listing = DirListing::default();
        for entry in entries {
            let entry = entry.map_err(list_error)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Temporary files and names the store could not have written are not listed.
            if name.starts_with(TEMP_PREFIX) || StoragePath::new(name.as_str()).is_err() {
                continue;
            }
            let file_type = entry.file_type().map_err(list_error)?;
            if file_type.is_dir() {
                listing.dirs.push(name);
            } else if file_type.is_file() {
                let size = entry.metadata().map_err(list_error)?.len();
                listing.files.push((name, size));
            }
        }
        Ok(listing)
    }

    fn delete(&self, path: &StoragePath) -> Result<()> {
        let full = self.resolve(path)?;
        match fs::remove_file(full) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("delete", path, e)),
        }
    }

    fn delete_dir(&self, dir: &StoragePath) -> Result<()> {
        let full = self.resolve(dir)?;
        match fs::remove_dir_all(full) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("delete the directory", dir, e)),
        }
    }
}

/// A file being written under a temporary name next to its target.
struct LocalWrite {
    /// `None` once finished.
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    path: StoragePath,
    location: String,
    written: u64,
}

impl LocalWrite {
    fn error(&self, op: &'static str, source: io::Error) -> Error {
        Error::Storage {
            op,
            location: self.location.clone(),
            path: self.path.to_string(),
            source,
        }
    }
}

impl Write for LocalWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("write after finish"))?;
        let n = file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl SnapshotWrite for LocalWrite {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let Some(buffered) = self.file.take() else {
            return Ok(self.written);
        };
        let file = buffered
            .into_inner()
            .map_err(|e| self.error("write", e.into_error()))?;
        file.sync_all().map_err(|e| self.error("sync", e))?;
        drop(file);
        fs::rename(&self.temp, &self.target).map_err(|e| self.error("rename into place", e))?;
        // The rename is durable only once the directory is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.error("sync the directory of", e))?;
        Ok(self.written)
    }
}

impl Drop for LocalWrite {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not finished: nothing was published; the temporary file is garbage.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("root")).unwrap();
        (dir, store)
    }

    fn path(p: &str) -> StoragePath {
        StoragePath::new(p).unwrap()
    }

    #[test]
    fn a_file_appears_only_when_finished() {
        let (_dir, store) = store();
        let p = path("chk-1/_metadata");
        let mut w = store.create(&p).unwrap();
        w.write_all(b"abc").unwrap();
        assert!(!store.exists(&p).unwrap());
        assert!(
            store.list(None).unwrap().is_empty(),
            "temporary files are not listed"
        );
        assert_eq!(w.finish().unwrap(), 3);
        assert_eq!(store.size(&p).unwrap(), Some(3));
        assert_eq!(store.list(None).unwrap(), vec![p.clone()]);

        let dropped = store.create(&path("chk-1/other")).unwrap();
        drop(dropped);
        let names: Vec<_> = fs::read_dir(store.root().join("chk-1")).unwrap().collect();
        assert_eq!(names.len(), 1, "an unfinished write leaves nothing behind");
    }

    /// A killed process never drops its writer: its temporary file stays, listed as an
    /// unfinished write of the file it was becoming, until it is deleted by that path.
    #[test]
    fn a_write_a_killed_process_left_is_listed_as_unfinished() {
        let (_dir, store) = store();
        let target = path("shared/3-ab-000012.sst");
        let mut killed = store.create(&target).unwrap();
        killed.write_all(b"half").unwrap();
        killed.flush().unwrap();
        std::mem::forget(killed);
        let finished = store.create(&path("shared/3-ab-000013.sst")).unwrap();
        finished.finish().unwrap();

        assert_eq!(
            store.list(None).unwrap(),
            vec![path("shared/3-ab-000013.sst")]
        );
        let unfinished = store.list_unfinished(None).unwrap();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].target, target);
        assert!(unfinished[0].temp.file_name().starts_with(TEMP_PREFIX));
        assert_eq!(
            store.list_unfinished(Some(&path("shared"))).unwrap(),
            unfinished
        );
        assert!(store
            .list_unfinished(Some(&path("chk-1")))
            .unwrap()
            .is_empty());
        store.delete(&unfinished[0].temp).unwrap();
        assert!(store.list_unfinished(None).unwrap().is_empty());
        let names: Vec<_> = fs::read_dir(store.root().join("shared")).unwrap().collect();
        assert_eq!(names.len(), 1, "only the finished file is left");
    }

    #[test]
    fn temporary_names_carry_the_file_name_when_it_fits() {
        let name = temp_name("000012.sst");
        assert_eq!(temp_target(&name), Some("000012.sst"));
        let long = "x".repeat(MAX_NAMED_TEMP + 1);
        let name = temp_name(&long);
        assert!(name.len() < 255);
        assert_eq!(temp_target(&name), None);
        assert_eq!(temp_target(".cairn-tmp-zz"), None);
        assert_eq!(temp_target("000012.sst"), None);
    }

    #[test]
    fn ranges_lists_and_deletes() {
        let (_dir, store) = store();
        store.put(&path("a/b/c"), b"0123456789").unwrap();
        store.put(&path("a/d"), b"x").unwrap();
        store.put(&path("e"), b"y").unwrap();
        let mut range = Vec::new();
        store
            .read_range(&path("a/b/c"), 3, 4)
            .unwrap()
            .read_to_end(&mut range)
            .unwrap();
        assert_eq!(range, b"3456");
        let mut under_a = store.list(Some(&path("a"))).unwrap();
        under_a.sort();
        assert_eq!(under_a, vec![path("a/b/c"), path("a/d")]);
        assert_eq!(store.list(None).unwrap().len(), 3);
        store.delete_dir(&path("a")).unwrap();
        assert_eq!(store.list(None).unwrap(), vec![path("e")]);
        store.delete(&path("e")).unwrap();
        store.delete(&path("e")).unwrap();
        assert!(matches!(
            store.open(&path("e")),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            store.get(&path("a/missing"), 10),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_file_longer_than_the_limit_is_refused() {
        let (_dir, store) = store();
        store.put(&path("big"), &[7; 100]).unwrap();
        assert_eq!(store.get(&path("big"), 100).unwrap().len(), 100);
        assert!(matches!(
            store.get(&path("big"), 99),
            Err(Error::Corrupted { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_are_not_followed() {
        let (dir, store) = store();
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(&outside, store.root().join("link")).unwrap();
        assert!(matches!(
            store.open(&path("link/secret")),
            Err(Error::InvalidPath { .. })
        ));
        assert!(store.list(None).unwrap().is_empty());
    }
}
